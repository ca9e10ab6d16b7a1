//! Batched token bucket: one shared token bucket from which each worker thread borrows a small
//! batch of tokens, so a hot limiter shared by every core is checked on a cache line the worker
//! owns.
//!
//! Why: the lock-free [`super::TokenBucket`] moves its one cache line between cores on every
//! check, so under contention it costs what governor costs. Here a worker takes tokens from its
//! own batch (an uncontended compare-and-swap on its own line) and writes the shared line only
//! once per batch. The admitted rate stays exact because batches are *borrowed* (taken from the
//! shared bucket when they are handed out) and because open batches shrink the shared bucket's
//! capacity by their size until they are closed — see [`BatchedTokenBucket`] for the bound.

use super::gcra::GcraConfig;
use super::{rate_limited, TokenBucketConfig};
use crate::clock::Instant;
use crate::criticality::Criticality;
use crate::decision::Decision;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Largest batch a worker borrows at once.
pub const MAX_BATCH: u32 = 32;

/// All open batches together may hold at most `1 / BURST_SHARE` of the burst: a batch is
/// `min(MAX_BATCH, burst / (BURST_SHARE × workers))` tokens, and batching is off when that is
/// below 2 (the bucket then behaves exactly like a [`super::TokenBucket`]).
pub const BURST_SHARE: u64 = 64;

/// A batch not touched by its worker for this long (1 ms) is closed: its unused tokens go back
/// and its capacity is released. Why 1 ms: a hot worker empties a batch of at most
/// [`MAX_BATCH`] tokens in microseconds, so a live batch never expires; an idle worker's batch
/// holds back at most its used part of the burst, and only for about this long.
pub const BATCH_TTL_NANOS: u64 = 1_000_000;

/// A worker looks at another worker's batch once every this many of its own renewals.
const SWEEP_EVERY: usize = 8;

/// Aligns its content to 128 bytes (two 64-byte lines, as the adjacent-line prefetcher pulls
/// pairs), so two workers' states never share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
struct CachePadded<T>(T);

/// The shared bucket: the GCRA theoretical arrival time and the tokens handed out in open
/// batches (their size, used or not).
#[derive(Debug, Default)]
struct Shared {
    tat: AtomicU64,
    lent: AtomicU64,
}

/// One worker's batch: `size << 32 | left` (0: no open batch), and the instant it was borrowed.
#[derive(Debug, Default)]
struct Shard {
    batch: AtomicU64,
    since: AtomicU64,
    /// The next other shard this worker looks at for an expired batch.
    sweep: AtomicUsize,
}

#[inline]
fn pack(size: u64, left: u64) -> u64 {
    (size << 32) | left
}

#[inline]
fn unpack(word: u64) -> (u64, u64) {
    (word >> 32, word & 0xffff_ffff)
}

/// A token bucket for many worker threads: one shared bucket, and one batch of borrowed tokens
/// per worker on its own cache line.
///
/// **Rule.** A worker serves a request from its batch while the shared bucket could serve it
/// to *every* class (it holds at least `permits` above the largest reserve); otherwise its
/// batch goes back and the request is judged by the shared bucket with its own class, exactly
/// as [`super::TokenBucket`] judges it. A worker whose batch is empty or older than
/// [`BATCH_TTL_NANOS`] returns what is left and borrows a new batch in one compare-and-swap,
/// if the shared bucket still holds a batch above the largest reserve after lending it;
/// otherwise it borrows just what the request needs. Before refusing, every other worker's
/// batch is pulled back and the request is judged again, so idle workers never starve busy
/// ones.
///
/// **Bound.** In any interval of length `t`, at most `rate × t + burst` permits are admitted
/// (property-tested): a batch's tokens are taken from the shared bucket when it is lent, and
/// while it is open the shared bucket's capacity is `burst − lent`, so the shared bucket plus
/// every unused borrowed token never exceed the burst. The price: the used part of a batch
/// still counts against the capacity until the batch closes (at most `1 / BURST_SHARE` of
/// the burst in all, for at most about [`BATCH_TTL_NANOS`] after its worker goes idle), so a
/// full burst right after such a pause can be a few tokens short of the plain bucket's.
///
/// **Criticality.** Local batches only serve while every class would be admitted by the
/// shared bucket, and a refusal comes from the shared bucket after every batch was pulled
/// back, so a lower class is never admitted while a higher one is refused at the same moment.
///
/// ```
/// use spillway_core::rate::{BatchedTokenBucket, Rate, TokenBucketConfig};
/// use spillway_core::{Criticality, Instant};
/// use std::num::NonZeroUsize;
///
/// let config = TokenBucketConfig::new(Rate::per_second(1_000_000), 100_000);
/// let workers = NonZeroUsize::new(4).expect("non-zero");
/// let bucket = BatchedTokenBucket::new(config, workers);
/// assert_eq!(bucket.batch_size(), 32);
/// let now = Instant::from_nanos(1_000);
/// // Each worker thread passes its own index; the first check borrows a batch, the next
/// // ones take from it without touching the shared bucket.
/// for _ in 0..10 {
///     assert!(bucket.check(2, now, 1, Criticality::Critical).is_admitted());
/// }
/// ```
#[derive(Debug)]
pub struct BatchedTokenBucket {
    config: TokenBucketConfig,
    interval: u64,
    /// Tokens per batch; 0 when batching is off.
    batch: u64,
    shared: CachePadded<Shared>,
    shards: Box<[CachePadded<Shard>]>,
}

impl BatchedTokenBucket {
    /// A full bucket with `config`'s rate, burst and reserves, for `workers` worker threads.
    pub fn new(config: TokenBucketConfig, workers: NonZeroUsize) -> BatchedTokenBucket {
        let rule = config.rule();
        let interval = u64::try_from(rule.interval().as_nanos()).unwrap_or(u64::MAX);
        let workers_u64 = u64::try_from(workers.get()).unwrap_or(u64::MAX);
        let per_worker = rule.burst() / BURST_SHARE.saturating_mul(workers_u64);
        let batch = per_worker.min(u64::from(MAX_BATCH));
        let batch = if batch < 2 { 0 } else { batch };
        let shards = (0..workers.get()).map(|_| CachePadded(Shard::default())).collect();
        BatchedTokenBucket {
            config,
            interval,
            batch,
            shared: CachePadded(Shared::default()),
            shards,
        }
    }

    /// The rule.
    pub fn config(&self) -> &TokenBucketConfig {
        &self.config
    }

    /// Worker slots (each on its own cache line).
    pub fn workers(&self) -> usize {
        self.shards.len()
    }

    /// Tokens a worker borrows at once (0: batching is off for this burst and worker count).
    pub fn batch_size(&self) -> u32 {
        // At most MAX_BATCH by construction.
        u32::try_from(self.batch).unwrap_or(MAX_BATCH)
    }

    /// Takes `permits` tokens for `class` on behalf of worker `worker` (any index: it is taken
    /// modulo [`BatchedTokenBucket::workers`]), or none of them. A rejection's `retry_after` is
    /// when the shared bucket will hold enough for `class`, as [`super::TokenBucket`] says it
    /// (absent when `permits` exceeds what `class` may ever hold).
    ///
    /// Any thread may pass any index; the speed-up comes from each thread using its own.
    #[inline]
    pub fn check(&self, worker: usize, now: Instant, permits: u32, class: Criticality) -> Decision {
        let len = self.shards.len();
        // A predictable branch instead of a division on every check.
        let shard = &self.shards[if worker < len { worker } else { worker % len }].0;
        let now = now.as_nanos();
        let n = u64::from(permits);
        if n > self.batch {
            // Larger than a batch (or batching off): the shared bucket decides.
            return self.direct(now, permits, class);
        }
        let word = shard.batch.load(Ordering::Relaxed);
        let (_, left) = unpack(word);
        if left >= n
            && now.saturating_sub(shard.since.load(Ordering::Relaxed)) <= BATCH_TTL_NANOS
            && self.every_class_fits(now, permits)
            // Relaxed: the word is the batch; tokens are conserved by the CAS alone (a thief
            // that pulled the batch back swapped it to 0, and this CAS then fails).
            && shard
                .batch
                .compare_exchange(word, word - n, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Decision::Admit;
        }
        self.slow(shard, now, permits, class)
    }

    /// True when the shared bucket holds `permits` above the largest reserve: every class
    /// would be admitted by it now.
    #[inline]
    fn every_class_fits(&self, now: u64, permits: u32) -> bool {
        let tat = self.effective_tat(now, 0);
        self.rule().decide(tat, now, permits, Criticality::Sheddable).is_ok()
    }

    #[inline]
    fn rule(&self) -> &GcraConfig {
        self.config.rule()
    }

    /// The shared TAT with the open batches' capacity taken out: `max(tat, now + lent × T)`,
    /// with `lent` less `not_counted` (a batch counted in `lent` ahead of its lending).
    #[inline]
    fn effective(&self, tat: u64, now: u64, not_counted: u64) -> u64 {
        let lent = self.shared.0.lent.load(Ordering::Acquire).saturating_sub(not_counted);
        tat.max(now.saturating_add(lent.saturating_mul(self.interval)))
    }

    #[inline]
    fn effective_tat(&self, now: u64, not_counted: u64) -> u64 {
        self.effective(self.shared.0.tat.load(Ordering::Acquire), now, not_counted)
    }

    /// The worker's batch cannot serve: renew it, or return it and ask the shared bucket.
    #[cold]
    fn slow(&self, shard: &Shard, now: u64, permits: u32, class: Criticality) -> Decision {
        let (size, left) = unpack(shard.batch.swap(0, Ordering::AcqRel));
        self.sweep_one(shard, now);
        if self.renew(now, size, left) {
            shard.since.store(now, Ordering::Relaxed);
            shard.batch.store(pack(self.batch, self.batch - u64::from(permits)), Ordering::Release);
            return Decision::Admit;
        }
        self.close(now, size, left);
        self.direct(now, permits, class)
    }

    /// Returns `left` tokens of a batch of `size` (`size` 0: none open) and lends a new batch,
    /// in one compare-and-swap, if the shared bucket keeps a batch above the largest reserve
    /// afterwards. False, with nothing changed, when it cannot.
    fn renew(&self, now: u64, size: u64, left: u64) -> bool {
        let b = self.batch;
        let shared = &self.shared.0;
        // Count the new batch in `lent` before lending it: others see less capacity meanwhile
        // (never more). When renewing, the old batch (same size) is already counted.
        let ahead = if size == 0 {
            shared.lent.fetch_add(b, Ordering::AcqRel);
            b
        } else {
            0
        };
        let Ok(two) = u32::try_from(2 * b) else { return false };
        let mut tat = shared.tat.load(Ordering::Acquire);
        loop {
            // Closing the old batch: its unused tokens come back.
            let base = self.effective(tat, now, ahead).saturating_sub(left * self.interval);
            if self.rule().decide(base, now, two, Criticality::Sheddable).is_err() {
                if ahead != 0 {
                    shared.lent.fetch_sub(ahead, Ordering::AcqRel);
                }
                return false;
            }
            let next = base.max(now) + b * self.interval;
            match shared.tat.compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(actual) => tat = actual,
            }
        }
    }

    /// Closes a batch of `size` with `left` unused tokens: they go back to the shared bucket,
    /// then its capacity is released. The bucket keeps the capacity the batch held until now
    /// (written into the TAT), so closing never hands out refill that was not allowed.
    fn close(&self, now: u64, size: u64, left: u64) {
        if size == 0 {
            return;
        }
        let shared = &self.shared.0;
        let mut tat = shared.tat.load(Ordering::Acquire);
        loop {
            let next = self.effective(tat, now, 0).saturating_sub(left * self.interval);
            if next == tat {
                break;
            }
            match shared.tat.compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(actual) => tat = actual,
            }
        }
        shared.lent.fetch_sub(size, Ordering::AcqRel);
    }

    /// Closes one other worker's batch if it has expired. Every [`SWEEP_EVERY`]-th slow path
    /// of a worker looks at the next shard in turn, so an idle worker's batch is closed soon
    /// after it expires while a busy worker rarely reads another worker's cache line.
    fn sweep_one(&self, shard: &Shard, now: u64) {
        let n = self.shards.len();
        if n < 2 {
            return;
        }
        let turn = shard.sweep.load(Ordering::Relaxed).wrapping_add(1);
        shard.sweep.store(turn, Ordering::Relaxed);
        if !turn.is_multiple_of(SWEEP_EVERY) {
            return;
        }
        let other = &self.shards[(turn / SWEEP_EVERY) % n].0;
        if other.batch.load(Ordering::Relaxed) != 0
            && now.saturating_sub(other.since.load(Ordering::Relaxed)) > BATCH_TTL_NANOS
        {
            let (size, left) = unpack(other.batch.swap(0, Ordering::AcqRel));
            self.close(now, size, left);
        }
    }

    /// Pulls every open batch back into the shared bucket; true if there was any.
    fn pull_back_all(&self, now: u64) -> bool {
        let mut any = false;
        for shard in self.shards.iter() {
            if shard.0.batch.load(Ordering::Relaxed) != 0 {
                let (size, left) = unpack(shard.0.batch.swap(0, Ordering::AcqRel));
                self.close(now, size, left);
                any |= size != 0;
            }
        }
        any
    }

    /// Judges the request against the shared bucket with its own class, as
    /// [`super::TokenBucket`] does; before refusing, pulls every batch back and judges again.
    fn direct(&self, now: u64, permits: u32, class: Criticality) -> Decision {
        let shared = &self.shared.0;
        let mut pulled_back = false;
        let mut tat = shared.tat.load(Ordering::Acquire);
        loop {
            match self.rule().decide(self.effective(tat, now, 0), now, permits, class) {
                Ok(next) => match shared.tat.compare_exchange_weak(
                    tat,
                    next,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => return Decision::Admit,
                    Err(actual) => tat = actual,
                },
                Err(wait) => {
                    if pulled_back || !self.pull_back_all(now) {
                        return rate_limited(wait);
                    }
                    pulled_back = true;
                    tat = shared.tat.load(Ordering::Acquire);
                }
            }
        }
    }

    /// Tokens `class` could take from the shared bucket at `now` (the reserve deducted), not
    /// counting the unused tokens of open batches.
    pub fn available(&self, now: Instant, class: Criticality) -> u64 {
        let now = now.as_nanos();
        self.rule().available(self.effective_tat(now, 0), now, class)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::RejectReason;
    use crate::random::{splitmix64, GOLDEN_GAMMA};
    use crate::rate::{CriticalityReserve, Rate, TokenBucket};
    use std::time::Duration;

    const START: u64 = 1_000_000_000;

    fn workers(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).expect("non-zero")
    }

    /// One arrival: time (ns), worker, permits, class.
    type Arrival = (u64, usize, u32, Criticality);

    /// Admitted requests: (time ns, permits).
    type Admitted = Vec<(u64, u64)>;

    /// Admitted (time, permits) of the batched bucket and the plain one for the same arrivals.
    fn replay(
        config: &TokenBucketConfig,
        n_workers: usize,
        arrivals: &[Arrival],
    ) -> (Admitted, Admitted) {
        let batched = BatchedTokenBucket::new(config.clone(), workers(n_workers));
        let plain = TokenBucket::from_config(config.clone());
        let (mut b, mut p) = (Vec::new(), Vec::new());
        for &(t, w, n, c) in arrivals {
            let now = Instant::from_nanos(t);
            if batched.check(w, now, n, c).is_admitted() {
                b.push((t, u64::from(n)));
            }
            if plain.try_acquire(now, n, c).is_admitted() {
                p.push((t, u64::from(n)));
            }
        }
        (b, p)
    }

    /// The largest `permits in [t_i, t_j] − (t_j − t_i) / T` over every interval, in permits
    /// (times T): it must never exceed the burst. Linear: keeps the running minimum.
    fn worst_excess_times_t(admitted: &[(u64, u64)], interval: u64) -> i128 {
        let t = i128::from(interval);
        let (mut total, mut min_before, mut worst) = (0i128, i128::MAX, i128::MIN);
        for &(at, permits) in admitted {
            // Interval starting at this admission: count before it, minus its start time.
            min_before = min_before.min(total * t - i128::from(at));
            total += i128::from(permits);
            worst = worst.max(total * t - i128::from(at) - min_before);
        }
        worst
    }

    fn assert_within_bound(admitted: &[(u64, u64)], config: &TokenBucketConfig) {
        let interval = config.refill_interval().as_nanos() as u64;
        let burst = i128::from(config.capacity()) * i128::from(interval);
        let worst = worst_excess_times_t(admitted, interval);
        assert!(worst <= burst, "{} permits over rate × t in some interval", worst / 100_000);
    }

    /// Arrivals every `gap` ns over `duration` ns from `START`, spread over workers by `pick`.
    fn steady(gap: u64, duration: u64, n_workers: usize, seed: u64) -> Vec<Arrival> {
        (0..duration / gap)
            .map(|i| {
                let r = splitmix64(seed.wrapping_add(i.wrapping_mul(GOLDEN_GAMMA)));
                (START + i * gap, r as usize % n_workers, 1, Criticality::Critical)
            })
            .collect()
    }

    fn assert_close_to_plain(name: &str, config: &TokenBucketConfig, n: usize, a: &[Arrival]) {
        let (batched, plain) = replay(config, n, a);
        let count = |v: &[(u64, u64)]| v.iter().map(|p| p.1).sum::<u64>() as f64;
        let (b, p) = (count(&batched), count(&plain));
        assert!((b - p).abs() <= 0.01 * p, "{name}: batched {b} vs plain {p}");
        assert_within_bound(&batched, config);
    }

    #[test]
    fn batched_bucket_admits_within_one_percent_of_a_plain_bucket_at_any_arrival_pattern() {
        // 100 000/s with a burst of 10 000: batches of 32 for 4 workers. Two seconds each.
        let config = TokenBucketConfig::new(Rate::per_second(100_000), 10_000);
        let second = 1_000_000_000;
        for n in [1, 2, 4, 8] {
            assert_close_to_plain("twice the rate", &config, n, &steady(5_000, 2 * second, n, 1));
            assert_close_to_plain("half the rate", &config, n, &steady(20_000, 2 * second, n, 2));
            assert_close_to_plain("the rate", &config, n, &steady(10_000, 2 * second, n, 3));
            // On/off: 20 ms at five times the rate, then 80 ms idle (the bucket refills).
            let on_off: Vec<Arrival> = steady(2_000, 2 * second, n, 4)
                .into_iter()
                .filter(|a| (a.0 - START) % 100_000_000 < 20_000_000)
                .collect();
            assert_close_to_plain("on/off", &config, n, &on_off);
            // Random gaps (mean 8 µs, 1.25× the rate), random permits 1–4 and classes.
            let mut t = START;
            let random: Vec<Arrival> = (0..200_000u64)
                .map(|i| {
                    let r = splitmix64(i.wrapping_mul(GOLDEN_GAMMA));
                    t += r % 16_000;
                    let permits = 1 + (r >> 20) as u32 % 4;
                    let class = Criticality::ALL[(r >> 30) as usize % 4];
                    (t, (r >> 40) as usize % n, permits, class)
                })
                .collect();
            assert_close_to_plain("random", &config, n, &random);
        }
    }

    #[test]
    fn batched_bucket_takes_batches_from_the_shared_bucket() {
        let config = TokenBucketConfig::new(Rate::per_second(1), 10_000);
        let b = BatchedTokenBucket::new(config, workers(2));
        assert_eq!(b.batch_size(), 32);
        let now = Instant::from_nanos(START);
        assert!(b.check(0, now, 1, Criticality::Critical).is_admitted());
        assert_eq!(b.available(now, Criticality::Critical), 10_000 - 32, "one batch lent");
        for _ in 0..31 {
            assert!(b.check(0, now, 1, Criticality::Critical).is_admitted());
        }
        assert_eq!(b.available(now, Criticality::Critical), 10_000 - 32, "served locally");
        assert!(b.check(2, now, 1, Criticality::Critical).is_admitted(), "worker 2 is worker 0");
        assert_eq!(b.available(now, Criticality::Critical), 10_000 - 64, "renewed");
    }

    #[test]
    fn open_batches_shrink_the_shared_bucket_so_a_refill_cannot_add_to_them() {
        // 1 token/µs, burst 10 000, batches of 32.
        let config = TokenBucketConfig::new(Rate::per_second(1_000_000), 10_000);
        let b = BatchedTokenBucket::new(config, workers(2));
        let t0 = Instant::from_nanos(START);
        assert!(b.check(1, t0, 1, Criticality::Critical).is_admitted(), "borrows 32, keeps 31");
        // 100 µs later the plain bucket would be full again; worker 1 still holds 31.
        let t1 = Instant::from_nanos(START + 100_000);
        assert_eq!(b.available(t1, Criticality::Critical), 10_000 - 32);
        let mine = (0..31).filter(|_| b.check(1, t1, 1, Criticality::Critical).is_admitted());
        assert_eq!(mine.count(), 31);
        let others = (0..20_000).filter(|_| b.check(0, t1, 1, Criticality::Critical).is_admitted());
        // At one instant, never more than the burst.
        assert_eq!(others.count() + 31, 9_999);
    }

    #[test]
    fn batched_bucket_turns_batching_off_for_small_bursts() {
        let config = TokenBucketConfig::new(Rate::per_second(10), 100);
        let b = BatchedTokenBucket::new(config, workers(4));
        assert_eq!(b.batch_size(), 0);
        let admitted = (0..200)
            .filter(|i| {
                b.check(*i, Instant::from_nanos(START), 1, Criticality::Critical).is_admitted()
            })
            .count();
        assert_eq!(admitted, 100);
    }

    #[test]
    fn batched_bucket_refuses_with_the_plain_buckets_retry_after() {
        let config = TokenBucketConfig::new(Rate::per_second(1000), 10_000);
        let b = BatchedTokenBucket::new(config.clone(), workers(4));
        let plain = TokenBucket::from_config(config);
        let now = Instant::from_nanos(START);
        let mut admitted = 0;
        for i in 0..10_000 {
            assert!(b.check(i % 4, now, 1, Criticality::Critical).is_admitted(), "at {i}");
            admitted += 1;
        }
        for _ in 0..admitted {
            assert!(plain.check(now).is_admitted());
        }
        let later = Instant::from_nanos(START + 300_000);
        let want = plain.check(later).rejection().expect("plain is empty");
        let got = b.check(3, later, 1, Criticality::Critical).rejection().expect("empty too");
        assert_eq!(got.reason, RejectReason::RateLimited);
        assert_eq!(got.retry_after, want.retry_after);
        assert_eq!(got.retry_after, Some(Duration::from_micros(700)));
    }

    #[test]
    fn idle_workers_batches_are_pulled_back_before_anyone_is_refused() {
        let config =
            TokenBucketConfig::new(Rate::per_hour(1), 1_000).with_reserve(CriticalityReserve::NONE);
        let b = BatchedTokenBucket::new(config, workers(4));
        assert_eq!(b.batch_size(), 3);
        let now = Instant::from_nanos(START);
        // Workers 1–3 take one token each and go idle holding two.
        for w in 1..4 {
            assert!(b.check(w, now, 1, Criticality::Critical).is_admitted());
        }
        // Worker 0 still gets every other token of the burst.
        let got = (0..2_000).filter(|_| b.check(0, now, 1, Criticality::Critical).is_admitted());
        assert_eq!(got.count(), 997);
    }

    #[test]
    fn an_expired_batch_is_closed_by_another_worker() {
        let config = TokenBucketConfig::new(Rate::per_second(1), 10_000);
        let b = BatchedTokenBucket::new(config, workers(2));
        let now = Instant::from_nanos(START);
        assert!(b.check(1, now, 1, Criticality::Critical).is_admitted());
        assert_eq!(b.available(now, Criticality::Critical), 10_000 - 32);
        // Worker 1 goes idle; every eighth renewal of worker 0 looks at another shard.
        let later = Instant::from_nanos(START + BATCH_TTL_NANOS + 1);
        for _ in 0..7 * 32 {
            assert!(b.check(0, later, 1, Criticality::Critical).is_admitted());
        }
        assert_eq!(b.available(later, Criticality::Critical), 10_000 - 32 - 7 * 32, "not yet");
        for _ in 0..32 {
            assert!(b.check(0, later, 1, Criticality::Critical).is_admitted());
        }
        // Worker 1's 31 unused tokens came back: only its used one and worker 0's eight
        // batches are gone.
        assert_eq!(b.available(later, Criticality::Critical), 10_000 - 1 - 8 * 32);
    }

    #[test]
    fn batches_serve_no_class_once_the_bucket_is_down_to_the_reserves() {
        // Reserves of 25 % (sheddable) and 10 % (sheddable+) of 10 000.
        let config = TokenBucketConfig::new(Rate::per_hour(1), 10_000);
        let b = BatchedTokenBucket::new(config, workers(2));
        let now = Instant::from_nanos(START);
        let critical = (0..20_000)
            .filter(|i| b.check(i % 2, now, 1, Criticality::Sheddable).is_admitted())
            .count();
        assert_eq!(critical, 7_500, "sheddable stops at its reserve, batches or not");
        assert!(b.check(0, now, 1, Criticality::SheddablePlus).is_admitted());
        assert!(!b.check(1, now, 1, Criticality::Sheddable).is_admitted());
        let rest = (0..20_000)
            .filter(|i| b.check(i % 2, now, 1, Criticality::Critical).is_admitted())
            .count();
        assert_eq!(rest, 2_499);
    }

    #[test]
    fn threads_with_their_own_workers_never_exceed_rate_times_t_plus_burst() {
        // 1000/s, burst 20 000: 4 threads, each 50 000 checks 1 µs apart (50 ms), so the
        // bucket is drained and the rate binds.
        let config = TokenBucketConfig::new(Rate::per_second(1_000), 20_000);
        let b = BatchedTokenBucket::new(config, workers(4));
        assert_eq!(b.batch_size(), 32);
        let total = std::sync::atomic::AtomicU64::new(0);
        std::thread::scope(|s| {
            for w in 0..4 {
                let (b, total) = (&b, &total);
                s.spawn(move || {
                    let mut mine = 0;
                    for i in 0..50_000u64 {
                        let now = Instant::from_nanos(START + i * 1_000);
                        mine += u64::from(b.check(w, now, 1, Criticality::Critical).is_admitted());
                    }
                    total.fetch_add(mine, Ordering::Relaxed);
                });
            }
        });
        let total = total.load(Ordering::Relaxed);
        // 50 ms at 1000/s refills at most 50 tokens.
        assert!(total <= 20_000 + 50, "{total} admitted");
        assert!(total >= 20_000 - 4 * 32, "{total} admitted: batches stranded");
    }
}
