//! Running totals over a [`RollingWindow`]: the sum of the completed buckets is cached and
//! recomputed only when time crosses into a new bucket, so reading "how many in the last
//! N seconds" costs one bucket read instead of a walk over every bucket.
//!
//! Why: the SRE throttle reads its totals on every request; walking 100 buckets each time
//! would cost more than the whole decision is allowed to (see BENCHMARKS.md).

use super::RollingWindow;
use crate::clock::{duration_nanos, Instant};
use std::time::Duration;

/// A per-bucket record whose values can be added up.
pub(crate) trait Tally: Copy + Default {
    /// Adds `other` into `self` (saturating).
    fn absorb(&mut self, other: &Self);
}

/// A rolling window with cached totals of its completed buckets.
#[derive(Clone, Debug)]
pub(crate) struct WindowTotals<T> {
    window: RollingWindow<T>,
    width_nanos: u64,
    /// Sum of the completed buckets as of `cached_epoch`.
    completed: T,
    /// The bucket (time / width) for which `completed` was computed; `u64::MAX` when stale.
    cached_epoch: u64,
}

impl<T: Tally> WindowTotals<T> {
    /// A window of `buckets` buckets spanning `span` in all.
    ///
    /// # Panics
    /// When `buckets` is zero or a bucket would be shorter than a nanosecond: callers validate
    /// their configuration before building one.
    pub(crate) fn new(span: Duration, buckets: usize) -> WindowTotals<T> {
        let width = Duration::from_nanos(duration_nanos(span) / buckets.max(1) as u64);
        let window = RollingWindow::new(buckets, width);
        WindowTotals {
            width_nanos: duration_nanos(window.bucket_width()),
            window,
            completed: T::default(),
            cached_epoch: u64::MAX,
        }
    }

    #[inline]
    fn refresh(&mut self, now: Instant) {
        let epoch = now.as_nanos() / self.width_nanos;
        if epoch != self.cached_epoch {
            let mut sum = T::default();
            for bucket in self.window.iter_completed(now) {
                sum.absorb(bucket);
            }
            self.completed = sum;
            self.cached_epoch = epoch;
        }
    }

    /// The bucket `now` falls in, for recording.
    #[inline]
    pub(crate) fn current_mut(&mut self, now: Instant) -> &mut T {
        self.refresh(now);
        self.window.current_mut(now)
    }

    /// The totals over the window ending at `now`, current bucket included.
    #[inline]
    pub(crate) fn totals(&mut self, now: Instant) -> T {
        self.refresh(now);
        let mut sum = self.completed;
        sum.absorb(self.window.current_mut(now));
        sum
    }

    /// Forgets everything recorded.
    pub(crate) fn clear(&mut self) {
        self.window.clear();
        self.completed = T::default();
        self.cached_epoch = u64::MAX;
    }

    /// The whole window's span.
    pub(crate) fn span(&self) -> Duration {
        self.window.span()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Copy, Clone, Default, Debug, PartialEq)]
    struct Count(u64);
    impl Tally for Count {
        fn absorb(&mut self, other: &Self) {
            self.0 = self.0.saturating_add(other.0);
        }
    }

    fn at_ms(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    #[test]
    fn cached_totals_match_a_fresh_sum_as_buckets_expire() {
        let mut w: WindowTotals<Count> = WindowTotals::new(Duration::from_secs(1), 10);
        for ms in (0..3000).step_by(37) {
            w.current_mut(at_ms(ms)).0 += 1;
            // Events at times t in (ms - 1000 rounded to a bucket, ms] are inside.
            let first_bucket = (ms / 100).saturating_sub(9) * 100;
            let expected = (0..=ms).step_by(37).filter(|t| *t >= first_bucket).count() as u64;
            assert_eq!(w.totals(at_ms(ms)).0, expected, "at {ms} ms");
        }
        assert_eq!(w.totals(at_ms(10_000)).0, 0);
    }

    #[test]
    fn clear_forgets_the_cached_sum() {
        let mut w: WindowTotals<Count> = WindowTotals::new(Duration::from_secs(1), 10);
        w.current_mut(at_ms(0)).0 += 4;
        w.current_mut(at_ms(150)).0 += 1;
        assert_eq!(w.totals(at_ms(150)).0, 5);
        w.clear();
        assert_eq!(w.totals(at_ms(150)).0, 0);
    }
}
