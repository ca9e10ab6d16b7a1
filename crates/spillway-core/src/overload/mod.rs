//! Adaptive overload protection: the BBR-style CPU + inflight shedder (kratos), CoDel queue
//! admission and the adaptive-LIFO switch.
//!
//! These protect a service from itself: they refuse work the service has shown it cannot
//! finish in time, rather than enforcing a rate someone configured. All are pure: CPU usage and
//! time come in as values ([`CpuUsage`], `now`); sampling the CPU is the tower crate's job.

mod bbr;
mod codel;
mod cpu;
mod shares;

pub use bbr::{BbrConfig, BbrConfigError, BbrLimiter, BbrStats, BbrToken};
pub use codel::{Codel, CodelConfig, CodelConfigError, CodelVerdict, ServeOrder};
pub use cpu::{CpuAverage, CpuGauge, CpuUsage, InvalidDecay};
pub use shares::{ClassShares, ClassSharesError};
