//! Lease mode on a real Redis: three instances with skewed demand share one limit by max-min
//! fairness at a handful of Redis commands per second, fall back when Redis dies, and return
//! to leases when it comes back.
//!
//! These run in real time (a real server, real refreshes): bounded waits, generous margins.

#![allow(clippy::unwrap_used)] // tests: a failed set-up step should panic

mod common;

use common::RedisServer;
use spillway_core::{Clock, Criticality, SystemClock};
use spillway_quota::{
    lease_grants, DecisionSource, LeaseLimitConfig, LeaseLimiter, QuotaStore, RedisStore,
    RedisStoreConfig, RefresherHandle, StoreFailurePolicy,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CAPACITY: u64 = 2_000;
/// Offered load, 3 000/s in all: 60 / 30 / 10 %.
const OFFERED: [f64; 3] = [1_800.0, 900.0, 300.0];
const KEY: &str = "search";

struct Instance {
    limiter: LeaseLimiter,
    _refresher: RefresherHandle,
    admitted: Arc<AtomicU64>,
    offered: Arc<AtomicU64>,
    /// Refusals that were not quota refusals with a retry hint (must stay 0).
    odd: Arc<AtomicU64>,
}

async fn fleet(server: &RedisServer, clock: &Arc<SystemClock>) -> Vec<Instance> {
    let mut out = Vec::new();
    for (i, rate) in OFFERED.iter().enumerate() {
        let store: Arc<dyn QuotaStore> =
            Arc::new(RedisStore::connect(&RedisStoreConfig::single(server.url())).await.unwrap());
        let mut config = LeaseLimitConfig::new("api", CAPACITY, Duration::from_secs(1));
        config.initial_share = Some(CAPACITY as f64 / 3.0);
        let limiter =
            LeaseLimiter::try_new(config, store, format!("gw-{i}"), clock.clone()).unwrap();
        let refresher = limiter.spawn_refresher();
        let (admitted, offered, odd) = (Arc::default(), Arc::default(), Arc::default());
        tokio::spawn(drive(
            limiter.clone(),
            clock.clone(),
            *rate,
            Arc::clone(&admitted),
            Arc::clone(&offered),
            Arc::clone(&odd),
        ));
        out.push(Instance { limiter, _refresher: refresher, admitted, offered, odd });
    }
    out
}

/// Offers `rate` requests per second to `KEY`, paced by the clock (catching up after a late
/// tick), until the limiter's handle is the last one.
async fn drive(
    limiter: LeaseLimiter,
    clock: Arc<SystemClock>,
    rate: f64,
    admitted: Arc<AtomicU64>,
    offered: Arc<AtomicU64>,
    odd: Arc<AtomicU64>,
) {
    let start = Instant::now();
    let mut sent = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(2));
    while Arc::strong_count(&admitted) > 1 {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            sent += 1;
            let d = limiter.check(KEY, 1, Criticality::Critical, clock.now());
            offered.fetch_add(1, Ordering::Relaxed);
            if d.admitted {
                admitted.fetch_add(1, Ordering::Relaxed);
            } else if d.retry_after.is_none() {
                odd.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn admitted(fleet: &[Instance]) -> Vec<u64> {
    fleet.iter().map(|i| i.admitted.load(Ordering::Relaxed)).collect()
}

/// The enforced rate for `KEY` and where it comes from, once the key is tracked.
fn try_grant(instance: &Instance) -> Option<(f64, DecisionSource)> {
    let grants = instance.limiter.grants();
    grants.iter().find(|(k, _, _)| k == KEY).map(|(_, rate, source)| (*rate, *source))
}

fn grant(instance: &Instance) -> (f64, DecisionSource) {
    try_grant(instance).expect("the key is tracked")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_with_skewed_demand_share_the_capacity_by_max_min_fairness() {
    let server = RedisServer::start();
    let clock = Arc::new(SystemClock::new());
    let fleet = fleet(&server, &clock).await;

    tokio::time::sleep(Duration::from_secs(4)).await; // warm-up: demand measured, grants settled
    let calls_before = server.total_calls();
    let admitted_before = admitted(&fleet);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let admitted_after = admitted(&fleet);
    let calls = server.total_calls() - calls_before;

    let per_instance: Vec<f64> = admitted_after
        .iter()
        .zip(&admitted_before)
        .map(|(a, b)| (a - b) as f64 / elapsed)
        .collect();
    let fleet_rate: f64 = per_instance.iter().sum();
    let total_admitted: u64 =
        admitted_after.iter().sum::<u64>() - admitted_before.iter().sum::<u64>();
    let per_request = calls as f64 / total_admitted as f64;
    let ideal = lease_grants(CAPACITY as f64, &OFFERED);
    let grants: Vec<f64> = fleet.iter().map(|i| grant(i).0).collect();
    let views: Vec<_> = fleet.iter().map(|i| i.limiter.view()).collect();
    let demands: Vec<f64> = views.iter().map(|v| v.keys[0].demand.unwrap_or(0.0)).collect();
    eprintln!(
        "lease: fleet admitted {fleet_rate:.1}/s for a capacity of {CAPACITY}/s ({:+.2} %); \
         per instance {per_instance:.1?}/s; grants {grants:.1?}; ideal {ideal:.1?}; \
         measured demand {demands:.1?}; Redis commands {calls} in {elapsed:.2} s = \
         {per_request:.5} per admitted request",
        (fleet_rate / CAPACITY as f64 - 1.0) * 100.0
    );

    let error = (fleet_rate - CAPACITY as f64).abs() / CAPACITY as f64;
    assert!(error <= 0.03, "fleet admitted {fleet_rate:.1}/s, capacity {CAPACITY}/s");
    for (i, (g, want)) in grants.iter().zip(&ideal).enumerate() {
        assert_eq!(grant(&fleet[i]).1, DecisionSource::Lease);
        // Within 3 % of the capacity of the max-min share of the true offered load.
        assert!(
            (g - want).abs() <= 0.03 * CAPACITY as f64,
            "instance {i}: grant {g:.1}, ideal {want:.1}"
        );
        assert_eq!(views[i].keys[0].instances, Some(3));
    }
    // Grants are the fair shares of what the instances reported (up to one refresh of drift).
    let of_reported = lease_grants(CAPACITY as f64, &demands);
    for (g, want) in grants.iter().zip(&of_reported) {
        assert!((g - want).abs() <= 0.03 * CAPACITY as f64, "grant {g:.1} vs {want:.1}");
    }
    assert!(per_request <= 0.01, "{per_request} Redis commands per admitted request");
    for i in &fleet {
        assert_eq!(i.odd.load(Ordering::Relaxed), 0);
        assert!(i.offered.load(Ordering::Relaxed) > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_fall_back_when_redis_dies_and_return_to_leases_when_it_is_back() {
    let mut server = RedisServer::start();
    let clock = Arc::new(SystemClock::new());
    let fleet = fleet(&server, &clock).await;
    let leased = |fleet: &[Instance]| {
        fleet.iter().all(|i| try_grant(i).is_some_and(|(_, s)| s == DecisionSource::Lease))
    };
    assert!(
        common::wait_until(Duration::from_secs(5), || leased(&fleet)).await.is_some(),
        "leases at start"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before_kill: Vec<f64> = fleet.iter().map(|i| grant(i).0).collect();

    server.kill();
    let fell_back = common::wait_until(Duration::from_secs(5), || {
        fleet
            .iter()
            .all(|i| matches!(grant(i).1, DecisionSource::Fallback(_)) && !i.limiter.store_up())
    })
    .await
    .expect("every instance falls back");
    // last_lease: the grants are kept while the leases live ...
    let kept: Vec<f64> = fleet.iter().map(|i| grant(i).0).collect();
    assert_eq!(kept, before_kill);
    // ... then each instance enforces capacity / last known instance count.
    let split = CAPACITY as f64 / 3.0;
    let static_split = common::wait_until(Duration::from_secs(8), || {
        fleet.iter().all(|i| (grant(i).0 - split).abs() < 1e-6)
    })
    .await
    .expect("lapsed leases give way to the static split");
    let admitted_mid = admitted(&fleet);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during: Vec<u64> = admitted(&fleet).iter().zip(&admitted_mid).map(|(a, b)| a - b).collect();
    for (i, n) in during.iter().enumerate() {
        assert!(*n > 0, "instance {i} keeps serving while Redis is down");
        assert!(*n as f64 <= split * 1.2 + 50.0, "instance {i} admitted {n} in ~1 s");
    }

    let down_at = Instant::now();
    server.restart();
    let recovered = common::wait_until(Duration::from_secs(10), || {
        leased(&fleet) && fleet.iter().all(|i| i.limiter.store_up())
    })
    .await
    .expect("leases resume after Redis is back");
    for i in &fleet {
        assert_eq!(i.odd.load(Ordering::Relaxed), 0, "only quota refusals with a retry hint");
        assert_eq!(i.limiter.fallback_total(), 1);
        assert!(i.limiter.fallback_decisions() > 0);
    }
    let last_error = fleet[0].limiter.view().last_error;
    eprintln!(
        "lease: fell back {fell_back:?} after the kill (policy {}), static split after {static_split:?} more; \
         admitted during the outage {during:?} in ~1 s; leases again {recovered:?} after the restart \
         (restart took {:?}); last error {last_error:?}",
        StoreFailurePolicy::LastLease,
        down_at.elapsed() - recovered,
    );
    assert!(fell_back <= Duration::from_secs(2), "fallback took {fell_back:?}");
}
