//! Request heads and trailers as decoded from HPACK, checked against RFC 9113 §8.2–§8.3.
//!
//! A [`Fields`] list keeps every name and value in one byte buffer with offsets beside it —
//! two allocations per head however many fields. [`HeadBuilder`] receives fields from the
//! HPACK decoder one by one, keeps decoding going after a violation (the HPACK state must stay
//! in step) and remembers the first one; the connection turns it into a stream error
//! (PROTOCOL_ERROR, "malformed", §8.1.1).

/// A list of header fields in one buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    buf: Vec<u8>,
    /// (name start, value start, value end) per field.
    spans: Vec<(u32, u32, u32)>,
}

impl Fields {
    /// An empty list.
    pub fn new() -> Fields {
        Fields::default()
    }

    /// An empty list with room for `bytes` of names and values in `fields` fields.
    pub fn with_capacity(bytes: usize, fields: usize) -> Fields {
        Fields { buf: Vec::with_capacity(bytes), spans: Vec::with_capacity(fields) }
    }

    /// Appends a field.
    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let start = self.buf.len() as u32;
        self.buf.extend_from_slice(name);
        let mid = self.buf.len() as u32;
        self.buf.extend_from_slice(value);
        self.spans.push((start, mid, self.buf.len() as u32));
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are no fields.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The fields in order, as `(name, value)`.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone + '_ {
        self.spans.iter().map(|&(a, b, c)| {
            (&self.buf[a as usize..b as usize], &self.buf[b as usize..c as usize])
        })
    }

    /// The first value of `name` (lowercase).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    fn range(&self, r: (u32, u32)) -> &[u8] {
        &self.buf[r.0 as usize..r.1 as usize]
    }

    fn push_raw(&mut self, value: &[u8]) -> (u32, u32) {
        let start = self.buf.len() as u32;
        self.buf.extend_from_slice(value);
        (start, self.buf.len() as u32)
    }
}

/// A validated request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    fields: Fields,
    method: (u32, u32),
    scheme: Option<(u32, u32)>,
    path: Option<(u32, u32)>,
    authority: Option<(u32, u32)>,
    content_length: Option<u64>,
}

impl RequestHead {
    /// `:method`.
    pub fn method(&self) -> &[u8] {
        self.fields.range(self.method)
    }

    /// `:scheme` (absent for CONNECT).
    pub fn scheme(&self) -> Option<&[u8]> {
        self.scheme.map(|r| self.fields.range(r))
    }

    /// `:path` (absent for CONNECT).
    pub fn path(&self) -> Option<&[u8]> {
        self.path.map(|r| self.fields.range(r))
    }

    /// `:authority`, if sent.
    pub fn authority(&self) -> Option<&[u8]> {
        self.authority.map(|r| self.fields.range(r))
    }

    /// The regular (non-pseudo) fields.
    pub fn fields(&self) -> &Fields {
        &self.fields
    }

    /// The declared `content-length`, if any.
    pub fn content_length(&self) -> Option<u64> {
        self.content_length
    }
}

/// Why a head is malformed.
pub type Malformed = &'static str;

/// Collects fields of one request head or trailer block and checks them.
#[derive(Debug)]
pub struct HeadBuilder {
    trailers: bool,
    fields: Fields,
    method: Option<(u32, u32)>,
    scheme: Option<(u32, u32)>,
    path: Option<(u32, u32)>,
    authority: Option<(u32, u32)>,
    host: Option<(u32, u32)>,
    content_length: Option<u64>,
    seen_regular: bool,
    error: Option<Malformed>,
}

/// Whether `b` may appear in a field name as HTTP/2 sends it (token characters, lowercase).
const fn name_byte_ok(b: u8) -> bool {
    matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' | b'^' | b'_' | b'`' | b'|' | b'~')
}

/// [`name_byte_ok`] for every byte: one load per byte where the range checks were a chain of
/// compares (field names are checked on every head, both ways).
static NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = name_byte_ok(b as u8);
        b += 1;
    }
    table
};

/// Checks a field value per RFC 9113 §8.2.1: no NUL, CR or LF, no surrounding whitespace.
pub fn value_ok(v: &[u8]) -> bool {
    let edge_ok = |b: Option<&u8>| !matches!(b, Some(b' ') | Some(b'\t'));
    edge_ok(v.first()) && edge_ok(v.last()) && !has_nul_cr_lf(v)
}

/// Whether `v` holds a NUL, CR or LF, the bytes no field value may carry (§8.2.1). Eight
/// bytes at a time: every value of every head is checked, both ways, on receipt and on send.
#[inline]
pub fn has_nul_cr_lf(v: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    // Exactly when some byte of `x` is zero (the borrow can only run past a zero byte).
    let has_zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS != 0;
    let mut words = v.chunks_exact(8);
    for word in &mut words {
        let mut bytes = [0; 8];
        bytes.copy_from_slice(word);
        let x = u64::from_ne_bytes(bytes);
        if has_zero(x)
            || has_zero(x ^ (ONES * u64::from(b'\r')))
            || has_zero(x ^ (ONES * u64::from(b'\n')))
        {
            return true;
        }
    }
    words.remainder().iter().any(|&b| b == 0 || b == b'\r' || b == b'\n')
}

/// Whether a field name is valid as HTTP/2 sends it (non-empty, lowercase token).
pub fn name_ok(n: &[u8]) -> bool {
    !n.is_empty() && n.iter().all(|&b| NAME_BYTES[b as usize])
}

/// Connection-specific fields HTTP/2 forbids (§8.2.2).
pub fn connection_specific(name: &[u8]) -> bool {
    matches!(
        name,
        b"connection" | b"proxy-connection" | b"keep-alive" | b"transfer-encoding" | b"upgrade"
    )
}

/// Parses a content-length value (digits only, no overflow).
fn parse_content_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |acc, &d| acc.checked_mul(10)?.checked_add((d - b'0') as u64))
}

/// Checks a regular (non-pseudo) field of a request or a response head (§8.2.1, §8.2.2):
/// a lowercase token name, not connection-specific, a value without NUL, CR, LF or
/// surrounding whitespace. Inlined: it is on every field's path (callgrind counts it).
#[inline]
pub(crate) fn check_regular(name: &[u8], value: &[u8]) -> Result<(), Malformed> {
    if !name_ok(name) {
        return Err("field name not a lowercase token");
    }
    if connection_specific(name) {
        return Err("connection-specific field");
    }
    if !value_ok(value) {
        return Err("field value with NUL, CR, LF or surrounding whitespace");
    }
    Ok(())
}

/// Takes a `content-length` value into the one a head declared so far: repeated values must
/// agree (§8.1.1).
pub(crate) fn content_length(seen: Option<u64>, value: &[u8]) -> Result<u64, Malformed> {
    match parse_content_length(value) {
        Some(n) if seen.is_none_or(|m| m == n) => Ok(n),
        _ => Err("invalid or conflicting content-length"),
    }
}

impl HeadBuilder {
    /// A builder for a request head.
    pub fn request() -> HeadBuilder {
        HeadBuilder::new(false)
    }

    /// A builder for a trailer block.
    pub fn trailers() -> HeadBuilder {
        HeadBuilder::new(true)
    }

    fn new(trailers: bool) -> HeadBuilder {
        HeadBuilder {
            trailers,
            // A usual request head in one allocation each (no regrowth while decoding).
            fields: if trailers {
                Fields::with_capacity(64, 2)
            } else {
                Fields::with_capacity(512, 16)
            },
            method: None,
            scheme: None,
            path: None,
            authority: None,
            host: None,
            content_length: None,
            seen_regular: false,
            error: None,
        }
    }

    fn fail(&mut self, why: Malformed) {
        self.error.get_or_insert(why);
    }

    /// Takes one decoded field.
    pub fn field(&mut self, name: &[u8], value: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if let Some(pseudo) = name.strip_prefix(b":") {
            if self.trailers {
                return self.fail("pseudo-header in trailers");
            }
            if self.seen_regular {
                return self.fail("pseudo-header after a regular field");
            }
            let slot = match pseudo {
                b"method" => &mut self.method,
                b"scheme" => &mut self.scheme,
                b"path" => &mut self.path,
                b"authority" => &mut self.authority,
                b"protocol" => return self.fail("extended CONNECT (:protocol) is not enabled"),
                _ => return self.fail("unknown pseudo-header"),
            };
            if slot.is_some() {
                return self.fail("duplicate pseudo-header");
            }
            if !value_ok(value) {
                return self.fail("invalid pseudo-header value");
            }
            let r = self.fields.push_raw(value);
            match pseudo {
                b"method" => self.method = Some(r),
                b"scheme" => self.scheme = Some(r),
                b"path" => self.path = Some(r),
                _ => self.authority = Some(r),
            }
            return;
        }
        self.seen_regular = true;
        if let Err(why) = check_regular(name, value) {
            return self.fail(why);
        }
        match name {
            b"te" if !value.eq_ignore_ascii_case(b"trailers") => {
                return self.fail("te other than trailers")
            }
            b"content-length" => match content_length(self.content_length, value) {
                Ok(n) => self.content_length = Some(n),
                Err(why) => return self.fail(why),
            },
            _ => {}
        }
        let start = self.fields.buf.len() as u32 + name.len() as u32;
        self.fields.push(name, value);
        if name == b"host" && self.host.is_none() {
            self.host = Some((start, start + value.len() as u32));
        }
    }

    /// Finishes a request head: checks the pseudo-headers (§8.3.1, §8.5 for CONNECT).
    pub fn finish_request(self) -> Result<RequestHead, Malformed> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let method = self.method.ok_or("missing :method")?;
        let m = self.fields.range(method);
        if m.is_empty()
            || !m.iter().all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return Err("invalid :method");
        }
        if m == b"CONNECT" {
            if self.scheme.is_some() || self.path.is_some() {
                return Err("CONNECT with :scheme or :path");
            }
            if self.authority.is_none() {
                return Err("CONNECT without :authority");
            }
        } else {
            let scheme = self.scheme.ok_or("missing :scheme")?;
            let path = self.fields.range(self.path.ok_or("missing :path")?);
            if path.is_empty() {
                return Err("empty :path");
            }
            let s = self.fields.range(scheme);
            if (s == b"http" || s == b"https")
                && !(path[0] == b'/' || (path == b"*" && m == b"OPTIONS"))
            {
                return Err(":path not origin-form or asterisk-form");
            }
        }
        if let (Some(a), Some(h)) = (self.authority, self.host) {
            if !self.fields.range(a).eq_ignore_ascii_case(self.fields.range(h)) {
                return Err(":authority and host differ");
            }
        }
        // Pseudo values sit in `buf` but not in `spans`: `fields()` lists regular fields only.
        Ok(RequestHead {
            method,
            scheme: self.scheme,
            path: self.path,
            authority: self.authority,
            content_length: self.content_length,
            fields: self.fields,
        })
    }

    /// Finishes a trailer block.
    pub fn finish_trailers(self) -> Result<Fields, Malformed> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.fields),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn word_at_a_time_finds_nul_cr_lf_as_a_byte_loop_does(
            v in proptest::collection::vec(prop_oneof![Just(0u8), Just(b'\r'), Just(b'\n'), any::<u8>(), 0x20u8..0x7f], 0..40)
        ) {
            let bytewise = v.iter().any(|&b| b == 0 || b == b'\r' || b == b'\n');
            prop_assert_eq!(has_nul_cr_lf(&v), bytewise);
        }
    }

    fn build(fields: &[(&str, &str)]) -> Result<RequestHead, Malformed> {
        let mut b = HeadBuilder::request();
        for (n, v) in fields {
            b.field(n.as_bytes(), v.as_bytes());
        }
        b.finish_request()
    }

    const GET: [(&str, &str); 4] =
        [(":method", "GET"), (":scheme", "https"), (":path", "/a?b"), (":authority", "x.test")];

    #[test]
    fn valid_get_exposes_pseudo_and_regular_fields() {
        let mut f = GET.to_vec();
        f.push(("accept", "*/*"));
        f.push(("content-length", "0"));
        let head = build(&f).unwrap();
        assert_eq!(head.method(), b"GET");
        assert_eq!(head.path(), Some(&b"/a?b"[..]));
        assert_eq!(head.authority(), Some(&b"x.test"[..]));
        assert_eq!(head.fields().len(), 2);
        assert_eq!(head.fields().get(b"accept"), Some(&b"*/*"[..]));
        assert_eq!(head.content_length(), Some(0));
    }

    #[test]
    fn malformed_requests_are_refused() {
        let with = |extra: (&'static str, &'static str)| {
            let mut f = GET.to_vec();
            f.push(extra);
            build(&f)
        };
        assert!(with(("Accept", "x")).is_err(), "uppercase name");
        assert!(with(("connection", "close")).is_err());
        assert!(with(("te", "gzip")).is_err());
        assert!(with(("te", "trailers")).is_ok());
        assert!(with(("x", "a\r\nb")).is_err());
        assert!(with(("x", " padded")).is_err());
        assert!(with((":path", "/again")).is_err(), "duplicate and after regular");
        assert!(with(("host", "other.test")).is_err(), "host differs from :authority");
        assert!(with(("host", "x.test")).is_ok());
        assert!(with(("host", "X.Test")).is_ok(), "host names compare case-insensitively");
        assert!(with(("te", "Trailers")).is_ok());
        assert!(with(("content-length", "12a")).is_err());
        assert!(build(&[(":method", "GET"), (":path", "/")]).is_err(), "no :scheme");
        assert!(build(&[(":method", "GET"), (":scheme", "https"), (":path", "")]).is_err());
        assert!(build(&[(":method", "GET"), (":scheme", "https"), (":path", "x")]).is_err());
        assert!(build(&[(":method", "OPTIONS"), (":scheme", "https"), (":path", "*")]).is_ok());
        assert!(build(&[(":method", "GET"), (":scheme", "https"), (":path", "/"), (":foo", "x")])
            .is_err());
    }

    #[test]
    fn connect_rules_and_extended_connect_refused() {
        assert!(build(&[(":method", "CONNECT"), (":authority", "h:443")]).is_ok());
        assert!(build(&[(":method", "CONNECT"), (":authority", "h:443"), (":path", "/")]).is_err());
        assert!(build(&[(":method", "CONNECT")]).is_err());
        let ext = build(&[
            (":method", "CONNECT"),
            (":protocol", "websocket"),
            (":scheme", "https"),
            (":path", "/"),
            (":authority", "h"),
        ]);
        assert_eq!(ext.unwrap_err(), "extended CONNECT (:protocol) is not enabled");
    }

    #[test]
    fn trailers_refuse_pseudo_headers() {
        let mut b = HeadBuilder::trailers();
        b.field(b"grpc-status", b"0");
        assert_eq!(b.finish_trailers().unwrap().len(), 1);
        let mut b = HeadBuilder::trailers();
        b.field(b":status", b"200");
        assert!(b.finish_trailers().is_err());
    }
}
