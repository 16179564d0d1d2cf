//! The immutable configuration snapshot and how workers see it.
//!
//! The main thread builds a complete [`Snapshot`] (listeners, clusters with their current hosts,
//! and the stats handles each needs) off the data path, then [`SnapshotCell::publish`] swaps it in
//! with one atomic pointer store plus a generation bump. A worker keeps an `Arc` of the snapshot
//! it last saw in its [`SnapshotReader`] and only reloads when the generation moved: one relaxed
//! atomic load on the fast path, never a lock.
//!
//! Unchanged resources keep their `Arc` across snapshots (compared by their source proto), so a
//! push that touches one cluster does not rebuild every worker's balancer for the others, and a
//! listener whose config is unchanged never drains.

use crate::config::ConfigError;
use crate::config::cluster::{Cluster, Endpoint};
use crate::config::listener::{Listener, NetworkFilter};
use crate::config::secret::Secret;
use crate::config::tls::SecretKey;
use crate::drain::Drain;
use crate::outlier::{Detector, HostMonitor, Outcome, OutlierStats};
use crate::stats::{Counter, Gauge, Histogram, Store};
use arc_swap::ArcSwap;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use xds_client::pb::envoy::config::cluster::v3 as cluster_proto;
use xds_client::pb::envoy::config::listener::v3 as listener_proto;

/// Everything the data path reads, at one version. Each table is shared with the snapshots
/// before and after it until it changes, so a push that changes routes only (or endpoints
/// only) copies what it changed, however many listeners and clusters there are.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub version: u64,
    /// Listeners by name.
    pub listeners: Arc<BTreeMap<String, Arc<ListenerEntry>>>,
    /// Listeners by their address (bound or not), for binding and `use_original_dst` hand-off.
    pub by_address: Arc<HashMap<SocketAddr, Arc<ListenerEntry>>>,
    pub clusters: Arc<BTreeMap<String, Arc<ClusterEntry>>>,
    /// Route configurations by name (RDS), for connection managers that name theirs.
    pub routes: Arc<BTreeMap<String, Arc<crate::config::route::RouteConfig>>>,
    /// Secrets by name and source: the bootstrap's static ones and those received over SDS/ADS.
    /// A rotation replaces one here and leaves every listener and cluster entry as it was.
    pub secrets: BTreeMap<SecretKey, Arc<Secret>>,
}

impl Snapshot {
    /// The listener a hand-off for `original` goes to: exact address, then the wildcard of its family.
    pub fn handoff_target(&self, original: SocketAddr) -> Option<&Arc<ListenerEntry>> {
        self.by_address.get(&original).or_else(|| {
            let wildcard = match original {
                SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], original.port())),
                SocketAddr::V6(_) => SocketAddr::from(([0u16; 8], original.port())),
            };
            self.by_address.get(&wildcard)
        })
    }

    /// The socket groups this snapshot needs.
    pub fn bind_keys(&self) -> impl Iterator<Item = BindKey> + '_ {
        self.listeners
            .values()
            .filter(|l| l.config.bind_to_port)
            .map(|l| BindKey::of(&l.config))
    }

    /// The listener currently served by a socket group.
    pub fn bound_listener(&self, key: &BindKey) -> Option<&Arc<ListenerEntry>> {
        match key {
            BindKey::Address(address) => self.by_address.get(address),
            BindKey::Ephemeral(name) => self.listeners.get(name),
        }
    }
}

/// What a group of listening sockets belongs to. A fixed address outlives listener versions (so
/// replacing a listener never closes its sockets); a port-0 listener gets its own ephemeral port
/// and so its own group, by name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BindKey {
    Address(SocketAddr),
    Ephemeral(String),
}

impl BindKey {
    pub fn of(listener: &Listener) -> Self {
        if listener.address.port() == 0 {
            BindKey::Ephemeral(listener.name.clone())
        } else {
            BindKey::Address(listener.address)
        }
    }

    /// The address to bind.
    pub fn address(&self, snapshot: &Snapshot) -> Option<SocketAddr> {
        snapshot.bound_listener(self).map(|l| l.config.address)
    }
}

/// A listener with its source proto, stats and drain signal.
#[derive(Debug)]
pub struct ListenerEntry {
    pub config: Listener,
    /// As received (shared with the xDS view, so an unchanged listener is recognised by pointer).
    pub source: Arc<listener_proto::Listener>,
    pub stats: ListenerStats,
    /// tcp_proxy stats by stat_prefix, for every tcp_proxy in this listener's chains.
    pub tcp_stats: HashMap<String, Arc<TcpProxyStats>>,
    /// HTTP connection manager stats by stat_prefix.
    pub http_stats: HashMap<String, Arc<crate::http::HttpStats>>,
    /// Network RBAC stats by (stat_prefix, shadow_rules_stat_prefix).
    pub rbac_stats: HashMap<(String, String), Arc<crate::rbac::RbacStats>>,
    /// Fired when this listener is removed or replaced: its connections finish or close by the deadline.
    pub drain: Drain,
    /// Seconds since the epoch when this version of the listener was accepted (for config_dump).
    pub last_updated: std::time::SystemTime,
}

/// Envoy's `listener.<address>.*` stats.
#[derive(Debug, Clone)]
pub struct ListenerStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_active: Gauge,
    pub downstream_cx_destroy: Counter,
    pub no_filter_chain_match: Counter,
    pub downstream_listener_filter_error: Counter,
    pub downstream_pre_cx_timeout: Counter,
    pub downstream_cx_length_ms: Histogram,
    /// `ssl.connection_error`: connections closed because their filter chain terminates TLS,
    /// which Tern does not do yet (the mTLS work). Only listeners with a TLS chain have it, as
    /// only those have Envoy's `ssl.*` stats.
    pub ssl_connection_error: Option<Counter>,
    /// `listener.<address>.worker_<n>.downstream_cx_{total,active}`.
    pub per_worker: Vec<(Counter, Gauge)>,
}

impl ListenerStats {
    pub fn new(store: &Store, prefix: &str, workers: usize, tls: bool) -> Self {
        let name = |stat: &str| format!("listener.{prefix}.{stat}");
        ListenerStats {
            downstream_cx_total: store.counter(&name("downstream_cx_total")),
            downstream_cx_active: store.gauge(&name("downstream_cx_active")),
            downstream_cx_destroy: store.counter(&name("downstream_cx_destroy")),
            no_filter_chain_match: store.counter(&name("no_filter_chain_match")),
            downstream_listener_filter_error: store
                .counter(&name("downstream_listener_filter_error")),
            downstream_pre_cx_timeout: store.counter(&name("downstream_pre_cx_timeout")),
            downstream_cx_length_ms: store.histogram(&name("downstream_cx_length_ms")),
            ssl_connection_error: tls.then(|| store.counter(&name("ssl.connection_error"))),
            per_worker: (0..workers)
                .map(|w| {
                    (
                        store.counter(&name(&format!("worker_{w}.downstream_cx_total"))),
                        store.gauge(&name(&format!("worker_{w}.downstream_cx_active"))),
                    )
                })
                .collect(),
        }
    }
}

/// Envoy's `tcp.<stat_prefix>.*` stats.
#[derive(Debug, Clone)]
pub struct TcpProxyStats {
    pub downstream_cx_total: Counter,
    pub downstream_cx_no_route: Counter,
    pub downstream_cx_rx_bytes_total: Counter,
    pub downstream_cx_tx_bytes_total: Counter,
    pub downstream_flow_control_paused_reading_total: Counter,
    pub idle_timeout: Counter,
    pub max_downstream_connection_duration: Counter,
    pub upstream_flush_total: Counter,
}

impl TcpProxyStats {
    pub fn new(store: &Store, prefix: &str) -> Self {
        let name = |stat: &str| format!("tcp.{prefix}.{stat}");
        TcpProxyStats {
            downstream_cx_total: store.counter(&name("downstream_cx_total")),
            downstream_cx_no_route: store.counter(&name("downstream_cx_no_route")),
            downstream_cx_rx_bytes_total: store.counter(&name("downstream_cx_rx_bytes_total")),
            downstream_cx_tx_bytes_total: store.counter(&name("downstream_cx_tx_bytes_total")),
            downstream_flow_control_paused_reading_total: store
                .counter(&name("downstream_flow_control_paused_reading_total")),
            idle_timeout: store.counter(&name("idle_timeout")),
            max_downstream_connection_duration: store
                .counter(&name("max_downstream_connection_duration")),
            upstream_flush_total: store.counter(&name("upstream_flush_total")),
        }
    }
}

/// A cluster with its current hosts.
#[derive(Debug)]
pub struct ClusterEntry {
    pub config: Cluster,
    /// As received (shared with the xDS view, so an unchanged cluster is recognised by pointer).
    pub source: Arc<cluster_proto::Cluster>,
    pub hosts: Arc<[Host]>,
    pub stats: Arc<ClusterStats>,
    /// The outlier detector, when the cluster has `outlier_detection` (kept across updates).
    pub outlier: Option<Arc<Detector>>,
    pub added_via_api: bool,
    pub last_updated: std::time::SystemTime,
}

impl ClusterEntry {
    /// Tells the outlier detector (if any) how an attempt on `host` went.
    pub fn report_outlier(&self, host: &HostMonitor, outcome: Outcome) {
        // ORIGINAL_DST hosts are made per connection and never swept: nothing to eject.
        if let (Some(detector), Some(config)) = (&self.outlier, &self.config.outlier_detection)
            && self.config.discovery != crate::config::cluster::Discovery::OriginalDst
        {
            detector.report(config, self.hosts.len(), host, outcome);
        }
    }

    /// Whether `host` is out of load balancing because of an outlier ejection.
    pub fn is_ejected(&self, host: &Host) -> bool {
        self.outlier.is_some() && host.outlier.is_ejected()
    }
}

/// One upstream host with its counters and outlier state (kept across snapshots while its
/// address stays).
#[derive(Debug, Clone)]
pub struct Host {
    pub endpoint: Endpoint,
    pub stats: Arc<HostStats>,
    pub outlier: Arc<HostMonitor>,
}

/// Per-host counters that `/clusters` prints.
#[derive(Debug, Default)]
pub struct HostStats {
    pub cx_total: AtomicU64,
    pub cx_active: AtomicU64,
    pub cx_connect_fail: AtomicU64,
    pub rq_total: AtomicU64,
    pub rq_active: AtomicU64,
    pub rq_error: AtomicU64,
    pub rq_success: AtomicU64,
    pub rq_timeout: AtomicU64,
}

/// Envoy's `cluster.<name>.*` stats.
#[derive(Debug, Clone)]
pub struct ClusterStats {
    pub upstream_cx_total: Counter,
    pub upstream_cx_active: Gauge,
    pub upstream_cx_connect_fail: Counter,
    pub upstream_cx_connect_timeout: Counter,
    pub upstream_cx_connect_attempts_exceeded: Counter,
    pub upstream_cx_overflow: Counter,
    pub upstream_cx_none_healthy: Counter,
    pub upstream_cx_destroy: Counter,
    pub upstream_cx_rx_bytes_total: Counter,
    pub upstream_cx_tx_bytes_total: Counter,
    pub upstream_cx_connect_ms: Histogram,
    pub upstream_cx_length_ms: Histogram,
    pub membership_total: Gauge,
    pub membership_healthy: Gauge,
    pub membership_degraded: Gauge,
    pub membership_excluded: Gauge,
    pub membership_change: Counter,
    pub lb_healthy_panic: Counter,
    pub max_host_weight: Gauge,
    pub circuit_breakers_cx_open: Gauge,
    /// The `upstream_rq_*` family the HTTP router counts.
    pub http: crate::http::stats::UpstreamRequestStats,
}

impl ClusterStats {
    pub fn new(store: &Store, stat_name: &str) -> Self {
        let name = |stat: &str| format!("cluster.{stat_name}.{stat}");
        ClusterStats {
            upstream_cx_total: store.counter(&name("upstream_cx_total")),
            upstream_cx_active: store.gauge(&name("upstream_cx_active")),
            upstream_cx_connect_fail: store.counter(&name("upstream_cx_connect_fail")),
            upstream_cx_connect_timeout: store.counter(&name("upstream_cx_connect_timeout")),
            upstream_cx_connect_attempts_exceeded: store
                .counter(&name("upstream_cx_connect_attempts_exceeded")),
            upstream_cx_overflow: store.counter(&name("upstream_cx_overflow")),
            upstream_cx_none_healthy: store.counter(&name("upstream_cx_none_healthy")),
            upstream_cx_destroy: store.counter(&name("upstream_cx_destroy")),
            upstream_cx_rx_bytes_total: store.counter(&name("upstream_cx_rx_bytes_total")),
            upstream_cx_tx_bytes_total: store.counter(&name("upstream_cx_tx_bytes_total")),
            upstream_cx_connect_ms: store.histogram(&name("upstream_cx_connect_ms")),
            upstream_cx_length_ms: store.histogram(&name("upstream_cx_length_ms")),
            membership_total: store.gauge(&name("membership_total")),
            membership_healthy: store.gauge(&name("membership_healthy")),
            membership_degraded: store.gauge(&name("membership_degraded")),
            membership_excluded: store.gauge(&name("membership_excluded")),
            membership_change: store.counter(&name("membership_change")),
            lb_healthy_panic: store.counter(&name("lb_healthy_panic")),
            max_host_weight: store.gauge(&name("max_host_weight")),
            circuit_breakers_cx_open: store.gauge(&name("circuit_breakers.default.cx_open")),
            http: crate::http::stats::UpstreamRequestStats::new(store, stat_name),
        }
    }
}

/// The published snapshot plus its generation.
pub struct SnapshotCell {
    current: ArcSwap<Snapshot>,
    generation: AtomicU64,
}

impl Default for SnapshotCell {
    fn default() -> Self {
        Self {
            current: ArcSwap::from_pointee(Snapshot::default()),
            generation: AtomicU64::new(0),
        }
    }
}

impl std::fmt::Debug for SnapshotCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SnapshotCell(gen {})",
            self.generation.load(Ordering::Relaxed)
        )
    }
}

impl SnapshotCell {
    /// The latest snapshot (main thread and admin; workers use a [`SnapshotReader`]).
    pub fn load(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Swaps in `next`. The pointer is stored before the generation is bumped (Release), so a
    /// worker that sees the new generation (Acquire) loads the new pointer.
    pub fn publish(&self, next: Snapshot) {
        self.current.store(Arc::new(next));
        self.generation.fetch_add(1, Ordering::Release);
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// A worker's cached view of the snapshot: reloads only when the generation moved.
pub struct SnapshotReader {
    cell: Arc<SnapshotCell>,
    cached: RefCell<(u64, Arc<Snapshot>)>,
}

impl SnapshotReader {
    pub fn new(cell: Arc<SnapshotCell>) -> Self {
        let generation = cell.generation();
        let snapshot = cell.load();
        Self {
            cell,
            cached: RefCell::new((generation, snapshot)),
        }
    }

    /// The current snapshot; one atomic load when nothing changed.
    pub fn get(&self) -> Arc<Snapshot> {
        let generation = self.cell.generation();
        let mut cached = self.cached.borrow_mut();
        if cached.0 != generation {
            *cached = (generation, self.cell.load());
        }
        cached.1.clone()
    }
}

/// Builds snapshots, reusing unchanged entries of the previous one.
pub struct SnapshotBuilder<'a> {
    pub store: &'a Store,
    pub workers: usize,
}

impl SnapshotBuilder<'_> {
    /// A listener entry, reused from `prev` when its source proto is unchanged.
    pub fn listener(
        &self,
        prev: Option<&Arc<ListenerEntry>>,
        source: &Arc<listener_proto::Listener>,
    ) -> Result<Arc<ListenerEntry>, ConfigError> {
        if let Some(prev) = prev.filter(|p| Arc::ptr_eq(&p.source, source) || p.source == *source) {
            return Ok(prev.clone());
        }
        let config = Listener::try_from(&**source)?;
        let mut tcp_stats = HashMap::new();
        let mut http_stats = HashMap::new();
        let mut rbac_stats = HashMap::new();
        let all_chains = config
            .filter_chains
            .chains()
            .iter()
            .chain(config.filter_chains.default_chain());
        for chain in all_chains {
            for filter in &chain.filters {
                match filter {
                    NetworkFilter::TcpProxy(tcp) => {
                        tcp_stats.entry(tcp.stat_prefix.clone()).or_insert_with(|| {
                            Arc::new(TcpProxyStats::new(self.store, &tcp.stat_prefix))
                        });
                    }
                    NetworkFilter::HttpConnectionManager(hcm) => {
                        http_stats
                            .entry(hcm.stat_prefix.clone())
                            .or_insert_with(|| {
                                Arc::new(crate::http::HttpStats::new(
                                    self.store,
                                    &hcm.stat_prefix,
                                    &hcm.http_filters,
                                ))
                            });
                    }
                    NetworkFilter::Rbac(rbac) => {
                        rbac_stats
                            .entry((
                                rbac.stat_prefix.clone(),
                                rbac.shadow_rules_stat_prefix.clone(),
                            ))
                            .or_insert_with(|| Arc::new(rbac.stats(self.store)));
                    }
                    _ => {}
                }
            }
        }
        Ok(Arc::new(ListenerEntry {
            stats: ListenerStats::new(
                self.store,
                &config.stat_prefix,
                self.workers,
                config
                    .filter_chains
                    .chains()
                    .iter()
                    .chain(config.filter_chains.default_chain())
                    .any(|c| c.transport != crate::config::tls::TransportSocket::Plaintext),
            ),
            config,
            source: source.clone(),
            tcp_stats,
            http_stats,
            rbac_stats,
            drain: Drain::new(),
            last_updated: std::time::SystemTime::now(),
        }))
    }

    /// A cluster entry, reused when unchanged. Static endpoints become hosts now; DNS and EDS
    /// clusters start with the previous hosts (or none) until their resolver fills them.
    pub fn cluster(
        &self,
        prev: Option<&Arc<ClusterEntry>>,
        source: &Arc<cluster_proto::Cluster>,
        added_via_api: bool,
    ) -> Result<Arc<ClusterEntry>, ConfigError> {
        if let Some(prev) = prev.filter(|p| Arc::ptr_eq(&p.source, source) || p.source == *source) {
            return Ok(prev.clone());
        }
        let config = Cluster::try_from(&**source)?;
        let stats = Arc::new(ClusterStats::new(self.store, &config.stat_name));
        let endpoints = match config.discovery {
            crate::config::cluster::Discovery::Static => config.load_assignment.endpoints.clone(),
            _ => prev
                .map(|p| p.hosts.iter().map(|h| h.endpoint.clone()).collect())
                .unwrap_or_default(),
        };
        // The detector (and with it the hosts' outlier state) carries over while the cluster
        // keeps outlier detection under the same stat name.
        let carried = prev
            .filter(|p| p.config.stat_name == config.stat_name)
            .and_then(|p| p.outlier.clone());
        let outlier = config.outlier_detection.as_ref().map(|_| {
            carried.clone().unwrap_or_else(|| {
                Arc::new(Detector::new(OutlierStats::new(
                    self.store,
                    &config.stat_name,
                )))
            })
        });
        let hosts = hosts_from(
            prev.map(|p| &p.hosts[..]).unwrap_or(&[]),
            endpoints,
            outlier.as_deref().filter(|_| carried.is_some()),
        );
        Ok(Arc::new(ClusterEntry {
            config,
            source: source.clone(),
            hosts,
            stats,
            outlier,
            added_via_api,
            last_updated: std::time::SystemTime::now(),
        }))
    }
}

/// The same cluster with a new host set (DNS answer, EDS push); host stats carry over by address.
pub fn with_hosts(entry: &ClusterEntry, endpoints: Vec<Endpoint>) -> ClusterEntry {
    let hosts = hosts_from(&entry.hosts, endpoints, entry.outlier.as_deref());
    entry.stats.membership_change.inc();
    ClusterEntry {
        config: entry.config.clone(),
        source: entry.source.clone(),
        hosts,
        stats: entry.stats.clone(),
        outlier: entry.outlier.clone(),
        added_via_api: entry.added_via_api,
        last_updated: entry.last_updated,
    }
}

/// The same EDS cluster with the hosts, locality weights and overprovisioning factor of a
/// ClusterLoadAssignment; host stats and outlier state carry over by address.
pub fn with_assignment(
    entry: &ClusterEntry,
    assignment: &crate::config::cluster::LoadAssignment,
) -> ClusterEntry {
    let mut updated = with_hosts(entry, assignment.endpoints.clone());
    updated.config.load_assignment = assignment.clone();
    updated.config.lb.overprovisioning_factor = assignment.overprovisioning_factor;
    updated
}

/// Hosts for `endpoints`, keeping the stats of `prev` hosts at the same address, and their
/// outlier state when `detector` carries over from `prev` (hosts that left are retired from it).
fn hosts_from(prev: &[Host], endpoints: Vec<Endpoint>, detector: Option<&Detector>) -> Arc<[Host]> {
    let hosts: Arc<[Host]> = endpoints
        .into_iter()
        .map(|endpoint| {
            let old = prev.iter().find(|h| h.endpoint.address == endpoint.address);
            Host {
                stats: old.map_or_else(Default::default, |h| h.stats.clone()),
                outlier: old
                    .filter(|_| detector.is_some())
                    .map_or_else(Default::default, |h| h.outlier.clone()),
                endpoint,
            }
        })
        .collect();
    if let Some(detector) = detector {
        for old in prev {
            if !hosts.iter().any(|h| Arc::ptr_eq(&h.outlier, &old.outlier)) {
                detector.retire(&old.outlier);
            }
        }
    }
    hosts
}

/// Sets a cluster's `membership_*` gauges from its hosts. Called after the snapshot holding
/// those hosts is published, so the stats never run ahead of what workers can see.
pub fn update_membership(stats: &ClusterStats, hosts: &[Host]) {
    use crate::lb::HostHealth;
    let count = |f: &dyn Fn(&HostHealth) -> bool| {
        hosts.iter().filter(|h| f(&h.endpoint.health)).count() as i64
    };
    stats.membership_total.set(hosts.len() as i64);
    stats
        .membership_healthy
        .set(count(&|h| *h == HostHealth::Healthy));
    stats
        .membership_degraded
        .set(count(&|h| *h == HostHealth::Degraded));
    stats.membership_excluded.set(0);
    stats
        .max_host_weight
        .set(hosts.iter().map(|h| h.endpoint.weight).max().unwrap_or(0) as i64);
}
