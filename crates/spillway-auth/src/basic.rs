//! HTTP Basic (RFC 7617) against argon2 or bcrypt password hashes, with a small cache of
//! recent successes.
//!
//! Verification is deliberately slow (argon2 and bcrypt are built to be: tens of milliseconds
//! per check with usual parameters), so it is split for the gateway:
//! [`BasicAuth::parse_credentials`] and [`BasicAuth::cached`] are cheap and can run on the
//! request thread; [`BasicAuth::verify_basic`] is CPU-heavy and belongs on a blocking pool
//! (`tokio::task::spawn_blocking`). [`BasicAuth::authenticate`] does all three in a row for
//! callers that do not care.
//!
//! Timing: an unknown user is verified against a stand-in hash (the first configured user's,
//! by name order) and refused whatever the result, so a response takes as long for a
//! missing user as for a wrong password and never says which (both are
//! [`AuthFailure::BadPassword`]). With users of mixed algorithms or costs the stand-in matches
//! one of them only.
//!
//! Cache: successful credentials are remembered for a TTL, keyed by
//! HMAC-SHA-256(per-process random key, user, password) — never the password, and not a plain
//! hash that could be brute-forced offline from a memory dump without the key.

use crate::config::{whole_seconds, BasicConfig, DEFAULT_CACHE_ENTRIES, DEFAULT_CACHE_TTL_SECS};
use crate::error::ConfigError;
use crate::headers::{authorization_credentials, output_header_name, realm};
use crate::outcome::{basic_challenge, AuthFailure, AuthOutcome};
use argon2::{Argon2, PasswordHash, PasswordVerifier};
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use parking_lot::Mutex;
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use zeroize::Zeroizing;

/// Decoded credentials longer than this are refused unparsed.
pub const MAX_CREDENTIALS_BYTES: usize = 4096;

/// Standard base64, padding optional (some clients drop it).
const BASE64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// A user name and password decoded from `Authorization: Basic …`, owned so it can move to a
/// blocking thread. The password is wiped from memory on drop.
pub struct BasicCredentials {
    user: String,
    password: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("user", &self.user)
            .field("password", &"[redacted]")
            .finish()
    }
}

impl BasicCredentials {
    /// Decodes the request's `Authorization: Basic` header. The user name must be UTF-8
    /// (`charset="UTF-8"`, RFC 7617 §2.1); the password is kept as bytes.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, AuthFailure> {
        let encoded = authorization_credentials(headers, "Basic")?;
        let decoded = Zeroizing::new(
            BASE64_LENIENT.decode(encoded).map_err(|_| AuthFailure::MalformedCredentials)?,
        );
        if decoded.len() > MAX_CREDENTIALS_BYTES {
            return Err(AuthFailure::MalformedCredentials);
        }
        let colon =
            decoded.iter().position(|b| *b == b':').ok_or(AuthFailure::MalformedCredentials)?;
        let user = std::str::from_utf8(&decoded[..colon])
            .map_err(|_| AuthFailure::MalformedCredentials)?
            .to_owned();
        let password = Zeroizing::new(decoded[colon + 1..].to_vec());
        Ok(BasicCredentials { user, password })
    }

    /// The user name.
    pub fn user(&self) -> &str {
        &self.user
    }
}

/// A stored password hash, parsed at config time.
#[derive(Debug, Clone)]
enum StoredHash {
    Argon2(Box<PasswordHash>),
    Bcrypt(String),
}

impl StoredHash {
    fn parse(user: &str, value: &str) -> Result<Self, ConfigError> {
        let bad = |reason: String| ConfigError::BadPasswordHash {
            user: user.to_owned(),
            value: value.to_owned(),
            reason,
        };
        if value.starts_with("$argon2") {
            let hash = PasswordHash::new(value)
                .map_err(|error| bad(format!("is not a valid PHC string: {error}")))?;
            match hash.algorithm.as_str() {
                "argon2id" | "argon2i" => {}
                other => {
                    return Err(bad(format!(
                    "uses `{other}`; use argon2id (or argon2i): argon2d is not meant for passwords"
                )))
                }
            }
            if hash.salt.is_none() || hash.hash.is_none() {
                return Err(bad("has no salt or no hash part".to_owned()));
            }
            argon2::Params::try_from(&hash)
                .map_err(|error| bad(format!("has invalid argon2 parameters: {error}")))?;
            Ok(StoredHash::Argon2(Box::new(hash)))
        } else if ["$2a$", "$2b$", "$2x$", "$2y$"].iter().any(|prefix| value.starts_with(prefix)) {
            bcrypt::HashParts::from_str(value)
                .map_err(|error| bad(format!("is not a valid bcrypt hash: {error}")))?;
            Ok(StoredHash::Bcrypt(value.to_owned()))
        } else {
            Err(bad("is neither an argon2 PHC string (`$argon2id$…`) nor a bcrypt hash (`$2b$…`)"
                .to_owned()))
        }
    }

    /// The slow part: recomputes the hash of `password` with the stored salt and parameters.
    fn verify(&self, password: &[u8]) -> bool {
        match self {
            StoredHash::Argon2(hash) => {
                Argon2::default().verify_password(password, &**hash).is_ok()
            }
            StoredHash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
        }
    }
}

/// A validated `basic` block.
#[derive(Debug)]
pub struct BasicAuth {
    users: BTreeMap<String, StoredHash>,
    /// Verified against for unknown users, so they cost as much as known ones.
    stand_in: StoredHash,
    forward: Option<HeaderName>,
    challenge: HeaderValue,
    cache: Option<CredentialCache>,
}

impl BasicAuth {
    /// Validates the block: every hash parses (argon2id/argon2i PHC or bcrypt), user names
    /// can be sent in Basic credentials, header names and realm are valid.
    pub fn from_config(config: &BasicConfig) -> Result<Self, ConfigError> {
        let mut taken = vec![http::header::AUTHORIZATION];
        let forward = config
            .forward
            .as_deref()
            .map(|value| output_header_name("basic.forward", value, &mut taken))
            .transpose()?;
        let realm = realm("basic.realm", config.realm.as_deref())?;
        let mut users = BTreeMap::new();
        for (user, hash) in &config.users {
            check_user_name(user)?;
            users.insert(user.clone(), StoredHash::parse(user, hash)?);
        }
        let stand_in = users.values().next().cloned().ok_or(ConfigError::NoUsers)?;
        let ttl_secs =
            whole_seconds("basic.cache_ttl", config.cache_ttl.as_deref(), DEFAULT_CACHE_TTL_SECS)?;
        let capacity = config.cache_entries.unwrap_or(DEFAULT_CACHE_ENTRIES);
        let cache =
            match (ttl_secs, capacity) {
                (0, _) => None,
                (_, 0) => return Err(ConfigError::BadCacheSize {
                    reason:
                        "0 with a non-zero `cache_ttl`; set `cache_ttl: 0s` to turn the cache off",
                }),
                (ttl_secs, capacity) => CredentialCache::new(ttl_secs, capacity),
            };
        Ok(BasicAuth { users, stand_in, forward, challenge: basic_challenge(&realm), cache })
    }

    /// Decodes the credentials, or the 401 to answer (no or malformed `Authorization`).
    /// Cheap.
    pub fn parse_credentials(&self, headers: &HeaderMap) -> Result<BasicCredentials, AuthOutcome> {
        BasicCredentials::from_headers(headers).map_err(|reason| self.refuse(reason))
    }

    /// The outcome for credentials that succeeded within the cache TTL, without hashing.
    /// Cheap (one HMAC-SHA-256 and a map lookup): run it on the request thread and send only
    /// misses to [`Self::verify_basic`].
    pub fn cached(
        &self,
        credentials: &BasicCredentials,
        now_unix_secs: u64,
    ) -> Option<AuthOutcome> {
        let cache = self.cache.as_ref()?;
        let user = cache.get(&credentials.user, &credentials.password, now_unix_secs)?;
        Some(self.accept(user))
    }

    /// Verifies the password. **CPU-heavy** (one argon2 or bcrypt computation, tens of
    /// milliseconds with usual parameters, also for unknown users): call it from a blocking
    /// pool, not from an async worker. Consults and fills the cache.
    pub fn verify_basic(&self, credentials: &BasicCredentials, now_unix_secs: u64) -> AuthOutcome {
        if let Some(outcome) = self.cached(credentials, now_unix_secs) {
            return outcome;
        }
        let verified = match self.users.get(&credentials.user) {
            Some(hash) => hash.verify(&credentials.password),
            None => {
                // Same work as a known user, then refused whatever it says.
                let _ = self.stand_in.verify(&credentials.password);
                false
            }
        };
        if !verified {
            return self.refuse(AuthFailure::BadPassword);
        }
        if let Some(cache) = &self.cache {
            cache.insert(&credentials.user, &credentials.password, now_unix_secs);
        }
        self.accept(credentials.user.clone())
    }

    /// Parses and verifies in one call. **CPU-heavy** on a cache miss, see
    /// [`Self::verify_basic`].
    pub fn authenticate(&self, headers: &HeaderMap, now_unix_secs: u64) -> AuthOutcome {
        match self.parse_credentials(headers) {
            Ok(credentials) => self.verify_basic(&credentials, now_unix_secs),
            Err(outcome) => outcome,
        }
    }

    /// The header the user name is forwarded in, if any.
    pub fn forward_header(&self) -> Option<&HeaderName> {
        self.forward.as_ref()
    }

    /// The `WWW-Authenticate` value of this block's 401s.
    pub fn challenge(&self) -> &HeaderValue {
        &self.challenge
    }

    fn accept(&self, user: String) -> AuthOutcome {
        let claims = match (&self.forward, HeaderValue::from_str(&user)) {
            (Some(name), Ok(value)) => vec![(name.clone(), value)],
            _ => Vec::new(),
        };
        AuthOutcome::Authenticated { identity: user, claims }
    }

    fn refuse(&self, reason: AuthFailure) -> AuthOutcome {
        AuthOutcome::Unauthenticated { reason, www_authenticate: self.challenge.clone() }
    }
}

fn check_user_name(user: &str) -> Result<(), ConfigError> {
    let bad = |reason| ConfigError::BadUserName { user: user.to_owned(), reason };
    if user.is_empty() {
        return Err(bad("is empty"));
    }
    if user.contains(':') {
        return Err(bad("contains `:`, which Basic credentials cannot carry (RFC 7617 §2)"));
    }
    if user.chars().any(char::is_control) {
        return Err(bad("contains control characters"));
    }
    Ok(())
}

/// Recent successful credentials: fingerprint → (user, expiry), bounded.
struct CredentialCache {
    key: Zeroizing<[u8; 32]>,
    ttl_secs: u64,
    capacity: usize,
    entries: Mutex<HashMap<[u8; 32], CacheEntry>>,
}

impl std::fmt::Debug for CredentialCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialCache")
            .field("ttl_secs", &self.ttl_secs)
            .field("capacity", &self.capacity)
            .field("len", &self.entries.lock().len())
            .finish_non_exhaustive()
    }
}

struct CacheEntry {
    user: String,
    expires_at_secs: u64,
}

impl CredentialCache {
    /// `None` (no cache) if the operating system cannot give a random key: without a secret
    /// key the fingerprints would be plain hashes of passwords.
    fn new(ttl_secs: u64, capacity: usize) -> Option<Self> {
        let mut key = Zeroizing::new([0u8; 32]);
        getrandom::fill(key.as_mut()).ok()?;
        Some(CredentialCache { key, ttl_secs, capacity, entries: Mutex::new(HashMap::new()) })
    }

    fn fingerprint(&self, user: &str, password: &[u8]) -> [u8; 32] {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(self.key.as_ref()) else {
            // HMAC takes keys of any length; unreachable, and a zero fingerprint never matches
            // an entry because `insert` refuses it.
            return [0u8; 32];
        };
        // Length-prefixed so ("ab", "c") and ("a", "bc") differ.
        mac.update(&(user.len() as u64).to_be_bytes());
        mac.update(user.as_bytes());
        mac.update(password);
        mac.finalize().into_bytes().into()
    }

    fn get(&self, user: &str, password: &[u8], now_unix_secs: u64) -> Option<String> {
        let fingerprint = self.fingerprint(user, password);
        let entries = self.entries.lock();
        let entry = entries.get(&fingerprint)?;
        (now_unix_secs < entry.expires_at_secs).then(|| entry.user.clone())
    }

    fn insert(&self, user: &str, password: &[u8], now_unix_secs: u64) {
        let fingerprint = self.fingerprint(user, password);
        if fingerprint == [0u8; 32] {
            return;
        }
        let mut entries = self.entries.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&fingerprint) {
            entries.retain(|_, entry| now_unix_secs < entry.expires_at_secs);
            if entries.len() >= self.capacity {
                let soonest = entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.expires_at_secs)
                    .map(|(fingerprint, _)| *fingerprint);
                if let Some(soonest) = soonest {
                    entries.remove(&soonest);
                }
            }
        }
        entries.insert(
            fingerprint,
            CacheEntry {
                user: user.to_owned(),
                expires_at_secs: now_unix_secs.saturating_add(self.ttl_secs),
            },
        );
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::AUTHORIZATION;

    fn basic_header(user: &str, password: &str) -> HeaderMap {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::try_from(format!("Basic {encoded}")).expect("header"),
        );
        headers
    }

    #[test]
    fn credentials_split_at_the_first_colon() {
        let credentials =
            BasicCredentials::from_headers(&basic_header("alice", "pa:ss")).expect("credentials");
        assert_eq!(credentials.user(), "alice");
        assert_eq!(&credentials.password[..], b"pa:ss");
    }

    #[test]
    fn credentials_without_colon_or_bad_base64_are_malformed() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic YWxpY2U=")); // "alice"
        assert_eq!(
            BasicCredentials::from_headers(&headers).map(|_| ()),
            Err(AuthFailure::MalformedCredentials)
        );
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic !!!"));
        assert_eq!(
            BasicCredentials::from_headers(&headers).map(|_| ()),
            Err(AuthFailure::MalformedCredentials)
        );
    }

    #[test]
    fn unpadded_base64_is_accepted() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic YTpi")); // "a:b"
        assert_eq!(BasicCredentials::from_headers(&headers).expect("a:b").user(), "a");
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Basic YTpiYw")); // "a:bc"
        assert_eq!(BasicCredentials::from_headers(&headers).expect("a:bc").user(), "a");
    }

    #[test]
    fn cache_expires_after_ttl_and_is_bounded() {
        let cache = CredentialCache::new(60, 2).expect("random key");
        cache.insert("alice", b"pw", 1000);
        assert_eq!(cache.get("alice", b"pw", 1059).as_deref(), Some("alice"));
        assert_eq!(cache.get("alice", b"pw", 1060), None, "expired at ttl");
        assert_eq!(cache.get("alice", b"other", 1001), None, "another password");
        cache.insert("bob", b"pw", 1010);
        cache.insert("carol", b"pw", 1020);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("alice", b"pw", 1021), None, "the entry closest to expiry left");
        assert!(cache.get("carol", b"pw", 1021).is_some());
    }

    #[test]
    fn cache_fingerprint_separates_user_and_password() {
        let cache = CredentialCache::new(60, 8).expect("random key");
        assert_ne!(cache.fingerprint("ab", b"c"), cache.fingerprint("a", b"bc"));
    }

    #[test]
    fn user_names_with_colons_are_refused() {
        assert!(matches!(check_user_name("a:b"), Err(ConfigError::BadUserName { .. })));
        assert!(check_user_name("alice").is_ok());
    }
}
