//! The config file as written: serde structs that mirror the YAML one to one.
//!
//! Every struct refuses unknown keys, and every optional setting stays an `Option` here so
//! that validation can tell "left to the default" from "written explicitly" (the inspections
//! warn about defaults that matter, such as a route without a timeout). Numeric settings
//! also accept a string of digits, so that they can come from `${VAR}` (see `env::number`).

use super::duration::ConfigDuration;
use serde::Deserialize;
use std::collections::BTreeMap;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default, deserialize_with = "super::env::number")]
    pub workers: Option<usize>,
    #[serde(default)]
    pub listeners: Vec<RawListener>,
    pub admin: Option<RawAdmin>,
    #[serde(default)]
    pub clusters: Vec<RawCluster>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    pub shutdown: Option<RawShutdown>,
    pub access_log: Option<RawAccessLog>,
    /// Proxies whose `X-Forwarded-For` / `Forwarded` is believed (CIDRs).
    pub trusted_proxies: Option<Vec<String>>,
    /// Isolation pools by name (`L0`, `L1`, …).
    pub levels: Option<BTreeMap<String, RawBulkhead>>,
    /// Degradation plans, switched at run time.
    pub plans: Option<Vec<RawPlan>>,
    /// Directory for state kept across restarts (the active plans).
    pub state_dir: Option<String>,
    /// Where global limits keep their shared state.
    pub quota_store: Option<RawQuotaStore>,
}

/// `quota_store:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuotaStore {
    pub redis: Option<RawRates>,
    pub cluster: Option<bool>,
    pub timeout: Option<ConfigDuration>,
    pub instance: Option<String>,
}

/// One degradation plan.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlan {
    pub name: String,
    pub actions: Vec<RawPlanAction>,
}

/// One action of a plan.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlanAction {
    pub route: Option<String>,
    pub fallback: Option<bool>,
    pub shed_below: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    pub name: String,
    pub address: String,
    pub protocol: Option<String>,
    pub http2_server: Option<String>,
    pub tls: Option<RawTls>,
    pub timeouts: Option<RawListenerTimeouts>,
    pub limits: Option<RawLimits>,
    pub overload: Option<RawOverload>,
    pub ip: Option<RawIpRules>,
}

/// A route's `criticality_by_header: { header, classes }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCriticalityByHeader {
    pub header: String,
    pub classes: BTreeMap<String, String>,
}

/// `ip: { allow, deny }` on a listener or a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIpRules {
    pub allow: Option<Vec<String>>,
    pub deny: Option<Vec<String>>,
}

/// A route's `cors:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    #[serde(default)]
    pub origins: Vec<String>,
    pub methods: Option<Vec<String>>,
    pub headers: Option<Vec<String>>,
    pub expose: Option<Vec<String>>,
    pub credentials: Option<bool>,
    pub max_age: Option<ConfigDuration>,
}

/// A route's `request_limits:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRequestLimits {
    pub max_body: Option<RawSize>,
    #[serde(default, deserialize_with = "super::env::number")]
    pub max_headers: Option<usize>,
    pub max_header_bytes: Option<RawSize>,
    #[serde(default, deserialize_with = "super::env::number")]
    pub max_uri: Option<usize>,
    pub body_timeout: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub cert: String,
    pub key: String,
    pub client_ca: Option<String>,
    pub client_auth: Option<String>,
    pub forward: Option<RawClientCertForward>,
}

/// `tls.forward`: which headers carry the client certificate's names upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientCertForward {
    pub subject: Option<String>,
    pub san: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListenerTimeouts {
    pub header_read: Option<ConfigDuration>,
    pub idle: Option<ConfigDuration>,
}

/// `health_check.grpc:` (the gRPC health checking protocol).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGrpcHealthCheck {
    pub service: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default, deserialize_with = "super::env::number")]
    pub max_header_bytes: Option<usize>,
    #[serde(default, deserialize_with = "super::env::number")]
    pub max_body_bytes: Option<u64>,
    #[serde(default, deserialize_with = "super::env::number")]
    pub max_connections: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub address: String,
    pub token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShutdown {
    pub drain: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    pub path: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    pub name: String,
    #[serde(default)]
    pub endpoints: Vec<RawEndpoint>,
    pub balance: Option<String>,
    pub protocol: Option<String>,
    pub http2_client: Option<String>,
    pub timeouts: Option<RawClusterTimeouts>,
    pub health_check: Option<RawHealthCheck>,
    pub outlier: Option<RawOutlier>,
    pub hash_header: Option<String>,
    pub concurrency: Option<RawConcurrency>,
    pub breaker: Option<RawBreaker>,
    pub gutter: Option<String>,
    pub discovery: Option<RawDiscovery>,
    pub tls: Option<RawUpstreamTls>,
}

/// A cluster's `tls:` (checked in `config::upstream_tls`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUpstreamTls {
    pub ca: Option<String>,
    pub sni: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// A cluster's `discovery:` (`{ file: PATH }` or `{ dns: { name, port, refresh } }`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDiscovery {
    pub file: Option<String>,
    pub dns: Option<RawDns>,
    pub etcd: Option<RawEtcd>,
}

/// `discovery.etcd:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEtcd {
    pub endpoints: Vec<String>,
    pub prefix: String,
}

/// `discovery.dns:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    pub name: String,
    #[serde(deserialize_with = "super::env::required_number")]
    pub port: u16,
    pub refresh: Option<ConfigDuration>,
}

/// A cluster's `breaker:` (`{ sre: { … } }`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub sre: Option<RawSre>,
    pub state_machine: Option<RawStateMachine>,
    pub failure_statuses: Option<Vec<u16>>,
}

/// `breaker.state_machine:` — closed / open / half-open.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStateMachine {
    pub failure_ratio: Option<f64>,
    pub failure_count: Option<u64>,
    pub min_calls: Option<u64>,
    pub window: Option<ConfigDuration>,
    pub calls: Option<u32>,
    pub slow_call: Option<RawSlowCall>,
    pub open: Option<ConfigDuration>,
    pub max_open: Option<ConfigDuration>,
    pub half_open_probes: Option<u32>,
    pub half_open_successes: Option<u32>,
}

/// `state_machine.slow_call:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSlowCall {
    pub threshold: ConfigDuration,
    pub ratio: f64,
}

/// `breaker.sre:` — Google SRE adaptive throttling.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSre {
    pub k: Option<f64>,
    pub window: Option<ConfigDuration>,
    pub min_requests: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEndpoint {
    pub address: String,
    #[serde(default, deserialize_with = "super::env::number")]
    pub weight: Option<u32>,
    pub zone: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClusterTimeouts {
    pub connect: Option<ConfigDuration>,
    pub request: Option<ConfigDuration>,
    pub per_try: Option<ConfigDuration>,
    pub idle: Option<ConfigDuration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub path: Option<String>,
    pub grpc: Option<RawGrpcHealthCheck>,
    pub interval: Option<ConfigDuration>,
    pub timeout: Option<ConfigDuration>,
    #[serde(default, deserialize_with = "super::env::number")]
    pub healthy: Option<u32>,
    #[serde(default, deserialize_with = "super::env::number")]
    pub unhealthy: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutlier {
    #[serde(default, deserialize_with = "super::env::number")]
    pub consecutive_failures: Option<u32>,
    pub base_ejection: Option<ConfigDuration>,
    pub max_ejection: Option<ConfigDuration>,
    #[serde(default, deserialize_with = "super::env::number")]
    pub max_ejected_percent: Option<u32>,
    #[serde(default, deserialize_with = "super::env::number")]
    pub panic_threshold: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: Option<RawMatch>,
    pub cluster: Option<String>,
    pub direct_response: Option<RawDirectResponse>,
    pub rewrite: Option<RawRewrite>,
    pub timeout: Option<ConfigDuration>,
    pub record: Option<RawRecord>,
    pub level: Option<String>,
    pub criticality: Option<String>,
    pub max_criticality: Option<String>,
    pub criticality_by_header: Option<RawCriticalityByHeader>,
    pub limits: Option<Vec<RawLimit>>,
    pub overload: Option<RawOverload>,
    pub deadline: Option<RawDeadline>,
    pub budget: Option<RawBudget>,
    pub bulkhead: Option<RawBulkhead>,
    pub slow: Option<RawSlow>,
    pub fault: Option<RawFault>,
    pub fallback: Option<RawFallback>,
    pub strategy: Option<String>,
    pub retries: Option<RawRetries>,
    pub hedge: Option<RawHedge>,
    pub failback: Option<RawFailback>,
    pub mirror: Option<RawMirror>,
    pub stale_on_error: Option<RawStaleOnError>,
    pub hot_keys: Option<RawHotKeys>,
    pub cache: Option<RawCache>,
    pub ip: Option<RawIpRules>,
    pub auth: Option<spillway_auth::AuthConfig>,
    pub cors: Option<RawCors>,
    pub request_limits: Option<RawRequestLimits>,
}

/// A route's `cache:` (the micro-cache).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub ttl: Option<ConfigDuration>,
    pub max_bytes: Option<RawSize>,
    pub authorized: Option<bool>,
    pub hot_only: Option<bool>,
}

/// A route's `hot_keys:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHotKeys {
    pub key: String,
    #[serde(default, deserialize_with = "super::env::number")]
    pub top: Option<usize>,
    #[serde(default, deserialize_with = "super::env::number")]
    pub capacity: Option<usize>,
    pub half_life: Option<ConfigDuration>,
    #[serde(default, deserialize_with = "super::env::number")]
    pub min_rate: Option<f64>,
}

/// A route's `stale_on_error:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStaleOnError {
    pub max_age: Option<ConfigDuration>,
    pub max_bytes: Option<RawSize>,
}

/// A route's `mirror:` (strategy `failsafe`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMirror {
    pub cluster: String,
    #[serde(default, deserialize_with = "super::env::number")]
    pub percent: Option<f64>,
    pub max_body: Option<RawSize>,
    #[serde(default, deserialize_with = "super::env::number")]
    pub max_in_flight: Option<u32>,
}

/// A route's `failback:` (strategy `failback`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailback {
    pub dir: Option<String>,
    pub max_bytes: Option<RawSize>,
    pub max_age: Option<ConfigDuration>,
    pub max_body: Option<RawSize>,
    pub backoff: Option<RawFailbackBackoff>,
    pub on: Option<Vec<RawRetryOn>>,
}

/// `failback.backoff:` (no jitter: deliveries are spaced by `base` and `max`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFailbackBackoff {
    pub base: Option<ConfigDuration>,
    pub max: Option<ConfigDuration>,
}

/// A route's `hedge:` (strategy `forking`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHedge {
    pub after: Option<String>,
    #[serde(default, deserialize_with = "super::env::number")]
    pub max_extra: Option<u32>,
}

/// A route's `retries:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetries {
    #[serde(default, deserialize_with = "super::env::number")]
    pub attempts: Option<u32>,
    pub per_try_timeout: Option<ConfigDuration>,
    pub on: Option<Vec<RawRetryOn>>,
    pub backoff: Option<RawBackoff>,
    pub budget: Option<RawRetryBudget>,
    pub non_idempotent: Option<bool>,
    pub max_retry_after: Option<ConfigDuration>,
    pub max_body: Option<RawSize>,
}

/// One condition of `retries.on`: a status (`503`) or a name (`connect_failure`).
#[derive(Debug)]
pub enum RawRetryOn {
    Status(u64),
    Name(String),
}

impl<'de> Deserialize<'de> for RawRetryOn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct OnVisitor;
        impl serde::de::Visitor<'_> for OnVisitor {
            type Value = RawRetryOn;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a status such as 503 or a condition such as connect_failure")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RawRetryOn, E> {
                Ok(RawRetryOn::Status(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RawRetryOn, E> {
                Ok(RawRetryOn::Status(v.max(0) as u64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RawRetryOn, E> {
                Ok(RawRetryOn::Name(v.to_string()))
            }
        }
        d.deserialize_any(OnVisitor)
    }
}

/// `retries.backoff:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackoff {
    pub base: Option<ConfigDuration>,
    pub max: Option<ConfigDuration>,
    pub jitter: Option<String>,
}

/// `retries.budget:` settings, or `false` for no budget (`true`: the default budget).
#[derive(Debug)]
pub enum RawRetryBudget {
    Switch(bool),
    Settings(RawRetryBudgetSettings),
}

impl<'de> Deserialize<'de> for RawRetryBudget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BudgetVisitor;
        impl<'de> serde::de::Visitor<'de> for BudgetVisitor {
            type Value = RawRetryBudget;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("`{ ratio, min_per_sec, window }`, or `false` for no budget")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<RawRetryBudget, E> {
                Ok(RawRetryBudget::Switch(v))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<RawRetryBudget, A::Error> {
                let settings = RawRetryBudgetSettings::deserialize(
                    serde::de::value::MapAccessDeserializer::new(map),
                )?;
                Ok(RawRetryBudget::Settings(settings))
            }
        }
        d.deserialize_any(BudgetVisitor)
    }
}

/// `retries.budget: { ratio, min_per_sec, window }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetryBudgetSettings {
    #[serde(default, deserialize_with = "super::env::number")]
    pub ratio: Option<f64>,
    #[serde(default, deserialize_with = "super::env::number")]
    pub min_per_sec: Option<f64>,
    pub window: Option<ConfigDuration>,
}

/// A route's `fallback:` answer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFallback {
    pub status: Option<u16>,
    pub body: Option<String>,
    pub content_type: Option<String>,
    pub on_status: Option<Vec<u16>>,
}

/// A route's `fault:` (drills).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFault {
    pub abort: Option<RawAbort>,
    pub delay: Option<RawDelay>,
    pub allow_header: Option<bool>,
}

/// `fault.abort:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAbort {
    pub percent: Option<f64>,
    pub status: Option<u16>,
}

/// `fault.delay:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDelay {
    pub percent: Option<f64>,
    pub duration: ConfigDuration,
}

/// `overload:` on a listener or a route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOverload {
    pub bbr: Option<RawBbr>,
}

/// `overload.bbr:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBbr {
    #[serde(default, deserialize_with = "super::env::number")]
    pub cpu_threshold: Option<f64>,
    pub window: Option<ConfigDuration>,
    #[serde(default, deserialize_with = "super::env::number")]
    pub buckets: Option<usize>,
    pub cooldown: Option<ConfigDuration>,
}

/// One entry of a route's `limits:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    pub name: Option<String>,
    pub key: String,
    pub algorithm: Option<String>,
    pub global: Option<bool>,
    pub mode: Option<String>,
    pub refresh: Option<ConfigDuration>,
    pub on_store_failure: Option<String>,
    pub rate: Option<RawRates>,
    #[serde(default, deserialize_with = "super::env::number")]
    pub burst: Option<u32>,
    pub warm_up: Option<ConfigDuration>,
    #[serde(default, deserialize_with = "super::env::number")]
    pub queue: Option<u32>,
    pub max_wait: Option<ConfigDuration>,
    #[serde(default, deserialize_with = "super::env::number")]
    pub max_keys: Option<usize>,
    pub hot_only: Option<bool>,
    pub overrides: Option<BTreeMap<String, String>>,
}

/// One rate (`100/s`) or, for a sliding window, several (`[100/1h, 1000/1d]`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawRates {
    One(String),
    Many(Vec<String>),
}

/// A route's `deadline:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDeadline {
    pub default: Option<ConfigDuration>,
    pub max: Option<ConfigDuration>,
    pub min_remaining: Option<ConfigDuration>,
    pub ignore_incoming: Option<bool>,
}

/// A route's `budget:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    pub header: Option<String>,
    pub grant: RawBudgetGrant,
}

/// `budget.grant:`: a default and grants by request header value.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudgetGrant {
    #[serde(deserialize_with = "super::env::required_number")]
    pub default: u64,
    pub by_header: Option<BTreeMap<String, BTreeMap<String, u64>>>,
}

/// A bulkhead: a route's `bulkhead:`, a level's pool, the slow pool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBulkhead {
    #[serde(deserialize_with = "super::env::required_number")]
    pub max_concurrent: usize,
    #[serde(default, deserialize_with = "super::env::number")]
    pub queue: Option<usize>,
    pub max_wait: Option<ConfigDuration>,
    pub max_wait_by_class: Option<RawClassWaits>,
    pub queue_discipline: Option<String>,
}

/// `max_wait_by_class:` — a wait per criticality name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(non_snake_case)]
pub struct RawClassWaits {
    pub CRITICAL_PLUS: Option<ConfigDuration>,
    pub CRITICAL: Option<ConfigDuration>,
    pub SHEDDABLE_PLUS: Option<ConfigDuration>,
    pub SHEDDABLE: Option<ConfigDuration>,
}

/// A route's `slow:` split: which requests are slow, and their own pool.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSlow {
    pub body_over: Option<RawSize>,
    pub header: Option<String>,
    pub bulkhead: RawBulkhead,
}

/// A cluster's `concurrency:` (`{ adaptive: gradient }`, `{ adaptive: aimd }`, `{ fixed: N }`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConcurrency {
    pub adaptive: Option<String>,
    #[serde(default, deserialize_with = "super::env::number")]
    pub fixed: Option<u64>,
    #[serde(default, deserialize_with = "super::env::number")]
    pub initial: Option<u64>,
    #[serde(default, deserialize_with = "super::env::number")]
    pub max: Option<u64>,
}

/// A route's `record:` block (checked in `config::record`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecord {
    pub file: String,
    #[serde(default, deserialize_with = "super::env::number")]
    pub sample: Option<f64>,
    pub max_body: Option<RawSize>,
    pub max_file_bytes: Option<RawSize>,
    #[serde(default, deserialize_with = "super::env::number")]
    pub max_files: Option<usize>,
    pub redact: Option<Vec<String>>,
    pub keep: Option<Vec<String>>,
    #[serde(default, deserialize_with = "super::env::number")]
    pub queue: Option<usize>,
}

/// A byte size: a number of bytes or text with a unit (`4KB`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Bytes(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub host: Option<String>,
    pub path: Option<String>,
    pub path_prefix: Option<String>,
    pub path_regex: Option<String>,
    pub methods: Option<Vec<String>>,
    pub headers: Option<Vec<RawHeaderMatch>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeaderMatch {
    pub name: String,
    pub value: Option<String>,
    pub regex: Option<String>,
    pub present: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDirectResponse {
    #[serde(deserialize_with = "super::env::required_number")]
    pub status: u16,
    pub body: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRewrite {
    pub path_prefix: Option<String>,
    pub host: Option<String>,
}
