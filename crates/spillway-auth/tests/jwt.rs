//! JWT verification against real keys (RSA, P-256, Ed25519, HMAC) from `tests/data`, at fixed
//! instants: algorithm checks (wrong, `none`, confusion), times with leeway, issuer and
//! audience, tampering, key rotation through the JWKS file, claims forwarding and `require`.

#![allow(clippy::unwrap_used)]

use http::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use spillway_auth::{
    AuthFailure, AuthOutcome, Authenticator, ConfigError, Denial, JwksError, JwksSource, JwtAuth,
    JwtConfig, OneOrMany,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const NOW: u64 = 1_800_000_000;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name)
}

fn jwk(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(data(&format!("{name}.jwk.json"))).unwrap()).unwrap()
}

/// A 32-byte HMAC secret as an `oct` JWK.
const HMAC_SECRET: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

fn oct_jwk(kid: &str) -> Value {
    use base64::Engine as _;
    let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(HMAC_SECRET);
    json!({ "kty": "oct", "kid": kid, "k": k })
}

fn write_jwks(path: &Path, keys: &[Value]) {
    std::fs::write(path, serde_json::to_vec_pretty(&json!({ "keys": keys })).unwrap()).unwrap();
}

struct Fixture {
    _dir: tempfile::TempDir,
    jwks_path: PathBuf,
}

impl Fixture {
    fn new(keys: &[Value]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let jwks_path = dir.path().join("jwks.json");
        write_jwks(&jwks_path, keys);
        Fixture { _dir: dir, jwks_path }
    }

    fn auth(&self, config: JwtConfig) -> JwtAuth {
        JwtAuth::from_config(&config, self.jwks_path.parent().unwrap()).unwrap()
    }
}

fn config(algorithms: &[&str]) -> JwtConfig {
    JwtConfig {
        jwks_file: PathBuf::from("jwks.json"),
        issuer: Some("https://id.example".into()),
        audience: Some(OneOrMany::One("api".into())),
        algorithms: algorithms.iter().map(|a| (*a).to_owned()).collect(),
        forward: BTreeMap::from([("sub".to_owned(), "x-user-id".to_owned())]),
        leeway: Some("30s".into()),
        claim_headers: BTreeMap::from([
            ("tier".to_owned(), "x-tier".to_owned()),
            ("admin".to_owned(), "x-admin".to_owned()),
            ("org".to_owned(), "x-org".to_owned()),
        ]),
        require: BTreeMap::new(),
        realm: None,
        verified_tokens: None,
    }
}

fn claims() -> Value {
    json!({
        "sub": "user-1",
        "iss": "https://id.example",
        "aud": "api",
        "exp": NOW + 300,
        "iat": NOW - 10,
        "tier": "gold",
        "admin": false,
        "org": { "id": 7 },
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

enum Signer {
    Pem(&'static str),
    Secret(Vec<u8>),
}

fn sign(alg: Algorithm, signer: Signer, kid: Option<&str>, claims: &Value) -> String {
    let key = match signer {
        Signer::Pem(file) => {
            let pem = std::fs::read(data(file)).unwrap();
            match alg {
                Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem).unwrap(),
                Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem).unwrap(),
                _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
            }
        }
        Signer::Secret(secret) => EncodingKey::from_secret(&secret).unwrap(),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn rs256(kid: Option<&str>, claims: &Value) -> String {
    sign(Algorithm::RS256, Signer::Pem("rsa_a.pem"), kid, claims)
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        HeaderValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    headers
}

fn refusal(outcome: &AuthOutcome) -> Option<AuthFailure> {
    match outcome {
        AuthOutcome::Unauthenticated { reason, .. } => Some(*reason),
        _ => None,
    }
}

fn check(auth: &JwtAuth, token: &str, now: u64) -> AuthOutcome {
    auth.authenticate(&bearer(token), now)
}

fn b64(json: &Value) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(json).unwrap())
}

#[test]
fn rs256_token_is_accepted_with_identity_and_scalar_claims_forwarded() {
    let fixture = Fixture::new(&[jwk("rsa_a")]);
    let auth = fixture.auth(config(&["RS256"]));
    let outcome = check(&auth, &rs256(Some("rsa-a"), &claims()), NOW);
    assert_eq!(
        outcome,
        AuthOutcome::Authenticated {
            identity: "user-1".into(),
            claims: vec![
                (HeaderName::from_static("x-user-id"), HeaderValue::from_static("user-1")),
                (HeaderName::from_static("x-admin"), HeaderValue::from_static("false")),
                (HeaderName::from_static("x-tier"), HeaderValue::from_static("gold")),
            ],
        },
        "the object claim `org` is not forwarded"
    );
}

#[test]
fn token_without_kid_tries_the_keys_that_fit() {
    let fixture = Fixture::new(&[jwk("ec_p256"), jwk("rsa_b"), jwk("rsa_a")]);
    let auth = fixture.auth(config(&["RS256", "ES256"]));
    assert!(check(&auth, &rs256(None, &claims()), NOW).is_authenticated());
}

#[test]
fn algorithm_outside_the_configured_list_is_refused() {
    let fixture = Fixture::new(&[jwk("rsa_a")]);
    let auth = fixture.auth(config(&["RS256"]));
    let token = sign(Algorithm::RS384, Signer::Pem("rsa_a.pem"), Some("rsa-a"), &claims());
    assert_eq!(refusal(&check(&auth, &token, NOW)), Some(AuthFailure::AlgorithmNotAllowed));
    let token = sign(Algorithm::PS256, Signer::Pem("rsa_a.pem"), Some("rsa-a"), &claims());
    assert_eq!(refusal(&check(&auth, &token, NOW)), Some(AuthFailure::AlgorithmNotAllowed));
}

#[test]
fn alg_none_is_refused_in_any_spelling() {
    let fixture = Fixture::new(&[jwk("rsa_a")]);
    let auth = fixture.auth(config(&["RS256"]));
    for alg in ["none", "None", "NONE"] {
        let token = format!("{}.{}.", b64(&json!({ "alg": alg, "typ": "JWT" })), b64(&claims()));
        assert_eq!(refusal(&check(&auth, &token, NOW)), Some(AuthFailure::AlgorithmNone), "{alg}");
        // Even with a signature part present.
        let token = format!("{token}AAAA");
        assert_eq!(refusal(&check(&auth, &token, NOW)), Some(AuthFailure::AlgorithmNone), "{alg}");
    }
}

#[test]
fn hs256_signed_with_the_rsa_public_key_is_refused() {
    // The classic confusion attack: the verifier is told HS256 and handed the RSA public key
    // (which the attacker knows) as the HMAC secret. HS256 is even configured here.
    let fixture = Fixture::new(&[jwk("rsa_a")]);
    let auth = fixture.auth(config(&["RS256", "HS256"]));
    let public_pem = std::fs::read(data("rsa_a.pub.pem")).unwrap();
    for kid in [Some("rsa-a"), None] {
        let token = sign(Algorithm::HS256, Signer::Secret(public_pem.clone()), kid, &claims());
        assert_eq!(
            refusal(&check(&auth, &token, NOW)),
            Some(AuthFailure::NoMatchingKey),
            "kid {kid:?}"
        );
    }
    // Also with the key's raw modulus bytes, or the JWK's `n` text, as the secret.
    let n = jwk("rsa_a")["n"].as_str().unwrap().to_owned();
    let token = sign(Algorithm::HS256, Signer::Secret(n.into_bytes()), None, &claims());
    assert_eq!(refusal(&check(&auth, &token, NOW)), Some(AuthFailure::NoMatchingKey));
}

#[test]
fn ec_key_cannot_serve_another_curve() {
    let fixture = Fixture::new(&[jwk("ec_p256")]);
    let auth = fixture.auth(config(&["ES256", "ES384"]));
    let header = json!({ "alg": "ES384", "kid": "ec-1" });
    let token = format!("{}.{}.AAAA", b64(&header), b64(&claims()));
    assert_eq!(refusal(&check(&auth, &token, NOW)), Some(AuthFailure::NoMatchingKey));
    let token = sign(Algorithm::ES256, Signer::Pem("ec_p256.pem"), Some("ec-1"), &claims());
    assert!(check(&auth, &token, NOW).is_authenticated());
}

#[test]
fn es256_token_is_accepted() {
    let fixture = Fixture::new(&[jwk("rsa_a"), jwk("ec_p256")]);
    let auth = fixture.auth(config(&["RS256", "ES256"]));
    let token = sign(Algorithm::ES256, Signer::Pem("ec_p256.pem"), Some("ec-1"), &claims());
    assert_eq!(check(&auth, &token, NOW).identity(), Some("user-1"));
    let no_kid = sign(Algorithm::ES256, Signer::Pem("ec_p256.pem"), None, &claims());
    assert!(check(&auth, &no_kid, NOW).is_authenticated());
}

#[test]
fn eddsa_token_is_accepted() {
    let fixture = Fixture::new(&[jwk("ed25519")]);
    let auth = fixture.auth(config(&["EdDSA"]));
    let token = sign(Algorithm::EdDSA, Signer::Pem("ed25519.pem"), Some("ed-1"), &claims());
    assert_eq!(check(&auth, &token, NOW).identity(), Some("user-1"));
}

#[test]
fn hs256_with_an_oct_key_is_accepted_but_hs512_needs_a_longer_secret() {
    let fixture = Fixture::new(&[oct_jwk("shared")]);
    let auth = fixture.auth(config(&["HS256", "HS512"]));
    let token =
        sign(Algorithm::HS256, Signer::Secret(HMAC_SECRET.to_vec()), Some("shared"), &claims());
    assert!(check(&auth, &token, NOW).is_authenticated());
    let token =
        sign(Algorithm::HS512, Signer::Secret(HMAC_SECRET.to_vec()), Some("shared"), &claims());
    assert_eq!(refusal(&check(&auth, &token, NOW)), Some(AuthFailure::NoMatchingKey));
}

#[test]
fn expired_token_is_refused_after_the_leeway() {
    let fixture = Fixture::new(&[jwk("rsa_a")]);
    let auth = fixture.auth(config(&["RS256"]));
    let token = rs256(Some("rsa-a"), &with(claims(), "exp", json!(NOW - 29)));
    assert!(check(&auth, &token, NOW).is_authenticated(), "within the 30 s leeway");
    let token = rs256(Some("rsa-a"), &with(claims(), "exp", json!(NOW - 30)));
    assert_eq!(refusal(&check(&auth, &token, NOW)), Some(AuthFailure::Expired));
    // The same token, judged at earlier and later instants of a manual clock.
    let token = rs256(Some("rsa-a"), &claims());
    assert!(check(&auth, &token, NOW + 329).is_authenticated());
    assert_eq!(refusal(&check(&auth, &token, NOW + 330)), Some(AuthFailure::Expired));
}

#[test]
fn an_exp_beyond_i128_is_far_future_not_an_overflow() {
    // Found by fuzz/jwt: `exp: 1e300` floors to `i128::MAX`, and adding the leeway overflowed
    // (a panic with overflow checks on, "expired" by wrap-around without them).
    let fixture = Fixture::new(&[jwk("rsa_a")]);
    let auth = fixture.auth(config(&["RS256"]));
    let token = rs256(Some("rsa-a"), &with(claims(), "exp", json!(1e300)));
    assert!(check(&auth, &token, NOW).is_authenticated());
    let token = rs256(Some("rsa-a"), &with(claims(), "exp", json!(-1e300)));
    assert_eq!(refusal(&check(&auth, &token, NOW)), Some(AuthFailure::Expired));
}

#[test]
fn token_without_exp_is_refused() {
    let fixture = Fixture::new(&[jwk("rsa_a")]);
    let auth = fixture.auth(config(&["RS256"]));
    let token = rs256(Some("rsa-a"), &without(claims(), "exp"));
    assert_eq!(refusal(&check(&auth, &token, NOW)), Some(AuthFailure::MissingExpiry));
    let token = rs256(Some("rsa-a"), &with(claims(), "exp", json!("tomorrow")));
    assert_eq!(refusal(&check(&auth, &token, NOW)), Some(AuthFailure::MissingExpiry));
}

#[test]
fn nbf_in_the_future_is_refused_beyond_the_leeway() {
    let fixture = Fixture::new(&[jwk("rsa_a")]);
    let auth = fixture.auth(config(&["RS256"]));
    let token = rs256(Some("rsa-a"), &with(claims(), "nbf", json!(NOW + 60)));
    assert_eq!(refusal(&check(&auth, &token, NOW)), Some(AuthFailure::NotYetValid));
    assert!(check(&auth, &token, NOW + 30).is_authenticated(), "valid once within the leeway");
    let token = rs256(Some("rsa-a"), &with(claims(), "nbf", json!(NOW + 20)));
    assert!(check(&auth, &token, NOW).is_authenticated());
}

#[test]
fn iat_in_the_future_is_refused() {
    let fixture = Fixture::new(&[jwk("rsa_a")]);
    let auth = fixture.auth(config(&["RS256"]));
    let token = rs256(Some("rsa-a"), &with(claims(), "iat", json!(NOW + 120)));
    assert_eq!(refusal(&check(&auth, &token, NOW)), Some(AuthFailure::IssuedInFuture));
}

#[test]
fn wrong_issuer_is_refused() {
    let fixture = Fixture::new(&[jwk("rsa_a")]);
    let auth = fixture.auth(config(&["RS256"]));
    let token = rs256(Some("rsa-a"), &with(claims(), "iss", json!("https://evil.example")));
    assert_eq!(refusal(&check(&auth, &token, NOW)), Some(AuthFailure::WrongIssuer));
    let token = rs256(Some("rsa-a"), &without(claims(), "iss"));
    assert_eq!(refusal(&check(&auth, &token, NOW)), Some(AuthFailure::WrongIssuer));
}

#[test]
fn audience_must_name_a_configured_one_as_string_or_array() {
    let fixture = Fixture::new(&[jwk("rsa_a")]);
    let auth = fixture.auth(config(&["RS256"]));
    let token = rs256(Some("rsa-a"), &with(claims(), "aud", json!("other-api")));
    assert_eq!(refusal(&check(&auth, &token, NOW)), Some(AuthFailure::WrongAudience));
    let token = rs256(Some("rsa-a"), &with(claims(), "aud", json!(["web", "other"])));
    assert_eq!(refusal(&check(&auth, &token, NOW)), Some(AuthFailure::WrongAudience));
    let token = rs256(Some("rsa-a"), &without(claims(), "aud"));
    assert_eq!(refusal(&check(&auth, &token, NOW)), Some(AuthFailure::WrongAudience));
    let token = rs256(Some("rsa-a"), &with(claims(), "aud", json!(["web", "api"])));
    assert!(check(&auth, &token, NOW).is_authenticated());
}

#[test]
fn tampered_signature_or_payload_is_refused() {
    let fixture = Fixture::new(&[jwk("rsa_a")]);
    let auth = fixture.auth(config(&["RS256"]));
    let token = rs256(Some("rsa-a"), &claims());
    let (message, signature) = token.rsplit_once('.').unwrap();
    let mut bytes = signature.as_bytes().to_vec();
    bytes[10] = if bytes[10] == b'A' { b'B' } else { b'A' };
    let tampered = format!("{message}.{}", String::from_utf8(bytes).unwrap());
    assert_eq!(refusal(&check(&auth, &tampered, NOW)), Some(AuthFailure::BadSignature));

    let (header, _) = message.split_once('.').unwrap();
    let forged = format!("{header}.{}.{signature}", b64(&with(claims(), "sub", json!("admin"))));
    assert_eq!(refusal(&check(&auth, &forged, NOW)), Some(AuthFailure::BadSignature));

    // Signed by another RSA key that claims this key's kid.
    let other = sign(Algorithm::RS256, Signer::Pem("rsa_b.pem"), Some("rsa-a"), &claims());
    assert_eq!(refusal(&check(&auth, &other, NOW)), Some(AuthFailure::BadSignature));
}

#[test]
fn malformed_tokens_are_refused_as_malformed() {
    let fixture = Fixture::new(&[jwk("rsa_a")]);
    let auth = fixture.auth(config(&["RS256"]));
    for token in ["abc", "a.b", "a.b.c.d", "!!!.e30.AAAA", "e30.e30.AAAA"] {
        assert_eq!(
            refusal(&check(&auth, token, NOW)),
            Some(AuthFailure::MalformedToken),
            "{token}"
        );
    }
    let huge = "a".repeat(20_000);
    assert_eq!(refusal(&check(&auth, &huge, NOW)), Some(AuthFailure::MalformedToken));
}

#[test]
fn rotated_jwks_accepts_the_new_kid_after_reload_and_refuses_the_old() {
    let fixture = Fixture::new(&[jwk("rsa_a")]);
    let auth = fixture.auth(config(&["RS256"]));
    let old = rs256(Some("rsa-a"), &claims());
    let new = sign(Algorithm::RS256, Signer::Pem("rsa_b.pem"), Some("rsa-b"), &claims());
    assert!(auth.verify_token(old.as_bytes(), NOW).is_authenticated());
    assert_eq!(refusal(&auth.verify_token(new.as_bytes(), NOW)), Some(AuthFailure::NoMatchingKey));

    write_jwks(&fixture.jwks_path, &[jwk("rsa_b")]);
    assert_eq!(auth.jwks().reload().unwrap(), 1);
    assert!(auth.verify_token(new.as_bytes(), NOW).is_authenticated());
    assert_eq!(refusal(&auth.verify_token(old.as_bytes(), NOW)), Some(AuthFailure::NoMatchingKey));
}

#[test]
fn changed_jwks_file_is_picked_up_at_most_once_a_second() {
    let fixture = Fixture::new(&[jwk("rsa_a")]);
    let auth = fixture.auth(config(&["RS256"]));
    let source = auth.jwks();
    assert!(source.refresh_if_due(NOW).is_none(), "unchanged file: nothing to do");

    // Rewritten with an extra key (a new length), then with a new inode.
    write_jwks(&fixture.jwks_path, &[jwk("rsa_a"), jwk("rsa_b")]);
    assert!(source.refresh_if_due(NOW).is_none(), "already looked during this second");
    assert_eq!(source.refresh_if_due(NOW + 1).unwrap().unwrap(), 2);
    let new = sign(Algorithm::RS256, Signer::Pem("rsa_b.pem"), Some("rsa-b"), &claims());
    assert!(auth.authenticate(&bearer(&new), NOW + 1).is_authenticated());

    let replacement = fixture.jwks_path.with_extension("tmp");
    write_jwks(&replacement, &[jwk("rsa_b")]);
    std::fs::rename(&replacement, &fixture.jwks_path).unwrap();
    // `authenticate` looks at the file itself.
    let old = rs256(Some("rsa-a"), &claims());
    assert_eq!(refusal(&check(&auth, &old, NOW + 2)), Some(AuthFailure::NoMatchingKey));

    // A wall clock stepped back by more than a second does not postpone the next look.
    write_jwks(&fixture.jwks_path, &[jwk("rsa_a"), jwk("rsa_b"), jwk("ec_p256")]);
    assert_eq!(source.refresh_if_due(NOW - 60).unwrap().unwrap(), 3);
}

#[test]
fn bad_new_jwks_keeps_the_last_good_keys_and_reports_why() {
    let fixture = Fixture::new(&[jwk("rsa_a")]);
    let auth = fixture.auth(config(&["RS256"]));
    let token = rs256(Some("rsa-a"), &claims());

    std::fs::write(&fixture.jwks_path, b"{ \"keys\": [ {\"kty\": \"RSA\", \"n\": \"AQAB\"} ] }")
        .unwrap();
    let error = auth.jwks().reload().unwrap_err();
    assert!(matches!(error, JwksError::BadKey { index: 0, .. }), "{error}");
    assert!(error.to_string().contains("jwks.json"), "names the file: {error}");
    assert!(auth.jwks().last_error().is_some());
    assert!(auth.verify_token(token.as_bytes(), NOW).is_authenticated(), "old keys serve on");

    std::fs::write(&fixture.jwks_path, b"not json").unwrap();
    assert!(matches!(auth.jwks().reload(), Err(JwksError::NotAKeySet { .. })));
    std::fs::remove_file(&fixture.jwks_path).unwrap();
    assert!(matches!(auth.jwks().refresh_if_due(NOW + 5), Some(Err(JwksError::Unreadable { .. }))));
    assert!(auth.verify_token(token.as_bytes(), NOW).is_authenticated(), "old keys serve on");

    write_jwks(&fixture.jwks_path, &[jwk("rsa_a")]);
    assert_eq!(auth.jwks().refresh_if_due(NOW + 6).unwrap().unwrap(), 1);
    assert!(auth.jwks().last_error().is_none(), "a good reload clears the error");
}

#[test]
fn jwks_skips_encryption_and_unsupported_keys() {
    let mut enc = jwk("rsa_b");
    enc["use"] = json!("enc");
    let p521 = json!({ "kty": "EC", "crv": "P-521", "x": "AA", "y": "AA" });
    let fixture = Fixture::new(&[enc, p521, jwk("rsa_a")]);
    let source = JwksSource::load(&fixture.jwks_path).unwrap();
    assert_eq!(source.keys().keys().len(), 1);
    assert_eq!(source.keys().skipped(), 2);

    let only_enc = Fixture::new(&[with(jwk("rsa_b"), "use", json!("enc"))]);
    assert!(matches!(
        JwksSource::load(&only_enc.jwks_path),
        Err(JwksError::NoUsableKey { skipped: 1, .. })
    ));
}

#[test]
fn jwks_refuses_weak_or_malformed_keys() {
    let short_rsa = json!({ "kty": "RSA", "kid": "weak", "n": "AQAB", "e": "AQAB" });
    let fixture = Fixture::new(&[short_rsa]);
    let error = JwksSource::load(&fixture.jwks_path).unwrap_err();
    assert!(error.to_string().contains("at least 2048"), "{error}");
    assert!(error.to_string().contains("kid `weak`"), "{error}");

    let short_secret = json!({ "kty": "oct", "k": "c2hvcnQ" });
    let fixture = Fixture::new(&[short_secret]);
    assert!(matches!(JwksSource::load(&fixture.jwks_path), Err(JwksError::BadKey { .. })));

    let mut off_curve = jwk("ec_p256");
    off_curve["y"] = off_curve["x"].clone();
    let fixture = Fixture::new(&[off_curve]);
    let error = JwksSource::load(&fixture.jwks_path).unwrap_err();
    assert!(error.to_string().contains("not a point on the curve"), "{error}");

    let declared_wrong = with(jwk("rsa_a"), "alg", json!("HS256"));
    let fixture = Fixture::new(&[declared_wrong]);
    assert!(matches!(JwksSource::load(&fixture.jwks_path), Err(JwksError::BadKey { .. })));
}

#[test]
fn key_declaring_its_alg_serves_only_that_alg() {
    let fixture = Fixture::new(&[with(jwk("rsa_a"), "alg", json!("PS256"))]);
    let auth = fixture.auth(config(&["RS256", "PS256"]));
    let rs = rs256(Some("rsa-a"), &claims());
    assert_eq!(refusal(&check(&auth, &rs, NOW)), Some(AuthFailure::NoMatchingKey));
    let ps = sign(Algorithm::PS256, Signer::Pem("rsa_a.pem"), Some("rsa-a"), &claims());
    assert!(check(&auth, &ps, NOW).is_authenticated());
}

#[test]
fn missing_token_gets_a_bare_challenge_and_bad_token_an_invalid_token_one() {
    let fixture = Fixture::new(&[jwk("rsa_a")]);
    let mut config = config(&["RS256"]);
    config.realm = Some("api".into());
    let auth = fixture.auth(config);
    match auth.authenticate(&HeaderMap::new(), NOW) {
        AuthOutcome::Unauthenticated { reason, www_authenticate } => {
            assert_eq!(reason, AuthFailure::MissingCredentials);
            assert_eq!(www_authenticate, "Bearer realm=\"api\"");
        }
        other => panic!("{other:?}"),
    }
    let expired = rs256(Some("rsa-a"), &with(claims(), "exp", json!(NOW - 100)));
    match check(&auth, &expired, NOW) {
        AuthOutcome::Unauthenticated { www_authenticate, .. } => assert_eq!(
            www_authenticate,
            "Bearer realm=\"api\", error=\"invalid_token\", error_description=\"the token has expired\""
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn failed_claim_requirement_is_forbidden_not_unauthenticated() {
    let fixture = Fixture::new(&[jwk("rsa_a")]);
    let mut config = config(&["RS256"]);
    config.require =
        BTreeMap::from([("tier".to_owned(), vec!["gold".to_owned(), "silver".to_owned()])]);
    let auth = fixture.auth(config);
    assert!(check(&auth, &rs256(Some("rsa-a"), &claims()), NOW).is_authenticated());
    let arrayed = rs256(Some("rsa-a"), &with(claims(), "tier", json!(["bronze", "silver"])));
    assert!(check(&auth, &arrayed, NOW).is_authenticated(), "any element of an array claim");

    for tier in [json!("bronze"), json!(null), json!(["bronze"])] {
        let token = rs256(Some("rsa-a"), &with(claims(), "tier", tier.clone()));
        match check(&auth, &token, NOW) {
            AuthOutcome::Forbidden { identity, reason, www_authenticate } => {
                assert_eq!(identity, "user-1");
                assert_eq!(reason, Denial::ClaimNotAllowed { claim: "tier".into() });
                assert!(
                    www_authenticate.to_str().unwrap().contains("error=\"insufficient_scope\""),
                    "{www_authenticate:?}"
                );
            }
            other => panic!("tier {tier}: {other:?}"),
        }
    }
    let missing = rs256(Some("rsa-a"), &without(claims(), "tier"));
    assert_eq!(check(&auth, &missing, NOW).refusal_status(), Some(http::StatusCode::FORBIDDEN));
}

#[test]
fn identity_comes_from_the_configured_claim() {
    let fixture = Fixture::new(&[jwk("rsa_a")]);
    let mut config = config(&["RS256"]);
    config.forward = BTreeMap::from([("email".to_owned(), "x-user-email".to_owned())]);
    let auth = fixture.auth(config);
    let token = rs256(Some("rsa-a"), &with(claims(), "email", json!("a@example.com")));
    let outcome = check(&auth, &token, NOW);
    assert_eq!(outcome.identity(), Some("a@example.com"));
    let token = rs256(Some("rsa-a"), &claims());
    assert_eq!(refusal(&check(&auth, &token, NOW)), Some(AuthFailure::MissingIdentity));
    let token = rs256(Some("rsa-a"), &with(claims(), "email", json!("a\u{1}b")));
    assert_eq!(refusal(&check(&auth, &token, NOW)), Some(AuthFailure::MissingIdentity));
}

#[test]
fn config_errors_name_the_value_and_the_reason() {
    let fixture = Fixture::new(&[jwk("rsa_a")]);
    let dir = fixture.jwks_path.parent().unwrap();
    let error = JwtAuth::from_config(&config(&["RS256", "RS257"]), dir).unwrap_err();
    assert!(
        matches!(&error, ConfigError::UnknownAlgorithm { value } if value == "RS257"),
        "{error}"
    );
    let error = JwtAuth::from_config(&config(&["none"]), dir).unwrap_err();
    assert!(matches!(error, ConfigError::AlgorithmNone { .. }));
    let error = JwtAuth::from_config(&config(&[]), dir).unwrap_err();
    assert!(matches!(error, ConfigError::NoAlgorithms));
    let error = JwtAuth::from_config(&config(&["ES256"]), dir).unwrap_err();
    assert!(matches!(error, ConfigError::NoKeyForAlgorithms { .. }), "{error}");

    let mut missing = config(&["RS256"]);
    missing.jwks_file = PathBuf::from("nowhere.json");
    let error = JwtAuth::from_config(&missing, dir).unwrap_err();
    assert!(matches!(error, ConfigError::Jwks(JwksError::Unreadable { .. })), "{error}");
    assert!(error.to_string().contains("nowhere.json"), "{error}");

    std::fs::write(dir.join("broken.json"), b"{\"keys\": 3}").unwrap();
    let mut broken = config(&["RS256"]);
    broken.jwks_file = PathBuf::from("broken.json");
    let error = JwtAuth::from_config(&broken, dir).unwrap_err();
    assert!(
        error.to_string().contains("broken.json") && error.to_string().contains("keys"),
        "{error}"
    );

    let mut leeway = config(&["RS256"]);
    leeway.leeway = Some("30".into());
    let error = JwtAuth::from_config(&leeway, dir).unwrap_err();
    assert!(matches!(error, ConfigError::BadDuration { .. }), "{error}");

    let mut two = config(&["RS256"]);
    two.forward.insert("email".into(), "x-email".into());
    assert!(matches!(
        JwtAuth::from_config(&two, dir),
        Err(ConfigError::ForwardNotOneClaim { count: 2 })
    ));

    let mut header = config(&["RS256"]);
    header.claim_headers.insert("role".into(), "x-user-id".into());
    assert!(matches!(JwtAuth::from_config(&header, dir), Err(ConfigError::DuplicateHeader { .. })));
}

#[test]
fn yaml_block_of_the_issue_builds_and_lists_headers_to_strip() {
    let fixture = Fixture::new(&[jwk("rsa_a"), jwk("ec_p256")]);
    let yaml = r#"
jwt: { jwks_file: jwks.json, issuer: "https://id.example", audience: api,
       algorithms: [RS256, ES256, HS256], forward: { sub: x-user-id }, leeway: 30s,
       claim_headers: { tier: x-tier } }
"#;
    let config: spillway_auth::AuthConfig = yaml_serde::from_str(yaml).unwrap();
    let auth = Authenticator::from_config(&config, fixture.jwks_path.parent().unwrap()).unwrap();
    assert_eq!(
        auth.strip_headers(),
        vec![HeaderName::from_static("x-user-id"), HeaderName::from_static("x-tier")]
    );
    assert!(!auth.is_cpu_heavy());
    let outcome = auth.authenticate(&bearer(&rs256(Some("rsa-a"), &claims())), NOW);
    assert_eq!(outcome.identity(), Some("user-1"));

    let unknown: Result<spillway_auth::AuthConfig, _> =
        yaml_serde::from_str("jwt: { jwks_file: a, algorithms: [RS256], audiences: api }");
    assert!(unknown.is_err(), "unknown keys are refused");
}

#[test]
fn shared_source_serves_two_routes() {
    let fixture = Fixture::new(&[jwk("rsa_a")]);
    let source = Arc::new(JwksSource::load(&fixture.jwks_path).unwrap());
    let strict = JwtAuth::with_source(&config(&["RS256"]), Arc::clone(&source)).unwrap();
    let mut other = config(&["RS256"]);
    other.audience = Some(OneOrMany::Many(vec!["web".into()]));
    let web = JwtAuth::with_source(&other, source).unwrap();
    let token = rs256(Some("rsa-a"), &claims());
    assert!(check(&strict, &token, NOW).is_authenticated());
    assert_eq!(refusal(&check(&web, &token, NOW)), Some(AuthFailure::WrongAudience));
}
