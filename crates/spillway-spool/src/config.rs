//! How a spool is set up: where it lives and how much it may hold, checked before any file is
//! touched.

use crate::error::SpoolError;
use crate::segment::SEGMENT_HEADER;
use std::path::PathBuf;
use std::time::Duration;

// The smallest segment still holds its header and a record.
const _: () = assert!(SpoolConfig::MIN_SEGMENT_BYTES > SEGMENT_HEADER + 64);

/// Where a spool lives and its bounds. Build it with [`SpoolConfig::new`] (documented
/// defaults) and adjust the public fields; [`Spool::open`](crate::Spool::open) validates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    /// The directory holding the segment files and the `LOCK` file; created if missing.
    pub dir: PathBuf,
    /// Bound on the bytes of segment files on disk. An append that would pass it is refused
    /// with [`SpoolError::Full`]. Acknowledgement, attempt and compaction records are never
    /// refused (refusing an acknowledgement would cause a duplicate delivery), so the disk may
    /// pass the bound by those, and by at most one segment's live entries while compaction
    /// copies them (see the crate docs).
    pub max_bytes: u64,
    /// Entries whose `created_unix_ms` is more than this before `now` are expired: counted,
    /// removed, never delivered.
    pub max_age: Duration,
    /// Size at which the active segment file is closed and a new one started. Compaction works
    /// by whole segments, so smaller segments free space sooner and cost more files.
    pub segment_bytes: u64,
}

impl SpoolConfig {
    /// Default `max_bytes`: 256 MiB, room for about 100 000 typical API writes (a few KiB each)
    /// — an outage of tens of minutes at a hundred queued writes per second — while staying
    /// small next to the disk of a gateway host.
    pub const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;
    /// Default `max_age`: 24 hours. A non-urgent write that could not be delivered in a day
    /// is more likely to do harm (stale state) than good when it finally lands.
    pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
    /// Default `segment_bytes`: 8 MiB, 32 segments in the default `max_bytes`, so compaction
    /// frees space in steps of about 3 % of the bound.
    pub const DEFAULT_SEGMENT_BYTES: u64 = 8 * 1024 * 1024;
    /// Smallest accepted `segment_bytes` (tests use tiny segments to exercise compaction).
    pub const MIN_SEGMENT_BYTES: u64 = 256;

    /// A config for `dir` with the documented defaults.
    pub fn new(dir: impl Into<PathBuf>) -> SpoolConfig {
        SpoolConfig {
            dir: dir.into(),
            max_bytes: Self::DEFAULT_MAX_BYTES,
            max_age: Self::DEFAULT_MAX_AGE,
            segment_bytes: Self::DEFAULT_SEGMENT_BYTES,
        }
    }

    /// Checks the bounds: `segment_bytes` at least [`Self::MIN_SEGMENT_BYTES`], `max_bytes`
    /// at least `segment_bytes`, `max_age` not zero.
    pub fn validate(&self) -> Result<(), SpoolError> {
        if self.segment_bytes < Self::MIN_SEGMENT_BYTES {
            return Err(SpoolError::InvalidConfig(format!(
                "segment_bytes = {} is below the minimum {}",
                self.segment_bytes,
                Self::MIN_SEGMENT_BYTES
            )));
        }
        if self.max_bytes < self.segment_bytes {
            return Err(SpoolError::InvalidConfig(format!(
                "max_bytes = {} is below segment_bytes = {}: the spool must hold at least one segment",
                self.max_bytes, self.segment_bytes
            )));
        }
        if self.max_age.is_zero() {
            return Err(SpoolError::InvalidConfig(
                "max_age is zero: every entry would expire at once".to_string(),
            ));
        }
        Ok(())
    }

    /// `max_age` in whole milliseconds (saturating).
    pub(crate) fn max_age_ms(&self) -> u64 {
        u64::try_from(self.max_age.as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        SpoolConfig::new("/tmp/x").validate().unwrap();
    }

    #[test]
    fn tiny_segments_max_below_segment_and_zero_age_are_refused() {
        let mut c = SpoolConfig::new("/tmp/x");
        c.segment_bytes = 100;
        assert!(
            matches!(c.validate(), Err(SpoolError::InvalidConfig(m)) if m.contains("segment_bytes"))
        );
        let mut c = SpoolConfig::new("/tmp/x");
        c.max_bytes = c.segment_bytes - 1;
        assert!(
            matches!(c.validate(), Err(SpoolError::InvalidConfig(m)) if m.contains("max_bytes"))
        );
        let mut c = SpoolConfig::new("/tmp/x");
        c.max_age = Duration::ZERO;
        assert!(matches!(c.validate(), Err(SpoolError::InvalidConfig(m)) if m.contains("max_age")));
    }
}
