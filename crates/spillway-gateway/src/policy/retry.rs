//! A route's retries on the upstream call: which requests may be tried again, what a try's
//! result says, and the decision — core's [`RetryRules::next`] with the route's retry budget.
//!
//! Both data paths run the same loop around this type: [`RouteRetry::eligible`] once (method,
//! replayable body), [`RouteRetry::begin`] once (the request counts in the budget), then after
//! each failed try [`RouteRetry::next`] with a [`TryResult`], which judges it (conditions of
//! `retries.on`, `Retry-After`, `grpc-retry-pushback-ms`) and asks core whether and when to
//! try again. The retry goes to another endpoint when one is available (the caller's part).
//!
//! **The budget is sharded per worker**: each worker keeps its own core `RetryBudget` with the
//! route's ratio and a `1/workers` share of its per-second minimum, behind a lock only that
//! worker takes (uncontended). Retries ≤ ratio × requests holds per worker, so it holds for
//! the sum; no cache line is shared between workers on the request path.

use crate::config::{HedgeAfter, HedgeSettings, RetrySettings, Strategy};
use parking_lot::Mutex;
use serde::Serialize;
use spillway_core::latency::LatencyWindow;
use spillway_core::retry::{
    parse_retry_after, Attempts, RetryBudget, RetryDecision, RetryRules, RetryStop, RetryVerdict,
};
use spillway_core::Instant;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// The header telling the upstream which try this is (1 for the first), sent on every try
/// of a route with retries.
pub const ATTEMPT_HEADER: &[u8] = b"x-spillway-attempt";

/// How a try failed before a response head arrived.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum TryFailure {
    /// The connection could not be made.
    Connect,
    /// The connection broke before a complete response head.
    Reset,
    /// The try's timeout passed first.
    Timeout,
}

/// The result of one try, as the retry decision reads it.
#[derive(Copy, Clone, Debug)]
pub enum TryResult<'a> {
    /// No response head.
    Failed(TryFailure),
    /// A final response head.
    Answered {
        /// Its status.
        status: u16,
        /// Its `Retry-After` value, if any.
        retry_after: Option<&'a [u8]>,
        /// Its `grpc-retry-pushback-ms` value, if any.
        grpc_pushback: Option<&'a [u8]>,
    },
}

/// Retries made and refused on a route, for `spillway_retries_total{route,reason}` and
/// `spillway_retry_budget_exhausted_total{route}`.
#[derive(Debug, Default)]
pub struct RetryCounts {
    connect_failure: AtomicU64,
    reset: AtomicU64,
    timeout: AtomicU64,
    /// By status, in `retries.on` order.
    statuses: Vec<(u16, AtomicU64)>,
    /// Retries refused because the budget was spent.
    pub budget_exhausted: AtomicU64,
    /// Retries refused because the deadline left no time.
    pub deadline: AtomicU64,
}

impl RetryCounts {
    /// `(reason, retries)` for every reason with a retry.
    pub fn each(&self, mut f: impl FnMut(&str, u64)) {
        for (name, n) in [
            ("connect_failure", &self.connect_failure),
            ("reset", &self.reset),
            ("timeout", &self.timeout),
        ] {
            let n = n.load(Relaxed);
            if n > 0 {
                f(name, n);
            }
        }
        for (status, n) in &self.statuses {
            let n = n.load(Relaxed);
            if n > 0 {
                f(&status.to_string(), n);
            }
        }
    }

    /// Retries made, all reasons.
    pub fn total(&self) -> u64 {
        let mut total = 0;
        self.each(|_, n| total += n);
        total
    }
}

/// A route's compiled retry policy and its budget.
#[derive(Debug)]
pub struct RouteRetry {
    /// The settings it was built from.
    pub settings: RetrySettings,
    rules: RetryRules,
    /// Per-worker budget shards; `None` with `budget: false`.
    budget: Option<Box<[Mutex<RetryBudget>]>>,
    /// Counters (kept across reloads with the policy).
    pub counts: RetryCounts,
    workers: usize,
    /// Hedging (`strategy: forking`).
    pub hedge: Option<Hedging>,
}

/// A forking route's hedging: its settings, its recent latencies (per worker) and counters.
#[derive(Debug)]
pub struct Hedging {
    /// The settings.
    pub settings: HedgeSettings,
    latency: Box<[Mutex<LatencyWindow>]>,
    /// Hedges whose answer was used.
    pub won: AtomicU64,
    /// Hedges cancelled because another try answered first.
    pub lost: AtomicU64,
}

/// Latencies a quantile hedge delay needs before it hedges at all (before that, a forking
/// route only retries failures): a p95 of a handful of samples is noise.
pub const MIN_HEDGE_SAMPLES: u64 = 20;
/// How far back a quantile hedge delay looks.
pub const HEDGE_WINDOW: Duration = Duration::from_secs(10);

/// What `/admin/policies` shows of a route's retries.
#[derive(Debug, Serialize)]
pub struct RetryView {
    /// Retries made, all reasons.
    pub retries: u64,
    /// Retries the budget could grant now, summed over workers (`None`: no budget).
    pub budget_balance: Option<f64>,
    /// Retries and hedges refused for want of budget.
    pub budget_exhausted: u64,
    /// Hedges whose answer was used (forking routes).
    pub hedges_won: Option<u64>,
    /// Hedges cancelled because another try answered first (forking routes).
    pub hedges_lost: Option<u64>,
}

impl RouteRetry {
    /// The policy of `settings` for `workers` worker threads (`None` if core refuses the
    /// settings, which validation already ruled out).
    pub fn new(
        settings: &RetrySettings,
        hedge: Option<&HedgeSettings>,
        workers: usize,
    ) -> Option<RouteRetry> {
        let rules = settings.rules().ok()?;
        let workers = workers.max(1);
        let shard = |config: spillway_core::retry::RetryBudgetConfig| {
            (0..workers)
                .map(|_| RetryBudget::try_new(config.clone()).ok().map(Mutex::new))
                .collect::<Option<Box<[_]>>>()
        };
        let budget = match &settings.budget {
            Some(b) => {
                let mut config = b.core();
                config.min_per_second /= workers as f64;
                Some(shard(config)?)
            }
            None => None,
        };
        let counts = RetryCounts {
            statuses: settings.on.statuses.iter().map(|s| (*s, AtomicU64::new(0))).collect(),
            ..RetryCounts::default()
        };
        let hedge = match hedge {
            Some(h) => Some(Hedging {
                settings: *h,
                latency: (0..workers)
                    .map(|_| LatencyWindow::try_new(HEDGE_WINDOW, 10).ok().map(Mutex::new))
                    .collect::<Option<Box<[_]>>>()?,
                won: AtomicU64::new(0),
                lost: AtomicU64::new(0),
            }),
            None => None,
        };
        Some(RouteRetry { settings: settings.clone(), rules, budget, counts, workers, hedge })
    }

    /// Whether this policy can be kept for these settings (its budget and counters too).
    pub fn same(&self, other: &RetrySettings, hedge: Option<&HedgeSettings>) -> bool {
        self.settings == *other && self.hedge.as_ref().map(|h| &h.settings) == hedge
    }

    /// How long the first try may take before a hedge is sent, on `worker` at `now`; `None`
    /// when the route does not hedge (or does not know its latency yet).
    pub fn hedge_delay(&self, worker: usize, now: Instant) -> Option<Duration> {
        let h = self.hedge.as_ref()?;
        match h.settings.after {
            HedgeAfter::Delay(d) => Some(d),
            HedgeAfter::Quantile(q) => {
                let mut w = h.latency.get(worker % h.latency.len())?.lock();
                if w.count(now) < MIN_HEDGE_SAMPLES {
                    return None;
                }
                w.quantile(q, now)
            }
        }
    }

    /// Notes how long a try took to answer (a forking route's quantile delay learns from it).
    pub fn observe(&self, worker: usize, latency: Duration, now: Instant) {
        if let Some(h) = &self.hedge {
            if let HedgeAfter::Quantile(_) = h.settings.after {
                if let Some(w) = h.latency.get(worker % h.latency.len()) {
                    w.lock().record(latency, now);
                }
            }
        }
    }

    /// Takes a hedge from the retry budget: false when the budget is spent (counted).
    pub fn try_hedge(&self, worker: usize, now: Instant) -> bool {
        let granted = match &self.budget {
            Some(shards) => {
                shards.get(worker % shards.len().max(1)).is_some_and(|b| b.lock().try_withdraw(now))
            }
            None => true,
        };
        if !granted {
            self.counts.budget_exhausted.fetch_add(1, Relaxed);
        }
        granted
    }

    /// Tries per request, the first included.
    pub fn max_attempts(&self) -> u32 {
        self.rules.max_attempts()
    }

    /// Whether a request with this method and body size may be tried more than once: an
    /// idempotent method (or `non_idempotent: true`) and a body kept for replay (`None`: a
    /// body of unknown length, which is not kept).
    pub fn eligible(&self, method: &str, body_len: Option<u64>) -> bool {
        self.rules.max_attempts() > 1
            && (self.settings.non_idempotent || spillway_core::retry::is_idempotent_method(method))
            && body_len.is_some_and(|n| n <= self.settings.max_body)
    }

    /// Counts one request in the route's budget (every request, retried or not: the budget is
    /// a share of traffic).
    pub fn begin(&self, worker: usize, now: Instant) {
        if let Some(shards) = &self.budget {
            if let Some(b) = shards.get(worker % shards.len()) {
                b.lock().deposit(now);
            }
        }
    }

    /// The timeout of a try that starts with `remaining` left of the request (`cluster_per_try`:
    /// the cluster's `timeouts.per_try`).
    pub fn try_timeout(&self, cluster_per_try: Duration, remaining: Duration) -> Duration {
        self.settings.per_try_timeout.unwrap_or(cluster_per_try).min(remaining)
    }

    /// Whether `result` is a failure worth another try (a listed condition or status).
    pub fn wants_retry(&self, result: &TryResult<'_>) -> bool {
        self.verdict(result).0 != RetryVerdict::Done
    }

    /// What `result` says about trying again, and the counter of its reason.
    fn verdict(&self, result: &TryResult<'_>) -> (RetryVerdict, Option<&AtomicU64>) {
        let on = &self.settings.on;
        match *result {
            TryResult::Failed(TryFailure::Connect) if on.connect_failure => {
                (RetryVerdict::Retry, Some(&self.counts.connect_failure))
            }
            TryResult::Failed(TryFailure::Reset) if on.reset => {
                (RetryVerdict::Retry, Some(&self.counts.reset))
            }
            TryResult::Failed(TryFailure::Timeout) if on.timeout => {
                (RetryVerdict::Retry, Some(&self.counts.timeout))
            }
            TryResult::Failed(_) => (RetryVerdict::Done, None),
            TryResult::Answered { status, retry_after, grpc_pushback } => {
                let Some((_, counter)) = self.counts.statuses.iter().find(|(s, _)| *s == status)
                else {
                    return (RetryVerdict::Done, None);
                };
                // gRPC: a pushback that is not a non-negative integer means "do not retry".
                if let Some(value) = grpc_pushback {
                    return match parse_pushback_ms(value) {
                        Some(ms) => {
                            (RetryVerdict::RetryAfter(Duration::from_millis(ms)), Some(counter))
                        }
                        None => (RetryVerdict::Done, None),
                    };
                }
                let hinted = status == 429 || status == 503;
                let hint = retry_after
                    .filter(|_| hinted)
                    .and_then(|v| parse_retry_after(v, unix_now_secs()));
                match hint {
                    Some(after) => (RetryVerdict::RetryAfter(after), Some(counter)),
                    None => (RetryVerdict::Retry, Some(counter)),
                }
            }
        }
    }

    /// After a failed try: whether and when to try again. `remaining` is what is left of the
    /// request's time; a retry needs its wait plus `min_try` to fit in it. Counts the retry
    /// (or the budget's refusal).
    #[allow(clippy::too_many_arguments)]
    pub fn next(
        &self,
        attempts: &mut Attempts,
        result: TryResult<'_>,
        remaining: Duration,
        min_try: Duration,
        random: f64,
        worker: usize,
        now: Instant,
    ) -> RetryDecision {
        let (verdict, counter) = self.verdict(&result);
        let mut shard =
            self.budget.as_ref().and_then(|s| s.get(worker % s.len().max(1))).map(|b| b.lock());
        let decision = self.rules.next(
            attempts,
            verdict,
            Some(remaining),
            min_try,
            random,
            shard.as_deref_mut(),
            now,
        );
        drop(shard);
        match decision {
            RetryDecision::Retry { .. } => {
                if let Some(c) = counter {
                    c.fetch_add(1, Relaxed);
                }
            }
            RetryDecision::Stop(RetryStop::BudgetExhausted) => {
                self.counts.budget_exhausted.fetch_add(1, Relaxed);
            }
            RetryDecision::Stop(RetryStop::Deadline) => {
                self.counts.deadline.fetch_add(1, Relaxed);
            }
            RetryDecision::Stop(_) => {}
        }
        decision
    }

    /// What `/admin/policies` shows.
    pub fn view(&self, now: Instant) -> RetryView {
        RetryView {
            retries: self.counts.total(),
            budget_balance: self
                .budget
                .as_ref()
                .map(|shards| shards.iter().map(|b| b.lock().balance(now)).sum()),
            budget_exhausted: self.counts.budget_exhausted.load(Relaxed),
            hedges_won: self.hedge.as_ref().map(|h| h.won.load(Relaxed)),
            hedges_lost: self.hedge.as_ref().map(|h| h.lost.load(Relaxed)),
        }
    }
}

/// Builds the retry policy of a route's settings (`None` for `failfast` or no retries).
pub fn for_route(
    strategy: Strategy,
    settings: Option<&RetrySettings>,
    hedge: Option<&HedgeSettings>,
    old: Option<&std::sync::Arc<RouteRetry>>,
    workers: usize,
) -> Option<std::sync::Arc<RouteRetry>> {
    if strategy == Strategy::Failfast {
        return None;
    }
    let settings = settings?;
    let hedge = hedge.filter(|_| strategy == Strategy::Forking);
    match old {
        Some(o) if o.same(settings, hedge) && o.workers == workers.max(1) => Some(o.clone()),
        _ => RouteRetry::new(settings, hedge, workers).map(std::sync::Arc::new),
    }
}

/// `grpc-retry-pushback-ms`: a non-negative decimal integer of milliseconds.
fn parse_pushback_ms(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn unix_now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{RetryBudgetSettings, RetryOn};

    fn settings(ratio: f64, min_per_sec: f64) -> RetrySettings {
        RetrySettings {
            attempts: 3,
            per_try_timeout: None,
            on: RetryOn {
                connect_failure: true,
                reset: true,
                timeout: false,
                statuses: vec![502, 503],
            },
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            jitter: "none",
            budget: Some(RetryBudgetSettings {
                ratio,
                min_per_sec,
                window: Duration::from_secs(10),
            }),
            non_idempotent: false,
            max_retry_after: Duration::from_secs(1),
            max_body: 1024,
        }
    }

    const LONG: Duration = Duration::from_secs(10);
    const NOW: Instant = Instant::ZERO;

    impl RouteRetry {
        fn new_for_test(settings: &RetrySettings, workers: usize) -> Option<RouteRetry> {
            RouteRetry::new(settings, None, workers)
        }
    }

    fn next(r: &RouteRetry, result: TryResult<'_>) -> RetryDecision {
        r.next(&mut Attempts::first(), result, LONG, Duration::ZERO, 0.0, 0, NOW)
    }

    fn answered(status: u16) -> TryResult<'static> {
        TryResult::Answered { status, retry_after: None, grpc_pushback: None }
    }

    #[test]
    fn only_listed_conditions_are_retried() {
        let r = RouteRetry::new_for_test(&settings(1.0, 100.0), 1).expect("valid");
        assert!(matches!(next(&r, answered(503)), RetryDecision::Retry { .. }));
        assert!(matches!(
            next(&r, TryResult::Failed(TryFailure::Reset)),
            RetryDecision::Retry { .. }
        ));
        assert_eq!(next(&r, answered(500)), RetryDecision::Stop(RetryStop::Final));
        assert_eq!(next(&r, answered(200)), RetryDecision::Stop(RetryStop::Final));
        assert_eq!(
            next(&r, TryResult::Failed(TryFailure::Timeout)),
            RetryDecision::Stop(RetryStop::Final)
        );
        let mut reasons = Vec::new();
        r.counts.each(|reason, n| reasons.push((reason.to_string(), n)));
        assert_eq!(reasons, [("reset".to_string(), 1), ("503".to_string(), 1)]);
    }

    #[test]
    fn retry_after_and_grpc_pushback_set_the_wait() {
        let r = RouteRetry::new_for_test(&settings(1.0, 100.0), 1).expect("valid");
        let hinted =
            TryResult::Answered { status: 503, retry_after: Some(b"1"), grpc_pushback: None };
        assert_eq!(next(&r, hinted), RetryDecision::Retry { after: Duration::from_secs(1) });
        let pushback =
            TryResult::Answered { status: 503, retry_after: None, grpc_pushback: Some(b"250") };
        assert_eq!(next(&r, pushback), RetryDecision::Retry { after: Duration::from_millis(250) });
        // A negative pushback means: do not retry.
        let refuse =
            TryResult::Answered { status: 503, retry_after: None, grpc_pushback: Some(b"-1") };
        assert_eq!(next(&r, refuse), RetryDecision::Stop(RetryStop::Final));
        // A hint longer than max_retry_after goes back to the client.
        let long =
            TryResult::Answered { status: 503, retry_after: Some(b"30"), grpc_pushback: None };
        assert_eq!(next(&r, long), RetryDecision::Stop(RetryStop::HintTooLong));
    }

    #[test]
    fn the_budget_caps_retries_at_the_ratio_of_requests() {
        let r = RouteRetry::new_for_test(&settings(0.2, 0.0), 1).expect("valid");
        for _ in 0..100 {
            r.begin(0, NOW);
        }
        let made = (0..100)
            .filter(|_| matches!(next(&r, answered(503)), RetryDecision::Retry { .. }))
            .count();
        assert_eq!(made, 20);
        assert_eq!(r.counts.budget_exhausted.load(Relaxed), 80);
    }

    #[test]
    fn budget_shards_sum_to_the_route_budget() {
        // Two workers, 50 requests each: each may retry 10 (20 %), 20 in all.
        let r = RouteRetry::new_for_test(&settings(0.2, 0.0), 2).expect("valid");
        for worker in 0..2 {
            for _ in 0..50 {
                r.begin(worker, NOW);
            }
        }
        let made: usize = (0..2)
            .map(|w| {
                (0..50)
                    .filter(|_| {
                        let d = r.next(
                            &mut Attempts::first(),
                            answered(502),
                            LONG,
                            Duration::ZERO,
                            0.0,
                            w,
                            NOW,
                        );
                        matches!(d, RetryDecision::Retry { .. })
                    })
                    .count()
            })
            .sum();
        assert_eq!(made, 20);
    }

    #[test]
    fn without_a_budget_only_attempts_limit_retries() {
        let mut s = settings(0.0, 0.0);
        s.budget = None;
        let r = RouteRetry::new_for_test(&s, 2).expect("valid");
        let made = (0..1000)
            .filter(|_| matches!(next(&r, answered(503)), RetryDecision::Retry { .. }))
            .count();
        assert_eq!(made, 1000);
    }

    #[test]
    fn only_idempotent_requests_with_a_kept_body_are_eligible() {
        let r = RouteRetry::new_for_test(&settings(1.0, 1.0), 1).expect("valid");
        assert!(r.eligible("GET", Some(0)));
        assert!(r.eligible("PUT", Some(1024)));
        assert!(!r.eligible("PUT", Some(1025)));
        assert!(!r.eligible("GET", None));
        assert!(!r.eligible("POST", Some(10)));
        let mut s = settings(1.0, 1.0);
        s.non_idempotent = true;
        assert!(RouteRetry::new_for_test(&s, 1).expect("valid").eligible("POST", Some(10)));
    }

    #[test]
    fn pushback_must_be_a_plain_integer() {
        assert_eq!(parse_pushback_ms(b"120"), Some(120));
        for bad in [&b""[..], b"-5", b"1.5", b"ten"] {
            assert_eq!(parse_pushback_ms(bad), None);
        }
    }
}
