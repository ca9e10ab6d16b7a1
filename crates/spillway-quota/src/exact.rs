//! Exact mode: one atomic GCRA script per request on the shared store, for low-volume limits
//! that must hold precisely across the fleet (e.g. 100 per hour per user).
//!
//! Why a local over-limit cache: once a key is refused, no request for it can be admitted
//! before the store's `blocked_for` has passed, so the limiter answers those locally until
//! then — an abusive client hammering its exhausted key costs no Redis call. The cache never
//! admits, so it cannot make the limit less exact.
//!
//! Why a timeout and a health backoff: a request never waits on the store longer than
//! `store_timeout`; after a failure, requests skip the store (and go to the policy) until a
//! backoff has passed and one request probes it, so a dead Redis does not add the timeout to
//! every request.

use crate::decision::{LimitMode, QuotaDecision};
use crate::error::ConfigError;
use crate::fallback::{DecisionSource, StoreFailurePolicy, StoreHealth};
use crate::key::gcra_key;
use crate::store::{GcraRequest, QuotaStore};
use crate::view::ExactView;
use parking_lot::Mutex;
use spillway_core::clock::duration_nanos;
use spillway_core::rate::{
    CriticalityReserve, GcraConfig, KeyedLimiter, KeyedLimiterBuilder, Rate,
};
use spillway_core::retry::{Backoff, Jitter};
use spillway_core::{Criticality, Decision, Instant};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// An exact global limit's configuration. Build with [`ExactLimitConfig::new`], adjust the
/// public fields, and validate with [`ExactLimiter::try_new`].
#[derive(Clone, Debug, PartialEq)]
pub struct ExactLimitConfig {
    /// The limit's name: part of every store key, so it must be the same on every instance.
    pub name: String,
    /// Permits per `period`.
    pub limit: u64,
    /// The period of `limit`.
    pub period: Duration,
    /// Permits a key may take at once (default: `limit`, so a fresh key may spend its whole
    /// period's allowance at once and then earns one permit every `period / limit`).
    pub burst: u64,
    /// Longest a request waits for the store (default 20 ms).
    pub store_timeout: Duration,
    /// What to do while the store is unreachable (default `last_lease`, which exact mode
    /// treats as `local_share`).
    pub on_store_failure: StoreFailurePolicy,
    /// Instances expected in the fleet (default 1): `local_share` allows each instance
    /// `limit / fleet_size_hint` per key while the store is down.
    pub fleet_size_hint: u32,
    /// Most keys remembered as over their limit (default 100 000); 0 disables the cache.
    pub cache_max_keys: usize,
}

impl ExactLimitConfig {
    /// `limit` permits per `period` under `name`, with the documented defaults.
    pub fn new(name: impl Into<String>, limit: u64, period: Duration) -> ExactLimitConfig {
        ExactLimitConfig {
            name: name.into(),
            limit,
            period,
            burst: limit,
            store_timeout: Duration::from_millis(20),
            on_store_failure: StoreFailurePolicy::default(),
            fleet_size_hint: 1,
            cache_max_keys: 100_000,
        }
    }
}

/// First wait before probing a failed store again; doubles per failed probe.
const PROBE_BACKOFF_BASE: Duration = Duration::from_millis(100);
/// Longest wait between probes of a failed store.
const PROBE_BACKOFF_CAP: Duration = Duration::from_secs(2);

/// A key known to be over its limit.
#[derive(Copy, Clone, Debug)]
struct Blocked {
    until: Instant,
    reset_at: Instant,
}

/// An exact global limit over many keys (one GCRA state per key in the store).
///
/// ```
/// use spillway_quota::{ExactLimitConfig, ExactLimiter, MemoryStore};
/// use spillway_core::{Clock, SystemClock};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let store = Arc::new(MemoryStore::new()); // or a RedisStore shared by the fleet
/// let config = ExactLimitConfig::new("per-user", 100, Duration::from_secs(3600));
/// let limiter = ExactLimiter::try_new(config, store)?;
/// let clock = SystemClock::new();
/// let decision = limiter.check("alice", 1, clock.now()).await;
/// assert!(decision.admitted);
/// assert_eq!((decision.limit, decision.remaining), (100, Some(99)));
/// # Ok::<(), spillway_quota::ConfigError>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct ExactLimiter {
    config: ExactLimitConfig,
    interval_us: u64,
    store: Arc<dyn QuotaStore>,
    over_limit: Mutex<HashMap<Box<str>, Blocked>>,
    health: Mutex<StoreHealth>,
    local: KeyedLimiter<Box<str>, GcraConfig>,
    fallback_total: AtomicU64,
    fallback_decisions: AtomicU64,
    cache_hits: AtomicU64,
    last_error: Mutex<Option<String>>,
}

impl ExactLimiter {
    /// Validates `config` and builds the limiter on `store`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field: an empty name, a zero limit, period, burst, timeout
    /// or fleet size, a burst above `u32::MAX`, or a rate above one permit per microsecond
    /// (the store's resolution; use lease mode for such rates).
    pub fn try_new(
        config: ExactLimitConfig,
        store: Arc<dyn QuotaStore>,
    ) -> Result<ExactLimiter, ConfigError> {
        let bad = |field, problem| Err(ConfigError::new(&config.name, field, problem));
        if config.name.is_empty() {
            return bad("name", "must not be empty");
        }
        if config.limit == 0 {
            return bad("limit", "must be at least 1");
        }
        let period_us = duration_nanos(config.period) / 1_000;
        if period_us == 0 {
            return bad("period", "must be at least 1 µs");
        }
        if period_us < config.limit {
            return bad("limit", "allows more than one permit per µs: use lease mode");
        }
        if config.burst == 0 || config.burst > u64::from(u32::MAX) {
            return bad("burst", "must be between 1 and 4294967295");
        }
        if config.store_timeout.is_zero() {
            return bad("store_timeout", "must be longer than zero");
        }
        if config.fleet_size_hint == 0 {
            return bad("fleet_size_hint", "must be at least 1");
        }
        let Some(local_period) = config.period.checked_mul(config.fleet_size_hint) else {
            return bad("fleet_size_hint", "times the period overflows");
        };
        let local_burst = (config.burst / u64::from(config.fleet_size_hint)).max(1);
        let local_rule = Rate::try_new(config.limit, local_period)
            .and_then(|rate| {
                GcraConfig::try_new(rate, local_burst as u32, CriticalityReserve::NONE)
            })
            .map_err(|_| ConfigError::new(&config.name, "period", "gives no usable local rate"))?;
        let local =
            KeyedLimiterBuilder::new(local_rule).max_keys(config.cache_max_keys.max(1024)).build();
        // Rounded up: the store never runs faster than configured.
        let interval_us = period_us.div_ceil(config.limit);
        let backoff = Backoff::try_new(PROBE_BACKOFF_BASE, PROBE_BACKOFF_CAP, Jitter::None)
            .map_err(|_| ConfigError::new(&config.name, "store_timeout", "no usable backoff"))?;
        Ok(ExactLimiter {
            config,
            interval_us,
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

    /// The configuration.
    pub fn config(&self) -> &ExactLimitConfig {
        &self.config
    }

    /// Judges `permits` permits (at least 1) for `key` at `now` (the gateway's monotonic
    /// clock; used for the over-limit cache and the fallback). Waits at most the store
    /// timeout, and never fails: a store problem is answered by the store-failure policy.
    pub async fn check(&self, key: &str, permits: u32, now: Instant) -> QuotaDecision {
        let permits = permits.max(1);
        if let Some(blocked) = self.cached_block(key, now) {
            self.cache_hits.fetch_add(1, Ordering::Relaxed);
            return self.decision(
                false,
                Some(0),
                Some(blocked.reset_at.saturating_duration_since(now)),
                Some(blocked.until.saturating_duration_since(now)),
                DecisionSource::OverLimitCache,
            );
        }
        if !self.health.lock().try_begin(now) {
            return self.fallback(key, permits, now);
        }
        let store_key = gcra_key(&self.config.name, key);
        let request = GcraRequest {
            key: &store_key,
            interval_us: self.interval_us,
            burst: self.config.burst,
            cost: u64::from(permits),
        };
        let reply = tokio::time::timeout(self.config.store_timeout, self.store.gcra(request)).await;
        let reply = match reply {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => return self.store_failed(error.to_string(), key, permits, now),
            Err(_) => {
                let error = crate::StoreError::Timeout(self.config.store_timeout);
                return self.store_failed(error.to_string(), key, permits, now);
            }
        };
        let recovered = {
            let mut health = self.health.lock();
            let was_down = !health.is_up();
            health.on_success();
            was_down
        };
        if recovered {
            tracing::info!(limit = %self.config.name, "quota store answers again (exact mode)");
        }
        if !reply.admitted && !reply.blocked_for.is_zero() {
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
            limit: self.config.limit,
            remaining,
            reset_after,
            retry_after,
            mode: LimitMode::Exact,
            source,
        }
    }

    fn cached_block(&self, key: &str, now: Instant) -> Option<Blocked> {
        if self.config.cache_max_keys == 0 {
            return None;
        }
        let mut cache = self.over_limit.lock();
        match cache.get(key) {
            Some(b) if b.until > now => Some(*b),
            Some(_) => {
                cache.remove(key);
                None
            }
            None => None,
        }
    }

    fn remember_blocked(&self, key: &str, now: Instant, blocked: Duration, reset: Duration) {
        if self.config.cache_max_keys == 0 {
            return;
        }
        let mut cache = self.over_limit.lock();
        if cache.len() >= self.config.cache_max_keys {
            cache.retain(|_, b| b.until > now);
            if cache.len() >= self.config.cache_max_keys {
                return; // full of live entries: the store keeps judging this key
            }
        }
        cache.insert(key.into(), Blocked { until: now + blocked, reset_at: now + reset });
    }

    fn store_failed(&self, error: String, key: &str, permits: u32, now: Instant) -> QuotaDecision {
        if self.health.lock().on_failure(now) {
            self.fallback_total.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                limit = %self.config.name,
                %error,
                policy = %self.config.on_store_failure,
                "quota store unreachable: exact limit falls back"
            );
        }
        *self.last_error.lock() = Some(error);
        self.fallback(key, permits, now)
    }

    fn fallback(&self, key: &str, permits: u32, now: Instant) -> QuotaDecision {
        self.fallback_decisions.fetch_add(1, Ordering::Relaxed);
        let policy = self.config.on_store_failure;
        let source = DecisionSource::Fallback(policy);
        match policy {
            StoreFailurePolicy::Open => self.decision(true, None, None, None, source),
            StoreFailurePolicy::Closed => self.decision(false, None, None, None, source),
            StoreFailurePolicy::LastLease | StoreFailurePolicy::LocalShare => {
                match self.local.check_borrowed(key, now, permits, Criticality::Critical) {
                    Decision::Reject(r) => self.decision(false, None, None, r.retry_after, source),
                    Decision::Admit | Decision::Wait(_) => {
                        self.decision(true, None, None, None, source)
                    }
                }
            }
        }
    }

    /// The last store call succeeded (or none has failed yet): `spillway_quota_store_up`.
    pub fn store_up(&self) -> bool {
        self.health.lock().is_up()
    }

    /// Times the store became unreachable: `spillway_quota_fallback_total`.
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

    /// The state for the admin endpoint.
    pub fn view(&self, now: Instant) -> ExactView {
        let over_limit_keys = self.over_limit.lock().values().filter(|b| b.until > now).count();
        ExactView {
            name: self.config.name.clone(),
            limit: self.config.limit,
            period_ms: u64::try_from(self.config.period.as_millis()).unwrap_or(u64::MAX),
            burst: self.config.burst,
            store: self.store.kind(),
            store_up: self.store_up(),
            on_store_failure: self.config.on_store_failure,
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
    use crate::store::MemoryStore;
    use spillway_core::{Clock, ManualClock};

    fn limiter(clock: &ManualClock, config: ExactLimitConfig) -> ExactLimiter {
        let store = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
        ExactLimiter::try_new(config, store).unwrap()
    }

    #[tokio::test]
    async fn the_limit_holds_and_refusals_are_then_answered_from_the_cache() {
        let clock = ManualClock::new();
        let l = limiter(&clock, ExactLimitConfig::new("u", 3, Duration::from_secs(3)));
        for left in [2, 1, 0] {
            let d = l.check("k", 1, clock.now()).await;
            assert!(d.admitted);
            assert_eq!(d.remaining, Some(left));
        }
        let refused = l.check("k", 1, clock.now()).await;
        assert_eq!((refused.admitted, refused.source), (false, DecisionSource::Store));
        assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));
        assert_eq!(refused.reset_after, Some(Duration::from_secs(3)));
        clock.advance_ms(400);
        let cached = l.check("k", 1, clock.now()).await;
        assert_eq!((cached.admitted, cached.source), (false, DecisionSource::OverLimitCache));
        assert_eq!(cached.retry_after, Some(Duration::from_millis(600)));
        assert_eq!(l.cache_hits(), 1);
        clock.advance_ms(600);
        assert!(l.check("k", 1, clock.now()).await.admitted, "one permit back after 1 s");
        assert!(l.check("other", 1, clock.now()).await.admitted, "keys are independent");
    }

    #[tokio::test]
    async fn a_refused_large_request_does_not_block_small_ones() {
        let clock = ManualClock::new();
        let l = limiter(&clock, ExactLimitConfig::new("u", 5, Duration::from_secs(5)));
        assert!(l.check("k", 3, clock.now()).await.admitted);
        assert!(!l.check("k", 3, clock.now()).await.admitted);
        assert!(l.check("k", 2, clock.now()).await.admitted, "not cached: 2 were left");
    }

    #[derive(Debug)]
    struct HungStore;

    impl QuotaStore for HungStore {
        fn gcra<'a>(&'a self, _: GcraRequest<'a>) -> crate::StoreFuture<'a, crate::GcraReply> {
            Box::pin(std::future::pending())
        }
        fn lease<'a>(
            &'a self,
            _: crate::LeaseRequest<'a>,
        ) -> crate::StoreFuture<'a, crate::LeaseReply> {
            Box::pin(std::future::pending())
        }
        fn kind(&self) -> crate::StoreKind {
            crate::StoreKind::Redis
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_store_times_out_into_the_local_share() {
        let clock = ManualClock::new();
        let mut config = ExactLimitConfig::new("u", 10, Duration::from_secs(1));
        config.fleet_size_hint = 2; // 5 per second per instance while the store is down
        let l = ExactLimiter::try_new(config, Arc::new(HungStore)).unwrap();
        let started = tokio::time::Instant::now();
        let d = l.check("k", 1, clock.now()).await;
        assert_eq!(started.elapsed(), Duration::from_millis(20), "waited the store timeout");
        assert_eq!(d.source, DecisionSource::Fallback(StoreFailurePolicy::LastLease));
        assert!(d.admitted);
        let admitted = {
            let mut n = 1;
            for _ in 0..20 {
                n += u32::from(l.check("k", 1, clock.now()).await.admitted);
            }
            n
        };
        assert_eq!(admitted, 5, "limit / fleet_size_hint, locally");
        assert_eq!(started.elapsed(), Duration::from_millis(20), "later requests skip the store");
        assert_eq!((l.store_up(), l.fallback_total(), l.fallback_decisions()), (false, 1, 21));
        let view = serde_json::to_value(l.view(clock.now())).unwrap();
        assert_eq!(view["on_store_failure"], "last_lease");
        assert_eq!(view["last_error"], "quota store did not answer within 20ms");
    }

    #[test]
    fn config_errors_name_the_field() {
        let store: Arc<dyn QuotaStore> = Arc::new(MemoryStore::new());
        let mut c = ExactLimitConfig::new("u", 0, Duration::from_secs(1));
        assert_eq!(ExactLimiter::try_new(c.clone(), store.clone()).unwrap_err().field, "limit");
        c.limit = 2_000_000;
        let err = ExactLimiter::try_new(c.clone(), store.clone()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "quota limit `u`: `limit` allows more than one permit per µs: use lease mode"
        );
        c.limit = 10;
        c.burst = 0;
        assert_eq!(ExactLimiter::try_new(c, store).unwrap_err().field, "burst");
    }
}
