//! The response future shared by the deadline, propagation and timeout layers: either an
//! immediate refusal, the inner future as is, or the inner future under a timer.
//!
//! One concrete type (no boxing) keeps these layers allocation-free per request.
//!
//! A refusal fails with a plain [`Rejected`]; a call that was made and ran out of time fails
//! with [`TimedOut`], which wraps the same rejection (so it renders the same) but tells
//! breakers and throttles that the callee did not answer in time.

use crate::rejection::{BoxError, Rejected};
use pin_project_lite::pin_project;
use spillway_core::{RejectReason, Rejection};
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

/// The inner call was made and had not finished when the deadline or timeout passed.
///
/// It renders like a refusal: its source is a [`Rejected`] with
/// [`RejectReason::DeadlineExceeded`] (504), which
/// [`find_rejection`](crate::rejection::find_rejection) finds. Unlike a refusal made before
/// calling, it is evidence about the callee, so
/// [`HttpClassifier`](crate::breaker::HttpClassifier) counts it as a failure.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the call did not finish in time")]
pub struct TimedOut(#[source] Rejected);

/// True when a [`TimedOut`] is anywhere in the error's source chain.
pub fn is_timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<TimedOut>() {
            return true;
        }
        current = e.source();
    }
    false
}

pin_project! {
    /// Response future of [`DeadlineLayer`](super::DeadlineLayer),
    /// [`PropagateDeadlineLayer`](super::PropagateDeadlineLayer) and
    /// [`TimeoutLayer`](super::TimeoutLayer). Fails with [`Rejected`] carrying
    /// [`RejectReason::DeadlineExceeded`] when the request was refused, or with [`TimedOut`]
    /// wrapping it when the call ran out of time.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Refused { rejection: Rejection },
        Passthrough { #[pin] future: F },
        Timed { #[pin] future: tokio::time::Timeout<F> },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn refused(rejection: Rejection) -> Self {
        ResponseFuture { kind: Kind::Refused { rejection } }
    }

    pub(crate) fn passthrough(future: F) -> Self {
        ResponseFuture { kind: Kind::Passthrough { future } }
    }

    pub(crate) fn timed(future: F, after: Duration) -> Self
    where
        F: Future,
    {
        ResponseFuture { kind: Kind::Timed { future: tokio::time::timeout(after, future) } }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Refused { rejection } => Poll::Ready(Err(Rejected(*rejection).into())),
            KindProj::Passthrough { future } => future.poll(cx).map_err(Into::into),
            KindProj::Timed { future } => Poll::Ready(match ready!(future.poll(cx)) {
                Ok(result) => result.map_err(Into::into),
                Err(_elapsed) => {
                    Err(TimedOut(Rejected::new(RejectReason::DeadlineExceeded)).into())
                }
            }),
        }
    }
}
