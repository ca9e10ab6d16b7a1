//! Config loading: the skeleton from the issue parses, and each kind of mistake is reported
//! with its line, key and reason.

use super::*;

const SKELETON: &str = r#"
workers: 2                # thread-per-core runtimes; default = available cores
listeners:
  - name: public
    address: 127.0.0.1:8080
    # tls: { cert: server.pem, key: server.key }        # rustls; ALPN h2 + http/1.1
admin:
  address: 127.0.0.1:9901                              # loopback by default
  # token: ${SPILLWAY_ADMIN_TOKEN}
clusters:
  - name: users
    endpoints:
      - { address: 127.0.0.1:9001, weight: 2, zone: az1 }
      - { address: 127.0.0.1:9002 }
    balance: p2c_ewma     # round_robin | weighted_round_robin | least_request | p2c_ewma | consistent_hash
    protocol: http1       # http1 | http2 (h2c) ; gRPC needs http2
    timeouts: { connect: 200ms, request: 2s, idle: 60s }
    health_check: { path: /healthz, interval: 5s, timeout: 1s, healthy: 2, unhealthy: 3 }
    outlier: { consecutive_failures: 5, base_ejection: 30s, max_ejected_percent: 50 }
routes:
  - name: users-api
    match: { host: api.local, path_prefix: /users, methods: [GET, POST] }
    cluster: users
    rewrite: { path_prefix: / }
  - name: hello
    match: { path: /hello }
    direct_response: { status: 200, body: "hi" }
"#;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "test.yaml", Path::new("."))
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e.problems().to_vec(),
    }
}

#[test]
fn the_issue_skeleton_is_valid_and_has_no_warnings() {
    let config = parse(SKELETON).unwrap();
    assert_eq!(config.workers, 2);
    assert_eq!(config.listeners[0].address, "127.0.0.1:8080".parse().unwrap());
    let users = config.cluster("users").unwrap();
    assert_eq!(users.balance, Balance::P2cEwma);
    assert_eq!(users.endpoints[0].weight, 2);
    assert_eq!(users.timeouts.connect, Duration::from_millis(200));
    assert_eq!(users.timeouts.per_try, Duration::from_secs(2));
    assert!(matches!(config.routes[1].action, RouteAction::Direct { status: 200, .. }));
    assert_eq!(config.warnings, vec![]);
}

#[test]
fn unknown_keys_are_errors_with_line_and_suggestion() {
    let text = SKELETON.replace("timeouts: { connect: 200ms,", "timeouts: { conect: 200ms,");
    let p = problems(&text);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].line, Some(17));
    assert!(p[0].key.starts_with("clusters[0].timeouts"), "{:?}", p[0]);
    assert!(p[0].reason.contains("did you mean `connect`"), "{:?}", p[0]);
}

#[test]
fn an_unknown_cluster_is_reported_on_the_route_line() {
    let text = SKELETON.replace("cluster: users", "cluster: user");
    let p = problems(&text);
    assert_eq!(p[0].line, Some(23));
    assert_eq!(p[0].key, "routes[0].cluster");
    assert!(p[0].reason.contains("did you mean `users`"), "{:?}", p[0]);
}

#[test]
fn durations_without_units_are_errors() {
    let text = SKELETON.replace("request: 2s", "request: 2");
    let p = problems(&text);
    assert_eq!(p[0].line, Some(17));
    assert!(p[0].reason.contains("no unit"), "{:?}", p[0]);
}

#[test]
fn environment_variables_are_expanded() {
    std::env::set_var("SPILLWAY_TEST_PORT", "8181");
    let text = SKELETON.replace("127.0.0.1:8080", "127.0.0.1:${SPILLWAY_TEST_PORT}");
    let config = parse(&text).unwrap();
    assert_eq!(config.listeners[0].address.port(), 8181);
}

/// Values that YAML would read as something else than their text if expanded before parsing.
const TRICKY_VALUES: &[&str] =
    &["null", "~", "abc #x", "*x", "&y", "\"q\"", "a: b", "line one\nline two", "123", "[1]"];

/// The skeleton with an admin token taken from the variable `name`.
fn with_token(name: &str) -> String {
    SKELETON.replace("  # token: ${SPILLWAY_ADMIN_TOKEN}", &format!("  token: ${{{name}}}"))
}

#[test]
fn an_environment_token_is_always_its_literal_text() {
    for (i, value) in TRICKY_VALUES.iter().enumerate() {
        let name = format!("SPILLWAY_TEST_TOKEN_{i}");
        std::env::set_var(&name, value);
        let config = parse(&with_token(&name)).unwrap_or_else(|e| panic!("{value:?}: {e}"));
        let token = config.admin.and_then(|a| a.token);
        assert_eq!(token.as_deref(), Some(*value), "{value:?} must stay the literal token");
    }
}

#[test]
fn an_empty_environment_token_is_an_error_naming_the_variable() {
    std::env::set_var("SPILLWAY_TEST_TOKEN_EMPTY", "");
    let text = with_token("SPILLWAY_TEST_TOKEN_EMPTY");
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "admin.token");
    assert_eq!(p[0].line, line_with(&text, "token: ${"));
    assert!(p[0].reason.contains("SPILLWAY_TEST_TOKEN_EMPTY"), "{p:?}");
    assert!(p[0].reason.contains("empty"), "{p:?}");
}

#[test]
fn an_empty_literal_token_is_an_error_not_open_access() {
    let text = SKELETON.replace("  # token: ${SPILLWAY_ADMIN_TOKEN}", "  token: \"\"");
    refused(&text, "admin.token", "token: \"\"", "the token is empty");
}

#[test]
fn an_unset_token_variable_is_an_error_unless_it_has_a_default() {
    let text = with_token("SPILLWAY_TEST_TOKEN_UNSET");
    refused(&text, "admin.token", "token: ${", "SPILLWAY_TEST_TOKEN_UNSET is not set");
    let text = with_token("SPILLWAY_TEST_TOKEN_UNSET:-fall~back");
    let config = parse(&text).unwrap();
    assert_eq!(config.admin.and_then(|a| a.token).as_deref(), Some("fall~back"));
    let text = with_token("SPILLWAY_TEST_TOKEN_UNSET:-");
    refused(&text, "admin.token", "token: ${", "SPILLWAY_TEST_TOKEN_UNSET");
}

#[test]
fn an_environment_address_is_reported_as_its_literal_text() {
    let values = TRICKY_VALUES.iter().chain(&[""]);
    for (i, value) in values.enumerate() {
        let name = format!("SPILLWAY_TEST_ADDRESS_{i}");
        std::env::set_var(&name, value);
        let text = SKELETON.replace("address: 127.0.0.1:8080", &format!("address: ${{{name}}}"));
        let p = problems(&text);
        assert_eq!(p.len(), 1, "{value:?}: {p:?}");
        assert_eq!(p[0].key, "listeners[0].address", "{value:?}");
        assert_eq!(p[0].line, Some(5), "{value:?}");
        assert!(p[0].reason.contains(&format!("`{value}` is not an IP:port")), "{p:?}");
    }
}

#[test]
fn an_unset_address_variable_is_an_error_unless_it_has_a_default() {
    let text = SKELETON.replace("127.0.0.1:8080", "${SPILLWAY_TEST_ADDRESS_UNSET}");
    refused(&text, "listeners[0].address", "${SPILLWAY", "SPILLWAY_TEST_ADDRESS_UNSET is not set");
    let text = SKELETON.replace("127.0.0.1:8080", "${SPILLWAY_TEST_ADDRESS_UNSET:-127.0.0.1:8282}");
    assert_eq!(parse(&text).unwrap().listeners[0].address.port(), 8282);
}

#[test]
fn numeric_settings_can_come_from_the_environment() {
    std::env::set_var("SPILLWAY_TEST_WORKERS", "3");
    let text = SKELETON.replace("workers: 2 ", "workers: ${SPILLWAY_TEST_WORKERS} ");
    assert_eq!(parse(&text).unwrap().workers, 3);
    let text = SKELETON.replace("weight: 2", "weight: \"${SPILLWAY_TEST_WEIGHT:-5}\"");
    assert_eq!(parse(&text).unwrap().clusters[0].endpoints[0].weight, 5);
    std::env::set_var("SPILLWAY_TEST_WORKERS_BAD", "four");
    let text = SKELETON.replace("workers: 2 ", "workers: ${SPILLWAY_TEST_WORKERS_BAD} ");
    refused(&text, "workers", "workers:", "`four` is not a valid number");
}

#[test]
fn an_unquoted_variable_in_a_flow_mapping_gets_a_hint() {
    let text = SKELETON.replace("weight: 2", "weight: ${SPILLWAY_TEST_WEIGHT}");
    let p = problems(&text);
    assert_eq!(p[0].line, line_with(&text, "weight: ${"), "{p:?}");
    assert!(p[0].reason.contains("quote"), "{p:?}");
}

#[test]
fn type_errors_after_expansion_name_key_and_line() {
    let text = SKELETON.replace("healthy: 2,", "healthy: [2],");
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "clusters[0].health_check.healthy");
    assert_eq!(p[0].line, Some(18), "{p:?}");
}

#[test]
fn semantic_errors_are_all_reported_in_line_order() {
    let text = SKELETON
        .replace("balance: p2c_ewma", "balance: p2c_ewm")
        .replace("address: 127.0.0.1:9002", "address: nowhere")
        .replace("status: 200", "status: 700");
    let p = problems(&text);
    let lines: Vec<_> = p.iter().map(|p| p.line).collect();
    assert_eq!(lines, vec![Some(14), Some(15), Some(27)], "{p:?}");
    assert!(p[1].reason.contains("did you mean `p2c_ewma`"));
}

#[test]
fn risky_settings_are_warnings() {
    let text = SKELETON.replace(
        "timeouts: { connect: 200ms, request: 2s, idle: 60s }",
        "timeouts: { connect: 90s }",
    );
    let config = parse(&text).unwrap();
    let reasons: Vec<_> = config.warnings.iter().map(|w| (w.line, w.reason.as_str())).collect();
    assert_eq!(config.warnings.len(), 2, "{reasons:?}");
    assert!(reasons.iter().any(|(l, r)| *l == Some(17) && r.contains("over 60s")));
    assert!(reasons.iter().any(|(l, r)| *l == Some(21) && r.contains("no timeout")));
}

#[test]
fn an_admin_api_reachable_from_other_hosts_needs_a_token() {
    let public = SKELETON.replace("address: 127.0.0.1:9901", "address: 0.0.0.0:9901");
    refused(&public, "admin.address", "0.0.0.0:9901", "no `token`");
    let with_token =
        public.replace("address: 0.0.0.0:9901", "token: s3cret\n  address: 0.0.0.0:9901");
    parse(&with_token).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_catch_all_route_before_others_is_a_warning() {
    let text = SKELETON
        .replace("    match: { host: api.local, path_prefix: /users, methods: [GET, POST] }\n", "")
        .replace("    rewrite: { path_prefix: / }\n", "");
    let config = parse(&text).unwrap();
    assert!(
        config.warnings.iter().any(|w| w.reason.contains("never used")),
        "{:?}",
        config.warnings
    );
}

/// The admission settings of the issue, on a cluster with a written request timeout (so the
/// only route has a timeout) and a direct route after it.
const POLICY: &str = r#"
listeners:
  - name: public
    address: 127.0.0.1:8080
    overload: { bbr: { cpu_threshold: 0.8, window: 10s, buckets: 100, cooldown: 1s } }
clusters:
  - name: orders
    endpoints:
      - { address: 127.0.0.1:9001 }
    timeouts: { request: 5s }
    concurrency: { adaptive: gradient }
routes:
  - name: orders
    match: { path_prefix: /orders }
    cluster: orders
    level: L0
    criticality: CRITICAL
    max_criticality: CRITICAL_PLUS
    limits:
      - { key: header:x-api-key, algorithm: token_bucket, rate: 100/s, burst: 200 }
      - { key: client_ip, algorithm: sliding_window, rate: 1000/1h }
      - { key: route, algorithm: warm_up, rate: 5000/s, warm_up: 30s }
      - { key: query:user, algorithm: leaky_bucket, rate: 10/s, queue: 20, max_wait: 100ms }
    overload: { bbr: { cpu_threshold: 0.8 } }
    deadline: { default: 1s, max: 5s, min_remaining: 5ms }
    budget: { header: x-spillway-budget, grant: { default: 100, by_header: { x-role: { gold: 1000 } } } }
    bulkhead: { max_concurrent: 256, queue: 512, max_wait: 50ms, queue_discipline: codel }
    slow: { body_over: 1MB, header: x-slow, bulkhead: { max_concurrent: 16, queue: 32, max_wait: 200ms } }
  - name: hello
    match: { path: /hello }
    direct_response: { status: 200 }
trusted_proxies: [10.0.0.0/8]
levels: { L0: { max_concurrent: 2000 }, L1: { max_concurrent: 1000 }, L2: { max_concurrent: 300 } }
"#;

/// The 1-based line of the first line of `text` containing `needle`.
fn line_with(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

/// `text` after replacing `from` (which must occur) with `to`.
fn edit(from: &str, to: &str) -> String {
    assert!(POLICY.contains(from), "the policy skeleton has no `{from}`");
    POLICY.replacen(from, to, 1)
}

/// Asserts that `text` is refused with a problem at `key`, on the line holding `needle`, whose
/// reason contains `why`.
fn refused(text: &str, key: &str, needle: &str, why: &str) {
    let p = problems(text);
    let found = p.iter().find(|p| p.key == key).unwrap_or_else(|| panic!("no {key}: {p:?}"));
    assert_eq!(found.line, line_with(text, needle), "{found:?}");
    assert!(found.reason.contains(why), "{found:?}");
}

/// Asserts that `text` loads with exactly one warning, at `key` on the line holding `needle`,
/// whose reason contains `why`.
fn warned(text: &str, key: &str, needle: &str, why: &str) -> Problem {
    let config = parse(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    let w = config.warnings[0].clone();
    assert_eq!(w.key, key, "{w:?}");
    assert_eq!(w.line, line_with(text, needle), "{w:?}");
    assert!(w.reason.contains(why), "{w:?}");
    w
}

#[test]
fn the_issue_policy_skeleton_parses_without_warnings() {
    let config = parse(POLICY).unwrap();
    assert_eq!(config.warnings, vec![]);
    let bbr = config.listeners[0].bbr.as_ref().unwrap();
    assert_eq!((bbr.cpu_threshold, bbr.window, bbr.buckets), (0.8, Duration::from_secs(10), 100));
    assert_eq!(
        config.cluster("orders").unwrap().concurrency,
        Some(ConcurrencySettings::Gradient { initial: 20, max: 1000 })
    );
    let p = &config.routes[0].policy;
    assert_eq!(p.level.as_deref(), Some("L0"));
    assert_eq!(p.criticality, spillway_core::Criticality::Critical);
    assert_eq!(p.max_criticality, spillway_core::Criticality::CriticalPlus);
    let algorithms: Vec<_> = p.limits.iter().map(|l| (l.name.as_str(), l.algorithm_name)).collect();
    assert_eq!(
        algorithms,
        vec![
            ("header:x-api-key", "token_bucket"),
            ("client_ip", "sliding_window"),
            ("route", "warm_up"),
            ("query:user", "leaky_bucket")
        ]
    );
    let quotas: Vec<_> = p.limits.iter().map(|l| l.quota).collect();
    // Burst 200; 1000 an hour; a second's worth of 5000/s; 100ms of 10/s pacing holds 2.
    assert_eq!(quotas, vec![200, 1000, 5000, 2]);
    assert_eq!(p.limits[3].key.parts, vec![KeyPart::Query("user".into())]);
    let d = p.deadline.as_ref().unwrap();
    assert_eq!((d.default, d.max, d.min_remaining), (secs(1), secs(5), ms(5)));
    let b = p.budget.as_ref().unwrap();
    assert_eq!((b.header.as_str(), b.default), ("x-spillway-budget", 100));
    assert_eq!(b.by_header, vec![("x-role".to_string(), vec![("gold".to_string(), 1000)])]);
    let bulkhead = p.bulkhead.as_ref().unwrap();
    assert_eq!((bulkhead.max_concurrent, bulkhead.queue, bulkhead.max_wait), (256, 512, ms(50)));
    assert_eq!(bulkhead.queue_discipline, QueueDiscipline::Codel);
    let slow = p.slow.as_ref().unwrap();
    assert_eq!((slow.body_over, slow.header.as_deref()), (Some(1 << 20), Some("x-slow")));
    assert_eq!(slow.bulkhead.queue_discipline, QueueDiscipline::Fifo);
    assert!(config.trusted_proxies[0].contains([10, 9, 8, 7].into()));
    let levels: Vec<_> =
        config.levels.iter().map(|(n, b)| (n.as_str(), b.max_concurrent)).collect();
    assert_eq!(levels, vec![("L0", 2000), ("L1", 1000), ("L2", 300)]);
    assert!(config.routes[1].policy.is_empty());
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn an_unknown_algorithm_is_refused_with_a_suggestion() {
    let text = edit("algorithm: token_bucket", "algorithm: token_buckt");
    refused(&text, "routes[0].limits[0].algorithm", "token_buckt", "did you mean `token_bucket`");
}

#[test]
fn a_rate_of_zero_is_refused() {
    let text = edit("rate: 100/s", "rate: 0/s");
    refused(&text, "routes[0].limits[0].rate", "rate: 0/s", "admits nothing");
}

#[test]
fn a_rate_that_is_not_permits_per_period_is_refused() {
    let text = edit("rate: 100/s", "rate: abc");
    refused(&text, "routes[0].limits[0].rate", "rate: abc", "is not a rate");
}

#[test]
fn a_malformed_limit_key_is_refused() {
    let text = edit("key: header:x-api-key", "key: cookie:x");
    refused(&text, "routes[0].limits[0].key", "cookie:x", "is not a limit key");
}

#[test]
fn an_unknown_level_is_refused_with_a_suggestion() {
    let text = edit("level: L0", "level: L3");
    refused(&text, "routes[0].level", "level: L3", "no level named `L3`");
    let text = edit("level: L0", "level: l0");
    refused(&text, "routes[0].level", "level: l0", "did you mean `L0`");
}

#[test]
fn a_bad_criticality_is_refused() {
    let text = edit("    criticality: CRITICAL\n", "    criticality: URGENT\n");
    refused(&text, "routes[0].criticality", "criticality: URGENT", "is not a criticality");
    let text = edit("max_criticality: CRITICAL_PLUS", "max_criticality: SHEDDABLE");
    refused(&text, "routes[0].criticality", "    criticality: CRITICAL", "above `max_criticality`");
}

#[test]
fn a_cpu_threshold_above_one_is_refused() {
    let text = edit("bbr: { cpu_threshold: 0.8 } }", "bbr: { cpu_threshold: 1.5 } }");
    refused(&text, "routes[0].overload.bbr.cpu_threshold", "cpu_threshold: 1.5", "at most 1");
}

#[test]
fn a_bulkhead_of_zero_is_refused() {
    let text = edit("max_concurrent: 256", "max_concurrent: 0");
    refused(&text, "routes[0].bulkhead.max_concurrent", "max_concurrent: 0", "max_concurrent is 0");
}

#[test]
fn class_waits_that_shrink_with_the_class_are_refused() {
    let text = edit(
        "queue_discipline: codel",
        "queue_discipline: codel, max_wait_by_class: { CRITICAL_PLUS: 5ms }",
    );
    refused(&text, "routes[0].bulkhead.max_wait_by_class", "CRITICAL_PLUS: 5ms", "sooner");
    let fine = edit(
        "queue_discipline: codel",
        "queue_discipline: codel, max_wait_by_class: { CRITICAL_PLUS: 500ms }",
    );
    let config = parse(&fine).unwrap_or_else(|e| panic!("{e}"));
    let waits = config.routes[0].policy.bulkhead.as_ref().and_then(|b| b.class_waits);
    assert_eq!(waits.map(|w| w[3]), Some(std::time::Duration::from_millis(500)));
}

#[test]
fn an_unknown_queue_discipline_is_refused() {
    let text = edit("queue_discipline: codel", "queue_discipline: lifo");
    refused(&text, "routes[0].bulkhead.queue_discipline", "lifo", "not a queue discipline");
}

#[test]
fn a_fixed_concurrency_of_zero_is_refused() {
    let text = edit("concurrency: { adaptive: gradient }", "concurrency: { fixed: 0 }");
    refused(&text, "clusters[0].concurrency.fixed", "fixed: 0", "at least 1");
}

#[test]
fn fixed_and_adaptive_concurrency_together_are_refused() {
    let text = edit("{ adaptive: gradient }", "{ adaptive: gradient, fixed: 100 }");
    refused(&text, "clusters[0].concurrency", "fixed: 100", "not both");
    let text = edit("{ adaptive: gradient }", "{ fixed: 100, max: 200 }");
    refused(&text, "clusters[0].concurrency.max", "fixed: 100", "has no `initial` or `max`");
}

#[test]
fn an_adaptive_max_alone_lowers_the_initial_limit() {
    let config = parse(&edit("{ adaptive: gradient }", "{ adaptive: aimd, max: 10 }")).unwrap();
    let aimd = Some(ConcurrencySettings::Aimd { initial: 10, max: 10 });
    assert_eq!(config.cluster("orders").unwrap().concurrency, aimd);
}

#[test]
fn a_bad_cidr_in_trusted_proxies_is_refused() {
    let text = edit("[10.0.0.0/8]", "[10.0.0.0/8, 10.0.0.0/33]");
    refused(&text, "trusted_proxies[1]", "trusted_proxies", "prefix length must be 0 to 32");
    let text = edit("[10.0.0.0/8]", "[ten.0.0.0/8]");
    refused(&text, "trusted_proxies[0]", "trusted_proxies", "not an IP address or CIDR");
}

#[test]
fn a_burst_on_a_sliding_window_is_refused() {
    let text = edit("rate: 1000/1h }", "rate: 1000/1h, burst: 10 }");
    refused(&text, "routes[0].limits[1].burst", "burst: 10", "`sliding_window` has no burst");
}

#[test]
fn a_burst_on_warm_up_is_its_quota() {
    let config = parse(&edit("warm_up: 30s }", "warm_up: 30s, burst: 50 }")).unwrap();
    assert_eq!(config.routes[0].policy.limits[2].quota, 50);
}

#[test]
fn policies_on_a_direct_response_route_are_refused() {
    let text = edit(
        "direct_response: { status: 200 }\n",
        "direct_response: { status: 200 }\n    criticality: SHEDDABLE\n    bulkhead: { max_concurrent: 1 }\n",
    );
    refused(&text, "routes[1].criticality", "criticality: SHEDDABLE", "`criticality`, `bulkhead`");
}

#[test]
fn a_min_remaining_not_below_the_default_deadline_is_refused() {
    let text = edit("min_remaining: 5ms", "min_remaining: 1s");
    refused(
        &text,
        "routes[0].deadline.min_remaining",
        "min_remaining: 1s",
        "shorter than the default",
    );
}

#[test]
fn a_deadline_max_alone_caps_the_default() {
    let config = parse(&edit("default: 1s, max: 5s,", "max: 2s,")).unwrap();
    let d = config.routes[0].policy.deadline.as_ref().unwrap();
    assert_eq!((d.default, d.max), (secs(2), secs(2)));
}

#[test]
fn a_queue_wait_longer_than_the_deadline_is_a_warning() {
    let text = edit("max_wait: 50ms", "max_wait: 6s");
    warned(
        &text,
        "routes[0].bulkhead.max_wait",
        "max_wait: 6s",
        "longer than route `orders`'s deadline.max 5s",
    );
    let text = edit(
        "L0: { max_concurrent: 2000 }",
        "L0: { max_concurrent: 2000, queue: 10, max_wait: 6s }",
    );
    warned(&text, "levels.L0.max_wait", "levels:", "no time left for the upstream");
}

#[test]
fn a_queue_over_ten_thousand_is_a_warning() {
    let text = edit("queue: 32,", "queue: 20000,");
    warned(&text, "routes[0].slow.bulkhead.queue", "queue: 20000", "effectively unbounded");
}

#[test]
fn a_deadline_longer_than_the_upstream_timeout_is_a_warning() {
    let text = edit("timeouts: { request: 5s }", "timeouts: { request: 2s }");
    warned(&text, "routes[0].deadline.max", "deadline:", "cluster `orders`'s timeouts.request 2s");
    let text = edit("timeouts: { request: 5s }", "timeouts: { request: 5s, per_try: 500ms }");
    warned(&text, "routes[0].deadline.default", "deadline:", "timeouts.per_try 500ms");
}

#[test]
fn an_upstream_timeout_longer_than_deadline_max_is_a_warning() {
    let text = edit("timeouts: { request: 5s }", "timeouts: { request: 30s }");
    warned(&text, "clusters[0].timeouts.request", "request: 30s", "can never be used");
    let text = edit("cluster: orders\n", "cluster: orders\n    timeout: 10s\n");
    warned(&text, "routes[0].timeout", "timeout: 10s", "can never be used");
}

#[test]
fn a_client_ip_limit_without_trusted_proxies_is_a_warning() {
    let text = edit("trusted_proxies: [10.0.0.0/8]\n", "");
    warned(
        &text,
        "routes[0].limits[1].key",
        "key: client_ip",
        "every client has the proxy's address",
    );
}

#[test]
fn a_level_smaller_than_its_routes_bulkheads_is_a_warning() {
    let text = edit("L0: { max_concurrent: 2000 }", "L0: { max_concurrent: 200 }");
    let w = warned(&text, "levels.L0.max_concurrent", "levels:", "admit 272 requests in flight");
    assert!(w.reason.contains("`orders` 256 + `orders` slow 16"), "{w:?}");
}

#[test]
fn a_route_with_only_a_criticality_has_a_policy() {
    let text = SKELETON.replace(
        "    rewrite: { path_prefix: / }\n",
        "    rewrite: { path_prefix: / }\n    criticality: SHEDDABLE\n",
    );
    let config = parse(&text).unwrap();
    assert!(!config.routes[0].policy.is_empty(), "its class decides who is shed");
    let capped = SKELETON.replace(
        "    rewrite: { path_prefix: / }\n",
        "    rewrite: { path_prefix: / }\n    max_criticality: CRITICAL\n",
    );
    assert!(!parse(&capped).unwrap().routes[0].policy.is_empty(), "a capped claim is rewritten");
    assert!(parse(SKELETON).unwrap().routes[0].policy.is_empty());
}

#[test]
fn plans_must_name_existing_routes_and_fallbacks_they_can_answer_with() {
    let base = "listeners: [{ name: l, address: 127.0.0.1:0 }]\nclusters: [{ name: c, endpoints: [{ address: 127.0.0.1:9 }] }]\nroutes:\n  - { name: r, cluster: c }\n";
    let unknown =
        format!("{base}plans: [ {{ name: p, actions: [ {{ route: nope, fallback: true }} ] }} ]\n");
    let found = problems(&unknown);
    assert!(
        found
            .iter()
            .any(|p| p.key == "plans[0].actions[0].route"
                && p.reason.contains("no route named `nope`")),
        "{found:?}"
    );
    let no_fallback =
        format!("{base}plans: [ {{ name: p, actions: [ {{ route: r, fallback: true }} ] }} ]\n");
    let found = problems(&no_fallback);
    assert!(found.iter().any(|p| p.reason.contains("has no `fallback:`")), "{found:?}");
    let empty = format!("{base}plans: [ {{ name: p, actions: [ {{ route: r }} ] }} ]\n");
    assert!(problems(&empty)
        .iter()
        .any(|p| p.reason.contains("needs `fallback: true` or `shed_below")));
    let fine = format!("{base}plans: [ {{ name: p, actions: [ {{ shed_below: CRITICAL }} ] }} ]\n");
    let config = parse(&fine).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.plans[0].actions[0].shed_below, Some(spillway_core::Criticality::Critical));
}

#[test]
fn state_dir_resolves_against_the_config_directory_and_plans_without_it_are_warned_about() {
    let base = "listeners: [{ name: l, address: 127.0.0.1:0 }]\nroutes: [{ name: r, direct_response: { status: 200 } }]\nplans: [ { name: p, actions: [ { shed_below: CRITICAL } ] } ]\n";
    warned(base, "plans", "plans:", "active plans are forgotten at restart");
    let dir = std::env::temp_dir();
    let name = format!("spillway-state-{}-validate", std::process::id());
    let relative = format!("{base}state_dir: {name}\n");
    let config = Config::parse(&relative, "test.yaml", &dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.state_dir, Some(dir.join(&name)));
    assert_eq!(config.warnings, vec![]);
    assert!(!dir.join(&name).exists(), "validation creates nothing (`check` writes nothing)");
    let absolute = format!("{base}state_dir: /var/lib/spillway\n");
    let config = Config::parse(&absolute, "test.yaml", &dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.state_dir, Some(PathBuf::from("/var/lib/spillway")));
    // A file is not a directory; an empty value names none; `.` is the config's own.
    refused(
        &format!("{base}state_dir: Cargo.toml\n"),
        "state_dir",
        "state_dir",
        "is not a directory",
    );
    refused(&format!("{base}state_dir: ''\n"), "state_dir", "state_dir", "must name a directory");
    assert_eq!(
        parse(&format!("{base}state_dir: .\n")).unwrap().state_dir,
        Some(Path::new(".").join("."))
    );
}

/// The policy skeleton with `retries` (and other keys) added to the `orders` route.
fn with_retries(keys: &str) -> String {
    edit(
        "    overload: { bbr: { cpu_threshold: 0.8 } }\n",
        &format!("    overload: {{ bbr: {{ cpu_threshold: 0.8 }} }}\n{keys}\n"),
    )
}

#[test]
fn retries_take_their_defaults_and_the_failover_strategy() {
    let config = parse(&with_retries("    retries: { attempts: 3 }")).unwrap();
    assert_eq!(config.warnings, vec![]);
    let p = &config.routes[0].policy;
    assert_eq!(p.strategy, Strategy::Failover);
    let r = p.retries.as_ref().unwrap();
    assert_eq!(r.attempts, 3);
    assert_eq!(r.on.statuses, vec![502, 503, 504]);
    assert!(r.on.connect_failure && r.on.reset && !r.on.timeout);
    assert_eq!(r.budget.as_ref().map(|b| b.ratio), Some(0.2));
    assert_eq!(r.max_body, 64 * 1024);
    // Without retries a route fails fast; `strategy: failover` alone retries with defaults.
    assert_eq!(parse(POLICY).unwrap().routes[0].policy.strategy, Strategy::Failfast);
    let failover = parse(&with_retries("    strategy: failover")).unwrap();
    assert_eq!(failover.routes[0].policy.retries.as_ref().map(|r| r.attempts), Some(2));
}

#[test]
fn retry_mistakes_are_refused_with_their_key() {
    let text = with_retries("    retries: { on: [connect_failure, resett] }");
    refused(&text, "routes[0].retries.on[1]", "resett", "did you mean `reset`?");
    let text = with_retries("    retries: { on: [200] }");
    refused(&text, "routes[0].retries.on[0]", "on: [200]", "not an error status");
    let text = with_retries("    retries: { attempts: 0 }");
    refused(&text, "routes[0].retries.attempts", "attempts: 0", "at least 1");
    let text = with_retries("    retries: { backoff: { base: 100ms, max: 10ms } }");
    refused(&text, "routes[0].retries.backoff.max", "base: 100ms", "at least backoff.base");
    let text = with_retries("    retries: { budget: { ratio: -1 } }");
    refused(&text, "routes[0].retries.budget.ratio", "ratio: -1", "at least 0");
    let text = with_retries("    retries: { budget: { ratio: 0.1, refill: 3 } }");
    assert!(!problems(&text).is_empty());
    let text = with_retries("    strategy: failfast\n    retries: { attempts: 2 }");
    refused(&text, "routes[0].retries", "retries: { attempts: 2 }", "never retries");
    let text = with_retries("    strategy: broadcast\n    retries: { attempts: 2 }");
    refused(&text, "routes[0].retries", "retries: { attempts: 2 }", "every endpoint once");
    let text = with_retries("    strategy: failback");
    refused(&text, "routes[0].strategy", "strategy: failback", "needs `failback:");
    let text = with_retries("    mirror: { cluster: nowhere }");
    refused(&text, "routes[0].mirror.cluster", "cluster: nowhere", "no cluster named `nowhere`");
    let text = with_retries("    hedge: { after: p95 }\n    strategy: failover");
    refused(&text, "routes[0].hedge", "hedge: { after: p95 }", "used by `strategy: forking`");
    let text = with_retries("    strategy: failovr");
    refused(&text, "routes[0].strategy", "strategy: failovr", "did you mean `failover`?");
    // Byte sizes are read alike wherever they stand.
    let text = with_retries("    retries: { max_body: 64QB }");
    refused(&text, "routes[0].retries.max_body", "max_body: 64QB", "unit must be one of");
    let text = with_retries("    mirror: { cluster: users, max_body: lots }");
    refused(&text, "routes[0].mirror.max_body", "max_body: lots", "expected e.g. 4KB");
    let text = with_retries("    stale_on_error: { max_bytes: 1XB }");
    refused(&text, "routes[0].stale_on_error.max_bytes", "max_bytes: 1XB", "unit must be");
}

#[test]
fn risky_retries_are_warned_about() {
    let text = with_retries("    retries: { attempts: 3, budget: false }");
    warned(&text, "routes[0].retries.budget", "budget: false", "without a budget");
    let text = with_retries("    retries: { non_idempotent: true }");
    warned(&text, "routes[0].retries.non_idempotent", "non_idempotent", "applied twice");
    // deadline.default is 1s: 3 tries of 500 ms do not fit.
    let text = with_retries("    retries: { attempts: 3, per_try_timeout: 500ms }");
    warned(&text, "routes[0].retries.per_try_timeout", "per_try_timeout", "outlast");
}

#[test]
fn global_limit_mistakes_are_refused_with_their_key() {
    let limit = |l: &str| {
        let last = "      - { key: query:user, algorithm: leaky_bucket, rate: 10/s, queue: 20, max_wait: 100ms }\n";
        edit(last, &format!("{last}      - {l}\n"))
    };
    let has = |text: &str, key: &str, why: &str| {
        let p = problems(text);
        assert!(p.iter().any(|p| p.key == key && p.reason.contains(why)), "{key}: {p:?}");
    };
    has(
        &limit("{ key: path, global: true, rate: 10/s }"),
        "routes[0].limits[4]",
        "needs `mode: exact`",
    );
    has(
        &limit("{ key: path, global: true, mode: exact, algorithm: gcra, rate: 10/s }"),
        "routes[0].limits[4].algorithm",
        "not an `algorithm`",
    );
    has(
        &limit("{ key: path, global: true, mode: lease, burst: 5, rate: 10/s }"),
        "routes[0].limits[4].burst",
        "no burst",
    );
    has(
        &limit("{ key: path, algorithm: gcra, mode: lease, rate: 10/s }"),
        "routes[0].limits[4].mode",
        "only global limits",
    );
    has(
        &limit("{ key: path, global: true, mode: lease, on_store_failure: maybe, rate: 10/s }"),
        "routes[0].limits[4].on_store_failure",
        "last_lease",
    );
    let ok =
        parse(&limit("{ key: path, global: true, mode: lease, rate: 1000/s, refresh: 500ms }"))
            .unwrap();
    assert_eq!(ok.routes[0].policy.global_limits.len(), 1);
}

#[test]
fn global_limits_without_redis_or_exact_at_high_rates_are_warned_about() {
    let last = "      - { key: query:user, algorithm: leaky_bucket, rate: 10/s, queue: 20, max_wait: 100ms }\n";
    let text = edit(
        last,
        &format!("{last}      - {{ name: fleet, key: route, global: true, mode: exact, rate: 5000/s }}\n"),
    );
    let config = parse(&text).unwrap();
    let reasons: Vec<&str> = config.warnings.iter().map(|w| w.reason.as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("in-process store")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("mode: lease")), "{reasons:?}");
    assert!(config.warnings.iter().all(|w| w.key == "routes[0].limits"), "{:?}", config.warnings);
    // Counter mode calls the store per request too.
    let counter = parse(&text.replace("mode: exact", "mode: counter")).unwrap();
    let reasons: Vec<&str> = counter.warnings.iter().map(|w| w.reason.as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("is counter at 5000/s")), "{reasons:?}");
}

#[test]
fn a_hot_only_cache_needs_hot_keys_on_its_route() {
    let text = "listeners: [{ name: l, address: 127.0.0.1:0 }]\nclusters: [{ name: c, endpoints: [{ address: 127.0.0.1:9 }] }]\nroutes:\n  - name: r\n    cluster: c\n    cache: { ttl: 1s, hot_only: true }\n";
    refused(text, "routes[0].cache.hot_only", "hot_only", "needs `hot_keys:`");
    let with_keys = text.replace("    cache:", "    hot_keys: { key: path }\n    cache:");
    let config = parse(&with_keys).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.routes[0].policy.cache.as_ref().is_some_and(|c| c.hot_only));
}

#[test]
fn edge_mistakes_are_refused_at_their_key_and_line() {
    let route = |extra: &str| {
        format!("listeners: [{{ name: l, address: 127.0.0.1:0 }}]\nclusters: [{{ name: c, endpoints: [{{ address: 127.0.0.1:9 }}] }}]\nroutes:\n  - name: r\n    cluster: c\n{extra}")
    };
    let text = route("    ip: { deny: [10.0.0.0/40] }\n");
    refused(&text, "routes[0].ip.deny[0]", "ip:", "prefix length must be 0 to 32");
    let text = route("    cors: { origins: [\"*\"], credentials: true }\n");
    refused(&text, "routes[0].cors.credentials", "cors:", "list the origins");
    let text = route("    cors: { origins: [\"https://app.example/path\"] }\n");
    refused(&text, "routes[0].cors.origins[0]", "cors:", "without a path");
    let text =
        route("    auth: { api_keys: { header: x-key, keys: [ { id: k, sha256: \"abc\" } ] } }\n");
    refused(&text, "routes[0].auth", "auth:", "sha256");
    let text = route("    auth: { jwt: { jwks_file: missing.json, algorithms: [HS256] } }\n");
    refused(&text, "routes[0].auth", "auth:", "missing.json");
    let text = route("    criticality_by_header: { header: x-tier, classes: { gold: GOLDEN } }\n");
    refused(
        &text,
        "routes[0].criticality_by_header.classes.gold",
        "criticality_by_header",
        "not a criticality",
    );
    let text = route("    request_limits: { max_uri: 0 }\n");
    refused(&text, "routes[0].request_limits.max_uri", "request_limits", "at least 1");
    let text = "listeners: [{ name: l, address: 127.0.0.1:0, ip: {} }]\nroutes: []\n";
    refused(text, "listeners[0].ip", "ip:", "names no network");
    let ok = route("    ip: { allow: [10.0.0.0/8], deny: [10.9.0.0/16] }\n    cors: { origins: [\"https://*.example.com\"] }\n    request_limits: { max_body: 1MiB }\n");
    let config = parse(&ok).unwrap_or_else(|e| panic!("{e}"));
    let edge = &config.routes[0].edge;
    assert!(edge.ip.as_ref().is_some_and(|r| !r.admits([10, 9, 1, 1].into())));
    assert_eq!(edge.request_limits.as_ref().and_then(|l| l.max_body), Some(1 << 20));
}

#[test]
fn a_health_check_asks_by_path_or_by_the_grpc_health_protocol() {
    let grpc = SKELETON.replace("health_check: { path: /healthz,", "health_check: { grpc: {},");
    // The gRPC health protocol needs HTTP/2.
    let p = problems(&grpc);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "clusters[0].health_check.grpc");
    assert!(p[0].reason.contains("protocol: http2"), "{p:?}");
    let config = parse(&grpc.replace("protocol: http1 ", "protocol: http2 ")).unwrap();
    let probe = &config.clusters[0].health_check.as_ref().unwrap().probe;
    assert_eq!(*probe, HealthProbe::Grpc { service: String::new() });
    // One of the two, named.
    let both = SKELETON.replace("{ path: /healthz,", "{ path: /healthz, grpc: {},");
    let p = problems(&both);
    assert!(p[0].key == "clusters[0].health_check" && p[0].reason.contains("not both"), "{p:?}");
    let neither = SKELETON.replace("{ path: /healthz,", "{");
    let p = problems(&neither);
    assert!(p[0].reason.contains("give `path`"), "{p:?}");
}
