//! HTTP filters and mirroring end to end, where one request cannot show the behaviour: fault
//! percentages over 1000 requests, a local rate limit shared by every worker, and mirrored
//! copies arriving at the shadow cluster. (Single-request filter behaviour is in the
//! differential route table, `http_routes`.)

use std::net::SocketAddr;
use tern_tests::bootstrap::{HttpBootstrap, route_all, static_cluster};
use tern_tests::http_backend::{self, HttpBackend, Protocol, Request};
use tern_tests::inprocess::Running;

/// Tern with a listener `http` running `filters` then the router, `routes`, and clusters `main`
/// and `shadow` over their own backends.
struct Setup {
    tern: Running,
    proxy: SocketAddr,
    main: HttpBackend,
    shadow: HttpBackend,
}

async fn start(filters: &str, routes: &str, workers: usize) -> Setup {
    let main = HttpBackend::start("main").await.expect("main backend");
    let shadow = HttpBackend::start("shadow").await.expect("shadow backend");
    let clusters = static_cluster("main", &[main.address], "")
        + &static_cluster("shadow", &[shadow.address], "");
    let yaml = HttpBootstrap {
        filters,
        routes,
        clusters: &clusters,
        ..Default::default()
    }
    .yaml();
    let tern = Running::start(&yaml, workers).await;
    let proxy = tern.listener("http").await;
    Setup {
        tern,
        proxy,
        main,
        shadow,
    }
}

async fn send(proxy: SocketAddr, method: &str, path: &str, body: &[u8]) -> http_backend::Response {
    let request = Request {
        method,
        authority: "test.local",
        path,
        headers: &[],
        body,
    };
    http_backend::send(proxy, Protocol::Http1, &request)
        .await
        .expect("request completes")
}

/// `n` Bernoulli(`p`) draws land within five standard deviations of `n * p` (a false alarm
/// about once in 1.7 million runs).
fn within_tolerance(observed: i64, n: i64, p: f64) -> bool {
    let mean = n as f64 * p;
    let sd = (n as f64 * p * (1.0 - p)).sqrt();
    (observed as f64 - mean).abs() <= 5.0 * sd
}

#[tokio::test]
async fn fault_abort_and_delay_percentages_hold_over_1000_requests() {
    let filters = r#"          - name: envoy.filters.http.fault
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault
              abort: { http_status: 503, percentage: { numerator: 30 } }
              delay: { fixed_delay: 0.001s, percentage: { numerator: 20 } }"#;
    let setup = start(filters, &route_all("main", ""), 1).await;
    const N: i64 = 1000;
    let mut aborted = 0;
    for _ in 0..N {
        let response = send(setup.proxy, "GET", "/", b"").await;
        match response.status {
            200 => {}
            503 => {
                assert_eq!(response.text(), "fault filter abort");
                aborted += 1;
            }
            other => panic!("unexpected status {other}: {}", response.text()),
        }
    }
    let stat = |name: &str| setup.tern.stat(&format!("http.ingress.fault.{name}"));
    assert_eq!(stat("aborts_injected"), aborted, "every abort is counted");
    assert_eq!(
        setup.main.requests() as i64,
        N - aborted,
        "aborted requests never reach the backend"
    );
    assert!(
        within_tolerance(aborted, N, 0.30),
        "{aborted} aborts of {N} at 30%"
    );
    let delayed = stat("delays_injected");
    assert!(
        within_tolerance(delayed, N, 0.20),
        "{delayed} delays of {N} at 20%"
    );
    assert_eq!(stat("active_faults"), 0, "every fault was released");
}

#[tokio::test]
async fn a_local_rate_limit_bucket_is_shared_by_every_worker() {
    let filters = r#"          - name: envoy.filters.http.local_ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              stat_prefix: http_local_rate_limiter"#;
    let routes = r#"              - match: { prefix: / }
                route: { cluster: main }
                typed_per_filter_config:
                  envoy.filters.http.local_ratelimit:
                    "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
                    stat_prefix: route_limit
                    token_bucket: { max_tokens: 5, tokens_per_fill: 1, fill_interval: 3600s }
                    filter_enabled: { default_value: { numerator: 100 }, runtime_key: e }
                    filter_enforced: { default_value: { numerator: 100 }, runtime_key: f }"#;
    let setup = start(filters, routes, 2).await;
    let mut statuses = Vec::new();
    // Fresh connections, so SO_REUSEPORT spreads them over both workers.
    for _ in 0..8 {
        statuses.push(send(setup.proxy, "GET", "/", b"").await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 429, 429, 429]);
    assert_eq!(setup.main.requests(), 5);
    let stat = |name: &str| {
        setup
            .tern
            .stat(&format!("route_limit.http_local_rate_limit.{name}"))
    };
    assert_eq!(stat("enabled"), 8);
    assert_eq!(stat("ok"), 5);
    assert_eq!(stat("rate_limited"), 3);
    assert_eq!(stat("enforced"), 3);
}

#[tokio::test]
async fn mirrored_copies_reach_the_shadow_cluster() {
    let routes = r#"              - match: { prefix: /never }
                route:
                  cluster: main
                  request_mirror_policies:
                  - cluster: shadow
                    runtime_fraction: { default_value: { numerator: 0 } }
              - match: { prefix: / }
                route:
                  cluster: main
                  request_mirror_policies: [{ cluster: shadow }]"#;
    let setup = start("", routes, 1).await;
    for _ in 0..10 {
        let response = send(setup.proxy, "GET", "/never", b"").await;
        assert_eq!(response.status, 200);
    }
    for i in 0..10 {
        let response = send(setup.proxy, "POST", &format!("/copy/{i}"), b"hello").await;
        assert_eq!(response.status, 200, "the main cluster answers");
        assert_eq!(
            response.json.as_ref().expect("backend JSON")["backend"],
            "main"
        );
    }
    setup
        .shadow
        .wait_until("10 copies with their bodies", |seen| {
            seen.len() >= 10 && seen.iter().all(|copy| copy["body_len"] != 0)
        })
        .await
        .expect("every copy arrives");
    assert_eq!(setup.main.requests(), 20);
    let copies = setup.shadow.seen();
    let mut paths: Vec<String> = copies
        .iter()
        .map(|c| c["path"].as_str().unwrap_or_default().to_string())
        .collect();
    paths.sort();
    let want: Vec<String> = (0..10).map(|i| format!("/copy/{i}")).collect();
    assert_eq!(paths, want, "one copy per request, none from the 0% route");
    for copy in &copies {
        assert_eq!(copy["method"], "POST");
        assert_eq!(copy["authority"], "test.local-shadow");
        assert_eq!(copy["body_len"], 5, "the body is copied");
    }
}
