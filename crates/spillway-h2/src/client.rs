//! The client side of one HTTP/2 connection as a state machine: requests and bytes in,
//! events and bytes out (RFC 9113), for a proxy talking to HTTP/2 upstreams (gRPC).
//!
//! The mirror image of [`crate::connection`]: [`ClientConnection::new`] queues the connection
//! preface and our SETTINGS; the driver writes [`ClientConnection::output`], feeds what it
//! reads to [`ClientConnection::recv`] (or [`ClientConnection::recv_bytes`], which hands DATA
//! out as slices of the read buffer), and takes [`ClientEvent`]s from
//! [`ClientConnection::poll_event`]. Requests go out with [`ClientConnection::send_request`]
//! (odd stream ids, within the server's SETTINGS_MAX_CONCURRENT_STREAMS: beyond it the call
//! answers [`RequestError::NoCapacity`] so that the caller waits or opens another connection),
//! then [`ClientConnection::send_data`] within the send windows and
//! [`ClientConnection::send_trailers`]; [`ClientConnection::reset`] cancels a stream.
//!
//! The response side is validated as the server validates requests: one `:status` (three
//! digits, not 101), no other pseudo-header, lowercase names, no connection-specific fields,
//! values without NUL/CR/LF, `content-length` against the DATA received; 1xx interim heads are
//! skipped (a bounded number per stream). A malformed response is a stream error: RST_STREAM
//! PROTOCOL_ERROR to the server and [`ClientEvent::Reset`] to the application.
//!
//! GOAWAY: streams above the server's last stream id were not processed and are reported as
//! [`ClientEvent::Refused`] (safe to send again on another connection), as is a stream the
//! server reset with REFUSED_STREAM before answering; streams at or below it run to their end.
//!
//! Protections against a hostile upstream: header blocks are capped in compressed bytes and
//! CONTINUATION frames, header lists in decoded size (SETTINGS_MAX_HEADER_LIST_SIZE; a larger
//! response head resets the stream), SETTINGS/PING ACKs waiting in an undrained output are
//! capped, empty DATA frames in a row are capped, interim heads per stream are capped, and
//! PUSH_PROMISE is refused (we announce SETTINGS_ENABLE_PUSH = 0).

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use crate::connection::{DEFAULT_WINDOW, PREFACE};
use crate::error::{ErrorCode, H2Error, Scope};
use crate::flow::{RecvWindow, SendWindow};
use crate::frame::{
    self, flag, kind, setting, Frame, FrameHeader, DEFAULT_MAX_FRAME_SIZE, HEADER_LEN, MAX_WINDOW,
};
use crate::head::{connection_specific, name_ok, value_ok, Fields, HeadBuilder};
use crate::hpack;
use crate::stream::{Closed, RecentlyClosed};

/// Largest stream id (§5.1.1).
const MAX_STREAM_ID: u32 = (1 << 31) - 1;

/// What this client announces and enforces. Every default is a deliberate value.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// SETTINGS_INITIAL_WINDOW_SIZE: how far each response body may run ahead of the
    /// downstream reader. Default 1 MiB: a gRPC stream or a large download is not stalled by
    /// round trips, and what a slow reader can pin stays bounded.
    pub initial_window_size: u32,
    /// The connection receive window. Default 4 MiB (a few busy streams at full speed).
    pub connection_window_size: u32,
    /// SETTINGS_MAX_FRAME_SIZE we accept. Default 16 KiB (the RFC minimum).
    pub max_frame_size: u32,
    /// SETTINGS_HEADER_TABLE_SIZE for the decoder. Default 4096.
    pub header_table_size: u32,
    /// Ceiling of the encoder's dynamic table. Default 4096.
    pub encoder_table_size: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE: a larger response head or trailer block resets its
    /// stream. Default 64 KiB (the lean HTTP/1.1 client's response head limit).
    pub max_header_list_size: u32,
    /// Cap on the compressed bytes of one header block: beyond it, GOAWAY
    /// ENHANCE_YOUR_CALM. Default 128 KiB.
    pub max_header_block_bytes: u32,
    /// Cap on the CONTINUATION frames of one header block. Default 32.
    pub max_continuation_frames: u32,
    /// Cap on SETTINGS/PING ACKs queued in an undrained output. Default 64.
    pub max_queued_acks: u32,
    /// Empty DATA frames (no payload, no END_STREAM) allowed in a row. Default 64.
    pub max_empty_data_frames: u32,
    /// Interim (1xx) heads allowed per stream before it is reset. Default 8.
    pub max_interim_heads: u8,
    /// Concurrent streams assumed until the server's SETTINGS say otherwise. Default 100
    /// (the RFC's recommended minimum; the server's first frame corrects it).
    pub assumed_max_concurrent_streams: u32,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            initial_window_size: 1024 * 1024,
            connection_window_size: 4 * 1024 * 1024,
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            header_table_size: hpack::DEFAULT_TABLE_SIZE as u32,
            encoder_table_size: hpack::DEFAULT_TABLE_SIZE as u32,
            max_header_list_size: 64 * 1024,
            max_header_block_bytes: 128 * 1024,
            max_continuation_frames: 32,
            max_queued_acks: 64,
            max_empty_data_frames: 64,
            max_interim_heads: 8,
            assumed_max_concurrent_streams: 100,
        }
    }
}

/// A validated response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// `:status` (200..=999; interim heads are not reported).
    pub status: u16,
    /// The regular fields, in order.
    pub fields: Fields,
    /// The declared `content-length`, if any.
    pub content_length: Option<u64>,
}

/// Something the server did, for the application.
#[derive(Debug)]
pub enum ClientEvent {
    /// The final response head of a stream.
    Response {
        /// Stream.
        stream: u32,
        /// The validated head.
        head: ResponseHead,
        /// The response has no body (and no trailers).
        end_stream: bool,
    },
    /// Response body bytes. Return them with [`ClientConnection::release_capacity`] once
    /// consumed (the downstream took them).
    Data {
        /// Stream.
        stream: u32,
        /// Payload.
        data: Bytes,
        /// Last of the body.
        end_stream: bool,
    },
    /// Response trailers (end the response).
    Trailers {
        /// Stream.
        stream: u32,
        /// The trailer fields.
        trailers: Fields,
    },
    /// The stream is gone: reset by the server, or by us after it broke the protocol on it.
    /// After a complete response, a reset (usually NO_ERROR) only means "stop sending the
    /// request body".
    Reset {
        /// Stream.
        stream: u32,
        /// The code.
        code: ErrorCode,
    },
    /// The server did not process the stream (GOAWAY below it, or REFUSED_STREAM before a
    /// response): the request may be sent again on another connection.
    Refused {
        /// Stream.
        stream: u32,
    },
    /// A send window grew (stream 0: the connection's): blocked `send_data` may go on.
    WindowUpdate {
        /// Stream, or 0.
        stream: u32,
    },
    /// The server is going away: no new streams on this connection.
    GoAway {
        /// Last stream it may have processed.
        last_stream: u32,
        /// Its code.
        code: ErrorCode,
    },
}

/// Why [`ClientConnection::send_request`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// As many streams are open as the server allows: wait for one to end, or use another
    /// connection.
    NoCapacity,
    /// The connection takes no new streams (GOAWAY either way, or stream ids exhausted).
    GoingAway,
    /// The connection is closed.
    ConnectionClosed,
    /// A field name is not a lowercase token, is a pseudo-header or connection-specific
    /// (`te` other than `trailers` included), or a value holds NUL, CR or LF; or the request
    /// line is incomplete.
    InvalidField,
    /// The head is larger than the server's SETTINGS_MAX_HEADER_LIST_SIZE.
    HeadTooLarge,
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RequestError::NoCapacity => "no stream capacity on the connection",
            RequestError::GoingAway => "connection takes no new streams",
            RequestError::ConnectionClosed => "connection closed",
            RequestError::InvalidField => "invalid request field",
            RequestError::HeadTooLarge => "request head over the server's header list size",
        })
    }
}

impl std::error::Error for RequestError {}

pub use crate::connection::SendError;

/// The request line of [`ClientConnection::send_request`]. For `CONNECT`, `scheme` and
/// `path` are not sent.
#[derive(Debug, Clone, Copy)]
pub struct RequestLine<'a> {
    /// `:method`.
    pub method: &'a [u8],
    /// `:scheme`.
    pub scheme: &'a [u8],
    /// `:authority` (not sent when empty).
    pub authority: &'a [u8],
    /// `:path` (origin form, or `*`).
    pub path: &'a [u8],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Preface sent; the server's first frame must be SETTINGS.
    AwaitSettings,
    Open,
    Closed,
}

/// The server's settings that shape what we send.
#[derive(Debug, Clone, Copy)]
struct PeerSettings {
    initial_window: u32,
    max_frame_size: u32,
    max_concurrent_streams: u32,
    max_header_list_size: u32,
}

/// One live stream.
#[derive(Debug)]
struct ClientStream {
    id: u32,
    /// The server ended the response.
    recv_closed: bool,
    /// We ended the request.
    send_closed: bool,
    /// The final (non-1xx) response head arrived.
    head_received: bool,
    /// The request was HEAD: a content-length in the response describes no body.
    head_request: bool,
    interim_heads: u8,
    recv: RecvWindow,
    send: SendWindow,
    content_length: Option<u64>,
    received: u64,
    /// DATA bytes handed out and not released yet.
    unreleased: u32,
}

impl ClientStream {
    fn is_closed(&self) -> bool {
        self.recv_closed && self.send_closed
    }
}

/// A header block in progress across CONTINUATION frames.
#[derive(Debug)]
struct PartialBlock {
    stream: u32,
    end_stream: bool,
    block: Vec<u8>,
    frames: u32,
}

/// The client side of one HTTP/2 connection. See the module doc.
#[derive(Debug)]
pub struct ClientConnection {
    settings: ClientSettings,
    state: State,
    peer: PeerSettings,
    decoder: hpack::Decoder,
    encoder: hpack::Encoder,
    streams: Vec<ClientStream>,
    recent: RecentlyClosed,
    /// Id of the next stream we open.
    next_stream: u32,
    partial: Option<Box<PartialBlock>>,
    conn_send: SendWindow,
    conn_recv: RecvWindow,
    out: Vec<u8>,
    out_pos: usize,
    events: VecDeque<ClientEvent>,
    queued_acks: u32,
    goaway_sent: bool,
    goaway_received: Option<u32>,
    empty_data_frames: u32,
}

fn conn_err(code: ErrorCode, reason: &'static str) -> H2Error {
    H2Error::connection(code, reason)
}

fn stream_err(stream: u32, reason: &'static str) -> H2Error {
    H2Error::stream(stream, ErrorCode::PROTOCOL_ERROR, reason)
}

/// Parses a content-length value (digits only, no overflow).
fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &d| acc.checked_mul(10)?.checked_add((d - b'0') as u64))
}

/// Collects and checks the fields of one response head (RFC 9113 §8.3.2).
struct ResponseBuilder {
    fields: Fields,
    status: Option<u16>,
    content_length: Option<u64>,
    seen_regular: bool,
    error: Option<&'static str>,
}

impl ResponseBuilder {
    fn new() -> ResponseBuilder {
        ResponseBuilder {
            fields: Fields::new(),
            status: None,
            content_length: None,
            seen_regular: false,
            error: None,
        }
    }

    fn fail(&mut self, why: &'static str) {
        self.error.get_or_insert(why);
    }

    fn field(&mut self, name: &[u8], value: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if name == b":status" {
            if self.seen_regular {
                return self.fail("pseudo-header after a regular field");
            }
            if self.status.is_some() {
                return self.fail("duplicate :status");
            }
            match value {
                [a @ b'1'..=b'9', b @ b'0'..=b'9', c @ b'0'..=b'9'] => {
                    let s = (a - b'0') as u16 * 100 + (b - b'0') as u16 * 10 + (c - b'0') as u16;
                    self.status = Some(s);
                }
                _ => self.fail("invalid :status"),
            }
            return;
        }
        if name.first() == Some(&b':') {
            return self.fail("pseudo-header other than :status in a response");
        }
        self.seen_regular = true;
        if !name_ok(name) {
            return self.fail("field name not a lowercase token");
        }
        if connection_specific(name) {
            return self.fail("connection-specific field");
        }
        if !value_ok(value) {
            return self.fail("field value with NUL, CR, LF or surrounding whitespace");
        }
        if name == b"content-length" {
            match parse_content_length(value) {
                Some(n) if self.content_length.is_none_or(|m| m == n) => {
                    self.content_length = Some(n)
                }
                _ => return self.fail("invalid or conflicting content-length"),
            }
        }
        self.fields.push(name, value);
    }

    fn finish(self) -> Result<ResponseHead, &'static str> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let status = self.status.ok_or("missing :status")?;
        if status == 101 {
            return Err(":status 101 in HTTP/2");
        }
        Ok(ResponseHead { status, fields: self.fields, content_length: self.content_length })
    }
}

/// Appends HEADERS (+ CONTINUATION frames when the block is larger than `max_frame`) for a
/// block that `encode` appends to `out`.
fn write_header_block(
    out: &mut Vec<u8>,
    stream: u32,
    max_frame: usize,
    end_stream: bool,
    encode: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    FrameHeader { len: 0, kind: kind::HEADERS, flags: 0, stream }.write(out);
    encode(out);
    let block_len = out.len() - start - HEADER_LEN;
    let end_flag = if end_stream { flag::END_STREAM } else { 0 };
    if block_len <= max_frame {
        frame::patch_len(out, start);
        out[start + 4] = flag::END_HEADERS | end_flag;
        return;
    }
    let block = out.split_off(start + HEADER_LEN);
    out.truncate(start);
    let mut chunks = block.chunks(max_frame).peekable();
    let mut first = true;
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let (k, flags) = if first { (kind::HEADERS, end_flag) } else { (kind::CONTINUATION, 0) };
        let flags = flags | if last { flag::END_HEADERS } else { 0 };
        FrameHeader { len: chunk.len() as u32, kind: k, flags, stream }.write(out);
        out.extend_from_slice(chunk);
        first = false;
    }
}

/// Size of a field as SETTINGS_MAX_HEADER_LIST_SIZE counts it.
fn list_size(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + 32
}

impl ClientConnection {
    /// A connection that has queued the preface, its SETTINGS and the connection window
    /// increase for the driver to send.
    pub fn new(settings: ClientSettings) -> ClientConnection {
        let settings = ClientSettings {
            max_frame_size: settings
                .max_frame_size
                .clamp(DEFAULT_MAX_FRAME_SIZE, frame::MAX_MAX_FRAME_SIZE),
            initial_window_size: settings.initial_window_size.min(MAX_WINDOW),
            connection_window_size: settings
                .connection_window_size
                .clamp(DEFAULT_WINDOW, MAX_WINDOW),
            ..settings
        };
        let mut conn = ClientConnection {
            decoder: hpack::Decoder::new(
                settings.header_table_size as usize,
                settings.max_header_list_size as usize,
            ),
            encoder: hpack::Encoder::new(settings.encoder_table_size as usize),
            state: State::AwaitSettings,
            peer: PeerSettings {
                initial_window: DEFAULT_WINDOW,
                max_frame_size: DEFAULT_MAX_FRAME_SIZE,
                max_concurrent_streams: settings.assumed_max_concurrent_streams,
                max_header_list_size: u32::MAX,
            },
            streams: Vec::new(),
            recent: RecentlyClosed::default(),
            next_stream: 1,
            partial: None,
            conn_send: SendWindow::new(DEFAULT_WINDOW),
            conn_recv: RecvWindow::new(
                settings.connection_window_size,
                settings.connection_window_size,
            ),
            out: Vec::with_capacity(128),
            out_pos: 0,
            events: VecDeque::new(),
            queued_acks: 0,
            goaway_sent: false,
            goaway_received: None,
            empty_data_frames: 0,
            settings,
        };
        conn.out.extend_from_slice(PREFACE);
        let s = &conn.settings;
        frame::write_settings(
            &mut conn.out,
            &[
                (setting::HEADER_TABLE_SIZE, s.header_table_size),
                (setting::ENABLE_PUSH, 0),
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

    /// [`ClientConnection::recv`] without copying DATA payloads: each [`ClientEvent::Data`]
    /// is a slice of `input` (sharing its allocation).
    pub fn recv_bytes(&mut self, input: &Bytes, now: Instant) -> Result<usize, H2Error> {
        self.recv_from(input, Some(input), now)
    }

    fn recv_from(
        &mut self,
        input: &[u8],
        src: Option<&Bytes>,
        _now: Instant,
    ) -> Result<usize, H2Error> {
        if self.state == State::Closed {
            return Err(conn_err(ErrorCode::PROTOCOL_ERROR, "connection closed"));
        }
        let mut used = 0;
        loop {
            let rest = &input[used..];
            let result = match Frame::parse(rest, self.settings.max_frame_size) {
                Ok(Some((frame, n))) => {
                    used += n;
                    self.on_frame(frame, src)
                }
                Ok(None) => break,
                Err(e) => {
                    used += HEADER_LEN + FrameHeader::parse(rest).map_or(0, |h| h.len as usize);
                    Err(e)
                }
            };
            if let Err(e) = result {
                self.answer(e).map_err(|e| self.fail(e))?;
            }
            if self.queued_acks > self.settings.max_queued_acks {
                return Err(self.fail(conn_err(
                    ErrorCode::ENHANCE_YOUR_CALM,
                    "too many SETTINGS/PING ACKs queued",
                )));
            }
            if self.state == State::Closed {
                break;
            }
        }
        Ok(used)
    }

    /// Answers a protocol error: a stream error with RST_STREAM, unless it has to end the
    /// connection (a connection error, an error inside a header block or before the server's
    /// SETTINGS, or one on a stream we never opened).
    fn answer(&mut self, e: H2Error) -> Result<(), H2Error> {
        let Scope::Stream(stream) = e.scope else { return Err(e) };
        if self.partial.is_some() || self.state == State::AwaitSettings || self.is_idle(stream) {
            return Err(conn_err(e.code, e.reason));
        }
        self.stream_error(e);
        Ok(())
    }

    fn on_frame(&mut self, frame: Frame<'_>, src: Option<&Bytes>) -> Result<(), H2Error> {
        if self.state == State::AwaitSettings {
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
            Frame::Headers { stream, end_stream, end_headers, block, .. } => {
                if end_headers {
                    self.on_header_block(stream, end_stream, block)
                } else {
                    if block.len() > self.settings.max_header_block_bytes as usize {
                        return Err(conn_err(
                            ErrorCode::ENHANCE_YOUR_CALM,
                            "header block too large",
                        ));
                    }
                    self.partial = Some(Box::new(PartialBlock {
                        stream,
                        end_stream,
                        block: block.to_vec(),
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
                    self.on_header_block(stream, done.end_stream, &done.block)
                } else {
                    Ok(())
                }
            }
            Frame::Priority { .. } => Ok(()),
            Frame::RstStream { stream, code } => self.on_rst(stream, code),
            Frame::Settings { ack, params } => {
                if !ack {
                    self.apply_settings(params)?;
                    FrameHeader { len: 0, kind: kind::SETTINGS, flags: flag::ACK, stream: 0 }
                        .write(&mut self.out);
                    self.queued_acks += 1;
                }
                Ok(())
            }
            Frame::PushPromise { .. } => {
                Err(conn_err(ErrorCode::PROTOCOL_ERROR, "PUSH_PROMISE with push disabled"))
            }
            Frame::Ping { ack, payload } => {
                if !ack {
                    Frame::Ping { ack: true, payload }.encode(&mut self.out);
                    self.queued_acks += 1;
                }
                Ok(())
            }
            Frame::GoAway { last_stream, code, .. } => {
                self.on_goaway(last_stream, code);
                Ok(())
            }
            Frame::WindowUpdate { stream, increment } => self.on_window_update(stream, increment),
            Frame::Unknown { .. } => Ok(()),
        }
    }

    /// Whether `stream` was never opened by us (even ids are never ours: push is disabled).
    fn is_idle(&self, stream: u32) -> bool {
        stream.is_multiple_of(2) || stream >= self.next_stream
    }

    fn index(&self, stream: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.id == stream)
    }

    fn on_goaway(&mut self, last_stream: u32, code: ErrorCode) {
        let last = self.goaway_received.map_or(last_stream, |l| l.min(last_stream));
        self.goaway_received = Some(last);
        let mut i = 0;
        while i < self.streams.len() {
            if self.streams[i].id > last {
                let s = self.remove_stream(i);
                self.recent.push(s.id, Closed::ResetByUs);
                self.events.push_back(ClientEvent::Refused { stream: s.id });
            } else {
                i += 1;
            }
        }
        self.events.push_back(ClientEvent::GoAway { last_stream, code });
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
            if self.is_idle(stream) {
                return Err(conn_err(ErrorCode::PROTOCOL_ERROR, "DATA on an idle stream"));
            }
            // A stream we reset or that ended: late frames are dropped, their window returned.
            self.release_connection(flow);
            if self.recent.get(stream) == Some(Closed::Other) {
                return Err(H2Error::stream(
                    stream,
                    ErrorCode::STREAM_CLOSED,
                    "DATA on a closed stream",
                ));
            }
            return Ok(());
        };
        let s = &mut self.streams[i];
        if s.recv_closed {
            self.release_connection(flow);
            return Err(H2Error::stream(stream, ErrorCode::STREAM_CLOSED, "DATA after END_STREAM"));
        }
        if !s.head_received {
            self.release_connection(flow);
            return Err(stream_err(stream, "DATA before the response head"));
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
                return Err(stream_err(stream, "DATA disagrees with content-length"));
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
            self.events.push_back(ClientEvent::Data { stream, data, end_stream });
        }
        self.remove_if_closed(stream);
        Ok(())
    }

    fn on_header_block(
        &mut self,
        stream: u32,
        end_stream: bool,
        block: &[u8],
    ) -> Result<(), H2Error> {
        let Some(i) = self.index(stream) else {
            // Decode anyway: the HPACK state must stay in step.
            self.decoder.decode(block, |_, _| {})?;
            if self.is_idle(stream) {
                return Err(conn_err(ErrorCode::PROTOCOL_ERROR, "HEADERS on an idle stream"));
            }
            if self.recent.get(stream) == Some(Closed::Other) {
                return Err(H2Error::stream(
                    stream,
                    ErrorCode::STREAM_CLOSED,
                    "HEADERS on a closed stream",
                ));
            }
            return Ok(());
        };
        if self.streams[i].head_received {
            // Trailers.
            let mut builder = HeadBuilder::trailers();
            let decoded = self.decoder.decode(block, |n, v| builder.field(n, v))?;
            let s = &mut self.streams[i];
            if s.recv_closed {
                return Err(H2Error::stream(
                    stream,
                    ErrorCode::STREAM_CLOSED,
                    "HEADERS after END_STREAM",
                ));
            }
            if !end_stream {
                return Err(stream_err(stream, "trailers without END_STREAM"));
            }
            if decoded.too_large {
                return Err(stream_err(stream, "trailers over the header list size"));
            }
            if s.content_length.is_some_and(|cl| cl != s.received) {
                return Err(stream_err(stream, "body shorter than content-length"));
            }
            let trailers = builder.finish_trailers().map_err(|why| stream_err(stream, why))?;
            s.recv_closed = true;
            self.events.push_back(ClientEvent::Trailers { stream, trailers });
            self.remove_if_closed(stream);
            return Ok(());
        }
        let mut builder = ResponseBuilder::new();
        let decoded = self.decoder.decode(block, |n, v| builder.field(n, v))?;
        if decoded.too_large {
            return Err(stream_err(stream, "response head over the header list size"));
        }
        let head = builder.finish().map_err(|why| stream_err(stream, why))?;
        let s = &mut self.streams[i];
        if head.status < 200 {
            if end_stream {
                return Err(stream_err(stream, "interim response with END_STREAM"));
            }
            s.interim_heads += 1;
            if s.interim_heads > self.settings.max_interim_heads {
                return Err(stream_err(stream, "too many interim responses"));
            }
            return Ok(());
        }
        let bodiless = s.head_request || head.status == 204 || head.status == 304;
        if !bodiless {
            if end_stream && head.content_length.is_some_and(|cl| cl != 0) {
                return Err(stream_err(stream, "no body but content-length > 0"));
            }
            s.content_length = head.content_length;
        }
        s.head_received = true;
        s.recv_closed = end_stream;
        self.events.push_back(ClientEvent::Response { stream, head, end_stream });
        self.remove_if_closed(stream);
        Ok(())
    }

    fn on_rst(&mut self, stream: u32, code: ErrorCode) -> Result<(), H2Error> {
        let Some(i) = self.index(stream) else {
            if self.is_idle(stream) {
                return Err(conn_err(ErrorCode::PROTOCOL_ERROR, "RST_STREAM on an idle stream"));
            }
            return Ok(());
        };
        let s = self.remove_stream(i);
        self.recent.push(stream, Closed::Other);
        if code == ErrorCode::REFUSED_STREAM && !s.head_received {
            self.events.push_back(ClientEvent::Refused { stream });
        } else {
            self.events.push_back(ClientEvent::Reset { stream, code });
        }
        Ok(())
    }

    fn apply_settings(&mut self, params: &[u8]) -> Result<(), H2Error> {
        let old_window = self.peer.initial_window;
        for (id, value) in frame::settings_params(params) {
            match id {
                setting::HEADER_TABLE_SIZE => self.encoder.set_peer_table_size(value as usize),
                setting::ENABLE_PUSH if value != 0 => {
                    return Err(conn_err(
                        ErrorCode::PROTOCOL_ERROR,
                        "server sent SETTINGS_ENABLE_PUSH = 1",
                    ))
                }
                setting::MAX_CONCURRENT_STREAMS => self.peer.max_concurrent_streams = value,
                setting::INITIAL_WINDOW_SIZE => self.peer.initial_window = value,
                setting::MAX_FRAME_SIZE => self.peer.max_frame_size = value,
                setting::MAX_HEADER_LIST_SIZE => self.peer.max_header_list_size = value,
                _ => {}
            }
        }
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
                    self.events.push_back(ClientEvent::WindowUpdate { stream: s.id });
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
            self.events.push_back(ClientEvent::WindowUpdate { stream: 0 });
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
                    self.events.push_back(ClientEvent::WindowUpdate { stream });
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
            self.remove_stream(i);
            self.events.push_back(ClientEvent::Reset { stream, code: e.code });
        }
        self.recent.push(stream, Closed::ResetByUs);
    }

    /// Answers a connection error: GOAWAY, closed.
    fn fail(&mut self, e: H2Error) -> H2Error {
        if self.state != State::Closed {
            Frame::GoAway { last_stream: 0, code: e.code, debug: e.reason.as_bytes() }
                .encode(&mut self.out);
            self.goaway_sent = true;
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

    /// Returns `n` received bytes to the connection window and, while the server may still
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
    fn remove_stream(&mut self, i: usize) -> ClientStream {
        let s = self.streams.swap_remove(i);
        self.release_connection(s.unreleased);
        s
    }

    // ----- application side --------------------------------------------------------------

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        let e = self.events.pop_front();
        if e.is_none() {
            self.release_idle_memory();
        }
        e
    }

    /// Whether [`ClientConnection::send_request`] would open a stream now.
    pub fn can_open(&self) -> bool {
        self.open_check().is_ok()
    }

    fn open_check(&self) -> Result<(), RequestError> {
        if self.state == State::Closed {
            return Err(RequestError::ConnectionClosed);
        }
        if self.goaway_received.is_some() || self.goaway_sent || self.next_stream > MAX_STREAM_ID {
            return Err(RequestError::GoingAway);
        }
        if self.streams.len() >= self.peer.max_concurrent_streams as usize {
            return Err(RequestError::NoCapacity);
        }
        Ok(())
    }

    /// Opens a stream with a request head and returns its id. `fields` are the regular
    /// fields (lowercase names; walked twice: checked, then encoded); `end_stream` sends the
    /// request without a body.
    pub fn send_request<'f, F>(
        &mut self,
        line: RequestLine<'_>,
        fields: F,
        end_stream: bool,
    ) -> Result<u32, RequestError>
    where
        F: IntoIterator<Item = (&'f [u8], &'f [u8])> + Clone,
    {
        self.open_check()?;
        let connect = line.method == b"CONNECT";
        let token = |v: &[u8]| !v.is_empty() && v.iter().all(|&b| b.is_ascii_graphic());
        if !token(line.method)
            || (!connect && (!token(line.scheme) || !token(line.path)))
            || (connect && line.authority.is_empty())
            || !line.authority.iter().all(u8::is_ascii_graphic)
        {
            return Err(RequestError::InvalidField);
        }
        let mut size =
            list_size(b":method", line.method) + list_size(b":authority", line.authority);
        if !connect {
            size += list_size(b":scheme", line.scheme) + list_size(b":path", line.path);
        }
        for (n, v) in fields.clone() {
            if !name_ok(n)
                || connection_specific(n)
                || (n == b"te" && !v.eq_ignore_ascii_case(b"trailers"))
                || v.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n')
            {
                return Err(RequestError::InvalidField);
            }
            size += list_size(n, v);
        }
        if size > self.peer.max_header_list_size as usize {
            return Err(RequestError::HeadTooLarge);
        }
        let stream = self.next_stream;
        self.next_stream += 2;
        let encoder = &mut self.encoder;
        write_header_block(
            &mut self.out,
            stream,
            self.peer.max_frame_size as usize,
            end_stream,
            |out| {
                encoder.begin_block(out);
                encoder.encode_field(b":method", line.method, out);
                if !connect {
                    encoder.encode_field(b":scheme", line.scheme, out);
                }
                if !line.authority.is_empty() {
                    encoder.encode_field(b":authority", line.authority, out);
                }
                if !connect {
                    encoder.encode_field(b":path", line.path, out);
                }
                for (n, v) in fields {
                    encoder.encode_field(n, v, out);
                }
            },
        );
        self.streams.push(ClientStream {
            id: stream,
            recv_closed: false,
            send_closed: end_stream,
            head_received: false,
            head_request: line.method == b"HEAD",
            interim_heads: 0,
            recv: RecvWindow::new(
                self.settings.initial_window_size,
                self.settings.initial_window_size,
            ),
            send: SendWindow::new(self.peer.initial_window),
            content_length: None,
            received: 0,
            unreleased: 0,
        });
        Ok(stream)
    }

    fn live(&self, stream: u32) -> Result<usize, SendError> {
        if self.state == State::Closed {
            return Err(SendError::ConnectionClosed);
        }
        let i = self.index(stream).ok_or(SendError::UnknownStream)?;
        if self.streams[i].send_closed {
            return Err(SendError::StreamEnded);
        }
        Ok(i)
    }

    /// Bytes `send_data` would take now on `stream` (0 if blocked, ended or unknown).
    pub fn send_capacity(&self, stream: u32) -> usize {
        match self.index(stream) {
            Some(i) if !self.streams[i].send_closed => {
                self.streams[i].send.available().min(self.conn_send.available())
            }
            _ => 0,
        }
    }

    /// Sends as much of `data` as the connection and stream windows allow, in DATA frames of
    /// at most the server's SETTINGS_MAX_FRAME_SIZE, and returns how much it took.
    /// `end_stream` ends the request only if all of `data` was taken (an empty `data` with
    /// `end_stream` sends an empty DATA frame with END_STREAM). Call again with the rest
    /// after a [`ClientEvent::WindowUpdate`].
    pub fn send_data(
        &mut self,
        stream: u32,
        data: &[u8],
        end_stream: bool,
    ) -> Result<usize, SendError> {
        let i = self.live(stream)?;
        let take = data.len().min(self.streams[i].send.available()).min(self.conn_send.available());
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
        let s = &mut self.streams[i];
        s.send.spend(take);
        if ends {
            s.send_closed = true;
            self.remove_if_closed(stream);
        }
        Ok(take)
    }

    /// Sends request trailers, ending the request.
    pub fn send_trailers<'f, F>(&mut self, stream: u32, fields: F) -> Result<(), SendError>
    where
        F: IntoIterator<Item = (&'f [u8], &'f [u8])> + Clone,
    {
        for (n, v) in fields.clone() {
            if !name_ok(n)
                || connection_specific(n)
                || v.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n')
            {
                return Err(SendError::InvalidField);
            }
        }
        let i = self.live(stream)?;
        let encoder = &mut self.encoder;
        write_header_block(&mut self.out, stream, self.peer.max_frame_size as usize, true, |out| {
            encoder.begin_block(out);
            for (n, v) in fields {
                encoder.encode_field(n, v, out);
            }
        });
        self.streams[i].send_closed = true;
        self.remove_if_closed(stream);
        Ok(())
    }

    /// Returns `n` consumed response-body bytes of `stream` to the flow-control windows,
    /// queueing WINDOW_UPDATEs once half a window is consumed. Once a stream is gone, what
    /// was not released yet went back to the connection window already.
    pub fn release_capacity(&mut self, stream: u32, n: usize) {
        let Some(i) = self.index(stream) else { return };
        let s = &mut self.streams[i];
        let n = (n.min(u32::MAX as usize) as u32).min(s.unreleased);
        s.unreleased -= n;
        self.release_window(stream, n);
    }

    /// Resets `stream` with `code` (CANCEL when the downstream went away); no event is raised
    /// for it. Unknown streams are ignored.
    pub fn reset(&mut self, stream: u32, code: ErrorCode) {
        if self.state == State::Closed {
            return;
        }
        if let Some(i) = self.index(stream) {
            self.remove_stream(i);
            Frame::RstStream { stream, code }.encode(&mut self.out);
            self.recent.push(stream, Closed::ResetByUs);
        }
    }

    /// Sends a PING (for liveness checks); the ACK is not reported.
    pub fn ping(&mut self, payload: [u8; 8]) {
        if self.state != State::Closed {
            Frame::Ping { ack: false, payload }.encode(&mut self.out);
        }
    }

    /// Sends GOAWAY: no new streams. With `NO_ERROR` the live streams go on; with an error
    /// code the connection is closed.
    pub fn go_away(&mut self, code: ErrorCode) {
        if self.state == State::Closed {
            return;
        }
        Frame::GoAway { last_stream: 0, code, debug: b"" }.encode(&mut self.out);
        self.goaway_sent = true;
        if code != ErrorCode::NO_ERROR {
            self.state = State::Closed;
        }
    }

    // ----- output and lifecycle -----------------------------------------------------------

    /// Bytes to write to the server.
    pub fn output(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// Marks `n` bytes of [`ClientConnection::output`] as written.
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

    /// Whether the server's SETTINGS arrived (its stream limit is known from then on; a
    /// driver that opens many streams at once on a new connection waits for this).
    pub fn settings_received(&self) -> bool {
        self.state == State::Open
    }

    /// Heap bytes this connection holds (buffers at their capacity, HPACK tables), as far as
    /// it can count them.
    pub fn heap_bytes(&self) -> usize {
        self.out.capacity()
            + self.events.capacity() * std::mem::size_of::<ClientEvent>()
            + self.streams.capacity() * std::mem::size_of::<ClientStream>()
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

    /// Whether `stream` is live (either direction still open).
    pub fn is_live(&self, stream: u32) -> bool {
        self.index(stream).is_some()
    }

    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS (or the assumed value before its
    /// SETTINGS arrived).
    pub fn max_concurrent_streams(&self) -> u32 {
        self.peer.max_concurrent_streams
    }

    /// Whether the connection is closed (after a connection error or an error GOAWAY).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether the server sent GOAWAY (no new streams here).
    pub fn goaway_received(&self) -> bool {
        self.goaway_received.is_some()
    }

    /// Whether the driver may close the socket once the output is written: closed, or a
    /// GOAWAY went either way and no stream is live.
    pub fn wants_close(&self) -> bool {
        self.is_closed()
            || ((self.goaway_sent || self.goaway_received.is_some()) && self.streams.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_builder_checks_status_and_fields() {
        let build = |fields: &[(&str, &str)]| {
            let mut b = ResponseBuilder::new();
            for (n, v) in fields {
                b.field(n.as_bytes(), v.as_bytes());
            }
            b.finish()
        };
        let ok = build(&[(":status", "200"), ("content-length", "5"), ("x", "y")]).unwrap();
        assert_eq!((ok.status, ok.content_length, ok.fields.len()), (200, Some(5), 2));
        assert!(build(&[("x", "y")]).is_err(), "missing :status");
        assert!(build(&[(":status", "20")]).is_err());
        assert!(build(&[(":status", "099")]).is_err());
        assert!(build(&[(":status", "101")]).is_err());
        assert!(build(&[(":status", "200"), (":status", "200")]).is_err());
        assert!(build(&[(":status", "200"), (":path", "/")]).is_err());
        assert!(build(&[("x", "y"), (":status", "200")]).is_err());
        assert!(build(&[(":status", "200"), ("Upper", "y")]).is_err());
        assert!(build(&[(":status", "200"), ("connection", "close")]).is_err());
        assert!(build(&[(":status", "200"), ("x", "a\rb")]).is_err());
        assert!(
            build(&[(":status", "200"), ("content-length", "1"), ("content-length", "2")]).is_err()
        );
        assert!(build(&[(":status", "200"), ("content-length", "x")]).is_err());
    }
}
