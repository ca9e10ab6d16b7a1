//! Tests of the load-shedding layers with a paused tokio clock.

use super::*;
use crate::rejection::find_rejection;
use spillway_core::concurrency::{Aimd, AimdConfig};
use spillway_core::overload::{ClassShares, CpuUsage};
use spillway_core::{Criticality, CRITICALITY_HEADER};
use spillway_core::{Instant, RejectReason};
use std::convert::Infallible;
use std::time::Duration;
use tower::{service_fn, ServiceBuilder, ServiceExt};

use crate::time::TokioClock;

type Body = String;

/// An inner service that answers after `delay` with `status`.
fn slow(
    delay: Duration,
    status: u16,
) -> impl Service<
    http::Request<Body>,
    Response = http::Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<http::Response<Body>, Infallible>> + Send,
> + Clone {
    service_fn(move |_req: http::Request<Body>| async move {
        tokio::time::sleep(delay).await;
        let mut response = http::Response::new(Body::new());
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
        Ok::<_, Infallible>(response)
    })
}

use std::future::Future;

fn request(class: Option<&str>) -> http::Request<Body> {
    let mut builder = http::Request::builder().uri("/");
    if let Some(class) = class {
        builder = builder.header(CRITICALITY_HEADER, class);
    }
    builder.body(Body::new()).expect("valid request")
}

fn hot_layer(clock: TokioClock) -> (BbrLoadShedLayer<TokioClock>, CpuGauge) {
    let gauge = CpuGauge::new();
    gauge.set(CpuUsage::FULL);
    let layer = BbrLoadShedLayer::with_cpu_gauge(BbrConfig::default(), gauge.clone(), clock)
        .expect("default config is valid");
    (layer, gauge)
}

fn overload_reason(error: &BoxError) -> Option<RejectReason> {
    find_rejection(error.as_ref()).map(|r| r.reason)
}

#[tokio::test(start_paused = true)]
async fn hot_cpu_rejects_above_max_inflight_with_overloaded() {
    let (layer, _gauge) = hot_layer(TokioClock);
    let svc =
        ServiceBuilder::new().layer(layer.clone()).service(slow(Duration::from_millis(50), 200));
    // No history: maxInFlight is 1, so two may be in flight and the third is shed.
    let first = svc.clone().oneshot(request(None));
    let second = svc.clone().oneshot(request(None));
    let (a, b) = (tokio::spawn(first), tokio::spawn(second));
    tokio::task::yield_now().await;
    assert_eq!(layer.limiter().inflight(), 2);
    let third = svc.clone().oneshot(request(None)).await;
    let error = third.expect_err("shed");
    assert_eq!(overload_reason(&error), Some(RejectReason::Overloaded));
    assert!(a.await.expect("join").is_ok());
    assert!(b.await.expect("join").is_ok());
    assert_eq!(layer.limiter().inflight(), 0);
}

#[tokio::test(start_paused = true)]
async fn completed_requests_become_rt_samples() {
    let clock = TokioClock;
    let gauge = CpuGauge::new();
    let layer =
        BbrLoadShedLayer::with_cpu_gauge(BbrConfig::default(), gauge, clock).expect("valid");
    let svc =
        ServiceBuilder::new().layer(layer.clone()).service(slow(Duration::from_millis(30), 200));
    for _ in 0..3 {
        svc.clone().oneshot(request(None)).await.expect("cool CPU admits");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stats = layer.limiter().stats(clock.now());
    assert_eq!(stats.min_rt, Duration::from_millis(30));
    assert_eq!(stats.inflight, 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_response_future_releases_inflight_without_a_sample() {
    let clock = TokioClock;
    let (layer, _gauge) = hot_layer(clock);
    let svc =
        ServiceBuilder::new().layer(layer.clone()).service(slow(Duration::from_secs(10), 200));
    let mut pending = Box::pin(svc.clone().oneshot(request(None)));
    // Poll once so the call is admitted and in flight, then cancel it.
    assert!(futures_poll_once(pending.as_mut()).await.is_none());
    assert_eq!(layer.limiter().inflight(), 1);
    drop(pending);
    assert_eq!(layer.limiter().inflight(), 0);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(layer.limiter().stats(clock.now()).max_pass, 1, "no sample from a cancel");
    // Cancelled before ever being polled: the admission made in call() is released too.
    let mut ready = svc.clone();
    let ready = ready.ready().await.expect("ready");
    let never_polled = ready.call(request(None));
    assert_eq!(layer.limiter().inflight(), 1);
    drop(never_polled);
    assert_eq!(layer.limiter().inflight(), 0);
}

/// Polls a future once; `Some` if it finished.
async fn futures_poll_once<F: Future + Unpin>(mut f: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn sheddable_header_is_shed_before_the_default_class() {
    let clock = TokioClock;
    let gauge = CpuGauge::new();
    let layer = BbrLoadShedLayer::with_cpu_gauge(BbrConfig::default(), gauge.clone(), clock)
        .expect("valid");
    // Teach the limiter a capacity of 4 in flight: 40 completions per 100 ms bucket of 10 ms.
    let limiter = layer.limiter().clone();
    // The layers' clock has a process-wide origin: start on the next bucket boundary.
    let bucket_nanos = 100_000_000;
    let start = Instant::from_nanos((clock.now().as_nanos() / bucket_nanos + 1) * bucket_nanos);
    for bucket in 0..5u64 {
        for _ in 0..40 {
            let t = start + Duration::from_nanos(bucket * bucket_nanos);
            let token = limiter.allow(Criticality::Critical, t).expect("cool");
            limiter.done(token, t + Duration::from_millis(10));
        }
    }
    tokio::time::sleep((start + Duration::from_millis(500)) - clock.now()).await;
    assert_eq!(limiter.class_limit(Criticality::Critical, clock.now()), 4);
    assert_eq!(limiter.class_limit(Criticality::Sheddable, clock.now()), 2);
    gauge.set(CpuUsage::FULL);
    let svc = ServiceBuilder::new().layer(layer.clone()).service(slow(Duration::from_secs(1), 200));
    let held: Vec<_> = (0..3).map(|_| tokio::spawn(svc.clone().oneshot(request(None)))).collect();
    tokio::task::yield_now().await;
    assert_eq!(limiter.inflight(), 3);
    let shed = svc.clone().oneshot(request(Some("SHEDDABLE"))).await;
    assert_eq!(overload_reason(&shed.expect_err("3 > 2")), Some(RejectReason::Overloaded));
    // The class in extensions wins over the header.
    let mut critical = request(Some("SHEDDABLE"));
    critical.extensions_mut().insert(Criticality::Critical);
    let admitted = tokio::spawn(svc.clone().oneshot(critical));
    tokio::task::yield_now().await;
    assert_eq!(limiter.inflight(), 4, "critical admitted at 3 <= 4");
    for h in held {
        assert!(h.await.expect("join").is_ok());
    }
    assert!(admitted.await.expect("join").is_ok());
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_and_release_inflight() {
    let (layer, _gauge) = hot_layer(TokioClock);
    let failing = service_fn(|_req: http::Request<Body>| async {
        Err::<http::Response<Body>, BoxError>("backend broke".into())
    });
    let svc = ServiceBuilder::new().layer(layer.clone()).service(failing);
    let error = svc.oneshot(request(None)).await.expect_err("inner error");
    assert_eq!(error.to_string(), "backend broke");
    assert_eq!(overload_reason(&error), None);
    assert_eq!(layer.limiter().inflight(), 0);
}

#[tokio::test]
async fn default_constructor_wires_a_cpu_sampler_on_this_machine() {
    let layer = BbrLoadShedLayer::new(BbrConfig::default()).expect("Linux has a CPU source");
    assert!(layer.limiter().cpu_gauge().get().fraction() <= 1.0);
    assert!(layer._sampler.is_some());
}

#[tokio::test(start_paused = true)]
async fn adaptive_concurrency_refuses_at_the_learned_limit_and_learns_from_outcomes() {
    let clock = TokioClock;
    let aimd =
        Aimd::try_new(AimdConfig { initial_limit: 4, ..AimdConfig::default() }).expect("valid");
    let layer = AdaptiveConcurrencyLayer::with_clock(aimd, ClassShares::uniform(), clock);
    let svc =
        ServiceBuilder::new().layer(layer.clone()).service(slow(Duration::from_millis(20), 200));
    let held: Vec<_> = (0..4).map(|_| tokio::spawn(svc.clone().oneshot(request(None)))).collect();
    tokio::task::yield_now().await;
    let refused = svc.clone().oneshot(request(None)).await.expect_err("4 in flight");
    assert_eq!(overload_reason(&refused), Some(RejectReason::ConcurrencyLimit));
    for h in held {
        assert!(h.await.expect("join").is_ok());
    }
    // Four fast successes: those admitted with at least half the limit in use grew it
    // (in flight at admission 1, 2, 3, 4 against limits 4, 4, 5, 6: three grew it).
    assert_eq!(layer.limiter().limit(), 7);
    assert_eq!(layer.limiter().inflight(), 0);

    // A 503 from the service is a drop: the limit backs off.
    let overloaded =
        ServiceBuilder::new().layer(layer.clone()).service(slow(Duration::from_millis(20), 503));
    let response = overloaded.oneshot(request(None)).await.expect("503 is a response");
    assert_eq!(response.status(), http::StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(layer.limiter().limit(), 6);
}

#[tokio::test(start_paused = true)]
async fn adaptive_concurrency_releases_a_cancelled_request_without_a_sample() {
    let aimd = Aimd::try_new(AimdConfig::default()).expect("valid");
    let layer = AdaptiveConcurrencyLayer::with_clock(aimd, ClassShares::uniform(), TokioClock);
    let svc =
        ServiceBuilder::new().layer(layer.clone()).service(slow(Duration::from_secs(10), 200));
    let mut pending = Box::pin(svc.oneshot(request(None)));
    assert!(futures_poll_once(pending.as_mut()).await.is_none());
    assert_eq!(layer.limiter().inflight(), 1);
    drop(pending);
    assert_eq!(layer.limiter().inflight(), 0);
    assert_eq!(layer.limiter().limit(), 20);
}
