//! The server side on the wire: deadline refusals (HTTP and gRPC), load shedding under a hot
//! CPU, bulkhead refusals and the bulkhead's criticality-ordered queue.

use crate::support::{
    bounded, eventually, get, h2_client, http_client, request, send, serve_protected, Protection,
};
use axum::extract::State;
use axum::http::{HeaderMap, Version};
use axum::routing::get as route_get;
use axum::Router;
use parking_lot::Mutex;
use spillway_core::bulkhead::BulkheadConfig;
use spillway_core::overload::CpuUsage;
use spillway_core::CRITICALITY_HEADER;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Semaphore};

/// A handler that counts its calls.
fn counting_routes(calls: Arc<AtomicUsize>) -> Router {
    let handler = |State(calls): State<Arc<AtomicUsize>>| async move {
        calls.fetch_add(1, Ordering::SeqCst);
        "ran\n"
    };
    Router::new().route("/", route_get(handler).post(handler)).with_state(calls)
}

#[tokio::test]
async fn deadline_below_the_minimum_gets_504_json_without_running_the_handler() {
    let calls = Arc::new(AtomicUsize::new(0));
    let server = serve_protected(counting_routes(calls.clone()), Protection::default()).await;
    let client = http_client();
    // The minimum budget is 20 ms; the route default is 10 s, longer than `bounded` waits, so
    // an answer at all means the refusal did not wait for anything.
    for (name, value) in [("x-request-timeout", "5ms"), ("grpc-timeout", "19m")] {
        let reply = send(&client, get(&server.url, &[(name, value)])).await;
        assert_eq!(reply.status, 504, "{name}: {value}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert_eq!(reply.body, "{\"error\":\"deadline_exceeded\"}\n");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "refused requests never reach the handler");
    let reply = send(&client, get(&server.url, &[("x-request-timeout", "5s")])).await;
    assert_eq!((reply.status.as_u16(), reply.body.as_str()), (200, "ran\n"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn grpc_call_refused_by_the_deadline_gets_http_200_with_grpc_status_4() {
    let calls = Arc::new(AtomicUsize::new(0));
    let server = serve_protected(counting_routes(calls.clone()), Protection::default()).await;
    let headers = [("content-type", "application/grpc+proto"), ("grpc-timeout", "1m")];
    // Over HTTP/2 as gRPC clients speak it, and over HTTP/1.1 (gRPC-Web-like proxies).
    for (client, version) in [(h2_client(), Version::HTTP_2), (http_client(), Version::HTTP_11)] {
        let reply = send(&client, request("POST", &server.url, &headers)).await;
        assert_eq!(reply.version, version);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("grpc-status"), Some("4"));
        assert_eq!(reply.header("grpc-message"), Some("deadline_exceeded"));
        assert_eq!(reply.header("content-type"), Some("application/grpc"));
        assert_eq!(reply.body, "");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn handler_still_running_at_the_incoming_deadline_is_cut_off_with_504() {
    let routes = Router::new().route(
        "/",
        route_get(|| async {
            std::future::pending::<()>().await;
            "never\n"
        }),
    );
    let server = serve_protected(routes, Protection::default()).await;
    let reply = send(&http_client(), get(&server.url, &[("x-request-timeout", "100ms")])).await;
    assert_eq!(reply.status, 504);
    assert_eq!(reply.body, "{\"error\":\"deadline_exceeded\"}\n");
}

/// Routes for the concurrency tests: `/hold` tells `entered` it runs and waits for a permit
/// from `release`; `/record` notes the criticality it was served with, in order.
fn holding_routes(
    entered: mpsc::UnboundedSender<()>,
    release: Arc<Semaphore>,
    served: Arc<Mutex<Vec<String>>>,
) -> Router {
    Router::new()
        .route(
            "/hold",
            route_get(move || async move {
                entered.send(()).unwrap();
                release.acquire().await.unwrap().forget();
                "released\n"
            }),
        )
        .route(
            "/record",
            route_get(move |headers: HeaderMap| async move {
                let class = headers.get(CRITICALITY_HEADER).and_then(|v| v.to_str().ok());
                served.lock().push(class.unwrap_or("-").to_owned());
                "recorded\n"
            }),
        )
}

#[tokio::test]
async fn full_bulkhead_without_a_queue_answers_503_bulkhead_full_with_retry_after() {
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let routes = holding_routes(entered_tx, release.clone(), Arc::default());
    let protection =
        Protection { bulkhead: BulkheadConfig::new(1, 0, Duration::ZERO), ..Protection::default() };
    let server = serve_protected(routes, protection).await;
    let client = http_client();

    let holder = tokio::spawn(send_owned(client.clone(), format!("{}/hold", server.url)));
    bounded("the first request to run", entered.recv()).await.unwrap();

    let reply = send(&client, get(&format!("{}/record", server.url), &[])).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.body, "{\"error\":\"bulkhead_full\",\"retry_after_ms\":1000}\n");

    release.add_permits(1);
    let held = bounded("the first request to finish", holder).await.unwrap();
    assert_eq!((held.status.as_u16(), held.body.as_str()), (200, "released\n"));
    // The slot came back.
    let reply = send(&client, get(&format!("{}/record", server.url), &[])).await;
    assert_eq!(reply.status, 200);
    assert_eq!(server.bulkhead.in_flight(), 0);
}

#[tokio::test]
async fn client_that_disconnects_while_holding_the_only_slot_gives_it_back() {
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let routes = holding_routes(entered_tx, Arc::new(Semaphore::new(0)), Arc::default());
    let protection =
        Protection { bulkhead: BulkheadConfig::new(1, 0, Duration::ZERO), ..Protection::default() };
    let server = serve_protected(routes, protection).await;
    // A raw connection, so the test decides exactly when the client goes away.
    let addr = server.url.trim_start_matches("http://");
    let mut raw = bounded("a connection", TcpStream::connect(addr)).await.unwrap();
    let hold = format!("GET /hold HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    raw.write_all(hold.as_bytes()).await.unwrap();
    bounded("the held request to run", entered.recv()).await.unwrap();
    assert_eq!(server.bulkhead.in_flight(), 1);

    drop(raw);
    let bulkhead = server.bulkhead.clone();
    eventually("the slot to come back", || bulkhead.in_flight() == 0).await;
    let reply = send(&http_client(), get(&format!("{}/record", server.url), &[])).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn bulkhead_serves_a_queued_critical_request_before_an_earlier_sheddable_one() {
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let served = Arc::new(Mutex::new(Vec::new()));
    let routes = holding_routes(entered_tx, release.clone(), served.clone());
    let protection = Protection {
        bulkhead: BulkheadConfig::new(1, 2, Duration::from_secs(10)),
        ..Protection::default()
    };
    let server = serve_protected(routes, protection).await;
    let client = http_client();
    let record = format!("{}/record", server.url);

    let holder = tokio::spawn(send_owned(client.clone(), format!("{}/hold", server.url)));
    bounded("the first request to run", entered.recv()).await.unwrap();
    let bulkhead = server.bulkhead.clone();
    let sheddable =
        tokio::spawn(send_with(client.clone(), record.clone(), CRITICALITY_HEADER, "sheddable"));
    eventually("the sheddable request to queue", || bulkhead.queued() == 1).await;
    let critical =
        tokio::spawn(send_with(client.clone(), record.clone(), CRITICALITY_HEADER, "critical"));
    eventually("the critical request to queue", || bulkhead.queued() == 2).await;
    assert!(served.lock().is_empty(), "both wait while the slot is held");

    release.add_permits(1);
    for waiter in [holder, sheddable, critical] {
        assert_eq!(bounded("a request to finish", waiter).await.unwrap().status, 200);
    }
    assert_eq!(*served.lock(), ["CRITICAL", "SHEDDABLE"]);
}

#[tokio::test]
async fn hot_cpu_with_more_in_flight_than_learned_sheds_with_503_overloaded() {
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let served = Arc::new(Mutex::new(Vec::new()));
    let routes = holding_routes(entered_tx, release.clone(), served.clone());
    let server = serve_protected(routes, Protection::default()).await;
    let client = http_client();
    let record = format!("{}/record", server.url);
    server.cpu.set(CpuUsage::from_permille(950));

    // Nothing has completed yet, so the shedder's estimate is its smallest: one in flight
    // (each class's share is at least one). Two are let in, a third is one too many.
    let mut holders = Vec::new();
    for _ in 0..2 {
        holders.push(tokio::spawn(send_owned(client.clone(), format!("{}/hold", server.url))));
        bounded("a held request to run", entered.recv()).await.unwrap();
    }
    let reply = send(&client, get(&record, &[(CRITICALITY_HEADER, "CRITICAL_PLUS")])).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.body, "{\"error\":\"overloaded\",\"retry_after_ms\":1000}\n");
    assert!(served.lock().is_empty(), "a shed request never reaches the handler");

    // Once the work in flight completes, requests are served again, CPU still hot.
    release.add_permits(2);
    for holder in holders {
        assert_eq!(bounded("a held request to finish", holder).await.unwrap().status, 200);
    }
    assert_eq!(send(&client, get(&record, &[])).await.status, 200);
}

async fn send_owned(client: crate::support::HttpClient, url: String) -> crate::support::Reply {
    send(&client, get(&url, &[])).await
}

async fn send_with(
    client: crate::support::HttpClient,
    url: String,
    name: &'static str,
    value: &'static str,
) -> crate::support::Reply {
    send(&client, get(&url, &[(name, value)])).await
}
