//! Adaptive load shedding as tower layers: [`BbrLoadShedLayer`] (CPU + inflight, kratos BBR
//! style, fed by the CPU sampler) and [`AdaptiveConcurrencyLayer`] (a concurrency limit learned
//! from latency by AIMD or Gradient2).
//!
//! Why: these decide from what the service itself observes — its CPU, its completions, its
//! latency — so a service protects itself without anyone guessing its capacity. The decisions are
//! `spillway-core`'s; this module only reads the request's [`Criticality`](spillway_core::Criticality), asks the core, and
//! gives the admission back when the response future completes or is dropped (a cancelled
//! request never leaks an inflight slot). Refusals fail the call with [`Rejected`](crate::Rejected)
//! (`Overloaded`, 503) for [`rejection_response`](crate::rejection_response) to render.
//!
//! ```
//! use spillway_core::overload::{BbrConfig, CpuGauge, CpuUsage};
//! use spillway_core::SystemClock;
//! use spillway_tower::load_shed::BbrLoadShedLayer;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // In production `BbrLoadShedLayer::new(config)` starts its own CPU sampler.
//! let cpu = CpuGauge::new();
//! let layer = BbrLoadShedLayer::with_cpu_gauge(BbrConfig::default(), cpu.clone(), SystemClock::new())
//!     .expect("valid config");
//! let svc = ServiceBuilder::new().layer(layer).service(service_fn(|_req: http::Request<()>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(()))
//! }));
//! cpu.set(CpuUsage::from_permille(300)); // cool: everything is admitted
//! let response = svc.oneshot(http::Request::new(())).await;
//! assert!(response.is_ok());
//! # }
//! ```

mod concurrency;
mod future;

pub use concurrency::{AdaptiveConcurrency, AdaptiveConcurrencyFuture, AdaptiveConcurrencyLayer};
pub use future::ResponseFuture;

use crate::cpu::{CpuSamplerError, CpuSamplerTask};
use crate::guarded::GuardedFuture;
use crate::rejection::BoxError;
use future::BbrGuard;
use spillway_core::overload::{BbrConfig, BbrConfigError, BbrLimiter, CpuGauge};
use spillway_core::{Clock, SystemClock};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower_layer::Layer;
use tower_service::Service;

/// Why a load-shedding layer could not be built.
#[derive(Debug, thiserror::Error)]
pub enum LoadShedError {
    /// The BBR configuration is invalid.
    #[error(transparent)]
    Config(#[from] BbrConfigError),
    /// No CPU usage source could be read.
    #[error(transparent)]
    Cpu(#[from] CpuSamplerError),
}

/// A [`Layer`] that sheds requests with the BBR-style limiter. Clones share one limiter.
#[derive(Clone, Debug)]
pub struct BbrLoadShedLayer<C = SystemClock> {
    limiter: Arc<BbrLimiter>,
    clock: C,
    /// Keeps the CPU sampler running while any clone of the layer lives.
    _sampler: Option<Arc<CpuSamplerTask>>,
}

impl BbrLoadShedLayer<SystemClock> {
    /// A layer with its own CPU sampler (detected source, 250 ms, decay 0.8) and the system
    /// clock. Must be called inside a tokio runtime (it spawns the sampler task); to share one
    /// sampler among many layers, spawn a [`CpuSamplerTask`] and use
    /// [`BbrLoadShedLayer::with_cpu_gauge`] with its gauge.
    pub fn new(config: BbrConfig) -> Result<BbrLoadShedLayer<SystemClock>, LoadShedError> {
        let sampler = CpuSamplerTask::spawn_default()?;
        let limiter = BbrLimiter::with_cpu_gauge(config, sampler.gauge().clone())?;
        Ok(BbrLoadShedLayer {
            limiter: Arc::new(limiter),
            clock: SystemClock::new(),
            _sampler: Some(Arc::new(sampler)),
        })
    }
}

impl<C: Clock + Clone> BbrLoadShedLayer<C> {
    /// A layer reading CPU usage from `cpu` (a process-wide sampler's gauge, or a gauge a test
    /// sets) and time from `clock`.
    pub fn with_cpu_gauge(
        config: BbrConfig,
        cpu: CpuGauge,
        clock: C,
    ) -> Result<BbrLoadShedLayer<C>, LoadShedError> {
        let limiter = BbrLimiter::with_cpu_gauge(config, cpu)?;
        Ok(BbrLoadShedLayer { limiter: Arc::new(limiter), clock, _sampler: None })
    }

    /// The shared limiter, for its stats.
    pub fn limiter(&self) -> &Arc<BbrLimiter> {
        &self.limiter
    }
}

impl<S, C: Clock + Clone> Layer<S> for BbrLoadShedLayer<C> {
    type Service = BbrLoadShed<S, C>;

    fn layer(&self, inner: S) -> BbrLoadShed<S, C> {
        BbrLoadShed { inner, limiter: self.limiter.clone(), clock: self.clock.clone() }
    }
}

/// The service made by [`BbrLoadShedLayer`].
#[derive(Clone, Debug)]
pub struct BbrLoadShed<S, C = SystemClock> {
    inner: S,
    limiter: Arc<BbrLimiter>,
    clock: C,
}

impl<S, C, B> Service<http::Request<B>> for BbrLoadShed<S, C>
where
    S: Service<http::Request<B>>,
    S::Error: Into<BoxError>,
    C: Clock + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let class = crate::criticality::of_request(&request);
        match self.limiter.allow(class, self.clock.now()) {
            Ok(token) => {
                let guard = BbrGuard::new(self.limiter.clone(), self.clock.clone(), token);
                GuardedFuture::called(self.inner.call(request), guard)
            }
            Err(rejection) => GuardedFuture::refused(rejection),
        }
    }
}

#[cfg(test)]
mod tests;
