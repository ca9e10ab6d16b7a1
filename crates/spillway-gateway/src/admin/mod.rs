//! The admin listener: Prometheus metrics, health and readiness, the effective config with the
//! last reload's status, cluster state, reload on demand, and the live dashboard
//! (`GET /dashboard`, [`dashboard`]).
//!
//! `/metrics`, `/healthz` and `/readyz` are open (scrapers and orchestrators need them), and so
//! is `/dashboard` (the page holds no data; its script reads `/admin/stream` with the token);
//! `/admin/*` requires `Authorization: Bearer <token>` when a token is configured; the token is
//! compared in constant time.
//!
//! It reads `state` and reloads through the [`AdminControl`] trait, which `gateway::Control`
//! implements, so the admin API does not import the gateway that starts it.

pub mod dashboard;
pub mod metrics;
pub mod stream;

use crate::state::Shared;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// What the admin API needs from the running gateway.
pub trait AdminControl: Send + Sync + 'static {
    /// State shared with the workers.
    fn shared(&self) -> &Shared;
    /// Reloads the config file; returns the new generation or why it was refused.
    fn reload(&self, trigger: &str) -> Result<u64, String>;
}

/// A response body of the admin API: a whole document, or the event stream.
pub type AdminBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Serves the admin API on `listener` until the process stops.
pub async fn serve<C: AdminControl>(listener: tokio::net::TcpListener, control: Arc<C>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let control = control.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(control.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<AdminBody> {
    let mut resp = Response::new(Full::new(body.into()).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<AdminBody> {
    let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
    text.push('\n');
    respond(status, "application/json", text)
}

/// Compares a presented bearer token with the configured one in time that does not depend on
/// where they differ, so the token cannot be guessed byte by byte from response times.
///
/// A length mismatch returns early: that tells an attacker only the token's length, which is
/// acceptable (a token's strength is in its content, and its length is no secret worth a
/// hash per request). Equal lengths are compared with `subtle`, without early exit.
fn token_matches(given: &str, token: &str) -> bool {
    use subtle::ConstantTimeEq;
    given.len() == token.len() && bool::from(given.as_bytes().ct_eq(token.as_bytes()))
}

/// Whether a request was sent by a page of another site: `Sec-Fetch-Site` says so, or its
/// `Origin` names another host than its `Host` (browsers send both on cross-site calls).
fn is_cross_site(headers: &http::HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return !matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    let Some(origin) = headers.get(header::ORIGIN) else { return false };
    let host = headers.get(header::HOST).map(HeaderValue::as_bytes).unwrap_or_default();
    let origin_host = origin
        .as_bytes()
        .splitn(2, |b| *b == b':')
        .nth(1)
        .map(|rest| rest.strip_prefix(b"//").unwrap_or(rest));
    origin_host.is_none_or(|o| !o.eq_ignore_ascii_case(host))
}

async fn handle<C: AdminControl>(
    control: Arc<C>,
    req: Request<Incoming>,
) -> Result<Response<AdminBody>, Infallible> {
    let shared = control.shared();
    let path = req.uri().path();
    if path.starts_with("/admin/") {
        let token = shared.snapshot.load().config.admin.as_ref().and_then(|a| a.token.clone());
        if let Some(token) = token {
            let given = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
            if !given
                .and_then(|g| g.strip_prefix("Bearer "))
                .is_some_and(|g| token_matches(g, &token))
            {
                return Ok(json(
                    StatusCode::UNAUTHORIZED,
                    &serde_json::json!({"error": "unauthorized"}),
                ));
            }
        }
    }
    // A web page on another site must not switch plans or reload through the operator's
    // browser (the admin API may have no token on loopback): mutating calls from a browser
    // must come from the admin listener's own pages.
    if req.method() != Method::GET && is_cross_site(req.headers()) {
        return Ok(json(StatusCode::FORBIDDEN, &serde_json::json!({"error": "cross_site"})));
    }
    let resp = match (req.method(), path) {
        (&Method::GET, "/metrics") => {
            let snap = shared.snapshot.load();
            let routes = snap
                .router
                .routes
                .iter()
                .map(|r| r.stats.as_ref())
                .chain(std::iter::once(snap.no_route.as_ref()));
            let listeners: Vec<_> =
                shared.listeners.iter().map(|(n, s)| (n.clone(), s.as_ref())).collect();
            let mut text = metrics::render(
                routes,
                &snap.clusters,
                &listeners,
                (shared.reloads_ok.load(Relaxed), shared.reloads_failed.load(Relaxed)),
                shared.now(),
            );
            crate::record::render_metrics(snap.router.recordings(), &mut text);
            metrics::render_policies(
                &snap.policies,
                &snap.config,
                &shared.policy.active_plans.lock().clone(),
                shared.policy.cpu.get().fraction(),
                shared.now(),
                &mut text,
            );
            crate::failback::render_metrics(&snap.failback, &mut text);
            crate::upstream::discovery::render_metrics(&shared.discovered, &mut text);
            crate::listen::busy::render_metrics(&shared.worker_busy, &mut text);
            respond(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", text)
        }
        (&Method::GET, p) if dashboard::owns(p) => dashboard::serve(p),
        (&Method::GET, "/healthz") => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        (&Method::GET, "/readyz") => {
            if shared.draining.load(Relaxed) {
                json(StatusCode::SERVICE_UNAVAILABLE, &serde_json::json!({"status": "draining"}))
            } else {
                json(StatusCode::OK, &serde_json::json!({"status": "ready"}))
            }
        }
        (&Method::GET, "/admin/config") => {
            let snap = shared.snapshot.load();
            let status = shared.reload.lock().map(|s| s.clone()).unwrap_or_default();
            json(
                StatusCode::OK,
                &serde_json::json!({
                    "generation": snap.generation,
                    "config": &*snap.config,
                    "last_reload": status,
                }),
            )
        }
        (&Method::GET, "/admin/clusters") => {
            let snap = shared.snapshot.load();
            let now = shared.now();
            let views: Vec<_> = snap.clusters.iter().map(|c| c.view(now)).collect();
            json(StatusCode::OK, &serde_json::json!({ "clusters": views }))
        }
        (&Method::GET, "/admin/policies") => {
            let snap = shared.snapshot.load();
            json(StatusCode::OK, &snap.policies.view(&snap.config, shared.now()))
        }
        (&Method::GET, "/admin/stream") => {
            let mut resp = Response::new(stream::SnapshotStream::new(control.clone()).boxed());
            let headers = resp.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        (&Method::GET, "/admin/hotkeys") => {
            // `?route=NAME` narrows the answer to one route.
            let wanted = req.uri().query().and_then(|q| {
                q.split('&').find_map(|kv| kv.strip_prefix("route=")).map(str::to_string)
            });
            let snap = shared.snapshot.load();
            let now = shared.now();
            let routes: Vec<_> = snap
                .config
                .routes
                .iter()
                .zip(&snap.policies.routes)
                .filter(|(r, _)| wanted.as_ref().is_none_or(|w| *w == r.name))
                .filter_map(|(r, p)| {
                    let hot = p.as_ref()?.hot.as_ref()?;
                    Some(serde_json::json!({
                        "route": r.name, "key": hot.settings.key.text,
                        "top": hot.top(now)
                    }))
                })
                .collect();
            match wanted {
                Some(route) if routes.is_empty() => json(
                    StatusCode::NOT_FOUND,
                    &serde_json::json!({"error": "no_hot_keys", "route": route}),
                ),
                _ => json(StatusCode::OK, &serde_json::json!({ "routes": routes })),
            }
        }
        (&Method::GET, "/admin/quotas") => {
            let snap = shared.snapshot.load();
            let now = shared.now();
            let limits: Vec<_> = snap
                .config
                .routes
                .iter()
                .zip(&snap.policies.routes)
                .filter_map(|(r, p)| Some((r, p.as_ref()?)))
                .flat_map(|(r, p)| {
                    p.globals.iter().map(move |g| {
                        serde_json::json!({
                            "route": r.name, "limit": g.config.name, "rate": g.config.rate,
                            "store_up": g.store_up(), "fallback_total": g.fallback_total(),
                            "state": g.view(now)
                        })
                    })
                })
                .collect();
            json(
                StatusCode::OK,
                &serde_json::json!({ "store": snap.config.quota_store, "limits": limits }),
            )
        }
        (&Method::GET, "/admin/failback") => {
            let snap = shared.snapshot.load();
            let queues: Vec<_> = snap.failback.iter().flatten().map(|q| q.view(100)).collect();
            json(StatusCode::OK, &serde_json::json!({ "queues": queues }))
        }
        (&Method::POST, "/admin/reload") => match control.reload("admin API") {
            Ok(generation) => {
                json(StatusCode::OK, &serde_json::json!({"ok": true, "generation": generation}))
            }
            Err(error) => json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &serde_json::json!({"ok": false, "error": error}),
            ),
        },
        (&Method::GET, "/admin/plans") => {
            let snap = shared.snapshot.load();
            let active = shared.policy.active_plans.lock().clone();
            json(StatusCode::OK, &crate::policy::Policies::plans_view(&snap.config, &active))
        }
        (&Method::POST, p) if p.starts_with("/admin/plans/") => switch_plan(shared, p),
        _ => json(StatusCode::NOT_FOUND, &serde_json::json!({"error": "not_found"})),
    };
    Ok(resp)
}

/// `POST /admin/plans/{name}/activate` or `…/deactivate`: switches a degradation plan on the
/// live snapshot at once; the switch outlives reloads, and restarts when `state_dir` is set
/// (the active set is saved to `STATE_DIR/plans.json`). A failed save answers 500 with
/// `"persisted": false` and the error; the switch applies all the same.
fn switch_plan(shared: &Shared, path: &str) -> Response<AdminBody> {
    let rest = path.trim_start_matches("/admin/plans/");
    let (name, on) = match rest.rsplit_once('/') {
        Some((name, "activate")) => (name, true),
        Some((name, "deactivate")) => (name, false),
        _ => {
            return json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"error": "not_found", "hint": "POST /admin/plans/{name}/activate or /deactivate"}),
            )
        }
    };
    let snap = shared.snapshot.load();
    if !snap.config.plans.iter().any(|p| p.name == name) {
        return json(
            StatusCode::NOT_FOUND,
            &serde_json::json!({"error": "no_such_plan", "plan": name}),
        );
    }
    let mut active = shared.policy.active_plans.lock();
    if on {
        active.insert(name.to_string());
    } else {
        active.remove(name);
    }
    snap.policies.apply_plans(&snap.config, &active);
    tracing::warn!(plan = name, active = on, "degradation plan switched");
    // Saved under the lock, so that the file always holds the last switch. The write and its
    // fsyncs block the control thread (admin API, health checks) for their few milliseconds.
    let saved = snap
        .config
        .state_dir
        .as_deref()
        .map(|dir| crate::plans_state::save(dir, &active, std::time::SystemTime::now()));
    drop(active);
    match saved {
        None => json(
            StatusCode::OK,
            &serde_json::json!({"plan": name, "active": on, "persisted": null}),
        ),
        Some(Ok(_)) => json(
            StatusCode::OK,
            &serde_json::json!({"plan": name, "active": on, "persisted": true}),
        ),
        Some(Err(e)) => {
            tracing::error!(plan = name, error = %e, "degradation plan switched but not saved: a restart forgets it");
            json(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({"plan": name, "active": on, "persisted": false, "error": e.to_string()}),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_site_calls_are_told_apart_from_the_dashboards_own() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = http::HeaderMap::new();
            for (n, v) in pairs {
                m.insert(*n, HeaderValue::from_static(v));
            }
            m
        };
        assert!(!is_cross_site(&h(&[("host", "127.0.0.1:9901")])), "curl sends no Origin");
        let same = h(&[("host", "127.0.0.1:9901"), ("origin", "http://127.0.0.1:9901")]);
        assert!(!is_cross_site(&same));
        let evil = h(&[("host", "127.0.0.1:9901"), ("origin", "https://evil.example")]);
        assert!(is_cross_site(&evil));
        assert!(is_cross_site(&h(&[("host", "127.0.0.1:9901"), ("origin", "null")])));
        assert!(is_cross_site(&h(&[("host", "x"), ("sec-fetch-site", "cross-site")])));
        assert!(is_cross_site(&h(&[("host", "x"), ("sec-fetch-site", "same-site")])));
        assert!(!is_cross_site(&h(&[("host", "x"), ("sec-fetch-site", "same-origin")])));
    }
}
