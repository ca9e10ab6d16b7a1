//! HPACK header compression (RFC 7541): the decoder for request field blocks and the
//! encoder for response field blocks.
//!
//! [`Decoder::decode`] hands each field to a callback as borrowed slices — straight from the
//! block for plain literals, from the table for indexed fields, from a small scratch buffer
//! for Huffman strings — so the caller copies each field once, into its own request head. It
//! enforces the table size from our SETTINGS and the header list size limit; when the list is
//! too large it keeps decoding (the dynamic table must stay in step with the peer) but stops
//! calling back and reports it.
//!
//! [`Encoder`] policy, per field (see [`Indexing`]): exact static-table matches are one byte;
//! fields that repeat across responses (`server`, `content-type`, `cache-control`, `vary`,
//! `grpc-status`, …) are added to the dynamic table and sent as one index afterwards; fields
//! whose values change per response (`date`, `content-length`, `etag`, `last-modified`,
//! `location`, `x-request-id`, …) are sent without indexing so they do not push out the
//! useful entries; secrets (`authorization`, `proxy-authorization`, `set-cookie`, `cookie`)
//! are sent *never indexed* (§7.1.3), so no intermediary may compress them. `set-cookie`
//! values are never indexed because a session cookie is a secret for the client it is set on,
//! and a shared compression context would expose it to guessing (CRIME-style).

pub mod huffman;
pub mod table;

use crate::error::{ErrorCode, H2Error};
use table::{find_static, DynamicTable, StaticMatch, ENTRY_OVERHEAD};

/// The initial and default `SETTINGS_HEADER_TABLE_SIZE`.
pub const DEFAULT_TABLE_SIZE: usize = 4096;

fn error(reason: &'static str) -> H2Error {
    H2Error::connection(ErrorCode::COMPRESSION_ERROR, reason)
}

/// Appends `value` as an HPACK integer with an `prefix_bits`-bit prefix; `first` holds the
/// pattern bits above the prefix (§5.1).
#[inline]
pub fn encode_int(value: usize, prefix_bits: u8, first: u8, out: &mut Vec<u8>) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// Reads an HPACK integer with a `prefix_bits`-bit prefix from the front of `input`:
/// the value and the bytes it took. Values above 2^28 are refused (no field is that large).
pub fn decode_int(input: &[u8], prefix_bits: u8) -> Result<(usize, usize), H2Error> {
    let max = (1usize << prefix_bits) - 1;
    let first = *input.first().ok_or(error("integer truncated"))? as usize & max;
    if first < max {
        return Ok((first, 1));
    }
    let mut value = max;
    let mut shift = 0;
    for (i, &b) in input[1..].iter().enumerate() {
        value += ((b & 0x7f) as usize) << shift;
        if value > 1 << 28 {
            return Err(error("integer too large"));
        }
        if b & 0x80 == 0 {
            return Ok((value, i + 2));
        }
        shift += 7;
    }
    Err(error("integer truncated"))
}

/// Appends a string literal, Huffman-coded unless that is longer (§5.2).
pub fn encode_string(s: &[u8], out: &mut Vec<u8>) {
    let huff_len = huffman::encoded_len(s);
    if huff_len <= s.len() {
        encode_int(huff_len, 7, 0x80, out);
        let start = out.len();
        out.resize(start + huff_len, 0);
        huffman::encode_into(s, &mut out[start..]);
    } else {
        encode_int(s.len(), 7, 0, out);
        out.extend_from_slice(s);
    }
}

/// Appends a string literal as it is, without Huffman coding (§5.2, H = 0).
#[inline]
fn encode_raw(s: &[u8], out: &mut Vec<u8>) {
    encode_int(s.len(), 7, 0, out);
    out.extend_from_slice(s);
}

/// Where a decoded string lives until the field is handed out.
#[derive(Debug, Clone, Copy)]
enum Src {
    /// A range of the block.
    Block(usize, usize),
    /// A range of the scratch buffer.
    Scratch(usize, usize),
    /// The name of a table entry.
    TableName(usize),
}

/// Outcome of decoding one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Whether the header list went over the limit; fields after that were not handed out.
    pub too_large: bool,
}

/// The HPACK decoder of one connection (decodes what the peer sends).
#[derive(Debug)]
pub struct Decoder {
    table: DynamicTable,
    /// The limit we announced in SETTINGS_HEADER_TABLE_SIZE.
    settings_max: usize,
    max_list_size: usize,
    scratch: Vec<u8>,
}

impl Decoder {
    /// A decoder allowing a table of `table_size` bytes and header lists of `max_list_size`
    /// (counted as the RFC does: name + value + 32 per field).
    pub fn new(table_size: usize, max_list_size: usize) -> Decoder {
        Decoder {
            table: DynamicTable::new(table_size),
            settings_max: table_size,
            max_list_size,
            scratch: Vec::new(),
        }
    }

    /// The dynamic table (for tests and memory accounting).
    pub fn table(&self) -> &DynamicTable {
        &self.table
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.table.heap_bytes() + self.scratch.capacity()
    }

    /// Frees the Huffman scratch buffer (for an idle connection).
    pub fn release_scratch(&mut self) {
        self.scratch = Vec::new();
    }

    /// Decodes one complete field block, calling `field(name, value)` for each field in order.
    /// Any HPACK violation is a COMPRESSION_ERROR for the connection.
    pub fn decode(
        &mut self,
        block: &[u8],
        mut field: impl FnMut(&[u8], &[u8]),
    ) -> Result<Decoded, H2Error> {
        self.scratch.clear();
        let mut pos = 0;
        let mut list_size = 0usize;
        let mut too_large = false;
        let mut seen_field = false;
        while pos < block.len() {
            let b = block[pos];
            if b & 0x80 != 0 {
                // Indexed field (§6.1).
                let (index, used) = decode_int(&block[pos..], 7)?;
                pos += used;
                let (name, value) = self.table.get(index).ok_or(error("index out of range"))?;
                list_size += name.len() + value.len() + ENTRY_OVERHEAD;
                too_large |= list_size > self.max_list_size;
                if !too_large {
                    field(name, value);
                }
                seen_field = true;
                continue;
            }
            if b & 0xe0 == 0x20 {
                // Dynamic table size update (§6.3): only before the first field.
                let (size, used) = decode_int(&block[pos..], 5)?;
                pos += used;
                if seen_field {
                    return Err(error("table size update after a field"));
                }
                if size > self.settings_max {
                    return Err(error("table size update above SETTINGS_HEADER_TABLE_SIZE"));
                }
                self.table.set_max_size(size);
                continue;
            }
            // Literal field: with incremental indexing (01), without (0000), never (0001).
            let (prefix, add) = if b & 0xc0 == 0x40 { (6, true) } else { (4, false) };
            let (index, used) = decode_int(&block[pos..], prefix)?;
            pos += used;
            let name = if index == 0 {
                self.read_string(block, &mut pos)?
            } else {
                if self.table.get(index).is_none() {
                    return Err(error("name index out of range"));
                }
                Src::TableName(index)
            };
            let value = self.read_string(block, &mut pos)?;
            let (n, v) = (self.slice(block, name), self.slice(block, value));
            list_size += n.len() + v.len() + ENTRY_OVERHEAD;
            too_large |= list_size > self.max_list_size;
            if !too_large {
                field(n, v);
            }
            if add {
                let mut entry = Vec::with_capacity(n.len() + v.len());
                entry.extend_from_slice(n);
                entry.extend_from_slice(v);
                let name_len = n.len();
                self.table.insert_joined(entry, name_len);
            }
            seen_field = true;
        }
        if self.scratch.capacity() > 1024 {
            self.scratch = Vec::new();
        }
        Ok(Decoded { too_large })
    }

    fn slice<'s>(&'s self, block: &'s [u8], src: Src) -> &'s [u8] {
        match src {
            Src::Block(a, b) => &block[a..b],
            Src::Scratch(a, b) => &self.scratch[a..b],
            Src::TableName(i) => self.table.get(i).map(|(n, _)| n).unwrap_or(&[]),
        }
    }

    fn read_string(&mut self, block: &[u8], pos: &mut usize) -> Result<Src, H2Error> {
        let huffman = *block.get(*pos).ok_or(error("string truncated"))? & 0x80 != 0;
        let (len, used) = decode_int(&block[*pos..], 7)?;
        let start = *pos + used;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= block.len())
            .ok_or(error("string truncated"))?;
        *pos = end;
        if !huffman {
            return Ok(Src::Block(start, end));
        }
        let from = self.scratch.len();
        huffman::decode(&block[start..end], &mut self.scratch)?;
        Ok(Src::Scratch(from, self.scratch.len()))
    }
}

/// How the encoder represents a field that is not an exact static-table match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indexing {
    /// Literal with incremental indexing: repeated fields become one byte.
    Incremental,
    /// Literal without indexing: values that change per message.
    Without,
    /// Literal never indexed: secrets (§7.1.3).
    Never,
}

/// The encoder's policy for a field name (see the module doc).
pub fn indexing_for(name: &[u8]) -> Indexing {
    match name {
        b"authorization" | b"proxy-authorization" | b"set-cookie" | b"cookie" => Indexing::Never,
        b"date" | b"content-length" | b"etag" | b"last-modified" | b"location" | b"expires"
        | b"age" | b"content-range" | b"x-request-id" | b"x-trace-id" | b"traceparent"
        | b"grpc-message" | b"retry-after" | b":path" => Indexing::Without,
        _ => Indexing::Incremental,
    }
}

/// Longest name or value of a field sent without indexing that goes out as a raw literal
/// (dates, lengths, ids, `x-request-id` itself); longer ones are Huffman-coded, where the
/// bytes saved are worth the passes.
const RAW_LITERAL_MAX: usize = 64;

/// The HPACK encoder of one connection (encodes what we send).
#[derive(Debug)]
pub struct Encoder {
    table: DynamicTable,
    /// Our own ceiling on the table, whatever the peer allows.
    cap: usize,
    /// Smallest size the table passed through since the last block, if it changed.
    pending_min: Option<usize>,
}

impl Encoder {
    /// An encoder that will use at most `cap` bytes of dynamic table (and at most what the
    /// peer allows, initially 4096).
    pub fn new(cap: usize) -> Encoder {
        let size = cap.min(DEFAULT_TABLE_SIZE);
        Encoder { table: DynamicTable::new(size), cap, pending_min: None }
    }

    /// Applies the peer's SETTINGS_HEADER_TABLE_SIZE.
    pub fn set_peer_table_size(&mut self, peer: usize) {
        let size = peer.min(self.cap);
        if size == self.table.max_size() && self.pending_min.is_none() {
            return;
        }
        self.pending_min =
            Some(self.pending_min.map_or(size, |m| m.min(size)).min(self.table.max_size()));
        self.table.set_max_size(size);
    }

    /// The dynamic table (for tests and memory accounting).
    pub fn table(&self) -> &DynamicTable {
        &self.table
    }

    /// Heap bytes held.
    pub fn heap_bytes(&self) -> usize {
        self.table.heap_bytes()
    }

    /// Starts a field block: emits the pending table size updates (§4.2).
    pub fn begin_block(&mut self, out: &mut Vec<u8>) {
        if let Some(min) = self.pending_min.take() {
            let size = self.table.max_size();
            if min < size {
                encode_int(min, 5, 0x20, out);
            }
            encode_int(size, 5, 0x20, out);
        }
    }

    /// Appends `:status`.
    pub fn encode_status(&mut self, status: u16, out: &mut Vec<u8>) {
        let index = match status {
            200 => 8,
            204 => 9,
            206 => 10,
            304 => 11,
            400 => 12,
            404 => 13,
            500 => 14,
            _ => 0,
        };
        if index != 0 {
            out.push(0x80 | index);
            return;
        }
        let mut digits = [0u8; 3];
        let s = status.min(999);
        digits[0] = b'0' + (s / 100) as u8;
        digits[1] = b'0' + (s / 10 % 10) as u8;
        digits[2] = b'0' + (s % 10) as u8;
        self.encode_field(b":status", &digits, out);
    }

    /// Appends one field with the policy of [`indexing_for`].
    pub fn encode_field(&mut self, name: &[u8], value: &[u8], out: &mut Vec<u8>) {
        let mut indexing = indexing_for(name);
        // Index only entries that leave room for others: at most a quarter of the table.
        if indexing == Indexing::Incremental
            && name.len() + value.len() + ENTRY_OVERHEAD > self.table.max_size() / 4
        {
            indexing = Indexing::Without;
        }
        self.encode_field_as(name, value, indexing, out);
    }

    /// Appends one field with an explicit indexing choice.
    pub fn encode_field_as(
        &mut self,
        name: &[u8],
        value: &[u8],
        indexing: Indexing,
        out: &mut Vec<u8>,
    ) {
        let stat = find_static(name, value);
        if indexing != Indexing::Never {
            if let Some(StaticMatch::Full(i)) = stat {
                encode_int(i, 7, 0x80, out);
                return;
            }
        }
        // The dynamic table is searched only when it can help: for a full match when the field
        // would be indexed, else for the name when the static table lacks it.
        let dynamic = match (indexing, stat) {
            (Indexing::Incremental, _) | (_, None) => self.table.find(name, value),
            _ => None,
        };
        if indexing == Indexing::Incremental {
            if let Some((i, true)) = dynamic {
                encode_int(i, 7, 0x80, out);
                return;
            }
        }
        let name_index = match stat {
            Some(StaticMatch::Full(i)) | Some(StaticMatch::Name(i)) => Some(i),
            None => dynamic.map(|(i, _)| i),
        };
        let (prefix, pattern) = match indexing {
            Indexing::Incremental => (6, 0x40),
            Indexing::Without => (4, 0x00),
            Indexing::Never => (4, 0x10),
        };
        // A field that is not indexed goes out whole on every message: its short name and
        // value are sent as they are, where Huffman coding would cost two passes over them
        // each time to save a few bytes. An indexed one is coded once, then referenced.
        let raw = |s: &[u8]| indexing != Indexing::Incremental && s.len() <= RAW_LITERAL_MAX;
        match name_index {
            Some(i) => encode_int(i, prefix, pattern, out),
            None => {
                out.push(pattern);
                if raw(name) {
                    encode_raw(name, out);
                } else {
                    encode_string(name, out);
                }
            }
        }
        if raw(value) {
            encode_raw(value, out);
        } else {
            encode_string(value, out);
        }
        if indexing == Indexing::Incremental {
            self.table.insert(name, value);
        }
    }
}

#[cfg(test)]
mod tests;
