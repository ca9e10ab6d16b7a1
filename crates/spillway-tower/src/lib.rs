//! tower layers that put Spillway's resilience algorithms (`spillway-core`) inside a Rust
//! service: axum, tonic and hyper stacks get the same rate limiting, load shedding, bulkheads,
//! breakers, retries, deadlines, criticality propagation and cost budgets as the gateway.
//!
//! Layers refuse a request by failing with a [`Rejected`] error that carries the core's
//! [`Rejection`](spillway_core::Rejection); [`rejection_response`] turns it into the HTTP
//! answer (status, `Retry-After`, small JSON body), so every layer rejects alike.

#![forbid(unsafe_code)]

pub mod breaker;
pub mod budget;
pub mod bulkhead;
pub mod cpu;
pub mod criticality;
pub mod deadline;
pub mod guarded;
pub mod load_shed;
pub mod rate_limit;
pub mod rejection;
pub mod retry;
pub mod throttle;
pub mod time;

pub use rejection::{rejection_response, rejection_response_for, BoxError, Rejected};
