//! Server side: the incoming budget (or a default, or the entry's grant) becomes the request's
//! [`RequestBudget`], after this service's own cost is paid.

use super::future::ResponseFuture;
use super::{RequestBudget, CURRENT};
use crate::rejection::BoxError;
use http::{HeaderMap, HeaderValue, Request};
use spillway_core::budget::{format_budget, parse_budget, BudgetGrant, BUDGET_HEADER};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// Reads the request's cost budget, charges this service's cost, and hands the rest to the
/// handler. See the [module docs](super).
///
/// Per request:
/// 1. the budget is one already in the request's extensions or the current task (an outer
///    `BudgetLayer`, or an in-process call: one balance, never a second one), else from the
///    source configured: the incoming [`BUDGET_HEADER`] ([`new`](BudgetLayer::new), absent or
///    malformed: the [default](BudgetLayer::with_default), or none), or the entry's
///    [`BudgetGrant`] ([`granting`](BudgetLayer::granting));
/// 2. with no budget, the inner service is called as is: unlimited, nothing charged;
/// 3. otherwise [the cost](BudgetLayer::with_cost) is spent; when the budget cannot pay, the
///    request fails with [`Rejected`](crate::Rejected)
///    ([`BudgetExhausted`](spillway_core::RejectReason::BudgetExhausted), 429, no
///    `Retry-After`) without calling the inner service;
/// 4. the [`RequestBudget`] goes into the request's extensions and a task-local
///    ([`current`](super::current)) covering the inner call and its response future, and the
///    request's [`BUDGET_HEADER`] is rewritten to what is left, so a handler or proxy that
///    forwards the request's headers carries no more than this hop left.
///
/// ```
/// use spillway_tower::budget::{BudgetGrant, BudgetLayer};
/// // Behind the gateway: trust the header; 100 units when it is missing; 2 units per request.
/// let inner = BudgetLayer::new().with_default(100).with_cost(2);
/// // At the edge, without a gateway: grant by role, 10 units for everyone else.
/// let grant = BudgetGrant::builder(10).rule("x-role", [("admin", 1000)]).build()?;
/// let edge = BudgetLayer::granting(grant).with_cost(2);
/// # Ok::<(), spillway_core::budget::BudgetGrantError>(())
/// ```
#[derive(Clone, Debug)]
pub struct BudgetLayer {
    source: Source,
    cost: u64,
}

/// Where a request's budget comes from when it does not carry one in-process already.
#[derive(Clone, Debug)]
enum Source {
    /// The incoming header; absent or malformed: this default, or no budget.
    Incoming { default: Option<u64> },
    /// The entry's grant, with which an incoming header can only lower the budget.
    Granted(Arc<BudgetGrant>),
}

impl BudgetLayer {
    /// Trusts the incoming [`BUDGET_HEADER`] (the entry set it). Deliberate default: a request
    /// without it (or with a malformed one) has no budget — unlimited, nothing charged,
    /// nothing forwarded — so adding this layer changes nothing for callers that do not use
    /// budgets. Set [`with_default`](BudgetLayer::with_default) to limit them too.
    pub fn new() -> Self {
        BudgetLayer { source: Source::Incoming { default: None }, cost: 0 }
    }

    /// Requests without a valid [`BUDGET_HEADER`] get `units`. Ignored by a
    /// [`granting`](BudgetLayer::granting) layer, whose grant has its own default.
    pub fn with_default(self, units: u64) -> Self {
        match self.source {
            Source::Incoming { .. } => {
                BudgetLayer { source: Source::Incoming { default: Some(units) }, ..self }
            }
            Source::Granted(_) => self,
        }
    }

    /// The entry's form, for a Rust service facing clients directly: every request gets
    /// [`BudgetGrant::budget_for`] its headers — the grant of its role, lowered (never raised)
    /// by a valid incoming [`BUDGET_HEADER`].
    pub fn granting(grant: BudgetGrant) -> Self {
        BudgetLayer { source: Source::Granted(Arc::new(grant)), cost: 0 }
    }

    /// This service's own fixed cost per request, paid up front (default 0).
    pub fn with_cost(self, units: u64) -> Self {
        BudgetLayer { cost: units, ..self }
    }

    fn budget_units(&self, headers: &HeaderMap) -> Option<u64> {
        let header = |name: &str| headers.get(name).map(HeaderValue::as_bytes);
        match &self.source {
            Source::Granted(grant) => Some(grant.budget_for(header)),
            Source::Incoming { default } => match header(BUDGET_HEADER).map(parse_budget) {
                Some(Ok(units)) => Some(units),
                Some(Err(error)) => {
                    tracing::debug!(%error, "ignoring malformed budget header");
                    *default
                }
                None => *default,
            },
        }
    }
}

impl Default for BudgetLayer {
    fn default() -> Self {
        BudgetLayer::new()
    }
}

impl<S> Layer<S> for BudgetLayer {
    type Service = BudgetService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BudgetService { inner, layer: self.clone() }
    }
}

/// The service made by [`BudgetLayer`].
#[derive(Clone, Debug)]
pub struct BudgetService<S> {
    inner: S,
    layer: BudgetLayer,
}

impl<S, B> Service<Request<B>> for BudgetService<S>
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
        let budget = match super::of_request(&req) {
            Some(budget) => budget,
            None => match self.layer.budget_units(req.headers()) {
                Some(units) => RequestBudget::new(units),
                None => return ResponseFuture::called(self.inner.call(req)),
            },
        };
        let left = match budget.spend(self.layer.cost) {
            Ok(left) => left,
            Err(refused) => {
                tracing::debug!(
                    cost = self.layer.cost,
                    remaining = budget.remaining(),
                    "budget cannot pay for this service, refusing"
                );
                return ResponseFuture::refused(refused.0);
            }
        };
        if let Ok(value) = HeaderValue::from_bytes(format_budget(left).as_bytes()) {
            req.headers_mut().insert(BUDGET_HEADER, value);
        }
        req.extensions_mut().insert(budget.clone());
        let inner = &mut self.inner;
        let future = CURRENT.sync_scope(budget.clone(), || inner.call(req));
        ResponseFuture::scoped(CURRENT.scope(budget, future))
    }
}
