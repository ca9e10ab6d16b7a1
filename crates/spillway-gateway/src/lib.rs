//! Spillway's reverse proxy: config, routing, clusters, balancing, health checks, timeouts,
//! hot reload, admin API and Prometheus metrics.
//!
//! Start with [`Config::load`] and [`Gateway::start`]; `spillway run`, `check` and `demo` are
//! thin wrappers around them.

#![forbid(unsafe_code)]

pub mod admin;
pub mod check;
pub mod config;
pub mod config_watch;
pub mod demo;
pub mod edge;
pub mod failback;
pub mod gateway;
pub mod listen;
pub mod plans_state;
pub mod policy;
pub mod proxy;
pub mod record;
pub mod route;
pub mod state;
pub mod upstream;

pub use config::{Config, ConfigError, Problem};
pub use gateway::{Gateway, RunOptions, StartError};
