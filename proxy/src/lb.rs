//! The per-worker load balancer: given a cluster's hosts (weights, priorities, localities,
//! health) and its LB policy, choose a host for each request the way Envoy would.
//!
//! One `LoadBalancer` is built per worker per cluster from a config snapshot and rebuilt when the
//! snapshot changes; it holds no locks and is not shared. A pick is two steps, as in Envoy:
//!
//! 1. choose a priority from the priority load (`priority`: health, overprovisioning factor,
//!    degraded hosts, panic), then
//! 2. choose a host within it with the policy: round robin and least request (`round_robin`,
//!    `least_request`, on the EDF scheduler in `edf`), random, or a consistent-hash table
//!    (`ring_hash`, `maglev`, via `hashing`).
//!
//! Hosts that are unhealthy or draining are never chosen unless their priority is in panic.
//! Randomness comes from a per-balancer `SmallRng`; `LoadBalancer::with_seed` makes it
//! deterministic for tests.

mod config;
mod edf;
mod hashing;
mod host_set;
mod least_request;
mod locality;
mod maglev;
mod picker;
mod priority;
mod ring_hash;
mod round_robin;
mod source_balancer;
#[cfg(test)]
mod tests;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use xxhash_rust::xxh64::xxh64;

pub use config::{
    DEFAULT_ACTIVE_REQUEST_BIAS, DEFAULT_CHOICE_COUNT, DEFAULT_MAGLEV_TABLE_SIZE,
    DEFAULT_MAX_RING_SIZE, DEFAULT_MIN_RING_SIZE, DEFAULT_OVERPROVISIONING_FACTOR,
    DEFAULT_PANIC_THRESHOLD, LbConfig, LbConfigError, LbPolicy, MAX_MAGLEV_TABLE_SIZE,
};
pub use edf::EdfScheduler;
pub use priority::{Availability, PriorityCounts, PriorityLoad};

use hashing::{HashPolicy, HashingBalancer};
use host_set::HostSet;
use picker::SourcePolicy;
use source_balancer::{SourceBalancer, SourceSetup};

/// Per-host input to a balancer, derived by the caller from the config snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    /// `load_balancing_weight`, at least 1 (Envoy rejects 0; a 0 here is treated as 1).
    pub weight: u32,
    /// 0 is the highest priority.
    pub priority: u32,
    /// Index of the host's locality within its priority (for locality-weighted LB); 0 if unused.
    pub locality: usize,
    pub health: HostHealth,
    /// The host's address as "ip:port" (or its hostname), hashed by RING_HASH and MAGLEV.
    pub hash_key: String,
}

impl HostInfo {
    /// The weight the balancer uses: `weight`, with 0 read as 1.
    pub fn effective_weight(&self) -> u32 {
        self.weight.max(1)
    }
}

/// A host's health as the balancer sees it. Envoy maps UNKNOWN and HEALTHY to `Healthy`;
/// UNHEALTHY and TIMEOUT to `Unhealthy`; DRAINING to `Draining`; DEGRADED to `Degraded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostHealth {
    Healthy,
    Degraded,
    Unhealthy,
    Draining,
}

/// Per-request input to a pick.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PickContext {
    /// The request hash for RING_HASH / MAGLEV (from the route's hash policy); `None` picks at
    /// random, as Envoy does.
    pub hash: Option<u64>,
}

/// xxHash64 with seed 0, the hash Envoy's hash policies and hash tables use.
pub fn hash_key(bytes: &[u8]) -> u64 {
    xxh64(bytes, 0)
}

/// One worker's load balancer for one cluster.
#[derive(Debug)]
pub struct LoadBalancer {
    load: PriorityLoad,
    rng: SmallRng,
    strategy: Strategy,
}

#[derive(Debug)]
enum Strategy {
    Sources(SourceBalancer),
    Hashing(HashingBalancer),
}

impl LoadBalancer {
    /// A balancer over `hosts` seeded from the OS, so workers start at different hosts.
    /// Invalid config values (see `LbConfig::validate`) are replaced by Envoy's defaults.
    pub fn new(config: &LbConfig, hosts: &[HostInfo]) -> Self {
        Self::with_seed(config, hosts, SmallRng::from_os_rng().random())
    }

    /// A deterministic balancer. The seed also sets Envoy's start offsets: round robin starts at
    /// host `seed % n` and weighted schedules are advanced `seed % n` picks; seed 0 starts at the
    /// first host.
    pub fn with_seed(config: &LbConfig, hosts: &[HostInfo], seed: u64) -> Self {
        let config = config.sanitized();
        let sets = HostSet::group(hosts);
        let counts: Vec<PriorityCounts> = sets.iter().map(HostSet::counts).collect();
        let threshold = config.panic_threshold.round() as u32; // in 0..=100 after sanitize
        let load = PriorityLoad::compute(&counts, config.overprovisioning_factor, threshold);
        let locality_weights = config.locality_weights.as_deref();
        let strategy = match split_policy(config.policy) {
            Ok(policy) => Strategy::Sources(SourceBalancer::new(
                &SourceSetup {
                    policy,
                    hosts,
                    locality_weights,
                    overprovisioning_factor: config.overprovisioning_factor,
                    seed,
                },
                &sets,
            )),
            Err(policy) => Strategy::Hashing(HashingBalancer::new(
                policy,
                &sets,
                hosts,
                &load,
                locality_weights,
            )),
        };
        Self {
            load,
            rng: SmallRng::seed_from_u64(seed),
            strategy,
        }
    }

    /// The priority load and panic state this balancer computed.
    pub fn priority_load(&self) -> &PriorityLoad {
        &self.load
    }

    /// Returns an index into `hosts`, or `None` when no host can be chosen (empty cluster, or
    /// nothing available in the chosen priority). `active_requests(i)` is host `i`'s current
    /// active requests on this worker (LEAST_REQUEST reads it).
    pub fn pick(
        &mut self,
        ctx: &PickContext,
        active_requests: &dyn Fn(usize) -> u32,
    ) -> Option<usize> {
        self.pick_with_retry(ctx, active_requests, &|_| false, 0)
    }

    /// Like `pick`, but when `reject(host)` is true pick again, up to `max_attempts` more times
    /// (Envoy's `host_selection_retry_max_attempts`); returns the last pick if all are rejected.
    /// Hash policies keep the request's priority and walk their table instead (ring: next
    /// points; Maglev: perturbed hash), as Envoy does.
    pub fn pick_with_retry(
        &mut self,
        ctx: &PickContext,
        active_requests: &dyn Fn(usize) -> u32,
        reject: &dyn Fn(usize) -> bool,
        max_attempts: u32,
    ) -> Option<usize> {
        match &mut self.strategy {
            Strategy::Sources(sources) => retry(max_attempts, reject, |_| {
                let (priority, availability) = self.load.choose(self.rng.random())?;
                let panic = self.load.in_panic(priority);
                sources.pick(
                    priority,
                    availability,
                    panic,
                    &mut self.rng,
                    active_requests,
                )
            }),
            Strategy::Hashing(tables) => {
                let hash = ctx.hash.unwrap_or_else(|| self.rng.random());
                let (priority, _) = self.load.choose(hash)?;
                retry(max_attempts, reject, |attempt| {
                    tables.choose(priority, hash, attempt)
                })
            }
        }
    }
}

/// Runs `pick(attempt)` until it returns nothing or a host `reject` accepts, at most
/// `max_attempts + 1` times; returns the last host picked.
fn retry(
    max_attempts: u32,
    reject: &dyn Fn(usize) -> bool,
    mut pick: impl FnMut(u32) -> Option<usize>,
) -> Option<usize> {
    let mut last = None;
    for attempt in 0..=max_attempts {
        let host = pick(attempt)?;
        if !reject(host) {
            return Some(host);
        }
        last = Some(host);
    }
    last
}

/// The non-hashing policy, or (as `Err`) the hashing one.
fn split_policy(policy: LbPolicy) -> Result<SourcePolicy, HashPolicy> {
    match policy {
        LbPolicy::RoundRobin => Ok(SourcePolicy::RoundRobin),
        LbPolicy::LeastRequest {
            choice_count,
            active_request_bias,
        } => Ok(SourcePolicy::LeastRequest {
            choice_count,
            active_request_bias,
        }),
        LbPolicy::Random => Ok(SourcePolicy::Random),
        LbPolicy::RingHash {
            min_ring_size,
            max_ring_size,
        } => Err(HashPolicy::Ring {
            min_ring_size,
            max_ring_size,
        }),
        LbPolicy::Maglev { table_size } => Err(HashPolicy::Maglev { table_size }),
    }
}
