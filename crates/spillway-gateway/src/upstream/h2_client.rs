//! The lean HTTP/2 client for HTTP/2 upstreams (gRPC): one local task per upstream
//! connection, on `spillway_h2::ClientConnection`, instead of hyper's client.
//!
//! hyper's HTTP/2 client runs a task per connection, hands every request through an mpsc
//! channel, and pipes each request body in a task of its own. Here the request's own future
//! writes the request head straight into the connection (a `RefCell`, never borrowed across an
//! await) and wakes the connection task; that task owns the socket (plain TCP or TLS), reads
//! and feeds the connection, pumps the request bodies ([`ProxyBody`]) itself within the send
//! windows, and writes all streams' frames once per turn. Streams are kept by id (a hash map,
//! no scans), and a turn pumps only the bodies that have news: a new request, a body whose own
//! waker fired (each body is polled with a waker naming its stream, made on its first
//! `Pending`), or a window or the output that opened again. The response head goes to the
//! waiting request future through the stream's `Exchange`; the body and trailers are queued
//! there too and read by [`H2ResponseBody`] (the `UpstreamBody::H2` variant), which returns
//! the window to the connection as the downstream takes the bytes (waking the connection task
//! only when that queued a WINDOW_UPDATE) — a slow downstream holds the upstream stream by
//! flow control, with at most one stream window queued.
//!
//! Cancellation: a request future dropped before its head, or a response body dropped before
//! its end, resets the upstream stream with CANCEL. A stream the server refused unprocessed
//! (GOAWAY below it, REFUSED_STREAM) fails with [`H2ClientError::Refused`], which the proxy
//! sends once more on another connection.
//!
//! Early writes: streams a downstream HTTP/2 connection opens while it polls its streams are
//! written at the end of that poll, on its task ([`polling_streams_then_sending`]), unless the
//! worker is saturated.

use super::h2_write::poll_write_output;
use crate::proxy::body::ProxyBody;
use crate::upstream::pool::{self, UpstreamError};
use crate::upstream::tls::{UpstreamStream, UpstreamTls};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use spillway_h2::{
    ClientConnection, ClientEvent, ClientSettings, ErrorCode, Fields, H2Error, RequestError,
    RequestLine,
};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::future::{poll_fn, Future};
use std::hash::{BuildHasherDefault, Hasher};
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;
use std::time::Instant;
use tokio::io::AsyncReadExt;

/// Read buffer size of a connection.
const READ_SIZE: usize = 32 * 1024;

/// Request bodies are not pumped while the unwritten output holds more than this.
const OUTPUT_HIGH_WATER: usize = 256 * 1024;

/// Why an exchange on the lean HTTP/2 client failed.
#[derive(Debug, thiserror::Error)]
pub enum H2ClientError {
    /// The server did not process the stream (GOAWAY below it, REFUSED_STREAM, or the
    /// connection takes no new streams): safe to send again on another connection.
    #[error("the upstream refused the stream unprocessed")]
    Refused,
    /// As many streams are open as the server allows (the pool opens another connection).
    #[error("no stream capacity on the upstream connection")]
    NoCapacity,
    /// The server reset the stream (or we did, after it broke the protocol on it).
    #[error("the upstream reset the stream ({0})")]
    Reset(ErrorCode),
    /// The connection failed: protocol error, I/O error or closed by the server.
    #[error("the upstream connection was lost ({0})")]
    ConnectionLost(&'static str),
    /// The connection broke the protocol.
    #[error("upstream HTTP/2 protocol error: {0}")]
    Protocol(H2Error),
    /// The request head could not be sent.
    #[error("request not sendable over HTTP/2: {0}")]
    Request(RequestError),
    /// A response field is not valid for `http` (control characters).
    #[error("invalid field in the upstream response")]
    BadResponseField,
    /// Reading the downstream request body failed (too large, timed out, client gone).
    #[error("request body: {0}")]
    RequestBody(crate::proxy::body::BoxError),
    /// The connection could not be made (no request was sent).
    #[error("connect failed: {message}")]
    Connect {
        /// The connect timeout passed.
        timeout: bool,
        /// What the socket said.
        kind: std::io::ErrorKind,
        /// The error, for logs.
        message: String,
    },
}

impl H2ClientError {
    /// The proxy's view of this failure on `addr`.
    pub fn into_upstream(self, addr: SocketAddr) -> UpstreamError {
        match self {
            H2ClientError::Connect { timeout: true, .. } => UpstreamError::ConnectTimeout(addr),
            H2ClientError::Connect { kind, message, .. } => {
                UpstreamError::Connect(addr, std::io::Error::new(kind, message))
            }
            other => UpstreamError::H2(addr, other),
        }
    }

    /// The request body's own failure (too large, timed out), if that is what this is.
    pub fn request_body_error(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            H2ClientError::RequestBody(e) => Some(&**e),
            _ => None,
        }
    }
}

/// What the request future, the response body and the connection task share about one
/// stream.
#[derive(Default)]
struct Exchange {
    /// The response head as it came, once it came (taken by the request future).
    head: Option<spillway_h2::ResponseHead>,
    /// The failure, before or after the head.
    error: Option<H2ClientError>,
    /// Response body bytes not read yet.
    data: Chunks,
    /// Response trailers as they came, once they came.
    trailers: Option<Fields>,
    /// The response ended (END_STREAM or trailers).
    ended: bool,
    /// The request future or the response body waiting on this exchange.
    waiter: Option<Waker>,
}

/// Response body chunks not read yet: the first one inline (a unary call's response is one
/// chunk: no allocation), later ones in a deque.
#[derive(Default)]
struct Chunks {
    first: Option<Bytes>,
    rest: VecDeque<Bytes>,
}

impl Chunks {
    fn push_back(&mut self, chunk: Bytes) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(chunk);
        } else {
            self.rest.push_back(chunk);
        }
    }

    fn pop_front(&mut self) -> Option<Bytes> {
        self.first.take().or_else(|| self.rest.pop_front())
    }

    fn is_empty(&self) -> bool {
        self.first.is_none() && self.rest.is_empty()
    }
}

impl Exchange {
    fn wake(&mut self) {
        if let Some(w) = self.waiter.take() {
            w.wake();
        }
    }
}

/// A stream the connection task pumps.
struct Slot {
    exchange: Rc<RefCell<Exchange>>,
    /// The request body still to send (`None` once ended).
    body: Option<ProxyBody>,
    /// Polled from the body, not sent yet.
    chunk: Bytes,
    /// Trailers polled from the body, sent after `chunk`.
    trailers: Option<HeaderMap>,
    /// The waker the body is polled with once it was pending (names this stream).
    body_waker: Option<(Arc<BodyWake>, Waker)>,
}

/// Hashes stream ids (odd and sequential) with one multiplication: the slot map's hasher.
#[derive(Default, Clone, Copy)]
struct StreamIdHasher(u64);

impl Hasher for StreamIdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type SlotMap = HashMap<u32, Slot, BuildHasherDefault<StreamIdHasher>>;

/// Request bodies that woke, by stream (shared with their wakers, which must be `Send`).
#[derive(Default)]
struct BodyWakes {
    streams: Mutex<Vec<u32>>,
    /// The connection task's waker.
    task: Mutex<Option<Waker>>,
}

/// The waker of one stream's request body: queues the stream once and wakes the task.
struct BodyWake {
    stream: u32,
    queued: AtomicBool,
    wakes: Arc<BodyWakes>,
}

impl Wake for BodyWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.queued.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Ok(mut streams) = self.wakes.streams.lock() {
            streams.push(self.stream);
        }
        if let Some(task) = self.wakes.task.lock().ok().as_ref().and_then(|t| t.as_ref()) {
            task.wake_by_ref();
        }
    }
}

/// One upstream HTTP/2 connection's shared state.
struct ConnState {
    conn: RefCell<ClientConnection>,
    slots: RefCell<SlotMap>,
    /// Streams whose request body may move on: new requests, windows that grew, output
    /// drained (bodies that woke come through `body_wakes`).
    runnable: RefCell<Vec<u32>>,
    body_wakes: Arc<BodyWakes>,
    /// The connection task's waker.
    task: RefCell<Option<Waker>>,
    /// Streams whose request future or response body went away: reset with CANCEL.
    cancelled: RefCell<Vec<u32>>,
    /// Response bytes the downstream took while the connection was borrowed: returned to the
    /// windows by the task.
    released: RefCell<Vec<(u32, usize)>>,
    /// The connection is finished: its task ended (closed or failed), or a write run early
    /// failed (the task then ends at its next poll).
    dead: Cell<bool>,
    /// The pool dropped the connection: close once no stream is live.
    retired: Cell<bool>,
    /// The connection task's driver, for writes run early by [`polling_streams_then_sending`].
    driver: RefCell<Weak<RefCell<Driver>>>,
}

/// The upstream connections given new streams while a downstream connection polls its streams.
#[derive(Default)]
struct NewStreams {
    /// Inside [`polling_streams_then_sending`].
    collecting: bool,
    /// Each connection once (a turn opens streams on one or two).
    conns: Vec<Rc<ConnState>>,
}

thread_local! {
    static NEW_STREAMS: RefCell<NewStreams> = RefCell::new(NewStreams::default());
}

/// Runs `poll_streams` (a downstream connection polling its stream futures), then the sending
/// half of a turn of each upstream connection those futures gave new streams, on the caller's
/// task: their frames leave now, rather than after every other ready task of the worker has
/// run, so the upstream works on them while the worker reads its other downstream connections.
/// The write registers the connection task's own waker for the socket, so the task goes on as
/// if it had written them itself. Not while the worker is saturated (`listen::busy`): then the
/// connection task's one write per round of the worker coalesces more, which is what keeps a
/// saturated worker's throughput. Streams opened outside such a call (the HTTP/1.1 listener's
/// exchanges, one per connection task) wait for the connection task as before.
pub fn polling_streams_then_sending<R>(poll_streams: impl FnOnce() -> R) -> R {
    let started = NEW_STREAMS
        .try_with(|n| !std::mem::replace(&mut n.borrow_mut().collecting, true))
        .unwrap_or(false);
    let result = poll_streams();
    if !started {
        return result;
    }
    let mut conns = NEW_STREAMS
        .try_with(|n| {
            let mut n = n.borrow_mut();
            n.collecting = false;
            std::mem::take(&mut n.conns)
        })
        .unwrap_or_default();
    // A saturated worker coalesces: its connection tasks write once per round of the worker.
    if !conns.is_empty() && !crate::listen::busy::thread_saturated() {
        for state in &conns {
            send_early(state);
        }
    }
    conns.clear();
    // The list's allocation serves the next turn.
    let _ = NEW_STREAMS.try_with(|n| n.borrow_mut().conns = conns);
    result
}

/// The sending half of a turn of `state`'s connection, on the caller's task; a socket error
/// ends the connection (its task, woken, sees `dead` and fails what is left).
fn send_early(state: &ConnState) {
    if state.dead.get() {
        return;
    }
    let Some(driver) = state.driver.borrow().upgrade() else { return };
    let Some(waker) = state.task.borrow().clone() else { return };
    let Ok(mut driver) = driver.try_borrow_mut() else { return };
    if driver.poll_send(&mut Context::from_waker(&waker)).is_ready() {
        state.dead.set(true);
        waker.wake();
    }
}

impl ConnState {
    fn wake_task(&self) {
        if let Some(w) = self.task.borrow().as_ref() {
            w.wake_by_ref();
        }
    }

    /// Returns `n` response bytes of `stream` the downstream took to the windows; wakes the
    /// task only if that queued a frame to write.
    fn release(&self, stream: u32, n: usize) {
        match self.conn.try_borrow_mut() {
            Ok(mut conn) => {
                let before = conn.output().len();
                conn.release_capacity(stream, n);
                let grew = conn.output().len() > before;
                drop(conn);
                if grew {
                    self.wake_task();
                }
            }
            Err(_) => {
                self.released.borrow_mut().push((stream, n));
                self.wake_task();
            }
        }
    }
}

/// A handle on one upstream HTTP/2 connection (the pool keeps these).
pub struct H2Connection {
    state: Rc<ConnState>,
}

impl Drop for H2Connection {
    fn drop(&mut self) {
        self.state.retired.set(true);
        self.state.wake_task();
    }
}

impl H2Connection {
    /// Starts the connection task on the current worker: it connects to `addr` (TLS through
    /// `tls`) within `connect_timeout`, then runs the connection. Requests may be sent at
    /// once; they go out when the connection is up, or fail with [`H2ClientError::Connect`].
    pub fn start(
        addr: SocketAddr,
        tls: Option<Arc<UpstreamTls>>,
        connect_timeout: Duration,
    ) -> H2Connection {
        let state = Rc::new(ConnState {
            conn: RefCell::new(ClientConnection::new(ClientSettings::default())),
            slots: RefCell::new(SlotMap::default()),
            runnable: RefCell::new(Vec::new()),
            body_wakes: Arc::new(BodyWakes::default()),
            task: RefCell::new(None),
            cancelled: RefCell::new(Vec::new()),
            released: RefCell::new(Vec::new()),
            dead: Cell::new(false),
            retired: Cell::new(false),
            driver: RefCell::new(Weak::new()),
        });
        let task_state = state.clone();
        tokio::task::spawn_local(async move {
            match pool::connect(addr, tls.as_deref(), connect_timeout).await {
                Ok(io) => {
                    let driver = Rc::new(RefCell::new(Driver {
                        state: task_state.clone(),
                        io,
                        rbuf: BytesMut::new(),
                        read_closed: false,
                        flushed: true,
                        window_blocked: Vec::new(),
                        output_blocked: Vec::new(),
                        scratch: Vec::new(),
                    }));
                    *task_state.driver.borrow_mut() = Rc::downgrade(&driver);
                    Driver::run(&driver, &task_state).await;
                }
                Err(e) => {
                    task_state.dead.set(true);
                    let timeout = matches!(e, UpstreamError::ConnectTimeout(_));
                    let (kind, message) = match &e {
                        UpstreamError::Connect(_, io) => (io.kind(), io.to_string()),
                        _ => (std::io::ErrorKind::TimedOut, e.to_string()),
                    };
                    fail_all(&task_state, || H2ClientError::Connect {
                        timeout,
                        kind,
                        message: message.clone(),
                    });
                }
            }
        });
        H2Connection { state }
    }

    /// Whether a request may go on this connection now.
    pub fn can_open(&self) -> bool {
        !self.state.dead.get() && self.state.conn.borrow().can_open()
    }

    /// Whether the connection is finished with (closed, failed, or going away).
    pub fn is_done(&self) -> bool {
        let conn = self.state.conn.borrow();
        self.state.dead.get() || conn.is_closed() || conn.goaway_received()
    }

    /// Live streams.
    pub fn active_streams(&self) -> usize {
        self.state.conn.borrow().active_streams()
    }

    /// Sends `req` (absolute URI with scheme and authority, or a `host`-less path) and waits
    /// for the response head; the body streams through the returned response.
    pub async fn send(
        &self,
        req: Request<ProxyBody>,
    ) -> Result<Response<crate::proxy::body::UpstreamBody>, H2ClientError> {
        let (parts, body) = req.into_parts();
        let scheme = parts.uri.scheme_str().unwrap_or("http");
        let authority = parts.uri.authority().map_or("", |a| a.as_str());
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let line = RequestLine {
            method: parts.method.as_str().as_bytes(),
            scheme: scheme.as_bytes(),
            authority: authority.as_bytes(),
            path: path.as_bytes(),
        };
        let (id, exchange) = self.open(line, HeaderFields(&parts.headers), body)?;
        let mut guard = CancelGuard { state: self.state.clone(), id, armed: true };
        let head = self.head(&exchange).await?;
        // A field `http` refuses: the guard resets the stream.
        let headers = fields_to_headers(&head.fields)?;
        guard.armed = false;
        let mut resp = Response::new(());
        *resp.status_mut() = StatusCode::from_u16(head.status).unwrap_or(StatusCode::BAD_GATEWAY);
        *resp.version_mut() = Version::HTTP_2;
        *resp.headers_mut() = headers;
        let body = self.body(exchange, id, head.content_length);
        Ok(resp.map(|()| crate::proxy::body::UpstreamBody::H2(body)))
    }

    /// Sends a request given as its pseudo-fields `line` and its regular `fields` (lower-case
    /// names, nothing HTTP/2 forbids: the codec refuses the request otherwise) and waits for
    /// the response head, handed over as it came: the lean exchange's way, with no `http`
    /// types (`listen::h1::conn`).
    pub async fn send_fields<'f, F>(
        &self,
        line: RequestLine<'_>,
        fields: F,
        body: ProxyBody,
    ) -> Result<(spillway_h2::ResponseHead, H2ResponseBody), H2ClientError>
    where
        F: IntoIterator<Item = (&'f [u8], &'f [u8])> + Clone,
    {
        let (id, exchange) = self.open(line, fields, body)?;
        let mut guard = CancelGuard { state: self.state.clone(), id, armed: true };
        let head = self.head(&exchange).await?;
        guard.armed = false;
        let body = self.body(exchange, id, head.content_length);
        Ok((head, body))
    }

    /// Opens a stream for the request and hands its body to the connection task.
    fn open<'f, F>(
        &self,
        line: RequestLine<'_>,
        fields: F,
        body: ProxyBody,
    ) -> Result<(u32, Rc<RefCell<Exchange>>), H2ClientError>
    where
        F: IntoIterator<Item = (&'f [u8], &'f [u8])> + Clone,
    {
        let state = &self.state;
        if state.dead.get() {
            return Err(H2ClientError::Refused);
        }
        let end_stream = body.is_end_stream();
        let id = match state.conn.borrow_mut().send_request(line, fields, end_stream) {
            Ok(id) => id,
            Err(RequestError::NoCapacity) => return Err(H2ClientError::NoCapacity),
            Err(RequestError::GoingAway | RequestError::ConnectionClosed) => {
                return Err(H2ClientError::Refused)
            }
            Err(e) => return Err(H2ClientError::Request(e)),
        };
        let exchange = Rc::new(RefCell::new(Exchange::default()));
        state.slots.borrow_mut().insert(
            id,
            Slot {
                exchange: exchange.clone(),
                body: (!end_stream).then_some(body),
                chunk: Bytes::new(),
                trailers: None,
                body_waker: None,
            },
        );
        if !end_stream {
            state.runnable.borrow_mut().push(id);
        }
        state.wake_task();
        let _ = NEW_STREAMS.try_with(|n| {
            let mut n = n.borrow_mut();
            if n.collecting && !n.conns.iter().any(|c| Rc::ptr_eq(c, state)) {
                n.conns.push(state.clone());
            }
        });
        Ok((id, exchange))
    }

    /// Waits for the response head of `exchange` (the caller's guard resets the stream if
    /// this future is dropped first).
    async fn head(
        &self,
        exchange: &RefCell<Exchange>,
    ) -> Result<spillway_h2::ResponseHead, H2ClientError> {
        poll_fn(|cx| {
            let mut ex = exchange.borrow_mut();
            if let Some(head) = ex.head.take() {
                return Poll::Ready(Ok(head));
            }
            if let Some(e) = ex.error.take() {
                return Poll::Ready(Err(e));
            }
            ex.waiter = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }

    fn body(
        &self,
        exchange: Rc<RefCell<Exchange>>,
        id: u32,
        content_length: Option<u64>,
    ) -> H2ResponseBody {
        H2ResponseBody { state: self.state.clone(), exchange, id, content_length }
    }
}

/// Resets the stream when the request future is dropped before its response head.
struct CancelGuard {
    state: Rc<ConnState>,
    id: u32,
    armed: bool,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if self.armed {
            self.state.cancelled.borrow_mut().push(self.id);
            self.state.wake_task();
        }
    }
}

/// A response body from the lean HTTP/2 client (see the module doc).
pub struct H2ResponseBody {
    state: Rc<ConnState>,
    exchange: Rc<RefCell<Exchange>>,
    id: u32,
    content_length: Option<u64>,
}

impl std::fmt::Debug for H2ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2ResponseBody").field("stream", &self.id).finish_non_exhaustive()
    }
}

/// What an upstream HTTP/2 response body hands over next, as it came.
#[derive(Debug)]
pub enum Piece {
    /// Body bytes (their window is given back as they are handed over).
    Data(Bytes),
    /// The trailer fields, which end the body.
    Trailers(Fields),
}

impl H2ResponseBody {
    /// The next piece of the body, `None` at its end: the lean exchange's reading, with the
    /// trailers as the codec decoded them.
    // Always: `poll_frame` calls it for every frame of every streamed message (a call of its
    // own measured ~70 Ir per message).
    #[inline(always)]
    pub fn poll_piece(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Piece, H2ClientError>>> {
        let mut ex = self.exchange.borrow_mut();
        if let Some(data) = ex.data.pop_front() {
            drop(ex);
            self.state.release(self.id, data.len());
            if let Some(n) = self.content_length.as_mut() {
                *n = n.saturating_sub(data.len() as u64);
            }
            return Poll::Ready(Some(Ok(Piece::Data(data))));
        }
        if let Some(e) = ex.error.take() {
            ex.ended = true;
            return Poll::Ready(Some(Err(e)));
        }
        if let Some(trailers) = ex.trailers.take() {
            return Poll::Ready(Some(Ok(Piece::Trailers(trailers))));
        }
        if ex.ended {
            return Poll::Ready(None);
        }
        ex.waiter = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Whether nothing more will come (no bytes, trailers or failure left to hand over).
    pub fn is_end_stream(&self) -> bool {
        let ex = self.exchange.borrow();
        ex.ended && ex.data.is_empty() && ex.trailers.is_none() && ex.error.is_none()
    }
}

impl Body for H2ResponseBody {
    type Data = Bytes;
    type Error = H2ClientError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H2ClientError>>> {
        let this = self.get_mut();
        match this.poll_piece(cx) {
            Poll::Ready(Some(Ok(Piece::Data(data)))) => Poll::Ready(Some(Ok(Frame::data(data)))),
            Poll::Ready(Some(Ok(Piece::Trailers(fields)))) => {
                Poll::Ready(Some(fields_to_headers(&fields).map(Frame::trailers)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        H2ResponseBody::is_end_stream(self)
    }

    fn size_hint(&self) -> SizeHint {
        match self.content_length {
            Some(n) => SizeHint::with_exact(n),
            None if self.is_end_stream() => SizeHint::with_exact(0),
            None => SizeHint::default(),
        }
    }
}

impl Drop for H2ResponseBody {
    fn drop(&mut self) {
        let ex = self.exchange.borrow();
        if !ex.ended || !ex.data.is_empty() {
            // Unread bytes go back with the reset (the connection returns them).
            self.state.cancelled.borrow_mut().push(self.id);
            self.state.wake_task();
        }
    }
}

/// A header map as the `(name, value)` byte pairs `spillway_h2` encodes (walked twice).
/// Connection-specific fields, which HTTP/2 forbids, are left out (and `te` unless it is
/// `trailers`), as hyper's client does.
#[derive(Clone, Copy)]
struct HeaderFields<'a>(&'a HeaderMap);

type FieldPair<'a> = (&'a [u8], &'a [u8]);

fn as_field<'a>((n, v): (&'a HeaderName, &'a HeaderValue)) -> FieldPair<'a> {
    (n.as_str().as_bytes(), v.as_bytes())
}

fn allowed_in_h2(&(n, v): &FieldPair<'_>) -> bool {
    match n {
        b"connection" | b"proxy-connection" | b"keep-alive" | b"transfer-encoding" | b"upgrade"
        | b"host" => false,
        b"te" => v.eq_ignore_ascii_case(b"trailers"),
        _ => true,
    }
}

impl<'a> IntoIterator for HeaderFields<'a> {
    type Item = FieldPair<'a>;
    type IntoIter = std::iter::Filter<
        std::iter::Map<
            http::header::Iter<'a, HeaderValue>,
            fn((&'a HeaderName, &'a HeaderValue)) -> FieldPair<'a>,
        >,
        fn(&FieldPair<'a>) -> bool,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter().map(as_field as fn(_) -> _).filter(allowed_in_h2 as fn(&_) -> bool)
    }
}

fn fields_to_headers(fields: &Fields) -> Result<HeaderMap, H2ClientError> {
    let mut map = HeaderMap::with_capacity(fields.len() + crate::proxy::headers::ADDED_FIELDS);
    crate::proxy::headers::append_wire_fields(fields, &mut map)
        .map_err(|_| H2ClientError::BadResponseField)?;
    Ok(map)
}

/// The connection task.
struct Driver {
    state: Rc<ConnState>,
    io: UpstreamStream,
    rbuf: BytesMut,
    read_closed: bool,
    flushed: bool,
    /// Streams with request bytes waiting for a send window (pumped again on WINDOW_UPDATE).
    window_blocked: Vec<u32>,
    /// Streams that stopped while the output was above `OUTPUT_HIGH_WATER`.
    output_blocked: Vec<u32>,
    /// The stream list being pumped (kept to reuse its allocation).
    scratch: Vec<u32>,
}

/// Where pumping one request body stopped.
enum Pumped {
    /// Waiting for its body (its waker), or done.
    Waiting,
    /// Bytes in hand, no send window.
    WindowBlocked,
    /// The connection's output is full.
    OutputBlocked,
    /// The body failed: the stream was reset.
    Failed(H2ClientError),
}

impl Driver {
    /// The connection task: turns until the connection is finished (a write run early by
    /// [`polling_streams_then_sending`] may be the one that finds it so), then fails what is left.
    async fn run(driver: &RefCell<Driver>, state: &ConnState) {
        poll_fn(|cx| {
            // A write run early failed.
            if state.dead.get() {
                return Poll::Ready(());
            }
            match driver.try_borrow_mut() {
                Ok(mut driver) => driver.poll_turn(cx),
                Err(_) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            }
        })
        .await;
        state.dead.set(true);
        let why =
            if state.conn.borrow().is_closed() { "protocol error" } else { "connection closed" };
        fail_all(state, || H2ClientError::ConnectionLost(why));
    }

    /// One turn: cancellations and releases, reads, request bodies with news, one write.
    fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        {
            let mut task = self.state.task.borrow_mut();
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
                if let Ok(mut t) = self.state.body_wakes.task.lock() {
                    *t = Some(cx.waker().clone());
                }
            }
        }
        loop {
            self.apply_cancels_and_releases();
            let read = self.poll_read(cx);
            let pumped = self.pump_bodies();
            let wrote = match self.poll_write(cx) {
                Some(w) => w,
                None => return Poll::Ready(()),
            };
            let unblocked = self.unblock_output();
            if self.finished() {
                return Poll::Ready(());
            }
            if !read && !pumped && !wrote && !unblocked && self.state.runnable.borrow().is_empty() {
                return Poll::Pending;
            }
        }
    }

    /// The sending half of a turn, run early by [`polling_streams_then_sending`]: request
    /// bodies with news are pumped and the output written; reading is left to the task, which
    /// was woken too. Ready when the socket failed (the task then ends the connection).
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.pump_bodies();
        match self.poll_write(cx) {
            Some(_) => Poll::Pending,
            None => Poll::Ready(()),
        }
    }

    fn finished(&self) -> bool {
        let conn = self.state.conn.borrow();
        if !conn.output().is_empty() || !self.flushed {
            return false;
        }
        conn.wants_close()
            || self.read_closed
            || (self.state.retired.get() && conn.active_streams() == 0)
    }

    fn apply_cancels_and_releases(&mut self) {
        if !self.state.released.borrow().is_empty() {
            let released = std::mem::take(&mut *self.state.released.borrow_mut());
            let mut conn = self.state.conn.borrow_mut();
            for (id, n) in released {
                conn.release_capacity(id, n);
            }
        }
        if !self.state.cancelled.borrow().is_empty() {
            let cancelled = std::mem::take(&mut *self.state.cancelled.borrow_mut());
            let mut conn = self.state.conn.borrow_mut();
            let mut slots = self.state.slots.borrow_mut();
            for id in cancelled {
                conn.reset(id, ErrorCode::CANCEL);
                slots.remove(&id);
            }
        }
        let mut conn = self.state.conn.borrow_mut();
        if self.state.retired.get() && conn.active_streams() == 0 && !conn.is_closed() {
            conn.go_away(ErrorCode::NO_ERROR);
        }
    }

    /// One read fed to the connection and its events dispatched; true if it made progress.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> bool {
        if self.read_closed || self.state.conn.borrow().is_closed() {
            return false;
        }
        if self.rbuf.capacity() - self.rbuf.len() < READ_SIZE / 2
            && !self.rbuf.try_reclaim(READ_SIZE)
        {
            self.rbuf.reserve(READ_SIZE);
        }
        let polled = pin!(self.io.read_buf(&mut self.rbuf)).poll(cx);
        match polled {
            Poll::Pending => false,
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                self.read_closed = true;
                true
            }
            Poll::Ready(Ok(_)) => {
                let input = self.rbuf.split().freeze();
                let result = self.state.conn.borrow_mut().recv_bytes(&input, Instant::now());
                match result {
                    Ok(used) => {
                        if used < input.len() {
                            self.rbuf.extend_from_slice(&input[used..]);
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "upstream HTTP/2 connection error");
                        self.dispatch();
                        self.fail_all_with(|| H2ClientError::Protocol(e));
                        return true;
                    }
                }
                self.dispatch();
                true
            }
        }
    }

    fn slot_exchange(&self, id: u32) -> Option<Rc<RefCell<Exchange>>> {
        self.state.slots.borrow().get(&id).map(|s| s.exchange.clone())
    }

    fn remove_slot(&self, id: u32) {
        self.state.slots.borrow_mut().remove(&id);
    }

    /// Hands the connection's events to the exchanges.
    fn dispatch(&mut self) {
        loop {
            let event = self.state.conn.borrow_mut().poll_event();
            let Some(event) = event else { break };
            match event {
                ClientEvent::Response { stream, head, end_stream } => {
                    let Some(ex) = self.slot_exchange(stream) else {
                        continue;
                    };
                    let mut ex = ex.borrow_mut();
                    ex.head = Some(head);
                    ex.ended = end_stream;
                    ex.wake();
                    if end_stream {
                        drop(ex);
                        self.finish_recv(stream);
                    }
                }
                ClientEvent::Data { stream, data, end_stream } => {
                    let Some(ex) = self.slot_exchange(stream) else {
                        self.state.conn.borrow_mut().release_capacity(stream, data.len());
                        continue;
                    };
                    let mut ex = ex.borrow_mut();
                    if !data.is_empty() {
                        ex.data.push_back(data);
                    }
                    ex.ended |= end_stream;
                    ex.wake();
                    if end_stream {
                        drop(ex);
                        self.finish_recv(stream);
                    }
                }
                ClientEvent::Trailers { stream, trailers } => {
                    let Some(ex) = self.slot_exchange(stream) else { continue };
                    let mut ex = ex.borrow_mut();
                    ex.trailers = Some(trailers);
                    ex.ended = true;
                    ex.wake();
                    drop(ex);
                    self.finish_recv(stream);
                }
                ClientEvent::Reset { stream, code } => {
                    let Some(slot) = self.state.slots.borrow_mut().remove(&stream) else {
                        continue;
                    };
                    let mut ex = slot.exchange.borrow_mut();
                    // After a complete response a reset only stops the request body.
                    if !(ex.ended && code == ErrorCode::NO_ERROR) {
                        ex.error = Some(H2ClientError::Reset(code));
                    }
                    ex.wake();
                }
                ClientEvent::Refused { stream } => {
                    let Some(slot) = self.state.slots.borrow_mut().remove(&stream) else {
                        continue;
                    };
                    let mut ex = slot.exchange.borrow_mut();
                    ex.error = Some(H2ClientError::Refused);
                    ex.wake();
                }
                ClientEvent::WindowUpdate { .. } => {
                    if !self.window_blocked.is_empty() {
                        self.state.runnable.borrow_mut().append(&mut self.window_blocked);
                    }
                }
                ClientEvent::GoAway { .. } => {}
            }
        }
    }

    /// The response ended: the slot goes once the request is sent too.
    fn finish_recv(&self, stream: u32) {
        if !self.state.conn.borrow().is_live(stream) {
            self.remove_slot(stream);
        }
    }

    /// Pumps the request bodies with news (new, woken, or unblocked) and sends what the
    /// windows allow; true if something was sent.
    fn pump_bodies(&mut self) -> bool {
        let scratch = &mut self.scratch;
        std::mem::swap(scratch, &mut *self.state.runnable.borrow_mut());
        if let Ok(mut woken) = self.state.body_wakes.streams.lock() {
            scratch.append(&mut woken);
        }
        if scratch.is_empty() {
            return false;
        }
        let mut progress = false;
        let mut slots = self.state.slots.borrow_mut();
        let mut conn = self.state.conn.borrow_mut();
        for &id in scratch.iter() {
            let Some(slot) = slots.get_mut(&id) else { continue };
            match pump(&mut conn, id, slot, &self.state.body_wakes, &mut progress) {
                Pumped::Waiting => {}
                Pumped::WindowBlocked => self.window_blocked.push(id),
                Pumped::OutputBlocked => self.output_blocked.push(id),
                Pumped::Failed(e) => {
                    if let Some(slot) = slots.remove(&id) {
                        let mut ex = slot.exchange.borrow_mut();
                        ex.error = Some(e);
                        ex.wake();
                    }
                    continue;
                }
            }
            // A stream gone both ways is done.
            if !conn.is_live(id) {
                slots.remove(&id);
            }
        }
        scratch.clear();
        progress
    }

    /// Streams that stopped on a full output go on once it drained; true if there were any.
    fn unblock_output(&mut self) -> bool {
        if self.output_blocked.is_empty()
            || self.state.conn.borrow().output().len() >= OUTPUT_HIGH_WATER
        {
            return false;
        }
        self.state.runnable.borrow_mut().append(&mut self.output_blocked);
        true
    }

    /// Writes (and flushes) the connection's output: `Some(wrote)`, or `None` on an I/O error.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Option<bool> {
        poll_write_output(&self.state.conn, &mut self.io, cx, &mut self.flushed).ok()
    }

    fn fail_all_with(&self, error: impl Fn() -> H2ClientError) {
        fail_all(&self.state, error);
    }
}

/// Moves one stream's request body into the connection as far as the windows and the output
/// allow (`progress` is set if something was sent).
fn pump(
    conn: &mut ClientConnection,
    id: u32,
    slot: &mut Slot,
    wakes: &Arc<BodyWakes>,
    progress: &mut bool,
) -> Pumped {
    if let Some((wake, _)) = &slot.body_waker {
        wake.queued.store(false, Ordering::Release);
    }
    loop {
        if slot.chunk.is_empty() && slot.trailers.is_none() && slot.body.is_none() {
            return Pumped::Waiting;
        }
        if conn.output().len() >= OUTPUT_HIGH_WATER {
            return Pumped::OutputBlocked;
        }
        if !slot.chunk.is_empty() {
            let last = slot.body.is_none() && slot.trailers.is_none();
            match conn.send_data(id, &slot.chunk, last) {
                Ok(0) => return Pumped::WindowBlocked,
                Ok(n) => {
                    let _ = slot.chunk.split_to(n);
                    *progress = true;
                    if !slot.chunk.is_empty() {
                        return Pumped::WindowBlocked;
                    }
                }
                Err(_) => {
                    slot.body = None;
                    slot.chunk = Bytes::new();
                    slot.trailers = None;
                    return Pumped::Waiting;
                }
            }
            continue;
        }
        if let Some(t) = slot.trailers.take() {
            let _ = conn.send_trailers(id, HeaderFields(&t));
            *progress = true;
            return Pumped::Waiting;
        }
        let Some(body) = slot.body.as_mut() else { return Pumped::Waiting };
        if conn.send_capacity(id) == 0 {
            return Pumped::WindowBlocked;
        }
        let polled = match &slot.body_waker {
            Some((_, waker)) => Pin::new(body).poll_frame(&mut Context::from_waker(waker)),
            None => {
                // A body that has its bytes in hand (a unary call's) needs no waker of its
                // own: one is made the first time the body is pending, and it is polled again
                // with it.
                let first =
                    Pin::new(&mut *body).poll_frame(&mut Context::from_waker(Waker::noop()));
                if first.is_pending() {
                    let wake = Arc::new(BodyWake {
                        stream: id,
                        queued: AtomicBool::new(false),
                        wakes: wakes.clone(),
                    });
                    let waker = Waker::from(wake.clone());
                    let again = Pin::new(body).poll_frame(&mut Context::from_waker(&waker));
                    slot.body_waker = Some((wake, waker));
                    again
                } else {
                    first
                }
            }
        };
        match polled {
            Poll::Pending => return Pumped::Waiting,
            Poll::Ready(None) => {
                slot.body = None;
                let _ = conn.send_data(id, &[], true);
                *progress = true;
                return Pumped::Waiting;
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    if slot.body.as_ref().is_some_and(|b| b.is_end_stream()) {
                        slot.body = None;
                        if data.is_empty() {
                            let _ = conn.send_data(id, &[], true);
                            *progress = true;
                            return Pumped::Waiting;
                        }
                    }
                    slot.chunk = data;
                }
                Err(frame) => {
                    slot.body = None;
                    slot.trailers = Some(frame.into_trailers().unwrap_or_default());
                }
            },
            Poll::Ready(Some(Err(e))) => {
                slot.body = None;
                conn.reset(id, ErrorCode::CANCEL);
                return Pumped::Failed(H2ClientError::RequestBody(e));
            }
        }
    }
}

/// Fails every exchange still waiting on a connection.
fn fail_all(state: &ConnState, error: impl Fn() -> H2ClientError) {
    let slots = std::mem::take(&mut *state.slots.borrow_mut());
    for (_, slot) in slots {
        let mut ex = slot.exchange.borrow_mut();
        if !ex.ended {
            ex.error = Some(error());
        }
        ex.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_come_out_in_the_order_they_went_in() {
        let mut chunks = Chunks::default();
        assert!(chunks.is_empty());
        chunks.push_back(Bytes::from_static(b"a"));
        chunks.push_back(Bytes::from_static(b"b"));
        assert_eq!(chunks.pop_front().as_deref(), Some(&b"a"[..]));
        // The inline slot is free again while "b" waits in the deque: "c" must queue after it.
        chunks.push_back(Bytes::from_static(b"c"));
        assert_eq!(chunks.pop_front().as_deref(), Some(&b"b"[..]));
        assert!(!chunks.is_empty());
        assert_eq!(chunks.pop_front().as_deref(), Some(&b"c"[..]));
        assert!(chunks.is_empty());
        assert_eq!(chunks.pop_front(), None);
    }

    /// Frame types and stream ids of the whole frames in `bytes`.
    fn frames(mut bytes: &[u8]) -> Vec<(u8, u32)> {
        let mut out = Vec::new();
        while bytes.len() >= 9 {
            let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
            let id = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff;
            out.push((bytes[3], id));
            bytes = &bytes[(9 + len).min(bytes.len())..];
        }
        out
    }

    #[test]
    fn a_request_opened_while_a_downstream_connection_polls_leaves_before_the_task_runs() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let conn = H2Connection::start(addr, None, Duration::from_secs(5));
            let (server, _) = listener.accept().await.unwrap();
            // Let the connection task write its preface and settings; the server drains them.
            let mut opening = Vec::new();
            while opening.len() < 24 + 9 {
                server.readable().await.unwrap();
                let mut buf = [0u8; 4096];
                match server.try_read(&mut buf) {
                    Ok(n) => opening.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("{e}"),
                }
            }
            for _ in 0..8 {
                tokio::task::yield_now().await;
            }
            let mut buf = [0u8; 4096];
            while server.try_read(&mut buf).is_ok_and(|n| n > 0) {}

            let line = RequestLine {
                method: b"POST",
                scheme: b"http",
                authority: b"upstream",
                path: b"/test.Echo/Say",
            };
            let fields = [(&b"content-type"[..], &b"application/grpc"[..])];
            let body = ProxyBody::kept(Bytes::from_static(b"\0\0\0\0\x05hello"));
            let mut send = pin!(conn.send_fields(line, fields, body));
            polling_streams_then_sending(|| {
                let polled = send.as_mut().poll(&mut Context::from_waker(Waker::noop()));
                assert!(polled.is_pending());
            });
            // No await since: the connection task has not run. A blocking read (this thread
            // cannot run the task meanwhile) must find the request's frames already sent.
            let mut server = server.into_std().unwrap();
            server.set_nonblocking(false).unwrap();
            server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut wire = Vec::new();
            while !frames(&wire).contains(&(0x0, 1)) {
                let n = std::io::Read::read(&mut server, &mut buf)
                    .expect("the request's frames were not written during the poll");
                assert!(n > 0, "connection closed");
                wire.extend_from_slice(&buf[..n]);
            }
            assert!(frames(&wire).contains(&(0x1, 1)), "HEADERS of stream 1 first");
        });
    }

    #[test]
    fn response_fields_become_a_header_map_and_bad_ones_are_refused() {
        let mut fields = Fields::new();
        fields.push(b"content-type", b"application/grpc");
        fields.push(b"grpc-status", b"0");
        fields.push(b"grpc-message", b"not found");
        fields.push(b"x-custom", b"1");
        fields.push(b"x-custom", b"2");
        let map = fields_to_headers(&fields).unwrap();
        assert_eq!(map["content-type"], "application/grpc");
        assert_eq!(map["grpc-status"], "0");
        assert_eq!(map["grpc-message"], "not found");
        let custom: Vec<_> = map.get_all("x-custom").iter().collect();
        assert_eq!(custom, ["1", "2"]);

        let mut bad = Fields::new();
        bad.push(b"x-bad", b"a\x01b");
        assert!(matches!(fields_to_headers(&bad), Err(H2ClientError::BadResponseField)));
    }
}
