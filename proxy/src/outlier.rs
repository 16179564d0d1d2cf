//! Outlier detection: Envoy's passive health checking. Hosts that fail (consecutive 5xx,
//! consecutive gateway errors, consecutive local-origin failures, a success rate far below the
//! cluster's, a failure percentage above a threshold) are ejected from load balancing for a
//! while, then let back in.
//!
//! # Where the state lives
//!
//! - [`HostMonitor`], one per host, hangs off [`crate::snapshot::Host`] and is carried across
//!   snapshots by address exactly like `HostStats`, so a host that stays keeps its counters,
//!   ejection and back-off through EDS/DNS/CDS updates.
//! - [`Detector`], one per cluster with `outlier_detection`, hangs off the cluster entry and is
//!   carried while the cluster keeps outlier detection (and its stat name). It holds the number
//!   of ejected hosts (for `max_ejection_percent`), the stats, the clock and a generation counter.
//!   Host monitors are carried only together with their detector, so the ejected count always
//!   matches the monitors that point at it.
//!
//! Everything is atomics: workers report outcomes and eject inline (consecutive failures), the
//! manager's sweep task ([`sweep`]) runs every `interval` for success rate, failure percentage,
//! un-ejection and back-off decay. Nothing takes a lock.
//!
//! # How the balancer learns about ejections
//!
//! Every ejection and un-ejection bumps the detector's generation. A worker's balancer remembers
//! the generation it was built at; a pick compares it with one atomic load and, when it moved,
//! rebuilds the balancer with ejected hosts marked unhealthy (keeping its active-request counts).
//! That gives Envoy's semantics for free: ejected hosts leave the healthy set, the priority load
//! and panic threshold are recomputed (in panic, ejected hosts are used again, as in Envoy), and
//! re-admission puts the host back. Picks cost one extra relaxed load when nothing changed.
//!
//! # Ejection, as Envoy does it
//!
//! A detected outlier is ejected only if `100 * (ejected + 1) / hosts <= max_ejection_percent`
//! (or none is ejected yet and `always_eject_one_host` is set; otherwise `ejections_overflow`),
//! and then only if the enforcement draw for its kind succeeds. Ejection time is
//! `min(base_ejection_time * backoff, max_ejection_time) + jitter`, where `backoff` grows by one
//! per ejection (while `base * backoff < max + base`) and shrinks by one for every sweep that
//! finds the host admitted for at least an interval. Un-ejection happens on sweeps, so an
//! ejection lasts until the first sweep after it expires.
//!
//! Consecutive failures eject on the worker that saw the threshold-th failure, before that
//! failure's response goes downstream (Envoy posts to its main thread and may let a few more
//! requests through in between).

mod sweep;
#[cfg(test)]
mod tests;

pub use sweep::start_sweeps;

use crate::config::cluster::OutlierDetection;
use crate::stats::{Counter, Gauge, Store};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// What one upstream attempt came to, as the detector hears it (Envoy's `Outlier::Result`
/// together with the HTTP code the router passes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response with this status (the connection was up, so also a local-origin success).
    Response(u16),
    /// The connection could not be made (refused, unreachable, or timed out in the HTTP pool).
    ConnectFailed,
    /// tcp_proxy: the connection attempt timed out.
    ConnectTimeout,
    /// tcp_proxy: connected (`LocalOriginConnectSuccessFinal`).
    Connected,
    /// HTTP: connected, then the stream was reset before a response.
    Reset,
    /// HTTP: connected, then no response within the (per-try or route) timeout.
    Timeout,
}

impl Outcome {
    /// How Envoy's router reports a failed attempt: a connection that could not be made is a
    /// connect failure; any reset after that is reported as `LocalOriginConnectFailed` too (after
    /// the pool-ready success). Circuit-breaker overflow never reached the host: nothing.
    pub fn of_failure(failure: &crate::http::pool::Failure) -> Option<Outcome> {
        use crate::http::pool::Failure;
        match failure {
            Failure::Overflow => None,
            // Tern's own limit (no TLS origination yet), not the host's fault.
            Failure::Connect(crate::upstream::ConnectError::TlsNotSupported) => None,
            Failure::Connect(_) => Some(Outcome::ConnectFailed),
            Failure::RefusedStream | Failure::Reset(_) => Some(Outcome::Reset),
        }
    }
}

/// Why a host was found to be an outlier; each has Envoy's stats and enforcement percentage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Consecutive5xx,
    ConsecutiveGatewayFailure,
    ConsecutiveLocalOriginFailure,
    SuccessRate,
    LocalOriginSuccessRate,
    FailurePercentage,
    LocalOriginFailurePercentage,
}

impl Kind {
    fn enforcing(self, config: &OutlierDetection) -> u32 {
        match self {
            Kind::Consecutive5xx => config.enforcing_consecutive_5xx,
            Kind::ConsecutiveGatewayFailure => config.enforcing_consecutive_gateway_failure,
            Kind::ConsecutiveLocalOriginFailure => {
                config.enforcing_consecutive_local_origin_failure
            }
            Kind::SuccessRate => config.enforcing_success_rate,
            Kind::LocalOriginSuccessRate => config.enforcing_local_origin_success_rate,
            Kind::FailurePercentage => config.enforcing_failure_percentage,
            Kind::LocalOriginFailurePercentage => config.enforcing_failure_percentage_local_origin,
        }
    }

    /// The suffix of its `ejections_detected_*` / `ejections_enforced_*` stats.
    fn stat_suffix(self) -> &'static str {
        match self {
            Kind::Consecutive5xx => "consecutive_5xx",
            Kind::ConsecutiveGatewayFailure => "consecutive_gateway_failure",
            Kind::ConsecutiveLocalOriginFailure => "consecutive_local_origin_failure",
            Kind::SuccessRate => "success_rate",
            Kind::LocalOriginSuccessRate => "local_origin_success_rate",
            Kind::FailurePercentage => "failure_percentage",
            Kind::LocalOriginFailurePercentage => "local_origin_failure_percentage",
        }
    }

    const ALL: [Kind; 7] = [
        Kind::Consecutive5xx,
        Kind::ConsecutiveGatewayFailure,
        Kind::ConsecutiveLocalOriginFailure,
        Kind::SuccessRate,
        Kind::LocalOriginSuccessRate,
        Kind::FailurePercentage,
        Kind::LocalOriginFailurePercentage,
    ];
}

/// Envoy's `cluster.<name>.outlier_detection.*` stats.
#[derive(Debug, Clone)]
pub struct OutlierStats {
    pub ejections_active: Gauge,
    pub ejections_enforced_total: Counter,
    pub ejections_overflow: Counter,
    /// Deprecated in Envoy but still counted there: consecutive 5xx and success-rate ejections
    /// that passed the `max_ejection_percent` check, and the two detections on their own.
    pub ejections_total: Counter,
    pub ejections_consecutive_5xx: Counter,
    pub ejections_success_rate: Counter,
    /// Indexed like [`Kind::ALL`].
    detected: Vec<Counter>,
    enforced: Vec<Counter>,
}

impl OutlierStats {
    pub fn new(store: &Store, stat_name: &str) -> Self {
        let name = |stat: &str| format!("cluster.{stat_name}.outlier_detection.{stat}");
        let family = |prefix: &str| {
            Kind::ALL
                .iter()
                .map(|k| store.counter(&name(&format!("{prefix}_{}", k.stat_suffix()))))
                .collect()
        };
        OutlierStats {
            ejections_active: store.gauge(&name("ejections_active")),
            ejections_enforced_total: store.counter(&name("ejections_enforced_total")),
            ejections_overflow: store.counter(&name("ejections_overflow")),
            ejections_total: store.counter(&name("ejections_total")),
            ejections_consecutive_5xx: store.counter(&name("ejections_consecutive_5xx")),
            ejections_success_rate: store.counter(&name("ejections_success_rate")),
            detected: family("ejections_detected"),
            enforced: family("ejections_enforced"),
        }
    }

    pub fn detected(&self, kind: Kind) -> &Counter {
        &self.detected[kind as usize]
    }

    /// Counts a detection, with the deprecated per-kind counters Envoy still keeps.
    fn detect(&self, kind: Kind) {
        self.detected(kind).inc();
        match kind {
            Kind::Consecutive5xx => self.ejections_consecutive_5xx.inc(),
            Kind::SuccessRate | Kind::LocalOriginSuccessRate => self.ejections_success_rate.inc(),
            _ => {}
        }
    }

    pub fn enforced(&self, kind: Kind) -> &Counter {
        &self.enforced[kind as usize]
    }
}

/// Monotonic time since an arbitrary fixed origin; injected so tests never sleep.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> Duration;
}

/// The real clock.
#[derive(Debug)]
pub struct MonotonicClock(std::time::Instant);

impl Default for MonotonicClock {
    fn default() -> Self {
        MonotonicClock(std::time::Instant::now())
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// One cluster's outlier detector (see the module docs for what lives where).
#[derive(Debug)]
pub struct Detector {
    clock: Arc<dyn Clock>,
    /// Hosts currently ejected (reserved before a host is claimed, so the cap holds across workers).
    ejected: AtomicU32,
    generation: AtomicU64,
    /// splitmix64 state for enforcement draws and jitter.
    random: AtomicU64,
    /// A sweep task runs for this detector.
    sweeping: AtomicBool,
    pub stats: OutlierStats,
}

impl Detector {
    pub fn new(stats: OutlierStats) -> Self {
        use rand::{RngCore, SeedableRng};
        let seed = rand::rngs::SmallRng::from_os_rng().next_u64();
        Self::with_clock(stats, Arc::new(MonotonicClock::default()), seed)
    }

    /// A detector reading `clock`, with draws seeded by `seed` (tests).
    pub fn with_clock(stats: OutlierStats, clock: Arc<dyn Clock>, seed: u64) -> Self {
        stats.ejections_active.set(0);
        Detector {
            clock,
            ejected: AtomicU32::new(0),
            generation: AtomicU64::new(0),
            random: AtomicU64::new(seed),
            sweeping: AtomicBool::new(false),
            stats,
        }
    }

    /// Moves on every ejection and un-ejection (balancers rebuild when it does).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Hosts ejected right now.
    pub fn ejected(&self) -> u32 {
        self.ejected.load(Ordering::SeqCst)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock.now().as_millis()).unwrap_or(u64::MAX) & TIME_MASK
    }

    /// A uniform draw in `0..bound` (`bound` > 0).
    fn draw(&self, bound: u64) -> u64 {
        let mut z = self
            .random
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound.max(1)
    }

    /// Envoy's `featureEnabled(…, percent)`.
    fn enforced(&self, percent: u32) -> bool {
        percent >= 100 || (percent > 0 && self.draw(100) < u64::from(percent))
    }

    /// Feeds one attempt's outcome for `host` (one of `hosts` hosts in its cluster).
    pub fn report(
        &self,
        config: &OutlierDetection,
        hosts: usize,
        host: &HostMonitor,
        outcome: Outcome,
    ) {
        if config.split_external_local_origin_errors {
            match outcome {
                Outcome::Response(code) => {
                    self.local_origin_success(host);
                    self.http_code(config, hosts, host, code);
                }
                Outcome::Connected => self.local_origin_success(host),
                Outcome::ConnectFailed | Outcome::ConnectTimeout => {
                    self.local_origin_failure(config, hosts, host);
                }
                // The router reported the connection ready first (Envoy's onPoolReady).
                Outcome::Reset | Outcome::Timeout => {
                    self.local_origin_success(host);
                    self.local_origin_failure(config, hosts, host);
                }
            }
        } else {
            // Envoy's resultToHttpCode: local-origin results count as the codes they map to.
            let code = match outcome {
                Outcome::Response(code) => code,
                Outcome::Connected => 200,
                Outcome::ConnectFailed | Outcome::Reset => 503,
                Outcome::ConnectTimeout | Outcome::Timeout => 504,
            };
            self.http_code(config, hosts, host, code);
        }
    }

    fn http_code(&self, config: &OutlierDetection, hosts: usize, host: &HostMonitor, code: u16) {
        let failed = (500..600).contains(&code);
        host.external.record(!failed);
        if !failed {
            host.consecutive_5xx.store(0, Ordering::Relaxed);
            host.consecutive_gateway_failure.store(0, Ordering::Relaxed);
            return;
        }
        if matches!(code, 502..=504) {
            let n = host
                .consecutive_gateway_failure
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            if n == config.consecutive_gateway_failure {
                self.on_consecutive(config, hosts, host, Kind::ConsecutiveGatewayFailure);
            }
        } else {
            host.consecutive_gateway_failure.store(0, Ordering::Relaxed);
        }
        let n = host.consecutive_5xx.fetch_add(1, Ordering::Relaxed) + 1;
        if n == config.consecutive_5xx {
            self.on_consecutive(config, hosts, host, Kind::Consecutive5xx);
        }
    }

    fn local_origin_success(&self, host: &HostMonitor) {
        host.local.record(true);
        host.consecutive_local_origin_failure
            .store(0, Ordering::Relaxed);
    }

    fn local_origin_failure(&self, config: &OutlierDetection, hosts: usize, host: &HostMonitor) {
        host.local.record(false);
        let n = host
            .consecutive_local_origin_failure
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if n == config.consecutive_local_origin_failure {
            self.on_consecutive(config, hosts, host, Kind::ConsecutiveLocalOriginFailure);
        }
    }

    /// A consecutive-failure threshold was reached: an already ejected host is left alone (its
    /// counter keeps running until un-ejection resets it); otherwise count, try to eject, and
    /// restart that counter whatever the outcome.
    fn on_consecutive(
        &self,
        config: &OutlierDetection,
        hosts: usize,
        host: &HostMonitor,
        kind: Kind,
    ) {
        if host.is_ejected() {
            return;
        }
        self.stats.detect(kind);
        self.eject(config, hosts, host, kind);
        let counter = match kind {
            Kind::ConsecutiveGatewayFailure => &host.consecutive_gateway_failure,
            Kind::ConsecutiveLocalOriginFailure => &host.consecutive_local_origin_failure,
            _ => &host.consecutive_5xx,
        };
        counter.store(0, Ordering::Relaxed);
    }

    /// Whether one more ejection keeps within `max_ejection_percent`, given `ejected` now.
    fn may_eject(config: &OutlierDetection, hosts: usize, ejected: u32) -> bool {
        let within = 100 * (u64::from(ejected) + 1)
            <= u64::from(config.max_ejection_percent.min(100)) * hosts as u64;
        within || (config.always_eject_one_host && ejected == 0)
    }

    /// Envoy's `ejectHost`: the percentage cap, the enforcement draw, then the ejection.
    fn eject(&self, config: &OutlierDetection, hosts: usize, host: &HostMonitor, kind: Kind) {
        if hosts == 0 || !Self::may_eject(config, hosts, self.ejected()) {
            self.stats.ejections_overflow.inc();
            return;
        }
        if matches!(kind, Kind::Consecutive5xx | Kind::SuccessRate) {
            self.stats.ejections_total.inc();
        }
        if !self.enforced(kind.enforcing(config)) {
            return;
        }
        // Reserve a slot under the cap first, so concurrent ejections cannot pass it together.
        let reserved = self
            .ejected
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Self::may_eject(config, hosts, n).then_some(n + 1)
            })
            .is_ok();
        if !reserved {
            self.stats.ejections_overflow.inc();
            return;
        }
        self.stats.ejections_active.inc();
        let now = self.now_ms();
        if !host.claim(now, config) {
            self.release();
            return;
        }
        let max_jitter = config.max_ejection_time_jitter.as_millis() as u64;
        let jitter = if max_jitter == 0 {
            0
        } else {
            self.draw(max_jitter.saturating_add(1))
        };
        host.jitter_ms.store(jitter, Ordering::SeqCst);
        // A host removed from the cluster meanwhile (see `retire`) must not stay counted.
        if host.retired.load(Ordering::SeqCst) {
            if host.unclaim() {
                self.release();
            }
            return;
        }
        self.stats.ejections_enforced_total.inc();
        self.stats.enforced(kind).inc();
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn release(&self) {
        let _ = self
            .ejected
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        self.stats.ejections_active.dec();
    }

    /// Lets `host` back in (sweep), resetting its consecutive counters as Envoy does.
    fn uneject(&self, host: &HostMonitor, now: u64) {
        if host.unclaim() {
            host.reset_consecutive();
            host.last_unejection.store(now + 1, Ordering::SeqCst);
            self.release();
            self.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// `host` left the cluster: it can no longer be (or stay) ejected against this detector.
    pub fn retire(&self, host: &HostMonitor) {
        host.retired.store(true, Ordering::SeqCst);
        if host.unclaim() {
            self.release();
        }
    }
}

/// Bits of [`HostMonitor::ejection`]: ejected flag, back-off multiplier, ejection time (ms).
const EJECTED: u64 = 1 << 63;
const BACKOFF_SHIFT: u32 = 48;
const BACKOFF_MAX: u64 = (1 << 15) - 1;
const TIME_MASK: u64 = (1 << BACKOFF_SHIFT) - 1;

/// One host's outlier state, shared by every worker and the sweep.
#[derive(Debug)]
pub struct HostMonitor {
    consecutive_5xx: AtomicU32,
    consecutive_gateway_failure: AtomicU32,
    consecutive_local_origin_failure: AtomicU32,
    /// This interval's requests, for success rate and failure percentage.
    external: RateWindow,
    local: RateWindow,
    /// `EJECTED | backoff << 48 | ejection time in ms`: one word, so a sweep never sees an
    /// ejection without its time and multiplier.
    ejection: AtomicU64,
    jitter_ms: AtomicU64,
    /// Un-ejection time in ms plus one; 0 when never un-ejected.
    last_unejection: AtomicU64,
    /// Removed from its cluster (see [`Detector::retire`]).
    retired: AtomicBool,
    /// The last success rates the sweep computed (`f64` bits; -1 when none), for `/clusters`.
    success_rate: AtomicU64,
    local_origin_success_rate: AtomicU64,
}

impl Default for HostMonitor {
    fn default() -> Self {
        Self {
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway_failure: AtomicU32::new(0),
            consecutive_local_origin_failure: AtomicU32::new(0),
            external: RateWindow::default(),
            local: RateWindow::default(),
            ejection: AtomicU64::new(0),
            jitter_ms: AtomicU64::new(0),
            last_unejection: AtomicU64::new(0),
            retired: AtomicBool::new(false),
            success_rate: AtomicU64::new(NO_RATE),
            local_origin_success_rate: AtomicU64::new(NO_RATE),
        }
    }
}

const NO_RATE: u64 = (-1.0_f64).to_bits();

impl HostMonitor {
    /// Out of load balancing right now.
    pub fn is_ejected(&self) -> bool {
        self.ejection.load(Ordering::Acquire) & EJECTED != 0
    }

    /// The back-off multiplier (Envoy's `ejectTimeBackoff`).
    pub fn backoff(&self) -> u64 {
        (self.ejection.load(Ordering::SeqCst) & !EJECTED) >> BACKOFF_SHIFT
    }

    /// The external-origin success rate of the last interval, or -1.
    pub fn success_rate(&self) -> f64 {
        f64::from_bits(self.success_rate.load(Ordering::Relaxed))
    }

    /// The local-origin success rate of the last interval, or -1.
    pub fn local_origin_success_rate(&self) -> f64 {
        f64::from_bits(self.local_origin_success_rate.load(Ordering::Relaxed))
    }

    /// Marks the host ejected at `now` and grows its back-off; false if it already was.
    fn claim(&self, now: u64, config: &OutlierDetection) -> bool {
        let base = config.base_ejection_time.as_millis() as u64;
        let max = config.max_ejection_time.as_millis() as u64;
        self.ejection
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |word| {
                if word & EJECTED != 0 {
                    return None;
                }
                let mut backoff = word >> BACKOFF_SHIFT;
                if backoff.saturating_mul(base) < max.saturating_add(base) {
                    backoff = (backoff + 1).min(BACKOFF_MAX);
                }
                Some(EJECTED | backoff << BACKOFF_SHIFT | (now & TIME_MASK))
            })
            .is_ok()
    }

    /// Clears the ejected flag (keeping the back-off); false if it was not set.
    fn unclaim(&self) -> bool {
        self.ejection
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |word| {
                (word & EJECTED != 0).then_some(word & !EJECTED)
            })
            .is_ok()
    }

    fn reset_consecutive(&self) {
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway_failure.store(0, Ordering::Relaxed);
        self.consecutive_local_origin_failure
            .store(0, Ordering::Relaxed);
    }
}

/// Requests and successes of the current interval in one word (successes in the high half), so
/// the sweep takes both with one swap. 2^32 requests per host per interval is out of reach.
#[derive(Debug, Default)]
struct RateWindow(AtomicU64);

impl RateWindow {
    fn record(&self, success: bool) {
        let add = if success { 1 | 1 << 32 } else { 1 };
        self.0.fetch_add(add, Ordering::Relaxed);
    }

    /// `(successes, total)` since the last take, and start a new interval.
    fn take(&self) -> (u64, u64) {
        let word = self.0.swap(0, Ordering::Relaxed);
        (word >> 32, word & 0xFFFF_FFFF)
    }
}

/// Ejection duration for a host with multiplier `backoff` (without jitter).
fn ejection_time(config: &OutlierDetection, backoff: u64) -> u64 {
    let base = config.base_ejection_time.as_millis() as u64;
    let max = config.max_ejection_time.as_millis() as u64;
    base.saturating_mul(backoff).min(max)
}
