//! How a layer refuses a request: the [`Rejected`] error and its HTTP rendering.
//!
//! The status code and JSON body come from `spillway-core` ([`RejectReason::http_status`],
//! [`Rejection::json_body`]): one mapping for every layer and for the gateway.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use spillway_core::{RejectReason, Rejection};

/// The error type that layers box their errors into.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A layer refused the request before (or instead of) calling the inner service.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("request rejected: {0}")]
pub struct Rejected(pub Rejection);

impl Rejected {
    /// A rejection for `reason` without a retry hint.
    pub fn new(reason: RejectReason) -> Rejected {
        Rejected(Rejection::new(reason))
    }
}

impl From<Rejection> for Rejected {
    fn from(r: Rejection) -> Rejected {
        Rejected(r)
    }
}

/// The HTTP response for a rejection: its status (429 / 503 / 504), `Retry-After` in whole
/// seconds when known, and a JSON body naming the reason.
pub fn rejection_response(rejection: &Rejection) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(rejection.reason.http_status())
        .unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let mut response = Response::new(Full::new(Bytes::from(rejection.json_body())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(secs) = rejection.retry_after_header_secs() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// The rejection response suited to the request: gRPC requests (`content-type:
/// application/grpc…`) get a trailers-only gRPC error (HTTP 200, `grpc-status`,
/// `grpc-message`), everything else the HTTP answer of [`rejection_response`].
pub fn rejection_response_for<B>(
    request: &http::Request<B>,
    rejection: &Rejection,
) -> Response<Full<Bytes>> {
    if is_grpc(request.headers()) {
        grpc_rejection_response(rejection)
    } else {
        rejection_response(rejection)
    }
}

/// True when the headers announce a gRPC call.
pub fn is_grpc(headers: &http::HeaderMap) -> bool {
    headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// A trailers-only gRPC error for a rejection: HTTP 200 with `grpc-status` and `grpc-message`
/// in the headers and an empty body, as the gRPC over HTTP/2 protocol specifies.
pub fn grpc_rejection_response(rejection: &Rejection) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(u16::from(rejection.reason.grpc_status())));
    headers.insert("grpc-message", HeaderValue::from_static(rejection.reason.as_str()));
    if let Some(secs) = rejection.retry_after_header_secs() {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

/// Finds a [`Rejected`] anywhere in an error's source chain (layers may wrap it).
pub fn find_rejection(error: &(dyn std::error::Error + 'static)) -> Option<Rejection> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(r) = e.downcast_ref::<Rejected>() {
            return Some(r.0);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::time::Duration;

    #[tokio::test]
    async fn rate_limited_rejection_is_429_with_retry_after_and_json_reason() {
        let r = Rejection::new(RejectReason::RateLimited).retry_after(Duration::from_millis(1200));
        let response = rejection_response(&r);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let body = response.into_body().collect().await.map(|b| b.to_bytes());
        assert_eq!(
            body.ok().as_deref(),
            Some(&b"{\"error\":\"rate_limited\",\"retry_after_ms\":1200}\n"[..])
        );
    }

    #[test]
    fn grpc_requests_get_a_trailers_only_grpc_status_instead_of_an_http_error() {
        let request = http::Request::builder()
            .header(header::CONTENT_TYPE, "application/grpc+proto")
            .body(())
            .unwrap();
        let r = Rejection::new(RejectReason::DeadlineExceeded);
        let response = rejection_response_for(&request, &r);
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "4");
        assert_eq!(response.headers()["grpc-message"], "deadline_exceeded");
        let plain = http::Request::new(());
        assert_eq!(rejection_response_for(&plain, &r).status(), StatusCode::GATEWAY_TIMEOUT);
    }

    #[test]
    fn rejection_is_found_through_wrapping_errors() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] Rejected);
        let e = Outer(Rejected::new(RejectReason::CircuitOpen));
        assert_eq!(find_rejection(&e).map(|r| r.reason), Some(RejectReason::CircuitOpen));
    }
}
