//! `spillway capacity`: not built yet (see the open issues); the arguments are defined here.

use std::process::ExitCode;

/// Arguments of `spillway capacity`.
#[derive(Debug, clap::Args)]
pub struct CapacityArgs {}

/// Runs `spillway capacity`.
pub fn main(_args: CapacityArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`spillway capacity` is not built yet")
}
