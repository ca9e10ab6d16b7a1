//! The response future shared by the budget layers: an immediate refusal, the inner call as
//! is, or the inner call inside the request budget's task-local scope. One concrete type, no
//! boxing per request.

use super::RequestBudget;
use crate::rejection::{BoxError, Rejected};
use pin_project_lite::pin_project;
use spillway_core::Rejection;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::task::futures::TaskLocalFuture;

pin_project! {
    /// Response future of [`BudgetLayer`](super::BudgetLayer) and
    /// [`PropagateBudgetLayer`](super::PropagateBudgetLayer). Fails with [`Rejected`] carrying
    /// [`RejectReason::BudgetExhausted`](spillway_core::RejectReason::BudgetExhausted) when the
    /// budget could not pay, without having called the inner service.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Refused { rejection: Rejection },
        Called { #[pin] future: F },
        Scoped { #[pin] future: TaskLocalFuture<RequestBudget, F> },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn refused(rejection: Rejection) -> Self {
        ResponseFuture { kind: Kind::Refused { rejection } }
    }

    pub(crate) fn called(future: F) -> Self {
        ResponseFuture { kind: Kind::Called { future } }
    }

    pub(crate) fn scoped(future: TaskLocalFuture<RequestBudget, F>) -> Self {
        ResponseFuture { kind: Kind::Scoped { future } }
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
            KindProj::Called { future } => future.poll(cx).map_err(Into::into),
            KindProj::Scoped { future } => future.poll(cx).map_err(Into::into),
        }
    }
}
