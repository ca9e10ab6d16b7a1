//! An axum 0.8 service protected by Spillway's tower layers: criticality, deadline and
//! bulkhead on the way in, deadline and criticality propagation on the way out, and every
//! refusal answered by `spillway_tower::rejection_response` (status, `Retry-After`, JSON).
//!
//! Why: it shows the intended order of the layers and how a handler's outgoing calls inherit
//! the incoming request's deadline and criticality without passing them around.
//!
//! ```text
//! cargo run -p spillway-tower --example axum_service -- 3000
//! curl -i localhost:3000/                                   # 200
//! curl -i localhost:3000/slow                               # 504 after the 1 s route default
//! curl -i -H 'x-request-timeout: 500us' localhost:3000/     # 504 at once: below the minimum
//! curl -i -H 'grpc-timeout: 300m' -H 'x-spillway-criticality: sheddable' localhost:3000/fanout
//! ```

use axum::error_handling::HandleErrorLayer;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use spillway_core::deadline::{DeadlinePolicy, GRPC_TIMEOUT_HEADER, REQUEST_TIMEOUT_HEADER};
use spillway_core::CRITICALITY_HEADER;
use spillway_tower::bulkhead::{BulkheadConfig, BulkheadLayer};
use spillway_tower::criticality::{CriticalityLayer, PropagateCriticalityLayer};
use spillway_tower::deadline::{PropagateDeadlineLayer, TimeoutLayer};
use spillway_tower::rejection::find_rejection;
use spillway_tower::{rejection_response, BoxError};
use std::convert::Infallible;
use std::time::Duration;
use tower::{service_fn, ServiceBuilder, ServiceExt};

/// Turns a layer's error into the response: a refusal through the one shared mapping, any
/// other failure as a 500.
async fn handle_error(error: BoxError) -> Response {
    match find_rejection(error.as_ref()) {
        Some(rejection) => rejection_response(&rejection).into_response(),
        None => (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()).into_response(),
    }
}

async fn hello() -> &'static str {
    "hello from behind the spillway\n"
}

/// Slower than the route's default budget: cut off with 504 by the deadline layer.
async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(2)).await;
    "too late for anyone to read this\n"
}

/// Stands in for a downstream service: answers with the deadline and criticality headers it
/// received, so the propagation can be seen without a second process.
async fn downstream(req: Request<()>) -> Result<String, Infallible> {
    let show = |headers: &HeaderMap, name: &str| {
        let value = headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("-");
        format!("{name}: {value}\n")
    };
    let h = req.headers();
    Ok([REQUEST_TIMEOUT_HEADER, GRPC_TIMEOUT_HEADER, CRITICALITY_HEADER]
        .iter()
        .map(|name| show(h, name))
        .collect())
}

/// Makes an outgoing call after some work: the client stack writes what is left of this
/// request's budget (minus a margin) and its criticality onto the outgoing request.
async fn fanout() -> Response {
    tokio::time::sleep(Duration::from_millis(50)).await;
    let client = ServiceBuilder::new()
        // ---- client-side layers composed later: retry (budgeted) and adaptive throttling
        //      (`spillway_tower::retry`, `spillway_tower::throttle`) go here, outermost first.
        .layer(PropagateCriticalityLayer::new())
        .layer(PropagateDeadlineLayer::new().with_margin(Duration::from_millis(10)))
        // Outgoing calls never wait forever, even outside any request.
        .layer(TimeoutLayer::default())
        .service(service_fn(downstream));
    match client.oneshot(Request::new(())).await {
        Ok(seen) => format!("the downstream call carried:\n{seen}").into_response(),
        Err(error) => handle_error(error).await,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::args().nth(1) {
        Some(arg) => arg.parse().map_err(|e| format!("port {arg:?}: {e}"))?,
        None => 3000,
    };

    // Honour the caller's budget up to 10 s; 1 s when none is sent; under 5 ms, answer 504
    // at once instead of starting work nobody will wait for.
    let deadlines = DeadlinePolicy::builder(Duration::from_secs(1))
        .max_budget(Duration::from_secs(10))
        .min_budget(Duration::from_millis(5))
        .build()?;
    // 64 requests at once, 128 more may wait up to 200 ms, most critical first.
    let bulkhead =
        BulkheadLayer::try_new(BulkheadConfig::new(64, 128, Duration::from_millis(200)))?;

    let protection = ServiceBuilder::new()
        // Outermost: every refusal below becomes a 429/503/504 with a JSON body.
        .layer(HandleErrorLayer::new(handle_error))
        // Decide the class first: everything below orders and sheds by it. Clients on the
        // open internet may not claim CRITICAL_PLUS.
        .layer(CriticalityLayer::new().with_max(spillway_core::Criticality::Critical))
        // Then the deadline: a request with no time left is refused before taking a slot.
        .layer(spillway_tower::deadline::DeadlineLayer::new(deadlines))
        // ---- server-side layers composed later, in this order: keyed rate limiting
        //      (`spillway_tower::rate_limit`), then adaptive load shedding
        //      (`spillway_tower::load_shed`) — cheap refusals before anything queues.
        // Innermost: bounded concurrency with a criticality-ordered queue.
        .layer(bulkhead);

    let app = Router::new()
        .route("/", get(hello))
        .route("/slow", get(slow))
        .route("/fanout", get(fanout))
        .layer(protection);

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
