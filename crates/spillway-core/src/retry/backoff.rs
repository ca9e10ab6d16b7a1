//! Exponential backoff with jitter: how long to wait before the n-th retry.
//!
//! Why jitter: clients that failed together and back off by the same exponential schedule
//! retry together, in waves; randomising the wait spreads them out. The three classic
//! strategies (AWS Architecture Blog, "Exponential Backoff And Jitter") are offered; the
//! randomness is an argument, so the schedule is testable and the core stays pure.

use super::RetryConfigError;
use crate::clock::duration_nanos;
use std::time::Duration;

/// How the exponential wait is randomised. With `ceiling(n) = min(cap, base·2^n)`:
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Jitter {
    /// Exactly `ceiling(n)`: no randomness (for tests and single clients).
    None,
    /// Uniform in `[0, ceiling(n))`: the widest spread, the least total load.
    Full,
    /// `ceiling(n)/2` plus uniform in `[0, ceiling(n)/2)`: never retries almost at once.
    Equal,
    /// Uniform in `[base, 3·previous)`, capped: each wait grows from the previous one rather
    /// than from the attempt number.
    Decorrelated,
}

/// An exponential backoff schedule: `base`, doubling per attempt, never above `cap`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: Jitter,
}

impl Backoff {
    /// A schedule starting at `base` and capped at `cap`. `base` must be longer than zero and
    /// `cap` at least `base`.
    pub fn try_new(
        base: Duration,
        cap: Duration,
        jitter: Jitter,
    ) -> Result<Backoff, RetryConfigError> {
        if base.is_zero() {
            return Err(RetryConfigError::new("backoff.base", "must be longer than zero"));
        }
        if cap < base {
            return Err(RetryConfigError::new("backoff.cap", "must be at least backoff.base"));
        }
        Ok(Backoff { base, cap, jitter })
    }

    /// The first wait.
    pub fn base(&self) -> Duration {
        self.base
    }

    /// The longest wait.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The jitter strategy.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// `min(cap, base·2^attempt)`: the un-jittered wait before retry `attempt` (0 for the
    /// first retry).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let base = duration_nanos(self.base);
        let cap = duration_nanos(self.cap);
        let grown = if attempt >= 64 { u64::MAX } else { base.saturating_mul(1u64 << attempt) };
        Duration::from_nanos(grown.min(cap))
    }

    /// The wait before retry `attempt` (0 for the first retry). `previous` is the wait before
    /// the previous retry (only [`Jitter::Decorrelated`] uses it; pass `base` or zero for the
    /// first). `random` is uniform in `[0, 1)`; values outside are clamped. The result is never
    /// above `cap`.
    pub fn delay(&self, attempt: u32, previous: Duration, random: f64) -> Duration {
        let random = if random.is_nan() { 0.0 } else { random.clamp(0.0, 1.0) };
        let cap = duration_nanos(self.cap);
        let nanos = match self.jitter {
            Jitter::None => duration_nanos(self.ceiling(attempt)),
            Jitter::Full => scale(duration_nanos(self.ceiling(attempt)), random),
            Jitter::Equal => {
                let ceiling = duration_nanos(self.ceiling(attempt));
                let half = ceiling / 2;
                half + scale(ceiling - half, random)
            }
            Jitter::Decorrelated => {
                let base = duration_nanos(self.base);
                let upper = duration_nanos(previous).max(base).saturating_mul(3);
                base.saturating_add(scale(upper - base, random))
            }
        };
        Duration::from_nanos(nanos.min(cap))
    }
}

/// `floor(x · r)` for `r` in `[0, 1]`, never above `x` despite float rounding.
fn scale(x: u64, r: f64) -> u64 {
    ((x as f64 * r) as u64).min(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: Duration = Duration::from_millis(1);

    fn backoff(jitter: Jitter) -> Backoff {
        Backoff::try_new(100 * MS, 2_000 * MS, jitter).expect("valid")
    }

    #[test]
    fn waits_double_per_attempt_up_to_the_cap() {
        let b = backoff(Jitter::None);
        let waits: Vec<u128> =
            (0..7).map(|n| b.delay(n, Duration::ZERO, 0.5).as_millis()).collect();
        assert_eq!(waits, vec![100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(b.delay(u32::MAX, Duration::ZERO, 0.5), 2_000 * MS);
    }

    #[test]
    fn full_jitter_scales_the_whole_wait() {
        let b = backoff(Jitter::Full);
        assert_eq!(b.delay(2, Duration::ZERO, 0.0), Duration::ZERO);
        assert_eq!(b.delay(2, Duration::ZERO, 0.5), 200 * MS);
        assert_eq!(b.delay(2, Duration::ZERO, 0.25), 100 * MS);
    }

    #[test]
    fn equal_jitter_keeps_at_least_half_the_wait() {
        let b = backoff(Jitter::Equal);
        assert_eq!(b.delay(2, Duration::ZERO, 0.0), 200 * MS);
        assert_eq!(b.delay(2, Duration::ZERO, 0.5), 300 * MS);
    }

    #[test]
    fn decorrelated_jitter_grows_from_the_previous_wait() {
        let b = backoff(Jitter::Decorrelated);
        // First retry: uniform in [base, 3·base).
        assert_eq!(b.delay(0, Duration::ZERO, 0.0), 100 * MS);
        assert_eq!(b.delay(0, Duration::ZERO, 0.5), 200 * MS);
        // After a 500 ms wait: uniform in [100, 1500).
        assert_eq!(b.delay(5, 500 * MS, 0.5), 800 * MS);
        // Capped.
        assert_eq!(b.delay(5, 1_900 * MS, 0.9), 2_000 * MS);
    }

    #[test]
    fn zero_base_and_cap_below_base_are_refused() {
        assert!(Backoff::try_new(Duration::ZERO, MS, Jitter::Full).is_err());
        assert!(Backoff::try_new(2 * MS, MS, Jitter::Full).is_err());
    }

    fn jitter() -> impl Strategy<Value = Jitter> {
        prop_oneof![
            Just(Jitter::None),
            Just(Jitter::Full),
            Just(Jitter::Equal),
            Just(Jitter::Decorrelated)
        ]
    }

    proptest! {
        #[test]
        fn backoff_never_exceeds_the_cap(
            base_ns in 1u64..10_000_000_000,
            extra_ns in 0u64..100_000_000_000,
            attempt in 0u32..200,
            previous_ns in 0u64..u64::MAX,
            random in -1.0f64..2.0,
            jitter in jitter(),
        ) {
            let base = Duration::from_nanos(base_ns);
            let cap = Duration::from_nanos(base_ns + extra_ns);
            let b = Backoff::try_new(base, cap, jitter).expect("valid");
            let d = b.delay(attempt, Duration::from_nanos(previous_ns), random);
            prop_assert!(d <= cap);
        }

        #[test]
        fn full_jitter_stays_within_zero_and_base_times_two_to_the_n(
            base_ns in 1u64..10_000_000_000,
            attempt in 0u32..40,
            random in 0.0f64..1.0,
        ) {
            let base = Duration::from_nanos(base_ns);
            let b = Backoff::try_new(base, Duration::MAX, Jitter::Full).expect("valid");
            let d = b.delay(attempt, Duration::ZERO, random);
            let limit = u128::from(base_ns) << attempt;
            prop_assert!(d.as_nanos() <= limit);
        }
    }
}
