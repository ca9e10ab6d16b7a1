//! The `/admin/stream` snapshot as `spillway top` reads it: the subset of the gateway's JSON
//! that the terminal view shows.
//!
//! Every field has a default and unknown fields are ignored, so a gateway that sends more (or a
//! feature that is not configured, sent as `null`) still reads; the field names are those of
//! `spillway_gateway::admin::stream::snapshot` and `Policies::view`.

use serde::Deserialize;

/// One snapshot: counters since the gateway started, and gauges now.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Snapshot {
    /// Wall-clock time of the snapshot at the gateway, milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// The config generation (1 at start, one more per reload).
    pub generation: u64,
    /// Upper bounds of the latency buckets, seconds; `latency_buckets` has one more (overflow).
    pub latency_bucket_bounds_s: Vec<f64>,
    /// Per route: answers and latency.
    pub routes: Vec<RouteCounters>,
    /// Admission and resilience state (`/admin/policies`).
    pub policies: Policies,
    /// Clusters and their endpoints (`/admin/clusters`).
    pub clusters: Vec<Cluster>,
    /// The hottest keys of routes with `hot_keys`.
    pub hot_keys: Vec<HotKeys>,
    /// Failback queue depths.
    pub failback: Vec<FailbackQueue>,
    /// Degradation plans.
    pub plans: Plans,
    /// CPU usage, 0..1.
    pub cpu: f64,
}

/// A route's counters.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RouteCounters {
    /// Route name.
    pub route: String,
    /// Answers by status class.
    pub answers: Answers,
    /// Requests per latency bucket (not cumulative), the last one above every bound.
    pub latency_buckets: Vec<u64>,
}

/// Answers by status class.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Answers {
    /// 2xx answers.
    #[serde(rename = "2xx")]
    pub success: u64,
    /// 3xx answers.
    #[serde(rename = "3xx")]
    pub redirect: u64,
    /// 4xx answers (a gateway's 429 included).
    #[serde(rename = "4xx")]
    pub client_error: u64,
    /// 5xx answers (a gateway's 503/504 refusals included).
    #[serde(rename = "5xx")]
    pub server_error: u64,
}

impl Answers {
    /// Every answer.
    pub fn total(&self) -> u64 {
        self.success + self.redirect + self.client_error + self.server_error
    }
}

/// The `/admin/policies` document.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Policies {
    /// Per route.
    pub routes: Vec<RoutePolicy>,
    /// Per cluster.
    pub clusters: Vec<ClusterPolicy>,
    /// Per listener.
    pub listeners: Vec<ListenerPolicy>,
    /// Isolation level pools.
    pub levels: Vec<Pool>,
}

/// A route's admission and resilience state.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RoutePolicy {
    /// Route name.
    pub route: String,
    /// The route's own BBR limiter.
    pub bbr: Option<Bbr>,
    /// The route's own bulkhead.
    pub bulkhead: Option<Pool>,
    /// Its local rate limits.
    pub limits: Vec<Limit>,
    /// Refusals so far by reason and criticality.
    pub rejections: Vec<Rejection>,
    /// Retry settings and counters.
    pub retries: Option<Retries>,
}

/// A local rate limit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Limit {
    /// Its name (the key when not named).
    pub name: String,
    /// Its rates (`100/s`; a sliding window may have several).
    pub rate: Vec<String>,
    /// Keys it tracks now.
    pub keys: u64,
}

/// Refusals of one reason and criticality.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Rejection {
    /// Why (`rate_limited`, `overloaded`, ...).
    pub reason: String,
    /// The request's criticality.
    pub criticality: String,
    /// How many so far.
    pub count: u64,
}

/// A route's retries.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Retries {
    /// Counters.
    pub state: RetryState,
}

/// A route's retry counters and budget.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RetryState {
    /// Retries made so far.
    pub retries: u64,
    /// Retries refused because the budget was spent.
    pub budget_exhausted: u64,
    /// Retries the budget allows now (none without a budget).
    pub budget_balance: Option<f64>,
    /// Hedges whose answer was used (forking routes only).
    pub hedges_won: Option<u64>,
    /// Hedges cancelled (forking routes only).
    pub hedges_lost: Option<u64>,
}

/// A BBR limiter now.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Bbr {
    /// Requests in flight through it.
    pub in_flight: u64,
    /// Its estimate maxPass × minRT.
    pub max_in_flight: u64,
    /// Whether it is shedding.
    pub dropping: bool,
}

/// A pool (level, bulkhead) now.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Pool {
    /// `level:NAME`, `route:NAME`...
    pub name: String,
    /// Slots.
    pub max_concurrent: u64,
    /// Slots in use.
    pub in_use: u64,
    /// Queue bound.
    pub queue: u64,
    /// Waiting now.
    pub queued: u64,
    /// Waiters CoDel refused so far.
    pub codel_drops: u64,
}

/// A cluster's breaker and concurrency limit.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ClusterPolicy {
    /// Cluster name.
    pub cluster: String,
    /// Its breaker.
    pub breaker: Option<Breaker>,
    /// Its concurrency limit.
    pub concurrency: Option<Concurrency>,
}

/// A breaker now.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Breaker {
    /// `sre` or `state_machine`.
    pub kind: String,
    /// The state machine's state (`closed`, `open`, `half_open`).
    pub state: Option<String>,
    /// The state machine's trips so far.
    pub trips: Option<u64>,
    /// Requests in the window.
    pub requests: u64,
    /// Of which the backend accepted.
    pub accepts: u64,
    /// The drop probability of a CRITICAL request now.
    pub drop_probability: f64,
}

/// A cluster's concurrency limit now.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Concurrency {
    /// Requests in flight under it.
    pub in_flight: u64,
    /// The limit (fixed or learned).
    pub limit: u64,
}

/// A listener's BBR limiter.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ListenerPolicy {
    /// Listener name.
    pub listener: String,
    /// Its BBR limiter.
    pub bbr: Option<Bbr>,
}

/// A cluster's endpoints.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Cluster {
    /// Cluster name.
    pub name: String,
    /// Its endpoints.
    pub endpoints: Vec<Endpoint>,
}

/// An endpoint now.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Endpoint {
    /// IP:port.
    pub address: String,
    /// Whether health checks pass.
    pub healthy: bool,
    /// How long it stays ejected, when it is.
    pub ejected_for_ms: Option<u64>,
    /// Requests in flight to it.
    pub in_flight: u64,
}

impl Endpoint {
    /// Whether it may receive requests (healthy and not ejected).
    pub fn available(&self) -> bool {
        self.healthy && self.ejected_for_ms.is_none()
    }
}

/// A route's hottest keys.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HotKeys {
    /// Route name.
    pub route: String,
    /// Hottest first.
    pub top: Vec<HotKey>,
}

/// One hot key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct HotKey {
    /// The key.
    pub key: String,
    /// Requests per second now.
    pub rate_per_sec: f64,
}

/// A failback queue's depth.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FailbackQueue {
    /// Route name.
    pub route: String,
    /// Requests waiting.
    pub depth: u64,
}

/// The degradation plans.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Plans {
    /// Every configured plan.
    pub plans: Vec<Plan>,
}

/// A degradation plan.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Plan {
    /// Plan name.
    pub name: String,
    /// Whether it is switched on.
    pub active: bool,
}
