//! Spillway's algorithm core: pure, clock-driven state machines for keeping services up under
//! load — rate limiters, adaptive overload protection, breakers, retries, deadlines, bulkheads,
//! load-balancing choosers and max-min fair shares.
//!
//! Nothing here performs I/O, spawns, sleeps or reads the system clock: every algorithm takes
//! `now` (an [`Instant`] from a [`Clock`]) and returns a decision value such as
//! [`Decision::Reject`]. The tower layers (`spillway-tower`) and the gateway
//! (`spillway-gateway`) put these cores on the request path.
//!
//! Shared vocabulary:
//! - [`clock`] — [`Instant`] (monotonic nanoseconds), the [`Clock`] trait, [`SystemClock`] and
//!   [`ManualClock`] for tests.
//! - [`decision`] — [`Decision`] (`Admit` / `Wait` / `Reject`), [`Rejection`] and
//!   [`RejectReason`] with its HTTP and gRPC status: the one mapping from a refusal to a response.
//! - [`criticality`] — [`Criticality`] (`CriticalPlus > Critical > SheddablePlus > Sheddable`)
//!   and its header form.
//! - [`window`] — [`RollingWindow`], a fixed ring of time buckets reused in place.
//!
//! Algorithms, one concept per module:
//! - [`rate`] — rate limiters (token bucket, GCRA, …) and keyed limiters over many keys.
//! - [`overload`] — the BBR-style CPU + inflight shedder, CoDel with adaptive LIFO, CPU values.
//! - [`concurrency`] — concurrency limits learned from latency (AIMD, Gradient2) and their limiter.
//! - [`breaker`] — Google SRE adaptive throttling and the closed / open / half-open breaker.
//! - [`retry`] — jittered exponential backoff, a retry budget, `Retry-After` parsing.
//! - [`deadline`] — [`deadline::Deadline`], `grpc-timeout` / `x-request-timeout`, fail-fast policy.
//! - [`bulkhead`] — bounded concurrency with a bounded, criticality-ordered queue.
//! - [`budget`] — cost budgets: granted by role at the entry, spent by each hop, the
//!   `x-spillway-budget` header.
//! - [`balance`] — round robin, smooth weighted round robin, least request, P2C peak-EWMA,
//!   consistent hashing.
//! - [`fair_share`] — max-min fair allocation of a capacity among clients' wants.
//! - [`latency`] — recent latency quantiles over a rolling window (hedging delays).
//! - [`hotkeys`] — the most requested keys now: Space-Saving top-K over decayed counts.
//!
//! Time is an argument, so a test moves it by hand instead of sleeping. A circuit breaker
//! driven by a [`ManualClock`]:
//!
//! ```
//! use spillway_core::breaker::{BreakerState, CallOutcome, CircuitBreaker, CircuitBreakerConfig};
//! use spillway_core::{Clock, ManualClock, RejectReason};
//! use std::time::Duration;
//!
//! let clock = ManualClock::new();
//! let config = CircuitBreakerConfig { failure_count: Some(3), ..Default::default() };
//! let mut breaker = CircuitBreaker::try_new(config)?;
//! for _ in 0..3 {
//!     let ticket = breaker.allow(clock.now()).expect("closed: admitted");
//!     breaker.record(ticket, CallOutcome::failure(Duration::from_millis(5)), clock.now());
//! }
//! let refused = breaker.allow(clock.now()).expect_err("open");
//! assert_eq!(refused.reason, RejectReason::CircuitOpen);
//! assert_eq!(refused.retry_after, Some(Duration::from_secs(5)));
//!
//! clock.advance(Duration::from_secs(5)); // no sleep: the test says time has passed
//! assert_eq!(breaker.state(clock.now()), BreakerState::HalfOpen);
//! assert!(breaker.allow(clock.now()).is_ok_and(|t| t.is_probe())); // the first probe
//! # Ok::<(), spillway_core::breaker::ConfigError>(())
//! ```

#![forbid(unsafe_code)]

pub mod balance;
pub mod breaker;
pub mod budget;
pub mod bulkhead;
pub mod clock;
pub mod concurrency;
pub mod criticality;
pub mod deadline;
pub mod decision;
pub mod fair_share;
pub mod hotkeys;
pub mod latency;
pub mod overload;
pub mod random;
pub mod rate;
pub mod retry;
pub mod window;

#[cfg(feature = "system-clock")]
pub use clock::SystemClock;
pub use clock::{Clock, Instant, ManualClock};
pub use criticality::{Criticality, CRITICALITY_HEADER};
pub use decision::{Decision, Outcome, RejectReason, Rejection};
pub use window::RollingWindow;

/// The README's Rust examples, compiled and run as doctests so they stay true.
#[cfg(all(doctest, feature = "system-clock"))]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
