//! `spillway check`: not built yet (see the open issues); the arguments are defined here.

use std::process::ExitCode;

/// Arguments of `spillway check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {}

/// Runs `spillway check`.
pub fn main(_args: CheckArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`spillway check` is not built yet")
}
