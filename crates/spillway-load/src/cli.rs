//! Entry points of the `load`, `capacity` and `replay` subcommands: plain option structs that
//! the binary fills from its arguments, and functions that run a tool to completion (runtime,
//! progress bar, summary, JSON, plot).
//!
//! Kept here rather than in the binary so the binary stays argument parsing only, and so tests
//! can run a whole subcommand in-process.

use crate::engine::{self, ClientRetry, EngineConfig, Live, Plan, RequestSpec};
use crate::mix::Mix;
use crate::progress::Progress;
use crate::report::Report;
use crate::schedule::{Ramp, Schedule};
use crate::target::Target;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Length of a run when neither `--duration` nor a ramp says otherwise.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);
/// Arrival rate of an open-loop run when `--rate` is not given.
pub const DEFAULT_RATE: f64 = 100.0;
/// Connections of an open-loop run (a cap on concurrency: requests beyond it wait, and the
/// wait is counted in their latency).
pub const DEFAULT_OPEN_CONNECTIONS: usize = 32;
/// Connections of a closed-loop run.
pub const DEFAULT_CLOSED_CONNECTIONS: usize = 16;

/// A subcommand failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliError(pub String);

impl CliError {
    pub(crate) fn msg(e: impl std::fmt::Display) -> CliError {
        CliError(e.to_string())
    }
}

/// The request to send, as given on the command line.
#[derive(Debug, Clone, Default)]
pub struct RequestOptions {
    /// HTTP method (`GET` when empty).
    pub method: String,
    /// Headers as `Name: value`.
    pub headers: Vec<String>,
    /// Body text.
    pub body: Option<String>,
    /// File whose contents are the body.
    pub body_file: Option<PathBuf>,
}

/// Connection settings shared by the tools.
#[derive(Debug, Clone)]
pub struct ConnectionOptions {
    /// TCP connections (`None`: the mode's default).
    pub connections: Option<usize>,
    /// HTTP/2 with prior knowledge (h2c).
    pub http2: bool,
    /// Concurrent streams per HTTP/2 connection.
    pub streams: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Allow targets outside loopback.
    pub allow_remote: bool,
    /// Load threads, each with its own event loop (`None`: one per core).
    pub threads: Option<usize>,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        ConnectionOptions {
            connections: None,
            http2: false,
            streams: 8,
            timeout: Duration::from_secs(10),
            allow_remote: false,
            threads: None,
        }
    }
}

/// Where results go besides the summary on stdout.
#[derive(Debug, Clone, Default)]
pub struct OutputOptions {
    /// Write the JSON report here.
    pub json: Option<PathBuf>,
    /// Write a plot here (`.svg`, or `.png` with the `png` feature).
    pub plot: Option<PathBuf>,
    /// No progress bar.
    pub quiet: bool,
}

/// Options of `spillway load`.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Target URL.
    pub url: String,
    /// Constant arrival rate (open loop).
    pub rate: Option<f64>,
    /// Step ramp (open loop).
    pub ramp: Option<Ramp>,
    /// Closed loop: each connection sends as fast as it gets answers.
    pub closed: bool,
    /// Length of the run (ignored with a ramp, whose steps say how long).
    pub duration: Option<Duration>,
    /// Stop after this many requests.
    pub requests: Option<u64>,
    /// The request.
    pub request: RequestOptions,
    /// Vary one header by a weighted mix of values, counting results per value.
    pub mix: Option<Mix>,
    /// Connections.
    pub connection: ConnectionOptions,
    /// Client retries of errors (`--client-retries`, `--client-retry-backoff`).
    pub retry: ClientRetry,
    /// Outputs.
    pub output: OutputOptions,
}

/// Builds the request from its command-line form.
pub fn request_spec(target: &Target, options: &RequestOptions) -> Result<RequestSpec, CliError> {
    let method = if options.method.is_empty() { "GET" } else { options.method.as_str() };
    let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| CliError(format!("invalid method `{method}`")))?;
    let mut headers = HeaderMap::new();
    for line in &options.headers {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| CliError(format!("invalid header `{line}`: expected `Name: value`")))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| CliError(format!("invalid header name in `{line}`")))?;
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| CliError(format!("invalid header value in `{line}`")))?;
        headers.append(name, value);
    }
    let body = match (&options.body, &options.body_file) {
        (Some(_), Some(_)) => return Err(CliError("give --body or --body-file, not both".into())),
        (Some(text), None) => Bytes::from(text.clone()),
        (None, Some(path)) => Bytes::from(
            std::fs::read(path)
                .map_err(|e| CliError(format!("cannot read {}: {e}", path.display())))?,
        ),
        (None, None) => Bytes::new(),
    };
    Ok(RequestSpec { method, path_and_query: target.path_and_query.clone(), headers, body })
}

/// The plan of a `load` run: closed loop when asked for, else the ramp or the constant rate;
/// always bounded by a duration (default [`DEFAULT_DURATION`]) and optionally by a count.
pub fn load_plan(options: &LoadOptions) -> Result<Plan, CliError> {
    if options.requests == Some(0) {
        return Err(CliError("--requests must be at least 1".into()));
    }
    let duration = options.duration.unwrap_or(DEFAULT_DURATION);
    if options.closed {
        if options.rate.is_some() || options.ramp.is_some() {
            return Err(CliError(
                "closed loop sends as fast as it can: drop --rate / --ramp".into(),
            ));
        }
        return Ok(Plan::Closed { duration, max_requests: options.requests });
    }
    let schedule = match (&options.ramp, options.rate) {
        (Some(_), Some(_)) => return Err(CliError("give --rate or --ramp, not both".into())),
        (Some(_), None) if options.duration.is_some() => {
            return Err(CliError("a ramp's steps set its length: drop --duration".into()))
        }
        (Some(ramp), None) => Schedule::ramp(ramp),
        (None, rate) => Schedule::constant(rate.unwrap_or(DEFAULT_RATE), duration),
    }
    .map_err(CliError::msg)?;
    Ok(Plan::Open(match options.requests {
        Some(max) => schedule.limited_to(max),
        None => schedule,
    }))
}

/// The runtime that drives a tool (progress, timeline); the engine starts its own load threads.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(CliError::msg)
}

/// Timeline interval for a run of `duration`: about 40 points or more, 100 ms .. 1 s.
pub(crate) fn timeline_interval(duration: Duration) -> Duration {
    (duration / 40).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// Runs the engine with a progress bar.
pub(crate) async fn run_with_progress(
    config: EngineConfig,
    label: &str,
    quiet: bool,
) -> Result<Report, CliError> {
    let progress = Progress::new(label, plan_duration(&config.plan), quiet);
    let report = engine::run(config, |live: &Live| progress.update(live)).await;
    progress.finish();
    report.map_err(CliError::msg)
}

fn plan_duration(plan: &Plan) -> Duration {
    match plan {
        Plan::Open(s) => s.duration(),
        Plan::Closed { duration, .. } => *duration,
        Plan::Replay(r) => r.duration(),
    }
}

/// Why a `.png` plot is refused by a build without the `png` feature.
#[cfg(not(feature = "png"))]
pub(crate) const PNG_NEEDS_FEATURE: &str = "PNG plots are not in this build (it lacks the \
    `png` cargo feature: build with `--features spillway-load/png`); use a .svg file name";

/// Refuses output paths that could only fail after the run (a plot that is not .svg/.png, or
/// .png in a build without the `png` feature).
pub(crate) fn check_outputs(output: &OutputOptions) -> Result<(), CliError> {
    if let Some(path) = &output.plot {
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        if !matches!(ext.as_deref(), Some("svg" | "png")) {
            return Err(CliError(format!(
                "--plot {}: the file name must end in .svg or .png",
                path.display()
            )));
        }
        #[cfg(not(feature = "png"))]
        if ext.as_deref() == Some("png") {
            return Err(CliError(format!("--plot {}: {PNG_NEEDS_FEATURE}", path.display())));
        }
    }
    Ok(())
}

/// Writes the JSON report and the plot when asked for.
pub(crate) fn write_outputs(report: &Report, output: &OutputOptions) -> Result<(), CliError> {
    if let Some(path) = &output.json {
        let json = report.to_json().map_err(CliError::msg)?;
        write_file(path, json.as_bytes())?;
    }
    if let Some(path) = &output.plot {
        crate::plot::plot_report(report, path).map_err(CliError::msg)?;
    }
    Ok(())
}

pub(crate) fn write_file(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    std::fs::write(path, bytes)
        .map_err(|e| CliError(format!("cannot write {}: {e}", path.display())))
}

/// Engine settings common to the tools.
pub(crate) fn engine_config(
    url: &str,
    target: Target,
    requests: Vec<RequestSpec>,
    plan: Plan,
    connection: &ConnectionOptions,
    default_connections: usize,
) -> EngineConfig {
    let interval = timeline_interval(plan_duration(&plan));
    EngineConfig {
        target,
        url: url.to_string(),
        requests: Arc::from(requests),
        mix: None,
        plan,
        connections: connection.connections.unwrap_or(default_connections).max(1),
        http2: connection.http2,
        streams_per_connection: connection.streams.max(1),
        timeout: connection.timeout,
        interval,
        threads: connection
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        retry: ClientRetry::NONE,
    }
}

/// `spillway load`: runs the test, prints the summary table, writes JSON and plot; returns the
/// report.
pub fn load(options: LoadOptions) -> Result<Report, CliError> {
    let target =
        Target::resolve(&options.url, options.connection.allow_remote).map_err(CliError::msg)?;
    let plan = load_plan(&options)?;
    check_outputs(&options.output)?;
    let request = request_spec(&target, &options.request)?;
    let requests = match &options.mix {
        Some(mix) => mix.requests(&request),
        None => vec![request],
    };
    let default_connections =
        if options.closed { DEFAULT_CLOSED_CONNECTIONS } else { DEFAULT_OPEN_CONNECTIONS };
    let mut config = engine_config(
        &options.url,
        target,
        requests,
        plan,
        &options.connection,
        default_connections,
    );
    config.mix = options.mix.clone().map(Arc::new);
    config.retry = options.retry;
    let report = runtime()?.block_on(run_with_progress(config, "load", options.output.quiet))?;
    print!("{}", report.summary_table());
    write_outputs(&report, &options.output)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> LoadOptions {
        LoadOptions {
            url: "http://127.0.0.1:1/".into(),
            rate: None,
            ramp: None,
            closed: false,
            duration: None,
            requests: None,
            request: RequestOptions::default(),
            mix: None,
            connection: ConnectionOptions::default(),
            retry: ClientRetry::NONE,
            output: OutputOptions::default(),
        }
    }

    #[test]
    fn open_loop_is_the_default_and_always_bounded() {
        let Plan::Open(s) = load_plan(&options()).unwrap() else { panic!("not open loop") };
        assert_eq!(s.duration(), DEFAULT_DURATION);
        assert_eq!(s.steps()[0].rate, DEFAULT_RATE);
    }

    #[test]
    fn closed_loop_keeps_a_duration_and_a_count() {
        let o = LoadOptions { closed: true, requests: Some(7), ..options() };
        let Plan::Closed { duration, max_requests } = load_plan(&o).unwrap() else {
            panic!("not closed")
        };
        assert_eq!((duration, max_requests), (DEFAULT_DURATION, Some(7)));
    }

    #[test]
    fn contradictory_modes_are_refused() {
        let ramp = "1:2:1:1s".parse().ok();
        assert!(load_plan(&LoadOptions { rate: Some(5.0), ramp, ..options() }).is_err());
        assert!(load_plan(&LoadOptions { rate: Some(5.0), closed: true, ..options() }).is_err());
        assert!(load_plan(&LoadOptions { requests: Some(0), ..options() }).is_err());
        let ramp = "1:2:1:1s".parse().ok();
        let duration = Some(Duration::from_secs(5));
        assert!(load_plan(&LoadOptions { ramp, duration, ..options() }).is_err());
    }

    #[test]
    fn headers_method_and_body_are_parsed() {
        let target = Target::resolve("http://127.0.0.1:1/x?y=1", false).unwrap();
        let spec = request_spec(
            &target,
            &RequestOptions {
                method: "post".into(),
                headers: vec![
                    "x-spillway-criticality: SHEDDABLE".into(),
                    "X-A: 1".into(),
                    "x-a: 2".into(),
                ],
                body: Some("hello".into()),
                body_file: None,
            },
        )
        .unwrap();
        assert_eq!(spec.method, Method::POST);
        assert_eq!(spec.headers["x-spillway-criticality"], "SHEDDABLE");
        assert_eq!(spec.headers.get_all("x-a").iter().count(), 2);
        assert_eq!(spec.body, Bytes::from_static(b"hello"));
        assert_eq!(spec.path_and_query.as_str(), "/x?y=1");
        let bad = RequestOptions { headers: vec!["no colon".into()], ..Default::default() };
        assert!(request_spec(&target, &bad).is_err());
    }

    #[test]
    fn a_mix_builds_one_request_per_class_overriding_the_same_header() {
        let target = Target::resolve("http://127.0.0.1:1/", false).unwrap();
        let base = request_spec(
            &target,
            &RequestOptions {
                headers: vec!["x-spillway-criticality: CRITICAL".into(), "x-b: 1".into()],
                ..Default::default()
            },
        )
        .unwrap();
        let mix: Mix = "x-spillway-criticality: SHEDDABLE=1,CRITICAL_PLUS=1".parse().unwrap();
        let specs = mix.requests(&base);
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].headers["x-spillway-criticality"], "SHEDDABLE");
        assert_eq!(specs[1].headers["x-spillway-criticality"], "CRITICAL_PLUS");
        assert_eq!(specs[1].headers.get_all("x-spillway-criticality").iter().count(), 1);
        assert_eq!(specs[0].headers["x-b"], "1");
    }

    #[test]
    fn timeline_has_enough_points_for_short_and_long_runs() {
        assert_eq!(timeline_interval(Duration::from_secs(1)), Duration::from_millis(100));
        assert_eq!(timeline_interval(Duration::from_secs(20)), Duration::from_millis(500));
        assert_eq!(timeline_interval(Duration::from_secs(600)), Duration::from_secs(1));
    }
}
