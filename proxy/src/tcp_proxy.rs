//! `envoy.filters.network.tcp_proxy`: choose a cluster and host, connect (with retries to other
//! hosts up to `max_connect_attempts`), then relay bytes both ways until both sides have closed.
//!
//! Half-close is honoured: when one side ends its stream, the other side's write half is shut
//! down and bytes keep flowing the other way until it ends too. A reset on either side, the idle
//! timeout or the end of a drain closes both.

use crate::config::tcp_proxy::{TcpProxy, TcpRoute};
use crate::drain::DrainWatch;
use crate::listener::connection::Downstream;
use crate::outlier::Outcome;
use crate::snapshot::{ClusterEntry, Snapshot, TcpProxyStats};
use crate::stats::Counter;
use crate::upstream::{self, ConnectError, NoHost, UpstreamConnection};
use crate::worker::Worker;
use rand::Rng;
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const RELAY_BUFFER: usize = 16 * 1024;
/// How many times a connect attempt picks again to avoid a host it already tried.
const TCP_RESELECT: u32 = 3;

/// Serves a downstream connection with `config`.
pub async fn serve(
    worker: &Worker,
    snapshot: &Snapshot,
    config: &TcpProxy,
    stats: &TcpProxyStats,
    drain: DrainWatch,
    downstream: Downstream,
) {
    stats.downstream_cx_total.inc();
    let cluster_name = choose_cluster(worker, &config.route);
    let Some(cluster) = snapshot.clusters.get(cluster_name) else {
        stats.downstream_cx_no_route.inc();
        tracing::debug!(cluster = cluster_name, "tcp_proxy: no such cluster");
        return;
    };
    let limits = &cluster.config.circuit_breakers;
    if cluster.stats.upstream_cx_active.value() >= i64::from(limits.max_connections) {
        cluster.stats.upstream_cx_overflow.inc();
        return;
    }
    let original = downstream.restored.then_some(downstream.local);
    // Envoy's source_ip hash: xxHash64 of the address as text.
    let hash = config
        .hash_source_ip
        .then(|| crate::lb::hash_key(downstream.peer.ip().to_string().as_bytes()));
    let Some((upstream, picked)) =
        connect_with_retries(worker, cluster, config.max_connect_attempts, hash, original).await
    else {
        return;
    };
    let _open = UpstreamConnection::open(cluster, &picked.host.stats);
    let counters = Counters {
        downstream_rx: &stats.downstream_cx_rx_bytes_total,
        downstream_tx: &stats.downstream_cx_tx_bytes_total,
        upstream_rx: &cluster.stats.upstream_cx_rx_bytes_total,
        upstream_tx: &cluster.stats.upstream_cx_tx_bytes_total,
        idle_timeout: &stats.idle_timeout,
    };
    relay(downstream, upstream, config.idle_timeout, drain, &counters).await;
}

fn choose_cluster<'a>(worker: &Worker, route: &'a TcpRoute) -> &'a str {
    match route {
        TcpRoute::Cluster(name) => name,
        TcpRoute::Weighted(clusters) => {
            let total: u64 = clusters.iter().map(|(_, w)| u64::from(*w)).sum();
            let mut ticket = worker.rng.borrow_mut().random_range(0..total.max(1));
            for (name, weight) in clusters {
                if ticket < u64::from(*weight) {
                    return name;
                }
                ticket -= u64::from(*weight);
            }
            &clusters[0].0
        }
    }
}

async fn connect_with_retries(
    worker: &Worker,
    cluster: &Arc<ClusterEntry>,
    attempts: u32,
    hash: Option<u64>,
    original: Option<SocketAddr>,
) -> Option<(TcpStream, upstream::PickedHost)> {
    let stats = &cluster.stats;
    let mut tried: Vec<SocketAddr> = Vec::new();
    for _ in 0..attempts {
        let picked = match worker
            .clusters
            .pick(cluster, hash, &tried, TCP_RESELECT, original)
        {
            Ok(picked) => picked,
            Err(NoHost::NoneHealthy | NoHost::NoOriginalDestination) => {
                stats.upstream_cx_none_healthy.inc();
                return None;
            }
        };
        let started = tokio::time::Instant::now();
        match upstream::connect(
            picked.address,
            cluster.config.bind_source,
            cluster.config.connect_timeout,
            picked.tls.as_deref(),
        )
        .await
        {
            Ok(stream) => {
                stats
                    .upstream_cx_connect_ms
                    .record_duration(started.elapsed());
                cluster.report_outlier(&picked.host.outlier, Outcome::Connected);
                return Some((stream, picked));
            }
            Err(e) => {
                stats.upstream_cx_connect_fail.inc();
                let outcome = match e {
                    ConnectError::Timeout(_) => {
                        stats.upstream_cx_connect_timeout.inc();
                        Some(Outcome::ConnectTimeout)
                    }
                    ConnectError::Io(_) => Some(Outcome::ConnectFailed),
                    // Tern's own limit, not the host's fault: no outlier ejection for it.
                    ConnectError::TlsNotSupported => None,
                };
                if let Some(outcome) = outcome {
                    cluster.report_outlier(&picked.host.outlier, outcome);
                }
                picked
                    .host
                    .stats
                    .cx_connect_fail
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(cluster = %cluster.config.name, host = %picked.address, "upstream {e}");
                tried.push(picked.address);
            }
        }
    }
    stats.upstream_cx_connect_attempts_exceeded.inc();
    None
}

struct Counters<'a> {
    downstream_rx: &'a Counter,
    downstream_tx: &'a Counter,
    upstream_rx: &'a Counter,
    upstream_tx: &'a Counter,
    /// Counted before the sockets close, so whoever sees the close sees the count.
    idle_timeout: &'a Counter,
}

#[derive(Debug, PartialEq, Eq)]
enum RelayEnd {
    Closed,
    IdleTimeout,
    Drained,
}

async fn relay(
    mut downstream: Downstream,
    mut upstream: TcpStream,
    idle_timeout: Option<Duration>,
    mut drain: DrainWatch,
    counters: &Counters<'_>,
) -> RelayEnd {
    let last_activity = Cell::new(Instant::now());
    let (mut down_read, mut down_write) = downstream.stream.split();
    let (mut up_read, mut up_write) = upstream.split();
    let both_ways = async {
        if !downstream.prefix.is_empty() {
            counters.downstream_rx.add(downstream.prefix.len() as u64);
            up_write.write_all(&downstream.prefix).await?;
            counters.upstream_tx.add(downstream.prefix.len() as u64);
        }
        tokio::try_join!(
            pump(
                &mut down_read,
                &mut up_write,
                &last_activity,
                counters.downstream_rx,
                counters.upstream_tx
            ),
            pump(
                &mut up_read,
                &mut down_write,
                &last_activity,
                counters.upstream_rx,
                counters.downstream_tx
            ),
        )
        .map(|_| ())
    };
    tokio::select! {
        _ = both_ways => RelayEnd::Closed,
        () = idle(&last_activity, idle_timeout) => {
            counters.idle_timeout.inc();
            RelayEnd::IdleTimeout
        }
        () = drain.deadline() => RelayEnd::Drained,
    }
}

/// Copies one direction until end of stream, then shuts down the write side (half-close).
async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    from: &mut R,
    to: &mut W,
    last_activity: &Cell<Instant>,
    read_counter: &Counter,
    write_counter: &Counter,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; RELAY_BUFFER];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            to.shutdown().await?;
            return Ok(());
        }
        last_activity.set(Instant::now());
        read_counter.add(n as u64);
        to.write_all(&buf[..n]).await?;
        write_counter.add(n as u64);
    }
}

async fn idle(last_activity: &Cell<Instant>, timeout: Option<Duration>) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    loop {
        let due = last_activity.get() + timeout;
        if Instant::now() >= due {
            return;
        }
        tokio::time::sleep_until(due).await;
    }
}
