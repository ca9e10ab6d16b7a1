//! Time and randomness as the layers feed them to the cores: tokio's clock seen as core
//! [`Instant`]s, and a cheap lock-free source of uniform random values.
//!
//! Why one module: the cores take `now` and random values as arguments; every layer must
//! produce them the same way — from tokio's clock, so `#[tokio::test(start_paused = true)]`
//! controls time, and with one shared origin, so an instant made by one layer (a deadline)
//! means the same to another — and without pulling the `rand` crate onto the request path.

use spillway_core::clock::duration_nanos;
use spillway_core::random::{splitmix64, unit_f64, GOLDEN_GAMMA};
use spillway_core::{Clock, Instant};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The layers' clock: tokio's clock (`tokio::time::Instant`) expressed as a
/// core [`Instant`], so that deadlines and tokio timers agree — also under
/// `#[tokio::test(start_paused = true)]`, where time only moves when the test says.
///
/// All `TokioClock`s share one origin, fixed when first used (a day earlier than that moment
/// where the OS clock allows, so that a test runtime whose paused clock started a little
/// before still maps forward), so deadlines made by one layer can be read by another.
#[derive(Copy, Clone, Debug, Default)]
pub struct TokioClock;

fn origin() -> std::time::Instant {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    *ORIGIN.get_or_init(|| {
        let now = std::time::Instant::now();
        [86_400, 3_600, 60]
            .into_iter()
            .find_map(|secs| now.checked_sub(Duration::from_secs(secs)))
            .unwrap_or(now)
    })
}

impl Clock for TokioClock {
    fn now(&self) -> Instant {
        let since = tokio::time::Instant::now().into_std().saturating_duration_since(origin());
        Instant::ZERO + since
    }
}

impl TokioClock {
    /// The core instant for a tokio instant (instants before the origin map to the origin).
    #[inline]
    pub fn at(&self, t: tokio::time::Instant) -> Instant {
        Instant::from_nanos(duration_nanos(t.into_std().saturating_duration_since(origin())))
    }
}

/// A splitmix64 sequence ([`spillway_core::random`]) behind one atomic counter: each call
/// takes the next value. Not cryptographic; good enough to spread drops, picks and backoff jitter.
#[derive(Debug)]
pub struct Prng {
    state: AtomicU64,
}

impl Prng {
    /// A sequence seeded from the wall clock and a process-wide counter, so two layers built
    /// at the same moment still differ.
    pub fn from_time() -> Prng {
        static INSTANCES: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(duration_nanos)
            .unwrap_or(0);
        let instance = INSTANCES.fetch_add(1, Ordering::Relaxed);
        Prng::seeded(nanos ^ instance.wrapping_mul(0xA076_1D64_78BD_642F))
    }

    /// A fixed sequence (tests).
    pub fn seeded(seed: u64) -> Prng {
        Prng { state: AtomicU64::new(seed) }
    }

    /// The next uniformly distributed 64-bit value.
    #[inline]
    pub fn next_u64(&self) -> u64 {
        splitmix64(self.state.fetch_add(GOLDEN_GAMMA, Ordering::Relaxed))
    }

    /// A uniform value in `[0, 1)`.
    #[inline]
    pub fn next_f64(&self) -> f64 {
        unit_f64(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_values_are_in_the_unit_interval_and_spread() {
        let prng = Prng::seeded(7);
        let values: Vec<f64> = (0..10_000).map(|_| prng.next_f64()).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let below_half = values.iter().filter(|v| **v < 0.5).count();
        assert!((4_500..5_500).contains(&below_half), "{below_half}");
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock;
        let before = clock.now();
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(clock.now().nanos_since(before), 1_500_000_000);
    }
}
