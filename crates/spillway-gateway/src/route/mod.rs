//! The routing table compiled from a config: first match wins, in file order.
//!
//! Compiled once per config (methods parsed, header names and direct responses pre-built,
//! hosts lower-cased), so matching a request allocates nothing.

use crate::config::{Config, HeaderMatchKind, HostMatch, PathMatch, RouteAction, RouteConfig};
use crate::route::stats::RouteStats;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use std::sync::Arc;

pub mod stats;

/// A compiled header condition.
#[derive(Debug)]
struct CompiledHeader {
    name: HeaderName,
    kind: HeaderMatchKind,
}

/// What a compiled route does.
#[derive(Debug)]
pub enum Action {
    /// Proxy to the cluster at this index of the snapshot's clusters.
    Proxy {
        /// Index into the snapshot's clusters.
        cluster: usize,
        /// `(matched prefix, replacement)` for a prefix rewrite.
        rewrite_prefix: Option<(String, String)>,
        /// Replacement `Host` value.
        rewrite_host: Option<HeaderValue>,
        /// Total timeout (until the response head).
        timeout: std::time::Duration,
        /// Which incoming deadline (`grpc-timeout`, `x-request-timeout`) to honour, capped at
        /// `timeout`.
        deadline: Option<spillway_core::deadline::DeadlinePolicy>,
    },
    /// Answer directly.
    Direct {
        /// Status.
        status: StatusCode,
        /// Body.
        body: Bytes,
        /// Headers.
        headers: Vec<(HeaderName, HeaderValue)>,
    },
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// Name.
    pub name: String,
    /// Position in the routing table (indexes the snapshot's per-route policies).
    pub index: usize,
    host: Option<HostMatch>,
    path: Option<PathMatch>,
    methods: Vec<Method>,
    headers: Vec<CompiledHeader>,
    /// Action.
    pub action: Action,
    /// Metrics of this route (kept across reloads by name).
    pub stats: Arc<RouteStats>,
    /// Where sampled requests are recorded (`record:`); set by `Snapshot::with_recorders`.
    pub recorder: Option<Arc<crate::record::Recording>>,
}

/// The compiled routing table.
#[derive(Debug, Default)]
pub struct Router {
    /// Routes in file order.
    pub routes: Vec<Route>,
}

/// The request host without port, as given by `Host` or the URI authority (HTTP/2).
pub fn request_host<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> &'a str {
    let raw = match headers.get(http::header::HOST).and_then(|h| h.to_str().ok()) {
        Some(h) => h,
        None => uri.host().unwrap_or(""),
    };
    host_without_port(raw)
}

/// A `Host` value without its port, keeping IPv6 literals (`[::1]:80` gives `[::1]`) intact.
pub fn host_without_port(raw: &str) -> &str {
    match raw.rfind(':') {
        Some(i) if !raw[i..].contains(']') => &raw[..i],
        _ => raw,
    }
}

/// Header values by name, for route matching: hyper's `HeaderMap` on the hyper path, the parsed
/// head on the lean HTTP/1.1 path (which never builds a `HeaderMap`).
pub trait HeaderLookup {
    /// The first value of header `name`, if present.
    fn header(&self, name: &HeaderName) -> Option<&[u8]>;
}

impl HeaderLookup for HeaderMap {
    #[inline]
    fn header(&self, name: &HeaderName) -> Option<&[u8]> {
        self.get(name).map(HeaderValue::as_bytes)
    }
}

impl Route {
    fn matches<H: HeaderLookup + ?Sized>(
        &self,
        method: &Method,
        host: &str,
        path: &str,
        headers: &H,
    ) -> bool {
        if !self.methods.is_empty() && !self.methods.contains(method) {
            return false;
        }
        let host_ok = match &self.host {
            None => true,
            Some(HostMatch::Exact(h)) => h.eq_ignore_ascii_case(host),
            // Compared as bytes: the host is the client's text, and a cut inside a multi-byte
            // character would panic (found by fuzz/router).
            Some(HostMatch::Suffix(s)) => {
                host.len() > s.len()
                    && host.as_bytes()[host.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
        };
        let path_ok = match &self.path {
            None => true,
            Some(PathMatch::Exact(p)) => path == p,
            Some(PathMatch::Prefix(p)) => path.starts_with(p.as_str()),
            Some(PathMatch::Regex(r)) => r.is_match(path),
        };
        if !host_ok || !path_ok {
            return false;
        }
        self.headers.iter().all(|h| {
            let value = headers.header(&h.name);
            match &h.kind {
                HeaderMatchKind::Present(want) => value.is_some() == *want,
                HeaderMatchKind::Exact(v) => value.is_some_and(|x| x == v.as_bytes()),
                HeaderMatchKind::Regex(r) => {
                    value.and_then(|x| std::str::from_utf8(x).ok()).is_some_and(|x| r.is_match(x))
                }
            }
        })
    }
}

impl Router {
    /// Compiles the routes of `config`; `stats` gives each route its (possibly carried over)
    /// metrics.
    pub fn compile(
        config: &Config,
        mut stats: impl FnMut(&RouteConfig) -> Arc<RouteStats>,
    ) -> Router {
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(index, r)| {
                let action = match &r.action {
                    RouteAction::Cluster { name, rewrite_prefix, rewrite_host, timeout } => {
                        let cluster =
                            config.clusters.iter().position(|c| &c.name == name).unwrap_or(0);
                        let prefix = match &r.matcher.path {
                            Some(PathMatch::Prefix(p)) => p.clone(),
                            _ => String::new(),
                        };
                        Action::Proxy {
                            cluster,
                            rewrite_prefix: rewrite_prefix.clone().map(|to| (prefix, to)),
                            rewrite_host: rewrite_host
                                .as_deref()
                                .and_then(|h| HeaderValue::from_str(h).ok()),
                            timeout: timeout.unwrap_or(config.clusters[cluster].timeouts.request),
                            deadline: {
                                let t =
                                    timeout.unwrap_or(config.clusters[cluster].timeouts.request);
                                // `deadline:` settings when given, else the route timeout is
                                // both the default budget and the cap.
                                let policy = match &r.policy.deadline {
                                    Some(d) => {
                                        let b = spillway_core::deadline::DeadlinePolicy::builder(
                                            d.default,
                                        )
                                        .max_budget(d.max)
                                        .min_budget(d.min_remaining);
                                        if d.ignore_incoming {
                                            b.ignore_incoming()
                                        } else {
                                            b
                                        }
                                    }
                                    None => spillway_core::deadline::DeadlinePolicy::builder(t)
                                        .max_budget(t),
                                };
                                policy.build().ok()
                            },
                        }
                    }
                    RouteAction::Direct { status, body, headers } => Action::Direct {
                        status: StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
                        body: Bytes::from(body.clone()),
                        headers: headers
                            .iter()
                            .filter_map(|(n, v)| {
                                Some((
                                    HeaderName::from_bytes(n.as_bytes()).ok()?,
                                    HeaderValue::from_str(v).ok()?,
                                ))
                            })
                            .collect(),
                    },
                };
                Route {
                    name: r.name.clone(),
                    index,
                    host: r.matcher.host.clone(),
                    path: r.matcher.path.clone(),
                    methods: r
                        .matcher
                        .methods
                        .iter()
                        .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                        .collect(),
                    headers: r
                        .matcher
                        .headers
                        .iter()
                        .filter_map(|h| {
                            Some(CompiledHeader {
                                name: HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                                kind: h.kind.clone(),
                            })
                        })
                        .collect(),
                    action,
                    stats: stats(r),
                    recorder: None,
                }
            })
            .collect();
        Router { routes }
    }

    /// The first route matching the request.
    #[inline]
    pub fn route<H: HeaderLookup + ?Sized>(
        &self,
        method: &Method,
        host: &str,
        path: &str,
        headers: &H,
    ) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(method, host, path, headers))
    }

    /// The recorders of the routes that record (`record:`), in route order; a recorder shared
    /// by several routes appears once per route.
    pub fn recordings(&self) -> impl Iterator<Item = &Arc<crate::record::Recording>> + Clone {
        self.routes.iter().filter_map(|r| r.recorder.as_ref())
    }
}

/// The request path after a prefix rewrite (`/users/7` with `/users` → `/` gives `/7`).
pub fn rewrite_path(path: &str, from: &str, to: &str) -> String {
    let rest = path.strip_prefix(from).unwrap_or(path);
    let mut out = String::with_capacity(to.len() + rest.len());
    out.push_str(to);
    if to.ends_with('/') && rest.starts_with('/') {
        out.push_str(&rest[1..]);
    } else if !to.ends_with('/') && !rest.is_empty() && !rest.starts_with('/') && !to.is_empty() {
        out.push('/');
        out.push_str(rest);
    } else {
        out.push_str(rest);
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::path::Path;

    const CONFIG: &str = r#"
listeners: [{ name: l, address: "127.0.0.1:1" }]
clusters:
  - { name: c, endpoints: [{ address: "127.0.0.1:2" }], timeouts: { request: 1s } }
routes:
  - name: exact
    match: { path: /users/me }
    direct_response: { status: 200, body: exact }
  - name: wildcard-host
    match: { host: "*.example.com", path_prefix: /users }
    direct_response: { status: 200, body: wildcard }
  - name: posts
    match: { path_prefix: /users, methods: [POST] }
    cluster: c
  - name: canary
    match: { path_prefix: /users, headers: [{ name: x-canary, value: "1" }] }
    direct_response: { status: 200, body: canary }
  - name: regex
    match: { path_regex: "/items/[0-9]+" }
    direct_response: { status: 200, body: regex }
  - name: prefix
    match: { path_prefix: /users }
    direct_response: { status: 200, body: prefix }
"#;

    fn router() -> Router {
        let config = Config::parse(CONFIG, "t", Path::new(".")).unwrap();
        Router::compile(&config, |r| Arc::new(RouteStats::new(&r.name, "", 1)))
    }

    fn pick(
        router: &Router,
        method: Method,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Option<String> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        router.route(&method, host, path, &map).map(|r| r.name.clone())
    }

    #[test]
    fn first_matching_route_wins_in_file_order() {
        let r = router();
        assert_eq!(pick(&r, Method::GET, "a", "/users/me", &[]).as_deref(), Some("exact"));
        assert_eq!(
            pick(&r, Method::GET, "api.example.com", "/users/1", &[]).as_deref(),
            Some("wildcard-host")
        );
        assert_eq!(
            pick(&r, Method::GET, "example.com", "/users/1", &[]).as_deref(),
            Some("prefix")
        );
        assert_eq!(pick(&r, Method::POST, "a", "/users/1", &[]).as_deref(), Some("posts"));
        assert_eq!(
            pick(&r, Method::GET, "a", "/users/1", &[("x-canary", "1")]).as_deref(),
            Some("canary")
        );
        assert_eq!(
            pick(&r, Method::GET, "a", "/users/1", &[("x-canary", "2")]).as_deref(),
            Some("prefix")
        );
        assert_eq!(pick(&r, Method::GET, "a", "/items/42", &[]).as_deref(), Some("regex"));
        assert_eq!(pick(&r, Method::GET, "a", "/items/42/x", &[]), None);
        assert_eq!(pick(&r, Method::GET, "a", "/other", &[]), None);
    }

    #[test]
    fn a_host_with_multi_byte_characters_is_matched_without_panicking() {
        // Found by fuzz/router: `Host: éexample.com` (obs-text reaches the lean path as UTF-8)
        // against `*.example.com` cut the host inside `é`.
        let r = router();
        assert_eq!(
            pick(&r, Method::GET, "éexample.com", "/users/1", &[]).as_deref(),
            Some("prefix")
        );
        assert_eq!(
            pick(&r, Method::GET, "é.example.com", "/users/1", &[]).as_deref(),
            Some("wildcard-host")
        );
        let head = "GET /users/1 HTTP/1.1\r\nHost: éexample.com\r\n\r\n";
        let mut fields = Vec::new();
        let crate::listen::h1::head::RequestParse::Complete(parsed) =
            crate::listen::h1::head::parse_request(head.as_bytes(), &mut fields)
        else {
            panic!("the lean path takes obs-text in Host");
        };
        let host = crate::listen::h1::rewrite::text(head.as_bytes(), parsed.host.unwrap());
        assert_eq!(host, "éexample.com");
    }

    #[test]
    fn hosts_lose_their_port() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::HOST, HeaderValue::from_static("api.local:8080"));
        assert_eq!(request_host(&"/".parse().unwrap(), &headers), "api.local");
        headers.insert(http::header::HOST, HeaderValue::from_static("[::1]"));
        assert_eq!(request_host(&"/".parse().unwrap(), &headers), "[::1]");
    }

    #[test]
    fn prefix_rewrites_keep_one_slash() {
        assert_eq!(rewrite_path("/users/7", "/users", "/"), "/7");
        assert_eq!(rewrite_path("/users", "/users", "/"), "/");
        assert_eq!(rewrite_path("/users/7", "/users", "/v2/people"), "/v2/people/7");
        assert_eq!(rewrite_path("/users/7", "/users/", "/"), "/7");
    }
}
