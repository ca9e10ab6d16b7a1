//! Deadlines: a request's remaining time budget, parsed from and formatted to `grpc-timeout`
//! and `x-request-timeout`, and the per-route decision to proceed or fail fast.
//!
//! A deadline is absolute ([`Deadline`], an [`Instant`]) inside a process and relative on the
//! wire (a budget): each hop turns the incoming budget into a deadline on its own clock, and
//! sends downstream only what is left, minus a margin for the answer to travel back. A hop
//! that receives less than it needs to do useful work answers 504 at once instead of
//! starting work whose result nobody will wait for (Google SRE book, "Handling Overload";
//! kratos' timeout propagation).
//!
//! ```
//! use std::time::Duration;
//! use spillway_core::deadline::{format_grpc_timeout, Deadline};
//! use spillway_core::Instant;
//!
//! let now = Instant::from_nanos(0);
//! let deadline = Deadline::after(now, Duration::from_millis(300));
//! let later = now + Duration::from_millis(100);
//! // 200 ms left, minus 5 ms for the response to travel back.
//! let budget = deadline.shrink(Duration::from_millis(5)).remaining(later);
//! assert_eq!(format_grpc_timeout(budget).as_str(), "195000u");
//! ```

mod header;
mod policy;

pub use header::{
    format_grpc_timeout, format_request_timeout, parse_duration, parse_grpc_timeout,
    parse_request_timeout, BareNumber, TimeoutErrorKind, TimeoutHeader, TimeoutParseError,
    TimeoutValue, GRPC_TIMEOUT_HEADER, REQUEST_TIMEOUT_HEADER,
};
pub use policy::{
    DeadlinePolicy, DeadlinePolicyBuilder, DeadlinePolicyError, DeadlineSource, GrantedDeadline,
    IncomingTimeouts,
};

use crate::clock::Instant;
use std::time::Duration;

/// The instant by which a request must be answered. Only deadlines from the same clock may be
/// compared; on the wire a deadline travels as a relative budget.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline {
    at: Instant,
}

impl Deadline {
    /// The deadline at `at`.
    #[inline]
    pub const fn at(at: Instant) -> Deadline {
        Deadline { at }
    }

    /// The deadline `budget` after `now` (saturating far in the future).
    #[inline]
    pub fn after(now: Instant, budget: Duration) -> Deadline {
        Deadline { at: now + budget }
    }

    /// The instant of the deadline.
    #[inline]
    pub const fn instant(self) -> Instant {
        self.at
    }

    /// The time left at `now`; zero once the deadline has passed.
    #[inline]
    pub fn remaining(self, now: Instant) -> Duration {
        self.at.saturating_duration_since(now)
    }

    /// True from the deadline's instant on: no time is left.
    #[inline]
    pub fn is_expired(self, now: Instant) -> bool {
        now >= self.at
    }

    /// The deadline moved `margin` earlier, e.g. to leave time for a response to travel back
    /// before the caller gives up. Stops at the clock's origin.
    #[inline]
    pub fn shrink(self, margin: Duration) -> Deadline {
        Deadline { at: self.at - margin }
    }

    /// The earlier of two deadlines: a route can cap an inherited deadline, a nested layer can
    /// only tighten an outer one.
    #[inline]
    #[must_use]
    pub fn min(self, other: Deadline) -> Deadline {
        if other.at < self.at {
            other
        } else {
            self
        }
    }

    /// The deadline capped so that at most `max_budget` is left at `now`.
    #[inline]
    #[must_use]
    pub fn cap(self, now: Instant, max_budget: Duration) -> Deadline {
        self.min(Deadline::after(now, max_budget))
    }

    /// The budget to send to a downstream call made at `now`: what is left after keeping
    /// `margin` for the response to travel back. Zero means "do not call".
    #[inline]
    pub fn downstream_budget(self, now: Instant, margin: Duration) -> Duration {
        self.shrink(margin).remaining(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn remaining_counts_down_to_zero_and_then_is_expired() {
        let clock = ManualClock::new();
        let d = Deadline::after(clock.now(), ms(100));
        assert_eq!(d.remaining(clock.now()), ms(100));
        assert!(!d.is_expired(clock.now()));
        clock.advance_ms(60);
        assert_eq!(d.remaining(clock.now()), ms(40));
        clock.advance_ms(40);
        assert_eq!(d.remaining(clock.now()), Duration::ZERO);
        assert!(d.is_expired(clock.now()));
        clock.advance_ms(1000);
        assert_eq!(d.remaining(clock.now()), Duration::ZERO);
    }

    #[test]
    fn shrink_leaves_a_margin_and_saturates_at_the_origin() {
        let now = Instant::from_nanos(0) + ms(10);
        let d = Deadline::after(now, ms(100));
        assert_eq!(d.shrink(ms(5)).remaining(now), ms(95));
        assert_eq!(d.shrink(ms(500)).instant(), Instant::ZERO);
        assert!(d.shrink(ms(500)).is_expired(now));
    }

    #[test]
    fn min_and_cap_only_ever_tighten() {
        let now = Instant::from_nanos(1_000);
        let long = Deadline::after(now, ms(500));
        let short = Deadline::after(now, ms(50));
        assert_eq!(long.min(short), short);
        assert_eq!(short.min(long), short);
        assert_eq!(long.cap(now, ms(200)).remaining(now), ms(200));
        assert_eq!(short.cap(now, ms(200)), short);
    }

    #[test]
    fn downstream_budget_is_remaining_minus_margin() {
        let clock = ManualClock::new();
        let d = Deadline::after(clock.now(), ms(300));
        clock.advance_ms(100);
        assert_eq!(d.downstream_budget(clock.now(), ms(10)), ms(190));
        clock.advance_ms(195);
        assert_eq!(d.downstream_budget(clock.now(), ms(10)), Duration::ZERO);
    }
}
