//! Fuzz-style property test for the client side: whatever bytes a hostile upstream sends,
//! [`ClientConnection::recv`] never panics, consumes no more than it was given, and writes
//! only whole frames.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use spillway_h2::frame::{Frame, MAX_MAX_FRAME_SIZE};
use spillway_h2::{ClientConnection, ClientEvent, ClientSettings, ErrorCode, RequestLine};
use std::time::Instant;

/// Frame-shaped chunks: a plausible header (known types, small lengths, low stream ids) and a
/// random payload, so the fuzzing reaches past the frame parser into the state machine.
fn chunk() -> impl Strategy<Value = Vec<u8>> {
    (0u8..12, any::<u8>(), 0u32..8, proptest::collection::vec(any::<u8>(), 0..40), any::<bool>())
        .prop_map(|(kind, flags, stream, payload, raw)| {
            if raw {
                return payload;
            }
            let len = payload.len() as u32;
            let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
            out.extend_from_slice(&stream.to_be_bytes());
            out.extend_from_slice(&payload);
            out
        })
}

const LINE: RequestLine<'static> =
    RequestLine { method: b"POST", scheme: b"http", authority: b"up", path: b"/" };

fn drive(conn: &mut ClientConnection, input: &[u8]) {
    let now = Instant::now();
    let mut pending: &[u8] = input;
    let mut step = 1;
    let mut buf = Vec::new();
    while !pending.is_empty() {
        let n = step.min(pending.len());
        buf.extend_from_slice(&pending[..n]);
        pending = &pending[n..];
        step = step * 3 + 1;
        match conn.recv(&buf, now) {
            Ok(used) => {
                assert!(used <= buf.len());
                buf.drain(..used);
            }
            Err(_) => break,
        }
        while let Some(ev) = conn.poll_event() {
            match ev {
                ClientEvent::Data { stream, data, .. } => conn.release_capacity(stream, data.len()),
                ClientEvent::WindowUpdate { stream } if stream != 0 => {
                    let _ = conn.send_data(stream, b"more", false);
                }
                ClientEvent::Trailers { stream, .. } => conn.reset(stream, ErrorCode::CANCEL),
                _ => {}
            }
        }
        if conn.can_open() {
            let _ = conn.send_request(LINE, [(&b"x"[..], &b"y"[..])], false);
        }
        let out = conn.output().to_vec();
        let mut rest = &out[..];
        if rest.starts_with(spillway_h2::PREFACE) {
            rest = &rest[24..];
        }
        while let Ok(Some((_, n))) = Frame::parse(rest, MAX_MAX_FRAME_SIZE) {
            rest = &rest[n..];
        }
        assert!(rest.is_empty(), "client output is whole frames");
        conn.consumed(out.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn recv_never_panics_after_server_settings(chunks in proptest::collection::vec(chunk(), 0..30)) {
        let mut conn = ClientConnection::new(ClientSettings::default());
        for _ in 0..3 {
            conn.send_request(LINE, [(&b"x"[..], &b"y"[..])], false).unwrap();
        }
        let mut input = Vec::new();
        Frame::Settings { ack: false, params: &[] }.encode(&mut input);
        // A response head on stream 1 (`:status: 200`), so later frames hit a live stream.
        input.extend_from_slice(&[0, 0, 1, 1, 4, 0, 0, 0, 1, 0x88]);
        for c in chunks {
            input.extend_from_slice(&c);
        }
        drive(&mut conn, &input);
    }

    #[test]
    fn recv_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut conn = ClientConnection::new(ClientSettings::default());
        drive(&mut conn, &bytes);
    }
}
