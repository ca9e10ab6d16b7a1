//! Load-balancing choosers: given the endpoints that are currently eligible, pick one.
//!
//! Why this shape: the gateway runs thread-per-core, so each worker thread owns its own chooser
//! (`&mut self`, plain integers, no atomics) and keeps its own statistics; health checking and
//! outlier detection live elsewhere and only decide which endpoints are *eligible*. A chooser
//! is built once per endpoint list (rebuild it when discovery changes the list) and never
//! allocates when picking.
//!
//! The algorithms:
//! - [`RoundRobin`] — each eligible endpoint in turn.
//! - [`SmoothWeightedRoundRobin`] — nginx's smooth weighted round robin (weights 5,1,1 give
//!   `a a b a c a a`), with nginx's effective-weight back-off after failures.
//! - [`LeastRequest`] — fewest in-flight requests per unit of weight; full scan for small sets,
//!   power-of-two-choices for large ones.
//! - [`P2cEwma`] — power of two choices over a load score of in-flight × peak-EWMA latency ÷
//!   success rate (bilibili/kratos p2c), with a forced probe of neglected endpoints.
//! - [`RingHash`] — ketama consistent hashing with weight-proportional virtual nodes; keys
//!   whose endpoint is ineligible move to the next eligible one on the ring, and only those.
//!
//! [`BalanceKind`] names them for configuration; [`AnyBalancer`] holds any of them behind the
//! one [`Balancer`] trait without boxing.
//!
//! ```
//! use spillway_core::balance::{BalanceKind, Balancer, EndpointSpec, PickContext};
//! use spillway_core::Instant;
//!
//! let endpoints = [EndpointSpec::new("10.0.0.1:80", 5), EndpointSpec::new("10.0.0.2:80", 1)];
//! let kind: BalanceKind = "weighted_round_robin".parse().unwrap();
//! let mut chooser = kind.build(&endpoints, 0);
//! let eligible = [0, 1]; // after health filtering
//! let ctx = PickContext::new(Instant::ZERO, 0x9e37_79b9);
//! let picked = chooser.pick(&eligible, &ctx).unwrap();
//! chooser.on_start(picked, ctx.now);
//! // ... the request runs ...
//! chooser.on_end(picked, std::time::Duration::from_millis(3), true, ctx.now);
//! ```

mod hash;
mod least_request;
mod p2c;
mod ring;
mod round_robin;

use crate::clock::Instant;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

pub use hash::{hash_bytes, hash_bytes_seeded, hash_u64};
pub use least_request::LeastRequest;
pub use p2c::{P2cConfig, P2cEwma};
pub use ring::RingHash;
pub use round_robin::{RoundRobin, SmoothWeightedRoundRobin};

/// One endpoint as the chooser sees it at construction: a stable identity and a weight.
///
/// The identity matters only to consistent hashing, where it places the endpoint's virtual
/// nodes on the ring: two gateways (or two rebuilds) with the same identities agree on where
/// keys go, whatever the order of the endpoint list.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointSpec {
    /// A stable identity, usually [`hash_bytes`] of the endpoint's address.
    pub id: u64,
    /// Relative weight. Zero is treated as 1 (configuration validation should refuse it).
    pub weight: u32,
}

impl EndpointSpec {
    /// An endpoint identified by `name` (e.g. `"10.0.0.1:8080"`), hashed with [`hash_bytes`].
    pub fn new(name: &str, weight: u32) -> EndpointSpec {
        EndpointSpec { id: hash_bytes(name.as_bytes()), weight }
    }

    /// An endpoint with an explicit identity.
    pub const fn with_id(id: u64, weight: u32) -> EndpointSpec {
        EndpointSpec { id, weight }
    }

    /// The weight, with zero raised to 1.
    #[inline]
    pub fn effective_weight(&self) -> u32 {
        self.weight.max(1)
    }
}

/// What a pick may depend on besides the chooser's own state.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct PickContext {
    /// The current time (used by [`P2cEwma`] for decay and forced probes).
    pub now: Instant,
    /// A fresh random value per pick (the core never generates randomness itself). Used for
    /// tie-breaking and for power-of-two-choices; both 32-bit halves are used.
    pub random: u64,
    /// The request's hash key for [`RingHash`] (e.g. [`hash_bytes`] of a header value).
    /// Without one, consistent hashing falls back to `random`.
    pub hash: Option<u64>,
}

impl PickContext {
    /// A context without a hash key.
    #[inline]
    pub const fn new(now: Instant, random: u64) -> PickContext {
        PickContext { now, random, hash: None }
    }

    /// This context with a hash key.
    #[inline]
    pub const fn with_hash(mut self, hash: u64) -> PickContext {
        self.hash = Some(hash);
        self
    }
}

/// A load-balancing chooser over a fixed endpoint list.
///
/// Contract for callers:
/// - `eligible` holds indices into the endpoint list the chooser was built with, without
///   duplicates, in any order. Indices out of range are ignored (never returned). Keep the
///   slice between requests (e.g. `0..n` collected once, rebuilt when health changes) rather
///   than building it per request.
/// - [`pick`](Balancer::pick) returns one of `eligible`, or `None` when it holds no valid
///   index. It does not allocate.
/// - For each request actually sent to an endpoint, call [`on_start`](Balancer::on_start) once
///   and later [`on_end`](Balancer::on_end) exactly once (also on errors and cancellations:
///   in-flight counts would otherwise leak). Retries pick again.
pub trait Balancer {
    /// Chooses one of the `eligible` endpoints.
    fn pick(&mut self, eligible: &[usize], ctx: &PickContext) -> Option<usize>;

    /// A request was sent to `endpoint`.
    #[inline]
    fn on_start(&mut self, endpoint: usize, now: Instant) {
        let _ = (endpoint, now);
    }

    /// A request to `endpoint` finished after `latency`; `success` is false for connection
    /// errors, timeouts and responses the gateway counts as failures (e.g. 5xx).
    #[inline]
    fn on_end(&mut self, endpoint: usize, latency: Duration, success: bool, now: Instant) {
        let _ = (endpoint, latency, success, now);
    }
}

/// The balancing algorithms, by their configuration names.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum BalanceKind {
    /// `round_robin`: [`RoundRobin`] (weights ignored).
    RoundRobin,
    /// `weighted_round_robin`: [`SmoothWeightedRoundRobin`].
    WeightedRoundRobin,
    /// `least_request`: [`LeastRequest`].
    LeastRequest,
    /// `p2c_ewma`: [`P2cEwma`] with [`P2cConfig::default`].
    P2cEwma,
    /// `consistent_hash`: [`RingHash`] with its default ring size.
    ConsistentHash,
}

impl BalanceKind {
    /// Every kind, in documentation order.
    pub const ALL: [BalanceKind; 5] = [
        BalanceKind::RoundRobin,
        BalanceKind::WeightedRoundRobin,
        BalanceKind::LeastRequest,
        BalanceKind::P2cEwma,
        BalanceKind::ConsistentHash,
    ];

    /// The configuration name.
    pub const fn as_str(self) -> &'static str {
        match self {
            BalanceKind::RoundRobin => "round_robin",
            BalanceKind::WeightedRoundRobin => "weighted_round_robin",
            BalanceKind::LeastRequest => "least_request",
            BalanceKind::P2cEwma => "p2c_ewma",
            BalanceKind::ConsistentHash => "consistent_hash",
        }
    }

    /// Builds a chooser for `endpoints`. `seed` varies the starting point per worker thread
    /// (round robin starts at `seed % len`) so threads do not move in lock-step; pass the
    /// worker index or a random value.
    pub fn build(self, endpoints: &[EndpointSpec], seed: u64) -> AnyBalancer {
        match self {
            BalanceKind::RoundRobin => AnyBalancer::RoundRobin(RoundRobin::with_start(
                endpoints.len(),
                usize::try_from(seed).unwrap_or(0),
            )),
            BalanceKind::WeightedRoundRobin => {
                AnyBalancer::WeightedRoundRobin(SmoothWeightedRoundRobin::new(endpoints))
            }
            BalanceKind::LeastRequest => AnyBalancer::LeastRequest(LeastRequest::new(endpoints)),
            BalanceKind::P2cEwma => {
                AnyBalancer::P2cEwma(P2cEwma::new(endpoints, P2cConfig::default()))
            }
            BalanceKind::ConsistentHash => AnyBalancer::ConsistentHash(RingHash::new(endpoints)),
        }
    }
}

impl fmt::Display for BalanceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A balancing algorithm name that is not one of [`BalanceKind`]'s.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown balance algorithm {name:?} (expected one of: round_robin, weighted_round_robin, least_request, p2c_ewma, consistent_hash)")]
pub struct UnknownBalanceKind {
    /// The name that was given.
    pub name: String,
}

impl FromStr for BalanceKind {
    type Err = UnknownBalanceKind;

    fn from_str(s: &str) -> Result<BalanceKind, UnknownBalanceKind> {
        BalanceKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownBalanceKind { name: s.to_owned() })
    }
}

/// Any of the choosers, dispatched by `match` (no `Box<dyn>` on the request path).
#[derive(Clone, Debug)]
pub enum AnyBalancer {
    /// See [`RoundRobin`].
    RoundRobin(RoundRobin),
    /// See [`SmoothWeightedRoundRobin`].
    WeightedRoundRobin(SmoothWeightedRoundRobin),
    /// See [`LeastRequest`].
    LeastRequest(LeastRequest),
    /// See [`P2cEwma`].
    P2cEwma(P2cEwma),
    /// See [`RingHash`].
    ConsistentHash(RingHash),
}

impl AnyBalancer {
    /// Which algorithm this is.
    pub const fn kind(&self) -> BalanceKind {
        match self {
            AnyBalancer::RoundRobin(_) => BalanceKind::RoundRobin,
            AnyBalancer::WeightedRoundRobin(_) => BalanceKind::WeightedRoundRobin,
            AnyBalancer::LeastRequest(_) => BalanceKind::LeastRequest,
            AnyBalancer::P2cEwma(_) => BalanceKind::P2cEwma,
            AnyBalancer::ConsistentHash(_) => BalanceKind::ConsistentHash,
        }
    }
}

impl Balancer for AnyBalancer {
    #[inline]
    fn pick(&mut self, eligible: &[usize], ctx: &PickContext) -> Option<usize> {
        match self {
            AnyBalancer::RoundRobin(b) => b.pick(eligible, ctx),
            AnyBalancer::WeightedRoundRobin(b) => b.pick(eligible, ctx),
            AnyBalancer::LeastRequest(b) => b.pick(eligible, ctx),
            AnyBalancer::P2cEwma(b) => b.pick(eligible, ctx),
            AnyBalancer::ConsistentHash(b) => b.pick(eligible, ctx),
        }
    }

    #[inline]
    fn on_start(&mut self, endpoint: usize, now: Instant) {
        match self {
            AnyBalancer::RoundRobin(b) => b.on_start(endpoint, now),
            AnyBalancer::WeightedRoundRobin(b) => b.on_start(endpoint, now),
            AnyBalancer::LeastRequest(b) => b.on_start(endpoint, now),
            AnyBalancer::P2cEwma(b) => b.on_start(endpoint, now),
            AnyBalancer::ConsistentHash(b) => b.on_start(endpoint, now),
        }
    }

    #[inline]
    fn on_end(&mut self, endpoint: usize, latency: Duration, success: bool, now: Instant) {
        match self {
            AnyBalancer::RoundRobin(b) => b.on_end(endpoint, latency, success, now),
            AnyBalancer::WeightedRoundRobin(b) => b.on_end(endpoint, latency, success, now),
            AnyBalancer::LeastRequest(b) => b.on_end(endpoint, latency, success, now),
            AnyBalancer::P2cEwma(b) => b.on_end(endpoint, latency, success, now),
            AnyBalancer::ConsistentHash(b) => b.on_end(endpoint, latency, success, now),
        }
    }
}

/// Two distinct positions in `0..len` (requires `len >= 2`) from the two halves of `random`.
#[inline]
pub(crate) fn two_distinct(len: usize, random: u64) -> (usize, usize) {
    let len64 = len as u64;
    let a = (random & 0xFFFF_FFFF) % len64;
    let mut b = (random >> 32) % (len64 - 1);
    if b >= a {
        b += 1;
    }
    // Both are below `len`, which is a usize.
    (a as usize, b as usize)
}

#[cfg(test)]
pub(crate) mod test_support {
    //! A deterministic random stream for tests (splitmix64).

    /// splitmix64 generator.
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    pub fn specs(weights: &[u32]) -> Vec<super::EndpointSpec> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &w)| super::EndpointSpec::new(&format!("10.0.0.{i}:80"), w))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::test_support::{specs, Rng};
    use super::*;

    #[test]
    fn kinds_parse_from_their_config_names_and_unknown_names_are_refused() {
        for kind in BalanceKind::ALL {
            assert_eq!(kind.as_str().parse::<BalanceKind>(), Ok(kind));
            assert_eq!(kind.build(&specs(&[1, 1]), 0).kind(), kind);
        }
        let err = "random".parse::<BalanceKind>().unwrap_err();
        assert_eq!(err.name, "random");
        assert!(err.to_string().contains("p2c_ewma"));
    }

    #[test]
    fn every_kind_returns_none_for_an_empty_eligible_set() {
        for kind in BalanceKind::ALL {
            let mut b = kind.build(&specs(&[1, 2, 3]), 7);
            let ctx = PickContext::new(Instant::ZERO, 12345).with_hash(99);
            assert_eq!(b.pick(&[], &ctx), None, "{kind}");
            assert_eq!(b.pick(&[3, 17], &ctx), None, "{kind}: out-of-range indices are ignored");
        }
    }

    #[test]
    fn every_kind_never_picks_an_endpoint_outside_the_eligible_set() {
        let mut rng = Rng(1);
        for kind in BalanceKind::ALL {
            let mut b = kind.build(&specs(&[3, 1, 2, 1, 5, 1, 1, 2, 1, 1, 4, 1]), 3);
            let mut now = Instant::ZERO;
            for round in 0..2_000u64 {
                // A changing eligible set: drop a different endpoint (and always 4) each round.
                let dropped = (round % 12) as usize;
                let eligible: Vec<usize> = (0..12).filter(|&i| i != dropped && i != 4).collect();
                let ctx = PickContext { now, random: rng.next(), hash: Some(rng.next()) };
                let picked = b.pick(&eligible, &ctx).unwrap();
                assert!(eligible.contains(&picked), "{kind} picked {picked}");
                b.on_start(picked, now);
                now += Duration::from_millis(1);
                b.on_end(picked, Duration::from_millis(1), true, now);
            }
        }
    }

    #[test]
    fn a_single_eligible_endpoint_is_always_picked() {
        for kind in BalanceKind::ALL {
            let mut b = kind.build(&specs(&[1, 1, 1]), 0);
            for r in 0..50 {
                let ctx = PickContext::new(Instant::ZERO, r).with_hash(r * 7919);
                assert_eq!(b.pick(&[2], &ctx), Some(2), "{kind}");
            }
        }
    }

    #[test]
    fn two_distinct_positions_are_distinct_and_in_range() {
        let mut rng = Rng(5);
        for len in 2..40 {
            for _ in 0..200 {
                let (a, b) = two_distinct(len, rng.next());
                assert!(a < len && b < len && a != b);
            }
        }
    }
}
