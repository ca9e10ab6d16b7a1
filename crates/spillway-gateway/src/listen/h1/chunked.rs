//! A strict pass-through scanner for HTTP/1.1 chunked message bodies (RFC 9112 §7.1): it finds
//! where a chunked body ends while its bytes stream through unchanged.
//!
//! The lean proxy path forwards chunked bodies as they are, without decoding or re-chunking, so
//! all it has to know is how many bytes of each read belong to the body and where the body ends
//! (after the last chunk, the trailer section and the final CRLF); the bytes after that belong to
//! the next message on the connection. Two parties that disagree on that end are how request
//! smuggling and response splitting happen, so the scanner accepts exactly the RFC grammar and
//! rejects everything else: bare CR or LF, whitespace or control characters where the grammar
//! has none, sizes that overflow, obsolete line folding in trailers, and oversized size lines or
//! trailer sections.
//!
//! Scanning is a byte-at-a-time state machine over the size lines and trailers, and skips chunk
//! data in one step per call however large the chunk is. It never allocates and never panics.
//! Where the client takes the body decoded (HTTP/2, or `http` frames on hyper's path),
//! [`ChunkedScanner::scan_pieces`] also hands out where the chunk data and the trailer section
//! lie, and [`trailer_fields`] reads the section, so trailers go on as a trailer block.

/// Longest accepted chunk size line, counting the size digits and the extensions but not the
/// CRLF.
pub const MAX_SIZE_LINE_BYTES: usize = 4096;

/// Largest accepted trailer section: the field lines with their CRLFs, not the final empty line.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Most significant hex digits of a chunk size (leading zeros do not count): 16 fill a `u64`.
const MAX_SIZE_DIGITS: u8 = 16;

const CR: u8 = b'\r';
const LF: u8 = b'\n';

/// What one [`ChunkedScanner::scan`] call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// How many leading bytes of the input belong to the body: all of them unless the body ended
    /// inside the input, in which case the rest belongs to the next message.
    pub consumed: usize,
    /// Whether the body is complete (its final CRLF has been scanned).
    pub done: bool,
}

/// A piece of a chunked body that [`ChunkedScanner::scan_pieces`] found: a range of its input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Chunk data.
    Data(std::ops::Range<usize>),
    /// Part of the trailer section (field lines with their CRLFs).
    Trailer(std::ops::Range<usize>),
}

/// The fields of a trailer section as [`ChunkedScanner::scan_pieces`] handed it out (joined):
/// `(name, value)`, the value without its surrounding whitespace. The scanner has checked the
/// lines' syntax; a line without a colon (which it refuses) is skipped.
pub fn trailer_fields(section: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    section.split(|&b| b == LF).filter_map(|line| {
        let line = line.strip_suffix(&[CR]).unwrap_or(line);
        let colon = line.iter().position(|&b| b == b':')?;
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        Some((name, value.trim_ascii()))
    })
}

/// Whether a trailer field (its name in lower case) is passed on when a decoded body's
/// trailers go on as a trailer block (an HTTP/2 client's, or `http`'s trailers): not the
/// connection-specific fields HTTP/2 forbids (RFC 9113 §8.2.2) nor `te`, nor the framing and
/// routing fields a trailer cannot carry (RFC 9110 §6.5.1).
pub fn passed_on_in_trailers(name: &[u8]) -> bool {
    !matches!(
        name,
        b"connection"
            | b"proxy-connection"
            | b"keep-alive"
            | b"transfer-encoding"
            | b"upgrade"
            | b"te"
            | b"content-length"
            | b"host"
            | b"trailer"
    )
}

/// Why a chunked body is malformed. The connection cannot be trusted past such an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    /// A chunk size line does not start with a hex digit.
    #[error("chunk size line does not start with a hex digit")]
    NoSizeDigits,
    /// A chunk size has more than 16 significant hex digits, so it does not fit in a `u64`.
    #[error("chunk size has more than 16 significant hex digits (overflows u64)")]
    SizeOverflow,
    /// A chunk size line (size and extensions) is longer than [`MAX_SIZE_LINE_BYTES`].
    #[error("chunk size line longer than 4096 bytes")]
    SizeLineTooLong,
    /// A chunk size line holds a control character other than HTAB.
    #[error("control character in a chunk size line")]
    ControlInSizeLine,
    /// A chunk extension does not follow `*( BWS ";" BWS name [ BWS "=" BWS value ] )`, or
    /// whitespace precedes the end of the size line.
    #[error("malformed chunk extension")]
    InvalidExtension,
    /// An LF not preceded by a CR ends a line.
    #[error("bare LF (not preceded by CR) in chunked framing")]
    BareLf,
    /// A CR is not followed by an LF.
    #[error("CR not followed by LF in chunked framing")]
    BareCr,
    /// The bytes after a chunk's data are not CRLF.
    #[error("chunk data not followed by CRLF")]
    MissingDataCrlf,
    /// A trailer line is not `name: value` (empty name, non-token name, whitespace before the
    /// colon, or no colon).
    #[error("malformed trailer field line")]
    InvalidTrailerLine,
    /// A trailer line starts with whitespace: obsolete line folding.
    #[error("obsolete line folding in the trailer section")]
    ObsFoldInTrailers,
    /// A trailer field value holds a control character other than HTAB.
    #[error("control character in a trailer field")]
    ControlInTrailer,
    /// The trailer section is larger than [`MAX_TRAILER_BYTES`].
    #[error("trailer section larger than 16384 bytes")]
    TrailersTooLarge,
}

/// Where the scanner is in the chunked grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Start of a size line: a hex digit must come.
    SizeStart,
    /// Inside the size digits.
    SizeDigits,
    /// After the size or a complete extension; `ws` once whitespace followed it, after which only
    /// `;` (or more whitespace) may come, not the line end.
    ItemEnd { ws: bool },
    /// After `;`: optional whitespace, then an extension name.
    ExtBeforeName,
    /// Inside an extension name.
    ExtName,
    /// Whitespace after an extension name: `=` or `;` must come.
    ExtAfterName,
    /// After `=`: optional whitespace, then a token or a quoted string.
    ExtBeforeValue,
    /// Inside a token extension value.
    ExtToken,
    /// Inside a quoted extension value.
    ExtQuoted,
    /// After a backslash inside a quoted extension value.
    ExtQuotedPair,
    /// After the CR that ends a size line.
    SizeLf,
    /// Inside chunk data, `remaining` bytes (at least one) to go.
    Data { remaining: u64 },
    /// After chunk data: CR must come.
    DataCr,
    /// After chunk data and CR: LF must come.
    DataLf,
    /// Start of a trailer line, or of the final empty line.
    TrailerLineStart,
    /// Inside a trailer field name.
    TrailerName,
    /// After the colon of a trailer line.
    TrailerValue,
    /// After the CR that ends a trailer line.
    TrailerLf,
    /// After the CR of the final empty line.
    FinalLf,
    /// The body is complete.
    Done,
    /// The body is malformed; every later call returns this error.
    Failed(ChunkedError),
}

/// Finds the end of a chunked message body as its bytes stream through, without changing them.
///
/// Feed the body's bytes to [`scan`](Self::scan) in order, in pieces of any size. After an error
/// the connection must be closed; the scanner stays failed and every later call returns the same
/// error.
#[derive(Debug, Clone)]
pub struct ChunkedScanner {
    state: State,
    /// The chunk size read so far on the current size line.
    size: u64,
    /// Significant hex digits of `size` read so far.
    size_digits: u8,
    /// Bytes of the current size line so far, CRLF excluded.
    line_len: usize,
    /// Bytes of the trailer section so far, final empty line excluded.
    trailer_len: usize,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedScanner {
    /// A scanner at the start of a chunked body.
    pub fn new() -> ChunkedScanner {
        ChunkedScanner {
            state: State::SizeStart,
            size: 0,
            size_digits: 0,
            line_len: 0,
            trailer_len: 0,
        }
    }

    /// Scans the next bytes of the body. Returns how many bytes of `input` belong to the body
    /// (all of them unless the body ends inside `input`) and whether the body is complete.
    ///
    /// Once the body is complete, further calls return `consumed: 0, done: true`. Once it has
    /// failed, further calls return the same error.
    #[inline]
    pub fn scan(&mut self, input: &[u8]) -> Result<Scanned, ChunkedError> {
        self.scan_data(input, |_| {})
    }

    /// As [`scan`](Self::scan), also handing `on_data` the range of `input` of each piece of
    /// chunk data found, in order: what decoding the body (rather than passing it on) keeps.
    pub fn scan_data(
        &mut self,
        input: &[u8],
        mut on_data: impl FnMut(std::ops::Range<usize>),
    ) -> Result<Scanned, ChunkedError> {
        self.scan_pieces(input, |piece| {
            if let Piece::Data(range) = piece {
                on_data(range);
            }
        })
    }

    /// As [`scan`](Self::scan), handing `on_piece` each piece of chunk data and of the trailer
    /// section found, in order: what decoding the body keeps, when its trailers go on too
    /// (an HTTP/2 client gets them as a trailer block). The trailer pieces, joined, are the
    /// field lines with their CRLFs ([`trailer_fields`] reads them).
    pub fn scan_pieces(
        &mut self,
        input: &[u8],
        mut on_piece: impl FnMut(Piece),
    ) -> Result<Scanned, ChunkedError> {
        if let State::Failed(error) = &self.state {
            return Err(error.clone());
        }
        let mut pos = 0;
        // Where the trailer bytes of this input started, while they run on.
        let mut trailer_from: Option<usize> = None;
        while pos < input.len() {
            match self.state {
                State::Done => break,
                State::Data { remaining } => {
                    let available = input.len() - pos;
                    let skip = usize::try_from(remaining).map_or(available, |r| r.min(available));
                    on_piece(Piece::Data(pos..pos + skip));
                    pos += skip;
                    let left = remaining.saturating_sub(skip as u64);
                    self.state =
                        if left == 0 { State::DataCr } else { State::Data { remaining: left } };
                }
                _ => {
                    let byte = input[pos];
                    let in_trailer = self.in_trailer_line(byte);
                    match (in_trailer, trailer_from) {
                        (true, None) => trailer_from = Some(pos),
                        (false, Some(from)) => {
                            on_piece(Piece::Trailer(from..pos));
                            trailer_from = None;
                        }
                        _ => {}
                    }
                    pos += 1;
                    if let Err(error) = self.step(byte) {
                        self.state = State::Failed(error.clone());
                        return Err(error);
                    }
                }
            }
        }
        if let Some(from) = trailer_from {
            on_piece(Piece::Trailer(from..pos));
        }
        Ok(Scanned { consumed: pos, done: self.is_done() })
    }

    /// Whether the whole body, final CRLF included, has been scanned.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Advances over one byte outside chunk data.
    fn step(&mut self, byte: u8) -> Result<(), ChunkedError> {
        if self.in_size_line() {
            self.check_size_line_byte(byte)?;
        }
        if self.in_trailer_line(byte) {
            self.trailer_len += 1;
            if self.trailer_len > MAX_TRAILER_BYTES {
                return Err(ChunkedError::TrailersTooLarge);
            }
        }
        self.state = match self.state {
            State::SizeStart => match hex_value(byte) {
                Some(digit) => {
                    self.push_digit(digit)?;
                    State::SizeDigits
                }
                None => return Err(ChunkedError::NoSizeDigits),
            },
            State::SizeDigits => match hex_value(byte) {
                Some(digit) => {
                    self.push_digit(digit)?;
                    State::SizeDigits
                }
                None => item_end(byte, false)?,
            },
            State::ItemEnd { ws } => item_end(byte, ws)?,
            State::ExtBeforeName => match byte {
                b' ' | b'\t' => State::ExtBeforeName,
                _ if is_tchar(byte) => State::ExtName,
                _ => return Err(ChunkedError::InvalidExtension),
            },
            State::ExtName => match byte {
                _ if is_tchar(byte) => State::ExtName,
                b' ' | b'\t' => State::ExtAfterName,
                b'=' => State::ExtBeforeValue,
                b';' => State::ExtBeforeName,
                CR => State::SizeLf,
                _ => return Err(ChunkedError::InvalidExtension),
            },
            State::ExtAfterName => match byte {
                b' ' | b'\t' => State::ExtAfterName,
                b'=' => State::ExtBeforeValue,
                b';' => State::ExtBeforeName,
                _ => return Err(ChunkedError::InvalidExtension),
            },
            State::ExtBeforeValue => match byte {
                b' ' | b'\t' => State::ExtBeforeValue,
                b'"' => State::ExtQuoted,
                _ if is_tchar(byte) => State::ExtToken,
                _ => return Err(ChunkedError::InvalidExtension),
            },
            State::ExtToken => match byte {
                _ if is_tchar(byte) => State::ExtToken,
                _ => item_end(byte, false)?,
            },
            // Control characters other than HTAB never get here (`check_size_line_byte`), so
            // what remains is qdtext, except the quote, the backslash and a CR ending the line
            // inside the string.
            State::ExtQuoted => match byte {
                b'"' => State::ItemEnd { ws: false },
                b'\\' => State::ExtQuotedPair,
                CR => return Err(ChunkedError::InvalidExtension),
                _ => State::ExtQuoted,
            },
            State::ExtQuotedPair => match byte {
                CR => return Err(ChunkedError::InvalidExtension),
                _ => State::ExtQuoted,
            },
            State::SizeLf => match byte {
                LF if self.size == 0 => {
                    self.trailer_len = 0;
                    State::TrailerLineStart
                }
                LF => State::Data { remaining: self.size },
                _ => return Err(ChunkedError::BareCr),
            },
            State::DataCr => match byte {
                CR => State::DataLf,
                LF => return Err(ChunkedError::BareLf),
                _ => return Err(ChunkedError::MissingDataCrlf),
            },
            State::DataLf => match byte {
                LF => {
                    self.size = 0;
                    self.size_digits = 0;
                    self.line_len = 0;
                    State::SizeStart
                }
                _ => return Err(ChunkedError::BareCr),
            },
            State::TrailerLineStart => match byte {
                CR => State::FinalLf,
                LF => return Err(ChunkedError::BareLf),
                b' ' | b'\t' => return Err(ChunkedError::ObsFoldInTrailers),
                _ if is_tchar(byte) => State::TrailerName,
                _ => return Err(ChunkedError::InvalidTrailerLine),
            },
            State::TrailerName => match byte {
                _ if is_tchar(byte) => State::TrailerName,
                b':' => State::TrailerValue,
                LF => return Err(ChunkedError::BareLf),
                _ => return Err(ChunkedError::InvalidTrailerLine),
            },
            State::TrailerValue => match byte {
                CR => State::TrailerLf,
                LF => return Err(ChunkedError::BareLf),
                b'\t' => State::TrailerValue,
                _ if is_control(byte) => return Err(ChunkedError::ControlInTrailer),
                _ => State::TrailerValue,
            },
            State::TrailerLf => match byte {
                LF => State::TrailerLineStart,
                _ => return Err(ChunkedError::BareCr),
            },
            State::FinalLf => match byte {
                LF => State::Done,
                _ => return Err(ChunkedError::BareCr),
            },
            // `scan` handles these without stepping; keep them unchanged all the same.
            State::Data { .. } | State::Done | State::Failed(_) => return Ok(()),
        };
        Ok(())
    }

    /// Whether the scanner is inside a size line (before its CR).
    fn in_size_line(&self) -> bool {
        matches!(
            self.state,
            State::SizeStart
                | State::SizeDigits
                | State::ItemEnd { .. }
                | State::ExtBeforeName
                | State::ExtName
                | State::ExtAfterName
                | State::ExtBeforeValue
                | State::ExtToken
                | State::ExtQuoted
                | State::ExtQuotedPair
        )
    }

    /// Whether `byte`, the next one, belongs to a trailer field line: anything in one, and
    /// anything at a line start but the CR of the final empty line, which is not counted.
    fn in_trailer_line(&self, byte: u8) -> bool {
        match self.state {
            State::TrailerLineStart => byte != CR,
            State::TrailerName | State::TrailerValue | State::TrailerLf => true,
            _ => false,
        }
    }

    /// The checks every byte of a size line passes: line length, bare LF, control characters.
    fn check_size_line_byte(&mut self, byte: u8) -> Result<(), ChunkedError> {
        match byte {
            LF => Err(ChunkedError::BareLf),
            // The CR ends the line; whether it may end here is the state's call.
            CR => Ok(()),
            _ => {
                self.line_len += 1;
                if self.line_len > MAX_SIZE_LINE_BYTES {
                    Err(ChunkedError::SizeLineTooLong)
                } else if byte != b'\t' && is_control(byte) {
                    Err(ChunkedError::ControlInSizeLine)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Appends one hex digit to the chunk size.
    fn push_digit(&mut self, digit: u8) -> Result<(), ChunkedError> {
        if self.size == 0 && digit == 0 {
            // A leading zero: not significant (the line length still bounds them).
            return Ok(());
        }
        if self.size_digits >= MAX_SIZE_DIGITS {
            return Err(ChunkedError::SizeOverflow);
        }
        self.size_digits += 1;
        self.size = (self.size << 4) | u64::from(digit);
        Ok(())
    }
}

/// The next state after the size or a complete extension (`ws`: whitespace already followed
/// it), given the byte that ends it: more whitespace, `;` starting an extension, or the CR of
/// the line end, which may not follow whitespace.
fn item_end(byte: u8, ws: bool) -> Result<State, ChunkedError> {
    match byte {
        b' ' | b'\t' => Ok(State::ItemEnd { ws: true }),
        b';' => Ok(State::ExtBeforeName),
        CR if !ws => Ok(State::SizeLf),
        _ => Err(ChunkedError::InvalidExtension),
    }
}

/// The value of a hex digit, either case.
fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Whether `byte` is a `tchar` (RFC 9110 §5.6.2), the characters of a token.
fn is_tchar(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// Whether `byte` is a control character (RFC 5234 CTL: 0x00-0x1F and DEL).
fn is_control(byte: u8) -> bool {
    byte < 0x20 || byte == 0x7f
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Scans `input` in one call with a fresh scanner.
    fn scan_all(input: &[u8]) -> Result<Scanned, ChunkedError> {
        ChunkedScanner::new().scan(input)
    }

    /// Scans `input` one byte per call; the total consumed and the final `done`, or the error.
    fn scan_bytewise(input: &[u8]) -> Result<Scanned, ChunkedError> {
        let mut scanner = ChunkedScanner::new();
        let mut consumed = 0;
        for byte in input {
            consumed += scanner.scan(std::slice::from_ref(byte))?.consumed;
        }
        Ok(Scanned { consumed, done: scanner.is_done() })
    }

    /// Asserts that `input` is exactly one complete body, scanned whole and byte by byte.
    fn assert_complete(input: &[u8]) {
        let text = String::from_utf8_lossy(input);
        let whole = Scanned { consumed: input.len(), done: true };
        assert_eq!(scan_all(input), Ok(whole), "{text:?}");
        assert_eq!(scan_bytewise(input), Ok(whole), "{text:?}");
    }

    /// Asserts that `input` is rejected with `error`, scanned whole and byte by byte.
    fn assert_rejected(input: &[u8], error: ChunkedError) {
        let text = String::from_utf8_lossy(input);
        assert_eq!(scan_all(input), Err(error.clone()), "{text:?}");
        assert_eq!(scan_bytewise(input), Err(error), "{text:?}");
    }

    /// Asserts that `input` is accepted so far but the body is not complete.
    fn assert_incomplete(input: &[u8]) {
        let text = String::from_utf8_lossy(input);
        let partial = Scanned { consumed: input.len(), done: false };
        assert_eq!(scan_all(input), Ok(partial), "{text:?}");
        assert_eq!(scan_bytewise(input), Ok(partial), "{text:?}");
    }

    #[test]
    fn a_body_of_chunks_and_a_last_chunk_completes_at_its_final_crlf() {
        assert_complete(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
        assert_incomplete(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r");
        assert_incomplete(b"5\r\nhel");
    }

    #[test]
    fn an_empty_body_is_just_the_last_chunk_and_the_final_crlf() {
        assert_complete(b"0\r\n\r\n");
    }

    #[test]
    fn chunk_data_may_contain_crlf_and_anything_else() {
        assert_complete(b"8\r\n0\r\n\r\n\0\xff\n\r\n0\r\n\r\n");
        assert_rejected(b"7\r\n0\r\n\r\n\0\xff\n\r\n0\r\n\r\n", ChunkedError::BareLf);
    }

    #[test]
    fn hex_sizes_are_accepted_in_either_case() {
        let data = [b'x'; 0xab];
        for size in ["ab", "AB", "aB", "Ab"] {
            let mut body = format!("{size}\r\n").into_bytes();
            body.extend_from_slice(&data);
            body.extend_from_slice(b"\r\n0\r\n\r\n");
            assert_complete(&body);
        }
    }

    #[test]
    fn leading_zeros_do_not_count_toward_the_sixteen_digit_limit() {
        assert_complete(b"000000000000000000000003\r\nabc\r\n0\r\n\r\n");
        assert_incomplete(b"0000ffffffffffffffff\r\n");
    }

    #[test]
    fn the_last_chunk_may_be_several_zeros() {
        assert_complete(b"000\r\n\r\n");
        assert_complete(b"1\r\na\r\n00000000000000000000\r\n\r\n");
    }

    #[test]
    fn sixteen_hex_digits_are_the_largest_size() {
        assert_incomplete(b"ffffffffffffffff\r\n");
        assert_incomplete(b"FFFFFFFFFFFFFFFF\r\nsome data");
    }

    #[test]
    fn a_size_of_two_to_the_sixty_fourth_overflows() {
        assert_rejected(b"10000000000000000\r\n", ChunkedError::SizeOverflow);
        assert_rejected(b"fffffffffffffffff", ChunkedError::SizeOverflow);
        assert_rejected(b"00010000000000000000\r\n", ChunkedError::SizeOverflow);
    }

    #[test]
    fn a_size_line_without_hex_digits_is_rejected() {
        assert_rejected(b"\r\n", ChunkedError::NoSizeDigits);
        assert_rejected(b";ext\r\n", ChunkedError::NoSizeDigits);
        assert_rejected(b" 1\r\n", ChunkedError::NoSizeDigits);
        assert_rejected(b"x1\r\n", ChunkedError::NoSizeDigits);
        assert_rejected(b"-1\r\n", ChunkedError::NoSizeDigits);
        assert_rejected(b"+1\r\n", ChunkedError::NoSizeDigits);
        assert_rejected(b"1\r\na\r\n\r\n", ChunkedError::NoSizeDigits);
    }

    #[test]
    fn a_size_followed_by_a_non_hex_character_is_rejected() {
        assert_rejected(b"1g\r\n", ChunkedError::InvalidExtension);
        assert_rejected(b"0x1\r\n", ChunkedError::InvalidExtension);
        assert_rejected(b"1,2\r\n", ChunkedError::InvalidExtension);
    }

    #[test]
    fn token_extensions_are_accepted_with_optional_values_and_whitespace() {
        assert_complete(b"1;a\r\nx\r\n0;last\r\n\r\n");
        assert_complete(b"1;a=b\r\nx\r\n0\r\n\r\n");
        assert_complete(b"1;a;b=c;d\r\nx\r\n0\r\n\r\n");
        assert_complete(b"1 ; a = b ;\tc\t=\td ; e\r\nx\r\n0\r\n\r\n");
        assert_complete(b"1;!#$%&'*+-.^_`|~=!#$%&'*+-.^_`|~\r\nx\r\n0\r\n\r\n");
    }

    #[test]
    fn quoted_extension_values_may_contain_semicolons_equals_and_escapes() {
        assert_complete(b"1;a=\"x;y=z\"\r\nx\r\n0\r\n\r\n");
        assert_complete(b"1;a=\"\"\r\nx\r\n0\r\n\r\n");
        assert_complete(b"1;a=\"q\\\"r\\\\\";b=\" \t\xff\"\r\nx\r\n0\r\n\r\n");
        assert_complete(b"1;a=\"x\" ;b\r\nx\r\n0\r\n\r\n");
    }

    #[test]
    fn an_unterminated_quoted_value_is_rejected() {
        assert_rejected(b"1;a=\"x\r\nx\r\n", ChunkedError::InvalidExtension);
        assert_rejected(b"1;a=\"x\\\r\n", ChunkedError::InvalidExtension);
    }

    #[test]
    fn a_quoted_string_must_be_the_whole_value() {
        assert_rejected(b"1;a=\"x\"y\r\n", ChunkedError::InvalidExtension);
        assert_rejected(b"1;a=y\"x\"\r\n", ChunkedError::InvalidExtension);
        assert_rejected(b"1;\"a\"=b\r\n", ChunkedError::InvalidExtension);
    }

    #[test]
    fn extensions_without_a_name_or_value_are_rejected() {
        assert_rejected(b"1;\r\n", ChunkedError::InvalidExtension);
        assert_rejected(b"1; \r\n", ChunkedError::InvalidExtension);
        assert_rejected(b"1;=b\r\n", ChunkedError::InvalidExtension);
        assert_rejected(b"1;a=\r\n", ChunkedError::InvalidExtension);
        assert_rejected(b"1;a==b\r\n", ChunkedError::InvalidExtension);
        assert_rejected(b"1;a b\r\n", ChunkedError::InvalidExtension);
        assert_rejected(b"1 a\r\n", ChunkedError::InvalidExtension);
        assert_rejected(b"1;a=b c\r\n", ChunkedError::InvalidExtension);
        assert_rejected(b"1;a=(b)\r\n", ChunkedError::InvalidExtension);
    }

    #[test]
    fn whitespace_before_the_end_of_a_size_line_is_rejected() {
        assert_rejected(b"1 \r\n", ChunkedError::InvalidExtension);
        assert_rejected(b"1\t\r\n", ChunkedError::InvalidExtension);
        assert_rejected(b"1;a \r\n", ChunkedError::InvalidExtension);
        assert_rejected(b"1;a=b \r\n", ChunkedError::InvalidExtension);
        assert_rejected(b"1;a=\"b\" \r\n", ChunkedError::InvalidExtension);
    }

    #[test]
    fn control_characters_in_a_size_line_are_rejected() {
        assert_rejected(b"1\0\r\n", ChunkedError::ControlInSizeLine);
        assert_rejected(b"1;a=\x01\r\n", ChunkedError::ControlInSizeLine);
        assert_rejected(b"1;a=\"\0\"\r\n", ChunkedError::ControlInSizeLine);
        assert_rejected(b"1;a=\"\x1b\"\r\n", ChunkedError::ControlInSizeLine);
        assert_rejected(b"1;a=\"\x7f\"\r\n", ChunkedError::ControlInSizeLine);
        assert_rejected(b"1;a\x0b\r\n", ChunkedError::ControlInSizeLine);
    }

    #[test]
    fn a_bare_lf_in_a_size_line_is_rejected() {
        assert_rejected(b"1\nx\r\n0\r\n\r\n", ChunkedError::BareLf);
        assert_rejected(b"1;a\n", ChunkedError::BareLf);
        assert_rejected(b"1;a=\"x\ny\"\r\n", ChunkedError::BareLf);
        assert_rejected(b"\n", ChunkedError::BareLf);
    }

    #[test]
    fn a_cr_not_followed_by_lf_in_a_size_line_is_rejected() {
        assert_rejected(b"1\rx", ChunkedError::BareCr);
        assert_rejected(b"1;a\r\r\n", ChunkedError::BareCr);
        assert_rejected(b"1;a=\"x\ry\"\r\n", ChunkedError::InvalidExtension);
    }

    #[test]
    fn a_size_line_of_4096_bytes_is_accepted_and_one_byte_more_is_not() {
        let mut line = b"1;".to_vec();
        line.resize(MAX_SIZE_LINE_BYTES, b'a');
        let mut body = line.clone();
        body.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_complete(&body);

        let mut long = line;
        long.push(b'a');
        long.extend_from_slice(b"\r\nx\r\n0\r\n\r\n");
        assert_rejected(&long, ChunkedError::SizeLineTooLong);
    }

    #[test]
    fn leading_zeros_are_bounded_by_the_size_line_limit() {
        let mut zeros = vec![b'0'; MAX_SIZE_LINE_BYTES];
        zeros.extend_from_slice(b"\r\n\r\n");
        assert_complete(&zeros);
        let mut more = vec![b'0'; MAX_SIZE_LINE_BYTES + 1];
        more.extend_from_slice(b"\r\n\r\n");
        assert_rejected(&more, ChunkedError::SizeLineTooLong);
    }

    #[test]
    fn each_size_line_has_its_own_length_limit() {
        let mut line = b"1;".to_vec();
        line.resize(MAX_SIZE_LINE_BYTES, b'a');
        let mut body = Vec::new();
        for _ in 0..3 {
            body.extend_from_slice(&line);
            body.extend_from_slice(b"\r\nx\r\n");
        }
        body.extend_from_slice(b"0\r\n\r\n");
        assert_complete(&body);
    }

    #[test]
    fn chunk_data_must_be_followed_by_exactly_crlf() {
        assert_rejected(b"1\r\nab\r\n0\r\n\r\n", ChunkedError::MissingDataCrlf);
        assert_rejected(b"1\r\na \r\n", ChunkedError::MissingDataCrlf);
        assert_rejected(b"1\r\na\n0\r\n\r\n", ChunkedError::BareLf);
        assert_rejected(b"1\r\na\r0\r\n\r\n", ChunkedError::BareCr);
        assert_rejected(b"1\r\na\r\r\n", ChunkedError::BareCr);
        assert_rejected(b"1\r\na0\r\n\r\n", ChunkedError::MissingDataCrlf);
    }

    #[test]
    fn a_size_line_must_end_with_crlf_before_the_data() {
        assert_rejected(b"1\rax\r\n", ChunkedError::BareCr);
    }

    #[test]
    fn trailers_are_part_of_the_body() {
        assert_complete(b"0\r\nExpires: Wed, 21 Oct 2015 07:28:00 GMT\r\n\r\n");
        assert_complete(b"1\r\na\r\n0\r\nA: 1\r\nB:2\r\nC:\r\nD: \t x \xff\x80 y\t\r\n\r\n");
        assert_complete(b"0;ext=1\r\ngrpc-status: 0\r\ngrpc-message: \r\n\r\n");
        assert_complete(b"0\r\n!#$%&'*+-.^_`|~09AZaz: v\r\n\r\n");
        assert_incomplete(b"0\r\nA: 1\r\n");
        assert_incomplete(b"0\r\nA: 1\r\n\r");
    }

    #[test]
    fn trailers_with_obsolete_line_folding_are_rejected() {
        assert_rejected(b"0\r\nA: b\r\n c\r\n\r\n", ChunkedError::ObsFoldInTrailers);
        assert_rejected(b"0\r\nA: b\r\n\tc\r\n\r\n", ChunkedError::ObsFoldInTrailers);
        assert_rejected(b"0\r\n A: b\r\n\r\n", ChunkedError::ObsFoldInTrailers);
    }

    #[test]
    fn trailer_lines_that_are_not_name_colon_value_are_rejected() {
        assert_rejected(b"0\r\nA : b\r\n\r\n", ChunkedError::InvalidTrailerLine);
        assert_rejected(b"0\r\nA\t: b\r\n\r\n", ChunkedError::InvalidTrailerLine);
        assert_rejected(b"0\r\n: b\r\n\r\n", ChunkedError::InvalidTrailerLine);
        assert_rejected(b"0\r\nAb\r\n\r\n", ChunkedError::InvalidTrailerLine);
        assert_rejected(b"0\r\nA(b): c\r\n\r\n", ChunkedError::InvalidTrailerLine);
        assert_rejected(b"0\r\n\"A\": c\r\n\r\n", ChunkedError::InvalidTrailerLine);
        assert_rejected(b"0\r\n\xffA: c\r\n\r\n", ChunkedError::InvalidTrailerLine);
        assert_rejected(b"0\r\nA\0: c\r\n\r\n", ChunkedError::InvalidTrailerLine);
    }

    #[test]
    fn control_characters_in_trailer_values_are_rejected() {
        assert_rejected(b"0\r\nA: b\0c\r\n\r\n", ChunkedError::ControlInTrailer);
        assert_rejected(b"0\r\nA: \x1b[31m\r\n\r\n", ChunkedError::ControlInTrailer);
        assert_rejected(b"0\r\nA: \x7f\r\n\r\n", ChunkedError::ControlInTrailer);
    }

    #[test]
    fn bare_lf_and_lone_cr_in_trailers_are_rejected() {
        assert_rejected(b"0\r\nA: b\n\r\n", ChunkedError::BareLf);
        assert_rejected(b"0\r\nA\n", ChunkedError::BareLf);
        assert_rejected(b"0\r\nA: b\r\n\n", ChunkedError::BareLf);
        assert_rejected(b"0\r\n\n", ChunkedError::BareLf);
        assert_rejected(b"0\r\nA: b\rc\r\n\r\n", ChunkedError::BareCr);
        assert_rejected(b"0\r\n\rx", ChunkedError::BareCr);
        assert_rejected(b"0\r\n\r\r\n", ChunkedError::BareCr);
    }

    #[test]
    fn a_trailer_section_of_16_kib_is_accepted_and_one_byte_more_is_not() {
        /// One field line of exactly `len` bytes, CRLF included.
        fn line(len: usize) -> Vec<u8> {
            let mut line = b"A: ".to_vec();
            line.resize(len - 2, b'v');
            line.extend_from_slice(b"\r\n");
            line
        }
        let mut body = b"0\r\n".to_vec();
        body.extend_from_slice(&line(MAX_TRAILER_BYTES / 2));
        body.extend_from_slice(&line(MAX_TRAILER_BYTES / 2));
        body.extend_from_slice(b"\r\n");
        assert_complete(&body);

        let mut long = b"0\r\n".to_vec();
        long.extend_from_slice(&line(MAX_TRAILER_BYTES / 2));
        long.extend_from_slice(&line(MAX_TRAILER_BYTES / 2 + 1));
        long.extend_from_slice(b"\r\n");
        assert_rejected(&long, ChunkedError::TrailersTooLarge);
    }

    #[test]
    fn a_trailer_section_is_capped_even_without_a_line_end() {
        let mut body = b"0\r\nA: ".to_vec();
        body.resize(3 + MAX_TRAILER_BYTES + 1, b'v');
        assert_rejected(&body, ChunkedError::TrailersTooLarge);
    }

    #[test]
    fn consumed_stops_exactly_at_the_end_of_the_body() {
        let body = b"3;x=\"y\"\r\nabc\r\n0\r\nT: v\r\n\r\n";
        let mut input = body.to_vec();
        input.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(scan_all(&input), Ok(Scanned { consumed: body.len(), done: true }));

        let mut scanner = ChunkedScanner::new();
        let (head, tail) = input.split_at(body.len() - 1);
        assert_eq!(scanner.scan(head), Ok(Scanned { consumed: head.len(), done: false }));
        assert_eq!(scanner.scan(tail), Ok(Scanned { consumed: 1, done: true }));
    }

    #[test]
    fn the_next_message_may_itself_look_like_a_chunked_body() {
        let input = b"0\r\n\r\n0\r\n\r\n";
        assert_eq!(scan_all(input), Ok(Scanned { consumed: 5, done: true }));
    }

    #[test]
    fn scanning_after_done_consumes_nothing() {
        let mut scanner = ChunkedScanner::new();
        assert_eq!(scanner.scan(b"0\r\n\r\n"), Ok(Scanned { consumed: 5, done: true }));
        assert!(scanner.is_done());
        assert_eq!(scanner.scan(b"1\r\na\r\n"), Ok(Scanned { consumed: 0, done: true }));
        assert_eq!(scanner.scan(b""), Ok(Scanned { consumed: 0, done: true }));
        assert_eq!(scanner.scan(b"\0garbage"), Ok(Scanned { consumed: 0, done: true }));
    }

    #[test]
    fn scanning_nothing_changes_nothing() {
        let mut scanner = ChunkedScanner::default();
        assert_eq!(scanner.scan(b""), Ok(Scanned { consumed: 0, done: false }));
        assert!(!scanner.is_done());
        assert_eq!(scanner.scan(b"0\r\n\r\n"), Ok(Scanned { consumed: 5, done: true }));
    }

    #[test]
    fn errors_are_sticky() {
        let mut scanner = ChunkedScanner::new();
        assert_eq!(scanner.scan(b"1\r\nab"), Err(ChunkedError::MissingDataCrlf));
        assert!(!scanner.is_done());
        assert_eq!(scanner.scan(b"\r\n0\r\n\r\n"), Err(ChunkedError::MissingDataCrlf));
        assert_eq!(scanner.scan(b""), Err(ChunkedError::MissingDataCrlf));
    }

    #[test]
    fn a_huge_chunk_is_skipped_in_one_step_per_call() {
        let mut scanner = ChunkedScanner::new();
        assert_eq!(scanner.scan(b"fffffffffffffff0\r\n").map(|s| s.done), Ok(false));
        let block = vec![0u8; 1 << 20];
        for _ in 0..4 {
            assert_eq!(scanner.scan(&block), Ok(Scanned { consumed: block.len(), done: false }));
        }
        assert_eq!(scanner.state, State::Data { remaining: 0xffff_ffff_ffff_fff0 - (4 << 20) });
    }

    #[test]
    fn a_chunk_split_across_calls_resumes_where_it_stopped() {
        let mut scanner = ChunkedScanner::new();
        assert_eq!(scanner.scan(b"a\r\n0123"), Ok(Scanned { consumed: 7, done: false }));
        assert_eq!(scanner.scan(b"45678"), Ok(Scanned { consumed: 5, done: false }));
        assert_eq!(scanner.scan(b"9\r"), Ok(Scanned { consumed: 2, done: false }));
        assert_eq!(scanner.scan(b"\n0\r\n\r\nNEXT"), Ok(Scanned { consumed: 6, done: true }));
    }

    #[test]
    fn errors_have_messages() {
        assert_eq!(
            ChunkedError::SizeOverflow.to_string(),
            "chunk size has more than 16 significant hex digits (overflows u64)"
        );
        assert_eq!(
            ChunkedError::BareLf.to_string(),
            "bare LF (not preceded by CR) in chunked framing"
        );
    }

    // --- property tests ------------------------------------------------------------------

    /// One chunk: its data, how its size is spelled, and its extensions.
    #[derive(Debug, Clone)]
    struct Chunk {
        data: Vec<u8>,
        uppercase: bool,
        leading_zeros: usize,
        extensions: String,
    }

    /// A valid body: its chunks, the last chunk's spelling and extensions, and its trailers.
    #[derive(Debug, Clone)]
    struct Body {
        chunks: Vec<Chunk>,
        last_zeros: usize,
        last_extensions: String,
        trailers: Vec<String>,
    }

    impl Body {
        fn encode(&self) -> Vec<u8> {
            let mut out = Vec::new();
            for chunk in &self.chunks {
                let zeros = "0".repeat(chunk.leading_zeros);
                let size = if chunk.uppercase {
                    format!("{zeros}{:X}", chunk.data.len())
                } else {
                    format!("{zeros}{:x}", chunk.data.len())
                };
                out.extend_from_slice(size.as_bytes());
                out.extend_from_slice(chunk.extensions.as_bytes());
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&chunk.data);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice("0".repeat(self.last_zeros).as_bytes());
            out.extend_from_slice(self.last_extensions.as_bytes());
            out.extend_from_slice(b"\r\n");
            for trailer in &self.trailers {
                out.extend_from_slice(trailer.as_bytes());
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"\r\n");
            out
        }
    }

    const TOKEN: &str = "[!#$%&'*+.^_`|~0-9A-Za-z-]{1,8}";
    /// A quoted string: qdtext (ASCII only, for the regex) and quoted pairs.
    const QUOTED: &str = "\"([\t !#-\\[\\]-~]|\\\\[\t -~]){0,8}\"";
    const BWS: &str = "[ \t]{0,2}";

    /// One extension, `BWS ";" BWS name [ BWS "=" BWS value ]`.
    fn extension() -> impl Strategy<Value = String> {
        let value = prop_oneof![TOKEN, QUOTED];
        (BWS, BWS, TOKEN, proptest::option::of((BWS, BWS, value))).prop_map(
            |(ws1, ws2, name, value)| match value {
                None => format!("{ws1};{ws2}{name}"),
                Some((ws3, ws4, value)) => format!("{ws1};{ws2}{name}{ws3}={ws4}{value}"),
            },
        )
    }

    fn extensions() -> impl Strategy<Value = String> {
        proptest::collection::vec(extension(), 0..3).prop_map(|exts| exts.concat())
    }

    fn chunk() -> impl Strategy<Value = Chunk> {
        (proptest::collection::vec(any::<u8>(), 1..300), any::<bool>(), 0..3usize, extensions())
            .prop_map(|(data, uppercase, leading_zeros, extensions)| Chunk {
                data,
                uppercase,
                leading_zeros,
                extensions,
            })
    }

    fn trailer() -> impl Strategy<Value = String> {
        (TOKEN, "[ \t]{0,2}", "[\t !-~\u{80}-\u{ff}]{0,20}")
            .prop_map(|(name, ws, value)| format!("{name}:{ws}{value}"))
    }

    fn body() -> impl Strategy<Value = Body> {
        (
            proptest::collection::vec(chunk(), 0..6),
            1..4usize,
            extensions(),
            proptest::collection::vec(trailer(), 0..4),
        )
            .prop_map(|(chunks, last_zeros, last_extensions, trailers)| Body {
                chunks,
                last_zeros,
                last_extensions,
                trailers,
            })
    }

    /// Splits `input` at the given points (taken modulo its length, in any order).
    fn pieces(input: &[u8], cuts: &[usize]) -> Vec<std::ops::Range<usize>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        cuts.push(0);
        cuts.push(input.len());
        cuts.sort_unstable();
        cuts.windows(2).map(|w| w[0]..w[1]).collect()
    }

    /// Bytes that reach deep into the grammar more often than uniform random bytes do.
    fn framing_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            4 => proptest::sample::select(b"0123456789aAfF;= \t\"\\\r\n:xX-".to_vec()),
            1 => any::<u8>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn valid_bodies_split_anywhere_end_exactly_at_their_encoded_length(
            body in body(),
            after in proptest::collection::vec(any::<u8>(), 0..40),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let encoded = body.encode();
            let mut input = encoded.clone();
            input.extend_from_slice(&after);

            let mut scanner = ChunkedScanner::new();
            let mut consumed = 0;
            for range in pieces(&input, &cuts) {
                let was_done = scanner.is_done();
                let piece = &input[range.clone()];
                let scanned = scanner.scan(piece).unwrap();
                if was_done {
                    prop_assert_eq!(scanned, Scanned { consumed: 0, done: true });
                } else if range.end < encoded.len() {
                    prop_assert_eq!(scanned, Scanned { consumed: piece.len(), done: false });
                } else {
                    prop_assert_eq!(
                        scanned,
                        Scanned { consumed: encoded.len() - range.start, done: true }
                    );
                }
                consumed += scanned.consumed;
            }
            prop_assert_eq!(consumed, encoded.len());
            prop_assert!(scanner.is_done());
        }

        #[test]
        fn the_data_ranges_of_a_body_split_anywhere_are_its_chunks_data(
            body in body(),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let encoded = body.encode();
            let mut scanner = ChunkedScanner::new();
            let mut decoded = Vec::new();
            for range in pieces(&encoded, &cuts) {
                let piece = &encoded[range];
                scanner.scan_data(piece, |data| decoded.extend_from_slice(&piece[data])).unwrap();
            }
            let expected: Vec<u8> = body.chunks.iter().flat_map(|c| c.data.clone()).collect();
            prop_assert_eq!(decoded, expected);
            prop_assert!(scanner.is_done());
        }

        #[test]
        fn the_trailer_pieces_of_a_body_split_anywhere_are_its_trailer_fields(
            body in body(),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let encoded = body.encode();
            let mut scanner = ChunkedScanner::new();
            let (mut decoded, mut section) = (Vec::new(), Vec::new());
            for range in pieces(&encoded, &cuts) {
                let piece = &encoded[range];
                scanner
                    .scan_pieces(piece, |p| match p {
                        Piece::Data(r) => decoded.extend_from_slice(&piece[r]),
                        Piece::Trailer(r) => section.extend_from_slice(&piece[r]),
                    })
                    .unwrap();
            }
            let expected: Vec<u8> = body.chunks.iter().flat_map(|c| c.data.clone()).collect();
            prop_assert_eq!(decoded, expected);
            let fields: Vec<(Vec<u8>, Vec<u8>)> =
                trailer_fields(&section).map(|(n, v)| (n.to_vec(), v.to_vec())).collect();
            let wanted: Vec<(Vec<u8>, Vec<u8>)> = body
                .trailers
                .iter()
                .map(|t| {
                    let (n, v) = t.split_once(':').unwrap();
                    (n.as_bytes().to_vec(), v.trim_matches([' ', '\t']).as_bytes().to_vec())
                })
                .collect();
            prop_assert_eq!(fields, wanted);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_never_overconsume(
            input in proptest::collection::vec(any::<u8>(), 0..200),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut scanner = ChunkedScanner::new();
            for range in pieces(&input, &cuts) {
                let piece = &input[range];
                match scanner.scan(piece) {
                    Ok(scanned) => prop_assert!(scanned.consumed <= piece.len()),
                    Err(_) => break,
                }
            }
        }

        #[test]
        fn framing_like_bytes_scan_the_same_whole_or_in_pieces(
            input in proptest::collection::vec(framing_byte(), 0..200),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let whole = scan_all(&input);
            let mut scanner = ChunkedScanner::new();
            let mut consumed = 0;
            let mut split = Ok(());
            for range in pieces(&input, &cuts) {
                let piece = &input[range];
                match scanner.scan(piece) {
                    Ok(scanned) => {
                        prop_assert!(scanned.consumed <= piece.len());
                        consumed += scanned.consumed;
                    }
                    Err(error) => {
                        split = Err(error);
                        break;
                    }
                }
            }
            let split = split.map(|()| Scanned { consumed, done: scanner.is_done() });
            prop_assert_eq!(whole, split);
        }
    }
}
