//! The bulkhead layer's response future: waits for a slot through the shared driver's guards
//! (`shared`), then calls the inner service while holding the slot.

use super::shared::{BulkheadPermit as Permit, WaitGuard};
use crate::rejection::{BoxError, Rejected};
use pin_project_lite::pin_project;
use spillway_core::Rejection;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;
use tower_service::Service;

pin_project! {
    /// Response future of [`BulkheadService`](super::BulkheadService): waits for a slot if
    /// needed, readies and calls the inner service, and holds the slot until the inner
    /// response future completes (or this future is dropped).
    pub struct ResponseFuture<S: Service<R>, R> {
        #[pin]
        state: State<S, R>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<R>, R> {
        Refused { rejection: Rejection },
        Waiting {
            guard: WaitGuard,
            #[pin]
            sleep: Sleep,
            on_timeout: Rejection,
            service: Option<S>,
            request: Option<R>,
        },
        Ready { permit: Option<Permit>, service: S, request: Option<R> },
        Calling { permit: Option<Permit>, #[pin] future: S::Future },
        Done,
    }
}

impl<S: Service<R>, R> ResponseFuture<S, R> {
    pub(super) fn refused(rejection: Rejection) -> Self {
        ResponseFuture { state: State::Refused { rejection } }
    }

    pub(super) fn ready(permit: Permit, service: S, request: R) -> Self {
        ResponseFuture {
            state: State::Ready { permit: Some(permit), service, request: Some(request) },
        }
    }

    pub(super) fn waiting(
        guard: WaitGuard,
        wait: Duration,
        on_timeout: Rejection,
        service: S,
        request: R,
    ) -> Self {
        ResponseFuture {
            state: State::Waiting {
                guard,
                sleep: tokio::time::sleep(wait),
                on_timeout,
                service: Some(service),
                request: Some(request),
            },
        }
    }
}

fn polled_after_completion() -> BoxError {
    "bulkhead response future polled after completion".into()
}

impl<S, R> Future for ResponseFuture<S, R>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            let next = match this.state.as_mut().project() {
                StateProj::Refused { rejection } => {
                    let rejection = *rejection;
                    this.state.set(State::Done);
                    return Poll::Ready(Err(Rejected(rejection).into()));
                }
                StateProj::Waiting { guard, sleep, on_timeout, service, request } => {
                    let decided = match guard.poll_wake(cx) {
                        Poll::Ready(decided) => decided,
                        Poll::Pending => {
                            ready!(sleep.poll(cx));
                            guard.give_up(*on_timeout)
                        }
                    };
                    match (decided, service.take(), request.take()) {
                        (Ok(permit), Some(service), request @ Some(_)) => {
                            State::Ready { permit: Some(permit), service, request }
                        }
                        (Err(rejection), _, _) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(Rejected(rejection).into()));
                        }
                        _ => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(polled_after_completion()));
                        }
                    }
                }
                StateProj::Ready { permit, service, request } => {
                    if let Err(e) = ready!(service.poll_ready(cx)) {
                        // Dropping the state releases the permit.
                        this.state.set(State::Done);
                        return Poll::Ready(Err(e.into()));
                    }
                    let Some(request) = request.take() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(polled_after_completion()));
                    };
                    State::Calling { permit: permit.take(), future: service.call(request) }
                }
                StateProj::Calling { permit, future } => {
                    let output = ready!(future.poll(cx));
                    drop(permit.take());
                    this.state.set(State::Done);
                    return Poll::Ready(output.map_err(Into::into));
                }
                StateProj::Done => return Poll::Ready(Err(polled_after_completion())),
            };
            this.state.set(next);
        }
    }
}
