//! Sliding window counter: at most `limit` requests in any window of the given length, counted
//! in sub-window buckets, with several windows on one key ("100/hour AND 1000/day").
//!
//! Why: fixed windows let twice the limit through across a boundary; a sliding window over
//! sub-window buckets closes that gap at a cost of one `u32` per bucket. A request is admitted
//! only if every window admits it, and a refused request is counted in none, so the windows
//! never disagree about what happened.
//!
//! Exactness: a window of length `W` cut into `k` buckets of width `W/k` counts the current
//! bucket and the `k` before it. That span always covers the last `W`, so no interval of length
//! `W` ever holds more than the limit (the price: a request may be counted for up to one extra
//! bucket). This ring keeps one head epoch and `k + 1` counters instead of a
//! [`crate::RollingWindow`] (an epoch per bucket): 4 bytes per bucket per key, and the bucket
//! ages that `retry_after` needs.

use super::{rate_limited, CriticalityReserve, Limiter, RateAlgorithm, RateConfigError};
use crate::clock::{duration_nanos, Instant};
use crate::criticality::Criticality;
use crate::decision::Decision;
use std::time::Duration;

/// A sliding-window limiter (one state behind `&mut`).
///
/// ```
/// use spillway_core::rate::{SlidingWindow, SlidingWindowConfig, WindowLimit};
/// use spillway_core::{Clock, ManualClock};
/// use std::time::Duration;
///
/// // 100 per hour AND 1000 per day, on one key.
/// let config = SlidingWindowConfig::new(&[
///     WindowLimit::new(100, Duration::from_secs(3600)).buckets(60),
///     WindowLimit::new(1000, Duration::from_secs(86_400)).buckets(24),
/// ]);
/// let clock = ManualClock::new();
/// let mut limiter = SlidingWindow::new(config, clock.now());
/// let admitted = (0..150).filter(|_| limiter.check(clock.now()).is_admitted()).count();
/// assert_eq!(admitted, 100);
/// ```
pub type SlidingWindow = Limiter<SlidingWindowConfig>;

/// One window: at most `limit` permits in any `window`, counted in `buckets` sub-windows.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct WindowLimit {
    limit: u32,
    window: Duration,
    buckets: u32,
}

impl WindowLimit {
    /// `limit` per `window`, counted in 10 sub-windows.
    pub fn new(limit: u32, window: Duration) -> WindowLimit {
        WindowLimit { limit, window, buckets: 10 }
    }

    /// The same window counted in `buckets` sub-windows (more: finer, more memory).
    pub fn buckets(self, buckets: u32) -> WindowLimit {
        WindowLimit { buckets, ..self }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Window {
    /// Bucket width in nanoseconds.
    width: u64,
    /// Buckets in the ring: sub-windows + 1.
    len: u64,
    /// Where this window's counters start in the state's counter array.
    offset: usize,
    limits: [u64; 4],
}

/// The sliding-window rule: one or more windows, each with its own limit, all of which must
/// admit a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlidingWindowConfig {
    windows: Box<[Window]>,
    counters: usize,
}

/// A sliding window's state: per window, the newest bucket's epoch and the bucket counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlidingWindowState {
    heads: Box<[u64]>,
    counts: Box<[u32]>,
}

impl SlidingWindowConfig {
    /// Windows that must all admit, default reserve.
    ///
    /// # Panics
    /// On an invalid window (use [`SlidingWindowConfig::try_new`] for file values).
    pub fn new(windows: &[WindowLimit]) -> SlidingWindowConfig {
        match SlidingWindowConfig::try_new(windows, CriticalityReserve::default()) {
            Ok(c) => c,
            Err(e) => panic!("invalid sliding window: {e}"),
        }
    }

    /// Windows that must all admit, per-class `reserve` (fractions of each window's limit).
    ///
    /// # Errors
    /// [`RateConfigError::NoWindow`], [`RateConfigError::ZeroBurst`] for a zero limit,
    /// [`RateConfigError::BadWindow`] for a zero window or bucket count, or buckets below 1 ns.
    pub fn try_new(
        windows: &[WindowLimit],
        reserve: CriticalityReserve,
    ) -> Result<SlidingWindowConfig, RateConfigError> {
        if windows.is_empty() {
            return Err(RateConfigError::NoWindow);
        }
        let mut offset = 0;
        let mut built = Vec::with_capacity(windows.len());
        for w in windows {
            if w.limit == 0 {
                return Err(RateConfigError::ZeroBurst);
            }
            let span = duration_nanos(w.window);
            if span == 0 || w.buckets == 0 || span < u64::from(w.buckets) {
                return Err(RateConfigError::BadWindow);
            }
            // Rounded up: the counted span only ever grows, which keeps the limit exact.
            let width = span.div_ceil(u64::from(w.buckets));
            let len = u64::from(w.buckets) + 1;
            let limit = u64::from(w.limit);
            built.push(Window {
                width,
                len,
                offset,
                limits: reserve.units(limit).map(|r| limit - r),
            });
            offset += len as usize;
        }
        Ok(SlidingWindowConfig { windows: built.into_boxed_slice(), counters: offset })
    }

    /// Per window: permits over the last span, or the wait until `permits` more would fit
    /// (`u64::MAX`: never).
    fn judge(
        &self,
        w: &Window,
        state: &SlidingWindowState,
        i: usize,
        now: u64,
        permits: u64,
        class: Criticality,
    ) -> Result<(), u64> {
        let limit = w.limits[class.index()];
        if permits > limit {
            return Err(u64::MAX);
        }
        let epoch = now / w.width;
        let head = state.heads[i];
        let counts = &state.counts[w.offset..w.offset + w.len as usize];
        // The window at `epoch` counts epochs `epoch - len + 1 ..= epoch`. A clock that went
        // back is treated as standing at the head.
        let current = epoch.max(head);
        let oldest = current.saturating_sub(w.len - 1);
        let count_at = |e: u64| -> u64 {
            if e > head || head - e >= w.len {
                0
            } else {
                u64::from(counts[(e % w.len) as usize])
            }
        };
        let total: u64 = (oldest..=current).map(count_at).sum();
        if total + permits <= limit {
            return Ok(());
        }
        // Wait for the oldest buckets to leave: bucket `e` is counted up to epoch
        // `e + len - 1` and leaves when epoch `e + len` begins.
        let mut remaining = total;
        for e in oldest..=current {
            remaining -= count_at(e);
            if remaining + permits <= limit {
                let at = (e + w.len).saturating_mul(w.width);
                return Err(at.saturating_sub(now).max(1));
            }
        }
        Err(u64::MAX)
    }
}

impl RateAlgorithm for SlidingWindowConfig {
    type State = SlidingWindowState;

    fn new_state(&self, _now: Instant) -> SlidingWindowState {
        SlidingWindowState {
            heads: vec![0; self.windows.len()].into_boxed_slice(),
            counts: vec![0; self.counters].into_boxed_slice(),
        }
    }

    fn check(
        &self,
        state: &mut SlidingWindowState,
        now: Instant,
        permits: u32,
        class: Criticality,
    ) -> Decision {
        let now = now.as_nanos();
        let permits_u64 = u64::from(permits);
        let mut wait = 0u64;
        let mut refused = false;
        for (i, w) in self.windows.iter().enumerate() {
            if let Err(w) = self.judge(w, state, i, now, permits_u64, class) {
                refused = true;
                wait = wait.max(w);
            }
        }
        if refused {
            return rate_limited(wait);
        }
        // Every window admits: count the request in all of them.
        for (i, w) in self.windows.iter().enumerate() {
            let epoch = now / w.width;
            let head = state.heads[i];
            let counts = &mut state.counts[w.offset..w.offset + w.len as usize];
            if epoch > head {
                // Clear the buckets between the old head and now (all of them after a long
                // pause), then move the head.
                let stale = (epoch - head).min(w.len);
                for e in (epoch + 1 - stale)..=epoch {
                    counts[(e % w.len) as usize] = 0;
                }
                state.heads[i] = epoch;
            }
            let slot = (state.heads[i] % w.len) as usize;
            counts[slot] = counts[slot].saturating_add(permits);
        }
        Decision::Admit
    }

    fn is_idle(&self, state: &SlidingWindowState, now: Instant) -> bool {
        let now = now.as_nanos();
        self.windows.iter().enumerate().all(|(i, w)| {
            now / w.width >= state.heads[i].saturating_add(w.len)
                || state.counts[w.offset..w.offset + w.len as usize].iter().all(|&c| c == 0)
        })
    }

    fn eviction_rank(&self, state: &SlidingWindowState) -> u64 {
        // The newest activity across windows, in nanoseconds.
        self.windows
            .iter()
            .enumerate()
            .map(|(i, w)| state.heads[i].saturating_mul(w.width))
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Clock, ManualClock};

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn sliding_window_never_lets_twice_the_limit_through_a_boundary() {
        let clock = ManualClock::new();
        let config = SlidingWindowConfig::new(&[WindowLimit::new(10, secs(10)).buckets(10)]);
        let mut w = SlidingWindow::new(config, clock.now());
        clock.advance(Duration::from_millis(9_500));
        let first = (0..20).filter(|_| w.check(clock.now()).is_admitted()).count();
        clock.advance(Duration::from_millis(1_000));
        let second = (0..20).filter(|_| w.check(clock.now()).is_admitted()).count();
        assert_eq!(first, 10);
        assert_eq!(second, 0, "a fixed window would have let 10 more through here");
    }

    #[test]
    fn sliding_window_retry_after_is_when_the_oldest_bucket_leaves() {
        let clock = ManualClock::new();
        let config = SlidingWindowConfig::new(&[WindowLimit::new(2, secs(10)).buckets(10)]);
        let mut w = SlidingWindow::new(config, clock.now());
        clock.advance(Duration::from_millis(500));
        assert!(w.check(clock.now()).is_admitted()); // bucket 0
        clock.advance(secs(3));
        assert!(w.check(clock.now()).is_admitted()); // bucket 3
        let r = w.check(clock.now()).rejection().expect("limit reached");
        // Bucket 0 stops counting when bucket 11 begins (the current + 10 before it).
        assert_eq!(r.retry_after, Some(Duration::from_millis(11_000 - 3_500)));
        clock.advance(r.retry_after.unwrap_or_default() - Duration::from_nanos(1));
        assert!(!w.check(clock.now()).is_admitted());
        clock.advance(Duration::from_nanos(1));
        assert!(w.check(clock.now()).is_admitted());
    }

    #[test]
    fn sliding_window_admits_only_when_every_window_admits_and_refusals_count_nowhere() {
        let clock = ManualClock::new();
        // 3 per second AND 5 per minute.
        let config = SlidingWindowConfig::try_new(
            &[WindowLimit::new(3, secs(1)), WindowLimit::new(5, secs(60)).buckets(60)],
            CriticalityReserve::NONE,
        )
        .expect("valid");
        let mut w = SlidingWindow::new(config, clock.now());
        let first = (0..10).filter(|_| w.check(clock.now()).is_admitted()).count();
        assert_eq!(first, 3, "the per-second window binds");
        clock.advance(secs(2));
        let second = (0..10).filter(|_| w.check(clock.now()).is_admitted()).count();
        assert_eq!(second, 2, "the per-minute window binds: refused requests were not counted");
        let r = w.check(clock.now()).rejection().expect("minute window full");
        assert!(r.retry_after.unwrap_or_default() > secs(55));
    }

    #[test]
    fn sliding_window_hour_and_day_limits_from_the_spec() {
        let clock = ManualClock::new();
        let config = SlidingWindowConfig::new(&[
            WindowLimit::new(100, secs(3600)).buckets(60),
            WindowLimit::new(1000, secs(86_400)).buckets(24),
        ]);
        let mut w = SlidingWindow::new(config, clock.now());
        let mut admitted = 0;
        for _hour in 0..24 {
            admitted += (0..200).filter(|_| w.check(clock.now()).is_admitted()).count();
            clock.advance(secs(3600 + 60));
        }
        assert_eq!(admitted, 1000, "ten full hours, then the day limit holds");
    }

    #[test]
    fn sliding_window_state_is_idle_once_every_bucket_has_left() {
        let clock = ManualClock::new();
        let config = SlidingWindowConfig::new(&[WindowLimit::new(5, secs(10))]);
        let mut w = SlidingWindow::new(config.clone(), clock.now());
        assert!(config.is_idle(w.state(), clock.now()));
        w.check(clock.now());
        assert!(!config.is_idle(w.state(), clock.now()));
        clock.advance(secs(10));
        assert!(!config.is_idle(w.state(), clock.now()), "still counted for one more bucket");
        clock.advance(secs(1));
        assert!(config.is_idle(w.state(), clock.now()));
    }

    #[test]
    fn sliding_window_rejects_bad_configuration() {
        let none = CriticalityReserve::NONE;
        assert_eq!(SlidingWindowConfig::try_new(&[], none), Err(RateConfigError::NoWindow));
        let zero = WindowLimit::new(0, secs(1));
        assert_eq!(SlidingWindowConfig::try_new(&[zero], none), Err(RateConfigError::ZeroBurst));
        let no_buckets = WindowLimit::new(1, secs(1)).buckets(0);
        assert_eq!(
            SlidingWindowConfig::try_new(&[no_buckets], none),
            Err(RateConfigError::BadWindow)
        );
    }
}
