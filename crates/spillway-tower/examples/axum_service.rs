//! An axum 0.8 service protected by Spillway's tower layers — the library form of Spillway —
//! with a client stack for its call to a downstream service.
//!
//! Why: it shows the intended order of the layers on both sides, how every refusal becomes
//! the same kind of answer (`rejection_response_for`: a 429/503/504 with `Retry-After` and a
//! small JSON body, or a `grpc-status` for gRPC callers), and how a handler's outgoing calls
//! inherit the incoming request's deadline, criticality and cost budget without passing them
//! around.
//!
//! The example starts two servers in one process: the protected service (the port given on
//! the command line, default 3000) and an unprotected "inventory" downstream on a free port,
//! which `/fanout/{echo,flaky,broken}` calls:
//!
//! ```text
//! cargo run -p spillway-tower --example axum_service -- 3000
//! curl -i localhost:3000/                                      # 200
//! curl -i localhost:3000/slow                                  # 504 after the 1 s route default
//! curl -i -H 'x-request-timeout: 2ms' localhost:3000/          # 504 at once: below the minimum
//! curl -i -H 'content-type: application/grpc' -H 'grpc-timeout: 2m' localhost:3000/
//!                                                              # 200 with grpc-status: 4
//! curl -i -H 'grpc-timeout: 300m' -H 'x-spillway-criticality: sheddable' \
//!      localhost:3000/fanout/echo                              # the headers the call carried
//! curl -i localhost:3000/fanout/flaky                          # 200: two 503s were retried
//! curl -i -H 'x-spillway-budget: 10' localhost:3000/fanout/echo
//!                                    # the inventory gets x-spillway-budget: 4 (10 - 2 - 3 - 1)
//! curl -i -H 'x-spillway-budget: 5' localhost:3000/fanout/echo  # 200, degraded: no call made
//! curl -i -H 'x-spillway-budget: 1' localhost:3000/             # 429 budget_exhausted
//! for i in $(seq 60); do curl -s -o /dev/null -w '%{http_code} ' -H 'x-api-key: demo' \
//!      localhost:3000/; done               # 200 until the burst (40 + refill) is spent, then 429
//! for i in $(seq 30); do curl -s localhost:3000/fanout/broken; done
//!                      # 502 (downstream 500) until the throttle or the breaker refuses: 503
//! ```

use axum::error_handling::HandleErrorLayer;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use spillway_core::breaker::{CircuitBreakerConfig, SreThrottleConfig};
use spillway_core::budget::BUDGET_HEADER;
use spillway_core::deadline::{DeadlinePolicy, GRPC_TIMEOUT_HEADER, REQUEST_TIMEOUT_HEADER};
use spillway_core::overload::BbrConfig;
use spillway_core::rate::{KeyedLimiter, Rate};
use spillway_core::{Criticality, CRITICALITY_HEADER};
use spillway_tower::breaker::CircuitBreakerLayer;
use spillway_tower::budget::{self, BudgetLayer, PropagateBudgetLayer};
use spillway_tower::bulkhead::{BulkheadConfig, BulkheadLayer};
use spillway_tower::criticality::{CriticalityLayer, PropagateCriticalityLayer};
use spillway_tower::deadline::{DeadlineLayer, PropagateDeadlineLayer, TimeoutLayer};
use spillway_tower::load_shed::BbrLoadShedLayer;
use spillway_tower::rate_limit::{HeaderKey, RateLimitLayer};
use spillway_tower::rejection::find_rejection;
use spillway_tower::retry::{RetryLayer, RetryPolicy};
use spillway_tower::throttle::SreThrottleLayer;
use spillway_tower::{rejection_response_for, BoxError};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

// ---------------------------------------------------------------------------------------
// Answering refusals
// ---------------------------------------------------------------------------------------

/// What the error handler needs of the request: its content type, which decides between an
/// HTTP error and a gRPC status. Copying one header keeps the extractor cheap on the (much
/// more common) path where nothing is refused.
struct RequestKind(Request<()>);

impl<S: Send + Sync> FromRequestParts<S> for RequestKind {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        let mut head = Request::new(());
        if let Some(content_type) = parts.headers.get(header::CONTENT_TYPE) {
            head.headers_mut().insert(header::CONTENT_TYPE, content_type.clone());
        }
        Ok(RequestKind(head))
    }
}

/// Turns an error into the response: a Spillway refusal through the one shared mapping
/// (gRPC-aware), any other failure as `fallback`.
fn answer_error(kind: &RequestKind, error: BoxError, fallback: StatusCode) -> Response {
    match find_rejection(error.as_ref()) {
        Some(rejection) => rejection_response_for(&kind.0, &rejection).into_response(),
        None => (fallback, format!("{error}\n")).into_response(),
    }
}

/// The server stack's error handler (`HandleErrorLayer`).
async fn handle_error(kind: RequestKind, error: BoxError) -> Response {
    answer_error(&kind, error, StatusCode::INTERNAL_SERVER_ERROR)
}

// ---------------------------------------------------------------------------------------
// The protected service
// ---------------------------------------------------------------------------------------

/// The header naming the client, which the rate limit is keyed by.
const API_KEY_HEADER: &str = "x-api-key";

/// What serving any request costs this service, in budget units, paid up front by the
/// `BudgetLayer`.
const SERVICE_COST: u64 = 2;

/// What `/fanout`'s own work (the lookup before calling the inventory) costs on top.
const LOOKUP_COST: u64 = 3;

/// The client stack for one downstream, boxed so handlers can hold it in the router state.
type Downstream = BoxCloneSyncService<Request<Full<Bytes>>, Response<Incoming>, BoxError>;

/// Router state: the inventory client (one stack: one breaker, one throttle, one retry
/// budget for that downstream) and where the inventory listens.
#[derive(Clone)]
struct App {
    inventory: Downstream,
    inventory_url: Arc<str>,
}

/// Always served (unless refused by a layer).
async fn hello() -> &'static str {
    "hello from behind the spillway\n"
}

/// Slower than the route's default budget: cut off with 504 by the deadline layer.
async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(2)).await;
    "too late for anyone to read this\n"
}

/// Calls the inventory after some work. The handler mentions neither deadline nor
/// criticality: the client stack writes what is left of this request's time (minus a margin)
/// and its class onto the outgoing request. It does pay for its work from the request's cost
/// budget, and when what is left cannot pay for the call (1 unit, charged by the client
/// stack, which forwards the rest), it answers from what it has instead of calling.
async fn fanout(State(app): State<App>, Path(target): Path<String>, kind: RequestKind) -> Response {
    if !["echo", "flaky", "broken"].contains(&target.as_str()) {
        return (StatusCode::NOT_FOUND, "try /fanout/echo, /fanout/flaky or /fanout/broken\n")
            .into_response();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    // No budget (none sent and no default) would mean no limit; this service has a default.
    if let Some(budget) = budget::current() {
        if let Err(refused) = budget.spend(LOOKUP_COST) {
            return answer_error(&kind, refused.into(), StatusCode::INTERNAL_SERVER_ERROR);
        }
        // Degrade rather than fail: skip the call the budget cannot pay for.
        if !budget.can_afford(PropagateBudgetLayer::DEFAULT_CALL_COST) {
            return "the inventory was not asked (cost budget spent): stock unknown\n"
                .into_response();
        }
    }
    let request = match Request::get(format!("{}/{target}", app.inventory_url))
        .body(Full::new(Bytes::new()))
    {
        Ok(request) => request,
        Err(error) => return answer_error(&kind, error.into(), StatusCode::INTERNAL_SERVER_ERROR),
    };
    match app.inventory.oneshot(request).await {
        Ok(answer) if answer.status().is_success() => match answer.into_body().collect().await {
            Ok(body) => {
                let body = String::from_utf8_lossy(&body.to_bytes()).into_owned();
                format!("the inventory answered:\n{body}").into_response()
            }
            Err(error) => answer_error(&kind, error.into(), StatusCode::BAD_GATEWAY),
        },
        Ok(answer) => {
            (StatusCode::BAD_GATEWAY, format!("the inventory answered {}\n", answer.status()))
                .into_response()
        }
        // Refused by our own client stack (breaker open, throttled, no time left): the same
        // 503/504 answers as the server side. Anything else is the inventory's fault: 502.
        Err(error) => answer_error(&kind, error, StatusCode::BAD_GATEWAY),
    }
}

/// The client stack for calls to one downstream, outermost first.
fn downstream_client(http: Client<HttpConnector, Full<Bytes>>) -> Result<Downstream, BoxError> {
    let stack = ServiceBuilder::new()
        // The incoming request's class goes onto every attempt, unchanged.
        .layer(PropagateCriticalityLayer::new())
        // Retries of idempotent calls on 429/502/503/504, transport errors and per-try
        // timeouts, with jittered backoff, within a budget shared by all calls (retries ≤ 10 %
        // of calls + 1/s). A refusal by a layer below (throttle, breaker, no time left) is
        // never retried, nor is anything once the incoming deadline is spent; a backoff or
        // `Retry-After` that would end after it is not waited for (the last answer returns).
        .layer(RetryLayer::new(RetryPolicy::default())?)
        // When the inventory refuses much of what it gets, drop a matching share locally,
        // least critical first. The breaker's own refusals below are not counted as failures.
        .layer(SreThrottleLayer::new(SreThrottleConfig::default())?)
        // Stop calling a failing inventory for a while (opens at ≥ 50 % failures over 20+
        // calls in 10 s; probes again after 5 s).
        .layer(CircuitBreakerLayer::new(CircuitBreakerConfig::default())?)
        // What is left of the incoming deadline, minus 10 ms for the answer to come back,
        // travels as `x-request-timeout` (`grpc-timeout` for gRPC calls). Below the retry on
        // purpose: each attempt carries the budget left *at that attempt*, and fails fast
        // when too little is left. Below the breaker and the throttle on purpose: a call cut
        // off at the deadline counts as the inventory's failure, while one refused before it
        // was sent blames nobody.
        .layer(PropagateDeadlineLayer::new().with_margin(Duration::from_millis(10)))
        // Each attempt costs 1 unit of the request's cost budget and carries what is left as
        // `x-spillway-budget`; with too little left, it fails here (429 budget_exhausted) and
        // nothing is sent. Below the retry, so retries are paid for; below the breaker and the
        // throttle, so a call they refuse costs nothing.
        .layer(PropagateBudgetLayer::new())
        // Every attempt has an end, even outside any request.
        .layer(TimeoutLayer::new(Duration::from_secs(2)))
        .service(http);
    Ok(BoxCloneSyncService::new(stack))
}

// ---------------------------------------------------------------------------------------
// The downstream, for the demo: no protection, and failures on request
// ---------------------------------------------------------------------------------------

/// Answers with the deadline, criticality and budget headers it received.
async fn echo(headers: HeaderMap) -> String {
    [REQUEST_TIMEOUT_HEADER, GRPC_TIMEOUT_HEADER, CRITICALITY_HEADER, BUDGET_HEADER]
        .iter()
        .map(|name| {
            let value = headers.get(*name).and_then(|v| v.to_str().ok()).unwrap_or("-");
            format!("  {name}: {value}\n")
        })
        .collect()
}

/// Fails two calls out of three with 503: the client's retries hide it.
async fn flaky(State(calls): State<Arc<AtomicU64>>) -> Response {
    match calls.fetch_add(1, Ordering::Relaxed) % 3 {
        2 => "in stock (third attempt)\n".into_response(),
        _ => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// Always fails: the client's throttle and breaker stop calling it.
async fn broken() -> StatusCode {
    StatusCode::INTERNAL_SERVER_ERROR
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let port: u16 = match std::env::args().nth(1) {
        Some(arg) => arg.parse().map_err(|e| format!("port {arg:?}: {e}"))?,
        None => 3000,
    };

    let inventory = Router::new()
        .route("/echo", get(echo))
        .route("/flaky", get(flaky))
        .route("/broken", get(broken))
        .with_state(Arc::new(AtomicU64::new(0)));
    let inventory_listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let inventory_url: Arc<str> = format!("http://{}", inventory_listener.local_addr()?).into();
    tokio::spawn(async move { axum::serve(inventory_listener, inventory).await });

    // Honour the caller's budget up to 10 s; 1 s when none is sent; under 5 ms, answer 504
    // at once instead of starting work nobody will wait for.
    let deadlines = DeadlinePolicy::builder(Duration::from_secs(1))
        .max_budget(Duration::from_secs(10))
        .min_budget(Duration::from_millis(5))
        .build()?;
    // Shed when this process's CPU (cgroup-aware, sampled every 250 ms) is above 80 % and more
    // requests are in flight than the recent throughput × latency says it can serve.
    let load_shed = BbrLoadShedLayer::new(BbrConfig::default())?;
    // 64 requests at once, 128 more may wait up to 200 ms, most critical first.
    let bulkhead =
        BulkheadLayer::try_new(BulkheadConfig::new(64, 128, Duration::from_millis(200)))?;

    // One token bucket per API key, in bounded memory (idle keys are forgotten, the table is
    // capped), on the system clock.
    let rate_limit = RateLimitLayer::new(
        HeaderKey::new(API_KEY_HEADER),
        KeyedLimiter::token_bucket(Rate::per_second(10), 40),
    );

    let protection = ServiceBuilder::new()
        // Outermost: every refusal below becomes a 429/503/504 (or a gRPC status).
        .layer(HandleErrorLayer::new(handle_error))
        // Decide the class first: everything below orders and sheds by it. Clients on the
        // open internet may not claim CRITICAL_PLUS.
        .layer(CriticalityLayer::new().with_max(Criticality::Critical))
        // Then the deadline: a request with no time left is refused before using anything.
        .layer(DeadlineLayer::new(deadlines))
        // Then the cost budget the gateway granted (`x-spillway-budget`; 50 units when none
        // is sent): this service costs 2 units, refused with 429 budget_exhausted if the budget
        // cannot pay; handlers spend more with `budget::current()`.
        .layer(BudgetLayer::new().with_default(50).with_cost(SERVICE_COST))
        // Then each client's rate: 10 requests/s with bursts of 40 per API key. Requests without
        // an `x-api-key` share one bucket, so leaving the header out is no way around the
        // limit. Over it: 429 with `Retry-After`. A SHEDDABLE request may not take the last
        // quarter of a bucket, so a client at its limit still gets its critical calls through.
        .layer(rate_limit)
        // Adaptive load shedding: cheap refusals (least critical first) before anything queues.
        .layer(load_shed)
        // Innermost: bounded concurrency with a criticality-ordered queue.
        .layer(bulkhead);

    let http = Client::builder(TokioExecutor::new()).build_http();
    let app = App { inventory: downstream_client(http)?, inventory_url: inventory_url.clone() };
    let service = Router::new()
        .route("/", get(hello))
        .route("/slow", get(slow))
        .route("/fanout/{target}", get(fanout))
        .layer(protection)
        .with_state(app);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    println!("listening on http://{addr} (its inventory downstream: {inventory_url})");
    println!("try:");
    for line in [
        format!("curl -i http://{addr}/"),
        format!("curl -i http://{addr}/slow"),
        format!("curl -i -H 'x-request-timeout: 2ms' http://{addr}/"),
        format!("curl -i -H 'content-type: application/grpc' -H 'grpc-timeout: 2m' http://{addr}/"),
        format!(
            "curl -i -H 'grpc-timeout: 300m' -H 'x-spillway-criticality: sheddable' \
             http://{addr}/fanout/echo"
        ),
        format!("curl -i http://{addr}/fanout/flaky"),
        format!("curl -i -H '{BUDGET_HEADER}: 10' http://{addr}/fanout/echo"),
        format!("curl -i -H '{BUDGET_HEADER}: 5' http://{addr}/fanout/echo"),
        format!("curl -i -H '{BUDGET_HEADER}: 1' http://{addr}/"),
        format!(
            "for i in $(seq 60); do curl -s -o /dev/null -w '%{{http_code}} ' \
             -H '{API_KEY_HEADER}: demo' http://{addr}/; done"
        ),
        format!("for i in $(seq 30); do curl -s http://{addr}/fanout/broken; done"),
    ] {
        println!("  {line}");
    }
    axum::serve(listener, service).await?;
    Ok(())
}
