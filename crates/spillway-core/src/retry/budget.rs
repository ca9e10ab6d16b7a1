//! A retry budget: retries may be at most a fixed share of requests over a rolling window,
//! plus a small allowance per second so that low traffic can still retry.
//!
//! Why: per-request limits (max attempts) still let every request of an outage retry, which
//! multiplies the load on a backend that is already failing (3 attempts = 3× the traffic).
//! A budget caps the extra load at `ratio` (e.g. 10 %) whatever happens; the allowance
//! (`min_per_second`) keeps a client sending one request a minute able to retry its failure.

use super::RetryConfigError;
use crate::clock::{duration_nanos, Instant};
use crate::window::{Tally, WindowTotals};
use std::time::Duration;

/// How a [`RetryBudget`] behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryBudgetConfig {
    /// Retries allowed per request deposited, e.g. 0.1 for "retries ≤ 10 % of requests".
    /// Default 0.1.
    pub ratio: f64,
    /// Retries allowed per second of window regardless of traffic. Default 1: a 10 s window
    /// always allows 10 retries.
    pub min_per_second: f64,
    /// How far back requests and retries are counted. Default 10 s.
    pub window: Duration,
    /// Buckets in the window. Default 10.
    pub buckets: usize,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            ratio: 0.1,
            min_per_second: 1.0,
            window: Duration::from_secs(10),
            buckets: 10,
        }
    }
}

#[derive(Copy, Clone, Default, Debug, PartialEq, Eq)]
struct Counts {
    requests: u64,
    retries: u64,
}

impl Tally for Counts {
    #[inline]
    fn absorb(&mut self, other: &Self) {
        self.requests = self.requests.saturating_add(other.requests);
        self.retries = self.retries.saturating_add(other.retries);
    }
}

/// Retries ≤ `ratio × requests + min_per_second × window` over a rolling window.
///
/// [`deposit`](RetryBudget::deposit) once per original request;
/// [`try_withdraw`](RetryBudget::try_withdraw) before each retry, and retry only when it says
/// yes.
///
/// ```
/// use spillway_core::retry::{RetryBudget, RetryBudgetConfig};
/// use spillway_core::Instant;
///
/// let config = RetryBudgetConfig { ratio: 0.1, min_per_second: 0.0, ..Default::default() };
/// let mut budget = RetryBudget::try_new(config).unwrap();
/// let now = Instant::ZERO;
/// for _ in 0..20 {
///     budget.deposit(now);
/// }
/// assert!(budget.try_withdraw(now));
/// assert!(budget.try_withdraw(now));
/// assert!(!budget.try_withdraw(now)); // 2 retries = 10 % of 20 requests
/// ```
#[derive(Clone, Debug)]
pub struct RetryBudget {
    window: WindowTotals<Counts>,
    ratio: f64,
    /// `min_per_second × window`, in retries.
    reserve: f64,
}

impl RetryBudget {
    /// A budget with `config`, or why the configuration cannot work.
    pub fn try_new(config: RetryBudgetConfig) -> Result<RetryBudget, RetryConfigError> {
        if !config.ratio.is_finite() || config.ratio < 0.0 {
            return Err(RetryConfigError::new("budget.ratio", "must be a number of at least 0"));
        }
        if !config.min_per_second.is_finite() || config.min_per_second < 0.0 {
            return Err(RetryConfigError::new(
                "budget.min_per_second",
                "must be a number of at least 0",
            ));
        }
        if config.buckets == 0 {
            return Err(RetryConfigError::new("budget.buckets", "must be at least 1"));
        }
        if duration_nanos(config.window) / config.buckets as u64 == 0 {
            return Err(RetryConfigError::new("budget.window", "must be at least 1 ns per bucket"));
        }
        let window = WindowTotals::new(config.window, config.buckets);
        let reserve = config.min_per_second * window.span().as_secs_f64();
        Ok(RetryBudget { window, ratio: config.ratio, reserve })
    }

    /// Counts one original request (not a retry).
    #[inline]
    pub fn deposit(&mut self, now: Instant) {
        let bucket = self.window.current_mut(now);
        bucket.requests = bucket.requests.saturating_add(1);
    }

    /// Takes one retry from the budget if there is one left; false means: do not retry.
    #[inline]
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        if self.balance(now) < 1.0 {
            return false;
        }
        let bucket = self.window.current_mut(now);
        bucket.retries = bucket.retries.saturating_add(1);
        true
    }

    /// Retries left at `now`: `ratio × requests + reserve − retries` over the window (may be
    /// fractional; a retry needs at least 1).
    pub fn balance(&mut self, now: Instant) -> f64 {
        let c = self.window.totals(now);
        self.ratio * c.requests as f64 + self.reserve - c.retries as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use proptest::prelude::*;

    fn budget(ratio: f64, min_per_second: f64) -> RetryBudget {
        RetryBudget::try_new(RetryBudgetConfig { ratio, min_per_second, ..Default::default() })
            .expect("valid")
    }

    #[test]
    fn retries_are_limited_to_the_ratio_of_requests() {
        let mut b = budget(0.1, 0.0);
        let now = Instant::ZERO;
        for _ in 0..100 {
            b.deposit(now);
        }
        let granted = (0..50).filter(|_| b.try_withdraw(now)).count();
        assert_eq!(granted, 10);
    }

    #[test]
    fn low_traffic_can_still_retry_through_the_minimum() {
        let mut b = budget(0.1, 0.5); // 0.5/s over 10 s: 5 retries
        let now = Instant::ZERO;
        b.deposit(now);
        let granted = (0..50).filter(|_| b.try_withdraw(now)).count();
        assert_eq!(granted, 5);
    }

    #[test]
    fn budget_refills_as_old_retries_leave_the_window() {
        let clock = ManualClock::new();
        let mut b = budget(0.0, 1.0);
        let granted = (0..50).filter(|_| b.try_withdraw(clock.now())).count();
        assert_eq!(granted, 10);
        clock.advance(Duration::from_secs(9));
        assert!(!b.try_withdraw(clock.now()));
        clock.advance(Duration::from_secs(1));
        assert!(b.try_withdraw(clock.now()));
    }

    #[test]
    fn negative_ratio_is_refused() {
        let config = RetryBudgetConfig { ratio: -0.1, ..Default::default() };
        assert_eq!(RetryBudget::try_new(config).err().map(|e| e.key), Some("budget.ratio"));
    }

    proptest! {
        #[test]
        fn budget_never_allows_more_than_ratio_times_requests_plus_minimum(
            ratio in 0.0f64..1.0,
            min_per_second in 0.0f64..5.0,
            events in proptest::collection::vec((any::<bool>(), 0u64..2_000), 1..600),
        ) {
            let mut b = budget(ratio, min_per_second);
            let span_secs = 10.0;
            let mut now = Instant::ZERO;
            // (time, is_retry) of everything accepted, to recount independently.
            let mut log: Vec<(Instant, bool)> = Vec::new();
            let mut deposits = 0u64;
            let mut withdrawals = 0u64;
            for (is_retry, step_ms) in events {
                now += Duration::from_millis(step_ms);
                if !is_retry {
                    b.deposit(now);
                    deposits += 1;
                    log.push((now, false));
                    continue;
                }
                if !b.try_withdraw(now) {
                    continue;
                }
                withdrawals += 1;
                log.push((now, true));
                // When a retry is granted, the window (whole 1 s buckets, current one
                // included) holds no more retries than its requests and the minimum allow.
                // (Requests leave the window before retries made after them, so the bound
                // holds at each grant, not at every later moment.)
                let current = now.as_nanos() / 1_000_000_000;
                let inside = |t: &Instant| current - t.as_nanos() / 1_000_000_000 < 10;
                let w_requests = log.iter().filter(|(t, r)| !r && inside(t)).count() as f64;
                let w_retries = log.iter().filter(|(t, r)| *r && inside(t)).count() as f64;
                prop_assert!(w_retries <= ratio * w_requests + min_per_second * span_secs + 1e-9);
            }
            // And over the whole run of t seconds.
            let t = now.as_nanos() as f64 / 1e9 + span_secs;
            prop_assert!(withdrawals as f64 <= ratio * deposits as f64 + min_per_second * t + 1e-9);
        }
    }
}
