//! Static API keys: the config stores only SHA-256 hashes; a presented key is hashed and
//! compared in constant time against every configured hash.
//!
//! Why hash first: the config (and any dump of it) never holds a usable key, and comparing
//! fixed-length digests makes the comparison's length independent of the presented key. Why
//! compare against all: stopping at the first match would let response timing tell how far
//! down the list a key sits. The only data-dependent work is the final lookup of the matched
//! id, after the loop.

use crate::config::ApiKeysConfig;
use crate::error::ConfigError;
use crate::headers::{header_name, output_header_name, realm, single_value};
use crate::outcome::{api_key_challenge, AuthFailure, AuthOutcome};
use http::{HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

/// Hex of the SHA-256 of `key`: what an operator writes as `sha256` (same as
/// `printf %s "$KEY" | sha256sum`).
pub fn hash_api_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest.iter() {
        hex.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
    }
    hex
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

#[derive(Debug, Clone)]
struct ApiKey {
    sha256: [u8; 32],
    id: String,
    id_header: HeaderValue,
}

/// A validated `api_keys` block.
#[derive(Debug, Clone)]
pub struct ApiKeyAuth {
    header: HeaderName,
    keys: Vec<ApiKey>,
    forward: Option<HeaderName>,
    challenge: HeaderValue,
}

impl ApiKeyAuth {
    /// Validates the block: header names, realm, ids (unique, header-safe) and hashes (64 hex
    /// digits, unique).
    pub fn from_config(config: &ApiKeysConfig) -> Result<Self, ConfigError> {
        let header = header_name("api_keys.header", &config.header)?;
        let mut taken = vec![header.clone()];
        let forward = config
            .forward
            .as_deref()
            .map(|value| output_header_name("api_keys.forward", value, &mut taken))
            .transpose()?;
        let realm = realm("api_keys.realm", config.realm.as_deref())?;
        if config.keys.is_empty() {
            return Err(ConfigError::NoApiKeys);
        }
        let mut keys: Vec<ApiKey> = Vec::with_capacity(config.keys.len());
        for (index, entry) in config.keys.iter().enumerate() {
            let id_header = check_id(index, &entry.id)?;
            if keys.iter().any(|key| key.id == entry.id) {
                return Err(ConfigError::DuplicateApiKeyId { index, id: entry.id.clone() });
            }
            let sha256 = parse_sha256_hex(index, &entry.id, &entry.sha256)?;
            if let Some(other) = keys.iter().find(|key| key.sha256 == sha256) {
                return Err(ConfigError::DuplicateApiKey {
                    index,
                    id: entry.id.clone(),
                    other: other.id.clone(),
                });
            }
            keys.push(ApiKey { sha256, id: entry.id.clone(), id_header });
        }
        let challenge = api_key_challenge(&realm, &header);
        Ok(ApiKeyAuth { header, keys, forward, challenge })
    }

    /// Checks the request's key. Cheap (one SHA-256 and one 32-byte compare per configured
    /// key): fine on the request thread.
    pub fn authenticate(&self, headers: &HeaderMap) -> AuthOutcome {
        let presented = match single_value(headers, &self.header) {
            Ok(value) => value.as_bytes(),
            Err(reason) => return self.refuse(reason),
        };
        match self.find(presented) {
            Some(key) => AuthOutcome::Authenticated {
                identity: key.id.clone(),
                claims: self
                    .forward
                    .iter()
                    .map(|name| (name.clone(), key.id_header.clone()))
                    .collect(),
            },
            None => self.refuse(AuthFailure::UnknownApiKey),
        }
    }

    /// The header the key is read from (the gateway may remove it before forwarding, so the
    /// upstream never sees keys).
    pub fn credential_header(&self) -> &HeaderName {
        &self.header
    }

    /// The header the id is forwarded in, if any.
    pub fn forward_header(&self) -> Option<&HeaderName> {
        self.forward.as_ref()
    }

    /// The `WWW-Authenticate` value of this block's 401s.
    pub fn challenge(&self) -> &HeaderValue {
        &self.challenge
    }

    fn refuse(&self, reason: AuthFailure) -> AuthOutcome {
        AuthOutcome::Unauthenticated { reason, www_authenticate: self.challenge.clone() }
    }

    /// Compares the presented key's digest with every configured digest, without branching on
    /// any comparison until all are done.
    fn find(&self, presented: &[u8]) -> Option<&ApiKey> {
        let digest: [u8; 32] = Sha256::digest(presented).into();
        let mut found = Choice::from(0);
        let mut matched: u32 = 0;
        for (index, key) in self.keys.iter().enumerate() {
            let equal = key.sha256.ct_eq(&digest);
            // Key lists are far below u32::MAX; saturate rather than wrap if one is not.
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            matched.conditional_assign(&index, equal);
            found |= equal;
        }
        if bool::from(found) {
            usize::try_from(matched).ok().and_then(|index| self.keys.get(index))
        } else {
            None
        }
    }
}

fn check_id(index: usize, id: &str) -> Result<HeaderValue, ConfigError> {
    if id.trim().is_empty() {
        return Err(ConfigError::BadApiKeyId { index, value: id.to_owned(), reason: "is empty" });
    }
    HeaderValue::from_str(id).map_err(|_| ConfigError::BadApiKeyId {
        index,
        value: id.to_owned(),
        reason: "cannot be sent in a header (control characters)",
    })
}

fn parse_sha256_hex(index: usize, id: &str, value: &str) -> Result<[u8; 32], ConfigError> {
    let hex = value.trim();
    if let Some((position, bad_char)) =
        hex.chars().enumerate().find(|(_, c)| !c.is_ascii_hexdigit())
    {
        return Err(ConfigError::ApiKeyBadHex {
            index,
            id: id.to_owned(),
            value: value.to_owned(),
            bad_char,
            position,
        });
    }
    let digits = hex.as_bytes();
    if digits.len() != 64 {
        return Err(ConfigError::ApiKeyHashLength {
            index,
            id: id.to_owned(),
            hex_digits: digits.len(),
        });
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = (hex_value(pair[0]) << 4) | hex_value(pair[1]);
    }
    Ok(out)
}

/// The value of one hex digit already checked with `is_ascii_hexdigit`.
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        b'A'..=b'F' => digit - b'A' + 10,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiKeyEntry;

    fn config(keys: &[(&str, &str)]) -> ApiKeysConfig {
        ApiKeysConfig {
            header: "x-api-key".into(),
            keys: keys
                .iter()
                .map(|(id, key)| ApiKeyEntry { id: (*id).into(), sha256: hash_api_key(key) })
                .collect(),
            forward: Some("x-api-key-id".into()),
            realm: None,
        }
    }

    fn request(key: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(key) = key {
            headers.insert("x-api-key", HeaderValue::from_str(key).expect("test key"));
        }
        headers
    }

    fn auth() -> ApiKeyAuth {
        ApiKeyAuth::from_config(&config(&[("mobile", "k-mobile-1"), ("web", "k-web-2")]))
            .expect("valid config")
    }

    #[test]
    fn hash_matches_sha256sum() {
        // printf %s abc | sha256sum
        assert_eq!(
            hash_api_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn right_key_authenticates_as_its_id_and_forwards_it() {
        let outcome = auth().authenticate(&request(Some("k-web-2")));
        assert_eq!(
            outcome,
            AuthOutcome::Authenticated {
                identity: "web".into(),
                claims: vec![(
                    HeaderName::from_static("x-api-key-id"),
                    HeaderValue::from_static("web")
                )],
            }
        );
        let first = auth().authenticate(&request(Some("k-mobile-1")));
        assert_eq!(first.identity(), Some("mobile"));
    }

    #[test]
    fn wrong_key_is_refused_with_api_key_challenge() {
        match auth().authenticate(&request(Some("k-web-3"))) {
            AuthOutcome::Unauthenticated { reason, www_authenticate } => {
                assert_eq!(reason, AuthFailure::UnknownApiKey);
                assert_eq!(www_authenticate, "ApiKey realm=\"spillway\", header=\"x-api-key\"");
            }
            other => panic!("expected 401, got {other:?}"),
        }
    }

    #[test]
    fn missing_key_is_refused_as_missing() {
        let outcome = auth().authenticate(&request(None));
        assert!(matches!(
            outcome,
            AuthOutcome::Unauthenticated { reason: AuthFailure::MissingCredentials, .. }
        ));
        let empty = auth().authenticate(&request(Some("")));
        assert!(matches!(
            empty,
            AuthOutcome::Unauthenticated { reason: AuthFailure::MissingCredentials, .. }
        ));
    }

    #[test]
    fn key_sent_twice_is_refused() {
        let mut headers = request(Some("k-web-2"));
        headers.append("x-api-key", HeaderValue::from_static("k-mobile-1"));
        assert!(matches!(
            auth().authenticate(&headers),
            AuthOutcome::Unauthenticated { reason: AuthFailure::MalformedCredentials, .. }
        ));
    }

    #[test]
    fn uppercase_hex_is_accepted() {
        let mut config = config(&[("a", "key-a")]);
        config.keys[0].sha256 = config.keys[0].sha256.to_uppercase();
        let auth = ApiKeyAuth::from_config(&config).expect("uppercase hex");
        assert_eq!(auth.authenticate(&request(Some("key-a"))).identity(), Some("a"));
    }

    #[test]
    fn bad_hex_names_the_key_and_the_character() {
        let mut config = config(&[("mobile", "k")]);
        config.keys[0].sha256 = format!("{}zz", &config.keys[0].sha256[..62]);
        let error = ApiKeyAuth::from_config(&config).expect_err("bad hex");
        assert!(matches!(
            &error,
            ConfigError::ApiKeyBadHex { index: 0, bad_char: 'z', position: 62, id, .. } if id == "mobile"
        ));
        assert!(error.to_string().contains("id `mobile`"), "{error}");
    }

    #[test]
    fn sha1_length_hash_is_refused_with_its_length() {
        let mut config = config(&[("mobile", "k")]);
        config.keys[0].sha256 = "a9993e364706816aba3e25717850c26c9cd0d89d".into();
        let error = ApiKeyAuth::from_config(&config).expect_err("short hash");
        assert!(matches!(error, ConfigError::ApiKeyHashLength { hex_digits: 40, .. }));
        assert!(error.to_string().contains("40 hex digits"), "{error}");
    }

    #[test]
    fn duplicate_ids_and_keys_are_refused() {
        let error = ApiKeyAuth::from_config(&config(&[("a", "k1"), ("a", "k2")])).expect_err("ids");
        assert!(matches!(error, ConfigError::DuplicateApiKeyId { index: 1, .. }));
        let error =
            ApiKeyAuth::from_config(&config(&[("a", "k1"), ("b", "k1")])).expect_err("keys");
        assert!(
            matches!(error, ConfigError::DuplicateApiKey { index: 1, ref other, .. } if other == "a")
        );
    }

    #[test]
    fn forward_header_cannot_be_the_key_header() {
        let mut config = config(&[("a", "k1")]);
        config.forward = Some("X-Api-Key".into());
        assert!(matches!(
            ApiKeyAuth::from_config(&config),
            Err(ConfigError::DuplicateHeader { .. })
        ));
    }
}
