//! Circuit breakers: Google SRE adaptive client throttling ([`SreThrottle`]) and the classic
//! closed / open / half-open state machine ([`CircuitBreaker`]).
//!
//! Both sit on the client side of a call, one per upstream, and learn from what the backend
//! answered. They share one vocabulary for that answer, [`Outcome`], whose
//! [`Outcome::Ignored`] exists so that a refusal made locally (by a limiter, a shedder, or a
//! breaker itself) is never counted as a backend failure (kratos#2777): counting it would let
//! one protection trip another and keep the circuit open on its own rejections.

mod classic;
mod sre;

pub use classic::{
    BreakerState, BreakerWindow, CallOutcome, CallTicket, CircuitBreaker, CircuitBreakerConfig,
    SlowCallTrigger, WindowStats,
};
pub use sre::{SreThrottle, SreThrottleConfig, ThrottleCounts};

pub use crate::decision::Outcome;

/// A breaker configuration that cannot work, found when the breaker is built.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// A value is out of its allowed range.
    #[error("{key}: {problem}")]
    Invalid {
        /// The configuration key, e.g. `k[SHEDDABLE]` or `failure_ratio`.
        key: &'static str,
        /// What is wrong with it, e.g. "must be at least 1".
        problem: &'static str,
    },
}

impl ConfigError {
    pub(crate) const fn invalid(key: &'static str, problem: &'static str) -> ConfigError {
        ConfigError::Invalid { key, problem }
    }
}
