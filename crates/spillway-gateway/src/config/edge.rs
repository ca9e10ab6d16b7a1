//! The edge settings of listeners and routes: IP allow/deny lists (`ip:`), CORS (`cors:`) and
//! request limits (`request_limits:`), checked and turned into the forms `crate::edge` applies.

use super::locate::Seg;
use super::policy::IpNet;
use super::raw::{RawCors, RawIpRules, RawRequestLimits};
use super::validate::{at, byte_size, key, Checker};
use serde::{Serialize, Serializer};
use std::time::Duration;

/// An allow list and a deny list of networks (`ip: { allow, deny }`).
///
/// A client is refused when its address is in `deny`, or when `allow` is not empty and its
/// address is in none of it. The client's address is the one `trusted_proxies` lets through
/// (`X-Forwarded-For` / `Forwarded` from a trusted hop), else the peer's.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IpRules {
    /// Networks let in (empty: every network not denied).
    pub allow: Vec<IpNet>,
    /// Networks refused, whatever `allow` says.
    pub deny: Vec<IpNet>,
}

impl IpRules {
    /// Whether `ip` may pass.
    pub fn admits(&self, ip: std::net::IpAddr) -> bool {
        !self.deny.iter().any(|n| n.contains(ip))
            && (self.allow.is_empty() || self.allow.iter().any(|n| n.contains(ip)))
    }
}

/// One allowed origin of a CORS policy.
#[derive(Debug, Clone, PartialEq)]
pub enum OriginPattern {
    /// Any origin (`*`).
    Any,
    /// Exactly this origin (`https://app.example`), compared without case.
    Exact(String),
    /// A scheme and any subdomain of a host (`https://*.example.com` is `https://` and
    /// `.example.com`); the port, if any, is part of the suffix.
    Subdomains {
        /// `https://`.
        scheme: String,
        /// `.example.com`.
        suffix: String,
    },
}

impl OriginPattern {
    fn parse(text: &str) -> Result<OriginPattern, String> {
        if text == "*" {
            return Ok(OriginPattern::Any);
        }
        let lower = text.to_ascii_lowercase();
        let Some((scheme, host)) = lower.split_once("://") else {
            return Err(format!("`{text}` is not an origin: write `scheme://host[:port]`"));
        };
        if scheme.is_empty() || host.is_empty() || host.contains('/') {
            return Err(format!(
                "`{text}` is not an origin: write `scheme://host[:port]`, without a path"
            ));
        }
        match host.strip_prefix("*.") {
            Some(rest) if !rest.is_empty() && !rest.contains('*') => {
                Ok(OriginPattern::Subdomains {
                    scheme: format!("{scheme}://"),
                    suffix: format!(".{rest}"),
                })
            }
            _ if host.contains('*') => Err(format!(
                "`{text}`: a wildcard may only open the host (`https://*.example.com`)"
            )),
            _ => Ok(OriginPattern::Exact(lower)),
        }
    }

    /// Whether `origin` (as the browser sent it) matches.
    pub fn matches(&self, origin: &[u8]) -> bool {
        match self {
            OriginPattern::Any => true,
            OriginPattern::Exact(o) => origin.eq_ignore_ascii_case(o.as_bytes()),
            OriginPattern::Subdomains { scheme, suffix } => {
                origin.len() > scheme.len() + suffix.len()
                    && origin[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
                    && origin[origin.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
            }
        }
    }
}

impl Serialize for OriginPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            OriginPattern::Any => s.serialize_str("*"),
            OriginPattern::Exact(o) => s.serialize_str(o),
            OriginPattern::Subdomains { scheme, suffix } => {
                s.serialize_str(&format!("{scheme}*{suffix}"))
            }
        }
    }
}

/// A route's cross-origin policy (`cors:`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CorsSettings {
    /// Origins whose pages may call the route.
    pub origins: Vec<OriginPattern>,
    /// Methods a preflight may ask for (upper case).
    pub methods: Vec<String>,
    /// Request headers a preflight may ask for (lower case; `*`: any).
    pub headers: Vec<String>,
    /// Response headers the page may read (`Access-Control-Expose-Headers`).
    pub expose: Vec<String>,
    /// Whether the page may send and read credentials (cookies, `Authorization`).
    pub credentials: bool,
    /// How long a browser may keep a preflight's answer.
    #[serde(serialize_with = "super::ser_duration")]
    pub max_age: Duration,
    /// `methods` as an `Access-Control-Allow-Methods` value, rendered once.
    #[serde(skip)]
    pub allow_methods: Option<http::HeaderValue>,
    /// `expose` as an `Access-Control-Expose-Headers` value (`None`: empty), rendered once.
    #[serde(skip)]
    pub expose_headers: Option<http::HeaderValue>,
}

impl CorsSettings {
    /// Settings with their header values rendered.
    pub fn new(
        origins: Vec<OriginPattern>,
        methods: Vec<String>,
        headers: Vec<String>,
        expose: Vec<String>,
        credentials: bool,
        max_age: Duration,
    ) -> CorsSettings {
        let list = |items: &[String]| {
            (!items.is_empty())
                .then(|| http::HeaderValue::from_str(&items.join(", ")).ok())
                .flatten()
        };
        CorsSettings {
            allow_methods: list(&methods),
            expose_headers: list(&expose),
            origins,
            methods,
            headers,
            expose,
            credentials,
            max_age,
        }
    }
}

/// A route's request limits (`request_limits:`): beyond them the gateway answers itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RequestLimits {
    /// Largest body (413); the listener's `max_body_bytes` still applies when lower.
    pub max_body: Option<u64>,
    /// Most header fields (431).
    pub max_headers: Option<usize>,
    /// Largest request head in bytes, request line included (431).
    pub max_header_bytes: Option<usize>,
    /// Longest request target, path and query (414).
    pub max_uri: Option<usize>,
    /// Longest time the whole body may take to arrive, from the request's start (408).
    #[serde(serialize_with = "super::ser_opt_duration")]
    pub body_timeout: Option<Duration>,
}

/// A route's `auth:`, validated and built: the settings as written (compared across reloads,
/// shown by `/admin/config`) and the authenticator made from them (its JWKS read, its
/// password hashes parsed) — built once by validation, so a route whose auth cannot be
/// built never serves.
#[derive(Debug, Clone)]
pub struct RouteAuth {
    /// The settings, with `jwks_file` resolved against the config file's directory.
    pub config: spillway_auth::AuthConfig,
    /// The authenticator.
    pub authenticator: std::sync::Arc<spillway_auth::Authenticator>,
    /// The identity headers removed from every request on the route (listed once, here,
    /// rather than per request).
    pub strip: Vec<http::HeaderName>,
}

impl PartialEq for RouteAuth {
    fn eq(&self, other: &RouteAuth) -> bool {
        self.config == other.config
    }
}

impl Serialize for RouteAuth {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.config.serialize(s)
    }
}

/// What a route checks at the edge, before admission.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RouteEdge {
    /// Who may call it (`auth:`): API keys, JWTs or Basic.
    pub auth: Option<RouteAuth>,
    /// The route's own IP lists (after the listener's).
    pub ip: Option<IpRules>,
    /// Its cross-origin policy.
    pub cors: Option<CorsSettings>,
    /// Its request limits.
    pub request_limits: Option<RequestLimits>,
}

impl RouteEdge {
    /// Whether the route checks nothing at the edge.
    pub fn is_empty(&self) -> bool {
        self.ip.is_none()
            && self.cors.is_none()
            && self.request_limits.is_none()
            && self.auth.is_none()
    }
}

/// Checks an `ip:` block at `p`.
pub(super) fn ip_rules(c: &mut Checker<'_>, p: &[Seg], raw: RawIpRules) -> Option<IpRules> {
    let mut nets = |list: Option<Vec<String>>, name: &str| {
        let mut out = Vec::new();
        for (i, text) in list.unwrap_or_default().iter().enumerate() {
            match IpNet::parse(text) {
                Ok(net) => out.push(net),
                Err(why) => c.error(&at(p, &[key(name), Seg::Index(i)]), why),
            }
        }
        out
    };
    let rules = IpRules { allow: nets(raw.allow, "allow"), deny: nets(raw.deny, "deny") };
    if rules.allow.is_empty() && rules.deny.is_empty() {
        c.error(p, "names no network: give `allow`, `deny` or both");
        return None;
    }
    Some(rules)
}

/// Checks a route's `cors:`.
pub(super) fn cors(c: &mut Checker<'_>, p: &[Seg], raw: RawCors) -> Option<CorsSettings> {
    let mut origins = Vec::new();
    for (i, text) in raw.origins.iter().enumerate() {
        match OriginPattern::parse(text) {
            Ok(o) => origins.push(o),
            Err(why) => c.error(&at(p, &[key("origins"), Seg::Index(i)]), why),
        }
    }
    if raw.origins.is_empty() {
        c.error(&at(p, &[key("origins")]), "lists no origin: name the sites that may call");
        return None;
    }
    let credentials = raw.credentials.unwrap_or(false);
    if credentials && origins.contains(&OriginPattern::Any) {
        c.error(
            &at(p, &[key("credentials")]),
            "with `origins: [\"*\"]` every site could read answers made with the user's \
             cookies: list the origins instead",
        );
        return None;
    }
    let mut methods = Vec::new();
    for (i, m) in raw
        .methods
        .unwrap_or_else(|| vec!["GET".into(), "HEAD".into(), "POST".into()])
        .iter()
        .enumerate()
    {
        let upper = m.to_ascii_uppercase();
        if upper.is_empty() || !upper.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-') {
            c.error(&at(p, &[key("methods"), Seg::Index(i)]), format!("`{m}` is not a method"));
        } else {
            methods.push(upper);
        }
    }
    let token_list = |c: &mut Checker<'_>, name: &str, list: Option<Vec<String>>| {
        let mut out = Vec::new();
        for (i, h) in list.unwrap_or_default().iter().enumerate() {
            let lower = h.to_ascii_lowercase();
            if lower == "*" || http::HeaderName::from_bytes(lower.as_bytes()).is_ok() {
                out.push(lower);
            } else {
                c.error(&at(p, &[key(name), Seg::Index(i)]), format!("`{h}` is not a header name"));
            }
        }
        out
    };
    let headers = token_list(c, "headers", raw.headers);
    let expose = token_list(c, "expose", raw.expose);
    let max_age = raw.max_age.map_or(Duration::from_secs(600), |d| d.0);
    Some(CorsSettings::new(origins, methods, headers, expose, credentials, max_age))
}

/// Checks a route's `request_limits:`.
pub(super) fn request_limits(
    c: &mut Checker<'_>,
    p: &[Seg],
    raw: RawRequestLimits,
) -> Option<RequestLimits> {
    let max_body = match raw.max_body {
        None => None,
        Some(size) => Some(byte_size(c, &at(p, &[key("max_body")]), size)?),
    };
    let max_header_bytes = match raw.max_header_bytes {
        None => None,
        Some(size) => Some(byte_size(c, &at(p, &[key("max_header_bytes")]), size)? as usize),
    };
    for (name, value) in [
        ("max_headers", raw.max_headers),
        ("max_uri", raw.max_uri),
        ("max_header_bytes", max_header_bytes),
    ] {
        if value == Some(0) {
            c.error(&at(p, &[key(name)]), "must be at least 1");
            return None;
        }
    }
    let body_timeout = raw.body_timeout.map(|d| d.0);
    if body_timeout.is_some_and(|d| d.is_zero()) {
        c.error(&at(p, &[key("body_timeout")]), "must be longer than zero");
        return None;
    }
    let limits = RequestLimits {
        max_body,
        max_headers: raw.max_headers,
        max_header_bytes,
        max_uri: raw.max_uri,
        body_timeout,
    };
    if limits == RequestLimits::default() {
        c.error(
            p,
            "sets no limit: give `max_body`, `max_headers`, `max_header_bytes`, `max_uri` or `body_timeout`",
        );
        return None;
    }
    Some(limits)
}

/// Checks a route's `auth:` and builds its authenticator (reading the JWKS file).
pub(super) fn auth(
    c: &mut Checker<'_>,
    p: &[Seg],
    mut raw: spillway_auth::AuthConfig,
    base: &std::path::Path,
) -> Option<RouteAuth> {
    if let Some(jwt) = &mut raw.jwt {
        jwt.jwks_file = base.join(&jwt.jwks_file);
    }
    match spillway_auth::Authenticator::from_config(&raw, base) {
        Ok(authenticator) => Some(RouteAuth {
            config: raw,
            strip: authenticator.strip_headers(),
            authenticator: std::sync::Arc::new(authenticator),
        }),
        Err(e) => {
            c.error(p, e.to_string());
            None
        }
    }
}
