//! Operations end to end: TLS with ALPN, hot reload (good and bad), graceful shutdown with a
//! request in flight, and the admin API with Prometheus metrics.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_listener_speaks_h2_and_http1_by_alpn() {
    let (b, _) = backend("b").await;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_path = temp_path("cert.pem");
    let key_path = temp_path("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.signing_key.serialize_pem()).unwrap();
    let yaml = format!(
        r#"
workers: 1
listeners:
  - {{ name: tls, address: "127.0.0.1:0", tls: {{ cert: "{}", key: "{}" }} }}
clusters: [{{ name: app, endpoints: [{{ address: "{b}" }}], timeouts: {{ request: 5s }} }}]
routes: [{{ name: all, cluster: app }}]
"#,
        cert_path.display(),
        key_path.display()
    );
    let gw = gateway(&yaml);
    let addr = gw.listener_address("tls").unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    for (alpn, version) in
        [(&b"h2"[..], http::Version::HTTP_2), (&b"http/1.1"[..], http::Version::HTTP_11)]
    {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        let resp = if version == http::Version::HTTP_2 {
            let (mut s, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            s.send_request(Request::get("https://localhost/headers").body(body("")).unwrap())
                .await
                .unwrap()
        } else {
            let (mut s, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
            tokio::spawn(conn);
            s.send_request(
                Request::get("/headers").header("host", "localhost").body(body("")).unwrap(),
            )
            .await
            .unwrap()
        };
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.version(), version);
        let text = String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec())
            .unwrap();
        assert!(text.contains("x-forwarded-proto: https"), "{text}");
        assert!(text.contains("host: localhost"), "{text}");
    }
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

fn reload_yaml(body: &str) -> String {
    format!(
        r#"
workers: 1
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0" }}
routes:
  - {{ name: hello, match: {{ path: /hello }}, direct_response: {{ status: 200, body: "{body}" }} }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_is_refused_and_the_old_config_keeps_serving() {
    let path = temp_path("reload.yaml");
    std::fs::write(&path, reload_yaml("one")).unwrap();
    let gw = gateway_from_file(&path);
    let addr = gw.listener_address("public").unwrap();
    let admin = gw.admin_address().unwrap();
    assert_eq!(get(addr, "/hello").await.2, "one");

    std::fs::write(&path, reload_yaml("two").replace("direct_response", "direct_respons")).unwrap();
    let (status, _, body) =
        h1(admin, Request::post("/admin/reload").body(body_("")).unwrap()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(String::from_utf8_lossy(&body).contains("did you mean `direct_response`"), "{body:?}");
    assert_eq!(get(addr, "/hello").await.2, "one", "the old config keeps serving");
    let (_, _, config) = get(admin, "/admin/config").await;
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["last_reload"]["ok"], false);
    assert!(
        config["last_reload"]["error"].as_str().unwrap().contains(":6:"),
        "the error names the line: {config}"
    );

    std::fs::write(&path, reload_yaml("two")).unwrap();
    let (status, _, _) = h1(admin, Request::post("/admin/reload").body(body_("")).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(get(addr, "/hello").await.2, "two");
    let (_, _, config) = get(admin, "/admin/config").await;
    let config: serde_json::Value = serde_json::from_slice(&config).unwrap();
    assert_eq!(config["generation"], 2);
    assert_eq!(config["last_reload"]["ok"], true);
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

fn body_(b: &'static str) -> TestBody {
    body(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_a_slow_request_finish() {
    let (b, _) = backend("b").await;
    let yaml = format!(
        r#"
workers: 2
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
clusters: [{{ name: app, endpoints: [{{ address: "{b}" }}], timeouts: {{ request: 5s }} }}]
routes: [{{ name: all, cluster: app }}]
shutdown: {{ drain: 5s }}
"#
    );
    let gw = gateway(&yaml);
    let addr = gw.listener_address("public").unwrap();
    let slow = tokio::spawn(async move { get(addr, "/slow").await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let started = std::time::Instant::now();
    // Spawned (not an `async` helper awaited later): shutdown must begin while the slow
    // request is still in flight.
    let stopped = tokio::task::spawn_blocking(move || {
        gw.shutdown();
        gw.wait();
    });
    let (status, _, body) = slow.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).starts_with("slow done"));
    tokio::time::timeout(Duration::from_secs(5), stopped).await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "the gateway stops once drained");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_reports_metrics_clusters_and_readiness() {
    let (b, _) = backend("b").await;
    let yaml = format!(
        r#"
workers: 2
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0", token: s3cret }}
clusters: [{{ name: app, endpoints: [{{ address: "{b}" }}], timeouts: {{ request: 5s }} }}]
routes: [{{ name: all, cluster: app }}]
"#
    );
    let gw = gateway(&yaml);
    let addr = gw.listener_address("public").unwrap();
    let admin = gw.admin_address().unwrap();
    for _ in 0..5 {
        assert_eq!(get(addr, "/").await.0, StatusCode::OK);
    }
    let (status, _, metrics) = get(admin, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(
        metrics.contains("spillway_requests_total{route=\"all\",cluster=\"app\",code=\"200\"} 5"),
        "{metrics}"
    );
    assert!(metrics
        .contains("spillway_request_duration_seconds_count{route=\"all\",cluster=\"app\"} 5"));
    assert!(metrics
        .contains(&format!("spillway_upstream_healthy{{cluster=\"app\",endpoint=\"{b}\"}} 1")));
    assert!(metrics.contains(&format!("spillway_upstream_requests_total{{cluster=\"app\",endpoint=\"{b}\",outcome=\"success\"}} 5")));
    assert!(
        metrics.contains("spillway_downstream_connections_accepted_total{listener=\"public\"} 5")
    );
    // Each worker's running time: both workers ran (at least their start), none for longer
    // than the gateway has existed.
    for worker in ["0", "1"] {
        let prefix = format!("spillway_worker_busy_seconds_total{{worker=\"{worker}\"}} ");
        let seconds: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no busy time for worker {worker}: {metrics}"));
        assert!(seconds > 0.0 && seconds < 60.0, "worker {worker}: {seconds} s");
    }
    common::promtool_accepts(&metrics);
    assert_eq!(get(admin, "/admin/clusters").await.0, StatusCode::UNAUTHORIZED, "token required");
    for wrong in ["Bearer s3creT", "Bearer s3cre", "Bearer s3crets", "Bearer ", "s3cret"] {
        let req = Request::get("/admin/clusters").header("authorization", wrong).body(body(""));
        let status = h1(admin, req.unwrap()).await.0;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{wrong:?} is refused");
    }
    let req = Request::get("/admin/clusters")
        .header("authorization", "Bearer s3cret")
        .body(body(""))
        .unwrap();
    let (status, _, clusters) = h1(admin, req).await;
    assert_eq!(status, StatusCode::OK);
    let clusters: serde_json::Value = serde_json::from_slice(&clusters).unwrap();
    assert_eq!(clusters["clusters"][0]["endpoints"][0]["requests"], 5);
    assert_eq!(get(admin, "/healthz").await.0, StatusCode::OK);
    assert_eq!(get(admin, "/readyz").await.0, StatusCode::OK);
    let req = Request::get("/admin/config")
        .header("authorization", "Bearer s3cret")
        .body(body(""))
        .unwrap();
    let (_, _, config) = h1(admin, req).await;
    assert!(!String::from_utf8_lossy(&config).contains("s3cret"), "the token is redacted");
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_what_it_prints() {
    let (gw, text) = spillway_gateway::demo::start(0, 0, false).unwrap();
    let addr = gw.listener_address("public").unwrap();
    assert!(text.contains(&format!("curl -i http://{addr}/hello")), "{text}");
    assert_eq!(get(addr, "/hello").await.2, "hello from spillway\n");
    assert_eq!(get(addr, "/fast/x").await.2, "fast backend\n");
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_tour_shows_a_429_a_burst_shed_from_the_bottom_a_fast_504_a_breaker_and_a_plan() {
    let (gw, _) = spillway_gateway::demo::start(0, 0, false).unwrap();
    let addr = gw.listener_address("public").unwrap();
    let tour = spillway_gateway::demo::tour(addr, gw.admin_address()).await;
    assert!(
        tour.contains("-> 503 503 503 503 503 circuit_open circuit_open circuit_open"),
        "{tour}"
    );
    assert!(tour.contains("the backend got 5 of them"), "{tour}");
    assert!(tour.contains("/recommendations: 200 {\"items\":[]} (fallback)"), "{tour}");
    assert!(tour.contains("a SHEDDABLE request: 503 degraded"), "{tour}");
    assert!(tour.contains("/recommendations: 200 fast backend"), "{tour}");
    assert!(tour.contains("200 200 200 200 429 429"), "{tour}");
    assert!(tour.contains("retry-after: 1"), "{tour}");
    let served = |class: &str| -> (u32, u32) {
        let line = tour.lines().find(|l| l.trim_start().starts_with(&format!("{class} "))).unwrap();
        let nums: Vec<u32> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        (nums[0], nums[1])
    };
    let (shed_ok, shed_sent) = served("SHEDDABLE");
    let (crit_ok, crit_sent) = served("CRITICAL");
    let (plus_ok, plus_sent) = served("CRITICAL_PLUS");
    assert!(shed_ok < shed_sent, "SHEDDABLE absorbs the shedding: {tour}");
    assert!(crit_ok * 100 >= crit_sent * 90, "CRITICAL is kept: {tour}");
    assert_eq!(plus_ok, plus_sent, "CRITICAL_PLUS is kept: {tour}");
    assert!(tour.contains("-> 504 in"), "{tour}");
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_change_is_picked_up_without_a_signal() {
    let path = temp_path("watched.yaml");
    std::fs::write(&path, reload_yaml("before")).unwrap();
    let config = spillway_gateway::Config::load(&path).unwrap();
    let options = spillway_gateway::RunOptions { watch_config: true, ..Default::default() };
    let gw = spillway_gateway::Gateway::start(config, Some(path.clone()), options).unwrap();
    let addr = gw.listener_address("public").unwrap();
    assert_eq!(get(addr, "/hello").await.2, "before");
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::write(&path, reload_yaml("after")).unwrap();
    let mut seen = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen = String::from_utf8_lossy(&get(addr, "/hello").await.2).to_string();
        if seen == "after" {
            break;
        }
    }
    assert_eq!(seen, "after", "the watcher reloads the edited file");
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_host_rewrite_and_connection_limit() {
    let (b, _) = backend("b").await;
    let log = temp_path("access.log");
    let yaml = format!(
        r#"
workers: 1
listeners: [{{ name: public, address: "127.0.0.1:0", limits: {{ max_connections: 2 }} }}]
access_log: {{ path: "{}" }}
clusters: [{{ name: app, endpoints: [{{ address: "{b}" }}], timeouts: {{ request: 5s }} }}]
routes: [{{ name: all, cluster: app, rewrite: {{ host: internal.svc }} }}]
"#,
        log.display()
    );
    let gw = gateway(&yaml);
    let addr = gw.listener_address("public").unwrap();
    let (status, _, text) = get(addr, "/headers").await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8_lossy(&text).to_string();
    assert!(text.contains("host: internal.svc"), "{text}");
    assert!(text.contains("x-forwarded-host: test.local"), "{text}");
    let line = std::fs::read_to_string(&log).unwrap();
    let entry: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["route"], "all");
    assert_eq!(entry["upstream"], b.to_string());
    assert_eq!(entry["request_id"].as_str().unwrap().len(), 32);

    // Two connections are held open; a third is closed at once. The request above used a
    // connection of its own: wait until the gateway has seen it close, or it would still count
    // against the limit while the two below connect.
    let stats = gw.control().shared.listeners[0].1.clone();
    let active = || stats.active.load(std::sync::atomic::Ordering::SeqCst);
    let wait_for = |want: u64| async move {
        for _ in 0..200 {
            if active() == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    wait_for(0).await;
    assert_eq!(active(), 0);
    let _one = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _two = tokio::net::TcpStream::connect(addr).await.unwrap();
    wait_for(2).await;
    assert_eq!(active(), 2);
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "over the limit: closed without an answer");
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_does_not_drop_a_request_in_flight() {
    let (b, _) = backend("b").await;
    let text = |extra: &str| {
        format!(
            r#"
workers: 1
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
clusters: [{{ name: app, endpoints: [{{ address: "{b}" }}], timeouts: {{ request: 5s }} }}]
routes:
{extra}  - {{ name: all, cluster: app }}
"#
        )
    };
    let path = temp_path("inflight.yaml");
    std::fs::write(&path, text("")).unwrap();
    let gw = gateway_from_file(&path);
    let addr = gw.listener_address("public").unwrap();
    let slow = tokio::spawn(async move { get(addr, "/slow").await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    std::fs::write(
        &path,
        text("  - { name: new, match: { path: /new }, direct_response: { status: 204 } }\n"),
    )
    .unwrap();
    assert_eq!(gw.control().reload("test"), Ok(2));
    assert_eq!(
        get(addr, "/new").await.0,
        StatusCode::NO_CONTENT,
        "the new config serves new requests"
    );
    let (status, _, body) = slow.await.unwrap();
    assert_eq!(status, StatusCode::OK, "the request that started before the reload completes");
    assert!(String::from_utf8_lossy(&body).starts_with("slow done"));
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_names_the_reason_of_every_refusal_on_both_paths() {
    let (b, _) = backend("b").await;
    let log = temp_path("refusals.log");
    let yaml = format!(
        r#"
workers: 1
listeners:
  - {{ name: public, address: "127.0.0.1:0", protocol: http1 }}
  - {{ name: hyper, address: "127.0.0.1:0", protocol: auto }}
access_log: {{ path: "{}" }}
clusters: [{{ name: app, endpoints: [{{ address: "{b}" }}], timeouts: {{ request: 5s }} }}]
routes:
  - name: all
    cluster: app
    limits: [ {{ key: route, algorithm: token_bucket, rate: 1/h, burst: 1 }} ]
"#,
        log.display()
    );
    let gw = gateway(&yaml);
    let lean = gw.listener_address("public").unwrap();
    let hyper = gw.listener_address("hyper").unwrap();
    assert_eq!(get(lean, "/x").await.0, StatusCode::OK);
    assert_eq!(get(lean, "/x").await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(get(hyper, "/x").await.0, StatusCode::TOO_MANY_REQUESTS);
    let text = std::fs::read_to_string(&log).unwrap();
    let entries: Vec<serde_json::Value> =
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(entries.len(), 3, "{text}");
    assert_eq!(entries[0]["refused"], serde_json::Value::Null);
    assert_eq!(entries[1]["refused"], "rate_limited");
    assert_eq!(entries[2]["refused"], "rate_limited");
    assert_eq!(entries[2]["status"], 429);
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}
