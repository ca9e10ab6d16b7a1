//! The bulkhead's response future, and the two guards that make sure a slot is never leaked:
//! [`Permit`] for a request holding a slot, [`WaitGuard`] for one waiting for a slot.

use super::Shared;
use crate::deadline::TokioClock;
use crate::rejection::{BoxError, Rejected};
use pin_project_lite::pin_project;
use spillway_core::bulkhead::Ticket;
use spillway_core::{Clock, RejectReason, Rejection};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Sleep;
use tower_service::Service;

/// What a waiter is told.
#[derive(Debug)]
pub(super) enum Wake {
    /// A slot was passed to it: it now holds it.
    Granted,
    /// It lost its place (displaced by a more critical request).
    Refused(Rejection),
}

/// A held slot; dropping it gives the slot back (to the next waiter, if any).
#[derive(Debug)]
pub(super) struct Permit {
    shared: Arc<Shared>,
}

impl Permit {
    pub(super) fn new(shared: Arc<Shared>) -> Permit {
        Permit { shared }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared.release(TokioClock.now());
    }
}

/// A place in the queue; dropping it before it settled leaves the queue, passing on a slot
/// that was granted in the meantime.
#[derive(Debug)]
pub(super) struct WaitGuard {
    shared: Arc<Shared>,
    ticket: Ticket,
    rx: oneshot::Receiver<Wake>,
    /// True once the outcome is known and owned elsewhere (a permit, or an error returned).
    settled: bool,
}

impl WaitGuard {
    pub(super) fn new(shared: Arc<Shared>, ticket: Ticket, rx: oneshot::Receiver<Wake>) -> Self {
        WaitGuard { shared, ticket, rx, settled: false }
    }

    fn settle(&mut self, wake: Wake) -> Result<Permit, Rejection> {
        self.settled = true;
        match wake {
            Wake::Granted => Ok(Permit::new(self.shared.clone())),
            Wake::Refused(rejection) => Err(rejection),
        }
    }

    /// Ready when the bulkhead has decided about this waiter.
    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<Result<Permit, Rejection>> {
        let wake = match ready!(Pin::new(&mut self.rx).poll(cx)) {
            Ok(wake) => wake,
            // The sender is only ever dropped after sending; treat the impossible as "full".
            Err(_) => Wake::Refused(Rejection::new(RejectReason::BulkheadFull)),
        };
        Poll::Ready(self.settle(wake))
    }

    /// The waiter's timer fired: leave the queue — unless a decision raced the timer, which
    /// then wins (a granted slot is used rather than wasted).
    fn give_up(&mut self, on_timeout: Rejection) -> Result<Permit, Rejection> {
        {
            let mut state = self.shared.state.lock();
            if state.core.cancel(self.ticket) {
                state.waiters.remove(&self.ticket.id());
                self.settled = true;
                return Err(on_timeout);
            }
        }
        // Not queued any more: the decision was sent under the lock, so it is here.
        let wake = self.rx.try_recv().unwrap_or(Wake::Refused(on_timeout));
        self.settle(wake)
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let mut state = self.shared.state.lock();
        if state.core.cancel(self.ticket) {
            state.waiters.remove(&self.ticket.id());
        } else if let Ok(Wake::Granted) = self.rx.try_recv() {
            // Granted after the request was abandoned: pass the slot on.
            state.release(TokioClock.now());
        }
    }
}

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
