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

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{ErrorCode, H2Error, Scope};
use crate::flow::{RecvWindow, SendWindow};
use crate::frame::{
    self, flag, kind, setting, Frame, FrameHeader, DEFAULT_MAX_FRAME_SIZE, HEADER_LEN, MAX_WINDOW,
};
use crate::head::{connection_specific, name_ok, Fields, HeadBuilder, RequestHead};
use crate::hpack;
use crate::stream::{Closed, RecentlyClosed, Stream};

/// The client connection preface (§3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Bytes reserved at once when a response head is written into an empty, released output.
const OUT_INITIAL: usize = 4096;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the client preface; `n` bytes of it matched so far.
    Preface(usize),
    /// Preface seen; the first frame must be SETTINGS.
    FirstSettings,
    Open,
    Closed,
}

/// The peer's settings that shape what we send.
#[derive(Debug, Clone, Copy)]
struct PeerSettings {
    initial_window: u32,
    max_frame_size: u32,
}

/// A header block in progress across CONTINUATION frames.
#[derive(Debug)]
struct PartialBlock {
    stream: u32,
    end_stream: bool,
    self_dependent: bool,
    block: Vec<u8>,
    frames: u32,
}

/// The server side of one HTTP/2 connection. See the module doc.
#[derive(Debug)]
pub struct Connection {
    settings: ServerSettings,
    state: State,
    peer: PeerSettings,
    decoder: hpack::Decoder,
    encoder: hpack::Encoder,
    streams: Vec<Stream>,
    recent: RecentlyClosed,
    last_stream: u32,
    partial: Option<Box<PartialBlock>>,
    conn_send: SendWindow,
    conn_recv: RecvWindow,
    out: Vec<u8>,
    out_pos: usize,
    events: VecDeque<Event>,
    queued_acks: u32,
    goaway_sent: Option<u32>,
    goaway_received: bool,
    reset_window_start: Option<Instant>,
    resets_in_window: u32,
    /// Empty DATA frames without END_STREAM since the last non-empty one.
    empty_data_frames: u32,
}

fn conn_err(code: ErrorCode, reason: &'static str) -> H2Error {
    H2Error::connection(code, reason)
}

impl Connection {
    /// A connection that has queued its SETTINGS (and the connection window increase) for
    /// the driver to send.
    pub fn new(settings: ServerSettings) -> Connection {
        let max_frame_size =
            settings.max_frame_size.clamp(DEFAULT_MAX_FRAME_SIZE, frame::MAX_MAX_FRAME_SIZE);
        let settings = ServerSettings {
            max_frame_size,
            initial_window_size: settings.initial_window_size.min(MAX_WINDOW),
            connection_window_size: settings
                .connection_window_size
                .clamp(DEFAULT_WINDOW, MAX_WINDOW),
            ..settings
        };
        let mut conn = Connection {
            decoder: hpack::Decoder::new(
                settings.header_table_size as usize,
                settings.max_header_list_size as usize,
            ),
            encoder: hpack::Encoder::new(settings.encoder_table_size as usize),
            state: State::Preface(0),
            peer: PeerSettings {
                initial_window: DEFAULT_WINDOW,
                max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            },
            streams: Vec::new(),
            recent: RecentlyClosed::default(),
            last_stream: 0,
            partial: None,
            conn_send: SendWindow::new(DEFAULT_WINDOW),
            conn_recv: RecvWindow::new(
                settings.connection_window_size,
                settings.connection_window_size,
            ),
            out: Vec::new(),
            out_pos: 0,
            events: VecDeque::new(),
            queued_acks: 0,
            goaway_sent: None,
            goaway_received: false,
            reset_window_start: None,
            resets_in_window: 0,
            empty_data_frames: 0,
            settings,
        };
        let s = &conn.settings;
        frame::write_settings(
            &mut conn.out,
            &[
                (setting::HEADER_TABLE_SIZE, s.header_table_size),
                (setting::ENABLE_PUSH, 0),
                (setting::MAX_CONCURRENT_STREAMS, s.max_concurrent_streams),
                (setting::INITIAL_WINDOW_SIZE, s.initial_window_size),
                (setting::MAX_FRAME_SIZE, s.max_frame_size),
                (setting::MAX_HEADER_LIST_SIZE, s.max_header_list_size),
            ],
        );
        let extra = s.connection_window_size - DEFAULT_WINDOW;
        if extra > 0 {
            Frame::WindowUpdate { stream: 0, increment: extra }.encode(&mut conn.out);
        }
        conn
    }

    // ----- input -------------------------------------------------------------------------

    /// Processes received bytes: returns how many were consumed (complete frames; keep the
    /// rest and call again with more). A connection error queues GOAWAY and is returned; the
    /// connection is closed from then on.
    pub fn recv(&mut self, input: &[u8], now: Instant) -> Result<usize, H2Error> {
        self.recv_from(input, None, now)
    }

    /// [`Connection::recv`] without copying DATA payloads: each [`Event::Data`] is a slice of
    /// `input` (sharing its allocation). For a driver that reads into a `BytesMut` and
    /// freezes what it read; it keeps the unconsumed tail, which is at most one frame.
    pub fn recv_bytes(&mut self, input: &Bytes, now: Instant) -> Result<usize, H2Error> {
        self.recv_from(input, Some(input), now)
    }

    fn recv_from(
        &mut self,
        input: &[u8],
        src: Option<&Bytes>,
        now: Instant,
    ) -> Result<usize, H2Error> {
        let mut used = 0;
        if let State::Preface(matched) = self.state {
            let want = &PREFACE[matched..];
            let n = want.len().min(input.len());
            if input[..n] != want[..n] {
                return Err(
                    self.fail(conn_err(ErrorCode::PROTOCOL_ERROR, "invalid connection preface"))
                );
            }
            used = n;
            if n < want.len() {
                self.state = State::Preface(matched + n);
                return Ok(used);
            }
            self.state = State::FirstSettings;
        }
        if self.state == State::Closed {
            return Err(conn_err(ErrorCode::PROTOCOL_ERROR, "connection closed"));
        }
        loop {
            let rest = &input[used..];
            let result = match Frame::parse(rest, self.settings.max_frame_size) {
                Ok(Some((frame, n))) => {
                    used += n;
                    self.on_frame(frame, src, now)
                }
                Ok(None) => break,
                Err(e) => {
                    // A frame-level error scoped to a stream (bad PRIORITY size, zero
                    // WINDOW_UPDATE): the frame is complete, skip it.
                    used += HEADER_LEN + FrameHeader::parse(rest).map_or(0, |h| h.len as usize);
                    Err(e)
                }
            };
            if let Err(e) = result {
                self.answer(e, now).map_err(|e| self.fail(e))?;
            }
            if self.queued_acks > self.settings.max_queued_acks {
                return Err(self.fail(conn_err(
                    ErrorCode::ENHANCE_YOUR_CALM,
                    "too many SETTINGS/PING ACKs queued",
                )));
            }
        }
        Ok(used)
    }

    /// Answers a protocol error: a stream error with RST_STREAM (counted against the reset
    /// budget), unless it has to end the connection — a connection error, an error in the
    /// middle of a header block or before the first SETTINGS, or one on an idle stream (which
    /// must not see RST_STREAM, §5.1).
    fn answer(&mut self, e: H2Error, now: Instant) -> Result<(), H2Error> {
        let Scope::Stream(stream) = e.scope else { return Err(e) };
        if self.partial.is_some() || self.state == State::FirstSettings || self.is_idle(stream) {
            return Err(conn_err(e.code, e.reason));
        }
        self.stream_error(e);
        self.count_reset(now)
    }

    fn on_frame(
        &mut self,
        frame: Frame<'_>,
        src: Option<&Bytes>,
        now: Instant,
    ) -> Result<(), H2Error> {
        if self.state == State::FirstSettings {
            if !matches!(frame, Frame::Settings { ack: false, .. }) {
                return Err(conn_err(ErrorCode::PROTOCOL_ERROR, "first frame is not SETTINGS"));
            }
            self.state = State::Open;
        }
        if let Some(partial) = &self.partial {
            match frame {
                Frame::Continuation { stream, .. } if stream == partial.stream => {}
                _ => return Err(conn_err(ErrorCode::PROTOCOL_ERROR, "expected CONTINUATION")),
            }
        }
        match frame {
            Frame::Data { stream, end_stream, data, padding } => {
                let flow = data.len() as u32 + padding.map_or(0, |p| p as u32 + 1);
                self.on_data(stream, data, src, flow, end_stream)
            }
            Frame::Headers { stream, end_stream, end_headers, priority, block, .. } => {
                // A stream depending on itself is refused, after its block is decoded (the
                // HPACK state must stay in step).
                let self_dependent = priority.is_some_and(|p| p.dependency == stream);
                if end_headers {
                    self.on_header_block(stream, end_stream, block, self_dependent)
                } else {
                    if block.len() > self.settings.max_header_block_bytes as usize {
                        return Err(conn_err(
                            ErrorCode::ENHANCE_YOUR_CALM,
                            "header block too large",
                        ));
                    }
                    let block = block.to_vec();
                    self.partial = Some(Box::new(PartialBlock {
                        stream,
                        end_stream,
                        self_dependent,
                        block,
                        frames: 0,
                    }));
                    Ok(())
                }
            }
            Frame::Continuation { stream, end_headers, block } => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err(conn_err(
                        ErrorCode::PROTOCOL_ERROR,
                        "CONTINUATION without HEADERS",
                    ));
                };
                partial.frames += 1;
                if partial.block.len() + block.len() > self.settings.max_header_block_bytes as usize
                    || partial.frames > self.settings.max_continuation_frames
                {
                    return Err(conn_err(
                        ErrorCode::ENHANCE_YOUR_CALM,
                        "header block too large (CONTINUATION flood)",
                    ));
                }
                partial.block.extend_from_slice(block);
                if end_headers {
                    let done = self.partial.take().expect("checked just above");
                    self.on_header_block(stream, done.end_stream, &done.block, done.self_dependent)
                } else {
                    Ok(())
                }
            }
            Frame::Priority { stream, priority } => {
                if priority.dependency == stream {
                    return Err(H2Error::stream(
                        stream,
                        ErrorCode::PROTOCOL_ERROR,
                        "stream depends on itself",
                    ));
                }
                Ok(())
            }
            Frame::RstStream { stream, code } => self.on_rst(stream, code, now),
            Frame::Settings { ack, params } => {
                if !ack {
                    self.apply_settings(params)?;
                    frame::FrameHeader {
                        len: 0,
                        kind: kind::SETTINGS,
                        flags: flag::ACK,
                        stream: 0,
                    }
                    .write(&mut self.out);
                    self.queued_acks += 1;
                }
                Ok(())
            }
            Frame::PushPromise { .. } => {
                Err(conn_err(ErrorCode::PROTOCOL_ERROR, "PUSH_PROMISE sent to a server"))
            }
            Frame::Ping { ack, payload } => {
                if !ack {
                    Frame::Ping { ack: true, payload }.encode(&mut self.out);
                    self.queued_acks += 1;
                }
                Ok(())
            }
            Frame::GoAway { last_stream, code, .. } => {
                self.goaway_received = true;
                self.events.push_back(Event::GoAway { last_stream, code });
                Ok(())
            }
            Frame::WindowUpdate { stream, increment } => self.on_window_update(stream, increment),
            Frame::Unknown { .. } => Ok(()),
        }
    }

    fn is_idle(&self, stream: u32) -> bool {
        stream > self.last_stream
    }

    fn index(&self, stream: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.id == stream)
    }

    fn on_data(
        &mut self,
        stream: u32,
        data: &[u8],
        src: Option<&Bytes>,
        flow: u32,
        end_stream: bool,
    ) -> Result<(), H2Error> {
        if data.is_empty() && !end_stream {
            // Empty frames cost us work and the peer nothing (CVE-2019-9518).
            self.empty_data_frames += 1;
            if self.empty_data_frames > self.settings.max_empty_data_frames {
                return Err(conn_err(ErrorCode::ENHANCE_YOUR_CALM, "too many empty DATA frames"));
            }
        } else {
            self.empty_data_frames = 0;
        }
        if !self.conn_recv.receive(flow) {
            return Err(conn_err(
                ErrorCode::FLOW_CONTROL_ERROR,
                "DATA beyond the connection window",
            ));
        }
        let Some(i) = self.index(stream) else {
            if self.is_idle(stream) || stream.is_multiple_of(2) {
                return Err(conn_err(ErrorCode::PROTOCOL_ERROR, "DATA on an idle stream"));
            }
            self.release_connection(flow);
            if self.recent.get(stream) == Some(Closed::ResetByUs) {
                return Ok(());
            }
            return Err(H2Error::stream(
                stream,
                ErrorCode::STREAM_CLOSED,
                "DATA on a closed stream",
            ));
        };
        let s = &mut self.streams[i];
        if s.recv_closed {
            self.release_connection(flow);
            return Err(H2Error::stream(stream, ErrorCode::STREAM_CLOSED, "DATA after END_STREAM"));
        }
        if !s.recv.receive(flow) {
            self.release_connection(flow);
            return Err(H2Error::stream(
                stream,
                ErrorCode::FLOW_CONTROL_ERROR,
                "DATA beyond the stream window",
            ));
        }
        s.received += data.len() as u64;
        if let Some(cl) = s.content_length {
            if s.received > cl || (end_stream && s.received != cl) {
                self.release_connection(flow);
                return Err(H2Error::stream(
                    stream,
                    ErrorCode::PROTOCOL_ERROR,
                    "DATA disagrees with content-length",
                ));
            }
        }
        s.recv_closed = end_stream;
        s.unreleased += data.len() as u32;
        let padding = flow - data.len() as u32;
        if padding > 0 {
            self.release_window(stream, padding);
        }
        if !data.is_empty() || end_stream {
            let data = match src {
                Some(b) if !data.is_empty() => b.slice_ref(data),
                _ => Bytes::copy_from_slice(data),
            };
            self.events.push_back(Event::Data { stream, data, end_stream });
        }
        self.remove_if_closed(stream);
        Ok(())
    }

    fn on_header_block(
        &mut self,
        stream: u32,
        end_stream: bool,
        block: &[u8],
        self_dependent: bool,
    ) -> Result<(), H2Error> {
        if let Some(i) = self.index(stream) {
            // Trailers on a live stream.
            let mut builder = HeadBuilder::trailers();
            let decoded = self.decoder.decode(block, |n, v| builder.field(n, v))?;
            if self_dependent {
                return Err(H2Error::stream(
                    stream,
                    ErrorCode::PROTOCOL_ERROR,
                    "stream depends on itself",
                ));
            }
            let s = &mut self.streams[i];
            if s.recv_closed {
                return Err(H2Error::stream(
                    stream,
                    ErrorCode::STREAM_CLOSED,
                    "HEADERS after END_STREAM",
                ));
            }
            if !end_stream {
                return Err(H2Error::stream(
                    stream,
                    ErrorCode::PROTOCOL_ERROR,
                    "trailers without END_STREAM",
                ));
            }
            if decoded.too_large {
                return Err(H2Error::stream(
                    stream,
                    ErrorCode::PROTOCOL_ERROR,
                    "trailers over the header list size",
                ));
            }
            if s.content_length.is_some_and(|cl| cl != s.received) {
                return Err(H2Error::stream(
                    stream,
                    ErrorCode::PROTOCOL_ERROR,
                    "body shorter than content-length",
                ));
            }
            let trailers = builder
                .finish_trailers()
                .map_err(|why| H2Error::stream(stream, ErrorCode::PROTOCOL_ERROR, why))?;
            s.recv_closed = true;
            self.events.push_back(Event::Trailers { stream, trailers });
            self.remove_if_closed(stream);
            return Ok(());
        }
        if stream.is_multiple_of(2) {
            return Err(conn_err(ErrorCode::PROTOCOL_ERROR, "client opened an even stream"));
        }
        let mut builder = HeadBuilder::request();
        let decoded = self.decoder.decode(block, |n, v| builder.field(n, v))?;
        if !self.is_idle(stream) {
            return match self.recent.get(stream) {
                Some(Closed::ResetByUs) => Ok(()),
                Some(Closed::Other) => {
                    Err(conn_err(ErrorCode::STREAM_CLOSED, "HEADERS on a closed stream"))
                }
                None => {
                    Err(conn_err(ErrorCode::PROTOCOL_ERROR, "stream id lower than a previous one"))
                }
            };
        }
        self.last_stream = stream;
        if self_dependent {
            return Err(H2Error::stream(
                stream,
                ErrorCode::PROTOCOL_ERROR,
                "stream depends on itself",
            ));
        }
        if self.goaway_sent.is_some_and(|last| stream > last) || self.state == State::Closed {
            return self.refuse(stream, ErrorCode::REFUSED_STREAM);
        }
        if self.streams.len() >= self.settings.max_concurrent_streams as usize {
            return self.refuse(stream, ErrorCode::REFUSED_STREAM);
        }
        if decoded.too_large {
            // 431 and done: the request is not processed.
            let mut s = Stream::new(stream, 0, self.peer.initial_window);
            s.recv_closed = end_stream;
            self.streams.push(s);
            self.write_head(stream, Some(431), std::iter::empty(), true)
                .map_err(|_| conn_err(ErrorCode::INTERNAL_ERROR, "431"))?;
            // Still receiving a body: stop it (RFC 9113 §8.1, a complete response first).
            if let Some(i) = self.index(stream) {
                self.remove_stream(i);
                self.recent.push(stream, Closed::ResetByUs);
                Frame::RstStream { stream, code: ErrorCode::NO_ERROR }.encode(&mut self.out);
            }
            return Ok(());
        }
        let head = match builder.finish_request() {
            Ok(h) => h,
            Err(why) => return Err(H2Error::stream(stream, ErrorCode::PROTOCOL_ERROR, why)),
        };
        if end_stream && head.content_length().is_some_and(|cl| cl != 0) {
            return Err(H2Error::stream(
                stream,
                ErrorCode::PROTOCOL_ERROR,
                "no body but content-length > 0",
            ));
        }
        let mut s =
            Stream::new(stream, self.settings.initial_window_size, self.peer.initial_window);
        s.recv_closed = end_stream;
        s.content_length = head.content_length();
        s.delivered = true;
        self.streams.push(s);
        self.events.push_back(Event::Request { stream, head, end_stream });
        Ok(())
    }

    fn refuse(&mut self, stream: u32, code: ErrorCode) -> Result<(), H2Error> {
        Frame::RstStream { stream, code }.encode(&mut self.out);
        self.recent.push(stream, Closed::ResetByUs);
        Ok(())
    }

    fn on_rst(&mut self, stream: u32, code: ErrorCode, now: Instant) -> Result<(), H2Error> {
        let Some(i) = self.index(stream) else {
            if self.is_idle(stream) {
                return Err(conn_err(ErrorCode::PROTOCOL_ERROR, "RST_STREAM on an idle stream"));
            }
            return Ok(());
        };
        let s = self.remove_stream(i);
        self.recent.push(stream, Closed::Other);
        if s.delivered {
            self.events.push_back(Event::Reset { stream, code });
        }
        // Rapid reset: count resets of streams we were still answering.
        if !s.send_closed {
            self.count_reset(now)?;
        }
        Ok(())
    }

    /// Counts one reset against the window: client resets of live streams (rapid reset,
    /// CVE-2023-44487) and our resets answering client stream errors (reset flood,
    /// CVE-2019-9514) share the budget.
    fn count_reset(&mut self, now: Instant) -> Result<(), H2Error> {
        let start = *self.reset_window_start.get_or_insert(now);
        if now.saturating_duration_since(start) > self.settings.reset_window {
            self.reset_window_start = Some(now);
            self.resets_in_window = 0;
        }
        self.resets_in_window += 1;
        if self.resets_in_window > self.settings.max_resets_per_window {
            return Err(conn_err(
                ErrorCode::ENHANCE_YOUR_CALM,
                "too many stream resets (rapid reset / reset flood)",
            ));
        }
        Ok(())
    }

    fn apply_settings(&mut self, params: &[u8]) -> Result<(), H2Error> {
        let old_window = self.peer.initial_window;
        for (id, value) in frame::settings_params(params) {
            match id {
                setting::HEADER_TABLE_SIZE => self.encoder.set_peer_table_size(value as usize),
                setting::INITIAL_WINDOW_SIZE => self.peer.initial_window = value,
                setting::MAX_FRAME_SIZE => self.peer.max_frame_size = value,
                _ => {} // ENABLE_PUSH, MAX_CONCURRENT_STREAMS: we never push; others: unknown.
            }
        }
        // Windows move by the frame's net change, once (§6.9.2): a frame repeating the
        // parameter costs one pass over the streams, not one per repetition.
        let delta = self.peer.initial_window as i64 - old_window as i64;
        if delta != 0 {
            for s in &mut self.streams {
                if !s.send.shift(delta) {
                    return Err(conn_err(
                        ErrorCode::FLOW_CONTROL_ERROR,
                        "SETTINGS_INITIAL_WINDOW_SIZE overflows a window",
                    ));
                }
                if delta > 0 && !s.send_closed {
                    self.events.push_back(Event::WindowUpdate { stream: s.id });
                }
            }
        }
        Ok(())
    }

    fn on_window_update(&mut self, stream: u32, increment: u32) -> Result<(), H2Error> {
        if stream == 0 {
            if !self.conn_send.grow(increment) {
                return Err(conn_err(
                    ErrorCode::FLOW_CONTROL_ERROR,
                    "connection window above 2^31-1",
                ));
            }
            self.events.push_back(Event::WindowUpdate { stream: 0 });
            return Ok(());
        }
        match self.index(stream) {
            Some(i) => {
                if !self.streams[i].send.grow(increment) {
                    return Err(H2Error::stream(
                        stream,
                        ErrorCode::FLOW_CONTROL_ERROR,
                        "stream window above 2^31-1",
                    ));
                }
                if !self.streams[i].send_closed {
                    self.events.push_back(Event::WindowUpdate { stream });
                }
                Ok(())
            }
            None if self.is_idle(stream) => {
                Err(conn_err(ErrorCode::PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream"))
            }
            None => Ok(()),
        }
    }

    /// Answers a stream error: RST_STREAM, forget the stream, tell the application.
    fn stream_error(&mut self, e: H2Error) {
        let Scope::Stream(stream) = e.scope else { return };
        Frame::RstStream { stream, code: e.code }.encode(&mut self.out);
        if let Some(i) = self.index(stream) {
            let s = self.remove_stream(i);
            if s.delivered {
                self.events.push_back(Event::Reset { stream, code: e.code });
            }
        }
        self.recent.push(stream, Closed::ResetByUs);
    }

    /// Answers a connection error: GOAWAY, closed.
    fn fail(&mut self, e: H2Error) -> H2Error {
        if self.state != State::Closed {
            let last = self.last_stream;
            Frame::GoAway { last_stream: last, code: e.code, debug: e.reason.as_bytes() }
                .encode(&mut self.out);
            self.goaway_sent = Some(last);
            self.state = State::Closed;
        }
        e
    }

    fn remove_if_closed(&mut self, stream: u32) {
        if let Some(i) = self.index(stream) {
            if self.streams[i].is_closed() {
                self.remove_stream(i);
                self.recent.push(stream, Closed::Other);
            }
        }
    }

    fn release_connection(&mut self, n: u32) {
        if let Some(inc) = self.conn_recv.release(n) {
            Frame::WindowUpdate { stream: 0, increment: inc }.encode(&mut self.out);
        }
    }

    // ----- application side --------------------------------------------------------------

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        let e = self.events.pop_front();
        if e.is_none() {
            self.release_idle_memory();
        }
        e
    }

    /// Returns `n` consumed request-body bytes of `stream` to the flow-control windows,
    /// queueing WINDOW_UPDATEs once half a window is consumed. Once a stream is gone (ended
    /// both ways or reset), whatever the application had not released yet is returned to the
    /// connection window automatically, and releasing for it does nothing: a dropped body
    /// cannot leak connection window.
    pub fn release_capacity(&mut self, stream: u32, n: usize) {
        let Some(i) = self.index(stream) else { return };
        let s = &mut self.streams[i];
        let n = (n.min(u32::MAX as usize) as u32).min(s.unreleased);
        s.unreleased -= n;
        self.release_window(stream, n);
    }

    /// Returns `n` received bytes to the connection window and, while the client may still
    /// send, to the stream's.
    fn release_window(&mut self, stream: u32, n: u32) {
        if n == 0 {
            return;
        }
        self.release_connection(n);
        if let Some(i) = self.index(stream) {
            let s = &mut self.streams[i];
            if !s.recv_closed {
                if let Some(inc) = s.recv.release(n) {
                    Frame::WindowUpdate { stream, increment: inc }.encode(&mut self.out);
                }
            }
        }
    }

    /// Forgets a live stream, returning its unreleased bytes to the connection window.
    fn remove_stream(&mut self, i: usize) -> Stream {
        let s = self.streams.swap_remove(i);
        self.release_connection(s.unreleased);
        s
    }

    /// Bytes `send_data` would take now on `stream` (0 if blocked or unknown).
    pub fn send_capacity(&self, stream: u32) -> usize {
        self.index(stream)
            .map_or(0, |i| self.streams[i].send.available().min(self.conn_send.available()))
    }

    fn check_fields<'f>(
        fields: impl IntoIterator<Item = (&'f [u8], &'f [u8])>,
    ) -> Result<(), SendError> {
        for (n, v) in fields {
            if !name_ok(n)
                || connection_specific(n)
                || v.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n')
            {
                return Err(SendError::InvalidField);
            }
        }
        Ok(())
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
        Self::check_fields(fields.clone())?;
        let s = self.live(stream)?;
        if s.response_started {
            return Err(SendError::WrongState);
        }
        let informational = status < 200;
        if informational && end_stream {
            return Err(SendError::WrongState);
        }
        self.write_head(stream, Some(status), fields, end_stream)
    }

    /// Sends response trailers, ending the stream.
    pub fn send_trailers(
        &mut self,
        stream: u32,
        fields: &[(&[u8], &[u8])],
    ) -> Result<(), SendError> {
        self.send_trailers_fields(stream, fields.iter().copied())
    }

    /// [`Connection::send_trailers`] with the fields from an iterator (walked twice).
    pub fn send_trailers_fields<'f, F>(&mut self, stream: u32, fields: F) -> Result<(), SendError>
    where
        F: IntoIterator<Item = (&'f [u8], &'f [u8])> + Clone,
    {
        Self::check_fields(fields.clone())?;
        if !self.live(stream)?.response_started {
            return Err(SendError::WrongState);
        }
        self.write_head(stream, None, fields, true)
    }

    fn live(&self, stream: u32) -> Result<&Stream, SendError> {
        if self.state == State::Closed {
            return Err(SendError::ConnectionClosed);
        }
        let s = self.index(stream).map(|i| &self.streams[i]).ok_or(SendError::UnknownStream)?;
        if s.send_closed {
            return Err(SendError::StreamEnded);
        }
        Ok(s)
    }

    /// Writes HEADERS (+ CONTINUATION) for a response head (`status`) or trailers (`None`).
    fn write_head<'f>(
        &mut self,
        stream: u32,
        status: Option<u16>,
        fields: impl IntoIterator<Item = (&'f [u8], &'f [u8])>,
        end_stream: bool,
    ) -> Result<(), SendError> {
        if self.out.capacity() == 0 {
            // The output was released while idle: one allocation for a typical turn's frames
            // instead of growing from a few bytes field by field.
            self.out.reserve(OUT_INITIAL);
        }
        let start = self.out.len();
        FrameHeader { len: 0, kind: kind::HEADERS, flags: 0, stream }.write(&mut self.out);
        self.encoder.begin_block(&mut self.out);
        if let Some(status) = status {
            self.encoder.encode_status(status, &mut self.out);
        }
        for (n, v) in fields {
            self.encoder.encode_field(n, v, &mut self.out);
        }
        let block_len = self.out.len() - start - HEADER_LEN;
        let max = self.peer.max_frame_size as usize;
        let end_flag = if end_stream { flag::END_STREAM } else { 0 };
        if block_len <= max {
            frame::patch_len(&mut self.out, start);
            self.out[start + 4] = flag::END_HEADERS | end_flag;
        } else {
            let block = self.out.split_off(start + HEADER_LEN);
            self.out.truncate(start);
            let mut chunks = block.chunks(max).peekable();
            let mut first = true;
            while let Some(chunk) = chunks.next() {
                let last = chunks.peek().is_none();
                let (k, flags) =
                    if first { (kind::HEADERS, end_flag) } else { (kind::CONTINUATION, 0) };
                let flags = flags | if last { flag::END_HEADERS } else { 0 };
                FrameHeader { len: chunk.len() as u32, kind: k, flags, stream }
                    .write(&mut self.out);
                self.out.extend_from_slice(chunk);
                first = false;
            }
        }
        if let Some(i) = self.index(stream) {
            let s = &mut self.streams[i];
            if status.is_some_and(|st| st >= 200) {
                s.response_started = true;
            }
            if end_stream {
                s.send_closed = true;
            }
        }
        self.remove_if_closed(stream);
        Ok(())
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
        let s = self.live(stream)?;
        if !s.response_started {
            return Err(SendError::WrongState);
        }
        let take = data.len().min(s.send.available()).min(self.conn_send.available());
        if take == 0 && !(data.is_empty() && end_stream) {
            return Ok(0);
        }
        let ends = end_stream && take == data.len();
        let max = self.peer.max_frame_size as usize;
        let mut sent = 0;
        loop {
            let n = (take - sent).min(max);
            let last = sent + n == take;
            frame::write_data_header(&mut self.out, stream, n as u32, last && ends);
            self.out.extend_from_slice(&data[sent..sent + n]);
            sent += n;
            if last {
                break;
            }
        }
        self.conn_send.spend(take);
        let i = self.index(stream).expect("live() found it");
        let s = &mut self.streams[i];
        s.send.spend(take);
        if ends {
            s.send_closed = true;
            self.remove_if_closed(stream);
        }
        Ok(take)
    }

    /// Resets `stream` with `code` (no event is raised for it). Unknown streams are ignored.
    pub fn reset(&mut self, stream: u32, code: ErrorCode) {
        if let Some(i) = self.index(stream) {
            self.remove_stream(i);
            Frame::RstStream { stream, code }.encode(&mut self.out);
            self.recent.push(stream, Closed::ResetByUs);
        }
    }

    /// Sends a PING (not an ACK) with `payload`: a liveness probe. The peer's ACK, like any
    /// frame it sends, arrives through [`Connection::recv`]; a driver that hears nothing back
    /// in time closes the connection.
    pub fn ping(&mut self, payload: [u8; 8]) {
        if self.state == State::Closed {
            return;
        }
        Frame::Ping { ack: false, payload }.encode(&mut self.out);
    }

    /// Sends GOAWAY with the last stream we accepted. With `NO_ERROR` this is graceful: live
    /// streams go on, newer ones are refused; with an error code the connection is closed.
    pub fn go_away(&mut self, code: ErrorCode) {
        if self.state == State::Closed {
            return;
        }
        let last = self.last_stream;
        Frame::GoAway { last_stream: last, code, debug: b"" }.encode(&mut self.out);
        self.goaway_sent = Some(last);
        if code != ErrorCode::NO_ERROR {
            self.state = State::Closed;
        }
    }

    // ----- output and lifecycle -----------------------------------------------------------

    /// Bytes to write to the peer.
    pub fn output(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// Marks `n` bytes of [`Connection::output`] as written.
    pub fn consumed(&mut self, n: usize) {
        self.out_pos = (self.out_pos + n).min(self.out.len());
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
            self.queued_acks = 0;
            self.release_idle_memory();
        } else if self.out_pos > 64 * 1024 && self.out_pos * 2 > self.out.len() {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
    }

    /// Frees buffers that an idle connection does not need.
    fn release_idle_memory(&mut self) {
        if self.out.is_empty()
            && self.out.capacity() > 0
            && (self.streams.is_empty() || self.out.capacity() > 64 * 1024)
        {
            self.out = Vec::new();
        }
        if self.events.is_empty() && self.events.capacity() > 0 && self.streams.is_empty() {
            self.events = VecDeque::new();
        }
        if self.streams.is_empty() && self.streams.capacity() > 0 {
            self.streams = Vec::new();
        }
        if self.streams.is_empty() {
            self.decoder.release_scratch();
        }
    }

    /// Heap bytes this connection holds (buffers at their capacity, HPACK tables), as far as
    /// it can count them; the memory test checks the figure with a counting allocator.
    pub fn heap_bytes(&self) -> usize {
        self.out.capacity()
            + self.events.capacity() * std::mem::size_of::<Event>()
            + self.streams.capacity() * std::mem::size_of::<Stream>()
            + self.decoder.heap_bytes()
            + self.encoder.heap_bytes()
            + self
                .partial
                .as_ref()
                .map_or(0, |p| std::mem::size_of::<PartialBlock>() + p.block.capacity())
    }

    /// Number of live streams.
    pub fn active_streams(&self) -> usize {
        self.streams.len()
    }

    /// Whether the connection is closed (after a connection error or an error GOAWAY).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether the driver may close the socket once the output is written: closed, or a
    /// GOAWAY went either way and no stream is live.
    pub fn wants_close(&self) -> bool {
        self.is_closed()
            || ((self.goaway_sent.is_some() || self.goaway_received) && self.streams.is_empty())
    }
}
