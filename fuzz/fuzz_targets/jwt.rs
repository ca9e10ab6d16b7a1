//! Bearer-token authentication (`spillway_auth::JwtAuth`): `Authorization: Bearer <fuzz>` on a
//! route configured with HS256, RS256, ES256 and EdDSA keys, an issuer, an audience, a
//! forwarded identity, a claim header and a `require` rule. Any panic is a bug (the request
//! path never panics).
//!
//! The first byte chooses the input (even: raw, odd: signed):
//! - raw: the rest, as is, after `Bearer ` (and given to `verify_token`): the outcome is the
//!   same both ways (the seed corpus holds real tokens in this form);
//! - signed (`Signed`, built with `arbitrary` from the rest): a JOSE header and claims the target builds from the fuzzer's choices and signs
//!   with HMAC-SHA256 under the configured secret (or a wrong one), so the claim checks
//!   (times, issuer, audience, identity, `require`) are reached. A token is accepted only when
//!   it is signed with the configured secret *and* its header says `HS256` (no forgery, no
//!   algorithm confusion), and its claims pass every check the configuration asks for.

#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};
use sha2::Sha256;
use spillway_auth::{AuthOutcome, JwtAuth, JwtConfig, OneOrMany};
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The wall clock the tokens are judged at (Unix seconds).
const NOW: u64 = 1_800_000_000;
/// The route's HMAC secret (the `oct` key `hs` of the JWK set).
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const ISSUER: &str = "https://id.example";
const AUDIENCE: &str = "api";
/// The default leeway on `exp`, `nbf` and `iat`.
const LEEWAY: i128 = 30;

fn auth() -> &'static JwtAuth {
    static AUTH: OnceLock<JwtAuth> = OnceLock::new();
    AUTH.get_or_init(|| {
        let data = |text: &str| -> Value { serde_json::from_str(text).expect("test JWK") };
        let keys = json!({ "keys": [
            data(include_str!("../../crates/spillway-auth/tests/data/rsa_a.jwk.json")),
            data(include_str!("../../crates/spillway-auth/tests/data/ec_p256.jwk.json")),
            data(include_str!("../../crates/spillway-auth/tests/data/ed25519.jwk.json")),
            { "kty": "oct", "kid": "hs", "k": URL_SAFE_NO_PAD.encode(SECRET) },
        ]});
        let dir = std::env::temp_dir().join(format!("spillway-fuzz-jwt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(dir.join("jwks.json"), keys.to_string()).expect("write JWKS");
        let config = JwtConfig {
            jwks_file: "jwks.json".into(),
            issuer: Some(ISSUER.into()),
            audience: Some(OneOrMany::One(AUDIENCE.into())),
            algorithms: ["HS256", "RS256", "ES256", "EdDSA"].map(String::from).to_vec(),
            forward: BTreeMap::from([("sub".into(), "x-user-id".into())]),
            leeway: None,
            claim_headers: BTreeMap::from([("tier".into(), "x-tier".into())]),
            require: BTreeMap::from([("tier".into(), vec!["gold".into(), "silver".into()])]),
            realm: None,
            // The default cache of verified signatures: a token seen again skips the check.
            verified_tokens: None,
        };
        JwtAuth::from_config(&config, &dir).expect("valid JWT config")
    })
}

#[derive(Debug, Arbitrary)]
struct Signed {
    alg: Alg,
    kid: Option<Kid>,
    crit: bool,
    claims: Vec<(Claim, Json)>,
    /// Replaces the claims' JSON with these bytes (malformed or duplicate-key JSON).
    raw_claims: Option<Vec<u8>>,
    signature: Signature,
}

#[derive(Debug, Arbitrary)]
enum Alg {
    Hs256,
    Hs384,
    Rs256,
    Es256,
    EdDsa,
    None,
    NoneMixedCase,
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum Kid {
    Hs,
    RsaA,
    Ec,
    Unknown,
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum Claim {
    Exp,
    Nbf,
    Iat,
    Iss,
    Aud,
    Sub,
    Tier,
    Other(String),
}

#[derive(Debug, Arbitrary)]
enum Json {
    Int(i64),
    UInt(u64),
    Float(f64),
    /// `NOW` plus this many seconds: times near the edges of validity.
    NearNow(i16),
    Str(String),
    Issuer,
    Audience,
    Gold,
    Bool(bool),
    Null,
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

#[derive(Debug, Arbitrary)]
enum Signature {
    /// HMAC-SHA256 with the route's secret.
    Secret,
    /// HMAC-SHA256 with another key.
    OtherKey(Vec<u8>),
    /// The right signature with its last byte changed.
    Flipped,
    /// These bytes, base64url-encoded.
    Bytes(Vec<u8>),
}

impl Json {
    fn value(&self, depth: u8) -> Value {
        match self {
            Json::Int(n) => json!(n),
            Json::UInt(n) => json!(n),
            Json::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Json::NearNow(delta) => json!(NOW as i64 + i64::from(*delta)),
            Json::Str(s) => json!(s),
            Json::Issuer => json!(ISSUER),
            Json::Audience => json!(AUDIENCE),
            Json::Gold => json!("gold"),
            Json::Bool(b) => json!(b),
            Json::Null => Value::Null,
            Json::Array(items) if depth < 4 => {
                Value::Array(items.iter().map(|j| j.value(depth + 1)).collect())
            }
            Json::Object(items) if depth < 4 => {
                Value::Object(items.iter().map(|(k, j)| (k.clone(), j.value(depth + 1))).collect())
            }
            Json::Array(_) | Json::Object(_) => Value::Null,
        }
    }
}

fuzz_target!(|data: &[u8]| match data {
    [mode, token @ ..] if mode % 2 == 0 => {
        let _ = authenticate(token);
    }
    [_, rest @ ..] => {
        if let Ok(signed) = Signed::arbitrary_take_rest(Unstructured::new(rest)) {
            signed_token(&signed);
        }
    }
    [] => {}
});

/// Authenticates `Bearer <token>`; also checks that the header path and `verify_token` agree
/// (the second call may be answered from the cache of verified signatures).
fn authenticate(token: &[u8]) -> AuthOutcome {
    let direct = auth().verify_token(token, NOW);
    let mut value = b"Bearer ".to_vec();
    value.extend_from_slice(token);
    if let Ok(value) = HeaderValue::from_bytes(&value) {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::AUTHORIZATION, value);
        let via_header = auth().authenticate(&headers, NOW);
        // The header form trims surrounding white space and refuses an empty token.
        if !token.is_empty() && token.trim_ascii() == token {
            assert_eq!(format!("{via_header:?}"), format!("{direct:?}"));
        }
    }
    direct
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn signed_token(signed: &Signed) {
    let alg = match &signed.alg {
        Alg::Hs256 => "HS256".to_string(),
        Alg::Hs384 => "HS384".to_string(),
        Alg::Rs256 => "RS256".to_string(),
        Alg::Es256 => "ES256".to_string(),
        Alg::EdDsa => "EdDSA".to_string(),
        Alg::None => "none".to_string(),
        Alg::NoneMixedCase => "NoNe".to_string(),
        Alg::Other(s) => s.clone(),
    };
    let mut header = json!({ "alg": alg, "typ": "JWT" });
    if let Some(kid) = &signed.kid {
        header["kid"] = json!(match kid {
            Kid::Hs => "hs",
            Kid::RsaA => "rsa-a",
            Kid::Ec => "ec-1",
            Kid::Unknown => "rotated-away",
            Kid::Other(s) => s.as_str(),
        });
    }
    if signed.crit {
        header["crit"] = json!(["exp"]);
    }
    let claims: Map<String, Value> = signed
        .claims
        .iter()
        .take(16)
        .map(|(claim, value)| {
            let name = match claim {
                Claim::Exp => "exp",
                Claim::Nbf => "nbf",
                Claim::Iat => "iat",
                Claim::Iss => "iss",
                Claim::Aud => "aud",
                Claim::Sub => "sub",
                Claim::Tier => "tier",
                Claim::Other(s) => s.as_str(),
            };
            (name.to_string(), value.value(0))
        })
        .collect();
    let claims_json = match &signed.raw_claims {
        Some(bytes) => bytes.clone(),
        None => serde_json::to_vec(&claims).expect("a JSON value serializes"),
    };
    let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(&claims_json));
    let right = hmac_sha256(SECRET, token.as_bytes());
    let signature = match &signed.signature {
        Signature::Secret => right.clone(),
        Signature::OtherKey(key) => hmac_sha256(key, token.as_bytes()),
        Signature::Flipped => {
            let mut s = right.clone();
            if let Some(last) = s.last_mut() {
                *last ^= 1;
            }
            s
        }
        Signature::Bytes(bytes) => bytes.clone(),
    };
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(&signature));

    let outcome = authenticate(token.as_bytes());
    let AuthOutcome::Authenticated { identity, claims: forwarded } = &outcome else {
        return;
    };
    // Only the route's secret signs, and only under `alg: HS256`.
    assert_eq!(signature, right, "a token with a wrong signature was accepted: {token}");
    assert_eq!(alg, "HS256", "algorithm confusion: {token}");
    assert!(!signed.crit, "an unsupported `crit` extension was accepted: {token}");
    // The claims the signature covers pass every check.
    let claims: Map<String, Value> =
        serde_json::from_slice(&claims_json).expect("accepted claims are a JSON object");
    let time = |name: &str| {
        claims.get(name).map(|v| {
            v.as_i64()
                .map(i128::from)
                .or_else(|| v.as_u64().map(i128::from))
                .or_else(|| v.as_f64().map(|f| f.floor() as i128))
                .expect("accepted time claims are numbers")
        })
    };
    let now = i128::from(NOW);
    let exp = time("exp").expect("accepted tokens expire");
    assert!(now < exp.saturating_add(LEEWAY), "expired token accepted: {token}");
    if let Some(nbf) = time("nbf") {
        assert!(nbf <= now + LEEWAY, "not-yet-valid token accepted: {token}");
    }
    if let Some(iat) = time("iat") {
        assert!(iat <= now + LEEWAY, "token issued in the future accepted: {token}");
    }
    assert_eq!(claims.get("iss"), Some(&json!(ISSUER)));
    let audience_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == AUDIENCE,
        Some(Value::Array(items)) => items.iter().any(|a| a == AUDIENCE),
        _ => false,
    };
    assert!(audience_ok, "wrong audience accepted: {token}");
    let tier_ok = |v: &Value| v == "gold" || v == "silver";
    let tier = claims.get("tier");
    assert!(
        tier.is_some_and(|t| tier_ok(t) || t.as_array().is_some_and(|a| a.iter().any(tier_ok))),
        "`require: tier` not enforced: {token}"
    );
    assert!(!identity.is_empty());
    assert_eq!(forwarded.first().map(|(name, _)| name.as_str()), Some("x-user-id"));
    assert_eq!(forwarded[0].1.as_bytes(), identity.as_bytes());
}
