//! HTTP Basic against argon2id, argon2i and bcrypt hashes made in the test (cheap parameters),
//! the credential cache with a manual clock, and the config errors of a `basic` block.

#![allow(clippy::unwrap_used)]

use argon2::{Argon2, Params, PasswordHasher, Version};
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use spillway_auth::{
    AuthConfig, AuthFailure, AuthOutcome, Authenticator, BasicAuth, BasicConfig, ConfigError,
};
use std::collections::BTreeMap;

const NOW: u64 = 1_800_000_000;

fn argon2_hash(algorithm: argon2::Algorithm, password: &str) -> String {
    // Small memory and one pass: the same code path as production parameters, faster tests.
    let params = Params::new(1024, 1, 1, None).unwrap();
    let hasher = Argon2::new(algorithm, Version::V0x13, params);
    hasher.hash_password_with_salt(password.as_bytes(), b"saltsaltsalt1234").unwrap().to_string()
}

fn users() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("alice".to_owned(), argon2_hash(argon2::Algorithm::Argon2id, "wonderland")),
        ("ian".to_owned(), argon2_hash(argon2::Algorithm::Argon2i, "ice-cold")),
        ("bob".to_owned(), bcrypt::hash("builder", 4).unwrap()),
    ])
}

fn config() -> BasicConfig {
    BasicConfig {
        users: users(),
        realm: None,
        forward: Some("x-user".into()),
        cache_ttl: None,
        cache_entries: None,
    }
}

fn auth() -> BasicAuth {
    BasicAuth::from_config(&config()).unwrap()
}

fn basic(user: &str, password: &str) -> HeaderMap {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::try_from(format!("Basic {encoded}")).unwrap(),
    );
    headers
}

fn refusal(outcome: &AuthOutcome) -> Option<AuthFailure> {
    match outcome {
        AuthOutcome::Unauthenticated { reason, .. } => Some(*reason),
        _ => None,
    }
}

#[test]
fn argon2id_password_authenticates_and_forwards_the_user() {
    let outcome = auth().authenticate(&basic("alice", "wonderland"), NOW);
    assert_eq!(
        outcome,
        AuthOutcome::Authenticated {
            identity: "alice".into(),
            claims: vec![(HeaderName::from_static("x-user"), HeaderValue::from_static("alice"))],
        }
    );
}

#[test]
fn argon2i_password_authenticates() {
    assert_eq!(auth().authenticate(&basic("ian", "ice-cold"), NOW).identity(), Some("ian"));
}

#[test]
fn bcrypt_password_authenticates() {
    assert_eq!(auth().authenticate(&basic("bob", "builder"), NOW).identity(), Some("bob"));
}

#[test]
fn wrong_password_is_refused_with_a_utf8_basic_challenge() {
    for (user, password) in [("alice", "Wonderland"), ("bob", "builder "), ("ian", "")] {
        match auth().authenticate(&basic(user, password), NOW) {
            AuthOutcome::Unauthenticated { reason, www_authenticate } => {
                assert_eq!(reason, AuthFailure::BadPassword, "{user}");
                assert_eq!(www_authenticate, "Basic realm=\"spillway\", charset=\"UTF-8\"");
            }
            other => panic!("{user}: {other:?}"),
        }
    }
}

#[test]
fn unknown_user_is_refused_like_a_wrong_password() {
    let auth = auth();
    assert_eq!(
        refusal(&auth.authenticate(&basic("mallory", "x"), NOW)),
        Some(AuthFailure::BadPassword)
    );
    // The stand-in hash is alice's (first by name): her password must not let anyone in.
    assert_eq!(
        refusal(&auth.authenticate(&basic("mallory", "wonderland"), NOW)),
        Some(AuthFailure::BadPassword)
    );
}

#[test]
fn missing_or_foreign_authorization_counts_as_missing_credentials() {
    let auth = auth();
    assert_eq!(
        refusal(&auth.authenticate(&HeaderMap::new(), NOW)),
        Some(AuthFailure::MissingCredentials)
    );
    let mut bearer = HeaderMap::new();
    bearer.insert(http::header::AUTHORIZATION, HeaderValue::from_static("Bearer a.b.c"));
    assert_eq!(refusal(&auth.authenticate(&bearer, NOW)), Some(AuthFailure::MissingCredentials));
}

#[test]
fn success_is_cached_until_the_ttl_and_only_for_the_same_password() {
    let mut config = config();
    config.cache_ttl = Some("60s".into());
    let auth = BasicAuth::from_config(&config).unwrap();
    let right = auth.parse_credentials(&basic("alice", "wonderland")).unwrap();
    let wrong = auth.parse_credentials(&basic("alice", "wonderland!")).unwrap();
    assert!(auth.cached(&right, NOW).is_none(), "nothing cached before a success");
    assert!(auth.verify_basic(&right, NOW).is_authenticated());
    assert_eq!(
        auth.cached(&right, NOW + 59).and_then(|o| o.identity().map(str::to_owned)).as_deref(),
        Some("alice")
    );
    assert!(auth.cached(&wrong, NOW + 1).is_none());
    assert!(auth.cached(&right, NOW + 60).is_none(), "expired");
    // Failures are never cached.
    assert!(!auth.verify_basic(&wrong, NOW).is_authenticated());
    assert!(auth.cached(&wrong, NOW).is_none());
}

#[test]
fn zero_ttl_turns_the_cache_off() {
    let mut config = config();
    config.cache_ttl = Some("0s".into());
    let auth = BasicAuth::from_config(&config).unwrap();
    let credentials = auth.parse_credentials(&basic("bob", "builder")).unwrap();
    assert!(auth.verify_basic(&credentials, NOW).is_authenticated());
    assert!(auth.cached(&credentials, NOW).is_none());
}

#[test]
fn hash_that_does_not_parse_names_the_user_and_why() {
    let cases = [
        ("$argon2id$v=19$m=abc,t=2,p=1$c2FsdHNhbHQ$aGFzaA", "not a valid PHC string"),
        ("$argon2id$v=19$m=abc,t=2,p=1$c2FsdHNhbHRzYWx0MTIzNA$Yx2R8vGVgGbUvMu2HhQ8ZCjPBnTHFUkfDqIqKmnQ8hQ", "m"),
        ("$argon2id$v=19$m=19456,t=2,p=1", "salt"),
        ("$argon2d$v=19$m=1024,t=1,p=1$c2FsdHNhbHRzYWx0MTIzNA$Yx2R8vGVgGbUvMu2HhQ8ZCjPBnTHFUkfDqIqKmnQ8hQ", "argon2d"),
        ("$2b$04$tooshort", "bcrypt"),
        ("wonderland", "neither"),
    ];
    for (hash, expected) in cases {
        let mut config = config();
        config.users.insert("carol".into(), hash.into());
        let error = BasicAuth::from_config(&config).unwrap_err();
        assert!(
            matches!(&error, ConfigError::BadPasswordHash { user, .. } if user == "carol"),
            "{error}"
        );
        assert!(error.to_string().contains(expected), "{hash}: {error}");
    }
}

#[test]
fn impossible_user_lists_are_refused() {
    let mut config = config();
    config.users.insert("a:b".into(), bcrypt::hash("x", 4).unwrap());
    assert!(matches!(BasicAuth::from_config(&config), Err(ConfigError::BadUserName { .. })));
    let mut config = self::config();
    config.users.clear();
    assert!(matches!(BasicAuth::from_config(&config), Err(ConfigError::NoUsers)));
    let mut config = self::config();
    config.cache_entries = Some(0);
    assert!(matches!(BasicAuth::from_config(&config), Err(ConfigError::BadCacheSize { .. })));
    let mut config = self::config();
    config.realm = Some("say \"hi\"".into());
    assert!(matches!(BasicAuth::from_config(&config), Err(ConfigError::BadRealm { .. })));
}

#[test]
fn yaml_block_builds_a_cpu_heavy_authenticator() {
    let alice = argon2_hash(argon2::Algorithm::Argon2id, "wonderland");
    let yaml =
        format!("basic: {{ users: {{ alice: \"{alice}\" }}, realm: spillway, forward: x-user }}");
    let config: AuthConfig = yaml_serde::from_str(&yaml).unwrap();
    let auth = Authenticator::from_config(&config, std::path::Path::new(".")).unwrap();
    assert!(auth.is_cpu_heavy());
    assert_eq!(auth.strip_headers(), vec![HeaderName::from_static("x-user")]);
    assert_eq!(auth.credential_header(), http::header::AUTHORIZATION);
    assert_eq!(auth.authenticate(&basic("alice", "wonderland"), NOW).identity(), Some("alice"));
}
