//! The admission policies of the gateway, compiled from the config: for each route its limits,
//! level pool, bulkhead (and slow pool), BBR, criticality and budget grant; for each cluster its
//! concurrency limit; for each listener its BBR.
//!
//! Nothing here implements an algorithm: every decision is made by a `spillway-core` state
//! machine (`TokenBucket`, `KeyedLimiter`, `BbrLimiter`, `ConcurrencyLimiter`) or by
//! `spillway_tower::bulkhead::SharedBulkhead` (the core `Bulkhead` plus its waiting queue and
//! CoDel). This module wires them in the order of `../shared/POLICY-DESIGN.md`:
//! limits → level pool → route bulkhead → BBR (listener, route) → cluster concurrency.
//! Admission yields an [`Admission`]; finishing it reports latency and outcome to the limiters
//! that learn from them (BBR, adaptive concurrency), dropping it gives everything back.
//!
//! State survives a reload: [`Policies::build`] re-attaches each limiter, bulkhead and learned
//! limit whose settings did not change to the previous snapshot's instance (by route, cluster,
//! listener or level name), so a reload causes no burst of admissions.

pub mod classify;
pub mod global;
pub mod hotkeys;
pub mod limit;
pub mod mirror;
pub mod render;
pub mod retry;

use crate::config::{
    BbrSettings, BreakerSettings, BulkheadSettings, ConcurrencySettings, Config, QueueDiscipline,
    RoutePolicyConfig,
};
use classify::RequestView;
use limit::RouteLimit;
pub use render::{LimitInfo, Refusal};
use serde::Serialize;
use spillway_core::breaker::{CallOutcome, CallTicket, CircuitBreaker, SreThrottle};
use spillway_core::concurrency::{
    Aimd, AimdConfig, AnyLimit, ConcurrencyLimiter, ConcurrencyToken, Gradient2, Gradient2Config,
};
use spillway_core::overload::{BbrLimiter, BbrToken, ClassShares, CodelConfig, CpuGauge};
use spillway_core::{Clock, Criticality, Decision, Instant, Outcome, RejectReason, Rejection};
use spillway_tower::bulkhead::{BulkheadPermit, Entry, SharedBulkhead};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// A cluster's concurrency limiter.
pub type ClusterLimiter = ConcurrencyLimiter<AnyLimit>;

/// A bulkhead with the settings it was built from (to re-attach it on reload).
#[derive(Debug)]
pub struct Pool {
    /// The name shown in metrics (`route:orders`, `level:L0`, `slow:orders`).
    pub name: String,
    /// The settings.
    pub settings: BulkheadSettings,
    /// The shared bulkhead.
    pub bulkhead: Arc<SharedBulkhead>,
}

/// A BBR limiter with its settings.
#[derive(Debug)]
pub struct Bbr {
    /// The settings.
    pub settings: BbrSettings,
    /// The limiter.
    pub limiter: Arc<BbrLimiter>,
}

/// Rejections by reason and criticality, counted for `spillway_rejections_total`, and the
/// answers the route's fallback gave (`spillway_degraded_total`).
#[derive(Debug, Default)]
pub struct RejectionCounts {
    counts: [[AtomicU64; 4]; REASONS.len()],
    /// Fallback answers.
    pub fallbacks: AtomicU64,
    /// Stale copies served (`stale_on_error`).
    pub stale: AtomicU64,
}

/// Every reason admission can refuse with, in metric order.
pub const REASONS: [RejectReason; 11] = [
    RejectReason::QuotaExhausted,
    RejectReason::Degraded,
    RejectReason::FaultInjected,
    RejectReason::CircuitOpen,
    RejectReason::Throttled,
    RejectReason::RateLimited,
    RejectReason::Overloaded,
    RejectReason::ConcurrencyLimit,
    RejectReason::BulkheadFull,
    RejectReason::QueueTimeout,
    RejectReason::DeadlineExceeded,
];

impl RejectionCounts {
    /// Counts one rejection.
    pub fn count(&self, reason: RejectReason, class: Criticality) {
        if let Some(i) = REASONS.iter().position(|r| *r == reason) {
            self.counts[i][class.index()].fetch_add(1, Relaxed);
        }
    }

    /// `(reason, class, count)` for every non-zero count.
    pub fn each(&self, mut f: impl FnMut(RejectReason, Criticality, u64)) {
        for (i, reason) in REASONS.iter().enumerate() {
            for class in Criticality::ALL {
                let n = self.counts[i][class.index()].load(Relaxed);
                if n > 0 {
                    f(*reason, class, n);
                }
            }
        }
    }
}

/// One route's compiled admission policy.
#[derive(Debug)]
pub struct RoutePolicy {
    /// The route's name.
    pub route: String,
    /// Its settings.
    pub config: RoutePolicyConfig,
    /// Its limits, all of which must admit.
    pub limits: Vec<Arc<RouteLimit>>,
    /// The level pool it belongs to.
    pub level: Option<Arc<Pool>>,
    /// Its own bulkhead.
    pub bulkhead: Option<Arc<Pool>>,
    /// The pool of its slow requests.
    pub slow: Option<Arc<Pool>>,
    /// Its own BBR.
    pub bbr: Option<Arc<Bbr>>,
    /// Rejections made on this route (kept across reloads).
    pub rejections: Arc<RejectionCounts>,
    /// Its hot-key sketches (`hot_keys`).
    pub hot: Option<Arc<hotkeys::RouteHotKeys>>,
    /// Its global limits (`global: true`), shared by the fleet through the quota store.
    pub globals: Vec<Arc<global::GlobalLimit>>,
}

/// A cluster's concurrency limiter with its settings.
#[derive(Debug)]
pub struct Concurrency {
    /// The settings.
    pub settings: ConcurrencySettings,
    /// The limiter.
    pub limiter: Arc<ClusterLimiter>,
}

/// A cluster's client-side breaker: core's `SreThrottle` or `CircuitBreaker` behind a short
/// lock (both are `&mut`: one window of outcomes for every worker).
#[derive(Debug)]
pub struct Breaker {
    /// The settings.
    pub settings: BreakerSettings,
    /// Upstream statuses counted as failures (`None`: every 5xx and 429).
    pub failure_statuses: Option<Vec<u16>>,
    /// The state machine.
    pub kind: BreakerKind,
}

/// The two breakers.
#[derive(Debug)]
pub enum BreakerKind {
    /// Google SRE adaptive throttling.
    Sre(parking_lot::Mutex<SreThrottle>),
    /// Closed / open / half-open.
    StateMachine(parking_lot::Mutex<CircuitBreaker>),
}

/// Admission state of a cluster.
#[derive(Debug)]
pub struct ClusterPolicy {
    /// Its concurrency limit.
    pub concurrency: Option<Concurrency>,
    /// Its breaker.
    pub breaker: Option<Arc<Breaker>>,
}

/// Every compiled policy of a snapshot.
#[derive(Debug, Default)]
pub struct Policies {
    /// By route index; `None` for a route without admission policy.
    pub routes: Vec<Option<RoutePolicy>>,
    /// By cluster index.
    pub clusters: Vec<Option<ClusterPolicy>>,
    /// By listener index.
    pub listeners: Vec<Option<Arc<Bbr>>>,
    /// Level pools by name.
    pub levels: Vec<Arc<Pool>>,
    /// Rejection counters of routes without a policy of their own (cluster or listener
    /// policies can still refuse their requests), by route index.
    pub plain_rejections: Vec<Arc<RejectionCounts>>,
    /// What the active degradation plans do to each route, by route index.
    pub plan_effects: Vec<PlanEffect>,
    /// Whether the config has plans at all (then every route passes the gate).
    pub has_plans: bool,
    /// Retry policies by route index (`None`: the route never retries).
    pub retries: Vec<Option<Arc<retry::RouteRetry>>>,
    /// Mirrors (strategy failsafe) by route index.
    pub mirrors: Vec<Option<Arc<mirror::RouteMirror>>>,
    /// Each cluster's gutter (by cluster index), and requests sent there instead.
    pub gutters: Vec<Option<(usize, Arc<AtomicU64>)>>,
    /// Routes only the hyper path serves (hedging, failback, mirror, broadcast, stale copies,
    /// micro-cache, authentication), by route index: one lookup for the lean path's hand-over decision.
    pub hyper_only: Vec<bool>,
    /// Micro-caches by route index (`cache`).
    pub caches: Vec<Option<Arc<crate::proxy::cache::RouteCache>>>,
    /// Stale copies by route index (`stale_on_error`), with their settings.
    pub stale: Vec<Option<(crate::config::StaleSettings, Arc<crate::proxy::stale::StaleCache>)>>,
}

/// What the active plans do to one route; written when a plan is switched, read per request.
#[derive(Debug, Default)]
pub struct PlanEffect {
    /// Answer with the route's fallback.
    fallback: std::sync::atomic::AtomicBool,
    /// Refuse classes below this one (`Criticality::index() + 1`; 0: none).
    shed_below: std::sync::atomic::AtomicU8,
}

/// What building policies needs from the gateway.
#[derive(Clone, Debug)]
pub struct PolicyContext {
    /// The CPU gauge the sampler publishes into (BBR reads it).
    pub cpu: CpuGauge,
    /// The gateway's clock (bulkhead queue times).
    pub clock: Arc<dyn Clock>,
    /// Worker threads (per-worker limiter shards).
    pub workers: usize,
    /// The degradation plans switched on through the admin API (kept across reloads).
    pub active_plans: Arc<parking_lot::Mutex<std::collections::BTreeSet<String>>>,
    /// The quota store's thread, started with the first global limit.
    pub quota: Arc<std::sync::OnceLock<Option<Arc<global::QuotaRuntime>>>>,
}

fn new_pool(name: String, settings: &BulkheadSettings, ctx: &PolicyContext) -> Arc<Pool> {
    let codel = (settings.queue_discipline == QueueDiscipline::Codel).then(CodelConfig::default);
    // Validated in `config::policy`, so building cannot fail; fall back to a plain FIFO if it
    // somehow does rather than refusing the whole snapshot.
    let built = match settings.class_waits {
        Some(waits) => {
            SharedBulkhead::with_class_waits(settings.core(), waits, codel, ctx.clock.clone())
        }
        None => SharedBulkhead::try_new(settings.core(), codel, ctx.clock.clone()),
    };
    let bulkhead = built
        .or_else(|_| SharedBulkhead::try_new(settings.core(), None, ctx.clock.clone()))
        .unwrap_or_else(|_| {
            let one = spillway_core::bulkhead::BulkheadConfig::new(1, 0, Duration::from_millis(1));
            #[allow(clippy::expect_used)]
            SharedBulkhead::try_new(one, None, ctx.clock.clone()).expect("a one-slot bulkhead")
        });
    Arc::new(Pool { name, settings: settings.clone(), bulkhead })
}

fn same_bulkhead(a: &BulkheadSettings, b: &BulkheadSettings) -> bool {
    a.max_concurrent == b.max_concurrent
        && a.queue == b.queue
        && a.max_wait == b.max_wait
        && a.class_waits == b.class_waits
        && a.queue_discipline == b.queue_discipline
}

fn reuse_pool(
    old: Option<&Arc<Pool>>,
    name: String,
    settings: &BulkheadSettings,
    ctx: &PolicyContext,
) -> Arc<Pool> {
    match old {
        Some(p) if same_bulkhead(&p.settings, settings) => p.clone(),
        _ => new_pool(name, settings, ctx),
    }
}

fn same_bbr(a: &BbrSettings, b: &BbrSettings) -> bool {
    a.config == b.config
}

fn new_bbr(settings: &BbrSettings, ctx: &PolicyContext) -> Option<Arc<Bbr>> {
    let limiter = BbrLimiter::with_cpu_gauge(settings.config.clone(), ctx.cpu.clone()).ok()?;
    Some(Arc::new(Bbr { settings: settings.clone(), limiter: Arc::new(limiter) }))
}

fn reuse_bbr(
    old: Option<&Arc<Bbr>>,
    settings: &BbrSettings,
    ctx: &PolicyContext,
) -> Option<Arc<Bbr>> {
    match old {
        Some(b) if same_bbr(&b.settings, settings) => Some(b.clone()),
        _ => new_bbr(settings, ctx),
    }
}

fn new_cluster_limiter(settings: ConcurrencySettings) -> Option<Arc<ClusterLimiter>> {
    let (algorithm, shares) = match settings {
        // Every kind uses the same per-class shares of the limit (50/75/90/100 % from
        // SHEDDABLE to CRITICAL_PLUS), so lower classes are refused first as it fills.
        ConcurrencySettings::Fixed(n) => (AnyLimit::Fixed(n), ClassShares::concurrency_default()),
        ConcurrencySettings::Gradient { initial, max } => {
            let config = Gradient2Config {
                initial_limit: initial,
                max_limit: max,
                min_limit: 1.min(initial),
                ..Gradient2Config::default()
            };
            (
                AnyLimit::Gradient2(Gradient2::try_new(config).ok()?),
                ClassShares::concurrency_default(),
            )
        }
        ConcurrencySettings::Aimd { initial, max } => {
            let config = AimdConfig {
                initial_limit: initial,
                max_limit: max,
                min_limit: 1.min(initial),
                ..AimdConfig::default()
            };
            (AnyLimit::Aimd(Aimd::try_new(config).ok()?), ClassShares::concurrency_default())
        }
    };
    Some(Arc::new(ConcurrencyLimiter::new(algorithm, shares)))
}

impl Policies {
    /// Compiles the policies of `config`, re-attaching unchanged state from `previous` (the
    /// live snapshot's policies and its config, to find routes by name).
    pub fn build(
        config: &Config,
        previous: Option<(&Policies, &Config)>,
        ctx: &PolicyContext,
    ) -> Policies {
        let old_level = |name: &str| {
            previous.and_then(|(p, _)| p.levels.iter().find(|l| l.name == format!("level:{name}")))
        };
        let levels: Vec<Arc<Pool>> = config
            .levels
            .iter()
            .map(|(name, settings)| {
                reuse_pool(old_level(name), format!("level:{name}"), settings, ctx)
            })
            .collect();
        let old_route = |name: &str| -> Option<&RoutePolicy> {
            let (p, c) = previous?;
            let i = c.routes.iter().position(|r| r.name == name)?;
            p.routes.get(i)?.as_ref()
        };
        let old_plain = |name: &str| -> Option<Arc<RejectionCounts>> {
            let (p, c) = previous?;
            let i = c.routes.iter().position(|r| r.name == name)?;
            match p.routes.get(i)? {
                Some(rp) => Some(rp.rejections.clone()),
                None => p.plain_rejections.get(i).cloned(),
            }
        };
        let mut routes = Vec::with_capacity(config.routes.len());
        let mut plain_rejections = Vec::with_capacity(config.routes.len());
        for r in &config.routes {
            let counts = old_plain(&r.name).unwrap_or_default();
            plain_rejections.push(counts.clone());
            let p = &r.policy;
            if p.is_empty() {
                routes.push(None);
                continue;
            }
            let old = old_route(&r.name);
            let limits = p
                .limits
                .iter()
                .map(|l| {
                    let kept = old.and_then(|o| {
                        o.limits.iter().find(|ol| ol.config.name == l.name && ol.same_settings(l))
                    });
                    kept.cloned()
                        .unwrap_or_else(|| Arc::new(RouteLimit::new(l.clone(), ctx.workers)))
                })
                .collect();
            let level = p.level.as_ref().and_then(|name| {
                levels.iter().find(|l| l.name == format!("level:{name}")).cloned()
            });
            let bulkhead = p.bulkhead.as_ref().map(|b| {
                reuse_pool(
                    old.and_then(|o| o.bulkhead.as_ref()),
                    format!("route:{}", r.name),
                    b,
                    ctx,
                )
            });
            let slow = p.slow.as_ref().map(|s| {
                reuse_pool(
                    old.and_then(|o| o.slow.as_ref()),
                    format!("slow:{}", r.name),
                    &s.bulkhead,
                    ctx,
                )
            });
            let bbr =
                p.bbr.as_ref().and_then(|b| reuse_bbr(old.and_then(|o| o.bbr.as_ref()), b, ctx));
            let quota = if p.global_limits.is_empty() {
                None
            } else {
                ctx.quota
                    .get_or_init(|| {
                        global::QuotaRuntime::start()
                            .map_err(|e| tracing::error!(error = %e, "quota thread not started"))
                            .ok()
                    })
                    .clone()
            };
            let globals = match &quota {
                None => Vec::new(),
                Some(rt) => p
                    .global_limits
                    .iter()
                    .filter_map(|g| {
                        let kept = old.and_then(|o| {
                            o.globals.iter().find(|og| og.same(g, &config.quota_store))
                        });
                        kept.cloned().or_else(|| {
                            global::GlobalLimit::new(g, &config.quota_store, rt, ctx.clock.clone())
                                .map(Arc::new)
                        })
                    })
                    .collect(),
            };
            let hot = p.hot_keys.as_ref().and_then(|h| {
                let kept = old.and_then(|o| o.hot.as_ref()).filter(|o| o.same(h, ctx.workers));
                kept.cloned().or_else(|| hotkeys::RouteHotKeys::new(h, ctx.workers).map(Arc::new))
            });
            routes.push(Some(RoutePolicy {
                route: r.name.clone(),
                config: p.clone(),
                limits,
                level,
                bulkhead,
                slow,
                bbr,
                rejections: counts,
                hot,
                globals,
            }));
        }
        let clusters = config
            .clusters
            .iter()
            .map(|c| {
                if c.concurrency.is_none() && c.breaker.is_none() {
                    return None;
                }
                let old = previous.and_then(|(p, pc)| {
                    let i = pc.clusters.iter().position(|o| o.name == c.name)?;
                    p.clusters.get(i)?.as_ref()
                });
                let concurrency = c.concurrency.and_then(|settings| {
                    let kept =
                        old.and_then(|o| o.concurrency.as_ref()).filter(|o| o.settings == settings);
                    let limiter = match kept {
                        Some(o) => o.limiter.clone(),
                        None => new_cluster_limiter(settings)?,
                    };
                    Some(Concurrency { settings, limiter })
                });
                let breaker = c.breaker.as_ref().and_then(|settings| {
                    let kept = old.and_then(|o| o.breaker.as_ref()).filter(|o| {
                        o.settings.same(settings)
                            && o.failure_statuses == c.breaker_failure_statuses
                    });
                    if let Some(b) = kept {
                        return Some(b.clone());
                    }
                    let kind = match settings {
                        BreakerSettings::Sre { config, .. } => BreakerKind::Sre(
                            parking_lot::Mutex::new(SreThrottle::try_new(config.clone()).ok()?),
                        ),
                        BreakerSettings::StateMachine { config, .. } => BreakerKind::StateMachine(
                            parking_lot::Mutex::new(CircuitBreaker::try_new(config.clone()).ok()?),
                        ),
                    };
                    Some(Arc::new(Breaker {
                        settings: settings.clone(),
                        failure_statuses: c.breaker_failure_statuses.clone(),
                        kind,
                    }))
                });
                Some(ClusterPolicy { concurrency, breaker })
            })
            .collect();
        let listeners = config
            .listeners
            .iter()
            .map(|l| {
                let settings = l.bbr.as_ref()?;
                let old = previous.and_then(|(p, pc)| {
                    let i = pc.listeners.iter().position(|o| o.name == l.name)?;
                    p.listeners.get(i)?.as_ref()
                });
                reuse_bbr(old, settings, ctx)
            })
            .collect();
        let retries = config
            .routes
            .iter()
            .map(|r| {
                let old = previous.and_then(|(p, c)| {
                    let i = c.routes.iter().position(|o| o.name == r.name)?;
                    p.retries.get(i)?.as_ref()
                });
                retry::for_route(
                    r.policy.strategy,
                    r.policy.retries.as_ref(),
                    r.policy.hedge.as_ref(),
                    old,
                    ctx.workers,
                )
            })
            .collect();
        let policies = Policies {
            routes,
            clusters,
            listeners,
            levels,
            plain_rejections,
            plan_effects: config.routes.iter().map(|_| PlanEffect::default()).collect(),
            has_plans: !config.plans.is_empty(),
            retries,
            mirrors: mirror::build(config, previous.map(|(p, c)| (&p.mirrors[..], c))),
            hyper_only: config
                .routes
                .iter()
                .map(|r| {
                    let p = &r.policy;
                    (p.strategy == crate::config::Strategy::Forking && p.hedge.is_some())
                        || p.failback.is_some()
                        || p.mirror.is_some()
                        || p.stale_on_error.is_some()
                        || p.cache.is_some()
                        || p.strategy == crate::config::Strategy::Broadcast
                        // Identity headers are set before admission reads the request.
                        || r.edge.auth.is_some()
                })
                .collect(),
            caches: config
                .routes
                .iter()
                .map(|r| {
                    let settings = r.policy.cache.as_ref()?;
                    let kept = previous.and_then(|(p, pc)| {
                        let i = pc.routes.iter().position(|o| o.name == r.name)?;
                        p.caches.get(i)?.as_ref().filter(|c| c.settings == *settings).cloned()
                    });
                    Some(kept.unwrap_or_else(|| {
                        Arc::new(crate::proxy::cache::RouteCache::new(settings))
                    }))
                })
                .collect(),
            stale: config
                .routes
                .iter()
                .map(|r| {
                    let settings = r.policy.stale_on_error?;
                    let kept = previous.and_then(|(p, pc)| {
                        let i = pc.routes.iter().position(|o| o.name == r.name)?;
                        p.stale.get(i)?.as_ref().filter(|(s, _)| *s == settings).cloned()
                    });
                    Some(kept.unwrap_or_else(|| {
                        let cache = crate::proxy::stale::StaleCache::new(
                            settings.max_bytes,
                            settings.max_age,
                        );
                        (settings, Arc::new(cache))
                    }))
                })
                .collect(),
            gutters: config
                .clusters
                .iter()
                .map(|c| {
                    let index =
                        config.clusters.iter().position(|o| Some(&o.name) == c.gutter.as_ref())?;
                    let kept = previous.and_then(|(p, pc)| {
                        let i = pc.clusters.iter().position(|o| o.name == c.name)?;
                        p.gutters.get(i)?.as_ref().map(|(_, n)| n.clone())
                    });
                    Some((index, kept.unwrap_or_default()))
                })
                .collect(),
        };
        policies.apply_plans(config, &ctx.active_plans.lock());
        policies
    }

    /// Sets every route's plan effects from the `active` plans of `config` (unknown names are
    /// ignored: a plan removed by a reload stops acting).
    pub fn apply_plans(&self, config: &Config, active: &std::collections::BTreeSet<String>) {
        for effect in &self.plan_effects {
            effect.fallback.store(false, Relaxed);
            effect.shed_below.store(0, Relaxed);
        }
        for plan in config.plans.iter().filter(|p| active.contains(&p.name)) {
            for action in &plan.actions {
                let targets: Vec<usize> = match &action.route {
                    Some(name) => {
                        config.routes.iter().position(|r| &r.name == name).into_iter().collect()
                    }
                    None => (0..config.routes.len()).collect(),
                };
                for i in targets {
                    let Some(effect) = self.plan_effects.get(i) else { continue };
                    if action.fallback {
                        effect.fallback.store(true, Relaxed);
                    }
                    if let Some(class) = action.shed_below {
                        let level = class.index() as u8 + 1;
                        effect.shed_below.fetch_max(level, Relaxed);
                    }
                }
            }
        }
    }

    /// Whether `cluster`'s concurrency limit is full: a timeout now is overload (which the
    /// adaptive limit answers), not a broken endpoint (which outlier ejection answers).
    pub fn cluster_saturated(&self, cluster: usize) -> bool {
        match self.clusters.get(cluster) {
            Some(Some(ClusterPolicy { concurrency: Some(c), .. })) => {
                c.limiter.inflight() >= c.limiter.limit()
            }
            _ => false,
        }
    }

    /// Whether only the hyper path serves `route` (see [`Policies::hyper_only`]).
    #[inline]
    pub fn hyper_only(&self, route: usize) -> bool {
        self.hyper_only.get(route).copied().unwrap_or(false)
    }

    /// The micro-cache of `route`, if it has one.
    #[inline]
    pub fn cache(&self, route: usize) -> Option<&Arc<crate::proxy::cache::RouteCache>> {
        self.caches.get(route)?.as_ref()
    }

    /// The stale copies of `route`, if it keeps them (`stale_on_error`).
    #[inline]
    pub fn stale(&self, route: usize) -> Option<&Arc<crate::proxy::stale::StaleCache>> {
        self.stale.get(route)?.as_ref().map(|(_, c)| c)
    }

    /// The mirror of `route`, if it has one (strategy failsafe).
    #[inline]
    pub fn mirror(&self, route: usize) -> Option<&Arc<mirror::RouteMirror>> {
        self.mirrors.get(route)?.as_ref()
    }

    /// The retry policy of `route`, if it retries.
    #[inline]
    pub fn retry(&self, route: usize) -> Option<&retry::RouteRetry> {
        self.retries.get(route)?.as_deref()
    }

    /// Whether a request on `route` through `listener` to `cluster` has anything to pass.
    #[inline]
    pub fn applies(&self, listener: usize, route: usize, cluster: usize) -> bool {
        self.has_plans
            || matches!(self.routes.get(route), Some(Some(_)))
            || matches!(self.clusters.get(cluster), Some(Some(_)))
            || matches!(self.listeners.get(listener), Some(Some(_)))
    }

    /// What admission looks at for a request on `route` through `listener` to `cluster`, or
    /// `None` when nothing applies (such a request pays this one check).
    #[inline]
    pub fn gate<'a>(
        &'a self,
        config: &'a Config,
        listener: usize,
        route: usize,
        cluster: usize,
    ) -> Option<Gate<'a>> {
        if !self.applies(listener, route, cluster) {
            return None;
        }
        Some(Gate {
            plan: self.plan_effects.get(route),
            route: self.routes.get(route).and_then(Option::as_ref),
            cluster: self.clusters.get(cluster).and_then(Option::as_ref),
            gutter: self.gutters.get(cluster).and_then(Option::as_ref).map(|(i, n)| Gutter {
                cluster: *i,
                policy: self.clusters.get(*i).and_then(Option::as_ref),
                diverted: n,
            }),
            listener: self.listeners.get(listener).and_then(Option::as_ref),
            trusted: &config.trusted_proxies,
        })
    }

    /// Counts a refusal on `route`.
    pub fn count_refusal(&self, route: usize, class: Criticality, refusal: &Refusal) {
        if let Some(counts) = self.rejections(route) {
            counts.count(refusal.rejection.reason, class);
        }
    }

    /// The route's fallback answer instead of a refusal for `reason` (`None`: the upstream
    /// failed or no endpoint was available), when the route has one and the cause is the
    /// cluster's: shedding, an open breaker, a failure. A client's own limit, a spent deadline
    /// or a drill are answered as themselves.
    pub fn fallback(&self, route: usize, reason: Option<RejectReason>) -> Option<render::Rendered> {
        let policy = self.routes.get(route)?.as_ref()?;
        let fallback = policy.config.fallback.as_ref()?;
        if !cluster_cause(reason) {
            return None;
        }
        policy.rejections.fallbacks.fetch_add(1, Relaxed);
        Some(render::Rendered {
            status: fallback.status,
            headers: vec![
                ("content-type", fallback.content_type.clone()),
                ("x-spillway-degraded", "fallback".to_string()),
            ],
            body: fallback.body.clone(),
        })
    }

    /// The fallback answer of `route` instead of an upstream answer with `status`, when the
    /// fallback covers that status (`fallback.on_status`, default 502, 503, 504).
    pub fn fallback_for_status(&self, route: usize, status: u16) -> Option<render::Rendered> {
        if !self.fallback_covers(route, status) {
            return None;
        }
        self.fallback(route, None)
    }

    /// Whether `route`'s fallback replaces an upstream answer with `status`.
    #[inline]
    pub fn fallback_covers(&self, route: usize, status: u16) -> bool {
        status >= 500
            && matches!(
                self.routes.get(route),
                Some(Some(p)) if p.config.fallback.as_ref().is_some_and(|f| f.on_status.contains(&status))
            )
    }

    /// The rejection counters of `route`.
    pub fn rejections(&self, route: usize) -> Option<&Arc<RejectionCounts>> {
        match self.routes.get(route) {
            Some(Some(p)) => Some(&p.rejections),
            _ => self.plain_rejections.get(route),
        }
    }
}

/// What admission decided about a request besides letting it in: its class, and the headers
/// the upstream request must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Classified {
    /// The request's criticality.
    pub class: Criticality,
    /// The criticality header must be rewritten (the claim was above the route's maximum).
    pub rewrite_class: bool,
    /// The cost budget to send upstream, when the route grants one.
    pub budget: Option<u64>,
}

/// Reads criticality and the budget grant (phase *classify*).
pub fn classify(policy: Option<&RoutePolicy>, view: &dyn RequestView) -> Classified {
    let (mut default, mut max) = policy
        .map_or((Criticality::Critical, Criticality::CriticalPlus), |p| {
            (p.config.criticality, p.config.max_criticality)
        });
    // A mapped header value sets the request's default and ceiling (never above the route's).
    if let Some(by) = policy.and_then(|p| p.config.criticality_by_header.as_ref()) {
        if let Some(class) = view.header(&by.header).and_then(|v| by.class_of(v)) {
            max = max.min(class);
            default = class.min(max);
        }
    }
    let (class, rewrite_class) = classify::criticality(view, default, max);
    // A client cannot raise its budget: a lower incoming value (an inner hop that already spent
    // some) is kept, a higher or malformed one is replaced by the grant.
    let budget = policy.and_then(|p| p.config.budget.as_ref()).map(|b| {
        let granted = b.grant.grant(|name| view.header(name));
        spillway_core::budget::BudgetGrant::effective(view.header(&b.header), granted)
    });
    Classified { class, rewrite_class, budget }
}

thread_local! {
    /// The key buffer of this worker (keys are built per request without allocating).
    static KEY: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(128));
    /// This worker's random sequence for the breaker's drops (splitmix64).
    static RANDOM: std::cell::Cell<u64> = std::cell::Cell::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
}

/// Everything admission needs to look at besides the request.
#[derive(Debug, Clone, Copy)]
pub struct Gate<'a> {
    /// What the active plans do to the route.
    pub plan: Option<&'a PlanEffect>,
    /// The route's policy.
    pub route: Option<&'a RoutePolicy>,
    /// The cluster's policy.
    pub cluster: Option<&'a ClusterPolicy>,
    /// The cluster's gutter: where what its breaker or concurrency limit sheds goes.
    pub gutter: Option<Gutter<'a>>,
    /// The listener's BBR.
    pub listener: Option<&'a Arc<Bbr>>,
    /// Trusted proxies (for `client_ip` keys).
    pub trusted: &'a [crate::config::IpNet],
}

/// A cluster's gutter as admission sees it.
#[derive(Clone, Copy, Debug)]
pub struct Gutter<'a> {
    /// The gutter cluster's index.
    pub cluster: usize,
    /// Its own policy (its concurrency limit and breaker still apply to what it takes).
    pub policy: Option<&'a ClusterPolicy>,
    /// Requests sent there instead of the cluster.
    pub diverted: &'a AtomicU64,
}

/// A request let in: the slots and tokens it holds. [`Admission::finish`] reports how the
/// request went; dropping it unfinished (the client left) gives everything back without a
/// sample.
#[derive(Debug, Default)]
#[must_use = "dropping an admission releases it without a sample"]
pub struct Admission {
    /// Level pool, then route (or slow) pool: fixed slots, no allocation per request.
    slots: [Option<BulkheadPermit>; 2],
    /// Listener BBR, then route BBR.
    bbr: [Option<(Arc<BbrLimiter>, BbrToken)>; 2],
    concurrency: Option<(Arc<ClusterLimiter>, ConcurrencyToken)>,
    /// The cluster's breaker (with the state machine's ticket), told the outcome on `finish`.
    breaker: Option<(Arc<Breaker>, Option<CallTicket>)>,
    /// When the request passed the breaker (the call's latency for slow-call triggers).
    started: Instant,
    /// Set when the cluster shed the request and its gutter took it: the cluster to call.
    gutter: Option<usize>,
    /// Whether the request's hot key is in the route's top K now; judged only for a
    /// micro-cache that caches hot keys alone (`cache.hot_only`).
    hot: Option<bool>,
}

impl Admission {
    /// The gutter cluster to call instead of the route's, when the route's cluster shed the
    /// request and its gutter took it.
    pub fn gutter(&self) -> Option<usize> {
        self.gutter
    }

    /// Whether the request's hot key is hot now (`None`: not judged, the route's cache does
    /// not ask).
    pub fn hot(&self) -> Option<bool> {
        self.hot
    }

    /// The request ended at `now` with `outcome` (as the upstream answered: `Failure` for a
    /// 5xx, timeout or transport error): samples go to BBR and the concurrency limiter, and
    /// every slot is given back.
    pub fn finish(mut self, status: Option<u16>, now: Instant) {
        let outcome = outcome_of(status);
        for (limiter, token) in self.bbr.iter_mut().filter_map(Option::take) {
            limiter.done(token, now);
        }
        if let Some((limiter, token)) = self.concurrency.take() {
            limiter.release(token, outcome, now);
        }
        if let Some((breaker, ticket)) = self.breaker.take() {
            let latency = now.saturating_duration_since(self.started);
            let outcome = breaker.outcome_of(status);
            breaker.record(ticket, CallOutcome { outcome, latency }, now);
        }
    }
}

impl Admission {
    /// Gives back what the cluster stage holds (its concurrency slot, a half-open probe
    /// slot) without a sample.
    fn release_cluster(&mut self) {
        if let Some((limiter, token)) = self.concurrency.take() {
            let at = token.started_at();
            limiter.release(token, Outcome::Ignored, at);
        }
        if let Some((breaker, ticket)) = self.breaker.take() {
            breaker.record(ticket, CallOutcome::ignored(), self.started);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        for (limiter, token) in self.bbr.iter_mut().filter_map(Option::take) {
            limiter.abandon(token);
        }
        // A half-open probe slot is given back; nothing is judged.
        self.release_cluster();
    }
}

/// Header fields (name, value) admission sets upstream: at most two, the first `n` in use.
pub type UpstreamFields<'a> = [(&'a [u8], &'a [u8]); 2];

impl Classified {
    /// The header fields admission sets on the upstream request (replacing incoming ones):
    /// the criticality when it was lowered, and the granted budget. At most two.
    pub fn upstream_fields<'a>(
        &self,
        gate: &Gate<'a>,
        budget_text: &'a mut [u8; 20],
    ) -> (UpstreamFields<'a>, usize) {
        let mut fields: [(&[u8], &[u8]); 2] = [(b"", b""); 2];
        let mut n = 0;
        if self.rewrite_class {
            fields[n] = (classify::CRITICALITY_HEADER.as_bytes(), self.class.as_str().as_bytes());
            n += 1;
        }
        if let (Some(units), Some(b)) =
            (self.budget, gate.route.and_then(|p| p.config.budget.as_ref()))
        {
            let text = spillway_core::budget::format_budget(units);
            let len = text.as_bytes().len().min(budget_text.len());
            budget_text[..len].copy_from_slice(&text.as_bytes()[..len]);
            fields[n] = (b.header.as_bytes(), &budget_text[..len]);
            n += 1;
        }
        (fields, n)
    }
}

/// How an upstream exchange went, for the limiters that learn: a 5xx, 429 or transport error
/// is a failure.
pub fn outcome_of(status: Option<u16>) -> Outcome {
    match status {
        Some(s) if s < 500 && s != 429 => Outcome::Success,
        _ => Outcome::Failure,
    }
}

/// The header a drill names its fault in (`abort=503`, `delay=200ms`, or both, comma
/// separated), obeyed only on routes with `fault.allow_header: true`.
pub const FAULT_HEADER: &str = "x-spillway-fault";

/// Draws a uniform value in `[0, 1)` from this worker's sequence.
fn uniform() -> f64 {
    RANDOM.with(|r| {
        let next = spillway_core::random::splitmix64(r.get());
        r.set(next);
        (next >> 11) as f64 / (1u64 << 53) as f64
    })
}

/// Which fault applies to this request: a delay and/or an abort status.
fn fault_for(
    fault: &crate::config::FaultSettings,
    view: &dyn RequestView,
) -> (Option<Duration>, Option<u16>) {
    let mut delay =
        fault.delay.and_then(|(share, d)| (share > 0.0 && uniform() < share).then_some(d));
    let mut abort =
        fault.abort.and_then(|(share, s)| (share > 0.0 && uniform() < share).then_some(s));
    if fault.allow_header {
        if let Some(text) = view.header(FAULT_HEADER).and_then(|v| std::str::from_utf8(v).ok()) {
            for part in text.split(',') {
                match part.trim().split_once('=') {
                    Some(("abort", s)) => {
                        if let Ok(status @ 200..=599) = s.trim().parse::<u16>() {
                            abort = Some(status);
                        }
                    }
                    Some(("delay", d)) => {
                        if let Ok(d) = crate::config::duration::parse_duration(d.trim()) {
                            // A client-chosen delay is bounded: a drill, not a way to hold
                            // gateway resources.
                            delay = Some(d.min(Duration::from_secs(30)));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    (delay, abort)
}

/// Whether a request goes to the slow pool.
fn is_slow(policy: &RoutePolicy, view: &dyn RequestView) -> bool {
    let Some(slow) = &policy.config.slow else { return false };
    slow.body_over.is_some_and(|limit| view.body_len().is_some_and(|n| n > limit))
        || slow.header.as_deref().is_some_and(|h| view.header(h).is_some())
}

/// Takes a slot in `pool` at `now`, waiting when queued (at most the pool's max wait or
/// `left`). Says whether it waited (then `now` is stale).
async fn enter(
    pool: &Pool,
    class: Criticality,
    left: Option<Duration>,
    now: Instant,
) -> Result<(BulkheadPermit, bool), Rejection> {
    match pool.bulkhead.try_enter_at(class, left, now) {
        Entry::Acquired(permit) => Ok((permit, false)),
        Entry::Rejected(rejection) => Err(rejection),
        Entry::Waiting(waiting) => Ok((waiting.wait().await?, true)),
    }
}

/// Phase *admit*: limits → level pool → route (or slow) bulkhead → BBR → cluster concurrency.
/// `now` is the request's start; `deadline_left` its remaining budget (waits never outlast it).
pub async fn admit(
    gate: Gate<'_>,
    view: &dyn RequestView,
    classified: Classified,
    now: Instant,
    deadline_left: Option<Duration>,
    clock: &dyn Clock,
    worker: usize,
) -> Result<Admission, Refusal> {
    let class = classified.class;
    let mut admission = Admission::default();
    let mut now_after = now;
    if let Some(effect) = gate.plan {
        let shed_below = effect.shed_below.load(Relaxed);
        if effect.fallback.load(Relaxed) || (class.index() as u8) < shed_below.saturating_sub(1) {
            return Err(Rejection::new(RejectReason::Degraded).into());
        }
    }
    if let Some(fault) = gate.route.and_then(|p| p.config.fault.as_ref()) {
        let (delay, abort) = fault_for(fault, view);
        if let Some(d) = delay {
            // A drill's delay never outlasts the request's own deadline.
            tokio::time::sleep(deadline_left.map_or(d, |left| d.min(left))).await;
            now_after = clock.now();
        }
        if let Some(status) = abort {
            return Err(Refusal {
                rejection: Rejection::new(RejectReason::FaultInjected),
                limit: None,
                status: Some(status),
            });
        }
    }
    // After a drill's delay, less of the deadline is left.
    let deadline_left =
        deadline_left.map(|d| d.saturating_sub(now_after.saturating_duration_since(now)));
    let now = now_after;
    if let Some(policy) = gate.route {
        // Limits: every one must admit; the longest pacing wait of a leaky bucket is served
        // once, after all of them agreed.
        let mut wait = Duration::ZERO;
        let by_client =
            |k: &crate::config::LimitKey| k.parts.contains(&crate::config::KeyPart::ClientIp);
        let client = if policy.limits.iter().any(|l| by_client(&l.config.key))
            || policy.hot.as_ref().is_some_and(|h| by_client(&h.settings.key))
            || policy.globals.iter().any(|g| by_client(&g.config.key))
        {
            classify::client_ip(view, gate.trusted)
        } else {
            view.peer()
        };
        if !policy.limits.is_empty() || policy.hot.is_some() {
            let decided = KEY.with(|buf| {
                let mut buf = buf.borrow_mut();
                if let Some(hot) = &policy.hot {
                    classify::key_bytes(&hot.settings.key, view, client, &policy.route, &mut buf);
                    hot.observe(worker, &buf, now);
                    if policy.config.cache.as_ref().is_some_and(|c| c.hot_only) {
                        admission.hot = Some(hot.is_hot(worker, &buf, now));
                    }
                }
                for limit in &policy.limits {
                    classify::key_bytes(&limit.config.key, view, client, &policy.route, &mut buf);
                    // A hot-parameter limit leaves the keys that are not hot now alone.
                    if limit.config.hot_only
                        && !policy.hot.as_ref().is_some_and(|h| h.is_hot(worker, &buf, now))
                    {
                        continue;
                    }
                    match limit.check(&buf, now, class, worker) {
                        Decision::Admit => {}
                        Decision::Wait(d) => wait = wait.max(d),
                        Decision::Reject(rejection) => {
                            return Err(Refusal {
                                rejection,
                                limit: Some(LimitInfo {
                                    name: limit.config.name.clone(),
                                    quota: limit.config.quota,
                                }),
                                status: None,
                            })
                        }
                    }
                }
                Ok(())
            });
            decided?;
        }
        // Global limits, after every local one agreed: lease mode judges locally, exact mode
        // asks the store (at most its timeout).
        for g in &policy.globals {
            let key = KEY.with(|buf| {
                let mut buf = buf.borrow_mut();
                classify::key_bytes(&g.config.key, view, client, &policy.route, &mut buf);
                String::from_utf8_lossy(&buf).into_owned()
            });
            let decision = if g.is_exact() {
                g.check_exact(&key, class, now).await
            } else {
                g.check_lease(&key, class, now)
            };
            if let Some(d) = decision.filter(|d| !d.admitted) {
                if let Decision::Reject(rejection) = d.to_decision() {
                    return Err(Refusal {
                        rejection,
                        limit: Some(LimitInfo { name: g.config.name.clone(), quota: d.limit }),
                        status: None,
                    });
                }
            }
        }
        if !wait.is_zero() {
            if deadline_left.is_some_and(|left| left <= wait) {
                return Err(Rejection::new(RejectReason::DeadlineExceeded).into());
            }
            tokio::time::sleep(wait).await;
        }
        // After a wait the clock has moved on: what is left of the deadline shrinks with it.
        let mut at = now;
        let mut waited = false;
        let left = |at: Instant| {
            deadline_left.map(|d| d.saturating_sub(at.saturating_duration_since(now)))
        };
        if let Some(level) = &policy.level {
            let (permit, w) = enter(level, class, left(at), at).await?;
            admission.slots[0] = Some(permit);
            if w {
                waited = true;
                at = clock.now();
            }
        }
        let pool =
            if is_slow(policy, view) { policy.slow.as_ref() } else { policy.bulkhead.as_ref() };
        if let Some(pool) = pool {
            let (permit, w) = enter(pool, class, left(at), at).await?;
            admission.slots[1] = Some(permit);
            waited |= w;
        }
        if waited || !wait.is_zero() {
            now_after = clock.now();
        }
    }
    // Waiting moved the clock on: BBR and the concurrency limiter time from there.
    let now = now_after;
    let bbrs = [gate.listener, gate.route.and_then(|p| p.bbr.as_ref())];
    for (slot, bbr) in admission.bbr.iter_mut().zip(bbrs) {
        if let Some(bbr) = bbr {
            let token = bbr.limiter.allow(class, now)?;
            *slot = Some((bbr.limiter.clone(), token));
        }
    }
    match admit_cluster(gate.cluster, class, now, &mut admission) {
        Ok(()) => {}
        // What the cluster's own protection sheds goes to its gutter, once: what the gutter
        // sheds is answered (its refusal), never sent on to the gutter's gutter.
        Err(refusal) if gate.gutter.is_some() && is_cluster_shed(refusal.rejection.reason) => {
            let gutter = gate.gutter.as_ref().map(|g| (g.cluster, g.policy, g.diverted));
            if let Some((cluster, policy, diverted)) = gutter {
                admission.release_cluster();
                admit_cluster(policy, class, now, &mut admission)?;
                diverted.fetch_add(1, Relaxed);
                admission.gutter = Some(cluster);
            }
        }
        Err(refusal) => return Err(refusal),
    }
    Ok(admission)
}

/// Whether a degraded answer (a fallback, a stale copy) may stand in for a failure with this
/// refusal reason (`None`: the upstream failed): the self-protection refusals (503:
/// overloaded, concurrency limit, full or timed-out pools, breakers, plans), never a client's
/// own 429, a spent deadline or a drill's abort.
pub fn cluster_cause(reason: Option<RejectReason>) -> bool {
    match reason {
        None => true,
        Some(r) => r.http_status() == 503 && r != RejectReason::FaultInjected,
    }
}

/// Whether a refusal is the cluster's own protection shedding (its gutter may take it).
fn is_cluster_shed(reason: RejectReason) -> bool {
    matches!(
        reason,
        RejectReason::ConcurrencyLimit | RejectReason::CircuitOpen | RejectReason::Throttled
    )
}

/// The cluster stage of admission: its concurrency limit, then its breaker (last, so that only
/// requests about to be sent count as the breaker's requests).
fn admit_cluster(
    cluster: Option<&ClusterPolicy>,
    class: Criticality,
    now: Instant,
    admission: &mut Admission,
) -> Result<(), Refusal> {
    if let Some(c) = cluster.and_then(|c| c.concurrency.as_ref()) {
        let token = c.limiter.try_acquire(class, now)?;
        admission.concurrency = Some((c.limiter.clone(), token));
    }
    if let Some(breaker) = cluster.and_then(|c| c.breaker.as_ref()) {
        let random = uniform();
        let ticket = match &breaker.kind {
            BreakerKind::Sre(throttle) => {
                if let Decision::Reject(rejection) = throttle.lock().allow(class, now, random) {
                    return Err(rejection.into());
                }
                None
            }
            BreakerKind::StateMachine(cb) => Some(cb.lock().allow(now)?),
        };
        admission.breaker = Some((breaker.clone(), ticket));
        admission.started = now;
    }
    Ok(())
}

/// The `/admin/policies` view of one pool.
#[derive(Debug, Serialize)]
pub struct PoolView {
    /// Pool name.
    pub name: String,
    /// Slots.
    pub max_concurrent: usize,
    /// In use now.
    pub in_use: usize,
    /// Queue bound.
    pub queue: usize,
    /// Waiting now.
    pub queued: usize,
    /// Waiters CoDel refused.
    pub codel_drops: u64,
}

impl Pool {
    /// A JSON view.
    pub fn view(&self) -> PoolView {
        PoolView {
            name: self.name.clone(),
            max_concurrent: self.settings.max_concurrent,
            in_use: self.bulkhead.in_flight(),
            queue: self.settings.queue,
            queued: self.bulkhead.queued(),
            codel_drops: self.bulkhead.codel_drops(),
        }
    }
}

/// The `/admin/policies` view of a BBR limiter.
#[derive(Debug, Serialize)]
pub struct BbrView {
    /// CPU usage (0..1) as BBR sees it.
    pub cpu: f64,
    /// Requests in flight.
    pub in_flight: u64,
    /// maxPass × minRT.
    pub max_in_flight: u64,
    /// Whether it is shedding now (CPU hot or within the cool-down).
    pub dropping: bool,
}

impl Bbr {
    /// A JSON view.
    pub fn view(&self, now: Instant) -> BbrView {
        let stats = self.limiter.stats(now);
        BbrView {
            cpu: stats.cpu.fraction(),
            in_flight: stats.inflight,
            max_in_flight: stats.max_inflight,
            dropping: stats.shedding,
        }
    }
}

impl Policies {
    /// The `/admin/policies` document: per route its limits (keys tracked), pools, BBR and
    /// rejections; per cluster its concurrency limit; per listener its BBR; the level pools.
    pub fn view(&self, config: &Config, now: Instant) -> serde_json::Value {
        use serde_json::json;
        let routes: Vec<_> = config
            .routes
            .iter()
            .zip(&self.routes)
            .enumerate()
            .map(|(i, (r, p))| {
                let mut rejections = Vec::new();
                if let Some(counts) = self.rejections(i) {
                    counts.each(|reason, class, n| {
                        rejections.push(json!({
                            "reason": reason.as_str(), "criticality": class.as_str(), "count": n
                        }))
                    });
                }
                let mirror = self.mirror(i).map(|m| m.view());
                let retries =
                    self.retry(i).map(|r| json!({ "settings": r.settings, "state": r.view(now) }));
                let Some(p) = p else {
                    return json!({
                        "route": r.name, "policy": null, "rejections": rejections,
                        "retries": retries, "mirror": mirror
                    });
                };
                let limits: Vec<_> = p
                    .limits
                    .iter()
                    .map(|l| {
                        json!({
                            "name": l.config.name,
                            "key": l.config.key.text,
                            "algorithm": l.config.algorithm_name,
                            "rate": l.config.rate,
                            "quota": l.config.quota,
                            "keys": l.keys(),
                        })
                    })
                    .collect();
                json!({
                    "route": r.name,
                    "criticality": p.config.criticality.as_str(),
                    "max_criticality": p.config.max_criticality.as_str(),
                    "limits": limits,
                    "level": p.level.as_ref().map(|l| l.view()),
                    "bulkhead": p.bulkhead.as_ref().map(|b| b.view()),
                    "slow": p.slow.as_ref().map(|b| b.view()),
                    "bbr": p.bbr.as_ref().map(|b| b.view(now)),
                    "budget": p.config.budget.as_ref().map(|b| json!({
                        "header": b.header, "default": b.default
                    })),
                    "rejections": rejections,
                    "retries": retries,
                    "mirror": mirror,
                })
            })
            .collect();
        let clusters: Vec<_> = config
            .clusters
            .iter()
            .zip(&self.clusters)
            .filter_map(|(c, p)| {
                let p = p.as_ref()?;
                let concurrency = p.concurrency.as_ref().map(|c| {
                    json!({
                        "settings": c.settings,
                        "limit": c.limiter.limit(),
                        "in_flight": c.limiter.inflight(),
                    })
                });
                let breaker = p.breaker.as_ref().map(|b| b.view(now));
                Some(json!({ "cluster": c.name, "concurrency": concurrency, "breaker": breaker }))
            })
            .collect();
        let listeners: Vec<_> = config
            .listeners
            .iter()
            .zip(&self.listeners)
            .filter_map(|(l, b)| Some(json!({ "listener": l.name, "bbr": b.as_ref()?.view(now) })))
            .collect();
        let levels: Vec<_> = self.levels.iter().map(|l| l.view()).collect();
        json!({ "routes": routes, "clusters": clusters, "listeners": listeners, "levels": levels })
    }

    /// Every pool (levels first, then each route's bulkhead and slow pool).
    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.levels.iter().chain(
            self.routes.iter().flatten().flat_map(|p| p.bulkhead.iter().chain(p.slow.iter())),
        )
    }
}

/// The `/admin/policies` view of a breaker.
#[derive(Debug, Serialize)]
pub struct BreakerView {
    /// `sre` or `state_machine`.
    pub kind: &'static str,
    /// The state machine's state (`closed`, `open`, `half_open`).
    pub state: Option<&'static str>,
    /// The state machine's trips so far.
    pub trips: Option<u64>,
    /// Requests in the window.
    pub requests: u64,
    /// Of which accepted by the backend.
    pub accepts: u64,
    /// The drop probability of a CRITICAL request now.
    pub drop_probability: f64,
}

impl Breaker {
    /// How the breaker judges an upstream answer with `status` (`None`: no answer — a
    /// transport error or timeout, always a failure).
    pub fn outcome_of(&self, status: Option<u16>) -> Outcome {
        match (status, &self.failure_statuses) {
            (Some(s), Some(list)) if !list.contains(&s) => Outcome::Success,
            (_, Some(_)) => Outcome::Failure,
            (status, None) => outcome_of(status),
        }
    }

    /// Tells the breaker how an admitted call went.
    fn record(&self, ticket: Option<CallTicket>, call: CallOutcome, now: Instant) {
        match (&self.kind, ticket) {
            (BreakerKind::Sre(throttle), _) => throttle.lock().record(call.outcome, now),
            (BreakerKind::StateMachine(cb), Some(ticket)) => cb.lock().record(ticket, call, now),
            (BreakerKind::StateMachine(_), None) => {}
        }
    }

    /// A JSON view.
    pub fn view(&self, now: Instant) -> BreakerView {
        match &self.kind {
            BreakerKind::Sre(throttle) => {
                let mut throttle = throttle.lock();
                let counts = throttle.counts(now);
                BreakerView {
                    kind: "sre",
                    state: None,
                    trips: None,
                    requests: counts.requests,
                    accepts: counts.accepts,
                    drop_probability: throttle.drop_probability(Criticality::Critical, now),
                }
            }
            BreakerKind::StateMachine(cb) => {
                let mut cb = cb.lock();
                let state = cb.state(now);
                let stats = cb.window_stats(now);
                BreakerView {
                    kind: "state_machine",
                    state: Some(state.as_str()),
                    trips: Some(cb.trips()),
                    requests: stats.calls,
                    accepts: stats.calls.saturating_sub(stats.failures),
                    drop_probability: if state.as_gauge() == 0 { 0.0 } else { 1.0 },
                }
            }
        }
    }
}

impl Policies {
    /// The `/admin/plans` document: every plan, whether it is active, and what it does.
    pub fn plans_view(
        config: &Config,
        active: &std::collections::BTreeSet<String>,
    ) -> serde_json::Value {
        let plans: Vec<_> = config
            .plans
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "active": active.contains(&p.name),
                    "actions": p.actions,
                })
            })
            .collect();
        serde_json::json!({ "plans": plans })
    }
}
