//! The cells metrics are counted in: a counter, a gauge and a histogram with fixed buckets,
//! each readable from the metrics thread at any time.
//!
//! A node's cells belong to one shard each and are written only by that shard's thread
//! (`add`, `set`, `observe`): a plain load and store, no locked read-modify-write and no
//! cache line another shard writes, so counting costs the hot path a few instructions. The
//! scrape reads every shard's cells and adds them up. Cells written from several threads
//! (the gateway's tokio workers) use the `_shared` methods, which are atomic
//! read-modify-writes. A single-writer method called from two threads at once loses counts,
//! it never corrupts memory; each owner documents which kind it uses.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

/// A monotonic counter.
#[derive(Debug, Default)]
pub struct Count(AtomicU64);

impl Count {
    /// Adds `n`; only ever called from the cell's owning thread.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Adds `n` from any thread.
    #[inline]
    pub fn add_shared(&self, n: u64) {
        self.0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A value that goes up and down (a gauge).
#[derive(Debug, Default)]
pub struct Level(AtomicI64);

impl Level {
    #[inline]
    pub fn set(&self, value: i64) {
        self.0.store(value, Relaxed);
    }

    /// Sets an unsigned value (offsets, bytes), saturating at `i64::MAX`.
    #[inline]
    pub fn set_u64(&self, value: u64) {
        self.set(i64::try_from(value).unwrap_or(i64::MAX));
    }

    /// Adds `delta` (negative to subtract) from any thread.
    #[inline]
    pub fn add_shared(&self, delta: i64) {
        self.0.fetch_add(delta, Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Relaxed)
    }
}

/// Bucket upper bounds of a histogram, ascending; an implicit `+Inf` bucket follows.
pub type Bounds = &'static [f64];

/// Durations of one disk operation or request, in seconds: 50 µs (a fast NVMe flush) to 10 s
/// (a device in trouble), about three buckets per decade.
pub const DURATION_BOUNDS: Bounds = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Bytes of one write round: a sector to a 16 MiB round, by powers of four.
pub const BYTES_BOUNDS: Bounds = &[
    512.0,
    2048.0,
    8192.0,
    32768.0,
    131_072.0,
    524_288.0,
    2_097_152.0,
    8_388_608.0,
    16_777_216.0,
];

/// Records of one write round: one record to a million, by powers of four.
pub const COUNT_BOUNDS: Bounds = &[
    1.0,
    4.0,
    16.0,
    64.0,
    256.0,
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262_144.0,
    1_048_576.0,
];

/// A histogram with fixed buckets (Prometheus' classic histogram).
#[derive(Debug)]
pub struct Histogram {
    bounds: Bounds,
    /// One count per bound, then the `+Inf` bucket; not cumulative.
    buckets: Box<[AtomicU64]>,
    /// The sum of the observed values, as `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: Bounds) -> Self {
        assert!(
            bounds.windows(2).all(|pair| pair[0] < pair[1]),
            "bucket bounds must ascend"
        );
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    fn bucket(&self, value: f64) -> &AtomicU64 {
        let index = self.bounds.partition_point(|&bound| bound < value);
        &self.buckets[index]
    }

    /// Records `value`; only ever called from the cell's owning thread.
    #[inline]
    pub fn observe(&self, value: f64) {
        let bucket = self.bucket(value);
        bucket.store(bucket.load(Relaxed) + 1, Relaxed);
        let sum = f64::from_bits(self.sum.load(Relaxed)) + value;
        self.sum.store(sum.to_bits(), Relaxed);
    }

    /// Records `value` from any thread.
    pub fn observe_shared(&self, value: f64) {
        self.bucket(value).fetch_add(1, Relaxed);
        let _ = self.sum.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + value).to_bits())
        });
    }

    /// What the histogram holds now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            buckets: self
                .buckets
                .iter()
                .map(|bucket| bucket.load(Relaxed))
                .collect(),
            sum: f64::from_bits(self.sum.load(Relaxed)),
        }
    }
}

/// A histogram's counts at one moment, to add up over shards and encode.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    pub bounds: Bounds,
    /// One count per bound, then `+Inf`; not cumulative.
    pub buckets: Vec<u64>,
    pub sum: f64,
}

impl HistogramSnapshot {
    /// An empty histogram over `bounds`.
    pub fn empty(bounds: Bounds) -> Self {
        HistogramSnapshot {
            bounds,
            buckets: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    /// Adds `other` (same bounds) into this one.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        assert_eq!(
            self.bounds, other.bounds,
            "merging histograms of other buckets"
        );
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.sum += other.sum;
    }

    /// Observations: the sum of the buckets, so the `+Inf` bucket and the count always agree
    /// in a scrape even while the owner writes.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The `(upper bound, count)` pairs Prometheus' encoder takes (not cumulative).
    pub fn pairs(&self) -> Vec<(f64, u64)> {
        self.bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets.iter().copied())
            .collect()
    }

    /// The value below which `quantile` of the observations fall, interpolated inside its
    /// bucket as Prometheus' `histogram_quantile` does; `None` without observations.
    pub fn quantile(&self, quantile: f64) -> Option<f64> {
        let count = self.count();
        if count == 0 {
            return None;
        }
        #[allow(clippy::cast_precision_loss)]
        let rank = quantile.clamp(0.0, 1.0) * count as f64;
        let mut below = 0u64;
        for (index, &in_bucket) in self.buckets.iter().enumerate() {
            #[allow(clippy::cast_precision_loss)]
            let reached = (below + in_bucket) as f64;
            if reached >= rank && in_bucket > 0 {
                let lower = if index == 0 {
                    0.0
                } else {
                    self.bounds[index - 1]
                };
                let Some(&upper) = self.bounds.get(index) else {
                    // In the +Inf bucket: the highest finite bound, as Prometheus answers.
                    return self.bounds.last().copied();
                };
                #[allow(clippy::cast_precision_loss)]
                let within = (rank - below as f64) / in_bucket as f64;
                return Some(lower + (upper - lower) * within);
            }
            below += in_bucket;
        }
        self.bounds.last().copied()
    }

    /// The difference `self - earlier` (the observations between two scrapes).
    pub fn since(&self, earlier: &HistogramSnapshot) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            buckets: self
                .buckets
                .iter()
                .zip(&earlier.buckets)
                .map(|(now, before)| now.saturating_sub(*before))
                .collect(),
            sum: (self.sum - earlier.sum).max(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_land_in_the_bucket_whose_bound_is_the_first_not_below_them() {
        let histogram = Histogram::new(&[1.0, 2.0, 4.0]);
        for value in [0.5, 1.0, 1.5, 4.0, 9.0] {
            histogram.observe(value);
        }
        let snapshot = histogram.snapshot();
        // Prometheus' `le`: a value equal to a bound counts in that bound's bucket.
        assert_eq!(snapshot.buckets, vec![2, 1, 1, 1]);
        assert_eq!(snapshot.count(), 5);
        assert!((snapshot.sum - 16.0).abs() < 1e-9);
    }

    #[test]
    fn shards_add_up_and_quantiles_interpolate_like_prometheus() {
        let one = Histogram::new(&[1.0, 2.0]);
        let two = Histogram::new(&[1.0, 2.0]);
        for _ in 0..50 {
            one.observe(0.5);
            two.observe_shared(1.5);
        }
        let mut total = one.snapshot();
        total.merge(&two.snapshot());
        assert_eq!(total.count(), 100);
        // Rank 90 is the 40th of 50 observations in (1, 2]: 1 + 40/50.
        assert!((total.quantile(0.9).unwrap() - 1.8).abs() < 1e-9);
        assert!((total.quantile(0.5).unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(HistogramSnapshot::empty(&[1.0]).quantile(0.5), None);
        let later = {
            let mut later = total.clone();
            later.buckets[2] += 3;
            later
        };
        let between = later.since(&total);
        assert_eq!(between.count(), 3);
        assert_eq!(between.quantile(0.99), Some(2.0));
    }

    #[test]
    fn single_writer_and_shared_counts_agree() {
        let count = Count::default();
        count.add(2);
        count.add_shared(3);
        assert_eq!(count.get(), 5);
        let level = Level::default();
        level.set_u64(u64::MAX);
        assert_eq!(level.get(), i64::MAX);
        level.set(4);
        level.add_shared(-1);
        assert_eq!(level.get(), 3);
    }
}
