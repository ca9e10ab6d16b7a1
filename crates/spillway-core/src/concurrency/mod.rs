//! Concurrency limits learned from latency: AIMD and Gradient2-style limit algorithms, and the
//! [`ConcurrencyLimiter`] that admits requests while fewer than the learned limit are in flight.
//!
//! Why: the right concurrency for a service changes with its hardware, its dependencies and its
//! load mix, so any fixed number is wrong somewhere. Like TCP congestion control (and Netflix's
//! concurrency-limits), these algorithms probe upwards while latency stays healthy and back off
//! when it grows or requests fail, so queueing stays short and the service stays near its knee.
//!
//! Algorithms are plain state machines behind [`LimitAlgorithm`]: they are fed one sample per
//! completed request and answer with a limit. The limiter makes one shareable across threads.

mod aimd;
mod gradient2;
mod limiter;

pub use aimd::{Aimd, AimdConfig};
pub use gradient2::{Gradient2, Gradient2Config, QueueAllowance};
pub use limiter::{ConcurrencyLimiter, ConcurrencyToken, Outcome};

/// A concurrency limit chosen at run time (from a config): fixed, AIMD or Gradient2, behind
/// one type so a [`ConcurrencyLimiter`] can hold any of them without boxing.
#[derive(Debug)]
pub enum AnyLimit {
    /// A fixed limit that never learns.
    Fixed(u64),
    /// Additive increase, multiplicative decrease.
    Aimd(Aimd),
    /// Netflix's gradient.
    Gradient2(Gradient2),
}

impl LimitAlgorithm for AnyLimit {
    fn on_sample(&mut self, rtt: Duration, inflight: u64, dropped: bool, now: Instant) {
        match self {
            AnyLimit::Fixed(_) => {}
            AnyLimit::Aimd(a) => a.on_sample(rtt, inflight, dropped, now),
            AnyLimit::Gradient2(g) => g.on_sample(rtt, inflight, dropped, now),
        }
    }

    fn limit(&self) -> u64 {
        match self {
            AnyLimit::Fixed(n) => *n,
            AnyLimit::Aimd(a) => a.limit(),
            AnyLimit::Gradient2(g) => g.limit(),
        }
    }
}

use crate::clock::Instant;
use std::time::Duration;

/// An algorithm that learns a concurrency limit from completed requests.
pub trait LimitAlgorithm: Send {
    /// Records one completed request: its response time, how many requests were in flight when
    /// it started (itself included), and whether it was dropped (failed with overload, timed
    /// out, or was refused downstream).
    fn on_sample(&mut self, rtt: Duration, inflight: u64, dropped: bool, now: Instant);

    /// The current limit, within the algorithm's `[min, max]`.
    fn limit(&self) -> u64;
}

/// Why a limit algorithm's configuration was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitConfigError {
    /// `min_limit` was zero, above `max_limit`, or `initial_limit` was outside `[min, max]`.
    #[error("concurrency limits need 1 <= min <= initial <= max")]
    BadBounds,
    /// A ratio (backoff, smoothing, tolerance) or another setting (latency threshold, window
    /// sizes) was outside its allowed range.
    #[error("concurrency limit {0} out of range")]
    BadRatio(&'static str),
}

fn check_bounds(min: u64, initial: u64, max: u64) -> Result<(), LimitConfigError> {
    if min == 0 || min > initial || initial > max {
        Err(LimitConfigError::BadBounds)
    } else {
        Ok(())
    }
}
