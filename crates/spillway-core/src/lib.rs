//! Spillway's algorithm core: pure, clock-driven state machines for keeping services up under
//! load — rate limiters, adaptive overload protection, breakers, retries, deadlines, bulkheads,
//! load-balancing choosers and max-min fair shares.
//!
//! Nothing here performs I/O, spawns, sleeps or reads the system clock: every algorithm takes
//! `now` (an [`Instant`] from a [`Clock`]) and returns a decision value such as
//! [`Decision::Reject`]. The tower layers (`spillway-tower`) and the gateway
//! (`spillway-gateway`) put these cores on the request path.
//!
//! ```
//! use spillway_core::{Clock, ManualClock, Criticality};
//! let clock = ManualClock::new();
//! clock.advance_ms(5);
//! assert_eq!(clock.now().as_nanos(), 5_000_000);
//! assert_eq!("sheddable".parse::<Criticality>(), Ok(Criticality::Sheddable));
//! ```

#![forbid(unsafe_code)]

pub mod balance;
pub mod breaker;
pub mod bulkhead;
pub mod clock;
pub mod concurrency;
pub mod criticality;
pub mod deadline;
pub mod decision;
pub mod fair_share;
pub mod overload;
pub mod rate;
pub mod retry;
pub mod window;

pub use clock::{Clock, Instant, ManualClock, SystemClock};
pub use criticality::{Criticality, CRITICALITY_HEADER};
pub use decision::{Decision, RejectReason, Rejection};
pub use window::RollingWindow;
