//! `spillway backend`: arguments of the fixed-capacity test backend, handed to
//! `spillway_load::backend::serve`.

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
    };
    spillway_load::backend::serve(config, args.duration, args.threads)?;
    Ok(ExitCode::SUCCESS)
}
