//! Inspections ("巡检"): settings that are valid but risky, reported as warnings by
//! `spillway check` (and logged at start-up and reload).

use super::locate::{self, Seg};
use super::*;

/// A timeout longer than this is reported: such waits hold connections and memory while the
/// client has usually given up.
pub const LONG_TIMEOUT: Duration = Duration::from_secs(60);

fn warn(out: &mut Vec<Problem>, source: &str, path: &[Seg], reason: String) {
    out.push(Problem { line: locate::line_of(source, path), key: locate::render(path), reason });
}

fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

/// The warnings for a validated config; `source` gives line numbers and tells explicit
/// settings from defaults.
pub fn inspect(config: &Config, source: &str) -> Vec<Problem> {
    let mut out = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let p = [key("listeners"), Seg::Index(i), key("timeouts"), key("header_read")];
        if l.header_read_timeout > LONG_TIMEOUT {
            warn(
                &mut out,
                source,
                &p,
                format!(
                    "header read timeout {} is over 60s: slow clients hold connections",
                    duration::format_duration(l.header_read_timeout)
                ),
            );
        }
    }
    for (i, cl) in config.clusters.iter().enumerate() {
        let t = cl.timeouts;
        for (name, d) in [("connect", t.connect), ("request", t.request), ("per_try", t.per_try)] {
            if d > LONG_TIMEOUT {
                let p = [key("clusters"), Seg::Index(i), key("timeouts"), key(name)];
                warn(
                    &mut out,
                    source,
                    &p,
                    format!(
                        "{name} timeout {} is over 60s: callers have usually given up by then",
                        duration::format_duration(d)
                    ),
                );
            }
        }
    }
    for (i, r) in config.routes.iter().enumerate() {
        let p = [key("routes"), Seg::Index(i)];
        if let RouteAction::Cluster { name, timeout, .. } = &r.action {
            match timeout {
                Some(d) if *d > LONG_TIMEOUT => {
                    warn(
                        &mut out,
                        source,
                        &[p[0].clone(), p[1].clone(), key("timeout")],
                        format!("timeout {} is over 60s", duration::format_duration(*d)),
                    );
                }
                Some(_) => {}
                None => {
                    let index = config.clusters.iter().position(|c| &c.name == name);
                    let explicit = index.is_some_and(|ci| {
                        let tp = [key("clusters"), Seg::Index(ci), key("timeouts"), key("request")];
                        locate::line_of(source, &tp) != locate::line_of(source, &tp[..3])
                            || source_has_inline_request(source, ci)
                    });
                    if !explicit {
                        warn(&mut out, source, &p, format!("route `{}` has no timeout (neither `timeout` here nor `timeouts.request` on cluster `{name}`): the default {} applies", r.name, duration::format_duration(validate::DEFAULT_REQUEST)));
                    }
                }
            }
        }
        let m = &r.matcher;
        let catch_all =
            m.host.is_none() && m.path.is_none() && m.methods.is_empty() && m.headers.is_empty();
        if catch_all && i + 1 < config.routes.len() {
            warn(
                &mut out,
                source,
                &p,
                format!(
                    "route `{}` matches every request: the {} route(s) after it are never used",
                    r.name,
                    config.routes.len() - i - 1
                ),
            );
        }
    }
    for (path, reason) in super::record::inspect_records(config) {
        warn(&mut out, source, &path, reason);
    }
    if let Some(admin) = &config.admin {
        if !admin.address.ip().is_loopback() && admin.token.is_none() {
            warn(
                &mut out,
                source,
                &[key("admin"), key("address")],
                format!(
                    "admin listener on {} is reachable from other hosts and has no `token`",
                    admin.address
                ),
            );
        }
    }
    out
}

/// Whether cluster `index` writes `request:` inside an inline `timeouts: { ... }`.
fn source_has_inline_request(source: &str, index: usize) -> bool {
    let tp = [key("clusters"), Seg::Index(index), key("timeouts")];
    let Some(line) = locate::line_of(source, &tp) else { return false };
    source.lines().nth(line - 1).is_some_and(|l| l.contains("timeouts") && l.contains("request:"))
}
