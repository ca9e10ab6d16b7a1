//! Power of two choices over a latency- and error-aware load score (the bilibili/kratos "p2c"
//! balancer, with Finagle's peak EWMA).
//!
//! Why: round robin and least-request ignore how *fast* an endpoint answers; an endpoint that
//! is slow (GC pauses, a noisy neighbour) or failing keeps receiving its full share. Here each
//! endpoint carries:
//! - a **peak EWMA of latency**: a slower sample is taken at once, faster samples pull it down
//!   with time-constant decay (`w = e^(-Δt/τ)`, Δt since the previous sample), so the estimate
//!   reacts to trouble immediately and forgives gradually;
//! - a **success-rate EWMA** with the same decay;
//! - its **in-flight** count.
//!
//! The load score is `(in_flight + 1) × (latency + 1 µs) ÷ (success × weight)`. Two eligible
//! endpoints are sampled at random and the lower score wins. Because a bad endpoint would then
//! never be picked again — and so never show that it recovered — an endpoint that lost the
//! comparison but has not been picked for `force_pick_after` is picked anyway (one probe).
//!
//! Unlike kratos, this chooser has no CPU-usage feedback from the server and no atomics: it
//! belongs to one worker thread.

use super::{two_distinct, Balancer, EndpointSpec, PickContext};
use crate::clock::{duration_nanos, Instant};
use std::time::Duration;

/// Tuning of [`P2cEwma`].
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct P2cConfig {
    /// EWMA time constant τ: a sample's influence falls to 1/e after τ of newer samples
    /// (kratos: 600 ms). Longer is steadier, shorter reacts faster.
    pub decay: Duration,
    /// An endpoint not picked for this long is picked when it is sampled, even if it loses the
    /// comparison (kratos: 3 s): the probe that lets a recovered endpoint back in.
    pub force_pick_after: Duration,
    /// Latency assumed before an endpoint's first sample (replaced by that sample). Optimistic
    /// on purpose (1 ms): a new endpoint should be tried soon, and its in-flight count limits
    /// how much it receives before the first answer comes back.
    pub initial_latency: Duration,
    /// Success rate is clamped to at least this before dividing, so an endpoint that only
    /// failed has a large but finite score (default 0.001, i.e. up to 1000× penalty).
    pub min_success: f64,
}

impl Default for P2cConfig {
    fn default() -> P2cConfig {
        P2cConfig {
            decay: Duration::from_millis(600),
            force_pick_after: Duration::from_secs(3),
            initial_latency: Duration::from_millis(1),
            min_success: 0.001,
        }
    }
}

#[derive(Clone, Debug)]
struct Stats {
    weight: f64,
    in_flight: u32,
    /// Peak EWMA latency in nanoseconds; `None` before the first sample.
    latency_ns: Option<f64>,
    /// EWMA of successes in [0, 1].
    success: f64,
    /// Time of the last sample (for the decay weight).
    stamp: Instant,
    /// Time of the last `on_start`; `None` when never picked.
    last_pick: Option<Instant>,
}

/// Power of two choices over in-flight × peak-EWMA latency ÷ success rate.
#[derive(Clone, Debug)]
pub struct P2cEwma {
    stats: Box<[Stats]>,
    decay_ns: f64,
    force_pick_after: Duration,
    initial_latency_ns: f64,
    min_success: f64,
}

impl P2cEwma {
    /// A chooser over `endpoints` with their weights.
    pub fn new(endpoints: &[EndpointSpec], config: P2cConfig) -> P2cEwma {
        P2cEwma {
            stats: endpoints
                .iter()
                .map(|e| Stats {
                    weight: f64::from(e.effective_weight()),
                    in_flight: 0,
                    latency_ns: None,
                    success: 1.0,
                    stamp: Instant::ZERO,
                    last_pick: None,
                })
                .collect(),
            decay_ns: (duration_nanos(config.decay) as f64).max(1.0),
            force_pick_after: config.force_pick_after,
            initial_latency_ns: duration_nanos(config.initial_latency) as f64,
            min_success: if config.min_success.is_finite() {
                config.min_success.clamp(1e-9, 1.0)
            } else {
                0.001
            },
        }
    }

    /// The current load score of `endpoint` (lower is better); `None` when out of range.
    pub fn score(&self, endpoint: usize) -> Option<f64> {
        let s = self.stats.get(endpoint)?;
        let latency = s.latency_ns.unwrap_or(self.initial_latency_ns) + 1_000.0;
        let success = s.success.max(self.min_success);
        Some((f64::from(s.in_flight) + 1.0) * latency / (success * s.weight))
    }

    /// The latency estimate of `endpoint` (peak EWMA), if it has had a sample.
    pub fn latency_estimate(&self, endpoint: usize) -> Option<Duration> {
        let ns = self.stats.get(endpoint)?.latency_ns?;
        Some(Duration::from_nanos(ns as u64))
    }

    /// The success-rate estimate of `endpoint` in [0, 1].
    pub fn success_estimate(&self, endpoint: usize) -> Option<f64> {
        Some(self.stats.get(endpoint)?.success)
    }

    fn neglected(&self, endpoint: usize, now: Instant) -> bool {
        match self.stats[endpoint].last_pick {
            None => true,
            Some(t) => now.saturating_duration_since(t) > self.force_pick_after,
        }
    }
}

impl Balancer for P2cEwma {
    fn pick(&mut self, eligible: &[usize], ctx: &PickContext) -> Option<usize> {
        let len = self.stats.len();
        let (a, b) = match eligible.len() {
            0 => return None,
            1 => return eligible.first().copied().filter(|&e| e < len),
            n => {
                let (i, j) = two_distinct(n, ctx.random);
                (eligible[i], eligible[j])
            }
        };
        let (winner, loser) = match (self.score(a), self.score(b)) {
            (Some(sa), Some(sb)) => {
                if sb < sa {
                    (b, a)
                } else {
                    (a, b)
                }
            }
            (Some(_), None) => return Some(a),
            (None, Some(_)) => return Some(b),
            // Both samples invalid (caller bug): first valid eligible endpoint, if any.
            (None, None) => return eligible.iter().copied().find(|&e| e < len),
        };
        if self.neglected(loser, ctx.now) {
            // Probe it once; `on_start` stamps it so the next forced pick waits again.
            self.stats[loser].last_pick = Some(ctx.now);
            return Some(loser);
        }
        Some(winner)
    }

    fn on_start(&mut self, endpoint: usize, now: Instant) {
        if let Some(s) = self.stats.get_mut(endpoint) {
            s.in_flight = s.in_flight.saturating_add(1);
            s.last_pick = Some(now);
        }
    }

    fn on_end(&mut self, endpoint: usize, latency: Duration, success: bool, now: Instant) {
        let decay_ns = self.decay_ns;
        let Some(s) = self.stats.get_mut(endpoint) else { return };
        s.in_flight = s.in_flight.saturating_sub(1);
        let sample = duration_nanos(latency) as f64;
        let dt = now.nanos_since(s.stamp) as f64;
        s.stamp = now;
        // Weight of the old estimate: 1 right after the last sample, → 0 after long silence.
        let w = (-dt / decay_ns).exp();
        s.latency_ns = Some(match s.latency_ns {
            None => sample,
            Some(old) if sample > old => sample,
            Some(old) => old * w + sample * (1.0 - w),
        });
        let ok = if success { 1.0 } else { 0.0 };
        s.success = (s.success * w + ok * (1.0 - w)).clamp(0.0, 1.0);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_support::{specs, Rng};
    use super::*;

    /// Runs `rounds` of: pick, start, and finish after `latency(e)` with `ok(e)`, one request
    /// every `gap`; a request in flight while later picks happen. Returns pick counts.
    fn simulate(
        b: &mut P2cEwma,
        n: usize,
        rounds: usize,
        gap: Duration,
        latency: impl Fn(usize) -> Duration,
        ok: impl Fn(usize) -> bool,
    ) -> Vec<u32> {
        let mut rng = Rng(42);
        let eligible: Vec<usize> = (0..n).collect();
        let mut counts = vec![0u32; n];
        let mut now = Instant::from_nanos(1);
        // (finish time, endpoint)
        let mut pending: Vec<(Instant, usize)> = Vec::new();
        for _ in 0..rounds {
            pending.sort();
            while let Some(&(t, e)) = pending.first() {
                if t > now {
                    break;
                }
                pending.remove(0);
                b.on_end(e, latency(e), ok(e), t);
            }
            let e = b.pick(&eligible, &PickContext::new(now, rng.next())).unwrap();
            counts[e] += 1;
            b.on_start(e, now);
            pending.push((now + latency(e), e));
            now += gap;
        }
        counts
    }

    #[test]
    fn p2c_steers_away_from_a_slow_endpoint() {
        let mut b = P2cEwma::new(&specs(&[1, 1, 1, 1]), P2cConfig::default());
        let latency = |e| Duration::from_millis(if e == 0 { 100 } else { 2 });
        let counts = simulate(&mut b, 4, 20_000, Duration::from_micros(500), latency, |_| true);
        let share0 = f64::from(counts[0]) / 20_000.0;
        assert!(share0 < 0.02, "slow endpoint got {share0:.3} of picks: {counts:?}");
        assert!(counts[1..].iter().all(|&c| c > 5_000), "{counts:?}");
    }

    #[test]
    fn p2c_steers_away_from_a_failing_endpoint() {
        let mut b = P2cEwma::new(&specs(&[1, 1, 1]), P2cConfig::default());
        let latency = |_| Duration::from_millis(2);
        let counts = simulate(&mut b, 3, 20_000, Duration::from_micros(500), latency, |e| e != 2);
        let share2 = f64::from(counts[2]) / 20_000.0;
        assert!(share2 < 0.05, "failing endpoint got {share2:.3}: {counts:?}");
        assert!(b.success_estimate(2).unwrap() < 0.2);
        assert!(b.success_estimate(0).unwrap() > 0.99);
    }

    #[test]
    fn p2c_spreads_evenly_over_equal_endpoints() {
        let mut b = P2cEwma::new(&specs(&[1, 1, 1, 1]), P2cConfig::default());
        let counts = simulate(
            &mut b,
            4,
            20_000,
            Duration::from_micros(500),
            |_| Duration::from_millis(2),
            |_| true,
        );
        assert!(counts.iter().all(|&c| (4_000..6_000).contains(&c)), "{counts:?}");
    }

    #[test]
    fn p2c_forces_a_probe_of_an_endpoint_not_picked_for_a_while() {
        let config = P2cConfig::default();
        let mut b = P2cEwma::new(&specs(&[1, 1]), config);
        let t0 = Instant::from_nanos(1);
        // Endpoint 1 looks terrible: slow and failing.
        b.on_start(1, t0);
        b.on_end(1, Duration::from_secs(2), false, t0 + Duration::from_secs(2));
        b.on_start(0, t0);
        b.on_end(0, Duration::from_millis(1), true, t0 + Duration::from_millis(1));
        let early = t0 + Duration::from_secs(3);
        for r in 0..10 {
            assert_eq!(b.pick(&[0, 1], &PickContext::new(early, r)), Some(0));
            b.on_start(0, early);
            b.on_end(0, Duration::from_millis(1), true, early);
        }
        // More than 3 s since endpoint 1 was last picked: one probe, then back to 0.
        let later = t0 + Duration::from_secs(3) + Duration::from_millis(1);
        assert_eq!(b.pick(&[0, 1], &PickContext::new(later, 0)), Some(1));
        assert_eq!(b.pick(&[0, 1], &PickContext::new(later, 1)), Some(0));
    }

    #[test]
    fn peak_ewma_takes_a_slow_sample_at_once_and_forgets_it_with_time() {
        let mut b = P2cEwma::new(&specs(&[1]), P2cConfig::default());
        let mut now = Instant::from_nanos(1);
        b.on_end(0, Duration::from_millis(1), true, now);
        now += Duration::from_millis(10);
        b.on_end(0, Duration::from_millis(50), true, now);
        assert_eq!(b.latency_estimate(0), Some(Duration::from_millis(50)));
        // Fast samples over ~3 τ bring it most of the way back.
        for _ in 0..180 {
            now += Duration::from_millis(10);
            b.on_end(0, Duration::from_millis(1), true, now);
        }
        let est = b.latency_estimate(0).unwrap();
        assert!(est < Duration::from_millis(5), "{est:?}");
    }

    #[test]
    fn heavier_endpoints_win_more_comparisons() {
        let mut b = P2cEwma::new(&specs(&[1, 3]), P2cConfig::default());
        let counts = simulate(
            &mut b,
            2,
            20_000,
            Duration::from_micros(300),
            |_| Duration::from_millis(2),
            |_| true,
        );
        assert!(counts[1] > 2 * counts[0], "{counts:?}");
    }
}
