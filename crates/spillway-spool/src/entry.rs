//! What the spool stores: one failed request ([`Entry`]), the id it is known by
//! ([`EntryId`]), and the views handed back to the delivery loop and the admin endpoint.

use bytes::Bytes;
use std::fmt;
use std::str::FromStr;

/// A stored request: everything needed to send it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Name of the gateway route it came through (to find the upstream again).
    pub route: String,
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Path and query, e.g. `/orders?src=app`.
    pub target: String,
    /// Request headers in order (names as received; values are raw bytes).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Request body.
    pub body: Bytes,
    /// When the request arrived (Unix milliseconds); `max_age` counts from here.
    pub created_unix_ms: u64,
}

/// The id of a spooled entry: unique in its spool directory and increasing in append order,
/// also across restarts. Displayed (and parsed) as 16 lower-case hex digits, safe in a URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId(u64);

impl EntryId {
    /// The id with this numeric value (for callers that store ids as numbers).
    pub const fn from_raw(raw: u64) -> EntryId {
        EntryId(raw)
    }

    /// The numeric value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for EntryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Why a string is not an [`EntryId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a spool entry id (16 hex digits expected): {0:?}")]
pub struct ParseEntryIdError(String);

impl FromStr for EntryId {
    type Err = ParseEntryIdError;

    fn from_str(s: &str) -> Result<EntryId, ParseEntryIdError> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseEntryIdError(s.to_string()));
        }
        u64::from_str_radix(s, 16).map(EntryId).map_err(|_| ParseEntryIdError(s.to_string()))
    }
}

/// A pending entry whose next attempt time has come, as [`Spool::due`](crate::Spool::due)
/// hands it out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueEntry {
    /// Its id, for [`Spool::delivered`](crate::Spool::delivered) or
    /// [`Spool::failed`](crate::Spool::failed).
    pub id: EntryId,
    /// Failed delivery attempts so far (0 for a fresh entry): the caller's backoff input.
    pub attempts: u32,
    /// The stored request.
    pub entry: Entry,
}

/// What the spool knows about a pending entry without reading its body from disk (for the
/// admin listing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingInfo {
    /// Its id.
    pub id: EntryId,
    /// When the request arrived (Unix milliseconds).
    pub created_unix_ms: u64,
    /// Failed delivery attempts so far.
    pub attempts: u32,
    /// Earliest time (Unix milliseconds) [`Spool::due`](crate::Spool::due) hands it out.
    pub next_attempt_unix_ms: u64,
    /// Size of its record on disk.
    pub record_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_displays_as_16_hex_digits_and_parses_back() {
        let id = EntryId::from_raw(0xab);
        assert_eq!(id.to_string(), "00000000000000ab");
        assert_eq!("00000000000000ab".parse::<EntryId>(), Ok(id));
        assert_eq!("00000000000000AB".parse::<EntryId>(), Ok(id));
        assert_eq!(
            EntryId::from_raw(u64::MAX).to_string().parse::<EntryId>(),
            Ok(EntryId::from_raw(u64::MAX))
        );
    }

    #[test]
    fn id_parse_refuses_wrong_length_and_non_hex() {
        assert!("ab".parse::<EntryId>().is_err());
        assert!("+000000000000000".parse::<EntryId>().is_err());
        assert!("000000000000000g".parse::<EntryId>().is_err());
        assert!("00000000000000000".parse::<EntryId>().is_err());
    }
}
