//! Test harness: real backends and a real gateway on loopback ports, and small HTTP clients.

#![allow(dead_code, clippy::unwrap_used)]

pub mod raw;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use spillway_gateway::{Config, Gateway, RunOptions};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

pub type TestBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A loopback address that refuses connections for as long as this value lives.
///
/// Its socket is bound but never listens, so a connect gets a reset at once; and it is bound
/// without `SO_REUSEADDR`, so no other socket can take the port meanwhile. (A port that is
/// bound and dropped is free again: the next `bind("127.0.0.1:0")` in the process, such as the
/// gateway's own listener, may be handed it, and then "refused" requests reach a live server.)
pub struct RefusingAddress {
    pub address: SocketAddr,
    _reserved: socket2::Socket,
}

pub fn refusing_address() -> RefusingAddress {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_reuse_address(false).unwrap();
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let address = socket.local_addr().unwrap().as_socket().unwrap();
    RefusingAddress { address, _reserved: socket }
}

/// A backend's switches, shared with the test.
#[derive(Default)]
pub struct BackendState {
    pub name: String,
    pub healthy: AtomicBool,
    /// When non-zero, every request to `/` answers with this status.
    pub status: AtomicU16,
    pub hits: AtomicU64,
    /// `/hold` requests wait here until the test releases them ([`Release::release`]).
    pub held: Release,
    /// The `x-tag` of every `/hold` request, in arrival order (requests without one: `-`).
    pub arrivals: std::sync::Mutex<Vec<String>>,
}

/// A gate `/hold` requests wait at: each released permit lets one of them answer.
pub struct Release(tokio::sync::Semaphore);

impl Default for Release {
    fn default() -> Release {
        Release(tokio::sync::Semaphore::new(0))
    }
}

impl Release {
    /// Lets `n` held requests (present or future) answer.
    pub fn release(&self, n: usize) {
        self.0.add_permits(n);
    }

    /// Lets every held request, and all later ones, answer at once.
    pub fn open(&self) {
        self.0.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    }
}

impl BackendState {
    /// Requests that reached the counting paths (`/`, `/hold`, `/sleep`, ...).
    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// `x-tag`s of the `/hold` requests that arrived so far.
    pub fn arrived(&self) -> Vec<String> {
        self.arrivals.lock().unwrap().clone()
    }
}

/// The request's headers as `name: value` lines (after a `path:` line), what `/headers` and
/// `/hold` answer.
fn header_lines<B>(req: &Request<B>) -> String {
    let mut text = String::new();
    text.push_str(&format!("path: {}\n", req.uri()));
    for (k, v) in req.headers() {
        text.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
    }
    text
}

/// Data then trailers (what a gRPC server sends).
pub struct WithTrailers {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Body for WithTrailers {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|e: Infallible| match e {}).boxed()
}

async fn backend_handle(
    state: Arc<BackendState>,
    mut req: Request<Incoming>,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_string();
    let resp = match path.as_str() {
        "/healthz" => {
            let status = if state.healthy.load(Ordering::SeqCst) { 200 } else { 503 };
            Response::builder().status(status).body(full("")).unwrap()
        }
        "/headers" => {
            let text = header_lines(&req);
            Response::builder()
                .header("connection", "x-upstream-secret")
                .header("x-upstream-secret", "1")
                .header("keep-alive", "timeout=5")
                .body(full(text))
                .unwrap()
        }
        "/hold" => {
            // Counts, records its `x-tag`, then waits until the test releases it; answers
            // with the request's headers (like `/headers`).
            state.hits.fetch_add(1, Ordering::SeqCst);
            let tag = req.headers().get("x-tag").and_then(|v| v.to_str().ok()).unwrap_or("-");
            state.arrivals.lock().unwrap().push(tag.to_string());
            state.held.0.acquire().await.unwrap().forget();
            Response::new(full(header_lines(&req)))
        }
        "/sleep" => {
            // Counts, then sleeps `?ms=N` milliseconds (default 100).
            state.hits.fetch_add(1, Ordering::SeqCst);
            let ms = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(100);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(full(state.name.clone()))
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(600)).await;
            Response::new(full(format!("slow done by {}", state.name)))
        }
        "/echo" => {
            // Streams the request body straight back.
            let body = req
                .into_body()
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                .boxed();
            Response::new(body)
        }
        "/grpc" => {
            let data = req.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", "0".parse().unwrap());
            trailers.insert("grpc-message", "ok".parse().unwrap());
            Response::builder()
                .header("content-type", "application/grpc")
                .body(WithTrailers { data: Some(data), trailers: Some(trailers) }.boxed())
                .unwrap()
        }
        "/ws" => {
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    let mut io = TokioIo::new(upgraded);
                    let (mut r, mut w) = tokio::io::split(&mut io);
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .body(full(""))
                .unwrap()
        }
        _ => {
            state.hits.fetch_add(1, Ordering::SeqCst);
            let status = state.status.load(Ordering::SeqCst);
            Response::builder()
                .status(if status == 0 { 200 } else { status })
                .body(full(state.name.clone()))
                .unwrap()
        }
    };
    Ok(resp)
}

/// Starts a backend (HTTP/1.1 and h2c) named `name`.
pub async fn backend(name: &str) -> (SocketAddr, Arc<BackendState>) {
    let state = Arc::new(BackendState {
        name: name.to_string(),
        healthy: AtomicBool::new(true),
        ..Default::default()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let st = state.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let st = st.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| backend_handle(st.clone(), req));
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, state)
}

/// Polls `cond` every 10 ms until it holds, for at most `within` (then panics with `what`).
pub async fn eventually(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Parses config text (relative paths against the temp dir).
pub fn config(yaml: &str) -> Config {
    Config::parse(yaml, "test.yaml", &std::env::temp_dir()).unwrap_or_else(|e| panic!("{e}"))
}

/// Starts a gateway on `yaml`.
pub fn gateway(yaml: &str) -> Gateway {
    Gateway::start(config(yaml), None, RunOptions::default()).unwrap()
}

/// Starts a gateway from a file (for reload tests).
pub fn gateway_from_file(path: &Path) -> Gateway {
    let config = Config::load(path).unwrap_or_else(|e| panic!("{e}"));
    Gateway::start(config, Some(path.to_path_buf()), RunOptions::default()).unwrap()
}

/// A unique temp file path.
pub fn temp_path(name: &str) -> std::path::PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "spillway-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ))
}

/// One HTTP/1.1 request on a fresh connection; returns status, headers and body.
pub async fn h1(addr: SocketAddr, req: Request<TestBody>) -> (StatusCode, HeaderMap, Bytes) {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .unwrap()
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

/// A fresh HTTP/2 (prior knowledge, h2c) client connection to `addr`, driven in the background.
pub async fn h2c_sender(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<TestBody> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// One HTTP/2 (prior knowledge, h2c) request on a fresh connection; `req` carries an origin-form
/// path, the authority is `addr`. Returns status, headers and body.
pub async fn h2c(addr: SocketAddr, req: Request<TestBody>) -> (StatusCode, HeaderMap, Bytes) {
    let mut sender = h2c_sender(addr).await;
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    parts.uri = format!("http://{addr}{path}").parse().unwrap();
    parts.headers.remove("host");
    let resp = tokio::time::timeout(
        Duration::from_secs(10),
        sender.send_request(Request::from_parts(parts, body)),
    )
    .await
    .unwrap()
    .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

/// GET `path` with HTTP/1.1.
pub async fn get(addr: SocketAddr, path: &str) -> (StatusCode, HeaderMap, Bytes) {
    let req = Request::get(path).header("host", "test.local").body(full("")).unwrap();
    h1(addr, req).await
}

/// A body from bytes.
pub fn body(b: impl Into<Bytes>) -> TestBody {
    full(b)
}

/// Runs a blocking closure off the async runtime (gateway shutdown waits on threads).
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Checks a metrics page with `promtool check metrics` (Debian's `prometheus` package, which
/// `scripts/test` installs). Without promtool the check is skipped locally but fails under CI
/// (`CI` set), so a missing install step cannot hide a format error.
pub fn promtool_accepts(metrics: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("promtool not found ({e}): metrics format not checked");
            return;
        }
        Err(e) => panic!("promtool is required under CI: {e}"),
    };
    child.stdin.take().unwrap().write_all(metrics.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool: {text}");
}

/// A test certificate authority and the certificates it signs (rcgen), for TLS tests.
pub struct Pki {
    pub ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        Pki { ca: rcgen::CertifiedIssuer::self_signed(params, key).unwrap() }
    }

    /// A certificate for `sans` (DNS names or IP addresses) with common name `cn`, and its key.
    pub fn issue(&self, cn: &str, sans: &[&str]) -> (rcgen::Certificate, rcgen::KeyPair) {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        (params.signed_by(&key, &self.ca).unwrap(), key)
    }

    /// The CA certificate written to a temp file; its path.
    pub fn ca_file(&self) -> String {
        write_temp("ca.pem", &self.ca.pem())
    }
}

/// `text` written to a fresh temp file named after `name`; its path.
pub fn write_temp(name: &str, text: &str) -> String {
    let path = temp_path(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// What a raw HTTP/2 client sends first: the preface, an empty SETTINGS, and the HEADERS of
/// stream 1 (`method`, `:scheme` http, `path`, `:authority`, then `fields`), ending the stream
/// when `end_stream`.
pub fn h2_opening(
    method: &str,
    path: &str,
    authority: &str,
    fields: &[(&str, &str)],
    end_stream: bool,
) -> Vec<u8> {
    use spillway_h2::frame::Frame;
    let mut out = spillway_h2::PREFACE.to_vec();
    Frame::Settings { ack: false, params: &[] }.encode(&mut out);
    let mut block = Vec::new();
    let mut encoder = spillway_h2::hpack::Encoder::new(4096);
    let pseudo =
        [(":method", method), (":scheme", "http"), (":path", path), (":authority", authority)];
    for (n, v) in pseudo.iter().chain(fields) {
        encoder.encode_field(n.as_bytes(), v.as_bytes(), &mut block);
    }
    Frame::Headers {
        stream: 1,
        end_stream,
        end_headers: true,
        priority: None,
        block: &block,
        padding: None,
    }
    .encode(&mut out);
    out
}
