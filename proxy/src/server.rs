//! The server's main-thread side: starts workers, owns the listening sockets, builds and
//! publishes snapshots, resolves DNS clusters, and drains.
//!
//! One task (the manager) owns all of that mutable state and takes [`Command`]s from the admin
//! server, signal handlers, DNS tasks, tests (and, with the xDS work, the ADS client). Nothing
//! here runs on a worker.

mod dns;
mod shutdown;

pub use shutdown::DrainRequest;
use shutdown::DrainScope;

use crate::config::ConfigError;
use crate::config::bootstrap::Bootstrap;
use crate::config::cluster::{Discovery, Endpoint, LoadAssignment};
use crate::config::secret::Secret;
use crate::config::tls::{SecretKey, SecretSource};
use crate::listener::ListeningSockets;
use crate::snapshot::{self, BindKey, ClusterEntry, Snapshot, SnapshotBuilder, SnapshotCell};
use crate::stats::{Gauge, Store};
use crate::worker::{Shared, WorkerHandle};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use xds_client::pb::envoy::config::bootstrap::v3 as bootstrap_proto;
use xds_client::pb::envoy::config::cluster::v3 as cluster_proto;
use xds_client::pb::envoy::config::listener::v3 as listener_proto;

/// Envoy's `server.state` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    Live = 0,
    Draining = 1,
    PreInitializing = 2,
    Initializing = 3,
}

impl ServerState {
    pub fn name(self) -> &'static str {
        match self {
            ServerState::Live => "LIVE",
            ServerState::Draining => "DRAINING",
            ServerState::PreInitializing => "PRE_INITIALIZING",
            ServerState::Initializing => "INITIALIZING",
        }
    }

    pub fn from_gauge(value: i64) -> Self {
        match value {
            0 => ServerState::Live,
            1 => ServerState::Draining,
            2 => ServerState::PreInitializing,
            _ => ServerState::Initializing,
        }
    }
}

/// Settings that come from the command line.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub concurrency: usize,
    pub drain_time: Duration,
    /// `--drain-strategy`: true for `immediate`, false for `gradual`.
    pub drain_immediate: bool,
    pub parent_shutdown_time: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            concurrency: 1,
            drain_time: Duration::from_secs(600),
            drain_immediate: false,
            parent_shutdown_time: Duration::from_secs(900),
        }
    }
}

/// Requests to the manager task.
#[derive(Debug)]
pub enum Command {
    /// Replace the dynamic listeners and clusters (static ones from the bootstrap stay).
    /// Invalid resources are left out (their previous version, if any, is kept) and reported.
    Update {
        listeners: Vec<listener_proto::Listener>,
        clusters: Vec<cluster_proto::Cluster>,
        reply: oneshot::Sender<Vec<ConfigError>>,
    },
    /// What an xDS update changed (see [`crate::xds`]): one snapshot; the reply lists what
    /// could not be served (a listener that cannot bind).
    Xds {
        change: crate::xds::XdsChange,
        reply: oneshot::Sender<Vec<ConfigError>>,
    },
    /// New hosts for a cluster (DNS answer).
    SetHosts {
        cluster: String,
        endpoints: Vec<Endpoint>,
    },
    /// `POST /drain_listeners`.
    DrainListeners(DrainRequest),
    /// Stop accepting on these addresses for good (the end of a graceful listener drain).
    StopAccepting { keys: Vec<BindKey> },
    /// Actual bound addresses of the listeners, by name.
    ListenerAddresses {
        reply: oneshot::Sender<BTreeMap<String, SocketAddr>>,
    },
    /// Stop: `graceful` drains first (SIGTERM); otherwise exit at once (SIGINT, quitquitquit).
    Shutdown { graceful: bool },
}

/// Read-mostly facts about the running server, shared with the admin handlers.
#[derive(Debug)]
pub struct ServerInfo {
    pub started: Instant,
    pub started_wall: std::time::SystemTime,
    pub options: ServerOptions,
    pub node: crate::config::bootstrap::Node,
    pub bootstrap: bootstrap_proto::Bootstrap,
    pub state: Gauge,
    /// The xDS view for `/config_dump` (`None` without `dynamic_resources`).
    pub xds: arc_swap::ArcSwapOption<crate::xds::XdsDump>,
}

/// A handle on a running server: send commands, read shared state.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    commands: mpsc::UnboundedSender<Command>,
    pub shared: Arc<Shared>,
    pub info: Arc<ServerInfo>,
}

impl ServerHandle {
    pub fn send(&self, command: Command) {
        let _ = self.commands.send(command);
    }

    /// Resolves when the manager has stopped.
    pub async fn closed(&self) {
        self.commands.closed().await;
    }

    /// Applies dynamic listeners and clusters; returns the rejected resources' errors.
    pub async fn update(
        &self,
        listeners: Vec<listener_proto::Listener>,
        clusters: Vec<cluster_proto::Cluster>,
    ) -> Vec<ConfigError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Update {
            listeners,
            clusters,
            reply,
        });
        rx.await.unwrap_or_default()
    }

    /// The actual bound address of each listener (by name).
    pub async fn listener_addresses(&self) -> BTreeMap<String, SocketAddr> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::ListenerAddresses { reply });
        rx.await.unwrap_or_default()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.snapshots.load()
    }

    pub fn store(&self) -> &Store {
        &self.shared.store
    }

    /// The server's state; a LIVE server whose health check was failed by
    /// `POST /healthcheck/fail` is DRAINING, as Envoy reports it.
    pub fn state(&self) -> ServerState {
        match ServerState::from_gauge(self.info.state.value()) {
            ServerState::Live if *self.shared.health_check_failed.borrow() => ServerState::Draining,
            state => state,
        }
    }

    /// `POST /healthcheck/fail` (true) and `/healthcheck/ok` (false).
    pub fn fail_health_check(&self, failed: bool) {
        self.shared.health_check_failed.send_replace(failed);
        self.update_live();
    }

    /// `server.live`: 1 while the server is LIVE and its health check is not failed.
    fn update_live(&self) {
        let live = self.state() == ServerState::Live;
        self.store().gauge("server.live").set(i64::from(live));
    }
}

/// Starts workers and binds the bootstrap's listeners. Must be called inside a tokio runtime (the
/// main thread's); returns the handle and the manager future, which runs until shutdown.
pub fn start(
    bootstrap: Bootstrap,
    options: ServerOptions,
) -> Result<(ServerHandle, impl Future<Output = ()>), StartError> {
    // Counters get a slot per worker; the main thread's rare writes (xDS, admin, DNS) share
    // worker 0's slot, which costs a shared cache line now and then instead of a line per counter.
    let store = Store::with_config(options.concurrency.max(1), bootstrap.stats.clone());
    let state = store.gauge("server.state");
    state.set(ServerState::Initializing as i64);
    let shared = Arc::new(Shared {
        total_connections: store.gauge("server.total_connections"),
        health_check_failed: tokio::sync::watch::Sender::new(false),
        store,
        snapshots: Arc::new(SnapshotCell::default()),
    });
    let workers = (0..options.concurrency.max(1))
        .map(|i| WorkerHandle::spawn(i, shared.clone()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(StartError::Workers)?;
    let (commands, rx) = mpsc::unbounded_channel();
    let info = Arc::new(ServerInfo {
        started: Instant::now(),
        started_wall: std::time::SystemTime::now(),
        options: options.clone(),
        node: bootstrap.node.clone(),
        bootstrap: bootstrap.source.clone(),
        state,
        xds: arc_swap::ArcSwapOption::empty(),
    });
    let handle = ServerHandle {
        commands: commands.clone(),
        shared: shared.clone(),
        info,
    };
    let statics = bootstrap
        .source
        .static_resources
        .clone()
        .unwrap_or_default();
    let mut manager = Manager {
        handle: handle.clone(),
        workers,
        sockets: ListeningSockets::default(),
        static_listeners: statics.listeners.into_iter().map(Arc::new).collect(),
        static_clusters: statics.clusters.into_iter().map(Arc::new).collect(),
        dynamic_listeners: Vec::new(),
        dynamic_clusters: Vec::new(),
        routes: Arc::default(),
        secrets: bootstrap
            .secrets
            .iter()
            .map(|s| {
                let key = SecretKey {
                    name: s.name.clone(),
                    source: SecretSource::Static,
                };
                (key, Arc::new(s.clone()))
            })
            .collect(),
        assignments: HashMap::new(),
        resolvers: HashMap::new(),
        stats_flush_interval: stats_flush_interval(&bootstrap),
        admin_drain: None,
    };
    let errors = manager.rebuild();
    if let Some(first) = errors.into_iter().next() {
        return Err(StartError::Listener(first));
    }
    let store = &shared.store;
    store
        .gauge("server.concurrency")
        .set(manager.workers.len() as i64);
    // Listed from the start, as in Envoy: pilot-agent-driven drains are read against it.
    store.counter("listener_manager.listener_stopped");
    match bootstrap.xds {
        // Envoy starts its workers (and goes LIVE) once the first xDS config is in and warm.
        Some(settings) => {
            store.gauge("listener_manager.workers_started").set(0);
            store.gauge("server.live").set(0);
            crate::xds::start(settings, handle.clone()).map_err(StartError::Xds)?;
        }
        None => go_live(&handle),
    }
    Ok((handle, manager.run(rx)))
}

fn go_live(handle: &ServerHandle) {
    let store = handle.store();
    store.gauge("listener_manager.workers_started").set(1);
    handle.info.state.set(ServerState::Live as i64);
    handle.update_live();
}

/// The bootstrap's `stats_flush_interval`, Envoy's default 5 s when unset or invalid.
fn stats_flush_interval(bootstrap: &Bootstrap) -> Duration {
    bootstrap
        .source
        .stats_flush_interval
        .as_ref()
        .and_then(|d| crate::config::duration(d).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(Duration::from_secs(5))
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot start workers: {0}")]
    Workers(#[source] std::io::Error),
    #[error("{0}")]
    Listener(ConfigError),
    #[error("dynamic_resources.ads_config: {0}")]
    Xds(#[source] xds_client::ads::ConfigError),
}

struct Manager {
    handle: ServerHandle,
    workers: Vec<WorkerHandle>,
    sockets: ListeningSockets,
    static_listeners: Vec<Arc<listener_proto::Listener>>,
    static_clusters: Vec<Arc<cluster_proto::Cluster>>,
    dynamic_listeners: Vec<Arc<listener_proto::Listener>>,
    dynamic_clusters: Vec<Arc<cluster_proto::Cluster>>,
    /// Route configurations from RDS, by name.
    routes: Arc<BTreeMap<String, Arc<crate::config::route::RouteConfig>>>,
    /// The bootstrap's static secrets and the ones received.
    secrets: BTreeMap<SecretKey, Arc<Secret>>,
    /// Endpoints from EDS, by service name.
    assignments: HashMap<String, Arc<LoadAssignment>>,
    /// DNS resolution tasks by cluster name, with the cluster version they resolve for.
    resolvers: HashMap<String, (Arc<cluster_proto::Cluster>, tokio::task::JoinHandle<()>)>,
    /// How often histograms roll their interval view (bootstrap `stats_flush_interval`).
    stats_flush_interval: Duration,
    /// The scope of the graceful `/drain_listeners` sequence, once one started.
    admin_drain: Option<DrainScope>,
}

impl Manager {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let period = self.stats_flush_interval;
        let mut flush = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let command = tokio::select! {
                command = rx.recv() => match command {
                    Some(command) => command,
                    None => break,
                },
                _ = flush.tick() => {
                    self.handle.store().flush_histograms();
                    continue;
                }
            };
            match command {
                Command::Update {
                    listeners,
                    clusters,
                    reply,
                } => {
                    self.dynamic_listeners = listeners.into_iter().map(Arc::new).collect();
                    self.dynamic_clusters = clusters.into_iter().map(Arc::new).collect();
                    let _ = reply.send(self.rebuild());
                }
                Command::Xds { change, reply } => {
                    let _ = reply.send(self.apply_xds(change));
                }
                Command::SetHosts { cluster, endpoints } => self.set_hosts(&cluster, endpoints),
                Command::DrainListeners(request) => self.drain_listeners(request),
                Command::StopAccepting { keys } => self.stop_accepting(keys),
                Command::ListenerAddresses { reply } => {
                    let snapshot = self.handle.snapshot();
                    let addresses = snapshot
                        .listeners
                        .iter()
                        .map(|(name, l)| {
                            (
                                name.clone(),
                                self.sockets
                                    .actual(&BindKey::of(&l.config))
                                    .unwrap_or(l.config.address),
                            )
                        })
                        .collect();
                    let _ = reply.send(addresses);
                }
                Command::Shutdown { graceful } => {
                    if graceful {
                        self.drain_all().await;
                    }
                    break;
                }
            }
        }
        for (_, (_, task)) in self.resolvers.drain() {
            task.abort();
        }
        for worker in &mut self.workers {
            worker.stop();
        }
    }

    /// Builds and publishes a snapshot from the static and dynamic resources.
    fn rebuild(&mut self) -> Vec<ConfigError> {
        let shared = self.handle.shared.clone();
        let prev = shared.snapshots.load();
        let builder = SnapshotBuilder {
            store: &shared.store,
            workers: self.workers.len(),
        };
        let mut errors = Vec::new();
        let mut clusters = BTreeMap::new();
        let cluster_sources = self
            .static_clusters
            .iter()
            .map(|c| (c, false))
            .chain(self.dynamic_clusters.iter().map(|c| (c, true)));
        for (source, dynamic) in cluster_sources {
            match builder.cluster(prev.clusters.get(&source.name), source, dynamic) {
                Ok(entry) => {
                    let entry = self.with_assignment(entry);
                    clusters.insert(source.name.clone(), entry);
                }
                Err(e) => {
                    if let Some(old) = prev.clusters.get(&source.name) {
                        clusters.insert(source.name.clone(), old.clone());
                    }
                    errors.push(e);
                }
            }
        }
        let mut listeners = BTreeMap::new();
        for source in self.static_listeners.iter().chain(&self.dynamic_listeners) {
            match builder.listener(prev.listeners.get(&source.name), source) {
                Ok(entry) => {
                    listeners.insert(source.name.clone(), entry);
                }
                Err(e) => {
                    if let Some(old) = prev.listeners.get(&source.name) {
                        listeners.insert(source.name.clone(), old.clone());
                    }
                    errors.push(e);
                }
            }
        }
        // Port-0 listeners are never hand-off targets, and each binds a port of its own.
        let by_address: HashMap<_, _> = listeners
            .values()
            .filter(|l| l.config.address.port() != 0)
            .map(|l| (l.config.address, l.clone()))
            .collect();
        let next = Snapshot {
            version: prev.version + 1,
            listeners: Arc::new(listeners),
            by_address: Arc::new(by_address),
            clusters: Arc::new(clusters),
            routes: self.routes.clone(),
            secrets: self.secrets.clone(),
        };
        self.record_changes(&prev, &next);
        self.publish(next);
        let snapshot = shared.snapshots.load();
        for (key, e) in self.sockets.sync(&snapshot, &self.workers) {
            let listener = snapshot.bound_listener(&key);
            let name = listener.map_or_else(String::new, |l| l.config.name.clone());
            let address = listener.map_or_else(String::new, |l| l.config.address.to_string());
            shared
                .store
                .counter("listener_manager.listener_create_failure")
                .inc();
            errors.push(ConfigError::new(
                format!("listener {name:?}"),
                "address",
                format!("cannot bind {address}: {e}"),
            ));
        }
        self.sync_resolvers(&snapshot);
        errors
    }

    fn publish(&self, next: Snapshot) {
        let prev = self.handle.shared.snapshots.load();
        let changed: Vec<Arc<ClusterEntry>> = next
            .clusters
            .iter()
            .filter(|(name, entry)| {
                prev.clusters
                    .get(*name)
                    .is_none_or(|old| !Arc::ptr_eq(old, entry))
            })
            .map(|(_, entry)| entry.clone())
            .collect();
        let store = &self.handle.shared.store;
        store
            .gauge("cluster_manager.active_clusters")
            .set(next.clusters.len() as i64);
        store
            .gauge("listener_manager.total_listeners_active")
            .set(next.listeners.len() as i64);
        self.handle.shared.snapshots.publish(next);
        crate::outlier::start_sweeps(&self.handle.shared.snapshots, &changed);
        for entry in changed {
            snapshot::update_membership(&entry.stats, &entry.hosts);
        }
    }

    /// Drains listener versions that left, and counts adds, modifications and removals.
    fn record_changes(&self, prev: &Snapshot, next: &Snapshot) {
        let store = &self.handle.shared.store;
        for (name, old) in prev.listeners.iter() {
            match next.listeners.get(name) {
                Some(new) if Arc::ptr_eq(old, new) => {}
                Some(_) => {
                    store.counter("listener_manager.listener_modified").inc();
                    old.drain.start(self.handle.info.options.drain_time);
                }
                None => {
                    store.counter("listener_manager.listener_removed").inc();
                    old.drain.start(self.handle.info.options.drain_time);
                }
            }
        }
        let added = next
            .listeners
            .keys()
            .filter(|n| !prev.listeners.contains_key(*n))
            .count();
        store
            .counter("listener_manager.listener_added")
            .add(added as u64);
        for (name, new) in next.clusters.iter() {
            match prev.clusters.get(name) {
                None => store.counter("cluster_manager.cluster_added").inc(),
                Some(old) if !Arc::ptr_eq(old, new) && old.source != new.source => {
                    store.counter("cluster_manager.cluster_modified").inc();
                }
                _ => {}
            }
        }
        let removed = prev
            .clusters
            .keys()
            .filter(|n| !next.clusters.contains_key(*n))
            .count();
        store
            .counter("cluster_manager.cluster_removed")
            .add(removed as u64);
    }

    /// Applies what an xDS update changed: a full rebuild when listeners, clusters or routes
    /// changed, else only the clusters whose endpoints moved (their LB state rebuilt in place).
    fn apply_xds(&mut self, change: crate::xds::XdsChange) -> Vec<ConfigError> {
        let mut moved = Vec::new();
        for (service, assignment) in change.assignments {
            match assignment {
                Some(a) => {
                    self.assignments.insert(service.clone(), a);
                    moved.push(service);
                }
                None => {
                    self.assignments.remove(&service);
                }
            }
        }
        // Listeners and clusters are rebuilt (compared with what is there) only when they
        // changed: a route, endpoint or secret push costs what it changed, not the whole config.
        let structural = change.listeners.is_some() || change.clusters.is_some();
        let routes_or_secrets_changed = change.routes.is_some() || change.secrets.is_some();
        if let Some(secrets) = change.secrets {
            self.secrets
                .retain(|key, _| key.source == SecretSource::Static);
            self.secrets.extend(secrets);
        }
        if let Some(listeners) = change.listeners {
            self.dynamic_listeners = listeners;
        }
        if let Some(clusters) = change.clusters {
            self.dynamic_clusters = clusters;
        }
        if let Some(routes) = change.routes {
            self.routes = Arc::new(routes);
        }
        let errors = if structural {
            self.rebuild()
        } else {
            // Routes, endpoints and secrets only: the listener and cluster entries stay as they are.
            self.republish(&moved, routes_or_secrets_changed);
            Vec::new()
        };
        if change.live {
            go_live(&self.handle);
        }
        errors
    }

    /// An EDS cluster entry with the endpoints last received for its service (unchanged when
    /// it already has them, or when none arrived yet).
    fn with_assignment(&self, entry: Arc<ClusterEntry>) -> Arc<ClusterEntry> {
        if !matches!(entry.config.discovery, Discovery::Eds { .. }) {
            return entry;
        }
        let service = crate::xds::settings::eds_service_name(&entry.config);
        match self.assignments.get(service) {
            Some(a) if entry.config.load_assignment != **a => {
                Arc::new(snapshot::with_assignment(&entry, a))
            }
            _ => entry,
        }
    }

    /// Publishes new hosts for the EDS clusters of `services` and, when `others_changed`, the
    /// current routes and secrets, leaving listener and cluster entries as they are (one
    /// snapshot, none if nothing changed; listeners name their RDS routes, which requests look
    /// up in the snapshot they read).
    fn republish(&mut self, services: &[String], others_changed: bool) {
        let prev = self.handle.shared.snapshots.load();
        let services: std::collections::HashSet<&str> =
            services.iter().map(String::as_str).collect();
        // Copied only when an assignment changes (a route-only push costs no cluster copy).
        let mut clusters = None;
        for (name, entry) in prev.clusters.iter() {
            let Discovery::Eds { .. } = entry.config.discovery else {
                continue;
            };
            if !services.contains(crate::xds::settings::eds_service_name(&entry.config)) {
                continue;
            }
            let updated = self.with_assignment(entry.clone());
            if !Arc::ptr_eq(&updated, entry) {
                clusters
                    .get_or_insert_with(|| (*prev.clusters).clone())
                    .insert(name.clone(), updated);
            }
        }
        if clusters.is_none() && !others_changed {
            return;
        }
        let next = Snapshot {
            version: prev.version + 1,
            listeners: prev.listeners.clone(),
            by_address: prev.by_address.clone(),
            clusters: clusters.map_or_else(|| prev.clusters.clone(), Arc::new),
            routes: self.routes.clone(),
            secrets: self.secrets.clone(),
        };
        self.publish(next);
    }

    fn set_hosts(&mut self, cluster: &str, endpoints: Vec<Endpoint>) {
        let prev = self.handle.shared.snapshots.load();
        let Some(entry) = prev.clusters.get(cluster) else {
            return;
        };
        let mut clusters = (*prev.clusters).clone();
        clusters.insert(
            cluster.to_string(),
            Arc::new(snapshot::with_hosts(entry, endpoints)),
        );
        let next = Snapshot {
            version: prev.version + 1,
            listeners: prev.listeners.clone(),
            by_address: prev.by_address.clone(),
            clusters: Arc::new(clusters),
            routes: prev.routes.clone(),
            secrets: prev.secrets.clone(),
        };
        self.publish(next);
    }

    /// Starts, restarts or stops DNS resolution to match the snapshot's DNS clusters.
    fn sync_resolvers(&mut self, snapshot: &Snapshot) {
        self.resolvers.retain(|name, (source, task)| {
            let keep = snapshot
                .clusters
                .get(name)
                .is_some_and(|c| c.source == *source);
            if !keep {
                task.abort();
            }
            keep
        });
        for (name, entry) in snapshot.clusters.iter() {
            let is_dns = matches!(
                entry.config.discovery,
                Discovery::StrictDns(_) | Discovery::LogicalDns(_)
            );
            if is_dns && !self.resolvers.contains_key(name) {
                let task = tokio::spawn(dns::resolve_forever(
                    entry.config.clone(),
                    self.handle.clone(),
                ));
                self.resolvers
                    .insert(name.clone(), (entry.source.clone(), task));
            }
        }
    }
}
