//! The request path: route, choose an endpoint, rewrite the request in place, send it
//! upstream, and stream the response back.
//!
//! One worker thread runs this for every request it accepted; nothing here takes a lock. The
//! request's `Parts` are edited in place (hop-by-hop headers out, `X-Forwarded-*` and
//! `x-request-id` in), the body streams through, and per-connection values (the client
//! address as a header value) were rendered once at accept.
//!
//! The availability policies (rate limits, breakers, retries, bulkheads) will sit between
//! routing and the upstream call: see [`PolicyStack`].

use crate::body::{ProxyBody, ResponseBody};
use crate::config::{Balance, UpstreamProtocol};
use crate::route::{self, Action, Route};
use crate::state::{Shared, Snapshot};
use crate::upstream::cluster::{ClusterState, EndpointState, Outcome};
use crate::upstream::pool::{self, Pool, UpstreamError};
use arc_swap::Cache;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use spillway_core::balance::{hash_bytes, AnyBalancer, Balancer, EndpointSpec, PickContext};
use spillway_core::deadline::{format_grpc_timeout, format_request_timeout, IncomingTimeouts};
use spillway_core::random::splitmix64;
use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
static X_REQUEST_TIMEOUT: HeaderName = HeaderName::from_static("x-request-timeout");

/// Per-route and per-cluster availability policies. Empty in this version: the place where
/// rate limits, breakers, retries and bulkheads plug in, between routing and the upstream
/// call, without changing the shape of the request path.
#[derive(Debug, Default, Clone, Copy)]
pub struct PolicyStack;

impl PolicyStack {
    /// Whether the request may proceed; a refusal is rendered by `spillway_core::decision`.
    #[inline]
    pub fn admit(&self) -> Result<(), spillway_core::Rejection> {
        Ok(())
    }
}

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
    /// Resources of the lean HTTP/1.1 path.
    pub lean: crate::h1::LeanLocal,
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
        Worker {
            id,
            shared,
            pool,
            lean: crate::h1::LeanLocal::default(),
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
    /// snapshot changes), among the endpoints available at `now`.
    pub fn pick(
        &self,
        snap: &Snapshot,
        index: usize,
        now: spillway_core::Instant,
        hash: Option<u64>,
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
        // The eligible list lives on the stack for usual cluster sizes.
        let picked = if cluster.endpoints.len() <= MAX_PICK_ENDPOINTS {
            let mut eligible = [0usize; MAX_PICK_ENDPOINTS];
            let n = cluster.eligible(now, &mut eligible);
            balancer.pick(&eligible[..n], &ctx)?
        } else {
            let mut eligible = vec![0usize; cluster.endpoints.len()];
            let n = cluster.eligible(now, &mut eligible);
            balancer.pick(&eligible[..n], &ctx)?
        };
        balancer.on_start(picked, now);
        Some(picked)
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

    fn next_request_id(&self) -> HeaderValue {
        let buf = self.new_request_id();
        HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"))
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

/// Per-connection values, rendered once at accept.
#[derive(Debug)]
pub struct ConnInfo {
    /// Client IP as a header value (for `X-Forwarded-For`).
    pub client_ip: HeaderValue,
    /// `http` or `https`.
    pub proto: HeaderValue,
    /// The listener's `max_body_bytes`.
    pub max_body: u64,
    /// Hash of the client address (key for consistent hashing without `hash_header`).
    pub client_hash: u64,
    /// Requests in progress and the time of the last one (for the idle timeout).
    pub activity: Activity,
}

/// Whether a downstream connection is busy, and since when it is idle.
#[derive(Debug)]
pub struct Activity {
    in_flight: Cell<u32>,
    last_ns: Cell<u64>,
    clock: spillway_core::SystemClock,
}

impl Activity {
    /// A connection that just became active at `clock`'s now.
    pub fn new(clock: spillway_core::SystemClock) -> Activity {
        use spillway_core::Clock;
        Activity { in_flight: Cell::new(0), last_ns: Cell::new(clock.now().as_nanos()), clock }
    }

    /// A request started.
    pub fn begin_request(&self) {
        self.in_flight.set(self.in_flight.get() + 1);
    }

    /// A request (and its response body) ended.
    pub fn end_request(&self) {
        use spillway_core::Clock;
        self.in_flight.set(self.in_flight.get().saturating_sub(1));
        self.last_ns.set(self.clock.now().as_nanos());
    }

    /// How long the connection has had nothing in flight (zero while busy).
    pub fn idle_for(&self) -> Duration {
        use spillway_core::Clock;
        if self.in_flight.get() > 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(self.clock.now().as_nanos().saturating_sub(self.last_ns.get()))
    }
}

/// The JSON bodies of the gateway's own error responses (both request paths).
pub mod errors {
    /// No route matched (404).
    pub const NO_ROUTE: &str = "{\"error\":\"no_route\"}\n";
    /// A bug: a route's action did not fit (500).
    pub const INTERNAL: &str = "{\"error\":\"internal\"}\n";
    /// The body passed `max_body_bytes` (413).
    pub const BODY_TOO_LARGE: &str = "{\"error\":\"body_too_large\"}\n";
    /// Every endpoint of the cluster is ejected or unhealthy (503).
    pub const NO_HEALTHY_ENDPOINT: &str = "{\"error\":\"no_healthy_endpoint\"}\n";
    /// No response head within the timeout (504).
    pub const UPSTREAM_TIMEOUT: &str = "{\"error\":\"upstream_timeout\"}\n";
    /// Connect failed, or the upstream broke the exchange (502).
    pub const UPSTREAM_UNAVAILABLE: &str = "{\"error\":\"upstream_unavailable\"}\n";
}

fn canned(status: StatusCode, error: &'static str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(Bytes::from_static(error.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1) and those named in `Connection`; keeps
/// `TE: trailers` (gRPC needs it end to end).
///
/// Runs twice per proxied request (request and response), so it first scans the names once
/// and only looks up what is there: most requests carry none of these headers, and a typical
/// upstream response only `Connection: keep-alive`. Nothing is allocated.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut found = 0u8;
    for name in headers.keys() {
        found |= hop_by_hop_bit(name);
    }
    if found == 0 {
        return;
    }
    if found & HOP_CONNECTION != 0 {
        // Usually one `Connection` value; several are rare enough to afford a `Vec`.
        if headers.get_all(header::CONNECTION).iter().nth(1).is_some() {
            let values: Vec<HeaderValue> =
                headers.get_all(header::CONNECTION).iter().cloned().collect();
            headers.remove(header::CONNECTION);
            for v in &values {
                remove_connection_tokens(headers, v);
            }
        } else if let Some(v) = headers.remove(header::CONNECTION) {
            remove_connection_tokens(headers, &v);
        }
    }
    if found & HOP_KEEP_ALIVE != 0 {
        headers.remove(&KEEP_ALIVE);
    }
    if found & HOP_PROXY_CONNECTION != 0 {
        headers.remove(&PROXY_CONNECTION);
    }
    if found & HOP_TRANSFER_ENCODING != 0 {
        headers.remove(header::TRANSFER_ENCODING);
    }
    if found & HOP_UPGRADE != 0 {
        headers.remove(header::UPGRADE);
    }
    if found & HOP_TRAILER != 0 {
        headers.remove(header::TRAILER);
    }
    if found & HOP_TE != 0 {
        if let Some(te) = headers.get(header::TE) {
            if !te.as_bytes().eq_ignore_ascii_case(b"trailers") {
                headers.remove(header::TE);
            }
        }
    }
}

const HOP_CONNECTION: u8 = 1;
const HOP_KEEP_ALIVE: u8 = 1 << 1;
const HOP_PROXY_CONNECTION: u8 = 1 << 2;
const HOP_TRANSFER_ENCODING: u8 = 1 << 3;
const HOP_UPGRADE: u8 = 1 << 4;
const HOP_TRAILER: u8 = 1 << 5;
const HOP_TE: u8 = 1 << 6;

/// Which hop-by-hop header `name` is, as a bit (0 for an end-to-end header). The names are
/// the lean path's field classification, so both paths drop the same set.
#[inline]
fn hop_by_hop_bit(name: &HeaderName) -> u8 {
    use crate::h1::head::FieldKind;
    match FieldKind::of(name.as_str().as_bytes()) {
        FieldKind::Connection => HOP_CONNECTION,
        FieldKind::KeepAlive => HOP_KEEP_ALIVE,
        FieldKind::ProxyConnection => HOP_PROXY_CONNECTION,
        // Framing: hyper re-frames the body (the lean path passes it through unchanged).
        FieldKind::TransferEncoding => HOP_TRANSFER_ENCODING,
        FieldKind::Upgrade => HOP_UPGRADE,
        FieldKind::Trailer => HOP_TRAILER,
        FieldKind::Te => HOP_TE,
        _ => 0,
    }
}

/// Removes the headers named in one `Connection` value (names are looked up by `&str`, which
/// neither allocates nor fails on invalid tokens).
///
/// The usual `keep-alive` skips the lookup: the caller removes that header anyway.
fn remove_connection_tokens(headers: &mut HeaderMap, value: &HeaderValue) {
    for token in value.as_bytes().split(|b| *b == b',') {
        let token = token.trim_ascii();
        if token.is_empty() || token.eq_ignore_ascii_case(b"keep-alive") {
            continue;
        }
        if let Ok(name) = std::str::from_utf8(token) {
            headers.remove(name);
        }
    }
}

fn wants_upgrade(req: &Request<Incoming>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let upgrade = req.headers().get(header::UPGRADE)?;
    let mut options = crate::h1::head::ConnectionOptions::default();
    for value in req.headers().get_all(header::CONNECTION) {
        options.add(value.as_bytes());
    }
    options.upgrade.then(|| upgrade.clone())
}

/// Serves one request (never fails: errors become 4xx/5xx responses).
pub async fn handle(
    worker: Rc<Worker>,
    conn: Rc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<ResponseBody>, Infallible> {
    let start = worker.shared.now();
    let active = crate::body::ActiveGuard::new(conn.clone());
    let snap = worker.snapshot();
    let host = route::request_host(req.uri(), req.headers());
    let route = snap.router.route(req.method(), host, req.uri().path(), req.headers());
    let log = worker.shared.access_log.is_some().then(|| (req.method().clone(), req.uri().clone()));
    let (resp, route_name, cluster_name, upstream) = match route {
        None => {
            let resp = canned(StatusCode::NOT_FOUND, errors::NO_ROUTE);
            snap.no_route.record(
                worker.id,
                404,
                worker.shared.now().saturating_duration_since(start),
            );
            (resp, "", "", None)
        }
        Some(route) => {
            let (resp, upstream) = match &route.action {
                Action::Direct { status, body, headers } => {
                    let mut resp = Response::new(ResponseBody::full(body.clone()));
                    *resp.status_mut() = *status;
                    for (n, v) in headers {
                        resp.headers_mut().insert(n.clone(), v.clone());
                    }
                    (resp, None)
                }
                Action::Proxy { cluster, .. } => {
                    proxy(&worker, &conn, &snap, route, *cluster, req, start).await
                }
            };
            route.stats.record(
                worker.id,
                resp.status().as_u16(),
                worker.shared.now().saturating_duration_since(start),
            );
            let cluster_name = match &route.action {
                Action::Proxy { cluster, .. } => snap.clusters[*cluster].config.name.as_str(),
                Action::Direct { .. } => "",
            };
            (resp, route.name.as_str(), cluster_name, upstream)
        }
    };
    if let (Some(sink), Some((method, uri))) = (&worker.shared.access_log, log) {
        let uri = uri.to_string();
        log_access(
            sink,
            &AccessEntry {
                client: conn.client_ip.to_str().unwrap_or(""),
                method: method.as_str(),
                uri: &uri,
                status: resp.status().as_u16(),
                route: route_name,
                cluster: cluster_name,
                upstream,
                duration: worker.shared.now().saturating_duration_since(start),
                request_id: resp.headers().get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()),
            },
        );
    }
    Ok(resp.map(|b| b.tracked(active)))
}

use std::io::Write as _;

/// One access-log line's fields.
#[derive(Debug)]
pub struct AccessEntry<'a> {
    /// Client IP.
    pub client: &'a str,
    /// Request method.
    pub method: &'a str,
    /// Request target as received.
    pub uri: &'a str,
    /// Response status.
    pub status: u16,
    /// Route name ("" without a route).
    pub route: &'a str,
    /// Cluster name ("" without one).
    pub cluster: &'a str,
    /// The endpoint that served the request.
    pub upstream: Option<std::net::SocketAddr>,
    /// From request start to response head.
    pub duration: Duration,
    /// The request id.
    pub request_id: Option<&'a str>,
}

/// Writes one JSON access-log line to `sink`.
pub fn log_access(sink: &std::sync::Mutex<Box<dyn std::io::Write + Send>>, e: &AccessEntry<'_>) {
    let line = serde_json::json!({
        "ts_ms": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        "client": e.client,
        "method": e.method,
        "uri": e.uri,
        "status": e.status,
        "route": e.route,
        "cluster": e.cluster,
        "upstream": e.upstream.map(|a| a.to_string()),
        "duration_ms": e.duration.as_secs_f64() * 1000.0,
        "request_id": e.request_id,
    });
    if let Ok(mut w) = sink.lock() {
        let _ = writeln!(w, "{line}");
    }
}

/// Decrements an endpoint's in-flight count when the upstream exchange ends.
pub(crate) struct InFlight<'a>(pub(crate) &'a EndpointState);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

async fn proxy(
    worker: &Rc<Worker>,
    conn: &ConnInfo,
    snap: &Snapshot,
    route: &Route,
    cluster_index: usize,
    mut req: Request<Incoming>,
    start: spillway_core::Instant,
) -> (Response<ResponseBody>, Option<std::net::SocketAddr>) {
    let cluster: &ClusterState = &snap.clusters[cluster_index];
    let Action::Proxy { rewrite_prefix, rewrite_host, timeout, deadline: deadline_policy, .. } =
        &route.action
    else {
        return (canned(StatusCode::INTERNAL_SERVER_ERROR, errors::INTERNAL), None);
    };
    // Traffic recording: one `Option` check unless the route has `record:` (see `record`).
    let capture = route.recorder.as_ref().and_then(|r| r.begin(&req));
    // hyper has parsed `Content-Length` already: its exact size hint saves a header lookup.
    if let Some(len) = http_body::Body::size_hint(req.body()).exact() {
        if len > conn.max_body {
            return (canned(StatusCode::PAYLOAD_TOO_LARGE, errors::BODY_TOO_LARGE), None);
        }
    }
    if let Err(rejection) = PolicyStack.admit() {
        let status = StatusCode::from_u16(rejection.reason.http_status())
            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let mut resp = Response::new(ResponseBody::full(rejection.json_body()));
        *resp.status_mut() = status;
        return (resp, None);
    }
    // Deadline propagation: honour an incoming `grpc-timeout` / `x-request-timeout` up to the
    // route's timeout, and fail fast (504) when too little budget is left to start.
    // Which deadline headers came in (they are rewritten with the remaining budget below).
    let mut deadline_headers = (false, false);
    let budget = match deadline_policy {
        Some(policy) => {
            let incoming = IncomingTimeouts {
                grpc_timeout: req.headers().get(&GRPC_TIMEOUT).map(HeaderValue::as_bytes),
                request_timeout: req.headers().get(&X_REQUEST_TIMEOUT).map(HeaderValue::as_bytes),
                in_process: None,
            };
            deadline_headers =
                (incoming.grpc_timeout.is_some(), incoming.request_timeout.is_some());
            match policy.decide(incoming, start) {
                Ok(granted) => Some(granted.deadline),
                Err(rejection) => {
                    let status = StatusCode::from_u16(rejection.reason.http_status())
                        .unwrap_or(StatusCode::GATEWAY_TIMEOUT);
                    let mut resp = Response::new(ResponseBody::full(rejection.json_body()));
                    *resp.status_mut() = status;
                    resp.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    return (resp, None);
                }
            }
        }
        None => None,
    };
    let hash = match cluster.config.balance {
        Balance::ConsistentHash => {
            match cluster.config.hash_header.as_deref().and_then(|h| req.headers().get(h)) {
                Some(v) => Some(hash_bytes(v.as_bytes())),
                None => Some(conn.client_hash),
            }
        }
        _ => None,
    };
    let Some(picked) = worker.pick(snap, cluster_index, start, hash) else {
        return (canned(StatusCode::SERVICE_UNAVAILABLE, errors::NO_HEALTHY_ENDPOINT), None);
    };
    let endpoint: &EndpointState = &cluster.endpoints[picked];
    let addr = endpoint.address;
    let upgrade = wants_upgrade(&req);
    let downstream_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    let original_host = parts.headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(proto) = &upgrade {
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, proto.clone());
    }
    // One hash per header below: the entry API instead of a lookup followed by an insert.
    match parts.headers.entry(&X_FORWARDED_FOR) {
        header::Entry::Occupied(mut prev) => {
            let prev_value = prev.get();
            let mut v = Vec::with_capacity(prev_value.len() + 2 + conn.client_ip.len());
            v.extend_from_slice(prev_value.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(conn.client_ip.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&v) {
                prev.insert(v);
            }
        }
        header::Entry::Vacant(slot) => {
            slot.insert(conn.client_ip.clone());
        }
    }
    parts.headers.insert(&X_FORWARDED_PROTO, conn.proto.clone());
    let authority_host = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    let downstream_host = original_host.or(authority_host);
    if let Some(h) = &downstream_host {
        if let header::Entry::Vacant(slot) = parts.headers.entry(&X_FORWARDED_HOST) {
            slot.insert(h.clone());
        }
    }
    let request_id = match parts.headers.entry(&X_REQUEST_ID) {
        header::Entry::Occupied(id) => id.get().clone(),
        header::Entry::Vacant(slot) => slot.insert(worker.next_request_id()).clone(),
    };
    let host = rewrite_host.clone().or(downstream_host);
    // Path: forward the origin-form target unchanged unless a prefix rewrite applies.
    let path_and_query = match (rewrite_prefix, parts.uri.path_and_query()) {
        (Some((from, to)), Some(pq)) => {
            let mut p = route::rewrite_path(pq.path(), from, to);
            if let Some(q) = pq.query() {
                p.push('?');
                p.push_str(q);
            }
            http::uri::PathAndQuery::try_from(p).ok()
        }
        (_, pq) => pq.cloned(),
    };
    let t = &cluster.config.timeouts;
    let deadline = match budget {
        Some(d) => {
            // Pass the remaining budget on in the headers the caller used; without them the
            // budget was granted at `start` a few microseconds ago: no second clock read.
            let remaining = if deadline_headers == (false, false) {
                d.remaining(start)
            } else {
                d.remaining(worker.shared.now())
            };
            if deadline_headers.0 && parts.headers.contains_key(&GRPC_TIMEOUT) {
                if let Ok(v) = HeaderValue::from_str(format_grpc_timeout(remaining).as_str()) {
                    parts.headers.insert(&GRPC_TIMEOUT, v);
                }
            }
            if deadline_headers.1 && parts.headers.contains_key(&X_REQUEST_TIMEOUT) {
                if let Ok(v) = HeaderValue::from_str(format_request_timeout(remaining).as_str()) {
                    parts.headers.insert(&X_REQUEST_TIMEOUT, v);
                }
            }
            remaining.min(t.per_try)
        }
        None => (*timeout).min(t.per_try),
    };
    match cluster.config.protocol {
        UpstreamProtocol::Http1 => {
            if parts.uri.scheme().is_some() || rewrite_prefix.is_some() {
                let mut up = http::uri::Parts::default();
                up.path_and_query = path_and_query;
                if let Ok(uri) = Uri::from_parts(up) {
                    parts.uri = uri;
                }
            }
            parts.version = Version::HTTP_11;
            if let Some(h) = host {
                parts.headers.insert(header::HOST, h);
            }
        }
        UpstreamProtocol::Http2 => {
            let mut up = http::uri::Parts::default();
            up.scheme = Some(http::uri::Scheme::HTTP);
            up.authority = host
                .as_ref()
                .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
                .or_else(|| http::uri::Authority::try_from(addr.to_string()).ok());
            up.path_and_query =
                path_and_query.or_else(|| Some(http::uri::PathAndQuery::from_static("/")));
            if let Ok(uri) = Uri::from_parts(up) {
                parts.uri = uri;
            }
            parts.version = Version::HTTP_2;
            parts.headers.remove(header::HOST);
        }
    }
    let body = if body_is_empty(&body) {
        ProxyBody::Empty
    } else {
        ProxyBody::Incoming { inner: body, remaining: conn.max_body }
    };
    let body = match capture {
        Some(capture) => body.teed(capture),
        None => body,
    };
    let up_req = Request::from_parts(parts, body);

    endpoint.in_flight.fetch_add(1, Relaxed);
    let in_flight = InFlight(endpoint);
    let pool = &worker.pool;
    let exchange = async {
        match (cluster.config.protocol, upgrade.is_some()) {
            (UpstreamProtocol::Http1, false) => {
                let mut c = pool.checkout_h1(addr, t.connect, t.idle).await?;
                let resp = c.send(up_req).await.map_err(|e| UpstreamError::Http(addr, e))?;
                Ok((resp, Some(c)))
            }
            (UpstreamProtocol::Http1, true) => {
                let mut sender = pool::connect_h1_upgradable(addr, t.connect).await?;
                let resp =
                    sender.send_request(up_req).await.map_err(|e| UpstreamError::Http(addr, e))?;
                Ok((resp, None))
            }
            (UpstreamProtocol::Http2, _) => {
                let mut sender = pool.checkout_h2(addr, t.connect).await?;
                let resp =
                    sender.send_request(up_req).await.map_err(|e| UpstreamError::Http(addr, e))?;
                Ok((resp, None))
            }
        }
    };
    let result = match tokio::time::timeout(deadline, exchange).await {
        Ok(r) => r,
        Err(_) => Err(UpstreamError::Timeout(addr)),
    };
    let now = worker.shared.now();
    let latency = now.saturating_duration_since(start);
    drop(in_flight);
    let (mut resp, conn_back) = match result {
        Ok(ok) => ok,
        Err(UpstreamError::Http(_, e)) if client_body_too_large(&e) => {
            // The client's fault, not the endpoint's: no outlier accounting.
            worker.picked_done(snap.generation, cluster_index, picked, latency, true, now);
            return (canned(StatusCode::PAYLOAD_TOO_LARGE, errors::BODY_TOO_LARGE), Some(addr));
        }
        Err(e) => {
            cluster.record(endpoint, Outcome::Failure, latency, now);
            worker.picked_done(snap.generation, cluster_index, picked, latency, false, now);
            tracing::debug!(error = %e, cluster = %cluster.config.name, "upstream request failed");
            let resp = match e {
                UpstreamError::Timeout(_) => {
                    canned(StatusCode::GATEWAY_TIMEOUT, errors::UPSTREAM_TIMEOUT)
                }
                _ => canned(StatusCode::BAD_GATEWAY, errors::UPSTREAM_UNAVAILABLE),
            };
            return (resp, Some(addr));
        }
    };
    let outcome =
        if resp.status().is_server_error() { Outcome::ServerError } else { Outcome::Success };
    cluster.record(endpoint, outcome, latency, now);
    worker.picked_done(
        snap.generation,
        cluster_index,
        picked,
        latency,
        outcome == Outcome::Success,
        now,
    );

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(down) = downstream_upgrade {
            let up = hyper::upgrade::on(&mut resp);
            tokio::task::spawn_local(async move {
                if let (Ok(down), Ok(up)) = (down.await, up.await) {
                    let mut down = hyper_util::rt::TokioIo::new(down);
                    let mut up = hyper_util::rt::TokioIo::new(up);
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                }
            });
            let (parts, _) = resp.into_parts();
            return (Response::from_parts(parts, ResponseBody::empty()), Some(addr));
        }
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let header::Entry::Vacant(slot) = parts.headers.entry(&X_REQUEST_ID) {
        slot.insert(request_id);
    }
    let body = if http_body::Body::is_end_stream(&body) {
        if let Some(c) = conn_back {
            c.release();
        }
        ResponseBody::empty()
    } else {
        ResponseBody::upstream(body, conn_back)
    };
    (Response::from_parts(parts, body), Some(addr))
}

/// Whether an upstream exchange failed because the client's body passed `max_body_bytes`.
fn client_body_too_large(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<crate::body::BodyTooLarge>() {
            return true;
        }
        source = s.source();
    }
    false
}

fn body_is_empty(body: &Incoming) -> bool {
    use http_body::Body;
    body.is_end_stream()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn headers_named_in_every_connection_value_are_removed_case_insensitively() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("X-One"));
        h.append(header::CONNECTION, HeaderValue::from_static(" x-two , ,bad token"));
        h.insert("x-one", HeaderValue::from_static("1"));
        h.insert("x-two", HeaderValue::from_static("2"));
        h.insert(header::HOST, HeaderValue::from_static("example.com"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::HOST));
    }

    #[test]
    fn end_to_end_headers_are_left_alone() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("example.com"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.insert("x-request-id", HeaderValue::from_static("abc"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn te_trailers_survives_for_grpc() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
    }
}
