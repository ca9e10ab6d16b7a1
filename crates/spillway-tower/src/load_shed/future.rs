//! The response future of the BBR load-shedding service, and the guard that gives an admission
//! back exactly once: `done` when the inner future completes, `abandon` when it is dropped first.

use crate::rejection::{BoxError, Rejected};
use pin_project_lite::pin_project;
use spillway_core::overload::{BbrLimiter, BbrToken};
use spillway_core::Clock;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

/// Holds an admitted request's token until the response is ready (then `done`, a sample) or the
/// future is dropped (then `abandon`, no sample).
#[derive(Debug)]
pub(crate) struct BbrGuard<C: Clock> {
    limiter: Arc<BbrLimiter>,
    clock: C,
    token: Option<BbrToken>,
}

impl<C: Clock> BbrGuard<C> {
    pub(crate) fn new(limiter: Arc<BbrLimiter>, clock: C, token: BbrToken) -> BbrGuard<C> {
        BbrGuard { limiter, clock, token: Some(token) }
    }

    fn complete(&mut self) {
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

pin_project! {
    /// The future returned by [`BbrLoadShed`](super::BbrLoadShed).
    #[derive(Debug)]
    pub struct ResponseFuture<F, C: Clock> {
        #[pin]
        state: State<F, C>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F, C: Clock> {
        Admitted {
            #[pin]
            inner: F,
            guard: BbrGuard<C>,
        },
        Rejected {
            rejection: Rejected,
        },
    }
}

impl<F, C: Clock> ResponseFuture<F, C> {
    pub(crate) fn admitted(inner: F, guard: BbrGuard<C>) -> ResponseFuture<F, C> {
        ResponseFuture { state: State::Admitted { inner, guard } }
    }

    pub(crate) fn rejected(rejection: Rejected) -> ResponseFuture<F, C> {
        ResponseFuture { state: State::Rejected { rejection } }
    }
}

impl<F, T, E, C> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Clock,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Admitted { inner, guard } => {
                let output = ready!(inner.poll(cx));
                guard.complete();
                Poll::Ready(output.map_err(Into::into))
            }
            StateProj::Rejected { rejection } => Poll::Ready(Err((*rejection).into())),
        }
    }
}
