//! Client side: each outgoing call is paid from the request's budget and carries what is left;
//! a call the budget cannot pay for is not made.

use super::future::ResponseFuture;
use crate::rejection::BoxError;
use http::{HeaderValue, Request};
use spillway_core::budget::{format_budget, parse_budget, BUDGET_HEADER};
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// Charges outgoing calls to the request's budget and propagates the remainder.
///
/// The budget is the outgoing request's [`RequestBudget`](super::RequestBudget) extension,
/// else the current task's ([`current`](super::current)). With none, the request passes
/// untouched (no charge; a header the caller set stays). Otherwise, at the moment of the call:
/// - the call's cost (default 1) is spent; when the budget cannot pay, the call fails at once
///   with [`Rejected`](crate::Rejected)
///   ([`BudgetExhausted`](spillway_core::RejectReason::BudgetExhausted)) — the inner service
///   is not called, nothing goes on the wire;
/// - what is left is written as [`BUDGET_HEADER`]; a valid header the caller set is kept only
///   if it is not larger, so no outgoing call carries more than the request has left.
///
/// Place it below a retry layer, so that each attempt is paid and carries the remainder at
/// that attempt, and below breakers and throttles, so that a call they refuse costs nothing.
#[derive(Copy, Clone, Debug)]
pub struct PropagateBudgetLayer {
    cost: u64,
}

impl PropagateBudgetLayer {
    /// The default cost of a call: 1 unit, so the budget also bounds how many calls a request
    /// tree makes.
    pub const DEFAULT_CALL_COST: u64 = 1;

    /// The layer, charging [`DEFAULT_CALL_COST`](PropagateBudgetLayer::DEFAULT_CALL_COST).
    pub fn new() -> Self {
        PropagateBudgetLayer { cost: PropagateBudgetLayer::DEFAULT_CALL_COST }
    }

    /// Charges `units` per call (0: propagate without charging).
    pub fn with_cost(self, units: u64) -> Self {
        PropagateBudgetLayer { cost: units }
    }
}

impl Default for PropagateBudgetLayer {
    fn default() -> Self {
        PropagateBudgetLayer::new()
    }
}

impl<S> Layer<S> for PropagateBudgetLayer {
    type Service = PropagateBudget<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PropagateBudget { inner, layer: *self }
    }
}

/// The service made by [`PropagateBudgetLayer`].
#[derive(Clone, Debug)]
pub struct PropagateBudget<S> {
    inner: S,
    layer: PropagateBudgetLayer,
}

impl<S, B> Service<Request<B>> for PropagateBudget<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let Some(budget) = super::of_request(&req) else {
            return ResponseFuture::called(self.inner.call(req));
        };
        let left = match budget.spend(self.layer.cost) {
            Ok(left) => left,
            Err(refused) => {
                tracing::debug!(
                    cost = self.layer.cost,
                    remaining = budget.remaining(),
                    "budget cannot pay for this call, not calling"
                );
                return ResponseFuture::refused(refused.0);
            }
        };
        let headers = req.headers_mut();
        let keep = headers
            .get(BUDGET_HEADER)
            .is_some_and(|v| parse_budget(v.as_bytes()).is_ok_and(|units| units <= left));
        if !keep {
            if let Ok(value) = HeaderValue::from_bytes(format_budget(left).as_bytes()) {
                headers.insert(BUDGET_HEADER, value);
            }
        }
        ResponseFuture::called(self.inner.call(req))
    }
}
