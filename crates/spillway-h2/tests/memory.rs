//! Memory held by an idle connection after a few requests, counted with a counting global
//! allocator: `size_of::<Connection>()` plus its heap bytes must stay within 4 KiB.
//!
//! Run with `--nocapture` to see the figures.

use spillway_h2::frame::Frame;
use spillway_h2::hpack::{Encoder, Indexing};
use spillway_h2::{Connection, Event, ServerSettings, PREFACE};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use std::alloc::System;
use std::time::Instant;

// `stats_alloc` counts allocations without `unsafe` in this crate (the workspace forbids it).
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// A browser-like request stream: preface, SETTINGS, and `n` GETs with typical fields.
fn client_bytes(n: u32) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    Frame::Settings { ack: false, params: &[0, 4, 0, 0x60, 0, 0] }.encode(&mut out);
    let mut enc = Encoder::new(4096);
    for i in 0..n {
        let mut block = Vec::new();
        let path = format!("/assets/{i}.js");
        for (name, value) in [
            (":method", "GET"),
            (":scheme", "https"),
            (":authority", "www.example.test"),
            (":path", path.as_str()),
            (
                "user-agent",
                "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            ),
            ("accept", "*/*"),
            ("accept-language", "en-US,en;q=0.5"),
            ("accept-encoding", "gzip, deflate, br"),
        ] {
            enc.encode_field_as(
                name.as_bytes(),
                value.as_bytes(),
                Indexing::Incremental,
                &mut block,
            );
        }
        Frame::Headers {
            stream: 1 + 2 * i,
            end_stream: true,
            end_headers: true,
            priority: None,
            block: &block,
            padding: None,
        }
        .encode(&mut out);
    }
    out
}

#[test]
fn idle_connection_after_a_few_requests_fits_in_4_kib() {
    let input = client_bytes(5);
    let now = Instant::now();
    let region = Region::new(GLOBAL);
    let mut conn = Connection::new(ServerSettings::default());
    assert_eq!(conn.recv(&input, now).unwrap(), input.len());
    let mut streams = Vec::new();
    while let Some(event) = conn.poll_event() {
        if let Event::Request { stream, .. } = event {
            streams.push(stream);
        }
    }
    assert_eq!(streams.len(), 5);
    for s in streams {
        conn.send_response(
            s,
            200,
            &[
                (b"content-type", b"text/javascript"),
                (b"server", b"spillway"),
                (b"content-length", b"5"),
            ],
            false,
        )
        .unwrap();
        conn.send_data(s, b"x();\n", true).unwrap();
    }
    let written = conn.output().len();
    conn.consumed(written);
    assert!(conn.poll_event().is_none());
    // The connection's heap is what dropping it frees: other threads (the test harness)
    // may allocate while the region is open, so the region's net figure is only an upper bound.
    let estimate = conn.heap_bytes();
    let held = net(&region);
    drop(conn);
    let heap = held - net(&region);
    let size = std::mem::size_of::<Connection>();
    println!("size_of::<Connection>() = {size} B, heap freed on drop = {heap} B (own estimate {estimate} B), total = {} B", size as isize + heap);
    println!(
        "size_of::<Event>() = {} B, size_of::<Stream>() = {} B",
        std::mem::size_of::<Event>(),
        std::mem::size_of::<spillway_h2::stream::Stream>()
    );
    assert!(size as isize + heap <= 4096, "idle connection holds {} B", size as isize + heap);
}

fn net(region: &Region<'_, System>) -> isize {
    let c = region.change();
    c.bytes_allocated as isize - c.bytes_deallocated as isize + c.bytes_reallocated
}
