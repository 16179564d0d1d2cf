//! Priority levels: how much of the traffic each priority takes, and which priorities are in
//! panic. This is Envoy's `LoadBalancerBase` arithmetic, in integer percent like Envoy.
//!
//! - A priority's *health* is `min(100, overprovisioning_factor * healthy / hosts)` (factor in
//!   percent, default 140); its *degraded availability* is the same with degraded hosts.
//! - The *normalised total availability* is the sum over priorities, capped at 100. Healthy load
//!   is handed out top-down, each priority taking `health * 100 / normalised_total` of what is
//!   left; then degraded load the same way from the remainder; rounding leftovers go to the first
//!   priority with any healthy (else degraded) availability. Loads always sum to 100.
//! - A priority is in *panic* when `(healthy + degraded) / hosts` is below the panic threshold,
//!   except that no priority panics while the normalised total is 100. If every priority panics
//!   (total panic) the load follows host counts instead of health.
//!
//! Invariant: for at least one priority, `healthy_load` and `degraded_load` sum to exactly 100.

/// Host counts of one priority level.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PriorityCounts {
    pub hosts: u32,
    pub healthy: u32,
    pub degraded: u32,
}

/// Which of a priority's host lists a pick should use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    Healthy,
    Degraded,
}

/// Per-priority load (percent) and panic state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriorityLoad {
    healthy: Vec<u32>,
    degraded: Vec<u32>,
    panic: Vec<bool>,
}

impl PriorityLoad {
    /// Computes the load for `counts[p]` = the hosts of priority `p`.
    ///
    /// `overprovisioning_factor` is in percent (140 = 1.4); `panic_threshold` is in whole percent
    /// and is capped at 100 (0 disables panic).
    pub fn compute(
        counts: &[PriorityCounts],
        overprovisioning_factor: u32,
        panic_threshold: u32,
    ) -> Self {
        let n = counts.len();
        let mut load = Self {
            healthy: vec![0; n],
            degraded: vec![0; n],
            panic: vec![false; n],
        };
        if n == 0 {
            return load;
        }
        let health: Vec<u32> = counts
            .iter()
            .map(|c| availability(c.healthy, c.hosts, overprovisioning_factor))
            .collect();
        let degraded: Vec<u32> = counts
            .iter()
            .map(|c| availability(c.degraded, c.hosts, overprovisioning_factor))
            .collect();
        let total = health.iter().chain(&degraded).sum::<u32>().min(100);
        if total > 0 {
            load.distribute(&health, &degraded, total);
        }
        load.apply_panic(counts, total, panic_threshold.min(100));
        load
    }

    /// Percent of picks that go to each priority's healthy hosts.
    pub fn healthy_load(&self) -> &[u32] {
        &self.healthy
    }

    /// Percent of picks that go to each priority's degraded hosts.
    pub fn degraded_load(&self) -> &[u32] {
        &self.degraded
    }

    /// Whether picks at `priority` use all its hosts regardless of health.
    pub fn in_panic(&self, priority: usize) -> bool {
        self.panic.get(priority).copied().unwrap_or(false)
    }

    /// Chooses a priority from a uniformly distributed `hash`, as Envoy's `choosePriority`: the
    /// value `hash % 100 + 1` is located in the cumulative healthy loads, then degraded loads.
    /// `None` only when there are no priorities.
    pub fn choose(&self, hash: u64) -> Option<(usize, Availability)> {
        let point = u32::try_from(hash % 100).unwrap_or(0) + 1;
        let mut cumulative = 0;
        let healthy = self.healthy.iter().map(|&l| (l, Availability::Healthy));
        let degraded = self.degraded.iter().map(|&l| (l, Availability::Degraded));
        let n = self.healthy.len();
        for (i, (share, availability)) in healthy.chain(degraded).enumerate() {
            cumulative += share;
            if point <= cumulative {
                return Some((i % n, availability));
            }
        }
        (n > 0).then_some((0, Availability::Healthy))
    }

    fn distribute(&mut self, health: &[u32], degraded: &[u32], total: u32) {
        let (first_healthy, left) = distribute_into(&mut self.healthy, health, 100, total);
        let (first_degraded, left) = distribute_into(&mut self.degraded, degraded, left, total);
        if left > 0 {
            match (first_healthy, first_degraded) {
                (Some(p), _) => self.healthy[p] += left,
                (None, Some(p)) => self.degraded[p] += left,
                (None, None) => {} // unreachable while total > 0
            }
        }
    }

    fn apply_panic(&mut self, counts: &[PriorityCounts], total: u32, threshold: u32) {
        if threshold == 0 && total == 0 {
            // Nothing is available and panic is off: nominally send everything to P0, where
            // there is nothing to pick.
            self.healthy[0] = 100;
            return;
        }
        for (panic, c) in self.panic.iter_mut().zip(counts) {
            *panic = total < 100 && below_threshold(c, threshold);
        }
        if self.panic.iter().all(|&p| p) {
            self.load_by_host_count(counts);
        }
    }

    /// Total panic: each priority takes its share of all hosts, healthy or not.
    fn load_by_host_count(&mut self, counts: &[PriorityCounts]) {
        self.degraded.iter_mut().for_each(|l| *l = 0);
        let all: u64 = counts.iter().map(|c| u64::from(c.hosts)).sum();
        if all == 0 {
            self.healthy.iter_mut().for_each(|l| *l = 0);
            self.healthy[0] = 100;
            return;
        }
        let mut left = 100;
        for (load, c) in self.healthy.iter_mut().zip(counts) {
            *load = u32::try_from(100 * u64::from(c.hosts) / all).unwrap_or(100);
            left -= *load;
        }
        if let Some(first) = counts.iter().position(|c| c.hosts > 0) {
            self.healthy[first] += left;
        }
    }
}

/// `min(100, factor * available / hosts)`, 0 for an empty priority.
fn availability(available: u32, hosts: u32, overprovisioning_factor: u32) -> u32 {
    if hosts == 0 {
        return 0;
    }
    let scaled = u64::from(overprovisioning_factor) * u64::from(available) / u64::from(hosts);
    u32::try_from(scaled.min(100)).unwrap_or(100)
}

/// Gives each priority `min(left, share * 100 / total)` in order; returns the first priority with
/// a non-zero share and the load left over.
fn distribute_into(
    load: &mut [u32],
    shares: &[u32],
    mut left: u32,
    total: u32,
) -> (Option<usize>, u32) {
    for (l, &share) in load.iter_mut().zip(shares) {
        *l = left.min(share * 100 / total);
        left -= *l;
    }
    (shares.iter().position(|&s| s > 0), left)
}

/// `(healthy + degraded) / hosts < threshold%`; an empty priority is below any positive threshold.
fn below_threshold(c: &PriorityCounts, threshold: u32) -> bool {
    let available = u64::from(c.healthy) + u64::from(c.degraded);
    100 * available < u64::from(threshold) * u64::from(c.hosts) || (c.hosts == 0 && threshold > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FACTOR: u32 = 140;

    /// A priority of `hosts` hosts of which `healthy` are healthy.
    fn level(healthy: u32, hosts: u32) -> PriorityCounts {
        PriorityCounts {
            hosts,
            healthy,
            degraded: 0,
        }
    }

    fn healthy_load(levels: &[PriorityCounts], threshold: u32) -> Vec<u32> {
        PriorityLoad::compute(levels, FACTOR, threshold)
            .healthy_load()
            .to_vec()
    }

    // Envoy's "priority levels" document tables, with 100 hosts per level so that "72% healthy"
    // is 72 hosts. The tables ignore panic mode, so these run with the threshold at 0; the
    // default threshold is exercised separately below.

    #[test]
    fn doc_table_two_levels_p1_fully_healthy() {
        let p1 = level(100, 100);
        for (p0_healthy, expected) in [
            (100, [100, 0]),
            (72, [100, 0]),
            (71, [99, 1]),
            (50, [70, 30]),
            (25, [35, 65]),
            (0, [0, 100]),
        ] {
            assert_eq!(
                healthy_load(&[level(p0_healthy, 100), p1], 0),
                expected,
                "P0 {p0_healthy}% healthy"
            );
        }
    }

    #[test]
    fn doc_table_two_levels_both_degrading() {
        for (p0, p1, expected) in [
            (100, 100, [100, 0]),
            (72, 72, [100, 0]),
            (71, 71, [99, 1]),
            (50, 50, [70, 30]),
            (25, 100, [35, 65]),
            (25, 25, [50, 50]),
        ] {
            assert_eq!(
                healthy_load(&[level(p0, 100), level(p1, 100)], 0),
                expected,
                "P0 {p0}%, P1 {p1}%"
            );
        }
    }

    #[test]
    fn doc_table_three_levels() {
        for (p0, p1, p2, expected) in [
            (100, 100, 100, [100, 0, 0]),
            (72, 72, 100, [100, 0, 0]),
            (71, 71, 100, [99, 1, 0]),
            (50, 50, 100, [70, 30, 0]),
            (25, 100, 100, [35, 65, 0]),
            (25, 25, 100, [35, 35, 30]),
            // The document rounds this row to 36/36/28. Envoy's code (and ours) floors each
            // share (35/35/28 of the normalised 98) and gives the 2 left over to P0.
            (25, 25, 20, [37, 35, 28]),
        ] {
            let levels = [level(p0, 100), level(p1, 100), level(p2, 100)];
            assert_eq!(
                healthy_load(&levels, 0),
                expected,
                "P0 {p0}%, P1 {p1}%, P2 {p2}%"
            );
        }
    }

    #[test]
    fn healthy_p0_takes_everything_and_nothing_panics() {
        let load = PriorityLoad::compute(&[level(10, 10), level(10, 10)], FACTOR, 50);
        assert_eq!(load.healthy_load(), [100, 0]);
        assert_eq!(load.degraded_load(), [0, 0]);
        assert!(!load.in_panic(0) && !load.in_panic(1));
    }

    #[test]
    fn no_panic_while_lower_priorities_make_up_full_availability() {
        // P0 has 2/10 healthy (20% < 50%) but P1 tops the total up to 100%.
        let load = PriorityLoad::compute(&[level(2, 10), level(10, 10)], FACTOR, 50);
        assert_eq!(load.healthy_load(), [28, 72]);
        assert!(!load.in_panic(0));
    }

    #[test]
    fn lone_priority_below_threshold_panics_and_keeps_all_load() {
        let load = PriorityLoad::compute(&[level(2, 10)], FACTOR, 50);
        assert!(load.in_panic(0));
        assert_eq!(load.healthy_load(), [100]);
    }

    #[test]
    fn total_panic_splits_load_by_host_count() {
        // Both 25% healthy: total availability 70 < 100 and both below 50% -> total panic.
        let load = PriorityLoad::compute(&[level(1, 4), level(3, 12)], FACTOR, 50);
        assert!(load.in_panic(0) && load.in_panic(1));
        assert_eq!(load.healthy_load(), [25, 75]);
    }

    #[test]
    fn all_unhealthy_p0_sends_everything_to_healthy_p1() {
        let load = PriorityLoad::compute(&[level(0, 5), level(3, 3)], FACTOR, 50);
        assert_eq!(load.healthy_load(), [0, 100]);
        assert!(!load.in_panic(1));
    }

    #[test]
    fn nothing_available_without_panic_nominally_loads_p0() {
        let load = PriorityLoad::compute(&[level(0, 5), level(0, 3)], FACTOR, 0);
        assert_eq!(load.healthy_load(), [100, 0]);
        assert!(!load.in_panic(0));
    }

    #[test]
    fn degraded_hosts_take_load_only_after_healthy_availability() {
        // P0: 5 healthy of 10 (health 70); P1: 10 degraded of 10 (degraded availability 100).
        let p1 = PriorityCounts {
            hosts: 10,
            healthy: 0,
            degraded: 10,
        };
        let load = PriorityLoad::compute(&[level(5, 10), p1], FACTOR, 50);
        assert_eq!(load.healthy_load(), [70, 0]);
        assert_eq!(load.degraded_load(), [0, 30]);
        assert_eq!(load.choose(69), Some((0, Availability::Healthy)));
        assert_eq!(load.choose(70), Some((1, Availability::Degraded)));
    }

    #[test]
    fn envoy_source_comment_example_healthy_and_degraded_mix() {
        // "3 host sets with 10% / 20% / 10% health and 20% / 10% / 0% degraded get
        // 16% / 28% / 14% healthy load and 28% / 14% / 0% degraded load".
        let counts = |healthy, degraded| PriorityCounts {
            hosts: 140,
            healthy,
            degraded,
        };
        let levels = [counts(10, 20), counts(20, 10), counts(10, 0)];
        let load = PriorityLoad::compute(&levels, FACTOR, 0);
        assert_eq!(load.healthy_load(), [16, 28, 14]);
        assert_eq!(load.degraded_load(), [28, 14, 0]);
    }

    #[test]
    fn choose_maps_hash_onto_cumulative_load() {
        let load = PriorityLoad::compute(&[level(50, 100), level(100, 100)], FACTOR, 50);
        assert_eq!(load.healthy_load(), [70, 30]);
        assert_eq!(load.choose(0).map(|c| c.0), Some(0));
        assert_eq!(load.choose(69).map(|c| c.0), Some(0));
        assert_eq!(load.choose(70).map(|c| c.0), Some(1));
        assert_eq!(load.choose(199).map(|c| c.0), Some(1));
    }

    #[test]
    fn no_priorities_choose_nothing() {
        let load = PriorityLoad::compute(&[], FACTOR, 50);
        assert_eq!(load.choose(7), None);
    }

    #[test]
    fn empty_cluster_levels_load_p0() {
        let load = PriorityLoad::compute(&[level(0, 0)], FACTOR, 50);
        assert_eq!(load.healthy_load(), [100]);
    }
}
