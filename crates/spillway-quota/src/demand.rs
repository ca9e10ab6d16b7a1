//! An instance's demand for one lease-mode limit key: the recent rate of requests offered to
//! it (admitted and rejected alike), measured locally and reported on each refresh.
//!
//! Why offered rather than admitted: an instance held to a small grant admits little, and
//! reporting that would keep its grant small forever; what it is *asked* is what it wants.
//! Why smoothed: one refresh's count is noisy; an exponentially weighted average over refresh
//! periods (weight [`DEMAND_SMOOTHING`] on the newest) follows a change in a few refreshes
//! while damping noise. Retrying clients inflate the offered rate: a client that retries a
//! refused request is counted twice, as it does cost the gateway twice.

use spillway_core::Instant;
use std::time::Duration;

/// Weight of the newest period in the demand's moving average.
pub const DEMAND_SMOOTHING: f64 = 0.5;

/// The smoothed offered rate of one key. Pure: the caller counts requests (an atomic on the
/// request path) and hands the count over at each refresh.
#[derive(Clone, Debug)]
pub struct DemandMeter {
    /// Start of the period being counted.
    since: Instant,
    /// Requests counted in the current period so far.
    pending: u64,
    /// Shortest period folded into the average: shorter ones keep counting.
    min_period: Duration,
    rate: Option<f64>,
}

impl DemandMeter {
    /// A meter with no history, counting from `now`. Periods shorter than `min_period` (half
    /// a refresh, say) are not measured on their own but added to the next.
    pub fn new(now: Instant, min_period: Duration) -> DemandMeter {
        DemandMeter { since: now, pending: 0, min_period, rate: None }
    }

    /// Adds `count` requests offered since the last call and, when the period is long enough,
    /// folds its rate into the average. Returns the demand in permits per second, or `None`
    /// while nothing has been measured yet (the first period is still too short).
    pub fn sample(&mut self, count: u64, now: Instant) -> Option<f64> {
        self.pending = self.pending.saturating_add(count);
        let elapsed = now.saturating_duration_since(self.since);
        if elapsed >= self.min_period && !elapsed.is_zero() {
            let period_rate = self.pending as f64 / elapsed.as_secs_f64();
            self.rate = Some(match self.rate {
                None => period_rate,
                Some(previous) => previous + DEMAND_SMOOTHING * (period_rate - previous),
            });
            self.pending = 0;
            self.since = now;
        }
        self.rate
    }

    /// The current demand estimate, permits per second.
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_core::{Clock, ManualClock};

    #[test]
    fn the_first_full_period_sets_the_demand() {
        let clock = ManualClock::new();
        let mut meter = DemandMeter::new(clock.now(), Duration::from_millis(500));
        clock.advance_ms(1000);
        assert_eq!(meter.sample(1200, clock.now()), Some(1200.0));
    }

    #[test]
    fn a_too_short_period_is_carried_into_the_next() {
        let clock = ManualClock::new();
        let mut meter = DemandMeter::new(clock.now(), Duration::from_millis(500));
        clock.advance_ms(10);
        assert_eq!(meter.sample(50, clock.now()), None, "10 ms says nothing yet");
        clock.advance_ms(990);
        assert_eq!(meter.sample(950, clock.now()), Some(1000.0));
    }

    #[test]
    fn changes_are_followed_by_a_moving_average() {
        let clock = ManualClock::new();
        let mut meter = DemandMeter::new(clock.now(), Duration::from_millis(500));
        clock.advance_ms(1000);
        meter.sample(1000, clock.now());
        clock.advance_ms(1000);
        assert_eq!(meter.sample(0, clock.now()), Some(500.0));
        clock.advance_ms(1000);
        assert_eq!(meter.sample(0, clock.now()), Some(250.0));
        clock.advance_ms(2000); // a late refresh measures over the longer period
        assert_eq!(meter.sample(2000, clock.now()), Some(625.0));
        assert_eq!(meter.rate(), Some(625.0));
    }
}
