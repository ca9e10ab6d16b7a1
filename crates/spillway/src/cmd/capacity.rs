//! `spillway capacity`: arguments of the knee finder, handed to
//! `spillway_load::capacity::run_capacity`.

use super::load::{ConnectionArgs, OutputArgs, RequestArgs};
use spillway_load::capacity::{parse_ratio, CapacityOptions, SearchConfig, Slo};
use spillway_load::units::parse_duration;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `spillway capacity`.
#[derive(Debug, clap::Args)]
pub struct CapacityArgs {
    /// Target URL (loopback unless --allow-remote).
    pub url: String,
    /// Latency objective, e.g. `p99=200ms` (p50, p90, p99 or p99.9).
    #[arg(long)]
    pub slo: Slo,
    /// Highest acceptable share of failed requests (transport errors and statuses >= 400).
    #[arg(long, default_value = "1%", value_parser = parse_ratio)]
    pub max_error_rate: f64,
    /// First rate tried (rps).
    #[arg(long, default_value_t = 100.0)]
    pub start: f64,
    /// Never offer more than this rate (rps).
    #[arg(long, default_value_t = 100_000.0)]
    pub max_rate: f64,
    /// Length of each step.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub step_duration: Duration,
    /// Most steps in total.
    #[arg(long, default_value_t = 12)]
    pub max_steps: usize,
    /// Share of the measured capacity kept free in the proposed token-bucket rate.
    #[arg(long, default_value = "20%", value_parser = parse_ratio)]
    pub headroom: f64,
    #[command(flatten)]
    pub request: RequestArgs,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Runs `spillway capacity`.
pub fn main(args: CapacityArgs) -> anyhow::Result<ExitCode> {
    let result = spillway_load::capacity::run_capacity(CapacityOptions {
        url: args.url,
        slo: Slo { max_error_rate: args.max_error_rate, ..args.slo },
        search: SearchConfig {
            start: args.start,
            max_rate: args.max_rate,
            max_steps: args.max_steps,
            ..SearchConfig::default()
        },
        step_duration: args.step_duration,
        headroom: args.headroom,
        request: args.request.into(),
        connection: args.connection.into(),
        output: args.output.into(),
    })?;
    Ok(if result.max_rate.is_some() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
