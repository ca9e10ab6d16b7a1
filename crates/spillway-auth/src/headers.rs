//! Small shared pieces: validating configured header names and realms, and reading one
//! credential header from a request without ambiguity.

use crate::error::ConfigError;
use crate::outcome::{check_realm, AuthFailure};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Headers an identity may never be forwarded in: they frame or route the request, or carry
/// credentials.
const RESERVED_OUTPUT_HEADERS: [&str; 6] =
    ["host", "content-length", "transfer-encoding", "connection", "authorization", "cookie"];

/// Parses a configured header name (`key` is the config path for the error).
pub(crate) fn header_name(key: &str, value: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::from_bytes(value.trim().as_bytes())
        .map_err(|_| ConfigError::BadHeaderName { key: key.to_owned(), value: value.to_owned() })
}

/// Parses a header the gateway will set from an identity or claim: a valid name, not a
/// reserved one, and not already used by `taken` (earlier outputs and the credential header).
pub(crate) fn output_header_name(
    key: &str,
    value: &str,
    taken: &mut Vec<HeaderName>,
) -> Result<HeaderName, ConfigError> {
    let name = header_name(key, value)?;
    if RESERVED_OUTPUT_HEADERS.contains(&name.as_str()) {
        return Err(ConfigError::ReservedHeader { key: key.to_owned(), value: value.to_owned() });
    }
    if taken.contains(&name) {
        return Err(ConfigError::DuplicateHeader { key: key.to_owned(), value: value.to_owned() });
    }
    taken.push(name.clone());
    Ok(name)
}

/// The configured realm or [`crate::config::DEFAULT_REALM`], checked for quoting.
pub(crate) fn realm(key: &str, value: Option<&str>) -> Result<String, ConfigError> {
    let realm = value.unwrap_or(crate::config::DEFAULT_REALM);
    check_realm(realm).map_err(|reason| ConfigError::BadRealm {
        key: key.to_owned(),
        value: realm.to_owned(),
        reason,
    })?;
    Ok(realm.to_owned())
}

/// The one value of `name`: `MissingCredentials` when absent or empty, `MalformedCredentials`
/// when sent several times (which one would count is ambiguous, so neither does).
pub(crate) fn single_value<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Result<&'a HeaderValue, AuthFailure> {
    let mut values = headers.get_all(name).iter();
    let first = values.next().ok_or(AuthFailure::MissingCredentials)?;
    if values.next().is_some() {
        return Err(AuthFailure::MalformedCredentials);
    }
    if first.as_bytes().iter().all(u8::is_ascii_whitespace) {
        return Err(AuthFailure::MissingCredentials);
    }
    Ok(first)
}

/// The credentials after `scheme ` in the `Authorization` header (scheme matched without
/// regard to case, RFC 9110 §11.1). `MissingCredentials` when the header is absent or uses
/// another scheme — a route that wants Bearer treats a Basic header as "no bearer token".
pub(crate) fn authorization_credentials<'a>(
    headers: &'a HeaderMap,
    scheme: &str,
) -> Result<&'a [u8], AuthFailure> {
    let value = single_value(headers, &http::header::AUTHORIZATION)?.as_bytes();
    let value = value.trim_ascii();
    let Some(split) = value.iter().position(|b| *b == b' ') else {
        return if value.eq_ignore_ascii_case(scheme.as_bytes()) {
            Err(AuthFailure::MalformedCredentials)
        } else {
            Err(AuthFailure::MissingCredentials)
        };
    };
    let (given_scheme, rest) = value.split_at(split);
    if !given_scheme.eq_ignore_ascii_case(scheme.as_bytes()) {
        return Err(AuthFailure::MissingCredentials);
    }
    let credentials = rest.trim_ascii();
    if credentials.is_empty() {
        return Err(AuthFailure::MalformedCredentials);
    }
    Ok(credentials)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::AUTHORIZATION;

    fn with_authorization(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(AUTHORIZATION, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn scheme_is_matched_without_case() {
        let headers = with_authorization(&["bEaReR  abc.def.ghi "]);
        assert_eq!(authorization_credentials(&headers, "Bearer"), Ok(&b"abc.def.ghi"[..]));
    }

    #[test]
    fn another_scheme_counts_as_missing() {
        let headers = with_authorization(&["Basic YTpi"]);
        assert_eq!(
            authorization_credentials(&headers, "Bearer"),
            Err(AuthFailure::MissingCredentials)
        );
    }

    #[test]
    fn scheme_without_credentials_is_malformed() {
        let headers = with_authorization(&["Bearer"]);
        assert_eq!(
            authorization_credentials(&headers, "Bearer"),
            Err(AuthFailure::MalformedCredentials)
        );
    }

    #[test]
    fn two_authorization_headers_are_malformed() {
        let headers = with_authorization(&["Bearer a", "Bearer b"]);
        assert_eq!(
            authorization_credentials(&headers, "Bearer"),
            Err(AuthFailure::MalformedCredentials)
        );
    }

    #[test]
    fn output_headers_cannot_repeat_or_be_reserved() {
        let mut taken = vec![HeaderName::from_static("x-api-key")];
        assert!(output_header_name("forward", "x-user", &mut taken).is_ok());
        assert!(matches!(
            output_header_name("claim_headers.a", "X-User", &mut taken),
            Err(ConfigError::DuplicateHeader { .. })
        ));
        assert!(matches!(
            output_header_name("forward", "x-api-key", &mut taken),
            Err(ConfigError::DuplicateHeader { .. })
        ));
        assert!(matches!(
            output_header_name("forward", "Host", &mut taken),
            Err(ConfigError::ReservedHeader { .. })
        ));
        assert!(matches!(
            output_header_name("forward", "bad header", &mut taken),
            Err(ConfigError::BadHeaderName { .. })
        ));
    }
}
