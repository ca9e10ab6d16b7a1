//! Prometheus metrics: per-worker counters, merged only when `/metrics` is scraped.
//!
//! Each route owns one cache-line-aligned shard per worker (`route::stats`), written only by
//! that worker (relaxed atomics, no contention); a scrape sums the shards. Route statistics are
//! carried across reloads by route name, so counters do not reset when the config changes.

use crate::route::stats::{RouteStats, BUCKETS};
use crate::state::ListenerStats;
use crate::upstream::cluster::{ClusterState, EndpointState};
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

/// Status codes counted per route (100..=599).
const CODES: usize = 500;

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Writes one metric family with a sample per endpoint, labelled by cluster and endpoint.
fn endpoint_family(
    out: &mut String,
    clusters: &[std::sync::Arc<ClusterState>],
    name: &str,
    kind: &str,
    help: &str,
    value: impl Fn(&EndpointState) -> u64,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for c in clusters {
        let cluster = escape(&c.config.name);
        for e in &c.endpoints {
            let _ = writeln!(
                out,
                "{name}{{cluster=\"{cluster}\",endpoint=\"{}\"}} {}",
                e.address,
                value(e)
            );
        }
    }
}

/// Writes one metric family with a sample per listener, labelled by listener name.
fn listener_family(
    out: &mut String,
    listeners: &[(String, &ListenerStats)],
    name: &str,
    kind: &str,
    help: &str,
    value: impl Fn(&ListenerStats) -> u64,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (listener, stats) in listeners {
        let _ = writeln!(out, "{name}{{listener=\"{}\"}} {}", escape(listener), value(stats));
    }
}

/// Renders everything in the Prometheus text format (version 0.0.4).
pub fn render<'a>(
    routes: impl Iterator<Item = &'a RouteStats> + Clone,
    clusters: &[std::sync::Arc<ClusterState>],
    listeners: &[(String, &ListenerStats)],
    reloads: (u64, u64),
    now: spillway_core::Instant,
) -> String {
    let mut out = String::with_capacity(4096);
    out.push_str("# HELP spillway_requests_total Requests answered by the gateway, by route, cluster and status code.\n");
    out.push_str("# TYPE spillway_requests_total counter\n");
    for r in routes.clone() {
        for code in 0..CODES {
            let n: u64 = r.count(code as u16 + 100);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "spillway_requests_total{{route=\"{}\",cluster=\"{}\",code=\"{}\"}} {n}",
                    escape(&r.route),
                    escape(&r.cluster),
                    code + 100
                );
            }
        }
    }
    out.push_str("# HELP spillway_request_duration_seconds Time from request head to response head, by route.\n");
    out.push_str("# TYPE spillway_request_duration_seconds histogram\n");
    for r in routes {
        let labels = format!("route=\"{}\",cluster=\"{}\"", escape(&r.route), escape(&r.cluster));
        let mut cumulative = 0u64;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += r.bucket_count(i);
            let _ = writeln!(
                out,
                "spillway_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += r.bucket_count(BUCKETS.len());
        let _ = writeln!(
            out,
            "spillway_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}"
        );
        let sum_us: u64 = r.sum_micros();
        let _ = writeln!(
            out,
            "spillway_request_duration_seconds_sum{{{labels}}} {}",
            sum_us as f64 / 1e6
        );
        let _ = writeln!(out, "spillway_request_duration_seconds_count{{{labels}}} {cumulative}");
    }
    out.push_str("# HELP spillway_upstream_requests_total Upstream requests by cluster, endpoint and outcome.\n");
    out.push_str("# TYPE spillway_upstream_requests_total counter\n");
    for c in clusters {
        for e in &c.endpoints {
            for (i, outcome) in ["success", "server_error", "failure"].iter().enumerate() {
                let _ = writeln!(
                    out,
                    "spillway_upstream_requests_total{{cluster=\"{}\",endpoint=\"{}\",outcome=\"{outcome}\"}} {}",
                    escape(&c.config.name),
                    e.address,
                    e.outcomes[i].load(Relaxed)
                );
            }
        }
    }
    endpoint_family(
        &mut out,
        clusters,
        "spillway_upstream_healthy",
        "gauge",
        "Whether an endpoint may receive requests (healthy and not ejected).",
        |e| u64::from(e.available(now)),
    );
    endpoint_family(
        &mut out,
        clusters,
        "spillway_upstream_in_flight",
        "gauge",
        "Upstream requests in flight.",
        |e| e.in_flight.load(Relaxed),
    );
    endpoint_family(
        &mut out,
        clusters,
        "spillway_upstream_ejections_total",
        "counter",
        "Passive outlier ejections.",
        |e| u64::from(e.ejections.load(Relaxed)),
    );
    listener_family(
        &mut out,
        listeners,
        "spillway_downstream_connections",
        "gauge",
        "Downstream connections open now.",
        |l| l.active.load(Relaxed),
    );
    listener_family(
        &mut out,
        listeners,
        "spillway_downstream_connections_dormant",
        "gauge",
        "Open downstream connections idle long enough to be held without a task.",
        |l| l.dormant.load(Relaxed),
    );
    listener_family(
        &mut out,
        listeners,
        "spillway_downstream_connections_accepted_total",
        "counter",
        "Downstream connections accepted.",
        |l| l.accepted.load(Relaxed),
    );
    listener_family(
        &mut out,
        listeners,
        "spillway_downstream_connections_refused_total",
        "counter",
        "Downstream connections closed at once because max_connections was reached.",
        |l| l.refused.load(Relaxed),
    );
    out.push_str("# HELP spillway_config_reloads_total Config reloads by result.\n");
    out.push_str("# TYPE spillway_config_reloads_total counter\n");
    let _ = writeln!(out, "spillway_config_reloads_total{{result=\"success\"}} {}", reloads.0);
    let _ = writeln!(out, "spillway_config_reloads_total{{result=\"failure\"}} {}", reloads.1);
    out
}
