//! GCRA (generic cell rate algorithm): one theoretical arrival time per key, judged with a
//! tolerance. Lock-free when shared: the whole state is one `AtomicU64`.
//!
//! Why GCRA: it is a token bucket written in time instead of tokens, so the state is a single
//! word (cheap to keep per key, cheap to update with one compare-and-swap, and the same shape
//! as the Redis script of the global limiter), with no refill loop and no floating point.

use super::{rate_limited, CriticalityReserve, Rate, RateAlgorithm, RateConfigError};
use crate::clock::Instant;
use crate::criticality::Criticality;
use crate::decision::Decision;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The GCRA rule: emission interval `T` (one permit per `T`), capacity `burst × T`, and a
/// per-class reserve. Its per-key state is the theoretical arrival time (TAT) in nanoseconds:
/// the instant at which the bucket will be full again (0 means "full since forever").
///
/// A request for `n` permits at `now` is admitted when
/// `max(tat, now) + n·T − now ≤ burst·T − reserve(class)·T`, and then `tat` moves to
/// `max(tat, now) + n·T`. With no reserve this is the textbook GCRA with tolerance
/// `τ = (burst − 1)·T`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcraConfig {
    interval: u64,
    burst: u64,
    /// `(burst − reserve(class))·T` per class index: how far ahead of `now` the TAT may go.
    limits: [u64; 4],
}

impl GcraConfig {
    /// `rate` sustained, up to `burst` at once, with the default [`CriticalityReserve`].
    ///
    /// # Panics
    /// When `burst` is zero or `burst × interval` overflows (configuration bugs caught at
    /// construction; use [`GcraConfig::try_new`] for values read from a file).
    pub fn new(rate: Rate, burst: u32) -> GcraConfig {
        match GcraConfig::try_new(rate, burst, CriticalityReserve::default()) {
            Ok(c) => c,
            Err(e) => panic!("invalid GCRA configuration: {e}"),
        }
    }

    /// `rate` sustained, up to `burst` at once, with per-class `reserve`.
    ///
    /// # Errors
    /// [`RateConfigError::ZeroBurst`] or [`RateConfigError::Overflow`].
    pub fn try_new(
        rate: Rate,
        burst: u32,
        reserve: CriticalityReserve,
    ) -> Result<GcraConfig, RateConfigError> {
        if burst == 0 {
            return Err(RateConfigError::ZeroBurst);
        }
        let burst = u64::from(burst);
        let interval = rate.interval_nanos();
        let capacity = burst.checked_mul(interval).ok_or(RateConfigError::Overflow)?;
        let units = reserve.units(burst);
        let limits = units.map(|r| capacity - r * interval);
        Ok(GcraConfig { interval, burst, limits })
    }

    /// The same rule with another per-class reserve.
    pub fn with_reserve(self, reserve: CriticalityReserve) -> GcraConfig {
        let capacity = self.burst * self.interval;
        let units = reserve.units(self.burst);
        GcraConfig { limits: units.map(|r| capacity - r * self.interval), ..self }
    }

    /// The emission interval `T`.
    pub fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval)
    }

    /// The burst (bucket capacity in permits).
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// The whole-permit reserve that `class` must leave.
    pub fn reserve_permits(&self, class: Criticality) -> u64 {
        (self.burst * self.interval - self.limits[class.index()]) / self.interval
    }

    /// Judges `permits` permits of `class` against `tat` at `now`: the new TAT when admitted,
    /// or the nanoseconds to wait until they would be (`u64::MAX`: never).
    #[inline(always)]
    pub(crate) fn decide(
        &self,
        tat: u64,
        now: u64,
        permits: u32,
        class: Criticality,
    ) -> Result<u64, u64> {
        let cost = u64::from(permits).saturating_mul(self.interval);
        let limit = self.limits[class.index()];
        let new_tat = tat.max(now).saturating_add(cost);
        let ahead = new_tat - now;
        if ahead <= limit {
            Ok(new_tat)
        } else if cost > limit {
            Err(u64::MAX)
        } else {
            Err(ahead - limit)
        }
    }

    /// Permits available to `class` at `now` for a key whose TAT is `tat`.
    pub(crate) fn available(&self, tat: u64, now: u64, class: Criticality) -> u64 {
        let used = tat.saturating_sub(now);
        self.limits[class.index()].saturating_sub(used) / self.interval
    }
}

impl RateAlgorithm for GcraConfig {
    type State = u64;

    #[inline]
    fn new_state(&self, _now: Instant) -> u64 {
        0
    }

    #[inline]
    fn check(&self, tat: &mut u64, now: Instant, permits: u32, class: Criticality) -> Decision {
        match self.decide(*tat, now.as_nanos(), permits, class) {
            Ok(new_tat) => {
                *tat = new_tat;
                Decision::Admit
            }
            Err(wait) => rate_limited(wait),
        }
    }

    #[inline]
    fn is_idle(&self, tat: &u64, now: Instant) -> bool {
        *tat <= now.as_nanos()
    }

    #[inline]
    fn eviction_rank(&self, tat: &u64) -> u64 {
        *tat
    }
}

/// A GCRA limiter shared by reference across threads: one `AtomicU64` updated with a
/// compare-and-swap loop (no lock, no allocation, no floating point on the request path).
#[derive(Debug)]
pub struct Gcra {
    config: GcraConfig,
    tat: AtomicU64,
}

impl Gcra {
    /// A limiter of `rate` with `burst`, starting full, with the default criticality reserve.
    /// Panics like [`GcraConfig::new`].
    pub fn new(rate: Rate, burst: u32) -> Gcra {
        Gcra::from_config(GcraConfig::new(rate, burst))
    }

    /// A limiter with an explicit configuration, starting full.
    pub fn from_config(config: GcraConfig) -> Gcra {
        Gcra { config, tat: AtomicU64::new(0) }
    }

    /// The rule.
    pub fn config(&self) -> &GcraConfig {
        &self.config
    }

    /// Judges one permit of the default class (`CRITICAL`).
    #[inline]
    pub fn check(&self, now: Instant) -> Decision {
        self.check_n(now, 1, Criticality::Critical)
    }

    /// Judges one permit of `class`.
    #[inline]
    pub fn check_class(&self, now: Instant, class: Criticality) -> Decision {
        self.check_n(now, 1, class)
    }

    /// Judges `permits` permits of `class`; on rejection nothing is taken.
    #[inline]
    pub fn check_n(&self, now: Instant, permits: u32, class: Criticality) -> Decision {
        let now = now.as_nanos();
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            match self.config.decide(tat, now, permits, class) {
                // Relaxed is enough: the TAT is the whole state and publishes nothing else;
                // the CAS alone orders updates of this one word.
                Ok(new_tat) => match self.tat.compare_exchange_weak(
                    tat,
                    new_tat,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Decision::Admit,
                    Err(actual) => tat = actual,
                },
                Err(wait) => return rate_limited(wait),
            }
        }
    }

    /// Permits `class` could take at `now`.
    pub fn available(&self, now: Instant, class: Criticality) -> u64 {
        self.config.available(self.tat.load(Ordering::Relaxed), now.as_nanos(), class)
    }

    /// The theoretical arrival time: when the bucket will be full again.
    pub fn tat(&self) -> Instant {
        Instant::from_nanos(self.tat.load(Ordering::Relaxed))
    }

    /// Forgets all use: the bucket is full again.
    pub fn reset(&self) {
        self.tat.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::RejectReason;
    use crate::Clock;
    use crate::ManualClock;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn gcra_admits_the_burst_then_one_per_interval() {
        let clock = ManualClock::new();
        let g = Gcra::new(Rate::per_second(10), 5);
        for _ in 0..5 {
            assert_eq!(g.check(clock.now()), Decision::Admit);
        }
        assert!(!g.check(clock.now()).is_admitted());
        clock.advance_ms(100);
        assert_eq!(g.check(clock.now()), Decision::Admit);
        assert!(!g.check(clock.now()).is_admitted());
    }

    #[test]
    fn gcra_rejection_says_when_one_permit_is_back() {
        let clock = ManualClock::new();
        let g = Gcra::new(Rate::per_second(10), 2);
        g.check(clock.now());
        clock.advance_ms(30);
        g.check(clock.now());
        let d = g.check(clock.now());
        let r = d.rejection().expect("third request is over the burst");
        assert_eq!(r.reason, RejectReason::RateLimited);
        // The first permit refills 100 ms after time 0; it is 30 ms now.
        assert_eq!(r.retry_after, Some(ms(70)));
        clock.advance(ms(69));
        assert!(!g.check(clock.now()).is_admitted());
        clock.advance(ms(1));
        assert!(g.check(clock.now()).is_admitted());
    }

    #[test]
    fn gcra_idle_time_never_stores_more_than_the_burst() {
        let clock = ManualClock::starting_at(Instant::from_nanos(1_000_000_000_000));
        let g = Gcra::new(Rate::per_second(100), 3);
        clock.advance(Duration::from_secs(3600));
        let admitted = (0..10).filter(|_| g.check(clock.now()).is_admitted()).count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn gcra_asking_for_more_than_the_burst_is_never_retryable() {
        let g = Gcra::new(Rate::per_second(10), 4);
        let d = g.check_n(Instant::ZERO, 5, Criticality::Critical);
        assert_eq!(d.rejection().map(|r| r.retry_after), Some(None));
        assert_eq!(g.available(Instant::ZERO, Criticality::Critical), 4);
    }

    #[test]
    fn gcra_sheddable_cannot_take_the_reserved_quarter() {
        let g = Gcra::new(Rate::per_second(1), 8);
        let now = Instant::ZERO;
        let sheddable =
            (0..8).filter(|_| g.check_class(now, Criticality::Sheddable).is_admitted()).count();
        assert_eq!(sheddable, 6, "25 % of 8 is kept for higher classes");
        assert!(g.check_class(now, Criticality::Critical).is_admitted());
        assert!(g.check_class(now, Criticality::CriticalPlus).is_admitted());
        assert!(!g.check_class(now, Criticality::CriticalPlus).is_admitted());
    }

    #[test]
    fn gcra_retry_after_for_a_reserved_class_waits_for_its_own_headroom() {
        let g = Gcra::from_config(
            GcraConfig::try_new(
                Rate::per_second(10),
                4,
                CriticalityReserve::try_new([0.5, 0.0, 0.0, 0.0]).expect("valid"),
            )
            .expect("valid"),
        );
        let now = Instant::ZERO;
        assert!(g.check_class(now, Criticality::Sheddable).is_admitted());
        assert!(g.check_class(now, Criticality::Sheddable).is_admitted());
        let r = g.check_class(now, Criticality::Sheddable).rejection().expect("reserve reached");
        assert_eq!(r.retry_after, Some(ms(100)));
        assert!(g.check_class(now, Criticality::Critical).is_admitted());
    }

    #[test]
    fn gcra_with_no_reserve_treats_every_class_alike() {
        let config = GcraConfig::new(Rate::per_second(1), 4).with_reserve(CriticalityReserve::NONE);
        let g = Gcra::from_config(config);
        let admitted = (0..5)
            .filter(|_| g.check_class(Instant::ZERO, Criticality::Sheddable).is_admitted())
            .count();
        assert_eq!(admitted, 4);
    }

    #[test]
    fn gcra_clock_stepping_back_admits_nothing_extra() {
        let clock = ManualClock::starting_at(Instant::from_nanos(10_000_000_000));
        let g = Gcra::new(Rate::per_second(10), 1);
        assert!(g.check(clock.now()).is_admitted());
        clock.set(Instant::from_nanos(5_000_000_000));
        assert!(!g.check(clock.now()).is_admitted());
    }
}
