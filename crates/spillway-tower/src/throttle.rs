//! Google SRE adaptive client-side throttling layer, one per upstream, with a response
//! classifier.
//!
//! Why on the client: when a backend rejects much of what it is sent, the client drops a
//! matching share of its own requests locally ([`spillway_core::breaker::SreThrottle`]) so the
//! backend spends its capacity serving instead of refusing. Each request's class comes from
//! its extensions (a [`Criticality`] put there by a server-side layer) or else from the
//! [`CRITICALITY_HEADER`](spillway_core::CRITICALITY_HEADER) (default `CRITICAL`); lower classes are dropped first. A drop fails
//! the call with a [`Rejected`](crate::Rejected) `throttled` error (503).
//!
//! Results are judged by a [`Classify`] ([`HttpClassifier`] by default): a 5xx, a 429 or a
//! transport error is a request the backend did not accept; a rejection made by another
//! Spillway layer is ignored, never a backend failure (kratos#2777). All services made from
//! one [`SreThrottleLayer`] share its throttle: build one layer per upstream.
//!
//! ```
//! use spillway_core::breaker::SreThrottleConfig;
//! use spillway_tower::throttle::SreThrottleLayer;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let layer = SreThrottleLayer::new(SreThrottleConfig::default()).unwrap();
//! let upstream = layer.layer(service_fn(|_req: http::Request<()>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(()))
//! }));
//! let response = upstream.oneshot(http::Request::new(())).await.unwrap();
//! assert_eq!(response.status(), 200);
//! # }
//! ```

use crate::breaker::{Classify, HttpClassifier};
use crate::guarded::GuardedFuture;
use crate::rejection::BoxError;
use crate::time::{Prng, TokioClock};
use http::Request;
use parking_lot::Mutex;
use recorder::Recorder;
use spillway_core::breaker::{ConfigError, SreThrottle, SreThrottleConfig, ThrottleCounts};
use spillway_core::Clock;
use spillway_core::{Criticality, Decision};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

#[derive(Debug)]
struct Shared {
    throttle: Mutex<SreThrottle>,
    clock: TokioClock,
    random: Prng,
}

/// Puts an [`SreThrottle`] in front of a service. See the module docs.
#[derive(Clone, Debug)]
pub struct SreThrottleLayer<C = HttpClassifier> {
    shared: Arc<Shared>,
    classifier: C,
}

impl SreThrottleLayer<HttpClassifier> {
    /// A layer with one throttle built from `config`, judging results with
    /// [`HttpClassifier`].
    pub fn new(config: SreThrottleConfig) -> Result<Self, ConfigError> {
        SreThrottleLayer::with_prng(config, Prng::from_time())
    }

    fn with_prng(config: SreThrottleConfig, random: Prng) -> Result<Self, ConfigError> {
        let throttle = SreThrottle::try_new(config)?;
        Ok(SreThrottleLayer {
            shared: Arc::new(Shared { throttle: Mutex::new(throttle), clock: TokioClock, random }),
            classifier: HttpClassifier,
        })
    }
}

impl<C> SreThrottleLayer<C> {
    /// The same throttle, judging results with `classifier` instead.
    pub fn with_classifier<C2>(self, classifier: C2) -> SreThrottleLayer<C2> {
        SreThrottleLayer { shared: self.shared, classifier }
    }

    /// The probability that a request of `class` is dropped now (for metrics).
    pub fn drop_probability(&self, class: Criticality) -> f64 {
        self.shared.throttle.lock().drop_probability(class, self.shared.clock.now())
    }

    /// Requests and accepts in the window now (for metrics).
    pub fn counts(&self) -> ThrottleCounts {
        self.shared.throttle.lock().counts(self.shared.clock.now())
    }
}

impl<S, C: Clone> Layer<S> for SreThrottleLayer<C> {
    type Service = SreThrottleService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        SreThrottleService {
            inner,
            shared: self.shared.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// A service behind adaptive throttling; made by [`SreThrottleLayer`].
#[derive(Clone, Debug)]
pub struct SreThrottleService<S, C = HttpClassifier> {
    inner: S,
    shared: Arc<Shared>,
    classifier: C,
}

impl<S, C, B> Service<Request<B>> for SreThrottleService<S, C>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let class = crate::criticality::of_request(&req);
        let random = self.shared.random.next_f64();
        let now = self.shared.clock.now();
        let decision = self.shared.throttle.lock().allow(class, now, random);
        match decision {
            Decision::Reject(rejection) => GuardedFuture::refused(rejection),
            Decision::Admit | Decision::Wait(_) => {
                let recorder = Recorder {
                    shared: Some(self.shared.clone()),
                    classifier: self.classifier.clone(),
                };
                GuardedFuture::called(self.inner.call(req), recorder)
            }
        }
    }
}

/// The response future of [`SreThrottleService`]: a drop (`throttled`), or the call with its
/// outcome recorded when it ends. Dropped unfinished, it records nothing: an abandoned call
/// says nothing about the backend.
pub type ResponseFuture<F, C> = GuardedFuture<F, recorder::Recorder<C>>;

mod recorder {
    use super::{Classify, Shared};
    use crate::guarded::CallGuard;
    use crate::rejection::BoxError;
    use spillway_core::Clock;
    use std::sync::Arc;

    /// Records the call's outcome in the throttle once.
    #[derive(Debug)]
    pub struct Recorder<C> {
        /// Taken when the outcome is recorded.
        pub(super) shared: Option<Arc<Shared>>,
        pub(super) classifier: C,
    }

    impl<C: Classify<T>, T> CallGuard<T> for Recorder<C> {
        fn finish(&mut self, result: &Result<T, BoxError>) {
            if let Some(shared) = self.shared.take() {
                let outcome = self.classifier.classify(result);
                shared.throttle.lock().record(outcome, shared.clock.now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rejection::find_rejection;
    use crate::Rejected;
    use spillway_core::{RejectReason, CRITICALITY_HEADER};
    use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
    use std::time::Duration;
    use tower::{service_fn, ServiceExt};

    #[derive(Clone)]
    struct Backend {
        status: Arc<AtomicU16>,
        calls: Arc<AtomicU64>,
    }

    impl Backend {
        fn new(status: u16) -> Backend {
            Backend { status: Arc::new(AtomicU16::new(status)), calls: Arc::default() }
        }

        fn service(
            &self,
        ) -> impl Service<Request<()>, Response = http::Response<()>, Error = BoxError> + Clone
        {
            let backend = self.clone();
            service_fn(move |_req: Request<()>| {
                let backend = backend.clone();
                async move {
                    backend.calls.fetch_add(1, Ordering::SeqCst);
                    let mut response = http::Response::new(());
                    *response.status_mut() =
                        http::StatusCode::from_u16(backend.status.load(Ordering::SeqCst))
                            .map_err(BoxError::from)?;
                    Ok::<_, BoxError>(response)
                }
            })
        }
    }

    fn layer() -> SreThrottleLayer {
        SreThrottleLayer::with_prng(SreThrottleConfig::default(), Prng::seeded(42)).expect("valid")
    }

    fn request(class: Option<&str>) -> Request<()> {
        let mut builder = Request::builder();
        if let Some(class) = class {
            builder = builder.header(CRITICALITY_HEADER, class);
        }
        builder.body(()).expect("valid request")
    }

    async fn send<S>(service: &mut S, class: Option<&str>) -> Result<http::Response<()>, BoxError>
    where
        S: Service<Request<()>, Response = http::Response<()>, Error = BoxError>,
    {
        service.ready().await?.call(request(class)).await
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_layer_drops_most_requests_to_a_rejecting_backend() {
        let backend = Backend::new(503);
        let layer = layer();
        let mut service = layer.layer(backend.service());
        let mut dropped = 0;
        for _ in 0..1_000 {
            match send(&mut service, None).await {
                Ok(response) => assert_eq!(response.status(), 503),
                Err(error) => {
                    let rejection = find_rejection(error.as_ref()).expect("a Rejected error");
                    assert_eq!(rejection.reason, RejectReason::Throttled);
                    dropped += 1;
                }
            }
        }
        // With no accepts, p = requests / (requests + 1) → almost everything is dropped,
        // but never everything: a few requests keep probing the backend.
        assert!(dropped > 900, "{dropped}");
        assert_eq!(backend.calls.load(Ordering::SeqCst), 1_000 - dropped);
        assert!(backend.calls.load(Ordering::SeqCst) >= 20);
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_layer_lets_everything_through_to_a_healthy_backend() {
        let backend = Backend::new(200);
        let mut service = layer().layer(backend.service());
        for _ in 0..500 {
            assert_eq!(send(&mut service, Some("sheddable")).await.expect("passes").status(), 200);
        }
        assert_eq!(backend.calls.load(Ordering::SeqCst), 500);
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_layer_sheds_sheddable_before_critical_plus() {
        let backend = Backend::new(200);
        let layer = layer();
        let mut service = layer.layer(backend.service());
        // 45 % of calls accepted: p(CRITICAL_PLUS, K = 2.5) = 0, p(SHEDDABLE, K = 1.5) > 0.
        for i in 0..100 {
            backend.status.store(if i < 45 { 200 } else { 500 }, Ordering::SeqCst);
            let _ = send(&mut service, Some("critical_plus")).await;
        }
        assert!(layer.drop_probability(Criticality::Sheddable) > 0.3);
        assert_eq!(layer.drop_probability(Criticality::CriticalPlus), 0.0);
        backend.status.store(200, Ordering::SeqCst);
        for _ in 0..20 {
            send(&mut service, Some("CRITICAL_PLUS")).await.expect("critical plus passes");
        }
        let mut sheddable_dropped = 0;
        for _ in 0..20 {
            if send(&mut service, Some("sheddable")).await.is_err() {
                sheddable_dropped += 1;
            }
        }
        assert!(sheddable_dropped > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_layer_ignores_rejections_from_other_spillway_layers() {
        let layer = layer();
        let mut service = layer.layer(service_fn(|_req: Request<()>| async {
            Err::<http::Response<()>, BoxError>(Box::new(Rejected::new(RejectReason::BulkheadFull)))
        }));
        for _ in 0..200 {
            let error = send(&mut service, None).await.expect_err("the bulkhead refuses");
            let reason = find_rejection(error.as_ref()).map(|r| r.reason);
            assert_eq!(reason, Some(RejectReason::BulkheadFull), "never throttled by us");
        }
        assert_eq!(layer.counts(), ThrottleCounts::default());
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_layer_recovers_once_failures_leave_the_window() {
        let backend = Backend::new(500);
        let layer = layer();
        let mut service = layer.layer(backend.service());
        for _ in 0..200 {
            let _ = send(&mut service, None).await;
        }
        assert!(layer.drop_probability(Criticality::Critical) > 0.9);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(layer.drop_probability(Criticality::Critical), 0.0);
        backend.status.store(200, Ordering::SeqCst);
        send(&mut service, None).await.expect("traffic flows again");
    }

    #[test]
    fn class_in_extensions_wins_over_the_header() {
        let mut req = request(Some("critical_plus"));
        req.extensions_mut().insert(Criticality::Sheddable);
        assert_eq!(crate::criticality::of_request(&req), Criticality::Sheddable);
        assert_eq!(crate::criticality::of_request(&request(None)), Criticality::Critical);
    }
}
