//! Unit tests of the budget layers with in-process services: what the handler sees, what a
//! downstream receives, and that refused calls never reach the inner service.

#![allow(clippy::unwrap_used)] // a failed unwrap is a test failure

use super::*;
use crate::rejection::{find_rejection, rejection_response, BoxError};
use http::HeaderValue;
use spillway_core::RejectReason;
use std::convert::Infallible;
use std::sync::atomic::AtomicUsize;
use tower::{service_fn, Layer, Service, ServiceExt};

fn with_budget(units: &str) -> Request<()> {
    Request::builder().header(BUDGET_HEADER, units).body(()).unwrap()
}

fn reason(e: &BoxError) -> Option<RejectReason> {
    find_rejection(e.as_ref()).map(|r| r.reason)
}

/// The budget the handler sees: in its request's extensions and in its task.
async fn report(req: Request<()>) -> Result<(Option<u64>, Option<u64>), Infallible> {
    tokio::task::yield_now().await;
    let from_ext = req.extensions().get::<RequestBudget>().map(RequestBudget::remaining);
    Ok((from_ext, current().map(|b| b.remaining())))
}

/// A downstream behind the client layer, answering with the budget header it received and
/// counting its calls.
fn echo(
    calls: Arc<AtomicUsize>,
) -> impl Service<Request<()>, Response = Option<HeaderValue>, Error = BoxError> + Clone {
    PropagateBudgetLayer::new().layer(service_fn(move |req: Request<()>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move { Ok::<_, Infallible>(req.headers().get(BUDGET_HEADER).cloned()) }
    }))
}

#[tokio::test(start_paused = true)]
async fn handler_sees_the_incoming_budget_less_the_service_cost() {
    let svc = BudgetLayer::new().with_cost(3).layer(service_fn(report));
    assert_eq!(svc.oneshot(with_budget("10")).await.unwrap(), (Some(7), Some(7)));
}

#[tokio::test(start_paused = true)]
async fn service_cost_above_the_budget_is_refused_with_429_without_calling_the_handler() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let svc = BudgetLayer::new().with_cost(3).layer(service_fn(move |_req: Request<()>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok::<_, Infallible>(()) }
    }));
    let err = svc.oneshot(with_budget("2")).await.unwrap_err();
    assert_eq!(reason(&err), Some(RejectReason::BudgetExhausted));
    let response = rejection_response(&find_rejection(err.as_ref()).unwrap());
    assert_eq!(response.status(), 429);
    assert!(response.headers().get(http::header::RETRY_AFTER).is_none());
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn without_header_there_is_no_budget_unless_a_default_is_configured() {
    let unlimited = BudgetLayer::new().with_cost(3).layer(service_fn(report));
    assert_eq!(unlimited.oneshot(Request::new(())).await.unwrap(), (None, None));
    let defaulted = BudgetLayer::new().with_default(5).with_cost(3).layer(service_fn(report));
    assert_eq!(defaulted.clone().oneshot(Request::new(())).await.unwrap(), (Some(2), Some(2)));
    // A malformed header counts as absent; a valid one wins over the default.
    assert_eq!(defaulted.clone().oneshot(with_budget("-1")).await.unwrap(), (Some(2), Some(2)));
    assert_eq!(defaulted.oneshot(with_budget("50")).await.unwrap(), (Some(47), Some(47)));
}

#[tokio::test(start_paused = true)]
async fn granting_layer_bounds_a_client_supplied_budget_by_the_role_grant() {
    let grant = BudgetGrant::builder(10).rule("x-role", [("admin", 1000)]).build().unwrap();
    let svc = BudgetLayer::granting(grant).layer(service_fn(report));
    let greedy = with_budget("1000000");
    assert_eq!(svc.clone().oneshot(greedy).await.unwrap(), (Some(10), Some(10)));
    let admin = Request::builder().header("x-role", "admin").body(()).unwrap();
    assert_eq!(svc.clone().oneshot(admin).await.unwrap(), (Some(1000), Some(1000)));
    // A lower incoming budget (an inner hop that already spent some) is kept.
    let spent = Request::builder().header("x-role", "admin").header(BUDGET_HEADER, "40");
    assert_eq!(svc.oneshot(spent.body(()).unwrap()).await.unwrap(), (Some(40), Some(40)));
}

#[tokio::test(start_paused = true)]
async fn outgoing_call_carries_the_remainder_after_service_handler_and_call_costs() {
    let calls = Arc::new(AtomicUsize::new(0));
    let downstream = echo(calls.clone());
    let server = BudgetLayer::new().with_cost(2).layer(service_fn(move |_req: Request<()>| {
        let downstream = downstream.clone();
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            current().unwrap().spend(4)?;
            downstream.oneshot(Request::new(())).await
        }
    }));
    let seen = server.oneshot(with_budget("10")).await.unwrap();
    assert_eq!(seen, Some(HeaderValue::from_static("3"))); // 10 - 2 - 4 - 1
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn unaffordable_call_is_refused_locally_and_the_downstream_sees_nothing() {
    let calls = Arc::new(AtomicUsize::new(0));
    let downstream = echo(calls.clone());
    let err = scope(RequestBudget::new(0), downstream.oneshot(Request::new(()))).await.unwrap_err();
    assert_eq!(reason(&err), Some(RejectReason::BudgetExhausted));
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn calls_draw_on_one_shared_balance_until_it_is_spent() {
    let calls = Arc::new(AtomicUsize::new(0));
    let downstream = echo(calls.clone());
    let budget = RequestBudget::new(2);
    let sent = scope(budget.clone(), async {
        let mut sent = Vec::new();
        for _ in 0..3 {
            sent.push(downstream.clone().oneshot(Request::new(())).await.map_err(|e| reason(&e)));
        }
        sent
    })
    .await;
    let one = HeaderValue::from_static("1");
    let zero = HeaderValue::from_static("0");
    assert_eq!(sent, [Ok(Some(one)), Ok(Some(zero)), Err(Some(RejectReason::BudgetExhausted))]);
    assert_eq!((budget.remaining(), calls.load(Ordering::SeqCst)), (0, 2));
}

#[tokio::test(start_paused = true)]
async fn larger_header_set_on_the_outgoing_request_is_replaced_smaller_one_kept() {
    let calls = Arc::new(AtomicUsize::new(0));
    let downstream = echo(calls);
    let budget = RequestBudget::new(10);
    let seen = scope(budget.clone(), downstream.clone().oneshot(with_budget("1000"))).await;
    assert_eq!(seen.unwrap(), Some(HeaderValue::from_static("9")));
    let seen = scope(budget.clone(), downstream.oneshot(with_budget("4"))).await;
    assert_eq!(seen.unwrap(), Some(HeaderValue::from_static("4")));
    assert_eq!(budget.remaining(), 8);
}

#[tokio::test(start_paused = true)]
async fn server_layer_rewrites_the_forwarded_header_to_what_is_left() {
    let svc = BudgetLayer::new().with_cost(3).layer(service_fn(|req: Request<()>| async move {
        Ok::<_, Infallible>(req.headers().get(BUDGET_HEADER).cloned())
    }));
    let seen = svc.oneshot(with_budget(" 10 ")).await.unwrap();
    assert_eq!(seen, Some(HeaderValue::from_static("7")));
}

#[tokio::test(start_paused = true)]
async fn nested_budget_layer_charges_the_same_balance() {
    let inner = BudgetLayer::new().with_default(1000).with_cost(1);
    let svc = BudgetLayer::new().with_cost(2).layer(inner.layer(service_fn(report)));
    assert_eq!(svc.oneshot(with_budget("10")).await.unwrap(), (Some(7), Some(7)));
}

#[tokio::test(start_paused = true)]
async fn reserved_share_is_carried_by_its_request_and_taken_from_the_parent() {
    let calls = Arc::new(AtomicUsize::new(0));
    let downstream = echo(calls);
    let parent = RequestBudget::new(10);
    let mut req = Request::new(());
    req.extensions_mut().insert(parent.reserve(4).unwrap());
    let seen = scope(parent.clone(), downstream.oneshot(req)).await.unwrap();
    assert_eq!(seen, Some(HeaderValue::from_static("3"))); // the share, less the call
    assert_eq!(parent.remaining(), 6);
    assert!(parent.reserve(7).is_err());
}

#[tokio::test(start_paused = true)]
async fn spawned_work_inherits_the_same_budget() {
    let budget = RequestBudget::new(5);
    let left = scope(budget.clone(), async {
        tokio::spawn(crate::deadline::inherit(async { current().map(|b| b.spend(2)) }))
            .await
            .unwrap()
    })
    .await;
    assert_eq!(left.map(|r| r.ok()), Some(Some(3)));
    assert_eq!(budget.remaining(), 3);
}

#[tokio::test(start_paused = true)]
async fn outside_any_request_the_call_passes_untouched() {
    let calls = Arc::new(AtomicUsize::new(0));
    let downstream = echo(calls.clone());
    assert_eq!(downstream.clone().oneshot(Request::new(())).await.unwrap(), None);
    let explicit = downstream.oneshot(with_budget("12")).await.unwrap();
    assert_eq!(explicit, Some(HeaderValue::from_static("12")));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}
