//! Small helpers the breaker, throttle and retry layers share: tokio time seen as core
//! [`Instant`]s, and a cheap lock-free source of uniform random values.
//!
//! Why: the cores take `now` and random values as arguments; the layers must produce them the
//! same way everywhere, from tokio's clock (so `start_paused` tests control time) and without
//! pulling the `rand` crate onto the request path.

use spillway_core::clock::duration_nanos;
use spillway_core::Instant;
use std::sync::atomic::{AtomicU64, Ordering};

/// Maps tokio time onto the core's monotonic [`Instant`]: nanoseconds since this clock was
/// made. Follows tokio's paused clock in tests.
#[derive(Copy, Clone, Debug)]
pub(crate) struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    pub(crate) fn new() -> TokioClock {
        TokioClock { origin: tokio::time::Instant::now() }
    }

    /// The core instant for a tokio instant (instants before the origin map to the origin).
    #[inline]
    pub(crate) fn at(&self, t: tokio::time::Instant) -> Instant {
        Instant::from_nanos(duration_nanos(t.saturating_duration_since(self.origin)))
    }

    /// Now, as a core instant.
    #[inline]
    pub(crate) fn now(&self) -> Instant {
        self.at(tokio::time::Instant::now())
    }
}

/// A splitmix64 sequence behind one atomic counter: each call takes the next value. Not
/// cryptographic; good enough to spread drops and backoff jitter.
#[derive(Debug)]
pub(crate) struct Prng {
    state: AtomicU64,
}

impl Prng {
    /// A sequence seeded from the wall clock and a process-wide counter, so two layers built
    /// at the same moment still differ.
    pub(crate) fn from_time() -> Prng {
        static INSTANCES: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let instance = INSTANCES.fetch_add(1, Ordering::Relaxed);
        Prng::seeded(nanos ^ instance.wrapping_mul(0xA076_1D64_78BD_642F))
    }

    /// A fixed sequence (tests).
    pub(crate) fn seeded(seed: u64) -> Prng {
        Prng { state: AtomicU64::new(seed) }
    }

    /// A uniform value in `[0, 1)`.
    #[inline]
    pub(crate) fn next_f64(&self) -> f64 {
        let mut z = self.state.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
        let clock = TokioClock::new();
        let before = clock.now();
        tokio::time::advance(Duration::from_millis(1_500)).await;
        assert_eq!(clock.now().nanos_since(before), 1_500_000_000);
    }
}
