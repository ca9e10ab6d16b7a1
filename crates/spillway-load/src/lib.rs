//! Spillway's load tools: an open-loop HTTP load generator with HDR percentiles and weighted
//! header mixes, a capacity (knee) finder, a fixed-capacity test backend, and a traffic
//! replayer (recordings are `spillway-record`'s format).
//!
//! A library of its own so benches and tests drive it in-process; the `spillway` binary only
//! parses arguments and calls `cli`. The `tools` feature (on by default) adds the command-line
//! drivers, progress bar and plots; without it the crate skips plotters and indicatif. Pure
//! parts (schedules, knee detection, Little's-law proposals, replay timing) are plain functions
//! tested without time; [`engine`] does the I/O.

#![forbid(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used))]

#[cfg(feature = "tools")]
pub mod backend;
pub mod capacity;
#[cfg(feature = "tools")]
pub mod cli;
pub mod engine;
#[cfg(feature = "tools")]
pub mod grpc;
pub mod histogram;
pub mod mix;
#[cfg(feature = "tools")]
pub mod plot;
#[cfg(feature = "tools")]
pub mod progress;
pub mod replay;
pub mod report;
pub mod schedule;
pub mod target;
pub mod units;

pub use engine::{run, EngineConfig, Live, LoadError, Plan, RequestSpec};
pub use report::{Report, StepReport, TimelinePoint};
pub use schedule::{Ramp, Schedule, Step};
pub use target::Target;
