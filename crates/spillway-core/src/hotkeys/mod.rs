//! Hot keys: a bounded sketch of the keys requested most *now* (paths, header or query values,
//! client addresses), with their rates — for `GET /admin/hotkeys`, limits that apply only to hot
//! keys (Sentinel's hot-parameter limits) and caching only hot keys.
//!
//! Why this shape: counting every distinct key exactly takes memory proportional to the keys an
//! attacker or a crawler can invent; a heavy-hitter sketch keeps a fixed number of counters and
//! still finds every key that matters, with a proven error bound. [`TopK`] is **Space-Saving**
//! (Metwally, Agrawal and El Abbadi, "Efficient computation of frequent and top-k elements in
//! data streams", ICDT 2005) over **exponentially decayed counts** using *forward decay*
//! (Cormode, Shkapenyuk, Srivastava and Xu, ICDE 2009): an observation at time `t` weighs
//! `2^((t − L) / half_life)` from a landmark `L`, so a count read at `now` is multiplied by
//! `2^(−(now − L) / half_life)`. Every counter decays by the same factor, so the order of the
//! counters — and with it Space-Saving's invariants — never changes while time passes: no
//! per-tick work, and "hot" means hot now. A single structure (rather than a ring of rotated
//! sub-sketches) is what lets [`TopK::is_hot`] answer in O(1) on every request.
//!
//! Guarantees, on decayed counts (with `N` the decayed total of all observations, read by
//! [`TopK::total`], `C` the capacity), exact up to floating-point rounding:
//! - every key whose decayed count exceeds `N / C` is kept, so it is listed by
//!   [`TopK::top`]`(C, now)`;
//! - a kept key's estimate is never below its decayed count, and at most its recorded error
//!   above it; every recorded error is at most `N / C`.

mod key;

#[cfg(test)]
mod proptests;

pub use key::{stored_key, MAX_KEY_LEN};

use crate::clock::{duration_nanos, Instant};
use hashbrown::{DefaultHashBuilder, HashTable};
use key::with_stored;
use std::fmt;
use std::hash::BuildHasher;
use std::time::Duration;

/// The largest capacity accepted: slots are `u32` indices, and a sketch of 16 Mi counters is
/// well past any use as a per-route summary.
pub const MAX_CAPACITY: usize = 1 << 24;

/// The shortest half-life accepted.
pub const MIN_HALF_LIFE: Duration = Duration::from_millis(1);

/// When an observation's weight would exceed `2^RESCALE_HALF_LIVES`, every counter is scaled
/// down and the landmark moves to now: an O(capacity) pass once per 32 half-lives (every
/// 5 min 20 s at the default half-life), so weights stay far from `f64`'s range.
const RESCALE_HALF_LIVES: f64 = 32.0;

/// Marks an entry that is not in the sorted hot prefix.
const NOT_HOT: u32 = u32::MAX;

/// How a [`TopK`] is sized and how fast it forgets. Checked by [`TopK::try_new`].
#[derive(Clone, Debug, PartialEq)]
pub struct TopKConfig {
    /// Counters kept, at most one key each. A key is guaranteed to be kept when its decayed
    /// count exceeds `1 / capacity` of the decayed total, and every estimate errs by at most
    /// that much, so `capacity` should be well above the `k` asked of [`TopK::top`].
    /// Memory is about `capacity × (100 bytes + key length)`. Default 1024.
    pub capacity: usize,
    /// The largest `k` that [`TopK::is_hot`] answers in O(1): the `hot_k` largest counters are
    /// kept sorted as observations arrive, at a cost that grows with `hot_k` (a counter that
    /// grows moves past the ones it overtakes). Larger `k` are answered by counting, in
    /// O(capacity). The gateway sets it to the route's `top`. Between 1 and `capacity`.
    /// Default 32.
    pub hot_k: usize,
    /// The time after which an observation counts half as much. Rates are exponentially
    /// weighted averages over about this span: a key that starts being requested at a steady
    /// rate is seen at half that rate after one half-life, and a key that stops being requested
    /// falls to half its rate each half-life. At least [`MIN_HALF_LIFE`]. Default 10 s: hot
    /// within seconds, and not shaken by a single one-second burst.
    pub half_life: Duration,
    /// A key is hot (for [`TopK::is_hot`]) and listed (by [`TopK::top`]) only while its
    /// estimated rate is at least this many observations per second, so a key that was hot an
    /// hour ago is not hot now even when nothing else has been requested since. Finite and not
    /// negative; 0 lists every kept key. Default 1.0: below one request per second, neither a
    /// per-key limit nor a one-second cache changes anything.
    pub min_rate_per_sec: f64,
}

impl Default for TopKConfig {
    fn default() -> Self {
        TopKConfig {
            capacity: 1024,
            hot_k: 32,
            half_life: Duration::from_secs(10),
            min_rate_per_sec: 1.0,
        }
    }
}

/// Why a [`TopKConfig`] was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum TopKConfigError {
    /// `capacity` is zero or above [`MAX_CAPACITY`].
    #[error("hot keys: capacity must be between 1 and {MAX_CAPACITY}, got {0}")]
    Capacity(usize),
    /// `hot_k` is zero or above `capacity`.
    #[error("hot keys: hot_k must be between 1 and the capacity ({capacity}), got {hot_k}")]
    HotK {
        /// The `hot_k` asked for.
        hot_k: usize,
        /// The configured capacity.
        capacity: usize,
    },
    /// `half_life` is shorter than [`MIN_HALF_LIFE`].
    #[error("hot keys: half_life must be at least {MIN_HALF_LIFE:?}, got {0:?}")]
    HalfLife(Duration),
    /// `min_rate_per_sec` is negative, infinite or NaN.
    #[error("hot keys: min_rate_per_sec must be finite and not negative, got {0}")]
    MinRate(f64),
}

/// One key of a [`TopK`] with its decayed count and rate, as of the `now` it was read at.
#[derive(Clone, Debug, PartialEq)]
pub struct HotKey {
    /// The key in its stored form: as observed, or prefix and digest beyond [`MAX_KEY_LEN`]
    /// bytes (see [`stored_key`]).
    pub key: Vec<u8>,
    /// The decayed count: never below the key's true decayed count.
    pub estimate: f64,
    /// How much `estimate` may exceed the true decayed count: the true count is in
    /// `[estimate − error, estimate]`. Zero for a key kept since its first observation.
    pub error: f64,
    /// `estimate` as a rate: observations per second, exponentially weighted over the
    /// half-life (a key requested steadily at `r` per second converges to `r`).
    pub rate_per_sec: f64,
}

impl HotKey {
    /// The rate the key is guaranteed to have at least: `(estimate − error)` per second.
    pub fn guaranteed_rate_per_sec(&self) -> f64 {
        if self.estimate > 0.0 {
            self.rate_per_sec * ((self.estimate - self.error) / self.estimate)
        } else {
            0.0
        }
    }
}

/// A counter's slot: its key and recorded error. The count itself lives in the heap node.
#[derive(Clone)]
struct Entry {
    /// The stored key; its buffer is reused when the slot takes another key.
    key: Vec<u8>,
    /// The table hash of `key`.
    hash: u64,
    /// The count the slot had when this key took it over (stored units).
    error: f64,
    /// Where the slot's node is in `heap`.
    heap_pos: u32,
    /// The slot's position in `hot`, or [`NOT_HOT`].
    hot_rank: u32,
}

/// A node of the min-heap: a count (stored units) and the slot it belongs to. Counts sit in the
/// heap, not the entries, so sifting reads contiguous memory.
#[derive(Clone, Copy)]
struct Node {
    count: f64,
    slot: u32,
}

/// A streaming top-K sketch over byte-string keys: Space-Saving over exponentially decayed
/// counts (see the [module documentation](self) for the algorithm and its guarantees).
///
/// Memory is fixed by the capacity: a slot per key (reusing its key buffer when the slot passes
/// to another key), a min-heap of counts, a hash table from key to slot sized at construction,
/// and the sorted top `hot_k`. Once every slot is taken and has held its longest key, an
/// observation allocates nothing. Not synchronised: the caller wraps it in a lock or keeps one
/// per worker. It is `Send`.
///
/// ```
/// use spillway_core::hotkeys::{TopK, TopKConfig};
/// use spillway_core::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let mut keys = TopK::try_new(TopKConfig { capacity: 64, hot_k: 4, ..Default::default() })?;
/// for i in 0..1000u32 {
///     clock.advance_ms(1);
///     keys.observe(b"/items/42", clock.now());
///     keys.observe(format!("/items/{i}").as_bytes(), clock.now());
/// }
/// let top = keys.top(2, clock.now());
/// assert_eq!(top[0].key, b"/items/42");
/// assert!(top[0].rate_per_sec > 60.0); // ramping up to 1000/s with a 10 s half-life
/// assert!(keys.is_hot(b"/items/42", 1, clock.now()));
///
/// clock.advance(Duration::from_secs(3600)); // an hour without a request
/// assert!(!keys.is_hot(b"/items/42", 1, clock.now()));
/// assert!(keys.top(2, clock.now()).is_empty());
/// # Ok::<(), spillway_core::hotkeys::TopKConfigError>(())
/// ```
#[derive(Clone)]
pub struct TopK {
    capacity: usize,
    hot_k: usize,
    half_life: Duration,
    min_rate_per_sec: f64,
    /// Decay rate per nanosecond: `ln 2 / half_life`.
    lambda_per_nano: f64,
    /// Decay rate per second: turns a decayed count into a rate.
    lambda_per_sec: f64,
    entries: Vec<Entry>,
    /// Min-heap of counts: `heap[0]` is the counter Space-Saving replaces.
    heap: Vec<Node>,
    /// Key → slot, with room for twice the capacity so that removing and inserting keys never
    /// makes it grow (hashbrown rehashes in place below half load).
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// The `min(hot_k, len)` slots with the largest counts, largest first.
    hot: Vec<u32>,
    /// Forward decay's landmark: stored counts are in units of weight at this instant.
    landmark: Instant,
    /// The latest `now` observed; an earlier one counts as this (no time passing).
    latest: Instant,
    /// The weight of one observation at `latest` (cached: bursts share a `now`).
    weight: f64,
    /// Sum of all weights observed (stored units): the `N` of the guarantees.
    total: f64,
}

impl fmt::Debug for TopK {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopK")
            .field("capacity", &self.capacity)
            .field("len", &self.entries.len())
            .field("hot_k", &self.hot_k)
            .field("half_life", &self.half_life)
            .finish_non_exhaustive()
    }
}

impl TopK {
    /// A sketch for `config`, with all its memory but key buffers reserved now.
    pub fn try_new(config: TopKConfig) -> Result<TopK, TopKConfigError> {
        let TopKConfig { capacity, hot_k, half_life, min_rate_per_sec } = config;
        if capacity == 0 || capacity > MAX_CAPACITY {
            return Err(TopKConfigError::Capacity(capacity));
        }
        if hot_k == 0 || hot_k > capacity {
            return Err(TopKConfigError::HotK { hot_k, capacity });
        }
        if half_life < MIN_HALF_LIFE {
            return Err(TopKConfigError::HalfLife(half_life));
        }
        if !min_rate_per_sec.is_finite() || min_rate_per_sec < 0.0 {
            return Err(TopKConfigError::MinRate(min_rate_per_sec));
        }
        let lambda_per_nano = std::f64::consts::LN_2 / duration_nanos(half_life) as f64;
        Ok(TopK {
            capacity,
            hot_k,
            half_life,
            min_rate_per_sec,
            lambda_per_nano,
            lambda_per_sec: lambda_per_nano * 1e9,
            entries: Vec::with_capacity(capacity),
            heap: Vec::with_capacity(capacity),
            index: HashTable::with_capacity(2 * capacity),
            hasher: DefaultHashBuilder::default(),
            hot: Vec::with_capacity(hot_k),
            landmark: Instant::ZERO,
            latest: Instant::ZERO,
            weight: 1.0,
            total: 0.0,
        })
    }

    /// Counts one observation of `key` at `now`.
    #[inline]
    pub fn observe(&mut self, key: &[u8], now: Instant) {
        self.observe_n(key, 1, now);
    }

    /// Counts `n` observations of `key` at `now` (e.g. a request's cost). `n = 0` changes
    /// nothing. O(log capacity) for the heap, plus the moves in the sorted hot prefix (O(1)
    /// typically, O(hot_k) at worst); O(capacity) once per 32 half-lives to rescale.
    pub fn observe_n(&mut self, key: &[u8], n: u64, now: Instant) {
        if n == 0 {
            return;
        }
        let w = self.weight_at(now) * n as f64;
        self.total += w;
        with_stored(key, |key| self.add(key, w));
    }

    /// The `k` keys with the largest estimates at `now` whose rate is at least the configured
    /// minimum, largest first (ties by key). Fewer when fewer keys are kept or fast enough.
    /// O(k) for `k ≤ hot_k`, O(capacity · log capacity) beyond, plus copying the keys.
    pub fn top(&self, k: usize, now: Instant) -> Vec<HotKey> {
        let mut slots: Vec<u32> = if k <= self.hot.len() {
            self.hot[..k].to_vec()
        } else if self.hot.len() == self.entries.len() {
            self.hot.clone()
        } else {
            let mut nodes: Vec<Node> = self.heap.clone();
            nodes.sort_unstable_by(|a, b| b.count.total_cmp(&a.count));
            nodes.truncate(k);
            nodes.iter().map(|n| n.slot).collect()
        };
        let decay = self.decay(now);
        slots.retain(|&slot| self.fast_enough(self.count(slot), decay));
        let mut keys: Vec<HotKey> = slots.iter().map(|&slot| self.hot_key(slot, decay)).collect();
        keys.sort_by(|a, b| b.estimate.total_cmp(&a.estimate).then_with(|| a.key.cmp(&b.key)));
        keys
    }

    /// Whether `key` is among the `k` keys with the largest estimates and its rate is at least
    /// the configured minimum, at `now`. Ties at the `k`-th place may go either way.
    ///
    /// O(1) expected for `k ≤ hot_k` (one hash lookup, and one `exp` only when the key ranks
    /// high enough); O(capacity) beyond. Keys longer than [`MAX_KEY_LEN`] also pay their digest.
    #[inline]
    pub fn is_hot(&self, key: &[u8], k: usize, now: Instant) -> bool {
        if k == 0 {
            return false;
        }
        with_stored(key, |key| {
            let Some(slot) = self.find(key) else {
                return false;
            };
            let rank = self.entries[slot as usize].hot_rank;
            let count = self.count(slot);
            let ranked = if (rank as usize) < k {
                true
            } else if k <= self.hot_k {
                // The hot prefix holds the `hot_k` largest counters: not in its first `k`.
                false
            } else {
                self.heap.iter().filter(|n| n.count > count).count() < k
            };
            ranked && self.fast_enough(count, self.decay(now))
        })
    }

    /// `key`'s estimate at `now` when it is kept, whatever its rate.
    pub fn estimate(&self, key: &[u8], now: Instant) -> Option<HotKey> {
        with_stored(key, |key| self.find(key)).map(|slot| self.hot_key(slot, self.decay(now)))
    }

    /// The decayed count of every observation so far at `now`: the `N` of the guarantees
    /// (a kept key's error is at most `total / capacity`).
    pub fn total(&self, now: Instant) -> f64 {
        self.total * self.decay(now)
    }

    /// [`total`](Self::total) as a rate: all observations per second, weighted like a key's.
    pub fn total_rate_per_sec(&self, now: Instant) -> f64 {
        self.total(now) * self.lambda_per_sec
    }

    /// Keys kept, at most [`capacity`](Self::capacity).
    #[inline]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key has been observed (since construction or [`clear`](Self::clear)).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The most keys kept.
    #[inline]
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The largest `k` answered by [`is_hot`](Self::is_hot) in O(1).
    #[inline]
    pub fn hot_k(&self) -> usize {
        self.hot_k
    }

    /// The configured half-life.
    #[inline]
    pub fn half_life(&self) -> Duration {
        self.half_life
    }

    /// Forgets every key and count, keeping the memory. Time keeps its latest value.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.heap.clear();
        self.index.clear();
        self.hot.clear();
        self.total = 0.0;
    }

    /// The weight of one observation at `now`, rescaling first when it would grow too large.
    #[inline]
    fn weight_at(&mut self, now: Instant) -> f64 {
        if now <= self.latest {
            return self.weight;
        }
        self.latest = now;
        let mut exponent = self.lambda_per_nano * now.nanos_since(self.landmark) as f64;
        if exponent > RESCALE_HALF_LIVES * std::f64::consts::LN_2 {
            self.rescale(now, exponent);
            exponent = 0.0;
        }
        self.weight = exponent.exp();
        self.weight
    }

    /// Moves the landmark to `now`, `exponent` decay constants after the old one: every stored
    /// value is multiplied by `e^−exponent`, which keeps their order.
    #[cold]
    fn rescale(&mut self, now: Instant, exponent: f64) {
        let factor = (-exponent).exp();
        let scale = |v: f64| {
            let scaled = v * factor;
            // Flush subnormals: they are slow to compute with and count for nothing.
            if scaled < f64::MIN_POSITIVE {
                0.0
            } else {
                scaled
            }
        };
        for node in self.heap.iter_mut() {
            node.count = scale(node.count);
        }
        for entry in self.entries.iter_mut() {
            entry.error = scale(entry.error);
        }
        self.total = scale(self.total);
        self.landmark = now;
    }

    /// The factor from stored units to decayed counts at `now` (at the latest observation if
    /// `now` is earlier).
    #[inline]
    fn decay(&self, now: Instant) -> f64 {
        let at = now.max(self.latest);
        (-self.lambda_per_nano * at.nanos_since(self.landmark) as f64).exp()
    }

    /// Whether a counter of `count` stored units is at the minimum rate, `decay` being
    /// [`decay`](Self::decay) at the instant asked about.
    #[inline]
    fn fast_enough(&self, count: f64, decay: f64) -> bool {
        self.min_rate_per_sec == 0.0 || count * decay * self.lambda_per_sec >= self.min_rate_per_sec
    }

    #[inline]
    fn count(&self, slot: u32) -> f64 {
        self.heap[self.entries[slot as usize].heap_pos as usize].count
    }

    fn hot_key(&self, slot: u32, decay: f64) -> HotKey {
        let entry = &self.entries[slot as usize];
        let estimate = self.count(slot) * decay;
        HotKey {
            key: entry.key.clone(),
            estimate,
            error: entry.error * decay,
            rate_per_sec: estimate * self.lambda_per_sec,
        }
    }

    #[inline]
    fn find(&self, key: &[u8]) -> Option<u32> {
        let hash = self.hasher.hash_one(key);
        let entries = &self.entries;
        self.index.find(hash, |&slot| entries[slot as usize].key == key).copied()
    }

    /// Space-Saving's step: adds `w` to `key`'s counter, taking over the smallest counter when
    /// the key is not kept and every slot is taken.
    fn add(&mut self, key: &[u8], w: f64) {
        let hash = self.hasher.hash_one(key);
        let entries = &self.entries;
        let found = self.index.find(hash, |&slot| entries[slot as usize].key == key).copied();
        let slot = match found {
            Some(slot) => slot,
            None if self.entries.len() < self.capacity => {
                self.insert(key, hash, w);
                return;
            }
            None => self.take_over_smallest(key, hash),
        };
        let pos = self.entries[slot as usize].heap_pos as usize;
        self.heap[pos].count += w;
        self.sift_down(pos);
        self.promote(slot);
    }

    /// A new key in a free slot, with count `w`.
    fn insert(&mut self, key: &[u8], hash: u64, w: f64) {
        // Both fit in u32: lengths are below the capacity, at most MAX_CAPACITY.
        let slot = self.entries.len() as u32;
        let pos = self.heap.len();
        self.entries.push(Entry {
            key: key.to_vec(),
            hash,
            error: 0.0,
            heap_pos: pos as u32,
            hot_rank: NOT_HOT,
        });
        self.heap.push(Node { count: w, slot });
        let entries = &self.entries;
        self.index.insert_unique(hash, slot, |&s| entries[s as usize].hash);
        self.sift_up(pos);
        self.promote(slot);
    }

    /// Gives the smallest counter's slot to `key`: the count stays (the caller adds to it) and
    /// becomes the new key's error. Returns the slot.
    fn take_over_smallest(&mut self, key: &[u8], hash: u64) -> u32 {
        let Node { count, slot } = self.heap[0];
        let entry = &mut self.entries[slot as usize];
        if let Ok(old) = self.index.find_entry(entry.hash, |&s| s == slot) {
            old.remove();
        }
        entry.error = count;
        entry.key.clear();
        entry.key.extend_from_slice(key);
        entry.hash = hash;
        let entries = &self.entries;
        self.index.insert_unique(hash, slot, |&s| entries[s as usize].hash);
        slot
    }

    fn sift_down(&mut self, mut pos: usize) {
        let node = self.heap[pos];
        let len = self.heap.len();
        loop {
            let left = 2 * pos + 1;
            if left >= len {
                break;
            }
            let right = left + 1;
            let child = if right < len && self.heap[right].count < self.heap[left].count {
                right
            } else {
                left
            };
            if self.heap[child].count >= node.count {
                break;
            }
            self.place(pos, self.heap[child]);
            pos = child;
        }
        self.place(pos, node);
    }

    fn sift_up(&mut self, mut pos: usize) {
        let node = self.heap[pos];
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if self.heap[parent].count <= node.count {
                break;
            }
            self.place(pos, self.heap[parent]);
            pos = parent;
        }
        self.place(pos, node);
    }

    #[inline]
    fn place(&mut self, pos: usize, node: Node) {
        self.heap[pos] = node;
        self.entries[node.slot as usize].heap_pos = pos as u32;
    }

    /// Keeps `hot` the sorted `hot_k` largest counters after `slot`'s count grew: counts only
    /// grow between rescales (which keep the order), so a grown counter either moves up within
    /// `hot` or displaces its last member.
    fn promote(&mut self, slot: u32) {
        let count = self.count(slot);
        let mut rank = self.entries[slot as usize].hot_rank as usize;
        if rank == NOT_HOT as usize {
            if self.hot.len() < self.hot_k {
                rank = self.hot.len();
                self.hot.push(slot);
            } else {
                rank = self.hot_k - 1;
                let last = self.hot[rank];
                if self.count(last) >= count {
                    return;
                }
                self.entries[last as usize].hot_rank = NOT_HOT;
            }
        }
        while rank > 0 {
            let above = self.hot[rank - 1];
            if self.count(above) >= count {
                break;
            }
            self.hot[rank] = above;
            self.entries[above as usize].hot_rank = rank as u32;
            rank -= 1;
        }
        self.hot[rank] = slot;
        self.entries[slot as usize].hot_rank = rank as u32;
    }

    /// Checks the structure's invariants (tests only).
    #[cfg(test)]
    fn check_invariants(&self) {
        assert!(self.entries.len() <= self.capacity);
        assert_eq!(self.heap.len(), self.entries.len());
        assert_eq!(self.index.len(), self.entries.len());
        assert_eq!(self.hot.len(), self.hot_k.min(self.entries.len()));
        for (pos, node) in self.heap.iter().enumerate() {
            assert_eq!(self.entries[node.slot as usize].heap_pos as usize, pos);
            if pos > 0 {
                assert!(self.heap[(pos - 1) / 2].count <= node.count, "heap order at {pos}");
            }
            let entry = &self.entries[node.slot as usize];
            assert!(entry.error <= node.count);
            assert_eq!(self.find(&entry.key), Some(node.slot));
            assert!(entry.key.len() <= MAX_KEY_LEN);
        }
        for (rank, &slot) in self.hot.iter().enumerate() {
            assert_eq!(self.entries[slot as usize].hot_rank as usize, rank);
            if rank > 0 {
                assert!(self.count(self.hot[rank - 1]) >= self.count(slot), "hot order");
            }
        }
        if let Some(&last) = self.hot.last() {
            let floor = self.count(last);
            for (slot, entry) in self.entries.iter().enumerate() {
                if entry.hot_rank == NOT_HOT {
                    assert!(self.count(slot as u32) <= floor, "a larger counter outside hot");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Clock, ManualClock};

    /// A sketch with the default half-life and minimum rate.
    fn sketch(capacity: usize, hot_k: usize) -> TopK {
        TopK::try_new(TopKConfig { capacity, hot_k, ..Default::default() }).unwrap()
    }

    /// A sketch that lists every kept key, however slow: for counts read at one instant.
    fn listing_all(capacity: usize, hot_k: usize) -> TopK {
        let config = TopKConfig { capacity, hot_k, min_rate_per_sec: 0.0, ..Default::default() };
        TopK::try_new(config).unwrap()
    }

    fn keys_of(top: &[HotKey]) -> Vec<&[u8]> {
        top.iter().map(|h| h.key.as_slice()).collect()
    }

    #[test]
    fn top_lists_the_most_observed_keys_largest_first() {
        let mut s = listing_all(8, 4);
        let now = Instant::from_nanos(1);
        for (key, n) in [(&b"a"[..], 5), (b"b", 50), (b"c", 20), (b"d", 1)] {
            s.observe_n(key, n, now);
        }
        let top = s.top(3, now);
        assert_eq!(keys_of(&top), [&b"b"[..], b"c", b"a"]);
        assert_eq!(top[0].error, 0.0);
        assert!((top[0].estimate - 50.0).abs() < 1e-9);
        assert_eq!(s.len(), 4);
        s.check_invariants();
    }

    #[test]
    fn a_key_hot_an_hour_ago_is_not_hot_now() {
        let clock = ManualClock::new();
        let mut s = sketch(16, 4);
        for _ in 0..10_000 {
            clock.advance_ms(1);
            s.observe(b"/items/old", clock.now());
        }
        assert!(s.is_hot(b"/items/old", 1, clock.now()));
        assert!(s.estimate(b"/items/old", clock.now()).unwrap().rate_per_sec > 400.0);

        clock.advance(Duration::from_secs(3600));
        // Alone in the sketch, still first by rank, but far below a request per second.
        assert!(!s.is_hot(b"/items/old", 1, clock.now()));
        assert!(s.top(4, clock.now()).is_empty());
        assert!(s.estimate(b"/items/old", clock.now()).unwrap().rate_per_sec < 1e-50);

        // A modest key now outranks it.
        for _ in 0..100 {
            clock.advance_ms(10);
            s.observe(b"/items/new", clock.now());
        }
        assert!(s.is_hot(b"/items/new", 1, clock.now()));
        assert_eq!(keys_of(&s.top(4, clock.now())), [&b"/items/new"[..]]);
        s.check_invariants();
    }

    #[test]
    fn a_new_burst_overtakes_a_key_that_has_gone_quiet() {
        let clock = ManualClock::new();
        let mut s = sketch(16, 2);
        for _ in 0..1000 {
            clock.advance_ms(10); // 100/s for 10 s
            s.observe(b"quiet", clock.now());
        }
        clock.advance(Duration::from_secs(30)); // three half-lives: rate about 11/s
        for _ in 0..500 {
            clock.advance_ms(2); // 500/s for 1 s
            s.observe(b"burst", clock.now());
        }
        assert!(s.is_hot(b"burst", 1, clock.now()));
        assert!(!s.is_hot(b"quiet", 1, clock.now()));
        assert!(s.is_hot(b"quiet", 2, clock.now()));
        assert_eq!(keys_of(&s.top(2, clock.now())), [&b"burst"[..], b"quiet"]);
    }

    #[test]
    fn a_steady_rate_is_reported_as_that_rate() {
        let clock = ManualClock::new();
        let mut s = sketch(4, 1);
        // 200/s for 20 half-lives: the decayed count has converged.
        for _ in 0..40_000 {
            clock.advance_ms(5);
            s.observe(b"k", clock.now());
        }
        let rate = s.estimate(b"k", clock.now()).unwrap().rate_per_sec;
        assert!((rate - 200.0).abs() < 2.0, "{rate}");
        assert!((s.total_rate_per_sec(clock.now()) - 200.0).abs() < 2.0);
    }

    #[test]
    fn rescaling_keeps_counts_finite_and_order_intact_over_a_day() {
        let clock = ManualClock::new();
        let mut s = TopK::try_new(TopKConfig {
            capacity: 8,
            hot_k: 4,
            half_life: MIN_HALF_LIFE,
            ..Default::default()
        })
        .unwrap();
        // 1 ms half-life: a day is 86 million half-lives, millions of rescales' worth.
        for i in 0..10_000u64 {
            clock.advance(Duration::from_secs(8)); // ~ 8000 half-lives per step
            s.observe_n(b"big", 3, clock.now());
            s.observe_n(format!("k{}", i % 5).as_bytes(), 1, clock.now());
        }
        s.check_invariants();
        let top = s.top(8, clock.now());
        assert_eq!(top[0].key, b"big");
        assert!(top.iter().all(|h| h.estimate.is_finite() && h.rate_per_sec.is_finite()));
        // Each step's observations dominate: older ones have decayed to nothing.
        assert!((top[0].estimate - 3.0).abs() < 1e-9, "{}", top[0].estimate);
        assert!((s.total(clock.now()) - 4.0).abs() < 1e-9);
    }

    #[test]
    fn is_hot_ranks_within_k_and_counts_beyond_hot_k() {
        let mut s = TopK::try_new(TopKConfig {
            capacity: 16,
            hot_k: 2,
            min_rate_per_sec: 0.0,
            ..Default::default()
        })
        .unwrap();
        let now = Instant::from_nanos(1);
        for i in 1..=10u64 {
            s.observe_n(format!("k{i}").as_bytes(), i * 10, now);
        }
        assert!(s.is_hot(b"k10", 1, now));
        assert!(!s.is_hot(b"k9", 1, now));
        assert!(s.is_hot(b"k9", 2, now));
        assert!(!s.is_hot(b"k8", 2, now));
        // k = 3 is past hot_k = 2: answered by counting.
        assert!(s.is_hot(b"k8", 3, now));
        assert!(!s.is_hot(b"k7", 3, now));
        assert!(s.is_hot(b"k1", 10, now));
        assert!(!s.is_hot(b"k1", 9, now));
        assert!(!s.is_hot(b"k10", 0, now));
        assert!(!s.is_hot(b"unknown", 16, now));
        let top: Vec<Vec<u8>> = s.top(3, now).into_iter().map(|h| h.key).collect();
        assert_eq!(top, [b"k10".to_vec(), b"k9".to_vec(), b"k8".to_vec()]);
    }

    #[test]
    fn a_full_sketch_gives_the_smallest_counter_to_a_new_key_with_its_count_as_error() {
        let mut s = listing_all(2, 1);
        let now = Instant::from_nanos(1);
        s.observe_n(b"a", 5, now);
        s.observe_n(b"b", 3, now);
        s.observe_n(b"c", 1, now);
        assert!(s.estimate(b"b", now).is_none());
        let c = s.estimate(b"c", now).unwrap();
        assert!((c.estimate - 4.0).abs() < 1e-9 && (c.error - 3.0).abs() < 1e-9);
        assert!((c.guaranteed_rate_per_sec() / c.rate_per_sec - 0.25).abs() < 1e-9);
        s.check_invariants();
    }

    #[test]
    fn long_keys_are_stored_with_a_digest_and_found_by_the_original() {
        let mut s = listing_all(8, 4);
        let now = Instant::from_nanos(1);
        let mut a = vec![b'/'; 1000];
        let mut b = a.clone();
        a[999] = b'a';
        b[999] = b'b';
        s.observe_n(&a, 3, now);
        s.observe_n(&b, 2, now);
        assert_eq!(s.len(), 2, "a shared prefix does not merge the keys");
        assert!(s.is_hot(&a, 1, now) && !s.is_hot(&b, 1, now));
        let top = s.top(2, now);
        assert_eq!(top[0].key, stored_key(&a).into_owned());
        assert_eq!(top[0].key.len(), MAX_KEY_LEN);
        assert!((s.estimate(&b, now).unwrap().estimate - 2.0).abs() < 1e-9);
        s.check_invariants();
    }

    #[test]
    fn a_clock_stepping_back_counts_as_no_time_passing() {
        let mut s = sketch(4, 2);
        s.observe(b"a", Instant::from_nanos(5_000_000_000));
        s.observe(b"a", Instant::from_nanos(1_000_000_000));
        let at_5s = s.estimate(b"a", Instant::from_nanos(5_000_000_000)).unwrap();
        assert!((at_5s.estimate - 2.0).abs() < 1e-9);
        assert_eq!(s.estimate(b"a", Instant::ZERO), Some(at_5s));
    }

    #[test]
    fn observing_zero_changes_nothing() {
        let mut s = sketch(4, 2);
        s.observe_n(b"a", 0, Instant::ZERO);
        assert!(s.is_empty());
        assert_eq!(s.total(Instant::ZERO), 0.0);
    }

    #[test]
    fn a_warm_sketch_does_not_grow_its_storage() {
        let mut s = sketch(64, 8);
        let mut now = Instant::ZERO;
        let mut observe_range = |s: &mut TopK, range: std::ops::Range<u64>| {
            for i in range {
                now += Duration::from_micros(100);
                // Keys of at most 8 bytes: every slot's buffer holds any of them once it has
                // held one of 8 bytes.
                let key = format!("{:08}", i.wrapping_mul(0x9E37_79B9) % 100_000);
                s.observe(key.as_bytes(), now);
            }
        };
        observe_range(&mut s, 0..10_000);
        let sizes = |s: &TopK| {
            (
                s.entries.capacity(),
                s.heap.capacity(),
                // The map's allocation, not `capacity()`: that shrinks with the room deleted
                // entries leave until a rehash in place, which depends on the random hash seed.
                s.index.allocation_size(),
                s.hot.capacity(),
                s.entries.iter().map(|e| e.key.capacity()).sum::<usize>(),
            )
        };
        let warm = sizes(&s);
        observe_range(&mut s, 10_000..200_000);
        assert_eq!(sizes(&s), warm);
        assert_eq!(s.len(), 64);
        s.check_invariants();
    }

    #[test]
    fn clear_forgets_every_key() {
        let mut s = sketch(4, 2);
        s.observe(b"a", Instant::ZERO);
        s.clear();
        assert!(s.is_empty() && s.top(4, Instant::ZERO).is_empty());
        assert!(!s.is_hot(b"a", 2, Instant::ZERO));
        s.observe(b"b", Instant::ZERO);
        s.check_invariants();
    }

    #[test]
    fn configurations_are_checked_when_built() {
        let ok = TopKConfig::default();
        assert!(TopK::try_new(ok.clone()).is_ok());
        let refused = [
            (TopKConfig { capacity: 0, hot_k: 0, ..ok.clone() }, TopKConfigError::Capacity(0)),
            (
                TopKConfig { capacity: MAX_CAPACITY + 1, ..ok.clone() },
                TopKConfigError::Capacity(MAX_CAPACITY + 1),
            ),
            (
                TopKConfig { hot_k: 0, ..ok.clone() },
                TopKConfigError::HotK { hot_k: 0, capacity: 1024 },
            ),
            (
                TopKConfig { hot_k: 1025, ..ok.clone() },
                TopKConfigError::HotK { hot_k: 1025, capacity: 1024 },
            ),
            (
                TopKConfig { half_life: Duration::from_micros(999), ..ok.clone() },
                TopKConfigError::HalfLife(Duration::from_micros(999)),
            ),
            (TopKConfig { min_rate_per_sec: -1.0, ..ok.clone() }, TopKConfigError::MinRate(-1.0)),
        ];
        for (config, error) in refused {
            assert_eq!(TopK::try_new(config).unwrap_err(), error);
        }
        assert!(TopK::try_new(TopKConfig { min_rate_per_sec: f64::NAN, ..ok }).is_err());
    }

    #[test]
    fn the_sketch_can_move_between_threads() {
        fn send<T: Send>() {}
        send::<TopK>();
        let clock = ManualClock::new();
        let mut s = sketch(4, 2);
        s.observe(b"a", clock.now());
        let s = std::thread::spawn(move || s).join().unwrap();
        assert_eq!(s.len(), 1);
    }
}
