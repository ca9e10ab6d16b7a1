//! The lean HTTP/1.1 response-head parser (`listen::h1::head::parse_response`) and the rewrite
//! that sends the head to the client (`listen::h1::rewrite::write_response_head`).
//!
//! The first byte says whether the request was `HEAD`; the rest is the upstream's bytes.
//! Beyond "no panic": spans lie inside the head; the framing follows RFC 9112 §6.3 (no body for
//! `HEAD`, 1xx, 204, 304; never both `Content-Length` and `Transfer-Encoding`); a `101` is never
//! proxied; the head parsed again from its own bytes is the same; and the head written to the
//! client parses again with the same status.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spillway_gateway::listen::h1::head::{
    parse_response, FieldKind, ResponseError, ResponseFraming, ResponseParse, MAX_FIELDS,
};
use spillway_gateway::listen::h1::rewrite::write_response_head;

fuzz_target!(|input: &[u8]| {
    let Some((&flags, data)) = input.split_first() else {
        return;
    };
    let head_request = flags & 1 == 1;
    let mut fields = Vec::new();
    let Ok(ResponseParse::Complete(head)) = parse_response(data, head_request, &mut fields) else {
        return;
    };
    assert!(head.len <= data.len());
    assert!(head.reason.end() <= head.len);
    assert_ne!(head.status, 101);
    assert!(head.minor_version <= 1);
    for f in &fields {
        assert!(f.name.end() <= head.len && f.value.end() <= head.len);
        assert_eq!(f.kind, FieldKind::of(f.name.of(data)));
    }
    let has = |kind| fields.iter().any(|f| f.kind == kind);
    let no_body = head_request
        || (100..200).contains(&head.status)
        || head.status == 204
        || head.status == 304;
    if no_body {
        assert_eq!(head.framing, ResponseFraming::Empty);
    } else {
        assert!(!(has(FieldKind::ContentLength) && has(FieldKind::TransferEncoding)));
        match head.framing {
            ResponseFraming::Empty => panic!("no-body framing for status {}", head.status),
            ResponseFraming::Length(_) => assert!(has(FieldKind::ContentLength)),
            ResponseFraming::Chunked => assert!(has(FieldKind::TransferEncoding)),
            ResponseFraming::UntilClose => assert!(!has(FieldKind::ContentLength)),
        }
    }
    if head.reusable() {
        assert_ne!(head.framing, ResponseFraming::UntilClose);
    }

    // The head alone is the same head.
    let mut again = Vec::new();
    match parse_response(&data[..head.len], head_request, &mut again) {
        Ok(ResponseParse::Complete(h)) => {
            assert_eq!((h.len, h.status, h.framing), (head.len, head.status, head.framing));
        }
        other => panic!("the head's own bytes parse as {other:?}"),
    }

    // What the client gets is one complete head with the same status.
    let mut out = Vec::new();
    write_response_head(&mut out, data, &head, &fields, Some(b"fuzz-id"), None, false, &[]);
    assert!(out.ends_with(b"\r\n\r\n"));
    match parse_response(&out, head_request, &mut again) {
        Ok(ResponseParse::Complete(h)) => {
            assert_eq!(h.len, out.len(), "{:?}", String::from_utf8_lossy(&out));
            assert_eq!(h.status, head.status);
        }
        // The fields the proxy adds can take a head of nearly `MAX_FIELDS` fields past it.
        Err(ResponseError::TooManyFields) if field_lines(&out) > MAX_FIELDS => {}
        other => panic!("client head {:?} parses as {other:?}", String::from_utf8_lossy(&out)),
    }
});

/// The field lines of a head written by the proxy (every line but the first and the last).
fn field_lines(head: &[u8]) -> usize {
    head.windows(2).filter(|w| w == b"\r\n").count().saturating_sub(2)
}
