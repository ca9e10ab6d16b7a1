//! `spillway demo`: not built yet (see the open issues); the arguments are defined here.

use std::process::ExitCode;

/// Arguments of `spillway demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

/// Runs `spillway demo`.
pub fn main(_args: DemoArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("`spillway demo` is not built yet")
}
