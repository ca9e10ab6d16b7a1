//! Overhead of the adaptive overload cores on the request path: one BBR `allow` + `done` pair,
//! and one learned-concurrency `try_acquire` + `release` pair, on one thread.
//!
//! Why: these run on every request; the spec asks limiter checks to be as cheap as the best
//! Rust limiters. Run with
//! `cargo bench -p spillway-core --bench bbr_overhead -- --warm-up-time 1 --measurement-time 3`.

use criterion::{criterion_group, criterion_main, Criterion};
use spillway_core::concurrency::{
    Aimd, AimdConfig, ConcurrencyLimiter, Gradient2, Gradient2Config, Outcome,
};
use spillway_core::overload::{BbrConfig, BbrLimiter, ClassShares, CpuUsage};
use spillway_core::{Criticality, Instant};
use std::hint::black_box;

fn bbr(c: &mut Criterion) {
    let mut group = c.benchmark_group("bbr");

    let limiter = BbrLimiter::try_new(BbrConfig::default()).expect("default config is valid");
    let mut now = 0u64;
    group.bench_function("allow_done_cool_cpu", |b| {
        b.iter(|| {
            now += 1_000; // 1 µs per request: buckets roll over as in real traffic
            let t = Instant::from_nanos(now);
            if let Ok(token) = limiter.allow(black_box(Criticality::Critical), t) {
                limiter.done(token, Instant::from_nanos(now + 500));
            }
        })
    });

    // Hot CPU: the inflight check runs on every call (cached maxInFlight).
    let limiter = BbrLimiter::try_new(BbrConfig::default()).expect("default config is valid");
    limiter.set_cpu(CpuUsage::FULL);
    let mut now = 0u64;
    group.bench_function("allow_done_hot_cpu", |b| {
        b.iter(|| {
            now += 1_000;
            let t = Instant::from_nanos(now);
            if let Ok(token) = limiter.allow(black_box(Criticality::Critical), t) {
                limiter.done(token, Instant::from_nanos(now + 500));
            }
        })
    });
    group.finish();
}

fn concurrency(c: &mut Criterion) {
    let mut group = c.benchmark_group("concurrency");

    let aimd = Aimd::try_new(AimdConfig::default()).expect("default config is valid");
    let limiter = ConcurrencyLimiter::new(aimd, ClassShares::concurrency_default());
    let mut now = 0u64;
    group.bench_function("aimd_acquire_release", |b| {
        b.iter(|| {
            now += 1_000;
            let t = Instant::from_nanos(now);
            if let Ok(token) = limiter.try_acquire(black_box(Criticality::Critical), t) {
                limiter.release(token, Outcome::Success, Instant::from_nanos(now + 500));
            }
        })
    });

    let g2 = Gradient2::try_new(Gradient2Config::default()).expect("default config is valid");
    let limiter = ConcurrencyLimiter::new(g2, ClassShares::concurrency_default());
    let mut now = 0u64;
    group.bench_function("gradient2_acquire_release", |b| {
        b.iter(|| {
            now += 1_000;
            let t = Instant::from_nanos(now);
            if let Ok(token) = limiter.try_acquire(black_box(Criticality::Critical), t) {
                limiter.release(token, Outcome::Success, Instant::from_nanos(now + 500));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bbr, concurrency);
criterion_main!(benches);
