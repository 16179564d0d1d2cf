//! The consistent-hashing balancer (RING_HASH, MAGLEV), shaped like Envoy's
//! `ThreadAwareLoadBalancerBase`: one table per priority, built over that priority's healthy hosts
//! (all hosts when the priority is in panic), with host weights normalised to sum to 1, or with
//! locality weights folded in when locality-weighted LB is on.
//!
//! The request hash chooses the priority as well as the host, so a given hash keeps landing on
//! the same host while the host set is unchanged.

use super::HostInfo;
use super::host_set::HostSet;
use super::maglev::Maglev;
use super::priority::PriorityLoad;
use super::ring_hash::Ring;

/// The hashing policies and their (validated) parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashPolicy {
    Ring {
        min_ring_size: u64,
        max_ring_size: u64,
    },
    Maglev {
        table_size: u64,
    },
}

/// A host and its share of its priority's traffic.
#[derive(Debug, Clone, Copy)]
pub struct NormalizedHost<'a> {
    pub index: usize,
    pub key: &'a str,
    pub weight: f64,
}

#[derive(Debug)]
pub struct HashingBalancer {
    tables: Vec<Table>,
}

#[derive(Debug)]
enum Table {
    Ring(Ring),
    Maglev(Maglev),
}

impl HashingBalancer {
    pub fn new(
        policy: HashPolicy,
        sets: &[HostSet],
        hosts: &[HostInfo],
        load: &PriorityLoad,
        locality_weights: Option<&[Vec<u32>]>,
    ) -> Self {
        let tables = sets
            .iter()
            .enumerate()
            .map(|(priority, set)| {
                let weights = locality_weights
                    .and_then(|w| w.get(priority))
                    .filter(|w| !w.is_empty());
                let normalized = normalize(
                    set,
                    load.in_panic(priority),
                    hosts,
                    weights.map(Vec::as_slice),
                );
                match policy {
                    HashPolicy::Ring {
                        min_ring_size,
                        max_ring_size,
                    } => Table::Ring(Ring::new(&normalized, min_ring_size, max_ring_size)),
                    HashPolicy::Maglev { table_size } => {
                        Table::Maglev(Maglev::new(&normalized, table_size))
                    }
                }
            })
            .collect();
        Self { tables }
    }

    /// The host of `priority`'s table that owns `hash`.
    pub fn choose(&self, priority: usize, hash: u64, attempt: u32) -> Option<usize> {
        match self.tables.get(priority)? {
            Table::Ring(ring) => ring.choose(hash, attempt),
            Table::Maglev(maglev) => maglev.choose(hash, attempt),
        }
    }
}

/// The hosts a priority's table is built over, with normalised weights.
fn normalize<'a>(
    set: &HostSet,
    panic: bool,
    hosts: &'a [HostInfo],
    locality_weights: Option<&[u32]>,
) -> Vec<NormalizedHost<'a>> {
    let mut out = Vec::new();
    match locality_weights {
        None => {
            let list = if panic { &set.all } else { &set.healthy };
            normalize_list(list, 1.0, hosts, &mut out);
        }
        Some(weights) => {
            let per_locality = if panic {
                &set.all_per_locality
            } else {
                &set.healthy_per_locality
            };
            let weight_of = |l: usize| u64::from(weights.get(l).copied().unwrap_or(0));
            let sum: u64 = (0..per_locality.len()).map(weight_of).sum();
            for (l, list) in per_locality.iter().enumerate() {
                if sum > 0 && weight_of(l) > 0 {
                    normalize_list(list, weight_of(l) as f64 / sum as f64, hosts, &mut out);
                }
            }
        }
    }
    out
}

/// Appends `list` with weights scaled to sum to `share`.
fn normalize_list<'a>(
    list: &[usize],
    share: f64,
    hosts: &'a [HostInfo],
    out: &mut Vec<NormalizedHost<'a>>,
) {
    let sum: u64 = list
        .iter()
        .map(|&i| u64::from(hosts[i].effective_weight()))
        .sum();
    for &index in list {
        let host = &hosts[index];
        out.push(NormalizedHost {
            index,
            key: &host.hash_key,
            weight: f64::from(host.effective_weight()) * share / sum as f64,
        });
    }
}
