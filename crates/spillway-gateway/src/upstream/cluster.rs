//! Upstream clusters at run time: endpoints with their health, ejection and load state, and
//! the choice of an endpoint for a request.
//!
//! Endpoint state is shared by all workers (relaxed atomics; measured as noise here) and
//! survives a config reload when the cluster keeps the endpoint, so a reload neither forgets
//! an ejection nor marks a sick endpoint healthy.

use crate::config::{ClusterConfig, OutlierConfig};
use crate::upstream::tls::UpstreamTls;
use serde::Serialize;
use spillway_core::Instant;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// One upstream endpoint's shared state.
#[derive(Debug)]
pub struct EndpointState {
    /// Address.
    pub address: SocketAddr,
    /// The address as an HTTP/2 `:authority`, made once: requests in origin form get it.
    pub authority: Option<http::uri::Authority>,
    /// Weight from the config.
    pub weight: u32,
    /// Zone label.
    pub zone: Option<String>,
    /// Verdict of active health checking (true when no check is configured).
    pub healthy: AtomicBool,
    /// Passive: failures in a row.
    pub consecutive_failures: AtomicU32,
    /// Passive: ejected until this instant (nanoseconds of the gateway clock; 0 = not ejected).
    pub ejected_until: AtomicU64,
    /// Passive: how many times it was ejected (each ejection lasts longer).
    pub ejections: AtomicU32,
    /// Requests in flight.
    pub in_flight: AtomicU64,
    /// Upstream requests by outcome: [2xx/other, 5xx, error/timeout].
    pub outcomes: [AtomicU64; 3],
    /// Sum of response-head latencies (µs), for the mean shown by the admin API.
    pub latency_sum_us: AtomicU64,
}

impl EndpointState {
    pub(crate) fn new(address: SocketAddr, weight: u32, zone: Option<String>) -> EndpointState {
        EndpointState {
            address,
            authority: http::uri::Authority::try_from(address.to_string()).ok(),
            weight,
            zone,
            healthy: AtomicBool::new(true),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            in_flight: AtomicU64::new(0),
            outcomes: Default::default(),
            latency_sum_us: AtomicU64::new(0),
        }
    }

    /// Whether it may receive requests at `now`.
    #[inline]
    pub fn available(&self, now: Instant) -> bool {
        self.healthy.load(Relaxed) && self.ejected_until.load(Relaxed) <= now.as_nanos()
    }

    fn ejected(&self, now: Instant) -> bool {
        self.ejected_until.load(Relaxed) > now.as_nanos()
    }
}

/// How a request ended, for outlier detection and statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response that is not a 5xx.
    Success,
    /// A 5xx response.
    ServerError,
    /// Connect error, protocol error or timeout.
    Failure,
    /// A timeout while the cluster was at its concurrency limit: overload, which the adaptive
    /// limit answers; counted as a failure in statistics, never towards ejection.
    Overloaded,
}

/// A cluster at run time.
#[derive(Debug)]
pub struct ClusterState {
    /// Its config.
    pub config: ClusterConfig,
    /// Endpoints, in config order.
    pub endpoints: Vec<Arc<EndpointState>>,
    /// The TLS connector when the cluster has `tls:` (`None`: plain TCP).
    pub tls: Option<Arc<UpstreamTls>>,
}

impl ClusterState {
    /// Builds the run-time cluster, reusing endpoint state from `previous` by address (and its
    /// TLS connector, with its pooled connections, when the TLS settings did not change).
    pub fn new(config: ClusterConfig, previous: Option<&ClusterState>) -> ClusterState {
        let endpoints = config
            .endpoints
            .iter()
            .map(|e| {
                previous
                    .and_then(|p| {
                        p.endpoints.iter().find(|s| s.address == e.address && s.weight == e.weight)
                    })
                    .cloned()
                    .unwrap_or_else(|| {
                        Arc::new(EndpointState::new(e.address, e.weight, e.zone.clone()))
                    })
            })
            .collect();
        let tls = config
            .tls
            .as_ref()
            .map(|t| UpstreamTls::new(t, config.protocol, previous.and_then(|p| p.tls.as_ref())));
        ClusterState { config, endpoints, tls }
    }

    /// Writes the indices of the endpoints available at `now` into `out`; returns how many.
    /// Stops at `out.len()` endpoints. Below the panic threshold (fewer than
    /// `outlier.panic_threshold` percent of the endpoints available) every endpoint is
    /// eligible: balancing over slow or flapping endpoints beats refusing everything.
    #[inline]
    pub fn eligible(&self, now: Instant, out: &mut [usize]) -> usize {
        let mut n = 0;
        for (i, e) in self.endpoints.iter().enumerate() {
            if n == out.len() {
                break;
            }
            if e.available(now) {
                out[n] = i;
                n += 1;
            }
        }
        let total = self.endpoints.len();
        let threshold = self.config.outlier.panic_threshold as usize;
        if n * 100 < threshold * total {
            n = 0;
            for i in 0..total.min(out.len()) {
                out[i] = i;
                n += 1;
            }
        }
        n
    }

    /// Whether the cluster is in panic mode at `now` (see [`ClusterState::eligible`]).
    pub fn panicking(&self, now: Instant) -> bool {
        let available = self.endpoints.iter().filter(|e| e.available(now)).count();
        available * 100 < self.config.outlier.panic_threshold as usize * self.endpoints.len()
    }

    /// Records the outcome of a request to `endpoint` taking `latency`, ejecting it after too
    /// many failures in a row.
    pub fn record(
        &self,
        endpoint: &EndpointState,
        outcome: Outcome,
        latency: Duration,
        now: Instant,
    ) {
        let slot = match outcome {
            Outcome::Success => 0,
            Outcome::ServerError => 1,
            Outcome::Failure | Outcome::Overloaded => 2,
        };
        endpoint.outcomes[slot].fetch_add(1, Relaxed);
        endpoint.latency_sum_us.fetch_add(latency.as_micros() as u64, Relaxed);
        let o = &self.config.outlier;
        if outcome == Outcome::Overloaded {
            return;
        }
        if outcome == Outcome::Success {
            if endpoint.consecutive_failures.load(Relaxed) != 0 {
                endpoint.consecutive_failures.store(0, Relaxed);
            }
            return;
        }
        let failures = endpoint.consecutive_failures.fetch_add(1, Relaxed) + 1;
        if o.consecutive_failures == 0 || failures < o.consecutive_failures || endpoint.ejected(now)
        {
            return;
        }
        if self.may_eject(o, now) {
            let times = endpoint.ejections.fetch_add(1, Relaxed) + 1;
            let duration = o.base_ejection.saturating_mul(times).min(o.max_ejection);
            endpoint.ejected_until.store((now + duration).as_nanos(), Relaxed);
            endpoint.consecutive_failures.store(0, Relaxed);
            tracing::warn!(cluster = %self.config.name, endpoint = %endpoint.address, ?duration, "endpoint ejected after consecutive failures");
        }
    }

    /// Whether one more endpoint may be ejected: within `max_ejected_percent`, and never the
    /// last available one. Ejection is a judgement *between* endpoints ("send this traffic to
    /// the others"); with no other endpoint left it would turn a slow or struggling backend into
    /// a cluster that answers nothing at all, which is worse than slow answers.
    fn may_eject(&self, o: &OutlierConfig, now: Instant) -> bool {
        let n = self.endpoints.len();
        let ejected = self.endpoints.iter().filter(|e| e.ejected(now)).count();
        let allowed =
            (n * o.max_ejected_percent as usize / 100).max(usize::from(o.max_ejected_percent > 0));
        let available = self.endpoints.iter().filter(|e| e.available(now)).count();
        ejected < allowed && available > 1
    }

    /// A JSON view for `GET /admin/clusters`.
    pub fn view(&self, now: Instant) -> ClusterView {
        ClusterView {
            name: self.config.name.clone(),
            balance: self.config.balance.as_str().to_string(),
            endpoints: self
                .endpoints
                .iter()
                .map(|e| {
                    let requests: u64 = e.outcomes.iter().map(|o| o.load(Relaxed)).sum();
                    let until = e.ejected_until.load(Relaxed);
                    EndpointView {
                        address: e.address.to_string(),
                        weight: e.weight,
                        zone: e.zone.clone(),
                        healthy: e.healthy.load(Relaxed),
                        ejected_for_ms: (until > now.as_nanos())
                            .then(|| (until - now.as_nanos()) / 1_000_000),
                        ejections: e.ejections.load(Relaxed),
                        consecutive_failures: e.consecutive_failures.load(Relaxed),
                        in_flight: e.in_flight.load(Relaxed),
                        requests,
                        server_errors: e.outcomes[1].load(Relaxed),
                        failures: e.outcomes[2].load(Relaxed),
                        mean_latency_ms: if requests == 0 {
                            0.0
                        } else {
                            e.latency_sum_us.load(Relaxed) as f64 / requests as f64 / 1000.0
                        },
                    }
                })
                .collect(),
        }
    }
}

/// Admin view of a cluster.
#[derive(Debug, Serialize)]
pub struct ClusterView {
    /// Name.
    pub name: String,
    /// Balancing algorithm.
    pub balance: String,
    /// Endpoints.
    pub endpoints: Vec<EndpointView>,
}

/// Admin view of an endpoint.
#[derive(Debug, Serialize)]
pub struct EndpointView {
    /// Address.
    pub address: String,
    /// Weight.
    pub weight: u32,
    /// Zone.
    pub zone: Option<String>,
    /// Active health verdict.
    pub healthy: bool,
    /// Remaining ejection time, when ejected.
    pub ejected_for_ms: Option<u64>,
    /// Times ejected so far.
    pub ejections: u32,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Requests in flight.
    pub in_flight: u64,
    /// Requests answered (any outcome).
    pub requests: u64,
    /// 5xx responses.
    pub server_errors: u64,
    /// Connect errors and timeouts.
    pub failures: u64,
    /// Mean response-head latency.
    pub mean_latency_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn cluster(endpoints: &[&str]) -> ClusterState {
        let list: Vec<String> =
            endpoints.iter().map(|a| format!("{{ address: \"{a}\" }}")).collect();
        let yaml = format!(
            "listeners: [{{ name: l, address: 127.0.0.1:0 }}]\n\
             clusters:\n  - name: c\n    endpoints: [{}]\n    \
             outlier: {{ consecutive_failures: 3, max_ejected_percent: 100 }}\n\
             routes: [{{ name: r, cluster: c }}]\n",
            list.join(", ")
        );
        let config = Config::parse(&yaml, "test.yaml", std::path::Path::new("."))
            .unwrap_or_else(|e| panic!("{e}"));
        ClusterState::new(config.clusters[0].clone(), None)
    }

    #[test]
    fn a_single_endpoint_that_keeps_timing_out_is_never_ejected() {
        let c = cluster(&["127.0.0.1:1"]);
        let now = Instant::from_nanos(1_000_000_000);
        for _ in 0..50 {
            c.record(&c.endpoints[0], Outcome::Failure, Duration::from_secs(1), now);
        }
        let mut out = [0usize; 4];
        assert_eq!(c.eligible(now, &mut out), 1, "the cluster must not go dark");
    }

    #[test]
    fn below_the_panic_threshold_every_endpoint_is_eligible() {
        let c = cluster(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"]);
        let now = Instant::from_nanos(1_000_000_000);
        let mut out = [0usize; 8];
        // Two of four unhealthy: 50 % available, not below the threshold.
        c.endpoints[0].healthy.store(false, Relaxed);
        c.endpoints[1].healthy.store(false, Relaxed);
        assert_eq!(c.eligible(now, &mut out), 2);
        assert!(!c.panicking(now));
        // Three of four: 25 % available, below 50 %: all four take traffic.
        c.endpoints[2].healthy.store(false, Relaxed);
        assert_eq!(c.eligible(now, &mut out), 4);
        assert_eq!(&out[..4], &[0, 1, 2, 3]);
        assert!(c.panicking(now));
    }

    #[test]
    fn timeouts_under_a_full_concurrency_limit_never_eject() {
        let c = cluster(&["127.0.0.1:1", "127.0.0.1:2"]);
        let now = Instant::from_nanos(1_000_000_000);
        for _ in 0..50 {
            c.record(&c.endpoints[0], Outcome::Overloaded, Duration::from_secs(1), now);
        }
        let mut out = [0usize; 4];
        assert_eq!(c.eligible(now, &mut out), 2, "overload is not a broken endpoint");
        assert_eq!(c.endpoints[0].outcomes[2].load(Relaxed), 50, "still counted as failures");
    }

    #[test]
    fn the_last_available_endpoint_is_kept_even_when_every_endpoint_fails() {
        let c = cluster(&["127.0.0.1:1", "127.0.0.1:2"]);
        let now = Instant::from_nanos(1_000_000_000);
        for _ in 0..10 {
            c.record(&c.endpoints[0], Outcome::Failure, Duration::from_millis(5), now);
            c.record(&c.endpoints[1], Outcome::Failure, Duration::from_millis(5), now);
        }
        let mut out = [0usize; 4];
        assert_eq!(c.eligible(now, &mut out), 1, "one is ejected, the other stays");
    }
}
