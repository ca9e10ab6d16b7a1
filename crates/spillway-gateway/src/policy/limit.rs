//! One configured rate limit, built from the core limiters: a lock-free single bucket for
//! `key: route` (token bucket, GCRA, leaky bucket), a `KeyedLimiter` for everything keyed (and
//! for the window and warm-up algorithms, whose state needs a lock anyway).

use crate::config::{LimitAlgorithm, LimitConfig};
use spillway_core::rate::{
    BatchedTokenBucket, ByteKey, FixedWindowConfig, Gcra, GcraConfig, KeyedLimiter,
    KeyedLimiterBuilder, LeakyBucket, LeakyBucketConfig, RateAlgorithm, SlidingWindowConfig,
    TokenBucketConfig, WarmUpConfig,
};
use spillway_core::{Criticality, Decision, Instant};

/// A keyed limiter over byte keys, for any algorithm.
type Keyed<A> = KeyedLimiter<ByteKey, A>;

/// The state of one limit.
#[derive(Debug)]
enum State {
    /// One hot bucket shared by every worker: each worker borrows small batches of tokens so
    /// the shared cache line is not touched on every request.
    TokenBucket(BatchedTokenBucket),
    Gcra(Gcra),
    LeakyBucket(LeakyBucket),
    KeyedTokenBucket(Keyed<TokenBucketConfig>),
    KeyedGcra(Keyed<GcraConfig>),
    KeyedLeakyBucket(Keyed<LeakyBucketConfig>),
    FixedWindow(Keyed<FixedWindowConfig>),
    SlidingWindow(Keyed<SlidingWindowConfig>),
    WarmUp(Keyed<WarmUpConfig>),
}

/// One compiled limit of a route.
#[derive(Debug)]
pub struct RouteLimit {
    /// Its settings.
    pub config: LimitConfig,
    state: State,
    /// Per-value limits that replace this one for their value (`overrides:`).
    overrides: Vec<(Vec<u8>, RouteLimit)>,
}

fn keyed<A: RateAlgorithm>(algorithm: A, max_keys: usize) -> Keyed<A> {
    KeyedLimiterBuilder::new(algorithm).max_keys(max_keys).build()
}

impl RouteLimit {
    /// A fresh limit (full buckets, empty windows) for `workers` worker threads.
    pub fn new(config: LimitConfig, workers: usize) -> RouteLimit {
        let workers = std::num::NonZeroUsize::new(workers).unwrap_or(std::num::NonZeroUsize::MIN);
        let single = config.key.is_route();
        let max = config.max_keys;
        let state = match (&config.algorithm, single) {
            (LimitAlgorithm::TokenBucket(c), true) => {
                State::TokenBucket(BatchedTokenBucket::new(c.clone(), workers))
            }
            (LimitAlgorithm::Gcra(c), true) => State::Gcra(Gcra::from_config(c.clone())),
            (LimitAlgorithm::LeakyBucket(c), true) => {
                State::LeakyBucket(LeakyBucket::from_config(c.clone()))
            }
            (LimitAlgorithm::TokenBucket(c), false) => {
                State::KeyedTokenBucket(keyed(c.clone(), max))
            }
            (LimitAlgorithm::Gcra(c), false) => State::KeyedGcra(keyed(c.clone(), max)),
            (LimitAlgorithm::LeakyBucket(c), false) => {
                State::KeyedLeakyBucket(keyed(c.clone(), max))
            }
            (LimitAlgorithm::FixedWindow(c), _) => State::FixedWindow(keyed(c.clone(), max)),
            (LimitAlgorithm::SlidingWindow(c), _) => State::SlidingWindow(keyed(c.clone(), max)),
            (LimitAlgorithm::WarmUp(c), _) => State::WarmUp(keyed(c.clone(), max)),
        };
        let overrides = config
            .overrides
            .iter()
            .map(|(value, c)| {
                (value.as_bytes().to_vec(), RouteLimit::new(c.clone(), workers.get()))
            })
            .collect();
        RouteLimit { config, state, overrides }
    }

    /// Judges one request with key bytes `key` (ignored by a `key: route` limit) on worker
    /// thread `worker`.
    pub fn check(&self, key: &[u8], now: Instant, class: Criticality, worker: usize) -> Decision {
        if let Some((_, o)) = self.overrides.iter().find(|(value, _)| value == key) {
            return o.check(key, now, class, worker);
        }
        match &self.state {
            State::TokenBucket(b) => b.check(worker, now, 1, class),
            State::Gcra(b) => b.check_n(now, 1, class),
            State::LeakyBucket(b) => b.check_n(now, 1, class),
            State::KeyedTokenBucket(k) => k.check_bytes(key, now, class),
            State::KeyedGcra(k) => k.check_bytes(key, now, class),
            State::KeyedLeakyBucket(k) => k.check_bytes(key, now, class),
            State::FixedWindow(k) => k.check_bytes(key, now, class),
            State::SlidingWindow(k) => k.check_bytes(key, now, class),
            State::WarmUp(k) => k.check_bytes(key, now, class),
        }
    }

    /// Keys tracked now (1 for a single bucket).
    pub fn keys(&self) -> usize {
        match &self.state {
            State::TokenBucket(_) | State::Gcra(_) | State::LeakyBucket(_) => 1,
            State::KeyedTokenBucket(k) => k.len(),
            State::KeyedGcra(k) => k.len(),
            State::KeyedLeakyBucket(k) => k.len(),
            State::FixedWindow(k) => k.len(),
            State::SlidingWindow(k) => k.len(),
            State::WarmUp(k) => k.len(),
        }
    }

    /// Whether `other` has the same settings (so a reload keeps this state).
    pub fn same_settings(&self, other: &LimitConfig) -> bool {
        self.config.key == other.key
            && self.config.algorithm == other.algorithm
            && self.config.max_keys == other.max_keys
            && self.config.hot_only == other.hot_only
            && self.overrides.len() == other.overrides.len()
            && self
                .overrides
                .iter()
                .zip(&other.overrides)
                .all(|((v, o), (ov, oc))| v == ov.as_bytes() && o.same_settings(oc))
    }
}
