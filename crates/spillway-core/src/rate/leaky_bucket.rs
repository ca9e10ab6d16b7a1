//! Leaky bucket with a queue: requests leave at a steady pace, one per interval; a request that
//! arrives while others are queued is told how long to wait, and refused when that wait would
//! exceed the configured maximum. Lock-free when shared.
//!
//! Why: a token bucket lets a burst through at once; some upstreams (a database, a payment
//! provider) want a smooth flow instead. Queueing by telling the caller to wait (instead of
//! holding the request here) keeps the algorithm pure; the tower layer does the sleeping.

use super::{rate_limited, CriticalityReserve, Rate, RateAlgorithm, RateConfigError};
use crate::clock::{duration_nanos, Instant};
use crate::criticality::Criticality;
use crate::decision::Decision;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A leaky bucket's rule: one request per interval, queue waits up to `max_wait`.
///
/// The state is the instant the next request may leave. A request for `n` permits at `now`
/// leaves at `start = max(next, now)` (so it waits `start − now`) and moves `next` to
/// `start + n·interval`. It is refused when its wait would exceed `max_wait` less the class's
/// reserve (the queue holds `max_wait / interval + 1` requests; the reserve is a fraction of
/// that, in whole requests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeakyBucketConfig {
    interval: u64,
    max_wait: u64,
    /// The longest wait each class may be given, by class index.
    limits: [u64; 4],
}

impl LeakyBucketConfig {
    /// A queue draining at `rate` where nobody waits more than `max_wait`, with the default
    /// [`CriticalityReserve`].
    pub fn new(rate: Rate, max_wait: Duration) -> LeakyBucketConfig {
        LeakyBucketConfig::with_reserve(rate, max_wait, CriticalityReserve::default())
    }

    /// Same, with per-class `reserve` (fractions of the queue length).
    pub fn with_reserve(
        rate: Rate,
        max_wait: Duration,
        reserve: CriticalityReserve,
    ) -> LeakyBucketConfig {
        let interval = rate.interval_nanos();
        let max_wait = duration_nanos(max_wait);
        let slots = max_wait / interval + 1;
        let limits = reserve.units(slots).map(|r| max_wait.saturating_sub(r * interval));
        LeakyBucketConfig { interval, max_wait, limits }
    }

    /// Like [`LeakyBucketConfig::with_reserve`], for callers that want a `Result` like the
    /// other rules (every rate and wait is valid here, so this never fails today).
    ///
    /// # Errors
    /// None at present; kept for symmetry with the other configurations.
    pub fn try_new(
        rate: Rate,
        max_wait: Duration,
        reserve: CriticalityReserve,
    ) -> Result<LeakyBucketConfig, RateConfigError> {
        Ok(LeakyBucketConfig::with_reserve(rate, max_wait, reserve))
    }

    /// The longest wait a request of `class` may be given.
    pub fn max_wait(&self, class: Criticality) -> Duration {
        Duration::from_nanos(self.limits[class.index()])
    }

    /// Requests the queue holds (the one leaving now included).
    pub fn queue_len(&self) -> u64 {
        self.max_wait / self.interval + 1
    }

    /// The new `next` and the wait, or the nanoseconds until the wait would fit.
    #[inline(always)]
    fn decide(
        &self,
        next: u64,
        now: u64,
        permits: u32,
        class: Criticality,
    ) -> Result<(u64, u64), u64> {
        let start = next.max(now);
        let wait = start - now;
        let limit = self.limits[class.index()];
        if wait > limit {
            return Err(wait - limit);
        }
        let cost = u64::from(permits).saturating_mul(self.interval);
        Ok((start.saturating_add(cost), wait))
    }
}

#[inline]
fn admit_after(wait: u64) -> Decision {
    if wait == 0 {
        Decision::Admit
    } else {
        Decision::Wait(Duration::from_nanos(wait))
    }
}

impl RateAlgorithm for LeakyBucketConfig {
    /// The instant the next request may leave, in nanoseconds.
    type State = u64;

    fn new_state(&self, _now: Instant) -> u64 {
        0
    }

    #[inline]
    fn check(&self, next: &mut u64, now: Instant, permits: u32, class: Criticality) -> Decision {
        match self.decide(*next, now.as_nanos(), permits, class) {
            Ok((new_next, wait)) => {
                *next = new_next;
                admit_after(wait)
            }
            Err(retry) => rate_limited(retry),
        }
    }

    fn is_idle(&self, next: &u64, now: Instant) -> bool {
        *next <= now.as_nanos()
    }

    fn eviction_rank(&self, next: &u64) -> u64 {
        *next
    }
}

/// A leaky bucket shared by reference across threads (one `AtomicU64`, compare-and-swap).
#[derive(Debug)]
pub struct LeakyBucket {
    config: LeakyBucketConfig,
    next: AtomicU64,
}

impl LeakyBucket {
    /// An empty queue draining at `rate`, waits capped at `max_wait`, default reserve.
    pub fn new(rate: Rate, max_wait: Duration) -> LeakyBucket {
        LeakyBucket::from_config(LeakyBucketConfig::new(rate, max_wait))
    }

    /// An empty queue with an explicit configuration.
    pub fn from_config(config: LeakyBucketConfig) -> LeakyBucket {
        LeakyBucket { config, next: AtomicU64::new(0) }
    }

    /// The rule.
    pub fn config(&self) -> &LeakyBucketConfig {
        &self.config
    }

    /// Queues one request of the default class: `Admit` (go now), `Wait(d)` (go after `d`; the
    /// slot is taken) or a rejection whose `retry_after` is when the wait would fit.
    #[inline]
    pub fn check(&self, now: Instant) -> Decision {
        self.check_n(now, 1, Criticality::Critical)
    }

    /// Queues `permits` permits' worth of work of `class`.
    #[inline]
    pub fn check_n(&self, now: Instant, permits: u32, class: Criticality) -> Decision {
        let now = now.as_nanos();
        let mut next = self.next.load(Ordering::Relaxed);
        loop {
            match self.config.decide(next, now, permits, class) {
                Ok((new_next, wait)) => match self.next.compare_exchange_weak(
                    next,
                    new_next,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return admit_after(wait),
                    Err(actual) => next = actual,
                },
                Err(retry) => return rate_limited(retry),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Clock, ManualClock};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn leaky_bucket_spaces_requests_by_the_interval() {
        let b = LeakyBucket::new(Rate::per_second(10), ms(1000));
        let now = Instant::ZERO;
        assert_eq!(b.check(now), Decision::Admit);
        assert_eq!(b.check(now), Decision::Wait(ms(100)));
        assert_eq!(b.check(now), Decision::Wait(ms(200)));
    }

    #[test]
    fn leaky_bucket_refuses_when_the_wait_would_exceed_max_wait() {
        let clock = ManualClock::new();
        let b = LeakyBucket::from_config(LeakyBucketConfig::with_reserve(
            Rate::per_second(10),
            ms(300),
            CriticalityReserve::NONE,
        ));
        for want in [0, 100, 200, 300] {
            assert!(b.check(clock.now()).is_admitted(), "wait {want} ms fits");
        }
        let r = b.check(clock.now()).rejection().expect("a 400 ms wait is too long");
        assert_eq!(r.retry_after, Some(ms(100)));
        clock.advance_ms(100);
        assert_eq!(b.check(clock.now()), Decision::Wait(ms(300)));
    }

    #[test]
    fn leaky_bucket_gives_sheddable_a_shorter_queue() {
        let b = LeakyBucket::new(Rate::per_second(10), ms(900));
        // Ten slots; sheddable may not use the last two (25 % rounded down).
        assert_eq!(b.config().max_wait(Criticality::Sheddable), ms(700));
        assert_eq!(b.config().max_wait(Criticality::Critical), ms(900));
        let now = Instant::ZERO;
        let shed =
            (0..10).filter(|_| b.check_n(now, 1, Criticality::Sheddable).is_admitted()).count();
        assert_eq!(shed, 8);
        assert!(b.check(now).is_admitted());
        assert!(b.check(now).is_admitted());
        assert!(!b.check(now).is_admitted());
    }

    #[test]
    fn leaky_bucket_drains_when_idle() {
        let clock = ManualClock::new();
        let b = LeakyBucket::new(Rate::per_second(10), ms(500));
        for _ in 0..5 {
            b.check(clock.now());
        }
        clock.advance_ms(10_000);
        assert_eq!(b.check(clock.now()), Decision::Admit);
        assert_eq!(b.check(clock.now()), Decision::Wait(ms(100)));
    }
}
