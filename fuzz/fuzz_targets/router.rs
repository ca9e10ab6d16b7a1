//! The router (`spillway_gateway::route::Router`), compiled from a fixed config and asked to
//! route fuzzed methods, hosts, paths and headers, the way both data paths call it.
//!
//! The first byte chooses the input (even: a raw request head, as the seed corpus holds; odd:
//! `Input`, built with `arbitrary` from the rest: method, host, port, path and headers, also
//! given to the router directly as (lossy) UTF-8 text). Beyond "no panic":
//! - the route chosen is the one an independent model of the config's rules picks (first
//!   match in file order; hosts without case, `*.` suffixes, exact / prefix / anchored-regex
//!   paths, methods, header value / regex / presence);
//! - the lean HTTP/1.1 path (a head parsed by `parse_request`, host and path read from its
//!   spans, headers looked up in the parsed fields) and the hyper path (`http::Uri`,
//!   `HeaderMap`, `request_host`) choose the same route for the same ASCII request.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use libfuzzer_sys::fuzz_target;
use spillway_gateway::listen::h1::head::{parse_request, HeadFields, RequestParse};
use spillway_gateway::listen::h1::rewrite;
use spillway_gateway::route::stats::RouteStats;
use spillway_gateway::route::{self, HeaderLookup, Router};
use spillway_gateway::Config;
use std::path::Path;
use std::sync::{Arc, OnceLock};

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
  - name: api-host
    match: { host: API.local, path_prefix: /v1, methods: [GET, HEAD] }
    cluster: c
  - name: posts
    match: { path_prefix: /users, methods: [POST] }
    cluster: c
  - name: canary
    match: { path_prefix: /users, headers: [{ name: x-canary, value: "1" }] }
    direct_response: { status: 200, body: canary }
  - name: tenant
    match: { path_prefix: /t/, headers: [{ name: x-tenant, regex: "t-[0-9]+" }, { name: x-debug, present: false }] }
    direct_response: { status: 200, body: tenant }
  - name: regex
    match: { path_regex: "/items/[0-9]+" }
    direct_response: { status: 200, body: regex }
  - name: prefix
    match: { path_prefix: /users }
    direct_response: { status: 200, body: prefix }
"#;

fn router() -> &'static Router {
    static ROUTER: OnceLock<Router> = OnceLock::new();
    ROUTER.get_or_init(|| {
        let config = Config::parse(CONFIG, "router.yaml", Path::new(".")).expect("valid config");
        Router::compile(&config, |r| Arc::new(RouteStats::new(&r.name, "", 1)))
    })
}

/// The config's rules written out independently: the name of the first route that matches.
fn model(
    method: &[u8],
    host: &str,
    path: &str,
    header: &dyn Fn(&str) -> Option<Vec<u8>>,
) -> Option<&'static str> {
    let lower = host.to_ascii_lowercase();
    let prefix = |p: &str| path.starts_with(p);
    if path == "/users/me" {
        return Some("exact");
    }
    if lower.len() > ".example.com".len() && lower.ends_with(".example.com") && prefix("/users") {
        return Some("wildcard-host");
    }
    if lower == "api.local" && prefix("/v1") && (method == b"GET" || method == b"HEAD") {
        return Some("api-host");
    }
    if prefix("/users") && method == b"POST" {
        return Some("posts");
    }
    if prefix("/users") && header("x-canary").as_deref() == Some(b"1") {
        return Some("canary");
    }
    let tenant = header("x-tenant").is_some_and(|v| {
        v.len() > 2 && v.starts_with(b"t-") && v[2..].iter().all(u8::is_ascii_digit)
    });
    if prefix("/t/") && tenant && header("x-debug").is_none() {
        return Some("tenant");
    }
    let items = path.strip_prefix("/items/").is_some_and(|n| {
        // `[0-9]` in the regex crate is ASCII digits only.
        !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
    });
    if items {
        return Some("regex");
    }
    prefix("/users").then_some("prefix")
}

#[derive(Debug, Arbitrary)]
struct Input {
    method: Meth,
    host: Vec<u8>,
    port: Option<u16>,
    path: Vec<u8>,
    headers: Vec<(Name, Vec<u8>)>,
}

#[derive(Debug, Arbitrary)]
enum Meth {
    Get,
    Head,
    Post,
    Other(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
enum Name {
    Canary,
    Tenant,
    Debug,
    CanaryUpper,
    Other(Vec<u8>),
}

impl Name {
    fn bytes(&self) -> &[u8] {
        match self {
            Name::Canary => b"x-canary",
            Name::Tenant => b"x-tenant",
            Name::Debug => b"x-debug",
            Name::CanaryUpper => b"X-Canary",
            Name::Other(b) => b,
        }
    }
}

fuzz_target!(|data: &[u8]| match data {
    [mode, head @ ..] if mode % 2 == 0 => raw_head(head),
    [_, rest @ ..] => {
        if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(rest)) {
            structured(&input);
        }
    }
    [] => {}
});

/// A request head as bytes: routed on the lean path, and on the hyper path when `http` takes
/// its parts.
fn raw_head(buf: &[u8]) {
    let Some((lean, method, target, headers)) = lean(buf) else {
        return;
    };
    let hyper = (|| {
        let uri: Uri = std::str::from_utf8(&target).ok()?.parse().ok()?;
        let mut map = HeaderMap::new();
        for (name, value) in &headers {
            map.append(HeaderName::from_bytes(name).ok()?, HeaderValue::from_bytes(value).ok()?);
        }
        let ascii =
            |v: &HeaderValue| v.as_bytes().iter().all(|b| b.is_ascii_graphic() || *b == b' ');
        if !map.get_all(http::header::HOST).iter().all(ascii) || !target.is_ascii() {
            return None;
        }
        let host = route::request_host(&uri, &map);
        Some(router().route(&method, host, uri.path(), &map).map(|r| r.name.clone()))
    })();
    if let Some(hyper) = hyper {
        assert_eq!(lean, hyper, "the lean and hyper paths route differently");
    }
}

fn structured(input: &Input) {
    let method = match &input.method {
        Meth::Get => b"GET".to_vec(),
        Meth::Head => b"HEAD".to_vec(),
        Meth::Post => b"POST".to_vec(),
        Meth::Other(m) => m.clone(),
    };
    direct(input, &method);
    let Some((lean, ..)) = lean(&head_bytes(input, &method)) else {
        return;
    };
    if let Some(hyper) = hyper(input, &method) {
        assert_eq!(lean, hyper, "the lean and hyper paths route differently");
    }
}

/// Straight into `Router::route` with any text: host and path as (lossy) UTF-8, so
/// multi-byte characters reach the matcher.
fn direct(input: &Input, method: &[u8]) {
    let Ok(method_value) = Method::from_bytes(method) else {
        return;
    };
    let host = String::from_utf8_lossy(&input.host);
    let path = String::from_utf8_lossy(&input.path);
    let mut headers = HeaderMap::new();
    for (name, value) in &input.headers {
        if let (Ok(n), Ok(v)) =
            (HeaderName::from_bytes(name.bytes()), HeaderValue::from_bytes(value))
        {
            headers.append(n, v);
        }
    }
    let got = router().route(&method_value, &host, &path, &headers).map(|r| r.name.as_str());
    let header = |name: &str| {
        headers.header(&HeaderName::from_bytes(name.as_bytes()).ok()?).map(<[u8]>::to_vec)
    };
    assert_eq!(got, model(method, &host, &path, &header), "{host:?} {path:?}");
}

/// The request as bytes on the wire.
fn head_bytes(input: &Input, method: &[u8]) -> Vec<u8> {
    let mut head = method.to_vec();
    head.push(b' ');
    head.extend_from_slice(&input.path);
    head.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    head.extend_from_slice(&input.host);
    if let Some(port) = input.port {
        head.extend_from_slice(format!(":{port}").as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    for (name, value) in &input.headers {
        head.extend_from_slice(name.bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// A request routed on the lean HTTP/1.1 path, as `listen::h1::conn` routes it: the route, and
/// the method, target and header fields parsed; `None` when the lean path leaves the request to
/// hyper.
type Lean = (Option<String>, Method, Vec<u8>, Vec<(Vec<u8>, Vec<u8>)>);

fn lean(buf: &[u8]) -> Option<Lean> {
    let mut fields = Vec::new();
    let RequestParse::Complete(head) = parse_request(buf, &mut fields) else {
        return None;
    };
    let head_bytes = &buf[..head.len];
    let host = head.host.map_or("", |h| route::host_without_port(rewrite::text(head_bytes, h)));
    let path = rewrite::text(head_bytes, head.path);
    let lookup = HeadFields { buf: head_bytes, fields: &fields };
    let got = router().route(&head.method, host, path, &lookup).map(|r| r.name.clone());
    let header = |name: &str| {
        lookup.header(&HeaderName::from_bytes(name.as_bytes()).ok()?).map(<[u8]>::to_vec)
    };
    assert_eq!(got.as_deref(), model(head.method.as_str().as_bytes(), host, path, &header));
    let pairs =
        fields.iter().map(|f| (f.name.of(head_bytes).to_vec(), f.value.of(head_bytes).to_vec()));
    Some((got, head.method.clone(), head.target.of(head_bytes).to_vec(), pairs.collect()))
}

/// The hyper path for the same request, when it is plain ASCII and `http` accepts it.
fn hyper(input: &Input, method: &[u8]) -> Option<Option<String>> {
    if !input.host.iter().chain(&input.path).all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let method = Method::from_bytes(method).ok()?;
    let uri: Uri = std::str::from_utf8(&input.path).ok()?.parse().ok()?;
    let mut headers = HeaderMap::new();
    let mut host = input.host.clone();
    if let Some(port) = input.port {
        host.extend_from_slice(format!(":{port}").as_bytes());
    }
    headers.append(http::header::HOST, HeaderValue::from_bytes(&host).ok()?);
    for (name, value) in &input.headers {
        let name = HeaderName::from_bytes(name.bytes()).ok()?;
        headers.append(name, HeaderValue::from_bytes(value.trim_ascii()).ok()?);
    }
    let host = route::request_host(&uri, &headers);
    Some(router().route(&method, host, uri.path(), &headers).map(|r| r.name.clone()))
}
