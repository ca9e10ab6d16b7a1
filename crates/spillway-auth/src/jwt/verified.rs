//! Tokens whose signature was verified recently, so a client sending the same token again
//! costs a SHA-256 and a map lookup instead of an RSA or ECDSA verification (83 µs for RS256,
//! 276 µs for ES256 with the RustCrypto backend).
//!
//! Only the *signature* is remembered: the claims are checked again on every request against
//! the caller's `now`, so an expired token stays refused. An entry is tied to the key set it
//! was verified with: when the JWK set changes (a key rotated away), the entry no longer
//! counts and the token is verified again against the new set. Entries are keyed by the
//! token's SHA-256, never by the token itself. The set is bounded: the oldest entry goes first.

use super::KeySet;
use parking_lot::Mutex;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// How many verified tokens are remembered by default.
pub const VERIFIED_TOKENS: usize = 4096;

/// The claims of one verified token, and the key set that verified it.
type Entry = (Arc<KeySet>, Arc<Map<String, Value>>);

/// A bounded memory of verified tokens.
#[derive(Debug)]
pub struct VerifiedTokens {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    map: HashMap<[u8; 32], Entry>,
    /// Insertion order, oldest first.
    order: VecDeque<[u8; 32]>,
}

/// A token's key in the memory.
pub fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl VerifiedTokens {
    /// A memory of at most `capacity` tokens (0: remembers none).
    pub fn new(capacity: usize) -> VerifiedTokens {
        VerifiedTokens { capacity, inner: Mutex::new(Inner::default()) }
    }

    /// The claims of the token with digest `digest`, if it was verified with `keys` (the same
    /// set, not an equal one: any reload makes a new set).
    pub fn get(&self, digest: &[u8; 32], keys: &Arc<KeySet>) -> Option<Arc<Map<String, Value>>> {
        if self.capacity == 0 {
            return None;
        }
        let inner = self.inner.lock();
        let (verified_with, claims) = inner.map.get(digest)?;
        Arc::ptr_eq(verified_with, keys).then(|| Arc::clone(claims))
    }

    /// Remembers that the token with digest `digest` verified with `keys`, giving `claims`.
    pub fn insert(&self, digest: [u8; 32], keys: Arc<KeySet>, claims: Arc<Map<String, Value>>) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.inner.lock();
        if inner.map.insert(digest, (keys, claims)).is_none() {
            inner.order.push_back(digest);
        }
        while inner.order.len() > self.capacity {
            if let Some(oldest) = inner.order.pop_front() {
                inner.map.remove(&oldest);
            }
        }
    }

    /// How many tokens are remembered.
    pub fn len(&self) -> usize {
        self.inner.lock().map.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_counts_only_for_the_key_set_that_verified_it() {
        let memory = VerifiedTokens::new(VERIFIED_TOKENS);
        let first = Arc::new(KeySet::default());
        let reloaded = Arc::new(KeySet::default());
        let claims = Arc::new(Map::new());
        memory.insert(digest(b"t"), Arc::clone(&first), claims);
        assert!(memory.get(&digest(b"t"), &first).is_some());
        assert!(memory.get(&digest(b"t"), &reloaded).is_none(), "a new set verifies again");
        assert!(memory.get(&digest(b"other"), &first).is_none());
    }

    #[test]
    fn the_memory_is_bounded_and_forgets_the_oldest_first() {
        let memory = VerifiedTokens::new(VERIFIED_TOKENS);
        let keys = Arc::new(KeySet::default());
        for i in 0..VERIFIED_TOKENS + 10 {
            memory.insert(digest(&i.to_le_bytes()), Arc::clone(&keys), Arc::new(Map::new()));
        }
        assert_eq!(memory.len(), VERIFIED_TOKENS);
        assert!(memory.get(&digest(&0usize.to_le_bytes()), &keys).is_none());
        let newest = VERIFIED_TOKENS + 9;
        assert!(memory.get(&digest(&newest.to_le_bytes()), &keys).is_some());
    }

    #[test]
    fn a_capacity_of_zero_remembers_nothing() {
        let memory = VerifiedTokens::new(0);
        let keys = Arc::new(KeySet::default());
        memory.insert(digest(b"t"), Arc::clone(&keys), Arc::new(Map::new()));
        assert!(memory.get(&digest(b"t"), &keys).is_none());
        assert!(memory.is_empty());
    }
}
