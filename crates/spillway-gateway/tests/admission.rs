//! Admission end to end on real sockets: rate limits and their keys, criticality, bulkheads and
//! levels, deadlines, budgets, BBR, cluster concurrency limits, reloads and what the admin API
//! shows — through the lean HTTP/1.1 path (an `http1` listener to an `http1` cluster) and,
//! where the behaviour belongs to both, through hyper (an `h2c` listener, and gRPC via tonic).
//!
//! Why here and not only in unit tests: the policies are wired into two request paths that
//! read headers, peers and deadlines differently; only a real request shows that each path
//! classifies, refuses, renders and forwards the same way. Requests that must stay in flight
//! wait at the backend's `/hold` until the test releases them, so pools fill exactly without
//! timing; real-time waits are bounded polls.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use http::{HeaderMap, Request, StatusCode};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bound on every poll of the admin API or the backend.
const WITHIN: Duration = Duration::from_secs(5);

/// Which request path a request takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Via {
    /// The `lean` listener: plain HTTP/1.1 (the lean path).
    Lean,
    /// The `h2` listener: h2c with an HTTP/2 client (the hyper path).
    Hyper,
}

const BOTH: [Via; 2] = [Via::Lean, Via::Hyper];

/// A response, its body as text.
#[derive(Debug)]
struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Resp {
    /// The `error` of a JSON refusal body (`""` when the body is not one).
    fn error(&self) -> String {
        serde_json::from_str::<Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// The value of `name` in a `/headers` or `/hold` echo.
    fn echoed(&self, name: &str) -> Option<String> {
        self.body.lines().find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
    }
}

/// A running gateway with a lean listener, an h2c listener and the admin API, and its backend.
struct Gw {
    gw: Option<spillway_gateway::Gateway>,
    lean: SocketAddr,
    h2: SocketAddr,
    admin: SocketAddr,
    backend: Arc<BackendState>,
}

/// The config: the two listeners, admin, one cluster `app` (plus `cluster_extra` keys) and
/// `routes` (a YAML list body), with `top` extra top-level keys.
fn yaml(backend: SocketAddr, top: &str, cluster_extra: &str, routes: &str) -> String {
    format!(
        r#"
workers: 1
listeners:
  - {{ name: lean, address: "127.0.0.1:0", protocol: http1 }}
  - {{ name: h2, address: "127.0.0.1:0", protocol: h2c }}
admin: {{ address: "127.0.0.1:0" }}
clusters:
  - name: app
    endpoints: [{{ address: "{backend}" }}]
    timeouts: {{ request: 5s }}
{cluster_extra}
routes:
{routes}
{top}
"#
    )
}

/// One route `api` for every request, with `policy` (keys indented by four spaces).
fn api(policy: &str) -> String {
    format!("  - name: api\n    cluster: app\n{policy}")
}

impl Gw {
    async fn start(top: &str, cluster_extra: &str, routes: &str) -> Gw {
        let (b, backend) = backend("app").await;
        Gw::wrap(gateway(&yaml(b, top, cluster_extra, routes)), backend)
    }

    fn wrap(gw: spillway_gateway::Gateway, backend: Arc<BackendState>) -> Gw {
        Gw {
            lean: gw.listener_address("lean").unwrap(),
            h2: gw.listener_address("h2").unwrap(),
            admin: gw.admin_address().unwrap(),
            gw: Some(gw),
            backend,
        }
    }

    fn addr(&self, via: Via) -> (SocketAddr, Via) {
        match via {
            Via::Lean => (self.lean, via),
            Via::Hyper => (self.h2, via),
        }
    }

    async fn call(&self, via: Via, path: &str, headers: &[(&str, &str)]) -> Resp {
        call(self.addr(via), path, headers).await
    }

    /// Starts a request that stays in flight (typically at `/hold`).
    fn spawn(
        &self,
        via: Via,
        path: &str,
        headers: &[(&str, &str)],
    ) -> tokio::task::JoinHandle<Resp> {
        let to = self.addr(via);
        let path = path.to_string();
        let headers: Vec<(String, String)> =
            headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        tokio::spawn(async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            call(to, &path, &headers).await
        })
    }

    /// `/admin/policies`.
    async fn policies(&self) -> Value {
        let (status, _, body) = get(self.admin, "/admin/policies").await;
        assert_eq!(status, StatusCode::OK);
        serde_json::from_slice(&body).unwrap()
    }

    /// `/metrics`.
    async fn metrics(&self) -> String {
        let (status, _, body) = get(self.admin, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        String::from_utf8(body.to_vec()).unwrap()
    }

    /// Waits until `n` requests arrived at `/hold` in all.
    async fn held(&self, n: usize) {
        let backend = self.backend.clone();
        eventually(WITHIN, &format!("{n} requests held at the backend"), || {
            backend.arrived().len() >= n
        })
        .await;
    }

    /// Polls `/admin/policies` until `cond` holds (bounded); returns the document.
    async fn policies_until(&self, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let p = self.policies().await;
            if cond(&p) {
                return p;
            }
            assert!(start.elapsed() < WITHIN, "not within {WITHIN:?}: {what}: {p}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the pool `route` / `field` (`bulkhead`, `slow`) has `queued` waiters.
    async fn queued(&self, route: &str, field: &str, queued: u64) {
        let what = format!("{route}.{field} has {queued} queued");
        self.policies_until(&what, |p| route_view(p, route)[field]["queued"] == queued).await;
    }

    async fn stop(mut self) {
        self.backend.held.open();
        let gw = self.gw.take().unwrap();
        blocking(move || {
            gw.shutdown();
            gw.wait();
        })
        .await;
    }
}

/// One request on a fresh connection through the listener `to`.
async fn call((addr, via): (SocketAddr, Via), path: &str, headers: &[(&str, &str)]) -> Resp {
    let mut req = Request::get(path).header("host", "test.local");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(body("")).unwrap();
    let (status, headers, body) = match via {
        Via::Lean => h1(addr, req).await,
        Via::Hyper => h2c(addr, req).await,
    };
    Resp { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

/// The `/admin/policies` entry of `route`.
fn route_view<'a>(policies: &'a Value, route: &str) -> &'a Value {
    policies["routes"].as_array().unwrap().iter().find(|r| r["route"] == route).unwrap()
}

/// Awaits a spawned request (bounded).
async fn done(handle: tokio::task::JoinHandle<Resp>) -> Resp {
    tokio::time::timeout(WITHIN, handle).await.expect("the request finishes").unwrap()
}

fn assert_refused(resp: &Resp, status: u16, reason: &str) {
    assert_eq!(resp.status.as_u16(), status, "{resp:?}");
    assert_eq!(resp.error(), reason, "{resp:?}");
}

// ---------------------------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_key_token_bucket_answers_429_with_ratelimit_headers_after_the_burst() {
    let gw = Gw::start(
        "",
        "",
        &api("    limits: [{ key: header:x-api-key, algorithm: token_bucket, rate: 1/h, burst: 2 }]\n"),
    )
    .await;
    for via in BOTH {
        let key = format!("key-{via:?}");
        let k = [("x-api-key", key.as_str())];
        for _ in 0..2 {
            assert_eq!(gw.call(via, "/", &k).await.status, StatusCode::OK, "{via:?}");
        }
        let hits = gw.backend.hits();
        let refused = gw.call(via, "/", &k).await;
        assert_refused(&refused, 429, "rate_limited");
        assert_eq!(gw.backend.hits(), hits, "{via:?}: a rejection does no upstream work");
        // One token an hour: the next one is about an hour away.
        let retry: u64 = refused.header("retry-after").unwrap().parse().unwrap();
        assert!((3500..=3600).contains(&retry), "{via:?}: retry-after {retry}");
        assert_eq!(refused.header("ratelimit-limit"), Some("2"));
        assert_eq!(refused.header("ratelimit-remaining"), Some("0"));
        assert_eq!(refused.header("ratelimit-reset"), refused.header("retry-after"));
        assert_eq!(refused.header("content-type"), Some("application/json"));
        let body: Value = serde_json::from_str(&refused.body).unwrap();
        assert_eq!(body["limit"], "header:x-api-key", "{body}");
        let after = body["retry_after_ms"].as_u64().unwrap();
        assert!(after > 3_000_000 && after <= 3_600_000, "{body}");
        // Another key has its own bucket.
        let other = format!("other-{via:?}");
        assert_eq!(gw.call(via, "/", &[("x-api-key", &other)]).await.status, StatusCode::OK);
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ip_keys_believe_x_forwarded_for_only_from_a_trusted_peer() {
    let limit =
        api("    limits: [{ key: client_ip, algorithm: token_bucket, rate: 1/h, burst: 1 }]\n");
    let xff = |ip: &'static str| [("x-forwarded-for", ip)];
    // The peer (127.0.0.1) is a trusted proxy: each forwarded client has its own bucket.
    let trusted = Gw::start("trusted_proxies: [127.0.0.1]", "", &limit).await;
    assert_eq!(trusted.call(Via::Lean, "/", &xff("192.0.2.1")).await.status, StatusCode::OK);
    assert_refused(&trusted.call(Via::Lean, "/", &xff("192.0.2.1")).await, 429, "rate_limited");
    assert_eq!(trusted.call(Via::Lean, "/", &xff("192.0.2.2")).await.status, StatusCode::OK);
    // A client-written address left of the trusted hop is not believed.
    assert_refused(
        &trusted.call(Via::Lean, "/", &xff("198.51.100.9, 192.0.2.2")).await,
        429,
        "rate_limited",
    );
    assert_eq!(route_view(&trusted.policies().await, "api")["limits"][0]["keys"], 2);
    trusted.stop().await;

    // The peer is not trusted: X-Forwarded-For is ignored, every request is the peer's.
    let untrusted = Gw::start("trusted_proxies: [10.0.0.0/8]", "", &limit).await;
    assert_eq!(untrusted.call(Via::Lean, "/", &xff("192.0.2.1")).await.status, StatusCode::OK);
    assert_refused(&untrusted.call(Via::Lean, "/", &xff("192.0.2.2")).await, 429, "rate_limited");
    assert_eq!(route_view(&untrusted.policies().await, "api")["limits"][0]["keys"], 1);
    untrusted.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_path_route_and_joined_keys_count_what_they_name() {
    let one = "algorithm: token_bucket, rate: 1/h, burst: 1";
    let routes = format!(
        r#"
  - {{ name: by-user, match: {{ path_prefix: /q }}, cluster: app, limits: [{{ key: "query:user", {one} }}] }}
  - {{ name: by-path, match: {{ path_prefix: /p }}, cluster: app, limits: [{{ key: path, {one} }}] }}
  - {{ name: shared, match: {{ path_prefix: /r }}, cluster: app, limits: [{{ key: route, algorithm: token_bucket, rate: 1/h, burst: 2 }}] }}
  - {{ name: joined, match: {{ path_prefix: /j }}, cluster: app, limits: [{{ key: "client_ip+header:x-api-key", {one} }}] }}
"#
    );
    let gw = Gw::start("trusted_proxies: [127.0.0.1]", "", &routes).await;
    let ok = StatusCode::OK;
    let v = Via::Lean;
    // query:user
    assert_eq!(gw.call(v, "/q?user=ann", &[]).await.status, ok);
    assert_refused(&gw.call(v, "/q?x=1&user=ann", &[]).await, 429, "rate_limited");
    assert_eq!(gw.call(v, "/q?user=bob", &[]).await.status, ok);
    // path
    assert_eq!(gw.call(v, "/p/1", &[]).await.status, ok);
    assert_refused(&gw.call(v, "/p/1?other=query", &[]).await, 429, "rate_limited");
    assert_eq!(gw.call(v, "/p/2", &[]).await.status, ok);
    // route: one bucket whatever the path
    assert_eq!(gw.call(v, "/r/1", &[]).await.status, ok);
    assert_eq!(gw.call(v, "/r/2", &[]).await.status, ok);
    assert_refused(&gw.call(v, "/r/3", &[]).await, 429, "rate_limited");
    // client_ip+header: both parts must match to share a bucket
    let (k1, k2) = (("x-api-key", "k1"), ("x-api-key", "k2"));
    let (a, b) = (("x-forwarded-for", "192.0.2.1"), ("x-forwarded-for", "192.0.2.2"));
    assert_eq!(gw.call(v, "/j", &[k1, a]).await.status, ok);
    assert_refused(&gw.call(v, "/j", &[k1, a]).await, 429, "rate_limited");
    assert_eq!(gw.call(v, "/j", &[k2, a]).await.status, ok, "same IP, another key");
    assert_eq!(gw.call(v, "/j", &[k1, b]).await.status, ok, "same key, another IP");
    let p = gw.policies().await;
    assert_eq!(route_view(&p, "by-user")["limits"][0]["keys"], 2);
    assert_eq!(route_view(&p, "by-path")["limits"][0]["keys"], 2);
    assert_eq!(route_view(&p, "shared")["limits"][0]["keys"], 1);
    assert_eq!(route_view(&p, "joined")["limits"][0]["keys"], 3);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_gcra_and_warm_up_limits_refuse_beyond_their_quota() {
    let route = |name: &str, limit: &str| {
        format!(
            "  - {{ name: {name}, match: {{ path_prefix: /{name} }}, cluster: app, limits: [{{ key: header:x-api-key, {limit} }}] }}\n"
        )
    };
    let routes = [
        route("fixed", "algorithm: fixed_window, rate: 2/1h"),
        route("sliding", "algorithm: sliding_window, rate: [2/1h, 5/1d]"),
        route("gcra", "algorithm: gcra, rate: 1/h, burst: 2"),
        route("warm", "algorithm: warm_up, rate: 1/h, burst: 2, warm_up: 1h"),
    ]
    .concat();
    let gw = Gw::start("", "", &routes).await;
    for name in ["fixed", "sliding", "gcra", "warm"] {
        let path = format!("/{name}");
        let k = [("x-api-key", "k")];
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(gw.call(Via::Lean, &path, &k).await.status.as_u16());
        }
        if name == "warm" {
            // A cold warm-up limit starts below its burst (at a third of its rate).
            assert_eq!(statuses[0], 200, "{name}");
            assert_eq!(statuses[2..], [429, 429], "{name}: {statuses:?}");
        } else {
            assert_eq!(statuses, [200, 200, 429, 429], "{name}");
        }
        let refused = gw.call(Via::Lean, &path, &k).await;
        assert_refused(&refused, 429, "rate_limited");
        assert_eq!(refused.header("ratelimit-limit"), Some("2"), "{name}");
        assert!(refused.header("retry-after").is_some(), "{name}");
        // Another key is untouched.
        assert_eq!(gw.call(Via::Lean, &path, &[("x-api-key", "j")]).await.status, 200);
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaky_bucket_delays_a_request_that_fits_and_refuses_one_beyond_max_wait() {
    // One request every 200 ms, a wait of at most 300 ms: of three at once, the first goes
    // now, the second waits about 200 ms, the third would wait 400 ms and is refused.
    let gw = Gw::start(
        "",
        "",
        &api("    limits: [{ key: route, algorithm: leaky_bucket, rate: 5/s, max_wait: 300ms }]\n"),
    )
    .await;
    let to = gw.addr(Via::Lean);
    let started = Instant::now();
    let calls: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(async move {
                let r = call(to, "/", &[]).await;
                (r, started.elapsed())
            })
        })
        .collect();
    let mut results = Vec::new();
    for c in calls {
        results.push(tokio::time::timeout(WITHIN, c).await.unwrap().unwrap());
    }
    results.sort_by_key(|(_, t)| *t);
    let statuses: Vec<u16> = results.iter().map(|(r, _)| r.status.as_u16()).collect();
    let mut sorted = statuses.clone();
    sorted.sort();
    assert_eq!(sorted, [200, 200, 429], "{results:?}");
    let (refused, refused_at) = results.iter().find(|(r, _)| r.status == 429).unwrap();
    assert_eq!(refused.error(), "rate_limited");
    let (_, delayed_at) = results.iter().rfind(|(r, _)| r.status == 200).unwrap();
    assert!(*delayed_at >= Duration::from_millis(150), "the second is paced: {results:?}");
    assert!(refused_at < delayed_at, "the third is refused without waiting: {results:?}");
    assert_eq!(gw.backend.hits(), 2);
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// gRPC through tonic
// ---------------------------------------------------------------------------------------------

#[derive(Clone, PartialEq, prost::Message)]
struct Echo {
    #[prost(string, tag = "1")]
    message: String,
}

/// One unary call of `/grpc` (the test backend echoes the message) through `addr`.
async fn grpc_call(addr: SocketAddr, timeout: Option<Duration>) -> Result<String, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.unwrap();
    let mut req = tonic::Request::new(Echo { message: "hi".into() });
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    let codec = tonic_prost::ProstCodec::<Echo, Echo>::default();
    let path = http::uri::PathAndQuery::from_static("/grpc");
    let reply = tokio::time::timeout(WITHIN, client.unary(req, path, codec)).await.unwrap()?;
    Ok(reply.into_inner().message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_grpc_call_gets_resource_exhausted_trailers_only() {
    let gw = Gw::start(
        "",
        "    protocol: http2",
        &api("    limits: [{ key: route, algorithm: token_bucket, rate: 1/h, burst: 1 }]\n"),
    )
    .await;
    assert_eq!(grpc_call(gw.h2, None).await.unwrap(), "hi");
    let status = grpc_call(gw.h2, None).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.message(), "rate_limited");
    // On the wire: HTTP 200 with the status in the headers and no body (trailers-only).
    let refused = gw
        .call(Via::Hyper, "/grpc", &[("content-type", "application/grpc"), ("te", "trailers")])
        .await;
    assert_eq!(refused.status, StatusCode::OK);
    assert_eq!(refused.header("grpc-status"), Some("8"));
    assert_eq!(refused.header("content-type"), Some("application/grpc"));
    // When to retry, as gRPC clients read it (the bucket refills in an hour).
    let pushback: u64 = refused.header("grpc-retry-pushback-ms").unwrap().parse().unwrap();
    assert!((3_000_000..=3_600_000).contains(&pushback), "{pushback}");
    assert!(refused.body.is_empty());
    // The route's counters see the refusals as the 429s they are, not as answered calls.
    let metrics = gw.metrics().await;
    let count = |code: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with("spillway_requests_total{") && l.contains(code))
            .and_then(|l| l.rsplit(' ').next())
            .map(|n| n.to_string())
    };
    assert_eq!(count("code=\"429\"").as_deref(), Some("2"), "{metrics}");
    assert_eq!(count("code=\"200\"").as_deref(), Some("1"), "{metrics}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_with_too_little_time_left_gets_deadline_exceeded() {
    let gw = Gw::start(
        "",
        "    protocol: http2",
        &api("    deadline: { default: 1s, max: 2s, min_remaining: 50ms }\n"),
    )
    .await;
    assert_eq!(grpc_call(gw.h2, Some(Duration::from_secs(1))).await.unwrap(), "hi");
    let status = grpc_call(gw.h2, Some(Duration::from_millis(20))).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Criticality
// ---------------------------------------------------------------------------------------------

const CRIT: &str = "x-spillway-criticality";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn criticality_is_forwarded_unchanged_and_a_claim_above_the_maximum_is_lowered() {
    let gw = Gw::start("", "", &api("    criticality: SHEDDABLE\n    max_criticality: CRITICAL\n"))
        .await;
    for via in BOTH {
        let echoed = gw.call(via, "/headers", &[(CRIT, "SHEDDABLE_PLUS")]).await;
        assert_eq!(echoed.echoed(CRIT).as_deref(), Some("SHEDDABLE_PLUS"), "{via:?}");
        let echoed = gw.call(via, "/headers", &[(CRIT, "CRITICAL_PLUS")]).await;
        assert_eq!(echoed.echoed(CRIT).as_deref(), Some("CRITICAL"), "{via:?}: {echoed:?}");
        let echoed = gw.call(via, "/headers", &[]).await;
        assert_eq!(echoed.status, StatusCode::OK);
        assert_eq!(echoed.echoed(CRIT), None, "{via:?}: the default is not added upstream");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sheddable_is_refused_while_critical_plus_passes_at_the_concurrency_limit() {
    // Of a limit of 4: SHEDDABLE may use 2, SHEDDABLE_PLUS 3, CRITICAL 3 (90 %), CRITICAL_PLUS 4.
    let gw =
        Gw::start("", "    concurrency: { fixed: 4 }", &api("    criticality: SHEDDABLE\n")).await;
    let mut arrived = 0;
    for via in BOTH {
        let mut held = Vec::new();
        for _ in 0..2 {
            held.push(gw.spawn(via, "/hold", &[(CRIT, "CRITICAL")]));
        }
        arrived += 2;
        gw.held(arrived).await;
        let hits = gw.backend.hits();
        assert_refused(&gw.call(via, "/", &[(CRIT, "SHEDDABLE")]).await, 503, "concurrency_limit");
        assert_refused(&gw.call(via, "/", &[]).await, 503, "concurrency_limit");
        assert_eq!(gw.backend.hits(), hits, "refusals do no upstream work");
        held.push(gw.spawn(via, "/hold", &[(CRIT, "SHEDDABLE_PLUS")]));
        arrived += 1;
        gw.held(arrived).await;
        for class in ["SHEDDABLE_PLUS", "CRITICAL"] {
            assert_refused(&gw.call(via, "/", &[(CRIT, class)]).await, 503, "concurrency_limit");
        }
        held.push(gw.spawn(via, "/hold", &[(CRIT, "CRITICAL_PLUS")]));
        arrived += 1;
        gw.held(arrived).await;
        let p = gw.policies().await;
        assert_eq!(p["clusters"][0]["concurrency"]["in_flight"], 4, "{p}");
        assert_refused(
            &gw.call(via, "/", &[(CRIT, "CRITICAL_PLUS")]).await,
            503,
            "concurrency_limit",
        );
        gw.backend.held.release(4);
        for h in held {
            assert_eq!(done(h).await.status, StatusCode::OK, "{via:?}");
        }
        gw.policies_until("the limiter is empty again", |p| {
            p["clusters"][0]["concurrency"]["in_flight"] == 0
        })
        .await;
    }
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(
            "spillway_rejections_total{route=\"api\",reason=\"concurrency_limit\",criticality=\"SHEDDABLE\"} 4"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("spillway_concurrency_limit{cluster=\"app\"} 4"), "{metrics}");
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Bulkheads and levels
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_bulkhead_queues_one_waiter_and_refuses_the_next() {
    // max_wait 1s rather than 200ms: the waiter must still be queued when the test frees a
    // slot, on a loaded machine.
    let gw =
        Gw::start("", "", &api("    bulkhead: { max_concurrent: 2, queue: 1, max_wait: 1s }\n"))
            .await;
    for via in BOTH {
        let base = gw.backend.arrived().len();
        let held: Vec<_> = (0..2).map(|_| gw.spawn(via, "/hold", &[])).collect();
        gw.held(base + 2).await;
        let third = gw.spawn(via, "/", &[]);
        gw.queued("api", "bulkhead", 1).await;
        let hits = gw.backend.hits();
        assert_refused(&gw.call(via, "/", &[]).await, 503, "bulkhead_full");
        assert_eq!(gw.backend.hits(), hits);
        gw.backend.held.release(1);
        assert_eq!(done(third).await.status, StatusCode::OK, "{via:?}: the waiter is served");
        gw.backend.held.release(1);
        for h in held {
            assert_eq!(done(h).await.status, StatusCode::OK);
        }
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_past_max_wait_gets_queue_timeout() {
    let gw =
        Gw::start("", "", &api("    bulkhead: { max_concurrent: 2, queue: 1, max_wait: 200ms }\n"))
            .await;
    for via in BOTH {
        let base = gw.backend.arrived().len();
        let held: Vec<_> = (0..2).map(|_| gw.spawn(via, "/hold", &[])).collect();
        gw.held(base + 2).await;
        let started = Instant::now();
        let waited = gw.call(via, "/", &[]).await;
        assert_refused(&waited, 503, "queue_timeout");
        assert!(started.elapsed() >= Duration::from_millis(190), "{:?}", started.elapsed());
        gw.backend.held.release(2);
        for h in held {
            assert_eq!(done(h).await.status, StatusCode::OK);
        }
    }
    let metrics = gw.metrics().await;
    assert!(metrics.contains(
        "spillway_rejections_total{route=\"api\",reason=\"queue_timeout\",criticality=\"CRITICAL\"} 2"
    ));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_critical_waiter_is_served_before_an_earlier_sheddable_one() {
    let gw =
        Gw::start("", "", &api("    bulkhead: { max_concurrent: 1, queue: 2, max_wait: 3s }\n"))
            .await;
    for via in BOTH {
        let tag = |t: &str| format!("{t}-{via:?}");
        let base = gw.backend.arrived().len();
        let first = gw.spawn(via, "/hold", &[("x-tag", &tag("first"))]);
        gw.held(base + 1).await;
        let shed = gw.spawn(via, "/hold", &[("x-tag", &tag("sheddable")), (CRIT, "SHEDDABLE")]);
        gw.queued("api", "bulkhead", 1).await;
        let crit = gw.spawn(via, "/hold", &[("x-tag", &tag("critical")), (CRIT, "CRITICAL")]);
        gw.queued("api", "bulkhead", 2).await;
        gw.backend.held.release(1);
        gw.held(base + 2).await;
        assert_eq!(gw.backend.arrived()[base + 1], tag("critical"), "the higher class first");
        gw.backend.held.release(2);
        gw.held(base + 3).await;
        assert_eq!(gw.backend.arrived()[base + 2], tag("sheddable"));
        for h in [first, shed, crit] {
            assert_eq!(done(h).await.status, StatusCode::OK);
        }
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_gives_a_sheddable_waiters_place_to_a_critical_request() {
    let gw =
        Gw::start("", "", &api("    bulkhead: { max_concurrent: 1, queue: 1, max_wait: 3s }\n"))
            .await;
    for via in BOTH {
        let base = gw.backend.arrived().len();
        let first = gw.spawn(via, "/hold", &[]);
        gw.held(base + 1).await;
        let shed = gw.spawn(via, "/hold", &[("x-tag", "sheddable"), (CRIT, "SHEDDABLE")]);
        gw.queued("api", "bulkhead", 1).await;
        let started = Instant::now();
        let crit = gw.spawn(via, "/hold", &[("x-tag", "critical"), (CRIT, "CRITICAL")]);
        let displaced = done(shed).await;
        assert_refused(&displaced, 503, "bulkhead_full");
        assert!(started.elapsed() < Duration::from_secs(2), "displaced at once, not at max_wait");
        // A second SHEDDABLE cannot displace the CRITICAL waiter.
        assert_refused(&gw.call(via, "/", &[(CRIT, "SHEDDABLE")]).await, 503, "bulkhead_full");
        gw.backend.held.release(2);
        assert_eq!(done(first).await.status, StatusCode::OK);
        assert_eq!(done(crit).await.status, StatusCode::OK);
        assert_eq!(gw.backend.arrived().last().unwrap(), "critical");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_on_one_level_leaves_another_level_untouched() {
    let routes = r#"
  - { name: a, match: { path_prefix: /a/ }, cluster: app, rewrite: { path_prefix: / }, level: L2 }
  - { name: b, match: { path_prefix: /b/ }, cluster: app, rewrite: { path_prefix: / }, level: L0 }
"#;
    let levels = "levels:\n  L0: { max_concurrent: 8 }\n  L2: { max_concurrent: 2, queue: 0 }";
    let gw = Gw::start(levels, "", routes).await;
    for via in BOTH {
        let base = gw.backend.arrived().len();
        let held: Vec<_> = (0..2).map(|_| gw.spawn(via, "/a/hold", &[])).collect();
        gw.held(base + 2).await;
        for _ in 0..3 {
            assert_refused(
                &gw.call(via, "/a/x", &[(CRIT, "CRITICAL_PLUS")]).await,
                503,
                "bulkhead_full",
            );
            assert_eq!(gw.call(via, "/b/x", &[]).await.status, StatusCode::OK, "{via:?}");
        }
        let p = gw.policies().await;
        let levels = p["levels"].as_array().unwrap();
        let l2 = levels.iter().find(|l| l["name"] == "level:L2").unwrap();
        assert_eq!(l2["in_use"], 2, "{p}");
        gw.backend.held.release(2);
        for h in held {
            assert_eq!(done(h).await.status, StatusCode::OK);
        }
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_have_their_own_pool_and_fast_ones_are_unaffected() {
    let gw = Gw::start(
        "",
        "",
        &api(
            "    bulkhead: { max_concurrent: 4 }\n    slow: { header: x-slow, bulkhead: { max_concurrent: 1 } }\n",
        ),
    )
    .await;
    for via in BOTH {
        let base = gw.backend.arrived().len();
        let slow = gw.spawn(via, "/hold", &[("x-slow", "1")]);
        gw.held(base + 1).await;
        assert_refused(&gw.call(via, "/", &[("x-slow", "1")]).await, 503, "bulkhead_full");
        for _ in 0..5 {
            assert_eq!(gw.call(via, "/", &[]).await.status, StatusCode::OK, "{via:?}");
        }
        let p = gw.policies().await;
        let api = route_view(&p, "api");
        assert_eq!(api["slow"]["in_use"], 1, "{api}");
        assert_eq!(api["bulkhead"]["in_use"], 0, "{api}");
        gw.backend.held.release(1);
        assert_eq!(done(slow).await.status, StatusCode::OK);
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codel_refuses_waiters_of_a_standing_queue_before_their_max_wait() {
    let gw = Gw::start(
        "",
        "",
        &api(
            "    bulkhead: { max_concurrent: 1, queue: 16, max_wait: 4s, queue_discipline: codel }\n",
        ),
    )
    .await;
    let started = Instant::now();
    let mut requests = vec![gw.spawn(Via::Lean, "/hold", &[])];
    gw.held(1).await;
    for _ in 0..6 {
        requests.push(gw.spawn(Via::Lean, "/hold", &[]));
    }
    gw.queued("api", "bulkhead", 6).await;
    // Keep the queue standing: let one request through every 150 ms (CoDel's target is 5 ms,
    // its interval 100 ms), until CoDel has dropped a waiter (bounded).
    let mut drops = 0;
    for _ in 0..7 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        gw.backend.held.release(1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        drops =
            route_view(&gw.policies().await, "api")["bulkhead"]["codel_drops"].as_u64().unwrap();
        if drops > 0 {
            break;
        }
    }
    assert!(drops > 0, "a standing queue sheds from itself");
    gw.backend.held.open();
    let mut refused = 0;
    for r in requests {
        let r = done(r).await;
        if r.status != StatusCode::OK {
            assert_refused(&r, 503, "queue_timeout");
            refused += 1;
        }
    }
    assert!(refused as u64 >= drops, "{refused} refused, {drops} drops");
    assert!(started.elapsed() < Duration::from_secs(4), "refused before their max_wait");
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Deadlines and budgets
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incoming_deadline_is_capped_and_forwarded_as_the_remaining_budget() {
    let gw =
        Gw::start("", "", &api("    deadline: { default: 1s, max: 2s, min_remaining: 50ms }\n"))
            .await;
    let parse_rt = |v: &str| spillway_core::deadline::parse_request_timeout(v.as_bytes()).unwrap();
    let parse_grpc = |v: &str| spillway_core::deadline::parse_grpc_timeout(v.as_bytes()).unwrap();
    for via in BOTH {
        let capped = gw.call(via, "/headers", &[("x-request-timeout", "10s")]).await;
        let sent = parse_rt(&capped.echoed("x-request-timeout").unwrap());
        assert!(sent > Duration::ZERO && sent <= Duration::from_secs(2), "{via:?}: {sent:?}");
        let kept = gw.call(via, "/headers", &[("x-request-timeout", "500ms")]).await;
        let sent = parse_rt(&kept.echoed("x-request-timeout").unwrap());
        assert!(sent > Duration::ZERO && sent <= Duration::from_millis(500), "{via:?}: {sent:?}");
        let none = gw.call(via, "/headers", &[]).await;
        assert_eq!(none.echoed("x-request-timeout"), None, "no header is invented");
    }
    // grpc-timeout on the hyper path.
    let capped = gw.call(Via::Hyper, "/headers", &[("grpc-timeout", "10S")]).await;
    let sent = parse_grpc(&capped.echoed("grpc-timeout").unwrap());
    assert!(sent > Duration::ZERO && sent <= Duration::from_secs(2), "{sent:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_below_min_remaining_fails_fast_with_504_and_no_upstream_call() {
    let gw =
        Gw::start("", "", &api("    deadline: { default: 1s, max: 2s, min_remaining: 50ms }\n"))
            .await;
    for via in BOTH {
        let hits = gw.backend.hits();
        assert_refused(
            &gw.call(via, "/", &[("x-request-timeout", "20ms")]).await,
            504,
            "deadline_exceeded",
        );
        assert_eq!(gw.backend.hits(), hits, "{via:?}: no upstream call");
        assert_eq!(gw.call(via, "/", &[("x-request-timeout", "1s")]).await.status, 200);
    }
    let hits = gw.backend.hits();
    assert_refused(
        &gw.call(Via::Hyper, "/", &[("grpc-timeout", "20m")]).await,
        504,
        "deadline_exceeded",
    );
    assert_eq!(gw.backend.hits(), hits);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_budget_is_sent_upstream_and_a_client_cannot_raise_it() {
    let gw = Gw::start(
        "",
        "",
        &api("    budget: { grant: { default: 100, by_header: { x-role: { gold: 1000 } } } }\n"),
    )
    .await;
    const B: &str = "x-spillway-budget";
    for via in BOTH {
        let sent = |r: Resp| r.echoed(B);
        assert_eq!(sent(gw.call(via, "/headers", &[]).await).as_deref(), Some("100"), "{via:?}");
        let gold = gw.call(via, "/headers", &[("x-role", "gold")]).await;
        assert_eq!(sent(gold).as_deref(), Some("1000"), "{via:?}");
        let raised = gw.call(via, "/headers", &[(B, "5000")]).await;
        assert_eq!(sent(raised).as_deref(), Some("100"), "{via:?}: lowered to the grant");
        let gold_raised = gw.call(via, "/headers", &[(B, "5000"), ("x-role", "gold")]).await;
        assert_eq!(sent(gold_raised).as_deref(), Some("1000"), "{via:?}");
        let spent = gw.call(via, "/headers", &[(B, "7")]).await;
        assert_eq!(sent(spent).as_deref(), Some("7"), "{via:?}: a lower budget is kept");
    }
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// BBR and adaptive concurrency
// ---------------------------------------------------------------------------------------------

/// A gateway whose route has BBR (threshold 80 %, 1 s window, 500 ms cool-down) that has
/// learned a small max in-flight from sequential 50 ms requests. The CPU usage BBR reads is the
/// test's to set (`RunOptions::external_cpu`), so whether the machine is busy decides nothing.
async fn bbr_gateway() -> Gw {
    let bbr =
        "    overload: { bbr: { cpu_threshold: 0.8, window: 1s, buckets: 10, cooldown: 500ms } }\n";
    let (b, backend) = backend("app").await;
    let options = spillway_gateway::RunOptions { external_cpu: true, ..Default::default() };
    let config = common::config(&yaml(b, "", "", &api(bbr)));
    let gw = Gw::wrap(spillway_gateway::Gateway::start(config, None, options).unwrap(), backend);
    for _ in 0..10 {
        assert_eq!(gw.call(Via::Lean, "/sleep?ms=50", &[]).await.status, StatusCode::OK);
    }
    gw
}

/// Sets the CPU usage BBR sees.
fn set_cpu(gw: &Gw, permille: u32) {
    let control = gw.gw.as_ref().unwrap().control();
    control.shared.policy.cpu.set(spillway_core::overload::CpuUsage::from_permille(permille));
}

/// Sends a wave of 24 concurrent 400 ms requests; returns how many were shed and whether
/// `/admin/policies` showed BBR dropping meanwhile.
async fn wave(gw: &Gw) -> (usize, bool) {
    let wave: Vec<_> = (0..24).map(|_| gw.spawn(Via::Lean, "/sleep?ms=400", &[])).collect();
    let dropping = route_view(&gw.policies().await, "api")["bbr"]["dropping"] == true;
    let mut overloaded = 0;
    for h in wave {
        let r = done(h).await;
        if r.status != StatusCode::OK {
            assert_refused(&r, 503, "overloaded");
            overloaded += 1;
        }
    }
    (overloaded, dropping)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bbr_sheds_a_wave_beyond_its_learned_max_in_flight_while_the_cpu_is_hot() {
    // The wave is far beyond what 50 ms sequential requests taught BBR.
    let gw = bbr_gateway().await;
    // Cool: the same wave passes whole (BBR only checks while the CPU is hot).
    set_cpu(&gw, 300);
    assert_eq!(wave(&gw).await.0, 0, "a cool gateway sheds nothing");
    set_cpu(&gw, 950);
    let (overloaded, dropping) = wave(&gw).await;
    assert!(overloaded > 0, "some of the wave is shed");
    assert!(dropping, "/admin/policies shows BBR dropping");
    // One at a time stays within the learned max in flight: admitted, hot or not.
    for _ in 0..3 {
        assert_eq!(gw.call(Via::Lean, "/", &[]).await.status, StatusCode::OK);
    }
    let metrics = gw.metrics().await;
    assert!(metrics.contains("reason=\"overloaded\",criticality=\"CRITICAL\""), "{metrics}");
    assert!(metrics.contains("spillway_bbr_cpu 0.95"), "{metrics}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bbr_stops_dropping_once_the_cpu_cools_and_the_cooldown_passes() {
    let gw = bbr_gateway().await;
    set_cpu(&gw, 950);
    let (overloaded, _) = wave(&gw).await;
    assert!(overloaded > 0, "some of the wave is shed");
    set_cpu(&gw, 300);
    // The cool-down (500 ms after the last hot drop) keeps the check on for a moment, then
    // BBR stops dropping.
    gw.policies_until("BBR stops dropping", |p| route_view(p, "api")["bbr"]["dropping"] == false)
        .await;
    let (overloaded, _) = wave(&gw).await;
    assert_eq!(overloaded, 0, "a cooled gateway sheds nothing");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adaptive_concurrency_limit_learns_and_refuses_beyond_it() {
    // A starting limit of 8 rather than a production-like 50: a burst of 16 is then well
    // beyond it, and the test stays small on a 2-core machine.
    let gw =
        Gw::start("", "    concurrency: { adaptive: gradient, initial: 8, max: 200 }", &api(""))
            .await;
    // A route without a policy of its own: the cluster's limit still applies.
    let initial = gw.policies().await["clusters"][0]["concurrency"]["limit"].as_u64().unwrap();
    assert_eq!(initial, 8);
    let mut refused = 0;
    for _ in 0..3 {
        let burst: Vec<_> = (0..16).map(|_| gw.spawn(Via::Lean, "/sleep?ms=150", &[])).collect();
        for h in burst {
            let r = done(h).await;
            if r.status != StatusCode::OK {
                assert_refused(&r, 503, "concurrency_limit");
                refused += 1;
            }
        }
    }
    assert!(refused > 0, "a burst beyond the limit is refused");
    let p = gw.policies().await;
    let limit = p["clusters"][0]["concurrency"]["limit"].as_u64().unwrap();
    assert_ne!(limit, initial, "the limit was learned: {p}");
    assert_eq!(p["clusters"][0]["concurrency"]["in_flight"], 0, "{p}");
    let metrics = gw.metrics().await;
    assert!(metrics.contains(&format!("spillway_concurrency_limit{{cluster=\"app\"}} {limit}")));
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Reloads and visibility
// ---------------------------------------------------------------------------------------------

fn reload_yaml(b: SocketAddr, limit: &str, extra_route: &str) -> String {
    yaml(
        b,
        "",
        "",
        &format!(
            "{extra_route}  - {{ name: api, cluster: app, limits: [{{ key: header:x-api-key, {limit} }}] }}\n"
        ),
    )
}

async fn reload(admin: SocketAddr) -> (StatusCode, String) {
    let (status, _, body) = h1(admin, Request::post("/admin/reload").body(body("")).unwrap()).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_keeps_an_exhausted_bucket_and_a_changed_rate_starts_fresh() {
    let (b, backend) = backend("app").await;
    let path = temp_path("admission-reload.yaml");
    let bucket = "algorithm: token_bucket, rate: 1/h, burst: 2";
    std::fs::write(&path, reload_yaml(b, bucket, "")).unwrap();
    let gw = Gw::wrap(gateway_from_file(&path), backend);
    let k = [("x-api-key", "k")];
    for _ in 0..2 {
        assert_eq!(gw.call(Via::Lean, "/", &k).await.status, StatusCode::OK);
    }
    assert_refused(&gw.call(Via::Lean, "/", &k).await, 429, "rate_limited");

    // An unrelated change: the bucket is the same one, still empty.
    let other = "  - { name: other, match: { path_prefix: /other }, cluster: app }\n";
    std::fs::write(&path, reload_yaml(b, bucket, other)).unwrap();
    let (status, text) = reload(gw.admin).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_refused(&gw.call(Via::Lean, "/", &k).await, 429, "rate_limited");
    assert_refused(&gw.call(Via::Hyper, "/", &k).await, 429, "rate_limited");
    assert_eq!(gw.call(Via::Lean, "/other", &[]).await.status, StatusCode::OK, "the new route");

    // A bad policy is refused; the old config (and its empty bucket) keeps serving.
    std::fs::write(&path, reload_yaml(b, "algorithm: token_buckt, rate: 1/h, burst: 2", other))
        .unwrap();
    let (status, text) = reload(gw.admin).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{text}");
    assert!(text.contains("did you mean `token_bucket`"), "{text}");
    assert_refused(&gw.call(Via::Lean, "/", &k).await, 429, "rate_limited");

    // A changed rate is a new limit: a fresh bucket.
    std::fs::write(&path, reload_yaml(b, "algorithm: token_bucket, rate: 2/h, burst: 2", other))
        .unwrap();
    let (status, text) = reload(gw.admin).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    for _ in 0..2 {
        assert_eq!(gw.call(Via::Lean, "/", &k).await.status, StatusCode::OK);
    }
    assert_refused(&gw.call(Via::Lean, "/", &k).await, 429, "rate_limited");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_show_in_metrics_and_limits_and_pools_in_admin_policies() {
    let gw = Gw::start(
        "",
        "",
        &api(
            "    limits: [{ name: per-key, key: header:x-api-key, algorithm: token_bucket, rate: 1/h, burst: 1 }]\n    bulkhead: { max_concurrent: 1, queue: 2, max_wait: 3s }\n",
        ),
    )
    .await;
    for key in ["a", "b", "c"] {
        assert_eq!(gw.call(Via::Lean, "/", &[("x-api-key", key)]).await.status, StatusCode::OK);
    }
    let refused = gw.call(Via::Lean, "/", &[("x-api-key", "a")]).await;
    assert_refused(&refused, 429, "rate_limited");
    assert!(refused.body.contains("\"limit\":\"per-key\""), "{refused:?}");
    let held = gw.spawn(Via::Lean, "/hold", &[("x-api-key", "d")]);
    gw.held(1).await;
    let waiting = gw.spawn(Via::Lean, "/", &[("x-api-key", "e")]);
    gw.queued("api", "bulkhead", 1).await;

    let p = gw.policies().await;
    let api = route_view(&p, "api");
    let limit = &api["limits"][0];
    assert_eq!(limit["name"], "per-key");
    assert_eq!(limit["algorithm"], "token_bucket");
    assert_eq!(limit["keys"], 5, "{api}");
    assert_eq!(api["bulkhead"]["in_use"], 1, "{api}");
    assert_eq!(api["bulkhead"]["queued"], 1, "{api}");
    let rejections = api["rejections"].as_array().unwrap();
    assert!(
        rejections.iter().any(|r| r["reason"] == "rate_limited"
            && r["criticality"] == "CRITICAL"
            && r["count"] == 1),
        "{api}"
    );

    let metrics = gw.metrics().await;
    assert!(
        metrics.contains(
            "spillway_rejections_total{route=\"api\",reason=\"rate_limited\",criticality=\"CRITICAL\"} 1"
        ),
        "{metrics}"
    );
    assert!(metrics.contains("spillway_bulkhead_in_use{pool=\"route:api\"} 1"), "{metrics}");
    assert!(metrics.contains("spillway_bulkhead_queued{pool=\"route:api\"} 1"), "{metrics}");
    assert!(metrics.contains("spillway_bbr_cpu "), "{metrics}");
    promtool_accepts(&metrics);
    gw.backend.held.release(1);
    assert_eq!(done(held).await.status, StatusCode::OK);
    assert_eq!(done(waiting).await.status, StatusCode::OK);
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Cluster breaker (SRE adaptive throttling)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_backend_trips_the_sre_breaker_and_requests_are_dropped_without_upstream_calls() {
    let gw = Gw::start(
        "",
        "    breaker: { sre: { k: 2.0, window: 1s, min_requests: 10 } }\n    outlier: { consecutive_failures: 0 }",
        &api(""),
    )
    .await;
    gw.backend.status.store(500, Ordering::SeqCst);
    let mut upstream_500 = 0;
    let mut throttled = 0;
    for i in 0..60 {
        let via = if i % 2 == 0 { Via::Lean } else { Via::Hyper };
        let r = gw.call(via, "/", &[]).await;
        match r.status.as_u16() {
            500 => upstream_500 += 1,
            503 => {
                assert_refused(&r, 503, "throttled");
                throttled += 1;
            }
            other => panic!("unexpected {other}: {r:?}"),
        }
    }
    // With every call failing, the drop probability climbs towards (n - 0) / (n + 1): once the
    // window holds 10 requests most of the rest never reach the backend.
    assert_eq!(upstream_500 + throttled, 60);
    assert!(throttled >= 30, "most requests are dropped at the gateway: {throttled} of 60");
    assert_eq!(gw.backend.hits.load(Ordering::SeqCst), upstream_500 as u64);
    let p = gw.policies().await;
    let drop = p["clusters"][0]["breaker"]["drop_probability"].as_f64().unwrap();
    assert!(drop > 0.8, "{p}");
    assert!(gw.metrics().await.contains("spillway_breaker_drop_probability{cluster=\"app\"}"));
    // The backend recovers. Drops count as requests without accepts (the SRE rule), so the
    // failures must first leave the 1 s window; then traffic flows again.
    gw.backend.status.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut ok = 0;
    for _ in 0..50 {
        if gw.call(Via::Lean, "/", &[]).await.status == StatusCode::OK {
            ok += 1;
        }
    }
    assert!(ok >= 45, "a recovered backend gets its traffic back: {ok} of 50");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_machine_breaker_opens_on_failures_answers_circuit_open_and_closes_after_probes() {
    let gw = Gw::start(
        "",
        "    breaker: { state_machine: { calls: 10, failure_ratio: 0.5, min_calls: 5, open: 1s, half_open_probes: 2 } }\n    outlier: { consecutive_failures: 0 }",
        &api(""),
    )
    .await;
    gw.backend.status.store(500, Ordering::SeqCst);
    // Five failures reach the ratio: the breaker opens.
    for _ in 0..5 {
        assert_eq!(gw.call(Via::Lean, "/", &[]).await.status.as_u16(), 500);
    }
    let hits = gw.backend.hits.load(Ordering::SeqCst);
    for via in BOTH {
        let r = gw.call(via, "/", &[]).await;
        assert_refused(&r, 503, "circuit_open");
        assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    }
    assert_eq!(gw.backend.hits.load(Ordering::SeqCst), hits, "open: no upstream call");
    let p = gw.policies().await;
    assert_eq!(p["clusters"][0]["breaker"]["state"], "open", "{p}");
    assert!(gw.metrics().await.contains("spillway_breaker_state{cluster=\"app\"} 2"));
    // The backend recovers; after the open time two successful probes close the breaker.
    gw.backend.status.store(0, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..2 {
        assert_eq!(gw.call(Via::Lean, "/", &[]).await.status, StatusCode::OK);
    }
    let p = gw.policies().await;
    assert_eq!(p["clusters"][0]["breaker"]["state"], "closed", "{p}");
    for _ in 0..5 {
        assert_eq!(gw.call(Via::Hyper, "/", &[]).await.status, StatusCode::OK);
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_keys_are_listed_and_a_hot_only_limit_spares_the_others() {
    let gw = Gw::start(
        "",
        "",
        &api("    hot_keys: { key: query:item, top: 2, min_rate: 0 }\n    limits:\n      - { key: query:item, algorithm: token_bucket, rate: 1/s, burst: 3, hot_only: true, overrides: { vip: 1000/s } }\n"),
    )
    .await;
    let mut served = std::collections::BTreeMap::<&str, (u32, u32)>::new();
    for (i, item) in std::iter::repeat_n("a", 20)
        .chain(std::iter::repeat_n("vip", 15))
        .chain(std::iter::once("c"))
        .enumerate()
    {
        let via = if i % 2 == 0 { Via::Lean } else { Via::Hyper };
        let r = gw.call(via, &format!("/?item={item}"), &[]).await;
        let e = served.entry(item).or_default();
        if r.status == StatusCode::OK {
            e.0 += 1;
        } else {
            assert_refused(&r, 429, "rate_limited");
            e.1 += 1;
        }
    }
    // `a` is hot: limited after its burst; `vip` is hot but has its own limit; `c` is not hot.
    assert_eq!(served["a"], (3, 17), "{served:?}");
    assert_eq!(served["vip"], (15, 0), "{served:?}");
    assert_eq!(served["c"], (1, 0), "{served:?}");
    let (status, _, body) = get(gw.admin, "/admin/hotkeys?route=api").await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    let keys: Vec<&str> = v["routes"][0]["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["a", "vip"], "{v}");
    assert_eq!(get(gw.admin, "/admin/hotkeys?route=nope").await.0, StatusCode::NOT_FOUND);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_only_cache_keeps_the_hot_keys_answers_and_passes_the_others_through() {
    let gw = Gw::start(
        "",
        "",
        &api("    hot_keys: { key: query:item, top: 1, min_rate: 0 }\n    cache: { ttl: 10s, max_bytes: 1MB, hot_only: true }\n"),
    )
    .await;
    let how = |r: &Resp| r.headers.get("x-spillway-cache").map(|v| v.to_str().unwrap().to_string());
    let hits_before = gw.backend.hits();
    // `a` becomes the one hot key: its first answer is fetched and kept, the rest are hits.
    let mut seen = Vec::new();
    for i in 0..6 {
        let via = if i % 2 == 0 { Via::Lean } else { Via::Hyper };
        let r = gw.call(via, "/?item=a", &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        seen.push(how(&r).unwrap_or_default());
    }
    // (The first answer is stored as its body ends, which may be just after the client read
    // it: the second request may still miss.)
    assert_eq!(seen[0], "miss", "{seen:?}");
    assert!(seen[2..].iter().all(|h| h == "hit"), "{seen:?}");
    let fetched = seen.iter().filter(|h| *h == "miss").count() as u64;
    assert_eq!(gw.backend.hits() - hits_before, fetched);
    // `b` is not hot: every request goes upstream, untouched by the cache.
    for via in [Via::Lean, Via::Hyper, Via::Lean] {
        let r = gw.call(via, "/?item=b", &[]).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(how(&r), None, "a cold key does not use the cache");
    }
    assert_eq!(gw.backend.hits() - hits_before, fetched + 3);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_stream_sends_a_snapshot_a_second_whose_counters_move_with_traffic() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gw = Gw::start(
        "",
        "",
        &api("    limits: [{ key: route, algorithm: token_bucket, rate: 1000/s }]\n"),
    )
    .await;
    let mut s = tokio::net::TcpStream::connect(gw.admin).await.unwrap();
    s.write_all(b"GET /admin/stream HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut text = String::new();
    let mut snapshots: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sent = false;
    while snapshots.len() < 2 {
        assert!(Instant::now() < deadline, "no second snapshot: {text}");
        let mut buf = [0u8; 65536];
        let n =
            tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "stream closed: {text}");
        text.push_str(&String::from_utf8_lossy(&buf[..n]));
        while let Some(start) = text.find("data: ") {
            let Some(end) = text[start..].find("\n\n") else { break };
            let json = text[start + 6..start + end].to_string();
            text.drain(..start + end + 2);
            snapshots.push(serde_json::from_str(&json).unwrap());
        }
        if snapshots.len() == 1 && !sent {
            // Traffic between the two snapshots.
            for _ in 0..5 {
                gw.call(Via::Lean, "/", &[]).await;
            }
            sent = true;
        }
    }
    let ok = |v: &Value| v["routes"][0]["answers"]["2xx"].as_u64().unwrap();
    assert_eq!(ok(&snapshots[1]) - ok(&snapshots[0]), 5, "{:?}", snapshots[1]["routes"]);
    assert!(snapshots[1]["policies"]["routes"].is_array());
    assert!(snapshots[1]["clusters"][0]["endpoints"].is_array());
    assert!(snapshots[1]["unix_ms"].as_u64().unwrap() > snapshots[0]["unix_ms"].as_u64().unwrap());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_counts_only_its_failure_statuses() {
    let gw = Gw::start(
        "",
        "    breaker: { failure_statuses: [503], state_machine: { calls: 10, failure_ratio: 0.5, min_calls: 5 } }\n    outlier: { consecutive_failures: 0 }",
        &api(""),
    )
    .await;
    // 500s are the application's answers here, not the cluster failing: the breaker stays
    // closed and every request reaches the backend.
    gw.backend.status.store(500, Ordering::SeqCst);
    for i in 0..10 {
        let via = if i % 2 == 0 { Via::Lean } else { Via::Hyper };
        assert_eq!(gw.call(via, "/", &[]).await.status.as_u16(), 500);
    }
    let p = gw.policies().await;
    assert_eq!(p["clusters"][0]["breaker"]["state"], "closed", "{p}");
    // 503s count: it opens.
    gw.backend.status.store(503, Ordering::SeqCst);
    for _ in 0..10 {
        gw.call(Via::Lean, "/", &[]).await;
    }
    let p = gw.policies().await;
    assert_eq!(p["clusters"][0]["breaker"]["state"], "open", "{p}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_refusals_never_open_the_breaker() {
    // A limit refuses most requests (429) and a drill aborts some (503): neither is the
    // cluster failing, so neither may count towards the breaker.
    let gw = Gw::start(
        "",
        "    breaker: { state_machine: { calls: 10, failure_ratio: 0.5, min_calls: 5 } }\n    outlier: { consecutive_failures: 0 }",
        &api("    limits: [{ key: route, algorithm: token_bucket, rate: 1/s, burst: 2 }]\n    fault: { allow_header: true }\n"),
    )
    .await;
    let mut refused = 0;
    for i in 0..20 {
        let via = if i % 2 == 0 { Via::Lean } else { Via::Hyper };
        let headers: &[(&str, &str)] =
            if i % 3 == 0 { &[("x-spillway-fault", "abort=503")] } else { &[] };
        let r = gw.call(via, "/", headers).await;
        if r.status.as_u16() != 200 {
            refused += 1;
            assert!(matches!(r.error().as_str(), "rate_limited" | "fault_injected"), "{r:?}");
        }
    }
    assert!(refused >= 15, "{refused} refused");
    let p = gw.policies().await;
    assert_eq!(p["clusters"][0]["breaker"]["state"], "closed", "{p}");
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Fault injection (drills)
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_abort_answers_its_status_without_an_upstream_call_on_both_paths() {
    let gw = Gw::start("", "", &api("    fault: { abort: { percent: 100, status: 418 } }")).await;
    for via in BOTH {
        let r = gw.call(via, "/", &[]).await;
        assert_refused(&r, 418, "fault_injected");
    }
    assert_eq!(gw.backend.hits.load(Ordering::SeqCst), 0);
    assert!(gw.metrics().await.contains("reason=\"fault_injected\""));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fault_header_is_obeyed_only_where_the_route_allows_it() {
    let routes = format!(
        "{}\n  - name: drills\n    match: {{ path_prefix: /drill }}\n    cluster: app\n    \
         fault: {{ allow_header: true }}",
        api("    match: { path_prefix: /api }\n    fault: { delay: { percent: 0, duration: 1s } }")
    );
    let gw = Gw::start("", "", &routes).await;
    // Not allowed on `api`: the header is ignored, the request is served.
    let r = gw.call(Via::Lean, "/api", &[("x-spillway-fault", "abort=503")]).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    // Allowed on `drills`: abort and delay as asked.
    for via in BOTH {
        let r = gw.call(via, "/drill", &[("x-spillway-fault", "abort=502")]).await;
        assert_refused(&r, 502, "fault_injected");
    }
    let started = Instant::now();
    let r = gw.call(Via::Lean, "/drill", &[("x-spillway-fault", "delay=300ms")]).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    // A route without any percentage configured faults nothing by itself.
    let r = gw.call(Via::Hyper, "/drill", &[]).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Degradation: static fallback
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_answers_when_the_cluster_sheds_or_fails_but_not_for_a_clients_own_limit() {
    let fallback =
        "    fallback: { status: 200, body: '{\"items\":[]}', content_type: application/json }";
    let routes = format!(
        "  - name: dead\n    match: {{ path_prefix: /dead }}\n    cluster: nowhere\n{fallback}\n{}\n    \
         limits: [ {{ key: header:x-api-key, algorithm: token_bucket, rate: 1/h, burst: 1 }} ]",
        api(fallback)
    );
    let cluster_extra = "    concurrency: { fixed: 1 }\n  - name: nowhere\n    endpoints: [{ address: \"127.0.0.1:1\" }]\n    timeouts: { connect: 200ms, request: 1s }";
    let gw = Gw::start("", cluster_extra, &routes).await;
    // The cluster sheds (its one slot is held): the fallback answers, marked degraded.
    let held = gw.spawn(Via::Lean, "/hold", &[("x-api-key", "a")]);
    gw.held(1).await;
    for via in BOTH {
        let key = format!("b-{via:?}");
        let r = gw.call(via, "/x", &[("x-api-key", &key)]).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(r.body, "{\"items\":[]}");
        assert_eq!(r.header("x-spillway-degraded"), Some("fallback"));
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    gw.backend.held.open();
    assert_eq!(done(held).await.status, StatusCode::OK);
    // The client's own limit is answered as itself (key `a` spent its burst).
    let r = gw.call(Via::Lean, "/x", &[("x-api-key", "a")]).await;
    assert_refused(&r, 429, "rate_limited");
    // An upstream that cannot be reached: the fallback, on both paths.
    for via in BOTH {
        let r = gw.call(via, "/dead", &[]).await;
        assert_eq!(r.header("x-spillway-degraded"), Some("fallback"), "{r:?}");
    }
    assert!(gw
        .metrics()
        .await
        .contains("spillway_degraded_total{route=\"api\",kind=\"fallback\"} 2"));
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Degradation plans
// ---------------------------------------------------------------------------------------------

async fn post(admin: SocketAddr, path: &str) -> (StatusCode, String) {
    let req = Request::post(path).header("host", "admin").body(body("")).unwrap();
    let (status, _, body) = h1(admin, req).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_switched_at_run_time_answers_fallbacks_and_sheds_low_classes_until_switched_off() {
    let routes = format!(
        "  - name: recs\n    match: {{ path_prefix: /recs }}\n    cluster: app\n    \
         fallback: {{ body: no-recommendations }}\n{}",
        api("")
    );
    let top = "plans:\n  - name: peak-day\n    actions:\n      - { route: recs, fallback: true }\n      - { shed_below: CRITICAL }";
    let gw = Gw::start(top, "", &routes).await;
    assert_eq!(gw.call(Via::Lean, "/recs", &[]).await.status, StatusCode::OK);
    let hits = gw.backend.hits.load(Ordering::SeqCst);
    let (status, body) = post(gw.admin, "/admin/plans/peak-day/activate").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["persisted"], Value::Null, "no state_dir: nothing saved; {body}");
    for via in BOTH {
        let r = gw.call(via, "/recs", &[]).await;
        assert_eq!(r.body, "no-recommendations", "{r:?}");
        assert_eq!(r.header("x-spillway-degraded"), Some("fallback"));
        let shed = gw.call(via, "/x", &[("x-spillway-criticality", "SHEDDABLE")]).await;
        assert_refused(&shed, 503, "degraded");
        let kept = gw.call(via, "/x", &[("x-spillway-criticality", "CRITICAL")]).await;
        assert_eq!(kept.status, StatusCode::OK, "{kept:?}");
    }
    assert_eq!(gw.backend.hits.load(Ordering::SeqCst), hits + 2, "only the CRITICAL calls");
    let (_, _, plans) = get(gw.admin, "/admin/plans").await;
    let plans: Value = serde_json::from_slice(&plans).unwrap();
    assert_eq!(plans["plans"][0]["active"], true, "{plans}");
    assert!(gw.metrics().await.contains("spillway_plan_active{plan=\"peak-day\"} 1"));
    // An unknown plan is a 404; switching off restores normal service.
    assert_eq!(post(gw.admin, "/admin/plans/nope/activate").await.0, StatusCode::NOT_FOUND);
    assert_eq!(post(gw.admin, "/admin/plans/peak-day/deactivate").await.0, StatusCode::OK);
    let r = gw.call(Via::Lean, "/x", &[("x-spillway-criticality", "SHEDDABLE")]).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    gw.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Degradation plans across restarts (`state_dir`)
// ---------------------------------------------------------------------------------------------

/// The routes of the plan tests: `recs` with a fallback, and `api` for everything else.
fn plan_routes() -> String {
    format!(
        "  - name: recs\n    match: {{ path_prefix: /recs }}\n    cluster: app\n    \
         fallback: {{ body: no-recommendations }}\n{}",
        api("")
    )
}

/// The `peak-day` plan (fallback on `recs`, shed below CRITICAL) and `state_dir: dir`.
fn plans_with_state_dir(dir: &std::path::Path) -> String {
    format!(
        "plans:\n  - name: peak-day\n    actions:\n      - {{ route: recs, fallback: true }}\n      \
         - {{ shed_below: CRITICAL }}\nstate_dir: \"{}\"",
        dir.display()
    )
}

/// Asserts that `peak-day` is `on` (or off) as the admin API, the metrics and requests on both
/// paths see it.
async fn assert_peak_day(gw: &Gw, on: bool) {
    let (_, _, plans) = get(gw.admin, "/admin/plans").await;
    let plans: Value = serde_json::from_slice(&plans).unwrap();
    assert_eq!(plans["plans"][0]["active"], on, "{plans}");
    let metric = format!("spillway_plan_active{{plan=\"peak-day\"}} {}", u8::from(on));
    assert!(gw.metrics().await.contains(&metric), "{metric}");
    for via in BOTH {
        let r = gw.call(via, "/recs", &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{r:?}");
        assert_eq!(r.body == "no-recommendations", on, "{via:?}: {r:?}");
        let shed = gw.call(via, "/x", &[("x-spillway-criticality", "SHEDDABLE")]).await;
        if on {
            assert_refused(&shed, 503, "degraded");
        } else {
            assert_eq!(shed.status, StatusCode::OK, "{via:?}: {shed:?}");
        }
    }
}

/// Stops the gateway and leaves its backend to the next one (`Gw::stop` also opens the
/// backend's hold, which can be done once).
async fn stop_gateway_only(mut gw: Gw) {
    let gw = gw.gw.take().unwrap();
    blocking(move || {
        gw.shutdown();
        gw.wait();
    })
    .await;
}

/// The `active` list of the plans state file in `dir`.
fn saved_plans(dir: &std::path::Path) -> Value {
    let text = std::fs::read_to_string(dir.join("plans.json")).unwrap();
    serde_json::from_str::<Value>(&text).unwrap()["active"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_state_dir_an_activated_plan_is_active_after_a_restart_and_a_deactivated_one_is_not() {
    let (b, backend) = backend("app").await;
    let dir = temp_path("plans-state");
    let text = yaml(b, &plans_with_state_dir(&dir), "", &plan_routes());
    let gw = Gw::wrap(gateway(&text), backend.clone());
    assert!(dir.is_dir(), "state_dir is created at start");
    assert_peak_day(&gw, false).await;
    let (status, body) = post(gw.admin, "/admin/plans/peak-day/activate").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer, serde_json::json!({"plan": "peak-day", "active": true, "persisted": true}));
    assert_eq!(saved_plans(&dir), serde_json::json!(["peak-day"]));
    assert_peak_day(&gw, true).await;
    stop_gateway_only(gw).await;

    // A new gateway on the same config: the plan acts from the first request, no admin call.
    let gw = Gw::wrap(gateway(&text), backend.clone());
    assert_peak_day(&gw, true).await;
    let (status, body) = post(gw.admin, "/admin/plans/peak-day/deactivate").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(saved_plans(&dir), serde_json::json!([]));
    stop_gateway_only(gw).await;

    let gw = Gw::wrap(gateway(&text), backend);
    assert_peak_day(&gw, false).await;
    gw.stop().await;
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec!["plans.json"], "no temporary file is left");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_state_file_starts_with_no_plan_and_a_failed_save_answers_500_but_switches() {
    let (b, backend) = backend("app").await;
    let dir = temp_path("plans-state-corrupt");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("plans.json"), "{\"active\": [\"peak-d").unwrap();
    let text = yaml(b, &plans_with_state_dir(&dir), "", &plan_routes());
    let gw = Gw::wrap(gateway(&text), backend);
    assert_peak_day(&gw, false).await;
    assert_eq!(
        std::fs::read_to_string(dir.join("plans.json")).unwrap(),
        "{\"active\": [\"peak-d",
        "the bad file is left alone until a switch"
    );
    let (status, body) = post(gw.admin, "/admin/plans/peak-day/activate").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(saved_plans(&dir), serde_json::json!(["peak-day"]), "overwritten by the switch");

    // The directory turns into a file: the save fails, the switch still applies.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, "not a directory").unwrap();
    let (status, body) = post(gw.admin, "/admin/plans/peak-day/deactivate").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((&answer["plan"], &answer["active"]), (&"peak-day".into(), &false.into()));
    assert_eq!(answer["persisted"], false, "{body}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains(&dir.join("plans.json").display().to_string()), "{error}");
    assert_peak_day(&gw, false).await;
    gw.stop().await;

    // A state_dir that cannot be created stops the start, naming the key and the path.
    let blocked = dir.join("state");
    let text = yaml(b, &plans_with_state_dir(&blocked), "", &plan_routes());
    let err = spillway_gateway::Gateway::start(config(&text), None, Default::default())
        .map(|_| ())
        .unwrap_err();
    let err = err.to_string();
    assert!(err.starts_with("state_dir: "), "{err}");
    assert!(err.contains(&blocked.display().to_string()), "{err}");
    std::fs::remove_file(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_to_another_state_dir_is_noted_and_the_next_switch_writes_there() {
    let (b, backend) = backend("app").await;
    let (first, second) = (temp_path("plans-state-a"), temp_path("plans-state-b"));
    let path = temp_path("plans-reload.yaml");
    std::fs::write(&path, yaml(b, &plans_with_state_dir(&first), "", &plan_routes())).unwrap();
    let gw = Gw::wrap(gateway_from_file(&path), backend);
    assert_eq!(post(gw.admin, "/admin/plans/peak-day/activate").await.0, StatusCode::OK);
    assert_eq!(saved_plans(&first), serde_json::json!(["peak-day"]));

    std::fs::write(&path, yaml(b, &plans_with_state_dir(&second), "", &plan_routes())).unwrap();
    let (status, text) = reload(gw.admin).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(second.is_dir(), "created by the reload");
    let (_, _, config) = get(gw.admin, "/admin/config").await;
    let config: Value = serde_json::from_slice(&config).unwrap();
    let notes = config["last_reload"]["notes"].to_string();
    assert!(notes.contains("state_dir is now") && notes.contains("next plan switch"), "{notes}");
    assert_peak_day(&gw, true).await;
    assert_eq!(post(gw.admin, "/admin/plans/peak-day/deactivate").await.0, StatusCode::OK);
    assert_eq!(saved_plans(&second), serde_json::json!([]));
    assert_eq!(saved_plans(&first), serde_json::json!(["peak-day"]), "the old file is not written");
    gw.stop().await;
    for dir in [first, second] {
        std::fs::remove_dir_all(dir).unwrap();
    }
    std::fs::remove_file(path).unwrap();
}
