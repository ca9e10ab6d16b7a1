//! `spillway replay`: not built yet (see the open issues); the arguments are defined here.

use std::process::ExitCode;

/// Arguments of `spillway replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {}

/// Runs `spillway replay`.
pub fn main(_args: ReplayArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`spillway replay` is not built yet")
}
