//! Classic circuit breaker layer (closed / open / half-open) around one upstream, with a
//! response classifier.
//!
//! Why a layer: the state machine ([`spillway_core::breaker::CircuitBreaker`]) is pure; this
//! puts it on the call path. Each call asks the breaker first (an open breaker fails the call
//! at once with a [`Rejected`](crate::Rejected) `circuit_open` error carrying the time left until half-open),
//! then the inner service's result is judged by a [`Classify`] and recorded with the call's
//! latency, measured on tokio's clock (so `start_paused` tests control it). The
//! [`CallTicket`] the breaker gave at admission travels with
//! the call and is handed back with its outcome, so a call admitted before a trip is never taken
//! for a half-open probe. A call whose future is dropped before it finishes is recorded as
//! [`Outcome::Ignored`], which gives its half-open probe slot back (if it was a probe of the
//! current half-open phase).
//!
//! All services made from one [`CircuitBreakerLayer`] share its breaker: build one layer per
//! upstream.
//!
//! ```
//! use spillway_core::breaker::CircuitBreakerConfig;
//! use spillway_tower::breaker::CircuitBreakerLayer;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let layer = CircuitBreakerLayer::new(CircuitBreakerConfig::default()).unwrap();
//! let service = layer.layer(service_fn(|_req: http::Request<()>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(()))
//! }));
//! let response = service.oneshot(http::Request::new(())).await.unwrap();
//! assert_eq!(response.status(), 200);
//! # }
//! ```

mod classify;

pub use classify::{Classify, HttpClassifier};

use crate::guarded::GuardedFuture;
use crate::rejection::BoxError;
use crate::time::TokioClock;
use parking_lot::Mutex;
use recorder::Recorder;
use spillway_core::breaker::{
    BreakerState, CallOutcome, CallTicket, CircuitBreaker, CircuitBreakerConfig, ConfigError,
    Outcome,
};
use spillway_core::Clock;
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

#[derive(Debug)]
struct Shared {
    breaker: Mutex<CircuitBreaker>,
    clock: TokioClock,
}

impl Shared {
    fn record(&self, ticket: CallTicket, outcome: Outcome, started: tokio::time::Instant) {
        let end = tokio::time::Instant::now();
        let call = CallOutcome { outcome, latency: end.saturating_duration_since(started) };
        self.breaker.lock().record(ticket, call, self.clock.at(end));
    }
}

/// Puts a [`CircuitBreaker`] in front of a service. See the module docs.
#[derive(Clone, Debug)]
pub struct CircuitBreakerLayer<C = HttpClassifier> {
    shared: Arc<Shared>,
    classifier: C,
}

impl CircuitBreakerLayer<HttpClassifier> {
    /// A layer with one breaker built from `config`, judging results with [`HttpClassifier`].
    pub fn new(config: CircuitBreakerConfig) -> Result<Self, ConfigError> {
        let breaker = CircuitBreaker::try_new(config)?;
        Ok(CircuitBreakerLayer {
            shared: Arc::new(Shared { breaker: Mutex::new(breaker), clock: TokioClock }),
            classifier: HttpClassifier,
        })
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// The same breaker, judging results with `classifier` instead.
    pub fn with_classifier<C2>(self, classifier: C2) -> CircuitBreakerLayer<C2> {
        CircuitBreakerLayer { shared: self.shared, classifier }
    }

    /// The breaker's state now (for metrics and health pages).
    pub fn state(&self) -> BreakerState {
        self.shared.breaker.lock().state(self.shared.clock.now())
    }

    /// How many times the breaker has tripped.
    pub fn trips(&self) -> u64 {
        self.shared.breaker.lock().trips()
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService {
            inner,
            shared: self.shared.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// A service behind a circuit breaker; made by [`CircuitBreakerLayer`].
#[derive(Clone, Debug)]
pub struct CircuitBreakerService<S, C = HttpClassifier> {
    inner: S,
    shared: Arc<Shared>,
    classifier: C,
}

impl<S, C, Req> Service<Req> for CircuitBreakerService<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let started = tokio::time::Instant::now();
        let admitted = self.shared.breaker.lock().allow(self.shared.clock.at(started));
        match admitted {
            Err(rejection) => GuardedFuture::refused(rejection),
            Ok(ticket) => {
                let recorder = Recorder {
                    shared: self.shared.clone(),
                    classifier: self.classifier.clone(),
                    started,
                    ticket: Some(ticket),
                };
                GuardedFuture::called(self.inner.call(req), recorder)
            }
        }
    }
}

/// The response future of [`CircuitBreakerService`]: a refusal (`circuit_open`), or the call
/// with its outcome recorded when it ends ([`Outcome::Ignored`] if dropped unfinished).
pub type ResponseFuture<F, C> = GuardedFuture<F, recorder::Recorder<C>>;

mod recorder {
    use super::{CallTicket, Classify, Outcome, Shared};
    use crate::guarded::CallGuard;
    use crate::rejection::BoxError;
    use std::sync::Arc;

    /// Carries the call's admission ticket to its end: records the outcome once, with the
    /// ticket; records [`Outcome::Ignored`] if dropped unfinished.
    #[derive(Debug)]
    pub struct Recorder<C> {
        pub(super) shared: Arc<Shared>,
        pub(super) classifier: C,
        pub(super) started: tokio::time::Instant,
        /// The breaker's ticket for this call; taken when the outcome is recorded.
        pub(super) ticket: Option<CallTicket>,
    }

    impl<C: Classify<T>, T> CallGuard<T> for Recorder<C> {
        fn finish(&mut self, result: &Result<T, BoxError>) {
            if let Some(ticket) = self.ticket.take() {
                self.shared.record(ticket, self.classifier.classify(result), self.started);
            }
        }
    }

    impl<C> Drop for Recorder<C> {
        fn drop(&mut self) {
            // The call was abandoned before it finished (a timeout above us, a client gone).
            if std::thread::panicking() {
                return;
            }
            if let Some(ticket) = self.ticket.take() {
                self.shared.record(ticket, Outcome::Ignored, self.started);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rejection::find_rejection;
    use crate::Rejected;
    use spillway_core::breaker::{BreakerWindow, SlowCallTrigger};
    use spillway_core::RejectReason;
    use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
    use std::time::Duration;
    use tower::{service_fn, ServiceExt};

    /// A backend that answers with the status the test sets, after the delay the test sets,
    /// counting the calls that reach it.
    #[derive(Clone, Default)]
    struct Backend {
        status: Arc<AtomicU16>,
        delay_ms: Arc<AtomicU64>,
        calls: Arc<AtomicU64>,
    }

    impl Backend {
        fn new() -> Backend {
            let b = Backend::default();
            b.status.store(200, Ordering::SeqCst);
            b
        }

        fn service(
            &self,
        ) -> impl Service<http::Request<()>, Response = http::Response<()>, Error = BoxError> + Clone
        {
            let backend = self.clone();
            service_fn(move |_req: http::Request<()>| {
                let backend = backend.clone();
                async move {
                    backend.calls.fetch_add(1, Ordering::SeqCst);
                    let delay = backend.delay_ms.load(Ordering::SeqCst);
                    if delay > 0 {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                    }
                    let mut response = http::Response::new(());
                    *response.status_mut() =
                        http::StatusCode::from_u16(backend.status.load(Ordering::SeqCst))
                            .map_err(BoxError::from)?;
                    Ok::<_, BoxError>(response)
                }
            })
        }
    }

    fn config() -> CircuitBreakerConfig {
        CircuitBreakerConfig {
            window: BreakerWindow::Count { calls: 10 },
            min_calls: 10,
            failure_ratio: Some(0.5),
            open_duration: Duration::from_secs(5),
            half_open_probes: 2,
            half_open_successes: 2,
            ..CircuitBreakerConfig::default()
        }
    }

    async fn call<S>(service: &mut S) -> Result<http::Response<()>, BoxError>
    where
        S: Service<http::Request<()>, Response = http::Response<()>, Error = BoxError>,
    {
        service.ready().await?.call(http::Request::new(())).await
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_layer_opens_on_5xx_and_fails_fast_with_circuit_open() {
        let backend = Backend::new();
        let layer = CircuitBreakerLayer::new(config()).expect("valid");
        let mut service = layer.layer(backend.service());
        backend.status.store(503, Ordering::SeqCst);
        for _ in 0..10 {
            let response = call(&mut service).await.expect("the backend answers");
            assert_eq!(response.status(), 503);
        }
        assert_eq!(layer.state(), BreakerState::Open);
        let error = call(&mut service).await.expect_err("open breaker refuses");
        let rejection = find_rejection(error.as_ref()).expect("a Rejected error");
        assert_eq!(rejection.reason, RejectReason::CircuitOpen);
        assert_eq!(rejection.retry_after, Some(Duration::from_secs(5)));
        assert_eq!(backend.calls.load(Ordering::SeqCst), 10, "refused calls never reach it");
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_layer_probes_after_the_open_time_and_closes_on_success() {
        let backend = Backend::new();
        let layer = CircuitBreakerLayer::new(config()).expect("valid");
        let mut service = layer.layer(backend.service());
        backend.status.store(500, Ordering::SeqCst);
        for _ in 0..10 {
            let _ = call(&mut service).await;
        }
        assert_eq!(layer.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(layer.state(), BreakerState::HalfOpen);
        backend.status.store(200, Ordering::SeqCst);
        for _ in 0..2 {
            assert_eq!(call(&mut service).await.expect("probe").status(), 200);
        }
        assert_eq!(layer.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_layer_does_not_count_local_rejections_as_failures() {
        let layer = CircuitBreakerLayer::new(config()).expect("valid");
        let mut service = layer.layer(service_fn(|_req: http::Request<()>| async {
            Err::<http::Response<()>, BoxError>(Box::new(Rejected::new(RejectReason::RateLimited)))
        }));
        for _ in 0..50 {
            let error = call(&mut service).await.expect_err("the limiter refuses");
            assert_eq!(
                find_rejection(error.as_ref()).map(|r| r.reason),
                Some(RejectReason::RateLimited)
            );
        }
        assert_eq!(layer.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_layer_measures_latency_for_the_slow_call_trigger() {
        let backend = Backend::new();
        let config = CircuitBreakerConfig {
            failure_ratio: None,
            slow_calls: Some(SlowCallTrigger { threshold: Duration::from_secs(2), ratio: 0.5 }),
            ..config()
        };
        let layer = CircuitBreakerLayer::new(config).expect("valid");
        let mut service = layer.layer(backend.service());
        backend.delay_ms.store(1_999, Ordering::SeqCst);
        for _ in 0..10 {
            call(&mut service).await.expect("answer");
        }
        assert_eq!(layer.state(), BreakerState::Closed);
        backend.delay_ms.store(2_000, Ordering::SeqCst);
        for _ in 0..5 {
            call(&mut service).await.expect("answer");
        }
        assert_eq!(layer.state(), BreakerState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn dropped_probe_gives_its_slot_back() {
        let backend = Backend::new();
        let config =
            CircuitBreakerConfig { half_open_probes: 1, half_open_successes: 1, ..config() };
        let layer = CircuitBreakerLayer::new(config).expect("valid");
        let mut service = layer.layer(backend.service());
        backend.status.store(502, Ordering::SeqCst);
        for _ in 0..10 {
            let _ = call(&mut service).await;
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        backend.delay_ms.store(60_000, Ordering::SeqCst);
        // The probe is abandoned by its caller (a timeout above us).
        let probe = tokio::time::timeout(Duration::from_secs(1), call(&mut service)).await;
        assert!(probe.is_err(), "the probe timed out");
        backend.delay_ms.store(0, Ordering::SeqCst);
        backend.status.store(200, Ordering::SeqCst);
        assert_eq!(call(&mut service).await.expect("a new probe goes through").status(), 200);
        assert_eq!(layer.state(), BreakerState::Closed);
    }

    /// A request asking the test backend below for `status` after `delay_ms`.
    fn request(status: u16, delay_ms: u64) -> http::Request<()> {
        http::Request::builder()
            .header("x-status", status)
            .header("x-delay-ms", delay_ms)
            .body(())
            .expect("valid request")
    }

    fn header(req: &http::Request<()>, name: &str) -> u64 {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn call_admitted_before_the_trip_is_not_taken_for_a_probe() {
        let config =
            CircuitBreakerConfig { half_open_probes: 1, half_open_successes: 1, ..config() };
        let layer = CircuitBreakerLayer::new(config).expect("valid");
        let mut service = layer.layer(service_fn(|req: http::Request<()>| async move {
            tokio::time::sleep(Duration::from_millis(header(&req, "x-delay-ms"))).await;
            let mut response = http::Response::new(());
            *response.status_mut() = http::StatusCode::from_u16(header(&req, "x-status") as u16)
                .map_err(BoxError::from)?;
            Ok::<_, BoxError>(response)
        }));
        // Admitted while closed; fails at 6 s, while the breaker is half-open.
        let slow = service.ready().await.expect("ready").call(request(500, 6_000));
        let slow = tokio::spawn(slow);
        tokio::task::yield_now().await;
        for _ in 0..10 {
            let _ = service.ready().await.expect("ready").call(request(500, 0)).await;
        }
        assert_eq!(layer.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(5)).await;
        // The probe succeeds at 7 s.
        let probe = service.ready().await.expect("ready").call(request(200, 2_000));
        let probe = tokio::spawn(probe);
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(1)).await;
        let old = slow.await.expect("no panic").expect("the backend answers");
        assert_eq!(old.status(), 500);
        assert_eq!(layer.state(), BreakerState::HalfOpen, "the old failure is not a probe's");
        let probe = probe.await.expect("no panic").expect("the probe answers");
        assert_eq!(probe.status(), 200);
        assert_eq!(layer.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn custom_classifier_decides_what_a_failure_is() {
        let backend = Backend::new();
        // Treat 404 as a failure (e.g. a routing layer that must never answer 404).
        let classifier = |r: &Result<http::Response<()>, BoxError>| match r {
            Ok(resp) if resp.status() == 404 => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        };
        let layer = CircuitBreakerLayer::new(config()).expect("valid").with_classifier(classifier);
        let mut service = layer.layer(backend.service());
        backend.status.store(404, Ordering::SeqCst);
        for _ in 0..10 {
            let _ = call(&mut service).await;
        }
        assert_eq!(layer.state(), BreakerState::Open);
    }
}
