//! The HPACK Huffman code (RFC 7541 §5.2, Appendix B): encode and decode string literals.
//!
//! The code of Appendix B is *canonical*: sorting the symbols by (code length, symbol) and
//! counting upwards gives every code. So the table below is only the 257 code lengths; the
//! codes, and the per-length limits the decoder uses, are derived from it at compile time
//! (a unit test pins a few codes against the RFC). Decoding reads up to 30 bits at once and
//! finds the length by comparing against the first code *not* of each length, a few
//! comparisons per symbol with no tree walking.

use crate::error::{ErrorCode, H2Error};

/// Code length in bits of each symbol 0..=255 and of EOS (256), RFC 7541 Appendix B.
const LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 30, 28,
    28, 28, 28, 28, 28, 28, 28, 28, 6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, 5, 5,
    5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, 13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, 15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6,
    6, 5, 6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, 20, 22, 20, 20, 22, 22, 22, 23, 22,
    23, 23, 23, 23, 23, 24, 23, 24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, 22,
    21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, 21, 21, 22, 21, 23, 22, 23, 23, 20,
    22, 22, 22, 23, 22, 22, 23, 26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, 19,
    21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, 20, 24, 20, 21, 22, 21, 21, 23, 22,
    22, 25, 25, 24, 24, 26, 23, 26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, 30,
];

/// The end-of-string symbol, which must never appear in a decoded string.
const EOS: u16 = 256;
const MIN_LEN: usize = 5;
const MAX_LEN: usize = 30;

/// Codes derived from [`LENGTHS`], plus the tables the decoder needs.
struct Code {
    /// Code of each symbol (right-aligned).
    codes: [u32; 257],
    /// Symbols sorted by (length, symbol).
    sorted: [u16; 257],
    /// For each length: the first code of that length.
    first: [u32; MAX_LEN + 1],
    /// For each length: the first code *after* the codes of that length.
    limit: [u32; MAX_LEN + 1],
    /// For each length: the index in `sorted` of its first symbol.
    offset: [u16; MAX_LEN + 1],
}

const fn build() -> Code {
    let mut count = [0u32; MAX_LEN + 1];
    let mut s = 0;
    while s < 257 {
        count[LENGTHS[s] as usize] += 1;
        s += 1;
    }
    let mut first = [0u32; MAX_LEN + 1];
    let mut limit = [0u32; MAX_LEN + 1];
    let mut offset = [0u16; MAX_LEN + 1];
    let mut code = 0u32;
    let mut index = 0u16;
    let mut len = 1;
    while len <= MAX_LEN {
        first[len] = code;
        offset[len] = index;
        code += count[len];
        limit[len] = code;
        index += count[len] as u16;
        code <<= 1;
        len += 1;
    }
    let mut sorted = [0u16; 257];
    let mut codes = [0u32; 257];
    let mut next = first;
    let mut fill = offset;
    let mut len = 1;
    while len <= MAX_LEN {
        let mut s = 0;
        while s < 257 {
            if LENGTHS[s] as usize == len {
                codes[s] = next[len];
                next[len] += 1;
                sorted[fill[len] as usize] = s as u16;
                fill[len] += 1;
            }
            s += 1;
        }
        len += 1;
    }
    Code { codes, sorted, first, limit, offset }
}

static CODE: Code = build();

/// Bytes `input` takes Huffman-encoded.
pub fn encoded_len(input: &[u8]) -> usize {
    let bits: usize = input.iter().map(|&b| LENGTHS[b as usize] as usize).sum();
    bits.div_ceil(8)
}

/// Appends `input` Huffman-encoded to `out`, padded with the most significant bits of EOS.
pub fn encode(input: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.resize(start + encoded_len(input), 0);
    encode_into(input, &mut out[start..]);
}

/// Writes `input` Huffman-encoded into `out`, which must be exactly [`encoded_len`] long
/// (no capacity check or growth per byte, unlike pushing).
pub fn encode_into(input: &[u8], out: &mut [u8]) {
    let mut acc: u64 = 0;
    let mut bits: u32 = 0;
    let mut at = 0;
    for &b in input {
        let len = LENGTHS[b as usize] as u32;
        acc = (acc << len) | CODE.codes[b as usize] as u64;
        bits += len;
        while bits >= 8 {
            bits -= 8;
            if let Some(slot) = out.get_mut(at) {
                *slot = (acc >> bits) as u8;
            }
            at += 1;
        }
    }
    if bits > 0 {
        let pad = 8 - bits;
        if let Some(slot) = out.get_mut(at) {
            *slot = ((acc << pad) | ((1 << pad) - 1)) as u8;
        }
    }
}

fn error(reason: &'static str) -> H2Error {
    H2Error::connection(ErrorCode::COMPRESSION_ERROR, reason)
}

/// Appends the decoding of the Huffman string `input` to `out`. Fails on EOS inside the
/// string, on padding longer than 7 bits, and on padding that is not all ones (§5.2).
pub fn decode(input: &[u8], out: &mut Vec<u8>) -> Result<(), H2Error> {
    let mut acc: u64 = 0;
    let mut bits: usize = 0;
    let mut rest = input;
    loop {
        while bits <= 56 {
            let Some((&b, tail)) = rest.split_first() else { break };
            acc = (acc << 8) | b as u64;
            bits += 8;
            rest = tail;
        }
        let mut decoded = false;
        let mut len = MIN_LEN;
        while len <= MAX_LEN && len <= bits {
            let code = ((acc >> (bits - len)) & ((1u64 << len) - 1)) as u32;
            if code < CODE.limit[len] {
                let symbol =
                    CODE.sorted[(CODE.offset[len] as u32 + code - CODE.first[len]) as usize];
                if symbol == EOS {
                    return Err(error("EOS inside a Huffman string"));
                }
                out.push(symbol as u8);
                bits -= len;
                decoded = true;
                break;
            }
            len += 1;
        }
        if !decoded {
            break;
        }
    }
    if bits > 7 {
        return Err(error("Huffman padding longer than 7 bits or truncated code"));
    }
    let mask = (1u64 << bits) - 1;
    if acc & mask != mask {
        return Err(error("Huffman padding not all ones"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_codes_match_rfc_appendix_b_samples() {
        // (symbol, code, length) rows copied from RFC 7541 Appendix B.
        for (sym, code, len) in [
            (0usize, 0x1ff8u32, 13u8),
            (b' ' as usize, 0x14, 6),
            (b'0' as usize, 0x0, 5),
            (b'a' as usize, 0x3, 5),
            (b'~' as usize, 0x1ffd, 13),
            (127, 0xffffffc, 28),
            (200, 0x3ffffe2, 26),
            (255, 0x3ffffee, 26),
            (256, 0x3fffffff, 30),
        ] {
            assert_eq!((CODE.codes[sym], LENGTHS[sym]), (code, len), "symbol {sym}");
        }
    }

    #[test]
    fn every_byte_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let mut enc = Vec::new();
        encode(&all, &mut enc);
        assert_eq!(enc.len(), encoded_len(&all));
        let mut dec = Vec::new();
        decode(&enc, &mut dec).unwrap();
        assert_eq!(dec, all);
    }

    #[test]
    fn rejects_bad_padding_and_eos() {
        let mut out = Vec::new();
        // 'a' is 00011 (5 bits): padding with zeros is invalid.
        assert!(decode(&[0b0001_1000], &mut out).is_err());
        assert!(decode(&[0b0001_1111], &mut out).is_ok());
        // A whole byte of ones is padding longer than 7 bits.
        assert!(decode(&[0b0001_1111, 0xff], &mut out).is_err());
        // EOS: 30 ones, then two padding ones.
        assert!(decode(&[0xff, 0xff, 0xff, 0xff], &mut out).is_err());
    }
}
