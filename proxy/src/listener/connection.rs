//! One accepted connection, from the socket to its network filter: listener filters
//! (original_dst, tls_inspector, http_inspector), the `use_original_dst` hand-off, filter chain
//! selection and dispatch.
//!
//! Inspectors read (not peek) into a prefix buffer that is replayed to the network filter, so a
//! slow client costs a wait on readiness, never a busy loop of peeks.

use super::filter_chain_match::ConnectionInfo;
use super::inspect::{self, Inspection, RAW_BUFFER_TRANSPORT_PROTOCOL, TLS_TRANSPORT_PROTOCOL};
use crate::config::listener::{ListenerFilterKind, NetworkFilter};
use crate::config::tls::TransportSocket;
use crate::rbac::Subject;
use crate::rbac::network::NetworkRbac;
use crate::snapshot::{ListenerEntry, Snapshot};
use crate::sockopt;
use crate::tcp_proxy;
use crate::worker::Worker;
use bytes::BytesMut;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// What the listener filters learned about a connection.
#[derive(Debug)]
pub struct Downstream {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// The local address, restored to the original destination when original_dst found one.
    pub local: SocketAddr,
    pub restored: bool,
    /// Bytes the inspectors read; the network filter sends them first.
    pub prefix: BytesMut,
    pub server_name: Option<String>,
    pub transport_protocol: &'static str,
    pub application_protocols: Vec<String>,
}

/// Serves one accepted connection to its end.
pub async fn serve(
    worker: Rc<Worker>,
    snapshot: Arc<Snapshot>,
    entry: Arc<ListenerEntry>,
    stream: TcpStream,
    peer: SocketAddr,
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let mut downstream = Downstream {
        stream,
        peer,
        local,
        restored: false,
        prefix: BytesMut::new(),
        server_name: None,
        transport_protocol: RAW_BUFFER_TRANSPORT_PROTOCOL,
        application_protocols: Vec::new(),
    };
    let Some(()) = run_listener_filters(&entry, &mut downstream).await else {
        return;
    };
    let mut entry = entry;
    let handoff = (entry.config.use_original_dst && downstream.restored)
        .then(|| snapshot.handoff_target(downstream.local))
        .flatten()
        .filter(|t| !Arc::ptr_eq(t, &entry))
        .cloned();
    if let Some(target) = handoff {
        entry = target;
        let Some(()) = run_listener_filters(&entry, &mut downstream).await else {
            return;
        };
    }
    serve_on(&worker, snapshot, &entry, downstream).await;
}

/// A process-wide id for each downstream connection (`%CONNECTION_ID%`).
pub fn next_connection_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Counts the connection on the listener that serves it and runs its filter chain. An HTTP
/// connection lets go of `snapshot` before serving: each of its requests reads the worker's
/// current one, so route and cluster pushes reach keep-alive connections, and a long-lived
/// connection does not keep an old configuration alive.
async fn serve_on(
    worker: &Rc<Worker>,
    snapshot: Arc<Snapshot>,
    entry: &ListenerEntry,
    downstream: Downstream,
) {
    let stats = &entry.stats;
    let _active = ActiveConnection::new(worker, entry);
    let info = ConnectionInfo {
        destination: downstream.local,
        source: downstream.peer,
        direct_source: downstream.peer,
        server_name: downstream.server_name.as_deref(),
        transport_protocol: downstream.transport_protocol,
        application_protocols: &downstream.application_protocols,
    };
    let Some(chain) = entry.config.filter_chains.select(&info).cloned() else {
        stats.no_filter_chain_match.inc();
        tracing::debug!(listener = %entry.config.name, peer = %downstream.peer, "no filter chain match");
        return;
    };
    if let TransportSocket::Tls(_) = chain.transport {
        // TLS termination (Istio's inbound mTLS chains) comes with the mTLS work. Until then the
        // connection is closed: serving its bytes as plaintext would be wrong either way.
        if let Some(errors) = &stats.ssl_connection_error {
            errors.inc();
        }
        static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(listener = %entry.config.name, chain = %chain.name, peer = %downstream.peer, "closing a connection: its filter chain terminates TLS, which Tern does not do yet (counted as ssl.connection_error; later ones are logged at debug)");
        } else {
            tracing::debug!(listener = %entry.config.name, chain = %chain.name, peer = %downstream.peer, "closing: the filter chain terminates TLS, which is not supported yet");
        }
        return;
    }
    let mut downstream = downstream;
    for filter in &chain.filters {
        match filter {
            NetworkFilter::NoOp { .. } => continue,
            NetworkFilter::Rbac(rbac) => {
                if !admit(entry, rbac, &mut downstream).await {
                    return;
                }
            }
            NetworkFilter::DenyAll { name } => {
                tracing::debug!(listener = %entry.config.name, filter = %name, "closing: filter not enforceable, failing closed");
                return;
            }
            NetworkFilter::HttpConnectionManager(hcm) => {
                let Some(http_stats) = entry.http_stats.get(&hcm.stat_prefix).cloned() else {
                    return;
                };
                let mut drain = entry.drain.watch();
                if !entry.config.modify_only_drain {
                    drain = drain.or_health(worker.shared.health_check_failed.subscribe());
                }
                drop(snapshot);
                crate::http::serve(worker.clone(), hcm.clone(), http_stats, drain, downstream)
                    .await;
                return;
            }
            NetworkFilter::TcpProxy(config) => {
                let Some(tcp_stats) = entry.tcp_stats.get(&config.stat_prefix) else {
                    return;
                };
                let drain = entry.drain.watch();
                tcp_proxy::serve(worker, &snapshot, config, tcp_stats, drain, downstream).await;
                return;
            }
        }
    }
}

/// Runs a network RBAC filter on the connection (see [`crate::rbac::network`]): `false` when the
/// connection was denied and is to be closed.
async fn admit(entry: &ListenerEntry, rbac: &NetworkRbac, downstream: &mut Downstream) -> bool {
    let subject = Subject {
        local: downstream.local,
        peer: downstream.peer,
        remote: downstream.peer.ip(),
        server_name: downstream.server_name.as_deref().unwrap_or(""),
        // Filter chains that terminate TLS are closed above, so every connection here is plaintext.
        peer_certificate: None,
        request: None,
    };
    let stats = entry.rbac_stats.get(&(
        rbac.stat_prefix.clone(),
        rbac.shadow_rules_stat_prefix.clone(),
    ));
    if rbac.allows(&subject) {
        if let Some(stats) = stats {
            stats.evaluate(rbac.enforced.as_ref(), rbac.shadow.as_ref(), &subject);
        }
        return true;
    }
    // Envoy decides on the first byte from downstream: wait for it (or for the end of the
    // stream), but no longer than the listener's drain.
    if downstream.prefix.is_empty() {
        let mut drain = entry.drain.watch();
        tokio::select! {
            _ = downstream.stream.read_buf(&mut downstream.prefix) => {}
            () = drain.deadline() => return false,
        }
    }
    if let Some(stats) = stats {
        stats.evaluate(rbac.enforced.as_ref(), rbac.shadow.as_ref(), &subject);
    }
    tracing::debug!(listener = %entry.config.name, peer = %downstream.peer, "closing: denied by network RBAC");
    if let Some(delay) = rbac.delay_deny {
        tokio::time::sleep(delay).await;
    }
    false
}

/// Keeps the listener's active-connection gauges right however the connection ends.
struct ActiveConnection<'a> {
    entry: &'a ListenerEntry,
    worker: &'a Worker,
    opened: tokio::time::Instant,
}

impl<'a> ActiveConnection<'a> {
    fn new(worker: &'a Worker, entry: &'a ListenerEntry) -> Self {
        let stats = &entry.stats;
        stats.downstream_cx_total.inc();
        stats.downstream_cx_active.inc();
        if let Some((total, active)) = stats.per_worker.get(worker.index) {
            total.inc();
            active.inc();
        }
        worker.shared.total_connections.inc();
        ActiveConnection {
            entry,
            worker,
            opened: tokio::time::Instant::now(),
        }
    }
}

impl Drop for ActiveConnection<'_> {
    fn drop(&mut self) {
        let stats = &self.entry.stats;
        stats.downstream_cx_active.dec();
        stats.downstream_cx_destroy.inc();
        stats
            .downstream_cx_length_ms
            .record_duration(self.opened.elapsed());
        if let Some((_, active)) = stats.per_worker.get(self.worker.index) {
            active.dec();
        }
        self.worker.shared.total_connections.dec();
    }
}

/// Runs the listener's listener filters in order. `None`: the connection was closed.
async fn run_listener_filters(entry: &ListenerEntry, downstream: &mut Downstream) -> Option<()> {
    let config = &entry.config;
    let inspect_all = async {
        for filter in &config.listener_filters {
            if filter
                .disabled
                .as_ref()
                .is_some_and(|p| p.matches(downstream.local.port()))
            {
                continue;
            }
            match filter.kind {
                ListenerFilterKind::OriginalDst => {
                    if let Some(original) =
                        sockopt::original_destination(&downstream.stream, downstream.local)
                    {
                        downstream.restored = original != downstream.local;
                        downstream.local = original;
                    }
                }
                ListenerFilterKind::TlsInspector => inspect_tls(downstream).await?,
                ListenerFilterKind::HttpInspector => inspect_http(downstream).await?,
            }
        }
        Some(())
    };
    let Some(limit) = config.listener_filters_timeout else {
        let finished = inspect_all.await;
        if finished.is_none() {
            entry.stats.downstream_listener_filter_error.inc();
        }
        return finished;
    };
    match tokio::time::timeout(limit, inspect_all).await {
        Ok(Some(())) => Some(()),
        Ok(None) => {
            entry.stats.downstream_listener_filter_error.inc();
            None
        }
        Err(_) => {
            entry.stats.downstream_pre_cx_timeout.inc();
            config.continue_on_listener_filters_timeout.then_some(())
        }
    }
}

async fn inspect_tls(downstream: &mut Downstream) -> Option<()> {
    if downstream.transport_protocol == TLS_TRANSPORT_PROTOCOL {
        return Some(());
    }
    let found = read_until(
        downstream,
        inspect::TLS_MAX_CLIENT_HELLO,
        inspect::inspect_tls,
    )
    .await?;
    if let Some(tls) = found {
        downstream.transport_protocol = TLS_TRANSPORT_PROTOCOL;
        downstream.server_name = tls.sni;
        downstream.application_protocols = tls.alpn;
    }
    Some(())
}

async fn inspect_http(downstream: &mut Downstream) -> Option<()> {
    if downstream.transport_protocol != RAW_BUFFER_TRANSPORT_PROTOCOL
        || !downstream.application_protocols.is_empty()
    {
        return Some(());
    }
    if let Some(protocol) = read_until(
        downstream,
        inspect::HTTP_MAX_INSPECT_BYTES,
        inspect::inspect_http,
    )
    .await?
    {
        downstream.application_protocols = vec![protocol.alpn().to_string()];
    }
    Some(())
}

/// Reads into the prefix until `inspect` decides. `Some(None)`: not this protocol (or the peer
/// finished sending); `None`: the connection failed or exceeded `limit` undecided.
async fn read_until<T>(
    downstream: &mut Downstream,
    limit: usize,
    inspect: fn(&[u8]) -> Inspection<T>,
) -> Option<Option<T>> {
    loop {
        match inspect(&downstream.prefix) {
            Inspection::Found(found) => return Some(Some(found)),
            Inspection::NotMatched => return Some(None),
            Inspection::NeedMore if downstream.prefix.len() >= limit => return None,
            Inspection::NeedMore => {}
        }
        downstream.prefix.reserve(4096);
        match downstream.stream.read_buf(&mut downstream.prefix).await {
            Ok(0) => return Some(None),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}
