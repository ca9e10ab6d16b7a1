//! Hop-by-hop header handling shared by both request paths: the classification of the fields
//! the proxy treats specially ([`FieldKind`]), what a `Connection` header asks for
//! ([`ConnectionOptions`]) and, for the hyper path, [`strip_hop_by_hop`] on a `HeaderMap`.
//!
//! One classification, so both paths drop the same set of fields (RFC 9110 §7.6.1).

use http::header::{self, HeaderName, HeaderValue};
use http::HeaderMap;

/// Room for the fields the general path adds to a head it builds from the wire (on requests:
/// `x-forwarded-for`, `-proto`, `-host`, `x-request-id`, `host`, a propagated deadline, the
/// attempt number, `route.headers`; on responses: `x-request-id`), so that adding them does
/// not grow and rehash the `HeaderMap` built with exactly the wire's fields.
pub const ADDED_FIELDS: usize = 8;

/// `grpc-status`, as a constant: looked up on every gRPC answer, where a `&str` key would be
/// parsed again on each lookup.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`.
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// `n` in decimal, in `buf`: the numbers the gateway writes into fields (lengths, codes,
/// milliseconds) without formatting machinery.
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// A field name as it came on the wire; gRPC's own names without an allocation (`http` copies
/// a name that is not a standard header). `None` if `http` refuses it.
pub fn wire_name(name: &[u8]) -> Option<HeaderName> {
    const GRPC_ENCODING: HeaderName = HeaderName::from_static("grpc-encoding");
    const GRPC_ACCEPT_ENCODING: HeaderName = HeaderName::from_static("grpc-accept-encoding");
    const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
    match name {
        b"grpc-status" => Some(GRPC_STATUS),
        b"grpc-message" => Some(GRPC_MESSAGE),
        b"grpc-encoding" => Some(GRPC_ENCODING),
        b"grpc-accept-encoding" => Some(GRPC_ACCEPT_ENCODING),
        b"grpc-timeout" => Some(GRPC_TIMEOUT),
        _ => HeaderName::from_bytes(name).ok(),
    }
}

/// A field value as it came on the wire; the values every gRPC call carries without an
/// allocation. `None` if `http` refuses it.
pub fn wire_value(value: &[u8]) -> Option<HeaderValue> {
    constant_value(value).or_else(|| HeaderValue::from_bytes(value).ok())
}

/// A field `http` refuses (a name or value it will not hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusedField;

/// Appends decoded HTTP/2 `fields` to `map` ([`wire_name`], [`wire_value`]). Fails on the
/// first field `http` refuses, with the fields before it appended.
pub fn append_wire_fields(
    fields: &spillway_h2::Fields,
    map: &mut HeaderMap,
) -> Result<(), RefusedField> {
    for (name, value) in fields.iter() {
        map.append(wire_name(name).ok_or(RefusedField)?, wire_value(value).ok_or(RefusedField)?);
    }
    Ok(())
}

/// The values every gRPC call carries, as constants: no allocation, and checked once at
/// compile time (`from_static` called at run time checks its bytes on every call).
fn constant_value(value: &[u8]) -> Option<HeaderValue> {
    const ZERO: HeaderValue = HeaderValue::from_static("0");
    const TRAILERS: HeaderValue = HeaderValue::from_static("trailers");
    const GRPC: HeaderValue = HeaderValue::from_static("application/grpc");
    const GRPC_PROTO: HeaderValue = HeaderValue::from_static("application/grpc+proto");
    match value {
        b"0" => Some(ZERO),
        b"trailers" => Some(TRAILERS),
        b"application/grpc" => Some(GRPC),
        b"application/grpc+proto" => Some(GRPC_PROTO),
        _ => None,
    }
}

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// The header fields the lean path treats specially.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// Any other field: forwarded unchanged (unless `Connection` names it).
    Other,
    /// `Host`.
    Host,
    /// `Content-Length`.
    ContentLength,
    /// `Transfer-Encoding`.
    TransferEncoding,
    /// `Connection`.
    Connection,
    /// `Keep-Alive` (hop-by-hop).
    KeepAlive,
    /// `Proxy-Connection` (hop-by-hop, non-standard).
    ProxyConnection,
    /// `Upgrade`.
    Upgrade,
    /// `TE`.
    Te,
    /// `Trailer`.
    Trailer,
    /// `Expect`.
    Expect,
    /// `X-Forwarded-For`.
    XForwardedFor,
    /// `X-Forwarded-Proto`.
    XForwardedProto,
    /// `X-Forwarded-Host`.
    XForwardedHost,
    /// `X-Request-Id`.
    XRequestId,
    /// `grpc-timeout`.
    GrpcTimeout,
    /// `Date`.
    Date,
    /// `x-request-timeout`.
    XRequestTimeout,
}

impl FieldKind {
    /// Classifies a field name (case-insensitive), looking at its length first.
    pub fn of(name: &[u8]) -> FieldKind {
        let is = |want: &[u8]| name.eq_ignore_ascii_case(want);
        match name.len() {
            2 if is(b"te") => FieldKind::Te,
            4 if is(b"host") => FieldKind::Host,
            4 if is(b"date") => FieldKind::Date,
            6 if is(b"expect") => FieldKind::Expect,
            7 if is(b"upgrade") => FieldKind::Upgrade,
            7 if is(b"trailer") => FieldKind::Trailer,
            10 if is(b"connection") => FieldKind::Connection,
            10 if is(b"keep-alive") => FieldKind::KeepAlive,
            12 if is(b"x-request-id") => FieldKind::XRequestId,
            12 if is(b"grpc-timeout") => FieldKind::GrpcTimeout,
            14 if is(b"content-length") => FieldKind::ContentLength,
            15 if is(b"x-forwarded-for") => FieldKind::XForwardedFor,
            16 if is(b"proxy-connection") => FieldKind::ProxyConnection,
            16 if is(b"x-forwarded-host") => FieldKind::XForwardedHost,
            17 if is(b"transfer-encoding") => FieldKind::TransferEncoding,
            17 if is(b"x-forwarded-proto") => FieldKind::XForwardedProto,
            17 if is(b"x-request-timeout") => FieldKind::XRequestTimeout,
            _ => FieldKind::Other,
        }
    }

    /// Whether a proxy must not forward this field (RFC 9110 §7.6.1). `TE: trailers` is kept
    /// by the caller (gRPC needs it end to end); `Transfer-Encoding` is framing, handled apart.
    pub fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            FieldKind::Connection
                | FieldKind::KeepAlive
                | FieldKind::ProxyConnection
                | FieldKind::Upgrade
                | FieldKind::Te
                | FieldKind::Trailer
        )
    }
}

/// What a `Connection` header asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionOptions {
    /// `close`.
    pub close: bool,
    /// `keep-alive`.
    pub keep_alive: bool,
    /// `upgrade`.
    pub upgrade: bool,
    /// Some other token: a header the sender wants dropped at this hop.
    pub names_fields: bool,
}

impl ConnectionOptions {
    /// Adds the tokens of one `Connection` field value.
    pub fn add(&mut self, value: &[u8]) {
        // The usual values, whole.
        if value.eq_ignore_ascii_case(b"keep-alive") {
            self.keep_alive = true;
            return;
        }
        if value.eq_ignore_ascii_case(b"close") {
            self.close = true;
            return;
        }
        for token in value.split(|b| *b == b',') {
            let token = token.trim_ascii();
            if token.is_empty() {
                continue;
            }
            if token.eq_ignore_ascii_case(b"close") {
                self.close = true;
            } else if token.eq_ignore_ascii_case(b"keep-alive") {
                self.keep_alive = true;
            } else if token.eq_ignore_ascii_case(b"upgrade") {
                self.upgrade = true;
            } else {
                self.names_fields = true;
            }
        }
    }
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1) and those named in `Connection`; keeps
/// `TE: trailers` (gRPC needs it end to end).
///
/// Runs twice per proxied request (request and response), so it first scans the names once
/// and only looks up what is there: most requests carry none of these headers, and a typical
/// upstream response only `Connection: keep-alive`. Nothing is allocated.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut found = 0u8;
    for name in headers.keys() {
        found |= hop_by_hop_bit(name);
    }
    if found == 0 {
        return;
    }
    if found & HOP_CONNECTION != 0 {
        // Usually one `Connection` value; several are rare enough to afford a `Vec`.
        if headers.get_all(header::CONNECTION).iter().nth(1).is_some() {
            let values: Vec<HeaderValue> =
                headers.get_all(header::CONNECTION).iter().cloned().collect();
            headers.remove(header::CONNECTION);
            for v in &values {
                remove_connection_tokens(headers, v);
            }
        } else if let Some(v) = headers.remove(header::CONNECTION) {
            remove_connection_tokens(headers, &v);
        }
    }
    if found & HOP_KEEP_ALIVE != 0 {
        headers.remove(&KEEP_ALIVE);
    }
    if found & HOP_PROXY_CONNECTION != 0 {
        headers.remove(&PROXY_CONNECTION);
    }
    if found & HOP_TRANSFER_ENCODING != 0 {
        headers.remove(header::TRANSFER_ENCODING);
    }
    if found & HOP_UPGRADE != 0 {
        headers.remove(header::UPGRADE);
    }
    if found & HOP_TRAILER != 0 {
        headers.remove(header::TRAILER);
    }
    if found & HOP_TE != 0 {
        if let Some(te) = headers.get(header::TE) {
            if !te.as_bytes().eq_ignore_ascii_case(b"trailers") {
                headers.remove(header::TE);
            }
        }
    }
}

const HOP_CONNECTION: u8 = 1;
const HOP_KEEP_ALIVE: u8 = 1 << 1;
const HOP_PROXY_CONNECTION: u8 = 1 << 2;
const HOP_TRANSFER_ENCODING: u8 = 1 << 3;
const HOP_UPGRADE: u8 = 1 << 4;
const HOP_TRAILER: u8 = 1 << 5;
const HOP_TE: u8 = 1 << 6;

/// Which hop-by-hop header `name` is, as a bit (0 for an end-to-end header). The names are
/// the lean path's field classification, so both paths drop the same set.
#[inline]
fn hop_by_hop_bit(name: &HeaderName) -> u8 {
    match FieldKind::of(name.as_str().as_bytes()) {
        FieldKind::Connection => HOP_CONNECTION,
        FieldKind::KeepAlive => HOP_KEEP_ALIVE,
        FieldKind::ProxyConnection => HOP_PROXY_CONNECTION,
        // Framing: hyper re-frames the body (the lean path passes it through unchanged).
        FieldKind::TransferEncoding => HOP_TRANSFER_ENCODING,
        FieldKind::Upgrade => HOP_UPGRADE,
        FieldKind::Trailer => HOP_TRAILER,
        FieldKind::Te => HOP_TE,
        _ => 0,
    }
}

/// Removes the headers named in one `Connection` value (names are looked up by `&str`, which
/// neither allocates nor fails on invalid tokens).
///
/// The usual `keep-alive` skips the lookup: the caller removes that header anyway.
fn remove_connection_tokens(headers: &mut HeaderMap, value: &HeaderValue) {
    for token in value.as_bytes().split(|b| *b == b',') {
        let token = token.trim_ascii();
        if token.is_empty() || token.eq_ignore_ascii_case(b"keep-alive") {
            continue;
        }
        if let Ok(name) = std::str::from_utf8(token) {
            headers.remove(name);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn wire_fields_keep_their_order_and_values_and_stop_at_a_refused_one() {
        let mut fields = spillway_h2::Fields::new();
        fields.push(b"content-type", b"application/grpc");
        fields.push(b"user-agent", b"grpc-go/1.60");
        fields.push(b"x-tag", b"a");
        fields.push(b"x-tag", b"b");
        let mut map = HeaderMap::new();
        append_wire_fields(&fields, &mut map).unwrap();
        assert_eq!(map.len(), 4);
        assert_eq!(map[header::CONTENT_TYPE], "application/grpc");
        assert_eq!(map[header::USER_AGENT], "grpc-go/1.60");
        let tags: Vec<_> = map.get_all("x-tag").iter().collect();
        assert_eq!(tags, ["a", "b"]);

        // `http` refuses a value with a control character: the fields before it are kept.
        let mut bad = spillway_h2::Fields::new();
        bad.push(b"x-ok", b"1");
        bad.push(b"x-bad", b"\x01");
        bad.push(b"x-after", b"2");
        let mut map = HeaderMap::new();
        assert_eq!(append_wire_fields(&bad, &mut map), Err(RefusedField));
        assert_eq!(map.len(), 1);
        assert_eq!(map["x-ok"], "1");
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn headers_named_in_every_connection_value_are_removed_case_insensitively() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("X-One"));
        h.append(header::CONNECTION, HeaderValue::from_static(" x-two , ,bad token"));
        h.insert("x-one", HeaderValue::from_static("1"));
        h.insert("x-two", HeaderValue::from_static("2"));
        h.insert(header::HOST, HeaderValue::from_static("example.com"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::HOST));
    }

    #[test]
    fn end_to_end_headers_are_left_alone() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("example.com"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.insert("x-request-id", HeaderValue::from_static("abc"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 3);
    }

    #[test]
    fn te_trailers_survives_for_grpc() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
    }
}
