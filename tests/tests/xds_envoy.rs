//! The test control plane proven against the reference client, the real Envoy 1.40.0: bootstrapped
//! with an ADS cluster pointing at `xds_server` (delta over a unix socket as Istio does, SotW over
//! TCP), Envoy takes a listener, routes, a cluster and its endpoints, ACKs them and carries a
//! request to a backend; an invalid cluster is NACKed by Envoy with detail while traffic keeps
//! flowing; the corrected push is ACKed.

#[path = "xds/resources.rs"]
mod resources;

use std::net::SocketAddr;
use tern_tests::bootstrap::{ads_bootstrap, grpc_cluster, pipe_address, socket_address};
use tern_tests::envoy::envoy_binary;
use tern_tests::http_backend::{HttpBackend, http_request};
use tern_tests::prereq;
use tern_tests::process::{ProxyKind, ProxyProcess};
use tern_tests::xds_server::{Snapshot, Verdict, XdsServer};
use xds_client::ads::XdsAddress;
use xds_client::resource::{CLUSTER, ENDPOINT, LISTENER, ROUTE};

fn envoy_available() -> bool {
    prereq::require(
        envoy_binary().is_some(),
        "Envoy 1.40.0 not installed (scripts/install-test-deps.sh)",
    )
}

/// An Istio-shaped bootstrap: ADS on the `xds-grpc` cluster (HTTP/2), wildcard LDS/CDS with
/// `initial_fetch_timeout: 0s`.
fn bootstrap(api_type: &str, xds: &XdsAddress) -> String {
    let address = match xds {
        XdsAddress::Unix(path) => pipe_address(path),
        XdsAddress::Tcp(uri) => socket_address(
            uri.trim_start_matches("http://")
                .parse()
                .expect("test server address"),
        ),
    };
    ads_bootstrap(
        "sidecar~127.0.0.1~envoy.test~test.svc.cluster.local",
        api_type,
        &[grpc_cluster("xds-grpc", &address)],
        "admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}",
    )
}

fn base_snapshot(backend_port: u16) -> Snapshot {
    resources::mesh("backend", backend_port)
}

async fn get_ok(envoy: &ProxyProcess, listener: SocketAddr, backend: &HttpBackend) {
    let before = backend.requests();
    let response = http_request(listener, "GET", "example.test", "/hello", &[])
        .await
        .expect("a response through Envoy");
    assert_eq!(
        response.status,
        200,
        "through Envoy: {}\nlog:\n{}",
        response.text(),
        envoy.log()
    );
    assert_eq!(
        backend.requests(),
        before + 1,
        "the backend got the request"
    );
}

async fn envoy_follows_the_control_plane(api_type: &str, server: XdsServer) {
    let backend = HttpBackend::start("a").await.expect("backend");
    let v1 = server.push(base_snapshot(backend.address.port())).await;

    let binary = envoy_binary().expect("checked by the caller");
    let envoy = ProxyProcess::start(
        ProxyKind::Envoy,
        &binary,
        &bootstrap(api_type, server.address()),
        1,
    )
    .await
    .expect("Envoy starts and becomes ready from ADS");
    server
        .wait_acked(&v1, &[CLUSTER, ENDPOINT, LISTENER, ROUTE])
        .await
        .expect("Envoy ACKs the first snapshot");
    let listener = envoy
        .listener_address("http_in")
        .await
        .expect("the ADS listener is bound");
    get_ok(&envoy, listener, &backend).await;

    // An invalid cluster: an lb_policy value outside the enum.
    let mut bad = base_snapshot(backend.address.port());
    let mut cluster = resources::static_cluster("bad", backend.address.port());
    cluster.lb_policy = 99;
    bad.add(&cluster);
    let v2 = server.push(bad).await;
    match server.wait_verdict(&v2, CLUSTER).await.expect("an answer") {
        Verdict::Nack(detail) => {
            eprintln!("Envoy ({api_type}) NACKed: {detail}");
            assert!(
                detail.contains("name: \"bad\""),
                "the NACK names the cluster: {detail}"
            );
            assert!(
                detail.contains("LbPolicy: value must be one of the defined enum values"),
                "the NACK says why: {detail}"
            );
        }
        Verdict::Ack => panic!("Envoy ACKed a cluster with lb_policy 99"),
    }
    get_ok(&envoy, listener, &backend).await;

    let mut fixed = base_snapshot(backend.address.port());
    fixed.add(&resources::static_cluster("bad", backend.address.port()));
    let v3 = server.push(fixed).await;
    server
        .wait_acked(&v3, &[CLUSTER])
        .await
        .expect("Envoy ACKs the corrected cluster");
    get_ok(&envoy, listener, &backend).await;

    // Every stream's first request carried the node, later ones not (set_node_on_first_message_only).
    let requests = server.requests().await;
    let first = requests.first().expect("Envoy sent requests");
    assert!(first.request.has_node());
    assert!(requests.iter().skip(1).all(|r| !r.request.has_node()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_delta_ads_over_unix_socket_acks_nacks_and_routes() {
    if !envoy_available() {
        return;
    }
    let socket = std::env::temp_dir().join(format!("tern-xds-envoy-{}.sock", std::process::id()));
    let server = XdsServer::start_unix(&socket).await.expect("control plane");
    envoy_follows_the_control_plane("DELTA_GRPC", server).await;
    let _ = std::fs::remove_file(socket);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envoy_sotw_ads_over_tcp_acks_nacks_and_routes() {
    if !envoy_available() {
        return;
    }
    let server = XdsServer::start_tcp().await.expect("control plane");
    envoy_follows_the_control_plane("GRPC", server).await;
}
