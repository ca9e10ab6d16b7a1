//! HTTP/1.1 over TLS on the lean path (`listen::h1::conn::serve_tls`, issue 15): a TLS
//! connection whose ALPN chose `http/1.1` (or none) is served by the lean HTTP/1.1 exchange,
//! as a plain one is. On real sockets with a rustls client and a scripted upstream: keep-alive
//! across requests, `x-forwarded-proto: https`, the upstream's field spelling kept (what tells
//! the lean path from hyper's, which lower-cases), a chunked body passed through, the hand-over
//! to hyper mid-connection (a body larger than the lean path buffers), the idle timeout, and
//! hyper still serving listeners that ask for client certificates.

#![allow(clippy::unwrap_used)]

mod common;

use common::raw::*;
use common::{blocking, gateway, write_temp, Pki};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::client::TlsStream;

struct Tls {
    gw: spillway_gateway::Gateway,
    addr: std::net::SocketAddr,
    roots: rustls::RootCertStore,
}

fn start(upstream: std::net::SocketAddr, tls_extra: &str) -> Tls {
    let pki = Pki::new("tls-h1 test CA");
    let (cert, key) = pki.issue("localhost", &["localhost"]);
    let cert = write_temp("cert.pem", &cert.pem());
    let key = write_temp("key.pem", &key.serialize_pem());
    let gw = gateway(&format!(
        r#"
workers: 1
listeners:
  - {{ name: tls, address: "127.0.0.1:0", timeouts: {{ idle: 500ms }}, tls: {{ cert: "{cert}", key: "{key}" {tls_extra} }} }}
clusters: [{{ name: app, endpoints: [{{ address: "{upstream}" }}], timeouts: {{ request: 5s }} }}]
routes: [{{ name: all, cluster: app }}]
"#
    ));
    let addr = gw.listener_address("tls").unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    Tls { gw, addr, roots }
}

impl Tls {
    async fn connect(&self) -> TlsStream<tokio::net::TcpStream> {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(self.roots.clone())
        .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap()
    }

    async fn stop(self) {
        let gw = self.gw;
        blocking(move || {
            gw.shutdown();
            gw.wait();
        })
        .await;
    }
}

/// Reads one response (head and a Content-Length or chunked body) from `io`.
async fn response(io: &mut TlsStream<tokio::net::TcpStream>) -> (String, Vec<u8>) {
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let head_end = find(&got, b"\r\n\r\n");
        if let Some(end) = head_end {
            let head = String::from_utf8_lossy(&got[..end]).into_owned();
            let body = &got[end + 4..];
            let fields = Head::parse(head.as_bytes());
            if let Some(len) = fields.content_length() {
                if body.len() >= len {
                    return (head, body[..len].to_vec());
                }
            } else if fields.is_chunked() && find(body, b"0\r\n\r\n").is_some() {
                return (head, dechunk(body).data);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(5), io.read(&mut chunk))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "closed mid-response: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
}

fn upstream_reply(req: &RawRequest) -> Reply {
    match req.target() {
        "/chunked" => reply(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Spelled: Like-This\r\n\r\n\
              3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n"
                .to_vec(),
        ),
        _ => {
            let body = format!("{} {} {}", req.method(), req.target(), req.body.len());
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Spelled: Like-This\r\n\r\n",
                body.len()
            )
            .into_bytes();
            r.extend_from_slice(body.as_bytes());
            reply(r)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_on_one_tls_connection_take_the_lean_path_with_https_forwarded() {
    let up = raw_backend(upstream_reply).await;
    let tls = start(up.addr, "");
    let mut io = tls.connect().await;
    for path in ["/one", "/two"] {
        io.write_all(format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let (head, body) = response(&mut io).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("X-Spelled: Like-This"), "the lean path keeps the spelling: {head}");
        assert_eq!(body, format!("GET {path} 0").as_bytes());
    }
    io.write_all(b"GET /chunked HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
    let (head, body) = response(&mut io).await;
    assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    assert_eq!(body, b"abcdef");
    assert_eq!(up.accepted(), 1, "one pooled upstream connection");
    let seen = up.requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].head.get("x-forwarded-proto"), Some("https"));
    assert_eq!(seen[0].head.get("x-forwarded-for"), Some("127.0.0.1"));
    tls.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_larger_than_the_lean_path_buffers_is_handed_to_hyper_on_the_same_connection() {
    let up = raw_backend(upstream_reply).await;
    let tls = start(up.addr, "");
    let mut io = tls.connect().await;
    io.write_all(b"GET /first HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
    let (_, body) = response(&mut io).await;
    assert_eq!(body, b"GET /first 0");
    let big = vec![b'x'; 200 * 1024];
    let head =
        format!("POST /big HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\r\n", big.len());
    io.write_all(head.as_bytes()).await.unwrap();
    io.write_all(&big).await.unwrap();
    let (head, body) = response(&mut io).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, format!("POST /big {}", big.len()).as_bytes());
    assert!(head.contains("x-spelled"), "hyper serves the rest of the connection: {head}");
    tls.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tls_connection_is_closed_after_the_idle_timeout() {
    let up = raw_backend(upstream_reply).await;
    let tls = start(up.addr, "");
    let mut io = tls.connect().await;
    io.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
    response(&mut io).await;
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), io.read_to_end(&mut rest)).await;
    assert!(read.expect("closed within the test's bound").is_ok() || rest.is_empty());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(400), "not before the idle timeout: {waited:?}");
    tls.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_asking_for_client_certificates_stays_on_hyper() {
    let up = raw_backend(upstream_reply).await;
    let pki = Pki::new("client CA");
    let ca = pki.ca_file();
    let tls = start(up.addr, &format!(", client_ca: \"{ca}\", client_auth: optional"));
    let mut io = tls.connect().await;
    io.write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n").await.unwrap();
    let (head, body) = response(&mut io).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, b"GET / 0");
    assert!(head.contains("x-spelled"), "hyper's path (it lower-cases): {head}");
    tls.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_past_the_read_buffer_are_all_answered() {
    // Ten requests of exactly 1 KiB in one write: one read buffer (4 KiB) takes four whole
    // ones, and the TLS layer still holds the rest once they are served. An idle connection
    // waits on the socket only when the TLS layer holds nothing; here it must read on, or the
    // client (which sent everything) would wait forever.
    let up = raw_backend(upstream_reply).await;
    let tls = start(up.addr, "");
    let mut io = tls.connect().await;
    let pad = "x".repeat(1024 - "GET /p0 HTTP/1.1\r\nhost: localhost\r\nx-pad: \r\n\r\n".len());
    let batch: String = (0..10)
        .map(|i| format!("GET /p{i} HTTP/1.1\r\nhost: localhost\r\nx-pad: {pad}\r\n\r\n"))
        .collect();
    io.write_all(batch.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    while !(0..10).all(|i| find(&got, format!("GET /p{i} 0").as_bytes()).is_some()) {
        let n = tokio::time::timeout(Duration::from_secs(5), io.read(&mut chunk))
            .await
            .expect("every answer in time")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&chunk[..n]);
    }
    tls.stop().await;
}
