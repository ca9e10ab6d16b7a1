//! `spillway backend` end to end on loopback: faults switched at run time through
//! `POST /control`, seen by a real HTTP client, and counted in `GET /stats`. Real time, so the
//! service time is 1 ms and every wait is bounded by a timeout.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{handshake, SendRequest};
use hyper::Request;
use hyper_util::rt::TokioIo;
use spillway_load::backend::faults::Faults;
use spillway_load::backend::{Backend, BackendConfig, BackendStats};
use std::num::NonZeroUsize;
use std::time::Duration;

/// Every exchange must finish well within this; a hang fails the test instead of stalling it.
const BOUND: Duration = Duration::from_secs(10);

async fn connect(backend: &Backend) -> SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(backend.addr()).await.unwrap();
    let (sender, conn) = handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// One request on the kept-alive connection: status and body.
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, Bytes) {
    let exchange = async {
        sender.ready().await.unwrap();
        let mut request = Request::builder().method(method).uri(path).header("host", "backend");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(Bytes::from(body.to_string()))).unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        (status, response.into_body().collect().await.unwrap().to_bytes())
    };
    tokio::time::timeout(BOUND, exchange).await.expect("the backend answered in time")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_ratio_switched_through_control_is_seen_by_clients_and_counted() {
    let backend = Backend::start(BackendConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        allow_remote: false,
        concurrency: NonZeroUsize::new(4).unwrap(),
        service_time: Duration::from_millis(1),
        queue_limit: None,
        faults: Faults::default(),
        seed: Some(7),
    })
    .await
    .unwrap();
    let mut client = connect(&backend).await;

    let (status, body) = send(&mut client, "POST", "/control", &[], r#"{"fail_ratio":1.0}"#).await;
    assert_eq!(status, 200, "{body:?}");
    let settings: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (settings["fail_ratio"].as_f64(), settings["fail_status"].as_u64()),
        (Some(1.0), Some(503))
    );
    for _ in 0..20 {
        let (status, _) =
            send(&mut client, "GET", "/work", &[("x-spillway-attempt", "1")], "").await;
        assert_eq!(status, 503);
    }

    let (status, _) = send(&mut client, "POST", "/control", &[], r#"{"fail_ratio":0}"#).await;
    assert_eq!(status, 200);
    for _ in 0..15 {
        let (status, _) =
            send(&mut client, "GET", "/work", &[("x-spillway-attempt", "2")], "").await;
        assert_eq!(status, 200);
    }

    // A bad update is refused and changes nothing.
    let (status, body) = send(&mut client, "POST", "/control", &[], r#"{"fail_ratio":-1}"#).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("fail_ratio must be"), "{body:?}");
    let (status, _) = send(&mut client, "GET", "/work", &[], "").await;
    assert_eq!(status, 200);

    let (status, body) = send(&mut client, "GET", "/stats", &[], "").await;
    assert_eq!(status, 200);
    let stats: BackendStats = serde_json::from_slice(&body).unwrap();
    assert_eq!((stats.received, stats.served, stats.failed), (36, 36, 20));
    assert_eq!((stats.refused_down, stats.tail, stats.seed), (0, 0, 7));
    assert_eq!(stats.by_attempt.get("1"), Some(&20));
    assert_eq!(stats.by_attempt.get("2"), Some(&15));
    assert_eq!(stats.by_attempt.get("none"), Some(&1));
    assert_eq!(backend.stop().await.received, 36);
}
