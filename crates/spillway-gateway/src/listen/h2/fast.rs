//! The common HTTP/2 request — complete with its head, or with a body of at most 64 KiB (one
//! declared that long, or one that came whole with its head, as a gRPC unary call's does), to a
//! route the lean path serves — proxied by the lean exchange of [`crate::listen::h1::conn`], as
//! an HTTP/1.1 request would be: no `http::Request`, no `HeaderMap`, no boxed proxy future.
//!
//! The decoded head is routed, then spelled once as an HTTP/1.1 head into a worker buffer and
//! parsed in place; from there the edge, admission, deadlines, retries, the upstream (a pooled
//! HTTP/1.1 socket, or a stream of the lean HTTP/2 client: `listen::h1::h2_upstream`), metrics
//! and the access log are the lean path's own code. Only the answer differs: `H2Stream` turns
//! the upstream's head into HEADERS and its body (chunked framing decoded) into DATA within
//! the stream's send window, and its trailers into a trailer block. A gRPC call gets the
//! gateway's own answers as trailers-only `grpc-status` answers (as `proxy::grpc::local_answer`
//! gives them on the general path), is counted by the status it ended with, and, when its time
//! runs out mid-answer, ends with DEADLINE_EXCEEDED in trailers. Anything else — a body that
//! streams, a route the lean path hands to hyper, a head the HTTP/1.1 parser would not take, a
//! listener with client certificates, gRPC-Web — takes the general path
//! ([`super::stream::serve`]).

use super::body::H2Body;
use super::shared::{ConnShared, Inbox, SharedInbox};
use super::stream;
use crate::listen::h1::buffer::Buf;
use crate::listen::h1::conn::{
    lean_serves, timed, ClientAddr, Conn, Downstream, Due, Flow, IdleSlot, LocalResponse,
    ReadRequest, ResponseStart, Timer,
};
use crate::listen::h1::head::{
    parse_request, Field, FieldKind, RequestParse, ResponseFraming, ResponseHead,
};
use crate::listen::h1::rewrite;
use crate::proxy::body::{ActiveGuard, RequestBody};
use crate::proxy::grpc::{LocalError, PendingStatus};
use crate::proxy::{ConnInfo, Worker};
use crate::route::{self, HeaderLookup};
use crate::state::Snapshot;
use http::{HeaderName, Method};
use spillway_h2::{ErrorCode, RequestHead};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

/// Serves stream `id`: on the lean exchange when it can, else on the general path. `inbox` is
/// the request body's (`None` when the head came with END_STREAM); the driver passes one only
/// for a body declared at most [`LEAN_BODY_LIMIT`](crate::listen::h1::conn::LEAN_BODY_LIMIT)
/// long or not declared at all, which the lean exchange takes whole before it starts, as on
/// HTTP/1.1 (an undeclared one only if it is already whole: [`whole_body_len`]).
pub(crate) async fn serve(
    worker: Rc<Worker>,
    info: Rc<ConnInfo>,
    client: Rc<ClientAddr>,
    shared: Rc<ConnShared>,
    id: u32,
    head: RequestHead,
    inbox: Option<SharedInbox>,
) {
    if serve_lean(&worker, &info, &client, &shared, id, &head, inbox.as_ref()).await {
        return;
    }
    // Nothing of the body was taken: the general path reads it from the inbox.
    let body = H2Body::new(id, inbox, shared.signal.clone(), head.content_length());
    match stream::request(&head, RequestBody::H2(body)) {
        // Boxed: the general path's future is several times the lean one's, and every
        // stream's future would otherwise be that large.
        Ok(req) => Box::pin(stream::serve(worker, info, shared, id, req)).await,
        Err(_) => shared.conn.borrow_mut().reset(id, ErrorCode::PROTOCOL_ERROR),
    }
}

/// Moves the request body from `inbox` into `buf` as it arrives, giving each piece's bytes
/// back to the stream's window at once (bodies waiting whole must not starve the connection's
/// window), until the client ends it. `None` if it did not end within `limit` (or was reset).
/// Trailers are dropped: the body goes upstream with its declared length, as on hyper's path.
async fn take_body(
    inbox: &SharedInbox,
    shared: &ConnShared,
    id: u32,
    buf: &mut Buf,
    limit: Duration,
) -> Option<()> {
    let mut take = |inbox: &mut Inbox| -> Option<bool> {
        if inbox.reset.is_some() {
            return Some(false);
        }
        let mut taken = 0;
        while let Some(piece) = inbox.data.pop_front() {
            buf.put(&piece);
            taken += piece.len();
        }
        if taken > 0 {
            shared.signal.release(id, taken);
        }
        inbox.ended.then_some(true)
    };
    if let Some(ended) = take(&mut inbox.lock()) {
        return ended.then_some(());
    }
    let wait = poll_fn(|cx| {
        let mut inbox = inbox.lock();
        match take(&mut inbox) {
            Some(ended) => Poll::Ready(ended),
            None => {
                inbox.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    });
    let ended = tokio::time::timeout(limit, wait).await.unwrap_or(false);
    inbox.lock().reader = None;
    ended.then_some(())
}

/// Serves the request on the lean exchange; false (having sent nothing and taken nothing of
/// the body) when it is not one the lean exchange takes.
async fn serve_lean(
    worker: &Worker,
    info: &Rc<ConnInfo>,
    client: &ClientAddr,
    shared: &Rc<ConnShared>,
    id: u32,
    head: &RequestHead,
    inbox: Option<&SharedInbox>,
) -> bool {
    // Client certificates are turned into request fields on the general path only.
    if info.client_cert.get().is_some() {
        return false;
    }
    // A gRPC call gets the gateway's own answers as a `grpc-status`. gRPC-Web's answers are
    // read by browsers' libraries the general path speaks to (`proxy::grpc`).
    let content_type = head.fields().get(b"content-type");
    let grpc = crate::policy::render::is_grpc(content_type);
    if grpc && !crate::proxy::grpc::is_plain_grpc(content_type) {
        return false;
    }
    let start = worker.shared.now();
    let snap = worker.snapshot();
    let Some(listener) = snap.config.listeners.get(info.listener) else { return false };
    // Routed before anything is spelled: a route the lean exchange does not serve (an HTTP/2
    // cluster, as for gRPC) goes to the general path at once.
    let route = decoded_route(&snap, head);
    if route.is_some_and(|r| !lean_serves(&snap, r, true)) {
        return false;
    }
    // A body without a declared length (as gRPC clients send a unary call's) is taken only if
    // it came whole with its head: the lean exchange never waits on one that may stream.
    let undeclared = match (inbox, head.content_length()) {
        (Some(inbox), None) => match whole_body_len(&inbox.lock()) {
            Some(len) => Some(len),
            None => return false,
        },
        _ => None,
    };
    let lean = &worker.lean;
    let mut buf = lean.take_buf();
    let mut fields = lean.take_fields();
    let parsed = if write_h1_head(&mut buf, head, undeclared) {
        parse_request(buf.filled(), &mut fields)
    } else {
        RequestParse::Partial
    };
    let h1 = match parsed {
        // A body is declared (the driver checked) exactly when the inbox is there.
        RequestParse::Complete(h1)
            if h1.len == buf.len() && (h1.content_length > 0) == inbox.is_some() =>
        {
            Some(h1)
        }
        _ => None,
    };
    let body_len = h1.as_ref().map_or(0, |h1| h1.content_length);
    // A body over the route's limit gets its 413 from the general path.
    let max_body = |r: &route::Route| {
        snap.config.routes.get(r.index).map_or(listener.max_body_bytes, |c| {
            crate::edge::max_body(listener.max_body_bytes, &c.edge)
        })
    };
    let Some(h1) = h1.filter(|_| route.is_none_or(|r| body_len <= max_body(r))) else {
        lean.give_buf(buf);
        lean.give_fields(fields);
        return false;
    };
    // In progress until answered (the connection's idle timeout and keep-alive probe).
    let _active = ActiveGuard::new(info.clone());
    // Released however the exchange ends (a client reset drops this future at an await).
    let slot = IdleSlot::register(worker);
    let mut timer = Timer { sleep: lean.take_timer(), worker, slot: slot.index };
    let mut out = lean.take_out();
    let proto: &'static [u8] = if info.proto.as_bytes() == b"https" { b"https" } else { b"http" };
    // A gRPC call is counted by the status it ends with, under its route (or the gateway's
    // `no_route` counters).
    let grpc = grpc.then(|| {
        let stats = route.map_or(&snap.no_route, |r| &r.stats);
        PendingStatus::new(stats.grpc_counter(worker.id))
    });
    let down = H2Stream {
        shared: shared.clone(),
        id,
        proto,
        idle_timeout: listener.idle_timeout,
        ended: false,
        grpc,
        cut_by_deadline: false,
    };
    let mut conn = Conn { worker, slot: slot.index, listener, client, down };
    // Within the route's body timeout, else the idle timeout; a body that does not come whole
    // in time is answered 408 (the codec already holds it to its declared length).
    let body_timeout = route
        .and_then(|r| snap.config.routes.get(r.index))
        .and_then(|r| r.edge.request_limits.as_ref())
        .and_then(|l| l.body_timeout);
    let limit = body_timeout.unwrap_or(listener.idle_timeout);
    let whole = match inbox {
        Some(inbox) => {
            buf.reserve_total(buf.len() + body_len as usize);
            take_body(inbox, shared, id, &mut buf, limit).await.is_some()
        }
        None => true,
    };
    if whole {
        let read = ReadRequest {
            snap: &snap,
            route,
            request: buf.filled(),
            head: &h1,
            fields: &fields,
            start,
            close: false,
        };
        conn.serve_read(read, &mut timer, &mut out).await;
    } else {
        let (status, reason) = (408, "Request Timeout");
        let body = crate::proxy::errors::REQUEST_BODY_TIMEOUT;
        let _ = conn.reply_json(&mut timer, &mut out, status, reason, body, &h1, false, &[]).await;
        if let Some(route) = route {
            let elapsed = worker.shared.now().saturating_duration_since(start);
            route.stats.record(worker.id, status, elapsed);
        }
    }
    if !conn.down.ended && !conn.down.end_cut_grpc_answer() {
        // The answer was cut short (the upstream broke mid-body, or the time ran out): the
        // client learns it from the reset, as from a closed connection on HTTP/1.1; a gRPC
        // caller whose time ran out gets DEADLINE_EXCEEDED in trailers instead.
        shared.conn.borrow_mut().reset(id, ErrorCode::INTERNAL_ERROR);
        if let Some(pending) = conn.down.grpc.take() {
            pending.broke();
        }
    }
    lean.give_timer(timer.sleep);
    lean.give_out(out);
    lean.give_buf(buf);
    lean.give_fields(fields);
    true
}

/// The route of the decoded head, looked up as the lean HTTP/1.1 path looks one up (`host`
/// field, else `:authority`, without its port; the path before `?`; text that is not UTF-8
/// as empty). Header matches see a field's first value, as on the general path (so a match
/// on `cookie` sees the first crumb, not the crumbs joined as they are sent upstream).
fn decoded_route<'s>(snap: &'s Snapshot, head: &RequestHead) -> Option<&'s route::Route> {
    let method = Method::from_bytes(head.method()).ok()?;
    let host = head.fields().get(b"host").or(head.authority()).unwrap_or_default();
    let path = head.path()?.split(|&b| b == b'?').next().unwrap_or_default();
    let text = |bytes| std::str::from_utf8(bytes).unwrap_or("");
    let host = route::host_without_port(text(host));
    snap.router.route(&method, host, text(path), &DecodedFields(head.fields()))
}

/// Route header matches on a decoded HTTP/2 head (first value of a field).
struct DecodedFields<'h>(&'h spillway_h2::Fields);

impl HeaderLookup for DecodedFields<'_> {
    fn header(&self, name: &HeaderName) -> Option<&[u8]> {
        self.0.get(name.as_str().as_bytes())
    }
}

/// The length of a request body that has arrived whole (ended, not reset, no trailers), if
/// it is one the lean exchange takes (at most `LEAN_BODY_LIMIT`).
pub(crate) fn whole_body_len(inbox: &Inbox) -> Option<u64> {
    if !inbox.ended || inbox.reset.is_some() || inbox.trailers.is_some() {
        return None;
    }
    let len: usize = inbox.data.iter().map(|d| d.len()).sum();
    let len = len as u64;
    (len <= crate::listen::h1::conn::LEAN_BODY_LIMIT).then_some(len)
}

/// Spells `head` as an HTTP/1.1 request head into `buf`: request line from `:method` and
/// `:path`, `host` from `:authority` unless a `host` field came, the fields as they came with
/// the `cookie` crumbs joined into one field (RFC 9113 §8.2.3), and `content-length:
/// undeclared` when given (a body that came whole without one). False when it has no `:path`
/// (CONNECT).
fn write_h1_head(buf: &mut Buf, head: &RequestHead, undeclared: Option<u64>) -> bool {
    let Some(path) = head.path() else { return false };
    // An authority the general path would refuse (hyper's `Uri`) is left to it.
    if head.authority().is_some_and(|a| !authority_ok(a)) {
        return false;
    }
    let out = buf;
    out.put(head.method());
    out.put(b" ");
    out.put(path);
    out.put(b" HTTP/1.1\r\n");
    let has_host = head.fields().get(b"host").is_some();
    if let (false, Some(authority)) = (has_host, head.authority()) {
        out.put_field(b"host", authority);
    }
    let mut cookies = 0;
    for (name, value) in head.fields().iter() {
        if name == b"cookie" {
            cookies += 1;
        } else {
            out.put_field(name, value);
        }
    }
    if let Some(len) = undeclared {
        let mut digits = [0u8; 20];
        out.put_field(b"content-length", crate::proxy::headers::decimal(len, &mut digits));
    }
    if cookies > 0 {
        out.put(b"cookie: ");
        let crumbs = head.fields().iter().filter(|(n, _)| *n == b"cookie");
        for (i, (_, value)) in crumbs.enumerate() {
            if i > 0 {
                out.put(b"; ");
            }
            out.put(value);
        }
        out.put(b"\r\n");
    }
    out.put(b"\r\n");
    true
}

/// Whether `authority` is made of the characters RFC 3986 §3.2 allows there (unreserved,
/// percent-encoded, sub-delims, `:`, `@`, `[`, `]`): no whitespace, no controls, nothing that
/// would make the `host` field mean something else.
fn authority_ok(authority: &[u8]) -> bool {
    !authority.is_empty()
        && authority.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                        | b':'
                        | b'@'
                        | b'['
                        | b']'
                )
        })
}

/// One HTTP/2 stream as the lean exchange's client side.
struct H2Stream {
    shared: Rc<ConnShared>,
    id: u32,
    proto: &'static [u8],
    /// Bounds each wait for send window (a client that stops reading).
    idle_timeout: Duration,
    /// END_STREAM was sent: the answer is complete.
    ended: bool,
    /// A gRPC call's status, counted once as its answer ends (CANCELLED if the stream goes
    /// first); `None` for other requests.
    grpc: Option<PendingStatus>,
    /// The answer is being cut because the request's time ran out.
    cut_by_deadline: bool,
}

/// Whether an upstream response field stays out of an HTTP/2 response: what HTTP/1.1 drops at
/// this hop (`TE` included: it has no place in a response), and what HTTP/2 forbids
/// (RFC 9113 §8.2.2: `transfer-encoding` too).
fn not_forwarded(buf: &[u8], fields: &[Field], field: &Field, head: &ResponseHead) -> bool {
    field.kind == FieldKind::Te
        || rewrite::dropped(buf, fields, field, head.connection)
        || spillway_h2::head::connection_specific(field.name.of(buf))
}

impl H2Stream {
    /// Counts the gRPC call as ended with `code` (UNKNOWN for `None`), once.
    fn grpc_ended(&mut self, code: Option<u32>) {
        if let Some(pending) = self.grpc.take() {
            pending.ended_with_code(code);
        }
    }

    /// Ends a gRPC answer the gateway cut (its head sent) with the trailers that say why;
    /// false if it could not (the stream is gone, or the answer is not a gRPC one).
    fn end_cut_grpc_answer(&mut self) -> bool {
        if self.grpc.is_none() || self.ended || !self.cut_by_deadline {
            return false;
        }
        let (code, message) = crate::proxy::grpc::Cut::DeadlineExceeded.status();
        let mut digits = [0u8; 20];
        let fields = [
            (&b"grpc-status"[..], crate::proxy::headers::decimal(u64::from(code), &mut digits)),
            (&b"grpc-message"[..], message.as_bytes()),
        ];
        let sent = self.shared.conn.borrow_mut().send_trailers(self.id, &fields).is_ok();
        self.ended = sent;
        if sent {
            self.grpc_ended(Some(u32::from(code)));
        }
        sent
    }

    /// Sends the gateway's own error or refusal to a gRPC caller as a trailers-only answer
    /// (HTTP 200, the status in the head, END_STREAM), as `proxy::grpc::local_answer` does on
    /// the general path: `fields` (retry hints, CORS) kept but for the body's type and length.
    fn respond_grpc<'f>(
        &mut self,
        local: &LocalResponse<'_>,
        answer: LocalError,
        fields: impl IntoIterator<Item = (&'f [u8], &'f [u8]), IntoIter: Clone>,
    ) -> Flow {
        let kept = fields.into_iter().filter(|(n, _)| {
            !n.eq_ignore_ascii_case(b"content-type") && !n.eq_ignore_ascii_case(b"content-length")
        });
        // Lent for the shorter life of the fields added below.
        let shorter: Shorten<'f, '_> = |(n, v)| (n, v);
        let kept = kept.map(shorter);
        let mut digits = [[0; 20]; 2];
        let grpc = answer.trailers_only_fields(&mut digits).into_iter().flatten();
        let grpc = grpc.map(|(n, v)| (n.as_bytes(), v)).chain([(&b"date"[..], local.date)]);
        let fields = kept.chain(grpc);
        let sent = self.shared.conn.borrow_mut().send_response_fields(self.id, 200, fields, true);
        if sent.is_err() {
            return Flow::Broken;
        }
        self.ended = true;
        self.grpc_ended(Some(u32::from(answer.code)));
        Flow::Sent
    }

    /// Sends `bytes` as DATA (END_STREAM with the last when `end`), waiting for window and
    /// output room, each wait within the idle timeout.
    async fn send(&mut self, timer: &mut Timer<'_>, mut bytes: &[u8], end: bool) -> Result<(), ()> {
        loop {
            let mut due = Due::after(self.idle_timeout);
            let id = self.id;
            let room = self.shared.send_room(id, bytes.is_empty() && end);
            match timed(timer, &mut due, room).await {
                Ok(true) => {}
                _ => return Err(()),
            }
            let sent = self.shared.conn.borrow_mut().send_data(id, bytes, end).map_err(|_| ())?;
            bytes = &bytes[sent..];
            if bytes.is_empty() {
                self.ended |= end;
                return Ok(());
            }
        }
    }
}

impl Downstream for H2Stream {
    const DECODES_CHUNKS: bool = true;
    const LOWER_CASE_NAMES: bool = true;

    fn proto(&self) -> &'static [u8] {
        self.proto
    }

    fn grpc(&self) -> bool {
        self.grpc.is_some()
    }

    fn cut_by_deadline(&mut self) {
        self.cut_by_deadline = true;
    }

    async fn respond_local<'f>(
        &mut self,
        timer: &mut Timer<'_>,
        _out: &mut Vec<u8>,
        local: &LocalResponse<'_>,
        fields: impl IntoIterator<Item = (&'f [u8], &'f [u8]), IntoIter: Clone>,
    ) -> Flow {
        if let (Some(_), Some(answer)) = (&self.grpc, local.grpc) {
            return self.respond_grpc(local, answer, fields);
        }
        let mut digits = [0u8; 20];
        let length = crate::proxy::headers::decimal(local.body.len() as u64, &mut digits);
        let framing = [(&b"content-length"[..], length), (&b"date"[..], local.date)];
        let fields = ThenFields { first: fields.into_iter(), then: framing };
        let body_follows = !local.head_request && !local.body.is_empty();
        let sent = self.shared.conn.borrow_mut().send_response_fields(
            self.id,
            local.status,
            fields,
            !body_follows,
        );
        if sent.is_err() {
            return Flow::Broken;
        }
        if !body_follows {
            self.ended = true;
            return Flow::Sent;
        }
        match self.send(timer, local.body, true).await {
            Ok(()) => Flow::Sent,
            Err(()) => Flow::Broken,
        }
    }

    async fn interim(
        &mut self,
        _timer: &mut Timer<'_>,
        _buf: &[u8],
        _head: &ResponseHead,
        _fields: &[Field],
    ) -> Result<(), ()> {
        // Interim answers are not passed on over HTTP/2 (as on the general path).
        Ok(())
    }

    fn start_response(&mut self, _out: &mut Vec<u8>, start: &ResponseStart<'_>) -> Result<(), ()> {
        let (buf, head) = (start.buf, start.head);
        let kept = start
            .fields
            .iter()
            .filter(|f| !not_forwarded(buf, start.fields, f, head))
            .map(|f| (f.name.of(buf), f.value.of(buf)));
        let decoration =
            start.decoration.iter().map(|(n, v)| (n.as_str().as_bytes(), v.as_bytes()));
        let request_id = start.request_id.filter(|_| !head.has_request_id);
        let added = [
            request_id.map(|id| (&b"x-request-id"[..], id)),
            start.date.map(|date| (&b"date"[..], date)),
        ];
        let fields = kept.chain(decoration).chain(added.into_iter().flatten());
        let empty = matches!(head.framing, ResponseFraming::Empty | ResponseFraming::Length(0));
        let sent =
            self.shared.conn.borrow_mut().send_response_fields(self.id, head.status, fields, empty);
        self.ended = empty && sent.is_ok();
        if self.ended {
            // A trailers-only answer: its status is in the head.
            self.grpc_ended(start.grpc_status);
        }
        sent.map(|_| ()).map_err(|_| ())
    }

    async fn send_body(
        &mut self,
        timer: &mut Timer<'_>,
        _out: &mut Vec<u8>,
        _head_pending: bool,
        bytes: &[u8],
        end: bool,
    ) -> Result<(), ()> {
        if self.ended || (bytes.is_empty() && !end) {
            return Ok(());
        }
        self.send(timer, bytes, end).await?;
        if end {
            // Ended without trailers: no status came.
            self.grpc_ended(None);
        }
        Ok(())
    }

    async fn send_trailers(&mut self, timer: &mut Timer<'_>, section: &[u8]) -> Result<(), ()> {
        if self.ended {
            return Ok(());
        }
        // Names in lower case, as HTTP/2 wants them.
        let kept: Vec<(Vec<u8>, &[u8])> = crate::listen::h1::chunked::trailer_fields(section)
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .filter(|(name, _)| crate::listen::h1::chunked::passed_on_in_trailers(name))
            .collect();
        let fields: Vec<FieldPair<'_>> = kept.iter().map(|(n, v)| (n.as_slice(), *v)).collect();
        let sent = !fields.is_empty()
            && self.shared.conn.borrow_mut().send_trailers(self.id, &fields).is_ok();
        if sent {
            self.ended = true;
            let status = fields.iter().find(|(n, _)| *n == b"grpc-status");
            self.grpc_ended(status.and_then(|(_, v)| crate::proxy::grpc::status_code_of(v)));
            return Ok(());
        }
        // Nothing to send, or fields the codec refuses: the body ends without trailers.
        self.send_body(timer, &mut Vec::new(), false, &[], true).await
    }

    async fn send_trailer_fields(
        &mut self,
        timer: &mut Timer<'_>,
        fields: &spillway_h2::Fields,
    ) -> Result<(), ()> {
        if self.ended {
            return Ok(());
        }
        // Decoded by the upstream connection's codec: nothing HTTP/2 forbids.
        let sent = !fields.is_empty()
            && self.shared.conn.borrow_mut().send_trailers_fields(self.id, fields.iter()).is_ok();
        if sent {
            self.ended = true;
            let status = fields.get(b"grpc-status");
            self.grpc_ended(status.and_then(crate::proxy::grpc::status_code_of));
            return Ok(());
        }
        self.send_body(timer, &mut Vec::new(), false, &[], true).await
    }
}

/// A field as the codec takes it.
type FieldPair<'a> = (&'a [u8], &'a [u8]);

/// Lends a field for a shorter time.
type Shorten<'f, 'a> = fn(FieldPair<'f>) -> FieldPair<'a>;

/// `first`'s fields, then two more that live shorter (walked twice by the codec, so `Clone`).
#[derive(Clone)]
struct ThenFields<'a, I> {
    first: I,
    then: [FieldPair<'a>; 2],
}

impl<'a, 'f: 'a, I> IntoIterator for ThenFields<'a, I>
where
    I: Iterator<Item = FieldPair<'f>>,
{
    type Item = FieldPair<'a>;
    type IntoIter = std::iter::Chain<
        std::iter::Map<I, Shorten<'f, 'a>>,
        std::array::IntoIter<FieldPair<'a>, 2>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        let shorter: Shorten<'f, 'a> = |(n, v)| (n, v);
        self.first.map(shorter).chain(self.then)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_with_whitespace_or_controls_are_refused() {
        for ok in [&b"example.com"[..], b"127.0.0.1:8080", b"[::1]:443", b"user@host", b"a-b_c~d"] {
            assert!(authority_ok(ok), "{:?}", String::from_utf8_lossy(ok));
        }
        for bad in [&b""[..], b"a b", b"a\tb", b"host/path", b"a\x7fb", b"h\xc3\xa9"] {
            assert!(!authority_ok(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }
}
