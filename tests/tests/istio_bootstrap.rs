//! `tern` started the way pilot-agent starts Envoy — Istio's rendered bootstrap
//! (`default_golden.json`) and pilot-agent's exact flags — against the `xds-server` binary on a
//! unix socket in the bootstrap's `xds-grpc` place: it comes up, reports LIVE over delta ADS, routes
//! through the pushed listener, routes and EDS cluster, and follows a change of the served files.
//!
//! The only edits to Istio's bootstrap are the ones a test machine needs: the admin and static
//! listeners on port 0 instead of 15000/15090/15021, and the pipe paths of `xds-grpc` and
//! `sds-grpc` in a scratch directory.

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tern_tests::http_backend::{HttpBackend, http_request};
use tern_tests::process::{ProxyProcess, XdsServerProcess};

const DEADLINE: Duration = Duration::from_secs(20);

fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tern-istio-bootstrap-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("resources")).expect("scratch dir");
    dir
}

/// Istio's rendered bootstrap with the machine-specific edits above.
fn istio_bootstrap(xds_socket: &Path, sds_socket: &Path) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/istio/xds/default_golden.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut bootstrap: Value = serde_json::from_str(&text).expect("the fixture is JSON");
    bootstrap["admin"]["address"]["socket_address"]["port_value"] = json!(0);
    for listener in bootstrap["static_resources"]["listeners"]
        .as_array_mut()
        .expect("static listeners")
    {
        listener["address"]["socket_address"]["port_value"] = json!(0);
    }
    for cluster in bootstrap["static_resources"]["clusters"]
        .as_array_mut()
        .expect("static clusters")
    {
        let socket = match cluster["name"].as_str() {
            Some("xds-grpc") => xds_socket,
            Some("sds-grpc") => sds_socket,
            _ => continue,
        };
        cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["pipe"]
            ["path"] = json!(socket.to_str().expect("UTF-8 path"));
    }
    assert_eq!(
        bootstrap["dynamic_resources"]["ads_config"]["api_type"], "DELTA_GRPC",
        "Istio's default is delta ADS"
    );
    serde_json::to_string_pretty(&bootstrap).expect("JSON")
}

/// The resources istiod would send for one outbound HTTP service, as the file the control plane
/// serves: a listener with RDS, its routes, an EDS cluster and its endpoint.
fn resources(backend_port: u16, header_value: &str) -> String {
    let cluster = "outbound|8080||app.test.svc.cluster.local";
    format!(
        r#"resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: 127.0.0.1_8080
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: outbound_0.0.0.0_8080
        rds: {{route_config_name: "8080", config_source: {{ads: {{}}, initial_fetch_timeout: 0s, resource_api_version: V3}}}}
        http_filters:
        - name: envoy.filters.http.router
          typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
- "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
  name: "8080"
  virtual_hosts:
  - name: app.test.svc.cluster.local:8080
    domains: ["*"]
    routes:
    - match: {{prefix: /}}
      route: {{cluster: "{cluster}"}}
      response_headers_to_add: [{{header: {{key: x-served-by, value: {header_value}}}}}]
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: "{cluster}"
  type: EDS
  connect_timeout: 10s
  eds_cluster_config:
    service_name: "{cluster}"
    eds_config: {{ads: {{}}, initial_fetch_timeout: 0s, resource_api_version: V3}}
- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: "{cluster}"
  endpoints:
  - lb_endpoints:
    - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {backend_port}}}}}}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tern_with_istios_bootstrap_goes_live_over_a_unix_socket_and_routes() {
    let dir = scratch_dir();
    let (xds_socket, sds_socket) = (dir.join("XDS"), dir.join("sds.sock"));
    let backend = HttpBackend::start("app-v1").await.expect("backend");
    let files = dir.join("resources");
    std::fs::write(
        files.join("app.yaml"),
        resources(backend.address.port(), "v1"),
    )
    .expect("write");
    let server = XdsServerProcess::start(
        &files,
        &["--uds", xds_socket.to_str().unwrap(), "--poll-ms", "50"],
    )
    .await
    .expect("xds-server starts");
    assert_eq!(server.address, format!("unix:{}", xds_socket.display()));

    // Returns once /ready said 200, which Tern only does after the first LDS and CDS are warm.
    let tern =
        ProxyProcess::tern_as_pilot_agent_runs_it(&istio_bootstrap(&xds_socket, &sds_socket))
            .await
            .expect("tern comes up and reports LIVE");
    let (status, body) = tern.get("/ready").await.expect("admin");
    assert_eq!((status, body.trim()), (200, "LIVE"));
    // The readiness counters pilot-agent reads.
    let (_, stats) = tern
        .get("/stats?usedonly&filter=^(server.state|listener_manager.workers_started|cluster_manager.cds.update_success|listener_manager.lds.update_success)$")
        .await
        .expect("admin");
    for line in [
        "server.state: 0",
        "listener_manager.workers_started: 1",
        "cluster_manager.cds.update_success: 1",
        "listener_manager.lds.update_success: 1",
    ] {
        assert!(stats.lines().any(|l| l == line), "{line} in:\n{stats}");
    }

    let listener = tern
        .listener_address("127.0.0.1_8080")
        .await
        .expect("the pushed listener is bound");
    let response = http_request(listener, "GET", "app.test.svc.cluster.local:8080", "/", &[])
        .await
        .expect("a response");
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.header_values("x-served-by"), ["v1"]);
    assert_eq!(backend.requests(), 1);

    // The control plane's files change: a new backend and header; Tern follows.
    let next = HttpBackend::start("app-v2").await.expect("backend");
    std::fs::write(files.join("app.yaml"), resources(next.address.port(), "v2")).expect("write");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let response = http_request(listener, "GET", "app.test.svc.cluster.local:8080", "/", &[])
            .await
            .expect("a response");
        assert_eq!(response.status, 200, "{}", response.text());
        if response.header_values("x-served-by") == ["v2"] {
            assert_eq!(
                response.json.as_ref().and_then(|j| j["backend"].as_str()),
                Some("app-v2")
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Tern never followed the changed files; log:\n{}",
            tern.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
