//! The upstream every path ends at: an in-process hyper server (HTTP/1.1 and h2c on one port,
//! told apart by the h2 preface) and a TCP sink for bulk transfers.
//!
//! It runs on the harness's own runtime, so on core 0 with the load generator. The response body
//! size is the request path: `/64` answers 64 bytes, `/1024` answers 1 KB (anything else: 64).
//! Bodies are static, so the backend costs the same for every proxy compared.

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

static BODY_64: [u8; 64] = [b'a'; 64];
static BODY_1K: [u8; 1024] = [b'b'; 1024];

/// The request path for a body of `size` bytes.
pub fn path_for(size: usize) -> &'static str {
    if size >= 1024 { "/1024" } else { "/64" }
}

async fn answer(
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body: &'static [u8] = if request.uri().path() == "/1024" {
        &BODY_1K
    } else {
        &BODY_64
    };
    Ok(Response::builder()
        .header("content-type", "application/octet-stream")
        .body(Full::new(Bytes::from_static(body)))
        .unwrap_or_default())
}

/// Starts the HTTP backend on an ephemeral port of 127.0.0.1.
pub async fn start_http() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let builder = builder.clone();
            tokio::spawn(async move {
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service_fn(answer))
                    .await;
            });
        }
    });
    Ok(address)
}

/// A TCP sink: reads and discards, counting bytes across all connections.
pub struct Sink {
    pub address: SocketAddr,
    pub received: Arc<AtomicU64>,
}

/// Starts the TCP sink on an ephemeral port of 127.0.0.1.
pub async fn start_sink() -> anyhow::Result<Sink> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 << 10];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    Ok(Sink { address, received })
}
