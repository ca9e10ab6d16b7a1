//! `GET /dashboard`: the built-in live dashboard, one HTML page with its script and style sheet
//! compiled into the binary (`include_str!`: no CDN, works without internet).
//!
//! The page holds no data, so it is served without the admin token, like `/metrics`; its
//! script reads `GET /admin/stream` (one JSON snapshot a second, [`super::stream`]) with
//! `fetch` and an `Authorization` header — `EventSource` cannot send one — and switches plans
//! with `POST /admin/plans/{name}/activate|deactivate`. It asks for the token only when the
//! stream answers 401, and keeps it in the tab's `sessionStorage`. Charts are hand-drawn SVG
//! computed from the differences between consecutive snapshots (rates, latency quantiles from
//! histogram deltas), over the last five minutes.
//!
//! Every answer carries `Cache-Control: no-cache` (a new binary's page is never mixed with an
//! old script) and a strict `Content-Security-Policy`: scripts, styles and connections from the
//! admin listener itself only, no inline script, no framing.

use super::AdminBody;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

/// The page.
pub const INDEX_HTML: &str = include_str!("dashboard/index.html");
/// Its script: the stream reader, the charts and the tables.
pub const DASHBOARD_JS: &str = include_str!("dashboard/dashboard.js");
/// Its style sheet.
pub const DASHBOARD_CSS: &str = include_str!("dashboard/dashboard.css");

/// The policy every dashboard answer carries: nothing but this listener's own script, style,
/// and fetches; SVG drawn by the script needs no other source.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One embedded file: its path under the admin listener, content type and text.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    text: &'static str,
}

const ASSETS: [Asset; 4] = [
    Asset { path: "/dashboard", content_type: "text/html; charset=utf-8", text: INDEX_HTML },
    Asset { path: "/dashboard/", content_type: "text/html; charset=utf-8", text: INDEX_HTML },
    Asset {
        path: "/dashboard/dashboard.js",
        content_type: "text/javascript; charset=utf-8",
        text: DASHBOARD_JS,
    },
    Asset {
        path: "/dashboard/dashboard.css",
        content_type: "text/css; charset=utf-8",
        text: DASHBOARD_CSS,
    },
];

/// Whether `path` belongs to the dashboard (the page or one of its files).
pub fn owns(path: &str) -> bool {
    path == "/dashboard" || path.starts_with("/dashboard/")
}

/// The answer to `GET path` for a dashboard path: the file, or 404 for a name it does not
/// have.
pub fn serve(path: &str) -> Response<AdminBody> {
    let (status, content_type, body) = match ASSETS.iter().find(|a| a.path == path) {
        Some(asset) => {
            (StatusCode::OK, asset.content_type, Bytes::from_static(asset.text.as_bytes()))
        }
        None => (
            StatusCode::NOT_FOUND,
            "application/json",
            Bytes::from_static(b"{\"error\":\"not_found\"}\n"),
        ),
    };
    let mut resp = Response::new(Full::new(body).boxed());
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers
        .insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `src="…"` and `href="…"` values of the page.
    fn references(html: &str) -> Vec<&str> {
        let mut found = Vec::new();
        for attr in ["src=\"", "href=\""] {
            let mut rest = html;
            while let Some(at) = rest.find(attr) {
                rest = &rest[at + attr.len()..];
                let end = rest.find('"').unwrap_or(rest.len());
                found.push(&rest[..end]);
            }
        }
        found
    }

    #[test]
    fn every_file_the_page_references_is_served_from_the_binary() {
        let refs = references(INDEX_HTML);
        assert!(refs.contains(&"/dashboard/dashboard.js"), "{refs:?}");
        assert!(refs.contains(&"/dashboard/dashboard.css"), "{refs:?}");
        for r in refs {
            assert!(
                owns(r),
                "{r} is not a dashboard path: the CSP or a missing CDN would block it"
            );
            assert_eq!(serve(r).status(), StatusCode::OK, "{r}");
        }
    }

    #[test]
    fn the_page_has_no_inline_script_for_the_csp_to_block() {
        assert!(
            !INDEX_HTML.contains("<script>"),
            "inline scripts are refused by script-src 'self'"
        );
        assert!(!INDEX_HTML.contains(" style=\""), "inline styles are refused by style-src 'self'");
        assert!(!INDEX_HTML.contains(" onclick="), "inline handlers are refused");
    }

    #[test]
    fn unknown_dashboard_files_are_404_and_others_are_not_ours() {
        assert_eq!(serve("/dashboard/nope.js").status(), StatusCode::NOT_FOUND);
        assert!(!owns("/dashboards"));
        assert!(owns("/dashboard"));
        assert!(owns("/dashboard/dashboard.js"));
    }
}
