//! Active health checks: each endpoint of a cluster with a `health_check` is probed every
//! interval; `unhealthy` failures in a row mark it down, `healthy` successes in a row bring it
//! back. A probe is `GET path` (healthy on a 2xx) or the gRPC health checking protocol
//! (`grpc.health.v1.Health/Check`, healthy on `grpc-status: 0` with SERVING).
//!
//! Checks run on the control thread, not on the workers, so probes never compete with
//! requests for a worker's event loop.
//!
//! A probe speaks the cluster's protocol: HTTP/2 for `protocol: http2` (prior knowledge on
//! plain TCP, by ALPN over TLS), else HTTP/1.1. A cluster with `tls:` is probed over TLS with
//! its own connector (CA, SNI, client certificate).

use crate::config::{HealthCheckConfig, HealthProbe, UpstreamProtocol};
use crate::proxy::grpc;
use crate::upstream::cluster::ClusterState;
use crate::upstream::pool;
use crate::upstream::tls::UpstreamTls;
use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// The gRPC health checking protocol's method.
const GRPC_HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";

/// One probe: a fresh connection (through `tls` when given) in `protocol`, then `what`, within
/// `timeout`. Over TLS the `Host` (`:authority`) is the server name, as the certificate is.
pub async fn probe(
    addr: SocketAddr,
    tls: Option<&UpstreamTls>,
    protocol: UpstreamProtocol,
    what: &HealthProbe,
    timeout: Duration,
) -> bool {
    let attempt = async {
        let stream = pool::connect(addr, tls, timeout).await.ok()?;
        let host = tls.map_or_else(|| addr.to_string(), |t| t.sni().to_string());
        let (path, mut req) = match what {
            HealthProbe::Http { path } => {
                (path.as_str(), Request::get(path).body(Full::new(Bytes::new())).ok()?)
            }
            HealthProbe::Grpc { service } => (
                GRPC_HEALTH_CHECK,
                Request::post(GRPC_HEALTH_CHECK)
                    .header(header::CONTENT_TYPE, "application/grpc")
                    .header(header::TE, "trailers")
                    .body(Full::new(grpc_health_request(service)))
                    .ok()?,
            ),
        };
        req.headers_mut()
            .insert(header::USER_AGENT, http::HeaderValue::from_static("spillway-health"));
        let resp = if protocol == UpstreamProtocol::Http2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                    .await
                    .ok()?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            *req.uri_mut() = http::Uri::builder()
                .scheme(if tls.is_some() { "https" } else { "http" })
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
        match what {
            HealthProbe::Http { .. } => Some(resp.status().is_success()),
            HealthProbe::Grpc { .. } => {
                if resp.status() != http::StatusCode::OK {
                    return Some(false);
                }
                // Trailers-only (a failure) or in the trailers after the message.
                let head_status = grpc::status_in(resp.headers());
                let collected = resp.into_body().collect().await.ok()?;
                let status = head_status.or_else(|| collected.trailers().and_then(grpc::status_in));
                Some(status == Some(0) && serving(&collected.to_bytes()))
            }
        }
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

/// `grpc.health.v1.HealthCheckResponse`: `status` 1 is SERVING.
#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// SERVING, in `HealthCheckResponse::status`.
const SERVING: i32 = 1;

/// A `HealthCheckRequest { service }` as one length-prefixed gRPC message.
fn grpc_health_request(service: &str) -> Bytes {
    let request = HealthCheckRequest { service: service.to_string() };
    grpc::framed(&prost::Message::encode_to_vec(&request))
}

/// Whether a length-prefixed `HealthCheckResponse` says SERVING; an absent status is UNKNOWN,
/// a malformed message is not serving.
fn serving(body: &[u8]) -> bool {
    let Some((prefix, rest)) = body.split_first_chunk::<{ grpc::PREFIX_LEN }>() else {
        return false;
    };
    let Some(message) = rest.get(..grpc::declared_len(prefix) as usize) else { return false };
    <HealthCheckResponse as prost::Message>::decode(message).is_ok_and(|r| r.status == SERVING)
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
        let protocol = cluster.config.protocol;
        let probes = cluster
            .endpoints
            .iter()
            .map(|e| probe(e.address, tls, protocol, &hc.probe, hc.timeout));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_health_request_is_one_framed_message_naming_the_service() {
        assert_eq!(&grpc_health_request("")[..], &[0, 0, 0, 0, 0]);
        assert_eq!(&grpc_health_request("ab")[..], &[0, 0, 0, 0, 4, 0x0a, 2, b'a', b'b']);
        let long = "s".repeat(200);
        let framed = grpc_health_request(&long);
        assert_eq!(&framed[5..8], &[0x0a, 0xc8, 0x01], "a two-byte varint length");
        assert_eq!(framed.len(), 5 + 3 + 200);
    }

    #[test]
    fn only_a_serving_answer_is_healthy() {
        assert!(serving(&[0, 0, 0, 0, 2, 0x08, 1]));
        assert!(!serving(&[0, 0, 0, 0, 2, 0x08, 2]), "NOT_SERVING");
        assert!(!serving(&[0, 0, 0, 0, 0]), "no status: UNKNOWN");
        assert!(!serving(&[0, 0, 0, 0, 2, 0x08]), "a truncated message");
        assert!(!serving(&[0, 0, 0]), "a truncated prefix");
        // Unknown fields around the status are skipped.
        assert!(!serving(&[0, 0, 0, 0, 7, 0x12, 2, b'h', b'i', 0x08, 1, 0x18]), "truncated");
        assert!(serving(&[0, 0, 0, 0, 6, 0x12, 2, b'h', b'i', 0x08, 1]));
    }
}
