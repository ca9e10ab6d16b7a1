//! Typed configuration errors: each names the key, the offending value and why it is refused.
//!
//! These surface when a config is built (start-up or hot reload), never on the request path;
//! the gateway prefixes them with the route and file it read them from.

use std::path::PathBuf;
use std::sync::Arc;

/// A JWKS file that cannot be used. Cloneable so a [`crate::JwksSource`] can keep the last one
/// for the admin API while the previous good key set keeps serving.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum JwksError {
    /// The file cannot be read (missing, permissions…).
    #[error("cannot read JWKS file {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        source: Arc<std::io::Error>,
    },
    /// The file is not a JSON object with a `keys` array.
    #[error("JWKS file {path} is not a JWK set: {reason}")]
    NotAKeySet {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// One key of the set is malformed.
    #[error("JWKS file {path}: key #{index}{kid}: {reason}", kid = kid_suffix(.kid))]
    BadKey {
        /// The file.
        path: PathBuf,
        /// The key's position in `keys` (from 0).
        index: usize,
        /// The key's `kid`, when it has one.
        kid: Option<String>,
        /// What is wrong with it.
        reason: String,
    },
    /// No key of the set can verify signatures with this crate (all skipped as unsupported or
    /// marked for encryption).
    #[error("JWKS file {path} holds no usable signature key ({skipped} skipped: {why})")]
    NoUsableKey {
        /// The file.
        path: PathBuf,
        /// How many keys were skipped.
        skipped: usize,
        /// Why, for the first skipped key (or "empty set").
        why: String,
    },
}

fn kid_suffix(kid: &Option<String>) -> String {
    match kid {
        Some(kid) => format!(" (kid `{kid}`)"),
        None => String::new(),
    }
}

/// An `auth:` block that cannot be built.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// None of `jwt`, `api_keys`, `basic` is set.
    #[error("auth: set one of `jwt`, `api_keys` or `basic`")]
    NoMethod,
    /// More than one method is set.
    #[error("auth: set only one of `jwt`, `api_keys` or `basic` (found {found})")]
    SeveralMethods {
        /// The methods that were set.
        found: String,
    },
    /// A header name is not a valid HTTP header name.
    #[error("auth.{key}: `{value}` is not a valid header name")]
    BadHeaderName {
        /// The config key, e.g. `jwt.claim_headers.tier`.
        key: String,
        /// The offending value.
        value: String,
    },
    /// Two outputs would write the same header, or an output header is also the credential
    /// header.
    #[error("auth.{key}: header `{value}` is used twice")]
    DuplicateHeader {
        /// The config key of the second use.
        key: String,
        /// The header name.
        value: String,
    },
    /// An output header that frames, routes or authenticates the request (`host`,
    /// `content-length`, `transfer-encoding`, `connection`, `authorization`, `cookie`).
    #[error("auth.{key}: `{value}` cannot carry an identity or claim (reserved header)")]
    ReservedHeader {
        /// The config key.
        key: String,
        /// The header name.
        value: String,
    },
    /// A realm that cannot sit in a quoted-string.
    #[error("auth.{key}: realm `{value}` {reason}")]
    BadRealm {
        /// The config key.
        key: String,
        /// The offending value.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// `leeway` (or another duration) does not parse.
    #[error("auth.{key}: {reason}")]
    BadDuration {
        /// The config key.
        key: String,
        /// The parser's message, naming the value.
        reason: String,
    },
    /// A JWT algorithm name that this crate does not know.
    #[error(
        "auth.jwt.algorithms: unknown algorithm `{value}` (known: HS256, HS384, HS512, RS256, \
         RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"
    )]
    UnknownAlgorithm {
        /// The offending value.
        value: String,
    },
    /// `none` in the algorithm list.
    #[error("auth.jwt.algorithms: `{value}` would accept unsigned tokens and is never allowed")]
    AlgorithmNone {
        /// The offending value as written.
        value: String,
    },
    /// An empty algorithm list.
    #[error("auth.jwt.algorithms: list at least one algorithm")]
    NoAlgorithms,
    /// `forward` names more than one claim.
    #[error(
        "auth.jwt.forward: name exactly one identity claim and its header (e.g. `{{ sub: x-user-id }}`), \
         found {count}; use `claim_headers` for other claims"
    )]
    ForwardNotOneClaim {
        /// How many entries were found.
        count: usize,
    },
    /// A `require` rule with no allowed values.
    #[error("auth.jwt.require.{claim}: list at least one allowed value")]
    EmptyRequirement {
        /// The claim.
        claim: String,
    },
    /// The JWKS file cannot be used.
    #[error("auth.jwt.jwks_file: {0}")]
    Jwks(#[from] JwksError),
    /// The JWKS holds no key for any configured algorithm.
    #[error(
        "auth.jwt: no key in JWKS file {path} fits any configured algorithm ({algorithms}); \
         tokens could never verify"
    )]
    NoKeyForAlgorithms {
        /// The file.
        path: PathBuf,
        /// The configured algorithms.
        algorithms: String,
    },
    /// An API key entry without keys.
    #[error("auth.api_keys.keys: list at least one key")]
    NoApiKeys,
    /// An API key id that is empty or not valid in a header.
    #[error("auth.api_keys.keys[{index}].id: `{value}` {reason}")]
    BadApiKeyId {
        /// The entry's position.
        index: usize,
        /// The offending id.
        value: String,
        /// Why.
        reason: &'static str,
    },
    /// Two API key entries with the same id.
    #[error("auth.api_keys.keys[{index}].id: `{id}` is used twice")]
    DuplicateApiKeyId {
        /// The position of the second entry.
        index: usize,
        /// The id.
        id: String,
    },
    /// `sha256` is not hexadecimal.
    #[error(
        "auth.api_keys.keys[{index}] (id `{id}`).sha256: `{value}` is not hexadecimal \
         (character `{bad_char}` at position {position})"
    )]
    ApiKeyBadHex {
        /// The entry's position.
        index: usize,
        /// The entry's id.
        id: String,
        /// The offending value.
        value: String,
        /// The first character that is not a hex digit.
        bad_char: char,
        /// Its position (from 0, in characters).
        position: usize,
    },
    /// `sha256` has the wrong length.
    #[error(
        "auth.api_keys.keys[{index}] (id `{id}`).sha256: {hex_digits} hex digits, a SHA-256 has 64 \
         (hash the key with `printf %s \"$KEY\" | sha256sum`)"
    )]
    ApiKeyHashLength {
        /// The entry's position.
        index: usize,
        /// The entry's id.
        id: String,
        /// How many hex digits were given.
        hex_digits: usize,
    },
    /// Two API key entries with the same hash: the identity would be ambiguous.
    #[error("auth.api_keys.keys[{index}] (id `{id}`).sha256: same key as id `{other}`")]
    DuplicateApiKey {
        /// The position of the second entry.
        index: usize,
        /// Its id.
        id: String,
        /// The id of the first entry with that hash.
        other: String,
    },
    /// A Basic user list without users.
    #[error("auth.basic.users: list at least one user")]
    NoUsers,
    /// A user name that Basic credentials cannot carry.
    #[error("auth.basic.users: user name `{user}` {reason}")]
    BadUserName {
        /// The user name.
        user: String,
        /// Why.
        reason: &'static str,
    },
    /// A password hash that does not parse or uses an unsupported algorithm.
    #[error("auth.basic.users.{user}: password hash `{value}` {reason}")]
    BadPasswordHash {
        /// The user.
        user: String,
        /// The hash as written (hashes are not secrets, and showing the prefix helps).
        value: String,
        /// Why.
        reason: String,
    },
    /// `cache_entries: 0` with a non-zero TTL, or another impossible cache size.
    #[error("auth.basic.cache_entries: {reason}")]
    BadCacheSize {
        /// Why.
        reason: &'static str,
    },
}
