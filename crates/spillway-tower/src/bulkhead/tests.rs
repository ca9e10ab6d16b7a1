//! Behaviour of the bulkhead layer under paused tokio time: ordering, timeouts, displacement,
//! and no slot leaked however a request ends.

#![allow(clippy::unwrap_used)] // a failed unwrap is a test failure

use super::*;
use crate::rejection::{find_rejection, rejection_response};
use parking_lot::Mutex;
use spillway_core::{Criticality, RejectReason, CRITICALITY_HEADER};
use std::convert::Infallible;
use std::time::Duration;
use tokio::time::Instant as TokioInstant;
use tower::service_fn;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn layer(max_concurrent: usize, max_queue: usize, max_wait_ms: u64) -> BulkheadLayer {
    BulkheadLayer::try_new(BulkheadConfig::new(max_concurrent, max_queue, ms(max_wait_ms))).unwrap()
}

/// A request that holds its slot for `hold_ms` and carries a class.
fn req(hold_ms: u64, class: Criticality) -> Request<u64> {
    Request::builder().header(CRITICALITY_HEADER, class.as_str()).body(hold_ms).unwrap()
}

type Log = Arc<Mutex<Vec<Criticality>>>;

/// A handler that logs its request's class when it starts, then works for the body's ms.
fn worker(
    log: Log,
) -> impl Service<Request<u64>, Response = u64, Error = Infallible, Future: Send> + Clone + Send {
    service_fn(move |req: Request<u64>| {
        let log = log.clone();
        async move {
            log.lock().push(criticality::of_request(&req));
            tokio::time::sleep(ms(*req.body())).await;
            Ok::<_, Infallible>(*req.body())
        }
    })
}

fn reason(result: Result<u64, BoxError>) -> Option<RejectReason> {
    result.err().and_then(|e| find_rejection(e.as_ref())).map(|r| r.reason)
}

#[tokio::test(start_paused = true)]
async fn over_the_limit_requests_queue_then_run_when_a_slot_frees() {
    let layer = layer(1, 1, 1000);
    let mut svc = layer.layer(worker(Log::default()));
    let started = TokioInstant::now();
    let first = tokio::spawn(svc.call(req(100, Criticality::Critical)));
    let second = tokio::spawn(svc.call(req(100, Criticality::Critical)));
    assert_eq!((layer.in_flight(), layer.queued()), (1, 1));

    let err = svc.call(req(100, Criticality::Critical)).await.unwrap_err();
    let rejection = find_rejection(err.as_ref()).unwrap();
    assert_eq!(rejection.reason, RejectReason::BulkheadFull);
    let response = rejection_response(&rejection);
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()[http::header::RETRY_AFTER], "1");

    assert_eq!(first.await.unwrap().unwrap(), 100);
    assert_eq!(second.await.unwrap().unwrap(), 100);
    assert_eq!(started.elapsed(), ms(200), "the second ran right after the first");
    assert_eq!((layer.in_flight(), layer.queued()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn queued_request_fails_with_queue_timeout_after_max_wait() {
    let layer = layer(1, 1, 50);
    let mut svc = layer.layer(worker(Log::default()));
    let _holder = tokio::spawn(svc.call(req(1000, Criticality::Critical)));
    let started = TokioInstant::now();
    let waited = svc.call(req(10, Criticality::Critical)).await;
    assert_eq!(reason(waited), Some(RejectReason::QueueTimeout));
    assert_eq!(started.elapsed(), ms(50));
    assert_eq!((layer.in_flight(), layer.queued()), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn freed_slot_goes_to_the_most_critical_waiter_first() {
    let log = Log::default();
    let layer = layer(1, 10, 1000);
    let mut svc = layer.layer(worker(log.clone()));
    let mut running = vec![tokio::spawn(svc.call(req(10, Criticality::Critical)))];
    for class in [
        Criticality::Sheddable,
        Criticality::CriticalPlus,
        Criticality::SheddablePlus,
        Criticality::Critical,
    ] {
        running.push(tokio::spawn(svc.call(req(10, class))));
    }
    for handle in running {
        handle.await.unwrap().unwrap();
    }
    let order = log.lock().clone();
    assert_eq!(
        order,
        vec![
            Criticality::Critical,
            Criticality::CriticalPlus,
            Criticality::Critical,
            Criticality::SheddablePlus,
            Criticality::Sheddable,
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn full_queue_displaces_a_less_critical_waiter_with_bulkhead_full() {
    let layer = layer(1, 1, 1000);
    let mut svc = layer.layer(worker(Log::default()));
    let holder = tokio::spawn(svc.call(req(100, Criticality::Critical)));
    let batch = tokio::spawn(svc.call(req(10, Criticality::Sheddable)));
    let started = TokioInstant::now();
    let urgent = tokio::spawn(svc.call(req(10, Criticality::CriticalPlus)));
    assert_eq!(reason(batch.await.unwrap()), Some(RejectReason::BulkheadFull));
    assert_eq!(started.elapsed(), Duration::ZERO, "displaced at once, not at max wait");
    assert_eq!(urgent.await.unwrap().unwrap(), 10);
    holder.await.unwrap().unwrap();
    assert_eq!((layer.in_flight(), layer.queued()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn dropped_waiting_request_leaves_the_queue() {
    let layer = layer(1, 1, 1000);
    let mut svc = layer.layer(worker(Log::default()));
    let holder = tokio::spawn(svc.call(req(100, Criticality::Critical)));
    let abandoned = svc.call(req(10, Criticality::Critical));
    assert_eq!(layer.queued(), 1);
    drop(abandoned);
    assert_eq!(layer.queued(), 0);
    let next = tokio::spawn(svc.call(req(10, Criticality::Critical)));
    assert_eq!(next.await.unwrap().unwrap(), 10);
    holder.await.unwrap().unwrap();
    assert_eq!(layer.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn cancelled_running_request_gives_its_slot_to_the_next_waiter() {
    let layer = layer(1, 1, 1000);
    let mut svc = layer.layer(worker(Log::default()));
    let running = tokio::spawn(svc.call(req(10_000, Criticality::Critical)));
    let started = TokioInstant::now();
    let waiting = tokio::spawn(svc.call(req(10, Criticality::Critical)));
    tokio::time::sleep(ms(20)).await;
    running.abort();
    assert!(running.await.unwrap_err().is_cancelled());
    assert_eq!(waiting.await.unwrap().unwrap(), 10);
    assert_eq!(started.elapsed(), ms(30));
    assert_eq!((layer.in_flight(), layer.queued()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn slot_granted_to_an_abandoned_waiter_is_passed_on() {
    let layer = layer(1, 2, 1000);
    let mut svc = layer.layer(worker(Log::default()));
    let holder = tokio::spawn(svc.call(req(100, Criticality::Critical)));
    let never_polled = svc.call(req(10, Criticality::Critical));
    let last = tokio::spawn(svc.call(req(10, Criticality::Critical)));
    holder.await.unwrap().unwrap();
    // The slot went to `never_polled`, which holds it without running.
    assert_eq!((layer.in_flight(), layer.queued()), (1, 1));
    drop(never_polled);
    assert_eq!(last.await.unwrap().unwrap(), 10);
    assert_eq!((layer.in_flight(), layer.queued()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn grant_racing_the_wait_timeout_never_leaks_a_slot() {
    let layer = layer(1, 1, 100);
    let mut svc = layer.layer(worker(Log::default()));
    // The holder finishes exactly when the waiter's max wait ends.
    let holder = tokio::spawn(svc.call(req(100, Criticality::Critical)));
    let waiter = tokio::spawn(svc.call(req(10, Criticality::Critical)));
    holder.await.unwrap().unwrap();
    let outcome = waiter.await.unwrap();
    assert!(
        outcome.is_ok() || reason(outcome) == Some(RejectReason::QueueTimeout),
        "either served or timed out"
    );
    assert_eq!((layer.in_flight(), layer.queued()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn wait_is_cut_short_by_the_request_deadline() {
    let layer = layer(1, 1, 1000);
    let mut svc = layer.layer(worker(Log::default()));
    let _holder = tokio::spawn(svc.call(req(10_000, Criticality::Critical)));
    let mut late = req(10, Criticality::Critical);
    late.extensions_mut().insert(Deadline::after(TokioClock.now(), ms(30)));
    let started = TokioInstant::now();
    assert_eq!(reason(svc.call(late).await), Some(RejectReason::DeadlineExceeded));
    assert_eq!(started.elapsed(), ms(30));
    assert_eq!(layer.queued(), 0);
}

#[tokio::test(start_paused = true)]
async fn inner_error_is_passed_through_and_the_slot_released() {
    let layer = layer(1, 0, 1);
    let failing = service_fn(|_req: Request<u64>| async { Err::<u64, _>("backend broke") });
    let err = layer.layer(failing).call(req(0, Criticality::Critical)).await.unwrap_err();
    assert_eq!(err.to_string(), "backend broke");
    assert!(find_rejection(err.as_ref()).is_none());
    assert_eq!(layer.in_flight(), 0);
}

#[test]
fn impossible_limits_are_refused_when_the_layer_is_built() {
    let err = BulkheadLayer::try_new(BulkheadConfig::new(0, 0, ms(1))).err();
    assert_eq!(err, Some(BulkheadConfigError::ZeroConcurrency));
}

#[tokio::test(start_paused = true)]
async fn behind_criticality_and_deadline_layers_a_waiter_gives_up_at_its_deadline() {
    use crate::criticality::CriticalityLayer;
    use crate::deadline::{DeadlineLayer, DeadlinePolicy};
    use tower::ServiceBuilder;

    let bulkhead = layer(1, 4, 1000);
    let policy = DeadlinePolicy::builder(ms(2000)).build().unwrap();
    let mut svc = ServiceBuilder::new()
        .layer(CriticalityLayer::new())
        .layer(DeadlineLayer::new(policy))
        .layer(bulkhead.clone())
        .service(worker(Log::default()));
    let holder = tokio::spawn(svc.call(req(500, Criticality::Critical)));
    let mut hurried = req(10, Criticality::CriticalPlus);
    hurried.headers_mut().insert("x-request-timeout", http::HeaderValue::from_static("100ms"));
    let started = TokioInstant::now();
    let err = svc.call(hurried).await.unwrap_err();
    let rejection = find_rejection(err.as_ref()).unwrap();
    assert_eq!(rejection_response(&rejection).status(), 504);
    assert_eq!(started.elapsed(), ms(100));
    assert_eq!(bulkhead.queued(), 0);
    assert_eq!(holder.await.unwrap().unwrap(), 500);
    assert_eq!(bulkhead.in_flight(), 0);
}
