//! What a limiter does when the quota store does not answer: the `on_store_failure` policy,
//! a lease-mode key's lease state, and the store health of exact mode. All pure, driven by
//! `now`.
//!
//! Why these defaults: a lease was computed for a fleet that most likely still exists, so
//! keeping it until it expires (`last_lease`) changes nothing for a short Redis blip; after
//! that the last known fleet size still gives a fair static split (`capacity / instances`),
//! which keeps the fleet near its limit without any coordination.

use crate::bucket::Enforcement;
use serde::{Deserialize, Serialize};
use spillway_core::retry::Backoff;
use spillway_core::Instant;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// What to enforce while the quota store is unreachable (`on_store_failure`).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreFailurePolicy {
    /// Keep the last lease until it expires, then `capacity / last known instance count`
    /// (lease mode). In exact mode the same as [`StoreFailurePolicy::LocalShare`].
    #[default]
    LastLease,
    /// At once `capacity / last known instance count` (lease mode), or a local limit of
    /// `limit / fleet_size_hint` per key (exact mode).
    LocalShare,
    /// Admit everything until the store is back (fail open).
    Open,
    /// Refuse everything until the store is back (fail closed).
    Closed,
}

impl StoreFailurePolicy {
    /// The configuration spelling: `last_lease`, `local_share`, `open`, `closed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            StoreFailurePolicy::LastLease => "last_lease",
            StoreFailurePolicy::LocalShare => "local_share",
            StoreFailurePolicy::Open => "open",
            StoreFailurePolicy::Closed => "closed",
        }
    }
}

impl fmt::Display for StoreFailurePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Not one of `last_lease`, `local_share`, `open`, `closed`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("on_store_failure must be last_lease, local_share, open or closed")]
pub struct ParsePolicyError;

impl FromStr for StoreFailurePolicy {
    type Err = ParsePolicyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "last_lease" => Ok(StoreFailurePolicy::LastLease),
            "local_share" => Ok(StoreFailurePolicy::LocalShare),
            "open" => Ok(StoreFailurePolicy::Open),
            "closed" => Ok(StoreFailurePolicy::Closed),
            _ => Err(ParsePolicyError),
        }
    }
}

/// Where a decision's limit came from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionSource {
    /// Exact mode: the store's script judged it.
    Store,
    /// Exact mode: the key is known to be over its limit until its reset; judged locally.
    OverLimitCache,
    /// Lease mode: the local bucket under a live lease.
    Lease,
    /// Lease mode: no lease yet; the configured initial share.
    InitialShare,
    /// The store is unreachable; the policy decided.
    Fallback(StoreFailurePolicy),
}

/// A grant received from the store.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct Lease {
    /// Permits per second.
    pub grant: f64,
    /// Live instances when it was granted, this one included.
    pub instances: u32,
    /// When it lapses unless refreshed (local clock, counted from when it was asked for).
    pub expires_at: Instant,
}

/// One lease-mode key's view of the store: the last lease and whether the store answers.
#[derive(Clone, Debug, Default)]
pub struct LeaseState {
    lease: Option<Lease>,
    last_instances: Option<u32>,
    down_since: Option<Instant>,
}

impl LeaseState {
    /// No lease yet, store state unknown.
    pub fn new() -> LeaseState {
        LeaseState::default()
    }

    /// The store granted `grant` among `instances` for a request sent at `asked_at`.
    pub fn on_lease(&mut self, grant: f64, instances: u32, asked_at: Instant, ttl: Duration) {
        self.lease = Some(Lease { grant, instances, expires_at: asked_at + ttl });
        self.last_instances = Some(instances.max(1));
        self.down_since = None;
    }

    /// A refresh failed at `now`. True when this starts a fallback period (for
    /// `fallback_total`).
    pub fn on_store_failure(&mut self, now: Instant) -> bool {
        let starts = self.down_since.is_none();
        if starts {
            self.down_since = Some(now);
        }
        starts
    }

    /// The last lease received, live or not.
    pub fn lease(&self) -> Option<Lease> {
        self.lease
    }

    /// Since when refreshes have been failing, if they are.
    pub fn down_since(&self) -> Option<Instant> {
        self.down_since
    }

    /// What to enforce at `now` for a limit of `capacity` permits per second.
    pub fn enforcement(
        &self,
        policy: StoreFailurePolicy,
        capacity: f64,
        initial_share: f64,
        now: Instant,
    ) -> (Enforcement, DecisionSource) {
        let live = self.lease.filter(|l| now < l.expires_at);
        if self.down_since.is_none() {
            match (self.lease, live) {
                (_, Some(lease)) => {
                    return (Enforcement::Limit { rate: lease.grant }, DecisionSource::Lease)
                }
                (None, None) => {
                    return (
                        Enforcement::Limit { rate: initial_share },
                        DecisionSource::InitialShare,
                    )
                }
                // A lease that lapsed without a failed refresh (the refresher stalled): treat
                // it as a store failure.
                (Some(_), None) => {}
            }
        }
        let source = DecisionSource::Fallback(policy);
        let share = match self.last_instances {
            Some(n) => capacity / f64::from(n.max(1)),
            None => initial_share,
        };
        let enforcement = match policy {
            StoreFailurePolicy::Open => Enforcement::Open,
            StoreFailurePolicy::Closed => Enforcement::Closed,
            StoreFailurePolicy::LocalShare => Enforcement::Limit { rate: share },
            StoreFailurePolicy::LastLease => match live {
                Some(lease) => Enforcement::Limit { rate: lease.grant },
                None => Enforcement::Limit { rate: share },
            },
        };
        (enforcement, source)
    }
}

/// Exact mode's view of the store: after a failure, requests skip the store (and go straight
/// to the policy) until a backoff has passed; then one request probes it.
#[derive(Clone, Debug)]
pub struct StoreHealth {
    backoff: Backoff,
    failures: u32,
    retry_at: Instant,
}

impl StoreHealth {
    /// A healthy store, probed after failures at `backoff`'s un-jittered schedule.
    pub fn new(backoff: Backoff) -> StoreHealth {
        StoreHealth { backoff, failures: 0, retry_at: Instant::ZERO }
    }

    /// True when a request may call the store at `now`. While failing, the first caller after
    /// the backoff becomes the probe (and pushes the next probe one backoff step later).
    pub fn try_begin(&mut self, now: Instant) -> bool {
        if self.failures == 0 {
            return true;
        }
        if now >= self.retry_at {
            self.retry_at = now + self.backoff.ceiling(self.failures);
            return true;
        }
        false
    }

    /// The store answered.
    pub fn on_success(&mut self) {
        self.failures = 0;
    }

    /// The store failed at `now`. True when this is the first failure of a run.
    pub fn on_failure(&mut self, now: Instant) -> bool {
        self.retry_at = now + self.backoff.ceiling(self.failures);
        self.failures = self.failures.saturating_add(1);
        self.failures == 1
    }

    /// The last call succeeded (or none failed yet).
    pub fn is_up(&self) -> bool {
        self.failures == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_core::retry::Jitter;
    use spillway_core::{Clock, ManualClock};

    const TTL: Duration = Duration::from_secs(5);

    fn rate(e: Enforcement) -> f64 {
        match e {
            Enforcement::Limit { rate } => rate,
            other => panic!("not a limit: {other:?}"),
        }
    }

    #[test]
    fn before_any_lease_the_initial_share_applies() {
        let state = LeaseState::new();
        let (e, source) =
            state.enforcement(StoreFailurePolicy::LastLease, 900.0, 100.0, Instant::ZERO);
        assert_eq!((rate(e), source), (100.0, DecisionSource::InitialShare));
    }

    #[test]
    fn last_lease_keeps_the_grant_until_it_expires_then_splits_by_instances() {
        let clock = ManualClock::new();
        let mut state = LeaseState::new();
        state.on_lease(500.0, 3, clock.now(), TTL);
        let policy = StoreFailurePolicy::LastLease;
        assert_eq!(
            state.enforcement(policy, 900.0, 100.0, clock.now()),
            (Enforcement::Limit { rate: 500.0 }, DecisionSource::Lease)
        );
        clock.advance_ms(1000);
        assert!(state.on_store_failure(clock.now()), "the first failure starts a fallback");
        assert!(!state.on_store_failure(clock.now()), "later ones do not count again");
        let (e, source) = state.enforcement(policy, 900.0, 100.0, clock.now());
        assert_eq!((rate(e), source), (500.0, DecisionSource::Fallback(policy)));
        clock.advance_ms(4000); // the lease asked for at 0 s lapses at 5 s
        let (e, _) = state.enforcement(policy, 900.0, 100.0, clock.now());
        assert_eq!(rate(e), 300.0, "capacity / last known instances");
        // Back: the next lease ends the fallback.
        state.on_lease(450.0, 2, clock.now(), TTL);
        assert_eq!(state.enforcement(policy, 900.0, 100.0, clock.now()).1, DecisionSource::Lease);
        assert_eq!(state.down_since(), None);
    }

    #[test]
    fn other_policies_act_at_once() {
        let mut state = LeaseState::new();
        state.on_lease(500.0, 4, Instant::ZERO, TTL);
        state.on_store_failure(Instant::ZERO);
        let at = |p| state.enforcement(p, 1000.0, 100.0, Instant::ZERO).0;
        assert_eq!(at(StoreFailurePolicy::LocalShare), Enforcement::Limit { rate: 250.0 });
        assert_eq!(at(StoreFailurePolicy::Open), Enforcement::Open);
        assert_eq!(at(StoreFailurePolicy::Closed), Enforcement::Closed);
    }

    #[test]
    fn a_store_down_from_the_start_keeps_the_initial_share() {
        let mut state = LeaseState::new();
        state.on_store_failure(Instant::ZERO);
        let (e, source) =
            state.enforcement(StoreFailurePolicy::LastLease, 1000.0, 120.0, Instant::ZERO);
        assert_eq!(rate(e), 120.0);
        assert_eq!(source, DecisionSource::Fallback(StoreFailurePolicy::LastLease));
    }

    #[test]
    fn a_lapsed_lease_without_failures_is_treated_as_a_failure() {
        let mut state = LeaseState::new();
        state.on_lease(500.0, 2, Instant::ZERO, TTL);
        let later = Instant::ZERO + Duration::from_secs(6);
        let (e, source) = state.enforcement(StoreFailurePolicy::LastLease, 1000.0, 100.0, later);
        assert_eq!(
            (rate(e), source),
            (500.0, DecisionSource::Fallback(StoreFailurePolicy::LastLease))
        );
    }

    #[test]
    fn exact_mode_skips_a_failing_store_until_the_backoff_then_probes_once() {
        let clock = ManualClock::new();
        let backoff =
            Backoff::try_new(Duration::from_millis(100), Duration::from_secs(2), Jitter::None)
                .unwrap();
        let mut health = StoreHealth::new(backoff);
        assert!(health.try_begin(clock.now()) && health.is_up());
        assert!(health.on_failure(clock.now()));
        assert!(!health.try_begin(clock.now()), "within the backoff: straight to the policy");
        clock.advance_ms(100);
        assert!(health.try_begin(clock.now()), "one probe");
        assert!(!health.try_begin(clock.now()), "only one");
        assert!(!health.on_failure(clock.now()));
        clock.advance_ms(150);
        assert!(!health.try_begin(clock.now()), "the second wait is 200 ms");
        clock.advance_ms(50);
        assert!(health.try_begin(clock.now()));
        health.on_success();
        assert!(health.is_up() && health.try_begin(clock.now()));
    }
}
