//! Prometheus metrics: per-worker counters, merged only when `/metrics` is scraped.
//!
//! Each route owns one cache-line-aligned shard per worker (`route::stats`), written only by
//! that worker (relaxed atomics, no contention); a scrape sums the shards. Route statistics are
//! carried across reloads by route name, so counters do not reset when the config changes.

use crate::route::stats::{RouteStats, BUCKETS, GRPC_CODES};
use crate::state::ListenerStats;
use crate::upstream::cluster::{ClusterState, EndpointState};
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

/// Status codes counted per route (100..=599).
const CODES: usize = 500;

pub(crate) fn escape(value: &str) -> String {
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
    out.push_str("# HELP spillway_grpc_calls_total gRPC calls by route, cluster and the grpc-status they ended with.\n");
    out.push_str("# TYPE spillway_grpc_calls_total counter\n");
    for r in routes.clone() {
        for code in 0..GRPC_CODES {
            let n = r.grpc_count(code);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "spillway_grpc_calls_total{{route=\"{}\",cluster=\"{}\",grpc_code=\"{code}\"}} {n}",
                    escape(&r.route),
                    escape(&r.cluster),
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

/// Renders the admission metrics: rejections by route, reason and criticality; the CPU usage
/// BBR sees; BBR in-flight and limits; cluster concurrency limits; pool occupancy.
pub fn render_policies(
    policies: &crate::policy::Policies,
    config: &crate::config::Config,
    active_plans: &std::collections::BTreeSet<String>,
    cpu: f64,
    now: spillway_core::Instant,
    out: &mut String,
) {
    out.push_str("# HELP spillway_rejections_total Requests refused by admission, by route, reason and criticality.\n");
    out.push_str("# TYPE spillway_rejections_total counter\n");
    for (i, route) in config.routes.iter().enumerate() {
        if let Some(counts) = policies.rejections(i) {
            counts.each(|reason, class, n| {
                let _ = writeln!(
                    out,
                    "spillway_rejections_total{{route=\"{}\",reason=\"{}\",criticality=\"{}\"}} {n}",
                    escape(&route.name),
                    reason.as_str(),
                    class.as_str()
                );
            });
        }
    }
    out.push_str(
        "# HELP spillway_plan_active Whether a degradation plan is switched on (1) or not (0).\n",
    );
    out.push_str("# TYPE spillway_plan_active gauge\n");
    for plan in &config.plans {
        let on = u8::from(active_plans.contains(&plan.name));
        let _ = writeln!(out, "spillway_plan_active{{plan=\"{}\"}} {on}", escape(&plan.name));
    }
    out.push_str("# HELP spillway_degraded_total Requests answered by a degraded response instead of the upstream, by route and kind.\n");
    out.push_str("# TYPE spillway_degraded_total counter\n");
    for (i, route) in config.routes.iter().enumerate() {
        if let Some(counts) = policies.rejections(i) {
            for (kind, n) in [("fallback", &counts.fallbacks), ("stale", &counts.stale)] {
                let n = n.load(std::sync::atomic::Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "spillway_degraded_total{{route=\"{}\",kind=\"{kind}\"}} {n}",
                        escape(&route.name)
                    );
                }
            }
        }
    }
    out.push_str("# HELP spillway_retries_total Retries made on the upstream call, by route and the reason of the failed try.\n");
    out.push_str("# TYPE spillway_retries_total counter\n");
    for (i, route) in config.routes.iter().enumerate() {
        if let Some(retry) = policies.retry(i) {
            retry.counts.each(|reason, n| {
                let _ = writeln!(
                    out,
                    "spillway_retries_total{{route=\"{}\",reason=\"{reason}\"}} {n}",
                    escape(&route.name)
                );
            });
        }
    }
    out.push_str("# HELP spillway_retry_budget_exhausted_total Retries refused because the route's retry budget was spent, by route.\n");
    out.push_str("# TYPE spillway_retry_budget_exhausted_total counter\n");
    for (i, route) in config.routes.iter().enumerate() {
        if let Some(retry) = policies.retry(i) {
            let n = retry.counts.budget_exhausted.load(std::sync::atomic::Ordering::Relaxed);
            let _ = writeln!(
                out,
                "spillway_retry_budget_exhausted_total{{route=\"{}\"}} {n}",
                escape(&route.name)
            );
        }
    }
    out.push_str("# HELP spillway_hedges_total Hedged tries of forking routes, by route and outcome (won: its answer was used; lost: cancelled when another try answered first).\n");
    out.push_str("# TYPE spillway_hedges_total counter\n");
    for (i, route) in config.routes.iter().enumerate() {
        if let Some(h) = policies.retry(i).and_then(|r| r.hedge.as_ref()) {
            for (outcome, n) in [("won", &h.won), ("lost", &h.lost)] {
                let n = n.load(std::sync::atomic::Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "spillway_hedges_total{{route=\"{}\",outcome=\"{outcome}\"}} {n}",
                    escape(&route.name)
                );
            }
        }
    }
    out.push_str("# HELP spillway_mirror_total Copies of a failsafe route's requests sent to its shadow cluster, by route and outcome (ok, failed, dropped at the in-flight cap).\n");
    out.push_str("# TYPE spillway_mirror_total counter\n");
    for (i, route) in config.routes.iter().enumerate() {
        if let Some(m) = policies.mirror(i) {
            let v = m.view();
            for (outcome, n) in [("ok", v.ok), ("failed", v.failed), ("dropped", v.dropped)] {
                let _ = writeln!(
                    out,
                    "spillway_mirror_total{{route=\"{}\",outcome=\"{outcome}\"}} {n}",
                    escape(&route.name)
                );
            }
        }
    }
    out.push_str("# HELP spillway_gutter_total Requests a cluster's breaker or concurrency limit shed that its gutter cluster took instead, by cluster.\n");
    out.push_str("# TYPE spillway_gutter_total counter\n");
    for (cluster, gutter) in config.clusters.iter().zip(&policies.gutters) {
        if let Some((_, diverted)) = gutter {
            let n = diverted.load(std::sync::atomic::Ordering::Relaxed);
            let _ =
                writeln!(out, "spillway_gutter_total{{cluster=\"{}\"}} {n}", escape(&cluster.name));
        }
    }
    let globals: Vec<_> = policies.routes.iter().flatten().flat_map(|p| p.globals.iter()).collect();
    out.push_str("# HELP spillway_quota_store_up Whether a global limit's quota store answered its last call (1) or not (0).\n");
    out.push_str("# TYPE spillway_quota_store_up gauge\n");
    for g in &globals {
        let up = u8::from(g.store_up());
        let _ =
            writeln!(out, "spillway_quota_store_up{{limit=\"{}\"}} {up}", escape(&g.config.name));
    }
    out.push_str("# HELP spillway_quota_fallback_total Decisions a global limit made by its on_store_failure policy while its store was unreachable.\n");
    out.push_str("# TYPE spillway_quota_fallback_total counter\n");
    for g in &globals {
        let n = g.fallback_total();
        let _ = writeln!(
            out,
            "spillway_quota_fallback_total{{limit=\"{}\"}} {n}",
            escape(&g.config.name)
        );
    }
    out.push_str("# HELP spillway_quota_grant This gateway's share of a lease-mode global limit, requests per second (summed over its keys).\n");
    out.push_str("# TYPE spillway_quota_grant gauge\n");
    for g in globals.iter().filter(|g| !g.is_exact()) {
        let grant: f64 = g.grants().iter().map(|(_, r)| r).sum();
        let _ =
            writeln!(out, "spillway_quota_grant{{limit=\"{}\"}} {grant}", escape(&g.config.name));
    }
    out.push_str("# HELP spillway_cache_total Requests of micro-cached routes, by route and result (hit: a fresh copy; miss: went upstream; coalesced: got another request's upstream answer).\n");
    out.push_str("# TYPE spillway_cache_total counter\n");
    for (i, route) in config.routes.iter().enumerate() {
        if let Some(c) = policies.cache(i) {
            for (result, n) in [("hit", &c.hits), ("miss", &c.misses), ("coalesced", &c.coalesced)]
            {
                let n = n.load(std::sync::atomic::Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "spillway_cache_total{{route=\"{}\",result=\"{result}\"}} {n}",
                    escape(&route.name)
                );
            }
        }
    }
    out.push_str("# HELP spillway_cache_bytes Bytes held by a route's micro-cache.\n");
    out.push_str("# TYPE spillway_cache_bytes gauge\n");
    for (i, route) in config.routes.iter().enumerate() {
        if let Some(c) = policies.cache(i) {
            let _ = writeln!(
                out,
                "spillway_cache_bytes{{route=\"{}\"}} {}",
                escape(&route.name),
                c.bytes()
            );
        }
    }
    out.push_str("# HELP spillway_bbr_cpu CPU usage (0..1) as the BBR limiters see it.\n");
    out.push_str("# TYPE spillway_bbr_cpu gauge\n");
    let _ = writeln!(out, "spillway_bbr_cpu {cpu}");
    out.push_str(
        "# HELP spillway_bbr_in_flight Requests in flight through a BBR limiter, by scope.\n",
    );
    out.push_str("# TYPE spillway_bbr_in_flight gauge\n");
    let mut bbrs: Vec<(String, &crate::policy::Bbr)> = Vec::new();
    for (l, b) in config.listeners.iter().zip(&policies.listeners) {
        if let Some(b) = b {
            bbrs.push((format!("listener:{}", l.name), b));
        }
    }
    for (r, p) in config.routes.iter().zip(&policies.routes) {
        if let Some(b) = p.as_ref().and_then(|p| p.bbr.as_ref()) {
            bbrs.push((format!("route:{}", r.name), b));
        }
    }
    for (scope, b) in &bbrs {
        let v = b.view(now);
        let _ =
            writeln!(out, "spillway_bbr_in_flight{{scope=\"{}\"}} {}", escape(scope), v.in_flight);
    }
    out.push_str("# HELP spillway_bbr_max_in_flight BBR's estimate maxPass x minRT, by scope.\n");
    out.push_str("# TYPE spillway_bbr_max_in_flight gauge\n");
    for (scope, b) in &bbrs {
        let v = b.view(now);
        let _ = writeln!(
            out,
            "spillway_bbr_max_in_flight{{scope=\"{}\"}} {}",
            escape(scope),
            v.max_in_flight
        );
    }
    out.push_str("# HELP spillway_concurrency_limit Concurrency limit towards a cluster (fixed or learned).\n");
    out.push_str("# TYPE spillway_concurrency_limit gauge\n");
    for (c, p) in config.clusters.iter().zip(&policies.clusters) {
        if let Some(p) = p.as_ref().and_then(|p| p.concurrency.as_ref()) {
            let _ = writeln!(
                out,
                "spillway_concurrency_limit{{cluster=\"{}\"}} {}",
                escape(&c.name),
                p.limiter.limit()
            );
        }
    }
    out.push_str("# HELP spillway_concurrency_in_flight Requests in flight under a cluster's concurrency limit.\n");
    out.push_str("# TYPE spillway_concurrency_in_flight gauge\n");
    for (c, p) in config.clusters.iter().zip(&policies.clusters) {
        if let Some(p) = p.as_ref().and_then(|p| p.concurrency.as_ref()) {
            let _ = writeln!(
                out,
                "spillway_concurrency_in_flight{{cluster=\"{}\"}} {}",
                escape(&c.name),
                p.limiter.inflight()
            );
        }
    }
    out.push_str("# HELP spillway_breaker_state A cluster's state-machine breaker: 0 closed, 1 half-open, 2 open.\n");
    out.push_str("# TYPE spillway_breaker_state gauge\n");
    for (c, p) in config.clusters.iter().zip(&policies.clusters) {
        if let Some(b) = p.as_ref().and_then(|p| p.breaker.as_ref()) {
            let gauge = match b.view(now).state {
                Some("closed") => 0,
                Some("half_open") => 1,
                Some("open") => 2,
                _ => continue,
            };
            let _ =
                writeln!(out, "spillway_breaker_state{{cluster=\"{}\"}} {gauge}", escape(&c.name));
        }
    }
    out.push_str("# HELP spillway_breaker_drop_probability A cluster's SRE throttle: the drop probability of a CRITICAL request now.\n");
    out.push_str("# TYPE spillway_breaker_drop_probability gauge\n");
    for (c, p) in config.clusters.iter().zip(&policies.clusters) {
        if let Some(b) = p.as_ref().and_then(|p| p.breaker.as_ref()) {
            let v = b.view(now);
            let _ = writeln!(
                out,
                "spillway_breaker_drop_probability{{cluster=\"{}\"}} {}",
                escape(&c.name),
                v.drop_probability
            );
        }
    }
    out.push_str("# HELP spillway_bulkhead_in_use Slots in use in a pool (level, route bulkhead, slow pool).\n");
    out.push_str("# TYPE spillway_bulkhead_in_use gauge\n");
    let pools: Vec<_> = policies.pools().map(|p| p.view()).collect();
    for p in &pools {
        let _ =
            writeln!(out, "spillway_bulkhead_in_use{{pool=\"{}\"}} {}", escape(&p.name), p.in_use);
    }
    out.push_str("# HELP spillway_bulkhead_queued Requests waiting for a slot in a pool.\n");
    out.push_str("# TYPE spillway_bulkhead_queued gauge\n");
    for p in &pools {
        let _ =
            writeln!(out, "spillway_bulkhead_queued{{pool=\"{}\"}} {}", escape(&p.name), p.queued);
    }
    out.push_str("# HELP spillway_bulkhead_codel_drops_total Waiters CoDel refused in a pool.\n");
    out.push_str("# TYPE spillway_bulkhead_codel_drops_total counter\n");
    for p in &pools {
        let _ = writeln!(
            out,
            "spillway_bulkhead_codel_drops_total{{pool=\"{}\"}} {}",
            escape(&p.name),
            p.codel_drops
        );
    }
}
