//! CPU usage as the overload algorithms see it: a per-mille value, a shared gauge that a sampler
//! writes and limiters read, and the moving average that smooths raw samples.
//!
//! Reading the CPU is I/O and lives at the edge (`spillway-tower`'s sampler); the algorithms
//! only ever receive the number. One [`CpuGauge`] can feed any number of limiters, so a process
//! samples its CPU once however many routes it protects.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// CPU usage in per-mille of the CPU the process may use (its cgroup quota or its cores):
/// 0 is idle, 1000 is every allowed core busy. Values above 1000 are clamped.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpuUsage(u16);

impl CpuUsage {
    /// Idle.
    pub const IDLE: CpuUsage = CpuUsage(0);
    /// Every allowed core busy.
    pub const FULL: CpuUsage = CpuUsage(1000);

    /// Usage in per-mille, clamped to 1000.
    #[inline]
    pub const fn from_permille(permille: u32) -> CpuUsage {
        CpuUsage(if permille > 1000 { 1000 } else { permille as u16 })
    }

    /// Usage as a fraction of the allowed CPU (0.8 is 80 %), clamped to [0, 1]; NaN is idle.
    #[inline]
    pub fn from_fraction(fraction: f64) -> CpuUsage {
        if fraction.is_nan() || fraction <= 0.0 {
            CpuUsage::IDLE
        } else {
            // In [0, 1000] after the clamp, so the cast cannot truncate.
            CpuUsage((fraction.min(1.0) * 1000.0).round() as u16)
        }
    }

    /// Usage in per-mille, 0 to 1000.
    #[inline]
    pub const fn permille(self) -> u32 {
        self.0 as u32
    }

    /// Usage as a fraction, 0.0 to 1.0.
    #[inline]
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / 1000.0
    }
}

/// A shared, lock-free CPU usage value: a sampler [`set`](CpuGauge::set)s it, limiters
/// [`get`](CpuGauge::get) it on every request. Clones share the value.
#[derive(Clone, Debug, Default)]
pub struct CpuGauge(Arc<AtomicU32>);

impl CpuGauge {
    /// A gauge reading idle.
    pub fn new() -> CpuGauge {
        CpuGauge::default()
    }

    /// Publishes a new usage.
    #[inline]
    pub fn set(&self, usage: CpuUsage) {
        self.0.store(usage.permille(), Ordering::Relaxed);
    }

    /// The latest published usage.
    #[inline]
    pub fn get(&self) -> CpuUsage {
        CpuUsage::from_permille(self.0.load(Ordering::Relaxed))
    }
}

/// An exponentially weighted moving average of CPU samples:
/// `avg ← avg × decay + sample × (1 − decay)`.
///
/// kratos uses `decay = 0.95` (one sample every 250–500 ms): its average needs about 30 samples
/// (8–15 s) to climb from idle to an 80 % threshold under full load, which lets a flood run for
/// seconds before shedding starts. Spillway's default, [`CpuAverage::DEFAULT_DECAY`] = 0.8 at
/// 250 ms, reaches 80 % of a step in about 7 samples (1.8 s) and halves a one-sample spike's
/// effect every 3 samples: smooth enough to ignore a single busy sample, fast enough to act within
/// two seconds. The first sample is taken as is, so a process does not start from a fake idle.
#[derive(Clone, Debug)]
pub struct CpuAverage {
    decay: f64,
    value: Option<f64>,
}

impl CpuAverage {
    /// The default decay per sample (for a 250 ms sampling period).
    pub const DEFAULT_DECAY: f64 = 0.8;

    /// An empty average with `decay` per sample, which must be in `[0, 1)` (0 keeps only the
    /// latest sample).
    pub fn new(decay: f64) -> Result<CpuAverage, InvalidDecay> {
        if (0.0..1.0).contains(&decay) {
            Ok(CpuAverage { decay, value: None })
        } else {
            Err(InvalidDecay(decay))
        }
    }

    /// Adds a sample and returns the new average.
    pub fn update(&mut self, sample: CpuUsage) -> CpuUsage {
        let x = sample.fraction();
        let next = match self.value {
            None => x,
            Some(prev) => prev * self.decay + x * (1.0 - self.decay),
        };
        self.value = Some(next);
        CpuUsage::from_fraction(next)
    }

    /// The current average (idle before the first sample).
    pub fn get(&self) -> CpuUsage {
        self.value.map_or(CpuUsage::IDLE, CpuUsage::from_fraction)
    }
}

impl Default for CpuAverage {
    fn default() -> Self {
        CpuAverage { decay: CpuAverage::DEFAULT_DECAY, value: None }
    }
}

/// A moving-average decay outside `[0, 1)`.
#[derive(Copy, Clone, Debug, PartialEq, thiserror::Error)]
#[error("CPU moving-average decay must be in [0, 1), got {0}")]
pub struct InvalidDecay(pub f64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_clamped_to_the_allowed_cpu() {
        assert_eq!(CpuUsage::from_permille(1500), CpuUsage::FULL);
        assert_eq!(CpuUsage::from_fraction(2.5), CpuUsage::FULL);
        assert_eq!(CpuUsage::from_fraction(-1.0), CpuUsage::IDLE);
        assert_eq!(CpuUsage::from_fraction(f64::NAN), CpuUsage::IDLE);
        assert_eq!(CpuUsage::from_fraction(0.8).permille(), 800);
    }

    #[test]
    fn gauge_clones_share_the_published_value() {
        let gauge = CpuGauge::new();
        let reader = gauge.clone();
        gauge.set(CpuUsage::from_permille(650));
        assert_eq!(reader.get().permille(), 650);
    }

    #[test]
    fn average_starts_at_the_first_sample_then_follows_a_step_within_seven_samples() {
        let mut avg = CpuAverage::default();
        assert_eq!(avg.update(CpuUsage::from_permille(100)).permille(), 100);
        let mut samples = 0;
        while avg.get().permille() < 800 {
            avg.update(CpuUsage::FULL);
            samples += 1;
        }
        assert!((6..=8).contains(&samples), "took {samples} samples");
    }

    #[test]
    fn average_damps_a_single_spike() {
        let mut avg = CpuAverage::default();
        avg.update(CpuUsage::from_permille(300));
        let after_spike = avg.update(CpuUsage::FULL);
        assert!(after_spike.permille() < 500, "{after_spike:?}");
    }

    #[test]
    fn decay_outside_zero_to_one_is_refused() {
        assert!(CpuAverage::new(1.0).is_err());
        assert!(CpuAverage::new(-0.1).is_err());
        assert!(CpuAverage::new(f64::NAN).is_err());
        assert!(CpuAverage::new(0.0).is_ok());
    }
}
