//! Writing heads on the lean path: the request as the upstream gets it, the response as the
//! client gets it, and the gateway's own small responses.
//!
//! Heads are written straight from the parsed spans into one output buffer, in the order the
//! fields came, with the proxy's edits applied on the way: hop-by-hop fields and those named
//! in `Connection` left out, `Host` rewritten, `X-Forwarded-*` and `x-request-id` added, and
//! deadline headers replaced with the remaining budget. Nothing is allocated per field.

use super::head::{ConnectionOptions, Field, FieldKind, RequestHead, ResponseHead, Span};

/// The edits applied to a request on its way upstream.
#[derive(Debug, Default)]
pub struct RequestEdits<'a> {
    /// A replacement target (path and query) after a prefix rewrite.
    pub target: Option<&'a [u8]>,
    /// A replacement `Host` value.
    pub host: Option<&'a [u8]>,
    /// The client's address, appended to `X-Forwarded-For`.
    pub client_ip: &'a [u8],
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub proto: &'a [u8],
    /// An `x-request-id` to add (when the request has none).
    pub new_request_id: Option<&'a [u8]>,
    /// A replacement `grpc-timeout` value (the remaining budget).
    pub grpc_timeout: Option<&'a [u8]>,
    /// A replacement `x-request-timeout` value (the remaining budget).
    pub request_timeout: Option<&'a [u8]>,
    /// Fields set by admission (criticality lowered to the route's maximum, the granted cost
    /// budget): any incoming field of the same name is replaced. Names are lower-case.
    pub set: &'a [(&'a [u8], &'a [u8])],
}

/// Whether the field named `name` is one that a `Connection` field asks to drop at this hop.
fn named_by_connection(buf: &[u8], fields: &[Field], name: &[u8]) -> bool {
    fields.iter().filter(|f| f.kind == FieldKind::Connection).any(|c| {
        c.value.of(buf).split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(name))
    })
}

/// Copies a received field line as it came (`Name: value`, whitespace around the value
/// trimmed by the parser) in one piece.
#[inline]
fn copy_field(out: &mut Vec<u8>, buf: &[u8], f: &Field) {
    match buf.get(f.name.start()..f.value.end()) {
        Some(line) if !f.value.is_empty() => {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
        _ => field(out, f.name.of(buf), f.value.of(buf)),
    }
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Whether a field is dropped at this hop: hop-by-hop (except `TE: trailers`), or named in
/// `Connection`.
pub(crate) fn dropped(
    buf: &[u8],
    fields: &[Field],
    f: &Field,
    connection: ConnectionOptions,
) -> bool {
    if f.kind == FieldKind::Te {
        return !f.value.of(buf).trim_ascii().eq_ignore_ascii_case(b"trailers");
    }
    if f.kind.is_hop_by_hop() {
        return true;
    }
    connection.names_fields && named_by_connection(buf, fields, f.name.of(buf))
}

/// Writes the upstream request head for the request parsed from `buf` into `out`, as
/// HTTP/1.1.
pub fn write_request_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RequestHead,
    fields: &[Field],
    edits: &RequestEdits<'_>,
) {
    write_upstream_head(&mut H1Head { out }, buf, head, fields, edits);
}

/// Where an upstream request head goes, field by field: HTTP/1.1 bytes ([`H1Head`]), or the
/// fields an HTTP/2 upstream's HEADERS are encoded from ([`H2Head`]).
pub(crate) trait HeadWriter {
    /// The request line: method and target.
    fn line(&mut self, method: &[u8], target: &[u8]);
    /// One field.
    fn field(&mut self, name: &[u8], value: &[u8]);
    /// A received field, unchanged.
    fn copy(&mut self, buf: &[u8], f: &Field) {
        self.field(f.name.of(buf), f.value.of(buf));
    }
    /// One field whose value is `parts`, each followed by `, `, then `last`.
    fn joined<'p>(&mut self, name: &[u8], parts: impl Iterator<Item = &'p [u8]>, last: &[u8]);
    /// The end of the head.
    fn end(&mut self);
}

/// An upstream request head as HTTP/1.1 bytes.
pub(crate) struct H1Head<'a> {
    pub(crate) out: &'a mut Vec<u8>,
}

impl HeadWriter for H1Head<'_> {
    fn line(&mut self, method: &[u8], target: &[u8]) {
        self.out.extend_from_slice(method);
        self.out.push(b' ');
        self.out.extend_from_slice(target);
        self.out.extend_from_slice(b" HTTP/1.1\r\n");
    }

    #[inline]
    fn field(&mut self, name: &[u8], value: &[u8]) {
        field(self.out, name, value);
    }

    #[inline]
    fn copy(&mut self, buf: &[u8], f: &Field) {
        copy_field(self.out, buf, f);
    }

    fn joined<'p>(&mut self, name: &[u8], parts: impl Iterator<Item = &'p [u8]>, last: &[u8]) {
        self.out.extend_from_slice(name);
        self.out.extend_from_slice(b": ");
        for part in parts {
            self.out.extend_from_slice(part);
            self.out.extend_from_slice(b", ");
        }
        self.out.extend_from_slice(last);
        self.out.extend_from_slice(b"\r\n");
    }

    fn end(&mut self) {
        self.out.extend_from_slice(b"\r\n");
    }
}

/// An upstream request head as the fields of HTTP/2 HEADERS: names (lower-cased) and values
/// laid end to end in `out`, each field's spans in `fields`; `host` is kept apart as the
/// `:authority` (`host`), and the request line as `method` and `target`.
pub(crate) struct H2Head<'a> {
    pub(crate) out: &'a mut Vec<u8>,
    pub(crate) fields: &'a mut Vec<Field>,
    pub(crate) method: Span,
    pub(crate) target: Span,
    pub(crate) host: Option<Span>,
}

impl<'a> H2Head<'a> {
    /// An empty head writing into `out` and `fields` (both cleared).
    pub(crate) fn new(out: &'a mut Vec<u8>, fields: &'a mut Vec<Field>) -> H2Head<'a> {
        out.clear();
        fields.clear();
        let none = Span::default();
        H2Head { out, fields, method: none, target: none, host: None }
    }

    fn put(&mut self, bytes: &[u8]) -> Span {
        let start = self.out.len();
        self.out.extend_from_slice(bytes);
        Span::range(start, self.out.len())
    }

    /// A field name, lower-cased as HTTP/2 wants it.
    fn put_name(&mut self, name: &[u8]) -> Span {
        let span = self.put(name);
        if let Some(bytes) = self.out.get_mut(span.start()..span.end()) {
            bytes.make_ascii_lowercase();
        }
        span
    }

    /// One field of `kind`; `host` is kept apart, as the `:authority`.
    fn push(&mut self, name: &[u8], value: &[u8], kind: FieldKind) {
        let name = self.put_name(name);
        let value = self.put(value);
        if kind == FieldKind::Host {
            self.host = Some(value);
            return;
        }
        self.fields.push(Field { name, value, kind });
    }
}

impl HeadWriter for H2Head<'_> {
    fn line(&mut self, method: &[u8], target: &[u8]) {
        self.method = self.put(method);
        self.target = self.put(target);
    }

    fn field(&mut self, name: &[u8], value: &[u8]) {
        self.push(name, value, FieldKind::of(name));
    }

    fn copy(&mut self, buf: &[u8], f: &Field) {
        self.push(f.name.of(buf), f.value.of(buf), f.kind);
    }

    fn joined<'p>(&mut self, name: &[u8], parts: impl Iterator<Item = &'p [u8]>, last: &[u8]) {
        let kind = FieldKind::of(name);
        let name = self.put_name(name);
        let start = self.out.len();
        for part in parts {
            self.out.extend_from_slice(part);
            self.out.extend_from_slice(b", ");
        }
        self.out.extend_from_slice(last);
        let value = Span::range(start, self.out.len());
        self.fields.push(Field { name, value, kind });
    }

    fn end(&mut self) {}
}

/// Writes the upstream request head for the request parsed from `buf` to `w`.
pub(crate) fn write_upstream_head<W: HeadWriter>(
    w: &mut W,
    buf: &[u8],
    head: &RequestHead,
    fields: &[Field],
    edits: &RequestEdits<'_>,
) {
    w.line(head.method_span.of(buf), edits.target.unwrap_or(head.target.of(buf)));
    let mut forwarded_for = false;
    let mut forwarded_host = false;
    for f in fields {
        if dropped(buf, fields, f, head.connection) {
            continue;
        }
        let name = f.name.of(buf);
        match f.kind {
            FieldKind::Host => match edits.host {
                Some(host) => w.field(name, host),
                None => w.copy(buf, f),
            },
            FieldKind::XForwardedFor => {
                // Every earlier hop's value, then this client, in one field.
                if forwarded_for {
                    continue;
                }
                forwarded_for = true;
                let earlier = fields.iter().filter(|g| g.kind == FieldKind::XForwardedFor);
                w.joined(name, earlier.map(|g| g.value.of(buf)), edits.client_ip);
            }
            // Set by this hop, below.
            FieldKind::XForwardedProto => {}
            FieldKind::XForwardedHost => {
                forwarded_host = true;
                w.copy(buf, f);
            }
            FieldKind::GrpcTimeout if edits.grpc_timeout.is_some() => {
                w.field(name, edits.grpc_timeout.unwrap_or_default())
            }
            FieldKind::XRequestTimeout if edits.request_timeout.is_some() => {
                w.field(name, edits.request_timeout.unwrap_or_default())
            }
            _ if !edits.set.is_empty()
                && edits.set.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) => {}
            _ => w.copy(buf, f),
        }
    }
    for (name, value) in edits.set {
        w.field(name, value);
    }
    if !forwarded_for {
        w.field(b"x-forwarded-for", edits.client_ip);
    }
    w.field(b"x-forwarded-proto", edits.proto);
    if !forwarded_host {
        if let Some(host) = head.host {
            w.field(b"x-forwarded-host", host.of(buf));
        }
    }
    if let (None, Some(host)) = (head.host, edits.host) {
        w.field(b"host", host);
    }
    if let Some(id) = edits.new_request_id {
        w.field(b"x-request-id", id);
    }
    w.end();
}

/// Writes the response head the client gets for an upstream head parsed from `buf`:
/// hop-by-hop fields dropped (framing kept: the body passes through unchanged),
/// `x-request-id` added when missing, `date` when given (the caller passes it only when the
/// upstream sent none), and `connection: close` when the gateway closes the connection after
/// this response. `extra` fields (the route's CORS fields) follow the upstream's.
#[allow(clippy::too_many_arguments)]
pub fn write_response_head(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &ResponseHead,
    fields: &[Field],
    request_id: Option<&[u8]>,
    date: Option<&[u8]>,
    close: bool,
    extra: &[(http::HeaderName, http::HeaderValue)],
) {
    status_line(out, head.status, head.reason.of(buf));
    for f in fields {
        if dropped(buf, fields, f, head.connection) {
            continue;
        }
        copy_field(out, buf, f);
    }
    for (name, value) in extra {
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !head.has_request_id {
        if let Some(id) = request_id {
            field(out, b"x-request-id", id);
        }
    }
    if let Some(date) = date {
        field(out, b"date", date);
    }
    if close && !head.is_interim() {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn status_line(out: &mut Vec<u8>, status: u16, reason: &[u8]) {
    out.extend_from_slice(b"HTTP/1.1 ");
    let s = status.min(999);
    out.extend_from_slice(&[
        b'0' + (s / 100) as u8,
        b'0' + (s / 10 % 10) as u8,
        b'0' + (s % 10) as u8,
    ]);
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");
}

/// Writes a complete response generated by the gateway (an error, or a route's direct
/// response): status, the given fields, `content-length`, `date`, and the body — except for
/// a `HEAD` request, which gets the head only.
#[allow(clippy::too_many_arguments)]
pub fn write_local_response<'a>(
    out: &mut Vec<u8>,
    status: u16,
    reason: &str,
    fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    body: &[u8],
    date: &[u8],
    head_request: bool,
    close: bool,
) {
    status_line(out, status, reason.as_bytes());
    for (name, value) in fields {
        field(out, name, value);
    }
    out.extend_from_slice(b"content-length: ");
    decimal(out, body.len() as u64);
    out.extend_from_slice(b"\r\n");
    field(out, b"date", date);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_request {
        out.extend_from_slice(body);
    }
}

/// Appends `n` in decimal.
pub fn decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// The value of the span in `buf`, as text when it is valid UTF-8 (empty otherwise).
pub fn text(buf: &[u8], span: Span) -> &str {
    std::str::from_utf8(span.of(buf)).unwrap_or("")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::head::{parse_request, parse_response, RequestParse, ResponseParse};
    use super::*;

    fn forward(text: &str, edits: &RequestEdits<'_>) -> String {
        let mut fields = Vec::new();
        let RequestParse::Complete(head) = parse_request(text.as_bytes(), &mut fields) else {
            panic!("not complete")
        };
        let mut out = Vec::new();
        write_request_head(&mut out, text.as_bytes(), &head, &fields, edits);
        String::from_utf8(out).unwrap()
    }

    fn edits() -> RequestEdits<'static> {
        RequestEdits { client_ip: b"10.0.0.9", proto: b"http", ..Default::default() }
    }

    /// The HTTP/2 form of an upstream head is the HTTP/1.1 form read back: the same request
    /// line, the same fields in the same order with names in lower case, `host` apart.
    #[test]
    fn the_http2_head_carries_the_same_fields_as_the_http1_head() {
        let requests = [
            "GET /a?b HTTP/1.1\r\nHost: api.local\r\nAccept: */*\r\nX-Request-Id: r1\r\n\r\n",
            "POST /svc/M HTTP/1.1\r\nhost: g\r\nContent-Type: application/grpc\r\nTE: trailers\r\n\
             grpc-timeout: 5S\r\nX-Forwarded-For: 1.1.1.1\r\nx-forwarded-for: 2.2.2.2\r\n\
             Content-Length: 3\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: 5\r\n\
             x-secret: 1\r\nX-Kept: 1\r\nx-spillway-criticality: critical\r\n\r\n",
        ];
        let set = [(&b"x-spillway-criticality"[..], &b"sheddable"[..])];
        let edit_sets = [
            edits(),
            RequestEdits {
                target: Some(b"/v2/M"),
                host: Some(b"backend.local"),
                new_request_id: Some(b"id-1"),
                grpc_timeout: Some(b"99m"),
                set: &set,
                ..edits()
            },
        ];
        for text in requests {
            for edits in &edit_sets {
                let h1 = forward(text, edits);
                let mut h1_fields = Vec::new();
                let RequestParse::Complete(h1_head) = parse_request(h1.as_bytes(), &mut h1_fields)
                else {
                    panic!("{h1}")
                };
                let h1b = h1.as_bytes();
                let want: Vec<(Vec<u8>, &[u8])> = h1_fields
                    .iter()
                    .filter(|f| f.kind != FieldKind::Host)
                    .map(|f| (f.name.of(h1b).to_ascii_lowercase(), f.value.of(h1b)))
                    .collect();

                let mut src_fields = Vec::new();
                let RequestParse::Complete(head) = parse_request(text.as_bytes(), &mut src_fields)
                else {
                    panic!("{text}")
                };
                let (mut out, mut fields) = (Vec::new(), Vec::new());
                let mut h2 = H2Head::new(&mut out, &mut fields);
                write_upstream_head(&mut h2, text.as_bytes(), &head, &src_fields, edits);
                let (method, target, host) = (h2.method, h2.target, h2.host);
                let got: Vec<(Vec<u8>, &[u8])> =
                    fields.iter().map(|f| (f.name.of(&out).to_vec(), f.value.of(&out))).collect();
                assert_eq!(got, want, "{text:?}");
                assert_eq!(method.of(&out), h1_head.method_span.of(h1b));
                assert_eq!(target.of(&out), h1_head.target.of(h1b));
                assert_eq!(host.map(|h| h.of(&out)), h1_head.host.map(|h| h.of(h1b)));
                for f in &fields {
                    assert_eq!(f.kind, FieldKind::of(f.name.of(&out)));
                }
            }
        }
    }

    #[test]
    fn a_plain_request_gains_forwarding_fields_and_keeps_the_rest_in_order() {
        let out = forward(
            "GET /a?b HTTP/1.1\r\nHost: api.local\r\nAccept: */*\r\nX-Request-Id: r1\r\n\r\n",
            &edits(),
        );
        assert_eq!(
            out,
            "GET /a?b HTTP/1.1\r\nHost: api.local\r\nAccept: */*\r\nX-Request-Id: r1\r\n\
             x-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: api.local\r\n\r\n"
        );
    }

    #[test]
    fn hop_by_hop_fields_and_those_named_in_connection_are_dropped() {
        let out = forward(
            "GET / HTTP/1.1\r\nConnection: keep-alive, X-Secret\r\nKeep-Alive: 5\r\n\
             x-secret: 1\r\nProxy-Connection: keep-alive\r\nTE: gzip\r\nTrailer: x\r\n\
             X-Kept: 1\r\n\r\n",
            &edits(),
        );
        assert_eq!(
            out,
            "GET / HTTP/1.1\r\nX-Kept: 1\r\nx-forwarded-for: 10.0.0.9\r\n\
             x-forwarded-proto: http\r\n\r\n"
        );
        let out = forward("GET / HTTP/1.1\r\nTE: trailers\r\n\r\n", &edits());
        assert!(out.contains("TE: trailers\r\n"), "{out}");
    }

    #[test]
    fn forwarded_for_joins_every_earlier_hop_and_this_client() {
        let out = forward(
            "GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nA: b\r\nx-forwarded-for: 2.2.2.2\r\n\
             X-Forwarded-Proto: https\r\nX-Forwarded-Host: orig\r\nHost: h\r\n\r\n",
            &edits(),
        );
        assert_eq!(
            out,
            "GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2, 10.0.0.9\r\nA: b\r\n\
             X-Forwarded-Host: orig\r\nHost: h\r\nx-forwarded-proto: http\r\n\r\n"
        );
    }

    #[test]
    fn rewrites_replace_target_host_request_id_and_deadlines() {
        let e = RequestEdits {
            target: Some(b"/v2/x?q"),
            host: Some(b"internal"),
            new_request_id: Some(b"abc"),
            grpc_timeout: Some(b"99m"),
            request_timeout: Some(b"99ms"),
            set: &[],
            ..edits()
        };
        let out = forward(
            "POST /x?q HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\ngrpc-timeout: 1S\r\n\
             X-Request-Timeout: 1s\r\n\r\n",
            &e,
        );
        assert_eq!(
            out,
            "POST /v2/x?q HTTP/1.1\r\nHost: internal\r\nContent-Length: 0\r\n\
             grpc-timeout: 99m\r\nX-Request-Timeout: 99ms\r\nx-forwarded-for: 10.0.0.9\r\n\
             x-forwarded-proto: http\r\nx-forwarded-host: h\r\nx-request-id: abc\r\n\r\n"
        );
        let out = forward("GET / HTTP/1.1\r\n\r\n", &e);
        assert!(out.contains("host: internal\r\n"), "{out}");
    }

    fn respond(text: &str, close: bool) -> String {
        let mut fields = Vec::new();
        let Ok(ResponseParse::Complete(head)) = parse_response(text.as_bytes(), false, &mut fields)
        else {
            panic!("not complete")
        };
        let mut out = Vec::new();
        let date = (!head.has_date).then_some(&b"D"[..]);
        write_response_head(
            &mut out,
            text.as_bytes(),
            &head,
            &fields,
            Some(b"id1"),
            date,
            close,
            &[],
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn response_heads_keep_framing_and_drop_hop_by_hop_fields() {
        let out = respond(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Bar\r\nKeep-Alive: timeout=5\r\n\
             X-Bar: 1\r\nTransfer-Encoding: chunked\r\nDate: yesterday\r\n\r\n",
            false,
        );
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nDate: yesterday\r\n\
             x-request-id: id1\r\n\r\n"
        );
    }

    #[test]
    fn a_closing_response_says_so_and_a_missing_date_is_added() {
        let out = respond("HTTP/1.0 404 Not Found\r\nX-Request-Id: up\r\n\r\n", true);
        assert_eq!(
            out,
            "HTTP/1.1 404 Not Found\r\nX-Request-Id: up\r\ndate: D\r\nconnection: close\r\n\r\n"
        );
    }

    #[test]
    fn local_responses_carry_length_and_date_and_no_body_for_head() {
        let mut out = Vec::new();
        let fields = [(&b"content-type"[..], &b"application/json"[..])];
        write_local_response(&mut out, 404, "Not Found", fields, b"{}", b"D", false, false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\
             date: D\r\n\r\n{}"
        );
        let mut out = Vec::new();
        write_local_response(&mut out, 200, "OK", [], b"hi", b"D", true, true);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ndate: D\r\nconnection: close\r\n\r\n"
        );
    }
}
