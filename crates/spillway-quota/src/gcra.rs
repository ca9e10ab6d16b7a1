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
/// never seen or expired), for one permit every `interval_us` and bursts of `burst`.
/// Returns the outcome and, when admitted, the TAT to store.
///
/// `interval_us`, `burst` and `cost` are at least 1 (smaller values are raised to 1).
pub fn gcra_step(
    tat: Option<u64>,
    now_us: u64,
    interval_us: u64,
    burst: u64,
    cost: u64,
) -> (GcraOutcome, Option<u64>) {
    let interval = interval_us.max(1);
    let burst = burst.max(1);
    let cost = cost.max(1);
    let tat = tat.unwrap_or(now_us).max(now_us);
    let tau = interval.saturating_mul(burst);
    let remaining_at = |t: u64| tau.saturating_sub(t - now_us) / interval;
    let blocked_at = |t: u64| (t + interval).saturating_sub(tau).saturating_sub(now_us);
    let refused = |retry: Option<u64>| GcraOutcome {
        admitted: false,
        remaining: remaining_at(tat),
        retry_after_us: retry,
        reset_after_us: tat - now_us,
        blocked_us: blocked_at(tat),
    };
    if cost > burst {
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
            let (o, next) = gcra_step(tat, now, interval, burst, 1);
            assert!(o.admitted, "permit {i}");
            assert_eq!(o.remaining, 99 - i);
            tat = next;
        }
        let (o, next) = gcra_step(tat, now, interval, burst, 1);
        assert!(!o.admitted);
        assert_eq!(next, None, "a refusal stores nothing");
        assert_eq!(o.retry_after_us, Some(interval));
        assert_eq!(o.blocked_us, interval);
        assert_eq!(o.reset_after_us, 100 * interval);
        let (o, _) = gcra_step(tat, now + interval, interval, burst, 1);
        assert!(o.admitted, "one permit back after one interval");
    }

    #[test]
    fn a_request_larger_than_the_burst_is_never_admitted() {
        let (o, next) = gcra_step(None, 0, 10, 5, 6);
        assert!(!o.admitted && next.is_none());
        assert_eq!(o.retry_after_us, None);
        assert_eq!(o.blocked_us, 0, "a single permit could still pass");
        assert_eq!(o.remaining, 5);
    }

    #[test]
    fn a_multi_permit_refusal_waits_for_all_of_its_permits() {
        let (_, tat) = gcra_step(None, 0, 10, 5, 4); // 1 left
        let (o, _) = gcra_step(tat, 0, 10, 5, 3);
        assert!(!o.admitted);
        assert_eq!(o.remaining, 1);
        assert_eq!(o.retry_after_us, Some(20));
        assert_eq!(o.blocked_us, 0);
    }

    #[test]
    fn a_stale_tat_counts_as_a_full_bucket() {
        let (o, next) = gcra_step(Some(5), 1_000, 10, 3, 1);
        assert!(o.admitted);
        assert_eq!(next, Some(1_010));
        assert_eq!(o.remaining, 2);
    }
}
