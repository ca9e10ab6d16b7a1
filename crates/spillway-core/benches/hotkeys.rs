//! Cost of the hot-key sketch on the request path: one `observe` and one `is_hot` per request,
//! over a Zipf(1.1) stream of keys drawn from 1 M distinct ones, with the gateway's default
//! capacity (1024) — what a route pays to know its hot keys.
//!
//! Run: `cargo bench -p spillway-core --bench hotkeys -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use spillway_core::hotkeys::{TopK, TopKConfig};
use spillway_core::random::{splitmix64, unit_f64, GOLDEN_GAMMA};
use spillway_core::Instant;
use std::hint::black_box;
use std::time::Duration;

/// Distinct keys.
const KEYS: usize = 1_000_000;
/// Zipf exponent: key `i` (from 1) is drawn with probability proportional to `i^-1.1`.
const EXPONENT: f64 = 1.1;
/// Draws in the precomputed stream (a power of two, for a cheap wrap).
const STREAM: usize = 1 << 20;
/// The top the gateway asks about (a route's `top: 20`).
const K: usize = 20;

/// The keys of a Zipf(1.1) stream, as `/items/{id}`, concatenated, with their end offsets.
struct Stream {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Stream {
    fn zipf() -> Stream {
        let mut cdf = Vec::with_capacity(KEYS);
        let mut sum = 0.0;
        for i in 1..=KEYS {
            sum += (i as f64).powf(-EXPONENT);
            cdf.push(sum);
        }
        let mut bytes = Vec::new();
        let mut ends = Vec::with_capacity(STREAM);
        let mut state = 0u64;
        for _ in 0..STREAM {
            state = state.wrapping_add(GOLDEN_GAMMA);
            let target = unit_f64(splitmix64(state)) * sum;
            let id = cdf.partition_point(|&c| c < target);
            bytes.extend_from_slice(format!("/items/{id}").as_bytes());
            ends.push(bytes.len());
        }
        Stream { bytes, ends }
    }

    fn key(&self, i: usize) -> &[u8] {
        let i = i & (STREAM - 1);
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }
}

/// A sketch with the default configuration (capacity 1024, hot_k 32, half-life 10 s) that has
/// seen the whole stream once, one observation per microsecond (1 M requests per second).
fn warm(stream: &Stream) -> (TopK, Instant) {
    let mut sketch = TopK::try_new(TopKConfig { hot_k: 32, ..TopKConfig::default() })
        .expect("the default configuration is valid");
    let mut now = Instant::from_nanos(1);
    for i in 0..STREAM {
        now += Duration::from_micros(1);
        sketch.observe(stream.key(i), now);
    }
    (sketch, now)
}

fn bench_hotkeys(c: &mut Criterion) {
    let stream = Stream::zipf();
    let mut group = c.benchmark_group("hotkeys");
    group.throughput(Throughput::Elements(1));

    let (mut sketch, mut now) = warm(&stream);
    let mut i = 0usize;
    group.bench_function("observe/zipf1.1_1M_keys_cap1024", |b| {
        b.iter(|| {
            now += Duration::from_micros(1);
            i += 1;
            sketch.observe(black_box(stream.key(i)), now);
        })
    });

    // Requests sharing one `now` (a batch read under one clock reading): no `exp` per call.
    group.bench_function("observe/same_instant", |b| {
        b.iter(|| {
            i += 1;
            sketch.observe(black_box(stream.key(i)), now);
        })
    });

    let (sketch, now) = warm(&stream);
    let mut hot = 0u64;
    group.bench_function("is_hot/k20", |b| {
        b.iter(|| {
            i += 1;
            hot += u64::from(sketch.is_hot(black_box(stream.key(i)), K, now));
        })
    });

    // Past hot_k (32): answered by counting the capacity's counters.
    group.bench_function("is_hot/k100_beyond_hot_k", |b| {
        b.iter(|| {
            i += 1;
            hot += u64::from(sketch.is_hot(black_box(stream.key(i)), 100, now));
        })
    });
    black_box(hot);

    group.bench_function("top/k20", |b| b.iter(|| black_box(sketch.top(K, now))));

    // The gateway's per-request pair for a hot-parameter limit.
    let (mut sketch, mut now) = warm(&stream);
    group.bench_function("observe_then_is_hot/k20", |b| {
        b.iter(|| {
            now += Duration::from_micros(1);
            i += 1;
            let key = black_box(stream.key(i));
            sketch.observe(key, now);
            black_box(sketch.is_hot(key, K, now))
        })
    });
    group.finish();
}

criterion_group!(benches, bench_hotkeys);
criterion_main!(benches);
