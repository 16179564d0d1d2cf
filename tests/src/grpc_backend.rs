//! A gRPC backend and client built on tonic, for tests that put a proxy between a real gRPC
//! client and a real gRPC server.
//!
//! There is no `protoc` here, so the messages are written by hand with `prost::Message` and the
//! service and client by hand over `tonic::server::Grpc` / `tonic::client::Grpc` with
//! `tonic_prost::ProstCodec`, the way tonic's generated code does it. The service
//! (`tern.test.Echo`) has two methods:
//!
//! - `Unary`: echoes a message after an optional delay, or fails with a chosen status; can set
//!   response metadata (initial metadata on success, trailing metadata on failure).
//! - `Count`: streams `count` replies `interval_ms` apart, optionally failing with a chosen
//!   status after `fail_after` of them.
//!
//! Invariants:
//! - The backend is served by plain hyper (HTTP/2 prior knowledge), not tonic's transport
//!   server, so it never enforces a `grpc-timeout` behind a test's back: a `Unary` call honours
//!   its deadline only when asked (`honour_deadline`), answering `DEADLINE_EXCEEDED` at the
//!   deadline as grpc-go and grpc-java servers do. What a proxy does about deadlines stays
//!   observable.
//! - Every request is recorded ([`Seen`]) on arrival, before any delay, so a test learns what
//!   reached the backend even when the proxy gave up waiting.

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::{BoxFuture, Service, StdError};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status, Streaming};

/// The fully qualified service name.
pub const SERVICE: &str = "tern.test.Echo";
/// `Unary`'s request path.
pub const UNARY_PATH: &str = "/tern.test.Echo/Unary";
/// `Count`'s request path.
pub const COUNT_PATH: &str = "/tern.test.Echo/Count";

/// `Unary`'s request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
    /// Answer (or fail) only after this long.
    #[prost(uint32, tag = "2")]
    pub delay_ms: u32,
    /// A non-zero gRPC status code to fail with instead of echoing.
    #[prost(int32, tag = "3")]
    pub fail_code: i32,
    #[prost(string, tag = "4")]
    pub fail_message: String,
    /// Metadata to add to the response: initial metadata on success, trailing on failure.
    #[prost(map = "string, string", tag = "5")]
    pub response_metadata: HashMap<String, String>,
    /// Stop waiting at the request's `grpc-timeout` and fail with `DEADLINE_EXCEEDED`.
    #[prost(bool, tag = "6")]
    pub honour_deadline: bool,
}

/// `Unary`'s reply.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub message: String,
    /// Which backend answered.
    #[prost(string, tag = "2")]
    pub backend: String,
    /// The `grpc-timeout` header the backend received (empty when there was none).
    #[prost(string, tag = "3")]
    pub grpc_timeout: String,
}

/// `Count`'s request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CountRequest {
    #[prost(uint32, tag = "1")]
    pub count: u32,
    #[prost(uint32, tag = "2")]
    pub interval_ms: u32,
    /// Fail after sending this many replies (with `fail_code`, `fail_message`).
    #[prost(uint32, optional, tag = "3")]
    pub fail_after: Option<u32>,
    #[prost(int32, tag = "4")]
    pub fail_code: i32,
    #[prost(string, tag = "5")]
    pub fail_message: String,
}

/// One of `Count`'s replies.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CountReply {
    #[prost(uint32, tag = "1")]
    pub index: u32,
    #[prost(string, tag = "2")]
    pub backend: String,
}

/// What reached the backend, recorded on arrival.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: http::HeaderMap,
}

impl Seen {
    /// A request header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// A running gRPC backend on an ephemeral loopback port; dropping it stops accepting.
pub struct GrpcBackend {
    pub name: String,
    pub address: SocketAddr,
    requests: Arc<AtomicUsize>,
    seen: mpsc::UnboundedReceiver<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl GrpcBackend {
    /// Starts backend `name` on 127.0.0.1 (port chosen by the kernel), HTTP/2 only.
    pub async fn start(name: &str) -> std::io::Result<GrpcBackend> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let requests = Arc::new(AtomicUsize::new(0));
        let (seen_tx, seen) = mpsc::unbounded_channel();
        let echo = Echo {
            backend: Arc::from(name),
            requests: requests.clone(),
            seen: seen_tx,
        };
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let echo = echo.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let echo = echo.clone();
                        async move { Ok::<_, Infallible>(echo.serve(request).await) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(GrpcBackend {
            name: name.to_string(),
            address,
            requests,
            seen,
            task,
        })
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    /// The oldest recorded request not yet taken. A request is recorded on arrival, so once a
    /// call through a proxy has ended, whatever of it reached this backend is here.
    pub fn take_seen(&mut self) -> Option<Seen> {
        self.seen.try_recv().ok()
    }

    /// Forgets every recorded request not yet taken.
    pub fn clear_seen(&mut self) {
        while self.seen.try_recv().is_ok() {}
    }
}

impl Drop for GrpcBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The service every connection of one backend shares.
#[derive(Clone)]
struct Echo {
    backend: Arc<str>,
    requests: Arc<AtomicUsize>,
    seen: mpsc::UnboundedSender<Seen>,
}

impl Echo {
    async fn serve(self, request: http::Request<Incoming>) -> http::Response<tonic::body::Body> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let _ = self.seen.send(Seen {
            path: request.uri().path().to_string(),
            headers: request.headers().clone(),
        });
        match request.uri().path() {
            UNARY_PATH => {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                grpc.unary(UnaryMethod(self), request).await
            }
            COUNT_PATH => {
                let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
                grpc.server_streaming(CountMethod(self), request).await
            }
            _ => Status::unimplemented("no such method").into_http(),
        }
    }
}

struct UnaryMethod(Echo);

impl Service<Request<EchoRequest>> for UnaryMethod {
    type Response = Response<EchoReply>;
    type Error = Status;
    type Future = BoxFuture<Self::Response, Status>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<EchoRequest>) -> Self::Future {
        let backend = self.0.backend.to_string();
        Box::pin(async move {
            let grpc_timeout = request
                .metadata()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = request.into_inner();
            let delay = Duration::from_millis(u64::from(body.delay_ms));
            let deadline = parse_grpc_timeout(&grpc_timeout).filter(|_| body.honour_deadline);
            match deadline {
                Some(deadline) if deadline < delay => {
                    tokio::time::sleep(deadline).await;
                    return Err(Status::deadline_exceeded(format!(
                        "deadline of {grpc_timeout} exceeded"
                    )));
                }
                _ => tokio::time::sleep(delay).await,
            }
            let metadata = metadata(&body.response_metadata);
            if body.fail_code != 0 {
                return Err(Status::with_metadata(
                    Code::from_i32(body.fail_code),
                    body.fail_message,
                    metadata,
                ));
            }
            let mut response = Response::new(EchoReply {
                message: body.message,
                backend,
                grpc_timeout,
            });
            *response.metadata_mut() = metadata;
            Ok(response)
        })
    }
}

struct CountMethod(Echo);

impl Service<Request<CountRequest>> for CountMethod {
    type Response = Response<ReceiverStream<Result<CountReply, Status>>>;
    type Error = Status;
    type Future = BoxFuture<Self::Response, Status>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<CountRequest>) -> Self::Future {
        let backend = self.0.backend.to_string();
        let body = request.into_inner();
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(async move {
            let interval = Duration::from_millis(u64::from(body.interval_ms));
            for index in 0..body.count {
                if body.fail_after == Some(index) {
                    break;
                }
                if index > 0 {
                    tokio::time::sleep(interval).await;
                }
                let reply = CountReply {
                    index,
                    backend: backend.clone(),
                };
                if tx.send(Ok(reply)).await.is_err() {
                    return; // the caller went away
                }
            }
            if body.fail_after.is_some_and(|n| n < body.count) {
                let status = Status::new(Code::from_i32(body.fail_code), body.fail_message);
                let _ = tx.send(Err(status)).await;
            }
        });
        Box::pin(async move { Ok(Response::new(ReceiverStream::new(rx))) })
    }
}

fn metadata(pairs: &HashMap<String, String>) -> MetadataMap {
    let mut map = MetadataMap::new();
    for (name, value) in pairs {
        let key = MetadataKey::from_bytes(name.as_bytes()).expect("valid metadata name");
        let value = MetadataValue::try_from(value.as_str()).expect("valid metadata value");
        map.insert(key, value);
    }
    map
}

/// `grpc-timeout`: up to 8 digits then a unit (H, M, S, m, u, n).
pub fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A plain HTTP/2 (prior knowledge) connection as a tonic transport, recording each response's
/// HTTP status and whether it was trailers-only.
///
/// Unlike tonic's `Channel`, it enforces no `grpc-timeout` of its own: a test can send a deadline
/// and see what the proxy does about it, with no client timer racing the proxy's.
#[derive(Clone)]
pub struct H2Connection {
    send: hyper::client::conn::http2::SendRequest<tonic::body::Body>,
    last: Arc<LastResponse>,
}

/// The HTTP shape of the last response on an [`H2Connection`].
#[derive(Default)]
struct LastResponse {
    status: AtomicU16,
    trailers_only: AtomicBool,
}

impl H2Connection {
    /// Connects to `address`; the connection lives until every clone is dropped.
    pub async fn connect(address: SocketAddr) -> anyhow::Result<H2Connection> {
        let stream = tokio::net::TcpStream::connect(address).await?;
        let (send, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await?;
        tokio::spawn(connection);
        Ok(H2Connection {
            send,
            last: Arc::default(),
        })
    }

    /// The HTTP status of the last response (0 before any).
    pub fn last_http_status(&self) -> u16 {
        self.last.status.load(Ordering::SeqCst)
    }

    /// Whether the last response carried `grpc-status` in its headers (a trailers-only reply).
    pub fn last_trailers_only(&self) -> bool {
        self.last.trailers_only.load(Ordering::SeqCst)
    }
}

impl Service<http::Request<tonic::body::Body>> for H2Connection {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let response = self.send.send_request(request);
        let last = self.last.clone();
        last.status.store(0, Ordering::SeqCst);
        last.trailers_only.store(false, Ordering::SeqCst);
        Box::pin(async move {
            let response = response.await?;
            last.status
                .store(response.status().as_u16(), Ordering::SeqCst);
            last.trailers_only.store(
                response.headers().contains_key("grpc-status"),
                Ordering::SeqCst,
            );
            Ok(response)
        })
    }
}

/// A client of `tern.test.Echo` over any tonic transport.
#[derive(Clone)]
pub struct EchoClient<T> {
    inner: tonic::client::Grpc<T>,
}

impl EchoClient<H2Connection> {
    /// A client on its own HTTP/2 connection to `address`, with `:authority` `grpc.test`.
    pub async fn connect(address: SocketAddr) -> anyhow::Result<(Self, H2Connection)> {
        let connection = H2Connection::connect(address).await?;
        let origin = http::Uri::from_static("http://grpc.test");
        let client = EchoClient {
            inner: tonic::client::Grpc::with_origin(connection.clone(), origin),
        };
        Ok((client, connection))
    }
}

impl<T> EchoClient<T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<StdError> + Send,
{
    pub fn new(inner: T) -> Self {
        EchoClient {
            inner: tonic::client::Grpc::new(inner),
        }
    }

    /// Calls `Unary`.
    pub async fn unary(
        &mut self,
        request: impl tonic::IntoRequest<EchoRequest>,
    ) -> Result<Response<EchoReply>, Status> {
        self.ready().await?;
        let path = http::uri::PathAndQuery::from_static(UNARY_PATH);
        let codec = tonic_prost::ProstCodec::default();
        self.inner.unary(request.into_request(), path, codec).await
    }

    /// Calls `Count`.
    pub async fn count(
        &mut self,
        request: impl tonic::IntoRequest<CountRequest>,
    ) -> Result<Response<Streaming<CountReply>>, Status> {
        self.ready().await?;
        let path = http::uri::PathAndQuery::from_static(COUNT_PATH);
        let codec = tonic_prost::ProstCodec::default();
        self.inner
            .server_streaming(request.into_request(), path, codec)
            .await
    }

    async fn ready(&mut self) -> Result<(), Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unknown(format!("service was not ready: {}", e.into())))
    }
}
