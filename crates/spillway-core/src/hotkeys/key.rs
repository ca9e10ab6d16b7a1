//! The stored form of a hot-key sketch's key: the key itself up to [`MAX_KEY_LEN`] bytes, a
//! readable prefix plus a digest of the whole key beyond.
//!
//! Why a digest and not plain truncation: two long keys that share their first 256 bytes (long
//! query values, long paths under one prefix) would otherwise be counted as one, so a
//! hot-parameter limit would throttle both together. With the digest they stay apart, memory per
//! key stays bounded, and the operator still reads where the key came from.

use std::borrow::Cow;
use xxhash_rust::xxh64::xxh64;

/// The longest key a [`TopK`](super::TopK) stores as it is. A longer key is stored as its first
/// `MAX_KEY_LEN - 17` bytes, then `#`, then the 16 lowercase hexadecimal digits of the XXH64
/// (seed 0) of the *whole* key: exactly `MAX_KEY_LEN` bytes. Every method that takes a key
/// applies the same rule, so a caller always passes the original key.
pub const MAX_KEY_LEN: usize = 256;

/// `#` and 16 hexadecimal digits.
const DIGEST_LEN: usize = 17;

/// The form in which a [`TopK`](super::TopK) stores and reports `key` (see [`MAX_KEY_LEN`]).
///
/// ```
/// use spillway_core::hotkeys::{stored_key, MAX_KEY_LEN};
///
/// assert_eq!(&*stored_key(b"/items/42"), b"/items/42");
/// let long = vec![b'a'; 1000];
/// let stored = stored_key(&long);
/// assert_eq!(stored.len(), MAX_KEY_LEN);
/// assert!(stored.starts_with(&[b'a'; MAX_KEY_LEN - 17]));
/// assert_eq!(stored[MAX_KEY_LEN - 17], b'#');
/// ```
pub fn stored_key(key: &[u8]) -> Cow<'_, [u8]> {
    with_stored(key, |stored| {
        if stored.len() == key.len() {
            Cow::Borrowed(key)
        } else {
            Cow::Owned(stored.to_vec())
        }
    })
}

/// Calls `f` with the stored form of `key`. Keys up to [`MAX_KEY_LEN`] bytes (the common case)
/// are passed through untouched; only longer ones pay for the digest and a stack buffer.
#[inline]
pub(crate) fn with_stored<R>(key: &[u8], f: impl FnOnce(&[u8]) -> R) -> R {
    if key.len() <= MAX_KEY_LEN {
        f(key)
    } else {
        let mut buf = [0u8; MAX_KEY_LEN];
        digest_form(key, &mut buf);
        f(&buf)
    }
}

/// Writes the prefix-and-digest form of a long `key` into `buf`.
fn digest_form(key: &[u8], buf: &mut [u8; MAX_KEY_LEN]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let prefix = MAX_KEY_LEN - DIGEST_LEN;
    buf[..prefix].copy_from_slice(&key[..prefix]);
    buf[prefix] = b'#';
    let digest = xxh64(key, 0);
    for (i, out) in buf[prefix + 1..].iter_mut().enumerate() {
        let nibble = (digest >> (60 - 4 * i)) & 0xf;
        *out = HEX[nibble as usize];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_up_to_the_limit_are_stored_as_they_are() {
        assert!(matches!(stored_key(b""), Cow::Borrowed(b"")));
        let at_limit = vec![b'x'; MAX_KEY_LEN];
        assert!(matches!(stored_key(&at_limit), Cow::Borrowed(k) if k == &at_limit[..]));
    }

    #[test]
    fn long_keys_keep_a_prefix_and_the_xxh64_of_the_whole_key() {
        let mut long = vec![b'p'; MAX_KEY_LEN + 1];
        long[MAX_KEY_LEN] = b'!';
        let stored = stored_key(&long);
        assert_eq!(stored.len(), MAX_KEY_LEN);
        assert_eq!(&stored[..MAX_KEY_LEN - DIGEST_LEN], &long[..MAX_KEY_LEN - DIGEST_LEN]);
        let digest = format!("#{:016x}", xxh64(&long, 0));
        assert_eq!(&stored[MAX_KEY_LEN - DIGEST_LEN..], digest.as_bytes());
    }

    #[test]
    fn long_keys_sharing_a_prefix_stay_distinct() {
        let mut a = vec![b'q'; 600];
        let mut b = a.clone();
        a[599] = b'1';
        b[599] = b'2';
        assert_ne!(stored_key(&a), stored_key(&b));
        assert_eq!(stored_key(&a), stored_key(&a.clone()));
    }
}
