//! The dashboard's HTTP contract end to end on a real admin listener: the page and its files
//! are served from the binary with their content types, `no-cache` and a strict CSP, without
//! the admin token; the data behind it (`/admin/stream`) and the plan switches stay behind the
//! token. (What the page does with the data is tested in a real browser:
//! `tests/browser/dashboard_test.py`, run by `scripts/test`.)

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::time::Duration;

const TOKEN: &str = "dash-s3cret";

async fn start() -> (spillway_gateway::Gateway, std::net::SocketAddr, std::net::SocketAddr) {
    let (b, _) = backend("b").await;
    let yaml = format!(
        r#"
workers: 1
listeners: [{{ name: public, address: "127.0.0.1:0" }}]
admin: {{ address: "127.0.0.1:0", token: {TOKEN} }}
clusters: [{{ name: app, endpoints: [{{ address: "{b}" }}], timeouts: {{ request: 5s }} }}]
routes:
  - name: api
    cluster: app
    fallback: {{ status: 200, body: "from fallback" }}
plans:
  - name: drill
    actions: [{{ route: api, fallback: true }}]
"#
    );
    let gw = gateway(&yaml);
    let public = gw.listener_address("public").unwrap();
    let admin = gw.admin_address().unwrap();
    (gw, public, admin)
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> &'a str {
    headers.get(name).map_or("", |v| v.to_str().unwrap())
}

async fn stop(gw: spillway_gateway::Gateway) {
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_its_files_are_served_without_a_token_with_their_types_and_a_strict_csp() {
    let (gw, _, admin) = start().await;
    let (status, headers, page) = get(admin, "/dashboard").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&headers, "cache-control"), "no-cache");
    let csp = header(&headers, "content-security-policy");
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
    assert!(csp.contains("connect-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
    let page = String::from_utf8(page.to_vec()).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    assert!(page.contains(r#"<script src="/dashboard/dashboard.js" defer></script>"#));
    assert!(page.contains(r#"<link rel="stylesheet" href="/dashboard/dashboard.css">"#));
    assert!(!page.contains("http://") && !page.contains("https://"), "no outside resource");

    let (status, headers, js) = get(admin, "/dashboard/dashboard.js").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "content-type"), "text/javascript; charset=utf-8");
    assert_eq!(header(&headers, "cache-control"), "no-cache");
    assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    let js = String::from_utf8(js.to_vec()).unwrap();
    assert!(js.contains("'/admin/stream'") && js.contains("Authorization"), "reads the stream");

    let (status, headers, css) = get(admin, "/dashboard/dashboard.css").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "content-type"), "text/css; charset=utf-8");
    assert!(!css.is_empty());

    assert_eq!(get(admin, "/dashboard/").await.0, StatusCode::OK);
    assert_eq!(get(admin, "/dashboard/secrets.json").await.0, StatusCode::NOT_FOUND);
    assert_eq!(get(admin, "/dashboards").await.0, StatusCode::NOT_FOUND);
    stop(gw).await;
}

/// Reads the stream's head and up to its first event within a few seconds.
async fn first_event(
    admin: std::net::SocketAddr,
    auth: Option<&str>,
) -> (StatusCode, String, String) {
    let mut req = Request::get("/admin/stream").header("host", "x");
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let stream = tokio::net::TcpStream::connect(admin).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let resp = tokio::time::timeout(
        Duration::from_secs(5),
        sender.send_request(req.body(body("")).unwrap()),
    )
    .await
    .unwrap()
    .unwrap();
    let status = resp.status();
    let content_type = header(resp.headers(), "content-type").to_string();
    let mut body = resp.into_body();
    let mut text = String::new();
    while !text.contains("\n\n") {
        let Ok(Some(frame)) = tokio::time::timeout(Duration::from_secs(5), body.frame()).await
        else {
            break;
        };
        if let Ok(data) = frame.unwrap().into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    (status, content_type, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_behind_the_page_stays_behind_the_token() {
    let (gw, public, admin) = start().await;
    assert_eq!(get(public, "/").await.0, StatusCode::OK);
    for auth in [None, Some("Bearer wrong"), Some("Bearer dash-s3cre"), Some(TOKEN)] {
        let (status, _, text) = first_event(admin, auth).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?} must not read the stream");
        assert!(!text.contains("\"routes\""), "{auth:?} got data: {text}");
    }
    let bearer = format!("Bearer {TOKEN}");
    let (status, content_type, text) = first_event(admin, Some(&bearer)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, "text/event-stream");
    let data = text.strip_prefix("event: snapshot\ndata: ").unwrap_or_else(|| panic!("{text}"));
    let snapshot: serde_json::Value = serde_json::from_str(data.trim_end()).unwrap();
    let route = &snapshot["routes"][0];
    assert_eq!(route["route"], "api");
    assert_eq!(route["answers"]["2xx"], 1, "{route}");
    assert_eq!(route["degraded"]["fallback"], 0, "{route}");
    assert_eq!(snapshot["plans"]["plans"][0]["name"], "drill");

    // Plan switches too: refused without the token, applied with it.
    let post = |auth: Option<&str>| {
        let mut req = Request::post("/admin/plans/drill/activate").header("host", "x");
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        req.body(body("")).unwrap()
    };
    assert_eq!(h1(admin, post(None)).await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(get(public, "/").await.2, "b", "the plan is still off");
    assert_eq!(h1(admin, post(Some(&bearer))).await.0, StatusCode::OK);
    assert_eq!(get(public, "/").await.2, "from fallback", "the plan is on");
    // The degraded answer shows in the next snapshot.
    let (_, _, text) = first_event(admin, Some(&bearer)).await;
    let data = text.strip_prefix("event: snapshot\ndata: ").unwrap();
    let snapshot: serde_json::Value = serde_json::from_str(data.trim_end()).unwrap();
    assert_eq!(snapshot["routes"][0]["degraded"]["fallback"], 1, "{}", snapshot["routes"][0]);
    assert_eq!(snapshot["plans"]["plans"][0]["active"], true);
    stop(gw).await;
}
