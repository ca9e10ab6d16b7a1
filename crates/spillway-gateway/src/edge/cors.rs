//! CORS at the gateway (the Fetch standard's CORS protocol): a preflight (`OPTIONS` with
//! `Access-Control-Request-Method`) is answered here, 204 when the route's `cors:` allows the
//! origin, the method and every requested header, 403 otherwise; a cross-origin request from
//! an allowed origin goes on and its answer gets `Access-Control-Allow-Origin` (and
//! `-Credentials`, `-Expose-Headers`). Every answer of a CORS route varies by `Origin`.
//!
//! A request from an origin that is not allowed is still proxied, without the headers: CORS
//! keeps other sites' pages from *reading* answers, it does not authorise requests.

use super::{Decoration, EdgeAnswer};
use crate::config::edge::{CorsSettings, OriginPattern};
use crate::policy::classify::RequestView;
use crate::proxy::errors;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, VARY,
};
use http::HeaderValue;

/// Applies `settings` to a request with method `method`.
pub fn apply(
    settings: &CorsSettings,
    method: &str,
    view: &dyn RequestView,
) -> Result<Decoration, EdgeAnswer> {
    let vary = (VARY, HeaderValue::from_static("origin"));
    let Some(origin) = view.header("origin") else {
        return Ok(vec![vary]);
    };
    let allowed = settings.origins.iter().any(|o| o.matches(origin));
    let allow_origin = if settings.credentials || !settings.origins.contains(&OriginPattern::Any) {
        HeaderValue::from_bytes(origin).ok()
    } else {
        Some(HeaderValue::from_static("*"))
    };
    let preflight = method.eq_ignore_ascii_case("OPTIONS")
        && view.header("access-control-request-method").is_some();
    if preflight {
        return Err(preflight_answer(settings, view, allowed, allow_origin));
    }
    let mut fields = vec![vary];
    if let (true, Some(allow_origin)) = (allowed, allow_origin) {
        fields.push((ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin));
        if settings.credentials {
            fields.push((ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true")));
        }
        if let Some(expose) = &settings.expose_headers {
            fields.push((ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone()));
        }
    }
    Ok(fields)
}

fn preflight_answer(
    settings: &CorsSettings,
    view: &dyn RequestView,
    allowed: bool,
    allow_origin: Option<HeaderValue>,
) -> EdgeAnswer {
    let vary = (
        VARY,
        HeaderValue::from_static(
            "origin, access-control-request-method, access-control-request-headers",
        ),
    );
    let refused =
        EdgeAnswer { status: 403, body: errors::CORS_REFUSED, headers: vec![vary.clone()] };
    let Some(allow_origin) = allow_origin.filter(|_| allowed) else { return refused };
    let method = view.header("access-control-request-method").unwrap_or_default();
    if !settings.methods.iter().any(|m| m.as_bytes().eq_ignore_ascii_case(method.trim_ascii())) {
        return refused;
    }
    let any_header = settings.headers.iter().any(|h| h == "*");
    let mut requested = Vec::new();
    view.header_values("access-control-request-headers", &mut |v| {
        for name in v.split(|b| *b == b',') {
            let name = name.trim_ascii();
            if !name.is_empty() {
                requested.push(name.to_ascii_lowercase());
            }
        }
    });
    if !any_header && !requested.iter().all(|r| settings.headers.iter().any(|h| h.as_bytes() == r))
    {
        return refused;
    }
    let mut headers = vec![vary, (ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin)];
    if let Some(methods) = &settings.allow_methods {
        headers.push((ACCESS_CONTROL_ALLOW_METHODS, methods.clone()));
    }
    if !requested.is_empty() {
        let list = requested.join(b", ".as_slice());
        if let Ok(v) = HeaderValue::from_bytes(&list) {
            headers.push((ACCESS_CONTROL_ALLOW_HEADERS, v));
        }
    }
    if settings.credentials {
        headers.push((ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true")));
    }
    headers.push((ACCESS_CONTROL_MAX_AGE, HeaderValue::from(settings.max_age.as_secs())));
    EdgeAnswer { status: 204, body: "", headers }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use std::time::Duration;

    struct View(Vec<(&'static str, &'static str)>);

    impl RequestView for View {
        fn header(&self, name: &str) -> Option<&[u8]> {
            self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_bytes())
        }
        fn header_values(&self, name: &str, each: &mut dyn FnMut(&[u8])) {
            self.0.iter().filter(|(n, _)| *n == name).for_each(|(_, v)| each(v.as_bytes()));
        }
        fn path(&self) -> &str {
            "/"
        }
        fn query(&self) -> Option<&str> {
            None
        }
        fn peer(&self) -> IpAddr {
            IpAddr::from([127, 0, 0, 1])
        }
        fn body_len(&self) -> Option<u64> {
            None
        }
    }

    fn settings(origins: &[OriginPattern], credentials: bool) -> CorsSettings {
        CorsSettings::new(
            origins.to_vec(),
            vec!["GET".into(), "POST".into()],
            vec!["content-type".into(), "x-trace".into()],
            vec!["x-request-id".into()],
            credentials,
            Duration::from_secs(600),
        )
    }

    fn app() -> OriginPattern {
        OriginPattern::Exact("https://app.example".into())
    }

    fn field<'a>(fields: &'a [(http::HeaderName, HeaderValue)], name: &str) -> Option<&'a str> {
        fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.to_str().unwrap())
    }

    #[test]
    fn a_preflight_from_an_allowed_origin_is_answered_with_what_it_may_do() {
        let s = settings(&[app()], true);
        let v = View(vec![
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "Content-Type, X-Trace"),
        ]);
        let answer = apply(&s, "OPTIONS", &v).unwrap_err();
        assert_eq!(answer.status, 204);
        let h = &answer.headers;
        assert_eq!(field(h, "access-control-allow-origin"), Some("https://app.example"));
        assert_eq!(field(h, "access-control-allow-methods"), Some("GET, POST"));
        assert_eq!(field(h, "access-control-allow-headers"), Some("content-type, x-trace"));
        assert_eq!(field(h, "access-control-allow-credentials"), Some("true"));
        assert_eq!(field(h, "access-control-max-age"), Some("600"));
        assert!(field(h, "vary").unwrap().contains("origin"));
    }

    #[test]
    fn a_preflight_from_a_refused_origin_or_for_a_refused_method_or_header_gets_403() {
        let s = settings(&[app()], false);
        for headers in [
            vec![("origin", "https://evil.example"), ("access-control-request-method", "GET")],
            vec![("origin", "https://app.example"), ("access-control-request-method", "DELETE")],
            vec![
                ("origin", "https://app.example"),
                ("access-control-request-method", "GET"),
                ("access-control-request-headers", "x-secret"),
            ],
        ] {
            let answer = apply(&s, "OPTIONS", &View(headers.clone())).unwrap_err();
            assert_eq!(answer.status, 403, "{headers:?}");
            assert_eq!(field(&answer.headers, "access-control-allow-origin"), None);
        }
    }

    #[test]
    fn a_cross_origin_request_is_decorated_only_for_an_allowed_origin() {
        let s = settings(
            &[OriginPattern::Subdomains {
                scheme: "https://".into(),
                suffix: ".example.com".into(),
            }],
            true,
        );
        let ok = apply(&s, "GET", &View(vec![("origin", "https://shop.example.com")])).unwrap();
        assert_eq!(field(&ok, "access-control-allow-origin"), Some("https://shop.example.com"));
        assert_eq!(field(&ok, "access-control-allow-credentials"), Some("true"));
        assert_eq!(field(&ok, "access-control-expose-headers"), Some("x-request-id"));
        for origin in
            ["https://example.com.evil.net", "http://shop.example.com", "https://example.com"]
        {
            let other = apply(&s, "GET", &View(vec![("origin", origin)])).unwrap();
            assert_eq!(field(&other, "access-control-allow-origin"), None, "{origin}");
            assert_eq!(field(&other, "vary"), Some("origin"));
        }
        // No origin: same-origin or not a browser; only `Vary`.
        assert_eq!(apply(&s, "GET", &View(vec![])).unwrap().len(), 1);
        // An OPTIONS without Access-Control-Request-Method is an ordinary request.
        assert!(apply(&s, "OPTIONS", &View(vec![("origin", "https://a.example.com")])).is_ok());
    }

    #[test]
    fn any_origin_without_credentials_answers_a_star() {
        let s = settings(&[OriginPattern::Any], false);
        let ok = apply(&s, "GET", &View(vec![("origin", "https://x.test")])).unwrap();
        assert_eq!(field(&ok, "access-control-allow-origin"), Some("*"));
    }
}
