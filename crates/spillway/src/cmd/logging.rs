//! Structured logging set-up shared by the subcommands (`tracing`, filtered by `RUST_LOG`).

use tracing_subscriber::EnvFilter;

/// Installs a `tracing` subscriber writing to stderr; `RUST_LOG` overrides `default_filter`.
/// `json` switches to one JSON object per line.
pub fn init(default_filter: &str, json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // A second init (tests, embedding) is not an error worth failing for.
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}
