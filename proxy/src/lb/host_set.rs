//! Hosts grouped the way Envoy's `HostSet` groups them: per priority, by health, and per locality
//! within a priority. Every policy picks from one of these lists.
//!
//! Invariants: lists hold indices into the caller's host slice, in the caller's order; every
//! priority from 0 to the highest one used has a (possibly empty) set; `healthy` and `degraded`
//! are disjoint subsets of `all`; the three per-locality lists have the same length.

use super::priority::{Availability, PriorityCounts};
use super::{HostHealth, HostInfo};

/// The hosts of one priority level.
#[derive(Debug, Default, Clone)]
pub struct HostSet {
    pub all: Vec<usize>,
    pub healthy: Vec<usize>,
    pub degraded: Vec<usize>,
    /// `[locality]` -> hosts, for each of the lists above.
    pub all_per_locality: Vec<Vec<usize>>,
    pub healthy_per_locality: Vec<Vec<usize>>,
    pub degraded_per_locality: Vec<Vec<usize>>,
}

impl HostSet {
    /// Groups `hosts` into one `HostSet` per priority.
    pub fn group(hosts: &[HostInfo]) -> Vec<HostSet> {
        let levels = hosts
            .iter()
            .map(|h| h.priority as usize + 1)
            .max()
            .unwrap_or(0);
        let mut sets = vec![HostSet::default(); levels];
        for (i, host) in hosts.iter().enumerate() {
            sets[host.priority as usize].insert(i, host);
        }
        for set in &mut sets {
            let localities = set.all_per_locality.len();
            set.healthy_per_locality.resize_with(localities, Vec::new);
            set.degraded_per_locality.resize_with(localities, Vec::new);
        }
        sets
    }

    fn insert(&mut self, index: usize, host: &HostInfo) {
        push_at(&mut self.all_per_locality, host.locality, index);
        self.all.push(index);
        match host.health {
            HostHealth::Healthy => {
                push_at(&mut self.healthy_per_locality, host.locality, index);
                self.healthy.push(index);
            }
            HostHealth::Degraded => {
                push_at(&mut self.degraded_per_locality, host.locality, index);
                self.degraded.push(index);
            }
            HostHealth::Unhealthy | HostHealth::Draining => {}
        }
    }

    pub fn counts(&self) -> PriorityCounts {
        let count = |v: &Vec<usize>| u32::try_from(v.len()).unwrap_or(u32::MAX);
        PriorityCounts {
            hosts: count(&self.all),
            healthy: count(&self.healthy),
            degraded: count(&self.degraded),
        }
    }

    /// The healthy or degraded list per locality.
    pub fn available_per_locality(&self, availability: Availability) -> &[Vec<usize>] {
        match availability {
            Availability::Healthy => &self.healthy_per_locality,
            Availability::Degraded => &self.degraded_per_locality,
        }
    }
}

fn push_at(lists: &mut Vec<Vec<usize>>, at: usize, index: usize) {
    if lists.len() <= at {
        lists.resize_with(at + 1, Vec::new);
    }
    lists[at].push(index);
}
