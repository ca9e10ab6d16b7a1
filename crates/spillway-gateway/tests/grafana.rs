//! The Grafana board (`dashboards/grafana.json`) against a real gateway: every metric family a
//! panel or template variable queries is served by `/metrics`, with samples carrying the labels
//! the query selects and groups by; every query parses as PromQL (`promtool`); and the file is
//! a dashboard Grafana can lay out (unique panel ids, a grid position on each panel).
//!
//! A board that names a metric the gateway does not export draws an empty panel without any
//! error, so this is the only place such drift is caught.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http::StatusCode;
use regex::Regex;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

fn board() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../dashboards/grafana.json");
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every panel, rows' nested panels included.
fn panels(board: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in board["panels"].as_array().unwrap() {
        out.push(p);
        if let Some(inner) = p["panels"].as_array() {
            out.extend(inner);
        }
    }
    out
}

/// Every PromQL query of the board as (where, query): panel targets, then the template
/// variables' `label_values(metric, label)` queries turned into the selector `metric`.
fn queries(board: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(board) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap();
            out.push((format!("panel `{}`", p["title"].as_str().unwrap()), expr.to_string()));
        }
    }
    let label_values = Regex::new(r"^label_values\((\w+),\s*(\w+)\)$").unwrap();
    for v in board["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            let q = v["definition"].as_str().unwrap();
            let c = label_values.captures(q).unwrap_or_else(|| panic!("variable query {q}"));
            // `label_values(m, l)` reads label `l` of `m`: the same needs as `sum by (l) (m)`.
            out.push((
                format!("variable `{}`", v["name"].as_str().unwrap()),
                format!("sum by ({}) ({})", &c[2], &c[1]),
            ));
        }
    }
    out
}

/// The query with its Grafana variables replaced by values Prometheus accepts.
fn as_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m").replace("$route", ".*").replace("$cluster", ".*")
}

/// The query without the contents of its string literals (label values may hold any text).
fn without_strings(expr: &str) -> String {
    Regex::new(r#""(?:[^"\\]|\\.)*""#).unwrap().replace_all(expr, "\"\"").into_owned()
}

/// The `spillway_…` series names a query reads.
fn series_names(expr: &str) -> BTreeSet<String> {
    let name = Regex::new(r"\bspillway_[A-Za-z0-9_:]*").unwrap();
    name.find_iter(&without_strings(expr)).map(|m| m.as_str().to_string()).collect()
}

/// (series name, label names its selector matches on), for each `name{…}` in the query.
fn selector_labels(expr: &str) -> Vec<(String, BTreeSet<String>)> {
    let selector = Regex::new(r"\b(spillway_[A-Za-z0-9_:]*)\{([^}]*)\}").unwrap();
    let matcher = Regex::new(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)").unwrap();
    selector
        .captures_iter(&without_strings(expr))
        .map(|c| {
            let labels = matcher.captures_iter(&c[2]).map(|m| m[1].to_string()).collect();
            (c[1].to_string(), labels)
        })
        .collect()
}

/// The label names of every `by (…)` / `without (…)` clause of the query.
fn grouping_labels(expr: &str) -> BTreeSet<String> {
    let clause = Regex::new(r"\b(?:by|without)\s*\(([^)]*)\)").unwrap();
    clause
        .captures_iter(&without_strings(expr))
        .flat_map(|c| c[1].split(',').map(|l| l.trim().to_string()).collect::<Vec<_>>())
        .filter(|l| !l.is_empty())
        .collect()
}

/// A `/metrics` page: the declared type of each family, and the label names seen on the
/// samples of each series name.
struct Exposition {
    types: BTreeMap<String, String>,
    samples: BTreeMap<String, BTreeSet<String>>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut types = BTreeMap::new();
        let mut samples: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let label = Regex::new(r#"([A-Za-z_][A-Za-z0-9_]*)="(?:[^"\\]|\\.)*""#).unwrap();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split_whitespace();
                let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
                types.insert(name.to_string(), kind.to_string());
            } else if !line.starts_with('#') && !line.trim().is_empty() {
                let end = line.find(['{', ' ']).unwrap();
                let labels = match line[end..].strip_prefix('{') {
                    Some(rest) => {
                        let inner = &rest[..rest.rfind('}').unwrap()];
                        label.captures_iter(inner).map(|c| c[1].to_string()).collect()
                    }
                    None => BTreeSet::new(),
                };
                samples.entry(line[..end].to_string()).or_default().extend(labels);
            }
        }
        Exposition { types, samples }
    }

    /// The family a series name belongs to: itself when declared, else a histogram's or
    /// summary's `_bucket`/`_sum`/`_count` series (as its `# TYPE` line says).
    fn family_of(&self, series: &str) -> Option<String> {
        if self.types.contains_key(series) {
            return Some(series.to_string());
        }
        for (suffix, kinds) in [
            ("_bucket", &["histogram"][..]),
            ("_sum", &["histogram", "summary"][..]),
            ("_count", &["histogram", "summary"][..]),
        ] {
            if let Some(base) = series.strip_suffix(suffix) {
                if self.types.get(base).is_some_and(|k| kinds.contains(&k.as_str())) {
                    return Some(base.to_string());
                }
            }
        }
        None
    }

    /// The label names seen on the samples of `family` (all series of a histogram), or
    /// `None` when it has no sample at all.
    fn family_labels(&self, family: &str) -> Option<BTreeSet<String>> {
        let mut labels = BTreeSet::new();
        let mut any = false;
        for series in ["", "_bucket", "_sum", "_count"].map(|s| format!("{family}{s}")) {
            if self.family_of(&series).as_deref() == Some(family) {
                if let Some(l) = self.samples.get(&series) {
                    any = true;
                    labels.extend(l.iter().cloned());
                }
            }
        }
        any.then_some(labels)
    }
}

#[test]
fn the_board_is_a_dashboard_with_unique_ids_and_a_place_for_every_panel() {
    let board = board();
    assert!(board["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(board["schemaVersion"].as_u64().unwrap() >= 36, "Grafana 10/11 schema");
    let all = panels(&board);
    assert!(all.len() >= 20, "{} panels", all.len());
    let mut ids = BTreeSet::new();
    for p in &all {
        let title = p["title"].as_str().unwrap();
        assert!(ids.insert(p["id"].as_u64().unwrap()), "panel id of `{title}` is not unique");
        let grid = &p["gridPos"];
        for key in ["h", "w", "x", "y"] {
            assert!(grid[key].is_u64(), "`{title}` has no gridPos.{key}");
        }
        assert!(grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24, "`{title}`");
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${datasource}", "`{title}` uses the variable");
            assert!(p["targets"].as_array().is_some_and(|t| !t.is_empty()), "`{title}`");
        }
    }
    let vars: BTreeMap<&str, &str> = board["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v["type"].as_str().unwrap()))
        .collect();
    assert_eq!(vars.get("datasource"), Some(&"datasource"));
    assert_eq!(vars.get("route"), Some(&"query"));
    assert_eq!(vars.get("cluster"), Some(&"query"));
}

#[test]
fn query_reading_finds_families_selectors_and_groupings() {
    let expr = r#"sum by (route, le) (rate(spillway_request_duration_seconds_bucket{route=~"$route",x="spillway_fake{a=1}"}[$__rate_interval]))"#;
    assert_eq!(
        series_names(expr),
        BTreeSet::from(["spillway_request_duration_seconds_bucket".into()])
    );
    let selectors = selector_labels(expr);
    assert_eq!(selectors.len(), 1);
    assert_eq!(selectors[0].1, BTreeSet::from(["route".to_string(), "x".to_string()]));
    assert_eq!(grouping_labels(expr), BTreeSet::from(["route".to_string(), "le".to_string()]));
    let page = Exposition::parse(
        "# TYPE h histogram\nh_bucket{r=\"a\",le=\"1\"} 1\nh_sum{r=\"a\"} 1\nh_count{r=\"a\"} 1\n\
         # TYPE c_total counter\n# TYPE g_bucket gauge\n",
    );
    assert_eq!(page.family_of("h_bucket").as_deref(), Some("h"));
    assert_eq!(page.family_of("g_bucket").as_deref(), Some("g_bucket"), "a gauge named _bucket");
    assert_eq!(page.family_of("c_total_count"), None, "a counter has no _count series");
    assert_eq!(page.family_labels("h"), Some(BTreeSet::from(["r".into(), "le".into()])));
    assert_eq!(page.family_labels("c_total"), None, "declared but without samples");
}

/// Checks every query with `promtool check rules` as recording rules. Without promtool the
/// check is skipped locally but fails under CI (`CI` set), as `common::promtool_accepts`.
#[test]
fn every_query_of_the_board_parses_as_promql() {
    let mut rules = String::from("groups:\n  - name: grafana\n    rules:\n");
    for (i, (_, expr)) in queries(&board()).iter().enumerate() {
        let quoted = serde_json::to_string(&as_promql(expr)).unwrap();
        rules.push_str(&format!("      - record: grafana:query_{i}\n        expr: {quoted}\n"));
    }
    let path = temp_path("grafana-rules.yaml");
    std::fs::write(&path, &rules).unwrap();
    let out = match std::process::Command::new("promtool")
        .arg("check")
        .arg("rules")
        .arg(&path)
        .output()
    {
        Ok(out) => out,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("promtool not found ({e}): PromQL not checked");
            return;
        }
        Err(e) => panic!("promtool is required under CI: {e}"),
    };
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool: {text}\n{rules}");
    let _ = std::fs::remove_file(&path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_board_queries_is_served_by_a_running_gateway() {
    let (b, _) = backend("b").await;
    let refusing = refusing_address();
    let dead = refusing.address.to_string();
    let failback = temp_path("grafana-failback");
    // Every feature a panel shows, so that every family has samples: limits (one global, in
    // lease mode, on the in-process store), a level pool and a bulkhead, BBR, an adaptive
    // concurrency limit, both breaker kinds, retries onto a dead endpoint, hedging, failback,
    // a micro-cache, a fallback over a dead cluster, and a plan.
    let yaml = format!(
        r#"
workers: 2
listeners: [{{ name: public, address: "127.0.0.1:0", overload: {{ bbr: {{ cpu_threshold: 0.99 }} }} }}]
admin: {{ address: "127.0.0.1:0" }}
clusters:
  - {{ name: app, endpoints: [{{ address: "{b}" }}, {{ address: "{dead}" }}], timeouts: {{ request: 5s, connect: 500ms }},
       outlier: {{ consecutive_failures: 0 }},
       concurrency: {{ adaptive: gradient, initial: 50, max: 100 }},
       breaker: {{ sre: {{ k: 2.0, window: 10s, min_requests: 1000 }} }} }}
  - {{ name: search, endpoints: [{{ address: "{b}" }}], timeouts: {{ request: 5s }},
       breaker: {{ state_machine: {{ failure_ratio: 0.5, min_calls: 1000 }} }} }}
  - {{ name: gone, endpoints: [{{ address: "{dead}" }}], timeouts: {{ request: 5s, connect: 500ms }} }}
levels:
  L0: {{ max_concurrent: 100, queue: 10, max_wait: 50ms }}
routes:
  - name: api
    match: {{ path_prefix: /api }}
    cluster: app
    level: L0
    limits:
      - {{ name: fleet, key: route, global: true, mode: lease, rate: 10000/s }}
    overload: {{ bbr: {{ cpu_threshold: 0.99 }} }}
    bulkhead: {{ max_concurrent: 50 }}
    retries: {{ attempts: 3, on: [connect_failure] }}
  - name: limited
    match: {{ path_prefix: /limited }}
    cluster: search
    limits: [{{ key: route, algorithm: token_bucket, rate: 1/m, burst: 1 }}]
  - name: search
    match: {{ path_prefix: /search }}
    cluster: search
    hedge: {{ after: 2s }}
    cache: {{ ttl: 10s }}
  - name: pay
    match: {{ path_prefix: /pay }}
    cluster: app
    failback: {{ dir: "{}" }}
  - name: down
    match: {{ path_prefix: /down }}
    cluster: gone
    fallback: {{ status: 200, body: "{{}}" }}
plans:
  - {{ name: peak, actions: [{{ shed_below: CRITICAL }}] }}
"#,
        failback.display()
    );
    let gw = gateway(&yaml);
    let addr = gw.listener_address("public").unwrap();
    let admin = gw.admin_address().unwrap();
    for _ in 0..6 {
        assert_eq!(get(addr, "/api/x").await.0, StatusCode::OK, "retried past the dead endpoint");
        assert_eq!(get(addr, "/search").await.0, StatusCode::OK);
    }
    assert_eq!(get(addr, "/limited").await.0, StatusCode::OK);
    assert_eq!(get(addr, "/limited").await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(get(addr, "/down").await.0, StatusCode::OK, "the fallback answers");

    let (status, _, page) = get(admin, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let page = String::from_utf8(page.to_vec()).unwrap();
    let exposition = Exposition::parse(&page);
    let queries = queries(&board());
    let mut missing = Vec::new();
    let mut checked = BTreeSet::new();
    for (place, expr) in &queries {
        let mut labels_here = BTreeSet::new();
        for series in series_names(expr) {
            let Some(family) = exposition.family_of(&series) else {
                missing.push(format!("{place}: `{series}` is not a family /metrics declares"));
                continue;
            };
            let Some(labels) = exposition.family_labels(&family) else {
                missing.push(format!("{place}: `{family}` has no sample"));
                continue;
            };
            checked.insert(family);
            labels_here.extend(labels);
        }
        for (series, wanted) in selector_labels(expr) {
            let have = exposition
                .family_of(&series)
                .and_then(|f| exposition.family_labels(&f))
                .unwrap_or_default();
            for label in wanted.difference(&have) {
                missing.push(format!("{place}: `{series}` has no label `{label}`"));
            }
        }
        for label in grouping_labels(expr).difference(&labels_here) {
            missing.push(format!("{place}: grouped by `{label}`, which no series there has"));
        }
    }
    assert!(missing.is_empty(), "{}\n\n{page}", missing.join("\n"));
    assert!(checked.len() >= 30, "{} families checked: {checked:?}", checked.len());
    // The route variable lists the routes that served requests.
    let label_of = Regex::new(r#"spillway_requests_total\{route="([^"]*)""#).unwrap();
    let routes: BTreeSet<_> = label_of.captures_iter(&page).map(|c| c[1].to_string()).collect();
    for route in ["api", "limited", "search", "down"] {
        assert!(routes.contains(route), "{route} in {routes:?}");
    }
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
    let _ = std::fs::remove_dir_all(&failback);
}
