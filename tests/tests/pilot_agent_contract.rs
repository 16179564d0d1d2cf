//! The contract between pilot-agent and its proxy, for Tern and for Envoy 1.40.0 (the reference),
//! each in a pod network namespace of its own on Istio's rendered bootstrap (admin 15000, static
//! listeners 15090 and 15021, cluster `agent` = 127.0.0.1:15020) with pilot-agent's command line:
//!
//! - 15021 `/healthz/ready` is forwarded to the agent's status port: a stub agent on
//!   127.0.0.1:15020 answering 200 or 503 decides the answer; with no agent listening the proxy
//!   answers 503 itself.
//! - Pod termination as pilot-agent does it (`pkg/envoy/admin.go`: `POST
//!   drain_listeners?inboundonly&graceful`, then SIGKILL after terminationDrainDuration): requests
//!   in flight finish, inbound HTTP/1 connections (idle or busy) are told `connection: close` on
//!   their next response and are not cut, inbound listeners keep accepting for `--drain-time-s`
//!   and then refuse connections, outbound listeners are untouched; every request sent before the
//!   kill got its whole response.
//! - `--concurrency` as pilot-agent derives it (`ISTIO_CPU_LIMIT`, rounded up; no flag when
//!   unset; a value above the machine's cores): that many workers run and serve.
//!
//! The xDS is the test control plane's (delta ADS on the bootstrap's `xds-grpc` pipe): one
//! listener with `traffic_direction: INBOUND` on 127.0.0.1:8080 and one `OUTBOUND` on
//! 127.0.0.1:9090, both routing to an HTTP backend in the pod. Everything synchronises on real
//! answers polled against deadlines.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tern_tests::envoy::envoy_binary;
use tern_tests::http_backend::HttpBackend;
use tern_tests::istiod::{Interception, Workload, sidecar_bootstrap, start_sds};
use tern_tests::netns::Netns;
use tern_tests::prereq::{is_root, require};
use tern_tests::process::{PILOT_AGENT_FLAGS, ProxyKind, ProxyProcess, tern_binary};
use tern_tests::xds_server::{Snapshot, XdsServer};
use tokio::time::Instant;
use xds_client::pb::envoy::config::cluster::v3::Cluster;
use xds_client::pb::envoy::config::listener::v3::Listener;
use xds_client::proto_json::{ReadOptions, from_text};

const DEADLINE: Duration = Duration::from_secs(20);
const INBOUND: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8080);
const OUTBOUND: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9090);
/// Where the backend listens in the pod, and pilot-agent's status port (the `agent` cluster).
const BACKEND: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8000);
const AGENT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 15020);
const HEALTH: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 15021);
/// The drain time of the drain tests (pilot-agent's default is 45 s, longer than its 5 s
/// termination drain, so the listeners' stop is never seen in a pod; here it is).
const DRAIN_TIME: Duration = Duration::from_secs(2);

const WORKLOAD: Workload<'static> = Workload {
    pod: "app-v1-5d8f7c9b4-q7w2e",
    namespace: "default",
    ip: "10.10.0.9",
    labels: &[("app", "app"), ("version", "v1")],
    service_account: "app",
    interception: Interception::None,
};

fn prerequisites(kind: ProxyKind) -> bool {
    require(
        is_root(),
        "the pilot-agent contract tests use network namespaces: need root",
    ) && (kind != ProxyKind::Envoy
        || require(
            envoy_binary().is_some(),
            "Envoy 1.40.0 is not installed (scripts/install-test-deps.sh)",
        ))
}

fn binary(kind: ProxyKind) -> PathBuf {
    match kind {
        ProxyKind::Tern => tern_binary(),
        ProxyKind::Envoy => envoy_binary().expect("checked by prerequisites"),
    }
}

/// pilot-agent's flags with `--drain-time-s` and `--concurrency` replaced (`None`: no flag).
fn flags(drain_time: Duration, concurrency: Option<u32>) -> Vec<String> {
    let mut flags: Vec<String> = Vec::new();
    let mut skip = false;
    for flag in PILOT_AGENT_FLAGS {
        if skip {
            skip = false;
            continue;
        }
        if *flag == "--drain-time-s" || *flag == "--concurrency" {
            skip = true;
            continue;
        }
        flags.push(flag.to_string());
    }
    flags.extend(["--drain-time-s".into(), drain_time.as_secs().to_string()]);
    if let Some(n) = concurrency {
        flags.extend(["--concurrency".into(), n.to_string()]);
    }
    flags
}

fn listener(name: &str, address: SocketAddr, direction: &str, backend: SocketAddr) -> Listener {
    let yaml = format!(
        r#"
name: {name}
traffic_direction: {direction}
address: {{socket_address: {{address: "{ip}", port_value: {port}}}}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: {name}
      route_config:
        virtual_hosts:
        - name: app
          domains: ["*"]
          routes: [{{match: {{prefix: /}}, route: {{cluster: "app|{backend_port}"}}}}]
      http_filters:
      - name: envoy.filters.http.router
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
"#,
        ip = address.ip(),
        port = address.port(),
        backend_port = backend.port(),
    );
    from_text(&yaml, "listener.yaml", ReadOptions::default()).expect("listener YAML")
}

fn cluster(backend: SocketAddr) -> Cluster {
    let yaml = format!(
        r#"
name: "app|{port}"
type: STATIC
connect_timeout: 1s
load_assignment:
  cluster_name: "app|{port}"
  endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: "{ip}", port_value: {port}}}}}}}}}]}}]
"#,
        ip = backend.ip(),
        port = backend.port(),
    );
    from_text(&yaml, "cluster.yaml", ReadOptions::default()).expect("cluster YAML")
}

/// A proxy in a pod namespace of its own, on Istio's bootstrap, with the inbound and outbound
/// listeners pushed and warm (`ProxyProcess` returns once `/ready` says LIVE).
struct Pod {
    proxy: ProxyProcess,
    backend: HttpBackend,
    _xds: XdsServer,
    _sds: XdsServer,
    dir: PathBuf,
    ns: Netns,
}

impl Pod {
    async fn start(kind: ProxyKind, flags: &[String]) -> Pod {
        let ns = Netns::create("contract").expect("pod namespace");
        let dir = std::env::temp_dir().join(format!(
            "tern-agent-contract-{}-{}",
            std::process::id(),
            ns.name
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let backend = HttpBackend::serve(
            "app",
            ns.listen(BACKEND).expect("backend socket in the pod"),
        )
        .expect("backend");
        let (xds_path, sds_path) = (dir.join("xds.sock"), dir.join("sds.sock"));
        let xds = XdsServer::start_unix(&xds_path).await.expect("xDS server");
        let mut snapshot = Snapshot::new();
        snapshot
            .add(&listener(
                "inbound_8080",
                INBOUND,
                "INBOUND",
                backend.address,
            ))
            .add(&listener(
                "outbound_9090",
                OUTBOUND,
                "OUTBOUND",
                backend.address,
            ))
            .add(&cluster(backend.address));
        xds.push(snapshot).await;
        let sds = start_sds(&sds_path).await.expect("SDS server");
        let bootstrap = sidecar_bootstrap(&WORKLOAD, &xds_path, &sds_path);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let proxy = ProxyProcess::start_in(&ns, kind, &binary(kind), &bootstrap, &flags)
            .await
            .unwrap_or_else(|e| panic!("{} starts in the pod: {e:#}", kind.name()));
        Pod {
            proxy,
            backend,
            _xds: xds,
            _sds: sds,
            dir,
            ns,
        }
    }

    /// A keep-alive HTTP/1.1 connection to `address` from inside the pod.
    async fn connect(&self, address: SocketAddr) -> anyhow::Result<Connection> {
        let stream = self.proxy.connect(address).await?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await?;
        Ok(Connection {
            sender,
            task: tokio::spawn(async move {
                let _ = connection.await;
            }),
        })
    }

    async fn stats(&self, filter: &str) -> String {
        let (status, body) = self
            .proxy
            .get(&format!("/stats?filter={filter}"))
            .await
            .expect("admin answers");
        assert_eq!(status, 200, "{body}");
        body
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The value of `name` in a plain-text `/stats` answer.
fn stat(stats: &str, name: &str) -> Option<i64> {
    stats.lines().find_map(|line| {
        let (n, v) = line.split_once(": ")?;
        (n == name).then(|| v.trim().parse().ok())?
    })
}

/// One client connection; requests go one after another.
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    task: tokio::task::JoinHandle<()>,
}

/// What a test looks at in a response.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// The `connection` header (`close` when the proxy ends the connection after it).
    connection: Option<String>,
    /// Which backend answered, from its JSON body (the whole body arrived).
    backend: Option<String>,
}

impl Connection {
    async fn get(&mut self, headers: &[(&str, &str)]) -> anyhow::Result<Answer> {
        let mut request = hyper::Request::get("/").header("host", "app.default.svc");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let exchange = async {
            self.sender.ready().await?;
            let response = self
                .sender
                .send_request(request.body(Full::new(Bytes::new()))?)
                .await?;
            let status = response.status().as_u16();
            let connection = response
                .headers()
                .get("connection")
                .map(|v| v.to_str().unwrap_or_default().to_string());
            let body = response.into_body().collect().await?.to_bytes();
            let json: Option<serde_json::Value> = serde_json::from_slice(&body).ok();
            anyhow::Ok(Answer {
                status,
                connection,
                backend: json.and_then(|j| j["backend"].as_str().map(str::to_string)),
            })
        };
        tokio::time::timeout(DEADLINE, exchange).await?
    }

    /// Waits until the proxy closed the connection.
    async fn closed(self) -> bool {
        tokio::time::timeout(DEADLINE, self.task).await.is_ok()
    }
}

fn served_and_kept(answer: &Answer) -> bool {
    answer.status == 200 && answer.backend.as_deref() == Some("app") && answer.connection.is_none()
}

fn served_and_closing(answer: &Answer) -> bool {
    answer.status == 200
        && answer.backend.as_deref() == Some("app")
        && answer.connection.as_deref() == Some("close")
}

// ---------------------------------------------------------------- 15021 -> agent

/// `GET /healthz/ready` on 15021 from inside the pod, as the kubelet's probe: status and body.
async fn probe(proxy: &ProxyProcess) -> (u16, String) {
    let stream = proxy.connect(HEALTH).await.expect("15021 accepts");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let request = hyper::Request::get("/healthz/ready")
        .header("host", "10.10.0.9:15021")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = tokio::time::timeout(DEADLINE, sender.send_request(request))
        .await
        .expect("15021 answers in time")
        .expect("15021 answers");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// pilot-agent's status port as the proxy's `agent` cluster sees it: `/healthz/ready` answered
/// with the status the test sets, one request per connection (`connection: close`), the paths
/// asked recorded; dropping it closes the port.
struct StubAgent {
    status: std::sync::Arc<std::sync::atomic::AtomicU16>,
    paths: tokio::sync::watch::Receiver<Vec<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl StubAgent {
    fn start(pod: &Pod) -> StubAgent {
        use std::sync::atomic::Ordering;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = pod.ns.listen(AGENT).expect("stub agent on 15020");
        let status = std::sync::Arc::new(std::sync::atomic::AtomicU16::new(200));
        let (record, paths) = tokio::sync::watch::channel(Vec::new());
        let answer = status.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                record.send_modify(|paths| paths.push(path));
                let code = answer.load(Ordering::SeqCst);
                let body = if code == 200 { "" } else { "not ready" };
                let response = format!(
                    "HTTP/1.1 {code} Status\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        StubAgent {
            status,
            paths,
            task,
        }
    }

    fn answer(&self, status: u16) {
        self.status
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }

    fn paths(&self) -> Vec<String> {
        self.paths.borrow().clone()
    }
}

impl Drop for StubAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn health_port_follows_the_agent(kind: ProxyKind) {
    let pod = Pod::start(kind, &flags(Duration::from_secs(45), Some(2))).await;
    let agent = StubAgent::start(&pod);

    let (status, body) = probe(&pod.proxy).await;
    assert_eq!((status, body.as_str()), (200, ""));
    assert_eq!(agent.paths(), ["/healthz/ready"]);

    agent.answer(503);
    let (status, body) = probe(&pod.proxy).await;
    assert_eq!(
        (status, body.as_str()),
        (503, "not ready"),
        "the agent's answer comes through"
    );
    agent.answer(200);
    assert_eq!(probe(&pod.proxy).await.0, 200, "ready again");
    assert_eq!(agent.paths().len(), 3);

    // The agent is gone (its status server stops first on SIGTERM): the proxy answers itself.
    drop(agent);
    let deadline = Instant::now() + DEADLINE;
    while pod.proxy.connect(AGENT).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the stub agent's port stayed open"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = probe(&pod.proxy).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("upstream connect error or disconnect/reset before headers"),
        "{}: {body:?}",
        kind.name()
    );
    // Only /healthz/ready goes to the agent; other paths have no route.
    let stream = pod.proxy.connect(HEALTH).await.expect("15021 accepts");
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(connection);
    let other = hyper::Request::get("/stats")
        .header("host", "10.10.0.9:15021")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = sender.send_request(other).await.expect("15021 answers");
    assert_eq!(response.status(), 404);
    assert_eq!(pod.backend.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_health_port_15021_answers_what_the_agent_answers() {
    if prerequisites(ProxyKind::Tern) {
        health_port_follows_the_agent(ProxyKind::Tern).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_health_port_15021_answers_what_the_agent_answers() {
    if prerequisites(ProxyKind::Envoy) {
        health_port_follows_the_agent(ProxyKind::Envoy).await;
    }
}

// ---------------------------------------------------------------- drain as on pod termination

async fn inbound_drain_then_sigkill_loses_no_accepted_request(kind: ProxyKind) {
    let mut pod = Pod::start(kind, &flags(DRAIN_TIME, Some(2))).await;
    let mut inbound = pod.connect(INBOUND).await.expect("inbound connection");
    let mut outbound = pod.connect(OUTBOUND).await.expect("outbound connection");
    assert!(served_and_kept(&inbound.get(&[]).await.expect("inbound")));
    assert!(served_and_kept(&outbound.get(&[]).await.expect("outbound")));
    // A request in flight when the drain starts.
    let mut busy = pod.connect(INBOUND).await.expect("inbound connection");
    let in_flight = tokio::spawn(async move {
        let answer = busy.get(&[("x-backend-delay-ms", "1500")]).await;
        (answer, busy.closed().await)
    });
    pod.backend
        .wait_until("the slow request", |seen| seen.len() == 3)
        .await
        .expect("the slow request reached the backend");

    let mut straddling = pod.connect(INBOUND).await.expect("inbound connection");

    let (status, body) = pod
        .proxy
        .post("/drain_listeners?inboundonly&graceful")
        .await
        .expect("admin answers");
    let drain_started = Instant::now();
    assert_eq!((status, body.as_str()), (200, "OK\n"));
    // A request sent at once and answered only after the listener stopped.
    let straddle =
        tokio::spawn(async move { straddling.get(&[("x-backend-delay-ms", "3000")]).await });

    // The idle inbound connection was not cut: its next request is served, with
    // `connection: close`, and then the proxy closes it.
    let answer = inbound
        .get(&[])
        .await
        .expect("the idle connection still works");
    assert!(served_and_closing(&answer), "{answer:?}");
    assert!(inbound.closed().await, "closed after its last response");
    // Outbound is untouched.
    for _ in 0..2 {
        let answer = outbound.get(&[]).await.expect("outbound");
        assert!(served_and_kept(&answer), "{answer:?}");
    }
    // New inbound connections are still accepted during the drain time, and told to go.
    let mut late = pod
        .connect(INBOUND)
        .await
        .expect("inbound accepts during the drain");
    let answer = late.get(&[]).await.expect("served");
    assert!(served_and_closing(&answer), "{answer:?}");
    // The request in flight got its whole response.
    let (answer, closed) = in_flight.await.expect("task");
    let answer = answer.expect("the in-flight request is answered");
    assert!(served_and_closing(&answer), "{answer:?}");
    assert!(closed);
    let stats = pod
        .stats("^(server\\.state|listener_manager\\.listener_stopped)$")
        .await;
    assert_eq!(stat(&stats, "server.state"), Some(0), "still LIVE: {stats}");
    assert_eq!(stat(&stats, "listener_manager.listener_stopped"), Some(0));

    // At the end of the drain time the inbound listener stops accepting; outbound does not.
    let deadline = Instant::now() + DEADLINE;
    while pod.proxy.connect(INBOUND).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "the inbound listener never stopped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stopped_after = drain_started.elapsed();
    assert!(
        stopped_after >= DRAIN_TIME - Duration::from_millis(100),
        "stopped after {stopped_after:?}, before the drain time"
    );
    let mut fresh = pod.connect(OUTBOUND).await.expect("outbound still accepts");
    assert!(served_and_kept(&fresh.get(&[]).await.expect("outbound")));
    let answer = straddle
        .await
        .expect("task")
        .expect("answered although the listener stopped");
    assert!(served_and_closing(&answer), "{answer:?}");
    let stats = pod.stats("^listener_manager\\.listener_stopped$").await;
    assert_eq!(
        stat(&stats, "listener_manager.listener_stopped"),
        Some(1),
        "only the inbound listener stopped: {stats}"
    );

    // pilot-agent's end: SIGKILL. Every request sent so far was answered in full (above).
    let exit = pod.proxy.kill().expect("SIGKILL");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&exit),
        Some(9),
        "{exit}"
    );
    assert_eq!(pod.backend.requests(), 9, "{:?}", pod.backend.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_drains_inbound_as_pilot_agent_asks_and_loses_no_accepted_request() {
    if prerequisites(ProxyKind::Tern) {
        inbound_drain_then_sigkill_loses_no_accepted_request(ProxyKind::Tern).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_drains_inbound_as_pilot_agent_asks_and_loses_no_accepted_request() {
    if prerequisites(ProxyKind::Envoy) {
        inbound_drain_then_sigkill_loses_no_accepted_request(ProxyKind::Envoy).await;
    }
}

/// Polls until a connection to `address` in the pod is refused; `false` after `within`.
async fn stops_accepting(pod: &Pod, address: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while pod.proxy.connect(address).await.is_ok() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// The other forms of the drain request: `skip_exit` (the native sidecar's preStop) drains
/// connections but never stops the listeners, a second graceful drain is ignored, and a drain
/// without `graceful` stops the listeners at once while open connections are told to close.
async fn drain_variants(kind: ProxyKind) {
    let drain_time = Duration::from_secs(1);
    let pod = Pod::start(kind, &flags(drain_time, Some(2))).await;
    let mut first = pod.connect(INBOUND).await.expect("inbound connection");
    let mut second = pod.connect(INBOUND).await.expect("inbound connection");
    assert!(served_and_kept(&first.get(&[]).await.expect("inbound")));
    assert!(served_and_kept(&second.get(&[]).await.expect("inbound")));

    for query in [
        "/drain_listeners?inboundonly&graceful&skip_exit",
        "/drain_listeners?inboundonly&graceful",
    ] {
        let (status, body) = pod.proxy.post(query).await.expect("admin answers");
        assert_eq!((status, body.as_str()), (200, "OK\n"), "{query}");
    }
    let answer = first.get(&[]).await.expect("served");
    assert!(served_and_closing(&answer), "{answer:?}");
    // Twice the drain time later the inbound listener still accepts: skip_exit, and the second
    // request was ignored.
    assert!(
        !stops_accepting(&pod, INBOUND, drain_time * 2).await,
        "{} stopped the inbound listener despite skip_exit",
        kind.name()
    );
    let stats = pod.stats("^listener_manager\\.listener_stopped$").await;
    assert_eq!(
        stat(&stats, "listener_manager.listener_stopped"),
        Some(0),
        "{stats}"
    );

    let (status, body) = pod
        .proxy
        .post("/drain_listeners?inboundonly")
        .await
        .expect("admin answers");
    assert_eq!((status, body.as_str()), (200, "OK\n"));
    assert!(
        stops_accepting(&pod, INBOUND, Duration::from_millis(500)).await,
        "{} kept the inbound listener after a drain without graceful",
        kind.name()
    );
    let answer = second
        .get(&[])
        .await
        .expect("the open connection is not cut");
    assert!(served_and_closing(&answer), "{answer:?}");
    let mut outbound = pod.connect(OUTBOUND).await.expect("outbound accepts");
    assert!(served_and_kept(&outbound.get(&[]).await.expect("outbound")));
    let stats = pod.stats("^listener_manager\\.listener_stopped$").await;
    assert_eq!(
        stat(&stats, "listener_manager.listener_stopped"),
        Some(1),
        "{stats}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_drain_listeners_skip_exit_repeat_and_immediate_as_envoy() {
    if prerequisites(ProxyKind::Tern) {
        drain_variants(ProxyKind::Tern).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_drain_listeners_skip_exit_repeat_and_immediate() {
    if prerequisites(ProxyKind::Envoy) {
        drain_variants(ProxyKind::Envoy).await;
    }
}

// ---------------------------------------------------------------- --concurrency

/// Worker threads by name: Envoy's `wrk:worker_<n>`, Tern's `tern-worker-<n>`.
fn workers(kind: ProxyKind, threads: &[String]) -> usize {
    let prefix = match kind {
        ProxyKind::Envoy => "wrk:worker_",
        ProxyKind::Tern => "tern-worker-",
    };
    threads.iter().filter(|t| t.starts_with(prefix)).count()
}

async fn runs_as_many_workers_as_pilot_agent_asks(kind: ProxyKind) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // limits.cpu 2 -> `--concurrency 2`; no limit -> no flag (every core); a limit above the
    // machine's cores; and 0, which Envoy takes as 1.
    for (concurrency, expected) in [
        (Some(2), 2),
        (None, cores),
        (Some(cores as u32 + 3), cores + 3),
        (Some(0), 1),
    ] {
        let pod = Pod::start(kind, &flags(Duration::from_secs(45), concurrency)).await;
        let stats = pod
            .stats("^(server\\.concurrency|listener_manager\\.workers_started|server\\.state)$")
            .await;
        let context = format!("{} --concurrency {concurrency:?}: {stats}", kind.name());
        assert_eq!(
            stat(&stats, "server.concurrency"),
            Some(expected as i64),
            "{context}"
        );
        assert_eq!(
            stat(&stats, "listener_manager.workers_started"),
            Some(1),
            "{context}"
        );
        assert_eq!(stat(&stats, "server.state"), Some(0), "{context}");
        let threads = pod.proxy.thread_names();
        assert_eq!(
            workers(kind, &threads),
            expected,
            "{context}; threads {threads:?}"
        );
        // And it serves, on connections spread over its workers.
        for _ in 0..expected.min(8) * 2 {
            let mut connection = pod.connect(INBOUND).await.expect("inbound");
            let answer = connection.get(&[]).await.expect("served");
            assert!(served_and_kept(&answer), "{context}: {answer:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_runs_as_many_workers_as_pilot_agent_derives_from_the_cpu_limit() {
    if prerequisites(ProxyKind::Tern) {
        runs_as_many_workers_as_pilot_agent_asks(ProxyKind::Tern).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_runs_as_many_workers_as_pilot_agent_derives_from_the_cpu_limit() {
    if prerequisites(ProxyKind::Envoy) {
        runs_as_many_workers_as_pilot_agent_asks(ProxyKind::Envoy).await;
    }
}
