//! The non-hashing balancer (round robin, least request, random): one `HostPicker` per hosts
//! source, as Envoy's `EdfLoadBalancerBase` keeps one scheduler per `HostsSource`.
//!
//! A pick names a priority, whether it wants healthy or degraded hosts, and whether the priority
//! is in panic; this module chooses the source (all hosts in panic; else one locality's hosts
//! when locality-weighted LB is on and some locality qualifies; else the priority's healthy or
//! degraded hosts) and asks that source's picker. Each source keeps its own rotation, so e.g.
//! the panic list's round robin is not disturbed by healthy picks.

use rand::rngs::SmallRng;

use super::HostInfo;
use super::host_set::HostSet;
use super::locality::LocalityScheduler;
use super::picker::{HostPicker, SourcePolicy};
use super::priority::Availability;

#[derive(Debug)]
pub struct SourceBalancer {
    levels: Vec<Level>,
}

/// What a `SourceBalancer` is built from.
pub struct SourceSetup<'a> {
    pub policy: SourcePolicy,
    pub hosts: &'a [HostInfo],
    /// `[priority][locality]` weights; `Some` turns locality-weighted LB on.
    pub locality_weights: Option<&'a [Vec<u32>]>,
    pub overprovisioning_factor: u32,
    pub seed: u64,
}

#[derive(Debug)]
struct Level {
    all: HostPicker,
    healthy: HostPicker,
    degraded: HostPicker,
    localities: Option<Localities>,
}

#[derive(Debug)]
struct Localities {
    healthy: Option<LocalityScheduler>,
    degraded: Option<LocalityScheduler>,
    healthy_pickers: Vec<HostPicker>,
    degraded_pickers: Vec<HostPicker>,
}

impl SourceBalancer {
    pub fn new(setup: &SourceSetup<'_>, sets: &[HostSet]) -> Self {
        let levels = sets
            .iter()
            .enumerate()
            .map(|(priority, set)| Level::new(setup, priority, set))
            .collect();
        Self { levels }
    }

    /// A host of `priority` from the source the pick calls for.
    pub fn pick(
        &mut self,
        priority: usize,
        availability: Availability,
        panic: bool,
        rng: &mut SmallRng,
        active: &dyn Fn(usize) -> u32,
    ) -> Option<usize> {
        let level = self.levels.get_mut(priority)?;
        if panic {
            return level.all.pick(rng, active);
        }
        if let Some(picker) = level.locality_picker(availability) {
            return picker.pick(rng, active);
        }
        match availability {
            Availability::Healthy => level.healthy.pick(rng, active),
            Availability::Degraded => level.degraded.pick(rng, active),
        }
    }
}

impl Level {
    fn new(setup: &SourceSetup<'_>, priority: usize, set: &HostSet) -> Self {
        let picker = |list: &[usize]| HostPicker::new(setup.policy, list, setup.hosts, setup.seed);
        let localities = setup.locality_weights.map(|weights| {
            let weights = weights.get(priority).map_or(&[][..], Vec::as_slice);
            let scheduler = |availability| {
                LocalityScheduler::new(
                    set,
                    availability,
                    weights,
                    setup.overprovisioning_factor,
                    setup.seed,
                )
            };
            Localities {
                healthy: scheduler(Availability::Healthy),
                degraded: scheduler(Availability::Degraded),
                healthy_pickers: set.healthy_per_locality.iter().map(|l| picker(l)).collect(),
                degraded_pickers: set
                    .degraded_per_locality
                    .iter()
                    .map(|l| picker(l))
                    .collect(),
            }
        });
        Self {
            all: picker(&set.all),
            healthy: picker(&set.healthy),
            degraded: picker(&set.degraded),
            localities,
        }
    }

    /// The picker of the locality the locality schedule calls for, if locality LB applies.
    fn locality_picker(&mut self, availability: Availability) -> Option<&mut HostPicker> {
        let localities = self.localities.as_mut()?;
        let (scheduler, pickers) = match availability {
            Availability::Healthy => (
                localities.healthy.as_mut()?,
                &mut localities.healthy_pickers,
            ),
            Availability::Degraded => (
                localities.degraded.as_mut()?,
                &mut localities.degraded_pickers,
            ),
        };
        let locality = scheduler.pick()?;
        pickers.get_mut(locality)
    }
}
