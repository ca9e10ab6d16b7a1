//! Warm-up (slow start): after a quiet period the limiter admits at `rate / cold_factor` and
//! speeds up to `rate` over the warm-up period as traffic comes back, like Guava's
//! `SmoothWarmingUp` and Sentinel's warm-up controller.
//!
//! Why: a service that has been idle has cold caches, closed connection pools and an
//! unwarmed JIT on the other side; letting the full rate hit it at once can knock it over.
//!
//! The model (Guava's): a store of permits fills while the limiter is idle, up to
//! `max_permits`. Taking a stored permit costs more time than a fresh one: between
//! `threshold_permits` and `max_permits` the cost rises linearly from the stable interval `T`
//! to `cold_factor × T`; below the threshold it costs `T`. With `P` the warm-up period,
//! `threshold = P / (2T)` and `max = threshold + 2P / (T + cold_factor·T)`, so going from cold
//! to warm takes exactly `P`. The store refills at `max_permits` per `P`. Each admitted request
//! pushes the next free instant forward by its cost; a request is admitted when the next free
//! instant is at most the tolerance (`(burst − 1 − reserve(class)) × T`) ahead of now.

use super::{rate_limited, CriticalityReserve, Limiter, Rate, RateAlgorithm, RateConfigError};
use crate::clock::{duration_nanos, Instant};
use crate::criticality::Criticality;
use crate::decision::Decision;
use std::time::Duration;

/// A warm-up limiter (one state behind `&mut`).
pub type WarmUp = Limiter<WarmUpConfig>;

/// The cold factor unless configured: start at a third of the rate (Guava and Sentinel).
pub const DEFAULT_COLD_FACTOR: f64 = 3.0;

/// The warm-up rule.
#[derive(Clone, Debug, PartialEq)]
pub struct WarmUpConfig {
    /// Stable interval `T`, nanoseconds.
    stable: f64,
    threshold: f64,
    max_permits: f64,
    /// Extra nanoseconds of cost per stored permit above the threshold.
    slope: f64,
    /// Nanoseconds for one stored permit to come back while idle.
    cool_down: f64,
    /// How far ahead of now the next free instant may be, per class.
    tolerance: [u64; 4],
}

/// A warm-up state: the next free instant and the stored permits.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct WarmUpState {
    next_free: u64,
    stored: f64,
}

impl WarmUpConfig {
    /// `rate` once warm, warming up over `warm_up` from `rate / 3`, no burst.
    ///
    /// # Panics
    /// When `warm_up` is zero (use [`WarmUpConfig::try_new`] for file values).
    pub fn new(rate: Rate, warm_up: Duration) -> WarmUpConfig {
        match WarmUpConfig::try_new(
            rate,
            1,
            warm_up,
            DEFAULT_COLD_FACTOR,
            CriticalityReserve::default(),
        ) {
            Ok(c) => c,
            Err(e) => panic!("invalid warm-up: {e}"),
        }
    }

    /// Every parameter: `rate` once warm, a tolerance of `burst` permits at the stable rate,
    /// warming over `warm_up` from `rate / cold_factor`, per-class `reserve` (fractions of the
    /// burst).
    ///
    /// # Errors
    /// [`RateConfigError::ZeroBurst`], or [`RateConfigError::BadWarmUp`] for a zero warm-up or
    /// a cold factor below 1.
    pub fn try_new(
        rate: Rate,
        burst: u32,
        warm_up: Duration,
        cold_factor: f64,
        reserve: CriticalityReserve,
    ) -> Result<WarmUpConfig, RateConfigError> {
        if burst == 0 {
            return Err(RateConfigError::ZeroBurst);
        }
        let period = duration_nanos(warm_up) as f64;
        if period <= 0.0 || !cold_factor.is_finite() || cold_factor < 1.0 {
            return Err(RateConfigError::BadWarmUp);
        }
        let stable = rate.interval_nanos() as f64;
        let cold = stable * cold_factor;
        let threshold = 0.5 * period / stable;
        let max_permits = threshold + 2.0 * period / (stable + cold);
        let slope =
            if max_permits > threshold { (cold - stable) / (max_permits - threshold) } else { 0.0 };
        let burst = u64::from(burst);
        let interval = rate.interval_nanos();
        let tolerance = reserve.units(burst).map(|r| (burst - 1 - r).saturating_mul(interval));
        Ok(WarmUpConfig {
            stable,
            threshold,
            max_permits,
            slope,
            cool_down: period / max_permits,
            tolerance,
        })
    }

    /// Permits stored when fully cold.
    pub fn max_permits(&self) -> f64 {
        self.max_permits
    }

    /// The interval between admissions when taking the stored permit at `stored`.
    pub fn interval_at(&self, stored: f64) -> Duration {
        let above = (stored - self.threshold).max(0.0);
        Duration::from_nanos((self.stable + above * self.slope) as u64)
    }

    /// Nanoseconds that taking `take` of `stored` stored permits costs (area under the
    /// interval curve).
    fn stored_cost(&self, stored: f64, take: f64) -> f64 {
        let above = stored - self.threshold;
        let mut cost = 0.0;
        let mut take = take;
        if above > 0.0 {
            let from_above = above.min(take);
            let high = self.stable + above * self.slope;
            let low = self.stable + (above - from_above) * self.slope;
            cost += from_above * (high + low) / 2.0;
            take -= from_above;
        }
        cost + take * self.stable
    }

    /// The state brought to `now`: stored permits refilled for the idle time since next free.
    #[inline]
    fn resync(&self, state: WarmUpState, now: u64) -> WarmUpState {
        if now > state.next_free {
            let idle = (now - state.next_free) as f64;
            let stored = (state.stored + idle / self.cool_down).min(self.max_permits);
            WarmUpState { next_free: now, stored }
        } else {
            state
        }
    }
}

impl RateAlgorithm for WarmUpConfig {
    type State = WarmUpState;

    /// Cold: a full store, free since forever.
    fn new_state(&self, _now: Instant) -> WarmUpState {
        WarmUpState { next_free: 0, stored: self.max_permits }
    }

    fn check(
        &self,
        state: &mut WarmUpState,
        now: Instant,
        permits: u32,
        class: Criticality,
    ) -> Decision {
        let now = now.as_nanos();
        let s = self.resync(*state, now);
        let tolerance = self.tolerance[class.index()];
        let ahead = s.next_free - now.min(s.next_free);
        if ahead > tolerance {
            return rate_limited(ahead - tolerance);
        }
        let n = f64::from(permits);
        let from_store = n.min(s.stored);
        let cost = self.stored_cost(s.stored, from_store) + (n - from_store) * self.stable;
        *state = WarmUpState {
            next_free: s.next_free.saturating_add(cost.ceil() as u64),
            stored: s.stored - from_store,
        };
        Decision::Admit
    }

    fn is_idle(&self, state: &WarmUpState, now: Instant) -> bool {
        let s = self.resync(*state, now.as_nanos());
        s.next_free <= now.as_nanos() && s.stored >= self.max_permits
    }

    fn eviction_rank(&self, state: &WarmUpState) -> u64 {
        state.next_free
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Clock, ManualClock};

    /// Admissions per second over `secs` seconds of requests every millisecond.
    fn admitted_per_second(w: &mut WarmUp, clock: &ManualClock, secs: usize) -> Vec<usize> {
        (0..secs)
            .map(|_| {
                (0..1000)
                    .filter(|_| {
                        clock.advance_ms(1);
                        w.check(clock.now()).is_admitted()
                    })
                    .count()
            })
            .collect()
    }

    #[test]
    fn warm_up_starts_at_a_third_of_the_rate_and_reaches_the_rate() {
        let clock = ManualClock::new();
        let config = WarmUpConfig::new(Rate::per_second(100), Duration::from_secs(10));
        let mut w = WarmUp::new(config, clock.now());
        let per_second = admitted_per_second(&mut w, &clock, 14);
        assert!((32..=36).contains(&per_second[0]), "cold: about 33/s, got {per_second:?}");
        assert!(
            per_second.windows(2).all(|p| p[1] + 1 >= p[0]),
            "never slows down: {per_second:?}"
        );
        assert!((98..=100).contains(&per_second[13]), "warm: 100/s, got {per_second:?}");
    }

    #[test]
    fn warm_up_cools_down_again_after_an_idle_period() {
        let clock = ManualClock::new();
        let config = WarmUpConfig::new(Rate::per_second(100), Duration::from_secs(10));
        let mut w = WarmUp::new(config.clone(), clock.now());
        admitted_per_second(&mut w, &clock, 15);
        clock.advance(Duration::from_secs(60));
        assert!(config.is_idle(w.state(), clock.now()), "a full store again");
        let cold = admitted_per_second(&mut w, &clock, 1);
        assert!(cold[0] <= 36, "{cold:?}");
    }

    #[test]
    fn warm_up_interval_goes_from_cold_to_stable() {
        let config = WarmUpConfig::new(Rate::per_second(100), Duration::from_secs(10));
        assert_eq!(config.interval_at(config.max_permits()), Duration::from_millis(30));
        assert_eq!(config.interval_at(0.0), Duration::from_millis(10));
    }

    #[test]
    fn warm_up_refusal_says_when_the_next_request_is_free() {
        let config = WarmUpConfig::new(Rate::per_second(100), Duration::from_secs(10));
        let mut w = WarmUp::new(config, Instant::ZERO);
        let start = Instant::from_nanos(1_000_000_000);
        assert!(w.check(start).is_admitted());
        let r = w.check(start).rejection().expect("cold interval not over");
        let wait = r.retry_after.unwrap_or_default();
        assert!(wait > Duration::from_millis(29) && wait <= Duration::from_millis(30), "{wait:?}");
    }

    #[test]
    fn warm_up_rejects_a_cold_factor_below_one() {
        let r = WarmUpConfig::try_new(
            Rate::per_second(1),
            1,
            Duration::from_secs(1),
            0.5,
            CriticalityReserve::NONE,
        );
        assert_eq!(r, Err(RateConfigError::BadWarmUp));
    }
}
