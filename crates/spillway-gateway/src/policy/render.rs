//! The one place a refusal becomes a response, for both data paths: status, `Retry-After`,
//! `RateLimit-*` headers and the small JSON body. A gRPC caller gets the same refusal as a
//! trailers-only `grpc-status` (`proxy::grpc::local_answer`), after it was counted and logged
//! with this status.
//!
//! The reason's status, gRPC code and name come from `spillway_core::decision`; this module only
//! lays them out as HTTP.

use spillway_core::Rejection;

/// Which limit refused a request (for `RateLimit-*` and the body's `limit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitInfo {
    /// The limit's name.
    pub name: String,
    /// Its quota (`RateLimit-Limit`).
    pub quota: u64,
}

/// A request refused by admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why, and when to retry.
    pub rejection: Rejection,
    /// The limit that refused, for rate limits.
    pub limit: Option<LimitInfo>,
    /// A status chosen by the config instead of the reason's (an injected fault's).
    pub status: Option<u16>,
}

impl From<Rejection> for Refusal {
    fn from(rejection: Rejection) -> Refusal {
        Refusal { rejection, limit: None, status: None }
    }
}

/// A refusal laid out as an HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Status code.
    pub status: u16,
    /// Header fields.
    pub headers: Vec<(&'static str, String)>,
    /// Body.
    pub body: String,
}

/// Whether a request is a gRPC call (by its `content-type`).
pub fn is_grpc(content_type: Option<&[u8]>) -> bool {
    content_type
        .is_some_and(|ct| ct.len() >= 16 && ct[..16].eq_ignore_ascii_case(b"application/grpc"))
}

/// Lays out `refusal`.
pub fn render(refusal: &Refusal) -> Rendered {
    let r = &refusal.rejection;
    let reason = r.reason.as_str();
    let mut headers = vec![("content-type", "application/json".to_string())];
    if let Some(secs) = r.retry_after_header_secs() {
        headers.push(("retry-after", secs.to_string()));
    }
    let mut body = String::with_capacity(96);
    body.push_str("{\"error\":\"");
    body.push_str(reason);
    body.push('"');
    if let Some(limit) = &refusal.limit {
        headers.push(("ratelimit-limit", limit.quota.to_string()));
        headers.push(("ratelimit-remaining", "0".to_string()));
        let reset = r.retry_after_header_secs().unwrap_or(0);
        headers.push(("ratelimit-reset", reset.to_string()));
        body.push_str(",\"limit\":");
        body.push_str(&serde_json::Value::String(limit.name.clone()).to_string());
    }
    if let Some(after) = r.retry_after {
        body.push_str(",\"retry_after_ms\":");
        body.push_str(&after.as_millis().to_string());
    }
    body.push_str("}\n");
    Rendered { status: refusal.status.unwrap_or(r.reason.http_status()), headers, body }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spillway_core::RejectReason;
    use std::time::Duration;

    #[test]
    fn a_rate_limit_answers_429_with_its_headers_and_name() {
        let refusal = Refusal {
            rejection: Rejection::new(RejectReason::RateLimited)
                .retry_after(Duration::from_millis(1500)),
            limit: Some(LimitInfo { name: "per-key".into(), quota: 200 }),
            status: None,
        };
        let r = render(&refusal);
        assert_eq!(r.status, 429);
        assert!(r.headers.contains(&("retry-after", "2".into())));
        assert!(r.headers.contains(&("ratelimit-limit", "200".into())));
        assert!(r.headers.contains(&("ratelimit-remaining", "0".into())));
        assert!(r.headers.contains(&("ratelimit-reset", "2".into())));
        assert_eq!(
            r.body,
            "{\"error\":\"rate_limited\",\"limit\":\"per-key\",\"retry_after_ms\":1500}\n"
        );
    }

    #[test]
    fn grpc_calls_are_known_by_their_content_type() {
        assert!(is_grpc(Some(b"application/grpc")));
        assert!(is_grpc(Some(b"application/grpc+proto")));
        assert!(!is_grpc(Some(b"application/json")));
        assert!(!is_grpc(None));
    }
}
