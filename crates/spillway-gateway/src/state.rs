//! State shared by the workers and the control thread: the live config snapshot (swapped
//! atomically on reload), listener counters, reload status and the shutdown signal.
//!
//! The meeting point of the layers: it is built from `route` and `upstream`, read by `proxy`,
//! `listen` and `admin`, and swapped by `gateway`.

use crate::config::{Config, RouteAction};
use crate::record::RouteRecorders;
use crate::route::stats::RouteStats;
use crate::route::Router;
use crate::upstream::cluster::ClusterState;
use arc_swap::ArcSwap;
use serde::Serialize;
use spillway_core::{Clock, SystemClock};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};

/// Everything a request needs from the config, compiled; replaced whole on reload.
#[derive(Debug)]
pub struct Snapshot {
    /// The validated config.
    pub config: Arc<Config>,
    /// Compiled routes.
    pub router: Router,
    /// Clusters, in config order (routes refer to them by index).
    pub clusters: Vec<Arc<ClusterState>>,
    /// Statistics of requests no route matched.
    pub no_route: Arc<RouteStats>,
    /// 1 for the first config, +1 per successful reload.
    pub generation: u64,
    /// Admission policies of routes, clusters, listeners and levels.
    pub policies: crate::policy::Policies,
    /// Failback queues by route index (set by [`Snapshot::with_failback`]).
    pub failback: crate::failback::FailbackQueues,
}

impl Snapshot {
    /// Compiles `config`, carrying endpoint state and route statistics over from `previous`.
    /// Policies keep their state (limiter levels, learned limits, queues) when their settings
    /// did not change.
    pub fn build(
        config: Config,
        previous: Option<&Snapshot>,
        workers: usize,
        policy: &crate::policy::PolicyContext,
    ) -> Snapshot {
        let clusters: Vec<Arc<ClusterState>> = config
            .clusters
            .iter()
            .map(|c| {
                let old =
                    previous.and_then(|p| p.clusters.iter().find(|o| o.config.name == c.name));
                Arc::new(ClusterState::new(c.clone(), old.map(|o| o.as_ref())))
            })
            .collect();
        let router = Router::compile(&config, |r| {
            let cluster = match &r.action {
                RouteAction::Cluster { name, .. } => name.as_str(),
                RouteAction::Direct { .. } => "",
            };
            previous
                .and_then(|p| {
                    p.router.routes.iter().find(|o| o.name == r.name && o.stats.cluster == cluster)
                })
                .map(|o| o.stats.clone())
                .unwrap_or_else(|| Arc::new(RouteStats::new(&r.name, cluster, workers)))
        });
        let no_route = previous
            .map(|p| p.no_route.clone())
            .unwrap_or_else(|| Arc::new(RouteStats::new("", "", workers)));
        let generation = previous.map_or(1, |p| p.generation + 1);
        let policies = crate::policy::Policies::build(
            &config,
            previous.map(|p| (&p.policies, p.config.as_ref())),
            policy,
        );
        // Queues are opened (and re-attached) apart, before the swap: see `with_failback`.
        let failback = previous.map(|p| p.failback.clone()).unwrap_or_default();
        Snapshot {
            config: Arc::new(config),
            router,
            clusters,
            no_route,
            generation,
            policies,
            failback,
        }
    }
}

/// Downstream connection counters of one listener.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections open now.
    pub active: AtomicU64,
    /// Connections accepted since start.
    pub accepted: AtomicU64,
    /// Connections refused because `max_connections` was reached.
    pub refused: AtomicU64,
    /// Open connections that are dormant now (idle lean HTTP/1.1 connections held as bare
    /// sockets; counted in `active` too).
    pub dormant: AtomicU64,
}

/// Result of the last reload, shown at `GET /admin/config`.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ReloadStatus {
    /// Generation now serving.
    pub generation: u64,
    /// Reloads tried.
    pub attempts: u64,
    /// Whether the last attempt succeeded (true before any attempt).
    pub ok: bool,
    /// The last attempt's error, if it failed.
    pub error: Option<String>,
    /// Warnings of the config now serving, or notes on settings that need a restart.
    pub notes: Vec<String>,
    /// What triggered the last attempt.
    pub trigger: Option<String>,
}

/// State shared by all threads of one gateway.
pub struct Shared {
    /// The live snapshot.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// The gateway clock (request timing, ejection deadlines).
    pub clock: SystemClock,
    /// What policies are built with: the CPU gauge (sampled on the control thread) and the
    /// clock.
    pub policy: crate::policy::PolicyContext,
    /// Worker count (fixed at start).
    pub workers: usize,
    /// Listener names and counters (fixed at start).
    pub listeners: Vec<(String, Arc<ListenerStats>)>,
    /// File the config came from, for reloads.
    pub config_path: Option<PathBuf>,
    /// Last reload.
    pub reload: Mutex<ReloadStatus>,
    /// Successful reloads.
    pub reloads_ok: AtomicU64,
    /// Refused reloads.
    pub reloads_failed: AtomicU64,
    /// Set when draining (readiness turns false).
    pub draining: AtomicBool,
    /// Access-log sink.
    pub access_log: Option<Mutex<Box<dyn Write + Send>>>,
    /// Endpoint sets found by clusters' `discovery:` (laid over every new config).
    pub discovered: crate::upstream::discovery::Discovered,
    /// Each worker's running time (`listen::busy`), by worker id.
    pub worker_busy: Vec<Arc<crate::listen::busy::BusyTime>>,
}

impl Shared {
    /// Current time on the gateway clock.
    #[inline]
    pub fn now(&self) -> spillway_core::Instant {
        self.clock.now()
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("workers", &self.workers).finish_non_exhaustive()
    }
}

impl Snapshot {
    /// Gives the failback routes their queues (from
    /// [`open_queues`](crate::failback::open_queues) on the same config).
    pub fn with_failback(mut self, queues: crate::failback::FailbackQueues) -> Snapshot {
        self.failback = queues;
        self
    }

    /// The failback queue of route `index`, if it has one.
    #[inline]
    pub fn failback_queue(
        &self,
        index: usize,
    ) -> Option<&std::sync::Arc<crate::failback::FailbackQueue>> {
        self.failback.get(index)?.as_ref()
    }

    /// Gives each compiled route its recorder (from [`start_recorders`](crate::record::start_recorders) on the same config).
    pub fn with_recorders(mut self, recorders: RouteRecorders) -> Snapshot {
        for (route, recorder) in self.router.routes.iter_mut().zip(recorders) {
            route.recorder = recorder;
        }
        self
    }
}
