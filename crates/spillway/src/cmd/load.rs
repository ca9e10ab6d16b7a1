//! `spillway load`: not built yet (see the open issues); the arguments are defined here.

use std::process::ExitCode;

/// Arguments of `spillway load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {}

/// Runs `spillway load`.
pub fn main(_args: LoadArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`spillway load` is not built yet")
}
