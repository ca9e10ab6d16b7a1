//! From the raw file to a [`Config`]: every value checked, every default applied, every
//! problem reported with its line and key.

use super::duration::ConfigDuration;
use super::locate::{self, Seg};
use super::policy;
use super::raw::*;
use super::record;
use super::*;
use std::collections::HashSet;

/// Names accepted for `balance`.
pub const BALANCE_NAMES: &[&str] = &[
    Balance::ALL[0].as_str(),
    Balance::ALL[1].as_str(),
    Balance::ALL[2].as_str(),
    Balance::ALL[3].as_str(),
    Balance::ALL[4].as_str(),
];

/// Default header-read (slowloris) timeout of a listener: nginx's `client_header_timeout`.
/// With hyper it also bounds how long an HTTP/1.1 keep-alive connection waits idle.
pub const DEFAULT_HEADER_READ: Duration = Duration::from_secs(60);
/// Default idle timeout of a downstream connection.
pub const DEFAULT_DOWNSTREAM_IDLE: Duration = Duration::from_secs(60);
/// Default largest request head: 16 KiB, above hyper's 8 KiB minimum buffer.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 16 * 1024;
/// Default largest request body: 64 MiB (bodies are streamed, so this bounds abuse, not memory).
pub const DEFAULT_MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;
/// Default most connections per listener.
pub const DEFAULT_MAX_CONNECTIONS: usize = 25_000;
/// Default upstream connect timeout.
pub const DEFAULT_CONNECT: Duration = Duration::from_secs(1);
/// Default whole-request timeout (until the response head).
pub const DEFAULT_REQUEST: Duration = Duration::from_secs(15);
/// Default upstream idle keep-alive.
pub const DEFAULT_UPSTREAM_IDLE: Duration = Duration::from_secs(60);
/// Default graceful-shutdown drain deadline.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

/// Turns a parser error into a problem, suggesting the nearest key for an unknown one.
pub fn problem_from_yaml(error: &yaml_serde::Error) -> Problem {
    let line = error.location().map(|l| l.line());
    let message = error.to_string();
    // yaml_serde renders "path.to.key: message at line L column C".
    let message = match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message,
    };
    let (key, mut reason) = match message.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') => (path.to_string(), rest.to_string()),
        _ => (String::from("."), message.clone()),
    };
    if let Some(suggestion) = suggest_unknown_field(&reason) {
        reason = format!("{reason}; did you mean `{suggestion}`?");
    }
    Problem { line, key, reason }
}

/// Turns an error from deserializing the expanded document into a problem: the key path comes
/// from the deserializer, the line from `source` (the text as written).
pub fn problem_from_value(
    error: &serde_path_to_error::Error<yaml_serde::Error>,
    source: &str,
) -> Problem {
    let path: Vec<Seg> = error
        .path()
        .iter()
        .filter_map(|segment| match segment {
            serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
            serde_path_to_error::Segment::Map { key }
            | serde_path_to_error::Segment::Enum { variant: key } => Some(Seg::Key(key.clone())),
            serde_path_to_error::Segment::Unknown => None,
        })
        .collect();
    let mut reason = error.inner().to_string();
    if let Some(suggestion) = suggest_unknown_field(&reason) {
        reason = format!("{reason}; did you mean `{suggestion}`?");
    }
    let key = if path.is_empty() { String::from(".") } else { locate::render(&path) };
    Problem { line: locate::line_of(source, &path), key, reason }
}

/// For "unknown field `x`, expected one of `a`, `b`", the expected name nearest to `x`.
fn suggest_unknown_field(reason: &str) -> Option<String> {
    let rest = reason.strip_prefix("unknown field `")?;
    let (unknown, expected) = rest.split_once('`')?;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|candidate| (edit_distance(unknown, candidate), candidate))
        .filter(|(d, c)| *d <= c.len().max(unknown.len()) / 2 + 1)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

/// Levenshtein distance (small strings only: key names).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

pub(super) fn nearest<'a>(value: &str, names: &[&'a str]) -> Option<&'a str> {
    names
        .iter()
        .map(|n| (edit_distance(value, n), *n))
        .filter(|(d, n)| *d <= n.len() / 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Collects problems with their lines.
pub(super) struct Checker<'a> {
    source: &'a str,
    problems: Vec<Problem>,
}

impl Checker<'_> {
    /// Problems found so far (to tell whether a section added any).
    pub(super) fn problem_count(&self) -> usize {
        self.problems.len()
    }

    pub(super) fn error(&mut self, path: &[Seg], reason: impl Into<String>) {
        self.problems.push(Problem {
            line: locate::line_of(self.source, path),
            key: locate::render(path),
            reason: reason.into(),
        });
    }
}

pub(super) fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

pub(super) fn at(path: &[Seg], more: &[Seg]) -> Vec<Seg> {
    path.iter().chain(more).cloned().collect()
}

/// Reads a byte size (`65536` or `64KB`); reports an unreadable one at `path` and gives `None`.
pub(super) fn byte_size(c: &mut Checker<'_>, path: &[Seg], raw: RawSize) -> Option<u64> {
    match raw {
        RawSize::Bytes(n) => Some(n),
        RawSize::Text(text) => match spillway_record::size::parse_bytes(&text) {
            Ok(n) => Some(n),
            Err(e) => {
                c.error(path, e.to_string());
                None
            }
        },
    }
}

fn parse_addr(c: &mut Checker<'_>, path: &[Seg], text: &str) -> Option<SocketAddr> {
    match text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            c.error(path, format!("`{text}` is not an IP:port address (e.g. 127.0.0.1:8080)"));
            None
        }
    }
}

fn positive(
    c: &mut Checker<'_>,
    path: &[Seg],
    d: Option<ConfigDuration>,
    default: Duration,
) -> Duration {
    match d {
        Some(ConfigDuration(d)) if d.is_zero() => {
            c.error(path, "must be greater than zero (no timeout may be infinite or zero)");
            default
        }
        Some(ConfigDuration(d)) => d,
        None => default,
    }
}

/// Validates a parsed file; `source` is the expanded text (for line numbers).
pub fn validate(raw: RawConfig, source: &str, base: &Path) -> Result<Config, Vec<Problem>> {
    let mut c = Checker { source, problems: Vec::new() };
    let workers = match raw.workers {
        Some(0) => {
            c.error(&[key("workers")], "must be at least 1");
            1
        }
        Some(n) if n > 1024 => {
            c.error(&[key("workers")], "at most 1024");
            1024
        }
        Some(n) => n,
        None => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };

    if raw.listeners.is_empty() {
        c.error(&[key("listeners")], "at least one listener is needed");
    }
    let mut listeners = Vec::new();
    let mut names = HashSet::new();
    let mut addresses = HashSet::new();
    for (i, l) in raw.listeners.into_iter().enumerate() {
        let p = [key("listeners"), Seg::Index(i)];
        if !names.insert(l.name.clone()) {
            c.error(&at(&p, &[key("name")]), format!("listener `{}` is defined twice", l.name));
        }
        let address = parse_addr(&mut c, &at(&p, &[key("address")]), &l.address);
        let bbr = policy::overload(&mut c, &at(&p, &[key("overload")]), l.overload);
        if let Some(a) = address {
            if a.port() != 0 && !addresses.insert(a) {
                c.error(&at(&p, &[key("address")]), format!("{a} is used by two listeners"));
            }
        }
        let protocol = match l.protocol.as_deref() {
            None | Some("http1") => ListenerProtocol::Http1,
            Some("h2c") => ListenerProtocol::H2c,
            Some("auto") => ListenerProtocol::Auto,
            Some(other) => {
                c.error(
                    &at(&p, &[key("protocol")]),
                    format!("`{other}`: expected http1, h2c or auto"),
                );
                ListenerProtocol::Http1
            }
        };
        let http2_server = match l.http2_server.as_deref() {
            None | Some("lean") => Http2Server::Lean,
            Some("hyper") => Http2Server::Hyper,
            Some(other) => {
                c.error(
                    &at(&p, &[key("http2_server")]),
                    format!("`{other}`: expected lean or hyper"),
                );
                Http2Server::Lean
            }
        };
        let tls = l.tls.map(|t| {
            let cert = base.join(&t.cert);
            let key_path = base.join(&t.key);
            for (name, file) in [("cert", &cert), ("key", &key_path)] {
                if !file.is_file() {
                    c.error(
                        &at(&p, &[key("tls"), key(name)]),
                        format!("{} is not a readable file", file.display()),
                    );
                }
            }
            let client = t.client_ca.as_ref().map(|ca| {
                let ca = base.join(ca);
                if !ca.is_file() {
                    c.error(
                        &at(&p, &[key("tls"), key("client_ca")]),
                        format!("{} is not a readable file", ca.display()),
                    );
                }
                let required = match t.client_auth.as_deref() {
                    None | Some("optional") => false,
                    Some("required") => true,
                    Some(other) => {
                        c.error(
                            &at(&p, &[key("tls"), key("client_auth")]),
                            format!("`{other}`: expected optional or required"),
                        );
                        false
                    }
                };
                let forward = t.forward.as_ref();
                let mut header = |name: &str, given: Option<&String>, default: Option<&str>| {
                    let value = given.map(|s| s.to_ascii_lowercase()).or(default.map(String::from));
                    if let Some(v) = &value {
                        if http::HeaderName::from_bytes(v.as_bytes()).is_err() {
                            c.error(
                                &at(&p, &[key("tls"), key("forward"), key(name)]),
                                format!("`{v}` is not a header name"),
                            );
                        }
                    }
                    value
                };
                ClientCertConfig {
                    ca,
                    required,
                    forward_subject: header(
                        "subject",
                        forward.and_then(|f| f.subject.as_ref()),
                        Some("x-client-cert-subject"),
                    ),
                    forward_san: header("san", forward.and_then(|f| f.san.as_ref()), None),
                }
            });
            if t.client_ca.is_none() && (t.client_auth.is_some() || t.forward.is_some()) {
                c.error(
                    &at(&p, &[key("tls")]),
                    "`client_auth` and `forward` need `client_ca` (the CA client certificates \
                     chain to)",
                );
            }
            TlsConfig { cert, key: key_path, client }
        });
        let timeouts = l.timeouts.unwrap_or(RawListenerTimeouts { header_read: None, idle: None });
        let header_read_timeout = positive(
            &mut c,
            &at(&p, &[key("timeouts"), key("header_read")]),
            timeouts.header_read,
            DEFAULT_HEADER_READ,
        );
        let idle_timeout = positive(
            &mut c,
            &at(&p, &[key("timeouts"), key("idle")]),
            timeouts.idle,
            DEFAULT_DOWNSTREAM_IDLE,
        );
        let limits = l.limits.unwrap_or(RawLimits {
            max_header_bytes: None,
            max_body_bytes: None,
            max_connections: None,
        });
        let max_header_bytes = limits.max_header_bytes.unwrap_or(DEFAULT_MAX_HEADER_BYTES);
        if !(8192..=1 << 20).contains(&max_header_bytes) {
            c.error(
                &at(&p, &[key("limits"), key("max_header_bytes")]),
                "must be between 8192 and 1048576",
            );
        }
        let max_connections = limits.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        if max_connections == 0 {
            c.error(&at(&p, &[key("limits"), key("max_connections")]), "must be at least 1");
        }
        if let Some(address) = address {
            listeners.push(ListenerConfig {
                name: l.name,
                address,
                protocol,
                http2_server,
                tls,
                header_read_timeout,
                idle_timeout,
                max_header_bytes,
                max_body_bytes: limits.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
                max_connections,
                bbr,
                ip: l.ip.and_then(|raw| super::edge::ip_rules(&mut c, &at(&p, &[key("ip")]), raw)),
                index: listeners.len(),
            });
        }
    }

    let admin = raw.admin.and_then(|a| {
        let address = parse_addr(&mut c, &[key("admin"), key("address")], &a.address)?;
        if address.port() != 0 && addresses.contains(&address) {
            c.error(
                &[key("admin"), key("address")],
                format!("{address} is also a listener's address"),
            );
        }
        // An empty token is refused rather than read as "no authentication": leaving the key
        // out (or writing `null`) is the one way to turn authentication off.
        if a.token.as_deref() == Some("") {
            c.error(
                &[key("admin"), key("token")],
                "the token is empty: write a token, or remove the key to turn authentication off",
            );
        }
        let token = a.token.filter(|t| !t.is_empty());
        // Reload and plan switches must not be open to the network.
        if !address.ip().is_loopback() && token.is_none() {
            c.error(
                &[key("admin"), key("address")],
                format!(
                    "{address} is reachable from other hosts and the admin API has no `token`: \
                     set `token: ${{SPILLWAY_ADMIN_TOKEN}}` or bind it to 127.0.0.1"
                ),
            );
        }
        Some(AdminConfig { address, token })
    });

    let mut clusters = Vec::new();
    let mut cluster_names = HashSet::new();
    for (i, mut rc) in raw.clusters.into_iter().enumerate() {
        let p = [key("clusters"), Seg::Index(i)];
        if !cluster_names.insert(rc.name.clone()) {
            c.error(&at(&p, &[key("name")]), format!("cluster `{}` is defined twice", rc.name));
        }
        let discovery = rc.discovery.take().and_then(|d| {
            let dp = at(&p, &[key("discovery")]);
            match (d.file, d.dns, d.etcd) {
                (Some(file), None, None) => Some(Discovery::File(base.join(file))),
                (None, None, Some(etcd)) => {
                    let ep = at(&dp, &[key("etcd")]);
                    if etcd.endpoints.is_empty() {
                        c.error(&at(&ep, &[key("endpoints")]), "at least one etcd URL");
                    }
                    for (k, url) in etcd.endpoints.iter().enumerate() {
                        if !(url.starts_with("http://") || url.starts_with("https://")) {
                            c.error(
                                &at(&ep, &[key("endpoints"), Seg::Index(k)]),
                                format!("`{url}` is not an etcd URL (http://host:2379)"),
                            );
                        }
                    }
                    if etcd.prefix.is_empty() {
                        c.error(
                            &at(&ep, &[key("prefix")]),
                            "a key prefix such as /services/users/",
                        );
                    }
                    Some(Discovery::Etcd { endpoints: etcd.endpoints, prefix: etcd.prefix })
                }
                (None, Some(dns), None) => {
                    let refresh = dns.refresh.map_or(Duration::from_secs(10), |r| r.0);
                    if refresh.is_zero() {
                        c.error(
                            &at(&dp, &[key("dns"), key("refresh")]),
                            "must be longer than zero",
                        );
                    }
                    if dns.name.trim().is_empty() {
                        c.error(&at(&dp, &[key("dns"), key("name")]), "a host name is required");
                    }
                    Some(Discovery::Dns {
                        name: dns.name.trim().to_string(),
                        port: dns.port,
                        refresh,
                    })
                }
                _ => {
                    c.error(&dp, "give exactly one of `file`, `dns` or `etcd`");
                    None
                }
            }
        });
        if rc.endpoints.is_empty() && discovery.is_none() {
            c.error(
                &at(&p, &[key("endpoints")]),
                "a cluster needs at least one endpoint (or `discovery:`)",
            );
        }
        let mut endpoints = Vec::new();
        for (j, e) in rc.endpoints.into_iter().enumerate() {
            let ep = at(&p, &[key("endpoints"), Seg::Index(j)]);
            let Some(address) = parse_addr(&mut c, &at(&ep, &[key("address")]), &e.address) else {
                continue;
            };
            let weight = e.weight.unwrap_or(1);
            if weight == 0 {
                c.error(
                    &at(&ep, &[key("weight")]),
                    "must be at least 1 (remove the endpoint to send it nothing)",
                );
            }
            endpoints.push(EndpointConfig { address, weight: weight.max(1), zone: e.zone });
        }
        let balance = match rc.balance.as_deref().map(|name| (name, name.parse::<Balance>())) {
            None => Balance::RoundRobin,
            Some((_, Ok(kind))) => kind,
            Some((other, Err(_))) => {
                let hint = nearest(other, BALANCE_NAMES)
                    .map(|n| format!("; did you mean `{n}`?"))
                    .unwrap_or_default();
                c.error(
                    &at(&p, &[key("balance")]),
                    format!(
                        "unknown algorithm `{other}`, expected one of {}{hint}",
                        BALANCE_NAMES.join(", ")
                    ),
                );
                Balance::RoundRobin
            }
        };
        let protocol = match rc.protocol.as_deref() {
            None | Some("http1") => UpstreamProtocol::Http1,
            Some("http2") | Some("h2c") => UpstreamProtocol::Http2,
            Some(other) => {
                c.error(&at(&p, &[key("protocol")]), format!("`{other}`: expected http1 or http2"));
                UpstreamProtocol::Http1
            }
        };
        let t = rc.timeouts.unwrap_or(RawClusterTimeouts {
            connect: None,
            request: None,
            per_try: None,
            idle: None,
        });
        let tp = at(&p, &[key("timeouts")]);
        let request = positive(&mut c, &at(&tp, &[key("request")]), t.request, DEFAULT_REQUEST);
        let timeouts = ClusterTimeouts {
            connect: positive(&mut c, &at(&tp, &[key("connect")]), t.connect, DEFAULT_CONNECT),
            request,
            per_try: positive(&mut c, &at(&tp, &[key("per_try")]), t.per_try, request),
            idle: positive(&mut c, &at(&tp, &[key("idle")]), t.idle, DEFAULT_UPSTREAM_IDLE),
        };
        let health_check = rc.health_check.map(|h| {
            let hp = at(&p, &[key("health_check")]);
            let probe = match (h.path, h.grpc) {
                (Some(path), None) => {
                    if !path.starts_with('/') {
                        c.error(&at(&hp, &[key("path")]), "must start with `/`");
                    }
                    HealthProbe::Http { path }
                }
                (None, Some(grpc)) => {
                    if protocol != UpstreamProtocol::Http2 {
                        c.error(
                            &at(&hp, &[key("grpc")]),
                            "gRPC health checks need the cluster's `protocol: http2`",
                        );
                    }
                    HealthProbe::Grpc { service: grpc.service.unwrap_or_default() }
                }
                (path, _) => {
                    c.error(
                        &hp,
                        if path.is_some() {
                            "give `path` (HTTP) or `grpc` (the gRPC health protocol), not both"
                        } else {
                            "give `path` (an HTTP GET, e.g. `/healthz`) or `grpc: {}` (the gRPC \
                             health protocol)"
                        },
                    );
                    HealthProbe::Http { path: "/".into() }
                }
            };
            let healthy = h.healthy.unwrap_or(2);
            let unhealthy = h.unhealthy.unwrap_or(3);
            if healthy == 0 || unhealthy == 0 {
                c.error(&hp, "`healthy` and `unhealthy` thresholds must be at least 1");
            }
            HealthCheckConfig {
                probe,
                interval: positive(
                    &mut c,
                    &at(&hp, &[key("interval")]),
                    h.interval,
                    Duration::from_secs(5),
                ),
                timeout: positive(
                    &mut c,
                    &at(&hp, &[key("timeout")]),
                    h.timeout,
                    Duration::from_secs(1),
                ),
                healthy: healthy.max(1),
                unhealthy: unhealthy.max(1),
            }
        });
        let o = rc.outlier.unwrap_or(RawOutlier {
            consecutive_failures: None,
            base_ejection: None,
            max_ejection: None,
            max_ejected_percent: None,
            panic_threshold: None,
        });
        let op = at(&p, &[key("outlier")]);
        let max_ejected_percent = o.max_ejected_percent.unwrap_or(50);
        if max_ejected_percent > 100 {
            c.error(&at(&op, &[key("max_ejected_percent")]), "a percentage: 0 to 100");
        }
        let panic_threshold = o.panic_threshold.unwrap_or(50);
        if panic_threshold > 100 {
            c.error(&at(&op, &[key("panic_threshold")]), "a percentage: 0 to 100");
        }
        let base_ejection = positive(
            &mut c,
            &at(&op, &[key("base_ejection")]),
            o.base_ejection,
            Duration::from_secs(30),
        );
        let outlier = OutlierConfig {
            consecutive_failures: o.consecutive_failures.unwrap_or(5),
            base_ejection,
            max_ejection: positive(
                &mut c,
                &at(&op, &[key("max_ejection")]),
                o.max_ejection,
                Duration::from_secs(300),
            )
            .max(base_ejection),
            max_ejected_percent: max_ejected_percent.min(100),
            panic_threshold: panic_threshold.min(100),
        };
        let breaker_failure_statuses = rc.breaker.as_mut().and_then(|b| b.failure_statuses.take());
        if let Some(list) = &breaker_failure_statuses {
            for (k, status) in list.iter().enumerate() {
                if !(400..=599).contains(status) {
                    c.error(
                        &at(&p, &[key("breaker"), key("failure_statuses"), Seg::Index(k)]),
                        format!("{status} is not an error status (400 to 599)"),
                    );
                }
            }
        }
        let http2_client = match rc.http2_client.as_deref() {
            Some("hyper") => Http2Client::Hyper,
            None | Some("lean") => Http2Client::Lean,
            Some(other) => {
                c.error(
                    &at(&p, &[key("http2_client")]),
                    format!("`{other}`: expected lean or hyper"),
                );
                Http2Client::Hyper
            }
        };
        clusters.push(ClusterConfig {
            name: rc.name,
            endpoints,
            balance,
            hash_header: rc.hash_header.map(|h| h.to_ascii_lowercase()),
            protocol,
            http2_client,
            timeouts,
            health_check,
            outlier,
            concurrency: rc
                .concurrency
                .and_then(|raw| policy::concurrency(&mut c, &at(&p, &[key("concurrency")]), raw)),
            breaker: rc
                .breaker
                .and_then(|raw| policy::breaker(&mut c, &at(&p, &[key("breaker")]), raw)),
            gutter: rc.gutter,
            breaker_failure_statuses,
            tls: rc.tls.take().and_then(|raw| {
                let dns = match &discovery {
                    Some(Discovery::Dns { name, .. }) => Some(name.as_str()),
                    _ => None,
                };
                upstream_tls::check(&mut c, &at(&p, &[key("tls")]), raw, base, protocol, dns)
            }),
            discovery,
        });
    }
    // A gutter is another cluster of the config.
    for (i, cl) in clusters.iter().enumerate() {
        let Some(gutter) = &cl.gutter else { continue };
        let gp = [key("clusters"), Seg::Index(i), key("gutter")];
        let found = clusters.iter().find(|o| &o.name == gutter);
        if gutter == &cl.name {
            c.error(&gp, "a cluster cannot be its own gutter");
        } else if let Some(g) = found.filter(|g| g.protocol != cl.protocol) {
            c.error(
                &gp,
                format!(
                    "gutter `{}` speaks {} and this cluster {}: a gutter takes the same requests, \
                     so it must use the same protocol",
                    g.name,
                    g.protocol.as_str(),
                    cl.protocol.as_str()
                ),
            );
        } else if found.is_none() {
            let known: Vec<&str> = clusters.iter().map(|o| o.name.as_str()).collect();
            let hint = nearest(gutter, &known)
                .map(|n| format!("; did you mean `{n}`?"))
                .unwrap_or_default();
            c.error(&gp, format!("no cluster named `{gutter}`{hint}"));
        }
    }

    let trusted_proxies = policy::trusted_proxies(&mut c, raw.trusted_proxies);
    let levels = policy::levels(&mut c, raw.levels);
    let mut routes = Vec::new();
    let mut route_names = HashSet::new();
    for (i, mut r) in raw.routes.into_iter().enumerate() {
        let p = [key("routes"), Seg::Index(i)];
        let mut r_policy = RawRoutePolicy {
            level: r.level.take(),
            criticality: r.criticality.take(),
            max_criticality: r.max_criticality.take(),
            criticality_by_header: r.criticality_by_header.take(),
            limits: r.limits.take(),
            overload: r.overload.take(),
            deadline: r.deadline.take(),
            budget: r.budget.take(),
            bulkhead: r.bulkhead.take(),
            slow: r.slow.take(),
            fault: r.fault.take(),
            fallback: r.fallback.take(),
            strategy: r.strategy.take(),
            retries: r.retries.take(),
            hedge: r.hedge.take(),
            failback: r.failback.take(),
            mirror: r.mirror.take(),
            stale_on_error: r.stale_on_error.take(),
            hot_keys: r.hot_keys.take(),
            cache: r.cache.take(),
        };
        if !route_names.insert(r.name.clone()) {
            c.error(&at(&p, &[key("name")]), format!("route `{}` is defined twice", r.name));
        }
        let matcher = match r.matcher {
            Some(m) => validate_match(&mut c, &at(&p, &[key("match")]), m),
            None => MatchConfig::default(),
        };
        let action = match (r.cluster, r.direct_response) {
            (Some(name), None) => {
                if !cluster_names.contains(&name) {
                    let known: Vec<&str> = cluster_names.iter().map(String::as_str).collect();
                    let hint = nearest(&name, &known)
                        .map(|n| format!("; did you mean `{n}`?"))
                        .unwrap_or_default();
                    c.error(&at(&p, &[key("cluster")]), format!("no cluster named `{name}`{hint}"));
                }
                let (rewrite_prefix, rewrite_host) = match r.rewrite {
                    Some(rw) => {
                        if rw.path_prefix.is_some()
                            && !matches!(matcher.path, Some(PathMatch::Prefix(_)))
                        {
                            c.error(
                                &at(&p, &[key("rewrite"), key("path_prefix")]),
                                "needs `match.path_prefix` (the part it replaces)",
                            );
                        }
                        (rw.path_prefix, rw.host)
                    }
                    None => (None, None),
                };
                let timeout = r.timeout.map(|ConfigDuration(d)| d);
                if timeout.is_some_and(|d| d.is_zero()) {
                    c.error(&at(&p, &[key("timeout")]), "must be greater than zero");
                }
                RouteAction::Cluster { name, rewrite_prefix, rewrite_host, timeout }
            }
            (None, Some(d)) => {
                if !(100..=599).contains(&d.status) {
                    c.error(
                        &at(&p, &[key("direct_response"), key("status")]),
                        "an HTTP status: 100 to 599",
                    );
                }
                if r.rewrite.is_some() {
                    c.error(&at(&p, &[key("rewrite")]), "a direct response has nothing to rewrite");
                }
                let headers: Vec<(String, String)> =
                    d.headers.unwrap_or_default().into_iter().collect();
                for (name, value) in &headers {
                    if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                        || http::HeaderValue::from_str(value).is_err()
                    {
                        c.error(
                            &at(&p, &[key("direct_response"), key("headers")]),
                            format!("invalid header `{name}: {value}`"),
                        );
                    }
                }
                RouteAction::Direct { status: d.status, body: d.body.unwrap_or_default(), headers }
            }
            (Some(_), Some(_)) => {
                c.error(&p, "give either `cluster` or `direct_response`, not both");
                continue;
            }
            (None, None) => {
                c.error(&p, "needs `cluster` or `direct_response`");
                continue;
            }
        };
        let record = r.record.and_then(|raw| {
            let rp = at(&p, &[key("record")]);
            let is_proxy = matches!(action, RouteAction::Cluster { .. });
            let (record, problems) = record::validate_record(raw, is_proxy, base);
            c.problems.extend(record::located(source, &rp, problems));
            if let Some(why) =
                record.as_ref().and_then(|r| record::shared_file_conflict(&routes, r))
            {
                c.error(&at(&rp, &[key("file")]), why);
            }
            record
        });
        let route_timeout = match &action {
            RouteAction::Cluster { name, timeout, .. } => timeout.or_else(|| {
                clusters
                    .iter()
                    .find(|cl: &&ClusterConfig| &cl.name == name)
                    .map(|cl| cl.timeouts.request)
            }),
            RouteAction::Direct { .. } => None,
        };
        let is_proxy = matches!(action, RouteAction::Cluster { .. });
        let policy =
            route_policy(&mut c, &p, &levels, route_timeout, is_proxy, base, &mut r_policy);
        let edge = super::edge::RouteEdge {
            auth: r
                .auth
                .and_then(|raw| super::edge::auth(&mut c, &at(&p, &[key("auth")]), raw, base)),
            ip: r.ip.and_then(|raw| super::edge::ip_rules(&mut c, &at(&p, &[key("ip")]), raw)),
            cors: r.cors.and_then(|raw| super::edge::cors(&mut c, &at(&p, &[key("cors")]), raw)),
            request_limits: r.request_limits.and_then(|raw| {
                super::edge::request_limits(&mut c, &at(&p, &[key("request_limits")]), raw)
            }),
        };
        routes.push(RouteConfig { name: r.name, matcher, action, record, policy, edge });
    }

    // A mirror's shadow cluster exists and is not the route's own.
    for (i, r) in routes.iter().enumerate() {
        let (Some(m), RouteAction::Cluster { name, .. }) = (&r.policy.mirror, &r.action) else {
            continue;
        };
        let mp = [key("routes"), Seg::Index(i), key("mirror"), key("cluster")];
        if &m.cluster == name {
            c.error(&mp, "the shadow cluster must differ from the route's own cluster");
        } else if !clusters.iter().any(|cl| cl.name == m.cluster) {
            let known: Vec<&str> = clusters.iter().map(|cl| cl.name.as_str()).collect();
            let hint = nearest(&m.cluster, &known)
                .map(|n| format!("; did you mean `{n}`?"))
                .unwrap_or_default();
            c.error(&mp, format!("no cluster named `{}`{hint}", m.cluster));
        }
    }
    // One queue per directory: a directory is locked by the queue that holds it.
    for (i, r) in routes.iter().enumerate() {
        let Some(f) = &r.policy.failback else { continue };
        if let Some(first) = routes[..i]
            .iter()
            .find(|o| o.policy.failback.as_ref().is_some_and(|of| of.dir == f.dir))
        {
            c.error(
                &[key("routes"), Seg::Index(i), key("failback"), key("dir")],
                format!(
                    "route `{}` already queues in {}: each failback route needs its own directory",
                    first.name,
                    f.dir.display()
                ),
            );
        }
    }
    let plans = policy::plans(&mut c, raw.plans, &routes);
    let drain_timeout = positive(
        &mut c,
        &[key("shutdown"), key("drain")],
        raw.shutdown.and_then(|s| s.drain),
        DEFAULT_DRAIN,
    );
    let access_log = raw.access_log.map(|a| match a.path.as_str() {
        "stdout" | "-" => AccessLogTarget::Stdout,
        path => AccessLogTarget::File(base.join(path)),
    });
    // Created at start (or at the reload that sets it), not here: `check` writes nothing.
    let state_dir = raw.state_dir.map(|dir| {
        let path = base.join(&dir);
        if dir.trim().is_empty() {
            c.error(&[key("state_dir")], "must name a directory (`.` for the config's own)");
        } else if path.exists() && !path.is_dir() {
            c.error(&[key("state_dir")], format!("{} is not a directory", path.display()));
        }
        path
    });

    let quota_store = match raw.quota_store {
        None => QuotaStoreSettings::default(),
        Some(q) => {
            let qp = [key("quota_store")];
            let redis = match q.redis {
                None => Vec::new(),
                Some(RawRates::One(u)) => vec![u],
                Some(RawRates::Many(us)) => us,
            };
            for (k, url) in redis.iter().enumerate() {
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    c.error(
                        &at(&qp, &[key("redis"), Seg::Index(k)]),
                        format!("`{url}` is not a Redis URL (redis://host:port)"),
                    );
                }
            }
            let timeout =
                positive(&mut c, &at(&qp, &[key("timeout")]), q.timeout, Duration::from_millis(20));
            QuotaStoreSettings {
                redis,
                cluster: q.cluster.unwrap_or(false),
                timeout,
                instance: q.instance,
            }
        }
    };
    if c.problems.is_empty() {
        Ok(Config {
            source: String::new(),
            workers,
            listeners,
            admin,
            clusters,
            routes,
            drain_timeout,
            access_log,
            trusted_proxies,
            levels,
            plans,
            state_dir,
            quota_store,
            warnings: Vec::new(),
        })
    } else {
        c.problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
        Err(c.problems)
    }
}

/// A route's admission settings, taken out of the raw route before its other fields move.
struct RawRoutePolicy {
    level: Option<String>,
    criticality: Option<String>,
    max_criticality: Option<String>,
    criticality_by_header: Option<RawCriticalityByHeader>,
    limits: Option<Vec<RawLimit>>,
    overload: Option<RawOverload>,
    deadline: Option<RawDeadline>,
    budget: Option<RawBudget>,
    bulkhead: Option<RawBulkhead>,
    slow: Option<RawSlow>,
    fault: Option<RawFault>,
    fallback: Option<RawFallback>,
    strategy: Option<String>,
    retries: Option<super::raw::RawRetries>,
    hedge: Option<super::raw::RawHedge>,
    failback: Option<super::raw::RawFailback>,
    mirror: Option<super::raw::RawMirror>,
    stale_on_error: Option<super::raw::RawStaleOnError>,
    hot_keys: Option<super::raw::RawHotKeys>,
    cache: Option<super::raw::RawCache>,
}

fn route_policy(
    c: &mut Checker<'_>,
    p: &[Seg],
    levels: &[(String, BulkheadSettings)],
    route_timeout: Option<Duration>,
    is_proxy: bool,
    base: &Path,
    raw: &mut RawRoutePolicy,
) -> RoutePolicyConfig {
    let written: Vec<&str> = [
        ("level", raw.level.is_some()),
        ("criticality", raw.criticality.is_some()),
        ("max_criticality", raw.max_criticality.is_some()),
        ("criticality_by_header", raw.criticality_by_header.is_some()),
        ("limits", raw.limits.is_some()),
        ("overload", raw.overload.is_some()),
        ("deadline", raw.deadline.is_some()),
        ("budget", raw.budget.is_some()),
        ("bulkhead", raw.bulkhead.is_some()),
        ("slow", raw.slow.is_some()),
        ("fault", raw.fault.is_some()),
        ("fallback", raw.fallback.is_some()),
        ("strategy", raw.strategy.is_some()),
        ("retries", raw.retries.is_some()),
        ("hedge", raw.hedge.is_some()),
        ("failback", raw.failback.is_some()),
        ("mirror", raw.mirror.is_some()),
        ("stale_on_error", raw.stale_on_error.is_some()),
        ("hot_keys", raw.hot_keys.is_some()),
        ("cache", raw.cache.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, given)| given.then_some(name))
    .collect();
    if !is_proxy {
        if let Some(first) = written.first() {
            let keys: Vec<String> = written.iter().map(|k| format!("`{k}`")).collect();
            c.error(
                &at(p, &[key(first)]),
                format!(
                    "{} only apply to routes with a `cluster`: a direct response is answered by \
                     the gateway itself, so there is nothing to protect",
                    keys.join(", ")
                ),
            );
        }
    }
    let level = raw.level.take();
    if let Some(name) = &level {
        if !levels.iter().any(|(n, _)| n == name) {
            let known: Vec<&str> = levels.iter().map(|(n, _)| n.as_str()).collect();
            let hint =
                nearest(name, &known).map(|n| format!("; did you mean `{n}`?")).unwrap_or_default();
            c.error(
                &at(p, &[key("level")]),
                format!("no level named `{name}` in the top-level `levels:`{hint}"),
            );
        }
    }
    let criticality = policy::criticality(c, &at(p, &[key("criticality")]), raw.criticality.take())
        .unwrap_or(spillway_core::Criticality::Critical);
    let max_criticality =
        policy::criticality(c, &at(p, &[key("max_criticality")]), raw.max_criticality.take())
            .unwrap_or(spillway_core::Criticality::CriticalPlus);
    if criticality > max_criticality {
        c.error(&at(p, &[key("criticality")]), "the default is above `max_criticality`");
    }
    let criticality_by_header = raw.criticality_by_header.take().and_then(|by| {
        let bp = at(p, &[key("criticality_by_header")]);
        let header = by.header.to_ascii_lowercase();
        if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
            c.error(&at(&bp, &[key("header")]), format!("`{}` is not a header name", by.header));
            return None;
        }
        let mut classes = Vec::new();
        for (value, class) in by.classes {
            let cp = at(&bp, &[key("classes"), key(&value)]);
            classes.push((value, policy::criticality(c, &cp, Some(class))?));
        }
        if classes.is_empty() {
            c.error(&at(&bp, &[key("classes")]), "maps no value to a class");
            return None;
        }
        Some(policy::CriticalityByHeader { header, classes })
    });
    let (limits, global_limits) = raw
        .limits
        .take()
        .map(|l| policy::limits(c, &at(p, &[key("limits")]), l))
        .unwrap_or_default();
    let hot_keys =
        raw.hot_keys.take().and_then(|h| policy::hot_keys(c, &at(p, &[key("hot_keys")]), h));
    for (i, l) in limits.iter().enumerate() {
        if l.hot_only && hot_keys.as_ref().is_none_or(|h| h.key != l.key) {
            c.error(
                &at(p, &[key("limits"), Seg::Index(i), key("hot_only")]),
                format!(
                    "`hot_only` applies the limit to the route's hot keys: it needs `hot_keys: {{ \
                     key: {} }}` on the route (the same key)",
                    l.key.text
                ),
            );
        }
    }
    let bbr = policy::overload(c, &at(p, &[key("overload")]), raw.overload.take());
    let deadline = raw.deadline.take().and_then(|d| {
        let dp = at(p, &[key("deadline")]);
        let fallback = route_timeout.unwrap_or(DEFAULT_REQUEST);
        // Left out, each follows the other (and the route timeout): `max` alone lowers the
        // default to it, `default` alone raises the cap to it.
        let written_max = d.max.map(|m| m.0);
        let default = positive(
            c,
            &at(&dp, &[key("default")]),
            d.default,
            written_max.map_or(fallback, |m| fallback.min(m)),
        );
        let max = positive(c, &at(&dp, &[key("max")]), d.max, fallback.max(default));
        let min_remaining = d.min_remaining.map_or(Duration::ZERO, |m| m.0);
        if default > max {
            c.error(&at(&dp, &[key("default")]), "longer than `max`");
            return None;
        }
        if min_remaining >= default {
            c.error(
                &at(&dp, &[key("min_remaining")]),
                format!(
                    "must be shorter than the default budget ({}): every request would fail fast",
                    super::duration::format_duration(default)
                ),
            );
            return None;
        }
        Some(DeadlineSettings {
            default,
            max,
            min_remaining,
            ignore_incoming: d.ignore_incoming.unwrap_or(false),
        })
    });
    let budget = raw.budget.take().and_then(|b| policy::budget(c, &at(p, &[key("budget")]), b));
    let bulkhead =
        raw.bulkhead.take().and_then(|b| policy::bulkhead(c, &at(p, &[key("bulkhead")]), b));
    let slow = raw.slow.take().and_then(|s| policy::slow(c, &at(p, &[key("slow")]), s));
    let fault = raw.fault.take().and_then(|f| policy::fault(c, &at(p, &[key("fault")]), f));
    let fallback =
        raw.fallback.take().and_then(|f| policy::fallback(c, &at(p, &[key("fallback")]), f));
    let mut strategy = super::retry::strategy(c, &at(p, &[key("strategy")]), raw.strategy.take());
    let written_hedge = raw.hedge.is_some();
    let mut hedge =
        raw.hedge.take().and_then(|h| super::retry::hedge(c, &at(p, &[key("hedge")]), h));
    match strategy {
        // `hedge:` alone means forking.
        None if written_hedge => strategy = Some(Strategy::Forking),
        Some(Strategy::Forking) if !written_hedge => {
            hedge = super::retry::hedge(c, &at(p, &[key("strategy")]), Default::default());
        }
        Some(other) if written_hedge && other != Strategy::Forking => {
            c.error(
                &at(p, &[key("hedge")]),
                "`hedge:` is used by `strategy: forking`: remove it or change the strategy",
            );
            hedge = None;
        }
        _ => {}
    }
    let written_failback = raw.failback.is_some();
    let mut failback = raw
        .failback
        .take()
        .and_then(|f| super::retry::failback(c, &at(p, &[key("failback")]), f, base));
    match strategy {
        // `failback:` alone means the failback strategy.
        None if written_failback => strategy = Some(Strategy::Failback),
        Some(Strategy::Failback) if !written_failback => {
            c.error(
                &at(p, &[key("strategy")]),
                "`strategy: failback` needs `failback: { dir: ... }`: where queued requests are kept",
            );
        }
        Some(other) if written_failback && other != Strategy::Failback => {
            c.error(
                &at(p, &[key("failback")]),
                "`failback:` is used by `strategy: failback`: remove it or change the strategy",
            );
            failback = None;
        }
        _ => {}
    }
    let written_mirror = raw.mirror.is_some();
    let mut mirror =
        raw.mirror.take().and_then(|m| super::retry::mirror(c, &at(p, &[key("mirror")]), m));
    match strategy {
        // `mirror:` alone means failsafe.
        None if written_mirror => strategy = Some(Strategy::Failsafe),
        Some(Strategy::Failsafe) if !written_mirror => {
            c.error(
                &at(p, &[key("strategy")]),
                "`strategy: failsafe` needs `mirror: { cluster: ... }`: the shadow cluster",
            );
        }
        Some(other) if written_mirror && other != Strategy::Failsafe => {
            c.error(
                &at(p, &[key("mirror")]),
                "`mirror:` is used by `strategy: failsafe`: remove it or change the strategy",
            );
            mirror = None;
        }
        _ => {}
    }
    let written_retries = raw.retries.is_some();
    if strategy == Some(Strategy::Broadcast) && written_retries {
        c.error(
            &at(p, &[key("retries")]),
            "`strategy: broadcast` sends the request to every endpoint once: remove `retries:`",
        );
    }
    if strategy == Some(Strategy::Failsafe) && written_retries {
        c.error(
            &at(p, &[key("retries")]),
            "`strategy: failsafe` answers with the cluster's first answer (its mirror is a copy): \
             remove `retries:`",
        );
    }
    if strategy == Some(Strategy::Failback) && written_retries {
        c.error(
            &at(p, &[key("retries")]),
            "`strategy: failback` queues a failed request after one try and retries it in the \
             background (`failback.backoff`): remove `retries:`",
        );
    }
    let mut retries =
        raw.retries.take().and_then(|r| super::retry::retries(c, &at(p, &[key("retries")]), r));
    match strategy {
        Some(Strategy::Failfast) if written_retries => {
            c.error(
                &at(p, &[key("retries")]),
                "`strategy: failfast` never retries: remove `retries:` or use `strategy: failover`",
            );
            retries = None;
        }
        // `failover` or `forking` alone retries with the defaults.
        Some(Strategy::Failover | Strategy::Forking) if !written_retries => {
            retries = super::retry::retries(
                c,
                &at(p, &[key("strategy")]),
                super::raw::RawRetries::default(),
            );
        }
        _ => {}
    }
    RoutePolicyConfig {
        level,
        criticality,
        max_criticality,
        criticality_by_header,
        limits,
        bbr,
        deadline,
        budget,
        bulkhead,
        slow,
        fault,
        fallback,
        strategy: strategy.unwrap_or(if retries.is_some() {
            Strategy::Failover
        } else {
            Strategy::Failfast
        }),
        retries: retries.filter(|_| {
            !matches!(strategy, Some(Strategy::Failback | Strategy::Failsafe | Strategy::Broadcast))
        }),
        hedge,
        failback,
        mirror,
        stale_on_error: raw
            .stale_on_error
            .take()
            .and_then(|s| super::retry::stale_on_error(c, &at(p, &[key("stale_on_error")]), s)),
        global_limits,
        cache: raw
            .cache
            .take()
            .and_then(|r| policy::cache(c, &at(p, &[key("cache")]), r, hot_keys.is_some())),
        hot_keys,
    }
}

fn validate_match(c: &mut Checker<'_>, p: &[Seg], m: RawMatch) -> MatchConfig {
    let host = m.host.map(|h| {
        let h = h.to_ascii_lowercase();
        match h.strip_prefix('*') {
            Some(suffix) if suffix.starts_with('.') && suffix.len() > 1 => {
                HostMatch::Suffix(suffix.to_string())
            }
            Some(_) => {
                c.error(&at(p, &[key("host")]), "a wildcard host is written `*.example.com`");
                HostMatch::Exact(h)
            }
            None => HostMatch::Exact(h),
        }
    });
    let given = [m.path.is_some(), m.path_prefix.is_some(), m.path_regex.is_some()];
    if given.iter().filter(|g| **g).count() > 1 {
        c.error(p, "give at most one of `path`, `path_prefix`, `path_regex`");
    }
    let path = if let Some(path) = m.path {
        if !path.starts_with('/') {
            c.error(&at(p, &[key("path")]), "must start with `/`");
        }
        Some(PathMatch::Exact(path))
    } else if let Some(prefix) = m.path_prefix {
        if !prefix.starts_with('/') {
            c.error(&at(p, &[key("path_prefix")]), "must start with `/`");
        }
        Some(PathMatch::Prefix(prefix))
    } else if let Some(re) = m.path_regex {
        match regex::Regex::new(&format!("^(?:{re})$")) {
            Ok(r) => Some(PathMatch::Regex(r)),
            Err(e) => {
                c.error(&at(p, &[key("path_regex")]), format!("invalid regex: {e}"));
                None
            }
        }
    } else {
        None
    };
    let mut methods = Vec::new();
    for method in m.methods.unwrap_or_default() {
        let upper = method.to_ascii_uppercase();
        if http::Method::from_bytes(upper.as_bytes()).is_err() {
            c.error(&at(p, &[key("methods")]), format!("`{method}` is not an HTTP method"));
        }
        methods.push(upper);
    }
    let mut headers = Vec::new();
    for (j, h) in m.headers.unwrap_or_default().into_iter().enumerate() {
        let hp = at(p, &[key("headers"), Seg::Index(j)]);
        if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
            c.error(&at(&hp, &[key("name")]), format!("`{}` is not a header name", h.name));
        }
        let kind = match (h.value, h.regex, h.present) {
            (Some(v), None, None) => HeaderMatchKind::Exact(v),
            (None, Some(re), None) => match regex::Regex::new(&format!("^(?:{re})$")) {
                Ok(r) => HeaderMatchKind::Regex(r),
                Err(e) => {
                    c.error(&at(&hp, &[key("regex")]), format!("invalid regex: {e}"));
                    continue;
                }
            },
            (None, None, Some(present)) => HeaderMatchKind::Present(present),
            (None, None, None) => HeaderMatchKind::Present(true),
            _ => {
                c.error(&hp, "give one of `value`, `regex`, `present`");
                continue;
            }
        };
        headers.push(HeaderMatch { name: h.name.to_ascii_lowercase(), kind });
    }
    MatchConfig { host, path, methods, headers }
}
