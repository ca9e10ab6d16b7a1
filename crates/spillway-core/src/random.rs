//! The one source of cheap pseudo-randomness for Spillway's edges: the splitmix64 step.
//!
//! Algorithms in this crate take random values as inputs (a throttle's draw, a balancer's
//! pick, backoff jitter) and never generate them. The layers, the gateway and the load tools
//! make those values with this function from a counter they advance by [`GOLDEN_GAMMA`], so
//! there is one generator to trust, not one per crate. Not for secrets.

/// The increment of a splitmix64 sequence (2⁶⁴ divided by the golden ratio, odd).
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// One splitmix64 step: the value that follows `state` in its sequence, well mixed. A counter
/// advanced by [`GOLDEN_GAMMA`] and passed through this function gives a uniform 64-bit
/// sequence (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", 2014).
///
/// ```
/// use spillway_core::random::splitmix64;
/// assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
/// ```
#[inline]
pub const fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(GOLDEN_GAMMA);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A uniform value in `[0, 1)` from 64 random bits (the top 53, as an `f64` holds).
#[inline]
pub fn unit_f64(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_states_give_spread_values_in_the_unit_interval() {
        let values: Vec<f64> =
            (0..10_000u64).map(|i| unit_f64(splitmix64(i.wrapping_mul(GOLDEN_GAMMA)))).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let below_half = values.iter().filter(|v| **v < 0.5).count();
        assert!((4_500..5_500).contains(&below_half), "{below_half}");
    }
}
