//! Lease mode: high-volume global limits with no store call on the request path. Each
//! instance enforces its current grant per limit key with a local token bucket; a background
//! refresher reports the instance's demand and receives its grant — the max-min fair share of
//! the capacity among the instances whose leases are alive — once per `refresh`.
//!
//! Why leases (Doorman, YouTube's quota system): a per-request store call costs a round trip
//! and a Redis command for every request; a lease costs one script per key per instance per
//! refresh, whatever the traffic. The price is approximation: a grant is based on demand
//! measured one refresh ago, and a dead instance's share returns to the others only when its
//! lease expires.

use crate::bucket::{Enforcement, LocalBucket, Take};
use crate::decision::{LimitMode, QuotaDecision};
use crate::demand::DemandMeter;
use crate::error::{ConfigError, StoreError};
use crate::fallback::{DecisionSource, LeaseState, StoreFailurePolicy};
use crate::key::lease_key;
use crate::store::{LeaseReply, LeaseRequest, QuotaStore};
use crate::view::{LeaseKeyView, LeaseView};
use parking_lot::{Mutex, RwLock};
use spillway_core::rate::CriticalityReserve;
use spillway_core::{Clock, Criticality, Instant};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The key that new keys share once `max_keys` keys are tracked (not a valid header value,
/// so no client can name it).
pub const OVERFLOW_KEY: &str = "\u{1}overflow";

/// A lease-mode global limit's configuration. Build with [`LeaseLimitConfig::new`], adjust
/// the public fields, and validate with [`LeaseLimiter::try_new`].
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseLimitConfig {
    /// The limit's name: part of every store key, the same on every instance.
    pub name: String,
    /// Permits per `period` for the whole fleet, per key.
    pub capacity: u64,
    /// The period of `capacity`.
    pub period: Duration,
    /// How often each key's lease is refreshed (default 1 s).
    pub refresh: Duration,
    /// How long a lease stays alive without a refresh (default `None`: 5 × `refresh`).
    pub lease_ttl: Option<Duration>,
    /// Permits per second an instance allows per key before its first lease (default
    /// `None`: the whole capacity, right for a single instance; a fleet of `n` should set
    /// `capacity / n`).
    pub initial_share: Option<f64>,
    /// Depth of the local bucket, as time at the grant's rate (default 100 ms, at least one
    /// permit): how bursty admitted traffic may be.
    pub burst: Duration,
    /// How much of the local bucket each criticality must leave to the classes above it
    /// (default [`CriticalityReserve::default`]: `SHEDDABLE` 25 %, `SHEDDABLE_PLUS` 10 %).
    pub reserve: CriticalityReserve,
    /// What to enforce while the store is unreachable (default `last_lease`).
    pub on_store_failure: StoreFailurePolicy,
    /// Longest a refresh waits for the store (default 250 ms; never on the request path).
    pub store_timeout: Duration,
    /// Most keys tracked at once (default 1024); further keys share one more key,
    /// [`OVERFLOW_KEY`], and its lease.
    pub max_keys: usize,
}

impl LeaseLimitConfig {
    /// `capacity` permits per `period` for the fleet under `name`, with the documented
    /// defaults.
    pub fn new(name: impl Into<String>, capacity: u64, period: Duration) -> LeaseLimitConfig {
        LeaseLimitConfig {
            name: name.into(),
            capacity,
            period,
            refresh: Duration::from_secs(1),
            lease_ttl: None,
            initial_share: None,
            burst: Duration::from_millis(100),
            reserve: CriticalityReserve::default(),
            on_store_failure: StoreFailurePolicy::default(),
            store_timeout: Duration::from_millis(250),
            max_keys: 1024,
        }
    }
}

/// One key's local state.
#[derive(Debug)]
struct KeyState {
    key: Box<str>,
    store_key: String,
    /// Requests offered since the last refresh (the only write on the request path besides
    /// the bucket).
    offered: AtomicU64,
    bucket: Mutex<Judge>,
    refresh: Mutex<KeyRefresh>,
}

#[derive(Debug)]
struct Judge {
    bucket: LocalBucket,
    source: DecisionSource,
}

#[derive(Debug)]
struct KeyRefresh {
    meter: DemandMeter,
    lease: LeaseState,
    last_offered_at: Instant,
    demand: Option<f64>,
    reply: Option<LeaseReply>,
}

#[derive(Debug)]
struct Inner {
    config: LeaseLimitConfig,
    capacity_per_second: f64,
    initial_share: f64,
    lease_ttl: Duration,
    store: Arc<dyn QuotaStore>,
    clock: Arc<dyn Clock>,
    instance: String,
    keys: RwLock<HashMap<Box<str>, Arc<KeyState>>>,
    store_up: AtomicBool,
    fallback_total: AtomicU64,
    fallback_decisions: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A lease-mode global limit over many keys. Cheap to clone (a handle).
///
/// ```
/// use spillway_quota::{LeaseLimitConfig, LeaseLimiter, MemoryStore};
/// use spillway_core::{Clock, Criticality, SystemClock};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let config = LeaseLimitConfig::new("api", 5_000, Duration::from_secs(1));
/// let clock = Arc::new(SystemClock::new());
/// let limiter = LeaseLimiter::try_new(config, Arc::new(MemoryStore::new()), "gw-1", clock.clone())?;
/// let _refresher = limiter.spawn_refresher(); // stops when dropped
/// let decision = limiter.check("/v1/search", 1, Criticality::Critical, clock.now());
/// assert!(decision.admitted); // a local decision: no store call on the request path
/// # Ok::<(), spillway_quota::ConfigError>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Debug)]
pub struct LeaseLimiter {
    inner: Arc<Inner>,
}

impl LeaseLimiter {
    /// Validates `config` and builds the limiter for the instance `instance` (unique in the
    /// fleet, e.g. [`crate::default_instance_id`]) on `store`, reading time from `clock`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the field: an empty name or instance id, a zero capacity,
    /// period, refresh, burst or store timeout, a lease TTL not longer than the refresh, a
    /// negative or non-finite initial share, or `max_keys` of 0.
    pub fn try_new(
        config: LeaseLimitConfig,
        store: Arc<dyn QuotaStore>,
        instance: impl Into<String>,
        clock: Arc<dyn Clock>,
    ) -> Result<LeaseLimiter, ConfigError> {
        let bad = |field, problem| Err(ConfigError::new(&config.name, field, problem));
        let instance = instance.into();
        if config.name.is_empty() {
            return bad("name", "must not be empty");
        }
        if instance.is_empty() {
            return bad("instance", "must not be empty");
        }
        if config.capacity == 0 {
            return bad("capacity", "must be at least 1");
        }
        if config.period.is_zero() {
            return bad("period", "must be longer than zero");
        }
        if config.refresh.is_zero() {
            return bad("refresh", "must be longer than zero");
        }
        if config.burst.is_zero() {
            return bad("burst", "must be longer than zero");
        }
        if config.store_timeout.is_zero() {
            return bad("store_timeout", "must be longer than zero");
        }
        if config.max_keys == 0 {
            return bad("max_keys", "must be at least 1");
        }
        let lease_ttl = config.lease_ttl.unwrap_or(config.refresh.saturating_mul(5));
        if lease_ttl <= config.refresh {
            return bad("lease_ttl", "must be longer than refresh");
        }
        let capacity_per_second = config.capacity as f64 / config.period.as_secs_f64();
        let initial_share = config.initial_share.unwrap_or(capacity_per_second);
        if !(initial_share.is_finite() && initial_share >= 0.0) {
            return bad("initial_share", "must be a finite rate of at least 0");
        }
        Ok(LeaseLimiter {
            inner: Arc::new(Inner {
                config,
                capacity_per_second,
                initial_share,
                lease_ttl,
                store,
                clock,
                instance,
                keys: RwLock::new(HashMap::new()),
                store_up: AtomicBool::new(true),
                fallback_total: AtomicU64::new(0),
                fallback_decisions: AtomicU64::new(0),
                last_error: Mutex::new(None),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseLimitConfig {
        &self.inner.config
    }

    /// This instance's id in the store.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// The clock the limiter reads (pass its `now()` to [`LeaseLimiter::check`]).
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Judges `permits` permits (at least 1) of class `class` for `key` at `now`, locally:
    /// no store call, no await. Counts the request into the key's demand either way.
    pub fn check(
        &self,
        key: &str,
        permits: u32,
        class: Criticality,
        now: Instant,
    ) -> QuotaDecision {
        let permits = permits.max(1);
        {
            let keys = self.inner.keys.read();
            if let Some(state) = keys.get(key) {
                return self.judge(state, permits, class, now);
            }
        }
        let state = self.track(key, now);
        self.judge(&state, permits, class, now)
    }

    fn track(&self, key: &str, now: Instant) -> Arc<KeyState> {
        let mut keys = self.inner.keys.write();
        let key = if keys.len() >= self.inner.config.max_keys && !keys.contains_key(key) {
            OVERFLOW_KEY
        } else {
            key
        };
        if let Some(state) = keys.get(key) {
            return state.clone();
        }
        let inner = &self.inner;
        let lease = LeaseState::new();
        let (enforcement, source) = lease.enforcement(
            inner.config.on_store_failure,
            inner.capacity_per_second,
            inner.initial_share,
            now,
        );
        let state = Arc::new(KeyState {
            key: key.into(),
            store_key: lease_key(&inner.config.name, key),
            offered: AtomicU64::new(0),
            bucket: Mutex::new(Judge {
                bucket: LocalBucket::new(
                    enforcement,
                    inner.config.burst,
                    inner.config.reserve,
                    now,
                ),
                source,
            }),
            refresh: Mutex::new(KeyRefresh {
                meter: DemandMeter::new(now, inner.config.refresh / 2),
                lease,
                last_offered_at: now,
                demand: None,
                reply: None,
            }),
        });
        keys.insert(key.into(), state.clone());
        state
    }

    fn judge(
        &self,
        state: &KeyState,
        permits: u32,
        class: Criticality,
        now: Instant,
    ) -> QuotaDecision {
        state.offered.fetch_add(u64::from(permits), Ordering::Relaxed);
        let (take, source) = {
            let mut judge = state.bucket.lock();
            (judge.bucket.try_take(permits, class, now), judge.source)
        };
        if let DecisionSource::Fallback(_) = source {
            self.inner.fallback_decisions.fetch_add(1, Ordering::Relaxed);
        }
        let (admitted, remaining, reset_after, retry_after) = match take {
            Take::Admitted { remaining, reset_after } => (true, remaining, reset_after, None),
            // A new grant may come with the next refresh.
            Take::Refused { retry_after } => {
                (false, Some(0), None, retry_after.or(Some(self.inner.config.refresh)))
            }
        };
        QuotaDecision {
            admitted,
            limit: self.inner.config.capacity,
            remaining,
            reset_after,
            retry_after,
            mode: LimitMode::Lease,
            source,
        }
    }

    /// One refresh round: for every tracked key, reports the demand measured since the last
    /// round and installs the grant (or applies the store-failure policy). Keys with no
    /// request for a lease TTL are forgotten. The refresher calls this every `refresh`; tests
    /// may call it by hand.
    pub async fn refresh(&self) {
        let now = self.inner.clock.now();
        let keys: Vec<Arc<KeyState>> = self.inner.keys.read().values().cloned().collect();
        let outcomes =
            futures_util::future::join_all(keys.iter().map(|k| self.refresh_key(k, now))).await;
        let mut any_ok = false;
        let mut any_failed = false;
        let mut idle = Vec::new();
        for (state, outcome) in keys.iter().zip(outcomes) {
            match outcome {
                Refreshed::Ok => any_ok = true,
                Refreshed::Failed => any_failed = true,
                Refreshed::Idle => idle.push(state.key.clone()),
            }
        }
        if !idle.is_empty() {
            let mut map = self.inner.keys.write();
            for key in idle {
                map.remove(&key);
            }
        }
        if any_ok || any_failed {
            let up = any_ok && !any_failed;
            let was_up = self.inner.store_up.swap(up, Ordering::Relaxed);
            if was_up && !up {
                tracing::warn!(
                    limit = %self.inner.config.name,
                    error = ?self.inner.last_error.lock().as_deref(),
                    policy = %self.inner.config.on_store_failure,
                    "quota store unreachable: lease limit falls back"
                );
            } else if !was_up && up {
                tracing::info!(limit = %self.inner.config.name, "quota store answers again: leases resume");
            }
        }
    }

    async fn refresh_key(&self, state: &KeyState, now: Instant) -> Refreshed {
        let inner = &self.inner;
        let count = state.offered.swap(0, Ordering::Relaxed);
        let demand = {
            let mut r = state.refresh.lock();
            if count > 0 {
                r.last_offered_at = now;
            } else if now.saturating_duration_since(r.last_offered_at) >= inner.lease_ttl {
                return Refreshed::Idle;
            }
            let demand = r.meter.sample(count, now);
            r.demand = demand;
            // Nothing measured yet: ask for the initial share.
            demand.unwrap_or(inner.initial_share)
        };
        let request = LeaseRequest {
            key: &state.store_key,
            instance: &inner.instance,
            demand,
            capacity: inner.capacity_per_second,
            ttl: inner.lease_ttl,
        };
        let reply = match tokio::time::timeout(
            inner.config.store_timeout,
            inner.store.lease(request),
        )
        .await
        {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(error)) => Err(error),
            Err(_) => Err(StoreError::Timeout(inner.config.store_timeout)),
        };
        let after = inner.clock.now();
        let outcome;
        let (enforcement, source) = {
            let mut r = state.refresh.lock();
            match reply {
                Ok(reply) => {
                    // The lease runs from when it was asked for: never longer than the store's.
                    r.lease.on_lease(reply.grant, reply.instances, now, inner.lease_ttl);
                    r.reply = Some(reply);
                    outcome = Refreshed::Ok;
                }
                Err(error) => {
                    if r.lease.on_store_failure(after) {
                        inner.fallback_total.fetch_add(1, Ordering::Relaxed);
                    }
                    *inner.last_error.lock() = Some(error.to_string());
                    outcome = Refreshed::Failed;
                }
            }
            r.lease.enforcement(
                inner.config.on_store_failure,
                inner.capacity_per_second,
                inner.initial_share,
                after,
            )
        };
        let mut judge = state.bucket.lock();
        judge.bucket.enforce(enforcement, after);
        judge.source = source;
        outcome
    }

    /// Runs [`LeaseLimiter::refresh`] every `refresh` until dropped. Spawn it on the runtime
    /// that should carry the store traffic, or use [`LeaseLimiter::spawn_refresher`].
    pub async fn run_refresher(self) {
        let mut tick = tokio::time::interval(self.inner.config.refresh);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.refresh().await;
        }
    }

    /// Spawns [`LeaseLimiter::run_refresher`] on the current tokio runtime. The refresher
    /// stops when the handle is dropped.
    pub fn spawn_refresher(&self) -> RefresherHandle {
        RefresherHandle(tokio::spawn(self.clone().run_refresher()))
    }

    /// Every refresh of the last round succeeded (or none has run yet):
    /// `spillway_quota_store_up`.
    pub fn store_up(&self) -> bool {
        self.inner.store_up.load(Ordering::Relaxed)
    }

    /// Times a key entered a fallback period: `spillway_quota_fallback_total`.
    pub fn fallback_total(&self) -> u64 {
        self.inner.fallback_total.load(Ordering::Relaxed)
    }

    /// Requests judged while their key was under the fallback policy.
    pub fn fallback_decisions(&self) -> u64 {
        self.inner.fallback_decisions.load(Ordering::Relaxed)
    }

    /// Each tracked key's enforced rate in permits per second (`spillway_quota_grant{limit}`;
    /// infinite when open, 0 when closed) and where it comes from.
    pub fn grants(&self) -> Vec<(String, f64, DecisionSource)> {
        let keys = self.inner.keys.read();
        keys.values()
            .map(|state| {
                let judge = state.bucket.lock();
                let rate = match judge.bucket.enforcement() {
                    Enforcement::Limit { rate } => rate,
                    Enforcement::Open => f64::INFINITY,
                    Enforcement::Closed => 0.0,
                };
                (state.key.to_string(), rate, judge.source)
            })
            .collect()
    }

    /// The state for the admin endpoint, sorted by key.
    pub fn view(&self) -> LeaseView {
        let inner = &self.inner;
        let now = inner.clock.now();
        let mut keys: Vec<LeaseKeyView> = inner
            .keys
            .read()
            .values()
            .map(|state| {
                let (enforcement, source) = {
                    let judge = state.bucket.lock();
                    (judge.bucket.enforcement(), judge.source)
                };
                let r = state.refresh.lock();
                let lease = r.lease.lease();
                LeaseKeyView {
                    key: state.key.to_string(),
                    enforced_rate: match enforcement {
                        Enforcement::Limit { rate } => Some(rate),
                        Enforcement::Open | Enforcement::Closed => None,
                    },
                    open: enforcement == Enforcement::Open,
                    source,
                    demand: r.demand,
                    grant: lease.map(|l| l.grant),
                    instances: lease.map(|l| l.instances),
                    fleet_demand: r.reply.map(|reply| reply.total_demand),
                    lease_expires_in_ms: lease.map(|l| {
                        u64::try_from(l.expires_at.saturating_duration_since(now).as_millis())
                            .unwrap_or(u64::MAX)
                    }),
                }
            })
            .collect();
        keys.sort_by(|a, b| a.key.cmp(&b.key));
        LeaseView {
            name: inner.config.name.clone(),
            instance: inner.instance.clone(),
            capacity: inner.config.capacity,
            period_ms: u64::try_from(inner.config.period.as_millis()).unwrap_or(u64::MAX),
            capacity_per_second: inner.capacity_per_second,
            refresh_ms: u64::try_from(inner.config.refresh.as_millis()).unwrap_or(u64::MAX),
            lease_ttl_ms: u64::try_from(inner.lease_ttl.as_millis()).unwrap_or(u64::MAX),
            store: inner.store.kind(),
            store_up: self.store_up(),
            on_store_failure: inner.config.on_store_failure,
            fallback_total: self.fallback_total(),
            fallback_decisions: self.fallback_decisions(),
            last_error: inner.last_error.lock().clone(),
            keys,
        }
    }
}

enum Refreshed {
    Ok,
    Failed,
    Idle,
}

/// The spawned refresher: aborts it when dropped.
#[derive(Debug)]
pub struct RefresherHandle(tokio::task::JoinHandle<()>);

impl Drop for RefresherHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{GcraReply, GcraRequest, MemoryStore, StoreFuture, StoreKind};
    use spillway_core::ManualClock;

    fn limiter(store: Arc<dyn QuotaStore>, clock: &ManualClock, id: &str) -> LeaseLimiter {
        let mut config = LeaseLimitConfig::new("api", 1000, Duration::from_secs(1));
        config.initial_share = Some(100.0);
        config.reserve = CriticalityReserve::NONE;
        LeaseLimiter::try_new(config, store, id, Arc::new(clock.clone())).unwrap()
    }

    fn offer(l: &LeaseLimiter, n: u32, clock: &ManualClock) -> u32 {
        (0..n).filter(|_| l.check("k", 1, Criticality::Critical, clock.now()).admitted).count()
            as u32
    }

    fn grant(l: &LeaseLimiter) -> (f64, DecisionSource) {
        let (_, rate, source) = l.grants().pop().unwrap();
        (rate, source)
    }

    #[tokio::test]
    async fn the_initial_share_applies_until_the_first_lease_then_the_fair_grant() {
        let clock = ManualClock::new();
        let store: Arc<dyn QuotaStore> = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
        let (a, b) = (limiter(store.clone(), &clock, "a"), limiter(store, &clock, "b"));
        assert_eq!(offer(&a, 50, &clock), 10, "initial share 100/s, 100 ms deep");
        assert_eq!(grant(&a), (100.0, DecisionSource::InitialShare));
        offer(&b, 1, &clock);
        // One second of demand: a is offered 1500/s, b 200/s.
        for _ in 0..100 {
            clock.advance_ms(10);
            offer(&a, 15, &clock);
            offer(&b, 2, &clock);
        }
        a.refresh().await;
        b.refresh().await;
        clock.advance_ms(1);
        a.refresh().await; // now a sees b's demand too
        assert_eq!(grant(&b), (201.0, DecisionSource::Lease), "b was offered 201 in that second");
        let (rate, source) = grant(&a);
        assert_eq!(source, DecisionSource::Lease);
        assert!((rate - 800.0).abs() < 5.0, "{rate}");
        let view = a.view();
        assert_eq!(view.keys[0].instances, Some(2));
        assert!(serde_json::to_string(&view).unwrap().contains("\"source\":\"lease\""));
    }

    #[derive(Debug)]
    struct DownStore;

    impl QuotaStore for DownStore {
        fn gcra<'a>(&'a self, _: GcraRequest<'a>) -> StoreFuture<'a, GcraReply> {
            Box::pin(async { Err(StoreError::Reply("down")) })
        }
        fn counter<'a>(
            &'a self,
            _: crate::CounterRequest<'a>,
        ) -> StoreFuture<'a, crate::CounterReply> {
            Box::pin(async { Err(StoreError::Reply("down")) })
        }
        fn lease<'a>(&'a self, _: LeaseRequest<'a>) -> StoreFuture<'a, LeaseReply> {
            Box::pin(async { Err(StoreError::Reply("down")) })
        }
        fn kind(&self) -> StoreKind {
            StoreKind::Redis
        }
    }

    #[tokio::test]
    async fn a_failing_store_applies_the_policy_at_the_next_refresh() {
        let clock = ManualClock::new();
        let l = limiter(Arc::new(DownStore), &clock, "a");
        offer(&l, 1, &clock);
        l.refresh().await;
        assert!(!l.store_up());
        assert_eq!(l.fallback_total(), 1);
        assert_eq!(grant(&l), (100.0, DecisionSource::Fallback(StoreFailurePolicy::LastLease)));
        l.refresh().await;
        assert_eq!(l.fallback_total(), 1, "one fallback period, however many refreshes fail");
        offer(&l, 1, &clock);
        assert!(l.fallback_decisions() >= 1);
        assert!(l.view().last_error.is_some_and(|e| e.contains("down")));
    }

    #[tokio::test]
    async fn idle_keys_are_forgotten_after_a_lease_ttl() {
        let clock = ManualClock::new();
        let l = limiter(Arc::new(MemoryStore::with_clock(Arc::new(clock.clone()))), &clock, "a");
        offer(&l, 1, &clock);
        clock.advance_ms(1000);
        l.refresh().await;
        assert_eq!(l.grants().len(), 1);
        clock.advance_ms(5000);
        l.refresh().await;
        assert!(l.grants().is_empty());
    }

    #[tokio::test]
    async fn keys_beyond_max_keys_share_the_overflow_key() {
        let clock = ManualClock::new();
        let store = Arc::new(MemoryStore::with_clock(Arc::new(clock.clone())));
        let mut config = LeaseLimitConfig::new("api", 1000, Duration::from_secs(1));
        config.max_keys = 2;
        let l = LeaseLimiter::try_new(config, store, "a", Arc::new(clock.clone())).unwrap();
        for key in ["x", "y", "z", "w"] {
            l.check(key, 1, Criticality::Critical, clock.now());
        }
        let mut keys: Vec<String> = l.grants().into_iter().map(|(k, _, _)| k).collect();
        keys.sort();
        assert_eq!(keys, [OVERFLOW_KEY, "x", "y"], "z and w share the overflow key");
    }

    #[test]
    fn config_errors_name_the_field() {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
        let store: Arc<dyn QuotaStore> = Arc::new(MemoryStore::new());
        let mut c = LeaseLimitConfig::new("api", 10, Duration::from_secs(1));
        c.lease_ttl = Some(Duration::from_secs(1));
        let err = LeaseLimiter::try_new(c, store.clone(), "a", clock.clone()).unwrap_err();
        assert_eq!(err.field, "lease_ttl");
        let c = LeaseLimitConfig::new("api", 10, Duration::from_secs(1));
        assert_eq!(LeaseLimiter::try_new(c, store, "", clock).unwrap_err().field, "instance");
    }
}
