//! The frame `spillway top` draws: two consecutive snapshots in, text lines out.
//!
//! Snapshots carry counters, so every rate is the difference between two snapshots over the
//! time between them, and every quantile is read from the difference of the latency
//! histograms (interpolated within a bucket, as Prometheus' `histogram_quantile`). Pure: no
//! terminal, no clock, no I/O — the caller adds the cursor codes.

use super::snapshot::{Endpoint, Snapshot};
use std::collections::BTreeMap;
use std::fmt::Write;

/// The interval assumed when two snapshots carry the same time (the stream's period).
const DEFAULT_INTERVAL_S: f64 = 1.0;

/// What the frame is about and how much of it to show.
#[derive(Debug, Clone)]
pub struct FrameOptions {
    /// The admin address, for the title line.
    pub admin: String,
    /// Most routes listed (the busiest first).
    pub max_routes: usize,
}

/// One route's traffic between two snapshots.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteRates {
    /// Route name.
    pub route: String,
    /// Answers per second.
    pub requests: f64,
    /// 5xx answers per second.
    pub server_errors: f64,
    /// 4xx answers per second.
    pub client_errors: f64,
    /// Admission refusals per second.
    pub rejected: f64,
    /// Median latency, seconds (none without answers).
    pub p50: Option<f64>,
    /// 99th percentile latency, seconds.
    pub p99: Option<f64>,
}

/// Seconds between the two snapshots (the stream's period when their times are equal or go
/// backwards, e.g. across a gateway restart).
pub fn interval_s(prev: &Snapshot, cur: &Snapshot) -> f64 {
    match cur.unix_ms.checked_sub(prev.unix_ms) {
        Some(ms) if ms > 0 => ms as f64 / 1000.0,
        _ => DEFAULT_INTERVAL_S,
    }
}

/// The `q` quantile (0..=1) of a histogram of per-bucket counts (not cumulative) with upper
/// `bounds` and one overflow bucket, interpolated linearly within its bucket (from 0 for the
/// first). A quantile in the overflow bucket is the highest bound. `None` without counts.
pub fn quantile(bounds: &[f64], counts: &[u64], q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 || bounds.is_empty() {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut below = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        if n > 0 && (below + n) as f64 >= rank {
            let Some(&upper) = bounds.get(i) else {
                return bounds.last().copied();
            };
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            let within = (rank - below as f64) / n as f64;
            return Some(lower + (upper - lower) * within);
        }
        below += n;
    }
    bounds.last().copied()
}

/// Every route of `cur` with its rates since `prev`, busiest first (then by name). A route
/// missing from `prev` (added by a reload) counts from zero; a counter that went down (a
/// restarted gateway) counts as no traffic.
pub fn route_rates(prev: &Snapshot, cur: &Snapshot) -> Vec<RouteRates> {
    let seconds = interval_s(prev, cur);
    let before: BTreeMap<&str, _> = prev.routes.iter().map(|r| (r.route.as_str(), r)).collect();
    let rejected_before = rejections_by_route(prev);
    let rejected_now = rejections_by_route(cur);
    let mut rates: Vec<RouteRates> = cur
        .routes
        .iter()
        .map(|r| {
            let p = before.get(r.route.as_str());
            let delta = |now: u64, then: Option<u64>| now.saturating_sub(then.unwrap_or(0));
            let answers = delta(r.answers.total(), p.map(|p| p.answers.total()));
            let server = delta(r.answers.server_error, p.map(|p| p.answers.server_error));
            let client = delta(r.answers.client_error, p.map(|p| p.answers.client_error));
            let rejected = delta(
                rejected_now.get(r.route.as_str()).copied().unwrap_or(0),
                rejected_before.get(r.route.as_str()).copied(),
            );
            let buckets: Vec<u64> = r
                .latency_buckets
                .iter()
                .enumerate()
                .map(|(i, &n)| delta(n, p.and_then(|p| p.latency_buckets.get(i).copied())))
                .collect();
            let bounds = &cur.latency_bucket_bounds_s;
            RouteRates {
                route: r.route.clone(),
                requests: answers as f64 / seconds,
                server_errors: server as f64 / seconds,
                client_errors: client as f64 / seconds,
                rejected: rejected as f64 / seconds,
                p50: quantile(bounds, &buckets, 0.5),
                p99: quantile(bounds, &buckets, 0.99),
            }
        })
        .collect();
    rates.sort_by(|a, b| b.requests.total_cmp(&a.requests).then_with(|| a.route.cmp(&b.route)));
    rates
}

fn rejections_by_route(s: &Snapshot) -> BTreeMap<&str, u64> {
    s.policies
        .routes
        .iter()
        .map(|r| (r.route.as_str(), r.rejections.iter().map(|j| j.count).sum()))
        .collect()
}

/// A latency for a table cell: `850us`, `12.3ms`, `1.20s`, or `-`.
pub fn format_latency(seconds: Option<f64>) -> String {
    match seconds {
        None => "-".to_string(),
        Some(s) if s < 0.001 => format!("{:.0}us", s * 1e6),
        Some(s) if s < 1.0 => format!("{:.1}ms", s * 1e3),
        Some(s) => format!("{s:.2}s"),
    }
}

/// A rate for a table cell: one decimal below 1000, whole numbers above.
pub fn format_rate(per_second: f64) -> String {
    if per_second < 1000.0 {
        format!("{per_second:.1}")
    } else {
        format!("{per_second:.0}")
    }
}

/// The whole frame: a title line, the busiest routes, then clusters, admission, resilience,
/// hot keys, failback and plans (sections without anything configured are left out).
pub fn render(prev: &Snapshot, cur: &Snapshot, options: &FrameOptions) -> Vec<String> {
    let mut lines = Vec::new();
    let seconds = interval_s(prev, cur);
    lines.push(format!(
        "spillway top  {}  generation {}  cpu {:.0}%  over {seconds:.1}s",
        options.admin,
        cur.generation,
        cur.cpu * 100.0
    ));
    lines.push(String::new());
    routes_section(prev, cur, options, &mut lines);
    clusters_section(cur, &mut lines);
    admission_section(prev, cur, &mut lines);
    resilience_section(prev, cur, &mut lines);
    hot_keys_section(cur, &mut lines);
    failback_and_plans_section(cur, &mut lines);
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// `lines` fitted to a terminal of `rows` × `cols`: each line cut at the width (ending in `…`),
/// and when there are too many, the last `keep` lines (a note) kept under as many of the first
/// as fit, with a line saying how many were left out. One row stays free, so that the last
/// line's newline never scrolls the screen.
pub fn fit(mut lines: Vec<String>, rows: usize, cols: usize, keep: usize) -> Vec<String> {
    let room = rows.saturating_sub(1).max(1);
    if lines.len() > room {
        let keep = keep.min(lines.len()).min(room.saturating_sub(1));
        let tail = lines.split_off(lines.len() - keep);
        let shown = room - keep - 1;
        let hidden = lines.len() - shown;
        lines.truncate(shown);
        lines.push(format!("… {hidden} more lines (a taller terminal shows them)"));
        lines.extend(tail);
    }
    for line in &mut lines {
        if line.chars().count() > cols {
            let cut: String = line.chars().take(cols.saturating_sub(1)).collect();
            *line = cut + "…";
        }
    }
    lines
}

fn routes_section(
    prev: &Snapshot,
    cur: &Snapshot,
    options: &FrameOptions,
    lines: &mut Vec<String>,
) {
    let rates = route_rates(prev, cur);
    let shown = &rates[..rates.len().min(options.max_routes)];
    let width = shown.iter().map(|r| r.route.chars().count()).max().unwrap_or(0).clamp(5, 32);
    lines.push(format!(
        "{:<width$}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}",
        "ROUTE", "REQ/S", "ERR/S", "4XX/S", "REJ/S", "P50", "P99"
    ));
    for r in shown {
        lines.push(format!(
            "{:<width$}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}  {:>8}",
            r.route,
            format_rate(r.requests),
            format_rate(r.server_errors),
            format_rate(r.client_errors),
            format_rate(r.rejected),
            format_latency(r.p50),
            format_latency(r.p99),
        ));
    }
    if rates.len() > shown.len() {
        lines.push(format!("… {} more routes (--routes N shows more)", rates.len() - shown.len()));
    }
    lines.push("ERR/S: 5xx answers; REJ/S: refused by admission".to_string());
    lines.push(String::new());
}

fn endpoint_note(e: &Endpoint) -> String {
    match (e.healthy, e.ejected_for_ms) {
        (_, Some(ms)) => format!("{} ejected for {:.0}s", e.address, ms as f64 / 1000.0),
        (false, None) => format!("{} unhealthy", e.address),
        (true, None) => e.address.clone(),
    }
}

fn clusters_section(cur: &Snapshot, lines: &mut Vec<String>) {
    if cur.clusters.is_empty() {
        return;
    }
    let policies: BTreeMap<&str, _> =
        cur.policies.clusters.iter().map(|c| (c.cluster.as_str(), c)).collect();
    let width = cur.clusters.iter().map(|c| c.name.chars().count()).max().unwrap_or(0).min(32);
    lines.push("CLUSTERS".to_string());
    for c in &cur.clusters {
        let available = c.endpoints.iter().filter(|e| e.available()).count();
        let in_flight: u64 = c.endpoints.iter().map(|e| e.in_flight).sum();
        let mut line = format!(
            "  {:<width$}  endpoints {available}/{} up  in flight {in_flight}",
            c.name,
            c.endpoints.len()
        );
        if let Some(p) = policies.get(c.name.as_str()) {
            if let Some(b) = &p.breaker {
                match (b.kind.as_str(), &b.state) {
                    ("sre", _) => {
                        let _ = write!(
                            line,
                            "  breaker sre drop {:.0}% ({}/{} accepted)",
                            b.drop_probability * 100.0,
                            b.accepts,
                            b.requests
                        );
                    }
                    (_, state) => {
                        let state = state.as_deref().unwrap_or("?").replace('_', "-");
                        let state = if state == "closed" { state } else { state.to_uppercase() };
                        let _ = write!(line, "  breaker {state} ({} trips)", b.trips.unwrap_or(0));
                    }
                }
            }
            if let Some(limit) = &p.concurrency {
                let _ = write!(line, "  concurrency {}/{}", limit.in_flight, limit.limit);
            }
        }
        lines.push(line);
        for e in c.endpoints.iter().filter(|e| !e.available()) {
            lines.push(format!("  {:<width$}    {}", "", endpoint_note(e)));
        }
    }
    lines.push(String::new());
}

fn admission_section(prev: &Snapshot, cur: &Snapshot, lines: &mut Vec<String>) {
    let policies = &cur.policies;
    let mut bbrs = Vec::new();
    for l in &policies.listeners {
        if let Some(b) = &l.bbr {
            bbrs.push((format!("listener:{}", l.listener), b));
        }
    }
    for r in &policies.routes {
        if let Some(b) = &r.bbr {
            bbrs.push((format!("route:{}", r.route), b));
        }
    }
    let pools: Vec<_> = policies
        .levels
        .iter()
        .chain(policies.routes.iter().filter_map(|r| r.bulkhead.as_ref()))
        .collect();
    let seconds = interval_s(prev, cur);
    let mut before = BTreeMap::new();
    for r in &prev.policies.routes {
        for j in &r.rejections {
            before.insert((r.route.as_str(), j.reason.as_str(), j.criticality.as_str()), j.count);
        }
    }
    let mut refused = Vec::new();
    for r in &policies.routes {
        for j in &r.rejections {
            let then = before.get(&(r.route.as_str(), j.reason.as_str(), j.criticality.as_str()));
            let n = j.count.saturating_sub(then.copied().unwrap_or(0));
            if n > 0 {
                refused.push((n as f64 / seconds, &r.route, &j.reason, &j.criticality));
            }
        }
    }
    refused.sort_by(|a, b| b.0.total_cmp(&a.0));
    let limited: Vec<_> = policies.routes.iter().filter(|r| !r.limits.is_empty()).collect();
    if bbrs.is_empty() && pools.is_empty() && refused.is_empty() && limited.is_empty() {
        return;
    }
    lines.push("ADMISSION".to_string());
    for (scope, b) in &bbrs {
        let shedding = if b.dropping { "  SHEDDING" } else { "" };
        lines.push(format!(
            "  bbr {scope}  in flight {} / max {}{shedding}",
            b.in_flight, b.max_in_flight
        ));
    }
    for p in &pools {
        lines.push(format!(
            "  pool {}  in use {}/{}  queued {}/{}  codel drops {}",
            p.name, p.in_use, p.max_concurrent, p.queued, p.queue, p.codel_drops
        ));
    }
    for r in &limited {
        let limits: Vec<String> = r
            .limits
            .iter()
            .map(|l| format!("{} {} ({} keys)", l.name, l.rate.join("+"), l.keys))
            .collect();
        lines.push(format!("  limits {}  {}", r.route, limits.join(", ")));
    }
    for (rate, route, reason, class) in &refused {
        lines.push(format!("  refused {route} {reason} {class}  {}/s", format_rate(*rate)));
    }
    lines.push(String::new());
}

fn resilience_section(prev: &Snapshot, cur: &Snapshot, lines: &mut Vec<String>) {
    let seconds = interval_s(prev, cur);
    let before: BTreeMap<&str, _> = prev
        .policies
        .routes
        .iter()
        .filter_map(|r| Some((r.route.as_str(), &r.retries.as_ref()?.state)))
        .collect();
    let mut out = Vec::new();
    for r in &cur.policies.routes {
        let Some(retries) = &r.retries else { continue };
        let s = &retries.state;
        let p = before.get(r.route.as_str());
        let rate = |now: u64, then: Option<u64>| {
            format_rate(now.saturating_sub(then.unwrap_or(0)) as f64 / seconds)
        };
        let mut line = format!(
            "  {}  retries {}/s  budget exhausted {}/s",
            r.route,
            rate(s.retries, p.map(|p| p.retries)),
            rate(s.budget_exhausted, p.map(|p| p.budget_exhausted))
        );
        if let Some(balance) = s.budget_balance {
            let _ = write!(line, "  budget left {balance:.0}");
        }
        if let (Some(won), Some(lost)) = (s.hedges_won, s.hedges_lost) {
            let _ = write!(
                line,
                "  hedges won {}/s lost {}/s",
                rate(won, p.and_then(|p| p.hedges_won)),
                rate(lost, p.and_then(|p| p.hedges_lost))
            );
        }
        out.push(line);
    }
    if !out.is_empty() {
        lines.push("RETRIES".to_string());
        lines.extend(out);
        lines.push(String::new());
    }
}

fn hot_keys_section(cur: &Snapshot, lines: &mut Vec<String>) {
    if cur.hot_keys.is_empty() {
        return;
    }
    lines.push("HOT KEYS".to_string());
    for h in &cur.hot_keys {
        let keys: Vec<String> = h
            .top
            .iter()
            .take(5)
            .map(|k| format!("{} {}/s", k.key, format_rate(k.rate_per_sec)))
            .collect();
        let keys = if keys.is_empty() { "none".to_string() } else { keys.join(", ") };
        lines.push(format!("  {}  {keys}", h.route));
    }
    lines.push(String::new());
}

fn failback_and_plans_section(cur: &Snapshot, lines: &mut Vec<String>) {
    if !cur.failback.is_empty() {
        let queues: Vec<String> =
            cur.failback.iter().map(|q| format!("{} {}", q.route, q.depth)).collect();
        lines.push(format!("FAILBACK DEPTH  {}", queues.join(", ")));
    }
    if !cur.plans.plans.is_empty() {
        let plans: Vec<String> = cur
            .plans
            .plans
            .iter()
            .map(|p| format!("{} {}", p.name, if p.active { "ON" } else { "off" }))
            .collect();
        lines.push(format!("PLANS  {}", plans.join(", ")));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn snapshot(json: &str) -> Snapshot {
        serde_json::from_str(json).unwrap()
    }

    const BOUNDS: &str = "[0.001, 0.01, 0.1, 1.0]";

    fn two_routes(ms: u64, api: [u64; 4], buckets: [u64; 5], search: u64) -> Snapshot {
        snapshot(&format!(
            r#"{{"unix_ms": {ms}, "generation": 3, "cpu": 0.25, "latency_bucket_bounds_s": {BOUNDS},
               "routes": [
                 {{"route": "api", "answers": {{"2xx": {}, "3xx": {}, "4xx": {}, "5xx": {}}},
                   "latency_buckets": {buckets:?}, "latency_sum_us": 0}},
                 {{"route": "search", "answers": {{"2xx": {search}, "3xx": 0, "4xx": 0, "5xx": 0}},
                   "latency_buckets": [{search}, 0, 0, 0, 0]}}],
               "future_field": {{"ignored": true}}}}"#,
            api[0], api[1], api[2], api[3]
        ))
    }

    #[test]
    fn rates_are_counter_differences_over_the_interval_busiest_first() {
        let prev = two_routes(10_000, [100, 0, 10, 5], [50, 50, 15, 0, 0], 0);
        let cur = two_routes(12_000, [300, 0, 30, 25], [50, 250, 35, 0, 0], 10);
        let rates = route_rates(&prev, &cur);
        assert_eq!(rates[0].route, "api");
        assert_eq!(rates[0].requests, 120.0, "240 answers over 2 s");
        assert_eq!(rates[0].server_errors, 10.0);
        assert_eq!(rates[0].client_errors, 10.0);
        assert_eq!(rates[1].route, "search");
        assert_eq!(rates[1].requests, 5.0);
    }

    #[test]
    fn quantiles_come_from_the_histogram_difference() {
        let prev = two_routes(0, [0; 4], [1000, 0, 0, 0, 0], 0);
        // 100 new answers: 90 in (1ms, 10ms], 10 in (10ms, 100ms]; the old 1000 fast ones must
        // not count.
        let cur = two_routes(1000, [100, 0, 0, 0], [1000, 90, 10, 0, 0], 0);
        let rates = route_rates(&prev, &cur);
        let api = rates.iter().find(|r| r.route == "api").unwrap();
        let p50 = api.p50.unwrap();
        assert!((p50 - (0.001 + 0.009 * 50.0 / 90.0)).abs() < 1e-12, "{p50}");
        let p99 = api.p99.unwrap();
        assert!((p99 - (0.01 + 0.09 * 9.0 / 10.0)).abs() < 1e-12, "{p99}");
        assert_eq!(rates.iter().find(|r| r.route == "search").unwrap().p50, None, "no answers");
    }

    #[test]
    fn a_quantile_beyond_the_last_bound_is_the_last_bound() {
        assert_eq!(quantile(&[0.1, 1.0], &[0, 0, 7], 0.5), Some(1.0));
        assert_eq!(quantile(&[0.1, 1.0], &[4, 0, 0], 1.0), Some(0.1));
        assert_eq!(quantile(&[0.1, 1.0], &[0, 0, 0], 0.5), None);
    }

    #[test]
    fn a_restarted_gateway_or_a_new_route_never_gives_negative_rates() {
        let prev = two_routes(5000, [500, 0, 0, 0], [500, 0, 0, 0, 0], 0);
        let cur = two_routes(5000, [3, 0, 0, 0], [3, 0, 0, 0, 0], 0);
        let rates = route_rates(&prev, &cur);
        assert_eq!(rates.iter().find(|r| r.route == "api").unwrap().requests, 0.0);
        let empty = Snapshot { unix_ms: 4000, ..Snapshot::default() };
        let rates = route_rates(&empty, &cur);
        assert_eq!(rates[0].requests, 3.0, "a route new since the last snapshot counts from zero");
    }

    fn full(ms: u64, refused: u64, retries: u64, won: u64) -> Snapshot {
        snapshot(&format!(
            r#"{{"unix_ms": {ms}, "generation": 1, "cpu": 0.5, "latency_bucket_bounds_s": {BOUNDS},
              "routes": [{{"route": "api", "answers": {{"2xx": {ms}, "3xx": 0, "4xx": 0, "5xx": 0}},
                           "latency_buckets": [0, {ms}, 0, 0, 0]}}],
              "policies": {{
                "clusters": [
                  {{"cluster": "app", "breaker": {{"kind": "sre", "state": null, "trips": null,
                    "requests": 40, "accepts": 30, "drop_probability": 0.25}},
                    "concurrency": {{"in_flight": 3, "limit": 20}}}},
                  {{"cluster": "db", "breaker": {{"kind": "state_machine", "state": "half_open",
                    "trips": 2, "requests": 5, "accepts": 1, "drop_probability": 1.0}},
                    "concurrency": null}}],
                "levels": [{{"name": "level:L0", "max_concurrent": 100, "in_use": 7, "queue": 10,
                             "queued": 2, "codel_drops": 0}}],
                "listeners": [{{"listener": "public", "bbr": {{"cpu": 0.5, "dropping": true,
                                 "in_flight": 12, "max_in_flight": 10}}}}],
                "routes": [{{"route": "api", "bbr": null, "bulkhead": null,
                  "limits": [{{"name": "per-ip", "algorithm": "token_bucket", "key": "client_ip",
                    "keys": 3, "quota": 100, "rate": ["100/s"]}},
                    {{"name": "client_ip", "algorithm": "sliding_window", "key": "client_ip",
                    "keys": 2, "quota": 10, "rate": ["10/1m", "100/1h"]}}],
                  "rejections": [{{"reason": "rate_limited", "criticality": "SHEDDABLE", "count": {refused}}}],
                  "retries": {{"settings": {{}}, "state": {{"retries": {retries}, "budget_exhausted": 0,
                    "budget_balance": 12.0, "hedges_won": {won}, "hedges_lost": 0}}}}}}]}},
              "clusters": [
                {{"name": "app", "endpoints": [
                  {{"address": "10.0.0.1:80", "healthy": true, "ejected_for_ms": null, "in_flight": 2}},
                  {{"address": "10.0.0.2:80", "healthy": true, "ejected_for_ms": 25000, "in_flight": 1}}]}},
                {{"name": "db", "endpoints": [
                  {{"address": "10.0.1.1:5432", "healthy": false, "ejected_for_ms": null, "in_flight": 0}}]}}],
              "hot_keys": [{{"route": "api", "top": [{{"key": "/users/7", "rate_per_sec": 42.0, "error": 0.0}}]}}],
              "failback": [{{"route": "pay", "depth": 17}}],
              "plans": {{"plans": [{{"name": "peak", "active": true, "actions": []}},
                                   {{"name": "calm", "active": false, "actions": []}}]}}}}"#
        ))
    }

    #[test]
    fn the_frame_shows_every_section_of_a_busy_gateway() {
        let prev = full(1000, 10, 4, 1);
        let cur = full(2000, 30, 9, 3);
        let options = FrameOptions { admin: "127.0.0.1:9901".into(), max_routes: 10 };
        let lines = render(&prev, &cur, &options);
        let text = lines.join("\n");
        assert!(
            lines[0].starts_with("spillway top  127.0.0.1:9901  generation 1  cpu 50%"),
            "{text}"
        );
        let api = lines.iter().find(|l| l.starts_with("api ")).unwrap();
        let cells: Vec<&str> = api.split_whitespace().collect();
        assert_eq!(cells, ["api", "1000", "0.0", "0.0", "20.0", "5.5ms", "9.9ms"], "{text}");
        for expected in [
            "app  endpoints 1/2 up  in flight 3  breaker sre drop 25% (30/40 accepted)  concurrency 3/20",
            "10.0.0.2:80 ejected for 25s",
            "db   endpoints 0/1 up  in flight 0  breaker HALF-OPEN (2 trips)",
            "10.0.1.1:5432 unhealthy",
            "bbr listener:public  in flight 12 / max 10  SHEDDING",
            "pool level:L0  in use 7/100  queued 2/10  codel drops 0",
            "limits api  per-ip 100/s (3 keys), client_ip 10/1m+100/1h (2 keys)",
            "refused api rate_limited SHEDDABLE  20.0/s",
            "api  retries 5.0/s  budget exhausted 0.0/s  budget left 12  hedges won 2.0/s lost 0.0/s",
            "api  /users/7 42.0/s",
            "FAILBACK DEPTH  pay 17",
            "PLANS  peak ON, calm off",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
        assert!(!text.contains('\x1b'), "no terminal codes in the frame itself");
    }

    #[test]
    fn only_the_busiest_routes_are_listed_when_there_are_many() {
        let prev = two_routes(0, [0; 4], [0; 5], 0);
        let cur = two_routes(1000, [5, 0, 0, 0], [5, 0, 0, 0, 0], 9);
        let options = FrameOptions { admin: "a".into(), max_routes: 1 };
        let lines = render(&prev, &cur, &options);
        assert!(lines.iter().any(|l| l.starts_with("search")));
        assert!(!lines.iter().any(|l| l.starts_with("api ")));
        assert!(lines.iter().any(|l| l.starts_with("… 1 more routes")));
    }

    #[test]
    fn a_frame_fits_the_terminal_and_says_what_it_left_out() {
        let lines: Vec<String> = (0..10).map(|i| format!("line {i} {}", "x".repeat(i))).collect();
        // Room enough: unchanged.
        assert_eq!(fit(lines.clone(), 40, 80, 0), lines);
        // Narrow: every long line ends in an ellipsis at the width.
        let narrow = fit(lines.clone(), 40, 10, 0);
        assert_eq!(narrow[9], "line 9 xx…");
        assert!(narrow.iter().all(|l| l.chars().count() <= 10));
        assert_eq!(narrow[0], "line 0 ");
        // Short: the first lines, the count of the rest, and one row left free.
        let short = fit(lines.clone(), 5, 80, 0);
        assert_eq!(short.len(), 4);
        assert_eq!(short[..3], lines[..3]);
        assert_eq!(short[3], "… 7 more lines (a taller terminal shows them)");
        // A note under the frame is kept.
        let noted = fit(lines.clone(), 5, 80, 2);
        assert_eq!(
            noted,
            vec![
                lines[0].clone(),
                "… 7 more lines (a taller terminal shows them)".into(),
                lines[8].clone(),
                lines[9].clone()
            ]
        );
    }

    #[test]
    fn formats_fit_their_magnitude() {
        assert_eq!(format_latency(Some(0.00042)), "420us");
        assert_eq!(format_latency(Some(0.0123)), "12.3ms");
        assert_eq!(format_latency(Some(2.5)), "2.50s");
        assert_eq!(format_latency(None), "-");
        assert_eq!(format_rate(12.34), "12.3");
        assert_eq!(format_rate(12345.6), "12346");
    }
}
