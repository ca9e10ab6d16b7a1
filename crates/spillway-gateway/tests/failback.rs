//! The failback strategy end to end on real sockets: a request whose upstream is down is
//! stored in the route's durable queue and answered 202 with an id; once the upstream is back
//! the gateway delivers each queued request exactly once, with its body and id; a queue that
//! is full answers 503 and drops nothing; queued requests survive a gateway restart; an
//! upstream's final refusal (4xx) removes the request. Through both listeners (the lean
//! HTTP/1.1 path hands failback routes to hyper).
//!
//! (A `kill -9` of the real binary is in `crates/spillway/tests/failback_cli.rs`.)

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the upstream received: (failback id header, body).
type Received = Arc<Mutex<Vec<(Option<String>, Bytes)>>>;

/// An address nothing listens on yet (the upstream comes up there later).
fn reserved_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// An upstream on `addr` answering `status` to everything and noting what it received.
async fn upstream(addr: SocketAddr, status: u16) -> (Received, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let received = Received::default();
    let seen = received.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let id = req
                            .headers()
                            .get("x-spillway-failback-id")
                            .map(|v| v.to_str().unwrap().to_string());
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        seen.lock().unwrap().push((id, body));
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .status(status)
                                .body(http_body_util::Full::new(Bytes::from_static(b"ok")))
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (received, task)
}

fn yaml(upstream: SocketAddr, dir: &std::path::Path, extra: &str) -> String {
    format!(
        r#"
workers: 1
listeners:
  - {{ name: lean, address: "127.0.0.1:0", protocol: http1 }}
  - {{ name: h2, address: "127.0.0.1:0", protocol: h2c }}
admin: {{ address: "127.0.0.1:0" }}
clusters:
  - name: orders
    endpoints: [{{ address: "{upstream}" }}]
    timeouts: {{ request: 2s, connect: 200ms }}
    outlier: {{ consecutive_failures: 0 }}
routes:
  - name: orders
    cluster: orders
    failback: {{ dir: "{}", backoff: {{ base: 100ms, max: 200ms }}{extra} }}
"#,
        dir.display()
    )
}

struct Gw {
    gw: Option<spillway_gateway::Gateway>,
    lean: SocketAddr,
    h2: SocketAddr,
    admin: SocketAddr,
}

impl Gw {
    fn start(yaml: &str) -> Gw {
        let gw = gateway(yaml);
        Gw {
            lean: gw.listener_address("lean").unwrap(),
            h2: gw.listener_address("h2").unwrap(),
            admin: gw.admin_address().unwrap(),
            gw: Some(gw),
        }
    }

    async fn post(&self, h2: bool, payload: &'static [u8]) -> (StatusCode, http::HeaderMap, Bytes) {
        let req = Request::post("/orders")
            .header("host", "test.local")
            .header("content-type", "application/json")
            .body(body(payload))
            .unwrap();
        if h2 {
            h2c(self.h2, req).await
        } else {
            h1(self.lean, req).await
        }
    }

    async fn queues(&self) -> Value {
        let (status, _, body) = get(self.admin, "/admin/failback").await;
        assert_eq!(status, StatusCode::OK);
        serde_json::from_slice(&body).unwrap()
    }

    async fn depth(&self) -> u64 {
        self.queues().await["queues"][0]["spool"]["depth"].as_u64().unwrap()
    }

    async fn stop(mut self) {
        let gw = self.gw.take().unwrap();
        blocking(move || {
            gw.shutdown();
            gw.wait();
        })
        .await;
    }
}

impl Drop for Gw {
    fn drop(&mut self) {
        if let Some(gw) = self.gw.take() {
            std::thread::spawn(move || gw.shutdown());
        }
    }
}

async fn until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond().await {
        assert!(Instant::now() < deadline, "not within 10s: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_writes_are_queued_and_delivered_exactly_once_when_the_upstream_returns() {
    let dir = temp_path("failback-deliver");
    let addr = reserved_port();
    let gw = Gw::start(&yaml(addr, &dir, ""));
    let mut ids = Vec::new();
    for (h2, payload) in
        [(false, &b"{\"order\":1}"[..]), (true, b"{\"order\":2}"), (false, b"{\"order\":3}")]
    {
        let (status, headers, body) = gw.post(h2, payload).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{}", String::from_utf8_lossy(&body));
        assert_eq!(headers.get("x-spillway-degraded").unwrap(), "failback");
        let id = headers.get("x-spillway-failback-id").unwrap().to_str().unwrap().to_string();
        let json: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["queued"], id.as_str());
        ids.push(id);
    }
    assert_eq!(gw.depth().await, 3);
    // The upstream comes back: each request arrives once, with its body and id.
    let (received, _server) = upstream(addr, 201).await;
    until("3 deliveries", async || received.lock().unwrap().len() >= 3).await;
    until("an empty queue", async || gw.depth().await == 0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "exactly once: {got:?}");
    let mut got_ids: Vec<_> = got.iter().map(|(id, _)| id.clone().unwrap()).collect();
    got_ids.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got_ids, want);
    assert!(got.iter().any(|(_, b)| &b[..] == b"{\"order\":2}"));
    let (_, _, metrics) = get(gw.admin, "/metrics").await;
    let metrics = String::from_utf8(metrics.to_vec()).unwrap();
    assert!(
        metrics.contains("spillway_failback_total{route=\"orders\",outcome=\"delivered\"} 3"),
        "{metrics}"
    );
    promtool_accepts(&metrics);
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_survive_a_restart() {
    let dir = temp_path("failback-restart");
    let addr = reserved_port();
    let gw = Gw::start(&yaml(addr, &dir, ""));
    for _ in 0..2 {
        assert_eq!(gw.post(false, b"kept").await.0, StatusCode::ACCEPTED);
    }
    gw.stop().await;
    // A new gateway on the same directory finds them and delivers them once the upstream is up.
    let (received, _server) = upstream(addr, 200).await;
    let gw = Gw::start(&yaml(addr, &dir, ""));
    until("2 deliveries after the restart", async || received.lock().unwrap().len() >= 2).await;
    until("an empty queue", async || gw.depth().await == 0).await;
    assert_eq!(received.lock().unwrap().len(), 2);
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_and_drops_nothing() {
    let dir = temp_path("failback-full");
    let addr = reserved_port();
    let gw = Gw::start(&yaml(addr, &dir, ", max_bytes: 4KB, max_body: 1KB"));
    let payload: &'static [u8] = &[b'x'; 900];
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..12 {
        let (status, _, body) = gw.post(i % 2 == 1, payload).await;
        match status {
            StatusCode::ACCEPTED => accepted += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(String::from_utf8_lossy(&body).contains("failback_full"));
                refused += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(accepted >= 2 && refused >= 1, "{accepted} accepted, {refused} refused");
    assert_eq!(gw.depth().await, accepted, "every 202 is still queued");
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_refusal_is_final() {
    let dir = temp_path("failback-refused");
    let addr = reserved_port();
    let gw = Gw::start(&yaml(addr, &dir, ""));
    assert_eq!(gw.post(true, b"bad").await.0, StatusCode::ACCEPTED);
    let (received, _server) = upstream(addr, 422).await;
    until("the delivery", async || !received.lock().unwrap().is_empty()).await;
    until("an empty queue", async || gw.depth().await == 0).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(received.lock().unwrap().len(), 1, "a 422 is not retried");
    assert_eq!(gw.queues().await["queues"][0]["rejected"], 1);
    gw.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
