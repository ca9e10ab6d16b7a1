//! Request authentication for the gateway's edge: API keys, bearer JWTs (JWKS) and HTTP Basic,
//! one method per route.
//!
//! The crate is pure and I/O-light, like `spillway-core`: it takes the request's
//! [`http::HeaderMap`] and the caller's `now` (Unix seconds) and returns an [`AuthOutcome`];
//! its only I/O is reading the JWKS file at start-up and when it changes. It never panics on a
//! request, and it does not decide responses beyond what the outcome carries (status and
//! `WWW-Authenticate`), which the gateway turns into a response in one place.
//!
//! ```
//! use spillway_auth::{AuthConfig, AuthOutcome, Authenticator, ApiKeysConfig, ApiKeyEntry, hash_api_key};
//! use http::{HeaderMap, HeaderValue};
//!
//! let config = AuthConfig {
//!     api_keys: Some(ApiKeysConfig {
//!         header: "x-api-key".into(),
//!         keys: vec![ApiKeyEntry { id: "mobile".into(), sha256: hash_api_key("s3cret-key") }],
//!         forward: Some("x-api-key-id".into()),
//!         realm: None,
//!     }),
//!     ..AuthConfig::default()
//! };
//! let auth = Authenticator::from_config(&config, std::path::Path::new(".")).unwrap();
//! // The gateway strips these from every incoming request first.
//! assert_eq!(auth.strip_headers(), vec![http::HeaderName::from_static("x-api-key-id")]);
//!
//! let mut headers = HeaderMap::new();
//! headers.insert("x-api-key", HeaderValue::from_static("s3cret-key"));
//! match auth.authenticate(&headers, 1_700_000_000) {
//!     AuthOutcome::Authenticated { identity, claims } => {
//!         assert_eq!(identity, "mobile");
//!         assert_eq!(claims[0].1, "mobile"); // x-api-key-id: mobile
//!     }
//!     refused => panic!("{:?} {:?}", refused.refusal_status(), refused),
//! }
//! ```
//!
//! Methods:
//! - [`ApiKeyAuth`]: keys stored as SHA-256 hex; the presented key is hashed and compared in
//!   constant time (`subtle`) with every configured hash, no early exit.
//! - [`JwtAuth`]: HS256/384/512, RS256/384/512, PS256/384/512, ES256/384, EdDSA (Ed25519), keys
//!   from a JWKS file ([`JwksSource`], re-read when it changes, the last good set kept on a bad
//!   file). `alg: none` is refused, and so is algorithm confusion: the header's `alg` must be
//!   configured **and** fit the key's type ([`JwtKey::fits`]), so an RSA public key can never
//!   serve as an HMAC secret.
//! - [`BasicAuth`]: argon2id/argon2i (PHC strings) and bcrypt hashes; unknown users cost a
//!   stand-in verification; a TTL cache of recent successes keyed by an HMAC of the
//!   credentials. [`BasicAuth::verify_basic`] is CPU-heavy (see its doc): run it off the async
//!   workers.
//!
//! Responses: `Unauthenticated` → 401 with `Bearer realm=…, error="invalid_token",
//! error_description=…` (RFC 6750; bare `Bearer realm=…` when no token was sent), `Basic
//! realm=…, charset="UTF-8"` (RFC 7617) or `ApiKey realm=…, header=…` (an unregistered scheme:
//! see [`api_key_challenge`]); `Forbidden` (a JWT `require` rule failed) → 403 with
//! `error="insufficient_scope"`.
//!
//! Crypto backend: `jsonwebtoken` 12 has two, `aws_lc_rs` and `rust_crypto`, and no `ring` one.
//! The workspace runs rustls on `ring` and keeps aws-lc-rs out (its build script costs ~47 s
//! here and two providers make rustls demand an explicit choice), so this crate uses
//! `rust_crypto` (the RustCrypto `rsa`, `p256`, `p384`, `ed25519-dalek`, `hmac` crates, pure
//! Rust). Only verification with public keys (and HMAC) runs here; the RustCrypto `rsa`
//! timing advisory (RUSTSEC-2023-0071, "Marvin") concerns private-key operations, which the
//! gateway never performs.
//!
//! Measured verification cost (release, this 2-core machine, `cargo bench -p spillway-auth`):
//! see `benches/verify.rs` and the numbers in ARCHITECTURE.md.

#![forbid(unsafe_code)]

pub mod api_key;
pub mod basic;
pub mod config;
pub mod error;
mod headers;
pub mod jwt;
pub mod outcome;

pub use api_key::{hash_api_key, ApiKeyAuth};
pub use basic::{BasicAuth, BasicCredentials};
pub use config::{ApiKeyEntry, ApiKeysConfig, AuthConfig, BasicConfig, JwtConfig, OneOrMany};
pub use error::{ConfigError, JwksError};
pub use jwt::{JwksSource, JwtAuth, JwtKey, KeySet, KeyType};
pub use outcome::{
    api_key_challenge, basic_challenge, bearer_challenge, AuthFailure, AuthOutcome, BearerError,
    Denial,
};

use http::{HeaderMap, HeaderName};
use std::path::Path;

/// One route's validated authentication.
#[derive(Debug)]
pub enum Authenticator {
    /// Bearer JWTs.
    Jwt(JwtAuth),
    /// Static API keys.
    ApiKeys(ApiKeyAuth),
    /// HTTP Basic.
    Basic(BasicAuth),
}

impl Authenticator {
    /// Validates an `auth:` block (exactly one method). Relative file paths (`jwks_file`) are
    /// resolved against `base_dir`, the directory of the config file. Reads the JWKS file;
    /// otherwise no I/O.
    pub fn from_config(config: &AuthConfig, base_dir: &Path) -> Result<Self, ConfigError> {
        let set: Vec<&str> = [
            config.jwt.as_ref().map(|_| "jwt"),
            config.api_keys.as_ref().map(|_| "api_keys"),
            config.basic.as_ref().map(|_| "basic"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if set.len() > 1 {
            return Err(ConfigError::SeveralMethods { found: set.join(", ") });
        }
        if let Some(jwt) = &config.jwt {
            return Ok(Authenticator::Jwt(JwtAuth::from_config(jwt, base_dir)?));
        }
        if let Some(api_keys) = &config.api_keys {
            return Ok(Authenticator::ApiKeys(ApiKeyAuth::from_config(api_keys)?));
        }
        if let Some(basic) = &config.basic {
            return Ok(Authenticator::Basic(BasicAuth::from_config(basic)?));
        }
        Err(ConfigError::NoMethod)
    }

    /// Checks a request's credentials at `now_unix_secs` (the wall clock, Unix seconds).
    /// Cheap for API keys and JWTs; **CPU-heavy for Basic on a cache miss** (see
    /// [`Self::is_cpu_heavy`] and [`BasicAuth::verify_basic`]).
    pub fn authenticate(&self, headers: &HeaderMap, now_unix_secs: u64) -> AuthOutcome {
        match self {
            Authenticator::Jwt(jwt) => jwt.authenticate(headers, now_unix_secs),
            Authenticator::ApiKeys(keys) => keys.authenticate(headers),
            Authenticator::Basic(basic) => basic.authenticate(headers, now_unix_secs),
        }
    }

    /// Convenience for a request split into parts.
    pub fn authenticate_parts(
        &self,
        parts: &http::request::Parts,
        now_unix_secs: u64,
    ) -> AuthOutcome {
        self.authenticate(&parts.headers, now_unix_secs)
    }

    /// Whether [`Self::authenticate`] may spend tens of milliseconds of CPU (Basic), so the
    /// gateway should check [`BasicAuth::cached`] first and run misses on a blocking pool.
    pub fn is_cpu_heavy(&self) -> bool {
        matches!(self, Authenticator::Basic(_))
    }

    /// The headers this route sets from identities and claims. The gateway must remove them
    /// from every incoming request on the route (authenticated or not), so a client can never
    /// send its own `x-user-id`.
    pub fn strip_headers(&self) -> Vec<HeaderName> {
        match self {
            Authenticator::Jwt(jwt) => jwt.forward_headers().cloned().collect(),
            Authenticator::ApiKeys(keys) => keys.forward_header().cloned().into_iter().collect(),
            Authenticator::Basic(basic) => basic.forward_header().cloned().into_iter().collect(),
        }
    }

    /// The header carrying the credentials (`authorization`, or the API key header), which the
    /// gateway may remove before forwarding so upstreams never see secrets.
    pub fn credential_header(&self) -> HeaderName {
        match self {
            Authenticator::ApiKeys(keys) => keys.credential_header().clone(),
            Authenticator::Jwt(_) | Authenticator::Basic(_) => http::header::AUTHORIZATION,
        }
    }
}

/// [`Authenticator::strip_headers`] of several routes at once, without repeats: what a gateway
/// strips when it removes forward headers once for all routes.
pub fn strip_headers<'a>(
    authenticators: impl IntoIterator<Item = &'a Authenticator>,
) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = Vec::new();
    for authenticator in authenticators {
        for name in authenticator.strip_headers() {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}
