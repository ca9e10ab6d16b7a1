//! The cost of one verification per method, to size where each may run: API keys and JWTs on
//! the request thread, Basic (argon2/bcrypt) on a blocking pool, its cache hit on the request
//! thread. Keys are the test keys of `tests/data`; password hashes use production parameters
//! (argon2 crate defaults: argon2id m=19 MiB t=2 p=1; bcrypt cost 10 and 12).

#![allow(clippy::unwrap_used, missing_docs)]

use argon2::{Argon2, PasswordHasher};
use base64::Engine as _;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use spillway_auth::{
    hash_api_key, ApiKeyAuth, ApiKeyEntry, ApiKeysConfig, BasicAuth, BasicConfig, JwtAuth,
    JwtConfig,
};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};

const NOW: u64 = 1_800_000_000;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn api_keys(c: &mut Criterion) {
    let keys = (0..10)
        .map(|i| ApiKeyEntry {
            id: format!("client-{i}"),
            sha256: hash_api_key(&format!("key-{i}")),
        })
        .collect();
    let auth = ApiKeyAuth::from_config(&ApiKeysConfig {
        header: "x-api-key".into(),
        keys,
        forward: Some("x-api-key-id".into()),
        realm: None,
    })
    .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("x-api-key", HeaderValue::from_static("key-7"));
    c.bench_function("api_key/10_keys", |b| b.iter(|| black_box(auth.authenticate(&headers))));
}

fn jwt(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let jwk = |name: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(data(&format!("{name}.jwk.json"))).unwrap()).unwrap()
    };
    let secret = b"0123456789abcdef0123456789abcdef";
    let oct = json!({
        "kty": "oct", "kid": "hs",
        "k": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret),
    });
    let set = json!({ "keys": [jwk("rsa_a"), jwk("ec_p256"), jwk("ed25519"), oct] });
    std::fs::write(dir.path().join("jwks.json"), serde_json::to_vec(&set).unwrap()).unwrap();
    let config = JwtConfig {
        jwks_file: "jwks.json".into(),
        issuer: Some("https://id.example".into()),
        audience: Some(spillway_auth::OneOrMany::One("api".into())),
        algorithms: ["RS256", "PS256", "ES256", "EdDSA", "HS256"].map(String::from).to_vec(),
        forward: BTreeMap::from([("sub".into(), "x-user-id".into())]),
        leeway: None,
        claim_headers: BTreeMap::from([("tier".into(), "x-tier".into())]),
        require: BTreeMap::new(),
        realm: None,
        // The signature is checked on every call: what a token's first request costs.
        verified_tokens: Some(0),
    };
    let auth = JwtAuth::from_config(&config, dir.path()).unwrap();
    // With the default memory of verified tokens: what a token sent again costs.
    let remembering =
        JwtAuth::from_config(&JwtConfig { verified_tokens: None, ..config }, dir.path()).unwrap();
    let claims = json!({ "sub": "user-1", "iss": "https://id.example", "aud": "api",
                         "exp": NOW + 300, "iat": NOW, "tier": "gold" });
    let pem = |name: &str| std::fs::read(data(name)).unwrap();
    let cases = [
        ("RS256", Algorithm::RS256, EncodingKey::from_rsa_pem(&pem("rsa_a.pem")).unwrap(), "rsa-a"),
        ("PS256", Algorithm::PS256, EncodingKey::from_rsa_pem(&pem("rsa_a.pem")).unwrap(), "rsa-a"),
        ("ES256", Algorithm::ES256, EncodingKey::from_ec_pem(&pem("ec_p256.pem")).unwrap(), "ec-1"),
        ("EdDSA", Algorithm::EdDSA, EncodingKey::from_ed_pem(&pem("ed25519.pem")).unwrap(), "ed-1"),
        ("HS256", Algorithm::HS256, EncodingKey::from_secret(secret).unwrap(), "hs"),
    ];
    for (name, alg, key, kid) in cases {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        let token = jsonwebtoken::encode(&header, &claims, &key).unwrap();
        assert!(auth.verify_token(token.as_bytes(), NOW).is_authenticated(), "{name}");
        c.bench_function(&format!("jwt/{name}"), |b| {
            b.iter(|| black_box(auth.verify_token(black_box(token.as_bytes()), NOW)))
        });
        assert!(remembering.verify_token(token.as_bytes(), NOW).is_authenticated(), "{name}");
        c.bench_function(&format!("jwt/{name}/again"), |b| {
            b.iter(|| black_box(remembering.verify_token(black_box(token.as_bytes()), NOW)))
        });
    }
}

fn basic(c: &mut Criterion) {
    let argon2 =
        Argon2::default().hash_password_with_salt(b"wonderland", b"saltsaltsalt1234").unwrap();
    let users = BTreeMap::from([
        ("alice".to_owned(), argon2.to_string()),
        ("bob10".to_owned(), bcrypt::hash("builder", 10).unwrap()),
        ("bob12".to_owned(), bcrypt::hash("builder", 12).unwrap()),
    ]);
    let config = |ttl: &str| BasicConfig {
        users: users.clone(),
        realm: None,
        forward: None,
        cache_ttl: Some(ttl.into()),
        cache_entries: None,
    };
    let uncached = BasicAuth::from_config(&config("0s")).unwrap();
    let cached = BasicAuth::from_config(&config("60s")).unwrap();
    let header = |user: &str, password: &str| {
        let mut headers = HeaderMap::new();
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::try_from(format!("Basic {encoded}")).unwrap(),
        );
        headers
    };
    let mut group = c.benchmark_group("basic");
    group.sample_size(10);
    for (name, user, password) in [
        ("argon2id_default", "alice", "wonderland"),
        ("bcrypt_cost10", "bob10", "builder"),
        ("bcrypt_cost12", "bob12", "builder"),
        ("unknown_user", "mallory", "x"),
    ] {
        let credentials = uncached.parse_credentials(&header(user, password)).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| black_box(uncached.verify_basic(&credentials, NOW)))
        });
    }
    group.finish();
    let credentials = cached.parse_credentials(&header("alice", "wonderland")).unwrap();
    assert!(cached.verify_basic(&credentials, NOW).is_authenticated());
    c.bench_function("basic/cache_hit", |b| b.iter(|| black_box(cached.cached(&credentials, NOW))));
}

criterion_group!(benches, api_keys, jwt, basic);
criterion_main!(benches);
