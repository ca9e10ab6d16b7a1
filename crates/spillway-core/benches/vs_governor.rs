//! Spillway's shared token bucket and GCRA against governor's GCRA, in one criterion run.
//!
//! Why: the spec asks limiter checks to be as cheap as the best Rust limiter. The comparison is
//! kept fair: governor reads its clock (quanta) inside `check()`, so every Spillway check here
//! reads `SystemClock::now()` too. Rates are high enough that checks succeed.
//!
//! `cargo bench -p spillway-core --bench vs_governor -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use governor::{Quota, RateLimiter};
use spillway_core::rate::{Gcra, KeyedLimiter, Rate, TokenBucket};
use spillway_core::{Clock, SystemClock};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Barrier;
use std::time::{Duration, Instant as StdInstant};

/// One billion per second with a burst of one second: every check is admitted.
const PER_SECOND: u32 = 1_000_000_000;
const KEYS: u64 = 100_000;

fn quota() -> Quota {
    Quota::per_second(NonZeroU32::new(PER_SECOND).expect("non-zero"))
}

fn rate() -> Rate {
    Rate::per_second(u64::from(PER_SECOND))
}

/// Runs `check` `iters` times on each of two threads started together; returns the wall time,
/// so the figure is the time per check seen by a thread while another contends.
fn two_threads<F: Fn() + Sync>(iters: u64, check: F) -> Duration {
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let worker = || {
            barrier.wait();
            let start = StdInstant::now();
            for _ in 0..iters {
                check();
            }
            start.elapsed()
        };
        let a = s.spawn(worker);
        let b = s.spawn(worker);
        let (a, b) = (a.join(), b.join());
        match (a, b) {
            (Ok(a), Ok(b)) => a.max(b),
            _ => panic!("bench thread panicked"),
        }
    })
}

fn single_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("single_thread");
    let gov = RateLimiter::direct(quota());
    g.bench_function("governor", |b| b.iter(|| black_box(gov.check().is_ok())));
    let clock = SystemClock::new();
    let tb = TokenBucket::new(rate(), PER_SECOND);
    g.bench_function("spillway_token_bucket", |b| {
        b.iter(|| black_box(tb.check(clock.now()).is_admitted()))
    });
    let gcra = Gcra::new(rate(), PER_SECOND);
    g.bench_function("spillway_gcra", |b| {
        b.iter(|| black_box(gcra.check(clock.now()).is_admitted()))
    });
    g.finish();
}

fn contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("two_threads");
    let gov = RateLimiter::direct(quota());
    g.bench_function("governor", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                black_box(gov.check().is_ok());
            })
        })
    });
    let clock = SystemClock::new();
    let tb = TokenBucket::new(rate(), PER_SECOND);
    g.bench_function("spillway_token_bucket", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                black_box(tb.check(clock.now()).is_admitted());
            })
        })
    });
    let gcra = Gcra::new(rate(), PER_SECOND);
    g.bench_function("spillway_gcra", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                black_box(gcra.check(clock.now()).is_admitted());
            })
        })
    });
    g.finish();
}

/// Cycles through `KEYS` distinct keys, so the table is warm and every key exists.
fn keyed_case<F: FnMut(u64) -> bool>(
    g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mut check: F,
) {
    for k in 0..KEYS {
        check(k);
    }
    let mut k = 0u64;
    g.bench_function(name, |b| {
        b.iter(|| {
            k = if k + 1 == KEYS { 0 } else { k + 1 };
            black_box(check(black_box(k)))
        })
    });
}

fn keyed(c: &mut Criterion) {
    let mut g = c.benchmark_group("keyed_100k");
    let gov = RateLimiter::keyed(quota());
    keyed_case(&mut g, "governor", |k| gov.check_key(&k).is_ok());
    drop(gov);
    let clock = SystemClock::new();
    let tb = KeyedLimiter::token_bucket(rate(), PER_SECOND);
    keyed_case(&mut g, "spillway_token_bucket", |k| tb.check(&k, clock.now()).is_admitted());
    drop(tb);
    let gcra = KeyedLimiter::gcra(rate(), PER_SECOND);
    keyed_case(&mut g, "spillway_gcra", |k| gcra.check(&k, clock.now()).is_admitted());
    g.finish();
}

criterion_group!(benches, single_thread, contended, keyed);
criterion_main!(benches);
