//! `spillway backend`: an HTTP/1.1 server with a fixed capacity — `concurrency` slots, each
//! request holding one for `service_time` — to put behind the gateway in overload tests, with
//! faults (failing answers, a slow tail, hard down) that a script can switch while it runs.
//!
//! It models a dependency with fixed capacity (a connection pool, a licence, a disk), not CPU
//! work: a request waits for a free slot, sleeps for the service time, and answers 200 with a
//! small body, echoing `x-spillway-criticality`. Waiting requests queue FIFO without bound
//! (unless `queue_limit`), as in a naive server, and the work is detached from the
//! connection: a request whose client gave up still waits for its slot and still uses it (it is
//! then counted as `abandoned`). That wasted work is what makes an unprotected service collapse
//! under overload — its goodput falls to zero while it stays busy — and what a gateway in front
//! must prevent.
//!
//! Faults ([`faults`]), to prove a gateway's retry budget, breaker and hedging:
//! - `fail_ratio` of the requests that get a slot are answered with `fail_status` (503 by
//!   default) instead of 200, *after* their service time: a failing backend still works.
//! - `tail_ratio` of them hold their slot for `tail_time` instead of the service time.
//! - `down`: every request is answered 503 at once, without a slot and without touching the
//!   queue (the connection stays open). A refused connection would model a dead host better,
//!   but a listener that stops accepting keeps the kernel's backlog accepting for it, and
//!   closing it would give the port away; an immediate 503 is a hard-down *service* on a live
//!   host, exact and observable.
//!
//! Each draw comes from a seeded [`faults::SplitMix64`] shared by all connections (`seed` fixes
//! it; the seed in use is in `/stats`). Faults are read when a request gets its slot, `down`
//! when it arrives.
//!
//! Two paths never take a slot and are not counted as traffic: `GET /stats` answers the
//! counters as JSON ([`BackendStats`]); `GET /control` answers the fault settings and
//! `POST /control` with a JSON object changes some of them (e.g. `{"fail_ratio":0.5}`,
//! `{"down":true}`, `{"tail_ratio":0.05,"tail_time_ms":200}`) and answers the new settings, or
//! 400 with `{"error": ...}` and no change when a value is invalid.

pub mod faults;

use crate::cli::CliError;
use bytes::Bytes;
use faults::{ControlUpdate, FaultError, Faults, SplitMix64, MAX_CONTROL_BODY};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// The header echoed back and counted per value.
pub const CRITICALITY_HEADER: &str = "x-spillway-criticality";
/// The header a gateway numbers its attempts with; counted per value in `by_attempt`.
pub const ATTEMPT_HEADER: &str = "x-spillway-attempt";
/// Distinct values of a counted header kept apart in `/stats`; further ones count as `other`.
pub const MAX_COUNTED_VALUES: usize = 32;
/// Key in `by_criticality` (and `by_attempt`) of requests without the header.
pub const NO_CRITICALITY: &str = "none";
/// Key in `by_criticality` (and `by_attempt`) of values beyond [`MAX_COUNTED_VALUES`] or not
/// UTF-8.
pub const OTHER_CRITICALITY: &str = "other";

/// How the backend behaves.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Address to listen on (port 0: any free port).
    pub listen: SocketAddr,
    /// Listen on a non-loopback address.
    pub allow_remote: bool,
    /// Requests served at once.
    pub concurrency: NonZeroUsize,
    /// How long each request holds its slot.
    pub service_time: Duration,
    /// Most requests waiting for a slot; beyond it a request is answered 503 at once (`None`:
    /// no limit, the naive server).
    pub queue_limit: Option<usize>,
    /// Faults at start (none by default); `POST /control` changes them while it runs.
    pub faults: Faults,
    /// Seed of the fault draws (`None`: from the clock; the seed used is in `/stats`).
    pub seed: Option<u64>,
}

/// The backend could not start.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A non-loopback address without `allow_remote`.
    #[error("{0} is not a loopback address: pass --allow-remote to listen on it")]
    NotLoopback(SocketAddr),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The faults it was started with are invalid.
    #[error(transparent)]
    Faults(#[from] FaultError),
}

/// What `GET /stats` answers.
///
/// Traffic is every request but `GET /stats` and `/control`. Once nothing is in flight,
/// `received = served + rejected_queue_full + refused_down` (plus requests whose body broke
/// off, answered 400).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendStats {
    /// Traffic requests that arrived, however they were answered.
    #[serde(default)]
    pub received: u64,
    /// Requests that completed their service (or tail) time, including abandoned and failed
    /// ones.
    pub served: u64,
    /// `served` by `x-spillway-criticality` value (`none` without the header).
    pub by_criticality: BTreeMap<String, u64>,
    /// `received` by `x-spillway-attempt` value (`none` without the header, `other` beyond 32
    /// values): how often a gateway in front retried.
    #[serde(default)]
    pub by_attempt: BTreeMap<String, u64>,
    /// Served requests answered with the fail status because of `fail_ratio`.
    #[serde(default)]
    pub failed: u64,
    /// Served requests that took the tail time because of `tail_ratio`.
    #[serde(default)]
    pub tail: u64,
    /// Requests answered 503 at once because the backend was down.
    #[serde(default)]
    pub refused_down: u64,
    /// Served requests whose client had gone by the time they completed (wasted work).
    pub abandoned: u64,
    /// Requests answered 503 because the queue was at its limit.
    pub rejected_queue_full: u64,
    /// Requests holding a slot now.
    pub in_service: u64,
    /// Requests waiting for a slot now.
    pub queued: u64,
    /// Most requests ever holding a slot at once.
    pub max_concurrent: u64,
    /// Longest queue seen.
    pub max_queued: u64,
    /// Configured slots.
    pub concurrency: usize,
    /// Configured service time, milliseconds.
    pub service_time_ms: f64,
    /// Configured queue limit, if any.
    pub queue_limit: Option<usize>,
    /// Seed of the fault draws.
    #[serde(default)]
    pub seed: u64,
}

struct State {
    config: BackendConfig,
    seed: u64,
    rng: SplitMix64,
    faults: Mutex<Faults>,
    slots: Arc<Semaphore>,
    received: AtomicU64,
    served: AtomicU64,
    failed: AtomicU64,
    tail: AtomicU64,
    refused_down: AtomicU64,
    abandoned: AtomicU64,
    rejected_queue_full: AtomicU64,
    in_service: AtomicU64,
    queued: AtomicU64,
    max_concurrent: AtomicU64,
    max_queued: AtomicU64,
    by_criticality: Mutex<BTreeMap<String, u64>>,
    by_attempt: Mutex<BTreeMap<String, u64>>,
}

/// Locks a counter map or the settings; a thread that panicked holding it left values that
/// are still worth using.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Adds one to the count of a header's value, keeping at most [`MAX_COUNTED_VALUES`] keys.
fn count_value(counts: &Mutex<BTreeMap<String, u64>>, value: Option<&HeaderValue>) {
    let key = match value.map(|v| v.to_str()) {
        None => NO_CRITICALITY,
        Some(Ok(v)) => v,
        Some(Err(_)) => OTHER_CRITICALITY,
    };
    let mut counts = lock(counts);
    if let Some(n) = counts.get_mut(key) {
        *n += 1;
    } else if counts.len() < MAX_COUNTED_VALUES {
        counts.insert(key.to_string(), 1);
    } else {
        *counts.entry(OTHER_CRITICALITY.to_string()).or_default() += 1;
    }
}

impl State {
    fn new(config: BackendConfig) -> State {
        let seed = config.seed.unwrap_or_else(faults::seed_from_time);
        State {
            seed,
            rng: SplitMix64::new(seed),
            faults: Mutex::new(config.faults),
            slots: Arc::new(Semaphore::new(config.concurrency.get())),
            config,
            received: AtomicU64::new(0),
            served: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            refused_down: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            rejected_queue_full: AtomicU64::new(0),
            in_service: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            max_concurrent: AtomicU64::new(0),
            max_queued: AtomicU64::new(0),
            by_criticality: Mutex::new(BTreeMap::new()),
            by_attempt: Mutex::new(BTreeMap::new()),
        }
    }

    fn stats(&self) -> BackendStats {
        BackendStats {
            received: self.received.load(Ordering::Relaxed),
            served: self.served.load(Ordering::Relaxed),
            by_criticality: lock(&self.by_criticality).clone(),
            by_attempt: lock(&self.by_attempt).clone(),
            failed: self.failed.load(Ordering::Relaxed),
            tail: self.tail.load(Ordering::Relaxed),
            refused_down: self.refused_down.load(Ordering::Relaxed),
            abandoned: self.abandoned.load(Ordering::Relaxed),
            rejected_queue_full: self.rejected_queue_full.load(Ordering::Relaxed),
            in_service: self.in_service.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            max_concurrent: self.max_concurrent.load(Ordering::Relaxed),
            max_queued: self.max_queued.load(Ordering::Relaxed),
            concurrency: self.config.concurrency.get(),
            service_time_ms: self.config.service_time.as_secs_f64() * 1000.0,
            queue_limit: self.config.queue_limit,
            seed: self.seed,
        }
    }

    fn faults(&self) -> Faults {
        *lock(&self.faults)
    }

    /// Applies a control update as a whole, or not at all.
    fn control(&self, update: &ControlUpdate) -> Result<Faults, FaultError> {
        let mut faults = lock(&self.faults);
        *faults = update.apply(&faults)?;
        Ok(*faults)
    }

    fn count_served(&self, criticality: Option<&HeaderValue>, service: &faults::Service) {
        self.served.fetch_add(1, Ordering::Relaxed);
        self.failed.fetch_add(u64::from(service.fail.is_some()), Ordering::Relaxed);
        self.tail.fetch_add(u64::from(service.tail), Ordering::Relaxed);
        count_value(&self.by_criticality, criticality);
    }
}

/// A running backend; stops when [`Backend::stop`] is called or it is dropped.
pub struct Backend {
    addr: SocketAddr,
    state: Arc<State>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Backend {
    /// Binds `config.listen` and starts serving on the current runtime.
    pub async fn start(config: BackendConfig) -> Result<Backend, BackendError> {
        if !config.allow_remote && !config.listen.ip().is_loopback() {
            return Err(BackendError::NotLoopback(config.listen));
        }
        config.faults.check()?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| BackendError::Bind { addr: config.listen, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| BackendError::Bind { addr: config.listen, source })?;
        let state = Arc::new(State::new(config));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, state.clone(), stopped));
        Ok(Backend { addr, state, stop, task: Some(task) })
    }

    /// The address it listens on (with the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters, as `GET /stats` answers them.
    pub fn stats(&self) -> BackendStats {
        self.state.stats()
    }

    /// The fault settings now, as `GET /control` answers them.
    pub fn faults(&self) -> Faults {
        self.state.faults()
    }

    /// Changes the fault settings, as `POST /control` does: all of `update` or nothing.
    pub fn control(&self, update: &ControlUpdate) -> Result<Faults, FaultError> {
        self.state.control(update)
    }

    /// Stops accepting, closes every connection and returns the final counters.
    pub async fn stop(mut self) -> BackendStats {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.state.stats()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, mut stopped: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| handle(req, state.clone()));
                    let _ = http1::Builder::new()
                        .timer(TokioTimer::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }
    }
    connections.shutdown().await;
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec_pretty(value).unwrap_or_default();
    body.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The body of a refused `POST /control`.
#[derive(Serialize)]
struct ControlError {
    error: String,
}

/// `GET /control` shows the fault settings; `POST /control` changes them (400 and no change
/// when the body is not valid).
async fn control(request: Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    match *request.method() {
        Method::GET => json(StatusCode::OK, &state.faults().view()),
        Method::POST => {
            let refused = |e: FaultError| {
                json(StatusCode::BAD_REQUEST, &ControlError { error: e.to_string() })
            };
            let body = match Limited::new(request.into_body(), MAX_CONTROL_BODY).collect().await {
                Ok(body) => body.to_bytes(),
                Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                    return refused(FaultError::TooLarge)
                }
                Err(_) => return text(StatusCode::BAD_REQUEST, "bad request body\n"),
            };
            match ControlUpdate::parse(&body).and_then(|update| state.control(&update)) {
                Ok(faults) => json(StatusCode::OK, &faults.view()),
                Err(e) => refused(e),
            }
        }
        _ => {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "use GET or POST\n");
            response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
            response
        }
    }
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    match request.uri().path() {
        "/stats" if request.method() == Method::GET => {
            return Ok(json(StatusCode::OK, &state.stats()))
        }
        "/control" => return Ok(control(request, &state).await),
        _ => {}
    }
    state.received.fetch_add(1, Ordering::Relaxed);
    count_value(&state.by_attempt, request.headers().get(ATTEMPT_HEADER));
    let criticality = request.headers().get(CRITICALITY_HEADER).cloned();
    // Read the request body so the connection can be reused; its content does not matter.
    let mut body = request.into_body();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            return Ok(text(StatusCode::BAD_REQUEST, "bad request body\n"));
        }
    }

    if state.faults().down {
        state.refused_down.fetch_add(1, Ordering::Relaxed);
        return Ok(text(StatusCode::SERVICE_UNAVAILABLE, "down\n"));
    }

    let permit = match state.slots.clone().try_acquire_owned() {
        Ok(permit) => Some(permit),
        Err(_) => {
            let waiting = state.queued.fetch_add(1, Ordering::Relaxed);
            if state.config.queue_limit.is_some_and(|limit| waiting >= limit as u64) {
                state.queued.fetch_sub(1, Ordering::Relaxed);
                state.rejected_queue_full.fetch_add(1, Ordering::Relaxed);
                return Ok(text(StatusCode::SERVICE_UNAVAILABLE, "queue full\n"));
            }
            state.max_queued.fetch_max(waiting + 1, Ordering::Relaxed);
            None
        }
    };

    // The work runs detached from the connection: a client that gives up does not free its
    // place in the queue or its slot (a naive server does not notice).
    let (done, answer) = tokio::sync::oneshot::channel::<Option<StatusCode>>();
    let work_state = state.clone();
    let work_criticality = criticality.clone();
    tokio::spawn(async move {
        let state = work_state;
        let permit = match permit {
            Some(permit) => permit,
            None => {
                let permit = state.slots.clone().acquire_owned().await;
                state.queued.fetch_sub(1, Ordering::Relaxed);
                // The semaphore is never closed.
                let Ok(permit) = permit else { return };
                permit
            }
        };
        // The faults in force when the work starts decide it.
        let draws = [state.rng.next_f64(), state.rng.next_f64()];
        let service = state.faults().decide(state.config.service_time, draws);
        let busy = state.in_service.fetch_add(1, Ordering::Relaxed) + 1;
        state.max_concurrent.fetch_max(busy, Ordering::Relaxed);
        tokio::time::sleep(service.hold).await;
        state.in_service.fetch_sub(1, Ordering::Relaxed);
        drop(permit);
        state.count_served(work_criticality.as_ref(), &service);
        if done.send(service.fail).is_err() {
            state.abandoned.fetch_add(1, Ordering::Relaxed);
        }
    });
    let Ok(fail) = answer.await else {
        return Ok(text(StatusCode::INTERNAL_SERVER_ERROR, "lost\n"));
    };
    let mut response = match fail {
        Some(status) => text(status, "injected failure\n"),
        None => text(StatusCode::OK, "ok\n"),
    };
    if let Some(value) = criticality {
        response.headers_mut().insert(CRITICALITY_HEADER, value);
    }
    Ok(response)
}

/// `spillway backend`: runs until SIGINT/SIGTERM or `duration`, on `threads` worker threads
/// (1: a current-thread runtime). Prints `listening on ADDR` on stdout once bound (so scripts
/// can start it on port 0), and the final `/stats` JSON on stdout when it stops.
pub fn serve(
    config: BackendConfig,
    duration: Option<Duration>,
    threads: NonZeroUsize,
) -> Result<BackendStats, CliError> {
    let runtime = if threads.get() == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.get())
            .enable_all()
            .build()
    }
    .map_err(CliError::msg)?;
    runtime.block_on(async move {
        let backend = Backend::start(config).await.map_err(CliError::msg)?;
        println!("listening on {}", backend.addr());
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        let until = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = until => {}
            _ = shutdown_signal() => {}
        }
        let stats = backend.stop().await;
        println!("{}", serde_json::to_string(&stats).map_err(CliError::msg)?);
        Ok(stats)
    })
}

/// Resolves on SIGINT or SIGTERM (Ctrl-C only off Unix). If a handler cannot be installed, that
/// signal is simply not awaited.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Empty;
    use hyper::client::conn::http1 as client;
    use tokio::time::Instant;

    fn config(concurrency: usize, queue_limit: Option<usize>) -> BackendConfig {
        BackendConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            allow_remote: false,
            concurrency: NonZeroUsize::new(concurrency).unwrap(),
            service_time: Duration::from_millis(50),
            queue_limit,
            faults: Faults::default(),
            seed: Some(1),
        }
    }

    fn faulty(faults: Faults) -> BackendConfig {
        BackendConfig { faults, ..config(1, None) }
    }

    /// `POST /control` with `body`: status and the JSON answered.
    async fn post_control(addr: SocketAddr, body: &str) -> (u16, serde_json::Value) {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = client::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let request = Request::post("/control")
            .header(header::HOST, "backend")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    /// One request on its own connection: status, echoed criticality, body.
    async fn get(
        addr: SocketAddr,
        path: &str,
        criticality: Option<&str>,
    ) -> (u16, Option<String>, Bytes) {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = client::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(conn);
        let mut request = Request::get(path).header(header::HOST, "backend");
        if let Some(c) = criticality {
            request = request.header(CRITICALITY_HEADER, c);
        }
        let response =
            sender.send_request(request.body(Empty::<Bytes>::new()).unwrap()).await.unwrap();
        let status = response.status().as_u16();
        let echoed =
            response.headers().get(CRITICALITY_HEADER).map(|v| v.to_str().unwrap().to_string());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, echoed, body)
    }

    #[tokio::test(start_paused = true)]
    async fn four_requests_on_two_slots_take_two_service_times() {
        let backend = Backend::start(config(2, None)).await.unwrap();
        let addr = backend.addr();
        assert!(addr.ip().is_loopback() && addr.port() != 0);
        let started = Instant::now();
        let classes = ["SHEDDABLE", "CRITICAL", "CRITICAL", "CRITICAL_PLUS"];
        let answers = futures_join_all(classes.iter().map(|c| get(addr, "/work", Some(*c)))).await;
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(100), "took {elapsed:?}");
        assert!(elapsed < Duration::from_millis(150), "took {elapsed:?}");
        for ((status, echoed, body), class) in answers.iter().zip(classes) {
            assert_eq!(*status, 200);
            assert_eq!(echoed.as_deref(), Some(class));
            assert_eq!(&body[..], b"ok\n");
        }

        let (status, _, body) = get(addr, "/stats", None).await;
        assert_eq!(status, 200);
        let stats: BackendStats = serde_json::from_slice(&body).unwrap();
        assert_eq!(stats.served, 4);
        assert_eq!(stats.by_criticality["CRITICAL"], 2);
        assert_eq!(stats.by_criticality["SHEDDABLE"], 1);
        assert_eq!(stats.by_criticality["CRITICAL_PLUS"], 1);
        assert_eq!((stats.max_concurrent, stats.max_queued), (2, 2));
        assert_eq!((stats.in_service, stats.queued, stats.abandoned), (0, 0, 0));
        assert_eq!((stats.concurrency, stats.service_time_ms), (2, 50.0));
        let last = backend.stop().await;
        assert_eq!(last.served, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_answers_503_at_once() {
        let backend = Backend::start(config(1, Some(1))).await.unwrap();
        let addr = backend.addr();
        let started = Instant::now();
        let answers = futures_join_all((0..3).map(|_| get(addr, "/", None))).await;
        let mut statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 200, 503]);
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        let stats = backend.stats();
        assert_eq!((stats.served, stats.rejected_queue_full), (2, 1));
        assert_eq!(stats.by_criticality[NO_CRITICALITY], 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_leaves_still_costs_its_slot() {
        let backend = Backend::start(config(1, None)).await.unwrap();
        let addr = backend.addr();
        // The first request is abandoned while in service; the second still waits behind it.
        let gone = tokio::spawn(get(addr, "/", None));
        tokio::time::sleep(Duration::from_millis(10)).await;
        gone.abort();
        let started = Instant::now();
        let (status, _, _) = get(addr, "/", None).await;
        assert_eq!(status, 200);
        assert!(started.elapsed() >= Duration::from_millis(90), "{:?}", started.elapsed());
        let stats = backend.stop().await;
        assert_eq!((stats.served, stats.abandoned), (2, 1));
    }

    #[tokio::test]
    async fn remote_addresses_need_allow_remote() {
        let remote = BackendConfig { listen: "0.0.0.0:0".parse().unwrap(), ..config(1, None) };
        let err = Backend::start(remote).await.err().unwrap();
        assert!(err.to_string().contains("--allow-remote"), "{err}");
    }

    #[test]
    fn criticality_and_attempt_values_are_counted_with_a_cap() {
        let state = State::new(config(1, None));
        let service = Faults::default().decide(Duration::ZERO, [0.0, 0.0]);
        for k in 0..40 {
            let value = HeaderValue::from_str(&format!("v{k}")).unwrap();
            state.count_served(Some(&value), &service);
            count_value(&state.by_attempt, Some(&value));
        }
        state.count_served(None, &service);
        count_value(&state.by_attempt, None);
        let stats = state.stats();
        assert_eq!(stats.served, 41);
        assert_eq!(stats.by_criticality.len(), MAX_COUNTED_VALUES + 1);
        assert_eq!(stats.by_criticality[OTHER_CRITICALITY], 9);
        assert_eq!(stats.by_attempt.len(), MAX_COUNTED_VALUES + 1);
        assert_eq!(stats.by_attempt[OTHER_CRITICALITY], 9);
        assert_eq!((stats.failed, stats.tail, stats.seed), (0, 0, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn failing_requests_still_take_their_slot_and_service_time() {
        let faults = Faults {
            fail_ratio: faults::Ratio::ONE,
            fail_status: faults::FailStatus::try_new(500).unwrap(),
            ..Faults::default()
        };
        let backend = Backend::start(faulty(faults)).await.unwrap();
        let addr = backend.addr();
        let started = Instant::now();
        let answers = futures_join_all((0..2).map(|_| get(addr, "/", Some("C")))).await;
        // One slot, 50 ms each: the second failure waited for the first.
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        for (status, echoed, body) in answers {
            assert_eq!((status, echoed.as_deref()), (500, Some("C")));
            assert_eq!(&body[..], b"injected failure\n");
        }
        let stats = backend.stop().await;
        assert_eq!((stats.received, stats.served, stats.failed), (2, 2, 2));
        assert_eq!(stats.by_attempt[NO_CRITICALITY], 2);
    }

    #[tokio::test(start_paused = true)]
    async fn tail_requests_take_the_tail_time() {
        let faults = Faults {
            tail_ratio: faults::Ratio::ONE,
            tail_time: Duration::from_millis(300),
            ..Faults::default()
        };
        let backend = Backend::start(faulty(faults)).await.unwrap();
        let started = Instant::now();
        let (status, _, _) = get(backend.addr(), "/", None).await;
        assert_eq!((status, started.elapsed()), (200, Duration::from_millis(300)));
        let stats = backend.stop().await;
        assert_eq!((stats.received, stats.served, stats.tail, stats.failed), (1, 1, 1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_down_backend_answers_503_at_once_without_a_slot() {
        let backend = Backend::start(config(1, Some(0))).await.unwrap();
        let addr = backend.addr();
        let (status, body) = post_control(addr, r#"{"down":true}"#).await;
        assert_eq!((status, &body["down"]), (200, &serde_json::Value::Bool(true)));
        let started = Instant::now();
        let answers = futures_join_all((0..3).map(|_| get(addr, "/", None))).await;
        assert!(answers.iter().all(|(status, _, body)| *status == 503 && &body[..] == b"down\n"));
        assert_eq!(started.elapsed(), Duration::ZERO);
        let stats = backend.stats();
        assert_eq!((stats.received, stats.refused_down, stats.served), (3, 3, 0));
        assert_eq!((stats.max_concurrent, stats.rejected_queue_full), (0, 0));
        // Back up: served again.
        assert_eq!(post_control(addr, r#"{"down":false}"#).await.0, 200);
        assert_eq!(get(addr, "/", None).await.0, 200);
    }

    #[tokio::test(start_paused = true)]
    async fn control_shows_and_changes_settings_and_refuses_bad_ones_unchanged() {
        let backend = Backend::start(config(1, None)).await.unwrap();
        let addr = backend.addr();
        let (status, _, body) = get(addr, "/control", None).await;
        let shown: faults::FaultsView = serde_json::from_slice(&body).unwrap();
        assert_eq!((status, shown), (200, Faults::default().view()));
        let (status, now) = post_control(addr, r#"{"fail_ratio":0.5,"fail_status":502}"#).await;
        assert_eq!(
            (status, &now["fail_ratio"], &now["fail_status"]),
            (200, &0.5.into(), &502.into())
        );
        let (status, refused) = post_control(addr, r#"{"fail_ratio":0.1,"tail_ratio":7}"#).await;
        assert_eq!(status, 400);
        assert!(refused["error"].as_str().unwrap().starts_with("tail_ratio must be"), "{refused}");
        let (status, refused) = post_control(addr, "{oops").await;
        assert_eq!(status, 400);
        assert!(refused["error"].as_str().unwrap().contains("invalid /control body"));
        // Neither refused update changed anything, not even its valid part.
        assert_eq!(backend.faults().fail_ratio.get(), 0.5);
        assert_eq!(backend.faults().fail_status.get(), StatusCode::BAD_GATEWAY);
        // Control and stats are not traffic.
        let stats = backend.stats();
        assert_eq!((stats.received, stats.served), (0, 0));
        assert!(stats.by_attempt.is_empty());
    }

    #[tokio::test]
    async fn invalid_start_faults_are_refused() {
        let faults = Faults { tail_ratio: faults::Ratio::ONE, ..Faults::default() };
        let err = Backend::start(faulty(faults)).await.err().unwrap();
        assert!(err.to_string().contains("needs a tail time"), "{err}");
    }

    /// Runs the futures concurrently as tasks and collects their outputs in order.
    async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handles: Vec<_> = futures.map(tokio::spawn).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}
