//! `spillway demo`: four in-process backends (fast, slow, flaky, and one of fixed capacity) and
//! a gateway in front of them with an embedded config, so the gateway can be tried with nothing
//! else installed; [`tour`] then shows what the protections do, live: a limit answering 429, a
//! burst shed while CRITICAL traffic keeps succeeding, a deadline failing fast, a breaker
//! opening on a failing backend, and a degradation plan switched on and off.

use crate::{Config, Gateway, RunOptions};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// The demo config; `{fast}`, `{slow}`, `{flaky}`, `{port}`, `{admin}` are filled in.
pub const DEMO_CONFIG: &str = r#"
workers: 2
listeners:
  - name: public
    address: 127.0.0.1:{port}
admin:
  address: 127.0.0.1:{admin}
clusters:
  - name: fast
    endpoints: [{ address: "{fast}" }]
    timeouts: { connect: 200ms, request: 2s }
  - name: mixed
    endpoints:
      - { address: "{fast}", weight: 3 }
      - { address: "{slow}", weight: 1 }
    balance: p2c_ewma
    timeouts: { connect: 200ms, request: 2s }
  - name: capacity
    endpoints: [{ address: "{capacity}" }]
    timeouts: { connect: 200ms, request: 2s }
  # A backend that answers 503 to everything: its breaker opens after 5 failures of the last
  # 10 calls and stays open 5 s (503 circuit_open, no upstream call).
  - name: down
    endpoints: [{ address: "{down}" }]
    timeouts: { connect: 200ms, request: 2s }
    outlier: { consecutive_failures: 0 }
    breaker: { state_machine: { calls: 10, min_calls: 5, failure_ratio: 0.5, open: 5s } }
  - name: flaky
    endpoints:
      - { address: "{flaky}" }
      - { address: "{fast}" }
    balance: round_robin
    timeouts: { connect: 200ms, request: 2s }
    health_check: { path: /healthz, interval: 2s, timeout: 500ms, healthy: 2, unhealthy: 3 }
    outlier: { consecutive_failures: 3, base_ejection: 10s, max_ejected_percent: 50 }
routes:
  - name: hello
    match: { path: /hello }
    direct_response: { status: 200, body: "hello from spillway\n" }
  - name: fast
    match: { path_prefix: /fast }
    cluster: fast
    rewrite: { path_prefix: / }
  - name: mixed
    match: { path_prefix: /mixed }
    cluster: mixed
    rewrite: { path_prefix: / }
    # Record a tenth of this route's requests; `spillway replay` plays the file back:
    # record: { file: /tmp/spillway-traffic.jsonl, sample: 0.1, max_body: 4KB }
  - name: flaky
    match: { path_prefix: /flaky }
    cluster: flaky
    rewrite: { path_prefix: / }
  # Admission: a per-key rate limit (429 with Retry-After and RateLimit-* headers).
  - name: api
    match: { path_prefix: /api }
    cluster: fast
    rewrite: { path_prefix: / }
    limits:
      - { name: per-key, key: "header:x-api-key", algorithm: token_bucket, rate: 2/s, burst: 4 }
  # A backend that serves 4 requests at a time, 50 ms each (80 req/s). The bulkhead keeps at
  # most 4 in flight and queues up to 8 for 100 ms in criticality order, so a burst is shed
  # from SHEDDABLE (the default here) up while CRITICAL and CRITICAL_PLUS keep succeeding.
  - name: checkout
    match: { path_prefix: /checkout }
    cluster: capacity
    rewrite: { path_prefix: / }
    criticality: SHEDDABLE
    bulkhead: { max_concurrent: 4, queue: 8, max_wait: 100ms }
  # Deadlines: a caller with less than 50 ms left gets 504 at once, without an upstream call.
  - name: slow
    match: { path_prefix: /slow }
    cluster: mixed
    rewrite: { path_prefix: / }
    deadline: { default: 1s, max: 2s, min_remaining: 50ms }
  # A failing dependency behind a breaker.
  - name: orders
    match: { path_prefix: /orders }
    cluster: down
    rewrite: { path_prefix: / }
  # A nice-to-have: the `peak-day` plan answers it with its fallback, without calling upstream.
  - name: recommendations
    match: { path_prefix: /recommendations }
    cluster: fast
    rewrite: { path_prefix: / }
    fallback: { status: 200, body: '{"items":[]}', content_type: application/json }
plans:
  - name: peak-day
    actions: [ { route: recommendations, fallback: true }, { shed_below: CRITICAL } ]
"#;

#[derive(Clone, Copy)]
enum Kind {
    Fast,
    Slow,
    Flaky,
    /// 4 slots, 50 ms each; beyond that requests wait (as a real saturated service does).
    Capacity,
    /// Answers 503 to everything (its calls are counted, to show the breaker saving them).
    Down,
}

/// Requests the `down` backend received (the tour shows the breaker stopping them).
static DOWN_CALLS: AtomicU64 = AtomicU64::new(0);

/// The capacity backend's slots.
static CAPACITY: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

async fn demo_backend(
    kind: Kind,
    counter: Arc<AtomicU64>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let n = counter.fetch_add(1, Relaxed);
    if req.uri().path() == "/healthz" {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok\n"))));
    }
    let (status, body) = match kind {
        Kind::Capacity => {
            let _slot = CAPACITY.acquire().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            (StatusCode::OK, "capacity backend (4 x 50 ms)\n")
        }
        Kind::Fast => (StatusCode::OK, "fast backend\n"),
        Kind::Slow => {
            tokio::time::sleep(Duration::from_millis(200)).await;
            (StatusCode::OK, "slow backend (200 ms)\n")
        }
        // Fails three requests out of four in bursts, so outlier ejection has something to do.
        Kind::Flaky if !n.is_multiple_of(4) => {
            (StatusCode::INTERNAL_SERVER_ERROR, "flaky backend failed\n")
        }
        Kind::Flaky => (StatusCode::OK, "flaky backend (lucky)\n"),
        Kind::Down => {
            DOWN_CALLS.fetch_add(1, Relaxed);
            (StatusCode::SERVICE_UNAVAILABLE, "down backend\n")
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    Ok(resp)
}

fn start_backends() -> std::io::Result<[SocketAddr; 5]> {
    let listeners = [
        std::net::TcpListener::bind("127.0.0.1:0")?,
        std::net::TcpListener::bind("127.0.0.1:0")?,
        std::net::TcpListener::bind("127.0.0.1:0")?,
        std::net::TcpListener::bind("127.0.0.1:0")?,
        std::net::TcpListener::bind("127.0.0.1:0")?,
    ];
    let addrs = [
        listeners[0].local_addr()?,
        listeners[1].local_addr()?,
        listeners[2].local_addr()?,
        listeners[3].local_addr()?,
        listeners[4].local_addr()?,
    ];
    for l in &listeners {
        l.set_nonblocking(true)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("spillway-demo-backends".into()).spawn(move || {
        rt.block_on(async move {
            let kinds = [Kind::Fast, Kind::Slow, Kind::Flaky, Kind::Capacity, Kind::Down];
            for (l, kind) in listeners.into_iter().zip(kinds) {
                let Ok(l) = tokio::net::TcpListener::from_std(l) else { continue };
                let counter = Arc::new(AtomicU64::new(0));
                tokio::spawn(async move {
                    loop {
                        let Ok((stream, _)) = l.accept().await else { continue };
                        let counter = counter.clone();
                        tokio::spawn(async move {
                            let svc = hyper::service::service_fn(move |req| {
                                demo_backend(kind, counter.clone(), req)
                            });
                            let _ =
                                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                    .serve_connection(TokioIo::new(stream), svc)
                                    .await;
                        });
                    }
                });
            }
            std::future::pending::<()>().await;
        });
    })?;
    Ok(addrs)
}

/// The demo config text for these backend addresses and ports.
pub fn demo_config_text(backends: [SocketAddr; 5], port: u16, admin: u16) -> String {
    DEMO_CONFIG
        .replace("{down}", &backends[4].to_string())
        .replace("{capacity}", &backends[3].to_string())
        .replace("{fast}", &backends[0].to_string())
        .replace("{slow}", &backends[1].to_string())
        .replace("{flaky}", &backends[2].to_string())
        .replace("{port}", &port.to_string())
        .replace("{admin}", &admin.to_string())
}

/// Starts the demo backends and a gateway on `port` (admin on `admin`); returns the running
/// gateway and the text to print.
pub fn start(
    port: u16,
    admin: u16,
    signals: bool,
) -> Result<(Gateway, String), Box<dyn std::error::Error>> {
    let backends = start_backends()?;
    let config = Config::parse(
        &demo_config_text(backends, port, admin),
        "<demo>",
        std::path::Path::new("."),
    )?;
    let gateway = Gateway::start(config, None, RunOptions { signals, ..RunOptions::default() })?;
    let g = gateway.listener_address("public").ok_or("no public listener")?;
    let a = gateway.admin_address().ok_or("no admin listener")?;
    let text = format!(
        "\
Spillway demo: gateway on http://{g}, admin on http://{a}
Backends (in this process): fast {fast}, slow {slow} (200 ms), flaky {flaky} (fails 3 in 4),
capacity {capacity} (4 at a time x 50 ms)

Try:
  curl -i http://{g}/hello                 # direct response from the gateway
  curl -i http://{g}/fast/anything         # proxied to the fast backend (prefix rewritten)
  for i in $(seq 20); do curl -s http://{g}/mixed; done | sort | uniq -c
                                             # P2C + EWMA: the slow backend gets less traffic
  for i in $(seq 20); do curl -s http://{g}/flaky; done | sort | uniq -c
                                             # the flaky backend is ejected after 3 failures in a row
  curl -s http://{a}/admin/clusters        # endpoints, health, ejections, in-flight
  curl -s http://{a}/metrics | grep spillway_requests_total

Admission (the tour below ran these for you):
  for i in $(seq 6); do curl -s -o /dev/null -w '%{{http_code}} ' -H 'x-api-key: k1' http://{g}/api; done
                                             # 4 x 200 (the burst), then 429 with Retry-After
  curl -i -H 'x-api-key: k1' http://{g}/api # RateLimit-Limit/Remaining/Reset + JSON reason
  curl -i -H 'x-request-timeout: 20ms' http://{g}/slow
                                             # 504 deadline_exceeded at once, no upstream call
  spillway load http://{g}/checkout --rate 400 -d 5s -c 64 \
      --mix 'x-spillway-criticality: SHEDDABLE=50,CRITICAL=40,CRITICAL_PLUS=10'
                                             # 5x the backend's capacity: SHEDDABLE shed first
  for i in $(seq 8); do curl -s http://{g}/orders; echo; done
                                             # 5 upstream 503s, then circuit_open without calling it
  curl -s -X POST http://{a}/admin/plans/peak-day/activate
  curl -i http://{g}/recommendations       # the fallback (x-spillway-degraded: fallback)
  curl -s -X POST http://{a}/admin/plans/peak-day/deactivate
  curl -s http://{a}/admin/policies        # limits, pools in use, queues, rejections, breakers
  curl -s http://{a}/metrics | grep spillway_rejections_total
  wrk -t1 -c32 -d5s http://{g}/fast/       # load (if wrk is installed)

Ctrl-C stops (graceful drain).
",
        fast = backends[0],
        slow = backends[1],
        flaky = backends[2],
        capacity = backends[3],
    );
    Ok((gateway, text))
}

/// One request of the tour: status, the headers worth showing, the body's `error` (or its
/// text), and the time it took.
struct TourAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    took: Duration,
}

impl TourAnswer {
    /// The refusal's reason (`"error"` of a JSON body), else the status.
    fn reason(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| self.status.to_string())
    }
}

async fn tour_request(
    addr: SocketAddr,
    method: http::Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<TourAnswer> {
    use http_body_util::BodyExt;
    let started = std::time::Instant::now();
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(path).header("host", "demo");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = sender.send_request(req.body(Full::new(Bytes::new())).ok()?).await.ok()?;
    let shown = [
        "retry-after",
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
        "x-spillway-degraded",
    ];
    let headers = resp
        .headers()
        .iter()
        .filter(|(n, _)| shown.contains(&n.as_str()))
        .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.ok()?.to_bytes();
    Some(TourAnswer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).trim().to_string(),
        took: started.elapsed(),
    })
}

async fn tour_get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Option<TourAnswer> {
    tour_request(addr, http::Method::GET, path, headers).await
}

/// Runs the tour against a demo gateway at `addr` (admin API at `admin`) and says what
/// happened: a rate limit answering 429, a burst of 1.5x capacity shed from the lowest class
/// up, a deadline failing fast, a breaker opening on a failing backend, and (with the admin
/// API) the `peak-day` plan switched on and off. Takes about a second.
pub async fn tour(addr: SocketAddr, admin: Option<SocketAddr>) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("Tour (what the protections just did):\n");
    // 1. A per-key token bucket: a burst of 4, then 429.
    let mut codes = Vec::new();
    let mut refused_headers = Vec::new();
    for _ in 0..6 {
        if let Some(a) = tour_get(addr, "/api", &[("x-api-key", "tour")]).await {
            if a.status == 429 && refused_headers.is_empty() {
                refused_headers = a.headers;
            }
            codes.push(a.status.to_string());
        }
    }
    let _ = writeln!(out, "  rate limit  6 requests with one API key -> {}", codes.join(" "));
    if !refused_headers.is_empty() {
        let h: Vec<String> = refused_headers.iter().map(|(n, v)| format!("{n}: {v}")).collect();
        let _ = writeln!(out, "              the 429 says: {}", h.join(", "));
    }
    // 2. A burst of 1.5x the capacity backend's 80 req/s for 1 s, 50/40/10 by class: the
    //    critical classes (60 req/s) fit, SHEDDABLE gets what is left.
    let classes = ["SHEDDABLE", "CRITICAL", "CRITICAL_PLUS"];
    let pattern = [0, 1, 0, 1, 0, 1, 0, 1, 0, 2];
    let mut tasks = Vec::new();
    for i in 0..120usize {
        let class = classes[pattern[i % pattern.len()]];
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros(8_333 * i as u64)).await;
            let r = tour_get(addr, "/checkout", &[("x-spillway-criticality", class)]).await;
            (class, r.map(|a| a.status))
        }));
    }
    let mut tally: [(u32, u32); 3] = [(0, 0); 3];
    for t in tasks {
        if let Ok((class, status)) = t.await {
            if let Some(i) = classes.iter().position(|c| *c == class) {
                tally[i].1 += 1;
                if status == Some(200) {
                    tally[i].0 += 1;
                }
            }
        }
    }
    let _ = writeln!(out, "  burst       120 req/s for 1 s at a backend that serves 80 req/s:");
    for (class, (ok, sent)) in classes.iter().zip(tally) {
        let _ = writeln!(out, "              {class:<14} {ok:>3} of {sent:>3} served");
    }
    // 3. A deadline too short to be worth an upstream call.
    if let Some(a) = tour_get(addr, "/slow", &[("x-request-timeout", "20ms")]).await {
        let _ = writeln!(
            out,
            "  deadline    20 ms left, route needs 50 ms -> {} in {:.1} ms, no upstream call",
            a.status,
            a.took.as_secs_f64() * 1000.0
        );
    }
    // 4. A backend that fails everything: after 5 failures the breaker answers for it.
    let before = DOWN_CALLS.load(Relaxed);
    let mut reasons = Vec::new();
    for _ in 0..8 {
        if let Some(a) = tour_get(addr, "/orders", &[]).await {
            reasons.push(a.reason());
        }
    }
    let reached = DOWN_CALLS.load(Relaxed) - before;
    let _ = writeln!(
        out,
        "  breaker     8 requests to a backend answering 503 -> {}",
        reasons.join(" ")
    );
    let _ =
        writeln!(out, "              the backend got {reached} of them; open for 5 s, then probes");
    // 5. The `peak-day` plan: recommendations from the fallback, SHEDDABLE refused.
    if let Some(admin) = admin {
        let show = |a: Option<TourAnswer>| match a {
            Some(a) => {
                let degraded = a.headers.iter().any(|(n, _)| n == "x-spillway-degraded");
                let how = if degraded { " (fallback)" } else { "" };
                format!("{} {}{how}", a.status, a.reason().replace("200", &a.body))
            }
            None => "no answer".to_string(),
        };
        let sheddable = [("x-spillway-criticality", "SHEDDABLE")];
        let before = show(tour_get(addr, "/recommendations", &[]).await);
        let on =
            tour_request(admin, http::Method::POST, "/admin/plans/peak-day/activate", &[]).await;
        let during = show(tour_get(addr, "/recommendations", &[]).await);
        let shed = show(tour_get(addr, "/fast/", &sheddable).await);
        let off =
            tour_request(admin, http::Method::POST, "/admin/plans/peak-day/deactivate", &[]).await;
        let after = show(tour_get(addr, "/recommendations", &[]).await);
        if on.is_some_and(|a| a.status == 200) && off.is_some_and(|a| a.status == 200) {
            let _ = writeln!(out, "  plan        /recommendations: {before}");
            let _ = writeln!(out, "              POST /admin/plans/peak-day/activate");
            let _ = writeln!(out, "              /recommendations: {during}");
            let _ = writeln!(out, "              a SHEDDABLE request: {shed}");
            let _ = writeln!(out, "              POST /admin/plans/peak-day/deactivate");
            let _ = writeln!(out, "              /recommendations: {after}");
        }
    }
    out
}
