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
//! What the server side does alike (frames, SETTINGS, windows, streams, output) lives in the
//! crate's shared endpoint module; this one adds what a client does.
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

use std::time::Instant;

use bytes::Bytes;

use crate::endpoint::{
    self, conn_err, stream_err, Endpoint, Limits, Role, RoleFrame, Side, State, StreamEvent,
};
use crate::error::{ErrorCode, H2Error};
use crate::frame::DEFAULT_MAX_FRAME_SIZE;
use crate::head::{
    check_regular, connection_specific, content_length, has_nul_cr_lf, name_ok, Fields,
};
use crate::hpack;
use crate::stream::{Closed, Stream};

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

/// The client side of one HTTP/2 connection. See the module doc.
#[derive(Debug)]
pub struct ClientConnection {
    /// What both ends do alike: frames, SETTINGS, windows, streams, output.
    ep: Endpoint<ClientEvent>,
    /// Id of the next stream we open.
    next_stream: u32,
    max_interim_heads: u8,
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
            // A usual response head in one allocation each (no regrowth while decoding).
            fields: Fields::with_capacity(256, 8),
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
        if let Err(why) = check_regular(name, value) {
            return self.fail(why);
        }
        if name == b"content-length" {
            match content_length(self.content_length, value) {
                Ok(n) => self.content_length = Some(n),
                Err(why) => return self.fail(why),
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

/// Size of a field as SETTINGS_MAX_HEADER_LIST_SIZE counts it.
fn list_size(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + 32
}

impl StreamEvent for ClientEvent {
    fn data(stream: u32, data: Bytes, end_stream: bool) -> ClientEvent {
        ClientEvent::Data { stream, data, end_stream }
    }

    fn trailers(stream: u32, trailers: Fields) -> ClientEvent {
        ClientEvent::Trailers { stream, trailers }
    }

    fn reset(stream: u32, code: ErrorCode) -> ClientEvent {
        ClientEvent::Reset { stream, code }
    }

    fn window_update(stream: u32) -> ClientEvent {
        ClientEvent::WindowUpdate { stream }
    }
}

impl ClientConnection {
    /// A connection that has queued the preface, its SETTINGS and the connection window
    /// increase for the driver to send.
    pub fn new(settings: ClientSettings) -> ClientConnection {
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
        ClientConnection {
            ep: Endpoint::new(Role::Client, limits, None, settings.assumed_max_concurrent_streams),
            next_stream: 1,
            max_interim_heads: settings.max_interim_heads,
        }
    }

    // ----- input -------------------------------------------------------------------------

    /// Processes received bytes: returns how many were consumed (complete frames; keep the
    /// rest and call again with more). A connection error queues GOAWAY and is returned; the
    /// connection is closed from then on.
    pub fn recv(&mut self, input: &[u8], now: Instant) -> Result<usize, H2Error> {
        endpoint::recv(self, input, None, now)
    }

    /// [`ClientConnection::recv`] without copying DATA payloads: each [`ClientEvent::Data`]
    /// is a slice of `input` (sharing its allocation).
    pub fn recv_bytes(&mut self, input: &Bytes, now: Instant) -> Result<usize, H2Error> {
        endpoint::recv(self, input, Some(input), now)
    }

    fn on_goaway(&mut self, last_stream: u32, code: ErrorCode) {
        let ep = &mut self.ep;
        let last = ep.goaway_received.map_or(last_stream, |l| l.min(last_stream));
        ep.goaway_received = Some(last);
        let mut i = 0;
        while i < ep.streams.len() {
            if ep.streams[i].id > last {
                let Some(s) = ep.remove_stream(i) else { break };
                ep.recent.push(s.id, Closed::ResetByUs);
                ep.events.push_back(ClientEvent::Refused { stream: s.id });
            } else {
                i += 1;
            }
        }
        ep.events.push_back(ClientEvent::GoAway { last_stream, code });
    }

    /// A response head (or an interim one) on the live stream `i`, or a header block on a
    /// stream that is gone (`None`).
    fn on_header_block(
        &mut self,
        stream: u32,
        live: Option<usize>,
        end_stream: bool,
        self_dependent: bool,
        block: &[u8],
    ) -> Result<(), H2Error> {
        let ep = &mut self.ep;
        let Some(i) = live else {
            // Decode anyway: the HPACK state must stay in step.
            ep.decoder.decode(block, |_, _| {})?;
            if ep.is_idle(stream) {
                return Err(conn_err(ErrorCode::PROTOCOL_ERROR, "HEADERS on an idle stream"));
            }
            if ep.recent.get(stream) == Some(Closed::Other) {
                return Err(H2Error::stream(
                    stream,
                    ErrorCode::STREAM_CLOSED,
                    "HEADERS on a closed stream",
                ));
            }
            return Ok(());
        };
        let mut builder = ResponseBuilder::new();
        let decoded = ep.decoder.decode(block, |n, v| builder.field(n, v))?;
        if self_dependent {
            return Err(stream_err(stream, "stream depends on itself"));
        }
        if decoded.too_large {
            return Err(stream_err(stream, "response head over the header list size"));
        }
        let head = builder.finish().map_err(|why| stream_err(stream, why))?;
        let s = &mut ep.streams[i];
        if head.status < 200 {
            if end_stream {
                return Err(stream_err(stream, "interim response with END_STREAM"));
            }
            s.interim_heads += 1;
            if s.interim_heads > self.max_interim_heads {
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
        ep.events.push_back(ClientEvent::Response { stream, head, end_stream });
        ep.remove_if_closed(stream);
        Ok(())
    }

    // ----- application side --------------------------------------------------------------

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.ep.poll_event()
    }

    /// Whether [`ClientConnection::send_request`] would open a stream now.
    pub fn can_open(&self) -> bool {
        self.open_check().is_ok()
    }

    fn open_check(&self) -> Result<(), RequestError> {
        if self.ep.is_closed() {
            return Err(RequestError::ConnectionClosed);
        }
        if self.ep.goaway_received.is_some()
            || self.ep.goaway_sent.is_some()
            || self.next_stream > MAX_STREAM_ID
        {
            return Err(RequestError::GoingAway);
        }
        if self.ep.streams.len() >= self.ep.remote.max_concurrent_streams as usize {
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
                || has_nul_cr_lf(v)
            {
                return Err(RequestError::InvalidField);
            }
            size += list_size(n, v);
        }
        if size > self.ep.remote.max_header_list_size as usize {
            return Err(RequestError::HeadTooLarge);
        }
        let stream = self.next_stream;
        self.next_stream += 2;
        let ep = &mut self.ep;
        ep.last_stream = stream;
        let mut s = Stream::new(stream, ep.limits.initial_window_size, ep.remote.initial_window);
        s.delivered = true;
        s.head_request = line.method == b"HEAD";
        ep.streams.push_back(s);
        ep.send_head(stream, true, end_stream, |encoder, out| {
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
        });
        Ok(stream)
    }

    /// Bytes `send_data` would take now on `stream` (0 if blocked, ended or unknown).
    pub fn send_capacity(&self, stream: u32) -> usize {
        self.ep.send_capacity(stream)
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
        self.ep.send_data(stream, data, end_stream)
    }

    /// Sends request trailers, ending the request.
    pub fn send_trailers<'f, F>(&mut self, stream: u32, fields: F) -> Result<(), SendError>
    where
        F: IntoIterator<Item = (&'f [u8], &'f [u8])> + Clone,
    {
        self.ep.send_trailers(stream, fields)
    }

    /// Returns `n` consumed response-body bytes of `stream` to the flow-control windows,
    /// queueing WINDOW_UPDATEs once half a window is consumed. Once a stream is gone, what
    /// was not released yet went back to the connection window already.
    pub fn release_capacity(&mut self, stream: u32, n: usize) {
        self.ep.release_capacity(stream, n);
    }

    /// Resets `stream` with `code` (CANCEL when the downstream went away); no event is raised
    /// for it. Unknown streams are ignored.
    pub fn reset(&mut self, stream: u32, code: ErrorCode) {
        self.ep.reset(stream, code);
    }

    /// Sends a PING (for liveness checks); the ACK is not reported.
    pub fn ping(&mut self, payload: [u8; 8]) {
        self.ep.ping(payload);
    }

    /// Sends GOAWAY: no new streams. With `NO_ERROR` the live streams go on; with an error
    /// code the connection is closed.
    pub fn go_away(&mut self, code: ErrorCode) {
        self.ep.go_away(code);
    }

    // ----- SETTINGS acknowledgement --------------------------------------------------------

    /// Sets when our SETTINGS (queued by [`ClientConnection::new`]) are overdue if the
    /// server has not acknowledged them by then (RFC 9113 §6.5.3). The driver calls this
    /// once, with the time it wrote them plus its timeout, and asks
    /// [`ClientConnection::settings_overdue`] when its timer fires; without a deadline they
    /// are never overdue.
    pub fn set_settings_deadline(&mut self, deadline: Instant) {
        self.ep.set_settings_deadline(deadline);
    }

    /// The deadline set by [`ClientConnection::set_settings_deadline`] while the server's
    /// ACK is awaited (`None` once it arrived or the connection closed): when to arm a timer.
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

    /// Bytes to write to the server.
    pub fn output(&self) -> &[u8] {
        self.ep.output()
    }

    /// Marks `n` bytes of [`ClientConnection::output`] as written.
    pub fn consumed(&mut self, n: usize) {
        self.ep.consumed(n);
    }

    /// Whether the server's SETTINGS arrived (its stream limit is known from then on; a
    /// driver that opens many streams at once on a new connection waits for this).
    pub fn settings_received(&self) -> bool {
        self.ep.state == State::Open
    }

    /// Heap bytes this connection holds (buffers at their capacity, HPACK tables), as far as
    /// it can count them.
    pub fn heap_bytes(&self) -> usize {
        self.ep.heap_bytes()
    }

    /// Number of live streams.
    pub fn active_streams(&self) -> usize {
        self.ep.streams.len()
    }

    /// Whether `stream` is live (either direction still open).
    pub fn is_live(&self, stream: u32) -> bool {
        self.ep.index(stream).is_some()
    }

    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS (or the assumed value before its
    /// SETTINGS arrived).
    pub fn max_concurrent_streams(&self) -> u32 {
        self.ep.remote.max_concurrent_streams
    }

    /// Whether the connection is closed (after a connection error or an error GOAWAY).
    pub fn is_closed(&self) -> bool {
        self.ep.is_closed()
    }

    /// Whether the server sent GOAWAY (no new streams here).
    pub fn goaway_received(&self) -> bool {
        self.ep.goaway_received.is_some()
    }

    /// Whether the driver may close the socket once the output is written: closed, or a
    /// GOAWAY went either way and no stream is live.
    pub fn wants_close(&self) -> bool {
        self.ep.wants_close()
    }
}

impl Side for ClientConnection {
    type Event = ClientEvent;

    fn endpoint(&mut self) -> &mut Endpoint<ClientEvent> {
        &mut self.ep
    }

    fn on_role_frame(&mut self, frame: RoleFrame<'_>, _now: Instant) -> Result<(), H2Error> {
        match frame {
            RoleFrame::HeaderBlock { stream, live, end_stream, self_dependent, block } => {
                self.on_header_block(stream, live, end_stream, self_dependent, &block)
            }
            RoleFrame::Reset { code, stream: s } => {
                let stream = s.id;
                let event = if code == ErrorCode::REFUSED_STREAM && !s.head_received {
                    ClientEvent::Refused { stream }
                } else {
                    ClientEvent::Reset { stream, code }
                };
                self.ep.events.push_back(event);
                Ok(())
            }
            RoleFrame::GoAway { last_stream, code } => {
                self.on_goaway(last_stream, code);
                Ok(())
            }
        }
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
