//! The upstream side: clusters and their endpoints' run-time state, the hyper path's
//! per-worker connection pool and its HTTP/1.1 client over the lean path's sockets, TLS
//! towards upstreams, and active health checks.
//!
//! Grouped because they are what a route points at: a change to how endpoints are judged,
//! connected to or probed belongs here. Endpoint choice itself is `spillway_core::balance`,
//! driven by the proxy's `Worker`.

pub mod cluster;
pub mod discovery;
pub mod h1_client;
pub mod h2_client;
pub mod h2_write;
pub mod health;
pub mod pool;
pub mod tls;
