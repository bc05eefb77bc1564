//! Media measurements with bounded memory: latency histograms and bitrates.
//!
//! Sans-IO: the caller records samples with their time and reads summaries.
//!
//! 1. For every played audio frame or shown picture, [`LatencyHistogram::record`] its
//!    `now − captured_us`; at the end (or periodically), [`LatencyHistogram::quantiles`] gives the
//!    p50/p95/p99 summary that reports serialize. Histograms of several calls
//!    [`merge`](LatencyHistogram::merge).
//! 2. For every packet sent or received, [`Rate::record`] its size with `now`;
//!    [`Rate::kbps`]`(now)` gives the bitrate over the last window.
//!
//! ```no_run
//! use kioskd::media::stats::{LatencyHistogram, Rate};
//! let mut latency = LatencyHistogram::default();
//! latency.record(42_000); // µs
//! let summary = latency.quantiles(); // {"p50": 42.0, "p95": 42.0, "p99": 42.0} in ms
//! let mut rate = Rate::new(1_000_000);
//! rate.record(1200, 0);
//! let _kbps = rate.kbps(20_000);
//! # let _ = summary;
//! ```

use std::collections::VecDeque;

use serde::Serialize;

use super::UnixMicros;

/// Width of a histogram bucket (µs): 0.5 ms, finer than anyone hears or sees.
pub const BUCKET_US: u64 = 500;

/// Buckets below the overflow bucket: 4000 × 0.5 ms = 2 s. A latency beyond 2 s means the call
/// is broken; such samples share one bucket and quantiles there report the maximum. Memory:
/// 4001 × 8 bytes = 32 KiB per histogram, allocated at the first sample.
pub const BUCKETS: usize = 4000;

/// The summary that reports carry, in milliseconds. All 0 when nothing was recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Quantiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// A latency histogram: fixed 0.5 ms buckets up to 2 s plus one overflow bucket. Quantiles are
/// exact to the bucket width (reported at the bucket's upper edge, at most the largest sample).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LatencyHistogram {
    /// Samples per bucket; `BUCKETS + 1` long once anything was recorded, empty before.
    counts: Vec<u64>,
    count: u64,
    sum_us: u128,
    max_us: u64,
}

impl LatencyHistogram {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one latency in µs.
    pub fn record(&mut self, latency_us: u64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS + 1];
        }
        let bucket = usize::try_from(latency_us / BUCKET_US).unwrap_or(BUCKETS).min(BUCKETS);
        self.counts[bucket] += 1;
        self.count += 1;
        self.sum_us += u128::from(latency_us);
        self.max_us = self.max_us.max(latency_us);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Self) {
        if other.count == 0 {
            return;
        }
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS + 1];
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.count += other.count;
        self.sum_us += other.sum_us;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// Samples recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The `q` quantile (0..=1) in ms, `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (bucket, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let upper_us = if bucket == BUCKETS { self.max_us } else { (bucket as u64 + 1) * BUCKET_US };
                return Some(upper_us.min(self.max_us) as f64 / 1000.0);
            }
        }
        Some(self.max_us as f64 / 1000.0)
    }

    pub fn p50(&self) -> Option<f64> {
        self.quantile(0.50)
    }

    pub fn p95(&self) -> Option<f64> {
        self.quantile(0.95)
    }

    pub fn p99(&self) -> Option<f64> {
        self.quantile(0.99)
    }

    /// The largest sample in ms, `None` when empty.
    pub fn max_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.max_us as f64 / 1000.0)
    }

    /// The mean in ms, `None` when empty.
    pub fn mean_ms(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum_us as f64 / self.count as f64 / 1000.0)
    }

    /// p50, p95 and p99 in ms; all 0 when empty.
    pub fn quantiles(&self) -> Quantiles {
        Quantiles {
            p50: self.p50().unwrap_or(0.0),
            p95: self.p95().unwrap_or(0.0),
            p99: self.p99().unwrap_or(0.0),
        }
    }
}

/// Slots a [`Rate`] window is cut into: 20, so the window slides in steps of 5 % of its length.
pub const RATE_SLOTS: usize = 20;

/// Bitrate over a sliding window, in fixed memory: the window is cut into [`RATE_SLOTS`] slots
/// of bytes. The rate covers the last `RATE_SLOTS − 1` whole slots plus the current partial one
/// (or the time since the first record, if shorter).
#[derive(Debug, Clone)]
pub struct Rate {
    slot_us: u64,
    /// (slot number = time / `slot_us`, bytes in it); a slot is reused when its number is old.
    slots: [(u64, u64); RATE_SLOTS],
    first_at: Option<UnixMicros>,
    total_bytes: u64,
}

impl Rate {
    /// A rate over the last `window_us` µs (at least `RATE_SLOTS` µs).
    pub fn new(window_us: u64) -> Self {
        Self {
            slot_us: (window_us / RATE_SLOTS as u64).max(1),
            slots: [(u64::MAX, 0); RATE_SLOTS],
            first_at: None,
            total_bytes: 0,
        }
    }

    /// Counts `bytes` sent or received at `now`. A record older than the window counts in the
    /// total only.
    pub fn record(&mut self, bytes: usize, now: UnixMicros) {
        let bytes = bytes as u64;
        self.total_bytes = self.total_bytes.saturating_add(bytes);
        self.first_at = Some(self.first_at.map_or(now, |first| first.min(now)));
        let id = now / self.slot_us;
        let slot = &mut self.slots[(id % RATE_SLOTS as u64) as usize];
        if slot.0 == id {
            slot.1 = slot.1.saturating_add(bytes);
        } else if slot.0 == u64::MAX || slot.0 < id {
            *slot = (id, bytes);
        }
    }

    /// Kilobits per second over the window ending at `now`; 0 before any record.
    pub fn kbps(&self, now: UnixMicros) -> f64 {
        let Some(first_at) = self.first_at else { return 0.0 };
        let id = now / self.slot_us;
        let oldest = id.saturating_sub(RATE_SLOTS as u64 - 1);
        let bytes: u64 = self
            .slots
            .iter()
            .filter(|(slot, _)| *slot != u64::MAX && (oldest..=id).contains(slot))
            .map(|(_, b)| b)
            .sum();
        let start = (oldest * self.slot_us).max(first_at);
        let elapsed = now.saturating_sub(start).max(self.slot_us);
        bytes as f64 * 8.0 * 1000.0 / elapsed as f64
    }

    /// Bytes recorded since creation.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }
}

/// The last `window` transit times (`arrival − capture`, µs, signed: the sender's and the
/// receiver's clocks may differ by a constant), their minimum (the fastest path: the baseline),
/// and a percentile of the delays above it. Shared by the audio jitter buffer and the video
/// playout. Bounded: `window` entries, plus a scratch buffer of the same size reused so that
/// recording allocates nothing once full.
#[derive(Debug, Clone)]
pub struct TransitWindow {
    window: usize,
    transits: VecDeque<i64>,
    min: i64,
    scratch: Vec<i64>,
}

impl TransitWindow {
    pub fn new(window: usize) -> Self {
        let window = window.max(1);
        Self {
            window,
            transits: VecDeque::with_capacity(window),
            min: 0,
            scratch: Vec::with_capacity(window),
        }
    }

    /// Records a packet that arrived at `now`, captured at `captured_us`, and returns the
    /// `percentile` (0..=1) of the delays above the baseline, in µs (0 or more).
    pub fn record(&mut self, now: UnixMicros, captured_us: UnixMicros, percentile: f64) -> u64 {
        while self.transits.len() >= self.window {
            self.transits.pop_front();
        }
        self.transits.push_back(now.wrapping_sub(captured_us) as i64);
        self.min = self.transits.iter().copied().min().unwrap_or(0);
        self.scratch.clear();
        self.scratch.extend(self.transits.iter().map(|t| t.saturating_sub(self.min)));
        let n = self.scratch.len();
        let rank = (percentile.clamp(0.0, 1.0) * n as f64).ceil() as usize;
        let (_, &mut above, _) = self.scratch.select_nth_unstable(rank.clamp(1, n) - 1);
        above.max(0) as u64
    }

    /// How much later than the fastest path a packet arriving at `now` is (µs, signed).
    pub fn relative_delay(&self, now: UnixMicros, captured_us: UnixMicros) -> i64 {
        (now.wrapping_sub(captured_us) as i64).saturating_sub(self.min)
    }

    /// The baseline: the smallest transit in the window (µs, signed).
    pub fn baseline(&self) -> i64 {
        self.min
    }

    /// Forgets everything (a restarted sender).
    pub fn clear(&mut self) {
        self.transits.clear();
        self.min = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: UnixMicros = 1_700_000_000_000_000;

    #[test]
    fn empty_histogram_reports_zeros() {
        let h = LatencyHistogram::default();
        assert_eq!(h.quantiles(), Quantiles::default());
        assert_eq!((h.p50(), h.max_ms(), h.mean_ms()), (None, None, None));
        assert!(h.is_empty());
    }

    #[test]
    fn quantiles_within_half_a_millisecond() {
        let mut h = LatencyHistogram::new();
        // 1..=1000 ms, one sample each.
        for ms in 1..=1000u64 {
            h.record(ms * 1000 + 123);
        }
        let q = h.quantiles();
        assert!((q.p50 - 500.1).abs() <= 0.5, "{q:?}");
        assert!((q.p95 - 950.1).abs() <= 0.5, "{q:?}");
        assert!((q.p99 - 990.1).abs() <= 0.5, "{q:?}");
        assert_eq!(h.max_ms(), Some(1000.123));
        assert_eq!(h.count(), 1000);
        assert!((h.mean_ms().unwrap() - 500.623).abs() < 1e-9);
    }

    #[test]
    fn constant_latency_reports_itself() {
        let mut h = LatencyHistogram::new();
        for _ in 0..10 {
            h.record(10_200);
        }
        assert_eq!(h.quantiles(), Quantiles { p50: 10.2, p95: 10.2, p99: 10.2 });
    }

    #[test]
    fn overflow_bucket_reports_the_maximum() {
        let mut h = LatencyHistogram::new();
        for _ in 0..98 {
            h.record(5_000);
        }
        h.record(3_000_000);
        h.record(u64::MAX);
        assert_eq!(h.p50(), Some(5.5), "upper edge of the 5.0..5.5 ms bucket");
        assert_eq!(h.p99(), Some(u64::MAX as f64 / 1000.0));
        assert_eq!(h.quantile(1.0), h.max_ms());
    }

    #[test]
    fn merge_adds_samples() {
        let (mut a, mut b) = (LatencyHistogram::new(), LatencyHistogram::new());
        for _ in 0..50 {
            a.record(10_000);
            b.record(30_000);
        }
        let mut all = LatencyHistogram::new();
        all.merge(&a);
        all.merge(&b);
        all.merge(&LatencyHistogram::new());
        assert_eq!(all.count(), 100);
        assert_eq!(all.p50(), Some(10.5));
        assert_eq!(all.p95(), Some(30.0));
    }

    #[test]
    fn quantiles_serialize_as_p50_p95_p99() {
        let q = Quantiles { p50: 1.5, p95: 2.0, p99: 3.25 };
        assert_eq!(serde_json::to_string(&q).unwrap(), r#"{"p50":1.5,"p95":2.0,"p99":3.25}"#);
    }

    #[test]
    fn rate_of_a_steady_stream() {
        let mut rate = Rate::new(1_000_000);
        // 1000 bytes every 10 ms = 800 kbit/s, for 3 s.
        for i in 0..300u64 {
            rate.record(1000, T0 + i * 10_000);
        }
        let kbps = rate.kbps(T0 + 2_995_000);
        assert!((kbps - 800.0).abs() < 800.0 * 0.05, "{kbps}");
        assert_eq!(rate.total_bytes(), 300_000);
    }

    #[test]
    fn rate_before_the_window_fills_uses_elapsed_time() {
        let mut rate = Rate::new(1_000_000);
        for i in 0..20u64 {
            rate.record(1000, T0 + 3 + i * 10_000);
        }
        let kbps = rate.kbps(T0 + 200_003);
        assert!((kbps - 800.0).abs() < 800.0 * 0.05, "{kbps}");
    }

    #[test]
    fn rate_falls_to_zero_after_silence() {
        let mut rate = Rate::new(1_000_000);
        assert_eq!(rate.kbps(T0), 0.0);
        for i in 0..100u64 {
            rate.record(1000, T0 + i * 10_000);
        }
        assert_eq!(rate.kbps(T0 + 5_000_000), 0.0);
        // An old record (out of the window) changes only the total.
        rate.record(1000, T0);
        assert_eq!(rate.kbps(T0 + 5_000_000), 0.0);
        assert_eq!(rate.total_bytes(), 101_000);
    }

    #[test]
    fn rate_never_divides_by_zero() {
        let mut rate = Rate::new(0);
        rate.record(usize::MAX, 0);
        rate.record(usize::MAX, 0);
        assert!(rate.kbps(0).is_finite());
        assert!(rate.kbps(u64::MAX).is_finite());
    }
}
