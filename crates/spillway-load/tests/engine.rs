//! End-to-end tests of the load engine against an in-process server on loopback. Real time is
//! involved, so each run is short (≤ 1.5 s) and bounds are generous.

#![allow(clippy::unwrap_used)]

mod common;

use spillway_load::engine::{run, ClientRetry, EngineConfig, Plan, RequestSpec};
use spillway_load::mix::Mix;
use spillway_load::report::Mode;
use spillway_load::schedule::{Ramp, Schedule};
use spillway_load::Target;
use std::sync::Arc;
use std::time::Duration;

fn config(url: &str, plan: Plan, connections: usize) -> EngineConfig {
    let target = Target::resolve(url, false).unwrap();
    let request = RequestSpec::get(target.path_and_query.clone());
    EngineConfig {
        target,
        url: url.to_string(),
        requests: Arc::from(vec![request]),
        mix: None,
        plan,
        connections,
        http2: false,
        streams_per_connection: 1,
        timeout: Duration::from_secs(2),
        interval: Duration::from_millis(250),
        threads: 2,
        retry: ClientRetry::NONE,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_sends_at_the_requested_rate() {
    let server = common::start().await;
    let plan = Plan::Open(Schedule::constant(400.0, Duration::from_millis(1500)).unwrap());
    let report = run(config(&server.url("/"), plan, 8), |_| {}).await.unwrap();
    let all = &report.overall;
    assert_eq!(report.mode, Mode::Open);
    assert_eq!(all.planned, Some(600));
    // Every planned request leaves (the server is fast); the rate is exact by construction
    // unless the generator falls behind, so the bound only absorbs a slow CI machine.
    assert!(all.sent >= 570, "sent {}", all.sent);
    assert!((all.achieved_rate - 400.0).abs() <= 40.0, "achieved {}", all.achieved_rate);
    assert_eq!(all.status.get("200").copied(), Some(all.responses));
    assert_eq!(server.seen().len() as u64, all.sent);
    assert!(report.elapsed_s < 4.0);
    assert!(!report.timeline.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_responses_count_from_the_intended_send_time() {
    let server = common::start().await;
    // One connection, 50 rps (every 20 ms) against a 60 ms server: requests queue behind each
    // other, so latency measured from intended times grows well past the 60 ms service time.
    let plan = Plan::Open(Schedule::constant(50.0, Duration::from_secs(1)).unwrap());
    let report = run(config(&server.url("/?delay_ms=60"), plan, 1), |_| {}).await.unwrap();
    let all = &report.overall;
    assert!(all.behind > 0, "requests should have waited for the busy connection");
    assert!(all.latency_ms.p99 > 200.0, "p99 {} hides the queueing delay", all.latency_ms.p99);
    assert!(all.latency_ms.min >= 59.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ramp_reports_each_step_at_its_own_rate() {
    let server = common::start().await;
    let ramp: Ramp = "100:300:200:600ms".parse().unwrap();
    let plan = Plan::Open(Schedule::ramp(&ramp).unwrap());
    let report = run(config(&server.url("/"), plan, 4), |_| {}).await.unwrap();
    assert_eq!(report.steps.len(), 2);
    assert_eq!(report.steps[0].planned, Some(60));
    assert_eq!(report.steps[1].planned, Some(180));
    assert_eq!(report.steps[1].start_s, 0.6);
    assert!(
        (report.steps[0].achieved_rate - 100.0).abs() <= 15.0,
        "{}",
        report.steps[0].achieved_rate
    );
    assert!(
        (report.steps[1].achieved_rate - 300.0).abs() <= 45.0,
        "{}",
        report.steps[1].achieved_rate
    );
    assert_eq!(report.overall.sent, report.steps[0].sent + report.steps[1].sent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_codes_are_counted_by_code_and_class() {
    let server = common::start().await;
    let plan = Plan::Open(Schedule::constant(100.0, Duration::from_millis(300)).unwrap());
    let report = run(config(&server.url("/?status=503"), plan, 2), |_| {}).await.unwrap();
    let all = &report.overall;
    assert_eq!(all.status.get("503").copied(), Some(all.responses));
    assert_eq!(all.status_class.get("5xx").copied(), Some(all.responses));
    assert!((all.error_rate - 1.0).abs() < 1e-9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_count_bounds_the_run() {
    let server = common::start().await;
    let plan =
        Plan::Open(Schedule::constant(1000.0, Duration::from_secs(10)).unwrap().limited_to(25));
    let report = run(config(&server.url("/"), plan, 2), |_| {}).await.unwrap();
    assert_eq!(report.overall.sent, 25);
    assert_eq!(server.seen().len(), 25);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_fails_fast() {
    // A socket bound without SO_REUSEADDR that never listens: connections to its port are
    // refused, and no other test's listener can be handed the port while it lives.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.set_reuseaddr(false).unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = reserved.local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/");
    let plan = Plan::Open(Schedule::constant(10.0, Duration::from_secs(1)).unwrap());
    assert!(run(config(&url, plan, 1), |_| {}).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_multiplexes_streams_over_few_connections() {
    let server = common::start().await;
    // 1 connection × 4 streams against a 50 ms server at 60 rps: ~3 requests in flight at once,
    // which one HTTP/1.1 connection could not carry without queueing.
    let plan = Plan::Open(Schedule::constant(60.0, Duration::from_millis(800)).unwrap());
    let mut config = config(&server.url("/?delay_ms=50"), plan, 1);
    config.http2 = true;
    config.streams_per_connection = 4;
    let report = run(config, |_| {}).await.unwrap();
    assert_eq!(report.http_version, "HTTP/2");
    assert_eq!(report.overall.status.get("200").copied(), Some(report.overall.responses));
    assert!(report.overall.responses >= 40, "responses {}", report.overall.responses);
    assert!(report.overall.latency_ms.p50 < 150.0, "p50 {}", report.overall.latency_ms.p50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_is_bounded_by_count() {
    let server = common::start().await;
    let plan = Plan::Closed { duration: Duration::from_secs(5), max_requests: Some(40) };
    let report = run(config(&server.url("/"), plan, 3), |_| {}).await.unwrap();
    assert_eq!(report.mode, Mode::Closed);
    assert_eq!(report.overall.sent, 40);
    assert!(report.elapsed_s < 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_callback_sees_every_interval() {
    let server = common::start().await;
    let plan = Plan::Open(Schedule::constant(100.0, Duration::from_millis(1000)).unwrap());
    let mut ticks = Vec::new();
    let report =
        run(config(&server.url("/"), plan, 2), |live| ticks.push(live.sent)).await.unwrap();
    assert!(ticks.len() >= 3, "ticks {ticks:?}");
    assert!(ticks.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(ticks.len(), report.timeline.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_closed_by_the_server_are_reopened_without_errors() {
    let server = common::start().await;
    let plan = Plan::Closed { duration: Duration::from_secs(5), max_requests: Some(30) };
    let report = run(config(&server.url("/?close=1"), plan, 2), |_| {}).await.unwrap();
    assert_eq!(report.overall.responses, 30, "errors: {:?}", report.overall.errors);
    assert_eq!(report.overall.status.get("200").copied(), Some(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_slower_than_the_timeout_count_as_timeouts() {
    let server = common::start().await;
    let plan = Plan::Closed { duration: Duration::from_secs(5), max_requests: Some(3) };
    let mut config = config(&server.url("/?delay_ms=400"), plan, 1);
    config.timeout = Duration::from_millis(100);
    let report = run(config, |_| {}).await.unwrap();
    assert_eq!(report.overall.errors.get("timeout").copied(), Some(3));
    assert_eq!(report.overall.responses, 0);
    assert!(report.elapsed_s < 1.5, "elapsed {}", report.elapsed_s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mix_is_counted_per_class_with_rejections_by_status() {
    let server = common::start().await;
    // The test server answers the status named in `x-test-status`: one class per outcome.
    let mix: Mix = "x-test-status: 200=5,429=2,503=2,504=1".parse().unwrap();
    let plan = Plan::Open(Schedule::constant(200.0, Duration::from_millis(500)).unwrap());
    let mut config = config(&server.url("/"), plan, 4);
    let base = config.requests[0].clone();
    config.requests = Arc::from(mix.requests(&base));
    config.mix = Some(Arc::new(mix.clone()));
    let report = run(config, |_| {}).await.unwrap();
    assert_eq!(report.mix_header.as_deref(), Some("x-test-status"));
    let all = &report.overall;
    // Indices are claimed in order, so the requests sent are exactly 0..sent.
    let mut expected = [0u64; 4];
    for i in 0..all.sent {
        expected[mix.class_of(i)] += 1;
    }
    assert!(all.sent >= 90, "sent {}", all.sent);
    let classes: Vec<&str> = all.classes.iter().map(|c| c.class.as_str()).collect();
    assert_eq!(classes, ["200", "429", "503", "504"]);
    let sent: Vec<u64> = all.classes.iter().map(|c| c.sent).collect();
    assert_eq!(sent, expected);
    let [ok, too_many, unavailable, timeout] = &all.classes[..] else { panic!("4 classes") };
    assert_eq!((ok.ok, ok.served_fraction, ok.rejected.total()), (expected[0], 1.0, 0));
    assert!(ok.latency_ms.p50 > 0.0 && ok.goodput > 0.0);
    assert_eq!((too_many.ok, too_many.rejected.too_many_requests), (0, expected[1]));
    assert_eq!(unavailable.rejected.unavailable, expected[2]);
    assert_eq!(timeout.rejected.gateway_timeout, expected[3]);
    // Rejections are not served: no latency, no goodput.
    assert_eq!((too_many.goodput, too_many.latency_ms.max), (0.0, 0.0));
    assert_eq!(all.status.get("200").copied(), Some(expected[0]));
    assert!((all.goodput - ok.goodput).abs() < 1e-9);
    assert_eq!(report.steps[0].classes.len(), 4);
    // The server saw each class's header value.
    let seen = server.seen();
    let with = |v: &str| {
        seen.iter()
            .filter(|s| s.headers.iter().any(|(k, x)| k == "x-test-status" && x == v))
            .count() as u64
    };
    assert_eq!(with("429"), expected[1]);
}

#[tokio::test]
async fn a_mix_needs_one_request_per_class() {
    let mix: Mix = "x-a: a=1,b=1".parse().unwrap();
    let plan = Plan::Open(Schedule::constant(10.0, Duration::from_millis(100)).unwrap());
    let mut config = config("http://127.0.0.1:9/", plan, 1);
    config.mix = Some(Arc::new(mix));
    let err = run(config, |_| {}).await.unwrap_err();
    assert!(err.to_string().contains("one request per class"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_client_retries_count_requests_once_and_every_attempt() {
    let server = common::start().await;
    let plan =
        Plan::Open(Schedule::constant(300.0, Duration::from_secs(10)).unwrap().limited_to(30));
    let mut config = config(&server.url("/?status=503"), plan, 3);
    config.retry = ClientRetry::try_new(2, Duration::ZERO).unwrap();
    let report = run(config, |_| {}).await.unwrap();
    let all = &report.overall;
    assert_eq!((all.sent, all.requests, all.attempts, all.retries), (30, 30, 90, 60));
    assert_eq!(all.status.get("503").copied(), Some(30));
    assert_eq!(server.seen().len(), 90);
    assert_eq!(report.steps[0].attempts, 90);
    assert_eq!(report.client_retries.map(|r| r.retries), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_retries_in_line_and_stops_at_the_first_success() {
    let server = common::start().await;
    let plan = Plan::Closed { duration: Duration::from_secs(5), max_requests: Some(12) };
    let mut config = config(&server.url("/?status=429"), plan, 2);
    config.retry = ClientRetry::try_new(1, Duration::ZERO).unwrap();
    let report = run(config, |_| {}).await.unwrap();
    let all = &report.overall;
    assert_eq!((all.sent, all.requests, all.attempts), (12, 12, 24));
    assert_eq!(server.seen().len(), 24);

    // A 2xx is final: no retry.
    let plan = Plan::Closed { duration: Duration::from_secs(5), max_requests: Some(12) };
    let mut config = self::config(&server.url("/"), plan, 2);
    config.retry = ClientRetry::try_new(3, Duration::ZERO).unwrap();
    let all = run(config, |_| {}).await.unwrap().overall;
    assert_eq!((all.requests, all.attempts, all.retries), (12, 12, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_waiting_for_their_backoff_do_not_hold_the_connection() {
    let server = common::start().await;
    // One connection, an arrival every 20 ms, each answered 503 and retried 50 ms later. A
    // retry that held the connection through its backoff would make nearly every arrival late;
    // queued on the worker, retries slot in between arrivals.
    let plan = Plan::Open(Schedule::constant(50.0, Duration::from_millis(600)).unwrap());
    let mut config = config(&server.url("/?status=503"), plan, 1);
    config.retry = ClientRetry::try_new(1, Duration::from_millis(50)).unwrap();
    let report = run(config, |_| {}).await.unwrap();
    let all = &report.overall;
    assert_eq!(all.sent, 30);
    assert_eq!((all.requests, all.attempts), (30, 60));
    assert!(all.behind <= 5, "{} of 30 arrivals were late", all.behind);
    // Latency spans both attempts and the backoff between them.
    assert!(all.latency_ms.min >= 49.0, "min {}", all.latency_ms.min);
    assert!(report.elapsed_s < 3.0, "elapsed {}", report.elapsed_s);
}
