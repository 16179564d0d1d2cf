//! RING_HASH and MAGLEV through tcp_proxy with `hash_policy: source_ip`: a client IP always
//! reaches the same host, and removing one of N hosts moves that host's clients and few others.
//! Clients take 200 distinct source addresses from 127.0.0.0/8.

// Test harness code: an unwrap that fails is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tern_tests::backend::Backend;
use tern_tests::inprocess::Running;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpSocket;
use xds_client::pb::envoy::config::bootstrap::v3 as bootstrap_proto;
use xds_client::proto_json::{self, ReadOptions};

const CLIENTS: u8 = 200;

fn yaml(policy: &str, hosts: &[&Backend]) -> String {
    let endpoints: String = hosts
        .iter()
        .map(|b| format!("{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {}}}}}}}}},", b.address.port()))
        .collect();
    format!(
        r#"
static_resources:
  listeners:
  - name: hashed
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: hashed, cluster: pool, hash_policy: [{{source_ip: {{}}}}]}}
  clusters:
  - name: pool
    lb_policy: {policy}
    load_assignment: {{cluster_name: pool, endpoints: [{{lb_endpoints: [{endpoints}]}}]}}
"#
    )
}

/// Which backend each client source address reaches.
async fn placement(proxy: SocketAddr) -> HashMap<u8, String> {
    let mut out = HashMap::new();
    for i in 0..CLIENTS {
        let source = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 0, 1, i)), 0);
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(source).unwrap();
        let stream = socket.connect(proxy).await.unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).await.unwrap();
        out.insert(i, line.trim_end().to_string());
    }
    out
}

async fn check(policy: &str, survivor_move_bound: f64) {
    let mut backends = Vec::new();
    for name in ["h0", "h1", "h2", "h3"] {
        backends.push(Backend::start(name).await.unwrap());
    }
    let all: Vec<&Backend> = backends.iter().collect();
    let tern = Running::start(&yaml(policy, &all), 1).await;
    let proxy = tern.listener("hashed").await;
    let before = placement(proxy).await;
    // The same client always reaches the same host.
    assert_eq!(
        placement(proxy).await,
        before,
        "{policy}: placement is not stable"
    );
    let used: std::collections::HashSet<_> = before.values().collect();
    assert_eq!(
        used.len(),
        4,
        "{policy}: clients did not spread over all hosts: {used:?}"
    );

    // Remove h3: push the same cluster with three hosts as a dynamic update of the listener.
    let three: Vec<&Backend> = backends.iter().take(3).collect();
    let source: bootstrap_proto::Bootstrap = proto_json::from_text(
        &yaml(policy, &three)
            .replace("name: hashed\n", "name: hashed3\n")
            .replace("name: pool", "name: pool3")
            .replace("cluster: pool", "cluster: pool3")
            .replace("cluster_name: pool", "cluster_name: pool3"),
        "b.yaml",
        ReadOptions::default(),
    )
    .unwrap();
    let statics = source.static_resources.unwrap();
    assert!(
        tern.handle
            .update(statics.listeners, statics.clusters)
            .await
            .is_empty()
    );
    let after = placement(tern.listener("hashed3").await).await;

    let on_removed: Vec<u8> = before
        .iter()
        .filter(|(_, h)| *h == "h3")
        .map(|(c, _)| *c)
        .collect();
    assert!(
        on_removed.iter().all(|c| after[c] != "h3"),
        "{policy}: a client stayed on the removed host"
    );
    let survivors: Vec<u8> = before
        .iter()
        .filter(|(_, h)| *h != "h3")
        .map(|(c, _)| *c)
        .collect();
    let moved = survivors.iter().filter(|c| after[c] != before[c]).count();
    let fraction = moved as f64 / survivors.len() as f64;
    assert!(
        fraction <= survivor_move_bound,
        "{policy}: {moved} of {} clients on surviving hosts moved ({fraction:.2} > {survivor_move_bound})",
        survivors.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maglev_keeps_clients_on_their_host() {
    // Maglev's table changes little beyond the removed host's slots.
    check("MAGLEV", 0.10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_hash_keeps_clients_on_their_host() {
    // Envoy's ring rescales when a host leaves (each survivor gains points), so some keys move
    // between survivors: about a quarter of the ring gets new points with 4 -> 3 hosts.
    check("RING_HASH", 0.35).await;
}
