//! Cost of one load-balancing decision (pick + on_start + on_end) per algorithm, for 4 and 64
//! eligible endpoints: what the gateway pays per request to choose an upstream.
//!
//! Run: `cargo bench -p spillway-core --bench balance_pick -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use spillway_core::balance::{BalanceKind, Balancer, EndpointSpec, PickContext};
use spillway_core::Instant;
use std::hint::black_box;
use std::time::Duration;

fn bench_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("balance_pick");
    for n in [4usize, 64] {
        let endpoints: Vec<EndpointSpec> = (0..n)
            .map(|i| {
                EndpointSpec::new(&format!("10.0.{}.{}:8080", i / 256, i % 256), 1 + (i % 3) as u32)
            })
            .collect();
        let eligible: Vec<usize> = (0..n).collect();
        for kind in BalanceKind::ALL {
            let mut b = kind.build(&endpoints, 1);
            let mut state = 0x1234_5678_9abc_def0u64;
            let mut now = Instant::from_nanos(1);
            group.bench_with_input(BenchmarkId::new(kind.as_str(), n), &n, |bench, _| {
                bench.iter(|| {
                    // xorshift64: the caller's randomness, as the gateway would supply it.
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    now += Duration::from_micros(10);
                    let ctx = PickContext::new(now, state).with_hash(state.rotate_left(17));
                    let e = b.pick(black_box(&eligible), &ctx).unwrap_or(0);
                    b.on_start(e, now);
                    b.on_end(e, Duration::from_micros(300), true, now);
                    black_box(e)
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_pick);
criterion_main!(benches);
