//! pilot-agent itself in front of a proxy: Istio's `pilot-agent proxy sidecar` (built from the
//! Istio version tests/istiod pins, by `scripts/install-test-deps.d/pilot-agent.sh`) run
//! standalone in a pod's network namespace, rendering Istio's bootstrap template and starting
//! Envoy or Tern as its `binaryPath`, with istiod-standalone as its discovery server.
//!
//! What makes it run without Kubernetes (see docs/istio.md, "pilot-agent"):
//! - every path the agent writes or reads is relative to its working directory (`./etc/istio/
//!   proxy`, `./var/run/secrets/...`, `./etc/istio/pod/labels`), so the pod is a scratch
//!   directory; nothing on the host's real paths is touched;
//! - file-mounted workload certificates in `./var/run/secrets/workload-spiffe-credentials/`
//!   (`cert-chain.pem`, `key.pem`, `root-cert.pem`, from tests/testdata/tls) make the agent's SDS
//!   server serve them without a CA;
//! - `PROXY_CONFIG` gives `discoveryAddress` (istiod's `host:port` in the namespace),
//!   `controlPlaneAuthPolicy: NONE` (plaintext to istiod), `binaryPath`,
//!   `proxyBootstrapTemplatePath`, and the drain durations.
//!
//! Invariants: [`PilotAgent`] kills the agent and the proxy it started on drop (SIGKILL to both,
//! then reaps the agent), so a failing test leaves no proxy behind; requests to the pod's ports
//! are made from inside its namespace.

use crate::envoy::repo_root;
use crate::istiod::Workload;
use crate::netns::{Netns, connect_in};
use crate::process::parse_response;
use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::Duration;
use tokio::time::Instant;

const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The `pilot-agent` binary: `PILOT_AGENT_BIN` when set, else the one
/// `scripts/install-test-deps.d/pilot-agent.sh` builds into `<repo>/.cache/go/bin/`.
pub fn pilot_agent_binary() -> Option<PathBuf> {
    let path = match std::env::var_os("PILOT_AGENT_BIN").filter(|p| !p.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => repo_root().join(".cache/go/bin/pilot-agent"),
    };
    path.is_file().then_some(path)
}

/// Istio's sidecar bootstrap template (`tools/packaging/common/envoy_bootstrap.json` of the same
/// Istio module, copied beside the binary by the install script), which the image ships as
/// `/var/lib/istio/envoy/envoy_bootstrap_tmpl.json`.
pub fn bootstrap_template() -> Option<PathBuf> {
    let path = match std::env::var_os("PILOT_AGENT_TEMPLATE").filter(|p| !p.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => repo_root().join(".cache/go/bin/pilot-agent-envoy_bootstrap_tmpl.json"),
    };
    path.is_file().then_some(path)
}

/// How the agent runs its proxy.
#[derive(Clone, Debug)]
pub struct AgentOptions<'a> {
    /// `ProxyConfig.binaryPath`: the proxy the agent execs.
    pub proxy: &'a Path,
    /// `ProxyConfig.discoveryAddress`: istiod's `host:port`.
    pub discovery: &'a str,
    /// `ProxyConfig.drainDuration` in seconds (the proxy's `--drain-time-s`).
    pub drain_duration_s: u32,
    /// `ProxyConfig.terminationDrainDuration` in seconds: how long the agent waits after
    /// `/drain_listeners` before it kills the proxy.
    pub termination_drain_s: u32,
    /// `ISTIO_CPU_LIMIT` (the container's `limits.cpu`): the agent passes it as `--concurrency`.
    pub cpu_limit: Option<u32>,
    /// More environment (agent features such as `EXIT_ON_ZERO_ACTIVE_CONNECTIONS`).
    pub env: &'a [(&'a str, &'a str)],
}

/// A running `pilot-agent proxy sidecar`, killed with its proxy on drop.
pub struct PilotAgent {
    child: Child,
    /// The pod's working directory (bootstrap, sockets, certificates, log).
    pub dir: PathBuf,
    netns: String,
}

impl PilotAgent {
    /// Prepares `dir` as the pod's file system (workload certificates, pod labels) and starts the
    /// agent in `netns` with `dir` as its working directory and `workload`'s environment.
    pub fn start(
        netns: &Netns,
        dir: &Path,
        workload: &Workload<'_>,
        options: &AgentOptions<'_>,
    ) -> anyhow::Result<PilotAgent> {
        let binary = pilot_agent_binary()
            .context("no pilot-agent: run scripts/install-test-deps.d/pilot-agent.sh")?;
        let template = bootstrap_template()
            .context("no bootstrap template: run scripts/install-test-deps.d/pilot-agent.sh")?;
        mount_certificates(dir)?;
        let pod_info = dir.join("etc/istio/pod");
        std::fs::create_dir_all(&pod_info)?;
        let labels: String = workload
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\"\n"))
            .collect();
        std::fs::write(pod_info.join("labels"), labels)?;
        let proxy_config = serde_json::json!({
            "discoveryAddress": options.discovery,
            "controlPlaneAuthPolicy": "NONE",
            "binaryPath": options.proxy,
            "proxyBootstrapTemplatePath": template,
            "drainDuration": format!("{}s", options.drain_duration_s),
            "terminationDrainDuration": format!("{}s", options.termination_drain_s),
        });
        let app = workload
            .labels
            .iter()
            .find(|(k, _)| *k == "app")
            .map_or(workload.pod, |(_, v)| *v);
        let log = std::fs::File::create(dir.join("agent.log"))?;
        let mut command = std::process::Command::new("ip");
        command
            .args(["netns", "exec", &netns.name])
            .arg(binary)
            .args(["proxy", "sidecar"])
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PROXY_CONFIG", proxy_config.to_string())
            .env("POD_NAME", workload.pod)
            .env("POD_NAMESPACE", workload.namespace)
            .env("INSTANCE_IP", workload.ip)
            .env("SERVICE_ACCOUNT", workload.service_account)
            .env("HOST_IP", "10.10.0.1")
            .env("PILOT_CERT_PROVIDER", "istiod")
            .env("TRUST_DOMAIN", "cluster.local")
            .env("ISTIO_META_CLUSTER_ID", "Kubernetes")
            .env("ISTIO_META_MESH_ID", "cluster.local")
            .env(
                "ISTIO_META_INTERCEPTION_MODE",
                match workload.interception {
                    crate::istiod::Interception::Redirect => "REDIRECT",
                    crate::istiod::Interception::None => "NONE",
                },
            )
            .env("ISTIO_META_WORKLOAD_NAME", format!("{app}-v1"))
            .env(
                "ISTIO_META_OWNER",
                format!(
                    "kubernetes://apis/apps/v1/namespaces/{}/deployments/{app}-v1",
                    workload.namespace
                ),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        command.envs(options.env.iter().copied());
        if let Some(cpus) = options.cpu_limit {
            command.env("ISTIO_CPU_LIMIT", cpus.to_string());
        }
        let child = command.spawn().context("spawning pilot-agent")?;
        Ok(PilotAgent {
            child,
            dir: dir.to_path_buf(),
            netns: netns.name.clone(),
        })
    }

    /// What the agent (and the proxy, whose output it inherits) printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// The processes the agent started (the proxy).
    pub fn proxy_pids(&self) -> Vec<i32> {
        children_of(self.child.id())
    }

    /// `GET path` on `127.0.0.1:port` inside the pod (HTTP/1.1, `connection: close`): status and
    /// body.
    pub async fn get(&self, port: u16, path: &str) -> anyhow::Result<(u16, String)> {
        self.request("GET", port, path).await
    }

    /// `POST path` (empty body) on `127.0.0.1:port` inside the pod: status and body.
    pub async fn post(&self, port: u16, path: &str) -> anyhow::Result<(u16, String)> {
        self.request("POST", port, path).await
    }

    async fn request(&self, method: &str, port: u16, path: &str) -> anyhow::Result<(u16, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let exchange = async {
            let address = SocketAddr::from(([127, 0, 0, 1], port));
            let mut stream = connect_in(&self.netns, address).await?;
            let request = format!(
                "{method} {path} HTTP/1.1\r\nHost: pod\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            stream.write_all(request.as_bytes()).await?;
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw).await?;
            parse_response(&raw)
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .with_context(|| format!("{method} :{port}{path} timed out"))?
    }

    /// Polls `GET path` on `port` until it answers `status`, or fails with the agent's log.
    pub async fn wait_for(
        &mut self,
        port: u16,
        path: &str,
        status: u16,
        within: Duration,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + within;
        loop {
            let answer = self.get(port, path).await;
            if let Ok((got, body)) = &answer
                && *got == status
            {
                return Ok(body.clone());
            }
            if let Some(exit) = self.child.try_wait()? {
                bail!("pilot-agent exited ({exit}); log:\n{}", self.log());
            }
            if Instant::now() > deadline {
                bail!(
                    "GET :{port}{path} never answered {status} within {within:?} (last: {answer:?}); log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Polls the agent's log until it contains `line`, or fails with the log.
    pub async fn wait_for_log(&self, line: &str, within: Duration) -> anyhow::Result<()> {
        crate::process::wait_for_log(|| self.log(), line, within).await
    }

    /// Sends SIGTERM to the agent, as the kubelet does on pod termination.
    pub fn terminate(&self) -> anyhow::Result<()> {
        kill(pid(self.child.id()), Signal::SIGTERM).context("SIGTERM to pilot-agent")
    }

    /// Waits (with a deadline) for the agent to exit; `None` if it is still running.
    pub async fn wait_for_exit(&mut self, within: Duration) -> anyhow::Result<Option<ExitStatus>> {
        crate::process::wait_for_exit(&mut self.child, within).await
    }
}

impl Drop for PilotAgent {
    fn drop(&mut self) {
        // The proxy first: once the agent is gone it would be re-parented and missed.
        for child in children_of(self.child.id()) {
            let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pid(id: u32) -> Pid {
    Pid::from_raw(i32::try_from(id).expect("pid fits i32"))
}

/// The children of process `id`, from `/proc/<id>/task/*/children`.
pub fn children_of(id: u32) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{id}/task")) else {
        return Vec::new();
    };
    let mut children: Vec<i32> = tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    children.sort_unstable();
    children.dedup();
    children
}

/// Writes the test PKI's workload certificate where the agent looks for file-mounted workload
/// certificates (`security.WorkloadIdentityCredentialsPath`).
fn mount_certificates(dir: &Path) -> anyhow::Result<()> {
    let certs = dir.join("var/run/secrets/workload-spiffe-credentials");
    std::fs::create_dir_all(&certs)?;
    for (from, to) in [
        ("workload.pem", "cert-chain.pem"),
        ("workload-key.pem", "key.pem"),
        ("ca.pem", "root-cert.pem"),
    ] {
        std::fs::write(certs.join(to), crate::pki::pem(from))
            .with_context(|| format!("writing {to}"))?;
    }
    Ok(())
}
