//! The classic circuit breaker: a closed / open / half-open state machine over a count- or
//! time-based window of call outcomes.
//!
//! Why, next to the SRE throttle: some failures call for a hard stop (a dependency that is
//! down, a quota that is gone), and operators think in rules such as "500/503 over 100 times:
//! open; after 5 minutes try 10 calls". This breaker states those rules directly:
//!
//! - **Closed**: every call goes through; outcomes fill the window. The breaker trips when the
//!   failure count reaches its threshold, or — once the window holds `min_calls` calls — when
//!   the failure ratio or the slow-call ratio reaches its threshold.
//! - **Open**: every call is refused with [`RejectReason::CircuitOpen`] and a retry hint (the
//!   time left until half-open). The open time grows by a factor on each consecutive trip
//!   (capped) so a backend that keeps failing its probes is left alone longer.
//! - **Half-open**: at most `half_open_probes` calls go through; the breaker closes when
//!   `half_open_successes` of them succeed and opens again as soon as that has become
//!   impossible.
//!
//! The open → half-open step happens lazily, in [`CircuitBreaker::allow`]: no timer is needed.

use super::{ConfigError, Outcome};
use crate::clock::{duration_nanos, Instant};
use crate::decision::{RejectReason, Rejection};
use crate::window::{Tally, WindowTotals};
use std::time::Duration;

/// Which recent calls the breaker judges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BreakerWindow {
    /// The last `calls` calls, however old.
    Count {
        /// How many calls.
        calls: u32,
    },
    /// The calls of the last `span`, in `buckets` buckets (the window slides a bucket at a
    /// time).
    Time {
        /// How far back.
        span: Duration,
        /// Number of buckets.
        buckets: u32,
    },
}

/// The slow-call trigger: a call that took `threshold` or longer is slow; the breaker trips
/// when the share of slow calls reaches `ratio`.
#[derive(Clone, Debug, PartialEq)]
pub struct SlowCallTrigger {
    /// A call at least this long is slow.
    pub threshold: Duration,
    /// Trip when slow calls / calls reaches this (in `(0, 1]`).
    pub ratio: f64,
}

/// How a [`CircuitBreaker`] behaves. Start from [`CircuitBreakerConfig::default`].
#[derive(Clone, Debug, PartialEq)]
pub struct CircuitBreakerConfig {
    /// The window of calls judged while closed. Default: the last 10 s in 10 buckets.
    pub window: BreakerWindow,
    /// Trip when failures / calls reaches this, in `(0, 1]`. Default `Some(0.5)`.
    pub failure_ratio: Option<f64>,
    /// Trip when failures in the window reach this many, whatever the ratio ("500/503 over
    /// 100 times"). Not gated by `min_calls`. Default `None`.
    pub failure_count: Option<u64>,
    /// Trip on slow calls. Default `None`.
    pub slow_calls: Option<SlowCallTrigger>,
    /// The ratio triggers wait until the window holds this many calls, so that 1 failure out
    /// of 1 call does not trip. Default 20.
    pub min_calls: u64,
    /// How long the breaker stays open after its first trip. Default 5 s.
    pub open_duration: Duration,
    /// Each further trip without closing in between multiplies the open time by this
    /// (at least 1; 1 turns growth off). Default 2.
    pub open_backoff: f64,
    /// The open time never grows past this. Default 60 s.
    pub max_open_duration: Duration,
    /// How many trial calls half-open lets through. Default 5.
    pub half_open_probes: u32,
    /// How many of those must succeed to close (at most `half_open_probes`). Default 5: every
    /// probe must succeed.
    pub half_open_successes: u32,
    /// A probe that has reported nothing after this long is presumed lost and its slot is
    /// given to a new probe, so a lost outcome cannot keep the breaker half-open forever.
    /// Default 30 s.
    pub probe_timeout: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            window: BreakerWindow::Time { span: Duration::from_secs(10), buckets: 10 },
            failure_ratio: Some(0.5),
            failure_count: None,
            slow_calls: None,
            min_calls: 20,
            open_duration: Duration::from_secs(5),
            open_backoff: 2.0,
            max_open_duration: Duration::from_secs(60),
            half_open_probes: 5,
            half_open_successes: 5,
            probe_timeout: Duration::from_secs(30),
        }
    }
}

impl CircuitBreakerConfig {
    /// Checks every value; [`CircuitBreaker::try_new`] calls this.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.window {
            BreakerWindow::Count { calls: 0 } => {
                return Err(ConfigError::invalid("window.calls", "must be at least 1"));
            }
            BreakerWindow::Time { buckets: 0, .. } => {
                return Err(ConfigError::invalid("window.buckets", "must be at least 1"));
            }
            BreakerWindow::Time { span, buckets }
                if duration_nanos(span) / u64::from(buckets) == 0 =>
            {
                return Err(ConfigError::invalid(
                    "window.span",
                    "must be at least 1 ns per bucket",
                ));
            }
            _ => {}
        }
        let ratio_ok = |r: f64| r > 0.0 && r <= 1.0;
        if self.failure_ratio.is_some_and(|r| !ratio_ok(r)) {
            return Err(ConfigError::invalid("failure_ratio", "must be in (0, 1]"));
        }
        if self.failure_count == Some(0) {
            return Err(ConfigError::invalid("failure_count", "must be at least 1"));
        }
        if let Some(slow) = &self.slow_calls {
            if !ratio_ok(slow.ratio) {
                return Err(ConfigError::invalid("slow_calls.ratio", "must be in (0, 1]"));
            }
        }
        if self.failure_ratio.is_none() && self.failure_count.is_none() && self.slow_calls.is_none()
        {
            return Err(ConfigError::invalid(
                "failure_ratio",
                "at least one trigger (failure_ratio, failure_count, slow_calls) is needed",
            ));
        }
        if self.open_duration.is_zero() {
            return Err(ConfigError::invalid("open_duration", "must be longer than zero"));
        }
        if !self.open_backoff.is_finite() || self.open_backoff < 1.0 {
            return Err(ConfigError::invalid("open_backoff", "must be a number of at least 1"));
        }
        if self.max_open_duration < self.open_duration {
            return Err(ConfigError::invalid(
                "max_open_duration",
                "must be at least open_duration",
            ));
        }
        if self.half_open_probes == 0 {
            return Err(ConfigError::invalid("half_open_probes", "must be at least 1"));
        }
        if self.half_open_successes == 0 || self.half_open_successes > self.half_open_probes {
            return Err(ConfigError::invalid(
                "half_open_successes",
                "must be between 1 and half_open_probes",
            ));
        }
        if self.probe_timeout.is_zero() {
            return Err(ConfigError::invalid("probe_timeout", "must be longer than zero"));
        }
        Ok(())
    }
}

/// What a call did, as the breaker judges it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CallOutcome {
    /// Success, failure, or nothing to say about the backend.
    pub outcome: Outcome,
    /// How long the call took (for the slow-call trigger).
    pub latency: Duration,
}

impl CallOutcome {
    /// A call the backend served, in `latency`.
    pub const fn success(latency: Duration) -> CallOutcome {
        CallOutcome { outcome: Outcome::Success, latency }
    }

    /// A call the backend failed, after `latency`.
    pub const fn failure(latency: Duration) -> CallOutcome {
        CallOutcome { outcome: Outcome::Failure, latency }
    }

    /// A call that says nothing about the backend (refused locally, cancelled).
    pub const fn ignored() -> CallOutcome {
        CallOutcome { outcome: Outcome::Ignored, latency: Duration::ZERO }
    }
}

/// The breaker's state, for metrics and logs.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Calls go through and are judged.
    Closed,
    /// Calls are refused.
    Open,
    /// A few trial calls go through.
    HalfOpen,
}

impl BreakerState {
    /// A snake_case name for metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// A gauge value: 0 closed, 1 half-open, 2 open.
    pub const fn as_gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }
}

/// Calls, failures and slow calls in the window.
#[derive(Copy, Clone, Default, Debug, PartialEq, Eq)]
pub struct WindowStats {
    /// Calls judged (ignored ones are not).
    pub calls: u64,
    /// Of which failed.
    pub failures: u64,
    /// Of which were slow (failed or not).
    pub slow: u64,
}

impl Tally for WindowStats {
    #[inline]
    fn absorb(&mut self, other: &Self) {
        self.calls = self.calls.saturating_add(other.calls);
        self.failures = self.failures.saturating_add(other.failures);
        self.slow = self.slow.saturating_add(other.slow);
    }
}

const FAILED: u8 = 1;
const SLOW: u8 = 2;

/// The last N calls as a ring of flags with running counts.
#[derive(Clone, Debug)]
struct CountWindow {
    flags: Box<[u8]>,
    next: usize,
    filled: usize,
    stats: WindowStats,
}

impl CountWindow {
    fn new(calls: usize) -> CountWindow {
        CountWindow {
            flags: vec![0; calls.max(1)].into_boxed_slice(),
            next: 0,
            filled: 0,
            stats: WindowStats::default(),
        }
    }

    fn push(&mut self, flags: u8) {
        if self.filled == self.flags.len() {
            let old = self.flags[self.next];
            self.stats.calls -= 1;
            self.stats.failures -= u64::from(old & FAILED);
            self.stats.slow -= u64::from((old & SLOW) >> 1);
        } else {
            self.filled += 1;
        }
        self.flags[self.next] = flags;
        self.next = (self.next + 1) % self.flags.len();
        self.stats.calls += 1;
        self.stats.failures += u64::from(flags & FAILED);
        self.stats.slow += u64::from((flags & SLOW) >> 1);
    }

    fn clear(&mut self) {
        self.next = 0;
        self.filled = 0;
        self.stats = WindowStats::default();
    }
}

#[derive(Clone, Debug)]
enum Window {
    Count(CountWindow),
    Time(WindowTotals<WindowStats>),
}

impl Window {
    #[inline]
    fn push(&mut self, flags: u8, now: Instant) -> WindowStats {
        match self {
            Window::Count(w) => {
                w.push(flags);
                w.stats
            }
            Window::Time(w) => {
                let bucket = w.current_mut(now);
                bucket.absorb(&WindowStats {
                    calls: 1,
                    failures: u64::from(flags & FAILED),
                    slow: u64::from((flags & SLOW) >> 1),
                });
                w.totals(now)
            }
        }
    }

    fn stats(&mut self, now: Instant) -> WindowStats {
        match self {
            Window::Count(w) => w.stats,
            Window::Time(w) => w.totals(now),
        }
    }

    fn clear(&mut self) {
        match self {
            Window::Count(w) => w.clear(),
            Window::Time(w) => w.clear(),
        }
    }
}

/// Proof that [`CircuitBreaker::allow`] admitted a call: which generation of the breaker
/// admitted it, and whether as a half-open probe. Hand it back to [`CircuitBreaker::record`]
/// with the call's outcome, once (it is neither `Copy` nor `Clone`), so that an outcome is
/// judged only by the state that admitted the call.
#[must_use = "hand the ticket back to CircuitBreaker::record with the call's outcome"]
#[derive(Debug, PartialEq, Eq)]
pub struct CallTicket {
    generation: u64,
    probe: bool,
}

impl CallTicket {
    /// Whether the call was admitted as a half-open probe.
    pub const fn is_probe(&self) -> bool {
        self.probe
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    HalfOpen {
        /// Probes let through and not given back by an ignored outcome.
        admitted: u32,
        successes: u32,
        failures: u32,
        last_probe: Instant,
    },
}

/// A closed / open / half-open circuit breaker for one upstream.
///
/// ```
/// use spillway_core::breaker::{BreakerState, CallOutcome, CircuitBreaker, CircuitBreakerConfig};
/// use spillway_core::{Instant, RejectReason};
/// use std::time::Duration;
///
/// let config = CircuitBreakerConfig { failure_count: Some(3), ..Default::default() };
/// let mut breaker = CircuitBreaker::try_new(config).unwrap();
/// let now = Instant::ZERO;
/// for _ in 0..3 {
///     let ticket = breaker.allow(now).expect("closed: admitted");
///     breaker.record(ticket, CallOutcome::failure(Duration::from_millis(5)), now);
/// }
/// assert_eq!(breaker.state(now), BreakerState::Open);
/// let refused = breaker.allow(now).unwrap_err();
/// assert_eq!(refused.reason, RejectReason::CircuitOpen);
/// assert_eq!(refused.retry_after, Some(Duration::from_secs(5)));
/// ```
#[derive(Clone, Debug)]
pub struct CircuitBreaker {
    config: CircuitBreakerConfig,
    window: Window,
    state: State,
    /// Trips since the breaker last closed: sets the open time.
    consecutive_trips: u32,
    /// Every trip since construction (for metrics).
    trips: u64,
    /// Bumped by each trip, close and reclaiming of lost probes; stamped on each
    /// [`CallTicket`].
    generation: u64,
}

impl CircuitBreaker {
    /// A closed breaker with `config`, or why the configuration cannot work.
    pub fn try_new(config: CircuitBreakerConfig) -> Result<CircuitBreaker, ConfigError> {
        config.validate()?;
        let window = match config.window {
            BreakerWindow::Count { calls } => Window::Count(CountWindow::new(calls as usize)),
            BreakerWindow::Time { span, buckets } => {
                Window::Time(WindowTotals::new(span, buckets as usize))
            }
        };
        Ok(CircuitBreaker {
            config,
            window,
            state: State::Closed,
            consecutive_trips: 0,
            trips: 0,
            generation: 0,
        })
    }

    /// Whether a call may go now: a [`CallTicket`] to hand back to [`CircuitBreaker::record`]
    /// with the call's outcome, or the refusal. Open: refused with
    /// [`RejectReason::CircuitOpen`] and the time left until half-open. Half-open: admitted as a
    /// probe while probe slots remain, else refused without a hint.
    pub fn allow(&mut self, now: Instant) -> Result<CallTicket, Rejection> {
        if let State::Open { until } = self.state {
            if now < until {
                return Err(Rejection::new(RejectReason::CircuitOpen).retry_after(until - now));
            }
            self.state =
                State::HalfOpen { admitted: 0, successes: 0, failures: 0, last_probe: now };
        }
        match &mut self.state {
            State::Closed => Ok(CallTicket { generation: self.generation, probe: false }),
            State::Open { .. } => Err(Rejection::new(RejectReason::CircuitOpen)),
            State::HalfOpen { admitted, successes, failures, last_probe } => {
                let in_flight = *admitted - *successes - *failures;
                if *admitted >= self.config.half_open_probes
                    && in_flight > 0
                    && now.nanos_since(*last_probe) >= duration_nanos(self.config.probe_timeout)
                {
                    // The probes still out are presumed lost: give their slots to new ones, and
                    // start a generation so that a lost probe reporting late is not taken for
                    // one of the new ones.
                    *admitted = *successes + *failures;
                    self.generation = self.generation.wrapping_add(1);
                }
                if *admitted < self.config.half_open_probes {
                    *admitted += 1;
                    *last_probe = now;
                    Ok(CallTicket { generation: self.generation, probe: true })
                } else {
                    Err(Rejection::new(RejectReason::CircuitOpen))
                }
            }
        }
    }

    /// Records how the call admitted with `ticket` went.
    ///
    /// Which outcomes count (a trip, a close, and the reclaiming of lost probes each start a
    /// new generation):
    /// - **Half-open**: only the probes of the current generation. A call admitted before the
    ///   trip, or a probe presumed lost, neither counts as a probe nor — when `Ignored` — gives
    ///   a probe slot back.
    /// - **Closed**: calls admitted since the breaker (last) closed, and the probes still out
    ///   when half-open closed it (they were sent to the recovered backend). Calls admitted
    ///   before the last trip are not judged: the open time lies between them and now, and the
    ///   breaker already acted on their period.
    /// - **Open**: nothing (every call out was admitted before the trip).
    pub fn record(&mut self, ticket: CallTicket, call: CallOutcome, now: Instant) {
        let current = ticket.generation == self.generation;
        let slow = self.config.slow_calls.as_ref().is_some_and(|s| call.latency >= s.threshold);
        let failed = match call.outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            Outcome::Ignored => {
                if let State::HalfOpen { admitted, successes, failures, .. } = &mut self.state {
                    if current && ticket.probe && *admitted > *successes + *failures {
                        *admitted -= 1;
                    }
                }
                return;
            }
        };
        match &mut self.state {
            State::Closed => {
                let judged = if ticket.probe {
                    // A probe still out when half-open closed the breaker.
                    ticket.generation.wrapping_add(1) == self.generation
                } else {
                    current
                };
                if !judged {
                    return;
                }
                let flags = (u8::from(failed) * FAILED) | (u8::from(slow) * SLOW);
                let stats = self.window.push(flags, now);
                if self.should_trip(stats) {
                    self.trip(now);
                }
            }
            State::Open { .. } => {}
            State::HalfOpen { admitted, successes, failures, .. } => {
                if !(current && ticket.probe) || *admitted == *successes + *failures {
                    return;
                }
                if failed || slow {
                    *failures += 1;
                    let allowed = self.config.half_open_probes - self.config.half_open_successes;
                    if *failures > allowed {
                        self.trip(now);
                    }
                } else {
                    *successes += 1;
                    if *successes >= self.config.half_open_successes {
                        self.close();
                    }
                }
            }
        }
    }

    fn should_trip(&self, stats: WindowStats) -> bool {
        let c = &self.config;
        if c.failure_count.is_some_and(|n| stats.failures >= n) {
            return true;
        }
        if stats.calls == 0 || stats.calls < c.min_calls {
            return false;
        }
        let calls = stats.calls as f64;
        c.failure_ratio.is_some_and(|r| stats.failures as f64 >= r * calls)
            || c.slow_calls.as_ref().is_some_and(|s| stats.slow as f64 >= s.ratio * calls)
    }

    fn trip(&mut self, now: Instant) {
        self.consecutive_trips = self.consecutive_trips.saturating_add(1);
        self.trips = self.trips.saturating_add(1);
        self.state = State::Open { until: now + self.open_duration_for(self.consecutive_trips) };
        self.generation = self.generation.wrapping_add(1);
        self.window.clear();
    }

    fn close(&mut self) {
        self.consecutive_trips = 0;
        self.state = State::Closed;
        self.generation = self.generation.wrapping_add(1);
        self.window.clear();
    }

    /// The open time after the `trip`-th consecutive trip: `open_duration · backoff^(trip−1)`,
    /// capped at `max_open_duration`.
    fn open_duration_for(&self, trip: u32) -> Duration {
        let c = &self.config;
        let exponent = trip.saturating_sub(1).min(1024) as i32;
        let secs = c.open_duration.as_secs_f64() * c.open_backoff.powi(exponent);
        if !secs.is_finite() || secs >= c.max_open_duration.as_secs_f64() {
            c.max_open_duration
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The state at `now`. An open breaker whose open time has passed reports half-open: the
    /// next call will be a probe.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            State::Closed => BreakerState::Closed,
            State::Open { until } if now < until => BreakerState::Open,
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Calls, failures and slow calls in the closed-state window at `now`.
    pub fn window_stats(&mut self, now: Instant) -> WindowStats {
        self.window.stats(now)
    }

    /// How many times the breaker has tripped since it was built.
    pub fn trips(&self) -> u64 {
        self.trips
    }

    /// The configuration in force.
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};

    const MS: Duration = Duration::from_millis(1);

    fn breaker(config: CircuitBreakerConfig) -> CircuitBreaker {
        CircuitBreaker::try_new(config).expect("valid test config")
    }

    fn calls(b: &mut CircuitBreaker, outcome: CallOutcome, n: usize, now: Instant) {
        for _ in 0..n {
            let ticket = b.allow(now).expect("admitted");
            b.record(ticket, outcome, now);
        }
    }

    fn count_config(calls: u32) -> CircuitBreakerConfig {
        CircuitBreakerConfig {
            window: BreakerWindow::Count { calls },
            min_calls: 10,
            ..CircuitBreakerConfig::default()
        }
    }

    #[test]
    fn breaker_opens_after_error_ratio() {
        let mut b = breaker(count_config(20));
        let now = Instant::ZERO;
        calls(&mut b, CallOutcome::success(MS), 5, now);
        calls(&mut b, CallOutcome::failure(MS), 4, now);
        // 9 calls: below min_calls, the 44 % failure ratio is not judged yet.
        assert_eq!(b.state(now), BreakerState::Closed);
        calls(&mut b, CallOutcome::failure(MS), 1, now);
        // 10 calls, 5 failures: 50 % reaches the ratio.
        assert_eq!(b.state(now), BreakerState::Open);
        assert_eq!(b.trips(), 1);
    }

    #[test]
    fn successes_keep_the_ratio_below_the_threshold() {
        let mut b = breaker(count_config(20));
        let now = Instant::ZERO;
        for _ in 0..100 {
            calls(&mut b, CallOutcome::success(MS), 2, now);
            calls(&mut b, CallOutcome::failure(MS), 1, now);
        }
        assert_eq!(b.state(now), BreakerState::Closed);
    }

    #[test]
    fn count_window_forgets_calls_older_than_the_last_n() {
        let mut b = breaker(count_config(10));
        let now = Instant::ZERO;
        calls(&mut b, CallOutcome::failure(MS), 4, now);
        calls(&mut b, CallOutcome::success(MS), 10, now);
        assert_eq!(b.window_stats(now), WindowStats { calls: 10, failures: 0, slow: 0 });
        assert_eq!(b.state(now), BreakerState::Closed);
    }

    #[test]
    fn breaker_opens_after_error_count_without_min_calls() {
        let config = CircuitBreakerConfig {
            failure_ratio: None,
            failure_count: Some(100),
            min_calls: 1_000,
            ..CircuitBreakerConfig::default()
        };
        let mut b = breaker(config);
        let clock = ManualClock::new();
        calls(&mut b, CallOutcome::success(MS), 500, clock.now());
        calls(&mut b, CallOutcome::failure(MS), 99, clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
        clock.advance_ms(500);
        calls(&mut b, CallOutcome::failure(MS), 1, clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::Open);
    }

    #[test]
    fn time_window_forgets_failures_older_than_its_span() {
        let config = CircuitBreakerConfig {
            failure_ratio: None,
            failure_count: Some(10),
            ..CircuitBreakerConfig::default()
        };
        let mut b = breaker(config);
        let clock = ManualClock::new();
        calls(&mut b, CallOutcome::failure(MS), 9, clock.now());
        clock.advance(Duration::from_secs(10));
        calls(&mut b, CallOutcome::failure(MS), 9, clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
        assert_eq!(b.window_stats(clock.now()).failures, 9);
    }

    #[test]
    fn breaker_opens_on_slow_call_ratio() {
        let config = CircuitBreakerConfig {
            failure_ratio: Some(0.5),
            slow_calls: Some(SlowCallTrigger { threshold: Duration::from_secs(1), ratio: 0.8 }),
            ..count_config(10)
        };
        let mut b = breaker(config);
        let now = Instant::ZERO;
        calls(&mut b, CallOutcome::success(Duration::from_millis(999)), 2, now);
        calls(&mut b, CallOutcome::success(Duration::from_secs(1)), 7, now);
        assert_eq!(b.state(now), BreakerState::Closed);
        calls(&mut b, CallOutcome::success(Duration::from_secs(3)), 1, now);
        assert_eq!(b.state(now), BreakerState::Open);
    }

    #[test]
    fn ignored_calls_never_trip_the_breaker() {
        let mut b = breaker(count_config(10));
        let now = Instant::ZERO;
        for _ in 0..1_000 {
            let ticket = b.allow(now).expect("admitted");
            b.record(ticket, CallOutcome::ignored(), now);
        }
        assert_eq!(b.state(now), BreakerState::Closed);
        assert_eq!(b.window_stats(now).calls, 0);
    }

    fn trip(b: &mut CircuitBreaker, now: Instant) {
        calls(b, CallOutcome::failure(MS), 10, now);
        assert_eq!(b.state(now), BreakerState::Open);
    }

    #[test]
    fn open_breaker_rejects_with_time_until_half_open() {
        let mut b = breaker(count_config(10));
        let clock = ManualClock::new();
        trip(&mut b, clock.now());
        clock.advance_ms(1_500);
        assert_eq!(
            b.allow(clock.now()),
            Err(Rejection::new(RejectReason::CircuitOpen).retry_after(Duration::from_millis(3_500)))
        );
    }

    #[test]
    fn open_breaker_goes_half_open_after_open_duration_and_admits_only_the_probes() {
        let config = CircuitBreakerConfig {
            half_open_probes: 3,
            half_open_successes: 3,
            ..count_config(10)
        };
        let mut b = breaker(config);
        let clock = ManualClock::new();
        trip(&mut b, clock.now());
        clock.advance(Duration::from_secs(5));
        assert_eq!(b.state(clock.now()), BreakerState::HalfOpen);
        for _ in 0..3 {
            assert!(b.allow(clock.now()).is_ok_and(|t| t.is_probe()));
        }
        assert_eq!(b.allow(clock.now()), Err(Rejection::new(RejectReason::CircuitOpen)));
    }

    #[test]
    fn half_open_closes_when_enough_probes_succeed() {
        let config = CircuitBreakerConfig {
            half_open_probes: 10,
            half_open_successes: 8,
            ..count_config(10)
        };
        let mut b = breaker(config);
        let clock = ManualClock::new();
        trip(&mut b, clock.now());
        clock.advance(Duration::from_secs(5));
        calls(&mut b, CallOutcome::failure(MS), 2, clock.now());
        calls(&mut b, CallOutcome::success(MS), 7, clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::HalfOpen);
        calls(&mut b, CallOutcome::success(MS), 1, clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
        // Closing starts a fresh window.
        assert_eq!(b.window_stats(clock.now()), WindowStats::default());
    }

    #[test]
    fn half_open_reopens_as_soon_as_closing_is_impossible() {
        let config = CircuitBreakerConfig {
            half_open_probes: 10,
            half_open_successes: 8,
            ..count_config(10)
        };
        let mut b = breaker(config);
        let clock = ManualClock::new();
        trip(&mut b, clock.now());
        clock.advance(Duration::from_secs(5));
        calls(&mut b, CallOutcome::failure(MS), 2, clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::HalfOpen);
        calls(&mut b, CallOutcome::failure(MS), 1, clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::Open);
        assert_eq!(b.trips(), 2);
    }

    #[test]
    fn repeated_trips_lengthen_the_open_time_up_to_the_cap() {
        let config = CircuitBreakerConfig {
            half_open_probes: 1,
            half_open_successes: 1,
            open_duration: Duration::from_secs(5),
            open_backoff: 2.0,
            max_open_duration: Duration::from_secs(30),
            ..count_config(10)
        };
        let mut b = breaker(config);
        let clock = ManualClock::new();
        trip(&mut b, clock.now());
        let mut waits = Vec::new();
        for _ in 0..4 {
            let wait = b.allow(clock.now()).err().and_then(|r| r.retry_after);
            waits.push(wait.map(|d| d.as_secs()));
            clock.advance(wait.unwrap_or_default());
            calls(&mut b, CallOutcome::failure(MS), 1, clock.now()); // the probe fails
        }
        assert_eq!(waits, vec![Some(5), Some(10), Some(20), Some(30)]);
        // Closing resets the growth.
        clock.advance(Duration::from_secs(30));
        calls(&mut b, CallOutcome::success(MS), 1, clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
        trip(&mut b, clock.now());
        let wait = b.allow(clock.now()).err().and_then(|r| r.retry_after);
        assert_eq!(wait, Some(Duration::from_secs(5)));
    }

    #[test]
    fn slow_probe_counts_as_a_failed_probe() {
        let config = CircuitBreakerConfig {
            slow_calls: Some(SlowCallTrigger { threshold: Duration::from_secs(1), ratio: 1.0 }),
            half_open_probes: 1,
            half_open_successes: 1,
            ..count_config(10)
        };
        let mut b = breaker(config);
        let clock = ManualClock::new();
        trip(&mut b, clock.now());
        clock.advance(Duration::from_secs(5));
        calls(&mut b, CallOutcome::success(Duration::from_secs(2)), 1, clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::Open);
    }

    #[test]
    fn ignored_probe_gives_its_slot_back() {
        let config = CircuitBreakerConfig {
            half_open_probes: 1,
            half_open_successes: 1,
            ..count_config(10)
        };
        let mut b = breaker(config);
        let clock = ManualClock::new();
        trip(&mut b, clock.now());
        clock.advance(Duration::from_secs(5));
        let probe = b.allow(clock.now()).expect("the probe");
        assert!(b.allow(clock.now()).is_err());
        b.record(probe, CallOutcome::ignored(), clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::HalfOpen);
        let probe = b.allow(clock.now()).expect("a new probe");
        b.record(probe, CallOutcome::success(MS), clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
    }

    #[test]
    fn lost_probes_are_replaced_after_the_probe_timeout() {
        let config = CircuitBreakerConfig {
            half_open_probes: 1,
            half_open_successes: 1,
            probe_timeout: Duration::from_secs(30),
            ..count_config(10)
        };
        let mut b = breaker(config);
        let clock = ManualClock::new();
        trip(&mut b, clock.now());
        clock.advance(Duration::from_secs(5));
        let _lost = b.allow(clock.now()).expect("the probe"); // never reports
        clock.advance(Duration::from_secs(29));
        assert!(b.allow(clock.now()).is_err());
        clock.advance(Duration::from_secs(1));
        assert!(b.allow(clock.now()).is_ok());
    }

    fn one_probe_config() -> CircuitBreakerConfig {
        CircuitBreakerConfig { half_open_probes: 1, half_open_successes: 1, ..count_config(10) }
    }

    #[test]
    fn call_admitted_before_the_trip_is_not_counted_as_a_probe() {
        let mut b = breaker(one_probe_config());
        let clock = ManualClock::new();
        let before_trip = b.allow(clock.now()).expect("closed");
        trip(&mut b, clock.now());
        clock.advance(Duration::from_secs(5));
        let probe = b.allow(clock.now()).expect("the probe");
        // The old call fails while the probe is out: it says nothing about the recovery.
        b.record(before_trip, CallOutcome::failure(MS), clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::HalfOpen);
        assert_eq!(b.trips(), 1);
        b.record(probe, CallOutcome::success(MS), clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
    }

    #[test]
    fn call_admitted_before_the_trip_cannot_close_the_breaker() {
        let mut b = breaker(one_probe_config());
        let clock = ManualClock::new();
        let before_trip = b.allow(clock.now()).expect("closed");
        trip(&mut b, clock.now());
        clock.advance(Duration::from_secs(5));
        let probe = b.allow(clock.now()).expect("the probe");
        b.record(before_trip, CallOutcome::success(MS), clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::HalfOpen);
        b.record(probe, CallOutcome::failure(MS), clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::Open);
    }

    #[test]
    fn stale_ignored_outcome_does_not_free_a_probe_slot() {
        let mut b = breaker(one_probe_config());
        let clock = ManualClock::new();
        let before_trip = b.allow(clock.now()).expect("closed");
        trip(&mut b, clock.now());
        clock.advance(Duration::from_secs(5));
        let _probe = b.allow(clock.now()).expect("the probe");
        b.record(before_trip, CallOutcome::ignored(), clock.now());
        assert_eq!(b.allow(clock.now()), Err(Rejection::new(RejectReason::CircuitOpen)));
    }

    #[test]
    fn probe_presumed_lost_is_not_counted_when_it_reports_late() {
        let mut b = breaker(one_probe_config());
        let clock = ManualClock::new();
        trip(&mut b, clock.now());
        clock.advance(Duration::from_secs(5));
        let lost = b.allow(clock.now()).expect("the probe");
        clock.advance(Duration::from_secs(30));
        let replacement = b.allow(clock.now()).expect("a replacement probe");
        b.record(lost, CallOutcome::success(MS), clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::HalfOpen);
        b.record(replacement, CallOutcome::success(MS), clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
    }

    #[test]
    fn closed_window_judges_leftover_probes_but_not_calls_from_before_the_trip() {
        let config = CircuitBreakerConfig {
            half_open_probes: 2,
            half_open_successes: 1,
            ..count_config(10)
        };
        let mut b = breaker(config);
        let clock = ManualClock::new();
        let before_trip = b.allow(clock.now()).expect("closed");
        trip(&mut b, clock.now());
        clock.advance(Duration::from_secs(5));
        let first = b.allow(clock.now()).expect("probe 1");
        let second = b.allow(clock.now()).expect("probe 2");
        b.record(first, CallOutcome::success(MS), clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::Closed);
        b.record(before_trip, CallOutcome::failure(MS), clock.now());
        assert_eq!(b.window_stats(clock.now()), WindowStats::default());
        b.record(second, CallOutcome::failure(MS), clock.now());
        assert_eq!(b.window_stats(clock.now()), WindowStats { calls: 1, failures: 1, slow: 0 });
    }

    #[test]
    fn outcomes_of_calls_admitted_before_the_trip_are_not_judged_while_open() {
        let mut b = breaker(count_config(10));
        let clock = ManualClock::new();
        let early = b.allow(clock.now()).expect("closed");
        let late = b.allow(clock.now()).expect("closed");
        trip(&mut b, clock.now());
        b.record(early, CallOutcome::success(MS), clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::Open);
        assert_eq!(b.window_stats(clock.now()), WindowStats::default());
        clock.advance(Duration::from_secs(5));
        assert_eq!(b.state(clock.now()), BreakerState::HalfOpen);
        // Half-open with no probe out yet: a late outcome is not a probe's and is not judged.
        b.record(late, CallOutcome::failure(MS), clock.now());
        let probe = b.allow(clock.now()).expect("a probe");
        b.record(probe, CallOutcome::success(MS), clock.now());
        assert_eq!(b.state(clock.now()), BreakerState::HalfOpen);
    }

    #[test]
    fn state_names_and_gauges_for_metrics() {
        assert_eq!(BreakerState::HalfOpen.as_str(), "half_open");
        assert_eq!(BreakerState::Open.as_gauge(), 2);
        assert_eq!(BreakerState::Closed.as_gauge(), 0);
    }

    #[test]
    fn unworkable_configs_are_refused() {
        let bad = [
            CircuitBreakerConfig {
                window: BreakerWindow::Count { calls: 0 },
                ..Default::default()
            },
            CircuitBreakerConfig { failure_ratio: Some(1.5), ..Default::default() },
            CircuitBreakerConfig { failure_ratio: None, ..Default::default() },
            CircuitBreakerConfig { open_backoff: 0.5, ..Default::default() },
            CircuitBreakerConfig { half_open_successes: 6, ..Default::default() },
            CircuitBreakerConfig {
                max_open_duration: Duration::from_secs(1),
                ..Default::default()
            },
        ];
        for config in bad {
            assert!(CircuitBreaker::try_new(config.clone()).is_err(), "{config:?}");
        }
        assert!(CircuitBreaker::try_new(CircuitBreakerConfig::default()).is_ok());
    }

    proptest::proptest! {
        /// Open times up to `Duration::MAX`, steep backoffs and instants up to the end of the
        /// clock saturate; nothing on the call path panics or wraps.
        #[test]
        fn extreme_durations_and_instants_never_panic(
            open_ns in 1u64..=u64::MAX,
            backoff in 1.0f64..1e9,
            slow_ns in 0u64..=u64::MAX,
            events in proptest::collection::vec(
                (0u8..3, proptest::prop_oneof![proptest::prelude::any::<u64>(), proptest::strategy::Just(u64::MAX)], 0u64..=u64::MAX),
                1..100,
            ),
        ) {
            let config = CircuitBreakerConfig {
                failure_count: Some(1),
                slow_calls: Some(SlowCallTrigger { threshold: Duration::from_nanos(slow_ns), ratio: 1.0 }),
                open_duration: Duration::from_nanos(open_ns),
                open_backoff: backoff,
                max_open_duration: Duration::MAX,
                half_open_probes: 1,
                half_open_successes: 1,
                min_calls: 1,
                ..CircuitBreakerConfig::default()
            };
            let mut b = breaker(config);
            for (kind, at, latency) in events {
                let now = Instant::from_nanos(at);
                let latency = Duration::from_nanos(latency);
                let ticket = b.allow(now);
                let outcome = match kind {
                    0 => CallOutcome::success(latency),
                    1 => CallOutcome::failure(latency),
                    _ => CallOutcome::ignored(),
                };
                if let Ok(ticket) = ticket {
                    b.record(ticket, outcome, now);
                }
                let _ = (b.state(now), b.window_stats(now));
            }
        }
    }
}
