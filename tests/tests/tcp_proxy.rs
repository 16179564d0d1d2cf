//! tcp_proxy through an in-process Tern: real sockets on ephemeral ports, real workers.

// Test harness code: an unwrap that fails is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use tern::server::ServerHandle;
use tern_tests::backend::{Backend, round_trip};
use tern_tests::bootstrap::tcp_bootstrap;
use tern_tests::inprocess::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use xds_client::pb::envoy::config::bootstrap::v3 as bootstrap_proto;
use xds_client::proto_json::{self, ReadOptions};

/// A static bootstrap: one TCP listener on 127.0.0.1:0 proxying to cluster `backend`.
fn bootstrap_yaml(cluster_extra: &str, endpoints: &[(SocketAddr, &str)]) -> String {
    let endpoints: String = endpoints
        .iter()
        .map(|(addr, extra)| {
            format!(
                "        - endpoint: {{address: {{socket_address: {{address: {}, port_value: {}}}}}}}\n          {extra}\n",
                addr.ip(),
                addr.port()
            )
        })
        .collect();
    tcp_bootstrap(&format!(
        r#"  - name: backend
    connect_timeout: 1s
    {cluster_extra}
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
{endpoints}"#
    ))
}

async fn start(yaml: &str, concurrency: usize) -> Tested {
    let running = Running::start(yaml, concurrency).await;
    let proxy = running.listener("tcp").await;
    Tested {
        handle: running.handle.clone(),
        proxy,
        _running: running,
    }
}

/// A server plus the address of its `tcp` listener.
struct Tested {
    handle: ServerHandle,
    proxy: SocketAddr,
    _running: Running,
}

fn stat(handle: &ServerHandle, name: &str) -> i64 {
    handle
        .store()
        .samples()
        .into_iter()
        .find(|s| s.name == name)
        .map_or(-1, |s| s.value)
}

async fn split(proxy: SocketAddr, connections: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..connections {
        let (name, echoed) = round_trip(proxy, b"ping").await.expect("round trip");
        assert_eq!(echoed, b"ping");
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_flow_both_ways_with_half_close() {
    let backend = Backend::start("a").await.unwrap();
    let tern = start(&bootstrap_yaml("", &[(backend.address, "")]), 1).await;
    // A large payload, sent and then half-closed: the echo must come back whole, and the
    // backend's own close (after it saw our FIN) must reach us as end of stream.
    let payload: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let (name, echoed) = round_trip(tern.proxy, &payload).await.unwrap();
    assert_eq!(name, "a");
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "echo differs");
    assert_eq!(
        stat(&tern.handle, "tcp.tcp.downstream_cx_rx_bytes_total"),
        payload.len() as i64
    );
    assert_eq!(
        stat(&tern.handle, "tcp.tcp.downstream_cx_tx_bytes_total"),
        payload.len() as i64 + 2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_can_keep_sending_after_client_half_closes() {
    // The upstream writes only after it saw the client's FIN: the proxy must keep the
    // upstream-to-client direction open after the client-to-upstream one ended.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(format!("late reply to {} bytes", got.len()).as_bytes())
            .await
            .unwrap();
    });
    let tern = start(&bootstrap_yaml("", &[(upstream, "")]), 1).await;
    let mut client = tokio::net::TcpStream::connect(tern.proxy).await.unwrap();
    client.write_all(b"hello").await.unwrap();
    client.shutdown().await.unwrap();
    let mut reply = String::new();
    client.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, "late reply to 5 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_is_exactly_three_to_one_on_one_worker() {
    let a = Backend::start("a").await.unwrap();
    let b = Backend::start("b").await.unwrap();
    let yaml = bootstrap_yaml(
        "",
        &[
            (a.address, "load_balancing_weight: 3"),
            (b.address, "load_balancing_weight: 1"),
        ],
    );
    let tern = start(&yaml, 1).await;
    let counts = split(tern.proxy, 400).await;
    assert_eq!(counts.get("a"), Some(&300));
    assert_eq!(counts.get("b"), Some(&100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_and_draining_hosts_get_nothing() {
    // 3 of 5 healthy (60%) is above the 50% panic threshold, so the excluded hosts stay excluded.
    let a = Backend::start("a").await.unwrap();
    let b = Backend::start("b").await.unwrap();
    let c = Backend::start("c").await.unwrap();
    let sick = Backend::start("sick").await.unwrap();
    let leaving = Backend::start("leaving").await.unwrap();
    let yaml = bootstrap_yaml(
        "",
        &[
            (a.address, ""),
            (sick.address, "health_status: UNHEALTHY"),
            (b.address, ""),
            (leaving.address, "health_status: DRAINING"),
            (c.address, ""),
        ],
    );
    let tern = start(&yaml, 1).await;
    let counts = split(tern.proxy, 60).await;
    assert_eq!(
        counts,
        HashMap::from([
            ("a".to_string(), 20),
            ("b".to_string(), 20),
            ("c".to_string(), 20)
        ])
    );
    assert_eq!((sick.connections(), leaving.connections()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_panic_threshold_traffic_goes_to_all_hosts() {
    // 1 of 3 healthy (33%) is below Envoy's 50% panic threshold: balance over every host.
    let a = Backend::start("a").await.unwrap();
    let sick = Backend::start("sick").await.unwrap();
    let leaving = Backend::start("leaving").await.unwrap();
    let yaml = bootstrap_yaml(
        "",
        &[
            (a.address, ""),
            (sick.address, "health_status: UNHEALTHY"),
            (leaving.address, "health_status: DRAINING"),
        ],
    );
    let tern = start(&yaml, 1).await;
    let counts = split(tern.proxy, 60).await;
    assert_eq!(
        counts,
        HashMap::from([
            ("a".to_string(), 20),
            ("sick".to_string(), 20),
            ("leaving".to_string(), 20)
        ])
    );
    assert_eq!(stat(&tern.handle, "cluster.backend.lb_healthy_panic"), 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failure_retries_another_host_within_max_connect_attempts() {
    // A port that refuses connections: bind, learn the port, close.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let live = Backend::start("live").await.unwrap();
    let yaml = bootstrap_yaml("", &[(dead, ""), (live.address, "")]).replace(
        "cluster: backend",
        "cluster: backend\n          max_connect_attempts: 2",
    );
    let tern = start(&yaml, 1).await;
    let counts = split(tern.proxy, 10).await;
    assert_eq!(counts, HashMap::from([("live".to_string(), 10)]));
    // Round robin alternates and each retry consumes the live host's turn, so every connection
    // after the first tries the dead host first; the first may start on either (random offset).
    let fails = stat(&tern.handle, "cluster.backend.upstream_cx_connect_fail");
    assert!(fails == 9 || fails == 10, "{fails}");
    assert_eq!(
        stat(
            &tern.handle,
            "cluster.backend.upstream_cx_connect_attempts_exceeded"
        ),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn circuit_breaker_max_connections_overflows() {
    let a = Backend::start("a").await.unwrap();
    let yaml = bootstrap_yaml(
        "circuit_breakers: {thresholds: [{max_connections: 1}]}",
        &[(a.address, "")],
    );
    let tern = start(&yaml, 1).await;
    // Hold one connection open (greeting read proves it is established end to end).
    let mut held = tokio::net::TcpStream::connect(tern.proxy).await.unwrap();
    let mut greeting = [0u8; 2];
    held.read_exact(&mut greeting).await.unwrap();
    // The second is closed by the proxy without reaching the backend.
    let mut second = tokio::net::TcpStream::connect(tern.proxy).await.unwrap();
    let mut buf = Vec::new();
    second.read_to_end(&mut buf).await.unwrap();
    assert!(buf.is_empty());
    assert_eq!(
        stat(&tern.handle, "cluster.backend.upstream_cx_overflow"),
        1
    );
    assert_eq!(a.connections(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_spread_over_workers_and_each_stays_on_one() {
    let a = Backend::start("a").await.unwrap();
    let tern = start(&bootstrap_yaml("", &[(a.address, "")]), 2).await;
    let address = tern.proxy;
    // Many concurrent connections from separate sockets: SO_REUSEPORT hashes them over both workers.
    let mut clients = Vec::new();
    for _ in 0..200 {
        let mut s = tokio::net::TcpStream::connect(address).await.unwrap();
        let mut greeting = [0u8; 2];
        s.read_exact(&mut greeting).await.unwrap();
        clients.push(s);
    }
    let prefix = "listener.127.0.0.1_0";
    let w0 = stat(
        &tern.handle,
        &format!("{prefix}.worker_0.downstream_cx_active"),
    );
    let w1 = stat(
        &tern.handle,
        &format!("{prefix}.worker_1.downstream_cx_active"),
    );
    assert_eq!(w0 + w1, 200);
    assert!(w0 > 0 && w1 > 0, "all connections on one worker: {w0}/{w1}");
    // Traffic on the held connections does not move them: per-worker counts stay put.
    for s in &mut clients {
        s.write_all(b"x").await.unwrap();
        let mut echo = [0u8; 1];
        s.read_exact(&mut echo).await.unwrap();
    }
    assert_eq!(
        stat(
            &tern.handle,
            &format!("{prefix}.worker_0.downstream_cx_active")
        ),
        w0
    );
    assert_eq!(
        stat(
            &tern.handle,
            &format!("{prefix}.worker_0.downstream_cx_total")
        ),
        w0
    );
    assert_eq!(
        stat(
            &tern.handle,
            &format!("{prefix}.worker_1.downstream_cx_total")
        ),
        w1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_snapshot_swaps_under_load_fail_no_connection() {
    let a = Backend::start("a").await.unwrap();
    let b = Backend::start("b").await.unwrap();
    let tern = start(&bootstrap_yaml("", &[(a.address, "")]), 2).await;
    // Dynamic resources: a second listener and cluster replaced on every push.
    let push = |round: usize| {
        let target = if round.is_multiple_of(2) { &a } else { &b };
        let yaml = bootstrap_yaml(
            &format!("connect_timeout: {}s", 1 + round % 3),
            &[(target.address, "")],
        )
        .replace("name: tcp\n", "name: dyn\n")
        .replace(
            "stat_prefix: tcp",
            &format!("stat_prefix: dyn{}", round % 2),
        )
        .replace("name: backend", "name: dyn-backend")
        .replace("cluster: backend", "cluster: dyn-backend")
        .replace("cluster_name: backend", "cluster_name: dyn-backend");
        let source: bootstrap_proto::Bootstrap =
            proto_json::from_text(&yaml, "b.yaml", ReadOptions::default()).unwrap();
        let statics = source.static_resources.unwrap();
        (statics.listeners, statics.clusters)
    };
    let (listeners, clusters) = push(0);
    assert!(tern.handle.update(listeners, clusters).await.is_empty());
    let dynamic = tern.handle.listener_addresses().await["dyn"];
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut load = Vec::new();
    for target in [tern.proxy, dynamic, tern.proxy, dynamic] {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match round_trip(target, b"data").await {
                    Ok((_, echoed)) if echoed == b"data" => ok.fetch_add(1, Ordering::SeqCst),
                    _ => failed.fetch_add(1, Ordering::SeqCst),
                };
            }
        }));
    }
    for round in 1..=50 {
        let before = ok.load(Ordering::SeqCst);
        let (listeners, clusters) = push(round);
        assert!(tern.handle.update(listeners, clusters).await.is_empty());
        // Let traffic actually cross each version: wait until more connections completed.
        while ok.load(Ordering::SeqCst) < before + 8 {
            tokio::task::yield_now().await;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "{} succeeded",
        ok.load(Ordering::SeqCst)
    );
    assert!(ok.load(Ordering::SeqCst) >= 400);
    assert_eq!(stat(&tern.handle, "listener_manager.listener_modified"), 50);
    assert!(a.connections() > 0 && b.connections() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_listener_stops_accepting_and_drains_open_connections() {
    let a = Backend::start("a").await.unwrap();
    let tern = start(&bootstrap_yaml("", &[(a.address, "")]), 1).await;
    let yaml = bootstrap_yaml("", &[(a.address, "")])
        .replace("name: tcp\n", "name: dyn\n")
        .replace("stat_prefix: tcp", "stat_prefix: dyn");
    let source: bootstrap_proto::Bootstrap =
        proto_json::from_text(&yaml, "b.yaml", ReadOptions::default()).unwrap();
    let statics = source.static_resources.unwrap();
    assert!(
        tern.handle
            .update(statics.listeners, Vec::new())
            .await
            .is_empty()
    );
    let dynamic = tern.handle.listener_addresses().await["dyn"];
    let mut open = tokio::net::TcpStream::connect(dynamic).await.unwrap();
    let mut greeting = [0u8; 2];
    open.read_exact(&mut greeting).await.unwrap();
    // Remove it: new connections are refused, the open one still works until the drain deadline
    // (5 s here), then is closed.
    assert!(tern.handle.update(Vec::new(), Vec::new()).await.is_empty());
    let started = tokio::time::Instant::now();
    loop {
        match tokio::net::TcpStream::connect(dynamic).await {
            Err(_) => break,
            Ok(_) if started.elapsed() < Duration::from_secs(5) => tokio::task::yield_now().await,
            Ok(_) => panic!("removed listener still accepts"),
        }
    }
    open.write_all(b"still here").await.unwrap();
    let mut echo = [0u8; 10];
    open.read_exact(&mut echo).await.unwrap();
    assert_eq!(&echo, b"still here");
    let mut rest = Vec::new();
    open.read_to_end(&mut rest).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "closed before the drain deadline"
    );
    assert_eq!(stat(&tern.handle, "listener_manager.listener_removed"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_clusters_split_connections_by_weight() {
    let a = Backend::start("a").await.unwrap();
    let b = Backend::start("b").await.unwrap();
    let cluster = |name: &str, backend: &Backend| {
        format!(
            "  - {{name: {name}, load_assignment: {{cluster_name: {name}, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {}}}}}}}}}]}}]}}}}\n",
            backend.address.port()
        )
    };
    let yaml = format!(
        r#"
static_resources:
  listeners:
  - name: tcp
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          weighted_clusters: {{clusters: [{{name: ca, weight: 3}}, {{name: cb, weight: 1}}]}}
  clusters:
{}{}"#,
        cluster("ca", &a),
        cluster("cb", &b)
    );
    let tern = start(&yaml, 1).await;
    let counts = split(tern.proxy, 1000).await;
    // A random choice per connection: 750 expected for "a", standard deviation ~13.7.
    let to_a = counts.get("a").copied().unwrap_or(0);
    assert!((680..=820).contains(&to_a), "{counts:?}");
    assert_eq!(to_a + counts.get("b").copied().unwrap_or(0), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_a_silent_connection_and_counts_it() {
    let a = Backend::start("a").await.unwrap();
    let yaml = bootstrap_yaml("", &[(a.address, "")]).replace(
        "cluster: backend",
        "cluster: backend\n          idle_timeout: 0.3s",
    );
    let tern = start(&yaml, 1).await;
    let mut stream = tokio::net::TcpStream::connect(tern.proxy).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut received = Vec::new();
    // The backend's greeting is the only traffic; then both sides stay silent until the proxy closes.
    stream.read_to_end(&mut received).await.unwrap();
    assert_eq!(received, b"a\n");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "closed after {:?}",
        started.elapsed()
    );
    assert_eq!(stat(&tern.handle, "tcp.tcp.idle_timeout"), 1);
}
