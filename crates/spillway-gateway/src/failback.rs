//! The failback strategy: a route's durable queue of requests whose upstream call failed, and
//! the background loop that delivers them once the upstream takes them again.
//!
//! A failed request on a `strategy: failback` route is appended to the route's
//! [`spillway_spool::Spool`] — written and synced before the client gets `202 Accepted` with
//! the entry's id — and sent again by [`deliver`] with backoff until the upstream answers it
//! (2xx/3xx: delivered; a 4xx other than 408 and 429: rejected, also final) or it expires
//! (`failback.max_age`). A full queue answers 503 `failback_full`: nothing is dropped silently.
//!
//! The spool is synchronous (it syncs files), so the request path calls it through
//! `spawn_blocking`, and the delivery loop runs on the control thread's runtime. Queues are
//! opened before a config is swapped in (like traffic recorders: a queue that cannot open
//! refuses the reload) and are re-attached by directory on reload — a directory is locked by
//! the queue that holds it, so the same directory is never opened twice.

use crate::config::{Config, ConfigError, FailbackSettings, Problem, UpstreamProtocol};
use crate::policy::retry::TryFailure;
use crate::proxy::body::ProxyBody;
use crate::state::Shared;
use crate::upstream::pool::connect;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use spillway_core::retry::{Backoff, Jitter};
use spillway_spool::{Entry, EntryId, Spool, SpoolConfig, SpoolStats};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The header carrying a queued request's id (on the 202, and on every delivery).
pub const FAILBACK_ID_HEADER: &str = "x-spillway-failback-id";
/// Entries handed to the delivery loop at once.
const BATCH: usize = 16;
/// Longest sleep of an idle delivery loop (it also wakes when a request is queued).
const IDLE_POLL: Duration = Duration::from_secs(1);
/// How often expired entries are removed.
const EXPIRE_EVERY: Duration = Duration::from_secs(30);

/// Counters of one queue (kept while the queue is).
#[derive(Debug, Default)]
pub struct FailbackCounts {
    /// Requests queued (answered 202).
    pub queued: AtomicU64,
    /// Queued requests the upstream took.
    pub delivered: AtomicU64,
    /// Queued requests the upstream refused for good (a 4xx other than 408 and 429).
    pub rejected: AtomicU64,
    /// Requests refused because the queue was full (answered 503).
    pub full: AtomicU64,
    /// Deliveries that failed and were rescheduled.
    pub failed_attempts: AtomicU64,
}

/// One route's failback queue.
#[derive(Debug)]
pub struct FailbackQueue {
    /// The route it belongs to (deliveries go to that route's cluster).
    pub route: String,
    /// The settings it was opened with (size and age bounds apply until a restart).
    settings: parking_lot::Mutex<FailbackSettings>,
    spool: parking_lot::Mutex<Spool>,
    /// Counters.
    pub counts: FailbackCounts,
    /// Wakes the delivery loop when a request is queued.
    wake: tokio::sync::Notify,
    /// Whether a delivery loop runs for it.
    delivering: AtomicBool,
}

/// Queues by route index (`None` for routes without failback).
pub type FailbackQueues = Vec<Option<Arc<FailbackQueue>>>;

/// Why a request could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// The queue is at `max_bytes`.
    #[error("the failback queue is full")]
    Full,
    /// The queue could not write (the error says which file and why).
    #[error("the failback queue cannot store the request: {0}")]
    Unavailable(String),
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Opens the queues of `config`'s failback routes, re-attaching `previous` ones by directory.
/// A queue that cannot open (locked by another process, unwritable directory) refuses the
/// config, naming the route and the reason.
pub fn open_queues(
    config: &Config,
    previous: &FailbackQueues,
) -> Result<FailbackQueues, ConfigError> {
    let mut problems = Vec::new();
    let mut queues = Vec::with_capacity(config.routes.len());
    for (i, route) in config.routes.iter().enumerate() {
        let Some(settings) = &route.policy.failback else {
            queues.push(None);
            continue;
        };
        let kept = previous.iter().flatten().find(|q| q.settings.lock().dir == settings.dir);
        if let Some(q) = kept {
            *q.settings.lock() = settings.clone();
            queues.push(Some(q.clone()));
            continue;
        }
        // Segments of a quarter of the bound (at most the spool's default), so that whole
        // delivered segments can be freed long before the bound is reached.
        let segment_bytes = (settings.max_bytes / 4)
            .clamp(SpoolConfig::MIN_SEGMENT_BYTES, SpoolConfig::DEFAULT_SEGMENT_BYTES);
        let spool_config = SpoolConfig {
            max_bytes: settings.max_bytes,
            max_age: settings.max_age,
            segment_bytes,
            ..SpoolConfig::new(settings.dir.clone())
        };
        match Spool::open(spool_config, unix_ms()) {
            Ok(spool) => {
                let stats = spool.stats(unix_ms());
                if stats.depth > 0 {
                    tracing::info!(route = %route.name, depth = stats.depth, dir = %settings.dir.display(), "failback queue reopened with queued requests");
                }
                queues.push(Some(Arc::new(FailbackQueue {
                    route: route.name.clone(),
                    settings: parking_lot::Mutex::new(settings.clone()),
                    spool: parking_lot::Mutex::new(spool),
                    counts: FailbackCounts::default(),
                    wake: tokio::sync::Notify::new(),
                    delivering: AtomicBool::new(false),
                })));
            }
            Err(e) => {
                problems.push(Problem {
                    line: None,
                    key: format!("routes[{i}].failback.dir"),
                    reason: format!("route `{}`: the failback queue cannot open: {e}", route.name),
                });
                queues.push(None);
            }
        }
    }
    if problems.is_empty() {
        Ok(queues)
    } else {
        Err(ConfigError::Invalid { file: config.source.clone(), problems })
    }
}

impl FailbackQueue {
    /// The settings now in force.
    pub fn settings(&self) -> FailbackSettings {
        self.settings.lock().clone()
    }

    /// Stores a request durably (synced before it returns) and wakes the delivery loop.
    pub async fn enqueue(self: &Arc<Self>, entry: Entry) -> Result<EntryId, EnqueueError> {
        let queue = self.clone();
        let appended =
            tokio::task::spawn_blocking(move || queue.spool.lock().append(&entry, unix_ms()))
                .await
                .map_err(|e| EnqueueError::Unavailable(e.to_string()))?;
        match appended {
            Ok(id) => {
                self.counts.queued.fetch_add(1, Relaxed);
                self.wake.notify_one();
                Ok(id)
            }
            Err(e) if e.is_full() => {
                self.counts.full.fetch_add(1, Relaxed);
                Err(EnqueueError::Full)
            }
            Err(e) => {
                tracing::error!(route = %self.route, error = %e, "failback queue cannot store a request");
                Err(EnqueueError::Unavailable(e.to_string()))
            }
        }
    }

    /// The largest request body queued.
    pub fn max_body(&self) -> u64 {
        self.settings.lock().max_body
    }

    /// Whether a try that failed this way (`failure`) or answered `status` is queued.
    pub fn queues_on(&self, failure: Option<TryFailure>, status: Option<u16>) -> bool {
        let settings = self.settings.lock();
        let on = &settings.on;
        match (failure, status) {
            (Some(TryFailure::Connect), _) => on.connect_failure,
            (Some(TryFailure::Reset), _) => on.reset,
            (Some(TryFailure::Timeout), _) => on.timeout,
            (None, Some(status)) => on.status(status),
            (None, None) => false,
        }
    }

    /// Requests waiting for delivery.
    pub fn depth(&self) -> usize {
        self.spool.lock().len()
    }

    /// What `GET /admin/failback` shows of this queue: its counters, the spool's statistics
    /// and the first `limit` waiting requests (without bodies).
    pub fn view(&self, limit: usize) -> FailbackView {
        let now = unix_ms();
        let spool = self.spool.lock();
        let pending = spool
            .pending()
            .take(limit)
            .map(|p| PendingView {
                id: p.id.to_string(),
                created_unix_ms: p.created_unix_ms,
                attempts: p.attempts,
                next_attempt_unix_ms: p.next_attempt_unix_ms,
            })
            .collect();
        FailbackView {
            route: self.route.clone(),
            dir: self.settings.lock().dir.clone(),
            queued: self.counts.queued.load(Relaxed),
            delivered: self.counts.delivered.load(Relaxed),
            rejected: self.counts.rejected.load(Relaxed),
            refused_full: self.counts.full.load(Relaxed),
            failed_attempts: self.counts.failed_attempts.load(Relaxed),
            spool: spool.stats(now),
            pending,
        }
    }
}

/// `GET /admin/failback`: one queue.
#[derive(Debug, Serialize)]
pub struct FailbackView {
    /// The route.
    pub route: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Requests queued since start.
    pub queued: u64,
    /// Delivered since start.
    pub delivered: u64,
    /// Refused for good by the upstream since start.
    pub rejected: u64,
    /// Refused because the queue was full since start.
    pub refused_full: u64,
    /// Deliveries that failed and were rescheduled since start.
    pub failed_attempts: u64,
    /// The spool's own statistics (depth, bytes, oldest age, expired…).
    pub spool: SpoolStats,
    /// The first waiting requests.
    pub pending: Vec<PendingView>,
}

/// A waiting request, without its body.
#[derive(Debug, Serialize)]
pub struct PendingView {
    /// Its id (as in the 202).
    pub id: String,
    /// When it was queued.
    pub created_unix_ms: u64,
    /// Deliveries tried.
    pub attempts: u32,
    /// When the next is due.
    pub next_attempt_unix_ms: u64,
}

/// Starts a delivery loop on `handle` for each queue of `queues` that has none yet.
pub fn start_delivery(
    handle: &tokio::runtime::Handle,
    shared: &Arc<Shared>,
    queues: &FailbackQueues,
) {
    for q in queues.iter().flatten() {
        if !q.delivering.swap(true, Relaxed) {
            handle.spawn(deliver(Arc::downgrade(q), shared.clone()));
        }
    }
}

/// How one delivery ended.
enum Delivery {
    /// The upstream took it (2xx, 3xx).
    Delivered,
    /// The upstream refused it for good (a 4xx other than 408, 429).
    Rejected(u16),
    /// Try again later.
    Failed(String),
}

/// Delivers a queue's requests until the queue is dropped (its route gone from the config) or
/// the gateway drains.
pub async fn deliver(queue: Weak<FailbackQueue>, shared: Arc<Shared>) {
    let mut last_expire = std::time::Instant::now();
    let mut turn = 0usize;
    loop {
        let Some(q) = queue.upgrade() else { return };
        if shared.draining.load(Relaxed) {
            q.delivering.store(false, Relaxed);
            return;
        }
        if last_expire.elapsed() >= EXPIRE_EVERY {
            last_expire = std::time::Instant::now();
            let q2 = q.clone();
            let expired =
                tokio::task::spawn_blocking(move || q2.spool.lock().expire(unix_ms())).await;
            if let Ok(Ok(n)) = expired {
                if n > 0 {
                    tracing::warn!(route = %q.route, expired = n, "failback requests expired undelivered");
                }
            }
        }
        let q2 = q.clone();
        let due = match tokio::task::spawn_blocking(move || q2.spool.lock().due(unix_ms(), BATCH))
            .await
        {
            Ok(Ok(due)) => due,
            Ok(Err(e)) => {
                tracing::error!(route = %q.route, error = %e, "failback queue unreadable");
                Vec::new()
            }
            Err(_) => Vec::new(),
        };
        if due.is_empty() {
            let next = q.spool.lock().next_due_unix_ms();
            let wait = next
                .map(|at| Duration::from_millis(at.saturating_sub(unix_ms())))
                .unwrap_or(IDLE_POLL)
                .min(IDLE_POLL);
            // (Holding the queue while waiting delays its release after a reload by at most
            // IDLE_POLL.)
            let _ = tokio::time::timeout(wait, q.wake.notified()).await;
            continue;
        }
        let settings = q.settings();
        for item in due {
            turn = turn.wrapping_add(1);
            let outcome = send(&shared, &q.route, &item.entry, item.id, item.attempts, turn).await;
            let q2 = q.clone();
            let id = item.id;
            let recorded = match outcome {
                Delivery::Delivered | Delivery::Rejected(_) => {
                    match &outcome {
                        Delivery::Rejected(status) => {
                            q.counts.rejected.fetch_add(1, Relaxed);
                            tracing::warn!(route = %q.route, %id, status, "failback request refused by the upstream; dropped");
                        }
                        _ => {
                            q.counts.delivered.fetch_add(1, Relaxed);
                        }
                    }
                    tokio::task::spawn_blocking(move || q2.spool.lock().delivered(id)).await
                }
                Delivery::Failed(why) => {
                    q.counts.failed_attempts.fetch_add(1, Relaxed);
                    tracing::debug!(route = %q.route, %id, why, "failback delivery failed; rescheduled");
                    let delay = backoff_delay(&settings, item.attempts);
                    let next = unix_ms() + delay.as_millis() as u64;
                    tokio::task::spawn_blocking(move || {
                        q2.spool.lock().failed(id, next).map(|_| ())
                    })
                    .await
                }
            };
            if let Ok(Err(e)) = recorded {
                tracing::error!(route = %q.route, %id, error = %e, "failback queue cannot record a delivery");
            }
        }
    }
}

/// The wait before delivery `attempts + 1` of a request (equal jitter: at least half of the
/// exponential step).
fn backoff_delay(settings: &FailbackSettings, attempts: u32) -> Duration {
    let random = (unix_ms() % 1000) as f64 / 1000.0;
    match Backoff::try_new(settings.backoff_base, settings.backoff_max, Jitter::Equal) {
        Ok(backoff) => backoff.delay(attempts, Duration::ZERO, random),
        // Validation refuses such a schedule; the longest wait is the safe reading.
        Err(_) => settings.backoff_max,
    }
}

/// Sends one queued request to an available endpoint of its route's cluster.
async fn send(
    shared: &Shared,
    route_name: &str,
    entry: &Entry,
    id: EntryId,
    attempts: u32,
    turn: usize,
) -> Delivery {
    let snap = shared.snapshot.load_full();
    let Some(route) = snap.config.routes.iter().find(|r| r.name == route_name) else {
        return Delivery::Failed(format!("route `{route_name}` is not in the config"));
    };
    let crate::config::RouteAction::Cluster { name, .. } = &route.action else {
        return Delivery::Failed(format!("route `{route_name}` no longer proxies"));
    };
    let Some(cluster) = snap.clusters.iter().find(|c| &c.config.name == name) else {
        return Delivery::Failed(format!("cluster `{name}` is not in the config"));
    };
    let now = shared.now();
    let available: Vec<_> = cluster.endpoints.iter().filter(|e| e.available(now)).collect();
    let candidates =
        if available.is_empty() { cluster.endpoints.iter().collect() } else { available };
    let Some(endpoint) = candidates.get(turn % candidates.len().max(1)) else {
        return Delivery::Failed(format!("cluster `{name}` has no endpoint"));
    };
    let addr = endpoint.address;
    let t = cluster.config.timeouts;
    let mut req = Request::new(ProxyBody::Buffered(Some(entry.body.clone())));
    *req.method_mut() = match http::Method::from_bytes(entry.method.as_bytes()) {
        Ok(m) => m,
        Err(_) => return Delivery::Rejected(400),
    };
    let http2 = cluster.config.protocol == UpstreamProtocol::Http2;
    let target =
        if http2 { format!("http://{addr}{}", entry.target) } else { entry.target.clone() };
    *req.uri_mut() = match target.parse() {
        Ok(u) => u,
        Err(_) => return Delivery::Rejected(400),
    };
    if http2 {
        *req.version_mut() = http::Version::HTTP_2;
    }
    for (name, value) in &entry.headers {
        if let (Ok(n), Ok(v)) =
            (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_bytes(value))
        {
            if http2 && n == http::header::HOST {
                continue;
            }
            req.headers_mut().append(n, v);
        }
    }
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        req.headers_mut().insert(FAILBACK_ID_HEADER, v);
    }
    req.headers_mut().insert("x-spillway-attempt", HeaderValue::from(attempts + 2));
    let exchange = async {
        let stream =
            connect(addr, cluster.tls.as_deref(), t.connect).await.map_err(|e| e.to_string())?;
        let io = TokioIo::new(stream);
        let status = if http2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            sender.send_request(req).await.map_err(|e| e.to_string())?.status()
        } else {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            sender.send_request(req).await.map_err(|e| e.to_string())?.status()
        };
        Ok::<_, String>(status)
    };
    match tokio::time::timeout(t.request, exchange).await {
        Err(_) => Delivery::Failed(format!("{addr}: no answer within {:?}", t.request)),
        Ok(Err(e)) => Delivery::Failed(format!("{addr}: {e}")),
        Ok(Ok(status)) => {
            let code = status.as_u16();
            if status.is_success() || status.is_redirection() {
                Delivery::Delivered
            } else if status.is_client_error() && code != 408 && code != 429 {
                Delivery::Rejected(code)
            } else {
                Delivery::Failed(format!("{addr} answered {code}"))
            }
        }
    }
}

/// A request as the queue stores it: the upstream request's method, target and headers (as
/// rewritten for the upstream) and its body.
pub fn entry(route: &str, parts: &http::request::Parts, body: Bytes) -> Entry {
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let headers = parts
        .headers
        .iter()
        .filter(|(n, _)| *n != "x-spillway-attempt")
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    Entry {
        route: route.to_string(),
        method: parts.method.as_str().to_string(),
        target,
        headers,
        body,
        created_unix_ms: unix_ms(),
    }
}

/// Appends the failback metrics: `spillway_failback_queue_depth{route}` and
/// `spillway_failback_total{route,outcome}` (queued, delivered, rejected, full, expired).
pub fn render_metrics(queues: &FailbackQueues, out: &mut String) {
    use crate::admin::metrics::escape;
    use std::fmt::Write;
    out.push_str("# HELP spillway_failback_queue_depth Requests waiting in a failback route's durable queue.\n");
    out.push_str("# TYPE spillway_failback_queue_depth gauge\n");
    for q in queues.iter().flatten() {
        let _ = writeln!(
            out,
            "spillway_failback_queue_depth{{route=\"{}\"}} {}",
            escape(&q.route),
            q.depth()
        );
    }
    out.push_str("# HELP spillway_failback_total Requests through a failback queue, by route and outcome (queued: answered 202; delivered; rejected: refused for good by the upstream; full: refused with 503; expired: older than max_age).\n");
    out.push_str("# TYPE spillway_failback_total counter\n");
    for q in queues.iter().flatten() {
        let expired = q.spool.lock().stats(unix_ms()).expired;
        let c = &q.counts;
        for (outcome, n) in [
            ("queued", c.queued.load(Relaxed)),
            ("delivered", c.delivered.load(Relaxed)),
            ("rejected", c.rejected.load(Relaxed)),
            ("full", c.full.load(Relaxed)),
            ("expired", expired),
        ] {
            let _ = writeln!(
                out,
                "spillway_failback_total{{route=\"{}\",outcome=\"{outcome}\"}} {n}",
                escape(&q.route)
            );
        }
    }
}
