//! Property tests of [`TopK`] against exact counts: random streams (Zipf-like and uniform, with
//! long keys sharing a prefix) checked against an exact, exponentially decayed count of every
//! key — the Space-Saving guarantees, the order of `top`, `is_hot` agreeing with the ranks, and
//! the capacity bound.

use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

/// One observation: milliseconds since the previous one, a raw draw that picks the key, and the
/// number of observations.
type Step = (u64, u32, u64);

#[derive(Clone, Debug)]
struct Case {
    capacity: usize,
    hot_k: usize,
    half_life_ms: u64,
    min_rate_per_sec: f64,
    /// Distinct keys the draws map to.
    universe: u32,
    zipf: bool,
    steps: Vec<Step>,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        1usize..=24,
        prop::sample::select(vec![1u64, 50, 1_000, 3_600_000]),
        prop::sample::select(vec![0.0, 1.0]),
        1u32..=200,
        any::<bool>(),
        prop::sample::select(vec![0u64, 1, 20, 200]),
    )
        .prop_flat_map(
            |(capacity, half_life_ms, min_rate_per_sec, universe, zipf, max_step)| {
                (
                    1..=capacity,
                    prop::collection::vec((0..=max_step, any::<u32>(), 1u64..=3), 1..400),
                )
                    .prop_map(move |(hot_k, steps)| Case {
                        capacity,
                        hot_k,
                        half_life_ms,
                        min_rate_per_sec,
                        universe,
                        zipf,
                        steps,
                    })
            },
        )
}

/// The key a draw stands for: uniform over the universe, or log-uniform (about Zipf with
/// exponent 1: key `i` drawn with probability about proportional to `1 / (i + 1)`). One key in
/// seven is longer than [`MAX_KEY_LEN`], all of those sharing their first 300 bytes.
fn key_of(raw: u32, universe: u32, zipf: bool) -> Vec<u8> {
    let index = if zipf {
        let u = f64::from(raw) / (f64::from(u32::MAX) + 1.0);
        ((f64::from(universe) + 1.0).powf(u) - 1.0).floor() as u32 % universe
    } else {
        raw % universe
    };
    if index % 7 == 3 {
        let mut key = vec![b'L'; 300];
        key.extend_from_slice(index.to_string().as_bytes());
        key
    } else {
        format!("k{index}").into_bytes()
    }
}

/// The stream as (key, time in ns, n).
fn stream(case: &Case) -> Vec<(Vec<u8>, u64, u64)> {
    let mut t = 0u64;
    case.steps
        .iter()
        .map(|&(step_ms, raw, n)| {
            t += step_ms * 1_000_000;
            (key_of(raw, case.universe, case.zipf), t, n)
        })
        .collect()
}

fn build(case: &Case) -> TopK {
    TopK::try_new(TopKConfig {
        capacity: case.capacity,
        hot_k: case.hot_k,
        half_life: Duration::from_millis(case.half_life_ms),
        min_rate_per_sec: case.min_rate_per_sec,
    })
    .unwrap()
}

/// Exact decayed counts at `at` ns of the first `upto` observations, and their total.
fn exact_counts(
    observed: &[(Vec<u8>, u64, u64)],
    half_life_ms: u64,
    at: u64,
) -> (HashMap<Vec<u8>, f64>, f64) {
    let lambda = std::f64::consts::LN_2 / (half_life_ms as f64 * 1e6);
    let mut counts: HashMap<Vec<u8>, f64> = HashMap::new();
    let mut total = 0.0;
    for (key, t, n) in observed {
        let w = *n as f64 * (-lambda * (at - t) as f64).exp();
        *counts.entry(key.clone()).or_default() += w;
        total += w;
    }
    (counts, total)
}

/// Checks every property of `sketch` after `observed`, read at `at` ns.
fn check(
    sketch: &TopK,
    case: &Case,
    observed: &[(Vec<u8>, u64, u64)],
    at: u64,
) -> Result<(), TestCaseError> {
    sketch.check_invariants();
    let now = Instant::from_nanos(at);
    let cap = case.capacity as f64;
    let (exact, n) = exact_counts(observed, case.half_life_ms, at);
    // Rounding: relative to the total, plus what flushing subnormals to zero can lose.
    let tol = 1e-9 * n + 1e-290;
    prop_assert!((sketch.total(now) - n).abs() <= tol, "total {} vs {n}", sketch.total(now));
    prop_assert!(sketch.len() <= case.capacity);

    for (key, &count) in &exact {
        let estimate = sketch.estimate(key, now);
        // (1) every key above N / capacity is kept.
        if count > n / cap + tol {
            prop_assert!(estimate.is_some(), "{count} > {n} / {cap}, yet not kept");
        }
        // (2) estimates bracket the exact count; errors are at most N / capacity.
        if let Some(e) = estimate {
            prop_assert!(e.estimate >= count - tol, "estimate {} < exact {count}", e.estimate);
            prop_assert!(e.estimate - e.error <= count + tol, "{e:?} vs exact {count}");
            prop_assert!(e.error <= n / cap + tol, "error {} > {n} / {cap}", e.error);
        }
    }

    // Every kept key, largest first.
    let mut kept = sketch.top(usize::MAX, now);
    if case.min_rate_per_sec == 0.0 {
        prop_assert_eq!(kept.len(), sketch.len());
    }
    kept.sort_by(|a, b| b.estimate.total_cmp(&a.estimate));
    for k in [1, case.hot_k, case.hot_k + 1, case.capacity] {
        // (3) top(k) is sorted, holds at most k fast-enough keys, and is the k largest.
        let top = sketch.top(k, now);
        prop_assert!(top.len() <= k);
        prop_assert!(top.windows(2).all(|w| w[0].estimate >= w[1].estimate), "unsorted: {top:?}");
        prop_assert!(top.iter().all(|h| h.rate_per_sec >= case.min_rate_per_sec));
        prop_assert_eq!(top.len(), kept.len().min(k));
        for (listed, largest) in top.iter().zip(&kept) {
            prop_assert_eq!(listed.estimate, largest.estimate);
        }
        // is_hot agrees with the ranks: hot only within the k largest, always when strictly
        // above the k-th (ties at the k-th place may go either way).
        let kth = kept.get(k - 1).map_or(f64::NEG_INFINITY, |h| h.estimate);
        for h in &kept {
            let hot = sketch.is_hot(&h.key, k, now);
            if hot {
                prop_assert!(h.estimate >= kth, "{h:?} hot for k = {k} below {kth}");
            } else {
                prop_assert!(h.estimate <= kth, "{h:?} not hot for k = {k} above {kth}");
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The guarantees hold on decayed counts, read at the last observation and later.
    #[test]
    fn decayed_estimates_keep_space_saving_guarantees(case in cases(), later_ms in 0u64..5_000) {
        let observed = stream(&case);
        let mut sketch = build(&case);
        let checkpoints = [observed.len() / 3, observed.len() / 2, observed.len()];
        for (i, (key, t, n)) in observed.iter().enumerate() {
            sketch.observe_n(key, *n, Instant::from_nanos(*t));
            if checkpoints.contains(&(i + 1)) {
                check(&sketch, &case, &observed[..=i], *t)?;
            }
        }
        let end = observed.last().map_or(0, |o| o.1);
        check(&sketch, &case, &observed, end + later_ms * 1_000_000)?;
    }

    /// Without time passing, counts are integers and the bounds hold exactly.
    #[test]
    fn counts_at_one_instant_are_exact_integer_bounds(case in cases()) {
        let mut sketch = build(&case);
        let mut exact: HashMap<Vec<u8>, u64> = HashMap::new();
        let mut n = 0u64;
        let now = Instant::ZERO;
        for &(_, raw, count) in &case.steps {
            let key = key_of(raw, case.universe, case.zipf);
            sketch.observe_n(&key, count, now);
            *exact.entry(key).or_default() += count;
            n += count;
        }
        prop_assert_eq!(sketch.total(now), n as f64);
        let cap = case.capacity as u64;
        for (key, &count) in &exact {
            match sketch.estimate(key, now) {
                Some(e) => {
                    prop_assert_eq!(e.estimate.fract(), 0.0);
                    prop_assert!(e.estimate >= count as f64);
                    prop_assert!(e.estimate - e.error <= count as f64);
                    prop_assert!(e.error * cap as f64 <= n as f64);
                }
                None => prop_assert!(count * cap <= n, "{count} > {n} / {cap}, yet not kept"),
            }
        }
        sketch.check_invariants();
    }
}
