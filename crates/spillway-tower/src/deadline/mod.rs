//! Deadline / timeout layers: honour an incoming `grpc-timeout` or `x-request-timeout`,
//! propagate the remaining budget downstream, fail fast when too little is left, and put a
//! timeout on everything else so nothing waits forever.
//!
//! The decisions are `spillway_core::deadline`'s; this module adds the clock, the timers and
//! the plumbing:
//! - [`DeadlineLayer`] (server side) turns the incoming budget into a [`Deadline`] under the
//!   route's [`DeadlinePolicy`], refuses with [`RejectReason::DeadlineExceeded`] (504) when
//!   too little is left, and otherwise runs the inner service under a timer at the deadline.
//!   The deadline goes into the request's extensions and into a task-local for the handler.
//! - [`PropagateDeadlineLayer`] (client side) writes what is left, minus a margin, onto each
//!   outgoing request (`grpc-timeout` for gRPC, else `x-request-timeout`) and stops waiting at
//!   the deadline.
//! - [`TimeoutLayer`] is a plain timeout with a deliberate default, for stacks with no
//!   deadline.
//!
//! Inheritance: outgoing calls made by a handler inside the server's response future see the
//! server's deadline through the task-local ([`current`]); work moved to another task with
//! `tokio::spawn` takes it along with [`inherit`], which carries the criticality and the cost
//! budget too.
//!
//! [`RejectReason::DeadlineExceeded`]: spillway_core::RejectReason::DeadlineExceeded

mod client;
mod future;
mod server;
mod timeout;

pub use client::{PropagateDeadline, PropagateDeadlineLayer};
pub use future::{is_timed_out, ResponseFuture, TimedOut};
pub use server::{DeadlineLayer, DeadlineService};
pub use spillway_core::deadline::{Deadline, DeadlinePolicy};
pub use timeout::{Timeout, TimeoutLayer};

pub use crate::time::TokioClock;
use crate::{budget, criticality};
use std::future::Future;
use tokio::task::futures::TaskLocalFuture;

tokio::task_local! {
    static CURRENT: Deadline;
}

/// The deadline of the request the current task is serving, if a [`DeadlineLayer`] (or
/// [`scope`]) set one.
pub fn current() -> Option<Deadline> {
    CURRENT.try_with(|d| *d).ok()
}

/// Runs `future` with `deadline` as the current deadline.
pub fn scope<F: Future>(deadline: Deadline, future: F) -> TaskLocalFuture<Deadline, F> {
    CURRENT.scope(deadline, future)
}

/// Wraps `future` so that it runs with the current task's deadline, criticality and cost
/// budget ([`budget::current`]), wherever it is polled: use it for
/// work handed to `tokio::spawn` on behalf of the current request. The budget is the same
/// shared balance, not a copy.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use spillway_tower::deadline::{self, Deadline, TokioClock};
/// use spillway_core::Clock;
/// let d = Deadline::after(TokioClock.now(), std::time::Duration::from_secs(1));
/// let seen = deadline::scope(d, async {
///     tokio::spawn(deadline::inherit(async { deadline::current() })).await
/// });
/// assert_eq!(seen.await.ok().flatten(), Some(d));
/// # }
/// ```
pub fn inherit<F: Future>(future: F) -> impl Future<Output = F::Output> {
    let deadline = current();
    let class = criticality::current();
    let cost_budget = budget::current();
    let with_deadline_and_class = async move {
        match (deadline, class) {
            (Some(d), Some(c)) => CURRENT.scope(d, criticality::scope(c, future)).await,
            (Some(d), None) => CURRENT.scope(d, future).await,
            (None, Some(c)) => criticality::scope(c, future).await,
            (None, None) => future.await,
        }
    };
    async move {
        match cost_budget {
            Some(b) => budget::scope(b, with_deadline_and_class).await,
            None => with_deadline_and_class.await,
        }
    }
}
