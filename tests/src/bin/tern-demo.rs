//! `tern-demo`: a Tern sidecar fed over ADS by the local control plane, shifting live traffic
//! from v1 to v2 while load runs. Nothing else is needed.
//!
//! Starts two HTTP upstreams (`reviews-v1`, `reviews-v2`), the test control plane on a unix
//! socket (where Istio's agent serves xDS), and Tern with an Istio-shaped bootstrap (delta ADS
//! through the `xds-grpc` cluster). The control plane pushes a listener, its routes (RDS) and two
//! EDS clusters; once Tern reports LIVE, a steady load of 200 requests per second runs while the
//! route weights are pushed as 100/0, then 50/50, then 0/100. For each push the demo prints the
//! push-to-ACK time and which version answered the requests sent after the ACK, then the total of
//! failed requests (0 is the point). It keeps running afterwards so the admin API can be explored
//! (Ctrl-C stops it); `--exit` stops after the report.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tern_tests::bootstrap::{ads_bootstrap, grpc_cluster, pipe_address};
use tern_tests::http_backend::{HttpBackend, http_request};
use tern_tests::inprocess::Running;
use tern_tests::xds_server::{Snapshot, XdsServer};
use xds_client::pb::envoy::config::cluster::v3::Cluster;
use xds_client::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use xds_client::pb::envoy::config::listener::v3::Listener;
use xds_client::pb::envoy::config::route::v3::RouteConfiguration;
use xds_client::proto_json::{ReadOptions, from_text};
use xds_client::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

/// Requests per second of the background load.
const RATE: u32 = 200;
/// Requests counted after each push's ACK.
const PER_PHASE: usize = 400;

fn bootstrap(socket: &std::path::Path) -> String {
    ads_bootstrap(
        "sidecar~127.0.0.1~productpage-v1.demo~demo.svc.cluster.local",
        "DELTA_GRPC",
        &[grpc_cluster("xds-grpc", &pipe_address(socket))],
        "",
    )
}

fn read<M: prost::Message + prost::Name + Default>(yaml: String) -> anyhow::Result<M> {
    Ok(from_text(&yaml, "demo.yaml", ReadOptions::default())?)
}

/// What the control plane serves: the listener, routes with these weights, two EDS clusters.
fn snapshot(v1: u16, v2: u16, weight_v1: u32, weight_v2: u32) -> anyhow::Result<Snapshot> {
    let mut snapshot = Snapshot::new();
    snapshot.add(&read::<Listener>(
        r#"
name: reviews_9080
address: {socket_address: {address: 127.0.0.1, port_value: 0}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: outbound_reviews_9080
      rds: {route_config_name: reviews, config_source: {ads: {}, resource_api_version: V3}}
      http_filters:
      - name: envoy.filters.http.router
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
"#
        .to_string(),
    )?);
    snapshot.add(&read::<RouteConfiguration>(format!(
        r#"
name: reviews
virtual_hosts:
- name: reviews
  domains: ["*"]
  routes:
  - match: {{prefix: /}}
    route:
      weighted_clusters:
        clusters:
        - {{name: reviews-v1, weight: {weight_v1}}}
        - {{name: reviews-v2, weight: {weight_v2}}}
"#
    ))?);
    for (name, port) in [("reviews-v1", v1), ("reviews-v2", v2)] {
        snapshot.add(&read::<Cluster>(
            format!(
                "name: {name}\ntype: EDS\nconnect_timeout: 1s\neds_cluster_config: {{eds_config: {{ads: {{}}, resource_api_version: V3}}}}\n"
            ),
        )?);
        snapshot.add(&read::<ClusterLoadAssignment>(format!(
            "cluster_name: {name}\nendpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}}}}}]}}]\n"
        ))?);
    }
    Ok(snapshot)
}

/// One request of the load: its issue order and which backend answered (`Err`: it failed).
struct Outcome {
    seq: u64,
    backend: Result<String, String>,
}

/// Requests at [`RATE`] per second, each on its own connection, until `stop`.
fn run_load(
    listener: SocketAddr,
    stop: Arc<AtomicBool>,
    issued: Arc<AtomicU64>,
) -> tokio::sync::mpsc::UnboundedReceiver<Outcome> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(Duration::from_secs(1) / RATE);
        while !stop.load(Ordering::Relaxed) {
            ticks.tick().await;
            let seq = issued.fetch_add(1, Ordering::SeqCst);
            let tx = tx.clone();
            tokio::spawn(async move {
                let backend = match http_request(listener, "GET", "reviews:9080", "/", &[]).await {
                    Ok(r) if r.status == 200 => Ok(r
                        .json
                        .as_ref()
                        .and_then(|j| j["backend"].as_str())
                        .unwrap_or("?")
                        .to_string()),
                    Ok(r) => Err(format!("{} {}", r.status, r.text())),
                    Err(e) => Err(e.to_string()),
                };
                let _ = tx.send(Outcome { seq, backend });
            });
        }
    });
    rx
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let exit_after_report = std::env::args().any(|a| a == "--exit");
    let v1 = HttpBackend::start("reviews-v1").await?;
    let v2 = HttpBackend::start("reviews-v2").await?;
    let (p1, p2) = (v1.address.port(), v2.address.port());
    let socket = std::env::temp_dir().join(format!("tern-demo-xds-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&socket);
    let control_plane = XdsServer::start_unix(&socket).await?;
    let first = control_plane.push(snapshot(p1, p2, 100, 0)?).await;
    println!(
        "Tern demo: one sidecar fed over delta ADS by the local control plane at unix:{}",
        socket.display()
    );

    let tern = Running::start(&bootstrap(&socket), 2).await;
    let admin = tern.admin().await;
    control_plane
        .wait_acked(&first, &[CLUSTER, ENDPOINT, LISTENER, ROUTE])
        .await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while tern.stat("server.live") != 1 {
        anyhow::ensure!(Instant::now() < deadline, "Tern did not go LIVE");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let listener = tern.listener("reviews_9080").await;
    println!("  tern: LIVE; listener reviews_9080 at {listener}; admin at http://{admin}/");
    println!("  load: {RATE} requests/s on new connections, running throughout\n");
    println!(
        "  {:<16} {:>9}   {:>13} {:>13}",
        "pushed weights", "push→ACK", "reviews-v1", "reviews-v2"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let issued = Arc::new(AtomicU64::new(0));
    let mut outcomes = run_load(listener, stop.clone(), issued.clone());
    let (mut total, mut failures) = (0usize, Vec::new());
    for (w1, w2) in [(100, 0), (50, 50), (0, 100)] {
        // The first weights are the initial snapshot's, already served.
        let ack = if (w1, w2) == (100, 0) {
            "initial".to_string()
        } else {
            let pushed = Instant::now();
            let version = control_plane.push(snapshot(p1, p2, w1, w2)?).await;
            control_plane.wait_acked(&version, &[ROUTE]).await?;
            format!("{:.1}ms", pushed.elapsed().as_secs_f64() * 1000.0)
        };
        let after = issued.load(Ordering::SeqCst);
        let mut counts: HashMap<String, usize> = HashMap::new();
        let mut counted = 0;
        while counted < PER_PHASE {
            let Some(outcome) = outcomes.recv().await else {
                anyhow::bail!("the load stopped")
            };
            total += 1;
            match outcome.backend {
                Err(e) => failures.push(e),
                Ok(backend) if outcome.seq >= after => {
                    counted += 1;
                    *counts.entry(backend).or_default() += 1;
                }
                Ok(_) => {}
            }
        }
        let share = |name: &str| {
            let n = counts.get(name).copied().unwrap_or(0);
            format!("{n} ({:.0}%)", 100.0 * n as f64 / PER_PHASE as f64)
        };
        println!(
            "  {:<16} {:>9}   {:>13} {:>13}",
            format!("{w1}/{w2}"),
            ack,
            share("reviews-v1"),
            share("reviews-v2")
        );
    }
    stop.store(true, Ordering::Relaxed);
    println!(
        "\n  {total} requests during the shift, {} failed{}",
        failures.len(),
        failures
            .first()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default()
    );
    println!(
        "  {} requests reached v1 and {} reached v2 in all",
        v1.requests(),
        v2.requests()
    );
    if exit_after_report {
        let _ = std::fs::remove_file(&socket);
        return Ok(());
    }
    println!(
        "\nAdmin API (try /config_dump, /stats, /clusters): http://{admin}/  — Ctrl-C to stop"
    );
    tokio::signal::ctrl_c().await?;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}
