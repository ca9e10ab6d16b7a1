//! The spool: the in-memory index of pending entries over the segment files, and every
//! operation that changes them (append, acknowledge, record an attempt, expire, compact),
//! each made durable in the order the crate docs describe.

use crate::compact::{plan, Goal, Step, Usage};
use crate::config::SpoolConfig;
use crate::entry::{DueEntry, Entry, EntryId, PendingInfo};
use crate::error::SpoolError;
use crate::fsio::{read_exact_at, sync_dir, write_all_at};
use crate::lock::DirLock;
use crate::record::{
    decode_entry, encode_attempt, encode_entry, encode_id, read_frame, Kind, Record,
    ATTEMPT_RECORD_BYTES, ID_RECORD_BYTES,
};
use crate::segment::{
    encode_header, parse_header, parse_segment_name, scan_records, segment_path, Header,
    ScannedRecord, SEGMENT_HEADER,
};
use crate::stats::SpoolStats;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Scratch buffers above this are not kept between appends.
const SCRATCH_KEEP: usize = 1 << 20;

/// One segment file.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    file: File,
    /// File length: where the next record goes (in the active segment).
    len: u64,
    /// Pending entries whose entry record is here.
    live: u64,
    /// Bytes of records here that are still needed: those entry records, plus the latest
    /// attempt record of any pending entry.
    live_bytes: u64,
}

/// The index's view of a pending entry.
#[derive(Debug, Clone, Copy)]
struct Pending {
    segment: u64,
    offset: u64,
    len: u32,
    created_unix_ms: u64,
    attempts: u32,
    next_attempt_unix_ms: u64,
    /// Segment holding the entry's latest attempt record, if any.
    attempt_segment: Option<u64>,
}

/// Totals since open.
#[derive(Debug, Default)]
struct Counters {
    appended: u64,
    delivered: u64,
    expired: u64,
    failed_attempts: u64,
    refused_full: u64,
    discarded: u64,
    corrupt_records: u64,
    corrupt_bytes: u64,
    segments_deleted: u64,
    relocated: u64,
    compaction_errors: u64,
}

/// Reading an entry back failed.
enum ReadFailure {
    /// The bytes are there but wrong: the entry can never be read.
    Damaged(SpoolError),
    /// The read itself failed (may be temporary).
    Io(SpoolError),
}

/// A durable queue of failed writes waiting to be delivered again. See the crate docs for the
/// on-disk format and the guarantees.
///
/// Synchronous and single-owner (`&mut self` for every change); the gateway keeps it behind a
/// mutex and calls it from a blocking thread.
#[derive(Debug)]
pub struct Spool {
    config: SpoolConfig,
    max_age_ms: u64,
    _lock: DirLock,
    segments: BTreeMap<u64, Segment>,
    /// Number of the segment appended to; always the last key of `segments`.
    active: u64,
    pending: BTreeMap<EntryId, Pending>,
    by_next: BTreeSet<(u64, EntryId)>,
    by_created: BTreeSet<(u64, EntryId)>,
    live_bytes: u64,
    bytes_on_disk: u64,
    next_id: u64,
    counters: Counters,
    last_compaction_error: Option<String>,
    poisoned: Option<String>,
    scratch: Vec<u8>,
}

impl Spool {
    /// Opens (or creates) the spool in `config.dir` and recovers its state.
    ///
    /// Takes the directory lock ([`SpoolError::Locked`] if another spool holds it), replays
    /// every segment oldest first, skips damaged records and cuts a torn end off the last
    /// segment (both counted in [`SpoolStats::corrupt_records_at_open`]), then expires entries
    /// older than `max_age` at `now_unix_ms` and compacts. A file in the directory that looks
    /// like a segment but is not one of this format is an error: the spool does not guess.
    pub fn open(config: SpoolConfig, now_unix_ms: u64) -> Result<Spool, SpoolError> {
        config.validate()?;
        let dir = config.dir.clone();
        fs::create_dir_all(&dir).map_err(SpoolError::io(&dir, "create the spool directory"))?;
        let lock = DirLock::acquire(&dir)?;
        let numbers = list_segments(&dir)?;
        let mut spool = Spool {
            max_age_ms: config.max_age_ms(),
            config,
            _lock: lock,
            segments: BTreeMap::new(),
            active: 0,
            pending: BTreeMap::new(),
            by_next: BTreeSet::new(),
            by_created: BTreeSet::new(),
            live_bytes: 0,
            bytes_on_disk: 0,
            next_id: 1,
            counters: Counters::default(),
            last_compaction_error: None,
            poisoned: None,
            scratch: Vec::new(),
        };
        let mut max_id = 0u64;
        let mut max_first_id = 0u64;
        let mut removed_any = false;
        let mut reuse_last = false;
        let last = numbers.last().copied();
        for &number in &numbers {
            let is_last = Some(number) == last;
            let path = segment_path(&dir, number);
            let bytes = fs::read(&path).map_err(SpoolError::io(&path, "read segment"))?;
            match parse_header(&bytes) {
                Header::Foreign(reason) => {
                    return Err(SpoolError::Corrupt { path, offset: 0, reason: reason.to_string() })
                }
                Header::Torn => {
                    // A crash while this segment was created: it holds no record.
                    if !bytes.is_empty() {
                        spool.counters.corrupt_records += 1;
                        spool.counters.corrupt_bytes += bytes.len() as u64;
                    }
                    fs::remove_file(&path)
                        .map_err(SpoolError::io(&path, "remove a torn segment"))?;
                    removed_any = true;
                    continue;
                }
                Header::Valid { first_id } => match first_id {
                    Some(f) => max_first_id = max_first_id.max(f),
                    None => {
                        spool.counters.corrupt_records += 1;
                        spool.counters.corrupt_bytes += SEGMENT_HEADER;
                    }
                },
            }
            let scan = scan_records(&bytes);
            spool.counters.corrupt_records += scan.skipped;
            let mut len = bytes.len() as u64;
            let file = if is_last {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(SpoolError::io(&path, "open segment"))?;
                if let Some(loss) = scan.lost {
                    // Cut the torn end so new records follow whole ones.
                    file.set_len(loss.offset)
                        .and_then(|()| file.sync_all())
                        .map_err(SpoolError::io(&path, "truncate a torn segment end"))?;
                    len = loss.offset;
                }
                file
            } else {
                // A damaged older segment keeps its bytes: nothing is appended to it, and it is
                // deleted whole once its readable entries are resolved.
                File::open(&path).map_err(SpoolError::io(&path, "open segment"))?
            };
            if let Some(loss) = scan.lost {
                spool.counters.corrupt_records += 1;
                spool.counters.corrupt_bytes += bytes.len() as u64 - loss.offset;
            }
            spool.segments.insert(number, Segment { path, file, len, live: 0, live_bytes: 0 });
            spool.bytes_on_disk += len;
            for record in &scan.records {
                max_id = max_id.max(record.record.id().get());
                spool.replay(number, record);
            }
            if is_last {
                reuse_last = len < spool.config.segment_bytes;
            }
        }
        if removed_any {
            sync_dir(&dir).map_err(SpoolError::io(&dir, "sync the spool directory"))?;
        }
        spool.next_id = max_id.saturating_add(1).max(max_first_id).max(1);
        match last {
            Some(number) if reuse_last && spool.segments.contains_key(&number) => {
                spool.active = number;
            }
            _ => spool.create_segment(last.map_or(1, |n| n + 1))?,
        }
        spool.expire(now_unix_ms)?;
        spool.compact()?;
        Ok(spool)
    }

    /// Applies one record found at open.
    fn replay(&mut self, segment: u64, scanned: &ScannedRecord) {
        match scanned.record {
            Record::Entry { id, created_unix_ms } => {
                if self.pending.contains_key(&id) {
                    // A copy written by compaction (its source segment was not deleted yet).
                    self.move_entry(id, segment, scanned.offset, scanned.len);
                } else {
                    self.insert_pending(
                        id,
                        Pending {
                            segment,
                            offset: scanned.offset,
                            len: scanned.len,
                            created_unix_ms,
                            attempts: 0,
                            next_attempt_unix_ms: created_unix_ms,
                            attempt_segment: None,
                        },
                    );
                }
            }
            Record::Delivered(id) | Record::Expired(id) | Record::Discarded(id) => {
                self.remove_pending(id);
            }
            Record::Attempt { id, attempts, next_attempt_unix_ms } => {
                if self.pending.contains_key(&id) {
                    self.set_attempt(id, attempts, next_attempt_unix_ms, segment);
                }
            }
        }
    }

    /// Stores `entry` durably and returns its id. When this returns `Ok`, the entry's record
    /// has been written and `fdatasync`ed (and a new segment's name synced into the
    /// directory), so it survives `kill -9` and power loss: answer 202 only after it.
    ///
    /// The entry is due at once (`now_unix_ms`); call [`Spool::failed`] to delay it. Fails
    /// with [`SpoolError::Full`] when it would take the spool past `max_bytes` even after
    /// compaction — nothing stored is ever dropped to make room — and with
    /// [`SpoolError::TooLarge`] when it could never fit. An `Io` error after the write means
    /// the sync failed: the entry may or may not survive a crash, and the spool is poisoned.
    pub fn append(&mut self, entry: &Entry, now_unix_ms: u64) -> Result<EntryId, SpoolError> {
        self.check_poisoned()?;
        let mut buf = std::mem::take(&mut self.scratch);
        buf.clear();
        let result = self.append_with(entry, now_unix_ms, &mut buf);
        if buf.capacity() <= SCRATCH_KEEP {
            self.scratch = buf;
        }
        result
    }

    fn append_with(
        &mut self,
        entry: &Entry,
        now_unix_ms: u64,
        buf: &mut Vec<u8>,
    ) -> Result<EntryId, SpoolError> {
        let max_bytes = self.config.max_bytes;
        let id = EntryId::from_raw(self.next_id);
        encode_entry(buf, id, entry).map_err(|bytes| SpoolError::TooLarge { bytes, max_bytes })?;
        let needed = buf.len() as u64;
        if needed + SEGMENT_HEADER > max_bytes {
            return Err(SpoolError::TooLarge { bytes: needed, max_bytes });
        }
        if self.would_exceed(needed) {
            let relocate = self.reclaimable() >= self.shortfall(needed) + 2 * SEGMENT_HEADER;
            self.compact_for(Goal::Room { relocate }, Some(needed))?;
            if self.would_exceed(needed) {
                self.counters.refused_full += 1;
                return Err(SpoolError::Full {
                    max_bytes,
                    bytes_on_disk: self.bytes_on_disk,
                    needed,
                });
            }
        }
        // Consumed even if the write fails: an id is never given to two entries.
        self.next_id += 1;
        let (segment, offset) = self.write_records(buf, true)?;
        self.insert_pending(
            id,
            Pending {
                segment,
                offset,
                len: needed as u32,
                created_unix_ms: entry.created_unix_ms,
                attempts: 0,
                next_attempt_unix_ms: now_unix_ms,
                attempt_segment: None,
            },
        );
        self.counters.appended += 1;
        Ok(id)
    }

    /// Pending entries whose next attempt time has come (`<= now_unix_ms`), oldest (lowest
    /// id) first, at most `limit` (fewer if some of those were unreadable). Entries past
    /// `max_age` are left out (the next [`Spool::expire`] removes them).
    ///
    /// Handing out changes nothing: an entry comes back from every call until it is resolved
    /// with [`Spool::delivered`] or delayed with [`Spool::failed`], so one delivery loop
    /// resolves what it got before it asks again.
    ///
    /// Each entry is read back from disk and checked against its checksum. One whose record
    /// no longer reads back (the disk changed under the spool) is dropped durably and counted
    /// in [`SpoolStats::discarded_unreadable`], so one bad record cannot stall the queue.
    pub fn due(&mut self, now_unix_ms: u64, limit: usize) -> Result<Vec<DueEntry>, SpoolError> {
        let mut out = Vec::new();
        if limit == 0 || self.by_next.first().is_none_or(|&(t, _)| t > now_unix_ms) {
            return Ok(out);
        }
        let mut unreadable = Vec::new();
        let candidates: Vec<(EntryId, Pending)> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                p.next_attempt_unix_ms <= now_unix_ms && !self.is_expired(p, now_unix_ms)
            })
            .map(|(&id, &p)| (id, p))
            .take(limit)
            .collect();
        for (id, p) in candidates {
            match self.read_entry(id, &p) {
                Ok(entry) => out.push(DueEntry { id, attempts: p.attempts, entry }),
                Err(ReadFailure::Damaged(_)) => unreadable.push(id),
                Err(ReadFailure::Io(e)) => return Err(e),
            }
        }
        if !unreadable.is_empty() {
            self.resolve(&unreadable, Kind::Discarded)?;
            self.counters.discarded += unreadable.len() as u64;
        }
        Ok(out)
    }

    /// Records that the entry was delivered: durable (written and `fdatasync`ed) when this
    /// returns `Ok`, so a restart never delivers it again. Then compacts (see
    /// [`SpoolStats::compaction_errors`] for failures there, which do not fail this call).
    ///
    /// [`SpoolError::NotPending`] if the id is not pending (already delivered, expired, …).
    pub fn delivered(&mut self, id: EntryId) -> Result<(), SpoolError> {
        self.check_poisoned()?;
        if !self.pending.contains_key(&id) {
            return Err(SpoolError::NotPending { id });
        }
        self.resolve(&[id], Kind::Delivered)?;
        self.counters.delivered += 1;
        self.housekeeping();
        Ok(())
    }

    /// Records a failed delivery attempt: the entry's attempt count goes up by one (returned)
    /// and it is not due again before `next_attempt_unix_ms` (the caller's backoff).
    ///
    /// The record is written but not synced: a restart of the process keeps it (the kernel
    /// holds it), a power loss may roll the entry back to an earlier attempt count and time —
    /// at worst one early retry. Attempt records that pile up during a long outage are
    /// reclaimed by compaction once they outweigh the live entries.
    pub fn failed(&mut self, id: EntryId, next_attempt_unix_ms: u64) -> Result<u32, SpoolError> {
        self.check_poisoned()?;
        let Some(p) = self.pending.get(&id) else {
            return Err(SpoolError::NotPending { id });
        };
        let attempts = p.attempts.saturating_add(1);
        let mut buf = Vec::with_capacity(ATTEMPT_RECORD_BYTES as usize);
        encode_attempt(&mut buf, id, attempts, next_attempt_unix_ms);
        let (segment, _) = self.write_records(&buf, false)?;
        self.set_attempt(id, attempts, next_attempt_unix_ms, segment);
        self.counters.failed_attempts += 1;
        self.housekeeping();
        Ok(attempts)
    }

    /// Expires every pending entry created more than `max_age` before `now_unix_ms`: durably
    /// (one write and one `fdatasync` for all), counted, never delivered. Returns how many.
    pub fn expire(&mut self, now_unix_ms: u64) -> Result<u64, SpoolError> {
        self.check_poisoned()?;
        let ids: Vec<EntryId> = self
            .by_created
            .iter()
            .take_while(|&&(created, _)| now_unix_ms.saturating_sub(created) > self.max_age_ms)
            .map(|&(_, id)| id)
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        self.resolve(&ids, Kind::Expired)?;
        self.counters.expired += ids.len() as u64;
        self.housekeeping();
        Ok(ids.len() as u64)
    }

    /// Frees what is cheap to free: deletes old segments whose entries are all resolved,
    /// copies the few live entries of a mostly dead oldest segment forward so it can go, and
    /// starts a fresh active segment when a large one is all resolved. Runs by itself after
    /// `delivered` and `expire` (and harder when an append does not fit); public for a
    /// maintenance loop or a test.
    pub fn compact(&mut self) -> Result<(), SpoolError> {
        self.compact_for(Goal::Housekeeping, None)
    }

    /// Reads a pending entry back from disk (`Ok(None)` if the id is not pending).
    pub fn get(&self, id: EntryId) -> Result<Option<Entry>, SpoolError> {
        let Some(p) = self.pending.get(&id) else {
            return Ok(None);
        };
        match self.read_entry(id, p) {
            Ok(entry) => Ok(Some(entry)),
            Err(ReadFailure::Damaged(e) | ReadFailure::Io(e)) => Err(e),
        }
    }

    /// The pending entries, oldest first, without reading their bodies.
    pub fn pending(&self) -> impl Iterator<Item = PendingInfo> + '_ {
        self.pending.iter().map(|(&id, p)| PendingInfo {
            id,
            created_unix_ms: p.created_unix_ms,
            attempts: p.attempts,
            next_attempt_unix_ms: p.next_attempt_unix_ms,
            record_bytes: u64::from(p.len),
        })
    }

    /// Number of pending entries.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether no entry is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The earliest next-attempt time of any pending entry: when the delivery loop has work
    /// again.
    pub fn next_due_unix_ms(&self) -> Option<u64> {
        self.by_next.first().map(|&(t, _)| t)
    }

    /// The config the spool was opened with.
    pub fn config(&self) -> &SpoolConfig {
        &self.config
    }

    /// A snapshot for the admin endpoint; ages are measured at `now_unix_ms`.
    pub fn stats(&self, now_unix_ms: u64) -> SpoolStats {
        let oldest = self.by_created.first().map(|&(created, _)| created);
        let c = &self.counters;
        SpoolStats {
            depth: self.pending.len() as u64,
            live_bytes: self.live_bytes,
            bytes_on_disk: self.bytes_on_disk,
            max_bytes: self.config.max_bytes,
            segments: self.segments.len() as u64,
            oldest_created_unix_ms: oldest,
            oldest_age_ms: oldest.map(|created| now_unix_ms.saturating_sub(created)),
            next_due_unix_ms: self.next_due_unix_ms(),
            appended: c.appended,
            delivered: c.delivered,
            expired: c.expired,
            failed_attempts: c.failed_attempts,
            refused_full: c.refused_full,
            discarded_unreadable: c.discarded,
            corrupt_records_at_open: c.corrupt_records,
            corrupt_bytes_at_open: c.corrupt_bytes,
            segments_deleted: c.segments_deleted,
            entries_relocated: c.relocated,
            compaction_errors: c.compaction_errors,
            last_compaction_error: self.last_compaction_error.clone(),
            poisoned: self.poisoned.clone(),
        }
    }

    /// Syncs the active segment (attempt records are written without a sync) and releases
    /// the directory lock. Dropping the spool does the same, ignoring errors.
    pub fn close(mut self) -> Result<(), SpoolError> {
        self.check_poisoned()?;
        self.sync_active()
    }

    // ---- index bookkeeping ----

    fn is_expired(&self, p: &Pending, now_unix_ms: u64) -> bool {
        now_unix_ms.saturating_sub(p.created_unix_ms) > self.max_age_ms
    }

    /// Updates the usage of segment `number`. An entry's segments (its record's and its
    /// latest attempt record's) stay in the map until it is resolved or moved, so a missing
    /// one is a bug: caught in tests, ignored in production rather than panicking.
    fn segment_usage(&mut self, number: u64, f: impl FnOnce(&mut Segment)) {
        match self.segments.get_mut(&number) {
            Some(seg) => f(seg),
            None => debug_assert!(false, "segment {number} of a pending entry is gone"),
        }
    }

    fn insert_pending(&mut self, id: EntryId, p: Pending) {
        self.segment_usage(p.segment, |seg| {
            seg.live += 1;
            seg.live_bytes += u64::from(p.len);
        });
        self.live_bytes += u64::from(p.len);
        self.by_next.insert((p.next_attempt_unix_ms, id));
        self.by_created.insert((p.created_unix_ms, id));
        self.pending.insert(id, p);
    }

    fn remove_pending(&mut self, id: EntryId) -> Option<Pending> {
        let p = self.pending.remove(&id)?;
        self.by_next.remove(&(p.next_attempt_unix_ms, id));
        self.by_created.remove(&(p.created_unix_ms, id));
        self.segment_usage(p.segment, |seg| {
            seg.live -= 1;
            seg.live_bytes -= u64::from(p.len);
        });
        self.live_bytes -= u64::from(p.len);
        if let Some(a) = p.attempt_segment {
            self.segment_usage(a, |seg| seg.live_bytes -= ATTEMPT_RECORD_BYTES);
            self.live_bytes -= ATTEMPT_RECORD_BYTES;
        }
        Some(p)
    }

    /// Points a pending entry at a copy of its record.
    fn move_entry(&mut self, id: EntryId, segment: u64, offset: u64, len: u32) {
        let Some(old) = self.pending.get(&id).copied() else {
            return;
        };
        self.segment_usage(old.segment, |from| {
            from.live -= 1;
            from.live_bytes -= u64::from(old.len);
        });
        self.segment_usage(segment, |to| {
            to.live += 1;
            to.live_bytes += u64::from(len);
        });
        self.live_bytes = self.live_bytes - u64::from(old.len) + u64::from(len);
        if let Some(p) = self.pending.get_mut(&id) {
            p.segment = segment;
            p.offset = offset;
            p.len = len;
        }
    }

    /// Records a pending entry's attempt state, whose latest record is in `segment`.
    fn set_attempt(&mut self, id: EntryId, attempts: u32, next_unix_ms: u64, segment: u64) {
        let Some(old) = self.pending.get(&id).copied() else {
            return;
        };
        if let Some(a) = old.attempt_segment {
            self.segment_usage(a, |seg| seg.live_bytes -= ATTEMPT_RECORD_BYTES);
        } else {
            self.live_bytes += ATTEMPT_RECORD_BYTES;
        }
        self.segment_usage(segment, |seg| seg.live_bytes += ATTEMPT_RECORD_BYTES);
        self.by_next.remove(&(old.next_attempt_unix_ms, id));
        self.by_next.insert((next_unix_ms, id));
        if let Some(p) = self.pending.get_mut(&id) {
            p.attempts = attempts;
            p.next_attempt_unix_ms = next_unix_ms;
            p.attempt_segment = Some(segment);
        }
    }

    // ---- reading ----

    fn read_entry(&self, id: EntryId, p: &Pending) -> Result<Entry, ReadFailure> {
        let Some(seg) = self.segments.get(&p.segment) else {
            return Err(ReadFailure::Damaged(SpoolError::Corrupt {
                path: segment_path(&self.config.dir, p.segment),
                offset: p.offset,
                reason: format!("segment of entry {id} is missing"),
            }));
        };
        let damaged = |reason: String| {
            ReadFailure::Damaged(SpoolError::Corrupt {
                path: seg.path.clone(),
                offset: p.offset,
                reason,
            })
        };
        let mut buf = vec![0u8; p.len as usize];
        if let Err(e) = read_exact_at(&seg.file, &mut buf, p.offset) {
            return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                damaged(format!("entry {id}: segment cut short"))
            } else {
                ReadFailure::Io(SpoolError::io(&seg.path, "read an entry")(e))
            });
        }
        decode_entry(Bytes::from(buf), id)
            .map_err(|reason| damaged(format!("entry {id}: {reason}")))
    }

    // ---- writing ----

    fn check_poisoned(&self) -> Result<(), SpoolError> {
        match &self.poisoned {
            None => Ok(()),
            Some(cause) => {
                Err(SpoolError::Poisoned { dir: self.config.dir.clone(), cause: cause.clone() })
            }
        }
    }

    fn poison(&mut self, error: &SpoolError) {
        if self.poisoned.is_none() {
            self.poisoned = Some(error.to_string());
        }
    }

    fn active_segment(&self) -> &Segment {
        self.segments.get(&self.active).expect("the active segment is always in the map")
    }

    /// Whether appending a record of `needed` bytes would pass `max_bytes`.
    fn would_exceed(&self, needed: u64) -> bool {
        self.shortfall(needed) > 0
    }

    /// Bytes missing for a record of `needed` bytes to fit.
    fn shortfall(&self, needed: u64) -> u64 {
        let active = self.active_segment();
        let rotation = if self.rotation_needed(active.len, needed) { SEGMENT_HEADER } else { 0 };
        (self.bytes_on_disk + needed + rotation).saturating_sub(self.config.max_bytes)
    }

    /// Bytes compaction could free by copying every live record forward.
    fn reclaimable(&self) -> u64 {
        self.bytes_on_disk
            .saturating_sub(self.live_bytes)
            .saturating_sub(SEGMENT_HEADER * self.segments.len() as u64)
    }

    fn rotation_needed(&self, active_len: u64, needed: u64) -> bool {
        active_len > SEGMENT_HEADER && active_len + needed > self.config.segment_bytes
    }

    /// Appends `buf` (whole records) to the active segment, starting a new segment first if
    /// it would pass `segment_bytes` (a record larger than a segment gets one of its own).
    /// Returns the segment and offset written at. On a failed write the segment is cut back
    /// to its old length; a failed sync (or cut) poisons the spool.
    fn write_records(&mut self, buf: &[u8], sync: bool) -> Result<(u64, u64), SpoolError> {
        self.check_poisoned()?;
        let n = buf.len() as u64;
        if self.rotation_needed(self.active_segment().len, n) {
            self.rotate()?;
        }
        let number = self.active;
        let seg = self.active_segment();
        let offset = seg.len;
        if let Err(e) = write_all_at(&seg.file, buf, offset) {
            let error = SpoolError::io(&seg.path, "append to segment")(e);
            if let Err(cut) = seg.file.set_len(offset) {
                let cut = SpoolError::io(&seg.path, "cut back a failed append")(cut);
                self.poison(&cut);
            }
            return Err(error);
        }
        self.segment_usage(number, |seg| seg.len += n);
        self.bytes_on_disk += n;
        if sync {
            self.sync_active()?;
        }
        Ok((number, offset))
    }

    fn sync_active(&mut self) -> Result<(), SpoolError> {
        let seg = self.active_segment();
        if let Err(e) = seg.file.sync_data() {
            let error = SpoolError::io(&seg.path, "fdatasync segment")(e);
            self.poison(&error);
            return Err(error);
        }
        Ok(())
    }

    /// Writes one record of `kind` for each id, syncs once, and removes them from the index.
    fn resolve(&mut self, ids: &[EntryId], kind: Kind) -> Result<(), SpoolError> {
        let mut buf = Vec::with_capacity(ids.len() * ID_RECORD_BYTES as usize);
        for &id in ids {
            encode_id(&mut buf, kind, id);
        }
        self.write_records(&buf, true)?;
        for &id in ids {
            self.remove_pending(id);
        }
        Ok(())
    }

    /// Creates segment `number` (header written and synced, name synced into the directory)
    /// and makes it the active one.
    fn create_segment(&mut self, number: u64) -> Result<(), SpoolError> {
        let dir = self.config.dir.clone();
        let path = segment_path(&dir, number);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(SpoolError::io(&path, "create segment"))?;
        let written = write_all_at(&file, &encode_header(self.next_id), 0)
            .and_then(|()| file.sync_all())
            .map_err(SpoolError::io(&path, "write segment header"))
            .and_then(|()| {
                sync_dir(&dir).map_err(SpoolError::io(&dir, "sync the spool directory"))
            });
        if let Err(e) = written {
            // The segment never became active; a leftover is a torn segment for the next open.
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        self.segments
            .insert(number, Segment { path, file, len: SEGMENT_HEADER, live: 0, live_bytes: 0 });
        self.bytes_on_disk += SEGMENT_HEADER;
        self.active = number;
        Ok(())
    }

    /// Syncs the active segment and starts the next one.
    fn rotate(&mut self) -> Result<(), SpoolError> {
        self.sync_active()?;
        self.create_segment(self.active + 1)
    }

    // ---- compaction ----

    /// Compaction after `delivered` / `expire`: the state change is already durable, so a
    /// failure here is recorded, not returned.
    fn housekeeping(&mut self) {
        let mut result = self.compact_for(Goal::Housekeeping, None);
        if result.is_ok() && self.garbage_pressure() {
            // Attempt records of entries that stay pending (a long outage) pile up in
            // segments nothing else frees: copy everything live forward once the garbage
            // outweighs it. Each byte is copied once per as many bytes of garbage: amortized,
            // and the disk stays within about twice the live data.
            result = self.compact_for(Goal::Room { relocate: true }, None);
        }
        if let Err(e) = result {
            self.counters.compaction_errors += 1;
            self.last_compaction_error = Some(e.to_string());
        }
    }

    /// Whether the garbage on disk outweighs both the live records and a segment.
    fn garbage_pressure(&self) -> bool {
        self.reclaimable() > self.live_bytes.max(self.config.segment_bytes)
    }

    /// Applies the policy to the oldest segment until it says stop (or, making room, until
    /// `needed` bytes fit). Each step deletes a segment, so the loop is bounded.
    fn compact_for(&mut self, goal: Goal, needed: Option<u64>) -> Result<(), SpoolError> {
        self.check_poisoned()?;
        let mut budget = self.segments.len() + 1;
        while budget > 0 {
            budget -= 1;
            if needed.is_some_and(|n| !self.would_exceed(n)) {
                break;
            }
            let Some((&number, seg)) = self.segments.first_key_value() else {
                break;
            };
            let usage = Usage { len: seg.len, live: seg.live, live_bytes: seg.live_bytes };
            match plan(usage, number == self.active, goal, self.config.segment_bytes) {
                Step::Delete => self.delete_segment(number)?,
                Step::Relocate => self.relocate(number)?,
                Step::Stop => break,
            }
        }
        Ok(())
    }

    /// Copies the pending entries of segment `number` (with their attempt state) into the
    /// active segment, and rewrites the attempt records of entries elsewhere whose latest one
    /// is in `number`; syncs, then deletes `number`.
    fn relocate(&mut self, number: u64) -> Result<(), SpoolError> {
        let ids: Vec<EntryId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.segment == number || p.attempt_segment == Some(number))
            .map(|(&id, _)| id)
            .collect();
        if number == self.active {
            self.rotate()?;
        }
        let mut unreadable = Vec::new();
        let mut buf = Vec::new();
        for id in ids {
            let Some(p) = self.pending.get(&id).copied() else {
                continue;
            };
            if p.segment != number {
                // Only its attempt record is here (its entry record was copied forward and a
                // crash cut the attempt record that followed the copy).
                buf.clear();
                encode_attempt(&mut buf, id, p.attempts, p.next_attempt_unix_ms);
                let (segment, _) = self.write_records(&buf, false)?;
                self.set_attempt(id, p.attempts, p.next_attempt_unix_ms, segment);
                continue;
            }
            let seg = self
                .segments
                .get(&number)
                .expect("the segment being relocated stays until deleted below");
            buf.clear();
            buf.resize(p.len as usize, 0);
            if let Err(e) = read_exact_at(&seg.file, &mut buf, p.offset) {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    unreadable.push(id);
                    continue;
                }
                return Err(SpoolError::io(&seg.path, "read an entry to relocate")(e));
            }
            // The record is copied byte for byte: same id, same checksum.
            let whole = matches!(
                read_frame(&buf, 0),
                Ok((f, Record::Entry { id: found, .. })) if found == id && f.next == buf.len()
            );
            if !whole {
                unreadable.push(id);
                continue;
            }
            if p.attempts > 0 {
                encode_attempt(&mut buf, id, p.attempts, p.next_attempt_unix_ms);
            }
            let (segment, offset) = self.write_records(&buf, false)?;
            self.move_entry(id, segment, offset, p.len);
            if p.attempts > 0 {
                self.set_attempt(id, p.attempts, p.next_attempt_unix_ms, segment);
            }
            self.counters.relocated += 1;
        }
        if !unreadable.is_empty() {
            self.resolve(&unreadable, Kind::Discarded)?;
            self.counters.discarded += unreadable.len() as u64;
        }
        // Copies durable before the original goes.
        self.sync_active()?;
        self.delete_segment(number)
    }

    /// Deletes segment `number` (never the active one) and syncs the directory. A failed
    /// directory sync poisons the spool: deletions must reach the disk oldest first.
    fn delete_segment(&mut self, number: u64) -> Result<(), SpoolError> {
        if number == self.active {
            debug_assert!(false, "the active segment is never deleted");
            return Ok(());
        }
        let Some(seg) = self.segments.remove(&number) else {
            return Ok(());
        };
        debug_assert_eq!(seg.live, 0, "deleting a segment with pending entries");
        if let Err(e) = fs::remove_file(&seg.path) {
            let error = SpoolError::io(&seg.path, "delete segment")(e);
            self.segments.insert(number, seg);
            return Err(error);
        }
        self.bytes_on_disk -= seg.len;
        self.counters.segments_deleted += 1;
        drop(seg);
        let dir = self.config.dir.clone();
        if let Err(e) = sync_dir(&dir) {
            let error = SpoolError::io(&dir, "sync the spool directory")(e);
            self.poison(&error);
            return Err(error);
        }
        Ok(())
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        // Best effort: flush attempt records. (No active segment if `open` failed half-way.)
        if self.poisoned.is_none() {
            if let Some(seg) = self.segments.get(&self.active) {
                let _ = seg.file.sync_data();
            }
        }
    }
}

/// Segment numbers in `dir`, in order. Other files (the lock) are ignored.
fn list_segments(dir: &Path) -> Result<Vec<u64>, SpoolError> {
    let mut numbers = Vec::new();
    let entries = fs::read_dir(dir).map_err(SpoolError::io(dir, "list the spool directory"))?;
    for entry in entries {
        let entry = entry.map_err(SpoolError::io(dir, "list the spool directory"))?;
        if let Some(number) = entry.file_name().to_str().and_then(parse_segment_name) {
            numbers.push(number);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}
