//! Bearer JWTs verified against a JWK set, with time, issuer and audience checks and claims
//! exported as headers.
//!
//! Order of checks, each refusing with its own [`AuthFailure`]: the header's `alg` (never
//! `none`, must be configured), the key (by `kid`, else every key whose type fits the
//! algorithm — [`JwtKey::fits`]), the signature (by `jsonwebtoken`), then `exp` (required),
//! `nbf`, `iat` against the caller's `now` with the leeway, `iss`, `aud`, the identity claim,
//! and last the `require` rules, whose failure is a 403 rather than a 401. Claims are only
//! read after the signature verified.
//!
//! Validation takes `now_unix_secs` from the caller: tests use fixed instants, and the
//! gateway passes its wall clock once per request.

pub mod jwks;
pub mod verified;

use crate::config::{whole_seconds, JwtConfig, DEFAULT_LEEWAY_SECS};
use crate::error::ConfigError;
use crate::headers::{authorization_credentials, output_header_name, realm};
use crate::outcome::{bearer_challenge, AuthFailure, AuthOutcome, BearerError, Denial};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::{HeaderMap, HeaderName, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
pub use jwks::{JwksSource, JwtKey, KeySet, KeyType};
use serde_json::{Map, Value};
use std::path::Path;
use std::sync::Arc;

/// Tokens longer than this are refused before any parsing (a header, claims and an RSA-4096
/// signature fit in well under 4 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Parses an algorithm name exactly as RFC 7518 writes it; `None` for unknown names (and for
/// `none`, which is no algorithm).
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "HS256" => Algorithm::HS256,
        "HS384" => Algorithm::HS384,
        "HS512" => Algorithm::HS512,
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// A validated `jwt` block with its live JWK set.
#[derive(Debug)]
pub struct JwtAuth {
    jwks: Arc<JwksSource>,
    /// The configured algorithms, each with a `jsonwebtoken` validation that checks only the
    /// signature (times, issuer and audience are checked here, against the caller's `now`).
    algorithms: Vec<(Algorithm, Validation)>,
    issuer: Option<String>,
    audiences: Vec<String>,
    identity_claim: String,
    identity_header: Option<HeaderName>,
    claim_headers: Vec<(String, HeaderName)>,
    require: Vec<(String, Vec<String>)>,
    leeway_secs: u64,
    realm: String,
    /// Tokens whose signature verified recently (claims are still checked every time).
    verified: verified::VerifiedTokens,
}

impl JwtAuth {
    /// Validates the block and loads the JWK set (`jwks_file` relative to `base_dir` unless
    /// absolute). Fails when the file is unusable or none of its keys fits any configured
    /// algorithm.
    pub fn from_config(config: &JwtConfig, base_dir: &Path) -> Result<Self, ConfigError> {
        let path = base_dir.join(&config.jwks_file);
        let source = JwksSource::load(path)?;
        Self::with_source(config, Arc::new(source))
    }

    /// As [`Self::from_config`] with an already loaded source (e.g. one shared by routes).
    pub fn with_source(config: &JwtConfig, jwks: Arc<JwksSource>) -> Result<Self, ConfigError> {
        ensure_crypto_provider();
        let algorithms = parse_algorithms(&config.algorithms)?;
        let keys = jwks.keys();
        if !algorithms.iter().any(|alg| keys.serves(*alg)) {
            return Err(ConfigError::NoKeyForAlgorithms {
                path: jwks.path().to_owned(),
                algorithms: config.algorithms.join(", "),
            });
        }
        let leeway_secs =
            whole_seconds("jwt.leeway", config.leeway.as_deref(), DEFAULT_LEEWAY_SECS)?;
        let mut taken = vec![http::header::AUTHORIZATION];
        if config.forward.len() > 1 {
            return Err(ConfigError::ForwardNotOneClaim { count: config.forward.len() });
        }
        let (identity_claim, identity_header) = match config.forward.iter().next() {
            None => ("sub".to_owned(), None),
            Some((claim, header)) => (
                claim.clone(),
                Some(output_header_name(&format!("jwt.forward.{claim}"), header, &mut taken)?),
            ),
        };
        let claim_headers = config
            .claim_headers
            .iter()
            .map(|(claim, header)| {
                let key = format!("jwt.claim_headers.{claim}");
                Ok((claim.clone(), output_header_name(&key, header, &mut taken)?))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let require = config
            .require
            .iter()
            .map(|(claim, allowed)| {
                if allowed.is_empty() {
                    Err(ConfigError::EmptyRequirement { claim: claim.clone() })
                } else {
                    Ok((claim.clone(), allowed.clone()))
                }
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(JwtAuth {
            jwks,
            algorithms: algorithms.into_iter().map(|alg| (alg, signature_only(alg))).collect(),
            issuer: config.issuer.clone(),
            audiences: config.audience.as_ref().map(|a| a.to_vec()).unwrap_or_default(),
            identity_claim,
            identity_header,
            claim_headers,
            require,
            leeway_secs,
            realm: realm("jwt.realm", config.realm.as_deref())?,
            verified: verified::VerifiedTokens::new(
                config.verified_tokens.unwrap_or(verified::VERIFIED_TOKENS),
            ),
        })
    }

    /// Checks `Authorization: Bearer <token>`. Looks at the JWKS file first if a second has
    /// passed since the last look ([`JwksSource::refresh_if_due`]: one `stat`, and a read only
    /// when it changed; a failed reload is kept in [`JwksSource::last_error`] and the previous
    /// keys keep serving). Cost: one signature verification per fitting key tried (see the
    /// crate doc for measured numbers).
    pub fn authenticate(&self, headers: &HeaderMap, now_unix_secs: u64) -> AuthOutcome {
        // The outcome of a reload is kept by the source for the admin API; a request is
        // judged by whichever key set is current.
        let _ = self.jwks.refresh_if_due(now_unix_secs);
        match authorization_credentials(headers, "Bearer") {
            Ok(token) => self.verify_token(token, now_unix_secs),
            Err(reason) => self.refuse(reason),
        }
    }

    /// Verifies one token (the part after `Bearer `) at `now_unix_secs`, without touching the
    /// JWKS file.
    /// A token verified recently with the current key set skips the signature check (see
    /// [`verified`]); its claims are checked every time.
    pub fn verify_token(&self, token: &[u8], now_unix_secs: u64) -> AuthOutcome {
        if token.len() > MAX_TOKEN_BYTES {
            return self.refuse(AuthFailure::MalformedToken);
        }
        let key_set = self.jwks.keys();
        let digest = verified::digest(token);
        let claims = match self.verified.get(&digest, &key_set) {
            Some(claims) => claims,
            None => match self.verified_claims(token, &key_set) {
                Ok(claims) => {
                    let claims = Arc::new(claims);
                    self.verified.insert(digest, key_set, Arc::clone(&claims));
                    claims
                }
                Err(reason) => return self.refuse(reason),
            },
        };
        match self.check_claims(&claims, now_unix_secs) {
            Ok(Ok(outcome)) => outcome,
            Ok(Err((identity, reason))) => {
                let www_authenticate = bearer_challenge(
                    &self.realm,
                    Some((BearerError::InsufficientScope, reason.description())),
                );
                AuthOutcome::Forbidden { identity, reason, www_authenticate }
            }
            Err(reason) => self.refuse(reason),
        }
    }

    /// The live JWK set, for the gateway's file watcher ([`JwksSource::reload`]) and admin API.
    pub fn jwks(&self) -> &Arc<JwksSource> {
        &self.jwks
    }

    /// The headers this block sets upstream: the identity header, then the claim headers.
    pub fn forward_headers(&self) -> impl Iterator<Item = &HeaderName> {
        self.identity_header.iter().chain(self.claim_headers.iter().map(|(_, name)| name))
    }

    /// The leeway applied to `exp`, `nbf` and `iat`, in seconds.
    pub fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }

    fn refuse(&self, reason: AuthFailure) -> AuthOutcome {
        let error = match reason {
            AuthFailure::MissingCredentials => None,
            other => Some((BearerError::InvalidToken, other.description())),
        };
        AuthOutcome::Unauthenticated {
            reason,
            www_authenticate: bearer_challenge(&self.realm, error),
        }
    }

    /// Header checks, key choice and signature; the claims of a token that verified.
    fn verified_claims(
        &self,
        token: &[u8],
        key_set: &KeySet,
    ) -> Result<Map<String, Value>, AuthFailure> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthFailure::MalformedToken);
        }
        let header = parse_header(token)?;
        if header.alg.eq_ignore_ascii_case("none") {
            return Err(AuthFailure::AlgorithmNone);
        }
        let alg = parse_algorithm(&header.alg).ok_or(AuthFailure::AlgorithmNotAllowed)?;
        let (_, validation) = self
            .algorithms
            .iter()
            .find(|(configured, _)| *configured == alg)
            .ok_or(AuthFailure::AlgorithmNotAllowed)?;
        let keys = key_set.keys();
        // By `kid` when the token names one and the set has it; otherwise (no `kid`, or a
        // `kid` the set does not know) only keys without a `kid` are tried, so a token of a
        // rotated-away key never reaches another named key.
        let named: Vec<&JwtKey> = match &header.kid {
            Some(kid) => keys.iter().filter(|key| key.kid() == Some(kid.as_str())).collect(),
            None => Vec::new(),
        };
        let candidates: Vec<&JwtKey> = if header.kid.is_some() && !named.is_empty() {
            named
        } else if header.kid.is_some() {
            keys.iter().filter(|key| key.kid().is_none()).collect()
        } else {
            keys.iter().collect()
        };
        let mut failure = AuthFailure::NoMatchingKey;
        for key in candidates.into_iter().filter(|key| key.fits(alg)) {
            match jsonwebtoken::decode::<Map<String, Value>>(token, key.decoding_key(), validation)
            {
                Ok(data) => return Ok(data.claims),
                Err(error) => match error.kind() {
                    ErrorKind::InvalidSignature => failure = AuthFailure::BadSignature,
                    // A key the provider refuses (should not happen after `fits`): try others.
                    ErrorKind::InvalidKeyFormat
                    | ErrorKind::InvalidAlgorithm
                    | ErrorKind::InvalidRsaKey(_)
                    | ErrorKind::InvalidEcdsaKey
                    | ErrorKind::InvalidEddsaKey => {}
                    // Base64, JSON, `crit`…: the same for every key.
                    _ => return Err(AuthFailure::MalformedToken),
                },
            }
        }
        Err(failure)
    }

    /// Time, issuer, audience, identity; then the `require` rules (`Ok(Err(..))`: 403).
    #[allow(clippy::type_complexity)]
    fn check_claims(
        &self,
        claims: &Map<String, Value>,
        now_unix_secs: u64,
    ) -> Result<Result<AuthOutcome, (String, Denial)>, AuthFailure> {
        let now = i128::from(now_unix_secs);
        let leeway = i128::from(self.leeway_secs);
        let exp = claims.get("exp").ok_or(AuthFailure::MissingExpiry)?;
        let exp = numeric_date(exp).ok_or(AuthFailure::MissingExpiry)?;
        // Saturating: a float `exp` such as 1e300 floors to `i128::MAX` (found by fuzz/jwt).
        if now >= exp.saturating_add(leeway) {
            return Err(AuthFailure::Expired);
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = numeric_date(nbf).ok_or(AuthFailure::MalformedToken)?;
            if now + leeway < nbf {
                return Err(AuthFailure::NotYetValid);
            }
        }
        if let Some(iat) = claims.get("iat") {
            let iat = numeric_date(iat).ok_or(AuthFailure::MalformedToken)?;
            if iat > now + leeway {
                return Err(AuthFailure::IssuedInFuture);
            }
        }
        if let Some(issuer) = &self.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
                return Err(AuthFailure::WrongIssuer);
            }
        }
        if !self.audiences.is_empty() && !self.audience_matches(claims.get("aud")) {
            return Err(AuthFailure::WrongAudience);
        }
        let identity = match claims.get(&self.identity_claim) {
            Some(Value::String(text)) if !text.is_empty() => text.clone(),
            Some(Value::Number(number)) if number.is_i64() || number.is_u64() => number.to_string(),
            _ => return Err(AuthFailure::MissingIdentity),
        };
        let identity_value =
            HeaderValue::from_str(&identity).map_err(|_| AuthFailure::MissingIdentity)?;
        for (claim, allowed) in &self.require {
            if !claim_allows(claims.get(claim), allowed) {
                return Ok(Err((identity, Denial::ClaimNotAllowed { claim: claim.clone() })));
            }
        }
        let mut headers = Vec::with_capacity(1 + self.claim_headers.len());
        if let Some(name) = &self.identity_header {
            headers.push((name.clone(), identity_value));
        }
        for (claim, name) in &self.claim_headers {
            if let Some(value) = claims.get(claim).and_then(scalar_text) {
                // A value that cannot be a header (control characters) is left out; the
                // gateway strips the name from the incoming request either way.
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.push((name.clone(), value));
                }
            }
        }
        Ok(Ok(AuthOutcome::Authenticated { identity, claims: headers }))
    }

    fn audience_matches(&self, aud: Option<&Value>) -> bool {
        let accepted = |value: &Value| {
            value.as_str().is_some_and(|aud| self.audiences.iter().any(|a| a == aud))
        };
        match aud {
            Some(Value::String(_)) => aud.is_some_and(accepted),
            Some(Value::Array(values)) => values.iter().any(accepted),
            _ => false,
        }
    }
}

/// The JOSE header fields this crate reads. Unknown fields are ignored here; `jsonwebtoken`
/// re-reads the header and refuses unsupported `crit` extensions.
#[derive(serde::Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

fn parse_header(token: &[u8]) -> Result<RawHeader, AuthFailure> {
    let mut parts = token.split(|b| *b == b'.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthFailure::MalformedToken);
    };
    let json = URL_SAFE_NO_PAD.decode(header).map_err(|_| AuthFailure::MalformedToken)?;
    serde_json::from_slice(&json).map_err(|_| AuthFailure::MalformedToken)
}

/// A `jsonwebtoken` validation for one algorithm that checks the signature only.
fn signature_only(alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;
    validation
}

fn parse_algorithms(names: &[String]) -> Result<Vec<Algorithm>, ConfigError> {
    if names.is_empty() {
        return Err(ConfigError::NoAlgorithms);
    }
    let mut algorithms = Vec::with_capacity(names.len());
    for name in names {
        if name.trim().eq_ignore_ascii_case("none") {
            return Err(ConfigError::AlgorithmNone { value: name.clone() });
        }
        let alg = parse_algorithm(name.trim())
            .ok_or_else(|| ConfigError::UnknownAlgorithm { value: name.clone() })?;
        if !algorithms.contains(&alg) {
            algorithms.push(alg);
        }
    }
    Ok(algorithms)
}

/// A NumericDate (RFC 7519 §2): seconds since the epoch, an integer or a fraction (floored).
fn numeric_date(value: &Value) -> Option<i128> {
    if let Some(int) = value.as_i64() {
        return Some(i128::from(int));
    }
    if let Some(int) = value.as_u64() {
        return Some(i128::from(int));
    }
    // Float-to-int casts saturate; JSON has no NaN or infinity.
    value.as_f64().map(|float| float.floor() as i128)
}

/// String, number and boolean claims as text; `None` for objects, arrays and null.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

fn claim_allows(value: Option<&Value>, allowed: &[String]) -> bool {
    let scalar_allowed =
        |value: &Value| scalar_text(value).is_some_and(|text| allowed.contains(&text));
    match value {
        Some(Value::Array(values)) => values.iter().any(scalar_allowed),
        Some(value) => scalar_allowed(value),
        None => false,
    }
}

/// `jsonwebtoken` picks its crypto provider from its crate features and would panic on first
/// use if a build enabled both backends; installing the RustCrypto one at config time (when
/// none is chosen yet) keeps that out of the request path.
pub(crate) fn ensure_crypto_provider() {
    use jsonwebtoken::crypto::CryptoProvider;
    if CryptoProvider::try_get_default().is_none() {
        // Losing a race to another installer is fine: some provider is then installed.
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    }
}
