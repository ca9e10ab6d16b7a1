//! The response future shared by the deadline, propagation and timeout layers: either an
//! immediate refusal, the inner future as is, or the inner future under a timer.
//!
//! One concrete type (no boxing) keeps these layers allocation-free per request.

use crate::rejection::{BoxError, Rejected};
use pin_project_lite::pin_project;
use spillway_core::{RejectReason, Rejection};
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

pin_project! {
    /// Response future of [`DeadlineLayer`](super::DeadlineLayer),
    /// [`PropagateDeadlineLayer`](super::PropagateDeadlineLayer) and
    /// [`TimeoutLayer`](super::TimeoutLayer). Fails with [`Rejected`] carrying
    /// [`RejectReason::DeadlineExceeded`] when the request was refused or ran out of time.
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
                Err(_elapsed) => Err(Rejected::new(RejectReason::DeadlineExceeded).into()),
            }),
        }
    }
}
