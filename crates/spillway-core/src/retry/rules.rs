//! Whether and when to try a request again: the one retry decision that the tower layer and
//! the gateway both use.
//!
//! Why one decision: the guards are easy to get subtly wrong when written twice (checking the
//! budget before the deadline spends a retry that is never made; waiting past the deadline
//! delays an answer nobody will read). [`RetryRules::next`] applies them in one order:
//!
//! 1. the result must be worth retrying ([`RetryVerdict`], judged by the caller);
//! 2. attempts must remain (`max_attempts` counts the first try);
//! 3. a server's hint (`Retry-After`, `grpc-retry-pushback-ms`) must not be longer than
//!    `max_retry_after` — a server asking for an hour is answered now, hint included;
//! 4. the wait (the backoff, or the hint when longer) must end before the deadline, leaving at
//!    least `min_try` for the try itself;
//! 5. the [`RetryBudget`] must have room — checked last, so a retry that is refused for
//!    another reason never spends budget.

use super::{Backoff, RetryBudget, RetryConfigError};
use crate::clock::Instant;
use std::time::Duration;

/// What a try's result says about trying again (the caller judges statuses and errors).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RetryVerdict {
    /// The result is final: return it.
    Done,
    /// Worth another try after the backoff.
    Retry,
    /// Worth another try, but not before this long (the server's hint).
    RetryAfter(Duration),
}

/// Why no further try is made.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum RetryStop {
    /// The result is final ([`RetryVerdict::Done`]).
    Final,
    /// Every allowed attempt was made.
    AttemptsExhausted,
    /// The server asked to wait longer than `max_retry_after`.
    HintTooLong,
    /// The wait and a try would not fit before the deadline.
    Deadline,
    /// The retry budget is spent: retries are already the allowed share of traffic.
    BudgetExhausted,
}

impl RetryStop {
    /// A short stable name, for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryStop::Final => "final",
            RetryStop::AttemptsExhausted => "attempts_exhausted",
            RetryStop::HintTooLong => "hint_too_long",
            RetryStop::Deadline => "deadline",
            RetryStop::BudgetExhausted => "budget_exhausted",
        }
    }
}

/// The decision after a try.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again after waiting this long (the retry was taken from the budget).
    Retry {
        /// The wait before the next try.
        after: Duration,
    },
    /// Return the last result.
    Stop(RetryStop),
}

/// One request's progress through its tries.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Attempts {
    made: u32,
    previous_delay: Duration,
}

impl Attempts {
    /// A request whose first try is being made.
    pub fn first() -> Attempts {
        Attempts { made: 1, previous_delay: Duration::ZERO }
    }

    /// Tries made so far, the current one included (1 for the first try).
    pub fn made(&self) -> u32 {
        self.made
    }
}

impl Default for Attempts {
    fn default() -> Self {
        Attempts::first()
    }
}

/// The per-request retry limits: attempts, backoff, and the longest server hint honoured.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct RetryRules {
    max_attempts: u32,
    backoff: Backoff,
    max_retry_after: Duration,
}

impl RetryRules {
    /// Rules allowing `max_attempts` tries in all (at least 1; 1 never retries), waiting by
    /// `backoff`, and honouring server hints up to `max_retry_after`.
    pub fn try_new(
        max_attempts: u32,
        backoff: Backoff,
        max_retry_after: Duration,
    ) -> Result<RetryRules, RetryConfigError> {
        if max_attempts == 0 {
            return Err(RetryConfigError::new("max_attempts", "must be at least 1"));
        }
        Ok(RetryRules { max_attempts, backoff, max_retry_after })
    }

    /// Tries allowed per request, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The wait schedule.
    pub fn backoff(&self) -> &Backoff {
        &self.backoff
    }

    /// The longest server hint waited for.
    pub fn max_retry_after(&self) -> Duration {
        self.max_retry_after
    }

    /// Whether another try could ever follow `attempts` (so a caller knows whether to keep a
    /// copy of the request).
    pub fn may_retry(&self, attempts: &Attempts) -> bool {
        attempts.made < self.max_attempts
    }

    /// What to do after a try judged `verdict`. `remaining` is the time left before the
    /// request's deadline (`None`: no deadline); a retry is made only when its wait ends with
    /// at least `min_try` left (and never with nothing left). `random` is uniform in `[0, 1)`
    /// for the jitter. On [`RetryDecision::Retry`] the retry has been withdrawn from `budget`
    /// (`None`: no budget, the other rules alone decide) and `attempts` counts the next try.
    #[allow(clippy::too_many_arguments)]
    pub fn next(
        &self,
        attempts: &mut Attempts,
        verdict: RetryVerdict,
        remaining: Option<Duration>,
        min_try: Duration,
        random: f64,
        budget: Option<&mut RetryBudget>,
        now: Instant,
    ) -> RetryDecision {
        let hint = match verdict {
            RetryVerdict::Done => return RetryDecision::Stop(RetryStop::Final),
            RetryVerdict::Retry => None,
            RetryVerdict::RetryAfter(after) => Some(after),
        };
        if attempts.made >= self.max_attempts {
            return RetryDecision::Stop(RetryStop::AttemptsExhausted);
        }
        if hint.is_some_and(|after| after > self.max_retry_after) {
            return RetryDecision::Stop(RetryStop::HintTooLong);
        }
        let backoff = self.backoff.delay(attempts.made - 1, attempts.previous_delay, random);
        let delay = hint.map_or(backoff, |after| after.max(backoff));
        if let Some(remaining) = remaining {
            let left = remaining.saturating_sub(delay);
            if left.is_zero() || left < min_try {
                return RetryDecision::Stop(RetryStop::Deadline);
            }
        }
        if budget.is_some_and(|b| !b.try_withdraw(now)) {
            return RetryDecision::Stop(RetryStop::BudgetExhausted);
        }
        attempts.made += 1;
        attempts.previous_delay = delay;
        RetryDecision::Retry { after: delay }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry::{Jitter, RetryBudgetConfig};

    fn rules(max_attempts: u32) -> RetryRules {
        let backoff =
            Backoff::try_new(Duration::from_millis(10), Duration::from_millis(100), Jitter::None)
                .expect("valid");
        RetryRules::try_new(max_attempts, backoff, Duration::from_secs(1)).expect("valid")
    }

    fn budget(ratio: f64, min_per_second: f64) -> RetryBudget {
        RetryBudget::try_new(RetryBudgetConfig { ratio, min_per_second, ..Default::default() })
            .expect("valid")
    }

    fn roomy() -> RetryBudget {
        budget(1.0, 100.0)
    }

    const NOW: Instant = Instant::ZERO;

    #[test]
    fn retries_back_off_exponentially_until_attempts_run_out() {
        let r = rules(3);
        let mut a = Attempts::first();
        let mut b = roomy();
        let first =
            r.next(&mut a, RetryVerdict::Retry, None, Duration::ZERO, 0.5, Some(&mut b), NOW);
        assert_eq!(first, RetryDecision::Retry { after: Duration::from_millis(10) });
        let second =
            r.next(&mut a, RetryVerdict::Retry, None, Duration::ZERO, 0.5, Some(&mut b), NOW);
        assert_eq!(second, RetryDecision::Retry { after: Duration::from_millis(20) });
        assert_eq!(a.made(), 3);
        assert!(!r.may_retry(&a));
        let third =
            r.next(&mut a, RetryVerdict::Retry, None, Duration::ZERO, 0.5, Some(&mut b), NOW);
        assert_eq!(third, RetryDecision::Stop(RetryStop::AttemptsExhausted));
    }

    #[test]
    fn a_final_result_is_never_retried() {
        let mut b = roomy();
        let d = rules(3).next(
            &mut Attempts::first(),
            RetryVerdict::Done,
            None,
            Duration::ZERO,
            0.0,
            Some(&mut b),
            NOW,
        );
        assert_eq!(d, RetryDecision::Stop(RetryStop::Final));
    }

    #[test]
    fn a_server_hint_longer_than_the_backoff_sets_the_wait() {
        let mut b = roomy();
        let hint = RetryVerdict::RetryAfter(Duration::from_millis(300));
        let d = rules(3).next(
            &mut Attempts::first(),
            hint,
            None,
            Duration::ZERO,
            0.0,
            Some(&mut b),
            NOW,
        );
        assert_eq!(d, RetryDecision::Retry { after: Duration::from_millis(300) });
    }

    #[test]
    fn a_hint_longer_than_the_maximum_is_answered_at_once() {
        let mut b = roomy();
        let hint = RetryVerdict::RetryAfter(Duration::from_secs(60));
        let d = rules(3).next(
            &mut Attempts::first(),
            hint,
            None,
            Duration::ZERO,
            0.0,
            Some(&mut b),
            NOW,
        );
        assert_eq!(d, RetryDecision::Stop(RetryStop::HintTooLong));
    }

    #[test]
    fn no_retry_whose_wait_and_try_would_not_fit_before_the_deadline() {
        let r = rules(3);
        let mut b = roomy();
        // 10 ms wait, 25 ms left: 15 ms for the try is below the 20 ms a try needs.
        let left = Some(Duration::from_millis(25));
        let min = Duration::from_millis(20);
        let d =
            r.next(&mut Attempts::first(), RetryVerdict::Retry, left, min, 0.0, Some(&mut b), NOW);
        assert_eq!(d, RetryDecision::Stop(RetryStop::Deadline));
        // 40 ms left fits.
        let left = Some(Duration::from_millis(40));
        let d =
            r.next(&mut Attempts::first(), RetryVerdict::Retry, left, min, 0.0, Some(&mut b), NOW);
        assert_eq!(d, RetryDecision::Retry { after: Duration::from_millis(10) });
        // A wait ending exactly at the deadline leaves nothing, even with no minimum.
        let left = Some(Duration::from_millis(10));
        let zero = Duration::ZERO;
        let d =
            r.next(&mut Attempts::first(), RetryVerdict::Retry, left, zero, 0.0, Some(&mut b), NOW);
        assert_eq!(d, RetryDecision::Stop(RetryStop::Deadline));
    }

    #[test]
    fn the_budget_is_checked_last_and_spent_only_on_retries_made() {
        let r = rules(3);
        let mut b = budget(0.0, 0.1); // one retry in the 10 s window
        let left = Some(Duration::from_millis(5));
        let zero = Duration::ZERO;
        // Refused by the deadline: the one retry stays in the budget.
        let d =
            r.next(&mut Attempts::first(), RetryVerdict::Retry, left, zero, 0.0, Some(&mut b), NOW);
        assert_eq!(d, RetryDecision::Stop(RetryStop::Deadline));
        let d =
            r.next(&mut Attempts::first(), RetryVerdict::Retry, None, zero, 0.0, Some(&mut b), NOW);
        assert!(matches!(d, RetryDecision::Retry { .. }));
        let d =
            r.next(&mut Attempts::first(), RetryVerdict::Retry, None, zero, 0.0, Some(&mut b), NOW);
        assert_eq!(d, RetryDecision::Stop(RetryStop::BudgetExhausted));
    }

    #[test]
    fn without_a_budget_the_attempts_alone_limit_retries() {
        let r = rules(3);
        let mut a = Attempts::first();
        let zero = Duration::ZERO;
        for _ in 0..2 {
            let d = r.next(&mut a, RetryVerdict::Retry, None, zero, 0.0, None, NOW);
            assert!(matches!(d, RetryDecision::Retry { .. }), "{d:?}");
        }
        let d = r.next(&mut a, RetryVerdict::Retry, None, zero, 0.0, None, NOW);
        assert_eq!(d, RetryDecision::Stop(RetryStop::AttemptsExhausted));
    }

    #[test]
    fn zero_attempts_is_refused() {
        let backoff =
            Backoff::try_new(Duration::from_millis(1), Duration::from_millis(1), Jitter::None)
                .expect("valid");
        let err = RetryRules::try_new(0, backoff, Duration::ZERO).err();
        assert_eq!(err.map(|e| e.key), Some("max_attempts"));
    }
}
