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
    let text = SKELETON
        .replace(
            "timeouts: { connect: 200ms, request: 2s, idle: 60s }",
            "timeouts: { connect: 90s }",
        )
        .replace("address: 127.0.0.1:9901", "address: 0.0.0.0:9901");
    let config = parse(&text).unwrap();
    let reasons: Vec<_> = config.warnings.iter().map(|w| (w.line, w.reason.as_str())).collect();
    assert_eq!(config.warnings.len(), 3, "{reasons:?}");
    assert!(reasons.iter().any(|(l, r)| *l == Some(17) && r.contains("over 60s")));
    assert!(reasons.iter().any(|(l, r)| *l == Some(21) && r.contains("no timeout")));
    assert!(reasons.iter().any(|(l, r)| *l == Some(8) && r.contains("no `token`")), "{reasons:?}");
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
