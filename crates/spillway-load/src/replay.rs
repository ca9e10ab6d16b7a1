//! Traffic replay: recorded requests sent again with their recorded inter-arrival times,
//! scaled by a speed factor, once or in a loop, and reported like `load`.
//!
//! The schedule part is pure ([`ReplaySchedule`]); sending reuses the load engine, so replay
//! has the same connections, latency measurement, JSON and plots.

use std::time::Duration;

/// A replay schedule that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplayScheduleError {
    /// No recorded requests.
    #[error("the recording holds no requests")]
    Empty,
    /// Speed zero, negative or not a number.
    #[error("speed must be a positive number, got {0}")]
    BadSpeed(f64),
    /// `--loop` without a time bound.
    #[error("a looped replay needs a duration")]
    UnboundedLoop,
}

/// When each replayed request is sent.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplaySchedule {
    /// Scaled offsets of one pass, from the first request (first is zero), non-decreasing.
    offsets: Vec<Duration>,
    /// Length of one pass when looping: last offset plus the mean gap.
    period: Duration,
    looped: bool,
    /// Time bound of the run (a pass that runs past it is cut).
    limit: Duration,
    max_requests: Option<u64>,
}

impl ReplaySchedule {
    /// Builds the schedule from recorded offsets (from any origin, in recording order), sped up
    /// by `speed` (2.0 = twice as fast), once or `looped`, bounded by `limit` and `max_requests`.
    pub fn new(
        recorded: &[Duration],
        speed: f64,
        looped: bool,
        limit: Option<Duration>,
        max_requests: Option<u64>,
    ) -> Result<ReplaySchedule, ReplayScheduleError> {
        let first = *recorded.first().ok_or(ReplayScheduleError::Empty)?;
        if !(speed.is_finite() && speed > 0.0) {
            return Err(ReplayScheduleError::BadSpeed(speed));
        }
        let mut offsets = Vec::with_capacity(recorded.len());
        let mut previous = Duration::ZERO;
        for &at in recorded {
            // Out-of-order entries (clock skew across a rotation) are sent right after the previous.
            let scaled = Duration::from_secs_f64(at.saturating_sub(first).as_secs_f64() / speed)
                .max(previous);
            offsets.push(scaled);
            previous = scaled;
        }
        let last = previous;
        let mean_gap = if offsets.len() > 1 {
            last / (offsets.len() as u32 - 1).max(1)
        } else {
            Duration::ZERO
        };
        let period = last + mean_gap.max(Duration::from_millis(1));
        let limit = match (looped, limit) {
            (true, None) => return Err(ReplayScheduleError::UnboundedLoop),
            (_, Some(limit)) => limit,
            (false, None) => period,
        };
        Ok(ReplaySchedule { offsets, period, looped, limit, max_requests })
    }

    /// Offset of request `i` from the start, or `None` past the end.
    pub fn arrival(&self, i: u64) -> Option<Duration> {
        if self.max_requests.is_some_and(|max| i >= max) {
            return None;
        }
        let n = self.offsets.len() as u64;
        let pass = i / n;
        if pass > 0 && !self.looped {
            return None;
        }
        let offset =
            self.period.checked_mul(u32::try_from(pass).ok()?)? + self.offsets[(i % n) as usize];
        (offset < self.limit || (!self.looped && offset == Duration::ZERO)).then_some(offset)
    }

    /// Length of the run.
    pub fn duration(&self) -> Duration {
        if self.looped {
            self.limit
        } else {
            self.limit.min(self.period)
        }
    }

    /// Requests the run will send.
    pub fn len(&self) -> u64 {
        let n = self.offsets.len() as u64;
        let in_pass = |limit: Duration| self.offsets.partition_point(|&o| o < limit) as u64;
        let count = if self.looped {
            let full = (self.limit.as_nanos() / self.period.as_nanos().max(1)) as u64;
            let rest = self.limit.saturating_sub(self.period * full.min(u32::MAX as u64) as u32);
            full * n + in_pass(rest)
        } else {
            in_pass(self.limit).max(1)
        };
        self.max_requests.map_or(count, |max| count.min(max))
    }

    /// Whether the run sends nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn replay_keeps_gaps_scaled_by_speed() {
        let s =
            ReplaySchedule::new(&[ms(1000), ms(1100), ms(1400)], 2.0, false, None, None).unwrap();
        assert_eq!(s.arrival(0), Some(ms(0)));
        assert_eq!(s.arrival(1), Some(ms(50)));
        assert_eq!(s.arrival(2), Some(ms(200)));
        assert_eq!(s.arrival(3), None);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn looped_replay_repeats_until_the_limit() {
        // Offsets 0, 100, 200 ms: period 300 ms; 1 s holds 3 full passes and one more request.
        let s = ReplaySchedule::new(&[ms(0), ms(100), ms(200)], 1.0, true, Some(ms(1000)), None)
            .unwrap();
        assert_eq!(s.arrival(3), Some(ms(300)));
        assert_eq!(s.arrival(5), Some(ms(500)));
        assert_eq!(s.arrival(9), Some(ms(900)));
        assert_eq!(s.arrival(10), None);
        assert_eq!(s.len(), 10);
        assert_eq!(s.duration(), ms(1000));
    }

    #[test]
    fn request_limit_and_time_limit_both_bound_a_replay() {
        let s = ReplaySchedule::new(&[ms(0), ms(100), ms(200)], 1.0, true, Some(ms(1000)), Some(4))
            .unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s.arrival(4), None);
        let cut = ReplaySchedule::new(&[ms(0), ms(100), ms(200)], 1.0, false, Some(ms(150)), None)
            .unwrap();
        assert_eq!(cut.len(), 2);
        assert_eq!(cut.arrival(2), None);
    }

    #[test]
    fn out_of_order_offsets_never_go_backwards() {
        let s = ReplaySchedule::new(&[ms(0), ms(300), ms(200)], 1.0, false, None, None).unwrap();
        assert_eq!(s.arrival(2), Some(ms(300)));
    }

    #[test]
    fn bad_replays_are_refused() {
        assert_eq!(
            ReplaySchedule::new(&[], 1.0, false, None, None),
            Err(ReplayScheduleError::Empty)
        );
        assert_eq!(
            ReplaySchedule::new(&[ms(0)], 0.0, false, None, None),
            Err(ReplayScheduleError::BadSpeed(0.0))
        );
        assert_eq!(
            ReplaySchedule::new(&[ms(0)], 1.0, true, None, None),
            Err(ReplayScheduleError::UnboundedLoop)
        );
    }
}
