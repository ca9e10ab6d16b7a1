//! Service discovery end to end: a cluster whose endpoints come from a watched file follows
//! the file's changes, keeps the last good set when the file turns bad, and keeps it across a
//! config reload; a DNS source resolves its name. Real sockets and files on loopback.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http::StatusCode;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// GET `/` until the body is `want` (within 10 s).
async fn until_served_by(addr: SocketAddr, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = get(addr, "/").await;
        if status == StatusCode::OK && body == want.as_bytes() {
            return;
        }
        assert!(Instant::now() < deadline, "not served by {want}: {status} {body:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_source_is_followed_keeps_the_last_good_set_and_survives_a_reload() {
    let (a, _) = backend("a").await;
    let (b, _) = backend("b").await;
    let endpoints = temp_path("endpoints.yaml");
    std::fs::write(&endpoints, format!("- {{ address: \"{a}\" }}\n")).unwrap();
    let config_path = temp_path("discovery.yaml");
    let config = format!(
        r#"
workers: 1
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
clusters:
  - name: app
    discovery: {{ file: "{}" }}
    timeouts: {{ request: 2s }}
routes: [{{ name: all, cluster: app }}]
"#,
        endpoints.display()
    );
    std::fs::write(&config_path, &config).unwrap();
    let gw = gateway_from_file(&config_path);
    let addr = gw.listener_address("public").unwrap();
    let admin = gw.admin_address().unwrap();
    until_served_by(addr, "a").await;

    // The file changes: the cluster follows.
    std::fs::write(&endpoints, format!("{{ \"endpoints\": [{{ \"address\": \"{b}\" }}] }}"))
        .unwrap();
    until_served_by(addr, "b").await;

    // A bad file keeps the last good set, and says so.
    std::fs::write(&endpoints, "- { address: not-an-address }\n").unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..5 {
        assert_eq!(get(addr, "/").await.2, "b");
    }
    let (_, _, metrics) = get(admin, "/metrics").await;
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(metrics.contains("spillway_discovery_errors_total{cluster=\"app\"} 1"), "{metrics}");
    assert!(metrics.contains("spillway_discovery_endpoints{cluster=\"app\"} 1"), "{metrics}");

    // A reload starts from the config file (no static endpoints): the discovered set stays.
    let req = http::Request::post("/admin/reload").header("host", "x").body(body("")).unwrap();
    assert_eq!(h1(admin, req).await.0, StatusCode::OK);
    for _ in 0..5 {
        assert_eq!(get(addr, "/").await.2, "b");
    }
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
    let _ = std::fs::remove_file(&endpoints);
    let _ = std::fs::remove_file(&config_path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dns_source_resolves_its_name() {
    let (a, _) = backend("a").await;
    // The resolver answers an IP literal itself: this covers the resolve-and-apply path, not a
    // DNS server (none is reachable from this sandbox).
    let gw = gateway(&format!(
        r#"
workers: 1
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
clusters:
  - name: app
    discovery: {{ dns: {{ name: "127.0.0.1", port: {}, refresh: 1s }} }}
    timeouts: {{ request: 2s }}
routes: [{{ name: all, cluster: app }}]
"#,
        a.port()
    ));
    let addr = gw.listener_address("public").unwrap();
    until_served_by(addr, "a").await;
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}
