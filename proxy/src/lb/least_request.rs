//! Least request over one host list, as Envoy's `LeastRequestLoadBalancer` does it.
//!
//! - Equal weights: sample `choice_count` hosts at random (with replacement) and keep the one with
//!   the fewest active requests; the first sample wins ties ("power of two choices" by default).
//! - Unequal weights: an EDF schedule where a host's weight is
//!   `weight / (active_requests + 1) ^ active_request_bias`, recomputed each time the host is
//!   re-inserted after a pick (bias 0 makes it weighted round robin).
//!
//! The schedule is built before any request is known, so it starts from the plain weights (as if
//! no host had active requests); the first pick of each host brings its load in.

use rand::Rng;
use rand::rngs::SmallRng;

use super::HostInfo;
use super::edf::EdfScheduler;
use super::picker::{WeightedHost, weighted_scheduler, weights_are_equal};

#[derive(Debug)]
pub enum LeastRequest {
    Choices {
        hosts: Vec<usize>,
        choice_count: u32,
    },
    Weighted {
        edf: EdfScheduler<WeightedHost>,
        bias: f64,
    },
}

impl LeastRequest {
    /// Least request over `list` (indices into `hosts`). `choice_count` below 1 is taken as 1.
    pub fn new(
        list: &[usize],
        hosts: &[HostInfo],
        choice_count: u32,
        bias: f64,
        seed: u64,
    ) -> Self {
        if weights_are_equal(list, hosts) {
            return Self::Choices {
                hosts: list.to_vec(),
                choice_count: choice_count.max(1),
            };
        }
        let edf = weighted_scheduler(list, hosts, seed, |h| f64::from(h.weight));
        Self::Weighted { edf, bias }
    }

    pub fn pick(&mut self, rng: &mut SmallRng, active: &dyn Fn(usize) -> u32) -> Option<usize> {
        match self {
            Self::Choices {
                hosts,
                choice_count,
            } => best_of_choices(hosts, *choice_count, rng, active),
            Self::Weighted { edf, bias } => {
                let bias = *bias;
                edf.pick_and_add(|h| effective_weight(h.weight, active(h.index), bias))
                    .map(|h| h.index)
            }
        }
    }
}

fn best_of_choices(
    hosts: &[usize],
    choice_count: u32,
    rng: &mut SmallRng,
    active: &dyn Fn(usize) -> u32,
) -> Option<usize> {
    if hosts.is_empty() {
        return None;
    }
    let mut best = hosts[rng.random_range(0..hosts.len())];
    for _ in 1..choice_count {
        let sampled = hosts[rng.random_range(0..hosts.len())];
        if active(sampled) < active(best) {
            best = sampled;
        }
    }
    Some(best)
}

/// `weight / (active + 1) ^ bias`; exactly `weight / (active + 1)` for the default bias of 1.
pub fn effective_weight(weight: u32, active: u32, bias: f64) -> f64 {
    let weight = f64::from(weight);
    let load = f64::from(active) + 1.0;
    if bias == 0.0 {
        weight
    } else if bias == 1.0 {
        weight / load
    } else {
        weight / load.powf(bias)
    }
}
