//! `spillway check FILE`: validate and inspect a config; exit 0 (fine), 1 (errors) or 2
//! (warnings, with `--strict`).

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `spillway check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// The config file.
    pub file: PathBuf,
    /// Fail (exit code 2) when there are warnings.
    #[arg(long)]
    pub strict: bool,
}

/// Runs `spillway check`.
pub fn main(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let report = spillway_gateway::check::check(&args.file, args.strict);
    print!("{}", report.text);
    Ok(ExitCode::from(report.exit_code))
}
