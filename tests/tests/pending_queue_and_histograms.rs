//! Envoy's pending-request queue and histograms, end to end through Tern in-process: a request
//! that finds the cluster's `max_connections` in use waits (bounded by `max_pending_requests`,
//! answered 503 UO beyond it, 504 UT when the route timeout passes first), and a proxied request
//! shows up in `/stats` and `/stats/prometheus` as Envoy-shaped histograms.

use std::net::SocketAddr;
use tern_tests::bootstrap::{HttpBootstrap, route_all, static_cluster};
use tern_tests::http_backend::{self, HttpBackend, held_backend};
use tern_tests::inprocess::Running;
use tokio::net::TcpListener;

/// A running Tern with one cluster `name` over `backend` and the access log it writes.
struct Setup {
    tern: Running,
    proxy: SocketAddr,
    log: std::path::PathBuf,
}

impl Setup {
    async fn start(name: &str, backend: SocketAddr, timeout: &str, extra: &str) -> Setup {
        let log = std::env::temp_dir().join(format!(
            "tern-pending-{}-{}.log",
            std::process::id(),
            backend.port()
        ));
        let _ = std::fs::remove_file(&log);
        let hcm = format!(
            r#"          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {}
              log_format: {{ text_format_source: {{ inline_string: "%RESPONSE_CODE% %RESPONSE_FLAGS%\n" }} }}"#,
            log.display()
        );
        let yaml = HttpBootstrap {
            hcm: &hcm,
            routes: &route_all(name, &format!("timeout: {timeout}")),
            clusters: &static_cluster(name, &[backend], extra),
            ..Default::default()
        }
        .yaml();
        let tern = Running::start(&yaml, 1).await;
        let proxy = tern.listener("http").await;
        Setup { tern, proxy, log }
    }

    /// The access log's lines, sorted (the order of concurrent requests is not the test's).
    fn log_lines(&self) -> Vec<String> {
        assert!(tern::http::access_log::flush_all(), "writer confirmed");
        let text = std::fs::read_to_string(&self.log).expect("log written");
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines.sort();
        lines
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

async fn get(proxy: SocketAddr) -> http_backend::Response {
    http_backend::http_request(proxy, "GET", "test.local", "/", &[])
        .await
        .expect("request completes")
}

const ONE_CONNECTION_ONE_PENDING: &str =
    "    circuit_breakers: { thresholds: [{ max_connections: 1, max_pending_requests: 1 }] }\n";

#[tokio::test]
async fn second_request_waits_for_the_connection_and_a_third_overflows_with_uo() {
    let (held, mut arrived, release) = held_backend().await;
    let s = Setup::start("held", held, "15s", ONE_CONNECTION_ONE_PENDING).await;
    let proxy = s.proxy;
    let first = tokio::spawn(async move { get(proxy).await });
    arrived
        .recv()
        .await
        .expect("first request reached the backend");
    // Two more while the only connection is busy: one waits, the other finds the queue full.
    // Which is which is up to the scheduler; the one answered first is the overflow, and it can
    // only overflow while the other one is pending.
    let mut second = tokio::spawn(async move { get(proxy).await });
    let mut third = tokio::spawn(async move { get(proxy).await });
    let (overflowed, waiting) = tokio::select! {
        r = &mut second => (r, third),
        r = &mut third => (r, second),
    };
    let overflowed = overflowed.expect("request task");
    assert_eq!(overflowed.status, 503);
    assert!(
        overflowed.text().ends_with("reset reason: overflow"),
        "{}",
        overflowed.text()
    );
    let tern = &s.tern;
    assert_eq!(tern.stat("cluster.held.upstream_rq_pending_active"), 1);
    assert_eq!(tern.stat("cluster.held.upstream_rq_pending_overflow"), 1);
    assert_eq!(tern.stat("cluster.held.upstream_rq_pending_total"), 2);
    assert_eq!(
        tern.stat("cluster.held.circuit_breakers.default.rq_pending_open"),
        1
    );
    assert_eq!(tern.stat("cluster.held.upstream_cx_overflow"), 1);

    // The first response frees the connection; the waiting request is sent on it.
    release.notify_one();
    assert_eq!(first.await.expect("first").status, 200);
    arrived
        .recv()
        .await
        .expect("waiting request reached the backend");
    release.notify_one();
    assert_eq!(waiting.await.expect("waiting").status, 200);
    assert_eq!(tern.stat("cluster.held.upstream_rq_pending_active"), 0);
    assert_eq!(
        tern.stat("cluster.held.circuit_breakers.default.rq_pending_open"),
        0
    );
    assert_eq!(
        tern.stat("cluster.held.upstream_cx_total"),
        1,
        "one connection served all"
    );
    assert_eq!(tern.stat("cluster.held.upstream_rq_200"), 2);
    assert_eq!(
        tern.stat("cluster.held.upstream_rq_pending_failure_eject"),
        0
    );
    assert_eq!(s.log_lines(), ["200 -", "200 -", "503 UO"]);
}

#[tokio::test]
async fn pending_request_leaves_the_queue_at_the_route_timeout() {
    let (held, mut arrived, release) = held_backend().await;
    let s = Setup::start("held", held, "0.3s", ONE_CONNECTION_ONE_PENDING).await;
    let proxy = s.proxy;
    let first = tokio::spawn(async move { get(proxy).await });
    arrived
        .recv()
        .await
        .expect("first request reached the backend");
    // The first one times out too: both leave, neither is ever answered by the backend.
    let second = get(proxy).await;
    assert_eq!(
        (second.status, second.text().as_str()),
        (504, "upstream request timeout")
    );
    assert_eq!(first.await.expect("first").status, 504);
    let tern = &s.tern;
    assert_eq!(tern.stat("cluster.held.upstream_rq_pending_active"), 0);
    assert_eq!(tern.stat("cluster.held.upstream_rq_pending_total"), 2);
    assert_eq!(tern.stat("cluster.held.upstream_rq_pending_overflow"), 0);
    assert_eq!(tern.stat("cluster.held.upstream_rq_timeout"), 2);
    assert_eq!(s.log_lines(), ["504 UT", "504 UT"]);
    release.notify_waiters();
}

#[tokio::test]
async fn refused_connect_ejects_the_pending_request() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("address");
    let s = Setup::start("refused", closed, "15s", "").await;
    let r = get(s.proxy).await;
    assert_eq!(r.status, 503);
    assert_eq!(
        s.tern
            .stat("cluster.refused.upstream_rq_pending_failure_eject"),
        1
    );
    assert_eq!(s.tern.stat("cluster.refused.upstream_rq_pending_active"), 0);
    assert_eq!(s.log_lines(), ["503 UF"]);
}

async fn admin_get(admin: SocketAddr, path: &str) -> String {
    let r = http_backend::http_request(admin, "GET", "admin", path, &[])
        .await
        .expect("admin answers");
    assert_eq!(r.status, 200, "{path}: {}", r.text());
    r.text()
}

#[tokio::test]
async fn proxied_request_shows_up_as_envoy_shaped_histograms() {
    let backend = HttpBackend::start("a").await.expect("backend");
    let s = Setup::start("backend", backend.address, "15s", "").await;
    let admin = s.tern.admin().await;
    let r = get(s.proxy).await;
    assert_eq!(r.status, 200);
    let r = http_backend::http2_request(s.proxy, "GET", "test.local", "/", &[])
        .await
        .expect("h2c request");
    assert_eq!(r.status, 200);

    // Text: the interval is empty until the first stats flush (5 s), the cumulative has both.
    let text = admin_get(admin, "/stats?filter=^cluster\\.backend\\.upstream_").await;
    let pair = r"\(nan,[0-9]+(\.[0-9]+)?\)";
    let summary = regex::Regex::new(&format!(
        "(?m)^cluster\\.backend\\.upstream_rq_time: P0{pair} P25{pair} P50{pair} P75{pair} \
         P90{pair} P95{pair} P99{pair} P99\\.5{pair} P99\\.9{pair} P100{pair}$"
    ))
    .expect("regex");
    assert!(summary.is_match(&text), "{text}");
    // Histograms come after every counter and gauge, as in Envoy.
    let rq_time_at = text.find("upstream_rq_time:").expect("histogram listed");
    assert!(
        text.find("upstream_rq_total: 2").expect("counter") < rq_time_at,
        "{text}"
    );
    // The pooled connection is still open: no length yet, and `usedonly` leaves it out.
    assert!(
        text.contains("cluster.backend.upstream_cx_length_ms: No recorded values\n"),
        "{text}"
    );
    let used = admin_get(admin, "/stats?usedonly&filter=upstream_cx_length_ms").await;
    assert_eq!(used, "");

    // Prometheus: Envoy's buckets, then `+Inf`, `_sum` and `_count`, labelled like counters.
    let prometheus = admin_get(admin, "/stats/prometheus?filter=upstream_rq_time$").await;
    let lines: Vec<&str> = prometheus.lines().collect();
    assert_eq!(lines[0], "# TYPE envoy_cluster_upstream_rq_time histogram");
    assert_eq!(lines.len(), 1 + 19 + 3, "{prometheus}");
    assert!(
        lines[1].starts_with(
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"backend\",le=\"0.5\"} "
        ),
        "{prometheus}"
    );
    assert_eq!(
        lines[20],
        "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"backend\",le=\"+Inf\"} 2"
    );
    assert!(
        lines[21]
            .starts_with("envoy_cluster_upstream_rq_time_sum{envoy_cluster_name=\"backend\"} "),
        "{prometheus}"
    );
    assert_eq!(
        lines[22],
        "envoy_cluster_upstream_rq_time_count{envoy_cluster_name=\"backend\"} 2"
    );
    let counts: Vec<u64> = lines[1..20]
        .iter()
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("count")
        })
        .collect();
    assert!(
        counts.windows(2).all(|w| w[0] <= w[1]),
        "cumulative: {counts:?}"
    );
    assert_eq!(counts[18], 2);

    // JSON: the histograms object after the counters, null where the interval has nothing.
    let json: serde_json::Value = serde_json::from_str(
        &admin_get(
            admin,
            "/stats?format=json&filter=cluster.backend.upstream_cx_connect_ms",
        )
        .await,
    )
    .expect("json");
    let computed = &json["stats"][0]["histograms"]["computed_quantiles"][0];
    assert_eq!(computed["name"], "cluster.backend.upstream_cx_connect_ms");
    assert_eq!(computed["values"].as_array().map(Vec::len), Some(10));
    assert!(computed["values"][0]["interval"].is_null());
    assert!(computed["values"][0]["cumulative"].is_number());

    // The connection manager counted one connection of each protocol.
    assert_eq!(s.tern.stat("http.ingress.downstream_cx_http1_total"), 1);
    assert_eq!(s.tern.stat("http.ingress.downstream_cx_http2_total"), 1);
    assert_eq!(s.tern.stat("http.ingress.downstream_cx_total"), 2);
}
