//! The lean HTTP/1.1 connection: one task reads a request, proxies it over a pooled upstream
//! socket, and passes the response back, without hyper.
//!
//! Why: on this machine hyper's general path costs more CPU per request than nginx, most of it
//! spread over two tasks per exchange (server and client connection), `HeaderMap` building and
//! per-connection buffers held for life. Here one task drives both sockets, heads are parsed
//! in place and rewritten from spans, and an idle connection parks with no buffer and no
//! timer (see [`super::idle`]).
//!
//! What it takes: origin-form HTTP/1.1 requests without a body or with a `Content-Length` body
//! of at most [`LEAN_BODY_LIMIT`] bytes, to a route that answers directly or proxies to an
//! HTTP/1.1 cluster without recording, hedging, failback, mirroring, broadcast or stale
//! copies. Anything else is handed to hyper with the bytes read so far ([`Served::Handoff`]),
//! and the connection stays with hyper from then on.
//!
//! The request path mirrors [`crate::proxy`]: the same routing, policy hook, deadline
//! decisions, endpoint choice, outlier and balancer accounting, metrics and access log.

use super::buffer::{Buf, BUF_SIZE};
use super::chunked::{ChunkedScanner, Piece};
use super::h2_upstream::H2Target;
use super::head::{
    first, parse_request, parse_response, Field, FieldKind, HeadFields, RequestHead, RequestParse,
    ResponseFraming, ResponseHead, ResponseParse,
};
use super::idle::IdleEnd;
use super::preface;
use super::rewrite::{self, H2Head, RequestEdits};
use crate::config::{Balance, ListenerConfig, UpstreamProtocol};
use crate::policy::retry::{TryFailure, TryResult, ATTEMPT_HEADER};
use crate::proxy::access_log::{log_access, AccessEntry};
use crate::proxy::grpc::LocalError;
use crate::proxy::{errors, InFlight, Worker};
use crate::route::{self, Action, Route};
use crate::state::Snapshot;
use crate::upstream::cluster::Outcome;
use crate::upstream::pool::{connect_tcp, UpstreamError};
use http::Method;
use spillway_core::balance::hash_bytes;
use spillway_core::clock::duration_nanos;
use spillway_core::deadline::{format_grpc_timeout, format_request_timeout, IncomingTimeouts};
use spillway_core::retry::{is_idempotent_method, Attempts, RetryDecision};
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant as TimerInstant, Sleep};

/// Largest request body the lean path buffers and sends with the head; larger bodies stream
/// through hyper.
pub const LEAN_BODY_LIMIT: u64 = 64 * 1024;

/// How long a connection closed after an early response keeps reading (see `Conn::linger`).
const LINGER: Duration = Duration::from_millis(500);

/// How many bytes it reads and drops at most meanwhile.
const LINGER_BYTES: usize = 1 << 20;

/// Largest upstream response head accepted (502 beyond).
pub(crate) const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Responses up to this many body bytes already read go out in the same write as the head.
const COALESCE_BODY: usize = 16 * 1024;

/// How a lean connection ended.
#[derive(Debug)]
pub enum Served {
    /// Closed (by either side, a timeout, or shutdown).
    Closed,
    /// The connection needs hyper: the socket and the bytes already read from it.
    Handoff(TcpStream, Buf),
    /// Idle for [`super::dormant::DORMANT_AFTER`]: the socket, out of the runtime, to be held
    /// dormant until this idle deadline (worker clock, nanoseconds).
    Dormant(std::net::TcpStream, u64),
}

/// The client's address as text (for `X-Forwarded-For` and the access log), rendered once.
pub(crate) struct ClientAddr {
    text: [u8; 45],
    len: usize,
    addr: std::net::IpAddr,
}

impl ClientAddr {
    pub(crate) fn new(peer: std::net::IpAddr) -> ClientAddr {
        use std::io::Write;
        let mut text = [0u8; 45];
        let mut rest = &mut text[..];
        let _ = write!(rest, "{peer}");
        let len = 45 - rest.len();
        ClientAddr { text, len, addr: peer }
    }

    fn ip(&self) -> &[u8] {
        &self.text[..self.len]
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(self.ip()).unwrap_or("")
    }
}

/// Frees a sweep slot when its connection (or HTTP/2 exchange) ends, however it ends.
pub(crate) struct IdleSlot<'a> {
    worker: &'a Worker,
    pub(crate) index: usize,
}

impl<'a> IdleSlot<'a> {
    /// A fresh slot of `worker`'s sweep.
    pub(crate) fn register(worker: &'a Worker) -> IdleSlot<'a> {
        IdleSlot { worker, index: worker.lean.idle.register() }
    }
}

impl Drop for IdleSlot<'_> {
    fn drop(&mut self) {
        self.worker.lean.idle.release(self.index);
    }
}

/// Serves one plain HTTP/1.1 connection until it closes, needs hyper, or (when `dormant_after`
/// is given) has been idle that long.
pub async fn serve(
    worker: &Worker,
    listener: &ListenerConfig,
    mut stream: TcpStream,
    peer: SocketAddr,
    dormant_after: Option<Duration>,
) -> Served {
    let client = ClientAddr::new(peer.ip());
    let slot = IdleSlot::register(worker);
    let mut carry: Option<Buf> = None;
    loop {
        if carry.is_none() {
            let now = worker.shared.now().as_nanos();
            let idle_until = now.saturating_add(duration_nanos(listener.idle_timeout));
            let dormant_at =
                dormant_after.map_or(0, |d| now.saturating_add(duration_nanos(d)).max(1));
            match wait_for_bytes(worker, slot.index, &stream, idle_until, dormant_at).await {
                Ok(()) => {}
                Err(IdleEnd::Dormant) => {
                    return match stream.into_std() {
                        Ok(socket) => Served::Dormant(socket, idle_until),
                        Err(_) => Served::Closed,
                    };
                }
                Err(IdleEnd::TimedOut | IdleEnd::Closing) => return Served::Closed,
            }
        }
        let down = H1Client { stream: &mut stream, idle_timeout: listener.idle_timeout };
        let conn = Conn { worker, slot: slot.index, listener, client: &client, down };
        // Boxed: a request's state is large, and an idle connection should not carry it.
        match Box::pin(conn.next_request(carry.take())).await {
            Next::KeepAlive(rest) => carry = rest,
            Next::Close => break,
            Next::Handoff(buf) => return Served::Handoff(stream, buf),
        }
        if worker.lean.idle.closing() {
            break;
        }
    }
    let _ = stream.shutdown().await;
    Served::Closed
}

/// Serves one HTTP/1.1 connection over TLS (ALPN `http/1.1`, or none) until it closes; or
/// gives it back, with the bytes already read, when it needs hyper. Between requests the
/// connection waits parked on its sweep slot for the socket to be readable, holding no read
/// buffer (the TLS layer keeps state of its own, so there is no dormancy).
pub async fn serve_tls(
    worker: &Worker,
    listener: &ListenerConfig,
    mut stream: tokio_rustls::server::TlsStream<TcpStream>,
    peer: std::net::IpAddr,
) -> Result<(), (tokio_rustls::server::TlsStream<TcpStream>, Buf)> {
    let client = ClientAddr::new(peer);
    let slot = IdleSlot::register(worker);
    let mut carry: Option<Buf> = None;
    loop {
        if carry.is_none() {
            let now = worker.shared.now().as_nanos();
            let idle_until = now.saturating_add(duration_nanos(listener.idle_timeout));
            // Idle without a read buffer: while the TLS layer holds no plaintext (it asks for
            // more TLS bytes), the socket's readiness is what the next request waits on.
            if stream.get_ref().1.wants_read() {
                let ready = wait_for_bytes(worker, slot.index, stream.get_ref().0, idle_until, 0);
                if ready.await.is_err() {
                    break;
                }
            }
            let mut buf = worker.lean.take_buf();
            match read_parked(worker, slot.index, &mut stream, &mut buf, idle_until).await {
                Ok(n) if n > 0 => carry = Some(buf),
                // The client closed, a read failed, the idle timeout passed, or shutdown.
                _ => {
                    worker.lean.give_buf(buf);
                    break;
                }
            }
        }
        let down = H1Client { stream: &mut stream, idle_timeout: listener.idle_timeout };
        let conn = Conn { worker, slot: slot.index, listener, client: &client, down };
        match Box::pin(conn.next_request(carry.take())).await {
            Next::KeepAlive(rest) => carry = rest,
            Next::Close => break,
            Next::Handoff(buf) => return Err((stream, buf)),
        }
        if worker.lean.idle.closing() {
            break;
        }
    }
    let _ = tokio::time::timeout(LINGER, stream.shutdown()).await;
    Ok(())
}

/// Reads what the client sends next into `buf`, parked on the sweep slot until `deadline_ns`
/// (or shutdown).
async fn read_parked<R: tokio::io::AsyncRead + Unpin>(
    worker: &Worker,
    slot: usize,
    io: &mut R,
    buf: &mut Buf,
    deadline_ns: u64,
) -> Result<usize, IdleEnd> {
    let idle = &worker.lean.idle;
    let mut read = pin!(read_into(io, buf, BUF_SIZE));
    let result = poll_fn(|cx| match read.as_mut().poll(cx) {
        Poll::Ready(Ok(n)) => Poll::Ready(Ok(n)),
        Poll::Ready(Err(_)) => Poll::Ready(Ok(0)),
        Poll::Pending => match idle.park(slot, cx.waker(), deadline_ns, 0) {
            Some(end) => Poll::Ready(Err(end)),
            None => Poll::Pending,
        },
    })
    .await;
    idle.unpark(slot);
    result
}

/// Waits, parked, until the client sends something (or closes); or says why to stop.
async fn wait_for_bytes(
    worker: &Worker,
    slot: usize,
    stream: &TcpStream,
    deadline_ns: u64,
    dormant_ns: u64,
) -> Result<(), IdleEnd> {
    let idle = &worker.lean.idle;
    poll_fn(|cx| match stream.poll_read_ready(cx) {
        // An error is left for the read to report.
        Poll::Ready(_) => {
            idle.unpark(slot);
            Poll::Ready(Ok(()))
        }
        Poll::Pending => match idle.park(slot, cx.waker(), deadline_ns, dormant_ns) {
            Some(end) => Poll::Ready(Err(end)),
            None => Poll::Pending,
        },
    })
    .await
}

/// What to do after a request.
enum Next {
    /// Wait for the next request; bytes of it already read, if any.
    KeepAlive(Option<Buf>),
    /// Close the connection.
    Close,
    /// Hand the connection to hyper with these bytes.
    Handoff(Buf),
}

/// A deadline passed.
#[derive(Debug)]
pub(crate) struct Elapsed;

/// A deadline `after` from the moment it is first needed: most I/O completes at once, and a
/// clock read for a timer that is never armed is wasted work. Once fixed, it stays fixed, so
/// the steps of one exchange share it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Due {
    after: Duration,
    at: Option<TimerInstant>,
    at_ns: Option<u64>,
}

impl Due {
    pub(crate) fn after(after: Duration) -> Due {
        Due { after, at: None, at_ns: None }
    }

    /// `after` from `start` on the worker clock (the sweep's deadline needs no clock read; a
    /// runtime timer, for a short timeout, still counts from its arming).
    fn from(start: spillway_core::Instant, after: Duration) -> Due {
        Due { after, at: None, at_ns: Some(start.as_nanos().saturating_add(duration_nanos(after))) }
    }

    fn at(&mut self) -> TimerInstant {
        *self.at.get_or_insert_with(|| TimerInstant::now() + self.after)
    }

    /// The same deadline on the worker clock, for the sweep.
    fn at_ns(&mut self, worker: &Worker) -> u64 {
        *self.at_ns.get_or_insert_with(|| {
            worker.shared.now().as_nanos().saturating_add(duration_nanos(self.after))
        })
    }

    /// Whether the deadline has passed.
    fn passed(&mut self, worker: &Worker) -> bool {
        if self.after >= COARSE_TIMEOUT {
            self.at_ns(worker) <= worker.shared.now().as_nanos()
        } else {
            self.at() <= TimerInstant::now()
        }
    }
}

/// Timeouts at least this long are enforced by the worker's idle sweep (every 50 ms, so at
/// most 5 % late) instead of a runtime timer: arming a timer for every request's upstream
/// wait, only to cancel it when the answer comes, is measurable work per request.
const COARSE_TIMEOUT: Duration = Duration::from_secs(1);

/// How a request's waits are bounded: a runtime timer for short timeouts, the connection's
/// sweep slot for long ones.
pub(crate) struct Timer<'w> {
    pub(crate) sleep: Pin<Box<Sleep>>,
    pub(crate) worker: &'w Worker,
    pub(crate) slot: usize,
}

/// Runs `fut` until `due`, arming `timer` only if `fut` does not finish at once.
pub(crate) async fn timed<F: Future>(
    timer: &mut Timer<'_>,
    due: &mut Due,
    fut: F,
) -> Result<F::Output, Elapsed> {
    let mut fut = pin!(fut);
    let coarse = due.after >= COARSE_TIMEOUT;
    let mut armed = false;
    let idle = &timer.worker.lean.idle;
    let result = poll_fn(|cx| {
        if let Poll::Ready(v) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        if coarse {
            armed = true;
            return if idle.arm(timer.slot, cx.waker(), due.at_ns(timer.worker)) {
                Poll::Ready(Err(Elapsed))
            } else {
                Poll::Pending
            };
        }
        if !armed {
            timer.sleep.as_mut().reset(due.at());
            armed = true;
        }
        match timer.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await;
    if coarse && armed {
        idle.unpark(timer.slot);
    }
    result
}

/// Reads what is available into `buf`; 0 at EOF. A full buffer grows (doubling, up to `limit`
/// bytes filled), and so does one that a read just filled to the brim: buffers start small and
/// only the exchanges that move more bytes get larger ones.
async fn read_into<R: tokio::io::AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut Buf,
    limit: usize,
) -> std::io::Result<usize> {
    if buf.spare().is_empty() {
        let len = buf.len();
        if len >= limit {
            return Err(std::io::Error::other("buffer limit reached"));
        }
        buf.reserve_total((len * 2).clamp(len + 1, limit));
    }
    let room = buf.spare().len();
    // Through the runtime (not `try_read`): a read that leaves the socket drained clears its
    // readiness there, which is what lets an idle connection park without a spare syscall.
    let n = io.read(buf.spare()).await?;
    buf.advance(n);
    if n == room && buf.capacity() < limit.min(MAX_GROWN_BUF) {
        buf.reserve_total((buf.capacity() * 2).min(limit.min(MAX_GROWN_BUF)));
    }
    Ok(n)
}

/// Writes all of `bytes` within `due`: straight away when the socket takes them (the usual
/// case), through the runtime only when it would block.
async fn send(
    io: &mut TcpStream,
    mut bytes: &[u8],
    timer: &mut Timer<'_>,
    due: &mut Due,
) -> Result<(), ()> {
    while !bytes.is_empty() {
        match io.try_write(bytes) {
            Ok(0) => return Err(()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return match timed(timer, due, io.write_all(bytes)).await {
                    Ok(Ok(())) => Ok(()),
                    _ => Err(()),
                };
            }
            Err(_) => return Err(()),
        }
    }
    Ok(())
}

/// Largest buffer a streamed body grows to.
const MAX_GROWN_BUF: usize = 64 * 1024;

/// Why an upstream exchange produced no response head.
pub(super) enum Failure {
    /// Connect failed or the connection broke: 502.
    Unavailable(UpstreamError),
    /// The upstream sent something that is not a usable response head: 502.
    Protocol(super::head::ResponseError),
    /// The connection broke before a complete response head: 502.
    Reset(std::io::Error),
    /// The response head did not arrive in time: 504.
    Timeout,
    /// The client went away while interim responses were forwarded.
    ClientGone,
}

/// The per-request view of a connection: what the exchange needs of it, and where the
/// answer goes (`down`).
pub(crate) struct Conn<'a, D> {
    pub(crate) worker: &'a Worker,
    /// The sweep slot bounding the request's long waits (the connection's, on HTTP/1.1).
    pub(crate) slot: usize,
    pub(crate) listener: &'a ListenerConfig,
    pub(crate) client: &'a ClientAddr,
    pub(crate) down: D,
}

/// The client side of an HTTP/1.1 connection: its socket (plain or TLS).
pub(crate) struct H1Client<'a, S> {
    stream: &'a mut S,
    /// The listener's idle timeout, bounding each write.
    idle_timeout: Duration,
}

/// A client connection the lean HTTP/1.1 path reads and writes: a plain socket, or the TLS
/// stream over one.
pub(crate) trait ClientIo: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {
    /// `http` or `https`, for `X-Forwarded-Proto`.
    const PROTO: &'static [u8];

    /// Writes all of `bytes` within `due` (and flushes them out of any TLS buffer).
    async fn send_all(
        &mut self,
        bytes: &[u8],
        timer: &mut Timer<'_>,
        due: &mut Due,
    ) -> Result<(), ()>;
}

impl ClientIo for TcpStream {
    const PROTO: &'static [u8] = b"http";

    async fn send_all(
        &mut self,
        bytes: &[u8],
        timer: &mut Timer<'_>,
        due: &mut Due,
    ) -> Result<(), ()> {
        send(self, bytes, timer, due).await
    }
}

impl ClientIo for tokio_rustls::server::TlsStream<TcpStream> {
    const PROTO: &'static [u8] = b"https";

    async fn send_all(
        &mut self,
        bytes: &[u8],
        timer: &mut Timer<'_>,
        due: &mut Due,
    ) -> Result<(), ()> {
        let write = async {
            self.write_all(bytes).await?;
            self.flush().await
        };
        match timed(timer, due, write).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(()),
        }
    }
}

impl<S: ClientIo> Conn<'_, H1Client<'_, S>> {
    /// Serves the request whose first bytes are in `carry` (or are ready to be read).
    async fn next_request(self, carry: Option<Buf>) -> Next {
        let lean = &self.worker.lean;
        let mut buf = carry.unwrap_or_else(|| lean.take_buf());
        let mut fields = lean.take_fields();
        let mut timer = Timer { sleep: lean.take_timer(), worker: self.worker, slot: self.slot };
        let mut out = lean.take_out();
        let next = self.request(&mut buf, &mut fields, &mut timer, &mut out).await;
        lean.give_fields(fields);
        lean.give_timer(timer.sleep);
        lean.give_out(out);
        match next {
            Step::Done { close: false } if buf.is_empty() => {
                lean.give_buf(buf);
                Next::KeepAlive(None)
            }
            Step::Done { close: false } => Next::KeepAlive(Some(buf)),
            Step::Done { close: true } => {
                lean.give_buf(buf);
                Next::Close
            }
            Step::Handoff => Next::Handoff(buf),
        }
    }

    async fn request(
        mut self,
        buf: &mut Buf,
        fields: &mut Vec<Field>,
        timer: &mut Timer<'_>,
        out: &mut Vec<u8>,
    ) -> Step {
        let listener = self.listener;
        // The head, within the header read timeout (counted from here: the connection just
        // turned readable, or a pipelined request is already buffered).
        let mut head_due = Due::after(listener.header_read_timeout);
        let head = loop {
            // (An empty buffer, the usual case for a new request, needs no parse to know.)
            let parsed = if buf.is_empty() {
                RequestParse::Partial
            } else {
                parse_request(buf.filled(), fields)
            };
            match parsed {
                // hyper answers an oversized head with 431.
                RequestParse::Complete(head) if head.len > listener.max_header_bytes => {
                    return Step::Handoff
                }
                RequestParse::Complete(head) => break head,
                // HTTP/2 on an HTTP/1.1-only listener: say so in HTTP/2 (see `preface`).
                RequestParse::Unusual(_) if preface::is_h2_preface(buf.filled()) => {
                    preface::warn_once(&listener.name);
                    preface::goaway(out);
                    let _ = self.down.write(timer, out).await;
                    return Step::Done { close: true };
                }
                // hyper answers it: 400, 431, or the exchange the lean path does not do.
                RequestParse::Unusual(_) => return Step::Handoff,
                RequestParse::Partial => {
                    if buf.len() >= listener.max_header_bytes {
                        return Step::Handoff;
                    }

                    let limit = listener.max_header_bytes;
                    match timed(timer, &mut head_due, read_into(self.down.stream, buf, limit)).await
                    {
                        Ok(Ok(n)) if n > 0 => {}
                        // EOF, error or slowloris: close without a response, as hyper does.
                        _ => return Step::Done { close: true },
                    }
                }
            }
        };
        let start = self.worker.shared.now();
        let snap = self.worker.snapshot();
        let route = route_of(&snap, &buf.filled()[..head.len], &head, fields);
        if route.is_some_and(|r| !lean_serves(&snap, r, false)) {
            return Step::Handoff;
        }
        if let Some(proxied @ Route { action: Action::Proxy { .. }, .. }) = route {
            let max_body =
                snap.config.routes.get(proxied.index).map_or(listener.max_body_bytes, |r| {
                    crate::edge::max_body(listener.max_body_bytes, &r.edge)
                });
            if head.content_length > max_body {
                let (status, reason) = (413, "Payload Too Large");
                let body = errors::BODY_TOO_LARGE;
                let sent =
                    self.reply_json(timer, out, status, reason, body, &head, true, &[]).await;
                let elapsed = self.worker.shared.now().saturating_duration_since(start);
                proxied.stats.record(self.worker.id, 413, elapsed);
                if matches!(sent, Flow::Sent) {
                    self.linger(buf, timer).await;
                }
                return Step::Done { close: true };
            }
        }
        if head.content_length > LEAN_BODY_LIMIT {
            return Step::Handoff;
        }
        let total = head.len + head.content_length as usize;
        if buf.len() < total {
            buf.reserve_total(total);
            // The route's `body_timeout` (408), else the idle timeout (closed without answer).
            let body_timeout = route
                .and_then(|r| snap.config.routes.get(r.index))
                .and_then(|r| r.edge.request_limits.as_ref())
                .and_then(|l| l.body_timeout)
                .filter(|t| *t < listener.idle_timeout);
            let mut due = Due::after(body_timeout.unwrap_or(listener.idle_timeout));
            while buf.len() < total {
                match timed(timer, &mut due, read_into(self.down.stream, buf, total)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    Err(_) if body_timeout.is_some() => {
                        let (status, reason) = (408, "Request Timeout");
                        let body = errors::REQUEST_BODY_TIMEOUT;
                        let _ = self
                            .reply_json(timer, out, status, reason, body, &head, true, &[])
                            .await;
                        if let Some(route) = route {
                            let elapsed = self.worker.shared.now().saturating_duration_since(start);
                            route.stats.record(self.worker.id, 408, elapsed);
                        }
                        return Step::Done { close: true };
                    }
                    _ => return Step::Done { close: true },
                }
            }
        }
        let request = &buf.filled()[..total];
        let close = head.connection.close || self.worker.lean.idle.closing();
        let read = ReadRequest { snap: &snap, route, request, head: &head, fields, start, close };
        let step = self.serve_read(read, timer, out).await;
        buf.consume(total);
        step
    }

    /// Half-closes after a response sent while the client may still be sending a body, then
    /// reads and drops what arrives for a moment: closing a socket with unread bytes resets
    /// the connection, and a reset can destroy the response before the client reads it.
    async fn linger(&mut self, buf: &mut Buf, timer: &mut Timer<'_>) {
        let _ = self.down.stream.shutdown().await;
        let mut due = Due::after(LINGER);
        let mut drained = 0;
        while drained < LINGER_BYTES {
            buf.consume(usize::MAX);
            match timed(timer, &mut due, read_into(self.down.stream, buf, BUF_SIZE)).await {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
        buf.consume(usize::MAX);
    }
}

impl<D: Downstream> Conn<'_, D> {
    /// Serves a request read whole (head and body bytes in `read.request`): the edge's
    /// screening, then the route's answer.
    pub(crate) async fn serve_read(
        &mut self,
        read: ReadRequest<'_>,
        timer: &mut Timer<'_>,
        out: &mut Vec<u8>,
    ) -> Step {
        let ReadRequest { snap, route, request, head, fields, start, close } = read;
        // Phase edge, as on the hyper path: the listener's IP lists, then the route's.
        let listener_ip =
            snap.config.listeners.get(self.listener.index).and_then(|l| l.ip.as_ref());
        let edge = route.and_then(|r| snap.config.routes.get(r.index)).map(|c| &c.edge);
        let view = LeanView { head, request, fields, peer: self.client.addr };
        let size = || crate::edge::HeadSize {
            method: head.method.as_str(),
            target_len: head.target.len(),
            fields: fields.len(),
            head_bytes: head.len,
        };
        let trusted = &snap.config.trusted_proxies;
        let decoration = match crate::edge::screen(listener_ip, edge, trusted, &view, size) {
            Ok(decoration) => decoration,
            Err(answer) => {
                let json = (!answer.body.is_empty())
                    .then_some((&b"content-type"[..], &b"application/json"[..]));
                let fields = json.into_iter().chain(
                    answer.headers.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())),
                );
                let (status, reason) = (answer.status, answer.reason());
                let body = answer.body.as_bytes();
                let local = (!answer.body.is_empty()).then(|| local_error(answer.body, status));
                let flow = self
                    .reply_local(timer, out, status, reason, fields, body, head, close, local)
                    .await;
                let elapsed = self.worker.shared.now().saturating_duration_since(start);
                match route {
                    Some(r) => r.stats.record(self.worker.id, answer.status, elapsed),
                    None => snap.no_route.record(self.worker.id, answer.status, elapsed),
                }
                let grpc = self.grpc_code(local);
                self.log(request, head, answer.status, route, None, elapsed, None, None, grpc);
                return flow.after(close);
            }
        };
        match route {
            None => {
                let flow = self
                    .reply_json(timer, out, 404, "Not Found", errors::NO_ROUTE, head, close, &[])
                    .await;
                let elapsed = self.worker.shared.now().saturating_duration_since(start);
                snap.no_route.record(self.worker.id, 404, elapsed);
                let grpc = self.grpc_code(Some(local_error(errors::NO_ROUTE, 404)));
                self.log(request, head, 404, None, None, elapsed, None, None, grpc);
                flow.after(close)
            }
            Some(route) => match &route.action {
                Action::Direct { status, body, headers } => {
                    let reason = status.canonical_reason().unwrap_or("");
                    let fields = headers
                        .iter()
                        .chain(&decoration)
                        .map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
                    let status = status.as_u16();
                    let flow = self
                        .reply_local(timer, out, status, reason, fields, body, head, close, None)
                        .await;
                    let elapsed = self.worker.shared.now().saturating_duration_since(start);
                    route.stats.record(self.worker.id, status, elapsed);
                    self.log(request, head, status, Some(route), None, elapsed, None, None, None);
                    flow.after(close)
                }
                Action::Proxy { cluster, .. } => {
                    let exchange = Exchange {
                        snap,
                        route,
                        cluster_index: *cluster,
                        request,
                        head,
                        fields,
                        start,
                        close,
                        decoration: &decoration,
                    };
                    self.proxy(exchange, timer, out).await
                }
            },
        }
    }

    /// Sends a response made here: `fields`, then the framing and `date`, then `body` (left
    /// out for a `HEAD` request).
    #[allow(clippy::too_many_arguments)]
    async fn reply_local<'f>(
        &mut self,
        timer: &mut Timer<'_>,
        out: &mut Vec<u8>,
        status: u16,
        reason: &str,
        fields: impl IntoIterator<Item = (&'f [u8], &'f [u8]), IntoIter: Clone>,
        body: &[u8],
        head: &RequestHead,
        close: bool,
        grpc: Option<LocalError>,
    ) -> Flow {
        let date = self.worker.lean.date();
        let local = LocalResponse {
            status,
            reason,
            body,
            date: &date,
            head_request: head.method == Method::HEAD,
            close,
            grpc,
        };
        self.down.respond_local(timer, out, &local, fields).await
    }

    /// Sends a gateway error (a JSON body), with the route's `decoration` fields.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn reply_json(
        &mut self,
        timer: &mut Timer<'_>,
        out: &mut Vec<u8>,
        status: u16,
        reason: &str,
        body: &'static str,
        head: &RequestHead,
        close: bool,
        decoration: &[(http::HeaderName, http::HeaderValue)],
    ) -> Flow {
        let json = [(&b"content-type"[..], &b"application/json"[..])];
        let cors = decoration.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
        let fields = json.into_iter().chain(cors);
        let local = Some(local_error(body, status));
        self.reply_local(timer, out, status, reason, fields, body.as_bytes(), head, close, local)
            .await
    }

    /// The `grpc-status` a gateway answer `local` was given as, when the client is a gRPC
    /// caller (for the access log).
    fn grpc_code(&self, local: Option<LocalError>) -> Option<u32> {
        local.filter(|_| self.down.grpc()).map(|l| u32::from(l.code))
    }

    #[allow(clippy::too_many_arguments)]
    fn log(
        &self,
        request: &[u8],
        head: &RequestHead,
        status: u16,
        route: Option<&Route>,
        cluster: Option<&str>,
        duration: Duration,
        upstream_and_id: Option<(SocketAddr, &[u8])>,
        refused: Option<spillway_core::RejectReason>,
        grpc_status: Option<u32>,
    ) {
        let Some(sink) = &self.worker.shared.access_log else { return };
        log_access(
            sink,
            &AccessEntry {
                client: self.client.as_str(),
                method: head.method.as_str(),
                uri: rewrite::text(request, head.target),
                status,
                route: route.map_or("", |r| r.name.as_str()),
                cluster: cluster.unwrap_or(""),
                upstream: upstream_and_id.map(|(a, _)| a),
                duration,
                request_id: upstream_and_id.and_then(|(_, id)| std::str::from_utf8(id).ok()),
                refused: refused.map(|r| r.as_str()),
                grpc_status,
            },
        );
    }

    async fn proxy(&mut self, ex: Exchange<'_>, timer: &mut Timer<'_>, out: &mut Vec<u8>) -> Step {
        let worker = self.worker;
        let snap = ex.snap;
        let Some(cluster) = snap.clusters.get(ex.cluster_index) else {
            return self
                .reply_error(ex, timer, out, 500, "Internal Server Error", errors::INTERNAL)
                .await;
        };
        let Action::Proxy { rewrite_prefix, rewrite_host, timeout, deadline: policy, .. } =
            &ex.route.action
        else {
            return self
                .reply_error(ex, timer, out, 500, "Internal Server Error", errors::INTERNAL)
                .await;
        };
        // Deadline propagation, as on the hyper path.
        let incoming_grpc = first(ex.fields, FieldKind::GrpcTimeout).map(|s| s.of(ex.request));
        let incoming_request =
            first(ex.fields, FieldKind::XRequestTimeout).map(|s| s.of(ex.request));
        let budget = match policy {
            Some(policy) => {
                let incoming = IncomingTimeouts {
                    grpc_timeout: incoming_grpc,
                    request_timeout: incoming_request,
                    in_process: None,
                };
                match policy.decide(incoming, ex.start) {
                    Ok(granted) => Some(granted.deadline),
                    Err(rejection) => {
                        // Counted like every refusal; the class is read for the counter only.
                        let gate = snap.policies.gate(
                            &snap.config,
                            self.listener.index,
                            ex.route.index,
                            ex.cluster_index,
                        );
                        let view = LeanView {
                            head: ex.head,
                            request: ex.request,
                            fields: ex.fields,
                            peer: self.client.addr,
                        };
                        let class =
                            crate::policy::classify(gate.and_then(|g| g.route), &view).class;
                        let refusal = crate::policy::Refusal::from(rejection);
                        snap.policies.count_refusal(ex.route.index, class, &refusal);
                        return self.reply_refusal(ex, timer, out, &refusal).await;
                    }
                }
            }
            None => None,
        };
        // Admission, as on the hyper path.
        let gate =
            snap.policies.gate(&snap.config, self.listener.index, ex.route.index, ex.cluster_index);
        let mut admitted = None;
        if let Some(gate) = gate {
            let view = LeanView {
                head: ex.head,
                request: ex.request,
                fields: ex.fields,
                peer: self.client.addr,
            };
            let classified = crate::policy::classify(gate.route, &view);
            let left = budget.map(|d| d.remaining(ex.start));
            let clock = &worker.shared.clock;
            match crate::policy::admit(gate, &view, classified, ex.start, left, clock, worker.id)
                .await
            {
                Ok(admission) => admitted = Some((admission, classified, gate)),
                Err(refusal) => {
                    snap.policies.count_refusal(ex.route.index, classified.class, &refusal);
                    return self.reply_refusal(ex, timer, out, &refusal).await;
                }
            }
        }
        // The cluster shed the request and its gutter took it: call the gutter (same protocol,
        // checked by the config).
        let (cluster_index, cluster) = match admitted.as_ref().and_then(|(a, _, _)| a.gutter()) {
            Some(g) => match snap.clusters.get(g) {
                Some(gutter) => (g, &**gutter),
                None => (ex.cluster_index, &**cluster),
            },
            None => (ex.cluster_index, &**cluster),
        };
        let hash = match cluster.config.balance {
            Balance::ConsistentHash => {
                let by_header = cluster.config.hash_header.as_deref().and_then(|name| {
                    ex.fields
                        .iter()
                        .find(|f| f.name.of(ex.request).eq_ignore_ascii_case(name.as_bytes()))
                });
                Some(match by_header {
                    Some(f) => hash_bytes(f.value.of(ex.request)),
                    None => hash_bytes(self.client.ip()),
                })
            }
            _ => None,
        };
        // Retries: every request counts in the route's budget; only an idempotent one (or any
        // with `non_idempotent`) is tried again. The body is already buffered: replay is free.
        let retry = snap.policies.retry(ex.route.index).filter(|r| {
            r.begin(worker.id, ex.start);
            let body_len = (ex.request.len() - ex.head.len) as u64;
            r.eligible(ex.head.method.as_str(), Some(body_len))
        });
        let t = &cluster.config.timeouts;
        // What is left of the request's time at `now`: its deadline budget or route timeout.
        let remaining = |now: spillway_core::Instant| match budget {
            Some(d) => d.remaining(now),
            None => timeout.saturating_sub(now.saturating_duration_since(ex.start)),
        };
        let min_try = match policy {
            Some(p) => p.min_budget(),
            None => Duration::ZERO,
        };

        // The request id and target are the same on every try.
        let existing_id = first(ex.fields, FieldKind::XRequestId);
        let generated = existing_id.is_none().then(|| worker.new_request_id());
        let new_id = generated.as_ref().map(|id| &id[..]);
        let request_id = existing_id.map_or(new_id.unwrap_or_default(), |s| s.of(ex.request));
        let target = rewrite_prefix.as_ref().map(|(from, to)| {
            let target = rewrite::text(ex.request, ex.head.target);
            let (path, query) = match target.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (target, None),
            };
            let mut t = route::rewrite_path(path, from, to);
            if let Some(q) = query {
                t.push('?');
                t.push_str(q);
            }
            t
        });
        let mut budget_text = [0u8; 20];
        let (admission_fields, admission_n) = match &admitted {
            Some((_, classified, gate)) => classified.upstream_fields(gate, &mut budget_text),
            None => ([(&b""[..], &b""[..]); 2], 0),
        };

        let lean = &worker.lean;
        let mut ubuf = lean.take_buf();
        let mut ufields = lean.take_fields();
        let head_request = ex.head.method == Method::HEAD;
        let mut attempts = Attempts::first();
        let mut avoid = None;
        // The try loop: one pass without retries; each retry picks another endpoint when one
        // is available, rewrites the deadline headers with what is left, and says which
        // attempt it is in `x-spillway-attempt`.
        let (picked, endpoint, try_timeout, try_start, result, counted) = loop {
            let try_start = if attempts.made() == 1 { ex.start } else { worker.shared.now() };
            let Some(picked) = worker.pick(snap, cluster_index, try_start, hash, avoid) else {
                lean.give_buf(ubuf);
                lean.give_fields(ufields);
                if let Some((admission, _, _)) = admitted {
                    admission.finish(None, try_start);
                }
                if let Some(fallback) = snap.policies.fallback(ex.route.index, None) {
                    return self.reply_rendered(ex, timer, out, fallback, None, None).await;
                }
                return self
                    .reply_error(
                        ex,
                        timer,
                        out,
                        503,
                        "Service Unavailable",
                        errors::NO_HEALTHY_ENDPOINT,
                    )
                    .await;
            };
            let Some(endpoint) = cluster.endpoints.get(picked) else {
                lean.give_buf(ubuf);
                lean.give_fields(ufields);
                return self
                    .reply_error(ex, timer, out, 500, "Internal Server Error", errors::INTERNAL)
                    .await;
            };
            let addr = endpoint.address;
            let left = remaining(try_start);
            let try_timeout = match retry {
                Some(r) => r.try_timeout(t.per_try, left),
                None => left.min(t.per_try),
            };
            let headers_in = incoming_grpc.is_some() || incoming_request.is_some();
            let (grpc_value, request_value) = match budget {
                // Passed on in the headers the caller used; without them no clock read.
                Some(d) if headers_in => {
                    let now = if attempts.made() == 1 { worker.shared.now() } else { try_start };
                    let left = d.remaining(now);
                    (
                        incoming_grpc.map(|_| format_grpc_timeout(left)),
                        incoming_request.map(|_| format_request_timeout(left)),
                    )
                }
                _ => (None, None),
            };
            let attempt_text =
                if retry.is_some() { attempts.made().to_string() } else { String::new() };
            let mut set = [(&b""[..], &b""[..]); 3];
            set[..admission_n].copy_from_slice(&admission_fields[..admission_n]);
            let mut set_n = admission_n;
            if retry.is_some() {
                set[set_n] = (ATTEMPT_HEADER, attempt_text.as_bytes());
                set_n += 1;
            }
            let edits = RequestEdits {
                target: target.as_deref().map(str::as_bytes),
                host: rewrite_host.as_ref().map(|h| h.as_bytes()),
                client_ip: self.client.ip(),
                proto: self.down.proto(),
                new_request_id: new_id,
                grpc_timeout: grpc_value.as_ref().map(|v| v.as_str().as_bytes()),
                request_timeout: request_value.as_ref().map(|v| v.as_str().as_bytes()),
                set: &set[..set_n],
            };
            let body = &ex.request[ex.head.len..];
            // HTTP/1.1: the head and body bytes as they go; HTTP/2: the fields HEADERS are
            // encoded from (in `out` and `ufields`), the body beside them.
            let h2 = if cluster.config.protocol == UpstreamProtocol::Http2 {
                let mut head = H2Head::new(out, &mut ufields);
                rewrite::write_upstream_head(&mut head, ex.request, ex.head, ex.fields, &edits);
                Some(H2Target {
                    tls: cluster.tls.as_ref(),
                    scheme: if cluster.tls.is_some() { b"https" } else { b"http" },
                    authority: endpoint
                        .authority
                        .as_ref()
                        .map_or(&b""[..], |a| a.as_str().as_bytes()),
                    method: head.method,
                    target: head.target,
                    host: head.host,
                    body,
                })
            } else {
                out.clear();
                rewrite::write_request_head(out, ex.request, ex.head, ex.fields, &edits);
                out.extend_from_slice(body);
                None
            };

            let in_flight = InFlight(endpoint);
            endpoint.in_flight.fetch_add(1, Relaxed);
            // Counted from the try's start (the first from the request's: already read).
            let deadline = Due::from(try_start, try_timeout);
            let io = ExchangeIo {
                addr,
                start: try_start,
                connect: t.connect,
                max_idle: t.idle,
                request: out,
                head_request,
                idempotent: is_idempotent_method(ex.head.method.as_str()),
                deadline,
                ubuf: &mut ubuf,
                ufields: &mut ufields,
                timer,
            };
            // Two awaits, not one future that holds both: the HTTP/2 exchange's state is
            // several times the HTTP/1.1 one's, which every HTTP/1.1 request would move.
            let result = match h2 {
                Some(target) => self.exchange_h2(io, target).await,
                None => self.exchange(io).await,
            };
            // What the answer counts as: for a gRPC call, the HTTP equivalent of a status given
            // in the head (a trailers-only answer), as on the general path.
            let counted = match &result {
                Ok((_, response)) if self.down.grpc() => {
                    let status = grpc_status_field(ubuf.filled(), &ufields);
                    crate::proxy::grpc::counted_status_of(response.status, status)
                }
                Ok((_, response)) => response.status,
                Err(_) => 0,
            };
            let now = worker.shared.now();
            let latency = now.saturating_duration_since(try_start);
            drop(in_flight);
            // Each try's outcome teaches outlier detection and the balancer.
            let (outcome, try_result) = match &result {
                Err(Failure::ClientGone) => (None, None),
                Err(Failure::Timeout) => {
                    let outcome = if snap.policies.cluster_saturated(cluster_index) {
                        Outcome::Overloaded
                    } else {
                        Outcome::Failure
                    };
                    (Some(outcome), Some(TryResult::Failed(TryFailure::Timeout)))
                }
                Err(Failure::Unavailable(_)) => {
                    (Some(Outcome::Failure), Some(TryResult::Failed(TryFailure::Connect)))
                }
                Err(Failure::Reset(_) | Failure::Protocol(_)) => {
                    (Some(Outcome::Failure), Some(TryResult::Failed(TryFailure::Reset)))
                }
                Ok(_) => {
                    let outcome =
                        if counted >= 500 { Outcome::ServerError } else { Outcome::Success };
                    // The hints are looked up only where a retry may follow (a scan of the
                    // response head's fields the fast path does not pay).
                    let answered = retry.map(|_| {
                        let bytes = ubuf.filled();
                        let find = |name: &[u8]| {
                            ufields
                                .iter()
                                .find(|f| f.name.of(bytes).eq_ignore_ascii_case(name))
                                .map(|f| f.value.of(bytes))
                        };
                        TryResult::Answered {
                            status: counted,
                            retry_after: find(b"retry-after"),
                            grpc_pushback: find(b"grpc-retry-pushback-ms"),
                        }
                    });
                    (Some(outcome), answered)
                }
            };
            if let Some(outcome) = outcome {
                cluster.record(endpoint, outcome, latency, now);
                let ok = outcome == Outcome::Success;
                worker.picked_done(snap.generation, cluster_index, picked, latency, ok, now);
            }
            if let (Some(r), Some(try_result)) = (retry, try_result) {
                let random = worker.random_unit();
                let decision = r.next(
                    &mut attempts,
                    try_result,
                    remaining(now),
                    min_try,
                    random,
                    worker.id,
                    now,
                );
                if let RetryDecision::Retry { after } = decision {
                    // The failed answer is dropped with its socket (never pooled: its body was
                    // not read).
                    drop(result);
                    let mut wait = Due::after(after);
                    let _ = timed(timer, &mut wait, std::future::pending::<()>()).await;
                    avoid = Some(picked);
                    continue;
                }
            }
            break (picked, endpoint, try_timeout, try_start, result, counted);
        };
        let addr = endpoint.address;
        let now = worker.shared.now();
        let latency = now.saturating_duration_since(ex.start);
        if let Some((admission, _, _)) = admitted {
            match &result {
                // The client left: says nothing about the upstream.
                Err(Failure::ClientGone) => drop(admission),
                Ok(_) => admission.finish(Some(counted), now),
                Err(_) => admission.finish(None, now),
            }
        }
        let _ = picked;
        let step = match result {
            Err(failure) => {
                let (status, reason, body) = match &failure {
                    Failure::Timeout => (504, "Gateway Timeout", errors::UPSTREAM_TIMEOUT),
                    _ => (502, "Bad Gateway", errors::UPSTREAM_UNAVAILABLE),
                };
                match &failure {
                    Failure::Unavailable(e) => {
                        tracing::debug!(error = %e, cluster = %cluster.config.name, "upstream request failed")
                    }
                    Failure::Reset(e) => {
                        tracing::debug!(error = %e, %addr, cluster = %cluster.config.name, "upstream connection broke")
                    }
                    Failure::Protocol(e) => {
                        tracing::debug!(error = %e, %addr, cluster = %cluster.config.name, "upstream response unusable")
                    }
                    Failure::Timeout | Failure::ClientGone => {}
                }
                let fallback = match failure {
                    Failure::ClientGone => None,
                    _ => snap.policies.fallback(ex.route.index, None),
                };
                if matches!(failure, Failure::ClientGone) {
                    Step::Done { close: true }
                } else if let Some(fallback) = fallback {
                    self.reply_rendered(ex, timer, out, fallback, None, None).await
                } else {
                    let flow = self
                        .reply_json(timer, out, status, reason, body, ex.head, ex.close, &[])
                        .await;
                    ex.route.stats.record(worker.id, status, latency);
                    let cluster_name = Some(cluster.config.name.as_str());
                    let grpc = self.grpc_code(Some(local_error(body, status)));
                    self.log(
                        ex.request,
                        ex.head,
                        status,
                        Some(ex.route),
                        cluster_name,
                        latency,
                        Some((addr, request_id)),
                        None,
                        grpc,
                    );
                    flow.after(ex.close)
                }
            }
            Ok((upstream, _)) if snap.policies.fallback_covers(ex.route.index, counted) => {
                // Replaced by the route's fallback; the failed answer is dropped with its
                // socket (its body unread).
                drop(upstream);
                let fallback = snap.policies.fallback(ex.route.index, None);
                match fallback {
                    Some(fallback) => {
                        self.reply_rendered(ex, timer, out, fallback, None, None).await
                    }
                    None => Step::Done { close: true },
                }
            }
            Ok((upstream, response)) => {
                ex.route.stats.record(worker.id, counted, latency);
                let cluster_name = Some(cluster.config.name.as_str());
                // A gRPC call's status when its head gives one (a trailers-only answer).
                let grpc_status = self
                    .down
                    .grpc()
                    .then(|| grpc_status_field(ubuf.filled(), &ufields))
                    .flatten()
                    .and_then(crate::proxy::grpc::status_code_of);
                self.log(
                    ex.request,
                    ex.head,
                    counted,
                    Some(ex.route),
                    cluster_name,
                    latency,
                    Some((addr, request_id)),
                    None,
                    grpc_status,
                );
                // Shutdown may have begun while the upstream was answering.
                let close = ex.close
                    || response.framing == ResponseFraming::UntilClose
                    || lean.idle.closing();
                let date = (!response.has_date).then(|| lean.date());
                if D::LOWER_CASE_NAMES {
                    let bytes = ubuf.filled_mut();
                    for f in ufields.iter() {
                        if let Some(name) = bytes.get_mut(f.name.start()..f.name.end()) {
                            name.make_ascii_lowercase();
                        }
                    }
                }
                let answer = ResponseStart {
                    buf: ubuf.filled(),
                    head: &response,
                    fields: &ufields,
                    request_id: Some(request_id),
                    date: date.as_ref().map(|d| &d[..]),
                    close,
                    decoration: ex.decoration,
                    grpc_status,
                };
                let started = self.down.start_response(out, &answer);
                ubuf.consume(response.len);
                // Without retries the body has what is left of the try's time (as before);
                // with them, what is left of the request's.
                let body_time = match retry {
                    Some(_) => remaining(try_start).max(try_timeout),
                    None => try_timeout,
                };
                let until = try_start.as_nanos().saturating_add(duration_nanos(body_time));
                match (started, upstream) {
                    (Ok(()), Upstream::H1(upstream)) => {
                        let body =
                            self.pass_body(upstream, &response, &mut ubuf, out, timer, until).await;
                        match body {
                            Some(upstream) => {
                                if response.reusable() && ubuf.is_empty() {
                                    lean.upstreams.checkin(addr, upstream, now);
                                }
                                Step::Done { close }
                            }
                            None => Step::Done { close: true },
                        }
                    }
                    (Ok(()), Upstream::H2(body)) => {
                        let ended = self.pass_body_h2(body, out, timer, until).await;
                        Step::Done { close: close || !ended }
                    }
                    // The client cannot take this answer (its stream is gone): the upstream
                    // socket or stream goes with the unread body.
                    (Err(()), _) => Step::Done { close: true },
                }
            }
        };
        lean.give_buf(ubuf);
        lean.give_fields(ufields);
        step
    }

    /// Answers a request refused by admission (laid out by `policy::render`).
    async fn reply_refusal(
        &mut self,
        ex: Exchange<'_>,
        timer: &mut Timer<'_>,
        out: &mut Vec<u8>,
        refusal: &crate::policy::Refusal,
    ) -> Step {
        let reason = refusal.rejection.reason;
        let (rendered, local) = match ex.snap.policies.fallback(ex.route.index, Some(reason)) {
            Some(fallback) => (fallback, None),
            None => (
                crate::policy::render::render(refusal),
                Some(LocalError::refusal(&refusal.rejection)),
            ),
        };
        self.reply_rendered(ex, timer, out, rendered, Some(reason), local).await
    }

    /// Answers with a response laid out by `policy` (a refusal or a fallback).
    async fn reply_rendered(
        &mut self,
        ex: Exchange<'_>,
        timer: &mut Timer<'_>,
        out: &mut Vec<u8>,
        rendered: crate::policy::render::Rendered,
        refused: Option<spillway_core::RejectReason>,
        local: Option<LocalError>,
    ) -> Step {
        let status = rendered.status;
        let reason = http::StatusCode::from_u16(status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        // The route's CORS fields too: a page may read why it was refused.
        let fields = rendered
            .headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .chain(ex.decoration.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes())));
        let body = rendered.body.as_bytes();
        let flow = self
            .reply_local(timer, out, status, reason, fields, body, ex.head, ex.close, local)
            .await;
        let elapsed = self.worker.shared.now().saturating_duration_since(ex.start);
        ex.route.stats.record(self.worker.id, status, elapsed);
        let cluster = ex.snap.clusters.get(ex.cluster_index).map(|c| c.config.name.as_str());
        let grpc = self.grpc_code(local);
        let route = Some(ex.route);
        self.log(ex.request, ex.head, status, route, cluster, elapsed, None, refused, grpc);
        flow.after(ex.close)
    }

    /// Answers with a gateway error, recording it on the route.
    #[allow(clippy::too_many_arguments)]
    async fn reply_error(
        &mut self,
        ex: Exchange<'_>,
        timer: &mut Timer<'_>,
        out: &mut Vec<u8>,
        status: u16,
        reason: &str,
        body: &'static str,
    ) -> Step {
        let reason = if reason.is_empty() {
            http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("")
        } else {
            reason
        };
        let flow = self
            .reply_json(timer, out, status, reason, body, ex.head, ex.close, ex.decoration)
            .await;
        let elapsed = self.worker.shared.now().saturating_duration_since(ex.start);
        ex.route.stats.record(self.worker.id, status, elapsed);
        let cluster = ex.snap.clusters.get(ex.cluster_index).map(|c| c.config.name.as_str());
        let grpc = self.grpc_code(Some(local_error(body, status)));
        let route = Some(ex.route);
        self.log(ex.request, ex.head, status, route, cluster, elapsed, None, None, grpc);
        flow.after(ex.close)
    }

    /// Sends the request and reads the final response head (forwarding interim ones); one
    /// retry on a fresh connection when a pooled one turns out closed, for idempotent requests.
    async fn exchange(
        &mut self,
        io: ExchangeIo<'_, '_>,
    ) -> Result<(Upstream, ResponseHead), Failure> {
        let ExchangeIo { addr, request, mut deadline, ubuf, ufields, timer, .. } = io;
        let lean = &self.worker.lean;
        let mut retried = false;
        loop {
            ubuf.consume(usize::MAX);
            let pooled = lean.upstreams.checkout(addr, io.start, io.max_idle);
            let reused = pooled.is_some();
            let mut upstream = match pooled {
                Some(s) => s,
                // Boxed: the connect future is large, and only new connections need it.
                None => match timed(timer, &mut deadline, Box::pin(connect_tcp(addr, io.connect)))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return Err(Failure::Unavailable(e)),
                    Err(Elapsed) => return Err(Failure::Timeout),
                },
            };
            let may_retry = reused && !retried && io.idempotent;
            match send(&mut upstream, request, timer, &mut deadline).await {
                Ok(()) => {}
                Err(()) if may_retry => {
                    retried = true;
                    continue;
                }
                Err(()) if deadline.passed(self.worker) => return Err(Failure::Timeout),
                Err(()) => {
                    let e = std::io::Error::new(
                        std::io::ErrorKind::BrokenPipe,
                        "upstream closed while the request was sent",
                    );
                    return Err(Failure::Reset(e));
                }
            }
            let mut got_bytes = false;
            loop {
                let parsed = if ubuf.is_empty() {
                    Ok(ResponseParse::Partial)
                } else {
                    parse_response(ubuf.filled(), io.head_request, ufields)
                };
                match parsed {
                    Ok(ResponseParse::Complete(head)) if head.is_interim() => {
                        let sent = self.down.interim(timer, ubuf.filled(), &head, ufields).await;
                        ubuf.consume(head.len);
                        if sent.is_err() {
                            return Err(Failure::ClientGone);
                        }
                    }
                    Ok(ResponseParse::Complete(head)) => return Ok((Upstream::H1(upstream), head)),
                    Ok(ResponseParse::Partial) => {
                        let read = timed(
                            timer,
                            &mut deadline,
                            read_into(&mut upstream, ubuf, MAX_RESPONSE_HEAD),
                        );
                        match read.await {
                            Ok(Ok(n)) if n > 0 => got_bytes = true,
                            Ok(Ok(_)) | Ok(Err(_)) if may_retry && !got_bytes => {
                                retried = true;
                                break;
                            }
                            Ok(Ok(_)) => {
                                let e = std::io::Error::new(
                                    std::io::ErrorKind::UnexpectedEof,
                                    "upstream closed before a complete response head",
                                );
                                return Err(Failure::Reset(e));
                            }
                            Ok(Err(e)) => return Err(Failure::Reset(e)),
                            Err(Elapsed) => return Err(Failure::Timeout),
                        }
                    }
                    Err(e) => return Err(Failure::Protocol(e)),
                }
            }
        }
    }

    /// Passes the response body on to the client, after the head `start_response` left in
    /// `out` (if any). Gives the upstream socket back when the body ended cleanly (`None`
    /// when either side broke).
    async fn pass_body(
        &mut self,
        mut upstream: TcpStream,
        response: &ResponseHead,
        ubuf: &mut Buf,
        out: &mut Vec<u8>,
        timer: &mut Timer<'_>,
        until_ns: u64,
    ) -> Option<TcpStream> {
        let idle = self.listener.idle_timeout;
        let mut remaining = match response.framing {
            ResponseFraming::Length(n) => n,
            _ => 0,
        };
        let mut chunks = ChunkedScanner::new();
        // Where the chunk data lies in what was read, when the client takes it decoded.
        let mut pieces: Vec<std::ops::Range<usize>> = Vec::new();
        let mut decoded: Vec<u8> = Vec::new();
        // The trailer section of a decoded body, sent on as the client's protocol has them.
        let mut trailer_section: Vec<u8> = Vec::new();
        let decode = response.framing == ResponseFraming::Chunked && D::DECODES_CHUNKS;
        let mut head_pending = true;
        loop {
            let available = ubuf.filled();
            let scanned = match response.framing {
                ResponseFraming::Empty => Ok((0, true)),
                ResponseFraming::Length(_) => {
                    let take = (available.len() as u64).min(remaining) as usize;
                    remaining -= take as u64;
                    Ok((take, remaining == 0))
                }
                ResponseFraming::Chunked if decode => {
                    pieces.clear();
                    let trailers = &mut trailer_section;
                    chunks
                        .scan_pieces(available, |piece| match piece {
                            Piece::Data(r) => pieces.push(r),
                            Piece::Trailer(r) => trailers.extend_from_slice(&available[r]),
                        })
                        .map(|s| (s.consumed, s.done))
                }
                ResponseFraming::Chunked => chunks.scan(available).map(|s| (s.consumed, s.done)),
                ResponseFraming::UntilClose => Ok((available.len(), false)),
            };
            let (take, done) = match scanned {
                Ok(scanned) => scanned,
                Err(e) => {
                    tracing::debug!(error = %e, "upstream sent a malformed chunked body");
                    return None;
                }
            };
            let written = if decode {
                // The chunk data of this read in one piece (as many frames as chunks would
                // be wasteful: chunks can be a few bytes each).
                decoded.clear();
                for piece in &pieces {
                    decoded.extend_from_slice(&available[piece.clone()]);
                }
                if done && !trailer_section.is_empty() {
                    match self.down.send_body(timer, out, head_pending, &decoded, false).await {
                        Ok(()) => self.down.send_trailers(timer, &trailer_section).await,
                        broken => broken,
                    }
                } else {
                    self.down.send_body(timer, out, head_pending, &decoded, done).await
                }
            } else {
                self.down.send_body(timer, out, head_pending, &available[..take], done).await
            };
            head_pending = false;
            if written.is_err() {
                return None;
            }
            ubuf.consume(take);
            if done {
                return Some(upstream);
            }
            // The request's timeout covers the whole response: a body still streaming when it
            // passes is cut (the client connection closes, and the client sees it short).
            let left = until_ns.saturating_sub(self.worker.shared.now().as_nanos());
            if left == 0 {
                self.down.cut_by_deadline();
                return None;
            }
            let mut due = Due::after(idle.min(Duration::from_nanos(left)));
            match timed(timer, &mut due, read_into(&mut upstream, ubuf, usize::MAX)).await {
                Ok(Ok(n)) if n > 0 => {}
                // A close-delimited body ends here; any other body was cut short, and closing
                // the client connection is how the client learns that.
                Ok(Ok(_)) if response.framing == ResponseFraming::UntilClose => {
                    return match self.down.send_body(timer, out, false, &[], true).await {
                        Ok(()) => Some(upstream),
                        Err(()) => None,
                    };
                }
                _ => return None,
            }
        }
    }
}

/// A gateway error answered with `status` and the JSON `body`, as a gRPC caller gets it.
fn local_error(body: &'static str, status: u16) -> LocalError {
    let status = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    LocalError::from_body(body, status)
}

/// The value of a response head's `grpc-status` field, if it has one.
fn grpc_status_field<'b>(buf: &'b [u8], fields: &[Field]) -> Option<&'b [u8]> {
    fields
        .iter()
        .find(|f| f.name.of(buf).eq_ignore_ascii_case(b"grpc-status"))
        .map(|f| f.value.of(buf))
}

/// The route of a request whose head was parsed from `head_bytes`.
fn route_of<'s>(
    snap: &'s Snapshot,
    head_bytes: &[u8],
    head: &RequestHead,
    fields: &[Field],
) -> Option<&'s Route> {
    let host = head.host.map_or("", |h| route::host_without_port(rewrite::text(head_bytes, h)));
    let path = rewrite::text(head_bytes, head.path);
    let fields = HeadFields { buf: head_bytes, fields };
    snap.router.route(&head.method, host, path, &fields)
}

/// Whether the lean exchange serves `route`. Authentication, hedging, failback, mirrors,
/// broadcast, stale copies and the micro-cache are served by hyper's path (one precomputed
/// flag per route: `Policies::hyper_only`), and so are recorded routes. Clusters spoken to in
/// HTTP/1.1 must be plain TCP (the pooled sockets); clusters spoken to in HTTP/2 go on the
/// lean HTTP/2 client (`http2_client: lean`, TLS or not), and only for an HTTP/2 downstream
/// (`h2_downstream`): an HTTP/1.1 client's answer would need its body framed anew.
pub(crate) fn lean_serves(snap: &Snapshot, route: &Route, h2_downstream: bool) -> bool {
    if snap.policies.hyper_only(route.index) || route.recorder.is_some() {
        return false;
    }
    let Action::Proxy { cluster, .. } = &route.action else { return true };
    let Some(cluster) = snap.clusters.get(*cluster) else { return false };
    let gutter = cluster.config.gutter.as_deref().and_then(|g| snap.config.cluster(g));
    match cluster.config.protocol {
        UpstreamProtocol::Http1 => cluster.tls.is_none() && gutter.is_none_or(|g| g.tls.is_none()),
        UpstreamProtocol::Http2 => {
            let lean_client = |c: &crate::config::ClusterConfig| {
                c.http2_client == crate::config::Http2Client::Lean
            };
            h2_downstream
                && lean_client(&cluster.config)
                && gutter.is_none_or(|g| g.protocol == UpstreamProtocol::Http2 && lean_client(g))
        }
    }
}

/// Where a lean exchange's answer goes: an HTTP/1.1 client socket ([`H1Client`]), or one
/// stream of an HTTP/2 connection (`listen::h2::fast`). The exchange itself — edge, routing,
/// admission, retries, the upstream socket — is the same for both.
pub(crate) trait Downstream {
    /// Whether chunked upstream bodies reach [`send_body`](Self::send_body) decoded (HTTP/2
    /// frames bodies itself) rather than as they came.
    const DECODES_CHUNKS: bool;

    /// Whether response field names reach [`start_response`](Self::start_response) in lower
    /// case (as HTTP/2 requires) rather than as the upstream spelled them.
    const LOWER_CASE_NAMES: bool;

    /// `http` or `https`, for `X-Forwarded-Proto`.
    fn proto(&self) -> &'static [u8];

    /// Whether the request is a gRPC call (its answers are counted and logged by their
    /// `grpc-status`, and the gateway's own are given as one: [`LocalResponse::grpc`]).
    fn grpc(&self) -> bool {
        false
    }

    /// The response is being cut short because the request's time ran out (a gRPC caller is
    /// told so in trailers rather than by a reset).
    fn cut_by_deadline(&mut self) {}

    /// Sends a whole response made by the gateway: `fields`, then `content-length` and
    /// `date`, then the body (none for a `HEAD` request). `out` is scratch space.
    async fn respond_local<'f>(
        &mut self,
        timer: &mut Timer<'_>,
        out: &mut Vec<u8>,
        local: &LocalResponse<'_>,
        fields: impl IntoIterator<Item = (&'f [u8], &'f [u8]), IntoIter: Clone>,
    ) -> Flow;

    /// Passes on an interim (1xx) upstream response; `Err` when the client is gone.
    async fn interim(
        &mut self,
        timer: &mut Timer<'_>,
        buf: &[u8],
        head: &ResponseHead,
        fields: &[Field],
    ) -> Result<(), ()>;

    /// Starts the upstream's final response: its head as the client gets it, written to `out`
    /// to go with the first body bytes, or queued. `Err` when the client cannot take it.
    fn start_response(&mut self, out: &mut Vec<u8>, start: &ResponseStart<'_>) -> Result<(), ()>;

    /// Sends body bytes (after the head left in `out` while `head_pending`); `end` with the
    /// last of them. `Err` when the client is gone or too slow.
    async fn send_body(
        &mut self,
        timer: &mut Timer<'_>,
        out: &mut Vec<u8>,
        head_pending: bool,
        bytes: &[u8],
        end: bool,
    ) -> Result<(), ()>;

    /// Ends a decoded chunked body with its trailer section (the upstream's field lines,
    /// [`super::chunked::trailer_fields`] reads them), after its last bytes went without
    /// `end`. Called only where [`DECODES_CHUNKS`](Self::DECODES_CHUNKS).
    async fn send_trailers(&mut self, timer: &mut Timer<'_>, section: &[u8]) -> Result<(), ()>;

    /// Ends the body with an HTTP/2 upstream's trailer fields, as decoded, after its last
    /// bytes went without `end`. Called only for HTTP/2 upstreams, which only an HTTP/2
    /// downstream takes ([`lean_serves`]).
    async fn send_trailer_fields(
        &mut self,
        timer: &mut Timer<'_>,
        fields: &spillway_h2::Fields,
    ) -> Result<(), ()>;
}

/// A response the gateway makes itself, but for its fields.
pub(crate) struct LocalResponse<'a> {
    pub(crate) status: u16,
    pub(crate) reason: &'a str,
    pub(crate) body: &'a [u8],
    pub(crate) date: &'a [u8],
    pub(crate) head_request: bool,
    /// The client connection closes after it (HTTP/1.1 only).
    pub(crate) close: bool,
    /// What a gRPC caller gets instead (a trailers-only answer), when this is one of the
    /// gateway's own errors or refusals.
    pub(crate) grpc: Option<LocalError>,
}

/// An upstream's final response head, parsed from `buf`, and what the gateway adds to it.
pub(crate) struct ResponseStart<'a> {
    pub(crate) buf: &'a [u8],
    pub(crate) head: &'a ResponseHead,
    pub(crate) fields: &'a [Field],
    /// Added as `x-request-id` when the upstream sent none.
    pub(crate) request_id: Option<&'a [u8]>,
    /// Added as `date` (given only when the upstream sent none).
    pub(crate) date: Option<&'a [u8]>,
    /// The client connection closes after it (HTTP/1.1 only).
    pub(crate) close: bool,
    /// The route's CORS fields.
    pub(crate) decoration: &'a [(http::HeaderName, http::HeaderValue)],
    /// The `grpc-status` the head gives (a trailers-only answer), read for a gRPC call only.
    pub(crate) grpc_status: Option<u32>,
}

/// A request read whole, routed, ready to be served.
pub(crate) struct ReadRequest<'a> {
    pub(crate) snap: &'a Snapshot,
    pub(crate) route: Option<&'a Route>,
    /// Head and body bytes, as HTTP/1.1.
    pub(crate) request: &'a [u8],
    pub(crate) head: &'a RequestHead,
    pub(crate) fields: &'a [Field],
    pub(crate) start: spillway_core::Instant,
    /// The client connection closes after the answer (HTTP/1.1 only).
    pub(crate) close: bool,
}

impl<S: ClientIo> H1Client<'_, S> {
    /// Writes `bytes` to the client within the idle timeout.
    async fn write(&mut self, timer: &mut Timer<'_>, bytes: &[u8]) -> Flow {
        let mut due = Due::after(self.idle_timeout);
        match self.stream.send_all(bytes, timer, &mut due).await {
            Ok(()) => Flow::Sent,
            Err(()) => Flow::Broken,
        }
    }
}

impl<S: ClientIo> Downstream for H1Client<'_, S> {
    const DECODES_CHUNKS: bool = false;
    const LOWER_CASE_NAMES: bool = false;

    fn proto(&self) -> &'static [u8] {
        S::PROTO
    }

    async fn respond_local<'f>(
        &mut self,
        timer: &mut Timer<'_>,
        out: &mut Vec<u8>,
        local: &LocalResponse<'_>,
        fields: impl IntoIterator<Item = (&'f [u8], &'f [u8]), IntoIter: Clone>,
    ) -> Flow {
        out.clear();
        rewrite::write_local_response(
            out,
            local.status,
            local.reason,
            fields,
            local.body,
            local.date,
            local.head_request,
            local.close,
        );
        self.write(timer, out).await
    }

    async fn interim(
        &mut self,
        timer: &mut Timer<'_>,
        buf: &[u8],
        head: &ResponseHead,
        fields: &[Field],
    ) -> Result<(), ()> {
        let mut interim = Vec::with_capacity(head.len + 64);
        rewrite::write_response_head(&mut interim, buf, head, fields, None, None, false, &[]);
        match self.write(timer, &interim).await {
            Flow::Sent => Ok(()),
            Flow::Broken => Err(()),
        }
    }

    fn start_response(&mut self, out: &mut Vec<u8>, start: &ResponseStart<'_>) -> Result<(), ()> {
        out.clear();
        rewrite::write_response_head(
            out,
            start.buf,
            start.head,
            start.fields,
            start.request_id,
            start.date,
            start.close,
            start.decoration,
        );
        Ok(())
    }

    async fn send_body(
        &mut self,
        timer: &mut Timer<'_>,
        out: &mut Vec<u8>,
        head_pending: bool,
        bytes: &[u8],
        _end: bool,
    ) -> Result<(), ()> {
        let mut due = Due::after(self.idle_timeout);
        if head_pending && bytes.len() <= COALESCE_BODY {
            out.extend_from_slice(bytes);
            self.stream.send_all(out, timer, &mut due).await
        } else if head_pending {
            self.stream.send_all(out, timer, &mut due).await?;
            self.stream.send_all(bytes, timer, &mut due).await
        } else if !bytes.is_empty() {
            self.stream.send_all(bytes, timer, &mut due).await
        } else {
            Ok(())
        }
    }

    async fn send_trailers(&mut self, _timer: &mut Timer<'_>, _section: &[u8]) -> Result<(), ()> {
        // HTTP/1.1 clients get chunked bodies as they came, trailers included: never called.
        // Were it called, the response could not be ended right, so the connection closes.
        Err(())
    }

    async fn send_trailer_fields(
        &mut self,
        _timer: &mut Timer<'_>,
        _fields: &spillway_h2::Fields,
    ) -> Result<(), ()> {
        // HTTP/2 upstreams are not served to HTTP/1.1 clients on this path: never called.
        Err(())
    }
}

/// The outcome of a request on the connection.
pub(crate) enum Step {
    /// Answered; close the connection afterwards when `close`.
    Done { close: bool },
    /// Leave the connection to hyper.
    Handoff,
}

/// Whether a response reached the client.
pub(crate) enum Flow {
    Sent,
    Broken,
}

impl Flow {
    fn after(self, close: bool) -> Step {
        match self {
            Flow::Sent => Step::Done { close },
            Flow::Broken => Step::Done { close: true },
        }
    }
}

/// A routed request about to be proxied.
struct Exchange<'a> {
    snap: &'a Snapshot,
    route: &'a Route,
    cluster_index: usize,
    /// Head and body bytes.
    request: &'a [u8],
    head: &'a RequestHead,
    fields: &'a [Field],
    start: spillway_core::Instant,
    close: bool,
    /// Fields the edge adds to the answer (CORS).
    decoration: &'a [(http::HeaderName, http::HeaderValue)],
}

/// What one upstream exchange needs.
pub(super) struct ExchangeIo<'a, 'w> {
    pub(super) addr: SocketAddr,
    /// When the request started (pool ages are judged against it: no clock read).
    pub(super) start: spillway_core::Instant,
    pub(super) connect: Duration,
    pub(super) max_idle: Duration,
    /// The upstream request as HTTP/1.1, head and body; for an HTTP/2 try, the names and
    /// values of its fields (`ufields` holds their spans, `h2` the rest).
    pub(super) request: &'a [u8],
    pub(super) head_request: bool,
    pub(super) idempotent: bool,
    pub(super) deadline: Due,
    pub(super) ubuf: &'a mut Buf,
    pub(super) ufields: &'a mut Vec<Field>,
    pub(super) timer: &'a mut Timer<'w>,
}

/// The upstream end of an exchange whose response head came: a pooled HTTP/1.1 socket (the
/// body follows on it) or an HTTP/2 stream's body.
pub(super) enum Upstream {
    H1(TcpStream),
    H2(crate::upstream::h2_client::H2ResponseBody),
}

/// The request as admission reads it on the lean path: spans into the buffered head.
struct LeanView<'a> {
    head: &'a RequestHead,
    request: &'a [u8],
    fields: &'a [Field],
    peer: std::net::IpAddr,
}

impl crate::policy::classify::RequestView for LeanView<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|f| f.name.of(self.request).eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| f.value.of(self.request))
    }
    fn header_values(&self, name: &str, each: &mut dyn FnMut(&[u8])) {
        for f in self.fields {
            if f.name.of(self.request).eq_ignore_ascii_case(name.as_bytes()) {
                each(f.value.of(self.request));
            }
        }
    }
    fn path(&self) -> &str {
        rewrite::text(self.request, self.head.path)
    }
    fn query(&self) -> Option<&str> {
        rewrite::text(self.request, self.head.target).split_once('?').map(|(_, q)| q)
    }
    fn peer(&self) -> std::net::IpAddr {
        self.peer
    }
    fn body_len(&self) -> Option<u64> {
        Some(self.head.content_length)
    }
}
