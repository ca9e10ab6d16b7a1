//! Starting, reloading and stopping a gateway: worker threads for traffic, one control thread
//! for everything else (admin API, health checks, signals, config-file watching).
//!
//! Reload builds and validates a complete new [`Snapshot`] before swapping it in; requests
//! already running keep the snapshot they started with, so a reload never drops one. A bad
//! config is refused, logged, and reported at `GET /admin/config`, and the old one keeps
//! serving.

use crate::config::{Config, ConfigError};
use crate::listen::server::{self, WorkerListener};
use crate::state::ListenerStats;
use crate::state::{ReloadStatus, Shared, Snapshot};
use arc_swap::ArcSwap;
use spillway_core::SystemClock;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Start-up options that differ between `spillway run` and embedding (tests, demo).
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Handle SIGHUP (reload) and SIGTERM/SIGINT (graceful shutdown).
    pub signals: bool,
    /// Reload when the config file changes on disk.
    pub watch_config: bool,
    /// Do not start the built-in CPU sampler: the embedder writes the CPU usage BBR reads into
    /// `Shared::policy.cpu` itself (an application that samples CPU already, or a test that
    /// decides when the CPU is hot).
    pub external_cpu: bool,
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A socket could not be bound.
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// A TLS certificate or key could not be loaded.
    #[error("listener `{0}`: TLS: {1}")]
    Tls(String, String),
    /// A thread or runtime could not be created.
    #[error("cannot start: {0}")]
    Runtime(std::io::Error),
    /// The access log could not be opened.
    #[error("access log: {0}")]
    AccessLog(std::io::Error),
    /// A route's traffic recording or failback queue could not start (its file or directory
    /// cannot be written, or another process holds it).
    #[error("{0}")]
    Record(ConfigError),
    /// The state directory (`state_dir`) could not be created or written.
    #[error("state_dir: {0}")]
    StateDir(crate::plans_state::PlansStateError),
}

/// The control side of a running gateway, shared with the admin API.
pub struct Control {
    /// State shared with the workers.
    pub shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    handle: Mutex<Option<tokio::runtime::Handle>>,
    /// The discovery sources a task watches now, by cluster name.
    discovering: Mutex<Vec<(String, crate::config::Discovery)>>,
    /// Itself, for the tasks it starts.
    me: std::sync::Weak<Control>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control").finish_non_exhaustive()
    }
}

impl crate::admin::AdminControl for Control {
    fn shared(&self) -> &Shared {
        &self.shared
    }

    fn reload(&self, trigger: &str) -> Result<u64, String> {
        Control::reload(self, trigger)
    }
}

impl Control {
    /// Reloads the config file; returns the new generation or why it was refused.
    pub fn reload(&self, trigger: &str) -> Result<u64, String> {
        let Some(path) = self.shared.config_path.clone() else {
            return Err("this gateway was started without a config file".to_string());
        };
        // Recorders start before the swap: one that cannot write refuses the whole reload.
        let loaded = Config::load(&path).and_then(|config| {
            let previous = self.shared.snapshot.load();
            prepare_state_dir(&config, &previous.config)?;
            let recorders = crate::record::start_recorders(&config, previous.router.recordings())?;
            let queues = crate::failback::open_queues(&config, &previous.failback)?;
            Ok((config, recorders, queues))
        });
        match loaded {
            Ok((config, recorders, queues)) => {
                Ok(self.apply_with_failback(config, recorders, queues, trigger))
            }
            Err(e) => {
                let message = match &e {
                    ConfigError::Io { .. } => e.to_string(),
                    ConfigError::Invalid { .. } => e.to_string(),
                };
                tracing::error!(trigger, error = %message, "config reload refused; the previous config keeps serving");
                self.shared.reloads_failed.fetch_add(1, Relaxed);
                let mut status = self.shared.reload.lock().unwrap_or_else(|p| p.into_inner());
                status.attempts += 1;
                status.ok = false;
                status.error = Some(message.clone());
                status.trigger = Some(trigger.to_string());
                Err(message)
            }
        }
    }

    /// Swaps in a validated config with its routes' recorders
    /// ([`crate::record::start_recorders`]); returns its generation.
    pub fn apply(
        &self,
        config: Config,
        recorders: crate::record::RouteRecorders,
        trigger: &str,
    ) -> u64 {
        let previous = self.shared.snapshot.load_full();
        let queues = match crate::failback::open_queues(&config, &previous.failback) {
            Ok(queues) => queues,
            Err(e) => {
                tracing::error!(error = %e, "failback queues not opened; failback routes answer as failfast");
                config.routes.iter().map(|_| None).collect()
            }
        };
        self.apply_with_failback(config, recorders, queues, trigger)
    }

    /// [`Control::apply`] with the failback queues already opened.
    fn apply_with_failback(
        &self,
        mut config: Config,
        recorders: crate::record::RouteRecorders,
        queues: crate::failback::FailbackQueues,
        trigger: &str,
    ) -> u64 {
        // Discovered endpoints replace the file's static ones (see `upstream::discovery`).
        self.shared.discovered.overlay(&mut config);
        let previous = self.shared.snapshot.load_full();
        let mut notes: Vec<String> = config.warnings.iter().map(|w| w.to_string()).collect();
        let old_listeners: Vec<_> =
            previous.config.listeners.iter().map(|l| (&l.name, l.address)).collect();
        let new_listeners: Vec<_> = config.listeners.iter().map(|l| (&l.name, l.address)).collect();
        if old_listeners != new_listeners {
            notes.push("listener changes take effect at the next restart".to_string());
        }
        if config.workers != self.shared.workers {
            notes.push("a new worker count takes effect at the next restart".to_string());
        }
        if config.state_dir != previous.config.state_dir {
            notes.push(match &config.state_dir {
                Some(dir) => format!(
                    "state_dir is now {}: the next plan switch writes the active plans there \
                     (a restart before it reads them from there)",
                    dir.display()
                ),
                None => "state_dir removed: plan switches are no longer saved, and active plans \
                         are forgotten at restart"
                    .to_string(),
            });
        }
        let snapshot = Arc::new(
            Snapshot::build(config, Some(&previous), self.shared.workers, &self.shared.policy)
                .with_recorders(recorders)
                .with_failback(queues),
        );
        let generation = snapshot.generation;
        self.shared.snapshot.store(snapshot.clone());
        self.shared.reloads_ok.fetch_add(1, Relaxed);
        {
            let mut status = self.shared.reload.lock().unwrap_or_else(|p| p.into_inner());
            status.generation = generation;
            status.attempts += 1;
            status.ok = true;
            status.error = None;
            status.notes = notes;
            status.trigger = Some(trigger.to_string());
        }
        tracing::info!(trigger, generation, "config reloaded");
        self.start_health_checks(&snapshot);
        self.start_failback(&snapshot);
        self.start_discovery(&snapshot);
        generation
    }

    /// Applies a newly discovered endpoint set of `cluster`: the live config with that
    /// cluster's endpoints replaced becomes a new snapshot, as a reload would.
    pub fn apply_discovered(
        &self,
        cluster: &str,
        source: &crate::config::Discovery,
        endpoints: Vec<crate::config::EndpointConfig>,
    ) {
        if !self.shared.discovered.set(cluster, source, endpoints) {
            return;
        }
        let previous = self.shared.snapshot.load_full();
        let config = (*previous.config).clone();
        let built = crate::record::start_recorders(&config, previous.router.recordings())
            .and_then(|r| Ok((r, crate::failback::open_queues(&config, &previous.failback)?)));
        match built {
            Ok((recorders, queues)) => {
                let generation = self.apply_with_failback(
                    config,
                    recorders,
                    queues,
                    &format!("discovery ({cluster})"),
                );
                tracing::info!(cluster, generation, "discovered endpoints applied");
            }
            Err(e) => tracing::error!(cluster, error = %e, "discovered endpoints not applied"),
        }
    }

    /// Starts a discovery task for each cluster of `snapshot` whose source has none yet.
    fn start_discovery(&self, snapshot: &Arc<Snapshot>) {
        let Some(handle) = self.handle.lock().ok().and_then(|h| h.clone()) else { return };
        let Some(me) = self.me.upgrade() else { return };
        let Ok(mut running) = self.discovering.lock() else { return };
        for cluster in &snapshot.config.clusters {
            let Some(source) = &cluster.discovery else { continue };
            let key = (cluster.name.clone(), source.clone());
            if running.contains(&key) {
                continue;
            }
            running.push(key);
            handle.spawn(discover(me.clone(), cluster.name.clone(), source.clone()));
        }
    }

    fn start_failback(&self, snapshot: &Arc<Snapshot>) {
        let Some(handle) = self.handle.lock().ok().and_then(|h| h.clone()) else { return };
        crate::failback::start_delivery(&handle, &self.shared, &snapshot.failback);
    }

    fn start_health_checks(&self, snapshot: &Arc<Snapshot>) {
        let Some(handle) = self.handle.lock().ok().and_then(|h| h.clone()) else { return };
        for cluster in &snapshot.clusters {
            let Some(hc) = cluster.config.health_check.clone() else { continue };
            let shared = self.shared.clone();
            let generation = snapshot.generation;
            let cluster = cluster.clone();
            handle.spawn(crate::upstream::health::run(cluster, hc, move || {
                shared.snapshot.load().generation == generation && !shared.draining.load(Relaxed)
            }));
        }
    }

    /// Starts a graceful shutdown: stop accepting, drain in-flight requests, exit.
    pub fn shutdown(&self) {
        self.shared.draining.store(true, SeqCst);
        let _ = self.shutdown.send(true);
    }
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    control: Arc<Control>,
    workers: Vec<JoinHandle<()>>,
    control_thread: Option<JoinHandle<()>>,
    stop_control: Option<tokio::sync::oneshot::Sender<()>>,
    listeners: Vec<(String, SocketAddr)>,
    admin: Option<SocketAddr>,
}

impl Gateway {
    /// Binds every listener, starts the workers and the control thread.
    pub fn start(
        config: Config,
        config_path: Option<PathBuf>,
        options: RunOptions,
    ) -> Result<Gateway, StartError> {
        let workers = config.workers.max(1);
        // Bind first: errors surface before any thread starts, and port 0 resolves once.
        let mut sockets: Vec<Vec<std::net::TcpListener>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut listeners = Vec::new();
        let mut listener_stats = Vec::new();
        let mut tls = Vec::new();
        for l in &config.listeners {
            let first =
                server::bind_reuseport(l.address).map_err(|e| StartError::Bind(l.address, e))?;
            let actual = first.local_addr().map_err(|e| StartError::Bind(l.address, e))?;
            sockets[0].push(first);
            for per_worker in sockets.iter_mut().skip(1) {
                per_worker
                    .push(server::bind_reuseport(actual).map_err(|e| StartError::Bind(actual, e))?);
            }
            listeners.push((l.name.clone(), actual));
            listener_stats.push((l.name.clone(), Arc::new(ListenerStats::default())));
            tls.push(match &l.tls {
                Some(t) => Some(
                    crate::listen::tls::acceptor(t)
                        .map_err(|e| StartError::Tls(l.name.clone(), e))?,
                ),
                None => None,
            });
        }
        let admin_socket = match &config.admin {
            Some(a) => {
                let s = std::net::TcpListener::bind(a.address)
                    .map_err(|e| StartError::Bind(a.address, e))?;
                s.set_nonblocking(true).map_err(|e| StartError::Bind(a.address, e))?;
                Some(s)
            }
            None => None,
        };
        let admin = admin_socket.as_ref().and_then(|s| s.local_addr().ok());
        let access_log: Option<Mutex<Box<dyn std::io::Write + Send>>> = match &config.access_log {
            None => None,
            Some(crate::config::AccessLogTarget::Stdout) => {
                Some(Mutex::new(Box::new(std::io::stdout())))
            }
            Some(crate::config::AccessLogTarget::File(p)) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(StartError::AccessLog)?;
                Some(Mutex::new(Box::new(std::io::LineWriter::new(f))))
            }
        };
        let mut status = ReloadStatus { generation: 1, ok: true, ..Default::default() };
        status.notes = config.warnings.iter().map(|w| w.to_string()).collect();
        let listener_configs = config.listeners.clone();
        let recorders = crate::record::start_recorders(&config, std::iter::empty())
            .map_err(StartError::Record)?;
        let queues =
            crate::failback::open_queues(&config, &Vec::new()).map_err(StartError::Record)?;
        // Before the first snapshot, so that plans switched on before a restart act on the
        // first request.
        let active_plans = match &config.state_dir {
            Some(dir) => {
                crate::plans_state::prepare_dir(dir).map_err(StartError::StateDir)?;
                crate::plans_state::restore(dir, &config.plans)
            }
            None => Default::default(),
        };
        let clock = SystemClock::new();
        let policy = crate::policy::PolicyContext {
            cpu: spillway_core::overload::CpuGauge::new(),
            clock: Arc::new(clock.clone()),
            workers,
            active_plans: Arc::new(parking_lot::Mutex::new(active_plans)),
            quota: Default::default(),
        };
        let snapshot = Snapshot::build(config, None, workers, &policy)
            .with_recorders(recorders)
            .with_failback(queues);
        let shared = Arc::new(Shared {
            snapshot: Arc::new(ArcSwap::from_pointee(snapshot)),
            clock,
            policy,
            workers,
            listeners: listener_stats.clone(),
            config_path,
            reload: Mutex::new(status),
            reloads_ok: Default::default(),
            reloads_failed: Default::default(),
            draining: Default::default(),
            access_log,
            discovered: Default::default(),
            worker_busy: (0..workers).map(|_| Default::default()).collect(),
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let control = Arc::new_cyclic(|me| Control {
            shared: shared.clone(),
            shutdown: shutdown_tx,
            handle: Mutex::new(None),
            discovering: Mutex::new(Vec::new()),
            me: me.clone(),
        });

        let mut handles = Vec::new();
        for (id, socks) in sockets.into_iter().enumerate() {
            let wl: Vec<WorkerListener> = socks
                .into_iter()
                .enumerate()
                .map(|(i, socket)| WorkerListener {
                    config: listener_configs[i].clone(),
                    socket,
                    tls: tls[i].clone(),
                    stats: listener_stats[i].1.clone(),
                })
                .collect();
            let shared = shared.clone();
            let rx = shutdown_rx.clone();
            let h = std::thread::Builder::new()
                .name(format!("spillway-worker-{id}"))
                .spawn(move || server::run_worker(id, shared, wl, rx))
                .map_err(StartError::Runtime)?;
            handles.push(h);
        }

        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let ctl = control.clone();
        let control_thread = std::thread::Builder::new()
            .name("spillway-control".into())
            .spawn(move || control_main(ctl, admin_socket, options, stop_rx, ready_tx))
            .map_err(StartError::Runtime)?;
        let _ = ready_rx.recv_timeout(Duration::from_secs(5));
        Ok(Gateway {
            control,
            workers: handles,
            control_thread: Some(control_thread),
            stop_control: Some(stop_tx),
            listeners,
            admin,
        })
    }

    /// The bound address of the listener named `name`.
    pub fn listener_address(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.iter().find(|(n, _)| n == name).map(|(_, a)| *a)
    }

    /// The bound admin address.
    pub fn admin_address(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// The control handle (reload, shutdown, shared state).
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Starts a graceful shutdown (returns at once; see [`Gateway::wait`]).
    pub fn shutdown(&self) {
        self.control.shutdown();
    }

    /// Waits until every worker has drained and stopped, then stops the control thread.
    pub fn wait(mut self) {
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
        if let Some(stop) = self.stop_control.take() {
            let _ = stop.send(());
        }
        if let Some(h) = self.control_thread.take() {
            let _ = h.join();
        }
    }
}

/// Creates the `state_dir` a reload sets or changes and checks that it can be written: one that
/// cannot refuses the reload, as a recorder that cannot write does, instead of failing the
/// next plan switch.
fn prepare_state_dir(config: &Config, previous: &Config) -> Result<(), ConfigError> {
    let Some(dir) = &config.state_dir else { return Ok(()) };
    if previous.state_dir.as_ref() == Some(dir) {
        return Ok(());
    }
    crate::plans_state::prepare_dir(dir).map_err(|e| ConfigError::Invalid {
        file: config.source.clone(),
        problems: vec![crate::config::Problem {
            line: None,
            key: "state_dir".to_string(),
            reason: e.to_string(),
        }],
    })
}

/// Watches one cluster's discovery source until the cluster (or that source) leaves the
/// config or the gateway drains: a file is read every [`FILE_POLL`] and applied when its
/// content changed; a DNS name is resolved every `refresh`. Failures keep the last good set.
///
/// [`FILE_POLL`]: crate::upstream::discovery::FILE_POLL
async fn discover(control: Arc<Control>, cluster: String, source: crate::config::Discovery) {
    use crate::config::Discovery;
    use crate::upstream::discovery::{parse_endpoints_file, resolve, FILE_POLL};
    let mut last_text: Option<String> = None;
    let mut last_error: Option<String> = None;
    loop {
        let wanted = control
            .shared
            .snapshot
            .load()
            .config
            .clusters
            .iter()
            .any(|c| c.name == cluster && c.discovery.as_ref() == Some(&source));
        if !wanted || control.shared.draining.load(Relaxed) {
            if let Ok(mut running) = control.discovering.lock() {
                running.retain(|(n, s)| !(n == &cluster && s == &source));
            }
            return;
        }
        let (found, wait) = match &source {
            Discovery::File(path) => {
                let found = match std::fs::read_to_string(path) {
                    Ok(text) if last_text.as_ref() == Some(&text) => None,
                    Ok(text) => {
                        let parsed = parse_endpoints_file(&text)
                            .map_err(|e| format!("{}: {e}", path.display()));
                        last_text = Some(text);
                        Some(parsed)
                    }
                    Err(e) => Some(Err(format!("{}: {e}", path.display()))),
                };
                (found, FILE_POLL)
            }
            Discovery::Dns { name, port, refresh } => (Some(resolve(name, *port).await), *refresh),
            Discovery::Etcd { endpoints, prefix } => {
                // A session lists then watches until etcd fails or the source leaves the
                // config (checked every second); the last good set stays meanwhile.
                let mut apply = |set: Vec<crate::config::EndpointConfig>| {
                    control.apply_discovered(&cluster, &source, set);
                };
                let session =
                    crate::upstream::discovery::etcd_session(endpoints, prefix, &mut apply);
                let still_wanted = async {
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        let wanted =
                            control.shared.snapshot.load().config.clusters.iter().any(|c| {
                                c.name == cluster && c.discovery.as_ref() == Some(&source)
                            });
                        if !wanted || control.shared.draining.load(Relaxed) {
                            return;
                        }
                    }
                };
                let ended = tokio::select! {
                    why = session => Some(Err(why)),
                    _ = still_wanted => None,
                };
                (ended, Duration::from_secs(1))
            }
        };
        match found {
            Some(Ok(endpoints)) => {
                last_error = None;
                control.apply_discovered(&cluster, &source, endpoints);
            }
            // Counted once per distinct failure, not once per poll of a missing file.
            Some(Err(why)) if last_error.as_ref() != Some(&why) => {
                tracing::warn!(cluster, error = %why, "discovery failed; the last good endpoints stay");
                control.shared.discovered.failed(&cluster, &source, why.clone());
                last_error = Some(why);
            }
            Some(Err(_)) | None => {}
        }
        tokio::time::sleep(wait).await;
    }
}

fn control_main(
    control: Arc<Control>,
    admin: Option<std::net::TcpListener>,
    options: RunOptions,
    stop: tokio::sync::oneshot::Receiver<()>,
    ready: std::sync::mpsc::Sender<()>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "control runtime failed to start");
            return;
        }
    };
    rt.block_on(async move {
        if let Ok(mut h) = control.handle.lock() {
            *h = Some(tokio::runtime::Handle::current());
        }
        control.start_health_checks(&control.shared.snapshot.load_full());
        control.start_failback(&control.shared.snapshot.load_full());
        control.start_discovery(&control.shared.snapshot.load_full());
        // CPU usage for BBR: sampled every 250 ms (cgroup v2/v1 aware, /proc/stat otherwise)
        // into the gauge every BBR limiter reads. Without a readable source BBR sees 0 % and
        // never sheds, which the log says.
        let detected = (!options.external_cpu).then(spillway_tower::cpu::CpuSampler::detect);
        let _cpu_sampler = match detected {
            None => None,
            Some(Ok(sampler)) => spillway_tower::cpu::CpuSamplerTask::spawn(
                sampler,
                spillway_tower::cpu::DEFAULT_SAMPLE_PERIOD,
                spillway_core::overload::CpuAverage::default(),
                control.shared.policy.cpu.clone(),
            )
            .map_err(|e| tracing::warn!(error = %e, "CPU sampler not started: BBR never sheds"))
            .ok(),
            Some(Err(e)) => {
                tracing::warn!(error = %e, "no CPU usage source: BBR never sheds");
                None
            }
        };
        if let Some(socket) = admin {
            match tokio::net::TcpListener::from_std(socket) {
                Ok(l) => {
                    tokio::spawn(crate::admin::serve(l, control.clone()));
                }
                Err(e) => tracing::error!(error = %e, "admin listener unusable"),
            }
        }
        let (reload_tx, mut reload_rx) = mpsc::unbounded_channel::<&'static str>();
        if options.signals {
            spawn_signal_handlers(control.clone(), reload_tx.clone());
        }
        let _watcher =
            if options.watch_config { watch_file(&control, reload_tx.clone()) } else { None };
        {
            let control = control.clone();
            tokio::spawn(async move {
                while let Some(trigger) = reload_rx.recv().await {
                    // Debounce: editors write files in several steps.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    while reload_rx.try_recv().is_ok() {}
                    let _ = control.reload(trigger);
                }
            });
        }
        let _ = ready.send(());
        let _ = stop.await;
    });
}

fn spawn_signal_handlers(control: Arc<Control>, reload: mpsc::UnboundedSender<&'static str>) {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::spawn(async move {
        let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers");
            return;
        };
        loop {
            tokio::select! {
                _ = hup.recv() => { let _ = reload.send("SIGHUP"); }
                _ = term.recv() => { tracing::info!("SIGTERM: draining"); control.shutdown(); }
                _ = int.recv() => { tracing::info!("SIGINT: draining"); control.shutdown(); }
            }
        }
    });
}

fn watch_file(
    control: &Control,
    reload: mpsc::UnboundedSender<&'static str>,
) -> Option<crate::config_watch::ConfigWatch> {
    let path = control.shared.config_path.as_deref()?;
    crate::config_watch::watch(path, reload)
        .map_err(|e| tracing::warn!(error = %e, "cannot watch the config file"))
        .ok()
}
