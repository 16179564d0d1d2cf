//! `HostPicker`: the per-list state of a non-hashing policy (round robin, least request, random).
//! Envoy keeps one such state per "hosts source" (priority x healthy/degraded/all x locality);
//! `SourceBalancer` does the same with these.

use rand::Rng;
use rand::rngs::SmallRng;

use super::HostInfo;
use super::edf::EdfScheduler;
use super::least_request::LeastRequest;
use super::round_robin::RoundRobin;

/// The non-hashing policies and their parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SourcePolicy {
    RoundRobin,
    LeastRequest {
        choice_count: u32,
        active_request_bias: f64,
    },
    Random,
}

#[derive(Debug)]
pub enum HostPicker {
    RoundRobin(RoundRobin),
    LeastRequest(LeastRequest),
    /// Uniform over the list; Envoy's random policy ignores weights.
    Random(Vec<usize>),
}

impl HostPicker {
    /// A picker over `list` (indices into `hosts`).
    pub fn new(policy: SourcePolicy, list: &[usize], hosts: &[HostInfo], seed: u64) -> Self {
        match policy {
            SourcePolicy::RoundRobin => Self::RoundRobin(RoundRobin::new(list, hosts, seed)),
            SourcePolicy::LeastRequest {
                choice_count,
                active_request_bias,
            } => Self::LeastRequest(LeastRequest::new(
                list,
                hosts,
                choice_count,
                active_request_bias,
                seed,
            )),
            SourcePolicy::Random => Self::Random(list.to_vec()),
        }
    }

    pub fn pick(&mut self, rng: &mut SmallRng, active: &dyn Fn(usize) -> u32) -> Option<usize> {
        match self {
            Self::RoundRobin(rr) => rr.pick(),
            Self::LeastRequest(lr) => lr.pick(rng, active),
            Self::Random(list) if list.is_empty() => None,
            Self::Random(list) => Some(list[rng.random_range(0..list.len())]),
        }
    }
}

/// A host in an EDF schedule: its index and configured weight.
#[derive(Debug, Clone, Copy)]
pub struct WeightedHost {
    pub index: usize,
    pub weight: u32,
}

/// Whether every host in `list` has the same weight (Envoy then skips EDF).
pub fn weights_are_equal(list: &[usize], hosts: &[HostInfo]) -> bool {
    let mut weights = list.iter().map(|&i| hosts[i].effective_weight());
    match weights.next() {
        Some(first) => weights.all(|w| w == first),
        None => true,
    }
}

/// An EDF schedule over `list` with weights from `weight`, advanced `seed % len` picks as
/// Envoy does so that schedules built at the same moment start at different hosts.
pub fn weighted_scheduler(
    list: &[usize],
    hosts: &[HostInfo],
    seed: u64,
    weight: impl Fn(&WeightedHost) -> f64,
) -> EdfScheduler<WeightedHost> {
    let mut edf = EdfScheduler::new();
    for &index in list {
        let host = WeightedHost {
            index,
            weight: hosts[index].effective_weight(),
        };
        edf.add(host, weight(&host));
    }
    if !list.is_empty() {
        for _ in 0..seed % list.len() as u64 {
            edf.pick_and_add(&weight);
        }
    }
    edf
}
