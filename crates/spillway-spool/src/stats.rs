//! What the admin endpoint shows about a spool: how much is queued, how old, and what has
//! happened to entries since it was opened.

/// A snapshot of a spool, from [`Spool::stats`](crate::Spool::stats).
///
/// Gauges (`depth` … `oldest_age_ms`) describe the spool now. Totals count since this
/// [`Spool`](crate::Spool) was opened: like Prometheus counters, they start from zero after a
/// restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpoolStats {
    /// Pending entries (not yet delivered, expired or discarded).
    pub depth: u64,
    /// Bytes of the records still needed on disk: the pending entries and their latest attempt
    /// records.
    pub live_bytes: u64,
    /// Bytes of all segment files: `live_bytes`, headers, and garbage that compaction has not
    /// reclaimed yet.
    pub bytes_on_disk: u64,
    /// The configured bound on `bytes_on_disk` for appends.
    pub max_bytes: u64,
    /// Segment files.
    pub segments: u64,
    /// Creation time of the oldest pending entry (Unix milliseconds).
    pub oldest_created_unix_ms: Option<u64>,
    /// Age of the oldest pending entry at the `now` passed to `stats`.
    pub oldest_age_ms: Option<u64>,
    /// Earliest next-attempt time of any pending entry (Unix milliseconds).
    pub next_due_unix_ms: Option<u64>,
    /// Entries appended.
    pub appended: u64,
    /// Entries acknowledged as delivered.
    pub delivered: u64,
    /// Entries expired (past `max_age`), never delivered.
    pub expired: u64,
    /// Failed delivery attempts recorded.
    pub failed_attempts: u64,
    /// Appends refused because the spool was full.
    pub refused_full: u64,
    /// Entries dropped because their record became unreadable after open (a disk that changed
    /// under the spool).
    pub discarded_unreadable: u64,
    /// Damaged records found at open: skipped ones, plus one for each segment whose end could
    /// not be read (a torn write after a crash counts here), one for each damaged segment
    /// header, and one for each torn new segment removed.
    pub corrupt_records_at_open: u64,
    /// Bytes that could not be read at open (torn or damaged ends of segments and headers).
    pub corrupt_bytes_at_open: u64,
    /// Segment files deleted by compaction.
    pub segments_deleted: u64,
    /// Entries copied forward out of an old segment so it could be deleted.
    pub entries_relocated: u64,
    /// Compactions after `delivered` / `expire` that failed (their error is in
    /// `last_compaction_error`; they are retried on the next call).
    pub compaction_errors: u64,
    /// The last such error, as text.
    pub last_compaction_error: Option<String>,
    /// Set when a failed write or sync stopped the spool (see
    /// [`SpoolError::Poisoned`](crate::SpoolError::Poisoned)).
    pub poisoned: Option<String>,
}
