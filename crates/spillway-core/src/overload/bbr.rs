//! The BBR-style adaptive shedder (after bilibili/kratos `ratelimit/bbr`, itself after Alibaba
//! Sentinel's system-adaptive protection): when the CPU is hot, admit only as many concurrent
//! requests as the service has recently shown it can complete.
//!
//! Why: a fixed rate limit is either too low (wasted capacity) or too high (collapse). Little's
//! law gives the concurrency a service sustains from what it just did: the most requests it
//! completed in one bucket (`maxPass`) times the shortest time it needed for one (`minRT`). Above
//! that, extra requests only queue, raise latency and burn CPU on work that will time out.
//!
//! The estimate, over a rolling window (default 5 s of 100 ms buckets), completed buckets only:
//! - `maxPass`: the largest number of requests completed (`done`) in one bucket, at least 1;
//! - `minRT`: the smallest per-bucket **average** response time (kratos' choice: a per-bucket
//!   minimum would follow the luckiest request — a cache hit — and shed far too much), kept in
//!   nanoseconds rather than kratos' whole milliseconds so fast services are estimated too;
//! - `maxInFlight = ceil(maxPass × minRT / bucketWidth)`, which is the brief's
//!   `ceil(maxPass × minRT_ms × bucketsPerSecond / 1000)` in integer nanoseconds.
//!
//! A request of class `c` is dropped when the check is active and the requests already in flight
//! exceed `c`'s share of `maxInFlight` ([`ClassShares`]). The check is active while the CPU is at
//! or above the threshold (default 80 %), and for a cool-down (default 1 s) after the last drop
//! made with a hot CPU, so a brief CPU dip does not let a flood through. Drops made during the
//! cool-down do not extend it: otherwise shedding `Sheddable` traffic could keep the check on
//! forever with an idle CPU. (kratos measures its one second from the *first* drop of a burst;
//! Spillway measures from the last CPU-triggered one, as the spec asks.)

use super::cpu::{CpuGauge, CpuUsage};
use super::shares::ClassShares;
use crate::clock::{duration_nanos, Instant};
use crate::criticality::Criticality;
use crate::decision::{RejectReason, Rejection};
use crate::window::RollingWindow;
use parking_lot::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Settings of a [`BbrLimiter`]. Every default is kratos' or the spec's.
#[derive(Clone, Debug, PartialEq)]
pub struct BbrConfig {
    /// Span of the statistics window (default 5 s).
    pub window: Duration,
    /// Number of buckets in the window (default 50, i.e. 100 ms buckets).
    pub buckets: usize,
    /// The check is active at or above this CPU usage (default 800 ‰).
    pub cpu_threshold: CpuUsage,
    /// How long the check stays active after the last drop made with a hot CPU (default 1 s).
    pub cool_down: Duration,
    /// Each class's share of `maxInFlight` (default [`ClassShares::bbr_default`]).
    pub class_shares: ClassShares,
}

impl Default for BbrConfig {
    fn default() -> Self {
        BbrConfig {
            window: Duration::from_secs(5),
            buckets: 50,
            cpu_threshold: CpuUsage::from_permille(800),
            cool_down: Duration::from_secs(1),
            class_shares: ClassShares::bbr_default(),
        }
    }
}

/// Why a [`BbrConfig`] was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BbrConfigError {
    /// `buckets` was zero.
    #[error("the BBR window needs at least one bucket")]
    NoBuckets,
    /// `window / buckets` was below one millisecond: too short to count completions in.
    #[error("BBR buckets must be at least 1 ms long (window / buckets)")]
    BucketTooShort,
}

/// What [`BbrLimiter::allow`] hands out: proof of admission, to give back exactly once to
/// [`BbrLimiter::done`] (completed) or [`BbrLimiter::abandon`] (cancelled).
#[must_use = "an admitted request must be given back to done() or abandon(), or inflight leaks"]
#[derive(Debug, PartialEq, Eq)]
pub struct BbrToken {
    started: Instant,
}

impl BbrToken {
    /// When the request was admitted.
    pub fn started_at(&self) -> Instant {
        self.started
    }
}

/// A snapshot of a [`BbrLimiter`]'s estimate, for metrics and the admin API.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BbrStats {
    /// The CPU usage the limiter currently sees.
    pub cpu: CpuUsage,
    /// Requests admitted and not yet done.
    pub inflight: u64,
    /// Most requests completed in one completed bucket (at least 1).
    pub max_pass: u64,
    /// Smallest per-bucket average response time (at least 1 ns).
    pub min_rt: Duration,
    /// `ceil(max_pass × min_rt / bucket width)`: the `Critical` class's limit.
    pub max_inflight: u64,
    /// Whether the inflight check is active now (hot CPU or cool-down).
    pub shedding: bool,
}

/// One bucket of the window: requests completed in it and the sum of their response times.
#[derive(Copy, Clone, Debug, Default)]
struct Bucket {
    passes: u64,
    rt_sum_nanos: u64,
}

/// The BBR-style shedder. Shared by reference across threads: `allow` and `done` take `&self`.
///
/// Cost: when the CPU is below the threshold and no cool-down runs, `allow` is two relaxed loads
/// and an increment; `done` takes a short uncontended lock to record the sample. While shedding,
/// `maxInFlight` is recomputed at most once per bucket and read from one atomic in between.
///
/// ```
/// use spillway_core::overload::{BbrConfig, BbrLimiter, CpuUsage};
/// use spillway_core::{Criticality, Instant};
/// use std::time::Duration;
///
/// let bbr = BbrLimiter::try_new(BbrConfig::default()).unwrap();
/// let t0 = Instant::ZERO;
/// let token = bbr.allow(Criticality::Critical, t0).unwrap();
/// bbr.done(token, t0 + Duration::from_millis(20));
///
/// bbr.set_cpu(CpuUsage::from_permille(950)); // hot: the inflight check applies
/// let a = bbr.allow(Criticality::Critical, t0).unwrap();
/// let b = bbr.allow(Criticality::Critical, t0).unwrap(); // one in flight: never dropped
/// assert!(bbr.allow(Criticality::Critical, t0).is_err()); // estimate is 1, two in flight
/// # bbr.done(a, t0); bbr.done(b, t0);
/// ```
#[derive(Debug)]
pub struct BbrLimiter {
    cpu: CpuGauge,
    cpu_threshold: u32,
    cool_down_nanos: u64,
    cool_down: Duration,
    shares: ClassShares,
    width_nanos: u64,
    inflight: AtomicI64,
    /// 1 + the nanos of the last drop made with a hot CPU; 0 when there was none.
    last_hot_drop: AtomicU64,
    /// `maxInFlight` cached for one bucket: high 32 bits `epoch + 1` (wrapping), low 32 bits the
    /// value (saturated). 0 means empty.
    cached: AtomicU64,
    window: Mutex<RollingWindow<Bucket>>,
}

impl BbrLimiter {
    /// A limiter with its own CPU gauge (feed it with [`BbrLimiter::set_cpu`]).
    pub fn try_new(config: BbrConfig) -> Result<BbrLimiter, BbrConfigError> {
        BbrLimiter::with_cpu_gauge(config, CpuGauge::new())
    }

    /// A limiter reading a shared CPU gauge, e.g. one written by a process-wide sampler.
    pub fn with_cpu_gauge(config: BbrConfig, cpu: CpuGauge) -> Result<BbrLimiter, BbrConfigError> {
        if config.buckets == 0 {
            return Err(BbrConfigError::NoBuckets);
        }
        let width_nanos = duration_nanos(config.window) / config.buckets as u64;
        if width_nanos < 1_000_000 {
            return Err(BbrConfigError::BucketTooShort);
        }
        Ok(BbrLimiter {
            cpu,
            cpu_threshold: config.cpu_threshold.permille(),
            cool_down_nanos: duration_nanos(config.cool_down),
            cool_down: config.cool_down,
            shares: config.class_shares,
            width_nanos,
            inflight: AtomicI64::new(0),
            last_hot_drop: AtomicU64::new(0),
            cached: AtomicU64::new(0),
            window: Mutex::new(RollingWindow::new(
                config.buckets,
                Duration::from_nanos(width_nanos),
            )),
        })
    }

    /// Publishes a new CPU usage (to this limiter's gauge, shared with its clones' readers).
    #[inline]
    pub fn set_cpu(&self, usage: CpuUsage) {
        self.cpu.set(usage);
    }

    /// The gauge this limiter reads its CPU usage from.
    pub fn cpu_gauge(&self) -> &CpuGauge {
        &self.cpu
    }

    /// Admits a request of class `class` at `now`, or rejects it as
    /// [`RejectReason::Overloaded`] with the cool-down as retry hint.
    ///
    /// While the check is active, admission is one `fetch_add` then the comparison (undone on
    /// a drop), so racing threads never admit a request while more than the class limit are
    /// already in flight, exactly the rule for requests arriving one by one. A racing request
    /// may instead be refused spuriously, for an instant.
    #[inline]
    pub fn allow(&self, class: Criticality, now: Instant) -> Result<BbrToken, Rejection> {
        let hot = self.cpu.get().permille() >= self.cpu_threshold;
        if hot || self.in_cool_down(now) {
            let limit = self.class_limit(class, now);
            let before = self.inflight.fetch_add(1, Ordering::Relaxed);
            if u64::try_from(before).unwrap_or(0) > limit {
                self.inflight.fetch_sub(1, Ordering::Relaxed);
                if hot {
                    let at = now.as_nanos().saturating_add(1);
                    self.last_hot_drop.fetch_max(at, Ordering::Relaxed);
                }
                return Err(Rejection::new(RejectReason::Overloaded).retry_after(self.cool_down));
            }
            return Ok(BbrToken { started: now });
        }
        self.inflight.fetch_add(1, Ordering::Relaxed);
        Ok(BbrToken { started: now })
    }

    /// Records a completed request: one pass and its response time in the bucket of `now`.
    pub fn done(&self, token: BbrToken, now: Instant) {
        let rt = now.nanos_since(token.started);
        {
            let mut window = self.window.lock();
            let bucket = window.current_mut(now);
            bucket.passes = bucket.passes.saturating_add(1);
            bucket.rt_sum_nanos = bucket.rt_sum_nanos.saturating_add(rt);
        }
        self.inflight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Releases a request that did not complete (cancelled, its caller went away): it leaves
    /// the inflight count but is no sample, since its truncated time says nothing of capacity.
    pub fn abandon(&self, token: BbrToken) {
        let BbrToken { .. } = token;
        self.inflight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Requests admitted and not yet given back.
    #[inline]
    pub fn inflight(&self) -> u64 {
        u64::try_from(self.inflight.load(Ordering::Relaxed)).unwrap_or(0)
    }

    /// The estimate and state at `now`.
    pub fn stats(&self, now: Instant) -> BbrStats {
        let (max_pass, min_rt_nanos) = self.estimate(now);
        BbrStats {
            cpu: self.cpu.get(),
            inflight: self.inflight(),
            max_pass,
            min_rt: Duration::from_nanos(min_rt_nanos),
            max_inflight: self.max_inflight_from(max_pass, min_rt_nanos),
            shedding: self.cpu.get().permille() >= self.cpu_threshold || self.in_cool_down(now),
        }
    }

    /// `class`'s inflight limit at `now`: its share of `maxInFlight`.
    pub fn class_limit(&self, class: Criticality, now: Instant) -> u64 {
        self.shares.limit(self.max_inflight(now), class)
    }

    #[inline]
    fn in_cool_down(&self, now: Instant) -> bool {
        let last = self.last_hot_drop.load(Ordering::Relaxed);
        // A clock that stepped back (now before the drop) counts as inside the cool-down.
        last != 0 && now.as_nanos().saturating_sub(last - 1) < self.cool_down_nanos
    }

    /// `maxInFlight`, recomputed at most once per bucket.
    fn max_inflight(&self, now: Instant) -> u64 {
        let tag = (now.as_nanos() / self.width_nanos).wrapping_add(1) & 0xFFFF_FFFF;
        let cached = self.cached.load(Ordering::Relaxed);
        if cached != 0 && cached >> 32 == tag {
            return cached & 0xFFFF_FFFF;
        }
        let (max_pass, min_rt) = self.estimate(now);
        let value = self.max_inflight_from(max_pass, min_rt).min(0xFFFF_FFFF);
        self.cached.store((tag << 32) | value, Ordering::Relaxed);
        value
    }

    fn max_inflight_from(&self, max_pass: u64, min_rt_nanos: u64) -> u64 {
        let product = u128::from(max_pass) * u128::from(min_rt_nanos);
        let width = u128::from(self.width_nanos);
        u64::try_from(product.div_ceil(width)).unwrap_or(u64::MAX)
    }

    /// `(maxPass, minRT in nanoseconds)` over the completed buckets of the window at `now`.
    fn estimate(&self, now: Instant) -> (u64, u64) {
        let window = self.window.lock();
        let mut max_pass = 1;
        let mut min_rt = u64::MAX;
        for bucket in window.iter_completed(now) {
            if bucket.passes == 0 {
                continue;
            }
            max_pass = max_pass.max(bucket.passes);
            min_rt = min_rt.min(bucket.rt_sum_nanos.div_ceil(bucket.passes));
        }
        // No sample yet: the smallest estimate, so a hot CPU with nothing completing sheds.
        let min_rt = if min_rt == u64::MAX { 1 } else { min_rt.max(1) };
        (max_pass, min_rt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(ms: u64) -> Instant {
        Instant::from_nanos(ms * 1_000_000)
    }

    fn limiter() -> BbrLimiter {
        BbrLimiter::try_new(BbrConfig::default()).expect("default config is valid")
    }

    /// Completes `per_bucket` requests of `rt_ms` each in every 100 ms bucket of [0, `until_ms`).
    fn warm_up(bbr: &BbrLimiter, per_bucket: u64, rt_ms: u64, until_ms: u64) {
        let mut t = 0;
        while t < until_ms {
            for _ in 0..per_bucket {
                let token = bbr.allow(Criticality::Critical, ms(t)).expect("cool CPU admits");
                bbr.done(token, ms(t + rt_ms));
            }
            t += 100;
        }
    }

    #[test]
    fn max_inflight_is_max_pass_times_min_rt_over_bucket_width() {
        let bbr = limiter();
        // 20 completions per 100 ms bucket, 30 ms each: 200/s × 0.03 s = 6 in flight.
        warm_up(&bbr, 20, 30, 1000);
        let stats = bbr.stats(ms(1100));
        assert_eq!(stats.max_pass, 20);
        assert_eq!(stats.min_rt, Duration::from_millis(30));
        assert_eq!(stats.max_inflight, 6);
    }

    #[test]
    fn min_rt_is_the_smallest_bucket_average_not_the_luckiest_request() {
        let bbr = limiter();
        // One bucket: RTs 2 ms and 38 ms (average 20 ms); another: all 30 ms.
        let a = bbr.allow(Criticality::Critical, ms(0)).expect("admit");
        let b = bbr.allow(Criticality::Critical, ms(0)).expect("admit");
        bbr.done(a, ms(2));
        bbr.done(b, ms(38));
        let c = bbr.allow(Criticality::Critical, ms(100)).expect("admit");
        bbr.done(c, ms(130));
        assert_eq!(bbr.stats(ms(200)).min_rt, Duration::from_millis(20));
    }

    #[test]
    fn cool_cpu_never_drops_however_many_are_in_flight() {
        let bbr = limiter();
        warm_up(&bbr, 10, 10, 500);
        bbr.set_cpu(CpuUsage::from_permille(799));
        let tokens: Vec<_> =
            (0..1000).map(|_| bbr.allow(Criticality::Sheddable, ms(600))).collect();
        assert!(tokens.iter().all(Result::is_ok));
    }

    #[test]
    fn hot_cpu_drops_above_max_inflight_with_overloaded() {
        let bbr = limiter();
        warm_up(&bbr, 20, 30, 1000); // maxInFlight 6
        bbr.set_cpu(CpuUsage::from_permille(800));
        let now = ms(1050);
        let held: Vec<_> = (0..7)
            .map(|_| bbr.allow(Criticality::Critical, now).expect("at or under the limit"))
            .collect();
        let rejection = bbr.allow(Criticality::Critical, now).expect_err("7 > 6 in flight");
        assert_eq!(rejection.reason, RejectReason::Overloaded);
        assert_eq!(rejection.retry_after, Some(Duration::from_secs(1)));
        // Completing one makes room again.
        let mut held = held.into_iter();
        bbr.done(held.next().expect("held"), ms(1080));
        assert!(bbr.allow(Criticality::Critical, ms(1080)).is_ok());
    }

    #[test]
    fn check_stays_on_for_the_cool_down_after_the_last_hot_drop() {
        let bbr = limiter();
        warm_up(&bbr, 20, 30, 1000); // maxInFlight 6
        let _held: Vec<_> =
            (0..7).map(|_| bbr.allow(Criticality::Critical, ms(1000)).expect("admit")).collect();
        bbr.set_cpu(CpuUsage::from_permille(900));
        assert!(bbr.allow(Criticality::Critical, ms(1000)).is_err());
        assert!(bbr.allow(Criticality::Critical, ms(1400)).is_err()); // last hot drop: 1400
        bbr.set_cpu(CpuUsage::from_permille(100)); // CPU dips
        assert!(bbr.allow(Criticality::Critical, ms(2399)).is_err(), "inside the cool-down");
        assert!(bbr.stats(ms(2399)).shedding);
        assert!(bbr.allow(Criticality::Critical, ms(2400)).is_ok(), "cool-down over");
    }

    #[test]
    fn drops_during_the_cool_down_do_not_extend_it() {
        let bbr = limiter();
        warm_up(&bbr, 20, 30, 1000);
        let _held: Vec<_> =
            (0..7).map(|_| bbr.allow(Criticality::Critical, ms(1000)).expect("admit")).collect();
        bbr.set_cpu(CpuUsage::FULL);
        assert!(bbr.allow(Criticality::Critical, ms(1000)).is_err());
        bbr.set_cpu(CpuUsage::IDLE);
        assert!(bbr.allow(Criticality::Critical, ms(1900)).is_err());
        assert!(bbr.allow(Criticality::Critical, ms(2000)).is_ok());
    }

    #[test]
    fn sheddable_is_dropped_at_half_the_estimate_critical_plus_above_it() {
        let bbr = limiter();
        warm_up(&bbr, 40, 30, 1000); // 400/s × 30 ms = 12 in flight
        bbr.set_cpu(CpuUsage::FULL);
        let now = ms(1000);
        assert_eq!(bbr.class_limit(Criticality::Sheddable, now), 6);
        assert_eq!(bbr.class_limit(Criticality::SheddablePlus, now), 9);
        assert_eq!(bbr.class_limit(Criticality::Critical, now), 12);
        assert_eq!(bbr.class_limit(Criticality::CriticalPlus, now), 15);
        let _held: Vec<_> =
            (0..7).map(|_| bbr.allow(Criticality::Critical, now).expect("admit")).collect();
        assert!(bbr.allow(Criticality::Sheddable, now).is_err());
        assert!(bbr.allow(Criticality::SheddablePlus, now).is_ok());
        assert!(bbr.allow(Criticality::CriticalPlus, now).is_ok());
    }

    #[test]
    fn hot_cpu_with_no_completions_admits_one_at_a_time() {
        let bbr = limiter();
        bbr.set_cpu(CpuUsage::FULL);
        let first = bbr.allow(Criticality::Critical, ms(0));
        let second = bbr.allow(Criticality::Critical, ms(0));
        assert!(first.is_ok());
        assert!(second.is_ok(), "one in flight is never over a limit of at least 1");
        assert!(bbr.allow(Criticality::Critical, ms(0)).is_err());
    }

    #[test]
    fn abandoned_requests_leave_inflight_without_becoming_samples() {
        let bbr = limiter();
        let token = bbr.allow(Criticality::Critical, ms(0)).expect("admit");
        assert_eq!(bbr.inflight(), 1);
        bbr.abandon(token);
        assert_eq!(bbr.inflight(), 0);
        assert_eq!(bbr.stats(ms(500)).max_pass, 1);
        assert_eq!(bbr.stats(ms(500)).min_rt, Duration::from_nanos(1));
    }

    #[test]
    fn samples_older_than_the_window_are_forgotten() {
        let bbr = limiter();
        warm_up(&bbr, 50, 20, 300);
        assert_eq!(bbr.stats(ms(400)).max_pass, 50);
        assert_eq!(bbr.stats(ms(5400)).max_pass, 1);
    }

    #[test]
    fn bad_configs_are_refused_at_construction() {
        let no_buckets = BbrConfig { buckets: 0, ..BbrConfig::default() };
        assert_eq!(BbrLimiter::try_new(no_buckets).err(), Some(BbrConfigError::NoBuckets));
        let tiny = BbrConfig { window: Duration::from_millis(10), ..BbrConfig::default() };
        assert_eq!(BbrLimiter::try_new(tiny).err(), Some(BbrConfigError::BucketTooShort));
    }

    /// Several std threads admit batches of requests of every class against a hot CPU and a
    /// fixed estimate, then complete or abandon them.
    #[test]
    fn concurrent_allow_done_and_abandon_never_leak_nor_admit_past_the_limit() {
        use std::sync::atomic::AtomicUsize;
        let bbr = limiter();
        warm_up(&bbr, 20, 30, 1000); // maxInFlight 6
        bbr.set_cpu(CpuUsage::FULL);
        // Samples land in the current bucket, which the estimate leaves out: the limit is fixed.
        let now = ms(1050);
        let top_limit = bbr.class_limit(Criticality::CriticalPlus, now);
        assert_eq!(top_limit, 7);
        let held = AtomicUsize::new(0);
        let most_held = AtomicUsize::new(0);
        let admitted = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for t in 0..4usize {
                let (bbr, held, most_held, admitted) = (&bbr, &held, &most_held, &admitted);
                s.spawn(move || {
                    let mut tokens = Vec::with_capacity(4);
                    for i in 0..3_000usize {
                        for j in 0..4 {
                            let class = Criticality::ALL[(i + j + t) % 4];
                            if let Ok(token) = bbr.allow(class, now) {
                                let h = held.fetch_add(1, Ordering::SeqCst) + 1;
                                most_held.fetch_max(h, Ordering::SeqCst);
                                admitted.fetch_add(1, Ordering::Relaxed);
                                tokens.push(token);
                            }
                            assert!(bbr.inflight.load(Ordering::SeqCst) >= 0, "inflight < 0");
                        }
                        for (k, token) in tokens.drain(..).enumerate() {
                            held.fetch_sub(1, Ordering::SeqCst);
                            if (i + k) % 3 == 0 {
                                bbr.abandon(token);
                            } else {
                                bbr.done(token, now);
                            }
                            assert!(bbr.inflight.load(Ordering::SeqCst) >= 0, "inflight < 0");
                        }
                    }
                });
            }
        });
        assert_eq!(bbr.inflight.load(Ordering::SeqCst), 0, "an admission leaked");
        assert!(admitted.load(Ordering::Relaxed) > 0);
        let most = most_held.load(Ordering::SeqCst) as u64;
        assert!(most <= top_limit + 1, "{most} held at once, limit {top_limit}");
    }

    #[derive(Clone, Debug)]
    enum Op {
        Allow(u8),
        Done,
        SetCpu(u16),
        Advance(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..4).prop_map(Op::Allow),
            3 => Just(Op::Done),
            1 => (0u16..=1000).prop_map(Op::SetCpu),
            2 => (0u16..400).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// BBR drops exactly when the CPU is hot or within the cool-down (1 s) of the last
        /// drop made with a hot CPU, and inflight is over the class's limit.
        #[test]
        fn drops_only_when_hot_or_cooling_down_and_over_the_class_limit(
            ops in proptest::collection::vec(op(), 1..300)
        ) {
            let bbr = limiter();
            let mut now = ms(0);
            let mut held = Vec::new();
            let mut last_hot_drop: Option<Instant> = None;
            for op in ops {
                match op {
                    Op::Allow(c) => {
                        let class = Criticality::ALL[usize::from(c)];
                        let hot = bbr.cpu_gauge().get().permille() >= 800;
                        let cooling = last_hot_drop
                            .is_some_and(|t| now - t < Duration::from_secs(1));
                        let limit = bbr.class_limit(class, now);
                        let inflight = bbr.inflight();
                        match bbr.allow(class, now) {
                            Ok(token) => {
                                prop_assert!(!((hot || cooling) && inflight > limit),
                                    "admitted at {inflight} > {limit} while checking");
                                held.push(token);
                            }
                            Err(_) => {
                                prop_assert!(hot || cooling, "dropped with a cool CPU");
                                prop_assert!(inflight > limit, "dropped at {inflight} <= {limit}");
                                if hot {
                                    last_hot_drop = Some(now);
                                }
                            }
                        }
                    }
                    Op::Done => {
                        if let Some(token) = held.pop() {
                            bbr.done(token, now);
                        }
                    }
                    Op::SetCpu(p) => bbr.set_cpu(CpuUsage::from_permille(u32::from(p))),
                    Op::Advance(d) => now += Duration::from_millis(u64::from(d)),
                }
            }
        }

        /// Instants anywhere on the clock (also stepping back, also at its very end), response
        /// times up to the whole clock and any CPU value never panic, and every admission comes
        /// back out of inflight.
        #[test]
        fn extreme_instants_never_panic_nor_leak(
            steps in proptest::collection::vec(
                (
                    prop_oneof![any::<u64>(), Just(u64::MAX), (u64::MAX - 1_000_000_000)..=u64::MAX, 0u64..1_000_000_000],
                    0u32..2000,
                    0u8..3,
                ),
                1..120,
            )
        ) {
            let bbr = limiter();
            let mut held = Vec::new();
            for (at, cpu, action) in steps {
                bbr.set_cpu(CpuUsage::from_permille(cpu));
                let now = Instant::from_nanos(at);
                match action {
                    0 => held.extend(bbr.allow(Criticality::ALL[(at % 4) as usize], now).ok()),
                    1 => if let Some(token) = held.pop() { bbr.done(token, now) },
                    _ => if let Some(token) = held.pop() { bbr.abandon(token) },
                }
                let _ = bbr.stats(now);
            }
            for token in held {
                bbr.done(token, Instant::from_nanos(u64::MAX));
            }
            prop_assert_eq!(bbr.inflight.load(Ordering::SeqCst), 0);
        }

        /// At one moment, a lower class is never admitted while a higher class is rejected.
        #[test]
        fn lower_class_never_admitted_while_a_higher_one_is_rejected(
            per_bucket in 1u64..60,
            rt_ms in 1u64..200,
            inflight in 0usize..80,
            cpu in 0u32..=1000,
        ) {
            let bbr = limiter();
            warm_up(&bbr, per_bucket, rt_ms, 1000);
            bbr.set_cpu(CpuUsage::from_permille(cpu));
            let now = ms(1000);
            let _held: Vec<_> = (0..inflight)
                .filter_map(|_| bbr.allow(Criticality::CriticalPlus, now).ok())
                .collect();
            // Probe every class without changing inflight (abandon what is admitted).
            let admitted: Vec<bool> = Criticality::ALL
                .iter()
                .map(|&c| match bbr.allow(c, now) {
                    Ok(token) => {
                        bbr.abandon(token);
                        true
                    }
                    Err(_) => false,
                })
                .collect();
            for low in 0..4 {
                for high in low + 1..4 {
                    prop_assert!(!admitted[low] || admitted[high],
                        "{:?} admitted while {:?} rejected", Criticality::ALL[low], Criticality::ALL[high]);
                }
            }
        }
    }
}
