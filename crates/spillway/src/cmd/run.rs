//! `spillway run`: not built yet (see the open issues); the arguments are defined here.

use std::process::ExitCode;

/// Arguments of `spillway run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {}

/// Runs `spillway run`.
pub fn main(_args: RunArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`spillway run` is not built yet")
}
