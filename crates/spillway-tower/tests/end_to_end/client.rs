//! The client side on the wire: what a handler's outgoing call carries, and how the client
//! stack (retry → throttle → breaker → propagate deadline → per-try timeout) treats a
//! failing, flaky or hanging downstream.

use crate::support::{
    bounded, client_stack, get, http_client, request, send, serve, serve_protected, ClientSettings,
    ClientStack, Protection, Reply,
};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get as route_get;
use axum::Router;
use bytes::Bytes;
use http_body_util::Full;
use parking_lot::Mutex;
use spillway_core::breaker::{BreakerState, BreakerWindow, CircuitBreakerConfig, ThrottleCounts};
use spillway_core::deadline::{parse_request_timeout, REQUEST_TIMEOUT_HEADER};
use spillway_core::retry::{Backoff, Jitter};
use spillway_core::{Clock, RejectReason, CRITICALITY_HEADER};
use spillway_tower::deadline::{self, Deadline, TokioClock};
use spillway_tower::rejection::find_rejection;
use spillway_tower::retry::RetryPolicy;
use spillway_tower::BoxError;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// What a downstream received: the headers of every call, in order.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<HeaderMap>>>);

impl Received {
    fn calls(&self) -> usize {
        self.0.lock().len()
    }

    /// The value of `name` in each call.
    fn header(&self, name: &str) -> Vec<Option<String>> {
        let calls = self.0.lock();
        calls.iter().map(|h| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned)).collect()
    }
}

/// A downstream that records every call: `/echo` answers 200, `/broken` 500, `/flaky` 503
/// to its first two calls and 200 after, `/hang` never answers, `/hang-once` answers all but
/// the first call.
async fn downstream() -> (String, Received) {
    let received = Received::default();
    let routes = Router::new()
        .route("/echo", route_get(|| async { "ok\n" }))
        .route("/broken", route_get(|| async { StatusCode::INTERNAL_SERVER_ERROR }))
        .route(
            "/flaky",
            route_get(|State(received): State<Received>| async move {
                match received.calls() {
                    0..=2 => StatusCode::SERVICE_UNAVAILABLE.into_response(),
                    _ => "third time lucky\n".into_response(),
                }
            })
            .post(|| async { StatusCode::SERVICE_UNAVAILABLE }),
        )
        .route("/hang", route_get(std::future::pending::<&'static str>))
        .route("/hang-once", route_get(hang_once).post(hang_once))
        .layer(axum::middleware::from_fn_with_state(
            received.clone(),
            |State(received): State<Received>,
             request: axum::extract::Request,
             next: axum::middleware::Next| async move {
                received.0.lock().push(request.headers().clone());
                next.run(request).await
            },
        ))
        .with_state(received.clone());
    (serve(routes).await, received)
}

/// Never answers the first call; answers the later ones at once.
async fn hang_once(State(received): State<Received>) -> &'static str {
    if received.calls() <= 1 {
        std::future::pending::<()>().await;
    }
    "faster this time\n"
}

/// Sends through a client stack, reading the answer to the end.
async fn call(
    stack: &ClientStack,
    request: axum::http::Request<Full<Bytes>>,
) -> Result<Reply, BoxError> {
    let response = bounded("the client stack", stack.service.clone().oneshot(request)).await?;
    Ok(Reply::read(response).await)
}

fn reason(result: &Result<Reply, BoxError>) -> Option<RejectReason> {
    result.as_ref().err().and_then(|e| find_rejection(e.as_ref())).map(|r| r.reason)
}

#[tokio::test]
async fn downstream_call_carries_a_smaller_deadline_and_the_incoming_criticality() {
    let (downstream_url, received) = downstream().await;
    let stack = client_stack(ClientSettings::default());
    let echo = format!("{downstream_url}/echo");
    // The handler names neither deadline nor criticality.
    let routes = Router::new().route(
        "/fanout",
        route_get(move || async move {
            match call(&stack, get(&echo, &[])).await {
                Ok(reply) => reply.status.into_response(),
                Err(error) => (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
            }
        }),
    );
    let server = serve_protected(routes, Protection::default()).await;
    let fanout = format!("{}/fanout", server.url);
    let client = http_client();
    for sent in ["SHEDDABLE_PLUS", "sheddable_plus"] {
        let headers = [(REQUEST_TIMEOUT_HEADER, "3s"), (CRITICALITY_HEADER, sent)];
        let reply = send(&client, get(&fanout, &headers)).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
    }
    // Unchanged, in the canonical spelling.
    let classes = received.header(CRITICALITY_HEADER);
    assert_eq!(classes, [Some("SHEDDABLE_PLUS".into()), Some("SHEDDABLE_PLUS".into())]);
    for budget in received.header(REQUEST_TIMEOUT_HEADER) {
        let budget = parse_request_timeout(budget.unwrap().as_bytes()).unwrap();
        // 3 s, minus the time already spent, minus the 10 ms margin.
        assert!(budget <= Duration::from_millis(2_990), "{budget:?}");
        assert!(budget > Duration::from_secs(2), "{budget:?}");
    }
}

#[tokio::test]
async fn each_retry_carries_the_budget_left_at_that_attempt() {
    let (downstream_url, received) = downstream().await;
    let backoff =
        Backoff::try_new(Duration::from_millis(30), Duration::from_millis(30), Jitter::None);
    let retry = RetryPolicy { backoff: backoff.unwrap(), ..RetryPolicy::default() };
    let stack = client_stack(ClientSettings { retry, ..ClientSettings::default() });
    let deadline = Deadline::after(TokioClock.now(), Duration::from_secs(5));
    let reply =
        deadline::scope(deadline, call(&stack, get(&format!("{downstream_url}/flaky"), &[])));
    assert_eq!(reply.await.unwrap().status, 200);
    let budgets: Vec<Duration> = received
        .header(REQUEST_TIMEOUT_HEADER)
        .into_iter()
        .map(|b| parse_request_timeout(b.unwrap().as_bytes()).unwrap())
        .collect();
    assert_eq!(budgets.len(), 3);
    for pair in budgets.windows(2) {
        assert!(pair[0] >= pair[1] + Duration::from_millis(30), "{budgets:?}");
    }
}

#[tokio::test]
async fn get_failing_twice_with_503_is_retried_and_the_caller_sees_200() {
    let (downstream_url, received) = downstream().await;
    let stack = client_stack(ClientSettings::default());
    let reply = call(&stack, get(&format!("{downstream_url}/flaky"), &[])).await.unwrap();
    assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "third time lucky\n"));
    assert_eq!(received.calls(), 3);
}

#[tokio::test]
async fn post_is_not_retried() {
    let (downstream_url, received) = downstream().await;
    let stack = client_stack(ClientSettings::default());
    let reply = call(&stack, request("POST", &format!("{downstream_url}/flaky"), &[])).await;
    assert_eq!(reply.unwrap().status, 503);
    assert_eq!(received.calls(), 1);
}

/// A breaker that opens once 5 calls are in its window and half of them failed, and stays
/// open longer than any test.
fn breaker_opening_after(calls: u32) -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        window: BreakerWindow::Count { calls },
        min_calls: u64::from(calls),
        failure_ratio: Some(0.5),
        open_duration: Duration::from_secs(60),
        ..CircuitBreakerConfig::default()
    }
}

#[tokio::test]
async fn breaker_opens_after_repeated_5xx_then_fails_fast_without_calling_the_downstream() {
    let (downstream_url, received) = downstream().await;
    let settings = ClientSettings { breaker: breaker_opening_after(5), ..Default::default() };
    let stack = client_stack(settings);
    let broken = format!("{downstream_url}/broken");
    for _ in 0..5 {
        // 500 is not retried: one call each.
        assert_eq!(call(&stack, get(&broken, &[])).await.unwrap().status, 500);
    }
    assert_eq!(stack.breaker.state(), BreakerState::Open);
    for _ in 0..30 {
        let result = call(&stack, get(&broken, &[])).await;
        assert_eq!(reason(&result), Some(RejectReason::CircuitOpen));
    }
    assert_eq!(received.calls(), 5, "refused calls never reach the downstream");
    // The throttle above saw 5 failures, and none of the breaker's 30 refusals: had it
    // counted them, it would now drop most calls itself.
    assert_eq!(stack.throttle.counts(), ThrottleCounts { requests: 5, accepts: 0 });
}

#[tokio::test]
async fn get_cut_off_by_the_per_try_timeout_is_retried_and_the_caller_sees_200() {
    let (downstream_url, received) = downstream().await;
    let settings =
        ClientSettings { per_try_timeout: Duration::from_millis(100), ..Default::default() };
    let stack = client_stack(settings);
    let reply = call(&stack, get(&format!("{downstream_url}/hang-once"), &[])).await.unwrap();
    assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "faster this time\n"));
    assert_eq!(received.calls(), 2);
    // A POST cut off the same way may have been applied: not retried.
    let (downstream_url, received) = downstream().await;
    let result = call(&stack, request("POST", &format!("{downstream_url}/hang-once"), &[])).await;
    assert_eq!(reason(&result), Some(RejectReason::DeadlineExceeded));
    assert_eq!(received.calls(), 1);
}

#[tokio::test]
async fn downstream_that_hangs_past_the_per_try_timeout_opens_the_breaker() {
    let (downstream_url, received) = downstream().await;
    let settings = ClientSettings {
        breaker: breaker_opening_after(3),
        per_try_timeout: Duration::from_millis(100),
        ..Default::default()
    };
    let stack = client_stack(settings);
    let hang = format!("{downstream_url}/hang");
    // Each attempt times out; each timeout is retried (the request is a GET) until the
    // attempts run out: three failures, and the breaker opens.
    let result = call(&stack, get(&hang, &[])).await;
    assert_eq!(reason(&result), Some(RejectReason::DeadlineExceeded));
    assert_eq!(received.calls(), 3);
    assert_eq!(stack.breaker.state(), BreakerState::Open, "timeouts are backend failures");
    let result = call(&stack, get(&hang, &[])).await;
    assert_eq!(reason(&result), Some(RejectReason::CircuitOpen));
    assert_eq!(received.calls(), 3);
    assert_eq!(stack.throttle.counts(), ThrottleCounts { requests: 3, accepts: 0 });
}

#[tokio::test]
async fn downstream_that_hangs_past_the_callers_deadline_opens_the_breaker() {
    let (downstream_url, received) = downstream().await;
    // The per-try timeout (2 s) is longer than every caller's budget: the deadline ends the
    // calls, and must count as the downstream's failure all the same.
    let settings = ClientSettings { breaker: breaker_opening_after(3), ..Default::default() };
    let stack = client_stack(settings);
    let hang = format!("{downstream_url}/hang");
    for _ in 0..3 {
        let deadline = Deadline::after(TokioClock.now(), Duration::from_millis(100));
        let result = deadline::scope(deadline, call(&stack, get(&hang, &[]))).await;
        assert_eq!(reason(&result), Some(RejectReason::DeadlineExceeded));
    }
    assert_eq!(stack.breaker.state(), BreakerState::Open);
    assert_eq!(received.calls(), 3);
    // A budget too short to send is refused before calling, and blames nobody.
    let (downstream_url, received) = downstream().await;
    let stack =
        client_stack(ClientSettings { breaker: breaker_opening_after(3), ..Default::default() });
    for _ in 0..10 {
        let deadline = Deadline::after(TokioClock.now(), Duration::from_millis(5));
        let result =
            deadline::scope(deadline, call(&stack, get(&format!("{downstream_url}/echo"), &[])))
                .await;
        assert_eq!(reason(&result), Some(RejectReason::DeadlineExceeded));
    }
    assert_eq!(stack.breaker.state(), BreakerState::Closed);
    assert_eq!(stack.throttle.counts(), ThrottleCounts::default());
    assert_eq!(received.calls(), 0);
}
