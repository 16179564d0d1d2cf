//! The in-tree load generator: HTTP/1.1 keep-alive over N connections, h2c GETs or gRPC unary
//! calls over one connection, closed loop (saturation) or open loop (constant arrival rate),
//! HTTP/1.1 connection churn (one request per connection), plus a TCP bulk writer.
//!
//! Every load runs on the harness runtime (core 0) and measures only inside a [`Window`]: the
//! load starts at once, the first `warmup` is not counted, and it stops at the window's end.
//!
//! Open-loop latency is corrected for coordinated omission: request `i` has an intended send
//! time `t0 + i / rate`. On HTTP/1.1 a connection carries every N-th request; when the previous
//! response on it arrived after the next intended time (the path under test held it up), the
//! latency is counted from the intended time, not from the late send. When the connection was
//! idle, it is counted from the actual send, so the runtime's 1 ms timer granularity is not
//! charged to the proxy. h2c streams never wait for each other, so each counts from its send.
//! Percentiles come from the `hdrhistogram` crate (microseconds, 3 significant digits).

use crate::{backend, grpc};
use bytes::{Buf, Bytes, BytesMut};
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// When a load counts: completions (closed loop) or intended sends (open loop) in [start, end).
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    pub fn after(warmup: Duration, duration: Duration) -> Window {
        let start = Instant::now() + warmup;
        Window {
            start,
            end: start + duration,
        }
    }

    fn contains(&self, t: Instant) -> bool {
        t >= self.start && t < self.end
    }

    pub fn seconds(&self) -> f64 {
        (self.end - self.start).as_secs_f64()
    }
}

/// What one load achieved inside its window.
#[derive(Debug)]
pub struct Outcome {
    pub completed: u64,
    pub errors: u64,
    /// Latency in microseconds (open loop only).
    pub latency: Option<Histogram<u64>>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// One HTTP/1.1 keep-alive connection sending a fixed GET and reading `Content-Length` bodies.
/// A hand-rolled client (httparse for the head) keeps core 0's cost per request low.
pub struct H1Connection {
    stream: TcpStream,
    buf: BytesMut,
    request: Bytes,
}

impl H1Connection {
    pub async fn connect(target: SocketAddr, path: &str) -> std::io::Result<H1Connection> {
        let stream = TcpStream::connect(target).await?;
        stream.set_nodelay(true)?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
        Ok(H1Connection {
            stream,
            buf: BytesMut::with_capacity(8192),
            request: Bytes::from(request),
        })
    }

    /// Sends the request and reads one whole 200 response.
    async fn round_trip(&mut self) -> std::io::Result<()> {
        self.header_round_trip("").await.map(drop)
    }

    /// Sends the request and reads one whole 200 response; returns its header `name` (`""`:
    /// none wanted).
    pub async fn header_round_trip(&mut self, name: &str) -> std::io::Result<Option<String>> {
        self.stream.write_all(&self.request).await?;
        loop {
            if let Some((total, value)) = complete_response(&self.buf, name)? {
                self.buf.advance(total);
                return Ok(value);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

/// The length of the first whole response in `buf`, if it is all there, with the value of its
/// header `wanted`.
fn complete_response(buf: &[u8], wanted: &str) -> std::io::Result<Option<(usize, Option<String>)>> {
    let invalid = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buf) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(invalid(format!("bad response head: {e}"))),
    };
    if response.code != Some(200) {
        return Err(invalid(format!("status {:?}", response.code)));
    }
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| {
            std::str::from_utf8(h.value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .ok_or_else(|| invalid("response without Content-Length".into()))?;
    if buf.len() < head + length {
        return Ok(None);
    }
    let value = response
        .headers
        .iter()
        .find(|h| !wanted.is_empty() && h.name.eq_ignore_ascii_case(wanted))
        .map(|h| String::from_utf8_lossy(h.value).into_owned());
    Ok(Some((head + length, value)))
}

/// Closed loop: `connections` HTTP/1.1 connections, each sending its next GET of `path` as soon
/// as the previous response is in. Counts responses completed inside the window.
pub async fn h1_closed(
    target: SocketAddr,
    connections: usize,
    path: String,
    window: Window,
) -> Outcome {
    let path: Arc<str> = Arc::from(path);
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(async move {
                let (mut completed, mut errors) = (0u64, 0u64);
                let mut connection = None;
                while Instant::now() < window.end {
                    let conn = match connection.as_mut() {
                        Some(conn) => conn,
                        None => match H1Connection::connect(target, &path).await {
                            Ok(conn) => connection.insert(conn),
                            Err(_) => {
                                errors += 1;
                                tokio::time::sleep(Duration::from_millis(10)).await;
                                continue;
                            }
                        },
                    };
                    match conn.round_trip().await {
                        Ok(()) if window.contains(Instant::now()) => completed += 1,
                        Ok(()) => {}
                        Err(_) => {
                            errors += 1;
                            connection = None;
                        }
                    }
                }
                (completed, errors)
            })
        })
        .collect();
    closed_outcome(tasks).await
}

/// Open loop: `rate` requests per second spread over `connections` HTTP/1.1 connections
/// (connection `c` carries requests c, c + N, c + 2N, ...), latency corrected as the module says.
pub async fn h1_open(
    target: SocketAddr,
    connections: usize,
    rate: f64,
    body: usize,
    window: Window,
) -> Outcome {
    let t0 = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            tokio::spawn(async move {
                let mut latency = histogram();
                let (mut completed, mut errors) = (0u64, 0u64);
                let mut connection = None;
                let mut previous_done = t0;
                for k in 0u32.. {
                    let intended = t0 + interval * (c as u32 + k * connections as u32);
                    if intended >= window.end {
                        break;
                    }
                    tokio::time::sleep_until(intended).await;
                    let conn = match connection.as_mut() {
                        Some(conn) => conn,
                        None => {
                            match H1Connection::connect(target, backend::path_for(body)).await {
                                Ok(conn) => connection.insert(conn),
                                Err(_) => {
                                    errors += 1;
                                    continue;
                                }
                            }
                        }
                    };
                    let sent = Instant::now();
                    let result = conn.round_trip().await;
                    let done = Instant::now();
                    let from = if previous_done > intended {
                        intended
                    } else {
                        sent
                    };
                    previous_done = done;
                    match result {
                        Ok(()) if window.contains(intended) => {
                            completed += 1;
                            let _ = latency.record(micros(done - from));
                        }
                        Ok(()) => {}
                        Err(_) => {
                            errors += 1;
                            connection = None;
                        }
                    }
                }
                (completed, errors, latency)
            })
        })
        .collect();
    let mut outcome = Outcome {
        completed: 0,
        errors: 0,
        latency: Some(histogram()),
    };
    for task in tasks {
        match task.await {
            Ok((completed, errors, latency)) => {
                outcome.completed += completed;
                outcome.errors += errors;
                if let Some(h) = outcome.latency.as_mut() {
                    let _ = h.add(&latency);
                }
            }
            Err(_) => outcome.errors += 1,
        }
    }
    outcome
}

type H2Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// What every stream of an h2c load asks: a GET for a body size, or a gRPC unary call.
#[derive(Debug, Clone)]
pub enum H2Call {
    Get(http::Uri),
    Grpc { uri: http::Uri, body: Bytes },
}

impl H2Call {
    /// A GET answered with a `body`-byte body.
    pub fn get(target: SocketAddr, body: usize) -> H2Call {
        H2Call::Get(uri(target, backend::path_for(body)))
    }

    /// A unary call to the gRPC echo backend with a `payload`-byte message each way.
    pub fn grpc(target: SocketAddr, payload: usize) -> H2Call {
        H2Call::Grpc {
            uri: uri(target, grpc::UNARY_PATH),
            body: grpc::request_body(payload),
        }
    }
}

async fn h2_connect(target: SocketAddr) -> anyhow::Result<H2Sender> {
    let stream = TcpStream::connect(target).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One stream: the call, its whole response, and (gRPC) its `grpc-status` checked to be 0.
async fn h2_call(sender: &mut H2Sender, call: &H2Call) -> anyhow::Result<()> {
    let request = match call {
        H2Call::Get(uri) => http::Request::get(uri.clone()).body(Full::new(Bytes::new()))?,
        H2Call::Grpc { uri, body } => http::Request::post(uri.clone())
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(Full::new(body.clone()))?,
    };
    let response = sender.send_request(request).await?;
    anyhow::ensure!(response.status() == 200, "status {}", response.status());
    let (parts, body) = response.into_parts();
    let collected = body.collect().await?;
    if matches!(call, H2Call::Grpc { .. }) {
        let status = grpc::status_of(&parts.headers, collected.trailers());
        anyhow::ensure!(status.as_deref() == Some("0"), "grpc-status {status:?}");
    }
    Ok(())
}

fn uri(target: SocketAddr, path: &str) -> http::Uri {
    format!("http://{target}{path}")
        .parse()
        .expect("a valid URI")
}

/// One h2c call on a fresh connection: the readiness probe for h2-only listeners.
pub async fn h2_probe(target: SocketAddr, call: H2Call) -> anyhow::Result<()> {
    let mut sender = h2_connect(target).await?;
    tokio::time::timeout(Duration::from_secs(2), h2_call(&mut sender, &call)).await?
}

/// One HTTP/1.1 GET of `path` on a fresh connection: the readiness probe for HTTP/1.1 listeners.
pub async fn h1_probe(target: SocketAddr, path: &str) -> anyhow::Result<()> {
    let mut conn = H1Connection::connect(target, path).await?;
    tokio::time::timeout(Duration::from_secs(2), conn.round_trip()).await??;
    Ok(())
}

/// Closed loop over one h2c connection: `streams` requests always in flight.
pub async fn h2_closed(
    target: SocketAddr,
    streams: usize,
    call: H2Call,
    window: Window,
) -> Outcome {
    let failed = Outcome {
        completed: 0,
        errors: 1,
        latency: None,
    };
    let Ok(sender) = h2_connect(target).await else {
        return failed;
    };
    let tasks: Vec<_> = (0..streams)
        .map(|_| {
            let mut sender = sender.clone();
            let call = call.clone();
            tokio::spawn(async move {
                let (mut completed, mut errors) = (0u64, 0u64);
                while Instant::now() < window.end {
                    match h2_call(&mut sender, &call).await {
                        Ok(()) if window.contains(Instant::now()) => completed += 1,
                        Ok(()) => {}
                        Err(_) => {
                            errors += 1;
                            if sender.is_closed() {
                                break;
                            }
                        }
                    }
                }
                (completed, errors)
            })
        })
        .collect();
    closed_outcome(tasks).await
}

/// Open loop over one h2c connection: a stream started every `1 / rate` seconds.
pub async fn h2_open(target: SocketAddr, rate: f64, call: H2Call, window: Window) -> Outcome {
    let mut outcome = Outcome {
        completed: 0,
        errors: 0,
        latency: Some(histogram()),
    };
    let Ok(sender) = h2_connect(target).await else {
        outcome.errors = 1;
        return outcome;
    };
    let call = Arc::new(call);
    open_loop(rate, window, outcome, move || {
        let (mut sender, call) = (sender.clone(), call.clone());
        async move { h2_call(&mut sender, &call).await.is_ok() }
    })
    .await
}

/// One TCP stream writing 256 KiB chunks to `target` until the window ends. The bytes that
/// count are the ones the backend sink received inside the window (read by the caller).
pub async fn tcp_bulk(target: SocketAddr, window: Window) -> Outcome {
    let mut outcome = Outcome {
        completed: 0,
        errors: 0,
        latency: None,
    };
    let Ok(mut stream) = TcpStream::connect(target).await else {
        outcome.errors = 1;
        return outcome;
    };
    let chunk = vec![0x5au8; 256 << 10];
    while Instant::now() < window.end {
        if stream.write_all(&chunk).await.is_err() {
            outcome.errors += 1;
            break;
        }
    }
    let _ = stream.shutdown().await;
    outcome
}

/// One request on its own connection (`Connection: close`): connect, send, read the response
/// until the server closes. The server closing first keeps TIME_WAIT off the client's ports.
async fn churn_once(target: SocketAddr, buf: &mut BytesMut) -> std::io::Result<()> {
    const REQUEST: &[u8] = b"GET /64 HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
    let exchange = async {
        let mut stream = TcpStream::connect(target).await?;
        stream.set_nodelay(true)?;
        stream.write_all(REQUEST).await?;
        buf.clear();
        while stream.read_buf(buf).await? > 0 {}
        match complete_response(buf, "")? {
            Some(_) => Ok(()),
            None => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

/// Connection churn, closed loop: `concurrency` clients, each opening a connection per request
/// (`Connection: close`, 64 B) as soon as the previous one is done.
pub async fn h1_churn_closed(target: SocketAddr, concurrency: usize, window: Window) -> Outcome {
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            tokio::spawn(async move {
                let (mut completed, mut errors) = (0u64, 0u64);
                let mut buf = BytesMut::with_capacity(4096);
                while Instant::now() < window.end {
                    match churn_once(target, &mut buf).await {
                        Ok(()) if window.contains(Instant::now()) => completed += 1,
                        Ok(()) => {}
                        Err(_) => errors += 1,
                    }
                }
                (completed, errors)
            })
        })
        .collect();
    closed_outcome(tasks).await
}

/// Connection churn, open loop: a new connection carrying one request (`Connection: close`,
/// 64 B) every `1 / rate` seconds; latency (connect included) from each one's start.
pub async fn h1_churn_open(target: SocketAddr, rate: f64, window: Window) -> Outcome {
    let outcome = Outcome {
        completed: 0,
        errors: 0,
        latency: Some(histogram()),
    };
    open_loop(rate, window, outcome, move || async move {
        churn_once(target, &mut BytesMut::with_capacity(1024))
            .await
            .is_ok()
    })
    .await
}

/// Starts `one()` every `1 / rate` seconds until the window ends, each as its own task, and
/// tallies the latency (from its start) of those whose intended start the window contains;
/// `one` tells whether the request succeeded.
async fn open_loop<F, Fut>(rate: f64, window: Window, outcome: Outcome, one: F) -> Outcome
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Option<u64>>();
    let t0 = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    tokio::spawn(async move {
        for i in 0u32.. {
            let intended = t0 + interval * i;
            if intended >= window.end {
                break;
            }
            tokio::time::sleep_until(intended).await;
            let (request, tx) = (one(), tx.clone());
            tokio::spawn(async move {
                let sent = Instant::now();
                let ok = request.await;
                let latency = micros(Instant::now() - sent);
                if window.contains(intended) {
                    let _ = tx.send(ok.then_some(latency));
                }
            });
        }
    });
    tally(rx, outcome).await
}

/// Sums the closed-loop tasks' `(completed, errors)`; a task that died counts as one error.
async fn closed_outcome(tasks: Vec<tokio::task::JoinHandle<(u64, u64)>>) -> Outcome {
    let mut outcome = Outcome {
        completed: 0,
        errors: 0,
        latency: None,
    };
    for task in tasks {
        let (completed, errors) = task.await.unwrap_or((0, 1));
        outcome.completed += completed;
        outcome.errors += errors;
    }
    outcome
}

/// Adds each open-loop sample (a latency in µs, or `None` for a failed request) to `outcome`
/// until every sender is gone.
async fn tally(
    mut samples: tokio::sync::mpsc::UnboundedReceiver<Option<u64>>,
    mut outcome: Outcome,
) -> Outcome {
    while let Some(sample) = samples.recv().await {
        match sample {
            Some(us) => {
                outcome.completed += 1;
                if let Some(h) = outcome.latency.as_mut() {
                    let _ = h.record(us);
                }
            }
            None => outcome.errors += 1,
        }
    }
    outcome
}

/// A counter shared with the backend's TCP sink.
pub type ByteCounter = Arc<AtomicU64>;

pub fn read_counter(counter: &ByteCounter) -> u64 {
    counter.load(Ordering::Relaxed)
}
