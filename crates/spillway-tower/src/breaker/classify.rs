//! How a layer judges a call's result: did the backend accept it, fail it, or is the result
//! no evidence about the backend at all?
//!
//! Why a separate, replaceable piece: what counts as failure depends on the protocol (gRPC
//! puts errors in trailers, some APIs answer errors with 200), while the breakers only need
//! the verdict. The default, [`HttpClassifier`], also enforces the rule that matters most: a
//! rejection made by another Spillway layer is [`Outcome::Ignored`], never a backend failure
//! (kratos#2777).

use crate::deadline::is_timed_out;
use crate::rejection::{find_rejection, BoxError};
use http::Response;
use spillway_core::breaker::Outcome;

/// Judges a call's result for a breaker or throttle.
///
/// Implemented by [`HttpClassifier`] and by any `Fn(&Result<Res, BoxError>) -> Outcome`.
pub trait Classify<Res> {
    /// The verdict on one result.
    fn classify(&self, result: &Result<Res, BoxError>) -> Outcome;
}

impl<Res, F> Classify<Res> for F
where
    F: Fn(&Result<Res, BoxError>) -> Outcome,
{
    #[inline]
    fn classify(&self, result: &Result<Res, BoxError>) -> Outcome {
        self(result)
    }
}

/// The default HTTP judgement:
/// - a 5xx or 429 response, or an error from the transport or a timeout (including a Spillway
///   [`TimedOut`](crate::deadline::TimedOut): the call was made and not answered in time):
///   [`Outcome::Failure`];
/// - any other response (2xx, 3xx, 4xx — the backend judged the request): [`Outcome::Success`];
/// - any other error carrying a Spillway [`Rejected`](crate::Rejected) anywhere in its source
///   chain (a limiter, shedder or breaker refused locally): [`Outcome::Ignored`].
#[derive(Copy, Clone, Debug, Default)]
pub struct HttpClassifier;

impl<B> Classify<Response<B>> for HttpClassifier {
    #[inline]
    fn classify(&self, result: &Result<Response<B>, BoxError>) -> Outcome {
        match result {
            Ok(response) => {
                let status = response.status();
                if status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS {
                    Outcome::Failure
                } else {
                    Outcome::Success
                }
            }
            Err(error) => {
                if is_timed_out(error.as_ref()) {
                    Outcome::Failure
                } else if find_rejection(error.as_ref()).is_some() {
                    Outcome::Ignored
                } else {
                    Outcome::Failure
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rejected;
    use spillway_core::RejectReason;

    fn response(status: u16) -> Result<Response<()>, BoxError> {
        let mut r = Response::new(());
        *r.status_mut() = http::StatusCode::from_u16(status).expect("valid status");
        Ok(r)
    }

    #[test]
    fn server_errors_and_429_are_failures_other_answers_successes() {
        let c = HttpClassifier;
        for status in [500, 502, 503, 504, 429] {
            assert_eq!(c.classify(&response(status)), Outcome::Failure, "{status}");
        }
        for status in [200, 204, 301, 400, 404, 409] {
            assert_eq!(c.classify(&response(status)), Outcome::Success, "{status}");
        }
    }

    #[test]
    fn local_rejections_are_ignored_transport_errors_fail() {
        let c = HttpClassifier;
        let local: Result<Response<()>, BoxError> =
            Err(Box::new(Rejected::new(RejectReason::RateLimited)));
        assert_eq!(c.classify(&local), Outcome::Ignored);
        let transport: Result<Response<()>, BoxError> = Err("connection reset".into());
        assert_eq!(c.classify(&transport), Outcome::Failure);
    }

    #[tokio::test(start_paused = true)]
    async fn call_cut_off_by_a_timeout_is_a_failure_a_call_never_made_is_ignored() {
        use crate::deadline::{scope, Deadline, PropagateDeadlineLayer, TimeoutLayer, TokioClock};
        use spillway_core::Clock;
        use std::time::Duration;
        use tower::{service_fn, Layer, ServiceExt};
        let hanging = service_fn(|_req: http::Request<()>| async {
            std::future::pending::<Result<Response<()>, BoxError>>().await
        });
        let c = HttpClassifier;
        // Made, then not answered in time: the backend's failure.
        let timeout = TimeoutLayer::new(Duration::from_millis(100)).layer(hanging);
        let timed_out = timeout.oneshot(http::Request::new(())).await;
        assert_eq!(c.classify(&timed_out), Outcome::Failure);
        let deadline = Deadline::after(TokioClock.now(), Duration::from_millis(100));
        let propagate = PropagateDeadlineLayer::new().layer(hanging);
        let cut_off = scope(deadline, propagate.clone().oneshot(http::Request::new(()))).await;
        assert_eq!(c.classify(&cut_off), Outcome::Failure);
        // Not made, the deadline being too close: says nothing about the backend.
        let deadline = Deadline::after(TokioClock.now(), Duration::from_millis(1));
        let refused = scope(deadline, propagate.oneshot(http::Request::new(()))).await;
        assert_eq!(c.classify(&refused), Outcome::Ignored);
        // Both still render as 504 deadline_exceeded.
        for result in [&timed_out, &cut_off, &refused] {
            let error = result.as_ref().err().map(|e| find_rejection(e.as_ref()));
            assert_eq!(error.flatten().map(|r| r.reason), Some(RejectReason::DeadlineExceeded));
        }
    }
}
