//! Keyed rate-limit layer: a key extractor plus a keyed limiter from `spillway-core`.
//!
//! Why a layer of its own: the algorithm (token bucket, GCRA, windows, leaky bucket, warm-up)
//! stays pure in the core; this layer only picks the key (a header, the client IP, the path, a
//! constant, or any closure), reads the request's
//! [`Criticality`](spillway_core::Criticality) ([`of_request`](crate::criticality::of_request)), asks the limiter, and acts
//! on the answer: call the inner service, sleep first (`Decision::Wait`, with `tokio::time`),
//! or refuse with [`Rejected`] (or, with [`RateLimitLayer::answer_rejections`], answer the
//! refusal itself with [`rejection_response`]).
//!
//! ```
//! use spillway_core::rate::{KeyedLimiter, Rate};
//! use spillway_tower::rate_limit::{HeaderKey, RateLimitLayer};
//! let limiter = KeyedLimiter::token_bucket(Rate::per_second(100), 20);
//! let layer = RateLimitLayer::new(HeaderKey::new("x-api-key"), limiter);
//! # let _ = layer;
//! ```

use crate::rejection::{rejection_response, BoxError, Rejected};
use bytes::Bytes;
use http::{Extensions, HeaderMap, HeaderName, Method, Request, Response, Uri};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use spillway_core::rate::{ByteKey, KeyedLimiter, RateAlgorithm};
use spillway_core::{Clock, Decision, Rejection, SystemClock};
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// The parts of a request a key extractor may look at (everything but the body).
#[derive(Debug)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI.
    pub uri: &'a Uri,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The extensions (e.g. the peer's `SocketAddr`).
    pub extensions: &'a Extensions,
}

impl<'a> RequestHead<'a> {
    /// The head of `request`.
    pub fn of<B>(request: &'a Request<B>) -> RequestHead<'a> {
        RequestHead {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
        }
    }
}

/// Picks the key a request is limited under. Closures `Fn(&RequestHead) -> K` are extractors.
///
/// An extractor always returns a key: requests that lack what it looks for (no header, no
/// peer address) share one bucket rather than going unlimited, so leaving a header out is not
/// a way around the limit.
pub trait KeyExtractor: Send + Sync + 'static {
    /// The key type.
    type Key: Hash + Eq + Clone + Send + Sync + 'static;

    /// The key of a request.
    fn extract(&self, head: &RequestHead<'_>) -> Self::Key;
}

impl<F, K> KeyExtractor for F
where
    F: Fn(&RequestHead<'_>) -> K + Send + Sync + 'static,
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Key = K;

    fn extract(&self, head: &RequestHead<'_>) -> K {
        self(head)
    }
}

/// One key for every request: a global limit for the service (or route) behind the layer.
#[derive(Copy, Clone, Debug, Default)]
pub struct ConstantKey;

impl KeyExtractor for ConstantKey {
    type Key = ();

    fn extract(&self, _head: &RequestHead<'_>) {}
}

/// The value of a header (an API key, a tenant id). Requests without it share the empty key.
#[derive(Clone, Debug)]
pub struct HeaderKey {
    name: HeaderName,
}

impl HeaderKey {
    /// Keys by the header `name`.
    ///
    /// # Panics
    /// When `name` is not a valid header name (a configuration bug caught at construction).
    pub fn new(name: &str) -> HeaderKey {
        match HeaderName::try_from(name) {
            Ok(name) => HeaderKey { name },
            Err(e) => panic!("invalid header name {name:?}: {e}"),
        }
    }

    /// Keys by an already parsed header name.
    pub fn from_name(name: HeaderName) -> HeaderKey {
        HeaderKey { name }
    }
}

impl KeyExtractor for HeaderKey {
    /// Inline (no allocation per request) for values up to [`ByteKey::INLINE`] bytes.
    type Key = ByteKey;

    fn extract(&self, head: &RequestHead<'_>) -> ByteKey {
        ByteKey::new(head.headers.get(&self.name).map(|v| v.as_bytes()).unwrap_or_default())
    }
}

/// The client's IP address, from a `SocketAddr` in the request extensions (where servers and
/// the gateway put the peer address; with axum, copy `ConnectInfo<SocketAddr>`'s address in).
/// Requests without one share the unspecified address's bucket.
#[derive(Copy, Clone, Debug, Default)]
pub struct ClientIp;

impl KeyExtractor for ClientIp {
    type Key = IpAddr;

    fn extract(&self, head: &RequestHead<'_>) -> IpAddr {
        head.extensions
            .get::<SocketAddr>()
            .map(SocketAddr::ip)
            .or_else(|| head.extensions.get::<IpAddr>().copied())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    }
}

/// The request path (without the query): a limit per route.
#[derive(Copy, Clone, Debug, Default)]
pub struct PathKey;

impl KeyExtractor for PathKey {
    type Key = ByteKey;

    fn extract(&self, head: &RequestHead<'_>) -> ByteKey {
        ByteKey::from(head.uri.path())
    }
}

struct Shared<E: KeyExtractor, A: RateAlgorithm, C> {
    extractor: E,
    limiter: KeyedLimiter<E::Key, A>,
    clock: C,
}

impl<E: KeyExtractor, A: RateAlgorithm, C: Clock> Shared<E, A, C> {
    fn decide<B>(&self, request: &Request<B>) -> Decision {
        let key = self.extractor.extract(&RequestHead::of(request));
        let class = crate::criticality::of_request(request);
        self.limiter.check_n(&key, self.clock.now(), 1, class)
    }
}

/// Applies a keyed rate limit to every request. Clones share one limiter.
pub struct RateLimitLayer<E: KeyExtractor, A: RateAlgorithm, C = SystemClock> {
    shared: Arc<Shared<E, A, C>>,
}

impl<E: KeyExtractor, A: RateAlgorithm> RateLimitLayer<E, A, SystemClock> {
    /// Limits requests by `extractor`'s key with `limiter`, on the system clock.
    pub fn new(extractor: E, limiter: KeyedLimiter<E::Key, A>) -> Self {
        RateLimitLayer::with_clock(extractor, limiter, SystemClock::new())
    }
}

impl<E: KeyExtractor, A: RateAlgorithm, C: Clock> RateLimitLayer<E, A, C> {
    /// Limits requests by `extractor`'s key with `limiter`, reading time from `clock`.
    pub fn with_clock(extractor: E, limiter: KeyedLimiter<E::Key, A>, clock: C) -> Self {
        RateLimitLayer { shared: Arc::new(Shared { extractor, limiter, clock }) }
    }

    /// The shared limiter (for metrics, or to run `evict_idle` from a periodic task).
    pub fn limiter(&self) -> &KeyedLimiter<E::Key, A> {
        &self.shared.limiter
    }

    /// A layer on the same limiter whose services answer a refusal themselves with
    /// [`rejection_response`] (429, `Retry-After`, JSON body) instead of failing.
    pub fn answer_rejections(&self) -> AnswerRejectionsLayer<E, A, C> {
        AnswerRejectionsLayer { shared: Arc::clone(&self.shared) }
    }
}

impl<E: KeyExtractor, A: RateAlgorithm, C> Clone for RateLimitLayer<E, A, C> {
    fn clone(&self) -> Self {
        RateLimitLayer { shared: Arc::clone(&self.shared) }
    }
}

impl<E: KeyExtractor, A: RateAlgorithm, C> fmt::Debug for RateLimitLayer<E, A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer").field("limiter", &self.shared.limiter).finish()
    }
}

impl<S, E: KeyExtractor, A: RateAlgorithm, C> Layer<S> for RateLimitLayer<E, A, C> {
    type Service = RateLimit<S, E, A, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit { inner, shared: Arc::clone(&self.shared) }
    }
}

/// The service made by [`RateLimitLayer`]: refusals fail with [`Rejected`].
pub struct RateLimit<S, E: KeyExtractor, A: RateAlgorithm, C = SystemClock> {
    inner: S,
    shared: Arc<Shared<E, A, C>>,
}

impl<S: Clone, E: KeyExtractor, A: RateAlgorithm, C> Clone for RateLimit<S, E, A, C> {
    fn clone(&self) -> Self {
        RateLimit { inner: self.inner.clone(), shared: Arc::clone(&self.shared) }
    }
}

impl<S: fmt::Debug, E: KeyExtractor, A: RateAlgorithm, C> fmt::Debug for RateLimit<S, E, A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit").field("inner", &self.inner).finish_non_exhaustive()
    }
}

/// Starts the inner call according to `decision`. For a wait, the service made ready by
/// `poll_ready` is taken for the call after the sleep and a clone is left in its place (the
/// usual tower pattern: readiness belongs to the instance that was polled).
fn start<S, R>(inner: &mut S, request: R, decision: Decision) -> State<S, R>
where
    S: Service<R> + Clone,
{
    match decision {
        Decision::Admit => State::Calling { future: inner.call(request) },
        Decision::Wait(d) => {
            let clone = inner.clone();
            let ready = std::mem::replace(inner, clone);
            State::Waiting {
                sleep: Box::pin(tokio::time::sleep(d)),
                inner: Some(ready),
                request: Some(request),
            }
        }
        Decision::Reject(r) => State::Refused { rejection: r },
    }
}

impl<S, E, A, C, B> Service<Request<B>> for RateLimit<S, E, A, C>
where
    S: Service<Request<B>> + Clone,
    S::Error: Into<BoxError>,
    E: KeyExtractor,
    A: RateAlgorithm,
    C: Clock,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Request<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let decision = self.shared.decide(&request);
        ResponseFuture { state: start(&mut self.inner, request, decision) }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<R>, R> {
        Refused { rejection: Rejection },
        Waiting { sleep: Pin<Box<tokio::time::Sleep>>, inner: Option<S>, request: Option<R> },
        Calling { #[pin] future: S::Future },
    }
}

/// What a state ends in: the inner call's result, or the limiter's refusal.
type Outcome<S, R> =
    Result<Result<<S as Service<R>>::Response, <S as Service<R>>::Error>, Rejection>;

impl<S: Service<R>, R> State<S, R> {
    /// Drives the state to the inner response, or to the refusal (`Err(rejection)`).
    fn poll_state(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<S, R>> {
        loop {
            match self.as_mut().project() {
                StateProj::Refused { rejection } => return Poll::Ready(Err(*rejection)),
                StateProj::Waiting { sleep, inner, request } => {
                    ready!(sleep.as_mut().poll(cx));
                    match (inner.take(), request.take()) {
                        (Some(mut inner), Some(request)) => {
                            let future = inner.call(request);
                            self.set(State::Calling { future });
                        }
                        // Polled again after completion: a caller bug, answered without panic.
                        _ => {
                            return Poll::Ready(Err(Rejection::new(
                                spillway_core::RejectReason::RateLimited,
                            )))
                        }
                    }
                }
                StateProj::Calling { future } => return future.poll(cx).map(Ok),
            }
        }
    }
}

pin_project! {
    /// The response future of [`RateLimit`].
    pub struct ResponseFuture<S: Service<R>, R> {
        #[pin]
        state: State<S, R>,
    }
}

impl<S, R> Future for ResponseFuture<S, R>
where
    S: Service<R>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match ready!(self.project().state.poll_state(cx)) {
            Ok(result) => Poll::Ready(result.map_err(Into::into)),
            Err(rejection) => Poll::Ready(Err(Rejected(rejection).into())),
        }
    }
}

/// Like [`RateLimitLayer`], but its services answer refusals with [`rejection_response`]; the
/// response body is `Either<B, Full<Bytes>>` (the inner body, or the rejection's JSON).
pub struct AnswerRejectionsLayer<E: KeyExtractor, A: RateAlgorithm, C = SystemClock> {
    shared: Arc<Shared<E, A, C>>,
}

impl<E: KeyExtractor, A: RateAlgorithm, C> Clone for AnswerRejectionsLayer<E, A, C> {
    fn clone(&self) -> Self {
        AnswerRejectionsLayer { shared: Arc::clone(&self.shared) }
    }
}

impl<E: KeyExtractor, A: RateAlgorithm, C> fmt::Debug for AnswerRejectionsLayer<E, A, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnswerRejectionsLayer").field("limiter", &self.shared.limiter).finish()
    }
}

impl<S, E: KeyExtractor, A: RateAlgorithm, C> Layer<S> for AnswerRejectionsLayer<E, A, C> {
    type Service = AnswerRejections<S, E, A, C>;

    fn layer(&self, inner: S) -> Self::Service {
        AnswerRejections { inner, shared: Arc::clone(&self.shared) }
    }
}

/// The service made by [`AnswerRejectionsLayer`].
pub struct AnswerRejections<S, E: KeyExtractor, A: RateAlgorithm, C = SystemClock> {
    inner: S,
    shared: Arc<Shared<E, A, C>>,
}

impl<S: Clone, E: KeyExtractor, A: RateAlgorithm, C> Clone for AnswerRejections<S, E, A, C> {
    fn clone(&self) -> Self {
        AnswerRejections { inner: self.inner.clone(), shared: Arc::clone(&self.shared) }
    }
}

impl<S: fmt::Debug, E: KeyExtractor, A: RateAlgorithm, C> fmt::Debug
    for AnswerRejections<S, E, A, C>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnswerRejections").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl<S, E, A, C, B, ResB> Service<Request<B>> for AnswerRejections<S, E, A, C>
where
    S: Service<Request<B>, Response = Response<ResB>> + Clone,
    E: KeyExtractor,
    A: RateAlgorithm,
    C: Clock,
{
    type Response = Response<Either<ResB, Full<Bytes>>>;
    type Error = S::Error;
    type Future = AnswerFuture<S, Request<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let decision = self.shared.decide(&request);
        AnswerFuture { state: start(&mut self.inner, request, decision) }
    }
}

pin_project! {
    /// The response future of [`AnswerRejections`].
    pub struct AnswerFuture<S: Service<R>, R> {
        #[pin]
        state: State<S, R>,
    }
}

impl<S, R, ResB> Future for AnswerFuture<S, R>
where
    S: Service<R, Response = Response<ResB>>,
{
    type Output = Result<Response<Either<ResB, Full<Bytes>>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match ready!(self.project().state.poll_state(cx)) {
            Ok(result) => Poll::Ready(result.map(|r| r.map(Either::Left))),
            Err(rejection) => Poll::Ready(Ok(rejection_response(&rejection).map(Either::Right))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rejection::find_rejection;
    use spillway_core::rate::{
        CriticalityReserve, GcraConfig, KeyedLimiter, LeakyBucketConfig, Rate, TokenBucketConfig,
    };
    use spillway_core::{Criticality, ManualClock, RejectReason, CRITICALITY_HEADER};
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use tower::{service_fn, ServiceBuilder, ServiceExt};

    type Svc = tower::util::BoxCloneService<Request<()>, Response<()>, BoxError>;

    fn counting_service(calls: Arc<AtomicUsize>) -> Svc {
        tower::util::BoxCloneService::new(service_fn(move |_req: Request<()>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, BoxError>(Response::new(())) }
        }))
    }

    fn request(header: Option<(&'static str, &'static str)>) -> Request<()> {
        let mut b = Request::builder().uri("/orders");
        if let Some((k, v)) = header {
            b = b.header(k, v);
        }
        b.body(()).unwrap_or_default()
    }

    #[tokio::test(start_paused = true)]
    async fn requests_over_the_limit_fail_with_rate_limited_and_retry_after() {
        let calls = Arc::new(AtomicUsize::new(0));
        let limiter = KeyedLimiter::gcra(Rate::per_second(10), 2);
        let layer = RateLimitLayer::with_clock(ConstantKey, limiter, ManualClock::new());
        let svc = layer.layer(counting_service(calls.clone()));
        assert!(svc.clone().oneshot(request(None)).await.is_ok());
        assert!(svc.clone().oneshot(request(None)).await.is_ok());
        let err = svc.clone().oneshot(request(None)).await.expect_err("third is over the burst");
        let r = find_rejection(&*err).expect("a Rejected error");
        assert_eq!(r.reason, RejectReason::RateLimited);
        assert_eq!(r.retry_after, Some(Duration::from_millis(100)));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "the refused request never reached the service"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn header_keys_are_limited_separately_and_missing_headers_share_a_bucket() {
        let calls = Arc::new(AtomicUsize::new(0));
        let limiter = KeyedLimiter::token_bucket(Rate::per_hour(1), 1);
        let layer =
            RateLimitLayer::with_clock(HeaderKey::new("x-api-key"), limiter, ManualClock::new());
        let svc = layer.layer(counting_service(calls));
        assert!(svc.clone().oneshot(request(Some(("x-api-key", "a")))).await.is_ok());
        assert!(svc.clone().oneshot(request(Some(("x-api-key", "a")))).await.is_err());
        assert!(svc.clone().oneshot(request(Some(("x-api-key", "b")))).await.is_ok());
        assert!(svc.clone().oneshot(request(None)).await.is_ok());
        assert!(svc.clone().oneshot(request(None)).await.is_err(), "no header is not a bypass");
        assert_eq!(layer.limiter().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn client_ip_comes_from_the_socket_addr_extension() {
        let limiter = KeyedLimiter::gcra(Rate::per_hour(1), 1);
        let layer = RateLimitLayer::with_clock(ClientIp, limiter, ManualClock::new());
        let svc = layer.layer(counting_service(Arc::default()));
        let from = |ip: [u8; 4]| {
            let mut r = request(None);
            r.extensions_mut().insert(SocketAddr::from((ip, 4000)));
            r
        };
        assert!(svc.clone().oneshot(from([10, 0, 0, 1])).await.is_ok());
        assert!(svc.clone().oneshot(from([10, 0, 0, 1])).await.is_err());
        assert!(svc.clone().oneshot(from([10, 0, 0, 2])).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn closures_and_paths_are_key_extractors() {
        let by_method = |head: &RequestHead<'_>| head.method.clone();
        let layer = RateLimitLayer::with_clock(
            by_method,
            KeyedLimiter::gcra(Rate::per_hour(1), 1),
            ManualClock::new(),
        );
        let svc = layer.layer(counting_service(Arc::default()));
        assert!(svc.clone().oneshot(request(None)).await.is_ok());
        assert!(svc.clone().oneshot(request(None)).await.is_err());
        let head = Request::builder().uri("/a/b?q=1").body(()).unwrap_or_default();
        assert_eq!(PathKey.extract(&RequestHead::of(&head)).as_bytes(), b"/a/b");
    }

    #[tokio::test(start_paused = true)]
    async fn criticality_header_reaches_the_limiter_and_sheddable_is_refused_first() {
        // Burst 4, sheddable must leave 1.
        let limiter = KeyedLimiter::new(TokenBucketConfig::new(Rate::per_hour(1), 4));
        let layer = RateLimitLayer::with_clock(ConstantKey, limiter, ManualClock::new());
        let svc = layer.layer(counting_service(Arc::default()));
        let sheddable = || request(Some((CRITICALITY_HEADER, "SHEDDABLE")));
        for _ in 0..3 {
            assert!(svc.clone().oneshot(sheddable()).await.is_ok());
        }
        assert!(svc.clone().oneshot(sheddable()).await.is_err());
        assert!(svc.clone().oneshot(request(Some((CRITICALITY_HEADER, "CRITICAL")))).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn criticality_in_extensions_wins_over_the_header() {
        // Burst 4, sheddable must leave 1: after 3, only a more critical class gets the last.
        let limiter = KeyedLimiter::new(TokenBucketConfig::new(Rate::per_hour(1), 4));
        let layer = RateLimitLayer::with_clock(ConstantKey, limiter, ManualClock::new());
        let svc = layer.layer(counting_service(Arc::default()));
        for _ in 0..3 {
            assert!(svc.clone().oneshot(request(None)).await.is_ok());
        }
        let mut r = request(Some((CRITICALITY_HEADER, "SHEDDABLE")));
        r.extensions_mut().insert(Criticality::Critical);
        assert!(svc.clone().oneshot(r).await.is_ok(), "CRITICAL from the extension");
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_request_sleeps_its_wait_before_reaching_the_service() {
        let calls = Arc::new(AtomicUsize::new(0));
        let limiter = KeyedLimiter::new(LeakyBucketConfig::with_reserve(
            Rate::per_second(10),
            Duration::from_millis(150),
            CriticalityReserve::NONE,
        ));
        let layer = RateLimitLayer::with_clock(ConstantKey, limiter, ManualClock::new());
        let mut svc = ServiceBuilder::new().layer(layer).service(counting_service(calls.clone()));
        let start = tokio::time::Instant::now();
        svc.ready().await.map(drop).unwrap_or_default();
        assert!(svc.call(request(None)).await.is_ok());
        assert_eq!(start.elapsed(), Duration::ZERO);
        svc.ready().await.map(drop).unwrap_or_default();
        let queued = svc.call(request(None));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "queued, not yet called");
        assert!(queued.await.is_ok());
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        // A third would wait 200 ms > 150 ms: refused at once.
        let err = svc.ready().await.ok().map(|s| s.call(request(None)));
        let refused = match err {
            Some(f) => f.await.err(),
            None => None,
        };
        assert_eq!(
            refused.and_then(|e| find_rejection(&*e)).map(|r| r.reason),
            Some(RejectReason::RateLimited)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn answering_variant_replies_429_with_retry_after_instead_of_failing() {
        let limiter = KeyedLimiter::new(GcraConfig::new(Rate::per_second(1), 1));
        let layer = RateLimitLayer::with_clock(ConstantKey, limiter, ManualClock::new());
        let inner = service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        });
        let svc = layer.answer_rejections().layer(inner);
        let ok = svc.clone().oneshot(request(None)).await.map(|r| r.status().as_u16());
        assert_eq!(ok.ok(), Some(200));
        let refused = svc.clone().oneshot(request(None)).await.ok();
        assert_eq!(refused.as_ref().map(|r| r.status().as_u16()), Some(429));
        assert_eq!(
            refused
                .as_ref()
                .and_then(|r| r.headers().get(http::header::RETRY_AFTER))
                .map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
    }
}
