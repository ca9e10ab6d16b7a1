//! Serde-serializable snapshots of the global limits for the admin endpoint
//! (`GET /admin/quotas`) and for metrics.
//!
//! Why snapshots: the admin API renders them as JSON and the metrics exporter reads the same
//! numbers (`store_up`, each key's grant, `fallback_total`), so both show one truth.

use crate::decision::LimitMode;
use crate::fallback::{DecisionSource, StoreFailurePolicy};
use crate::store::StoreKind;
use serde::Serialize;

/// Every global limit of a gateway.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct QuotaView {
    /// Exact-mode and counter-mode limits.
    pub exact: Vec<ExactView>,
    /// Lease-mode limits.
    pub lease: Vec<LeaseView>,
}

/// One limit judged by the store on every request: exact mode, or counter mode (whose burst
/// is its limit).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ExactView {
    /// The limit's name.
    pub name: String,
    /// `exact` or `counter`.
    pub mode: LimitMode,
    /// Permits per period.
    pub limit: u64,
    /// The period, in milliseconds.
    pub period_ms: u64,
    /// Permits a key may take at once.
    pub burst: u64,
    /// The store's kind.
    pub store: StoreKind,
    /// The last store call succeeded.
    pub store_up: bool,
    /// The configured store-failure policy.
    pub on_store_failure: StoreFailurePolicy,
    /// Times the store became unreachable.
    pub fallback_total: u64,
    /// Requests judged by the policy.
    pub fallback_decisions: u64,
    /// Keys currently cached as over their limit.
    pub over_limit_keys: usize,
    /// Requests refused from the over-limit cache.
    pub cache_hits: u64,
    /// The last store error, if any.
    pub last_error: Option<String>,
}

/// One lease-mode limit on this instance.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LeaseView {
    /// The limit's name.
    pub name: String,
    /// This instance's id in the store.
    pub instance: String,
    /// Permits per period for the fleet, per key.
    pub capacity: u64,
    /// The period, in milliseconds.
    pub period_ms: u64,
    /// The capacity in permits per second.
    pub capacity_per_second: f64,
    /// The refresh interval, in milliseconds.
    pub refresh_ms: u64,
    /// The lease TTL, in milliseconds.
    pub lease_ttl_ms: u64,
    /// The store's kind.
    pub store: StoreKind,
    /// The last refresh round succeeded.
    pub store_up: bool,
    /// The configured store-failure policy.
    pub on_store_failure: StoreFailurePolicy,
    /// Times a key entered a fallback period.
    pub fallback_total: u64,
    /// Requests judged under the fallback policy.
    pub fallback_decisions: u64,
    /// The last store error, if any.
    pub last_error: Option<String>,
    /// The tracked keys, sorted.
    pub keys: Vec<LeaseKeyView>,
}

/// One key of a lease-mode limit on this instance.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LeaseKeyView {
    /// The key.
    pub key: String,
    /// The rate the local bucket enforces, permits per second (`None` when open or closed).
    pub enforced_rate: Option<f64>,
    /// Everything is admitted (fail-open fallback).
    pub open: bool,
    /// Where the enforced rate comes from.
    pub source: DecisionSource,
    /// This instance's measured demand, permits per second (`None` before the first
    /// measurement).
    pub demand: Option<f64>,
    /// The last grant received, permits per second.
    pub grant: Option<f64>,
    /// Live instances at the last grant.
    pub instances: Option<u32>,
    /// The fleet's total demand at the last grant, permits per second.
    pub fleet_demand: Option<f64>,
    /// Time left on the last lease (0 once lapsed).
    pub lease_expires_in_ms: Option<u64>,
}
