//! The server side of one HTTP/2 connection as a state machine: bytes in, events and bytes
//! out (RFC 9113).
//!
//! The driver owns the socket and the read buffer. [`Connection::recv`] takes the bytes read
//! so far and returns how many it consumed (whole frames only; the rest stays with the
//! driver); what the peer did comes out of [`Connection::poll_event`]. The application answers
//! with [`Connection::send_response`], [`Connection::send_data`], [`Connection::send_trailers`]
//! and [`Connection::reset`]; every frame — answers, ACKs, WINDOW_UPDATEs, RST_STREAMs,
//! GOAWAY — is appended to one output buffer that the driver writes and acknowledges with
//! [`Connection::consumed`], so frames of many streams leave in one write.
//!
//! Protocol errors are answered as the RFC says: a stream error with RST_STREAM (and a
//! [`Event::Reset`] if the application knew the stream), a connection error with GOAWAY and
//! an `Err` from `recv`, after which the driver flushes the output and closes.
//!
//! Protections: client resets, and our resets of streams the client broke, are counted per
//! time window (rapid reset, CVE-2023-44487; reset flood, CVE-2019-9514) and too many end the
//! connection with ENHANCE_YOUR_CALM; a header block is capped in bytes and in CONTINUATION
//! frames (CONTINUATION flood); SETTINGS and PING ACKs waiting in an undrained output are
//! capped (ACK flood, CVE-2019-9512/9515); empty DATA frames in a row are capped (CVE-2019-9518).
//!
//! What the client side does alike (frames, SETTINGS, windows, streams, output) lives in the
//! crate's shared endpoint module; this one adds what a server does: requests, refusing
//! streams beyond its limit, the reset budget, and the response head.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::endpoint::{
    self, conn_err, stream_err, Endpoint, Limits, Role, RoleFrame, Side, StreamEvent,
};
use crate::error::{ErrorCode, H2Error};
use crate::frame::{Frame, DEFAULT_MAX_FRAME_SIZE};
use crate::head::{Fields, HeadBuilder, RequestHead};
use crate::hpack;
use crate::stream::{Closed, Stream};

/// The client connection preface (§3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The initial window of every stream and of the connection (§6.9.2).
pub const DEFAULT_WINDOW: u32 = 65_535;

/// What this server announces and enforces. Every default is a deliberate value, see each
/// field.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// SETTINGS_MAX_CONCURRENT_STREAMS; streams beyond it are refused with REFUSED_STREAM.
    /// Default 100 (the RFC's recommended minimum, and what HAProxy and nginx announce).
    pub max_concurrent_streams: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE: each request body may be this far ahead of the
    /// application. Default 256 KiB: large uploads are not stalled by round trips on a LAN,
    /// yet 100 streams cannot pin more than the connection window.
    pub initial_window_size: u32,
    /// The connection receive window. Default 1 MiB.
    pub connection_window_size: u32,
    /// SETTINGS_MAX_FRAME_SIZE we accept. Default 16 KiB (the RFC minimum): the driver's read
    /// buffer then never needs more than 16 KiB + 9.
    pub max_frame_size: u32,
    /// SETTINGS_HEADER_TABLE_SIZE for the decoder. Default 4096 (the RFC default).
    pub header_table_size: u32,
    /// Ceiling of the encoder's dynamic table. Default 4096.
    pub encoder_table_size: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE: larger request heads get a 431. Default 16 KiB.
    pub max_header_list_size: u32,
    /// Cap on the compressed bytes of one header block (HEADERS + CONTINUATION): beyond it,
    /// GOAWAY ENHANCE_YOUR_CALM. Default 64 KiB.
    pub max_header_block_bytes: u32,
    /// Cap on the CONTINUATION frames of one header block. Default 32.
    pub max_continuation_frames: u32,
    /// Cap on SETTINGS/PING ACKs queued in an undrained output. Default 64.
    pub max_queued_acks: u32,
    /// Stream resets allowed per [`ServerSettings::reset_window`] before GOAWAY
    /// ENHANCE_YOUR_CALM, counting client resets of live streams and our resets of streams
    /// the client broke. Default 200 per 10 s: a browser cancelling navigations stays far
    /// below, a rapid-reset attacker hits it in milliseconds.
    pub max_resets_per_window: u32,
    /// The window for counting client resets. Default 10 s.
    pub reset_window: Duration,
    /// Empty DATA frames (no payload, no END_STREAM) allowed in a row before GOAWAY
    /// ENHANCE_YOUR_CALM. Default 64: no client needs more than a few.
    pub max_empty_data_frames: u32,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            max_concurrent_streams: 100,
            initial_window_size: 256 * 1024,
            connection_window_size: 1024 * 1024,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            header_table_size: hpack::DEFAULT_TABLE_SIZE as u32,
            encoder_table_size: hpack::DEFAULT_TABLE_SIZE as u32,
            max_header_list_size: 16 * 1024,
            max_header_block_bytes: 64 * 1024,
            max_continuation_frames: 32,
            max_queued_acks: 64,
            max_resets_per_window: 200,
            reset_window: Duration::from_secs(10),
            max_empty_data_frames: 64,
        }
    }
}

/// Something the peer did, for the application.
#[derive(Debug)]
pub enum Event {
    /// A new request.
    Request {
        /// Stream.
        stream: u32,
        /// The validated head.
        head: RequestHead,
        /// The request has no body.
        end_stream: bool,
    },
    /// Request body bytes. Return them with [`Connection::release_capacity`] once consumed.
    Data {
        /// Stream.
        stream: u32,
        /// Payload.
        data: Bytes,
        /// Last of the body.
        end_stream: bool,
    },
    /// Request trailers (ends the request).
    Trailers {
        /// Stream.
        stream: u32,
        /// The trailer fields.
        trailers: Fields,
    },
    /// The stream is gone: reset by the peer, or by us after a protocol error on it.
    Reset {
        /// Stream.
        stream: u32,
        /// The code.
        code: ErrorCode,
    },
    /// A send window grew (stream 0: the connection's): blocked `send_data` may go on.
    WindowUpdate {
        /// Stream, or 0.
        stream: u32,
    },
    /// The peer is going away.
    GoAway {
        /// Last stream it may have processed.
        last_stream: u32,
        /// Its code.
        code: ErrorCode,
    },
}

/// Why a `send_*` call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// No such live stream (never opened, closed, or reset).
    UnknownStream,
    /// The response head was already sent (or, for data and trailers, not yet).
    WrongState,
    /// We already ended the stream.
    StreamEnded,
    /// A field name is not a lowercase token, is a pseudo-header or connection-specific, or a
    /// value holds NUL, CR or LF.
    InvalidField,
    /// The connection is closed.
    ConnectionClosed,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendError::UnknownStream => "unknown stream",
            SendError::WrongState => "response head in the wrong state",
            SendError::StreamEnded => "stream already ended",
            SendError::InvalidField => "invalid response field",
            SendError::ConnectionClosed => "connection closed",
        })
    }
}

impl std::error::Error for SendError {}

impl StreamEvent for Event {
    fn data(stream: u32, data: Bytes, end_stream: bool) -> Event {
        Event::Data { stream, data, end_stream }
    }

    fn trailers(stream: u32, trailers: Fields) -> Event {
        Event::Trailers { stream, trailers }
    }

    fn reset(stream: u32, code: ErrorCode) -> Event {
        Event::Reset { stream, code }
    }

    fn window_update(stream: u32) -> Event {
        Event::WindowUpdate { stream }
    }
}

/// The server side of one HTTP/2 connection. See the module doc.
#[derive(Debug)]
pub struct Connection {
    /// What both ends do alike: frames, SETTINGS, windows, streams, output.
    ep: Endpoint<Event>,
    max_concurrent_streams: u32,
    max_resets_per_window: u32,
    reset_window: Duration,
    reset_window_start: Option<Instant>,
    resets_in_window: u32,
}

impl Connection {
    /// A connection that has queued its SETTINGS (and the connection window increase) for
    /// the driver to send.
    pub fn new(settings: ServerSettings) -> Connection {
        let limits = Limits {
            max_frame_size: settings.max_frame_size,
            initial_window_size: settings.initial_window_size,
            connection_window_size: settings.connection_window_size,
            header_table_size: settings.header_table_size,
            encoder_table_size: settings.encoder_table_size,
            max_header_list_size: settings.max_header_list_size,
            max_header_block_bytes: settings.max_header_block_bytes,
            max_continuation_frames: settings.max_continuation_frames,
            max_queued_acks: settings.max_queued_acks,
            max_empty_data_frames: settings.max_empty_data_frames,
        };
        Connection {
            // We never open streams: the peer's stream limit does not matter.
            ep: Endpoint::new(Role::Server, limits, Some(settings.max_concurrent_streams), 0),
            max_concurrent_streams: settings.max_concurrent_streams,
            max_resets_per_window: settings.max_resets_per_window,
            reset_window: settings.reset_window,
            reset_window_start: None,
            resets_in_window: 0,
        }
    }

    // ----- input -------------------------------------------------------------------------

    /// Processes received bytes: returns how many were consumed (complete frames; keep the
    /// rest and call again with more). A connection error queues GOAWAY and is returned; the
    /// connection is closed from then on.
    pub fn recv(&mut self, input: &[u8], now: Instant) -> Result<usize, H2Error> {
        endpoint::recv(self, input, None, now)
    }

    /// [`Connection::recv`] without copying DATA payloads: each [`Event::Data`] is a slice of
    /// `input` (sharing its allocation). For a driver that reads into a `BytesMut` and
    /// freezes what it read; it keeps the unconsumed tail, which is at most one frame.
    pub fn recv_bytes(&mut self, input: &Bytes, now: Instant) -> Result<usize, H2Error> {
        endpoint::recv(self, input, Some(input), now)
    }

    /// A request head, or a header block on a stream that is gone.
    fn on_header_block(
        &mut self,
        stream: u32,
        end_stream: bool,
        self_dependent: bool,
        block: &[u8],
    ) -> Result<(), H2Error> {
        let ep = &mut self.ep;
        if stream.is_multiple_of(2) {
            return Err(conn_err(ErrorCode::PROTOCOL_ERROR, "client opened an even stream"));
        }
        let mut builder = HeadBuilder::request();
        let decoded = ep.decoder.decode(block, |n, v| builder.field(n, v))?;
        if !ep.is_idle(stream) {
            return match ep.recent.get(stream) {
                Some(Closed::ResetByUs) => Ok(()),
                Some(Closed::Other) => {
                    Err(conn_err(ErrorCode::STREAM_CLOSED, "HEADERS on a closed stream"))
                }
                None => {
                    Err(conn_err(ErrorCode::PROTOCOL_ERROR, "stream id lower than a previous one"))
                }
            };
        }
        ep.last_stream = stream;
        if self_dependent {
            return Err(stream_err(stream, "stream depends on itself"));
        }
        if ep.goaway_sent.is_some_and(|last| stream > last)
            || ep.is_closed()
            || ep.streams.len() >= self.max_concurrent_streams as usize
        {
            self.refuse(stream);
            return Ok(());
        }
        if decoded.too_large {
            // 431 and done: the request is not processed.
            let mut s = Stream::new(stream, 0, ep.remote.initial_window);
            s.head_received = true;
            s.recv_closed = end_stream;
            ep.streams.push_back(s);
            ep.send_head(stream, true, true, |encoder, out| encoder.encode_status(431, out));
            // Still receiving a body: stop it (RFC 9113 §8.1, a complete response first).
            if let Some(i) = ep.index(stream) {
                ep.remove_stream(i);
                ep.recent.push(stream, Closed::ResetByUs);
                Frame::RstStream { stream, code: ErrorCode::NO_ERROR }.encode(&mut ep.out);
            }
            return Ok(());
        }
        let head = builder.finish_request().map_err(|why| stream_err(stream, why))?;
        if end_stream && head.content_length().is_some_and(|cl| cl != 0) {
            return Err(stream_err(stream, "no body but content-length > 0"));
        }
        let mut s = Stream::new(stream, ep.limits.initial_window_size, ep.remote.initial_window);
        s.head_received = true;
        s.recv_closed = end_stream;
        s.content_length = head.content_length();
        s.delivered = true;
        ep.streams.push_back(s);
        ep.events.push_back(Event::Request { stream, head, end_stream });
        Ok(())
    }

    /// Refuses a new stream with REFUSED_STREAM.
    fn refuse(&mut self, stream: u32) {
        Frame::RstStream { stream, code: ErrorCode::REFUSED_STREAM }.encode(&mut self.ep.out);
        self.ep.recent.push(stream, Closed::ResetByUs);
    }

    /// Counts one reset against the window: client resets of live streams (rapid reset,
    /// CVE-2023-44487) and our resets answering client stream errors (reset flood,
    /// CVE-2019-9514) share the budget.
    fn count_reset(&mut self, now: Instant) -> Result<(), H2Error> {
        let start = *self.reset_window_start.get_or_insert(now);
        if now.saturating_duration_since(start) > self.reset_window {
            self.reset_window_start = Some(now);
            self.resets_in_window = 0;
        }
        self.resets_in_window += 1;
        if self.resets_in_window > self.max_resets_per_window {
            return Err(conn_err(
                ErrorCode::ENHANCE_YOUR_CALM,
                "too many stream resets (rapid reset / reset flood)",
            ));
        }
        Ok(())
    }

    // ----- application side --------------------------------------------------------------

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.ep.poll_event()
    }

    /// Returns `n` consumed request-body bytes of `stream` to the flow-control windows,
    /// queueing WINDOW_UPDATEs once half a window is consumed. Once a stream is gone (ended
    /// both ways or reset), whatever the application had not released yet is returned to the
    /// connection window automatically, and releasing for it does nothing: a dropped body
    /// cannot leak connection window.
    pub fn release_capacity(&mut self, stream: u32, n: usize) {
        self.ep.release_capacity(stream, n);
    }

    /// Bytes `send_data` would take now on `stream` (0 if blocked, ended or unknown).
    pub fn send_capacity(&self, stream: u32) -> usize {
        self.ep.send_capacity(stream)
    }

    /// Sends the response head (`status` 100..=999; a 1xx is informational and may be
    /// followed by the final head). `end_stream` ends the response without a body.
    pub fn send_response(
        &mut self,
        stream: u32,
        status: u16,
        fields: &[(&[u8], &[u8])],
        end_stream: bool,
    ) -> Result<(), SendError> {
        self.send_response_fields(stream, status, fields.iter().copied(), end_stream)
    }

    /// [`Connection::send_response`] with the fields from an iterator (walked twice: checked,
    /// then encoded), so that a driver need not collect them first.
    pub fn send_response_fields<'f, F>(
        &mut self,
        stream: u32,
        status: u16,
        fields: F,
        end_stream: bool,
    ) -> Result<(), SendError>
    where
        F: IntoIterator<Item = (&'f [u8], &'f [u8])> + Clone,
    {
        if !(100..=999).contains(&status) {
            return Err(SendError::InvalidField);
        }
        endpoint::check_fields(fields.clone())?;
        let i = self.ep.live(stream)?;
        if self.ep.streams[i].head_sent {
            return Err(SendError::WrongState);
        }
        let informational = status < 200;
        if informational && end_stream {
            return Err(SendError::WrongState);
        }
        self.ep.send_head(stream, !informational, end_stream, |encoder, out| {
            encoder.encode_status(status, out);
            for (n, v) in fields {
                encoder.encode_field(n, v, out);
            }
        });
        Ok(())
    }

    /// Sends response trailers, ending the stream.
    pub fn send_trailers(
        &mut self,
        stream: u32,
        fields: &[(&[u8], &[u8])],
    ) -> Result<(), SendError> {
        self.ep.send_trailers(stream, fields.iter().copied())
    }

    /// [`Connection::send_trailers`] with the fields from an iterator (walked twice).
    pub fn send_trailers_fields<'f, F>(&mut self, stream: u32, fields: F) -> Result<(), SendError>
    where
        F: IntoIterator<Item = (&'f [u8], &'f [u8])> + Clone,
    {
        self.ep.send_trailers(stream, fields)
    }

    /// Sends as much of `data` as the connection and stream windows allow, in DATA frames
    /// of at most the peer's SETTINGS_MAX_FRAME_SIZE, and returns how much it took.
    /// `end_stream` ends the stream only if all of `data` was taken (an empty `data` with
    /// `end_stream` sends an empty DATA frame with END_STREAM). Call again with the rest
    /// after an [`Event::WindowUpdate`]. The peer's windows bound what is in flight, not what
    /// waits in [`Connection::output`]: a driver stops feeding streams while the output holds
    /// more than it means to buffer for a slow reader.
    pub fn send_data(
        &mut self,
        stream: u32,
        data: &[u8],
        end_stream: bool,
    ) -> Result<usize, SendError> {
        self.ep.send_data(stream, data, end_stream)
    }

    /// Resets `stream` with `code` (no event is raised for it). Unknown streams are ignored.
    pub fn reset(&mut self, stream: u32, code: ErrorCode) {
        self.ep.reset(stream, code);
    }

    /// Sends a PING (not an ACK) with `payload`: a liveness probe. The peer's ACK, like any
    /// frame it sends, arrives through [`Connection::recv`]; a driver that hears nothing back
    /// in time closes the connection.
    pub fn ping(&mut self, payload: [u8; 8]) {
        self.ep.ping(payload);
    }

    /// Sends GOAWAY with the last stream we accepted. With `NO_ERROR` this is graceful: live
    /// streams go on, newer ones are refused; with an error code the connection is closed.
    pub fn go_away(&mut self, code: ErrorCode) {
        self.ep.go_away(code);
    }

    // ----- SETTINGS acknowledgement --------------------------------------------------------

    /// Sets when our SETTINGS (queued by [`Connection::new`]) are overdue if the client has
    /// not acknowledged them by then (RFC 9113 §6.5.3). The driver calls this once, with the
    /// time it wrote them plus its timeout, and asks [`Connection::settings_overdue`] when
    /// its timer fires; without a deadline they are never overdue.
    pub fn set_settings_deadline(&mut self, deadline: Instant) {
        self.ep.set_settings_deadline(deadline);
    }

    /// The deadline set by [`Connection::set_settings_deadline`] while the client's ACK is
    /// awaited (`None` once it arrived or the connection closed): when to arm a timer.
    pub fn settings_deadline(&self) -> Option<Instant> {
        self.ep.settings_deadline()
    }

    /// Whether our SETTINGS are still unacknowledged at `now`, at or past the deadline: the
    /// driver then sends `go_away(ErrorCode::SETTINGS_TIMEOUT)`, writes the output and
    /// closes.
    pub fn settings_overdue(&self, now: Instant) -> bool {
        self.ep.settings_overdue(now)
    }

    // ----- output and lifecycle -----------------------------------------------------------

    /// Bytes to write to the peer.
    pub fn output(&self) -> &[u8] {
        self.ep.output()
    }

    /// Marks `n` bytes of [`Connection::output`] as written.
    pub fn consumed(&mut self, n: usize) {
        self.ep.consumed(n);
    }

    /// Heap bytes this connection holds (buffers at their capacity, HPACK tables), as far as
    /// it can count them; the memory test checks the figure with a counting allocator.
    pub fn heap_bytes(&self) -> usize {
        self.ep.heap_bytes()
    }

    /// Number of live streams.
    pub fn active_streams(&self) -> usize {
        self.ep.streams.len()
    }

    /// Whether the connection is closed (after a connection error or an error GOAWAY).
    pub fn is_closed(&self) -> bool {
        self.ep.is_closed()
    }

    /// Whether the driver may close the socket once the output is written: closed, or a
    /// GOAWAY went either way and no stream is live.
    pub fn wants_close(&self) -> bool {
        self.ep.wants_close()
    }
}

impl Side for Connection {
    type Event = Event;

    fn endpoint(&mut self) -> &mut Endpoint<Event> {
        &mut self.ep
    }

    fn on_role_frame(&mut self, frame: RoleFrame<'_>, now: Instant) -> Result<(), H2Error> {
        match frame {
            RoleFrame::HeaderBlock { stream, end_stream, self_dependent, block, .. } => {
                self.on_header_block(stream, end_stream, self_dependent, &block)
            }
            RoleFrame::Reset { code, stream: s } => {
                if s.delivered {
                    self.ep.events.push_back(Event::Reset { stream: s.id, code });
                }
                // Rapid reset: count resets of streams we were still answering.
                if !s.send_closed {
                    self.count_reset(now)?;
                }
                Ok(())
            }
            RoleFrame::GoAway { last_stream, code } => {
                self.ep.goaway_received =
                    Some(self.ep.goaway_received.map_or(last_stream, |l| l.min(last_stream)));
                self.ep.events.push_back(Event::GoAway { last_stream, code });
                Ok(())
            }
        }
    }

    fn after_stream_error(&mut self, now: Instant) -> Result<(), H2Error> {
        self.count_reset(now)
    }
}
