//! AIMD concurrency limit: additive increase while requests succeed quickly, multiplicative
//! decrease when one is dropped or too slow — TCP Reno's rule applied to requests in flight.
//!
//! Why: it needs no latency model, only a drop signal (an overload error, a timeout, a 503 from
//! downstream) and a latency threshold, so it suits backends whose overload shows as errors.
//! Like TCP, it backs off at most once per round: a drop of a request that started before the
//! last decrease says nothing new (it was sent under the old, larger limit) and is ignored, so a
//! burst of timeouts does not collapse the limit to its minimum.

use super::{check_bounds, LimitAlgorithm, LimitConfigError};
use crate::clock::Instant;
use std::time::Duration;

/// Settings of an [`Aimd`] limit.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct AimdConfig {
    /// Starting limit (default 20).
    pub initial_limit: u64,
    /// Floor (default 1).
    pub min_limit: u64,
    /// Ceiling (default 1000).
    pub max_limit: u64,
    /// Factor applied on a decrease, in `(0, 1)` (default 0.9, Netflix's).
    pub backoff_ratio: f64,
    /// A success slower than this counts as a drop (default 5 s, Netflix's timeout); must be
    /// longer than zero.
    pub latency_threshold: Duration,
}

impl Default for AimdConfig {
    fn default() -> Self {
        AimdConfig {
            initial_limit: 20,
            min_limit: 1,
            max_limit: 1000,
            backoff_ratio: 0.9,
            latency_threshold: Duration::from_secs(5),
        }
    }
}

/// The AIMD limit algorithm.
#[derive(Clone, Debug)]
pub struct Aimd {
    config: AimdConfig,
    limit: f64,
    last_decrease: Option<Instant>,
}

impl Aimd {
    /// A limit at `config.initial_limit`.
    pub fn try_new(config: AimdConfig) -> Result<Aimd, LimitConfigError> {
        check_bounds(config.min_limit, config.initial_limit, config.max_limit)?;
        if !(config.backoff_ratio > 0.0 && config.backoff_ratio < 1.0) {
            return Err(LimitConfigError::BadRatio("backoff_ratio"));
        }
        if config.latency_threshold.is_zero() {
            // Every sample would count as a drop: the limit could only fall.
            return Err(LimitConfigError::BadRatio("latency_threshold"));
        }
        Ok(Aimd { config, limit: config.initial_limit as f64, last_decrease: None })
    }
}

impl LimitAlgorithm for Aimd {
    fn on_sample(&mut self, rtt: Duration, inflight: u64, dropped: bool, now: Instant) {
        if dropped || rtt > self.config.latency_threshold {
            let started = now - rtt;
            if self.last_decrease.is_some_and(|at| started < at) {
                return; // sent under the limit we already cut
            }
            self.limit = (self.limit * self.config.backoff_ratio).floor();
            self.last_decrease = Some(now);
        } else if (inflight as f64) * 2.0 >= self.limit {
            // Grow only when the limit is actually in use, not when the caller is idle.
            self.limit += 1.0;
        }
        self.limit = self.limit.clamp(self.config.min_limit as f64, self.config.max_limit as f64);
    }

    fn limit(&self) -> u64 {
        self.limit as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    fn aimd() -> Aimd {
        Aimd::try_new(AimdConfig::default()).expect("default config is valid")
    }

    #[test]
    fn limit_rises_by_one_per_fast_success_under_load() {
        let mut a = aimd();
        for i in 0..30 {
            a.on_sample(Duration::from_millis(10), a.limit(), false, ms(i));
        }
        assert_eq!(a.limit(), 50);
    }

    #[test]
    fn limit_does_not_grow_while_the_caller_uses_less_than_half() {
        let mut a = aimd();
        for i in 0..30 {
            a.on_sample(Duration::from_millis(10), 3, false, ms(i));
        }
        assert_eq!(a.limit(), 20);
    }

    #[test]
    fn a_drop_cuts_the_limit_by_the_backoff_ratio() {
        let mut a = aimd();
        a.on_sample(Duration::from_millis(10), 20, true, ms(100));
        assert_eq!(a.limit(), 18);
    }

    #[test]
    fn a_success_slower_than_the_threshold_counts_as_a_drop() {
        let mut a = aimd();
        a.on_sample(Duration::from_secs(6), 20, false, ms(10_000));
        assert_eq!(a.limit(), 18);
    }

    #[test]
    fn drops_of_requests_sent_before_the_last_cut_are_ignored() {
        let mut a = aimd();
        // Twenty requests started at 0 ms all time out around 1000 ms: one cut, not twenty.
        for i in 0..20 {
            a.on_sample(Duration::from_millis(1000 + i), 20, true, ms(1000 + i));
        }
        assert_eq!(a.limit(), 18);
        // A request sent after the cut that drops cuts again.
        a.on_sample(Duration::from_millis(50), 18, true, ms(1100));
        assert_eq!(a.limit(), 16);
    }

    #[test]
    fn limit_stays_within_min_and_max() {
        let config = AimdConfig { min_limit: 5, max_limit: 25, ..AimdConfig::default() };
        let mut a = Aimd::try_new(config).expect("valid");
        for i in 0..100 {
            a.on_sample(Duration::from_millis(1), 100, false, ms(i));
        }
        assert_eq!(a.limit(), 25);
        for i in 0..100 {
            a.on_sample(Duration::ZERO, 100, true, ms(1000 + i));
        }
        assert_eq!(a.limit(), 5);
    }

    #[test]
    fn bad_bounds_and_ratios_are_refused() {
        let c = AimdConfig { min_limit: 0, ..AimdConfig::default() };
        assert_eq!(Aimd::try_new(c).err(), Some(LimitConfigError::BadBounds));
        let c = AimdConfig { initial_limit: 2000, ..AimdConfig::default() };
        assert_eq!(Aimd::try_new(c).err(), Some(LimitConfigError::BadBounds));
        let c = AimdConfig { backoff_ratio: 1.0, ..AimdConfig::default() };
        assert!(Aimd::try_new(c).is_err());
        let c = AimdConfig { latency_threshold: Duration::ZERO, ..AimdConfig::default() };
        assert_eq!(Aimd::try_new(c).err(), Some(LimitConfigError::BadRatio("latency_threshold")));
    }

    proptest! {
        /// Whatever the samples, the limit stays within [min, max].
        #[test]
        fn limit_always_within_bounds(
            samples in proptest::collection::vec((0u64..10_000, 0u64..100, any::<bool>()), 1..300)
        ) {
            let config = AimdConfig { min_limit: 3, max_limit: 40, ..AimdConfig::default() };
            let mut a = Aimd::try_new(config).expect("valid");
            let mut now = ms(0);
            for (rtt_ms, inflight, dropped) in samples {
                now += Duration::from_millis(7);
                a.on_sample(Duration::from_millis(rtt_ms), inflight, dropped, now);
                prop_assert!((3..=40).contains(&a.limit()), "limit {}", a.limit());
            }
        }
    }
}
