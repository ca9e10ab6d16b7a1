//! `spillway backend`: arguments of the fixed-capacity test backend, handed to
//! `spillway_load::backend::serve`.

use spillway_load::backend::faults::{FailStatus, Faults, Ratio};
use spillway_load::backend::BackendConfig;
use spillway_load::units::parse_duration;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `spillway backend`.
#[derive(Debug, clap::Args)]
pub struct BackendArgs {
    /// Address to listen on; port 0 picks a free port (printed as `listening on ADDR`).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
    /// Listen on a non-loopback address.
    #[arg(long)]
    pub allow_remote: bool,
    /// Requests served at once (slots).
    #[arg(long)]
    pub concurrency: NonZeroUsize,
    /// How long each request holds its slot, e.g. 20ms.
    #[arg(long, value_parser = parse_duration)]
    pub service_time: Duration,
    /// Most requests waiting for a slot; beyond it, 503 at once [default: unbounded, FIFO].
    #[arg(long)]
    pub queue_limit: Option<usize>,
    /// Share of requests answered with --fail-status instead of 200, after their service time
    /// (0..1 or a percentage, e.g. 0.1 or 10%). POST /control changes it at run time.
    #[arg(long, default_value = "0")]
    pub fail_ratio: Ratio,
    /// Status of the failing answers (400..599).
    #[arg(long, default_value = "503")]
    pub fail_status: FailStatus,
    /// Share of requests that hold their slot for --tail-time instead of --service-time.
    #[arg(long, default_value = "0", requires = "tail_time")]
    pub tail_ratio: Ratio,
    /// How long a tail request holds its slot, e.g. 200ms.
    #[arg(long, value_parser = parse_duration)]
    pub tail_time: Option<Duration>,
    /// Start hard down: every request is answered 503 at once, without a slot, until
    /// `POST /control {"down":false}`.
    #[arg(long)]
    pub down: bool,
    /// Seed of the fault draws, for repeatable runs [default: from the clock].
    #[arg(long)]
    pub seed: Option<u64>,
    /// Exit after this long [default: run until SIGINT/SIGTERM].
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Server threads (1: a single event loop).
    #[arg(long, default_value = "1")]
    pub threads: NonZeroUsize,
}

/// Runs `spillway backend`.
pub fn main(args: BackendArgs) -> anyhow::Result<ExitCode> {
    let config = BackendConfig {
        listen: args.listen,
        allow_remote: args.allow_remote,
        concurrency: args.concurrency,
        service_time: args.service_time,
        queue_limit: args.queue_limit,
        faults: Faults {
            fail_ratio: args.fail_ratio,
            fail_status: args.fail_status,
            tail_ratio: args.tail_ratio,
            tail_time: args.tail_time.unwrap_or_default(),
            down: args.down,
        },
        seed: args.seed,
    };
    spillway_load::backend::serve(config, args.duration, args.threads)?;
    Ok(ExitCode::SUCCESS)
}
