//! `spillway register`: registers a service instance in etcd under a lease and keeps it alive
//! (a sidecar for services in any language), deregistering on SIGTERM or Ctrl-C; the work is
//! `spillway_gateway::upstream::discovery::register`.

use spillway_gateway::upstream::discovery::{register, RegisterOptions, Registration};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

/// Arguments of `spillway register`.
#[derive(Debug, clap::Args)]
pub struct RegisterArgs {
    /// etcd client URL (repeatable), e.g. http://127.0.0.1:2379.
    #[arg(long = "etcd", required = true)]
    pub etcd: Vec<String>,
    /// The service name: the key is PREFIX/SERVICE/ADDRESS.
    #[arg(long)]
    pub service: String,
    /// The instance's IP:port, as the gateway should call it.
    #[arg(long)]
    pub address: std::net::SocketAddr,
    /// Relative weight.
    #[arg(long, default_value_t = 1)]
    pub weight: u32,
    /// Zone label.
    #[arg(long)]
    pub zone: Option<String>,
    /// A free-form label `key=value` (repeatable).
    #[arg(long = "meta", value_parser = parse_meta)]
    pub meta: Vec<(String, String)>,
    /// The lease's time to live: the key disappears this long after the last keep-alive.
    #[arg(long, default_value = "10s", value_parser = parse_ttl)]
    pub ttl: Duration,
    /// Key prefix of services (a gateway cluster watches PREFIX/SERVICE/).
    #[arg(long, default_value = "/services")]
    pub prefix: String,
}

fn parse_meta(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("`{text}` is not key=value")),
    }
}

fn parse_ttl(text: &str) -> Result<Duration, String> {
    let d = spillway_gateway::config::duration::parse_duration(text)?;
    if d < Duration::from_secs(1) {
        return Err("at least 1s (etcd leases count whole seconds)".into());
    }
    Ok(d)
}

/// Runs `spillway register`.
pub fn main(args: RegisterArgs) -> anyhow::Result<ExitCode> {
    super::logging::init("info", false);
    if args.weight == 0 {
        anyhow::bail!("--weight must be at least 1");
    }
    let opts = RegisterOptions {
        etcd: args.etcd,
        prefix: args.prefix,
        service: args.service,
        registration: Registration {
            address: args.address.to_string(),
            weight: Some(args.weight),
            zone: args.zone,
            metadata: args.meta.into_iter().collect::<BTreeMap<_, _>>(),
        },
        ttl: args.ttl,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
            }
        };
        register(opts, stop).await
    })?;
    Ok(ExitCode::SUCCESS)
}
