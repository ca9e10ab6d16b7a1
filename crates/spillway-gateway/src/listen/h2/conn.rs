//! The driver of one HTTP/2 connection: one task runs the sans-IO `spillway_h2::Connection`,
//! the socket, and every stream's future.
//!
//! Each turn: read what the socket has into a buffer from the worker's pool (given back as
//! soon as nothing is pending, so an idle connection holds none), feed it to the connection,
//! dispatch its events (new requests become stream futures, DATA and trailers go to the
//! streams' inboxes, resets drop streams, window updates wake blocked senders), poll the
//! stream futures, and write the connection's output — the frames of every stream, in one
//! write. The connection ends when it is closed or went away with no stream left, when the
//! client closes, or on a write error; idle past the listener's `idle_timeout`, or asked to
//! drain, it sends GOAWAY (NO_ERROR) and finishes the streams in flight first. With requests
//! in flight, a client silent for an idle timeout is sent a PING, and dropped if it is still
//! silent one idle timeout later (what hyper's `keep_alive_interval` did on this path).

use super::body::H2Body;
use super::fast;
use super::shared::{ConnShared, StreamShared, OUTPUT_HIGH_WATER};
use super::stream::{self, Cancellable};
use crate::config::ListenerConfig;
use crate::listen::h1::conn::{ClientAddr, LEAN_BODY_LIMIT};
use crate::proxy::body::RequestBody;
use crate::proxy::{ConnInfo, Worker};
use crate::upstream::h2_client::polling_streams_then_sending;
use crate::upstream::h2_write::poll_write_output;
use bytes::BytesMut;
use futures_util::stream::{FuturesUnordered, StreamExt};
use spillway_h2::{Connection, ErrorCode, Event, ServerSettings};
use std::cell::RefCell;
use std::future::Future;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

/// Bytes asked of each socket read: a full frame at the default SETTINGS_MAX_FRAME_SIZE
/// (16 KiB + 9) fits, so the connection's unconsumed tail always fits a fresh buffer.
const READ_SIZE: usize = 32 * 1024;

/// Free read buffers kept per worker thread.
const MAX_FREE_BUFS: usize = 64;

/// Turns a connection runs before yielding to the worker's other tasks.
const TURNS_PER_POLL: usize = 16;

/// How long closing the socket (TLS close_notify) may take.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Longest a client has to acknowledge our SETTINGS (RFC 9113 §6.5.3) before the connection
/// is closed with SETTINGS_TIMEOUT (a client that never does may be ignoring our limits); the
/// listener's header read timeout when shorter.
const SETTINGS_TIMEOUT: Duration = Duration::from_secs(10);

/// Most concurrent streams per connection (what hyper's HTTP/2 server announced).
pub const MAX_CONCURRENT_STREAMS: u32 = 200;

thread_local! {
    /// Each worker thread's free read buffers.
    static FREE_BUFS: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

fn take_buf() -> BytesMut {
    FREE_BUFS.with(|f| f.borrow_mut().pop()).unwrap_or_else(|| BytesMut::with_capacity(READ_SIZE))
}

fn give_buf(buf: BytesMut) {
    if buf.is_empty() && buf.capacity() >= READ_SIZE {
        FREE_BUFS.with(|f| {
            let mut free = f.borrow_mut();
            if free.len() < MAX_FREE_BUFS {
                free.push(buf);
            }
        });
    }
}

/// The settings a listener's HTTP/2 connections announce and enforce.
pub fn settings(config: &ListenerConfig) -> ServerSettings {
    ServerSettings {
        max_concurrent_streams: MAX_CONCURRENT_STREAMS,
        max_header_list_size: config.max_header_bytes.min(u32::MAX as usize) as u32,
        ..ServerSettings::default()
    }
}

/// What ended a connection (for tests and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Closed cleanly: went away (GOAWAY either way) with nothing in flight, or the client
    /// closed.
    Closed,
    /// A connection error (GOAWAY with an error code was sent).
    ProtocolError,
    /// The socket failed.
    Io,
    /// Streams were in flight, and the client answered neither a PING nor anything else for
    /// two idle timeouts (a dead peer).
    Unresponsive,
}

/// Serves one HTTP/2 connection on `io` until it ends. `shutdown` turning true starts a
/// graceful close.
pub async fn serve<I>(
    worker: Rc<Worker>,
    config: &ListenerConfig,
    io: I,
    info: Rc<ConnInfo>,
    shutdown: watch::Receiver<bool>,
) -> Ended
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let shared = Rc::new(ConnShared::new(Connection::new(settings(config))));
    let client = Rc::new(ClientAddr::new(info.peer));
    let mut driver = Driver {
        worker,
        info,
        client,
        shared,
        io,
        rbuf: BytesMut::new(),
        read_closed: false,
        protocol_error: false,
        going_away: false,
        flushed: true,
        idle_timeout: config.idle_timeout,
        last_read: Instant::now(),
        probe_at: None,
        ended: None,
    };
    let mut streams = FuturesUnordered::new();
    let probe = shutdown.clone();
    let mut shutdown = shutdown;
    let mut shutdown_signal = pin!(shutdown.wait_for(|s| *s));
    let mut shutdown_registered = false;
    let mut idle = pin!(tokio::time::sleep(config.idle_timeout));
    let settings_timeout = config.header_read_timeout.min(SETTINGS_TIMEOUT);
    driver.shared.conn.borrow_mut().set_settings_deadline(Instant::now() + settings_timeout);
    let mut settings_timer = pin!(tokio::time::sleep(settings_timeout));
    let mut settings_pending = true;
    let ended = std::future::poll_fn(|cx| {
        driver.shared.signal.driver.register(cx.waker());
        if !driver.going_away {
            if !shutdown_registered || probe.has_changed().unwrap_or(true) {
                shutdown_registered = true;
                if shutdown_signal.as_mut().poll(cx).is_ready() {
                    driver.go_away();
                }
            }
            if settings_pending {
                let acked = driver.shared.conn.borrow().settings_deadline().is_none();
                if acked {
                    settings_pending = false;
                } else if settings_timer.as_mut().poll(cx).is_ready() {
                    settings_pending = false;
                    let mut conn = driver.shared.conn.borrow_mut();
                    if conn.settings_overdue(Instant::now()) {
                        conn.go_away(ErrorCode::SETTINGS_TIMEOUT);
                        driver.protocol_error = true;
                    }
                }
            }
            if idle.as_mut().poll(cx).is_ready() {
                let idle_for = driver.info.activity.idle_for();
                if idle_for >= driver.idle_timeout {
                    driver.go_away();
                } else {
                    // Busy: the timer fires every `idle_timeout` while requests are in flight.
                    driver.keepalive();
                    if let Some(ended) = driver.ended {
                        return Poll::Ready(ended);
                    }
                    let rest = driver.idle_timeout - idle_for;
                    idle.as_mut().reset(tokio::time::Instant::now() + rest);
                    let _ = idle.as_mut().poll(cx);
                }
            }
        }
        for _ in 0..TURNS_PER_POLL {
            let read = driver.poll_read(cx, &mut streams);
            polling_streams_then_sending(|| {
                while let Poll::Ready(Some(())) = streams.poll_next_unpin(cx) {}
            });
            let wrote = driver.poll_write(cx);
            if let Some(ended) = driver.ended {
                return Poll::Ready(ended);
            }
            if !read && !wrote {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
    // Streams still in flight are dropped here (a closed connection cancels them), before the
    // connection they borrow from is.
    drop(streams);
    if ended != Ended::Io && ended != Ended::Unresponsive {
        // TLS sends close_notify here: bounded, for a client that stopped reading.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, driver.io.shutdown()).await;
    }
    give_buf(std::mem::take(&mut driver.rbuf));
    ended
}

/// A connection's I/O side and flags.
struct Driver<I> {
    worker: Rc<Worker>,
    info: Rc<ConnInfo>,
    /// The client's address as the lean exchange logs it.
    client: Rc<ClientAddr>,
    shared: Rc<ConnShared>,
    io: I,
    rbuf: BytesMut,
    read_closed: bool,
    /// `recv` returned a connection error (GOAWAY queued).
    protocol_error: bool,
    going_away: bool,
    /// Everything written was flushed too (TLS keeps records until flushed).
    flushed: bool,
    idle_timeout: Duration,
    /// When the client last sent anything.
    last_read: Instant,
    /// When a liveness PING was sent that nothing has answered yet.
    probe_at: Option<Instant>,
    ended: Option<Ended>,
}

/// A stream's future as the connection runs it.
type StreamFuture = Cancellable<Pin<Box<dyn Future<Output = ()>>>>;

impl<I: AsyncRead + AsyncWrite + Unpin> Driver<I> {
    /// With requests in flight (hyper's HTTP/2 keep-alive, as this path had it): a client
    /// silent for an idle timeout gets a PING; still silent one idle timeout later, the
    /// connection is dropped with what was in flight.
    fn keepalive(&mut self) {
        if let Some(sent) = self.probe_at {
            if self.last_read <= sent {
                self.ended = Some(Ended::Unresponsive);
            }
            self.probe_at = None;
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.last_read) >= self.idle_timeout {
            self.shared.conn.borrow_mut().ping(*b"spillway");
            self.probe_at = Some(now);
        }
    }

    fn go_away(&mut self) {
        self.going_away = true;
        self.shared.conn.borrow_mut().go_away(ErrorCode::NO_ERROR);
    }

    /// One read, fed to the connection and its events dispatched; true if it made progress.
    fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        streams: &mut FuturesUnordered<StreamFuture>,
    ) -> bool {
        if self.read_closed || self.shared.conn.borrow().is_closed() {
            return false;
        }
        // A client that does not read its responses is not read from either.
        if self.shared.conn.borrow().output().len() >= OUTPUT_HIGH_WATER {
            return false;
        }
        if self.rbuf.capacity() == 0 {
            self.rbuf = take_buf();
        } else if self.rbuf.capacity() - self.rbuf.len() < READ_SIZE / 2
            && !self.rbuf.try_reclaim(READ_SIZE / 2)
        {
            // The start of the buffer is still referenced (request body bytes being read).
            self.rbuf.reserve(READ_SIZE);
        }
        let polled = pin!(self.io.read_buf(&mut self.rbuf)).poll(cx);
        match polled {
            Poll::Pending => {
                if self.rbuf.is_empty() {
                    // Nothing pending: the buffer goes back to the pool, whole again if what
                    // was read from it is no longer referenced.
                    let _ = self.rbuf.try_reclaim(READ_SIZE);
                    give_buf(std::mem::take(&mut self.rbuf));
                }
                false
            }
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                // The client is gone: what is in flight is dropped once the output is out.
                self.read_closed = true;
                true
            }
            Poll::Ready(Ok(_)) => {
                self.feed(streams);
                true
            }
        }
    }

    /// Feeds what was read to the connection (DATA payloads stay slices of the read buffer)
    /// and dispatches the events.
    fn feed(&mut self, streams: &mut FuturesUnordered<StreamFuture>) {
        let input = self.rbuf.split().freeze();
        self.last_read = Instant::now();
        let result = self.shared.conn.borrow_mut().recv_bytes(&input, self.last_read);
        match result {
            Ok(used) => {
                if used < input.len() {
                    self.rbuf.extend_from_slice(&input[used..]);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "HTTP/2 connection error");
                self.protocol_error = true;
            }
        }
        self.dispatch(streams);
    }

    /// Hands the connection's events to the streams.
    fn dispatch(&mut self, streams: &mut FuturesUnordered<StreamFuture>) {
        // Requests with a body of undeclared length, decided once this read's events are in.
        let mut undecided = Vec::new();
        loop {
            let event = self.shared.conn.borrow_mut().poll_event();
            let Some(event) = event else { break };
            match event {
                // Complete with its head, or with a small declared body: the lean exchange
                // serves it if it can.
                Event::Request { stream: id, head, end_stream }
                    if end_stream
                        || head.content_length().is_some_and(|n| n <= LEAN_BODY_LIMIT) =>
                {
                    let st = Rc::new(StreamShared::new(id, end_stream));
                    self.shared.streams.borrow_mut().push(st.clone());
                    self.serve_fast(streams, st, head);
                }
                // A body of undeclared length may have come whole in this read (a gRPC unary
                // call's does): its DATA is queued first, and the stream decided after.
                Event::Request { stream: id, head, end_stream }
                    if head.content_length().is_none() =>
                {
                    let st = Rc::new(StreamShared::new(id, end_stream));
                    self.shared.streams.borrow_mut().push(st.clone());
                    undecided.push((st, head));
                }
                Event::Request { stream: id, head, end_stream } => {
                    let st = Rc::new(StreamShared::new(id, end_stream));
                    self.shared.streams.borrow_mut().push(st.clone());
                    self.serve_general(streams, st, head);
                }
                Event::Data { stream: id, data, end_stream } => {
                    if let Some(inbox) = self.shared.stream(id).and_then(|s| s.inbox.clone()) {
                        let mut inbox = inbox.lock();
                        if !inbox.dropped {
                            inbox.push(data, end_stream);
                            continue;
                        }
                        inbox.ended |= end_stream;
                    }
                    // Nobody reads this body any more: its window goes back at once.
                    self.shared.conn.borrow_mut().release_capacity(id, data.len());
                }
                Event::Trailers { stream: id, trailers } => {
                    if let Some(inbox) = self.shared.stream(id).and_then(|s| s.inbox.clone()) {
                        let mut inbox = inbox.lock();
                        if !inbox.dropped {
                            inbox.trailers = Some(stream::trailers(&trailers));
                        }
                        inbox.ended = true;
                        inbox.wake();
                    }
                }
                Event::Reset { stream: id, code } => {
                    if let Some(st) = self.shared.remove_stream(id) {
                        st.on_reset(code);
                    }
                }
                Event::WindowUpdate { .. } => self.shared.wake_senders(),
                Event::GoAway { .. } => {}
            }
        }
        for (st, head) in undecided {
            if st.reset.get() {
                continue;
            }
            let whole = st
                .inbox
                .as_ref()
                .is_some_and(|inbox| fast::whole_body_len(&inbox.lock()).is_some());
            if whole {
                self.serve_fast(streams, st, head);
            } else {
                self.serve_general(streams, st, head);
            }
        }
    }

    /// Serves a request on the lean exchange if it can (`fast`), else on the general path.
    fn serve_fast(
        &self,
        streams: &mut FuturesUnordered<StreamFuture>,
        st: Rc<StreamShared>,
        head: spillway_h2::RequestHead,
    ) {
        let serve: Pin<Box<dyn Future<Output = ()>>> = Box::pin(fast::serve(
            self.worker.clone(),
            self.info.clone(),
            self.client.clone(),
            self.shared.clone(),
            st.id,
            head,
            st.inbox.clone(),
        ));
        streams.push(Cancellable::new(st, self.shared.clone(), serve));
    }

    /// Serves a request on the general path (`proxy::handle`).
    fn serve_general(
        &self,
        streams: &mut FuturesUnordered<StreamFuture>,
        st: Rc<StreamShared>,
        head: spillway_h2::RequestHead,
    ) {
        let id = st.id;
        let signal = self.shared.signal.clone();
        let body = H2Body::new(id, st.inbox.clone(), signal, head.content_length());
        let Ok(req) = stream::request(&head, RequestBody::H2(body)) else {
            self.shared.remove_stream(id);
            self.shared.conn.borrow_mut().reset(id, ErrorCode::PROTOCOL_ERROR);
            return;
        };
        let serve: Pin<Box<dyn Future<Output = ()>>> = Box::pin(stream::serve(
            self.worker.clone(),
            self.info.clone(),
            self.shared.clone(),
            id,
            req,
        ));
        streams.push(Cancellable::new(st, self.shared.clone(), serve));
    }

    /// Writes (and flushes) the connection's output; true if some was written. Decides when
    /// the connection has ended.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> bool {
        self.shared.apply_releases();
        let wrote = match poll_write_output(&self.shared.conn, &mut self.io, cx, &mut self.flushed)
        {
            Ok(wrote) => wrote,
            Err(_) => {
                self.ended = Some(Ended::Io);
                return true;
            }
        };
        let conn = self.shared.conn.borrow();
        let pending = conn.output().len();
        if wrote && pending < OUTPUT_HIGH_WATER && self.shared.has_send_waiters() {
            drop(conn);
            self.shared.wake_senders();
        } else if pending == 0 && self.flushed {
            if conn.wants_close() {
                self.ended =
                    Some(if self.protocol_error { Ended::ProtocolError } else { Ended::Closed });
            } else if self.read_closed {
                self.ended = Some(Ended::Closed);
            }
        }
        wrote
    }
}
