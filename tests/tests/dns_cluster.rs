//! STRICT_DNS and LOGICAL_DNS clusters resolve host names with the system resolver and route to
//! what they find. `localhost` resolves from /etc/hosts, so no network is involved.

// Test harness code: an unwrap that fails is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use tern_tests::backend::{Backend, round_trip};
use tern_tests::dns_server::TestDns;
use tern_tests::inprocess::Running;

fn yaml(kind: &str, port: u16) -> String {
    format!(
        r#"
static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: l, cluster: named}}
  clusters:
  - name: named
    type: {kind}
    dns_lookup_family: V4_ONLY
    dns_refresh_rate: 1s
    load_assignment: {{cluster_name: named, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: localhost, port_value: {port}}}}}}}}}]}}]}}
"#
    )
}

async fn resolves_and_routes(kind: &str) {
    let backend = Backend::start(kind).await.unwrap();
    let tern = Running::start(&yaml(kind, backend.address.port()), 1).await;
    let proxy = tern.listener("l").await;
    // Until the first answer the cluster has no hosts; wait for membership, then route.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while tern.stat("cluster.named.membership_total") < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{kind}: localhost never resolved"
        );
        tokio::task::yield_now().await;
    }
    let (name, echoed) = round_trip(proxy, b"dns").await.unwrap();
    assert_eq!(
        (name.as_str(), echoed.as_slice()),
        (kind, b"dns".as_slice())
    );
    let cluster = tern.handle.snapshot().clusters["named"].clone();
    let hosts: Vec<String> = cluster
        .hosts
        .iter()
        .map(|h| h.endpoint.address.to_string())
        .collect();
    assert_eq!(hosts, [format!("127.0.0.1:{}", backend.address.port())]);
    assert_eq!(cluster.hosts[0].endpoint.hostname, "localhost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_dns_resolves_localhost_and_routes() {
    resolves_and_routes("STRICT_DNS").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_dns_resolves_localhost_and_routes() {
    resolves_and_routes("LOGICAL_DNS").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn respect_dns_ttl_re_resolves_when_the_ttl_runs_out() {
    // Two backends on one port of two loopback addresses; the name moves from the first to the
    // second. The refresh rate is an hour, so only a respected 1 s TTL can move the traffic.
    let first = Backend::start("first").await.unwrap();
    let port = first.address.port();
    let second = Backend::start_on("second", SocketAddr::from(([127, 0, 0, 2], port)))
        .await
        .unwrap();
    let dns = TestDns::start("svc.test", Ipv4Addr::new(127, 0, 0, 1), 1)
        .await
        .unwrap();
    let yaml = format!(
        r#"
static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: l, cluster: named}}
  clusters:
  - name: named
    type: STRICT_DNS
    respect_dns_ttl: true
    dns_refresh_rate: 3600s
    dns_lookup_family: V4_ONLY
    typed_dns_resolver_config:
      name: envoy.network.dns_resolver.cares
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.network.dns_resolver.cares.v3.CaresDnsResolverConfig
        resolvers: [{{socket_address: {{address: 127.0.0.1, port_value: {dns_port}}}}}]
    load_assignment: {{cluster_name: named, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: svc.test, port_value: {port}}}}}}}}}]}}]}}
"#,
        dns_port = dns.address.port()
    );
    let tern = Running::start(&yaml, 1).await;
    let proxy = tern.listener("l").await;
    let reaches = |expected: &'static str| async move {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if let Ok((name, _)) = round_trip(proxy, b"x").await
                && name == expected
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "traffic never reached {expected}"
            );
            tokio::task::yield_now().await;
        }
    };
    reaches("first").await;
    dns.set_answer(Ipv4Addr::new(127, 0, 0, 2));
    reaches("second").await;
    assert!(dns.queries() >= 2, "{} queries", dns.queries());
    assert_eq!(second.address.ip(), IpAddr::from([127, 0, 0, 2]));
}
