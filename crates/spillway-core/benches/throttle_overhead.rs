//! Per-request overhead of the client-side breakers on one thread: the SRE throttle's
//! `allow` + `record`, and the classic circuit breaker's `allow` + `record`.
//!
//! Why: both sit on every upstream call; their cost must stay small next to a proxy's
//! per-request budget (goal for the SRE throttle: under 50 ns). Time advances 1 µs per request
//! (1 M requests/s), so bucket changes and cache refreshes are part of the figure.

use criterion::{criterion_group, criterion_main, Criterion};
use spillway_core::breaker::{
    BreakerWindow, CallOutcome, CircuitBreaker, CircuitBreakerConfig, Outcome, SreThrottle,
    SreThrottleConfig,
};
use spillway_core::random::{splitmix64, unit_f64, GOLDEN_GAMMA};
use spillway_core::{Criticality, Instant};
use std::hint::black_box;
use std::time::Duration;

/// A cheap deterministic uniform value in [0, 1) (splitmix64).
fn next_random(state: &mut u64) -> f64 {
    let bits = splitmix64(*state);
    *state = state.wrapping_add(GOLDEN_GAMMA);
    unit_f64(bits)
}

fn sre(c: &mut Criterion) {
    let mut group = c.benchmark_group("sre_throttle");
    // The backend accepts one call in `accept_every`: all, or a quarter (p ≈ 0.5 then).
    for (name, accept_every) in [("healthy", 1u64), ("accepting_a_quarter", 4)] {
        let mut throttle =
            SreThrottle::try_new(SreThrottleConfig::default()).expect("default config is valid");
        let mut nanos = 0u64;
        let mut seed = 1u64;
        let mut n = 0u64;
        group.bench_function(format!("allow_record_{name}"), |b| {
            b.iter(|| {
                nanos += 1_000;
                n += 1;
                let now = Instant::from_nanos(nanos);
                let decision =
                    throttle.allow(black_box(Criticality::Critical), now, next_random(&mut seed));
                if decision.is_admitted() {
                    let accepted = n.is_multiple_of(accept_every);
                    let outcome = if accepted { Outcome::Success } else { Outcome::Failure };
                    throttle.record(black_box(outcome), now);
                }
                decision
            })
        });
    }
    group.finish();
}

fn classic(c: &mut Criterion) {
    let mut group = c.benchmark_group("circuit_breaker");
    let windows = [
        ("time_window", BreakerWindow::Time { span: Duration::from_secs(10), buckets: 10 }),
        ("count_window", BreakerWindow::Count { calls: 100 }),
    ];
    for (name, window) in windows {
        let config = CircuitBreakerConfig { window, ..CircuitBreakerConfig::default() };
        let mut breaker = CircuitBreaker::try_new(config).expect("valid config");
        let mut nanos = 0u64;
        let mut n = 0u64;
        group.bench_function(format!("allow_record_{name}"), |b| {
            b.iter(|| {
                nanos += 1_000;
                n += 1;
                let now = Instant::from_nanos(nanos);
                let admitted = breaker.allow(now);
                let refused = admitted.is_err();
                if let Ok(ticket) = admitted {
                    let latency = Duration::from_micros(n % 500);
                    // One failure in ten: judged every call, never trips.
                    let outcome = if n.is_multiple_of(10) {
                        CallOutcome::failure(latency)
                    } else {
                        CallOutcome::success(latency)
                    };
                    breaker.record(ticket, black_box(outcome), now);
                }
                refused
            })
        });
    }
    group.finish();
}

criterion_group!(benches, sre, classic);
criterion_main!(benches);
