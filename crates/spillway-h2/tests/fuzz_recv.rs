//! Fuzz-style property test: whatever bytes a peer sends after (or instead of) a valid
//! handshake, `recv` never panics — the gateway's release profile aborts on panic — and the
//! connection keeps its invariants (consumed ≤ input, output parses as frames).

use proptest::prelude::*;
use spillway_h2::frame::{Frame, MAX_MAX_FRAME_SIZE};
use spillway_h2::{Connection, ErrorCode, Event, ServerSettings, PREFACE};
use std::time::{Duration, Instant};

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

fn drive(conn: &mut Connection, input: &[u8], now: Instant) {
    let mut pending: &[u8] = input;
    // Feed in uneven pieces to exercise partial frames.
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
        // Answer whatever arrived, like an application would.
        while let Some(ev) = conn.poll_event() {
            match ev {
                Event::Request { stream, .. } => {
                    let _ = conn.send_response(stream, 200, &[(b"server", b"fuzz")], false);
                    let _ = conn.send_data(stream, b"body", true);
                }
                Event::Data { stream, data, .. } => conn.release_capacity(stream, data.len()),
                Event::Trailers { stream, .. } => conn.reset(stream, ErrorCode::NO_ERROR),
                _ => {}
            }
        }
        let out = conn.output().to_vec();
        let mut rest = &out[..];
        while let Ok(Some((_, n))) = Frame::parse(rest, MAX_MAX_FRAME_SIZE) {
            rest = &rest[n..];
        }
        assert!(rest.is_empty(), "server output is whole frames");
        conn.consumed(out.len());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn recv_never_panics_after_a_valid_handshake(chunks in proptest::collection::vec(chunk(), 0..30)) {
        let mut input = PREFACE.to_vec();
        Frame::Settings { ack: false, params: &[] }.encode(&mut input);
        // A valid request first, so later frames hit a live stream.
        input.extend_from_slice(&[0, 0, 4, 1, 4, 0, 0, 0, 1, 0x82, 0x87, 0x84, 0x41]);
        input.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 1]);
        for c in chunks {
            input.extend_from_slice(&c);
        }
        let mut conn = Connection::new(ServerSettings::default());
        drive(&mut conn, &input, Instant::now() + Duration::from_secs(1));
    }

    #[test]
    fn recv_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let mut conn = Connection::new(ServerSettings::default());
        drive(&mut conn, &bytes, Instant::now());
        let mut conn = Connection::new(ServerSettings::default());
        let mut input = PREFACE.to_vec();
        input.extend_from_slice(&bytes);
        drive(&mut conn, &input, Instant::now());
    }
}
