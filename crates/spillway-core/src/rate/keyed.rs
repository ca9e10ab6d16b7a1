//! Keyed limiters: one limiter state per key (client IP, API key, route…), for millions of keys
//! in bounded memory.
//!
//! Why this shape: the per-key state of the token bucket and GCRA is one `u64`, so a key costs
//! its own size plus 8 bytes plus the table's slack. Keys live in `N` shards, each a
//! `parking_lot::Mutex` over a `hashbrown::HashTable` with a seeded fast hash (foldhash); the
//! hash is computed once and picks both the shard and the slot. A key whose state equals a
//! fresh one (a full bucket) is *idle*: forgetting it changes no decision, so idle keys are
//! swept whenever a shard would otherwise grow. A shard never holds more than its share of the
//! configured maximum; when it is full of busy keys, the keys closest to idle are evicted (see
//! [`KeyedLimiter`]).

use super::{ByteKey, GcraConfig, Rate, RateAlgorithm, TokenBucketConfig};
use crate::clock::Instant;
use crate::criticality::Criticality;
use crate::decision::Decision;
use hashbrown::DefaultHashBuilder;
use hashbrown::HashTable;
use parking_lot::Mutex;
use std::borrow::Borrow;
use std::fmt;
use std::hash::{BuildHasher, Hash};

/// Shards used unless configured: enough that threads rarely meet on one lock, few enough
/// that a small table costs little.
pub const DEFAULT_SHARDS: usize = 64;

/// Keys kept at most unless configured: 14 336 per default shard, exactly what a hashbrown
/// table of 16 384 slots holds (7/8 full), so a limiter at its cap wastes no slots (about 18 MB
/// with `u64` keys and a token bucket).
pub const DEFAULT_MAX_KEYS: usize = 14_336 * DEFAULT_SHARDS;

/// The bits of the hash that pick a shard. hashbrown uses the low bits for the slot and the top
/// seven for its control byte; the shard takes bits from the middle so neither loses entropy.
const SHARD_SHIFT: u32 = 40;

/// One shard, on its own cache lines so threads on different shards do not false-share.
#[repr(align(128))]
struct Shard<K, St> {
    table: Mutex<HashTable<(K, St)>>,
}

/// A rate limiter with one state per key, shared by reference across threads.
///
/// **When a shard is full** (it holds `max_keys / shards` keys) and a new key is admitted, the
/// shard first forgets its idle keys (exact: their state equals a fresh one). If that frees
/// nothing, it evicts about an eighth of its keys, those whose state is closest to idle (for a
/// bucket: the earliest "full again" time), chosen by a sampled threshold. An evicted key that
/// comes back starts fresh, so under a flood of more distinct keys than the cap, the least
/// recently charged keys may get their burst back early; the admitted key is always stored,
/// and nobody is refused because the table is full. The sweep is O(shard size) and, once a
/// shard is full, runs about once per eighth of its inserts.
///
/// ```
/// use spillway_core::rate::{ByteKey, KeyedLimiter, Rate};
/// use spillway_core::{Clock, Criticality, ManualClock};
///
/// let clock = ManualClock::new();
/// let per_client: KeyedLimiter<ByteKey, _> = KeyedLimiter::gcra(Rate::per_minute(60), 1);
/// let now = clock.now();
/// assert!(per_client.check_bytes(b"203.0.113.7", now, Criticality::Critical).is_admitted());
/// assert!(!per_client.check_bytes(b"203.0.113.7", now, Criticality::Critical).is_admitted());
/// assert!(per_client.check_bytes(b"198.51.100.1", now, Criticality::Critical).is_admitted());
/// ```
pub struct KeyedLimiter<K, A: RateAlgorithm, S = DefaultHashBuilder> {
    algorithm: A,
    shards: Box<[Shard<K, A::State>]>,
    shard_mask: usize,
    max_per_shard: usize,
    hasher: S,
}

impl<K, A: RateAlgorithm, S> fmt::Debug for KeyedLimiter<K, A, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("shards", &self.shards.len())
            .field("max_per_shard", &self.max_per_shard)
            .finish_non_exhaustive()
    }
}

/// Builds a [`KeyedLimiter`] with a chosen shard count, key cap and hasher.
#[derive(Debug)]
pub struct KeyedLimiterBuilder<A, S = DefaultHashBuilder> {
    algorithm: A,
    shards: usize,
    max_keys: usize,
    hasher: S,
}

impl<A: RateAlgorithm> KeyedLimiterBuilder<A> {
    /// A builder with default shards, cap and hasher.
    pub fn new(algorithm: A) -> Self {
        KeyedLimiterBuilder {
            algorithm,
            shards: DEFAULT_SHARDS,
            max_keys: DEFAULT_MAX_KEYS,
            hasher: DefaultHashBuilder::default(),
        }
    }
}

impl<A: RateAlgorithm, S: BuildHasher> KeyedLimiterBuilder<A, S> {
    /// Number of shards, rounded up to a power of two (at least 1).
    pub fn shards(mut self, shards: usize) -> Self {
        self.shards = shards.max(1).next_power_of_two();
        self
    }

    /// The most keys kept at once (split evenly over the shards; at least one per shard).
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Another hasher (the default is foldhash with a random seed per limiter).
    pub fn hasher<S2: BuildHasher>(self, hasher: S2) -> KeyedLimiterBuilder<A, S2> {
        KeyedLimiterBuilder {
            algorithm: self.algorithm,
            shards: self.shards,
            max_keys: self.max_keys,
            hasher,
        }
    }

    /// The limiter.
    pub fn build<K>(self) -> KeyedLimiter<K, A, S> {
        let shards = (0..self.shards)
            .map(|_| Shard { table: Mutex::new(HashTable::new()) })
            .collect::<Box<[_]>>();
        KeyedLimiter {
            algorithm: self.algorithm,
            shard_mask: self.shards - 1,
            max_per_shard: self.max_keys.div_ceil(self.shards).max(1),
            shards,
            hasher: self.hasher,
        }
    }
}

impl<K: Hash + Eq> KeyedLimiter<K, TokenBucketConfig> {
    /// A token bucket of `burst` at `rate` per key, default shards, cap and reserve.
    pub fn token_bucket(rate: Rate, burst: u32) -> Self {
        KeyedLimiter::new(TokenBucketConfig::new(rate, burst))
    }
}

impl<K: Hash + Eq> KeyedLimiter<K, GcraConfig> {
    /// A GCRA of `rate` with `burst` per key, default shards, cap and reserve.
    pub fn gcra(rate: Rate, burst: u32) -> Self {
        KeyedLimiter::new(GcraConfig::new(rate, burst))
    }
}

impl<K: Hash + Eq, A: RateAlgorithm> KeyedLimiter<K, A> {
    /// A limiter applying `algorithm` to each key, with default shards and cap.
    pub fn new(algorithm: A) -> Self {
        KeyedLimiterBuilder::new(algorithm).build()
    }
}

impl<K: Hash + Eq, A: RateAlgorithm, S: BuildHasher> KeyedLimiter<K, A, S> {
    /// Judges one permit of the default class (`CRITICAL`) for `key`.
    #[inline]
    pub fn check(&self, key: &K, now: Instant) -> Decision
    where
        K: Clone,
    {
        self.check_n(key, now, 1, Criticality::Critical)
    }

    /// Judges `permits` permits of `class` for `key`.
    #[inline]
    pub fn check_n(&self, key: &K, now: Instant, permits: u32, class: Criticality) -> Decision
    where
        K: Clone,
    {
        let hash = self.hasher.hash_one(key);
        self.check_hashed(hash, |k| k == key, || key.clone(), now, permits, class)
    }

    /// Judges `permits` permits of `class` for a borrowed form of a key (e.g. `&[u8]` for
    /// [`ByteKey`] or `Box<[u8]>` keys, `&str` for `Box<str>`): the owned key is built only
    /// when a new key is stored.
    #[inline]
    pub fn check_borrowed<Q>(
        &self,
        key: &Q,
        now: Instant,
        permits: u32,
        class: Criticality,
    ) -> Decision
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
        for<'a> &'a Q: Into<K>,
    {
        let hash = self.hasher.hash_one(key);
        self.check_hashed(hash, |k| k.borrow() == key, || key.into(), now, permits, class)
    }

    #[inline]
    fn check_hashed(
        &self,
        hash: u64,
        eq: impl Fn(&K) -> bool,
        make_key: impl FnOnce() -> K,
        now: Instant,
        permits: u32,
        class: Criticality,
    ) -> Decision {
        let shard = &self.shards[(hash >> SHARD_SHIFT) as usize & self.shard_mask];
        let mut table = shard.table.lock();
        if let Some((_, state)) = table.find_mut(hash, |(k, _)| eq(k)) {
            return self.algorithm.check(state, now, permits, class);
        }
        // A key not in the table has a fresh state. Store it only if this request changed it:
        // a refused request leaves it fresh, and fresh states are not worth a slot.
        let mut state = self.algorithm.new_state(now);
        let decision = self.algorithm.check(&mut state, now, permits, class);
        if !self.algorithm.is_idle(&state, now) {
            self.make_room(&mut table, now);
            let hasher = &self.hasher;
            table.insert_unique(hash, (make_key(), state), |(k, _)| hasher.hash_one(k));
        }
        decision
    }

    /// Before an insert: keeps the shard under its cap and keeps idle keys from making it grow.
    #[cold]
    #[inline(never)]
    fn make_room_slow(&self, table: &mut HashTable<(K, A::State)>, now: Instant) {
        let before = table.len();
        table.retain(|(_, st)| !self.algorithm.is_idle(st, now));
        if table.len() >= self.max_per_shard {
            self.evict_closest_to_idle(table);
        } else if table.len() > before - before / 8 && table.len() < self.max_per_shard {
            // Sweeping freed little: let the table grow now, so the next sweep comes only
            // after as many inserts again (amortised O(1) per insert).
            let room = (self.max_per_shard - table.len()).min(table.len().max(1));
            table.reserve(room, |(k, _)| self.hasher.hash_one(k));
        }
    }

    #[inline]
    fn make_room(&self, table: &mut HashTable<(K, A::State)>, now: Instant) {
        if table.len() >= self.max_per_shard || table.len() == table.capacity() {
            self.make_room_slow(table, now);
        }
    }

    /// Drops about an eighth of the shard: the entries ranked lowest (closest to idle).
    fn evict_closest_to_idle(&self, table: &mut HashTable<(K, A::State)>) {
        let target = (table.len() / 8).max(1);
        // Entries are in hash order, which is as good as random: the first 64 are a sample,
        // and its lowest eighth gives the rank threshold.
        let mut sample: Vec<u64> =
            table.iter().take(64).map(|(_, st)| self.algorithm.eviction_rank(st)).collect();
        sample.sort_unstable();
        let Some(&threshold) = sample.get((sample.len() / 8).max(1) - 1) else {
            return;
        };
        // At most `target` go, even when many entries tie at the threshold.
        let mut removed = 0;
        table.retain(|(_, st)| {
            let evict = removed < target && self.algorithm.eviction_rank(st) <= threshold;
            removed += usize::from(evict);
            !evict
        });
    }

    /// Forgets every idle key (its state equals a fresh one): exact, changes no decision.
    /// Returns how many keys were dropped. Shrinks shards left mostly empty.
    pub fn evict_idle(&self, now: Instant) -> usize {
        let mut dropped = 0;
        for shard in self.shards.iter() {
            let mut table = shard.table.lock();
            let before = table.len();
            table.retain(|(_, st)| !self.algorithm.is_idle(st, now));
            dropped += before - table.len();
            if table.len() < table.capacity() / 4 {
                table.shrink_to_fit(|(k, _)| self.hasher.hash_one(k));
            }
        }
        dropped
    }

    /// Forgets every key.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            *shard.table.lock() = HashTable::new();
        }
    }

    /// Keys currently held.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.table.lock().len()).sum()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most keys held at once.
    pub fn max_keys(&self) -> usize {
        self.max_per_shard * self.shards.len()
    }

    /// Bytes allocated by the tables and shards (not counting heap memory owned by the keys
    /// themselves, e.g. the bytes of `Box<[u8]>` keys).
    pub fn table_bytes(&self) -> usize {
        let tables: usize = self.shards.iter().map(|s| s.table.lock().allocation_size()).sum();
        tables + std::mem::size_of_val(&*self.shards)
    }

    /// The rule applied to every key.
    pub fn algorithm(&self) -> &A {
        &self.algorithm
    }
}

impl<A: RateAlgorithm, S: BuildHasher> KeyedLimiter<ByteKey, A, S> {
    /// Judges one permit of `class` for a byte-string key (a header value, an API key): looked
    /// up without allocating; copied once when the key is first stored (inline up to
    /// [`ByteKey::INLINE`] bytes).
    #[inline]
    pub fn check_bytes(&self, key: &[u8], now: Instant, class: Criticality) -> Decision {
        self.check_borrowed(key, now, 1, class)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rate::CriticalityReserve;
    use crate::{Clock, ManualClock};
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn keys_have_independent_buckets() {
        let l: KeyedLimiter<u64, _> = KeyedLimiter::token_bucket(Rate::per_second(1), 2);
        let now = Instant::ZERO;
        assert!(l.check(&1, now).is_admitted());
        assert!(l.check(&1, now).is_admitted());
        assert!(!l.check(&1, now).is_admitted());
        assert!(l.check(&2, now).is_admitted());
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn byte_keys_are_looked_up_by_slice() {
        let l: KeyedLimiter<ByteKey, _> = KeyedLimiter::gcra(Rate::per_second(1), 1);
        let now = Instant::ZERO;
        assert!(l.check_bytes(b"alice", now, Criticality::Critical).is_admitted());
        assert!(!l.check_bytes(b"alice", now, Criticality::Critical).is_admitted());
        assert!(l.check_bytes(b"bob", now, Criticality::Critical).is_admitted());
        assert!(!l.check(&ByteKey::new(b"alice"), now).is_admitted());
        let long = [b'x'; 64];
        assert!(l.check_bytes(&long, now, Criticality::Critical).is_admitted());
        assert!(!l.check_bytes(&long, now, Criticality::Critical).is_admitted());
        // Box<[u8]> keys work too, through the borrowed lookup.
        let boxed: KeyedLimiter<Box<[u8]>, _> = KeyedLimiter::gcra(Rate::per_second(1), 1);
        assert!(boxed.check_borrowed(&b"alice"[..], now, 1, Criticality::Critical).is_admitted());
        assert!(!boxed.check_borrowed(&b"alice"[..], now, 1, Criticality::Critical).is_admitted());
    }

    #[test]
    fn a_refused_new_key_is_not_stored() {
        let l: KeyedLimiter<u64, _> = KeyedLimiter::gcra(Rate::per_second(1), 2);
        let d = l.check_n(&7, Instant::ZERO, 3, Criticality::Critical);
        assert!(!d.is_admitted());
        assert!(l.is_empty());
    }

    #[test]
    fn idle_keys_are_evicted_without_changing_decisions() {
        let clock = ManualClock::new();
        let l: KeyedLimiter<u64, _> = KeyedLimiter::gcra(Rate::per_second(10), 2);
        for k in 0..100 {
            assert!(l.check(&k, clock.now()).is_admitted());
        }
        assert!(l.check(&0, clock.now()).is_admitted());
        clock.advance_ms(100);
        // Key 0 used two permits at time 0; it is full again only at 200 ms.
        assert_eq!(l.evict_idle(clock.now()), 99);
        assert_eq!(l.len(), 1);
        clock.advance_ms(100);
        assert_eq!(l.evict_idle(clock.now()), 1);
        assert!(l.is_empty());
    }

    #[test]
    fn a_full_shard_sweeps_idle_keys_before_evicting_busy_ones() {
        let clock = ManualClock::new();
        let l: KeyedLimiter<u64, _> =
            KeyedLimiterBuilder::new(GcraConfig::new(Rate::per_second(1), 5))
                .shards(1)
                .max_keys(8)
                .build();
        // Key 100 is busy for a long time; keys 0..7 are refilled after 1 s.
        for _ in 0..5 {
            l.check(&100, clock.now());
        }
        for k in 0..7 {
            l.check(&k, clock.now());
        }
        assert_eq!(l.len(), 8);
        clock.advance_ms(1000);
        assert!(l.check(&200, clock.now()).is_admitted());
        assert_eq!(l.len(), 2, "the seven idle keys were swept; the busy one stays");
        assert!(!l.check_n(&100, clock.now(), 5, Criticality::Critical).is_admitted());
    }

    #[test]
    fn a_shard_full_of_busy_keys_evicts_the_ones_closest_to_idle() {
        let clock = ManualClock::new();
        let l: KeyedLimiter<u64, _> = KeyedLimiterBuilder::new(
            GcraConfig::new(Rate::per_second(1), 100).with_reserve(CriticalityReserve::NONE),
        )
        .shards(1)
        .max_keys(16)
        .build();
        // Key k takes k+1 permits: higher keys are further from idle.
        for k in 0..16u64 {
            assert!(l.check_n(&k, clock.now(), k as u32 + 1, Criticality::Critical).is_admitted());
        }
        assert!(l.check(&1000, clock.now()).is_admitted());
        assert!(l.len() <= 16);
        // The busiest keys survived: key 15 still has only 100 - 16 permits.
        assert!(!l.check_n(&15, clock.now(), 85, Criticality::Critical).is_admitted());
        // The least busy key was evicted and starts over with a full bucket.
        assert!(l.check_n(&0, clock.now(), 100, Criticality::Critical).is_admitted());
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_distinct_keys() {
        let l: KeyedLimiter<u64, _> =
            KeyedLimiterBuilder::new(GcraConfig::new(Rate::per_hour(1), 10))
                .shards(4)
                .max_keys(1000)
                .build();
        for k in 0..50_000u64 {
            assert!(l.check(&k, Instant::ZERO).is_admitted(), "new keys are never refused");
        }
        assert!(l.len() <= 1000, "{}", l.len());
    }

    #[test]
    fn threads_hammering_one_key_with_a_frozen_clock_get_exactly_the_burst() {
        let l: KeyedLimiter<u64, _> = KeyedLimiter::token_bucket(Rate::per_second(1), 1000);
        let admitted = AtomicU64::new(0);
        let now = Instant::from_nanos(5_000_000_000);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for i in 0..2000u64 {
                        if l.check(&(i % 2), now).is_admitted() {
                            admitted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.load(Ordering::Relaxed), 2000, "two keys, 1000 each");
    }
}
