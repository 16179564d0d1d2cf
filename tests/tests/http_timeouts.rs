//! The connection manager's downstream timers, with real sockets: `stream_idle_timeout`,
//! `request_timeout`, `max_stream_duration` (local replies as Envoy 1.40.0 sends them: 504 when
//! the request had fully arrived, else 408 and the connection closes; a reset once the response
//! started) and the connection `idle_timeout`.
//!
//! Timer values are short (hundreds of milliseconds); each test waits on the observable result
//! (a response, an end of stream), never on a clock of its own.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use tern_tests::bootstrap::{HttpBootstrap, route_all, static_cluster};
use tern_tests::http_backend::{self, HttpBackend};
use tern_tests::inprocess::Running;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn start(hcm: &str, backend: SocketAddr) -> (Running, SocketAddr) {
    // The route timeout is off so only the downstream timers act.
    let yaml = HttpBootstrap {
        hcm,
        routes: &route_all("backend", "timeout: 0s"),
        clusters: &static_cluster("backend", &[backend], ""),
        ..Default::default()
    }
    .yaml();
    let tern = Running::start(&yaml, 1).await;
    let proxy = tern.listener("http").await;
    (tern, proxy)
}

/// A backend that accepts connections and never answers.
async fn silent_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    address
}

/// A backend that sends response headers and one body chunk, then stalls forever.
async fn stalling_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, Infallible>(hyper::Response::new(Stalling { sent: false }))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

/// One data chunk, then nothing, ever.
struct Stalling {
    sent: bool,
}

impl hyper::body::Body for Stalling {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent {
            return std::task::Poll::Pending;
        }
        self.sent = true;
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"first chunk")))))
    }
}

/// Sends raw bytes on a new connection and reads until the proxy closes it (bounded).
async fn raw_until_close(proxy: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    stream.write_all(bytes).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut out),
    )
    .await
    .expect("the proxy closes the connection")
    .expect("read");
    String::from_utf8_lossy(&out).into_owned()
}

async fn get(proxy: SocketAddr) -> http_backend::Response {
    http_backend::http_request(proxy, "GET", "test.local", "/", &[])
        .await
        .expect("request completes")
}

#[tokio::test]
async fn stream_idle_timeout_while_waiting_for_the_upstream_answers_504() {
    let (tern, proxy) = start(
        "          stream_idle_timeout: 0.2s",
        silent_backend().await,
    )
    .await;
    let response = get(proxy).await;
    assert_eq!(response.status, 504);
    assert_eq!(response.text(), "stream timeout");
    assert_eq!(tern.stat("http.ingress.downstream_rq_idle_timeout"), 1);
}

#[tokio::test]
async fn stream_idle_timeout_while_the_request_arrives_answers_408_and_closes() {
    let (tern, proxy) = start(
        "          stream_idle_timeout: 0.2s",
        silent_backend().await,
    )
    .await;
    let text = raw_until_close(
        proxy,
        b"POST / HTTP/1.1\r\nhost: test.local\r\ncontent-length: 10\r\n\r\nabc",
    )
    .await;
    assert!(
        text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{text}"
    );
    assert!(text.contains("\r\nconnection: close\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nstream timeout"), "{text}");
    assert_eq!(tern.stat("http.ingress.downstream_rq_idle_timeout"), 1);
}

#[tokio::test]
async fn request_timeout_answers_408() {
    let (tern, proxy) = start("          request_timeout: 0.2s", silent_backend().await).await;
    let text = raw_until_close(
        proxy,
        b"POST / HTTP/1.1\r\nhost: test.local\r\ncontent-length: 10\r\n\r\nabc",
    )
    .await;
    assert!(
        text.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\nrequest timeout"), "{text}");
    assert_eq!(tern.stat("http.ingress.downstream_rq_timeout"), 1);
}

#[tokio::test]
async fn max_stream_duration_answers_504_and_the_connection_stays() {
    let hcm = "          common_http_protocol_options: { max_stream_duration: 0.2s }";
    let (tern, proxy) = start(hcm, silent_backend().await).await;
    let response = get(proxy).await;
    assert_eq!(response.status, 504);
    assert_eq!(response.text(), "downstream duration timeout");
    assert!(response.headers.get("connection").is_none());
    assert_eq!(
        tern.stat("http.ingress.downstream_rq_max_duration_reached"),
        1
    );
}

#[tokio::test]
async fn stream_idle_timeout_after_the_response_started_resets_the_stream() {
    let (tern, proxy) = start(
        "          stream_idle_timeout: 0.2s",
        stalling_backend().await,
    )
    .await;
    let stream = TcpStream::connect(proxy).await.expect("connect");
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    let request = hyper::Request::builder()
        .uri("/")
        .header("host", "test.local")
        .body(http_body_util::Empty::<Bytes>::new())
        .expect("request");
    let response = sender.send_request(request).await.expect("response head");
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let first = body
        .frame()
        .await
        .expect("a frame")
        .expect("first chunk arrives");
    assert_eq!(first.into_data().expect("data"), "first chunk");
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
        .await
        .expect("the stream is cut, not left hanging");
    assert!(
        !matches!(end, Some(Ok(_))),
        "no more data after the timeout: {end:?}"
    );
    assert_eq!(tern.stat("http.ingress.downstream_rq_idle_timeout"), 1);
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_idle_timeout() {
    let backend = HttpBackend::start("b").await.expect("backend");
    let hcm = "          common_http_protocol_options: { idle_timeout: 0.2s }\n          drain_timeout: 0.1s";
    let (tern, proxy) = start(hcm, backend.address).await;
    let text = raw_until_close(proxy, b"GET / HTTP/1.1\r\nhost: test.local\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert_eq!(tern.stat("http.ingress.downstream_cx_idle_timeout"), 1);
}

#[tokio::test]
async fn a_route_idle_timeout_replaces_the_connection_managers() {
    let yaml = HttpBootstrap {
        hcm: "          stream_idle_timeout: 30s",
        routes: &route_all("backend", "timeout: 0s, idle_timeout: 0.2s"),
        clusters: &static_cluster("backend", &[silent_backend().await], ""),
        ..Default::default()
    }
    .yaml();
    let tern = Running::start(&yaml, 1).await;
    let response = get(tern.listener("http").await).await;
    assert_eq!(response.status, 504);
    assert_eq!(response.text(), "stream timeout");
    assert_eq!(tern.stat("http.ingress.downstream_rq_idle_timeout"), 1);
}

#[tokio::test]
async fn per_try_idle_timeout_ends_each_attempt_and_is_retried() {
    let route = route_all(
        "backend",
        "retry_policy: { retry_on: 5xx, num_retries: 1, per_try_idle_timeout: 0.2s }",
    );
    let yaml = HttpBootstrap {
        routes: &route,
        clusters: &static_cluster("backend", &[silent_backend().await], ""),
        ..Default::default()
    }
    .yaml();
    let tern = Running::start(&yaml, 1).await;
    let response = get(tern.listener("http").await).await;
    assert_eq!(response.status, 504);
    assert_eq!(response.text(), "upstream request timeout");
    assert_eq!(
        tern.stat("cluster.backend.upstream_rq_per_try_idle_timeout"),
        2
    );
    assert_eq!(tern.stat("cluster.backend.upstream_rq_retry"), 1);
}
