//! Spillway's reverse proxy: config, routing, clusters, balancing, health checks, timeouts, hot reload, admin API and Prometheus metrics.
