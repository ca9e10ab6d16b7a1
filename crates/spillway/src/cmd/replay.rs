//! `spillway replay`: arguments of the traffic replayer, handed to
//! `spillway_load::replay::run_replay`.

use super::load::{ConnectionArgs, OutputArgs};
use spillway_load::replay::ReplayOptions;
use spillway_load::units::parse_duration;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `spillway replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Recording(s) written by a route's `record:` option, played in the order given.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Target URL; only its host and port are used (paths come from the recording).
    #[arg(long)]
    pub target: String,
    /// Speed factor applied to the recorded inter-arrival times (2.0 = twice as fast).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Replay again and again until --duration (default 60s) is up.
    #[arg(long = "loop")]
    pub looped: bool,
    /// Also play each file's rotated predecessors (FILE.N .. FILE.1 before FILE).
    #[arg(long)]
    pub with_rotated: bool,
    /// Stop after this long.
    #[arg(short, long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many requests.
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs `spillway replay`.
pub fn main(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    spillway_load::replay::run_replay(ReplayOptions {
        files: args.files,
        with_rotated: args.with_rotated,
        url: args.target,
        speed: args.speed,
        looped: args.looped,
        duration: args.duration,
        requests: args.requests,
        connection: args.connection.into(),
        output: args.output.into(),
    })?;
    Ok(ExitCode::SUCCESS)
}
