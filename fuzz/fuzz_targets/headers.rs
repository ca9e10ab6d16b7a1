//! The request-header parsers of admission: `grpc-timeout` and `x-request-timeout` (and the
//! duration syntax behind the second), `x-spillway-criticality`, `x-spillway-budget`,
//! `Retry-After` / HTTP-dates (`spillway-core`), and the client IP from `X-Forwarded-For` /
//! `Forwarded` behind trusted proxies (`spillway_gateway::policy::classify::client_ip`).
//!
//! The first byte picks the parser, the rest is the header value. Beyond "no panic":
//! - a parsed budget or criticality formats to a value that parses back to itself;
//! - a parsed timeout formats (rounding down) to a value that parses back to at most itself,
//!   and, for `x-request-timeout`, less than a millisecond below it;
//! - an HTTP-date formats back to the same second, and `Retry-After` never waits negative;
//! - the client IP is the peer unless the peer is a trusted proxy, and otherwise is the peer
//!   or an address the forwarding headers name (never one invented).

#![no_main]

use libfuzzer_sys::fuzz_target;
use spillway_core::budget::{format_budget, parse_budget};
use spillway_core::deadline::{
    format_grpc_timeout, format_request_timeout, parse_duration, parse_grpc_timeout,
    parse_request_timeout, BareNumber,
};
use spillway_core::retry::{format_http_date, parse_http_date, parse_retry_after};
use spillway_core::Criticality;
use spillway_gateway::config::IpNet;
use spillway_gateway::policy::classify::{client_ip, RequestView};
use std::net::IpAddr;
use std::time::Duration;

/// 2026-11-24 00:00:00 UTC.
const NOW_UNIX_SECS: u64 = 1_795_478_400;

fuzz_target!(|input: &[u8]| {
    let Some((&which, value)) = input.split_first() else {
        return;
    };
    match which % 7 {
        0 => grpc_timeout(value),
        1 => request_timeout(value),
        2 => criticality(value),
        3 => budget(value),
        4 => retry_after(value),
        5 => forwarded(value, "x-forwarded-for"),
        _ => forwarded(value, "forwarded"),
    }
});

fn grpc_timeout(value: &[u8]) {
    if let Ok(d) = parse_grpc_timeout(value) {
        let sent = parse_grpc_timeout(format_grpc_timeout(d).as_bytes()).expect("formatted parses");
        assert!(sent <= d, "{sent:?} > {d:?}");
    }
}

fn request_timeout(value: &[u8]) {
    for bare in [BareNumber::Millis, BareNumber::Seconds, BareNumber::Refused] {
        let _ = parse_duration(value, bare);
    }
    if let Ok(d) = parse_request_timeout(value) {
        let formatted = format_request_timeout(d);
        let sent = parse_request_timeout(formatted.as_bytes()).expect("formatted parses");
        assert!(sent <= d && d - sent < Duration::from_millis(1), "{d:?} sent as {formatted}");
    }
}

fn criticality(value: &[u8]) {
    if let Ok(c) = Criticality::parse(value) {
        assert_eq!(Criticality::parse(c.as_str().as_bytes()), Ok(c));
        assert_eq!(Criticality::from_header(Some(value)), c);
    } else {
        assert_eq!(Criticality::from_header(Some(value)), Criticality::default());
    }
}

fn budget(value: &[u8]) {
    if let Ok(units) = parse_budget(value) {
        assert_eq!(parse_budget(format_budget(units).as_bytes()), Ok(units));
    }
}

fn retry_after(value: &[u8]) {
    let _ = parse_retry_after(value, NOW_UNIX_SECS);
    if let Some(secs) = parse_http_date(value, NOW_UNIX_SECS) {
        assert!(secs >= 0);
        let text = format_http_date(secs as u64);
        assert_eq!(parse_http_date(&text, 0), Some(secs), "{:?}", String::from_utf8_lossy(&text));
    }
}

/// A request from a peer, with header values split from the input at line feeds.
struct View<'a> {
    name: &'static str,
    values: Vec<&'a [u8]>,
    peer: IpAddr,
}

impl RequestView for View<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        (name == self.name).then(|| self.values.first().copied()).flatten()
    }
    fn header_values(&self, name: &str, each: &mut dyn FnMut(&[u8])) {
        if name == self.name {
            self.values.iter().for_each(|v| each(v));
        }
    }
    fn path(&self) -> &str {
        "/"
    }
    fn query(&self) -> Option<&str> {
        None
    }
    fn peer(&self) -> IpAddr {
        self.peer
    }
    fn body_len(&self) -> Option<u64> {
        None
    }
}

fn forwarded(value: &[u8], name: &'static str) {
    let trusted: Vec<IpNet> = ["10.0.0.0/8", "::1/128", "192.168.0.0/16"]
        .iter()
        .map(|n| IpNet::parse(n).expect("valid network"))
        .collect();
    let values: Vec<&[u8]> = value.split(|b| *b == b'\n').collect();
    // The input's text names every address the headers could: an answer must be among them.
    let named = |ip: IpAddr| {
        let text = String::from_utf8_lossy(value).to_ascii_lowercase();
        text.contains(&ip.to_string()) || {
            // Other spellings of the same address (`::ffff:1.2.3.4`, leading zeros in IPv6).
            matches!(ip, IpAddr::V6(_)) || text.contains(':')
        }
    };
    for peer in ["10.1.2.3", "203.0.113.9", "::1"] {
        let peer: IpAddr = peer.parse().expect("valid address");
        let view = View { name, values: values.clone(), peer };
        let ip = client_ip(&view, &trusted);
        let peer_trusted = trusted.iter().any(|n| n.contains(peer));
        if !peer_trusted {
            assert_eq!(ip, peer, "an untrusted peer's headers are never believed");
        } else if ip != peer {
            assert!(named(ip), "{ip} is not in {:?}", String::from_utf8_lossy(value));
        }
        assert_eq!(client_ip(&view, &[]), peer, "without trusted proxies the peer is the client");
    }
}
