//! Counter mode on a real Redis: a fixed-window limit holds exactly across instances, each
//! window has a key of its own (expiring after it), a refusal costs the window nothing,
//! refusals are then answered locally, and a new window starts from zero at its edge.

#![allow(clippy::unwrap_used)] // tests: a failed set-up step should panic

mod common;

use common::RedisServer;
use spillway_core::{Clock, Criticality, SystemClock};
use spillway_quota::{
    CounterLimitConfig, CounterLimiter, DecisionSource, LimitMode, QuotaStore, RedisStore,
    RedisStoreConfig,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

async fn instance(server: &RedisServer, config: CounterLimitConfig) -> Arc<CounterLimiter> {
    let store: Arc<dyn QuotaStore> =
        Arc::new(RedisStore::connect(&RedisStoreConfig::single(server.url())).await.unwrap());
    let config = CounterLimitConfig { store_timeout: Duration::from_secs(2), ..config };
    Arc::new(CounterLimiter::try_new(config, store).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_limit_of_100_per_day_holds_across_three_instances() {
    let server = RedisServer::start();
    let config = CounterLimitConfig::new("daily", 100, Duration::from_secs(86_400));
    let clock = Arc::new(SystemClock::new());
    let mut limiters = Vec::new();
    for _ in 0..3 {
        limiters.push(instance(&server, config.clone()).await);
    }
    // A probe on another key: if a window edge is seconds away, wait it out so the whole
    // test runs inside one window.
    let probe = limiters[0].check("probe", 1, Criticality::Critical, clock.now()).await;
    let reset = probe.reset_after.unwrap();
    if reset < Duration::from_secs(10) {
        tokio::time::sleep(reset + Duration::from_millis(50)).await;
    }
    let calls_before = server.command_calls();
    let admitted = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = limiters
        .iter()
        .map(|limiter| {
            let (limiter, clock, admitted) = (limiter.clone(), clock.clone(), admitted.clone());
            tokio::spawn(async move {
                for _ in 0..50 {
                    let d = limiter.check("alice", 1, Criticality::Critical, clock.now()).await;
                    assert_eq!((d.limit, d.mode), (100, LimitMode::Counter));
                    assert!(!matches!(d.source, DecisionSource::Fallback(_)), "{d:?}");
                    if d.admitted {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(admitted.load(Ordering::Relaxed), 100, "150 asked, exactly the limit admitted");
    let calls = server.command_calls();
    let delta = |name: &str| calls.get(name).unwrap_or(&0) - calls_before.get(name).unwrap_or(&0);
    // Every check reached the store until the key was known to be over; each ran one INCRBY
    // (and a refused one a DECRBY), and the key's expiry was set once.
    assert_eq!(delta("incrby"), delta("evalsha"), "one INCRBY per store call");
    assert_eq!(delta("pexpireat"), 1, "the expiry is set when the window's key is created");
    assert!(delta("evalsha") >= 100, "{calls:?}");

    let mut c = server.connection().unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg("{spillway:daily:alice}:counter:*").query(&mut c).unwrap();
    assert_eq!(keys.len(), 1, "one key for the window: {keys:?}");
    let key = &keys[0];
    let count: u64 = redis::cmd("GET").arg(key).query(&mut c).unwrap();
    assert_eq!(count, 100, "refusals took their permits back");
    let ttl_ms: i64 = redis::cmd("PTTL").arg(key).query(&mut c).unwrap();
    assert!(ttl_ms > 0 && ttl_ms <= 86_401_000, "expires after the window's end: {ttl_ms}");

    // Every instance now refuses alice locally, at no store cost.
    let before = server.command_calls().get("evalsha").copied().unwrap_or(0);
    for limiter in &limiters {
        let d = limiter.check("alice", 1, Criticality::Critical, clock.now()).await;
        let d2 = limiter.check("alice", 1, Criticality::Critical, clock.now()).await;
        assert!(!d.admitted && !d2.admitted);
        assert_eq!(d2.source, DecisionSource::OverLimitCache);
        assert!(d2.retry_after.unwrap() <= reset.max(Duration::from_secs(86_400)));
    }
    let after = server.command_calls().get("evalsha").copied().unwrap_or(0);
    assert!(after - before <= 3, "at most one store call per instance, then the cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_window_resets_on_the_servers_clock() {
    let server = RedisServer::start();
    let limiter =
        instance(&server, CounterLimitConfig::new("short", 2, Duration::from_millis(200))).await;
    let clock = SystemClock::new();
    let first = limiter.check("k", 1, Criticality::Critical, clock.now()).await;
    assert!(first.admitted);
    let reset = first.reset_after.unwrap();
    assert!(reset <= Duration::from_millis(200), "{reset:?}");
    // Wait into the next window, then count again from zero.
    tokio::time::sleep(reset + Duration::from_millis(20)).await;
    let mut admitted = 0;
    for _ in 0..4 {
        admitted +=
            u32::from(limiter.check("k", 1, Criticality::Critical, clock.now()).await.admitted);
    }
    assert!(
        (2..=3).contains(&admitted),
        "2 per window (3 if the burst crossed an edge): {admitted}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_window_admits_its_limit_however_close_to_the_edge_requests_come() {
    // Back-to-back requests for 600 ms over 20 ms windows: many land in a window's first
    // millisecond. Each window must admit its 3 (a stale count read at the edge would refuse a
    // whole window, and the over-limit cache would then keep refusing it).
    let server = RedisServer::start();
    let limiter =
        instance(&server, CounterLimitConfig::new("edge", 3, Duration::from_millis(20))).await;
    let clock = SystemClock::new();
    let started = std::time::Instant::now();
    let mut admitted = 0;
    while started.elapsed() < Duration::from_millis(600) {
        admitted +=
            u32::from(limiter.check("k", 1, Criticality::Critical, clock.now()).await.admitted);
    }
    // Each window's key holds what that window admitted (keys live 1 s past their window).
    let mut c = server.connection().unwrap();
    let keys: Vec<String> =
        redis::cmd("KEYS").arg("{spillway:edge:k}:counter:*").query(&mut c).unwrap();
    let mut windows: Vec<(u64, u32)> = keys
        .iter()
        .map(|k| {
            let index = k.rsplit(':').next().unwrap().parse().unwrap();
            (index, redis::cmd("GET").arg(k).query(&mut c).unwrap())
        })
        .collect();
    windows.sort_unstable();
    assert_eq!(windows.iter().map(|w| w.1).sum::<u32>(), admitted, "{windows:?}");
    let (first, last) = (windows[0].0, windows[windows.len() - 1].0);
    assert_eq!(last - first + 1, windows.len() as u64, "no window admitted nothing: {windows:?}");
    let inner = &windows[1..windows.len() - 1]; // the first and last are cut by the loop
    assert!(inner.len() >= 20, "{windows:?}");
    assert!(inner.iter().all(|w| w.1 == 3), "every window admits exactly 3: {windows:?}");
}
