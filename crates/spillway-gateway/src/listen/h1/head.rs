//! Parsed HTTP/1.1 request and response heads, as spans into the read buffer.
//!
//! The lean path parses with `httparse` and keeps only offsets (no `HeaderMap`, no copies):
//! the head is rewritten straight from the buffer into the outgoing bytes. While parsing,
//! each field is classified once by name, so framing (`Content-Length`, `Transfer-Encoding`),
//! hop-by-hop headers and the few headers the proxy edits are known without a second scan.
//!
//! The lean path only takes requests it can frame without doubt. Anything else — a parse
//! error, `Transfer-Encoding`, `Expect`, `Upgrade`, HTTP/1.0, a target that is not
//! origin-form or holds a fragment, several `Host` or differing `Content-Length` values — is
//! [`RequestParse::Unusual`]: the connection is handed to hyper, which answers it (a 400, a
//! 431, or a correct exchange) exactly as on the general path.

pub use crate::proxy::headers::{ConnectionOptions, FieldKind};
use crate::route::HeaderLookup;
use http::{HeaderName, Method};

/// Most header fields in a head (hyper's default too).
pub const MAX_FIELDS: usize = 100;

/// A byte range of the buffer a head was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn within(base: &[u8], part: &[u8]) -> Span {
        let start = (part.as_ptr() as usize).saturating_sub(base.as_ptr() as usize);
        Span { start: start as u32, end: (start + part.len()) as u32 }
    }

    /// The bytes `start..end`.
    pub(crate) fn range(start: usize, end: usize) -> Span {
        Span { start: start as u32, end: end as u32 }
    }

    /// The bytes of this span in `buf` (empty if `buf` is too short, which cannot happen for
    /// the buffer the head was parsed from).
    #[inline]
    pub fn of<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        buf.get(self.start as usize..self.end as usize).unwrap_or(&[])
    }

    /// Offset of the first byte.
    pub fn start(&self) -> usize {
        self.start as usize
    }

    /// Offset just past the last byte.
    pub fn end(&self) -> usize {
        self.end as usize
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        (self.end - self.start) as usize
    }

    /// Whether the span is empty.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// One header field.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// Name as sent (case kept).
    pub name: Span,
    /// Value.
    pub value: Span,
    /// What the field is to the proxy.
    pub kind: FieldKind,
}

/// A complete request head the lean path can proxy.
#[derive(Debug)]
pub struct RequestHead {
    /// Bytes of the head, final CRLF included.
    pub len: usize,
    /// Method.
    pub method: Method,
    /// The method as sent.
    pub method_span: Span,
    /// The origin-form target (path and query).
    pub target: Span,
    /// The path part of the target (before `?`).
    pub path: Span,
    /// The body's length (0 when absent).
    pub content_length: u64,
    /// `Host`, if sent.
    pub host: Option<Span>,
    /// What `Connection` asked for.
    pub connection: ConnectionOptions,
}

/// The value of the first field of `kind`.
pub fn first(fields: &[Field], kind: FieldKind) -> Option<Span> {
    fields.iter().find(|f| f.kind == kind).map(|f| f.value)
}

/// Result of parsing the start of a buffer as a request head.
#[derive(Debug)]
pub enum RequestParse {
    /// A complete head the lean path handles.
    Complete(RequestHead),
    /// More bytes are needed.
    Partial,
    /// Something the lean path leaves to hyper (see the module docs), with why.
    Unusual(&'static str),
}

/// Parses a request head at the start of `buf`, filling `fields` (cleared first) with its
/// header fields in order.
pub fn parse_request(buf: &[u8], fields: &mut Vec<Field>) -> RequestParse {
    // Uninitialised slots: zero-filling 100 headers on every parse cost more than the parse.
    let mut raw = [const { std::mem::MaybeUninit::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return RequestParse::Partial,
        Err(_) => return RequestParse::Unusual("malformed or oversized head"),
    };
    if req.version != Some(1) {
        return RequestParse::Unusual("HTTP/1.0");
    }
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return RequestParse::Unusual("incomplete request line");
    };
    if !target.starts_with('/') {
        return RequestParse::Unusual("target not in origin form");
    }
    // Not allowed in a request target (RFC 9112 §3.2), yet `httparse` takes it while hyper's
    // `Uri` drops it: routed here, `/a#x` would not be the `/a` the hyper path routes (found by
    // fuzz/router). Hyper answers it, as for any other unusual head.
    if target.contains('#') {
        return RequestParse::Unusual("fragment in target");
    }
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return RequestParse::Unusual("bad method");
    };
    if method == Method::CONNECT {
        return RequestParse::Unusual("CONNECT");
    }
    let method_span = Span::within(buf, req.method.unwrap_or_default().as_bytes());
    let target_span = Span::within(buf, target.as_bytes());
    let path_len = target.bytes().position(|b| b == b'?').unwrap_or(target.len());
    let path = Span::within(buf, &target.as_bytes()[..path_len]);
    fields.clear();
    let mut content_length: Option<u64> = None;
    let mut host = None;
    let mut connection = ConnectionOptions::default();
    for h in req.headers.iter() {
        let kind = FieldKind::of(h.name.as_bytes());
        match kind {
            FieldKind::ContentLength => match parse_content_length(h.value) {
                Some(n) if content_length.is_none_or(|prev| prev == n) => content_length = Some(n),
                _ => return RequestParse::Unusual("bad or conflicting Content-Length"),
            },
            FieldKind::TransferEncoding => return RequestParse::Unusual("Transfer-Encoding"),
            FieldKind::Expect => return RequestParse::Unusual("Expect"),
            FieldKind::Upgrade => return RequestParse::Unusual("Upgrade"),
            FieldKind::Host => {
                if host.is_some() {
                    return RequestParse::Unusual("several Host fields");
                }
                host = Some(Span::within(buf, h.value));
            }
            FieldKind::Connection => connection.add(h.value),
            _ => {}
        }
        fields.push(Field {
            name: Span::within(buf, h.name.as_bytes()),
            value: Span::within(buf, h.value),
            kind,
        });
    }
    if connection.upgrade {
        return RequestParse::Unusual("Connection: upgrade");
    }
    RequestParse::Complete(RequestHead {
        len,
        method,
        method_span,
        target: target_span,
        path,
        content_length: content_length.unwrap_or(0),
        host,
        connection,
    })
}

/// A `Content-Length` value: digits only (no sign, no spaces inside), at most 19 of them.
pub fn parse_content_length(value: &[u8]) -> Option<u64> {
    let v = value.trim_ascii();
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    v.iter().try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// How a response body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    /// No body (HEAD, 1xx, 204, 304).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding (passed through unchanged).
    Chunked,
    /// Until the upstream closes the connection.
    UntilClose,
}

/// A complete response head from an upstream.
#[derive(Debug)]
pub struct ResponseHead {
    /// Bytes of the head, final CRLF included.
    pub len: usize,
    /// Status code.
    pub status: u16,
    /// Reason phrase as sent.
    pub reason: Span,
    /// HTTP/1.0 (0) or HTTP/1.1 (1).
    pub minor_version: u8,
    /// How the body is delimited.
    pub framing: ResponseFraming,
    /// What `Connection` asked for.
    pub connection: ConnectionOptions,
    /// Whether an `x-request-id` field is present.
    pub has_request_id: bool,
    /// Whether a `Date` field is present.
    pub has_date: bool,
}

impl ResponseHead {
    /// Whether the upstream connection can carry another request after this response.
    pub fn reusable(&self) -> bool {
        let persistent = if self.minor_version == 0 {
            self.connection.keep_alive && !self.connection.close
        } else {
            !self.connection.close
        };
        persistent && self.framing != ResponseFraming::UntilClose
    }

    /// Whether this is an interim (1xx) response, to be followed by the final one.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status)
    }
}

/// Why an upstream's response head cannot be proxied (the client gets a 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    /// Not a valid HTTP/1.x response head.
    #[error("malformed response head")]
    Malformed,
    /// More header fields than [`MAX_FIELDS`].
    #[error("too many response header fields")]
    TooManyFields,
    /// `Content-Length` invalid, or several different values.
    #[error("bad or conflicting Content-Length in response")]
    BadContentLength,
    /// Both `Transfer-Encoding` and `Content-Length` (ambiguous framing).
    #[error("both Transfer-Encoding and Content-Length in response")]
    AmbiguousFraming,
    /// `101 Switching Protocols` to a request that did not ask for an upgrade.
    #[error("unexpected 101 Switching Protocols")]
    UnexpectedUpgrade,
}

/// Result of parsing the start of a buffer as a response head.
#[derive(Debug)]
pub enum ResponseParse {
    /// A complete head.
    Complete(ResponseHead),
    /// More bytes are needed.
    Partial,
}

/// Whether a response with `status` has no body whatever its fields say: the answer to a
/// `HEAD` request (`head_request`), a 1xx, 204 or 304 (RFC 9112 §6.3). Both upstream protocols
/// frame by it.
pub(crate) fn response_has_no_body(status: u16, head_request: bool) -> bool {
    head_request || (100..200).contains(&status) || status == 204 || status == 304
}

/// Parses a response head at the start of `buf`, for a request with method `HEAD` when
/// `head_request`, filling `fields` (cleared first) with its header fields in order.
pub fn parse_response(
    buf: &[u8],
    head_request: bool,
    fields: &mut Vec<Field>,
) -> Result<ResponseParse, ResponseError> {
    let mut raw = [const { std::mem::MaybeUninit::uninit() }; MAX_FIELDS];
    let mut resp = httparse::Response::new(&mut []);
    let config = httparse::ParserConfig::default();
    let len = match config.parse_response_with_uninit_headers(&mut resp, buf, &mut raw) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(ResponseParse::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(ResponseError::TooManyFields),
        Err(_) => return Err(ResponseError::Malformed),
    };
    let (Some(minor_version), Some(status)) = (resp.version, resp.code) else {
        return Err(ResponseError::Malformed);
    };
    if status == 101 {
        return Err(ResponseError::UnexpectedUpgrade);
    }
    fields.clear();
    let mut content_length: Option<u64> = None;
    let mut transfer_encoding: Option<bool> = None; // Some(final coding is chunked)
    let mut connection = ConnectionOptions::default();
    let mut has_request_id = false;
    let mut has_date = false;
    for h in resp.headers.iter() {
        let kind = FieldKind::of(h.name.as_bytes());
        match kind {
            FieldKind::ContentLength => match parse_content_length(h.value) {
                Some(n) if content_length.is_none_or(|prev| prev == n) => content_length = Some(n),
                _ => return Err(ResponseError::BadContentLength),
            },
            FieldKind::TransferEncoding => {
                // Several fields form one list: only the last coding decides.
                let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
                transfer_encoding = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            }
            FieldKind::Connection => connection.add(h.value),
            FieldKind::XRequestId => has_request_id = true,
            FieldKind::Date => has_date = true,
            _ => {}
        }
        fields.push(Field {
            name: Span::within(buf, h.name.as_bytes()),
            value: Span::within(buf, h.value),
            kind,
        });
    }
    let no_body = response_has_no_body(status, head_request);
    let framing = match (no_body, transfer_encoding, content_length) {
        (true, _, _) => ResponseFraming::Empty,
        (false, Some(_), Some(_)) => return Err(ResponseError::AmbiguousFraming),
        (false, Some(true), None) => ResponseFraming::Chunked,
        (false, Some(false), None) => ResponseFraming::UntilClose,
        (false, None, Some(n)) => ResponseFraming::Length(n),
        (false, None, None) => ResponseFraming::UntilClose,
    };
    Ok(ResponseParse::Complete(ResponseHead {
        len,
        status,
        reason: Span::within(buf, resp.reason.unwrap_or_default().as_bytes()),
        minor_version,
        framing,
        connection,
        has_request_id,
        has_date,
    }))
}

/// Route matching over a parsed head: the header values by name, straight from the buffer.
pub struct HeadFields<'a> {
    /// The buffer the head was parsed from.
    pub buf: &'a [u8],
    /// Its fields.
    pub fields: &'a [Field],
}

impl HeaderLookup for HeadFields<'_> {
    fn header(&self, name: &HeaderName) -> Option<&[u8]> {
        let want = name.as_str().as_bytes();
        self.fields
            .iter()
            .find(|f| f.name.of(self.buf).eq_ignore_ascii_case(want))
            .map(|f| f.value.of(self.buf))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn request(text: &str) -> RequestParse {
        parse_request(text.as_bytes(), &mut Vec::new())
    }

    fn complete_with_fields(text: &str) -> (RequestHead, Vec<Field>) {
        let mut fields = Vec::new();
        match parse_request(text.as_bytes(), &mut fields) {
            RequestParse::Complete(h) => (h, fields),
            other => panic!("{other:?}"),
        }
    }

    fn complete(text: &str) -> RequestHead {
        complete_with_fields(text).0
    }

    fn unusual(text: &str) -> &'static str {
        match request(text) {
            RequestParse::Unusual(why) => why,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_plain_get_is_parsed_into_spans() {
        let text =
            "GET /users/7?x=1 HTTP/1.1\r\nHost: api.local\r\nX-Forwarded-For: 1.2.3.4\r\n\r\nNEXT";
        let (h, fields) = complete_with_fields(text);
        let buf = text.as_bytes();
        assert_eq!(h.len, text.len() - 4);
        assert_eq!(h.method, Method::GET);
        assert_eq!(h.method_span.of(buf), b"GET");
        assert_eq!(h.target.of(buf), b"/users/7?x=1");
        assert_eq!(h.path.of(buf), b"/users/7");
        assert_eq!(h.host.unwrap().of(buf), b"api.local");
        assert_eq!(h.content_length, 0);
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[1].kind, FieldKind::XForwardedFor);
        assert_eq!(fields[1].name.of(buf), b"X-Forwarded-For");
        assert_eq!(first(&fields, FieldKind::XForwardedFor).unwrap().of(buf), b"1.2.3.4");
    }

    #[test]
    fn an_incomplete_head_asks_for_more_bytes() {
        assert!(matches!(request("GET / HTTP/1.1\r\nHost: a\r\n"), RequestParse::Partial));
        assert!(matches!(request("GE"), RequestParse::Partial));
    }

    #[test]
    fn equal_content_lengths_are_one_length_and_differing_ones_go_to_hyper() {
        let h = complete("POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n");
        assert_eq!(h.content_length, 5);
        unusual("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
        unusual("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n");
        unusual("POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n");
        unusual("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n");
    }

    #[test]
    fn framing_and_protocol_switches_are_left_to_hyper() {
        unusual("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        unusual("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
        unusual("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
        unusual("GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n");
        unusual("GET / HTTP/1.1\r\nConnection: Upgrade\r\n\r\n");
        unusual("GET / HTTP/1.0\r\n\r\n");
        unusual("GET http://a/b HTTP/1.1\r\n\r\n");
        unusual("CONNECT a:443 HTTP/1.1\r\n\r\n");
        unusual("OPTIONS * HTTP/1.1\r\n\r\n");
        unusual("GET /items/1#x HTTP/1.1\r\n\r\n");
        unusual("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
        unusual("GET /\x01 HTTP/1.1\r\n\r\n");
        unusual("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n");
        unusual("GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n");
    }

    #[test]
    fn more_fields_than_the_limit_go_to_hyper() {
        let mut text = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=MAX_FIELDS {
            text.push_str(&format!("x-{i}: 1\r\n"));
        }
        text.push_str("\r\n");
        unusual(&text);
    }

    #[test]
    fn connection_options_are_read_from_every_connection_field() {
        let h =
            complete("GET / HTTP/1.1\r\nConnection: keep-alive\r\nconnection: Close, x-a\r\n\r\n");
        assert_eq!(
            h.connection,
            ConnectionOptions { close: true, keep_alive: true, upgrade: false, names_fields: true }
        );
    }

    #[test]
    fn field_kinds_ignore_case_and_only_hop_by_hop_ones_are_dropped() {
        assert_eq!(FieldKind::of(b"X-REQUEST-ID"), FieldKind::XRequestId);
        assert_eq!(FieldKind::of(b"Grpc-Timeout"), FieldKind::GrpcTimeout);
        assert_eq!(FieldKind::of(b"x-request-idx"), FieldKind::Other);
        assert!(FieldKind::of(b"keep-alive").is_hop_by_hop());
        assert!(FieldKind::of(b"TE").is_hop_by_hop());
        assert!(!FieldKind::of(b"content-length").is_hop_by_hop());
        assert!(!FieldKind::of(b"x-forwarded-for").is_hop_by_hop());
    }

    fn response(text: &str, head: bool) -> Result<ResponseHead, ResponseError> {
        match parse_response(text.as_bytes(), head, &mut Vec::new())? {
            ResponseParse::Complete(h) => Ok(h),
            ResponseParse::Partial => panic!("partial"),
        }
    }

    #[test]
    fn response_framing_follows_rfc_9112_section_6_3() {
        let f = |t: &str| response(t, false).map(|h| h.framing);
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
            Ok(ResponseFraming::Length(5))
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Ok(ResponseFraming::Chunked)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            Ok(ResponseFraming::UntilClose)
        );
        assert_eq!(f("HTTP/1.1 200 OK\r\n\r\n"), Ok(ResponseFraming::UntilClose));
        assert_eq!(f("HTTP/1.1 204 No Content\r\n\r\n"), Ok(ResponseFraming::Empty));
        assert_eq!(
            f("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"),
            Ok(ResponseFraming::Empty)
        );
        assert_eq!(f("HTTP/1.1 103 Early Hints\r\n\r\n"), Ok(ResponseFraming::Empty));
        assert_eq!(
            response("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true).map(|h| h.framing),
            Ok(ResponseFraming::Empty)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(ResponseError::AmbiguousFraming)
        );
        assert_eq!(
            f("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
            Err(ResponseError::BadContentLength)
        );
        assert_eq!(f("HTTP/1.1 101 Switching\r\n\r\n"), Err(ResponseError::UnexpectedUpgrade));
        assert_eq!(f("HTTX/1.1 200 OK\r\n\r\n"), Err(ResponseError::Malformed));
    }

    #[test]
    fn only_persistent_length_delimited_responses_keep_the_upstream_connection() {
        let reusable = |t: &str| response(t, false).unwrap().reusable();
        assert!(reusable("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(!reusable("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"));
        assert!(!reusable("HTTP/1.1 200 OK\r\n\r\n"));
        assert!(!reusable("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(reusable("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"));
    }

    #[test]
    fn route_matching_reads_header_values_by_name() {
        let text = "GET / HTTP/1.1\r\nX-Canary: 1\r\n\r\n";
        let (_, fields) = complete_with_fields(text);
        let lookup = HeadFields { buf: text.as_bytes(), fields: &fields };
        assert_eq!(lookup.header(&HeaderName::from_static("x-canary")), Some(&b"1"[..]));
        assert_eq!(lookup.header(&HeaderName::from_static("x-other")), None);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod properties {
    use super::super::rewrite::{write_request_head, write_response_head, RequestEdits};
    use super::*;
    use proptest::prelude::*;

    /// Bytes that look like heads: request and status lines, field lines, stray CR/LF and
    /// separators, so the parsers get past their first line often.
    fn headish() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(&b"GET / HTTP/1.1\r\n"[..]),
            Just(&b"HTTP/1.1 200 OK\r\n"[..]),
            Just(&b"Host: a\r\n"[..]),
            Just(&b"Content-Length: 5\r\n"[..]),
            Just(&b"Transfer-Encoding: chunked\r\n"[..]),
            Just(&b"Connection: close, x-a\r\n"[..]),
            Just(&b"x-a: 1\r\n"[..]),
            Just(&b"X-Forwarded-For: 1.2.3.4\r\n"[..]),
            Just(&b"\r\n"[..]),
            Just(&b"\n"[..]),
            Just(&b":"[..]),
            Just(&b" "[..]),
        ];
        let pieces = proptest::collection::vec(
            prop_oneof![
                piece.prop_map(<[u8]>::to_vec),
                proptest::collection::vec(any::<u8>(), 0..8)
            ],
            0..16,
        );
        pieces.prop_map(|p| p.concat())
    }

    proptest! {
        /// Whatever the bytes, parsing and rewriting never panic, and every span of a
        /// complete head lies inside it.
        #[test]
        fn heads_parse_and_rewrite_without_panics_and_within_bounds(bytes in headish()) {
            let mut fields = Vec::new();
            if let RequestParse::Complete(head) = parse_request(&bytes, &mut fields) {
                prop_assert!(head.len <= bytes.len());
                for f in &fields {
                    prop_assert!(f.name.end() <= head.len && f.value.end() <= head.len);
                }
                prop_assert!(head.target.end() <= head.len);
                let mut out = Vec::new();
                let edits = RequestEdits { client_ip: b"10.0.0.1", proto: b"http", ..Default::default() };
                write_request_head(&mut out, &bytes, &head, &fields, &edits);
                prop_assert!(out.ends_with(b"\r\n\r\n"));
                // What goes upstream parses again, as one complete head.
                let mut again = Vec::new();
                let reparsed = parse_request(&out, &mut again);
                prop_assert!(matches!(reparsed, RequestParse::Complete(ref h) if h.len == out.len()), "{:?}", String::from_utf8_lossy(&out));
            }
            if let Ok(ResponseParse::Complete(head)) = parse_response(&bytes, false, &mut fields) {
                prop_assert!(head.len <= bytes.len());
                let mut out = Vec::new();
                write_response_head(&mut out, &bytes, &head, &fields, Some(b"id"), None, true, &[]);
                prop_assert!(out.ends_with(b"\r\n\r\n"));
            }
        }
    }
}
