//! Locality-weighted picking within a priority, as Envoy's `HostSetImpl::chooseLocality`: an EDF
//! schedule over localities whose weight is the configured locality weight scaled by how
//! available the locality is, `weight * min(1, overprovisioning_factor * available / hosts)`.
//!
//! Localities with no configured weight, no hosts, or no available hosts get no traffic. When
//! no locality qualifies there is no scheduler, and the caller falls back to the whole priority.

use super::edf::EdfScheduler;
use super::host_set::HostSet;
use super::priority::Availability;

#[derive(Debug)]
pub struct LocalityScheduler {
    edf: EdfScheduler<Locality>,
}

#[derive(Debug, Clone, Copy)]
struct Locality {
    index: usize,
    weight: f64,
}

impl LocalityScheduler {
    /// A scheduler over the localities of `set` for hosts of `availability`, or `None` if no
    /// locality can take traffic. `weights[l]` is locality `l`'s weight (missing means 0);
    /// `overprovisioning_factor` is in percent.
    pub fn new(
        set: &HostSet,
        availability: Availability,
        weights: &[u32],
        overprovisioning_factor: u32,
        seed: u64,
    ) -> Option<Self> {
        let available = set.available_per_locality(availability);
        let mut edf = EdfScheduler::new();
        for (index, all) in set.all_per_locality.iter().enumerate() {
            let configured = weights.get(index).copied().unwrap_or(0);
            let ready = available.get(index).map_or(0, Vec::len);
            let weight = effective_weight(configured, ready, all.len(), overprovisioning_factor);
            if weight > 0.0 {
                edf.add(Locality { index, weight }, weight);
            }
        }
        if edf.is_empty() {
            return None;
        }
        for _ in 0..seed % edf.len() as u64 {
            edf.pick_and_add(|l| l.weight);
        }
        Some(Self { edf })
    }

    /// The locality for the next pick.
    pub fn pick(&mut self) -> Option<usize> {
        self.edf.pick_and_add(|l| l.weight).map(|l| l.index)
    }
}

fn effective_weight(
    weight: u32,
    available: usize,
    hosts: usize,
    overprovisioning_factor: u32,
) -> f64 {
    if hosts == 0 {
        return 0.0;
    }
    let ratio = available as f64 / hosts as f64;
    let availability = (f64::from(overprovisioning_factor) / 100.0 * ratio).min(1.0);
    f64::from(weight) * availability
}
