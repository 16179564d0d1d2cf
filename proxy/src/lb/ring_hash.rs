//! Envoy's RING_HASH table: a ketama-style ring of `xxHash64("<hash_key>_<i>")` points.
//!
//! Each host gets a number of points proportional to its normalised weight. The ring is scaled
//! so that the lightest host gets `ceil(min_weight * min_ring_size)` points (a whole number),
//! capped at `max_ring_size` in total; hosts with fractional point counts are handled by running
//! sums across hosts, exactly as Envoy does, so the same hosts build the same ring.
//!
//! A request hash maps to the first point at or after it, wrapping to the first point. A host
//! selection retry moves `attempt` points further round the ring.

use std::fmt::Write;

use super::hash_key;
use super::hashing::NormalizedHost;

#[derive(Debug)]
pub struct Ring {
    /// `(point, host index)`, sorted by point; equal points keep build order.
    points: Vec<(u64, usize)>,
}

impl Ring {
    pub fn new(hosts: &[NormalizedHost<'_>], min_ring_size: u64, max_ring_size: u64) -> Self {
        if hosts.is_empty() {
            return Self { points: Vec::new() };
        }
        let min_weight = hosts.iter().map(|h| h.weight).fold(1.0, f64::min);
        let scale =
            ((min_weight * min_ring_size as f64).ceil() / min_weight).min(max_ring_size as f64);
        let mut points = Vec::with_capacity(scale.ceil() as usize);
        let mut key = String::new();
        let (mut current, mut target) = (0.0, 0.0);
        for host in hosts {
            target += scale * host.weight;
            key.clear();
            key.push_str(host.key);
            key.push('_');
            let prefix = key.len();
            let mut i = 0u64;
            while current < target {
                key.truncate(prefix);
                let _ = write!(key, "{i}"); // writing to a String cannot fail
                points.push((hash_key(key.as_bytes()), host.index));
                i += 1;
                current += 1.0;
            }
        }
        points.sort_by_key(|&(point, _)| point);
        Self { points }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// The host owning `hash`, moved `attempt` points on for host selection retries.
    pub fn choose(&self, hash: u64, attempt: u32) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let first_at_or_after = self.points.partition_point(|&(point, _)| point < hash);
        let slot = (first_at_or_after + attempt as usize) % self.points.len();
        Some(self.points[slot].1)
    }

    /// Points per host index, for tests and stats.
    #[cfg(test)]
    pub fn points_per_host(&self) -> std::collections::HashMap<usize, usize> {
        let mut counts = std::collections::HashMap::new();
        for &(_, host) in &self.points {
            *counts.entry(host).or_insert(0) += 1;
        }
        counts
    }
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
    fn equal_weights_get_equal_points_at_the_minimum_ring_size() {
        let ring = Ring::new(
            &hosts(&["a:80", "b:80", "c:80", "d:80"], &[0.25; 4]),
            1024,
            8 << 20,
        );
        assert_eq!(ring.len(), 1024);
        assert!(ring.points_per_host().values().all(|&n| n == 256));
    }

    #[test]
    fn points_follow_weights_with_the_lightest_host_whole() {
        // Normalised 1/4 and 3/4: scale = ceil(0.25 * 10) / 0.25 = 12 -> 3 and 9 points.
        let ring = Ring::new(&hosts(&["a:80", "b:80"], &[0.25, 0.75]), 10, 100);
        assert_eq!(ring.points_per_host()[&0], 3);
        assert_eq!(ring.points_per_host()[&1], 9);
    }

    #[test]
    fn max_ring_size_caps_the_ring_with_running_sums() {
        // Envoy's own example: 4 hosts of 1/4 and a max of 6 -> 2, 1, 2, 1 points.
        let ring = Ring::new(&hosts(&["a:1", "b:1", "c:1", "d:1"], &[0.25; 4]), 1024, 6);
        let per_host = ring.points_per_host();
        assert_eq!(
            [per_host[&0], per_host[&1], per_host[&2], per_host[&3]],
            [2, 1, 2, 1]
        );
    }

    #[test]
    fn points_are_xxhash_of_key_underscore_index() {
        let ring = Ring::new(&hosts(&["10.0.0.1:8080"], &[1.0]), 3, 3);
        let mut expected: Vec<u64> = (0..3)
            .map(|i| hash_key(format!("10.0.0.1:8080_{i}").as_bytes()))
            .collect();
        expected.sort_unstable();
        let points: Vec<u64> = ring.points.iter().map(|p| p.0).collect();
        assert_eq!(points, expected);
    }

    #[test]
    fn hash_maps_to_next_point_and_wraps() {
        let ring = Ring {
            points: vec![(100, 0), (200, 1), (300, 2)],
        };
        assert_eq!(ring.choose(0, 0), Some(0));
        assert_eq!(ring.choose(100, 0), Some(0));
        assert_eq!(ring.choose(101, 0), Some(1));
        assert_eq!(ring.choose(300, 0), Some(2));
        assert_eq!(ring.choose(301, 0), Some(0));
        assert_eq!(ring.choose(u64::MAX, 0), Some(0));
        assert_eq!(ring.choose(150, 1), Some(2));
        assert_eq!(ring.choose(150, 2), Some(0));
    }

    #[test]
    fn empty_ring_chooses_nothing() {
        assert_eq!(Ring::new(&[], 1024, 2048).choose(5, 0), None);
    }
}
