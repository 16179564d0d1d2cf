//! Envoy's histograms: values (milliseconds, whole numbers) counted in log-linear bins with two
//! significant decimal digits, the layout of the circllhist library Envoy uses, so quantiles,
//! Prometheus buckets and sums come out as Envoy computes them from the same values.
//!
//! A bin covers `[m * 10^e, (m + 1) * 10^e)` for a two-digit `m` (values below 10 are exact, 0
//! has its own bin). The bins of one histogram are atomics shared by every worker, in chunks
//! (the ten values below 10, then one chunk of 90 per decade) each allocated the first time a
//! value lands in it: recording is one relaxed `fetch_add`, an unused histogram costs a few
//! pointers, and one that only sees a few decades (most do) holds only those chunks. Values of 10^10 ms (115 days) and more land in the last bin.
//!
//! Reading is for the admin side: [`Statistics::of`] turns bin counts into Envoy's quantiles
//! (circllhist's type-1 estimate: the `n` values of a bin sit at `k / (n + 1)` of its width),
//! cumulative counts below Envoy's default bucket bounds, the bin-midpoint sum and the count.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Decades above 10 with their own 90 bins: values up to 10^(DECADES + 1) - 1.
const DECADES: usize = 9;
/// The zero bin, nine single-digit bins, then 90 bins per decade.
pub(crate) const BINS: usize = 10 + 90 * DECADES;

/// Envoy's `supportedQuantiles()`, as fractions.
pub const QUANTILES: [f64; 10] = [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 1.0];

/// The same as percentages, as Envoy labels them (`P99.5`, `"supported_quantiles"`).
pub const PERCENTS: [f64; 10] = [0.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 100.0];

/// Envoy's default histogram bucket bounds (`supportedBuckets()`).
pub const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

/// circllhist's `power_of_ten` for the exponents our bins use (exact literals).
const POWERS_OF_TEN: [f64; DECADES + 2] = [1.0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];

/// Chunks: bins 0..10, then 90 bins per decade.
const CHUNKS: usize = 1 + DECADES;

pub(crate) struct HistogramCell {
    chunks: [OnceLock<Box<[AtomicU64]>>; CHUNKS],
    used: AtomicBool,
}

/// The chunk of bin `index` and its place in it.
fn chunk_of(index: usize) -> (usize, usize) {
    if index < 10 {
        (0, index)
    } else {
        (1 + (index - 10) / 90, (index - 10) % 90)
    }
}

/// The first bin of chunk `chunk`.
fn chunk_start(chunk: usize) -> usize {
    if chunk == 0 { 0 } else { 10 + (chunk - 1) * 90 }
}

/// A distribution of millisecond values (request times, connection lengths).
#[derive(Clone)]
pub struct Histogram(pub(crate) Arc<HistogramCell>);

impl Histogram {
    pub(crate) fn new() -> Self {
        Histogram(Arc::new(HistogramCell {
            chunks: Default::default(),
            used: AtomicBool::new(false),
        }))
    }

    /// Records one value.
    pub fn record(&self, value: u64) {
        let (chunk, offset) = chunk_of(bin_index(value));
        let bins = self.0.chunks[chunk].get_or_init(|| {
            let len = if chunk == 0 { 10 } else { 90 };
            (0..len).map(|_| AtomicU64::new(0)).collect()
        });
        bins[offset].fetch_add(1, Ordering::Relaxed);
        super::mark_used(&self.0.used);
    }

    /// Records a duration in whole milliseconds (truncated, as Envoy's timers do).
    pub fn record_duration(&self, elapsed: Duration) {
        self.record(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
    }

    /// The count in every bin (all zero when nothing was recorded).
    pub fn bins(&self) -> Vec<u64> {
        let mut out = vec![0; BINS];
        for (index, count) in self.nonzero_bins() {
            out[index] = count;
        }
        out
    }

    /// The bins holding values, as `(index, count)` in index order.
    pub fn nonzero_bins(&self) -> Vec<(usize, u64)> {
        let mut out = Vec::new();
        for (chunk, bins) in self.0.chunks.iter().enumerate() {
            let Some(bins) = bins.get() else { continue };
            let start = chunk_start(chunk);
            for (offset, bin) in bins.iter().enumerate() {
                let count = bin.load(Ordering::Relaxed);
                if count > 0 {
                    out.push((start + offset, count));
                }
            }
        }
        out
    }

    /// Values recorded so far.
    pub fn count(&self) -> u64 {
        self.nonzero_bins().iter().map(|(_, c)| c).sum()
    }

    pub(crate) fn used(&self) -> bool {
        self.0.used.load(Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Histogram(count {})", self.count())
    }
}

/// The bin of `value`: circllhist's `int_scale_to_hist_bucket(value, 0)` as an array index.
pub(crate) fn bin_index(value: u64) -> usize {
    match value {
        0 => 0,
        1..=9 => value as usize,
        _ => {
            let (mut mantissa, mut exponent) = (value, 0usize);
            while mantissa >= 100 {
                mantissa /= 10;
                exponent += 1;
            }
            if exponent >= DECADES {
                return BINS - 1;
            }
            10 + exponent * 90 + (mantissa as usize - 10)
        }
    }
}

/// A bin's lower edge and width, computed as circllhist does (`val / 10.0 * 10^exp`).
fn bin_bounds(index: usize) -> (f64, f64) {
    let (val, exp) = match index {
        0 => return (0.0, 0.0),
        1..=9 => (index * 10, 0),
        _ => {
            let i = index - 10;
            (10 + i % 90, i / 90 + 1)
        }
    };
    let power = POWERS_OF_TEN[exp];
    (val as f64 / 10.0 * power, power / 10.0)
}

/// circllhist's `hist_bucket_midpoint`: the point that makes the relative error at both edges
/// equal, `bottom + width * bottom / (bottom + top)`.
fn bin_midpoint(index: usize) -> f64 {
    let (bottom, width) = bin_bounds(index);
    if width == 0.0 {
        return 0.0;
    }
    let top = bottom + width;
    bottom + width * (bottom / (bottom + top))
}

/// What Envoy reports for one histogram (cumulative or interval).
#[derive(Debug, Clone, PartialEq)]
pub struct Statistics {
    /// At [`QUANTILES`]; NaN when nothing was recorded.
    pub quantiles: [f64; QUANTILES.len()],
    /// Values at or below each of [`BUCKETS`] (bin-wise, as circllhist's `count_below`).
    pub buckets: [u64; BUCKETS.len()],
    pub sum: f64,
    pub count: u64,
}

impl Statistics {
    /// Statistics of bin counts as [`Histogram::bins`] returns them.
    pub fn of(bins: &[u64]) -> Statistics {
        let nonzero: Vec<(usize, u64)> = bins
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (i, *c))
            .collect();
        Self::of_nonzero(&nonzero)
    }

    /// Statistics of the non-empty bins, `(index, count)` in index order.
    pub fn of_nonzero(nonzero: &[(usize, u64)]) -> Statistics {
        let count = nonzero.iter().map(|(_, c)| c).sum();
        let sum = nonzero
            .iter()
            .map(|(i, c)| bin_midpoint(*i) * *c as f64)
            .sum();
        let buckets = BUCKETS.map(|bound| {
            let last = if bound < 1.0 {
                0
            } else {
                bin_index(bound as u64)
            };
            nonzero
                .iter()
                .take_while(|(i, _)| *i <= last)
                .map(|(_, c)| c)
                .sum()
        });
        Statistics {
            quantiles: quantiles(nonzero, count),
            buckets,
            sum,
            count,
        }
    }
}

/// circllhist's `hist_approx_quantile` (type 1) over the non-empty bins, in order.
fn quantiles(nonzero: &[(usize, u64)], total: u64) -> [f64; QUANTILES.len()] {
    let mut out = [f64::NAN; QUANTILES.len()];
    if total == 0 {
        return out;
    }
    let total = total as f64;
    let mut bin = 0;
    let mut lower = 0.0;
    let mut upper = nonzero[0].1 as f64;
    for (q, slot) in QUANTILES.iter().zip(out.iter_mut()) {
        let wanted = total * q;
        while bin < nonzero.len() - 1 && upper < wanted {
            bin += 1;
            lower = upper;
            upper = lower + nonzero[bin].1 as f64;
        }
        let (index, n) = nonzero[bin];
        let (left, width) = bin_bounds(index);
        *slot = if width == 0.0 {
            left
        } else {
            let k = (wanted - lower).ceil();
            let n = (n + 1) as f64;
            if k == 0.0 {
                left + 1.0 / n * width
            } else {
                left + k / n * width
            }
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats_of(values: &[u64]) -> Statistics {
        let h = Histogram::new();
        for v in values {
            h.record(*v);
        }
        Statistics::of(&h.bins())
    }

    #[test]
    fn chunks_hold_only_the_decades_used() {
        let h = Histogram::new();
        for v in [0, 7, 7, 42, 99_999, u64::MAX] {
            h.record(v);
        }
        let dense = h.bins();
        let expected: Vec<(usize, u64)> = dense
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (i, *c))
            .collect();
        assert_eq!(h.nonzero_bins(), expected);
        assert_eq!(h.count(), 6);
        let allocated = h.0.chunks.iter().filter(|c| c.get().is_some()).count();
        // 0 and 7; 42; 99_999 (decade 10^4); the overflow bin (last decade).
        assert_eq!(allocated, 4);
    }

    #[test]
    fn bins_follow_two_significant_digits() {
        assert_eq!(bin_index(0), 0);
        assert_eq!(bin_bounds(bin_index(7)), (7.0, 0.1));
        assert_eq!(bin_bounds(bin_index(10)), (10.0, 1.0));
        assert_eq!(bin_bounds(bin_index(99)), (99.0, 1.0));
        assert_eq!(bin_bounds(bin_index(123)), (120.0, 10.0));
        assert_eq!(bin_bounds(bin_index(129)), (120.0, 10.0));
        assert_eq!(bin_bounds(bin_index(3_600_000)), (3_600_000.0, 100_000.0));
        assert_eq!(bin_index(u64::MAX), BINS - 1);
        assert_eq!(bin_bounds(BINS - 1), (9.9e9, 1e8));
    }

    #[test]
    fn bucket_bounds_are_inclusive_like_envoys() {
        // 1 lands in `le="1"`, 0 in `le="0.5"`, 5 in `le="5"`, 26 not in `le="25"`.
        let s = stats_of(&[0, 1, 5, 25, 26, 3_600_000, 3_600_001, 4_000_000]);
        assert_eq!(
            s.buckets,
            [1, 2, 3, 3, 4, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 7]
        );
        assert_eq!(s.count, 8);
    }

    #[test]
    fn quantiles_match_envoy_for_one_value() {
        // Envoy 1.40 prints `P0(nan,1.05) ... P100(nan,1.05)` after one 1 ms request.
        let s = stats_of(&[1]);
        assert_eq!(s.quantiles, [1.05; 10]);
        // And its Prometheus `_sum` is the bin midpoint 1 + 0.1 * 1 / 2.1.
        assert_eq!(s.sum, 1.0476190476190477);
    }

    #[test]
    fn quantiles_spread_values_within_a_bin() {
        // Envoy 1.40, values 1, 2, 2, 7: P0(1.05) P50(2.0333..) P75(2.0666..) P90(7.05).
        let s = stats_of(&[1, 2, 2, 7]);
        assert_eq!(s.quantiles[0], 1.05);
        assert_eq!(s.quantiles[1], 1.05);
        assert_eq!(s.quantiles[2], 2.033333333333333);
        assert_eq!(s.quantiles[3], 2.066666666666667);
        assert_eq!(s.quantiles[4], 7.05);
        assert_eq!(s.quantiles[9], 7.05);
    }

    #[test]
    fn zero_sits_in_a_bin_without_width() {
        let s = stats_of(&[0]);
        assert_eq!(s.quantiles, [0.0; 10]);
        assert_eq!(s.sum, 0.0);
    }

    #[test]
    fn nothing_recorded_is_nan() {
        let s = stats_of(&[]);
        assert!(s.quantiles.iter().all(|q| q.is_nan()));
        assert_eq!((s.count, s.sum, s.buckets[18]), (0, 0.0, 0));
    }
}
