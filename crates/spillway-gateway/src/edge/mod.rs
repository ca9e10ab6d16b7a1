//! Phase *edge*: what a gateway at the edge checks before admission — the listener's and the
//! route's IP lists, the route's request limits, and its CORS policy (a preflight is answered
//! here; a cross-origin request is let through and its answer decorated).
//!
//! Both data paths call [`check`] with the same [`RequestView`] they give admission, so a
//! request is judged the same whichever path serves it. A route without edge settings costs
//! one branch ([`RouteEdge::is_empty`]).

pub mod auth;
pub mod cors;

use crate::config::edge::{IpRules, RouteEdge};
use crate::config::IpNet;
use crate::policy::classify::{client_ip, RequestView};
use crate::proxy::errors;
use http::{HeaderName, HeaderValue};

/// The sizes of a request's head, as the path that parsed it measured them.
#[derive(Debug, Clone, Copy)]
pub struct HeadSize<'a> {
    /// The method.
    pub method: &'a str,
    /// The request target (path and query) in bytes.
    pub target_len: usize,
    /// How many header fields.
    pub fields: usize,
    /// The head's bytes (request line and fields).
    pub head_bytes: usize,
}

/// The gateway's own answer at the edge: a refusal, or a CORS preflight's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeAnswer {
    /// Status.
    pub status: u16,
    /// JSON body (empty for a preflight's 204).
    pub body: &'static str,
    /// Header fields to send with it.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

impl EdgeAnswer {
    fn refuse(status: u16, body: &'static str) -> EdgeAnswer {
        EdgeAnswer { status, body, headers: Vec::new() }
    }

    /// The reason phrase of its status.
    pub fn reason(&self) -> &'static str {
        http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("")
    }
}

/// Header fields to add to the answer of a request let through (CORS).
pub type Decoration = Vec<(HeaderName, HeaderValue)>;

/// Whether the listener's `ip:` lists let the client in.
pub fn listener_admits(rules: Option<&IpRules>, trusted: &[IpNet], view: &dyn RequestView) -> bool {
    rules.is_none_or(|r| r.admits(client_ip(view, trusted)))
}

/// The listener's refusal of a client its `ip:` lists keep out (403).
pub fn ip_denied() -> EdgeAnswer {
    EdgeAnswer::refuse(403, errors::IP_DENIED)
}

/// Phase edge for one request, as both data paths run it: the listener's IP lists, then the
/// route's edge settings (`head` is measured only when the route has some). `Err` is the
/// answer to send instead of proxying; `Ok` the fields to add to the upstream's answer.
pub fn screen<'h>(
    listener_ip: Option<&IpRules>,
    route: Option<&RouteEdge>,
    trusted: &[IpNet],
    view: &dyn RequestView,
    head: impl FnOnce() -> HeadSize<'h>,
) -> Result<Decoration, EdgeAnswer> {
    let route = route.filter(|e| !e.is_empty());
    if listener_ip.is_none() && route.is_none() {
        return Ok(Vec::new());
    }
    if !listener_admits(listener_ip, trusted, view) {
        return Err(ip_denied());
    }
    match route {
        Some(edge) => check(edge, trusted, view, head()),
        None => Ok(Vec::new()),
    }
}

/// Checks a request against its route's edge settings: `Err` is the answer to send instead of
/// proxying; `Ok` carries the fields to add to the upstream's answer.
pub fn check(
    edge: &RouteEdge,
    trusted: &[IpNet],
    view: &dyn RequestView,
    head: HeadSize<'_>,
) -> Result<Decoration, EdgeAnswer> {
    if let Some(rules) = &edge.ip {
        if !rules.admits(client_ip(view, trusted)) {
            return Err(ip_denied());
        }
    }
    if let Some(limits) = &edge.request_limits {
        if limits.max_uri.is_some_and(|max| head.target_len > max) {
            return Err(EdgeAnswer::refuse(414, errors::URI_TOO_LONG));
        }
        if limits.max_headers.is_some_and(|max| head.fields > max)
            || limits.max_header_bytes.is_some_and(|max| head.head_bytes > max)
        {
            return Err(EdgeAnswer::refuse(431, errors::HEADERS_TOO_LARGE));
        }
        if limits.max_body.is_some_and(|max| view.body_len().is_some_and(|len| len > max)) {
            return Err(EdgeAnswer::refuse(413, errors::BODY_TOO_LARGE));
        }
    }
    match &edge.cors {
        Some(settings) => cors::apply(settings, head.method, view),
        None => Ok(Vec::new()),
    }
}

/// The body limit for a route: the listener's, or the route's `request_limits.max_body` when
/// lower (a body streamed past it is cut off, as past the listener's).
pub fn max_body(listener: u64, edge: &RouteEdge) -> u64 {
    edge.request_limits.as_ref().and_then(|l| l.max_body).map_or(listener, |m| m.min(listener))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::edge::RequestLimits;
    use std::net::IpAddr;

    struct View {
        peer: IpAddr,
        headers: Vec<(&'static str, &'static str)>,
        body_len: Option<u64>,
    }

    impl RequestView for View {
        fn header(&self, name: &str) -> Option<&[u8]> {
            self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_bytes())
        }
        fn header_values(&self, name: &str, each: &mut dyn FnMut(&[u8])) {
            self.headers.iter().filter(|(n, _)| *n == name).for_each(|(_, v)| each(v.as_bytes()));
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
            self.body_len
        }
    }

    fn view(peer: &str, headers: &[(&'static str, &'static str)]) -> View {
        View { peer: peer.parse().unwrap(), headers: headers.to_vec(), body_len: None }
    }

    const HEAD: HeadSize<'static> =
        HeadSize { method: "GET", target_len: 10, fields: 3, head_bytes: 100 };

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|n| IpNet::parse(n).unwrap()).collect()
    }

    #[test]
    fn deny_wins_over_allow_and_an_allow_list_keeps_out_the_rest() {
        let rules = IpRules { allow: nets(&["10.0.0.0/8"]), deny: nets(&["10.9.0.0/16"]) };
        let edge = RouteEdge { ip: Some(rules), ..RouteEdge::default() };
        assert!(check(&edge, &[], &view("10.1.2.3", &[]), HEAD).is_ok());
        assert_eq!(check(&edge, &[], &view("10.9.2.3", &[]), HEAD).unwrap_err().status, 403);
        assert_eq!(check(&edge, &[], &view("192.0.2.1", &[]), HEAD).unwrap_err().status, 403);
    }

    #[test]
    fn a_denied_client_behind_a_trusted_proxy_is_refused_and_an_untrusted_hop_is_not_believed() {
        let rules = IpRules { allow: Vec::new(), deny: nets(&["203.0.113.0/24"]) };
        let edge = RouteEdge { ip: Some(rules), ..RouteEdge::default() };
        let trusted = nets(&["127.0.0.0/8"]);
        let behind_proxy = view("127.0.0.1", &[("x-forwarded-for", "203.0.113.7")]);
        assert_eq!(check(&edge, &trusted, &behind_proxy, HEAD).unwrap_err().status, 403);
        // The same claim from a peer that is no trusted proxy is ignored: the peer is judged.
        let forged = view("192.0.2.9", &[("x-forwarded-for", "127.0.0.1")]);
        assert!(check(&edge, &trusted, &forged, HEAD).is_ok());
        let direct = view("203.0.113.5", &[("x-forwarded-for", "192.0.2.1")]);
        assert_eq!(check(&edge, &trusted, &direct, HEAD).unwrap_err().status, 403);
        assert!(listener_admits(None, &trusted, &direct));
        let listener = IpRules { allow: nets(&["127.0.0.0/8"]), deny: Vec::new() };
        assert!(!listener_admits(Some(&listener), &trusted, &behind_proxy));
    }

    #[test]
    fn screening_runs_the_listener_lists_first_and_measures_the_head_only_when_needed() {
        let v = view("10.0.0.1", &[]);
        let unmeasured =
            || -> HeadSize<'static> { panic!("no route edge: the head is not measured") };
        assert_eq!(screen(None, Some(&RouteEdge::default()), &[], &v, unmeasured), Ok(Vec::new()));
        let listener = IpRules { allow: nets(&["192.0.2.0/24"]), deny: Vec::new() };
        let limits = RequestLimits { max_uri: Some(1), ..RequestLimits::default() };
        let edge = RouteEdge { request_limits: Some(limits), ..RouteEdge::default() };
        // Refused by the listener before the route's limits are looked at.
        let refused = screen(Some(&listener), Some(&edge), &[], &v, unmeasured);
        assert_eq!(refused.map_err(|a| a.body), Err(errors::IP_DENIED));
        let refused = screen(None, Some(&edge), &[], &v, || HEAD);
        assert_eq!(refused.map_err(|a| a.status), Err(414));
    }

    #[test]
    fn request_limits_answer_414_431_and_413() {
        let limits = RequestLimits {
            max_body: Some(1000),
            max_headers: Some(5),
            max_header_bytes: Some(200),
            max_uri: Some(20),
            body_timeout: None,
        };
        let edge = RouteEdge { request_limits: Some(limits), ..RouteEdge::default() };
        let v = view("127.0.0.1", &[]);
        assert!(check(&edge, &[], &v, HEAD).is_ok());
        let status = |head: HeadSize<'_>, v: &View| check(&edge, &[], v, head).unwrap_err().status;
        assert_eq!(status(HeadSize { target_len: 21, ..HEAD }, &v), 414);
        assert_eq!(status(HeadSize { fields: 6, ..HEAD }, &v), 431);
        assert_eq!(status(HeadSize { head_bytes: 201, ..HEAD }, &v), 431);
        let big = View { body_len: Some(1001), ..view("127.0.0.1", &[]) };
        assert_eq!(status(HEAD, &big), 413);
        assert_eq!(max_body(64 << 20, &edge), 1000);
        assert_eq!(max_body(500, &edge), 500, "the listener's limit holds when lower");
        assert_eq!(max_body(500, &RouteEdge::default()), 500);
    }
}
