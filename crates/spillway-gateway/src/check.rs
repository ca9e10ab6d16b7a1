//! `spillway check`: validates a config file and lists its risky settings.
//!
//! Lives in the library (not the binary) so that tests pin the exact output and exit codes.

use crate::config::{render_problem, Config, ConfigError};
use std::fmt::Write;
use std::path::Path;

/// What `check` prints and the exit code it returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Human-readable lines: errors, warnings, then a summary.
    pub text: String,
    /// 0: fine; 1: errors; 2: warnings with `strict`.
    pub exit_code: u8,
}

/// Checks the config at `path`; with `strict`, warnings fail the check (exit code 2).
pub fn check(path: &Path, strict: bool) -> CheckReport {
    let file = path.display().to_string();
    let mut text = String::new();
    match Config::load(path) {
        Err(ConfigError::Io { source, .. }) => {
            let _ = writeln!(text, "{file}: error: cannot read: {source}");
            CheckReport { text, exit_code: 1 }
        }
        Err(ConfigError::Invalid { problems, .. }) => {
            for p in &problems {
                let _ = writeln!(text, "error: {}", render_problem(&file, p));
            }
            let _ = writeln!(text, "{file}: {} error(s)", problems.len());
            CheckReport { text, exit_code: 1 }
        }
        Ok(config) => {
            for p in &config.warnings {
                let _ = writeln!(text, "warning: {}", render_problem(&file, p));
            }
            let _ = writeln!(
                text,
                "{file}: ok: {} listener(s), {} cluster(s), {} route(s), {} worker(s); {} warning(s)",
                config.listeners.len(),
                config.clusters.len(),
                config.routes.len(),
                config.workers,
                config.warnings.len()
            );
            let exit_code = if strict && !config.warnings.is_empty() { 2 } else { 0 };
            CheckReport { text, exit_code }
        }
    }
}
