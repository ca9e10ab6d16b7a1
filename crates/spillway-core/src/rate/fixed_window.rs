//! Fixed window counter: at most `limit` requests per aligned window (e.g. per clock minute).
//!
//! Why: the simplest limit to explain and to audit ("100 per minute, counter resets on the
//! minute"), with 16 bytes of state. Its known weakness, up to twice the limit across a window
//! boundary, is why [`super::SlidingWindow`] exists.

use super::{rate_limited, CriticalityReserve, Limiter, RateAlgorithm, RateConfigError};
use crate::clock::{duration_nanos, Instant};
use crate::criticality::Criticality;
use crate::decision::Decision;
use std::time::Duration;

/// A fixed-window limiter (one state behind `&mut`).
pub type FixedWindow = Limiter<FixedWindowConfig>;

/// A fixed window's rule: `limit` permits per window of `window`, windows aligned on the
/// clock's origin; class `c` may count up to `limit − reserve(c)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FixedWindowConfig {
    window: u64,
    limit: u64,
    limits: [u64; 4],
}

/// A fixed window's state: which window it counts and how many permits it has counted.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct FixedWindowState {
    window: u64,
    count: u64,
}

impl FixedWindowConfig {
    /// `limit` per `window`, default reserve.
    ///
    /// # Panics
    /// When `limit` or `window` is zero (use [`FixedWindowConfig::try_new`] for file values).
    pub fn new(limit: u32, window: Duration) -> FixedWindowConfig {
        match FixedWindowConfig::try_new(limit, window, CriticalityReserve::default()) {
            Ok(c) => c,
            Err(e) => panic!("invalid fixed window: {e}"),
        }
    }

    /// `limit` per `window`, per-class `reserve` (fractions of the limit).
    ///
    /// # Errors
    /// [`RateConfigError::ZeroBurst`] for a zero limit, [`RateConfigError::BadWindow`] for a
    /// zero window.
    pub fn try_new(
        limit: u32,
        window: Duration,
        reserve: CriticalityReserve,
    ) -> Result<FixedWindowConfig, RateConfigError> {
        if limit == 0 {
            return Err(RateConfigError::ZeroBurst);
        }
        let window = duration_nanos(window);
        if window == 0 {
            return Err(RateConfigError::BadWindow);
        }
        let limit = u64::from(limit);
        let limits = reserve.units(limit).map(|r| limit - r);
        Ok(FixedWindowConfig { window, limit, limits })
    }

    /// The window length.
    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.window)
    }

    /// Permits per window.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl RateAlgorithm for FixedWindowConfig {
    type State = FixedWindowState;

    fn new_state(&self, _now: Instant) -> FixedWindowState {
        FixedWindowState::default()
    }

    #[inline]
    fn check(
        &self,
        state: &mut FixedWindowState,
        now: Instant,
        permits: u32,
        class: Criticality,
    ) -> Decision {
        let now = now.as_nanos();
        let window = now / self.window;
        // A clock that steps back stays in the latest window it has seen: going back must not
        // reset the count.
        let (window, count) =
            if window > state.window { (window, 0) } else { (state.window, state.count) };
        let permits = u64::from(permits);
        let limit = self.limits[class.index()];
        if count + permits <= limit {
            *state = FixedWindowState { window, count: count + permits };
            return Decision::Admit;
        }
        if permits > limit {
            return rate_limited(u64::MAX);
        }
        let next_window = (window + 1).saturating_mul(self.window);
        rate_limited(next_window.saturating_sub(now).max(1))
    }

    fn is_idle(&self, state: &FixedWindowState, now: Instant) -> bool {
        state.count == 0 || now.as_nanos() / self.window > state.window
    }

    fn eviction_rank(&self, state: &FixedWindowState) -> u64 {
        state.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Clock, ManualClock};

    #[test]
    fn fixed_window_counts_up_to_the_limit_then_resets_on_the_boundary() {
        let clock = ManualClock::new();
        let mut w =
            FixedWindow::new(FixedWindowConfig::new(3, Duration::from_secs(1)), clock.now());
        clock.advance_ms(400);
        for _ in 0..3 {
            assert!(w.check(clock.now()).is_admitted());
        }
        let r = w.check(clock.now()).rejection().expect("limit reached");
        assert_eq!(r.retry_after, Some(Duration::from_millis(600)), "next window starts at 1 s");
        clock.advance_ms(600);
        assert!(w.check(clock.now()).is_admitted());
    }

    #[test]
    fn fixed_window_keeps_sheddable_under_its_share() {
        let mut w =
            FixedWindow::new(FixedWindowConfig::new(8, Duration::from_secs(1)), Instant::ZERO);
        let now = Instant::ZERO;
        let shed =
            (0..8).filter(|_| w.check_n(now, 1, Criticality::Sheddable).is_admitted()).count();
        assert_eq!(shed, 6);
        assert!(w.check(now).is_admitted());
        assert!(w.check(now).is_admitted());
        assert!(!w.check(now).is_admitted());
    }

    #[test]
    fn fixed_window_clock_stepping_back_does_not_reset_the_count() {
        let clock = ManualClock::starting_at(Instant::from_nanos(5_000_000_000));
        let mut w =
            FixedWindow::new(FixedWindowConfig::new(1, Duration::from_secs(1)), clock.now());
        assert!(w.check(clock.now()).is_admitted());
        clock.set(Instant::from_nanos(3_000_000_000));
        assert!(!w.check(clock.now()).is_admitted());
    }
}
