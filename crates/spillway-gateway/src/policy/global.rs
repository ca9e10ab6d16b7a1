//! Global limits (`global: true`): limits shared by a fleet of gateways through the quota
//! store (`quota_store:` — Redis, or an in-process store for a single gateway), composed from
//! `spillway-quota`'s `ExactLimiter` (one atomic store call per request), `LeaseLimiter` (a
//! local bucket enforcing this gateway's max-min fair share, renewed in the background) and
//! `CounterLimiter` (one fixed-window `INCRBY` per request: the envoy-ratelimit baseline).
//!
//! The store and the lease refreshers run on a runtime of their own ([`QuotaRuntime`], one
//! thread): the Redis connection's driver lives there, so every worker runtime can call it,
//! and a reload never has to wait for a worker. A gateway whose Redis is unreachable at start
//! still starts: the store connects lazily (at most one attempt a second) and, until it does,
//! every limit follows its `on_store_failure`.

use crate::config::{GlobalLimitConfig, GlobalMode, QuotaStoreSettings};
use spillway_core::{Clock, Criticality, Instant};
use spillway_quota::{
    CounterLimitConfig, CounterLimiter, ExactLimitConfig, ExactLimiter, LeaseLimitConfig,
    LeaseLimiter, MemoryStore, QuotaDecision, QuotaStore, RedisStore, RedisStoreConfig,
    StoreFailurePolicy,
};
use std::sync::Arc;
use std::time::Duration;

/// The quota store and the thread that runs it (and the lease refreshers).
pub struct QuotaRuntime {
    handle: tokio::runtime::Handle,
    /// The store of the live config, with the settings it was built from.
    store: parking_lot::Mutex<Option<(QuotaStoreSettings, Arc<dyn QuotaStore>)>>,
    /// This gateway's id among the fleet.
    instance: String,
}

impl std::fmt::Debug for QuotaRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuotaRuntime").field("instance", &self.instance).finish_non_exhaustive()
    }
}

impl QuotaRuntime {
    /// Starts the quota thread.
    pub fn start() -> std::io::Result<Arc<QuotaRuntime>> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let handle = rt.handle().clone();
        std::thread::Builder::new().name("spillway-quota".into()).spawn(move || {
            rt.block_on(std::future::pending::<()>());
        })?;
        Ok(Arc::new(QuotaRuntime {
            handle,
            store: parking_lot::Mutex::new(None),
            instance: spillway_quota::default_instance_id(),
        }))
    }

    /// The store for `settings` (kept while the settings do not change).
    fn store(&self, settings: &QuotaStoreSettings) -> Arc<dyn QuotaStore> {
        let mut current = self.store.lock();
        if let Some((s, store)) = current.as_ref() {
            if s == settings {
                return store.clone();
            }
        }
        let store: Arc<dyn QuotaStore> = if settings.redis.is_empty() {
            Arc::new(MemoryStore::new())
        } else {
            Arc::new(LazyRedis::new(settings, self.handle.clone()))
        };
        *current = Some((settings.clone(), store.clone()));
        store
    }

    /// This gateway's id (from `quota_store.instance`, else host name and process id).
    fn instance(&self, settings: &QuotaStoreSettings) -> String {
        settings.instance.clone().unwrap_or_else(|| self.instance.clone())
    }
}

/// A Redis store that connects when first needed and again after a failed attempt (at most
/// once a second), so a gateway starts without its Redis and recovers when it comes.
#[derive(Debug)]
struct LazyRedis {
    config: RedisStoreConfig,
    handle: tokio::runtime::Handle,
    connected: tokio::sync::OnceCell<RedisStore>,
    last_attempt: parking_lot::Mutex<Option<std::time::Instant>>,
}

impl LazyRedis {
    fn new(settings: &QuotaStoreSettings, handle: tokio::runtime::Handle) -> LazyRedis {
        let mut config = RedisStoreConfig::single(settings.redis[0].clone());
        config.urls = settings.redis.clone();
        config.cluster = settings.cluster;
        LazyRedis {
            config,
            handle,
            connected: tokio::sync::OnceCell::new(),
            last_attempt: parking_lot::Mutex::new(None),
        }
    }

    async fn get(&self) -> Result<&RedisStore, spillway_quota::StoreError> {
        if let Some(store) = self.connected.get() {
            return Ok(store);
        }
        {
            let mut last = self.last_attempt.lock();
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
                return Err(spillway_quota::StoreError::Config("redis is not connected yet"));
            }
            *last = Some(std::time::Instant::now());
        }
        // The connection's driver task must live on the quota runtime, not the caller's.
        let config = self.config.clone();
        let connecting = self.handle.spawn(async move { RedisStore::connect(&config).await });
        let store = connecting
            .await
            .map_err(|_| spillway_quota::StoreError::Config("redis connection task failed"))??;
        Ok(self.connected.get_or_init(|| async { store }).await)
    }
}

impl QuotaStore for LazyRedis {
    fn gcra<'a>(
        &'a self,
        request: spillway_quota::GcraRequest<'a>,
    ) -> spillway_quota::StoreFuture<'a, spillway_quota::GcraReply> {
        Box::pin(async move { self.get().await?.gcra(request).await })
    }

    fn counter<'a>(
        &'a self,
        request: spillway_quota::CounterRequest<'a>,
    ) -> spillway_quota::StoreFuture<'a, spillway_quota::CounterReply> {
        Box::pin(async move { self.get().await?.counter(request).await })
    }

    fn lease<'a>(
        &'a self,
        request: spillway_quota::LeaseRequest<'a>,
    ) -> spillway_quota::StoreFuture<'a, spillway_quota::LeaseReply> {
        Box::pin(async move { self.get().await?.lease(request).await })
    }

    fn kind(&self) -> spillway_quota::StoreKind {
        if self.config.cluster {
            spillway_quota::StoreKind::RedisCluster
        } else {
            spillway_quota::StoreKind::Redis
        }
    }
}

/// One compiled global limit.
pub struct GlobalLimit {
    /// Its settings.
    pub config: GlobalLimitConfig,
    /// The store settings it was built with (a change rebuilds it).
    store_settings: QuotaStoreSettings,
    kind: Kind,
}

enum Kind {
    Exact(Box<ExactLimiter>),
    Counter(Box<CounterLimiter>),
    Lease(LeaseLimiter, tokio::task::JoinHandle<()>),
}

impl std::fmt::Debug for GlobalLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GlobalLimit").field("name", &self.config.name).finish_non_exhaustive()
    }
}

impl Drop for GlobalLimit {
    fn drop(&mut self) {
        if let Kind::Lease(_, refresher) = &self.kind {
            refresher.abort();
        }
    }
}

fn failure_policy(name: &str) -> StoreFailurePolicy {
    name.parse().unwrap_or_default()
}

impl GlobalLimit {
    /// Builds `config` on `runtime`'s store (`None`, logged, if the quota crate refuses it).
    pub fn new(
        config: &GlobalLimitConfig,
        store_settings: &QuotaStoreSettings,
        runtime: &QuotaRuntime,
        clock: Arc<dyn Clock>,
    ) -> Option<GlobalLimit> {
        let store = runtime.store(store_settings);
        let kind = match config.mode {
            GlobalMode::Exact { burst } => {
                let mut c = ExactLimitConfig::new(&config.name, config.permits, config.period);
                c.burst = burst;
                c.store_timeout = store_settings.timeout;
                c.on_store_failure = failure_policy(config.on_store_failure);
                match ExactLimiter::try_new(c, store) {
                    Ok(l) => Kind::Exact(Box::new(l)),
                    Err(e) => {
                        tracing::error!(error = %e, "global limit not built");
                        return None;
                    }
                }
            }
            GlobalMode::Counter => {
                let mut c = CounterLimitConfig::new(&config.name, config.permits, config.period);
                c.store_timeout = store_settings.timeout;
                c.on_store_failure = failure_policy(config.on_store_failure);
                match CounterLimiter::try_new(c, store) {
                    Ok(l) => Kind::Counter(Box::new(l)),
                    Err(e) => {
                        tracing::error!(error = %e, "global limit not built");
                        return None;
                    }
                }
            }
            GlobalMode::Lease { refresh } => {
                let mut c = LeaseLimitConfig::new(&config.name, config.permits, config.period);
                c.refresh = refresh;
                c.on_store_failure = failure_policy(config.on_store_failure);
                let limiter =
                    LeaseLimiter::try_new(c, store, runtime.instance(store_settings), clock);
                match limiter {
                    Ok(l) => {
                        let refresher = runtime.handle.spawn(l.clone().run_refresher());
                        Kind::Lease(l, refresher)
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "global limit not built");
                        return None;
                    }
                }
            }
        };
        Some(GlobalLimit { config: config.clone(), store_settings: store_settings.clone(), kind })
    }

    /// Whether this limit can stay for `config` on `store` (a reload keeps its state).
    pub fn same(&self, config: &GlobalLimitConfig, store: &QuotaStoreSettings) -> bool {
        self.config == *config && self.store_settings == *store
    }

    /// Whether checking needs the store (exact and counter mode: an await on the request
    /// path; [`GlobalLimit::check_exact`] judges them).
    pub fn is_exact(&self) -> bool {
        matches!(self.kind, Kind::Exact(_) | Kind::Counter(_))
    }

    /// Lease mode: judges a request locally, at once.
    pub fn check_lease(
        &self,
        key: &str,
        class: Criticality,
        now: Instant,
    ) -> Option<QuotaDecision> {
        match &self.kind {
            Kind::Lease(l, _) => Some(l.check(key, 1, class, now)),
            Kind::Exact(_) | Kind::Counter(_) => None,
        }
    }

    /// Exact and counter mode: asks the store (at most its timeout) for a request of `class`.
    pub async fn check_exact(
        &self,
        key: &str,
        class: Criticality,
        now: Instant,
    ) -> Option<QuotaDecision> {
        match &self.kind {
            Kind::Exact(l) => Some(l.check(key, 1, class, now).await),
            Kind::Counter(l) => Some(l.check(key, 1, class, now).await),
            Kind::Lease(..) => None,
        }
    }

    /// Whether the store answered the last call.
    pub fn store_up(&self) -> bool {
        match &self.kind {
            Kind::Exact(l) => l.store_up(),
            Kind::Counter(l) => l.store_up(),
            Kind::Lease(l, _) => l.store_up(),
        }
    }

    /// Decisions made by the `on_store_failure` policy.
    pub fn fallback_total(&self) -> u64 {
        match &self.kind {
            Kind::Exact(l) => l.fallback_total(),
            Kind::Counter(l) => l.fallback_total(),
            Kind::Lease(l, _) => l.fallback_total(),
        }
    }

    /// Lease mode: this gateway's grant per key (requests per second).
    pub fn grants(&self) -> Vec<(String, f64)> {
        match &self.kind {
            Kind::Lease(l, _) => l.grants().into_iter().map(|(k, g, _)| (k, g)).collect(),
            Kind::Exact(_) | Kind::Counter(_) => Vec::new(),
        }
    }

    /// What `GET /admin/quotas` shows.
    pub fn view(&self, now: Instant) -> serde_json::Value {
        match &self.kind {
            Kind::Exact(l) => serde_json::json!({ "mode": "exact", "state": l.view(now) }),
            Kind::Counter(l) => serde_json::json!({ "mode": "counter", "state": l.view(now) }),
            Kind::Lease(l, _) => serde_json::json!({ "mode": "lease", "state": l.view() }),
        }
    }
}
