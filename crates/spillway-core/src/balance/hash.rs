//! The stable 64-bit hash for balancing keys: header values, client addresses and endpoint
//! identities. It is XXH64 (the `xxhash-rust` crate), with the reference algorithm's values.
//!
//! Why XXH64: consistent hashing needs a hash that every gateway instance (and every release)
//! computes identically — `std`'s `DefaultHasher` is randomly seeded and explicitly unstable —
//! and a published, widely implemented one lets any other tool (a client library, a script,
//! `xxhsum`) predict where a key lands. It is not cryptographic and must not be used where an
//! attacker choosing keys matters.
//!
//! **Stability:** the values of [`hash_bytes`] and [`hash_u64`] are part of the contract
//! (pinned by tests against XXH64's reference values): changing them would move every
//! consistently-hashed key. Integers are hashed as their 8 little-endian bytes.

use xxhash_rust::xxh64::xxh64;

/// XXH64 of `data` with seed 0. Stable across processes, platforms and releases.
///
/// ```
/// use spillway_core::balance::hash_bytes;
/// assert_eq!(hash_bytes(b"hello"), 0x26c7_827d_889f_6da3); // `echo -n hello | xxhsum -H64`
/// assert_ne!(hash_bytes(b"user-42"), hash_bytes(b"user-43"));
/// ```
#[inline]
pub fn hash_bytes(data: &[u8]) -> u64 {
    xxh64(data, 0)
}

/// XXH64 of `data` with a seed; different seeds give independent-looking hash functions.
#[inline]
pub fn hash_bytes_seeded(data: &[u8], seed: u64) -> u64 {
    xxh64(data, seed)
}

/// Hashes one integer key (e.g. an already-numeric user id): XXH64 of its 8 little-endian
/// bytes, seed 0. Stable like [`hash_bytes`].
#[inline]
pub fn hash_u64(value: u64) -> u64 {
    xxh64(&value.to_le_bytes(), 0)
}

/// Hashes an ordered pair, e.g. (endpoint identity, virtual-node number): XXH64 of the 16
/// bytes `a` then `b`, each little-endian, seed 0 — so a tool can rebuild the ring.
#[inline]
pub(crate) fn hash_pair(a: u64, b: u64) -> u64 {
    let mut buf = [0u8; 16];
    buf[..8].copy_from_slice(&a.to_le_bytes());
    buf[8..].copy_from_slice(&b.to_le_bytes());
    xxh64(&buf, 0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hash_values_are_xxh64_reference_values_pinned_so_rings_agree_across_releases() {
        // If this test fails, every consistently-hashed key would move on upgrade. The values
        // are XXH64's, cross-checked with the C reference library (libxxhash 0.8, `XXH64()`).
        assert_eq!(hash_bytes(b""), 0xef46_db37_51d8_e999);
        assert_eq!(hash_bytes(b"hello"), 0x26c7_827d_889f_6da3);
        assert_eq!(hash_bytes(b"127.0.0.1:8080"), 0xc65e_86b0_00fb_3cbf);
        assert_eq!(hash_bytes_seeded(b"k", 1), 0xb338_f175_c8c7_8bc5);
        assert_eq!(hash_u64(42), 0xb556_806f_b6d1_4353);
        assert_eq!(hash_pair(1, 2), 0x4b18_0fec_3ef3_d4ac);
    }

    #[test]
    fn length_and_every_byte_change_the_hash() {
        assert_ne!(hash_bytes(b"ab"), hash_bytes(b"ab\0"));
        assert_ne!(hash_bytes(b""), hash_bytes(b"\0"));
        let base = *b"0123456789abcdef-x";
        let h0 = hash_bytes(&base);
        for i in 0..base.len() {
            let mut m = base;
            m[i] ^= 1;
            assert_ne!(hash_bytes(&m), h0, "flipping byte {i}");
        }
    }

    #[test]
    fn single_bit_flips_change_about_half_the_output_bits() {
        let mut total = 0u32;
        let mut n = 0u32;
        for k in 0..64u64 {
            let key = k.to_le_bytes();
            let h = hash_bytes(&key);
            for bit in 0..64 {
                let mut m = k.to_le_bytes();
                m[bit / 8] ^= 1 << (bit % 8);
                total += (hash_bytes(&m) ^ h).count_ones();
                n += 1;
            }
        }
        let mean = f64::from(total) / f64::from(n);
        assert!((28.0..36.0).contains(&mean), "mean flipped bits {mean}");
    }

    #[test]
    fn seeds_give_different_hashes() {
        assert_ne!(hash_bytes_seeded(b"k", 1), hash_bytes_seeded(b"k", 2));
        assert_ne!(hash_pair(1, 2), hash_pair(2, 1));
    }
}
