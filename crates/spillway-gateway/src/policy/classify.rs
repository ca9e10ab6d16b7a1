//! Phase 1 of admission, *classify*: what a request says about itself — its criticality, its
//! client IP (behind trusted proxies), and the bytes of each limit key — read through one small
//! trait so the lean HTTP/1.1 path and the hyper path feed the same code.

use crate::config::{IpNet, KeyPart, LimitKey};
use spillway_core::Criticality;
use std::net::IpAddr;

/// What admission may read of a request: headers, target and peer. Implemented by the hyper
/// path over `http::request::Parts` and by the lean path over its parsed head.
pub trait RequestView {
    /// The first value of header `name` (a lower-case name).
    fn header(&self, name: &str) -> Option<&[u8]>;
    /// Every value of header `name` in order (for `X-Forwarded-For`, which may repeat).
    fn header_values(&self, name: &str, each: &mut dyn FnMut(&[u8]));
    /// The request path (without the query).
    fn path(&self) -> &str;
    /// The query string, without `?`.
    fn query(&self) -> Option<&str>;
    /// The directly connected peer.
    fn peer(&self) -> IpAddr;
    /// The declared body length, when known up front.
    fn body_len(&self) -> Option<u64>;
}

/// The header carrying the criticality (HTTP header and gRPC metadata alike).
pub const CRITICALITY_HEADER: &str = "x-spillway-criticality";

/// A request's class: its `x-spillway-criticality` (lowered to `max`), else `default`.
/// Returns the class and whether the header must be rewritten upstream (it was lowered).
pub fn criticality(
    view: &dyn RequestView,
    default: Criticality,
    max: Criticality,
) -> (Criticality, bool) {
    match view.header(CRITICALITY_HEADER).map(Criticality::parse) {
        Some(Ok(claimed)) if claimed > max => (max, true),
        Some(Ok(claimed)) => (claimed, false),
        // Absent or unreadable: the route's default (a malformed value is not a claim).
        _ => (default, false),
    }
}

/// The client's IP: the peer, unless the peer is a trusted proxy — then the right-most address
/// of `X-Forwarded-For` (or `Forwarded: for=`) that is not itself a trusted proxy. Addresses a
/// client wrote further left are never believed.
pub fn client_ip(view: &dyn RequestView, trusted: &[IpNet]) -> IpAddr {
    let peer = view.peer();
    if trusted.is_empty() || !trusted.iter().any(|n| n.contains(peer)) {
        return peer;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    view.header_values("x-forwarded-for", &mut |v| {
        for part in v.split(|b| *b == b',') {
            if let Some(ip) = parse_ip(part) {
                hops.push(ip);
            }
        }
    });
    if hops.is_empty() {
        view.header_values("forwarded", &mut |v| {
            for element in v.split(|b| *b == b',') {
                for pair in element.split(|b| *b == b';') {
                    let pair = pair.trim_ascii();
                    if pair.len() > 4 && pair[..4].eq_ignore_ascii_case(b"for=") {
                        if let Some(ip) = parse_ip(&pair[4..]) {
                            hops.push(ip);
                        }
                    }
                }
            }
        });
    }
    for ip in hops.iter().rev() {
        if !trusted.iter().any(|n| n.contains(*ip)) {
            return *ip;
        }
    }
    // Every hop is trusted: the left-most is the origin.
    hops.first().copied().unwrap_or(peer)
}

/// An IP from an `X-Forwarded-For` element or a `Forwarded` `for=` value (quotes, brackets and a
/// port are allowed).
fn parse_ip(raw: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(raw).ok()?.trim().trim_matches('"');
    if let Ok(ip) = text.parse() {
        return Some(ip);
    }
    if let Some(rest) = text.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, _port) = text.rsplit_once(':')?;
    host.parse().ok()
}

/// Writes the bytes of `key` for this request into `out` (cleared first). Parts are separated
/// by a byte that cannot occur in a header value, and a missing part is an empty field, so
/// different requests never share a key by accident.
pub fn key_bytes(
    key: &LimitKey,
    view: &dyn RequestView,
    client: IpAddr,
    route: &str,
    out: &mut Vec<u8>,
) {
    out.clear();
    for (i, part) in key.parts.iter().enumerate() {
        if i > 0 {
            out.push(0);
        }
        match part {
            KeyPart::ClientIp => match client {
                IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
                IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
            },
            KeyPart::Header(name) => {
                if let Some(v) = view.header(name) {
                    out.extend_from_slice(v);
                }
            }
            KeyPart::Query(name) => {
                if let Some(v) = view.query().and_then(|q| query_value(q, name)) {
                    out.extend_from_slice(v.as_bytes());
                }
            }
            KeyPart::Path => out.extend_from_slice(view.path().as_bytes()),
            KeyPart::Route => out.extend_from_slice(route.as_bytes()),
        }
    }
}

/// The raw (not percent-decoded) value of the first `name=` parameter of a query string.
pub fn query_value<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| match pair.split_once('=') {
        Some((k, v)) if k == name => Some(v),
        None if pair == name => Some(""),
        _ => None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    struct Fake {
        headers: Vec<(&'static str, &'static str)>,
        peer: IpAddr,
        target: &'static str,
    }

    impl RequestView for Fake {
        fn header(&self, name: &str) -> Option<&[u8]> {
            self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_bytes())
        }
        fn header_values(&self, name: &str, each: &mut dyn FnMut(&[u8])) {
            for (n, v) in &self.headers {
                if *n == name {
                    each(v.as_bytes());
                }
            }
        }
        fn path(&self) -> &str {
            self.target.split('?').next().unwrap_or("")
        }
        fn query(&self) -> Option<&str> {
            self.target.split_once('?').map(|(_, q)| q)
        }
        fn peer(&self) -> IpAddr {
            self.peer
        }
        fn body_len(&self) -> Option<u64> {
            None
        }
    }

    fn fake(headers: Vec<(&'static str, &'static str)>, peer: &str) -> Fake {
        Fake { headers, peer: peer.parse().unwrap(), target: "/a?user=7&x" }
    }

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| IpNet::parse(n).unwrap()).collect()
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let view = fake(vec![("x-forwarded-for", "6.6.6.6, 1.2.3.4")], "10.0.0.5");
        assert_eq!(client_ip(&view, &[]), "10.0.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(&view, &nets(&["10.0.0.0/8"])), "1.2.3.4".parse::<IpAddr>().unwrap());
        // A chain of trusted proxies is skipped from the right.
        let chain = fake(vec![("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.9.9.9")], "10.0.0.5");
        assert_eq!(client_ip(&chain, &nets(&["10.0.0.0/8"])), "1.2.3.4".parse::<IpAddr>().unwrap());
        let untrusted_peer = fake(vec![("x-forwarded-for", "1.2.3.4")], "8.8.8.8");
        assert_eq!(
            client_ip(&untrusted_peer, &nets(&["10.0.0.0/8"])),
            "8.8.8.8".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn forwarded_header_is_read_when_x_forwarded_for_is_absent() {
        let view = fake(vec![("forwarded", "for=\"[2001:db8::1]:4711\";proto=https")], "::1");
        assert_eq!(client_ip(&view, &nets(&["::1"])), "2001:db8::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn criticality_is_capped_at_the_route_maximum() {
        let view = fake(vec![(CRITICALITY_HEADER, "CRITICAL_PLUS")], "1.1.1.1");
        assert_eq!(
            criticality(&view, Criticality::Critical, Criticality::Critical),
            (Criticality::Critical, true)
        );
        let none = fake(vec![], "1.1.1.1");
        assert_eq!(
            criticality(&none, Criticality::Sheddable, Criticality::CriticalPlus),
            (Criticality::Sheddable, false)
        );
    }

    #[test]
    fn keys_join_their_parts_unambiguously() {
        let key = LimitKey {
            parts: vec![KeyPart::Query("user".into()), KeyPart::Header("x-api-key".into())],
            text: String::new(),
        };
        let mut out = Vec::new();
        let view = fake(vec![("x-api-key", "k")], "1.1.1.1");
        key_bytes(&key, &view, view.peer, "r", &mut out);
        assert_eq!(out, b"7\0k");
        assert_eq!(query_value("a=1&b=2", "b"), Some("2"));
        assert_eq!(query_value("a=1&b", "b"), Some(""));
        assert_eq!(query_value("a=1", "c"), None);
    }
}
