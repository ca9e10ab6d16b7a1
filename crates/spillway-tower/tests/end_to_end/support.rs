//! What the end-to-end tests share: real axum servers on loopback ports, a real hyper client,
//! the server protection and client stacks composed as `examples/axum_service.rs` composes
//! them, and bounded waits.
//!
//! Why here and not in the tests: every test must exercise the same composition a user would
//! copy from the example, so it is written once.

use axum::error_handling::HandleErrorLayer;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use spillway_core::breaker::{CircuitBreakerConfig, SreThrottleConfig};
use spillway_core::deadline::DeadlinePolicy;
use spillway_core::overload::{BbrConfig, CpuGauge, CpuUsage};
use spillway_core::rate::TokenBucketConfig;
use spillway_core::{ManualClock, SystemClock};
use spillway_tower::breaker::CircuitBreakerLayer;
use spillway_tower::budget::{BudgetLayer, PropagateBudgetLayer};
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
use std::future::Future;
use std::time::Duration;
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

/// The longest any single wait in these tests may take before the test fails. Generous: the
/// machine is shared; every wait that succeeds takes milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Awaits `future`, failing the test if it takes longer than [`PATIENCE`].
pub async fn bounded<F: Future>(what: &str, future: F) -> F::Output {
    match tokio::time::timeout(PATIENCE, future).await {
        Ok(output) => output,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Waits until `condition` holds, checking every millisecond, failing after [`PATIENCE`].
pub async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    bounded(what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
}

/// Serves `router` on a free loopback port until the test's runtime ends; its base URL.
pub async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

/// The plain hyper client the tests and the client stacks send with.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A new client (its own connection pool).
pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A new client speaking HTTP/2 only (prior knowledge, as gRPC clients do over cleartext).
pub fn h2_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).http2_only(true).build_http()
}

/// An answer read to the end.
#[derive(Debug)]
pub struct Reply {
    pub version: axum::http::Version,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// The header's value as text, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Reads a response to the end.
    pub async fn read(response: Response<Incoming>) -> Reply {
        let (parts, body) = response.into_parts();
        let body = bounded("a response body", body.collect()).await.unwrap().to_bytes();
        Reply {
            version: parts.version,
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

/// Sends `request` with a plain client and reads the answer.
pub async fn send(client: &HttpClient, request: Request<Full<Bytes>>) -> Reply {
    let response = bounded("a response", client.request(request)).await.unwrap();
    Reply::read(response).await
}

/// `GET url` with these headers.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    request("GET", url, headers)
}

/// A request with an empty body.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::new())).unwrap()
}

// ---- the server side, as in the example -------------------------------------------------

/// The request's content type, which decides between an HTTP error and a gRPC status.
pub struct RequestKind(Request<()>);

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

/// A refusal through the shared mapping (gRPC-aware), anything else as `fallback`.
pub fn answer_error(kind: &RequestKind, error: BoxError, fallback: StatusCode) -> Response {
    match find_rejection(error.as_ref()) {
        Some(rejection) => rejection_response_for(&kind.0, &rejection).into_response(),
        None => (fallback, format!("{error}\n")).into_response(),
    }
}

async fn handle_error(kind: RequestKind, error: BoxError) -> Response {
    answer_error(&kind, error, StatusCode::INTERNAL_SERVER_ERROR)
}

/// The rate limit the tests put in the server stack: per `x-api-key`, on a clock the test
/// moves, so no test depends on how fast the machine is.
pub type TestRateLimit = RateLimitLayer<HeaderKey, TokenBucketConfig, ManualClock>;

/// Test-sized limits for the server protection.
pub struct Protection {
    pub deadlines: DeadlinePolicy,
    pub budget: BudgetLayer,
    pub rate_limit: Option<TestRateLimit>,
    pub bulkhead: BulkheadConfig,
}

impl Default for Protection {
    /// A 10 s route default (longer than any test), 20 ms minimum budget, cost budgets only
    /// for requests that carry one (free), no rate limit, a bulkhead large enough not to
    /// matter.
    fn default() -> Self {
        Protection {
            deadlines: DeadlinePolicy::builder(Duration::from_secs(10))
                .min_budget(Duration::from_millis(20))
                .build()
                .unwrap(),
            budget: BudgetLayer::new(),
            rate_limit: None,
            bulkhead: BulkheadConfig::new(64, 0, Duration::ZERO),
        }
    }
}

/// A protected server and the handles the tests look through.
pub struct Protected {
    pub url: String,
    pub bulkhead: BulkheadLayer,
    /// The CPU usage the load shedder reads (starts at 0).
    pub cpu: CpuGauge,
}

/// Serves `routes` behind HandleError → criticality → deadline → cost budget → rate limit
/// (when given) → BBR load shedding → bulkhead, as the example does.
///
/// The shedder reads a CPU gauge the test sets (cool at first), not the real sampler: on a
/// shared test machine the real CPU may be hot at any moment.
pub async fn serve_protected(routes: Router, protection: Protection) -> Protected {
    let cpu = CpuGauge::new();
    cpu.set(CpuUsage::from_permille(0));
    let load_shed =
        BbrLoadShedLayer::with_cpu_gauge(BbrConfig::default(), cpu.clone(), SystemClock::new())
            .unwrap();
    let bulkhead = BulkheadLayer::try_new(protection.bulkhead).unwrap();
    let stack = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(handle_error))
        .layer(CriticalityLayer::new())
        .layer(DeadlineLayer::new(protection.deadlines))
        .layer(protection.budget)
        .option_layer(protection.rate_limit)
        .layer(load_shed)
        .layer(bulkhead.clone());
    let url = serve(routes.layer(stack)).await;
    Protected { url, bulkhead, cpu }
}

// ---- the client side, as in the example -------------------------------------------------

/// A client stack, boxed.
pub type Downstream = BoxCloneSyncService<Request<Full<Bytes>>, Response<Incoming>, BoxError>;

/// A client stack and the handles the tests look through.
#[derive(Clone)]
pub struct ClientStack {
    pub service: Downstream,
    pub breaker: CircuitBreakerLayer,
    pub throttle: SreThrottleLayer,
}

/// Test-sized settings for the client stack.
pub struct ClientSettings {
    pub retry: RetryPolicy,
    pub breaker: CircuitBreakerConfig,
    pub per_try_timeout: Duration,
}

impl Default for ClientSettings {
    /// The library's defaults, with a 2 s per-try timeout as in the example.
    fn default() -> Self {
        ClientSettings {
            retry: RetryPolicy::default(),
            breaker: CircuitBreakerConfig::default(),
            per_try_timeout: Duration::from_secs(2),
        }
    }
}

/// Propagate criticality → retry → SRE throttle → circuit breaker → propagate deadline →
/// propagate budget → per-try timeout → hyper, as the example composes it.
pub fn client_stack(settings: ClientSettings) -> ClientStack {
    let breaker = CircuitBreakerLayer::new(settings.breaker).unwrap();
    let throttle = SreThrottleLayer::new(SreThrottleConfig::default()).unwrap();
    let stack = ServiceBuilder::new()
        .layer(PropagateCriticalityLayer::new())
        .layer(RetryLayer::new(settings.retry).unwrap())
        .layer(throttle.clone())
        .layer(breaker.clone())
        .layer(PropagateDeadlineLayer::new().with_margin(Duration::from_millis(10)))
        .layer(PropagateBudgetLayer::new())
        .layer(TimeoutLayer::new(settings.per_try_timeout))
        .service(http_client());
    ClientStack { service: BoxCloneSyncService::new(stack), breaker, throttle }
}
