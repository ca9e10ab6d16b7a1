//! Token bucket: `burst` tokens, refilled continuously at `rate`; a request takes tokens or is
//! refused. Lock-free when shared.
//!
//! Why it is built on the GCRA rule: a continuously refilled bucket is fully described by the
//! instant it will be full again, so keeping that one word (instead of a token count and a
//! last-refill time) gives the same decisions with a single compare-and-swap and no floating
//! point. This type speaks in tokens (capacity, available tokens, acquire `n`); [`super::Gcra`]
//! speaks in arrival times.

use super::gcra::GcraConfig;
use super::{CriticalityReserve, Rate, RateAlgorithm, RateConfigError};
use crate::clock::Instant;
use crate::criticality::Criticality;
use crate::decision::Decision;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A token bucket's rule: refill `rate`, capacity `burst` tokens, per-class reserve.
///
/// Class `c` may take `n` tokens only if at least `reserve(c)` tokens remain afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBucketConfig {
    rule: GcraConfig,
}

impl TokenBucketConfig {
    /// A bucket of `burst` tokens refilled at `rate`, with the default [`CriticalityReserve`].
    ///
    /// # Panics
    /// When `burst` is zero or `burst × interval` overflows (use
    /// [`TokenBucketConfig::try_new`] for values read from a file).
    pub fn new(rate: Rate, burst: u32) -> TokenBucketConfig {
        TokenBucketConfig { rule: GcraConfig::new(rate, burst) }
    }

    /// A bucket of `burst` tokens refilled at `rate`, with per-class `reserve`.
    ///
    /// # Errors
    /// [`RateConfigError::ZeroBurst`] or [`RateConfigError::Overflow`].
    pub fn try_new(
        rate: Rate,
        burst: u32,
        reserve: CriticalityReserve,
    ) -> Result<TokenBucketConfig, RateConfigError> {
        Ok(TokenBucketConfig { rule: GcraConfig::try_new(rate, burst, reserve)? })
    }

    /// The same bucket with another per-class reserve.
    pub fn with_reserve(self, reserve: CriticalityReserve) -> TokenBucketConfig {
        TokenBucketConfig { rule: self.rule.with_reserve(reserve) }
    }

    /// Capacity in tokens.
    pub fn capacity(&self) -> u64 {
        self.rule.burst()
    }

    /// Time for one token to refill.
    pub fn refill_interval(&self) -> Duration {
        self.rule.interval()
    }

    /// Tokens `class` must leave in the bucket.
    pub fn reserve_tokens(&self, class: Criticality) -> u64 {
        self.rule.reserve_permits(class)
    }

    /// The GCRA rule the bucket is written in (the batched bucket judges with it directly).
    pub(crate) fn rule(&self) -> &GcraConfig {
        &self.rule
    }
}

impl RateAlgorithm for TokenBucketConfig {
    /// The instant the bucket will be full again, in nanoseconds.
    type State = u64;

    #[inline]
    fn new_state(&self, now: Instant) -> u64 {
        self.rule.new_state(now)
    }

    #[inline]
    fn check(&self, state: &mut u64, now: Instant, permits: u32, class: Criticality) -> Decision {
        self.rule.check(state, now, permits, class)
    }

    #[inline]
    fn is_idle(&self, state: &u64, now: Instant) -> bool {
        self.rule.is_idle(state, now)
    }

    #[inline]
    fn eviction_rank(&self, state: &u64) -> u64 {
        self.rule.eviction_rank(state)
    }
}

/// A token bucket shared by reference across threads: the instant the bucket is full again,
/// in one `AtomicU64`, updated with a compare-and-swap loop.
///
/// ```
/// use spillway_core::rate::{Rate, TokenBucket};
/// use spillway_core::{Clock, Criticality, ManualClock, RejectReason};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let bucket = TokenBucket::new(Rate::per_second(10), 2); // 10/s, bursts of 2
/// assert!(bucket.check(clock.now()).is_admitted());
/// assert!(bucket.check(clock.now()).is_admitted());
/// let refused = bucket.check(clock.now()).rejection().expect("burst used up");
/// assert_eq!(refused.reason, RejectReason::RateLimited);
/// assert_eq!(refused.retry_after, Some(Duration::from_millis(100)));
/// // Sheddable traffic must leave a quarter of the burst to the classes above it.
/// clock.advance_ms(200);
/// assert!(bucket.check_class(clock.now(), Criticality::Sheddable).is_admitted());
/// ```
#[derive(Debug)]
pub struct TokenBucket {
    config: TokenBucketConfig,
    full_at: AtomicU64,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilled at `rate`, with the default criticality
    /// reserve. Panics like [`TokenBucketConfig::new`].
    pub fn new(rate: Rate, burst: u32) -> TokenBucket {
        TokenBucket::from_config(TokenBucketConfig::new(rate, burst))
    }

    /// A full bucket with an explicit configuration.
    pub fn from_config(config: TokenBucketConfig) -> TokenBucket {
        TokenBucket { config, full_at: AtomicU64::new(0) }
    }

    /// The rule.
    pub fn config(&self) -> &TokenBucketConfig {
        &self.config
    }

    /// Takes one token for the default class (`CRITICAL`).
    #[inline]
    pub fn check(&self, now: Instant) -> Decision {
        self.try_acquire(now, 1, Criticality::Critical)
    }

    /// Takes one token for `class`.
    #[inline]
    pub fn check_class(&self, now: Instant, class: Criticality) -> Decision {
        self.try_acquire(now, 1, class)
    }

    /// Takes `tokens` tokens for `class`, or none of them. A rejection's `retry_after` is when
    /// enough tokens will be back (absent when `tokens` exceeds what `class` may ever hold).
    #[inline]
    pub fn try_acquire(&self, now: Instant, tokens: u32, class: Criticality) -> Decision {
        let now = now.as_nanos();
        let mut full_at = self.full_at.load(Ordering::Relaxed);
        loop {
            match self.config.rule.decide(full_at, now, tokens, class) {
                // Relaxed: the word is the whole state and publishes nothing else.
                Ok(next) => match self.full_at.compare_exchange_weak(
                    full_at,
                    next,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Decision::Admit,
                    Err(actual) => full_at = actual,
                },
                Err(wait) => return super::rate_limited(wait),
            }
        }
    }

    /// Tokens `class` could take at `now` (the reserve already deducted).
    pub fn available(&self, now: Instant, class: Criticality) -> u64 {
        self.config.rule.available(self.full_at.load(Ordering::Relaxed), now.as_nanos(), class)
    }

    /// Refills the bucket completely.
    pub fn reset(&self) {
        self.full_at.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Clock, ManualClock};

    #[test]
    fn token_bucket_starts_full_and_refills_at_the_rate() {
        let clock = ManualClock::new();
        let b = TokenBucket::new(Rate::per_second(4), 2);
        assert_eq!(b.available(clock.now(), Criticality::Critical), 2);
        assert!(b.check(clock.now()).is_admitted());
        assert!(b.check(clock.now()).is_admitted());
        let r = b.check(clock.now()).rejection().expect("empty");
        assert_eq!(r.retry_after, Some(Duration::from_millis(250)));
        clock.advance_ms(250);
        assert_eq!(b.available(clock.now(), Criticality::Critical), 1);
        assert!(b.check(clock.now()).is_admitted());
    }

    #[test]
    fn token_bucket_takes_all_or_none_of_a_multi_token_request() {
        let b = TokenBucket::new(Rate::per_second(1), 5);
        let now = Instant::ZERO;
        assert!(b.try_acquire(now, 3, Criticality::Critical).is_admitted());
        let r = b.try_acquire(now, 3, Criticality::Critical).rejection().expect("only 2 left");
        assert_eq!(r.retry_after, Some(Duration::from_secs(1)));
        assert_eq!(b.available(now, Criticality::Critical), 2, "the refused request took none");
    }

    #[test]
    fn token_bucket_reserve_keeps_tokens_for_higher_classes() {
        let b = TokenBucket::new(Rate::per_second(1), 10);
        let now = Instant::ZERO;
        assert_eq!(b.config().reserve_tokens(Criticality::Sheddable), 2);
        assert_eq!(b.config().reserve_tokens(Criticality::SheddablePlus), 1);
        assert_eq!(b.config().reserve_tokens(Criticality::Critical), 0);
        let shed =
            (0..10).filter(|_| b.check_class(now, Criticality::Sheddable).is_admitted()).count();
        assert_eq!(shed, 8);
        assert!(b.check_class(now, Criticality::SheddablePlus).is_admitted());
        assert!(!b.check_class(now, Criticality::SheddablePlus).is_admitted());
        assert!(b.check_class(now, Criticality::Critical).is_admitted());
        assert!(!b.check_class(now, Criticality::CriticalPlus).is_admitted());
    }

    #[test]
    fn token_bucket_reset_refills() {
        let b = TokenBucket::new(Rate::per_hour(1), 1);
        assert!(b.check(Instant::ZERO).is_admitted());
        assert!(!b.check(Instant::ZERO).is_admitted());
        b.reset();
        assert!(b.check(Instant::ZERO).is_admitted());
    }
}
