//! The route-level entry point: one method per `auth:` block, API keys from the YAML shape of
//! the issue, and the headers the gateway strips so clients cannot spoof identity.

#![allow(clippy::unwrap_used)]

use http::{HeaderMap, HeaderName, HeaderValue};
use spillway_auth::{
    hash_api_key, strip_headers, AuthConfig, AuthFailure, AuthOutcome, Authenticator, ConfigError,
};
use std::path::Path;

const NOW: u64 = 1_800_000_000;

fn api_keys_yaml() -> String {
    format!(
        "api_keys: {{ header: x-api-key, keys: [ {{ id: mobile, sha256: \"{}\" }}, {{ id: web, sha256: \"{}\" }} ], forward: x-api-key-id }}",
        hash_api_key("mobile-key-1"),
        hash_api_key("web-key-2"),
    )
}

fn build(yaml: &str) -> Result<Authenticator, ConfigError> {
    let config: AuthConfig = yaml_serde::from_str(yaml).unwrap();
    Authenticator::from_config(&config, Path::new("."))
}

fn with_key(key: &'static str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_static(key));
    headers
}

#[test]
fn api_keys_from_yaml_authenticate_by_id() {
    let auth = build(&api_keys_yaml()).unwrap();
    assert_eq!(auth.authenticate(&with_key("web-key-2"), NOW).identity(), Some("web"));
    assert_eq!(auth.authenticate(&with_key("mobile-key-1"), NOW).identity(), Some("mobile"));
    match auth.authenticate(&with_key("mobile-key-2"), NOW) {
        AuthOutcome::Unauthenticated { reason: AuthFailure::UnknownApiKey, www_authenticate } => {
            assert_eq!(www_authenticate, "ApiKey realm=\"spillway\", header=\"x-api-key\"");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        auth.authenticate(&HeaderMap::new(), NOW).refusal_status(),
        Some(http::StatusCode::UNAUTHORIZED)
    );
    assert_eq!(auth.credential_header(), HeaderName::from_static("x-api-key"));
    assert!(!auth.is_cpu_heavy());
}

#[test]
fn a_block_must_name_exactly_one_method() {
    assert!(matches!(build("{}"), Err(ConfigError::NoMethod)));
    let two = format!(
        "{}\nbasic: {{ users: {{ a: \"$2b$04$abcdefghijklmnopqrstuu5Zq5f3XPQJrqmtNEd0DQq6Y8Q2Tqf7y\" }} }}",
        api_keys_yaml()
    );
    let error = build(&two).unwrap_err();
    assert!(
        matches!(&error, ConfigError::SeveralMethods { found } if found == "api_keys, basic"),
        "{error}"
    );
}

#[test]
fn strip_list_covers_every_route_once() {
    let keys = build(&api_keys_yaml()).unwrap();
    let same_again = build(&api_keys_yaml()).unwrap();
    let other = build(&api_keys_yaml().replace("x-api-key-id", "x-client")).unwrap();
    assert_eq!(
        strip_headers([&keys, &same_again, &other]),
        vec![HeaderName::from_static("x-api-key-id"), HeaderName::from_static("x-client")]
    );
}

#[test]
fn authenticate_parts_reads_the_request_headers() {
    let auth = build(&api_keys_yaml()).unwrap();
    let request = http::Request::builder().header("x-api-key", "web-key-2").body(()).unwrap();
    let (parts, ()) = request.into_parts();
    assert_eq!(auth.authenticate_parts(&parts, NOW).identity(), Some("web"));
}

#[test]
fn authenticators_and_credentials_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Authenticator>();
    shareable::<spillway_auth::BasicCredentials>();
    shareable::<AuthOutcome>();
}
