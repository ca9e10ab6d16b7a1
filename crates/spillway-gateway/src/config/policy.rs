//! The admission settings of the config: limits, overload (BBR), criticality, deadlines, cost
//! budgets, bulkheads and isolation levels, cluster concurrency limits and trusted proxies.
//!
//! Each value is checked by building the `spillway-core` object it configures (a `Rate`, a
//! `TokenBucketConfig`, a `BbrConfig`, a `BulkheadConfig`…), so the config accepts exactly
//! what the algorithms accept, and a refusal names the file, line, key and reason. The
//! compiled, stateful policies are built from these values in `crate::policy`.

use super::duration::ConfigDuration;
use super::locate::Seg;
use super::raw::{
    RawBbr, RawBudget, RawBulkhead, RawConcurrency, RawLimit, RawOverload, RawRates, RawSlow,
};
use super::ser_duration;
use super::validate::{at, byte_size, key, nearest, Checker};
use serde::{Serialize, Serializer};
use spillway_core::bulkhead::BulkheadConfig;
use spillway_core::overload::{BbrConfig, CpuUsage};
use spillway_core::rate::{
    CriticalityReserve, FixedWindowConfig, GcraConfig, LeakyBucketConfig, Rate,
    SlidingWindowConfig, TokenBucketConfig, WarmUpConfig, WindowLimit,
};
use spillway_core::Criticality;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// Names accepted for a limit's `algorithm`.
pub const ALGORITHM_NAMES: &[&str] =
    &["token_bucket", "gcra", "leaky_bucket", "fixed_window", "sliding_window", "warm_up"];

/// Default most keys a keyed limit tracks before evicting (the core's default table size).
pub const DEFAULT_MAX_KEYS: usize = 917_504;
/// Default wait in a bulkhead queue.
pub const DEFAULT_BULKHEAD_MAX_WAIT: Duration = Duration::from_millis(50);
/// Default header carrying the cost budget.
pub const DEFAULT_BUDGET_HEADER: &str = "x-spillway-budget";
/// Default longest wait for a slot of a `leaky_bucket` limit.
pub const DEFAULT_LEAKY_MAX_WAIT: Duration = Duration::from_millis(100);
/// Default BBR CPU threshold (a fraction of the CPU).
pub const DEFAULT_CPU_THRESHOLD: f64 = 0.8;
/// Default starting limit of an adaptive cluster concurrency limit (capped by its `max`).
pub const DEFAULT_CONCURRENCY_INITIAL: u64 = 20;
/// Default upper bound of an adaptive cluster concurrency limit.
pub const DEFAULT_CONCURRENCY_MAX: u64 = 1000;

fn ser_criticality<S: Serializer>(c: &Criticality, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(c.as_str())
}

/// A route's admission policy as configured (validated; defaults applied).
#[derive(Debug, Clone, Serialize)]
pub struct RoutePolicyConfig {
    /// The isolation level (a name of the top-level `levels`), if any.
    pub level: Option<String>,
    /// The class of requests that carry none.
    #[serde(serialize_with = "ser_criticality")]
    pub criticality: Criticality,
    /// The highest class a request may claim; a higher claim is lowered to it.
    #[serde(serialize_with = "ser_criticality")]
    pub max_criticality: Criticality,
    /// A class per value of a header (say the verified `x-tier` an `auth:` block forwards).
    pub criticality_by_header: Option<CriticalityByHeader>,
    /// Rate limits; all must admit.
    pub limits: Vec<LimitConfig>,
    /// Route-level BBR.
    pub bbr: Option<BbrSettings>,
    /// Deadline settings (`None`: the route timeout is the default and cap).
    pub deadline: Option<DeadlineSettings>,
    /// Cost budget grant.
    pub budget: Option<BudgetSettings>,
    /// The route's own bulkhead.
    pub bulkhead: Option<BulkheadSettings>,
    /// The fast/slow split: slow requests use their own pool.
    pub slow: Option<SlowSettings>,
    /// Fault injection (drills).
    pub fault: Option<FaultSettings>,
    /// The static answer when the cluster fails or sheds ("something is better than nothing").
    pub fallback: Option<FallbackSettings>,
    /// What the route does when a try fails (`failfast` unless retries are configured).
    pub strategy: super::retry::Strategy,
    /// Retries (`None`: the first answer is the answer). Not an admission policy: they act
    /// after admission, on the upstream call (see `crate::policy::retry`).
    pub retries: Option<super::retry::RetrySettings>,
    /// Hedging (`strategy: forking` only).
    pub hedge: Option<super::retry::HedgeSettings>,
    /// The durable queue of failed requests (`strategy: failback` only).
    pub failback: Option<super::retry::FailbackSettings>,
    /// The shadow copy of requests (`strategy: failsafe` only).
    pub mirror: Option<super::retry::MirrorSettings>,
    /// Serve the last good GET answer when the cluster fails.
    pub stale_on_error: Option<super::retry::StaleSettings>,
    /// The route's most requested keys, tracked live.
    pub hot_keys: Option<HotKeySettings>,
    /// Limits shared by the fleet through the quota store (`global: true`).
    pub global_limits: Vec<GlobalLimitConfig>,
    /// The micro-cache of fresh GET answers, with single-flight.
    pub cache: Option<CacheSettings>,
}

/// A route's `cache:`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheSettings {
    /// How long an answer is served from the cache.
    #[serde(serialize_with = "ser_duration")]
    pub ttl: Duration,
    /// Bound on the cached answers (one at most an eighth of it).
    pub max_bytes: u64,
    /// Cache requests with `Authorization` or `Cookie` too.
    pub authorized: bool,
    /// Cache only the requests whose hot key (`hot_keys:`) is in the route's top K now.
    pub hot_only: bool,
}

/// Checks a route's `cache:`.
pub(super) fn cache(
    c: &mut Checker<'_>,
    p: &[Seg],
    raw: super::raw::RawCache,
    has_hot_keys: bool,
) -> Option<CacheSettings> {
    let hot_only = raw.hot_only.unwrap_or(false);
    if hot_only && !has_hot_keys {
        c.error(
            &at(p, &[key("hot_only")]),
            "`hot_only` caches only the requests whose hot key is in the top K now: it needs \
             `hot_keys:` on the route",
        );
        return None;
    }
    let ttl = raw.ttl.map_or(Duration::from_secs(1), |d| d.0);
    if ttl.is_zero() {
        c.error(&at(p, &[key("ttl")]), "must be longer than zero");
        return None;
    }
    let max_bytes = match raw.max_bytes {
        None => 64 << 20,
        Some(size) => byte_size(c, &at(p, &[key("max_bytes")]), size)?,
    };
    if max_bytes < 8 * 1024 {
        c.error(&at(p, &[key("max_bytes")]), "at least 8KB");
        return None;
    }
    Some(CacheSettings { ttl, max_bytes, authorized: raw.authorized.unwrap_or(false), hot_only })
}

/// A route's `hot_keys:`: a heavy-hitter sketch over one key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HotKeySettings {
    /// What is counted (the same key syntax as limits).
    pub key: LimitKey,
    /// How many keys count as hot (`hot_only` limits, `/admin/hotkeys`).
    pub top: usize,
    /// Keys tracked (the sketch's capacity).
    pub capacity: usize,
    /// How fast old requests stop counting.
    #[serde(serialize_with = "ser_duration")]
    pub half_life: Duration,
    /// A key below this rate (requests per second) is never hot.
    pub min_rate: f64,
}

impl HotKeySettings {
    /// The core sketch's configuration.
    pub fn core(&self) -> spillway_core::hotkeys::TopKConfig {
        spillway_core::hotkeys::TopKConfig {
            capacity: self.capacity,
            hot_k: self.top,
            half_life: self.half_life,
            min_rate_per_sec: self.min_rate,
        }
    }
}

/// Checks a route's `hot_keys:` by building the core sketch's configuration.
pub(super) fn hot_keys(
    c: &mut Checker<'_>,
    p: &[Seg],
    raw: super::raw::RawHotKeys,
) -> Option<HotKeySettings> {
    let key_path = at(p, &[key("key")]);
    let limit_key = match parse_key(&raw.key) {
        Ok(k) if !k.is_route() => k,
        Ok(_) => {
            c.error(&key_path, "`route` is one key: hot keys need something that varies");
            return None;
        }
        Err(why) => {
            c.error(&key_path, why);
            return None;
        }
    };
    let defaults = spillway_core::hotkeys::TopKConfig::default();
    let settings = HotKeySettings {
        key: limit_key,
        top: raw.top.unwrap_or(20),
        capacity: raw.capacity.unwrap_or(defaults.capacity),
        half_life: raw.half_life.map_or(defaults.half_life, |d| d.0),
        min_rate: raw.min_rate.unwrap_or(defaults.min_rate_per_sec),
    };
    if let Err(e) = spillway_core::hotkeys::TopK::try_new(settings.core()) {
        c.error(p, e.to_string());
        return None;
    }
    Some(settings)
}

/// A route's static fallback answer.
#[derive(Debug, Clone, Serialize)]
pub struct FallbackSettings {
    /// Status (default 200).
    pub status: u16,
    /// Body.
    pub body: String,
    /// `Content-Type` (default `text/plain; charset=utf-8`).
    pub content_type: String,
    /// Upstream answers replaced by the fallback, by status (default 502, 503, 504: the
    /// cluster failing; `[]` passes every upstream answer on).
    pub on_status: Vec<u16>,
}

/// Checks a route's `fallback:`.
pub(super) fn fallback(
    c: &mut Checker<'_>,
    p: &[Seg],
    raw: super::raw::RawFallback,
) -> Option<FallbackSettings> {
    let status = raw.status.unwrap_or(200);
    if !(200..=599).contains(&status) {
        c.error(&at(p, &[key("status")]), "an HTTP status: 200 to 599");
        return None;
    }
    let content_type = raw.content_type.unwrap_or_else(|| "text/plain; charset=utf-8".into());
    if http::HeaderValue::from_str(&content_type).is_err() {
        c.error(&at(p, &[key("content_type")]), format!("`{content_type}` is not a header value"));
        return None;
    }
    let mut on_status = Vec::new();
    for (i, s) in raw.on_status.unwrap_or_else(|| vec![502, 503, 504]).into_iter().enumerate() {
        if !(500..=599).contains(&s) {
            c.error(
                &at(p, &[key("on_status"), super::locate::Seg::Index(i)]),
                format!("{s} is not a server error status (500 to 599)"),
            );
            return None;
        }
        on_status.push(s);
    }
    Some(FallbackSettings { status, body: raw.body.unwrap_or_default(), content_type, on_status })
}

/// A route's fault injection: abort or delay a share of its requests, or those that ask for it
/// in `x-spillway-fault` when `allow_header` is on.
#[derive(Debug, Clone, Serialize)]
pub struct FaultSettings {
    /// Share of requests aborted (0..=1) and the status they get.
    pub abort: Option<(f64, u16)>,
    /// Share of requests delayed (0..=1) and by how long.
    pub delay: Option<(f64, std::time::Duration)>,
    /// Whether `x-spillway-fault: abort=503` / `delay=200ms` is obeyed.
    pub allow_header: bool,
}

/// Checks a route's `fault:`.
pub(super) fn fault(
    c: &mut Checker<'_>,
    p: &[Seg],
    raw: super::raw::RawFault,
) -> Option<FaultSettings> {
    let share = |c: &mut Checker<'_>, path: &[Seg], percent: Option<f64>| -> Option<f64> {
        let pct = percent.unwrap_or(0.0);
        if !(0.0..=100.0).contains(&pct) {
            c.error(path, "a percentage: 0 to 100");
            return None;
        }
        Some(pct / 100.0)
    };
    let abort = match raw.abort {
        None => None,
        Some(a) => {
            let ap = at(p, &[key("abort")]);
            let fraction = share(c, &at(&ap, &[key("percent")]), a.percent)?;
            let status = a.status.unwrap_or(503);
            if !(200..=599).contains(&status) {
                c.error(&at(&ap, &[key("status")]), "an HTTP status: 200 to 599");
                return None;
            }
            Some((fraction, status))
        }
    };
    let delay = match raw.delay {
        None => None,
        Some(d) => {
            let dp = at(p, &[key("delay")]);
            let fraction = share(c, &at(&dp, &[key("percent")]), d.percent)?;
            Some((fraction, d.duration.0))
        }
    };
    Some(FaultSettings { abort, delay, allow_header: raw.allow_header.unwrap_or(false) })
}

/// A route's `criticality_by_header`: the class of a request is its header's mapped class —
/// its default and its ceiling (a client may still claim less with `x-spillway-criticality`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CriticalityByHeader {
    /// The header (lower case).
    pub header: String,
    /// Value → class (values compared exactly).
    #[serde(serialize_with = "ser_classes")]
    pub classes: Vec<(String, Criticality)>,
}

fn ser_classes<S: Serializer>(classes: &[(String, Criticality)], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(classes.len()))?;
    for (value, class) in classes {
        map.serialize_entry(value, class.as_str())?;
    }
    map.end()
}

impl CriticalityByHeader {
    /// The class `value` maps to.
    pub fn class_of(&self, value: &[u8]) -> Option<Criticality> {
        self.classes.iter().find(|(v, _)| v.as_bytes() == value).map(|(_, c)| *c)
    }
}

impl RoutePolicyConfig {
    /// Whether the route has any admission policy at all (a route without one pays a branch).
    /// A criticality or maximum other than the defaults is a policy: the class decides who a
    /// cluster or listener limit sheds, and a capped claim is rewritten upstream.
    pub fn is_empty(&self) -> bool {
        self.criticality == Criticality::Critical
            && self.max_criticality == Criticality::CriticalPlus
            && self.criticality_by_header.is_none()
            && self.level.is_none()
            && self.limits.is_empty()
            && self.bbr.is_none()
            && self.budget.is_none()
            && self.bulkhead.is_none()
            && self.slow.is_none()
            && self.fault.is_none()
            && self.fallback.is_none()
            && self.hot_keys.is_none()
            && self.global_limits.is_empty()
    }
}

/// One part of a limit key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyPart {
    /// The client IP (the peer, or from `X-Forwarded-For`/`Forwarded` behind trusted proxies).
    ClientIp,
    /// A request header's value (lower-case name).
    Header(String),
    /// A query parameter's value.
    Query(String),
    /// The request path.
    Path,
    /// One key for the whole route.
    Route,
}

/// What a limit counts by: one part, or several joined (`client_ip+header:x-api-key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LimitKey {
    /// The parts, in order.
    pub parts: Vec<KeyPart>,
    /// As written.
    pub text: String,
}

impl LimitKey {
    /// Whether the whole route shares one counter.
    pub fn is_route(&self) -> bool {
        self.parts == [KeyPart::Route]
    }
}

/// A rate limit's algorithm and parameters, as the core validated them.
#[derive(Debug, Clone, PartialEq)]
pub enum LimitAlgorithm {
    /// Token bucket.
    TokenBucket(TokenBucketConfig),
    /// GCRA.
    Gcra(GcraConfig),
    /// Leaky bucket (requests wait for their slot, up to the config's max wait).
    LeakyBucket(LeakyBucketConfig),
    /// Fixed window.
    FixedWindow(FixedWindowConfig),
    /// Sliding window (several windows, all must admit).
    SlidingWindow(SlidingWindowConfig),
    /// Warm-up (slow start).
    WarmUp(WarmUpConfig),
}

/// One rate limit of a route.
#[derive(Debug, Clone, Serialize)]
pub struct LimitConfig {
    /// Name used in rejection bodies, metrics and the admin API (`name:` or the key).
    pub name: String,
    /// What it counts by.
    pub key: LimitKey,
    /// The algorithm's name.
    pub algorithm_name: &'static str,
    /// The algorithm and its parameters.
    #[serde(skip)]
    pub algorithm: LimitAlgorithm,
    /// The rate as written (`100/s`, or several for a sliding window).
    pub rate: Vec<String>,
    /// The most requests it lets through at once (burst, window limit) — `RateLimit-Limit`.
    pub quota: u64,
    /// Most keys tracked before the idlest are evicted.
    pub max_keys: usize,
    /// Applies only to keys in the route's top K (`hot_keys`) now.
    pub hot_only: bool,
    /// Per-value limits instead of this one (the value as the key reads it), each its own
    /// single bucket of the same algorithm.
    pub overrides: Vec<(String, LimitConfig)>,
}

/// A global limit (`global: true`): shared by every gateway through the quota store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GlobalLimitConfig {
    /// Name (`name:` or the key), part of the store's keys: the same on every gateway.
    pub name: String,
    /// What it counts by.
    pub key: LimitKey,
    /// The rate as written.
    pub rate: String,
    /// Permits per period, for the whole fleet.
    pub permits: u64,
    /// The period.
    #[serde(serialize_with = "ser_duration")]
    pub period: Duration,
    /// Exact or lease, with their settings.
    pub mode: GlobalMode,
    /// While the store is unreachable: `last_lease`, `local_share`, `open`, `closed`.
    pub on_store_failure: &'static str,
}

/// How a global limit uses the store.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GlobalMode {
    /// One atomic store call per request (GCRA), for precise low-volume limits.
    Exact {
        /// Requests let through at once.
        burst: u64,
    },
    /// No store call on the request path: a local bucket enforces this gateway's max-min fair
    /// share, renewed every `refresh`.
    Lease {
        /// How often the share is renewed.
        #[serde(serialize_with = "ser_duration")]
        refresh: Duration,
    },
    /// One fixed-window counter step per request (`INCRBY`, the envoy-ratelimit baseline):
    /// up to the rate's permits per window of its period, windows aligned on the epoch.
    Counter,
}

/// Names accepted for `on_store_failure`.
pub const STORE_FAILURE_NAMES: &[&str] = &["last_lease", "local_share", "open", "closed"];

fn global_limit(
    c: &mut Checker<'_>,
    lp: &[Seg],
    l: RawLimit,
    limit_key: LimitKey,
) -> Option<GlobalLimitConfig> {
    if l.algorithm.is_some() {
        c.error(
            &at(lp, &[key("algorithm")]),
            "global limits take a `mode` (exact, lease or counter), not an `algorithm`",
        );
        return None;
    }
    for (k, given) in [
        ("warm_up", l.warm_up.is_some()),
        ("queue", l.queue.is_some()),
        ("max_wait", l.max_wait.is_some()),
        ("hot_only", l.hot_only.is_some()),
        ("overrides", l.overrides.is_some()),
    ] {
        if given {
            c.error(&at(lp, &[key(k)]), "not for global limits");
            return None;
        }
    }
    let rate = match l.rate {
        Some(RawRates::One(r)) => r,
        Some(RawRates::Many(_)) => {
            c.error(&at(lp, &[key("rate")]), "a global limit has one rate");
            return None;
        }
        None => {
            c.error(lp, "needs `rate` (e.g. 100/1h)");
            return None;
        }
    };
    let (permits, period) = match parse_rate_parts(&rate) {
        Ok(p) => p,
        Err(why) => {
            c.error(&at(lp, &[key("rate")]), why);
            return None;
        }
    };
    let on_store_failure = match l.on_store_failure.as_deref() {
        None => "last_lease",
        Some(name) => match STORE_FAILURE_NAMES.iter().find(|n| **n == name) {
            Some(n) => n,
            None => {
                c.error(
                    &at(lp, &[key("on_store_failure")]),
                    format!("`{name}`: use one of {}", STORE_FAILURE_NAMES.join(", ")),
                );
                return None;
            }
        },
    };
    let mode = match l.mode.as_deref() {
        Some("exact") => {
            if l.refresh.is_some() {
                c.error(&at(lp, &[key("refresh")]), "only `mode: lease` refreshes");
                return None;
            }
            GlobalMode::Exact { burst: l.burst.map_or(permits, u64::from).max(1) }
        }
        Some("lease") => {
            if l.burst.is_some() {
                c.error(&at(lp, &[key("burst")]), "a lease-mode limit has no burst");
                return None;
            }
            let refresh = l.refresh.map_or(Duration::from_secs(1), |d| d.0);
            if refresh.is_zero() {
                c.error(&at(lp, &[key("refresh")]), "must be longer than zero");
                return None;
            }
            GlobalMode::Lease { refresh }
        }
        Some("counter") => {
            let no_burst = "a counter-mode limit has no burst: a window admits the rate's permits";
            for (k, given, why) in [
                ("burst", l.burst.is_some(), no_burst),
                ("refresh", l.refresh.is_some(), "only `mode: lease` refreshes"),
            ] {
                if given {
                    c.error(&at(lp, &[key(k)]), why);
                    return None;
                }
            }
            if !period.subsec_nanos().is_multiple_of(1_000_000) {
                c.error(&at(lp, &[key("rate")]), "a counter-mode window is whole milliseconds");
                return None;
            }
            GlobalMode::Counter
        }
        Some(other) => {
            c.error(
                &at(lp, &[key("mode")]),
                format!("`{other}`: use `exact`, `lease` or `counter`"),
            );
            return None;
        }
        None => {
            c.error(lp, "a global limit needs `mode: exact`, `mode: lease` or `mode: counter`");
            return None;
        }
    };
    Some(GlobalLimitConfig {
        name: l.name.unwrap_or(l.key),
        key: limit_key,
        rate,
        permits,
        period,
        mode,
        on_store_failure,
    })
}

/// BBR settings (listener or route).
#[derive(Debug, Clone, Serialize)]
pub struct BbrSettings {
    /// The core config.
    #[serde(skip)]
    pub config: BbrConfig,
    /// CPU threshold, 0..1.
    pub cpu_threshold: f64,
    /// Statistics window.
    #[serde(serialize_with = "ser_duration")]
    pub window: Duration,
    /// Buckets in the window.
    pub buckets: usize,
    /// Cool-down after the last hot drop.
    #[serde(serialize_with = "ser_duration")]
    pub cooldown: Duration,
}

/// Deadline settings of a route.
#[derive(Debug, Clone, Serialize)]
pub struct DeadlineSettings {
    /// Budget when the request carries none (default: the route timeout).
    #[serde(serialize_with = "ser_duration")]
    pub default: Duration,
    /// Cap on an incoming budget (default: the route timeout).
    #[serde(serialize_with = "ser_duration")]
    pub max: Duration,
    /// Below this remaining budget the gateway answers 504 without calling upstream.
    #[serde(serialize_with = "ser_duration")]
    pub min_remaining: Duration,
    /// Ignore incoming deadline headers.
    pub ignore_incoming: bool,
}

/// A route's cost budget grant.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetSettings {
    /// The header the budget travels in (lower-case).
    pub header: String,
    /// Grant when no rule matches.
    pub default: u64,
    /// `(header, [(value, grant)])`, first match wins.
    pub by_header: Vec<(String, Vec<(String, u64)>)>,
    /// The core grant rule built from them.
    #[serde(skip)]
    pub grant: spillway_core::budget::BudgetGrant,
}

/// How a bulkhead's queue is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueDiscipline {
    /// Strict criticality order, oldest first within a class.
    Fifo,
    /// The same, plus CoDel: a standing queue refuses waiters (`queue_timeout`).
    Codel,
}

/// A bulkhead (route, level or slow pool).
#[derive(Debug, Clone, Serialize)]
pub struct BulkheadSettings {
    /// Requests in flight at most.
    pub max_concurrent: usize,
    /// Requests waiting at most.
    pub queue: usize,
    /// Longest wait in the queue.
    #[serde(serialize_with = "ser_duration")]
    pub max_wait: Duration,
    /// Longest wait per class (by `Criticality::index`, SHEDDABLE first) when some class
    /// waits longer than `max_wait` (`max_wait_by_class`); never shrinking with the class.
    #[serde(skip)]
    pub class_waits: Option<[Duration; 4]>,
    /// How the queue is served.
    pub queue_discipline: QueueDiscipline,
}

impl BulkheadSettings {
    /// The core config.
    pub fn core(&self) -> BulkheadConfig {
        BulkheadConfig::new(self.max_concurrent, self.queue, self.max_wait)
    }
}

/// The fast/slow split of a route.
#[derive(Debug, Clone, Serialize)]
pub struct SlowSettings {
    /// Requests whose declared body is larger than this are slow.
    pub body_over: Option<u64>,
    /// Requests carrying this header are slow (lower-case name).
    pub header: Option<String>,
    /// The slow requests' pool.
    pub bulkhead: BulkheadSettings,
}

/// A cluster's concurrency limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConcurrencySettings {
    /// A fixed number of requests in flight.
    Fixed(u64),
    /// Learned with Netflix's gradient (Gradient2).
    Gradient {
        /// Starting limit.
        initial: u64,
        /// Upper bound.
        max: u64,
    },
    /// Learned with AIMD.
    Aimd {
        /// Starting limit.
        initial: u64,
        /// Upper bound.
        max: u64,
    },
}

/// A cluster's client-side breaker.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerSettings {
    /// Google SRE adaptive throttling.
    Sre {
        /// `K` for CRITICAL traffic (other classes spread around it, see the core).
        k: f64,
        /// The window requests and accepts are counted over.
        #[serde(serialize_with = "ser_duration")]
        window: Duration,
        /// No drop below this many requests in the window.
        min_requests: u64,
        /// The core config.
        #[serde(skip)]
        config: spillway_core::breaker::SreThrottleConfig,
    },
    /// The classic closed / open / half-open breaker.
    StateMachine {
        /// The core config (ratios, counts, window, open time, probes).
        #[serde(skip)]
        config: spillway_core::breaker::CircuitBreakerConfig,
        /// As written, for `/admin/config`.
        summary: String,
    },
}

impl BreakerSettings {
    /// Whether `other` configures the same breaker (a reload keeps its state).
    pub fn same(&self, other: &BreakerSettings) -> bool {
        match (self, other) {
            (BreakerSettings::Sre { config: a, .. }, BreakerSettings::Sre { config: b, .. }) => {
                a == b
            }
            (
                BreakerSettings::StateMachine { config: a, .. },
                BreakerSettings::StateMachine { config: b, .. },
            ) => a == b,
            _ => false,
        }
    }
}

/// Checks a cluster's `breaker:`.
pub(super) fn breaker(
    c: &mut Checker<'_>,
    p: &[Seg],
    raw: super::raw::RawBreaker,
) -> Option<BreakerSettings> {
    use spillway_core::breaker::{
        BreakerWindow, CircuitBreaker, CircuitBreakerConfig, SlowCallTrigger, SreThrottle,
        SreThrottleConfig,
    };
    match (raw.sre, raw.state_machine) {
        (Some(sre), None) => {
            let sp = at(p, &[key("sre")]);
            let defaults = SreThrottleConfig::default();
            let k = sre.k.unwrap_or(2.0);
            let window = sre.window.map_or(defaults.window, |d| d.0);
            let min_requests = sre.min_requests.unwrap_or(defaults.min_requests);
            let config = SreThrottleConfig {
                window,
                min_requests,
                ..SreThrottleConfig::default().with_k(k)
            };
            if let Err(e) = SreThrottle::try_new(config.clone()) {
                c.error(&sp, e.to_string());
                return None;
            }
            Some(BreakerSettings::Sre { k, window, min_requests, config })
        }
        (None, Some(sm)) => {
            let sp = at(p, &[key("state_machine")]);
            let d = CircuitBreakerConfig::default();
            let window = match (sm.calls, sm.window) {
                (Some(_), Some(_)) => {
                    c.error(
                        &sp,
                        "give `calls` (the last N calls) or `window` (a time span), not both",
                    );
                    return None;
                }
                (Some(calls), None) => BreakerWindow::Count { calls },
                (None, Some(ConfigDuration(span))) => BreakerWindow::Time { span, buckets: 10 },
                (None, None) => d.window.clone(),
            };
            let open = sm.open.map_or(d.open_duration, |o| o.0);
            let probes = sm.half_open_probes.unwrap_or(d.half_open_probes);
            let config = CircuitBreakerConfig {
                window,
                failure_ratio: sm.failure_ratio.or(if sm.failure_count.is_some() {
                    None
                } else {
                    d.failure_ratio
                }),
                failure_count: sm.failure_count,
                slow_calls: sm
                    .slow_call
                    .map(|s| SlowCallTrigger { threshold: s.threshold.0, ratio: s.ratio }),
                min_calls: sm.min_calls.unwrap_or(d.min_calls),
                open_duration: open,
                max_open_duration: sm.max_open.map_or(d.max_open_duration.max(open), |m| m.0),
                half_open_probes: probes,
                half_open_successes: sm.half_open_successes.unwrap_or(probes),
                ..d
            };
            if let Err(e) = CircuitBreaker::try_new(config.clone()) {
                c.error(&sp, e.to_string());
                return None;
            }
            let summary = format!("{config:?}");
            Some(BreakerSettings::StateMachine { config, summary })
        }
        _ => {
            c.error(p, "give exactly one of `sre: { … }` and `state_machine: { … }`");
            None
        }
    }
}

/// An IP network (`10.0.0.0/8`, `::1/128`, or a single address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses `addr/prefix` or a bare address.
    pub fn parse(text: &str) -> Result<IpNet, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr =
            addr.trim().parse().map_err(|_| format!("`{text}` is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("`{text}`: the prefix length must be 0 to {max}")),
            },
        };
        Ok(IpNet { addr, prefix })
    }

    /// Whether `ip` is inside (an IPv4-mapped IPv6 address counts as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}/{}", self.addr, self.prefix))
    }
}

/// Parses `100/s`, `1000/1h`, `10/100ms`: permits per period.
pub fn parse_rate(text: &str) -> Result<Rate, String> {
    let (n, period) = parse_rate_parts(text)?;
    Rate::try_new(n, period).map_err(|e| format!("`{text}`: {e}"))
}

/// `parse_rate`'s permits and period, as written.
fn parse_rate_parts(text: &str) -> Result<(u64, Duration), String> {
    let (n, per) = text
        .split_once('/')
        .ok_or_else(|| format!("`{text}` is not a rate: write permits/period, e.g. 100/s"))?;
    let n: u64 = n
        .trim()
        .parse()
        .map_err(|_| format!("`{text}`: `{n}` is not a whole number of permits"))?;
    if n == 0 {
        return Err(format!("`{text}`: a rate of 0 admits nothing (remove the limit instead)"));
    }
    let per = per.trim();
    // `s`, `m`, `h`, `d` alone mean one of them. Days are no duration unit elsewhere in the
    // config, so `d` and `Nd` are read here.
    let days = per.strip_suffix('d').filter(|n| n.bytes().all(|b| b.is_ascii_digit()));
    let period = if let Some(days) = days {
        let n: u64 = if days.is_empty() {
            1
        } else {
            days.parse().map_err(|_| format!("`{text}`: `{days}` is not a number of days"))?
        };
        Duration::from_secs(n.saturating_mul(86_400))
    } else if per.starts_with(|c: char| c.is_ascii_digit()) {
        super::duration::parse_duration(per).map_err(|e| format!("`{text}`: {e}"))?
    } else {
        super::duration::parse_duration(&format!("1{per}")).map_err(|e| format!("`{text}`: {e}"))?
    };
    if period.is_zero() {
        return Err(format!("`{text}`: the period must be longer than zero"));
    }
    Ok((n, period))
}

fn parse_key(text: &str) -> Result<LimitKey, String> {
    let mut parts = Vec::new();
    for part in text.split('+') {
        let part = part.trim();
        let parsed = match part.split_once(':') {
            None if part == "client_ip" => KeyPart::ClientIp,
            None if part == "path" => KeyPart::Path,
            None if part == "route" => KeyPart::Route,
            Some(("header", name)) if http::HeaderName::from_bytes(name.as_bytes()).is_ok() => {
                KeyPart::Header(name.to_ascii_lowercase())
            }
            Some(("query", name)) if !name.is_empty() => KeyPart::Query(name.to_string()),
            _ => {
                return Err(format!(
                    "`{part}` is not a limit key: use client_ip, header:NAME, query:NAME, path, \
                     route, or several joined with `+`"
                ))
            }
        };
        parts.push(parsed);
    }
    if parts.len() > 1 && parts.contains(&KeyPart::Route) {
        return Err(format!("`{text}`: `route` is one key for the whole route; it joins nothing"));
    }
    Ok(LimitKey { parts, text: text.to_string() })
}

/// Checks a route's `limits:`.
pub(super) fn limits(
    c: &mut Checker<'_>,
    p: &[Seg],
    raw: Vec<RawLimit>,
) -> (Vec<LimitConfig>, Vec<GlobalLimitConfig>) {
    let mut out = Vec::new();
    let mut globals = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (i, mut l) in raw.into_iter().enumerate() {
        let lp = at(p, &[Seg::Index(i)]);
        let key_text = l.key.clone();
        let limit_key = match parse_key(&l.key) {
            Ok(k) => k,
            Err(why) => {
                c.error(&at(&lp, &[key("key")]), why);
                continue;
            }
        };
        if l.global == Some(true) {
            if let Some(g) = global_limit(c, &lp, l, limit_key) {
                if !names.insert(g.name.clone()) {
                    c.error(
                        &at(&lp, &[key("name")]),
                        format!("two limits are named `{}`: give one a `name:`", g.name),
                    );
                }
                globals.push(g);
            }
            continue;
        }
        for (k, given) in [
            ("mode", l.mode.is_some()),
            ("refresh", l.refresh.is_some()),
            ("on_store_failure", l.on_store_failure.is_some()),
        ] {
            if given {
                c.error(&at(&lp, &[key(k)]), "only global limits (`global: true`) take it");
            }
        }
        let Some(algorithm_name) = l.algorithm.take() else {
            c.error(&lp, "needs `algorithm` (or `global: true` with a `mode`)");
            continue;
        };
        let l = RawLimit { algorithm: Some(algorithm_name.clone()), ..l };
        let algorithm_text = algorithm_name;
        let rates: Vec<String> = match l.rate {
            None => Vec::new(),
            Some(RawRates::One(r)) => vec![r],
            Some(RawRates::Many(rs)) => rs,
        };
        let algo_path = at(&lp, &[key("algorithm")]);
        if !ALGORITHM_NAMES.contains(&algorithm_text.as_str()) {
            let other = algorithm_text.as_str();
            let hint = nearest(other, ALGORITHM_NAMES)
                .map(|n| format!("; did you mean `{n}`?"))
                .unwrap_or_default();
            c.error(
                &algo_path,
                format!(
                    "unknown algorithm `{other}` (one of {}){hint}",
                    ALGORITHM_NAMES.join(", ")
                ),
            );
            continue;
        }
        let rate_path = at(&lp, &[key("rate")]);
        let mut parsed = Vec::new();
        let mut windows = Vec::new();
        for r in &rates {
            match parse_rate(r).and_then(|rate| Ok((rate, parse_rate_parts(r)?))) {
                Ok((rate, parts)) => {
                    parsed.push(rate);
                    windows.push(parts);
                }
                Err(why) => c.error(&rate_path, why),
            }
        }
        if parsed.len() != rates.len() {
            continue;
        }
        let Some(&first) = parsed.first() else {
            c.error(&lp, "needs `rate` (e.g. 100/s)");
            continue;
        };
        if parsed.len() > 1 && algorithm_text != "sliding_window" {
            c.error(&rate_path, "several rates only make sense for `sliding_window`");
            continue;
        }
        // The burst defaults to one second's worth of the rate (at least 1).
        let default_burst = (first.per_second_f64().ceil() as u64).clamp(1, u64::from(u32::MAX));
        let burst = l.burst.unwrap_or(default_burst as u32);
        let reserve = CriticalityReserve::default();
        let fail = |c: &mut Checker<'_>, why: String| c.error(&lp, why);
        let (algorithm, name, quota): (LimitAlgorithm, &'static str, u64) = match algorithm_text
            .as_str()
        {
            "token_bucket" => match TokenBucketConfig::try_new(first, burst, reserve) {
                Ok(cfg) => (LimitAlgorithm::TokenBucket(cfg), "token_bucket", u64::from(burst)),
                Err(e) => {
                    fail(c, e.to_string());
                    continue;
                }
            },
            "gcra" => match GcraConfig::try_new(first, burst, reserve) {
                Ok(cfg) => (LimitAlgorithm::Gcra(cfg), "gcra", u64::from(burst)),
                Err(e) => {
                    fail(c, e.to_string());
                    continue;
                }
            },
            "leaky_bucket" => {
                // A request waits at most `max_wait`, and at most `queue` requests' worth
                // of pacing: whichever is shorter bounds the queue.
                let max_wait = l.max_wait.map_or(DEFAULT_LEAKY_MAX_WAIT, |d| d.0);
                let by_queue =
                    l.queue.map(|q| first.interval().saturating_mul(q)).unwrap_or(Duration::MAX);
                match LeakyBucketConfig::try_new(first, max_wait.min(by_queue), reserve) {
                    Ok(cfg) => {
                        // What it lets through at once: the requests its queue can pace.
                        let quota = cfg.queue_len();
                        (LimitAlgorithm::LeakyBucket(cfg), "leaky_bucket", quota)
                    }
                    Err(e) => {
                        fail(c, e.to_string());
                        continue;
                    }
                }
            }
            "fixed_window" => {
                let (limit, window) = window_of(windows[0]);
                match FixedWindowConfig::try_new(limit, window, reserve) {
                    Ok(cfg) => (LimitAlgorithm::FixedWindow(cfg), "fixed_window", u64::from(limit)),
                    Err(e) => {
                        fail(c, e.to_string());
                        continue;
                    }
                }
            }
            "sliding_window" => {
                let limits: Vec<WindowLimit> = windows
                    .iter()
                    .map(|w| {
                        let (limit, window) = window_of(*w);
                        WindowLimit::new(limit, window)
                    })
                    .collect();
                let quota = windows.iter().map(|w| window_of(*w).0).min().map_or(0, u64::from);
                match SlidingWindowConfig::try_new(&limits, reserve) {
                    Ok(cfg) => (LimitAlgorithm::SlidingWindow(cfg), "sliding_window", quota),
                    Err(e) => {
                        fail(c, e.to_string());
                        continue;
                    }
                }
            }
            "warm_up" => {
                let Some(ConfigDuration(warm)) = l.warm_up else {
                    c.error(&lp, "`warm_up` needs its period (`warm_up: 30s`)");
                    continue;
                };
                match WarmUpConfig::try_new(first, burst, warm, 3.0, reserve) {
                    Ok(cfg) => (LimitAlgorithm::WarmUp(cfg), "warm_up", u64::from(burst)),
                    Err(e) => {
                        fail(c, e.to_string());
                        continue;
                    }
                }
            }
            other => {
                // Refused above; kept so that a new name cannot be half added.
                c.error(&algo_path, format!("unknown algorithm `{other}`"));
                continue;
            }
        };
        if l.burst.is_some() && !matches!(name, "token_bucket" | "gcra" | "warm_up") {
            c.error(
                &at(&lp, &[key("burst")]),
                format!("`{name}` has no burst (token_bucket, gcra and warm_up have one)"),
            );
            continue;
        }
        if l.warm_up.is_some() && name != "warm_up" {
            c.error(&at(&lp, &[key("warm_up")]), "only `warm_up` limits take a warm-up period");
            continue;
        }
        if (l.queue.is_some() || l.max_wait.is_some()) && name != "leaky_bucket" {
            let which = if l.queue.is_some() { "queue" } else { "max_wait" };
            c.error(
                &at(&lp, &[key(which)]),
                "`queue` and `max_wait` belong to `leaky_bucket` limits",
            );
            continue;
        }
        let max_keys = match l.max_keys {
            Some(0) => {
                c.error(&at(&lp, &[key("max_keys")]), "must be at least 1");
                continue;
            }
            Some(n) => n,
            None => DEFAULT_MAX_KEYS,
        };
        let limit_name = l.name.unwrap_or(key_text);
        if !names.insert(limit_name.clone()) {
            c.error(
                &at(&lp, &[key("name")]),
                format!("two limits are named `{limit_name}`: give one a `name:`"),
            );
        }
        let mut overrides = Vec::new();
        for (value, rate) in l.overrides.unwrap_or_default() {
            let op = at(&lp, &[key("overrides"), key(&value)]);
            if limit_key.parts.len() != 1 || limit_key.is_route() {
                c.error(&op, "overrides need a key of one part (header:, query:, path, client_ip)");
                break;
            }
            let one = RawLimit {
                name: Some(format!("{limit_name}[{value}]")),
                key: "route".into(),
                algorithm: Some(algorithm_text.clone()),
                global: None,
                mode: None,
                refresh: None,
                on_store_failure: None,
                rate: Some(RawRates::One(rate)),
                burst: None,
                warm_up: l.warm_up,
                queue: l.queue,
                max_wait: l.max_wait,
                max_keys: None,
                hot_only: None,
                overrides: None,
            };
            match limits(c, &op, vec![one]).0.pop() {
                Some(cfg) => overrides.push((value, cfg)),
                None => break,
            }
        }
        out.push(LimitConfig {
            name: limit_name,
            key: limit_key,
            algorithm_name: name,
            algorithm,
            rate: rates,
            quota,
            max_keys,
            hot_only: l.hot_only.unwrap_or(false),
            overrides,
        });
    }
    (out, globals)
}

/// A rate as a window limit: `100/1h` is 100 per hour.
fn window_of((permits, period): (u64, Duration)) -> (u32, Duration) {
    (permits.min(u64::from(u32::MAX)) as u32, period)
}

/// Parses a criticality name.
pub(super) fn criticality(
    c: &mut Checker<'_>,
    p: &[Seg],
    raw: Option<String>,
) -> Option<Criticality> {
    let text = raw?;
    match text.parse::<Criticality>() {
        Ok(v) => Some(v),
        Err(_) => {
            c.error(
                p,
                format!(
                    "`{text}` is not a criticality (CRITICAL_PLUS, CRITICAL, SHEDDABLE_PLUS, \
                     SHEDDABLE)"
                ),
            );
            None
        }
    }
}

/// Checks `overload:`.
pub(super) fn overload(
    c: &mut Checker<'_>,
    p: &[Seg],
    raw: Option<RawOverload>,
) -> Option<BbrSettings> {
    let bbr: RawBbr = raw?.bbr?;
    let bp = at(p, &[key("bbr")]);
    let defaults = BbrConfig::default();
    let threshold = bbr.cpu_threshold.unwrap_or(DEFAULT_CPU_THRESHOLD);
    if !(threshold > 0.0 && threshold <= 1.0) {
        c.error(&at(&bp, &[key("cpu_threshold")]), "a fraction of the CPU: above 0, at most 1");
        return None;
    }
    let window = bbr.window.map_or(defaults.window, |d| d.0);
    let buckets = bbr.buckets.unwrap_or(defaults.buckets);
    let cooldown = bbr.cooldown.map_or(defaults.cool_down, |d| d.0);
    let config = BbrConfig {
        window,
        buckets,
        cpu_threshold: CpuUsage::from_permille((threshold * 1000.0).round() as u32),
        cool_down: cooldown,
        class_shares: defaults.class_shares,
    };
    if let Err(e) = spillway_core::overload::BbrLimiter::try_new(config.clone()) {
        c.error(&bp, e.to_string());
        return None;
    }
    Some(BbrSettings { config, cpu_threshold: threshold, window, buckets, cooldown })
}

/// Checks a bulkhead block.
pub(super) fn bulkhead(
    c: &mut Checker<'_>,
    p: &[Seg],
    raw: RawBulkhead,
) -> Option<BulkheadSettings> {
    let queue = raw.queue.unwrap_or(0);
    let max_wait = raw.max_wait.map_or(DEFAULT_BULKHEAD_MAX_WAIT, |d| d.0);
    let discipline = match raw.queue_discipline.as_deref() {
        None | Some("fifo") => QueueDiscipline::Fifo,
        Some("codel") => QueueDiscipline::Codel,
        Some(other) => {
            c.error(
                &at(p, &[key("queue_discipline")]),
                format!("`{other}` is not a queue discipline (fifo, codel)"),
            );
            return None;
        }
    };
    let class_waits = match raw.max_wait_by_class {
        None => None,
        Some(by_class) => {
            let mut waits = [max_wait; 4];
            let wp = at(p, &[key("max_wait_by_class")]);
            let given = [
                (Criticality::Sheddable, by_class.SHEDDABLE),
                (Criticality::SheddablePlus, by_class.SHEDDABLE_PLUS),
                (Criticality::Critical, by_class.CRITICAL),
                (Criticality::CriticalPlus, by_class.CRITICAL_PLUS),
            ];
            for (class, wait) in given {
                match wait {
                    Some(ConfigDuration(w)) if w.is_zero() => {
                        c.error(&at(&wp, &[key(class.as_str())]), "must be greater than zero");
                        return None;
                    }
                    Some(ConfigDuration(w)) => waits[class.index()] = w,
                    None => {}
                }
            }
            if waits.windows(2).any(|w| w[1] < w[0]) {
                c.error(
                    &wp,
                    "a higher class must not give up sooner than a lower one: waits may only \
                     grow from SHEDDABLE to CRITICAL_PLUS (classes not listed wait `max_wait`)",
                );
                return None;
            }
            Some(waits)
        }
    };
    let settings = BulkheadSettings {
        max_concurrent: raw.max_concurrent,
        queue,
        max_wait,
        class_waits,
        queue_discipline: discipline,
    };
    if let Err(e) = spillway_core::bulkhead::Bulkhead::try_new(settings.core()) {
        let at_key = match e {
            spillway_core::bulkhead::BulkheadConfigError::ZeroConcurrency => "max_concurrent",
            _ => "max_wait",
        };
        c.error(&at(p, &[key(at_key)]), e.to_string());
        return None;
    }
    Some(settings)
}

/// Checks `budget:`.
pub(super) fn budget(c: &mut Checker<'_>, p: &[Seg], raw: RawBudget) -> Option<BudgetSettings> {
    let header = raw.header.unwrap_or_else(|| DEFAULT_BUDGET_HEADER.to_string());
    if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
        c.error(&at(p, &[key("header")]), format!("`{header}` is not a header name"));
        return None;
    }
    let mut by_header = Vec::new();
    for (name, values) in raw.grant.by_header.unwrap_or_default() {
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            c.error(
                &at(p, &[key("grant"), key("by_header"), key(&name)]),
                format!("`{name}` is not a header name"),
            );
            continue;
        }
        by_header.push((name.to_ascii_lowercase(), values.into_iter().collect::<Vec<_>>()));
    }
    let mut builder = spillway_core::budget::BudgetGrant::builder(raw.grant.default);
    for (name, values) in &by_header {
        builder = builder.rule(name.as_str(), values.iter().map(|(v, g)| (v.as_str(), *g)));
    }
    let grant = match builder.build() {
        Ok(g) => g,
        Err(e) => {
            c.error(&at(p, &[key("grant")]), e.to_string());
            return None;
        }
    };
    Some(BudgetSettings {
        header: header.to_ascii_lowercase(),
        default: raw.grant.default,
        by_header,
        grant,
    })
}

/// Checks `slow:`.
pub(super) fn slow(c: &mut Checker<'_>, p: &[Seg], raw: RawSlow) -> Option<SlowSettings> {
    let body_over = match raw.body_over {
        None => None,
        Some(size) => Some(byte_size(c, &at(p, &[key("body_over")]), size)?),
    };
    let header = raw.header.map(|h| h.to_ascii_lowercase());
    if let Some(h) = &header {
        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            c.error(&at(p, &[key("header")]), format!("`{h}` is not a header name"));
            return None;
        }
    }
    if body_over.is_none() && header.is_none() {
        c.error(p, "say which requests are slow: `body_over`, `header`, or both");
        return None;
    }
    let bulkhead = bulkhead(c, &at(p, &[key("bulkhead")]), raw.bulkhead)?;
    Some(SlowSettings { body_over, header, bulkhead })
}

/// Checks a cluster's `concurrency:`.
pub(super) fn concurrency(
    c: &mut Checker<'_>,
    p: &[Seg],
    raw: RawConcurrency,
) -> Option<ConcurrencySettings> {
    let max = raw.max.unwrap_or(DEFAULT_CONCURRENCY_MAX);
    let initial = raw.initial.unwrap_or(DEFAULT_CONCURRENCY_INITIAL.min(max));
    match (raw.fixed, raw.adaptive.as_deref()) {
        (Some(_), None) if raw.initial.is_some() || raw.max.is_some() => {
            let which = if raw.initial.is_some() { "initial" } else { "max" };
            c.error(&at(p, &[key(which)]), "a `fixed` limit has no `initial` or `max`");
            None
        }
        (Some(0), None) => {
            c.error(&at(p, &[key("fixed")]), "must be at least 1");
            None
        }
        (Some(n), None) => Some(ConcurrencySettings::Fixed(n)),
        (None, Some(kind)) => {
            if max == 0 {
                c.error(&at(p, &[key("max")]), "must be at least 1");
                return None;
            }
            if initial == 0 || initial > max {
                c.error(&at(p, &[key("initial")]), format!("must be 1 to `max` ({max})"));
                return None;
            }
            match kind {
                "gradient" => Some(ConcurrencySettings::Gradient { initial, max }),
                "aimd" => Some(ConcurrencySettings::Aimd { initial, max }),
                other => {
                    c.error(
                        &at(p, &[key("adaptive")]),
                        format!("`{other}` is not an adaptive limit (gradient, aimd)"),
                    );
                    None
                }
            }
        }
        (Some(_), Some(_)) => {
            c.error(p, "give either `fixed: N` or `adaptive: gradient | aimd`, not both");
            None
        }
        (None, None) => {
            c.error(p, "give either `fixed: N` or `adaptive: gradient | aimd`");
            None
        }
    }
}

/// Checks the top-level `levels:`.
pub(super) fn levels(
    c: &mut Checker<'_>,
    raw: Option<BTreeMap<String, RawBulkhead>>,
) -> Vec<(String, BulkheadSettings)> {
    let mut out = Vec::new();
    for (name, b) in raw.unwrap_or_default() {
        let p = [key("levels"), key(&name)];
        if let Some(settings) = bulkhead(c, &p, b) {
            out.push((name, settings));
        }
    }
    out
}

/// Checks the top-level `trusted_proxies:`.
pub(super) fn trusted_proxies(c: &mut Checker<'_>, raw: Option<Vec<String>>) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (i, text) in raw.unwrap_or_default().iter().enumerate() {
        match IpNet::parse(text) {
            Ok(net) => out.push(net),
            Err(why) => c.error(&[key("trusted_proxies"), Seg::Index(i)], why),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_permits_per_period() {
        assert_eq!(parse_rate("100/s").map(|r| r.per_second_f64()), Ok(100.0));
        assert_eq!(parse_rate("10/100ms").map(|r| r.per_second_f64()), Ok(100.0));
        assert!(parse_rate("1000/1h").is_ok());
        assert_eq!(parse_rate_parts("5/1d"), Ok((5, Duration::from_secs(86_400))));
        assert_eq!(parse_rate_parts("7/d"), Ok((7, Duration::from_secs(86_400))));
        assert_eq!(parse_rate_parts("1/2d"), Ok((1, Duration::from_secs(2 * 86_400))));
        assert!(parse_rate("1/0d").is_err());
        assert!(parse_rate("0/s").unwrap_err().contains("admits nothing"));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("x/s").is_err());
    }

    #[test]
    fn keys_join_parts_and_refuse_unknown_ones() {
        let k = parse_key("client_ip+header:X-Api-Key").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(k.parts, vec![KeyPart::ClientIp, KeyPart::Header("x-api-key".into())]);
        assert!(parse_key("route").is_ok_and(|k| k.is_route()));
        assert!(parse_key("cookie:x").is_err());
        assert!(parse_key("header:").is_err());
        assert!(parse_key("route+path").is_err());
    }

    #[test]
    fn networks_contain_their_addresses() {
        let net = IpNet::parse("10.0.0.0/8").unwrap_or_else(|e| panic!("{e}"));
        assert!(net.contains("10.1.2.3".parse().unwrap_or_else(|_| unreachable!())));
        assert!(!net.contains("11.0.0.1".parse().unwrap_or_else(|_| unreachable!())));
        assert!(net.contains("::ffff:10.0.0.9".parse().unwrap_or_else(|_| unreachable!())));
        let one = IpNet::parse("::1").unwrap_or_else(|e| panic!("{e}"));
        assert!(one.contains("::1".parse().unwrap_or_else(|_| unreachable!())));
        assert!(IpNet::parse("10.0.0.0/33").is_err());
        assert!(IpNet::parse("0.0.0.0/0").is_ok_and(|n| n.contains([1, 2, 3, 4].into())));
    }
}

/// A degradation plan ("预案"): actions applied while it is active.
#[derive(Debug, Clone, Serialize)]
pub struct PlanConfig {
    /// Its name (`POST /admin/plans/{name}/activate`).
    pub name: String,
    /// What it does.
    pub actions: Vec<PlanAction>,
}

/// One action of a plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanAction {
    /// The route it applies to (`None`: every route).
    pub route: Option<String>,
    /// Answer the route with its fallback, without calling upstream.
    pub fallback: bool,
    /// Refuse requests below this class (503 `degraded`).
    #[serde(serialize_with = "ser_opt_criticality")]
    pub shed_below: Option<Criticality>,
}

fn ser_opt_criticality<S: Serializer>(c: &Option<Criticality>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        Some(c) => s.serialize_str(c.as_str()),
        None => s.serialize_none(),
    }
}

/// Checks the top-level `plans:` against the routes (names and their fallbacks).
pub(super) fn plans(
    c: &mut Checker<'_>,
    raw: Option<Vec<super::raw::RawPlan>>,
    routes: &[super::RouteConfig],
) -> Vec<PlanConfig> {
    let mut out: Vec<PlanConfig> = Vec::new();
    for (i, plan) in raw.unwrap_or_default().into_iter().enumerate() {
        let p = [key("plans"), Seg::Index(i)];
        if out.iter().any(|o| o.name == plan.name) {
            c.error(&at(&p, &[key("name")]), format!("plan `{}` is defined twice", plan.name));
            continue;
        }
        let mut actions = Vec::new();
        for (j, a) in plan.actions.into_iter().enumerate() {
            let ap = at(&p, &[key("actions"), Seg::Index(j)]);
            let route = match &a.route {
                Some(name) => match routes.iter().find(|r| &r.name == name) {
                    Some(r) => Some(r),
                    None => {
                        c.error(&at(&ap, &[key("route")]), format!("no route named `{name}`"));
                        continue;
                    }
                },
                None => None,
            };
            let fallback = a.fallback.unwrap_or(false);
            if fallback {
                match route {
                    None => {
                        c.error(&ap, "`fallback: true` needs the `route` whose fallback answers");
                        continue;
                    }
                    Some(r) if r.policy.fallback.is_none() => {
                        c.error(
                            &at(&ap, &[key("fallback")]),
                            format!("route `{}` has no `fallback:` to answer with", r.name),
                        );
                        continue;
                    }
                    Some(_) => {}
                }
            }
            let shed_below = criticality(c, &at(&ap, &[key("shed_below")]), a.shed_below);
            if !fallback && shed_below.is_none() {
                c.error(&ap, "an action needs `fallback: true` or `shed_below: CLASS`");
                continue;
            }
            actions.push(PlanAction { route: a.route, fallback, shed_below });
        }
        out.push(PlanConfig { name: plan.name, actions });
    }
    out
}
