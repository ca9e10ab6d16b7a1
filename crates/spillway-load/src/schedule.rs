//! When each request of an open-loop run is meant to be sent: a [`Schedule`] of constant-rate
//! [`Step`]s, built from `--rate` + `--duration` or from a `--ramp`.
//!
//! Pure arithmetic, no clock: request `i` has a fixed intended offset from the start of the run,
//! so a generator that falls behind cannot drift (and the latency of a late request is measured
//! from when it *should* have left, which is what avoids coordinated omission).

use crate::units::{format_duration, parse_duration};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Longest run a schedule accepts (a load test is bounded by design).
pub const MAX_RUN: Duration = Duration::from_secs(24 * 3600);

/// A schedule that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    /// A step's rate is zero, negative or not a number.
    #[error("rate must be a positive number of requests per second, got {0}")]
    BadRate(f64),
    /// A step lasts no time.
    #[error("a step must last longer than zero")]
    EmptyStep,
    /// No steps at all.
    #[error("a schedule needs at least one step")]
    NoSteps,
    /// The run is longer than [`MAX_RUN`].
    #[error("the run would last {0:?}, more than the 24 h a load test may take")]
    TooLong(Duration),
    /// A `--ramp` value that does not parse.
    #[error("invalid ramp `{0}`: expected FROM:TO:STEP:DURATION, e.g. 100:2000:200:10s")]
    BadRamp(String),
}

/// A stretch of the run at one constant arrival rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Step {
    /// Requests per second.
    pub rate: f64,
    /// How long the step lasts.
    pub duration: Duration,
}

/// A request's place in the schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Intended send time, from the start of the run.
    pub offset: Duration,
    /// Index of the step it belongs to.
    pub step: usize,
}

/// A step ramp as given on the command line: `FROM:TO:STEP:DURATION`, e.g. `100:2000:200:10s`
/// (from 100 to 2000 rps in steps of 200, 10 s each; the last step is exactly `TO`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ramp {
    /// First rate (rps).
    pub from: f64,
    /// Last rate (rps).
    pub to: f64,
    /// Increment between steps (rps, positive; the ramp goes down when `to < from`).
    pub step: f64,
    /// Duration of each step.
    pub step_duration: Duration,
}

impl FromStr for Ramp {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Ramp, ScheduleError> {
        let bad = || ScheduleError::BadRamp(s.to_string());
        let parts: Vec<&str> = s.split(':').collect();
        let [from, to, step, duration] = parts.as_slice() else { return Err(bad()) };
        let number = |v: &str| v.trim().parse::<f64>().ok().filter(|x| x.is_finite() && *x > 0.0);
        Ok(Ramp {
            from: number(from).ok_or_else(bad)?,
            to: number(to).ok_or_else(bad)?,
            step: number(step).ok_or_else(bad)?,
            step_duration: parse_duration(duration).map_err(|_| bad())?,
        })
    }
}

impl fmt::Display for Ramp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}:{}", self.from, self.to, self.step, format_duration(self.step_duration))
    }
}

impl Ramp {
    /// The rates of the ramp's steps, first to last.
    pub fn rates(&self) -> Vec<f64> {
        let mut rates = Vec::new();
        let up = self.to >= self.from;
        let mut rate = self.from;
        // Bounded: at most (|to - from| / step) + 2 steps, and MAX_RUN caps the total later.
        while (up && rate < self.to) || (!up && rate > self.to) {
            rates.push(rate);
            rate = if up { rate + self.step } else { rate - self.step };
            if rates.len() > 100_000 {
                break;
            }
        }
        rates.push(self.to);
        rates
    }
}

/// The intended send times of an open-loop run: steps of constant rate, one after the other,
/// optionally cut short by a request count.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    steps: Vec<Step>,
    /// Offset of each step's start, in nanoseconds.
    starts: Vec<u64>,
    /// Index of each step's first request; one more entry holding the total.
    first: Vec<u64>,
    /// Requests in the run after the count limit.
    len: u64,
}

impl Schedule {
    /// A run of `steps`, back to back.
    pub fn new(steps: Vec<Step>) -> Result<Schedule, ScheduleError> {
        if steps.is_empty() {
            return Err(ScheduleError::NoSteps);
        }
        let mut starts = Vec::with_capacity(steps.len());
        let mut first = Vec::with_capacity(steps.len() + 1);
        let (mut at, mut count, mut total) = (0u64, 0u64, Duration::ZERO);
        for step in &steps {
            if !(step.rate.is_finite() && step.rate > 0.0) {
                return Err(ScheduleError::BadRate(step.rate));
            }
            if step.duration.is_zero() {
                return Err(ScheduleError::EmptyStep);
            }
            total += step.duration;
            if total > MAX_RUN {
                return Err(ScheduleError::TooLong(total));
            }
            starts.push(at);
            first.push(count);
            at += step.duration.as_nanos() as u64;
            count += requests_in(step);
        }
        first.push(count);
        Ok(Schedule { steps, starts, first, len: count })
    }

    /// A constant `rate` for `duration`.
    pub fn constant(rate: f64, duration: Duration) -> Result<Schedule, ScheduleError> {
        Schedule::new(vec![Step { rate, duration }])
    }

    /// The steps of `ramp`.
    pub fn ramp(ramp: &Ramp) -> Result<Schedule, ScheduleError> {
        let steps =
            ramp.rates().into_iter().map(|rate| Step { rate, duration: ramp.step_duration });
        Schedule::new(steps.collect())
    }

    /// The same schedule, ending after at most `max_requests` requests.
    pub fn limited_to(mut self, max_requests: u64) -> Schedule {
        self.len = self.len.min(max_requests);
        self
    }

    /// The steps, in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Number of requests in the run.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the run sends nothing (only after [`Schedule::limited_to`] with 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Requests planned in step `k` (after the count limit).
    pub fn planned_in_step(&self, k: usize) -> u64 {
        let (Some(&a), Some(&b)) = (self.first.get(k), self.first.get(k + 1)) else { return 0 };
        b.min(self.len).saturating_sub(a.min(self.len))
    }

    /// When step `k` starts, from the start of the run.
    pub fn step_start(&self, k: usize) -> Duration {
        Duration::from_nanos(self.starts.get(k).copied().unwrap_or(0))
    }

    /// Length of the whole run (all steps, even when the count limit ends it earlier).
    pub fn duration(&self) -> Duration {
        self.steps.iter().map(|s| s.duration).sum()
    }

    /// The step running at `offset` from the start (the last one after the end).
    pub fn step_at(&self, offset: Duration) -> usize {
        let nanos = offset.as_nanos() as u64;
        self.starts.partition_point(|&s| s <= nanos).saturating_sub(1)
    }

    /// When request `i` (0-based) is meant to be sent, or `None` past the end of the run.
    pub fn arrival(&self, i: u64) -> Option<Arrival> {
        if i >= self.len {
            return None;
        }
        // The step whose first index is the last one <= i.
        let step = self.first.partition_point(|&f| f <= i).saturating_sub(1);
        let within = i - self.first[step];
        let rate = self.steps[step].rate;
        let nanos = self.starts[step] + (within as f64 * 1e9 / rate) as u64;
        Some(Arrival { offset: Duration::from_nanos(nanos), step })
    }
}

/// Requests a step sends: `rate × duration`, rounded to the nearest whole request.
fn requests_in(step: &Step) -> u64 {
    (step.rate * step.duration.as_secs_f64()).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_rate_spaces_requests_evenly() {
        let s = Schedule::constant(2000.0, Duration::from_secs(10)).unwrap();
        assert_eq!(s.len(), 20_000);
        assert_eq!(s.arrival(0).unwrap().offset, Duration::ZERO);
        assert_eq!(s.arrival(1).unwrap().offset, Duration::from_micros(500));
        assert_eq!(s.arrival(19_999).unwrap().offset, Duration::from_nanos(9_999_500_000));
        assert_eq!(s.arrival(20_000), None);
    }

    #[test]
    fn ramp_parses_and_ends_exactly_at_its_target() {
        let ramp: Ramp = "100:2000:200:10s".parse().unwrap();
        let rates = ramp.rates();
        assert_eq!(rates.first(), Some(&100.0));
        assert_eq!(rates[1], 300.0);
        assert_eq!(rates.last(), Some(&2000.0));
        assert_eq!(rates.len(), 11); // 100, 300, ..., 1900, 2000
        assert_eq!(ramp.to_string(), "100:2000:200:10s");
    }

    #[test]
    fn ramp_can_go_down() {
        let ramp: Ramp = "500:100:200:1s".parse().unwrap();
        assert_eq!(ramp.rates(), vec![500.0, 300.0, 100.0]);
    }

    #[test]
    fn malformed_ramps_are_refused() {
        for bad in ["100:2000:200", "a:2000:200:10s", "100:2000:0:10s", "100:2000:200:forever"] {
            assert!(bad.parse::<Ramp>().is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn ramp_step_boundaries_fall_on_step_starts() {
        let ramp: Ramp = "100:300:100:2s".parse().unwrap();
        let s = Schedule::ramp(&ramp).unwrap();
        assert_eq!(s.steps().len(), 3);
        assert_eq!(s.len(), 200 + 400 + 600);
        // Last request of step 0 and first of step 1.
        let last0 = s.arrival(199).unwrap();
        let first1 = s.arrival(200).unwrap();
        assert_eq!(last0.step, 0);
        assert!(last0.offset < Duration::from_secs(2));
        assert_eq!(first1, Arrival { offset: Duration::from_secs(2), step: 1 });
        assert_eq!(s.arrival(600).unwrap(), Arrival { offset: Duration::from_secs(4), step: 2 });
        assert_eq!(s.step_start(2), Duration::from_secs(4));
        assert_eq!(s.step_at(Duration::from_millis(3999)), 1);
        assert_eq!(s.step_at(Duration::from_secs(4)), 2);
        assert_eq!(s.duration(), Duration::from_secs(6));
        assert_eq!(s.planned_in_step(1), 400);
    }

    #[test]
    fn offsets_never_go_backwards_and_stay_inside_their_step() {
        let ramp: Ramp = "7:93:13:1500ms".parse().unwrap();
        let s = Schedule::ramp(&ramp).unwrap();
        let mut previous = Duration::ZERO;
        for i in 0..s.len() {
            let a = s.arrival(i).unwrap();
            assert!(a.offset >= previous);
            assert!(a.offset >= s.step_start(a.step));
            assert!(a.offset < s.step_start(a.step) + ramp.step_duration);
            previous = a.offset;
        }
    }

    #[test]
    fn request_count_limit_cuts_the_run() {
        let s = Schedule::constant(100.0, Duration::from_secs(10)).unwrap().limited_to(5);
        assert_eq!(s.len(), 5);
        assert!(s.arrival(4).is_some());
        assert!(s.arrival(5).is_none());
        assert_eq!(s.planned_in_step(0), 5);
    }

    #[test]
    fn bad_steps_are_refused() {
        assert_eq!(
            Schedule::constant(0.0, Duration::from_secs(1)),
            Err(ScheduleError::BadRate(0.0))
        );
        assert_eq!(Schedule::constant(1.0, Duration::ZERO), Err(ScheduleError::EmptyStep));
        assert!(matches!(
            Schedule::constant(1.0, Duration::from_secs(25 * 3600)),
            Err(ScheduleError::TooLong(_))
        ));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever the ramp, intended times never go backwards, each request lies inside
            /// its step, and each step plans `rate × duration` requests (rounded).
            #[test]
            fn ramps_keep_order_step_bounds_and_counts(
                from in 1.0f64..500.0,
                to in 1.0f64..500.0,
                step in 1.0f64..300.0,
                step_ms in 10u64..400,
            ) {
                let ramp = Ramp { from, to, step, step_duration: Duration::from_millis(step_ms) };
                let s = Schedule::ramp(&ramp).unwrap();
                let mut previous = Duration::ZERO;
                let mut counts = vec![0u64; s.steps().len()];
                for i in 0..s.len() {
                    let a = s.arrival(i).unwrap();
                    prop_assert!(a.offset >= previous);
                    prop_assert!(a.offset >= s.step_start(a.step));
                    prop_assert!(a.offset < s.step_start(a.step) + ramp.step_duration);
                    counts[a.step] += 1;
                    previous = a.offset;
                }
                for (k, step) in s.steps().iter().enumerate() {
                    let expected = (step.rate * step.duration.as_secs_f64()).round() as u64;
                    prop_assert_eq!(counts[k], expected);
                    prop_assert_eq!(s.planned_in_step(k), expected);
                }
                prop_assert!(s.arrival(s.len()).is_none());
            }
        }
    }
}
