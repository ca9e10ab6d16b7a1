//! Measures the memory a keyed limiter holds per key, for `u64` keys and 16- and 40-byte
//! byte-string keys, with a token bucket (GCRA) per key: 900 000 keys, all recently used (none idle, so none
//! can be dropped for free).
//!
//! Why an example and not a test: it reports figures for BENCHMARKS.md rather than asserting,
//! and it reads the process's resident memory, which only means something in a release build
//! run alone.
//!
//! `cargo run --release -p spillway-core --example keyed_memory`

use spillway_core::rate::{ByteKey, KeyedLimiter, Rate};
use spillway_core::{Criticality, Instant};

/// Just under the default cap (917 504), so nothing is evicted.
const KEYS: usize = 900_000;

/// Resident set size in bytes, from `/proc/self/statm` (0 where it is not available).
fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<usize>().ok()))
        .map_or(0, |pages| pages * 4096)
}

fn report(name: &str, keys: usize, table_bytes: usize, rss_before: usize) {
    let rss = rss_bytes().saturating_sub(rss_before);
    println!(
        "{name:<28} keys {keys:>9}  table {:>6.1} B/key  resident {:>6.1} B/key",
        table_bytes as f64 / keys as f64,
        rss as f64 / keys as f64
    );
}

fn main() {
    let now = Instant::from_nanos(1_000_000_000);
    // One permit per hour: a key that took one stays busy (not idle) for an hour.
    let rate = Rate::per_hour(1);

    let before = rss_bytes();
    let limiter: KeyedLimiter<u64, _> = KeyedLimiter::token_bucket(rate, 10);
    for k in 0..KEYS as u64 {
        limiter.check(&k, now);
    }
    report("u64 keys, token bucket", limiter.len(), limiter.table_bytes(), before);
    drop(limiter);

    for (name, width) in [("16-byte keys (inline), GCRA", 16), ("40-byte keys (boxed), GCRA", 40)] {
        let before = rss_bytes();
        let limiter: KeyedLimiter<ByteKey, _> = KeyedLimiter::gcra(rate, 10);
        for k in 0..KEYS {
            // Like an IP address as text, or an API key.
            let key = format!("client-{k:0w$}", w = width - 7);
            limiter.check_bytes(key.as_bytes(), now, Criticality::Critical);
        }
        report(name, limiter.len(), limiter.table_bytes(), before);
    }
}
