//! The JWK set a route verifies tokens with, read from a file and re-read when it changes.
//!
//! Keys are parsed here once, so the request path only picks keys and verifies. A key is typed
//! by what it is (RSA, P-256, P-384, Ed25519, HMAC secret), and [`JwtKey::fits`] is the single
//! place that decides which algorithms may use it: this is what refuses algorithm confusion (an
//! RSA public key is never handed to HMAC, a P-256 key never to ES384).
//!
//! Rotation: [`JwksSource::refresh_if_due`] looks at the file's modification time, length and
//! inode at most once a second (given `now`), and [`JwksSource::reload`] re-reads at once (for
//! the gateway's file watcher). A file that fails to parse keeps the previous key set serving
//! and is reported, both as the returned error and by [`JwksSource::last_error`].

use crate::error::JwksError;
use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::Mutex;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

/// The smallest RSA modulus accepted: RFC 7518 §3.3 requires 2048 bits.
pub const MIN_RSA_BITS: usize = 2048;

/// The shortest HMAC secret accepted: 32 bytes, the SHA-256 output (RFC 7518 §3.2); HS384 and
/// HS512 need 48 and 64 bytes and are refused for shorter secrets by [`JwtKey::fits`].
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// What a key is, which decides the algorithms that may use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// An RSA public key (`kty: RSA`): RS256/384/512, PS256/384/512.
    Rsa,
    /// A P-256 public key (`kty: EC, crv: P-256`): ES256.
    EcP256,
    /// A P-384 public key (`kty: EC, crv: P-384`): ES384.
    EcP384,
    /// An Ed25519 public key (`kty: OKP, crv: Ed25519`): EdDSA.
    Ed25519,
    /// A shared secret (`kty: oct`) of this many bytes: HS256/384/512.
    Hmac {
        /// The secret's length in bytes.
        len: usize,
    },
}

/// One usable verification key.
#[derive(Clone)]
pub struct JwtKey {
    kid: Option<String>,
    key_type: KeyType,
    declared_alg: Option<Algorithm>,
    decoding: DecodingKey,
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKey")
            .field("kid", &self.kid)
            .field("key_type", &self.key_type)
            .field("declared_alg", &self.declared_alg)
            .finish_non_exhaustive()
    }
}

impl JwtKey {
    /// The key's `kid`.
    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// What the key is.
    pub fn key_type(&self) -> KeyType {
        self.key_type
    }

    /// Whether `alg` may be verified with this key: the key's type must be the algorithm's
    /// (never RSA or EC material as an HMAC secret), the curve must match, an HMAC secret must
    /// be at least as long as the hash, and a key that declares its `alg` serves only that one.
    pub fn fits(&self, alg: Algorithm) -> bool {
        if self.declared_alg.is_some_and(|declared| declared != alg) {
            return false;
        }
        match (self.key_type, alg) {
            (KeyType::Hmac { len }, Algorithm::HS256) => len >= 32,
            (KeyType::Hmac { len }, Algorithm::HS384) => len >= 48,
            (KeyType::Hmac { len }, Algorithm::HS512) => len >= 64,
            (
                KeyType::Rsa,
                Algorithm::RS256
                | Algorithm::RS384
                | Algorithm::RS512
                | Algorithm::PS256
                | Algorithm::PS384
                | Algorithm::PS512,
            ) => true,
            (KeyType::EcP256, Algorithm::ES256) => true,
            (KeyType::EcP384, Algorithm::ES384) => true,
            (KeyType::Ed25519, Algorithm::EdDSA) => true,
            _ => false,
        }
    }

    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.decoding
    }
}

/// A parsed JWK set: the usable keys, in file order.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: Vec<JwtKey>,
    skipped: usize,
}

impl KeySet {
    /// Parses a JWK set document. Keys marked for encryption (`use: enc`, or `key_ops` without
    /// `verify`) and key types or curves this crate does not verify with (e.g. P-521, Ed448)
    /// are skipped, since identity providers publish those next to signing keys; a malformed
    /// key of a supported type is an error, as is a set left with no usable key.
    pub fn parse(path: &Path, text: &[u8]) -> Result<Self, JwksError> {
        super::ensure_crypto_provider();
        let not_a_set = |reason: String| JwksError::NotAKeySet { path: path.to_owned(), reason };
        let document: Value =
            serde_json::from_slice(text).map_err(|error| not_a_set(error.to_string()))?;
        let keys = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| not_a_set("no `keys` array".to_owned()))?;
        let mut set = KeySet::default();
        let mut first_skip: Option<String> = None;
        for (index, key) in keys.iter().enumerate() {
            match parse_key(key) {
                Ok(Parsed::Key(key)) => set.keys.push(key),
                Ok(Parsed::Skipped(why)) => {
                    set.skipped += 1;
                    first_skip.get_or_insert(format!("key #{index}: {why}"));
                }
                Err(reason) => {
                    return Err(JwksError::BadKey {
                        path: path.to_owned(),
                        index,
                        kid: key.get("kid").and_then(Value::as_str).map(str::to_owned),
                        reason,
                    })
                }
            }
        }
        if set.keys.is_empty() {
            return Err(JwksError::NoUsableKey {
                path: path.to_owned(),
                skipped: set.skipped,
                why: first_skip.unwrap_or_else(|| "empty set".to_owned()),
            });
        }
        Ok(set)
    }

    /// The usable keys.
    pub fn keys(&self) -> &[JwtKey] {
        &self.keys
    }

    /// How many keys of the file were skipped as not for signatures or unsupported.
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// Whether any key fits `alg`.
    pub fn serves(&self, alg: Algorithm) -> bool {
        self.keys.iter().any(|key| key.fits(alg))
    }
}

enum Parsed {
    Key(JwtKey),
    Skipped(String),
}

fn parse_key(key: &Value) -> Result<Parsed, String> {
    let Some(object) = key.as_object() else {
        return Err("not a JSON object".to_owned());
    };
    let text = |name: &str| -> Result<Option<&str>, String> {
        match object.get(name) {
            None => Ok(None),
            Some(Value::String(value)) => Ok(Some(value.as_str())),
            Some(_) => Err(format!("`{name}` is not a string")),
        }
    };
    let kid = text("kid")?.map(str::to_owned);
    let kty = text("kty")?.ok_or("no `kty`")?;
    if let Some(key_use) = text("use")? {
        if key_use != "sig" {
            return Ok(Parsed::Skipped(format!("`use: {key_use}` is not for signatures")));
        }
    }
    if let Some(ops) = object.get("key_ops") {
        let ops = ops.as_array().ok_or("`key_ops` is not an array")?;
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return Ok(Parsed::Skipped("`key_ops` lacks `verify`".to_owned()));
        }
    }
    let declared_alg = match text("alg")? {
        None => None,
        Some(name) if name.eq_ignore_ascii_case("none") => {
            return Err("`alg: none` is never accepted".to_owned())
        }
        Some(name) => match super::parse_algorithm(name) {
            Some(alg) => Some(alg),
            None => {
                return Ok(Parsed::Skipped(format!("`alg: {name}` is not a signature algorithm")))
            }
        },
    };
    let field = |name: &str| -> Result<Vec<u8>, String> {
        let value = text(name)?.ok_or_else(|| format!("`kty: {kty}` key without `{name}`"))?;
        URL_SAFE_NO_PAD
            .decode(value.trim_end_matches('='))
            .map_err(|error| format!("`{name}` is not base64url: {error}"))
    };
    let (key_type, decoding) = match kty {
        "RSA" => {
            let n = field("n")?;
            let e = field("e")?;
            let n_trimmed = strip_leading_zeros(&n);
            let bits = n_trimmed.len() * 8
                - n_trimmed.first().map_or(8, |top| top.leading_zeros() as usize);
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "RSA modulus of {bits} bits, at least {MIN_RSA_BITS} required"
                ));
            }
            let e_trimmed = strip_leading_zeros(&e);
            if e_trimmed.is_empty()
                || e_trimmed.len() > 8
                || e_trimmed.last().is_some_and(|b| b & 1 == 0)
            {
                return Err("RSA exponent `e` must be odd and at most 64 bits".to_owned());
            }
            (KeyType::Rsa, DecodingKey::from_rsa_raw_components(n_trimmed, e_trimmed))
        }
        "EC" => {
            let crv = text("crv")?.ok_or("`kty: EC` key without `crv`")?;
            let (key_type, coordinate_len, alg) = match crv {
                "P-256" => (KeyType::EcP256, 32, Algorithm::ES256),
                "P-384" => (KeyType::EcP384, 48, Algorithm::ES384),
                other => return Ok(Parsed::Skipped(format!("curve `{other}` is not supported"))),
            };
            let x = field("x")?;
            let y = field("y")?;
            if x.len() != coordinate_len || y.len() != coordinate_len {
                return Err(format!(
                    "`{crv}` coordinates must be {coordinate_len} bytes (x has {}, y has {})",
                    x.len(),
                    y.len()
                ));
            }
            let mut point = Vec::with_capacity(1 + 2 * coordinate_len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let decoding = DecodingKey::from_ec_der(&point);
            check_public_key(&decoding, alg, "not a point on the curve")?;
            (key_type, decoding)
        }
        "OKP" => {
            let crv = text("crv")?.ok_or("`kty: OKP` key without `crv`")?;
            if crv != "Ed25519" {
                return Ok(Parsed::Skipped(format!("curve `{crv}` is not supported")));
            }
            let x = field("x")?;
            if x.len() != 32 {
                return Err(format!("Ed25519 `x` must be 32 bytes, has {}", x.len()));
            }
            let decoding = DecodingKey::from_ed_der(&x);
            check_public_key(&decoding, Algorithm::EdDSA, "not a valid Ed25519 point")?;
            (KeyType::Ed25519, decoding)
        }
        "oct" => {
            let secret = field("k")?;
            if secret.len() < MIN_HMAC_SECRET_BYTES {
                return Err(format!(
                    "HMAC secret of {} bytes, at least {MIN_HMAC_SECRET_BYTES} required",
                    secret.len()
                ));
            }
            let len = secret.len();
            let decoding = DecodingKey::from_secret(&secret)
                .map_err(|error| format!("unusable HMAC secret: {error}"))?;
            (KeyType::Hmac { len }, decoding)
        }
        other => return Ok(Parsed::Skipped(format!("`kty: {other}` is not supported"))),
    };
    let key = JwtKey { kid, key_type, declared_alg, decoding };
    if let Some(alg) = declared_alg {
        if !key.fits(alg) {
            return Err(format!("declares `alg: {alg:?}`, which a {key_type:?} key cannot serve"));
        }
    }
    Ok(Parsed::Key(key))
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[first..]
}

/// Builds the verifier once, which parses the public key: a point off the curve fails here,
/// at load, rather than on every request.
fn check_public_key(key: &DecodingKey, alg: Algorithm, reason: &str) -> Result<(), String> {
    match jsonwebtoken::crypto::verify("", b"", key, alg) {
        Ok(_) => Ok(()),
        Err(_) => Err(reason.to_owned()),
    }
}

/// Identifies one version of the file cheaply: a rewrite in place changes the length or the
/// modification time, an editor's or `mv`'s atomic replace changes the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Fingerprint {
    fn of(path: &Path) -> std::io::Result<Self> {
        let metadata = std::fs::metadata(path)?;
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(&metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Ok(Fingerprint { modified: metadata.modified().ok(), len: metadata.len(), inode })
    }
}

/// The JWKS file of a route and its current key set; shared by every worker (`&self`).
#[derive(Debug)]
pub struct JwksSource {
    path: PathBuf,
    keys: ArcSwap<KeySet>,
    /// The fingerprint of the file version last read (good or bad) and the last failure.
    state: Mutex<ReloadState>,
    /// The earliest `now` (Unix seconds) at which `refresh_if_due` looks at the file again.
    next_check_secs: AtomicU64,
}

#[derive(Debug, Default)]
struct ReloadState {
    fingerprint: Option<Fingerprint>,
    last_error: Option<JwksError>,
}

impl JwksSource {
    /// Reads and parses the file: start-up fails on a bad file (there is no previous set).
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, JwksError> {
        let path = path.into();
        let fingerprint = Fingerprint::of(&path).ok();
        let keys = read_key_set(&path)?;
        Ok(JwksSource {
            path,
            keys: ArcSwap::from_pointee(keys),
            state: Mutex::new(ReloadState { fingerprint, last_error: None }),
            next_check_secs: AtomicU64::new(0),
        })
    }

    /// The file this source reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current key set (a cheap pointer copy; a reload swaps it for later callers).
    pub fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    /// Re-reads the file now. On success the new set serves from the next request and the
    /// number of usable keys is returned; on failure the previous set keeps serving and the
    /// error is returned and kept for [`Self::last_error`].
    pub fn reload(&self) -> Result<usize, JwksError> {
        let mut state = self.state.lock();
        state.fingerprint = Fingerprint::of(&self.path).ok();
        self.read_into(&mut state)
    }

    /// Looks at the file's fingerprint if at least a second has passed since the last look
    /// (`now_unix_secs` from the caller's clock), and re-reads it if it changed. `None` when
    /// not due or unchanged; otherwise what [`Self::reload`] would return. A changed file that
    /// fails to parse is not retried until it changes again.
    pub fn refresh_if_due(&self, now_unix_secs: u64) -> Option<Result<usize, JwksError>> {
        let due = self.next_check_secs.load(Ordering::Relaxed);
        // Not due: within the second after the last look. A wall clock that stepped back by
        // more than that makes the look due at once instead of waiting for it to catch up.
        let looked_this_second = now_unix_secs < due && due - now_unix_secs <= 1;
        if looked_this_second
            || self
                .next_check_secs
                .compare_exchange(
                    due,
                    now_unix_secs.saturating_add(1),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return None;
        }
        let current = Fingerprint::of(&self.path);
        // A reload in progress (the file watcher's) is reading the file already: a request
        // never waits for it.
        let mut state = self.state.try_lock()?;
        match current {
            Ok(fingerprint) if state.fingerprint == Some(fingerprint) => None,
            Ok(fingerprint) => {
                state.fingerprint = Some(fingerprint);
                Some(self.read_into(&mut state))
            }
            Err(error) => {
                // Missing for a moment (e.g. between an editor's unlink and rename): keep
                // serving, report, and look again next second.
                let error =
                    JwksError::Unreadable { path: self.path.clone(), source: Arc::new(error) };
                state.fingerprint = None;
                state.last_error = Some(error.clone());
                Some(Err(error))
            }
        }
    }

    /// Why the last reload failed, if the last reload failed (cleared by a good one).
    pub fn last_error(&self) -> Option<JwksError> {
        self.state.lock().last_error.clone()
    }

    fn read_into(&self, state: &mut ReloadState) -> Result<usize, JwksError> {
        match read_key_set(&self.path) {
            Ok(keys) => {
                let count = keys.keys().len();
                self.keys.store(Arc::new(keys));
                state.last_error = None;
                Ok(count)
            }
            Err(error) => {
                state.last_error = Some(error.clone());
                Err(error)
            }
        }
    }
}

fn read_key_set(path: &Path) -> Result<KeySet, JwksError> {
    let text = std::fs::read(path).map_err(|error| JwksError::Unreadable {
        path: path.to_owned(),
        source: Arc::new(error),
    })?;
    KeySet::parse(path, &text)
}
