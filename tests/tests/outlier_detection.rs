//! Outlier detection end to end: Tern in-process in front of real backends, one of them broken.
//! The broken host must be ejected after exactly `consecutive_5xx` failures, receive nothing while
//! ejected, show up as such in the stats and `/clusters`, and be let back in by the sweep once
//! `base_ejection_time` has passed. Synchronisation is on requests and their answers only.

// Test harness code: an unwrap that fails is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;
use tern_tests::backend::{Backend, round_trip};
use tern_tests::bootstrap::{HttpBootstrap, route_all, static_cluster, tcp_bootstrap};
use tern_tests::http_backend::{self, HttpBackend};
use tern_tests::inprocess::Running;
use tokio::time::Instant;

/// Outlier detection tuned for a test: the sweep every 200 ms, ejections of 1 s, a cap that lets
/// one of three hosts go (Envoy's default 10% would eject nothing from three hosts).
const OUTLIER: &str = "    outlier_detection:
      consecutive_5xx: 5
      interval: 0.2s
      base_ejection_time: 1s
      max_ejection_percent: 50
";

/// One HTTP listener routing everything to ROUND_ROBIN cluster `backend` over `hosts`.
fn http_bootstrap(hosts: &[SocketAddr]) -> String {
    HttpBootstrap {
        routes: &route_all("backend", ""),
        clusters: &static_cluster("backend", hosts, OUTLIER),
        ..Default::default()
    }
    .yaml()
}

async fn get(proxy: SocketAddr) -> http_backend::Response {
    http_backend::http_request(proxy, "GET", "test.local", "/", &[])
        .await
        .expect("request completes")
}

#[tokio::test]
async fn host_answering_503_is_ejected_after_five_and_readmitted_after_base_ejection_time() {
    let a = HttpBackend::start("a").await.unwrap();
    let b = HttpBackend::start("b").await.unwrap();
    let bad = HttpBackend::start("bad").await.unwrap();
    bad.always_answer(503);
    let tern = Running::start(&http_bootstrap(&[a.address, b.address, bad.address]), 2).await;
    let proxy = tern.listener("http").await;
    let stat = |name: &str| tern.stat(&format!("cluster.backend.outlier_detection.{name}"));

    // Round robin sends `bad` every third request until the fifth 503 ejects it.
    let mut last_failure_sent = None;
    for sent in 0.. {
        if bad.requests() == 5 {
            break;
        }
        assert!(sent < 100, "bad got {} requests in 100", bad.requests());
        let before = Instant::now();
        if get(proxy).await.status == 503 {
            last_failure_sent = Some(before);
        }
    }
    let ejected_after = last_failure_sent.unwrap();
    assert_eq!(stat("ejections_active"), 1);
    assert_eq!(stat("ejections_detected_consecutive_5xx"), 1);
    assert_eq!(stat("ejections_enforced_consecutive_5xx"), 1);
    assert_eq!(stat("ejections_enforced_total"), 1);
    assert_eq!(stat("ejections_overflow"), 0);

    // Ejected: everything goes to the two good hosts, on both workers.
    for _ in 0..20 {
        let response = get(proxy).await;
        assert_eq!(response.status, 200, "{}", response.text());
    }
    assert_eq!(bad.requests(), 5, "no request reached the ejected host");
    assert_eq!(tern.stat("cluster.backend.lb_healthy_panic"), 0);

    // /clusters flags it as Envoy does.
    let (admin, serve) = tern::admin::bind(
        "127.0.0.1:0".parse().unwrap(),
        tern.handle.clone(),
        tern::admin::LogControl::new("info", None),
    )
    .await
    .unwrap();
    let admin_task = tokio::spawn(serve);
    let clusters = http_backend::http_request(admin, "GET", "admin", "/clusters", &[])
        .await
        .unwrap()
        .text();
    let flags = |host: SocketAddr| {
        let key = format!("backend::{host}::health_flags::");
        clusters
            .lines()
            .find_map(|l| l.strip_prefix(&key).map(str::to_string))
            .unwrap_or_else(|| panic!("no {key} in\n{clusters}"))
    };
    assert_eq!(flags(bad.address), "/failed_outlier_check");
    assert_eq!(flags(a.address), "healthy");
    admin_task.abort();

    // The first sweep after base_ejection_time lets it back in; keep traffic flowing until then.
    let deadline = Instant::now() + Duration::from_secs(10);
    while bad.requests() == 5 {
        assert!(
            Instant::now() < deadline,
            "bad never re-admitted (ejections_active {})",
            stat("ejections_active")
        );
        get(proxy).await;
    }
    assert!(
        ejected_after.elapsed() >= Duration::from_secs(1),
        "re-admitted after {:?}, before base_ejection_time",
        ejected_after.elapsed()
    );
    assert_eq!(bad.requests(), 6);
    assert_eq!(stat("ejections_active"), 0);
}

#[tokio::test]
async fn tcp_proxy_connect_failures_eject_the_unreachable_host() {
    let a = Backend::start("a").await.unwrap();
    let b = Backend::start("b").await.unwrap();
    // A port nothing listens on: bound for its number, then released.
    let refused = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let yaml = tcp_bootstrap(&static_cluster(
        "backend",
        &[a.address, b.address, refused],
        OUTLIER,
    ));
    let tern = Running::start(&yaml, 1).await;
    let proxy = tern.listener("tcp").await;

    // Without the split, a connect failure counts as a 503: five in a row eject the host.
    let mut failures = 0;
    for sent in 0.. {
        if tern.stat("cluster.backend.outlier_detection.ejections_active") == 1 {
            break;
        }
        assert!(sent < 100, "not ejected after 100 connections");
        if round_trip(proxy, b"x").await.is_err() {
            failures += 1;
        }
    }
    assert_eq!(failures, 5);
    assert_eq!(tern.stat("cluster.backend.upstream_cx_connect_fail"), 5);
    assert_eq!(
        tern.stat("cluster.backend.outlier_detection.ejections_enforced_consecutive_5xx"),
        1
    );
    for _ in 0..10 {
        let (name, echoed) = round_trip(proxy, b"x").await.unwrap();
        assert!(name == "a" || name == "b", "{name}");
        assert_eq!(echoed, b"x");
    }
    assert_eq!(tern.stat("cluster.backend.upstream_cx_connect_fail"), 5);
}
