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

/// A real etcd on free loopback ports with a temporary data directory (Debian's etcd-server,
/// which `scripts/test` installs); killed when dropped.
struct Etcd {
    child: Option<std::process::Child>,
    dir: std::path::PathBuf,
    client: u16,
    peer: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Etcd {
    async fn start() -> Etcd {
        let mut etcd =
            Etcd { child: None, dir: temp_path("etcd"), client: free_port(), peer: free_port() };
        etcd.spawn().await;
        etcd
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    async fn spawn(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let child = std::process::Command::new("etcd")
            .args(["--name", "test", "--data-dir"])
            .arg(&self.dir)
            .args(["--listen-client-urls", &self.url(), "--advertise-client-urls", &self.url()])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("etcd (Debian package etcd-server; scripts/test installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let ready = async {
                let mut c = etcd_client::Client::connect([self.url()], None).await.ok()?;
                c.get("probe", None).await.ok()
            };
            if tokio::time::timeout(Duration::from_secs(1), ready).await.ok().flatten().is_some() {
                return;
            }
            assert!(Instant::now() < deadline, "etcd did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Registers `address` as an instance of `service` until the returned sender fires.
fn registered(etcd: &Etcd, service: &str, address: SocketAddr) -> tokio::sync::oneshot::Sender<()> {
    use spillway_gateway::upstream::discovery::{register, RegisterOptions, Registration};
    let opts = RegisterOptions {
        etcd: vec![etcd.url()],
        prefix: "/services".into(),
        service: service.into(),
        registration: Registration {
            address: address.to_string(),
            weight: Some(1),
            zone: None,
            metadata: Default::default(),
        },
        ttl: Duration::from_secs(3),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        register(opts, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    stop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_source_follows_registrations_and_survives_an_etcd_restart() {
    let (a, _) = backend("a").await;
    let mut etcd = Etcd::start().await;
    let gw = gateway(&format!(
        r#"
workers: 1
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
clusters:
  - name: app
    discovery: {{ etcd: {{ endpoints: ["{}"], prefix: /services/app/ }} }}
    timeouts: {{ request: 2s }}
routes: [{{ name: all, cluster: app }}]
"#,
        etcd.url()
    ));
    let addr = gw.listener_address("public").unwrap();
    // Nothing registered: no endpoint.
    assert_eq!(get(addr, "/").await.0, StatusCode::SERVICE_UNAVAILABLE);
    // Register: routed.
    let stop = registered(&etcd, "app", a);
    until_served_by(addr, "a").await;
    // Deregister: removed.
    stop.send(()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(addr, "/").await.0 != StatusCode::SERVICE_UNAVAILABLE {
        assert!(Instant::now() < deadline, "still routed after deregistering");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Registered again, then etcd restarts: the last known endpoints keep serving meanwhile,
    // and the watch comes back.
    let _keep = registered(&etcd, "app", a);
    until_served_by(addr, "a").await;
    etcd.kill();
    for _ in 0..10 {
        assert_eq!(get(addr, "/").await.2, "a", "served while etcd is down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    etcd.spawn().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    until_served_by(addr, "a").await;
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}
