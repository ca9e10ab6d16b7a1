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

/// A real 3-master Redis Cluster (`redis-server --cluster-enabled yes` ×3 in temporary
/// directories, joined by `redis-cli --cluster create`), every node killed (by PID) and its
/// directory removed when dropped — also when the test panics.
struct RedisCluster {
    ports: Vec<u16>,
    children: Vec<std::process::Child>,
    dir: std::path::PathBuf,
}

impl RedisCluster {
    fn start() -> RedisCluster {
        let dir = std::env::temp_dir().join(format!(
            "spillway-quota-cluster-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cluster = RedisCluster { ports: Vec::new(), children: Vec::new(), dir };
        // Ports whose cluster-bus port (+10 000) is free too, distinct per process.
        let mut candidate = 21_000 + (std::process::id() % 500) as u16 * 16;
        while cluster.ports.len() < 3 {
            candidate += 1;
            let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
            if !free(candidate) || !free(candidate + 10_000) {
                continue;
            }
            let node_dir = cluster.dir.join(candidate.to_string());
            std::fs::create_dir(&node_dir).unwrap();
            let child = std::process::Command::new("redis-server")
                .args(["--port", &candidate.to_string(), "--bind", "127.0.0.1"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("redis-server (Debian package redis-server)");
            cluster.children.push(child);
            cluster.ports.push(candidate);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        let cli = |port: u16, command: &[&str]| {
            std::process::Command::new("redis-cli")
                .args(["-p", &port.to_string()])
                .args(command)
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        };
        while !cluster.ports.iter().all(|&p| cli(p, &["ping"]).contains("PONG")) {
            assert!(Instant::now() < deadline, "cluster nodes did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut create = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("redis-cli (Debian package redis-tools)");
        loop {
            if let Some(status) = create.try_wait().unwrap() {
                assert!(status.success(), "redis-cli --cluster create failed");
                break;
            }
            if Instant::now() > deadline {
                let _ = create.kill();
                let _ = create.wait();
                panic!("redis-cli --cluster create did not finish");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let ok = |p: u16| {
            let i = cli(p, &["cluster", "info"]);
            i.contains("cluster_state:ok") && i.contains("cluster_known_nodes:3")
        };
        while !cluster.ports.iter().all(|&p| ok(p)) {
            assert!(Instant::now() < deadline, "the cluster did not reach cluster_state:ok");
            std::thread::sleep(Duration::from_millis(50));
        }
        cluster
    }

    fn dbsize(&self, i: usize) -> u64 {
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &self.ports[i].to_string(), "dbsize"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_global_limit_holds_across_two_gateways_on_a_redis_cluster() {
    let cluster = blocking(RedisCluster::start).await;
    let (backend, _) = backend("app").await;
    let urls: Vec<String> =
        cluster.ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect();
    let store =
        format!("quota_store: {{ redis: [{}], cluster: true, timeout: 500ms }}", urls.join(", "));
    let limit = "{ key: header:x-user, global: true, mode: exact, rate: 6/1h }";
    let gws: Vec<_> = (0..2).map(|_| gateway(&fleet_config(backend, &store, limit))).collect();
    // Eight users (their keys spread over the masters' slots), 5 requests per gateway each.
    for u in 0..8 {
        let user = format!("user-{u}");
        let mut admitted = 0;
        for gw in &gws {
            admitted += statuses(gw.listener_address("public").unwrap(), 5, &user).await.0;
        }
        assert_eq!(admitted, 6, "{user}: 10 asked, 6 allowed per hour across the fleet");
    }
    let spread = (0..3).filter(|&i| cluster.dbsize(i) > 0).count();
    assert!(spread >= 2, "the users' keys live on several masters");
    let (_, _, view) = get(gws[0].admin_address().unwrap(), "/admin/quotas").await;
    let view: serde_json::Value = serde_json::from_slice(&view).unwrap();
    assert_eq!(view["limits"][0]["store_up"], true, "{view}");
    assert_eq!(view["limits"][0]["state"]["state"]["store"], "redis_cluster", "{view}");
    for gw in gws {
        blocking(move || {
            gw.shutdown();
            gw.wait();
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exact_global_limit_refuses_sheddable_requests_first() {
    let (backend, _) = backend("app").await;
    // 8 per hour: SHEDDABLE must leave 2 (25 %), CRITICAL may use all 8.
    let limit = "{ key: header:x-user, global: true, mode: exact, rate: 8/1h }";
    let gw = gateway(&fleet_config(backend, "", limit));
    let addr = gw.listener_address("public").unwrap();
    let send = |class: &'static str| async move {
        let req = http::Request::get("/")
            .header("host", "x")
            .header("x-user", "erin")
            .header("x-spillway-criticality", class)
            .body(body(""))
            .unwrap();
        h1(addr, req).await.0
    };
    let mut sheddable = 0;
    for _ in 0..10 {
        sheddable += usize::from(send("SHEDDABLE").await == StatusCode::OK);
    }
    assert_eq!(sheddable, 6, "the last 2 of 8 are kept from SHEDDABLE");
    assert_eq!(send("CRITICAL").await, StatusCode::OK);
    assert_eq!(send("CRITICAL_PLUS").await, StatusCode::OK);
    assert_eq!(send("CRITICAL_PLUS").await, StatusCode::TOO_MANY_REQUESTS);
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}
