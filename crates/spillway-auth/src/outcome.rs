//! What an authentication check concludes, and the `WWW-Authenticate` challenges that go with it.
//!
//! The gateway maps an [`AuthOutcome`] to a response in one place: `Authenticated` forwards the
//! request with the outcome's headers, `Unauthenticated` answers 401 with the carried challenge,
//! `Forbidden` answers 403. Reasons are closed enums with fixed, header-safe descriptions, so a
//! token's content never reaches a response header and metrics can label by [`AuthFailure::code`].

use http::{HeaderName, HeaderValue, StatusCode};

/// The result of checking one request's credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    /// The credentials are valid and grant access.
    Authenticated {
        /// Who the caller is: the API key id, the Basic user name or the token's identity claim.
        identity: String,
        /// Headers to set on the forwarded request: the identity header first (when `forward`
        /// is configured), then the exported claim headers. The gateway must also remove every
        /// name of [`crate::Authenticator::strip_headers`] from the incoming request, so a
        /// client cannot send these itself.
        claims: Vec<(HeaderName, HeaderValue)>,
    },
    /// No usable credentials: answer 401 with `www_authenticate`.
    Unauthenticated {
        /// Why the credentials were refused.
        reason: AuthFailure,
        /// The `WWW-Authenticate` value for the 401 response.
        www_authenticate: HeaderValue,
    },
    /// Valid credentials without access to this route: answer 403.
    Forbidden {
        /// Who the caller is.
        identity: String,
        /// Which requirement failed.
        reason: Denial,
        /// The `WWW-Authenticate` value for the 403 response (RFC 6750 `insufficient_scope` for
        /// bearer tokens).
        www_authenticate: HeaderValue,
    },
}

impl AuthOutcome {
    /// The response status the gateway answers with, or `None` when the request goes on.
    pub fn refusal_status(&self) -> Option<StatusCode> {
        match self {
            AuthOutcome::Authenticated { .. } => None,
            AuthOutcome::Unauthenticated { .. } => Some(StatusCode::UNAUTHORIZED),
            AuthOutcome::Forbidden { .. } => Some(StatusCode::FORBIDDEN),
        }
    }

    /// Whether the request may go on.
    pub fn is_authenticated(&self) -> bool {
        matches!(self, AuthOutcome::Authenticated { .. })
    }

    /// The identity, when the credentials were valid (authenticated or forbidden).
    pub fn identity(&self) -> Option<&str> {
        match self {
            AuthOutcome::Authenticated { identity, .. }
            | AuthOutcome::Forbidden { identity, .. } => Some(identity),
            AuthOutcome::Unauthenticated { .. } => None,
        }
    }
}

/// Why credentials were refused (a 401). The gateway may log or count these by [`Self::code`];
/// the response carries only [`Self::description`], which never names a user or a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthFailure {
    /// The request carries no credentials for this route's scheme.
    MissingCredentials,
    /// The credentials header is present but not in the expected form (wrong scheme, bad
    /// base64, several values, not UTF-8).
    MalformedCredentials,
    /// The API key matches no configured key.
    UnknownApiKey,
    /// Wrong password or unknown user: deliberately one reason, so a response never tells
    /// which.
    BadPassword,
    /// The token is not three base64url parts with a JSON header and JSON object claims.
    MalformedToken,
    /// The token's header says `alg: none`: unsigned tokens are never accepted.
    AlgorithmNone,
    /// The token's algorithm is not in the route's configured list (or unknown).
    AlgorithmNotAllowed,
    /// No key of the JWKS can verify this algorithm: the `kid` is unknown, or the key it names
    /// is of another type (e.g. an RSA key named by an HMAC token — algorithm confusion).
    NoMatchingKey,
    /// The signature does not verify with any fitting key.
    BadSignature,
    /// The token carries no `exp` claim (required), or it is not a number.
    MissingExpiry,
    /// `exp` (plus leeway) has passed.
    Expired,
    /// `nbf` (minus leeway) is still ahead.
    NotYetValid,
    /// `iat` is further in the future than the leeway allows.
    IssuedInFuture,
    /// `iss` is missing or not the configured issuer.
    WrongIssuer,
    /// `aud` is missing or names none of the configured audiences.
    WrongAudience,
    /// The identity claim is missing, not a string or integer, or not valid in a header.
    MissingIdentity,
}

impl AuthFailure {
    /// A stable short code for logs and metrics labels.
    pub fn code(self) -> &'static str {
        match self {
            AuthFailure::MissingCredentials => "missing_credentials",
            AuthFailure::MalformedCredentials => "malformed_credentials",
            AuthFailure::UnknownApiKey => "unknown_api_key",
            AuthFailure::BadPassword => "bad_password",
            AuthFailure::MalformedToken => "malformed_token",
            AuthFailure::AlgorithmNone => "alg_none",
            AuthFailure::AlgorithmNotAllowed => "alg_not_allowed",
            AuthFailure::NoMatchingKey => "no_matching_key",
            AuthFailure::BadSignature => "bad_signature",
            AuthFailure::MissingExpiry => "missing_exp",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid => "not_yet_valid",
            AuthFailure::IssuedInFuture => "issued_in_future",
            AuthFailure::WrongIssuer => "wrong_issuer",
            AuthFailure::WrongAudience => "wrong_audience",
            AuthFailure::MissingIdentity => "missing_identity",
        }
    }

    /// A fixed human sentence for the response (`error_description`): plain visible ASCII
    /// without `"` or `\`, as RFC 6750 §3 allows.
    pub fn description(self) -> &'static str {
        match self {
            AuthFailure::MissingCredentials => "credentials are required",
            AuthFailure::MalformedCredentials => "the credentials are malformed",
            AuthFailure::UnknownApiKey => "the API key is not valid",
            AuthFailure::BadPassword => "the user name or password is not valid",
            AuthFailure::MalformedToken => "the token is malformed",
            AuthFailure::AlgorithmNone => "unsigned tokens are not accepted",
            AuthFailure::AlgorithmNotAllowed => "the token algorithm is not accepted",
            AuthFailure::NoMatchingKey => "no key can verify this token",
            AuthFailure::BadSignature => "the token signature is invalid",
            AuthFailure::MissingExpiry => "the token has no expiry",
            AuthFailure::Expired => "the token has expired",
            AuthFailure::NotYetValid => "the token is not valid yet",
            AuthFailure::IssuedInFuture => "the token is issued in the future",
            AuthFailure::WrongIssuer => "the token issuer is not accepted",
            AuthFailure::WrongAudience => "the token audience is not accepted",
            AuthFailure::MissingIdentity => "the token has no usable identity claim",
        }
    }
}

impl std::fmt::Display for AuthFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.description())
    }
}

/// Why a valid identity has no access to the route (a 403).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Denial {
    /// A `require` rule failed: the claim is missing or has none of the allowed values.
    ClaimNotAllowed {
        /// The claim named by the rule.
        claim: String,
    },
}

impl Denial {
    /// A stable short code for logs and metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            Denial::ClaimNotAllowed { .. } => "claim_not_allowed",
        }
    }

    /// A fixed sentence for the response; the claim name is left out on purpose (it is
    /// config, and the route's rules are not the client's business).
    pub fn description(&self) -> &'static str {
        match self {
            Denial::ClaimNotAllowed { .. } => "the token does not grant access to this resource",
        }
    }
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Denial::ClaimNotAllowed { claim } => {
                write!(f, "claim `{claim}` is missing or has no allowed value")
            }
        }
    }
}

/// The RFC 6750 error code of a bearer challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    /// `invalid_token` (401): expired, malformed, badly signed, wrong audience…
    InvalidToken,
    /// `insufficient_scope` (403): a valid token that does not grant this resource.
    InsufficientScope,
}

impl BearerError {
    fn as_str(self) -> &'static str {
        match self {
            BearerError::InvalidToken => "invalid_token",
            BearerError::InsufficientScope => "insufficient_scope",
        }
    }
}

/// `Bearer realm="…"` (RFC 6750 §3): with `error` and `error_description` when a token was
/// presented and refused; bare when the request had no token (§3.1: then no error code).
///
/// `realm` must already be a valid quoted-string body (the config validates it with
/// [`check_realm`]); `description` must be visible ASCII without `"` or `\` (the fixed
/// descriptions of this crate are). Anything else is dropped rather than producing a bad
/// header.
pub fn bearer_challenge(realm: &str, error: Option<(BearerError, &str)>) -> HeaderValue {
    let text = match error {
        None => format!("Bearer realm=\"{realm}\""),
        Some((code, description)) => format!(
            "Bearer realm=\"{realm}\", error=\"{}\", error_description=\"{}\"",
            code.as_str(),
            quoted_safe(description)
        ),
    };
    header_value_or_bare(text, "Bearer")
}

/// `Basic realm="…", charset="UTF-8"` (RFC 7617 §2.1: the server announces that it expects
/// user names and passwords in UTF-8).
pub fn basic_challenge(realm: &str) -> HeaderValue {
    header_value_or_bare(format!("Basic realm=\"{realm}\", charset=\"UTF-8\""), "Basic")
}

/// `ApiKey realm="…", header="x-api-key"`: API keys have no registered HTTP authentication
/// scheme, but RFC 9110 §11.6.1 requires a 401 to carry a challenge. This crate uses the
/// unregistered scheme name `ApiKey` with a `header` parameter naming where the key goes, so a
/// client (or person) reading the 401 learns how to authenticate; clients ignore unknown
/// schemes.
pub fn api_key_challenge(realm: &str, header: &HeaderName) -> HeaderValue {
    header_value_or_bare(
        format!("ApiKey realm=\"{realm}\", header=\"{}\"", header.as_str()),
        "ApiKey",
    )
}

/// Checks that a realm can sit inside a quoted-string without escaping: 1 to 128 visible
/// ASCII characters or spaces, without `"` or `\`.
pub fn check_realm(realm: &str) -> Result<(), &'static str> {
    if realm.is_empty() || realm.len() > 128 {
        return Err("must be 1 to 128 characters long");
    }
    if realm.bytes().all(|b| (b == b' ' || b.is_ascii_graphic()) && b != b'"' && b != b'\\') {
        Ok(())
    } else {
        Err("may hold only visible ASCII characters and spaces, without `\"` or `\\`")
    }
}

fn quoted_safe(text: &str) -> String {
    text.chars()
        .filter(|c| (*c == ' ' || c.is_ascii_graphic()) && *c != '"' && *c != '\\')
        .collect()
}

fn header_value_or_bare(text: String, scheme: &'static str) -> HeaderValue {
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static(scheme))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_challenge_without_token_has_no_error_code() {
        assert_eq!(bearer_challenge("spillway", None), "Bearer realm=\"spillway\"");
    }

    #[test]
    fn bearer_challenge_names_error_and_description() {
        let value = bearer_challenge(
            "api",
            Some((BearerError::InvalidToken, AuthFailure::Expired.description())),
        );
        assert_eq!(
            value,
            "Bearer realm=\"api\", error=\"invalid_token\", error_description=\"the token has expired\""
        );
    }

    #[test]
    fn bearer_description_drops_quote_and_backslash() {
        let value = bearer_challenge("r", Some((BearerError::InsufficientScope, "a\"b\\c\nd")));
        assert_eq!(
            value,
            "Bearer realm=\"r\", error=\"insufficient_scope\", error_description=\"abcd\""
        );
    }

    #[test]
    fn basic_challenge_announces_utf8() {
        assert_eq!(basic_challenge("spillway"), "Basic realm=\"spillway\", charset=\"UTF-8\"");
    }

    #[test]
    fn api_key_challenge_names_the_header() {
        let header = HeaderName::from_static("x-api-key");
        assert_eq!(
            api_key_challenge("spillway", &header),
            "ApiKey realm=\"spillway\", header=\"x-api-key\""
        );
    }

    #[test]
    fn realms_with_quotes_or_controls_are_refused() {
        assert!(check_realm("my api").is_ok());
        assert!(check_realm("").is_err());
        assert!(check_realm("a\"b").is_err());
        assert!(check_realm("a\\b").is_err());
        assert!(check_realm("a\nb").is_err());
        assert!(check_realm("é").is_err());
    }

    #[test]
    fn every_description_is_header_safe() {
        let all = [
            AuthFailure::MissingCredentials,
            AuthFailure::MalformedCredentials,
            AuthFailure::UnknownApiKey,
            AuthFailure::BadPassword,
            AuthFailure::MalformedToken,
            AuthFailure::AlgorithmNone,
            AuthFailure::AlgorithmNotAllowed,
            AuthFailure::NoMatchingKey,
            AuthFailure::BadSignature,
            AuthFailure::MissingExpiry,
            AuthFailure::Expired,
            AuthFailure::NotYetValid,
            AuthFailure::IssuedInFuture,
            AuthFailure::WrongIssuer,
            AuthFailure::WrongAudience,
            AuthFailure::MissingIdentity,
        ];
        for failure in all {
            assert_eq!(quoted_safe(failure.description()), failure.description(), "{failure:?}");
        }
    }

    #[test]
    fn refusal_status_maps_401_and_403() {
        let ok = AuthOutcome::Authenticated { identity: "a".into(), claims: vec![] };
        let unauth = AuthOutcome::Unauthenticated {
            reason: AuthFailure::Expired,
            www_authenticate: HeaderValue::from_static("Bearer"),
        };
        let forbidden = AuthOutcome::Forbidden {
            identity: "a".into(),
            reason: Denial::ClaimNotAllowed { claim: "tier".into() },
            www_authenticate: HeaderValue::from_static("Bearer"),
        };
        assert_eq!(ok.refusal_status(), None);
        assert_eq!(unauth.refusal_status(), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(forbidden.refusal_status(), Some(StatusCode::FORBIDDEN));
        assert_eq!(forbidden.identity(), Some("a"));
        assert_eq!(unauth.identity(), None);
    }
}
