//! Every mode on a real 3-master Redis Cluster (started by the harness, killed after): keys
//! spread over the nodes' slots, and the limits hold exactly across two limiter instances,
//! each with its own cluster connection — exact mode's GCRA, counter mode's window, and lease
//! mode's fair shares.

#![allow(clippy::unwrap_used)] // tests: a failed set-up step should panic

mod common;

use common::RedisCluster;
use spillway_core::{Clock, Criticality, ManualClock, SystemClock};
use spillway_quota::{
    key, CounterLimitConfig, CounterLimiter, DecisionSource, ExactLimitConfig, ExactLimiter,
    LeaseLimitConfig, LeaseLimiter, QuotaStore, RedisStore, RedisStoreConfig, StoreKind,
};
use std::sync::Arc;
use std::time::Duration;

const KEYS: usize = 12;

async fn store(cluster: &RedisCluster) -> Arc<dyn QuotaStore> {
    let store = RedisStore::connect(&RedisStoreConfig::cluster(cluster.urls())).await.unwrap();
    assert_eq!(store.kind(), StoreKind::RedisCluster);
    Arc::new(store)
}

fn user(i: usize) -> String {
    format!("user-{i}")
}

/// How many nodes hold at least one key.
fn nodes_with_keys(cluster: &RedisCluster) -> usize {
    (0..cluster.len()).filter(|&i| cluster.keys_on(i) > 0).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_and_counter_limits_hold_exactly_across_two_instances_on_a_cluster() {
    let cluster = RedisCluster::start();
    let clock = SystemClock::new();
    // A generous store timeout: this test is about correctness on a busy CI machine (a first
    // call per node also loads the script), not latency.
    let mut exact_config = ExactLimitConfig::new("per-user", 20, Duration::from_secs(3600));
    exact_config.store_timeout = Duration::from_secs(2);
    let mut counter_config = CounterLimitConfig::new("daily", 15, Duration::from_secs(86_400));
    counter_config.store_timeout = Duration::from_secs(2);
    let mut exact = Vec::new();
    let mut counter = Vec::new();
    for _ in 0..2 {
        exact.push(ExactLimiter::try_new(exact_config.clone(), store(&cluster).await).unwrap());
        counter
            .push(CounterLimiter::try_new(counter_config.clone(), store(&cluster).await).unwrap());
    }
    // A counter window edge seconds away would split the test over two windows: wait it out.
    let probe = counter[0].check("probe", 1, Criticality::Critical, clock.now()).await;
    let reset = probe.reset_after.unwrap();
    if reset < Duration::from_secs(10) {
        tokio::time::sleep(reset + Duration::from_millis(50)).await;
    }
    for i in 0..KEYS {
        let (mut exact_admitted, mut counter_admitted) = (0, 0);
        // Both instances interleave 2 × 15 exact and 2 × 12 counter checks on each key.
        for round in 0..15 {
            for (e, c) in exact.iter().zip(&counter) {
                let d = e.check(&user(i), 1, Criticality::Critical, clock.now()).await;
                assert!(!matches!(d.source, DecisionSource::Fallback(_)), "{d:?}");
                exact_admitted += u32::from(d.admitted);
                if round < 12 {
                    let d = c.check(&user(i), 1, Criticality::Critical, clock.now()).await;
                    assert!(!matches!(d.source, DecisionSource::Fallback(_)), "{d:?}");
                    counter_admitted += u32::from(d.admitted);
                }
            }
        }
        assert_eq!(exact_admitted, 20, "exact: {} asked 30 times", user(i));
        assert_eq!(counter_admitted, 15, "counter: {} asked 24 times", user(i));
    }
    // The keys' hash tags spread them over every master, and each slot's node ran the scripts.
    assert_eq!(nodes_with_keys(&cluster), cluster.len(), "keys on every node");
    let evals: Vec<u64> = (0..cluster.len()).map(|i| cluster.calls_on(i, "evalsha")).collect();
    assert!(evals.iter().all(|&n| n > 0), "every node ran scripts: {evals:?}");
    let mut c = cluster.node(0);
    let slot = |k: &str, c: &mut redis::Connection| -> u64 {
        redis::cmd("CLUSTER").arg("KEYSLOT").arg(k).query(c).unwrap()
    };
    let (g, n) = (key::gcra_key("per-user", "user-0"), key::counter_key("per-user", "user-0"));
    assert_eq!(slot(&g, &mut c), slot(&n, &mut c), "one hash tag per limit key: one slot");

    // A node that lost its scripts (restart, failover) gets them again (NOSCRIPT → EVAL).
    for i in 0..cluster.len() {
        let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut cluster.node(i)).unwrap();
    }
    for i in 0..KEYS {
        let d = exact[1].check(&format!("fresh-{i}"), 1, Criticality::Critical, clock.now()).await;
        assert_eq!((d.admitted, d.source), (true, DecisionSource::Store));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_grants_share_each_key_between_two_instances_on_a_cluster() {
    let cluster = RedisCluster::start();
    let clock = ManualClock::new();
    let mut limiters = Vec::new();
    for id in ["a", "b"] {
        let mut config = LeaseLimitConfig::new("fleet", 1000, Duration::from_secs(1));
        config.initial_share = Some(100.0);
        let limiter =
            LeaseLimiter::try_new(config, store(&cluster).await, id, Arc::new(clock.clone()))
                .unwrap();
        limiters.push(limiter);
    }
    // One second of demand on every key: a is offered 1500/s, b 200/s.
    for _ in 0..100 {
        clock.advance_ms(10);
        for i in 0..KEYS {
            for _ in 0..15 {
                limiters[0].check(&user(i), 1, Criticality::Critical, clock.now());
            }
            for _ in 0..2 {
                limiters[1].check(&user(i), 1, Criticality::Critical, clock.now());
            }
        }
    }
    for l in &limiters {
        l.refresh().await;
    }
    clock.advance_ms(1);
    limiters[0].refresh().await; // a now sees b's demand on every key
    assert_eq!(nodes_with_keys(&cluster), cluster.len(), "lease hashes on every node");
    for i in 0..KEYS {
        let grant = |l: &LeaseLimiter| {
            let grants = l.grants();
            let (_, rate, source) = grants.into_iter().find(|(k, _, _)| *k == user(i)).unwrap();
            assert_eq!(source, DecisionSource::Lease, "{}: from the cluster", user(i));
            rate
        };
        let (a, b) = (grant(&limiters[0]), grant(&limiters[1]));
        assert!((b - 200.0).abs() < 5.0, "{}: b asked ~200/s, got {b}", user(i));
        assert!((a + b - 1000.0).abs() < 5.0, "{}: grants {a} + {b} = the capacity", user(i));
        assert!(limiters.iter().all(|l| l.store_up()));
    }
}
