//! The `record:` block of a route: checks each value and builds the
//! [`spillway_record::RecordConfig`] the gateway starts a recorder from.
//!
//! Kept apart from `validate` so that the recorder's settings live in one place; problems come
//! back as (key path below `record`, reason) pairs that `validate` turns into located errors.

use super::locate::Seg;
use super::raw::{RawRecord, RawSize};
use super::{Config, Problem, RouteAction, RouteConfig};
use spillway_record::size::parse_bytes;
use spillway_record::{RecordConfig, DEFAULT_REDACT};
use std::path::Path;

/// Largest `max_body`: a recorded body prefix stays in memory until its request ends.
pub const MAX_RECORD_BODY: u64 = 16 * 1024 * 1024;
/// Most rotated files (`replay --with-rotated` looks for `file.1` .. `file.1000`).
pub const MAX_RECORD_FILES: usize = 1000;

/// A problem inside `record`: the key path below it and the reason.
pub type RecordProblem = (Vec<Seg>, String);

fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

fn size(problems: &mut Vec<RecordProblem>, name: &str, raw: Option<RawSize>, default: u64) -> u64 {
    match raw {
        None => default,
        Some(RawSize::Bytes(n)) => n,
        Some(RawSize::Text(text)) => parse_bytes(&text).unwrap_or_else(|e| {
            problems.push((vec![key(name)], e.to_string()));
            default
        }),
    }
}

fn header_names(problems: &mut Vec<RecordProblem>, name: &str, names: &[String]) {
    for (i, h) in names.iter().enumerate() {
        if http::HeaderName::from_bytes(h.as_bytes()).is_err() {
            problems.push((vec![key(name), Seg::Index(i)], format!("`{h}` is not a header name")));
        }
    }
}

/// Checks a route's `record:`; relative files resolve against `base` (the config's directory).
pub fn validate_record(
    raw: RawRecord,
    is_proxy: bool,
    base: &Path,
) -> (Option<RecordConfig>, Vec<RecordProblem>) {
    let mut problems = Vec::new();
    let defaults = RecordConfig::new("");
    if !is_proxy {
        problems.push((
            Vec::new(),
            "only a `cluster` route can record (a direct response never reads the request)".into(),
        ));
    }
    if raw.file.trim().is_empty() {
        problems.push((vec![key("file")], "must name a file".into()));
    }
    let file = base.join(&raw.file);
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => problems
            .push((vec![key("file")], format!("directory {} does not exist", dir.display()))),
        _ => {}
    }
    if file.is_dir() {
        problems.push((vec![key("file")], format!("{} is a directory", file.display())));
    }
    let sample = raw.sample.unwrap_or(defaults.sample);
    if !(0.0..=1.0).contains(&sample) {
        problems.push((
            vec![key("sample")],
            format!("a share of requests from 0 to 1 (0.1 records one in ten), got {sample}"),
        ));
    }
    let max_body = size(&mut problems, "max_body", raw.max_body, defaults.max_body);
    if max_body > MAX_RECORD_BODY {
        problems.push((
            vec![key("max_body")],
            "at most 16MB: a recorded body prefix is held in memory until its request ends".into(),
        ));
    }
    let max_file_bytes =
        size(&mut problems, "max_file_bytes", raw.max_file_bytes, defaults.max_file_bytes);
    if max_file_bytes < 1024 {
        problems.push((vec![key("max_file_bytes")], "at least 1KB".into()));
    }
    let max_files = raw.max_files.unwrap_or(defaults.max_files);
    if max_files > MAX_RECORD_FILES {
        problems.push((vec![key("max_files")], format!("at most {MAX_RECORD_FILES}")));
    }
    let queue = raw.queue.unwrap_or(defaults.queue);
    if queue == 0 {
        problems.push((vec![key("queue")], "at least 1".into()));
    }
    let redact = raw.redact.unwrap_or_default();
    header_names(&mut problems, "redact", &redact);
    let keep = raw.keep.unwrap_or_default();
    for (i, h) in keep.iter().enumerate() {
        if !DEFAULT_REDACT.contains(&h.to_ascii_lowercase().as_str()) {
            problems.push((
                vec![key("keep"), Seg::Index(i)],
                format!(
                    "`{h}` is not redacted anyway; `keep` lists headers to record in clear among {}",
                    DEFAULT_REDACT.join(", ")
                ),
            ));
        }
    }
    let config =
        RecordConfig { file, sample, max_body, max_file_bytes, max_files, redact, keep, queue };
    (problems.is_empty().then_some(config), problems)
}

/// Why `config` cannot share its file with a route defined before it: one recorder per file,
/// so routes writing one file must agree on every setting.
pub fn shared_file_conflict(earlier: &[RouteConfig], config: &RecordConfig) -> Option<String> {
    let other =
        earlier.iter().find(|r| r.record.as_ref().is_some_and(|o| o.file == config.file))?;
    (other.record.as_ref() != Some(config)).then(|| {
        format!(
            "{} is also recorded by route `{}` with other settings: routes sharing a file need \
             the same `record` settings",
            config.file.display(),
            other.name
        )
    })
}

/// Risky recording settings: every request recorded, secrets kept in clear.
pub fn inspect_records(config: &Config) -> Vec<(Vec<Seg>, String)> {
    let mut out = Vec::new();
    for (i, route) in config.routes.iter().enumerate() {
        let Some(record) = &route.record else { continue };
        let at = |more: &str| vec![key("routes"), Seg::Index(i), key("record"), key(more)];
        if record.sample >= 1.0 && matches!(route.action, RouteAction::Cluster { .. }) {
            out.push((
                at("sample"),
                format!(
                    "route `{}` records every request (sample 1): heavy on a busy route; \
                     `sample: 0.1` records one in ten",
                    route.name
                ),
            ));
        }
        let kept: Vec<&str> = record.keep.iter().map(String::as_str).collect();
        if !kept.is_empty() {
            out.push((
                at("keep"),
                format!("route `{}` records {} in clear", route.name, kept.join(", ")),
            ));
        }
    }
    out
}

/// Turns record problems into located config problems (used by `validate` and `inspect`).
pub fn located(source: &str, prefix: &[Seg], problems: Vec<RecordProblem>) -> Vec<Problem> {
    problems
        .into_iter()
        .map(|(sub, reason)| {
            let path: Vec<Seg> = prefix.iter().cloned().chain(sub).collect();
            Problem {
                line: super::locate::line_of(source, &path),
                key: super::locate::render(&path),
                reason,
            }
        })
        .collect()
}
