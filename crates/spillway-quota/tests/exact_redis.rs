//! Exact mode on a real Redis: the limit holds exactly across instances, refusals are then
//! answered locally, and a hung Redis costs a request no more than the store timeout.

#![allow(clippy::unwrap_used)] // tests: a failed set-up step should panic

mod common;

use common::RedisServer;
use spillway_core::{Clock, Criticality, SystemClock};
use spillway_quota::{
    DecisionSource, ExactLimitConfig, ExactLimiter, QuotaStore, RedisStore, RedisStoreConfig,
    StoreFailurePolicy,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn instance(server: &RedisServer, config: ExactLimitConfig) -> Arc<ExactLimiter> {
    let store: Arc<dyn QuotaStore> =
        Arc::new(RedisStore::connect(&RedisStoreConfig::single(server.url())).await.unwrap());
    Arc::new(ExactLimiter::try_new(config, store).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_limit_of_100_per_hour_holds_across_three_instances() {
    let server = RedisServer::start();
    let config = ExactLimitConfig::new("per-user", 100, Duration::from_secs(3600));
    let clock = Arc::new(SystemClock::new());
    let mut limiters = Vec::new();
    for _ in 0..3 {
        limiters.push(instance(&server, config.clone()).await);
    }
    let admitted = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = limiters
        .iter()
        .map(|limiter| {
            let (limiter, clock, admitted) = (limiter.clone(), clock.clone(), admitted.clone());
            tokio::spawn(async move {
                for _ in 0..200 {
                    let d = limiter.check("alice", 1, Criticality::Critical, clock.now()).await;
                    assert_eq!(d.limit, 100);
                    if d.admitted {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    } else {
                        assert!(d.retry_after.is_some_and(|r| r > Duration::from_secs(30)));
                    }
                    assert!(
                        !matches!(d.source, DecisionSource::Fallback(_)),
                        "the store answered every call"
                    );
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(admitted.load(Ordering::Relaxed), 100, "exactly the limit, fleet-wide");

    // Every instance now refuses alice from its cache: no more Redis calls for her.
    let before = server.command_calls().get("evalsha").copied().unwrap_or(0);
    for limiter in &limiters {
        for _ in 0..100 {
            let d = limiter.check("alice", 1, Criticality::Critical, clock.now()).await;
            assert!(!d.admitted);
            assert_eq!(d.source, DecisionSource::OverLimitCache);
        }
    }
    let after = server.command_calls().get("evalsha").copied().unwrap_or(0);
    assert_eq!(after, before, "refusals from the over-limit cache cost no Redis call");
    let hits: u64 = limiters.iter().map(|l| l.cache_hits()).sum();
    eprintln!(
        "exact: admitted 100 of 600 across 3 instances; {hits} refusals from the cache, \
         the last 300 with 0 Redis calls"
    );

    // Another key is independent, and a flushed script cache is reloaded (NOSCRIPT).
    let mut c = server.connection().unwrap();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut c).unwrap();
    assert!(limiters[0].check("bob", 1, Criticality::Critical, clock.now()).await.admitted);
    let bob: String = redis::cmd("GET").arg("{spillway:per-user:bob}:gcra").query(&mut c).unwrap();
    assert!(bob.parse::<u64>().is_ok(), "the TAT is integer microseconds: {bob}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_costs_a_request_at_most_the_store_timeout() {
    let server = RedisServer::start();
    let mut config = ExactLimitConfig::new("hung", 1000, Duration::from_secs(60));
    config.on_store_failure = StoreFailurePolicy::Open;
    let limiter = instance(&server, config).await;
    let clock = SystemClock::new();
    assert_eq!(
        limiter.check("k", 1, Criticality::Critical, clock.now()).await.source,
        DecisionSource::Store
    );

    server.freeze(true);
    let started = Instant::now();
    let d = limiter.check("k", 1, Criticality::Critical, clock.now()).await;
    let waited = started.elapsed();
    assert!(d.admitted, "fail open");
    assert_eq!(d.source, DecisionSource::Fallback(StoreFailurePolicy::Open));
    assert!(waited < Duration::from_millis(20 + 80), "waited {waited:?}");
    assert!(!limiter.store_up());
    assert_eq!(limiter.fallback_total(), 1);
    // Within the probe backoff, requests do not even try the store.
    let started = Instant::now();
    for _ in 0..100 {
        limiter.check("k", 1, Criticality::Critical, clock.now()).await;
    }
    assert!(started.elapsed() < Duration::from_millis(20), "{:?}", started.elapsed());
    server.freeze(false);
    eprintln!("exact: a request waited {waited:?} on a frozen Redis (timeout 20 ms)");

    // Recovery is automatic: a probe after the backoff finds the store again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if limiter.check("k", 1, Criticality::Critical, clock.now()).await.source
            == DecisionSource::Store
        {
            break;
        }
        assert!(Instant::now() < deadline, "the store was not probed again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(limiter.store_up());
}
