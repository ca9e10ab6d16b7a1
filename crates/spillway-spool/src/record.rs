//! Record framing: how an entry, an acknowledgement or an attempt is laid out in a segment,
//! and the checks that tell a whole record from a torn or damaged one.
//!
//! Pure functions over byte slices, so the format is tested without files. Layout (all
//! integers little-endian):
//!
//! ```text
//! checksum u64 | len u32 | kind u8 | payload (len bytes)
//! ```
//!
//! `checksum` is xxh64 (seed 0) of everything after it: `len`, `kind` and `payload`, so a
//! damaged length is caught too.

use crate::entry::{Entry, EntryId};
use bytes::Bytes;
use xxhash_rust::xxh64::xxh64;

/// Bytes before a record's payload.
pub(crate) const FRAME_HEADER: usize = 13;
/// Size of a delivered / expired / discarded record.
pub(crate) const ID_RECORD_BYTES: u64 = FRAME_HEADER as u64 + 8;
/// Size of an attempt record.
pub(crate) const ATTEMPT_RECORD_BYTES: u64 = FRAME_HEADER as u64 + 20;
/// Largest payload: the whole frame's length must fit a `u32` too.
const MAX_PAYLOAD: usize = u32::MAX as usize - FRAME_HEADER;
/// Fixed part of an entry payload: id and creation time.
const ENTRY_HEAD: usize = 16;

/// What a record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    /// A stored request.
    Entry = 1,
    /// The entry was delivered.
    Delivered = 2,
    /// A failed attempt: attempt count and next attempt time.
    Attempt = 3,
    /// The entry passed `max_age`.
    Expired = 4,
    /// The entry's record became unreadable after the spool was opened.
    Discarded = 5,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Entry),
            2 => Some(Kind::Delivered),
            3 => Some(Kind::Attempt),
            4 => Some(Kind::Expired),
            5 => Some(Kind::Discarded),
            _ => None,
        }
    }
}

/// The fixed fields of a record, as replay needs them (an entry's body is read only when the
/// entry is handed out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Record {
    Entry { id: EntryId, created_unix_ms: u64 },
    Delivered(EntryId),
    Attempt { id: EntryId, attempts: u32, next_attempt_unix_ms: u64 },
    Expired(EntryId),
    Discarded(EntryId),
}

impl Record {
    /// The entry the record is about.
    pub(crate) fn id(&self) -> EntryId {
        match *self {
            Record::Entry { id, .. }
            | Record::Delivered(id)
            | Record::Attempt { id, .. }
            | Record::Expired(id)
            | Record::Discarded(id) => id,
        }
    }
}

/// A whole, checksum-verified frame.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    pub(crate) kind: Kind,
    pub(crate) payload: &'a [u8],
    /// Offset just past the frame.
    pub(crate) next: usize,
}

/// Why no frame could be read at an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The frame runs past the end of the data: a torn write, or a damaged length.
    Truncated,
    /// The frame is complete by its length but fails its checks; `next` is where the following
    /// frame starts if the length is right.
    Damaged { next: usize, reason: &'static str },
}

fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Reads and verifies the frame starting at `at`, and decodes its fixed fields.
pub(crate) fn read_frame(buf: &[u8], at: usize) -> Result<(Frame<'_>, Record), FrameError> {
    let rest = buf.len().saturating_sub(at);
    if rest < FRAME_HEADER {
        return Err(FrameError::Truncated);
    }
    let checksum = u64_at(buf, at);
    let len = u32_at(buf, at + 8) as usize;
    if rest - FRAME_HEADER < len {
        return Err(FrameError::Truncated);
    }
    let next = at + FRAME_HEADER + len;
    if len > MAX_PAYLOAD {
        return Err(FrameError::Damaged { next, reason: "record longer than the format allows" });
    }
    if xxh64(&buf[at + 8..next], 0) != checksum {
        return Err(FrameError::Damaged { next, reason: "checksum mismatch" });
    }
    let Some(kind) = Kind::from_u8(buf[at + 12]) else {
        return Err(FrameError::Damaged { next, reason: "unknown record kind" });
    };
    let frame = Frame { kind, payload: &buf[at + FRAME_HEADER..next], next };
    let record = decode_fixed(&frame).map_err(|reason| FrameError::Damaged { next, reason })?;
    Ok((frame, record))
}

fn decode_fixed(frame: &Frame<'_>) -> Result<Record, &'static str> {
    let p = frame.payload;
    let id_only = |make: fn(EntryId) -> Record| {
        if p.len() == 8 {
            Ok(make(EntryId::from_raw(u64_at(p, 0))))
        } else {
            Err("acknowledgement record of the wrong size")
        }
    };
    match frame.kind {
        Kind::Entry if p.len() >= ENTRY_HEAD => {
            Ok(Record::Entry { id: EntryId::from_raw(u64_at(p, 0)), created_unix_ms: u64_at(p, 8) })
        }
        Kind::Entry => Err("entry record too short"),
        Kind::Delivered => id_only(Record::Delivered),
        Kind::Expired => id_only(Record::Expired),
        Kind::Discarded => id_only(Record::Discarded),
        Kind::Attempt if p.len() == 20 => Ok(Record::Attempt {
            id: EntryId::from_raw(u64_at(p, 0)),
            attempts: u32_at(p, 8),
            next_attempt_unix_ms: u64_at(p, 12),
        }),
        Kind::Attempt => Err("attempt record of the wrong size"),
    }
}

/// Starts a frame at the end of `out`; returns its offset for [`finish`].
fn begin(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER]);
    start
}

/// Fills in the header of the frame that starts at `start` (payload already appended).
fn finish(out: &mut [u8], start: usize, kind: Kind) {
    let len = out.len() - start - FRAME_HEADER;
    debug_assert!(len <= MAX_PAYLOAD, "callers check the payload size");
    out[start + 8..start + 12].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 12] = kind as u8;
    let checksum = xxh64(&out[start + 8..], 0);
    out[start..start + 8].copy_from_slice(&checksum.to_le_bytes());
}

/// Payload bytes an entry record needs.
fn entry_payload_len(entry: &Entry) -> u64 {
    let field = |b: usize| 4 + b as u64;
    ENTRY_HEAD as u64
        + field(entry.route.len())
        + field(entry.method.len())
        + field(entry.target.len())
        + 4
        + entry.headers.iter().map(|(n, v)| field(n.len()) + field(v.len())).sum::<u64>()
        + field(entry.body.len())
}

fn put_field(out: &mut Vec<u8>, bytes: &[u8]) {
    // Every field is shorter than the whole payload, which the caller checked fits a u32.
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Appends an entry record to `out`. Fails with the record's size when it would not fit the
/// 32-bit length.
pub(crate) fn encode_entry(out: &mut Vec<u8>, id: EntryId, entry: &Entry) -> Result<(), u64> {
    let payload = entry_payload_len(entry);
    if payload > MAX_PAYLOAD as u64 {
        return Err(payload + FRAME_HEADER as u64);
    }
    out.reserve(FRAME_HEADER + payload as usize);
    let start = begin(out);
    out.extend_from_slice(&id.get().to_le_bytes());
    out.extend_from_slice(&entry.created_unix_ms.to_le_bytes());
    put_field(out, entry.route.as_bytes());
    put_field(out, entry.method.as_bytes());
    put_field(out, entry.target.as_bytes());
    out.extend_from_slice(&(entry.headers.len() as u32).to_le_bytes());
    for (name, value) in &entry.headers {
        put_field(out, name.as_bytes());
        put_field(out, value);
    }
    put_field(out, &entry.body);
    finish(out, start, Kind::Entry);
    Ok(())
}

/// Appends a delivered, expired or discarded record to `out`.
pub(crate) fn encode_id(out: &mut Vec<u8>, kind: Kind, id: EntryId) {
    debug_assert!(matches!(kind, Kind::Delivered | Kind::Expired | Kind::Discarded));
    let start = begin(out);
    out.extend_from_slice(&id.get().to_le_bytes());
    finish(out, start, kind);
}

/// Appends an attempt record to `out`.
pub(crate) fn encode_attempt(out: &mut Vec<u8>, id: EntryId, attempts: u32, next_unix_ms: u64) {
    let start = begin(out);
    out.extend_from_slice(&id.get().to_le_bytes());
    out.extend_from_slice(&attempts.to_le_bytes());
    out.extend_from_slice(&next_unix_ms.to_le_bytes());
    finish(out, start, Kind::Attempt);
}

/// Reads fields off an entry payload.
struct Cursor<'a> {
    frame: &'a Bytes,
    at: usize,
    end: usize,
}

impl Cursor<'_> {
    fn u32(&mut self) -> Result<u32, &'static str> {
        if self.end - self.at < 4 {
            return Err("entry record cut short");
        }
        let v = u32_at(self.frame, self.at);
        self.at += 4;
        Ok(v)
    }

    fn field(&mut self) -> Result<Bytes, &'static str> {
        let len = self.u32()? as usize;
        if self.end - self.at < len {
            return Err("entry field runs past its record");
        }
        let b = self.frame.slice(self.at..self.at + len);
        self.at += len;
        Ok(b)
    }

    fn string(&mut self) -> Result<String, &'static str> {
        String::from_utf8(self.field()?.to_vec()).map_err(|_| "entry text field is not UTF-8")
    }
}

/// Decodes a whole entry frame (as read back from disk) and checks it is the entry `id`. The
/// body shares `frame`'s buffer.
pub(crate) fn decode_entry(frame: Bytes, id: EntryId) -> Result<Entry, &'static str> {
    let (f, record) = read_frame(&frame, 0).map_err(|e| match e {
        FrameError::Truncated => "entry record cut short",
        FrameError::Damaged { reason, .. } => reason,
    })?;
    if f.next != frame.len() {
        return Err("entry record longer than its frame");
    }
    match record {
        Record::Entry { id: found, created_unix_ms } if found == id => {
            let mut c = Cursor { frame: &frame, at: FRAME_HEADER + ENTRY_HEAD, end: frame.len() };
            let route = c.string()?;
            let method = c.string()?;
            let target = c.string()?;
            let n = c.u32()? as usize;
            // Each header takes at least 8 bytes: do not trust `n` for the allocation.
            let mut headers = Vec::with_capacity(n.min((c.end - c.at) / 8));
            for _ in 0..n {
                let name = c.string()?;
                let value = c.field()?.to_vec();
                headers.push((name, value));
            }
            let body = c.field()?;
            if c.at != c.end {
                return Err("entry record has trailing bytes");
            }
            Ok(Entry { route, method, target, headers, body, created_unix_ms })
        }
        Record::Entry { .. } => Err("record holds another entry than the index says"),
        _ => Err("record is not an entry"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Entry {
        Entry {
            route: "orders".into(),
            method: "POST".into(),
            target: "/orders?x=1".into(),
            headers: vec![
                ("content-type".into(), b"application/json".to_vec()),
                ("x-bin".into(), vec![0, 255, 10]),
            ],
            body: Bytes::from_static(b"{\"a\":1}"),
            created_unix_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn entry_round_trips_and_fixed_fields_decode() {
        let mut out = Vec::new();
        encode_entry(&mut out, EntryId::from_raw(7), &sample()).unwrap();
        let (frame, record) = read_frame(&out, 0).unwrap();
        assert_eq!(frame.next, out.len());
        assert_eq!(
            record,
            Record::Entry { id: EntryId::from_raw(7), created_unix_ms: 1_700_000_000_000 }
        );
        let back = decode_entry(Bytes::from(out), EntryId::from_raw(7)).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn decode_entry_refuses_another_id() {
        let mut out = Vec::new();
        encode_entry(&mut out, EntryId::from_raw(7), &sample()).unwrap();
        assert!(decode_entry(Bytes::from(out), EntryId::from_raw(8)).is_err());
    }

    #[test]
    fn small_records_have_their_documented_sizes() {
        let mut out = Vec::new();
        encode_id(&mut out, Kind::Delivered, EntryId::from_raw(1));
        assert_eq!(out.len() as u64, ID_RECORD_BYTES);
        out.clear();
        encode_attempt(&mut out, EntryId::from_raw(1), 3, 99);
        assert_eq!(out.len() as u64, ATTEMPT_RECORD_BYTES);
        assert_eq!(
            read_frame(&out, 0).unwrap().1,
            Record::Attempt { id: EntryId::from_raw(1), attempts: 3, next_attempt_unix_ms: 99 }
        );
    }

    #[test]
    fn every_cut_of_a_frame_is_truncated_and_every_flipped_bit_is_caught() {
        let mut out = Vec::new();
        encode_entry(&mut out, EntryId::from_raw(7), &sample()).unwrap();
        for cut in 0..out.len() {
            assert_eq!(read_frame(&out[..cut], 0).unwrap_err(), FrameError::Truncated, "cut {cut}");
        }
        for byte in 0..out.len() {
            for bit in 0..8 {
                let mut bad = out.clone();
                bad[byte] ^= 1 << bit;
                assert!(read_frame(&bad, 0).is_err(), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn zeroed_bytes_are_not_a_frame() {
        let zeros = [0u8; 64];
        assert!(matches!(read_frame(&zeros, 0), Err(FrameError::Damaged { next: 13, .. })));
    }

    fn arb_entry() -> impl Strategy<Value = Entry> {
        (
            ".{0,12}",
            "[A-Z]{0,7}",
            ".{0,20}",
            proptest::collection::vec(
                (".{0,8}", proptest::collection::vec(any::<u8>(), 0..12)),
                0..5,
            ),
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<u64>(),
        )
            .prop_map(|(route, method, target, headers, body, created_unix_ms)| Entry {
                route,
                method,
                target,
                headers,
                body: Bytes::from(body),
                created_unix_ms,
            })
    }

    proptest! {
        #[test]
        fn any_entry_round_trips(entry in arb_entry(), id in any::<u64>()) {
            let mut out = Vec::new();
            encode_entry(&mut out, EntryId::from_raw(id), &entry).unwrap();
            prop_assert_eq!(decode_entry(Bytes::from(out), EntryId::from_raw(id)).unwrap(), entry);
        }
    }
}
