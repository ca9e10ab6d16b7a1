//! Property test of receive-side flow control: a client that sends only what the server's
//! SETTINGS and WINDOW_UPDATEs allow never trips a FLOW_CONTROL_ERROR, however the
//! application interleaves its releases, and never stalls while the application keeps
//! releasing what it was given. And send-side: SETTINGS_INITIAL_WINDOW_SIZE values apply in
//! order, one frame of them doing what the same values do one frame each.

mod common;

use common::{get, post, Client, Out};
use proptest::prelude::*;
use spillway_h2::frame::{setting, Frame, MAX_WINDOW};
use spillway_h2::{ErrorCode, Event, ServerSettings};
use std::collections::HashMap;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn a_client_within_its_windows_is_never_refused(
        stream_window in 1_000u32..70_000,
        conn_window in 65_535u32..200_000,
        chunks in proptest::collection::vec((0usize..3, 1usize..20_000), 1..60),
        release_every in 1usize..4,
    ) {
        let s = ServerSettings { initial_window_size: stream_window, connection_window_size: conn_window, ..ServerSettings::default() };
        let mut c = Client::connected(s);
        let ids = [1u32, 3, 5];
        for id in ids {
            c.headers(id, &post("/"), false).unwrap();
        }
        // The client's view of its send windows.
        let mut conn_win = conn_window as i64;
        let mut win: HashMap<u32, i64> = ids.iter().map(|&i| (i, stream_window as i64)).collect();
        let mut held: HashMap<u32, usize> = HashMap::new();
        let mut sent = 0usize;
        let mut delivered = 0usize;
        for (n, (which, len)) in chunks.into_iter().enumerate() {
            let id = ids[which];
            let len = (len as i64).min(conn_win).min(win[&id]).min(16_384);
            if len > 0 {
                c.data(id, &vec![0u8; len as usize], false).unwrap();
                conn_win -= len;
                *win.get_mut(&id).unwrap() -= len;
                sent += len as usize;
            }
            for ev in c.events() {
                if let Event::Data { stream, data, .. } = ev {
                    delivered += data.len();
                    *held.entry(stream).or_default() += data.len();
                }
            }
            if n % release_every == 0 {
                for (&stream, bytes) in held.iter_mut() {
                    c.conn.release_capacity(stream, std::mem::take(bytes));
                }
            }
            for out in c.take_output() {
                if let Out::Window { stream, increment } = out {
                    if stream == 0 { conn_win += increment as i64 } else { *win.get_mut(&stream).unwrap() += increment as i64 }
                }
                prop_assert!(!matches!(out, Out::Rst { .. } | Out::GoAway { .. }), "refused: {:?}", out);
            }
        }
        prop_assert_eq!(sent, delivered);
        // Release everything: the windows come back far enough to keep sending.
        for (&stream, bytes) in held.iter_mut() {
            c.conn.release_capacity(stream, std::mem::take(bytes));
        }
        for out in c.take_output() {
            if let Out::Window { stream, increment } = out {
                if stream == 0 { conn_win += increment as i64 } else { *win.get_mut(&stream).unwrap() += increment as i64 }
            }
        }
        prop_assert!(conn_win >= conn_window as i64 / 2, "connection window stalled at {}", conn_win);
        for id in ids {
            prop_assert!(win[&id] >= stream_window as i64 / 2, "stream {} window stalled at {}", id, win[&id]);
        }
    }
}

/// A server past one GET on stream 1 whose response head went out, with the client's stream
/// window raised by `extra` and the connection window at its largest (so that
/// `send_capacity(1)` is the stream window).
fn answering(extra: u32) -> Client {
    let mut c = Client::connected(ServerSettings::default());
    c.headers(1, &get("/"), true).expect("a GET");
    c.conn.send_response(1, 200, &[], false).expect("its response head");
    c.frame(Frame::WindowUpdate { stream: 0, increment: MAX_WINDOW - 65_535 })
        .expect("connection window to 2^31-1");
    if extra > 0 {
        c.frame(Frame::WindowUpdate { stream: 1, increment: extra })
            .expect("stream window at most 2^31-1");
    }
    c
}

fn initial_window_params(values: &[u32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| [&setting::INITIAL_WINDOW_SIZE.to_be_bytes()[..], &v.to_be_bytes()].concat())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// RFC 9113 §6.5.3: the values of one SETTINGS frame are processed in order, so a frame of
    /// INITIAL_WINDOW_SIZE values must do what the same values do one frame each — the same
    /// windows, or the same FLOW_CONTROL_ERROR when a step passes 2^31-1.
    #[test]
    fn initial_window_values_in_one_frame_act_as_one_frame_each(
        extra in prop_oneof![Just(0u32), 0..1_000_000u32, (MAX_WINDOW - 1_000_000)..=(MAX_WINDOW - 65_535)],
        values in proptest::collection::vec(
            prop_oneof![0..200_000u32, (MAX_WINDOW - 2_000_000)..=MAX_WINDOW],
            1..6,
        ),
    ) {
        let mut together = answering(extra);
        let one_frame = together
            .frame(Frame::Settings { ack: false, params: &initial_window_params(&values) })
            .map_err(|e| e.code);
        let mut apart = answering(extra);
        let mut one_each = Ok(());
        for v in &values {
            one_each = apart
                .frame(Frame::Settings { ack: false, params: &initial_window_params(&[*v]) })
                .map_err(|e| e.code);
            if one_each.is_err() {
                break;
            }
        }
        prop_assert_eq!(one_frame, one_each);
        if one_frame.is_ok() {
            prop_assert_eq!(together.conn.send_capacity(1), apart.conn.send_capacity(1));
        }
        prop_assert!(one_frame.is_ok() || one_frame == Err(ErrorCode::FLOW_CONTROL_ERROR));
    }
}
