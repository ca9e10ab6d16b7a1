//! A plain timeout with a deliberate default, for stacks (or clients) with no deadline to
//! honour: every wait has an end.

use super::future::ResponseFuture;
use crate::rejection::BoxError;
use std::task::{Context, Poll};
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

/// Fails a call that takes longer than a fixed time with
/// [`Rejected`](crate::Rejected) ([`DeadlineExceeded`](spillway_core::RejectReason), 504).
///
/// Works on any request type. Prefer [`DeadlineLayer`](super::DeadlineLayer) on a server,
/// which also honours and propagates the caller's budget; use this one where there is no
/// caller budget, e.g. around a client with no request in scope.
#[derive(Copy, Clone, Debug)]
pub struct TimeoutLayer {
    timeout: Duration,
}

impl TimeoutLayer {
    /// The default timeout: 15 s, Envoy's default route timeout — long enough for any
    /// interactive request, short enough that a stuck one does not hold resources for minutes.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);

    /// Fails calls still running after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        TimeoutLayer { timeout }
    }

    /// The timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

impl Default for TimeoutLayer {
    /// [`TimeoutLayer::DEFAULT_TIMEOUT`].
    fn default() -> Self {
        TimeoutLayer::new(TimeoutLayer::DEFAULT_TIMEOUT)
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Timeout { inner, timeout: self.timeout }
    }
}

/// The service made by [`TimeoutLayer`].
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S, R> Service<R> for Timeout<S>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        ResponseFuture::timed(self.inner.call(req), self.timeout)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a test failure
mod tests {
    use super::*;
    use crate::rejection::find_rejection;
    use spillway_core::RejectReason;
    use tower::{service_fn, ServiceExt};

    #[tokio::test(start_paused = true)]
    async fn call_slower_than_the_timeout_fails_with_deadline_exceeded() {
        let svc =
            TimeoutLayer::new(Duration::from_millis(300)).layer(service_fn(|d: u64| async move {
                tokio::time::sleep(Duration::from_millis(d)).await;
                Ok::<_, BoxError>(d)
            }));
        assert_eq!(svc.clone().oneshot(299).await.unwrap(), 299);
        let started = tokio::time::Instant::now();
        let err = svc.oneshot(5_000).await.unwrap_err();
        let reason = find_rejection(err.as_ref()).map(|r| r.reason);
        assert_eq!(reason, Some(RejectReason::DeadlineExceeded));
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn default_timeout_is_finite() {
        let svc = TimeoutLayer::default().layer(service_fn(|()| async {
            std::future::pending::<()>().await;
            Ok::<_, BoxError>(())
        }));
        let started = tokio::time::Instant::now();
        assert!(svc.oneshot(()).await.is_err());
        assert_eq!(started.elapsed(), TimeoutLayer::DEFAULT_TIMEOUT);
    }
}
