//! What the server and the client end of an HTTP/2 connection do alike (RFC 9113), written
//! once: `Connection` and `ClientConnection` each embed one [`Endpoint`] and keep only what
//! their role adds.
//!
//! An endpoint holds the connection-level state of either role: the receive loop ([`recv`]:
//! frames parsed in place, stream errors answered with RST_STREAM, connection errors with
//! GOAWAY), the peer's SETTINGS (applied in order, §6.5.3) and their ACK, the ACK of our own
//! SETTINGS and its deadline, PING, WINDOW_UPDATE, header blocks assembled across CONTINUATION
//! frames, DATA and trailers on live streams, both directions of flow control, the memory of
//! recently closed streams, and the output buffer with every frame we send. What differs —
//! a header block that opens a request or carries a response, a reset the peer sent, GOAWAY
//! from the peer — comes back to the role as a [`RoleFrame`]; events are the role's own type,
//! built through [`StreamEvent`].
//!
//! Protections both roles share: header blocks capped in compressed bytes and CONTINUATION
//! frames, SETTINGS/PING ACKs waiting in an undrained output capped (ACK flood,
//! CVE-2019-9512/9515), empty DATA frames in a row capped (CVE-2019-9518).

use std::borrow::Cow;
use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use crate::connection::{SendError, DEFAULT_WINDOW, PREFACE};
use crate::error::{ErrorCode, H2Error, Scope};
use crate::flow::{RecvWindow, SendWindow};
use crate::frame::{
    self, flag, kind, setting, Frame, FrameHeader, DEFAULT_MAX_FRAME_SIZE, HEADER_LEN, MAX_WINDOW,
};
use crate::head::{connection_specific, has_nul_cr_lf, name_ok, Fields, HeadBuilder};
use crate::hpack;
use crate::stream::{Closed, RecentlyClosed, Stream};

/// Bytes reserved at once when a head is written into an empty, released output.
const OUT_INITIAL: usize = 4096;

/// Which end of the connection this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Accepts streams opened by the client (odd ids).
    Server,
    /// Opens streams (odd ids); the server may not push.
    Client,
}

/// Where the connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// A server waiting for the client preface; `n` bytes of it matched so far.
    Preface(usize),
    /// The peer's first frame must be SETTINGS.
    AwaitSettings,
    Open,
    Closed,
}

/// What we announce and enforce, whichever the role.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    /// SETTINGS_MAX_FRAME_SIZE we accept.
    pub max_frame_size: u32,
    /// SETTINGS_INITIAL_WINDOW_SIZE: each stream's receive window.
    pub initial_window_size: u32,
    /// The connection receive window.
    pub connection_window_size: u32,
    /// SETTINGS_HEADER_TABLE_SIZE for the decoder.
    pub header_table_size: u32,
    /// Ceiling of the encoder's dynamic table.
    pub encoder_table_size: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub max_header_list_size: u32,
    /// Cap on the compressed bytes of one header block.
    pub max_header_block_bytes: u32,
    /// Cap on the CONTINUATION frames of one header block.
    pub max_continuation_frames: u32,
    /// Cap on SETTINGS/PING ACKs queued in an undrained output.
    pub max_queued_acks: u32,
    /// Empty DATA frames (no payload, no END_STREAM) allowed in a row.
    pub max_empty_data_frames: u32,
}

impl Limits {
    /// The frame size and the windows brought into the RFC's ranges.
    fn clamped(self) -> Limits {
        Limits {
            max_frame_size: self
                .max_frame_size
                .clamp(DEFAULT_MAX_FRAME_SIZE, frame::MAX_MAX_FRAME_SIZE),
            initial_window_size: self.initial_window_size.min(MAX_WINDOW),
            connection_window_size: self.connection_window_size.clamp(DEFAULT_WINDOW, MAX_WINDOW),
            ..self
        }
    }
}

/// The peer's settings that shape what we send.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerSettings {
    /// SETTINGS_INITIAL_WINDOW_SIZE: each stream's send window at its start.
    pub initial_window: u32,
    /// SETTINGS_MAX_FRAME_SIZE: the largest frame we may send.
    pub max_frame_size: u32,
    /// SETTINGS_MAX_CONCURRENT_STREAMS: how many streams we may open (a client's concern).
    pub max_concurrent_streams: u32,
    /// SETTINGS_MAX_HEADER_LIST_SIZE: the largest head we may send (a client's concern).
    pub max_header_list_size: u32,
}

/// The events both roles raise for a stream, each role in its own event type.
pub(crate) trait StreamEvent {
    /// Body bytes.
    fn data(stream: u32, data: Bytes, end_stream: bool) -> Self;
    /// Trailers, ending what the peer sends.
    fn trailers(stream: u32, trailers: Fields) -> Self;
    /// The stream is gone after a protocol error on it.
    fn reset(stream: u32, code: ErrorCode) -> Self;
    /// A send window grew (stream 0: the connection's).
    fn window_update(stream: u32) -> Self;
}

/// A received frame whose meaning depends on the role.
#[derive(Debug)]
pub(crate) enum RoleFrame<'a> {
    /// A complete header block that is not trailers of a live stream: a request on a
    /// server, a response head (or a block on a stream gone by) on a client.
    HeaderBlock {
        stream: u32,
        /// Index of the live stream, if it is live.
        live: Option<usize>,
        end_stream: bool,
        /// The HEADERS frame made the stream depend on itself (§5.3.1).
        self_dependent: bool,
        block: Cow<'a, [u8]>,
    },
    /// The peer reset a live stream, already forgotten here.
    Reset { code: ErrorCode, stream: ResetStream },
    /// The peer is going away.
    GoAway { last_stream: u32, code: ErrorCode },
}

/// What the role needs to know of a stream the peer reset (small, so that every frame's
/// [`RoleFrame`] stays small).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ResetStream {
    pub id: u32,
    /// The application knew the stream.
    pub delivered: bool,
    /// We had ended our side.
    pub send_closed: bool,
    /// The peer's head had arrived.
    pub head_received: bool,
}

/// What a role adds to its [`Endpoint`], for the receive loop.
pub(crate) trait Side {
    /// The role's event type.
    type Event: StreamEvent;

    /// The embedded endpoint.
    fn endpoint(&mut self) -> &mut Endpoint<Self::Event>;

    /// Handles a frame whose meaning depends on the role.
    fn on_role_frame(&mut self, frame: RoleFrame<'_>, now: Instant) -> Result<(), H2Error>;

    /// Called after a stream error was answered with RST_STREAM (a server counts these
    /// against its reset budget); an `Err` ends the connection.
    fn after_stream_error(&mut self, _now: Instant) -> Result<(), H2Error> {
        Ok(())
    }
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

/// Checks fields we are asked to send: lowercase token names, neither pseudo-headers nor
/// connection-specific, values without NUL, CR or LF.
pub(crate) fn check_fields<'f>(
    fields: impl IntoIterator<Item = (&'f [u8], &'f [u8])>,
) -> Result<(), SendError> {
    for (n, v) in fields {
        if !name_ok(n) || connection_specific(n) || has_nul_cr_lf(v) {
            return Err(SendError::InvalidField);
        }
    }
    Ok(())
}

pub(crate) fn conn_err(code: ErrorCode, reason: &'static str) -> H2Error {
    H2Error::connection(code, reason)
}

pub(crate) fn stream_err(stream: u32, reason: &'static str) -> H2Error {
    H2Error::stream(stream, ErrorCode::PROTOCOL_ERROR, reason)
}

/// One end of an HTTP/2 connection: everything but what its role adds. See the module doc.
#[derive(Debug)]
pub(crate) struct Endpoint<E> {
    pub role: Role,
    pub state: State,
    pub limits: Limits,
    pub remote: PeerSettings,
    pub decoder: hpack::Decoder,
    pub encoder: hpack::Encoder,
    /// The live streams (open or half-closed), in ascending id order: streams open with
    /// ascending ids and leave by an order-keeping remove, so a lookup is a binary search.
    /// A deque, because streams mostly end oldest first (a remove shifts the shorter side).
    pub streams: VecDeque<Stream>,
    /// Where `index` last found a stream: frames, sends and releases of one stream come in
    /// runs, and a hit skips the search (a stale hint is only a miss: the id is checked).
    last_index: std::cell::Cell<usize>,
    pub recent: RecentlyClosed,
    /// The highest stream id opened so far: by the client on a server, by us on a client.
    pub last_stream: u32,
    partial: Option<Box<PartialBlock>>,
    conn_send: SendWindow,
    conn_recv: RecvWindow,
    pub out: Vec<u8>,
    out_pos: usize,
    pub events: VecDeque<E>,
    queued_acks: u32,
    /// Empty DATA frames without END_STREAM since the last non-empty one.
    empty_data_frames: u32,
    /// Our SETTINGS frames the peer has not acknowledged yet.
    settings_unacked: u32,
    /// When the unacknowledged SETTINGS are overdue, as the driver set it.
    settings_deadline: Option<Instant>,
    /// The last stream id of the GOAWAY we sent.
    pub goaway_sent: Option<u32>,
    /// The lowest last stream id of the GOAWAYs the peer sent.
    pub goaway_received: Option<u32>,
}

impl<E: StreamEvent> Endpoint<E> {
    /// An endpoint that has queued (a client: the preface and) our SETTINGS — with
    /// SETTINGS_MAX_CONCURRENT_STREAMS when `max_concurrent_streams` is given — and the
    /// connection window increase. `peer_max_concurrent_streams` is assumed until the peer's
    /// SETTINGS say otherwise.
    pub fn new(
        role: Role,
        limits: Limits,
        max_concurrent_streams: Option<u32>,
        peer_max_concurrent_streams: u32,
    ) -> Endpoint<E> {
        let limits = limits.clamped();
        let mut ep = Endpoint {
            role,
            state: match role {
                Role::Server => State::Preface(0),
                Role::Client => State::AwaitSettings,
            },
            decoder: hpack::Decoder::new(
                limits.header_table_size as usize,
                limits.max_header_list_size as usize,
            ),
            encoder: hpack::Encoder::new(limits.encoder_table_size as usize),
            remote: PeerSettings {
                initial_window: DEFAULT_WINDOW,
                max_frame_size: DEFAULT_MAX_FRAME_SIZE,
                max_concurrent_streams: peer_max_concurrent_streams,
                max_header_list_size: u32::MAX,
            },
            streams: VecDeque::new(),
            last_index: std::cell::Cell::new(0),
            recent: RecentlyClosed::default(),
            last_stream: 0,
            partial: None,
            conn_send: SendWindow::new(DEFAULT_WINDOW),
            conn_recv: RecvWindow::new(
                limits.connection_window_size,
                limits.connection_window_size,
            ),
            out: Vec::with_capacity(128),
            out_pos: 0,
            events: VecDeque::new(),
            queued_acks: 0,
            empty_data_frames: 0,
            settings_unacked: 1,
            settings_deadline: None,
            goaway_sent: None,
            goaway_received: None,
            limits,
        };
        if role == Role::Client {
            ep.out.extend_from_slice(PREFACE);
        }
        let l = &ep.limits;
        let mut params = [(0, 0); 6];
        let mut n = 0;
        let mut announce = |id, value| {
            params[n] = (id, value);
            n += 1;
        };
        announce(setting::HEADER_TABLE_SIZE, l.header_table_size);
        announce(setting::ENABLE_PUSH, 0);
        if let Some(max) = max_concurrent_streams {
            announce(setting::MAX_CONCURRENT_STREAMS, max);
        }
        announce(setting::INITIAL_WINDOW_SIZE, l.initial_window_size);
        announce(setting::MAX_FRAME_SIZE, l.max_frame_size);
        announce(setting::MAX_HEADER_LIST_SIZE, l.max_header_list_size);
        frame::write_settings(&mut ep.out, &params[..n]);
        let extra = l.connection_window_size - DEFAULT_WINDOW;
        if extra > 0 {
            Frame::WindowUpdate { stream: 0, increment: extra }.encode(&mut ep.out);
        }
        ep
    }

    // ----- input -------------------------------------------------------------------------

    /// Handles the frames both roles treat alike; returns the others for the role.
    fn on_frame<'a>(
        &mut self,
        frame: Frame<'a>,
        src: Option<&Bytes>,
    ) -> Result<Option<RoleFrame<'a>>, H2Error> {
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
                self.on_data(stream, data, src, flow, end_stream)?;
                Ok(None)
            }
            Frame::Headers { stream, end_stream, end_headers, priority, block, .. } => {
                // A stream depending on itself is refused, after its block is decoded (the
                // HPACK state must stay in step).
                let self_dependent = priority.is_some_and(|p| p.dependency == stream);
                if end_headers {
                    return self.on_header_block(
                        stream,
                        end_stream,
                        self_dependent,
                        Cow::Borrowed(block),
                    );
                }
                if block.len() > self.limits.max_header_block_bytes as usize {
                    return Err(conn_err(ErrorCode::ENHANCE_YOUR_CALM, "header block too large"));
                }
                self.partial = Some(Box::new(PartialBlock {
                    stream,
                    end_stream,
                    self_dependent,
                    block: block.to_vec(),
                    frames: 0,
                }));
                Ok(None)
            }
            Frame::Continuation { stream, end_headers, block } => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err(conn_err(
                        ErrorCode::PROTOCOL_ERROR,
                        "CONTINUATION without HEADERS",
                    ));
                };
                partial.frames += 1;
                if partial.block.len() + block.len() > self.limits.max_header_block_bytes as usize
                    || partial.frames > self.limits.max_continuation_frames
                {
                    return Err(conn_err(
                        ErrorCode::ENHANCE_YOUR_CALM,
                        "header block too large (CONTINUATION flood)",
                    ));
                }
                partial.block.extend_from_slice(block);
                if !end_headers {
                    return Ok(None);
                }
                let Some(done) = self.partial.take() else {
                    return Err(conn_err(
                        ErrorCode::PROTOCOL_ERROR,
                        "CONTINUATION without HEADERS",
                    ));
                };
                self.on_header_block(
                    stream,
                    done.end_stream,
                    done.self_dependent,
                    Cow::Owned(done.block),
                )
            }
            Frame::Priority { stream, priority } => {
                if priority.dependency == stream {
                    return Err(stream_err(stream, "stream depends on itself"));
                }
                Ok(None)
            }
            Frame::RstStream { stream, code } => self.on_rst(stream, code),
            Frame::Settings { ack: true, .. } => {
                self.settings_unacked = self.settings_unacked.saturating_sub(1);
                Ok(None)
            }
            Frame::Settings { ack: false, params } => {
                self.apply_settings(params)?;
                FrameHeader { len: 0, kind: kind::SETTINGS, flags: flag::ACK, stream: 0 }
                    .write(&mut self.out);
                self.queued_acks += 1;
                Ok(None)
            }
            Frame::PushPromise { .. } => Err(conn_err(
                ErrorCode::PROTOCOL_ERROR,
                match self.role {
                    Role::Server => "PUSH_PROMISE sent to a server",
                    Role::Client => "PUSH_PROMISE with push disabled",
                },
            )),
            Frame::Ping { ack, payload } => {
                if !ack {
                    Frame::Ping { ack: true, payload }.encode(&mut self.out);
                    self.queued_acks += 1;
                }
                Ok(None)
            }
            Frame::GoAway { last_stream, code, .. } => {
                Ok(Some(RoleFrame::GoAway { last_stream, code }))
            }
            Frame::WindowUpdate { stream, increment } => {
                self.on_window_update(stream, increment)?;
                Ok(None)
            }
            Frame::Unknown { .. } => Ok(None),
        }
    }

    /// Whether `stream` was never opened: above the highest id opened so far, or even (no
    /// push, so no even stream ever opens).
    pub fn is_idle(&self, stream: u32) -> bool {
        stream.is_multiple_of(2) || stream > self.last_stream
    }

    /// Index of the live `stream`.
    pub fn index(&self, stream: u32) -> Option<usize> {
        let hint = self.last_index.get();
        if self.streams.get(hint).is_some_and(|s| s.id == stream) {
            return Some(hint);
        }
        let i = self.streams.binary_search_by_key(&stream, |s| s.id).ok()?;
        self.last_index.set(i);
        Some(i)
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
            if self.empty_data_frames > self.limits.max_empty_data_frames {
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
            // A stream gone by: late frames after our RST_STREAM must be ignored (§5.1), and
            // so are those on a stream the ring forgot; their window is returned.
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
            self.events.push_back(E::data(stream, data, end_stream));
        }
        self.remove_if_closed(stream);
        Ok(())
    }

    /// A complete header block: trailers of a live stream whose head arrived are handled
    /// here, anything else goes to the role.
    fn on_header_block<'a>(
        &mut self,
        stream: u32,
        end_stream: bool,
        self_dependent: bool,
        block: Cow<'a, [u8]>,
    ) -> Result<Option<RoleFrame<'a>>, H2Error> {
        let live = self.index(stream);
        if let Some(i) = live {
            if self.streams[i].head_received {
                self.on_trailers(i, end_stream, self_dependent, &block)?;
                return Ok(None);
            }
        }
        Ok(Some(RoleFrame::HeaderBlock { stream, live, end_stream, self_dependent, block }))
    }

    fn on_trailers(
        &mut self,
        i: usize,
        end_stream: bool,
        self_dependent: bool,
        block: &[u8],
    ) -> Result<(), H2Error> {
        let stream = self.streams[i].id;
        let mut builder = HeadBuilder::trailers();
        let decoded = self.decoder.decode(block, |n, v| builder.field(n, v))?;
        if self_dependent {
            return Err(stream_err(stream, "stream depends on itself"));
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
        self.events.push_back(E::trailers(stream, trailers));
        self.remove_if_closed(stream);
        Ok(())
    }

    fn on_rst<'a>(
        &mut self,
        stream: u32,
        code: ErrorCode,
    ) -> Result<Option<RoleFrame<'a>>, H2Error> {
        let Some(i) = self.index(stream) else {
            if self.is_idle(stream) {
                return Err(conn_err(ErrorCode::PROTOCOL_ERROR, "RST_STREAM on an idle stream"));
            }
            return Ok(None);
        };
        let Some(s) = self.remove_stream(i) else { return Ok(None) };
        self.recent.push(stream, Closed::Other);
        let stream = ResetStream {
            id: stream,
            delivered: s.delivered,
            send_closed: s.send_closed,
            head_received: s.head_received,
        };
        Ok(Some(RoleFrame::Reset { code, stream }))
    }

    /// Applies the peer's SETTINGS in the order of the frame (§6.5.3).
    fn apply_settings(&mut self, params: &[u8]) -> Result<(), H2Error> {
        let start = self.remote.initial_window as i64;
        let mut highest = start;
        for (id, value) in frame::settings_params(params) {
            match id {
                setting::HEADER_TABLE_SIZE => self.encoder.set_peer_table_size(value as usize),
                setting::ENABLE_PUSH if value != 0 && self.role == Role::Client => {
                    return Err(conn_err(
                        ErrorCode::PROTOCOL_ERROR,
                        "server sent SETTINGS_ENABLE_PUSH = 1",
                    ))
                }
                setting::MAX_CONCURRENT_STREAMS => self.remote.max_concurrent_streams = value,
                setting::INITIAL_WINDOW_SIZE => {
                    self.remote.initial_window = value;
                    highest = highest.max(value as i64);
                }
                setting::MAX_FRAME_SIZE => self.remote.max_frame_size = value,
                setting::MAX_HEADER_LIST_SIZE => self.remote.max_header_list_size = value,
                _ => {} // ENABLE_PUSH from a client: we never push; others: unknown.
            }
        }
        // Each INITIAL_WINDOW_SIZE value moves every stream's send window by its change from
        // the one before (§6.9.2), and a step that takes a window above 2^31-1 is an error
        // even if a later value brings it back. A window is highest after the highest value,
        // so that one step is checked; the windows then move to the last value. One pass
        // over the streams, however often the frame repeats the parameter.
        let peak = highest - start;
        let delta = self.remote.initial_window as i64 - start;
        if peak == 0 && delta == 0 {
            return Ok(());
        }
        for s in &mut self.streams {
            let mut window = s.send;
            if !window.shift(peak) {
                return Err(conn_err(
                    ErrorCode::FLOW_CONTROL_ERROR,
                    "SETTINGS_INITIAL_WINDOW_SIZE overflows a window",
                ));
            }
            s.send.shift(delta); // below the peak just checked: cannot overflow
            if delta > 0 && !s.send_closed {
                self.events.push_back(E::window_update(s.id));
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
            self.events.push_back(E::window_update(0));
            return Ok(());
        }
        match self.index(stream) {
            Some(i) => {
                let s = &mut self.streams[i];
                if !s.send.grow(increment) {
                    return Err(H2Error::stream(
                        stream,
                        ErrorCode::FLOW_CONTROL_ERROR,
                        "stream window above 2^31-1",
                    ));
                }
                if !s.send_closed {
                    self.events.push_back(E::window_update(stream));
                }
                Ok(())
            }
            None if self.is_idle(stream) => {
                Err(conn_err(ErrorCode::PROTOCOL_ERROR, "WINDOW_UPDATE on an idle stream"))
            }
            None => Ok(()),
        }
    }

    /// Answers a stream error: RST_STREAM, forget the stream, tell the application if it
    /// knows the stream.
    pub fn stream_error(&mut self, stream: u32, code: ErrorCode) {
        Frame::RstStream { stream, code }.encode(&mut self.out);
        if let Some(s) = self.index(stream).and_then(|i| self.remove_stream(i)) {
            if s.delivered {
                self.events.push_back(E::reset(stream, code));
            }
        }
        self.recent.push(stream, Closed::ResetByUs);
    }

    /// The last stream id our GOAWAY names: the highest the client opened on a server; 0 on
    /// a client (the server may open none).
    fn goaway_last_stream(&self) -> u32 {
        match self.role {
            Role::Server => self.last_stream,
            Role::Client => 0,
        }
    }

    /// Answers a connection error: GOAWAY, closed.
    pub fn fail(&mut self, e: H2Error) -> H2Error {
        if self.state != State::Closed {
            let last = self.goaway_last_stream();
            Frame::GoAway { last_stream: last, code: e.code, debug: e.reason.as_bytes() }
                .encode(&mut self.out);
            self.goaway_sent = Some(last);
            self.state = State::Closed;
        }
        e
    }

    /// Forgets `stream` if both directions are closed.
    pub fn remove_if_closed(&mut self, stream: u32) {
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

    /// Returns `n` received bytes to the connection window and, while the peer may still
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

    /// Forgets the live stream at index `i` (as `index` found it), returning its unreleased
    /// bytes to the connection window; `None` if there is none there.
    pub fn remove_stream(&mut self, i: usize) -> Option<Stream> {
        let s = self.streams.remove(i)?;
        self.release_connection(s.unreleased);
        Some(s)
    }

    // ----- application side --------------------------------------------------------------

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<E> {
        let e = self.events.pop_front();
        if e.is_none() {
            self.release_idle_memory();
        }
        e
    }

    /// Returns `n` consumed body bytes of `stream` to the windows (see the roles' docs).
    pub fn release_capacity(&mut self, stream: u32, n: usize) {
        let Some(i) = self.index(stream) else { return };
        let s = &mut self.streams[i];
        let n = (n.min(u32::MAX as usize) as u32).min(s.unreleased);
        s.unreleased -= n;
        self.release_window(stream, n);
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

    /// Index of the live `stream` we may still send on.
    pub fn live(&self, stream: u32) -> Result<usize, SendError> {
        if self.state == State::Closed {
            return Err(SendError::ConnectionClosed);
        }
        let i = self.index(stream).ok_or(SendError::UnknownStream)?;
        if self.streams[i].send_closed {
            return Err(SendError::StreamEnded);
        }
        Ok(i)
    }

    /// Writes HEADERS (+ CONTINUATION frames when the block is larger than the peer's
    /// SETTINGS_MAX_FRAME_SIZE) with the block `encode` appends; `final_head` marks our head
    /// as sent, `end_stream` ends our side of the stream.
    pub fn send_head(
        &mut self,
        stream: u32,
        final_head: bool,
        end_stream: bool,
        encode: impl FnOnce(&mut hpack::Encoder, &mut Vec<u8>),
    ) {
        let out = &mut self.out;
        if out.capacity() == 0 {
            // The output was released while idle: one allocation for a typical turn's frames
            // instead of growing from a few bytes field by field.
            out.reserve(OUT_INITIAL);
        }
        let start = out.len();
        FrameHeader { len: 0, kind: kind::HEADERS, flags: 0, stream }.write(out);
        self.encoder.begin_block(out);
        encode(&mut self.encoder, out);
        let block_len = out.len() - start - HEADER_LEN;
        let max = self.remote.max_frame_size as usize;
        let end_flag = if end_stream { flag::END_STREAM } else { 0 };
        if block_len <= max {
            frame::patch_len(out, start);
            out[start + 4] = flag::END_HEADERS | end_flag;
        } else {
            let block = out.split_off(start + HEADER_LEN);
            out.truncate(start);
            let mut chunks = block.chunks(max).peekable();
            let mut first = true;
            while let Some(chunk) = chunks.next() {
                let last = chunks.peek().is_none();
                let (k, flags) =
                    if first { (kind::HEADERS, end_flag) } else { (kind::CONTINUATION, 0) };
                let flags = flags | if last { flag::END_HEADERS } else { 0 };
                FrameHeader { len: chunk.len() as u32, kind: k, flags, stream }.write(out);
                out.extend_from_slice(chunk);
                first = false;
            }
        }
        if let Some(i) = self.index(stream) {
            let s = &mut self.streams[i];
            s.head_sent |= final_head;
            s.send_closed |= end_stream;
        }
        self.remove_if_closed(stream);
    }

    /// Sends as much of `data` as the windows allow (see the roles' `send_data`).
    pub fn send_data(
        &mut self,
        stream: u32,
        data: &[u8],
        end_stream: bool,
    ) -> Result<usize, SendError> {
        let i = self.live(stream)?;
        let s = &self.streams[i];
        if !s.head_sent {
            return Err(SendError::WrongState);
        }
        let take = data.len().min(s.send.available()).min(self.conn_send.available());
        if take == 0 && !(data.is_empty() && end_stream) {
            return Ok(0);
        }
        let ends = end_stream && take == data.len();
        let max = self.remote.max_frame_size as usize;
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

    /// Sends trailers after our head, ending our side of the stream.
    pub fn send_trailers<'f, F>(&mut self, stream: u32, fields: F) -> Result<(), SendError>
    where
        F: IntoIterator<Item = (&'f [u8], &'f [u8])> + Clone,
    {
        check_fields(fields.clone())?;
        let i = self.live(stream)?;
        if !self.streams[i].head_sent {
            return Err(SendError::WrongState);
        }
        self.send_head(stream, false, true, |encoder, out| {
            for (n, v) in fields {
                encoder.encode_field(n, v, out);
            }
        });
        Ok(())
    }

    /// Resets `stream` with `code` (no event). Unknown streams are ignored.
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

    /// Sends a PING (not an ACK) with `payload`.
    pub fn ping(&mut self, payload: [u8; 8]) {
        if self.state != State::Closed {
            Frame::Ping { ack: false, payload }.encode(&mut self.out);
        }
    }

    /// Sends GOAWAY: graceful with `NO_ERROR`, closing with any other code.
    pub fn go_away(&mut self, code: ErrorCode) {
        if self.state == State::Closed {
            return;
        }
        let last = self.goaway_last_stream();
        Frame::GoAway { last_stream: last, code, debug: b"" }.encode(&mut self.out);
        self.goaway_sent = Some(last);
        if code != ErrorCode::NO_ERROR {
            self.state = State::Closed;
        }
    }

    // ----- SETTINGS acknowledgement --------------------------------------------------------

    /// Sets when our SETTINGS are overdue if the peer has not acknowledged them.
    pub fn set_settings_deadline(&mut self, deadline: Instant) {
        self.settings_deadline = Some(deadline);
    }

    /// The deadline for the peer's SETTINGS ACK, while one is awaited and a deadline is set.
    pub fn settings_deadline(&self) -> Option<Instant> {
        self.settings_deadline.filter(|_| self.settings_unacked > 0 && self.state != State::Closed)
    }

    /// Whether our SETTINGS are still unacknowledged at `now`, past the deadline.
    pub fn settings_overdue(&self, now: Instant) -> bool {
        self.settings_deadline().is_some_and(|deadline| now >= deadline)
    }

    // ----- output and lifecycle -----------------------------------------------------------

    /// Bytes to write to the peer.
    pub fn output(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// Marks `n` bytes of the output as written.
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
            self.streams = VecDeque::new();
        }
        if self.streams.is_empty() {
            self.decoder.release_scratch();
        }
    }

    /// Heap bytes held (buffers at their capacity, HPACK tables), as far as they can be
    /// counted.
    pub fn heap_bytes(&self) -> usize {
        self.out.capacity()
            + self.events.capacity() * std::mem::size_of::<E>()
            + self.streams.capacity() * std::mem::size_of::<Stream>()
            + self.decoder.heap_bytes()
            + self.encoder.heap_bytes()
            + self
                .partial
                .as_ref()
                .map_or(0, |p| std::mem::size_of::<PartialBlock>() + p.block.capacity())
    }

    /// Whether the connection is closed (after a connection error or an error GOAWAY).
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// Whether the driver may close the socket once the output is written: closed, or a
    /// GOAWAY went either way and no stream is live.
    pub fn wants_close(&self) -> bool {
        self.is_closed()
            || ((self.goaway_sent.is_some() || self.goaway_received.is_some())
                && self.streams.is_empty())
    }
}

/// Processes received bytes for `side`: returns how many were consumed (complete frames;
/// the rest waits for more). A connection error queues GOAWAY and is returned; the
/// connection is closed from then on.
pub(crate) fn recv<S: Side>(
    side: &mut S,
    input: &[u8],
    src: Option<&Bytes>,
    now: Instant,
) -> Result<usize, H2Error> {
    let mut used = 0;
    let ep = side.endpoint();
    if let State::Preface(matched) = ep.state {
        let want = &PREFACE[matched..];
        let n = want.len().min(input.len());
        if input[..n] != want[..n] {
            return Err(ep.fail(conn_err(ErrorCode::PROTOCOL_ERROR, "invalid connection preface")));
        }
        used = n;
        if n < want.len() {
            ep.state = State::Preface(matched + n);
            return Ok(used);
        }
        ep.state = State::AwaitSettings;
    }
    if ep.state == State::Closed {
        return Err(conn_err(ErrorCode::PROTOCOL_ERROR, "connection closed"));
    }
    loop {
        let ep = side.endpoint();
        let rest = &input[used..];
        let result = match Frame::parse(rest, ep.limits.max_frame_size) {
            Ok(Some((frame, n))) => {
                used += n;
                match ep.on_frame(frame, src) {
                    Ok(Some(role_frame)) => side.on_role_frame(role_frame, now),
                    Ok(None) => Ok(()),
                    Err(e) => Err(e),
                }
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
            if let Err(e) = answer(side, e, now) {
                return Err(side.endpoint().fail(e));
            }
        }
        let ep = side.endpoint();
        if ep.queued_acks > ep.limits.max_queued_acks {
            return Err(ep.fail(conn_err(
                ErrorCode::ENHANCE_YOUR_CALM,
                "too many SETTINGS/PING ACKs queued",
            )));
        }
    }
    Ok(used)
}

/// Answers a protocol error: a stream error with RST_STREAM, unless it has to end the
/// connection — a connection error, an error in the middle of a header block or before the
/// peer's first SETTINGS, or one on an idle stream (which must not see RST_STREAM, §5.1).
fn answer<S: Side>(side: &mut S, e: H2Error, now: Instant) -> Result<(), H2Error> {
    let ep = side.endpoint();
    let Scope::Stream(stream) = e.scope else { return Err(e) };
    if ep.partial.is_some() || ep.state == State::AwaitSettings || ep.is_idle(stream) {
        return Err(conn_err(e.code, e.reason));
    }
    ep.stream_error(stream, e.code);
    side.after_stream_error(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Events reduced to what the tests look at.
    #[derive(Debug, PartialEq)]
    enum Ev {
        Other,
        Window(u32),
    }

    impl StreamEvent for Ev {
        fn data(_: u32, _: Bytes, _: bool) -> Ev {
            Ev::Other
        }
        fn trailers(_: u32, _: Fields) -> Ev {
            Ev::Other
        }
        fn reset(_: u32, _: ErrorCode) -> Ev {
            Ev::Other
        }
        fn window_update(stream: u32) -> Ev {
            Ev::Window(stream)
        }
    }

    fn client() -> Endpoint<Ev> {
        let limits = Limits {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            initial_window_size: DEFAULT_WINDOW,
            connection_window_size: DEFAULT_WINDOW,
            header_table_size: 4096,
            encoder_table_size: 4096,
            max_header_list_size: 16 * 1024,
            max_header_block_bytes: 64 * 1024,
            max_continuation_frames: 32,
            max_queued_acks: 64,
            max_empty_data_frames: 64,
        };
        Endpoint::new(Role::Client, limits, None, 100)
    }

    fn settings(params: &[(u16, u32)]) -> Vec<u8> {
        params
            .iter()
            .flat_map(|(id, v)| [&id.to_be_bytes()[..], &v.to_be_bytes()].concat())
            .collect()
    }

    #[test]
    fn settings_are_overdue_from_the_deadline_until_the_peer_acks_them() {
        let t0 = Instant::now();
        let secs = |s| t0 + Duration::from_secs(s);
        let mut ep = client();
        assert!(!ep.settings_overdue(secs(3600)), "without a deadline, never overdue");
        ep.set_settings_deadline(secs(5));
        assert_eq!(ep.settings_deadline(), Some(secs(5)));
        assert!(!ep.settings_overdue(t0 + Duration::from_millis(4_999)));
        assert!(ep.settings_overdue(secs(5)));
        ep.on_frame(Frame::Settings { ack: false, params: &[] }, None).unwrap();
        assert!(ep.settings_overdue(secs(6)), "the peer's own SETTINGS are no ACK");
        ep.on_frame(Frame::Settings { ack: true, params: &[] }, None).unwrap();
        assert!(!ep.settings_overdue(secs(6)));
        assert_eq!(ep.settings_deadline(), None, "no timer to arm any more");
    }

    #[test]
    fn a_closed_connection_has_no_settings_deadline() {
        let t0 = Instant::now();
        let mut ep = client();
        ep.set_settings_deadline(t0);
        assert!(ep.settings_overdue(t0));
        ep.go_away(ErrorCode::SETTINGS_TIMEOUT);
        assert!(!ep.settings_overdue(t0), "the driver answered it already");
    }

    #[test]
    fn initial_window_values_apply_in_order_and_a_passing_overflow_is_an_error() {
        let mut ep = client();
        ep.on_frame(Frame::Settings { ack: false, params: &[] }, None).unwrap();
        let mut s = Stream::new(1, DEFAULT_WINDOW, DEFAULT_WINDOW);
        assert!(s.send.grow(1_000));
        ep.streams.push_back(s);
        ep.last_stream = 1;
        // 65_535 -> 65_536 -> 65_535: windows end where they were; one step up on the way.
        let p = settings(&[
            (setting::INITIAL_WINDOW_SIZE, 65_536),
            (setting::INITIAL_WINDOW_SIZE, 65_535),
        ]);
        ep.on_frame(Frame::Settings { ack: false, params: &p }, None).unwrap();
        assert_eq!(ep.streams[0].send.available(), 66_535);
        assert!(ep.events.is_empty(), "no window grew");
        // 65_535 -> 2^31-1 takes the stream window past 2^31-1 before the value comes back.
        let p = settings(&[
            (setting::INITIAL_WINDOW_SIZE, MAX_WINDOW),
            (setting::INITIAL_WINDOW_SIZE, 65_535),
        ]);
        let err = ep.on_frame(Frame::Settings { ack: false, params: &p }, None).unwrap_err();
        assert_eq!(err.code, ErrorCode::FLOW_CONTROL_ERROR);
    }

    #[test]
    fn stream_lookup_stays_right_when_its_hint_goes_stale() {
        let mut ep = client();
        for id in [1, 3, 5, 7] {
            ep.streams.push_back(Stream::new(id, DEFAULT_WINDOW, DEFAULT_WINDOW));
        }
        assert_eq!(ep.index(5), Some(2));
        assert_eq!(ep.index(5), Some(2), "the hint hits");
        ep.remove_stream(0);
        // The hint still says 2, where 7 now is.
        assert_eq!(ep.index(5), Some(1));
        assert_eq!(ep.index(7), Some(2));
        assert_eq!(ep.index(1), None);
        assert_eq!(ep.index(9), None);
        ep.remove_stream(2);
        assert_eq!(ep.index(7), None, "a hint past the end is a miss");
        assert_eq!(ep.index(3), Some(0));
    }

    #[test]
    fn initial_window_values_move_windows_to_the_last_one() {
        let mut ep = client();
        ep.on_frame(Frame::Settings { ack: false, params: &[] }, None).unwrap();
        ep.streams.push_back(Stream::new(1, DEFAULT_WINDOW, DEFAULT_WINDOW));
        ep.last_stream = 1;
        let p = settings(&[
            (setting::INITIAL_WINDOW_SIZE, 10),
            (setting::INITIAL_WINDOW_SIZE, 1_000_000),
            (setting::INITIAL_WINDOW_SIZE, 100_000),
        ]);
        ep.on_frame(Frame::Settings { ack: false, params: &p }, None).unwrap();
        assert_eq!(ep.streams[0].send.available(), 100_000);
        assert_eq!(ep.events, [Ev::Window(1)]);
        assert_eq!(ep.remote.initial_window, 100_000, "new streams start from the last value");
    }
}
