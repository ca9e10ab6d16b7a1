//! `ByteKey`: a byte-string key for keyed limiters that keeps short keys inline.
//!
//! Why: most limiter keys are short (an IP address as text, a tenant id, a short API key). A
//! `Box<[u8]>` costs a heap allocation per stored key (16 bytes of pointer plus at least 32 of
//! allocation) and one per request when a layer builds the key; keys of up to
//! [`ByteKey::INLINE`] bytes here live inside the 24-byte value and never allocate.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};

/// A byte string, inline up to [`ByteKey::INLINE`] bytes, boxed beyond. Hashes, compares and
/// borrows exactly like `[u8]`, so a keyed limiter over `ByteKey` is looked up by `&[u8]`.
#[derive(Clone)]
pub struct ByteKey(Repr);

#[derive(Clone)]
enum Repr {
    Inline { len: u8, bytes: [u8; ByteKey::INLINE] },
    Heap(Box<[u8]>),
}

impl ByteKey {
    /// The longest key kept inline.
    pub const INLINE: usize = 22;

    /// A key holding a copy of `bytes`.
    pub fn new(bytes: &[u8]) -> ByteKey {
        if bytes.len() <= ByteKey::INLINE {
            let mut inline = [0u8; ByteKey::INLINE];
            inline[..bytes.len()].copy_from_slice(bytes);
            // Cannot truncate: the length is at most INLINE (22).
            ByteKey(Repr::Inline { len: bytes.len() as u8, bytes: inline })
        } else {
            ByteKey(Repr::Heap(bytes.into()))
        }
    }

    /// The bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            Repr::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Repr::Heap(b) => b,
        }
    }
}

impl From<&[u8]> for ByteKey {
    fn from(bytes: &[u8]) -> ByteKey {
        ByteKey::new(bytes)
    }
}

impl From<&str> for ByteKey {
    fn from(s: &str) -> ByteKey {
        ByteKey::new(s.as_bytes())
    }
}

impl Borrow<[u8]> for ByteKey {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl PartialEq for ByteKey {
    fn eq(&self, other: &ByteKey) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for ByteKey {}

impl Hash for ByteKey {
    /// Hashes as the byte slice does, as `Borrow<[u8]>` requires.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl fmt::Debug for ByteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ByteKey({:?})", String::from_utf8_lossy(self.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn byte_keys_are_24_bytes_and_short_ones_stay_inline() {
        assert_eq!(std::mem::size_of::<ByteKey>(), 24);
        assert!(matches!(ByteKey::new(b"203.0.113.7").0, Repr::Inline { .. }));
        assert!(matches!(ByteKey::new(&[7u8; 23]).0, Repr::Heap(_)));
    }

    #[test]
    fn byte_keys_compare_and_hash_like_their_bytes() {
        let s = hashbrown::DefaultHashBuilder::default();
        for bytes in [&b""[..], b"a", &[1u8; 22], &[2u8; 40]] {
            let k = ByteKey::new(bytes);
            assert_eq!(k.as_bytes(), bytes);
            assert_eq!(s.hash_one(&k), s.hash_one(bytes));
            assert_eq!(k, ByteKey::from(bytes));
        }
        assert_ne!(ByteKey::new(b"ab"), ByteKey::new(b"ab\0"));
    }
}
