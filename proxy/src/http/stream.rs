//! One downstream stream's lifetime, and its connection's idleness: Envoy's downstream timers.
//!
//! - `stream_idle_timeout` (default 5 min): no request or response bytes for that long;
//! - `request_timeout` (default off): the whole request, body included, has not arrived;
//! - `max_stream_duration` (default off): the stream has lasted that long.
//!
//! Before the response starts, an expiry becomes a local reply, as in Envoy 1.40: `408` while
//! the request is still arriving (the connection then closes: its unread body cannot be
//! skipped), else `504` (the proxy was waiting on the upstream). After the response started,
//! the stream is reset. Request bytes count as activity through [`DownstreamBody`], response
//! bytes through [`StreamBody`], which also writes the access log entry when the stream ends.
//!
//! [`ConnectionStreams`] counts a connection's open streams for the connection manager's
//! `idle_timeout` (default 1 h): with no stream open for that long, the connection drains. It
//! also tells a drain when the connection has a request in flight.

use super::local_reply::{Body, BodyError, BoxError};
use super::{ConnectionContext, access_log::LogRecord};
use crate::stats::{Gauge, Histogram};
use bytes::Bytes;
use http::StatusCode;
use hyper::body::{Frame, Incoming, SizeHint};
use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// When one stream started and last moved bytes.
#[derive(Debug)]
pub struct StreamClock {
    started: Instant,
    last_activity: Cell<Instant>,
    request_complete: Cell<bool>,
    /// The connection manager's `stream_idle_timeout`, or the route's `idle_timeout`.
    idle_timeout: Cell<Option<Duration>>,
    request_timeout: Option<Duration>,
    /// The connection manager's, until the route sets its own ([`StreamClock::set_max_duration`]).
    max_duration: Cell<Option<Duration>>,
    /// Wakes [`StreamClock::expired`] when a deadline moves earlier.
    rearmed: Notify,
}

/// Which timer ended a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    StreamIdle,
    Request,
    MaxDuration,
}

impl StreamClock {
    pub fn new(ctx: &ConnectionContext, started: Instant) -> Rc<StreamClock> {
        Rc::new(StreamClock {
            started,
            last_activity: Cell::new(started),
            request_complete: Cell::new(false),
            idle_timeout: Cell::new(ctx.hcm.stream_idle_timeout),
            request_timeout: ctx.hcm.request_timeout,
            max_duration: Cell::new(ctx.hcm.max_stream_duration),
            rearmed: Notify::new(),
        })
    }

    /// The stream's maximum duration once the route is known (Envoy's `refreshDurationTimeout`:
    /// the route's `max_stream_duration` or capped `grpc-timeout`, else the connection
    /// manager's), still counted from the stream's start.
    pub fn set_max_duration(&self, max: Option<Duration>) {
        if self.max_duration.replace(max) != max {
            self.rearmed.notify_waiters();
        }
    }

    /// The route's `idle_timeout`, which replaces the connection manager's
    /// `stream_idle_timeout` (`None`: disabled).
    pub fn set_idle_timeout(&self, idle: Option<Duration>) {
        if self.idle_timeout.replace(idle) != idle {
            self.rearmed.notify_waiters();
        }
    }

    fn touch(&self) {
        self.last_activity.set(Instant::now());
    }

    /// The earliest deadline still armed, with the timer it belongs to.
    fn next_deadline(&self) -> Option<(Instant, Expiry)> {
        let idle = self
            .idle_timeout
            .get()
            .map(|t| (self.last_activity.get() + t, Expiry::StreamIdle));
        let request = self
            .request_timeout
            .filter(|_| !self.request_complete.get())
            .map(|t| (self.started + t, Expiry::Request));
        let max = self
            .max_duration
            .get()
            .map(|t| (self.started + t, Expiry::MaxDuration));
        [idle, request, max]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }

    /// Resolves when a timer expires (activity pushes the idle deadline back; the route's
    /// settings re-arm it).
    pub async fn expired(&self) -> Expiry {
        loop {
            // Created before reading the deadlines, so a change made after the read wakes it.
            let rearmed = self.rearmed.notified();
            let Some((at, _)) = self.next_deadline() else {
                rearmed.await;
                continue;
            };
            tokio::select! {
                biased;
                () = tokio::time::sleep_until(at) => {}
                () = rearmed => continue,
            }
            if let Some((due, which)) = self.next_deadline()
                && due <= Instant::now()
            {
                return which;
            }
        }
    }

    /// Whether the request's end has arrived.
    pub fn request_complete(&self) -> bool {
        self.request_complete.get()
    }

    /// Counts `expiry` in the connection manager's stats.
    pub fn count(ctx: &ConnectionContext, expiry: Expiry) {
        match expiry {
            Expiry::StreamIdle => ctx.stats.downstream_rq_idle_timeout.inc(),
            Expiry::Request => ctx.stats.downstream_rq_timeout.inc(),
            Expiry::MaxDuration => ctx.stats.downstream_rq_max_duration_reached.inc(),
        }
    }
}

impl Expiry {
    /// The `grpc-status` of the local reply: Envoy sends `DEADLINE_EXCEEDED` for a stream that
    /// outlived its duration, the status mapped from the HTTP code otherwise.
    pub fn grpc_status(self) -> Option<u32> {
        (self == Expiry::MaxDuration).then_some(4)
    }

    /// Envoy's local reply before the response started: status, body, flag, details.
    pub fn reply(
        self,
        request_complete: bool,
    ) -> (StatusCode, &'static str, &'static str, &'static str) {
        // Envoy's `maybeRequestTimeoutCode`: the request timer is disarmed once the request is
        // complete, so it always answers 408.
        let status = if request_complete {
            StatusCode::GATEWAY_TIMEOUT
        } else {
            StatusCode::REQUEST_TIMEOUT
        };
        match self {
            Expiry::StreamIdle => (status, "stream timeout", "SI", "stream_idle_timeout"),
            Expiry::Request => (status, "request timeout", "", "request_overall_timeout"),
            Expiry::MaxDuration => (
                status,
                "downstream duration timeout",
                "DT",
                "max_duration_timeout",
            ),
        }
    }
}

/// The downstream request body: marks activity and the request's end on the stream's clock.
pub struct DownstreamBody {
    inner: Incoming,
    clock: Rc<StreamClock>,
}

impl DownstreamBody {
    pub fn new(inner: Incoming, clock: Rc<StreamClock>) -> Self {
        if hyper::body::Body::is_end_stream(&inner) {
            clock.request_complete.set(true);
        }
        DownstreamBody { inner, clock }
    }
}

impl hyper::body::Body for DownstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Ok(_))) => {
                self.clock.touch();
                if self.inner.is_end_stream() {
                    self.clock.request_complete.set(true);
                }
            }
            Poll::Ready(None) => self.clock.request_complete.set(true),
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
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

/// The response body handed to hyper: enforces the stream timers once the response started,
/// writes the access log entry when the stream ends, and keeps the connection's stream count.
pub struct StreamBody {
    inner: Body,
    ctx: Rc<ConnectionContext>,
    clock: Rc<StreamClock>,
    timer: Option<Pin<Box<Sleep>>>,
    record: Option<Box<LogRecord>>,
    _open: OpenStream,
}

impl StreamBody {
    pub fn new(
        inner: Body,
        ctx: Rc<ConnectionContext>,
        clock: Rc<StreamClock>,
        record: Option<Box<LogRecord>>,
        open: OpenStream,
    ) -> Self {
        StreamBody {
            inner,
            ctx,
            clock,
            timer: None,
            record,
            _open: open,
        }
    }

    fn finish(&mut self) {
        if let Some(mut record) = self.record.take() {
            record.duration = self.clock.started.elapsed();
            for sink in &self.ctx.hcm.access_log {
                sink.log(&record);
            }
        }
    }

    /// After the response started only the idle and duration timers apply.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<Expiry> {
        let idle = self
            .clock
            .idle_timeout
            .get()
            .map(|t| (self.clock.last_activity.get() + t, Expiry::StreamIdle));
        let max = self
            .clock
            .max_duration
            .get()
            .map(|t| (self.clock.started + t, Expiry::MaxDuration));
        let (at, which) = [idle, max]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)?;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if timer.deadline() != at {
            timer.as_mut().reset(at);
        }
        timer.as_mut().poll(cx).is_ready().then_some(which)
    }
}

impl hyper::body::Body for StreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        match &poll {
            Poll::Ready(Some(Ok(frame))) => {
                self.clock.touch();
                if let Some(record) = self.record.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        record.bytes_sent += data.len() as u64;
                    } else if let Some(trailers) = frame.trailers_ref() {
                        record.response_trailers = trailers.clone();
                    }
                }
                if self.inner.is_end_stream() {
                    self.finish();
                }
            }
            Poll::Ready(_) => self.finish(),
            Poll::Pending => {
                if let Some(expiry) = self.expired(cx) {
                    StreamClock::count(&self.ctx, expiry);
                    if let Some(record) = self.record.as_mut() {
                        record.response_flags = expiry.reply(true).2.to_string();
                    }
                    self.finish();
                    return Poll::Ready(Some(Err(Box::new(BodyError(
                        "downstream stream timeout",
                    )))));
                }
            }
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

impl Drop for StreamBody {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A connection's streams: how many are open (watched by its idle timer, and by a drain, which
/// waits for the next request before closing an HTTP/1 connection).
///
/// Opening and closing a stream only updates cells: the idle timer does not follow each stream
/// but checks the count when it fires (see [`ConnectionStreams::idle_for`]), so a keep-alive
/// connection's requests arm no timer and wake no task.
#[derive(Debug)]
pub struct ConnectionStreams(Rc<StreamsState>);

#[derive(Debug)]
struct StreamsState {
    open: Cell<usize>,
    /// When the last open stream closed (the connection's start before its first stream).
    idle_since: Cell<Instant>,
    /// Tasks waiting in [`ConnectionStreams::busy`], woken by the next stream that opens.
    busy_waiters: RefCell<Vec<Waker>>,
}

impl Default for ConnectionStreams {
    fn default() -> Self {
        ConnectionStreams(Rc::new(StreamsState {
            open: Cell::new(0),
            idle_since: Cell::new(Instant::now()),
            busy_waiters: RefCell::default(),
        }))
    }
}

impl ConnectionStreams {
    /// Counts a stream as open until the returned guard drops, here and in `active` (Envoy's
    /// `downstream_rq_active`); the drop also records the stream's time in `rq_time` (Envoy's
    /// `downstream_rq_time`). Both hold however the stream ends: response sent, reset, or the
    /// client gone before the response.
    pub fn open(&self, active: Gauge, rq_time: Histogram) -> OpenStream {
        let state = &self.0;
        state.open.set(state.open.get() + 1);
        let waiters = std::mem::take(&mut *state.busy_waiters.borrow_mut());
        for waiter in waiters {
            waiter.wake();
        }
        active.inc();
        OpenStream {
            streams: self.0.clone(),
            started: Instant::now(),
            active,
            rq_time,
        }
    }

    /// Resolves once no stream has been open for `timeout`. The timer fires at the earliest
    /// time that can be: `timeout` after the last stream closed, or after now while one is
    /// open; it then looks again.
    pub async fn idle_for(&self, timeout: Duration) {
        loop {
            let now = Instant::now();
            let at = match self.0.open.get() {
                0 => self.0.idle_since.get() + timeout,
                _ => now + timeout,
            };
            if at <= now {
                return;
            }
            tokio::time::sleep_until(at).await;
        }
    }

    /// Resolves while a stream is open (at once if one is).
    pub async fn busy(&self) {
        std::future::poll_fn(|cx| {
            if self.0.open.get() > 0 {
                return Poll::Ready(());
            }
            let mut waiters = self.0.busy_waiters.borrow_mut();
            if !waiters.iter().any(|w| w.will_wake(cx.waker())) {
                waiters.push(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
    }
}

/// One open stream (see [`ConnectionStreams::open`]).
#[derive(Debug)]
pub struct OpenStream {
    streams: Rc<StreamsState>,
    started: Instant,
    active: Gauge,
    rq_time: Histogram,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        let now = Instant::now();
        let state = &self.streams;
        let open = state.open.get().saturating_sub(1);
        state.open.set(open);
        if open == 0 {
            state.idle_since.set(now);
        }
        self.active.dec();
        self.rq_time.record_duration(now - self.started);
    }
}
