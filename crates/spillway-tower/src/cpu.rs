//! Linux CPU usage sampler for BBR load shedding: cgroup v2 `cpu.stat`, cgroup v1 `cpuacct`, `/proc/stat` fallback; CPU-quota aware.
