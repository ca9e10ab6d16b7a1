//! The two concrete body types of the proxy: what goes upstream ([`ProxyBody`]) and what goes
//! back downstream ([`ResponseBody`]).
//!
//! Concrete enums instead of boxed bodies: no allocation and no dynamic dispatch per request.
//! Bodies stream frame by frame (trailers included, which gRPC needs); nothing is buffered
//! whole. The response body of a proxied request also carries the pooled upstream connection
//! and hands it back to the pool when the body ends, which is when HTTP/1.1 can reuse it.

use crate::record::Capture;
use crate::upstream::h1_client::{ExchangeError, ResponseBodyStream};
use crate::upstream::pool::PooledH1;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// Error of a body in transit.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body as a server hands it to the proxy.
#[derive(Debug)]
pub enum RequestBody {
    /// From hyper's servers (HTTP/1.1 off the lean path, HTTP/2 with `http2_server: hyper`).
    Hyper(Incoming),
    /// A stream of the lean HTTP/2 server (`listen::h2`).
    H2(crate::listen::h2::body::H2Body),
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            RequestBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(BoxError::from),
            RequestBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(BoxError::from),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Hyper(b) => b.is_end_stream(),
            RequestBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Hyper(b) => b.size_hint(),
            RequestBody::H2(b) => b.size_hint(),
        }
    }
}

/// The request body sent upstream.
#[derive(Debug)]
pub enum ProxyBody {
    /// No body.
    Empty,
    /// A downstream body streamed through, cut off with [`BodyTooLarge`] past its limit.
    Incoming {
        /// The downstream body.
        inner: RequestBody,
        /// What the listener's `max_body_bytes` still lets through.
        limit: BodyLimit,
    },
    /// A body teed to a traffic recorder as it streams (see `crate::record`).
    Recorded(Box<TeeBody>),
    /// A streamed body that must have arrived whole by a deadline (`request_limits.
    /// body_timeout`): past it, the body ends with [`BodyTimedOut`].
    Deadline(Box<DeadlineBody>),
    /// A body read in full and kept, so that a retry can send it again (`None` once sent).
    Buffered(Option<Bytes>),
    /// The frames already read from a body of unknown length, then the rest of it (cut off
    /// past its limit, as `Incoming`; the frames read ahead count in it).
    Prefixed {
        /// Frames read ahead.
        frames: std::collections::VecDeque<Frame<Bytes>>,
        /// The rest of the downstream body.
        inner: RequestBody,
        /// What the listener's `max_body_bytes` still lets through.
        limit: BodyLimit,
    },
}

/// How the listener's `max_body_bytes` applies to a streamed request body.
#[derive(Debug, Clone)]
pub enum BodyLimit {
    /// To the whole body: the bytes still allowed.
    Total(u64),
    /// To each message of a gRPC call, however many the stream carries.
    PerMessage(super::grpc::MessageLimit),
}

impl BodyLimit {
    /// The limit `max` for a request body: per message for a gRPC call whose messages are
    /// length-prefixed on the wire (`per_message`), else for the whole.
    pub fn for_request(max: u64, per_message: bool) -> BodyLimit {
        if per_message {
            BodyLimit::PerMessage(super::grpc::MessageLimit::new(max))
        } else {
            BodyLimit::Total(max)
        }
    }

    /// For a per-message limit, its [`refusal`](super::grpc::MessageLimit::refusal).
    pub fn message_refusal(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicBool>> {
        match self {
            BodyLimit::Total(_) => None,
            BodyLimit::PerMessage(messages) => Some(messages.refusal()),
        }
    }

    /// Takes the next piece of the body, or refuses it (and the body) as over the limit.
    fn admit(&mut self, data: &[u8]) -> Result<(), BodyTooLarge> {
        match self {
            BodyLimit::Total(remaining) => {
                let len = data.len() as u64;
                if len > *remaining {
                    return Err(BodyTooLarge);
                }
                *remaining -= len;
                Ok(())
            }
            BodyLimit::PerMessage(messages) => messages.admit(data),
        }
    }

    /// `frame`, or [`BodyTooLarge`] when its data passes the limit.
    fn check(&mut self, frame: Frame<Bytes>) -> Result<Frame<Bytes>, BoxError> {
        match frame.data_ref() {
            Some(data) => match self.admit(data) {
                Ok(()) => Ok(frame),
                Err(e) => Err(Box::new(e)),
            },
            None => Ok(frame),
        }
    }
}

/// A streamed request body with its deadline.
#[derive(Debug)]
pub struct DeadlineBody {
    inner: ProxyBody,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

/// The client did not send the whole body within the route's `request_limits.body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within the route's body timeout")]
pub struct BodyTimedOut;

/// The body would exceed the listener's `max_body_bytes`.
#[derive(Debug, thiserror::Error)]
#[error("request body larger than the configured limit")]
pub struct BodyTooLarge;

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Empty => Poll::Ready(None),
            ProxyBody::Incoming { inner, limit } => match ready!(Pin::new(inner).poll_frame(cx)) {
                Some(Ok(frame)) => Poll::Ready(Some(limit.check(frame))),
                Some(Err(e)) => Poll::Ready(Some(Err(e))),
                None => Poll::Ready(None),
            },
            ProxyBody::Recorded(tee) => Pin::new(&mut **tee).poll_frame(cx),
            ProxyBody::Deadline(timed) => {
                if let Poll::Ready(frame) = Pin::new(&mut timed.inner).poll_frame(cx) {
                    return Poll::Ready(frame);
                }
                ready!(timed.deadline.as_mut().poll(cx));
                Poll::Ready(Some(Err(Box::new(BodyTimedOut))))
            }
            ProxyBody::Buffered(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            ProxyBody::Prefixed { frames, inner, limit } => {
                if let Some(frame) = frames.pop_front() {
                    return Poll::Ready(Some(limit.check(frame)));
                }
                match ready!(Pin::new(inner).poll_frame(cx)) {
                    Some(Ok(frame)) => Poll::Ready(Some(limit.check(frame))),
                    Some(Err(e)) => Poll::Ready(Some(Err(e))),
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Empty => true,
            ProxyBody::Incoming { inner, .. } => inner.is_end_stream(),
            ProxyBody::Recorded(tee) => tee.is_end_stream(),
            ProxyBody::Deadline(timed) => timed.inner.is_end_stream(),
            ProxyBody::Buffered(data) => data.is_none(),
            ProxyBody::Prefixed { frames, inner, .. } => frames.is_empty() && inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Empty => SizeHint::with_exact(0),
            ProxyBody::Incoming { inner, .. } => inner.size_hint(),
            ProxyBody::Recorded(tee) => tee.size_hint(),
            ProxyBody::Deadline(timed) => timed.inner.size_hint(),
            ProxyBody::Buffered(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            ProxyBody::Prefixed { .. } => SizeHint::default(),
        }
    }
}

impl ProxyBody {
    /// A body sending a copy of kept bytes (none for an empty body).
    pub fn kept(bytes: Bytes) -> ProxyBody {
        if bytes.is_empty() {
            ProxyBody::Empty
        } else {
            ProxyBody::Buffered(Some(bytes))
        }
    }

    /// The body, cut off with [`BodyTimedOut`] if it has not ended within `timeout` from now
    /// (a body already in memory, or none, needs no deadline).
    pub fn within(self, timeout: Option<std::time::Duration>) -> ProxyBody {
        match (self, timeout) {
            (body @ (ProxyBody::Empty | ProxyBody::Buffered(_)), _) | (body, None) => body,
            (inner, Some(timeout)) => ProxyBody::Deadline(Box::new(DeadlineBody {
                inner,
                deadline: Box::pin(tokio::time::sleep(timeout)),
            })),
        }
    }

    /// Puts `capture` on the body going upstream: a request without a body is recorded now;
    /// otherwise the body is teed and recorded when it ends or is dropped.
    pub fn teed(self, capture: Capture) -> ProxyBody {
        match self {
            ProxyBody::Empty => ProxyBody::Empty, // `capture` drops here: recorded.
            body => ProxyBody::Recorded(Box::new(TeeBody { inner: body, capture: Some(capture) })),
        }
    }
}

/// A request body on its way upstream with a [`Capture`] copying its first bytes
/// (see `crate::record`).
pub struct TeeBody {
    inner: ProxyBody,
    capture: Option<Capture>,
}

impl std::fmt::Debug for TeeBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeeBody").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl Body for TeeBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            Some(Ok(f)) => {
                if let (Some(capture), Some(data)) = (this.capture.as_mut(), f.data_ref()) {
                    capture.push(data);
                }
                if this.inner.is_end_stream() {
                    drop(this.capture.take());
                }
            }
            Some(Err(_)) | None => drop(this.capture.take()),
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Keeps a downstream connection counted as busy while a request or its response body is in
/// progress (the idle timeout only closes connections with nothing in flight).
pub struct ActiveGuard(std::rc::Rc<crate::proxy::ConnInfo>);

impl ActiveGuard {
    /// Marks one more request in progress on `conn`.
    pub fn new(conn: std::rc::Rc<crate::proxy::ConnInfo>) -> ActiveGuard {
        conn.activity.begin_request();
        ActiveGuard(conn)
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.activity.end_request();
    }
}

// As `UpstreamBody`: the upstream variant is the common one; boxing it would allocate per request.
#[allow(clippy::large_enum_variant)]
enum Kind {
    Full(Option<Bytes>),
    Upstream {
        inner: UpstreamBody,
        conn: Option<PooledH1>,
        /// The request's deadline: the whole response, body included, must be through by then.
        deadline: tokio::time::Instant,
        /// Armed only when the body first has to wait (most bodies never do).
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
        /// A gRPC call's request-message refusal: a cut the gateway makes ends the call with a
        /// `grpc-status` in trailers (see [`ResponseBody::ending_cuts_with_grpc_status`]).
        grpc_refusal: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    },
    /// A body whose copy is kept when it ends cleanly (`stale_on_error`).
    Captured(Box<super::stale::CaptureBody<ResponseBody>>),
}

/// An upstream's response body, from hyper's client or from the HTTP/1.1 client over the
/// lean path's pooled sockets.
// Not boxed: the pooled variant is the common one, and boxing it would allocate per request.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum UpstreamBody {
    /// Through hyper (HTTP/2 and TLS upstreams, upgrades, streamed request bodies).
    Hyper(Incoming),
    /// Read straight from a pooled plain socket.
    Pooled(ResponseBodyStream),
    /// From the lean HTTP/2 client (`upstream::h2_client`).
    H2(crate::upstream::h2_client::H2ResponseBody),
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = ResponseBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        match self.get_mut() {
            UpstreamBody::Hyper(b) => Pin::new(b).poll_frame(cx).map_err(ResponseBodyError::from),
            UpstreamBody::Pooled(b) => Pin::new(b).poll_frame(cx).map_err(ResponseBodyError::from),
            UpstreamBody::H2(b) => Pin::new(b).poll_frame(cx).map_err(ResponseBodyError::from),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper(b) => b.is_end_stream(),
            UpstreamBody::Pooled(b) => b.is_end_stream(),
            UpstreamBody::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Hyper(b) => b.size_hint(),
            UpstreamBody::Pooled(b) => b.size_hint(),
            UpstreamBody::H2(b) => b.size_hint(),
        }
    }
}

/// Why a response body stopped early.
#[derive(Debug, thiserror::Error)]
pub enum ResponseBodyError {
    /// The upstream body broke (hyper's client).
    #[error(transparent)]
    Upstream(#[from] hyper::Error),
    /// The upstream body broke (the HTTP/1.1 client over pooled sockets).
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    /// The upstream stream broke (the lean HTTP/2 client).
    #[error(transparent)]
    H2(#[from] crate::upstream::h2_client::H2ClientError),
    /// The request's timeout passed while the body was still streaming; the response is cut
    /// (HTTP/1.1: the connection closes; HTTP/2: the stream is reset).
    #[error("the request timeout passed while the response body was streaming")]
    Timeout,
}

/// The response body sent downstream: bytes in memory (direct responses, errors) or an
/// upstream body streamed through, whose pooled connection is handed back when it ends.
pub struct ResponseBody {
    kind: Kind,
    active: Option<ActiveGuard>,
    /// A gRPC call's status still to come in the trailers, counted when the body ends.
    grpc_status: Option<super::grpc::PendingStatus>,
}

impl ResponseBody {
    /// A body with these bytes.
    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        ResponseBody { kind: Kind::Full(Some(bytes.into())), active: None, grpc_status: None }
    }

    /// An empty body.
    pub fn empty() -> ResponseBody {
        ResponseBody { kind: Kind::Full(None), active: None, grpc_status: None }
    }

    /// An upstream body; `conn` goes back to its pool once the body has been read to the end.
    /// The body must end by `deadline` (the request's timeout covers the whole response).
    pub fn upstream(
        inner: UpstreamBody,
        conn: Option<PooledH1>,
        deadline: tokio::time::Instant,
    ) -> ResponseBody {
        ResponseBody {
            kind: Kind::Upstream { inner, conn, deadline, timer: None, grpc_refusal: None },
            active: None,
            grpc_status: None,
        }
    }

    /// This body, for a gRPC call: when the gateway cuts it (a request message over the body
    /// limit, the request's time spent), it ends with trailers giving the caller the
    /// `grpc-status` (`grpc::cut_trailers`) rather than with a reset. `message_refused` is the
    /// call's [`MessageLimit::refusal`](super::grpc::MessageLimit::refusal). Only for an answer
    /// without a declared length: ending one early would break its `content-length`.
    pub fn ending_cuts_with_grpc_status(
        mut self,
        message_refused: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> ResponseBody {
        if let Kind::Upstream { grpc_refusal, .. } = &mut self.kind {
            *grpc_refusal = Some(message_refused);
        }
        self
    }

    /// This body, with its bytes (up to `limit`) handed to `on_complete` when it ends cleanly
    /// (a stale copy being kept).
    pub fn captured(
        self,
        limit: u64,
        on_complete: impl FnOnce(Bytes) + Send + 'static,
    ) -> ResponseBody {
        let capture = super::stale::CaptureBody::new(self, limit, on_complete);
        ResponseBody { kind: Kind::Captured(Box::new(capture)), active: None, grpc_status: None }
    }

    /// Counts the gRPC call's status when the body ends (see [`PendingStatus`]).
    ///
    /// [`PendingStatus`]: super::grpc::PendingStatus
    pub fn counting_grpc_status(mut self, pending: super::grpc::PendingStatus) -> ResponseBody {
        self.grpc_status = Some(pending);
        self
    }

    /// Keeps `guard` alive until the body is finished or dropped.
    pub fn tracked(mut self, guard: ActiveGuard) -> ResponseBody {
        self.active = Some(guard);
        self
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Full(b) => f.debug_tuple("Full").field(b).finish(),
            Kind::Upstream { .. } => f.write_str("Upstream"),
            Kind::Captured(_) => f.write_str("Captured"),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = ResponseBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResponseBodyError>>> {
        let this = self.get_mut();
        // A cut the gateway made in a gRPC call, which ends it with trailers instead.
        let mut cut = None;
        let frame = match &mut this.kind {
            Kind::Full(bytes) => bytes.take().map(|b| Ok(Frame::data(b))),
            Kind::Captured(inner) => ready!(Pin::new(&mut **inner).poll_frame(cx)),
            Kind::Upstream { inner, conn, deadline, timer, grpc_refusal } => {
                let frame = match Pin::new(&mut *inner).poll_frame(cx) {
                    Poll::Ready(frame) => frame,
                    Poll::Pending => {
                        let timer = timer
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(*deadline)));
                        ready!(timer.as_mut().poll(cx));
                        // Cut: the connection is in an unknown state, so it is not pooled.
                        conn.take();
                        Some(Err(ResponseBodyError::Timeout))
                    }
                };
                if let (Some(message_refused), Some(Err(e))) = (grpc_refusal.as_deref(), &frame) {
                    cut = super::grpc::cut_of(e, message_refused);
                }
                match &frame {
                    None => {
                        if let Some(c) = conn.take() {
                            c.release();
                        }
                    }
                    Some(Ok(_)) if inner.is_end_stream() => {
                        if let Some(c) = conn.take() {
                            c.release();
                        }
                    }
                    Some(Err(_)) => {
                        // A broken body leaves the connection in an unknown state: drop it.
                        conn.take();
                    }
                    Some(Ok(_)) => {}
                }
                frame
            }
        };
        let frame = match cut {
            Some(cut) => {
                // The upstream's stream goes with its body (reset, not pooled).
                this.kind = Kind::Full(None);
                Some(Ok(Frame::trailers(super::grpc::cut_trailers(cut))))
            }
            None => frame,
        };
        let ended = frame.is_none() || this.is_end_stream();
        if ended {
            this.active.take();
        }
        if let Some(pending) = this.grpc_status.take() {
            match &frame {
                Some(Ok(f)) => match f.trailers_ref() {
                    Some(trailers) => pending.ended_with(trailers),
                    // Ended without trailers (a caller may stop at the last data).
                    None if ended => pending.ended_without_status(),
                    None => this.grpc_status = Some(pending),
                },
                Some(Err(_)) => pending.broke(),
                None => pending.ended_without_status(),
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(b) => b.is_none(),
            Kind::Upstream { inner, .. } => inner.is_end_stream(),
            Kind::Captured(inner) => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Upstream { inner, .. } => inner.size_hint(),
            Kind::Captured(inner) => inner.size_hint(),
        }
    }
}
