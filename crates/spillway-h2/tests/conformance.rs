//! RFC 9113 / RFC 7541 conformance cases in the spirit of h2spec (which could not be
//! installed here): each case sends frames after a valid handshake and states the answer the
//! RFC asks for — a connection error (GOAWAY with a code), a stream error (RST_STREAM with a
//! code), or nothing.

mod common;

use common::{get, post, Client, Out};
use spillway_h2::frame::{kind, setting, FrameHeader};
use spillway_h2::{ErrorCode, ServerSettings};

/// The RFC's required answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Connection(ErrorCode),
    Stream(u32, ErrorCode),
    Nothing,
}

fn raw(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    FrameHeader { len: payload.len() as u32, kind, flags, stream }.write(&mut out);
    out.extend_from_slice(payload);
    out
}

fn check(name: &str, setup: impl FnOnce(&mut Client) -> Vec<u8>, want: Answer) {
    let mut c = Client::connected(ServerSettings::default());
    let bytes = setup(&mut c);
    let result = c.feed(&bytes);
    let out = c.take_output();
    let goaway = out.iter().find_map(|o| match o {
        Out::GoAway { code, .. } => Some(*code),
        _ => None,
    });
    let rst = out.iter().find_map(|o| match o {
        Out::Rst { stream, code } => Some((*stream, *code)),
        _ => None,
    });
    match want {
        Answer::Connection(code) => {
            assert_eq!(goaway, Some(code), "{name}: {out:?}");
            assert_eq!(result.map_err(|e| e.code), Err(code), "{name}");
        }
        Answer::Stream(stream, code) => {
            assert!(result.is_ok() && goaway.is_none(), "{name}: {out:?}");
            assert_eq!(rst, Some((stream, code)), "{name}: {out:?}");
        }
        Answer::Nothing => {
            assert!(result.is_ok() && goaway.is_none() && rst.is_none(), "{name}: {out:?}");
        }
    }
}

fn headers_frame(c: &mut Client, stream: u32, fields: &[(String, String)], flags: u8) -> Vec<u8> {
    let block = c.block(fields);
    raw(kind::HEADERS, flags, stream, &block)
}

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

#[test]
fn frame_format_and_size() {
    use Answer::*;
    check("4.1 unknown frame type is ignored", |_| raw(0xbe, 0, 0, b"xyz"), Nothing);
    check("4.1 undefined flags are ignored", |_| raw(kind::PING, 0xfe, 0, &[0; 8]), Nothing);
    check(
        "4.2 DATA over max frame size",
        |c| {
            let mut b = headers_frame(c, 1, &post("/"), END_HEADERS);
            b.extend(raw(kind::DATA, 0, 1, &vec![0; 16_385]));
            b
        },
        Connection(ErrorCode::FRAME_SIZE_ERROR),
    );
    check(
        "4.3 invalid header block",
        |_| raw(kind::HEADERS, END_STREAM | END_HEADERS, 1, &[0xff, 0xff, 0xff, 0xff]),
        Connection(ErrorCode::COMPRESSION_ERROR),
    );
    check(
        "4.3 PRIORITY inside a header block",
        |c| {
            let mut b = headers_frame(c, 1, &get("/"), END_STREAM);
            b.extend(raw(kind::PRIORITY, 0, 1, &[0, 0, 0, 0, 16]));
            b
        },
        Connection(ErrorCode::PROTOCOL_ERROR),
    );
    check(
        "5.5 unknown frame inside a header block",
        |c| {
            let mut b = headers_frame(c, 1, &get("/"), END_STREAM);
            b.extend(raw(0xbe, 0, 1, b""));
            b
        },
        Connection(ErrorCode::PROTOCOL_ERROR),
    );
}

#[test]
fn stream_states() {
    use Answer::*;
    check("5.1 idle: DATA", |_| raw(kind::DATA, 0, 1, b"x"), Connection(ErrorCode::PROTOCOL_ERROR));
    check(
        "5.1 idle: CONTINUATION",
        |_| raw(kind::CONTINUATION, END_HEADERS, 1, b""),
        Connection(ErrorCode::PROTOCOL_ERROR),
    );
    check(
        "5.1 half-closed (remote): DATA",
        |c| {
            let mut b = headers_frame(c, 1, &get("/"), END_STREAM | END_HEADERS);
            b.extend(raw(kind::DATA, 0, 1, b"x"));
            b
        },
        Stream(1, ErrorCode::STREAM_CLOSED),
    );
    check(
        "5.1 half-closed (remote): HEADERS",
        |c| {
            let mut b = headers_frame(c, 1, &get("/"), END_STREAM | END_HEADERS);
            b.extend(headers_frame(c, 1, &[("x".into(), "y".into())], END_STREAM | END_HEADERS));
            b
        },
        Stream(1, ErrorCode::STREAM_CLOSED),
    );
    check(
        "5.1 closed after RST_STREAM: DATA",
        |c| {
            let mut b = headers_frame(c, 1, &post("/"), END_HEADERS);
            b.extend(raw(kind::RST_STREAM, 0, 1, &8u32.to_be_bytes()));
            b.extend(raw(kind::DATA, 0, 1, b"x"));
            b
        },
        Stream(1, ErrorCode::STREAM_CLOSED),
    );
    check(
        "5.1 closed after RST_STREAM: HEADERS",
        |c| {
            let mut b = headers_frame(c, 1, &post("/"), END_HEADERS);
            b.extend(raw(kind::RST_STREAM, 0, 1, &8u32.to_be_bytes()));
            b.extend(headers_frame(c, 1, &get("/"), END_STREAM | END_HEADERS));
            b
        },
        Connection(ErrorCode::STREAM_CLOSED),
    );
    check(
        "5.1 closed after RST_STREAM: CONTINUATION",
        |c| {
            let mut b = headers_frame(c, 1, &post("/"), END_HEADERS);
            b.extend(raw(kind::RST_STREAM, 0, 1, &8u32.to_be_bytes()));
            b.extend(raw(kind::CONTINUATION, END_HEADERS, 1, b""));
            b
        },
        Connection(ErrorCode::PROTOCOL_ERROR),
    );
    check(
        "5.4.1 invalid PING closes the connection",
        |_| raw(kind::PING, 0, 0, &[0; 6]),
        Connection(ErrorCode::FRAME_SIZE_ERROR),
    );
}

#[test]
fn frame_definitions() {
    use Answer::*;
    check(
        "6.1 DATA padding too long",
        |c| {
            let mut b = headers_frame(c, 1, &post("/"), END_HEADERS);
            b.extend(raw(kind::DATA, 0x8, 1, &[6, 1, 2, 3]));
            b
        },
        Connection(ErrorCode::PROTOCOL_ERROR),
    );
    check(
        "6.2 HEADERS followed by CONTINUATION of another stream",
        |c| {
            let mut b = headers_frame(c, 1, &get("/"), END_STREAM);
            b.extend(raw(kind::CONTINUATION, END_HEADERS, 3, b""));
            b
        },
        Connection(ErrorCode::PROTOCOL_ERROR),
    );
    check(
        "6.4 RST_STREAM on stream 0",
        |_| raw(kind::RST_STREAM, 0, 0, &[0; 4]),
        Connection(ErrorCode::PROTOCOL_ERROR),
    );
    check(
        "6.5 SETTINGS ACK with payload",
        |_| raw(kind::SETTINGS, 1, 0, &[0; 6]),
        Connection(ErrorCode::FRAME_SIZE_ERROR),
    );
    check(
        "6.5.2 SETTINGS_ENABLE_PUSH = 2",
        |_| raw(kind::SETTINGS, 0, 0, &[0, 2, 0, 0, 0, 2]),
        Connection(ErrorCode::PROTOCOL_ERROR),
    );
    check(
        "6.5.2 unknown setting ignored",
        |_| raw(kind::SETTINGS, 0, 0, &[0, 0xff, 0, 0, 0, 1]),
        Nothing,
    );
    check(
        "6.6 PUSH_PROMISE from a client",
        |c| {
            let mut b = headers_frame(c, 1, &post("/"), END_HEADERS);
            b.extend(raw(kind::PUSH_PROMISE, END_HEADERS, 1, &[0, 0, 0, 2]));
            b
        },
        Connection(ErrorCode::PROTOCOL_ERROR),
    );
    check(
        "6.8 GOAWAY on a stream",
        |_| raw(kind::GOAWAY, 0, 1, &[0; 8]),
        Connection(ErrorCode::PROTOCOL_ERROR),
    );
    check(
        "6.9 WINDOW_UPDATE of 0 on a stream",
        |c| {
            let mut b = headers_frame(c, 1, &post("/"), END_HEADERS);
            b.extend(raw(kind::WINDOW_UPDATE, 0, 1, &[0; 4]));
            b
        },
        Stream(1, ErrorCode::PROTOCOL_ERROR),
    );
    check(
        "6.9.2 SETTINGS_INITIAL_WINDOW_SIZE overflowing an open stream",
        |c| {
            let mut b = headers_frame(c, 1, &post("/"), END_HEADERS);
            b.extend(raw(kind::WINDOW_UPDATE, 0, 1, &(0x7fff_ffffu32 - 65_535).to_be_bytes()));
            let mut p = setting::INITIAL_WINDOW_SIZE.to_be_bytes().to_vec();
            p.extend_from_slice(&65_536u32.to_be_bytes());
            b.extend(raw(kind::SETTINGS, 0, 0, &p));
            b
        },
        Connection(ErrorCode::FLOW_CONTROL_ERROR),
    );
    check(
        "6.10 CONTINUATION after END_HEADERS",
        |c| {
            let mut b = headers_frame(c, 1, &post("/"), END_HEADERS);
            b.extend(raw(kind::CONTINUATION, END_HEADERS, 1, b""));
            b
        },
        Connection(ErrorCode::PROTOCOL_ERROR),
    );
}

#[test]
fn http_semantics() {
    use Answer::*;
    let with = |extra: (&str, &str)| {
        let mut f = get("/");
        f.push((extra.0.into(), extra.1.into()));
        f
    };
    for (name, fields) in [
        ("8.1.2 uppercase field name", with(("X-Upper", "1"))),
        ("8.1.2.1 unknown pseudo-header", with((":unknown", "1"))),
        ("8.1.2.1 response pseudo-header in a request", with((":status", "200"))),
        ("8.1.2.2 connection-specific field", with(("keep-alive", "timeout=5"))),
        ("8.1.2.2 te other than trailers", with(("te", "gzip"))),
    ] {
        check(
            name,
            |c| headers_frame(c, 1, &fields, END_STREAM | END_HEADERS),
            Stream(1, ErrorCode::PROTOCOL_ERROR),
        );
    }
    let mut no_method = get("/");
    no_method.remove(0);
    check(
        "8.1.2.3 no :method",
        |c| headers_frame(c, 1, &no_method, END_STREAM | END_HEADERS),
        Stream(1, ErrorCode::PROTOCOL_ERROR),
    );
    let mut dup = get("/");
    dup.push((":path".into(), "/".into()));
    check(
        "8.1.2.3 duplicated :path",
        |c| headers_frame(c, 1, &dup, END_STREAM | END_HEADERS),
        Stream(1, ErrorCode::PROTOCOL_ERROR),
    );
    check(
        "8.1.2.6 content-length vs DATA of several frames",
        |c| {
            let mut f = post("/");
            f.push(("content-length".into(), "4".into()));
            let mut b = headers_frame(c, 1, &f, END_HEADERS);
            b.extend(raw(kind::DATA, 0, 1, b"ab"));
            b.extend(raw(kind::DATA, END_STREAM, 1, b"abc"));
            b
        },
        Stream(1, ErrorCode::PROTOCOL_ERROR),
    );
    check(
        "8.1 second HEADERS without END_STREAM",
        |c| {
            let mut b = headers_frame(c, 1, &post("/"), END_HEADERS);
            b.extend(headers_frame(c, 1, &[("x".into(), "y".into())], END_HEADERS));
            b
        },
        Stream(1, ErrorCode::PROTOCOL_ERROR),
    );
}

#[test]
fn hpack_errors() {
    use Answer::*;
    check(
        "HPACK index 0",
        |_| raw(kind::HEADERS, END_STREAM | END_HEADERS, 1, &[0x80]),
        Connection(ErrorCode::COMPRESSION_ERROR),
    );
    check(
        "HPACK index past the tables",
        |_| raw(kind::HEADERS, END_STREAM | END_HEADERS, 1, &[0xbe]),
        Connection(ErrorCode::COMPRESSION_ERROR),
    );
    check(
        "HPACK size update above SETTINGS",
        |_| raw(kind::HEADERS, END_STREAM | END_HEADERS, 1, &[0x3f, 0xe2, 0x1f, 0x82]),
        Connection(ErrorCode::COMPRESSION_ERROR),
    );
    check(
        "HPACK size update after a field",
        |_| raw(kind::HEADERS, END_STREAM | END_HEADERS, 1, &[0x82, 0x20]),
        Connection(ErrorCode::COMPRESSION_ERROR),
    );
}
