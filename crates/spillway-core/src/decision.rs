//! What an admission algorithm answers: admit, wait, or reject with a reason.
//!
//! Every limiter, breaker and shedder in this crate returns these values, so the layers around
//! them (tower, gateway) map decisions to responses in one place: [`RejectReason::http_status`]
//! and [`RejectReason::as_str`] are that place.

use std::fmt;
use std::time::Duration;

/// The answer to "may this request go ahead now?".
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead now.
    Admit,
    /// Go ahead after waiting this long (e.g. a leaky bucket's queue position). The caller must
    /// wait; the algorithm has already counted the request.
    Wait(Duration),
    /// Do not go ahead.
    Reject(Rejection),
}

impl Decision {
    /// A rejection for `reason` with an optional retry hint.
    #[inline]
    pub const fn reject(reason: RejectReason, retry_after: Option<Duration>) -> Decision {
        Decision::Reject(Rejection { reason, retry_after })
    }

    /// True for [`Decision::Admit`] and [`Decision::Wait`].
    #[inline]
    pub const fn is_admitted(&self) -> bool {
        !matches!(self, Decision::Reject(_))
    }

    /// The rejection, if this is one.
    #[inline]
    pub const fn rejection(&self) -> Option<Rejection> {
        match self {
            Decision::Reject(r) => Some(*r),
            _ => None,
        }
    }
}

/// Why a request was refused, and when retrying could succeed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Why.
    pub reason: RejectReason,
    /// When a retry could be admitted, if the algorithm knows (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl Rejection {
    /// A rejection without a retry hint.
    #[inline]
    pub const fn new(reason: RejectReason) -> Rejection {
        Rejection { reason, retry_after: None }
    }

    /// The same rejection with a retry hint.
    #[inline]
    pub const fn retry_after(self, after: Duration) -> Rejection {
        Rejection { retry_after: Some(after), ..self }
    }
}

impl Rejection {
    /// The `Retry-After` header value: whole seconds, rounded up so a client that obeys it
    /// does not come back early (RFC 9110 §10.2.3 allows only whole seconds).
    pub fn retry_after_header_secs(&self) -> Option<u64> {
        self.retry_after.map(|d| {
            let secs = d.as_secs();
            if d.subsec_nanos() > 0 {
                secs.saturating_add(1)
            } else {
                secs
            }
        })
    }

    /// The small machine-readable JSON body of a rejection response, e.g.
    /// `{"error":"rate_limited","retry_after_ms":1500}`. Reasons are fixed ASCII names, so no
    /// escaping is needed.
    pub fn json_body(&self) -> String {
        match self.retry_after {
            Some(d) => format!(
                "{{\"error\":\"{}\",\"retry_after_ms\":{}}}\n",
                self.reason.as_str(),
                d.as_millis()
            ),
            None => format!("{{\"error\":\"{}\"}}\n", self.reason.as_str()),
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason.as_str())?;
        if let Some(after) = self.retry_after {
            write!(f, " (retry after {after:?})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Rejection {}

/// Why a request was refused. A rejection made locally is never a backend failure: breakers
/// must not count it as one (kratos#2777).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// A rate limit (token bucket, window, GCRA…) is exhausted.
    RateLimited,
    /// A quota (local share of a global limit, cost budget) is exhausted.
    QuotaExhausted,
    /// Adaptive overload protection (BBR, CPU) shed the request.
    Overloaded,
    /// A concurrency limit (fixed, or learned from upstream latency) is reached.
    ConcurrencyLimit,
    /// A bulkhead's slots and queue are full.
    BulkheadFull,
    /// The request waited in a queue longer than allowed (max wait, CoDel).
    QueueTimeout,
    /// A circuit breaker is open (or half-open with its probes in use).
    CircuitOpen,
    /// Client-side adaptive throttling (Google SRE) dropped the request.
    Throttled,
    /// The remaining deadline is too short to be worth calling upstream.
    DeadlineExceeded,
    /// The request's cost budget (seed 003: granted at the entry, consumed by each hop) has
    /// too little left for the call.
    BudgetExhausted,
    /// A configured fault (a drill) aborted the request on purpose.
    FaultInjected,
    /// An active degradation plan sheds this request (or answers it with a fallback).
    Degraded,
}

impl RejectReason {
    /// A short snake_case name for metrics labels and machine-readable bodies.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::RateLimited => "rate_limited",
            RejectReason::QuotaExhausted => "quota_exhausted",
            RejectReason::Overloaded => "overloaded",
            RejectReason::ConcurrencyLimit => "concurrency_limit",
            RejectReason::BulkheadFull => "bulkhead_full",
            RejectReason::QueueTimeout => "queue_timeout",
            RejectReason::CircuitOpen => "circuit_open",
            RejectReason::Throttled => "throttled",
            RejectReason::DeadlineExceeded => "deadline_exceeded",
            RejectReason::BudgetExhausted => "budget_exhausted",
            RejectReason::FaultInjected => "fault_injected",
            RejectReason::Degraded => "degraded",
        }
    }

    /// The HTTP status a gateway answers with: 429 when the caller exceeded a limit that is
    /// theirs, 503 when the service is protecting itself, 504 for a spent deadline.
    pub const fn http_status(self) -> u16 {
        match self {
            RejectReason::RateLimited
            | RejectReason::QuotaExhausted
            | RejectReason::BudgetExhausted => 429,
            RejectReason::Overloaded
            | RejectReason::ConcurrencyLimit
            | RejectReason::BulkheadFull
            | RejectReason::QueueTimeout
            | RejectReason::CircuitOpen
            | RejectReason::Throttled
            | RejectReason::FaultInjected
            | RejectReason::Degraded => 503,
            RejectReason::DeadlineExceeded => 504,
        }
    }

    /// The gRPC status code a gRPC caller gets instead (gRPC carries errors in `grpc-status`,
    /// not in the HTTP status): `RESOURCE_EXHAUSTED` (8) for a caller's limit, `UNAVAILABLE`
    /// (14) for self-protection — which gRPC clients treat as retryable — and
    /// `DEADLINE_EXCEEDED` (4) for a spent deadline.
    pub const fn grpc_status(self) -> u8 {
        match self {
            RejectReason::RateLimited
            | RejectReason::QuotaExhausted
            | RejectReason::BudgetExhausted => 8,
            RejectReason::Overloaded
            | RejectReason::ConcurrencyLimit
            | RejectReason::BulkheadFull
            | RejectReason::QueueTimeout
            | RejectReason::CircuitOpen
            | RejectReason::Throttled
            | RejectReason::FaultInjected
            | RejectReason::Degraded => 14,
            RejectReason::DeadlineExceeded => 4,
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of a call that was let through, as the algorithms that learn from outcomes
/// count it: breakers, the SRE throttle, learned concurrency limits.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The backend accepted and handled the call (the SRE book's "accepts"); its latency is a
    /// sample.
    Success,
    /// The backend refused or failed the call: a 5xx or 429 answer, a timeout, a transport
    /// error. For breakers a request without an accept; for learned limits a drop signal.
    Failure,
    /// Says nothing about the backend: the call was refused locally (a limiter, shedder or
    /// another breaker of ours) or cancelled by the caller before an answer came. Not counted
    /// at all (kratos#2777). A 4xx answer is a [`Outcome::Success`]: the backend accepted and
    /// judged the request.
    Ignored,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_limits_are_429_self_protection_is_503_deadlines_504() {
        assert_eq!(RejectReason::RateLimited.http_status(), 429);
        assert_eq!(RejectReason::Overloaded.http_status(), 503);
        assert_eq!(RejectReason::CircuitOpen.http_status(), 503);
        assert_eq!(RejectReason::DeadlineExceeded.http_status(), 504);
    }

    #[test]
    fn retry_after_header_rounds_up_to_whole_seconds() {
        let r = Rejection::new(RejectReason::RateLimited);
        assert_eq!(r.retry_after_header_secs(), None);
        assert_eq!(r.retry_after(Duration::from_millis(1)).retry_after_header_secs(), Some(1));
        assert_eq!(r.retry_after(Duration::from_secs(2)).retry_after_header_secs(), Some(2));
        assert_eq!(r.retry_after(Duration::from_millis(2001)).retry_after_header_secs(), Some(3));
    }

    #[test]
    fn json_body_names_the_reason_and_the_wait() {
        let r = Rejection::new(RejectReason::Overloaded);
        assert_eq!(r.json_body(), "{\"error\":\"overloaded\"}\n");
        let r = r.retry_after(Duration::from_millis(1500));
        assert_eq!(r.json_body(), "{\"error\":\"overloaded\",\"retry_after_ms\":1500}\n");
    }

    #[test]
    fn grpc_callers_get_resource_exhausted_unavailable_or_deadline_exceeded() {
        assert_eq!(RejectReason::QuotaExhausted.grpc_status(), 8);
        assert_eq!(RejectReason::Throttled.grpc_status(), 14);
        assert_eq!(RejectReason::DeadlineExceeded.grpc_status(), 4);
    }

    #[test]
    fn only_reject_is_not_admitted() {
        assert!(Decision::Admit.is_admitted());
        assert!(Decision::Wait(Duration::from_millis(3)).is_admitted());
        let d = Decision::reject(RejectReason::RateLimited, Some(Duration::from_secs(1)));
        assert!(!d.is_admitted());
        assert_eq!(d.rejection().map(|r| r.reason), Some(RejectReason::RateLimited));
    }
}
