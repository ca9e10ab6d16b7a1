//! End-to-end proxying on loopback: real backends, a real gateway, real clients.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn one_cluster(addr: std::net::SocketAddr, extra_routes: &str, listener_extra: &str) -> String {
    format!(
        r#"
workers: 2
listeners:
  - name: public
    address: 127.0.0.1:0
{listener_extra}
clusters:
  - name: app
    endpoints: [{{ address: "{addr}" }}]
    timeouts: {{ request: 5s }}
routes:
{extra_routes}
  - name: api
    match: {{ path_prefix: /api }}
    cluster: app
    rewrite: {{ path_prefix: / }}
  - name: all
    match: {{ path_prefix: / }}
    cluster: app
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_proxying_strips_hop_by_hop_and_adds_forwarding_headers() {
    let (b, _) = backend("b").await;
    let gw = gateway(&one_cluster(b, "", ""));
    let addr = gw.listener_address("public").unwrap();
    let req = Request::get("/api/headers?x=1")
        .header("host", "shop.local")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .header("x-forwarded-for", "10.0.0.1")
        .header("x-end-to-end", "kept")
        .body(body(""))
        .unwrap();
    let (status, headers, received) = h1(addr, req).await;
    let text = String::from_utf8(received.to_vec()).unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("path: /headers?x=1"), "prefix rewrite keeps the query: {text}");
    assert!(text.contains("host: shop.local"), "{text}");
    assert!(text.contains("x-end-to-end: kept"), "{text}");
    assert!(!text.contains("x-hop"), "headers named in Connection are removed: {text}");
    assert!(!text.contains("keep-alive: timeout"), "{text}");
    assert!(!text.contains("proxy-connection"), "{text}");
    assert!(text.contains("x-forwarded-for: 10.0.0.1, 127.0.0.1"), "{text}");
    assert!(text.contains("x-forwarded-proto: http"), "{text}");
    assert!(text.contains("x-forwarded-host: shop.local"), "{text}");
    let request_id = text.lines().find_map(|l| l.strip_prefix("x-request-id: ")).unwrap();
    assert_eq!(request_id.len(), 32);
    assert_eq!(
        headers.get("x-request-id").unwrap(),
        request_id,
        "the id is passed back to the client"
    );
    assert!(
        headers.get("x-upstream-secret").is_none(),
        "response hop-by-hop headers are removed too"
    );
    assert!(headers.get("keep-alive").is_none());

    // A client's own request id is passed on unchanged.
    let req = Request::get("/headers").header("x-request-id", "abc-123").body(body_of("")).unwrap();
    let (_, _, echoed) = h1(addr, req).await;
    assert!(String::from_utf8_lossy(&echoed).contains("x-request-id: abc-123"));
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_responses_unknown_routes_and_limits() {
    let (b, _) = backend("b").await;
    let routes = r#"
  - name: hello
    match: { path: /hello, methods: [GET] }
    direct_response: { status: 201, body: "hi", headers: { x-direct: "yes" } }
  - name: only-known
    match: { path_prefix: /, headers: [{ name: x-block, present: true }] }
    direct_response: { status: 403, body: "blocked" }"#;
    let limits = "    limits: { max_body_bytes: 1000, max_header_bytes: 8192 }";
    let gw = gateway(
        &one_cluster(b, routes, limits)
            .replace("  - name: all\n    match: { path_prefix: / }\n    cluster: app\n", ""),
    );
    let addr = gw.listener_address("public").unwrap();
    let (status, headers, body) = get(addr, "/hello").await;
    assert_eq!((status, &body[..]), (StatusCode::CREATED, &b"hi"[..]));
    assert_eq!(headers.get("x-direct").unwrap(), "yes");
    let (status, _, _) = h1(addr, Request::post("/hello").body(body_of("")).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "method mismatch falls through to no route");
    let (status, _, _) =
        h1(addr, Request::get("/api/x").header("x-block", "1").body(body_of("")).unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "first match wins");
    let (status, _, _) =
        h1(addr, Request::post("/api/echo").body(body_of(vec![0u8; 2000])).unwrap()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "declared length over the limit");
    // Without a Content-Length (chunked), the limit applies while the body streams.
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    tokio::spawn(async move {
        for _ in 0..4 {
            let _ = tx.send(bytes::Bytes::from(vec![1u8; 600])).await;
        }
    });
    let (status, _, _) =
        h1(addr, Request::post("/api/slow").body(ChannelBody(rx).boxed()).unwrap()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "streamed body over the limit");
    let (status, _, _) = h1(
        addr,
        Request::get("/api/x").header("x-big", "a".repeat(20_000)).body(body_of("")).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

fn body_of(b: impl Into<bytes::Bytes>) -> TestBody {
    body(b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_listener_and_http2_upstream_preserve_trailers() {
    let (b, _) = backend("b").await;
    let yaml = format!(
        r#"
workers: 1
listeners:
  - {{ name: public, address: "127.0.0.1:0", protocol: h2c }}
  - {{ name: plain, address: "127.0.0.1:0" }}
clusters:
  - {{ name: grpc, protocol: http2, endpoints: [{{ address: "{b}" }}], timeouts: {{ request: 5s }} }}
  - {{ name: plain, endpoints: [{{ address: "{b}" }}], timeouts: {{ request: 5s }} }}
routes:
  - {{ name: grpc, match: {{ path: /grpc }}, cluster: grpc }}
  - {{ name: rest, cluster: plain, timeout: 5s }}
"#
    );
    let gw = gateway(&yaml);
    let addr = gw.listener_address("public").unwrap();
    // Several listeners at once: the HTTP/1.1 one serves the same routes.
    let (status, _, plain) = get(gw.listener_address("plain").unwrap(), "/").await;
    assert_eq!((status, &plain[..]), (StatusCode::OK, &b"b"[..]));
    let mut sender = h2c_sender(addr).await;
    // h2 downstream -> HTTP/1.1 upstream.
    let req = Request::get(format!("http://{addr}/")).body(body("")).unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "b");
    // h2 end to end with trailers, as gRPC needs.
    let req = Request::post(format!("http://{addr}/grpc"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body("\0\0\0\0\x05hello"))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers arrive");
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
    assert_eq!(collected.to_bytes(), &b"\0\0\0\0\x05hello"[..]);
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrade_is_passed_through() {
    let (b, _) = backend("b").await;
    let gw = gateway(&one_cluster(b, "", ""));
    let addr = gw.listener_address("public").unwrap();
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    s.write_all(b"ping over the tunnel").await.unwrap();
    let mut echoed = vec![0u8; 20];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echoed)).await.unwrap().unwrap();
    assert_eq!(&echoed, b"ping over the tunnel");
    drop(s);
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_stream_through_both_ways() {
    let (b, _) = backend("b").await;
    let gw = gateway(&one_cluster(b, "", "    limits: { max_body_bytes: 100000000 }"));
    let addr = gw.listener_address("public").unwrap();
    const SIZE: usize = 50 * 1024 * 1024;
    // A streamed request body (chunks from a channel), echoed back by the backend.
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(4);
    tokio::spawn(async move {
        let chunk = bytes::Bytes::from(vec![7u8; 1024 * 1024]);
        for _ in 0..SIZE / chunk.len() {
            if tx.send(chunk.clone()).await.is_err() {
                return;
            }
        }
    });
    let req = Request::post("/echo").body(ChannelBody(rx).boxed()).unwrap();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut total = 0usize;
    while let Some(frame) =
        tokio::time::timeout(Duration::from_secs(30), body.frame()).await.unwrap()
    {
        if let Ok(data) = frame.unwrap().into_data() {
            assert!(data.iter().all(|b| *b == 7));
            total += data.len();
        }
    }
    assert_eq!(total, SIZE);
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

/// A request body fed by a channel: streamed, never whole in memory.
struct ChannelBody(tokio::sync::mpsc::Receiver<bytes::Bytes>);

impl http_body::Body for ChannelBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|c| c.map(|b| Ok(http_body::Frame::data(b))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_but_a_busy_one_is_not() {
    let (b, _) = backend("b").await;
    let yaml = format!(
        r#"
workers: 1
listeners: [{{ name: public, address: "127.0.0.1:0", protocol: h2c, timeouts: {{ idle: 300ms }} }}]
clusters: [{{ name: app, endpoints: [{{ address: "{b}" }}], timeouts: {{ request: 5s }} }}]
routes: [{{ name: all, cluster: app }}]
"#
    );
    let gw = gateway(&yaml);
    let addr = gw.listener_address("public").unwrap();
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    // A 600 ms request outlives the 300 ms idle timeout: busy connections stay open.
    let resp = sender
        .send_request(Request::get(format!("http://{addr}/slow")).body(body("")).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.into_body().collect().await.unwrap().to_bytes().starts_with(b"slow done"));
    // Then nothing: the gateway closes the connection.
    tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .expect("closed after the idle timeout")
        .unwrap()
        .unwrap();
    assert!(sender.is_closed());
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_deadlines_are_honoured_and_the_rest_passed_on() {
    let (b, state) = backend("b").await;
    let gw = gateway(&one_cluster(b, "", ""));
    let addr = gw.listener_address("public").unwrap();

    // The remaining budget travels upstream in the caller's header.
    let req = Request::get("/api/headers").header("grpc-timeout", "300m").body(body("")).unwrap();
    let (status, _, seen) = h1(addr, req).await;
    assert_eq!(status, StatusCode::OK);
    let seen = String::from_utf8_lossy(&seen).to_string();
    let value = seen
        .lines()
        .find_map(|l| l.strip_prefix("grpc-timeout: "))
        .expect("grpc-timeout passed on");
    let passed = spillway_core::deadline::parse_grpc_timeout(value.as_bytes()).unwrap();
    assert!(
        passed <= Duration::from_millis(300) && passed > Duration::from_millis(200),
        "{passed:?}"
    );

    // A budget shorter than the upstream's answer: 504 when it runs out, not after 5 s.
    let started = std::time::Instant::now();
    let req =
        Request::get("/api/slow").header("x-request-timeout", "200ms").body(body("")).unwrap();
    assert_eq!(h1(addr, req).await.0, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_millis(550), "{:?}", started.elapsed());

    // No budget left: fail fast without calling upstream.
    let hits = state.hits.load(std::sync::atomic::Ordering::SeqCst);
    let req = Request::get("/api/").header("x-request-timeout", "0").body(body("")).unwrap();
    let (status, _, reason) = h1(addr, req).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    assert!(String::from_utf8_lossy(&reason).contains("deadline"), "{reason:?}");
    assert_eq!(state.hits.load(std::sync::atomic::Ordering::SeqCst), hits);
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

/// A request without a host (HTTP/1.0) to an HTTP/2 cluster takes the endpoint's address as
/// `:authority` and keeps its path, on a plain route and on one that retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_host_reaches_an_http2_upstream_with_its_path() {
    let (b, _) = backend("b").await;
    let yaml = format!(
        r#"
workers: 1
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
clusters:
  - {{ name: h2, protocol: http2, endpoints: [{{ address: "{b}" }}], timeouts: {{ request: 5s }} }}
routes:
  - name: retried
    match: {{ headers: [{{ name: x-retried, present: true }}] }}
    cluster: h2
    strategy: failover
  - {{ name: plain, cluster: h2 }}
"#
    );
    let gw = gateway(&yaml);
    let addr = gw.listener_address("public").unwrap();
    for (path, route) in [("/headers", ""), ("/headers?x=1", "x-retried: 1\r\n")] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.0\r\n{route}\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"),
            "{answer}"
        );
        assert!(answer.contains(&format!("path: http://{b}{path}\n")), "{answer}");
    }
}
