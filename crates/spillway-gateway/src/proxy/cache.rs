//! The micro-cache: a route's fresh GET answers kept for a short `ttl` (`cache:`), with
//! single-flight — concurrent misses of one key make one upstream call and share its answer.
//!
//! Why both: a hot key under a burst (a product page, a config endpoint) would otherwise send
//! every request upstream; a one-second cache absorbs the repeats, and single-flight absorbs
//! the stampede when the copy expires (N concurrent misses → 1 upstream request).
//!
//! The store is `proxy::stale::StaleCache` (byte-bounded LRU, refusing `no-store`, `private`,
//! `Set-Cookie`, `Vary: *`) with the ttl as its maximum age; the request path adds the other
//! rules (`Vary`, `no-cache`, `max-age=0`, requests with credentials). Only an answer that was
//! stored is shared with the waiting requests: an answer that may not be cached (a personal
//! one) is never handed to another client — they go upstream themselves.

use super::stale::{StaleCache, StaleHit, StaleKey, StoreOutcome};
use crate::config::CacheSettings;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use spillway_core::Instant;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::oneshot;

/// An answer shared with the requests that waited for it.
#[derive(Debug)]
pub struct SharedAnswer {
    /// Status.
    pub status: u16,
    /// Headers (as stored).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Body.
    pub body: Bytes,
}

type Waiters = Vec<oneshot::Sender<Option<Arc<SharedAnswer>>>>;

/// A route's micro-cache.
#[derive(Debug)]
pub struct RouteCache {
    /// Its settings.
    pub settings: CacheSettings,
    store: StaleCache,
    flights: parking_lot::Mutex<HashMap<String, Waiters>>,
    /// Answers served from the cache.
    pub hits: AtomicU64,
    /// Requests that went upstream (led a flight, or found none to join).
    pub misses: AtomicU64,
    /// Requests that waited for another's upstream answer and got it.
    pub coalesced: AtomicU64,
}

/// What a lookup found.
pub enum Lookup {
    /// A fresh copy.
    Hit(StaleHit),
    /// Another request is fetching this key: wait for its answer (`None`: go upstream).
    Wait(oneshot::Receiver<Option<Arc<SharedAnswer>>>),
    /// Fetch it: the flight tells the waiters how it went (dropped unfinished: "go upstream").
    Lead(Flight),
}

/// The leader's duty to the requests waiting for its answer.
#[derive(Debug)]
pub struct Flight {
    cache: Arc<RouteCache>,
    key: StaleKey,
    id: String,
    done: bool,
}

impl Flight {
    /// The key being fetched.
    pub fn key(&self) -> &StaleKey {
        &self.key
    }

    /// The route's cache.
    pub fn cache(&self) -> &Arc<RouteCache> {
        &self.cache
    }

    /// Stores the answer and, when it was stored, shares it with the waiters (otherwise they
    /// go upstream).
    pub fn finish(mut self, status: u16, headers: &HeaderMap, body: Bytes, now: Instant) {
        let stored = self.cache.store.store(&self.key, status, headers, body.clone(), now);
        let shared = matches!(stored, StoreOutcome::Stored).then(|| {
            Arc::new(SharedAnswer {
                status,
                // (Already without hop-by-hop fields: the request path strips them first.)
                headers: headers.iter().map(|(n, v)| (n.clone(), v.clone())).collect(),
                body,
            })
        });
        self.release(shared);
    }

    fn release(&mut self, answer: Option<Arc<SharedAnswer>>) {
        self.done = true;
        let waiters = self.cache.flights.lock().remove(&self.id).unwrap_or_default();
        for w in waiters {
            let _ = w.send(answer.clone());
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if !self.done {
            self.release(None);
        }
    }
}

fn flight_id(key: &StaleKey) -> String {
    format!("{}\u{0}{}", key.host(), key.path_and_query())
}

impl RouteCache {
    /// A cache for `settings`.
    pub fn new(settings: &CacheSettings) -> RouteCache {
        RouteCache {
            settings: settings.clone(),
            store: StaleCache::honouring_freshness(settings.max_bytes, settings.ttl),
            flights: parking_lot::Mutex::new(HashMap::new()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            coalesced: AtomicU64::new(0),
        }
    }

    /// The largest answer kept.
    pub fn max_entry_bytes(&self) -> u64 {
        self.store.max_entry_bytes()
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.store.stats().bytes
    }

    /// Looks `key` up at `now`: a fresh copy, a flight to join, or one to lead.
    pub fn lookup(self: &Arc<Self>, key: &StaleKey, now: Instant) -> Lookup {
        if let Some(hit) = self.store.lookup(key, now) {
            self.hits.fetch_add(1, Relaxed);
            return Lookup::Hit(hit);
        }
        let id = flight_id(key);
        let mut flights = self.flights.lock();
        if let Some(waiters) = flights.get_mut(&id) {
            let (tx, rx) = oneshot::channel();
            waiters.push(tx);
            return Lookup::Wait(rx);
        }
        // Looked again under the lock: a flight may have stored its answer and ended between
        // the first look and taking the lock (a leader stores before it releases).
        if let Some(hit) = self.store.lookup(key, now) {
            self.hits.fetch_add(1, Relaxed);
            return Lookup::Hit(hit);
        }
        flights.insert(id.clone(), Vec::new());
        self.misses.fetch_add(1, Relaxed);
        Lookup::Lead(Flight { cache: self.clone(), key: key.clone(), id, done: false })
    }
}

/// Whether a request may use the cache: no `Range`, and no credentials (`Authorization`,
/// `Cookie`) unless the route allows it.
pub fn request_cacheable(headers: &HeaderMap, settings: &CacheSettings) -> bool {
    !headers.contains_key(http::header::RANGE)
        && (settings.authorized
            || !(headers.contains_key(http::header::AUTHORIZATION)
                || headers.contains_key(http::header::COOKIE)))
}

/// Whether an answer may be kept (besides the store's own rules): a 2xx, no `Vary`, and no
/// `no-cache`, `must-revalidate` or `max-age=0` / `s-maxage=0`.
pub fn answer_cacheable(status: http::StatusCode, headers: &HeaderMap) -> bool {
    if !status.is_success() || headers.contains_key(http::header::VARY) {
        return false;
    }
    !headers.get_all(http::header::CACHE_CONTROL).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',').any(|d| {
                let d = d.trim().to_ascii_lowercase();
                d == "no-cache"
                    || d == "must-revalidate"
                    || d == "proxy-revalidate"
                    || d == "max-age=0"
                    || d == "s-maxage=0"
            })
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cache() -> Arc<RouteCache> {
        Arc::new(RouteCache::new(&CacheSettings {
            ttl: Duration::from_secs(1),
            max_bytes: 1 << 20,
            authorized: false,
            hot_only: false,
        }))
    }

    fn key(path: &str) -> StaleKey {
        StaleKey::for_request(&http::Method::GET, "h", path).expect("GET")
    }

    #[test]
    fn concurrent_misses_share_one_flight_and_its_stored_answer() {
        let c = cache();
        let now = Instant::from_nanos(1_000_000_000);
        let Lookup::Lead(flight) = c.lookup(&key("/a"), now) else { panic!("first leads") };
        let Lookup::Wait(mut rx) = c.lookup(&key("/a"), now) else { panic!("second waits") };
        flight.finish(200, &HeaderMap::new(), Bytes::from_static(b"x"), now);
        let shared = rx.try_recv().expect("answered").expect("stored and shared");
        assert_eq!(&shared.body[..], b"x");
        assert!(matches!(c.lookup(&key("/a"), now), Lookup::Hit(_)), "now a hit");
        // Past the ttl the copy is gone: a new flight.
        let later = now + Duration::from_millis(1500);
        assert!(matches!(c.lookup(&key("/a"), later), Lookup::Lead(_)));
    }

    #[test]
    fn an_answer_that_is_not_stored_is_never_shared() {
        let c = cache();
        let now = Instant::from_nanos(1_000_000_000);
        let Lookup::Lead(flight) = c.lookup(&key("/me"), now) else { panic!("leads") };
        let Lookup::Wait(mut rx) = c.lookup(&key("/me"), now) else { panic!("waits") };
        let mut headers = HeaderMap::new();
        headers.insert(http::header::SET_COOKIE, HeaderValue::from_static("s=1"));
        flight.finish(200, &headers, Bytes::from_static(b"mine"), now);
        assert!(rx.try_recv().expect("answered").is_none(), "waiters go upstream themselves");
    }

    #[test]
    fn a_leader_that_gives_up_releases_its_waiters() {
        let c = cache();
        let now = Instant::from_nanos(1_000_000_000);
        let Lookup::Lead(flight) = c.lookup(&key("/b"), now) else { panic!("leads") };
        let Lookup::Wait(mut rx) = c.lookup(&key("/b"), now) else { panic!("waits") };
        drop(flight);
        assert!(rx.try_recv().expect("answered").is_none());
        assert!(matches!(c.lookup(&key("/b"), now), Lookup::Lead(_)), "a new flight may start");
    }

    #[test]
    fn credentials_and_revalidation_keep_answers_out() {
        let s = CacheSettings {
            ttl: Duration::from_secs(1),
            max_bytes: 1024,
            authorized: false,
            hot_only: false,
        };
        let mut h = HeaderMap::new();
        assert!(request_cacheable(&h, &s));
        h.insert(http::header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        assert!(!request_cacheable(&h, &s));
        let mut a = HeaderMap::new();
        assert!(answer_cacheable(http::StatusCode::OK, &a));
        a.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=0"));
        assert!(!answer_cacheable(http::StatusCode::OK, &a));
        assert!(!answer_cacheable(http::StatusCode::NOT_FOUND, &HeaderMap::new()));
    }
}
