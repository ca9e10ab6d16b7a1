//! Authentication at the edge (`auth:`): the route's `spillway_auth::Authenticator` judges the
//! request; a caller without valid credentials gets 401 with `WWW-Authenticate`, a valid one
//! without access 403, and an admitted one goes on with its identity (and exported claims) in
//! the configured headers — which are first removed from what the client sent, so no client
//! can claim an identity by sending the header itself.
//!
//! Verifying a Basic password costs tens of milliseconds (argon2, bcrypt): a recently
//! verified pair is answered from the authenticator's cache on the worker, and a miss is
//! verified on tokio's blocking pool so the worker goes on serving other requests meanwhile.
//! API keys and JWTs are checked on the worker (microseconds).
//!
//! Routes with `auth:` are served by the hyper path: identity headers are set before
//! admission reads the request, so a limit keyed on `header:x-user-id` counts the verified
//! identity, never a value the client wrote.

use super::EdgeAnswer;
use crate::config::edge::RouteAuth;
use crate::proxy::errors;
use http::{header, HeaderMap, HeaderName, HeaderValue};
use spillway_auth::{AuthOutcome, Authenticator};
use std::sync::Arc;

/// Judges the request with headers `headers` at `now_unix_secs`: the headers to set on the
/// request going upstream, or the answer.
pub async fn authenticate(
    auth: &RouteAuth,
    headers: &HeaderMap,
    now_unix_secs: u64,
) -> Result<Vec<(HeaderName, HeaderValue)>, EdgeAnswer> {
    let outcome = match &*auth.authenticator {
        Authenticator::Basic(basic) => match basic.parse_credentials(headers) {
            Err(refusal) => refusal,
            Ok(credentials) => match basic.cached(&credentials, now_unix_secs) {
                Some(outcome) => outcome,
                None => {
                    let authenticator = Arc::clone(&auth.authenticator);
                    let verified = tokio::task::spawn_blocking(move || match &*authenticator {
                        Authenticator::Basic(basic) => {
                            Some(basic.verify_basic(&credentials, now_unix_secs))
                        }
                        _ => None,
                    })
                    .await;
                    match verified {
                        Ok(Some(outcome)) => outcome,
                        // The pool is gone (shutdown) or the verification panicked: refuse.
                        _ => return Err(unavailable()),
                    }
                }
            },
        },
        other => other.authenticate(headers, now_unix_secs),
    };
    answer(outcome)
}

fn answer(outcome: AuthOutcome) -> Result<Vec<(HeaderName, HeaderValue)>, EdgeAnswer> {
    match outcome {
        AuthOutcome::Authenticated { claims, .. } => Ok(claims),
        AuthOutcome::Unauthenticated { www_authenticate, .. } => Err(EdgeAnswer {
            status: 401,
            body: errors::UNAUTHENTICATED,
            headers: vec![(header::WWW_AUTHENTICATE, www_authenticate)],
        }),
        AuthOutcome::Forbidden { www_authenticate, .. } => Err(EdgeAnswer {
            status: 403,
            body: errors::FORBIDDEN,
            headers: vec![(header::WWW_AUTHENTICATE, www_authenticate)],
        }),
    }
}

fn unavailable() -> EdgeAnswer {
    EdgeAnswer { status: 503, body: errors::AUTH_UNAVAILABLE, headers: Vec::new() }
}

/// Removes the route's identity headers from `headers` (what the client sent), then sets
/// `claims` (what the authenticator vouches for).
pub fn forward(auth: &RouteAuth, headers: &mut HeaderMap, claims: Vec<(HeaderName, HeaderValue)>) {
    for name in &auth.strip {
        headers.remove(name);
    }
    for (name, value) in claims {
        headers.insert(name, value);
    }
}

/// The seconds since the Unix epoch now (token expiry is wall-clock time).
pub fn now_unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
