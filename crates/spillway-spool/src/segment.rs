//! Segment files: their names, their header, and the scan that replays one at open, telling
//! whole records from a torn or damaged tail.
//!
//! Pure functions over the file's bytes; the [`Spool`](crate::Spool) does the reading,
//! truncating and deleting.

use crate::record::{read_frame, FrameError, Record};
use std::path::{Path, PathBuf};
use xxhash_rust::xxh64::xxh64;

/// Bytes of a segment header: magic, version, first id, checksum.
pub(crate) const SEGMENT_HEADER: u64 = 28;
const HEADER_LEN: usize = SEGMENT_HEADER as usize;
/// First bytes of every segment file.
pub(crate) const MAGIC: [u8; 8] = *b"SPWSPOOL";
/// Format version written in the header; the spool refuses files of another version.
pub(crate) const FORMAT_VERSION: u32 = 1;
/// File-name extension of a segment.
const EXTENSION: &str = ".spool";

/// File name of segment `number`: at least 8 decimal digits, `00000001.spool`.
pub(crate) fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:08}{EXTENSION}"))
}

/// The segment number a file name stands for, if it is a segment's name.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(EXTENSION)?;
    if stem.is_empty() || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The header of a new segment: ids of entries first appended to it are at least `first_id`.
pub(crate) fn encode_header(first_id: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&first_id.to_le_bytes());
    let sum = xxh64(&h[..20], 0);
    h[20..28].copy_from_slice(&sum.to_le_bytes());
    h
}

/// What a segment's first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Header {
    /// A spool segment. `first_id` is `None` when the header's checksum fails (the records
    /// after it are still read; each has its own checksum).
    Valid { first_id: Option<u64> },
    /// Shorter than a header and made only of a start of one, or zeros: a crash while the
    /// segment was created. It holds no record.
    Torn,
    /// Not a segment of this format: the spool will not touch it.
    Foreign(&'static str),
}

/// Reads a segment header.
pub(crate) fn parse_header(buf: &[u8]) -> Header {
    let n = buf.len().min(HEADER_LEN);
    let head = &buf[..n];
    let start_of_ours = {
        let m = n.min(8);
        head[..m] == MAGIC[..m]
    };
    if buf.len() < HEADER_LEN || buf[..HEADER_LEN].iter().all(|&b| b == 0) {
        let zeros = buf.iter().all(|&b| b == 0);
        if buf.len() <= HEADER_LEN && (zeros || start_of_ours) {
            return Header::Torn;
        }
        if buf.len() < HEADER_LEN {
            return Header::Foreign("shorter than a segment header");
        }
    }
    if !start_of_ours {
        return Header::Foreign("not a spool segment (bad magic)");
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&buf[8..12]);
    if u32::from_le_bytes(v) != FORMAT_VERSION {
        return Header::Foreign("segment of an unsupported format version");
    }
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&buf[20..28]);
    if xxh64(&buf[..20], 0) != u64::from_le_bytes(sum) {
        return Header::Valid { first_id: None };
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&buf[12..20]);
    Header::Valid { first_id: Some(u64::from_le_bytes(id)) }
}

/// One whole record found by a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScannedRecord {
    pub(crate) offset: u64,
    pub(crate) len: u32,
    pub(crate) record: Record,
}

/// Where a scan stopped reading a segment before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loss {
    /// Offset of the first byte not read: the readable prefix ends here.
    pub(crate) offset: u64,
    pub(crate) reason: &'static str,
}

/// The readable contents of one segment.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    pub(crate) records: Vec<ScannedRecord>,
    /// Damaged records skipped between whole ones.
    pub(crate) skipped: u64,
    /// Set when the end of the segment could not be read: a torn write, or damage that hides
    /// where the next record starts.
    pub(crate) lost: Option<Loss>,
}

/// Reads the records after a valid header.
///
/// A record that fails its checks is skipped when its length leads to a whole record (the
/// damage is in its own bytes); otherwise — a torn final write, zeros, a damaged length —
/// the rest of the segment is unreadable and reported as [`Scan::lost`].
pub(crate) fn scan_records(buf: &[u8]) -> Scan {
    let mut scan = Scan::default();
    let mut at = HEADER_LEN;
    while at < buf.len() {
        match read_frame(buf, at) {
            Ok((frame, record)) => {
                scan.records.push(ScannedRecord {
                    offset: at as u64,
                    len: (frame.next - at) as u32,
                    record,
                });
                at = frame.next;
            }
            Err(FrameError::Damaged { next, .. })
                if next < buf.len() && read_frame(buf, next).is_ok() =>
            {
                scan.skipped += 1;
                at = next;
            }
            Err(e) => {
                scan.lost = Some(Loss {
                    offset: at as u64,
                    reason: match e {
                        FrameError::Truncated => {
                            "record runs past the end of the file (torn write)"
                        }
                        FrameError::Damaged { reason, .. } => reason,
                    },
                });
                break;
            }
        }
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::EntryId;
    use crate::record::{encode_attempt, encode_id, Kind};

    #[test]
    fn names_round_trip_and_others_are_ignored() {
        let p = segment_path(Path::new("/d"), 1);
        assert_eq!(p, Path::new("/d/00000001.spool"));
        assert_eq!(parse_segment_name("00000001.spool"), Some(1));
        assert_eq!(parse_segment_name("123456789.spool"), Some(123_456_789));
        assert_eq!(parse_segment_name("LOCK"), None);
        assert_eq!(parse_segment_name(".spool"), None);
        assert_eq!(parse_segment_name("0001.spool.tmp"), None);
        assert_eq!(parse_segment_name("-1.spool"), None);
    }

    #[test]
    fn header_round_trips_and_damage_is_classified() {
        let h = encode_header(42);
        assert_eq!(parse_header(&h), Header::Valid { first_id: Some(42) });
        let mut bad = h;
        bad[14] ^= 1;
        assert_eq!(parse_header(&bad), Header::Valid { first_id: None });
        assert_eq!(parse_header(&h[..5]), Header::Torn);
        assert_eq!(parse_header(&[]), Header::Torn);
        assert_eq!(parse_header(&[0u8; 28]), Header::Torn);
        assert_eq!(parse_header(&[0u8; 12]), Header::Torn);
        assert!(matches!(parse_header(b"hello"), Header::Foreign(_)));
        assert!(matches!(parse_header(&[b'x'; 64]), Header::Foreign(_)));
        let mut v2 = h;
        v2[8] = 2;
        assert!(matches!(parse_header(&v2), Header::Foreign(_)));
    }

    fn segment_with(n: u64) -> Vec<u8> {
        let mut buf = encode_header(1).to_vec();
        for i in 0..n {
            encode_attempt(&mut buf, EntryId::from_raw(i), 1, i);
        }
        buf
    }

    #[test]
    fn whole_segment_scans_completely() {
        let buf = segment_with(3);
        let scan = scan_records(&buf);
        assert_eq!(scan.records.len(), 3);
        assert_eq!(scan.skipped, 0);
        assert_eq!(scan.lost, None);
        assert_eq!(scan.records[1].offset, 28 + 33);
    }

    #[test]
    fn damaged_middle_record_is_skipped_and_the_rest_read() {
        let mut buf = segment_with(3);
        buf[28 + 33 + 20] ^= 0x40; // payload byte of the second record
        let scan = scan_records(&buf);
        assert_eq!(scan.skipped, 1);
        assert_eq!(scan.lost, None);
        let ids: Vec<u64> = scan.records.iter().map(|r| r.record.id().get()).collect();
        assert_eq!(ids, vec![0, 2]);
    }

    #[test]
    fn damaged_length_loses_the_rest_of_the_segment_only() {
        let mut buf = segment_with(3);
        buf[28 + 33 + 8] = 0xff; // length of the second record
        let scan = scan_records(&buf);
        assert_eq!(scan.records.len(), 1);
        assert_eq!(scan.lost.map(|l| l.offset), Some(28 + 33), "lost from the damaged record on");
    }

    #[test]
    fn damaged_last_record_is_a_loss_not_a_skip() {
        let mut buf = segment_with(2);
        let last = buf.len() - 1;
        buf[last] ^= 1;
        let scan = scan_records(&buf);
        assert_eq!(scan.records.len(), 1);
        assert_eq!(scan.skipped, 0);
        assert_eq!(scan.lost.map(|l| l.offset), Some(28 + 33));
    }

    #[test]
    fn zero_tail_is_a_loss() {
        let mut buf = segment_with(1);
        encode_id(&mut buf, Kind::Delivered, EntryId::from_raw(0));
        let whole = buf.len() as u64;
        buf.extend_from_slice(&[0u8; 100]);
        let scan = scan_records(&buf);
        assert_eq!(scan.records.len(), 2);
        assert_eq!(scan.lost.map(|l| l.offset), Some(whole));
    }
}
