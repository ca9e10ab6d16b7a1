//! The response future shared by the layers that decide before calling (circuit breaker, SRE
//! throttle, BBR load shedding, adaptive concurrency): refused at once, or the inner call with
//! a guard that is told how the call ended.
//!
//! Why one future: each of those layers must (a) fail a refused request with [`Rejected`]
//! without touching the inner service, (b) report the result of an admitted call exactly once,
//! and (c) notice when the call is abandoned (its future dropped before the inner call
//! finished: a timeout above, a client gone). Written once, (a) and (b) cannot drift apart
//! between layers; (c) is each guard's `Drop`, which runs exactly when the future is dropped.
//! The layers name this type through their own `ResponseFuture` aliases.

use crate::rejection::{BoxError, Rejected};
use pin_project_lite::pin_project;
use spillway_core::Rejection;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

/// Told how an admitted call ended. A guard dropped without [`finish`](CallGuard::finish)
/// having been called belongs to an abandoned call: implementors handle that in `Drop`
/// (give a slot back, record an ignored outcome), and make `Drop` after `finish` a no-op.
pub trait CallGuard<T> {
    /// The inner call finished with `result`. Called at most once.
    fn finish(&mut self, result: &Result<T, BoxError>);
}

pin_project! {
    /// A call refused before it was made, or made and watched by a [`CallGuard`].
    ///
    /// Fails with [`Rejected`] when refused; otherwise yields the inner result (its error
    /// boxed) after showing it to the guard.
    #[derive(Debug)]
    pub struct GuardedFuture<F, G> {
        #[pin]
        state: State<F, G>,
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F, G> {
        Refused { rejection: Rejection },
        Called { #[pin] future: F, guard: G },
    }
}

impl<F, G> GuardedFuture<F, G> {
    /// A call refused with `rejection`; the inner service was not called.
    pub(crate) fn refused(rejection: Rejection) -> Self {
        GuardedFuture { state: State::Refused { rejection } }
    }

    /// The inner call `future`, watched by `guard`.
    pub(crate) fn called(future: F, guard: G) -> Self {
        GuardedFuture { state: State::Called { future, guard } }
    }
}

impl<F, G, T, E> Future for GuardedFuture<F, G>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    G: CallGuard<T>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Refused { rejection } => Poll::Ready(Err(Rejected(*rejection).into())),
            StateProj::Called { future, guard } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                guard.finish(&result);
                Poll::Ready(result)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rejection::find_rejection;
    use parking_lot::Mutex;
    use spillway_core::RejectReason;
    use std::sync::Arc;

    /// Notes what it was told: `finish` calls, and whether it was dropped unfinished.
    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<&'static str>>>);

    struct Noting {
        log: Log,
        finished: bool,
    }

    impl CallGuard<u8> for Noting {
        fn finish(&mut self, result: &Result<u8, BoxError>) {
            self.finished = true;
            self.log.0.lock().push(if result.is_ok() { "ok" } else { "error" });
        }
    }

    impl Drop for Noting {
        fn drop(&mut self) {
            if !self.finished {
                self.log.0.lock().push("abandoned");
            }
        }
    }

    fn noting(log: &Log) -> Noting {
        Noting { log: log.clone(), finished: false }
    }

    #[tokio::test(start_paused = true)]
    async fn admitted_call_shows_its_result_to_the_guard_once() {
        let log = Log::default();
        let ok = GuardedFuture::called(async { Ok::<u8, BoxError>(7) }, noting(&log));
        assert_eq!(ok.await.ok(), Some(7));
        let failed = GuardedFuture::called(async { Err::<u8, _>("reset") }, noting(&log));
        assert!(failed.await.is_err());
        assert_eq!(*log.0.lock(), ["ok", "error"]);
    }

    #[tokio::test(start_paused = true)]
    async fn call_dropped_unfinished_leaves_the_guard_to_its_drop() {
        let log = Log::default();
        let pending =
            GuardedFuture::called(std::future::pending::<Result<u8, BoxError>>(), noting(&log));
        let timed_out = tokio::time::timeout(std::time::Duration::from_millis(10), pending).await;
        assert!(timed_out.is_err());
        assert_eq!(*log.0.lock(), ["abandoned"]);
    }

    #[tokio::test(start_paused = true)]
    async fn refused_call_fails_with_the_rejection() {
        let refused: GuardedFuture<std::future::Ready<Result<u8, BoxError>>, Noting> =
            GuardedFuture::refused(Rejection::new(RejectReason::Throttled));
        let error = refused.await.err();
        let reason = error.and_then(|e| find_rejection(e.as_ref())).map(|r| r.reason);
        assert_eq!(reason, Some(RejectReason::Throttled));
    }
}
