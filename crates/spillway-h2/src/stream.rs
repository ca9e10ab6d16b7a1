//! Per-stream state (RFC 9113 §5.1), for the server and the client alike: only
//! client-initiated (odd) streams exist, as neither side pushes.
//!
//! A live [`Stream`] is open or half-closed in either direction; it is dropped once both
//! directions are closed or it is reset. Closed streams leave only a trace in
//! [`RecentlyClosed`], a fixed ring that lets the connection tell "closed, reset by us"
//! (late frames are ignored, §5.4.2) from "closed normally" (frames are STREAM_CLOSED) from
//! "never opened" (an id below the highest seen: PROTOCOL_ERROR, §5.1.1) without keeping
//! state per past stream.

use crate::flow::{RecvWindow, SendWindow};

/// A live stream.
#[derive(Debug)]
pub struct Stream {
    /// Stream identifier (odd).
    pub id: u32,
    /// The peer sent END_STREAM (half-closed remote).
    pub recv_closed: bool,
    /// We sent END_STREAM (half-closed local).
    pub send_closed: bool,
    /// We sent our head: a server its final (non-1xx) response head; a client's request head
    /// opens the stream.
    pub head_sent: bool,
    /// The peer's head arrived: a client's request opens the stream on a server; a client
    /// waits for the final (non-1xx) response head. Later header blocks are trailers.
    pub head_received: bool,
    /// The application knows the stream (so a reset must be reported to it).
    pub delivered: bool,
    /// A client's request was HEAD: a content-length in the response describes no body.
    pub head_request: bool,
    /// Interim (1xx) response heads a client received on the stream.
    pub interim_heads: u8,
    /// Our receive window.
    pub recv: RecvWindow,
    /// The peer's window for us.
    pub send: SendWindow,
    /// Declared request content-length.
    pub content_length: Option<u64>,
    /// DATA payload bytes received.
    pub received: u64,
    /// DATA payload bytes handed to the application and not released yet.
    pub unreleased: u32,
}

impl Stream {
    /// A stream just opened by a request head, with no head sent or received yet as far as
    /// the flags say (the caller sets them).
    pub fn new(id: u32, recv_window: u32, send_window: u32) -> Stream {
        Stream {
            id,
            recv_closed: false,
            send_closed: false,
            head_sent: false,
            head_received: false,
            delivered: false,
            head_request: false,
            interim_heads: 0,
            recv: RecvWindow::new(recv_window, recv_window),
            send: SendWindow::new(send_window),
            content_length: None,
            received: 0,
            unreleased: 0,
        }
    }

    /// Both directions closed.
    pub fn is_closed(&self) -> bool {
        self.recv_closed && self.send_closed
    }
}

/// How a recently closed stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// We sent RST_STREAM: frames may still be in flight and are ignored.
    ResetByUs,
    /// Ended normally or reset by the peer: further frames are STREAM_CLOSED.
    Other,
}

const RING: usize = 16;
const RESET_BIT: u32 = 1 << 31;

/// The last few closed streams and how they closed.
#[derive(Debug, Default)]
pub struct RecentlyClosed {
    ids: [u32; RING],
    next: usize,
}

impl RecentlyClosed {
    /// Records a closed stream.
    pub fn push(&mut self, id: u32, how: Closed) {
        self.ids[self.next] = id | if how == Closed::ResetByUs { RESET_BIT } else { 0 };
        self.next = (self.next + 1) % RING;
    }

    /// How `id` closed, if it is among the recent ones.
    pub fn get(&self, id: u32) -> Option<Closed> {
        self.ids.iter().find(|&&v| v & !RESET_BIT == id && id != 0).map(|&v| {
            if v & RESET_BIT != 0 {
                Closed::ResetByUs
            } else {
                Closed::Other
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_remembers_how_the_last_streams_closed() {
        let mut r = RecentlyClosed::default();
        r.push(1, Closed::Other);
        r.push(3, Closed::ResetByUs);
        assert_eq!(r.get(1), Some(Closed::Other));
        assert_eq!(r.get(3), Some(Closed::ResetByUs));
        assert_eq!(r.get(5), None);
        assert_eq!(r.get(0), None);
        for i in 0..RING as u32 {
            r.push(101 + 2 * i, Closed::Other);
        }
        assert_eq!(r.get(3), None, "forgotten after the ring wraps");
    }
}
