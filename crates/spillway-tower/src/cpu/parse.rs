//! Pure parsers for the kernel files the CPU sampler reads, tested with fixture strings so every
//! format is pinned without needing the matching kernel.

use super::CpuSamplerError;

/// Cumulative CPU time used (`cpu.stat` `usage_usec`, cgroup v2), in nanoseconds.
pub fn cgroup_v2_usage_nanos(cpu_stat: &str) -> Result<u64, CpuSamplerError> {
    cpu_stat
        .lines()
        .find_map(|line| line.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|usec| usec.saturating_mul(1_000))
        .ok_or(CpuSamplerError::Parse { file: "cpu.stat", what: "usage_usec" })
}

/// The CPU quota in cores from cgroup v2 `cpu.max` (`"<quota> <period>"` or `"max <period>"`);
/// `None` when unlimited.
pub fn cgroup_v2_quota_cores(cpu_max: &str) -> Result<Option<f64>, CpuSamplerError> {
    let err = CpuSamplerError::Parse { file: "cpu.max", what: "quota and period" };
    let mut fields = cpu_max.split_whitespace();
    let quota = fields.next().ok_or(err.clone())?;
    let period: f64 = fields.next().and_then(|p| p.parse().ok()).ok_or(err.clone())?;
    if quota == "max" {
        return Ok(None);
    }
    let quota: f64 = quota.parse().map_err(|_| err.clone())?;
    quota_cores(quota, period).ok_or(err)
}

/// The CPU quota in cores from cgroup v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us`; `None`
/// when unlimited (quota -1).
pub fn cgroup_v1_quota_cores(quota: &str, period: &str) -> Result<Option<f64>, CpuSamplerError> {
    let err = CpuSamplerError::Parse { file: "cpu.cfs_quota_us", what: "quota and period" };
    let quota: i64 = quota.trim().parse().map_err(|_| err.clone())?;
    if quota < 0 {
        return Ok(None);
    }
    let period: f64 = period.trim().parse().map_err(|_| err.clone())?;
    quota_cores(quota as f64, period).ok_or(err)
}

fn quota_cores(quota: f64, period: f64) -> Option<Option<f64>> {
    (quota > 0.0 && period > 0.0).then_some(Some(quota / period))
}

/// Cumulative CPU time used from cgroup v1 `cpuacct.usage`, in nanoseconds.
pub fn cgroup_v1_usage_nanos(cpuacct_usage: &str) -> Result<u64, CpuSamplerError> {
    cpuacct_usage
        .trim()
        .parse()
        .map_err(|_| CpuSamplerError::Parse { file: "cpuacct.usage", what: "nanoseconds" })
}

/// `(busy, total)` jiffies of the whole machine from `/proc/stat`'s first (`cpu`) line; idle and
/// iowait are not busy. Guest time is already inside user time and is not added twice.
pub fn proc_stat_busy_total(proc_stat: &str) -> Result<(u64, u64), CpuSamplerError> {
    let err = CpuSamplerError::Parse { file: "/proc/stat", what: "cpu line" };
    let line = proc_stat.lines().find(|l| l.starts_with("cpu ")).ok_or(err.clone())?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| err.clone())?;
    if fields.len() < 4 {
        return Err(err);
    }
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Ok((total.saturating_sub(idle), total))
}

/// This process's cgroup paths from `/proc/self/cgroup`: the v2 (unified, `0::`) path and the
/// v1 path of the hierarchy holding `cpuacct`.
pub fn self_cgroup_paths(self_cgroup: &str) -> (Option<String>, Option<String>) {
    let mut v2 = None;
    let mut v1 = None;
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2 = Some(path.to_owned());
        } else if controllers.split(',').any(|c| c == "cpuacct") {
            v1 = Some(path.to_owned());
        }
    }
    (v2, v1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_v2_usage_is_read_from_usage_usec() {
        let stat = "usage_usec 1234567\nuser_usec 1000000\nsystem_usec 234567\nnr_periods 0\n";
        assert_eq!(cgroup_v2_usage_nanos(stat), Ok(1_234_567_000));
        assert!(cgroup_v2_usage_nanos("user_usec 5\n").is_err());
    }

    #[test]
    fn cgroup_v2_cpu_max_gives_cores_or_unlimited() {
        assert_eq!(cgroup_v2_quota_cores("max 100000\n"), Ok(None));
        assert_eq!(cgroup_v2_quota_cores("150000 100000\n"), Ok(Some(1.5)));
        assert!(cgroup_v2_quota_cores("garbage").is_err());
        assert!(cgroup_v2_quota_cores("0 100000").is_err());
    }

    #[test]
    fn cgroup_v1_quota_minus_one_is_unlimited() {
        assert_eq!(cgroup_v1_quota_cores("-1\n", "100000\n"), Ok(None));
        assert_eq!(cgroup_v1_quota_cores("200000\n", "100000\n"), Ok(Some(2.0)));
        assert!(cgroup_v1_quota_cores("x", "100000").is_err());
        assert_eq!(cgroup_v1_usage_nanos("1380321143487\n"), Ok(1_380_321_143_487));
    }

    #[test]
    fn proc_stat_counts_idle_and_iowait_as_not_busy() {
        let stat = "cpu  100 5 50 800 40 3 2 0 10 0\ncpu0 50 2 25 400 20 1 1 0 5 0\nintr 1\n";
        // total = 100+5+50+800+40+3+2+0 = 1000 (guest already in user); idle = 800+40.
        assert_eq!(proc_stat_busy_total(stat), Ok((160, 1000)));
        assert!(proc_stat_busy_total("intr 1\n").is_err());
    }

    #[test]
    fn self_cgroup_yields_the_unified_and_cpuacct_paths() {
        let hybrid = "9:name=systemd:/\n2:cpu,cpuacct:/docker/abc\n0::/system.slice\n";
        assert_eq!(
            self_cgroup_paths(hybrid),
            (Some("/system.slice".to_owned()), Some("/docker/abc".to_owned()))
        );
        assert_eq!(self_cgroup_paths("0::/\n"), (Some("/".to_owned()), None));
    }
}
