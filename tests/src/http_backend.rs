//! HTTP backends and a plain HTTP client for route tests.
//!
//! [`HttpBackend`] answers every request (HTTP/1.1 or h2c prior knowledge, on an ephemeral
//! loopback port) with a JSON description of what reached it, so a test can see the path,
//! authority, protocol and headers a proxy forwarded. Request headers steer it:
//!
//! - `x-backend-status: 503` answers with that status instead of 200;
//! - `x-backend-delay-ms: 250` waits that long before answering;
//! - `x-backend-response-header: name=value` (repeatable) adds that response header.
//!
//! [`HttpBackend::always_answer`] makes a backend answer every request with one status whatever
//! the headers say (a broken host for outlier detection), until [`HttpBackend::answer_normally`].
//!
//! [`send`] (and its shorthands [`http_request`], [`http2_request`]) sends one request on a fresh
//! connection and returns the whole response: no pooling, no retries, no redirects followed;
//! [`send_over`] does the same on a connection the caller made.
//!
//! Invariants: the JSON body always has the keys `backend`, `method`, `path`, `authority`,
//! `version`, `headers` (lowercase name -> every value in arrival order), `body_len` and `peer`
//! (the connection's source address, as `ip:port`); a
//! request is counted as soon as its head is parsed, before its body is read or any delay, so a
//! request a proxy gave up on (a route timeout) still counts as having reached the backend.

use anyhow::Context;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Map, Value, json};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long one client request may take, connection included.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// A running HTTP backend; dropping it stops accepting.
pub struct HttpBackend {
    pub name: String,
    pub address: SocketAddr,
    /// The JSON description of every request received so far, in arrival order.
    seen: Arc<watch::Sender<Vec<Value>>>,
    forced_status: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpBackend {
    /// Starts backend `name` on 127.0.0.1 (port chosen by the kernel).
    pub async fn start(name: &str) -> std::io::Result<HttpBackend> {
        Self::serve(name, TcpListener::bind(("127.0.0.1", 0)).await?)
    }

    /// Runs backend `name` on `listener` (one bound anywhere, in any network namespace).
    pub fn serve(name: &str, listener: TcpListener) -> std::io::Result<HttpBackend> {
        let address = listener.local_addr()?;
        let seen = Arc::new(watch::Sender::new(Vec::new()));
        let forced_status = Arc::new(AtomicU16::new(0));
        let shared = Arc::new(Shared {
            name: name.to_string(),
            seen: seen.clone(),
            forced_status: forced_status.clone(),
        });
        let task = tokio::spawn(async move {
            while let Ok((stream, peer)) = listener.accept().await {
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let shared = shared.clone();
                        async move { Ok::<_, Infallible>(shared.answer(request, peer).await) }
                    });
                    // A connection error (peer reset, malformed request) ends only that
                    // connection.
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(HttpBackend {
            name: name.to_string(),
            address,
            seen,
            forced_status,
            task,
        })
    }

    /// Answers every request from now on with `status` (a valid status code), ignoring
    /// `x-backend-status`.
    pub fn always_answer(&self, status: u16) {
        self.forced_status.store(status, Ordering::SeqCst);
    }

    /// Back to obeying the request headers.
    pub fn answer_normally(&self) {
        self.forced_status.store(0, Ordering::SeqCst);
    }

    /// Requests received so far (every protocol, every connection), answered or not.
    pub fn requests(&self) -> usize {
        self.seen.borrow().len()
    }

    /// The JSON description (as in the response body, `body_len` aside: 0 until read) of every
    /// request received so far.
    pub fn seen(&self) -> Vec<Value> {
        self.seen.borrow().clone()
    }

    /// Waits until `done` holds for the requests seen so far (re-checked on every change);
    /// `Err` naming `what` after [`REQUEST_DEADLINE`].
    pub async fn wait_until(
        &self,
        what: &str,
        mut done: impl FnMut(&[Value]) -> bool,
    ) -> anyhow::Result<()> {
        let mut changes = self.seen.subscribe();
        tokio::time::timeout(REQUEST_DEADLINE, changes.wait_for(|seen| done(seen)))
            .await
            .with_context(|| format!("backend {}: waiting for {what}", self.name))?
            .map(|_| ())
            .context("backend stopped")
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What every connection task of one backend shares.
struct Shared {
    name: String,
    seen: Arc<watch::Sender<Vec<Value>>>,
    /// A status every request gets, or 0 to obey `x-backend-status`.
    forced_status: Arc<AtomicU16>,
}

impl Shared {
    async fn answer(
        &self,
        request: hyper::Request<Incoming>,
        peer: SocketAddr,
    ) -> hyper::Response<Full<Bytes>> {
        // Counted on arrival, before the body and any delay: a proxy that gave up waiting
        // (a route timeout) has still reached this backend.
        let (parts, body) = request.into_parts();
        let mut index = 0;
        self.seen.send_modify(|seen| {
            index = seen.len();
            seen.push(describe(&self.name, &parts, 0, peer));
        });
        let body_len = body
            .collect()
            .await
            .map(|collected| collected.to_bytes().len())
            .unwrap_or(0);
        self.seen
            .send_modify(|seen| seen[index]["body_len"] = json!(body_len));
        let knob = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .map(str::trim)
        };
        if let Some(ms) = knob("x-backend-delay-ms").and_then(|ms| ms.parse().ok()) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let forced = Some(self.forced_status.load(Ordering::SeqCst)).filter(|s| *s != 0);
        let status = forced
            .or_else(|| knob("x-backend-status").and_then(|code| code.parse::<u16>().ok()))
            .and_then(|code| StatusCode::from_u16(code).ok())
            .unwrap_or(StatusCode::OK);
        let description = describe(&self.name, &parts, body_len, peer);
        let mut response = hyper::Response::new(Full::new(Bytes::from(description.to_string())));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        for extra in parts.headers.get_all("x-backend-response-header") {
            let Some((name, value)) = extra.to_str().ok().and_then(|text| text.split_once('='))
            else {
                continue;
            };
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.trim().as_bytes()),
                HeaderValue::from_str(value.trim()),
            ) {
                headers.append(name, value);
            }
        }
        response
    }
}

/// The JSON description of a request (see the module doc).
fn describe(
    backend: &str,
    parts: &http::request::Parts,
    body_len: usize,
    peer: SocketAddr,
) -> Value {
    let authority = parts
        .uri
        .authority()
        .map(|authority| authority.as_str().to_string())
        .or_else(|| header_text(&parts.headers, "host"));
    json!({
        "backend": backend,
        "method": parts.method.as_str(),
        "path": parts.uri.path_and_query().map_or("", |pq| pq.as_str()),
        "authority": authority,
        "version": version_name(parts.version),
        "headers": headers_json(&parts.headers),
        "body_len": body_len,
        "peer": peer.to_string(),
    })
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// `{"name": ["first", "second"]}` in arrival order (names are lowercase in a [`HeaderMap`]).
fn headers_json(headers: &HeaderMap) -> Value {
    let mut out = Map::new();
    for name in headers.keys() {
        let values = headers
            .get_all(name)
            .iter()
            .map(|value| Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        out.insert(name.as_str().to_string(), Value::Array(values));
    }
    Value::Object(out)
}

fn version_name(version: Version) -> &'static str {
    match version {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "unknown",
    }
}

/// Which protocol the client speaks to the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/1.0, which Envoy refuses unless `http_protocol_options.accept_http_10` is set.
    Http10,
    /// HTTP/2 with prior knowledge over cleartext (h2c, no upgrade).
    Http2,
}

/// One request to send: on HTTP/1.x `authority` goes out as the `Host` header (none when it is
/// empty) and `path` as the request target; on HTTP/2 they become `:authority` and `:path` (with
/// `:scheme: http`).
#[derive(Clone, Debug, Default)]
pub struct Request<'a> {
    pub method: &'a str,
    pub authority: &'a str,
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// A complete response.
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The body parsed as JSON, when it is JSON (an [`HttpBackend`] answered).
    pub json: Option<Value>,
}

impl Response {
    /// Every value of response header `name`, in order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect()
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// HTTP/1.1 `method path` with `Host: authority` and `headers`, empty body.
pub async fn http_request(
    address: SocketAddr,
    method: &str,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Response> {
    let request = Request {
        method,
        authority,
        path,
        headers,
        body: b"",
    };
    send(address, Protocol::Http1, &request).await
}

/// The same over h2c with prior knowledge.
pub async fn http2_request(
    address: SocketAddr,
    method: &str,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<Response> {
    let request = Request {
        method,
        authority,
        path,
        headers,
        body: b"",
    };
    send(address, Protocol::Http2, &request).await
}

/// Sends `request` on a new connection to `address` and reads the whole response, within
/// [`REQUEST_DEADLINE`].
pub async fn send(
    address: SocketAddr,
    protocol: Protocol,
    request: &Request<'_>,
) -> anyhow::Result<Response> {
    tokio::time::timeout(REQUEST_DEADLINE, send_unbounded(address, protocol, request))
        .await
        .with_context(|| format!("{protocol:?} request to {address} timed out"))?
}

async fn send_unbounded(
    address: SocketAddr,
    protocol: Protocol,
    request: &Request<'_>,
) -> anyhow::Result<Response> {
    let stream = TcpStream::connect(address)
        .await
        .with_context(|| format!("connecting to {address}"))?;
    exchange(stream, protocol, request).await
}

/// Sends `request` on `stream` (a fresh connection) and reads the whole response, within
/// [`REQUEST_DEADLINE`].
pub async fn send_over(
    stream: TcpStream,
    protocol: Protocol,
    request: &Request<'_>,
) -> anyhow::Result<Response> {
    tokio::time::timeout(REQUEST_DEADLINE, exchange(stream, protocol, request))
        .await
        .with_context(|| format!("{protocol:?} request timed out"))?
}

async fn exchange(
    stream: TcpStream,
    protocol: Protocol,
    request: &Request<'_>,
) -> anyhow::Result<Response> {
    let io = TokioIo::new(stream);
    let outgoing = build(protocol, request)?;
    let response = match protocol {
        Protocol::Http1 | Protocol::Http10 => {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(connection);
            sender.send_request(outgoing).await?
        }
        Protocol::Http2 => {
            let (mut sender, connection) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(connection);
            sender.send_request(outgoing).await?
        }
    };
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    let json = serde_json::from_slice(&body).ok();
    Ok(Response {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
        json,
    })
}

fn build(protocol: Protocol, request: &Request<'_>) -> anyhow::Result<hyper::Request<Full<Bytes>>> {
    let method = Method::from_bytes(request.method.as_bytes())
        .with_context(|| format!("bad method {:?}", request.method))?;
    let mut builder = hyper::Request::builder().method(method);
    builder = match protocol {
        Protocol::Http1 | Protocol::Http10 => {
            let version = if protocol == Protocol::Http1 {
                Version::HTTP_11
            } else {
                Version::HTTP_10
            };
            builder = builder.version(version).uri(request.path);
            if request.authority.is_empty() {
                builder
            } else {
                builder.header("host", request.authority)
            }
        }
        Protocol::Http2 => builder
            .version(Version::HTTP_2)
            .uri(format!("http://{}{}", request.authority, request.path)),
    };
    for (name, value) in request.headers {
        builder = builder.header(*name, *value);
    }
    builder
        .body(Full::new(Bytes::copy_from_slice(request.body)))
        .with_context(|| {
            format!(
                "bad request {} {} {}",
                request.method, request.authority, request.path
            )
        })
}

/// A backend that reports each request's arrival on the returned channel and answers it (200,
/// body `held`) only when the returned `Notify` releases it.
pub async fn held_backend() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<()>,
    Arc<tokio::sync::Notify>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let (arrived_tx, arrived) = tokio::sync::mpsc::unbounded_channel();
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (arrived_tx, gate) = (arrived_tx.clone(), gate.clone());
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let (arrived_tx, gate) = (arrived_tx.clone(), gate.clone());
                    async move {
                        let _ = arrived_tx.send(());
                        gate.notified().await;
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("held"))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, arrived, release)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn backend_describes_http1_requests_and_obeys_its_knobs() {
        let backend = HttpBackend::start("a").await.unwrap();
        let response = http_request(
            backend.address,
            "GET",
            "example.test",
            "/some/path?x=1",
            &[
                ("x-backend-status", "503"),
                ("x-backend-response-header", "x-one=1"),
                ("x-backend-response-header", "x-two=2"),
                ("x-multi", "first"),
                ("x-multi", "second"),
            ],
        )
        .await
        .unwrap();
        assert_eq!(response.status, 503);
        assert_eq!(response.header_values("x-one"), ["1"]);
        assert_eq!(response.header_values("x-two"), ["2"]);
        let json = response.json.unwrap();
        assert_eq!(json["backend"], "a");
        assert_eq!(json["method"], "GET");
        assert_eq!(json["path"], "/some/path?x=1");
        assert_eq!(json["authority"], "example.test");
        assert_eq!(json["version"], "HTTP/1.1");
        assert_eq!(json["headers"]["x-multi"], json!(["first", "second"]));
        assert_eq!(json["body_len"], 0);
        assert_eq!(backend.requests(), 1);
    }

    #[tokio::test]
    async fn backend_speaks_h2c_with_prior_knowledge() {
        let backend = HttpBackend::start("b").await.unwrap();
        let request = Request {
            method: "POST",
            authority: "h2.test:81",
            path: "/h2?q",
            headers: &[],
            body: b"12345",
        };
        let response = send(backend.address, Protocol::Http2, &request)
            .await
            .unwrap();
        assert_eq!(response.status, 200);
        let json = response.json.unwrap();
        assert_eq!(json["version"], "HTTP/2");
        assert_eq!(json["authority"], "h2.test:81");
        assert_eq!(json["path"], "/h2?q");
        assert_eq!(json["body_len"], 5);
        assert_eq!(backend.requests(), 1);
    }

    #[tokio::test]
    async fn backend_delays_when_asked() {
        let backend = HttpBackend::start("c").await.unwrap();
        let started = tokio::time::Instant::now();
        let response = http_request(
            backend.address,
            "GET",
            "c.test",
            "/",
            &[("x-backend-delay-ms", "100")],
        )
        .await
        .unwrap();
        assert_eq!(response.status, 200);
        assert!(started.elapsed() >= Duration::from_millis(100));
    }
}
