//! Spillway's reverse proxy: config, routing, clusters, balancing, health checks, timeouts, hot reload, admin API and Prometheus metrics.

#![forbid(unsafe_code)]

pub mod check;
pub mod config;

pub use config::{Config, ConfigError, Problem};
