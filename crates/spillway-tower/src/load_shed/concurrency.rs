//! [`AdaptiveConcurrencyLayer`]: admits requests while fewer than a learned limit (AIMD or
//! Gradient2, from `spillway_core::concurrency`) are in flight, and feeds every completion's
//! latency and outcome back to the limit.
//!
//! Why here and not in the bulkhead: a bulkhead's limit is configured; this one is learned, so
//! it follows the service's real capacity as it changes. Outcomes: an inner error, or a 429 /
//! 503 / 504 response, is a drop signal (the service or its dependencies are overloaded);
//! any other response is a success; a future dropped before completing is ignored (no sample).

use crate::guarded::{CallGuard, GuardedFuture};
use crate::rejection::BoxError;
use spillway_core::concurrency::{ConcurrencyLimiter, ConcurrencyToken, LimitAlgorithm, Outcome};
use spillway_core::overload::ClassShares;
use spillway_core::{Clock, SystemClock};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// A [`Layer`] applying a learned concurrency limit. Clones share one limiter.
#[derive(Debug)]
pub struct AdaptiveConcurrencyLayer<A, C = SystemClock> {
    limiter: Arc<ConcurrencyLimiter<A>>,
    clock: C,
}

impl<A, C: Clone> Clone for AdaptiveConcurrencyLayer<A, C> {
    fn clone(&self) -> Self {
        AdaptiveConcurrencyLayer { limiter: self.limiter.clone(), clock: self.clock.clone() }
    }
}

impl<A: LimitAlgorithm> AdaptiveConcurrencyLayer<A, SystemClock> {
    /// A layer learning its limit with `algorithm`, scaled per class by
    /// [`ClassShares::concurrency_default`], on the system clock.
    pub fn new(algorithm: A) -> AdaptiveConcurrencyLayer<A, SystemClock> {
        AdaptiveConcurrencyLayer::with_clock(
            algorithm,
            ClassShares::concurrency_default(),
            SystemClock::new(),
        )
    }
}

impl<A: LimitAlgorithm, C: Clock + Clone> AdaptiveConcurrencyLayer<A, C> {
    /// A layer with explicit class shares and clock.
    pub fn with_clock(
        algorithm: A,
        shares: ClassShares,
        clock: C,
    ) -> AdaptiveConcurrencyLayer<A, C> {
        AdaptiveConcurrencyLayer {
            limiter: Arc::new(ConcurrencyLimiter::new(algorithm, shares)),
            clock,
        }
    }

    /// The shared limiter, for its limit and inflight count.
    pub fn limiter(&self) -> &Arc<ConcurrencyLimiter<A>> {
        &self.limiter
    }
}

impl<S, A, C: Clone> Layer<S> for AdaptiveConcurrencyLayer<A, C> {
    type Service = AdaptiveConcurrency<S, A, C>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveConcurrency { inner, limiter: self.limiter.clone(), clock: self.clock.clone() }
    }
}

/// The service made by [`AdaptiveConcurrencyLayer`].
#[derive(Debug)]
pub struct AdaptiveConcurrency<S, A, C = SystemClock> {
    inner: S,
    limiter: Arc<ConcurrencyLimiter<A>>,
    clock: C,
}

impl<S: Clone, A, C: Clone> Clone for AdaptiveConcurrency<S, A, C> {
    fn clone(&self) -> Self {
        AdaptiveConcurrency {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            clock: self.clock.clone(),
        }
    }
}

impl<S, A, C, B, R> Service<http::Request<B>> for AdaptiveConcurrency<S, A, C>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Error: Into<BoxError>,
    A: LimitAlgorithm,
    C: Clock + Clone,
{
    type Response = http::Response<R>;
    type Error = BoxError;
    type Future = AdaptiveConcurrencyFuture<S::Future, A, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let class = crate::criticality::of_request(&request);
        match self.limiter.try_acquire(class, self.clock.now()) {
            Ok(token) => {
                let guard = Guard {
                    limiter: self.limiter.clone(),
                    clock: self.clock.clone(),
                    token: Some(token),
                };
                GuardedFuture::called(self.inner.call(request), guard)
            }
            Err(rejection) => GuardedFuture::refused(rejection),
        }
    }
}

/// The future returned by [`AdaptiveConcurrency`]: a refusal (`overloaded`), or the call
/// holding its admission until it ends.
pub type AdaptiveConcurrencyFuture<F, A, C> = GuardedFuture<F, Guard<A, C>>;

/// Gives the admission back once: with the outcome on completion, ignored on drop.
#[derive(Debug)]
pub struct Guard<A: LimitAlgorithm, C: Clock> {
    limiter: Arc<ConcurrencyLimiter<A>>,
    clock: C,
    token: Option<ConcurrencyToken>,
}

impl<A: LimitAlgorithm, C: Clock, R> CallGuard<http::Response<R>> for Guard<A, C> {
    fn finish(&mut self, result: &Result<http::Response<R>, BoxError>) {
        let outcome = match result {
            Ok(response) if is_overload_status(response.status()) => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        };
        if let Some(token) = self.token.take() {
            self.limiter.release(token, outcome, self.clock.now());
        }
    }
}

impl<A: LimitAlgorithm, C: Clock> Drop for Guard<A, C> {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            self.limiter.release(token, Outcome::Ignored, self.clock.now());
        }
    }
}

fn is_overload_status(status: http::StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 503 | 504)
}
