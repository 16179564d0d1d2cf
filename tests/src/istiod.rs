//! Istio's own control plane in tests: `istiod-standalone` (tests/istiod: Istio's discovery
//! server, the code istiod runs, at the Istio version its go.mod pins) serving a directory of
//! Istio YAML on a unix socket, Istio's rendered sidecar bootstrap pointed at it, and a test SDS
//! server in pilot-agent's place serving the workload secrets `default` and `ROOTCA`.
//!
//! The Bookinfo mesh's pods ([`PRODUCTPAGE`], [`pod`]) and what istiod sends productpage
//! ([`productpage_names`], [`wait_for_names`]) are shared by tests/tests/istiod.rs and
//! tests/tests/istioctl.rs.
//!
//! Invariants:
//! - [`Istiod::start`] returns once istiod printed `listening on` (its first push context is
//!   built); the process is killed on drop.
//! - [`Istiod::wait_applied`] returns once istiod reported applying the next change of its
//!   directory and committing the push.
//! - [`sidecar_bootstrap`] changes only the node and the `xds-grpc`/`sds-grpc` pipe paths of
//!   Istio's rendered bootstrap: a proxy in its own network namespace keeps Istio's ports.

use crate::envoy::{envoy_binary, repo_root};
use crate::netns::Netns;
use crate::prereq::{is_root, require};
use crate::process::{PILOT_AGENT_FLAGS, ProxyKind, ProxyProcess, tern_binary};
use crate::xds_server::{Snapshot, XdsServer};
use anyhow::{Context, bail};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use xds_client::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use xds_client::proto_json::{ReadOptions, from_text};

/// How long istiod may take to start or to apply a change (a loaded 2-core machine).
const DEADLINE: Duration = Duration::from_secs(60);

/// The Istio version the module pins (tests/istiod/go.mod: master after 1.30), as proxies of that
/// version announce it in `ISTIO_VERSION`.
pub const ISTIO_VERSION: &str = "1.31.0";

/// The mesh config of a default Helm install (`istio-discovery` chart's configmap): Prometheus
/// metrics on, so istiod adds Istio's `istio.stats` filters.
const HELM_MESH_CONFIG: &str = "\
trustDomain: cluster.local
rootNamespace: istio-system
defaultProviders:
  metrics: [prometheus]
defaultConfig:
  discoveryAddress: istiod.istio-system.svc:15012
";

/// Which xDS istiod generates from the same Istio YAML.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// A default install: istiod's features and the Helm chart's mesh config, so Istio's own
    /// filters are in (metadata exchange, `istio.alpn`, `istio.stats`).
    IstioDefault,
    /// What a stock Envoy (no Istio contrib filters) accepts: no metrics provider and
    /// `PILOT_ENABLE_METADATA_EXCHANGE=false`, `PILOT_ENABLE_ALPN_FILTER=false`.
    StockEnvoy,
}

/// Root (the tests run proxies in network namespaces), istiod-standalone and, when `kinds` has
/// Envoy, Envoy 1.40.0; else skip with one line (fail under `CI=true`).
pub fn prerequisites(kinds: &[ProxyKind]) -> bool {
    require(
        is_root(),
        "the istiod tests run proxies in network namespaces: need root",
    ) && require(
        istiod_binary().is_some(),
        "istiod-standalone is not built (scripts/install-test-deps.d/istiod.sh, needs Go)",
    ) && (!kinds.contains(&ProxyKind::Envoy)
        || require(
            envoy_binary().is_some(),
            "Envoy 1.40.0 is not installed (scripts/install-test-deps.sh)",
        ))
}

/// The `istiod-standalone` binary: `ISTIOD_STANDALONE_BIN` when set, else the one
/// `scripts/install-test-deps.d/istiod.sh` builds into `<repo>/.cache/go/bin/`.
pub fn istiod_binary() -> Option<PathBuf> {
    let path = match std::env::var_os("ISTIOD_STANDALONE_BIN").filter(|p| !p.is_empty()) {
        Some(path) => PathBuf::from(path),
        None => repo_root().join(".cache/go/bin/istiod-standalone"),
    };
    path.is_file().then_some(path)
}

/// A running `istiod-standalone`, killed on drop.
pub struct Istiod {
    /// The unix socket it serves xDS on ([`Istiod::start`]; empty for [`Istiod::start_in`]).
    pub socket: PathBuf,
    /// What it printed after `listening on `: `unix:<path>` or `127.0.0.1:<port>`.
    pub address: String,
    /// Its stdout lines after `listening on`.
    lines: mpsc::UnboundedReceiver<String>,
    log: PathBuf,
    _child: tokio::process::Child,
}

impl Istiod {
    /// Starts istiod on the YAML in `config`, serving on the unix socket `socket` (its log and
    /// mesh config go beside it).
    pub async fn start(config: &Path, socket: &Path, profile: Profile) -> anyhow::Result<Istiod> {
        let binary = istiod_binary()
            .context("no istiod-standalone: run scripts/install-test-deps.d/istiod.sh")?;
        let listen = format!("unix:{}", socket.display());
        let mut istiod = Self::spawn(
            tokio::process::Command::new(binary),
            config,
            &listen,
            socket,
            profile,
        )
        .await?;
        if istiod.address != listen {
            bail!("istiod listens on {}, not {listen}", istiod.address);
        }
        istiod.socket = socket.to_path_buf();
        Ok(istiod)
    }

    /// Starts istiod inside `netns` on a loopback TCP port there (pilot-agent's
    /// `discoveryAddress` must be `host:port`); its log and mesh config go in `dir`.
    pub async fn start_in(
        netns: &Netns,
        config: &Path,
        dir: &Path,
        profile: Profile,
    ) -> anyhow::Result<Istiod> {
        let binary = istiod_binary()
            .context("no istiod-standalone: run scripts/install-test-deps.d/istiod.sh")?;
        let mut command = tokio::process::Command::new("ip");
        command.args(["netns", "exec", &netns.name]).arg(binary);
        Self::spawn(command, config, "127.0.0.1:0", &dir.join("istiod"), profile).await
    }

    /// Runs `command` (istiod-standalone) listening on `listen`; its log and mesh config are
    /// named after `stem`.
    async fn spawn(
        mut command: tokio::process::Command,
        config: &Path,
        listen: &str,
        stem: &Path,
        profile: Profile,
    ) -> anyhow::Result<Istiod> {
        let log = stem.with_extension("log");
        command
            .arg("--config")
            .arg(config)
            .arg("--listen")
            .arg(listen);
        match profile {
            Profile::IstioDefault => {
                let mesh = stem.with_extension("mesh.yaml");
                std::fs::write(&mesh, HELM_MESH_CONFIG)?;
                command.arg("--mesh").arg(mesh);
            }
            Profile::StockEnvoy => {
                command.envs([
                    ("PILOT_ENABLE_METADATA_EXCHANGE", "false"),
                    ("PILOT_ENABLE_ALPN_FILTER", "false"),
                ]);
            }
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log)?)
            .kill_on_drop(true)
            .spawn()
            .context("spawning istiod-standalone")?;
        let mut stdout =
            tokio::io::BufReader::new(child.stdout.take().context("istiod stdout")?).lines();
        let (tx, mut lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stdout.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let listening = async {
            while let Some(line) = lines.recv().await {
                if let Some(address) = line.strip_prefix("listening on ") {
                    return Some(address.to_string());
                }
            }
            None
        };
        let address = match tokio::time::timeout(DEADLINE, listening).await {
            Ok(Some(address)) => address,
            _ => bail!(
                "istiod printed no `listening on` within {DEADLINE:?}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ),
        };
        Ok(Istiod {
            socket: PathBuf::new(),
            address,
            lines,
            log,
            _child: child,
        })
    }

    /// Waits for istiod's next `applied ...` line (a change of its directory, pushed) and
    /// returns it.
    pub async fn wait_applied(&mut self) -> anyhow::Result<String> {
        let applied = async {
            while let Some(line) = self.lines.recv().await {
                if line.starts_with("applied ") {
                    return Some(line);
                }
            }
            None
        };
        match tokio::time::timeout(DEADLINE, applied).await {
            Ok(Some(line)) => Ok(line),
            _ => bail!("istiod applied no change; log:\n{}", self.log()),
        }
    }

    /// What istiod logged (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// How a sidecar's traffic reaches it, as `INTERCEPTION_MODE` tells istiod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interception {
    /// iptables REDIRECT (a default pod): `virtualOutbound` on 15001, `virtualInbound` on 15006,
    /// per-port outbound listeners that only receive hand-offs.
    Redirect,
    /// No capture: istiod binds every outbound listener on 127.0.0.1:<service port> and every
    /// inbound one on 0.0.0.0:<target port>, and sends no virtual listeners.
    None,
}

/// The pod a sidecar belongs to.
#[derive(Clone, Debug)]
pub struct Workload<'a> {
    pub pod: &'a str,
    pub namespace: &'a str,
    pub ip: &'a str,
    /// Its pod labels; `app` and `version` name it as Istio does.
    pub labels: &'a [(&'a str, &'a str)],
    pub service_account: &'a str,
    pub interception: Interception,
}

impl Workload<'_> {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }

    /// The node pilot-agent renders for this pod (`pkg/bootstrap/config.go`).
    fn node(&self, template: &Value) -> Value {
        let app = self.label("app").unwrap_or(self.pod);
        let mut metadata = template.clone();
        let labels: serde_json::Map<String, Value> = self
            .labels
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        for (key, value) in [
            ("NAME", json!(self.pod)),
            ("NAMESPACE", json!(self.namespace)),
            ("LABELS", Value::Object(labels)),
            ("CLUSTER_ID", json!("Kubernetes")),
            ("MESH_ID", json!("cluster.local")),
            ("ISTIO_VERSION", json!(ISTIO_VERSION)),
            ("INSTANCE_IPS", json!(self.ip)),
            ("SERVICE_ACCOUNT", json!(self.service_account)),
            (
                "WORKLOAD_NAME",
                json!(format!("{app}-{}", self.label("version").unwrap_or("v1"))),
            ),
            (
                "OWNER",
                json!(format!(
                    "kubernetes://apis/apps/v1/namespaces/{}/deployments/{app}",
                    self.namespace
                )),
            ),
            (
                "INTERCEPTION_MODE",
                json!(match self.interception {
                    Interception::Redirect => "REDIRECT",
                    Interception::None => "NONE",
                }),
            ),
        ] {
            metadata[key] = value;
        }
        json!({
            "id": format!(
                "sidecar~{}~{}.{}~{}.svc.cluster.local",
                self.ip, self.pod, self.namespace, self.namespace
            ),
            "cluster": format!("{app}.{}", self.namespace),
            "locality": {},
            "metadata": metadata,
        })
    }
}

/// Istio's rendered sidecar bootstrap (`pkg/bootstrap/testdata/default_golden.json`: delta ADS
/// over `xds-grpc`, SDS over `sds-grpc`, admin on 127.0.0.1:15000, static listeners 15090 and
/// 15021) for `workload`, with `xds-grpc` on the unix socket `xds` and `sds-grpc` on `sds`.
pub fn sidecar_bootstrap(workload: &Workload<'_>, xds: &Path, sds: &Path) -> String {
    let path = repo_root().join("../shared/fixtures/istio/xds/default_golden.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut bootstrap: Value = serde_json::from_str(&text).expect("the fixture is JSON");
    bootstrap["node"] = workload.node(&bootstrap["node"]["metadata"]);
    for cluster in bootstrap["static_resources"]["clusters"]
        .as_array_mut()
        .expect("static clusters")
    {
        let socket = match cluster["name"].as_str() {
            Some("xds-grpc") => xds,
            Some("sds-grpc") => sds,
            _ => continue,
        };
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]
            ["path"] = json!(socket.to_str().expect("UTF-8 path"));
    }
    serde_json::to_string_pretty(&bootstrap).expect("JSON")
}

/// `bootstrap` with ADS over state-of-the-world (`api_type: GRPC`) instead of Istio's delta.
pub fn state_of_the_world(bootstrap: &str) -> String {
    let mut bootstrap: Value = serde_json::from_str(bootstrap).expect("a JSON bootstrap");
    bootstrap["dynamic_resources"]["ads_config"]["api_type"] = json!("GRPC");
    serde_json::to_string_pretty(&bootstrap).expect("JSON")
}

/// The workload certificate (`default`) and trust root (`ROOTCA`) pilot-agent's SDS server would
/// serve, from the test PKI in tests/testdata/tls, as `inline_bytes` the way pilot-agent sends
/// them (`istioctl proxy-config secret` reads the certificates only from there).
pub fn workload_secrets() -> Snapshot {
    let bytes = |file: &str| crate::pki::base64(crate::pki::pem(file).as_bytes());
    let secret = |yaml: String| -> Secret {
        from_text(&yaml, "secret.yaml", ReadOptions::default())
            .unwrap_or_else(|e| panic!("test secret does not parse: {e}"))
    };
    let mut snapshot = Snapshot::new();
    snapshot
        .add(&secret(format!(
            "name: default\ntls_certificate:\n  certificate_chain: {{inline_bytes: {}}}\n  private_key: {{inline_bytes: {}}}",
            bytes("workload.pem"),
            bytes("workload-key.pem")
        )))
        .add(&secret(format!(
            "name: ROOTCA\nvalidation_context: {{trusted_ca: {{inline_bytes: {}}}}}",
            bytes("ca.pem")
        )));
    snapshot
}

/// pilot-agent's SDS server as far as a sidecar sees it: [`workload_secrets`] over `StreamSecrets`
/// on the unix socket `path`.
pub async fn start_sds(path: &Path) -> anyhow::Result<XdsServer> {
    let server = XdsServer::start_unix(path).await?;
    server.push(workload_secrets()).await;
    Ok(server)
}

/// istiod serving a copy of a directory of Istio YAML, the SDS server in pilot-agent's place,
/// and the scratch directory holding them (removed on drop).
pub struct Mesh {
    pub istiod: Istiod,
    sds_socket: PathBuf,
    _sds: XdsServer,
    dir: PathBuf,
}

impl Mesh {
    /// Starts istiod on a copy of the YAML files in `source` (those named in `skip` left out).
    /// The sockets are open to every user: a captured sidecar runs as 1337.
    pub async fn start(tag: &str, source: &Path, skip: &[&str], profile: Profile) -> Mesh {
        let dir = std::env::temp_dir().join(format!("tern-istiod-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = dir.join("config");
        std::fs::create_dir_all(&config).expect("scratch directory");
        for entry in std::fs::read_dir(source).expect("the mesh's directory") {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().expect("a file");
            if !skip.iter().any(|s| name == *s) {
                std::fs::copy(&path, config.join(name)).expect("copy");
            }
        }
        let istiod = Istiod::start(&config, &dir.join("istiod.sock"), profile)
            .await
            .expect("istiod starts");
        let sds_socket = dir.join("sds.sock");
        let sds = start_sds(&sds_socket).await.expect("SDS server");
        for socket in [&istiod.socket, &sds_socket] {
            std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o777))
                .expect("chmod socket");
        }
        Mesh {
            istiod,
            sds_socket,
            _sds: sds,
            dir,
        }
    }

    /// `kind` as `workload`'s sidecar in `pod`, started the way pilot-agent starts Envoy (as
    /// `uid` when given); returns once `/ready` says LIVE.
    pub async fn sidecar(
        &self,
        kind: ProxyKind,
        pod: &Netns,
        workload: &Workload<'_>,
        uid: Option<u32>,
    ) -> ProxyProcess {
        self.start_proxy(kind, pod, &self.bootstrap(workload), uid)
            .await
    }

    /// The scratch directory (istiod's config, sockets and logs; a test may put files here).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Istio's rendered bootstrap for `workload`, pointed at this mesh's istiod and SDS.
    pub fn bootstrap(&self, workload: &Workload<'_>) -> String {
        sidecar_bootstrap(workload, &self.istiod.socket, &self.sds_socket)
    }

    /// As [`Mesh::sidecar`], from a bootstrap of the caller's.
    pub async fn start_proxy(
        &self,
        kind: ProxyKind,
        pod: &Netns,
        bootstrap: &str,
        uid: Option<u32>,
    ) -> ProxyProcess {
        let binary = match kind {
            ProxyKind::Tern => tern_binary(),
            ProxyKind::Envoy => envoy_binary().expect("Envoy 1.40.0 is installed"),
        };
        let started = match uid {
            Some(uid) => {
                ProxyProcess::start_in_as(pod, uid, kind, &binary, bootstrap, PILOT_AGENT_FLAGS)
                    .await
            }
            None => ProxyProcess::start_in(pod, kind, &binary, bootstrap, PILOT_AGENT_FLAGS).await,
        };
        started.unwrap_or_else(|e| {
            panic!(
                "{} with istiod's config: {e:#}\nistiod log:\n{}",
                kind.name(),
                self.istiod.log()
            )
        })
    }

    /// Replaces (or with `None` removes) `file` of istiod's directory, atomically (istiod polls
    /// the directory and must not read half a file); returns istiod's line saying it applied and
    /// pushed the change.
    pub async fn change(&mut self, file: &str, text: Option<&str>) -> String {
        let path = self.dir.join("config").join(file);
        match text {
            Some(text) => {
                let staged = self.dir.join(format!("{file}.staged"));
                std::fs::write(&staged, text).expect("write config");
                std::fs::rename(&staged, &path).expect("move config into place");
            }
            None => std::fs::remove_file(path).expect("remove config"),
        }
        self.istiod.wait_applied().await.expect("istiod applies")
    }

    /// istiod's log must not show a NACK (`ADS:<type>: ACK ERROR <proxy> ...`) of any type.
    pub fn assert_no_nack(&self) {
        let log = self.istiod.log();
        let nacks: Vec<&str> = log.lines().filter(|l| l.contains("ACK ERROR")).collect();
        assert!(nacks.is_empty(), "istiod saw NACKs:\n{}", nacks.join("\n"));
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ----- the Bookinfo mesh of tests/testdata/istiod: its pods and what istiod sends them ------

/// productpage-v1 as a default injected pod: iptables capture, part of the productpage service.
pub const PRODUCTPAGE: Workload<'static> = Workload {
    pod: "productpage-v1-7d4b5c6f8-x2x9z",
    namespace: "default",
    ip: "10.10.0.2",
    labels: &[
        ("app", "productpage"),
        ("version", "v1"),
        ("security.istio.io/tlsMode", "istio"),
        ("service.istio.io/canonical-name", "productpage"),
        ("service.istio.io/canonical-revision", "v1"),
    ],
    service_account: "bookinfo-productpage",
    interception: Interception::Redirect,
};

/// A pod namespace with the pod's IP and, for the traffic tests, the backends' pod IPs.
pub fn pod(tag: &str, addresses: &[&str]) -> Netns {
    let ns = Netns::create(tag).expect("network namespace");
    for address in addresses {
        ns.ip(&["addr", "add", &format!("{address}/32"), "dev", "lo"])
            .expect("address on lo");
    }
    ns
}

/// The names in `/listeners?format=json` and `/clusters?format=json`.
pub async fn names(proxy: &ProxyProcess) -> (BTreeSet<String>, BTreeSet<String>) {
    let list = |path: &'static str, key: &'static str| async move {
        let (status, body) = proxy.get(path).await.expect("admin answers");
        assert_eq!(status, 200, "{path}: {body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        json[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|entry| entry["name"].as_str().map(str::to_string))
            .collect::<BTreeSet<String>>()
    };
    (
        list("/listeners?format=json", "listener_statuses").await,
        list("/clusters?format=json", "cluster_statuses").await,
    )
}

/// Polls until the proxy reports `listeners` and `clusters` (istiod pushes in several rounds).
pub async fn wait_for_names(proxy: &ProxyProcess, listeners: &[&str], clusters: &[&str]) {
    let want = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<BTreeSet<_>>();
    let (listeners, clusters) = (want(listeners), want(clusters));
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let seen = names(proxy).await;
        if seen == (listeners.clone(), clusters.clone()) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: listeners {:?} and clusters {:?}, expected {listeners:?} and {clusters:?}",
            proxy.kind.name(),
            seen.0,
            seen.1
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub const STATIC_CLUSTERS: [&str; 4] = ["agent", "prometheus_stats", "sds-grpc", "xds-grpc"];
pub const MESH_CLUSTERS: [&str; 8] = [
    "BlackHoleCluster",
    "InboundPassthroughCluster",
    "PassthroughCluster",
    "outbound|9080||productpage.default.svc.cluster.local",
    "outbound|9080||ratings.default.svc.cluster.local",
    "outbound|9080||reviews.default.svc.cluster.local",
    "outbound|9080|v1|reviews.default.svc.cluster.local",
    "outbound|9080|v2|reviews.default.svc.cluster.local",
];

/// What istiod gives productpage's (REDIRECT) sidecar, and Istio's static pieces.
pub fn productpage_names() -> (Vec<&'static str>, Vec<&'static str>) {
    let listeners = vec![
        "0.0.0.0_15021",
        "0.0.0.0_15090",
        "0.0.0.0_9080",
        "virtualInbound",
        "virtualOutbound",
    ];
    let mut clusters = vec!["inbound|9080||"];
    clusters.extend(MESH_CLUSTERS);
    clusters.extend(STATIC_CLUSTERS);
    (listeners, clusters)
}
