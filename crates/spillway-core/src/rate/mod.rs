//! Rate limiters: token bucket, GCRA, leaky bucket with queueing, fixed and sliding windows,
//! warm-up, and keyed limiters over millions of keys.
//!
//! Every limiter is a pure rule over a small state: it takes `now` and answers a [`Decision`].
//! The rule is written once as a [`RateAlgorithm`] (a configuration that knows how to judge a
//! request against a state); single-key limiters hold one state ([`TokenBucket`], [`Gcra`] and
//! [`LeakyBucket`] in one atomic word, shareable across threads; [`Limiter`] behind `&mut`),
//! and [`KeyedLimiter`] holds one state per key in a sharded table. [`BatchedTokenBucket`] is a
//! token bucket for many worker threads: each borrows small batches of tokens from one shared
//! bucket, so a hot limiter is mostly checked on the worker's own cache line.
//!
//! Criticality: every rule keeps a per-class reserve ([`CriticalityReserve`]): a request of
//! class `c` may take permits only if what remains afterwards is at least `reserve(c)`. The
//! reserves never grow with the class, so at one moment a lower class is never admitted while
//! a higher one is refused. `Critical` (the default class) has no reserve unless configured,
//! so default traffic sees exactly the plain algorithm.

mod batched;
mod byte_key;
mod fixed_window;
mod gcra;
mod keyed;
mod leaky_bucket;
mod sliding_window;
mod token_bucket;
mod warm_up;

#[cfg(test)]
mod proptests;

pub use batched::{BatchedTokenBucket, BATCH_TTL_NANOS, BURST_SHARE, MAX_BATCH};
pub use byte_key::ByteKey;
pub use fixed_window::{FixedWindow, FixedWindowConfig, FixedWindowState};
pub use gcra::{Gcra, GcraConfig};
pub use keyed::{KeyedLimiter, KeyedLimiterBuilder, DEFAULT_MAX_KEYS, DEFAULT_SHARDS};
pub use leaky_bucket::{LeakyBucket, LeakyBucketConfig};
pub use sliding_window::{SlidingWindow, SlidingWindowConfig, SlidingWindowState, WindowLimit};
pub use token_bucket::{TokenBucket, TokenBucketConfig};
pub use warm_up::{WarmUp, WarmUpConfig, WarmUpState, DEFAULT_COLD_FACTOR};

use crate::clock::{duration_nanos, Instant};
use crate::criticality::Criticality;
use crate::decision::{Decision, RejectReason};
use std::time::Duration;

/// A sustained rate: `permits` every `period`, kept as the time one permit takes to refill.
///
/// The interval is rounded *up* to whole nanoseconds, so a limiter never runs faster than the
/// configured rate (at most 1 ns per permit slower).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rate {
    interval_nanos: u64,
}

impl Rate {
    /// `permits` every `period`.
    ///
    /// # Errors
    /// [`RateConfigError::ZeroRate`] when `permits` or `period` is zero.
    pub fn try_new(permits: u64, period: Duration) -> Result<Rate, RateConfigError> {
        let period = duration_nanos(period);
        if permits == 0 || period == 0 {
            return Err(RateConfigError::ZeroRate);
        }
        Ok(Rate { interval_nanos: period.div_ceil(permits).max(1) })
    }

    /// One permit every `interval`.
    ///
    /// # Errors
    /// [`RateConfigError::ZeroRate`] when `interval` is zero (an infinite rate).
    pub fn try_every(interval: Duration) -> Result<Rate, RateConfigError> {
        match duration_nanos(interval) {
            0 => Err(RateConfigError::ZeroRate),
            n => Ok(Rate { interval_nanos: n }),
        }
    }

    /// `n` permits per second.
    ///
    /// # Panics
    /// When `n` is zero: a configuration bug caught at construction (use [`Rate::try_new`] for
    /// rates read from a file).
    pub fn per_second(n: u64) -> Rate {
        Self::expect_valid(Rate::try_new(n, Duration::from_secs(1)))
    }

    /// `n` permits per minute. Panics like [`Rate::per_second`].
    pub fn per_minute(n: u64) -> Rate {
        Self::expect_valid(Rate::try_new(n, Duration::from_secs(60)))
    }

    /// `n` permits per hour. Panics like [`Rate::per_second`].
    pub fn per_hour(n: u64) -> Rate {
        Self::expect_valid(Rate::try_new(n, Duration::from_secs(3600)))
    }

    /// `n` permits per day. Panics like [`Rate::per_second`].
    pub fn per_day(n: u64) -> Rate {
        Self::expect_valid(Rate::try_new(n, Duration::from_secs(86_400)))
    }

    fn expect_valid(r: Result<Rate, RateConfigError>) -> Rate {
        match r {
            Ok(r) => r,
            Err(e) => panic!("invalid rate: {e}"),
        }
    }

    /// The time one permit takes to refill.
    #[inline]
    pub fn interval(self) -> Duration {
        Duration::from_nanos(self.interval_nanos)
    }

    /// The time one permit takes to refill, in nanoseconds (at least 1).
    #[inline]
    pub const fn interval_nanos(self) -> u64 {
        self.interval_nanos
    }

    /// Permits per second, for display and metrics.
    pub fn per_second_f64(self) -> f64 {
        1e9 / self.interval_nanos as f64
    }
}

/// A limiter's configuration is not usable.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RateConfigError {
    /// A rate of zero permits, or over a zero period.
    #[error("a rate needs at least one permit over a period longer than zero")]
    ZeroRate,
    /// A burst (bucket capacity, window limit) of zero: nothing could ever pass.
    #[error("a burst or window limit must be at least 1")]
    ZeroBurst,
    /// The capacity in time (burst × interval) does not fit in 584 years of nanoseconds.
    #[error("burst × interval overflows")]
    Overflow,
    /// A reserve fraction outside `[0, 1)`, a non-zero reserve for `CRITICAL_PLUS`, or reserves
    /// that grow with the class.
    #[error(
        "criticality reserves must be in [0, 1), zero for CRITICAL_PLUS and never grow with the class"
    )]
    BadReserve,
    /// A window of zero length, zero sub-windows, or sub-windows shorter than a nanosecond.
    #[error("a window needs a length, at least one sub-window, and sub-windows of at least 1 ns")]
    BadWindow,
    /// A sliding-window limiter with no window at all.
    #[error("a sliding-window limiter needs at least one window")]
    NoWindow,
    /// A warm-up cold factor below 1 or not finite, or a zero warm-up period.
    #[error("warm-up needs a cold factor >= 1 and a warm-up period longer than zero")]
    BadWarmUp,
}

/// How much of a limiter's capacity each criticality class must leave for the classes above it,
/// as fractions of the burst (or window limit, or queue).
///
/// A request of class `c` may take permits only if what remains after taking them is at least
/// `reserve(c) × burst` (rounded down to whole permits, and always leaving the class at least
/// one permit of a full bucket). Reserves never grow with the class and `CRITICAL_PLUS` has
/// none, so under shortage the lowest class is refused first.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct CriticalityReserve {
    fractions: [f64; 4],
}

impl CriticalityReserve {
    /// No reserve: every class sees the plain algorithm.
    pub const NONE: CriticalityReserve = CriticalityReserve { fractions: [0.0; 4] };

    /// Reserves by class, lowest class first: `[sheddable, sheddable_plus, critical,
    /// critical_plus]`.
    ///
    /// # Errors
    /// [`RateConfigError::BadReserve`] when a fraction is outside `[0, 1)`, `critical_plus` is
    /// not zero, or a higher class reserves more than a lower one.
    pub fn try_new(fractions: [f64; 4]) -> Result<CriticalityReserve, RateConfigError> {
        let in_range = fractions.iter().all(|f| f.is_finite() && (0.0..1.0).contains(f));
        let monotone = fractions.windows(2).all(|w| w[0] >= w[1]);
        if !in_range || !monotone || fractions[Criticality::CriticalPlus.index()] != 0.0 {
            return Err(RateConfigError::BadReserve);
        }
        Ok(CriticalityReserve { fractions })
    }

    /// The fraction reserved against `class`.
    #[inline]
    pub fn fraction(&self, class: Criticality) -> f64 {
        self.fractions[class.index()]
    }

    /// The reserve in whole units of a capacity of `capacity` units, by class index. Rounded
    /// down and capped at `capacity - 1`, so every class can use a full bucket.
    pub(crate) fn units(&self, capacity: u64) -> [u64; 4] {
        let max = capacity.saturating_sub(1);
        self.fractions.map(|f| ((f * capacity as f64).floor() as u64).min(max))
    }
}

impl Default for CriticalityReserve {
    /// `SHEDDABLE` may not use the last 25 % of the burst and `SHEDDABLE_PLUS` the last 10 %;
    /// `CRITICAL` and `CRITICAL_PLUS` may use all of it (so default traffic sees the plain
    /// algorithm).
    fn default() -> Self {
        CriticalityReserve { fractions: [0.25, 0.10, 0.0, 0.0] }
    }
}

/// A rate-limiting rule that judges requests against a per-key state. The state is plain data
/// (no locks, no atomics): [`Limiter`] holds one behind `&mut`, [`KeyedLimiter`] one per key.
pub trait RateAlgorithm: Send + Sync {
    /// What the rule remembers per key.
    type State: Send;

    /// The state of a key never seen (or idle long enough to be forgotten): a full bucket, an
    /// empty window.
    fn new_state(&self, now: Instant) -> Self::State;

    /// Judges a request for `permits` permits of class `class` at `now`, updating `state` only
    /// when it is admitted.
    fn check(
        &self,
        state: &mut Self::State,
        now: Instant,
        permits: u32,
        class: Criticality,
    ) -> Decision;

    /// True when `state` is indistinguishable from [`RateAlgorithm::new_state`] at `now`: the
    /// key may be forgotten without changing any future decision (free eviction).
    fn is_idle(&self, state: &Self::State, now: Instant) -> bool;

    /// An eviction priority when a keyed table is full: states with the lowest rank are
    /// dropped first. Ranks should be lowest for the states closest to idle.
    fn eviction_rank(&self, state: &Self::State) -> u64;
}

/// A single-key limiter over any [`RateAlgorithm`], for `&mut` use (wrap it in a mutex to
/// share it; the token bucket, GCRA and leaky bucket have lock-free shared forms).
#[derive(Debug)]
pub struct Limiter<A: RateAlgorithm> {
    algorithm: A,
    state: A::State,
}

impl<A: RateAlgorithm> Limiter<A> {
    /// A limiter in the rule's initial state at `now`.
    pub fn new(algorithm: A, now: Instant) -> Limiter<A> {
        let state = algorithm.new_state(now);
        Limiter { algorithm, state }
    }

    /// Judges one permit of the default class (`CRITICAL`).
    #[inline]
    pub fn check(&mut self, now: Instant) -> Decision {
        self.algorithm.check(&mut self.state, now, 1, Criticality::Critical)
    }

    /// Judges `permits` permits of class `class`.
    #[inline]
    pub fn check_n(&mut self, now: Instant, permits: u32, class: Criticality) -> Decision {
        self.algorithm.check(&mut self.state, now, permits, class)
    }

    /// The rule.
    pub fn algorithm(&self) -> &A {
        &self.algorithm
    }

    /// The current state.
    pub fn state(&self) -> &A::State {
        &self.state
    }
}

/// A rejection for a rate limit, retryable after `wait_nanos` (or never, for `u64::MAX`: the
/// request asks for more than the limiter can ever hold for its class).
#[inline]
pub(crate) fn rate_limited(wait_nanos: u64) -> Decision {
    let retry = (wait_nanos != u64::MAX).then(|| Duration::from_nanos(wait_nanos));
    Decision::reject(RejectReason::RateLimited, retry)
}
