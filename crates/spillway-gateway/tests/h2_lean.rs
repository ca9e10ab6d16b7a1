//! The lean HTTP/2 server path (`listen::h2`, issue 15) on real sockets: what is specific to
//! its driver — 200 concurrent streams on one connection, a slow reader holding the upstream
//! back (flow control, nothing buffered whole), a client reset of one stream while the others
//! go on, graceful shutdown, idle close, a protocol error answered with GOAWAY while other
//! connections are served — and the `http2_server: hyper` fallback.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A gateway with one plain listener (`listen` is its extra keys) to an HTTP/1.1 cluster.
fn gateway_to(upstream: SocketAddr, listen: &str) -> spillway_gateway::Gateway {
    gateway(&format!(
        r#"
workers: 1
listeners:
  - {{ name: public, address: "127.0.0.1:0", {listen} }}
clusters:
  - {{ name: up, endpoints: [{{ address: "{upstream}" }}], timeouts: {{ request: 30s }} }}
routes: [{{ name: all, cluster: up }}]
shutdown: {{ drain: 10s }}
"#
    ))
}

/// An h2c client connection with hyper's default settings.
async fn connect(addr: SocketAddr) -> (SendRequest<TestBody>, tokio::task::JoinHandle<()>) {
    connect_with(addr, hyper::client::conn::http2::Builder::new(TokioExecutor::new())).await
}

async fn connect_with(
    addr: SocketAddr,
    builder: hyper::client::conn::http2::Builder<TokioExecutor>,
) -> (SendRequest<TestBody>, tokio::task::JoinHandle<()>) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = builder.handshake(TokioIo::new(stream)).await.unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, task)
}

fn get_req(addr: SocketAddr, path: &str, tag: &str) -> Request<TestBody> {
    Request::get(format!("http://{addr}{path}")).header("x-tag", tag).body(body("")).unwrap()
}

async fn stop(gw: spillway_gateway::Gateway) {
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

/// The server's first SETTINGS frame on a fresh h2c connection: its (id, value) pairs.
async fn server_settings(addr: SocketAddr) -> Vec<(u16, u32)> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head)).await.unwrap().unwrap();
    assert_eq!(head[3], 0x4, "the server's first frame is SETTINGS");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.unwrap();
    payload
        .chunks(6)
        .map(|c| (u16::from_be_bytes([c[0], c[1]]), u32::from_be_bytes([c[2], c[3], c[4], c[5]])))
        .collect()
}

/// SETTINGS_INITIAL_WINDOW_SIZE: the lean server announces 256 KiB, hyper's 1 MiB.
const INITIAL_WINDOW_SIZE: u16 = 0x4;
const LEAN_WINDOW: u32 = 256 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_streams_are_in_flight_at_once_on_one_connection() {
    let (b, state) = backend("b").await;
    let gw = gateway_to(b, "protocol: h2c");
    let addr = gw.listener_address("public").unwrap();
    let (sender, _conn) = connect(addr).await;
    let mut calls = Vec::new();
    for i in 0..200 {
        let mut sender = sender.clone();
        calls.push(tokio::spawn(async move {
            sender.ready().await.unwrap();
            let resp = sender.send_request(get_req(addr, "/hold", &format!("t{i}"))).await.unwrap();
            let status = resp.status();
            let text = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&text).into_owned(), i)
        }));
    }
    let seen = state.clone();
    eventually(Duration::from_secs(10), "200 requests held upstream at once", move || {
        seen.arrived().len() == 200
    })
    .await;
    state.held.open();
    for call in calls {
        let (status, text, i) = call.await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(text.contains(&format!("x-tag: t{i}\n")), "stream {i} got its own answer: {text}");
    }
    stop(gw).await;
}

/// An HTTP/1.1 upstream answering every request with an endless chunked body, counting the
/// bytes it managed to write.
async fn endless_upstream() -> (SocketAddr, Arc<AtomicU64>) {
    let written = Arc::new(AtomicU64::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = written.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
                if s.write_all(head).await.is_err() {
                    return;
                }
                let mut chunk = b"4000\r\n".to_vec();
                chunk.extend(std::iter::repeat_n(b'z', 0x4000));
                chunk.extend_from_slice(b"\r\n");
                while s.write_all(&chunk).await.is_ok() {
                    counter.fetch_add(0x4000, Ordering::SeqCst);
                }
            });
        }
    });
    (addr, written)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_read_holds_the_upstream_back() {
    let (up, written) = endless_upstream().await;
    let gw = gateway_to(up, "protocol: h2c");
    let addr = gw.listener_address("public").unwrap();
    // The client's windows stay at the RFC's 64 KiB: it takes no more until it reads.
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder.initial_stream_window_size(65_535).initial_connection_window_size(65_535);
    let (mut sender, _conn) = connect_with(addr, builder).await;
    let resp = sender.send_request(get_req(addr, "/endless", "slow")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Not reading: the upstream is stopped by full socket buffers once the gateway stopped
    // taking from it (a few MB at most on loopback), not after the whole endless body.
    let mut last = u64::MAX;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = written.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
    }
    let stalled = written.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(written.load(Ordering::SeqCst), stalled, "the upstream is held back");
    assert!(stalled < 32 * 1024 * 1024, "the gateway buffered {stalled} bytes for a slow reader");
    // Reading again lets it go on.
    let mut body = resp.into_body();
    let mut read = 0u64;
    while read < stalled + 8 * 1024 * 1024 {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("the body goes on")
            .unwrap()
            .unwrap();
        read += frame.data_ref().map_or(0, |d| d.len() as u64);
    }
    assert!(written.load(Ordering::SeqCst) > stalled);
    drop(body);
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reset_of_one_stream_leaves_the_others_going() {
    let (b, state) = backend("b").await;
    let gw = gateway_to(b, "protocol: h2c");
    let addr = gw.listener_address("public").unwrap();
    let (sender, conn) = connect(addr).await;
    let mut calls = Vec::new();
    for tag in ["keep-1", "cancel", "keep-2"] {
        let mut sender = sender.clone();
        calls.push(tokio::spawn(async move {
            let resp = sender.send_request(get_req(addr, "/hold", tag)).await.unwrap();
            resp.into_body().collect().await.unwrap().to_bytes()
        }));
    }
    let seen = state.clone();
    eventually(Duration::from_secs(5), "three requests held", move || seen.arrived().len() == 3)
        .await;
    // Dropping the response future resets its stream (RST_STREAM CANCEL).
    calls.remove(1).abort();
    tokio::time::sleep(Duration::from_millis(100)).await;
    state.held.open();
    for (call, tag) in calls.into_iter().zip(["keep-1", "keep-2"]) {
        let text = tokio::time::timeout(Duration::from_secs(5), call).await.unwrap().unwrap();
        assert!(String::from_utf8_lossy(&text).contains(&format!("x-tag: {tag}\n")));
    }
    // The connection serves on.
    let mut sender = sender.clone();
    let resp = sender.send_request(get_req(addr, "/", "after")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!conn.is_finished());
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_the_stream_in_flight_then_closes() {
    let (b, state) = backend("b").await;
    let gw = gateway_to(b, "protocol: h2c");
    let addr = gw.listener_address("public").unwrap();
    let (mut sender, conn) = connect(addr).await;
    let call = {
        let mut sender = sender.clone();
        tokio::spawn(async move {
            let resp = sender.send_request(get_req(addr, "/hold", "inflight")).await.unwrap();
            (resp.status(), resp.into_body().collect().await.unwrap().to_bytes())
        })
    };
    let seen = state.clone();
    eventually(Duration::from_secs(5), "the request is held", move || seen.arrived().len() == 1)
        .await;
    let stopping = blocking(move || {
        gw.shutdown();
        gw
    })
    .await;
    // GOAWAY reached the client: new requests are refused, the held one goes on.
    let mut refused = false;
    for _ in 0..50 {
        let fresh = tokio::time::timeout(
            Duration::from_secs(5),
            sender.send_request(get_req(addr, "/", "late")),
        )
        .await
        .unwrap();
        if fresh.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(refused, "requests after the shutdown are refused");
    assert!(!call.is_finished());
    state.held.open();
    let (status, text) = tokio::time::timeout(Duration::from_secs(5), call).await.unwrap().unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&text).contains("x-tag: inflight\n"));
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("the connection closes")
        .unwrap();
    blocking(move || stopping.wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let (b, _) = backend("b").await;
    let gw = gateway_to(b, "protocol: h2c, timeouts: { idle: 300ms }");
    let addr = gw.listener_address("public").unwrap();
    let (mut sender, conn) = connect(addr).await;
    let resp = sender.send_request(get_req(addr, "/", "one")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body().collect().await.unwrap();
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), conn).await.expect("closed when idle").unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200), "not before the idle timeout");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_error_gets_goaway_and_other_connections_are_served() {
    let (b, _) = backend("b").await;
    let gw = gateway_to(b, "protocol: h2c");
    let addr = gw.listener_address("public").unwrap();
    let (mut sender, _conn) = connect(addr).await;
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Preface, SETTINGS, then a DATA frame on stream 0 (a connection error, RFC 9113 §6.1).
    raw.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0").await.unwrap();
    raw.write_all(b"\0\0\x03\0\0\0\0\0\0abc").await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut got))
        .await
        .expect("the gateway closes the connection")
        .unwrap();
    // Frames until GOAWAY (type 7) with PROTOCOL_ERROR (1).
    let mut at = 0;
    let mut goaway = None;
    while at + 9 <= got.len() {
        let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
        if got[at + 3] == 0x7 {
            let p = &got[at + 9..at + 9 + len];
            goaway = Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
        }
        at += 9 + len;
    }
    assert_eq!(goaway, Some(1), "GOAWAY PROTOCOL_ERROR");
    let resp = sender.send_request(get_req(addr, "/", "other")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_and_auto_listeners_take_the_lean_path_and_hyper_stays_available() {
    let (b, _) = backend("b").await;
    for (listen, lean) in [
        ("protocol: h2c", true),
        ("protocol: auto", true),
        ("protocol: h2c, http2_server: lean", true),
        ("protocol: h2c, http2_server: hyper", false),
        ("protocol: auto, http2_server: hyper", false),
    ] {
        let gw = gateway_to(b, listen);
        let addr = gw.listener_address("public").unwrap();
        let window = server_settings(addr)
            .await
            .into_iter()
            .find(|(id, _)| *id == INITIAL_WINDOW_SIZE)
            .map(|(_, v)| v);
        assert_eq!(window == Some(LEAN_WINDOW), lean, "{listen}: window {window:?}");
        let req = Request::get("/headers").body(body(Bytes::new())).unwrap();
        let (status, _, text) = h2c(addr, req).await;
        assert_eq!(status, StatusCode::OK, "{listen}");
        let text = String::from_utf8_lossy(&text);
        assert!(text.contains("x-forwarded-for: 127.0.0.1"), "{listen}: {text}");
        assert!(!text.contains("x-upstream-secret"), "{listen}");
        // HTTP/1.1 still works on an auto listener.
        if listen.contains("auto") {
            assert_eq!(get(addr, "/").await.0, StatusCode::OK);
        }
        stop(gw).await;
    }
}

#[test]
fn http2_server_accepts_lean_or_hyper_only() {
    let yaml = |v: &str| {
        format!(
            "listeners: [{{ name: p, address: \"127.0.0.1:0\", protocol: h2c, http2_server: {v} }}]\n\
             clusters: [{{ name: up, endpoints: [{{ address: \"127.0.0.1:1\" }}] }}]\n\
             routes: [{{ name: all, cluster: up }}]\n"
        )
    };
    let parse =
        |v: &str| spillway_gateway::Config::parse(&yaml(v), "test.yaml", &std::env::temp_dir());
    assert!(parse("lean").is_ok());
    assert!(parse("hyper").is_ok());
    let err = parse("tokio").unwrap_err().to_string();
    assert!(err.contains("http2_server") && err.contains("expected lean or hyper"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_silent_with_a_request_in_flight_is_pinged_then_dropped() {
    let (b, state) = backend("b").await;
    let gw = gateway_to(b, "protocol: h2c, timeouts: { idle: 300ms }");
    let addr = gw.listener_address("public").unwrap();
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    let out = common::h2_opening("GET", "/hold", &addr.to_string(), &[], true);
    raw.write_all(&out).await.unwrap();
    let seen = state.clone();
    eventually(Duration::from_secs(5), "the request is held", move || seen.arrived().len() == 1)
        .await;
    // From now on the client reads but never answers: a PING comes, then the close.
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut got))
        .await
        .expect("the gateway drops the silent client")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300), "not before a PING went unanswered");
    let mut at = 0;
    let mut pinged = false;
    while at + 9 <= got.len() {
        let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
        pinged |= got[at + 3] == 0x6 && got[at + 4] & 0x1 == 0;
        at += 9 + len;
    }
    assert!(pinged, "the gateway probed with a PING first");
    state.held.open();
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_acknowledges_our_settings_gets_goaway_settings_timeout() {
    use spillway_h2::frame::Frame;
    let (b, _) = backend("b").await;
    let gw = gateway_to(b, "protocol: h2c, timeouts: { header_read: 300ms }");
    let addr = gw.listener_address("public").unwrap();
    // A client that acknowledges: served past the timeout.
    let (mut sender, _task) = connect(addr).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let resp = sender.send_request(get_req(addr, "/", "acked")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // One that sends its preface and SETTINGS but never ACKs ours.
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut out = spillway_h2::PREFACE.to_vec();
    Frame::Settings { ack: false, params: &[] }.encode(&mut out);
    raw.write_all(&out).await.unwrap();
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut got))
        .await
        .expect("the gateway closes the connection")
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(250), "not before the timeout");
    let mut at = 0;
    let mut goaway_code = None;
    while at + 9 <= got.len() {
        let len = u32::from_be_bytes([0, got[at], got[at + 1], got[at + 2]]) as usize;
        if got[at + 3] == 0x7 && at + 9 + 8 <= got.len() {
            let p = &got[at + 9..];
            goaway_code = Some(u32::from_be_bytes([p[4], p[5], p[6], p[7]]));
        }
        at += 9 + len;
    }
    assert_eq!(goaway_code, Some(0x4), "GOAWAY SETTINGS_TIMEOUT: {got:?}");
    stop(gw).await;
}
