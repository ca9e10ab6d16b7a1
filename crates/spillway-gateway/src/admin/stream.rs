//! `GET /admin/stream`: a server-sent-events stream of the gateway's state, one JSON snapshot a
//! second — the data behind a live dashboard (charts compute rates and quantiles from the
//! differences between consecutive snapshots).
//!
//! A snapshot carries counters, not rates, so a client that misses an event loses nothing:
//! per route the answers by status class, the latency histogram and the degraded answers
//! (fallbacks and stale copies); the admission and resilience state (`/admin/policies`, with
//! the rejections by reason and criticality), clusters and endpoints (`/admin/clusters`), hot
//! keys, failback queue depths and the active plans. The built-in dashboard
//! ([`super::dashboard`]) draws its charts from these snapshots.

use super::AdminControl;
use crate::state::Shared;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// How often a snapshot is sent.
pub const PERIOD: Duration = Duration::from_secs(1);

/// One snapshot of `shared` as JSON.
pub fn snapshot(shared: &Shared) -> serde_json::Value {
    use serde_json::json;
    let snap = shared.snapshot.load();
    let now = shared.now();
    let bounds: Vec<f64> = crate::route::stats::BUCKETS.to_vec();
    let routes: Vec<_> = snap
        .router
        .routes
        .iter()
        .map(|r| {
            let class = |from: u16| (from..from + 100).map(|s| r.stats.count(s)).sum::<u64>();
            let buckets: Vec<u64> =
                (0..=crate::route::stats::BUCKETS.len()).map(|i| r.stats.bucket_count(i)).collect();
            let degraded = snap.policies.rejections(r.index).map(|counts| {
                json!({
                    "fallback": counts.fallbacks.load(Relaxed),
                    "stale": counts.stale.load(Relaxed),
                })
            });
            json!({
                "route": r.name,
                "answers": { "2xx": class(200), "3xx": class(300), "4xx": class(400), "5xx": class(500) },
                "latency_buckets": buckets,
                "latency_sum_us": r.stats.sum_micros(),
                "degraded": degraded.unwrap_or_else(|| json!({ "fallback": 0, "stale": 0 })),
            })
        })
        .collect();
    let clusters: Vec<_> = snap.clusters.iter().map(|c| c.view(now)).collect();
    let hot_keys: Vec<_> = snap
        .config
        .routes
        .iter()
        .zip(&snap.policies.routes)
        .filter_map(|(r, p)| {
            let hot = p.as_ref()?.hot.as_ref()?;
            Some(json!({ "route": r.name, "top": hot.top(now) }))
        })
        .collect();
    let failback: Vec<_> = snap
        .failback
        .iter()
        .flatten()
        .map(|q| json!({ "route": q.route, "depth": q.depth() }))
        .collect();
    let active = shared.policy.active_plans.lock().clone();
    json!({
        "unix_ms": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        "generation": snap.generation,
        "latency_bucket_bounds_s": bounds,
        "routes": routes,
        "policies": snap.policies.view(&snap.config, now),
        "clusters": clusters,
        "hot_keys": hot_keys,
        "failback": failback,
        "plans": crate::policy::Policies::plans_view(&snap.config, &active),
        "cpu": shared.policy.cpu.get().fraction(),
    })
}

/// The event stream's body: a snapshot at once, then one every [`PERIOD`], until the client
/// goes away.
pub struct SnapshotStream<C> {
    control: Arc<C>,
    tick: tokio::time::Interval,
}

impl<C: AdminControl> SnapshotStream<C> {
    /// A stream of the snapshots of `control`'s gateway.
    pub fn new(control: Arc<C>) -> SnapshotStream<C> {
        let mut tick = tokio::time::interval(PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        SnapshotStream { control, tick }
    }
}

impl<C: AdminControl> Body for SnapshotStream<C> {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        match this.tick.poll_tick(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => {
                let json = snapshot(this.control.shared()).to_string();
                let event = format!("event: snapshot\ndata: {json}\n\n");
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
