//! The HTTP data path: `envoy.filters.network.http_connection_manager` and the router behind it.
//!
//! A connection that reaches an HCM is handed to hyper (HTTP/1.1, or HTTP/2 when it starts with
//! the h2 preface under `codec_type: AUTO`). Each request is routed against the route table,
//! passed through the configured HTTP filters and forwarded by the router through this worker's
//! upstream connection pools. Everything here runs on the worker's own thread: hyper's HTTP/2
//! streams are spawned with `spawn_local`, so nothing on the request path needs `Send`.

pub mod access_log;
pub mod cors;
pub mod fault;
pub mod filter;
pub mod headers;
mod io;
pub mod local_ratelimit;
pub mod local_reply;
pub mod pool;
pub mod router;
pub mod stats;
pub mod stream_deadline;

use crate::config::http_connection_manager::{Codec, HttpConnectionManager};
use crate::drain::DrainWatch;
use crate::listener::connection::Downstream;
use crate::snapshot::Snapshot;
use crate::worker::Worker;
use hyper_util::rt::{TokioIo, TokioTimer};
pub use stats::HttpStats;
use std::rc::Rc;
use std::sync::Arc;

/// What every request on one downstream connection shares.
pub struct ConnectionContext {
    pub worker: Rc<Worker>,
    pub snapshot: Arc<Snapshot>,
    pub hcm: Arc<HttpConnectionManager>,
    pub stats: Arc<HttpStats>,
    pub peer: std::net::SocketAddr,
    pub local: std::net::SocketAddr,
    /// The original destination when original_dst restored one (feeds ORIGINAL_DST clusters).
    pub original_destination: Option<std::net::SocketAddr>,
    /// `https` when the connection arrived over TLS.
    pub scheme: &'static str,
    pub connection_id: u64,
}

/// Serves one downstream connection with the HTTP connection manager until it ends or drains.
pub async fn serve(
    worker: Rc<Worker>,
    snapshot: Arc<Snapshot>,
    hcm: Arc<HttpConnectionManager>,
    stats: Arc<HttpStats>,
    mut drain: DrainWatch,
    downstream: Downstream,
) {
    stats.downstream_cx_total.inc();
    stats.downstream_cx_active.inc();
    let _active = scopeguard(&stats);
    let ctx = Rc::new(ConnectionContext {
        worker,
        snapshot,
        hcm: hcm.clone(),
        stats: stats.clone(),
        peer: downstream.peer,
        local: downstream.local,
        original_destination: downstream.restored.then_some(downstream.local),
        scheme: "http",
        connection_id: crate::listener::connection::next_connection_id(),
    });
    let io = TokioIo::new(io::Prefixed::new(
        downstream.prefix.freeze(),
        downstream.stream,
    ));
    let service = hyper::service::service_fn(move |req| router::handle(ctx.clone(), req));
    let mut builder = hyper_util::server::conn::auto::Builder::new(io::LocalExec);
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(hcm.max_request_headers_bytes.max(8192) + 4096)
        .max_headers(hcm.max_headers_count)
        .title_case_headers(false)
        .keep_alive(true);
    if let Some(t) = hcm.request_headers_timeout {
        builder.http1().header_read_timeout(t);
    } else {
        builder.http1().header_read_timeout(None);
    }
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(hcm.http2.max_concurrent_streams)
        .initial_stream_window_size(hcm.http2.initial_stream_window_size)
        .initial_connection_window_size(hcm.http2.initial_connection_window_size)
        .max_header_list_size(u32::try_from(hcm.max_request_headers_bytes).unwrap_or(u32::MAX))
        .enable_connect_protocol();
    let builder = match hcm.codec {
        Codec::Auto => builder,
        Codec::Http1 => builder.http1_only(),
        Codec::Http2 => builder.http2_only(),
    };
    let conn = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "downstream HTTP connection ended with an error");
            }
        }
        deadline = drain.started() => {
            conn.as_mut().graceful_shutdown();
            let grace = tokio::time::sleep_until(deadline);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = grace => {}
            }
        }
    }
}

/// Decrements the active-connection gauge however the connection ends.
fn scopeguard(stats: &HttpStats) -> impl Drop + '_ {
    struct Active<'a>(&'a HttpStats);
    impl Drop for Active<'_> {
        fn drop(&mut self) {
            self.0.downstream_cx_active.dec();
            self.0.downstream_cx_destroy.inc();
        }
    }
    Active(stats)
}
