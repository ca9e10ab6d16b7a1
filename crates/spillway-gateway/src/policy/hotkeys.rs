//! A route's hot keys: the core `TopK` heavy-hitter sketch over one key of its requests
//! (`hot_keys: { key, top }`), for `GET /admin/hotkeys` and for limits that apply only to the
//! keys hot now (`hot_only: true`, Sentinel's hot-parameter limiting).
//!
//! One sketch per worker, each behind a lock only that worker takes on the request path (the
//! admin API merges them when asked): observing costs a hash lookup and a heap step, and no
//! cache line is shared between workers. A key's hotness is judged on the worker's own shard,
//! which sees that worker's share of the traffic — the same ranking, at the same rates divided
//! by the number of workers.

use crate::config::HotKeySettings;
use parking_lot::Mutex;
use serde::Serialize;
use spillway_core::hotkeys::TopK;
use spillway_core::Instant;
use std::collections::HashMap;

/// A route's hot-key sketches.
#[derive(Debug)]
pub struct RouteHotKeys {
    /// The settings they were built from.
    pub settings: HotKeySettings,
    shards: Box<[Mutex<TopK>]>,
}

/// One hot key as `/admin/hotkeys` shows it.
#[derive(Debug, Serialize)]
pub struct HotKeyView {
    /// The key (parts joined by `+`; bytes that are not UTF-8 replaced).
    pub key: String,
    /// Requests per second now (decayed), summed over workers.
    pub rate_per_sec: f64,
    /// The most the estimate may overcount (Space-Saving's error bound), summed over workers.
    pub error: f64,
}

impl RouteHotKeys {
    /// Sketches for `workers` workers (`None` if core refuses the settings, which validation
    /// already ruled out).
    pub fn new(settings: &HotKeySettings, workers: usize) -> Option<RouteHotKeys> {
        let shards = (0..workers.max(1))
            .map(|_| TopK::try_new(settings.core()).ok().map(Mutex::new))
            .collect::<Option<Box<[_]>>>()?;
        Some(RouteHotKeys { settings: settings.clone(), shards })
    }

    /// Whether these sketches fit `other` and `workers` (a reload keeps them).
    pub fn same(&self, other: &HotKeySettings, workers: usize) -> bool {
        self.settings == *other && self.shards.len() == workers.max(1)
    }

    fn shard(&self, worker: usize) -> &Mutex<TopK> {
        &self.shards[worker % self.shards.len()]
    }

    /// Counts one request with key bytes `key` on `worker`.
    #[inline]
    pub fn observe(&self, worker: usize, key: &[u8], now: Instant) {
        self.shard(worker).lock().observe(key, now);
    }

    /// Whether `key` is among the route's `top` keys now (on this worker's shard).
    #[inline]
    pub fn is_hot(&self, worker: usize, key: &[u8], now: Instant) -> bool {
        self.shard(worker).lock().is_hot(key, self.settings.top, now)
    }

    /// The `top` hottest keys over all workers, hottest first.
    pub fn top(&self, now: Instant) -> Vec<HotKeyView> {
        let mut merged: HashMap<Vec<u8>, (f64, f64)> = HashMap::new();
        for shard in self.shards.iter() {
            for hot in shard.lock().top(self.settings.top, now) {
                let entry = merged.entry(hot.key).or_default();
                entry.0 += hot.rate_per_sec;
                entry.1 += hot.error;
            }
        }
        let mut list: Vec<HotKeyView> = merged
            .into_iter()
            .map(|(key, (rate_per_sec, error))| HotKeyView {
                key: key
                    .split(|b| *b == 0)
                    .map(String::from_utf8_lossy)
                    .collect::<Vec<_>>()
                    .join("+"),
                rate_per_sec,
                error,
            })
            .collect();
        list.sort_by(|a, b| b.rate_per_sec.total_cmp(&a.rate_per_sec).then(a.key.cmp(&b.key)));
        list.truncate(self.settings.top);
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{KeyPart, LimitKey};
    use std::time::Duration;

    fn settings(top: usize) -> HotKeySettings {
        HotKeySettings {
            key: LimitKey { parts: vec![KeyPart::Path], text: "path".into() },
            top,
            capacity: 64,
            half_life: Duration::from_secs(10),
            min_rate: 0.0,
        }
    }

    #[test]
    fn the_hottest_keys_are_listed_across_workers() {
        let hot = RouteHotKeys::new(&settings(2), 2).expect("valid");
        let now = Instant::from_nanos(1_000_000_000);
        for i in 0..100 {
            hot.observe(i % 2, b"/a", now);
        }
        for i in 0..50 {
            hot.observe(i % 2, b"/b", now);
        }
        hot.observe(0, b"/c", now);
        let top = hot.top(now);
        assert_eq!(top.iter().map(|h| h.key.as_str()).collect::<Vec<_>>(), ["/a", "/b"]);
        assert!(hot.is_hot(0, b"/a", now) && hot.is_hot(1, b"/b", now));
        assert!(!hot.is_hot(0, b"/c", now), "top 2 only");
    }
}
