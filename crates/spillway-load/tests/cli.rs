//! Whole subcommands run in-process against a loopback server: JSON written and well-formed,
//! plots produced, remote targets refused.

#![allow(clippy::unwrap_used)]

mod common;

use spillway_load::backend::faults::{Faults, Ratio};
use spillway_load::backend::{Backend, BackendConfig};
use spillway_load::cli::{self, ConnectionOptions, LoadOptions, OutputOptions, RequestOptions};
use spillway_load::engine::ClientRetry;
use std::num::NonZeroUsize;
use std::time::Duration;

fn options(url: String, dir: &std::path::Path, plot: &str) -> LoadOptions {
    LoadOptions {
        url,
        rate: None,
        ramp: "100:200:100:400ms".parse().ok(),
        closed: false,
        duration: None,
        requests: None,
        request: RequestOptions {
            method: "POST".into(),
            headers: vec!["x-spillway-criticality: SHEDDABLE".into()],
            body: Some("payload".into()),
            body_file: None,
        },
        mix: None,
        connection: ConnectionOptions { connections: Some(4), ..Default::default() },
        retry: ClientRetry::NONE,
        output: OutputOptions {
            json: Some(dir.join("out.json")),
            plot: Some(dir.join(plot)),
            quiet: true,
        },
    }
}

/// `cli::load` builds its own runtime, so it runs on a plain thread beside the server's runtime.
fn serve() -> (tokio::runtime::Runtime, common::TestServer) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let server = rt.block_on(common::start());
    (rt, server)
}

#[test]
fn load_writes_json_per_step_and_overall_and_an_svg_plot() {
    let (_rt, server) = serve();
    let dir = tempfile::tempdir().unwrap();
    let report = cli::load(options(server.url("/work"), dir.path(), "out.svg")).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out.json")).unwrap())
            .unwrap();
    assert_eq!(json["schema"], "spillway.load.report/v1");
    assert_eq!(json["steps"].as_array().unwrap().len(), 2);
    assert_eq!(json["steps"][0]["target_rate"], 100.0);
    assert_eq!(json["steps"][1]["target_rate"], 200.0);
    assert_eq!(json["overall"]["sent"], report.overall.sent);
    assert!(json["overall"]["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert!(!json["timeline"].as_array().unwrap().is_empty());
    let svg = std::fs::read_to_string(dir.path().join("out.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("throughput") && svg.contains("p99"));
    // Method, header and body reached the server unchanged.
    let seen = server.seen();
    assert!(!seen.is_empty());
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].body, b"payload");
    assert!(seen[0].headers.contains(&("x-spillway-criticality".into(), "SHEDDABLE".into())));
}

#[cfg(feature = "png")]
#[test]
fn load_writes_a_png_plot() {
    let (_rt, server) = serve();
    let dir = tempfile::tempdir().unwrap();
    cli::load(options(server.url("/"), dir.path(), "out.png")).unwrap();
    let png = std::fs::read(dir.path().join("out.png")).unwrap();
    assert!(png.len() > 10_000, "png is only {} bytes", png.len());
    assert_eq!(&png[1..4], b"PNG");
}

#[cfg(not(feature = "png"))]
#[test]
fn png_plot_without_the_png_feature_is_refused_before_the_run_with_a_clear_error() {
    let (_rt, server) = serve();
    let dir = tempfile::tempdir().unwrap();
    let err = cli::load(options(server.url("/"), dir.path(), "out.png")).unwrap_err();
    assert!(err.to_string().contains("`png` cargo feature"), "{err}");
    assert!(server.seen().is_empty());
}

#[test]
fn plot_with_an_unknown_extension_is_refused_before_the_run() {
    let (_rt, server) = serve();
    let dir = tempfile::tempdir().unwrap();
    assert!(cli::load(options(server.url("/"), dir.path(), "out.gif")).is_err());
    assert!(server.seen().is_empty());
}

#[test]
fn non_loopback_targets_are_refused_before_any_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let err = cli::load(options("http://192.0.2.1:80/".into(), dir.path(), "x.svg")).unwrap_err();
    assert!(err.to_string().contains("--allow-remote"), "{err}");
    assert!(!dir.path().join("out.json").exists());
}

#[test]
fn closed_loop_runs_for_its_duration() {
    let (_rt, server) = serve();
    let dir = tempfile::tempdir().unwrap();
    let o = LoadOptions {
        ramp: None,
        closed: true,
        duration: Some(Duration::from_millis(500)),
        ..options(server.url("/"), dir.path(), "c.svg")
    };
    let report = cli::load(o).unwrap();
    assert!(report.overall.responses > 50, "only {} responses", report.overall.responses);
    assert!(report.elapsed_s < 3.0);
    assert_eq!(report.steps[0].target_rate, None);
}

#[test]
fn load_with_a_mix_reports_classes_in_json_and_plots_them() {
    let (_rt, server) = serve();
    let dir = tempfile::tempdir().unwrap();
    let mix = "x-test-status: 200=1,503=1".parse().unwrap();
    let o = LoadOptions { mix: Some(mix), ..options(server.url("/"), dir.path(), "mix.svg") };
    let report = cli::load(o).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out.json")).unwrap())
            .unwrap();
    assert_eq!(json["mix_header"], "x-test-status");
    for step in [&json["steps"][0], &json["steps"][1], &json["overall"]] {
        assert_eq!(step["classes"][0]["class"], "200");
        assert_eq!(step["classes"][1]["rejected"]["503"], step["classes"][1]["sent"]);
        assert_eq!(step["classes"][1]["ok"], 0);
    }
    let served = &report.overall.classes[0];
    assert_eq!(served.ok, served.sent);
    assert_eq!(served.served_fraction, 1.0);
    let svg = std::fs::read_to_string(dir.path().join("mix.svg")).unwrap();
    assert!(svg.contains("fraction served"), "the per-class charts are missing");
    assert!(svg.contains("200 goodput"));
}

#[test]
fn client_retries_against_an_always_failing_backend_send_every_request_n_plus_one_times() {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let backend = rt
        .block_on(Backend::start(BackendConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            allow_remote: false,
            concurrency: NonZeroUsize::new(8).unwrap(),
            service_time: Duration::from_millis(1),
            queue_limit: None,
            faults: Faults { fail_ratio: Ratio::ONE, ..Faults::default() },
            seed: Some(1),
        }))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let o = LoadOptions {
        ramp: None,
        rate: Some(200.0),
        requests: Some(40),
        retry: ClientRetry::try_new(3, Duration::ZERO).unwrap(),
        ..options(format!("http://{}/", backend.addr()), dir.path(), "r.svg")
    };
    let report = cli::load(o).unwrap();
    let all = &report.overall;
    assert_eq!((all.sent, all.requests, all.attempts, all.retries), (40, 40, 160, 120));
    // Each request counts once, with its last outcome.
    assert_eq!(all.status.get("503").copied(), Some(40));
    assert_eq!(all.responses, 40);
    let stats = backend.stats();
    assert_eq!((stats.received, stats.failed), (160, 160));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("out.json")).unwrap())
            .unwrap();
    assert_eq!(
        (&json["overall"]["requests"], &json["overall"]["attempts"]),
        (&40.into(), &160.into())
    );
    assert_eq!(json["client_retries"]["retries"], 3);

    // Once the backend recovers, nothing is retried.
    backend.control(&serde_json::from_str(r#"{"fail_ratio":0}"#).unwrap()).unwrap();
    let o = LoadOptions {
        ramp: None,
        rate: Some(200.0),
        requests: Some(40),
        retry: ClientRetry::try_new(3, Duration::ZERO).unwrap(),
        ..options(format!("http://{}/", backend.addr()), dir.path(), "r.svg")
    };
    let all = cli::load(o).unwrap().overall;
    assert_eq!((all.requests, all.attempts, all.retries), (40, 40, 0));
    assert_eq!(backend.stats().received, 200);
}
