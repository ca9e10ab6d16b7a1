//! The exact-mode rule, GCRA (the generic cell rate algorithm), as a pure step over one key's
//! state: the in-memory store runs it, and `lua/gcra.lua` is the same step for Redis.
//!
//! Why GCRA rather than a sliding window: one number per key (the theoretical arrival time,
//! TAT), one read and one write per check, and an exact bound — over any interval of length
//! `t`, at most `burst + t / interval` permits are admitted, with no window-edge effects and
//! no approximation. It is written here again instead of reusing `spillway_core::rate::Gcra`
//! because the step must be the Lua script's twin line for line (integer microseconds of
//! *store* time) and must return what `RateLimit-*` headers need (remaining permits and
//! the time until the bucket is full), which the core's limiters do not report.
//!
//! Units: microseconds. Exact while every value stays below 2^53 µs (285 years), so the Lua
//! script's doubles compute the same integers as this function.

/// What one GCRA step decided, in the units the store replies in.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct GcraOutcome {
    /// The permits were taken.
    pub admitted: bool,
    /// Permits a next request could take right after this step.
    pub remaining: u64,
    /// On a rejection, microseconds until the same request would be admitted; `None` when it
    /// never can (`cost > burst`). Always `Some(0)` on admission.
    pub retry_after_us: Option<u64>,
    /// Microseconds until the key is back to a full burst.
    pub reset_after_us: u64,
    /// Microseconds until a single permit can be admitted (0 if one can be now): how long the
    /// key may be cached locally as over its limit.
    pub blocked_us: u64,
}

/// One GCRA step: judges `cost` permits at `now_us` against the stored TAT (`None` for a key
/// never seen or expired), for one permit every `interval_us` and bursts of `burst`, for a
/// request whose criticality class must leave `reserve` whole permits of a full bucket
/// (the core's [`spillway_core::rate::CriticalityReserve`] rule: class `c` is admitted only if
/// at least `reserve(c)` permits remain after the take, so as a key nears its limit
/// `SHEDDABLE` is refused first and `CRITICAL_PLUS`, with no reserve, has first claim).
/// Returns the outcome — `remaining`, `retry_after_us` and `blocked_us` for that class — and,
/// when admitted, the TAT to store.
///
/// `interval_us`, `burst` and `cost` are at least 1 (smaller values are raised to 1);
/// `reserve` is at most `burst − 1`, so every class can use a full bucket.
pub fn gcra_step(
    tat: Option<u64>,
    now_us: u64,
    interval_us: u64,
    burst: u64,
    cost: u64,
    reserve: u64,
) -> (GcraOutcome, Option<u64>) {
    let interval = interval_us.max(1);
    let burst = burst.max(1);
    let cost = cost.max(1);
    let reserve = reserve.min(burst - 1);
    let tat = tat.unwrap_or(now_us).max(now_us);
    // How far ahead of `now` this class may push the TAT.
    let tau = interval.saturating_mul(burst - reserve);
    let remaining_at = |t: u64| tau.saturating_sub(t - now_us) / interval;
    let blocked_at = |t: u64| (t + interval).saturating_sub(tau).saturating_sub(now_us);
    let refused = |retry: Option<u64>| GcraOutcome {
        admitted: false,
        remaining: remaining_at(tat),
        retry_after_us: retry,
        reset_after_us: tat - now_us,
        blocked_us: blocked_at(tat),
    };
    if cost > burst - reserve {
        return (refused(None), None);
    }
    let new_tat = tat.saturating_add(interval.saturating_mul(cost));
    if new_tat - now_us > tau {
        return (refused(Some(new_tat - tau - now_us)), None);
    }
    let outcome = GcraOutcome {
        admitted: true,
        remaining: remaining_at(new_tat),
        retry_after_us: Some(0),
        reset_after_us: new_tat - now_us,
        blocked_us: blocked_at(new_tat),
    };
    (outcome, Some(new_tat))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_key_admits_exactly_the_burst_then_one_per_interval() {
        let (interval, burst) = (36_000_000, 100); // 100 per hour
        let mut tat = None;
        let now = 1_000_000;
        for i in 0..100 {
            let (o, next) = gcra_step(tat, now, interval, burst, 1, 0);
            assert!(o.admitted, "permit {i}");
            assert_eq!(o.remaining, 99 - i);
            tat = next;
        }
        let (o, next) = gcra_step(tat, now, interval, burst, 1, 0);
        assert!(!o.admitted);
        assert_eq!(next, None, "a refusal stores nothing");
        assert_eq!(o.retry_after_us, Some(interval));
        assert_eq!(o.blocked_us, interval);
        assert_eq!(o.reset_after_us, 100 * interval);
        let (o, _) = gcra_step(tat, now + interval, interval, burst, 1, 0);
        assert!(o.admitted, "one permit back after one interval");
    }

    #[test]
    fn a_request_larger_than_the_burst_is_never_admitted() {
        let (o, next) = gcra_step(None, 0, 10, 5, 6, 0);
        assert!(!o.admitted && next.is_none());
        assert_eq!(o.retry_after_us, None);
        assert_eq!(o.blocked_us, 0, "a single permit could still pass");
        assert_eq!(o.remaining, 5);
    }

    #[test]
    fn a_multi_permit_refusal_waits_for_all_of_its_permits() {
        let (_, tat) = gcra_step(None, 0, 10, 5, 4, 0); // 1 left
        let (o, _) = gcra_step(tat, 0, 10, 5, 3, 0);
        assert!(!o.admitted);
        assert_eq!(o.remaining, 1);
        assert_eq!(o.retry_after_us, Some(20));
        assert_eq!(o.blocked_us, 0);
    }

    #[test]
    fn a_stale_tat_counts_as_a_full_bucket() {
        let (o, next) = gcra_step(Some(5), 1_000, 10, 3, 1, 0);
        assert!(o.admitted);
        assert_eq!(next, Some(1_010));
        assert_eq!(o.remaining, 2);
    }

    #[test]
    fn a_class_with_a_reserve_leaves_it_to_the_classes_above() {
        // 100 per 100 s; SHEDDABLE leaves 25, SHEDDABLE_PLUS 10, CRITICAL nothing.
        let (interval, burst) = (1_000_000, 100);
        let mut tat = None;
        let take = |tat: &mut Option<u64>, reserve| {
            let (o, next) = gcra_step(*tat, 0, interval, burst, 1, reserve);
            if next.is_some() {
                *tat = next;
            }
            o
        };
        let sheddable = (0..200).filter(|_| take(&mut tat, 25).admitted).count();
        assert_eq!(sheddable, 75);
        let refused = take(&mut tat, 25);
        assert_eq!(refused.remaining, 0, "nothing left for SHEDDABLE");
        assert_eq!(refused.retry_after_us, Some(interval));
        assert_eq!(refused.blocked_us, interval);
        let o = take(&mut tat, 10);
        assert!(o.admitted, "SHEDDABLE_PLUS still has 15");
        assert_eq!(o.remaining, 14);
        let critical = (0..200).filter(|_| take(&mut tat, 0).admitted).count();
        assert_eq!(critical, 24, "CRITICAL takes the rest of the burst");
        // Refilled permits go to CRITICAL first: SHEDDABLE waits for 25 of them.
        let (o, _) = gcra_step(tat, interval, interval, burst, 1, 25);
        assert_eq!((o.admitted, o.retry_after_us), (false, Some(25 * interval)));
        let (o, _) = gcra_step(tat, interval, interval, burst, 1, 0);
        assert!(o.admitted);
        let (o, _) = gcra_step(None, 0, interval, burst, 80, 25);
        assert_eq!(o.retry_after_us, None, "80 never fit under SHEDDABLE's 75");
    }

    proptest::proptest! {
        /// Whatever the classes, a key never admits more than `burst + t / interval`; a class
        /// alone never more than `burst − reserve + t / interval`; and whenever a class is
        /// admitted, any class with a smaller reserve would have been too.
        #[test]
        fn reserves_only_ever_refuse_and_lower_classes_are_refused_first(
            steps in proptest::collection::vec((0u64..3_000, 1u64..4, 0usize..4), 1..400),
        ) {
            let (interval, burst) = (1_000, 20);
            let reserves = [5u64, 2, 0, 0];
            let mut tat = None;
            let mut now = 0;
            let mut admitted = 0u64;
            let mut sheddable_only = None;
            let mut sheddable_admitted = 0u64;
            for (gap, cost, class) in steps {
                now += gap;
                let reserve = reserves[class];
                let (o, next) = gcra_step(tat, now, interval, burst, cost, reserve);
                for (c, &r) in reserves.iter().enumerate() {
                    if r <= reserve && o.admitted {
                        let (higher, _) = gcra_step(tat, now, interval, burst, cost, r);
                        proptest::prop_assert!(higher.admitted, "class {c} behind {class}");
                    }
                }
                if o.admitted {
                    admitted += cost;
                    tat = next;
                }
                proptest::prop_assert!(admitted <= burst + now / interval);
                // The same arrivals, all SHEDDABLE, on a key of their own.
                let (s, next) = gcra_step(sheddable_only, now, interval, burst, cost, 5);
                if s.admitted {
                    sheddable_admitted += cost;
                    sheddable_only = next;
                }
                proptest::prop_assert!(sheddable_admitted <= burst - 5 + now / interval);
            }
        }
    }
}
