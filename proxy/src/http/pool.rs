//! Upstream HTTP connection pools, one set per worker, keyed by cluster, host and protocol.
//!
//! HTTP/1.1 connections are reused one request at a time: a connection goes back to the idle
//! list when its response body has been read to the end, and is closed after the cluster's idle
//! timeout or `max_requests_per_connection`. HTTP/2 connections are shared by concurrent streams
//! up to the cluster's `max_concurrent_streams`; a new connection is opened beyond that. A
//! request that a reused connection never sent (the peer closed it first) is resent on a fresh
//! connection, which is what makes keep-alive safe.

use super::io::LocalExec;
use super::local_reply::Body;
use crate::config::cluster::UpstreamHttp;
use crate::snapshot::ClusterEntry;
use crate::snapshot::HostStats;
use crate::upstream::{self, ConnectError, UpstreamConnection};
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use tokio::time::Instant;

/// Why a request got no response from upstream.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// A circuit breaker (max_connections / max_pending_requests) is open.
    #[error("overflow")]
    Overflow,
    #[error("{0}")]
    Connect(#[from] ConnectError),
    /// HTTP/2 REFUSED_STREAM: the request was not processed and is safe to retry.
    #[error("refused stream")]
    RefusedStream,
    /// The connection ended or was reset before the response headers arrived.
    #[error("connection termination: {0}")]
    Reset(String),
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct PoolKey {
    cluster: String,
    address: SocketAddr,
    http2: bool,
}

/// One worker's pools.
#[derive(Default)]
pub struct Pools {
    hosts: RefCell<HashMap<PoolKey, Rc<HostPool>>>,
    next_id: Cell<u64>,
}

#[derive(Default)]
struct HostPool {
    idle: RefCell<Vec<IdleConnection>>,
    h2: RefCell<Vec<H2Connection>>,
}

struct IdleConnection {
    id: u64,
    /// When it went idle: an idle timer only closes the connection it was started for.
    since: Instant,
    sender: http1::SendRequest<Body>,
    requests: u32,
}

struct H2Connection {
    sender: http2::SendRequest<Body>,
    streams: Rc<Cell<u32>>,
    requests: Rc<Cell<u32>>,
}

/// What a pooled response holds until its body is done: the connection's way back to the pool
/// and anything the caller wants kept alive as long (the picked host's active-request count).
struct Lease {
    pool: Rc<HostPool>,
    settings: UpstreamHttp,
    cluster: Arc<ClusterEntry>,
    kind: LeaseKind,
    keep: Box<dyn std::any::Any>,
}

enum LeaseKind {
    H1 {
        id: u64,
        sender: http1::SendRequest<Body>,
        requests: u32,
    },
    H2 {
        streams: Rc<Cell<u32>>,
    },
}

impl Pools {
    /// Sends `request` to `address` of `cluster` (a host whose counters are `host`), reusing a
    /// pooled connection when there is one. `keep` is dropped when the response body ends (or the
    /// response is dropped).
    pub async fn send(
        self: &Rc<Self>,
        cluster: &Arc<ClusterEntry>,
        address: SocketAddr,
        host: &Arc<HostStats>,
        http2: bool,
        mut request: Request<Body>,
        keep: Box<dyn std::any::Any>,
    ) -> Result<Response<Body>, Failure> {
        let key = PoolKey {
            cluster: cluster.config.name.clone(),
            address,
            http2,
        };
        let pool = self.hosts.borrow_mut().entry(key).or_default().clone();
        let settings = cluster.config.http.clone();
        let stats = &cluster.stats.http;
        if http2 {
            let (sender, streams, requests) = match pool.take_h2(&settings) {
                Some(c) => c,
                None => {
                    let sender = self.connect_h2(cluster, address, host, &settings).await?;
                    let streams = Rc::new(Cell::new(0));
                    let requests = Rc::new(Cell::new(0));
                    pool.h2.borrow_mut().push(H2Connection {
                        sender: sender.clone(),
                        streams: streams.clone(),
                        requests: requests.clone(),
                    });
                    (sender, streams, requests)
                }
            };
            streams.set(streams.get() + 1);
            requests.set(requests.get() + 1);
            let mut lease = Lease {
                pool: pool.clone(),
                settings,
                cluster: cluster.clone(),
                kind: LeaseKind::H2 { streams },
                keep,
            };
            let mut sender = sender;
            let response = match sender.send_request(request).await {
                Ok(r) => r,
                Err(e) => {
                    lease.release(false);
                    return Err(classify(&e));
                }
            };
            return Ok(response.map(|body| PooledBody::wrap(body, lease)));
        }
        // HTTP/1.1: a pooled connection first; a request it never sent goes on a fresh one.
        loop {
            let (mut sender, id, requests, reused) = match pool.take_h1() {
                Some(idle) => (idle.sender, idle.id, idle.requests, true),
                None => {
                    let sender = self.connect_h1(cluster, address, host).await?;
                    (sender, self.new_id(), 0, false)
                }
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let lease = Lease {
                        pool: pool.clone(),
                        settings,
                        cluster: cluster.clone(),
                        kind: LeaseKind::H1 {
                            id,
                            sender,
                            requests: requests + 1,
                        },
                        keep,
                    };
                    return Ok(response.map(|body| PooledBody::wrap(body, lease)));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => {
                        request = unsent;
                        continue;
                    }
                    _ => {
                        stats.upstream_rq_tx_reset.inc();
                        return Err(classify(e.error()));
                    }
                },
            }
        }
    }

    fn new_id(&self) -> u64 {
        let id = self.next_id.get() + 1;
        self.next_id.set(id);
        id
    }

    async fn connect_h1(
        &self,
        cluster: &Arc<ClusterEntry>,
        address: SocketAddr,
        host: &Arc<HostStats>,
    ) -> Result<http1::SendRequest<Body>, Failure> {
        let stream = open(cluster, address, host).await?;
        let guard = UpstreamConnection::open(cluster, host);
        cluster.stats.http.upstream_cx_http1_total.inc();
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Reset(e.to_string()))?;
        tokio::task::spawn_local(async move {
            let _guard = guard;
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    async fn connect_h2(
        &self,
        cluster: &Arc<ClusterEntry>,
        address: SocketAddr,
        host: &Arc<HostStats>,
        settings: &UpstreamHttp,
    ) -> Result<http2::SendRequest<Body>, Failure> {
        let stream = open(cluster, address, host).await?;
        let guard = UpstreamConnection::open(cluster, host);
        cluster.stats.http.upstream_cx_http2_total.inc();
        let (sender, conn) = http2::Builder::new(LocalExec)
            .timer(TokioTimer::new())
            .initial_stream_window_size(settings.http2.initial_stream_window_size)
            .initial_connection_window_size(settings.http2.initial_connection_window_size)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| Failure::Reset(e.to_string()))?;
        tokio::task::spawn_local(async move {
            let _guard = guard;
            let _ = conn.await;
        });
        Ok(sender)
    }
}

/// Connects, counting connect failures and timeouts on the cluster and host.
async fn open(
    cluster: &ClusterEntry,
    address: SocketAddr,
    host: &HostStats,
) -> Result<tokio::net::TcpStream, Failure> {
    if cluster.stats.upstream_cx_active.value()
        >= i64::from(cluster.config.circuit_breakers.max_connections)
    {
        cluster.stats.upstream_cx_overflow.inc();
        cluster.stats.http.upstream_rq_pending_overflow.inc();
        return Err(Failure::Overflow);
    }
    match upstream::connect(
        address,
        cluster.config.bind_source,
        cluster.config.connect_timeout,
    )
    .await
    {
        Ok(s) => Ok(s),
        Err(e) => {
            cluster.stats.upstream_cx_connect_fail.inc();
            if matches!(e, ConnectError::Timeout(_)) {
                cluster.stats.upstream_cx_connect_timeout.inc();
            }
            host.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
            Err(Failure::Connect(e))
        }
    }
}

/// Maps a hyper client error to what the router needs to know.
fn classify(e: &hyper::Error) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>()
            && h2.reason() == Some(h2::Reason::REFUSED_STREAM)
        {
            return Failure::RefusedStream;
        }
        source = err.source();
    }
    Failure::Reset(e.to_string())
}

/// A multiplexed connection with its open-stream and lifetime-request counts.
type SharedH2 = (http2::SendRequest<Body>, Rc<Cell<u32>>, Rc<Cell<u32>>);

impl HostPool {
    fn take_h1(&self) -> Option<IdleConnection> {
        let mut idle = self.idle.borrow_mut();
        while let Some(c) = idle.pop() {
            if !c.sender.is_closed() && c.sender.is_ready() {
                return Some(c);
            }
        }
        None
    }

    fn take_h2(&self, settings: &UpstreamHttp) -> Option<SharedH2> {
        let mut conns = self.h2.borrow_mut();
        conns.retain(|c| !c.sender.is_closed());
        let max_requests = settings.max_requests_per_connection.unwrap_or(u32::MAX);
        conns
            .iter()
            .find(|c| {
                c.streams.get() < settings.http2.max_concurrent_streams
                    && c.requests.get() < max_requests
                    && c.sender.is_ready()
            })
            .map(|c| (c.sender.clone(), c.streams.clone(), c.requests.clone()))
    }
}

impl Lease {
    /// The response is done (`complete`) or abandoned: the connection goes back or away.
    fn release(&mut self, complete: bool) {
        match std::mem::replace(
            &mut self.kind,
            LeaseKind::H2 {
                streams: Rc::new(Cell::new(1)),
            },
        ) {
            LeaseKind::H2 { streams } => streams.set(streams.get().saturating_sub(1)),
            LeaseKind::H1 {
                id,
                sender,
                requests,
            } => {
                let max = self
                    .settings
                    .max_requests_per_connection
                    .unwrap_or(u32::MAX);
                if !complete || sender.is_closed() {
                    return;
                }
                if requests >= max {
                    self.cluster.stats.http.upstream_cx_max_requests.inc();
                    return;
                }
                // The connection takes the next request once hyper has finished this exchange.
                let pool = Rc::downgrade(&self.pool);
                let idle_timeout = self.settings.idle_timeout;
                let stats = self.cluster.stats.http.upstream_cx_idle_timeout.clone();
                let mut sender = sender;
                tokio::task::spawn_local(async move {
                    if sender.ready().await.is_err() {
                        return;
                    }
                    let Some(host) = pool.upgrade() else { return };
                    let since = Instant::now();
                    host.idle.borrow_mut().push(IdleConnection {
                        id,
                        since,
                        sender,
                        requests,
                    });
                    drop(host);
                    let Some(timeout) = idle_timeout else { return };
                    tokio::time::sleep_until(since + timeout).await;
                    if let Some(host) = pool.upgrade() {
                        let mut idle = host.idle.borrow_mut();
                        let before = idle.len();
                        idle.retain(|c| c.id != id || c.since != since);
                        if idle.len() < before {
                            stats.inc();
                        }
                    }
                });
            }
        }
    }
}

/// A response body from a pooled connection; hands the connection back when it ends.
pub struct PooledBody {
    inner: Incoming,
    lease: Option<Lease>,
}

impl PooledBody {
    fn wrap(inner: Incoming, lease: Lease) -> Body {
        let mut body = PooledBody {
            inner,
            lease: Some(lease),
        };
        if hyper::body::Body::is_end_stream(&body.inner) {
            body.finish(true);
        }
        Body::new(body)
    }

    fn finish(&mut self, complete: bool) {
        if let Some(mut lease) = self.lease.take() {
            lease.release(complete);
            drop(lease.keep);
        }
    }
}

impl hyper::body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        match &poll {
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.finish(true),
            _ => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        self.finish(false);
    }
}
