//! Linux CPU usage sampler for BBR load shedding: cgroup v2 `cpu.stat`, cgroup v1 `cpuacct`,
//! `/proc/stat` as a last resort; usage normalised to the CPU quota (or the cores) in [0, 1].
//!
//! Why: the BBR shedder (`spillway_core::overload::BbrLimiter`) needs to know whether *this
//! service* is CPU-bound. In a container that means usage against the cgroup's quota, not the
//! host's cores: a pod limited to 2 cores on a 64-core host is saturated at 3 % host usage. The
//! background task samples every 250 ms, smooths with [`CpuAverage`] and publishes into a
//! [`CpuGauge`] that any number of limiters read without locking.
//!
//! Reading a few hundred bytes from `/sys` or `/proc` is quick and never blocks on disk, so the
//! task reads them inline rather than through `spawn_blocking`.

mod parse;

pub use parse::{
    cgroup_v1_quota_cores, cgroup_v1_usage_nanos, cgroup_v2_quota_cores, cgroup_v2_usage_nanos,
    proc_stat_busy_total, self_cgroup_paths,
};

use spillway_core::overload::{CpuAverage, CpuGauge, CpuUsage};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The default sampling period (kratos samples at 250–500 ms).
pub const DEFAULT_SAMPLE_PERIOD: Duration = Duration::from_millis(250);

const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Where CPU usage is read from.
#[derive(Clone, Debug, PartialEq)]
pub enum CpuSource {
    /// cgroup v2: `<dir>/cpu.stat` (`usage_usec`) against `<dir>/cpu.max`.
    CgroupV2 {
        /// The cgroup's directory.
        dir: PathBuf,
    },
    /// cgroup v1: `<cpuacct>/cpuacct.usage` against `<cpu>/cpu.cfs_quota_us` / `cfs_period_us`.
    CgroupV1 {
        /// The `cpuacct` hierarchy directory.
        cpuacct: PathBuf,
        /// The `cpu` hierarchy directory (quota files), often the same directory.
        cpu: PathBuf,
    },
    /// `/proc/stat`: the whole machine's busy share (no container awareness).
    ProcStat,
}

/// Why CPU usage could not be sampled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CpuSamplerError {
    /// Neither cgroup v2, cgroup v1 nor `/proc/stat` is readable (not Linux, or sandboxed).
    #[error("no readable CPU usage source (cgroup v2, cgroup v1, /proc/stat)")]
    NoSource,
    /// A source file could not be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        message: String,
    },
    /// The sampler task needs a tokio runtime and was started outside one.
    #[error("the CPU sampler task must be started inside a tokio runtime")]
    NoRuntime,
    /// A source file did not have the expected format.
    #[error("unexpected format in {file}: no {what}")]
    Parse {
        /// Which file.
        file: &'static str,
        /// What was missing.
        what: &'static str,
    },
}

/// Cumulative counters, in one unit per source: CPU time used and CPU time available.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Counters {
    used: u64,
    available: u64,
}

/// Reads CPU usage from one [`CpuSource`], as the share of the allowed CPU used between two
/// samples.
#[derive(Debug)]
pub struct CpuSampler {
    source: CpuSource,
    /// Cores the process may use (cgroup sources only).
    cores: f64,
    origin: Instant,
    previous: Option<Counters>,
}

impl CpuSampler {
    /// Finds the best readable source: cgroup v2, then cgroup v1, then `/proc/stat`.
    pub fn detect() -> Result<CpuSampler, CpuSamplerError> {
        let self_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let (v2_path, v1_path) = self_cgroup_paths(&self_cgroup);
        let root = Path::new(CGROUP_ROOT);
        let mut candidates = Vec::new();
        if root.join("cgroup.controllers").exists() {
            for dir in [v2_path.as_deref().map(|p| join(root, p)), Some(root.to_path_buf())]
                .into_iter()
                .flatten()
            {
                candidates.push(CpuSource::CgroupV2 { dir });
            }
        }
        for hierarchy in ["cpuacct", "cpu,cpuacct", "cpuacct,cpu"] {
            let base = root.join(hierarchy);
            let cpu_base = root.join("cpu");
            for (cpuacct, cpu) in [
                v1_path.as_deref().map(|p| (join(&base, p), join(&cpu_base, p))),
                Some((base.clone(), cpu_base.clone())),
            ]
            .into_iter()
            .flatten()
            {
                let cpu = if cpu.join("cpu.cfs_quota_us").exists() { cpu } else { cpuacct.clone() };
                candidates.push(CpuSource::CgroupV1 { cpuacct, cpu });
            }
        }
        candidates.push(CpuSource::ProcStat);
        candidates
            .into_iter()
            .find_map(|source| CpuSampler::with_source(source).ok())
            .ok_or(CpuSamplerError::NoSource)
    }

    /// A sampler for `source`, checked by reading it once.
    pub fn with_source(source: CpuSource) -> Result<CpuSampler, CpuSamplerError> {
        let cores = match &source {
            CpuSource::CgroupV2 { dir } => {
                let max = read(&dir.join("cpu.max")).ok();
                let quota = max.as_deref().map(cgroup_v2_quota_cores).transpose()?.flatten();
                quota.unwrap_or_else(host_cores)
            }
            CpuSource::CgroupV1 { cpu, .. } => {
                let quota = read(&cpu.join("cpu.cfs_quota_us")).ok();
                let period = read(&cpu.join("cpu.cfs_period_us")).ok();
                match (quota, period) {
                    (Some(q), Some(p)) => cgroup_v1_quota_cores(&q, &p)?.unwrap_or_else(host_cores),
                    _ => host_cores(),
                }
            }
            CpuSource::ProcStat => 1.0,
        };
        let sampler = CpuSampler { source, cores, origin: Instant::now(), previous: None };
        sampler.read_counters(sampler.origin)?;
        Ok(sampler)
    }

    /// The source this sampler reads.
    pub fn source(&self) -> &CpuSource {
        &self.source
    }

    /// The CPU the process may use, in cores (1.0 for `/proc/stat`, already a share).
    pub fn cores(&self) -> f64 {
        self.cores
    }

    /// Takes a sample at `now`: the usage since the previous sample, or `None` for the first
    /// one (a share needs two readings).
    pub fn sample(&mut self, now: Instant) -> Result<Option<CpuUsage>, CpuSamplerError> {
        let current = self.read_counters(now)?;
        let usage = self.previous.map(|prev| usage_between(prev, current));
        self.previous = Some(current);
        Ok(usage)
    }

    fn read_counters(&self, now: Instant) -> Result<Counters, CpuSamplerError> {
        match &self.source {
            CpuSource::CgroupV2 { dir } => {
                let used = cgroup_v2_usage_nanos(&read(&dir.join("cpu.stat"))?)?;
                Ok(Counters { used, available: self.available_nanos(now) })
            }
            CpuSource::CgroupV1 { cpuacct, .. } => {
                let used = cgroup_v1_usage_nanos(&read(&cpuacct.join("cpuacct.usage"))?)?;
                Ok(Counters { used, available: self.available_nanos(now) })
            }
            CpuSource::ProcStat => {
                let (busy, total) = proc_stat_busy_total(&read(Path::new("/proc/stat"))?)?;
                Ok(Counters { used: busy, available: total })
            }
        }
    }

    /// CPU nanoseconds the process was allowed since the sampler's origin.
    fn available_nanos(&self, now: Instant) -> u64 {
        let wall = now.saturating_duration_since(self.origin).as_nanos() as f64;
        (wall * self.cores) as u64
    }
}

/// The share of the available CPU used between two readings, clamped to [0, 1]; idle when no
/// time passed.
fn usage_between(prev: Counters, current: Counters) -> CpuUsage {
    let used = current.used.saturating_sub(prev.used);
    let available = current.available.saturating_sub(prev.available);
    if available == 0 {
        return CpuUsage::IDLE;
    }
    CpuUsage::from_fraction(used as f64 / available as f64)
}

fn host_cores() -> f64 {
    std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
}

fn join(base: &Path, cgroup_path: &str) -> PathBuf {
    base.join(cgroup_path.trim_start_matches('/'))
}

fn read(path: &Path) -> Result<String, CpuSamplerError> {
    std::fs::read_to_string(path).map_err(|e| CpuSamplerError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Something that yields CPU usage samples: [`CpuSampler`], or a scripted source in tests.
pub trait SampleCpu: Send + 'static {
    /// The usage since the previous sample, `None` when there is no previous one yet.
    fn sample(&mut self, now: Instant) -> Result<Option<CpuUsage>, CpuSamplerError>;
}

impl SampleCpu for CpuSampler {
    fn sample(&mut self, now: Instant) -> Result<Option<CpuUsage>, CpuSamplerError> {
        CpuSampler::sample(self, now)
    }
}

/// The background sampling task; dropping it stops the task.
#[derive(Debug)]
pub struct CpuSamplerTask {
    gauge: CpuGauge,
    handle: tokio::task::JoinHandle<()>,
}

impl CpuSamplerTask {
    /// Spawns a task on the current tokio runtime that samples every `period`, smooths with
    /// `average` and publishes into `gauge`. A failing read is logged and skipped (the gauge
    /// keeps its last value). Fails outside a tokio runtime.
    pub fn spawn(
        mut sampler: impl SampleCpu,
        period: Duration,
        mut average: CpuAverage,
        gauge: CpuGauge,
    ) -> Result<CpuSamplerTask, CpuSamplerError> {
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| CpuSamplerError::NoRuntime)?;
        let published = gauge.clone();
        let handle = runtime.spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                let at = ticks.tick().await;
                match sampler.sample(at.into_std()) {
                    Ok(Some(usage)) => published.set(average.update(usage)),
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "CPU sample failed"),
                }
            }
        });
        Ok(CpuSamplerTask { gauge, handle })
    }

    /// Detects the CPU source and spawns a sampler with the defaults (250 ms, decay 0.8) into a
    /// new gauge.
    pub fn spawn_default() -> Result<CpuSamplerTask, CpuSamplerError> {
        let sampler = CpuSampler::detect()?;
        CpuSamplerTask::spawn(
            sampler,
            DEFAULT_SAMPLE_PERIOD,
            CpuAverage::default(),
            CpuGauge::new(),
        )
    }

    /// The gauge this task publishes into.
    pub fn gauge(&self) -> &CpuGauge {
        &self.gauge
    }
}

impl Drop for CpuSamplerTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[test]
    fn usage_is_used_over_available_between_readings() {
        let a = Counters { used: 1_000, available: 10_000 };
        let b = Counters { used: 4_000, available: 14_000 };
        assert_eq!(usage_between(a, b).permille(), 750);
        assert_eq!(usage_between(b, b), CpuUsage::IDLE);
        let over = Counters { used: 100_000, available: 14_000 };
        assert_eq!(usage_between(a, over), CpuUsage::FULL);
    }

    #[test]
    fn spawning_outside_a_runtime_is_an_error_not_a_panic() {
        let scripted = Scripted { usage: CpuUsage::IDLE, calls: Arc::default() };
        let task = CpuSamplerTask::spawn(
            scripted,
            DEFAULT_SAMPLE_PERIOD,
            CpuAverage::default(),
            CpuGauge::new(),
        );
        assert_eq!(task.err(), Some(CpuSamplerError::NoRuntime));
    }

    #[test]
    fn a_missing_source_is_an_error_not_a_panic() {
        let missing = CpuSource::CgroupV2 { dir: PathBuf::from("/nonexistent/spillway") };
        assert!(matches!(CpuSampler::with_source(missing), Err(CpuSamplerError::Read { .. })));
    }

    #[test]
    fn sampler_on_this_machine_reads_a_usage_between_zero_and_one() {
        let mut sampler = CpuSampler::detect().expect("this Linux machine has a CPU source");
        let start = Instant::now();
        assert_eq!(sampler.sample(start).expect("first read"), None);
        // Burn a little CPU so the counters move (a busy loop, not a sleep).
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let usage = sampler.sample(Instant::now()).expect("second read").expect("a share");
        assert!(usage.fraction() > 0.0, "{:?} read idle while spinning", sampler.source());
        assert!(usage.fraction() <= 1.0);
        assert!(sampler.cores() > 0.0);
    }

    /// A sampler that reports a fixed usage and counts its calls.
    struct Scripted {
        usage: CpuUsage,
        calls: Arc<AtomicUsize>,
    }

    impl SampleCpu for Scripted {
        fn sample(&mut self, _now: Instant) -> Result<Option<CpuUsage>, CpuSamplerError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Ok(Some(self.usage))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn task_publishes_a_smoothed_usage_every_period_and_stops_when_dropped() {
        let calls = Arc::new(AtomicUsize::new(0));
        let scripted = Scripted { usage: CpuUsage::from_permille(900), calls: calls.clone() };
        let gauge = CpuGauge::new();
        let mut average = CpuAverage::default();
        average.update(CpuUsage::IDLE); // the average starts idle: the gauge must climb
        let task = CpuSamplerTask::spawn(scripted, DEFAULT_SAMPLE_PERIOD, average, gauge.clone())
            .expect("inside a runtime");
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1, "first tick is immediate");
        let first = gauge.get().permille();
        assert_eq!(first, 180); // 0.8 × 0 + 0.2 × 900
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 11, "one sample per 250 ms");
        assert!(gauge.get().permille() > 800, "{:?}", gauge.get());
        drop(task);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 11, "no samples after the task is dropped");
    }
}
