//! Client side: what is left of the current deadline, minus a margin, goes onto each outgoing
//! request; a call that could not finish in time is not made at all.

use super::future::ResponseFuture;
use super::TokioClock;
use crate::rejection::{is_grpc, BoxError};
use http::{HeaderValue, Request};
use spillway_core::deadline::{
    format_grpc_timeout, format_request_timeout, parse_grpc_timeout, parse_request_timeout,
    Deadline, DeadlinePolicy, GRPC_TIMEOUT_HEADER, REQUEST_TIMEOUT_HEADER,
};
use spillway_core::{Clock, RejectReason, Rejection};
use std::task::{Context, Poll};
use std::time::Duration;
use tower_layer::Layer;
use tower_service::Service;

/// Propagates the current deadline to outgoing requests.
///
/// The deadline is the one in the outgoing request's extensions or the current task's
/// ([`current`](super::current)), the earlier of the two when both are set. With none, the
/// request passes untouched. Otherwise, at the moment of the call:
/// - the budget is what is left minus the margin (time for the response to travel back and
///   for the caller to use it). Below the minimum budget the call fails at once with
///   [`RejectReason::DeadlineExceeded`] — the answer could not arrive in time anyway;
/// - the budget is written as `grpc-timeout` when the request's content type is
///   `application/grpc…`, else as `x-request-timeout`, both rounded down. A header of that
///   name the caller set already is kept if it is not longer;
/// - the call itself is abandoned at the (unshrunk) deadline with the same rejection.
#[derive(Copy, Clone, Debug)]
pub struct PropagateDeadlineLayer {
    margin: Duration,
    min_budget: Duration,
}

impl PropagateDeadlineLayer {
    /// The default margin: 5 ms, several times a same-datacenter round trip, small next to any
    /// budget worth propagating.
    pub const DEFAULT_MARGIN: Duration = Duration::from_millis(5);

    /// The layer with the default margin and the default minimum budget
    /// ([`DeadlinePolicy::DEFAULT_MIN_BUDGET`]).
    pub fn new() -> Self {
        PropagateDeadlineLayer {
            margin: PropagateDeadlineLayer::DEFAULT_MARGIN,
            min_budget: DeadlinePolicy::DEFAULT_MIN_BUDGET,
        }
    }

    /// Keeps `margin` of the remaining time out of the budget sent downstream.
    pub fn with_margin(self, margin: Duration) -> Self {
        PropagateDeadlineLayer { margin, ..self }
    }

    /// Fails outgoing calls at once when less than `min_budget` would be sent (a spent budget
    /// always fails).
    pub fn with_min_budget(self, min_budget: Duration) -> Self {
        PropagateDeadlineLayer { min_budget, ..self }
    }
}

impl Default for PropagateDeadlineLayer {
    fn default() -> Self {
        PropagateDeadlineLayer::new()
    }
}

impl<S> Layer<S> for PropagateDeadlineLayer {
    type Service = PropagateDeadline<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PropagateDeadline { inner, layer: *self }
    }
}

/// The service made by [`PropagateDeadlineLayer`].
#[derive(Clone, Debug)]
pub struct PropagateDeadline<S> {
    inner: S,
    layer: PropagateDeadlineLayer,
}

impl<S, B> Service<Request<B>> for PropagateDeadline<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let deadline = match (req.extensions().get::<Deadline>().copied(), super::current()) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(d) => d,
                None => return ResponseFuture::passthrough(self.inner.call(req)),
            },
        };
        let now = TokioClock.now();
        let budget = deadline.downstream_budget(now, self.layer.margin);
        if budget.is_zero() || budget < self.layer.min_budget {
            tracing::debug!(?budget, "deadline too close to call downstream, failing fast");
            return ResponseFuture::refused(Rejection::new(RejectReason::DeadlineExceeded));
        }
        let headers = req.headers_mut();
        let (name, value, parse): (_, _, fn(&[u8]) -> _) = if is_grpc(headers) {
            (GRPC_TIMEOUT_HEADER, format_grpc_timeout(budget), parse_grpc_timeout)
        } else {
            (REQUEST_TIMEOUT_HEADER, format_request_timeout(budget), parse_request_timeout)
        };
        let keep =
            headers.get(name).is_some_and(|v| parse(v.as_bytes()).is_ok_and(|b| b <= budget));
        if !keep {
            if let Ok(value) = HeaderValue::from_str(value.as_str()) {
                headers.insert(name, value);
            }
        }
        ResponseFuture::timed(self.inner.call(req), deadline.remaining(now))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a test failure
mod tests {
    use super::*;
    use crate::deadline::{scope, DeadlineLayer};
    use crate::rejection::find_rejection;
    use std::convert::Infallible;
    use tower::{service_fn, ServiceExt};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The `grpc-timeout` and `x-request-timeout` a downstream received.
    type Seen = (Option<HeaderValue>, Option<HeaderValue>);

    /// A downstream that answers with the timeout headers it received.
    fn echo() -> impl Service<Request<()>, Response = Seen, Error = BoxError> + Clone {
        PropagateDeadlineLayer::new().with_margin(ms(10)).layer(service_fn(
            |req: Request<()>| async move {
                let h = req.headers();
                Ok::<_, Infallible>((
                    h.get(GRPC_TIMEOUT_HEADER).cloned(),
                    h.get(REQUEST_TIMEOUT_HEADER).cloned(),
                ))
            },
        ))
    }

    fn grpc_request() -> Request<()> {
        Request::builder()
            .header(http::header::CONTENT_TYPE, "application/grpc+proto")
            .body(())
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn outgoing_call_gets_the_remaining_budget_minus_the_margin() {
        let policy = DeadlinePolicy::builder(ms(1000)).build().unwrap();
        let server = DeadlineLayer::new(policy).layer(service_fn(|_req: Request<()>| async {
            tokio::time::sleep(ms(100)).await;
            let http = echo().oneshot(Request::new(())).await?;
            let grpc = echo().oneshot(grpc_request()).await?;
            Ok::<_, BoxError>((http.1, grpc.0))
        }));
        let incoming = Request::builder().header(GRPC_TIMEOUT_HEADER, "300m").body(()).unwrap();
        let (http, grpc) = server.oneshot(incoming).await.unwrap();
        // 300 ms - 100 ms spent - 10 ms margin.
        assert_eq!(http, Some(HeaderValue::from_static("190ms")));
        assert_eq!(grpc, Some(HeaderValue::from_static("190000u")));
    }

    #[tokio::test(start_paused = true)]
    async fn spent_budget_fails_fast_without_calling_downstream() {
        let deadline = Deadline::after(TokioClock.now(), ms(8));
        let err = scope(deadline, echo().oneshot(Request::new(()))).await.unwrap_err();
        // 8 ms left, 10 ms margin: nothing to send.
        let reason = find_rejection(err.as_ref()).map(|r| r.reason);
        assert_eq!(reason, Some(RejectReason::DeadlineExceeded));
    }

    #[tokio::test(start_paused = true)]
    async fn outgoing_call_is_abandoned_at_the_deadline() {
        let slow = PropagateDeadlineLayer::new().layer(service_fn(|_req: Request<()>| async {
            tokio::time::sleep(ms(10_000)).await;
            Ok::<_, Infallible>(())
        }));
        let started = tokio::time::Instant::now();
        let deadline = Deadline::after(TokioClock.now(), ms(250));
        let err = scope(deadline, slow.oneshot(Request::new(()))).await.unwrap_err();
        assert!(find_rejection(err.as_ref()).is_some());
        assert_eq!(started.elapsed(), ms(250));
    }

    #[tokio::test(start_paused = true)]
    async fn shorter_header_set_by_the_caller_is_kept_longer_one_replaced() {
        let deadline = Deadline::after(TokioClock.now(), ms(500));
        let short = Request::builder().header(REQUEST_TIMEOUT_HEADER, "50ms").body(()).unwrap();
        let seen = scope(deadline, echo().oneshot(short)).await.unwrap();
        assert_eq!(seen.1, Some(HeaderValue::from_static("50ms")));
        let long = Request::builder().header(REQUEST_TIMEOUT_HEADER, "9s").body(()).unwrap();
        let seen = scope(deadline, echo().oneshot(long)).await.unwrap();
        assert_eq!(seen.1, Some(HeaderValue::from_static("490ms")));
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_in_request_extensions_tightens_the_task_deadline() {
        let task = Deadline::after(TokioClock.now(), ms(500));
        let mut req = Request::new(());
        req.extensions_mut().insert(Deadline::after(TokioClock.now(), ms(100)));
        let seen = scope(task, echo().oneshot(req)).await.unwrap();
        assert_eq!(seen.1, Some(HeaderValue::from_static("90ms")));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_deadline_the_request_passes_untouched() {
        let seen = echo().oneshot(Request::new(())).await.unwrap();
        assert_eq!(seen, (None, None));
    }
}
