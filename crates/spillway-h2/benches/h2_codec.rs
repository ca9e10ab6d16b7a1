//! Criterion benches of the sans-IO HTTP/2 path: decoding a typical browser and gRPC request
//! HEADERS block (HPACK with a warm dynamic table, as on a kept-alive connection), encoding a
//! typical response head, and one full request → response round through the connection.
//!
//! `cargo bench -p spillway-h2 --bench h2_codec`

use criterion::{criterion_group, criterion_main, Criterion};
use spillway_h2::frame::Frame;
use spillway_h2::head::HeadBuilder;
use spillway_h2::hpack::{Decoder, Encoder, Indexing};
use spillway_h2::{Connection, Event, ServerSettings, PREFACE};
use std::hint::black_box;
use std::time::Instant;

const BROWSER: [(&str, &str); 12] = [
    (":method", "GET"),
    (":scheme", "https"),
    (":authority", "www.example.test"),
    (":path", "/static/app.3f9a1c.js"),
    ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"),
    ("accept", "*/*"),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    ("accept-language", "en-US,en;q=0.9"),
    ("referer", "https://www.example.test/"),
    ("sec-fetch-dest", "script"),
    ("sec-fetch-mode", "no-cors"),
    ("cookie", "session=8f2b1c9e4d; theme=dark"),
];

const GRPC: [(&str, &str); 9] = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/shop.Inventory/Reserve"),
    (":authority", "inventory.internal:50051"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
    ("grpc-timeout", "250m"),
    ("x-criticality", "critical"),
    ("user-agent", "grpc-go/1.64.0"),
];

/// A block as the client sends it the second time (its dynamic table already warm), plus a
/// decoder that saw the first block.
fn warm_block(fields: &[(&str, &str)]) -> (Vec<u8>, Decoder) {
    let mut enc = Encoder::new(4096);
    let mut dec = Decoder::new(4096, 1 << 16);
    let mut block = Vec::new();
    for round in 0..2 {
        block.clear();
        for (n, v) in fields {
            let how = if *n == "cookie" { Indexing::Never } else { Indexing::Incremental };
            enc.encode_field_as(n.as_bytes(), v.as_bytes(), how, &mut block);
        }
        if round == 0 {
            dec.decode(&block, |_, _| {}).expect("valid");
        }
    }
    (block, dec)
}

fn hpack(c: &mut Criterion) {
    for (name, fields) in [("browser", &BROWSER[..]), ("grpc", &GRPC[..])] {
        let (block, mut dec) = warm_block(fields);
        // Indexed fields do not grow the table, so decoding the same block repeatedly is steady.
        c.bench_function(&format!("decode_request_head/{name}"), |b| {
            b.iter(|| {
                let mut head = HeadBuilder::request();
                dec.decode(black_box(&block), |n, v| head.field(n, v)).expect("valid");
                black_box(head.finish_request().expect("valid request"))
            })
        });
    }
    let mut enc = Encoder::new(4096);
    let mut out = Vec::with_capacity(256);
    let fields: [(&[u8], &[u8]); 5] = [
        (b"content-type", b"application/json"),
        (b"server", b"spillway"),
        (b"cache-control", b"no-store"),
        (b"date", b"Sun, 06 Dec 2026 19:45:00 GMT"),
        (b"content-length", b"1534"),
    ];
    c.bench_function("encode_response_head", |b| {
        b.iter(|| {
            out.clear();
            enc.begin_block(&mut out);
            enc.encode_status(200, &mut out);
            for (n, v) in &fields {
                enc.encode_field(n, v, &mut out);
            }
            black_box(out.len())
        })
    });
}

fn round_trip(c: &mut Criterion) {
    // One connection, each iteration: a GET arrives, the application answers with a head and a
    // 5-byte body, the driver drains the output.
    let mut conn = Connection::new(ServerSettings {
        max_resets_per_window: u32::MAX,
        ..ServerSettings::default()
    });
    let mut hello = PREFACE.to_vec();
    Frame::Settings { ack: false, params: &[] }.encode(&mut hello);
    let now = Instant::now();
    conn.recv(&hello, now).expect("handshake");
    let n = conn.output().len();
    conn.consumed(n);
    // The client's second block of the same fields is all index bytes: warm both tables with
    // one request, then send that constant block on each new stream.
    let mut enc = Encoder::new(4096);
    let mut block = Vec::new();
    for (stream, last) in [(1u32, false), (3, true)] {
        block.clear();
        for (n, v) in &BROWSER {
            let how = if *n == "cookie" { Indexing::Never } else { Indexing::Incremental };
            enc.encode_field_as(n.as_bytes(), v.as_bytes(), how, &mut block);
        }
        if !last {
            let mut frame = Vec::new();
            Frame::Headers {
                stream,
                end_stream: true,
                end_headers: true,
                priority: None,
                block: &block,
                padding: None,
            }
            .encode(&mut frame);
            conn.recv(&frame, now).expect("warm-up request");
            while conn.poll_event().is_some() {}
            conn.send_response(
                stream,
                200,
                &[(b"content-type", b"text/plain"), (b"server", b"spillway")],
                true,
            )
            .expect("head");
            let n = conn.output().len();
            conn.consumed(n);
        }
    }
    let mut stream = 3u32;
    let mut frame = Vec::with_capacity(512);
    c.bench_function("request_response_round", |b| {
        b.iter(|| {
            frame.clear();
            Frame::Headers {
                stream,
                end_stream: true,
                end_headers: true,
                priority: None,
                block: &block,
                padding: None,
            }
            .encode(&mut frame);
            conn.recv(&frame, now).expect("request");
            while let Some(ev) = conn.poll_event() {
                if let Event::Request { stream, .. } = ev {
                    conn.send_response(
                        stream,
                        200,
                        &[(b"content-type", b"text/plain"), (b"server", b"spillway")],
                        false,
                    )
                    .expect("head");
                    conn.send_data(stream, b"hello", true).expect("body");
                }
            }
            let n = conn.output().len();
            black_box(conn.output());
            conn.consumed(n);
            stream += 2;
        })
    });
}

criterion_group!(benches, hpack, round_trip);
criterion_main!(benches);
