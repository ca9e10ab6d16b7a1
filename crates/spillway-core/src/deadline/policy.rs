//! A route's deadline policy: which incoming budget to honour, how far to cap it, what to use
//! when none came, and below which budget to fail fast instead of starting work.
//!
//! It works on raw header bytes so that the core stays free of any HTTP crate; the tower layer
//! and the gateway hand it the values of `grpc-timeout` and `x-request-timeout`.

use super::header::{parse_grpc_timeout, parse_request_timeout, TimeoutParseError};
use super::Deadline;
use crate::clock::Instant;
use crate::decision::{RejectReason, Rejection};
use std::time::Duration;

/// The deadline information an incoming request carries.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct IncomingTimeouts<'a> {
    /// The raw `grpc-timeout` value, if the header is present.
    pub grpc_timeout: Option<&'a [u8]>,
    /// The raw `x-request-timeout` value, if the header is present.
    pub request_timeout: Option<&'a [u8]>,
    /// A deadline already set in this process (by an outer layer or the calling task). It is
    /// always honoured, even by a policy that ignores headers: a nested layer can tighten an
    /// outer deadline, never extend it.
    pub in_process: Option<Deadline>,
}

/// What decided a granted deadline.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DeadlineSource {
    /// The incoming `grpc-timeout` header.
    GrpcTimeout,
    /// The incoming `x-request-timeout` header.
    RequestTimeout,
    /// The route's default: no (valid) incoming budget, or the policy ignores headers.
    RouteDefault,
    /// The route's cap, shorter than the incoming budget.
    RouteCap,
    /// A deadline already set in this process, shorter than everything else.
    InProcess,
}

/// A request allowed to proceed, and the deadline it must meet.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct GrantedDeadline {
    /// The deadline to enforce and propagate.
    pub deadline: Deadline,
    /// The budget at the moment of the decision (`deadline - now`).
    pub budget: Duration,
    /// Which bound decided it.
    pub source: DeadlineSource,
    /// A timeout header that was present but malformed and therefore ignored (the first one
    /// found), for the caller to log or count.
    pub malformed: Option<TimeoutParseError>,
}

/// A route's deadline rules. Built with [`DeadlinePolicy::builder`], validated in
/// [`DeadlinePolicyBuilder::build`].
///
/// ```
/// use std::time::Duration;
/// use spillway_core::deadline::{DeadlinePolicy, IncomingTimeouts};
/// use spillway_core::{Instant, RejectReason};
///
/// let policy = DeadlinePolicy::builder(Duration::from_secs(2))
///     .max_budget(Duration::from_secs(5))
///     .min_budget(Duration::from_millis(20))
///     .build()
///     .unwrap();
/// let now = Instant::ZERO;
/// let incoming = IncomingTimeouts { grpc_timeout: Some(b"100m"), ..Default::default() };
/// let granted = policy.decide(incoming, now).unwrap();
/// assert_eq!(granted.budget, Duration::from_millis(100));
///
/// let incoming = IncomingTimeouts { request_timeout: Some(b"5ms"), ..Default::default() };
/// let refused = policy.decide(incoming, now).unwrap_err();
/// assert_eq!(refused.reason, RejectReason::DeadlineExceeded);
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DeadlinePolicy {
    default_budget: Duration,
    max_budget: Option<Duration>,
    min_budget: Duration,
    honour_incoming: bool,
}

impl DeadlinePolicy {
    /// The default minimum budget: 1 ms. Less than that cannot pay for a network hop plus any
    /// work, so starting is pointless; routes that know their floor should set a real one.
    pub const DEFAULT_MIN_BUDGET: Duration = Duration::from_millis(1);

    /// Starts a policy whose budget, when the request brings none, is `default_budget`.
    pub fn builder(default_budget: Duration) -> DeadlinePolicyBuilder {
        DeadlinePolicyBuilder {
            policy: DeadlinePolicy {
                default_budget,
                max_budget: None,
                min_budget: DeadlinePolicy::DEFAULT_MIN_BUDGET,
                honour_incoming: true,
            },
        }
    }

    /// The budget used when the request brings none.
    pub fn default_budget(&self) -> Duration {
        self.default_budget
    }

    /// The longest budget the route grants, if capped.
    pub fn max_budget(&self) -> Option<Duration> {
        self.max_budget
    }

    /// Below this remaining budget the request fails fast.
    pub fn min_budget(&self) -> Duration {
        self.min_budget
    }

    /// Decides at `now`: proceed with a deadline, or fail fast with
    /// [`RejectReason::DeadlineExceeded`] (504) because the budget is spent or below the
    /// minimum.
    ///
    /// The budget is the smallest of the valid incoming headers (a caller that sends both has
    /// promised to wait for neither longer than the shorter), else the route default; then
    /// capped by the route's maximum, then by an in-process deadline. A malformed header is
    /// ignored — it neither fails the request nor lengthens the budget beyond the default —
    /// and reported in [`GrantedDeadline::malformed`].
    pub fn decide(
        &self,
        incoming: IncomingTimeouts<'_>,
        now: Instant,
    ) -> Result<GrantedDeadline, Rejection> {
        let mut best: Option<(Duration, DeadlineSource)> = None;
        let mut malformed = None;
        if self.honour_incoming {
            let headers = [
                (incoming.grpc_timeout.map(parse_grpc_timeout), DeadlineSource::GrpcTimeout),
                (
                    incoming.request_timeout.map(parse_request_timeout),
                    DeadlineSource::RequestTimeout,
                ),
            ];
            for (parsed, source) in headers {
                match parsed {
                    Some(Ok(budget)) if best.is_none_or(|(b, _)| budget < b) => {
                        best = Some((budget, source));
                    }
                    Some(Err(e)) if malformed.is_none() => malformed = Some(e),
                    _ => {}
                }
            }
        }
        let (mut budget, mut source) =
            best.unwrap_or((self.default_budget, DeadlineSource::RouteDefault));
        if let Some(max) = self.max_budget {
            if budget > max {
                budget = max;
                source = DeadlineSource::RouteCap;
            }
        }
        if let Some(outer) = incoming.in_process {
            let left = outer.remaining(now);
            if left < budget {
                budget = left;
                source = DeadlineSource::InProcess;
            }
        }
        if budget.is_zero() || budget < self.min_budget {
            return Err(Rejection::new(RejectReason::DeadlineExceeded));
        }
        Ok(GrantedDeadline { deadline: Deadline::after(now, budget), budget, source, malformed })
    }
}

/// Builds a [`DeadlinePolicy`]; see [`DeadlinePolicy::builder`].
#[derive(Copy, Clone, Debug)]
#[must_use]
pub struct DeadlinePolicyBuilder {
    policy: DeadlinePolicy,
}

impl DeadlinePolicyBuilder {
    /// Caps every budget, incoming or default, at `max`.
    pub fn max_budget(mut self, max: Duration) -> Self {
        self.policy.max_budget = Some(max);
        self
    }

    /// Fails fast when less than `min` is left (default
    /// [`DeadlinePolicy::DEFAULT_MIN_BUDGET`]). A spent budget always fails fast, even with a
    /// zero minimum.
    pub fn min_budget(mut self, min: Duration) -> Self {
        self.policy.min_budget = min;
        self
    }

    /// Overrides the caller: ignore `grpc-timeout` and `x-request-timeout` and always use the
    /// route default (an in-process deadline still applies).
    pub fn ignore_incoming(mut self) -> Self {
        self.policy.honour_incoming = false;
        self
    }

    /// Validates and returns the policy.
    pub fn build(self) -> Result<DeadlinePolicy, DeadlinePolicyError> {
        let p = self.policy;
        if p.default_budget.is_zero() {
            return Err(DeadlinePolicyError::ZeroDefault);
        }
        if let Some(max) = p.max_budget {
            if p.default_budget > max {
                return Err(DeadlinePolicyError::DefaultAboveMax {
                    default: p.default_budget,
                    max,
                });
            }
        }
        if p.min_budget >= p.default_budget {
            return Err(DeadlinePolicyError::MinNotBelowDefault {
                min: p.min_budget,
                default: p.default_budget,
            });
        }
        Ok(p)
    }
}

/// A deadline policy that contradicts itself.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeadlinePolicyError {
    /// A zero default would fail every request that brings no budget.
    #[error("default budget is zero: every request without a timeout header would fail fast")]
    ZeroDefault,
    /// The default exceeds the cap that is meant to bound every budget.
    #[error("default budget {default:?} is above the maximum budget {max:?}")]
    DefaultAboveMax {
        /// The default budget.
        default: Duration,
        /// The cap.
        max: Duration,
    },
    /// The minimum is not below the default: requests without a header would all fail fast.
    #[error("minimum budget {min:?} is not below the default budget {default:?}")]
    MinNotBelowDefault {
        /// The minimum budget.
        min: Duration,
        /// The default budget.
        default: Duration,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deadline::header::TimeoutHeader;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy() -> DeadlinePolicy {
        let built =
            DeadlinePolicy::builder(ms(1000)).max_budget(ms(3000)).min_budget(ms(20)).build();
        assert!(built.is_ok(), "{built:?}");
        built.unwrap_or_else(|_| unreachable!())
    }

    fn grpc(v: &[u8]) -> IncomingTimeouts<'_> {
        IncomingTimeouts { grpc_timeout: Some(v), ..Default::default() }
    }

    fn http(v: &[u8]) -> IncomingTimeouts<'_> {
        IncomingTimeouts { request_timeout: Some(v), ..Default::default() }
    }

    const NOW: Instant = Instant::from_nanos(5_000_000_000);

    #[test]
    fn request_without_a_budget_gets_the_route_default() {
        let g = policy().decide(IncomingTimeouts::default(), NOW);
        assert_eq!(g.map(|g| (g.budget, g.source)), Ok((ms(1000), DeadlineSource::RouteDefault)));
    }

    #[test]
    fn incoming_grpc_timeout_sets_the_deadline() {
        let g = policy().decide(grpc(b"250m"), NOW);
        assert_eq!(
            g.map(|g| (g.deadline, g.source)),
            Ok((Deadline::after(NOW, ms(250)), DeadlineSource::GrpcTimeout))
        );
    }

    #[test]
    fn incoming_budget_may_exceed_the_default_up_to_the_cap() {
        let g = policy().decide(http(b"2s"), NOW);
        assert_eq!(g.map(|g| (g.budget, g.source)), Ok((ms(2000), DeadlineSource::RequestTimeout)));
        let g = policy().decide(http(b"1h"), NOW);
        assert_eq!(g.map(|g| (g.budget, g.source)), Ok((ms(3000), DeadlineSource::RouteCap)));
    }

    #[test]
    fn shorter_of_two_incoming_headers_wins() {
        let both = IncomingTimeouts {
            grpc_timeout: Some(b"300m"),
            request_timeout: Some(b"200ms"),
            in_process: None,
        };
        let g = policy().decide(both, NOW);
        assert_eq!(g.map(|g| (g.budget, g.source)), Ok((ms(200), DeadlineSource::RequestTimeout)));
    }

    #[test]
    fn deadline_shorter_than_min_fails_fast_with_504() {
        let refused = policy().decide(grpc(b"19m"), NOW);
        let reason = refused.err().map(|r| r.reason);
        assert_eq!(reason, Some(RejectReason::DeadlineExceeded));
        assert_eq!(reason.map(RejectReason::http_status), Some(504));
        assert!(policy().decide(grpc(b"20m"), NOW).is_ok());
    }

    #[test]
    fn spent_budget_fails_fast_even_with_a_zero_minimum() {
        let zero_min = DeadlinePolicy::builder(ms(1000)).min_budget(Duration::ZERO).build();
        let zero_min = zero_min.unwrap_or_else(|_| unreachable!());
        assert!(zero_min.decide(grpc(b"0n"), NOW).is_err());
        assert!(zero_min.decide(grpc(b"1n"), NOW).is_ok());
    }

    #[test]
    fn malformed_header_is_ignored_and_reported_not_fatal() {
        let g = policy().decide(grpc(b"250"), NOW);
        assert_eq!(g.map(|g| g.source), Ok(DeadlineSource::RouteDefault));
        let g = policy().decide(grpc(b"250"), NOW).ok().and_then(|g| g.malformed);
        assert_eq!(g.map(|e| e.header), Some(TimeoutHeader::GrpcTimeout));
        // A valid sibling header still counts.
        let mixed = IncomingTimeouts {
            grpc_timeout: Some(b"x"),
            request_timeout: Some(b"100ms"),
            in_process: None,
        };
        let g = policy().decide(mixed, NOW);
        assert_eq!(g.map(|g| (g.budget, g.malformed.is_some())), Ok((ms(100), true)));
    }

    #[test]
    fn override_ignores_incoming_headers_but_not_an_in_process_deadline() {
        let p = DeadlinePolicy::builder(ms(500)).ignore_incoming().build();
        let p = p.unwrap_or_else(|_| unreachable!());
        assert_eq!(p.decide(grpc(b"1m"), NOW).map(|g| g.budget), Ok(ms(500)));
        assert_eq!(p.decide(http(b"10s"), NOW).map(|g| g.budget), Ok(ms(500)));
        let outer = IncomingTimeouts {
            in_process: Some(Deadline::after(NOW, ms(40))),
            ..Default::default()
        };
        assert_eq!(
            p.decide(outer, NOW).map(|g| (g.budget, g.source)),
            Ok((ms(40), DeadlineSource::InProcess))
        );
    }

    #[test]
    fn in_process_deadline_can_only_tighten() {
        let outer = IncomingTimeouts {
            grpc_timeout: Some(b"100m"),
            in_process: Some(Deadline::after(NOW, ms(900))),
            ..Default::default()
        };
        assert_eq!(policy().decide(outer, NOW).map(|g| g.budget), Ok(ms(100)));
        let spent = IncomingTimeouts {
            in_process: Some(Deadline::after(NOW, ms(10))),
            ..Default::default()
        };
        assert!(policy().decide(spent, NOW + ms(10)).is_err());
    }

    #[test]
    fn contradictory_policies_are_refused_at_build_time() {
        assert_eq!(
            DeadlinePolicy::builder(Duration::ZERO).build(),
            Err(DeadlinePolicyError::ZeroDefault)
        );
        assert_eq!(
            DeadlinePolicy::builder(ms(500)).max_budget(ms(100)).build(),
            Err(DeadlinePolicyError::DefaultAboveMax { default: ms(500), max: ms(100) })
        );
        assert_eq!(
            DeadlinePolicy::builder(ms(50)).min_budget(ms(50)).build(),
            Err(DeadlinePolicyError::MinNotBelowDefault { min: ms(50), default: ms(50) })
        );
    }
}
