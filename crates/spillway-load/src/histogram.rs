//! Latency recording: an HDR histogram in microseconds and the percentile summary that reports
//! and plots show.
//!
//! HDR keeps 3 significant digits from 1 µs to an hour in fixed memory, so a run of any length
//! reports exact-enough p99/p99.9 without storing samples.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Largest latency recorded exactly (longer ones are clamped to it): one hour, in µs.
const MAX_MICROS: u64 = 3_600_000_000;

/// Latencies of one step, interval or run.
#[derive(Debug, Clone)]
pub struct LatencyHistogram {
    inner: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram (1 µs .. 1 h, 3 significant digits).
    pub fn new() -> LatencyHistogram {
        // Bounds and precision are constants that hdrhistogram accepts.
        let inner = Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("valid constant bounds");
        LatencyHistogram { inner }
    }

    /// Adds one latency.
    pub fn record(&mut self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, MAX_MICROS);
        self.inner.saturating_record(micros);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        // Same bounds on both sides, so adding cannot fail; saturate rather than panic anyway.
        let _ = self.inner.add(&other.inner);
    }

    /// Forgets all samples, keeping the memory.
    pub fn reset(&mut self) {
        self.inner.reset();
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.inner.len()
    }

    /// Whether no sample was recorded.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// The latency at quantile `q` (0..=1) in microseconds, 0 when empty.
    pub fn quantile_micros(&self, q: f64) -> u64 {
        if self.inner.is_empty() {
            return 0;
        }
        self.inner.value_at_quantile(q)
    }

    /// The latency at quantile `q`.
    pub fn quantile(&self, q: f64) -> Duration {
        Duration::from_micros(self.quantile_micros(q))
    }

    /// Min, mean, percentiles and max, in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        let ms = |us: u64| us as f64 / 1000.0;
        if self.inner.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            min: ms(self.inner.min()),
            mean: self.inner.mean() / 1000.0,
            p50: ms(self.quantile_micros(0.50)),
            p90: ms(self.quantile_micros(0.90)),
            p99: ms(self.quantile_micros(0.99)),
            p999: ms(self.quantile_micros(0.999)),
            max: ms(self.inner.max()),
        }
    }
}

/// A latency distribution in milliseconds, as written to JSON (all zero when there were no
/// responses).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Fastest response.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Slowest response.
    pub max: f64,
}

impl LatencySummary {
    /// The value of a named percentile (`50`, `90`, `99`, `99.9`) in ms, if it is one we keep.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        [(50.0, self.p50), (90.0, self.p90), (99.0, self.p99), (99.9, self.p999), (100.0, self.max)]
            .into_iter()
            .find(|(q, _)| *q == p)
            .map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_known_latencies() {
        let mut h = LatencyHistogram::new();
        // 1 ms .. 100 ms, one sample each: p50 = 50 ms, p90 = 90 ms, p99 = 99 ms.
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.summary();
        let close = |a: f64, b: f64| (a - b).abs() <= b * 0.001 + 0.001;
        assert!(close(s.p50, 50.0), "p50 {}", s.p50);
        assert!(close(s.p90, 90.0), "p90 {}", s.p90);
        assert!(close(s.p99, 99.0), "p99 {}", s.p99);
        assert!(close(s.min, 1.0) && close(s.max, 100.0));
        assert!(close(s.mean, 50.5), "mean {}", s.mean);
    }

    #[test]
    fn a_slow_tail_shows_in_p99_but_not_p50() {
        let mut h = LatencyHistogram::new();
        for _ in 0..980 {
            h.record(Duration::from_micros(200));
        }
        for _ in 0..20 {
            h.record(Duration::from_secs(2));
        }
        assert_eq!(h.quantile(0.5).as_micros(), 200);
        assert!(h.quantile(0.99) >= Duration::from_millis(1990));
    }

    #[test]
    fn merging_adds_samples() {
        let (mut a, mut b) = (LatencyHistogram::new(), LatencyHistogram::new());
        a.record(Duration::from_millis(1));
        b.record(Duration::from_millis(3));
        a.merge(&b);
        assert_eq!(a.len(), 2);
        assert!(a.summary().max >= 2.99);
    }

    #[test]
    fn empty_histogram_summarises_to_zero() {
        assert_eq!(LatencyHistogram::new().summary(), LatencySummary::default());
    }

    #[test]
    fn extreme_latencies_are_clamped_not_lost() {
        let mut h = LatencyHistogram::new();
        h.record(Duration::ZERO);
        h.record(Duration::from_secs(10 * 3600));
        assert_eq!(h.len(), 2);
    }
}
