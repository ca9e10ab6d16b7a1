//! The request path: route, choose an endpoint, rewrite the request in place, send it
//! upstream, and stream the response back.
//!
//! One worker thread runs this for every request it accepted; nothing here takes a lock. The
//! request's `Parts` are edited in place (hop-by-hop headers out, `X-Forwarded-*` and
//! `x-request-id` in), the body streams through, and per-connection values (the client
//! address as a header value) were rendered once at accept.
//!
//! The availability policies (rate limits, breakers, retries, bulkheads) will sit between
//! routing and the upstream call: see `crate::policy`.
//!
//! This module is the hyper request path; its submodules are what both data paths (this one
//! and the lean HTTP/1.1 path in `listen::h1`) share: the per-thread [`Worker`], per-connection
//! [`ConnInfo`], the body types, the access log, error bodies and hop-by-hop handling.

pub mod access_log;
pub mod body;
pub mod cache;
pub mod conn_info;
pub mod errors;
pub mod grpc;
pub mod headers;
pub mod stale;
pub mod worker;

pub use conn_info::ConnInfo;
pub use worker::Worker;

use crate::config::{Balance, UpstreamProtocol};
use crate::policy::retry::{TryFailure, TryResult};
use crate::proxy::access_log::{log_access, AccessEntry};
use crate::proxy::body::{
    ActiveGuard, BodyLimit, BodyTooLarge, ProxyBody, RequestBody, ResponseBody, UpstreamBody,
};
use crate::proxy::headers::{strip_hop_by_hop, ConnectionOptions};
use crate::proxy::stale::StaleKey;
use crate::route::{self, Action, Route};
use crate::state::Snapshot;
use crate::upstream::cluster::{ClusterState, EndpointState, Outcome};
use crate::upstream::h1_client;
use crate::upstream::h2_client::H2ClientError;
use crate::upstream::pool::{self, UpstreamError};
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use spillway_core::balance::hash_bytes;
use spillway_core::deadline::{format_grpc_timeout, format_request_timeout, IncomingTimeouts};
use spillway_core::retry::{Attempts, RetryDecision};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;
use std::time::Duration;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
static X_REQUEST_TIMEOUT: HeaderName = HeaderName::from_static("x-request-timeout");
static X_SPILLWAY_ATTEMPT: HeaderName = HeaderName::from_static("x-spillway-attempt");
static GRPC_RETRY_PUSHBACK: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

fn canned(status: StatusCode, error: &'static str) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(Bytes::from_static(error.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.extensions_mut().insert(grpc::LocalError::from_body(error, status));
    resp
}

fn wants_upgrade(req: &Request<RequestBody>) -> Option<HeaderValue> {
    if req.version() != Version::HTTP_11 {
        return None;
    }
    let upgrade = req.headers().get(header::UPGRADE)?;
    let mut options = ConnectionOptions::default();
    for value in req.headers().get_all(header::CONNECTION) {
        options.add(value.as_bytes());
    }
    options.upgrade.then(|| upgrade.clone())
}

/// Serves one request (never fails: errors become 4xx/5xx responses).
pub async fn handle(
    worker: Rc<Worker>,
    conn: Rc<ConnInfo>,
    req: Request<RequestBody>,
) -> Result<Response<ResponseBody>, Infallible> {
    let start = worker.shared.now();
    let active = ActiveGuard::new(conn.clone());
    let snap = worker.snapshot();
    let host = route::request_host(req.uri(), req.headers());
    let route = snap.router.route(req.method(), host, req.uri().path(), req.headers());
    // A gRPC caller gets the gateway's own answers as a `grpc-status` (`grpc::local_answer`).
    let grpc = crate::policy::render::is_grpc(
        req.headers().get(header::CONTENT_TYPE).map(HeaderValue::as_bytes),
    );
    // HTTP/2 requests are logged with their `:path`, as the lean exchange logs them (the `Uri`
    // built for them also holds the scheme and authority).
    let log = worker.shared.access_log.is_some().then(|| {
        let uri = req.uri();
        let origin_form = (req.version() == http::Version::HTTP_2)
            .then(|| uri.path_and_query())
            .flatten()
            .map(|p| p.as_str().to_string());
        (req.method().clone(), origin_form.unwrap_or_else(|| uri.to_string()))
    });
    // Phase edge: the listener's IP lists, then the route's (IP lists, request limits, CORS).
    let listener_ip = snap.config.listeners.get(conn.listener).and_then(|l| l.ip.as_ref());
    let edge = route.and_then(|r| snap.config.routes.get(r.index)).map(|c| &c.edge);
    let view = HyperView { req: &req, peer: conn.peer };
    let trusted = &snap.config.trusted_proxies;
    let (decoration, refused_at_edge) =
        match crate::edge::screen(listener_ip, edge, trusted, &view, || head_size(&req)) {
            Ok(decoration) => (decoration, None),
            Err(answer) => (Vec::new(), Some(answer)),
        };
    // Authentication last (a refused client or a preflight never costs a verification).
    let mut req = req;
    let auth = edge.and_then(|e| e.auth.as_ref());
    let refused_at_edge = match (refused_at_edge, auth) {
        (None, Some(auth)) => {
            let now = crate::edge::auth::now_unix_secs();
            match crate::edge::auth::authenticate(auth, req.headers(), now).await {
                Ok(claims) => {
                    crate::edge::auth::forward(auth, req.headers_mut(), claims);
                    None
                }
                Err(answer) => Some(answer),
            }
        }
        (refused, _) => refused,
    };
    let (resp, route_name, cluster_name, upstream) = match (refused_at_edge, route) {
        (Some(answer), route) => {
            let status = answer.status;
            let resp = edge_response(answer);
            let elapsed = worker.shared.now().saturating_duration_since(start);
            match route {
                Some(route) => route.stats.record(worker.id, status, elapsed),
                None => snap.no_route.record(worker.id, status, elapsed),
            }
            (resp, route.map_or("", |r| r.name.as_str()), "", None)
        }
        (None, None) => {
            let resp = canned(StatusCode::NOT_FOUND, errors::NO_ROUTE);
            snap.no_route.record(
                worker.id,
                404,
                worker.shared.now().saturating_duration_since(start),
            );
            (resp, "", "", None)
        }
        (None, Some(route)) => {
            let (resp, upstream) = match &route.action {
                Action::Direct { status, body, headers } => {
                    let mut resp = Response::new(ResponseBody::full(body.clone()));
                    *resp.status_mut() = *status;
                    for (n, v) in headers {
                        resp.headers_mut().insert(n.clone(), v.clone());
                    }
                    (resp, None)
                }
                Action::Proxy { cluster, .. } => {
                    proxy(&worker, &conn, &snap, route, *cluster, req, start).await
                }
            };
            route.stats.record(
                worker.id,
                answer_status(&resp, grpc),
                worker.shared.now().saturating_duration_since(start),
            );
            let cluster_name = match &route.action {
                Action::Proxy { cluster, .. } => snap.clusters[*cluster].config.name.as_str(),
                Action::Direct { .. } => "",
            };
            (resp, route.name.as_str(), cluster_name, upstream)
        }
    };
    let mut resp = resp;
    for (name, value) in decoration {
        resp.headers_mut().append(name, value);
    }
    // A gRPC call's status: known from the head, or counted when its trailers come.
    let grpc_head_status = if grpc { grpc::head_status(&resp) } else { None };
    if grpc {
        let stats = route.map_or(&snap.no_route, |r| &r.stats);
        match grpc_head_status {
            Some(code) => stats.record_grpc(worker.id, code),
            None => {
                let pending = grpc::PendingStatus::new(stats.grpc_counter(worker.id));
                resp = resp.map(|b| b.counting_grpc_status(pending));
            }
        }
    }
    if let (Some(sink), Some((method, uri))) = (&worker.shared.access_log, log) {
        log_access(
            sink,
            &AccessEntry {
                client: conn.client_ip.to_str().unwrap_or(""),
                method: method.as_str(),
                uri: &uri,
                // As the route's counters have it (a gRPC call's as the status it counts as).
                status: answer_status(&resp, grpc),
                route: route_name,
                cluster: cluster_name,
                upstream,
                duration: worker.shared.now().saturating_duration_since(start),
                request_id: resp.headers().get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()),
                refused: resp.extensions().get::<spillway_core::RejectReason>().map(|r| r.as_str()),
                grpc_status: grpc_head_status,
            },
        );
    }
    // After the log and the route's counters, which keep the gateway's HTTP status.
    let resp = if grpc { grpc::local_answer(resp) } else { resp };
    Ok(resp.map(|b| b.tracked(active)))
}

/// The sizes of a request's head for the edge's request limits (as HTTP/1.1 would spell it).
fn head_size(req: &Request<RequestBody>) -> crate::edge::HeadSize<'_> {
    let target_len = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let fields: usize =
        req.headers().iter().map(|(n, v)| n.as_str().len() + v.as_bytes().len() + 4).sum();
    crate::edge::HeadSize {
        method: req.method().as_str(),
        target_len,
        fields: req.headers().len(),
        head_bytes: req.method().as_str().len() + target_len + 11 + fields,
    }
}

/// The gateway's own answer at the edge (a refusal, or a CORS preflight's 204).
fn edge_response(answer: crate::edge::EdgeAnswer) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(Bytes::from_static(answer.body.as_bytes())));
    *resp.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::FORBIDDEN);
    if !answer.body.is_empty() {
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let local = grpc::LocalError::from_body(answer.body, resp.status());
        resp.extensions_mut().insert(local);
    }
    for (name, value) in answer.headers {
        resp.headers_mut().append(name, value);
    }
    resp
}

/// Decrements an endpoint's in-flight count when the upstream exchange ends.
pub(crate) struct InFlight<'a>(pub(crate) &'a EndpointState);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

async fn proxy(
    worker: &Rc<Worker>,
    conn: &ConnInfo,
    snap: &Snapshot,
    route: &Route,
    cluster_index: usize,
    mut req: Request<RequestBody>,
    start: spillway_core::Instant,
) -> (Response<ResponseBody>, Option<std::net::SocketAddr>) {
    let cluster: &ClusterState = &snap.clusters[cluster_index];
    let Action::Proxy { rewrite_prefix, rewrite_host, timeout, deadline: deadline_policy, .. } =
        &route.action
    else {
        return (canned(StatusCode::INTERNAL_SERVER_ERROR, errors::INTERNAL), None);
    };
    // Traffic recording: one `Option` check unless the route has `record:` (see `record`).
    let capture = route.recorder.as_ref().and_then(|r| r.begin(&req));
    // The micro-cache: GET and HEAD without `Range` (nor credentials, unless allowed).
    let route_cache = snap.policies.cache(route.index);
    let cache_key = route_cache.and_then(|c| {
        if !crate::proxy::cache::request_cacheable(req.headers(), &c.settings) {
            return None;
        }
        let host = route::request_host(req.uri(), req.headers());
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        StaleKey::for_request(req.method(), host, target)
    });
    // Stale copies (`stale_on_error`): GET and HEAD without `Range`, keyed by host and target.
    let stale_key = snap.policies.stale(route.index).and_then(|_| {
        if req.headers().contains_key(header::RANGE) {
            return None;
        }
        let host = route::request_host(req.uri(), req.headers());
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        StaleKey::for_request(req.method(), host, target)
    });
    // The listener's body limit, or the route's when lower; the route's body deadline.
    let route_edge = snap.config.routes.get(route.index).map(|r| &r.edge);
    let max_body = route_edge.map_or(conn.max_body, |e| crate::edge::max_body(conn.max_body, e));
    let body_timeout =
        route_edge.and_then(|e| e.request_limits.as_ref()).and_then(|l| l.body_timeout);
    // How long a body read in full may take: what is left of the request, at most the route's
    // `body_timeout`.
    let body_wait = |left: Duration| body_timeout.map_or(left, |t| t.min(left));
    // A gRPC call's limit is per message (`grpc::MessageLimit`), checked as the body streams
    // (unless its messages are base64 text, gRPC-Web's `-text`: then the whole body's).
    let content_type = req.headers().get(header::CONTENT_TYPE).map(HeaderValue::as_bytes);
    let grpc = crate::policy::render::is_grpc(content_type);
    let per_message = grpc && grpc::messages_framed(content_type);
    // hyper has parsed `Content-Length` already: its exact size hint saves a header lookup.
    if let Some(len) = http_body::Body::size_hint(req.body()).exact() {
        if len > max_body && !per_message {
            return (canned(StatusCode::PAYLOAD_TOO_LARGE, errors::BODY_TOO_LARGE), None);
        }
    }
    // Deadline propagation: honour an incoming `grpc-timeout` / `x-request-timeout` up to the
    // route's timeout, and fail fast (504) when too little budget is left to start.
    // Which deadline headers came in (they are rewritten with the remaining budget below).
    let mut deadline_headers = (false, false);
    let budget = match deadline_policy {
        Some(policy) => {
            let incoming = IncomingTimeouts {
                grpc_timeout: req.headers().get(&GRPC_TIMEOUT).map(HeaderValue::as_bytes),
                request_timeout: req.headers().get(&X_REQUEST_TIMEOUT).map(HeaderValue::as_bytes),
                in_process: None,
            };
            deadline_headers =
                (incoming.grpc_timeout.is_some(), incoming.request_timeout.is_some());
            match policy.decide(incoming, start) {
                Ok(granted) => Some(granted.deadline),
                Err(rejection) => {
                    // Counted like every refusal; the class is read for the counter only.
                    let gate =
                        snap.policies.gate(&snap.config, conn.listener, route.index, cluster_index);
                    let view = HyperView { req: &req, peer: conn.peer };
                    let class = crate::policy::classify(gate.and_then(|g| g.route), &view).class;
                    let refusal = crate::policy::Refusal::from(rejection);
                    snap.policies.count_refusal(route.index, class, &refusal);
                    return (refusal_response(&refusal), None);
                }
            }
        }
        None => None,
    };
    // Admission (limits, pools, BBR, concurrency): one check when nothing applies.
    let gate = snap.policies.gate(&snap.config, conn.listener, route.index, cluster_index);
    let mut admitted = None;
    if let Some(gate) = gate {
        let view = HyperView { req: &req, peer: conn.peer };
        let classified = crate::policy::classify(gate.route, &view);
        let left = budget.map(|d| d.remaining(start));
        match crate::policy::admit(
            gate,
            &view,
            classified,
            start,
            left,
            &worker.shared.clock,
            worker.id,
        )
        .await
        {
            Ok(admission) => admitted = Some((admission, classified, gate)),
            Err(refusal) => {
                snap.policies.count_refusal(route.index, classified.class, &refusal);
                let reason = Some(refusal.rejection.reason);
                if crate::policy::cluster_cause(reason) {
                    if let Some(resp) = stale_answer(snap, route.index, stale_key.as_ref(), start) {
                        return (resp, None);
                    }
                }
                if let Some(fallback) = snap.policies.fallback(route.index, reason) {
                    return (rendered_response(fallback), None);
                }
                return (refusal_response(&refusal), None);
            }
        }
    }
    // The cluster shed the request and its gutter took it: call the gutter.
    let (cluster_index, cluster) = match admitted.as_ref().and_then(|(a, _, _)| a.gutter()) {
        Some(g) => match snap.clusters.get(g) {
            Some(gutter) => (g, &**gutter),
            None => (cluster_index, cluster),
        },
        None => (cluster_index, cluster),
    };
    let hash = match cluster.config.balance {
        Balance::ConsistentHash => {
            match cluster.config.hash_header.as_deref().and_then(|h| req.headers().get(h)) {
                Some(v) => Some(hash_bytes(v.as_bytes())),
                None => Some(conn.client_hash),
            }
        }
        _ => None,
    };
    let upgrade = wants_upgrade(&req);
    // Retries: every request counts in the route's budget; only an idempotent one (or any
    // with `non_idempotent`) whose body is small enough to keep is tried again. Upgrades and
    // recorded requests are sent once.
    // A body of unknown length (HTTP/2, gRPC, chunked) may still be small: it is read up to the
    // policies' limit below, and they apply only if it ended within it.
    let declared = http_body::Body::size_hint(req.body()).exact();
    let body_len = declared.or(Some(0));
    let mut retry = snap.policies.retry(route.index).filter(|r| {
        r.begin(worker.id, start);
        upgrade.is_none() && capture.is_none() && r.eligible(req.method().as_str(), body_len)
    });
    // Failback: a failed request is queued, so its body must be kept (up to the queue's limit).
    let mut failback = snap.failback_queue(route.index).filter(|q| {
        upgrade.is_none() && capture.is_none() && body_len.is_some_and(|n| n <= q.max_body())
    });
    // Failsafe: a share of requests is copied to the shadow cluster (the body must be kept).
    let mut mirror = snap.policies.mirror(route.index).filter(|m| {
        upgrade.is_none() && capture.is_none() && m.wants(worker.random_unit(), body_len)
    });
    // Broadcast: every available endpoint gets the request (its body is kept for the copies).
    let broadcast = snap
        .config
        .routes
        .get(route.index)
        .is_some_and(|r| r.policy.strategy == crate::config::Strategy::Broadcast);
    if broadcast && (upgrade.is_some() || body_len.is_none_or(|n| n > BROADCAST_MAX_BODY)) {
        return (canned(StatusCode::PAYLOAD_TOO_LARGE, errors::BROADCAST_BODY), None);
    }
    // Tries send copies of the request when more than one send may be needed.
    let keep_request = retry.is_some() || failback.is_some() || mirror.is_some() || broadcast;
    let t = &cluster.config.timeouts;
    // What is left of the request's time at `now`: its deadline budget or route timeout.
    let remaining = |now: spillway_core::Instant| match budget {
        Some(d) => d.remaining(now),
        None => timeout.saturating_sub(now.saturating_duration_since(start)),
    };
    let min_try = deadline_policy.as_ref().map_or(Duration::ZERO, |p| p.min_budget());
    let downstream_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    let original_host = parts.headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(proto) = &upgrade {
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, proto.clone());
    }
    // One hash per header below: the entry API instead of a lookup followed by an insert.
    match parts.headers.entry(&X_FORWARDED_FOR) {
        header::Entry::Occupied(mut prev) => {
            let prev_value = prev.get();
            let mut v = Vec::with_capacity(prev_value.len() + 2 + conn.client_ip.len());
            v.extend_from_slice(prev_value.as_bytes());
            v.extend_from_slice(b", ");
            v.extend_from_slice(conn.client_ip.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&v) {
                prev.insert(v);
            }
        }
        header::Entry::Vacant(slot) => {
            slot.insert(conn.client_ip.clone());
        }
    }
    parts.headers.insert(&X_FORWARDED_PROTO, conn.proto.clone());
    if let Some(cert) = conn.client_cert.get() {
        for name in &cert.names {
            parts.headers.remove(name);
        }
        for (name, value) in &cert.values {
            parts.headers.insert(name.clone(), value.clone());
        }
    }
    let authority_host = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    let downstream_host = original_host.or(authority_host);
    if let Some(h) = &downstream_host {
        if let header::Entry::Vacant(slot) = parts.headers.entry(&X_FORWARDED_HOST) {
            slot.insert(h.clone());
        }
    }
    let request_id = match parts.headers.entry(&X_REQUEST_ID) {
        header::Entry::Occupied(id) => id.get().clone(),
        header::Entry::Vacant(slot) => slot.insert(worker.next_request_id()).clone(),
    };
    if let Some((_, classified, gate)) = &admitted {
        let mut budget_text = [0u8; 20];
        let (fields, n) = classified.upstream_fields(gate, &mut budget_text);
        for (name, value) in &fields[..n] {
            if let (Ok(name), Ok(value)) =
                (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
            {
                parts.headers.insert(name, value);
            }
        }
    }
    let host = rewrite_host.clone().or(downstream_host);
    // Path: forward the origin-form target unchanged unless a prefix rewrite applies.
    let path_and_query = match (rewrite_prefix, parts.uri.path_and_query()) {
        (Some((from, to)), Some(pq)) => {
            let mut p = route::rewrite_path(pq.path(), from, to);
            if let Some(q) = pq.query() {
                p.push('?');
                p.push_str(q);
            }
            http::uri::PathAndQuery::try_from(p).ok()
        }
        (_, pq) => pq.cloned(),
    };
    match cluster.config.protocol {
        UpstreamProtocol::Http1 => {
            if parts.uri.scheme().is_some() || rewrite_prefix.is_some() {
                let mut up = http::uri::Parts::default();
                up.path_and_query = path_and_query;
                if let Ok(uri) = Uri::from_parts(up) {
                    parts.uri = uri;
                }
            }
            parts.version = Version::HTTP_11;
            if let Some(h) = host {
                parts.headers.insert(header::HOST, h);
            }
        }
        UpstreamProtocol::Http2 => {
            // Without a host the authority is the endpoint's address, set per try below.
            let mut up = http::uri::Parts::default();
            up.scheme = Some(upstream_scheme(cluster));
            up.authority =
                host.as_ref().and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok());
            up.path_and_query =
                path_and_query.or_else(|| Some(http::uri::PathAndQuery::from_static("/")));
            if let Ok(uri) = Uri::from_parts(up) {
                parts.uri = uri;
            }
            parts.version = Version::HTTP_2;
            parts.headers.remove(header::HOST);
        }
    }
    let body_limit = BodyLimit::for_request(max_body, per_message);
    // Set when a message is refused; every gRPC call has one (its response body reads it).
    let message_refusal = grpc.then(|| body_limit.message_refusal().unwrap_or_default());
    let body = if body_is_empty(&body) {
        ProxyBody::Empty
    } else if keep_request && declared.is_none() {
        // Unknown length: read up to the largest limit of the policies that keep it. A body
        // that ends within it is kept; a longer one streams on after what was read, and the
        // policies that needed a copy step aside for this request.
        let limit = [
            retry.map(|r| r.settings.max_body),
            failback.map(|q| q.max_body()),
            mirror.map(|m| m.settings.max_body),
            broadcast.then_some(BROADCAST_MAX_BODY),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0);
        match read_prefix(body, limit, body_wait(remaining(start))).await {
            Ok(Prefix::Whole(data)) => {
                let len = data.len() as u64;
                retry = retry.filter(|r| len <= r.settings.max_body);
                failback = failback.filter(|q| len <= q.max_body());
                mirror = mirror.filter(|m| len <= m.settings.max_body);
                ProxyBody::Buffered(Some(data))
            }
            Ok(Prefix::Partial(frames, inner)) => {
                if broadcast {
                    return (canned(StatusCode::PAYLOAD_TOO_LARGE, errors::BROADCAST_BODY), None);
                }
                (retry, failback, mirror) = (None, None, None);
                ProxyBody::Prefixed { frames, inner, limit: body_limit }
            }
            Err(status) => {
                drop(admitted);
                let error = if status == StatusCode::REQUEST_TIMEOUT {
                    errors::REQUEST_BODY_TIMEOUT
                } else {
                    errors::BAD_REQUEST_BODY
                };
                return (canned(status, error), None);
            }
        }
    } else if keep_request {
        // Kept for replay: read in full (its size is known and small), within the request's
        // time. A client that cannot send it in time gets 408.
        use http_body_util::BodyExt;
        let limited = http_body_util::Limited::new(body, max_body as usize);
        match tokio::time::timeout(body_wait(remaining(start)), limited.collect()).await {
            Ok(Ok(collected)) => ProxyBody::Buffered(Some(collected.to_bytes())),
            Ok(Err(_)) => {
                drop(admitted);
                return (canned(StatusCode::BAD_REQUEST, errors::BAD_REQUEST_BODY), None);
            }
            Err(_) => {
                drop(admitted);
                return (canned(StatusCode::REQUEST_TIMEOUT, errors::REQUEST_BODY_TIMEOUT), None);
            }
        }
    } else {
        ProxyBody::Incoming { inner: body, limit: body_limit }
    };
    // A streamed body must arrive whole within the route's `body_timeout` (408 otherwise).
    let body = body.within(body_timeout);
    let body = match capture {
        Some(capture) => body.teed(capture),
        None => body,
    };
    // The body of the tries after the first (a copy of a kept body).
    let replay = match &body {
        ProxyBody::Buffered(Some(data)) => Some(data.clone()),
        _ => None,
    };
    let mut body = Some(body);
    if let Some(m) = mirror {
        send_mirror(worker, m, &parts, replay.clone().unwrap_or_default());
    }
    if broadcast {
        let body = replay.clone().unwrap_or_default();
        let (resp, outcome) = broadcast_all(worker, cluster, &parts, body, remaining(start)).await;
        if let Some((admission, _, _)) = admitted {
            admission.finish(outcome, worker.shared.now());
        }
        return (resp, None);
    }

    // The micro-cache answers a fresh copy, or the answer of the request already fetching this
    // key; otherwise this request leads the fetch and the waiters get its answer.
    let mut flight = None;
    // With `hot_only`, only the requests whose hot key is in the top K now use it.
    let cache = route_cache.filter(|c| {
        !c.settings.hot_only || admitted.as_ref().and_then(|(a, _, _)| a.hot()) == Some(true)
    });
    if let (Some(cache), Some(key)) = (cache, &cache_key) {
        match cache.lookup(key, start) {
            crate::proxy::cache::Lookup::Hit(hit) => {
                if let Some((admission, _, _)) = admitted {
                    admission.finish(Some(hit.status), worker.shared.now());
                }
                let age = hit.age_header_value();
                return (
                    cached_response(hit.status, &hit.headers, hit.body, "hit", Some(age)),
                    None,
                );
            }
            crate::proxy::cache::Lookup::Wait(rx) => {
                if let Ok(Ok(Some(answer))) = tokio::time::timeout(remaining(start), rx).await {
                    cache.coalesced.fetch_add(1, Relaxed);
                    if let Some((admission, _, _)) = admitted {
                        admission.finish(Some(answer.status), worker.shared.now());
                    }
                    let body = answer.body.clone();
                    return (
                        cached_response(answer.status, &answer.headers, body, "coalesced", None),
                        None,
                    );
                }
                // The leader's answer could not be shared: fetch it ourselves.
                cache.misses.fetch_add(1, Relaxed);
            }
            crate::proxy::cache::Lookup::Lead(f) => flight = Some(f),
        }
    }

    let pool = &worker.pool;
    let hedging = retry.is_some_and(|r| r.hedge.is_some());
    let mut hedges_left = retry.and_then(|r| r.hedge.as_ref()).map_or(0, |h| h.settings.max_extra);
    let mut attempts = Attempts::first();
    let mut avoid = None;
    let mut started = 0u32;
    let mut tries: Vec<Pin<Box<dyn Future<Output = TryDone> + '_>>> = Vec::new();
    let mut launch = Some(false);
    let mut hedge_at: Option<tokio::time::Instant> = None;
    let mut last_failure: Option<TryDone> = None;
    let mut last_picked = None;
    let mut hedges_running = 0u64;
    let mut only_done = None;
    // The try loop. Without retries: one try. Failover: after a failed try, core's retry
    // decision, then another try on another endpoint. Forking: also, when no answer came within
    // the hedge delay, another try in parallel; the first good answer wins and the rest are
    // dropped (cancelled). Every try rewrites the deadline headers with what is left and says
    // which attempt it is in `x-spillway-attempt`.
    let done: TryDone = loop {
        if let Some(is_hedge) = launch.take() {
            let try_start = if started == 0 { start } else { worker.shared.now() };
            let Some(picked) = worker.pick(snap, cluster_index, try_start, hash, avoid) else {
                if !tries.is_empty() {
                    continue;
                }
                if let Some(failed) = last_failure.take() {
                    break failed;
                }
                if let Some((admission, _, _)) = admitted {
                    admission.finish(None, try_start);
                }
                if let Some(resp) = stale_answer(snap, route.index, stale_key.as_ref(), try_start) {
                    return (resp, None);
                }
                if let Some(fallback) = snap.policies.fallback(route.index, None) {
                    return (rendered_response(fallback), None);
                }
                return (
                    canned(StatusCode::SERVICE_UNAVAILABLE, errors::NO_HEALTHY_ENDPOINT),
                    None,
                );
            };
            started += 1;
            hedges_running += u64::from(is_hedge);
            last_picked = Some(picked);
            let endpoint: &EndpointState = &cluster.endpoints[picked];
            let addr = endpoint.address;
            let left = remaining(try_start);
            let try_timeout = match retry {
                Some(r) => r.try_timeout(t.per_try, left),
                None => left.min(t.per_try),
            };
            if let Some(d) = budget {
                // Pass the remaining budget on in the headers the caller used; without them the
                // budget was granted at `start` a few microseconds ago: no second clock read.
                if deadline_headers != (false, false) {
                    let now = if started == 1 { worker.shared.now() } else { try_start };
                    let left = d.remaining(now);
                    if deadline_headers.0 && parts.headers.contains_key(&GRPC_TIMEOUT) {
                        if let Ok(v) = HeaderValue::from_str(format_grpc_timeout(left).as_str()) {
                            parts.headers.insert(&GRPC_TIMEOUT, v);
                        }
                    }
                    if deadline_headers.1 && parts.headers.contains_key(&X_REQUEST_TIMEOUT) {
                        let value = format_request_timeout(left);
                        if let Ok(v) = HeaderValue::from_str(value.as_str()) {
                            parts.headers.insert(&X_REQUEST_TIMEOUT, v);
                        }
                    }
                }
            }
            if retry.is_some() {
                parts.headers.insert(&X_SPILLWAY_ATTEMPT, HeaderValue::from(started));
            }
            if cluster.config.protocol == UpstreamProtocol::Http2 {
                fill_authority(&mut parts.uri, endpoint, upstream_scheme(cluster));
            }
            // The first try takes the body itself; a later one a copy of the kept body.
            let try_body = match body.take() {
                Some(b) => b,
                None => match &replay {
                    Some(data) => ProxyBody::Buffered(Some(data.clone())),
                    None => ProxyBody::Empty,
                },
            };
            // Without retries the request is moved; with them each try sends a copy.
            let up_req = if keep_request {
                copy_request(&parts, try_body)
            } else {
                let only = std::mem::replace(&mut parts, Request::new(()).into_parts().0);
                Request::from_parts(only, try_body)
            };
            endpoint.in_flight.fetch_add(1, Relaxed);
            let in_flight = InFlight(endpoint);
            let protocol = cluster.config.protocol;
            let tls = cluster.tls.as_deref();
            let tls_arc = cluster.tls.as_ref();
            let lean_h2 = cluster.config.http2_client == crate::config::Http2Client::Lean;
            let upgrading = upgrade.is_some();
            let one_try = async move {
                let _in_flight = in_flight;
                let exchange = async {
                    match (protocol, upgrading) {
                        // Plain HTTP/1.1 with the body in hand: straight on a pooled socket.
                        (UpstreamProtocol::Http1, false)
                            if tls.is_none() && h1_client::carries(&up_req) =>
                        {
                            let sockets = &worker.sockets;
                            let resp =
                                h1_client::send(sockets, addr, t.connect, t.idle, up_req).await?;
                            Ok((resp.map(UpstreamBody::Pooled), None))
                        }
                        (UpstreamProtocol::Http1, false) => {
                            let mut c = pool.checkout_h1(addr, tls, t.connect, t.idle).await?;
                            let resp =
                                c.send(up_req).await.map_err(|e| UpstreamError::Http(addr, e))?;
                            Ok((resp.map(UpstreamBody::Hyper), Some(c)))
                        }
                        (UpstreamProtocol::Http1, true) => {
                            let mut sender =
                                pool::connect_h1_upgradable(addr, tls, t.connect).await?;
                            let resp = sender
                                .send_request(up_req)
                                .await
                                .map_err(|e| UpstreamError::Http(addr, e))?;
                            Ok((resp.map(UpstreamBody::Hyper), None))
                        }
                        (UpstreamProtocol::Http2, _) if lean_h2 => {
                            // A request whose body is in hand is sent once more, on a new
                            // connection, when a connection going away refused it unprocessed.
                            let again = replay_copy(&up_req);
                            let conn = pool.checkout_h2_lean(addr, tls_arc, t.connect, None);
                            let resp = match conn.send(up_req).await {
                                Err(H2ClientError::Refused | H2ClientError::NoCapacity) => {
                                    let Some(again) = again else {
                                        return Err(H2ClientError::Refused.into_upstream(addr));
                                    };
                                    let conn = pool.checkout_h2_lean(
                                        addr,
                                        tls_arc,
                                        t.connect,
                                        Some(&conn),
                                    );
                                    conn.send(again).await
                                }
                                sent => sent,
                            };
                            let resp = resp.map_err(|e| e.into_upstream(addr))?;
                            Ok((resp, None))
                        }
                        (UpstreamProtocol::Http2, _) => {
                            // A request whose body is in hand is sent once more, on a new
                            // connection, when a connection going away refused it unprocessed.
                            let again = replay_copy(&up_req);
                            let mut sender = pool.checkout_h2(addr, tls, t.connect).await?;
                            let resp = match sender.send_request(up_req).await {
                                Err(e) if pool::refused_unprocessed(&e) => {
                                    pool.evict_h2(addr, tls);
                                    let Some(again) = again else {
                                        return Err(UpstreamError::Http(addr, e));
                                    };
                                    let mut sender = pool.checkout_h2(addr, tls, t.connect).await?;
                                    sender.send_request(again).await
                                }
                                sent => sent,
                            };
                            let resp = resp.map_err(|e| UpstreamError::Http(addr, e))?;
                            Ok((resp.map(UpstreamBody::Hyper), None))
                        }
                    }
                };
                let result = match tokio::time::timeout(try_timeout, exchange).await {
                    Ok(r) => r,
                    Err(_) => Err(UpstreamError::Timeout(addr)),
                };
                TryDone { picked, try_start, try_timeout, hedge: is_hedge, result }
            };
            // Without retries the one try is awaited right here: no allocation, and the future
            // is built where it runs (kept in a variable first, it was moved twice more:
            // ~2-3 % of the h2c path's CPU in memcpy).
            if retry.is_none() {
                only_done = Some(one_try.await);
            } else {
                tries.push(Box::pin(one_try));
            }
            // A forking route hedges when this try is slower than the hedge delay.
            hedge_at = match retry {
                Some(r) if hedging && hedges_left > 0 => {
                    r.hedge_delay(worker.id, try_start).map(|d| tokio::time::Instant::now() + d)
                }
                _ => None,
            };
        }
        let raced = match only_done.take() {
            Some(done) => Raced::Done(done),
            None => first_of(&mut tries, hedge_at).await,
        };
        let done = match raced {
            Raced::Hedge => {
                hedge_at = None;
                if let Some(r) = retry {
                    if hedges_left > 0 && r.try_hedge(worker.id, worker.shared.now()) {
                        hedges_left -= 1;
                        launch = Some(true);
                        // Another endpoint than the ones still working on it.
                        avoid = last_picked;
                    }
                }
                continue;
            }
            Raced::Done(done) => done,
        };
        hedges_running -= u64::from(done.hedge);
        let now = worker.shared.now();
        let latency = now.saturating_duration_since(done.try_start);
        let endpoint: &EndpointState = &cluster.endpoints[done.picked];
        // Each try's outcome teaches outlier detection and the balancer (a body over the
        // client's limit is the client's fault: no outlier accounting).
        let try_result = match &done.result {
            Err(e) if upstream_body_fault(e, message_refusal.as_deref()).is_some() => {
                worker.picked_done(snap.generation, cluster_index, done.picked, latency, true, now);
                None
            }
            Err(e) => {
                let overloaded = matches!(e, UpstreamError::Timeout(_))
                    && snap.policies.cluster_saturated(cluster_index);
                let outcome = if overloaded { Outcome::Overloaded } else { Outcome::Failure };
                cluster.record(endpoint, outcome, latency, now);
                worker.picked_done(
                    snap.generation,
                    cluster_index,
                    done.picked,
                    latency,
                    false,
                    now,
                );
                Some(TryResult::Failed(match e {
                    UpstreamError::Connect(..) | UpstreamError::ConnectTimeout(_) => {
                        TryFailure::Connect
                    }
                    UpstreamError::Timeout(_) => TryFailure::Timeout,
                    UpstreamError::Http(..)
                    | UpstreamError::Exchange(..)
                    | UpstreamError::H2(..) => TryFailure::Reset,
                }))
            }
            Ok((resp, _)) => {
                let status = answer_status(resp, grpc);
                let outcome = if status >= 500 { Outcome::ServerError } else { Outcome::Success };
                cluster.record(endpoint, outcome, latency, now);
                let ok = outcome == Outcome::Success;
                worker.picked_done(snap.generation, cluster_index, done.picked, latency, ok, now);
                // The hints are looked up only where a retry may follow.
                retry.map(|r| {
                    r.observe(worker.id, latency, now);
                    TryResult::Answered {
                        status,
                        retry_after: resp
                            .headers()
                            .get(header::RETRY_AFTER)
                            .map(HeaderValue::as_bytes),
                        grpc_pushback: resp
                            .headers()
                            .get(&GRPC_RETRY_PUSHBACK)
                            .map(HeaderValue::as_bytes),
                    }
                })
            }
        };
        let (Some(r), Some(try_result)) = (retry, try_result) else {
            break done;
        };
        if !r.wants_retry(&try_result) {
            // A good answer: it wins; tries still running are cancelled below.
            if let Some(h) = &r.hedge {
                if done.hedge {
                    h.won.fetch_add(1, Relaxed);
                }
                h.lost.fetch_add(hedges_running, Relaxed);
            }
            break done;
        }
        if !tries.is_empty() {
            // Others are still working on it: wait for them, keep this answer in case.
            avoid = Some(done.picked);
            last_failure = Some(done);
            continue;
        }
        let random = worker.random_unit();
        let decision =
            r.next(&mut attempts, try_result, remaining(now), min_try, random, worker.id, now);
        if let RetryDecision::Retry { after } = decision {
            // The failed answer is dropped with its connection's slot (its body unread).
            avoid = Some(done.picked);
            drop(done);
            last_failure = None;
            tokio::time::sleep(after).await;
            launch = Some(false);
            continue;
        }
        break done;
    };
    // Tries still running lost the race: dropping them cancels them.
    drop(tries);
    let TryDone { picked, try_start, try_timeout, result, .. } = done;
    let endpoint: &EndpointState = &cluster.endpoints[picked];
    let addr = endpoint.address;
    // The body streams after the head: within what is left of the try's time without
    // retries (as before), of the request's time with them.
    let body_time = match retry {
        Some(_) => remaining(try_start).max(try_timeout),
        None => try_timeout,
    };
    let body_deadline = tokio::time::Instant::now()
        + body_time.saturating_sub(worker.shared.now().saturating_duration_since(try_start));
    let now = worker.shared.now();
    if let Some((admission, _, _)) = admitted {
        let status = result.as_ref().ok().map(|(resp, _)| answer_status(resp, grpc));
        admission.finish(status, now);
    }
    // Failback: a failure the route queues on is stored durably and answered 202 with its id.
    if let Some(queue) = failback {
        let (failure, status) = match &result {
            Ok((resp, _)) => (None, Some(answer_status(resp, grpc))),
            Err(e) if upstream_body_fault(e, message_refusal.as_deref()).is_some() => (None, None),
            Err(UpstreamError::Connect(..) | UpstreamError::ConnectTimeout(_)) => {
                (Some(TryFailure::Connect), None)
            }
            Err(UpstreamError::Timeout(_)) => (Some(TryFailure::Timeout), None),
            Err(UpstreamError::Http(..) | UpstreamError::Exchange(..) | UpstreamError::H2(..)) => {
                (Some(TryFailure::Reset), None)
            }
        };
        if queue.queues_on(failure, status) {
            drop(result);
            let body = replay.clone().unwrap_or_default();
            let entry = crate::failback::entry(&route.name, &parts, body);
            return (failback_response(queue.enqueue(entry).await), Some(addr));
        }
    }
    // An upstream answer the route's fallback covers (502, 503, 504 by default) is replaced;
    // the failed answer is dropped with its connection (its body unread).
    if let Ok((resp, _)) = &result {
        let status = resp.status().as_u16();
        if matches!(status, 502..=504) {
            if let Some(resp) = stale_answer(snap, route.index, stale_key.as_ref(), now) {
                return (resp, Some(addr));
            }
        }
        if let Some(fallback) = snap.policies.fallback_for_status(route.index, status) {
            return (rendered_response(fallback), Some(addr));
        }
    }
    let (mut resp, conn_back) = match result {
        Ok(ok) => ok,
        Err(e) if upstream_body_fault(&e, message_refusal.as_deref()).is_some() => {
            let (status, error) = upstream_body_fault(&e, message_refusal.as_deref())
                .unwrap_or((StatusCode::BAD_REQUEST, errors::BAD_REQUEST_BODY));
            return (canned(status, error), Some(addr));
        }
        Err(e) => {
            tracing::debug!(error = %e, cluster = %cluster.config.name, "upstream request failed");
            if let Some(resp) = stale_answer(snap, route.index, stale_key.as_ref(), now) {
                return (resp, Some(addr));
            }
            if let Some(fallback) = snap.policies.fallback(route.index, None) {
                return (rendered_response(fallback), Some(addr));
            }
            let resp = match e {
                UpstreamError::Timeout(_) => {
                    canned(StatusCode::GATEWAY_TIMEOUT, errors::UPSTREAM_TIMEOUT)
                }
                _ => canned(StatusCode::BAD_GATEWAY, errors::UPSTREAM_UNAVAILABLE),
            };
            return (resp, Some(addr));
        }
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(down) = downstream_upgrade {
            let up = hyper::upgrade::on(&mut resp);
            tokio::task::spawn_local(async move {
                if let (Ok(down), Ok(up)) = (down.await, up.await) {
                    let mut down = hyper_util::rt::TokioIo::new(down);
                    let mut up = hyper_util::rt::TokioIo::new(up);
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                }
            });
            let (parts, _) = resp.into_parts();
            return (Response::from_parts(parts, ResponseBody::empty()), Some(addr));
        }
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let header::Entry::Vacant(slot) = parts.headers.entry(&X_REQUEST_ID) {
        slot.insert(request_id);
    }
    let body = if http_body::Body::is_end_stream(&body) {
        if let Some(c) = conn_back {
            c.release();
        }
        ResponseBody::empty()
    } else if let Some(refusal) =
        message_refusal.filter(|_| !parts.headers.contains_key(header::CONTENT_LENGTH))
    {
        // A gRPC call whose answer has no declared length, so that trailers can end it early.
        ResponseBody::upstream(body, conn_back, body_deadline).ending_cuts_with_grpc_status(refusal)
    } else {
        ResponseBody::upstream(body, conn_back, body_deadline)
    };
    // The micro-cache's leader keeps a fresh answer (when it ends cleanly) and hands it to the
    // requests that waited; any other answer releases them (dropping the flight).
    let body = match flight {
        Some(flight) if crate::proxy::cache::answer_cacheable(parts.status, &parts.headers) => {
            parts.headers.insert("x-spillway-cache", HeaderValue::from_static("miss"));
            let (status, headers) = (parts.status.as_u16(), parts.headers.clone());
            let at = worker.shared.now();
            let limit = flight.cache().max_entry_bytes();
            body.captured(limit, move |bytes| flight.finish(status, &headers, bytes, at))
        }
        _ => body,
    };
    // A good GET answer is kept (when it ends cleanly) for `stale_on_error`.
    let body = match (snap.policies.stale(route.index), stale_key) {
        (Some(cache), Some(key)) if keeps_stale_copy(&parts, &key) => {
            let cache = cache.clone();
            let (status, headers) = (parts.status.as_u16(), parts.headers.clone());
            let at = worker.shared.now();
            let limit = cache.max_entry_bytes();
            body.captured(limit, move |bytes| {
                cache.store(&key, status, &headers, bytes, at);
            })
        }
        _ => body,
    };
    (Response::from_parts(parts, body), Some(addr))
}

/// Whether an answer is kept as a stale copy: a 2xx to a GET, not `Vary`-ing (the copy would
/// be served whatever the varied header says) and not asking caches to revalidate. The store
/// itself refuses `no-store`, `private` and `Set-Cookie`.
fn keeps_stale_copy(parts: &http::response::Parts, key: &StaleKey) -> bool {
    if !parts.status.is_success() || key.is_head() || parts.headers.contains_key(header::VARY) {
        return false;
    }
    !parts.headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|d| {
                let d = d.trim();
                d.eq_ignore_ascii_case("no-cache")
                    || d.eq_ignore_ascii_case("must-revalidate")
                    || d.eq_ignore_ascii_case("proxy-revalidate")
            })
        })
    })
}

/// An answer from the micro-cache: `x-spillway-cache: hit` (with `Age`) or `coalesced`.
fn cached_response(
    status: u16,
    headers: &[(HeaderName, HeaderValue)],
    body: Bytes,
    how: &'static str,
    age: Option<HeaderValue>,
) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    for (name, value) in headers {
        resp.headers_mut().append(name.clone(), value.clone());
    }
    if let Some(age) = age {
        resp.headers_mut().insert(header::AGE, age);
    }
    resp.headers_mut().insert("x-spillway-cache", HeaderValue::from_static(how));
    resp
}

/// The route's stale copy of this request's answer, served in place of a failure, with
/// `x-spillway-degraded: stale` and its `Age`.
fn stale_answer(
    snap: &Snapshot,
    route: usize,
    key: Option<&StaleKey>,
    now: spillway_core::Instant,
) -> Option<Response<ResponseBody>> {
    let hit = snap.policies.stale(route)?.lookup(key?, now)?;
    let mut resp = Response::new(ResponseBody::full(hit.body.clone()));
    *resp.status_mut() = StatusCode::from_u16(hit.status).ok()?;
    for (name, value) in &hit.headers {
        resp.headers_mut().append(name.clone(), value.clone());
    }
    resp.headers_mut().insert(header::AGE, hit.age_header_value());
    resp.headers_mut().insert("x-spillway-degraded", HeaderValue::from_static("stale"));
    if let Some(counts) = snap.policies.rejections(route) {
        counts.stale.fetch_add(1, Relaxed);
    }
    Some(resp)
}

/// A request body read up to a limit: whole, or the frames read so far and the rest.
enum Prefix {
    /// It ended within the limit (no trailers).
    Whole(Bytes),
    /// It goes on (or has trailers): the frames read, then the rest of the body.
    Partial(std::collections::VecDeque<http_body::Frame<Bytes>>, RequestBody),
}

/// Reads `body` until it ends or passes `limit` bytes, within `time`; `Err` is the status to
/// answer (408 when the client is too slow, 400 when its body breaks off).
async fn read_prefix(
    mut body: RequestBody,
    limit: u64,
    time: Duration,
) -> Result<Prefix, StatusCode> {
    use http_body_util::BodyExt;
    let read = async {
        let mut frames = std::collections::VecDeque::new();
        let mut len = 0u64;
        loop {
            match body.frame().await {
                None => break,
                Some(Err(_)) => return Err(StatusCode::BAD_REQUEST),
                Some(Ok(frame)) => {
                    let trailers = frame.is_trailers();
                    len += frame.data_ref().map_or(0, |d| d.len() as u64);
                    frames.push_back(frame);
                    if trailers || len > limit {
                        return Ok(Prefix::Partial(frames, body));
                    }
                }
            }
        }
        let mut whole = bytes::BytesMut::with_capacity(len as usize);
        for frame in frames {
            if let Ok(data) = frame.into_data() {
                whole.extend_from_slice(&data);
            }
        }
        Ok(Prefix::Whole(whole.freeze()))
    };
    tokio::time::timeout(time, read).await.unwrap_or(Err(StatusCode::REQUEST_TIMEOUT))
}

/// One finished try of the try loop.
struct TryDone {
    picked: usize,
    try_start: spillway_core::Instant,
    try_timeout: Duration,
    /// Whether it was a hedge (sent while another try was still running).
    hedge: bool,
    result: Result<(Response<UpstreamBody>, Option<pool::PooledH1>), UpstreamError>,
}

/// What ended a wait in the try loop.
enum Raced<T> {
    /// A try finished.
    Done(T),
    /// The hedge delay passed first.
    Hedge,
}

/// Waits for the first of `tries` to finish (removing it), or for `hedge_at`.
async fn first_of<'a, T>(
    tries: &mut Vec<Pin<Box<dyn Future<Output = T> + 'a>>>,
    hedge_at: Option<tokio::time::Instant>,
) -> Raced<T> {
    let mut hedge = hedge_at.map(|at| Box::pin(tokio::time::sleep_until(at)));
    std::future::poll_fn(|cx| {
        for i in 0..tries.len() {
            if let Poll::Ready(done) = tries[i].as_mut().poll(cx) {
                drop(tries.swap_remove(i));
                return Poll::Ready(Raced::Done(done));
            }
        }
        if let Some(sleep) = hedge.as_mut() {
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Raced::Hedge);
            }
        }
        Poll::Pending
    })
    .await
}

/// The status an upstream's answer counts as for outlier detection, admission (breakers,
/// adaptive limits), retries, failback and the route's counters: its HTTP status, or for a gRPC
/// call answered trailers-only the HTTP equivalent of its `grpc-status`.
fn answer_status<B>(resp: &Response<B>, grpc: bool) -> u16 {
    if grpc {
        grpc::counted_status(resp.status(), resp.headers())
    } else {
        resp.status().as_u16()
    }
}

/// Why an upstream exchange failed because of the client's body, if it did: the body passed
/// the body limit (413), or did not arrive within the route's `body_timeout` (408).
/// [`client_body_fault`] for any upstream failure (hyper's clients and the lean HTTP/2 one);
/// `message_refused` is a gRPC call's [`grpc::MessageLimit::refusal`] (hyper's HTTP/2 client
/// reports only the reset that followed it).
fn upstream_body_fault(
    e: &UpstreamError,
    message_refused: Option<&std::sync::atomic::AtomicBool>,
) -> Option<(StatusCode, &'static str)> {
    if message_refused.is_some_and(|r| r.load(std::sync::atomic::Ordering::Relaxed)) {
        return Some((StatusCode::PAYLOAD_TOO_LARGE, errors::BODY_TOO_LARGE));
    }
    match e {
        UpstreamError::Http(_, e) => client_body_fault(e),
        UpstreamError::H2(_, e) => e.request_body_error().and_then(body_fault_in),
        _ => None,
    }
}

fn client_body_fault(e: &hyper::Error) -> Option<(StatusCode, &'static str)> {
    std::error::Error::source(e).and_then(body_fault_in)
}

/// Whether `e` or one of its sources is the request body's own failure.
fn body_fault_in(e: &(dyn std::error::Error + 'static)) -> Option<(StatusCode, &'static str)> {
    let mut source = Some(e);
    while let Some(s) = source {
        if s.is::<BodyTooLarge>() {
            return Some((StatusCode::PAYLOAD_TOO_LARGE, errors::BODY_TOO_LARGE));
        }
        if s.is::<crate::proxy::body::BodyTimedOut>() {
            return Some((StatusCode::REQUEST_TIMEOUT, errors::REQUEST_BODY_TIMEOUT));
        }
        source = s.source();
    }
    None
}

fn body_is_empty(body: &RequestBody) -> bool {
    use http_body::Body;
    body.is_end_stream()
}

/// The request as admission reads it on the hyper path.
struct HyperView<'a> {
    req: &'a Request<RequestBody>,
    peer: std::net::IpAddr,
}

impl crate::policy::classify::RequestView for HyperView<'_> {
    fn header(&self, name: &str) -> Option<&[u8]> {
        self.req.headers().get(name).map(HeaderValue::as_bytes)
    }
    fn header_values(&self, name: &str, each: &mut dyn FnMut(&[u8])) {
        for v in self.req.headers().get_all(name) {
            each(v.as_bytes());
        }
    }
    fn path(&self) -> &str {
        self.req.uri().path()
    }
    fn query(&self) -> Option<&str> {
        self.req.uri().query()
    }
    fn peer(&self) -> std::net::IpAddr {
        self.peer
    }
    fn body_len(&self) -> Option<u64> {
        http_body::Body::size_hint(self.req.body()).exact()
    }
}

/// A refusal as a hyper response (laid out by `policy::render`, the one place for that).
/// A refusal laid out for HTTP; a gRPC caller gets it as its `grpc-status` (`grpc::local_answer`)
/// once the route's counters and the access log took its HTTP status.
fn refusal_response(refusal: &crate::policy::Refusal) -> Response<ResponseBody> {
    let mut resp = rendered_response(crate::policy::render::render(refusal));
    // For the access log, which `handle` writes after the fact.
    resp.extensions_mut().insert(refusal.rejection.reason);
    resp.extensions_mut().insert(grpc::LocalError::refusal(&refusal.rejection));
    resp
}

/// Largest request body a broadcast route sends (kept for the copies).
const BROADCAST_MAX_BODY: u64 = crate::config::retry::DEFAULT_MAX_REPLAY_BODY;

/// Strategy broadcast: sends the request to every available endpoint of `cluster` at once
/// and waits for all (each within `timeout`). All succeed (no transport error, no 5xx): the
/// first endpoint's answer, with `x-spillway-broadcast: N/N`. Otherwise 502
/// `{"error":"broadcast_failed","failed":[{"endpoint":..,"status"|"error":..}],...}` and the
/// same header with the successes counted. Also returns the status admission is told
/// (`None`: a failure).
async fn broadcast_all(
    worker: &Rc<Worker>,
    cluster: &ClusterState,
    parts: &http::request::Parts,
    body: Bytes,
    timeout: Duration,
) -> (Response<ResponseBody>, Option<u16>) {
    let now = worker.shared.now();
    let mut eligible = vec![0usize; cluster.endpoints.len()];
    let n = cluster.eligible(now, &mut eligible);
    eligible.truncate(n);
    if eligible.is_empty() {
        return (canned(StatusCode::SERVICE_UNAVAILABLE, errors::NO_HEALTHY_ENDPOINT), None);
    }
    let t = cluster.config.timeouts;
    let pool = &worker.pool;
    let protocol = cluster.config.protocol;
    let tls = cluster.tls.as_deref();
    let mut sends: Vec<BroadcastSend<'_>> = eligible
        .iter()
        .map(|&i| {
            let endpoint = &cluster.endpoints[i];
            let addr = endpoint.address;
            let mut copy = copy_request(parts, ProxyBody::kept(body.clone()));
            if protocol == UpstreamProtocol::Http2 {
                fill_authority(copy.uri_mut(), endpoint, upstream_scheme(cluster));
            }
            endpoint.in_flight.fetch_add(1, Relaxed);
            let in_flight = InFlight(endpoint);
            let send: BroadcastSend<'_> = Box::pin(async move {
                let _in_flight = in_flight;
                let started = std::time::Instant::now();
                let exchange = async {
                    match protocol {
                        UpstreamProtocol::Http1 => {
                            let mut c = pool.checkout_h1(addr, tls, t.connect, t.idle).await?;
                            let resp =
                                c.send(copy).await.map_err(|e| UpstreamError::Http(addr, e))?;
                            Ok((resp.map(UpstreamBody::Hyper), Some(c)))
                        }
                        UpstreamProtocol::Http2 => {
                            let mut sender = pool.checkout_h2(addr, tls, t.connect).await?;
                            let resp = sender
                                .send_request(copy)
                                .await
                                .map_err(|e| UpstreamError::Http(addr, e))?;
                            Ok((resp.map(UpstreamBody::Hyper), None))
                        }
                    }
                };
                let result = match tokio::time::timeout(timeout.min(t.per_try), exchange).await {
                    Ok(r) => r,
                    Err(_) => Err(UpstreamError::Timeout(addr)),
                };
                (i, (result, started.elapsed()))
            });
            send
        })
        .collect();
    let mut results = Vec::with_capacity(sends.len());
    while !sends.is_empty() {
        if let Raced::Done(done) = first_of(&mut sends, None).await {
            results.push(done);
        }
    }
    results.sort_by_key(|(i, _)| *i);
    let now = worker.shared.now();
    let total = results.len();
    let mut failed = Vec::new();
    let mut first_ok = None;
    for (i, (result, latency)) in results {
        let endpoint = &cluster.endpoints[i];
        let outcome = match &result {
            Ok((resp, _)) if resp.status().is_server_error() => Outcome::ServerError,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        };
        cluster.record(endpoint, outcome, latency, now);
        match result {
            Ok((resp, conn)) if outcome == Outcome::Success => {
                if first_ok.is_none() {
                    first_ok = Some((resp, conn));
                }
            }
            Ok((resp, _)) => failed.push(serde_json::json!({
                "endpoint": endpoint.address.to_string(), "status": resp.status().as_u16()
            })),
            Err(e) => failed.push(serde_json::json!({
                "endpoint": endpoint.address.to_string(), "error": e.to_string()
            })),
        }
    }
    let summary = format!("{}/{total}", total - failed.len());
    let summary = HeaderValue::from_str(&summary).unwrap_or(HeaderValue::from_static("?"));
    match (failed.is_empty(), first_ok) {
        (true, Some((resp, conn))) => {
            let (mut head, body) = resp.into_parts();
            strip_hop_by_hop(&mut head.headers);
            head.headers.insert("x-spillway-broadcast", summary);
            let body = if http_body::Body::is_end_stream(&body) {
                if let Some(c) = conn {
                    c.release();
                }
                ResponseBody::empty()
            } else {
                ResponseBody::upstream(body, conn, tokio::time::Instant::now() + timeout)
            };
            let status = head.status.as_u16();
            (Response::from_parts(head, body), Some(status))
        }
        _ => {
            let text = serde_json::json!({
                "error": "broadcast_failed", "failed": failed, "succeeded": total - failed.len(),
                "endpoints": total
            });
            let mut resp = canned(StatusCode::BAD_GATEWAY, "");
            *resp.body_mut() = ResponseBody::full(Bytes::from(format!("{text}\n")));
            resp.headers_mut().insert("x-spillway-broadcast", summary);
            // The answer for the limiters and the breaker: a failure (no single status).
            (resp, None)
        }
    }
}

/// A new request with `parts`' method, URI, version and headers, sending `body`: each try,
/// broadcast send and mirror copy of a kept request.
fn copy_request(parts: &http::request::Parts, body: ProxyBody) -> Request<ProxyBody> {
    let mut copy = Request::new(body);
    *copy.method_mut() = parts.method.clone();
    *copy.uri_mut() = parts.uri.clone();
    *copy.version_mut() = parts.version;
    *copy.headers_mut() = parts.headers.clone();
    copy
}

/// A copy of `req` to send again, when its body is in hand (none or kept); `None` for a
/// streamed body, which cannot be replayed. Costs a header map clone, so it is made only for
/// HTTP/2 upstreams, whose refusals (`pool::refused_unprocessed`) hyper reports without
/// handing the request back.
fn replay_copy(req: &Request<ProxyBody>) -> Option<Request<ProxyBody>> {
    let body = match req.body() {
        ProxyBody::Empty | ProxyBody::Buffered(None) => ProxyBody::Empty,
        ProxyBody::Buffered(Some(data)) => ProxyBody::Buffered(Some(data.clone())),
        _ => return None,
    };
    let mut copy = Request::new(body);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// Gives a URI without an authority the endpoint's address as one (and `scheme` as its scheme,
/// `/` as its path where missing): an HTTP/2 request needs `:scheme` and `:authority`. A URI
/// with an authority (the client's) is left as it was. The endpoint's authority is made once
/// and shared; the URI's own parts are moved, not copied.
fn fill_authority(uri: &mut Uri, endpoint: &EndpointState, scheme: http::uri::Scheme) {
    let Some(authority) = endpoint.authority.as_ref().filter(|_| uri.authority().is_none()) else {
        return;
    };
    let mut up = std::mem::take(uri).into_parts();
    up.scheme.get_or_insert(scheme);
    up.authority = Some(authority.clone());
    up.path_and_query.get_or_insert(http::uri::PathAndQuery::from_static("/"));
    // Scheme, authority and path all set: `from_parts` has nothing to refuse.
    if let Ok(filled) = Uri::from_parts(up) {
        *uri = filled;
    }
}

/// The `:scheme` of requests to `cluster`: `https` over TLS.
fn upstream_scheme(cluster: &ClusterState) -> http::uri::Scheme {
    if cluster.config.tls.is_some() {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    }
}

/// One endpoint's send of a broadcast: its index and result.
type BroadcastSend<'a> = Pin<Box<dyn Future<Output = (usize, BroadcastResult)> + 'a>>;

/// One endpoint's answer to a broadcast, and how long it took.
type BroadcastResult =
    (Result<(Response<UpstreamBody>, Option<pool::PooledH1>), UpstreamError>, Duration);

/// Sends a copy of the request to the mirror's shadow cluster on this worker's runtime and
/// forgets it: its outcome and latency never reach the client (a hung shadow only holds one of
/// the mirror's `max_in_flight` slots until the shadow cluster's request timeout).
fn send_mirror(
    worker: &Rc<Worker>,
    mirror: &crate::policy::mirror::RouteMirror,
    parts: &http::request::Parts,
    body: Bytes,
) {
    let Some(slot) = mirror.start() else { return };
    let mut copy = copy_request(parts, ProxyBody::kept(body));
    copy.headers_mut().insert(crate::policy::mirror::MIRROR_HEADER, HeaderValue::from_static("1"));
    let worker = worker.clone();
    let shadow = mirror.cluster;
    tokio::task::spawn_local(async move {
        let snap = worker.snapshot();
        let Some(cluster) = snap.clusters.get(shadow) else { return slot.finish(false) };
        let now = worker.shared.now();
        let Some(picked) = worker.pick(&snap, shadow, now, None, None) else {
            return slot.finish(false);
        };
        let Some(endpoint) = cluster.endpoints.get(picked) else { return slot.finish(false) };
        let addr = endpoint.address;
        let t = cluster.config.timeouts;
        let protocol = cluster.config.protocol;
        if protocol == UpstreamProtocol::Http2 {
            copy.headers_mut().remove(header::HOST);
            *copy.version_mut() = Version::HTTP_2;
            fill_authority(copy.uri_mut(), endpoint, upstream_scheme(cluster));
        } else {
            *copy.version_mut() = Version::HTTP_11;
        }
        let pool = worker.pool.clone();
        let tls = cluster.tls.as_deref();
        let exchange = async {
            let status = match protocol {
                UpstreamProtocol::Http1 => {
                    let mut c = pool.checkout_h1(addr, tls, t.connect, t.idle).await.ok()?;
                    let resp = c.send(copy).await.ok()?;
                    let status = resp.status();
                    // Read the answer through so the connection can serve again.
                    let _ = http_body_util::BodyExt::collect(resp.into_body()).await.ok()?;
                    c.release();
                    status
                }
                UpstreamProtocol::Http2 => {
                    let mut sender = pool.checkout_h2(addr, tls, t.connect).await.ok()?;
                    sender.send_request(copy).await.ok()?.status()
                }
            };
            Some(status)
        };
        let ok = matches!(
            tokio::time::timeout(t.request, exchange).await,
            Ok(Some(status)) if !status.is_server_error()
        );
        slot.finish(ok);
    });
}

/// The answer to a request handed to the failback queue: 202 with its id, or 503 when the
/// queue could not take it.
fn failback_response(
    queued: Result<spillway_spool::EntryId, crate::failback::EnqueueError>,
) -> Response<ResponseBody> {
    match queued {
        Ok(id) => {
            let body = format!("{{\"queued\":\"{id}\"}}\n");
            let mut resp = canned(StatusCode::ACCEPTED, "");
            *resp.body_mut() = ResponseBody::full(Bytes::from(body));
            if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
                resp.headers_mut().insert(crate::failback::FAILBACK_ID_HEADER, v);
            }
            resp.headers_mut().insert("x-spillway-degraded", HeaderValue::from_static("failback"));
            resp
        }
        Err(crate::failback::EnqueueError::Full) => {
            canned(StatusCode::SERVICE_UNAVAILABLE, errors::FAILBACK_FULL)
        }
        Err(crate::failback::EnqueueError::Unavailable(_)) => {
            canned(StatusCode::SERVICE_UNAVAILABLE, errors::FAILBACK_UNAVAILABLE)
        }
    }
}

/// A response laid out by `policy` (a refusal or a fallback) as a hyper response.
fn rendered_response(rendered: crate::policy::render::Rendered) -> Response<ResponseBody> {
    let mut resp = Response::new(ResponseBody::full(Bytes::from(rendered.body)));
    *resp.status_mut() =
        StatusCode::from_u16(rendered.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    for (name, value) in rendered.headers {
        if let Ok(v) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(HeaderName::from_static(name), v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::fill_authority;
    use crate::upstream::cluster::EndpointState;
    use http::Uri;

    #[test]
    fn an_origin_form_uri_gets_the_endpoint_as_authority_and_keeps_its_path() {
        let endpoint = EndpointState::new("127.0.0.1:9000".parse().unwrap(), 1, None);
        let mut uri: Uri = "/users/7?full=1".parse().unwrap();
        fill_authority(&mut uri, &endpoint, http::uri::Scheme::HTTP);
        assert_eq!(uri, "http://127.0.0.1:9000/users/7?full=1");
        let v6 = EndpointState::new("[::1]:9000".parse().unwrap(), 1, None);
        let mut uri: Uri = "/".parse().unwrap();
        fill_authority(&mut uri, &v6, http::uri::Scheme::HTTPS);
        assert_eq!(uri, "https://[::1]:9000/");
        // A URI with an authority (the client's host) is left alone.
        let mut uri: Uri = "http://api.example/x".parse().unwrap();
        fill_authority(&mut uri, &endpoint, http::uri::Scheme::HTTP);
        assert_eq!(uri, "http://api.example/x");
    }
}
