//! What Tern holds from the control plane, and when it is allowed to serve it.
//!
//! [`XdsState`] takes one [`Update`] at a time, converts and validates every resource with the
//! same converters the bootstrap uses, and keeps per listener and per cluster an *active* version
//! (what the manager serves) and maybe a *warming* one (accepted, waiting for what it depends on):
//! - an EDS cluster warms until its ClusterLoadAssignment arrived;
//! - a listener warms until every RouteConfiguration its connection managers name arrived;
//! - either warms until every secret its TLS transport sockets name arrived (see [`secrets`]);
//! - warming ends early when the dependency's `initial_fetch_timeout` passes (0: never).
//!
//! While a new version warms the previous one stays active, so an update never leaves a gap.
//! RDS, EDS and secret subscriptions follow what the listeners and clusters (active or warming)
//! name; what nothing names any more is unsubscribed and forgotten.
//!
//! Invariants: a rejected resource changes nothing (its last good version stays); a removal is a
//! fact and always applies; [`XdsState::take_change`] reports exactly what the manager must
//! change, so one accepted push makes at most one snapshot.

use super::settings::{SecretSources, XdsSettings};
use crate::config::cluster::{LoadAssignment, load_assignment};
use crate::config::route::RouteConfig;
use crate::config::secret::Secret;
use crate::config::tls::{SecretKey, SecretSource};
use crate::stats::{Gauge, Store};
use stats::{Outcome, SubscriptionStats};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use xds_client::ads::{Rejection, Update};
use xds_client::any;
use xds_client::pb::envoy::config::cluster::v3 as cluster_proto;
use xds_client::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use xds_client::pb::envoy::config::listener::v3 as listener_proto;
use xds_client::pb::envoy::config::route::v3::RouteConfiguration;
use xds_client::pb::envoy::extensions::transport_sockets::tls::v3::Secret as SecretProto;
use xds_client::resource::ResourceType;

/// One accepted version of a resource, as `/config_dump` shows it.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub source: Arc<T>,
    pub version: String,
    pub last_updated: SystemTime,
    /// What it waits for: RDS names (listener) or the EDS service name (cluster).
    needs: Vec<Need>,
    /// The SDS secrets its TLS transport sockets name (static ones are always there).
    secrets: Vec<(SecretKey, Option<Duration>)>,
}

/// A resource a listener or cluster version waits for.
#[derive(Debug, Clone)]
struct Need {
    /// The RouteConfiguration or the EDS service.
    name: String,
    /// Its config source's `initial_fetch_timeout`.
    timeout: Option<Duration>,
    /// Where its subscription stats go: the connection manager's `stat_prefix` (RDS) or the
    /// cluster's stat name (EDS).
    stat_prefix: String,
}

/// A listener or cluster: the version served and the one warming, if any.
#[derive(Debug, Clone)]
pub struct Slot<T> {
    pub active: Option<Versioned<T>>,
    pub warming: Option<(Versioned<T>, Option<Instant>)>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            active: None,
            warming: None,
        }
    }
}

impl<T: Clone> Slot<T> {
    fn active_source(&self) -> Option<Arc<T>> {
        self.active.as_ref().map(|v| v.source.clone())
    }

    /// Ends warming whose deadline passed: the warming version serves (without what it waited
    /// for). Returns whether the active version changed.
    fn expire(slot: &mut Arc<Self>, now: Instant) -> bool {
        let due = matches!(&slot.warming, Some((_, Some(d))) if *d <= now);
        if due {
            let slot = Arc::make_mut(slot);
            slot.active = slot.warming.take().map(|(v, _)| v);
        }
        due
    }
}

impl<T> Slot<T> {
    fn versions(&self) -> impl Iterator<Item = &Versioned<T>> {
        self.active
            .iter()
            .chain(self.warming.iter().map(|(v, _)| v))
    }
}

/// A route configuration or endpoint assignment as received.
#[derive(Debug, Clone)]
pub struct Received<C, P> {
    pub config: Arc<C>,
    pub source: Arc<P>,
    pub version: String,
    pub last_updated: SystemTime,
}

/// The xDS view the admin server shows (`/config_dump`), published after every update.
///
/// Tables and entries are shared (`Arc`) between the state and the published copies and copied
/// on write (`Arc::make_mut`), so publishing after a route push copies the route table only,
/// however many listeners, clusters and endpoints there are.
#[derive(Debug, Clone, Default)]
pub struct XdsDump {
    pub lds_version: String,
    pub cds_version: String,
    pub listeners: Arc<BTreeMap<String, Arc<Slot<listener_proto::Listener>>>>,
    pub clusters: Arc<BTreeMap<String, Arc<Slot<cluster_proto::Cluster>>>>,
    pub routes: Arc<BTreeMap<String, Arc<Received<RouteConfig, RouteConfiguration>>>>,
    pub endpoints: Arc<BTreeMap<String, Arc<Received<LoadAssignment, ClusterLoadAssignment>>>>,
    /// Secrets received (their `source` with private keys redacted).
    pub secrets: BTreeMap<SecretKey, Received<Secret, SecretProto>>,
    /// Secrets some listener or cluster names, with when they were first asked for; those not in
    /// `secrets` are still awaited (`dynamic_warming_secrets`).
    pub wanted_secrets: BTreeMap<SecretKey, SystemTime>,
}

/// A table of listener or cluster slots.
type Slots<T> = Arc<BTreeMap<String, Arc<Slot<T>>>>;

/// Ends the warming of every slot of `slots` whose deadline passed, copying the table only
/// when one did. Returns whether an active version changed.
fn expire_slots<T: Clone>(slots: &mut Slots<T>, now: Instant) -> bool {
    let due = |s: &Arc<Slot<T>>| matches!(&s.warming, Some((_, Some(d))) if *d <= now);
    if !slots.values().any(due) {
        return false;
    }
    let mut changed = false;
    for slot in Arc::make_mut(slots).values_mut() {
        changed |= Slot::expire(slot, now);
    }
    changed
}

/// Moves to active every warming version of `slots` whose dependencies (RDS/EDS names and
/// secrets) are all ready, copying the table only when one is. Returns whether an active
/// version changed.
fn promote_slots<T: Clone>(
    slots: &mut Slots<T>,
    ready: impl Fn(&str) -> bool,
    secret_ready: impl Fn(&SecretKey) -> bool,
) -> bool {
    let warm = |s: &Arc<Slot<T>>| is_warm(s, &ready, &secret_ready);
    if !slots.values().any(warm) {
        return false;
    }
    let mut changed = false;
    for slot in Arc::make_mut(slots).values_mut() {
        changed |= take_if_ready(slot, &ready, &secret_ready);
    }
    changed
}

/// What the manager must change after an update; `None` fields are unchanged.
#[derive(Debug, Default)]
pub struct XdsChange {
    /// The complete set of active dynamic listeners (shared with the xDS view).
    pub listeners: Option<Vec<Arc<listener_proto::Listener>>>,
    /// The complete set of active dynamic clusters (shared with the xDS view).
    pub clusters: Option<Vec<Arc<cluster_proto::Cluster>>>,
    /// Every route configuration received.
    pub routes: Option<BTreeMap<String, Arc<RouteConfig>>>,
    /// New endpoints by EDS service name (`None`: forgotten, nothing uses it any more).
    pub assignments: Vec<(String, Option<Arc<LoadAssignment>>)>,
    /// Every dynamic secret received, when any changed.
    pub secrets: Option<BTreeMap<SecretKey, Arc<Secret>>>,
    /// Start-up is complete: the server goes LIVE.
    pub live: bool,
}

impl XdsChange {
    pub fn is_empty(&self) -> bool {
        self.listeners.is_none()
            && self.clusters.is_none()
            && self.routes.is_none()
            && self.assignments.is_empty()
            && self.secrets.is_none()
            && !self.live
    }
}

/// Subscriptions to change: on the ADS stream by type, and on each SDS cluster's stream.
#[derive(Debug, Default, PartialEq)]
pub struct Subscriptions {
    pub subscribe: Vec<(ResourceType, Vec<String>)>,
    pub unsubscribe: Vec<(ResourceType, Vec<String>)>,
    /// Secret names to add, by SDS cluster.
    pub sds_subscribe: Vec<(String, Vec<String>)>,
    /// Secret names to drop, by SDS cluster.
    pub sds_unsubscribe: Vec<(String, Vec<String>)>,
}

/// The control plane's resources, their warming, and the subscriptions they imply.
pub struct XdsState {
    store: Store,
    dump: XdsDump,
    static_eds: Vec<String>,
    secret_sources: SecretSources,
    subscribed_routes: BTreeSet<String>,
    subscribed_endpoints: BTreeSet<String>,
    /// Initial fetch: `Ok(())` once the first response came (or timed out), else the deadline.
    lds_init: Result<(), Option<Instant>>,
    cds_init: Result<(), Option<Instant>>,
    live: bool,
    listeners_dirty: bool,
    clusters_dirty: bool,
    routes_dirty: bool,
    secrets_dirty: bool,
    /// A listener or cluster version came, left or moved, so what they reference (RDS and EDS
    /// names) may have changed: [`XdsState::sync_subscriptions`] has work to do.
    references_dirty: bool,
    assignments_changed: Vec<(String, Option<Arc<LoadAssignment>>)>,
    /// LDS and CDS are subscribed (wildcard) on the ADS stream.
    lds_subscribed: bool,
    cds_subscribed: bool,
    lds_stats: SubscriptionStats,
    cds_stats: SubscriptionStats,
    /// RDS subscriptions' stats, by route configuration name.
    rds_stats: BTreeMap<String, SubscriptionStats>,
    /// SDS subscriptions' stats, by secret.
    sds_stats: BTreeMap<SecretKey, SubscriptionStats>,
    /// EDS stats by cluster stat name.
    eds_stats: HashMap<String, SubscriptionStats>,
    /// The cluster stat names that take each EDS service; `None` after a cluster change.
    eds_users: Option<HashMap<String, Vec<String>>>,
    warming_clusters: Gauge,
    warming_listeners: Gauge,
}

impl XdsState {
    pub fn new(settings: &XdsSettings, store: &Store, now: Instant) -> Self {
        let init = |enabled: bool, timeout: Option<Duration>| {
            if enabled {
                Err(timeout.map(|t| now + t))
            } else {
                Ok(())
            }
        };
        let state = XdsState {
            store: store.clone(),
            dump: XdsDump::default(),
            static_eds: settings.static_eds.clone(),
            secret_sources: settings.secret_sources.clone(),
            subscribed_routes: BTreeSet::new(),
            subscribed_endpoints: BTreeSet::new(),
            lds_init: init(settings.lds, settings.lds_initial_fetch_timeout),
            cds_init: init(settings.cds, settings.cds_initial_fetch_timeout),
            live: false,
            listeners_dirty: false,
            clusters_dirty: false,
            routes_dirty: false,
            secrets_dirty: false,
            // The first sync subscribes the static clusters' EDS names.
            references_dirty: true,
            assignments_changed: Vec::new(),
            lds_subscribed: settings.lds,
            cds_subscribed: settings.cds,
            lds_stats: SubscriptionStats::lds(store),
            cds_stats: SubscriptionStats::cds(store),
            rds_stats: BTreeMap::new(),
            sds_stats: BTreeMap::new(),
            eds_stats: HashMap::new(),
            eds_users: None,
            warming_clusters: store.gauge("cluster_manager.warming_clusters"),
            warming_listeners: store.gauge("listener_manager.total_listeners_warming"),
        };
        if settings.lds {
            state.lds_stats.started();
        }
        if settings.cds {
            state.cds_stats.started();
        }
        state
    }

    pub fn dump(&self) -> &XdsDump {
        &self.dump
    }

    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Applies one response; returns the resources refused, with reasons.
    pub fn apply(&mut self, update: Update, now: Instant) -> Vec<Rejection> {
        let version = update.version.clone();
        let count = |stats: &SubscriptionStats, rejections: &[Rejection], changed: bool| {
            if rejections.is_empty() {
                let outcome = Outcome {
                    changed,
                    empty: false,
                };
                stats.accepted(&version, now.elapsed(), outcome);
            } else {
                stats.rejected();
            }
        };
        self.references_dirty |= matches!(
            update.resource_type,
            ResourceType::Listener | ResourceType::Cluster
        );
        let rejections = match update.resource_type {
            ResourceType::Listener => {
                let (rejections, changed) = self.apply_listeners(update, now);
                count(&self.lds_stats, &rejections, changed);
                if rejections.is_empty() {
                    self.dump.lds_version = version;
                }
                self.lds_init = Ok(());
                rejections
            }
            ResourceType::Cluster => {
                let (rejections, changed) = self.apply_clusters(update, now);
                count(&self.cds_stats, &rejections, changed);
                if rejections.is_empty() {
                    self.dump.cds_version = version;
                }
                self.cds_init = Ok(());
                rejections
            }
            ResourceType::Route => self.apply_routes(update),
            ResourceType::Endpoint => self.apply_endpoints(update),
            ResourceType::Secret => self.apply_secrets(&SecretSource::Ads, update),
        };
        self.promote();
        rejections
    }

    /// The stream was lost: every subscription counts a failure, as in Envoy.
    pub fn stream_lost(&mut self) {
        if self.lds_subscribed {
            self.lds_stats.lost();
        }
        if self.cds_subscribed {
            self.cds_stats.lost();
        }
        for stats in self.rds_stats.values() {
            stats.lost();
        }
        // Secrets on the ADS stream (an SDS cluster's stream has its own life).
        for (key, stats) in &self.sds_stats {
            if key.source == SecretSource::Ads {
                stats.lost();
            }
        }
        for name in eds_users(&mut self.eds_users, &self.dump.clusters)
            .values()
            .flatten()
        {
            if let Some(stats) = self.eds_stats.get(name) {
                stats.lost();
            }
        }
    }

    /// Ends the warming and initial fetches whose `initial_fetch_timeout` passed.
    pub fn expire(&mut self, now: Instant) {
        for (init, stats) in [
            (&mut self.lds_init, &self.lds_stats),
            (&mut self.cds_init, &self.cds_stats),
        ] {
            if matches!(init, Err(Some(deadline)) if *deadline <= now) {
                *init = Ok(());
                stats.timed_out();
            }
        }
        // RDS subscriptions whose listeners stop waiting for them time out.
        let routes = &self.dump.routes;
        let timed_out: BTreeSet<&str> = self
            .dump
            .listeners
            .values()
            .filter_map(|s| s.warming.as_ref())
            .filter(|(_, deadline)| deadline.is_some_and(|d| d <= now))
            .flat_map(|(v, _)| v.needs.iter())
            .filter(|n| !routes.contains_key(&n.name))
            .map(|n| n.name.as_str())
            .collect();
        for name in timed_out {
            if let Some(stats) = self.rds_stats.get(name) {
                stats.timed_out();
            }
        }
        self.listeners_dirty |= expire_slots(&mut self.dump.listeners, now);
        self.clusters_dirty |= expire_slots(&mut self.dump.clusters, now);
        self.references_dirty |= self.listeners_dirty || self.clusters_dirty;
        self.promote();
    }

    /// The earliest moment [`XdsState::expire`] has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let inits = [&self.lds_init, &self.cds_init]
            .into_iter()
            .filter_map(|i| i.err().flatten());
        let warming = self
            .dump
            .listeners
            .values()
            .filter_map(|s| s.warming.as_ref().and_then(|(_, d)| *d))
            .chain(
                self.dump
                    .clusters
                    .values()
                    .filter_map(|s| s.warming.as_ref().and_then(|(_, d)| *d)),
            );
        inits.chain(warming).min()
    }

    /// What the manager must change since the last call.
    pub fn take_change(&mut self) -> XdsChange {
        let change = XdsChange {
            listeners: std::mem::take(&mut self.listeners_dirty).then(|| {
                self.dump
                    .listeners
                    .values()
                    .filter_map(|s| s.active_source())
                    .collect()
            }),
            clusters: std::mem::take(&mut self.clusters_dirty).then(|| {
                self.dump
                    .clusters
                    .values()
                    .filter_map(|s| s.active_source())
                    .collect()
            }),
            routes: std::mem::take(&mut self.routes_dirty).then(|| {
                self.dump
                    .routes
                    .iter()
                    .map(|(name, r)| (name.clone(), r.config.clone()))
                    .collect()
            }),
            assignments: std::mem::take(&mut self.assignments_changed),
            secrets: std::mem::take(&mut self.secrets_dirty).then(|| {
                self.dump
                    .secrets
                    .iter()
                    .map(|(key, r)| (key.clone(), r.config.clone()))
                    .collect()
            }),
            live: false,
        };
        let live = !self.live
            && self.lds_init.is_ok()
            && self.cds_init.is_ok()
            && self.warming_count().0 == 0
            && self.warming_count().1 == 0;
        self.live |= live;
        XdsChange { live, ..change }
    }

    /// The RDS and EDS subscriptions to change so they match what is referenced. Nothing to do
    /// (and no walk over every listener and cluster) after a route or endpoint update.
    pub fn sync_subscriptions(&mut self) -> Subscriptions {
        if !std::mem::take(&mut self.references_dirty) {
            return Subscriptions::default();
        }
        // Each route configuration with the stat_prefix of the first manager naming it.
        let mut prefixes: BTreeMap<&str, &str> = BTreeMap::new();
        for need in self
            .dump
            .listeners
            .values()
            .flat_map(|s| s.versions())
            .flat_map(|v| v.needs.iter())
        {
            prefixes.entry(&need.name).or_insert(&need.stat_prefix);
        }
        let routes: BTreeSet<String> = prefixes.keys().map(|n| n.to_string()).collect();
        let endpoints: BTreeSet<String> = self
            .dump
            .clusters
            .values()
            .flat_map(|s| s.versions())
            .flat_map(|v| v.needs.iter().map(|n| n.name.clone()))
            .chain(self.static_eds.iter().cloned())
            .collect();
        let mut out = Subscriptions::default();
        diff(
            ResourceType::Route,
            &mut self.subscribed_routes,
            routes,
            &mut out,
        );
        diff(
            ResourceType::Endpoint,
            &mut self.subscribed_endpoints,
            endpoints,
            &mut out,
        );
        for (_, names) in out
            .subscribe
            .iter()
            .filter(|(ty, _)| *ty == ResourceType::Route)
        {
            for name in names {
                let stat_prefix = prefixes.get(name.as_str()).copied().unwrap_or_default();
                let stats = SubscriptionStats::rds(&self.store, stat_prefix, name);
                stats.started();
                self.rds_stats.insert(name.clone(), stats);
            }
        }
        for (ty, names) in &out.unsubscribe {
            for name in names {
                match ty {
                    ResourceType::Route => {
                        self.rds_stats.remove(name);
                        if self.dump.routes.contains_key(name) {
                            Arc::make_mut(&mut self.dump.routes).remove(name);
                            self.routes_dirty = true;
                        }
                    }
                    _ => {
                        if self.dump.endpoints.contains_key(name) {
                            Arc::make_mut(&mut self.dump.endpoints).remove(name);
                            self.assignments_changed.push((name.clone(), None));
                        }
                    }
                }
            }
        }
        self.sync_secret_subscriptions(&mut out);
        out
    }

    /// Returns the refusals and whether anything was added, changed or removed.
    fn apply_listeners(&mut self, update: Update, now: Instant) -> (Vec<Rejection>, bool) {
        let mut rejections = Vec::new();
        let mut changed = false;
        for resource in &update.resources {
            match listener_version(resource, &self.secret_sources) {
                Ok(version) => {
                    let ready = |name: &str| self.dump.routes.contains_key(name);
                    let secret_ready = |key: &SecretKey| self.dump.secrets.contains_key(key);
                    let slot = Arc::make_mut(&mut self.dump.listeners)
                        .entry(resource.name.clone())
                        .or_default();
                    let placed = place(Arc::make_mut(slot), version, now, ready, secret_ready);
                    self.listeners_dirty |= placed == Placed::Active;
                    changed |= placed != Placed::Same;
                }
                Err(reason) => rejections.push(Rejection::new(&resource.name, reason)),
            }
        }
        for name in &update.removed {
            if !self.dump.listeners.contains_key(name) {
                continue;
            }
            if let Some(slot) = Arc::make_mut(&mut self.dump.listeners).remove(name) {
                self.listeners_dirty |= slot.active.is_some();
                changed = true;
            }
        }
        (rejections, changed)
    }

    /// Returns the refusals and whether anything was added, changed or removed.
    fn apply_clusters(&mut self, update: Update, now: Instant) -> (Vec<Rejection>, bool) {
        let mut rejections = Vec::new();
        let mut changed = false;
        for resource in &update.resources {
            match cluster_version(resource, &self.secret_sources) {
                Ok(version) => {
                    // A new EDS cluster version starts its own subscription, as in Envoy.
                    let eds_stat_names: Vec<String> = version
                        .needs
                        .iter()
                        .map(|n| n.stat_prefix.clone())
                        .collect();
                    let ready = |name: &str| self.dump.endpoints.contains_key(name);
                    let secret_ready = |key: &SecretKey| self.dump.secrets.contains_key(key);
                    let slot = Arc::make_mut(&mut self.dump.clusters)
                        .entry(resource.name.clone())
                        .or_default();
                    let placed = place(Arc::make_mut(slot), version, now, ready, secret_ready);
                    self.clusters_dirty |= placed == Placed::Active;
                    if placed != Placed::Same {
                        changed = true;
                        for name in eds_stat_names {
                            self.eds_stats
                                .entry(name)
                                .or_insert_with_key(|n| SubscriptionStats::eds(&self.store, n))
                                .started();
                        }
                    }
                }
                Err(reason) => rejections.push(Rejection::new(&resource.name, reason)),
            }
        }
        for name in &update.removed {
            if !self.dump.clusters.contains_key(name) {
                continue;
            }
            if let Some(slot) = Arc::make_mut(&mut self.dump.clusters).remove(name) {
                self.clusters_dirty |= slot.active.is_some();
                changed = true;
            }
        }
        if changed {
            self.eds_users = None;
        }
        (rejections, changed)
    }

    fn apply_routes(&mut self, update: Update) -> Vec<Rejection> {
        let mut rejections = Vec::new();
        for resource in &update.resources {
            let started = Instant::now();
            let stats = self.rds_stats.get(&resource.name);
            let converted = any::unpack::<RouteConfiguration>(&resource.body)
                .map_err(|e| e.to_string())
                .and_then(|p| {
                    let config = RouteConfig::try_from(&p).map_err(|e| e.to_string())?;
                    Ok((p, config))
                });
            match converted {
                Ok((source, config)) => {
                    let same = self
                        .dump
                        .routes
                        .get(&resource.name)
                        .is_some_and(|r| *r.source == source);
                    if let Some(stats) = stats {
                        let outcome = Outcome {
                            changed: !same,
                            empty: false,
                        };
                        stats.accepted(&update.version, started.elapsed(), outcome);
                    }
                    if same {
                        continue;
                    }
                    Arc::make_mut(&mut self.dump.routes).insert(
                        resource.name.clone(),
                        Arc::new(Received {
                            config: Arc::new(config),
                            source: Arc::new(source),
                            version: resource.version.clone(),
                            last_updated: SystemTime::now(),
                        }),
                    );
                    self.routes_dirty = true;
                }
                Err(reason) => {
                    if let Some(stats) = stats {
                        stats.rejected();
                    }
                    rejections.push(Rejection::new(&resource.name, reason));
                }
            }
        }
        for name in &update.removed {
            if self.dump.routes.contains_key(name) {
                Arc::make_mut(&mut self.dump.routes).remove(name);
                self.routes_dirty = true;
            }
        }
        rejections
    }

    fn apply_endpoints(&mut self, update: Update) -> Vec<Rejection> {
        let mut rejections = Vec::new();
        for resource in &update.resources {
            let started = Instant::now();
            let converted = any::unpack::<ClusterLoadAssignment>(&resource.body)
                .map_err(|e| e.to_string())
                .and_then(|p| {
                    let la = load_assignment(&p, false).map_err(|e| e.to_string())?;
                    Ok((p, la))
                });
            let users = eds_users(&mut self.eds_users, &self.dump.clusters);
            let stats = users
                .get(&resource.name)
                .into_iter()
                .flatten()
                .filter_map(|name| self.eds_stats.get(name));
            match converted {
                Ok((source, assignment)) => {
                    let same = self
                        .dump
                        .endpoints
                        .get(&resource.name)
                        .is_some_and(|r| *r.config == assignment);
                    let outcome = Outcome {
                        changed: !same,
                        empty: assignment.endpoints.is_empty(),
                    };
                    for s in stats {
                        s.accepted(&update.version, started.elapsed(), outcome);
                    }
                    if same {
                        continue;
                    }
                    let assignment = Arc::new(assignment);
                    self.assignments_changed
                        .push((resource.name.clone(), Some(assignment.clone())));
                    Arc::make_mut(&mut self.dump.endpoints).insert(
                        resource.name.clone(),
                        Arc::new(Received {
                            config: assignment,
                            source: Arc::new(source),
                            version: resource.version.clone(),
                            last_updated: SystemTime::now(),
                        }),
                    );
                }
                Err(reason) => {
                    for s in stats {
                        s.rejected();
                    }
                    rejections.push(Rejection::new(&resource.name, reason));
                }
            }
        }
        // A removed assignment leaves its clusters without hosts.
        for name in &update.removed {
            if self.dump.endpoints.contains_key(name) {
                let empty = Arc::new(LoadAssignment {
                    overprovisioning_factor: 140,
                    ..Default::default()
                });
                self.assignments_changed
                    .push((name.clone(), Some(empty.clone())));
                if let Some(r) = Arc::make_mut(&mut self.dump.endpoints).get_mut(name) {
                    let r = Arc::make_mut(r);
                    r.config = empty;
                    r.source = Arc::new(ClusterLoadAssignment {
                        cluster_name: name.clone(),
                        ..Default::default()
                    });
                }
            }
        }
        rejections
    }

    /// Moves warming versions whose dependencies all arrived to active.
    fn promote(&mut self) {
        let secrets = &self.dump.secrets;
        let secret_ready = |key: &SecretKey| secrets.contains_key(key);
        let routes = &self.dump.routes;
        if promote_slots(
            &mut self.dump.listeners,
            |n| routes.contains_key(n),
            secret_ready,
        ) {
            self.listeners_dirty = true;
            self.references_dirty = true;
        }
        let endpoints = &self.dump.endpoints;
        if promote_slots(
            &mut self.dump.clusters,
            |n| endpoints.contains_key(n),
            secret_ready,
        ) {
            self.clusters_dirty = true;
            self.references_dirty = true;
        }
        let (clusters, listeners) = self.warming_count();
        self.warming_clusters.set(clusters as i64);
        self.warming_listeners.set(listeners as i64);
    }

    fn warming_count(&self) -> (usize, usize) {
        let count = |w: bool| usize::from(w);
        (
            self.dump
                .clusters
                .values()
                .map(|s| count(s.warming.is_some()))
                .sum(),
            self.dump
                .listeners
                .values()
                .map(|s| count(s.warming.is_some()))
                .sum(),
        )
    }
}

/// Which clusters (by stat name) take endpoints from each EDS service: built once after the
/// clusters changed (`users` is `None` then), so an EDS response costs what it carries, not
/// the cluster count.
fn eds_users<'a>(
    users: &'a mut Option<HashMap<String, Vec<String>>>,
    clusters: &Slots<cluster_proto::Cluster>,
) -> &'a HashMap<String, Vec<String>> {
    users.get_or_insert_with(|| {
        let mut users: HashMap<String, Vec<String>> = HashMap::new();
        for need in clusters
            .values()
            .flat_map(|s| s.versions())
            .flat_map(|v| v.needs.iter())
        {
            let names = users.entry(need.name.clone()).or_default();
            if !names.contains(&need.stat_prefix) {
                names.push(need.stat_prefix.clone());
            }
        }
        users
    })
}

/// Where [`place`] put a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placed {
    /// It is the version already served or already warming: nothing changed.
    Same,
    /// It warms; the active version keeps serving.
    Warming,
    /// It serves.
    Active,
}

/// Puts a newly accepted version in its slot: active at once when nothing it needs is missing,
/// else warming (the active version keeps serving).
fn place<T: PartialEq>(
    slot: &mut Slot<T>,
    version: Versioned<T>,
    now: Instant,
    ready: impl Fn(&str) -> bool,
    secret_ready: impl Fn(&SecretKey) -> bool,
) -> Placed {
    if slot
        .active
        .as_ref()
        .is_some_and(|a| a.source == version.source)
    {
        // Back to (or still) the served version: nothing warms any more.
        slot.warming = None;
        return Placed::Same;
    }
    if slot
        .warming
        .as_ref()
        .is_some_and(|(w, _)| w.source == version.source)
    {
        return Placed::Same;
    }
    let missing: Vec<Option<Duration>> = version
        .needs
        .iter()
        .filter(|n| !ready(&n.name))
        .map(|n| n.timeout)
        .chain(
            version
                .secrets
                .iter()
                .filter(|(k, _)| !secret_ready(k))
                .map(|(_, t)| *t),
        )
        .collect();
    if missing.is_empty() {
        slot.active = Some(version);
        slot.warming = None;
        return Placed::Active;
    }
    // Warm until every dependency arrived or the longest initial_fetch_timeout passed.
    let deadline = if missing.iter().any(Option::is_none) {
        None
    } else {
        missing.into_iter().flatten().max().map(|t| now + t)
    };
    slot.warming = Some((version, deadline));
    Placed::Warming
}

fn is_warm<T>(
    slot: &Slot<T>,
    ready: &impl Fn(&str) -> bool,
    secret_ready: &impl Fn(&SecretKey) -> bool,
) -> bool {
    slot.warming.as_ref().is_some_and(|(w, _)| {
        w.needs.iter().all(|n| ready(&n.name)) && w.secrets.iter().all(|(k, _)| secret_ready(k))
    })
}

fn take_if_ready<T: Clone>(
    slot: &mut Arc<Slot<T>>,
    ready: &impl Fn(&str) -> bool,
    secret_ready: &impl Fn(&SecretKey) -> bool,
) -> bool {
    let warm = is_warm(slot, ready, secret_ready);
    if warm {
        let slot = Arc::make_mut(slot);
        slot.active = slot.warming.take().map(|(v, _)| v);
    }
    warm
}

fn diff(
    ty: ResourceType,
    current: &mut BTreeSet<String>,
    wanted: BTreeSet<String>,
    out: &mut Subscriptions,
) {
    let add: Vec<String> = wanted.difference(current).cloned().collect();
    let drop: Vec<String> = current.difference(&wanted).cloned().collect();
    if !add.is_empty() {
        out.subscribe.push((ty, add));
    }
    if !drop.is_empty() {
        out.unsubscribe.push((ty, drop));
    }
    *current = wanted;
}

mod secrets;
mod stats;
#[cfg(test)]
mod tests;
mod versions;

use versions::{cluster_version, listener_version};
