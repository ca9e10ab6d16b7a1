//! A real crash: a child process appends entries (and delivers and retries some), printing
//! each id only after the call returned, and is killed with SIGKILL mid-stream. After a
//! reopen, every printed append must be there and every printed delivery must stay
//! delivered: durability before acknowledgement, across three crashes in a row.
//!
//! The child is this test executable itself, run with `--exact crash_child` and the spool
//! directory in an environment variable; without that variable `crash_child` does nothing.

#![cfg(unix)]
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use spillway_spool::{EntryId, Spool, SpoolConfig};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

const CHILD_DIR: &str = "SPILLWAY_SPOOL_CRASH_CHILD_DIR";
const CHILD_ROUND: &str = "SPILLWAY_SPOOL_CRASH_CHILD_ROUND";
/// The child stops by itself after this many appends, should nobody kill it.
const CHILD_MAX_APPENDS: u64 = 5_000;
const BODY: usize = 1000;

fn config(dir: &Path) -> SpoolConfig {
    // ~15 entries a segment: rotations, deletions and copies happen all along.
    small_config(dir, 16 * 1024, 64 << 20)
}

/// The child's work; a no-op unless started by the parent test.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let round: u64 = std::env::var(CHILD_ROUND).unwrap().parse().unwrap();
    let mut spool = Spool::open(config(Path::new(&dir)), T0).unwrap();
    let mut out = std::io::stdout().lock();
    let mut recent = VecDeque::new();
    for i in 0..CHILD_MAX_APPENDS {
        let n = round * CHILD_MAX_APPENDS + i;
        let id = spool.append(&entry_sized(n, BODY, T0), T0).unwrap();
        writeln!(out, "APPENDED {id} {n}").unwrap();
        out.flush().unwrap();
        recent.push_back(id);
        if i % 3 == 2 {
            let done = recent.pop_front().unwrap();
            writeln!(out, "DELIVERING {done}").unwrap();
            out.flush().unwrap();
            spool.delivered(done).unwrap();
            writeln!(out, "DELIVERED {done}").unwrap();
            out.flush().unwrap();
        }
        if i % 5 == 4 {
            let retried = *recent.back().unwrap();
            let attempts = spool.failed(retried, T0 + 1_000).unwrap();
            writeln!(out, "FAILED {retried} {attempts}").unwrap();
            out.flush().unwrap();
        }
    }
}

#[derive(Default)]
struct Seen {
    appended: BTreeMap<EntryId, u64>,
    delivering: BTreeSet<EntryId>,
    delivered: BTreeSet<EntryId>,
    attempts: BTreeMap<EntryId, u32>,
}

impl Seen {
    /// Takes one line of the child's output; returns whether it was an append.
    fn take(&mut self, line: &str) -> bool {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["APPENDED", id, n] => {
                self.appended.insert(id.parse().unwrap(), n.parse().unwrap());
                return true;
            }
            ["DELIVERING", id] => {
                self.delivering.insert(id.parse().unwrap());
            }
            ["DELIVERED", id] => {
                self.delivered.insert(id.parse().unwrap());
            }
            ["FAILED", id, attempts] => {
                self.attempts.insert(id.parse().unwrap(), attempts.parse().unwrap());
            }
            _ => {} // the test harness's own lines
        }
        false
    }
}

#[test]
fn sigkill_mid_stream_loses_no_acknowledged_append_or_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let mut seen = Seen::default();
    let mut unprinted = BTreeSet::new();
    for round in 0..3u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "crash_child", "--nocapture", "--test-threads", "1"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_ROUND, round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Vary the moment of the kill between rounds.
        let kill_after = 120 + 41 * round as usize;
        let mut appends = 0;
        for line in lines.by_ref() {
            if seen.take(&line.unwrap()) {
                appends += 1;
                if appends == kill_after {
                    child.kill().unwrap(); // SIGKILL
                    break;
                }
            }
        }
        child.wait().unwrap();
        // What the child printed before it died may still be in the pipe.
        for line in lines {
            seen.take(&line.unwrap());
        }
        assert!(appends >= kill_after, "round {round}: the child stopped after {appends} appends");

        let spool = Spool::open(config(dir.path()), T0).unwrap();
        for (id, n) in &seen.appended {
            if seen.delivered.contains(id) {
                assert_eq!(spool.get(*id).unwrap(), None, "round {round}: {id} came back");
            } else if !seen.delivering.contains(id) {
                assert_eq!(
                    spool.get(*id).unwrap(),
                    Some(entry_sized(*n, BODY, T0)),
                    "round {round}: acknowledged {id} lost"
                );
            }
        }
        for info in spool.pending() {
            if let Some(&printed) = seen.attempts.get(&info.id) {
                // A killed process loses no written record (the kernel holds it).
                assert!(info.attempts >= printed, "round {round}: {info:?} < {printed}");
            }
        }
        // At most the one append in flight at the kill is there without having been printed.
        let new_unprinted: Vec<EntryId> = pending_ids(&spool)
            .into_iter()
            .filter(|id| !seen.appended.contains_key(id) && unprinted.insert(*id))
            .collect();
        assert!(new_unprinted.len() <= 1, "round {round}: {new_unprinted:?}");
        let stats = spool.stats(T0);
        assert!(stats.corrupt_records_at_open <= 1, "round {round}: {stats:?}");
    }
    assert!(seen.delivered.len() >= 100, "deliveries exercised");
}
