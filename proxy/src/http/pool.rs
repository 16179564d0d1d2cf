//! Upstream HTTP connection pools, one set per worker, keyed by cluster, host and protocol.
//!
//! HTTP/1.1 connections are reused one request at a time: a connection goes back to the idle
//! list when its response body has been read to the end, and is closed after the cluster's idle
//! timeout or `max_requests_per_connection`. One reaper task per host pool closes idle
//! connections whose timeout passed; nothing the pool keeps grows with the requests it served. HTTP/2 connections are shared by concurrent streams
//! up to the cluster's `max_concurrent_streams`; a new connection is opened beyond that. A
//! request that a reused connection never sent (the peer closed it first) is resent on a fresh
//! connection, which is what makes keep-alive safe.
//!
//! A request that finds no free connection or stream is *pending*, as in Envoy: it counts against
//! the cluster's `max_pending_requests` (across workers; over it the request fails at once with
//! [`Failure::Overflow`]) and opens a connection if `max_connections` allows (or the pool has
//! none at all), else waits in its host pool's queue. A waiter is handed the next HTTP/1.1
//! connection that frees up, or woken to look again when a stream ends, a connection closes or
//! an HTTP/2 connection comes up; a failed connect fails every waiter of that pool (Envoy's
//! pending-request purge). A waiter leaves the queue when its future is dropped (route timeout,
//! client gone).

use super::io::LocalExec;
use super::local_reply::Body;
use crate::config::cluster::UpstreamHttp;
use crate::config::tls::TlsContext;
use crate::snapshot::ClusterEntry;
use crate::snapshot::HostStats;
use crate::stats::Counter;
use crate::upstream::{self, ConnectError, Destination, UpstreamConnection};
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioIo, TokioTimer};
use key::{AsPoolKey, Fnv1a, PoolKey, PoolKeyRef};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// Why a request got no response from upstream.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The `max_pending_requests` circuit breaker is open.
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

/// One worker's pools.
#[derive(Default)]
pub struct Pools {
    hosts: RefCell<HashMap<PoolKey, Rc<HostPool>, BuildHasherDefault<Fnv1a>>>,
}

#[derive(Default)]
struct HostPool {
    idle: RefCell<Vec<IdleConnection>>,
    h2: RefCell<Vec<H2Connection>>,
    /// Connections of this pool, open or being opened.
    connections: Cell<u32>,
    /// HTTP/2 connections being opened: their streams are spoken for by the waiters.
    h2_connecting: Cell<u32>,
    /// Pending requests waiting for a connection or a stream, oldest first.
    waiters: RefCell<VecDeque<oneshot::Sender<Wake>>>,
    /// Whether this pool's idle reaper task runs (at most one per pool, see [`HostPool::reap`]).
    reaping: Cell<bool>,
}

/// What a waiting request is told.
enum Wake {
    /// A free HTTP/1.1 connection, handed over.
    Idle(IdleConnection),
    /// Capacity may have freed up (a stream ended, a connection closed or came up): look again.
    Retry,
    /// A connection attempt of this pool failed.
    ConnectFailed(ConnectError),
}

struct IdleConnection {
    /// When the cluster's idle timeout closes it, if it is still idle then.
    expires: Option<Instant>,
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
    /// Where `upstream_rq_time` counts from.
    started: Instant,
}

enum LeaseKind {
    H1 {
        sender: http1::SendRequest<Body>,
        requests: u32,
    },
    H2 {
        streams: Rc<Cell<u32>>,
    },
    /// Given back already.
    Released,
}

impl Pools {
    /// Sends `request` to `address` of `cluster` (a host whose counters are `host`), reusing a
    /// pooled connection when there is one. `keep` is dropped when the response body ends (or the
    /// response is dropped).
    pub async fn send(
        self: &Rc<Self>,
        cluster: &Arc<ClusterEntry>,
        destination: &Destination,
        http2: bool,
        request: Request<Body>,
        keep: Box<dyn std::any::Any>,
    ) -> Result<Response<Body>, Failure> {
        self.send_from(Instant::now(), cluster, destination, http2, request, keep)
            .await
    }

    /// [`Pools::send`] for a request that started at `started`: `upstream_rq_time` counts from
    /// there to the end of the upstream response.
    pub async fn send_from(
        self: &Rc<Self>,
        started: Instant,
        cluster: &Arc<ClusterEntry>,
        destination: &Destination,
        http2: bool,
        mut request: Request<Body>,
        keep: Box<dyn std::any::Any>,
    ) -> Result<Response<Body>, Failure> {
        let key = PoolKeyRef {
            cluster: &cluster.config.name,
            address: destination.address,
            http2,
            tls: destination.tls.is_some(),
        };
        let found = self.hosts.borrow().get(&key as &dyn AsPoolKey).cloned();
        let pool = match found {
            Some(pool) => pool,
            None => {
                let key = PoolKey {
                    cluster: key.cluster.to_string(),
                    address: key.address,
                    http2: key.http2,
                    tls: key.tls,
                };
                self.hosts.borrow_mut().entry(key).or_default().clone()
            }
        };
        let settings = cluster.config.http.clone();
        let stats = &cluster.stats.http;
        let target = Target {
            cluster,
            address: destination.address,
            host: &destination.stats,
            tls: destination.tls.as_deref(),
            pool: &pool,
        };
        if http2 {
            let (sender, streams) = self.h2_stream(&target, &settings).await?;
            let mut lease = Lease {
                pool: pool.clone(),
                settings,
                cluster: cluster.clone(),
                kind: LeaseKind::H2 { streams },
                keep,
                started,
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
            let (mut sender, requests, reused) = self.h1_connection(&target).await?;
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let lease = Lease {
                        pool: pool.clone(),
                        settings,
                        cluster: cluster.clone(),
                        kind: LeaseKind::H1 {
                            sender,
                            requests: requests + 1,
                        },
                        keep,
                        started,
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

    /// An HTTP/1.1 connection for one request: idle, new, or handed over after waiting.
    /// Returns the sender, its requests so far and whether it was used before.
    async fn h1_connection(
        &self,
        target: &Target<'_>,
    ) -> Result<(http1::SendRequest<Body>, u32, bool), Failure> {
        let pool = target.pool;
        let mut pending: Option<Pending> = None;
        loop {
            if let Some(idle) = pool.take_h1() {
                return Ok((idle.sender, idle.requests, true));
            }
            let pending = match &mut pending {
                Some(p) => p,
                None => pending.insert(Pending::enter(target.cluster)?),
            };
            if pool.may_connect(target.cluster) {
                let sender = match self.connect_h1(target).await {
                    Ok(sender) => sender,
                    Err(failure) => {
                        pending.eject();
                        return Err(failure);
                    }
                };
                return Ok((sender, 0, false));
            }
            target.cluster.stats.upstream_cx_overflow.inc();
            match pool.wait().await {
                Wake::Idle(idle) => return Ok((idle.sender, idle.requests, true)),
                Wake::Retry => {}
                Wake::ConnectFailed(e) => {
                    pending.eject();
                    return Err(Failure::Connect(e));
                }
            }
        }
    }

    /// A stream on a shared HTTP/2 connection, opening one when none has room.
    async fn h2_stream(
        &self,
        target: &Target<'_>,
        settings: &UpstreamHttp,
    ) -> Result<(http2::SendRequest<Body>, Rc<Cell<u32>>), Failure> {
        let pool = target.pool;
        let max_streams = settings.http2.max_concurrent_streams.max(1);
        let mut pending: Option<Pending> = None;
        loop {
            if let Some((sender, streams, requests)) = pool.take_h2(settings) {
                streams.set(streams.get() + 1);
                requests.set(requests.get() + 1);
                return Ok((sender, streams));
            }
            let pending = match &mut pending {
                Some(p) => p,
                None => pending.insert(Pending::enter(target.cluster)?),
            };
            // Streams of a connection still being opened go to the requests already waiting.
            let spoken_for = pool.h2_connecting.get().saturating_mul(max_streams);
            let covered = (pool.live_waiters() as u32) < spoken_for;
            if !covered && pool.may_connect(target.cluster) {
                pool.h2_connecting.set(pool.h2_connecting.get() + 1);
                let connected = self.connect_h2(target, settings).await;
                pool.h2_connecting.set(pool.h2_connecting.get() - 1);
                let sender = match connected {
                    Ok(sender) => sender,
                    Err(failure) => {
                        pending.eject();
                        return Err(failure);
                    }
                };
                let streams = Rc::new(Cell::new(1));
                pool.h2.borrow_mut().push(H2Connection {
                    sender: sender.clone(),
                    streams: streams.clone(),
                    requests: Rc::new(Cell::new(1)),
                });
                for _ in 1..max_streams {
                    if !pool.wake_one() {
                        break;
                    }
                }
                return Ok((sender, streams));
            }
            if !covered {
                target.cluster.stats.upstream_cx_overflow.inc();
            }
            match pool.wait().await {
                Wake::Idle(_) | Wake::Retry => {}
                Wake::ConnectFailed(e) => {
                    pending.eject();
                    return Err(Failure::Connect(e));
                }
            }
        }
    }

    async fn connect_h1(&self, target: &Target<'_>) -> Result<http1::SendRequest<Body>, Failure> {
        let guard = PoolConnection::open(target);
        let stream = open(target).await?;
        let cluster = target.cluster;
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
        target: &Target<'_>,
        settings: &UpstreamHttp,
    ) -> Result<http2::SendRequest<Body>, Failure> {
        let guard = PoolConnection::open(target);
        let stream = open(target).await?;
        target.cluster.stats.http.upstream_cx_http2_total.inc();
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

/// Where one request goes: its cluster, host and this worker's pool for them.
struct Target<'a> {
    cluster: &'a Arc<ClusterEntry>,
    address: SocketAddr,
    host: &'a Arc<HostStats>,
    /// The endpoint's TLS context (`None`: plaintext); see [`upstream::connect`].
    tls: Option<&'a TlsContext>,
    pool: &'a Rc<HostPool>,
}

/// A request in the pending state: holds one of the cluster's `max_pending_requests` slots.
struct Pending {
    cluster: Arc<ClusterEntry>,
}

impl Pending {
    /// Takes a slot, or counts the overflow.
    fn enter(cluster: &Arc<ClusterEntry>) -> Result<Pending, Failure> {
        let stats = &cluster.stats.http;
        let max = cluster.config.circuit_breakers.max_pending_requests;
        let taken = stats
            .pending_active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            });
        match taken {
            Ok(before) => {
                stats.upstream_rq_pending_total.inc();
                stats.upstream_rq_pending_active.inc();
                stats
                    .circuit_breakers_rq_pending_open
                    .set(i64::from(before + 1 >= max));
                Ok(Pending {
                    cluster: cluster.clone(),
                })
            }
            Err(_) => {
                stats.upstream_rq_pending_overflow.inc();
                stats.circuit_breakers_rq_pending_open.set(1);
                Err(Failure::Overflow)
            }
        }
    }

    /// The request leaves the queue because a connect attempt failed.
    fn eject(&self) {
        self.cluster
            .stats
            .http
            .upstream_rq_pending_failure_eject
            .inc();
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let stats = &self.cluster.stats.http;
        let before = stats.pending_active.fetch_sub(1, Ordering::AcqRel);
        stats.upstream_rq_pending_active.dec();
        let max = self.cluster.config.circuit_breakers.max_pending_requests;
        stats
            .circuit_breakers_rq_pending_open
            .set(i64::from(before.saturating_sub(1) >= max));
    }
}

/// An upstream connection as its pool counts it: open or opening. Counted on the cluster from
/// the start of the connect, as Envoy does; when it ends, a waiter looks again.
struct PoolConnection {
    _counted: UpstreamConnection,
    pool: std::rc::Weak<HostPool>,
}

impl PoolConnection {
    fn open(target: &Target<'_>) -> Self {
        let pool = target.pool;
        pool.connections.set(pool.connections.get() + 1);
        PoolConnection {
            _counted: UpstreamConnection::open(target.cluster, target.host),
            pool: Rc::downgrade(pool),
        }
    }
}

impl Drop for PoolConnection {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.connections
                .set(pool.connections.get().saturating_sub(1));
            pool.wake_one();
        }
    }
}

/// Connects, counting connect time, failures and timeouts on the cluster and host. A failure
/// fails the requests waiting in the pool too.
async fn open(target: &Target<'_>) -> Result<tokio::net::TcpStream, Failure> {
    let cluster = target.cluster;
    let started = Instant::now();
    match upstream::connect(
        target.address,
        cluster.config.bind_source,
        cluster.config.connect_timeout,
        target.tls,
    )
    .await
    {
        Ok(s) => {
            cluster
                .stats
                .upstream_cx_connect_ms
                .record_duration(started.elapsed());
            Ok(s)
        }
        Err(e) => {
            cluster.stats.upstream_cx_connect_fail.inc();
            if matches!(e, ConnectError::Timeout(_)) {
                cluster.stats.upstream_cx_connect_timeout.inc();
            }
            target.host.cx_connect_fail.fetch_add(1, Ordering::Relaxed);
            target.pool.fail_waiters(&e);
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
    /// Whether a request may open another connection: under the cluster's `max_connections`,
    /// or this pool has none at all (Envoy's guard against a queue nothing would ever serve).
    fn may_connect(&self, cluster: &ClusterEntry) -> bool {
        self.connections.get() == 0
            || cluster.stats.upstream_cx_active.value()
                < i64::from(cluster.config.circuit_breakers.max_connections)
    }

    /// Joins the queue; the answer comes when capacity frees up.
    async fn wait(&self) -> Wake {
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = self.waiters.borrow_mut();
            waiters.retain(|w| !w.is_closed());
            waiters.push_back(tx);
        }
        rx.await.unwrap_or(Wake::Retry)
    }

    fn live_waiters(&self) -> usize {
        let mut waiters = self.waiters.borrow_mut();
        waiters.retain(|w| !w.is_closed());
        waiters.len()
    }

    /// Tells the oldest live waiter to look again; false when nobody waits.
    fn wake_one(&self) -> bool {
        loop {
            let Some(waiter) = self.waiters.borrow_mut().pop_front() else {
                return false;
            };
            if waiter.send(Wake::Retry).is_ok() {
                return true;
            }
        }
    }

    /// Hands a free HTTP/1.1 connection to the oldest live waiter; gives it back if none.
    fn hand_over(&self, mut connection: IdleConnection) -> Option<IdleConnection> {
        loop {
            let Some(waiter) = self.waiters.borrow_mut().pop_front() else {
                return Some(connection);
            };
            match waiter.send(Wake::Idle(connection)) {
                Ok(()) => return None,
                Err(Wake::Idle(back)) => connection = back,
                Err(_) => return None,
            }
        }
    }

    /// Envoy's purge on a failed connect: every waiting request fails with it.
    fn fail_waiters(&self, error: &ConnectError) {
        let waiters: Vec<_> = self.waiters.borrow_mut().drain(..).collect();
        for waiter in waiters {
            let _ = waiter.send(Wake::ConnectFailed(error.replicate()));
        }
    }

    /// A ready HTTP/1.1 connection comes back: a waiting request takes it first, else it goes
    /// idle until `idle_timeout` (closed then by the pool's reaper, counted in `closed`).
    fn give_back(
        self: &Rc<Self>,
        sender: http1::SendRequest<Body>,
        requests: u32,
        idle_timeout: Option<Duration>,
        closed: Counter,
    ) {
        let idle = IdleConnection {
            expires: idle_timeout.map(|t| Instant::now() + t),
            sender,
            requests,
        };
        let Some(idle) = self.hand_over(idle) else {
            return;
        };
        let expires = idle.expires;
        self.idle.borrow_mut().push(idle);
        if expires.is_some() && !self.reaping.replace(true) {
            tokio::task::spawn_local(HostPool::reap(Rc::downgrade(self), closed));
        }
    }

    /// The pool's one idle timer: sleeps until the earliest idle deadline, closes the idle
    /// connections whose deadline passed, and ends when none is left idle with a deadline (the
    /// next [`HostPool::give_back`] starts it again). One task per pool, however many requests
    /// went through it: a timer per request would live as long as the idle timeout (1 h by
    /// default) and hold memory for every request of that hour.
    async fn reap(pool: std::rc::Weak<HostPool>, closed: Counter) {
        loop {
            let next = {
                let Some(host) = pool.upgrade() else { return };
                let now = Instant::now();
                let mut idle = host.idle.borrow_mut();
                let before = idle.len();
                idle.retain(|c| c.expires.is_none_or(|at| at > now) && !c.sender.is_closed());
                let expired = before - idle.len();
                if expired > 0 {
                    closed.add(expired as u64);
                }
                let next = idle.iter().filter_map(|c| c.expires).min();
                if next.is_none() {
                    host.reaping.set(false);
                }
                next
            };
            let Some(at) = next else { return };
            tokio::time::sleep_until(at).await;
        }
    }

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
        match std::mem::replace(&mut self.kind, LeaseKind::Released) {
            LeaseKind::Released => {}
            LeaseKind::H2 { streams } => {
                streams.set(streams.get().saturating_sub(1));
                self.pool.wake_one();
            }
            LeaseKind::H1 { sender, requests } => {
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
                let idle_timeout = self.settings.idle_timeout;
                let stats = self.cluster.stats.http.upstream_cx_idle_timeout.clone();
                // The connection takes the next request once hyper has finished this exchange,
                // which it often has by the time the body ended.
                if sender.is_ready() {
                    self.pool.give_back(sender, requests, idle_timeout, stats);
                    return;
                }
                let pool = Rc::downgrade(&self.pool);
                let mut sender = sender;
                tokio::task::spawn_local(async move {
                    if sender.ready().await.is_err() {
                        return;
                    }
                    if let Some(host) = pool.upgrade() {
                        host.give_back(sender, requests, idle_timeout, stats);
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
            if complete {
                let stats = &lease.cluster.stats.http;
                stats
                    .upstream_rq_time
                    .record_duration(lease.started.elapsed());
            }
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

mod key;
#[cfg(test)]
mod tests;
