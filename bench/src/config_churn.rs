//! S7, config churn: how fast a pushed route change reaches traffic (push-to-apply), and what
//! clusters and endpoints cost in memory (the footprint figure of S9), for Tern and Envoy fed by
//! the same control plane with the same resources.
//!
//! The control plane is the repository's test xDS server (`tern_tests::xds_server`), in this
//! process on core 0, serving delta ADS on a unix socket as pilot-agent does for Istio's
//! sidecars. Both proxies get the same Istio-shaped bootstrap (ADS over the static `xds-grpc`
//! cluster, admin on a free port) and the same resources: a listener whose routes come by RDS,
//! an EDS cluster `backend` pointing at the in-process backend, and `clusters` more EDS clusters
//! whose endpoints are addresses nobody dials (as most of a sidecar's clusters carry no traffic).
//!
//! - Memory: RSS with the base config, then with the clusters at one endpoint each, then at ten
//!   each, each read once the proxy reports every cluster active with all its endpoints and has
//!   settled. Per endpoint: the last step over the endpoints it added; per cluster: what is left
//!   of the first step once its endpoints are taken out.
//! - S9's RSS with 1k and 10k clusters ([`rss_with_clusters`]) is the first memory step alone, on
//!   a proxy of its own.
//! - Push-to-apply: `pushes` route changes at 10 per second with every cluster present, each
//!   adding a response header that carries the push's number. A push's latency runs from the
//!   moment the control plane handed the response to its stream to the first response through
//!   the proxy carrying that number; the requests go back to back on one keep-alive connection
//!   (resolution: one round trip, ~0.1–0.3 ms). Meanwhile an open-loop load of 200 rps over four
//!   other connections counts errors, which must stay at 0.

use crate::cli::Proxy;
use crate::load::{self, H1Connection, Window};
use crate::measure;
use crate::proxies::{self, Binaries, Running};
use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tern_tests::xds_server::{Snapshot, Verdict, XdsServer};
use tokio::time::Instant;
use xds_client::proto_json::{ReadOptions, from_text};
use xds_client::resource::{CLUSTER, ENDPOINT, ROUTE};

/// The response header whose value is the number of the route push that produced it.
const PUSH_HEADER: &str = "x-bench-push";
/// Pushes per second: BENCHMARKS.md's faster churn rate.
const PUSH_PERIOD: Duration = Duration::from_millis(100);
/// A push not seen in traffic by then counts as an error.
const APPLY_DEADLINE: Duration = Duration::from_secs(10);
/// How long the proxy may take to take a config with every cluster in.
const CONFIG_DEADLINE: Duration = Duration::from_secs(120);
/// How long the proxy idles before its RSS is read.
const SETTLE: Duration = Duration::from_secs(2);
/// The load that runs during the pushes.
const LOAD_RATE: f64 = 200.0;
const LOAD_CONNECTIONS: usize = 4;
/// Endpoints per cluster in the second memory step.
const ENDPOINTS: usize = 10;

/// How much churn: `clusters` EDS clusters (ten endpoints each at the end), `pushes` route pushes.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub clusters: usize,
    pub pushes: usize,
}

/// The two rows S7 records for one proxy.
pub struct Outcome {
    pub memory: BTreeMap<String, f64>,
    pub apply: BTreeMap<String, f64>,
}

/// Runs S7 against `proxy`: its own control plane, the memory steps, then the pushes.
pub async fn run(
    proxy: Proxy,
    binaries: &Binaries,
    backend: SocketAddr,
    size: Size,
) -> anyhow::Result<Outcome> {
    let socket = socket_path(proxy);
    let server = XdsServer::start_unix(&socket)
        .await
        .context("starting the test control plane")?;
    let result = drive(proxy, binaries, backend, size, &server, &socket).await;
    server.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    result
}

/// S9: the RSS (KiB) of `proxy` serving the base config over ADS, then with `clusters` extra
/// EDS clusters of one endpoint each, on a proxy and control plane of its own.
pub async fn rss_with_clusters(
    proxy: Proxy,
    binaries: &Binaries,
    backend: SocketAddr,
    clusters: usize,
) -> anyhow::Result<(u64, u64)> {
    let socket = socket_path(proxy);
    let server = XdsServer::start_unix(&socket)
        .await
        .context("starting the test control plane")?;
    let result = async {
        let mut started =
            Started::new(proxy, binaries, backend, clusters, &server, &socket).await?;
        let loaded = started.load_step(&server, clusters, 1).await?;
        if let Some(why) = started.running.exited() {
            bail!("{} {why}", proxy.name());
        }
        Ok((started.base, loaded))
    }
    .await;
    server.shutdown().await;
    let _ = std::fs::remove_file(&socket);
    result
}

/// A proxy serving the base config from the control plane, with its RSS then.
struct Started {
    running: Running,
    listen: SocketAddr,
    admin: SocketAddr,
    resources: Resources,
    pgid: u32,
    base: u64,
}

impl Started {
    async fn new(
        proxy: Proxy,
        binaries: &Binaries,
        backend: SocketAddr,
        clusters: usize,
        server: &XdsServer,
        socket: &Path,
    ) -> anyhow::Result<Started> {
        let listen = SocketAddr::from(([127, 0, 0, 1], proxies::free_port()?));
        let admin = SocketAddr::from(([127, 0, 0, 1], proxies::free_port()?));
        let resources = Resources::new(listen, backend, clusters)?;
        server.push(resources.base(0)?).await;
        let bootstrap = bootstrap(socket, admin);
        let mut running = proxies::start_with_bootstrap(proxy, binaries, &bootstrap)?;
        wait_serving(&mut running, listen).await?;
        let pgid = running.pgid().context("the proxy has no process")?;
        tokio::time::sleep(SETTLE).await;
        let base = measure::group_rss_kib(pgid);
        Ok(Started {
            running,
            listen,
            admin,
            resources,
            pgid,
            base,
        })
    }

    /// Pushes every extra cluster with `endpoints` endpoints each, waits until the proxy holds
    /// them all and has settled, and returns its RSS (KiB).
    async fn load_step(
        &mut self,
        server: &XdsServer,
        clusters: usize,
        endpoints: usize,
    ) -> anyhow::Result<u64> {
        let resources = &self.resources;
        let snapshot = resources.with_clusters(resources.base(0)?, endpoints);
        let version = server.push(snapshot).await;
        // A step after the first changes endpoints only: no CDS response goes out for it.
        let changed: &[&str] = if endpoints == 1 {
            &[CLUSTER, ENDPOINT]
        } else {
            &[ENDPOINT]
        };
        acked(server, &version, changed).await?;
        // Besides the extra clusters: `backend` and the static `xds-grpc`, one endpoint each.
        let want = Loaded {
            clusters: clusters + 2,
            endpoints: clusters * endpoints + 2,
        };
        wait_loaded(&mut self.running, self.admin, want).await?;
        tokio::time::sleep(SETTLE).await;
        Ok(measure::group_rss_kib(self.pgid))
    }
}

async fn drive(
    proxy: Proxy,
    binaries: &Binaries,
    backend: SocketAddr,
    size: Size,
    server: &XdsServer,
    socket: &Path,
) -> anyhow::Result<Outcome> {
    let mut started = Started::new(proxy, binaries, backend, size.clusters, server, socket).await?;
    let one = started.load_step(server, size.clusters, 1).await?;
    let ten = started.load_step(server, size.clusters, ENDPOINTS).await?;
    let memory = memory_metrics(started.base, one, ten, size.clusters);

    let apply = push_to_apply(server, &started.resources, started.listen, size.pushes).await?;
    if let Some(why) = started.running.exited() {
        bail!("{} {why}", proxy.name());
    }
    Ok(Outcome { memory, apply })
}

/// RSS figures from the three readings (KiB): base, clusters at one endpoint, at ten.
fn memory_metrics(base: u64, one: u64, ten: u64, clusters: usize) -> BTreeMap<String, f64> {
    let kib = |v: u64| v as f64;
    let n = clusters.max(1) as f64;
    let per_endpoint_kib = (kib(ten) - kib(one)) / (n * (ENDPOINTS - 1) as f64);
    let per_cluster_kib = (kib(one) - kib(base)) / n - per_endpoint_kib;
    BTreeMap::from([
        ("idle_rss_mib".to_string(), kib(base) / 1024.0),
        ("rss_clusters_mib".into(), kib(one) / 1024.0),
        ("rss_endpoints_mib".into(), kib(ten) / 1024.0),
        (
            "mib_1k_clusters_10k_endpoints".into(),
            (kib(ten) - kib(base)) / 1024.0 * 1000.0 / n,
        ),
        ("kib_per_cluster".into(), per_cluster_kib),
        ("bytes_per_endpoint".into(), per_endpoint_kib * 1024.0),
        (
            "mib_per_1k_clusters".into(),
            per_cluster_kib * 1000.0 / 1024.0,
        ),
        (
            "mib_per_10k_endpoints".into(),
            per_endpoint_kib * 10_000.0 / 1024.0,
        ),
    ])
}

/// The route pushes, with the load running; latencies in milliseconds.
async fn push_to_apply(
    server: &XdsServer,
    resources: &Resources,
    listen: SocketAddr,
    pushes: usize,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let phase = PUSH_PERIOD * u32::try_from(pushes).unwrap_or(u32::MAX) + Duration::from_secs(1);
    let window = Window {
        start: Instant::now(),
        end: Instant::now() + phase,
    };
    let background = tokio::spawn(load::h1_open(
        listen,
        LOAD_CONNECTIONS,
        LOAD_RATE,
        64,
        window,
    ));
    let mut probe = H1Connection::connect(listen, "/64").await?;
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut errors, mut control_plane) = (0u64, Duration::ZERO);
    let start = Instant::now();
    for n in 1..=pushes {
        let snapshot = resources.with_clusters(resources.base(n)?, ENDPOINTS);
        let expected = n.to_string();
        let before = Instant::now();
        let version = server.push(snapshot).await;
        let sent = Instant::now();
        control_plane += sent - before;
        loop {
            match probe.header_round_trip(PUSH_HEADER).await {
                Ok(Some(v)) if v == expected => {
                    let _ = latency.record(micros(sent.elapsed()));
                    break;
                }
                Ok(_) => {}
                Err(_) => {
                    errors += 1;
                    probe = H1Connection::connect(listen, "/64").await?;
                }
            }
            if sent.elapsed() > APPLY_DEADLINE {
                errors += 1;
                break;
            }
        }
        if acked(server, &version, &[ROUTE]).await.is_err() {
            errors += 1;
        }
        tokio::time::sleep_until(start + PUSH_PERIOD * u32::try_from(n).unwrap_or(u32::MAX)).await;
    }
    let outcome = background.await.context("background load")?;
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    let mut m = BTreeMap::from([
        ("pushes".to_string(), latency.len() as f64),
        ("errors".into(), (errors + outcome.errors) as f64),
        ("rps".into(), outcome.completed as f64 / window.seconds()),
        (
            "control_plane_ms".into(),
            control_plane.as_secs_f64() * 1000.0 / pushes.max(1) as f64,
        ),
    ]);
    if !latency.is_empty() {
        m.insert("apply_p50_ms".into(), ms(0.5));
        m.insert("apply_p99_ms".into(), ms(0.99));
        m.insert("apply_max_ms".into(), latency.max() as f64 / 1000.0);
    }
    Ok(m)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Waits for `version` of every type in `types` to be ACKed; a NACK is an error.
async fn acked(server: &XdsServer, version: &str, types: &[&str]) -> anyhow::Result<()> {
    for type_url in types {
        match server.wait_verdict(version, type_url).await? {
            Verdict::Ack => {}
            Verdict::Nack(detail) => bail!("{type_url} version {version} NACKed: {detail}"),
        }
    }
    Ok(())
}

/// Waits until a request through the pushed listener succeeds (the proxy is serving).
async fn wait_serving(running: &mut Running, listen: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + CONFIG_DEADLINE;
    loop {
        if load::h1_probe(listen, "/64").await.is_ok() {
            return Ok(());
        }
        if let Some(why) = running.exited() {
            bail!("exited before serving: {why}");
        }
        if Instant::now() > deadline {
            bail!(
                "not serving within {CONFIG_DEADLINE:?}; log:\n{}",
                running.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the proxy's admin says it holds.
#[derive(Debug, PartialEq, Eq)]
struct Loaded {
    clusters: usize,
    endpoints: usize,
}

/// Waits until the proxy's `/stats` shows every cluster active (none warming) and every
/// endpoint a member (`membership_total` summed over clusters).
async fn wait_loaded(running: &mut Running, admin: SocketAddr, want: Loaded) -> anyhow::Result<()> {
    let deadline = Instant::now() + CONFIG_DEADLINE;
    let mut seen = None;
    loop {
        if let Ok(text) = admin_stats(admin).await {
            let (mut clusters, mut warming, mut endpoints) = (0usize, 0usize, 0usize);
            for line in text.lines() {
                let Some((name, value)) = line.split_once(": ") else {
                    continue;
                };
                let value: usize = value.trim().parse().unwrap_or(0);
                match name {
                    "cluster_manager.active_clusters" => clusters = value,
                    "cluster_manager.warming_clusters" => warming = value,
                    _ if name.ends_with(".membership_total") => endpoints += value,
                    _ => {}
                }
            }
            let loaded = Loaded {
                clusters,
                endpoints,
            };
            if warming == 0 && loaded == want {
                return Ok(());
            }
            seen = Some(loaded);
        }
        if let Some(why) = running.exited() {
            bail!("exited while loading clusters: {why}");
        }
        if Instant::now() > deadline {
            bail!("not loaded within {CONFIG_DEADLINE:?}: want {want:?}, saw {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The admin's `/stats` lines for clusters (plain text, one `name: value` a line).
async fn admin_stats(admin: SocketAddr) -> anyhow::Result<String> {
    let response = tern_tests::http_backend::http_request(
        admin,
        "GET",
        "admin",
        "/stats?filter=%28%5Ecluster_manager%5C.%7Cmembership_total%24%29",
        &[],
    )
    .await?;
    anyhow::ensure!(response.status == 200, "admin /stats: {}", response.status);
    Ok(response.text())
}

fn socket_path(proxy: Proxy) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "tern-bench-xds-{}-{}-{n}.sock",
        std::process::id(),
        proxy.name()
    ))
}

/// Istio's bootstrap shape, the same for Tern and Envoy: delta ADS over the static `xds-grpc`
/// cluster on a unix socket, LDS and CDS from it, admin on `admin`.
fn bootstrap(socket: &Path, admin: SocketAddr) -> String {
    format!(
        r#"node: {{id: "sidecar~127.0.0.1~bench.default~default.svc.cluster.local", cluster: bench}}
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {admin_port}}}}}}}
dynamic_resources:
  ads_config:
    api_type: DELTA_GRPC
    transport_api_version: V3
    set_node_on_first_message_only: true
    grpc_services: [{{envoy_grpc: {{cluster_name: xds-grpc}}}}]
  lds_config: {{ads: {{}}, initial_fetch_timeout: 0s, resource_api_version: V3}}
  cds_config: {{ads: {{}}, initial_fetch_timeout: 0s, resource_api_version: V3}}
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    connect_timeout: 1s
    load_assignment:
      cluster_name: xds-grpc
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{pipe: {{path: "{socket}"}}}}}}}}]}}]
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {{http2_protocol_options: {{}}}}
"#,
        admin_port = admin.port(),
        socket = socket.display()
    )
}

/// The resources S7 serves, built once (the clusters) or per push (the route).
struct Resources {
    listen: SocketAddr,
    backend: SocketAddr,
    /// The extra clusters and their assignments at 1 and at [`ENDPOINTS`] endpoints each.
    clusters: Snapshot,
    assignments_one: Snapshot,
    assignments_all: Snapshot,
}

fn read<M: prost::Message + prost::Name + Default>(yaml: &str) -> anyhow::Result<M> {
    from_text(yaml, "s7.yaml", ReadOptions::default())
        .with_context(|| format!("S7 resource does not parse:\n{yaml}"))
}

impl Resources {
    fn new(listen: SocketAddr, backend: SocketAddr, clusters: usize) -> anyhow::Result<Self> {
        let mut resources = Resources {
            listen,
            backend,
            clusters: Snapshot::new(),
            assignments_one: Snapshot::new(),
            assignments_all: Snapshot::new(),
        };
        for c in 0..clusters {
            let name = format!("outbound|8080||svc-{c}.bench.svc.cluster.local");
            let cluster: xds_client::pb::envoy::config::cluster::v3::Cluster =
                read(&eds_cluster(&name))?;
            resources.clusters.add(&cluster);
            let hosts = |n: usize| -> Vec<SocketAddr> {
                (0..n)
                    .map(|e| {
                        // 10.x.y.e: distinct addresses that nothing ever dials.
                        let (x, y) = ((c / 256) as u8, (c % 256) as u8);
                        SocketAddr::from(([10, x, y, e as u8 + 1], 8080))
                    })
                    .collect()
            };
            let one: xds_client::pb::envoy::config::endpoint::v3::ClusterLoadAssignment =
                read(&assignment(&name, &hosts(1)))?;
            let all: xds_client::pb::envoy::config::endpoint::v3::ClusterLoadAssignment =
                read(&assignment(&name, &hosts(ENDPOINTS)))?;
            resources.assignments_one.add(&one);
            resources.assignments_all.add(&all);
        }
        Ok(resources)
    }

    /// The listener, the route (whose responses carry `push`) and the backend cluster.
    fn base(&self, push: usize) -> anyhow::Result<Snapshot> {
        let mut snapshot = Snapshot::new();
        let listener: xds_client::pb::envoy::config::listener::v3::Listener =
            read(&listener(self.listen))?;
        let route: xds_client::pb::envoy::config::route::v3::RouteConfiguration =
            read(&route(push))?;
        let cluster: xds_client::pb::envoy::config::cluster::v3::Cluster =
            read(&eds_cluster("backend"))?;
        let backend: xds_client::pb::envoy::config::endpoint::v3::ClusterLoadAssignment =
            read(&assignment("backend", &[self.backend]))?;
        snapshot
            .add(&listener)
            .add(&route)
            .add(&cluster)
            .add(&backend);
        Ok(snapshot)
    }

    /// `base` plus every extra cluster with 1 or [`ENDPOINTS`] endpoints each.
    fn with_clusters(&self, mut base: Snapshot, endpoints: usize) -> Snapshot {
        let assignments = if endpoints == 1 {
            &self.assignments_one
        } else {
            &self.assignments_all
        };
        for part in [&self.clusters, assignments] {
            for (type_url, named) in &part.resources {
                for (name, body) in named {
                    base.insert_as(type_url, name.clone(), body.clone());
                }
            }
        }
        base
    }
}

/// The benchmark listener: the connection manager of S1 (no request id, no dynamic stats),
/// its routes by RDS.
fn listener(listen: SocketAddr) -> String {
    format!(
        r#"name: bench
address: {{socket_address: {{address: {ip}, port_value: {port}}}}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: bench
      codec_type: AUTO
      generate_request_id: false
      rds:
        route_config_name: bench_routes
        config_source: {{ads: {{}}, resource_api_version: V3}}
      http_filters:
      - name: envoy.filters.http.router
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          dynamic_stats: false
"#,
        ip = listen.ip(),
        port = listen.port()
    )
}

/// Everything to `backend`, every response marked with the push that made this route.
fn route(push: usize) -> String {
    format!(
        r#"name: bench_routes
virtual_hosts:
- name: all
  domains: ["*"]
  routes:
  - match: {{prefix: "/"}}
    route: {{cluster: backend, timeout: 0s}}
    response_headers_to_add:
    - header: {{key: {PUSH_HEADER}, value: "{push}"}}
"#
    )
}

/// An EDS cluster shaped like Istio's outbound clusters (least request, circuit breakers).
fn eds_cluster(name: &str) -> String {
    format!(
        r#"name: "{name}"
type: EDS
connect_timeout: 10s
lb_policy: LEAST_REQUEST
eds_cluster_config: {{eds_config: {{ads: {{}}, initial_fetch_timeout: 0s, resource_api_version: V3}}, service_name: "{name}"}}
circuit_breakers:
  thresholds:
  - {{max_connections: 4294967295, max_pending_requests: 4294967295, max_requests: 4294967295, max_retries: 4294967295}}
"#
    )
}

/// One locality with `hosts`.
fn assignment(cluster: &str, hosts: &[SocketAddr]) -> String {
    let endpoints: String = hosts
        .iter()
        .map(|h| {
            format!(
                "\n    - endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}",
                h.ip(),
                h.port()
            )
        })
        .collect();
    format!("cluster_name: \"{cluster}\"\nendpoints:\n- lb_endpoints:{endpoints}\n")
}
