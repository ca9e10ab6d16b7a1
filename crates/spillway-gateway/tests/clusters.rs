//! Balancing, active health checks and passive outlier ejection, end to end.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http::{Request, StatusCode};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

fn cluster_yaml(endpoints: &[(std::net::SocketAddr, u32)], balance: &str, extra: &str) -> String {
    let eps: Vec<String> =
        endpoints.iter().map(|(a, w)| format!("{{ address: \"{a}\", weight: {w} }}")).collect();
    format!(
        r#"
workers: 1
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
clusters:
  - name: app
    endpoints: [{}]
    balance: {balance}
    hash_header: x-user
    timeouts: {{ request: 5s, connect: 500ms }}
{extra}
routes:
  - {{ name: all, cluster: app, timeout: 5s }}
"#,
        eps.join(", ")
    )
}

async fn tally(
    addr: std::net::SocketAddr,
    n: usize,
    header: Option<(&str, String)>,
) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let mut req = Request::get("/").header("host", "x");
        if let Some((name, value)) = &header {
            req = req.header(*name, value.clone());
        }
        let (status, _, body) = h1(addr, req.body(body("")).unwrap()).await;
        let key = if status == StatusCode::OK {
            String::from_utf8_lossy(&body).to_string()
        } else {
            status.to_string()
        };
        *counts.entry(key).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_balancing_algorithm_distributes_as_configured() {
    let (a, _) = backend("a").await;
    let (b, _) = backend("b").await;
    let (c, _) = backend("c").await;
    let endpoints = [(a, 4), (b, 1), (c, 1)];

    let gw = gateway(&cluster_yaml(&endpoints, "round_robin", ""));
    let counts = tally(gw.listener_address("public").unwrap(), 60, None).await;
    assert_eq!(
        (counts["a"], counts["b"], counts["c"]),
        (20, 20, 20),
        "round robin ignores weights"
    );
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;

    let gw = gateway(&cluster_yaml(&endpoints, "weighted_round_robin", ""));
    let counts = tally(gw.listener_address("public").unwrap(), 60, None).await;
    assert_eq!(
        (counts["a"], counts["b"], counts["c"]),
        (40, 10, 10),
        "smooth weighted round robin follows weights"
    );
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;

    // Concurrent slow requests: least-request sends each to the endpoint with the fewest in flight.
    let gw = gateway(&cluster_yaml(&[(a, 1), (b, 1), (c, 1)], "least_request", ""));
    let addr = gw.listener_address("public").unwrap();
    let slow: Vec<_> =
        (0..3).map(|_| tokio::spawn(async move { get(addr, "/slow").await.2 })).collect();
    let mut served_by = std::collections::HashSet::new();
    for s in slow {
        served_by.insert(s.await.unwrap());
    }
    assert_eq!(served_by.len(), 3, "three concurrent requests, three endpoints: {served_by:?}");
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;

    // P2C over peak EWMA: every endpoint gets traffic, none is starved.
    let gw = gateway(&cluster_yaml(&endpoints, "p2c_ewma", ""));
    let counts = tally(gw.listener_address("public").unwrap(), 60, None).await;
    assert_eq!(counts.values().sum::<usize>(), 60, "{counts:?}");
    assert_eq!(counts.len(), 3, "p2c uses every endpoint: {counts:?}");
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;

    let gw = gateway(&cluster_yaml(&endpoints, "consistent_hash", ""));
    let addr = gw.listener_address("public").unwrap();
    let counts = tally(addr, 20, Some(("x-user", "alice".to_string()))).await;
    assert_eq!(counts.len(), 1, "one key always goes to one endpoint: {counts:?}");
    let mut owners = std::collections::HashSet::new();
    for user in 0..30 {
        let req =
            Request::get("/").header("x-user", format!("user-{user}")).body(body("")).unwrap();
        owners.insert(h1(addr, req).await.2);
    }
    assert!(owners.len() >= 2, "different keys spread over endpoints");
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_take_an_endpoint_out_and_bring_it_back() {
    let (a, a_state) = backend("a").await;
    let (b, _) = backend("b").await;
    let hc = "    health_check: { path: /healthz, interval: 100ms, timeout: 500ms, healthy: 2, unhealthy: 2 }";
    let gw = gateway(&cluster_yaml(&[(a, 1), (b, 1)], "round_robin", hc));
    let addr = gw.listener_address("public").unwrap();
    a_state.healthy.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let counts = tally(addr, 10, None).await;
    assert_eq!(counts.get("b"), Some(&10), "an unhealthy endpoint gets nothing: {counts:?}");
    a_state.healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let counts = tally(addr, 10, None).await;
    assert_eq!(counts.get("a"), Some(&5), "a recovered endpoint is used again: {counts:?}");
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_panic_threshold_requests_go_to_every_endpoint() {
    // Both endpoints fail their health checks (they are slow or flapping, not gone): with the
    // default panic threshold of 50 % the cluster keeps serving through both.
    let (a, a_state) = backend("a").await;
    let (b, b_state) = backend("b").await;
    let hc = "    health_check: { path: /healthz, interval: 100ms, timeout: 500ms, healthy: 1, unhealthy: 1 }";
    let gw = gateway(&cluster_yaml(&[(a, 1), (b, 1)], "round_robin", hc));
    let addr = gw.listener_address("public").unwrap();
    a_state.healthy.store(false, Ordering::SeqCst);
    b_state.healthy.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..6 {
        let (status, _, body) = get(addr, "/").await;
        assert_eq!(status, StatusCode::OK);
        served.insert(String::from_utf8_lossy(&body).to_string());
    }
    assert_eq!(served.len(), 2, "balanced over both: {served:?}");
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_panic_routing_a_cluster_without_healthy_endpoints_answers_503_at_once() {
    let (a, a_state) = backend("a").await;
    let hc = "    health_check: { path: /healthz, interval: 100ms, timeout: 500ms, healthy: 1, unhealthy: 1 }\n    outlier: { panic_threshold: 0 }";
    let gw = gateway(&cluster_yaml(&[(a, 1)], "p2c_ewma", hc));
    let addr = gw.listener_address("public").unwrap();
    a_state.healthy.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let started = std::time::Instant::now();
    let (status, _, body) = get(addr, "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(String::from_utf8_lossy(&body).contains("no_healthy_endpoint"));
    assert!(started.elapsed() < Duration::from_secs(1), "fails fast, does not hang");
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_failures_eject_an_endpoint_for_a_while() {
    let (a, a_state) = backend("a").await;
    let (b, _) = backend("b").await;
    a_state.status.store(500, Ordering::SeqCst);
    let outlier =
        "    outlier: { consecutive_failures: 3, base_ejection: 2s, max_ejected_percent: 50 }";
    let gw = gateway(&cluster_yaml(&[(a, 1), (b, 1)], "round_robin", outlier));
    let addr = gw.listener_address("public").unwrap();
    let first = tally(addr, 6, None).await;
    assert_eq!(first.get("500 Internal Server Error"), Some(&3), "{first:?}");
    let after = tally(addr, 10, None).await;
    assert_eq!(after.get("b"), Some(&10), "the failing endpoint is ejected: {after:?}");
    a_state.status.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let back = tally(addr, 10, None).await;
    assert_eq!(back.get("a"), Some(&5), "it returns when the ejection ends: {back:?}");
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}
