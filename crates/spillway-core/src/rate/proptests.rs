//! Property tests shared by every rate limiter: the rate bound over any run, criticality
//! ordering at any moment, plain behaviour for the default class, and exact totals under
//! threads.

use super::*;
use crate::{Clock, ManualClock};
use proptest::prelude::*;
use std::sync::atomic::{AtomicU64, Ordering};

/// One request: time step before it (ms), permits, class index.
type Step = (u64, u32, usize);

fn steps(max_step_ms: u64, max_permits: u32) -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec((0..=max_step_ms, 1..=max_permits, 0usize..4), 1..150)
}

/// Runs the steps from a fresh state; returns (time ns, permits) of each admitted request.
fn run<A: RateAlgorithm>(a: &A, steps: &[Step]) -> Vec<(u64, u64)> {
    let mut now = 1_000_000_000u64;
    let mut state = a.new_state(Instant::from_nanos(now));
    let mut admitted = Vec::new();
    for &(step, permits, class) in steps {
        now += step * 1_000_000;
        if a.check(&mut state, Instant::from_nanos(now), permits, Criticality::ALL[class])
            .is_admitted()
        {
            admitted.push((now, u64::from(permits)));
        }
    }
    admitted
}

/// Checks `permits admitted in [t_i, t_j] × per ≤ limit × (t_j − t_i) + burst × per` for every
/// pair of admissions: `limit` permits per `per` nanoseconds, plus `burst`.
fn assert_rate_bound(
    admitted: &[(u64, u64)],
    limit: u128,
    per: u128,
    burst: u128,
) -> Result<(), TestCaseError> {
    assert_bound(admitted, limit, per, burst * per)
}

/// Like [`assert_rate_bound`] with the burst given as `burst × per` (for fractional bursts).
fn assert_bound(
    admitted: &[(u64, u64)],
    limit: u128,
    per: u128,
    burst_per: u128,
) -> Result<(), TestCaseError> {
    let burst = burst_per;
    for i in 0..admitted.len() {
        let mut count: u128 = 0;
        for j in i..admitted.len() {
            count += u128::from(admitted[j].1);
            let t = u128::from(admitted[j].0 - admitted[i].0);
            prop_assert!(
                count * per <= limit * t + burst,
                "{count} permits in {t} ns (limit {limit} per {per} ns, burst {burst})"
            );
        }
    }
    Ok(())
}

/// From the state reached by `prefix`, a class is never admitted while a higher one is refused.
fn assert_class_order<A: RateAlgorithm>(
    a: &A,
    prefix: &[Step],
    permits: u32,
) -> Result<(), TestCaseError>
where
    A::State: Clone,
{
    let mut now = 1_000_000_000u64;
    let mut state = a.new_state(Instant::from_nanos(now));
    for &(step, p, class) in prefix {
        now += step * 1_000_000;
        a.check(&mut state, Instant::from_nanos(now), p, Criticality::ALL[class]);
        let admitted: Vec<bool> = Criticality::ALL
            .iter()
            .map(|&c| {
                a.check(&mut state.clone(), Instant::from_nanos(now), permits, c).is_admitted()
            })
            .collect();
        for lower in 0..4 {
            for higher in lower + 1..4 {
                prop_assert!(
                    !admitted[lower] || admitted[higher],
                    "class {lower} admitted while {higher} refused: {admitted:?}"
                );
            }
        }
    }
    Ok(())
}

fn reserve() -> impl Strategy<Value = CriticalityReserve> {
    (0.0..0.9f64, 0.0..1.0f64, 0.0..1.0f64).prop_map(|(a, b, c)| {
        // Sorted so the reserves never grow with the class.
        let (s, sp, cr) = (a, a * b, a * b * c);
        CriticalityReserve::try_new([s, sp, cr, 0.0]).unwrap_or(CriticalityReserve::NONE)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn token_bucket_never_admits_more_than_rate_times_t_plus_burst(
        per_second in 1u64..50, burst in 1u32..20, steps in steps(300, 3), r in reserve()
    ) {
        let c = TokenBucketConfig::try_new(Rate::per_second(per_second), burst, r).expect("valid");
        let interval = u128::from(c.refill_interval().as_nanos() as u64);
        assert_rate_bound(&run(&c, &steps), 1, interval, u128::from(burst))?;
    }

    #[test]
    fn gcra_never_admits_more_than_rate_times_t_plus_burst(
        per_second in 1u64..50, burst in 1u32..20, steps in steps(300, 3), r in reserve()
    ) {
        let c = GcraConfig::try_new(Rate::per_second(per_second), burst, r).expect("valid");
        let interval = u128::from(c.interval().as_nanos() as u64);
        assert_rate_bound(&run(&c, &steps), 1, interval, u128::from(burst))?;
    }

    #[test]
    /// A fixed window's true burst is twice its limit (the end of one window and the start of
    /// the next): that is the bound it keeps, and why the sliding window exists.
    fn fixed_window_never_admits_more_than_rate_times_t_plus_twice_the_limit(
        limit in 1u32..20, window_ms in 1u64..1000, steps in steps(300, 3), r in reserve()
    ) {
        let c = FixedWindowConfig::try_new(limit, Duration::from_millis(window_ms), r).expect("valid");
        let per = u128::from(window_ms) * 1_000_000;
        assert_rate_bound(&run(&c, &steps), u128::from(limit), per, 2 * u128::from(limit))?;
    }

    #[test]
    fn sliding_window_never_admits_more_than_rate_times_t_plus_limit(
        limit in 1u32..20, window_ms in 10u64..2000, buckets in 1u32..12,
        steps in steps(300, 3), r in reserve()
    ) {
        let c = SlidingWindowConfig::try_new(
            &[WindowLimit::new(limit, Duration::from_millis(window_ms)).buckets(buckets)], r,
        ).expect("valid");
        let admitted = run(&c, &steps);
        let per = u128::from(window_ms) * 1_000_000;
        assert_rate_bound(&admitted, u128::from(limit), per, u128::from(limit))?;
        // Stronger: no window-long interval ever holds more than the limit.
        for i in 0..admitted.len() {
            let within: u64 = admitted[i..]
                .iter()
                .take_while(|(t, _)| u128::from(t - admitted[i].0) < per)
                .map(|(_, p)| p)
                .sum();
            prop_assert!(within <= u64::from(limit), "{within} in one window");
        }
    }

    #[test]
    fn sliding_window_with_two_windows_keeps_both_bounds(
        short_limit in 1u32..10, long_limit in 1u32..30, steps in steps(200, 2)
    ) {
        let c = SlidingWindowConfig::try_new(
            &[
                WindowLimit::new(short_limit, Duration::from_millis(500)).buckets(5),
                WindowLimit::new(long_limit, Duration::from_secs(5)).buckets(10),
            ],
            CriticalityReserve::NONE,
        ).expect("valid");
        let admitted = run(&c, &steps);
        let (short, long) = (u128::from(short_limit), u128::from(long_limit));
        assert_rate_bound(&admitted, short, 500_000_000, short)?;
        assert_rate_bound(&admitted, long, 5_000_000_000, long)?;
    }

    #[test]
    fn leaky_bucket_admitted_and_waiting_never_exceed_rate_times_t_plus_queue(
        per_second in 1u64..50, max_wait_ms in 0u64..2000, steps in steps(300, 1), r in reserve()
    ) {
        let rate = Rate::per_second(per_second);
        let c = LeakyBucketConfig::with_reserve(rate, Duration::from_millis(max_wait_ms), r);
        // Burst: the one leaving now plus max_wait / T waiting (fractional).
        let interval = u128::from(rate.interval_nanos());
        let burst = interval + u128::from(max_wait_ms) * 1_000_000;
        assert_bound(&run(&c, &steps), 1, interval, burst)?;
    }

    #[test]
    fn warm_up_never_admits_more_than_rate_times_t_plus_burst(
        per_second in 1u64..50, burst in 1u32..10, warm_ms in 1u64..5000,
        cold in 1.0f64..5.0, steps in steps(300, 1), r in reserve()
    ) {
        let rate = Rate::per_second(per_second);
        let warm = Duration::from_millis(warm_ms);
        let c = WarmUpConfig::try_new(rate, burst, warm, cold, r).expect("valid");
        let interval = u128::from(rate.interval_nanos());
        assert_rate_bound(&run(&c, &steps), 1, interval, u128::from(burst))?;
    }

    #[test]
    fn no_limiter_admits_a_lower_class_while_refusing_a_higher_one(
        burst in 1u32..20, steps in steps(200, 3), permits in 1u32..4, r in reserve()
    ) {
        let (rate, second) = (Rate::per_second(10), Duration::from_secs(1));
        let tb = TokenBucketConfig::try_new(rate, burst, r).expect("valid");
        assert_class_order(&tb, &steps, permits)?;
        let gcra = GcraConfig::try_new(rate, burst, r).expect("valid");
        assert_class_order(&gcra, &steps, permits)?;
        let max_wait = Duration::from_millis(u64::from(burst) * 100);
        assert_class_order(&LeakyBucketConfig::with_reserve(rate, max_wait, r), &steps, permits)?;
        let fixed = FixedWindowConfig::try_new(burst, second, r).expect("valid");
        assert_class_order(&fixed, &steps, permits)?;
        let windows =
            [WindowLimit::new(burst, second), WindowLimit::new(burst * 3, second * 10)];
        let sliding = SlidingWindowConfig::try_new(&windows, r).expect("valid");
        assert_class_order(&sliding, &steps, permits)?;
        let warm = WarmUpConfig::try_new(rate, burst, second * 2, 3.0, r).expect("valid");
        assert_class_order(&warm, &steps, permits)?;
    }

    #[test]
    fn default_class_with_default_reserve_is_the_plain_algorithm(
        burst in 1u32..20, steps in steps(200, 3)
    ) {
        // Every request as CRITICAL under the default reserve decides exactly like the
        // algorithm with no reserve at all.
        let critical: Vec<Step> =
            steps.iter().map(|&(s, p, _)| (s, p, Criticality::Critical.index())).collect();
        let (rate, none, second) = (Rate::per_second(10), CriticalityReserve::NONE, Duration::from_secs(1));
        let plain = GcraConfig::try_new(rate, burst, none).expect("valid");
        prop_assert_eq!(run(&GcraConfig::new(rate, burst), &critical), run(&plain, &critical));
        let plain = FixedWindowConfig::try_new(burst, second, none).expect("valid");
        let default = FixedWindowConfig::new(burst, second);
        prop_assert_eq!(run(&default, &critical), run(&plain, &critical));
        let max_wait = Duration::from_millis(500);
        let plain = LeakyBucketConfig::with_reserve(rate, max_wait, none);
        let default = LeakyBucketConfig::new(rate, max_wait);
        prop_assert_eq!(run(&default, &critical), run(&plain, &critical));
    }

    #[test]
    fn shared_forms_decide_like_their_rules(burst in 1u32..20, steps in steps(200, 3)) {
        let rate = Rate::per_second(10);
        let tb = TokenBucket::new(rate, burst);
        let gcra = Gcra::new(rate, burst);
        let leaky = LeakyBucket::new(rate, Duration::from_millis(700));
        let mut rule = Limiter::new(GcraConfig::new(rate, burst), Instant::ZERO);
        let leaky_config = LeakyBucketConfig::new(rate, Duration::from_millis(700));
        let mut leaky_rule = Limiter::new(leaky_config, Instant::ZERO);
        let mut now = 1_000_000_000u64;
        for &(step, permits, class) in &steps {
            now += step * 1_000_000;
            let (t, c) = (Instant::from_nanos(now), Criticality::ALL[class]);
            let want = rule.check_n(t, permits, c);
            prop_assert_eq!(tb.try_acquire(t, permits, c), want);
            prop_assert_eq!(gcra.check_n(t, permits, c), want);
            prop_assert_eq!(leaky.check_n(t, permits, c), leaky_rule.check_n(t, permits, c));
        }
    }
}

/// Runs `check` from four threads until each has tried `tries` times; returns the total
/// admitted. Callers read a frozen `ManualClock`.
fn hammer(tries: u64, check: impl Fn() -> bool + Sync) -> u64 {
    let admitted = AtomicU64::new(0);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..tries {
                    if check() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    admitted.load(Ordering::Relaxed)
}

#[test]
fn threads_hammering_a_shared_token_bucket_get_exactly_the_burst() {
    let b = TokenBucket::new(Rate::per_second(1), 5000);
    let clock = ManualClock::starting_at(Instant::from_nanos(77_000_000_000));
    assert_eq!(hammer(5000, || b.check(clock.now()).is_admitted()), 5000);
}

#[test]
fn threads_hammering_a_shared_gcra_get_exactly_the_burst() {
    let g = Gcra::new(Rate::per_second(1), 5000);
    let clock = ManualClock::starting_at(Instant::from_nanos(77_000_000_000));
    assert_eq!(hammer(5000, || g.check(clock.now()).is_admitted()), 5000);
}

#[test]
fn threads_hammering_a_shared_leaky_bucket_fill_exactly_the_queue() {
    let b = LeakyBucket::new(Rate::per_second(1000), Duration::from_secs(2));
    let clock = ManualClock::starting_at(Instant::from_nanos(77_000_000_000));
    // The one leaving now plus 2 s / 1 ms waiting.
    assert_eq!(hammer(2000, || b.check(clock.now()).is_admitted()), 2001);
}

#[test]
fn threads_hammering_a_keyed_limiter_get_exactly_the_burst_per_key() {
    let l: KeyedLimiter<ByteKey, _> = KeyedLimiter::gcra(Rate::per_second(1), 3000);
    let clock = ManualClock::starting_at(Instant::from_nanos(77_000_000_000));
    let check = || l.check_bytes(b"one key", clock.now(), Criticality::Critical).is_admitted();
    assert_eq!(hammer(4000, check), 3000);
}

/// One request to a batched bucket: time step before it (µs), worker, permits, class index.
type WorkerStep = (u64, usize, u32, usize);

fn worker_steps() -> impl Strategy<Value = Vec<WorkerStep>> {
    // Mostly simultaneous arrivals (so bursts are drained), sometimes pauses of up to 3 ms
    // (so batches expire and the bucket refills while batches are out).
    let gap = prop_oneof![30 => Just(0u64), 1 => 0..=3_000u64];
    prop::collection::vec((gap, 0usize..6, 1..=3u32, 0usize..4), 1..400)
}

/// A batched bucket with batches of at least 2 for `workers` workers.
fn batched_config() -> impl Strategy<Value = (TokenBucketConfig, usize)> {
    (1_000u64..200_000, 1usize..5, 0u32..300, reserve()).prop_map(|(rate, w, extra, r)| {
        let burst = 128 * w as u32 + extra;
        let c = TokenBucketConfig::try_new(Rate::per_second(rate), burst, r).expect("valid");
        (c, w)
    })
}

/// Replays `steps` on a fresh batched bucket; returns it, the time reached and the admissions.
fn run_batched(
    config: &TokenBucketConfig,
    workers: usize,
    steps: &[WorkerStep],
) -> (BatchedTokenBucket, u64, Vec<(u64, u64)>) {
    let workers = std::num::NonZeroUsize::new(workers).expect("non-zero");
    let b = BatchedTokenBucket::new(config.clone(), workers);
    let mut now = 1_000_000_000u64;
    let mut admitted = Vec::new();
    for &(step, worker, permits, class) in steps {
        now += step * 1_000;
        if b.check(worker, Instant::from_nanos(now), permits, Criticality::ALL[class]).is_admitted()
        {
            admitted.push((now, u64::from(permits)));
        }
    }
    (b, now, admitted)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn batched_token_bucket_never_admits_more_than_rate_times_t_plus_burst(
        (config, workers) in batched_config(), steps in worker_steps()
    ) {
        let (b, _, admitted) = run_batched(&config, workers, &steps);
        prop_assert!(b.batch_size() >= 2);
        let interval = u128::from(config.refill_interval().as_nanos() as u64);
        assert_rate_bound(&admitted, 1, interval, u128::from(config.capacity()))?;
    }

    #[test]
    fn batched_token_bucket_never_admits_a_lower_class_while_refusing_a_higher_one(
        (config, workers) in batched_config(), steps in worker_steps(), permits in 1u32..4
    ) {
        // From the state the steps reach, every (class, worker) pair asks at the same moment,
        // each on its own replay of the same history.
        let admitted: Vec<Vec<bool>> = Criticality::ALL
            .iter()
            .map(|&c| {
                (0..workers)
                    .map(|w| {
                        let (b, now, _) = run_batched(&config, workers, &steps);
                        b.check(w, Instant::from_nanos(now), permits, c).is_admitted()
                    })
                    .collect()
            })
            .collect();
        for lower in 0..4 {
            for higher in lower + 1..4 {
                let any_lower = admitted[lower].iter().any(|&a| a);
                let all_higher = admitted[higher].iter().all(|&a| a);
                prop_assert!(
                    !any_lower || all_higher,
                    "class {lower} admitted while {higher} refused: {admitted:?}"
                );
            }
        }
    }
}
