//! The lease-mode grant rule as a pure function: the max-min fair share of a limit's capacity
//! among the live instances' demands, with any capacity nobody asked for spread evenly.
//!
//! `lua/lease.lua` computes the same thing inside Redis (the integration tests compare the two
//! on random inputs through a real server). The water-filling itself is
//! [`spillway_core::fair_share::max_min_fair_share`]; this adds the spreading of the leftover.
//!
//! Why spread the leftover: when the fleet asks for less than the capacity, handing each
//! instance exactly its demand would refuse any growth until the next refresh although the
//! limit is far away. Splitting the unused capacity evenly keeps the grants summing to the
//! capacity (so the fleet can never exceed it) while leaving each instance headroom. When the
//! fleet asks for more than the capacity there is no leftover and the grants are the plain
//! max-min fair shares.

use spillway_core::fair_share::{max_min_fair_share, Demand};

/// The grants of `capacity` (permits per second) among `demands` (permits per second, one per
/// live instance), in the same order.
///
/// Guarantees: the grants sum to `capacity` (up to rounding) when there is at least one
/// instance; an instance never gets less than its max-min fair share; when the demands exceed
/// the capacity, the grants are exactly the max-min fair shares. Negative or non-finite
/// demands count as 0; a non-positive or non-finite capacity grants nothing.
///
/// ```
/// use spillway_quota::lease_grants;
/// // Over-subscribed: the small demand is met, the rest is split evenly.
/// assert_eq!(lease_grants(1000.0, &[1800.0, 900.0, 300.0]), vec![350.0, 350.0, 300.0]);
/// // Under-subscribed: each gets its demand plus an even part of what nobody asked for.
/// assert_eq!(lease_grants(1000.0, &[100.0, 0.0]), vec![550.0, 450.0]);
/// ```
pub fn lease_grants(capacity: f64, demands: &[f64]) -> Vec<f64> {
    let wants: Vec<Demand> = demands.iter().map(|&d| Demand::new(d)).collect();
    let mut grants = max_min_fair_share(capacity, &wants);
    if grants.is_empty() || !(capacity.is_finite() && capacity > 0.0) {
        return grants;
    }
    let handed_out: f64 = grants.iter().sum();
    let leftover = capacity - handed_out;
    if leftover > 0.0 {
        let each = leftover / grants.len() as f64;
        for g in &mut grants {
            *g += each;
        }
    }
    grants
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn over_subscribed_grants_are_the_max_min_fair_shares() {
        let g = lease_grants(2000.0, &[1800.0, 900.0, 300.0]);
        assert_eq!(g, vec![850.0, 850.0, 300.0]);
    }

    #[test]
    fn idle_instances_share_the_unused_capacity() {
        assert_eq!(lease_grants(900.0, &[0.0, 0.0, 0.0]), vec![300.0, 300.0, 300.0]);
        assert_eq!(lease_grants(100.0, &[f64::NAN, -5.0]), vec![50.0, 50.0]);
    }

    #[test]
    fn no_instances_or_no_capacity_grant_nothing() {
        assert!(lease_grants(10.0, &[]).is_empty());
        assert_eq!(lease_grants(0.0, &[5.0]), vec![0.0]);
    }

    proptest! {
        #[test]
        fn grants_sum_to_capacity_and_cover_the_fair_share(
            capacity in 0.1f64..10_000.0,
            demands in prop::collection::vec(0.0f64..5_000.0, 1..12),
        ) {
            let grants = lease_grants(capacity, &demands);
            let total: f64 = grants.iter().sum();
            prop_assert!((total - capacity).abs() <= 1e-9 * capacity.max(1.0), "{} vs {}", total, capacity);
            let wants: Vec<Demand> = demands.iter().map(|&d| Demand::new(d)).collect();
            let fair = max_min_fair_share(capacity, &wants);
            for (g, f) in grants.iter().zip(&fair) {
                prop_assert!(*g >= *f - 1e-9 * capacity.max(1.0));
            }
        }
    }
}
