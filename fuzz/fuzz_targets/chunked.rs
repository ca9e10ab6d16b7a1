//! The chunked-body scanner of the lean path (`listen::h1::chunked::ChunkedScanner`), which
//! finds where a chunked body ends while its bytes pass through unchanged.
//!
//! The first byte chooses the input (even: raw, odd: encoded):
//! - raw: the second byte seeds how the rest is cut into pieces; the rest is any bytes, scanned
//!   whole and again in pieces: both give the same outcome (bytes consumed, done, or the same
//!   error), the scanner never consumes past the end of the body, and a failed scanner stays
//!   failed (the seed corpus holds real chunked bodies in this form);
//! - encoded (`Encoded`, built with `arbitrary` from the rest): a body the target encodes
//!   itself (chunks of any data with leading zeros, extensions and trailers as RFC 9112 §7.1
//!   allows), followed by the next message: scanned in the fuzzer's pieces, it completes
//!   exactly at the end of the encoding (the round trip of the body's framing), so not one
//!   byte of the next message is taken as body.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use spillway_gateway::listen::h1::chunked::{ChunkedError, ChunkedScanner, Scanned};

#[derive(Debug, Arbitrary)]
struct Encoded {
    chunks: Vec<Chunk>,
    last: Last,
    after: Vec<u8>,
    cuts: Vec<u16>,
}

#[derive(Debug, Arbitrary)]
struct Chunk {
    data: Vec<u8>,
    zeros: u8,
    upper: bool,
    extensions: Vec<Extension>,
}

#[derive(Debug, Arbitrary)]
struct Extension {
    name: u8,
    value: Option<ExtValue>,
    space_before_semicolon: bool,
}

#[derive(Debug, Arbitrary)]
enum ExtValue {
    Token(u8),
    Quoted(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
struct Last {
    zeros: u8,
    extensions: Vec<Extension>,
    trailers: Vec<(u8, Vec<u8>)>,
}

fuzz_target!(|data: &[u8]| {
    match data {
        [mode, cut, bytes @ ..] if mode % 2 == 0 => {
            // Piece lengths 1, 2, … up to `cut + 1`, then again.
            let cuts: Vec<u16> =
                (0..bytes.len()).map(|i| (i % (usize::from(*cut) + 1)) as u16).collect();
            raw(bytes, &cuts);
        }
        [_, rest @ ..] => {
            if let Ok(e) = Encoded::arbitrary_take_rest(Unstructured::new(rest)) {
                encoded(&e.chunks, &e.last, &e.after, &e.cuts);
            }
        }
        [] => {}
    }
});

/// Splits `bytes` at the fuzzer's cut lengths (each piece at least one byte).
fn pieces<'a>(bytes: &'a [u8], cuts: &[u16]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    for cut in cuts {
        if rest.is_empty() {
            break;
        }
        let n = (usize::from(*cut) % rest.len()) + 1;
        let (piece, tail) = rest.split_at(n);
        out.push(piece);
        rest = tail;
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

/// Scans `bytes` in `pieces`, stopping at the first error or once the body is done.
fn scan_in_pieces(bytes: &[u8], cuts: &[u16]) -> Result<Scanned, ChunkedError> {
    let mut scanner = ChunkedScanner::new();
    let mut consumed = 0;
    for piece in pieces(bytes, cuts) {
        let step = scanner.scan(piece)?;
        assert!(step.consumed <= piece.len());
        if !step.done {
            assert_eq!(step.consumed, piece.len(), "an unfinished body takes every byte");
        }
        consumed += step.consumed;
        if step.done {
            // A finished scanner takes nothing more.
            assert_eq!(scanner.scan(b"0\r\n\r\n"), Ok(Scanned { consumed: 0, done: true }));
            return Ok(Scanned { consumed, done: true });
        }
    }
    Ok(Scanned { consumed, done: scanner.is_done() })
}

fn raw(bytes: &[u8], cuts: &[u16]) {
    let mut scanner = ChunkedScanner::new();
    let whole = scanner.scan(bytes);
    match &whole {
        Ok(scanned) => {
            assert!(scanned.consumed <= bytes.len());
            assert_eq!(scanned.done, scanner.is_done());
        }
        Err(error) => assert_eq!(scanner.scan(b"0\r\n\r\n"), Err(error.clone()), "stays failed"),
    }
    assert_eq!(scan_in_pieces(bytes, cuts), whole, "whole and in pieces differ");
}

fn encoded(chunks: &[Chunk], last: &Last, after: &[u8], cuts: &[u16]) {
    let mut body = Vec::new();
    for chunk in chunks.iter().filter(|c| !c.data.is_empty()) {
        size_line(&mut body, chunk.data.len(), chunk.zeros, chunk.upper, &chunk.extensions);
        body.extend_from_slice(&chunk.data);
        body.extend_from_slice(b"\r\n");
    }
    size_line(&mut body, 0, last.zeros, false, &last.extensions);
    for (name, value) in last.trailers.iter().take(8) {
        body.push(tchar(*name));
        body.extend_from_slice(b": ");
        body.extend(value.iter().take(64).map(|b| field_vchar(*b)));
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"\r\n");
    let mut stream = body.clone();
    stream.extend_from_slice(after);
    assert_eq!(
        scan_in_pieces(&stream, cuts),
        Ok(Scanned { consumed: body.len(), done: true }),
        "{:?}",
        String::from_utf8_lossy(&body)
    );
}

fn size_line(out: &mut Vec<u8>, size: usize, zeros: u8, upper: bool, extensions: &[Extension]) {
    out.extend(std::iter::repeat_n(b'0', usize::from(zeros % 8)));
    let hex = if upper { format!("{size:X}") } else { format!("{size:x}") };
    out.extend_from_slice(hex.as_bytes());
    for ext in extensions.iter().take(4) {
        if ext.space_before_semicolon {
            out.push(b' ');
        }
        out.push(b';');
        out.push(tchar(ext.name));
        match &ext.value {
            None => {}
            Some(ExtValue::Token(t)) => {
                out.push(b'=');
                out.push(tchar(*t));
            }
            Some(ExtValue::Quoted(text)) => {
                out.extend_from_slice(b"=\"");
                for b in text.iter().take(32) {
                    match field_vchar(*b) {
                        q @ (b'"' | b'\\') => out.extend_from_slice(&[b'\\', q]),
                        other => out.push(other),
                    }
                }
                out.push(b'"');
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// A `tchar` (RFC 9110 §5.6.2) chosen by `b`.
fn tchar(b: u8) -> u8 {
    const TCHARS: &[u8] =
        b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    TCHARS[usize::from(b) % TCHARS.len()]
}

/// A byte allowed inside a field value or quoted string: HTAB, SP, VCHAR or obs-text.
fn field_vchar(b: u8) -> u8 {
    match b {
        b'\t' | 0x20..=0x7e | 0x80..=0xff => b,
        _ => b'x',
    }
}
