//! The Lua scripts and their Rust twins compute the same thing, checked on random inputs
//! through a real Redis (a bounded, seeded property-style loop).

#![allow(clippy::unwrap_used)] // tests: a failed set-up step should panic

mod common;

use common::RedisServer;
use spillway_quota::{
    counter_step, gcra_step, lease_grants, CounterRequest, GcraRequest, LeaseRequest, QuotaStore,
    RedisStore, RedisStoreConfig,
};
use std::time::Duration;

/// xorshift64*: deterministic, so a failure names its case.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * (1.0 + a.abs().max(b.abs()))
}

#[tokio::test]
async fn lua_fair_share_equals_the_rust_one_on_random_inputs() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&RedisStoreConfig::single(server.url())).await.unwrap();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for case in 0..200 {
        let n = 1 + rng.below(9) as usize;
        let capacity = match rng.below(4) {
            0 => (1 + rng.below(100)) as f64,
            _ => rng.unit() * 10_000.0 + 0.5,
        };
        let demands: Vec<f64> = (0..n)
            .map(|_| match rng.below(5) {
                0 => 0.0,
                1 => 500.0, // ties
                _ => rng.unit() * 4_000.0,
            })
            .collect();
        let key = format!("{{spillway:twins:case{case}}}:lease");
        let request = |i: usize| LeaseRequest {
            key: &key,
            instance: ["i0", "i1", "i2", "i3", "i4", "i5", "i6", "i7", "i8", "i9"][i],
            demand: demands[i],
            capacity,
            ttl: Duration::from_secs(60),
        };
        // Register everyone, then ask again: each answer sees the whole fleet.
        for i in 0..n {
            store.lease(request(i)).await.unwrap();
        }
        let want = lease_grants(capacity, &demands);
        for (i, want) in want.iter().enumerate() {
            let reply = store.lease(request(i)).await.unwrap();
            assert_eq!(reply.instances as usize, n, "case {case}");
            assert!(
                close(reply.grant, *want),
                "case {case}: capacity {capacity}, demands {demands:?}: instance {i} got {} from Lua, {want} from Rust",
                reply.grant
            );
            assert!(close(reply.total_demand, demands.iter().sum()), "case {case}");
        }
    }
}

#[tokio::test]
async fn lua_gcra_equals_the_rust_step_on_random_sequences() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&RedisStoreConfig::single(server.url())).await.unwrap();
    let mut rng = Rng(0x5eed_4321_dcba_0002);
    for case in 0..40 {
        // A slow rate (≥ 1 s per permit): the milliseconds the loop takes change no decision,
        // so the Rust step can run at a fixed `now` and must agree on every outcome.
        let interval_us = 1_000_000 + rng.below(60_000_000);
        let burst = 1 + rng.below(20);
        let key = format!("{{spillway:twins:gcra{case}}}:gcra");
        let mut tat = None;
        let now = 1_000_000_000;
        for step in 0..30 {
            let cost = 1 + rng.below(burst + 2);
            // A class reserve, sometimes out of range (both sides cap it at burst − 1).
            let reserve = match rng.below(3) {
                0 => 0,
                1 => rng.below(burst),
                _ => rng.below(burst + 3),
            };
            let request = GcraRequest { key: &key, interval_us, burst, cost, reserve };
            let lua = store.gcra(request).await.unwrap();
            let (rust, next) = gcra_step(tat, now, interval_us, burst, cost, reserve);
            if next.is_some() {
                tat = next;
            }
            let what = format!(
                "case {case} step {step}: interval {interval_us} burst {burst} cost {cost} \
                 reserve {reserve}"
            );
            assert_eq!(lua.admitted, rust.admitted, "{what}");
            assert_eq!(lua.remaining, rust.remaining, "{what}");
            assert_eq!(lua.retry_after.is_none(), rust.retry_after_us.is_none(), "{what}");
            let near =
                |a: Duration, b_us: u64| a.as_micros().abs_diff(u128::from(b_us)) < 1_000_000;
            assert!(near(lua.reset_after, rust.reset_after_us), "{what}");
            assert!(near(lua.blocked_for, rust.blocked_us), "{what}");
            if let (Some(a), Some(b)) = (lua.retry_after, rust.retry_after_us) {
                assert!(near(a, b), "{what}");
            }
        }
    }
}

#[tokio::test]
async fn lua_counter_equals_the_rust_step_on_random_sequences() {
    let server = RedisServer::start();
    let store = RedisStore::connect(&RedisStoreConfig::single(server.url())).await.unwrap();
    let mut rng = Rng(0x5eed_c0de_0003);
    let probe =
        CounterRequest { key: "probe", limit: 1, window_ms: 86_400_000, cost: 1, reserve: 0 };
    let reset = store.counter(probe).await.unwrap().reset_after;
    if reset < Duration::from_secs(10) {
        tokio::time::sleep(reset + Duration::from_millis(50)).await;
    }
    for case in 0..40 {
        // A day-long window, so the Rust step can run at a fixed `now`: the whole test stays
        // inside one window (if an edge is seconds away, it is waited out first).
        let window_ms = 86_400_000;
        let limit = 1 + rng.below(20);
        let key = format!("{{spillway:twins:counter{case}}}:counter");
        let mut state = None;
        for step in 0..30 {
            let cost = 1 + rng.below(limit / 2 + 2);
            let reserve = rng.below(limit);
            let request = CounterRequest { key: &key, limit, window_ms, cost, reserve };
            let lua = store.counter(request).await.unwrap();
            let now_ms = window_ms * 100 + 1;
            let (rust, next) = counter_step(state, now_ms, window_ms, limit, cost, reserve);
            if next.is_some() {
                state = next;
            }
            let what =
                format!("case {case} step {step}: limit {limit} cost {cost} reserve {reserve}");
            assert_eq!(lua.admitted, rust.admitted, "{what}");
            assert_eq!(lua.count, rust.count, "{what}");
            assert_eq!(lua.retry_after.is_none(), rust.retry_after_ms.is_none(), "{what}");
            assert!(lua.reset_after <= Duration::from_millis(window_ms), "{what}");
        }
    }
}
