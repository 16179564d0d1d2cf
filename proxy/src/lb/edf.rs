//! Earliest-deadline-first scheduling, the engine behind weighted round robin, weighted least
//! request and locality picking.
//!
//! Every entry has a weight and a deadline on a virtual clock. A pick takes the entry with the
//! earliest deadline, moves the clock to that deadline, and re-inserts the entry with its deadline
//! advanced by `1 / weight`. Over any stretch of virtual time an entry is therefore picked in
//! proportion to its weight, and no entry waits longer than `1 / weight` between picks.
//!
//! Invariants:
//! - Deadlines are fixed-point (`2^64` ticks per unit of virtual time), not `f64`: they never drift.
//!   While an entry keeps an integral weight (all weighted round robin entries do) its deadline is
//!   computed from its pick count as `floor(picks * 2^64 / weight)`, which orders deadlines exactly
//!   as the rationals `picks / weight` are ordered (two distinct rationals with denominators below
//!   `2^32` differ by at least `2^-64`). Equal rationals give equal deadlines, so ties are real.
//! - Ties are broken by insertion order (a re-insertion counts as a new insertion), as Envoy's
//!   `EdfScheduler` does; the schedule is a pure function of the inputs.
//! - Pick and insert are `O(log n)`: the queue is a `BinaryHeap`.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// Ticks per unit of virtual time; one unit is the interval between picks of a weight-1 entry.
const TICKS_PER_UNIT: f64 = 18_446_744_073_709_551_616.0; // 2^64

/// An earliest-deadline-first queue of `T`s.
#[derive(Debug)]
pub struct EdfScheduler<T> {
    heap: BinaryHeap<Reverse<Entry<T>>>,
    /// Deadline of the most recent pick; new entries are scheduled relative to it.
    now: u128,
    next_seq: u64,
}

#[derive(Debug)]
struct Entry<T> {
    deadline: u128,
    seq: u64,
    /// The deadline this entry's current weight is counted from.
    anchor: u128,
    weight: f64,
    /// Picks since `anchor` including the one `deadline` is for.
    picks: u64,
    item: T,
}

impl<T> Default for EdfScheduler<T> {
    fn default() -> Self {
        Self {
            heap: BinaryHeap::new(),
            now: 0,
            next_seq: 0,
        }
    }
}

impl<T> EdfScheduler<T> {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Schedules `item` one period (`1 / weight`) after the current time.
    ///
    /// A weight that is not a positive finite number is treated as the smallest positive `f64`,
    /// which puts the entry behind everything else (Envoy rejects such weights before here).
    pub fn add(&mut self, item: T, weight: f64) {
        let weight = sanitize(weight);
        let anchor = self.now;
        self.push(Entry {
            deadline: deadline(anchor, 1, weight),
            seq: 0,
            anchor,
            weight,
            picks: 1,
            item,
        });
    }

    /// The entry the next pick will return.
    pub fn peek(&self) -> Option<&T> {
        self.heap.peek().map(|Reverse(entry)| &entry.item)
    }

    /// Picks the entry with the earliest deadline and re-inserts it with the weight `weight_of`
    /// returns for it now (a least-request weight depends on the host's current load).
    pub fn pick_and_add(&mut self, weight_of: impl FnOnce(&T) -> f64) -> Option<T>
    where
        T: Clone,
    {
        let Reverse(mut entry) = self.heap.pop()?;
        self.now = entry.deadline;
        let weight = sanitize(weight_of(&entry.item));
        if weight.to_bits() == entry.weight.to_bits() {
            entry.picks += 1;
        } else {
            entry.anchor = entry.deadline;
            entry.weight = weight;
            entry.picks = 1;
        }
        entry.deadline = deadline(entry.anchor, entry.picks, entry.weight);
        let item = entry.item.clone();
        self.push(entry);
        Some(item)
    }

    fn push(&mut self, mut entry: Entry<T>) {
        entry.seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Reverse(entry));
    }
}

fn sanitize(weight: f64) -> f64 {
    if weight.is_finite() && weight > 0.0 {
        weight
    } else {
        f64::MIN_POSITIVE
    }
}

/// `anchor + picks / weight` in ticks, saturating at the end of time.
fn deadline(anchor: u128, picks: u64, weight: f64) -> u128 {
    anchor.saturating_add(span(picks, weight))
}

/// `picks / weight` units in ticks: exact for integral weights, rounded otherwise.
fn span(picks: u64, weight: f64) -> u128 {
    if weight.fract() == 0.0 && weight >= 1.0 && weight <= u64::MAX as f64 {
        // picks < 2^64, so picks * 2^64 < 2^128 cannot overflow.
        let ticks = u128::from(picks) << 64;
        ticks / (weight as u128)
    } else {
        // Float-to-int `as` saturates, which is the behaviour wanted for tiny weights.
        (picks as f64 * TICKS_PER_UNIT / weight) as u128
    }
}

impl<T> Entry<T> {
    fn key(&self) -> (u128, u64) {
        (self.deadline, self.seq)
    }
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl<T> Eq for Entry<T> {}

impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<T> Ord for Entry<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        #[cfg(test)]
        tests::COMPARISONS.with(|c| c.set(c.get() + 1));
        self.key().cmp(&other.key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cell::Cell;

    thread_local! {
        /// Entry comparisons made on this thread, to show pick cost without timing anything.
        pub(super) static COMPARISONS: Cell<u64> = const { Cell::new(0) };
    }

    fn scheduler(weights: &[u32]) -> EdfScheduler<usize> {
        let mut edf = EdfScheduler::new();
        for (i, &w) in weights.iter().enumerate() {
            edf.add(i, f64::from(w));
        }
        edf
    }

    fn pick_fixed(edf: &mut EdfScheduler<usize>, weights: &[u32]) -> usize {
        edf.pick_and_add(|&i| f64::from(weights[i]))
            .expect("scheduler is not empty")
    }

    #[test]
    fn weights_three_to_one_interleave_with_ties_in_insertion_order() {
        let weights = [3, 1];
        let mut edf = scheduler(&weights);
        let picks: Vec<usize> = (0..8).map(|_| pick_fixed(&mut edf, &weights)).collect();
        // Deadlines: host 0 at 1/3, 2/3, 1, 4/3, ...; host 1 at 1, 2, ... The tie at 1 goes to
        // host 1, which was inserted (at time 0) before host 0 was re-inserted (at 2/3).
        assert_eq!(picks, [0, 0, 1, 0, 0, 0, 1, 0]);
    }

    #[test]
    fn equal_weights_rotate_in_insertion_order() {
        let weights = [5, 5, 5];
        let mut edf = scheduler(&weights);
        let picks: Vec<usize> = (0..6).map(|_| pick_fixed(&mut edf, &weights)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn empty_scheduler_picks_nothing() {
        let mut edf: EdfScheduler<usize> = EdfScheduler::new();
        assert!(edf.is_empty());
        assert_eq!(edf.pick_and_add(|_| 1.0), None);
        assert_eq!(edf.peek(), None);
    }

    #[test]
    fn entry_added_later_is_scheduled_from_the_current_time() {
        let mut edf = EdfScheduler::new();
        edf.add(0usize, 1.0);
        for _ in 0..10 {
            edf.pick_and_add(|_| 1.0);
        }
        // Clock is at 10; host 0 is due at 11, the newcomer (weight 2) at 10.5.
        edf.add(1, 2.0);
        assert_eq!(
            edf.pick_and_add(|&i| if i == 0 { 1.0 } else { 2.0 }),
            Some(1)
        );
        assert_eq!(edf.len(), 2);
    }

    #[test]
    fn changed_weight_takes_effect_from_the_next_period() {
        let mut edf = EdfScheduler::new();
        edf.add(0usize, 1.0);
        edf.add(1usize, 1.0);
        // Host 0 is re-inserted at weight 0.25 (four units per pick), host 1 stays at 1.
        let mut counts = [0u32; 2];
        for _ in 0..50 {
            let i = edf
                .pick_and_add(|&i| if i == 0 { 0.25 } else { 1.0 })
                .expect("not empty");
            counts[i] += 1;
        }
        // Host 0 at 1, 5, 9, ..., 37 (10 picks); host 1 at 1, 2, ..., 40 (40 picks).
        assert_eq!(counts, [10, 40]);
    }

    #[test]
    fn invalid_weights_are_scheduled_last_not_rejected() {
        let mut edf = EdfScheduler::new();
        edf.add(0usize, 0.0);
        edf.add(1usize, f64::NAN);
        edf.add(2usize, 1.0);
        assert_eq!(edf.pick_and_add(|_| 1.0), Some(2));
    }

    #[test]
    fn pick_on_100k_entries_makes_logarithmically_many_comparisons() {
        let n = 100_000usize;
        let weights: Vec<u32> = (0..n).map(|i| 1 + (i % 7) as u32).collect();
        let weights_u32: &[u32] = &weights;
        let mut edf = scheduler(weights_u32);
        let log2_n = u64::from(usize::BITS - n.leading_zeros()); // 17
        let mut worst = 0;
        for _ in 0..1_000 {
            COMPARISONS.with(|c| c.set(0));
            pick_fixed(&mut edf, weights_u32);
            worst = worst.max(COMPARISONS.with(Cell::get));
        }
        // One pop (sift down: one comparison per level, then sift up) plus one push (sift up).
        assert!(worst <= 3 * log2_n, "worst pick made {worst} comparisons");
    }

    proptest! {
        /// After k * sum(weights) picks every entry got exactly k * weight picks: those are
        /// precisely the deadlines at or before time k, and deadlines are exact rationals.
        #[test]
        fn picks_are_exactly_proportional_to_weights(
            weights in prop::collection::vec(1u32..50, 1..12),
            k in 1u64..4,
        ) {
            let mut edf = scheduler(&weights);
            let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            let mut counts = vec![0u64; weights.len()];
            for _ in 0..k * total {
                counts[pick_fixed(&mut edf, &weights)] += 1;
            }
            let expected: Vec<u64> = weights.iter().map(|&w| k * u64::from(w)).collect();
            prop_assert_eq!(counts, expected);
        }

        /// Every entry is picked at least once in any window of sum(weights) picks.
        #[test]
        fn no_entry_starves(
            weights in prop::collection::vec(1u32..50, 1..12),
            skip in 0usize..200,
        ) {
            let mut edf = scheduler(&weights);
            for _ in 0..skip {
                pick_fixed(&mut edf, &weights);
            }
            let total: u32 = weights.iter().sum();
            let mut seen = vec![false; weights.len()];
            for _ in 0..total {
                seen[pick_fixed(&mut edf, &weights)] = true;
            }
            prop_assert!(seen.iter().all(|&s| s), "unpicked entries: {:?}", seen);
        }

        /// The same inputs always give the same schedule.
        #[test]
        fn schedule_is_deterministic(weights in prop::collection::vec(1u32..50, 1..12)) {
            let run = || {
                let mut edf = scheduler(&weights);
                (0..300).map(|_| pick_fixed(&mut edf, &weights)).collect::<Vec<_>>()
            };
            prop_assert_eq!(run(), run());
        }
    }
}
