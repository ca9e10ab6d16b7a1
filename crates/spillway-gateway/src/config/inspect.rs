//! Inspections ("巡检"): settings that are valid but risky, reported as warnings by
//! `spillway check` (and logged at start-up and reload).

use super::locate::{self, Seg};
use super::*;

/// A timeout longer than this is reported: such waits hold connections and memory while the
/// client has usually given up.
pub const LONG_TIMEOUT: Duration = Duration::from_secs(60);

/// A bulkhead queue longer than this is reported as effectively unbounded.
pub const UNBOUNDED_QUEUE: usize = 10_000;

fn warn(out: &mut Vec<Problem>, source: &str, path: &[Seg], reason: String) {
    out.push(Problem { line: locate::line_of(source, path), key: locate::render(path), reason });
}

fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

/// The warnings for a validated config; `source` gives line numbers and tells explicit
/// settings from defaults.
pub fn inspect(config: &Config, source: &str) -> Vec<Problem> {
    let mut out = Vec::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let p = [key("listeners"), Seg::Index(i), key("timeouts"), key("header_read")];
        if l.header_read_timeout > LONG_TIMEOUT {
            warn(
                &mut out,
                source,
                &p,
                format!(
                    "header read timeout {} is over 60s: slow clients hold connections",
                    duration::format_duration(l.header_read_timeout)
                ),
            );
        }
    }
    for (i, cl) in config.clusters.iter().enumerate() {
        let t = cl.timeouts;
        for (name, d) in [("connect", t.connect), ("request", t.request), ("per_try", t.per_try)] {
            if d > LONG_TIMEOUT {
                let p = [key("clusters"), Seg::Index(i), key("timeouts"), key(name)];
                warn(
                    &mut out,
                    source,
                    &p,
                    format!(
                        "{name} timeout {} is over 60s: callers have usually given up by then",
                        duration::format_duration(d)
                    ),
                );
            }
        }
    }
    for (i, r) in config.routes.iter().enumerate() {
        let p = [key("routes"), Seg::Index(i)];
        if let RouteAction::Cluster { name, timeout, .. } = &r.action {
            match timeout {
                Some(d) if *d > LONG_TIMEOUT => {
                    warn(
                        &mut out,
                        source,
                        &[p[0].clone(), p[1].clone(), key("timeout")],
                        format!("timeout {} is over 60s", duration::format_duration(*d)),
                    );
                }
                Some(_) => {}
                None => {
                    let index = config.clusters.iter().position(|c| &c.name == name);
                    let explicit = index.is_some_and(|ci| {
                        let tp = [key("clusters"), Seg::Index(ci), key("timeouts"), key("request")];
                        locate::line_of(source, &tp) != locate::line_of(source, &tp[..3])
                            || source_has_inline_request(source, ci)
                    });
                    if !explicit {
                        warn(&mut out, source, &p, format!("route `{}` has no timeout (neither `timeout` here nor `timeouts.request` on cluster `{name}`): the default {} applies", r.name, duration::format_duration(validate::DEFAULT_REQUEST)));
                    }
                }
            }
        }
        let m = &r.matcher;
        let catch_all =
            m.host.is_none() && m.path.is_none() && m.methods.is_empty() && m.headers.is_empty();
        if catch_all && i + 1 < config.routes.len() {
            warn(
                &mut out,
                source,
                &p,
                format!(
                    "route `{}` matches every request: the {} route(s) after it are never used",
                    r.name,
                    config.routes.len() - i - 1
                ),
            );
        }
    }
    inspect_policies(config, source, &mut out);
    for (path, reason) in super::record::inspect_records(config) {
        warn(&mut out, source, &path, reason);
    }
    if !config.plans.is_empty() && config.state_dir.is_none() {
        let reason = "plans without `state_dir`: active plans are forgotten at restart (set \
                      `state_dir` to keep them in STATE_DIR/plans.json)";
        warn(&mut out, source, &[key("plans")], reason.to_string());
    }
    out
}

/// Whether cluster `index` writes `request:` inside an inline `timeouts: { ... }`.
fn source_has_inline_request(source: &str, index: usize) -> bool {
    let tp = [key("clusters"), Seg::Index(index), key("timeouts")];
    let Some(line) = locate::line_of(source, &tp) else { return false };
    source.lines().nth(line - 1).is_some_and(|l| l.contains("timeouts") && l.contains("request:"))
}

fn fmt(d: Duration) -> String {
    duration::format_duration(d)
}

/// The longest a request of route `r` may take, and what sets it: the deadline's cap, else the
/// route's timeout (its own, or its cluster's `timeouts.request`). `None` for direct responses.
fn route_budget(config: &Config, r: &RouteConfig) -> Option<(Duration, String)> {
    let RouteAction::Cluster { name, timeout, .. } = &r.action else { return None };
    if let Some(d) = &r.policy.deadline {
        return Some((d.max, format!("deadline.max {}", fmt(d.max))));
    }
    match timeout {
        Some(t) => Some((*t, format!("timeout {}", fmt(*t)))),
        None => {
            let request = config.cluster(name)?.timeouts.request;
            Some((request, format!("cluster `{name}`'s timeouts.request {}", fmt(request))))
        }
    }
}

/// Warnings of one pool (route bulkhead, slow pool, level): an effectively unbounded queue,
/// and a queue wait longer than the time the request has in all (`budget`, with its route).
fn inspect_pool(
    out: &mut Vec<Problem>,
    source: &str,
    path: &[Seg],
    pool: &BulkheadSettings,
    budget: Option<(&str, Duration, String)>,
) {
    let at = |k: &str| path.iter().cloned().chain([key(k)]).collect::<Vec<_>>();
    if pool.queue > UNBOUNDED_QUEUE {
        warn(
            out,
            source,
            &at("queue"),
            format!(
                "queue of {} is effectively unbounded (over {UNBOUNDED_QUEUE}): waiting requests \
                 hold memory and connections long after their callers gave up; size it to what \
                 max_concurrent ({}) can drain within max_wait ({})",
                pool.queue,
                pool.max_concurrent,
                fmt(pool.max_wait)
            ),
        );
    }
    if let Some((route, limit, what)) = budget {
        if pool.queue > 0 && pool.max_wait > limit {
            warn(
                out,
                source,
                &at("max_wait"),
                format!(
                    "max_wait {} is longer than route `{route}`'s {what}: a request that waits \
                     that long has no time left for the upstream (lower max_wait)",
                    fmt(pool.max_wait)
                ),
            );
        }
    }
}

/// The risks of the admission settings: queues, deadlines against timeouts, client-IP limits
/// without trusted proxies, and levels smaller than their routes' bulkheads.
fn inspect_policies(config: &Config, source: &str, out: &mut Vec<Problem>) {
    for (i, r) in config.routes.iter().enumerate() {
        let p = [key("routes"), Seg::Index(i)];
        let at = |more: &[Seg]| p.iter().chain(more).cloned().collect::<Vec<_>>();
        let budget = route_budget(config, r);
        let with_route = || budget.as_ref().map(|(d, what)| (r.name.as_str(), *d, what.clone()));
        if let Some(b) = &r.policy.bulkhead {
            inspect_pool(out, source, &at(&[key("bulkhead")]), b, with_route());
        }
        if let Some(s) = &r.policy.slow {
            inspect_pool(
                out,
                source,
                &at(&[key("slow"), key("bulkhead")]),
                &s.bulkhead,
                with_route(),
            );
        }
        if config.trusted_proxies.is_empty() {
            for (j, l) in r.policy.limits.iter().enumerate() {
                if l.key.parts.contains(&KeyPart::ClientIp) {
                    warn(
                        out,
                        source,
                        &at(&[key("limits"), Seg::Index(j), key("key")]),
                        format!(
                            "limit `{}` counts by client_ip but `trusted_proxies` is empty: \
                             behind a load balancer or proxy every client has the proxy's \
                             address, so all clients share one key; set `trusted_proxies` to \
                             the proxies' networks (or ignore this if clients connect directly)",
                            l.name
                        ),
                    );
                }
            }
        }
        inspect_deadline(config, source, i, r, out);
        inspect_retries(config, source, i, r, out);
        inspect_global_limits(config, source, i, r, out);
    }
    inspect_cluster_request_vs_deadlines(config, source, out);
    for (name, level) in &config.levels {
        let lp = [key("levels"), key(name)];
        let members: Vec<(usize, &RouteConfig)> = config
            .routes
            .iter()
            .enumerate()
            .filter(|(_, r)| r.policy.level.as_deref() == Some(name.as_str()))
            .collect();
        // The route of the level with the least time, which a level queue wait must fit in.
        let tightest = members
            .iter()
            .filter_map(|(_, r)| {
                route_budget(config, r).map(|(d, what)| (r.name.as_str(), d, what))
            })
            .min_by_key(|(_, d, _)| *d);
        inspect_pool(out, source, &lp, level, tightest);
        let mut parts = Vec::new();
        let mut sum = 0usize;
        for (_, r) in &members {
            if let Some(b) = &r.policy.bulkhead {
                sum = sum.saturating_add(b.max_concurrent);
                parts.push(format!("`{}` {}", r.name, b.max_concurrent));
            }
            if let Some(s) = &r.policy.slow {
                sum = sum.saturating_add(s.bulkhead.max_concurrent);
                parts.push(format!("`{}` slow {}", r.name, s.bulkhead.max_concurrent));
            }
        }
        if sum > level.max_concurrent {
            warn(
                out,
                source,
                &[key("levels"), key(name), key("max_concurrent")],
                format!(
                    "the bulkheads of level `{name}`'s routes admit {sum} requests in flight \
                     ({}), more than the level's max_concurrent {}: under load the level pool \
                     refuses first and one route can take the slots its neighbours were sized \
                     for; raise the level or shrink the bulkheads",
                    parts.join(" + "),
                    level.max_concurrent
                ),
            );
        }
    }
}

/// A route's global limits: without a Redis store each gateway counts alone; exact mode costs
/// one store call per request, which high rates should not pay.
fn inspect_global_limits(
    config: &Config,
    source: &str,
    i: usize,
    r: &RouteConfig,
    out: &mut Vec<Problem>,
) {
    // (Validation split local and global limits: the warning names the limit and points at the
    // route's `limits`.)
    let entry = [key("routes"), Seg::Index(i), key("limits")];
    for g in &r.policy.global_limits {
        if config.quota_store.redis.is_empty() {
            warn(
                out,
                source,
                &entry,
                format!(
                    "global limit `{}` has no `quota_store.redis`: an in-process store is used, so \
                     each gateway counts alone (set quota_store.redis for a fleet)",
                    g.name
                ),
            );
        }
        let per_second = g.permits as f64 / g.period.as_secs_f64();
        let per_request = match g.mode {
            GlobalMode::Exact { .. } => Some("exact"),
            GlobalMode::Counter => Some("counter"),
            _ => None,
        };
        if let Some(mode) = per_request.filter(|_| per_second > 1000.0) {
            warn(
                out,
                source,
                &entry,
                format!(
                    "global limit `{}` is {mode} at {per_second:.0}/s: one store call per \
                     request; `mode: lease` enforces high rates without a call per request",
                    g.name
                ),
            );
        }
    }
}

/// A route's retries: without a budget they multiply load in an outage; on non-idempotent
/// methods they may apply a write twice; tries that together outlast the route's time mean
/// the last ones never run.
fn inspect_retries(
    config: &Config,
    source: &str,
    i: usize,
    r: &RouteConfig,
    out: &mut Vec<Problem>,
) {
    let (Some(retries), RouteAction::Cluster { name, timeout, .. }) =
        (&r.policy.retries, &r.action)
    else {
        return;
    };
    let rp = [key("routes"), Seg::Index(i), key("retries")];
    let at = |k: &str| [rp[0].clone(), rp[1].clone(), rp[2].clone(), key(k)];
    if retries.budget.is_none() && retries.attempts > 1 {
        warn(
            out,
            source,
            &at("budget"),
            format!(
                "retries without a budget: when the cluster fails, every request is tried {} \
                 times, multiplying the load on a backend that is already failing (write e.g. \
                 `budget: {{ ratio: 0.2 }}`)",
                retries.attempts
            ),
        );
    }
    if retries.non_idempotent {
        warn(
            out,
            source,
            &at("non_idempotent"),
            String::from(
                "retrying non-idempotent requests: a POST or PATCH whose answer was lost may be \
                 applied twice upstream (make the service deduplicate, e.g. by an idempotency key)",
            ),
        );
    }
    // Only a per-try timeout written here: by default each try may use what is left.
    let (Some(per_try), Some(cluster)) = (retries.per_try_timeout, config.cluster(name)) else {
        return;
    };
    let (total, what) = match &r.policy.deadline {
        Some(d) => (d.default, "deadline.default"),
        None => (timeout.unwrap_or(cluster.timeouts.request), "timeout"),
    };
    let all_tries = per_try.saturating_mul(retries.attempts);
    if retries.attempts > 1 && all_tries > total {
        warn(
            out,
            source,
            &at("per_try_timeout"),
            format!(
                "{} attempts of up to {} each ({}) outlast the route's {what} {}: when tries \
                 time out, the later attempts are never made (lower per_try_timeout or attempts)",
                retries.attempts,
                fmt(per_try),
                fmt(all_tries),
                fmt(total)
            ),
        );
    }
}

/// A route's deadline against the upstream timeouts: a deadline longer than the upstream may
/// run is cut short by the timeout (the caller's budget is not honoured), and a route `timeout`
/// longer than `deadline.max` can never fire.
fn inspect_deadline(
    config: &Config,
    source: &str,
    i: usize,
    r: &RouteConfig,
    out: &mut Vec<Problem>,
) {
    let (Some(d), RouteAction::Cluster { name, timeout, .. }) = (&r.policy.deadline, &r.action)
    else {
        return;
    };
    let Some(cluster) = config.cluster(name) else { return };
    let dp = [key("routes"), Seg::Index(i), key("deadline")];
    let request = timeout.unwrap_or(cluster.timeouts.request);
    let (cut, what) = if cluster.timeouts.per_try < request {
        (cluster.timeouts.per_try, format!("cluster `{name}`'s timeouts.per_try"))
    } else if timeout.is_some() {
        (request, String::from("the route's timeout"))
    } else {
        (request, format!("cluster `{name}`'s timeouts.request"))
    };
    if d.max > cut {
        let (which, value) = if d.default > cut { ("default", d.default) } else { ("max", d.max) };
        warn(
            out,
            source,
            &[dp[0].clone(), dp[1].clone(), dp[2].clone(), key(which)],
            format!(
                "deadline.{which} {} is longer than {what} {}: the upstream call is cut first, so \
                 a caller's budget beyond {} is never honoured (lower the deadline or raise the \
                 timeout)",
                fmt(value),
                fmt(cut),
                fmt(cut)
            ),
        );
    }
    if let Some(t) = timeout {
        if *t > d.max {
            warn(
                out,
                source,
                &[key("routes"), Seg::Index(i), key("timeout")],
                format!(
                    "timeout {} is longer than deadline.max {}: every request's budget ends \
                     first, so this timeout can never be used",
                    fmt(*t),
                    fmt(d.max)
                ),
            );
        }
    }
}

/// A cluster `timeouts.request` written longer than the `deadline.max` of every route that
/// relies on it (routes with their own `timeout` do not) can never be used.
fn inspect_cluster_request_vs_deadlines(config: &Config, source: &str, out: &mut Vec<Problem>) {
    for (ci, cl) in config.clusters.iter().enumerate() {
        let tp = [key("clusters"), Seg::Index(ci), key("timeouts"), key("request")];
        let written = locate::line_of(source, &tp) != locate::line_of(source, &tp[..3])
            || source_has_inline_request(source, ci);
        if !written {
            continue;
        }
        let mut users = config.routes.iter().filter(|r| {
            matches!(&r.action, RouteAction::Cluster { name, timeout: None, .. } if *name == cl.name)
        });
        let mut longest: Option<(Duration, &str)> = None;
        let all_capped = users.all(|r| match &r.policy.deadline {
            Some(d) => {
                if longest.is_none_or(|(m, _)| d.max > m) {
                    longest = Some((d.max, r.name.as_str()));
                }
                true
            }
            None => false,
        });
        if let (true, Some((max, route))) = (all_capped, longest) {
            if cl.timeouts.request > max {
                warn(
                    out,
                    source,
                    &tp,
                    format!(
                        "request timeout {} is longer than the longest deadline.max of the \
                         routes using it ({} on route `{route}`): every request's budget ends \
                         first, so this timeout can never be used",
                        fmt(cl.timeouts.request),
                        fmt(max)
                    ),
                );
            }
        }
    }
}
