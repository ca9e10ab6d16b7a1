//! Global limits end to end: three gateways sharing one real `redis-server` (started on a free
//! loopback port and stopped after) hold an exact-mode limit exactly across the fleet, a
//! counter-mode limit exactly per window, and a lease-mode limit near its capacity; a gateway
//! without `quota_store` uses its in-process store; `GET /admin/quotas` and the metrics show
//! the state; `mode: counter` mistakes are refused with their key.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http::StatusCode;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A real redis-server on a free loopback port, killed when dropped.
struct Redis {
    child: std::process::Child,
    port: u16,
}

impl Redis {
    async fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server; scripts/test installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Redis { child, port }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fleet_config(backend: SocketAddr, store: &str, limit: &str) -> String {
    format!(
        r#"
workers: 1
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
clusters: [{{ name: app, endpoints: [{{ address: "{backend}" }}], timeouts: {{ request: 2s }} }}]
routes:
  - name: api
    cluster: app
    limits: [{limit}]
{store}
"#
    )
}

async fn statuses(addr: SocketAddr, n: usize, user: &str) -> (usize, usize) {
    let mut ok = 0;
    let mut refused = 0;
    for _ in 0..n {
        let req = http::Request::get("/")
            .header("host", "x")
            .header("x-user", user)
            .body(body(""))
            .unwrap();
        match h1(addr, req).await.0 {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    (ok, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_global_limit_holds_across_three_gateways() {
    let redis = Redis::start().await;
    let (backend, _) = backend("app").await;
    let store =
        format!("quota_store: {{ redis: redis://127.0.0.1:{}, timeout: 200ms }}", redis.port);
    let limit = "{ key: header:x-user, global: true, mode: exact, rate: 30/1h }";
    let gws: Vec<_> = (0..3).map(|_| gateway(&fleet_config(backend, &store, limit))).collect();
    let mut admitted = 0;
    for _round in 0..4 {
        for gw in &gws {
            let (ok, _) = statuses(gw.listener_address("public").unwrap(), 5, "alice").await;
            admitted += ok;
        }
    }
    // 60 requests across the fleet, 30 allowed per hour: exactly 30 pass.
    assert_eq!(admitted, 30);
    // Another user has a bucket of its own.
    let (ok, _) = statuses(gws[0].listener_address("public").unwrap(), 3, "bob").await;
    assert_eq!(ok, 3);
    let admin = gws[1].admin_address().unwrap();
    let (status, _, view) = get(admin, "/admin/quotas").await;
    assert_eq!(status, StatusCode::OK);
    let view: serde_json::Value = serde_json::from_slice(&view).unwrap();
    assert_eq!(view["limits"][0]["state"]["mode"], "exact", "{view}");
    assert_eq!(view["limits"][0]["store_up"], true, "{view}");
    let (_, _, metrics) = get(admin, "/metrics").await;
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(metrics.contains("spillway_quota_store_up{limit=\"header:x-user\"} 1"), "{metrics}");
    promtool_accepts(&metrics);
    for gw in gws {
        blocking(move || {
            gw.shutdown();
            gw.wait();
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_global_limit_shares_its_capacity_across_gateways() {
    let redis = Redis::start().await;
    let (backend, _) = backend("app").await;
    let store = format!("quota_store: {{ redis: redis://127.0.0.1:{} }}", redis.port);
    // 40 requests per second for the fleet, shares renewed every 200 ms.
    let limit =
        "{ name: fleet, key: route, global: true, mode: lease, rate: 40/s, refresh: 200ms }";
    let gws: Vec<_> = (0..2).map(|_| gateway(&fleet_config(backend, &store, limit))).collect();
    let addrs: Vec<SocketAddr> =
        gws.iter().map(|g| g.listener_address("public").unwrap()).collect();
    // Both gateways ask for more than the capacity for 3 s; after a second of leases the fleet
    // admits about 40/s (each about half).
    let started = Instant::now();
    let mut admitted_late = 0usize;
    while started.elapsed() < Duration::from_secs(3) {
        for addr in &addrs {
            let (ok, _) = statuses(*addr, 2, "any").await;
            if started.elapsed() > Duration::from_secs(1) {
                admitted_late += ok;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64() - 1.0;
    let rate = admitted_late as f64 / secs;
    assert!((25.0..=60.0).contains(&rate), "fleet admitted {rate:.1}/s for a 40/s limit");
    let (_, _, metrics) = get(gws[0].admin_address().unwrap(), "/metrics").await;
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(metrics.contains("spillway_quota_grant{limit=\"fleet\""), "{metrics}");
    for gw in gws {
        blocking(move || {
            gw.shutdown();
            gw.wait();
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quota_store_a_global_limit_works_in_process() {
    let (backend, _) = backend("app").await;
    let limit = "{ key: header:x-user, global: true, mode: exact, rate: 5/1h }";
    let gw = gateway(&fleet_config(backend, "", limit));
    let (ok, refused) = statuses(gw.listener_address("public").unwrap(), 8, "carol").await;
    assert_eq!((ok, refused), (5, 3));
    let counter = "{ key: header:x-user, global: true, mode: counter, rate: 4/1d }";
    let gw2 = gateway(&fleet_config(backend, "", counter));
    let (ok, refused) = statuses(gw2.listener_address("public").unwrap(), 6, "carol").await;
    assert_eq!((ok, refused), (4, 2), "counter mode on the in-process store");
    blocking(move || {
        gw2.shutdown();
        gw2.wait();
    })
    .await;
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_counter_global_limit_holds_per_window_across_two_gateways() {
    let redis = Redis::start().await;
    let (backend, _) = backend("app").await;
    let store =
        format!("quota_store: {{ redis: redis://127.0.0.1:{}, timeout: 200ms }}", redis.port);
    // A day-long window aligned on the epoch: the test runs inside one window.
    let limit = "{ key: header:x-user, global: true, mode: counter, rate: 20/1d }";
    let gws: Vec<_> = (0..2).map(|_| gateway(&fleet_config(backend, &store, limit))).collect();
    let mut admitted = 0;
    for _round in 0..3 {
        for gw in &gws {
            let (ok, _) = statuses(gw.listener_address("public").unwrap(), 6, "dave").await;
            admitted += ok;
        }
    }
    assert_eq!(admitted, 20, "36 asked across two gateways, 20 allowed per window");
    let (_, _, view) = get(gws[0].admin_address().unwrap(), "/admin/quotas").await;
    let view: serde_json::Value = serde_json::from_slice(&view).unwrap();
    assert_eq!(view["limits"][0]["state"]["mode"], "counter", "{view}");
    assert_eq!(view["limits"][0]["state"]["state"]["mode"], "counter", "{view}");
    for gw in gws {
        blocking(move || {
            gw.shutdown();
            gw.wait();
        })
        .await;
    }
}

#[test]
fn counter_mode_mistakes_are_refused_with_their_key() {
    let text = |limit: &str| {
        format!(
            "listeners: [{{ name: public, address: \"127.0.0.1:0\" }}]\n\
             clusters: [{{ name: app, endpoints: [{{ address: \"127.0.0.1:9\" }}] }}]\n\
             routes:\n  - {{ name: api, cluster: app, limits: [{limit}] }}\n"
        )
    };
    let refused = |limit: &str| {
        let base = std::env::temp_dir();
        match spillway_gateway::Config::parse(&text(limit), "test.yaml", &base) {
            Ok(_) => panic!("accepted: {limit}"),
            Err(e) => e.to_string(),
        }
    };
    let e = refused("{ key: path, global: true, mode: counter, burst: 5, rate: 10/s }");
    assert!(e.contains("limits[0].burst") && e.contains("no burst"), "{e}");
    let e = refused("{ key: path, global: true, mode: counter, refresh: 1s, rate: 10/s }");
    assert!(e.contains("limits[0].refresh"), "{e}");
    let e = refused("{ key: path, global: true, mode: window, rate: 10/s }");
    assert!(e.contains("`exact`, `lease` or `counter`"), "{e}");
    let ok = spillway_gateway::Config::parse(
        &text("{ key: path, global: true, mode: counter, rate: 10/s }"),
        "test.yaml",
        &std::env::temp_dir(),
    )
    .unwrap();
    assert_eq!(ok.routes[0].policy.global_limits.len(), 1);
}
