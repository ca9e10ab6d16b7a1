//! HTTP/2 on the wire through the gateway (issue 15): flow control with large bodies both ways
//! (one stream and several at once on one connection, byte-exact), resets in both directions
//! (the client's RST_STREAM cancels the upstream request; an upstream's reset becomes a 502 or
//! a reset for that stream only), GOAWAY during in-flight streams (the gateway's graceful
//! shutdown and an upstream's), and ALPN on a TLS listener. Each test runs against both of the
//! listener's HTTP/2 servers (`http2_server: lean` and `hyper`). Real hyper clients and
//! servers on loopback; the upstream here is an h2c server the test controls.

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
use std::sync::{Arc, Mutex};
use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the controlled upstream saw, and its switches.
struct UpstreamState {
    /// TCP connections accepted.
    accepted: AtomicUsize,
    /// Connections closed (after a GOAWAY or by the peer).
    closed: AtomicUsize,
    /// Incremented to make every connection accepted before then send GOAWAY and close once
    /// its streams have finished.
    goaway: tokio::sync::watch::Sender<u64>,
    /// Bytes of `/sink` request bodies read so far.
    sink_bytes: AtomicU64,
    /// How the last `/sink` body ended: `complete` or `error`.
    sink_outcome: Mutex<Option<&'static str>>,
    /// A `/firehose` response body found its stream gone.
    firehose_cancelled: AtomicBool,
    /// `/hold` requests that arrived, and the permits that let them answer.
    held_arrived: AtomicUsize,
    held: tokio::sync::Semaphore,
}

impl UpstreamState {
    fn sink_outcome(&self) -> Option<&'static str> {
        *self.sink_outcome.lock().unwrap()
    }
}

/// A response body fed by a channel of frames (data or an error).
fn channel_body(rx: tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>) -> TestBody {
    let frames = tonic::codegen::tokio_stream::wrappers::ReceiverStream::new(rx);
    let frames = tonic::codegen::tokio_stream::StreamExt::map(frames, |r| r.map(Frame::data));
    StreamBody::new(frames).boxed()
}

async fn upstream_handle(
    state: Arc<UpstreamState>,
    req: Request<Incoming>,
) -> Result<Response<TestBody>, BoxError> {
    match req.uri().path() {
        "/sink" => {
            // Reads the whole body, counting; answers once it ends.
            let mut body = req.into_body();
            loop {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        let n = frame.data_ref().map_or(0, |d| d.len());
                        state.sink_bytes.fetch_add(n as u64, Ordering::SeqCst);
                    }
                    Some(Err(_)) => {
                        *state.sink_outcome.lock().unwrap() = Some("error");
                        return Err("the request body ended in error".into());
                    }
                    None => break,
                }
            }
            *state.sink_outcome.lock().unwrap() = Some("complete");
            Ok(Response::new(body_of("sunk")))
        }
        "/firehose" => {
            // 64 KiB chunks until the stream is gone.
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            tokio::spawn(async move {
                let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                while tx.send(Ok(chunk.clone())).await.is_ok() {}
                state.firehose_cancelled.store(true, Ordering::SeqCst);
            });
            Ok(Response::new(channel_body(rx)))
        }
        "/reset-before-headers" => Err("reset before any headers".into()),
        "/reset-mid-body" => {
            // Headers and a first chunk, then the stream is reset (a body error).
            let (tx, rx) = tokio::sync::mpsc::channel(2);
            tokio::spawn(async move {
                let _ = tx.send(Ok(Bytes::from_static(b"partial"))).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tx.send(Err("upstream gave up mid-body".into())).await;
            });
            Ok(Response::new(channel_body(rx)))
        }
        "/hold" => {
            state.held_arrived.fetch_add(1, Ordering::SeqCst);
            state.held.acquire().await.unwrap().forget();
            Ok(Response::new(body_of("held done")))
        }
        _ => Ok(Response::new(body_of("ok"))),
    }
}

fn body_of(text: &'static str) -> TestBody {
    body(text)
}

/// Starts the controlled h2c upstream.
async fn upstream() -> (SocketAddr, Arc<UpstreamState>) {
    let state = Arc::new(UpstreamState {
        accepted: AtomicUsize::new(0),
        closed: AtomicUsize::new(0),
        goaway: tokio::sync::watch::channel(0).0,
        sink_bytes: AtomicU64::new(0),
        sink_outcome: Mutex::new(None),
        firehose_cancelled: AtomicBool::new(false),
        held_arrived: AtomicUsize::new(0),
        held: tokio::sync::Semaphore::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            st.accepted.fetch_add(1, Ordering::SeqCst);
            let mut goaway = st.goaway.subscribe();
            let generation = *goaway.borrow_and_update();
            let state = st.clone();
            tokio::spawn(async move {
                let svc = {
                    let state = state.clone();
                    hyper::service::service_fn(move |req| upstream_handle(state.clone(), req))
                };
                let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc);
                let mut conn = std::pin::pin!(conn);
                let asked = tokio::select! {
                    _ = conn.as_mut() => false,
                    asked = goaway.wait_for(|g| *g > generation) => asked.is_ok(),
                };
                if asked {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.as_mut().await;
                }
                state.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, state)
}

/// Protocols offered by ALPN, in the client's order of preference.
type AlpnList = &'static [&'static [u8]];

/// The listener's HTTP/2 servers (`http2_server`): every test runs against each.
const SERVERS: [&str; 2] = ["lean", "hyper"];

/// A gateway with an h2c listener served by `server` (bodies up to 100 MB) routing everything
/// to an HTTP/2 cluster on `upstream`.
fn h2_gateway(upstream: SocketAddr, server: &str) -> spillway_gateway::Gateway {
    gateway(&format!(
        r#"
workers: 1
listeners:
  - {{ name: public, address: "127.0.0.1:0", protocol: h2c, http2_server: {server}, limits: {{ max_body_bytes: 100000000 }} }}
clusters:
  - {{ name: up, protocol: http2, endpoints: [{{ address: "{upstream}" }}], timeouts: {{ request: 30s }} }}
routes: [{{ name: all, cluster: up }}]
shutdown: {{ drain: 10s }}
"#
    ))
}

/// An h2c (prior knowledge) client connection to `addr`; its sender and the connection task.
async fn connect(addr: SocketAddr) -> (SendRequest<TestBody>, tokio::task::JoinHandle<()>) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, task)
}

fn request(addr: SocketAddr, method: &str, path: &str, body: TestBody) -> Request<TestBody> {
    Request::builder().method(method).uri(format!("http://{addr}{path}")).body(body).unwrap()
}

/// Sends `req` on `sender`, waiting at most 10 s for the response head.
async fn send(
    sender: &mut SendRequest<TestBody>,
    req: Request<TestBody>,
) -> Result<Response<Incoming>, hyper::Error> {
    tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("a response head within 10 s")
}

/// GET `path`; status and body text.
async fn get_text(
    sender: &mut SendRequest<TestBody>,
    addr: SocketAddr,
    path: &str,
) -> (StatusCode, String) {
    let resp = send(sender, request(addr, "GET", path, body(""))).await.unwrap();
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

/// Byte `i` of the test pattern `seed`: not periodic in any power of two, so a lost, repeated
/// or reordered chunk shows.
fn pattern(seed: u64, i: u64) -> u8 {
    (i.wrapping_mul(31).wrapping_add(i >> 12).wrapping_add(seed.wrapping_mul(97)) % 251) as u8
}

/// A request body of `len` pattern bytes in uneven chunks, produced as the stream accepts
/// them (never whole in memory).
fn pattern_body(seed: u64, len: u64) -> TestBody {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut offset = 0u64;
        let mut n = 0u64;
        while offset < len {
            let size = (100_000 + (n * 37_813) % 200_000).min(len - offset);
            let chunk: Vec<u8> = (offset..offset + size).map(|i| pattern(seed, i)).collect();
            if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                return;
            }
            offset += size;
            n += 1;
        }
    });
    channel_body(rx)
}

/// Reads `body` to its end, checking every byte against pattern `seed`; the length.
async fn check_pattern(seed: u64, mut body: Incoming) -> u64 {
    let mut offset = 0u64;
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(30), body.frame())
        .await
        .expect("body progress within 30 s")
    {
        if let Ok(data) = frame.unwrap().into_data() {
            for (k, b) in data.iter().enumerate() {
                let i = offset + k as u64;
                assert_eq!(*b, pattern(seed, i), "byte {i} of stream {seed}");
            }
            offset += data.len() as u64;
        }
    }
    offset
}

async fn large_bodies_cross_h2_both_ways_byte_exact_on_one_and_on_concurrent_streams_on(
    server: &'static str,
) {
    eprintln!("http2_server: {server}");
    // The common backend's `/echo` streams the request body back as it arrives, so upload and
    // download run at once and both directions' flow-control windows fill and reopen many times.
    let (b, _) = backend("b").await;
    let gw = h2_gateway(b, server);
    let addr = gw.listener_address("public").unwrap();
    let (mut sender, _conn) = connect(addr).await;

    const BIG: u64 = 24 * 1024 * 1024;
    let resp =
        send(&mut sender, request(addr, "POST", "/echo", pattern_body(1, BIG))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(check_pattern(1, resp.into_body()).await, BIG);

    // Four 8 MiB streams at once on the same connection, each its own pattern.
    const EACH: u64 = 8 * 1024 * 1024;
    let mut streams = Vec::new();
    for seed in 2..6u64 {
        let mut sender = sender.clone();
        streams.push(tokio::spawn(async move {
            let resp = send(&mut sender, request(addr, "POST", "/echo", pattern_body(seed, EACH)))
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            check_pattern(seed, resp.into_body()).await
        }));
    }
    for s in streams {
        assert_eq!(s.await.unwrap(), EACH);
    }
    stop(gw).await;
}

async fn a_client_reset_mid_upload_cancels_the_upstream_request_and_the_connection_serves_on_on(
    server: &'static str,
) {
    eprintln!("http2_server: {server}");
    let (up, state) = upstream().await;
    let gw = h2_gateway(up, server);
    let addr = gw.listener_address("public").unwrap();
    let (mut sender, _conn) = connect(addr).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let call = {
        let mut sender = sender.clone();
        tokio::spawn(async move {
            sender.send_request(request(addr, "POST", "/sink", channel_body(rx))).await
        })
    };
    for _ in 0..8 {
        tx.send(Ok(Bytes::from(vec![1u8; 32 * 1024]))).await.unwrap();
    }
    let seen = state.clone();
    eventually(Duration::from_secs(5), "the upstream reads the first 256 KiB", move || {
        seen.sink_bytes.load(Ordering::SeqCst) == 256 * 1024
    })
    .await;
    assert_eq!(state.sink_outcome(), None);
    // A body error makes hyper reset the stream (RST_STREAM) mid-body.
    tx.send(Err("client gives up".into())).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(5), call).await.unwrap().unwrap();
    assert!(answer.is_err(), "the reset stream has no response: {answer:?}");
    let seen = state.clone();
    eventually(Duration::from_secs(5), "the upstream request's body ends in error", move || {
        seen.sink_outcome() == Some("error")
    })
    .await;
    assert_eq!(get_text(&mut sender, addr, "/").await, (StatusCode::OK, "ok".to_string()));
    stop(gw).await;
}

async fn a_client_reset_mid_download_cancels_the_upstream_response_and_the_connection_serves_on_on(
    server: &'static str,
) {
    eprintln!("http2_server: {server}");
    let (up, state) = upstream().await;
    let gw = h2_gateway(up, server);
    let addr = gw.listener_address("public").unwrap();
    let (mut sender, _conn) = connect(addr).await;
    let resp = send(&mut sender, request(addr, "GET", "/firehose", body(""))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut read = 0usize;
    while read < 1024 * 1024 {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        read += frame.data_ref().map_or(0, |d| d.len());
    }
    assert!(!state.firehose_cancelled.load(Ordering::SeqCst));
    // Dropping the body resets the stream (RST_STREAM CANCEL).
    drop(body);
    let seen = state.clone();
    eventually(Duration::from_secs(5), "the upstream response stream is cancelled", move || {
        seen.firehose_cancelled.load(Ordering::SeqCst)
    })
    .await;
    assert_eq!(get_text(&mut sender, addr, "/").await, (StatusCode::OK, "ok".to_string()));
    stop(gw).await;
}

async fn an_upstream_reset_fails_only_its_own_stream_on(server: &'static str) {
    eprintln!("http2_server: {server}");
    let (up, state) = upstream().await;
    let gw = h2_gateway(up, server);
    let addr = gw.listener_address("public").unwrap();
    let (mut sender, _conn) = connect(addr).await;
    // A stream in flight on the same connection (and the same upstream connection) throughout.
    let held = {
        let mut sender = sender.clone();
        tokio::spawn(async move { get_text(&mut sender, addr, "/hold").await })
    };
    let seen = state.clone();
    eventually(Duration::from_secs(5), "the held request reaches the upstream", move || {
        seen.held_arrived.load(Ordering::SeqCst) == 1
    })
    .await;

    // Reset before any response headers: the gateway answers 502.
    let (status, _) = get_text(&mut sender, addr, "/reset-before-headers").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);

    // Reset after the headers and a first chunk: the client's stream must not end cleanly
    // (a truncated body passed off as complete would be silent corruption).
    let resp = send(&mut sender, request(addr, "GET", "/reset-mid-body", body(""))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut got = Vec::new();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(5), body.frame()).await.unwrap() {
            Some(Ok(frame)) => got.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..])),
            Some(Err(e)) => break Err(e),
            None => break Ok(()),
        }
    };
    assert!(ended.is_err(), "the upstream's reset reaches the client as a reset, not a clean end");
    assert_eq!(got, b"partial");

    // The other stream and the connection are unaffected.
    state.held.add_permits(1);
    let held = tokio::time::timeout(Duration::from_secs(5), held).await.unwrap().unwrap();
    assert_eq!(held, (StatusCode::OK, "held done".to_string()));
    assert_eq!(get_text(&mut sender, addr, "/").await, (StatusCode::OK, "ok".to_string()));
    stop(gw).await;
}

async fn graceful_shutdown_finishes_in_flight_h2_streams_and_refuses_new_ones_on(
    server: &'static str,
) {
    eprintln!("http2_server: {server}");
    let (up, state) = upstream().await;
    let gw = h2_gateway(up, server);
    let addr = gw.listener_address("public").unwrap();
    let (mut sender, _conn) = connect(addr).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut sender = sender.clone();
        held.push(tokio::spawn(async move { get_text(&mut sender, addr, "/hold").await }));
    }
    let seen = state.clone();
    eventually(Duration::from_secs(5), "both held requests reach the upstream", move || {
        seen.held_arrived.load(Ordering::SeqCst) == 2
    })
    .await;
    let stopped = tokio::task::spawn_blocking(move || {
        gw.shutdown();
        gw.wait();
    });
    // GOAWAY: new streams on the open connection are refused, and so are new connections,
    // while the two held streams are still in flight.
    let start = std::time::Instant::now();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "new streams still accepted after 5 s of draining"
        );
        match tokio::time::timeout(
            Duration::from_secs(5),
            sender.send_request(request(addr, "GET", "/", body(""))),
        )
        .await
        {
            Ok(Err(_)) => break,
            Ok(Ok(resp)) => assert_eq!(resp.status(), StatusCode::OK, "before the GOAWAY: served"),
            Err(_) => panic!("a new stream during the drain hangs instead of being refused"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start = std::time::Instant::now();
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "still accepting connections after 5 s of draining"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!stopped.is_finished(), "the drain waits for the held streams");
    state.held.add_permits(2);
    for h in held {
        let answer = tokio::time::timeout(Duration::from_secs(5), h).await.unwrap().unwrap();
        assert_eq!(answer, (StatusCode::OK, "held done".to_string()));
    }
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("stops once drained")
        .unwrap();
}

async fn an_upstream_goaway_lets_in_flight_streams_finish_and_later_requests_use_a_new_connection_on(
    server: &'static str,
) {
    eprintln!("http2_server: {server}");
    let (up, state) = upstream().await;
    let gw = h2_gateway(up, server);
    let addr = gw.listener_address("public").unwrap();
    let (mut sender, _conn) = connect(addr).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut sender = sender.clone();
        held.push(tokio::spawn(async move { get_text(&mut sender, addr, "/hold").await }));
    }
    let seen = state.clone();
    eventually(Duration::from_secs(5), "both held requests reach the upstream", move || {
        seen.held_arrived.load(Ordering::SeqCst) == 2
    })
    .await;
    let before = state.accepted.load(Ordering::SeqCst);
    // Every upstream connection open now sends GOAWAY and closes once its streams are done.
    state.goaway.send_modify(|g| *g += 1);
    // Requests during the drain are all answered, and soon over a new upstream connection.
    let start = std::time::Instant::now();
    while state.accepted.load(Ordering::SeqCst) == before {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no new upstream connection after the GOAWAY"
        );
        assert_eq!(get_text(&mut sender, addr, "/").await, (StatusCode::OK, "ok".to_string()));
    }
    state.held.add_permits(2);
    for h in held {
        let answer = tokio::time::timeout(Duration::from_secs(5), h).await.unwrap().unwrap();
        assert_eq!(answer, (StatusCode::OK, "held done".to_string()));
    }
    let seen = state.clone();
    eventually(
        Duration::from_secs(5),
        "the upstream connection that sent GOAWAY closes",
        move || seen.closed.load(Ordering::SeqCst) >= before,
    )
    .await;
    let accepted = state.accepted.load(Ordering::SeqCst);
    for _ in 0..5 {
        assert_eq!(get_text(&mut sender, addr, "/").await, (StatusCode::OK, "ok".to_string()));
    }
    assert_eq!(state.accepted.load(Ordering::SeqCst), accepted, "the new connection is reused");
    stop(gw).await;
}

async fn a_tls_listener_chooses_h2_when_offered_and_http1_otherwise_on(server: &'static str) {
    eprintln!("http2_server: {server}");
    let (b, _) = backend("b").await;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = write_temp("cert.pem", &certified.cert.pem());
    let key = write_temp("key.pem", &certified.signing_key.serialize_pem());
    let gw = gateway(&format!(
        r#"
workers: 1
listeners: [{{ name: tls, address: "127.0.0.1:0", http2_server: {server}, tls: {{ cert: "{cert}", key: "{key}" }} }}]
clusters: [{{ name: app, endpoints: [{{ address: "{b}" }}], timeouts: {{ request: 5s }} }}]
routes: [{{ name: all, cluster: app }}]
"#
    ));
    let addr = gw.listener_address("tls").unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    // (offered, in the client's order of preference) -> chosen.
    let cases: [(AlpnList, Option<&[u8]>); 4] = [
        (&[b"h2", b"http/1.1"], Some(b"h2")),
        (&[b"http/1.1", b"h2"], Some(b"h2")),
        (&[b"http/1.1"], Some(b"http/1.1")),
        (&[], None),
    ];
    for (offered, chosen) in cases {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        config.alpn_protocols = offered.iter().map(|p| p.to_vec()).collect();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let tls = connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), chosen, "offered {offered:?}");
        // The connection then speaks what was chosen (no ALPN: HTTP/1.1).
        let resp = if chosen == Some(b"h2") {
            let (mut s, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .unwrap();
            tokio::spawn(conn);
            s.send_request(Request::get("https://localhost/").body(body("")).unwrap())
                .await
                .unwrap()
        } else {
            let (mut s, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
            tokio::spawn(conn);
            s.send_request(Request::get("/").header("host", "localhost").body(body("")).unwrap())
                .await
                .unwrap()
        };
        let expected =
            if chosen == Some(b"h2") { http::Version::HTTP_2 } else { http::Version::HTTP_11 };
        assert_eq!(
            (resp.status(), resp.version()),
            (StatusCode::OK, expected),
            "offered {offered:?}"
        );
        assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "b");
    }
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_cross_h2_both_ways_byte_exact_on_one_and_on_concurrent_streams() {
    for server in SERVERS {
        large_bodies_cross_h2_both_ways_byte_exact_on_one_and_on_concurrent_streams_on(server)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reset_mid_upload_cancels_the_upstream_request_and_the_connection_serves_on() {
    for server in SERVERS {
        a_client_reset_mid_upload_cancels_the_upstream_request_and_the_connection_serves_on_on(
            server,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_reset_mid_download_cancels_the_upstream_response_and_the_connection_serves_on() {
    for server in SERVERS {
        a_client_reset_mid_download_cancels_the_upstream_response_and_the_connection_serves_on_on(
            server,
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_reset_fails_only_its_own_stream() {
    for server in SERVERS {
        an_upstream_reset_fails_only_its_own_stream_on(server).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_h2_streams_and_refuses_new_ones() {
    for server in SERVERS {
        graceful_shutdown_finishes_in_flight_h2_streams_and_refuses_new_ones_on(server).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_chooses_h2_when_offered_and_http1_otherwise() {
    for server in SERVERS {
        a_tls_listener_chooses_h2_when_offered_and_http1_otherwise_on(server).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_goaway_lets_in_flight_streams_finish_and_later_requests_use_a_new_connection()
{
    for server in SERVERS {
        an_upstream_goaway_lets_in_flight_streams_finish_and_later_requests_use_a_new_connection_on(server).await;
    }
}
