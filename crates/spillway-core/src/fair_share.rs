//! Max-min fair sharing of a capacity among clients by their wants (Doorman style), used by
//! global quota leasing.
//!
//! Why max-min: when a shared quota (say 1000 req/s across gateway instances) is
//! oversubscribed, a client asking for little should get all of it, and the rest should be
//! split evenly among the clients that want more — nobody can get more without taking from
//! someone who has less. Weights make "evenly" mean "in proportion to weight" (a bigger
//! instance, a more important tenant).
//!
//! The algorithm is water-filling: visit clients in increasing order of want ÷ weight; each is
//! offered its weighted share of what remains; a client wanting less than that takes its want
//! and leaves the rest for the others; once one client wants more than its share, so does
//! every later one, and they all get exactly their weighted share.
//!
//! ```
//! use spillway_core::fair_share::{max_min_fair_share, Demand};
//! let alloc = max_min_fair_share(100.0, &[Demand::new(10.0), Demand::new(60.0), Demand::new(80.0)]);
//! assert_eq!(alloc, vec![10.0, 45.0, 45.0]);
//! ```

/// What one client asks for.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Demand {
    /// How much the client wants. Negative or non-finite wants count as 0.
    pub want: f64,
    /// The client's weight: unsatisfied clients receive capacity in proportion to it.
    /// Non-positive or non-finite weights count as 1 (validate configuration before).
    pub weight: f64,
}

impl Demand {
    /// A want with weight 1.
    pub const fn new(want: f64) -> Demand {
        Demand { want, weight: 1.0 }
    }

    /// A want with a weight.
    pub const fn weighted(want: f64, weight: f64) -> Demand {
        Demand { want, weight }
    }

    fn sanitized(self) -> (f64, f64) {
        let want = if self.want.is_finite() && self.want > 0.0 { self.want } else { 0.0 };
        let weight = if self.weight.is_finite() && self.weight > 0.0 { self.weight } else { 1.0 };
        (want, weight)
    }
}

/// The max-min fair allocation of `capacity` among `demands`, in the same order.
///
/// Guarantees (property-tested): no client gets more than it wants; the total never exceeds
/// `capacity` (up to floating-point rounding); when the total want fits, everyone gets its
/// want; otherwise all of `capacity` is handed out and the clients left wanting receive equal
/// shares per unit of weight, each at least as large (per weight) as any satisfied client's.
/// A non-positive or non-finite `capacity` allocates nothing.
pub fn max_min_fair_share(capacity: f64, demands: &[Demand]) -> Vec<f64> {
    let mut out = Vec::with_capacity(demands.len());
    max_min_fair_share_into(capacity, demands, &mut out);
    out
}

/// [`max_min_fair_share`] writing into `out` (cleared first), to reuse its allocation.
pub fn max_min_fair_share_into(capacity: f64, demands: &[Demand], out: &mut Vec<f64>) {
    out.clear();
    out.resize(demands.len(), 0.0);
    if !(capacity.is_finite() && capacity > 0.0) || demands.is_empty() {
        return;
    }
    let clean: Vec<(f64, f64)> = demands.iter().map(|d| d.sanitized()).collect();
    let total_want: f64 = clean.iter().map(|&(w, _)| w).sum();
    if total_want <= capacity {
        for (slot, &(want, _)) in out.iter_mut().zip(&clean) {
            *slot = want;
        }
        return;
    }
    let mut order: Vec<usize> = (0..clean.len()).collect();
    // Increasing want per unit of weight; `total_cmp` orders every finite value.
    order.sort_by(|&a, &b| (clean[a].0 / clean[a].1).total_cmp(&(clean[b].0 / clean[b].1)));
    // Remaining weight from position k on, summed from the back so it does not drift.
    let mut weight_from = vec![0.0; order.len() + 1];
    for k in (0..order.len()).rev() {
        weight_from[k] = weight_from[k + 1] + clean[order[k]].1;
    }
    let mut remaining = capacity;
    for (k, &i) in order.iter().enumerate() {
        let (want, weight) = clean[i];
        let per_weight = remaining / weight_from[k];
        if want <= per_weight * weight {
            out[i] = want;
            remaining = (remaining - want).max(0.0);
        } else {
            // Everyone from here on wants at least as much per weight: split the rest.
            for &j in &order[k..] {
                out[j] = (per_weight * clean[j].1).min(clean[j].0);
            }
            return;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EPS: f64 = 1e-9;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= EPS * (1.0 + a.abs().max(b.abs()))
    }

    #[test]
    fn small_wants_are_satisfied_and_the_rest_is_split_equally() {
        let alloc = max_min_fair_share(
            10.0,
            &[Demand::new(2.0), Demand::new(2.6), Demand::new(4.0), Demand::new(5.0)],
        );
        assert_eq!(alloc[0], 2.0);
        assert_eq!(alloc[1], 2.6);
        assert!(close(alloc[2], 2.7) && close(alloc[3], 2.7), "{alloc:?}");
    }

    #[test]
    fn weights_split_the_contended_capacity_proportionally() {
        let alloc = max_min_fair_share(
            90.0,
            &[Demand::weighted(100.0, 1.0), Demand::weighted(100.0, 2.0), Demand::new(5.0)],
        );
        assert_eq!(alloc[2], 5.0);
        assert!(close(alloc[0], 85.0 / 3.0) && close(alloc[1], 170.0 / 3.0), "{alloc:?}");
    }

    #[test]
    fn everyone_gets_their_want_when_it_fits() {
        let d = [Demand::new(1.0), Demand::new(0.0), Demand::new(3.5)];
        assert_eq!(max_min_fair_share(4.5, &d), vec![1.0, 0.0, 3.5]);
    }

    #[test]
    fn degenerate_inputs_allocate_nothing_or_sanitize() {
        assert_eq!(max_min_fair_share(0.0, &[Demand::new(1.0)]), vec![0.0]);
        assert_eq!(max_min_fair_share(f64::NAN, &[Demand::new(1.0)]), vec![0.0]);
        assert!(max_min_fair_share(5.0, &[]).is_empty());
        let alloc = max_min_fair_share(
            4.0,
            &[Demand::new(f64::NAN), Demand::weighted(10.0, -1.0), Demand::new(-3.0)],
        );
        assert_eq!(alloc, vec![0.0, 4.0, 0.0]);
    }

    fn demands() -> impl Strategy<Value = Vec<Demand>> {
        prop::collection::vec(
            (0.0f64..1_000.0, prop_oneof![Just(1.0f64), 0.1f64..10.0])
                .prop_map(|(want, weight)| Demand::weighted(want, weight)),
            0..20,
        )
    }

    proptest! {
        #[test]
        fn allocation_never_exceeds_capacity_nor_any_want(
            capacity in 0.0f64..5_000.0, ds in demands()
        ) {
            let alloc = max_min_fair_share(capacity, &ds);
            prop_assert_eq!(alloc.len(), ds.len());
            let total: f64 = alloc.iter().sum();
            prop_assert!(total <= capacity * (1.0 + EPS) + EPS, "total {} > {}", total, capacity);
            for (a, d) in alloc.iter().zip(&ds) {
                prop_assert!(*a >= 0.0);
                prop_assert!(*a <= d.want * (1.0 + EPS), "{} > want {}", a, d.want);
            }
        }

        #[test]
        fn everyone_is_satisfied_when_total_want_fits(ds in demands(), slack in 0.0f64..100.0) {
            let total_want: f64 = ds.iter().map(|d| d.want).sum();
            let alloc = max_min_fair_share(total_want + slack + EPS, &ds);
            for (a, d) in alloc.iter().zip(&ds) {
                prop_assert!(close(*a, d.want), "{} vs want {}", a, d.want);
            }
        }

        #[test]
        fn oversubscribed_capacity_is_fully_used_and_unsatisfied_shares_are_weighted_equal(
            capacity in 1.0f64..5_000.0, ds in demands()
        ) {
            let total_want: f64 = ds.iter().map(|d| d.want).sum();
            prop_assume!(total_want > capacity * (1.0 + 1e-6));
            let alloc = max_min_fair_share(capacity, &ds);
            let total: f64 = alloc.iter().sum();
            prop_assert!(close(total, capacity), "Pareto: {} of {} used", total, capacity);
            // Unsatisfied clients all get the same share per unit of weight ...
            let unsatisfied: Vec<f64> = alloc.iter().zip(&ds)
                .filter(|(a, d)| **a < d.want * (1.0 - 1e-9))
                .map(|(a, d)| a / d.weight)
                .collect();
            prop_assert!(!unsatisfied.is_empty());
            let level = unsatisfied[0];
            for s in &unsatisfied {
                prop_assert!(close(*s, level), "{} vs {}", s, level);
            }
            // ... and no satisfied client got more per weight than that level (max-min).
            for (a, d) in alloc.iter().zip(&ds) {
                prop_assert!(a / d.weight <= level * (1.0 + 1e-9) + EPS);
            }
        }
    }
}
