//! `spillway demo`: three in-process backends (fast, slow, flaky) and a gateway in front of
//! them with an embedded config, so the gateway can be tried with nothing else installed.

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
"#;

#[derive(Clone, Copy)]
enum Kind {
    Fast,
    Slow,
    Flaky,
}

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
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    Ok(resp)
}

fn start_backends() -> std::io::Result<[SocketAddr; 3]> {
    let listeners = [
        std::net::TcpListener::bind("127.0.0.1:0")?,
        std::net::TcpListener::bind("127.0.0.1:0")?,
        std::net::TcpListener::bind("127.0.0.1:0")?,
    ];
    let addrs =
        [listeners[0].local_addr()?, listeners[1].local_addr()?, listeners[2].local_addr()?];
    for l in &listeners {
        l.set_nonblocking(true)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new().name("spillway-demo-backends".into()).spawn(move || {
        rt.block_on(async move {
            for (l, kind) in listeners.into_iter().zip([Kind::Fast, Kind::Slow, Kind::Flaky]) {
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
pub fn demo_config_text(backends: [SocketAddr; 3], port: u16, admin: u16) -> String {
    DEMO_CONFIG
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
    let gateway = Gateway::start(config, None, RunOptions { signals, watch_config: false })?;
    let g = gateway.listener_address("public").ok_or("no public listener")?;
    let a = gateway.admin_address().ok_or("no admin listener")?;
    let text = format!(
        "\
Spillway demo: gateway on http://{g}, admin on http://{a}
Backends (in this process): fast {fast}, slow {slow} (200 ms), flaky {flaky} (fails 3 in 4)

Try:
  curl -i http://{g}/hello                 # direct response from the gateway
  curl -i http://{g}/fast/anything         # proxied to the fast backend (prefix rewritten)
  for i in $(seq 20); do curl -s http://{g}/mixed; done | sort | uniq -c
                                             # P2C + EWMA: the slow backend gets less traffic
  for i in $(seq 20); do curl -s http://{g}/flaky; done | sort | uniq -c
                                             # the flaky backend is ejected after 3 failures in a row
  curl -s http://{a}/admin/clusters        # endpoints, health, ejections, in-flight
  curl -s http://{a}/metrics | grep spillway_requests_total
  wrk -t1 -c32 -d5s http://{g}/fast/       # load (if wrk is installed)

Ctrl-C stops (graceful drain).
",
        fast = backends[0],
        slow = backends[1],
        flaky = backends[2],
    );
    Ok((gateway, text))
}
