//! The HTTP data path end to end with real sockets: Tern in-process with a connection manager,
//! real hyper backends behind it. Protocol translation (HTTP/1.1 ⇄ HTTP/2), websocket upgrade,
//! retries to another host, timeouts, circuit breakers and Envoy's local replies.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use tern_tests::bootstrap::{HttpBootstrap, static_cluster};
use tern_tests::http_backend::{self, HttpBackend, Protocol, Request, held_backend};
use tern_tests::inprocess::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn bootstrap(routes: &str, clusters: &str) -> String {
    HttpBootstrap {
        hcm: "          upgrade_configs: [{ upgrade_type: websocket }]",
        routes,
        clusters,
        ..Default::default()
    }
    .yaml()
}

async fn get(proxy: SocketAddr, path: &str, headers: &[(&str, &str)]) -> http_backend::Response {
    http_backend::http_request(proxy, "GET", "test.local", path, headers)
        .await
        .expect("request completes")
}

/// A backend that answers every request with `status` and a body naming it.
async fn fixed_status(status: u16) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(move |_req| async move {
                    let mut r =
                        hyper::Response::new(Full::new(Bytes::from(format!("status {status}"))));
                    *r.status_mut() = hyper::StatusCode::from_u16(status).expect("valid status");
                    Ok::<_, Infallible>(r)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

/// A port nothing listens on (bound, then released).
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("address")
}

#[tokio::test]
async fn http1_client_reaches_http2_upstream_and_h2c_client_reaches_http1_upstream() {
    let h2 = HttpBackend::start("h2").await.expect("backend");
    let h1 = HttpBackend::start("h1").await.expect("backend");
    let h2_options = "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n        explicit_http_config: { http2_protocol_options: {} }\n";
    let routes = "              - match: { prefix: /to-h2 }\n                route: { cluster: h2 }\n              - match: { prefix: / }\n                route: { cluster: h1 }\n";
    let clusters =
        static_cluster("h2", &[h2.address], h2_options) + &static_cluster("h1", &[h1.address], "");
    let tern = Running::start(&bootstrap(routes, &clusters), 1).await;
    let proxy = tern.listener("http").await;

    let r = get(proxy, "/to-h2/x?y=1", &[]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let json = r.json.expect("backend answered");
    assert_eq!(json["backend"], "h2");
    assert_eq!(json["version"], "HTTP/2");
    assert_eq!(json["path"], "/to-h2/x?y=1");
    assert_eq!(json["authority"], "test.local");
    assert!(
        json["headers"]["x-request-id"][0]
            .as_str()
            .is_some_and(|v| v.len() == 36)
    );
    assert_eq!(json["headers"]["x-forwarded-proto"][0], "http");
    assert_eq!(
        json["headers"]["x-envoy-expected-rq-timeout-ms"][0],
        "15000"
    );
    assert_eq!(r.headers["server"], "envoy");
    assert!(r.headers.contains_key("x-envoy-upstream-service-time"));

    let r = http_backend::http2_request(proxy, "GET", "test.local", "/plain", &[])
        .await
        .expect("h2c request");
    assert_eq!(r.status, 200, "{}", r.text());
    let json = r.json.expect("backend answered");
    assert_eq!(json["backend"], "h1");
    assert_eq!(json["version"], "HTTP/1.1");
    assert_eq!(json["authority"], "test.local");
    assert_eq!(tern.stat("http.ingress.downstream_rq_2xx"), 2);
    assert_eq!(tern.stat("cluster.h2.upstream_cx_http2_total"), 1);
    assert_eq!(tern.stat("cluster.h1.upstream_rq_200"), 1);
}

#[tokio::test]
async fn keep_alive_connections_are_reused() {
    let a = HttpBackend::start("a").await.expect("backend");
    let routes = "              - match: { prefix: / }\n                route: { cluster: a }\n";
    let tern = Running::start(
        &bootstrap(routes, &static_cluster("a", &[a.address], "")),
        1,
    )
    .await;
    let proxy = tern.listener("http").await;
    for _ in 0..5 {
        assert_eq!(get(proxy, "/", &[]).await.status, 200);
    }
    assert_eq!(a.requests(), 5);
    assert_eq!(
        tern.stat("cluster.a.upstream_cx_total"),
        1,
        "one pooled connection"
    );
    assert_eq!(tern.stat("cluster.a.upstream_rq_total"), 5);
}

#[tokio::test]
async fn retries_go_to_another_host_on_503_and_connect_failure() {
    let good = HttpBackend::start("good").await.expect("backend");
    let failing = fixed_status(503).await;
    let refused = closed_port().await;
    let routes = "              - match: { prefix: / }\n                route:\n                  cluster: svc\n                  retry_policy:\n                    retry_on: 5xx,connect-failure\n                    num_retries: 2\n                    retry_host_predicate: [{ name: envoy.retry_host_predicates.previous_hosts, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate } }]\n                    host_selection_retry_max_attempts: 5\n";
    let clusters = static_cluster("svc", &[failing, refused, good.address], "");
    let tern = Running::start(&bootstrap(routes, &clusters), 1).await;
    let proxy = tern.listener("http").await;
    for i in 0..6 {
        let r = get(proxy, "/", &[]).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(r.json.expect("backend")["backend"], "good");
    }
    assert_eq!(good.requests(), 6);
    assert!(tern.stat("cluster.svc.upstream_rq_retry") >= 6);
    assert!(tern.stat("cluster.svc.upstream_cx_connect_fail") >= 1);
    assert!(tern.stat("cluster.svc.upstream_rq_503") >= 1);
}

#[tokio::test]
async fn without_retry_policy_a_503_passes_through_and_refused_connect_is_uf() {
    let failing = fixed_status(503).await;
    let refused = closed_port().await;
    let routes = "              - match: { prefix: /f }\n                route: { cluster: failing }\n              - match: { prefix: /r }\n                route: { cluster: refused }\n";
    let clusters =
        static_cluster("failing", &[failing], "") + &static_cluster("refused", &[refused], "");
    let tern = Running::start(&bootstrap(routes, &clusters), 1).await;
    let proxy = tern.listener("http").await;
    let r = get(proxy, "/f", &[]).await;
    assert_eq!((r.status, r.text().as_str()), (503, "status 503"));
    let r = get(proxy, "/r", &[]).await;
    assert_eq!(r.status, 503);
    assert!(
        r.text()
            .starts_with("upstream connect error or disconnect/reset before headers"),
        "{}",
        r.text()
    );
    assert_eq!(tern.stat("cluster.refused.upstream_cx_connect_fail"), 1);
}

#[tokio::test]
async fn route_timeout_answers_504() {
    let slow = HttpBackend::start("slow").await.expect("backend");
    let routes = "              - match: { prefix: / }\n                route: { cluster: slow, timeout: 0.2s }\n";
    let tern = Running::start(
        &bootstrap(routes, &static_cluster("slow", &[slow.address], "")),
        1,
    )
    .await;
    let proxy = tern.listener("http").await;
    let r = get(proxy, "/", &[("x-backend-delay-ms", "3000")]).await;
    assert_eq!(
        (r.status, r.text().as_str()),
        (504, "upstream request timeout")
    );
    assert_eq!(tern.stat("cluster.slow.upstream_rq_timeout"), 1);
    // A trusted caller may shorten it with x-envoy-upstream-rq-timeout-ms.
    let r = get(
        proxy,
        "/",
        &[
            ("x-backend-delay-ms", "3000"),
            ("x-envoy-upstream-rq-timeout-ms", "100"),
        ],
    )
    .await;
    assert_eq!(r.status, 504);
}

#[tokio::test]
async fn local_replies_match_envoy() {
    let a = HttpBackend::start("a").await.expect("backend");
    let routes = "              - match: { prefix: /nc }\n                route: { cluster: missing }\n              - match: { prefix: /uh }\n                route: { cluster: empty }\n              - match: { prefix: /a }\n                route: { cluster: a }\n";
    let clusters = static_cluster("a", &[a.address], "") + &static_cluster("empty", &[], "");
    let tern = Running::start(&bootstrap(routes, &clusters), 1).await;
    let proxy = tern.listener("http").await;
    assert_eq!(get(proxy, "/nowhere", &[]).await.status, 404);
    assert_eq!(tern.stat("http.ingress.no_route"), 1);
    assert_eq!(get(proxy, "/nc", &[]).await.status, 503);
    assert_eq!(tern.stat("http.ingress.no_cluster"), 1);
    let r = get(proxy, "/uh", &[]).await;
    assert_eq!((r.status, r.text().as_str()), (503, "no healthy upstream"));
    // A gRPC caller gets a trailers-only gRPC error instead.
    let r = get(proxy, "/uh", &[("content-type", "application/grpc")]).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.headers["grpc-status"], "14");

    // 61 KiB of headers is over the 60 KiB default.
    let big = "x".repeat(61 * 1024);
    let r = get(proxy, "/a", &[("x-big", &big)]).await;
    assert_eq!(r.status, 431);
    assert_eq!(a.requests(), 0);

    // A malformed request line gets 400.
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    stream
        .write_all(b"GET /a HTTP/1.1 extra\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
}

#[tokio::test]
async fn max_requests_circuit_breaker_overflows_with_503() {
    let (held, mut arrived, release) = held_backend().await;
    let breakers = "    circuit_breakers: { thresholds: [{ max_requests: 1 }] }\n";
    let routes = "              - match: { prefix: / }\n                route: { cluster: slow }\n";
    let tern = Running::start(
        &bootstrap(routes, &static_cluster("slow", &[held], breakers)),
        1,
    )
    .await;
    let proxy = tern.listener("http").await;
    let first = tokio::spawn(async move { get(proxy, "/", &[]).await });
    // The second request goes once the first is held at the backend (one request active).
    arrived
        .recv()
        .await
        .expect("first request reached the backend");
    let second = get(proxy, "/", &[]).await;
    assert_eq!(second.status, 503);
    assert!(
        second.text().ends_with("reset reason: overflow"),
        "{}",
        second.text()
    );
    assert_eq!(tern.stat("cluster.slow.upstream_rq_pending_overflow"), 1);
    release.notify_one();
    assert_eq!(first.await.expect("first").status, 200);
}

/// An upstream that accepts websocket upgrades and then echoes bytes.
async fn upgrade_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(
                    |mut req: hyper::Request<hyper::body::Incoming>| async move {
                        let upgrade = hyper::upgrade::on(&mut req);
                        tokio::spawn(async move {
                            if let Ok(upgraded) = upgrade.await {
                                let mut io = TokioIo::new(upgraded);
                                let mut buf = [0u8; 64];
                                while let Ok(n) = io.read(&mut buf).await {
                                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            }
                        });
                        let mut r = hyper::Response::new(Full::new(Bytes::new()));
                        *r.status_mut() = hyper::StatusCode::SWITCHING_PROTOCOLS;
                        r.headers_mut()
                            .insert("upgrade", "websocket".parse().expect("value"));
                        r.headers_mut()
                            .insert("connection", "upgrade".parse().expect("value"));
                        Ok::<_, Infallible>(r)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    address
}

#[tokio::test]
async fn websocket_upgrade_relays_bytes_both_ways() {
    let ws = upgrade_echo().await;
    let routes = "              - match: { prefix: / }\n                route: { cluster: ws }\n";
    let tern = Running::start(&bootstrap(routes, &static_cluster("ws", &[ws], "")), 1).await;
    let proxy = tern.listener("http").await;
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    stream
        .write_all(b"GET /chat HTTP/1.1\r\nHost: test.local\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        .await
        .expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).await.expect("read"),
            1,
            "closed early: {head:?}"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    stream.write_all(b"ping-through-tern").await.expect("write");
    let mut echoed = [0u8; 17];
    stream.read_exact(&mut echoed).await.expect("echo");
    assert_eq!(&echoed, b"ping-through-tern");
}

#[tokio::test]
async fn request_body_is_forwarded_and_replayed_on_retry() {
    let good = HttpBackend::start("good").await.expect("backend");
    let failing = fixed_status(503).await;
    let routes = "              - match: { prefix: / }\n                route:\n                  cluster: svc\n                  retry_policy: { retry_on: 5xx, num_retries: 3, retry_host_predicate: [{ name: envoy.retry_host_predicates.previous_hosts, typed_config: { \"@type\": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate } }] }\n";
    let tern = Running::start(
        &bootstrap(routes, &static_cluster("svc", &[failing, good.address], "")),
        1,
    )
    .await;
    let proxy = tern.listener("http").await;
    let body = vec![b'z'; 10_000];
    for protocol in [Protocol::Http1, Protocol::Http2] {
        let request = Request {
            method: "POST",
            authority: "test.local",
            path: "/upload",
            headers: &[("content-length", "10000")],
            body: &body,
        };
        let r = http_backend::send(proxy, protocol, &request)
            .await
            .expect("request");
        assert_eq!(r.status, 200, "{protocol:?}: {}", r.text());
        assert_eq!(r.json.expect("backend")["body_len"], 10_000);
    }
    // A chunked body of unknown length is copied as it streams and replayed too.
    for _ in 0..2 {
        let mut stream = TcpStream::connect(proxy).await.expect("connect");
        stream
            .write_all(
                b"POST /chunked HTTP/1.1\r\nhost: test.local\r\ntransfer-encoding: chunked\r\n\r\n\
                  5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            )
            .await
            .expect("write");
        let mut head = vec![0; 4096];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut head))
            .await
            .expect("a response")
            .expect("read");
        let text = String::from_utf8_lossy(&head[..n]);
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.contains(r#""body_len":11"#), "{text}");
    }
    assert!(good.requests() >= 4);
}

#[tokio::test]
async fn retry_circuit_breaker_overflows() {
    let failing = fixed_status(503).await;
    let breakers = "    circuit_breakers: { thresholds: [{ max_retries: 0 }] }\n";
    let routes = "              - match: { prefix: / }\n                route: { cluster: svc, retry_policy: { retry_on: 5xx, num_retries: 3 } }\n";
    let tern = Running::start(
        &bootstrap(routes, &static_cluster("svc", &[failing], breakers)),
        1,
    )
    .await;
    let proxy = tern.listener("http").await;
    // The 503 would be retried, but no retry slot is free.
    let r = get(proxy, "/", &[]).await;
    assert_eq!((r.status, r.text().as_str()), (503, "status 503"));
    assert_eq!(tern.stat("cluster.svc.upstream_rq_retry_overflow"), 1);
    assert_eq!(tern.stat("cluster.svc.upstream_rq_retry"), 0);
    assert_eq!(tern.stat("cluster.svc.upstream_rq_total"), 1);
}

#[tokio::test]
async fn access_log_writes_envoys_default_line_when_the_response_ends() {
    let a = HttpBackend::start("a").await.expect("backend");
    let path = std::env::temp_dir().join(format!(
        "tern-access-{}-{}.log",
        std::process::id(),
        a.address.port()
    ));
    let _ = std::fs::remove_file(&path);
    let routes = "              - match: { prefix: /old }\n                route: { cluster: a, prefix_rewrite: /new }\n";
    let with_log = bootstrap(routes, &static_cluster("a", &[a.address], "")).replace(
        "          upgrade_configs:",
        &format!(
            "          access_log:\n          - name: envoy.access_loggers.file\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog\n              path: {}\n          upgrade_configs:",
            path.display()
        ),
    );
    let tern = Running::start(&with_log, 1).await;
    let proxy = tern.listener("http").await;
    let r = get(
        proxy,
        "/old/x",
        &[("user-agent", "probe/1"), ("x-request-id", "rid-1")],
    )
    .await;
    assert_eq!(r.status, 200);
    let nothing = get(proxy, "/missing", &[]).await;
    assert_eq!(nothing.status, 404);
    assert!(tern::http::access_log::flush_all(), "writer confirmed");
    let text = std::fs::read_to_string(&path).expect("log written");
    let _ = std::fs::remove_file(&path);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    let upstream = a.address.to_string();
    let first = lines[0];
    // [time] "GET /old/x HTTP/1.1" 200 - 0 <bytes> <ms> <ms> "-" "probe/1" "rid-1" "test.local" "<host>"
    assert!(first.starts_with('['), "{first}");
    let after_time = &first[first.find("] ").expect("time") + 2..];
    assert!(
        after_time.starts_with("\"GET /old/x HTTP/1.1\" 200 - 0 "),
        "{first}"
    );
    assert!(
        after_time.ends_with(&format!(
            "\"-\" \"probe/1\" \"rid-1\" \"test.local\" \"{upstream}\""
        )),
        "{first}"
    );
    let bytes_sent: u64 = after_time
        .split(" ")
        .nth(6)
        .and_then(|b| b.parse().ok())
        .expect("bytes");
    assert_eq!(bytes_sent, r.body.len() as u64);
    assert!(
        lines[1].contains("\"GET /missing HTTP/1.1\" 404 NR 0 0 "),
        "{}",
        lines[1]
    );
}

#[tokio::test]
async fn requests_abandoned_by_their_clients_leave_no_active_gauges_behind() {
    const CLIENTS: usize = 20;
    let (held, mut arrived, _release) = held_backend().await;
    let routes = "              - match: { prefix: / }\n                route: { cluster: held }\n";
    let tern = Running::start(&bootstrap(routes, &static_cluster("held", &[held], "")), 1).await;
    let proxy = tern.listener("http").await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut stream = TcpStream::connect(proxy).await.expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: test.local\r\n\r\n")
            .await
            .expect("write");
        arrived.recv().await.expect("request reached the backend");
        clients.push(stream);
    }
    assert_eq!(
        tern.stat("http.ingress.downstream_rq_active"),
        CLIENTS as i64
    );
    // Every client leaves before its response: each stream ends, and so does its count.
    drop(clients);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while tern.stat("http.ingress.downstream_cx_active") != 0
        || tern.stat("cluster.held.upstream_rq_active") != 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections never ended"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(
        tern.stat("http.ingress.downstream_rq_total"),
        CLIENTS as i64
    );
    assert_eq!(tern.stat("http.ingress.downstream_rq_completed"), 0);
    assert_eq!(tern.stat("http.ingress.downstream_rq_active"), 0);
}
