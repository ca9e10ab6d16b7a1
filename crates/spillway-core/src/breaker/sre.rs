//! Google SRE adaptive client-side throttling ("Handling Overload", SRE book ch. 21): the
//! client drops a share of its own requests, locally, once the backend accepts clearly fewer
//! than it is sent.
//!
//! Why client side: a backend that is rejecting still pays for each rejection; when the client
//! stops sending what would be rejected anyway, the backend's capacity goes to the requests it
//! can serve. Unlike a classic breaker it never cuts all traffic: the drop probability rises
//! smoothly with the rejection rate, so some requests keep probing the backend.
//!
//! Over a rolling window, with `requests` the calls the application attempted (including the
//! ones this throttle dropped) and `accepts` the ones the backend accepted:
//!
//! ```text
//! p = max(0, (requests − K·accepts) / (requests + 1))
//! ```
//!
//! **Criticality.** Each class has its own `K`, non-decreasing with the class, so that at any
//! moment `p(lower class) ≥ p(higher class)`: as accepts fall, `SHEDDABLE` traffic starts to be
//! dropped first, `CRITICAL_PLUS` last. `K` must be at least 1, otherwise a backend accepting
//! everything would still see requests dropped. All classes share one window: the backend's
//! health is one fact, only the response to it differs by class.

use super::{ConfigError, Outcome};
use crate::clock::{duration_nanos, Instant};
use crate::criticality::Criticality;
use crate::decision::{Decision, RejectReason};
use crate::window::{Tally, WindowTotals};
use std::time::Duration;

/// How an [`SreThrottle`] behaves. Build one with [`SreThrottleConfig::default`] and adjust.
#[derive(Clone, Debug, PartialEq)]
pub struct SreThrottleConfig {
    /// How far back requests and accepts are counted. Default 10 s: long enough to smooth
    /// bursts, short enough that a recovered backend gets its full traffic back within seconds
    /// (the SRE book suggests minutes; kratos uses seconds; we follow kratos for faster
    /// recovery).
    pub window: Duration,
    /// Number of buckets in the window; the window slides one bucket at a time. Default 100
    /// (100 ms buckets).
    pub buckets: usize,
    /// `K` per criticality class, indexed by [`Criticality::index`] (lowest class first).
    /// Must be at least 1 and non-decreasing with the class. Default (from `K = 2` for
    /// `CRITICAL`): `[1.5, 1.75, 2.0, 2.5]`, see [`SreThrottleConfig::with_k`].
    pub k: [f64; 4],
    /// No request is dropped while the window holds fewer requests than this, so a handful of
    /// early failures (a cold start, one bad deploy minute at low traffic) cannot throttle.
    /// Default 20.
    pub min_requests: u64,
}

impl Default for SreThrottleConfig {
    fn default() -> Self {
        SreThrottleConfig {
            window: Duration::from_secs(10),
            buckets: 100,
            k: SreThrottleConfig::class_ks(2.0),
            min_requests: 20,
        }
    }
}

impl SreThrottleConfig {
    /// The same configuration with `K = k` for `CRITICAL` traffic and the other classes
    /// spread around it: `1 + (k − 1)·f` with `f` = 0.5, 0.75, 1 and 1.5 from `SHEDDABLE` to
    /// `CRITICAL_PLUS`. With `k = 2`: 1.5, 1.75, 2 and 2.5.
    pub fn with_k(mut self, k: f64) -> Self {
        self.k = SreThrottleConfig::class_ks(k);
        self
    }

    /// The same configuration with one class's `K` set.
    pub fn with_class_k(mut self, class: Criticality, k: f64) -> Self {
        self.k[class.index()] = k;
        self
    }

    fn class_ks(k: f64) -> [f64; 4] {
        [0.5, 0.75, 1.0, 1.5].map(|f| 1.0 + (k - 1.0) * f)
    }

    /// Checks every value; [`SreThrottle::try_new`] calls this.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.buckets == 0 {
            return Err(ConfigError::invalid("buckets", "must be at least 1"));
        }
        if duration_nanos(self.window) / (self.buckets as u64) == 0 {
            return Err(ConfigError::invalid("window", "must be at least 1 ns per bucket"));
        }
        const KEYS: [&str; 4] =
            ["k[SHEDDABLE]", "k[SHEDDABLE_PLUS]", "k[CRITICAL]", "k[CRITICAL_PLUS]"];
        for (i, k) in self.k.iter().enumerate() {
            if !k.is_finite() || *k < 1.0 {
                return Err(ConfigError::invalid(KEYS[i], "must be a number of at least 1"));
            }
            if i > 0 && *k < self.k[i - 1] {
                return Err(ConfigError::invalid(
                    KEYS[i],
                    "must not be below a lower class's K (lower classes are dropped first)",
                ));
            }
        }
        Ok(())
    }
}

/// Requests and accepts in one bucket of the window.
#[derive(Copy, Clone, Default, Debug, PartialEq, Eq)]
pub struct ThrottleCounts {
    /// Calls the application attempted: accepted, failed, or dropped by the throttle.
    pub requests: u64,
    /// Calls the backend accepted.
    pub accepts: u64,
}

impl Tally for ThrottleCounts {
    #[inline]
    fn absorb(&mut self, other: &Self) {
        self.requests = self.requests.saturating_add(other.requests);
        self.accepts = self.accepts.saturating_add(other.accepts);
    }
}

/// Google SRE adaptive throttling for one upstream.
///
/// Call [`allow`](SreThrottle::allow) before sending; when admitted, call
/// [`record`](SreThrottle::record) with what the backend answered. A drop made by `allow` is
/// counted by the throttle itself (a request without an accept, as the SRE book defines
/// `requests`); do not record it again.
///
/// ```
/// use spillway_core::breaker::{Outcome, SreThrottle, SreThrottleConfig};
/// use spillway_core::{Criticality, Decision, Instant};
///
/// let mut throttle = SreThrottle::try_new(SreThrottleConfig::default()).unwrap();
/// let now = Instant::from_nanos(0);
/// for _ in 0..100 {
///     throttle.record(Outcome::Failure, now); // the backend rejects everything
/// }
/// // p = (100 − 2·0) / 101 ≈ 0.99: nearly every request is dropped locally.
/// assert!(!throttle.allow(Criticality::Critical, now, 0.5).is_admitted());
/// ```
#[derive(Clone, Debug)]
pub struct SreThrottle {
    window: WindowTotals<ThrottleCounts>,
    k: [f64; 4],
    min_requests: u64,
}

impl SreThrottle {
    /// A throttle with `config`, or why the configuration cannot work.
    pub fn try_new(config: SreThrottleConfig) -> Result<SreThrottle, ConfigError> {
        config.validate()?;
        Ok(SreThrottle {
            window: WindowTotals::new(config.window, config.buckets),
            k: config.k,
            min_requests: config.min_requests,
        })
    }

    /// Decides whether a request of class `criticality` may be sent now. `random` is a uniform
    /// value in `[0, 1)` from the caller; the request is dropped when it falls below the
    /// class's drop probability. A drop is counted as a request without an accept and is
    /// answered with [`RejectReason::Throttled`] and no retry hint (the probability changes
    /// continuously, there is no moment at which a retry is sure to pass).
    #[inline]
    pub fn allow(&mut self, criticality: Criticality, now: Instant, random: f64) -> Decision {
        let p = self.drop_probability(criticality, now);
        if random < p {
            let bucket = self.window.current_mut(now);
            bucket.requests = bucket.requests.saturating_add(1);
            Decision::reject(RejectReason::Throttled, None)
        } else {
            Decision::Admit
        }
    }

    /// Records what the backend answered to an admitted request. [`Outcome::Ignored`] records
    /// nothing: a local refusal or a cancellation says nothing about the backend.
    #[inline]
    pub fn record(&mut self, outcome: Outcome, now: Instant) {
        let accepted = match outcome {
            Outcome::Success => 1,
            Outcome::Failure => 0,
            Outcome::Ignored => return,
        };
        let bucket = self.window.current_mut(now);
        bucket.requests = bucket.requests.saturating_add(1);
        bucket.accepts = bucket.accepts.saturating_add(accepted);
    }

    /// The probability in `[0, 1)` that a request of class `criticality` is dropped now:
    /// `max(0, (requests − K·accepts) / (requests + 1))`, or 0 below `min_requests`.
    #[inline]
    pub fn drop_probability(&mut self, criticality: Criticality, now: Instant) -> f64 {
        let counts = self.window.totals(now);
        if counts.requests < self.min_requests || counts.requests == 0 {
            return 0.0;
        }
        let requests = counts.requests as f64;
        let k = self.k[criticality.index()];
        let p = (requests - k * counts.accepts as f64) / (requests + 1.0);
        p.max(0.0)
    }

    /// Requests and accepts over the window ending at `now` (for metrics).
    pub fn counts(&mut self, now: Instant) -> ThrottleCounts {
        self.window.totals(now)
    }

    /// The window's span.
    pub fn window(&self) -> Duration {
        self.window.span()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use proptest::prelude::*;

    fn throttle() -> SreThrottle {
        SreThrottle::try_new(SreThrottleConfig::default()).expect("default config is valid")
    }

    fn record_n(t: &mut SreThrottle, outcome: Outcome, n: usize, now: Instant) {
        for _ in 0..n {
            t.record(outcome, now);
        }
    }

    #[test]
    fn healthy_backend_is_never_throttled() {
        let mut t = throttle();
        let now = Instant::ZERO;
        record_n(&mut t, Outcome::Success, 1000, now);
        for c in Criticality::ALL {
            assert_eq!(t.drop_probability(c, now), 0.0);
            assert!(t.allow(c, now, 0.0).is_admitted());
        }
    }

    #[test]
    fn drop_probability_follows_the_sre_formula() {
        let mut t = throttle();
        let now = Instant::ZERO;
        record_n(&mut t, Outcome::Success, 10, now);
        record_n(&mut t, Outcome::Failure, 90, now);
        // requests 100, accepts 10, K(CRITICAL) = 2: (100 − 20) / 101.
        let p = t.drop_probability(Criticality::Critical, now);
        assert!((p - 80.0 / 101.0).abs() < 1e-12, "{p}");
        // K(SHEDDABLE) = 1.5: (100 − 15) / 101.
        let p = t.drop_probability(Criticality::Sheddable, now);
        assert!((p - 85.0 / 101.0).abs() < 1e-12, "{p}");
    }

    #[test]
    fn throttle_drops_when_random_falls_below_the_probability() {
        let mut t = throttle();
        let now = Instant::ZERO;
        record_n(&mut t, Outcome::Failure, 99, now);
        // p = 99/100 before the first drop.
        let d = t.allow(Criticality::Critical, now, 0.5);
        assert_eq!(d, Decision::reject(RejectReason::Throttled, None));
        assert!(t.allow(Criticality::Critical, now, 0.9999).is_admitted());
    }

    #[test]
    fn no_drops_below_the_minimum_request_count() {
        let mut t = throttle();
        let now = Instant::ZERO;
        record_n(&mut t, Outcome::Failure, 19, now);
        assert_eq!(t.drop_probability(Criticality::Sheddable, now), 0.0);
        t.record(Outcome::Failure, now);
        assert!(t.drop_probability(Criticality::Sheddable, now) > 0.9);
    }

    #[test]
    fn own_drops_count_as_requests_without_accepts() {
        let mut t = throttle();
        let now = Instant::ZERO;
        record_n(&mut t, Outcome::Failure, 50, now);
        let before = t.counts(now);
        assert!(!t.allow(Criticality::Critical, now, 0.0).is_admitted());
        let after = t.counts(now);
        assert_eq!(after.requests, before.requests + 1);
        assert_eq!(after.accepts, before.accepts);
    }

    #[test]
    fn ignored_outcomes_do_not_count_as_backend_failures() {
        let mut t = throttle();
        let now = Instant::ZERO;
        record_n(&mut t, Outcome::Success, 10, now);
        record_n(&mut t, Outcome::Ignored, 10_000, now);
        assert_eq!(t.counts(now), ThrottleCounts { requests: 10, accepts: 10 });
        assert_eq!(t.drop_probability(Criticality::Sheddable, now), 0.0);
    }

    #[test]
    fn old_failures_leave_the_window_and_traffic_recovers() {
        let clock = ManualClock::new();
        let mut t = throttle();
        record_n(&mut t, Outcome::Failure, 100, clock.now());
        assert!(t.drop_probability(Criticality::Critical, clock.now()) > 0.9);
        clock.advance(Duration::from_millis(9_900));
        assert!(t.drop_probability(Criticality::Critical, clock.now()) > 0.9);
        clock.advance(Duration::from_millis(100));
        assert_eq!(t.drop_probability(Criticality::Critical, clock.now()), 0.0);
        assert_eq!(t.counts(clock.now()), ThrottleCounts::default());
    }

    #[test]
    fn lower_criticality_is_dropped_first() {
        let mut t = throttle();
        let now = Instant::ZERO;
        // 100 requests, 45 accepted: K=2 (CRITICAL) → 100 − 90 > 0; K=2.5 → 0.
        record_n(&mut t, Outcome::Success, 45, now);
        record_n(&mut t, Outcome::Failure, 55, now);
        let p: Vec<f64> = Criticality::ALL.iter().map(|c| t.drop_probability(*c, now)).collect();
        assert!(p[0] > p[1] && p[1] > p[2], "{p:?}");
        assert_eq!(p[3], 0.0);
    }

    #[test]
    fn invalid_k_is_refused_at_construction() {
        let low = SreThrottleConfig::default().with_class_k(Criticality::Sheddable, 0.5);
        assert_eq!(
            SreThrottle::try_new(low).err(),
            Some(ConfigError::invalid("k[SHEDDABLE]", "must be a number of at least 1"))
        );
        let inverted = SreThrottleConfig::default().with_class_k(Criticality::CriticalPlus, 1.0);
        assert!(matches!(
            SreThrottle::try_new(inverted),
            Err(ConfigError::Invalid { key: "k[CRITICAL_PLUS]", .. })
        ));
        let zero_buckets = SreThrottleConfig { buckets: 0, ..SreThrottleConfig::default() };
        assert!(SreThrottle::try_new(zero_buckets).is_err());
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![Just(Outcome::Success), Just(Outcome::Failure), Just(Outcome::Ignored)]
    }

    proptest! {
        #[test]
        fn drop_probability_is_a_probability(
            events in proptest::collection::vec((outcome(), 0u64..300), 0..400),
            k in 1.0f64..10.0,
        ) {
            let config = SreThrottleConfig::default().with_k(k);
            let mut t = SreThrottle::try_new(config).expect("valid");
            let mut now = Instant::ZERO;
            for (o, step_ms) in events {
                now += Duration::from_millis(step_ms);
                t.record(o, now);
                for c in Criticality::ALL {
                    let p = t.drop_probability(c, now);
                    prop_assert!((0.0..1.0).contains(&p), "p = {p}");
                }
            }
        }

        #[test]
        fn drop_probability_never_falls_when_failures_are_added(
            accepts in 0usize..200,
            failures in 0usize..200,
            extra in 1usize..50,
        ) {
            let now = Instant::ZERO;
            let mut fewer = throttle();
            record_n(&mut fewer, Outcome::Success, accepts, now);
            record_n(&mut fewer, Outcome::Failure, failures, now);
            let mut more = fewer.clone();
            record_n(&mut more, Outcome::Failure, extra, now);
            for c in Criticality::ALL {
                prop_assert!(more.drop_probability(c, now) >= fewer.drop_probability(c, now));
            }
        }

        /// At one moment (same history, same random draw), `allow` never admits a lower class
        /// while it drops a higher one.
        #[test]
        fn lower_class_never_admitted_while_a_higher_one_is_dropped(
            events in proptest::collection::vec((outcome(), 0u64..300), 0..300),
            k in 1.0f64..5.0,
            random in 0.0f64..1.0,
        ) {
            let config = SreThrottleConfig::default().with_k(k);
            let mut t = SreThrottle::try_new(config).expect("valid");
            let mut now = Instant::ZERO;
            for (o, step_ms) in events {
                now += Duration::from_millis(step_ms);
                t.record(o, now);
            }
            // Each class asks a copy: a drop counts itself as a request and would move p.
            let admitted: Vec<bool> = Criticality::ALL
                .iter()
                .map(|&c| t.clone().allow(c, now, random).is_admitted())
                .collect();
            for low in 0..4 {
                for high in low + 1..4 {
                    prop_assert!(!admitted[low] || admitted[high],
                        "{:?} admitted while {:?} dropped", Criticality::ALL[low], Criticality::ALL[high]);
                }
            }
        }

        #[test]
        fn lower_class_is_never_less_likely_to_be_dropped(
            accepts in 0usize..300,
            failures in 0usize..300,
            k in 1.0f64..5.0,
        ) {
            let mut t = SreThrottle::try_new(SreThrottleConfig::default().with_k(k)).expect("valid");
            let now = Instant::ZERO;
            record_n(&mut t, Outcome::Success, accepts, now);
            record_n(&mut t, Outcome::Failure, failures, now);
            for pair in Criticality::ALL.windows(2) {
                prop_assert!(t.drop_probability(pair[0], now) >= t.drop_probability(pair[1], now));
            }
        }
    }
}
