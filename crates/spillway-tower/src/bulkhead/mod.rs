//! Bulkhead layer: bounded concurrency plus a bounded, criticality-ordered queue with a
//! maximum wait.
//!
//! The counting and ordering are `spillway_core::bulkhead::Bulkhead`'s; this layer adds what a
//! pure state machine cannot do: waiting. All services made from one [`BulkheadLayer`] share
//! one bulkhead, guarded by a short, never-awaited-across `Mutex` that also holds one
//! `tokio::sync::oneshot` sender per waiter. A request that must wait parks on its receiver
//! under a timer; whoever frees a slot pops the next waiter from the core and sends it the
//! slot, so wake-ups follow the core's order exactly (highest criticality, then oldest).
//!
//! No slot leaks, whatever happens to a request:
//! - a running request holds a `Permit` that gives the slot back (or passes it to the next
//!   waiter) when the inner response future completes or is dropped;
//! - a waiting request that times out or is dropped cancels its ticket under the lock; if the
//!   slot was handed to it in the meantime, it passes the slot on.
//!
//! The slot is held until the inner service has produced its response (the head); streaming
//! the body happens outside the bulkhead.

mod future;

pub use future::ResponseFuture;
pub use spillway_core::bulkhead::{BulkheadConfig, BulkheadConfigError};

use crate::criticality;
use crate::deadline::{self, TokioClock};
use crate::rejection::BoxError;
use future::{Permit, WaitGuard, Wake};
use http::Request;
use parking_lot::Mutex;
use spillway_core::bulkhead::{Acquire, Bulkhead};
use spillway_core::deadline::Deadline;
use spillway_core::{Clock, Instant, RejectReason, Rejection};
use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::oneshot;
use tower_layer::Layer;
use tower_service::Service;

/// Limits concurrency with a criticality-ordered waiting queue. See the module docs.
///
/// Over the limit a request waits in the queue at most `max_wait` (or until its deadline, if
/// sooner), and is refused at once when the queue is full of requests at least as critical:
/// [`RejectReason::BulkheadFull`] / [`RejectReason::QueueTimeout`] (503 with `Retry-After`),
/// or [`RejectReason::DeadlineExceeded`] when the deadline ran out first. The class comes from
/// [`criticality::of_request`]. Requires a `Clone` inner service (a waiting request calls its
/// own clone).
///
/// ```
/// use std::time::Duration;
/// use spillway_tower::bulkhead::{BulkheadConfig, BulkheadLayer};
/// let layer = BulkheadLayer::try_new(BulkheadConfig::new(64, 128, Duration::from_millis(200)))?;
/// assert_eq!(layer.in_flight(), 0);
/// # Ok::<(), spillway_tower::bulkhead::BulkheadConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct BulkheadLayer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    core: Bulkhead,
    /// One sender per queued ticket, by ticket id. Changed only together with `core`.
    waiters: HashMap<u64, oneshot::Sender<Wake>>,
}

impl Shared {
    /// Gives a slot back: passes it to the next waiter still listening, else frees it.
    fn release(&self, now: Instant) {
        let mut state = self.state.lock();
        state.release(now);
    }
}

impl State {
    fn release(&mut self, now: Instant) {
        while let Some(granted) = self.core.release(now) {
            // The slot now belongs to the granted waiter. If it is gone (cannot happen while
            // waiters and queue change together under the lock), release again.
            if let Some(tx) = self.waiters.remove(&granted.ticket.id()) {
                if tx.send(Wake::Granted).is_ok() {
                    return;
                }
            }
        }
    }
}

impl BulkheadLayer {
    /// A layer (and the one bulkhead all its services share) with these limits.
    pub fn try_new(config: BulkheadConfig) -> Result<Self, BulkheadConfigError> {
        let core = Bulkhead::try_new(config)?;
        let state = State { core, waiters: HashMap::with_capacity(config.max_queue.min(1024)) };
        Ok(BulkheadLayer { shared: Arc::new(Shared { state: Mutex::new(state) }) })
    }

    /// Requests holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.shared.state.lock().core.in_flight()
    }

    /// Requests waiting now.
    pub fn queued(&self) -> usize {
        self.shared.state.lock().core.queued()
    }

    /// The limits.
    pub fn config(&self) -> BulkheadConfig {
        *self.shared.state.lock().core.config()
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService { inner, shared: self.shared.clone() }
    }
}

/// The service made by [`BulkheadLayer`].
#[derive(Clone, Debug)]
pub struct BulkheadService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, B> Service<Request<B>> for BulkheadService<S>
where
    S: Service<Request<B>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Request<B>>;

    /// Always ready: the bulkhead decides per request (it needs the request's class), and the
    /// response future readies its own clone of the inner service once it holds a slot.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let class = criticality::of_request(&req);
        let deadline = req.extensions().get::<Deadline>().copied().or_else(deadline::current);
        let now = TokioClock.now();
        let mut state = self.shared.state.lock();
        match state.core.try_acquire(class, now) {
            Acquire::Acquired => {
                drop(state);
                let permit = Permit::new(self.shared.clone());
                ResponseFuture::ready(permit, self.inner.clone(), req)
            }
            Acquire::Queued { ticket, displaced } => {
                if let Some(out) = displaced.and_then(|d| state.waiters.remove(&d.id())) {
                    let _ = out.send(Wake::Refused(state.core.bulkhead_full()));
                }
                let (tx, rx) = oneshot::channel();
                state.waiters.insert(ticket.id(), tx);
                let max_wait = state.core.config().max_wait;
                let queue_timeout = state.core.queue_timeout();
                drop(state);
                // Wait no longer than the request's deadline: past it, the answer is useless.
                let (wait, on_timeout) = match deadline.map(|d| d.remaining(now)) {
                    Some(left) if left < max_wait => {
                        (left, Rejection::new(RejectReason::DeadlineExceeded))
                    }
                    _ => (max_wait, queue_timeout),
                };
                let guard = WaitGuard::new(self.shared.clone(), ticket, rx);
                ResponseFuture::waiting(guard, wait, on_timeout, self.inner.clone(), req)
            }
            Acquire::Rejected(rejection) => ResponseFuture::refused(rejection),
        }
    }
}

#[cfg(test)]
mod tests;
