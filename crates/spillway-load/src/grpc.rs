//! gRPC over h2c for proxy benchmarks (issue 15): an echo server to put behind a proxy, and a
//! streaming load client that keeps bidirectional calls open through it and counts messages.
//!
//! The echo server answers every call — unary or streaming, whatever the method — by sending
//! back each whole length-prefixed message as soon as it has arrived, then, when the client
//! ends its stream, the trailers `grpc-status: 0` (or 13 when the request ended inside a
//! message). It never decodes protobuf: it is a fast, fixed-cost upstream, so that what a
//! benchmark measures is the proxy in front. `h2load` drives unary calls (a POST whose body is
//! one message); it cannot keep a stream open, so [`run_stream_load`] does: `connections` ×
//! `streams` bidirectional calls, each one message in flight at a time (send, wait for its
//! echo, send the next), for a fixed time, then every stream ends and must receive
//! `grpc-status: 0`. It reports messages per second and the round-trip latency of a message.

mod echo;
mod hyper_echo;

use crate::cli::CliError;
use crate::histogram::{LatencyHistogram, LatencySummary};
use bytes::{Buf, Bytes, BytesMut};
use http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::Serialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Bytes before each gRPC message: a compressed flag and a big-endian length.
pub const PREFIX_LEN: usize = 5;

/// Errors of the echo server and the stream load.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// The listening address is not on loopback and remote listening was not allowed.
    #[error("{0} is not a loopback address: pass --allow-remote to listen on it")]
    NotLoopback(SocketAddr),
    /// The listening socket could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
    /// The target refused or timed out the TCP connection.
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, std::io::Error),
    /// The HTTP/2 handshake or a stream failed (e.g. a reset).
    #[error("HTTP/2 with {0}: {1}")]
    Http(SocketAddr, hyper::Error),
    /// A call was answered with a status other than 200.
    #[error("the call was answered with HTTP status {0}")]
    HttpStatus(StatusCode),
    /// A call ended with a gRPC status other than 0 (or without one).
    #[error("the call ended with grpc-status {status:?} ({message:?})")]
    GrpcStatus {
        /// The `grpc-status` trailer, if any.
        status: Option<String>,
        /// The `grpc-message` trailer, if any.
        message: Option<String>,
    },
    /// The response ended before the echo of a message.
    #[error("the response ended before the echo of a message arrived")]
    EndedEarly,
    /// A message came back with other bytes than were sent.
    #[error("a message came back changed ({0} bytes instead of {1})")]
    Mismatch(usize, usize),
    /// Zero connections or zero streams asked for.
    #[error("the load must have at least one connection and one stream")]
    NoStreams,
}

/// The length of the longest prefix of `buf` made of whole gRPC messages, and their number.
pub fn whole_messages(buf: &[u8]) -> (usize, u64) {
    let (mut at, mut count) = (0usize, 0u64);
    while buf.len() - at >= PREFIX_LEN {
        let len = u32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]);
        let end = at + PREFIX_LEN + len as usize;
        if end > buf.len() {
            break;
        }
        at = end;
        count += 1;
    }
    (at, count)
}

/// One uncompressed gRPC message holding a protobuf message whose field 1 is a string of
/// `size` bytes (a typical small request), prefix included.
pub fn message(size: usize) -> Bytes {
    let mut proto = vec![0x0a];
    let mut len = size;
    while len >= 0x80 {
        proto.push((len as u8 & 0x7f) | 0x80);
        len >>= 7;
    }
    proto.push(len as u8);
    proto.resize(proto.len() + size, b'x');
    let mut framed = Vec::with_capacity(PREFIX_LEN + proto.len());
    framed.push(0);
    framed.extend_from_slice(&(proto.len() as u32).to_be_bytes());
    framed.extend_from_slice(&proto);
    Bytes::from(framed)
}

/// Counters of the echo server.
#[derive(Debug, Default)]
struct EchoCounters {
    calls: AtomicU64,
    messages: AtomicU64,
    connections: AtomicU64,
}

impl EchoCounters {
    /// The whole messages `data` completes after `partial` (the start of a message not yet
    /// whole), counted, to echo — without a copy when `partial` is empty and `data` is nothing
    /// but whole messages; what is left of a message stays in `partial`.
    fn take_whole(&self, partial: &mut BytesMut, data: Bytes) -> Option<Bytes> {
        if partial.is_empty() {
            let (whole, count) = whole_messages(&data);
            if whole == data.len() {
                self.messages.fetch_add(count, Ordering::Relaxed);
                return (whole > 0).then_some(data);
            }
        }
        partial.extend_from_slice(&data);
        let (whole, count) = whole_messages(partial);
        self.messages.fetch_add(count, Ordering::Relaxed);
        (whole > 0).then(|| partial.split_to(whole).freeze())
    }
}

/// What the echo server served, printed as JSON when it stops.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct EchoStats {
    /// TCP connections accepted.
    pub connections: u64,
    /// Calls (HTTP/2 streams) answered.
    pub calls: u64,
    /// Whole messages echoed.
    pub messages: u64,
}

/// Streams one echo connection may carry at once: well above any benchmark's, so that the
/// proxies' own multiplexing, not the upstream's limit, decides how many connections they open.
const MAX_CONCURRENT_STREAMS: u32 = 1024;

/// Which HTTP/2 server the echo server runs: both answer alike, at different costs per call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EchoServerKind {
    /// `spillway_h2`'s codec on one task per connection: about a microsecond of CPU per unary
    /// call, so that a benchmark through a proxy measures the proxy.
    #[default]
    Lean,
    /// hyper's HTTP/2 server (what tonic runs on): a task per stream, several times the lean
    /// one's CPU per call — an upstream of a real gRPC service's weight.
    Hyper,
}

/// A running echo server.
pub struct EchoServer {
    addr: SocketAddr,
    counters: Arc<EchoCounters>,
    stop: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    /// Binds `listen` (loopback only unless `allow_remote`) and serves h2c gRPC echo on it
    /// with the `kind` of server.
    pub async fn start(
        listen: SocketAddr,
        allow_remote: bool,
        kind: EchoServerKind,
    ) -> Result<EchoServer, GrpcError> {
        if !allow_remote && !listen.ip().is_loopback() {
            return Err(GrpcError::NotLoopback(listen));
        }
        let listener = TcpListener::bind(listen).await.map_err(|e| GrpcError::Listen(listen, e))?;
        let addr = listener.local_addr().map_err(|e| GrpcError::Listen(listen, e))?;
        let counters = Arc::new(EchoCounters::default());
        let (stop, stopped) = watch::channel(false);
        let accept = tokio::spawn(accept_loop(listener, counters.clone(), stopped, kind));
        Ok(EchoServer { addr, counters, stop, accept })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What was served so far.
    pub fn stats(&self) -> EchoStats {
        EchoStats {
            connections: self.counters.connections.load(Ordering::Relaxed),
            calls: self.counters.calls.load(Ordering::Relaxed),
            messages: self.counters.messages.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting and closes every connection (calls in flight are cut); the totals.
    pub async fn stop(self) -> EchoStats {
        let _ = self.stop.send(true);
        let stats = self.stats();
        let _ = self.accept.await;
        // Messages echoed while the connections closed count too.
        EchoStats { messages: self.counters.messages.load(Ordering::Relaxed), ..stats }
    }
}

async fn accept_loop(
    listener: TcpListener,
    counters: Arc<EchoCounters>,
    mut stopped: watch::Receiver<bool>,
    kind: EchoServerKind,
) {
    let mut conns = JoinSet::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of descriptors and the like: keep serving the open connections.
                Err(_) => continue,
            },
            _ = stopped.wait_for(|s| *s) => break,
        };
        let _ = stream.set_nodelay(true);
        counters.connections.fetch_add(1, Ordering::Relaxed);
        match kind {
            EchoServerKind::Lean => conns.spawn(echo::serve(stream, counters.clone())),
            EchoServerKind::Hyper => conns.spawn(hyper_echo::serve(stream, counters.clone())),
        };
        while conns.try_join_next().is_some() {}
    }
    conns.shutdown().await;
}

/// Runs the echo server (of `kind`) on `threads` runtime threads until `duration` has passed
/// or SIGINT/SIGTERM; prints `listening on ADDR` first and the [`EchoStats`] as JSON last.
pub fn serve_echo(
    listen: SocketAddr,
    allow_remote: bool,
    kind: EchoServerKind,
    duration: Option<Duration>,
    threads: NonZeroUsize,
) -> Result<EchoStats, CliError> {
    let runtime = if threads.get() == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.get())
            .enable_all()
            .build()
    }
    .map_err(CliError::msg)?;
    runtime.block_on(async move {
        let server = EchoServer::start(listen, allow_remote, kind).await.map_err(CliError::msg)?;
        println!("listening on {}", server.addr());
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
        let until = async {
            match duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = until => {}
            _ = crate::backend::shutdown_signal() => {}
        }
        let stats = server.stop().await;
        println!("{}", serde_json::to_string(&stats).map_err(CliError::msg)?);
        Ok(stats)
    })
}

/// The streaming load: how many calls, through what, for how long.
#[derive(Debug, Clone)]
pub struct StreamLoadConfig {
    /// The proxy (or server) speaking h2c.
    pub target: SocketAddr,
    /// The `:path` of the calls, e.g. `/bench.Echo/Chat`.
    pub path: String,
    /// HTTP/2 connections opened.
    pub connections: usize,
    /// Bidirectional calls kept open on each connection.
    pub streams: usize,
    /// How long messages are sent; then every call ends.
    pub duration: Duration,
    /// Size of the string field of each message (the message is a few bytes more).
    pub message_size: usize,
}

/// The outcome of a streaming load.
#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    /// Messages echoed (each one a round trip through the target).
    pub messages: u64,
    /// From the first connection to the end of the last call.
    pub seconds: f64,
    /// `messages` / `seconds`.
    pub messages_per_second: f64,
    /// Calls that ended with `grpc-status: 0` after all their messages came back.
    pub calls_ok: u64,
    /// Calls that failed.
    pub calls_failed: u64,
    /// The first failure's error, if any call failed.
    pub first_error: Option<String>,
    /// Round-trip latency of one message, milliseconds.
    pub latency: LatencySummary,
}

/// A request body fed by a channel: the messages of one call, as the client decides to send.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

/// Reads the next frame of `body`: `Some(data)` (possibly empty), or `None` at the trailers or
/// the end, after checking the status they carry.
async fn next_data(target: SocketAddr, body: &mut Incoming) -> Result<Option<Bytes>, GrpcError> {
    match body.frame().await {
        Some(Ok(frame)) => match frame.into_data() {
            Ok(data) => Ok(Some(data)),
            Err(frame) => {
                let trailers = frame.into_trailers().unwrap_or_default();
                let text =
                    |k: &str| trailers.get(k).and_then(|v| v.to_str().ok()).map(String::from);
                match text("grpc-status").as_deref() {
                    Some("0") => Ok(None),
                    status => Err(GrpcError::GrpcStatus {
                        status: status.map(String::from),
                        message: text("grpc-message"),
                    }),
                }
            }
        },
        Some(Err(e)) => Err(GrpcError::Http(target, e)),
        None => Err(GrpcError::GrpcStatus { status: None, message: None }),
    }
}

/// One bidirectional call: message, wait for its echo, next message, until `until`; then the
/// end of the client's stream and the server's `grpc-status: 0`.
async fn drive_call(
    config: Arc<StreamLoadConfig>,
    mut sender: hyper::client::conn::http2::SendRequest<ChannelBody>,
    until: Instant,
) -> (Result<u64, GrpcError>, LatencyHistogram) {
    let mut latencies = LatencyHistogram::new();
    let result = call_loop(&config, &mut sender, until, &mut latencies).await;
    (result, latencies)
}

async fn call_loop(
    config: &StreamLoadConfig,
    sender: &mut hyper::client::conn::http2::SendRequest<ChannelBody>,
    until: Instant,
    latencies: &mut LatencyHistogram,
) -> Result<u64, GrpcError> {
    let target = config.target;
    let message = message(config.message_size);
    let (tx, rx) = mpsc::channel(1);
    let req = Request::post(format!("http://{}{}", target, config.path))
        .header(header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .body(ChannelBody(rx))
        .map_err(|_| GrpcError::EndedEarly)?;
    sender.ready().await.map_err(|e| GrpcError::Http(target, e))?;
    let _ = tx.send(message.clone()).await;
    let mut sent_at = Instant::now();
    let resp = sender.send_request(req).await.map_err(|e| GrpcError::Http(target, e))?;
    if resp.status() != StatusCode::OK {
        return Err(GrpcError::HttpStatus(resp.status()));
    }
    let mut body = resp.into_body();
    let mut received = BytesMut::new();
    let mut echoed = 0u64;
    loop {
        while received.len() < message.len() {
            match next_data(target, &mut body).await? {
                Some(data) => received.extend_from_slice(&data),
                None => return Err(GrpcError::EndedEarly),
            }
        }
        let (whole, _) = whole_messages(&received);
        if whole != message.len() || received[..whole] != message[..] {
            return Err(GrpcError::Mismatch(whole, message.len()));
        }
        received.advance(whole);
        latencies.record(sent_at.elapsed());
        echoed += 1;
        if Instant::now() >= until {
            break;
        }
        if tx.send(message.clone()).await.is_err() {
            return Err(GrpcError::EndedEarly);
        }
        sent_at = Instant::now();
    }
    drop(tx);
    while let Some(data) = next_data(target, &mut body).await? {
        if !data.is_empty() {
            return Err(GrpcError::Mismatch(data.len(), 0));
        }
    }
    Ok(echoed)
}

/// Runs the streaming load on the current runtime.
pub async fn stream_load(config: StreamLoadConfig) -> Result<StreamReport, GrpcError> {
    if config.connections == 0 || config.streams == 0 {
        return Err(GrpcError::NoStreams);
    }
    let config = Arc::new(config);
    let target = config.target;
    let started = Instant::now();
    let until = started + config.duration;
    let mut calls = JoinSet::new();
    for _ in 0..config.connections {
        let tcp = tokio::net::TcpStream::connect(target)
            .await
            .map_err(|e| GrpcError::Connect(target, e))?;
        let _ = tcp.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| GrpcError::Http(target, e))?;
        tokio::spawn(conn);
        for _ in 0..config.streams {
            calls.spawn(drive_call(config.clone(), sender.clone(), until));
        }
    }
    let mut latencies = LatencyHistogram::new();
    let (mut messages, mut calls_ok, mut calls_failed, mut first_error) = (0, 0, 0, None);
    while let Some(joined) = calls.join_next().await {
        let (result, call_latencies) = match joined {
            Ok(done) => done,
            Err(e) => (
                Err(GrpcError::GrpcStatus { status: None, message: Some(e.to_string()) }),
                LatencyHistogram::new(),
            ),
        };
        latencies.merge(&call_latencies);
        match result {
            Ok(n) => {
                messages += n;
                calls_ok += 1;
            }
            Err(e) => {
                messages += call_latencies.len();
                calls_failed += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(StreamReport {
        messages,
        seconds,
        messages_per_second: messages as f64 / seconds.max(1e-9),
        calls_ok,
        calls_failed,
        first_error,
        latency: latencies.summary(),
    })
}

/// Runs [`stream_load`] on a single-threaded runtime (as `h2load -t1`), printing the report as
/// JSON; fails when any call failed.
pub fn run_stream_load(config: StreamLoadConfig) -> Result<StreamReport, CliError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CliError::msg)?;
    let report = runtime.block_on(stream_load(config)).map_err(CliError::msg)?;
    println!("{}", serde_json::to_string(&report).map_err(CliError::msg)?);
    match &report.first_error {
        Some(e) => Err(CliError(format!(
            "{} of {} calls failed; first: {e}",
            report.calls_failed,
            report.calls_failed + report.calls_ok
        ))),
        None => Ok(report),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_messages_stops_at_the_first_partial_one() {
        let one = message(3);
        assert_eq!(one.len(), PREFIX_LEN + 2 + 3);
        assert_eq!(&one[..PREFIX_LEN], &[0, 0, 0, 0, 5]);
        assert_eq!(&one[PREFIX_LEN..], b"\x0a\x03xxx");
        let mut buf = Vec::new();
        buf.extend_from_slice(&one);
        buf.extend_from_slice(&message(200));
        let two = buf.len();
        buf.extend_from_slice(&message(1)[..4]);
        assert_eq!(whole_messages(&buf), (two, 2));
        assert_eq!(whole_messages(&buf[..two - 1]), (one.len(), 1));
        assert_eq!(whole_messages(&[]), (0, 0));
        // A 200-byte string needs a two-byte varint length.
        assert_eq!(&message(200)[PREFIX_LEN..PREFIX_LEN + 3], &[0x0a, 0xc8, 0x01]);
    }

    const KINDS: [EchoServerKind; 2] = [EchoServerKind::Lean, EchoServerKind::Hyper];

    async fn start(kind: EchoServerKind) -> EchoServer {
        EchoServer::start("127.0.0.1:0".parse().unwrap(), false, kind).await.unwrap()
    }

    /// An h2c client of `server` whose receive windows (stream and connection) are `window`.
    async fn client(
        server: &EchoServer,
        window: u32,
    ) -> hyper::client::conn::http2::SendRequest<ChannelBody> {
        let tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(window)
            .initial_connection_window_size(window)
            .handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender
    }

    /// A call carrying `chunks` as its body.
    fn call(server: &EchoServer, chunks: Vec<Bytes>) -> Request<ChannelBody> {
        let (tx, rx) = mpsc::channel(chunks.len().max(1));
        for chunk in chunks {
            tx.try_send(chunk).unwrap();
        }
        Request::post(format!("http://{}/bench.Echo/Say", server.addr()))
            .header(header::CONTENT_TYPE, "application/grpc")
            .body(ChannelBody(rx))
            .unwrap()
    }

    #[tokio::test]
    async fn a_unary_call_gets_its_message_back_then_grpc_status_0() {
        for kind in KINDS {
            let server = start(kind).await;
            let mut sender = client(&server, 65_535).await;
            let msg = message(10);
            // The message split across two chunks: echoed once whole.
            let req = call(&server, vec![msg.slice(..7), msg.slice(7..)]);
            let resp = sender.send_request(req).await.unwrap();
            assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/grpc", "{kind:?}");
            let collected = resp.into_body().collect().await.unwrap();
            assert_eq!(collected.trailers().unwrap()["grpc-status"], "0", "{kind:?}");
            assert_eq!(collected.to_bytes(), msg, "{kind:?}");
            let stats = server.stop().await;
            assert_eq!(stats, EchoStats { connections: 1, calls: 1, messages: 1 }, "{kind:?}");
        }
    }

    #[tokio::test]
    async fn a_request_ending_inside_a_message_gets_grpc_status_13() {
        for kind in KINDS {
            let server = start(kind).await;
            let mut sender = client(&server, 65_535).await;
            let req = call(&server, vec![message(10).slice(..8)]);
            let collected =
                sender.send_request(req).await.unwrap().into_body().collect().await.unwrap();
            assert_eq!(collected.trailers().unwrap()["grpc-status"], "13", "{kind:?}");
            assert!(collected.to_bytes().is_empty(), "{kind:?}");
            server.stop().await;
        }
    }

    #[tokio::test]
    async fn echoes_larger_than_the_clients_window_wait_for_window_updates() {
        // 300 KiB of messages against 16 KiB windows: the echo must stop at the window and go
        // on as the client reads, and every byte must come back in order.
        for kind in KINDS {
            let server = start(kind).await;
            let mut sender = client(&server, 16 * 1024).await;
            let msgs: Vec<Bytes> = (0..300).map(|i| message(1000 + i % 7)).collect();
            let want: Vec<u8> = msgs.iter().flat_map(|m| m.iter().copied()).collect();
            let resp = sender.send_request(call(&server, msgs)).await.unwrap();
            let collected = resp.into_body().collect().await.unwrap();
            assert_eq!(collected.trailers().unwrap()["grpc-status"], "0", "{kind:?}");
            let got = collected.to_bytes();
            assert!(
                got == want,
                "{kind:?}: {} bytes came back of {}, or changed",
                got.len(),
                want.len()
            );
            let stats = server.stop().await;
            assert_eq!(stats, EchoStats { connections: 1, calls: 1, messages: 300 }, "{kind:?}");
        }
    }

    #[tokio::test]
    async fn a_reset_call_is_forgotten_and_the_connection_serves_on() {
        // A call cancelled mid-stream (RST_STREAM from the client) must not take the connection
        // or the other calls with it.
        for kind in KINDS {
            let server = start(kind).await;
            let mut sender = client(&server, 65_535).await;
            let (tx, rx) = mpsc::channel(1);
            tx.send(message(10)).await.unwrap();
            let req = Request::post(format!("http://{}/bench.Echo/Chat", server.addr()))
                .body(ChannelBody(rx))
                .unwrap();
            let mut open = sender.send_request(req).await.unwrap().into_body();
            assert_eq!(open.frame().await.unwrap().unwrap().into_data().unwrap(), message(10));
            drop(open);
            drop(tx);
            let req = call(&server, vec![message(5)]);
            let collected =
                sender.send_request(req).await.unwrap().into_body().collect().await.unwrap();
            assert_eq!(collected.trailers().unwrap()["grpc-status"], "0", "{kind:?}");
            assert_eq!(collected.to_bytes(), message(5), "{kind:?}");
            let stats = server.stop().await;
            assert_eq!((stats.connections, stats.calls), (1, 2), "{kind:?}");
        }
    }

    #[tokio::test]
    async fn the_stream_load_counts_every_echoed_message_and_ends_every_call_ok() {
        for kind in KINDS {
            let server = start(kind).await;
            let report = stream_load(StreamLoadConfig {
                target: server.addr(),
                path: "/bench.Echo/Chat".to_string(),
                connections: 2,
                streams: 3,
                duration: Duration::from_millis(200),
                message_size: 64,
            })
            .await
            .unwrap();
            assert_eq!((report.calls_ok, report.calls_failed), (6, 0), "{kind:?} {report:?}");
            assert!(report.messages >= 6, "{report:?}");
            let stats = server.stop().await;
            assert_eq!(stats, EchoStats { connections: 2, calls: 6, messages: report.messages });
        }
    }

    #[tokio::test]
    async fn a_target_that_is_not_a_grpc_echo_fails_the_calls() {
        // An HTTP/2 server answering 404: every call fails, and the report says why.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let svc = hyper::service::service_fn(|_req: Request<Incoming>| async {
                    let mut resp = http::Response::new(http_body_util::Empty::<Bytes>::new());
                    *resp.status_mut() = StatusCode::NOT_FOUND;
                    Ok::<_, Infallible>(resp)
                });
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc),
                );
            }
        });
        let report = stream_load(StreamLoadConfig {
            target: addr,
            path: "/x".to_string(),
            connections: 1,
            streams: 2,
            duration: Duration::from_millis(50),
            message_size: 8,
        })
        .await
        .unwrap();
        assert_eq!((report.calls_ok, report.calls_failed, report.messages), (0, 2, 0));
        assert!(report.first_error.unwrap().contains("404"));
    }
}
