//! Gradient2 concurrency limit (after Netflix concurrency-limits' `Gradient2Limit`): compare the
//! latency now with the latency the service usually has, and scale the limit by that ratio.
//!
//! Why: queueing shows in latency before it shows in errors. When the short-term RTT rises above
//! the long-term baseline, requests are queueing and the limit shrinks in proportion; while they
//! are level, the limit grows by a small queue allowance, probing for more capacity.
//!
//! Samples are first gathered into contiguous sampling windows (Netflix's `WindowedLimit`): a
//! window closes once it is at least `window` long (default 100 ms; Netflix uses 1 s, which reacts in many
//! seconds) and holds at least `min_window_samples` (10). Counting the baseline in windows, not
//! samples, keeps it a long-term value whatever the request rate. Per closed window (defaults are
//! Netflix's unless stated):
//! - `short` is the window's average RTT; `long` is an exponential average over about
//!   `long_window` (600) windows — a minute at 100 ms — a plain average over the first 10;
//! - the window's in-flight count is the largest any of its samples saw, and it counts as
//!   dropped when any of its requests was;
//! - when `long > 2 × short` (load just ended and the baseline is stale), `long` decays by 10 %
//!   so the limit recovers without waiting for the slow average;
//! - when fewer than half the limit are in flight, the caller is app-limited: no change;
//! - `gradient = clamp(tolerance × long / short, 0.5, 1)` — `tolerance` (default 1.5, as in the
//!   first Gradient2 releases) lets latency rise 50 % before the limit shrinks, so noise does not
//!   cut it; a dropped request counts as the lowest gradient, 0.5;
//! - `new = limit × gradient + queue allowance`, smoothed: `limit ← limit × (1 − s) + new × s`
//!   with `s = smoothing` (0.2), then clamped to `[min, max]`.

use super::{check_bounds, LimitAlgorithm, LimitConfigError};
use crate::clock::Instant;
use std::time::Duration;

/// How much the limit may grow beyond its gradient-scaled value per update.
#[derive(Copy, Clone, Debug, PartialEq)]
pub enum QueueAllowance {
    /// A fixed number of requests (Netflix's default is 4).
    Fixed(u64),
    /// The square root of the current limit, at least 1: grows faster for large limits.
    Sqrt,
}

impl QueueAllowance {
    fn at(self, limit: f64) -> f64 {
        match self {
            QueueAllowance::Fixed(n) => n as f64,
            QueueAllowance::Sqrt => limit.sqrt().max(1.0),
        }
    }
}

/// Settings of a [`Gradient2`] limit.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Gradient2Config {
    /// Starting limit (default 20).
    pub initial_limit: u64,
    /// Floor (default 4).
    pub min_limit: u64,
    /// Ceiling (default 1000).
    pub max_limit: u64,
    /// Weight of each new estimate, in `(0, 1]` (default 0.2).
    pub smoothing: f64,
    /// Sampling windows the long-term RTT averages over, at least 1 (default 600: a minute of
    /// 100 ms windows).
    pub long_window: u32,
    /// How far the short RTT may exceed the long one before the limit shrinks, at least 1
    /// (default 1.5).
    pub tolerance: f64,
    /// Growth allowance per update (default `Fixed(4)`).
    pub queue_allowance: QueueAllowance,
    /// Shortest sampling window (default 100 ms).
    pub window: Duration,
    /// Fewest samples a window needs before it closes, at least 1 (default 10).
    pub min_window_samples: u32,
}

impl Default for Gradient2Config {
    fn default() -> Self {
        Gradient2Config {
            initial_limit: 20,
            min_limit: 4,
            max_limit: 1000,
            smoothing: 0.2,
            long_window: 600,
            tolerance: 1.5,
            queue_allowance: QueueAllowance::Fixed(4),
            window: Duration::from_millis(100),
            min_window_samples: 10,
        }
    }
}

/// Windows averaged plainly before the long RTT switches to an exponential average.
const WARM_UP_WINDOWS: u32 = 10;

/// The Gradient2 limit algorithm.
#[derive(Clone, Debug)]
pub struct Gradient2 {
    config: Gradient2Config,
    limit: f64,
    long_rtt: f64,
    windows: u32,
    current: Window,
}

/// The sampling window being filled.
#[derive(Copy, Clone, Debug, Default)]
struct Window {
    start: Option<Instant>,
    rtt_sum_nanos: f64,
    samples: u32,
    max_inflight: u64,
    dropped: bool,
}

impl Gradient2 {
    /// A limit at `config.initial_limit`.
    pub fn try_new(config: Gradient2Config) -> Result<Gradient2, LimitConfigError> {
        check_bounds(config.min_limit, config.initial_limit, config.max_limit)?;
        if !(config.smoothing > 0.0 && config.smoothing <= 1.0) {
            return Err(LimitConfigError::BadRatio("smoothing"));
        }
        if config.tolerance.is_nan() || config.tolerance < 1.0 {
            return Err(LimitConfigError::BadRatio("tolerance"));
        }
        if config.long_window == 0 {
            return Err(LimitConfigError::BadRatio("long_window"));
        }
        if config.min_window_samples == 0 {
            return Err(LimitConfigError::BadRatio("min_window_samples"));
        }
        Ok(Gradient2 {
            config,
            limit: config.initial_limit as f64,
            long_rtt: 0.0,
            windows: 0,
            current: Window::default(),
        })
    }

    /// The long-term (baseline) RTT estimate, saturating at [`Duration::MAX`].
    pub fn long_rtt(&self) -> Duration {
        Duration::try_from_secs_f64(self.long_rtt.max(0.0) / 1e9).unwrap_or(Duration::MAX)
    }

    fn add_long(&mut self, rtt: f64) {
        self.windows = self.windows.saturating_add(1);
        if self.windows <= WARM_UP_WINDOWS {
            self.long_rtt += (rtt - self.long_rtt) / f64::from(self.windows);
        } else {
            let factor = 2.0 / (f64::from(self.config.long_window) + 1.0);
            self.long_rtt += (rtt - self.long_rtt) * factor;
        }
    }
}

impl Gradient2 {
    /// One update from a closed window.
    fn update(&mut self, short: f64, inflight: u64, dropped: bool) {
        // Nanoseconds, at least 1 so the ratio below is finite.
        let short = short.max(1.0);
        self.add_long(short);
        if self.long_rtt / short > 2.0 {
            self.long_rtt *= 0.9;
        }
        if (inflight as f64) < self.limit / 2.0 {
            return;
        }
        let gradient = if dropped {
            0.5
        } else {
            (self.config.tolerance * self.long_rtt / short).clamp(0.5, 1.0)
        };
        let estimate = self.limit * gradient + self.config.queue_allowance.at(self.limit);
        let smoothed =
            self.limit * (1.0 - self.config.smoothing) + estimate * self.config.smoothing;
        self.limit = smoothed.clamp(self.config.min_limit as f64, self.config.max_limit as f64);
    }
}

impl LimitAlgorithm for Gradient2 {
    fn on_sample(&mut self, rtt: Duration, inflight: u64, dropped: bool, now: Instant) {
        let w = &mut self.current;
        let start = *w.start.get_or_insert(now);
        w.rtt_sum_nanos += rtt.as_nanos() as f64;
        w.samples = w.samples.saturating_add(1);
        w.max_inflight = w.max_inflight.max(inflight);
        w.dropped |= dropped;
        if now.saturating_duration_since(start) >= self.config.window
            && w.samples >= self.config.min_window_samples
        {
            // Windows are contiguous: the next one starts where this one closed.
            let closed = std::mem::replace(
                &mut self.current,
                Window { start: Some(now), ..Window::default() },
            );
            let average = closed.rtt_sum_nanos / f64::from(closed.samples);
            self.update(average, closed.max_inflight, closed.dropped);
        }
    }

    fn limit(&self) -> u64 {
        self.limit as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A Gradient2 limit with its own manual time.
    struct Sim {
        g: Gradient2,
        now: Instant,
    }

    fn sim() -> Sim {
        let g = Gradient2::try_new(Gradient2Config::default()).expect("default config is valid");
        Sim { g, now: Instant::ZERO }
    }

    impl Sim {
        /// Feeds `windows` sampling windows of 10 samples, 10 ms apart, each of `rtt_ms`, with
        /// `inflight` (or, when `None`, the whole limit) in flight.
        fn feed(&mut self, rtt_ms: u64, windows: usize, dropped: bool, inflight: Option<u64>) {
            for _ in 0..windows * 10 {
                self.now += Duration::from_millis(10);
                let inflight = inflight.unwrap_or(self.g.limit());
                self.g.on_sample(Duration::from_millis(rtt_ms), inflight, dropped, self.now);
            }
        }

        fn limit(&self) -> u64 {
            self.g.limit()
        }
    }

    #[test]
    fn limit_rises_while_latency_stays_level() {
        let mut s = sim();
        s.feed(10, 50, false, None);
        assert!(s.limit() > 40, "limit {}", s.limit());
    }

    #[test]
    fn limit_falls_when_latency_grows() {
        let mut s = sim();
        s.feed(10, 200, false, None);
        let before = s.limit();
        s.feed(50, 20, false, None);
        assert!(s.limit() < before / 2, "{before} -> {}", s.limit());
    }

    #[test]
    fn limit_falls_on_drops_even_at_level_latency() {
        let mut s = sim();
        s.feed(10, 100, false, None);
        let before = s.limit();
        s.feed(10, 10, true, None);
        assert!(s.limit() < before, "{before} -> {}", s.limit());
    }

    #[test]
    fn small_latency_noise_within_tolerance_does_not_shrink_the_limit() {
        let mut s = sim();
        s.feed(10, 50, false, None);
        let before = s.limit();
        s.feed(14, 10, false, None);
        assert!(s.limit() >= before);
    }

    #[test]
    fn app_limited_callers_do_not_move_the_limit() {
        let mut s = sim();
        s.feed(10, 100, false, Some(2));
        assert_eq!(s.limit(), 20);
    }

    #[test]
    fn the_limit_moves_once_per_window_not_per_sample() {
        let mut s = sim();
        // 1000 samples within one 100 ms window: one update of +0.2 × 4.
        for i in 0..1000 {
            let now = Instant::from_nanos(i * 50_000);
            s.g.on_sample(Duration::from_millis(10), 20, false, now);
        }
        assert_eq!(s.limit(), 20);
        s.g.on_sample(Duration::from_millis(10), 20, false, Instant::from_nanos(100_000_000));
        assert_eq!(s.limit(), 20); // 20.8
        s.now = Instant::from_nanos(100_000_000);
        s.feed(10, 1, false, None);
        assert_eq!(s.limit(), 21); // 21.6
    }

    #[test]
    fn a_stale_high_baseline_decays_fast_after_load_ends() {
        let mut s = sim();
        s.feed(100, 100, false, None);
        s.feed(10, 30, false, None);
        assert!(s.g.long_rtt() < Duration::from_millis(20), "{:?}", s.g.long_rtt());
    }

    #[test]
    fn extreme_rtts_saturate_instead_of_panicking() {
        let mut s = sim();
        for i in 0..100 {
            s.g.on_sample(Duration::MAX, 1_000, i % 2 == 0, Instant::from_nanos(i * 20_000_000));
        }
        assert_eq!(s.g.long_rtt(), Duration::MAX);
        assert!((4..=1000).contains(&s.limit()), "limit {}", s.limit());
    }

    #[test]
    fn bad_configs_are_refused() {
        let c = Gradient2Config { smoothing: 0.0, ..Gradient2Config::default() };
        assert!(Gradient2::try_new(c).is_err());
        let c = Gradient2Config { tolerance: 0.9, ..Gradient2Config::default() };
        assert!(Gradient2::try_new(c).is_err());
        let c = Gradient2Config { min_window_samples: 0, ..Gradient2Config::default() };
        assert!(Gradient2::try_new(c).is_err());
        let c = Gradient2Config { min_limit: 30, ..Gradient2Config::default() };
        assert_eq!(Gradient2::try_new(c).err(), Some(LimitConfigError::BadBounds));
    }

    proptest! {
        /// Whatever the latency series, the limit stays within [min, max].
        #[test]
        fn limit_stays_within_min_and_max(
            samples in proptest::collection::vec(
                (0u64..5_000, 0u64..2_000, any::<bool>(), 0u64..50), 1..1000)
        ) {
            let mut s = sim();
            for (rtt_us, inflight, dropped, step_ms) in samples {
                s.now += Duration::from_millis(step_ms);
                s.g.on_sample(Duration::from_micros(rtt_us), inflight, dropped, s.now);
                prop_assert!((4..=1000).contains(&s.limit()), "limit {}", s.limit());
            }
        }
    }
}
