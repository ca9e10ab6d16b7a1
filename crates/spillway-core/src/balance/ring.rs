//! Ketama-style consistent hashing: a sorted ring of virtual nodes, weight-proportional.
//!
//! Why: sticky routing (caches, sessions, per-user state) wants the same key on the same
//! endpoint, and wants a membership change to move as few keys as possible. Each endpoint puts
//! virtual nodes on a 64-bit ring at `hash(identity, i)`; a key goes to the first virtual node
//! at or after its hash. Removing an endpoint (or making it ineligible) moves only its own keys,
//! each to the next eligible endpoint on the ring — about 1/N of all keys — and adding one
//! takes about 1/(N+1).
//!
//! Maglev (a lookup table instead of a ring) would make lookups O(1) but needs a table rebuild
//! per eligible-set change; with per-thread choosers and health-driven eligibility that
//! changes at any time, the ring's walk-past-ineligible is the better fit.

use super::hash::{hash_pair, hash_u64};
use super::{Balancer, EndpointSpec, PickContext};

/// A consistent-hash ring over weighted endpoints.
#[derive(Clone, Debug)]
pub struct RingHash {
    /// Virtual-node hashes, sorted; `owner[i]` is the endpoint of `points[i]`.
    points: Box<[u64]>,
    owner: Box<[u32]>,
    len: usize,
    /// Per-endpoint marks for eligibility checks on large eligible sets: `marks[e] == epoch`
    /// means eligible in the current pick. Reused, so picks do not allocate.
    marks: Box<[u32]>,
    epoch: u32,
}

impl RingHash {
    /// Virtual nodes per endpoint of average weight (ketama uses 160).
    pub const POINTS_PER_ENDPOINT: usize = 160;
    /// Minimum ring size, so small clusters still get an even split (Envoy's default).
    pub const MIN_RING_SIZE: usize = 1024;
    /// Maximum ring size (8 MiB of points and owners).
    pub const MAX_RING_SIZE: usize = 1 << 20;
    /// Eligible sets up to this size are checked by scanning the slice; larger ones by marks.
    const SCAN_MAX: usize = 16;

    /// A ring with the default size: `POINTS_PER_ENDPOINT` virtual nodes per endpoint,
    /// clamped to [`MIN_RING_SIZE`](Self::MIN_RING_SIZE), [`MAX_RING_SIZE`](Self::MAX_RING_SIZE).
    pub fn new(endpoints: &[EndpointSpec]) -> RingHash {
        let size = (endpoints.len() * Self::POINTS_PER_ENDPOINT)
            .clamp(Self::MIN_RING_SIZE, Self::MAX_RING_SIZE);
        RingHash::with_ring_size(endpoints, size)
    }

    /// A ring with about `ring_size` virtual nodes in total, shared in proportion to weight
    /// (each endpoint gets at least one).
    pub fn with_ring_size(endpoints: &[EndpointSpec], ring_size: usize) -> RingHash {
        let total_weight: u64 = endpoints.iter().map(|e| u64::from(e.effective_weight())).sum();
        let mut ring: Vec<(u64, u32)> = Vec::new();
        for (idx, e) in endpoints.iter().enumerate() {
            let share = ring_size as f64 * f64::from(e.effective_weight()) / total_weight as f64;
            let count = (share.round() as u64).max(1);
            // Endpoint indices fit u32: a cluster of 4 billion endpoints is not a config.
            let owner = u32::try_from(idx).unwrap_or(u32::MAX);
            ring.extend((0..count).map(|i| (hash_pair(e.id, i), owner)));
        }
        // Sort by hash, then by identity (not index) so rings agree whatever the list order.
        ring.sort_unstable_by_key(|&(h, owner)| (h, endpoints[owner as usize].id));
        RingHash {
            points: ring.iter().map(|&(h, _)| h).collect(),
            owner: ring.iter().map(|&(_, o)| o).collect(),
            len: endpoints.len(),
            marks: vec![0; endpoints.len()].into_boxed_slice(),
            epoch: 0,
        }
    }

    /// Number of virtual nodes on the ring.
    pub fn ring_size(&self) -> usize {
        self.points.len()
    }

    /// The endpoint owning `key` when every endpoint is eligible (e.g. for tests and tools).
    pub fn owner_of(&self, key: u64) -> Option<usize> {
        let start = self.points.partition_point(|&p| p < key);
        let i = if start == self.points.len() { 0 } else { start };
        self.owner.get(i).map(|&o| o as usize)
    }
}

impl Balancer for RingHash {
    fn pick(&mut self, eligible: &[usize], ctx: &PickContext) -> Option<usize> {
        let n = self.points.len();
        if eligible.is_empty() || n == 0 {
            return None;
        }
        // A key that is itself a small integer would cluster; keys are expected to be hashes
        // already, so only the random fallback is mixed.
        let key = ctx.hash.unwrap_or_else(|| hash_u64(ctx.random));
        let start = self.points.partition_point(|&p| p < key);
        let use_marks = eligible.len() > Self::SCAN_MAX;
        if use_marks {
            self.epoch = self.epoch.wrapping_add(1);
            if self.epoch == 0 {
                self.marks.fill(0);
                self.epoch = 1;
            }
            let mut any = false;
            for &e in eligible {
                if let Some(m) = self.marks.get_mut(e) {
                    *m = self.epoch;
                    any = true;
                }
            }
            if !any {
                return None;
            }
        } else if !eligible.iter().any(|&e| e < self.len) {
            return None;
        }
        // Walk clockwise to the first eligible owner; at most one full turn.
        for k in 0..n {
            let mut i = start + k;
            if i >= n {
                i -= n;
            }
            let e = self.owner[i] as usize;
            let ok = if use_marks { self.marks[e] == self.epoch } else { eligible.contains(&e) };
            if ok {
                return Some(e);
            }
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::test_support::{specs, Rng};
    use super::super::{hash_bytes, EndpointSpec};
    use super::*;
    use crate::clock::Instant;

    fn pick_key(r: &mut RingHash, eligible: &[usize], key: u64) -> usize {
        r.pick(eligible, &PickContext::new(Instant::ZERO, 0).with_hash(key)).unwrap()
    }

    fn keys(n: usize) -> Vec<u64> {
        (0..n).map(|i| hash_bytes(format!("user-{i}").as_bytes())).collect()
    }

    #[test]
    fn same_key_goes_to_the_same_endpoint() {
        let mut r = RingHash::new(&specs(&[1, 1, 1, 1, 1]));
        let all = [0, 1, 2, 3, 4];
        for k in keys(1_000) {
            let e = pick_key(&mut r, &all, k);
            assert_eq!(pick_key(&mut r, &all, k), e);
            assert_eq!(r.owner_of(k), Some(e));
        }
        // And a second ring built from the same endpoints in another order agrees.
        let mut reversed: Vec<EndpointSpec> = specs(&[1, 1, 1, 1, 1]);
        reversed.reverse();
        let mut r2 = RingHash::new(&reversed);
        for k in keys(1_000) {
            assert_eq!(4 - pick_key(&mut r2, &all, k), pick_key(&mut r, &all, k));
        }
    }

    #[test]
    fn an_ineligible_endpoint_moves_only_its_own_keys() {
        let n = 10;
        let mut r = RingHash::new(&specs(&vec![1; n]));
        let all: Vec<usize> = (0..n).collect();
        let without3: Vec<usize> = (0..n).filter(|&i| i != 3).collect();
        let ks = keys(20_000);
        let mut moved = 0;
        for &k in &ks {
            let before = pick_key(&mut r, &all, k);
            let after = pick_key(&mut r, &without3, k);
            assert_ne!(after, 3);
            if before != after {
                assert_eq!(before, 3, "a key not on endpoint 3 moved");
                moved += 1;
            }
        }
        let frac = f64::from(moved) / ks.len() as f64;
        assert!((0.07..0.13).contains(&frac), "moved {frac:.3}, expected ~1/{n}");
    }

    #[test]
    fn removing_an_endpoint_from_the_list_moves_about_one_nth_of_keys() {
        let n = 8;
        let full = specs(&vec![1; n]);
        let mut smaller = full.clone();
        let removed = smaller.remove(5);
        let mut a = RingHash::new(&full);
        let mut b = RingHash::new(&smaller);
        let all_a: Vec<usize> = (0..n).collect();
        let all_b: Vec<usize> = (0..n - 1).collect();
        let ks = keys(20_000);
        let mut moved = 0;
        for &k in &ks {
            let ea = full[pick_key(&mut a, &all_a, k)].id;
            let eb = smaller[pick_key(&mut b, &all_b, k)].id;
            if ea != eb {
                assert_eq!(ea, removed.id, "a key not on the removed endpoint moved");
                moved += 1;
            }
        }
        let frac = f64::from(moved) / ks.len() as f64;
        assert!((0.09..0.16).contains(&frac), "moved {frac:.3}, expected ~1/{n}");
    }

    #[test]
    fn keys_are_shared_in_proportion_to_weight() {
        let weights = [1u32, 2, 3, 4];
        let mut r = RingHash::new(&specs(&weights));
        let mut counts = [0u32; 4];
        let ks = keys(50_000);
        for &k in &ks {
            counts[pick_key(&mut r, &[0, 1, 2, 3], k)] += 1;
        }
        for (i, &w) in weights.iter().enumerate() {
            let expected = ks.len() as f64 * f64::from(w) / 10.0;
            let ratio = f64::from(counts[i]) / expected;
            assert!(
                (0.85..1.15).contains(&ratio),
                "endpoint {i}: {ratio:.3} of expected, {counts:?}"
            );
        }
    }

    /// The most loaded endpoint's share over the mean, for `n` equal endpoints and 10 000 keys.
    fn max_over_mean_load(n: usize) -> f64 {
        let mut r = RingHash::new(&specs(&vec![1; n]));
        let all: Vec<usize> = (0..n).collect();
        let ks = keys(10_000);
        let mut counts = vec![0u32; n];
        for &k in &ks {
            counts[pick_key(&mut r, &all, k)] += 1;
        }
        let max = counts.iter().copied().max().unwrap_or(0);
        f64::from(max) / (ks.len() as f64 / n as f64)
    }

    #[test]
    fn ring_spreads_keys_evenly_over_3_10_and_100_endpoints() {
        // Measured with XXH64 and 160 virtual nodes per endpoint (1 024 at least): 3 → 1.065,
        // 10 → 1.093, 100 → 1.240. At 100 endpoints each gets ~100 keys, so sampling noise
        // alone (±10 % per endpoint, the max of 100 near +2.5σ) is most of that; the keys are
        // fixed, so the values are deterministic and the bounds only leave room for a change
        // of ring construction.
        for (n, bound) in [(3, 1.10), (10, 1.15), (100, 1.35)] {
            let ratio = max_over_mean_load(n);
            println!("{n} endpoints: max/mean load {ratio:.3}");
            assert!(ratio <= bound, "{n} endpoints: max/mean {ratio:.3} > {bound}");
        }
    }

    #[test]
    fn large_eligible_sets_use_marks_and_still_respect_eligibility() {
        let n = 40;
        let mut r = RingHash::new(&specs(&vec![1; n]));
        let eligible: Vec<usize> = (0..n).filter(|i| !i.is_multiple_of(3)).collect();
        let mut rng = Rng(8);
        let mut seen = vec![false; n];
        for _ in 0..5_000 {
            let e = r.pick(&eligible, &PickContext::new(Instant::ZERO, rng.next())).unwrap();
            assert!(!e.is_multiple_of(3));
            seen[e] = true;
        }
        assert!(eligible.iter().all(|&e| seen[e]), "random fallback reaches every endpoint");
    }

    #[test]
    fn ring_size_follows_the_endpoint_count_within_bounds() {
        assert_eq!(RingHash::new(&specs(&[1, 1])).ring_size(), 1024);
        assert_eq!(RingHash::new(&specs(&[1; 10])).ring_size(), 1600);
        assert_eq!(RingHash::with_ring_size(&specs(&[1, 1_000_000]), 100).ring_size(), 101);
    }
}
