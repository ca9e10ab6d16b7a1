//! Retry layer: exponential backoff with jitter, a retry budget shared by every request
//! through the layer, and server retry hints (`Retry-After` on 429 / 503) honoured.
//!
//! Why each guard: retrying blindly turns a backend's bad minute into a retry storm. So a
//! request is retried only when
//! - its method is idempotent (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) unless the policy says
//!   every method may be retried;
//! - the result is worth retrying ([`RetryClassify`]; by default 429, 502, 503, 504 and
//!   transport errors — never a rejection made by another Spillway layer, which would only
//!   be refused again). A call cut off by a per-try timeout below this layer
//!   ([`TimedOut`]) is retried when `retry_per_try_timeouts` says so (the default, as Envoy
//!   does): the next attempt may reach a faster replica;
//! - attempts remain (`max_attempts` counts the first call);
//! - the request's deadline is not spent, and the wait before the retry ends before it. The
//!   deadline is the request's [`Deadline`] extension or the current task's
//!   ([`deadline::current`]), the earlier of the two. Once it has passed, nobody reads the
//!   answer of another attempt; a wait ending after it would only delay the caller's answer.
//!   In both cases the last answer goes back to the caller at once;
//! - the [`RetryBudget`] has room (retries ≤ a share of requests over a window);
//! - and a server's `Retry-After` is not longer than `max_retry_after` (a server asking for
//!   an hour is not retried within this request: the answer goes back to the caller, header
//!   included).
//!
//! The wait before a retry is the backoff's, or the server's hint when that is longer; it is a
//! `tokio::time::sleep`, so `start_paused` tests control it. Randomness for the jitter comes
//! from the layer's own [`Prng`], the generator every layer uses (no `rand` dependency).
//!
//! [`TimedOut`]: crate::deadline::TimedOut
//! [`deadline::current`]: crate::deadline::current
//!
//! **Replaying the request.** A retry sends the request again, so the layer needs a copy: it
//! serves `http::Request<B>` with `B: Clone` and clones the request (head, extensions, body)
//! before the first call when a retry is possible. Use a buffered body such as
//! `http_body_util::Full<Bytes>` (cloning it copies a reference-counted `Bytes`, not the
//! data); a streaming body must be collected (with a size limit) before this layer.
//!
//! ```
//! use spillway_tower::retry::{RetryLayer, RetryPolicy};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let layer = RetryLayer::new(RetryPolicy::default()).unwrap();
//! let upstream = layer.layer(service_fn(|_req: http::Request<()>| async {
//!     Ok::<_, std::convert::Infallible>(http::Response::new(()))
//! }));
//! let response = upstream.oneshot(http::Request::new(())).await.unwrap();
//! assert_eq!(response.status(), 200);
//! # }
//! ```

use crate::deadline::{self, is_timed_out};
use crate::rejection::{find_rejection, BoxError};
use crate::time::{Prng, TokioClock};
use http::{header, Method, Request, Response, StatusCode};
use parking_lot::Mutex;
use pin_project_lite::pin_project;
use spillway_core::deadline::Deadline;
use spillway_core::retry::{
    parse_retry_after, Attempts, Backoff, Jitter, RetryBudget, RetryBudgetConfig, RetryConfigError,
    RetryDecision, RetryRules,
};
use spillway_core::Clock;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;
use tower_layer::Layer;
use tower_service::Service;

/// When and how a [`RetryLayer`] retries.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Calls per request, the first one included (1 turns retries off). Default 3.
    pub max_attempts: u32,
    /// The wait before each retry. Default: 25 ms doubling up to 1 s, full jitter.
    pub backoff: Backoff,
    /// The budget shared by all requests through the layer. Default: retries ≤ 10 % of
    /// requests over 10 s, plus 1 retry per second.
    pub budget: RetryBudgetConfig,
    /// Retry non-idempotent methods (POST, PATCH, CONNECT) too. Default false: a POST that
    /// timed out may have been applied.
    pub retry_non_idempotent: bool,
    /// A `Retry-After` longer than this is not waited for; the response is returned. Default
    /// 5 s.
    pub max_retry_after: Duration,
    /// Retry a call that a per-try timeout below this layer cut off ([`TimedOut`]), whatever
    /// the classifier says. Default true, as Envoy's `per-try-timeout` retry condition: the
    /// next attempt may reach a faster replica. It applies only to requests that may be
    /// retried at all (idempotent ones unless `retry_non_idempotent`), and never once the
    /// request's deadline is spent. False leaves timeouts to the classifier
    /// ([`HttpRetryClassifier`] never retries them).
    ///
    /// [`TimedOut`]: crate::deadline::TimedOut
    pub retry_per_try_timeouts: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::try_new(
                Duration::from_millis(25),
                Duration::from_secs(1),
                Jitter::Full,
            )
            .expect("25 ms ≤ 1 s is a valid backoff"),
            budget: RetryBudgetConfig::default(),
            retry_non_idempotent: false,
            max_retry_after: Duration::from_secs(5),
            retry_per_try_timeouts: true,
        }
    }
}

/// What to do after a call, as a [`RetryClassify`] judges its result (the core's verdict,
/// shared with the gateway).
pub use spillway_core::retry::RetryVerdict;

/// Judges whether a result is worth retrying.
///
/// Implemented by [`HttpRetryClassifier`] and by any
/// `Fn(&Result<Res, BoxError>) -> RetryVerdict`.
pub trait RetryClassify<Res> {
    /// The verdict on one result.
    fn verdict(&self, result: &Result<Res, BoxError>) -> RetryVerdict;
}

impl<Res, F> RetryClassify<Res> for F
where
    F: Fn(&Result<Res, BoxError>) -> RetryVerdict,
{
    fn verdict(&self, result: &Result<Res, BoxError>) -> RetryVerdict {
        self(result)
    }
}

/// The default HTTP judgement: retry the listed statuses (default 429, 502, 503, 504) and
/// transport errors; on 429 and 503 honour `Retry-After` (both forms, the date read against
/// the system's wall clock). Never retry an error carrying a Spillway rejection (per-try
/// timeouts are the layer's call, see [`RetryPolicy::retry_per_try_timeouts`]). 500 is not
/// retried by default: it is usually a bug that the retry would hit again.
#[derive(Copy, Clone, Debug)]
pub struct HttpRetryClassifier {
    statuses: &'static [u16],
}

impl Default for HttpRetryClassifier {
    fn default() -> Self {
        HttpRetryClassifier { statuses: &[429, 502, 503, 504] }
    }
}

impl HttpRetryClassifier {
    /// Retries these statuses instead of the default ones.
    pub fn with_statuses(statuses: &'static [u16]) -> Self {
        HttpRetryClassifier { statuses }
    }
}

impl<B> RetryClassify<Response<B>> for HttpRetryClassifier {
    fn verdict(&self, result: &Result<Response<B>, BoxError>) -> RetryVerdict {
        match result {
            Ok(response) => {
                let status = response.status();
                if !self.statuses.contains(&status.as_u16()) {
                    return RetryVerdict::Done;
                }
                let hinted = status == StatusCode::TOO_MANY_REQUESTS
                    || status == StatusCode::SERVICE_UNAVAILABLE;
                let hint = response.headers().get(header::RETRY_AFTER).filter(|_| hinted);
                match hint.and_then(|v| parse_retry_after(v.as_bytes(), unix_now_secs())) {
                    Some(after) => RetryVerdict::RetryAfter(after),
                    None => RetryVerdict::Retry,
                }
            }
            Err(error) if find_rejection(error.as_ref()).is_some() => RetryVerdict::Done,
            Err(_) => RetryVerdict::Retry,
        }
    }
}

fn unix_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// True for the methods RFC 9110 §9.2.2 defines as idempotent.
pub fn is_idempotent(method: &Method) -> bool {
    spillway_core::retry::is_idempotent_method(method.as_str())
}

#[derive(Debug)]
struct Shared {
    policy: RetryPolicy,
    rules: RetryRules,
    budget: Mutex<RetryBudget>,
    clock: TokioClock,
    random: Prng,
}

/// Retries failed calls under a [`RetryPolicy`]. See the module docs. All services made from
/// one layer share its budget.
#[derive(Clone, Debug)]
pub struct RetryLayer<C = HttpRetryClassifier> {
    shared: Arc<Shared>,
    classifier: C,
}

impl RetryLayer<HttpRetryClassifier> {
    /// A layer with `policy`, judging results with [`HttpRetryClassifier`].
    pub fn new(policy: RetryPolicy) -> Result<Self, RetryConfigError> {
        RetryLayer::with_prng(policy, Prng::from_time())
    }

    fn with_prng(policy: RetryPolicy, random: Prng) -> Result<Self, RetryConfigError> {
        let rules =
            RetryRules::try_new(policy.max_attempts, policy.backoff, policy.max_retry_after)?;
        let budget = RetryBudget::try_new(policy.budget.clone())?;
        Ok(RetryLayer {
            shared: Arc::new(Shared {
                policy,
                rules,
                budget: Mutex::new(budget),
                clock: TokioClock,
                random,
            }),
            classifier: HttpRetryClassifier::default(),
        })
    }
}

impl<C> RetryLayer<C> {
    /// The same layer and budget, judging results with `classifier` instead.
    pub fn with_classifier<C2>(self, classifier: C2) -> RetryLayer<C2> {
        RetryLayer { shared: self.shared, classifier }
    }

    /// Retries the budget could grant now (for metrics).
    pub fn budget_balance(&self) -> f64 {
        self.shared.budget.lock().balance(self.shared.clock.now())
    }
}

impl<S, C: Clone> Layer<S> for RetryLayer<C> {
    type Service = RetryService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService { inner, shared: self.shared.clone(), classifier: self.classifier.clone() }
    }
}

/// A service whose failed calls are retried; made by [`RetryLayer`].
#[derive(Clone, Debug)]
pub struct RetryService<S, C = HttpRetryClassifier> {
    inner: S,
    shared: Arc<Shared>,
    classifier: C,
}

impl<S, C, B> Service<Request<B>> for RetryService<S, C>
where
    S: Service<Request<B>> + Clone,
    S::Error: Into<BoxError>,
    C: RetryClassify<S::Response> + Clone,
    B: Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, S::Future, B, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let policy = &self.shared.policy;
        self.shared.budget.lock().deposit(self.shared.clock.now());
        let may_retry =
            policy.max_attempts > 1 && (policy.retry_non_idempotent || is_idempotent(req.method()));
        let template = may_retry.then(|| req.clone());
        let deadline = match (req.extensions().get::<Deadline>().copied(), deadline::current()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // The service that was made ready is used now; the future keeps it for the retries
        // and this service continues with a fresh clone (tower's usual swap).
        let fresh = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, fresh);
        let future = service.call(req);
        ResponseFuture {
            state: State::Calling { future },
            service,
            template,
            deadline,
            shared: self.shared.clone(),
            classifier: self.classifier.clone(),
            attempts: Attempts::first(),
        }
    }
}

pin_project! {
    #[project = StateProj]
    #[derive(Debug)]
    enum State<F> {
        Calling { #[pin] future: F },
        Sleeping { #[pin] sleep: Sleep },
        Readying,
    }
}

pin_project! {
    /// The response future of [`RetryService`]: calls, waits, and calls again.
    #[derive(Debug)]
    pub struct ResponseFuture<S, F, B, C> {
        #[pin]
        state: State<F>,
        service: S,
        template: Option<Request<B>>,
        deadline: Option<Deadline>,
        shared: Arc<Shared>,
        classifier: C,
        attempts: Attempts,
    }
}

impl<S, F, B, C> Future for ResponseFuture<S, F, B, C>
where
    S: Service<Request<B>, Future = F>,
    S::Error: Into<BoxError>,
    F: Future<Output = Result<S::Response, S::Error>>,
    C: RetryClassify<S::Response>,
    B: Clone,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let result = ready!(future.poll(cx)).map_err(Into::into);
                    if this.template.is_none() {
                        return Poll::Ready(result);
                    }
                    let policy = &this.shared.policy;
                    let verdict = match &result {
                        Err(error)
                            if policy.retry_per_try_timeouts && is_timed_out(error.as_ref()) =>
                        {
                            RetryVerdict::Retry
                        }
                        _ => this.classifier.verdict(&result),
                    };
                    let random = this.shared.random.next_f64();
                    let now = this.shared.clock.now();
                    // A spent deadline stops here whatever the delay: the retry must start
                    // before the deadline, after the whole wait.
                    let remaining = this.deadline.map(|d| d.remaining(now));
                    let decision = this.shared.rules.next(
                        this.attempts,
                        verdict,
                        remaining,
                        Duration::ZERO,
                        random,
                        Some(&mut this.shared.budget.lock()),
                        now,
                    );
                    let RetryDecision::Retry { after: delay } = decision else {
                        return Poll::Ready(result);
                    };
                    this.state.set(State::Sleeping { sleep: tokio::time::sleep(delay) });
                }
                StateProj::Sleeping { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    if let Err(error) = ready!(this.service.poll_ready(cx)) {
                        return Poll::Ready(Err(error.into()));
                    }
                    // The last attempt takes the template itself instead of a copy.
                    let last = !this.shared.rules.may_retry(this.attempts);
                    let request = if last { this.template.take() } else { this.template.clone() };
                    let Some(request) = request else {
                        return Poll::Ready(Err("retry: the request to replay is gone".into()));
                    };
                    let future = this.service.call(request);
                    this.state.set(State::Calling { future });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Rejected;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use spillway_core::RejectReason;
    use std::collections::VecDeque;
    use tower::{service_fn, ServiceExt};

    /// One scripted answer: a status with an optional `Retry-After`, or a transport error.
    #[derive(Clone, Debug)]
    enum Answer {
        Status(u16, Option<&'static str>),
        Transport,
        Refused,
        /// Never answers.
        Hang,
    }

    /// A backend that answers from a script (the last answer repeats) and notes when each
    /// call arrived and with which body.
    #[derive(Clone)]
    struct Backend {
        script: Arc<Mutex<VecDeque<Answer>>>,
        calls: Arc<Mutex<Vec<(tokio::time::Instant, Bytes)>>>,
    }

    impl Backend {
        fn new(script: &[Answer]) -> Backend {
            Backend {
                script: Arc::new(Mutex::new(script.iter().cloned().collect())),
                calls: Arc::default(),
            }
        }

        fn calls(&self) -> usize {
            self.calls.lock().len()
        }

        /// Milliseconds from the first call to each later one.
        fn offsets_ms(&self) -> Vec<u128> {
            let calls = self.calls.lock();
            let first = calls.first().map(|c| c.0);
            calls.iter().map(|c| first.map_or(0, |f| (c.0 - f).as_millis())).collect()
        }

        fn service(
            &self,
        ) -> impl Service<
            Request<Full<Bytes>>,
            Response = Response<()>,
            Error = BoxError,
            Future: Send,
        > + Clone {
            let backend = self.clone();
            service_fn(move |req: Request<Full<Bytes>>| {
                let backend = backend.clone();
                async move {
                    let body = req.into_body().collect().await.map(|b| b.to_bytes())?;
                    backend.calls.lock().push((tokio::time::Instant::now(), body));
                    let answer = {
                        let mut script = backend.script.lock();
                        if script.len() > 1 {
                            script.pop_front()
                        } else {
                            script.front().cloned()
                        }
                    };
                    match answer {
                        Some(Answer::Status(status, retry_after)) => {
                            let mut response = Response::new(());
                            *response.status_mut() = StatusCode::from_u16(status)?;
                            if let Some(value) = retry_after {
                                response.headers_mut().insert(
                                    header::RETRY_AFTER,
                                    http::HeaderValue::from_static(value),
                                );
                            }
                            Ok(response)
                        }
                        Some(Answer::Refused) => {
                            Err(Box::new(Rejected::new(RejectReason::CircuitOpen)) as BoxError)
                        }
                        Some(Answer::Hang) => std::future::pending().await,
                        Some(Answer::Transport) | None => Err("connection reset".into()),
                    }
                }
            })
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::try_new(
                Duration::from_millis(100),
                Duration::from_secs(1),
                Jitter::None,
            )
            .expect("valid"),
            budget: RetryBudgetConfig { ratio: 1.0, min_per_second: 10.0, ..Default::default() },
            ..RetryPolicy::default()
        }
    }

    fn layer(policy: RetryPolicy) -> RetryLayer {
        RetryLayer::with_prng(policy, Prng::seeded(1)).expect("valid policy")
    }

    fn get() -> Request<Full<Bytes>> {
        Request::new(Full::new(Bytes::from_static(b"payload")))
    }

    fn post() -> Request<Full<Bytes>> {
        let mut req = get();
        *req.method_mut() = Method::POST;
        req
    }

    use Answer::{Hang, Refused, Status, Transport};

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A deadline `budget` from now, on the layers' clock.
    fn deadline_in(budget: Duration) -> Deadline {
        Deadline::after(TokioClock.now(), budget)
    }

    fn reason(result: &Result<Response<()>, BoxError>) -> Option<RejectReason> {
        result.as_ref().err().and_then(|e| find_rejection(e.as_ref())).map(|r| r.reason)
    }

    #[tokio::test(start_paused = true)]
    async fn per_try_timeout_of_an_idempotent_request_is_retried_by_default() {
        use crate::deadline::TimeoutLayer;
        let backend = Backend::new(&[Hang, Status(200, None)]);
        let per_try = TimeoutLayer::new(ms(100)).layer(backend.service());
        let service = layer(policy()).layer(per_try);
        assert_eq!(service.oneshot(get()).await.expect("answered").status(), 200);
        // Cut off at 100 ms, then the 100 ms backoff.
        assert_eq!(backend.offsets_ms(), vec![0, 200]);
    }

    #[tokio::test(start_paused = true)]
    async fn per_try_timeouts_are_not_retried_for_post_or_when_the_policy_says_so() {
        use crate::deadline::{is_timed_out, TimeoutLayer};
        let no_timeouts = RetryPolicy { retry_per_try_timeouts: false, ..policy() };
        for (policy, request) in [(policy(), post()), (no_timeouts, get())] {
            let backend = Backend::new(&[Hang, Status(200, None)]);
            let per_try = TimeoutLayer::new(ms(100)).layer(backend.service());
            let error = layer(policy).layer(per_try).oneshot(request).await.expect_err("timed out");
            assert!(is_timed_out(error.as_ref()));
            assert_eq!(backend.calls(), 1);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn call_cut_off_at_the_deadline_is_never_retried() {
        use crate::deadline::{scope, PropagateDeadlineLayer};
        // The deadline from the task (as a server's DeadlineLayer sets it) or from the
        // outgoing request's extensions.
        for in_extensions in [false, true] {
            let backend = Backend::new(&[Hang, Status(200, None)]);
            let service =
                layer(policy()).layer(PropagateDeadlineLayer::new().layer(backend.service()));
            let deadline = deadline_in(ms(250));
            let started = tokio::time::Instant::now();
            let result = if in_extensions {
                let mut request = get();
                request.extensions_mut().insert(deadline);
                service.oneshot(request).await
            } else {
                scope(deadline, service.oneshot(get())).await
            };
            assert_eq!(reason(&result), Some(RejectReason::DeadlineExceeded));
            assert_eq!(started.elapsed(), ms(250), "answered at the deadline, not later");
            assert_eq!(backend.calls(), 1, "deadline in extensions: {in_extensions}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_ending_after_the_deadline_returns_the_last_answer_at_once() {
        use crate::deadline::scope;
        let backend = Backend::new(&[Status(503, None)]);
        let service = layer(policy()).layer(backend.service());
        let started = tokio::time::Instant::now();
        // 150 ms: the first backoff (100 ms) fits, the second (200 ms) would end after it.
        let response = scope(deadline_in(ms(150)), service.oneshot(get())).await;
        assert_eq!(response.expect("answered").status(), 503);
        assert_eq!(backend.offsets_ms(), vec![0, 100]);
        assert_eq!(started.elapsed(), ms(100), "no wait for a retry that cannot be made");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_ending_after_the_deadline_returns_the_answer_with_its_hint() {
        use crate::deadline::scope;
        let backend = Backend::new(&[Status(503, Some("2")), Status(200, None)]);
        let service = layer(policy()).layer(backend.service());
        let started = tokio::time::Instant::now();
        let response = scope(deadline_in(ms(1_500)), service.oneshot(get())).await;
        let response = response.expect("answered");
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(backend.calls(), 1);
        // With time for it, the same hint is waited for.
        let backend = Backend::new(&[Status(503, Some("2")), Status(200, None)]);
        let service = layer(policy()).layer(backend.service());
        let response = scope(deadline_in(ms(2_500)), service.oneshot(get())).await;
        assert_eq!(response.expect("answered").status(), 200);
        assert_eq!(backend.offsets_ms(), vec![0, 2_000]);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_503_with_backoff_until_success_replaying_the_body() {
        let backend = Backend::new(&[Status(503, None), Status(503, None), Status(200, None)]);
        let service = layer(policy()).layer(backend.service());
        let response = service.oneshot(get()).await.expect("answered");
        assert_eq!(response.status(), 200);
        // Backoff without jitter: 100 ms, then 200 ms.
        assert_eq!(backend.offsets_ms(), vec![0, 100, 300]);
        assert!(backend.calls.lock().iter().all(|(_, body)| body.as_ref() == b"payload"));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_and_returns_the_last_answer() {
        let backend = Backend::new(&[Status(502, None)]);
        let service = layer(policy()).layer(backend.service());
        let response = service.oneshot(get()).await.expect("answered");
        assert_eq!(response.status(), 502);
        assert_eq!(backend.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn post_is_not_retried_unless_the_policy_allows_it() {
        let backend = Backend::new(&[Status(503, None)]);
        let service = layer(policy()).layer(backend.service());
        assert_eq!(service.oneshot(post()).await.expect("answered").status(), 503);
        assert_eq!(backend.calls(), 1);

        let backend = Backend::new(&[Status(503, None)]);
        let policy = RetryPolicy { retry_non_idempotent: true, ..policy() };
        let service = layer(policy).layer(backend.service());
        assert_eq!(service.oneshot(post()).await.expect("answered").status(), 503);
        assert_eq!(backend.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn honours_retry_after_on_503_when_longer_than_the_backoff() {
        let backend = Backend::new(&[Status(503, Some("2")), Status(200, None)]);
        let service = layer(policy()).layer(backend.service());
        assert_eq!(service.oneshot(get()).await.expect("answered").status(), 200);
        assert_eq!(backend.offsets_ms(), vec![0, 2_000]);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_beyond_the_cap_returns_the_answer_to_the_caller() {
        let backend = Backend::new(&[Status(429, Some("3600")), Status(200, None)]);
        let service = layer(policy()).layer(backend.service());
        let response = service.oneshot(get()).await.expect("answered");
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3600");
        assert_eq!(backend.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_as_an_http_date_is_read_against_the_wall_clock() {
        // A date long past: no extra wait beyond the backoff.
        let past = Status(503, Some("Sun, 06 Nov 1994 08:49:37 GMT"));
        let backend = Backend::new(&[past, Status(200, None)]);
        let service = layer(policy()).layer(backend.service());
        assert_eq!(service.oneshot(get()).await.expect("answered").status(), 200);
        assert_eq!(backend.offsets_ms(), vec![0, 100]);
        // A date far ahead: beyond the cap, returned to the caller.
        let far = Status(503, Some("Fri, 31 Dec 9999 23:59:59 GMT"));
        let backend = Backend::new(&[far, Status(200, None)]);
        let service = layer(policy()).layer(backend.service());
        assert_eq!(service.oneshot(get()).await.expect("answered").status(), 503);
        assert_eq!(backend.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_on_other_statuses_is_not_a_hint() {
        let backend = Backend::new(&[Status(502, Some("4")), Status(200, None)]);
        let service = layer(policy()).layer(backend.service());
        assert_eq!(service.oneshot(get()).await.expect("answered").status(), 200);
        assert_eq!(backend.offsets_ms(), vec![0, 100]);
    }

    #[tokio::test(start_paused = true)]
    async fn transport_errors_are_retried() {
        let backend = Backend::new(&[Transport, Transport, Status(200, None)]);
        let service = layer(policy()).layer(backend.service());
        assert_eq!(service.oneshot(get()).await.expect("answered").status(), 200);
        assert_eq!(backend.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn local_rejections_and_client_errors_are_not_retried() {
        let backend = Backend::new(&[Refused]);
        let service = layer(policy()).layer(backend.service());
        let error = service.oneshot(get()).await.expect_err("refused");
        assert_eq!(
            find_rejection(error.as_ref()).map(|r| r.reason),
            Some(RejectReason::CircuitOpen)
        );
        assert_eq!(backend.calls(), 1);

        let backend = Backend::new(&[Status(404, None)]);
        let service = layer(policy()).layer(backend.service());
        assert_eq!(service.oneshot(get()).await.expect("answered").status(), 404);
        assert_eq!(backend.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn budget_caps_retries_at_its_ratio_of_requests() {
        let backend = Backend::new(&[Status(503, None)]);
        let policy = RetryPolicy {
            budget: RetryBudgetConfig { ratio: 0.5, min_per_second: 0.0, ..Default::default() },
            ..policy()
        };
        let layer = layer(policy);
        let mut service = layer.layer(backend.service());
        for _ in 0..10 {
            let response = service.ready().await.expect("ready").call(get()).await;
            assert_eq!(response.expect("answered").status(), 503);
        }
        // 10 requests, at most 0.5 × 10 = 5 retries, whatever max_attempts allows.
        assert_eq!(backend.calls(), 15);
        assert!(layer.budget_balance() < 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn custom_classifier_can_retry_500() {
        let backend = Backend::new(&[Status(500, None), Status(200, None)]);
        let classifier = HttpRetryClassifier::with_statuses(&[500, 503]);
        let service = layer(policy()).with_classifier(classifier).layer(backend.service());
        assert_eq!(service.oneshot(get()).await.expect("answered").status(), 200);
        assert_eq!(backend.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn stacked_over_a_breaker_and_throttle_retries_stop_when_the_breaker_opens() {
        use crate::breaker::CircuitBreakerLayer;
        use crate::throttle::SreThrottleLayer;
        use spillway_core::breaker::{BreakerWindow, CircuitBreakerConfig, SreThrottleConfig};

        let backend = Backend::new(&[Status(503, None)]);
        let breaker = CircuitBreakerLayer::new(CircuitBreakerConfig {
            window: BreakerWindow::Count { calls: 4 },
            min_calls: 4,
            ..CircuitBreakerConfig::default()
        })
        .expect("valid");
        let stack = tower::ServiceBuilder::new()
            .layer(layer(policy()))
            .layer(breaker.clone())
            .layer(SreThrottleLayer::new(SreThrottleConfig::default()).expect("valid"))
            .service(backend.service());
        fn assert_send<T: Send>(t: T) -> T {
            t
        }
        // 1st request: 3 attempts reach the backend.
        let first = assert_send(stack.clone().oneshot(get())).await;
        assert_eq!(first.expect("answered").status(), 503);
        // 2nd: the 4th failure opens the breaker; its refusal is not retried.
        let second = stack.clone().oneshot(get()).await;
        let reason = second.err().and_then(|e| find_rejection(e.as_ref())).map(|r| r.reason);
        assert_eq!(reason, Some(RejectReason::CircuitOpen));
        assert_eq!(backend.calls(), 4);
    }

    #[test]
    fn idempotent_methods_per_rfc_9110() {
        for m in
            [Method::GET, Method::HEAD, Method::OPTIONS, Method::PUT, Method::DELETE, Method::TRACE]
        {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }

    #[test]
    fn zero_max_attempts_is_refused() {
        let policy = RetryPolicy { max_attempts: 0, ..RetryPolicy::default() };
        assert_eq!(RetryLayer::new(policy).err().map(|e| e.key), Some("max_attempts"));
    }
}
