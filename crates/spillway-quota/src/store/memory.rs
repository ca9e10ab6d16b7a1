//! The embedded quota store: the same steps as the Redis scripts, on state kept in this
//! process, so global limits work on a single gateway with no Redis configured.
//!
//! Why it exists: a gateway that declares a global limit must start and enforce it without
//! extra infrastructure. Limiters sharing one `MemoryStore` share its state exactly as
//! instances sharing one Redis do (which also makes the lease logic testable with a manual
//! clock).

use super::{
    CounterReply, CounterRequest, GcraReply, GcraRequest, LeaseReply, LeaseRequest, QuotaStore,
    StoreFuture, StoreKind,
};
use crate::counter::{counter_step, CounterState};
use crate::fair::lease_grants;
use crate::gcra::gcra_step;
use parking_lot::Mutex;
use spillway_core::clock::duration_nanos;
use spillway_core::{Clock, SystemClock};
use std::collections::HashMap;
use std::sync::Arc;

/// Sweep expired keys after this many writes, so idle keys do not accumulate.
const SWEEP_EVERY: u32 = 4096;

/// An in-process [`QuotaStore`].
#[derive(Debug)]
pub struct MemoryStore {
    clock: Arc<dyn Clock>,
    gcra: Mutex<GcraTable>,
    counters: Mutex<CounterTable>,
    leases: Mutex<LeaseTable>,
}

#[derive(Debug, Default)]
struct CounterTable {
    /// Key → its window and count.
    counts: HashMap<String, CounterState>,
    writes: u32,
}

#[derive(Debug, Default)]
struct LeaseTable {
    fleets: HashMap<String, Fleet>,
    writes: u32,
}

#[derive(Debug, Default)]
struct GcraTable {
    /// Key → TAT in µs of the store clock.
    tats: HashMap<String, u64>,
    writes: u32,
}

/// One limit key's fleet: instance id → (demand per second, lease expiry in ms).
type Fleet = HashMap<String, (f64, u64)>;

impl MemoryStore {
    /// A store on the process's monotonic clock.
    pub fn new() -> MemoryStore {
        MemoryStore::with_clock(Arc::new(SystemClock::new()))
    }

    /// A store on `clock` (a [`spillway_core::ManualClock`] in tests).
    pub fn with_clock(clock: Arc<dyn Clock>) -> MemoryStore {
        MemoryStore {
            clock,
            gcra: Mutex::default(),
            counters: Mutex::default(),
            leases: Mutex::default(),
        }
    }

    fn now_us(&self) -> u64 {
        self.clock.now().as_nanos() / 1_000
    }

    fn gcra_now(&self, request: GcraRequest<'_>) -> GcraReply {
        let now = self.now_us();
        let mut table = self.gcra.lock();
        let tat = table.tats.get(request.key).copied();
        let (outcome, next) =
            gcra_step(tat, now, request.interval_us, request.burst, request.cost, request.reserve);
        if let Some(next) = next {
            match table.tats.get_mut(request.key) {
                Some(slot) => *slot = next,
                None => {
                    table.tats.insert(request.key.to_owned(), next);
                }
            }
            table.writes += 1;
            if table.writes >= SWEEP_EVERY {
                table.writes = 0;
                // A TAT in the past is a full bucket: the same as no entry.
                table.tats.retain(|_, tat| *tat > now);
            }
        }
        outcome.into()
    }

    fn counter_now(&self, request: CounterRequest<'_>) -> CounterReply {
        let now_ms = self.now_us() / 1_000;
        let mut table = self.counters.lock();
        let state = table.counts.get(request.key).copied();
        let (outcome, next) = counter_step(
            state,
            now_ms,
            request.window_ms,
            request.limit,
            request.cost,
            request.reserve,
        );
        if let Some(next) = next {
            match table.counts.get_mut(request.key) {
                Some(slot) => *slot = next,
                None => {
                    table.counts.insert(request.key.to_owned(), next);
                }
            }
            table.writes += 1;
            if table.writes >= SWEEP_EVERY {
                table.writes = 0;
                // A count of an earlier window is the same as no entry (Redis expires it).
                let window = request.window_ms.max(1);
                table.counts.retain(|_, s| s.window >= now_ms / window);
            }
        }
        outcome.into()
    }

    fn lease_now(&self, request: LeaseRequest<'_>) -> LeaseReply {
        let now_ms = self.now_us() / 1_000;
        let ttl_ms = (duration_nanos(request.ttl) / 1_000_000).max(1);
        let mut leases = self.leases.lock();
        let reply = match leases.fleets.get_mut(request.key) {
            Some(fleet) => fleet_step(fleet, request, ttl_ms, now_ms),
            None => {
                let mut fleet = Fleet::new();
                let reply = fleet_step(&mut fleet, request, ttl_ms, now_ms);
                leases.fleets.insert(request.key.to_owned(), fleet);
                reply
            }
        };
        leases.writes += 1;
        if leases.writes >= SWEEP_EVERY {
            leases.writes = 0;
            // Forget keys whose every lease has lapsed (Redis does it with PEXPIRE).
            leases.fleets.retain(|_, fleet| fleet.values().any(|&(_, expiry)| expiry > now_ms));
        }
        reply
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

/// `lua/lease.lua` over an in-memory fleet: drop expired leases, record this instance's
/// demand, return its grant among the live instances.
fn fleet_step(
    fleet: &mut Fleet,
    request: LeaseRequest<'_>,
    ttl_ms: u64,
    now_ms: u64,
) -> LeaseReply {
    fleet.retain(|id, &mut (_, expiry)| id == request.instance || expiry > now_ms);
    let demand =
        if request.demand.is_finite() && request.demand > 0.0 { request.demand } else { 0.0 };
    match fleet.get_mut(request.instance) {
        Some(entry) => *entry = (demand, now_ms + ttl_ms),
        None => {
            fleet.insert(request.instance.to_owned(), (demand, now_ms + ttl_ms));
        }
    }
    let mut demands = Vec::with_capacity(fleet.len());
    let mut mine = 0;
    for (id, &(want, _)) in fleet.iter() {
        if id == request.instance {
            mine = demands.len();
        }
        demands.push(want);
    }
    let grants = lease_grants(request.capacity, &demands);
    LeaseReply {
        grant: grants.get(mine).copied().unwrap_or(0.0),
        instances: u32::try_from(demands.len()).unwrap_or(u32::MAX),
        total_demand: demands.iter().sum(),
    }
}

impl QuotaStore for MemoryStore {
    fn gcra<'a>(&'a self, request: GcraRequest<'a>) -> StoreFuture<'a, GcraReply> {
        let reply = self.gcra_now(request);
        Box::pin(async move { Ok(reply) })
    }

    fn counter<'a>(&'a self, request: CounterRequest<'a>) -> StoreFuture<'a, CounterReply> {
        let reply = self.counter_now(request);
        Box::pin(async move { Ok(reply) })
    }

    fn lease<'a>(&'a self, request: LeaseRequest<'a>) -> StoreFuture<'a, LeaseReply> {
        let reply = self.lease_now(request);
        Box::pin(async move { Ok(reply) })
    }

    fn kind(&self) -> StoreKind {
        StoreKind::Memory
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_core::ManualClock;
    use std::time::Duration;

    fn lease<'a>(instance: &'a str, demand: f64) -> LeaseRequest<'a> {
        LeaseRequest { key: "k", instance, demand, capacity: 900.0, ttl: Duration::from_secs(5) }
    }

    #[tokio::test]
    async fn live_instances_share_by_max_min_and_expired_ones_are_dropped() {
        let clock = ManualClock::new();
        let store = MemoryStore::with_clock(Arc::new(clock.clone()));
        store.lease(lease("a", 2000.0)).await.unwrap();
        store.lease(lease("b", 100.0)).await.unwrap();
        let a = store.lease(lease("a", 2000.0)).await.unwrap();
        assert_eq!((a.grant, a.instances, a.total_demand), (800.0, 2, 2100.0));
        clock.advance(Duration::from_secs(6)); // b's lease lapses
        let a = store.lease(lease("a", 2000.0)).await.unwrap();
        assert_eq!((a.grant, a.instances), (900.0, 1));
    }

    #[tokio::test]
    async fn gcra_keys_share_one_bucket_across_callers() {
        let store = MemoryStore::with_clock(Arc::new(ManualClock::new()));
        let req = GcraRequest { key: "g", interval_us: 1_000_000, burst: 3, cost: 1, reserve: 0 };
        let mut admitted = 0;
        for _ in 0..10 {
            if store.gcra(req).await.unwrap().admitted {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 3);
        let refused = store.gcra(req).await.unwrap();
        assert_eq!(refused.retry_after, Some(Duration::from_secs(1)));
        assert_eq!(refused.blocked_for, Duration::from_secs(1));
    }
}
