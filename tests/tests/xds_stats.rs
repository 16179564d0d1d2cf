//! The xDS subscription and control-plane stats, Tern against the real Envoy 1.40.0: both proxies
//! follow the same sequence of pushes from their own test control plane (an initial snapshot, a
//! NACKed cluster, its correction, a route change, an endpoint change, a lost and regained
//! stream) and must then print the same `control_plane.*`, `listener_manager.lds.*`,
//! `cluster_manager.cds.*`, `http.<prefix>.rds.<name>.*` and `cluster.<name>.update_*` stats with
//! the same values (time-valued ones only checked for presence).

#[path = "xds/resources.rs"]
mod resources;

use std::collections::BTreeMap;
use tern_tests::bootstrap::{ads_bootstrap, grpc_cluster, pipe_address};
use tern_tests::envoy::envoy_binary;
use tern_tests::http_backend::{HttpBackend, http_request};
use tern_tests::prereq;
use tern_tests::process::{ProxyKind, ProxyProcess, tern_binary};
use tern_tests::xds_server::{Snapshot, Verdict, XdsServer};
use xds_client::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

/// Stats whose value is a time or a duration: compared by presence only.
const TIMED: [&str; 3] = ["update_time", "update_duration", "config_reload_time_ms"];

fn is_xds_stat(name: &str) -> bool {
    name.starts_with("control_plane.")
        || name.starts_with("listener_manager.lds.")
        || name.starts_with("cluster_manager.cds.")
        || (name.starts_with("http.") && name.contains(".rds."))
        || (name.starts_with("cluster.backend.update_"))
}

fn snapshot(backend_port: u16, route_cluster: &str) -> Snapshot {
    let mut snapshot = resources::mesh(route_cluster, backend_port);
    snapshot.add(&resources::static_cluster("other", backend_port));
    snapshot
}

async fn get_ok(proxy: &ProxyProcess, backend: &HttpBackend) {
    let listener = proxy.listener_address("http_in").await.expect("listener");
    let before = backend.requests();
    let response = http_request(listener, "GET", "example.test", "/", &[])
        .await
        .expect("a response");
    assert_eq!(response.status, 200, "{}\n{}", response.text(), proxy.log());
    assert_eq!(backend.requests(), before + 1);
}

/// Runs the push sequence against one proxy and returns its xDS stats (`/stats` text lines).
async fn run(kind: ProxyKind) -> BTreeMap<String, String> {
    let socket = std::env::temp_dir().join(format!(
        "tern-xds-stats-{}-{}.sock",
        kind.name(),
        std::process::id()
    ));
    let server = XdsServer::start_unix(&socket).await.expect("control plane");
    let backend = HttpBackend::start("a").await.expect("backend");
    let port = backend.address.port();
    let v1 = server.push(snapshot(port, "backend")).await;
    let binary = match kind {
        ProxyKind::Envoy => envoy_binary().expect("checked"),
        _ => tern_binary(),
    };
    let bootstrap = ads_bootstrap(
        "sidecar~127.0.0.1~stats.test~test.svc.cluster.local",
        "DELTA_GRPC",
        &[grpc_cluster("xds-grpc", &pipe_address(&socket))],
        "admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}",
    );
    let proxy = ProxyProcess::start(kind, &binary, &bootstrap, 1)
        .await
        .expect("the proxy starts and goes LIVE");
    server
        .wait_acked(&v1, &[CLUSTER, ENDPOINT, LISTENER, ROUTE])
        .await
        .expect("first snapshot ACKed");
    get_ok(&proxy, &backend).await;

    // A cluster NACKed, then corrected.
    let mut bad = snapshot(port, "backend");
    let mut cluster = resources::static_cluster("bad", port);
    cluster.lb_policy = 99;
    bad.add(&cluster);
    let v2 = server.push(bad).await;
    assert!(matches!(
        server.wait_verdict(&v2, CLUSTER).await.expect("verdict"),
        Verdict::Nack(_)
    ));
    let mut fixed = snapshot(port, "backend");
    fixed.add(&resources::static_cluster("bad", port));
    let v3 = server.push(fixed).await;
    server.wait_acked(&v3, &[CLUSTER]).await.expect("ACK");

    // A route change, then an endpoint change (the same backend under another priority).
    let mut routed = snapshot(port, "other");
    routed.add(&resources::static_cluster("bad", port));
    let v4 = server.push(routed.clone()).await;
    server.wait_acked(&v4, &[ROUTE]).await.expect("route ACK");
    get_ok(&proxy, &backend).await;
    let mut endpoints = resources::endpoints("backend", port);
    endpoints.endpoints[0].locality = Some(Default::default());
    endpoints.endpoints[0].load_balancing_weight =
        Some(xds_client::pb::google::protobuf::UInt32Value { value: 7 });
    routed.add(&endpoints);
    let v5 = server.push(routed.clone()).await;
    server.wait_acked(&v5, &[ENDPOINT]).await.expect("EDS ACK");

    // The stream is lost and comes back: every subscription asks again on the new stream.
    let old: Vec<u64> = server.requests().await.iter().map(|r| r.stream).collect();
    server.disconnect_all().await;
    for type_url in [LISTENER, CLUSTER, ROUTE, ENDPOINT] {
        server
            .wait_request(|r| !old.contains(&r.stream) && r.request.type_url() == type_url)
            .await
            .expect("the proxy subscribes again on a new stream");
    }
    // One more route push after the resubscription, so everything before it was answered.
    let mut back = snapshot(port, "backend");
    back.add(&resources::static_cluster("bad", port))
        .add(&endpoints);
    let v6 = server.push(back).await;
    server.wait_acked(&v6, &[ROUTE]).await.expect("route ACK");
    get_ok(&proxy, &backend).await;

    let (status, text) = proxy.get("/stats").await.expect("/stats");
    assert_eq!(status, 200);
    let stats: BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.split_once(": "))
        .filter(|(n, _)| is_xds_stat(n))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    server.shutdown().await;
    let _ = std::fs::remove_file(socket);
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_stats_match_envoys() {
    if !prereq::require(envoy_binary().is_some(), "Envoy 1.40.0 not installed") {
        return;
    }
    let envoy = run(ProxyKind::Envoy).await;
    let tern = run(ProxyKind::Tern).await;
    let comparable = |stats: &BTreeMap<String, String>| -> BTreeMap<String, String> {
        stats
            .iter()
            .map(|(n, v)| {
                let timed = TIMED.iter().any(|t| n.ends_with(&format!(".{t}")))
                    || n.contains(".update_duration");
                (n.clone(), if timed { "<time>".into() } else { v.clone() })
            })
            .collect()
    };
    let (envoy, tern) = (comparable(&envoy), comparable(&tern));
    let only_envoy: Vec<_> = envoy.keys().filter(|k| !tern.contains_key(*k)).collect();
    let only_tern: Vec<_> = tern.keys().filter(|k| !envoy.contains_key(*k)).collect();
    let differ: Vec<_> = envoy
        .iter()
        .filter(|(k, v)| tern.get(*k).is_some_and(|t| t != *v))
        .map(|(k, v)| format!("{k}: envoy {v}, tern {}", tern[k]))
        .collect();
    assert!(
        only_envoy.is_empty() && only_tern.is_empty() && differ.is_empty(),
        "only Envoy: {only_envoy:#?}\nonly Tern: {only_tern:#?}\ndiffer: {differ:#?}\nEnvoy: {envoy:#?}"
    );
}
