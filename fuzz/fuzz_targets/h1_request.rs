//! The lean HTTP/1.1 request-head parser (`listen::h1::head::parse_request`) and the rewrite
//! that sends the head upstream (`listen::h1::rewrite::write_request_head`).
//!
//! Beyond "no panic": every span of a complete head lies inside the head and means what its
//! name says (method, target, path, `Host`, `Content-Length`); the head parsed again from
//! exactly its own bytes is the same head; and the head the proxy writes upstream parses again
//! as one complete head with the same method and target.

#![no_main]

use libfuzzer_sys::fuzz_target;
use spillway_gateway::listen::h1::head::{
    parse_content_length, parse_request, Field, FieldKind, RequestHead, RequestParse, MAX_FIELDS,
};
use spillway_gateway::listen::h1::rewrite::{write_request_head, RequestEdits};

fuzz_target!(|data: &[u8]| {
    let mut fields = Vec::new();
    let RequestParse::Complete(head) = parse_request(data, &mut fields) else {
        return;
    };
    check_spans(data, &head, &fields);

    // The head alone (without what follows it) is the same complete head.
    let mut again = Vec::new();
    match parse_request(&data[..head.len], &mut again) {
        RequestParse::Complete(h) => {
            assert_eq!(h.len, head.len);
            assert_eq!(h.method, head.method);
            assert_eq!(h.target, head.target);
            assert_eq!(h.content_length, head.content_length);
            assert_eq!(again.len(), fields.len());
        }
        other => panic!("the head's own bytes parse as {other:?}"),
    }

    // What goes upstream is one complete head with the same request line.
    let edits = RequestEdits {
        client_ip: b"10.0.0.1",
        proto: b"http",
        new_request_id: Some(b"fuzz-id"),
        ..RequestEdits::default()
    };
    let mut out = Vec::new();
    write_request_head(&mut out, data, &head, &fields, &edits);
    assert!(out.ends_with(b"\r\n\r\n"));
    let mut out_fields = Vec::new();
    match parse_request(&out, &mut out_fields) {
        RequestParse::Complete(h) => {
            assert_eq!(h.len, out.len(), "{:?}", String::from_utf8_lossy(&out));
            assert_eq!(h.method, head.method);
            assert_eq!(h.target.of(&out), head.target.of(data));
        }
        // The fields the proxy adds can take a head of nearly `MAX_FIELDS` fields past it.
        RequestParse::Unusual(_) if field_lines(&out) > MAX_FIELDS => {}
        other => panic!("upstream head {:?} parses as {other:?}", String::from_utf8_lossy(&out)),
    }
});

/// The field lines of a head written by the proxy (every line but the first and the last).
fn field_lines(head: &[u8]) -> usize {
    head.windows(2).filter(|w| w == b"\r\n").count().saturating_sub(2)
}

/// Every span lies inside the head and holds what it names.
fn check_spans(data: &[u8], head: &RequestHead, fields: &[Field]) {
    assert!(head.len <= data.len());
    assert!(data[..head.len].ends_with(b"\n"));
    for span in [head.method_span, head.target, head.path] {
        assert!(span.start() <= span.end() && span.end() <= head.len);
    }
    assert_eq!(head.method_span.of(data), head.method.as_str().as_bytes());
    let target = head.target.of(data);
    assert!(target.starts_with(b"/"));
    assert!(target.starts_with(head.path.of(data)));
    assert!(!head.path.of(data).contains(&b'?'));
    for f in fields {
        assert!(f.name.end() <= head.len && f.value.end() <= head.len);
        assert!(!f.name.is_empty());
        assert_eq!(f.kind, FieldKind::of(f.name.of(data)));
    }
    let hosts: Vec<_> = fields.iter().filter(|f| f.kind == FieldKind::Host).collect();
    assert!(hosts.len() <= 1);
    assert_eq!(head.host.map(|h| h.of(data)), hosts.first().map(|f| f.value.of(data)));
    let lengths: Vec<u64> = fields
        .iter()
        .filter(|f| f.kind == FieldKind::ContentLength)
        .map(|f| parse_content_length(f.value.of(data)).expect("a complete head's length parses"))
        .collect();
    assert!(lengths.iter().all(|n| *n == head.content_length));
    if lengths.is_empty() {
        assert_eq!(head.content_length, 0);
    }
    assert!(!fields.iter().any(|f| matches!(
        f.kind,
        FieldKind::TransferEncoding | FieldKind::Expect | FieldKind::Upgrade
    )));
}
