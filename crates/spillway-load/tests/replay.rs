//! Record → replay round trip: requests written by the recorder arrive at a loopback server in
//! the recorded order, with method, path, query, headers and body preserved and secrets gone.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use spillway_load::cli::{ConnectionOptions, OutputOptions};
use spillway_load::replay::{run_replay, ReplayOptions};
use spillway_record::{RecordConfig, RecordedRequest, Recorder};
use std::time::{Duration, Instant};

fn recorded(i: u64, at: Instant) -> RecordedRequest {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("shop.example"));
    headers.insert("authorization", HeaderValue::from_static("Bearer secret"));
    headers.insert("x-order", HeaderValue::from_str(&i.to_string()).unwrap());
    headers.insert("x-spillway-criticality", HeaderValue::from_static("SHEDDABLE_PLUS"));
    RecordedRequest {
        method: if i.is_multiple_of(2) { Method::GET } else { Method::POST },
        path: format!("/items/{i}"),
        query: Some(format!("page={i}")),
        headers,
        body: if i.is_multiple_of(2) {
            Bytes::new()
        } else {
            Bytes::from(format!("{{\"n\":{i}}}"))
        },
        body_len: None,
        received_at: at,
    }
}

#[test]
fn record_then_replay_preserves_requests_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("traffic.jsonl");
    let recorder = Recorder::start(RecordConfig::new(&file)).unwrap();
    let t0 = Instant::now();
    for i in 0..8 {
        recorder.record(recorded(i, t0 + Duration::from_millis(25 * i)));
    }
    recorder.close();

    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = rt.block_on(common::start());
    let report = run_replay(ReplayOptions {
        files: vec![file],
        with_rotated: false,
        url: server.url("/ignored"),
        speed: 1.0,
        looped: false,
        duration: None,
        requests: None,
        // One connection: requests leave, and arrive, strictly in order.
        connection: ConnectionOptions { connections: Some(1), ..Default::default() },
        output: OutputOptions {
            json: Some(dir.path().join("replay.json")),
            plot: None,
            quiet: true,
        },
    })
    .unwrap();
    assert_eq!(report.overall.sent, 8);
    // Recorded gaps were kept: the last request left no earlier than 175 ms after the first.
    assert!(report.elapsed_s >= 0.17, "elapsed {}", report.elapsed_s);

    let seen = server.seen();
    assert_eq!(seen.len(), 8);
    for (i, s) in seen.iter().enumerate() {
        let header = |name: &str| s.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        assert_eq!(s.path_and_query, format!("/items/{i}?page={i}"));
        assert_eq!(s.method, if i.is_multiple_of(2) { "GET" } else { "POST" });
        assert_eq!(header("x-order"), Some(i.to_string()));
        assert_eq!(header("x-spillway-criticality").as_deref(), Some("SHEDDABLE_PLUS"));
        assert_eq!(header("authorization"), None, "redacted secrets must not be replayed");
        assert_eq!(header("host"), Some(server.addr.to_string()));
        let body = if i.is_multiple_of(2) { String::new() } else { format!("{{\"n\":{i}}}") };
        assert_eq!(s.body, body.as_bytes());
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("replay.json")).unwrap())
            .unwrap();
    assert_eq!(json["mode"], "replay");
}

#[test]
fn looped_replay_at_double_speed_stops_at_its_duration() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("traffic.jsonl");
    let recorder = Recorder::start(RecordConfig::new(&file)).unwrap();
    let t0 = Instant::now();
    for i in 0..4 {
        recorder.record(recorded(i, t0 + Duration::from_millis(100 * i)));
    }
    recorder.close();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = rt.block_on(common::start());
    // At 2x, one pass is 4 requests in 200 ms: 600 ms hold three passes, 12 requests.
    let report = run_replay(ReplayOptions {
        files: vec![file],
        with_rotated: false,
        url: server.url("/"),
        speed: 2.0,
        looped: true,
        duration: Some(Duration::from_millis(600)),
        requests: None,
        connection: ConnectionOptions { connections: Some(2), ..Default::default() },
        output: OutputOptions { quiet: true, ..Default::default() },
    })
    .unwrap();
    assert_eq!(report.overall.planned, Some(12));
    assert_eq!(report.overall.sent, 12);
    assert!(report.elapsed_s < 2.0);
}

#[test]
fn replay_refuses_non_loopback_targets() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("traffic.jsonl");
    std::fs::write(&file, "").unwrap();
    let err = run_replay(ReplayOptions {
        files: vec![file],
        with_rotated: false,
        url: "http://192.0.2.7:8080/".into(),
        speed: 1.0,
        looped: false,
        duration: None,
        requests: None,
        connection: ConnectionOptions::default(),
        output: OutputOptions { quiet: true, ..Default::default() },
    })
    .unwrap_err();
    assert!(err.to_string().contains("--allow-remote"), "{err}");
}
