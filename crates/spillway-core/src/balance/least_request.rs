//! Least-request balancing: send to the endpoint with the fewest requests in flight per unit of
//! weight.
//!
//! Why two strategies: for a handful of endpoints a full scan is cheap and exact. For many, a
//! full scan costs O(n) per request and makes every worker thread pile onto the same "least
//! loaded" endpoint between updates; sampling two at random and taking the better one (power of
//! two choices, Mitzenmacher) is O(1) and avoids the herd while keeping the maximum load within
//! a small factor of optimal. The switch-over is [`LeastRequest::FULL_SCAN_MAX`].

use super::{two_distinct, Balancer, EndpointSpec, PickContext};
use crate::clock::Instant;
use std::time::Duration;

/// Fewest in-flight requests per unit of weight; ties broken at random.
///
/// The score compared is `(in_flight + 1) / weight`: with equal weights this is plain least
/// request; a weight-2 endpoint is expected to carry twice the requests of a weight-1 one.
/// In-flight counts are this chooser's (this worker thread's) own, kept by
/// [`Balancer::on_start`] / [`Balancer::on_end`].
#[derive(Clone, Debug)]
pub struct LeastRequest {
    weight: Box<[u64]>,
    in_flight: Box<[u64]>,
}

impl LeastRequest {
    /// Eligible sets up to this size are scanned fully; larger ones use power of two choices.
    pub const FULL_SCAN_MAX: usize = 8;

    /// A chooser over `endpoints` with their weights.
    pub fn new(endpoints: &[EndpointSpec]) -> LeastRequest {
        LeastRequest {
            weight: endpoints.iter().map(|e| u64::from(e.effective_weight())).collect(),
            in_flight: vec![0; endpoints.len()].into_boxed_slice(),
        }
    }

    /// Requests in flight to `endpoint` as this chooser counts them.
    pub fn in_flight(&self, endpoint: usize) -> u64 {
        self.in_flight.get(endpoint).copied().unwrap_or(0)
    }

    /// True when `a` is strictly less loaded than `b` (both in range).
    #[inline]
    fn less_loaded(&self, a: usize, b: usize) -> bool {
        // (fa+1)/wa < (fb+1)/wb  <=>  (fa+1)·wb < (fb+1)·wa, in u128 to rule out overflow.
        let lhs = u128::from(self.in_flight[a] + 1) * u128::from(self.weight[b]);
        let rhs = u128::from(self.in_flight[b] + 1) * u128::from(self.weight[a]);
        lhs < rhs
    }
}

impl Balancer for LeastRequest {
    fn pick(&mut self, eligible: &[usize], ctx: &PickContext) -> Option<usize> {
        let n = eligible.len();
        let len = self.weight.len();
        if n > Self::FULL_SCAN_MAX {
            let (a, b) = two_distinct(n, ctx.random);
            let (a, b) = (eligible[a], eligible[b]);
            match (a < len, b < len) {
                (true, true) => return Some(if self.less_loaded(b, a) { b } else { a }),
                (true, false) => return Some(a),
                (false, true) => return Some(b),
                // Both samples invalid (caller bug): fall through to the scan.
                (false, false) => {}
            }
        }
        if n == 0 {
            return None;
        }
        // Full scan starting at a random position, so ties go to a random endpoint.
        let start = (ctx.random % n as u64) as usize;
        let mut best: Option<usize> = None;
        for k in 0..n {
            let e = eligible[(start + k) % n];
            if e >= len {
                continue;
            }
            match best {
                Some(b) if !self.less_loaded(e, b) => {}
                _ => best = Some(e),
            }
        }
        best
    }

    fn on_start(&mut self, endpoint: usize, _now: Instant) {
        if let Some(f) = self.in_flight.get_mut(endpoint) {
            *f += 1;
        }
    }

    fn on_end(&mut self, endpoint: usize, _latency: Duration, _success: bool, _now: Instant) {
        if let Some(f) = self.in_flight.get_mut(endpoint) {
            *f = f.saturating_sub(1);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_support::{specs, Rng};
    use super::*;

    #[test]
    fn least_request_prefers_the_idle_endpoint() {
        let mut lr = LeastRequest::new(&specs(&[1, 1, 1]));
        for _ in 0..3 {
            lr.on_start(0, Instant::ZERO);
            lr.on_start(2, Instant::ZERO);
        }
        let mut rng = Rng(3);
        for _ in 0..100 {
            let ctx = PickContext::new(Instant::ZERO, rng.next());
            assert_eq!(lr.pick(&[0, 1, 2], &ctx), Some(1));
        }
        // Once it too is busy and another drains, the choice follows.
        for _ in 0..5 {
            lr.on_start(1, Instant::ZERO);
        }
        for _ in 0..3 {
            lr.on_end(2, Duration::ZERO, true, Instant::ZERO);
        }
        assert_eq!(lr.pick(&[0, 1, 2], &PickContext::new(Instant::ZERO, 0)), Some(2));
    }

    #[test]
    fn least_request_breaks_ties_at_random() {
        let mut lr = LeastRequest::new(&specs(&[1, 1, 1, 1]));
        let mut seen = [0u32; 4];
        let mut rng = Rng(9);
        for _ in 0..400 {
            let e = lr.pick(&[0, 1, 2, 3], &PickContext::new(Instant::ZERO, rng.next())).unwrap();
            seen[e] += 1;
        }
        assert!(seen.iter().all(|&c| c > 60), "{seen:?}");
    }

    #[test]
    fn least_request_loads_endpoints_in_proportion_to_weight() {
        let mut lr = LeastRequest::new(&specs(&[1, 3]));
        let mut rng = Rng(4);
        // Requests that never finish: in-flight counts settle at the 1:3 ratio.
        for _ in 0..400 {
            let e = lr.pick(&[0, 1], &PickContext::new(Instant::ZERO, rng.next())).unwrap();
            lr.on_start(e, Instant::ZERO);
        }
        assert!((99..=101).contains(&lr.in_flight(0)), "{}", lr.in_flight(0));
    }

    #[test]
    fn least_request_with_many_endpoints_steers_away_from_a_busy_one() {
        let n = 32;
        let mut lr = LeastRequest::new(&specs(&vec![1; n]));
        for _ in 0..50 {
            lr.on_start(7, Instant::ZERO);
        }
        let eligible: Vec<usize> = (0..n).collect();
        let mut rng = Rng(11);
        let mut hits = 0;
        let mut counts = vec![0u32; n];
        for _ in 0..3_200 {
            let e = lr.pick(&eligible, &PickContext::new(Instant::ZERO, rng.next())).unwrap();
            counts[e] += 1;
            if e == 7 {
                hits += 1;
            }
            // Finish immediately, except on 7 which stays busy.
            lr.on_start(e, Instant::ZERO);
            lr.on_end(e, Duration::ZERO, true, Instant::ZERO);
        }
        assert_eq!(hits, 0, "power of two choices always prefers the idle sample");
        assert!(counts.iter().enumerate().all(|(i, &c)| i == 7 || c > 50), "{counts:?}");
    }

    #[test]
    fn in_flight_never_goes_negative_on_unmatched_ends() {
        let mut lr = LeastRequest::new(&specs(&[1, 1]));
        lr.on_end(0, Duration::ZERO, true, Instant::ZERO);
        lr.on_end(5, Duration::ZERO, true, Instant::ZERO);
        assert_eq!(lr.in_flight(0), 0);
    }
}
