//! The lean HTTP/2 client towards HTTP/2 upstreams (`upstream::h2_client`, issue 15) on real
//! sockets: many concurrent calls multiplexed on one upstream connection, the server's
//! SETTINGS_MAX_CONCURRENT_STREAMS respected (more connections open, every call answered), a
//! slow downstream reader holding the upstream back by flow control, a downstream that drops
//! a response mid-body resetting the upstream stream, an upstream connection lost mid-body,
//! and the `http2_client: hyper` fallback. The upstream is a hyper h2c server the test
//! controls and counts.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the upstream saw.
struct Seen {
    /// TCP connections accepted.
    accepted: AtomicUsize,
    /// `/hold` requests waiting, and the permits that release them.
    held: AtomicUsize,
    release: tokio::sync::Semaphore,
    /// Bytes the `/firehose` body handed to hyper (bounded by flow control if the reader is
    /// slow), and whether it found its stream gone.
    firehose_sent: AtomicU64,
    firehose_cancelled: AtomicBool,
}

async fn handle(seen: Arc<Seen>, req: Request<Incoming>) -> Result<Response<TestBody>, BoxError> {
    match req.uri().path() {
        "/hold" => {
            seen.held.fetch_add(1, Ordering::SeqCst);
            seen.release.acquire().await.unwrap().forget();
            let tag = req.headers().get("x-tag").map(|v| v.to_str().unwrap().to_string());
            Ok(Response::new(body(format!("held {}", tag.unwrap_or_default()))))
        }
        "/firehose" => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
                while tx.send(Ok(Frame::data(chunk.clone()))).await.is_ok() {
                    seen.firehose_sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                }
                seen.firehose_cancelled.store(true, Ordering::SeqCst);
            });
            let frames = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx);
            Ok(Response::new(StreamBody::new(frames).boxed()))
        }
        "/echo" => {
            let bytes = req.into_body().collect().await?.to_bytes();
            Ok(Response::new(body(bytes)))
        }
        _ => Ok(Response::new(body("ok"))),
    }
}

/// An h2c upstream allowing `max_streams` concurrent streams per connection.
async fn upstream(max_streams: u32) -> (SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen {
        accepted: AtomicUsize::new(0),
        held: AtomicUsize::new(0),
        release: tokio::sync::Semaphore::new(0),
        firehose_sent: AtomicU64::new(0),
        firehose_cancelled: AtomicBool::new(false),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let st = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            st.accepted.fetch_add(1, Ordering::SeqCst);
            let seen = st.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| handle(seen.clone(), req));
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(max_streams)
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

/// A gateway with an h2c listener to an HTTP/2 cluster on `upstream`; `client` is the
/// cluster's `http2_client` (or none: the default, lean).
fn gateway_to(upstream: SocketAddr, client: Option<&str>) -> spillway_gateway::Gateway {
    let client = client.map_or(String::new(), |c| format!("http2_client: {c}, "));
    gateway(&format!(
        r#"
workers: 1
listeners:
  - {{ name: public, address: "127.0.0.1:0", protocol: h2c }}
clusters:
  - {{ name: up, protocol: http2, {client}endpoints: [{{ address: "{upstream}" }}], timeouts: {{ request: 30s }} }}
routes: [{{ name: all, cluster: up }}]
shutdown: {{ drain: 10s }}
"#
    ))
}

async fn connect(addr: SocketAddr) -> SendRequest<TestBody> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(65_535)
        .handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
}

fn get(addr: SocketAddr, path: &str, tag: &str) -> Request<TestBody> {
    Request::get(format!("http://{addr}{path}")).header("x-tag", tag).body(body("")).unwrap()
}

async fn text(mut sender: SendRequest<TestBody>, req: Request<TestBody>) -> (StatusCode, String) {
    sender.ready().await.unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn stop(gw: spillway_gateway::Gateway) {
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

/// Sends `n` `/hold` calls at once, waits until the upstream holds them all, releases them,
/// and checks every call got its own answer.
async fn held_calls(addr: SocketAddr, seen: &Arc<Seen>, n: usize) {
    let sender = connect(addr).await;
    let calls: Vec<_> = (0..n)
        .map(|i| {
            let sender = sender.clone();
            tokio::spawn(
                async move { (text(sender, get(addr, "/hold", &format!("t{i}"))).await, i) },
            )
        })
        .collect();
    let s = seen.clone();
    eventually(Duration::from_secs(10), "every call held upstream at once", move || {
        s.held.load(Ordering::SeqCst) == n
    })
    .await;
    seen.release.add_permits(n);
    for call in calls {
        let ((status, body), i) = call.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, format!("held t{i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls_share_one_upstream_connection() {
    let (up, seen) = upstream(1000).await;
    let gw = gateway_to(up, Some("lean"));
    let addr = gw.listener_address("public").unwrap();
    held_calls(addr, &seen, 80).await;
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 1, "80 calls multiplexed on one connection");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_stream_limit_opens_more_connections_and_every_call_is_answered() {
    let (up, seen) = upstream(4).await;
    let gw = gateway_to(up, Some("lean"));
    let addr = gw.listener_address("public").unwrap();
    // A first call opens the connection and learns the limit.
    assert_eq!(text(connect(addr).await, get(addr, "/", "warm")).await.0, StatusCode::OK);
    held_calls(addr, &seen, 10).await;
    let accepted = seen.accepted.load(Ordering::SeqCst);
    assert!(accepted >= 3, "10 held calls at 4 streams per connection need 3 ({accepted})");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_holds_the_upstream_and_dropping_the_body_resets_its_stream() {
    let (up, seen) = upstream(100).await;
    let gw = gateway_to(up, Some("lean"));
    let addr = gw.listener_address("public").unwrap();
    let mut sender = connect(addr).await;
    sender.ready().await.unwrap();
    let resp = sender.send_request(get(addr, "/firehose", "f")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some());
    // Nothing read for a while: the upstream is held by the windows (ours towards the
    // upstream: 1 MiB per stream; the listener's towards the client), not buffered whole.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = seen.firehose_sent.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let later = seen.firehose_sent.load(Ordering::SeqCst);
    assert_eq!(sent, later, "the upstream is stalled while nobody reads");
    assert!(later < 8 * 1024 * 1024, "bounded buffering: {later} bytes sent upstream");
    // The downstream goes away: the upstream stream is reset, its body stops.
    drop(body);
    let s = seen.clone();
    eventually(Duration::from_secs(5), "the upstream saw its stream reset", move || {
        s.firehose_cancelled.load(Ordering::SeqCst)
    })
    .await;
    // The connection serves on.
    assert_eq!(text(sender, get(addr, "/", "after")).await, (StatusCode::OK, "ok".into()));
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 1);
    stop(gw).await;
}

type DieSwitch = Arc<std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>>;

/// `/die`: a head and part of a body, then the switch drops the whole connection.
async fn die_handle(
    die: DieSwitch,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, BoxError> {
    if req.uri().path() != "/die" {
        return Ok(Response::new(body("ok")));
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
    tx.send(Ok(Frame::data(Bytes::from_static(b"partial")))).await.unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(d) = die.lock().unwrap().take() {
            let _ = d.send(());
        }
        // The body never ends by itself: only the lost connection cuts it.
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(tx);
    });
    let frames = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx);
    Ok(Response::new(StreamBody::new(frames).boxed()))
}

/// An upstream that answers one request's head and part of its body, then closes the TCP
/// connection: speaks HTTP/2 through hyper until `/die` arrives, then drops the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_connection_lost_mid_body_fails_that_response_and_the_next_call_reconnects() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let acc = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            acc.fetch_add(1, Ordering::SeqCst);
            let (die_tx, die_rx) = tokio::sync::oneshot::channel::<()>();
            let die_tx: DieSwitch = Arc::new(std::sync::Mutex::new(Some(die_tx)));
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| die_handle(die_tx.clone(), req));
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = die_rx => {} // the connection (and its socket) is dropped mid-body
                }
            });
        }
    });
    let gw = gateway_to(up, Some("lean"));
    let addr = gw.listener_address("public").unwrap();
    let mut sender = connect(addr).await;
    sender.ready().await.unwrap();
    let resp = sender.send_request(get(addr, "/die", "d")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let collected = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("the body ends");
    assert!(collected.is_err(), "a response cut by a lost connection ends in error");
    let (status, text_body) = text(sender, get(addr, "/", "next")).await;
    assert_eq!((status, text_body.as_str()), (StatusCode::OK, "ok"));
    assert_eq!(accepted.load(Ordering::SeqCst), 2, "the next call opened a new connection");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hyper_client_stays_available_as_a_fallback() {
    let (up, seen) = upstream(100).await;
    let gw = gateway_to(up, Some("hyper"));
    let addr = gw.listener_address("public").unwrap();
    let sender = connect(addr).await;
    let req = Request::post(format!("http://{addr}/echo")).body(body("echo me")).unwrap();
    assert_eq!(text(sender.clone(), req).await, (StatusCode::OK, "echo me".into()));
    held_calls(addr, &seen, 5).await;
    stop(gw).await;
    // An unknown client is a config error.
    let yaml = format!(
        "listeners: [{{ name: p, address: \"127.0.0.1:0\" }}]\nclusters: [{{ name: up, protocol: http2, http2_client: fast, endpoints: [{{ address: \"{up}\" }}] }}]\nroutes: [{{ name: all, cluster: up }}]\n"
    );
    let err = spillway_gateway::Config::parse(&yaml, "test.yaml", &std::env::temp_dir()).err();
    assert!(format!("{err:?}").contains("expected lean or hyper"), "{err:?}");
}
