//! Retries end to end on real sockets, through the lean HTTP/1.1 path (an `http1` listener)
//! and the hyper path (an `h2c` listener): a retry goes to another endpoint and says which
//! attempt it is; connect failures are retried; the retry budget caps retries at its share of
//! requests (and `budget: false` does not); `Retry-After` is waited for, a long one passed on;
//! no retry starts when the deadline leaves too little; POST is sent once unless
//! `non_idempotent`; a body is replayed; the deadline header is rewritten on every try;
//! `strategy: failfast` never retries; `strategy: forking` hedges a slow try and cancels the
//! loser; `strategy: failsafe` mirrors to a shadow that never changes the answer; what a
//! cluster's concurrency limit sheds goes to its gutter, and what the gutter sheds is refused;
//! `strategy: broadcast` reaches every endpoint and names the ones that failed;
//! `stale_on_error` answers the last good copy when the upstream fails.
//!
//! The backends answer from a script (each request takes the next answer; the last one
//! repeats) and note every arrival: which backend, method, `x-spillway-attempt`,
//! `x-request-timeout` and body.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One scripted answer.
#[derive(Clone, Debug)]
struct Answer {
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    delay: Duration,
}

fn ok() -> Answer {
    Answer { status: 200, headers: vec![], delay: Duration::ZERO }
}

fn status(code: u16) -> Answer {
    Answer { status: code, headers: vec![], delay: Duration::ZERO }
}

/// What a backend saw of one request.
#[derive(Clone, Debug)]
struct Arrival {
    backend: &'static str,
    method: String,
    attempt: Option<String>,
    request_timeout: Option<String>,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Arrival>>>;

/// Requests whose handling a backend abandoned because the gateway went away (hedges that
/// lost the race are cancelled).
static CANCELLED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts a cancellation when dropped before `done`.
struct Unfinished(bool);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.0 {
            CANCELLED.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// A scripted HTTP/1.1 backend named `name`, noting arrivals in `log`.
async fn scripted(name: &'static str, script: &[Answer], log: &Log) -> SocketAddr {
    let script = Arc::new(Mutex::new(script.iter().cloned().collect::<VecDeque<_>>()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let log = log.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (script, log) = (script.clone(), log.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let (script, log) = (script.clone(), log.clone());
                    async move {
                        let header =
                            |n: &str| req.headers().get(n).map(|v| v.to_str().unwrap().to_string());
                        let (attempt, request_timeout) =
                            (header("x-spillway-attempt"), header("x-request-timeout"));
                        let method = req.method().to_string();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        log.lock().unwrap().push(Arrival {
                            backend: name,
                            method,
                            attempt,
                            request_timeout,
                            body: body.clone(),
                        });
                        let answer = {
                            let mut s = script.lock().unwrap();
                            if s.len() > 1 {
                                s.pop_front().unwrap()
                            } else {
                                s.front().cloned().unwrap_or_else(ok)
                            }
                        };
                        let mut unfinished = Unfinished(false);
                        tokio::time::sleep(answer.delay).await;
                        unfinished.0 = true;
                        let mut resp = http::Response::builder().status(answer.status);
                        for (k, v) in &answer.headers {
                            resp = resp.header(*k, *v);
                        }
                        Ok::<_, Infallible>(
                            resp.body(http_body_util::Full::new(Bytes::from(name))).unwrap(),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// Which request path a request takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    Lean,
    Hyper,
}

const BOTH: [Via; 2] = [Via::Lean, Via::Hyper];

struct Gw {
    gw: Option<spillway_gateway::Gateway>,
    lean: SocketAddr,
    h2: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(gw) = self.gw.take() {
            std::thread::spawn(move || gw.shutdown());
        }
    }
}

/// A gateway with one route `api` (its extra keys in `route`, indented four spaces) to a
/// cluster over `endpoints` (round robin, no outlier ejection).
fn start(endpoints: &[SocketAddr], route: &str) -> Gw {
    start_with(endpoints, "", "", route)
}

/// [`start`] with more keys on the route's cluster `app` (`app`: indented four spaces) and more
/// clusters (`clusters`: YAML list items, indented two spaces).
fn start_with(endpoints: &[SocketAddr], app: &str, clusters: &str, route: &str) -> Gw {
    let endpoints: Vec<String> =
        endpoints.iter().map(|a| format!("{{ address: \"{a}\" }}")).collect();
    let yaml = format!(
        r#"
workers: 1
listeners:
  - {{ name: lean, address: "127.0.0.1:0", protocol: http1 }}
  - {{ name: h2, address: "127.0.0.1:0", protocol: h2c }}
admin: {{ address: "127.0.0.1:0" }}
clusters:
  - name: app
    endpoints: [{}]
    balance: round_robin
    timeouts: {{ request: 5s }}
    outlier: {{ consecutive_failures: 0 }}
{app}
{clusters}
routes:
  - name: api
    cluster: app
{route}
"#,
        endpoints.join(", ")
    );
    let gw = gateway(&yaml);
    Gw {
        lean: gw.listener_address("lean").unwrap(),
        h2: gw.listener_address("h2").unwrap(),
        admin: gw.admin_address().unwrap(),
        gw: Some(gw),
    }
}

impl Gw {
    async fn send(
        &self,
        via: Via,
        method: &str,
        headers: &[(&str, &str)],
        payload: &'static str,
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut req = Request::builder().method(method).uri("/x").header("host", "test.local");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body(payload)).unwrap();
        match via {
            Via::Lean => h1(self.lean, req).await,
            Via::Hyper => h2c(self.h2, req).await,
        }
    }

    async fn get(&self, via: Via) -> (StatusCode, HeaderMap, Bytes) {
        self.send(via, "GET", &[], "").await
    }

    async fn metrics(&self) -> String {
        let (status, _, body) = get(self.admin, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        String::from_utf8(body.to_vec()).unwrap()
    }
}

fn taken(log: &Log) -> Vec<Arrival> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_goes_to_the_other_endpoint_and_says_which_attempt_it_is() {
    let log = Log::default();
    let failing = scripted("failing", &[status(503)], &log).await;
    let healthy = scripted("healthy", &[ok()], &log).await;
    let gw = start(&[failing, healthy], "    retries: { attempts: 2, budget: false }");
    for via in BOTH {
        for _ in 0..6 {
            let (status, _, body) = gw.get(via).await;
            assert_eq!(status, StatusCode::OK, "{via:?}");
            assert_eq!(&body[..], b"healthy");
        }
        let arrivals = taken(&log);
        let failed: Vec<_> = arrivals.iter().filter(|a| a.backend == "failing").collect();
        assert!(!failed.is_empty(), "{via:?}: round robin reaches the failing endpoint");
        // Every try at the failing endpoint is a first try, and each is followed by a retry.
        assert!(failed.iter().all(|a| a.attempt.as_deref() == Some("1")), "{arrivals:?}");
        let retried = arrivals.iter().filter(|a| a.attempt.as_deref() == Some("2")).count();
        assert_eq!(retried, failed.len(), "{via:?}: {arrivals:?}");
    }
    let metrics = gw.metrics().await;
    assert!(metrics.contains("spillway_retries_total{route=\"api\",reason=\"503\"}"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_on_another_endpoint() {
    let log = Log::default();
    let refusing = refusing_address();
    let refused = refusing.address;
    let healthy = scripted("healthy", &[ok()], &log).await;
    let gw = start(&[refused, healthy], "    retries: { attempts: 2, budget: false }");
    for via in BOTH {
        for _ in 0..4 {
            let (status, _, _) = gw.get(via).await;
            assert_eq!(status, StatusCode::OK, "{via:?}");
        }
    }
    let metrics = gw.metrics().await;
    assert!(metrics.contains("reason=\"connect_failure\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_caps_retries_at_its_share_of_requests() {
    for via in BOTH {
        let log = Log::default();
        let failing = scripted("failing", &[status(503)], &log).await;
        let gw = start(
            &[failing],
            "    retries: { attempts: 3, backoff: { base: 1ms, max: 1ms }, \
             budget: { ratio: 0.1, min_per_sec: 0 } }",
        );
        for _ in 0..100 {
            let (status, _, _) = gw.get(via).await;
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        }
        // 100 requests may retry 10 times in all (3 attempts would allow 200).
        let upstream = taken(&log).len();
        assert!((100..=111).contains(&upstream), "{via:?}: {upstream} upstream requests");
        let metrics = gw.metrics().await;
        let exhausted = metrics
            .lines()
            .find_map(|l| l.strip_prefix("spillway_retry_budget_exhausted_total{route=\"api\"} "))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap();
        assert!(exhausted >= 85, "{via:?}: {exhausted} refused retries");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_budget_every_failure_is_retried_up_to_the_attempts() {
    let log = Log::default();
    let failing = scripted("failing", &[status(503)], &log).await;
    let gw = start(
        &[failing],
        "    retries: { attempts: 3, backoff: { base: 1ms, max: 1ms }, budget: false }",
    );
    for via in BOTH {
        for _ in 0..10 {
            assert_eq!(gw.get(via).await.0, StatusCode::SERVICE_UNAVAILABLE);
        }
        assert_eq!(taken(&log).len(), 30, "{via:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_waited_for_and_a_long_one_is_passed_to_the_client() {
    let hinted = Answer { status: 503, headers: vec![("retry-after", "1")], delay: Duration::ZERO };
    let long = Answer { status: 503, headers: vec![("retry-after", "30")], delay: Duration::ZERO };
    for via in BOTH {
        let log = Log::default();
        let backend = scripted("b", &[hinted.clone(), ok(), long.clone()], &log).await;
        let gw =
            start(&[backend], "    retries: { attempts: 2, budget: false, max_retry_after: 2s }");
        let started = Instant::now();
        let (status, _, _) = gw.get(via).await;
        assert_eq!(status, StatusCode::OK, "{via:?}");
        assert!(started.elapsed() >= Duration::from_millis(950), "{via:?}: waited the hint");
        // 30 s is longer than max_retry_after: the 503 and its hint go back at once.
        let (status, headers, _) = gw.get(via).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{via:?}");
        assert_eq!(headers.get("retry-after").unwrap(), "30");
        assert_eq!(taken(&log).len(), 3, "{via:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_retry_starts_when_the_deadline_leaves_too_little() {
    let slow = Answer { status: 200, headers: vec![], delay: Duration::from_millis(400) };
    let log = Log::default();
    let backend = scripted("slow", &[slow], &log).await;
    // A try times out after 200 ms; 100 ms are then left of the 300 ms budget, less than the
    // 150 ms a try needs: no retry.
    let gw = start(
        &[backend],
        "    deadline: { default: 300ms, min_remaining: 150ms }\n    \
         retries: { attempts: 3, per_try_timeout: 200ms, on: [timeout], budget: false, \
         backoff: { base: 1ms, max: 1ms } }",
    );
    for via in BOTH {
        let (status, _, _) = gw.get(via).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{via:?}");
        assert_eq!(taken(&log).len(), 1, "{via:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_sent_once_unless_non_idempotent_retries_are_allowed() {
    let log = Log::default();
    let failing = scripted("failing", &[status(503)], &log).await;
    let once = start(&[failing], "    retries: { attempts: 3, budget: false }");
    let again =
        start(&[failing], "    retries: { attempts: 3, budget: false, non_idempotent: true }");
    for via in BOTH {
        assert_eq!(once.send(via, "POST", &[], "order").await.0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(taken(&log).len(), 1, "{via:?}");
        assert_eq!(again.send(via, "POST", &[], "order").await.0, StatusCode::SERVICE_UNAVAILABLE);
        let arrivals = taken(&log);
        assert_eq!(arrivals.len(), 3, "{via:?}");
        assert!(arrivals.iter().all(|a| a.method == "POST" && &a.body[..] == b"order"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_replays_the_body_and_rewrites_the_deadline_header() {
    for via in BOTH {
        let log = Log::default();
        let backend = scripted("b", &[status(502), ok()], &log).await;
        let gw = start(
            &[backend],
            "    deadline: { default: 2s, max: 5s }\n    \
             retries: { attempts: 2, budget: false, \
             backoff: { base: 50ms, max: 50ms, jitter: none } }",
        );
        let headers = [("x-request-timeout", "3s")];
        let (status, _, _) = gw.send(via, "PUT", &headers, "payload").await;
        assert_eq!(status, StatusCode::OK, "{via:?}");
        let arrivals = taken(&log);
        assert_eq!(arrivals.len(), 2, "{via:?}");
        assert!(arrivals.iter().all(|a| &a.body[..] == b"payload"), "{arrivals:?}");
        let budget = |a: &Arrival| {
            spillway_core::deadline::parse_request_timeout(
                a.request_timeout.as_deref().unwrap().as_bytes(),
            )
            .unwrap()
        };
        // The retry carries what is left: at least the 50 ms backoff less.
        assert!(budget(&arrivals[0]) <= Duration::from_secs(3));
        assert!(budget(&arrivals[1]) + Duration::from_millis(50) <= budget(&arrivals[0]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failfast_never_retries() {
    let log = Log::default();
    let failing = scripted("failing", &[status(503)], &log).await;
    let gw = start(&[failing], "    strategy: failfast");
    for via in BOTH {
        assert_eq!(gw.get(via).await.0, StatusCode::SERVICE_UNAVAILABLE);
        let arrivals = taken(&log);
        assert_eq!(arrivals.len(), 1, "{via:?}");
        assert_eq!(arrivals[0].attempt, None, "no attempt header without retries");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forking_hedges_a_slow_try_takes_the_faster_answer_and_cancels_the_other() {
    let log = Log::default();
    let slow = Answer { status: 200, headers: vec![], delay: Duration::from_secs(2) };
    let slow = scripted("slow", &[slow], &log).await;
    let fast = scripted("fast", &[ok()], &log).await;
    let gw =
        start(&[slow, fast], "    strategy: forking\n    hedge: { after: 50ms, max_extra: 1 }");
    let cancelled_before = CANCELLED.load(std::sync::atomic::Ordering::SeqCst);
    // Both listeners: the lean path hands hedged routes to hyper.
    for via in BOTH {
        for _ in 0..4 {
            let started = Instant::now();
            let (status, _, body) = gw.get(via).await;
            assert_eq!(status, StatusCode::OK, "{via:?}");
            assert_eq!(&body[..], b"fast", "{via:?}: the faster answer wins");
            assert!(started.elapsed() < Duration::from_secs(1), "{via:?}: not the slow one");
        }
    }
    let arrivals = taken(&log);
    let at_slow = arrivals.iter().filter(|a| a.backend == "slow").count();
    assert!(at_slow >= 2, "round robin sent first tries to the slow endpoint: {arrivals:?}");
    // Each slow first try was hedged to the fast endpoint as attempt 2.
    let hedges = arrivals.iter().filter(|a| a.attempt.as_deref() == Some("2")).count();
    assert_eq!(hedges, at_slow, "{arrivals:?}");
    // The slow tries were cancelled, not left running.
    let cancelled = || CANCELLED.load(std::sync::atomic::Ordering::SeqCst) - cancelled_before;
    let deadline = Instant::now() + Duration::from_secs(5);
    while cancelled() < at_slow as u64 {
        assert!(Instant::now() < deadline, "{} of {at_slow} slow tries cancelled", cancelled());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let metrics = gw.metrics().await;
    let won = format!("spillway_hedges_total{{route=\"api\",outcome=\"won\"}} {at_slow}");
    assert!(metrics.contains(&won), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedges_come_out_of_the_retry_budget() {
    let log = Log::default();
    let slow = Answer { status: 200, headers: vec![], delay: Duration::from_millis(150) };
    let slow_a = scripted("a", std::slice::from_ref(&slow), &log).await;
    let slow_b = scripted("b", &[slow], &log).await;
    let gw = start(
        &[slow_a, slow_b],
        "    strategy: forking\n    hedge: { after: 10ms }\n    \
         retries: { budget: { ratio: 0.1, min_per_sec: 0 } }",
    );
    for via in BOTH {
        for _ in 0..20 {
            assert_eq!(gw.get(via).await.0, StatusCode::OK);
        }
    }
    // 40 requests, every one slower than the delay: the budget allows 10 % of them a hedge.
    let upstream = taken(&log).len();
    assert!((40..=45).contains(&upstream), "{upstream} upstream requests for 40");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fallback_replaces_an_upstream_5xx_once_retries_are_spent() {
    let log = Log::default();
    let failing = scripted("failing", &[status(503)], &log).await;
    let retries = "    retries: { attempts: 2, budget: false, backoff: { base: 1ms, max: 1ms } }";
    let covered = start(&[failing], &format!("    fallback: {{ body: cached }}\n{retries}"));
    let passed_on =
        start(&[failing], &format!("    fallback: {{ body: cached, on_status: [] }}\n{retries}"));
    for via in BOTH {
        let (status, headers, body) = covered.get(via).await;
        assert_eq!(status, StatusCode::OK, "{via:?}");
        assert_eq!(&body[..], b"cached");
        assert_eq!(headers.get("x-spillway-degraded").unwrap(), "fallback");
        assert_eq!(taken(&log).len(), 2, "{via:?}: both tries failed first");
        let (status, headers, _) = passed_on.get(via).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{via:?}: on_status: [] passes it on");
        assert!(headers.get("x-spillway-degraded").is_none());
        taken(&log);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failsafe_mirror_never_changes_the_answer_even_when_the_shadow_hangs() {
    let log = Log::default();
    let primary = scripted("primary", &[ok()], &log).await;
    let hang = Answer { status: 500, headers: vec![], delay: Duration::from_secs(30) };
    let shadow = scripted("shadow", &[hang], &log).await;
    let gw = start_with(
        &[primary],
        "",
        &format!(
            "  - name: shadow\n    endpoints: [{{ address: \"{shadow}\" }}]\n    \
             timeouts: {{ request: 500ms }}"
        ),
        "    mirror: { cluster: shadow, percent: 100, max_in_flight: 3 }",
    );
    for via in BOTH {
        for _ in 0..3 {
            let started = Instant::now();
            let (status, _, body) = gw.send(via, "PUT", &[], "doc").await;
            assert_eq!(status, StatusCode::OK, "{via:?}");
            assert_eq!(&body[..], b"primary", "{via:?}: the primary's answer");
            assert!(
                started.elapsed() < Duration::from_millis(300),
                "{via:?}: not held by the shadow"
            );
        }
    }
    // The shadow got copies (body included, marked), at most 3 at once: the others were dropped.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let arrivals = taken(&log);
    let copies: Vec<_> = arrivals.iter().filter(|a| a.backend == "shadow").collect();
    assert!(!copies.is_empty() && copies.len() <= 6, "{arrivals:?}");
    assert!(copies.iter().all(|a| a.method == "PUT" && &a.body[..] == b"doc"));
    assert_eq!(arrivals.iter().filter(|a| a.backend == "primary").count(), 6);
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("spillway_mirror_total{route=\"api\",outcome=\"dropped\"} 3"),
        "{metrics}"
    );
    // The hung copies time out at the shadow cluster's 500 ms and free their slots.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("spillway_mirror_total{route=\"api\",outcome=\"failed\"} 3"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_cluster_sheds_goes_to_its_gutter_and_what_the_gutter_sheds_is_refused() {
    for via in BOTH {
        let log = Log::default();
        let slow = Answer { status: 200, headers: vec![], delay: Duration::from_millis(400) };
        let main = scripted("main", std::slice::from_ref(&slow), &log).await;
        let spare = scripted("spare", &[slow], &log).await;
        let gw = Arc::new(start_with(
            &[main],
            "    concurrency: { fixed: 1 }\n    gutter: spare",
            &format!(
                "  - name: spare\n    endpoints: [{{ address: \"{spare}\" }}]\n    \
                 concurrency: {{ fixed: 1 }}\n    gutter: app"
            ),
            "",
        ));
        // Three at once: `app` takes one, its gutter `spare` the next, and what `spare` sheds
        // is refused — never sent back to `app` (spare's own gutter).
        let calls: Vec<_> = (0..3)
            .map(|i| {
                let gw = gw.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50 * i)).await;
                    gw.get(via).await
                })
            })
            .collect();
        let mut answers = Vec::new();
        for c in calls {
            let (status, _, body) = c.await.unwrap();
            answers.push((status.as_u16(), String::from_utf8_lossy(&body).to_string()));
        }
        assert_eq!(answers[0], (200, "main".to_string()), "{via:?}: {answers:?}");
        assert_eq!(answers[1], (200, "spare".to_string()), "{via:?}: {answers:?}");
        assert_eq!(answers[2].0, 503, "{via:?}: {answers:?}");
        assert!(answers[2].1.contains("concurrency_limit"), "{answers:?}");
        let metrics = gw.metrics().await;
        assert!(metrics.contains("spillway_gutter_total{cluster=\"app\"} 1"), "{metrics}");
        assert!(metrics.contains("spillway_gutter_total{cluster=\"spare\"} 0"), "{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_every_endpoint_and_names_the_ones_that_failed() {
    let log = Log::default();
    let a = scripted("a", &[ok()], &log).await;
    let b = scripted("b", &[ok(), ok(), status(503)], &log).await;
    let c = scripted("c", &[ok()], &log).await;
    let gw = start(&[a, b, c], "    strategy: broadcast");
    for via in BOTH {
        let (status, headers, body) = gw.send(via, "POST", &[], "purge").await;
        assert_eq!(status, StatusCode::OK, "{via:?}");
        assert_eq!(headers.get("x-spillway-broadcast").unwrap(), "3/3");
        assert_eq!(&body[..], b"a", "the first endpoint's answer");
        let arrivals = taken(&log);
        let mut reached: Vec<_> = arrivals.iter().map(|x| x.backend).collect();
        reached.sort();
        assert_eq!(reached, ["a", "b", "c"], "{via:?}");
        assert!(arrivals.iter().all(|x| x.method == "POST" && &x.body[..] == b"purge"));
    }
    // `b` now fails: the broadcast fails and says which endpoint.
    let (status, headers, body) = gw.send(Via::Hyper, "POST", &[], "purge").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(headers.get("x-spillway-broadcast").unwrap(), "2/3");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["error"], "broadcast_failed");
    assert_eq!(json["failed"][0]["endpoint"], b.to_string());
    assert_eq!(json["failed"][0]["status"], 503);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_on_error_serves_the_last_good_answer_when_the_upstream_fails() {
    for via in BOTH {
        let log = Log::default();
        let no_store = Answer {
            status: 200,
            headers: vec![("cache-control", "no-store")],
            delay: Duration::ZERO,
        };
        let backend = scripted("fresh", &[ok(), no_store, status(503)], &log).await;
        let gw = start(&[backend], "    stale_on_error: { max_age: 1m, max_bytes: 1MB }");
        let get = |path: &'static str| {
            let gw = &gw;
            async move {
                let req = Request::get(path).header("host", "test.local").body(body("")).unwrap();
                match via {
                    Via::Lean => h1(gw.lean, req).await,
                    Via::Hyper => h2c(gw.h2, req).await,
                }
            }
        };
        // A good answer is kept; a `no-store` one is not.
        assert_eq!(get("/item").await.0, StatusCode::OK);
        assert_eq!(get("/secret").await.0, StatusCode::OK);
        // The upstream now fails: /item gets its copy, /secret the failure.
        let (status, headers, body) = get("/item").await;
        assert_eq!(status, StatusCode::OK, "{via:?}");
        assert_eq!(&body[..], b"fresh");
        assert_eq!(headers.get("x-spillway-degraded").unwrap(), "stale");
        assert!(headers.get("age").is_some());
        assert_eq!(get("/secret").await.0, StatusCode::SERVICE_UNAVAILABLE, "{via:?}");
        assert_eq!(get("/never-seen").await.0, StatusCode::SERVICE_UNAVAILABLE, "{via:?}");
        let metrics = gw.metrics().await;
        assert!(
            metrics.contains("spillway_degraded_total{route=\"api\",kind=\"stale\"} 1"),
            "{metrics}"
        );
    }
}

/// A request body of unknown length (no `Content-Length`): its chunks, one frame each.
struct Chunked(std::collections::VecDeque<Bytes>);

impl http_body::Body for Chunked {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_unknown_length_is_kept_when_small_and_streamed_once_when_large() {
    let log = Log::default();
    let backend = scripted("b", &[status(503)], &log).await;
    let gw = start(&[backend], "    retries: { attempts: 2, budget: false, max_body: 64KB }");
    for (chunks, tries) in [(2usize, 2usize), (40, 1)] {
        // 2 x 4 KiB: kept and retried; 40 x 4 KiB = 160 KiB: streamed once, whole.
        let parts: std::collections::VecDeque<Bytes> =
            (0..chunks).map(|_| Bytes::from(vec![b'x'; 4096])).collect();
        let req = Request::put("/doc")
            .header("host", "test.local")
            .body(http_body_util::BodyExt::boxed(Chunked(parts)))
            .unwrap();
        let (status, _, _) = h2c(gw.h2, req).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let arrivals = taken(&log);
        assert_eq!(arrivals.len(), tries, "{chunks} chunks");
        assert!(arrivals.iter().all(|a| a.body.len() == chunks * 4096), "whole body every time");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_misses_make_one_upstream_request_and_all_get_its_answer() {
    let log = Log::default();
    let slow = Answer { status: 200, headers: vec![], delay: Duration::from_millis(300) };
    let backend = scripted("origin", &[slow], &log).await;
    let gw = Arc::new(start(&[backend], "    cache: { ttl: 1s, max_bytes: 1MB }"));
    let calls: Vec<_> = (0..100)
        .map(|i| {
            let gw = gw.clone();
            tokio::spawn(async move {
                // One host for all (the key is host and target): the HTTP/1.1 listener, each
                // request on its own connection (handed to the hyper path: a cached route).
                let _ = i;
                let (status, headers, body) = gw.get(Via::Lean).await;
                let how = headers.get("x-spillway-cache").map(|v| v.to_str().unwrap().to_string());
                (status, how, body)
            })
        })
        .collect();
    let mut by_how = std::collections::BTreeMap::<String, usize>::new();
    for c in calls {
        let (status, how, body) = c.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"origin");
        *by_how.entry(how.unwrap_or_default()).or_default() += 1;
    }
    assert_eq!(taken(&log).len(), 1, "one upstream request for 100: {by_how:?}");
    assert_eq!(by_how.get("miss"), Some(&1), "{by_how:?}");
    // Within the ttl: a hit with its age; after it: upstream again.
    let (_, headers, _) = gw.get(Via::Lean).await;
    assert_eq!(headers.get("x-spillway-cache").unwrap(), "hit");
    assert!(headers.get("age").is_some());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(gw.get(Via::Lean).await.1.get("x-spillway-cache").unwrap(), "miss");
    assert_eq!(taken(&log).len(), 1, "after the ttl, one more upstream request");
    let metrics = gw.metrics().await;
    assert!(metrics.contains("spillway_cache_total{route=\"api\",result=\"hit\"} 1"), "{metrics}");
}
