//! The per-thread [`Worker`]: one per worker thread, owning that thread's choosers, upstream
//! pool, lean-path resources and cached config snapshot.
//!
//! Everything a request touches lives here or in relaxed atomics, so the request path takes
//! no lock and shares nothing mutable between workers.

use crate::state::{Shared, Snapshot};
use crate::upstream::h1_client::SocketHome;
use crate::upstream::pool::Pool;
use arc_swap::Cache;
use http::HeaderValue;
use spillway_core::balance::{AnyBalancer, Balancer, EndpointSpec, PickContext};
use spillway_core::random::splitmix64;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

type SnapshotCache = Cache<Arc<arc_swap::ArcSwap<Snapshot>>, Arc<Snapshot>>;

/// One worker thread's view of the gateway.
// `Rc<Arc<Snapshot>>` is deliberate: cloning the `Rc` per request is a plain increment, while
// cloning the `Arc` would bounce one shared cache line between all workers.
#[allow(clippy::redundant_allocation)]
pub struct Worker {
    /// Worker index (selects metric shards).
    pub id: usize,
    /// Shared state.
    pub shared: Arc<Shared>,
    /// This worker's upstream connections.
    pub pool: Rc<Pool>,
    /// The lean path's idle upstream sockets, as the hyper path's HTTP/1.1 client takes them.
    pub sockets: SocketHome,
    /// Resources of the lean HTTP/1.1 path.
    pub lean: crate::listen::h1::LeanLocal,
    cache: RefCell<(SnapshotCache, Rc<Arc<Snapshot>>)>,
    request_ids: Cell<u64>,
    id_prefix: u64,
    /// `id_prefix` in hex, then room for the per-request half.
    id_prefix_hex: [u8; 32],
    balancers: RefCell<(u64, Vec<AnyBalancer>)>,
    random: Cell<u64>,
}

/// Clusters up to this size pick from a stack-allocated eligible list.
pub const MAX_PICK_ENDPOINTS: usize = 64;

impl Worker {
    /// A worker over `shared`.
    pub fn new(id: usize, shared: Arc<Shared>) -> Worker {
        let mut cache = Cache::new(shared.snapshot.clone());
        let current = Rc::new(cache.load().clone());
        // A per-process, per-worker prefix keeps request ids unique without coordination.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let id_prefix = splitmix64(seed ^ ((id as u64) << 56) ^ u64::from(std::process::id()));
        let pool = Rc::new(Pool::with_clock(shared.clock.clone()));
        let lean = crate::listen::h1::LeanLocal::default();
        let sockets = SocketHome { pool: lean.upstreams.clone(), clock: shared.clock.clone() };
        Worker {
            id,
            shared,
            pool,
            sockets,
            lean,
            cache: RefCell::new((cache, current)),
            request_ids: Cell::new(0),
            id_prefix,
            id_prefix_hex: {
                let mut hex = [0u8; 32];
                hex16(id_prefix, &mut hex[..16]);
                hex
            },
            balancers: RefCell::new((0, Vec::new())),
            random: Cell::new(id_prefix),
        }
    }

    /// Picks an endpoint of cluster `index` with this worker's chooser (rebuilt when the
    /// snapshot changes), among the endpoints available at `now`, other than `avoid` (the
    /// endpoint a retry moves away from) when another is available.
    pub fn pick(
        &self,
        snap: &Snapshot,
        index: usize,
        now: spillway_core::Instant,
        hash: Option<u64>,
        avoid: Option<usize>,
    ) -> Option<usize> {
        let mut balancers = self.balancers.borrow_mut();
        if balancers.0 != snap.generation {
            let built = snap
                .clusters
                .iter()
                .map(|c| {
                    let specs: Vec<EndpointSpec> = c
                        .endpoints
                        .iter()
                        .map(|e| EndpointSpec::new(&e.address.to_string(), e.weight))
                        .collect();
                    c.config.balance.build(&specs, self.id as u64)
                })
                .collect();
            *balancers = (snap.generation, built);
        }
        let cluster = &snap.clusters[index];
        let r = splitmix64(self.random.get());
        self.random.set(r);
        let mut ctx = PickContext::new(now, r);
        if let Some(h) = hash {
            ctx = ctx.with_hash(h);
        }
        let balancer = balancers.1.get_mut(index)?;
        // A retry avoids the endpoint that just failed, unless it is the only one left.
        let without = |eligible: &mut [usize], n: usize| -> usize {
            match avoid {
                Some(a) if n > 1 => match eligible[..n].iter().position(|e| *e == a) {
                    Some(i) => {
                        eligible.copy_within(i + 1..n, i);
                        n - 1
                    }
                    None => n,
                },
                _ => n,
            }
        };
        // The eligible list lives on the stack for usual cluster sizes.
        let picked = if cluster.endpoints.len() <= MAX_PICK_ENDPOINTS {
            let mut eligible = [0usize; MAX_PICK_ENDPOINTS];
            let n = cluster.eligible(now, &mut eligible);
            let n = without(&mut eligible, n);
            balancer.pick(&eligible[..n], &ctx)?
        } else {
            let mut eligible = vec![0usize; cluster.endpoints.len()];
            let n = cluster.eligible(now, &mut eligible);
            let n = without(&mut eligible, n);
            balancer.pick(&eligible[..n], &ctx)?
        };
        balancer.on_start(picked, now);
        Some(picked)
    }

    /// A uniform random number in `[0, 1)` from this worker's generator (retry jitter).
    pub fn random_unit(&self) -> f64 {
        let r = splitmix64(self.random.get());
        self.random.set(r);
        (r >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Reports the end of a request picked by [`Worker::pick`].
    pub fn picked_done(
        &self,
        generation: u64,
        index: usize,
        endpoint: usize,
        latency: Duration,
        success: bool,
        now: spillway_core::Instant,
    ) {
        let mut balancers = self.balancers.borrow_mut();
        if balancers.0 == generation {
            if let Some(b) = balancers.1.get_mut(index) {
                b.on_end(endpoint, latency, success, now);
            }
        }
    }

    /// The current snapshot (one pointer comparison unless a reload happened).
    #[inline]
    #[allow(clippy::redundant_allocation)] // see `Worker`
    pub fn snapshot(&self) -> Rc<Arc<Snapshot>> {
        let mut guard = self.cache.borrow_mut();
        let (cache, current) = &mut *guard;
        let latest = cache.load();
        if !Arc::ptr_eq(latest, current) {
            *current = Rc::new(latest.clone());
        }
        current.clone()
    }

    /// Held by its own reference-counted allocation, so that the copy the response takes is a
    /// count, not a second allocation (a `Bytes` from a `Vec` allocates again when first cloned).
    pub(crate) fn next_request_id(&self) -> HeaderValue {
        let id = bytes::Bytes::from_owner(self.new_request_id());
        HeaderValue::from_maybe_shared(id).unwrap_or_else(|_| HeaderValue::from_static("0"))
    }

    /// A new request id: 32 hex digits, unique per process and worker.
    pub fn new_request_id(&self) -> [u8; 32] {
        let n = self.request_ids.get().wrapping_add(1);
        self.request_ids.set(n);
        let mut buf = self.id_prefix_hex;
        hex16(splitmix64(n ^ self.id_prefix), &mut buf[16..]);
        buf
    }
}

fn hex16(v: u64, out: &mut [u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in out.iter_mut().enumerate().take(16) {
        *b = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}
