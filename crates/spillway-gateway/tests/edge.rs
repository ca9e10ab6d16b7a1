//! The edge, end to end on both data paths: IP allow/deny lists on listeners and routes
//! (behind a trusted proxy too), request limits (413, 414, 431) and CORS (a preflight from an
//! allowed and from a refused origin, a cross-origin request decorated).

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http::{HeaderMap, Method, Request, StatusCode};
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Via {
    Lean,
    Hyper,
}

struct Gw {
    gw: Option<spillway_gateway::Gateway>,
    lean: SocketAddr,
    h2: SocketAddr,
    backend: Arc<BackendState>,
}

impl Gw {
    async fn start(listener_extra: &str, top: &str, routes: &str) -> Gw {
        let (b, backend) = backend("app").await;
        let yaml = format!(
            r#"
workers: 1
listeners:
  - {{ name: lean, address: "127.0.0.1:0", protocol: http1{listener_extra} }}
  - {{ name: h2, address: "127.0.0.1:0", protocol: h2c{listener_extra} }}
clusters:
  - name: app
    endpoints: [{{ address: "{b}" }}]
routes:
{routes}
{top}
"#
        );
        let gw = gateway(&yaml);
        Gw {
            lean: gw.listener_address("lean").unwrap(),
            h2: gw.listener_address("h2").unwrap(),
            gw: Some(gw),
            backend,
        }
    }

    async fn send(
        &self,
        via: Via,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        payload: &'static [u8],
    ) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::builder().method(method).uri(path).header("host", "test.local");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body(payload)).unwrap();
        let (status, headers, body) = match via {
            Via::Lean => h1(self.lean, req).await,
            Via::Hyper => h2c(self.h2, req).await,
        };
        (status, headers, String::from_utf8_lossy(&body).into_owned())
    }

    async fn stop(mut self) {
        let gw = self.gw.take().unwrap();
        blocking(move || {
            gw.shutdown();
            gw.wait();
        })
        .await;
    }
}

const BOTH: [Via; 2] = [Via::Lean, Via::Hyper];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_network_behind_a_trusted_proxy_is_refused_on_both_paths() {
    let gw = Gw::start(
        "",
        "trusted_proxies: [127.0.0.0/8]",
        "  - name: open\n    match: { path_prefix: /open }\n    cluster: app\n  - name: api\n    cluster: app\n    ip: { deny: [203.0.113.0/24] }\n",
    )
    .await;
    for via in BOTH {
        let denied = [("x-forwarded-for", "203.0.113.9")];
        let (status, _, body) = gw.send(via, Method::GET, "/x", &denied, b"").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{via:?}");
        assert!(body.contains("ip_denied"), "{body}");
        let other = [("x-forwarded-for", "198.51.100.1")];
        assert_eq!(gw.send(via, Method::GET, "/x", &other, b"").await.0, StatusCode::OK);
        // Another route has no list: the same client passes.
        assert_eq!(gw.send(via, Method::GET, "/open", &denied, b"").await.0, StatusCode::OK);
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_allow_list_keeps_out_every_other_client_before_routing() {
    // The test client is 127.0.0.1: an allow list without it refuses everything, even paths no
    // route matches; one with it lets it in.
    let gw =
        Gw::start(", ip: { allow: [10.0.0.0/8] }", "", "  - name: api\n    cluster: app\n").await;
    let hits = gw.backend.hits();
    for via in BOTH {
        let (status, _, body) = gw.send(via, Method::GET, "/x", &[], b"").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{via:?}: {body}");
    }
    assert_eq!(gw.backend.hits(), hits, "nothing reached the backend");
    gw.stop().await;
    let gw =
        Gw::start(", ip: { allow: [127.0.0.0/8] }", "", "  - name: api\n    cluster: app\n").await;
    for via in BOTH {
        assert_eq!(gw.send(via, Method::GET, "/x", &[], b"").await.0, StatusCode::OK, "{via:?}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_limits_answer_413_414_and_431_on_both_paths() {
    let gw = Gw::start(
        "",
        "",
        "  - name: api\n    cluster: app\n    request_limits: { max_body: 1KB, max_uri: 40, max_headers: 12 }\n",
    )
    .await;
    let many: Vec<(String, String)> = (0..14).map(|i| (format!("x-h{i}"), "v".into())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let hits = gw.backend.hits();
    for via in BOTH {
        let big: &'static [u8] = &[b'x'; 2048];
        assert_eq!(
            gw.send(via, Method::POST, "/x", &[], big).await.0,
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let long = format!("/{}", "a".repeat(60));
        assert_eq!(gw.send(via, Method::GET, &long, &[], b"").await.0, StatusCode::URI_TOO_LONG);
        let (status, _, body) = gw.send(via, Method::GET, "/x", &many, b"").await;
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "{via:?}: {body}");
    }
    assert_eq!(gw.backend.hits(), hits, "no refused request reached the backend");
    for via in BOTH {
        let small: &'static [u8] = &[b'x'; 512];
        assert_eq!(gw.send(via, Method::POST, "/x", &[], small).await.0, StatusCode::OK, "{via:?}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_at_the_gateway_and_answers_decorated() {
    let gw = Gw::start(
        "",
        "",
        "  - name: api\n    cluster: app\n    cors: { origins: [\"https://app.example\"], methods: [GET, POST], headers: [content-type], credentials: true, max_age: 10m }\n",
    )
    .await;
    let hits = gw.backend.hits();
    for via in BOTH {
        let allowed = [
            ("origin", "https://app.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ];
        let (status, h, _) = gw.send(via, Method::OPTIONS, "/x", &allowed, b"").await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{via:?}");
        assert_eq!(h["access-control-allow-origin"], "https://app.example");
        assert_eq!(h["access-control-allow-methods"], "GET, POST");
        assert_eq!(h["access-control-allow-headers"], "content-type");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert_eq!(h["access-control-max-age"], "600");
        let refused =
            [("origin", "https://evil.example"), ("access-control-request-method", "POST")];
        let (status, h, _) = gw.send(via, Method::OPTIONS, "/x", &refused, b"").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{via:?}");
        assert!(h.get("access-control-allow-origin").is_none());
        // An actual cross-origin request goes upstream and its answer is decorated.
        let (status, h, _) =
            gw.send(via, Method::GET, "/x", &[("origin", "https://app.example")], b"").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(h["access-control-allow-origin"], "https://app.example", "{via:?}");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert!(h.get_all("vary").iter().any(|v| v.to_str().unwrap().contains("origin")));
        let (status, h, _) =
            gw.send(via, Method::GET, "/x", &[("origin", "https://evil.example")], b"").await;
        assert_eq!(status, StatusCode::OK, "CORS does not authorise: the request is served");
        assert!(h.get("access-control-allow-origin").is_none(), "{via:?}");
    }
    assert_eq!(gw.backend.hits() - hits, 4, "preflights never reach the backend");
    gw.stop().await;
}
