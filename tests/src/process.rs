//! Child processes for tests: `tern` or Envoy run from a bootstrap, the way pilot-agent runs
//! Envoy (`-c`, `--concurrency`, `--admin-address-path`, `--disable-hot-restart`).
//!
//! Invariants:
//! - [`ProxyProcess::start`] returns only once the admin address file was written and
//!   `GET /ready` answered 200, or fails with the child's log; readiness is polled against a
//!   deadline, never assumed after a fixed sleep.
//! - A [`ProxyProcess`] owns its child: dropping it sends SIGKILL and reaps it, so a failing test
//!   never leaves a proxy behind. Its scratch directory (bootstrap, admin file, log) goes too.
//! - A proxy started in a network namespace ([`ProxyProcess::start_in`]) is only talked to from
//!   inside it: admin requests and [`ProxyProcess::connect`] make their sockets there.

use crate::netns::{Netns, connect_in};
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a proxy may take to become ready (Envoy on a loaded 2-core machine included).
const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long one admin request may take.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// Pause between two polls of a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The flags pilot-agent starts Envoy with in a default injected pod (`limits.cpu: 2`), after
/// `-c <bootstrap>` (see shared/reference/istio-dropin.md, "Exec contract").
pub const PILOT_AGENT_FLAGS: &[&str] = &[
    "--drain-time-s",
    "45",
    "--drain-strategy",
    "immediate",
    "--local-address-ip-version",
    "v4",
    "--file-flush-interval-msec",
    "1000",
    "--disable-hot-restart",
    "--allow-unknown-static-fields",
    "-l",
    "warning",
    "--component-log-level",
    "misc:error",
    "--skip-deprecated-logs",
    "--concurrency",
    "2",
];

/// Which proxy a binary is; Envoy needs a distinct `--base-id` per concurrent instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyKind {
    Tern,
    Envoy,
}

impl ProxyKind {
    pub fn name(self) -> &'static str {
        match self {
            ProxyKind::Tern => "tern",
            ProxyKind::Envoy => "envoy",
        }
    }
}

/// A binary of this workspace's build, found next to the running test executable
/// (`target/<profile>/deps/<test>` -> `target/<profile>/<name>`).
pub fn workspace_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current test executable");
    let mut dir = exe.parent().expect("test executable has a directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("deps/ has a parent");
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "no {name} binary at {}: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// The `tern` binary under test: `TERN_BIN` when set, else the workspace's build.
pub fn tern_binary() -> PathBuf {
    match std::env::var_os("TERN_BIN").filter(|p| !p.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => workspace_binary("tern"),
    }
}

/// A running proxy with its admin address learned and `/ready` answered 200.
pub struct ProxyProcess {
    pub kind: ProxyKind,
    pub admin: SocketAddr,
    child: Child,
    scratch: PathBuf,
    /// The network namespace it runs in, if not the test's.
    netns: Option<String>,
}

impl ProxyProcess {
    /// Runs the workspace's `tern` with `bootstrap` (YAML or JSON text).
    pub async fn tern(bootstrap: &str, concurrency: u32) -> anyhow::Result<ProxyProcess> {
        Self::start(ProxyKind::Tern, &tern_binary(), bootstrap, concurrency).await
    }

    /// Runs the workspace's `tern` with `bootstrap` and exactly pilot-agent's command line
    /// ([`PILOT_AGENT_FLAGS`]) plus `--admin-address-path`, so port 0 can be used for admin.
    pub async fn tern_as_pilot_agent_runs_it(bootstrap: &str) -> anyhow::Result<ProxyProcess> {
        Self::start_with_flags(
            ProxyKind::Tern,
            &tern_binary(),
            bootstrap,
            PILOT_AGENT_FLAGS,
        )
        .await
    }

    /// Runs `binary` (of `kind`) with `bootstrap` written to a scratch file, then waits until
    /// its admin server says it is ready.
    pub async fn start(
        kind: ProxyKind,
        binary: &Path,
        bootstrap: &str,
        concurrency: u32,
    ) -> anyhow::Result<ProxyProcess> {
        let concurrency = concurrency.to_string();
        let flags = [
            "--concurrency",
            &concurrency,
            "--disable-hot-restart",
            "-l",
            "warning",
        ];
        Self::start_with_flags(kind, binary, bootstrap, &flags).await
    }

    /// As [`ProxyProcess::start`] with `-l info`, returning once the admin address is known,
    /// whether or not the proxy ever becomes ready (for tests of a proxy that must not).
    pub async fn start_unready(
        kind: ProxyKind,
        binary: &Path,
        bootstrap: &str,
    ) -> anyhow::Result<ProxyProcess> {
        let flags = ["--concurrency", "1", "--disable-hot-restart", "-l", "info"];
        Self::spawn(kind, binary, bootstrap, &flags, None, None).await
    }

    /// As [`ProxyProcess::start`], with the command line's flags (besides `-c` and
    /// `--admin-address-path`) given.
    pub async fn start_with_flags(
        kind: ProxyKind,
        binary: &Path,
        bootstrap: &str,
        flags: &[&str],
    ) -> anyhow::Result<ProxyProcess> {
        Self::launch(kind, binary, bootstrap, flags, None, None).await
    }

    /// As [`ProxyProcess::start_with_flags`], inside `netns` (`ip netns exec`, so the child is the
    /// proxy itself), where fixed ports such as Istio's 15000, 15001 and 15006 are free.
    pub async fn start_in(
        netns: &Netns,
        kind: ProxyKind,
        binary: &Path,
        bootstrap: &str,
        flags: &[&str],
    ) -> anyhow::Result<ProxyProcess> {
        Self::launch(
            kind,
            binary,
            bootstrap,
            flags,
            Some(netns.name.clone()),
            None,
        )
        .await
    }

    /// As [`ProxyProcess::start_in`], running as `uid` (gid the same, no supplementary groups),
    /// the way a sidecar runs as 1337 so that iptables capture leaves its own traffic alone.
    pub async fn start_in_as(
        netns: &Netns,
        uid: u32,
        kind: ProxyKind,
        binary: &Path,
        bootstrap: &str,
        flags: &[&str],
    ) -> anyhow::Result<ProxyProcess> {
        Self::launch(
            kind,
            binary,
            bootstrap,
            flags,
            Some(netns.name.clone()),
            Some(uid),
        )
        .await
    }

    async fn launch(
        kind: ProxyKind,
        binary: &Path,
        bootstrap: &str,
        flags: &[&str],
        netns: Option<String>,
        uid: Option<u32>,
    ) -> anyhow::Result<ProxyProcess> {
        let mut process = Self::spawn(kind, binary, bootstrap, flags, netns, uid).await?;
        process.wait_until_ready().await?;
        Ok(process)
    }

    /// Starts the child and learns its admin address.
    async fn spawn(
        kind: ProxyKind,
        binary: &Path,
        bootstrap: &str,
        flags: &[&str],
        netns: Option<String>,
        uid: Option<u32>,
    ) -> anyhow::Result<ProxyProcess> {
        let unique = unique_id();
        let scratch = std::env::temp_dir().join(format!(
            "tern-tests-{}-{}-{unique}",
            kind.name(),
            std::process::id()
        ));
        std::fs::create_dir_all(&scratch)
            .with_context(|| format!("creating {}", scratch.display()))?;
        let config = scratch.join("bootstrap.yaml");
        let admin_file = scratch.join("admin-address");
        let log = scratch.join("proxy.log");
        std::fs::write(&config, bootstrap)?;
        let log_file = std::fs::File::create(&log)?;

        // `ip netns exec NAME` and then `setpriv` run before the proxy, each exec'ing the next.
        let mut argv: Vec<std::ffi::OsString> = Vec::new();
        if let Some(name) = &netns {
            argv.extend(["ip", "netns", "exec", name.as_str()].map(Into::into));
        }
        if let Some(uid) = uid {
            // The proxy writes its admin address file here, and may reopen its stdout
            // (`/dev/stdout` access logs), which is the log file.
            std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o777))?;
            std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666))?;
            let id = uid.to_string();
            argv.extend(
                ["setpriv", "--reuid", &id, "--regid", &id, "--clear-groups"].map(Into::into),
            );
        }
        argv.push(binary.into());
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        command
            .arg("-c")
            .arg(&config)
            .args(flags)
            .arg("--admin-address-path")
            .arg(&admin_file)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        if kind == ProxyKind::Envoy {
            command.args(["--base-id", &envoy_base_id(unique).to_string()]);
        }
        let child = command
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        // From here on, Drop kills the child whatever happens.
        let mut process = ProxyProcess {
            kind,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            child,
            scratch,
            netns,
        };
        process.admin = process.wait_for_admin_address(&admin_file).await?;
        Ok(process)
    }

    async fn wait_for_admin_address(&mut self, file: &Path) -> anyhow::Result<SocketAddr> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            // Written once the admin listener is bound; may be seen half-written, so parse it.
            if let Some(address) = std::fs::read_to_string(file)
                .ok()
                .and_then(|text| text.trim().parse::<SocketAddr>().ok())
            {
                return Ok(address);
            }
            self.fail_if_exited("before writing its admin address")?;
            if Instant::now() > deadline {
                bail!(
                    "{} wrote no admin address within {START_DEADLINE:?}; log:\n{}",
                    self.kind.name(),
                    self.log()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    async fn wait_until_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok((200, _)) = self.get("/ready").await {
                return Ok(());
            }
            self.fail_if_exited("before becoming ready")?;
            if Instant::now() > deadline {
                bail!(
                    "{} not ready within {START_DEADLINE:?}; log:\n{}",
                    self.kind.name(),
                    self.log()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    fn fail_if_exited(&mut self, when: &str) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "{} exited ({status}) {when}; log:\n{}",
                self.kind.name(),
                self.log()
            );
        }
        Ok(())
    }

    /// What the proxy wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.scratch.join("proxy.log")).unwrap_or_default()
    }

    /// `GET path` on the admin server: status and body.
    /// Polls the proxy's log until it contains `line`, or fails with the log.
    pub async fn wait_for_log(&self, line: &str, within: Duration) -> anyhow::Result<()> {
        wait_for_log(|| self.log(), line, within).await
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        self.request("GET", path).await
    }

    /// `POST path` (empty body) on the admin server: status and body.
    pub async fn post(&self, path: &str) -> anyhow::Result<(u16, String)> {
        self.request("POST", path).await
    }

    /// One HTTP/1.1 request on its own connection to the admin server.
    pub async fn request(&self, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
        let exchange = async {
            let stream = self.connect(self.admin).await?;
            http_request(stream, self.admin, method, path).await
        };
        tokio::time::timeout(REQUEST_DEADLINE, exchange)
            .await
            .with_context(|| format!("{method} {path} on {} timed out", self.kind.name()))?
            .with_context(|| format!("{method} {path} on {}", self.kind.name()))
    }

    /// A connection to `address` from where the proxy runs (its network namespace, if any).
    pub async fn connect(&self, address: SocketAddr) -> std::io::Result<TcpStream> {
        match &self.netns {
            Some(name) => connect_in(name, address).await,
            None => TcpStream::connect(address).await,
        }
    }

    /// The bound address of listener `name`, from `/listeners?format=json` (port 0 resolved).
    pub async fn listener_address(&self, name: &str) -> anyhow::Result<SocketAddr> {
        let (status, body) = self.get("/listeners?format=json").await?;
        if status != 200 {
            bail!("/listeners?format=json answered {status}: {body}");
        }
        let json: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("/listeners?format=json is not JSON: {body}"))?;
        let listener = json["listener_statuses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["name"] == name)
            .with_context(|| format!("no listener {name:?} in {body}"))?;
        let socket = &listener["local_address"]["socket_address"];
        let ip = socket["address"]
            .as_str()
            .with_context(|| format!("listener {name:?} has no address: {body}"))?;
        let port = socket["port_value"]
            .as_u64()
            .with_context(|| format!("listener {name:?} has no port: {body}"))?;
        Ok(SocketAddr::new(ip.parse()?, u16::try_from(port)?))
    }

    /// The proxy's process id (under `ip netns exec` too: `ip` execs the proxy).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Names of the proxy's threads (`/proc/<pid>/task/*/comm`), sorted.
    pub fn thread_names(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("comm")).ok())
            .map(|name| name.trim().to_string())
            .collect();
        names.sort();
        names
    }

    /// SIGKILL, as pilot-agent ends the proxy after its termination drain; returns how it ended.
    pub fn kill(&mut self) -> anyhow::Result<ExitStatus> {
        self.child.kill()?;
        Ok(self.child.wait()?)
    }

    /// Waits (with a deadline) for the child to exit on its own; `None` if it is still running.
    pub async fn wait_for_exit(&mut self, within: Duration) -> anyhow::Result<Option<ExitStatus>> {
        wait_for_exit(&mut self.child, within).await
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        // SIGKILL, then reap: nothing outlives the test, not even a zombie.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}

/// Polls `log` until it contains `line`, or fails with the log.
pub async fn wait_for_log(
    log: impl Fn() -> String,
    line: &str,
    within: Duration,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    while !log().contains(line) {
        if Instant::now() > deadline {
            bail!("{line:?} not logged within {within:?}; log:\n{}", log());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    Ok(())
}

/// Unique within this test process; combined with the pid for paths and base ids.
/// Waits (with a deadline, polling) for `child` to exit on its own; `None` if it is still
/// running.
pub async fn wait_for_exit(
    child: &mut Child,
    within: Duration,
) -> anyhow::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() > deadline {
            return Ok(None);
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn unique_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Envoy's `--base-id` must differ between instances sharing a machine (it names shared memory
/// and domain sockets even when hot restart is disabled in some builds).
fn envoy_base_id(unique: u32) -> u32 {
    (std::process::id() % 100_000) * 1000 + unique % 1000
}

async fn http_request(
    mut stream: TcpStream,
    admin: SocketAddr,
    method: &str,
    path: &str,
) -> anyhow::Result<(u16, String)> {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    parse_response(&raw)
}

/// Parses a complete `Connection: close` HTTP/1.1 response (content-length, chunked or
/// read-to-close bodies).
pub fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, String)> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("response without end of headers")?;
    let head = std::str::from_utf8(&raw[..split]).context("response head is not UTF-8")?;
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let chunked = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked {
        decode_chunked(body)?
    } else {
        body.to_vec()
    };
    Ok((
        status,
        String::from_utf8(body).context("body is not UTF-8")?,
    ))
}

fn decode_chunked(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk size")?;
        let size_text = std::str::from_utf8(&data[..line_end])?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunk of {size} bytes");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// The workspace's `xds-server` binary serving a directory (see its `//!` docs), killed on drop.
pub struct XdsServerProcess {
    /// What it printed after `listening on `: `http://ip:port` or the unix socket path.
    pub address: String,
    /// Its stderr, line by line (reports of bad files).
    pub stderr: tokio::sync::mpsc::UnboundedReceiver<String>,
    _child: tokio::process::Child,
}

impl XdsServerProcess {
    /// Starts `xds-server --dir <dir> <flags>` and waits for its `listening on` line (printed once
    /// the directory's first snapshot is served).
    pub async fn start(dir: &Path, flags: &[&str]) -> anyhow::Result<XdsServerProcess> {
        use tokio::io::AsyncBufReadExt;
        let mut child = tokio::process::Command::new(workspace_binary("xds-server"))
            .arg("--dir")
            .arg(dir)
            .args(flags)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("spawning xds-server")?;
        let mut lines =
            tokio::io::BufReader::new(child.stdout.take().context("xds-server stdout")?).lines();
        let announced = async {
            loop {
                let line = lines
                    .next_line()
                    .await?
                    .context("xds-server closed its stdout before announcing its address")?;
                if let Some(address) = line.strip_prefix("listening on ") {
                    return anyhow::Ok(address.to_string());
                }
            }
        };
        let address = tokio::time::timeout(START_DEADLINE, announced)
            .await
            .context("xds-server printed no address")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let (tx, stderr) = tokio::sync::mpsc::unbounded_channel();
        let mut errors =
            tokio::io::BufReader::new(child.stderr.take().context("xds-server stderr")?).lines();
        tokio::spawn(async move {
            while let Ok(Some(line)) = errors.next_line().await {
                let _ = tx.send(line);
            }
        });
        Ok(XdsServerProcess {
            address,
            stderr,
            _child: child,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_chunked_and_sized_responses() {
        let chunked =
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nLIVE\n\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(chunked).unwrap(),
            (200, "LIVE\n".to_string())
        );
        let sized = b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 2\r\n\r\nno";
        assert_eq!(parse_response(sized).unwrap(), (405, "no".to_string()));
    }
}
