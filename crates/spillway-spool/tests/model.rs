//! Property test: any sequence of appends, deliveries, failed attempts, expiries, compactions,
//! clock steps and reopens leaves the spool holding exactly what a plain in-memory model of
//! the queue holds — the same pending entries, attempt counts and next-attempt times, the
//! same bodies, the same due set — with ids that only ever increase.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use proptest::prelude::*;
use spillway_spool::{EntryId, Spool, SpoolConfig, SpoolError};
use std::collections::BTreeMap;
use std::time::Duration;

const MAX_AGE_MS: u64 = 30_000;
const HEADER: u64 = 28;

#[derive(Debug, Clone)]
enum Op {
    Append { body: usize },
    Deliver { pick: usize },
    Fail { pick: usize, delay_ms: u64 },
    Due { limit: usize },
    Advance { ms: u64 },
    Expire,
    Compact,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..400).prop_map(|body| Op::Append { body }),
        3 => any::<usize>().prop_map(|pick| Op::Deliver { pick }),
        2 => (any::<usize>(), 0u64..20_000).prop_map(|(pick, delay_ms)| Op::Fail { pick, delay_ms }),
        1 => (1usize..8).prop_map(|limit| Op::Due { limit }),
        2 => (0u64..15_000).prop_map(|ms| Op::Advance { ms }),
        1 => Just(Op::Expire),
        1 => Just(Op::Compact),
        2 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Clone)]
struct Model {
    n: u64,
    body: usize,
    created: u64,
    attempts: u32,
    next: u64,
}

struct Harness {
    config: SpoolConfig,
    spool: Option<Spool>,
    model: BTreeMap<EntryId, Model>,
    now: u64,
    appended: u64,
    last_id: Option<EntryId>,
    gone: Vec<EntryId>,
}

impl Harness {
    fn spool(&mut self) -> &mut Spool {
        self.spool.as_mut().unwrap()
    }

    fn expire_model(&mut self) -> u64 {
        let now = self.now;
        let before = self.model.len();
        self.model.retain(|id, m| {
            let keep = now.saturating_sub(m.created) <= MAX_AGE_MS;
            if !keep {
                self.gone.push(*id);
            }
            keep
        });
        (before - self.model.len()) as u64
    }

    fn expected_due(&self, limit: usize) -> Vec<(EntryId, u32)> {
        self.model
            .iter()
            .filter(|(_, m)| m.next <= self.now && self.now - m.created <= MAX_AGE_MS)
            .take(limit)
            .map(|(id, m)| (*id, m.attempts))
            .collect()
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        let now = self.now;
        match *op {
            Op::Append { body } => {
                let n = self.appended;
                self.appended += 1;
                let entry = entry_sized(n, body, now);
                match self.spool().append(&entry, now) {
                    Ok(id) => {
                        prop_assert!(Some(id) > self.last_id, "{id} after {:?}", self.last_id);
                        self.last_id = Some(id);
                        let m = Model { n, body, created: now, attempts: 0, next: now };
                        self.model.insert(id, m);
                    }
                    Err(SpoolError::Full { needed, max_bytes, .. }) => {
                        // Full only when even a spool of nothing but live records would not
                        // hold the entry (plus a few headers): never premature.
                        let stats = self.spool().stats(now);
                        prop_assert!(
                            stats.live_bytes + needed + HEADER * (stats.segments + 3) > max_bytes,
                            "premature Full: {stats:?}, needed {needed}"
                        );
                    }
                    Err(SpoolError::TooLarge { bytes, max_bytes }) => {
                        prop_assert!(bytes + HEADER > max_bytes);
                    }
                    Err(e) => return Err(TestCaseError::fail(e.to_string())),
                }
            }
            Op::Deliver { pick } => {
                if self.model.is_empty() {
                    if let Some(&id) = self.gone.get(pick % self.gone.len().max(1)) {
                        let r = self.spool().delivered(id);
                        prop_assert!(matches!(r, Err(SpoolError::NotPending { .. })), "{r:?}");
                    }
                } else {
                    let id = *self.model.keys().nth(pick % self.model.len()).unwrap();
                    self.spool().delivered(id).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    self.model.remove(&id);
                    self.gone.push(id);
                }
            }
            Op::Fail { pick, delay_ms } => {
                if !self.model.is_empty() {
                    let id = *self.model.keys().nth(pick % self.model.len()).unwrap();
                    let attempts = self
                        .spool()
                        .failed(id, now + delay_ms)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    let m = self.model.get_mut(&id).unwrap();
                    m.attempts += 1;
                    m.next = now + delay_ms;
                    prop_assert_eq!(attempts, m.attempts);
                }
            }
            Op::Due { limit } => {
                let due: Vec<(EntryId, u32)> = self
                    .spool()
                    .due(now, limit)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?
                    .into_iter()
                    .map(|d| (d.id, d.attempts))
                    .collect();
                prop_assert_eq!(due, self.expected_due(limit));
            }
            Op::Advance { ms } => self.now += ms,
            Op::Expire => {
                let n = self.spool().expire(now).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(n, self.expire_model());
            }
            Op::Compact => {
                self.spool().compact().map_err(|e| TestCaseError::fail(e.to_string()))?
            }
            Op::Reopen => {
                drop(self.spool.take());
                self.spool = Some(
                    Spool::open(self.config.clone(), now)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?,
                );
                self.expire_model();
                self.check_contents()?;
            }
        }
        self.check_index()
    }

    /// The index agrees with the model.
    fn check_index(&mut self) -> Result<(), TestCaseError> {
        let now = self.now;
        let spool = self.spool.as_ref().unwrap();
        let got: Vec<(EntryId, u32, u64)> =
            spool.pending().map(|p| (p.id, p.attempts, p.next_attempt_unix_ms)).collect();
        let want: Vec<(EntryId, u32, u64)> =
            self.model.iter().map(|(id, m)| (*id, m.attempts, m.next)).collect();
        prop_assert_eq!(got, want);
        let stats = spool.stats(now);
        prop_assert_eq!(stats.depth, self.model.len() as u64);
        prop_assert!(stats.live_bytes <= stats.bytes_on_disk);
        prop_assert_eq!(stats.poisoned, None);
        prop_assert_eq!(stats.compaction_errors, 0);
        Ok(())
    }

    /// Every body reads back, the due set matches, and the files are what the stats say.
    fn check_contents(&mut self) -> Result<(), TestCaseError> {
        let spool = self.spool.as_mut().unwrap();
        for (id, m) in &self.model {
            let got = spool.get(*id).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(got, Some(entry_sized(m.n, m.body, m.created)));
        }
        let stats = spool.stats(self.now);
        prop_assert_eq!(stats.corrupt_records_at_open, 0);
        let files = segment_files(&self.config.dir);
        prop_assert_eq!(files.len() as u64, stats.segments);
        let on_disk: u64 = files.iter().map(|p| p.metadata().unwrap().len()).sum();
        prop_assert_eq!(on_disk, stats.bytes_on_disk);
        let due: Vec<(EntryId, u32)> = spool
            .due(self.now, usize::MAX)
            .map_err(|e| TestCaseError::fail(e.to_string()))?
            .into_iter()
            .map(|d| (d.id, d.attempts))
            .collect();
        prop_assert_eq!(due, self.expected_due(usize::MAX));
        Ok(())
    }
}

proptest! {
    // 64 cases by default (each syncs files tens of times); PROPTEST_CASES asks for more.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn spool_matches_an_in_memory_model_across_reopens(
        segment_bytes in 256u64..2048,
        segments in 1u64..6,
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = SpoolConfig::new(dir.path());
        config.segment_bytes = segment_bytes;
        config.max_bytes = segment_bytes * segments;
        config.max_age = Duration::from_millis(MAX_AGE_MS);
        let spool = Spool::open(config.clone(), T0).unwrap();
        let mut h = Harness {
            config,
            spool: Some(spool),
            model: BTreeMap::new(),
            now: T0,
            appended: 0,
            last_id: None,
            gone: Vec::new(),
        };
        for op in &ops {
            h.apply(op)?;
        }
        h.apply(&Op::Reopen)?;
    }
}
