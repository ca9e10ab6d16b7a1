//! Round robin and nginx's smooth weighted round robin.
//!
//! Why both: plain round robin is the cheapest fair choice when endpoints are alike; smooth
//! weighted round robin spreads a heavy endpoint's turns evenly through the cycle (5,1,1 gives
//! `a a b a c a a`, not `a a a a a b c`), so a heavier endpoint never receives a burst.

use super::{Balancer, EndpointSpec, PickContext};
use crate::clock::Instant;
use std::time::Duration;

/// Each eligible endpoint in turn. Weights are ignored.
///
/// The cursor walks positions of the `eligible` slice, so when the eligible set changes the
/// rotation continues over the new set rather than restarting.
#[derive(Clone, Debug)]
pub struct RoundRobin {
    len: usize,
    next: usize,
}

impl RoundRobin {
    /// Round robin over `len` endpoints, starting at the first eligible one.
    pub fn new(len: usize) -> RoundRobin {
        RoundRobin::with_start(len, 0)
    }

    /// Round robin starting at eligible position `start % eligible.len()` (give each worker
    /// thread a different start so they do not hit the same endpoint together).
    pub fn with_start(len: usize, start: usize) -> RoundRobin {
        RoundRobin { len, next: start }
    }
}

impl Balancer for RoundRobin {
    fn pick(&mut self, eligible: &[usize], _ctx: &PickContext) -> Option<usize> {
        let n = eligible.len();
        if n == 0 {
            return None;
        }
        // Normally the first candidate is valid; out-of-range indices are skipped.
        for _ in 0..n {
            let pos = self.next % n;
            self.next = pos.wrapping_add(1);
            let e = eligible[pos];
            if e < self.len {
                return Some(e);
            }
        }
        None
    }
}

/// nginx's smooth weighted round robin.
///
/// Each pick: every eligible endpoint's `current` grows by its effective weight, the largest
/// `current` wins (first on ties) and is lowered by the total effective weight. Over any
/// `sum(weights)` consecutive picks (with a stable eligible set and no failures) each endpoint
/// is picked exactly `weight` times.
///
/// Failures back off like nginx's `max_fails=1`: a failed endpoint's effective weight drops to
/// zero and climbs back by one per pick it takes part in, so it returns to full weight after
/// `weight` picks.
#[derive(Clone, Debug)]
pub struct SmoothWeightedRoundRobin {
    weight: Box<[i64]>,
    effective: Box<[i64]>,
    current: Box<[i64]>,
}

impl SmoothWeightedRoundRobin {
    /// A chooser over `endpoints` with their weights.
    pub fn new(endpoints: &[EndpointSpec]) -> SmoothWeightedRoundRobin {
        let weight: Box<[i64]> =
            endpoints.iter().map(|e| i64::from(e.effective_weight())).collect();
        SmoothWeightedRoundRobin {
            effective: weight.clone(),
            current: vec![0; weight.len()].into_boxed_slice(),
            weight,
        }
    }
}

impl Balancer for SmoothWeightedRoundRobin {
    fn pick(&mut self, eligible: &[usize], _ctx: &PickContext) -> Option<usize> {
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        let mut best_current = i64::MIN;
        for &e in eligible {
            let Some(&w) = self.weight.get(e) else { continue };
            let eff = self.effective[e];
            self.current[e] += eff;
            total += eff;
            if eff < w {
                self.effective[e] = eff + 1;
            }
            if self.current[e] > best_current {
                best_current = self.current[e];
                best = Some(e);
            }
        }
        let b = best?;
        self.current[b] -= total;
        Some(b)
    }

    fn on_end(&mut self, endpoint: usize, _latency: Duration, success: bool, _now: Instant) {
        if !success {
            if let Some(eff) = self.effective.get_mut(endpoint) {
                *eff = 0;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_support::specs;
    use super::*;

    fn ctx() -> PickContext {
        PickContext::new(Instant::ZERO, 0)
    }

    fn sequence(b: &mut impl Balancer, eligible: &[usize], n: usize) -> Vec<usize> {
        (0..n).map(|_| b.pick(eligible, &ctx()).unwrap()).collect()
    }

    #[test]
    fn round_robin_cycles_exactly_through_the_eligible_set() {
        let mut rr = RoundRobin::new(4);
        assert_eq!(sequence(&mut rr, &[0, 1, 2, 3], 8), [0, 1, 2, 3, 0, 1, 2, 3]);
        let mut rr = RoundRobin::with_start(4, 2);
        assert_eq!(sequence(&mut rr, &[0, 1, 2, 3], 5), [2, 3, 0, 1, 2]);
    }

    #[test]
    fn round_robin_skips_a_removed_endpoint() {
        let mut rr = RoundRobin::new(4);
        assert_eq!(sequence(&mut rr, &[0, 1, 3], 6), [0, 1, 3, 0, 1, 3]);
        assert_eq!(sequence(&mut rr, &[0, 9, 3], 4), [0, 3, 0, 3]);
    }

    #[test]
    fn smooth_weighted_round_robin_interleaves_like_nginx() {
        let mut swrr = SmoothWeightedRoundRobin::new(&specs(&[5, 1, 1]));
        let seq = sequence(&mut swrr, &[0, 1, 2], 14);
        // a a b a c a a, twice.
        assert_eq!(seq, [0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn smooth_weighted_round_robin_gives_each_endpoint_its_weight_per_cycle() {
        let weights = [3, 7, 1, 4, 2];
        let mut swrr = SmoothWeightedRoundRobin::new(&specs(&weights));
        let total: u32 = weights.iter().sum();
        for _ in 0..5 {
            let mut counts = [0u32; 5];
            for e in sequence(&mut swrr, &[0, 1, 2, 3, 4], total as usize) {
                counts[e] += 1;
            }
            assert_eq!(counts, weights);
        }
    }

    #[test]
    fn smooth_weighted_round_robin_never_picks_an_ineligible_heavy_endpoint() {
        let mut swrr = SmoothWeightedRoundRobin::new(&specs(&[100, 1, 1]));
        let seq = sequence(&mut swrr, &[1, 2], 10);
        assert!(seq.iter().all(|&e| e != 0));
        assert_eq!(seq.iter().filter(|&&e| e == 1).count(), 5);
    }

    #[test]
    fn smooth_weighted_round_robin_backs_off_after_a_failure_then_recovers() {
        let mut swrr = SmoothWeightedRoundRobin::new(&specs(&[4, 4]));
        swrr.on_end(0, Duration::ZERO, false, Instant::ZERO);
        let first8 = sequence(&mut swrr, &[0, 1], 8);
        let zeros = first8.iter().filter(|&&e| e == 0).count();
        assert!(zeros < 4, "failed endpoint got {zeros} of 8 right after failing");
        // Back at full weight: an even split over a long run.
        let later = sequence(&mut swrr, &[0, 1], 800);
        let zeros = later.iter().filter(|&&e| e == 0).count();
        assert!((396..=404).contains(&zeros), "{zeros}");
    }
}
