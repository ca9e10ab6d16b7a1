//! `spillway run --config FILE`: run the gateway until SIGTERM/SIGINT (graceful drain), with
//! reload on SIGHUP, on file change and on `POST /admin/reload`.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `spillway run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The config file (YAML).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Write logs as JSON lines.
    #[arg(long)]
    pub log_json: bool,
    /// Do not reload when the config file changes (SIGHUP and the admin API still work).
    #[arg(long)]
    pub no_watch: bool,
}

/// Runs `spillway run`.
pub fn main(args: RunArgs) -> anyhow::Result<ExitCode> {
    super::logging::init("info", args.log_json);
    let config = match spillway_gateway::Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    for w in &config.warnings {
        tracing::warn!(file = %args.config.display(), "{w}");
    }
    let options = spillway_gateway::RunOptions {
        signals: true,
        watch_config: !args.no_watch,
        ..Default::default()
    };
    let gateway = spillway_gateway::Gateway::start(config, Some(args.config.clone()), options)?;
    if let Some(admin) = gateway.admin_address() {
        tracing::info!(%admin, "admin listening");
    }
    tracing::info!("gateway running; SIGHUP reloads, SIGTERM drains and stops");
    gateway.wait();
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}
