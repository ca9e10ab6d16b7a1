//! HPACK's static table (RFC 7541 Appendix A) and dynamic table (§2.3.2, §4).
//!
//! The dynamic table is a FIFO of entries, newest first for indexing, sized as the RFC counts
//! (name + value + 32 per entry) and evicting from the oldest end. Its storage grows with the
//! entries it holds — an empty table allocates nothing — so an idle connection pays only for
//! what its peer chose to index.

use std::collections::VecDeque;

/// The static table, index 1..=61.
pub const STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// Per-entry overhead the RFC adds to name and value lengths (§4.1).
pub const ENTRY_OVERHEAD: usize = 32;

/// A match of a field in the static table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StaticMatch {
    /// Name and value match: index.
    Full(usize),
    /// Only the name matches: index of its first entry.
    Name(usize),
}

/// The static-table index range `(first, count)` of the entries named `name`.
fn static_range(name: &[u8]) -> Option<(usize, usize)> {
    Some(match name {
        b":authority" => (1, 1),
        b":method" => (2, 2),
        b":path" => (4, 2),
        b":scheme" => (6, 2),
        b":status" => (8, 7),
        b"accept-charset" => (15, 1),
        b"accept-encoding" => (16, 1),
        b"accept-language" => (17, 1),
        b"accept-ranges" => (18, 1),
        b"accept" => (19, 1),
        b"access-control-allow-origin" => (20, 1),
        b"age" => (21, 1),
        b"allow" => (22, 1),
        b"authorization" => (23, 1),
        b"cache-control" => (24, 1),
        b"content-disposition" => (25, 1),
        b"content-encoding" => (26, 1),
        b"content-language" => (27, 1),
        b"content-length" => (28, 1),
        b"content-location" => (29, 1),
        b"content-range" => (30, 1),
        b"content-type" => (31, 1),
        b"cookie" => (32, 1),
        b"date" => (33, 1),
        b"etag" => (34, 1),
        b"expect" => (35, 1),
        b"expires" => (36, 1),
        b"from" => (37, 1),
        b"host" => (38, 1),
        b"if-match" => (39, 1),
        b"if-modified-since" => (40, 1),
        b"if-none-match" => (41, 1),
        b"if-range" => (42, 1),
        b"if-unmodified-since" => (43, 1),
        b"last-modified" => (44, 1),
        b"link" => (45, 1),
        b"location" => (46, 1),
        b"max-forwards" => (47, 1),
        b"proxy-authenticate" => (48, 1),
        b"proxy-authorization" => (49, 1),
        b"range" => (50, 1),
        b"referer" => (51, 1),
        b"refresh" => (52, 1),
        b"retry-after" => (53, 1),
        b"server" => (54, 1),
        b"set-cookie" => (55, 1),
        b"strict-transport-security" => (56, 1),
        b"transfer-encoding" => (57, 1),
        b"user-agent" => (58, 1),
        b"vary" => (59, 1),
        b"via" => (60, 1),
        b"www-authenticate" => (61, 1),
        _ => return None,
    })
}

/// Looks a field up in the static table.
pub fn find_static(name: &[u8], value: &[u8]) -> Option<StaticMatch> {
    let (first, count) = static_range(name)?;
    for index in first..first + count {
        if STATIC[index - 1].1 == value {
            return Some(StaticMatch::Full(index));
        }
    }
    Some(StaticMatch::Name(first))
}

#[derive(Debug)]
struct Entry {
    /// Name then value.
    bytes: Box<[u8]>,
    name_len: usize,
}

impl Entry {
    fn name(&self) -> &[u8] {
        &self.bytes[..self.name_len]
    }
    fn value(&self) -> &[u8] {
        &self.bytes[self.name_len..]
    }
    fn size(&self) -> usize {
        self.bytes.len() + ENTRY_OVERHEAD
    }
}

/// The dynamic table of one direction of one connection.
#[derive(Debug, Default)]
pub struct DynamicTable {
    entries: VecDeque<Entry>,
    size: usize,
    max_size: usize,
}

impl DynamicTable {
    /// An empty table with room for `max_size` bytes of entries (nothing is allocated yet).
    pub fn new(max_size: usize) -> DynamicTable {
        DynamicTable { entries: VecDeque::new(), size: 0, max_size }
    }

    /// Current size as the RFC counts it.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Current maximum size.
    pub fn max_size(&self) -> usize {
        self.max_size
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Changes the maximum size, evicting entries that no longer fit.
    pub fn set_max_size(&mut self, max_size: usize) {
        self.max_size = max_size;
        self.evict_to(max_size);
        if self.entries.is_empty() {
            self.entries = VecDeque::new(); // give the storage back
        }
    }

    fn evict_to(&mut self, target: usize) {
        while self.size > target {
            match self.entries.pop_back() {
                Some(e) => self.size -= e.size(),
                None => break,
            }
        }
    }

    /// Adds an entry, evicting old ones first; an entry larger than the table empties it (§4.4).
    pub fn insert(&mut self, name: &[u8], value: &[u8]) {
        let mut bytes = Vec::with_capacity(name.len() + value.len());
        bytes.extend_from_slice(name);
        bytes.extend_from_slice(value);
        self.insert_joined(bytes, name.len());
    }

    /// Adds an entry given as name and value in one buffer (`name_len` bytes of name).
    pub fn insert_joined(&mut self, bytes: Vec<u8>, name_len: usize) {
        let size = bytes.len() + ENTRY_OVERHEAD;
        if size > self.max_size {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.entries.push_front(Entry {
            bytes: bytes.into_boxed_slice(),
            name_len: name_len.min(size - ENTRY_OVERHEAD),
        });
        self.size += size;
    }

    /// The field at HPACK index `index` (1-based across static then dynamic), if any.
    pub fn get(&self, index: usize) -> Option<(&[u8], &[u8])> {
        match index {
            0 => None,
            1..=61 => Some(STATIC[index - 1]),
            _ => self.entries.get(index - 62).map(|e| (e.name(), e.value())),
        }
    }

    /// Finds a field in the dynamic table: `(index, value matches)`, preferring a full match.
    pub fn find(&self, name: &[u8], value: &[u8]) -> Option<(usize, bool)> {
        let mut by_name = None;
        for (i, e) in self.entries.iter().enumerate() {
            if e.name() == name {
                if e.value() == value {
                    return Some((62 + i, true));
                }
                by_name.get_or_insert((62 + i, false));
            }
        }
        by_name
    }

    /// Heap bytes held by the table (entries and the ring), for memory accounting.
    pub fn heap_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.entries.iter().map(|e| e.bytes.len()).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_ranges_cover_the_table_in_order() {
        for (i, (name, value)) in STATIC.iter().enumerate() {
            let (first, count) = static_range(name).expect("every static name is known");
            assert!((first..first + count).contains(&(i + 1)), "{}", String::from_utf8_lossy(name));
            assert_eq!(find_static(name, value), Some(StaticMatch::Full(i + 1)));
        }
    }

    #[test]
    fn static_lookup_full_and_name_matches() {
        assert_eq!(find_static(b":method", b"POST"), Some(StaticMatch::Full(3)));
        assert_eq!(find_static(b":method", b"PUT"), Some(StaticMatch::Name(2)));
        assert_eq!(find_static(b":status", b"404"), Some(StaticMatch::Full(13)));
        assert_eq!(find_static(b"www-authenticate", b"x"), Some(StaticMatch::Name(61)));
        assert_eq!(find_static(b"x-custom", b""), None);
    }

    #[test]
    fn eviction_keeps_size_within_max_and_newest_first() {
        let mut t = DynamicTable::new(100);
        t.insert(b"aaaa", b"1111"); // 40
        t.insert(b"bbbb", b"2222"); // 80
        assert_eq!((t.len(), t.size()), (2, 80));
        assert_eq!(t.get(62), Some((&b"bbbb"[..], &b"2222"[..])));
        t.insert(b"cccc", b"3333"); // evicts aaaa
        assert_eq!((t.len(), t.size()), (2, 80));
        assert_eq!(t.get(63), Some((&b"bbbb"[..], &b"2222"[..])));
        assert_eq!(t.get(64), None);
        t.set_max_size(40);
        assert_eq!((t.len(), t.get(62)), (1, Some((&b"cccc"[..], &b"3333"[..]))));
        t.insert(&[b'x'; 100], b""); // larger than the table: empties it
        assert!(t.is_empty());
        assert_eq!(t.size(), 0);
    }
}
