//! The spool's one error type: every variant names the file or directory involved and says
//! why, so an operator reading a log line knows what to look at.

use crate::entry::EntryId;
use std::path::PathBuf;

/// What went wrong in a [`Spool`](crate::Spool) operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// A [`SpoolConfig`](crate::SpoolConfig) value out of range.
    #[error("spool config: {0}")]
    InvalidConfig(String),
    /// An operating-system call on a spool file or directory failed.
    #[error("spool: {path}: cannot {op}: {source}")]
    Io {
        /// File or directory involved.
        path: PathBuf,
        /// What the spool was doing, e.g. "append to segment".
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another process (or another `Spool` in this one) holds the directory's lock.
    #[error("spool: directory {dir} is already open in another spool (its LOCK file is held)")]
    Locked {
        /// The spool directory.
        dir: PathBuf,
    },
    /// Storing the entry would take the spool past `max_bytes`: the entry is refused, nothing
    /// already stored is dropped. Retrying makes sense once entries have been delivered.
    #[error(
        "spool is full: {bytes_on_disk} bytes on disk, an entry of {needed} bytes would pass max_bytes = {max_bytes}"
    )]
    Full {
        /// The configured bound.
        max_bytes: u64,
        /// Bytes on disk when the entry was refused.
        bytes_on_disk: u64,
        /// Bytes the entry's record needs.
        needed: u64,
    },
    /// The entry could never fit, even in an empty spool.
    #[error("spool: an entry of {bytes} bytes can never fit (max_bytes = {max_bytes}, record limit 4 GiB)")]
    TooLarge {
        /// Bytes the entry's record needs.
        bytes: u64,
        /// The configured bound.
        max_bytes: u64,
    },
    /// A spool file holds something the spool cannot read (and will not guess at).
    #[error("spool: {path} at byte {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Where in it.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The id names no pending entry: it was delivered, expired or discarded already, or
    /// never existed.
    #[error("spool: entry {id} is not pending")]
    NotPending {
        /// The id asked for.
        id: EntryId,
    },
    /// An earlier write or sync failed in a way that leaves the files' state unknown (after a
    /// failed fsync the kernel may have dropped the data): the spool refuses further changes
    /// until it is reopened, which reads the truth back from disk.
    #[error("spool: {dir} refuses changes after an earlier failure ({cause}); reopen it")]
    Poisoned {
        /// The spool directory.
        dir: PathBuf,
        /// The failure that poisoned it.
        cause: String,
    },
}

impl SpoolError {
    /// Builds an [`SpoolError::Io`] mapper for `map_err`.
    pub(crate) fn io(
        path: impl Into<PathBuf>,
        op: &'static str,
    ) -> impl FnOnce(std::io::Error) -> SpoolError {
        let path = path.into();
        move |source| SpoolError::Io { path, op, source }
    }

    /// Whether the caller should answer "come back later" (the queue is full) rather than
    /// treat the spool as broken.
    pub fn is_full(&self) -> bool {
        matches!(self, SpoolError::Full { .. })
    }
}
