//! The gateway's configuration: loading a YAML file, expanding `${VAR}` in its values, validating every
//! value, and reporting each problem with the file, line, key and reason.
//!
//! Validation happens once, when a [`Config`] is built: the rest of the gateway only ever sees
//! values that are known to be good (parsed addresses, compiled regexes, durations). The same
//! code serves `spillway check`, start-up and hot reload, so a config that `check` accepts is
//! one that `run` accepts.

pub mod duration;
pub mod edge;
mod env;
mod inspect;
pub mod locate;
pub mod policy;
mod raw;
pub mod record;
pub mod retry;
pub mod upstream_tls;
mod validate;

use serde::Serialize;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use policy::{
    BbrSettings, BreakerSettings, BudgetSettings, BulkheadSettings, CacheSettings,
    ConcurrencySettings, DeadlineSettings, FallbackSettings, FaultSettings, GlobalLimitConfig,
    GlobalMode, HotKeySettings, IpNet, KeyPart, LimitAlgorithm, LimitConfig, LimitKey, PlanAction,
    PlanConfig, QueueDiscipline, RoutePolicyConfig, SlowSettings,
};
pub use retry::{
    FailbackSettings, HedgeAfter, HedgeSettings, MirrorSettings, RetryBudgetSettings, RetryOn,
    RetrySettings, StaleSettings, Strategy,
};
pub use upstream_tls::UpstreamTlsConfig;
pub use validate::BALANCE_NAMES;

/// One problem found in a config file: where, which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// 1-based line in the file, when it could be found.
    pub line: Option<usize>,
    /// The key path, e.g. `routes[1].cluster`.
    pub key: String,
    /// What is wrong (or risky) and, where possible, what to write instead.
    pub reason: String,
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Io {
        /// The file.
        file: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid config.
    #[error("{}", render_problems(file, problems))]
    Invalid {
        /// The file (or `<inline>` for a config given as text).
        file: String,
        /// Every problem found, in file order.
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The problems (empty for an I/O error).
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Io { .. } => &[],
            ConfigError::Invalid { problems, .. } => problems,
        }
    }
}

/// Renders problems one per line as `file:line: key: reason`.
pub fn render_problems(file: &str, problems: &[Problem]) -> String {
    problems.iter().map(|p| render_problem(file, p)).collect::<Vec<_>>().join("\n")
}

/// Renders one problem as `file:line: key: reason`.
pub fn render_problem(file: &str, p: &Problem) -> String {
    match p.line {
        Some(line) => format!("{file}:{line}: {}: {}", p.key, p.reason),
        None => format!("{file}: {}: {}", p.key, p.reason),
    }
}

/// A validated gateway configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// The file it was loaded from (`<inline>` for text).
    pub source: String,
    /// Number of thread-per-core worker runtimes.
    pub workers: usize,
    /// Downstream listeners.
    pub listeners: Vec<ListenerConfig>,
    /// The admin listener, if configured.
    pub admin: Option<AdminConfig>,
    /// Upstream clusters.
    pub clusters: Vec<ClusterConfig>,
    /// Routes, in file order (first match wins).
    pub routes: Vec<RouteConfig>,
    /// How long a graceful shutdown waits for in-flight requests.
    #[serde(serialize_with = "ser_duration")]
    pub drain_timeout: Duration,
    /// Where access-log JSON lines go, if anywhere.
    pub access_log: Option<AccessLogTarget>,
    /// Proxies whose `X-Forwarded-For` / `Forwarded` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Isolation pools by name (`levels:`), shared by the routes of each level.
    pub levels: Vec<(String, BulkheadSettings)>,
    /// Degradation plans (`plans:`), switched at run time through the admin API.
    pub plans: Vec<PlanConfig>,
    /// Directory for state kept across restarts (`state_dir:`, resolved against the config
    /// file's directory): `plans.json`, the active plans. `None`: plans are forgotten at restart.
    pub state_dir: Option<PathBuf>,
    /// Where global limits keep their shared state (`quota_store:`).
    pub quota_store: QuotaStoreSettings,
    /// Risky settings found while validating (see `spillway check`).
    #[serde(skip)]
    pub warnings: Vec<Problem>,
}

/// HTTP versions a plain listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerProtocol {
    /// HTTP/1.1 only (the fastest path).
    Http1,
    /// HTTP/2 with prior knowledge only.
    H2c,
    /// HTTP/1.1 or HTTP/2 prior knowledge, detected from the first bytes.
    Auto,
}

/// Which server speaks HTTP/2 to clients (h2c and TLS with ALPN `h2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Http2Server {
    /// The lean path (`listen::h2`): one task per connection, no buffers while idle.
    Lean,
    /// hyper's HTTP/2 server (a task per stream): the way back if the lean one misbehaves.
    Hyper,
}

/// Which client speaks HTTP/2 to a cluster's endpoints (`protocol: http2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Http2Client {
    /// The lean client (`upstream::h2_client`): one task per connection, request bodies
    /// pumped in it, no channel per request. The default: fewer instructions than hyper's per
    /// unary gRPC call and per streamed message (`bench/grpc-instructions.sh`).
    Lean,
    /// hyper's HTTP/2 client (a task per connection and per request body): the way back if
    /// the lean one misbehaves.
    Hyper,
}

/// A downstream listener.
#[derive(Debug, Clone, Serialize)]
pub struct ListenerConfig {
    /// Name (used in logs and metrics).
    pub name: String,
    /// Socket address to bind.
    pub address: SocketAddr,
    /// Protocol on a plain listener (ignored with TLS, where ALPN decides).
    pub protocol: ListenerProtocol,
    /// The HTTP/2 server (`http2_server`, default lean).
    pub http2_server: Http2Server,
    /// TLS certificate and key, if the listener terminates TLS.
    pub tls: Option<TlsConfig>,
    /// Longest time a client may take to send the request head (slowloris guard).
    #[serde(serialize_with = "ser_duration")]
    pub header_read_timeout: Duration,
    /// Longest time a downstream connection may stay idle.
    #[serde(serialize_with = "ser_duration")]
    pub idle_timeout: Duration,
    /// Largest request head accepted (431 beyond).
    pub max_header_bytes: usize,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: u64,
    /// Most simultaneous downstream connections on this listener (over all workers).
    pub max_connections: usize,
    /// BBR for every request through this listener (`overload.bbr`).
    pub bbr: Option<BbrSettings>,
    /// Clients let in (`ip:`), before any route is chosen.
    pub ip: Option<edge::IpRules>,
    /// Position in the config's `listeners` (indexes per-listener policy state).
    pub index: usize,
}

/// PEM files for a TLS listener (resolved against the config file's directory).
#[derive(Debug, Clone, Serialize)]
pub struct TlsConfig {
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
    /// Client certificates (mTLS), when the listener asks for them.
    pub client: Option<ClientCertConfig>,
}

/// A TLS listener's client certificates (`client_ca`, `client_auth`, `forward`).
#[derive(Debug, Clone, Serialize)]
pub struct ClientCertConfig {
    /// The CA bundle client certificates must chain to.
    pub ca: PathBuf,
    /// Whether a client without a certificate is refused at the handshake.
    pub required: bool,
    /// The header carrying the certificate's subject upstream (lower case).
    pub forward_subject: Option<String>,
    /// The header carrying its first subject alternative name upstream (lower case).
    pub forward_san: Option<String>,
}

/// The admin listener.
#[derive(Debug, Clone, Serialize)]
pub struct AdminConfig {
    /// Socket address to bind.
    pub address: SocketAddr,
    /// Bearer token required on `/admin/*` when set.
    #[serde(serialize_with = "ser_secret")]
    pub token: Option<String>,
}

/// Access-log destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogTarget {
    /// Standard output.
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

pub use spillway_core::balance::BalanceKind as Balance;

/// Protocol spoken to a cluster's endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive.
    Http1,
    /// HTTP/2 over cleartext (h2c prior knowledge); needed for gRPC.
    Http2,
}

impl UpstreamProtocol {
    /// The config name (`http1`, `http2`).
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamProtocol::Http1 => "http1",
            UpstreamProtocol::Http2 => "http2",
        }
    }
}

/// An upstream cluster.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterConfig {
    /// Name (referenced by routes).
    pub name: String,
    /// Endpoints.
    pub endpoints: Vec<EndpointConfig>,
    /// Balancing algorithm.
    #[serde(serialize_with = "ser_balance")]
    pub balance: Balance,
    /// Header whose value is hashed by `consistent_hash` (default: the client address).
    pub hash_header: Option<String>,
    /// Upstream protocol.
    pub protocol: UpstreamProtocol,
    /// The HTTP/2 client for `protocol: http2` (`http2_client`).
    pub http2_client: Http2Client,
    /// Timeouts.
    pub timeouts: ClusterTimeouts,
    /// Active health checking, if configured.
    pub health_check: Option<HealthCheckConfig>,
    /// Passive outlier ejection.
    pub outlier: OutlierConfig,
    /// Concurrency limit towards the cluster (fixed or learned), if any.
    pub concurrency: Option<ConcurrencySettings>,
    /// Client-side breaker (SRE adaptive throttling), if any.
    pub breaker: Option<BreakerSettings>,
    /// The cluster that takes what this cluster's breaker or concurrency limit sheds.
    pub gutter: Option<String>,
    /// Upstream statuses the breaker counts as failures (`None`: every 5xx and 429);
    /// transport errors and timeouts always count.
    pub breaker_failure_statuses: Option<Vec<u16>>,
    /// Where the endpoints come from besides `endpoints` (which are then the starting set).
    pub discovery: Option<Discovery>,
    /// TLS towards the endpoints (`None`: plain TCP).
    pub tls: Option<UpstreamTlsConfig>,
}

/// `quota_store:`: the shared state of global limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QuotaStoreSettings {
    /// Redis URLs (`redis://host:port`): one server, or a cluster's seed nodes. Empty: an
    /// in-process store (one gateway).
    pub redis: Vec<String>,
    /// Talk the Redis Cluster protocol.
    pub cluster: bool,
    /// The longest a request waits on the store (exact mode).
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// This gateway's id among the fleet (default: host name and process id).
    pub instance: Option<String>,
}

impl Default for QuotaStoreSettings {
    fn default() -> Self {
        QuotaStoreSettings {
            redis: Vec::new(),
            cluster: false,
            timeout: Duration::from_millis(20),
            instance: None,
        }
    }
}

/// A cluster's endpoint source (`discovery:`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Discovery {
    /// A YAML or JSON file listing `{ address, weight, zone }`, watched for changes.
    File(PathBuf),
    /// A DNS name resolved every `refresh` (A and AAAA records), all on `port`.
    Dns {
        /// The name.
        name: String,
        /// The port of every address.
        port: u16,
        /// How often it is resolved again.
        #[serde(serialize_with = "ser_duration")]
        refresh: Duration,
    },
    /// The keys under `prefix` in etcd, each a JSON `{address, weight, zone, metadata}`,
    /// listed then watched from the listing's revision.
    Etcd {
        /// etcd client URLs (`http://127.0.0.1:2379`).
        endpoints: Vec<String>,
        /// The key prefix (`/services/users/`).
        prefix: String,
    },
}

/// One endpoint of a cluster.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointConfig {
    /// Socket address.
    pub address: SocketAddr,
    /// Relative weight (≥ 1).
    pub weight: u32,
    /// Zone label, if any.
    pub zone: Option<String>,
}

/// A cluster's timeouts; none is infinite.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ClusterTimeouts {
    /// TCP connect.
    #[serde(serialize_with = "ser_duration")]
    pub connect: Duration,
    /// Whole request, until the response head arrives.
    #[serde(serialize_with = "ser_duration")]
    pub request: Duration,
    /// One attempt (equal to `request` until retries exist).
    #[serde(serialize_with = "ser_duration")]
    pub per_try: Duration,
    /// How long an unused pooled upstream connection is kept.
    #[serde(serialize_with = "ser_duration")]
    pub idle: Duration,
}

/// Active health checking.
#[derive(Debug, Clone, Serialize)]
pub struct HealthCheckConfig {
    /// What a probe asks.
    pub probe: HealthProbe,
    /// Time between probes.
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    /// Probe timeout.
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// Consecutive successes to become healthy.
    pub healthy: u32,
    /// Consecutive failures to become unhealthy.
    pub unhealthy: u32,
}

/// What a health probe asks an endpoint, in the cluster's protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthProbe {
    /// `GET path`: healthy on a 2xx.
    Http {
        /// The path.
        path: String,
    },
    /// The gRPC health checking protocol (`grpc.health.v1.Health/Check`): healthy when the
    /// call succeeds and answers SERVING for `service` (empty: the server as a whole).
    Grpc {
        /// The service asked about.
        service: String,
    },
}

/// Passive outlier ejection.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct OutlierConfig {
    /// Consecutive failures (5xx, connect errors, timeouts) that eject an endpoint; 0 disables.
    pub consecutive_failures: u32,
    /// First ejection time; each further ejection lasts one more multiple of it.
    #[serde(serialize_with = "ser_duration")]
    pub base_ejection: Duration,
    /// Cap on the ejection time.
    #[serde(serialize_with = "ser_duration")]
    pub max_ejection: Duration,
    /// At most this share of a cluster's endpoints is ejected at once.
    pub max_ejected_percent: u32,
    /// Panic threshold (percent): when fewer of the endpoints than this are available
    /// (healthy and not ejected), requests are balanced over all of them, as Envoy does — a
    /// cluster whose endpoints are merely slow or flapping keeps serving. 0 disables.
    pub panic_threshold: u32,
}

/// How a route matches a host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HostMatch {
    /// Exactly this host (lower case, no port).
    Exact(String),
    /// Any host ending with this suffix (from `*.example.com`, stored as `.example.com`).
    Suffix(String),
}

/// How a route matches a path.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathMatch {
    /// Exactly this path.
    Exact(String),
    /// Paths starting with this prefix.
    Prefix(String),
    /// Paths matching this regex (anchored at both ends).
    Regex(#[serde(serialize_with = "ser_regex")] regex::Regex),
}

/// How a route matches one header.
#[derive(Debug, Clone, Serialize)]
pub struct HeaderMatch {
    /// Header name (lower case).
    pub name: String,
    /// What the value must be.
    pub kind: HeaderMatchKind,
}

/// The condition on a header's value.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderMatchKind {
    /// Exactly this value.
    Exact(String),
    /// A value matching this regex (anchored).
    Regex(#[serde(serialize_with = "ser_regex")] regex::Regex),
    /// Present (`true`) or absent (`false`).
    Present(bool),
}

/// A route's match conditions; all given conditions must hold.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MatchConfig {
    /// Host condition.
    pub host: Option<HostMatch>,
    /// Path condition.
    pub path: Option<PathMatch>,
    /// Allowed methods (empty = any).
    pub methods: Vec<String>,
    /// Header conditions.
    pub headers: Vec<HeaderMatch>,
}

/// What a route does with a matched request.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteAction {
    /// Proxy to a cluster.
    Cluster {
        /// Cluster name.
        name: String,
        /// Replace the matched `path_prefix` with this.
        rewrite_prefix: Option<String>,
        /// Replace the `Host` header with this (default: pass the client's through).
        rewrite_host: Option<String>,
        /// Total request timeout (overrides the cluster's `timeouts.request`).
        #[serde(serialize_with = "ser_opt_duration")]
        timeout: Option<Duration>,
    },
    /// Answer directly.
    Direct {
        /// Status code.
        status: u16,
        /// Body.
        body: String,
        /// Extra response headers.
        headers: Vec<(String, String)>,
    },
}

/// A route.
#[derive(Debug, Clone, Serialize)]
pub struct RouteConfig {
    /// Name (used in metrics and logs).
    pub name: String,
    /// Match conditions.
    #[serde(rename = "match")]
    pub matcher: MatchConfig,
    /// Action.
    pub action: RouteAction,
    /// Traffic recording (`record:`), if configured.
    pub record: Option<spillway_record::RecordConfig>,
    /// Admission policy (limits, overload, criticality, deadline, budget, bulkheads).
    pub policy: RoutePolicyConfig,
    /// Edge checks before admission (IP lists, CORS, request limits).
    pub edge: edge::RouteEdge,
}

impl Config {
    /// Reads, expands, parses and validates the config file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Io { file: file.clone(), source })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Config::parse(&text, &file, &base)
    }

    /// Parses and validates config text; `file` names it in errors and relative paths (TLS
    /// files, access log) resolve against `base`.
    pub fn parse(text: &str, file: &str, base: &Path) -> Result<Config, ConfigError> {
        let invalid = |problems| ConfigError::Invalid { file: file.to_string(), problems };
        // Parse first, then expand `${VAR}` inside string values, so that an environment value
        // is always the literal string it holds (never YAML `null`, a comment or an alias).
        let mut doc: yaml_serde::Value = yaml_serde::from_str(text).map_err(|e| {
            let mut problem = validate::problem_from_yaml(&e);
            let line = problem.line.and_then(|l| text.lines().nth(l.saturating_sub(1)));
            if line.is_some_and(|l| l.contains("${")) {
                problem.reason.push_str(
                    "; inside `{ … }` or `[ … ]`, quote a value holding a variable: \"${NAME}\"",
                );
            }
            invalid(vec![problem])
        })?;
        if doc.is_null() {
            // An empty file is an empty config (as when deserializing the text directly).
            doc = yaml_serde::Value::Mapping(yaml_serde::Mapping::new());
        }
        env::expand_value(&mut doc, text, &|name| std::env::var(name).ok()).map_err(invalid)?;
        let raw: raw::RawConfig = serde_path_to_error::deserialize(doc)
            .map_err(|e| invalid(vec![validate::problem_from_value(&e, text)]))?;
        // Lines come from the original text: they are found by key path, which expansion
        // does not change.
        let mut config = validate::validate(raw, text, base).map_err(invalid)?;
        config.source = file.to_string();
        config.warnings = inspect::inspect(&config, text);
        Ok(config)
    }

    /// Looks up a cluster by name.
    pub fn cluster(&self, name: &str) -> Option<&ClusterConfig> {
        self.clusters.iter().find(|c| c.name == name)
    }
}

/// A duration as the config writes it (`1.5s`), for `serialize_with` in every config module.
pub(crate) fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&duration::format_duration(*d))
}

/// [`ser_duration`] of an optional duration.
pub(crate) fn ser_opt_duration<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&duration::format_duration(*d)),
        None => s.serialize_none(),
    }
}

fn ser_balance<S: serde::Serializer>(b: &Balance, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(b.as_str())
}

fn ser_regex<S: serde::Serializer>(r: &regex::Regex, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(r.as_str())
}

fn ser_secret<S: serde::Serializer>(t: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(_) => s.serialize_str("<redacted>"),
        None => s.serialize_none(),
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.key, self.reason),
            None => write!(f, "{}: {}", self.key, self.reason),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
