//! End-to-end tests of the library form: real axum servers on loopback ports, a real hyper
//! client, and the server and client stacks composed as `examples/axum_service.rs` composes
//! them.
//!
//! Why: unit tests pin each layer alone; these pin what a user relies on once the layers are
//! stacked around real sockets — the answers on the wire, what a downstream receives, and
//! that refused requests never reach a handler. Every wait is bounded, and the order of
//! events is controlled with channels and `Notify` rather than sleeps.

#![allow(clippy::unwrap_used)] // a failed unwrap is a test failure

mod budget;
mod client;
mod rate_limit;
mod server;
mod support;
