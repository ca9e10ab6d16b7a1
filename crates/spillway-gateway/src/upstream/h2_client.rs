//! The lean HTTP/2 client for HTTP/2 upstreams (gRPC): one local task per upstream
//! connection, on `spillway_h2::ClientConnection`, instead of hyper's client.
//!
//! hyper's HTTP/2 client runs a task per connection, hands every request through an mpsc
//! channel, and pipes each request body in a task of its own. Here the request's own future
//! writes the request head straight into the connection (a `RefCell`, never borrowed across an
//! await) and wakes the connection task; that task owns the socket (plain TCP or TLS), reads
//! and feeds the connection, pumps every request's [`ProxyBody`] itself within the send
//! windows, and writes all streams' frames once per turn. The response head goes to the
//! waiting request future through the stream's `Exchange`; the body and trailers are queued
//! there too and read by [`H2ResponseBody`] (the `UpstreamBody::H2` variant), which returns
//! the window to the connection as the downstream takes the bytes — a slow downstream holds
//! the upstream stream by flow control, with at most one stream window queued.
//!
//! Cancellation: a request future dropped before its head, or a response body dropped before
//! its end, resets the upstream stream with CANCEL. A stream the server refused unprocessed
//! (GOAWAY below it, REFUSED_STREAM) fails with [`H2ClientError::Refused`], which the proxy
//! sends once more on another connection.

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
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWrite};

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
    /// The response head, once it came (taken by the request future).
    head: Option<Response<()>>,
    /// The failure, before or after the head.
    error: Option<H2ClientError>,
    /// Response body bytes not read yet.
    data: VecDeque<Bytes>,
    /// Response trailers, once they came.
    trailers: Option<HeaderMap>,
    /// The response ended (END_STREAM or trailers).
    ended: bool,
    /// The request future or the response body waiting on this exchange.
    waiter: Option<Waker>,
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
    id: u32,
    exchange: Rc<RefCell<Exchange>>,
    /// The request body still to send (`None` once ended).
    body: Option<ProxyBody>,
    /// Polled from the body, not sent yet.
    chunk: Bytes,
    /// Trailers polled from the body, sent after `chunk`.
    trailers: Option<HeaderMap>,
}

/// One upstream HTTP/2 connection's shared state.
struct ConnState {
    conn: RefCell<ClientConnection>,
    slots: RefCell<Vec<Slot>>,
    /// The connection task's waker.
    task: RefCell<Option<Waker>>,
    /// Streams whose request future or response body went away: reset with CANCEL.
    cancelled: RefCell<Vec<u32>>,
    /// Response bytes the downstream took: returned to the windows.
    released: RefCell<Vec<(u32, usize)>>,
    /// The task has ended (connection closed or failed).
    dead: Cell<bool>,
    /// The pool dropped the connection: close once no stream is live.
    retired: Cell<bool>,
}

impl ConnState {
    fn wake_task(&self) {
        if let Some(w) = self.task.borrow().as_ref() {
            w.wake_by_ref();
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
            slots: RefCell::new(Vec::new()),
            task: RefCell::new(None),
            cancelled: RefCell::new(Vec::new()),
            released: RefCell::new(Vec::new()),
            dead: Cell::new(false),
            retired: Cell::new(false),
        });
        let task_state = state.clone();
        tokio::task::spawn_local(async move {
            match pool::connect(addr, tls.as_deref(), connect_timeout).await {
                Ok(io) => {
                    let driver = Driver {
                        state: task_state,
                        io,
                        rbuf: BytesMut::new(),
                        read_closed: false,
                        flushed: true,
                    };
                    driver.run().await;
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
        let state = &self.state;
        if state.dead.get() {
            return Err(H2ClientError::Refused);
        }
        let (parts, body) = req.into_parts();
        let end_stream = body.is_end_stream();
        let id = {
            let scheme = parts.uri.scheme_str().unwrap_or("http");
            let authority = parts.uri.authority().map_or("", |a| a.as_str());
            let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let line = RequestLine {
                method: parts.method.as_str().as_bytes(),
                scheme: scheme.as_bytes(),
                authority: authority.as_bytes(),
                path: path.as_bytes(),
            };
            let fields = HeaderFields(&parts.headers);
            let sent = state.conn.borrow_mut().send_request(line, fields, end_stream);
            match sent {
                Ok(id) => id,
                Err(RequestError::NoCapacity) => return Err(H2ClientError::NoCapacity),
                Err(RequestError::GoingAway | RequestError::ConnectionClosed) => {
                    return Err(H2ClientError::Refused)
                }
                Err(e) => return Err(H2ClientError::Request(e)),
            }
        };
        let exchange = Rc::new(RefCell::new(Exchange::default()));
        state.slots.borrow_mut().push(Slot {
            id,
            exchange: exchange.clone(),
            body: (!end_stream).then_some(body),
            chunk: Bytes::new(),
            trailers: None,
        });
        state.wake_task();
        // Dropped before the head: the stream is reset.
        let mut guard = CancelGuard { state: state.clone(), id, armed: true };
        let head = poll_fn(|cx| {
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
        .await;
        guard.armed = false;
        let head = head?;
        let content_length = head
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        let body = H2ResponseBody { state: state.clone(), exchange, id, content_length };
        Ok(head.map(|()| crate::proxy::body::UpstreamBody::H2(body)))
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

impl Body for H2ResponseBody {
    type Data = Bytes;
    type Error = H2ClientError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H2ClientError>>> {
        let this = self.get_mut();
        let mut ex = this.exchange.borrow_mut();
        if let Some(data) = ex.data.pop_front() {
            drop(ex);
            this.state.released.borrow_mut().push((this.id, data.len()));
            this.state.wake_task();
            if let Some(n) = this.content_length.as_mut() {
                *n = n.saturating_sub(data.len() as u64);
            }
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(e) = ex.error.take() {
            ex.ended = true;
            return Poll::Ready(Some(Err(e)));
        }
        if let Some(trailers) = ex.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if ex.ended {
            return Poll::Ready(None);
        }
        ex.waiter = Some(cx.waker().clone());
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let ex = self.exchange.borrow();
        ex.ended && ex.data.is_empty() && ex.trailers.is_none() && ex.error.is_none()
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
    let mut map = HeaderMap::with_capacity(fields.len());
    for (n, v) in fields.iter() {
        let name = HeaderName::from_bytes(n).map_err(|_| H2ClientError::BadResponseField)?;
        let value = HeaderValue::from_bytes(v).map_err(|_| H2ClientError::BadResponseField)?;
        map.append(name, value);
    }
    Ok(map)
}

/// The connection task.
struct Driver {
    state: Rc<ConnState>,
    io: UpstreamStream,
    rbuf: BytesMut,
    read_closed: bool,
    flushed: bool,
}

impl Driver {
    async fn run(mut self) {
        poll_fn(|cx| self.poll_turn(cx)).await;
        self.state.dead.set(true);
        let why = if self.state.conn.borrow().is_closed() {
            "protocol error"
        } else {
            "connection closed"
        };
        self.fail_all(why);
    }

    /// One turn: cancellations and releases, reads, request bodies, one write.
    fn poll_turn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        {
            let mut task = self.state.task.borrow_mut();
            if !task.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *task = Some(cx.waker().clone());
            }
        }
        loop {
            self.apply_cancels_and_releases();
            let read = self.poll_read(cx);
            let pumped = self.pump_bodies(cx);
            let wrote = match self.poll_write(cx) {
                Some(w) => w,
                None => return Poll::Ready(()),
            };
            if self.finished() {
                return Poll::Ready(());
            }
            if !read && !pumped && !wrote {
                return Poll::Pending;
            }
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
        let cancelled = std::mem::take(&mut *self.state.cancelled.borrow_mut());
        let released = std::mem::take(&mut *self.state.released.borrow_mut());
        let mut conn = self.state.conn.borrow_mut();
        for (id, n) in released {
            conn.release_capacity(id, n);
        }
        for id in cancelled {
            conn.reset(id, ErrorCode::CANCEL);
            self.state.slots.borrow_mut().retain(|s| s.id != id);
        }
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
        self.state.slots.borrow().iter().find(|s| s.id == id).map(|s| s.exchange.clone())
    }

    fn remove_slot(&self, id: u32) {
        self.state.slots.borrow_mut().retain(|s| s.id != id);
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
                    match fields_to_headers(&head.fields) {
                        Ok(headers) => {
                            let mut resp = Response::new(());
                            *resp.status_mut() = StatusCode::from_u16(head.status)
                                .unwrap_or(StatusCode::BAD_GATEWAY);
                            *resp.version_mut() = Version::HTTP_2;
                            *resp.headers_mut() = headers;
                            ex.head = Some(resp);
                            ex.ended = end_stream;
                        }
                        Err(e) => {
                            ex.error = Some(e);
                            drop(ex);
                            self.state.conn.borrow_mut().reset(stream, ErrorCode::PROTOCOL_ERROR);
                            self.remove_slot(stream);
                            self.wake(stream);
                            continue;
                        }
                    }
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
                    match fields_to_headers(&trailers) {
                        Ok(t) => ex.trailers = Some(t),
                        Err(e) => ex.error = Some(e),
                    }
                    ex.ended = true;
                    ex.wake();
                    drop(ex);
                    self.finish_recv(stream);
                }
                ClientEvent::Reset { stream, code } => {
                    let Some(ex) = self.slot_exchange(stream) else { continue };
                    self.remove_slot(stream);
                    let mut ex = ex.borrow_mut();
                    // After a complete response a reset only stops the request body.
                    if !(ex.ended && code == ErrorCode::NO_ERROR) {
                        ex.error = Some(H2ClientError::Reset(code));
                    }
                    ex.wake();
                }
                ClientEvent::Refused { stream } => {
                    let Some(ex) = self.slot_exchange(stream) else { continue };
                    self.remove_slot(stream);
                    let mut ex = ex.borrow_mut();
                    ex.error = Some(H2ClientError::Refused);
                    ex.wake();
                }
                ClientEvent::WindowUpdate { .. } | ClientEvent::GoAway { .. } => {}
            }
        }
    }

    /// The response ended: the slot goes once the request is sent too.
    fn finish_recv(&self, stream: u32) {
        if !self.state.conn.borrow().is_live(stream) {
            self.remove_slot(stream);
        }
    }

    fn wake(&self, stream: u32) {
        if let Some(ex) = self.slot_exchange(stream) {
            ex.borrow_mut().wake();
        }
    }

    /// Polls request bodies and sends what the windows allow; true if something was sent.
    fn pump_bodies(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        let mut slots = self.state.slots.borrow_mut();
        let mut conn = self.state.conn.borrow_mut();
        let mut failed: Vec<(u32, H2ClientError)> = Vec::new();
        for slot in slots.iter_mut() {
            loop {
                if conn.output().len() >= OUTPUT_HIGH_WATER {
                    break;
                }
                if !slot.chunk.is_empty() {
                    let last = slot.body.is_none() && slot.trailers.is_none();
                    match conn.send_data(slot.id, &slot.chunk, last) {
                        Ok(0) => break,
                        Ok(n) => {
                            let _ = slot.chunk.split_to(n);
                            progress = true;
                            if !slot.chunk.is_empty() {
                                break;
                            }
                            if last {
                                break;
                            }
                        }
                        Err(_) => {
                            slot.body = None;
                            slot.chunk = Bytes::new();
                            slot.trailers = None;
                            break;
                        }
                    }
                    continue;
                }
                if let Some(t) = slot.trailers.take() {
                    let _ = conn.send_trailers(slot.id, HeaderFields(&t));
                    progress = true;
                    break;
                }
                let Some(body) = slot.body.as_mut() else { break };
                if conn.send_capacity(slot.id) == 0 {
                    break;
                }
                match Pin::new(body).poll_frame(cx) {
                    Poll::Pending => break,
                    Poll::Ready(None) => {
                        slot.body = None;
                        let _ = conn.send_data(slot.id, &[], true);
                        progress = true;
                        break;
                    }
                    Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) => {
                            if slot.body.as_ref().is_some_and(|b| b.is_end_stream()) {
                                slot.body = None;
                                if data.is_empty() {
                                    let _ = conn.send_data(slot.id, &[], true);
                                    progress = true;
                                    break;
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
                        conn.reset(slot.id, ErrorCode::CANCEL);
                        failed.push((slot.id, H2ClientError::RequestBody(e)));
                        break;
                    }
                }
            }
        }
        drop(conn);
        for (id, e) in failed {
            if let Some(i) = slots.iter().position(|s| s.id == id) {
                let slot = slots.swap_remove(i);
                let mut ex = slot.exchange.borrow_mut();
                ex.error = Some(e);
                ex.wake();
            }
        }
        // Slots whose stream is gone both ways are done.
        let conn = self.state.conn.borrow();
        slots.retain(|s| conn.is_live(s.id));
        progress
    }

    /// Writes (and flushes) the connection's output: `Some(wrote)`, or `None` on an I/O error.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Option<bool> {
        let mut wrote = false;
        loop {
            let conn = self.state.conn.borrow();
            let out = conn.output();
            if out.is_empty() {
                break;
            }
            match Pin::new(&mut self.io).poll_write(cx, out) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    drop(conn);
                    self.state.conn.borrow_mut().consumed(n);
                    self.flushed = false;
                    wrote = true;
                }
                Poll::Ready(_) => return None,
                Poll::Pending => break,
            }
        }
        if !self.flushed {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.flushed = true,
                Poll::Ready(Err(_)) => return None,
                Poll::Pending => {}
            }
        }
        Some(wrote)
    }

    fn fail_all(&self, why: &'static str) {
        fail_all(&self.state, || H2ClientError::ConnectionLost(why));
    }

    fn fail_all_with(&self, error: impl Fn() -> H2ClientError) {
        fail_all(&self.state, error);
    }
}

/// Fails every exchange still waiting on a connection.
fn fail_all(state: &ConnState, error: impl Fn() -> H2ClientError) {
    let slots = std::mem::take(&mut *state.slots.borrow_mut());
    for slot in slots {
        let mut ex = slot.exchange.borrow_mut();
        if !ex.ended {
            ex.error = Some(error());
        }
        ex.wake();
    }
}
