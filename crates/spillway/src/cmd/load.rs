//! `spillway load`: arguments of the load generator, handed to `spillway_load::cli::load`.

use spillway_load::cli::{ConnectionOptions, LoadOptions, OutputOptions, RequestOptions};
use spillway_load::engine::ClientRetry;
use spillway_load::mix::Mix;
use spillway_load::schedule::Ramp;
use spillway_load::units::parse_duration;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Request options shared by `load` and `capacity`.
#[derive(Debug, clap::Args)]
pub struct RequestArgs {
    /// HTTP method.
    #[arg(short = 'X', long, default_value = "GET")]
    pub method: String,
    /// Header `Name: value` (repeatable), e.g. `-H 'x-spillway-criticality: SHEDDABLE'`.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Request body.
    #[arg(long)]
    pub body: Option<String>,
    /// File whose contents are the request body.
    #[arg(long)]
    pub body_file: Option<PathBuf>,
}

/// Connection options shared by `load`, `capacity` and `replay`.
#[derive(Debug, clap::Args)]
pub struct ConnectionArgs {
    /// TCP connections (open loop: the most requests in flight; closed loop: the concurrency).
    #[arg(short, long)]
    pub connections: Option<usize>,
    /// Use HTTP/2 (h2c, prior knowledge).
    #[arg(long)]
    pub http2: bool,
    /// Concurrent streams per HTTP/2 connection.
    #[arg(long, default_value_t = 8)]
    pub streams: usize,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Allow targets outside loopback (127.0.0.0/8, ::1).
    #[arg(long)]
    pub allow_remote: bool,
    /// Load threads, each with its own event loop (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Output options shared by the tools.
#[derive(Debug, clap::Args)]
pub struct OutputArgs {
    /// Write machine-readable results (per step and overall) to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Plot throughput and latency over time to this .svg file (.png with the `png` feature).
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(short, long)]
    pub quiet: bool,
}

/// Arguments of `spillway load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Target URL (loopback unless --allow-remote).
    pub url: String,
    /// Open loop: constant arrival rate, requests per second [default: 100].
    #[arg(long, conflicts_with_all = ["ramp", "closed"])]
    pub rate: Option<f64>,
    /// Open loop: step ramp FROM:TO:STEP:DURATION, e.g. 100:2000:200:10s.
    #[arg(long, conflicts_with = "closed")]
    pub ramp: Option<Ramp>,
    /// Closed loop: every connection sends as fast as responses come back (as wrk). Also
    /// implied by --connections without --rate or --ramp.
    #[arg(long)]
    pub closed: bool,
    /// Length of the run [default: 10s; with --ramp, the steps set it].
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many requests.
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    #[command(flatten)]
    pub request: RequestArgs,
    /// Weighted mix of one header's values, `Name: VALUE=WEIGHT,...`, e.g.
    /// 'x-spillway-criticality: SHEDDABLE=50,CRITICAL=40,CRITICAL_PLUS=10'. Request i gets a
    /// class interleaved by its index (every period of requests has the exact proportions);
    /// results are also reported per class. Overrides a -H of the same name.
    #[arg(long)]
    pub mix: Option<Mix>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Client retries: send a request again when its answer is an error (5xx, 429, or no
    /// response: connect error, timeout), up to N more times, as a naive client does. The
    /// report shows `requests` (each once, with its last outcome) and `attempts` (all sent).
    #[arg(long, default_value_t = 0)]
    pub client_retries: u32,
    /// Wait between an error and the retry (the connection serves other requests meanwhile).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub client_retry_backoff: Duration,
    #[command(flatten)]
    pub output: OutputArgs,
}

impl From<RequestArgs> for RequestOptions {
    fn from(a: RequestArgs) -> Self {
        RequestOptions {
            method: a.method,
            headers: a.headers,
            body: a.body,
            body_file: a.body_file,
        }
    }
}

impl From<ConnectionArgs> for ConnectionOptions {
    fn from(a: ConnectionArgs) -> Self {
        ConnectionOptions {
            connections: a.connections,
            http2: a.http2,
            streams: a.streams,
            timeout: a.timeout,
            allow_remote: a.allow_remote,
            threads: a.threads,
        }
    }
}

impl From<OutputArgs> for OutputOptions {
    fn from(a: OutputArgs) -> Self {
        OutputOptions { json: a.json, plot: a.plot, quiet: a.quiet }
    }
}

/// Runs `spillway load`.
pub fn main(args: LoadArgs) -> anyhow::Result<ExitCode> {
    let closed = args.closed
        || (args.connection.connections.is_some() && args.rate.is_none() && args.ramp.is_none());
    spillway_load::cli::load(LoadOptions {
        url: args.url,
        rate: args.rate,
        ramp: args.ramp,
        closed,
        duration: args.duration,
        requests: args.requests,
        request: args.request.into(),
        mix: args.mix,
        connection: args.connection.into(),
        retry: ClientRetry::try_new(args.client_retries, args.client_retry_backoff)?,
        output: args.output.into(),
    })?;
    Ok(ExitCode::SUCCESS)
}
