//! HTTP/2 requests on the lean exchange (`listen::h2::fast`, issue 15): a request complete
//! with its head, to an HTTP/1.1 cluster, is proxied by the lean HTTP/1.1 path's exchange and
//! answered in HEADERS and DATA. What the translation must get right, on real sockets against
//! a scripted HTTP/1.1 upstream: the request head the upstream sees (`:authority` as `host`,
//! cookie crumbs joined, forwarding fields), response field names in lower case and
//! connection-specific fields dropped, chunked and close-delimited bodies decoded into DATA,
//! an upstream that breaks mid-body seen as a stream reset (not a hang or a short success),
//! the policy stack (a rate limit's 429), and the general path for what the lean one does not
//! take (a body that streams), and a body of undeclared length taken whole only when it came
//! whole.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::raw::*;
use common::{blocking, body, gateway, h2c_sender, TestBody};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use std::net::SocketAddr;
use std::time::Duration;

fn gateway_to(upstream: SocketAddr, route_extra: &str) -> spillway_gateway::Gateway {
    gateway(&format!(
        r#"
workers: 1
listeners:
  - {{ name: public, address: "127.0.0.1:0", protocol: h2c }}
clusters:
  - {{ name: up, endpoints: [{{ address: "{upstream}" }}], timeouts: {{ request: 5s }} }}
routes: [{{ name: all, cluster: up {route_extra} }}]
"#
    ))
}

async fn stop(gw: spillway_gateway::Gateway) {
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

/// Sends `req` on a fresh h2c connection; the response head and the body, or the body's error.
async fn send(
    addr: SocketAddr,
    req: Request<TestBody>,
) -> (StatusCode, http::HeaderMap, Result<Bytes, String>) {
    let mut sender = h2c_sender(addr).await;
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .expect("an answer in time")
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = tokio::time::timeout(Duration::from_secs(10), body.collect())
        .await
        .expect("the body ends in time (complete or reset)")
        .map(|b| b.to_bytes())
        .map_err(|e| e.to_string());
    (parts.status, parts.headers, body)
}

fn get(addr: SocketAddr, path: &str) -> http::request::Builder {
    Request::get(format!("http://{addr}{path}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_gets_an_http1_head_with_host_cookies_and_forwarding_fields() {
    let up = raw_backend(echo_target).await;
    let gw = gateway_to(up.addr, "");
    let addr = gw.listener_address("public").unwrap();
    let req = get(addr, "/a/b?x=1")
        .header("cookie", "a=1")
        .header("cookie", "b=2")
        .header("x-custom", "v")
        .body(body(""))
        .unwrap();
    let (status, _, got) = send(addr, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got.unwrap(), Bytes::from_static(b"GET /a/b?x=1"));
    let seen = up.requests();
    let head = &seen[0].head;
    assert_eq!(head.start, "GET /a/b?x=1 HTTP/1.1");
    assert_eq!(head.get("host"), Some(addr.to_string().as_str()), "{head:?}");
    let cookies: Vec<_> = head.all("cookie");
    assert_eq!(cookies, vec!["a=1; b=2"], "crumbs joined into one field (RFC 9113 §8.2.3)");
    assert_eq!(head.get("x-custom"), Some("v"));
    assert_eq!(head.get("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(head.get("x-forwarded-proto"), Some("http"));
    assert!(head.get("x-request-id").is_some(), "{head:?}");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_names_come_in_lower_case_without_connection_fields() {
    let up = raw_backend(|_| {
        reply(
            b"HTTP/1.1 203 Whatever\r\nContent-Length: 2\r\nX-Upper-Case: Yes\r\n\
              Connection: keep-alive, X-Hop\r\nKeep-Alive: timeout=5\r\nX-Hop: gone\r\n\
              Server: raw\r\n\r\nok"
                .to_vec(),
        )
    })
    .await;
    let gw = gateway_to(up.addr, "");
    let addr = gw.listener_address("public").unwrap();
    let (status, headers, got) = send(addr, get(addr, "/").body(body("")).unwrap()).await;
    assert_eq!(status, StatusCode::NON_AUTHORITATIVE_INFORMATION);
    assert_eq!(got.unwrap(), Bytes::from_static(b"ok"));
    assert_eq!(headers.get("x-upper-case").unwrap(), "Yes");
    assert_eq!(headers.get("server").unwrap(), "raw");
    assert_eq!(headers.get("content-length").unwrap(), "2");
    for gone in ["connection", "keep-alive", "x-hop"] {
        assert!(headers.get(gone).is_none(), "{gone} is not forwarded: {headers:?}");
    }
    assert!(headers.get("date").is_some() && headers.get("x-request-id").is_some());
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_and_close_delimited_bodies_arrive_decoded() {
    let up = raw_backend(|req| match req.target() {
        "/chunked" => Reply {
            delay: Duration::ZERO,
            writes: vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n".to_vec(),
                b"6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n".to_vec(),
            ],
            pause: Duration::from_millis(20),
            after: AfterReply::KeepOpen,
        },
        "/big" => {
            // 300 KiB in 7-byte chunks: more than the client's initial stream window.
            let mut r = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for i in 0..(300 * 1024 / 7) {
                r.extend_from_slice(format!("7\r\n{:07}\r\n", i % 10_000_000).as_bytes());
            }
            r.extend_from_slice(b"0\r\n\r\n");
            reply(r)
        }
        _ => Reply {
            delay: Duration::ZERO,
            writes: vec![
                b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ".to_vec(),
                b"close".to_vec(),
            ],
            pause: Duration::from_millis(20),
            after: AfterReply::Close,
        },
    })
    .await;
    let gw = gateway_to(up.addr, "");
    let addr = gw.listener_address("public").unwrap();
    let (status, headers, got) = send(addr, get(addr, "/chunked").body(body("")).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got.unwrap(), Bytes::from_static(b"hello world"));
    assert!(headers.get("transfer-encoding").is_none());
    let (_, _, got) = send(addr, get(addr, "/close").body(body("")).unwrap()).await;
    assert_eq!(got.unwrap(), Bytes::from_static(b"until close"));
    let (_, _, got) = send(addr, get(addr, "/big").body(body("")).unwrap()).await;
    let got = got.unwrap();
    assert_eq!(got.len(), 300 * 1024 / 7 * 7);
    assert!(got.chunks(7).enumerate().all(|(i, c)| c == format!("{:07}", i).as_bytes()));
    stop(gw).await;
}

/// An upstream answering every request with a chunked body whose trailer section comes split
/// across writes, mid-line.
async fn chunked_with_trailers() -> RawBackend {
    raw_backend(|_| Reply {
        delay: Duration::ZERO,
        writes: vec![
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n\
              5\r\nhello\r\n0\r\nX-Checksum:  ab"
                .to_vec(),
            b"c \r\nConnection: close\r\nContent-Length: 5\r\nGrpc-Status: 0\r\n\r\n".to_vec(),
        ],
        pause: Duration::from_millis(20),
        after: AfterReply::KeepOpen,
    })
    .await
}

/// Sends a GET on a fresh h2c connection: the body and its trailers.
async fn get_with_trailers(addr: SocketAddr) -> (Bytes, http::HeaderMap) {
    let mut sender = h2c_sender(addr).await;
    let resp = sender.send_request(get(addr, "/").body(body("")).unwrap()).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let collected = tokio::time::timeout(Duration::from_secs(10), resp.into_body().collect())
        .await
        .expect("the body ends in time")
        .unwrap();
    let trailers = collected.trailers().cloned().expect("a trailer block");
    (collected.to_bytes(), trailers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_bodys_trailers_reach_the_http2_client_as_a_trailer_block() {
    let up = chunked_with_trailers().await;
    // The lean exchange, and hyper's path (hedging is served there) with the pooled client.
    for route_extra in ["", ", strategy: forking, hedge: { after: 5s, max_extra: 1 }"] {
        let gw = gateway_to(up.addr, route_extra);
        let addr = gw.listener_address("public").unwrap();
        let (body, trailers) = get_with_trailers(addr).await;
        assert_eq!(body, Bytes::from_static(b"hello"), "{route_extra}");
        assert_eq!(
            trailers.get("x-checksum").unwrap(),
            "abc",
            "lower case, trimmed: {route_extra}"
        );
        assert_eq!(trailers.get("grpc-status").unwrap(), "0");
        for gone in ["connection", "content-length"] {
            assert!(trailers.get(gone).is_none(), "{gone} is not a trailer: {trailers:?}");
        }
        stop(gw).await;
    }
    assert_eq!(up.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_breaks_mid_body_resets_the_stream() {
    let up = raw_backend(|_| Reply {
        delay: Duration::ZERO,
        writes: vec![b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part".to_vec()],
        pause: Duration::ZERO,
        after: AfterReply::Close,
    })
    .await;
    let gw = gateway_to(up.addr, "");
    let addr = gw.listener_address("public").unwrap();
    let (status, _, got) = send(addr, get(addr, "/").body(body("")).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    // hyper reports the stream's reset as a body error.
    got.expect_err("a short body is not a success");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_answers_429_and_the_upstream_never_sees_the_refused_request() {
    let up = raw_backend(echo_target).await;
    let gw = gateway_to(
        up.addr,
        ", limits: [{ key: client_ip, algorithm: token_bucket, rate: 1/h, burst: 1 }]",
    );
    let addr = gw.listener_address("public").unwrap();
    let (first, _, _) = send(addr, get(addr, "/").body(body("")).unwrap()).await;
    let (second, headers, got) = send(addr, get(addr, "/").body(body("")).unwrap()).await;
    assert_eq!(first, StatusCode::OK);
    assert_eq!(second, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.get("retry-after").is_some(), "{headers:?}");
    assert!(!got.unwrap().is_empty(), "the refusal says why");
    assert_eq!(up.requests().len(), 1);
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_bodies_arrive_whole_and_many_at_once_do_not_starve_the_connection_window() {
    let up = raw_backend(|req| {
        let mut r =
            ok(format!("{} {}", req.head.get("content-length").unwrap_or("-"), req.body.len())
                .as_bytes());
        r.extend_from_slice(b"");
        reply(r)
    })
    .await;
    let gw = gateway_to(up.addr, "");
    let addr = gw.listener_address("public").unwrap();
    let req = Request::post(format!("http://{addr}/post")).body(body("the body")).unwrap();
    let (status, _, got) = send(addr, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got.unwrap(), Bytes::from_static(b"8 8"));
    // 40 bodies of 60 KiB on one connection: 2.4 MiB against a 1 MiB connection window, so
    // bodies held whole without giving their window back would stall every one of them.
    let sender = h2c_sender(addr).await;
    let calls = (0..40).map(|i| {
        let mut sender = sender.clone();
        async move {
            let payload = vec![b'a' + (i % 26) as u8; 60 * 1024];
            let req = Request::post(format!("http://{addr}/many/{i}")).body(body(payload)).unwrap();
            let resp = sender.send_request(req).await.unwrap();
            let status = resp.status();
            (status, resp.into_body().collect().await.unwrap().to_bytes())
        }
    });
    let all = tokio::time::timeout(Duration::from_secs(10), futures_util::future::join_all(calls))
        .await
        .expect("every body gets through in time");
    for (status, got) in all {
        assert_eq!(status, StatusCode::OK);
        assert_eq!(got, Bytes::from(format!("{} {}", 60 * 1024, 60 * 1024)));
    }
    let bodies: Vec<_> =
        up.requests().into_iter().filter(|r| r.target().starts_with("/many/")).collect();
    assert_eq!(bodies.len(), 40);
    assert!(bodies.iter().all(|r| r.body.iter().all(|b| *b == r.body[0])), "bodies not mixed up");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_whole_in_time_gets_408() {
    use spillway_h2::frame::Frame;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = raw_backend(echo_target).await;
    let gw = gateway_to(up.addr, ", request_limits: { body_timeout: 300ms }");
    let addr = gw.listener_address("public").unwrap();
    let mut raw = tokio::net::TcpStream::connect(addr).await.unwrap();
    let authority = addr.to_string();
    let mut out =
        common::h2_opening("POST", "/slow", &authority, &[("content-length", "10")], false);
    Frame::Data { stream: 1, end_stream: false, data: b"12345", padding: None }.encode(&mut out);
    raw.write_all(&out).await.unwrap();
    // The answer: the :status of the first HEADERS frame on stream 1.
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut decoder = spillway_h2::hpack::Decoder::new(4096, 1 << 16);
    let mut status = None;
    let mut at = 0;
    while status.is_none() {
        let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut chunk))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(n > 0, "closed without an answer");
        got.extend_from_slice(&chunk[..n]);
        while let Ok(Some((frame, used))) = Frame::parse(&got[at..], 1 << 24) {
            if let Frame::Headers { stream: 1, block, .. } = frame {
                decoder
                    .decode(block, |n, v| {
                        if n == b":status" {
                            status = Some(String::from_utf8_lossy(v).into_owned());
                        }
                    })
                    .unwrap();
            }
            at += used;
        }
    }
    assert_eq!(status.as_deref(), Some("408"));
    assert!(started.elapsed() >= Duration::from_millis(250), "not before the body timeout");
    assert!(up.requests().is_empty(), "nothing went upstream");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_and_head_requests_are_answered_on_the_lean_exchange() {
    let up = raw_backend(|_| reply(ok(b"twelve bytes"))).await;
    let gw = gateway(&format!(
        r#"
workers: 1
listeners:
  - {{ name: public, address: "127.0.0.1:0", protocol: h2c }}
clusters:
  - {{ name: up, endpoints: [{{ address: "{}" }}] }}
routes: [{{ name: only, match: {{ path_prefix: /only }}, cluster: up }}]
"#,
        up.addr
    ));
    let addr = gw.listener_address("public").unwrap();
    let (status, headers, got) = send(addr, get(addr, "/elsewhere").body(body("")).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers.get("content-type").unwrap(), "application/json");
    assert!(!got.unwrap().is_empty());
    let head = Request::head(format!("http://{addr}/only")).body(body("")).unwrap();
    let (status, headers, got) = send(addr, head).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.get("content-length").unwrap(), "12");
    assert!(got.unwrap().is_empty(), "no body for HEAD");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_http2_clusters_on_one_listener_each_get_their_requests() {
    // The route is looked up on the decoded HTTP/2 head, before anything is spelled (a route to
    // an HTTP/2 cluster goes to the general path at once): each request must reach its cluster
    // — by path, by a header match, with a query, bodiless or with a declared body.
    let (one, one_state) = common::backend("one").await;
    let (two, two_state) = common::backend("two").await;
    let gw = gateway(&format!(
        r#"
workers: 1
listeners:
  - {{ name: public, address: "127.0.0.1:0", protocol: h2c }}
clusters:
  - {{ name: h1, endpoints: [{{ address: "{one}" }}], timeouts: {{ request: 5s }} }}
  - {{ name: h2, protocol: http2, endpoints: [{{ address: "{two}" }}], timeouts: {{ request: 5s }} }}
routes:
  - {{ name: by-header, match: {{ path_prefix: /, headers: [{{ name: x-use, value: two }}] }}, cluster: h2 }}
  - {{ name: by-path, match: {{ path_prefix: /h2/ }}, cluster: h2 }}
  - {{ name: rest, match: {{ path_prefix: / }}, cluster: h1 }}
"#
    ));
    let addr = gw.listener_address("public").unwrap();
    let cases: [(&str, Option<&str>, bool, &str); 6] = [
        ("/h2/a?q=1", None, false, "two"),
        ("/h2/a", None, true, "two"),
        ("/a", Some("two"), false, "two"),
        ("/a", Some("one"), false, "one"),
        ("/a?q=/h2/", None, false, "one"),
        ("/b", None, true, "one"),
    ];
    for (path, use_header, with_body, want) in cases {
        let mut req = if with_body { Request::post(path) } else { Request::get(path) };
        if let Some(v) = use_header {
            req = req.header("x-use", v);
        }
        let payload = if with_body { "some body" } else { "" };
        let (status, _, got) = common::h2c(addr, req.body(body(payload)).unwrap()).await;
        assert_eq!(status, StatusCode::OK, "{path} {use_header:?}");
        assert_eq!(got, want, "{path} x-use {use_header:?} body {with_body}");
    }
    assert_eq!((one_state.hits(), two_state.hits()), (3, 3));
    // The gRPC shape (a body, trailers back) through the HTTP/2 cluster.
    let req = Request::post("/grpc")
        .header("x-use", "two")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(body(&b"\0\0\0\0\x02hi"[..]))
        .unwrap();
    let (status, headers, _) = common::h2c(addr, req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers.get("content-type").unwrap(), "application/grpc");
    stop(gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_the_path_whichever_path_served_the_request() {
    let (one, _) = common::backend("one").await;
    let (two, _) = common::backend("two").await;
    let log = common::temp_path("h2-access.log");
    let gw = gateway(&format!(
        r#"
workers: 1
listeners:
  - {{ name: public, address: "127.0.0.1:0", protocol: h2c }}
access_log: {{ path: "{}" }}
clusters:
  - {{ name: h1, endpoints: [{{ address: "{one}" }}], timeouts: {{ request: 5s }} }}
  - {{ name: h2, protocol: http2, endpoints: [{{ address: "{two}" }}], timeouts: {{ request: 5s }} }}
routes:
  - {{ name: to-h2, match: {{ path_prefix: /h2/ }}, cluster: h2 }}
  - {{ name: to-h1, match: {{ path_prefix: / }}, cluster: h1 }}
"#,
        log.display()
    ));
    let addr = gw.listener_address("public").unwrap();
    for path in ["/h1/a?q=1", "/h2/b?q=2"] {
        let (status, _, _) = common::h2c(addr, Request::get(path).body(body("")).unwrap()).await;
        assert_eq!(status, StatusCode::OK);
    }
    let lines = || std::fs::read_to_string(&log).unwrap_or_default();
    common::eventually(Duration::from_secs(5), "two access-log lines", || {
        lines().lines().count() == 2
    })
    .await;
    let mut uris: Vec<(String, String)> = lines()
        .lines()
        .map(|l| {
            let entry: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                entry["route"].as_str().unwrap().to_string(),
                entry["uri"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    uris.sort();
    let want = [("to-h1", "/h1/a?q=1"), ("to-h2", "/h2/b?q=2")]
        .map(|(r, u)| (r.to_string(), u.to_string()));
    assert_eq!(uris, want);
    stop(gw).await;
}

/// A POST without `content-length` from a raw HTTP/2 client: its HEADERS and, when `whole`,
/// its one DATA frame with END_STREAM in the same write (as gRPC clients send a unary call);
/// otherwise the DATA 200 ms later. Returns the answer's body.
async fn post_undeclared(addr: SocketAddr, payload: &[u8], whole: bool) -> String {
    use spillway_h2::{ClientConnection, ClientEvent, ClientSettings, RequestLine};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut io = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut conn = ClientConnection::new(ClientSettings::default());
    let authority = addr.to_string();
    let line = RequestLine {
        method: b"POST",
        scheme: b"http",
        authority: authority.as_bytes(),
        path: b"/undeclared",
    };
    let fields: [(&[u8], &[u8]); 1] = [(b"content-type", b"text/plain")];
    let stream = conn.send_request(line, fields, false).unwrap();
    if !whole {
        io.write_all(conn.output()).await.unwrap();
        let n = conn.output().len();
        conn.consumed(n);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(conn.send_data(stream, payload, true).unwrap(), payload.len());
    io.write_all(conn.output()).await.unwrap();
    let n = conn.output().len();
    conn.consumed(n);
    let mut answer = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let read = async {
        loop {
            let n = io.read(&mut buf).await.unwrap();
            assert!(n > 0, "the gateway closed the connection");
            conn.recv(&buf[..n], std::time::Instant::now()).unwrap();
            while let Some(event) = conn.poll_event() {
                match event {
                    ClientEvent::Response { head, end_stream, .. } => {
                        assert_eq!(head.status, 200);
                        if end_stream {
                            return;
                        }
                    }
                    ClientEvent::Data { data, end_stream, .. } => {
                        answer.extend_from_slice(&data);
                        if end_stream {
                            return;
                        }
                    }
                    ClientEvent::Trailers { .. } => return,
                    ClientEvent::Reset { code, .. } => panic!("reset {code:?}"),
                    _ => {}
                }
            }
            // SETTINGS ACKs and window updates.
            io.write_all(conn.output()).await.unwrap();
            let n = conn.output().len();
            conn.consumed(n);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("an answer in time");
    String::from_utf8(answer).unwrap()
}

/// A body without a declared length that came whole with its head is taken by the lean
/// exchange, which sends it upstream with its `content-length`; one that comes later may be
/// a stream, and goes on as one (chunked), never waited for whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_undeclared_length_goes_whole_only_when_it_came_whole() {
    let up = raw_backend(|req| {
        let length = req.head.get("content-length").unwrap_or("-");
        reply(ok(format!("{length} {} {}", req.head.is_chunked(), req.body.len()).as_bytes()))
    })
    .await;
    let gw = gateway_to(up.addr, "");
    let addr = gw.listener_address("public").unwrap();
    assert_eq!(post_undeclared(addr, b"the body", true).await, "8 false 8");
    assert_eq!(post_undeclared(addr, b"the body", false).await, "- true 8");
    stop(gw).await;
}
