//! The interval sweep (Envoy's `onIntervalTimer`): un-eject hosts whose time is up, close the
//! interval's success-rate windows, eject by success rate and failure percentage, and let the
//! back-off of hosts that stayed admitted decay.
//!
//! One task per detector on the manager's runtime, never on a worker. It reads the current
//! snapshot each tick and ends on its own once its cluster (or the cluster's outlier detection)
//! is gone, so the manager only has to start it.

use super::{Detector, EJECTED, HostMonitor, Kind, NO_RATE, TIME_MASK, ejection_time};
use crate::config::cluster::OutlierDetection;
use crate::snapshot::{ClusterEntry, SnapshotCell};
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Which success-rate window a pass reads.
#[derive(Clone, Copy)]
enum Origin {
    External,
    Local,
}

impl Detector {
    /// One interval over `hosts` (every host of the cluster, in any order).
    pub fn sweep(&self, config: &OutlierDetection, hosts: &[&HostMonitor]) {
        let now = self.now_ms();
        let mut external = Vec::with_capacity(hosts.len());
        let mut local = Vec::with_capacity(hosts.len());
        for host in hosts {
            self.check_uneject(config, host, now);
            external.push(host.external.take());
            local.push(host.local.take());
            host.success_rate.store(NO_RATE, Ordering::Relaxed);
            host.local_origin_success_rate
                .store(NO_RATE, Ordering::Relaxed);
        }
        self.rate_ejections(config, hosts, &external, Origin::External);
        self.rate_ejections(config, hosts, &local, Origin::Local);
        let interval = config.interval.as_millis() as u64;
        for host in hosts {
            let last = host.last_unejection.load(Ordering::SeqCst);
            if last == 0 || now.saturating_sub(last - 1) < interval {
                continue;
            }
            let _ = host
                .ejection
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |word| {
                    (word & EJECTED == 0 && host_backoff(word) > 0)
                        .then(|| word - (1 << super::BACKOFF_SHIFT))
                });
        }
    }

    /// Un-ejects `host` if `min(base * backoff, max) + jitter` has passed since its ejection.
    fn check_uneject(&self, config: &OutlierDetection, host: &HostMonitor, now: u64) {
        let word = host.ejection.load(Ordering::SeqCst);
        if word & EJECTED == 0 {
            return;
        }
        let since = now.saturating_sub(word & TIME_MASK);
        let jitter = host.jitter_ms.load(Ordering::SeqCst);
        if ejection_time(config, host_backoff(word)).saturating_add(jitter) <= since {
            self.uneject(host, now);
        }
    }

    /// Success-rate and failure-percentage ejections from one window per host.
    fn rate_ejections(
        &self,
        config: &OutlierDetection,
        hosts: &[&HostMonitor],
        windows: &[(u64, u64)],
        origin: Origin,
    ) {
        let count = hosts.len() as u64;
        if count < u64::from(config.success_rate_minimum_hosts)
            && count < u64::from(config.failure_percentage_minimum_hosts)
        {
            return;
        }
        let (rate_kind, percentage_kind) = match origin {
            Origin::External => (Kind::SuccessRate, Kind::FailurePercentage),
            Origin::Local => (
                Kind::LocalOriginSuccessRate,
                Kind::LocalOriginFailurePercentage,
            ),
        };
        let rate_volume = u64::from(config.success_rate_request_volume);
        let percentage_volume = u64::from(config.failure_percentage_request_volume);
        let mut for_rate = Vec::new();
        let mut for_percentage = Vec::new();
        for (host, &(successes, total)) in hosts.iter().zip(windows) {
            if host.is_ejected() || total == 0 {
                continue;
            }
            let rate = successes as f64 * 100.0 / total as f64;
            if total >= rate_volume.min(percentage_volume) {
                let slot = match origin {
                    Origin::External => &host.success_rate,
                    Origin::Local => &host.local_origin_success_rate,
                };
                slot.store(rate.to_bits(), Ordering::Relaxed);
            }
            if total >= rate_volume {
                for_rate.push((*host, rate));
            }
            if total >= percentage_volume {
                for_percentage.push((*host, rate));
            }
        }
        if !for_rate.is_empty() && for_rate.len() >= config.success_rate_minimum_hosts as usize {
            let factor = f64::from(config.success_rate_stdev_factor) / 1000.0;
            let threshold = success_rate_threshold(&for_rate, factor);
            for (host, rate) in &for_rate {
                if *rate < threshold {
                    self.stats.detect(rate_kind);
                    self.eject(config, hosts.len(), host, rate_kind);
                }
            }
        }
        if !for_percentage.is_empty()
            && for_percentage.len() >= config.failure_percentage_minimum_hosts as usize
        {
            let threshold = f64::from(config.failure_percentage_threshold);
            for (host, rate) in &for_percentage {
                if 100.0 - rate >= threshold {
                    self.stats.detect(percentage_kind);
                    self.eject(config, hosts.len(), host, percentage_kind);
                }
            }
        }
    }
}

/// Envoy's ejection threshold: `mean - factor * stdev` over the hosts' success rates
/// (population standard deviation).
pub(super) fn success_rate_threshold(rates: &[(&HostMonitor, f64)], factor: f64) -> f64 {
    let n = rates.len() as f64;
    let mean = rates.iter().map(|(_, r)| r).sum::<f64>() / n;
    let variance = rates.iter().map(|(_, r)| (r - mean).powi(2)).sum::<f64>() / n;
    mean - factor * variance.sqrt()
}

fn host_backoff(word: u64) -> u64 {
    (word & !EJECTED) >> super::BACKOFF_SHIFT
}

/// Starts the sweep task of every detector among `entries` that has none yet. Call on the
/// manager's runtime after publishing the snapshot that holds them.
pub fn start_sweeps<'a>(
    cell: &Arc<SnapshotCell>,
    entries: impl IntoIterator<Item = &'a Arc<ClusterEntry>>,
) {
    for entry in entries {
        let Some(detector) = &entry.outlier else {
            continue;
        };
        if detector.sweeping.swap(true, Ordering::SeqCst) {
            continue;
        }
        tokio::spawn(sweep_forever(
            entry.config.name.clone(),
            detector.clone(),
            cell.clone(),
        ));
    }
}

async fn sweep_forever(cluster: String, detector: Arc<Detector>, cell: Arc<SnapshotCell>) {
    loop {
        let Some(interval) = with_current(&cell, &cluster, &detector, |_, config| config.interval)
        else {
            return;
        };
        tokio::time::sleep(interval).await;
        let swept = with_current(&cell, &cluster, &detector, |entry, config| {
            let monitors: Vec<&HostMonitor> = entry.hosts.iter().map(|h| &*h.outlier).collect();
            detector.sweep(config, &monitors);
        });
        if swept.is_none() {
            return;
        }
    }
}

/// Runs `f` on the current entry of `cluster` if it still uses `detector`.
fn with_current<T>(
    cell: &SnapshotCell,
    cluster: &str,
    detector: &Arc<Detector>,
    f: impl FnOnce(&ClusterEntry, &OutlierDetection) -> T,
) -> Option<T> {
    let snapshot = cell.load();
    let entry = snapshot.clusters.get(cluster)?;
    let config = entry.config.outlier_detection.as_ref()?;
    entry
        .outlier
        .as_ref()
        .filter(|d| Arc::ptr_eq(d, detector))?;
    Some(f(entry, config))
}
