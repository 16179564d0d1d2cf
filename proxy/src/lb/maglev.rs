//! Envoy's MAGLEV table (Maglev paper, section 3.4, pseudocode listing 1, with Envoy's weighting).
//!
//! Hosts are sorted by hash key so the build order does not depend on the order they arrive in.
//! Each host has a permutation of the (prime-sized) table, `offset + skip * j`, with
//! `offset = xxHash64(key, seed 0) % M` and `skip = xxHash64(key, seed 1) % (M - 1) + 1`. Hosts
//! take turns claiming their next free slot; a host whose normalised weight is `1/k` of the
//! heaviest takes a turn only every `k` rounds. A request hash maps to slot `hash % M`; a host
//! selection retry XORs the hash with `-attempt` (most bits set) to land far away.
//!
//! Invariants: every slot is owned once the table is built; the table size is prime (the caller
//! guarantees it), so every permutation visits every slot.

use xxhash_rust::xxh64::xxh64;

use super::hashing::NormalizedHost;

const EMPTY: u32 = u32::MAX;

#[derive(Debug)]
pub struct Maglev {
    /// Slot -> position in `hosts`.
    table: Vec<u32>,
    /// Host indices, in build (sorted key) order.
    hosts: Vec<usize>,
}

struct Builder {
    offset: u64,
    skip: u64,
    weight: f64,
    target: f64,
    next: u64,
}

impl Builder {
    fn slot(&self, table_size: u64) -> usize {
        let slot = (u128::from(self.offset) + u128::from(self.skip) * u128::from(self.next))
            % u128::from(table_size);
        usize::try_from(slot).unwrap_or(0)
    }
}

impl Maglev {
    /// Builds the table. `table_size` must be prime.
    pub fn new(hosts: &[NormalizedHost<'_>], table_size: u64) -> Self {
        if hosts.is_empty() || table_size < 2 {
            return Self {
                table: Vec::new(),
                hosts: Vec::new(),
            };
        }
        let mut sorted: Vec<&NormalizedHost<'_>> = hosts.iter().collect();
        sorted.sort_by(|a, b| a.key.cmp(b.key).then(a.index.cmp(&b.index)));
        let mut builders: Vec<Builder> = sorted
            .iter()
            .map(|h| Builder {
                offset: xxh64(h.key.as_bytes(), 0) % table_size,
                skip: xxh64(h.key.as_bytes(), 1) % (table_size - 1) + 1,
                weight: h.weight,
                target: 0.0,
                next: 0,
            })
            .collect();
        let max_weight = hosts.iter().map(|h| h.weight).fold(0.0, f64::max);
        Self {
            table: fill(&mut builders, table_size, max_weight),
            hosts: sorted.iter().map(|h| h.index).collect(),
        }
    }

    /// The host owning `hash`; retries (`attempt > 0`) perturb the hash.
    pub fn choose(&self, hash: u64, attempt: u32) -> Option<usize> {
        if self.table.is_empty() {
            return None;
        }
        let hash = if attempt > 0 {
            hash ^ u64::from(attempt).wrapping_neg()
        } else {
            hash
        };
        let slot = usize::try_from(hash % self.table.len() as u64).ok()?;
        self.hosts.get(self.table[slot] as usize).copied()
    }

    /// Slots owned by each host index, for tests and stats.
    #[cfg(test)]
    pub fn slots_per_host(&self) -> std::collections::HashMap<usize, usize> {
        let mut counts = std::collections::HashMap::new();
        for &position in &self.table {
            *counts.entry(self.hosts[position as usize]).or_insert(0) += 1;
        }
        counts
    }
}

/// Rounds of turns until every slot is owned.
fn fill(builders: &mut [Builder], table_size: u64, max_weight: f64) -> Vec<u32> {
    let size = usize::try_from(table_size).unwrap_or(usize::MAX);
    let mut table = vec![EMPTY; size];
    let mut filled = 0;
    let mut round: u32 = 1;
    while filled < size {
        for (position, b) in builders.iter_mut().enumerate() {
            if filled == size {
                break;
            }
            if f64::from(round) * b.weight < b.target {
                continue; // a lighter host sits this round out
            }
            b.target += max_weight;
            let mut slot = b.slot(table_size);
            while table[slot] != EMPTY {
                b.next += 1;
                slot = b.slot(table_size);
            }
            table[slot] = u32::try_from(position).unwrap_or(EMPTY - 1);
            b.next += 1;
            filled += 1;
        }
        round = round.saturating_add(1);
    }
    table
}

/// Whether `n` is prime (trial division; table sizes are at most a few million).
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    if n.is_multiple_of(2) {
        return n == 2;
    }
    let mut d = 3;
    while d <= n / d {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 2;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hosts(keys: &[&'static str], weights: &[f64]) -> Vec<NormalizedHost<'static>> {
        keys.iter()
            .zip(weights)
            .enumerate()
            .map(|(index, (key, &weight))| NormalizedHost { index, key, weight })
            .collect()
    }

    #[test]
    fn every_slot_is_owned_and_equal_weights_share_evenly() {
        let table = Maglev::new(&hosts(&["a:80", "b:80", "c:80"], &[1.0 / 3.0; 3]), 65537);
        let slots = table.slots_per_host();
        assert_eq!(slots.values().sum::<usize>(), 65537);
        // Turns alternate, so equal hosts differ by at most one slot.
        assert!(
            slots.values().all(|&n| (21845..=21846).contains(&n)),
            "{slots:?}"
        );
    }

    #[test]
    fn weights_scale_slot_counts() {
        // 1:3 -> the light host takes a turn every third round.
        let table = Maglev::new(&hosts(&["a:80", "b:80"], &[0.25, 0.75]), 65537);
        let slots = table.slots_per_host();
        let light = slots[&0] as f64 / 65537.0;
        assert!((light - 0.25).abs() < 0.001, "light host owns {light}");
    }

    #[test]
    fn input_order_does_not_change_the_table() {
        let forward = Maglev::new(&hosts(&["a:80", "b:80", "c:80"], &[0.2, 0.3, 0.5]), 251);
        let mut reversed = hosts(&["a:80", "b:80", "c:80"], &[0.2, 0.3, 0.5]);
        reversed.reverse();
        let backward = Maglev::new(&reversed, 251);
        for hash in 0..251 {
            assert_eq!(forward.choose(hash, 0), backward.choose(hash, 0));
        }
    }

    #[test]
    fn retry_attempt_perturbs_the_hash() {
        let table = Maglev::new(&hosts(&["a:80", "b:80", "c:80"], &[1.0 / 3.0; 3]), 65537);
        let hash = 12_345u64;
        assert_eq!(table.choose(hash, 1), table.choose(hash ^ u64::MAX, 0));
        assert_eq!(
            table.choose(hash, 2),
            table.choose(hash ^ (u64::MAX - 1), 0)
        );
    }

    #[test]
    fn primes_are_recognised() {
        assert!(is_prime(65537) && is_prime(5_000_011) && is_prime(2) && is_prime(251));
        assert!(!is_prime(65536) && !is_prime(1) && !is_prime(0) && !is_prime(65535));
    }
}
