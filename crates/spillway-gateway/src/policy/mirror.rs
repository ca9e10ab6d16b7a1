//! The failsafe strategy's mirror: a copy of a route's requests sent to a shadow cluster,
//! asynchronously, whose outcome and latency never affect the answer.
//!
//! Why a cap on copies in flight: a shadow that hangs must not grow the gateway's memory or
//! tasks without bound; beyond `max_in_flight` copies are dropped (counted), never queued.
//! The copy is sent by the request path (`crate::proxy`), which spawns it on the worker's
//! runtime and forgets it; this module decides which requests are copied and counts them.

use crate::config::{Config, MirrorSettings};
use serde::Serialize;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// The header marking a mirrored copy, so the shadow service can tell.
pub const MIRROR_HEADER: &str = "x-spillway-mirror";

/// Counters of a route's mirror (kept across reloads while the route exists).
#[derive(Debug, Default)]
pub struct MirrorCounts {
    in_flight: AtomicU32,
    /// Copies sent.
    pub sent: AtomicU64,
    /// Copies not sent because `max_in_flight` were already out.
    pub dropped: AtomicU64,
    /// Copies the shadow answered with a status below 500.
    pub ok: AtomicU64,
    /// Copies that failed (5xx, connect error, timeout).
    pub failed: AtomicU64,
}

/// A route's mirror, compiled: its settings, the shadow cluster's index, its counters.
#[derive(Debug)]
pub struct RouteMirror {
    /// The settings.
    pub settings: MirrorSettings,
    /// The shadow cluster's index in the snapshot.
    pub cluster: usize,
    /// Counters.
    pub counts: Arc<MirrorCounts>,
}

/// A copy in flight: holds one of the route's `max_in_flight` slots until dropped.
#[derive(Debug)]
pub struct MirrorSlot(Arc<MirrorCounts>);

impl Drop for MirrorSlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

impl MirrorSlot {
    /// Counts how the copy ended.
    pub fn finish(self, ok: bool) {
        let counter = if ok { &self.0.ok } else { &self.0.failed };
        counter.fetch_add(1, Relaxed);
    }
}

impl RouteMirror {
    /// Whether this request is copied (`random` uniform in [0, 1); the body size known and
    /// within `max_body`).
    pub fn wants(&self, random: f64, body_len: Option<u64>) -> bool {
        random < self.settings.share && body_len.is_some_and(|n| n <= self.settings.max_body)
    }

    /// A slot for one copy, or `None` (counted as dropped) when `max_in_flight` are out.
    pub fn start(&self) -> Option<MirrorSlot> {
        let c = &self.counts;
        let taken = c
            .in_flight
            .fetch_update(Relaxed, Relaxed, |n| (n < self.settings.max_in_flight).then_some(n + 1));
        if taken.is_err() {
            c.dropped.fetch_add(1, Relaxed);
            return None;
        }
        c.sent.fetch_add(1, Relaxed);
        Some(MirrorSlot(c.clone()))
    }

    /// What `/admin/policies` shows.
    pub fn view(&self) -> MirrorView {
        let c = &self.counts;
        MirrorView {
            cluster: self.settings.cluster.clone(),
            share: self.settings.share,
            in_flight: c.in_flight.load(Relaxed),
            sent: c.sent.load(Relaxed),
            dropped: c.dropped.load(Relaxed),
            ok: c.ok.load(Relaxed),
            failed: c.failed.load(Relaxed),
        }
    }
}

/// `/admin/policies`: a route's mirror.
#[derive(Debug, Serialize)]
pub struct MirrorView {
    /// The shadow cluster.
    pub cluster: String,
    /// Share of requests copied.
    pub share: f64,
    /// Copies in flight.
    pub in_flight: u32,
    /// Copies sent.
    pub sent: u64,
    /// Copies dropped at the in-flight cap.
    pub dropped: u64,
    /// Copies answered below 500.
    pub ok: u64,
    /// Copies failed.
    pub failed: u64,
}

/// The mirrors of `config`'s routes, by route index, keeping `previous` counters by route name.
pub fn build(
    config: &Config,
    previous: Option<(&[Option<Arc<RouteMirror>>], &Config)>,
) -> Vec<Option<Arc<RouteMirror>>> {
    config
        .routes
        .iter()
        .map(|r| {
            let settings = r.policy.mirror.as_ref()?;
            let cluster = config.clusters.iter().position(|c| c.name == settings.cluster)?;
            let counts = previous
                .and_then(|(mirrors, pc)| {
                    let i = pc.routes.iter().position(|o| o.name == r.name)?;
                    mirrors.get(i)?.as_ref().map(|m| m.counts.clone())
                })
                .unwrap_or_default();
            Some(Arc::new(RouteMirror { settings: settings.clone(), cluster, counts }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirror(share: f64, max_in_flight: u32) -> RouteMirror {
        RouteMirror {
            settings: MirrorSettings {
                cluster: "shadow".into(),
                share,
                max_body: 10,
                max_in_flight,
            },
            cluster: 1,
            counts: Arc::default(),
        }
    }

    #[test]
    fn a_share_of_requests_with_small_bodies_is_copied() {
        let m = mirror(0.25, 1);
        assert!(m.wants(0.1, Some(0)));
        assert!(!m.wants(0.3, Some(0)));
        assert!(!m.wants(0.1, Some(11)), "body too large");
        assert!(!m.wants(0.1, None), "unknown length");
    }

    #[test]
    fn copies_beyond_the_in_flight_cap_are_dropped_and_slots_come_back() {
        let m = mirror(1.0, 2);
        let a = m.start().expect("first");
        let b = m.start().expect("second");
        assert!(m.start().is_none());
        assert_eq!(m.view().dropped, 1);
        a.finish(true);
        let c = m.start().expect("a slot came back");
        drop((b, c));
        let v = m.view();
        assert_eq!((v.in_flight, v.sent, v.ok), (0, 3, 1));
    }
}
