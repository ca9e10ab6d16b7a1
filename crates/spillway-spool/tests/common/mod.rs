//! Helpers shared by the spool's integration tests: sample entries, small configs, and
//! looking at the segment files.

#![allow(dead_code, clippy::unwrap_used)]

use bytes::Bytes;
use spillway_spool::{Entry, EntryId, Spool, SpoolConfig};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A day in milliseconds: the `max_age` of [`small_config`].
pub const DAY_MS: u64 = 24 * 60 * 60 * 1000;
/// A plausible `now` for tests.
pub const T0: u64 = 1_700_000_000_000;

/// An entry whose body says `i` and is `body_len` bytes long.
pub fn entry_sized(i: u64, body_len: usize, created_unix_ms: u64) -> Entry {
    let mut body = format!("entry {i};").into_bytes();
    body.resize(body_len.max(body.len()), b'.');
    Entry {
        route: format!("route-{}", i % 3),
        method: "POST".into(),
        target: format!("/orders/{i}?src=test"),
        headers: vec![
            ("content-type".into(), b"application/json".to_vec()),
            ("x-request-id".into(), format!("req-{i}").into_bytes()),
        ],
        body: Bytes::from(body),
        created_unix_ms,
    }
}

/// A small entry created at [`T0`].
pub fn entry(i: u64) -> Entry {
    entry_sized(i, 32, T0)
}

/// Segments of `segment_bytes`, room for `max_bytes`, a day of `max_age`.
pub fn small_config(dir: &Path, segment_bytes: u64, max_bytes: u64) -> SpoolConfig {
    let mut c = SpoolConfig::new(dir);
    c.segment_bytes = segment_bytes;
    c.max_bytes = max_bytes;
    c.max_age = Duration::from_millis(DAY_MS);
    c
}

/// The segment files in `dir`, oldest first.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "spool"))
        .collect();
    files.sort();
    files
}

/// Ids of the pending entries, oldest first.
pub fn pending_ids(spool: &Spool) -> Vec<EntryId> {
    spool.pending().map(|p| p.id).collect()
}
