//! `spillway demo`: in-process demo backends and a gateway in front of them, with an embedded
//! config; prints where to send requests and what to try.

use std::process::ExitCode;

/// Arguments of `spillway demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Gateway port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Admin port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 9901)]
    pub admin_port: u16,
    /// Skip the tour (a rate limit, a burst, a deadline, a breaker, a plan) run against the
    /// gateway at start.
    #[arg(long)]
    pub no_tour: bool,
}

/// Runs `spillway demo`.
pub fn main(args: DemoArgs) -> anyhow::Result<ExitCode> {
    super::logging::init("info", false);
    let (gateway, text) = spillway_gateway::demo::start(args.port, args.admin_port, true)
        .map_err(|e| anyhow::anyhow!("{e} (try --port 0 --admin-port 0)"))?;
    println!("{text}");
    if !args.no_tour {
        if let Some(addr) = gateway.listener_address("public") {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let admin = gateway.admin_address();
            println!("{}", runtime.block_on(spillway_gateway::demo::tour(addr, admin)));
        }
    }
    gateway.wait();
    Ok(ExitCode::SUCCESS)
}
