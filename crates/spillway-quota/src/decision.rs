//! What a global limit answers for one request: admitted or not, and the numbers for the
//! `RateLimit-*` and `Retry-After` headers.
//!
//! Why not just `spillway_core::Decision`: a global limit also tells the client its limit, what
//! remains and when it resets, and the operator where the answer came from (the store, the
//! over-limit cache, a lease, a fallback). [`QuotaDecision::to_decision`] gives the core value,
//! so the mapping to an HTTP status stays in one place.

use crate::fallback::DecisionSource;
use serde::Serialize;
use spillway_core::{Decision, RejectReason};
use std::time::Duration;

/// Which kind of global limit answered.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitMode {
    /// One store script per request ([`crate::ExactLimiter`]).
    Exact,
    /// Local buckets under leases ([`crate::LeaseLimiter`]).
    Lease,
    /// One fixed-window counter step per request ([`crate::CounterLimiter`]).
    Counter,
}

/// A global limit's answer for one request.
#[derive(Copy, Clone, Debug, PartialEq, Serialize)]
pub struct QuotaDecision {
    /// The request may go ahead.
    pub admitted: bool,
    /// The limit as configured, permits per period (`RateLimit-Limit`).
    pub limit: u64,
    /// Permits left right after this request (`RateLimit-Remaining`), when known.
    pub remaining: Option<u64>,
    /// Time until the limit is fully replenished (`RateLimit-Reset`), when known.
    pub reset_after: Option<Duration>,
    /// On a rejection, when a retry could be admitted (`Retry-After`), when known.
    pub retry_after: Option<Duration>,
    /// Exact, lease or counter.
    pub mode: LimitMode,
    /// Where the answer came from.
    pub source: DecisionSource,
}

impl QuotaDecision {
    /// The core decision: admit, or reject as `rate_limited` (exact and counter mode) or
    /// `quota_exhausted` (lease mode: the instance's share of a global limit is used up),
    /// with the retry hint.
    pub fn to_decision(&self) -> Decision {
        if self.admitted {
            return Decision::Admit;
        }
        let reason = match self.mode {
            LimitMode::Exact | LimitMode::Counter => RejectReason::RateLimited,
            LimitMode::Lease => RejectReason::QuotaExhausted,
        };
        Decision::reject(reason, self.retry_after)
    }
}
