//! Server side: the incoming budget becomes a deadline under the route's policy; too little
//! budget fails fast, the rest runs under a timer at the deadline.

use super::future::ResponseFuture;
use super::{TokioClock, CURRENT};
use crate::rejection::BoxError;
use http::{HeaderValue, Request};
use spillway_core::deadline::{
    Deadline, DeadlinePolicy, IncomingTimeouts, GRPC_TIMEOUT_HEADER, REQUEST_TIMEOUT_HEADER,
};
use spillway_core::Clock;
use std::task::{Context, Poll};
use tokio::task::futures::TaskLocalFuture;
use tower_layer::Layer;
use tower_service::Service;

/// Honours the incoming deadline under a route [`DeadlinePolicy`].
///
/// Per request: reads `grpc-timeout` and `x-request-timeout` (and a deadline an outer layer
/// already set), lets the policy decide, and then either fails at once with
/// [`Rejected`](crate::Rejected) ([`DeadlineExceeded`](spillway_core::RejectReason), 504 through
/// [`rejection_response`](crate::rejection_response)) without calling the inner service, or
/// stores the [`Deadline`] in the request's extensions and in the task-local
/// ([`current`](super::current)) and calls the inner service under a timer that fails the
/// request with the same rejection at the deadline.
///
/// ```
/// use std::time::Duration;
/// use spillway_tower::deadline::{DeadlineLayer, DeadlinePolicy};
/// let policy = DeadlinePolicy::builder(Duration::from_secs(2))
///     .max_budget(Duration::from_secs(10))
///     .min_budget(Duration::from_millis(10))
///     .build()?;
/// let layer = DeadlineLayer::new(policy);
/// # Ok::<(), spillway_core::deadline::DeadlinePolicyError>(())
/// ```
#[derive(Copy, Clone, Debug)]
pub struct DeadlineLayer {
    policy: DeadlinePolicy,
}

impl DeadlineLayer {
    /// A layer applying `policy`.
    pub fn new(policy: DeadlinePolicy) -> Self {
        DeadlineLayer { policy }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService { inner, policy: self.policy }
    }
}

/// The service made by [`DeadlineLayer`].
#[derive(Clone, Debug)]
pub struct DeadlineService<S> {
    inner: S,
    policy: DeadlinePolicy,
}

impl<S, B> Service<Request<B>> for DeadlineService<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<TaskLocalFuture<Deadline, S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let now = TokioClock.now();
        let headers = req.headers();
        let incoming = IncomingTimeouts {
            grpc_timeout: headers.get(GRPC_TIMEOUT_HEADER).map(HeaderValue::as_bytes),
            request_timeout: headers.get(REQUEST_TIMEOUT_HEADER).map(HeaderValue::as_bytes),
            in_process: req.extensions().get::<Deadline>().copied().or_else(super::current),
        };
        let granted = match self.policy.decide(incoming, now) {
            Ok(granted) => granted,
            Err(rejection) => {
                tracing::debug!(%rejection, "deadline too short, failing fast");
                return ResponseFuture::refused(rejection);
            }
        };
        if let Some(error) = granted.malformed {
            tracing::debug!(%error, "ignoring malformed timeout header");
        }
        let deadline = granted.deadline;
        req.extensions_mut().insert(deadline);
        let inner = &mut self.inner;
        let future = CURRENT.sync_scope(deadline, || inner.call(req));
        ResponseFuture::timed(CURRENT.scope(deadline, future), granted.budget)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a test failure
mod tests {
    use super::*;
    use crate::deadline::current;
    use crate::rejection::{find_rejection, rejection_response};
    use spillway_core::RejectReason;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;
    use tower::{service_fn, ServiceExt};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn layer() -> DeadlineLayer {
        let policy = DeadlinePolicy::builder(ms(1000)).max_budget(ms(5000)).min_budget(ms(20));
        DeadlineLayer::new(policy.build().unwrap())
    }

    fn request(header: &'static str, value: &'static str) -> Request<()> {
        Request::builder().header(header, value).body(()).unwrap()
    }

    fn reason(e: &BoxError) -> Option<RejectReason> {
        find_rejection(e.as_ref()).map(|r| r.reason)
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_shorter_than_min_fails_fast_with_504_without_calling_the_service() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let svc = layer().layer(service_fn(move |_req: Request<()>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, BoxError>(()) }
        }));
        let err = svc.oneshot(request(GRPC_TIMEOUT_HEADER, "19m")).await.unwrap_err();
        assert_eq!(reason(&err), Some(RejectReason::DeadlineExceeded));
        let rejection = find_rejection(err.as_ref()).unwrap();
        assert_eq!(rejection_response(&rejection).status(), 504);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_handler_is_cut_off_at_the_incoming_deadline_with_504() {
        let svc = layer().layer(service_fn(|_req: Request<()>| async {
            tokio::time::sleep(ms(10_000)).await;
            Ok::<_, BoxError>("too late")
        }));
        let started = tokio::time::Instant::now();
        let err = svc.oneshot(request(REQUEST_TIMEOUT_HEADER, "150ms")).await.unwrap_err();
        assert_eq!(reason(&err), Some(RejectReason::DeadlineExceeded));
        assert_eq!(started.elapsed(), ms(150));
    }

    #[tokio::test(start_paused = true)]
    async fn request_without_a_budget_runs_under_the_route_default() {
        let svc = layer().layer(service_fn(|_req: Request<()>| async {
            tokio::time::sleep(ms(10_000)).await;
            Ok::<_, BoxError>(())
        }));
        let started = tokio::time::Instant::now();
        let err = svc.oneshot(Request::new(())).await.unwrap_err();
        assert_eq!(reason(&err), Some(RejectReason::DeadlineExceeded));
        assert_eq!(started.elapsed(), ms(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn route_cap_shortens_a_longer_incoming_budget() {
        let svc = layer().layer(service_fn(|_req: Request<()>| async {
            tokio::time::sleep(ms(60_000)).await;
            Ok::<_, BoxError>(())
        }));
        let started = tokio::time::Instant::now();
        let _ = svc.oneshot(request(GRPC_TIMEOUT_HEADER, "1M")).await.unwrap_err();
        assert_eq!(started.elapsed(), ms(5000));
    }

    #[tokio::test(start_paused = true)]
    async fn handler_sees_the_deadline_in_extensions_and_its_task() {
        let svc = layer().layer(service_fn(|req: Request<()>| async move {
            tokio::time::sleep(ms(30)).await;
            let now = TokioClock.now();
            let from_ext = req.extensions().get::<Deadline>().map(|d| d.remaining(now));
            Ok::<_, BoxError>((from_ext, current().map(|d| d.remaining(now))))
        }));
        let seen = svc.oneshot(request(GRPC_TIMEOUT_HEADER, "200m")).await.unwrap();
        assert_eq!(seen, (Some(ms(170)), Some(ms(170))));
    }

    #[tokio::test(start_paused = true)]
    async fn nested_deadline_layer_only_tightens_the_outer_deadline() {
        let inner_layer = DeadlineLayer::new(DeadlinePolicy::builder(ms(3000)).build().unwrap());
        let svc = layer().layer(inner_layer.layer(service_fn(|_req: Request<()>| async {
            Ok::<_, BoxError>(current().map(|d| d.remaining(TokioClock.now())))
        })));
        // The outer layer grants 100 ms; the inner one's 3 s default must not extend it.
        let left = svc.oneshot(request(GRPC_TIMEOUT_HEADER, "100m")).await.unwrap();
        assert_eq!(left, Some(ms(100)));
    }

    #[tokio::test(start_paused = true)]
    async fn malformed_header_falls_back_to_the_route_default() {
        let svc = layer().layer(service_fn(|req: Request<()>| async move {
            let d = req.extensions().get::<Deadline>().copied();
            Ok::<_, BoxError>(d.map(|d| d.remaining(TokioClock.now())))
        }));
        let left = svc.oneshot(request(GRPC_TIMEOUT_HEADER, "soon")).await.unwrap();
        assert_eq!(left, Some(ms(1000)));
    }
}
