//! Global rate limits for a fleet of Spillway gateways, on Redis — or, with no Redis
//! configured, on an embedded in-process store with the same API.
//!
//! When users outgrow one gateway they run several, and a limit such as "100 requests per
//! hour per user" or "5 000 requests per second to the search API" must then hold for the
//! whole fleet. This crate keeps that shared state in Redis (an existing distributed engine,
//! not a home-made cluster) and offers two modes with different trade-offs, plus a baseline.
//!
//! # Modes
//!
//! **Exact** ([`ExactLimiter`]) — for low-volume, precise limits. Every request runs one
//! atomic Lua script ([`GCRA_SCRIPT`]) on the key's state: GCRA, the generic cell rate
//! algorithm (see [`gcra_step`]). Over any interval of length `t` a key admits at most
//! `burst + t × limit / period` permits (the burst defaults to the limit), whichever instance
//! the requests reach. A local cache remembers keys refused by the store until the store says
//! one permit is free again, and refuses them without a Redis call. The request waits at most
//! the store timeout (default 20 ms).
//!
//! **Lease** ([`LeaseLimiter`]) — for high-volume limits, with no store call on the request
//! path. Each instance (a unique id) enforces, per limit key, its current *grant* with a local
//! token bucket ([`LocalBucket`]). A background refresher, every `refresh` (default 1 s),
//! reports the instance's *demand* — its recently offered rate, admitted and rejected, measured
//! locally ([`DemandMeter`]) — and receives its grant, computed atomically in Redis
//! ([`LEASE_SCRIPT`]) as the max-min fair share of the capacity among the instances whose
//! leases are alive (lease TTL default 5 × refresh), plus an even part of any capacity nobody
//! asked for ([`lease_grants`]). Before its first lease an instance enforces a configured
//! initial share.
//!
//! **Counter** ([`CounterLimiter`]) — the baseline of envoy's ratelimit service, kept to
//! measure the others against: one `INCRBY` per request on a counter per key and fixed window
//! ([`COUNTER_SCRIPT`], twin [`counter_step`]), windows of `period` aligned on the epoch of the
//! store's clock, one key per window (so a window starts from zero exactly at its edge). At most `limit` per window, but up to
//! `2 × limit` across a window edge. Same timeout, over-limit cache and store-failure handling
//! as exact mode.
//!
//! **Criticality**: every mode keeps a [`CriticalityReserve`] per class (default: `SHEDDABLE`
//! leaves the last 25 % of the bucket, `SHEDDABLE_PLUS` the last 10 %, `CRITICAL` and
//! `CRITICAL_PLUS` nothing — default traffic sees the plain algorithm), so as a key nears its
//! limit `SHEDDABLE` is refused first and `CRITICAL_PLUS` has first claim. Exact mode applies
//! it in the script, fleet-wide: class `c` is admitted only if at least `reserve(c)` whole
//! permits of the burst remain after the take (the request carries its class's reserve;
//! [`gcra_step`]), and the over-limit cache remembers, per class, how long each is blocked.
//! Counter mode lets class `c` count only up to `limit − reserve(c)` per window. Lease mode
//! applies it in the local bucket, within the instance's grant; the fleet-wide split itself
//! is by demand, not by class.
//!
//! # Redis key layout
//!
//! One key per limit and key, wrapped in a hash tag so each script touches a single slot and
//! runs unchanged on Redis Cluster (see [`key`]):
//!
//! | key | type | content |
//! |---|---|---|
//! | `{spillway:<limit>:<key>}:gcra` | string | the GCRA theoretical arrival time, µs since the epoch (Redis `TIME`); `PX` until the bucket is full again |
//! | `{spillway:<limit>:<key>}:counter:<window>` | string | the permits counted in window number `<window>` (ms since the epoch / window); `PEXPIREAT` 1 s after the window's end |
//! | `{spillway:<limit>:<key>}:lease` | hash | instance id → `"<demand/s> <lease expiry ms>"`; `PEXPIRE` = lease TTL, refreshed on every report |
//!
//! `%`, `{`, `}` and `:` inside a limit name or key are escaped (`%25`, `%7B`, `%7D`, `%3A`).
//!
//! # Lua scripts' contract
//!
//! All are sent with `EVALSHA` and reloaded on `NOSCRIPT` (`redis::Script::invoke_async`),
//! take exactly one key, and read the server's clock (`TIME`), so instances with skewed
//! clocks agree.
//! - [`GCRA_SCRIPT`]: `ARGV = interval_us, burst, cost, reserve` → `{admitted 0|1, remaining,
//!   retry_after_us (−1: never), reset_after_us, blocked_us}` (for the request's class). Writes only when admitting.
//!   Its Rust twin is [`gcra_step`] (the in-memory store runs it; tests compare the two).
//! - [`COUNTER_SCRIPT`]: `ARGV = limit, window_ms, cost, reserve` → `{admitted 0|1, count,
//!   retry_after_ms (−1: never), reset_after_ms}`. `INCRBY` on `KEYS[1]:<window>` (a key it
//!   names from `TIME`, in `KEYS[1]`'s hash tag and so on its slot: the one undeclared key),
//!   `PEXPIREAT` when it created it, and `DECRBY` when refusing (a refusal counts nothing).
//!   Its twin is [`counter_step`].
//! - [`LEASE_SCRIPT`]: `ARGV = instance, demand/s, capacity/s, ttl_ms` → `{grant (string),
//!   live instances, total demand (string)}`. Drops expired entries, records this instance's
//!   demand and expiry, and computes [`lease_grants`] over the live demands (tests compare
//!   the Lua and Rust results on random inputs through a real Redis).
//!
//! Costs: exact mode, 1 `EVALSHA` per request that is not refused from the cache (plus
//! `TIME`, `GET` and, when admitting, `SET` inside the script); counter mode, the same
//! (plus `TIME`, `INCRBY`, once per window `PEXPIREAT`, and `DECRBY` when refusing); lease mode, 1 `EVALSHA` per
//! key per instance per refresh (plus `TIME`, `HGETALL`, `HSET`, `PEXPIRE`, and `HDEL` when a
//! lease has lapsed), whatever the traffic.
//!
//! # Store failure
//!
//! `on_store_failure` ([`StoreFailurePolicy`]): `last_lease` (default) keeps the last lease
//! until it expires, then enforces `capacity / last known instance count`; `local_share` does
//! the latter at once; `open` admits everything; `closed` refuses everything. Exact and
//! counter mode treat `last_lease` as `local_share`, a local GCRA per key at
//! `limit / fleet_size_hint`. A store
//! call never fails a request: errors and timeouts are answered by the policy. Lease mode
//! notices a failure at the next refresh (within `refresh` + the store timeout); exact mode
//! at the failing request, and then skips the store for a backoff (100 ms doubling to 2 s)
//! before one request probes it again. The Redis connection (`ConnectionManager`) reconnects
//! in the background with exponential backoff (50 ms to 1 s), so recovery is automatic: the
//! first successful refresh (or probe) ends the fallback. State for metrics and the admin
//! endpoint: `store_up()`, `grants()`, `fallback_total()`, the demand in `view()`
//! ([`QuotaView`] and friends, serde-serializable).
//!
//! # What is exact and what is approximate
//!
//! - Exact mode is exact: the bound above holds across the fleet, on the store's clock, as
//!   long as the store answers (a class with a reserve gets less, never more). Requests judged by the fallback are not (each instance then
//!   applies its local share). The over-limit cache only ever refuses what the store would.
//! - Lease mode is approximate: the grants always sum to the capacity, so with steady demand
//!   the fleet admits the capacity (plus at most one local burst per instance); but a grant
//!   follows demand measured up to one refresh earlier, so a shift of traffic between
//!   instances is under-served for up to a few refreshes, and a crashed instance's share
//!   returns to the others only when its lease expires. During a store failure each instance
//!   enforces its last grant or static share, and the fleet total may drift from the capacity
//!   as traffic moves.
//!
//! # Embedded store
//!
//! [`MemoryStore`] implements [`QuotaStore`] in process with the same steps, so a single
//! gateway enforces global limits with no Redis. Limiters sharing one `MemoryStore` share
//! state exactly like instances sharing one Redis.

#![forbid(unsafe_code)]

pub mod bucket;
mod counter;
mod decision;
pub mod demand;
mod error;
mod exact;
mod fair;
pub mod fallback;
mod gcra;
mod guard;
pub mod key;
mod lease;
pub mod store;
mod view;

pub use bucket::{Enforcement, LocalBucket, Take};
pub use counter::{counter_step, CounterLimitConfig, CounterLimiter, CounterOutcome, CounterState};
pub use decision::{LimitMode, QuotaDecision};
pub use demand::DemandMeter;
pub use error::{ConfigError, StoreError};
pub use exact::{ExactLimitConfig, ExactLimiter};
pub use fair::lease_grants;
pub use fallback::{DecisionSource, Lease, LeaseState, StoreFailurePolicy, StoreHealth};
pub use gcra::{gcra_step, GcraOutcome};
pub use lease::{LeaseLimitConfig, LeaseLimiter, RefresherHandle, OVERFLOW_KEY};
pub use spillway_core::rate::CriticalityReserve;
pub use store::{
    CounterReply, CounterRequest, GcraReply, GcraRequest, LeaseReply, LeaseRequest, MemoryStore,
    QuotaStore, RedisStore, RedisStoreConfig, StoreFuture, StoreKind, COUNTER_SCRIPT, GCRA_SCRIPT,
    LEASE_SCRIPT,
};
pub use view::{ExactView, LeaseKeyView, LeaseView, QuotaView};

/// A fleet-unique instance id for lease mode: `<host>-<pid>-<start time in µs, hex>`.
/// Reads the host name from `HOSTNAME` or `/etc/hostname` (start-up only).
pub fn default_instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "spillway".to_owned());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    format!("{host}-{}-{started:x}", std::process::id())
}
