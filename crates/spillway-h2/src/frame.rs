//! HTTP/2 frames (RFC 9113 §4, §6): parsed in place from a byte slice, written into a
//! caller's buffer.
//!
//! [`Frame::parse`] borrows payloads from the input (a DATA payload or a field block fragment
//! is a sub-slice, never a copy), strips padding, and checks everything a frame can be checked
//! for on its own: length against `SETTINGS_MAX_FRAME_SIZE` and against the type's fixed size,
//! the stream identifier each type needs, padding lengths, SETTINGS values. Violations come
//! back as [`H2Error`]s with the RFC code and scope. Frames of unknown types parse as
//! [`Frame::Unknown`] so the connection can ignore them (§4.1, §5.5).

use crate::error::{ErrorCode, H2Error};

/// Length of the fixed frame header.
pub const HEADER_LEN: usize = 9;
/// The smallest (and initial) `SETTINGS_MAX_FRAME_SIZE`.
pub const DEFAULT_MAX_FRAME_SIZE: u32 = 16_384;
/// The largest allowed `SETTINGS_MAX_FRAME_SIZE` (2^24-1).
pub const MAX_MAX_FRAME_SIZE: u32 = (1 << 24) - 1;
/// The largest flow-control window (2^31-1).
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

/// Frame type codes.
pub mod kind {
    /// DATA.
    pub const DATA: u8 = 0x0;
    /// HEADERS.
    pub const HEADERS: u8 = 0x1;
    /// PRIORITY.
    pub const PRIORITY: u8 = 0x2;
    /// RST_STREAM.
    pub const RST_STREAM: u8 = 0x3;
    /// SETTINGS.
    pub const SETTINGS: u8 = 0x4;
    /// PUSH_PROMISE.
    pub const PUSH_PROMISE: u8 = 0x5;
    /// PING.
    pub const PING: u8 = 0x6;
    /// GOAWAY.
    pub const GOAWAY: u8 = 0x7;
    /// WINDOW_UPDATE.
    pub const WINDOW_UPDATE: u8 = 0x8;
    /// CONTINUATION.
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    /// END_STREAM (DATA, HEADERS).
    pub const END_STREAM: u8 = 0x1;
    /// ACK (SETTINGS, PING).
    pub const ACK: u8 = 0x1;
    /// END_HEADERS (HEADERS, PUSH_PROMISE, CONTINUATION).
    pub const END_HEADERS: u8 = 0x4;
    /// PADDED (DATA, HEADERS, PUSH_PROMISE).
    pub const PADDED: u8 = 0x8;
    /// PRIORITY (HEADERS).
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS parameter identifiers (RFC 9113 §6.5.2).
pub mod setting {
    /// SETTINGS_HEADER_TABLE_SIZE.
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    /// SETTINGS_ENABLE_PUSH.
    pub const ENABLE_PUSH: u16 = 0x2;
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    /// SETTINGS_INITIAL_WINDOW_SIZE.
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    /// SETTINGS_MAX_FRAME_SIZE.
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    /// SETTINGS_MAX_HEADER_LIST_SIZE.
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
    /// SETTINGS_ENABLE_CONNECT_PROTOCOL (RFC 8441).
    pub const ENABLE_CONNECT_PROTOCOL: u16 = 0x8;
}

/// The 9-byte frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length.
    pub len: u32,
    /// Type code.
    pub kind: u8,
    /// Flags.
    pub flags: u8,
    /// Stream identifier (reserved bit cleared).
    pub stream: u32,
}

impl FrameHeader {
    /// Reads a header from the first 9 bytes of `bytes`, or `None` if there are fewer.
    pub fn parse(bytes: &[u8]) -> Option<FrameHeader> {
        let h: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
        Some(FrameHeader {
            len: u32::from_be_bytes([0, h[0], h[1], h[2]]),
            kind: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & MAX_WINDOW,
        })
    }

    /// Appends the header to `out`.
    pub fn write(&self, out: &mut Vec<u8>) {
        let len = self.len.to_be_bytes();
        out.extend_from_slice(&[len[1], len[2], len[3], self.kind, self.flags]);
        out.extend_from_slice(&(self.stream & MAX_WINDOW).to_be_bytes());
    }

    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

/// A stream dependency from a PRIORITY frame or a HEADERS frame's priority block. HTTP/2
/// priorities are deprecated (RFC 9113 §5.3.2): the connection checks and ignores them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Priority {
    /// The stream depended on.
    pub dependency: u32,
    /// Exclusive flag.
    pub exclusive: bool,
    /// Weight minus one, as sent.
    pub weight: u8,
}

impl Priority {
    fn parse(b: &[u8]) -> Priority {
        let word = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        Priority { dependency: word & MAX_WINDOW, exclusive: word >> 31 == 1, weight: b[4] }
    }

    fn write(&self, out: &mut Vec<u8>) {
        let word = self.dependency & MAX_WINDOW | if self.exclusive { 1 << 31 } else { 0 };
        out.extend_from_slice(&word.to_be_bytes());
        out.push(self.weight);
    }
}

/// One parsed frame, borrowing its payload from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    /// DATA (§6.1).
    Data {
        /// Stream.
        stream: u32,
        /// END_STREAM flag.
        end_stream: bool,
        /// Payload without padding.
        data: &'a [u8],
        /// Padding length, if PADDED was set.
        padding: Option<u8>,
    },
    /// HEADERS (§6.2).
    Headers {
        /// Stream.
        stream: u32,
        /// END_STREAM flag.
        end_stream: bool,
        /// END_HEADERS flag.
        end_headers: bool,
        /// Priority block, if the PRIORITY flag was set.
        priority: Option<Priority>,
        /// Field block fragment without padding.
        block: &'a [u8],
        /// Padding length, if PADDED was set.
        padding: Option<u8>,
    },
    /// PRIORITY (§6.3).
    Priority {
        /// Stream.
        stream: u32,
        /// The dependency.
        priority: Priority,
    },
    /// RST_STREAM (§6.4).
    RstStream {
        /// Stream.
        stream: u32,
        /// Error code.
        code: ErrorCode,
    },
    /// SETTINGS (§6.5); parameters already validated, read them with [`settings_params`].
    Settings {
        /// ACK flag.
        ack: bool,
        /// Raw parameters, 6 bytes each.
        params: &'a [u8],
    },
    /// PUSH_PROMISE (§6.6); a server never accepts one.
    PushPromise {
        /// Stream.
        stream: u32,
        /// Promised stream.
        promised: u32,
    },
    /// PING (§6.7).
    Ping {
        /// ACK flag.
        ack: bool,
        /// Opaque data.
        payload: [u8; 8],
    },
    /// GOAWAY (§6.8).
    GoAway {
        /// Last stream the sender may have processed.
        last_stream: u32,
        /// Error code.
        code: ErrorCode,
        /// Opaque debug data.
        debug: &'a [u8],
    },
    /// WINDOW_UPDATE (§6.9); the increment is not zero (zero is an error).
    WindowUpdate {
        /// Stream (0 for the connection).
        stream: u32,
        /// Window increment, 1..=2^31-1.
        increment: u32,
    },
    /// CONTINUATION (§6.10).
    Continuation {
        /// Stream.
        stream: u32,
        /// END_HEADERS flag.
        end_headers: bool,
        /// Field block fragment.
        block: &'a [u8],
    },
    /// A frame of a type this codec does not know: to be ignored.
    Unknown {
        /// Type code.
        kind: u8,
        /// Stream.
        stream: u32,
    },
}

fn conn(code: ErrorCode, reason: &'static str) -> H2Error {
    H2Error::connection(code, reason)
}

/// Splits padding off a padded payload: returns the content and the padding length.
fn unpad(payload: &[u8], padded: bool) -> Result<(&[u8], Option<u8>), H2Error> {
    if !padded {
        return Ok((payload, None));
    }
    let (&pad, rest) = payload
        .split_first()
        .ok_or(conn(ErrorCode::FRAME_SIZE_ERROR, "padded frame without a pad length"))?;
    if pad as usize > rest.len() {
        return Err(conn(ErrorCode::PROTOCOL_ERROR, "padding longer than the payload"));
    }
    Ok((&rest[..rest.len() - pad as usize], Some(pad)))
}

impl<'a> Frame<'a> {
    /// Parses one frame from the front of `input`. Returns `Ok(None)` while the frame is not
    /// complete, else the frame and the bytes it took. A frame longer than `max_frame_size`
    /// is a FRAME_SIZE_ERROR as soon as its header is in.
    pub fn parse(
        input: &'a [u8],
        max_frame_size: u32,
    ) -> Result<Option<(Frame<'a>, usize)>, H2Error> {
        let Some(head) = FrameHeader::parse(input) else { return Ok(None) };
        if head.len > max_frame_size {
            return Err(conn(
                ErrorCode::FRAME_SIZE_ERROR,
                "frame longer than SETTINGS_MAX_FRAME_SIZE",
            ));
        }
        let total = HEADER_LEN + head.len as usize;
        let Some(payload) = input.get(HEADER_LEN..total) else { return Ok(None) };
        Ok(Some((Frame::from_parts(head, payload)?, total)))
    }

    /// Builds a frame from its header and complete payload.
    pub fn from_parts(head: FrameHeader, payload: &'a [u8]) -> Result<Frame<'a>, H2Error> {
        let stream = head.stream;
        let need_stream = |what: &'static str| {
            if stream == 0 {
                Err(conn(ErrorCode::PROTOCOL_ERROR, what))
            } else {
                Ok(())
            }
        };
        let need_zero = |what: &'static str| {
            if stream != 0 {
                Err(conn(ErrorCode::PROTOCOL_ERROR, what))
            } else {
                Ok(())
            }
        };
        Ok(match head.kind {
            kind::DATA => {
                need_stream("DATA on stream 0")?;
                let (data, padding) = unpad(payload, head.has(flag::PADDED))?;
                Frame::Data { stream, end_stream: head.has(flag::END_STREAM), data, padding }
            }
            kind::HEADERS => {
                need_stream("HEADERS on stream 0")?;
                let (rest, padding) = unpad(payload, head.has(flag::PADDED))?;
                let (priority, block) = if head.has(flag::PRIORITY) {
                    if rest.len() < 5 {
                        return Err(conn(
                            ErrorCode::FRAME_SIZE_ERROR,
                            "HEADERS too short for its priority",
                        ));
                    }
                    (Some(Priority::parse(rest)), &rest[5..])
                } else {
                    (None, rest)
                };
                Frame::Headers {
                    stream,
                    end_stream: head.has(flag::END_STREAM),
                    end_headers: head.has(flag::END_HEADERS),
                    priority,
                    block,
                    padding,
                }
            }
            kind::PRIORITY => {
                need_stream("PRIORITY on stream 0")?;
                if payload.len() != 5 {
                    return Err(H2Error::stream(
                        stream,
                        ErrorCode::FRAME_SIZE_ERROR,
                        "PRIORITY not 5 bytes",
                    ));
                }
                Frame::Priority { stream, priority: Priority::parse(payload) }
            }
            kind::RST_STREAM => {
                need_stream("RST_STREAM on stream 0")?;
                let code: [u8; 4] = payload
                    .try_into()
                    .map_err(|_| conn(ErrorCode::FRAME_SIZE_ERROR, "RST_STREAM not 4 bytes"))?;
                Frame::RstStream { stream, code: ErrorCode(u32::from_be_bytes(code)) }
            }
            kind::SETTINGS => {
                need_zero("SETTINGS on a stream")?;
                let ack = head.has(flag::ACK);
                if ack && !payload.is_empty() {
                    return Err(conn(ErrorCode::FRAME_SIZE_ERROR, "SETTINGS ACK with a payload"));
                }
                if !payload.len().is_multiple_of(6) {
                    return Err(conn(
                        ErrorCode::FRAME_SIZE_ERROR,
                        "SETTINGS length not a multiple of 6",
                    ));
                }
                for (id, value) in settings_params(payload) {
                    check_setting(id, value)?;
                }
                Frame::Settings { ack, params: payload }
            }
            kind::PUSH_PROMISE => {
                need_stream("PUSH_PROMISE on stream 0")?;
                let (rest, _) = unpad(payload, head.has(flag::PADDED))?;
                let promised: [u8; 4] = rest
                    .get(..4)
                    .and_then(|b| b.try_into().ok())
                    .ok_or(conn(ErrorCode::FRAME_SIZE_ERROR, "PUSH_PROMISE too short"))?;
                Frame::PushPromise { stream, promised: u32::from_be_bytes(promised) & MAX_WINDOW }
            }
            kind::PING => {
                need_zero("PING on a stream")?;
                let payload: [u8; 8] = payload
                    .try_into()
                    .map_err(|_| conn(ErrorCode::FRAME_SIZE_ERROR, "PING not 8 bytes"))?;
                Frame::Ping { ack: head.has(flag::ACK), payload }
            }
            kind::GOAWAY => {
                need_zero("GOAWAY on a stream")?;
                if payload.len() < 8 {
                    return Err(conn(ErrorCode::FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes"));
                }
                let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                Frame::GoAway {
                    last_stream: last & MAX_WINDOW,
                    code: ErrorCode(code),
                    debug: &payload[8..],
                }
            }
            kind::WINDOW_UPDATE => {
                let inc: [u8; 4] = payload
                    .try_into()
                    .map_err(|_| conn(ErrorCode::FRAME_SIZE_ERROR, "WINDOW_UPDATE not 4 bytes"))?;
                let increment = u32::from_be_bytes(inc) & MAX_WINDOW;
                if increment == 0 {
                    return Err(if stream == 0 {
                        conn(ErrorCode::PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
                    } else {
                        H2Error::stream(stream, ErrorCode::PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
                    });
                }
                Frame::WindowUpdate { stream, increment }
            }
            kind::CONTINUATION => {
                need_stream("CONTINUATION on stream 0")?;
                Frame::Continuation {
                    stream,
                    end_headers: head.has(flag::END_HEADERS),
                    block: payload,
                }
            }
            other => Frame::Unknown { kind: other, stream },
        })
    }

    /// Appends the frame to `out` (padding written as zeros). Unknown frames write nothing.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let start = out.len();
        let header = |kind: u8, flags: u8, stream: u32, out: &mut Vec<u8>| {
            FrameHeader { len: 0, kind, flags, stream }.write(out);
        };
        match *self {
            Frame::Data { stream, end_stream, data, padding } => {
                let flags = flag_if(end_stream, flag::END_STREAM)
                    | flag_if(padding.is_some(), flag::PADDED);
                header(kind::DATA, flags, stream, out);
                write_padded(out, padding, |out| out.extend_from_slice(data));
            }
            Frame::Headers { stream, end_stream, end_headers, priority, block, padding } => {
                let flags = flag_if(end_stream, flag::END_STREAM)
                    | flag_if(end_headers, flag::END_HEADERS)
                    | flag_if(padding.is_some(), flag::PADDED)
                    | flag_if(priority.is_some(), flag::PRIORITY);
                header(kind::HEADERS, flags, stream, out);
                write_padded(out, padding, |out| {
                    if let Some(p) = priority {
                        p.write(out);
                    }
                    out.extend_from_slice(block);
                });
            }
            Frame::Priority { stream, priority } => {
                header(kind::PRIORITY, 0, stream, out);
                priority.write(out);
            }
            Frame::RstStream { stream, code } => {
                header(kind::RST_STREAM, 0, stream, out);
                out.extend_from_slice(&code.0.to_be_bytes());
            }
            Frame::Settings { ack, params } => {
                header(kind::SETTINGS, flag_if(ack, flag::ACK), 0, out);
                out.extend_from_slice(params);
            }
            Frame::PushPromise { stream, promised } => {
                header(kind::PUSH_PROMISE, flag::END_HEADERS, stream, out);
                out.extend_from_slice(&promised.to_be_bytes());
            }
            Frame::Ping { ack, payload } => {
                header(kind::PING, flag_if(ack, flag::ACK), 0, out);
                out.extend_from_slice(&payload);
            }
            Frame::GoAway { last_stream, code, debug } => {
                header(kind::GOAWAY, 0, 0, out);
                out.extend_from_slice(&last_stream.to_be_bytes());
                out.extend_from_slice(&code.0.to_be_bytes());
                out.extend_from_slice(debug);
            }
            Frame::WindowUpdate { stream, increment } => {
                header(kind::WINDOW_UPDATE, 0, stream, out);
                out.extend_from_slice(&increment.to_be_bytes());
            }
            Frame::Continuation { stream, end_headers, block } => {
                header(kind::CONTINUATION, flag_if(end_headers, flag::END_HEADERS), stream, out);
                out.extend_from_slice(block);
            }
            Frame::Unknown { .. } => return,
        }
        patch_len(out, start);
    }
}

fn flag_if(cond: bool, flag: u8) -> u8 {
    if cond {
        flag
    } else {
        0
    }
}

fn write_padded(out: &mut Vec<u8>, padding: Option<u8>, body: impl FnOnce(&mut Vec<u8>)) {
    if let Some(pad) = padding {
        out.push(pad);
        body(out);
        out.resize(out.len() + pad as usize, 0);
    } else {
        body(out);
    }
}

/// Sets the length field of the frame whose header starts at `start` to the bytes after it.
pub fn patch_len(out: &mut [u8], start: usize) {
    let len = (out.len() - start - HEADER_LEN) as u32;
    let b = len.to_be_bytes();
    out[start..start + 3].copy_from_slice(&b[1..4]);
}

/// Iterates SETTINGS parameters as `(identifier, value)`; a trailing partial entry is skipped
/// (the parser rejects such frames before).
pub fn settings_params(params: &[u8]) -> impl Iterator<Item = (u16, u32)> + '_ {
    params
        .chunks_exact(6)
        .map(|c| (u16::from_be_bytes([c[0], c[1]]), u32::from_be_bytes([c[2], c[3], c[4], c[5]])))
}

/// Checks one SETTINGS value against RFC 9113 §6.5.2 (unknown identifiers are fine).
fn check_setting(id: u16, value: u32) -> Result<(), H2Error> {
    match id {
        setting::ENABLE_PUSH if value > 1 => {
            Err(conn(ErrorCode::PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH not 0 or 1"))
        }
        setting::INITIAL_WINDOW_SIZE if value > MAX_WINDOW => {
            Err(conn(ErrorCode::FLOW_CONTROL_ERROR, "SETTINGS_INITIAL_WINDOW_SIZE above 2^31-1"))
        }
        setting::MAX_FRAME_SIZE
            if !(DEFAULT_MAX_FRAME_SIZE..=MAX_MAX_FRAME_SIZE).contains(&value) =>
        {
            Err(conn(ErrorCode::PROTOCOL_ERROR, "SETTINGS_MAX_FRAME_SIZE out of range"))
        }
        setting::ENABLE_CONNECT_PROTOCOL if value > 1 => {
            Err(conn(ErrorCode::PROTOCOL_ERROR, "SETTINGS_ENABLE_CONNECT_PROTOCOL not 0 or 1"))
        }
        _ => Ok(()),
    }
}

/// Appends a SETTINGS frame with `params`.
pub fn write_settings(out: &mut Vec<u8>, params: &[(u16, u32)]) {
    let start = out.len();
    FrameHeader { len: 0, kind: kind::SETTINGS, flags: 0, stream: 0 }.write(out);
    for &(id, value) in params {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
    patch_len(out, start);
}

/// Appends the header of a DATA frame of `len` bytes; the caller appends the payload.
pub fn write_data_header(out: &mut Vec<u8>, stream: u32, len: u32, end_stream: bool) {
    FrameHeader { len, kind: kind::DATA, flags: flag_if(end_stream, flag::END_STREAM), stream }
        .write(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Result<Option<(Frame<'_>, usize)>, H2Error> {
        Frame::parse(bytes, DEFAULT_MAX_FRAME_SIZE)
    }

    fn raw(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        FrameHeader { len: payload.len() as u32, kind, flags, stream }.write(&mut out);
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn incomplete_frame_waits_for_more() {
        let bytes = raw(kind::PING, 0, 0, &[1; 8]);
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut]), Ok(None), "cut at {cut}");
        }
        assert!(matches!(parse(&bytes), Ok(Some((Frame::Ping { ack: false, .. }, 17)))));
    }

    #[test]
    fn padded_data_is_borrowed_without_its_padding() {
        let bytes = raw(kind::DATA, flag::PADDED | flag::END_STREAM, 3, &[2, b'h', b'i', 0, 0]);
        let (frame, used) = parse(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        match frame {
            Frame::Data { stream: 3, end_stream: true, data, padding: Some(2) } => {
                assert_eq!(data, b"hi");
                assert_eq!(data.as_ptr(), bytes[10..].as_ptr(), "payload is a slice of the input");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn padding_as_long_as_payload_is_protocol_error() {
        let bytes = raw(kind::DATA, flag::PADDED, 1, &[3, 0, 0]);
        let err = parse(&bytes).unwrap_err();
        assert_eq!((err.code, err.is_connection_error()), (ErrorCode::PROTOCOL_ERROR, true));
        let bytes = raw(kind::HEADERS, flag::PADDED, 1, &[1]);
        assert_eq!(parse(&bytes).unwrap_err().code, ErrorCode::PROTOCOL_ERROR);
    }

    #[test]
    fn frame_above_max_frame_size_is_frame_size_error_from_its_header() {
        let mut bytes = Vec::new();
        FrameHeader { len: DEFAULT_MAX_FRAME_SIZE + 1, kind: kind::DATA, flags: 0, stream: 1 }
            .write(&mut bytes);
        assert_eq!(parse(&bytes).unwrap_err().code, ErrorCode::FRAME_SIZE_ERROR);
        assert!(Frame::parse(&bytes, DEFAULT_MAX_FRAME_SIZE * 2).unwrap().is_none());
    }

    #[test]
    fn fixed_size_frames_of_wrong_size_are_frame_size_errors() {
        for (k, len) in
            [(kind::PING, 7), (kind::RST_STREAM, 5), (kind::WINDOW_UPDATE, 3), (kind::GOAWAY, 7)]
        {
            let stream = if k == kind::RST_STREAM { 1 } else { 0 };
            let err = parse(&raw(k, 0, stream, &vec![0; len])).unwrap_err();
            assert_eq!(err.code, ErrorCode::FRAME_SIZE_ERROR, "type {k}");
            assert!(err.is_connection_error());
        }
        let err = parse(&raw(kind::PRIORITY, 0, 1, &[0; 4])).unwrap_err();
        assert_eq!((err.code, err.scope), (ErrorCode::FRAME_SIZE_ERROR, crate::Scope::Stream(1)));
        let err = parse(&raw(kind::SETTINGS, 0, 0, &[0; 5])).unwrap_err();
        assert_eq!(err.code, ErrorCode::FRAME_SIZE_ERROR);
        let err = parse(&raw(kind::SETTINGS, flag::ACK, 0, &[0; 6])).unwrap_err();
        assert_eq!(err.code, ErrorCode::FRAME_SIZE_ERROR);
    }

    #[test]
    fn stream_identifier_rules_per_type() {
        for k in [kind::DATA, kind::HEADERS, kind::PRIORITY, kind::RST_STREAM, kind::CONTINUATION] {
            let len = match k {
                kind::PRIORITY => 5,
                kind::RST_STREAM => 4,
                _ => 0,
            };
            assert_eq!(
                parse(&raw(k, 0, 0, &vec![0; len])).unwrap_err().code,
                ErrorCode::PROTOCOL_ERROR
            );
        }
        assert_eq!(
            parse(&raw(kind::PING, 0, 1, &[0; 8])).unwrap_err().code,
            ErrorCode::PROTOCOL_ERROR
        );
        assert_eq!(
            parse(&raw(kind::SETTINGS, 0, 1, &[])).unwrap_err().code,
            ErrorCode::PROTOCOL_ERROR
        );
        assert_eq!(
            parse(&raw(kind::GOAWAY, 0, 1, &[0; 8])).unwrap_err().code,
            ErrorCode::PROTOCOL_ERROR
        );
    }

    #[test]
    fn settings_values_are_checked() {
        let param = |id: u16, v: u32| {
            let mut p = id.to_be_bytes().to_vec();
            p.extend_from_slice(&v.to_be_bytes());
            raw(kind::SETTINGS, 0, 0, &p)
        };
        assert_eq!(
            parse(&param(setting::ENABLE_PUSH, 2)).unwrap_err().code,
            ErrorCode::PROTOCOL_ERROR
        );
        assert_eq!(
            parse(&param(setting::INITIAL_WINDOW_SIZE, 1 << 31)).unwrap_err().code,
            ErrorCode::FLOW_CONTROL_ERROR
        );
        assert_eq!(
            parse(&param(setting::MAX_FRAME_SIZE, 16_383)).unwrap_err().code,
            ErrorCode::PROTOCOL_ERROR
        );
        assert_eq!(
            parse(&param(setting::MAX_FRAME_SIZE, 1 << 24)).unwrap_err().code,
            ErrorCode::PROTOCOL_ERROR
        );
        let ok = param(0xabcd, 7);
        let Some((Frame::Settings { params, .. }, _)) = parse(&ok).unwrap() else { panic!() };
        assert_eq!(settings_params(params).collect::<Vec<_>>(), vec![(0xabcd, 7)]);
    }

    #[test]
    fn window_update_of_zero_is_stream_or_connection_protocol_error() {
        let err = parse(&raw(kind::WINDOW_UPDATE, 0, 5, &[0; 4])).unwrap_err();
        assert_eq!((err.code, err.scope), (ErrorCode::PROTOCOL_ERROR, crate::Scope::Stream(5)));
        let err = parse(&raw(kind::WINDOW_UPDATE, 0, 0, &[0; 4])).unwrap_err();
        assert_eq!((err.code, err.scope), (ErrorCode::PROTOCOL_ERROR, crate::Scope::Connection));
    }

    #[test]
    fn unknown_types_parse_as_unknown_and_reserved_bit_is_cleared() {
        let bytes = raw(0xfa, 0xff, 0x8000_0007, b"whatever");
        assert_eq!(
            parse(&bytes).unwrap(),
            Some((Frame::Unknown { kind: 0xfa, stream: 7 }, bytes.len()))
        );
    }

    #[test]
    fn headers_with_priority_and_padding() {
        let mut payload = vec![1];
        payload.extend_from_slice(&(0x8000_0003u32).to_be_bytes());
        payload.push(15);
        payload.extend_from_slice(b"blk");
        payload.push(0);
        let bytes =
            raw(kind::HEADERS, flag::PADDED | flag::PRIORITY | flag::END_HEADERS, 5, &payload);
        let (frame, _) = parse(&bytes).unwrap().unwrap();
        assert_eq!(
            frame,
            Frame::Headers {
                stream: 5,
                end_stream: false,
                end_headers: true,
                priority: Some(Priority { dependency: 3, exclusive: true, weight: 15 }),
                block: b"blk",
                padding: Some(1),
            }
        );
        let mut again = Vec::new();
        frame.encode(&mut again);
        assert_eq!(again, bytes);
    }
}
