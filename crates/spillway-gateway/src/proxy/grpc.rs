//! What a gRPC caller sees of the gateway's own decisions on the general path.
//!
//! - [`MessageLimit`]: the listener's `max_body_bytes` applied to each message of a gRPC
//!   stream, as a gRPC server's receive limit is, rather than to the stream's total — a
//!   long-lived client stream is not cut because it has carried many messages.
//! - [`grpc_status`]: the `grpc-status` code of a gateway answer given as an HTTP status, so
//!   that a gRPC client gets a status it acts on (RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED,
//!   UNAVAILABLE, ...) instead of an HTTP error it can only call UNKNOWN.
//! - [`local_answer`] and [`cut_trailers`]: the two shapes that status takes — a trailers-only
//!   response when nothing was sent yet, trailers ending the response in flight when the
//!   gateway cuts a call whose response has started (a request message over the limit, the
//!   request's time spent). A refusal's retry hint goes as `grpc-retry-pushback-ms`.
//! - [`counted_status`]: the other way round, what an upstream's gRPC answer counts as. A call
//!   that fails before any message is answered trailers-only — HTTP 200 with its `grpc-status`
//!   in the head — so outlier detection, breakers, retries and the route's counters read its
//!   HTTP equivalent (UNAVAILABLE a 503, RESOURCE_EXHAUSTED a 429, ...) instead of a success.
//!   [`head_status`] is the code itself, for the access log.
//! - [`messages_framed`]: whether a body's messages are on the wire (not gRPC-Web's base64).

use super::body::{BodyTooLarge, ResponseBody, ResponseBodyError};
use super::headers::{GRPC_MESSAGE, GRPC_STATUS};
use crate::route::stats::GrpcCounter;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

/// Length of a gRPC message's prefix: a compressed flag and a 4-byte big-endian length.
pub const PREFIX_LEN: usize = 5;

/// The message length a prefix declares.
pub fn declared_len(prefix: &[u8; PREFIX_LEN]) -> u32 {
    u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]])
}

/// `message` (uncompressed) with its prefix: one gRPC message as it goes on the wire.
pub fn framed(message: &[u8]) -> bytes::Bytes {
    let mut out = Vec::with_capacity(PREFIX_LEN + message.len());
    out.push(0);
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
    bytes::Bytes::from(out)
}

/// Follows the length-prefixed messages of a gRPC request body as it streams and refuses the
/// first one declared longer than the limit (at its prefix, before its bytes are sent on).
#[derive(Debug, Clone)]
pub struct MessageLimit {
    max: u64,
    /// The prefix being read, and how much of it has come.
    prefix: [u8; PREFIX_LEN],
    have: usize,
    /// Bytes of the current message still to come (0: a prefix is next).
    left: u64,
    /// Set once a message is refused; shared with the call's response body
    /// ([`MessageLimit::refusal`]), which hyper's client would otherwise not tell why its
    /// stream was reset.
    refused: Arc<AtomicBool>,
}

impl MessageLimit {
    /// Messages of at most `max` bytes (prefix excluded) pass.
    pub fn new(max: u64) -> MessageLimit {
        MessageLimit { max, prefix: [0; PREFIX_LEN], have: 0, left: 0, refused: Arc::default() }
    }

    /// True once a message has been refused.
    pub fn refusal(&self) -> Arc<AtomicBool> {
        self.refused.clone()
    }

    /// Takes the next piece of the body; an error once a message is declared longer than the
    /// limit (and for every piece after it).
    pub fn admit(&mut self, mut data: &[u8]) -> Result<(), BodyTooLarge> {
        if self.refused.load(Relaxed) {
            return Err(BodyTooLarge);
        }
        while !data.is_empty() {
            if self.left > 0 {
                let n = self.left.min(data.len() as u64);
                self.left -= n;
                data = &data[n as usize..];
                continue;
            }
            let n = (PREFIX_LEN - self.have).min(data.len());
            self.prefix[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have == PREFIX_LEN {
                self.have = 0;
                let len = declared_len(&self.prefix);
                if u64::from(len) > self.max {
                    self.refused.store(true, Relaxed);
                    return Err(BodyTooLarge);
                }
                self.left = u64::from(len);
            }
        }
        Ok(())
    }
}

/// The `grpc-status` of a gateway answer given as `status` (gRPC's codes, chosen for what the
/// gateway means by each status rather than by the generic HTTP mapping: its 504 is a spent
/// deadline, its 413 and 431 a limit).
pub fn grpc_status(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 | 500 => 13,       // INTERNAL
        401 => 16,             // UNAUTHENTICATED
        403 => 7,              // PERMISSION_DENIED
        404 => 12,             // UNIMPLEMENTED
        408 | 504 => 4,        // DEADLINE_EXCEEDED
        413 | 414 | 431 => 8,  // RESOURCE_EXHAUSTED
        429 | 502 | 503 => 14, // UNAVAILABLE
        _ => 2,                // UNKNOWN
    }
}

/// Whether `content-type` names gRPC itself (`application/grpc`, `+proto` and the like), not
/// gRPC-Web.
pub fn is_plain_grpc(content_type: Option<&[u8]>) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    content_type.is_some_and(|ct| {
        ct.len() >= GRPC.len()
            && ct[..GRPC.len()].eq_ignore_ascii_case(GRPC)
            && matches!(ct.get(GRPC.len()), None | Some(b'+' | b';' | b' '))
    })
}

/// Whether a gRPC call's body (by its `content-type`) is length-prefixed messages as sent:
/// gRPC and gRPC-Web are; gRPC-Web's `-text` variant is base64 of them.
pub fn messages_framed(content_type: Option<&[u8]>) -> bool {
    const TEXT: &[u8] = b"application/grpc-web-text";
    !content_type
        .is_some_and(|ct| ct.len() >= TEXT.len() && ct[..TEXT.len()].eq_ignore_ascii_case(TEXT))
}

/// The HTTP status a gRPC `code` stands for (the mapping of `google.rpc.Code`).
pub fn http_equivalent(code: u32) -> u16 {
    match code {
        0 => 200,
        1 => 499,          // CANCELLED
        3 | 9 | 11 => 400, // INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
        4 => 504,          // DEADLINE_EXCEEDED
        5 => 404,          // NOT_FOUND
        6 | 10 => 409,     // ALREADY_EXISTS, ABORTED
        7 => 403,          // PERMISSION_DENIED
        8 => 429,          // RESOURCE_EXHAUSTED
        12 => 501,         // UNIMPLEMENTED
        14 => 503,         // UNAVAILABLE
        16 => 401,         // UNAUTHENTICATED
        _ => 500,          // UNKNOWN, INTERNAL, DATA_LOSS and codes not defined
    }
}

/// What an upstream's answer to a gRPC call counts as: the HTTP equivalent of its
/// `grpc-status` when it came in the head (a trailers-only answer), else its HTTP status (a
/// status still to come in trailers is not known when the answer is counted).
pub fn counted_status(status: StatusCode, headers: &HeaderMap) -> u16 {
    counted_status_of(status.as_u16(), status_field(headers).map(HeaderValue::as_bytes))
}

/// [`counted_status`] from the HTTP status and the head's `grpc-status` value, as the lean
/// exchange reads them.
pub fn counted_status_of(status: u16, grpc_status: Option<&[u8]>) -> u16 {
    if status != 200 {
        return status;
    }
    match grpc_status {
        // A status that is not a number is a broken answer.
        Some(value) => status_code_of(value).map_or(500, http_equivalent),
        None => 200,
    }
}

/// The `grpc-status` of an answer whose head is about to go to a gRPC caller, when the head
/// says it: the gateway's own answer (given as one later, [`local_answer`]) or a trailers-only
/// one. `None` for an answer whose status comes in trailers.
pub fn head_status<B>(resp: &Response<B>) -> Option<u32> {
    if let Some(local) = resp.extensions().get::<LocalError>() {
        return Some(u32::from(local.code));
    }
    status_in(resp.headers())
}

/// The `grpc-status` `fields` give, if they give a number.
pub(crate) fn status_in(fields: &HeaderMap) -> Option<u32> {
    status_code(status_field(fields)?)
}

/// A `grpc-status` value's code, if it is a number.
fn status_code(value: &HeaderValue) -> Option<u32> {
    status_code_of(value.as_bytes())
}

/// A `grpc-status` value's code, if it is a number.
pub fn status_code_of(value: &[u8]) -> Option<u32> {
    std::str::from_utf8(value).ok()?.trim().parse().ok()
}

/// The `grpc-status` field of `fields`. A gRPC head or trailer block holds a few fields: they
/// are walked (a name compare each) rather than `grpc-status` hashed, which costs more.
fn status_field(fields: &HeaderMap) -> Option<&HeaderValue> {
    if fields.len() > 8 {
        return fields.get(GRPC_STATUS);
    }
    fields.iter().find_map(|(name, value)| (*name == GRPC_STATUS).then_some(value))
}

/// CANCELLED: the caller went away before the answer ended.
const CANCELLED: u32 = 1;
/// UNKNOWN: an answer that ended without a (numeric) `grpc-status`.
const UNKNOWN: u32 = 2;
/// UNAVAILABLE: the answer broke off (reset, connection lost).
const UNAVAILABLE: u32 = 14;

/// A gRPC call whose status is still to come, in its answer's trailers: counted once in its
/// route's `spillway_grpc_calls_total` when the answer ends ([`ResponseBody`] tells it how), or
/// as CANCELLED when the answer is dropped first. A status known from the head (trailers-only,
/// or the gateway's own answer) is counted at once instead, with the route's other counters.
#[derive(Debug)]
pub struct PendingStatus {
    counter: GrpcCounter,
    counted: bool,
}

impl PendingStatus {
    /// A call counted by `counter` (its route's, on the worker that answers it).
    pub fn new(counter: GrpcCounter) -> PendingStatus {
        PendingStatus { counter, counted: false }
    }

    /// The answer ended with these trailers: their status, UNKNOWN without one.
    pub fn ended_with(mut self, trailers: &HeaderMap) {
        self.count(status_in(trailers).unwrap_or(UNKNOWN));
    }

    /// The answer ended with the status `code` (UNKNOWN if `None`: none came, or not a
    /// number).
    pub fn ended_with_code(mut self, code: Option<u32>) {
        self.count(code.unwrap_or(UNKNOWN));
    }

    /// The answer ended without trailers: UNKNOWN (no status came).
    pub fn ended_without_status(mut self) {
        self.count(UNKNOWN);
    }

    /// The answer broke off: UNAVAILABLE, as a caller's library reports a broken stream.
    pub fn broke(mut self) {
        self.count(UNAVAILABLE);
    }

    fn count(&mut self, code: u32) {
        self.counter.record(code);
        self.counted = true;
    }
}

impl Drop for PendingStatus {
    fn drop(&mut self) {
        if !self.counted {
            self.count(CANCELLED);
        }
    }
}

/// The gateway's own error answer or refusal, kept on the response (laid out for HTTP) so
/// that a gRPC request's is given as a gRPC status once it has been counted and logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalError {
    /// The `grpc-status`.
    pub code: u8,
    /// The `grpc-message`: the error's name, as in the HTTP answer's body.
    pub message: &'static str,
    /// When to try again, given as `grpc-retry-pushback-ms` (what gRPC clients' retry
    /// policies read, where an HTTP client reads `Retry-After`).
    pub pushback: Option<std::time::Duration>,
}

impl LocalError {
    /// One of `proxy::errors`' bodies (`{"error":"NAME"...`) answered with `status`.
    pub fn from_body(body: &'static str, status: StatusCode) -> LocalError {
        let name = body.strip_prefix("{\"error\":\"").and_then(|rest| rest.split('"').next());
        LocalError { code: grpc_status(status), message: name.unwrap_or("error"), pushback: None }
    }

    /// A refusal (its reason's own gRPC status, from `spillway_core::decision`, and its
    /// retry hint).
    pub fn refusal(rejection: &spillway_core::Rejection) -> LocalError {
        let reason = rejection.reason;
        LocalError {
            code: reason.grpc_status(),
            message: reason.as_str(),
            pushback: rejection.retry_after,
        }
    }
}

impl LocalError {
    /// What this answer's head carries as a gRPC one, after the HTTP answer's fields but its
    /// body's type and length (`:status` 200, END_STREAM): the gRPC content type, status,
    /// message and retry hint, the numbers written into `digits`. Both data paths lay out
    /// trailers-only answers from it ([`local_answer`], the lean HTTP/2 server's `H2Stream`).
    pub fn trailers_only_fields<'a>(
        &self,
        digits: &'a mut [[u8; 20]; 2],
    ) -> [Option<(&'static str, &'a [u8])>; 4] {
        let [code, pushback] = digits;
        let pushback = self.pushback.map(|after| {
            let ms = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
            ("grpc-retry-pushback-ms", super::headers::decimal(ms, pushback))
        });
        [
            Some(("content-type", &b"application/grpc"[..])),
            Some(("grpc-status", super::headers::decimal(u64::from(self.code), code))),
            Some(("grpc-message", self.message.as_bytes())),
            pushback,
        ]
    }
}

/// `resp`, given as a trailers-only gRPC answer when it is one of the gateway's own error
/// answers or refusals (marked with [`LocalError`]); any other response is left as it is.
pub fn local_answer(resp: Response<ResponseBody>) -> Response<ResponseBody> {
    let Some(local) = resp.extensions().get::<LocalError>().copied() else {
        return resp;
    };
    let (mut parts, _) = resp.into_parts();
    parts.status = StatusCode::OK;
    let headers = &mut parts.headers;
    headers.remove(header::CONTENT_LENGTH);
    let mut digits = [[0; 20]; 2];
    for (name, value) in local.trailers_only_fields(&mut digits).into_iter().flatten() {
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.insert(http::HeaderName::from_static(name), value);
        }
    }
    Response::from_parts(parts, ResponseBody::empty())
}

/// Why the gateway ended a gRPC response in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// A request message passed the body limit.
    MessageTooLarge,
    /// The request's time (route timeout or propagated deadline) or the body timeout passed.
    DeadlineExceeded,
}

impl Cut {
    /// The `grpc-status` and `grpc-message` a cut answer ends with.
    pub fn status(self) -> (u8, &'static str) {
        match self {
            Cut::MessageTooLarge => (8, "request message larger than the gateway's limit"),
            Cut::DeadlineExceeded => (4, "deadline exceeded at the gateway"),
        }
    }
}

/// Why the gateway cut a response body that broke with `e`, if the gateway did (rather than
/// the upstream or the client); `message_refused` is the call's [`MessageLimit::refusal`].
pub(crate) fn cut_of(e: &ResponseBodyError, message_refused: &AtomicBool) -> Option<Cut> {
    if message_refused.load(Relaxed) {
        return Some(Cut::MessageTooLarge);
    }
    let fault = match e {
        ResponseBodyError::Timeout => return Some(Cut::DeadlineExceeded),
        ResponseBodyError::H2(e) => e.request_body_error().and_then(super::body_fault_in),
        ResponseBodyError::Upstream(e) => super::client_body_fault(e),
        ResponseBodyError::Exchange(_) => None,
    };
    fault.map(|(status, _)| match status {
        StatusCode::PAYLOAD_TOO_LARGE => Cut::MessageTooLarge,
        _ => Cut::DeadlineExceeded,
    })
}

/// The trailers that end a response the gateway cut.
pub fn cut_trailers(cut: Cut) -> HeaderMap {
    let (code, message) = cut.status();
    let mut trailers = HeaderMap::with_capacity(2);
    trailers.insert(GRPC_STATUS, HeaderValue::from(u16::from(code)));
    trailers.insert(GRPC_MESSAGE, HeaderValue::from_static(message));
    trailers
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_pending_status_is_counted_once_as_the_answer_ended() {
        let stats = crate::route::stats::RouteStats::new("r", "c", 1);
        let trailers = |v: &'static str| {
            let mut t = HeaderMap::new();
            t.insert(GRPC_STATUS, HeaderValue::from_static(v));
            t
        };
        PendingStatus::new(stats.grpc_counter(0)).ended_with(&trailers("14"));
        PendingStatus::new(stats.grpc_counter(0)).ended_with(&trailers(" 0 "));
        PendingStatus::new(stats.grpc_counter(0)).ended_with(&trailers("x"));
        PendingStatus::new(stats.grpc_counter(0)).ended_with(&trailers("99"));
        PendingStatus::new(stats.grpc_counter(0)).ended_without_status();
        PendingStatus::new(stats.grpc_counter(0)).broke();
        drop(PendingStatus::new(stats.grpc_counter(0)));
        let counts: Vec<u64> = (0..17).map(|c| stats.grpc_count(c)).collect();
        // OK 1, CANCELLED 1 (dropped), UNKNOWN 3 ("x", 99, none), UNAVAILABLE 2 (14, broke).
        let mut want = vec![0; 17];
        (want[0], want[1], want[2], want[14]) = (1, 1, 3, 2);
        assert_eq!(counts, want);
    }

    fn message(len: usize) -> Vec<u8> {
        framed(&vec![b'x'; len]).to_vec()
    }

    #[test]
    fn messages_within_the_limit_pass_however_many_there_are() {
        let mut limit = MessageLimit::new(100);
        for _ in 0..10_000 {
            assert!(limit.admit(&message(100)).is_ok());
        }
    }

    #[test]
    fn a_message_over_the_limit_is_refused_at_its_prefix_and_after() {
        let mut limit = MessageLimit::new(100);
        assert!(limit.admit(&message(10)).is_ok());
        assert!(limit.admit(&message(101)[..5]).is_err());
        assert!(limit.admit(b"x").is_err());
    }

    #[test]
    fn an_empty_message_is_a_prefix_alone() {
        let mut limit = MessageLimit::new(0);
        assert!(limit.admit(&message(0)).is_ok());
        assert!(limit.admit(&message(0)).is_ok());
        assert!(limit.admit(&message(1)).is_err());
    }

    proptest! {
        /// Where the body is split into pieces does not change the verdict.
        #[test]
        fn the_verdict_does_not_depend_on_how_the_body_is_split(
            lens in proptest::collection::vec(0usize..300, 1..8),
            cuts in proptest::collection::vec(1usize..50, 1..40),
        ) {
            let body: Vec<u8> = lens.iter().flat_map(|&l| message(l)).collect();
            let whole = MessageLimit::new(200).admit(&body).is_ok();
            prop_assert_eq!(whole, lens.iter().all(|&l| l <= 200));
            let mut limit = MessageLimit::new(200);
            let mut rest = &body[..];
            let mut ok = true;
            for cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let n = (*cut).min(rest.len());
                ok &= limit.admit(&rest[..n]).is_ok();
                rest = &rest[n..];
            }
            prop_assert_eq!(ok, whole);
        }
    }

    #[test]
    fn only_base64_text_bodies_are_not_read_as_framed_messages() {
        assert!(messages_framed(Some(b"application/grpc")));
        assert!(messages_framed(Some(b"application/grpc+proto")));
        assert!(messages_framed(Some(b"application/grpc-web+proto")));
        assert!(!messages_framed(Some(b"application/grpc-web-text")));
        assert!(!messages_framed(Some(b"Application/gRPC-Web-Text+proto")));
    }

    #[test]
    fn gateway_answers_map_to_the_status_a_grpc_client_acts_on() {
        assert_eq!(grpc_status(StatusCode::PAYLOAD_TOO_LARGE), 8);
        assert_eq!(grpc_status(StatusCode::GATEWAY_TIMEOUT), 4);
        assert_eq!(grpc_status(StatusCode::SERVICE_UNAVAILABLE), 14);
        assert_eq!(grpc_status(StatusCode::NOT_FOUND), 12);
        assert_eq!(grpc_status(StatusCode::IM_A_TEAPOT), 2);
    }

    #[test]
    fn a_trailers_only_answer_counts_as_its_http_equivalent() {
        let head = |code: Option<&'static str>| {
            let mut h = HeaderMap::new();
            if let Some(c) = code {
                h.insert("grpc-status", HeaderValue::from_static(c));
            }
            h
        };
        assert_eq!(counted_status(StatusCode::OK, &head(Some("14"))), 503);
        assert_eq!(counted_status(StatusCode::OK, &head(Some("8"))), 429);
        assert_eq!(counted_status(StatusCode::OK, &head(Some("4"))), 504);
        assert_eq!(counted_status(StatusCode::OK, &head(Some("3"))), 400);
        assert_eq!(counted_status(StatusCode::OK, &head(Some("0"))), 200);
        assert_eq!(counted_status(StatusCode::OK, &head(Some("x"))), 500);
        // Messages follow, the status comes in trailers: a 200 for now.
        assert_eq!(counted_status(StatusCode::OK, &head(None)), 200);
        // An HTTP error stays what it is.
        assert_eq!(counted_status(StatusCode::BAD_GATEWAY, &head(Some("0"))), 502);
        // Every code defined maps; an undefined one is a server error.
        assert!((0..=16).all(|c| http_equivalent(c) >= 200));
        assert_eq!(http_equivalent(99), 500);
    }

    #[test]
    fn the_head_status_is_the_gateways_own_or_a_trailers_only_one() {
        let mut local = Response::new(ResponseBody::empty());
        *local.status_mut() = StatusCode::GATEWAY_TIMEOUT;
        let timeout = LocalError::from_body(super::super::errors::UPSTREAM_TIMEOUT, local.status());
        local.extensions_mut().insert(timeout);
        assert_eq!(head_status(&local), Some(4));
        let mut trailers_only = Response::new(ResponseBody::empty());
        trailers_only.headers_mut().insert("grpc-status", HeaderValue::from_static("14"));
        assert_eq!(head_status(&trailers_only), Some(14));
        assert_eq!(head_status(&Response::new(ResponseBody::empty())), None);
    }

    #[test]
    fn a_refusal_keeps_its_own_grpc_status() {
        use spillway_core::{RejectReason, Rejection};
        let after = std::time::Duration::from_millis(1500);
        let limited =
            LocalError::refusal(&Rejection::new(RejectReason::RateLimited).retry_after(after));
        assert_eq!(limited, LocalError { code: 8, message: "rate_limited", pushback: Some(after) });
        let mut resp = Response::new(ResponseBody::empty());
        *resp.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        resp.extensions_mut().insert(limited);
        let resp = local_answer(resp);
        assert_eq!(resp.headers()["grpc-retry-pushback-ms"], "1500");
        let overloaded = LocalError::refusal(&Rejection::new(RejectReason::Overloaded));
        assert_eq!((overloaded.code, overloaded.pushback), (14, None));
        assert_eq!(LocalError::refusal(&Rejection::new(RejectReason::DeadlineExceeded)).code, 4);
    }

    #[test]
    fn a_local_error_becomes_a_trailers_only_answer_with_its_name() {
        let mut resp = Response::new(ResponseBody::full("{\"error\":\"no_route\"}\n"));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        let no_route = super::super::errors::NO_ROUTE;
        resp.extensions_mut().insert(LocalError::from_body(no_route, StatusCode::NOT_FOUND));
        let resp = local_answer(resp);
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "12");
        assert_eq!(resp.headers()["grpc-message"], "no_route");
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        assert!(http_body::Body::is_end_stream(resp.body()));
        // An answer that is not the gateway's own is left alone.
        let mut upstream = Response::new(ResponseBody::empty());
        *upstream.status_mut() = StatusCode::NOT_FOUND;
        assert_eq!(local_answer(upstream).status(), StatusCode::NOT_FOUND);
    }
}
