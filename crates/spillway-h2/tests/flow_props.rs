//! Property test of receive-side flow control: a client that sends only what the server's
//! SETTINGS and WINDOW_UPDATEs allow never trips a FLOW_CONTROL_ERROR, however the
//! application interleaves its releases, and never stalls while the application keeps
//! releasing what it was given.

mod common;

use common::{post, Client, Out};
use proptest::prelude::*;
use spillway_h2::{Event, ServerSettings};
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
