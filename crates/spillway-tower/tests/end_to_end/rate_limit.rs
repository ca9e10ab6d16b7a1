//! Keyed rate limiting on the wire: the 429 a client over its rate receives, keys limited
//! apart, the criticality reserve, and no way around the limit by leaving the key out.
//!
//! The limiter reads a [`ManualClock`] that only the test moves (the rate limit layer takes
//! its clock as a parameter), so no bucket refills while a test runs, however slow the
//! machine: every expected answer is exact.

use crate::support::{
    get, h2_client, http_client, request, send, serve_protected, Protection, TestRateLimit,
};
use axum::extract::State;
use axum::routing::get as route_get;
use axum::Router;
use spillway_core::rate::{KeyedLimiter, Rate};
use spillway_core::{ManualClock, CRITICALITY_HEADER};
use spillway_tower::rate_limit::{HeaderKey, RateLimitLayer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const API_KEY: &str = "x-api-key";

/// A handler that counts its calls.
fn counting_routes(calls: Arc<AtomicUsize>) -> Router {
    let handler = |State(calls): State<Arc<AtomicUsize>>| async move {
        calls.fetch_add(1, Ordering::SeqCst);
        "ran\n"
    };
    Router::new().route("/", route_get(handler).post(handler)).with_state(calls)
}

/// A token bucket per `x-api-key` of `burst` tokens, one more every 10 s, with the default
/// criticality reserve, on a manual clock.
fn limit(burst: u32) -> (TestRateLimit, ManualClock) {
    let clock = ManualClock::new();
    let limiter = KeyedLimiter::token_bucket(Rate::per_minute(6), burst);
    (RateLimitLayer::with_clock(HeaderKey::new(API_KEY), limiter, clock.clone()), clock)
}

/// A protected server with `rate_limit` in its stack; its URL and its handler's call count.
async fn server(rate_limit: TestRateLimit) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let protection = Protection { rate_limit: Some(rate_limit), ..Protection::default() };
    let server = serve_protected(counting_routes(calls.clone()), protection).await;
    (server.url, calls)
}

#[tokio::test]
async fn request_over_the_rate_gets_429_with_retry_after_and_json_until_the_bucket_refills() {
    let (rate_limit, clock) = limit(2);
    let (url, calls) = server(rate_limit).await;
    let client = http_client();
    let key = [(API_KEY, "tenant-a")];
    for _ in 0..2 {
        assert_eq!(send(&client, get(&url, &key)).await.status, 200);
    }
    let reply = send(&client, get(&url, &key)).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.header("retry-after"), Some("10"));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.body, "{\"error\":\"rate_limited\",\"retry_after_ms\":10000}\n");
    assert_eq!(calls.load(Ordering::SeqCst), 2, "a refused request never reaches the handler");

    // Just before the hinted time the bucket is still empty; at it, one token is back.
    clock.advance(Duration::from_millis(9_999));
    let reply = send(&client, get(&url, &key)).await;
    assert_eq!((reply.status.as_u16(), reply.header("retry-after")), (429, Some("1")));
    clock.advance(Duration::from_millis(1));
    assert_eq!(send(&client, get(&url, &key)).await.status, 200);
    assert_eq!(send(&client, get(&url, &key)).await.status, 429);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn rate_limited_grpc_call_gets_grpc_status_8_resource_exhausted() {
    let (rate_limit, _clock) = limit(1);
    let (url, calls) = server(rate_limit).await;
    let headers = [("content-type", "application/grpc+proto"), (API_KEY, "tenant-a")];
    let client = h2_client();
    assert_eq!(send(&client, request("POST", &url, &headers)).await.status, 200);
    let reply = send(&client, request("POST", &url, &headers)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("grpc-status"), Some("8"));
    assert_eq!(reply.header("grpc-message"), Some("rate_limited"));
    assert_eq!(reply.header("retry-after"), Some("10"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn two_api_keys_are_limited_independently() {
    let (rate_limit, _clock) = limit(1);
    let (url, calls) = server(rate_limit).await;
    let client = http_client();
    let a = [(API_KEY, "tenant-a")];
    let b = [(API_KEY, "tenant-b")];
    assert_eq!(send(&client, get(&url, &a)).await.status, 200);
    assert_eq!(send(&client, get(&url, &a)).await.status, 429);
    // `a` having spent its bucket costs `b` nothing, and `b` spending its own frees none of
    // `a`'s.
    assert_eq!(send(&client, get(&url, &b)).await.status, 200);
    assert_eq!(send(&client, get(&url, &b)).await.status, 429);
    assert_eq!(send(&client, get(&url, &a)).await.status, 429);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn nearly_empty_bucket_refuses_sheddable_but_still_admits_critical() {
    // Burst 4; the default reserve keeps the last 25 % (one token) from SHEDDABLE requests.
    let (rate_limit, _clock) = limit(4);
    let (url, calls) = server(rate_limit).await;
    let client = http_client();
    let sheddable = [(API_KEY, "tenant-a"), (CRITICALITY_HEADER, "SHEDDABLE")];
    let critical = [(API_KEY, "tenant-a"), (CRITICALITY_HEADER, "CRITICAL")];
    for _ in 0..3 {
        assert_eq!(send(&client, get(&url, &sheddable)).await.status, 200);
    }
    let reply = send(&client, get(&url, &sheddable)).await;
    assert_eq!(reply.status, 429, "the last token is reserved for more critical requests");
    assert!(reply.body.starts_with("{\"error\":\"rate_limited\""), "{}", reply.body);
    assert_eq!(send(&client, get(&url, &critical)).await.status, 200);
    // The reserve spent, CRITICAL is limited like everyone else.
    assert_eq!(send(&client, get(&url, &critical)).await.status, 429);
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn request_without_the_key_header_is_limited_in_one_shared_bucket() {
    let (rate_limit, _clock) = limit(1);
    let (url, calls) = server(rate_limit).await;
    let client = http_client();
    assert_eq!(send(&client, get(&url, &[])).await.status, 200);
    // Neither leaving the header out again nor sending it empty is a way around the limit.
    let reply = send(&client, get(&url, &[])).await;
    assert_eq!(reply.status, 429);
    assert_eq!(reply.body, "{\"error\":\"rate_limited\",\"retry_after_ms\":10000}\n");
    assert_eq!(send(&client, get(&url, &[(API_KEY, "")])).await.status, 429);
    // Clients that do name themselves keep their own buckets.
    assert_eq!(send(&client, get(&url, &[(API_KEY, "tenant-a")])).await.status, 200);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
