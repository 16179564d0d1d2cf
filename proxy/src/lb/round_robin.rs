//! Round robin over one host list, as Envoy's `RoundRobinLoadBalancer` does it: a plain rotation
//! when all weights are equal, an EDF schedule (deadline += 1 / weight) when they differ.
//!
//! Invariant: both forms start at an offset derived from the balancer's seed (the rotation index
//! starts at `seed`; the schedule is advanced `seed % hosts` picks), so workers built at the same
//! moment do not all send their first request to the same host.

use super::HostInfo;
use super::edf::EdfScheduler;
use super::picker::{WeightedHost, weighted_scheduler, weights_are_equal};

#[derive(Debug)]
pub enum RoundRobin {
    Rotation { hosts: Vec<usize>, next: u64 },
    Weighted(EdfScheduler<WeightedHost>),
}

impl RoundRobin {
    /// Round robin over `list` (indices into `hosts`).
    pub fn new(list: &[usize], hosts: &[HostInfo], seed: u64) -> Self {
        if weights_are_equal(list, hosts) {
            return Self::Rotation {
                hosts: list.to_vec(),
                next: seed,
            };
        }
        Self::Weighted(weighted_scheduler(list, hosts, seed, |h| {
            f64::from(h.weight)
        }))
    }

    pub fn pick(&mut self) -> Option<usize> {
        match self {
            Self::Rotation { hosts, next } => {
                if hosts.is_empty() {
                    return None;
                }
                let len = hosts.len() as u64;
                let host = hosts[usize::try_from(*next % len).unwrap_or(0)];
                *next = next.wrapping_add(1);
                Some(host)
            }
            Self::Weighted(edf) => edf.pick_and_add(|h| f64::from(h.weight)).map(|h| h.index),
        }
    }
}
