//! Cost budgets (seed 003) in a service: read the request's `x-spillway-budget`, pay this
//! service's own cost, let the handler spend more, and send only what is left downstream —
//! refusing a call the remainder cannot pay for before it touches the network.
//!
//! Why: the entry (the gateway, or a [`BudgetLayer::granting`] edge) grants each request a
//! quota of cost units by its caller's role; every hop spends some. Deadlines bound how long a
//! call tree runs, budgets bound how much work it causes: a request that fans out, retries or
//! recurses past what its role allows stops where its budget runs out.
//!
//! The arithmetic and the wire form are `spillway_core::budget`'s; this module adds the
//! plumbing, shaped like [`criticality`](crate::criticality) and [`deadline`](crate::deadline):
//! - [`BudgetLayer`] (server side) reads [`BUDGET_HEADER`] (absent or malformed: a configured
//!   default, or no budget at all — unlimited — by default), charges this service's fixed
//!   cost up front ([`BudgetLayer::with_cost`]; too little left: [`Rejected`] with
//!   [`RejectReason::BudgetExhausted`], 429 through
//!   [`rejection_response`](crate::rejection_response), without calling the inner service),
//!   and hands the rest to the handler as a [`RequestBudget`]: in the request's extensions and
//!   in a task-local ([`current`]) covering the inner `call` and its response future.
//! - [`RequestBudget`] is shared by every clone (an `Arc<AtomicU64>`): the handler's
//!   [`spend`](RequestBudget::spend) and the client layer's charges draw on one balance.
//! - [`PropagateBudgetLayer`] (client side) charges each outgoing call (default 1 unit), refuses
//!   it locally with [`RejectReason::BudgetExhausted`] when the remainder cannot pay, and
//!   writes the remainder after the charge into the outgoing [`BUDGET_HEADER`].
//! - Task-locals do not cross `tokio::spawn`: [`crate::deadline::inherit`] carries the budget
//!   along with the deadline and the criticality (or use [`scope`]).
//!
//! Without a budget (no header and no default), nothing is charged and outgoing requests go
//! without the header: the callee applies its own default.
//!
//! ## Fail or degrade
//!
//! By default an unaffordable call fails with `Rejected(BudgetExhausted)`, which the server
//! stack's error handler renders as a 429 like any other refusal. A handler that has a cheaper
//! answer — a cached value, a partial page — asks first with [`RequestBudget::can_afford`] and
//! skips the call instead:
//!
//! ```
//! use spillway_core::budget::BUDGET_HEADER;
//! use spillway_tower::budget::{self, BudgetLayer, PropagateBudgetLayer};
//! use http::Request;
//! use std::convert::Infallible;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! const RANKING_COST: u64 = 5; // this handler's own work
//! const CALL_COST: u64 = 1; // what the client layer charges per call
//! // The downstream answers with the budget it received.
//! let downstream = PropagateBudgetLayer::new().layer(service_fn(|req: Request<()>| async move {
//!     Ok::<_, Infallible>(format!("fresh, {:?} left", req.headers()[BUDGET_HEADER]))
//! }));
//! // The service costs 2 units per request; no header means no limit.
//! let server = BudgetLayer::new().with_cost(2).layer(service_fn(move |_req: Request<()>| {
//!     let downstream = downstream.clone();
//!     async move {
//!         let Some(budget) = budget::current() else {
//!             return downstream.oneshot(Request::new(())).await; // unlimited
//!         };
//!         budget.spend(RANKING_COST)?; // not enough: 429 budget_exhausted
//!         if !budget.can_afford(CALL_COST) {
//!             return Ok("cached".to_owned()); // degrade instead of failing
//!         }
//!         downstream.oneshot(Request::new(())).await
//!     }
//! }));
//! let with = |units: &str| Request::builder().header(BUDGET_HEADER, units).body(()).unwrap();
//! assert_eq!(server.clone().oneshot(with("10")).await.unwrap(), "fresh, \"2\" left"); // 10-2-5-1
//! assert_eq!(server.clone().oneshot(with("7")).await.unwrap(), "cached"); // 7-2-5 = 0
//! assert!(server.oneshot(with("6")).await.is_err()); // 6-2 < 5
//! # }
//! ```
//!
//! A budget seen by calls running in parallel is shared, and each child is sent what is left
//! at its call, so siblings together may be sent more than the parent holds. To give each
//! branch of a fan-out a fixed share, [`RequestBudget::reserve`] carves it off the parent, and
//! the outgoing request carries it as its extension (which the client layer prefers).
//!
//! [`Rejected`]: crate::Rejected
//! [`RejectReason::BudgetExhausted`]: spillway_core::RejectReason::BudgetExhausted

mod client;
mod future;
mod server;
#[cfg(test)]
mod tests;

pub use client::{PropagateBudget, PropagateBudgetLayer};
pub use future::ResponseFuture;
pub use server::{BudgetLayer, BudgetService};
pub use spillway_core::budget::{Budget, BudgetGrant, BUDGET_HEADER};

use http::Request;
use spillway_core::budget::Budget as CoreBudget;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::task::futures::TaskLocalFuture;

tokio::task_local! {
    static CURRENT: RequestBudget;
}

/// The budget of the request the current task is serving, if a [`BudgetLayer`] (or [`scope`])
/// set one.
pub fn current() -> Option<RequestBudget> {
    CURRENT.try_with(RequestBudget::clone).ok()
}

/// Runs `future` with `budget` as the current request budget.
pub fn scope<F: Future>(budget: RequestBudget, future: F) -> TaskLocalFuture<RequestBudget, F> {
    CURRENT.scope(budget, future)
}

/// The request's budget: its extensions (set by [`BudgetLayer`], or by a handler for one
/// outgoing call), else the current task's. `None` means no budget applies (unlimited).
pub fn of_request<B>(req: &Request<B>) -> Option<RequestBudget> {
    req.extensions().get::<RequestBudget>().cloned().or_else(current)
}

/// What is left of a request's cost budget, shared by every clone: cheap to clone (one
/// `Arc`), spent atomically, so the handler, the tasks it spawns and the client layer draw on
/// one balance. Spending never underflows and nothing makes the balance grow.
#[derive(Clone, Debug)]
pub struct RequestBudget {
    units: Arc<AtomicU64>,
}

impl RequestBudget {
    /// A budget of `units`, e.g. for a test or a request that enters without a layer.
    pub fn new(units: u64) -> RequestBudget {
        RequestBudget { units: Arc::new(AtomicU64::new(units)) }
    }

    /// The units left now.
    pub fn remaining(&self) -> u64 {
        self.units.load(Ordering::Acquire)
    }

    /// True when `cost` can be paid now. With concurrent spenders the answer may be stale by
    /// the time of the call, which then fails as usual: degrade on `false`, handle the error
    /// anyway.
    pub fn can_afford(&self, cost: u64) -> bool {
        CoreBudget::new(self.remaining()).can_afford(cost)
    }

    /// Spends `cost` and returns what is left, or refuses with
    /// [`BudgetExhausted`](spillway_core::RejectReason::BudgetExhausted) (429, no
    /// `Retry-After`: retrying refills nothing) without spending when less than `cost` is left.
    /// The error converts into a [`Rejected`](crate::Rejected) with `?` in a handler returning
    /// [`BoxError`](crate::BoxError).
    pub fn spend(&self, cost: u64) -> Result<u64, crate::Rejected> {
        let spent = self.units.fetch_update(Ordering::AcqRel, Ordering::Acquire, |units| {
            CoreBudget::new(units).try_spend(cost).ok()
        });
        // Either way, `try_spend` on the balance it saw gives the answer again.
        let seen = match spent {
            Ok(before) | Err(before) => before,
        };
        CoreBudget::new(seen).try_spend(cost).map_err(crate::Rejected::from)
    }

    /// Carves `units` off this budget into a new, separate one (e.g. the share of one branch
    /// of a fan-out, put in that outgoing request's extensions), or refuses like
    /// [`spend`](RequestBudget::spend).
    pub fn reserve(&self, units: u64) -> Result<RequestBudget, crate::Rejected> {
        self.spend(units).map(|_| RequestBudget::new(units))
    }
}
