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
pub mod rbac;
mod replay;
pub mod router;
pub mod stats;
pub mod stream;
pub mod stream_deadline;

use crate::config::http_connection_manager::{Codec, HttpConnectionManager};
use crate::drain::DrainWatch;
use crate::listener::connection::Downstream;
use crate::stats::{Counter, Gauge};
use crate::worker::Worker;
use hyper_util::rt::{TokioIo, TokioTimer};
pub use stats::HttpStats;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use tokio::time::Instant;

/// The header count limit hyper's HTTP/1 parser has when none is set.
const HYPER_MAX_HEADERS: usize = 100;

/// What every request on one downstream connection shares.
pub struct ConnectionContext {
    pub worker: Rc<Worker>,
    pub hcm: Arc<HttpConnectionManager>,
    pub stats: Arc<HttpStats>,
    pub peer: std::net::SocketAddr,
    pub local: std::net::SocketAddr,
    /// The original destination when original_dst restored one (feeds ORIGINAL_DST clusters).
    pub original_destination: Option<std::net::SocketAddr>,
    /// `https` when the connection arrived over TLS.
    pub scheme: &'static str,
    pub connection_id: u64,
    /// Token buckets of local rate limits configured per downstream connection.
    pub rate_limit_buckets: local_ratelimit::ConnectionBuckets,
    /// Open streams, for the connection's idle timeout.
    pub streams: stream::ConnectionStreams,
    /// The connection's drain signal: HTTP/1 responses say `connection: close` once it started.
    pub drain: DrainWatch,
}

/// Serves one downstream connection with the HTTP connection manager until it ends or drains.
pub async fn serve(
    worker: Rc<Worker>,
    hcm: Arc<HttpConnectionManager>,
    stats: Arc<HttpStats>,
    drain: DrainWatch,
    downstream: Downstream,
) {
    stats.downstream_cx_total.inc();
    stats.downstream_cx_active.inc();
    let _active = scopeguard(&stats);
    let codec = Arc::new(CodecCount {
        stats: stats.clone(),
        decided: AtomicU8::new(UNDECIDED),
    });
    let ctx = Rc::new(ConnectionContext {
        worker,
        hcm: hcm.clone(),
        stats: stats.clone(),
        peer: downstream.peer,
        local: downstream.local,
        original_destination: downstream.restored.then_some(downstream.local),
        scheme: "http",
        connection_id: crate::listener::connection::next_connection_id(),
        rate_limit_buckets: Default::default(),
        streams: Default::default(),
        drain: drain.clone(),
    });
    let connection = ctx.clone();
    let mut stream = io::Prefixed::new(downstream.prefix.freeze(), downstream.stream);
    match hcm.codec {
        Codec::Auto => {
            let codec = codec.clone();
            stream = stream.detect_http2(move |http2| codec.set(http2));
        }
        Codec::Http1 => codec.set(false),
        Codec::Http2 => codec.set(true),
    }
    let io = TokioIo::new(stream);
    let service = hyper::service::service_fn(move |req| router::handle(ctx.clone(), req));
    let mut builder = hyper_util::server::conn::auto::Builder::new(io::LocalExec);
    builder
        .http1()
        .timer(TokioTimer::new())
        .max_buf_size(hcm.max_request_headers_bytes.max(8192) + 4096)
        .title_case_headers(false)
        .keep_alive(true);
    // hyper's own limit is Envoy's default: left unset, its parser uses fixed arrays; set, it
    // builds two arrays of that many entries on every request.
    if hcm.max_headers_count != HYPER_MAX_HEADERS {
        builder.http1().max_headers(hcm.max_headers_count);
    }
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
    // What ends keep-alive (a drain, the idle timeout, the maximum duration) is watched by a
    // task of its own: in this select, those futures would be polled again on every wake of
    // the connection, several times per request.
    let mut watcher = AbortOnDrop(tokio::task::spawn_local(watch_ending(
        connection.clone(),
        drain,
    )));
    // Drained connections finish their streams (HTTP/2 gets a GOAWAY), bounded by the drain's
    // deadline (none for `/drain_listeners`) or drain_timeout.
    let (ending, mut drain) = tokio::select! {
        biased;
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "downstream HTTP connection ended with an error");
            }
            return;
        }
        watched = &mut watcher.0 => match watched {
            Ok(ended) => ended,
            // The watcher panicked: the connection is served to its end.
            Err(_) => {
                let _ = conn.as_mut().await;
                return;
            }
        },
    };
    let grace = async move {
        match ending {
            Ending::Drained => drain.deadline().await,
            Ending::Timeout(at) => tokio::time::sleep_until(at).await,
        }
    };
    tokio::pin!(grace);
    // A drained HTTP/1 connection is not closed while idle: a client may be sending a request on
    // it right now. Like Envoy, it stays open until its next request, which is answered with
    // `connection: close` (hyper stops keep-alive while a request is in flight), or until the
    // deadline. HTTP/2 gets its GOAWAY at once.
    if matches!(ending, Ending::Drained) && !codec.is_http2() {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "downstream HTTP connection ended with an error");
                }
                return;
            }
            () = connection.streams.busy() => {}
            () = &mut grace => return,
        }
    }
    conn.as_mut().graceful_shutdown();
    tokio::select! {
        _ = conn.as_mut() => {}
        () = &mut grace => {}
    }
}

/// Resolves when the connection should stop keeping itself alive: its listener drains, or its
/// idle timeout or maximum duration passed (counted here); hands the drain back for its deadline.
async fn watch_ending(ctx: Rc<ConnectionContext>, mut drain: DrainWatch) -> (Ending, DrainWatch) {
    let hcm = &ctx.hcm;
    let idle = async {
        match hcm.idle_timeout {
            Some(t) => ctx.streams.idle_for(t).await,
            None => std::future::pending().await,
        }
    };
    let max_duration = async {
        match hcm.max_connection_duration {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let ending = tokio::select! {
        () = drain.started() => Ending::Drained,
        () = idle => {
            ctx.stats.downstream_cx_idle_timeout.inc();
            Ending::Timeout(Instant::now() + hcm.drain_timeout)
        }
        () = max_duration => {
            ctx.stats.downstream_cx_max_duration_reached.inc();
            Ending::Timeout(Instant::now() + hcm.drain_timeout)
        }
    };
    (ending, drain)
}

/// Aborts a task when its owner goes.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a connection stopped keeping itself alive.
#[derive(Clone, Copy)]
enum Ending {
    /// Its listener drains: the drain decides the deadline.
    Drained,
    /// Idle or max-duration timeout: closed after `drain_timeout`.
    Timeout(Instant),
}

/// Decrements the active-connection gauge and records the connection's length however the
/// connection ends.
fn scopeguard(stats: &HttpStats) -> impl Drop + '_ {
    struct Active<'a>(&'a HttpStats, Instant);
    impl Drop for Active<'_> {
        fn drop(&mut self) {
            self.0.downstream_cx_active.dec();
            self.0.downstream_cx_destroy.inc();
            self.0
                .downstream_cx_length_ms
                .record_duration(self.1.elapsed());
        }
    }
    Active(stats, Instant::now())
}

const UNDECIDED: u8 = 0;
const HTTP1: u8 = 1;
const HTTP2: u8 = 2;

/// `downstream_cx_http{1,2}_{total,active}`, counted once the connection's codec is known.
/// (Shared with the connection's IO, which hyper wants `Send`; only this worker touches it.)
struct CodecCount {
    stats: Arc<HttpStats>,
    decided: AtomicU8,
}

impl CodecCount {
    fn is_http2(&self) -> bool {
        self.decided.load(Ordering::Relaxed) == HTTP2
    }

    fn set(&self, http2: bool) {
        let codec = if http2 { HTTP2 } else { HTTP1 };
        if self
            .decided
            .compare_exchange(UNDECIDED, codec, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let (total, active) = self.counters(http2);
        total.inc();
        active.inc();
    }

    fn counters(&self, http2: bool) -> (&Counter, &Gauge) {
        let s = &self.stats;
        if http2 {
            (&s.downstream_cx_http2_total, &s.downstream_cx_http2_active)
        } else {
            (&s.downstream_cx_http1_total, &s.downstream_cx_http1_active)
        }
    }
}

impl Drop for CodecCount {
    fn drop(&mut self) {
        match *self.decided.get_mut() {
            HTTP1 => self.counters(false).1.dec(),
            HTTP2 => self.counters(true).1.dec(),
            _ => {}
        }
    }
}
