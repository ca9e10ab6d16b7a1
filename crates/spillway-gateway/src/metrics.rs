//! Prometheus metrics: per-worker counters, merged only when `/metrics` is scraped.
//!
//! Each route owns one cache-line-aligned shard per worker, written only by that worker
//! (relaxed atomics, no contention); a scrape sums the shards. Route statistics are carried
//! across reloads by route name, so counters do not reset when the config changes.

use crate::upstream::cluster::{ClusterState, EndpointState};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the request-duration histogram buckets.
pub const BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

const CODES: usize = 500; // status 100..=599

/// One worker's counters for one route.
#[repr(align(64))]
#[derive(Debug)]
struct Shard {
    codes: Box<[AtomicU64]>,
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_us: AtomicU64,
}

impl Shard {
    fn new() -> Shard {
        Shard {
            codes: (0..CODES).map(|_| AtomicU64::new(0)).collect(),
            buckets: Default::default(),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// Counters and latency histogram of one route, sharded per worker.
#[derive(Debug)]
pub struct RouteStats {
    /// Route name (label).
    pub route: String,
    /// Cluster name (label; empty for direct responses).
    pub cluster: String,
    shards: Box<[Shard]>,
}

impl RouteStats {
    /// Stats for `route` with one shard per worker.
    pub fn new(route: &str, cluster: &str, workers: usize) -> RouteStats {
        RouteStats {
            route: route.to_string(),
            cluster: cluster.to_string(),
            shards: (0..workers.max(1)).map(|_| Shard::new()).collect(),
        }
    }

    /// Number of worker shards.
    pub fn workers(&self) -> usize {
        self.shards.len()
    }

    /// Records one request answered with `status` after `elapsed`, on worker `worker`.
    #[inline]
    pub fn record(&self, worker: usize, status: u16, elapsed: Duration) {
        let shard = &self.shards[worker % self.shards.len()];
        let code = (status as usize).clamp(100, 599) - 100;
        shard.codes[code].fetch_add(1, Relaxed);
        let secs = elapsed.as_secs_f64();
        let bucket = BUCKETS.iter().position(|b| secs <= *b).unwrap_or(BUCKETS.len());
        shard.buckets[bucket].fetch_add(1, Relaxed);
        shard.sum_us.fetch_add(elapsed.as_micros() as u64, Relaxed);
    }

    /// Requests answered with `status`, over all workers.
    pub fn count(&self, status: u16) -> u64 {
        let code = (status as usize).clamp(100, 599) - 100;
        self.shards.iter().map(|s| s.codes[code].load(Relaxed)).sum()
    }
}

/// Downstream connection counters of one listener.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections open now.
    pub active: AtomicU64,
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Connections refused because `max_connections` was reached.
    pub refused: AtomicU64,
    /// Open connections that are dormant now (idle lean HTTP/1.1 connections held as bare
    /// sockets; counted in `active` too).
    pub dormant: AtomicU64,
}

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
            let n: u64 = r.shards.iter().map(|s| s.codes[code].load(Relaxed)).sum();
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
            cumulative += r.shards.iter().map(|s| s.buckets[i].load(Relaxed)).sum::<u64>();
            let _ = writeln!(
                out,
                "spillway_request_duration_seconds_bucket{{{labels},le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += r.shards.iter().map(|s| s.buckets[BUCKETS.len()].load(Relaxed)).sum::<u64>();
        let _ = writeln!(
            out,
            "spillway_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}"
        );
        let sum_us: u64 = r.shards.iter().map(|s| s.sum_us.load(Relaxed)).sum();
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
