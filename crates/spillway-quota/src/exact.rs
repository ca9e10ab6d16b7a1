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
use crate::fallback::StoreFailurePolicy;
use crate::guard::{reserve_units, GuardSettings, StoreGuard, Verdict};
use crate::key::gcra_key;
use crate::store::{GcraReply, GcraRequest, QuotaStore};
use crate::view::ExactView;
use spillway_core::clock::duration_nanos;
use spillway_core::rate::{
    CriticalityReserve, GcraConfig, KeyedLimiter, KeyedLimiterBuilder, Rate,
};
use spillway_core::{Criticality, Instant};
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
    /// Per-class reserve of the burst (default [`CriticalityReserve::default`]: `SHEDDABLE`
    /// leaves the last 25 %, `SHEDDABLE_PLUS` the last 10 %, `CRITICAL` and `CRITICAL_PLUS`
    /// nothing, so default traffic sees plain GCRA). See [`crate::gcra_step`].
    pub reserve: CriticalityReserve,
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
            reserve: CriticalityReserve::default(),
            store_timeout: Duration::from_millis(20),
            on_store_failure: StoreFailurePolicy::default(),
            fleet_size_hint: 1,
            cache_max_keys: 100_000,
        }
    }
}

/// The local limiter a per-request limiter falls back to while the store is down: a keyed
/// GCRA at `limit / fleet_size_hint` per `period`, with `reserve`.
pub(crate) fn local_share(
    name: &str,
    limit: u64,
    period: Duration,
    burst: u64,
    fleet_size_hint: u32,
    reserve: CriticalityReserve,
    cache_max_keys: usize,
) -> Result<KeyedLimiter<Box<str>, GcraConfig>, ConfigError> {
    if fleet_size_hint == 0 {
        return Err(ConfigError::new(name, "fleet_size_hint", "must be at least 1"));
    }
    let Some(local_period) = period.checked_mul(fleet_size_hint) else {
        return Err(ConfigError::new(name, "fleet_size_hint", "times the period overflows"));
    };
    let local_burst = (burst / u64::from(fleet_size_hint)).clamp(1, u64::from(u32::MAX));
    let local_rule = Rate::try_new(limit, local_period)
        .and_then(|rate| GcraConfig::try_new(rate, local_burst as u32, reserve))
        .map_err(|_| ConfigError::new(name, "period", "gives no usable local rate"))?;
    Ok(KeyedLimiterBuilder::new(local_rule).max_keys(cache_max_keys.max(1024)).build())
}

/// An exact global limit over many keys (one GCRA state per key in the store).
///
/// ```
/// use spillway_quota::{ExactLimitConfig, ExactLimiter, MemoryStore};
/// use spillway_core::{Clock, Criticality, SystemClock};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let store = Arc::new(MemoryStore::new()); // or a RedisStore shared by the fleet
/// let config = ExactLimitConfig::new("per-user", 100, Duration::from_secs(3600));
/// let limiter = ExactLimiter::try_new(config, store)?;
/// let clock = SystemClock::new();
/// let decision = limiter.check("alice", 1, Criticality::Critical, clock.now()).await;
/// assert!(decision.admitted);
/// assert_eq!((decision.limit, decision.remaining), (100, Some(99)));
/// # Ok::<(), spillway_quota::ConfigError>(())
/// # }).unwrap();
/// ```
#[derive(Debug)]
pub struct ExactLimiter {
    config: ExactLimitConfig,
    interval_us: u64,
    /// Whole permits of the burst each class (by index) must leave.
    reserves: [u64; 4],
    guard: StoreGuard,
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
        let local = local_share(
            &config.name,
            config.limit,
            config.period,
            config.burst,
            config.fleet_size_hint,
            config.reserve,
            config.cache_max_keys,
        )?;
        // Rounded up: the store never runs faster than configured.
        let interval_us = period_us.div_ceil(config.limit);
        let settings = GuardSettings {
            name: config.name.clone(),
            limit: config.limit,
            mode: LimitMode::Exact,
            store_timeout: config.store_timeout,
            on_store_failure: config.on_store_failure,
            cache_max_keys: config.cache_max_keys,
        };
        let guard = StoreGuard::new(settings, store, local)
            .ok_or_else(|| ConfigError::new(&config.name, "store_timeout", "no usable backoff"))?;
        let reserves = reserve_units(config.reserve, config.burst);
        Ok(ExactLimiter { config, interval_us, reserves, guard })
    }

    /// The configuration.
    pub fn config(&self) -> &ExactLimitConfig {
        &self.config
    }

    /// Judges `permits` permits (at least 1) of class `class` for `key` at `now` (the
    /// gateway's monotonic clock; used for the over-limit cache and the fallback). The class
    /// must leave its reserve of the burst ([`ExactLimitConfig::reserve`]). Waits at most the
    /// store timeout, and never fails: a store problem is answered by the store-failure
    /// policy.
    pub async fn check(
        &self,
        key: &str,
        permits: u32,
        class: Criticality,
        now: Instant,
    ) -> QuotaDecision {
        let permits = permits.max(1);
        let store_key = gcra_key(&self.config.name, key);
        let request = GcraRequest {
            key: &store_key,
            interval_us: self.interval_us,
            burst: self.config.burst,
            cost: u64::from(permits),
            reserve: self.reserves[class.index()],
        };
        let ask = || self.guard.store().gcra(request);
        let verdict = |reply: GcraReply| self.verdict(reply, class);
        self.guard.check(key, permits, class, now, ask, verdict).await
    }

    /// The store's reply as a verdict. A refusal that blocks `class` for a single permit
    /// gives the key's TAT, hence how long every other class is blocked: each permit of
    /// reserve is one interval more (or less).
    fn verdict(&self, reply: GcraReply, class: Criticality) -> Verdict {
        let interval = Duration::from_micros(self.interval_us);
        let mine = self.reserves[class.index()];
        let blocked_for = if reply.blocked_for.is_zero() {
            [Duration::ZERO; 4]
        } else {
            self.reserves.map(|r| {
                if r >= mine {
                    reply.blocked_for.saturating_add(
                        interval.saturating_mul(u32::try_from(r - mine).unwrap_or(u32::MAX)),
                    )
                } else {
                    reply.blocked_for.saturating_sub(
                        interval.saturating_mul(u32::try_from(mine - r).unwrap_or(u32::MAX)),
                    )
                }
            })
        };
        Verdict {
            admitted: reply.admitted,
            remaining: reply.remaining,
            retry_after: reply.retry_after,
            reset_after: reply.reset_after,
            blocked_for,
        }
    }

    /// The last store call succeeded (or none has failed yet): `spillway_quota_store_up`.
    pub fn store_up(&self) -> bool {
        self.guard.store_up()
    }

    /// Times the store became unreachable: `spillway_quota_fallback_total`.
    pub fn fallback_total(&self) -> u64 {
        self.guard.fallback_total()
    }

    /// Requests judged by the fallback policy.
    pub fn fallback_decisions(&self) -> u64 {
        self.guard.fallback_decisions()
    }

    /// Requests refused by the over-limit cache without a store call.
    pub fn cache_hits(&self) -> u64 {
        self.guard.cache_hits()
    }

    /// The state for the admin endpoint.
    pub fn view(&self, now: Instant) -> ExactView {
        self.guard.view(now, self.config.period, self.config.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fallback::DecisionSource;
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
            let d = l.check("k", 1, Criticality::Critical, clock.now()).await;
            assert!(d.admitted);
            assert_eq!(d.remaining, Some(left));
        }
        let refused = l.check("k", 1, Criticality::Critical, clock.now()).await;
        assert_eq!((refused.admitted, refused.source), (false, DecisionSource::Store));
        assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));
        assert_eq!(refused.reset_after, Some(Duration::from_secs(3)));
        clock.advance_ms(400);
        let cached = l.check("k", 1, Criticality::Critical, clock.now()).await;
        assert_eq!((cached.admitted, cached.source), (false, DecisionSource::OverLimitCache));
        assert_eq!(cached.retry_after, Some(Duration::from_millis(600)));
        assert_eq!(l.cache_hits(), 1);
        clock.advance_ms(600);
        assert!(
            l.check("k", 1, Criticality::Critical, clock.now()).await.admitted,
            "one permit back after 1 s"
        );
        assert!(
            l.check("other", 1, Criticality::Critical, clock.now()).await.admitted,
            "keys are independent"
        );
    }

    #[tokio::test]
    async fn a_refused_large_request_does_not_block_small_ones() {
        let clock = ManualClock::new();
        let l = limiter(&clock, ExactLimitConfig::new("u", 5, Duration::from_secs(5)));
        assert!(l.check("k", 3, Criticality::Critical, clock.now()).await.admitted);
        assert!(!l.check("k", 3, Criticality::Critical, clock.now()).await.admitted);
        assert!(
            l.check("k", 2, Criticality::Critical, clock.now()).await.admitted,
            "not cached: 2 were left"
        );
    }

    #[tokio::test]
    async fn sheddable_is_refused_first_and_critical_plus_has_first_claim() {
        let clock = ManualClock::new();
        // 20 per 20 s: SHEDDABLE leaves 5 permits, SHEDDABLE_PLUS 2, the others none.
        let l = limiter(&clock, ExactLimitConfig::new("u", 20, Duration::from_secs(20)));
        let mut sheddable = 0;
        for _ in 0..30 {
            sheddable +=
                u32::from(l.check("k", 1, Criticality::Sheddable, clock.now()).await.admitted);
        }
        assert_eq!(sheddable, 15);
        // The refusal is cached for SHEDDABLE only: the others still reach the store.
        let cached = l.check("k", 1, Criticality::Sheddable, clock.now()).await;
        assert_eq!((cached.admitted, cached.source), (false, DecisionSource::OverLimitCache));
        assert_eq!(cached.retry_after, Some(Duration::from_secs(1)));
        let plus = l.check("k", 1, Criticality::SheddablePlus, clock.now()).await;
        assert_eq!(
            (plus.admitted, plus.source, plus.remaining),
            (true, DecisionSource::Store, Some(2))
        );
        let mut critical = 0;
        for _ in 0..10 {
            critical +=
                u32::from(l.check("k", 1, Criticality::Critical, clock.now()).await.admitted);
        }
        assert_eq!(critical, 4, "the rest of the burst");
        // Now empty: one permit back per second goes to the critical classes; SHEDDABLE_PLUS
        // is cached as blocked for 3 s (its 2 of reserve plus the next permit).
        let plus = l.check("k", 1, Criticality::SheddablePlus, clock.now()).await;
        assert_eq!((plus.admitted, plus.retry_after), (false, Some(Duration::from_secs(3))));
        clock.advance_ms(1_000);
        let top = l.check("k", 1, Criticality::CriticalPlus, clock.now()).await;
        assert!(top.admitted, "CRITICAL_PLUS gets the refilled permit");
        let shed = l.check("k", 1, Criticality::Sheddable, clock.now()).await;
        assert_eq!(shed.source, DecisionSource::OverLimitCache);
        assert!(!shed.admitted);
    }

    #[derive(Debug)]
    struct HungStore;

    impl QuotaStore for HungStore {
        fn gcra<'a>(&'a self, _: GcraRequest<'a>) -> crate::StoreFuture<'a, crate::GcraReply> {
            Box::pin(std::future::pending())
        }
        fn counter<'a>(
            &'a self,
            _: crate::CounterRequest<'a>,
        ) -> crate::StoreFuture<'a, crate::CounterReply> {
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
        let d = l.check("k", 1, Criticality::Critical, clock.now()).await;
        assert_eq!(started.elapsed(), Duration::from_millis(20), "waited the store timeout");
        assert_eq!(d.source, DecisionSource::Fallback(StoreFailurePolicy::LastLease));
        assert!(d.admitted);
        let admitted = {
            let mut n = 1;
            for _ in 0..20 {
                n += u32::from(l.check("k", 1, Criticality::Critical, clock.now()).await.admitted);
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
