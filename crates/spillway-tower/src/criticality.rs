//! Criticality propagation: reads the class from the request header, stores it in extensions,
//! forwards it downstream unchanged.
//!
//! Criticality is decided once, at the edge of the call tree, and then travels with every
//! downstream call (SRE book, "Handling Overload"), so that when any service in the tree is
//! short of capacity it sheds the same requests the others would.
//!
//! How a handler's outgoing calls inherit the class, without the handler passing it around:
//! - [`CriticalityLayer`] (server side) parses [`CRITICALITY_HEADER`] (default `CRITICAL`),
//!   puts the [`Criticality`] in the request's extensions, rewrites the header to the class's
//!   canonical spelling (so a forwarded request carries exactly the class applied here), and
//!   runs the inner service — both its `call` and its response future — inside a tokio
//!   task-local scope holding it.
//! - [`PropagateCriticalityLayer`] (client side, on the handler's HTTP client stack) writes
//!   the class onto each outgoing request: from the outgoing request's own extensions if the
//!   handler put one there, else from the task-local ([`current`]).
//! - Task-locals do not cross `tokio::spawn`: wrap spawned work in [`scope`] (or
//!   [`crate::deadline::inherit`], which carries the deadline too).
//!
//! ```
//! use spillway_core::{Criticality, CRITICALITY_HEADER};
//! use spillway_tower::criticality::{CriticalityLayer, PropagateCriticalityLayer};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! // The downstream service echoes the header it received.
//! let downstream = PropagateCriticalityLayer::new().layer(service_fn(|req: http::Request<()>| async move {
//!     Ok::<_, std::convert::Infallible>(req.headers()[CRITICALITY_HEADER].clone())
//! }));
//! let server = CriticalityLayer::new().layer(service_fn(move |_req: http::Request<()>| {
//!     // The handler makes an outgoing call without mentioning criticality.
//!     downstream.clone().oneshot(http::Request::new(()))
//! }));
//! let incoming = http::Request::builder().header(CRITICALITY_HEADER, "sheddable").body(()).unwrap();
//! let forwarded = server.oneshot(incoming).await.unwrap();
//! assert_eq!(forwarded, "SHEDDABLE");
//! # }
//! ```

use http::{HeaderValue, Request};
use spillway_core::{Criticality, CRITICALITY_HEADER};
use std::future::Future;
use std::task::{Context, Poll};
use tokio::task::futures::TaskLocalFuture;
use tower_layer::Layer;
use tower_service::Service;

tokio::task_local! {
    static CURRENT: Criticality;
}

/// The criticality of the request the current task is serving, if a [`CriticalityLayer`] (or
/// [`scope`]) set one.
pub fn current() -> Option<Criticality> {
    CURRENT.try_with(|c| *c).ok()
}

/// Runs `future` with `criticality` as the current class (e.g. work handed to
/// `tokio::spawn` on behalf of a request).
pub fn scope<F: Future>(criticality: Criticality, future: F) -> TaskLocalFuture<Criticality, F> {
    CURRENT.scope(criticality, future)
}

/// The request's class: its extensions (set by [`CriticalityLayer`]), else the current task's,
/// else its header, else the default (`CRITICAL`). Used by the layers that order or shed by
/// criticality, so they work with or without a [`CriticalityLayer`] in front.
pub fn of_request<B>(req: &Request<B>) -> Criticality {
    req.extensions().get::<Criticality>().copied().or_else(current).unwrap_or_else(|| {
        Criticality::from_header(req.headers().get(CRITICALITY_HEADER).map(HeaderValue::as_bytes))
    })
}

/// Server side: reads the incoming request's criticality. See the module docs.
#[derive(Copy, Clone, Debug, Default)]
pub struct CriticalityLayer {
    default: Criticality,
    max: Option<Criticality>,
}

impl CriticalityLayer {
    /// Reads [`CRITICALITY_HEADER`]; absent or invalid values mean `CRITICAL`.
    pub fn new() -> Self {
        CriticalityLayer::default()
    }

    /// Uses `default` when the header is absent or invalid (e.g. `SHEDDABLE` for a batch
    /// endpoint).
    pub fn with_default(self, default: Criticality) -> Self {
        CriticalityLayer { default, ..self }
    }

    /// Lowers any class above `max` to `max`: for endpoints reachable by untrusted clients,
    /// who should not be able to claim `CRITICAL_PLUS`.
    pub fn with_max(self, max: Criticality) -> Self {
        CriticalityLayer { max: Some(max), ..self }
    }

    fn classify(&self, header: Option<&HeaderValue>) -> Criticality {
        let class =
            header.and_then(|v| Criticality::parse(v.as_bytes()).ok()).unwrap_or(self.default);
        match self.max {
            Some(max) if class > max => max,
            _ => class,
        }
    }
}

impl<S> Layer<S> for CriticalityLayer {
    type Service = CriticalityService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CriticalityService { inner, layer: *self }
    }
}

/// The service made by [`CriticalityLayer`].
#[derive(Clone, Debug)]
pub struct CriticalityService<S> {
    inner: S,
    layer: CriticalityLayer,
}

impl<S, B> Service<Request<B>> for CriticalityService<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = TaskLocalFuture<Criticality, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let class = self.layer.classify(req.headers().get(CRITICALITY_HEADER));
        req.extensions_mut().insert(class);
        // The request leaves with the canonical header of its effective class, so a proxy that
        // forwards it, and every hop after, sees the class this hop applied (after the default
        // and the cap), not what the client claimed.
        req.headers_mut().insert(CRITICALITY_HEADER, HeaderValue::from_static(class.as_str()));
        let inner = &mut self.inner;
        let future = CURRENT.sync_scope(class, || inner.call(req));
        CURRENT.scope(class, future)
    }
}

/// Client side: writes the current criticality onto outgoing requests. See the module docs.
///
/// A request that already carries [`CRITICALITY_HEADER`] keeps it: the handler chose. With no
/// class known (no extension, no task-local), the request goes out without the header and the
/// callee applies its default.
#[derive(Copy, Clone, Debug, Default)]
pub struct PropagateCriticalityLayer {
    _private: (),
}

impl PropagateCriticalityLayer {
    /// The layer.
    pub fn new() -> Self {
        PropagateCriticalityLayer::default()
    }
}

impl<S> Layer<S> for PropagateCriticalityLayer {
    type Service = PropagateCriticality<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PropagateCriticality { inner }
    }
}

/// The service made by [`PropagateCriticalityLayer`].
#[derive(Clone, Debug)]
pub struct PropagateCriticality<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for PropagateCriticality<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if !req.headers().contains_key(CRITICALITY_HEADER) {
            if let Some(class) = req.extensions().get::<Criticality>().copied().or_else(current) {
                req.headers_mut()
                    .insert(CRITICALITY_HEADER, HeaderValue::from_static(class.as_str()));
            }
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a test failure
mod tests {
    use super::*;
    use std::convert::Infallible;
    use tower::{service_fn, ServiceExt};

    type Seen = (Option<Criticality>, Option<Criticality>);

    /// A handler that reports the class in its request's extensions and in its task.
    async fn report(req: Request<()>) -> Result<Seen, Infallible> {
        tokio::task::yield_now().await;
        Ok((req.extensions().get::<Criticality>().copied(), current()))
    }

    fn request(class: Option<&str>) -> Request<()> {
        let mut req = Request::new(());
        if let Some(c) = class {
            req.headers_mut().insert(CRITICALITY_HEADER, HeaderValue::from_str(c).unwrap());
        }
        req
    }

    #[tokio::test(start_paused = true)]
    async fn missing_or_invalid_header_means_critical() {
        let svc = CriticalityLayer::new().layer(service_fn(report));
        let both = Some(Criticality::Critical);
        assert_eq!(svc.clone().oneshot(request(None)).await.unwrap(), (both, both));
        assert_eq!(svc.oneshot(request(Some("URGENT"))).await.unwrap(), (both, both));
    }

    #[tokio::test(start_paused = true)]
    async fn incoming_class_is_stored_in_extensions_and_the_handler_task() {
        let svc = CriticalityLayer::new().layer(service_fn(report));
        let seen = svc.oneshot(request(Some("SHEDDABLE_PLUS"))).await.unwrap();
        let want = Some(Criticality::SheddablePlus);
        assert_eq!(seen, (want, want));
    }

    #[tokio::test(start_paused = true)]
    async fn default_and_max_are_applied_by_the_server_layer() {
        let batch = CriticalityLayer::new().with_default(Criticality::Sheddable);
        let seen = batch.layer(service_fn(report)).oneshot(request(None)).await.unwrap();
        assert_eq!(seen.0, Some(Criticality::Sheddable));
        let untrusted = CriticalityLayer::new().with_max(Criticality::Critical);
        let svc = untrusted.layer(service_fn(report));
        let seen = svc.oneshot(request(Some("CRITICAL_PLUS"))).await.unwrap();
        assert_eq!(seen.0, Some(Criticality::Critical));
    }

    #[tokio::test(start_paused = true)]
    async fn forwarded_request_carries_the_applied_class_canonically() {
        let header = |req: Request<()>| async move {
            Ok::<_, Infallible>(req.headers().get(CRITICALITY_HEADER).cloned())
        };
        let capped =
            CriticalityLayer::new().with_max(Criticality::Critical).layer(service_fn(header));
        let seen = capped.oneshot(request(Some("critical-plus"))).await.unwrap();
        assert_eq!(seen, Some(HeaderValue::from_static("CRITICAL")));
        let batch = CriticalityLayer::new().with_default(Criticality::Sheddable);
        let seen = batch.layer(service_fn(header)).oneshot(request(None)).await.unwrap();
        assert_eq!(seen, Some(HeaderValue::from_static("SHEDDABLE")));
    }

    #[tokio::test(start_paused = true)]
    async fn outgoing_call_inherits_the_incoming_class_unchanged() {
        let downstream =
            PropagateCriticalityLayer::new().layer(service_fn(|req: Request<()>| async move {
                Ok::<_, Infallible>(req.headers().get(CRITICALITY_HEADER).cloned())
            }));
        let server = CriticalityLayer::new().layer(service_fn(move |_req: Request<()>| {
            let downstream = downstream.clone();
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                downstream.oneshot(Request::new(())).await
            }
        }));
        let forwarded = server.oneshot(request(Some("critical-plus"))).await.unwrap();
        assert_eq!(forwarded, Some(HeaderValue::from_static("CRITICAL_PLUS")));
    }

    #[tokio::test(start_paused = true)]
    async fn outgoing_header_set_by_the_handler_or_extension_wins() {
        let echo =
            PropagateCriticalityLayer::new().layer(service_fn(|req: Request<()>| async move {
                Ok::<_, Infallible>(req.headers().get(CRITICALITY_HEADER).cloned())
            }));
        let explicit =
            scope(Criticality::Critical, echo.clone().oneshot(request(Some("SHEDDABLE"))));
        assert_eq!(explicit.await.unwrap(), Some(HeaderValue::from_static("SHEDDABLE")));
        let mut req = Request::new(());
        req.extensions_mut().insert(Criticality::SheddablePlus);
        let from_ext = scope(Criticality::Critical, echo.clone().oneshot(req));
        assert_eq!(from_ext.await.unwrap(), Some(HeaderValue::from_static("SHEDDABLE_PLUS")));
        // Outside any request: no header, the callee decides.
        assert_eq!(echo.oneshot(Request::new(())).await.unwrap(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn of_request_prefers_extensions_then_task_then_header() {
        let mut req = request(Some("SHEDDABLE"));
        assert_eq!(of_request(&req), Criticality::Sheddable);
        let in_task =
            scope(Criticality::CriticalPlus, async { of_request(&request(Some("SHEDDABLE"))) });
        assert_eq!(in_task.await, Criticality::CriticalPlus);
        req.extensions_mut().insert(Criticality::SheddablePlus);
        assert_eq!(of_request(&req), Criticality::SheddablePlus);
        assert_eq!(of_request(&request(None)), Criticality::Critical);
    }
}
