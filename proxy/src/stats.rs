//! Envoy-named statistics: counters, gauges and text readouts, sharded per worker so the request path never
//! shares a written cache line with another worker, and histograms ([`histogram`]).
//!
//! A stat is created (by name) when its owner is configured, never on the request path, so the
//! registry's lock is only taken by the main thread and the admin handlers. A counter keeps one
//! padded slot per worker (the store is sized for them, [`Store::for_threads`]; the main
//! thread's rare writes share slot 0); [`set_shard`] tells a worker thread which slot is its
//! own, and a read sums the slots. A counter costs a cache line per worker, so a thousand
//! clusters' stats stay small on a one-worker sidecar. Gauges are a single atomic (they are
//! moved per connection, not per byte). Histograms are chunks of shared bin counters;
//! [`Store::flush_histograms`] (the main thread, every `stats_flush_interval`) keeps Envoy's
//! "interval" view: what was recorded between the last two flushes.
//!
//! Each stat also carries Envoy's tag-extracted form (e.g. `cluster.upstream_cx_total` with tag
//! `envoy.cluster_name=backend`), computed once at registration from the bootstrap's
//! `stats_config` ([`tags`]), so `/stats/prometheus` needs no regex pass over names. A stat the
//! `stats_matcher` rejects ([`matcher`]) still works for its owner but is never listed.

pub mod histogram;
pub mod matcher;
pub mod tags;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};

thread_local! {
    static SHARD: Cell<usize> = const { Cell::new(0) };
}

/// Makes the calling thread write counter slot `index` (workers call this once at start). A
/// counter with fewer slots takes `index` modulo its slot count: still correct, only shared.
pub fn set_shard(index: usize) {
    SHARD.with(|s| s.set(index));
}

#[repr(align(64))]
#[derive(Default)]
struct Slot(AtomicU64);

struct CounterCell {
    slots: Box<[Slot]>,
    used: AtomicBool,
}

/// A monotonically increasing count.
#[derive(Clone)]
pub struct Counter(Arc<CounterCell>);

impl Counter {
    fn new(slots: usize) -> Self {
        Counter(Arc::new(CounterCell {
            slots: (0..slots.max(1)).map(|_| Slot::default()).collect(),
            used: AtomicBool::new(false),
        }))
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        if n == 0 {
            return;
        }
        let slots = &self.0.slots;
        let shard = SHARD.with(Cell::get) % slots.len();
        slots[shard].0.fetch_add(n, Ordering::Relaxed);
        mark_used(&self.0.used);
    }

    pub fn value(&self) -> u64 {
        self.0
            .slots
            .iter()
            .map(|s| s.0.load(Ordering::Relaxed))
            .sum()
    }

    fn used(&self) -> bool {
        self.0.used.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Counter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counter({})", self.value())
    }
}

struct GaugeCell {
    value: AtomicI64,
    used: AtomicBool,
}

/// A value that goes up and down (active connections, state).
#[derive(Clone)]
pub struct Gauge(Arc<GaugeCell>);

impl Gauge {
    fn new() -> Self {
        Gauge(Arc::new(GaugeCell {
            value: AtomicI64::new(0),
            used: AtomicBool::new(false),
        }))
    }

    pub fn inc(&self) {
        self.add(1);
    }

    pub fn dec(&self) {
        self.add(-1);
    }

    pub fn add(&self, n: i64) {
        self.0.value.fetch_add(n, Ordering::Relaxed);
        mark_used(&self.0.used);
    }

    pub fn set(&self, n: i64) {
        self.0.value.store(n, Ordering::Relaxed);
        mark_used(&self.0.used);
    }

    pub fn value(&self) -> i64 {
        self.0.value.load(Ordering::Relaxed)
    }

    fn used(&self) -> bool {
        self.0.used.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Gauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Gauge({})", self.value())
    }
}

fn mark_used(flag: &AtomicBool) {
    // Read first: after the first write the line stays shared-clean on every core.
    if !flag.load(Ordering::Relaxed) {
        flag.store(true, Ordering::Relaxed);
    }
}

/// A string value (Envoy's text readout), e.g. the version text of the last accepted config.
#[derive(Clone)]
pub struct TextReadout(Arc<TextCell>);

struct TextCell {
    value: arc_swap::ArcSwap<String>,
    used: AtomicBool,
}

impl TextReadout {
    fn new() -> Self {
        TextReadout(Arc::new(TextCell {
            value: arc_swap::ArcSwap::from_pointee(String::new()),
            used: AtomicBool::new(false),
        }))
    }

    pub fn set(&self, value: &str) {
        self.0.value.store(Arc::new(value.to_string()));
        mark_used(&self.0.used);
    }

    pub fn value(&self) -> String {
        self.0.value.load().to_string()
    }

    fn used(&self) -> bool {
        self.0.used.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for TextReadout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TextReadout({:?})", self.value())
    }
}

pub use histogram::Histogram;

#[derive(Clone)]
enum Metric {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
    Text(TextReadout),
}

pub use matcher::StatsMatcher;
pub use tags::{TagProducer, Tags};

/// The bootstrap's `stats_config`, validated: how names become tags and which stats exist.
#[derive(Debug, Default)]
pub struct StatsConfig {
    pub tags: TagProducer,
    pub matcher: StatsMatcher,
}

impl TryFrom<Option<&xds_client::pb::envoy::config::metrics::v3::StatsConfig>> for StatsConfig {
    type Error = crate::config::ConfigError;

    fn try_from(
        config: Option<&xds_client::pb::envoy::config::metrics::v3::StatsConfig>,
    ) -> Result<Self, Self::Error> {
        let config = config.cloned().unwrap_or_default();
        Ok(StatsConfig {
            tags: TagProducer::new(&config)?,
            matcher: StatsMatcher::try_from(config.stats_matcher.as_ref())?,
        })
    }
}

struct Entry {
    metric: Metric,
    /// `None` when the stats matcher rejects the name: the stat works but is never listed.
    tags: Option<Tags>,
    /// Histograms only: bin counts at the last flush and what the last interval added.
    flushed: Option<Box<Flushed>>,
}

/// Non-empty bins only, `(index, count)` in index order.
struct Flushed {
    at_last_flush: Vec<(usize, u64)>,
    interval: Vec<(usize, u64)>,
}

/// One read of a stat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub name: String,
    pub value: i64,
    pub is_counter: bool,
    pub used: bool,
    pub tags: Tags,
}

impl Sample {
    /// The value as Envoy prints it: gauges are unsigned there too.
    pub fn printed(&self) -> u64 {
        self.value as u64
    }
}

/// One read of a text readout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextSample {
    pub name: String,
    pub value: String,
    pub used: bool,
    pub tags: Tags,
}

/// One read of a histogram: Envoy's cumulative and last-interval statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSample {
    pub name: String,
    pub used: bool,
    pub tags: Tags,
    pub cumulative: histogram::Statistics,
    /// What was recorded between the last two flushes (NaN quantiles before any).
    pub interval: histogram::Statistics,
}

/// Every stat by full name, and the strings their tags share.
#[derive(Default)]
struct Registry {
    entries: BTreeMap<String, Entry>,
    strings: std::collections::HashSet<Arc<str>>,
}

/// The registry of every stat, by full name.
#[derive(Clone)]
pub struct Store {
    #[allow(clippy::disallowed_types)]
    // registry only: stats are created at config time, read by admin
    inner: Arc<std::sync::Mutex<Registry>>,
    /// Slots per counter: the threads that write stats.
    threads: usize,
    config: Arc<StatsConfig>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// A store whose counters have one slot (tests and tools: one writing thread).
    pub fn new() -> Self {
        Self::for_threads(1)
    }

    /// A store for `threads` writing threads (the workers; the main thread shares slot 0), with
    /// Envoy's default tags and no stats matcher.
    pub fn for_threads(threads: usize) -> Self {
        Self::with_config(threads, Arc::default())
    }

    /// A store for `threads` writing threads that names and filters stats per `config`.
    pub fn with_config(threads: usize, config: Arc<StatsConfig>) -> Self {
        Store {
            inner: Arc::default(),
            threads: threads.max(1),
            config,
        }
    }

    /// The counter `name`, created on first use. `tags` describes Envoy's tag extraction.
    pub fn counter(&self, name: &str) -> Counter {
        match self.get_or_insert(name, || Metric::Counter(Counter::new(self.threads))) {
            Metric::Counter(c) => c,
            // A name clash between kinds is a programming error; keep it harmless.
            _ => Counter::new(1),
        }
    }

    pub fn gauge(&self, name: &str) -> Gauge {
        match self.get_or_insert(name, || Metric::Gauge(Gauge::new())) {
            Metric::Gauge(g) => g,
            _ => Gauge::new(),
        }
    }

    /// The text readout `name`, created on first use.
    pub fn text(&self, name: &str) -> TextReadout {
        match self.get_or_insert(name, || Metric::Text(TextReadout::new())) {
            Metric::Text(t) => t,
            _ => TextReadout::new(),
        }
    }

    /// The histogram `name` (milliseconds), created on first use.
    pub fn histogram(&self, name: &str) -> Histogram {
        match self.get_or_insert(name, || Metric::Histogram(Histogram::new())) {
            Metric::Histogram(h) => h,
            _ => Histogram::new(),
        }
    }

    /// Envoy's stats flush for histograms: the interval view becomes what was recorded since the
    /// previous flush.
    pub fn flush_histograms(&self) {
        let mut registry = self.lock();
        for entry in registry.entries.values_mut() {
            let Metric::Histogram(h) = &entry.metric else {
                continue;
            };
            if !h.used() {
                continue;
            }
            let now = h.nonzero_bins();
            let flushed = entry.flushed.get_or_insert_with(|| {
                Box::new(Flushed {
                    at_last_flush: Vec::new(),
                    interval: Vec::new(),
                })
            });
            // Both lists are in index order, and a bin never empties: walk them together.
            let mut before = flushed.at_last_flush.iter().peekable();
            flushed.interval = now
                .iter()
                .filter_map(|&(index, count)| {
                    let mut earlier = 0;
                    while let Some(&&(i, c)) = before.peek() {
                        if i > index {
                            break;
                        }
                        if i == index {
                            earlier = c;
                        }
                        before.next();
                    }
                    let added = count.saturating_sub(earlier);
                    (added > 0).then_some((index, added))
                })
                .collect();
            flushed.at_last_flush = now;
        }
    }

    /// Every histogram, sorted by name.
    pub fn histograms(&self) -> Vec<HistogramSample> {
        self.lock()
            .entries
            .iter()
            .filter_map(|(name, e)| {
                let Metric::Histogram(h) = &e.metric else {
                    return None;
                };
                let tags = e.tags.as_ref()?;
                let interval = e.flushed.as_ref().map_or(&[][..], |f| &f.interval[..]);
                let cumulative = h.nonzero_bins();
                Some(HistogramSample {
                    name: name.clone(),
                    used: h.used(),
                    tags: tags.clone(),
                    cumulative: histogram::Statistics::of_nonzero(&cumulative),
                    interval: histogram::Statistics::of_nonzero(interval),
                })
            })
            .collect()
    }

    fn get_or_insert(&self, name: &str, make: impl FnOnce() -> Metric) -> Metric {
        if let Some(entry) = self.lock().entries.get(name) {
            return entry.metric.clone();
        }
        // Tag extraction runs regexes: not under the lock the admin handlers take.
        let tags = (!self.config.matcher.rejects(name)).then(|| self.config.tags.produce(name));
        let mut registry = self.lock();
        let Registry { entries, strings } = &mut *registry;
        entries
            .entry(name.to_string())
            .or_insert_with(|| Entry {
                metric: make(),
                tags: tags.map(|t| t.interned(strings)),
                flushed: None,
            })
            .metric
            .clone()
    }

    #[allow(clippy::disallowed_types)] // the registry lock (see `inner`)
    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every text readout, sorted by name.
    pub fn text_readouts(&self) -> Vec<TextSample> {
        self.lock()
            .entries
            .iter()
            .filter_map(|(name, e)| {
                let Metric::Text(t) = &e.metric else {
                    return None;
                };
                Some(TextSample {
                    name: name.clone(),
                    value: t.value(),
                    used: t.used(),
                    tags: e.tags.clone()?,
                })
            })
            .collect()
    }

    /// All counters and gauges, sorted by name.
    pub fn samples(&self) -> Vec<Sample> {
        self.lock()
            .entries
            .iter()
            .filter_map(|(name, e)| {
                let tags = e.tags.as_ref()?;
                let (value, is_counter, used) = match &e.metric {
                    Metric::Counter(c) => (c.value() as i64, true, c.used()),
                    Metric::Gauge(g) => (g.value(), false, g.used()),
                    Metric::Histogram(_) | Metric::Text(_) => return None,
                };
                Some(Sample {
                    name: name.clone(),
                    value,
                    is_counter,
                    used,
                    tags: tags.clone(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_sum_over_shards() {
        let store = Store::for_threads(2);
        let c = store.counter("cluster.a.upstream_cx_total");
        let c2 = c.clone();
        std::thread::spawn(move || {
            set_shard(3);
            c2.add(5);
        })
        .join()
        .unwrap();
        c.inc();
        assert_eq!(store.counter("cluster.a.upstream_cx_total").value(), 6);
    }

    #[test]
    fn counters_have_one_slot_per_writing_thread() {
        let store = Store::for_threads(2);
        let c = store.counter("server.x");
        assert_eq!(c.0.slots.len(), 2);
        // A thread numbered beyond the slots shares one, and the sum stays right.
        let c2 = c.clone();
        std::thread::spawn(move || {
            set_shard(5);
            c2.add(2);
        })
        .join()
        .unwrap();
        c.inc();
        assert_eq!(c.value(), 3);
    }

    #[test]
    fn unused_stats_are_marked() {
        let store = Store::new();
        store.counter("server.x");
        store.gauge("server.state").set(0);
        let used: Vec<_> = store
            .samples()
            .into_iter()
            .map(|s| (s.name, s.used))
            .collect();
        assert_eq!(
            used,
            [
                ("server.state".to_string(), true),
                ("server.x".to_string(), false)
            ]
        );
    }

    #[test]
    fn rejected_stats_count_but_are_not_listed() {
        let matcher: xds_client::pb::envoy::config::metrics::v3::StatsConfig =
            xds_client::proto_json::from_value(
                serde_json::json!({"stats_matcher": {"inclusion_list": {"patterns": [
                    {"prefix": "server."}
                ]}}}),
                Default::default(),
            )
            .expect("valid stats_config");
        let config = StatsConfig::try_from(Some(&matcher)).expect("converts");
        let store = Store::with_config(1, Arc::new(config));
        store.counter("cluster.a.upstream_rq_total").add(2);
        store.histogram("cluster.a.upstream_rq_time").record(1);
        store.gauge("server.live").set(1);
        // The same (unlisted) counter is handed out again.
        assert_eq!(store.counter("cluster.a.upstream_rq_total").value(), 2);
        let names: Vec<_> = store.samples().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["server.live"]);
        assert!(store.histograms().is_empty());
    }

    #[test]
    fn tags_come_from_the_configured_producer() {
        let store = Store::new();
        store.counter("cluster.backend.upstream_rq_200");
        let tags = &store.samples()[0].tags;
        assert_eq!(&*tags.extracted_name, "cluster.upstream_rq");
        let pairs: Vec<(&str, &str)> = tags.tags.iter().map(|(k, v)| (&**k, &**v)).collect();
        assert_eq!(
            pairs,
            [
                ("envoy.response_code", "200"),
                ("envoy.cluster_name", "backend")
            ]
        );
        // Every stat of the cluster shares one copy of its name as a tag value.
        store.counter("cluster.backend.upstream_rq_201");
        let samples = store.samples();
        assert!(Arc::ptr_eq(
            &samples[0].tags.tags[1].1,
            &samples[1].tags.tags[1].1
        ));
    }
}
