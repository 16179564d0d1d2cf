//! Differential test of `/stats/prometheus` names and labels under Istio's `stats_config`:
//! Envoy 1.40.0 and Tern run the same bootstrap (Istio's `stats_tags` with
//! `use_all_default_tags: false`, and Istio's `stats_matcher` inclusion list widened the way
//! `sidecar.istio.io/statsInclusionPrefixes` widens it), the same requests go through an HTTP
//! listener and a TCP listener to a cluster named and stat-named as Istio names them
//! (`alt_stat_name` and HCM `stat_prefix` end in `;`), and every sample Tern prints must be one
//! Envoy prints, with the same metric name and label set.
//!
//! Skips without Envoy (fails under `CI=true`).

use std::collections::BTreeMap;
use std::time::Duration;
use tern_tests::envoy::envoy_binary;
use tern_tests::http_backend::{HttpBackend, http_request};
use tern_tests::prereq;
use tern_tests::process::{ProxyKind, ProxyProcess};
use tokio::time::Instant;

const ISTIO_STATS_CONFIG: &str = include_str!("../testdata/istio_stats_config.json");
const CLUSTER: &str = "outbound|8080||backend.default.svc.cluster.local";
const TCP_PREFIX: &str = "outbound|9090||tcp.default.svc.cluster.local";
const SETTLE_DEADLINE: Duration = Duration::from_secs(15);

/// Istio's `stats_config` with the inclusion list also naming this test's stats.
fn stats_config() -> serde_json::Value {
    let mut config: serde_json::Value =
        serde_json::from_str(ISTIO_STATS_CONFIG).expect("stats_config JSON");
    let patterns = config["stats_matcher"]["inclusion_list"]["patterns"]
        .as_array_mut()
        .expect("Istio's inclusion list");
    for prefix in [
        "cluster.outbound",
        "http.outbound",
        "listener.127.",
        "tcp.outbound",
    ] {
        patterns.push(serde_json::json!({ "prefix": prefix }));
    }
    config
}

/// An HTTP listener on 127.0.0.1 and a TCP one on 127.0.0.2 (so their `listener.<address>`
/// stats differ), both to one cluster on `backend_port`.
fn bootstrap(backend_port: u16) -> String {
    let router = serde_json::json!({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}});
    let hcm = serde_json::json!({"name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "outbound_0.0.0.0_8080;",
        "http_filters": [router],
        "route_config": {"name": "r", "virtual_hosts": [{"name": "vh", "domains": ["*"],
            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": CLUSTER}}]}]}}});
    let tcp = serde_json::json!({"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": TCP_PREFIX, "cluster": CLUSTER}});
    let listener = |name: &str, ip: &str, filter: &serde_json::Value| {
        serde_json::json!({"name": name,
            "address": {"socket_address": {"address": ip, "port_value": 0}},
            "filter_chains": [{"filters": [filter]}]})
    };
    serde_json::json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "stats_config": stats_config(),
        "static_resources": {
            "listeners": [listener("http_in", "127.0.0.1", &hcm), listener("tcp_in", "127.0.0.2", &tcp)],
            "clusters": [{"name": CLUSTER, "alt_stat_name": format!("{CLUSTER};"),
                "type": "STATIC", "connect_timeout": "1s",
                "load_assignment": {"cluster_name": CLUSTER, "endpoints": [{"lb_endpoints": [
                    {"endpoint": {"address": {"socket_address":
                        {"address": "127.0.0.1", "port_value": backend_port}}}}]}]}}]
        }
    })
    .to_string()
}

/// `/stats/prometheus` samples as `name{labels}` -> value (histogram lines included).
async fn samples(proxy: &ProxyProcess) -> BTreeMap<String, String> {
    let (status, body) = proxy
        .get("/stats/prometheus")
        .await
        .expect("/stats/prometheus");
    assert_eq!(
        status,
        200,
        "{} /stats/prometheus: {body}",
        proxy.kind.name()
    );
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').expect("sample line has a value");
            (key.to_string(), value.to_string())
        })
        .collect()
}

/// The samples whose values this test's traffic fixes, with those values.
fn expected_counts() -> Vec<(String, &'static str)> {
    let cluster = format!("cluster_name=\"{CLUSTER}\"");
    let hcm = "http_conn_manager_prefix=\"outbound_0.0.0.0_8080\"";
    vec![
        (
            format!("envoy_cluster_upstream_rq{{{cluster},response_code=\"200\"}}"),
            "3",
        ),
        (
            format!("envoy_cluster_upstream_rq{{{cluster},response_code=\"404\"}}"),
            "1",
        ),
        (
            format!("envoy_cluster_upstream_rq{{{cluster},response_code_class=\"2xx\"}}"),
            "3",
        ),
        (
            format!("envoy_cluster_upstream_rq_completed{{{cluster}}}"),
            "4",
        ),
        (format!("envoy_http_downstream_rq_total{{{hcm}}}"), "4"),
        (
            format!("envoy_http_downstream_rq{{response_code_class=\"2xx\",{hcm}}}"),
            "3",
        ),
        (
            format!("envoy_http_downstream_rq{{response_code_class=\"4xx\",{hcm}}}"),
            "1",
        ),
        (
            "envoy_listener_downstream_cx_total{listener_address=\"127.0.0.2_0\"}".into(),
            "1",
        ),
        (
            "envoy_listener_downstream_cx_total{listener_address=\"127.0.0.1_0\"}".into(),
            "4",
        ),
        (
            format!("envoy_tcp_downstream_cx_total{{tcp_prefix=\"{TCP_PREFIX}\"}}"),
            "1",
        ),
        ("envoy_server_live{}".into(), "1"),
    ]
}

/// Sends three 200s and one 404 through the HTTP listener and one request through the TCP
/// listener, then waits until `proxy` has counted them all; returns its samples.
async fn traffic_then_samples(
    proxy: &ProxyProcess,
    backend: &HttpBackend,
) -> BTreeMap<String, String> {
    let http = proxy.listener_address("http_in").await.expect("http_in");
    let tcp = proxy.listener_address("tcp_in").await.expect("tcp_in");
    for status in [200, 200, 200, 404] {
        backend.always_answer(status);
        let response = http_request(http, "GET", "backend", "/", &[])
            .await
            .expect("request through http_in");
        assert_eq!(response.status, status, "{}", proxy.kind.name());
    }
    backend.answer_normally();
    http_request(tcp, "GET", "backend", "/", &[])
        .await
        .expect("request through tcp_in");
    let expected = expected_counts();
    let deadline = Instant::now() + SETTLE_DEADLINE;
    loop {
        let samples = samples(proxy).await;
        let unsettled: Vec<_> = expected
            .iter()
            .filter(|(key, value)| samples.get(key).map(String::as_str) != Some(*value))
            .map(|(key, value)| (key, value, samples.get(key)))
            .collect();
        if unsettled.is_empty() {
            return samples;
        }
        assert!(
            Instant::now() < deadline,
            "{} never showed (sample, wanted, had) {unsettled:#?}",
            proxy.kind.name()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Tern creates a cluster's response-class counters up front; Envoy creates each on first use.
fn created_lazily_by_envoy(key: &str) -> bool {
    key.starts_with("envoy_cluster_upstream_rq{")
        && ["1xx", "3xx", "5xx"]
            .iter()
            .any(|class| key.ends_with(&format!("response_code_class=\"{class}\"}}")))
}

#[tokio::test]
async fn istio_stats_config_gives_envoys_prometheus_names_and_labels() {
    if !prereq::require(
        envoy_binary().is_some(),
        "Envoy 1.40.0 not installed (scripts/install-test-deps.sh)",
    ) {
        return;
    }
    let backend = HttpBackend::start("backend").await.expect("backend");
    let config = bootstrap(backend.address.port());
    let envoy_bin = envoy_binary().expect("checked above");
    let envoy = ProxyProcess::start(ProxyKind::Envoy, &envoy_bin, &config, 1)
        .await
        .expect("envoy starts");
    let envoy_samples = traffic_then_samples(&envoy, &backend).await;
    drop(envoy);
    let tern = ProxyProcess::tern(&config, 1).await.expect("tern starts");
    let tern_samples = traffic_then_samples(&tern, &backend).await;

    // Every sample Tern prints, Envoy prints under the same name and labels: tag extraction
    // and the inclusion list agree (a stat the list rejects would show up here as Tern's only).
    let tern_only: Vec<&String> = tern_samples
        .keys()
        .filter(|k| !envoy_samples.contains_key(*k) && !created_lazily_by_envoy(k))
        .collect();
    assert!(
        tern_only.is_empty(),
        "Envoy has no such samples: {tern_only:#?}"
    );
    let common = tern_samples
        .keys()
        .filter(|k| envoy_samples.contains_key(*k))
        .count();
    assert!(common >= 60, "only {common} samples in common");
    // Histograms carry the same labels.
    let histogram = format!("envoy_cluster_upstream_rq_time_count{{cluster_name=\"{CLUSTER}\"}}");
    for (name, samples) in [("Envoy", &envoy_samples), ("Tern", &tern_samples)] {
        assert!(samples.contains_key(&histogram), "{name} lacks {histogram}");
        // The inclusion list leaves out what it does not name, in both.
        let outside: Vec<&String> = samples
            .keys()
            .filter(|k| k.starts_with("envoy_runtime_") || k.starts_with("envoy_vhost_"))
            .collect();
        assert!(outside.is_empty(), "{name} kept {outside:?}");
    }
}

#[tokio::test]
async fn readiness_stats_pilot_agent_reads_survive_istios_inclusion_list() {
    if !prereq::require(
        envoy_binary().is_some(),
        "Envoy 1.40.0 not installed (scripts/install-test-deps.sh)",
    ) {
        return;
    }
    let backend = HttpBackend::start("backend").await.expect("backend");
    let config = bootstrap(backend.address.port());
    let envoy_bin = envoy_binary().expect("checked above");
    let (envoy, tern) = tokio::join!(
        ProxyProcess::start(ProxyKind::Envoy, &envoy_bin, &config, 1),
        ProxyProcess::tern(&config, 1),
    );
    // pilot-agent's readiness probe query.
    let query = "/stats?usedonly&filter=^(server\\.state|listener_manager\\.workers_started)$";
    let mut answers = Vec::new();
    for proxy in [envoy.expect("envoy starts"), tern.expect("tern starts")] {
        let (status, body) = proxy.get(query).await.expect("readiness stats");
        assert_eq!(status, 200, "{}", proxy.kind.name());
        answers.push(body);
    }
    assert_eq!(
        answers[0], "listener_manager.workers_started: 1\nserver.state: 0\n",
        "Envoy"
    );
    assert_eq!(answers[1], answers[0], "Tern");
}
