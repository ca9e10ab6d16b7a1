//! Per-route request counters and latency histogram, one cache-line-aligned shard per worker.
//!
//! Next to the router because a compiled [`Route`](super::Route) owns its stats (carried
//! across reloads by route name); each worker writes only its own shard (relaxed atomics, no
//! contention) and the admin API's `/metrics` sums the shards at scrape time.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Upper bounds (seconds) of the request-duration histogram buckets.
pub const BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

const CODES: usize = 500; // status 100..=599

/// gRPC status codes counted: OK (0) to UNAUTHENTICATED (16); any other counts as UNKNOWN.
pub const GRPC_CODES: usize = 17;
const GRPC_UNKNOWN: usize = 2;

/// One worker's counters for one route.
#[repr(align(64))]
#[derive(Debug)]
struct Shard {
    codes: Box<[AtomicU64]>,
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

/// One worker's gRPC calls of one route, by the status they ended with. Reference-counted on
/// its own: a call whose status comes in its trailers holds its worker's counts until then
/// ([`GrpcCounter`]), and a count shared by all workers would have them write one cache line.
#[repr(align(64))]
#[derive(Debug, Default)]
struct GrpcCounts([AtomicU64; GRPC_CODES]);

impl GrpcCounts {
    fn record(&self, code: u32) {
        let code = usize::try_from(code).ok().filter(|&c| c < GRPC_CODES).unwrap_or(GRPC_UNKNOWN);
        self.0[code].fetch_add(1, Relaxed);
    }
}

/// Where one worker counts a route's gRPC calls whose status is still to come.
#[derive(Debug, Clone)]
pub struct GrpcCounter(Arc<GrpcCounts>);

impl GrpcCounter {
    /// Counts one call that ended with status `code` (any beyond 16 as UNKNOWN).
    pub fn record(&self, code: u32) {
        self.0.record(code);
    }
}

impl Shard {
    fn new() -> Shard {
        Shard {
            codes: (0..CODES).map(|_| AtomicU64::new(0)).collect(),
            buckets: Default::default(),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// Counters and latency histogram of one route, sharded per worker.
#[derive(Debug)]
pub struct RouteStats {
    /// Route name (label).
    pub route: String,
    /// Cluster name (label; empty for direct responses).
    pub cluster: String,
    shards: Box<[Shard]>,
    grpc: Box<[Arc<GrpcCounts>]>,
}

impl RouteStats {
    /// Stats for `route` with one shard per worker.
    pub fn new(route: &str, cluster: &str, workers: usize) -> RouteStats {
        RouteStats {
            route: route.to_string(),
            cluster: cluster.to_string(),
            shards: (0..workers.max(1)).map(|_| Shard::new()).collect(),
            grpc: (0..workers.max(1)).map(|_| Arc::default()).collect(),
        }
    }

    /// Number of worker shards.
    pub fn workers(&self) -> usize {
        self.shards.len()
    }

    /// Records one request answered with `status` after `elapsed`, on worker `worker`.
    #[inline]
    pub fn record(&self, worker: usize, status: u16, elapsed: Duration) {
        let shard = &self.shards[worker % self.shards.len()];
        let code = (status as usize).clamp(100, 599) - 100;
        shard.codes[code].fetch_add(1, Relaxed);
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(BUCKETS.len());
        shard.buckets[bucket].fetch_add(1, Relaxed);
        shard.sum_us.fetch_add(elapsed.as_micros() as u64, Relaxed);
    }

    /// Records one gRPC call that ended with status `code`, on worker `worker`.
    #[inline]
    pub fn record_grpc(&self, worker: usize, code: u32) {
        self.grpc[worker % self.grpc.len()].record(code);
    }

    /// Worker `worker`'s counter of gRPC calls, for a call whose status is still to come.
    pub fn grpc_counter(&self, worker: usize) -> GrpcCounter {
        GrpcCounter(self.grpc[worker % self.grpc.len()].clone())
    }

    /// gRPC calls that ended with status `code` (0 to 16), over all workers.
    pub fn grpc_count(&self, code: usize) -> u64 {
        self.grpc.iter().map(|g| g.0.get(code).map_or(0, |c| c.load(Relaxed))).sum()
    }

    /// Requests answered with `status`, over all workers.
    pub fn count(&self, status: u16) -> u64 {
        let code = (status as usize).clamp(100, 599) - 100;
        self.shards.iter().map(|s| s.codes[code].load(Relaxed)).sum()
    }

    /// Requests whose duration fell in histogram bucket `i` (`BUCKETS.len()` is the `+Inf`
    /// bucket), over all workers.
    pub fn bucket_count(&self, i: usize) -> u64 {
        self.shards.iter().map(|s| s.buckets[i].load(Relaxed)).sum()
    }

    /// Sum of the recorded durations in microseconds, over all workers.
    pub fn sum_micros(&self) -> u64 {
        self.shards.iter().map(|s| s.sum_us.load(Relaxed)).sum()
    }
}
