//! The local token bucket of lease mode: enforces this instance's current grant with no store
//! call, and gives higher criticality first claim on the grant.
//!
//! Why not `spillway_core::rate::TokenBucket`: its rate is fixed when it is built, while a
//! lease's grant changes on every refresh and the tokens in hand must carry over (rebuilding
//! a full bucket each refresh would admit an extra burst every second). The criticality rule
//! is the core's [`CriticalityReserve`]: class `c` may take permits only if at least
//! `reserve(c) × capacity` tokens (whole tokens, at most `capacity − 1`) remain afterwards,
//! so under shortage `SHEDDABLE` is refused first and `CRITICAL_PLUS` last.

use spillway_core::rate::CriticalityReserve;
use spillway_core::{Criticality, Instant};
use std::time::Duration;

/// How the bucket judges requests right now.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Enforcement {
    /// A token bucket refilled at `rate` permits per second.
    Limit {
        /// Permits per second.
        rate: f64,
    },
    /// Admit everything (store failure policy `open`).
    Open,
    /// Refuse everything (store failure policy `closed`).
    Closed,
}

/// The outcome of [`LocalBucket::try_take`].
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum Take {
    /// The permits were taken.
    Admitted {
        /// Whole permits the same class could still take now (`None` when open).
        remaining: Option<u64>,
        /// Time until the bucket is full again (`None` when open).
        reset_after: Option<Duration>,
    },
    /// Not enough tokens for this class.
    Refused {
        /// When enough would be back at the current rate; `None` when never at this rate
        /// (a rate of zero, a request larger than the bucket, or a closed bucket).
        retry_after: Option<Duration>,
    },
}

/// A token bucket whose rate can change without losing its tokens.
#[derive(Clone, Debug)]
pub struct LocalBucket {
    enforcement: Enforcement,
    /// Depth of the bucket in time at the current rate.
    burst: Duration,
    reserve: CriticalityReserve,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl LocalBucket {
    /// A full bucket enforcing `enforcement`, `burst` deep (its capacity is
    /// `max(1, rate × burst)` tokens), with per-class `reserve`.
    pub fn new(
        enforcement: Enforcement,
        burst: Duration,
        reserve: CriticalityReserve,
        now: Instant,
    ) -> LocalBucket {
        let mut bucket =
            LocalBucket { enforcement, burst, reserve, capacity: 1.0, tokens: 0.0, last: now };
        bucket.capacity = bucket.capacity_for(enforcement);
        bucket.tokens = bucket.capacity;
        bucket
    }

    fn capacity_for(&self, enforcement: Enforcement) -> f64 {
        match enforcement {
            Enforcement::Limit { rate } => (rate * self.burst.as_secs_f64()).max(1.0),
            Enforcement::Open | Enforcement::Closed => self.capacity,
        }
    }

    fn rate(&self) -> f64 {
        match self.enforcement {
            Enforcement::Limit { rate } if rate.is_finite() && rate > 0.0 => rate,
            _ => 0.0,
        }
    }

    fn refill(&mut self, now: Instant) {
        // A clock step backwards counts as no time passing.
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate()).min(self.capacity);
        if now > self.last {
            self.last = now;
        }
    }

    /// Switches to `enforcement` at `now`. Tokens earned at the old rate up to `now` are kept
    /// (capped at the new capacity), so a rate change neither grants nor loses a burst.
    pub fn enforce(&mut self, enforcement: Enforcement, now: Instant) {
        self.refill(now);
        self.enforcement = enforcement;
        self.capacity = self.capacity_for(enforcement);
        self.tokens = self.tokens.min(self.capacity);
    }

    /// What the bucket enforces.
    pub fn enforcement(&self) -> Enforcement {
        self.enforcement
    }

    /// Whole tokens `class` must leave in the bucket.
    fn reserve_tokens(&self, class: Criticality) -> f64 {
        let capacity = self.capacity.floor();
        (self.reserve.fraction(class) * capacity).floor().min((capacity - 1.0).max(0.0))
    }

    /// Takes `permits` tokens for `class` at `now`, or none.
    pub fn try_take(&mut self, permits: u32, class: Criticality, now: Instant) -> Take {
        match self.enforcement {
            Enforcement::Open => return Take::Admitted { remaining: None, reset_after: None },
            Enforcement::Closed => return Take::Refused { retry_after: None },
            Enforcement::Limit { .. } => {}
        }
        self.refill(now);
        let reserve = self.reserve_tokens(class);
        let need = f64::from(permits) + reserve;
        // A hair of tolerance: tokens accrue in floating point.
        if self.tokens + 1e-9 >= need {
            self.tokens = (self.tokens - f64::from(permits)).max(0.0);
            let rate = self.rate();
            let reset_after =
                (rate > 0.0).then(|| Duration::from_secs_f64((self.capacity - self.tokens) / rate));
            return Take::Admitted {
                remaining: Some((self.tokens - reserve).max(0.0).floor() as u64),
                reset_after: reset_after.or(Some(Duration::ZERO)),
            };
        }
        let rate = self.rate();
        let retry_after = (rate > 0.0 && need <= self.capacity)
            .then(|| Duration::from_secs_f64((need - self.tokens) / rate));
        Take::Refused { retry_after }
    }

    /// Whole tokens `class` could take at `now` (the reserve deducted; `u64::MAX` when open,
    /// 0 when closed).
    pub fn available(&mut self, class: Criticality, now: Instant) -> u64 {
        match self.enforcement {
            Enforcement::Open => u64::MAX,
            Enforcement::Closed => 0,
            Enforcement::Limit { .. } => {
                self.refill(now);
                (self.tokens - self.reserve_tokens(class)).max(0.0).floor() as u64
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_core::{Clock, ManualClock};

    fn limit(rate: f64) -> Enforcement {
        Enforcement::Limit { rate }
    }

    #[test]
    fn bucket_starts_full_and_refills_at_the_rate() {
        let clock = ManualClock::new();
        let mut b = LocalBucket::new(
            limit(100.0),
            Duration::from_millis(100),
            CriticalityReserve::NONE,
            clock.now(),
        );
        let mut admitted = 0;
        while matches!(b.try_take(1, Criticality::Critical, clock.now()), Take::Admitted { .. }) {
            admitted += 1;
        }
        assert_eq!(admitted, 10, "100/s × 100 ms");
        let Take::Refused { retry_after } = b.try_take(1, Criticality::Critical, clock.now())
        else {
            panic!("empty")
        };
        assert_eq!(retry_after, Some(Duration::from_millis(10)));
        clock.advance_ms(50);
        assert_eq!(b.available(Criticality::Critical, clock.now()), 5);
    }

    #[test]
    fn admits_no_more_than_rate_times_time_plus_burst() {
        let clock = ManualClock::new();
        let mut b = LocalBucket::new(
            limit(250.0),
            Duration::from_millis(100),
            CriticalityReserve::NONE,
            clock.now(),
        );
        let mut admitted = 0u64;
        for _ in 0..10_000 {
            clock.advance(Duration::from_micros(500)); // offered 2000/s for 5 s
            if matches!(b.try_take(1, Criticality::Critical, clock.now()), Take::Admitted { .. }) {
                admitted += 1;
            }
        }
        assert!((1250..=1250 + 25).contains(&admitted), "{admitted}");
    }

    #[test]
    fn a_new_rate_keeps_the_tokens_in_hand() {
        let clock = ManualClock::new();
        let mut b = LocalBucket::new(
            limit(100.0),
            Duration::from_secs(1),
            CriticalityReserve::NONE,
            clock.now(),
        );
        for _ in 0..60 {
            assert!(matches!(
                b.try_take(1, Criticality::Critical, clock.now()),
                Take::Admitted { .. }
            ));
        }
        b.enforce(limit(1000.0), clock.now());
        assert_eq!(
            b.available(Criticality::Critical, clock.now()),
            40,
            "no free refill on a raise"
        );
        b.enforce(limit(10.0), clock.now());
        assert_eq!(b.available(Criticality::Critical, clock.now()), 10, "capped at the new depth");
        clock.advance_ms(100);
        assert_eq!(b.available(Criticality::Critical, clock.now()), 10);
    }

    #[test]
    fn critical_traffic_has_first_claim_on_the_grant() {
        let clock = ManualClock::new();
        let mut b = LocalBucket::new(
            limit(100.0),
            Duration::from_secs(1),
            CriticalityReserve::default(),
            clock.now(),
        );
        // SHEDDABLE must leave 25 of the 100 tokens.
        let mut sheddable = 0;
        while matches!(b.try_take(1, Criticality::Sheddable, clock.now()), Take::Admitted { .. }) {
            sheddable += 1;
        }
        assert_eq!(sheddable, 75);
        let mut critical = 0;
        while matches!(b.try_take(1, Criticality::Critical, clock.now()), Take::Admitted { .. }) {
            critical += 1;
        }
        assert_eq!(critical, 25, "the reserve is left for higher classes");
        // Under sustained shortage, refilled tokens go to CRITICAL before SHEDDABLE.
        clock.advance_ms(100);
        assert!(matches!(b.try_take(1, Criticality::Sheddable, clock.now()), Take::Refused { .. }));
        assert!(matches!(b.try_take(1, Criticality::Critical, clock.now()), Take::Admitted { .. }));
    }

    #[test]
    fn open_admits_and_closed_refuses_everything() {
        let now = Instant::ZERO;
        let mut b = LocalBucket::new(
            Enforcement::Open,
            Duration::from_millis(100),
            CriticalityReserve::NONE,
            now,
        );
        assert!(matches!(
            b.try_take(1_000_000, Criticality::Sheddable, now),
            Take::Admitted { .. }
        ));
        b.enforce(Enforcement::Closed, now);
        assert_eq!(
            b.try_take(1, Criticality::CriticalPlus, now),
            Take::Refused { retry_after: None }
        );
    }
}
