//! The paths under test: how each proxy is found, configured and run, in one place.
//!
//! Every proxy gets the equivalent configuration (same-config rule of BENCHMARKS.md): one
//! listener on 127.0.0.1, one route or one TCP forward to the in-process backend, one worker,
//! keep-alive to the upstream, no access log. Envoy additionally gets `generate_request_id:
//! false` and `dynamic_stats: false` (its own benchmarking advice); Tern gets the same YAML.
//! h2c listeners forward over HTTP/1.1 keep-alive, since nginx cannot proxy h2 to an upstream,
//! except gRPC (S3), which goes h2c on both sides: Envoy/Tern `explicit_http_config`
//! `http2_protocol_options`, nginx `grpc_pass`, haproxy `proto h2`. S8's route tables are
//! prefix routes for Envoy/Tern, `location` blocks for nginx and `use_backend` rules for haproxy.
//! pingora (bench/pingora-proxy) takes its listener and upstream on the command line and proxies
//! HTTP/1.1 and h2c to an HTTP/1.1 upstream only, so it has no TCP, gRPC or route-table mode.
//!
//! Invariants:
//! - A proxy runs under `taskset -c 1` (cores 0-1 when it has two workers) as the leader of its
//!   own process group; [`Running`] kills the whole group with SIGKILL and reaps the child when
//!   dropped (normal end, error, panic unwinding, Ctrl-C), so no proxy outlives the harness.
//! - [`start`] returns only once a request through the proxy succeeded, or fails with its log.

use crate::cli::Proxy;
use crate::load;
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// How long a proxy may take to answer its first request.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// HTTP/1.1 downstream (S1).
    Http1,
    /// h2c with prior knowledge downstream (S2).
    H2c,
    /// Plain TCP forwarding (S4).
    Tcp,
    /// gRPC: h2c downstream and h2c upstream (S3).
    Grpc,
    /// HTTP/1.1 with this many prefix routes `/svc-NNNN/` (S8), all to the backend.
    Routes(usize),
}

/// The path of a request matching route `index` of [`Mode::Routes`] (a 64 B body).
pub fn route_path(index: usize) -> String {
    format!("/svc-{index:04}/64")
}

fn route_prefix(index: usize) -> String {
    format!("/svc-{index:04}/")
}

/// The proxies' binaries, or why one cannot run.
#[derive(Debug)]
pub struct Binaries {
    tern: Result<PathBuf, String>,
    envoy: Result<PathBuf, String>,
    nginx: Result<PathBuf, String>,
    haproxy: Result<PathBuf, String>,
    pingora: Result<PathBuf, String>,
}

impl Binaries {
    pub fn locate(tern: Option<&Path>, envoy: Option<&Path>, pingora: Option<&Path>) -> Binaries {
        let tern = match tern.map(Path::to_path_buf).or_else(|| env_path("TERN_BIN")) {
            Some(path) => exists(path),
            None => std::env::current_exe()
                .map_err(|e| e.to_string())
                .and_then(|exe| exists(exe.with_file_name("tern"))),
        };
        let envoy = match envoy
            .map(Path::to_path_buf)
            .or_else(|| env_path("TERN_ENVOY_BIN"))
        {
            Some(path) => exists(path),
            None => venv_envoy(),
        };
        let pingora = match pingora
            .map(Path::to_path_buf)
            .or_else(|| env_path("TERN_PINGORA_BIN"))
        {
            Some(path) => exists(path),
            None => exists(repo_root().join(".cache/bin/pingora-proxy")).map_err(|e| {
                format!("{e} (bash scripts/install-pingora.sh builds it; needs cargo and cmake)")
            }),
        };
        Binaries {
            tern,
            envoy,
            nginx: on_path("nginx"),
            haproxy: on_path("haproxy"),
            pingora,
        }
    }

    /// The binary for `proxy`, or the reason it is skipped. `direct` needs none.
    pub fn get(&self, proxy: Proxy) -> Result<Option<&Path>, String> {
        let found = match proxy {
            Proxy::Direct => return Ok(None),
            Proxy::Tern => &self.tern,
            Proxy::Envoy => &self.envoy,
            Proxy::Nginx => &self.nginx,
            Proxy::Haproxy => &self.haproxy,
            Proxy::Pingora => &self.pingora,
        };
        found
            .as_ref()
            .map(|p| Some(p.as_path()))
            .map_err(Clone::clone)
    }

    /// `<binary> --version` (or -v / -V), first line, for the report.
    pub fn version(&self, proxy: Proxy) -> Option<String> {
        let binary = self.get(proxy).ok()??;
        let flag = match proxy {
            Proxy::Nginx => "-v",
            Proxy::Haproxy => "-v",
            _ => "--version",
        };
        let out = Command::new(binary).arg(flag).output().ok()?;
        let text = [out.stdout, out.stderr].concat();
        let text = String::from_utf8_lossy(&text);
        text.lines()
            .find(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_string())
    }
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The binary at `path`, made absolute: proxies run with their scratch directory as working
/// directory, so a relative `--tern-bin` would not be found there.
fn exists(path: PathBuf) -> Result<PathBuf, String> {
    if path.is_file() {
        std::path::absolute(&path).map_err(|e| format!("{}: {e}", path.display()))
    } else {
        Err(format!("no binary at {}", path.display()))
    }
}

pub fn on_path(name: &str) -> Result<PathBuf, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!("{name} not installed (bash scripts/install-test-deps.d/bench.sh installs it)")
        })
}

/// Where scripts/install-test-deps.d/envoy.sh puts Envoy 1.40.0.
fn venv_envoy() -> Result<PathBuf, String> {
    let lib = repo_root().join(".cache/envoy-venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| e.path().join("site-packages/envoy/_bin/envoy"))
            .find(|p| p.is_file())
    });
    found.ok_or_else(|| {
        format!(
            "Envoy not installed under {} (bash scripts/install-test-deps.d/envoy.sh installs it)",
            lib.display()
        )
    })
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// A free TCP port on 127.0.0.1 (bound and released; the proxy binds it right after).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A path under test, up and answering. Dropping it kills the proxy's process group.
pub struct Running {
    pub listen: SocketAddr,
    child: Option<Child>,
    scratch: Option<PathBuf>,
}

impl Running {
    /// The proxy's process group id (its pid), or None for the direct path.
    pub fn pgid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The last lines of the proxy's log.
    pub fn log(&self) -> String {
        let Some(scratch) = &self.scratch else {
            return String::new();
        };
        let text = std::fs::read_to_string(scratch.join("proxy.log")).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Why the proxy is gone, if it exited.
    pub fn exited(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        Some(format!("exited ({status}); log:\n{}", self.log()))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(scratch) = self.scratch.take() {
            let _ = std::fs::remove_dir_all(scratch);
        }
    }
}

/// Starts `proxy` in front of `upstream` speaking `mode`, pinned to core 1, and waits until a
/// request (or connection, for TCP) through it succeeds.
pub async fn start(
    proxy: Proxy,
    binaries: &Binaries,
    mode: Mode,
    upstream: SocketAddr,
) -> anyhow::Result<Running> {
    start_under(proxy, binaries, mode, upstream, &[], START_DEADLINE).await
}

/// [`start`] with `workers` worker threads (Tern and Envoy `--concurrency`): one worker runs on
/// core 1 as always, more run on cores 0-1, sharing core 0 with the generator and the backend.
pub async fn start_workers(
    proxy: Proxy,
    binaries: &Binaries,
    mode: Mode,
    upstream: SocketAddr,
    workers: usize,
) -> anyhow::Result<Running> {
    if workers != 1 && !matches!(proxy, Proxy::Tern | Proxy::Envoy) {
        bail!("{} runs with one worker here", proxy.name());
    }
    let launch = Launch {
        wrapper: &[],
        deadline: START_DEADLINE,
        workers,
    };
    start_launched(proxy, binaries, mode, upstream, &launch).await
}

/// How a proxy process is started: under a wrapper or not, with how many workers.
struct Launch<'a> {
    wrapper: &'a [String],
    deadline: Duration,
    workers: usize,
}

impl Launch<'_> {
    /// The cores the proxy may use: core 1 alone for one worker, both cores for more.
    fn cpus(&self) -> &'static str {
        if self.workers > 1 { "0,1" } else { "1" }
    }
}

/// [`start`], with the proxy run under `wrapper` (e.g. `valgrind --tool=callgrind`; the proxy's
/// pid is the wrapper's when it execs, as valgrind does) and `deadline` for its first answer.
pub async fn start_under(
    proxy: Proxy,
    binaries: &Binaries,
    mode: Mode,
    upstream: SocketAddr,
    wrapper: &[String],
    deadline: Duration,
) -> anyhow::Result<Running> {
    let launch = Launch {
        wrapper,
        deadline,
        workers: 1,
    };
    start_launched(proxy, binaries, mode, upstream, &launch).await
}

async fn start_launched(
    proxy: Proxy,
    binaries: &Binaries,
    mode: Mode,
    upstream: SocketAddr,
    launch: &Launch<'_>,
) -> anyhow::Result<Running> {
    let Some(binary) = binaries.get(proxy).map_err(anyhow::Error::msg)? else {
        return Ok(Running {
            listen: upstream,
            child: None,
            scratch: None,
        });
    };
    let port = free_port()?;
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    if proxy == Proxy::Pingora && !matches!(mode, Mode::Http1 | Mode::H2c) {
        bail!(
            "the pingora comparator proxies HTTP/1.1 and h2c to one HTTP/1.1 upstream only (no TCP, gRPC or route table)"
        );
    }
    let scratch = scratch_dir(proxy)?;
    let (file, text) = match proxy {
        Proxy::Tern | Proxy::Envoy => ("bootstrap.yaml", envoy_yaml(mode, port, upstream)),
        Proxy::Nginx => ("nginx.conf", nginx_conf(mode, port, upstream, &scratch)),
        Proxy::Haproxy => ("haproxy.cfg", haproxy_cfg(mode, port, upstream)),
        // No file: the listener and upstream go on the command line (see `spawn`).
        Proxy::Pingora => (
            "pingora.args",
            pingora_args(mode, listen, upstream).join(" "),
        ),
        Proxy::Direct => unreachable!("direct returned above"),
    };
    let config = scratch.join(file);
    std::fs::write(&config, text)?;
    let mut running = spawn(proxy, binary, &config, scratch, launch)?;
    running.listen = listen;
    let limit = launch.deadline;
    let deadline = Instant::now() + limit;
    loop {
        let probe = match mode {
            Mode::Http1 => load::h1_probe(running.listen, "/64").await,
            Mode::Routes(_) => load::h1_probe(running.listen, &route_path(0)).await,
            Mode::H2c => {
                load::h2_probe(running.listen, load::H2Call::get(running.listen, 64)).await
            }
            Mode::Grpc => {
                load::h2_probe(running.listen, load::H2Call::grpc(running.listen, 64)).await
            }
            Mode::Tcp => tokio::net::TcpStream::connect(running.listen)
                .await
                .map(drop)
                .map_err(Into::into),
        };
        match probe {
            Ok(()) => return Ok(running),
            Err(e) => {
                if let Some(why) = running.exited() {
                    bail!("{} {why}", proxy.name());
                }
                if Instant::now() > deadline {
                    bail!(
                        "{} did not answer within {limit:?} ({e}); log:\n{}",
                        proxy.name(),
                        running.log()
                    );
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts Tern or Envoy with Istio's rendered sidecar bootstrap (pilot-agent's output for
/// pkg/bootstrap/testdata/default.proxycfg), its ports moved to free ones and its xDS socket to
/// a path where no agent listens. Returns once the process has lived for `settle`.
pub async fn start_istio(
    proxy: Proxy,
    binaries: &Binaries,
    fixture: &Path,
    settle: Duration,
) -> anyhow::Result<Running> {
    let Some(binary) = binaries.get(proxy).map_err(anyhow::Error::msg)? else {
        bail!("the Istio bootstrap is for tern and envoy only");
    };
    let mut text = std::fs::read_to_string(fixture)
        .with_context(|| format!("reading Istio's bootstrap {}", fixture.display()))?;
    let scratch = scratch_dir(proxy)?;
    for port in [15000, 15020, 15021, 15090] {
        text = text.replace(
            &format!("\"port_value\": {port}"),
            &format!("\"port_value\": {}", free_port()?),
        );
    }
    text = text.replace("/tmp/XDS", &scratch.join("XDS").display().to_string());
    text = text.replace(
        "/var/lib/istio/data/envoy.prof",
        &scratch.join("envoy.prof").display().to_string(),
    );
    let config = scratch.join("bootstrap.json");
    std::fs::write(&config, text)?;
    let mut running = spawn(proxy, binary, &config, scratch, &ONE_WORKER)?;
    tokio::time::sleep(settle).await;
    if let Some(why) = running.exited() {
        bail!("{} {why}", proxy.name());
    }
    Ok(running)
}

/// Starts Tern or Envoy with `bootstrap` (Envoy YAML) as it is, pinned to core 1, and returns at
/// once: what "ready" means (a pushed listener answering) is the caller's to wait for.
pub fn start_with_bootstrap(
    proxy: Proxy,
    binaries: &Binaries,
    bootstrap: &str,
) -> anyhow::Result<Running> {
    let binary = match binaries.get(proxy).map_err(anyhow::Error::msg)? {
        Some(binary) if matches!(proxy, Proxy::Tern | Proxy::Envoy) => binary,
        _ => bail!("{} does not read an Envoy bootstrap", proxy.name()),
    };
    let scratch = scratch_dir(proxy)?;
    let config = scratch.join("bootstrap.yaml");
    std::fs::write(&config, bootstrap)?;
    spawn(proxy, binary, &config, scratch, &ONE_WORKER)
}

/// One worker on core 1, no wrapper.
const ONE_WORKER: Launch<'static> = Launch {
    wrapper: &[],
    deadline: START_DEADLINE,
    workers: 1,
};

fn scratch_dir(proxy: Proxy) -> anyhow::Result<PathBuf> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!(
        "tern-bench-{}-{}-{n}",
        std::process::id(),
        proxy.name()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Runs `taskset -c <cpus> [wrapper...] <binary> <args>` in its own process group, logging to
/// scratch/proxy.log.
fn spawn(
    proxy: Proxy,
    binary: &Path,
    config: &Path,
    scratch: PathBuf,
    launch: &Launch<'_>,
) -> anyhow::Result<Running> {
    let log = std::fs::File::create(scratch.join("proxy.log"))?;
    let mut command = Command::new("taskset");
    command
        .args(["-c", launch.cpus()])
        .args(launch.wrapper)
        .arg(binary);
    match proxy {
        Proxy::Tern | Proxy::Envoy => {
            command.arg("-c").arg(config).args([
                "--concurrency",
                &launch.workers.to_string(),
                "--disable-hot-restart",
                "-l",
                "warning",
            ]);
            if proxy == Proxy::Envoy {
                command.arg("--use-dynamic-base-id");
            }
        }
        Proxy::Nginx => {
            command.arg("-p").arg(&scratch).arg("-c").arg(config);
        }
        Proxy::Haproxy => {
            command.arg("-db").arg("-f").arg(config);
        }
        Proxy::Pingora => {
            command.args(std::fs::read_to_string(config)?.split_whitespace());
        }
        Proxy::Direct => bail!("direct has no process"),
    }
    command
        .current_dir(&scratch)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = command
        .spawn()
        .with_context(|| format!("spawning taskset -c {} {}", launch.cpus(), binary.display()))?;
    Ok(Running {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        child: Some(child),
        scratch: Some(scratch),
    })
}

/// Envoy v3 bootstrap (also Tern's): one listener, one route or a tcp_proxy, one cluster.
fn envoy_yaml(mode: Mode, port: u16, upstream: SocketAddr) -> String {
    let filter = match mode {
        Mode::Tcp => r#"      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: bench
          cluster: backend"#
            .to_string(),
        Mode::Http1 | Mode::H2c | Mode::Grpc | Mode::Routes(_) => r#"      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          codec_type: AUTO
          generate_request_id: false
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
              dynamic_stats: false
          route_config:
            name: local
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
"#
        .to_string()
            + &routes_yaml(mode),
    };
    // gRPC needs HTTP/2 to the upstream (the non-deprecated form of the cluster's
    // `http2_protocol_options`).
    let protocol = if mode == Mode::Grpc {
        r#"    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config:
          http2_protocol_options: {}
"#
    } else {
        ""
    };
    format!(
        r#"static_resources:
  listeners:
  - name: bench
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
    filter_chains:
    - filters:
{filter}
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
{protocol}    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: {ip}, port_value: {up} }} }} }}
"#,
        ip = upstream.ip(),
        up = upstream.port()
    )
}

/// The route list of the one virtual host: `/` (one route), or S8's numbered prefixes.
fn routes_yaml(mode: Mode) -> String {
    let route = |prefix: &str| {
        format!(
            "              - match: {{ prefix: \"{prefix}\" }}\n                route: {{ cluster: backend, timeout: 0s }}\n"
        )
    };
    match mode {
        Mode::Routes(n) => (0..n).map(|i| route(&route_prefix(i))).collect(),
        _ => route("/"),
    }
}

/// nginx: master plus one worker, no access log, upstream keep-alive (HTTP/1.1 to the backend).
fn nginx_conf(mode: Mode, port: u16, upstream: SocketAddr, scratch: &Path) -> String {
    let s = scratch.display();
    let head = format!(
        "daemon off;\nworker_processes 1;\npid {s}/nginx.pid;\nerror_log {s}/error.log warn;\n"
    );
    let events = "events { worker_connections 4096; }\n";
    if mode == Mode::Tcp {
        return format!(
            "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n{head}{events}\
             stream {{\n  server {{\n    listen 127.0.0.1:{port};\n    proxy_pass {upstream};\n  }}\n}}\n"
        );
    }
    let http2 = if matches!(mode, Mode::H2c | Mode::Grpc) {
        " http2"
    } else {
        ""
    };
    let forward = if mode == Mode::Grpc {
        "      grpc_pass grpc://backend;\n".to_string()
    } else {
        "      proxy_pass http://backend;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n"
            .to_string()
    };
    let locations: String = match mode {
        Mode::Routes(n) => (0..n)
            .map(|i| format!("    location {} {{\n{forward}    }}\n", route_prefix(i)))
            .collect(),
        _ => format!("    location / {{\n{forward}    }}\n"),
    };
    format!(
        "{head}{events}http {{
  access_log off;
  client_body_temp_path {s}/body;
  proxy_temp_path {s}/proxy;
  fastcgi_temp_path {s}/fastcgi;
  uwsgi_temp_path {s}/uwsgi;
  scgi_temp_path {s}/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  http2_max_concurrent_streams 1000;
  upstream backend {{
    server {upstream};
    keepalive 64;
    keepalive_requests 10000000;
  }}
  server {{
    listen 127.0.0.1:{port}{http2};
{locations}  }}
}}
"
    )
}

/// haproxy: one thread, no log, keep-alive both sides with `http-reuse always`.
fn haproxy_cfg(mode: Mode, port: u16, upstream: SocketAddr) -> String {
    let (mode_line, bind_extra, http_options) = match mode {
        Mode::Tcp => ("tcp", "", ""),
        Mode::Http1 | Mode::Routes(_) => (
            "http",
            "",
            "  option http-keep-alive\n  http-reuse always\n",
        ),
        Mode::H2c | Mode::Grpc => (
            "http",
            " proto h2",
            "  option http-keep-alive\n  http-reuse always\n",
        ),
    };
    // S8: one `use_backend` rule per route, evaluated in order as haproxy does; no default.
    let routing: String = match mode {
        Mode::Routes(n) => (0..n)
            .map(|i| {
                format!(
                    "  use_backend backend if {{ path_beg {} }}\n",
                    route_prefix(i)
                )
            })
            .collect(),
        _ => "  default_backend backend\n".into(),
    };
    let server_extra = if mode == Mode::Grpc { " proto h2" } else { "" };
    format!(
        "global
  nbthread 1
  maxconn 4096
defaults
  mode {mode_line}
  timeout connect 5s
  timeout client 300s
  timeout server 300s
{http_options}frontend bench
  bind 127.0.0.1:{port}{bind_extra}
{routing}backend backend
  server s1 {upstream}{server_extra}
"
    )
}

/// pingora-proxy's command line: the listener, the one upstream, h2c downstream for S2.
fn pingora_args(mode: Mode, listen: SocketAddr, upstream: SocketAddr) -> Vec<String> {
    let mut args = vec![
        "--listen".to_string(),
        listen.to_string(),
        "--upstream".into(),
        upstream.to_string(),
    ];
    if mode == Mode::H2c {
        args.push("--h2c".into());
    }
    args
}
