//! The request body of one HTTP/2 stream as the proxy reads it.
//!
//! The driver pushes the stream's DATA and trailers into its inbox
//! ([`super::shared::Inbox`]) and wakes the reader. Each DATA payload handed to the proxy is
//! given back to the flow-control windows at once (`release_capacity`), and the driver is woken
//! to write the WINDOW_UPDATE: the client may send about one window ahead of what the proxy
//! has taken. A client reset ends the body with [`StreamReset`]. A dropped body returns what
//! it had not read, and DATA arriving after that is released by the driver on arrival.

use super::shared::{SharedInbox, Signal};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// The client reset the stream while its body was being read.
#[derive(Debug, thiserror::Error)]
#[error("the client reset the HTTP/2 stream ({0})")]
pub struct StreamReset(pub spillway_h2::ErrorCode);

/// One stream's request body (see the module doc).
pub struct H2Body {
    stream: u32,
    /// `None`: the request has no body.
    inbox: Option<SharedInbox>,
    signal: Arc<Signal>,
    /// Bytes the declared content-length still expects (`None` if none was declared).
    remaining: Option<u64>,
}

impl std::fmt::Debug for H2Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Body").field("stream", &self.stream).finish_non_exhaustive()
    }
}

impl H2Body {
    /// The body of `stream`, with the request's declared content-length.
    pub fn new(
        stream: u32,
        inbox: Option<SharedInbox>,
        signal: Arc<Signal>,
        content_length: Option<u64>,
    ) -> H2Body {
        H2Body { stream, inbox, signal, remaining: content_length }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = StreamReset;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, StreamReset>>> {
        let this = self.get_mut();
        let Some(inbox) = &this.inbox else { return Poll::Ready(None) };
        let mut inbox = inbox.lock();
        if let Some(code) = inbox.reset {
            return Poll::Ready(Some(Err(StreamReset(code))));
        }
        if let Some(data) = inbox.data.pop_front() {
            drop(inbox);
            this.signal.release(this.stream, data.len());
            if let Some(r) = this.remaining.as_mut() {
                *r = r.saturating_sub(data.len() as u64);
            }
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if let Some(trailers) = inbox.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        if inbox.ended {
            return Poll::Ready(None);
        }
        if !inbox.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            inbox.reader = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        let Some(inbox) = &self.inbox else { return true };
        let inbox = inbox.lock();
        inbox.reset.is_none() && inbox.ended && inbox.data.is_empty() && inbox.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None if self.is_end_stream() => SizeHint::with_exact(0),
            None => SizeHint::default(),
        }
    }
}

impl Drop for H2Body {
    fn drop(&mut self) {
        let Some(inbox) = &self.inbox else { return };
        let mut inbox = inbox.lock();
        inbox.dropped = true;
        inbox.reader = None;
        let unread: usize = inbox.data.drain(..).map(|d| d.len()).sum();
        drop(inbox);
        if unread > 0 {
            self.signal.release(self.stream, unread);
        }
    }
}
