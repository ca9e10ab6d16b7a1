//! The I/O engine: workers on tokio that send HTTP requests at the times a plan says (open
//! loop, replay) or as fast as responses return (closed loop), and measure them.
//!
//! Workers claim request indices from one shared counter, in order, so the earliest pending
//! request always goes to the first free connection. A worker that claims a request before its
//! intended time sleeps until then and measures from the real send; one that claims it late
//! (every connection was busy) sends at once and measures from the *intended* time, so a slow
//! target cannot hide its queueing delay (no coordinated omission, as in wrk2).
//!
//! Client retries ([`retry`]): an attempt answered with an error goes again on the connection
//! of the worker that sent it, up to `N` more times. In closed loop the worker retries in line
//! (after the backoff), as a client waiting for its answer does. In open loop and replay a
//! retry never holds a connection idle: the worker queues it (due after the backoff — at once
//! without one) and keeps serving the schedule; a retry due before the worker's next arrival is
//! sent while waiting for it, one due now goes before a new claim, and a worker drains its
//! queue before it stops. Arrival times stay fixed: if retries keep every connection busy, new
//! arrivals leave late, are counted `behind` and measured from their intended time, as for any
//! slow response. A request is counted once, with its last outcome and a latency from its first
//! intended send to its last answer; every send is an attempt.

mod conn;
pub mod retry;
mod stats;

pub use conn::Failure;
pub use retry::ClientRetry;

use crate::mix::Mix;
use crate::replay::ReplaySchedule;
use crate::report::{ClientRetrySettings, Mode, Report, TimelinePoint, REPORT_SCHEMA};
use crate::schedule::{Arrival, Schedule};
use crate::target::Target;
use bytes::Bytes;
use conn::{Slot, Watchdog};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method};
use stats::{Stats, StepShape};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// How long past the end of its schedule a late request may still be sent.
const SEND_GRACE: Duration = Duration::from_millis(250);

/// The engine could not run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not even the first connection could be opened.
    #[error("cannot connect to {0}")]
    Connect(std::net::SocketAddr),
    /// Nothing to send.
    #[error("no requests to send")]
    NoRequests,
    /// Bad settings.
    #[error("{0}")]
    Config(String),
}

/// One request to send (a template, or one recorded request).
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// Method.
    pub method: Method,
    /// Path and query (the authority comes from the target).
    pub path_and_query: PathAndQuery,
    /// Headers (`Host` is set from the target).
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

impl RequestSpec {
    /// A `GET` of `path_and_query` with no headers.
    pub fn get(path_and_query: PathAndQuery) -> RequestSpec {
        RequestSpec {
            method: Method::GET,
            path_and_query,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }
}

/// When requests are sent.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Constant rate or ramp.
    Open(Schedule),
    /// Every connection sends as fast as it gets responses, for `duration` or `max_requests`.
    Closed {
        /// Time bound.
        duration: Duration,
        /// Count bound.
        max_requests: Option<u64>,
    },
    /// Recorded arrival offsets.
    Replay(ReplaySchedule),
}

impl Plan {
    fn mode(&self) -> Mode {
        match self {
            Plan::Open(_) => Mode::Open,
            Plan::Closed { .. } => Mode::Closed,
            Plan::Replay(_) => Mode::Replay,
        }
    }

    fn duration(&self) -> Duration {
        match self {
            Plan::Open(s) => s.duration(),
            Plan::Closed { duration, .. } => *duration,
            Plan::Replay(r) => r.duration(),
        }
    }

    fn arrival(&self, i: u64) -> Option<Arrival> {
        match self {
            Plan::Open(s) => s.arrival(i),
            Plan::Closed { .. } => None,
            Plan::Replay(r) => r.arrival(i).map(|offset| Arrival { offset, step: 0 }),
        }
    }

    fn shapes(&self) -> Vec<StepShape> {
        match self {
            Plan::Open(s) => (0..s.steps().len())
                .map(|k| StepShape {
                    target_rate: Some(s.steps()[k].rate),
                    start: s.step_start(k),
                    duration: s.steps()[k].duration,
                    planned: Some(s.planned_in_step(k)),
                })
                .collect(),
            Plan::Closed { duration, .. } => {
                vec![StepShape {
                    target_rate: None,
                    start: Duration::ZERO,
                    duration: *duration,
                    planned: None,
                }]
            }
            Plan::Replay(r) => vec![StepShape {
                target_rate: None,
                start: Duration::ZERO,
                duration: r.duration(),
                planned: Some(r.len()),
            }],
        }
    }

    fn target_rate_at(&self, offset: Duration) -> Option<f64> {
        match self {
            Plan::Open(s) => Some(s.steps()[s.step_at(offset)].rate),
            _ => None,
        }
    }
}

/// Everything the engine needs for one run.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where requests go.
    pub target: Target,
    /// The URL as the user gave it (for the report).
    pub url: String,
    /// Requests to send, in turn (request `i` is `requests[i % len]`); with a `mix`, one per
    /// class, in the mix's order.
    pub requests: Arc<[RequestSpec]>,
    /// Classes of requests (`--mix`): request `i` is `requests[mix.class_of(i)]`, and results
    /// are also counted per class.
    pub mix: Option<Arc<Mix>>,
    /// When to send.
    pub plan: Plan,
    /// TCP connections.
    pub connections: usize,
    /// Use HTTP/2 (prior knowledge, h2c).
    pub http2: bool,
    /// Concurrent streams per HTTP/2 connection (ignored for HTTP/1.1, which has one).
    pub streams_per_connection: usize,
    /// Per-request timeout (send to end of body).
    pub timeout: Duration,
    /// Length of a timeline interval.
    pub interval: Duration,
    /// Load threads, each with its own event loop (at most one per connection).
    pub threads: usize,
    /// Client retries of failed attempts (none by default).
    pub retry: ClientRetry,
}

/// What the progress display sees at each interval.
#[derive(Debug, Clone)]
pub struct Live {
    /// Time since the start.
    pub elapsed: Duration,
    /// Planned length.
    pub duration: Duration,
    /// Requests sent so far (first attempts).
    pub sent: u64,
    /// Attempts sent so far, retries included.
    pub attempts: u64,
    /// Requests ended with a response so far.
    pub responses: u64,
    /// Requests ended with a transport failure so far.
    pub errors: u64,
    /// The interval that just ended.
    pub point: TimelinePoint,
}

struct Shared {
    config: EngineConfig,
    stats: Mutex<Stats>,
    next: AtomicU64,
    start: Instant,
}

impl Shared {
    fn stats(&self) -> MutexGuard<'_, Stats> {
        // A worker that panicked mid-update leaves counters that are still worth reporting.
        self.stats.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Request `i` and its class (0 without a mix).
    fn request(&self, i: u64) -> (&RequestSpec, usize) {
        match &self.config.mix {
            // `run` checked there is one request per class.
            Some(mix) => {
                let class = mix.class_of(i);
                (&self.config.requests[class], class)
            }
            None => {
                let n = self.config.requests.len() as u64;
                (&self.config.requests[(i % n) as usize], 0)
            }
        }
    }
}

/// Runs the load described by `config`, calling `on_tick` once per timeline interval, and
/// returns the report.
pub async fn run(
    config: EngineConfig,
    mut on_tick: impl FnMut(&Live),
) -> Result<Report, LoadError> {
    if config.requests.is_empty() {
        return Err(LoadError::NoRequests);
    }
    if config.connections == 0 || config.timeout.is_zero() || config.interval.is_zero() {
        return Err(LoadError::Config("connections, timeout and interval must be positive".into()));
    }
    if let Some(mix) = &config.mix {
        if mix.classes().len() != config.requests.len() {
            return Err(LoadError::Config(format!(
                "a mix of {} classes needs one request per class, not {}",
                mix.classes().len(),
                config.requests.len()
            )));
        }
    }
    let target = Arc::new(config.target.clone());
    // Fail fast when the target is down.
    tokio::net::TcpStream::connect(target.addr)
        .await
        .map_err(|_| LoadError::Connect(target.addr))?;

    // Like wrk, one event loop per thread: each thread runs a current-thread runtime with its
    // share of the connections, so a request, its response and its connection stay on one
    // thread. An HTTP/2 connection and all its streams live on the same thread.
    let threads = config.threads.clamp(1, config.connections);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut go = Vec::with_capacity(threads);
    for t in 0..threads {
        let connections = (t..config.connections).step_by(threads).count();
        let (go_tx, go_rx) = tokio::sync::oneshot::channel::<Arc<Shared>>();
        go.push(go_tx);
        let (target, ready, done) = (target.clone(), ready_tx.clone(), done_tx.clone());
        let (http2, streams) = (config.http2, config.streams_per_connection.max(1));
        std::thread::Builder::new()
            .name(format!("spillway-load-{t}"))
            .spawn(move || {
                if let Ok(runtime) =
                    tokio::runtime::Builder::new_current_thread().enable_all().build()
                {
                    runtime.block_on(worker_thread(
                        target,
                        connections,
                        http2,
                        streams,
                        ready,
                        go_rx,
                    ));
                }
                let _ = done.send(());
            })
            .map_err(|e| LoadError::Config(format!("cannot start a load thread: {e}")))?;
    }
    drop((ready_tx, done_tx));
    for _ in 0..threads {
        // A thread that failed to start its runtime has dropped its sender: it still counts.
        let _ = ready_rx.recv().await;
    }

    let shapes = config.plan.shapes();
    let shared = Arc::new(Shared {
        stats: Mutex::new(Stats::new(shapes.len(), config.mix.as_deref())),
        next: AtomicU64::new(0),
        start: Instant::now(),
        config,
    });
    for go in go {
        let _ = go.send(shared.clone());
    }

    let interval = shared.config.interval;
    let duration = shared.config.plan.duration();
    let mut ticker = tokio::time::interval_at(shared.start + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_tick = shared.start;
    let mut timeline = Vec::new();
    // `last` marks the final, partial interval, kept only when it is not a sliver.
    let mut tick = |now: Instant, timeline: &mut Vec<TimelinePoint>, last: bool| {
        if last && now - last_tick <= interval / 10 {
            return;
        }
        let elapsed = now - shared.start;
        let rate = shared.config.plan.target_rate_at(elapsed.saturating_sub(interval / 2));
        let live = {
            let mut stats = shared.stats();
            let point = stats.take_interval(elapsed, now - last_tick, rate);
            Live {
                elapsed,
                duration,
                sent: stats.sent,
                attempts: stats.attempts,
                responses: stats.responses,
                errors: stats.errors,
                point,
            }
        };
        last_tick = now;
        on_tick(&live);
        timeline.push(live.point);
    };
    loop {
        tokio::select! {
            _ = ticker.tick() => tick(Instant::now(), &mut timeline, false),
            done = done_rx.recv() => if done.is_none() { break },
        }
    }
    let end = Instant::now();
    tick(end, &mut timeline, true);

    let stats = shared.stats();
    let steps: Vec<_> =
        shapes.iter().enumerate().map(|(k, s)| stats.step_report(Some(k), *s)).collect();
    let whole = StepShape {
        target_rate: if shapes.len() == 1 { shapes[0].target_rate } else { None },
        start: Duration::ZERO,
        duration,
        planned: shapes.iter().map(|s| s.planned).sum(),
    };
    let overall = stats.step_report(None, whole);
    Ok(Report {
        schema: REPORT_SCHEMA.to_string(),
        target: shared.config.url.clone(),
        mode: shared.config.plan.mode(),
        http_version: if shared.config.http2 { "HTTP/2" } else { "HTTP/1.1" }.to_string(),
        connections: shared.config.connections,
        duration_s: duration.as_secs_f64(),
        elapsed_s: (end - shared.start).as_secs_f64(),
        steps,
        overall,
        timeline,
        mix_header: shared.config.mix.as_ref().map(|m| m.header().to_string()),
        client_retries: (shared.config.retry.retries() > 0).then(|| ClientRetrySettings {
            retries: shared.config.retry.retries(),
            backoff_ms: shared.config.retry.backoff().as_secs_f64() * 1e3,
        }),
    })
}

/// One load thread: opens its connections, says it is ready, waits for the start, then runs
/// one worker per HTTP/1.1 connection or per HTTP/2 stream.
async fn worker_thread(
    target: Arc<Target>,
    connections: usize,
    http2: bool,
    streams: usize,
    ready: tokio::sync::mpsc::UnboundedSender<()>,
    go: tokio::sync::oneshot::Receiver<Arc<Shared>>,
) {
    let mut slots = Vec::new();
    for _ in 0..connections {
        if http2 {
            let first = Slot::h2(target.clone());
            for _ in 1..streams {
                slots.push(first.share());
            }
            slots.push(first);
        } else {
            slots.push(Slot::h1(target.clone()));
        }
    }
    // Connect before the clock starts; a failure here is retried by the first request.
    for slot in &mut slots {
        let _ = slot.warm_up().await;
    }
    let _ = ready.send(());
    let Ok(shared) = go.await else { return };
    let mut workers = JoinSet::new();
    for mut slot in slots {
        let shared = shared.clone();
        workers.spawn(async move {
            match shared.config.plan {
                Plan::Closed { .. } => closed_worker(&shared, &mut slot).await,
                _ => scheduled_worker(&shared, &mut slot).await,
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

/// A request between attempts: which one, where its latency counts from, how many retries it
/// has had, and when the next attempt is due.
struct Pending {
    i: u64,
    step: usize,
    class: usize,
    measured_from: Instant,
    retries: u32,
    due: Instant,
}

/// Ends a request with the outcome of its last attempt, or queues its next attempt on this
/// worker. One backoff for all and `now` only grows, so the queue stays in due order.
fn settle(
    shared: &Shared,
    mut request: Pending,
    result: Result<u16, Failure>,
    pending: &mut VecDeque<Pending>,
) {
    let now = Instant::now();
    match shared.config.retry.next(result, request.retries) {
        Some(backoff) => {
            request.retries += 1;
            request.due = now + backoff;
            pending.push_back(request);
        }
        None => {
            let latency = now - request.measured_from;
            shared.stats().on_done(request.step, request.class, result, latency);
        }
    }
}

/// The first queued request if it is due by `until`.
fn pop_due(pending: &mut VecDeque<Pending>, until: Instant) -> Option<Pending> {
    if pending.front()?.due <= until {
        pending.pop_front()
    } else {
        None
    }
}

/// Sends the next attempt of a queued request.
async fn retry(
    shared: &Shared,
    slot: &mut Slot,
    watchdog: &mut Watchdog,
    request: Pending,
    pending: &mut VecDeque<Pending>,
) {
    let (spec, _) = shared.request(request.i);
    shared.stats().on_retry(request.step);
    let result = slot.send_within(spec, Instant::now(), watchdog).await;
    settle(shared, request, result, pending);
}

/// Open loop and replay: send request `i` at `start + offset(i)`; send this worker's retries
/// when they are due, between arrivals (see the module doc).
async fn scheduled_worker(shared: &Shared, slot: &mut Slot) {
    let send_deadline = shared.start + shared.config.plan.duration() + SEND_GRACE;
    let mut watchdog = Watchdog::new(shared.config.timeout);
    let mut pending: VecDeque<Pending> = VecDeque::new();
    loop {
        // A retry due now is older than any arrival still to claim.
        if let Some(request) = pop_due(&mut pending, Instant::now()) {
            retry(shared, slot, &mut watchdog, request, &mut pending).await;
            continue;
        }
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        let Some(arrival) = shared.config.plan.arrival(i) else { break };
        let intended = shared.start + arrival.offset;
        // Retries falling due by this arrival's time go out while waiting for it; if they
        // make it late, it is `behind` like any arrival that waited for a connection.
        while let Some(request) = pop_due(&mut pending, intended) {
            tokio::time::sleep_until(request.due).await;
            retry(shared, slot, &mut watchdog, request, &mut pending).await;
        }
        let claimed = Instant::now();
        let (measured_from, behind) = if claimed < intended {
            tokio::time::sleep_until(intended).await;
            // Timer slack (~1 ms) is ours, not the target's: measure from the real send.
            (Instant::now(), false)
        } else if claimed > send_deadline {
            // Out of time: the rest of the plan counts as missed.
            break;
        } else {
            (intended, true)
        };
        let at = measured_from.max(claimed);
        let lag = at.saturating_duration_since(intended);
        let (spec, class) = shared.request(i);
        shared.stats().on_send(arrival.step, class, behind, at - shared.start, Some(lag));
        let result = slot.send_within(spec, at, &mut watchdog).await;
        let request = Pending { i, step: arrival.step, class, measured_from, retries: 0, due: at };
        settle(shared, request, result, &mut pending);
    }
    // The schedule is over; the requests still retrying here end here (each has at most
    // `retries` attempts left, so this is bounded).
    while let Some(request) = pending.pop_front() {
        tokio::time::sleep_until(request.due).await;
        retry(shared, slot, &mut watchdog, request, &mut pending).await;
    }
}

/// Closed loop: send, wait for the response (retrying errors in line), send again, until time
/// or count runs out.
async fn closed_worker(shared: &Shared, slot: &mut Slot) {
    let Plan::Closed { duration, max_requests } = shared.config.plan else { return };
    let end = shared.start + duration;
    let mut watchdog = Watchdog::new(shared.config.timeout);
    let mut now = Instant::now();
    loop {
        if now >= end {
            break;
        }
        let i = shared.next.fetch_add(1, Ordering::Relaxed);
        if max_requests.is_some_and(|max| i >= max) {
            break;
        }
        let (request, class) = shared.request(i);
        let mut result = slot.send_within(request, now, &mut watchdog).await;
        let mut retries = 0;
        while let Some(backoff) = shared.config.retry.next(result, retries) {
            if !backoff.is_zero() {
                tokio::time::sleep(backoff).await;
            }
            retries += 1;
            result = slot.send_within(request, Instant::now(), &mut watchdog).await;
        }
        let done = Instant::now();
        // One lock per request: in closed loop the send and its end are recorded together.
        shared.stats().on_exchange(class, now - shared.start, result, done - now, retries);
        now = done;
        if result == Err(Failure::Connect) {
            // Do not spin on a refused port: a short pause keeps the error count meaningful.
            tokio::time::sleep(Duration::from_millis(10)).await;
            now = Instant::now();
        }
    }
}
