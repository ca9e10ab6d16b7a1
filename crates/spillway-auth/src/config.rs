//! The `auth:` block as written in YAML: plain serde types, validated by
//! [`crate::Authenticator::from_config`].
//!
//! Values stay as written (algorithm names, hex, header names, durations as strings) so that
//! validation can name the key and the value when it refuses one; the gateway deserializes
//! these types with its own YAML reader or builds them itself.
//!
//! ```yaml
//! auth:
//!   jwt: { jwks_file: jwks.json, issuer: https://id.example, audience: api,
//!          algorithms: [RS256, ES256], forward: { sub: x-user-id }, leeway: 30s,
//!          claim_headers: { tier: x-tier }, require: { tier: [gold, silver] } }
//!   # or: api_keys: { header: x-api-key, keys: [ { id: mobile, sha256: "<hex>" } ], forward: x-api-key-id }
//!   # or: basic: { users: { alice: "$argon2id$…" }, realm: spillway, forward: x-user }
//! ```

use crate::error::ConfigError;
use serde::{Deserialize, Serialize};
use spillway_core::deadline::{parse_duration, BareNumber};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The realm used when a method's `realm` is not set.
pub const DEFAULT_REALM: &str = "spillway";

/// One route's authentication: exactly one of the three methods.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Bearer JWTs verified with a JWKS file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtConfig>,
    /// Static API keys, stored as SHA-256 hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<ApiKeysConfig>,
    /// HTTP Basic with argon2 or bcrypt password hashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicConfig>,
}

/// `auth.jwt`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The JWK set, relative to the config file's directory unless absolute. Re-read when it
    /// changes (see [`crate::JwksSource`]).
    pub jwks_file: PathBuf,
    /// When set, `iss` must equal it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// When set, `aud` (a string or an array) must contain one of these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<OneOrMany>,
    /// Accepted `alg` values, e.g. `[RS256, ES256]`. `none` is refused.
    pub algorithms: Vec<String>,
    /// `{ <identity claim>: <header> }`: one entry naming the claim that identifies the caller
    /// and the header that carries it upstream. Absent: the identity is `sub` and is not
    /// forwarded.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub forward: BTreeMap<String, String>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, e.g. `30s`. Default [`DEFAULT_LEEWAY_SECS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leeway: Option<String>,
    /// `{ <claim>: <header> }`: string, number and boolean claims forwarded as headers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claim_headers: BTreeMap<String, String>,
    /// `{ <claim>: [allowed values] }`: every rule must hold (a claim that is an array holds
    /// when any element is allowed); otherwise 403.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub require: BTreeMap<String, Vec<String>>,
    /// The `realm` of the `Bearer` challenge. Default [`DEFAULT_REALM`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// How many tokens whose signature verified are remembered, so that a token sent again
    /// skips the signature check (its claims are checked every time); 0 turns this off.
    /// Default [`crate::jwt::verified::VERIFIED_TOKENS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_tokens: Option<usize>,
}

/// The default `leeway`: 30 seconds of clock skew between the issuer and the gateway.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

/// A string or a list of strings (`audience: api` or `audience: [api, admin]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one.clone()],
            OneOrMany::Many(many) => many.clone(),
        }
    }
}

/// `auth.api_keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysConfig {
    /// The request header carrying the key, e.g. `x-api-key`.
    pub header: String,
    /// The accepted keys.
    pub keys: Vec<ApiKeyEntry>,
    /// When set, the matched key's id is forwarded in this header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<String>,
    /// The `realm` of the `ApiKey` challenge. Default [`DEFAULT_REALM`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
}

/// One API key: its id (the identity) and the SHA-256 of the key, in hex
/// (`printf %s "$KEY" | sha256sum`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// The identity of whoever holds the key.
    pub id: String,
    /// 64 hex digits.
    pub sha256: String,
}

/// `auth.basic`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicConfig {
    /// `{ <user>: <hash> }`: argon2id/argon2i PHC strings (`$argon2id$v=19$m=…`) or bcrypt
    /// (`$2b$12$…`).
    pub users: BTreeMap<String, String>,
    /// The `realm` of the `Basic` challenge. Default [`DEFAULT_REALM`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub realm: Option<String>,
    /// When set, the user name is forwarded in this header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forward: Option<String>,
    /// How long a successful (user, password) is remembered so repeated requests skip the
    /// hash, e.g. `60s`; `0s` turns the cache off. Default [`DEFAULT_CACHE_TTL_SECS`] seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_ttl: Option<String>,
    /// How many successful credentials the cache holds. Default [`DEFAULT_CACHE_ENTRIES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_entries: Option<usize>,
}

/// The default Basic cache TTL: a minute, so a changed password or removed user stops working
/// within a minute even without a config reload (a reload drops the cache at once).
pub const DEFAULT_CACHE_TTL_SECS: u64 = 60;

/// The default Basic cache size: 1024 credentials (about 100 KiB), enough for the active
/// users of an internal tool; beyond it the entry closest to expiry is dropped.
pub const DEFAULT_CACHE_ENTRIES: usize = 1024;

/// A configured duration in whole seconds (the workspace's one duration syntax, unit
/// required: `30s`, `1m`), or `default` when the key is absent. Fractions of a second are
/// dropped: token times and cache expiries are whole seconds.
pub(crate) fn whole_seconds(
    key: &str,
    value: Option<&str>,
    default: u64,
) -> Result<u64, ConfigError> {
    let Some(text) = value else {
        return Ok(default);
    };
    parse_duration(text.as_bytes(), BareNumber::Refused).map(|duration| duration.as_secs()).map_err(
        |kind| ConfigError::BadDuration {
            key: key.to_owned(),
            reason: format!("`{text}` is not a duration ({kind}): write e.g. `30s` or `1m`"),
        },
    )
}
