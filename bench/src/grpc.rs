//! S3's gRPC pieces: an in-tree tonic echo backend and the unary call the load generator sends.
//!
//! There is no `protoc` here, so the one message is written by hand with `prost::Message` and
//! the service by hand over `tonic::server::Grpc` with `tonic_prost::ProstCodec`, as tonic's
//! generated code does (the same idea as the test kit's `grpc_backend`, without its
//! per-request recording, which would grow without bound under load). The backend is served by
//! plain hyper over HTTP/2 prior knowledge on the harness's runtime (core 0).
//!
//! The client side is hand-rolled over hyper's h2 client ([`crate::load`]): one length-prefixed
//! message in a POST, the reply's `grpc-status` checked in the trailers (or in the headers of a
//! trailers-only reply). It costs core 0 the same for every proxy compared.

use bytes::{BufMut, Bytes, BytesMut};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use tokio::net::TcpListener;
use tonic::codegen::{BoxFuture, Service};
use tonic::{Request, Response, Status};

/// The echo method's path.
pub const UNARY_PATH: &str = "/tern.bench.Echo/Unary";

/// Request and reply of the echo method: the reply carries the request's bytes back.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Payload {
    #[prost(bytes = "bytes", tag = "1")]
    pub data: Bytes,
}

/// The gRPC request body for a `size`-byte payload: the 5-byte message prefix (not
/// compressed, length) and the encoded message.
pub fn request_body(size: usize) -> Bytes {
    let message = prost::Message::encode_to_vec(&Payload {
        data: Bytes::from(vec![b'g'; size]),
    });
    let mut body = BytesMut::with_capacity(5 + message.len());
    body.put_u8(0);
    body.put_u32(u32::try_from(message.len()).expect("a small message"));
    body.put_slice(&message);
    body.freeze()
}

/// Starts the echo backend on an ephemeral port of 127.0.0.1 (HTTP/2 only).
pub async fn start_backend() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service =
                    service_fn(|request| async move { Ok::<_, Infallible>(serve(request).await) });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(1000)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(address)
}

async fn serve(request: http::Request<Incoming>) -> http::Response<tonic::body::Body> {
    if request.uri().path() != UNARY_PATH {
        return Status::unimplemented("no such method").into_http();
    }
    let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default());
    grpc.unary(Echo, request).await
}

struct Echo;

impl Service<Request<Payload>> for Echo {
    type Response = Response<Payload>;
    type Error = Status;
    type Future = BoxFuture<Self::Response, Status>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Payload>) -> Self::Future {
        let reply = request.into_inner();
        Box::pin(async move { Ok(Response::new(reply)) })
    }
}

/// The `grpc-status` of a reply: in its trailers, or in its headers when trailers-only.
pub fn status_of(headers: &http::HeaderMap, trailers: Option<&http::HeaderMap>) -> Option<String> {
    trailers
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}
