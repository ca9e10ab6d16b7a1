//! Serve stale on error: a route's bounded store of its last good GET answers
//! ([`StaleCache`]), and the body wrapper that copies an answer as it streams to the client
//! ([`CaptureBody`]).
//!
//! When the upstream fails (error, timeout, 5xx) or its breaker is open, an old copy is better
//! than an error: the gateway can answer it with `x-spillway-degraded: stale` and an `Age`
//! header. This module is only the store and the capture; it never reads the clock (callers
//! pass `now`), never does I/O, and decides nothing about when to serve a copy.
//!
//! A copy is always the latest successful answer for its key, or nothing: a newer answer that
//! may not be kept (private, too large, ...) removes the older copy instead of leaving it.

use super::headers::FieldKind;
use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method};
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;
use serde::Serialize;
use spillway_core::Instant;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

/// What an entry costs besides its body and header bytes (map slot, LRU slot, key).
pub const ENTRY_OVERHEAD_BYTES: u64 = 128;

/// Which stored answer a request would be served: method, host and path with query.
///
/// `HEAD` addresses the `GET` copy. The host is lower-cased and its port dropped; the path
/// and query are kept exactly (they are case-sensitive).
#[derive(Clone, Debug)]
pub struct StaleKey {
    id: KeyId,
    head: bool,
}

/// The part of a key the cache stores and compares in full, so that two requests whose
/// hashes collide never share an entry. `host_len` keeps `("ab", "/c")` and `("a", "b/c")`
/// apart.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct KeyId {
    text: Arc<str>,
    host_len: usize,
}

impl StaleKey {
    /// The key of a request, or `None` for methods other than `GET` and `HEAD`.
    pub fn for_request(method: &Method, host: &str, path_and_query: &str) -> Option<StaleKey> {
        let head = if method == Method::GET {
            false
        } else if method == Method::HEAD {
            true
        } else {
            return None;
        };
        let host = strip_port(host);
        let mut text = String::with_capacity(host.len() + path_and_query.len());
        text.push_str(host);
        text.make_ascii_lowercase();
        text.push_str(path_and_query);
        Some(StaleKey { id: KeyId { text: text.into(), host_len: host.len() }, head })
    }

    /// The normalised host (lower case, no port).
    pub fn host(&self) -> &str {
        self.id.text.get(..self.id.host_len).unwrap_or_default()
    }

    /// The path and query, as given.
    pub fn path_and_query(&self) -> &str {
        self.id.text.get(self.id.host_len..).unwrap_or_default()
    }

    /// Whether the key came from a `HEAD` request (which reads, but never stores, a copy).
    pub fn is_head(&self) -> bool {
        self.head
    }
}

/// `host` without a trailing `:port`; an IPv6 literal keeps its brackets.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(colon) => &host[..colon],
        None => host,
    }
}

/// A stored answer, as [`StaleCache::lookup`] hands it out.
#[derive(Clone, Debug, PartialEq)]
pub struct StaleHit {
    /// The stored status (2xx).
    pub status: u16,
    /// The stored headers, without hop-by-hop fields, `Date`, `Age` and `Set-Cookie`.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The stored body; empty for a `HEAD` key (the headers still say the `GET` length).
    pub body: Bytes,
    /// How long ago the copy was stored.
    pub age: Duration,
}

impl StaleHit {
    /// The `Age` header value: whole seconds since the copy was stored (RFC 9111 §5.1).
    pub fn age_header_value(&self) -> HeaderValue {
        HeaderValue::from(self.age.as_secs())
    }
}

/// Why an answer was refused: the copy it would replace is removed as well.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `Cache-Control: no-store`.
    NoStore,
    /// `Cache-Control: private`: meant for one user, never for a shared copy.
    Private,
    /// `Set-Cookie`: meant for one user.
    SetCookie,
    /// `Vary: *`: the answer depends on more than the key can say.
    VaryStar,
}

/// What [`StaleCache::store`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOutcome {
    /// The answer is now the copy for its key.
    Stored,
    /// Not a 2xx (or a 206, which is only part of the body): ignored, an older copy is kept.
    Uncacheable,
    /// A `HEAD` key: its answer has no body, so it must not replace the `GET` copy. Ignored.
    Head,
    /// Refused, and an older copy removed.
    Refused(Refusal),
    /// Costs more than [`StaleCache::max_entry_bytes`]: not stored, an older copy removed.
    TooLarge,
}

/// Counters of a [`StaleCache`], for the admin API and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StaleStats {
    /// Entries held now (expired ones included until they are found or evicted).
    pub entries: u64,
    /// Bytes held now, as entries are costed (body + headers + [`ENTRY_OVERHEAD_BYTES`]).
    pub bytes: u64,
    /// Lookups that found a copy young enough.
    pub hits: u64,
    /// Lookups that found none, or only an expired one.
    pub misses: u64,
    /// Answers stored.
    pub stored: u64,
    /// Entries evicted (least recently stored or used) to stay within the byte budget.
    pub evicted: u64,
}

/// One route's last good answers to `GET`, bounded in bytes, for serving when the upstream
/// fails.
///
/// Shared by the worker threads (`Send + Sync`): one short lock per lookup or store, during
/// which nothing is copied but reference counts. When the bytes exceed the budget, the least
/// recently stored or used entries go first. Entries older than `max_age` are not served and
/// are dropped when found.
///
/// ```
/// use spillway_core::Instant;
/// use spillway_gateway::proxy::stale::{StaleCache, StaleKey};
/// use std::time::Duration;
///
/// let cache = StaleCache::new(1 << 20, Duration::from_secs(300));
/// let key = StaleKey::for_request(&http::Method::GET, "Example.com:8080", "/a?b=1").unwrap();
/// let stored = Instant::from_nanos(1_000_000_000);
/// cache.store(&key, 200, &http::HeaderMap::new(), "hello".into(), stored);
///
/// let later = Instant::from_nanos(61_000_000_000);
/// let hit = cache.lookup(&key, later).unwrap();
/// assert_eq!(hit.body, "hello");
/// assert_eq!(hit.age_header_value(), "60");
/// ```
#[derive(Debug)]
pub struct StaleCache {
    max_bytes: u64,
    max_age: Duration,
    /// Whether an answer's own freshness (`s-maxage`, `max-age`, less its `Age`) may shorten
    /// `max_age` for its copy: yes for the micro-cache, no for stale copies (which are served
    /// precisely when they are no longer fresh).
    honours_freshness: bool,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Entry {
    status: u16,
    headers: Arc<[(HeaderName, HeaderValue)]>,
    body: Bytes,
    stored_at: Instant,
    /// How long this copy may be served: the cache's `max_age`, or less.
    max_age: Duration,
    cost: u64,
    /// This entry's place in `Inner::lru`.
    tick: u64,
}

/// The map and its recency order; every entry is in both.
#[derive(Debug, Default)]
struct Inner {
    map: HashMap<KeyId, Entry>,
    /// Oldest use first: tick of the last store or hit → key.
    lru: BTreeMap<u64, KeyId>,
    next_tick: u64,
    stats: StaleStats,
}

impl Inner {
    fn tick(&mut self) -> u64 {
        self.next_tick += 1;
        self.next_tick
    }

    fn remove(&mut self, id: &KeyId) {
        if let Some(old) = self.map.remove(id) {
            self.lru.remove(&old.tick);
            self.stats.bytes -= old.cost;
        }
    }

    fn insert(&mut self, id: KeyId, mut entry: Entry) {
        self.remove(&id);
        entry.tick = self.tick();
        self.stats.bytes += entry.cost;
        self.lru.insert(entry.tick, id.clone());
        self.map.insert(id, entry);
    }

    /// Moves `id` to the young end of the LRU order.
    fn touch(&mut self, id: &KeyId) {
        let tick = self.tick();
        if let Some(entry) = self.map.get_mut(id) {
            if let Some(id) = self.lru.remove(&entry.tick) {
                self.lru.insert(tick, id);
            }
            entry.tick = tick;
        }
    }

    fn evict_to(&mut self, max_bytes: u64) {
        while self.stats.bytes > max_bytes {
            let Some((_, id)) = self.lru.pop_first() else { break };
            if let Some(old) = self.map.remove(&id) {
                self.stats.bytes -= old.cost;
                self.stats.evicted += 1;
            }
        }
    }
}

impl StaleCache {
    /// A cache holding at most `max_bytes` (costed as body + headers + a fixed overhead per
    /// entry) and serving copies up to `max_age` old. One entry may use at most an eighth of
    /// the budget, so that one large answer cannot flush the others.
    pub fn new(max_bytes: u64, max_age: Duration) -> StaleCache {
        StaleCache {
            max_bytes,
            max_age,
            honours_freshness: false,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Like [`new`](Self::new), but a copy is served no longer than its answer says it stays
    /// fresh: `s-maxage` (or else `max-age`) less the answer's `Age`, when that is shorter
    /// than `max_age` (RFC 9111 §4.2.1: a shared cache prefers `s-maxage`). An answer already
    /// stale on arrival is not kept.
    pub fn honouring_freshness(max_bytes: u64, max_age: Duration) -> StaleCache {
        StaleCache { honours_freshness: true, ..StaleCache::new(max_bytes, max_age) }
    }

    /// The most one entry may cost; a capture limit for its body (see [`CaptureBody`]).
    pub fn max_entry_bytes(&self) -> u64 {
        self.max_bytes / 8
    }

    /// Keeps a successful answer as the copy for `key`, received at `now`.
    ///
    /// Only 2xx answers (but 206) are kept. Answers marked `Cache-Control: no-store` or
    /// `private`, with `Set-Cookie` or with `Vary: *`, and answers costing more than
    /// [`max_entry_bytes`](Self::max_entry_bytes), are not kept and remove the older copy.
    /// Hop-by-hop headers, `Date`, `Age` and `Set-Cookie` are dropped. The body is costed by
    /// its length, so it should own its memory (as [`CaptureBody`]'s does) rather than be a
    /// slice of a larger buffer.
    pub fn store(
        &self,
        key: &StaleKey,
        status: u16,
        headers: &HeaderMap,
        body: Bytes,
        now: Instant,
    ) -> StoreOutcome {
        if key.head {
            return StoreOutcome::Head;
        }
        if !(200..300).contains(&status) || status == 206 {
            return StoreOutcome::Uncacheable;
        }
        if let Some(refusal) = refusal(headers) {
            self.inner.lock().remove(&key.id);
            return StoreOutcome::Refused(refusal);
        }
        let kept = kept_headers(headers);
        let header_bytes: u64 =
            kept.iter().map(|(n, v)| (n.as_str().len() + v.as_bytes().len()) as u64).sum();
        let cost = ENTRY_OVERHEAD_BYTES + header_bytes + body.len() as u64;
        if cost > self.max_entry_bytes() {
            self.inner.lock().remove(&key.id);
            return StoreOutcome::TooLarge;
        }
        let max_age = match self.honours_freshness.then(|| freshness_left(headers)).flatten() {
            Some(left) if left.is_zero() => {
                self.inner.lock().remove(&key.id);
                return StoreOutcome::Uncacheable;
            }
            Some(left) => left.min(self.max_age),
            None => self.max_age,
        };
        let entry =
            Entry { status, headers: kept.into(), body, stored_at: now, max_age, cost, tick: 0 };
        let mut inner = self.inner.lock();
        inner.insert(key.id.clone(), entry);
        inner.stats.stored += 1;
        inner.evict_to(self.max_bytes);
        StoreOutcome::Stored
    }

    /// The copy for `key` if there is one no older than `max_age` at `now`; an older one is
    /// dropped. A hit counts as a use for the LRU order.
    pub fn lookup(&self, key: &StaleKey, now: Instant) -> Option<StaleHit> {
        let mut inner = self.inner.lock();
        let Some(entry) = inner.map.get(&key.id) else {
            inner.stats.misses += 1;
            return None;
        };
        let age = now.saturating_duration_since(entry.stored_at);
        if age > entry.max_age {
            inner.remove(&key.id);
            inner.stats.misses += 1;
            return None;
        }
        let status = entry.status;
        let headers = Arc::clone(&entry.headers);
        let body = if key.head { Bytes::new() } else { entry.body.clone() };
        inner.touch(&key.id);
        inner.stats.hits += 1;
        drop(inner);
        Some(StaleHit { status, headers: headers.to_vec(), body, age })
    }

    /// The counters and current size.
    pub fn stats(&self) -> StaleStats {
        let inner = self.inner.lock();
        StaleStats { entries: inner.map.len() as u64, ..inner.stats }
    }
}

/// Why `headers` must not be kept, if they say so.
/// How much longer an answer stays fresh by its own headers: `s-maxage` (or else `max-age`)
/// seconds less its `Age`; `None` when it names neither (or only malformed values).
fn freshness_left(headers: &HeaderMap) -> Option<Duration> {
    let mut max_age = None;
    let mut s_maxage = None;
    for value in headers.get_all(header::CACHE_CONTROL) {
        for directive in value.as_bytes().split(|b| *b == b',') {
            let mut parts = directive.splitn(2, |b| *b == b'=');
            let name = parts.next().unwrap_or_default().trim_ascii();
            let Some(seconds) = parts.next().and_then(delta_seconds) else { continue };
            if name.eq_ignore_ascii_case(b"s-maxage") {
                s_maxage = Some(seconds);
            } else if name.eq_ignore_ascii_case(b"max-age") {
                max_age = Some(seconds);
            }
        }
    }
    let lifetime = s_maxage.or(max_age)?;
    let age = headers.get(header::AGE).and_then(|v| delta_seconds(v.as_bytes())).unwrap_or(0);
    Some(Duration::from_secs(lifetime.saturating_sub(age)))
}

/// A `delta-seconds` value (RFC 9111 §1.2.2), optionally quoted; too large saturates.
fn delta_seconds(raw: &[u8]) -> Option<u64> {
    let raw = raw.trim_ascii();
    let raw = raw.strip_prefix(b"\"").and_then(|r| r.strip_suffix(b"\"")).unwrap_or(raw);
    if raw.is_empty() || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(raw.iter().fold(0u64, |n, d| n.saturating_mul(10).saturating_add(u64::from(d - b'0'))))
}

fn refusal(headers: &HeaderMap) -> Option<Refusal> {
    if headers.contains_key(header::SET_COOKIE) {
        return Some(Refusal::SetCookie);
    }
    for value in headers.get_all(header::CACHE_CONTROL) {
        for directive in value.as_bytes().split(|b| *b == b',') {
            let name = directive.split(|b| *b == b'=').next().unwrap_or_default().trim_ascii();
            if name.eq_ignore_ascii_case(b"no-store") {
                return Some(Refusal::NoStore);
            }
            if name.eq_ignore_ascii_case(b"private") {
                return Some(Refusal::Private);
            }
        }
    }
    for value in headers.get_all(header::VARY) {
        if value.as_bytes().split(|b| *b == b',').any(|v| v.trim_ascii() == b"*") {
            return Some(Refusal::VaryStar);
        }
    }
    None
}

/// The end-to-end headers worth replaying: not hop-by-hop (RFC 9110 §7.6.1, including those
/// named in `Connection` and any `proxy-*`), not `Date` or `Age` (the copy gets fresh ones)
/// and not `Set-Cookie`.
fn kept_headers(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    let named_in_connection = |name: &HeaderName| {
        headers.get_all(header::CONNECTION).iter().any(|v| {
            v.as_bytes()
                .split(|b| *b == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(name.as_str().as_bytes()))
        })
    };
    headers
        .iter()
        .filter(|(name, _)| {
            let kind = FieldKind::of(name.as_str().as_bytes());
            !(kind.is_hop_by_hop()
                || matches!(kind, FieldKind::TransferEncoding | FieldKind::Date)
                || *name == header::AGE
                || *name == header::SET_COOKIE
                || name.as_str().starts_with("proxy-")
                || named_in_connection(name))
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// What [`CaptureBody`] calls with the whole body once the body has ended cleanly.
pub type OnComplete = Box<dyn FnOnce(Bytes) + Send>;

/// A response body that streams through unchanged while a copy of its data is kept, up to a
/// limit, and handed to a completion once the body has ended cleanly.
///
/// The end is seen either when the inner body returns `None` or when it reports
/// [`is_end_stream`](Body::is_end_stream) after a frame (hyper stops polling a body at that
/// point, so waiting for `None` would miss most bodies with a known length); an empty body
/// completes at once. On an error, past the limit, or when dropped before the end, the
/// completion is never called. Trailers pass through and are not kept.
///
/// The inner body must be `Unpin`; wrap another in `Pin<Box<_>>`, which is.
pub struct CaptureBody<B> {
    inner: B,
    /// `None` once completed or abandoned.
    capture: Option<Capture>,
}

struct Capture {
    chunks: Vec<Bytes>,
    len: u64,
    limit: u64,
    on_complete: OnComplete,
}

impl<B: Body<Data = Bytes> + Unpin> CaptureBody<B> {
    /// Wraps `inner`, keeping at most `limit` bytes of data for `on_complete`.
    ///
    /// `on_complete` runs inside `poll_frame` on the thread serving the body, so it should be
    /// quick (storing into a [`StaleCache`] is).
    pub fn new(inner: B, limit: u64, on_complete: impl FnOnce(Bytes) + Send + 'static) -> Self {
        let mut body = CaptureBody { inner, capture: None };
        if body.inner.size_hint().lower() > limit {
            return body;
        }
        body.capture =
            Some(Capture { chunks: Vec::new(), len: 0, limit, on_complete: Box::new(on_complete) });
        if body.inner.is_end_stream() {
            body.complete();
        }
        body
    }

    /// Hands the copy over, in one buffer of exactly its length (the frames may be slices of
    /// larger read buffers, which a long-lived copy must not keep alive).
    fn complete(&mut self) {
        if let Some(capture) = self.capture.take() {
            let mut whole = Vec::with_capacity(capture.len as usize);
            for chunk in &capture.chunks {
                whole.extend_from_slice(chunk);
            }
            (capture.on_complete)(Bytes::from(whole));
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for CaptureBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &polled {
            Some(Ok(frame)) => {
                if let (Some(data), Some(capture)) = (frame.data_ref(), &mut this.capture) {
                    capture.len += data.len() as u64;
                    if capture.len > capture.limit {
                        this.capture = None;
                    } else if !data.is_empty() {
                        capture.chunks.push(data.clone());
                    }
                }
                if this.inner.is_end_stream() {
                    this.complete();
                }
            }
            Some(Err(_)) => this.capture = None,
            None => this.complete(),
        }
        Poll::Ready(polled)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: fmt::Debug> fmt::Debug for CaptureBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaptureBody")
            .field("inner", &self.inner)
            .field("captured", &self.capture.as_ref().map(|c| c.len))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Empty, Full};
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use std::task::Waker;

    fn at_secs(s: u64) -> Instant {
        Instant::from_nanos(s * 1_000_000_000)
    }

    fn get(host: &str, path: &str) -> StaleKey {
        StaleKey::for_request(&Method::GET, host, path).unwrap()
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    fn cache() -> StaleCache {
        StaleCache::new(64 * 1024, Duration::from_secs(60))
    }

    #[test]
    fn stored_answer_comes_back_with_its_age() {
        let c = cache();
        let k = get("example.com", "/a?x=1");
        let h = headers(&[("content-type", "text/plain"), ("etag", "\"v1\"")]);
        assert_eq!(c.store(&k, 200, &h, Bytes::from("hello"), at_secs(10)), StoreOutcome::Stored);

        let hit = c.lookup(&k, at_secs(13)).unwrap();
        assert_eq!(hit.status, 200);
        assert_eq!(hit.body, "hello");
        assert_eq!(hit.age, Duration::from_secs(3));
        assert_eq!(hit.age_header_value(), "3");
        assert_eq!(hit.headers.len(), 2);
        assert!(hit.headers.contains(&(header::ETAG, HeaderValue::from_static("\"v1\""))));
        let s = c.stats();
        assert_eq!((s.entries, s.hits, s.misses, s.stored), (1, 1, 0, 1));
    }

    #[test]
    fn a_newer_answer_replaces_the_copy() {
        let c = cache();
        let k = get("example.com", "/");
        c.store(&k, 200, &HeaderMap::new(), Bytes::from("v1"), at_secs(1));
        c.store(&k, 200, &HeaderMap::new(), Bytes::from("v2"), at_secs(2));
        assert_eq!(c.lookup(&k, at_secs(2)).unwrap().body, "v2");
        assert_eq!(c.stats().entries, 1);
        assert_eq!(c.stats().bytes, ENTRY_OVERHEAD_BYTES + 2);
    }

    #[test]
    fn host_is_lower_cased_and_port_stripped_but_path_is_exact() {
        let c = cache();
        c.store(&get("Example.COM:8080", "/A"), 200, &HeaderMap::new(), "x".into(), at_secs(0));
        assert!(c.lookup(&get("example.com", "/A"), at_secs(0)).is_some());
        assert!(c.lookup(&get("example.com", "/a"), at_secs(0)).is_none());
        let v6 = get("[::1]:443", "/");
        assert_eq!(v6.host(), "[::1]");
        assert_eq!(v6.path_and_query(), "/");
    }

    #[test]
    fn keys_that_concatenate_alike_are_distinct() {
        let c = cache();
        c.store(&get("ab", "/c"), 200, &HeaderMap::new(), "one".into(), at_secs(0));
        assert!(c.lookup(&get("a", "b/c"), at_secs(0)).is_none());
        assert_eq!(c.lookup(&get("ab", "/c"), at_secs(0)).unwrap().body, "one");
    }

    #[test]
    fn only_get_and_head_have_keys() {
        assert!(StaleKey::for_request(&Method::POST, "h", "/").is_none());
        assert!(StaleKey::for_request(&Method::PUT, "h", "/").is_none());
        assert!(!get("h", "/").is_head());
        assert!(StaleKey::for_request(&Method::HEAD, "h", "/").unwrap().is_head());
    }

    #[test]
    fn head_finds_the_get_copy_without_its_body_and_never_stores() {
        let c = cache();
        let head = StaleKey::for_request(&Method::HEAD, "h", "/").unwrap();
        let h = headers(&[("content-length", "5")]);
        assert_eq!(c.store(&head, 200, &h, Bytes::new(), at_secs(0)), StoreOutcome::Head);
        assert!(c.lookup(&head, at_secs(0)).is_none());

        c.store(&get("h", "/"), 200, &h, "hello".into(), at_secs(0));
        let hit = c.lookup(&head, at_secs(1)).unwrap();
        assert_eq!(hit.status, 200);
        assert!(hit.body.is_empty());
        assert!(hit.headers.contains(&(header::CONTENT_LENGTH, HeaderValue::from_static("5"))));
        // The HEAD did not clobber the GET copy.
        assert_eq!(c.lookup(&get("h", "/"), at_secs(1)).unwrap().body, "hello");
    }

    #[test]
    fn only_2xx_but_206_are_stored_and_failures_keep_the_copy() {
        let c = cache();
        let k = get("h", "/");
        c.store(&k, 200, &HeaderMap::new(), "good".into(), at_secs(0));
        for status in [206, 304, 404, 500, 503] {
            assert_eq!(
                c.store(&k, status, &HeaderMap::new(), "bad".into(), at_secs(1)),
                StoreOutcome::Uncacheable,
                "{status}"
            );
        }
        assert_eq!(c.lookup(&k, at_secs(1)).unwrap().body, "good");
        assert_eq!(
            c.store(&k, 204, &HeaderMap::new(), Bytes::new(), at_secs(2)),
            StoreOutcome::Stored
        );
        assert_eq!(c.lookup(&k, at_secs(2)).unwrap().status, 204);
    }

    #[test]
    fn personal_or_unstorable_answers_are_refused_and_remove_the_older_copy() {
        let cases: [(&[(&str, &str)], Refusal); 6] = [
            (&[("cache-control", "max-age=60, no-store")], Refusal::NoStore),
            (&[("cache-control", "public"), ("cache-control", "No-Store")], Refusal::NoStore),
            (&[("cache-control", "private")], Refusal::Private),
            (&[("cache-control", "private=\"x-user\"")], Refusal::Private),
            (&[("set-cookie", "session=1")], Refusal::SetCookie),
            (&[("vary", "accept-encoding, *")], Refusal::VaryStar),
        ];
        for (pairs, reason) in cases {
            let c = cache();
            let k = get("h", "/");
            c.store(&k, 200, &HeaderMap::new(), "old".into(), at_secs(0));
            let h = headers(pairs);
            assert_eq!(
                c.store(&k, 200, &h, "new".into(), at_secs(1)),
                StoreOutcome::Refused(reason)
            );
            assert!(c.lookup(&k, at_secs(1)).is_none(), "{pairs:?}");
            assert_eq!(c.stats().bytes, 0);
        }
    }

    #[test]
    fn cacheable_directives_and_ordinary_vary_are_stored() {
        let c = cache();
        let k = get("h", "/");
        let h = headers(&[("cache-control", "public, max-age=10"), ("vary", "accept-encoding")]);
        assert_eq!(c.store(&k, 200, &h, "x".into(), at_secs(0)), StoreOutcome::Stored);
    }

    #[test]
    fn a_fresh_copy_lives_no_longer_than_its_answer_says() {
        let c = StaleCache::honouring_freshness(64 * 1024, Duration::from_secs(10));
        let served_until = |pairs: &[(&'static str, &'static str)]| {
            let k = get("h", "/f");
            if c.store(&k, 200, &headers(pairs), "x".into(), at_secs(100)) != StoreOutcome::Stored {
                return None;
            }
            (0..=20).take_while(|s| c.lookup(&k, at_secs(100 + s)).is_some()).last()
        };
        assert_eq!(served_until(&[]), Some(10), "no directive: the cache's own max age");
        assert_eq!(served_until(&[("cache-control", "max-age=2")]), Some(2));
        assert_eq!(served_until(&[("cache-control", "max-age=60")]), Some(10), "capped");
        assert_eq!(
            served_until(&[("cache-control", "max-age=5, s-maxage=1")]),
            Some(1),
            "a shared cache prefers s-maxage"
        );
        assert_eq!(served_until(&[("cache-control", "max-age=5"), ("age", "3")]), Some(2));
        assert_eq!(served_until(&[("cache-control", "max-age=\"4\"")]), Some(4), "quoted");
        assert_eq!(served_until(&[("cache-control", "max-age=soon")]), Some(10), "malformed");
        assert_eq!(
            served_until(&[("cache-control", "max-age=1"), ("age", "5")]),
            None,
            "already stale on arrival: not kept"
        );
        // Stale copies ignore the answer's freshness: they serve past it by design.
        let stale = StaleCache::new(64 * 1024, Duration::from_secs(10));
        let k = get("h", "/s");
        let h = headers(&[("cache-control", "max-age=1")]);
        assert_eq!(stale.store(&k, 200, &h, "x".into(), at_secs(0)), StoreOutcome::Stored);
        assert!(stale.lookup(&k, at_secs(9)).is_some());
    }

    #[test]
    fn hop_by_hop_date_and_age_headers_are_not_kept() {
        let c = cache();
        let k = get("h", "/");
        let h = headers(&[
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("upgrade", "h2c"),
            ("proxy-authenticate", "Basic"),
            ("date", "Mon, 01 Jan 2024 00:00:00 GMT"),
            ("age", "30"),
            ("content-type", "text/html"),
            ("etag", "\"e\""),
        ]);
        c.store(&k, 200, &h, "x".into(), at_secs(0));
        let hit = c.lookup(&k, at_secs(0)).unwrap();
        let names: Vec<&str> = hit.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "etag"]);
        // Names and values of the kept headers: 12 + 9 + 4 + 3; the body: 1.
        assert_eq!(c.stats().bytes, ENTRY_OVERHEAD_BYTES + 28 + 1);
    }

    #[test]
    fn copies_older_than_max_age_are_not_served_and_are_dropped() {
        let c = StaleCache::new(64 * 1024, Duration::from_secs(60));
        let k = get("h", "/");
        c.store(&k, 200, &HeaderMap::new(), "x".into(), at_secs(100));
        assert!(c.lookup(&k, at_secs(160)).is_some(), "exactly max_age old is still served");
        assert!(c.lookup(&k, Instant::from_nanos(160_000_000_001)).is_none());
        let s = c.stats();
        assert_eq!((s.entries, s.bytes, s.hits, s.misses), (0, 0, 1, 1));
        // A clock that reads earlier than the store (another thread's `now`) gives age zero.
        c.store(&k, 200, &HeaderMap::new(), "x".into(), at_secs(200));
        assert_eq!(c.lookup(&k, at_secs(199)).unwrap().age, Duration::ZERO);
    }

    #[test]
    fn entries_larger_than_an_eighth_of_the_budget_are_not_stored() {
        let c = StaleCache::new(8 * 1024, Duration::from_secs(60));
        assert_eq!(c.max_entry_bytes(), 1024);
        let k = get("h", "/");
        let fits = Bytes::from(vec![b'a'; (1024 - ENTRY_OVERHEAD_BYTES) as usize]);
        assert_eq!(c.store(&k, 200, &HeaderMap::new(), fits, at_secs(0)), StoreOutcome::Stored);
        let too_big = Bytes::from(vec![b'a'; (1024 - ENTRY_OVERHEAD_BYTES + 1) as usize]);
        assert_eq!(
            c.store(&k, 200, &HeaderMap::new(), too_big, at_secs(1)),
            StoreOutcome::TooLarge
        );
        assert!(c.lookup(&k, at_secs(1)).is_none(), "the superseded copy is gone too");
        assert_eq!(c.stats().bytes, 0);
    }

    #[test]
    fn least_recently_used_entry_is_evicted_first() {
        // Each entry costs 128 + 128 = 256, the most one may cost: eight fill the budget.
        let c = StaleCache::new(8 * 256, Duration::from_secs(60));
        let body = Bytes::from(vec![0u8; 128]);
        let keys: Vec<StaleKey> = (0..9).map(|i| get("h", &format!("/{i}"))).collect();
        for k in &keys[..8] {
            let stored = c.store(k, 200, &HeaderMap::new(), body.clone(), at_secs(0));
            assert_eq!(stored, StoreOutcome::Stored);
        }
        assert_eq!(c.stats().bytes, 8 * 256);
        assert_eq!(c.stats().evicted, 0);
        // /0 is used, so /1 is now the least recently used.
        assert!(c.lookup(&keys[0], at_secs(1)).is_some());
        c.store(&keys[8], 200, &HeaderMap::new(), body, at_secs(1));
        assert!(c.lookup(&keys[1], at_secs(1)).is_none());
        for (i, k) in keys.iter().enumerate().filter(|(i, _)| *i != 1) {
            assert!(c.lookup(k, at_secs(1)).is_some(), "/{i}");
        }
        let s = c.stats();
        assert_eq!((s.entries, s.bytes, s.evicted), (8, 8 * 256, 1));
    }

    #[test]
    fn cache_is_shared_by_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<StaleCache>();
    }

    #[test]
    fn stats_serialize_for_the_admin_api() {
        let json = serde_json::to_value(cache().stats()).unwrap();
        for field in ["entries", "bytes", "hits", "misses", "stored", "evicted"] {
            assert_eq!(json[field], 0, "{field}");
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Store { key: usize, len: usize, refuse: bool },
        Lookup { key: usize },
        Advance { secs: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..8usize, 0..700usize, prop::bool::weighted(0.1))
                .prop_map(|(key, len, refuse)| Op::Store { key, len, refuse }),
            (0..8usize).prop_map(|key| Op::Lookup { key }),
            (0..30u64).prop_map(|secs| Op::Advance { secs }),
        ]
    }

    proptest! {
        /// Against a model of "the last answer stored per key": the bytes never exceed the
        /// budget, and a lookup returns either nothing or exactly that key's latest answer
        /// with its true age — never another key's body, never a superseded or expired one.
        #[test]
        fn bytes_stay_within_budget_and_lookups_return_only_their_own_latest_copy(
            ops in prop::collection::vec(op(), 1..200),
        ) {
            let max_age = Duration::from_secs(60);
            let c = StaleCache::new(4096, max_age);
            let mut model: HashMap<usize, (Bytes, Instant)> = HashMap::new();
            let mut now = at_secs(1);
            let mut seq = 0u64;
            for op in ops {
                match op {
                    Op::Store { key, len, refuse } => {
                        seq += 1;
                        // The body names its key and its store, then pads to `len`.
                        let mut body = format!("{key}:{seq}:").into_bytes();
                        body.resize(body.len().max(len), b'.');
                        let body = Bytes::from(body);
                        let h = if refuse {
                            headers(&[("set-cookie", "a=b")])
                        } else {
                            headers(&[("content-type", "text/plain")])
                        };
                        let cost = ENTRY_OVERHEAD_BYTES + 22 + body.len() as u64;
                        let outcome = c.store(&get("h", &format!("/{key}")), 200, &h, body.clone(), now);
                        if refuse {
                            prop_assert_eq!(outcome, StoreOutcome::Refused(Refusal::SetCookie));
                            model.remove(&key);
                        } else if cost > c.max_entry_bytes() {
                            prop_assert_eq!(outcome, StoreOutcome::TooLarge);
                            model.remove(&key);
                        } else {
                            prop_assert_eq!(outcome, StoreOutcome::Stored);
                            model.insert(key, (body, now));
                        }
                    }
                    Op::Lookup { key } => {
                        let hit = c.lookup(&get("h", &format!("/{key}")), now);
                        match (hit, model.get(&key)) {
                            (None, _) => {}
                            (Some(hit), Some((body, at))) => {
                                prop_assert_eq!(&hit.body, body);
                                prop_assert_eq!(hit.age, now.saturating_duration_since(*at));
                                prop_assert!(hit.age <= max_age);
                            }
                            (Some(hit), None) => {
                                prop_assert!(false, "/{} returned {:?} with nothing stored", key, hit.body);
                            }
                        }
                    }
                    Op::Advance { secs } => now += Duration::from_secs(secs),
                }
                let s = c.stats();
                prop_assert!(s.bytes <= 4096, "{} bytes", s.bytes);
                prop_assert!(s.entries <= model.len() as u64);
            }
        }
    }

    /// A body of scripted frames; `is_end_stream` stays false, so its end is seen as `None`.
    struct Frames(VecDeque<Result<Frame<Bytes>, &'static str>>);

    impl Frames {
        fn data(chunks: &[&'static str]) -> Frames {
            Frames(chunks.iter().map(|c| Ok(Frame::data(Bytes::from(*c)))).collect())
        }

        fn then(mut self, frame: Result<Frame<Bytes>, &'static str>) -> Frames {
            self.0.push_back(frame);
            self
        }
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = &'static str;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, &'static str>>> {
            Poll::Ready(self.get_mut().0.pop_front())
        }
    }

    /// A completion that records every call.
    fn recorder() -> (Arc<Mutex<Vec<Bytes>>>, impl FnOnce(Bytes) + Send + 'static) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&calls);
        (calls, move |body| sink.lock().push(body))
    }

    type Polled<B> = Poll<Option<Result<Frame<<B as Body>::Data>, <B as Body>::Error>>>;

    fn poll_once<B: Body + Unpin>(body: &mut B) -> Polled<B> {
        Pin::new(body).poll_frame(&mut Context::from_waker(Waker::noop()))
    }

    #[tokio::test]
    async fn capture_passes_frames_through_and_completes_once_with_the_whole_body() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let inner =
            Frames::data(&["hel", "", "lo ", "world"]).then(Ok(Frame::trailers(trailers.clone())));
        let (calls, on_complete) = recorder();
        let collected = CaptureBody::new(inner, 1024, on_complete).collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(collected.to_bytes(), "hello world");
        assert_eq!(*calls.lock(), [Bytes::from("hello world")]);
    }

    #[test]
    fn capture_completes_once_even_when_polled_past_the_end() {
        let (calls, on_complete) = recorder();
        let mut body = CaptureBody::new(Frames::data(&["a"]), 1024, on_complete);
        assert!(matches!(poll_once(&mut body), Poll::Ready(Some(Ok(_)))));
        assert!(calls.lock().is_empty(), "not complete before the end is seen");
        assert!(matches!(poll_once(&mut body), Poll::Ready(None)));
        assert!(matches!(poll_once(&mut body), Poll::Ready(None)));
        assert_eq!(calls.lock().len(), 1);
    }

    #[tokio::test]
    async fn capture_does_not_complete_when_the_body_errors() {
        let inner = Frames::data(&["part"]).then(Err("upstream reset"));
        let (calls, on_complete) = recorder();
        let err = CaptureBody::new(inner, 1024, on_complete).collect().await.unwrap_err();
        assert_eq!(err, "upstream reset");
        assert!(calls.lock().is_empty());
    }

    #[tokio::test]
    async fn capture_past_the_limit_streams_on_but_does_not_complete() {
        let (calls, on_complete) = recorder();
        let body = CaptureBody::new(Frames::data(&["12345", "6"]), 5, on_complete);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "123456");
        assert!(calls.lock().is_empty());

        let (calls, on_complete) = recorder();
        let body = CaptureBody::new(Frames::data(&["123", "45"]), 5, on_complete);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "12345");
        assert_eq!(*calls.lock(), [Bytes::from("12345")], "exactly the limit is kept");
    }

    #[test]
    fn capture_of_a_body_known_larger_than_the_limit_gives_up_at_once() {
        let (calls, on_complete) = recorder();
        let mut body = CaptureBody::new(Full::new(Bytes::from("123456")), 5, on_complete);
        assert!(body.capture.is_none());
        while !body.is_end_stream() {
            assert!(matches!(poll_once(&mut body), Poll::Ready(Some(Ok(_)))));
        }
        assert!(calls.lock().is_empty());
    }

    #[test]
    fn capture_dropped_before_the_end_does_not_complete() {
        let (calls, on_complete) = recorder();
        let mut body = CaptureBody::new(Frames::data(&["a", "b"]), 1024, on_complete);
        assert!(matches!(poll_once(&mut body), Poll::Ready(Some(Ok(_)))));
        drop(body);
        assert!(calls.lock().is_empty());
    }

    #[test]
    fn capture_completes_when_the_inner_body_reports_its_end_without_a_final_poll() {
        // Like hyper: poll until `is_end_stream`, then drop without waiting for `None`.
        let (calls, on_complete) = recorder();
        let mut body = CaptureBody::new(Full::new(Bytes::from("known length")), 1024, on_complete);
        assert_eq!(body.size_hint().exact(), Some(12));
        assert!(!body.is_end_stream());
        while !body.is_end_stream() {
            assert!(matches!(poll_once(&mut body), Poll::Ready(Some(Ok(_)))));
        }
        drop(body);
        assert_eq!(*calls.lock(), [Bytes::from("known length")]);
    }

    #[test]
    fn capture_of_an_empty_body_completes_without_being_polled() {
        let (calls, on_complete) = recorder();
        let body = CaptureBody::new(Empty::<Bytes>::new(), 1024, on_complete);
        assert!(body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(0));
        drop(body);
        assert_eq!(*calls.lock(), [Bytes::new()]);
    }

    #[test]
    fn captured_body_owns_exactly_its_bytes() {
        // A frame that is a slice of a larger buffer must not keep that buffer alive.
        let big = Bytes::from(vec![b'x'; 4096]);
        let inner = Frames(VecDeque::from([Ok(Frame::data(big.slice(..3)))]));
        let (calls, on_complete) = recorder();
        let mut body = CaptureBody::new(inner, 1024, on_complete);
        while let Poll::Ready(Some(_)) = poll_once(&mut body) {}
        let calls = calls.lock();
        assert_eq!(calls[0], "xxx");
        assert_ne!(calls[0].as_ptr(), big.as_ptr());
    }

    #[test]
    fn captured_body_stores_into_the_cache() {
        let cache = Arc::new(cache());
        let key = get("h", "/page");
        let store = {
            let (cache, key) = (Arc::clone(&cache), key.clone());
            move |body| {
                cache.store(&key, 200, &HeaderMap::new(), body, at_secs(5));
            }
        };
        let mut body =
            CaptureBody::new(Frames::data(&["<html>", "</html>"]), cache.max_entry_bytes(), store);
        while let Poll::Ready(Some(_)) = poll_once(&mut body) {}
        assert_eq!(cache.lookup(&key, at_secs(6)).unwrap().body, "<html></html>");
    }
}
