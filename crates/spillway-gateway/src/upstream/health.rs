//! Active health checks: each endpoint of a cluster with a `health_check` is probed with
//! `GET path` every interval; `unhealthy` failures in a row mark it down, `healthy` successes
//! in a row bring it back.
//!
//! Checks run on the control thread, not on the workers, so probes never compete with
//! requests for a worker's event loop.
//!
//! A cluster with `tls:` is probed over TLS with its own connector (CA, SNI, client
//! certificate), speaking what ALPN offers: HTTP/2 for `protocol: http2`, else HTTP/1.1.

use crate::config::{HealthCheckConfig, UpstreamProtocol};
use crate::upstream::cluster::ClusterState;
use crate::upstream::pool;
use crate::upstream::tls::UpstreamTls;
use bytes::Bytes;
use http::{header, Request};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// One probe: a fresh connection (through `tls` when given), `GET path`, success on 2xx
/// within `timeout`. Over TLS the `Host` is the server name, as the certificate is.
pub async fn probe(
    addr: SocketAddr,
    tls: Option<&UpstreamTls>,
    path: &str,
    timeout: Duration,
) -> bool {
    let attempt = async {
        let stream = pool::connect(addr, tls, timeout).await.ok()?;
        let host = tls.map_or_else(|| addr.to_string(), |t| t.sni().to_string());
        let http2 = tls.is_some_and(|t| t.protocol() == UpstreamProtocol::Http2);
        let mut req = Request::get(path)
            .header(header::USER_AGENT, "spillway-health")
            .body(Empty::<Bytes>::new())
            .ok()?;
        let resp = if http2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .ok()?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            *req.uri_mut() = http::Uri::builder()
                .scheme("https")
                .authority(host)
                .path_and_query(path)
                .build()
                .ok()?;
            sender.send_request(req).await.ok()?
        } else {
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            req.headers_mut().insert(header::HOST, http::HeaderValue::try_from(host).ok()?);
            sender.send_request(req).await.ok()?
        };
        Some(resp.status().is_success())
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

/// Probes every endpoint of `cluster` until `alive` returns false (the cluster was replaced by
/// a reload, or the gateway stops).
pub async fn run(cluster: Arc<ClusterState>, hc: HealthCheckConfig, alive: impl Fn() -> bool) {
    let n = cluster.endpoints.len();
    let mut successes = vec![0u32; n];
    let mut failures = vec![0u32; n];
    let mut tick = tokio::time::interval(hc.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !alive() {
            return;
        }
        let tls = cluster.tls.as_deref();
        let probes = cluster.endpoints.iter().map(|e| probe(e.address, tls, &hc.path, hc.timeout));
        let results = futures_join_all(probes).await;
        for (i, ok) in results.into_iter().enumerate() {
            let e = &cluster.endpoints[i];
            if ok {
                successes[i] += 1;
                failures[i] = 0;
                if !e.healthy.load(Relaxed) && successes[i] >= hc.healthy {
                    e.healthy.store(true, Relaxed);
                    tracing::info!(cluster = %cluster.config.name, endpoint = %e.address, "endpoint healthy again");
                }
            } else {
                failures[i] += 1;
                successes[i] = 0;
                if e.healthy.load(Relaxed) && failures[i] >= hc.unhealthy {
                    e.healthy.store(false, Relaxed);
                    tracing::warn!(cluster = %cluster.config.name, endpoint = %e.address, "endpoint unhealthy");
                }
            }
        }
    }
}

/// Awaits all futures concurrently (a tiny `join_all` to avoid a dependency).
async fn futures_join_all<F: std::future::Future<Output = bool>>(
    futs: impl Iterator<Item = F>,
) -> Vec<bool> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut results = vec![None; set.len()];
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if results[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => results[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    results.into_iter().map(|r| r.unwrap_or(false)).collect()
}
