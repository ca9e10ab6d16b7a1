//! Spillway's shared token bucket and GCRA against governor's GCRA, in one criterion run.
//!
//! Why: the spec asks limiter checks to be as cheap as the best Rust limiter. The comparison is
//! kept fair: governor reads its clock (quanta) inside `check()`, so every Spillway check here
//! reads `SystemClock::now()` too. Rates are high enough that checks succeed.
//!
//! `cargo bench -p spillway-core --bench vs_governor -- --warm-up-time 1 --measurement-time 3`
//!
//! On a shared, loaded machine criterion's sequential runs drift with the load. With
//! `VS_GOVERNOR_INTERLEAVED=1` the bench instead runs every contender in short alternating
//! slices (so they see the same load) and prints the minimum and median time per check, and
//! the cost of the clock read alone:
//! `VS_GOVERNOR_INTERLEAVED=1 cargo bench -p spillway-core --bench vs_governor`
//!
//! One extra id, `single_thread/spillway_token_bucket_now_given`, measures the check alone
//! with `now` supplied by the caller (advanced by a plain add, no clock read): how the gateway
//! and the tower layers use the limiter, reading the clock once per request for every policy
//! at once. It is NOT the like-for-like comparison (governor cannot skip its clock read); the
//! `<case>/spillway_*` ids above are.

use criterion::{criterion_group, BenchmarkGroup, Criterion};
use governor::{Quota, RateLimiter};
use spillway_core::rate::{
    BatchedTokenBucket, Gcra, KeyedLimiter, Rate, TokenBucket, TokenBucketConfig,
};
use spillway_core::{Clock, Criticality, SystemClock};
use std::hint::black_box;
use std::num::{NonZeroU32, NonZeroUsize};
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

/// The same bucket as the others, batched for two workers (batches of 32 tokens).
fn batched() -> BatchedTokenBucket {
    let config = TokenBucketConfig::new(rate(), PER_SECOND);
    BatchedTokenBucket::new(config, NonZeroUsize::new(2).expect("non-zero"))
}

/// Runs `check` `iters` times on each of two threads started together; returns the wall time,
/// so the figure is the time per check seen by a thread while another contends.
fn two_threads<F: Fn() + Sync>(iters: u64, check: F) -> Duration {
    two_workers(iters, |_| check())
}

/// [`two_threads`] for limiters that want to know which worker checks: thread 0 passes 0,
/// thread 1 passes 1 (as a gateway worker passes its own index).
fn two_workers<F: Fn(usize) + Sync>(iters: u64, check: F) -> Duration {
    let barrier = Barrier::new(2);
    std::thread::scope(|s| {
        let worker = |index: usize| {
            let (barrier, check) = (&barrier, &check);
            move || {
                barrier.wait();
                let start = StdInstant::now();
                for _ in 0..iters {
                    check(index);
                }
                start.elapsed()
            }
        };
        let a = s.spawn(worker(0));
        let b = s.spawn(worker(1));
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
    let bb = batched();
    g.bench_function("spillway_batched_token_bucket", |b| {
        b.iter(|| black_box(bb.check(0, clock.now(), 1, Criticality::Critical).is_admitted()))
    });
    let given = TokenBucket::new(rate(), PER_SECOND);
    let mut now = clock.now();
    g.bench_function("spillway_token_bucket_now_given", |b| {
        b.iter(|| {
            now += Duration::from_nanos(1);
            black_box(given.check(black_box(now)).is_admitted())
        })
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
    let bb = batched();
    g.bench_function("spillway_batched_token_bucket", |b| {
        b.iter_custom(|iters| {
            two_workers(iters, |w| {
                black_box(bb.check(w, clock.now(), 1, Criticality::Critical).is_admitted());
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

/// One slice: `n` checks on one thread (or on each of two), time per check in ns.
fn slice(threads: usize, n: u64, check: &(dyn Fn(u64) -> bool + Sync)) -> f64 {
    let elapsed = if threads == 1 {
        let start = StdInstant::now();
        for i in 0..n {
            black_box(check(i));
        }
        start.elapsed()
    } else {
        // Each thread passes its worker index (keyed cases never run on two threads).
        two_workers(n, |w| {
            black_box(check(w as u64));
        })
    };
    elapsed.as_nanos() as f64 / n as f64
}

/// Runs the contenders of each case in alternating slices and prints min and median.
fn interleaved() {
    let clock = SystemClock::new();
    let gov = RateLimiter::direct(quota());
    let tb = TokenBucket::new(rate(), PER_SECOND);
    let gcra = Gcra::new(rate(), PER_SECOND);
    let bb = batched();
    let gov_keyed = RateLimiter::keyed(quota());
    let tb_keyed = KeyedLimiter::token_bucket(rate(), PER_SECOND);
    let gcra_keyed = KeyedLimiter::gcra(rate(), PER_SECOND);
    for k in 0..KEYS {
        let _ = gov_keyed.check_key(&k);
        tb_keyed.check(&k, clock.now());
        gcra_keyed.check(&k, clock.now());
    }
    type Check<'a> = Box<dyn Fn(u64) -> bool + Sync + 'a>;
    type Case<'a> = (&'static str, usize, Vec<(&'static str, Check<'a>)>);
    let cases: Vec<Case<'_>> = vec![
        (
            "single_thread",
            1,
            vec![
                ("clock_only", Box::new(|_| clock.now().as_nanos() & 1 == 0)),
                ("governor", Box::new(|_| gov.check().is_ok())),
                ("spillway_token_bucket", Box::new(|_| tb.check(clock.now()).is_admitted())),
                ("spillway_gcra", Box::new(|_| gcra.check(clock.now()).is_admitted())),
                (
                    "spillway_batched_token_bucket",
                    Box::new(|_| bb.check(0, clock.now(), 1, Criticality::Critical).is_admitted()),
                ),
            ],
        ),
        (
            "two_threads",
            2,
            vec![
                ("governor", Box::new(|_| gov.check().is_ok())),
                ("spillway_token_bucket", Box::new(|_| tb.check(clock.now()).is_admitted())),
                ("spillway_gcra", Box::new(|_| gcra.check(clock.now()).is_admitted())),
                (
                    "spillway_batched_token_bucket",
                    Box::new(|w| {
                        bb.check(w as usize, clock.now(), 1, Criticality::Critical).is_admitted()
                    }),
                ),
            ],
        ),
        (
            "keyed_100k",
            1,
            vec![
                ("governor", Box::new(|i| gov_keyed.check_key(&(i % KEYS)).is_ok())),
                (
                    "spillway_token_bucket",
                    Box::new(|i| tb_keyed.check(&(i % KEYS), clock.now()).is_admitted()),
                ),
                (
                    "spillway_gcra",
                    Box::new(|i| gcra_keyed.check(&(i % KEYS), clock.now()).is_admitted()),
                ),
            ],
        ),
    ];
    println!("{:<36} {:>8} {:>8} {:>14}", "case/contender", "min ns", "median", "median ratio");
    for (case, threads, contenders) in &cases {
        // Two-thread slices are longer, so both threads really run at once.
        let (rounds, n) = if *threads == 1 { (60, 100_000) } else { (20, 1_000_000) };
        let mut samples = vec![Vec::new(); contenders.len()];
        for _ in 0..rounds {
            for (i, (_, check)) in contenders.iter().enumerate() {
                samples[i].push(slice(*threads, n, check.as_ref()));
            }
        }
        let stats: Vec<(f64, f64)> = samples
            .iter_mut()
            .map(|v| {
                v.sort_by(f64::total_cmp);
                (v[0], v[v.len() / 2])
            })
            .collect();
        let governor = contenders.iter().position(|(n, _)| *n == "governor").unwrap_or(0);
        for (i, (name, _)) in contenders.iter().enumerate() {
            let (min, median) = stats[i];
            let ratio = median / stats[governor].1;
            println!("{:<36} {min:>8.1} {median:>8.1} {ratio:>14.2}", format!("{case}/{name}"));
        }
    }
}

fn main() {
    if std::env::var_os("VS_GOVERNOR_INTERLEAVED").is_some() {
        interleaved();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
