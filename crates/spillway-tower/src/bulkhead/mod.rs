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
mod shared;

pub use future::ResponseFuture;
pub use shared::{BulkheadPermit, Entry, SharedBulkhead, SharedBulkheadError, Waiting};
pub use spillway_core::bulkhead::{BulkheadConfig, BulkheadConfigError};
pub use spillway_core::overload::CodelConfig;

use crate::criticality;
use crate::deadline::{self, TokioClock};
use crate::rejection::BoxError;
use http::Request;
use spillway_core::deadline::Deadline;
use spillway_core::Clock;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// Limits concurrency with a criticality-ordered waiting queue. See the module docs.
///
/// Over the limit a request waits in the queue at most `max_wait` (or until its deadline, if
/// sooner), and is refused at once when the queue is full of requests at least as critical:
/// [`RejectReason::BulkheadFull`](spillway_core::RejectReason::BulkheadFull) / [`RejectReason::QueueTimeout`](spillway_core::RejectReason::QueueTimeout) (503 with `Retry-After`),
/// or [`RejectReason::DeadlineExceeded`](spillway_core::RejectReason::DeadlineExceeded) when the deadline ran out first. The class comes from
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
    shared: Arc<SharedBulkhead>,
}

impl BulkheadLayer {
    /// A layer (and the one bulkhead all its services share) with these limits.
    pub fn try_new(config: BulkheadConfig) -> Result<Self, BulkheadConfigError> {
        match SharedBulkhead::try_new(config, None, Arc::new(TokioClock)) {
            Ok(shared) => Ok(BulkheadLayer { shared }),
            Err(SharedBulkheadError::Bulkhead(e)) => Err(e),
            // Without CoDel settings there is nothing else to refuse.
            Err(SharedBulkheadError::Codel(_) | SharedBulkheadError::ClassWaitsShrink) => {
                Err(BulkheadConfigError::ZeroConcurrency)
            }
        }
    }

    /// A layer whose queue is also watched by CoDel (see [`SharedBulkhead`]).
    pub fn with_codel(
        config: BulkheadConfig,
        codel: CodelConfig,
    ) -> Result<Self, SharedBulkheadError> {
        let shared = SharedBulkhead::try_new(config, Some(codel), Arc::new(TokioClock))?;
        Ok(BulkheadLayer { shared })
    }

    /// A layer over an existing shared bulkhead (for example one shared with other code).
    pub fn from_shared(shared: Arc<SharedBulkhead>) -> Self {
        BulkheadLayer { shared }
    }

    /// Requests holding a slot now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight()
    }

    /// Requests waiting now.
    pub fn queued(&self) -> usize {
        self.shared.queued()
    }

    /// The limits.
    pub fn config(&self) -> BulkheadConfig {
        self.shared.config()
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
    shared: Arc<SharedBulkhead>,
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
        let left = deadline.map(|d| d.remaining(TokioClock.now()));
        match self.shared.try_enter(class, left) {
            Entry::Acquired(permit) => ResponseFuture::ready(permit, self.inner.clone(), req),
            Entry::Rejected(rejection) => ResponseFuture::refused(rejection),
            Entry::Waiting(waiting) => {
                let (guard, wait, on_timeout) = waiting.into_parts();
                ResponseFuture::waiting(guard, wait, on_timeout, self.inner.clone(), req)
            }
        }
    }
}

#[cfg(test)]
mod tests;
