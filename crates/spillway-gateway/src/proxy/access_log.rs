//! The JSON access log: one line per request, written by both request paths.
//!
//! One writer so both paths log the same fields in the same format; the sink is the
//! `access_log` of `state::Shared`.

use std::io::Write as _;
use std::time::Duration;

/// One access-log line's fields.
#[derive(Debug)]
pub struct AccessEntry<'a> {
    /// Client IP.
    pub client: &'a str,
    /// Request method.
    pub method: &'a str,
    /// Request target as received.
    pub uri: &'a str,
    /// Response status; for a gRPC call, the HTTP status it counts as (a refusal's 429, a
    /// trailers-only UNAVAILABLE's 503: `proxy::grpc`), as in the route's counters.
    pub status: u16,
    /// Route name ("" without a route).
    pub route: &'a str,
    /// Cluster name ("" without one).
    pub cluster: &'a str,
    /// The endpoint that served the request.
    pub upstream: Option<std::net::SocketAddr>,
    /// From request start to response head.
    pub duration: Duration,
    /// The request id.
    pub request_id: Option<&'a str>,
    /// Why admission refused the request (`rate_limited`, `overloaded`, …), if it did.
    pub refused: Option<&'a str>,
    /// A gRPC call's `grpc-status` when it is known as the head goes out: the gateway's own
    /// answer, or an upstream's trailers-only one (a status in trailers comes later). Logged
    /// only when known.
    pub grpc_status: Option<u32>,
}

/// Writes one JSON access-log line to `sink`.
pub fn log_access(sink: &std::sync::Mutex<Box<dyn std::io::Write + Send>>, e: &AccessEntry<'_>) {
    let mut line = serde_json::json!({
        "ts_ms": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
        "client": e.client,
        "method": e.method,
        "uri": e.uri,
        "status": e.status,
        "route": e.route,
        "cluster": e.cluster,
        "upstream": e.upstream.map(|a| a.to_string()),
        "duration_ms": e.duration.as_secs_f64() * 1000.0,
        "request_id": e.request_id,
        "refused": e.refused,
    });
    if let (Some(code), Some(fields)) = (e.grpc_status, line.as_object_mut()) {
        fields.insert("grpc_status".into(), code.into());
    }
    if let Ok(mut w) = sink.lock() {
        let _ = writeln!(w, "{line}");
    }
}
