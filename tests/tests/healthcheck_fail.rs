//! `POST /healthcheck/fail` and `/healthcheck/ok`, and the listener `drain_type` they interact
//! with, Tern against the real Envoy 1.40.0: while the server's health check is failed, `/ready`
//! answers 503 `DRAINING`, and every HTTP/1.1 response on a `DEFAULT` listener closes its
//! connection (existing keep-alive connections and new ones), while a `MODIFY_ONLY` listener
//! keeps its connections; `/healthcheck/ok` undoes it.

use std::net::SocketAddr;
use std::time::Duration;
use tern_tests::envoy::envoy_binary;
use tern_tests::prereq;
use tern_tests::process::{ProxyKind, ProxyProcess, tern_binary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(10);

fn listener(name: &str, drain_type: &str) -> String {
    format!(
        r#"
  - name: {name}
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    drain_type: {drain_type}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          # Envoy closes a drain-closed HTTP/1 connection after these (5 s and 1 s by default).
          drain_timeout: 0.1s
          delayed_close_timeout: 0.1s
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                direct_response: {{ status: 200, body: {{ inline_string: "ok" }} }}"#
    )
}

fn bootstrap() -> String {
    format!(
        "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}\nstatic_resources:\n  listeners:{}{}\n",
        listener("default", "DEFAULT"),
        listener("modify_only", "MODIFY_ONLY")
    )
}

/// One HTTP/1.1 exchange on `stream`: whether the response said `connection: close` (and then
/// the proxy closed the connection: checked).
async fn exchange(stream: &mut TcpStream) -> bool {
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .expect("write");
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let n = tokio::time::timeout(DEADLINE, stream.read(&mut buf))
            .await
            .expect("response in time")
            .expect("read");
        assert!(n > 0, "closed before a response");
        response.extend_from_slice(&buf[..n]);
        if let Some(at) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&response[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    while response.len() < head_end + 2 {
        let n = stream.read(&mut buf).await.expect("body");
        assert!(n > 0, "closed inside the body");
        response.extend_from_slice(&buf[..n]);
    }
    let says_close = head.contains("connection: close");
    if says_close {
        // Envoy closes after its delayed-close timeout (1 s); either way the peer ends it.
        let end = tokio::time::timeout(DEADLINE, stream.read(&mut buf)).await;
        assert!(
            matches!(end, Ok(Ok(0)) | Ok(Err(_))),
            "the connection closes after `connection: close`: {end:?}"
        );
    }
    says_close
}

async fn connect(address: SocketAddr) -> TcpStream {
    TcpStream::connect(address).await.expect("connect")
}

/// What one proxy does, step by step.
async fn observe(kind: ProxyKind) -> Vec<String> {
    let binary = match kind {
        ProxyKind::Envoy => envoy_binary().expect("checked"),
        ProxyKind::Tern => tern_binary(),
    };
    let proxy = ProxyProcess::start(kind, &binary, &bootstrap(), 1)
        .await
        .expect("proxy starts");
    let default = proxy.listener_address("default").await.expect("default");
    let modify_only = proxy.listener_address("modify_only").await.expect("modify");
    let mut steps = Vec::new();
    let mut record = |step: &str, value: String| steps.push(format!("{step}: {value}"));

    let mut kept_default = connect(default).await;
    let mut kept_modify = connect(modify_only).await;
    record(
        "before, default",
        format!("{:?}", exchange(&mut kept_default).await),
    );
    record(
        "before, modify_only",
        format!("{:?}", exchange(&mut kept_modify).await),
    );

    record(
        "fail",
        format!(
            "{:?}",
            proxy.post("/healthcheck/fail").await.expect("admin")
        ),
    );
    record(
        "ready",
        format!("{:?}", proxy.get("/ready").await.expect("admin")),
    );
    let (_, stats) = proxy
        .get("/stats?filter=^server\\.live$")
        .await
        .expect("stats");
    record("stats", stats);
    record(
        "kept default",
        format!("{:?}", exchange(&mut kept_default).await),
    );
    record(
        "kept modify_only",
        format!("{:?}", exchange(&mut kept_modify).await),
    );
    record(
        "new default",
        format!("{:?}", exchange(&mut connect(default).await).await),
    );
    record(
        "new modify_only",
        format!("{:?}", exchange(&mut connect(modify_only).await).await),
    );

    record(
        "ok",
        format!("{:?}", proxy.post("/healthcheck/ok").await.expect("admin")),
    );
    record(
        "ready again",
        format!("{:?}", proxy.get("/ready").await.expect("admin")),
    );
    record(
        "new default after ok",
        format!("{:?}", exchange(&mut connect(default).await).await),
    );
    steps
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_fail_drains_default_listeners_as_envoy_does() {
    if !prereq::require(envoy_binary().is_some(), "Envoy 1.40.0 not installed") {
        return;
    }
    let envoy = observe(ProxyKind::Envoy).await;
    let expected = [
        "before, default: false",
        "before, modify_only: false",
        "fail: (200, \"OK\\n\")",
        "ready: (503, \"DRAINING\\n\")",
        "stats: server.live: 0\n",
        "kept default: true",
        "kept modify_only: false",
        "new default: true",
        "new modify_only: false",
        "ok: (200, \"OK\\n\")",
        "ready again: (200, \"LIVE\\n\")",
        "new default after ok: false",
    ];
    assert_eq!(envoy, expected, "Envoy's behaviour (the reference)");
    let tern = observe(ProxyKind::Tern).await;
    assert_eq!(tern, expected, "Tern");
}
