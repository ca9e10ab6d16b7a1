//! [`ConcurrencyLimiter`]: admits a request while fewer than its class's share of a learned limit
//! are in flight, and feeds each completion back to the limit algorithm.
//!
//! Why a separate type: the algorithms are single-threaded state machines; the limiter makes one
//! shareable. Admission is lock-free (the limit is cached in an atomic); only a completion takes
//! the algorithm's lock, briefly, to add its sample.

use super::LimitAlgorithm;
use crate::clock::Instant;
use crate::criticality::Criticality;
use crate::decision::{RejectReason, Rejection};
use crate::overload::ClassShares;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

pub use crate::decision::Outcome;

/// Proof of admission, to give back once to [`ConcurrencyLimiter::release`].
#[must_use = "an admitted request must be released, or inflight leaks"]
#[derive(Debug, PartialEq, Eq)]
pub struct ConcurrencyToken {
    started: Instant,
    inflight: u64,
}

impl ConcurrencyToken {
    /// When the request was admitted.
    pub fn started_at(&self) -> Instant {
        self.started
    }
}

/// A concurrency limiter whose limit a [`LimitAlgorithm`] learns. `&self` everywhere: share it
/// by reference or `Arc`.
///
/// ```
/// use spillway_core::concurrency::{Aimd, AimdConfig, ConcurrencyLimiter, Outcome};
/// use spillway_core::overload::ClassShares;
/// use spillway_core::{Criticality, Instant};
/// use std::time::Duration;
///
/// let aimd = Aimd::try_new(AimdConfig::default()).unwrap();
/// let limiter = ConcurrencyLimiter::new(aimd, ClassShares::concurrency_default());
/// let t0 = Instant::ZERO;
/// let token = limiter.try_acquire(Criticality::Critical, t0).unwrap();
/// limiter.release(token, Outcome::Success, t0 + Duration::from_millis(8));
/// assert_eq!(limiter.inflight(), 0);
/// ```
#[derive(Debug)]
pub struct ConcurrencyLimiter<A> {
    algorithm: Mutex<A>,
    limit: AtomicU64,
    inflight: AtomicU64,
    shares: ClassShares,
}

impl<A: LimitAlgorithm> ConcurrencyLimiter<A> {
    /// A limiter starting at `algorithm`'s current limit, scaled per class by `shares`.
    pub fn new(algorithm: A, shares: ClassShares) -> ConcurrencyLimiter<A> {
        let limit = AtomicU64::new(algorithm.limit());
        ConcurrencyLimiter {
            algorithm: Mutex::new(algorithm),
            limit,
            inflight: AtomicU64::new(0),
            shares,
        }
    }

    /// Admits a request of class `class` if fewer than its share of the limit are in flight,
    /// else rejects it as [`RejectReason::ConcurrencyLimit`]. Never admits past the limit, even under
    /// races (a racing request may instead be refused spuriously, for an instant).
    #[inline]
    pub fn try_acquire(
        &self,
        class: Criticality,
        now: Instant,
    ) -> Result<ConcurrencyToken, Rejection> {
        let class_limit = self.shares.limit(self.limit.load(Ordering::Relaxed), class);
        let before = self.inflight.fetch_add(1, Ordering::AcqRel);
        if before >= class_limit {
            self.inflight.fetch_sub(1, Ordering::AcqRel);
            return Err(Rejection::new(RejectReason::ConcurrencyLimit));
        }
        Ok(ConcurrencyToken { started: now, inflight: before + 1 })
    }

    /// Gives back an admitted request that ended at `now` with `outcome`.
    pub fn release(&self, token: ConcurrencyToken, outcome: Outcome, now: Instant) {
        if outcome != Outcome::Ignored {
            let rtt = now.saturating_duration_since(token.started);
            let mut algorithm = self.algorithm.lock();
            algorithm.on_sample(rtt, token.inflight, outcome == Outcome::Failure, now);
            self.limit.store(algorithm.limit(), Ordering::Relaxed);
        }
        self.inflight.fetch_sub(1, Ordering::AcqRel);
    }

    /// The learned limit (the top class's share of it is what `CriticalPlus` gets by default).
    #[inline]
    pub fn limit(&self) -> u64 {
        self.limit.load(Ordering::Relaxed)
    }

    /// `class`'s share of the learned limit.
    pub fn class_limit(&self, class: Criticality) -> u64 {
        self.shares.limit(self.limit(), class)
    }

    /// Requests admitted and not yet released.
    #[inline]
    pub fn inflight(&self) -> u64 {
        self.inflight.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::concurrency::{Aimd, AimdConfig, Gradient2, Gradient2Config};
    use proptest::prelude::*;
    use std::time::Duration;

    fn ms(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    fn aimd_limiter(initial: u64) -> ConcurrencyLimiter<Aimd> {
        let config = AimdConfig { initial_limit: initial, ..AimdConfig::default() };
        let aimd = Aimd::try_new(config).expect("valid");
        ConcurrencyLimiter::new(aimd, ClassShares::concurrency_default())
    }

    #[test]
    fn admits_while_inflight_is_below_the_class_limit() {
        let limiter = aimd_limiter(20);
        let held: Vec<_> = (0..18)
            .map(|_| limiter.try_acquire(Criticality::Critical, ms(0)).expect("under 90 % of 20"))
            .collect();
        let refused = limiter.try_acquire(Criticality::Critical, ms(0)).expect_err("18 = 90 %");
        assert_eq!(refused.reason, RejectReason::ConcurrencyLimit);
        assert!(limiter.try_acquire(Criticality::CriticalPlus, ms(0)).is_ok());
        assert!(limiter.try_acquire(Criticality::Sheddable, ms(0)).is_err());
        assert_eq!(limiter.inflight(), 19);
        for token in held {
            limiter.release(token, Outcome::Ignored, ms(1));
        }
        assert_eq!(limiter.inflight(), 1);
    }

    #[test]
    fn released_samples_move_the_learned_limit() {
        let limiter = aimd_limiter(20);
        for i in 0..10 {
            let held: Vec<_> = (0..10)
                .filter_map(|_| limiter.try_acquire(Criticality::Critical, ms(i)).ok())
                .collect();
            for token in held {
                limiter.release(token, Outcome::Success, ms(i) + Duration::from_micros(500));
            }
        }
        assert!(limiter.limit() > 20, "limit {}", limiter.limit());
        let before = limiter.limit();
        let token = limiter.try_acquire(Criticality::Critical, ms(100)).expect("admit");
        limiter.release(token, Outcome::Failure, ms(101));
        assert!(limiter.limit() < before);
    }

    #[test]
    fn ignored_outcomes_release_without_a_sample() {
        let limiter = aimd_limiter(20);
        let token = limiter.try_acquire(Criticality::Critical, ms(0)).expect("admit");
        limiter.release(token, Outcome::Ignored, ms(10_000));
        assert_eq!(limiter.limit(), 20);
        assert_eq!(limiter.inflight(), 0);
    }

    #[test]
    fn gradient2_limiter_backs_off_when_latency_climbs() {
        let g = Gradient2::try_new(Gradient2Config::default()).expect("valid");
        let limiter = ConcurrencyLimiter::new(g, ClassShares::uniform());
        let mut now = 0;
        let mut round = |rtt_ms: u64| {
            let held: Vec<_> = (0..limiter.limit())
                .filter_map(|_| limiter.try_acquire(Criticality::Critical, ms(now)).ok())
                .collect();
            now += rtt_ms;
            for token in held {
                limiter.release(token, Outcome::Success, ms(now));
            }
        };
        for _ in 0..200 {
            round(10); // 2 s: 20 sampling windows of level latency
        }
        let peak = limiter.limit();
        assert!(peak > 30, "peak {peak}");
        for _ in 0..20 {
            round(100); // latency ×10 for 20 windows
        }
        assert!(limiter.limit() < peak / 2, "{peak} -> {}", limiter.limit());
    }

    /// Several std threads acquire batches of every class and release them: at no moment are
    /// more requests held than the top class's limit, and nothing leaks.
    #[test]
    fn concurrent_acquire_never_exceeds_the_limit_and_never_leaks() {
        use std::sync::atomic::AtomicUsize;
        let limiter = aimd_limiter(10);
        let limit = limiter.class_limit(Criticality::CriticalPlus) as usize;
        let held = AtomicUsize::new(0);
        let most_held = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..4usize {
                let (limiter, held, most_held) = (&limiter, &held, &most_held);
                s.spawn(move || {
                    let mut tokens = Vec::with_capacity(6);
                    for i in 0..3_000usize {
                        for j in 0..6 {
                            let class = Criticality::ALL[(i + j + t) % 4];
                            if let Ok(token) = limiter.try_acquire(class, ms(0)) {
                                let h = held.fetch_add(1, Ordering::SeqCst) + 1;
                                most_held.fetch_max(h, Ordering::SeqCst);
                                tokens.push(token);
                            }
                        }
                        for token in tokens.drain(..) {
                            held.fetch_sub(1, Ordering::SeqCst);
                            // Ignore: no sample, so the limit stays where it is.
                            limiter.release(token, Outcome::Ignored, ms(1));
                        }
                    }
                });
            }
        });
        assert_eq!(limiter.inflight(), 0, "an admission leaked");
        assert_eq!(limiter.limit(), 10);
        let most = most_held.load(Ordering::SeqCst);
        assert!(most <= limit, "{most} held at once, limit {limit}");
    }

    proptest! {
        /// At one moment, a lower class is never admitted while a higher one is refused, and
        /// inflight never exceeds the limit.
        #[test]
        fn criticality_ordering_and_limit_hold(
            initial in 1u64..100,
            classes in proptest::collection::vec(0usize..4, 1..200),
        ) {
            let limiter = aimd_limiter(initial);
            let mut held = Vec::new();
            for c in classes {
                let admitted: Vec<bool> = Criticality::ALL
                    .iter()
                    .map(|&class| match limiter.try_acquire(class, ms(0)) {
                        Ok(token) => {
                            limiter.release(token, Outcome::Ignored, ms(0));
                            true
                        }
                        Err(_) => false,
                    })
                    .collect();
                for low in 0..4 {
                    for high in low + 1..4 {
                        prop_assert!(!admitted[low] || admitted[high]);
                    }
                }
                if let Ok(token) = limiter.try_acquire(Criticality::ALL[c], ms(0)) {
                    held.push(token);
                }
                prop_assert!(limiter.inflight() <= limiter.limit());
            }
        }
    }
}
