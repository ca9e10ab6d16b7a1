//! The plumbing shared by the limiters that ask the store on every request (exact mode and
//! counter mode): the store timeout, the health backoff after a failure, the over-limit cache,
//! the local fallback, and their counters.
//!
//! Why one place: both modes differ only in the script they run and in how a refusal tells
//! which classes are still blocked; how a request is protected from a slow or dead store, and
//! how refusals are answered without a store call, must be the same for both.
//!
//! The over-limit cache is per key and per class: a refusal says until when each
//! criticality class is blocked (a `SHEDDABLE` refusal does not block `CRITICAL`, whose
//! reserve is smaller), so the cache only ever refuses what the store would.

use crate::decision::{LimitMode, QuotaDecision};
use crate::error::StoreError;
use crate::fallback::{DecisionSource, StoreFailurePolicy, StoreHealth};
use crate::store::QuotaStore;
use crate::view::ExactView;
use parking_lot::Mutex;
use spillway_core::rate::{CriticalityReserve, GcraConfig, KeyedLimiter};
use spillway_core::retry::{Backoff, Jitter};
use spillway_core::{Criticality, Decision, Instant};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// First wait before probing a failed store again; doubles per failed probe.
const PROBE_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest wait between probes of a failed store.
const PROBE_BACKOFF_CAP: Duration = Duration::from_secs(2);

/// The whole permits each class (by [`Criticality::index`]) must leave of `capacity`: the
/// reserve fraction of the capacity, rounded down and capped at `capacity − 1` — the rule of
/// the core's limiters, so every class can use a full bucket.
pub(crate) fn reserve_units(reserve: CriticalityReserve, capacity: u64) -> [u64; 4] {
    let max = capacity.saturating_sub(1);
    Criticality::ALL.map(|class| {
        let units = (reserve.fraction(class) * capacity as f64).floor();
        // A fraction is in [0, 1): the product fits in u64.
        (units as u64).min(max)
    })
}

/// A key known to be over its limit: until when each class is refused.
#[derive(Copy, Clone, Debug)]
struct Blocked {
    /// By class index; an instant at or before `now` means the class is not blocked.
    until: [Instant; 4],
    reset_at: Instant,
}

/// What the store answered, in the limiter's terms.
#[derive(Copy, Clone, Debug)]
pub(crate) struct Verdict {
    pub admitted: bool,
    pub remaining: u64,
    pub retry_after: Option<Duration>,
    pub reset_after: Duration,
    /// On a refusal, how long each class (by index) cannot take a single permit from now
    /// (zero: it could now). Ignored on admission.
    pub blocked_for: [Duration; 4],
}

/// The settings the guard needs.
#[derive(Clone, Debug)]
pub(crate) struct GuardSettings {
    pub name: String,
    pub limit: u64,
    pub mode: LimitMode,
    pub store_timeout: Duration,
    pub on_store_failure: StoreFailurePolicy,
    pub cache_max_keys: usize,
}

/// The shared state of a per-request limiter.
#[derive(Debug)]
pub(crate) struct StoreGuard {
    settings: GuardSettings,
    store: Arc<dyn QuotaStore>,
    over_limit: Mutex<HashMap<Box<str>, Blocked>>,
    health: Mutex<StoreHealth>,
    local: KeyedLimiter<Box<str>, GcraConfig>,
    fallback_total: AtomicU64,
    fallback_decisions: AtomicU64,
    cache_hits: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl StoreGuard {
    /// A guard over `store`, falling back to the keyed `local` limiter.
    pub fn new(
        settings: GuardSettings,
        store: Arc<dyn QuotaStore>,
        local: KeyedLimiter<Box<str>, GcraConfig>,
    ) -> Option<StoreGuard> {
        let backoff = Backoff::try_new(PROBE_BACKOFF_BASE, PROBE_BACKOFF_CAP, Jitter::None).ok()?;
        Some(StoreGuard {
            settings,
            store,
            over_limit: Mutex::new(HashMap::new()),
            health: Mutex::new(StoreHealth::new(backoff)),
            local,
            fallback_total: AtomicU64::new(0),
            fallback_decisions: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            last_error: Mutex::new(None),
        })
    }

    /// The store.
    pub fn store(&self) -> &dyn QuotaStore {
        self.store.as_ref()
    }

    /// Judges one request: from the over-limit cache, the fallback while the store is
    /// skipped, or the store's answer to `ask()` (converted by `verdict`), within the timeout.
    /// `ask` is called only when the store is to be asked (a memory store's step runs when
    /// its future is created).
    pub async fn check<R, F>(
        &self,
        key: &str,
        permits: u32,
        class: Criticality,
        now: Instant,
        ask: impl FnOnce() -> F,
        verdict: impl FnOnce(R) -> Verdict,
    ) -> QuotaDecision
    where
        F: Future<Output = Result<R, StoreError>>,
    {
        if let Some(blocked) = self.cached_block(key, class, now) {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return self.decision(
                false,
                Some(0),
                Some(blocked.reset_at.saturating_duration_since(now)),
                Some(blocked.until[class.index()].saturating_duration_since(now)),
                DecisionSource::OverLimitCache,
            );
        }
        if !self.health.lock().try_begin(now) {
            return self.fallback(key, permits, class, now);
        }
        let reply = match tokio::time::timeout(self.settings.store_timeout, ask()).await {
            Ok(Ok(reply)) => verdict(reply),
            Ok(Err(error)) => {
                return self.store_failed(error.to_string(), key, permits, class, now)
            }
            Err(_) => {
                let error = StoreError::Timeout(self.settings.store_timeout);
                return self.store_failed(error.to_string(), key, permits, class, now);
            }
        };
        let recovered = {
            let mut health = self.health.lock();
            let was_down = !health.is_up();
            health.on_success();
            was_down
        };
        if recovered {
            tracing::info!(limit = %self.settings.name, "quota store answers again");
        }
        if !reply.admitted && reply.blocked_for.iter().any(|b| !b.is_zero()) {
            self.remember_blocked(key, now, reply.blocked_for, reply.reset_after);
        }
        self.decision(
            reply.admitted,
            Some(reply.remaining),
            Some(reply.reset_after),
            if reply.admitted { None } else { reply.retry_after },
            DecisionSource::Store,
        )
    }

    fn decision(
        &self,
        admitted: bool,
        remaining: Option<u64>,
        reset_after: Option<Duration>,
        retry_after: Option<Duration>,
        source: DecisionSource,
    ) -> QuotaDecision {
        QuotaDecision {
            admitted,
            limit: self.settings.limit,
            remaining,
            reset_after,
            retry_after,
            mode: self.settings.mode,
            source,
        }
    }

    fn cached_block(&self, key: &str, class: Criticality, now: Instant) -> Option<Blocked> {
        if self.settings.cache_max_keys == 0 {
            return None;
        }
        let mut cache = self.over_limit.lock();
        match cache.get(key) {
            Some(b) if b.until[class.index()] > now => Some(*b),
            Some(b) if b.until.iter().all(|u| *u <= now) => {
                cache.remove(key);
                None
            }
            _ => None,
        }
    }

    fn remember_blocked(&self, key: &str, now: Instant, blocked: [Duration; 4], reset: Duration) {
        if self.settings.cache_max_keys == 0 {
            return;
        }
        let mut cache = self.over_limit.lock();
        if cache.len() >= self.settings.cache_max_keys {
            cache.retain(|_, b| b.until.iter().any(|u| *u > now));
            if cache.len() >= self.settings.cache_max_keys {
                return; // full of live entries: the store keeps judging this key
            }
        }
        let until = blocked.map(|b| now + b);
        cache.insert(key.into(), Blocked { until, reset_at: now + reset });
    }

    fn store_failed(
        &self,
        error: String,
        key: &str,
        permits: u32,
        class: Criticality,
        now: Instant,
    ) -> QuotaDecision {
        if self.health.lock().on_failure(now) {
            self.fallback_total.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                limit = %self.settings.name,
                %error,
                policy = %self.settings.on_store_failure,
                "quota store unreachable: global limit falls back"
            );
        }
        *self.last_error.lock() = Some(error);
        self.fallback(key, permits, class, now)
    }

    fn fallback(&self, key: &str, permits: u32, class: Criticality, now: Instant) -> QuotaDecision {
        self.fallback_decisions.fetch_add(1, Ordering::Relaxed);
        let policy = self.settings.on_store_failure;
        let source = DecisionSource::Fallback(policy);
        match policy {
            StoreFailurePolicy::Open => self.decision(true, None, None, None, source),
            StoreFailurePolicy::Closed => self.decision(false, None, None, None, source),
            StoreFailurePolicy::LastLease | StoreFailurePolicy::LocalShare => {
                match self.local.check_borrowed(key, now, permits, class) {
                    Decision::Reject(r) => self.decision(false, None, None, r.retry_after, source),
                    Decision::Admit | Decision::Wait(_) => {
                        self.decision(true, None, None, None, source)
                    }
                }
            }
        }
    }

    /// The last store call succeeded (or none has failed yet).
    pub fn store_up(&self) -> bool {
        self.health.lock().is_up()
    }

    /// Times the store became unreachable.
    pub fn fallback_total(&self) -> u64 {
        self.fallback_total.load(Ordering::Relaxed)
    }

    /// Requests judged by the fallback policy.
    pub fn fallback_decisions(&self) -> u64 {
        self.fallback_decisions.load(Ordering::Relaxed)
    }

    /// Requests refused by the over-limit cache without a store call.
    pub fn cache_hits(&self) -> u64 {
        self.cache_hits.load(Ordering::Relaxed)
    }

    /// The admin view, with the mode's `period` and `burst` filled in by the caller.
    pub fn view(&self, now: Instant, period: Duration, burst: u64) -> ExactView {
        let over_limit_keys =
            self.over_limit.lock().values().filter(|b| b.until.iter().any(|u| *u > now)).count();
        ExactView {
            name: self.settings.name.clone(),
            mode: self.settings.mode,
            limit: self.settings.limit,
            period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
            burst,
            store: self.store.kind(),
            store_up: self.store_up(),
            on_store_failure: self.settings.on_store_failure,
            fallback_total: self.fallback_total(),
            fallback_decisions: self.fallback_decisions(),
            over_limit_keys,
            cache_hits: self.cache_hits(),
            last_error: self.last_error.lock().clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_are_whole_permits_and_leave_every_class_one() {
        let default = CriticalityReserve::default();
        assert_eq!(reserve_units(default, 100), [25, 10, 0, 0]);
        assert_eq!(reserve_units(default, 9), [2, 0, 0, 0]);
        assert_eq!(reserve_units(default, 1), [0, 0, 0, 0]);
        let steep = CriticalityReserve::try_new([0.99, 0.5, 0.0, 0.0]).unwrap();
        assert_eq!(reserve_units(steep, 2), [1, 1, 0, 0]);
    }
}
