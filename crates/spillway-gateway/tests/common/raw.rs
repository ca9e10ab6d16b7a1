//! Raw-socket HTTP/1.1 test helpers: a buffered byte reader, head and response parsing, a raw
//! client and a scripted raw backend, shared by `h1_wire.rs` and `h1_lifecycle.rs`.
//!
//! Why: both binaries pin exact bytes on the wire at both ends and need the same small HTTP/1.1
//! reader and writer; one copy keeps them from drifting apart.

#![allow(dead_code, clippy::unwrap_used)]

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bound on every single wait (a read, a write, a connect).
pub const WAIT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Byte-level reading
// ---------------------------------------------------------------------------------------------

/// A byte stream with a buffer of what was read but not consumed yet.
pub struct Wire<S> {
    pub io: S,
    pub buf: Vec<u8>,
    /// Bound on each read (`None`: wait forever, for a backend waiting for the next request).
    pub deadline: Option<Duration>,
    /// Largest single read.
    pub read_size: usize,
    /// Pause before each read (a slow reader).
    pub pause: Duration,
}

impl<S: AsyncRead + Unpin> Wire<S> {
    pub fn new(io: S, deadline: Option<Duration>) -> Wire<S> {
        Wire { io, buf: Vec::new(), deadline, read_size: 64 * 1024, pause: Duration::ZERO }
    }

    /// Reads more bytes into the buffer; `Ok(false)` at end of stream.
    pub async fn fill(&mut self) -> io::Result<bool> {
        if !self.pause.is_zero() {
            tokio::time::sleep(self.pause).await;
        }
        let mut chunk = vec![0u8; self.read_size];
        let n = match self.deadline {
            Some(d) => tokio::time::timeout(d, self.io.read(&mut chunk))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "read timed out"))??,
            None => self.io.read(&mut chunk).await?,
        };
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// Bytes up to and including `delim`; `None` at a clean end of stream (nothing buffered).
    pub async fn until(&mut self, delim: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let mut from = 0;
        loop {
            if let Some(i) = find(&self.buf[from..], delim) {
                let end = from + i + delim.len();
                return Ok(Some(self.buf.drain(..end).collect()));
            }
            from = self.buf.len().saturating_sub(delim.len());
            if !self.fill().await? {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof inside a message"));
            }
        }
    }

    /// Exactly `n` bytes.
    pub async fn exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await? {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "eof inside a body"));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// Everything until the peer closes.
    pub async fn until_eof(&mut self) -> io::Result<Vec<u8>> {
        while self.fill().await? {}
        Ok(std::mem::take(&mut self.buf))
    }

    /// A chunked body as it is on the wire (sizes, extensions, data, trailers).
    pub async fn chunked_raw(&mut self) -> io::Result<Vec<u8>> {
        let mut raw = Vec::new();
        loop {
            let line = self.line().await?;
            let size = chunk_size(&line);
            raw.extend_from_slice(&line);
            if size == 0 {
                loop {
                    let trailer = self.line().await?;
                    raw.extend_from_slice(&trailer);
                    if trailer == b"\r\n" {
                        return Ok(raw);
                    }
                }
            }
            raw.extend_from_slice(&self.exact(size + 2).await?);
        }
    }

    pub async fn line(&mut self) -> io::Result<Vec<u8>> {
        self.until(b"\r\n")
            .await?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "eof inside chunks"))
    }
}

pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The size of a chunk from its size line (`1a;ext=1\r\n`).
pub fn chunk_size(line: &[u8]) -> usize {
    let text = String::from_utf8_lossy(line);
    let hex = text.trim_end().split(';').next().unwrap_or("").trim();
    usize::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("bad chunk size line {text:?}"))
}

/// A chunked body taken apart.
pub struct Dechunked {
    pub data: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

pub fn dechunk(mut raw: &[u8]) -> Dechunked {
    let mut data = Vec::new();
    loop {
        let eol = find(raw, b"\r\n").expect("chunk size line");
        let size = chunk_size(&raw[..eol + 2]);
        raw = &raw[eol + 2..];
        if size == 0 {
            let head = Head::parse_fields(raw);
            return Dechunked { data, trailers: head };
        }
        data.extend_from_slice(&raw[..size]);
        assert_eq!(&raw[size..size + 2], b"\r\n", "chunk data ends with CRLF");
        raw = &raw[size + 2..];
    }
}

/// A request or response head: its first line and its fields (names lower-cased, in order).
#[derive(Debug, Clone)]
pub struct Head {
    pub start: String,
    pub fields: Vec<(String, String)>,
}

impl Head {
    pub fn parse(bytes: &[u8]) -> Head {
        let eol = find(bytes, b"\r\n").unwrap_or(bytes.len());
        let start = String::from_utf8_lossy(&bytes[..eol]).into_owned();
        let rest = bytes.get(eol + 2..).unwrap_or(&[]);
        Head { start, fields: Head::parse_fields(rest) }
    }

    pub fn parse_fields(bytes: &[u8]) -> Vec<(String, String)> {
        String::from_utf8_lossy(bytes)
            .split("\r\n")
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap_or_else(|| panic!("bad field line {l:?}"));
                (n.trim().to_ascii_lowercase(), v.trim().to_string())
            })
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.fields.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// Whether any `name` field lists `token` (comma-separated, case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    pub fn is_chunked(&self) -> bool {
        self.all("transfer-encoding").last().is_some_and(|v| {
            v.rsplit(',').next().unwrap_or("").trim().eq_ignore_ascii_case("chunked")
        })
    }

    pub fn content_length(&self) -> Option<usize> {
        self.get("content-length").map(|v| v.parse().unwrap_or_else(|_| panic!("bad length {v}")))
    }

    /// The status code of a response head.
    pub fn status(&self) -> u16 {
        let mut parts = self.start.split(' ');
        let version = parts.next().unwrap_or("");
        assert!(version.starts_with("HTTP/1."), "not a status line: {:?}", self.start);
        parts.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{:?}", self.start))
    }
}

/// A response as the client read it; `body` is the raw bytes after the head.
#[derive(Debug)]
pub struct Resp {
    pub head: Head,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn status(&self) -> u16 {
        self.head.status()
    }

    /// The body content: de-chunked when the response was chunked.
    pub fn data(&self) -> Vec<u8> {
        if self.head.is_chunked() {
            dechunk(&self.body).data
        } else {
            self.body.clone()
        }
    }

    /// The body content as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data()).into_owned()
    }
}

/// Reads one response; `None` when the connection closed before any byte of it.
pub async fn read_response<S: AsyncRead + Unpin>(
    w: &mut Wire<S>,
    to_head_request: bool,
) -> io::Result<Option<Resp>> {
    let Some(bytes) = w.until(b"\r\n\r\n").await? else { return Ok(None) };
    let head = Head::parse(&bytes);
    let status = head.status();
    let body = if to_head_request || status < 200 || status == 204 || status == 304 {
        Vec::new()
    } else if head.is_chunked() {
        w.chunked_raw().await?
    } else if let Some(len) = head.content_length() {
        w.exact(len).await?
    } else {
        w.until_eof().await?
    };
    Ok(Some(Resp { head, body }))
}

// ---------------------------------------------------------------------------------------------
// Raw client
// ---------------------------------------------------------------------------------------------

pub type Client = Wire<TcpStream>;

pub async fn connect(addr: SocketAddr) -> Client {
    let s = tokio::time::timeout(WAIT, TcpStream::connect(addr)).await.unwrap().unwrap();
    s.set_nodelay(true).unwrap();
    Wire::new(s, Some(WAIT))
}

impl Client {
    pub async fn send(&mut self, bytes: &[u8]) {
        tokio::time::timeout(WAIT, self.io.write_all(bytes)).await.unwrap().unwrap();
    }

    /// The next response, which must come.
    pub async fn response(&mut self) -> Resp {
        read_response(self, false).await.unwrap().expect("a response, not a closed connection")
    }

    pub async fn response_to_head(&mut self) -> Resp {
        read_response(self, true).await.unwrap().expect("a response, not a closed connection")
    }

    /// Sends `GET path` and returns the response.
    pub async fn get(&mut self, path: &str) -> Resp {
        self.send(get(path).as_bytes()).await;
        self.response().await
    }

    /// Asserts the gateway closed the connection (end of stream or reset) with no stray bytes.
    pub async fn expect_closed(&mut self) {
        let closed = loop {
            match self.fill().await {
                Ok(true) => continue,
                Ok(false) => break true,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => break false,
                Err(_) => break true,
            }
        };
        assert!(closed, "the connection should have been closed");
        assert!(self.buf.is_empty(), "stray bytes: {:?}", String::from_utf8_lossy(&self.buf));
    }

    /// This end's port (what the gateway sees as the peer's port).
    pub fn port(&self) -> u16 {
        self.io.local_addr().unwrap().port()
    }

    /// Waits (up to `within`) for the gateway to close the connection, with no stray bytes;
    /// `Some(when)` if it did.
    pub async fn closed_within(&mut self, within: Duration) -> Option<Instant> {
        let end = Instant::now() + within;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let mut chunk = [0u8; 4096];
            match tokio::time::timeout(left, self.io.read(&mut chunk)).await {
                Err(_) => return None,
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
        let at = Instant::now();
        assert!(self.buf.is_empty(), "stray bytes: {:?}", String::from_utf8_lossy(&self.buf));
        Some(at)
    }
}

pub fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: test.local\r\n\r\n")
}

pub fn post(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: test.local\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// A 200 response with a Content-Length body.
pub fn ok(body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r
}

// ---------------------------------------------------------------------------------------------
// Raw backend
// ---------------------------------------------------------------------------------------------

/// One request as the backend received it.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub head: Head,
    /// The body content (de-chunked when it came chunked).
    pub body: Vec<u8>,
    /// Every byte of the request as it arrived.
    pub raw: Vec<u8>,
}

impl RawRequest {
    pub fn method(&self) -> &str {
        self.head.start.split(' ').next().unwrap_or("")
    }

    pub fn target(&self) -> &str {
        self.head.start.split(' ').nth(1).unwrap_or("")
    }
}

/// What the backend does after writing a reply.
#[derive(Debug, Clone, Copy)]
pub enum AfterReply {
    KeepOpen,
    Close,
    CloseLater(Duration),
}

/// A scripted reply: wait `delay`, then `writes` in order with `pause` between them, then
/// `after` (keep the connection for the next request, or close it without reading more).
pub struct Reply {
    pub delay: Duration,
    pub writes: Vec<Vec<u8>>,
    pub pause: Duration,
    pub after: AfterReply,
}

pub fn reply(bytes: Vec<u8>) -> Reply {
    Reply {
        delay: Duration::ZERO,
        writes: vec![bytes],
        pause: Duration::ZERO,
        after: AfterReply::KeepOpen,
    }
}

pub type Script = Arc<dyn Fn(&RawRequest) -> Reply + Send + Sync>;

/// A backend speaking raw bytes: records what it got, answers what it is told to.
pub struct RawBackend {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<RawRequest>>>,
    pub accepted: Arc<AtomicUsize>,
}

impl RawBackend {
    pub fn requests(&self) -> Vec<RawRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// The request targets in the order they arrived.
    pub fn targets(&self) -> Vec<String> {
        self.requests.lock().unwrap().iter().map(|r| r.target().to_string()).collect()
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

pub async fn raw_backend(
    script: impl Fn(&RawRequest) -> Reply + Send + Sync + 'static,
) -> RawBackend {
    let script: Script = Arc::new(script);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (reqs, acc) = (requests.clone(), accepted.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            acc.fetch_add(1, Ordering::SeqCst);
            let _ = stream.set_nodelay(true);
            tokio::spawn(serve_raw(stream, script.clone(), reqs.clone()));
        }
    });
    RawBackend { addr, requests, accepted }
}

pub async fn serve_raw(stream: TcpStream, script: Script, requests: Arc<Mutex<Vec<RawRequest>>>) {
    let mut w = Wire::new(stream, None);
    loop {
        let Ok(Some(req)) = read_request(&mut w).await else { return };
        let reply = script(&req);
        requests.lock().unwrap().push(req);
        if !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        for (i, part) in reply.writes.iter().enumerate() {
            if i > 0 && !reply.pause.is_zero() {
                tokio::time::sleep(reply.pause).await;
            }
            if w.io.write_all(part).await.is_err() {
                return;
            }
        }
        match reply.after {
            AfterReply::KeepOpen => {}
            AfterReply::Close => return,
            AfterReply::CloseLater(d) => {
                tokio::time::sleep(d).await;
                return;
            }
        }
    }
}

pub async fn read_request<S: AsyncRead + Unpin>(w: &mut Wire<S>) -> io::Result<Option<RawRequest>> {
    let Some(mut raw) = w.until(b"\r\n\r\n").await? else { return Ok(None) };
    let head = Head::parse(&raw);
    let body = if head.is_chunked() {
        let chunks = w.chunked_raw().await?;
        raw.extend_from_slice(&chunks);
        dechunk(&chunks).data
    } else if let Some(len) = head.content_length() {
        let body = w.exact(len).await?;
        raw.extend_from_slice(&body);
        body
    } else {
        Vec::new()
    };
    Ok(Some(RawRequest { head, body, raw }))
}

/// Answers every request with 200 and `METHOD target` as the body.
pub fn echo_target(req: &RawRequest) -> Reply {
    reply(ok(format!("{} {}", req.method(), req.target()).as_bytes()))
}

// ---------------------------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------------------------

/// Config for a gateway with `workers` workers, a shutdown drain of `drain` (`"1s"`), `top`
/// lines at the top level and an HTTP/1.1 listener `public` (plus `listener_extra` lines,
/// indented four spaces) proxying everything to an HTTP/1.1 cluster `app` on `backend`.
pub fn h1_proxy_yaml(
    backend: SocketAddr,
    workers: usize,
    drain: &str,
    top: &str,
    listener_extra: &str,
) -> String {
    format!(
        r#"
workers: {workers}
shutdown: {{ drain: {drain} }}
{top}
listeners:
  - name: public
    address: 127.0.0.1:0
    protocol: http1
{listener_extra}
clusters:
  - name: app
    protocol: http1
    endpoints: [{{ address: "{backend}" }}]
    timeouts: {{ request: 5s }}
routes:
  - name: all
    match: {{ path_prefix: / }}
    cluster: app
"#
    )
}
