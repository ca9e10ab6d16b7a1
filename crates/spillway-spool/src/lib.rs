//! A durable on-disk retry queue for the gateway's failback strategy: a non-urgent write
//! whose upstream failed is appended here (and synced) before the client gets 202 with its
//! id, then retried in the background until the upstream takes it or it expires.
//!
//! A crate of its own so the queue is tested without the gateway: it is synchronous, has no
//! async runtime, reads no clock (every call that needs the time takes `now_unix_ms`), and
//! does its own file I/O only. The gateway calls it from a blocking thread, behind a mutex.
//!
//! ```
//! use spillway_spool::{Entry, Spool, SpoolConfig};
//!
//! let dir = tempfile::tempdir()?;
//! let mut spool = Spool::open(SpoolConfig::new(dir.path()), 1_000)?;
//! let entry = Entry {
//!     route: "orders".into(),
//!     method: "POST".into(),
//!     target: "/orders".into(),
//!     headers: vec![("content-type".into(), b"application/json".to_vec())],
//!     body: bytes::Bytes::from_static(b"{\"sku\":7}"),
//!     created_unix_ms: 1_000,
//! };
//! let id = spool.append(&entry, 1_000)?; // durable now: answer 202 with `id`
//!
//! // The delivery loop:
//! for due in spool.due(1_000, 16)? {
//!     let upstream_took_it = false; // send due.entry upstream here
//!     if upstream_took_it {
//!         spool.delivered(due.id)?;
//!     } else {
//!         let backoff_ms = 100 << due.attempts.min(10); // the caller's backoff
//!         spool.failed(due.id, 1_000 + backoff_ms)?;
//!     }
//! }
//! assert_eq!(spool.stats(1_000).depth, 1);
//! assert_eq!(spool.pending().next().map(|p| p.id), Some(id));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Guarantees
//!
//! - **Durable before acknowledged.** [`Spool::append`] returns only after the entry's record
//!   is written and `fdatasync`ed, and when it started a new segment file, after the file and
//!   the directory were synced too. An entry whose id was returned survives `kill -9`, a
//!   restart and a power loss (given a disk that honours flushes).
//! - **Full refuses, never drops.** An append that would take the segment files past
//!   `max_bytes` (after compaction tried to make room) fails with [`SpoolError::Full`]; the
//!   gateway answers 503. Nothing stored is dropped except by `max_age`.
//! - **Exactly once in a crash-free run, at least once across a crash.** [`Spool::due`] hands
//!   out an entry until [`Spool::delivered`] records it, durably (synced) before returning;
//!   a delivered entry is never handed out again, also not after a restart. A crash between
//!   the upstream accepting a request and `delivered` returning means the entry is delivered
//!   again after the restart: the upstream sees it twice. (The same holds for an entry
//!   handed out twice because the caller called `due` again before resolving it: the spool
//!   does not track "in flight"; the delivery loop resolves each entry before asking again.)
//! - **Expiry.** An entry created more than `max_age` before `now` is never handed out;
//!   [`Spool::expire`] (also run by [`Spool::open`]) removes such entries durably and counts
//!   them in [`SpoolStats::expired`].
//! - **Attempts.** [`Spool::failed`] keeps a per-entry attempt count and next attempt time
//!   (the backoff is the caller's). Its record is written without a sync: a restart keeps it,
//!   a power loss may roll it back to an earlier count — at worst one early retry.
//! - **Ids** ([`EntryId`]) are unique in a directory and increase in append order, also
//!   across restarts and after every segment was compacted away (each segment header records
//!   the next id). The one id that may come again is that of an append that never returned
//!   because the process died during its write: nobody was given it.
//! - **One owner.** An exclusive `flock` on `<dir>/LOCK` keeps a second spool (another
//!   gateway, or a second open in one process) out: [`SpoolError::Locked`] names the
//!   directory. The kernel releases it when the process dies.
//! - **Failures stop changes.** A failed `fdatasync` (whose data the kernel may have dropped)
//!   or a failed cut-back after a failed write poisons the spool: every later change fails
//!   with [`SpoolError::Poisoned`] until it is reopened, which reads the truth back from disk.
//!
//! # On-disk format (version 1)
//!
//! The directory holds `LOCK` (the lock; it contains the holder's pid, for information) and
//! segment files `00000001.spool`, `00000002.spool`, … (8 or more decimal digits), appended
//! to in order; only the last is written. Files with other names are ignored. All integers
//! are little-endian.
//!
//! A segment starts with a 28-byte header:
//!
//! ```text
//! magic "SPWSPOOL" (8) | version u32 = 1 | first_id u64 | xxh64(previous 20 bytes) u64
//! ```
//!
//! `first_id` is the next entry id when the segment was created. Then records follow, each
//! framed as:
//!
//! ```text
//! checksum u64 | len u32 | kind u8 | payload (len bytes)
//! ```
//!
//! where `checksum` is xxh64 (seed 0) of `len`, `kind` and `payload`. Kinds and payloads:
//!
//! | kind | record | payload |
//! |---|---|---|
//! | 1 | entry | `id u64, created_unix_ms u64`, then fields `route`, `method`, `target` (each `u32` length + UTF-8), header count `u32` and per header name (`u32` + UTF-8) and value (`u32` + bytes), then body (`u32` + bytes) |
//! | 2 | delivered | `id u64` |
//! | 3 | attempt | `id u64, attempts u32, next_attempt_unix_ms u64` (the latest one wins) |
//! | 4 | expired | `id u64` |
//! | 5 | discarded | `id u64` (its entry record became unreadable after open) |
//!
//! An entry is pending from its entry record until a delivered, expired or discarded record
//! with its id. Such records, and attempt records, are always written after the entry record
//! they refer to: in the same segment or a later one.
//!
//! # Recovery
//!
//! [`Spool::open`] replays the segments oldest first and rebuilds the index of pending
//! entries (bodies stay on disk and are read back, checksum verified, when handed out). In
//! each segment:
//!
//! - a record that fails its checksum but whose length leads to a whole record is **skipped**
//!   and reading goes on;
//! - otherwise (a torn final write, zeros, a damaged length) the **rest of that segment** is
//!   unreadable; in the last segment it is cut off (the file is truncated there) so new
//!   records follow whole ones, in an older segment the bytes are left in place.
//!
//! Each case counts in [`SpoolStats::corrupt_records_at_open`]. Entries before the damage
//! are never lost. A lost delivered record means the entry is delivered again (at least
//! once); a lost entry record can only be one whose append never returned (its sync had not
//! completed), unless the disk itself changed. A segment shorter than a header made of a
//! header's start or zeros (a crash while creating it) is removed; a file with a segment's
//! name and a foreign header makes `open` fail with [`SpoolError::Corrupt`] naming it.
//!
//! # Compaction
//!
//! Whole segments are deleted, oldest first only (so a delivered record is never deleted
//! before the entry it resolves): the oldest segment goes once none of its entries is pending.
//! A few long-lived entries pinning an old segment that is at least half garbage are copied
//! forward into the active segment (byte for byte, with a fresh attempt record), synced, and
//! then the old segment is deleted; a crash in between leaves two copies of an entry, which
//! replay folds into one by id. A large active segment whose entries are all resolved is
//! replaced by a fresh one. When the garbage on disk (mostly attempt records of entries that
//! stay pending through a long outage) outweighs both the live records and a segment, every
//! live record is copied forward once, so the disk stays within about twice the live data.
//! When an append does not fit, compaction copies harder — every segment, oldest first, until
//! the entry fits — but only when the garbage on disk is enough to make the room, so a full
//! spool never churns in vain.
//!
//! `max_bytes` bounds appends. Delivered, expired, attempt and compaction records are never
//! refused, so the files may pass `max_bytes` by those: by a few tens of bytes per
//! acknowledgement, and while compaction copies, by at most the live entries of one segment.
//! Deleting a segment syncs the directory, as does creating one.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

#[cfg(not(any(unix, windows)))]
compile_error!("spillway-spool needs positional file I/O from std::os::unix or std::os::windows");

mod compact;
mod config;
mod entry;
mod error;
mod fsio;
mod lock;
mod record;
mod segment;
mod spool;
mod stats;

pub use config::SpoolConfig;
pub use entry::{DueEntry, Entry, EntryId, ParseEntryIdError, PendingInfo};
pub use error::SpoolError;
pub use spool::Spool;
pub use stats::SpoolStats;
