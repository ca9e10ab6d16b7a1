//! Cost budgets on the wire: a protected server reads `x-spillway-budget`, pays its own cost,
//! the handler spends more, and its client stack charges each call and forwards the rest —
//! or refuses the call before any byte is sent.
//!
//! Nothing here depends on time (budgets are counts, not clocks), so these tests need neither
//! sleeps nor a paused clock; every wait is bounded by `support::bounded`.

use crate::support::{
    answer_error, client_stack, get, http_client, send, serve, serve_protected, ClientSettings,
    Protection, Reply, RequestKind,
};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get as route_get;
use axum::Router;
use parking_lot::Mutex;
use spillway_core::budget::{BudgetGrant, BUDGET_HEADER};
use spillway_tower::budget::{self, BudgetLayer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tower::ServiceExt;

/// What the protected service charges per request, up front.
const SERVICE_COST: u64 = 2;
/// What its handler spends on its own work before calling downstream.
const HANDLER_COST: u64 = 3;

/// The budget header of every call a downstream received, in order.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<Option<String>>>>);

impl Received {
    fn budgets(&self) -> Vec<Option<String>> {
        self.0.lock().clone()
    }
}

/// A downstream recording the budget of each call: `/echo` answers 200, `/flaky` 503 to its
/// first two calls and 200 after.
async fn downstream() -> (String, Received) {
    let received = Received::default();
    let record = received.clone();
    let routes = Router::new()
        .route("/echo", route_get(|| async { "ok\n" }))
        .route(
            "/flaky",
            route_get(|State(received): State<Received>| async move {
                match received.0.lock().len() {
                    0..=2 => StatusCode::SERVICE_UNAVAILABLE.into_response(),
                    _ => "third time lucky\n".into_response(),
                }
            }),
        )
        .layer(axum::middleware::from_fn(
            move |request: axum::extract::Request, next: axum::middleware::Next| {
                let budget = request.headers().get(BUDGET_HEADER);
                record.0.lock().push(budget.and_then(|v| v.to_str().ok()).map(str::to_owned));
                next.run(request)
            },
        ))
        .with_state(received.clone());
    (serve(routes).await, received)
}

/// A protected service whose handler (`/call/{path}`) spends [`HANDLER_COST`] and calls
/// `{downstream}/{path}` through the client stack; `/forward` calls `/echo` with the incoming
/// headers and a far larger budget of its own. Counts the handler's runs.
async fn service(downstream_url: &str, budget: BudgetLayer) -> (String, Arc<AtomicUsize>) {
    let stack = client_stack(ClientSettings::default());
    let runs = Arc::new(AtomicUsize::new(0));
    let (base, counted) = (downstream_url.to_owned(), runs.clone());
    let forward_stack = stack.clone();
    let forward_to = format!("{downstream_url}/echo");
    let routes = Router::new()
        .route(
            "/call/{path}",
            route_get(
                move |axum::extract::Path(path): axum::extract::Path<String>, kind: RequestKind| {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let (stack, url) = (stack.clone(), format!("{base}/{path}"));
                    async move {
                        if let Some(budget) = budget::current() {
                            if let Err(refused) = budget.spend(HANDLER_COST) {
                                return answer_error(&kind, refused.into(), StatusCode::OK);
                            }
                        }
                        relay(stack.service.oneshot(get(&url, &[])).await, &kind)
                    }
                },
            ),
        )
        .route(
            "/forward",
            route_get(move |headers: HeaderMap, kind: RequestKind| async move {
                let mut request = get(&forward_to, &[]);
                *request.headers_mut() = headers;
                request.headers_mut().insert(BUDGET_HEADER, HeaderValue::from_static("1000000"));
                relay(forward_stack.service.oneshot(request).await, &kind)
            }),
        );
    let protection = Protection { budget, ..Protection::default() };
    (serve_protected(routes, protection).await.url, runs)
}

/// The downstream's status, or our client stack's refusal through the shared mapping.
fn relay(
    result: Result<axum::http::Response<hyper::body::Incoming>, spillway_tower::BoxError>,
    kind: &RequestKind,
) -> Response {
    match result {
        Ok(answer) => answer.status().into_response(),
        Err(error) => answer_error(kind, error, StatusCode::BAD_GATEWAY),
    }
}

/// `GET url` with these headers from a fresh client, read to the end.
async fn fetch(url: &str, headers: &[(&str, &str)]) -> Reply {
    send(&http_client(), get(url, headers)).await
}

fn costed() -> BudgetLayer {
    BudgetLayer::new().with_cost(SERVICE_COST)
}

#[tokio::test]
async fn downstream_receives_the_incoming_budget_less_service_handler_and_call_costs() {
    let (downstream_url, received) = downstream().await;
    let (url, _) = service(&downstream_url, costed()).await;
    let reply = fetch(&format!("{url}/call/echo"), &[(BUDGET_HEADER, "10")]).await;
    assert_eq!(reply.status, 200);
    // 10 - 2 (service) - 3 (handler) - 1 (the call).
    assert_eq!(received.budgets(), [Some("4".to_owned())]);
}

#[tokio::test]
async fn exhausted_budget_is_refused_locally_with_429_and_the_downstream_sees_no_request() {
    let (downstream_url, received) = downstream().await;
    let (url, runs) = service(&downstream_url, costed()).await;
    // 5 - 2 - 3 leaves nothing for the call.
    let reply = fetch(&format!("{url}/call/echo"), &[(BUDGET_HEADER, "5")]).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.body, "{\"error\":\"budget_exhausted\"}\n");
    assert_eq!(reply.header("retry-after"), None, "retrying does not refill a budget");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(received.budgets().is_empty(), "no request reached the downstream");
}

#[tokio::test]
async fn service_cost_above_the_budget_answers_429_before_the_handler_runs() {
    let (downstream_url, received) = downstream().await;
    let (url, runs) = service(&downstream_url, costed()).await;
    let reply = fetch(&format!("{url}/call/echo"), &[(BUDGET_HEADER, "1")]).await;
    assert_eq!(
        (reply.status.as_u16(), reply.body.as_str()),
        (429, "{\"error\":\"budget_exhausted\"}\n")
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
    assert!(received.budgets().is_empty());
}

#[tokio::test]
async fn larger_budget_set_on_the_outgoing_call_is_bounded_by_the_incoming_header() {
    let (downstream_url, received) = downstream().await;
    let (url, _) = service(&downstream_url, costed()).await;
    let reply = fetch(&format!("{url}/forward"), &[(BUDGET_HEADER, "10")]).await;
    assert_eq!(reply.status, 200);
    // The handler asked for 1 000 000: 10 - 2 (service) - 1 (the call) is what travels.
    assert_eq!(received.budgets(), [Some("7".to_owned())]);
}

#[tokio::test]
async fn client_claiming_a_larger_budget_at_a_granting_edge_gets_its_role_grant() {
    let (downstream_url, received) = downstream().await;
    let grant = BudgetGrant::builder(10).rule("x-role", [("member", 100)]).build().unwrap();
    let edge = BudgetLayer::granting(grant).with_cost(SERVICE_COST);
    let (url, _) = service(&downstream_url, edge).await;
    let greedy = [("x-role", "member"), (BUDGET_HEADER, "999999")];
    assert_eq!(fetch(&format!("{url}/call/echo"), &greedy).await.status, 200);
    let anonymous = [(BUDGET_HEADER, "999999")];
    assert_eq!(fetch(&format!("{url}/call/echo"), &anonymous).await.status, 200);
    // 100 - 2 - 3 - 1 and 10 - 2 - 3 - 1.
    assert_eq!(received.budgets(), [Some("94".to_owned()), Some("4".to_owned())]);
}

#[tokio::test]
async fn each_retry_is_paid_and_carries_what_is_left_at_that_attempt() {
    let (downstream_url, received) = downstream().await;
    let (url, _) = service(&downstream_url, costed()).await;
    let reply = fetch(&format!("{url}/call/flaky"), &[(BUDGET_HEADER, "10")]).await;
    assert_eq!(reply.status, 200);
    // 10 - 2 - 3 = 5 before the first attempt, 1 per attempt.
    let seen = received.budgets();
    assert_eq!(seen, [Some("4".to_owned()), Some("3".to_owned()), Some("2".to_owned())]);
}

#[tokio::test]
async fn request_without_a_budget_is_unlimited_and_forwards_no_header() {
    let (downstream_url, received) = downstream().await;
    let (url, _) = service(&downstream_url, costed()).await;
    let reply = fetch(&format!("{url}/call/echo"), &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(received.budgets(), [None]);
}
