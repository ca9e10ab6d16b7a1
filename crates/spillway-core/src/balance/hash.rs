//! A small, fast, stable 64-bit hash for balancing keys: header values, client addresses and
//! endpoint identities.
//!
//! Why our own: consistent hashing needs a hash that every gateway instance (and every release)
//! computes identically — `std`'s `DefaultHasher` is randomly seeded and explicitly unstable —
//! and the core takes no dependencies for it. The construction is xxHash64-like (one 64-bit
//! lane, multiply-rotate rounds over 8-byte words, xxHash's avalanche finalizer); it is not
//! cryptographic and must not be used where an attacker choosing keys matters.
//!
//! **Stability:** the values of [`hash_bytes`] and [`hash_u64`] are part of the contract
//! (pinned by tests): changing them would move every consistently-hashed key.

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

/// Hashes `data` with seed 0. Stable across processes, platforms and releases.
///
/// ```
/// use spillway_core::balance::hash_bytes;
/// assert_eq!(hash_bytes(b"user-42"), hash_bytes(b"user-42"));
/// assert_ne!(hash_bytes(b"user-42"), hash_bytes(b"user-43"));
/// ```
#[inline]
pub fn hash_bytes(data: &[u8]) -> u64 {
    hash_bytes_seeded(data, 0)
}

/// Hashes `data` with a seed; different seeds give independent-looking hash functions.
pub fn hash_bytes_seeded(data: &[u8], seed: u64) -> u64 {
    let mut h = seed.wrapping_add(P5).wrapping_add(data.len() as u64);
    let mut words = data.chunks_exact(8);
    for w in &mut words {
        let v = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        h ^= round(v);
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        let mut buf = [0u8; 8];
        buf[..tail.len()].copy_from_slice(tail);
        h ^= u64::from_le_bytes(buf).wrapping_mul(P1);
        h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
    }
    avalanche(h)
}

/// Hashes one integer key (e.g. an already-numeric user id). Stable like [`hash_bytes`].
#[inline]
pub fn hash_u64(value: u64) -> u64 {
    avalanche(value.wrapping_add(P5) ^ round(value))
}

/// Hashes an ordered pair, e.g. (endpoint identity, virtual-node number).
#[inline]
pub(crate) fn hash_pair(a: u64, b: u64) -> u64 {
    let h = round(a).rotate_left(27).wrapping_mul(P1).wrapping_add(P4) ^ round(b);
    avalanche(h.wrapping_add(P5))
}

#[inline]
fn round(v: u64) -> u64 {
    v.wrapping_mul(P2).rotate_left(31).wrapping_mul(P1)
}

#[inline]
fn avalanche(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^= h >> 32;
    h
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hash_values_are_pinned_so_rings_agree_across_releases() {
        // If this test fails, every consistently-hashed key would move on upgrade.
        assert_eq!(hash_bytes(b""), 0xef46_db37_51d8_e999);
        assert_eq!(hash_bytes(b"hello"), 0xf04e_1d7d_3ed5_fcd4);
        assert_eq!(hash_bytes(b"127.0.0.1:8080"), 0x0ed5_f5d6_a50a_e1f7);
        assert_eq!(hash_u64(42), 0xb386_965e_9a6a_6504);
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
