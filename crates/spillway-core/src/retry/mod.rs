//! Retries: exponential backoff with jitter ([`Backoff`]), a retry budget that keeps retries
//! a small share of traffic ([`RetryBudget`]), and the parsing of server retry hints
//! (`Retry-After`, [`parse_retry_after`]), and the one decision that combines them after a
//! try ([`RetryRules::next`]).
//!
//! Why all three: a retry that fixes a transient error for one caller becomes a retry storm
//! when the backend is down for everyone; backoff spreads retries in time, the budget bounds
//! how many there can be, and the server's own hint says when coming back is worthwhile.
//! Like every core algorithm these are pure: the caller passes `now` and the random values.

mod backoff;
mod budget;
mod retry_after;
mod rules;

pub use backoff::{Backoff, Jitter};
pub use budget::{RetryBudget, RetryBudgetConfig};
pub use retry_after::{format_http_date, parse_http_date, parse_retry_after};
pub use rules::{Attempts, RetryDecision, RetryRules, RetryStop, RetryVerdict};

/// Whether the HTTP method named `method` is idempotent (RFC 9110 §9.2.2: GET, HEAD, OPTIONS,
/// TRACE, PUT, DELETE), i.e. safe to send again when an attempt's outcome is unknown. Method
/// names are case-sensitive.
pub fn is_idempotent_method(method: &str) -> bool {
    matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE")
}

/// A retry configuration that cannot work, found when it is built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct RetryConfigError {
    /// The configuration key, e.g. `backoff.base`.
    pub key: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl RetryConfigError {
    pub(crate) const fn new(key: &'static str, problem: &'static str) -> RetryConfigError {
        RetryConfigError { key, problem }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_rfc_9110_idempotent_methods_are_idempotent() {
        for m in ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"] {
            assert!(is_idempotent_method(m), "{m}");
        }
        for m in ["POST", "PATCH", "CONNECT", "get", "PURGE", ""] {
            assert!(!is_idempotent_method(m), "{m}");
        }
    }
}
