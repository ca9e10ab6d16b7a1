//! The response future of the BBR load-shedding service, and the guard that gives an admission
//! back exactly once: `done` when the inner future completes, `abandon` when it is dropped first.

use crate::guarded::{CallGuard, GuardedFuture};
use crate::rejection::BoxError;
use spillway_core::overload::{BbrLimiter, BbrToken};
use spillway_core::Clock;
use std::sync::Arc;

/// The future returned by [`BbrLoadShed`](super::BbrLoadShed): a refusal (`overloaded`), or the
/// call holding its admission until it ends.
pub type ResponseFuture<F, C> = GuardedFuture<F, BbrGuard<C>>;

/// Holds an admitted request's token until the response is ready (then `done`, a sample) or the
/// future is dropped (then `abandon`, no sample).
#[derive(Debug)]
pub struct BbrGuard<C: Clock> {
    limiter: Arc<BbrLimiter>,
    clock: C,
    token: Option<BbrToken>,
}

impl<C: Clock> BbrGuard<C> {
    pub(crate) fn new(limiter: Arc<BbrLimiter>, clock: C, token: BbrToken) -> BbrGuard<C> {
        BbrGuard { limiter, clock, token: Some(token) }
    }
}

impl<C: Clock, T> CallGuard<T> for BbrGuard<C> {
    fn finish(&mut self, _result: &Result<T, BoxError>) {
        if let Some(token) = self.token.take() {
            self.limiter.done(token, self.clock.now());
        }
    }
}

impl<C: Clock> Drop for BbrGuard<C> {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            self.limiter.abandon(token);
        }
    }
}
