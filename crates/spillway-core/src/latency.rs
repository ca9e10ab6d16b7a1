//! Recent latency quantiles: a log-bucketed histogram over a rolling window, for decisions that
//! follow what a dependency does *now* — a hedged request is sent when the first try is slower
//! than the route's recent p95.
//!
//! Why log buckets: latencies span microseconds to seconds; buckets growing by 2^(1/4) (about
//! 19 %) cover 1 µs to over a minute in [`BUCKETS`] counters with a bounded relative error,
//! where fixed-width buckets would need thousands. A quantile is read as the upper bound of the
//! bucket it falls in, so it errs high (by at most one bucket): a hedge waits slightly too long
//! rather than too short, which never adds load.

use crate::clock::{duration_nanos, Instant};
use crate::window::{Tally, WindowTotals};
use std::time::Duration;

/// Buckets of the histogram: bucket `i` holds latencies up to `2^(i/4)` µs; the last one
/// holds everything longer (about 2^26 µs, 67 s).
pub const BUCKETS: usize = 105;

/// One window bucket's counts per latency bucket.
#[derive(Copy, Clone, Debug)]
struct Histogram([u32; BUCKETS]);

impl Default for Histogram {
    fn default() -> Self {
        Histogram([0; BUCKETS])
    }
}

impl Tally for Histogram {
    #[inline]
    fn absorb(&mut self, other: &Self) {
        for (a, b) in self.0.iter_mut().zip(other.0.iter()) {
            *a = a.saturating_add(*b);
        }
    }
}

/// The upper bound of latency bucket `i`, in microseconds.
fn upper_micros(i: usize) -> f64 {
    2f64.powf(i as f64 / 4.0)
}

/// The bucket of a latency of `micros` microseconds.
fn bucket_of(micros: f64) -> usize {
    if micros <= 1.0 {
        return 0;
    }
    let i = (micros.log2() * 4.0).ceil();
    (i as usize).min(BUCKETS - 1)
}

/// Why a [`LatencyWindow`] cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("latency window: {0}")]
pub struct LatencyWindowError(&'static str);

/// Latencies of the last `span`, by log bucket, with quantiles.
///
/// ```
/// use spillway_core::latency::LatencyWindow;
/// use spillway_core::Instant;
/// use std::time::Duration;
///
/// let mut w = LatencyWindow::try_new(Duration::from_secs(10), 10).unwrap();
/// for ms in 1..=100 {
///     w.record(Duration::from_millis(ms), Instant::ZERO);
/// }
/// let p95 = w.quantile(0.95, Instant::ZERO).unwrap();
/// assert!(p95 >= Duration::from_millis(95) && p95 <= Duration::from_millis(115));
/// ```
#[derive(Clone, Debug)]
pub struct LatencyWindow {
    window: WindowTotals<Histogram>,
}

impl LatencyWindow {
    /// A window over `span`, in `buckets` time buckets (each at least 1 ms).
    pub fn try_new(span: Duration, buckets: usize) -> Result<LatencyWindow, LatencyWindowError> {
        if buckets == 0 {
            return Err(LatencyWindowError("needs at least one bucket"));
        }
        if duration_nanos(span) / (buckets as u64) < 1_000_000 {
            return Err(LatencyWindowError("each bucket must span at least 1ms"));
        }
        Ok(LatencyWindow { window: WindowTotals::new(span, buckets) })
    }

    /// Records one latency at `now`.
    #[inline]
    pub fn record(&mut self, latency: Duration, now: Instant) {
        let micros = latency.as_secs_f64() * 1e6;
        let bucket = &mut self.window.current_mut(now).0[bucket_of(micros)];
        *bucket = bucket.saturating_add(1);
    }

    /// Latencies recorded over the window ending at `now`.
    pub fn count(&mut self, now: Instant) -> u64 {
        self.window.totals(now).0.iter().map(|n| u64::from(*n)).sum()
    }

    /// The `q` quantile (0 to 1) of the window ending at `now`, as the upper bound of its
    /// bucket; `None` when nothing was recorded.
    pub fn quantile(&mut self, q: f64, now: Instant) -> Option<Duration> {
        let totals = self.window.totals(now);
        let count: u64 = totals.0.iter().map(|n| u64::from(*n)).sum();
        if count == 0 {
            return None;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        // The rank of the quantile, 1-based: at least the first sample.
        let rank = ((q * count as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, n) in totals.0.iter().enumerate() {
            seen += u64::from(*n);
            if seen >= rank {
                return Some(Duration::from_nanos((upper_micros(i) * 1000.0) as u64));
            }
        }
        Some(Duration::from_nanos((upper_micros(BUCKETS - 1) * 1000.0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use proptest::prelude::*;

    fn window() -> LatencyWindow {
        LatencyWindow::try_new(Duration::from_secs(10), 10).expect("valid")
    }

    #[test]
    fn an_empty_window_has_no_quantile() {
        assert_eq!(window().quantile(0.5, Instant::ZERO), None);
    }

    #[test]
    fn a_tail_shows_in_the_high_quantiles_only() {
        let mut w = window();
        let now = Instant::ZERO;
        for _ in 0..95 {
            w.record(Duration::from_millis(10), now);
        }
        for _ in 0..5 {
            w.record(Duration::from_millis(200), now);
        }
        let p50 = w.quantile(0.5, now).expect("recorded");
        let p99 = w.quantile(0.99, now).expect("recorded");
        assert!(p50 >= Duration::from_millis(10) && p50 < Duration::from_millis(12), "{p50:?}");
        assert!(p99 >= Duration::from_millis(200) && p99 < Duration::from_millis(240), "{p99:?}");
    }

    #[test]
    fn old_latencies_leave_the_window() {
        let clock = ManualClock::new();
        let mut w = window();
        for _ in 0..100 {
            w.record(Duration::from_secs(1), clock.now());
        }
        clock.advance(Duration::from_secs(11));
        w.record(Duration::from_millis(5), clock.now());
        assert_eq!(w.count(clock.now()), 1);
        assert!(w.quantile(0.99, clock.now()).expect("one") < Duration::from_millis(6));
    }

    #[test]
    fn too_fine_a_window_is_refused() {
        assert!(LatencyWindow::try_new(Duration::from_millis(5), 10).is_err());
        assert!(LatencyWindow::try_new(Duration::from_secs(1), 0).is_err());
    }

    proptest! {
        #[test]
        fn a_quantile_errs_high_by_at_most_one_bucket(
            samples in proptest::collection::vec(1u64..50_000_000, 1..400),
            q in 0.01f64..1.0,
        ) {
            let mut w = window();
            for s in &samples {
                w.record(Duration::from_nanos(*s * 1000 / 1000), Instant::ZERO);
            }
            let mut sorted = samples.clone();
            sorted.sort_unstable();
            let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
            let exact = Duration::from_nanos(sorted[rank - 1]);
            let got = w.quantile(q, Instant::ZERO).expect("recorded");
            prop_assert!(got + Duration::from_nanos(1000) >= exact, "{got:?} < {exact:?}");
            prop_assert!(got.as_secs_f64() <= exact.as_secs_f64().max(1e-6) * 1.19 + 1e-6,
                "{got:?} too far above {exact:?}");
        }
    }
}
