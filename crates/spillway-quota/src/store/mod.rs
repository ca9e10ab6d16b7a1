//! Where a global limit's shared state lives: the [`QuotaStore`] trait, with Redis
//! ([`RedisStore`]) and in-process ([`MemoryStore`]) implementations.
//!
//! Why a trait: the limiters are the same whether the state is shared by a fleet through Redis
//! or kept by a single gateway in memory, so a single instance works with no Redis at all.
//! Both implementations run the same three steps — [`crate::gcra_step`], [`crate::counter_step`]
//! and the fleet step over [`crate::lease_grants`] — Redis as Lua scripts, memory as the Rust
//! functions.

mod memory;
mod redis;

pub use self::memory::MemoryStore;
pub use self::redis::{RedisStore, RedisStoreConfig, COUNTER_SCRIPT, GCRA_SCRIPT, LEASE_SCRIPT};

use crate::error::StoreError;
use serde::Serialize;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// The future a store call returns: boxed, so stores can be used as `Arc<dyn QuotaStore>` and
/// chosen at run time from the configuration.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// One exact-mode check: a GCRA step on one key.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct GcraRequest<'a> {
    /// The store key ([`crate::key::gcra_key`]).
    pub key: &'a str,
    /// One permit every this many microseconds (at least 1).
    pub interval_us: u64,
    /// Permits a full bucket holds (at least 1).
    pub burst: u64,
    /// Permits this request takes (at least 1).
    pub cost: u64,
    /// Whole permits the request's class must leave of a full bucket (at most `burst − 1`;
    /// see [`crate::gcra_step`]).
    pub reserve: u64,
}

/// The store's answer to a [`GcraRequest`] (see [`crate::GcraOutcome`], whose fields it carries
/// as durations).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct GcraReply {
    /// The permits were taken.
    pub admitted: bool,
    /// Permits a next request could take.
    pub remaining: u64,
    /// On a rejection, when the same request would be admitted (`None`: never).
    pub retry_after: Option<Duration>,
    /// Time until the key is back to a full burst.
    pub reset_after: Duration,
    /// Time until a single permit can be admitted.
    pub blocked_for: Duration,
}

impl From<crate::GcraOutcome> for GcraReply {
    fn from(o: crate::GcraOutcome) -> GcraReply {
        GcraReply {
            admitted: o.admitted,
            remaining: o.remaining,
            retry_after: o.retry_after_us.map(Duration::from_micros),
            reset_after: Duration::from_micros(o.reset_after_us),
            blocked_for: Duration::from_micros(o.blocked_us),
        }
    }
}

/// One counter-mode check: a fixed-window step on one key ([`crate::counter_step`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CounterRequest<'a> {
    /// The store key ([`crate::key::counter_key`]).
    pub key: &'a str,
    /// Permits per window (at least 1).
    pub limit: u64,
    /// The window in milliseconds (at least 1), aligned on the store clock's origin.
    pub window_ms: u64,
    /// Permits this request takes (at least 1).
    pub cost: u64,
    /// Permits the request's class must leave of the limit (at most `limit − 1`).
    pub reserve: u64,
}

/// The store's answer to a [`CounterRequest`] (see [`crate::CounterOutcome`]).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct CounterReply {
    /// The permits were taken.
    pub admitted: bool,
    /// Permits counted in the current window after this request.
    pub count: u64,
    /// On a rejection, when the same request could be admitted (`None`: never).
    pub retry_after: Option<Duration>,
    /// Time until the window ends.
    pub reset_after: Duration,
}

impl From<crate::CounterOutcome> for CounterReply {
    fn from(o: crate::CounterOutcome) -> CounterReply {
        CounterReply {
            admitted: o.admitted,
            count: o.count,
            retry_after: o.retry_after_ms.map(Duration::from_millis),
            reset_after: Duration::from_millis(o.reset_after_ms),
        }
    }
}

/// One lease refresh: an instance reports its demand for one limit key and asks for its grant.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct LeaseRequest<'a> {
    /// The store key ([`crate::key::lease_key`]).
    pub key: &'a str,
    /// The reporting instance's unique id.
    pub instance: &'a str,
    /// Its recent demand (admitted + rejected), permits per second.
    pub demand: f64,
    /// The limit's capacity for the whole fleet, permits per second.
    pub capacity: f64,
    /// How long the lease (and the reported demand) stays alive without a refresh.
    pub ttl: Duration,
}

/// The store's answer to a [`LeaseRequest`].
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct LeaseReply {
    /// This instance's grant, permits per second.
    pub grant: f64,
    /// Instances with a live lease on the key, this one included.
    pub instances: u32,
    /// The live instances' total demand, permits per second.
    pub total_demand: f64,
}

/// Which kind of store a limiter talks to (for the admin view and metrics labels).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// One Redis server (through a reconnecting `ConnectionManager`).
    Redis,
    /// A Redis Cluster.
    RedisCluster,
    /// The embedded in-process store: state shared only within this process.
    Memory,
}

/// Shared state for global limits. Each call is one atomic step on one key.
pub trait QuotaStore: Send + Sync + fmt::Debug + 'static {
    /// Runs one GCRA step ([`crate::gcra_step`]) on the store's clock.
    fn gcra<'a>(&'a self, request: GcraRequest<'a>) -> StoreFuture<'a, GcraReply>;

    /// Runs one fixed-window counter step ([`crate::counter_step`]) on the store's clock.
    fn counter<'a>(&'a self, request: CounterRequest<'a>) -> StoreFuture<'a, CounterReply>;

    /// Records the instance's demand, drops expired leases, and returns the instance's grant:
    /// [`crate::lease_grants`] of the capacity over the live instances' demands.
    fn lease<'a>(&'a self, request: LeaseRequest<'a>) -> StoreFuture<'a, LeaseReply>;

    /// What kind of store this is.
    fn kind(&self) -> StoreKind;
}
