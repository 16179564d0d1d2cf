//! Filter chain selection on a live listener: tls_inspector reads SNI and ALPN from a real rustls
//! ClientHello, http_inspector recognises HTTP/1.1, and each connection lands on the chain
//! Envoy's rules pick. The bytes the inspectors read are still delivered upstream.

// Test harness code: an unwrap that fails is a failed test, with its message.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use tern_tests::backend::Backend;
use tern_tests::inprocess::Running;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

fn chain(name: &str, matcher: &str, cluster: &str) -> String {
    format!(
        r#"    - name: {name}
      filter_chain_match: {matcher}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: {cluster}, cluster: {cluster}}}
"#
    )
}

fn cluster(name: &str, backend: &Backend) -> String {
    format!(
        "  - {{name: {name}, load_assignment: {{cluster_name: {name}, endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {}}}}}}}}}]}}]}}}}\n",
        backend.address.port()
    )
}

/// A ClientHello as rustls sends it, for `server_name` offering `alpn`.
fn client_hello(server_name: &str, alpn: &[&[u8]]) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let name =
        rustls::pki_types::ServerName::try_from(server_name.to_string()).expect("server name");
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).expect("client connection");
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("write ClientHello");
    hello
}

/// Sends `first_bytes` and returns the name of the backend that answered.
async fn landed_on(proxy: std::net::SocketAddr, first_bytes: &[u8]) -> String {
    let stream = TcpStream::connect(proxy).await.expect("connect");
    let mut stream = BufReader::new(stream);
    stream
        .get_mut()
        .write_all(first_bytes)
        .await
        .expect("write");
    let mut line = String::new();
    stream.read_line(&mut line).await.expect("greeting");
    line.trim_end().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_land_on_the_chain_envoy_would_pick() {
    let names = ["exact", "wildcard", "h2_tls", "any_tls", "http", "plain"];
    let mut backends = Vec::new();
    for name in names {
        backends.push(Backend::start(name).await.unwrap());
    }
    let chains = [
        chain("exact", "{server_names: [api.example.com]}", "exact"),
        chain("wildcard", "{server_names: ['*.example.com']}", "wildcard"),
        chain(
            "h2_tls",
            "{transport_protocol: tls, application_protocols: [h2]}",
            "h2_tls",
        ),
        chain("any_tls", "{transport_protocol: tls}", "any_tls"),
        chain("http", "{application_protocols: [http/1.1]}", "http"),
    ]
    .concat();
    let clusters: String = names
        .iter()
        .zip(&backends)
        .map(|(n, b)| cluster(n, b))
        .collect();
    let yaml = format!(
        r#"
static_resources:
  listeners:
  - name: inspected
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    listener_filters:
    - {{name: envoy.filters.listener.tls_inspector, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}}}
    - {{name: envoy.filters.listener.http_inspector, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector}}}}
    filter_chains:
{chains}    default_filter_chain:
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: plain, cluster: plain}}
  clusters:
{clusters}"#
    );
    let tern = Running::start(&yaml, 1).await;
    let proxy = tern.listener("inspected").await;

    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "exact SNI beats the wildcard",
            client_hello("api.example.com", &[b"h2"]),
            "exact",
        ),
        (
            "wildcard SNI",
            client_hello("www.example.com", &[]),
            "wildcard",
        ),
        (
            "server name level has no fall back: an unmatched SNI goes to chains without names",
            client_hello("other.test", &[b"h2", b"http/1.1"]),
            "h2_tls",
        ),
        (
            "TLS without a matching ALPN",
            client_hello("other.test", &[b"istio-peer-exchange"]),
            "any_tls",
        ),
        (
            "http_inspector",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            "http",
        ),
        (
            "raw bytes take the default chain",
            b"\x00\x01 not http\r\n".to_vec(),
            "plain",
        ),
    ];
    for (what, bytes, expected) in cases {
        assert_eq!(landed_on(proxy, &bytes).await, expected, "{what}");
    }
    assert_eq!(tern.stat("listener.127.0.0.1_0.no_filter_chain_match"), 0);
    // The inspected bytes were replayed to the backend: the TLS case's backend got the hello.
    assert_eq!(
        tern.stat("tcp.exact.downstream_cx_rx_bytes_total") as usize,
        client_hello("api.example.com", &[b"h2"]).len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_chain_and_no_default_closes_the_connection() {
    let backend = Backend::start("tls-only").await.unwrap();
    let yaml = format!(
        r#"
static_resources:
  listeners:
  - name: l
    address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
    listener_filters:
    - {{name: envoy.filters.listener.tls_inspector, typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}}}
    filter_chains:
{chain}  clusters:
{cluster}"#,
        chain = chain("tls", "{transport_protocol: tls}", "tls"),
        cluster = cluster("tls", &backend),
    );
    let tern = Running::start(&yaml, 1).await;
    let proxy = tern.listener("l").await;
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.write_all(b"plain text\n").await.unwrap();
    let mut rest = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut rest)
        .await
        .unwrap();
    assert!(rest.is_empty());
    assert_eq!(tern.stat("listener.127.0.0.1_0.no_filter_chain_match"), 1);
    assert_eq!(backend.connections(), 0);
}
