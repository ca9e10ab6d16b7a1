//! `capacity` end to end against a loopback server whose capacity is known: 2 connections to a
//! 20 ms server carry at most ~100 rps, so the search must stop well below the rates it tries.

#![allow(clippy::unwrap_used)]

mod common;

use spillway_load::capacity::{run_capacity, CapacityOptions, SearchConfig};
use spillway_load::cli::{ConnectionOptions, OutputOptions, RequestOptions};
use std::time::Duration;

#[test]
fn capacity_finds_a_sustainable_rate_below_the_break_and_proposes_limits() {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = rt.block_on(common::start());
    let dir = tempfile::tempdir().unwrap();
    let result = run_capacity(CapacityOptions {
        url: server.url("/?delay_ms=20"),
        slo: "p99=150ms".parse().unwrap(),
        search: SearchConfig { start: 20.0, max_steps: 5, ..Default::default() },
        step_duration: Duration::from_millis(300),
        headroom: 0.2,
        request: RequestOptions::default(),
        connection: ConnectionOptions { connections: Some(2), ..Default::default() },
        output: OutputOptions {
            json: Some(dir.path().join("cap.json")),
            plot: Some(dir.path().join("cap.svg")),
            quiet: true,
        },
    })
    .unwrap();
    let max = result.max_rate.expect("20 rps is well within capacity");
    assert!((20.0..=120.0).contains(&max), "max {max}, steps {:?}", result.steps);
    assert!(result.steps.iter().any(|s| !s.meets_slo), "the search must have hit the break");
    let proposal = result.proposal.unwrap();
    assert!(proposal.token_bucket_rate < max);
    assert!(proposal.concurrency_limit >= 1);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("cap.json")).unwrap())
            .unwrap();
    assert_eq!(json["schema"], "spillway.capacity.report/v1");
    assert!(json["proposal"]["concurrency_limit"].as_u64().is_some());
    let svg = std::fs::read_to_string(dir.path().join("cap.svg")).unwrap();
    assert!(svg.contains("max sustainable"));
}
