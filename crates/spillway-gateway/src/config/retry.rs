//! A route's fault-tolerance settings: its `strategy:` and its `retries:` (attempts, per-try
//! timeout, the conditions worth a retry, backoff, retry budget, replayable body size).
//!
//! Each value is checked by building the `spillway-core` object it configures (`Backoff`,
//! `RetryBudget`, `RetryRules`), so the config accepts exactly what the algorithms accept. The
//! stateful retry policy (the budget shared by the route's requests) is built from these
//! values in `crate::policy::retry`.

use super::locate::Seg;
use super::raw::{RawRetries, RawRetryBudget, RawRetryOn, RawSize};
use super::validate::{at, byte_size, key, nearest, Checker};
use super::{ser_duration, ser_opt_duration};
use serde::Serialize;
use spillway_core::retry::{
    Backoff, Jitter, RetryBudget, RetryBudgetConfig, RetryConfigError, RetryRules,
};
use std::time::Duration;

/// Names accepted for `strategy:`.
pub const STRATEGY_NAMES: &[&str] =
    &["failover", "failfast", "forking", "failback", "failsafe", "broadcast"];
/// Default most mirrored requests in flight per route (beyond, copies are dropped).
pub const DEFAULT_MIRROR_IN_FLIGHT: u32 = 256;
/// Default bound on a failback queue's files.
pub const DEFAULT_FAILBACK_MAX_BYTES: u64 = 1 << 30;
/// Default age after which a queued request is dropped (counted as expired).
pub const DEFAULT_FAILBACK_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Default largest request body a failback route queues.
pub const DEFAULT_FAILBACK_MAX_BODY: u64 = 1 << 20;
/// Default first wait before a queued request is sent again.
pub const DEFAULT_FAILBACK_BACKOFF_BASE: Duration = Duration::from_secs(1);
/// Default longest wait between deliveries of a queued request.
pub const DEFAULT_FAILBACK_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Default hedge delay: the route's recent p95.
pub const DEFAULT_HEDGE_QUANTILE: f64 = 0.95;
/// Most hedges per request.
pub const MAX_HEDGES: u32 = 4;
/// Names accepted in `retries.on` besides statuses.
pub const RETRY_CONDITION_NAMES: &[&str] = &["connect_failure", "reset", "timeout"];
/// Names accepted for `retries.backoff.jitter`.
pub const JITTER_NAMES: &[&str] = &["full", "equal", "decorrelated", "none"];

/// Default tries per request, the first included (Envoy's default of one retry).
pub const DEFAULT_ATTEMPTS: u32 = 2;
/// Default first backoff wait.
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(25);
/// Default longest backoff wait.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_millis(250);
/// Default retry budget: retries ≤ 20 % of requests (Linkerd's default)…
pub const DEFAULT_BUDGET_RATIO: f64 = 0.2;
/// …plus 10 retries per second whatever the traffic…
pub const DEFAULT_BUDGET_MIN_PER_SEC: f64 = 10.0;
/// …over a 10 s window.
pub const DEFAULT_BUDGET_WINDOW: Duration = Duration::from_secs(10);
/// Default longest server hint (`Retry-After`, `grpc-retry-pushback-ms`) waited for: a longer
/// one is passed on to the client, which is better placed to wait.
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Default largest request body kept for replay (the lean HTTP/1.1 path buffers up to this
/// size anyway).
pub const DEFAULT_MAX_REPLAY_BODY: u64 = 64 * 1024;

/// What a route does when its upstream call fails.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Retry elsewhere, within `retries` (the default when `retries:` is written).
    Failover,
    /// Never retry: the first answer is the answer.
    Failfast,
    /// Hedge: when the first try is slower than `hedge.after`, send another to a different
    /// endpoint; the first good answer wins and the others are cancelled. Failures are then
    /// retried as with `failover`.
    Forking,
    /// Queue: when the try fails, the request is stored durably (`failback.dir`), answered
    /// 202 with an id, and delivered in the background until the upstream takes it.
    Failback,
    /// Mirror: a copy of each request goes to a shadow cluster, asynchronously; its outcome
    /// and latency never affect the answer (which is the route's cluster's, as failfast).
    Failsafe,
    /// Every available endpoint gets the request; the answer is a success only if all of
    /// them succeed, else 502 naming the endpoints that failed.
    Broadcast,
}

/// A route's `mirror:`, validated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct MirrorSettings {
    /// The shadow cluster.
    pub cluster: String,
    /// Share of requests copied (0 to 1).
    pub share: f64,
    /// Largest request body copied; a larger request is not mirrored.
    pub max_body: u64,
    /// Most copies in flight; beyond, copies are dropped (counted).
    pub max_in_flight: u32,
}

/// Checks a route's `mirror:` (the cluster's existence is checked with the clusters).
pub(super) fn mirror(
    c: &mut Checker<'_>,
    p: &[Seg],
    raw: super::raw::RawMirror,
) -> Option<MirrorSettings> {
    let percent = raw.percent.unwrap_or(100.0);
    if !(0.0..=100.0).contains(&percent) {
        c.error(&at(p, &[key("percent")]), "a percentage: 0 to 100");
        return None;
    }
    let max_body = match raw.max_body {
        None => DEFAULT_MAX_REPLAY_BODY,
        Some(size) => byte_size(c, &at(p, &[key("max_body")]), size)?,
    };
    let max_in_flight = raw.max_in_flight.unwrap_or(DEFAULT_MIRROR_IN_FLIGHT);
    if max_in_flight == 0 {
        c.error(&at(p, &[key("max_in_flight")]), "at least 1");
        return None;
    }
    Some(MirrorSettings { cluster: raw.cluster, share: percent / 100.0, max_body, max_in_flight })
}

/// A route's `failback:`, validated.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FailbackSettings {
    /// The queue's directory (absolute, or resolved against the config file's directory).
    pub dir: std::path::PathBuf,
    /// Bound on the queue's files.
    pub max_bytes: u64,
    /// Queued requests older than this are dropped (expired).
    #[serde(serialize_with = "ser_duration")]
    pub max_age: Duration,
    /// Largest request body queued; a larger request is answered as without failback.
    pub max_body: u64,
    /// Backoff between deliveries: first wait.
    #[serde(serialize_with = "ser_duration")]
    pub backoff_base: Duration,
    /// Backoff between deliveries: longest wait.
    #[serde(serialize_with = "ser_duration")]
    pub backoff_max: Duration,
    /// The failures that queue a request (same names as `retries.on`).
    pub on: RetryOn,
}

/// Checks a route's `failback:`; `base` resolves a relative `dir`.
pub(super) fn failback(
    c: &mut Checker<'_>,
    p: &[Seg],
    raw: super::raw::RawFailback,
    base: &std::path::Path,
) -> Option<FailbackSettings> {
    let before = c.problem_count();
    let dir = match raw.dir.as_deref().map(str::trim) {
        Some(d) if !d.is_empty() => base.join(d),
        _ => {
            c.error(
                &at(p, &[key("dir")]),
                "a failback queue needs a directory (`dir: /var/lib/spillway/failback/ROUTE`): \
                 queued requests must survive a restart",
            );
            return None;
        }
    };
    let size = |c: &mut Checker<'_>, k: &str, raw: Option<RawSize>, default: u64| {
        raw.and_then(|size| byte_size(c, &at(p, &[key(k)]), size)).unwrap_or(default)
    };
    let max_bytes = size(c, "max_bytes", raw.max_bytes, DEFAULT_FAILBACK_MAX_BYTES);
    let max_body = size(c, "max_body", raw.max_body, DEFAULT_FAILBACK_MAX_BODY);
    if max_bytes < 4096 {
        c.error(&at(p, &[key("max_bytes")]), "at least 4KB");
    }
    if max_body >= max_bytes {
        c.error(&at(p, &[key("max_body")]), "must be smaller than `max_bytes`");
    }
    let max_age = raw.max_age.map_or(DEFAULT_FAILBACK_MAX_AGE, |d| d.0);
    if max_age.is_zero() {
        c.error(&at(p, &[key("max_age")]), "must be longer than zero");
    }
    let (backoff_base, backoff_max) = match raw.backoff {
        None => (DEFAULT_FAILBACK_BACKOFF_BASE, DEFAULT_FAILBACK_BACKOFF_MAX),
        Some(b) => {
            let base = b.base.map_or(DEFAULT_FAILBACK_BACKOFF_BASE, |d| d.0);
            let max = b.max.map_or(DEFAULT_FAILBACK_BACKOFF_MAX.max(base), |d| d.0);
            if let Err(e) = Backoff::try_new(base, max, Jitter::None) {
                let k = if e.key == "backoff.base" { "base" } else { "max" };
                c.error(&at(p, &[key("backoff"), key(k)]), e.problem);
            }
            (base, max)
        }
    };
    let on = retry_on(c, &at(p, &[key("on")]), raw.on);
    (c.problem_count() == before).then_some(FailbackSettings {
        dir,
        max_bytes,
        max_age,
        max_body,
        backoff_base,
        backoff_max,
        on,
    })
}

/// When a hedge is sent.
#[derive(Copy, Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HedgeAfter {
    /// After a fixed delay.
    #[serde(serialize_with = "ser_duration")]
    Delay(Duration),
    /// After the route's recent latency quantile (e.g. 0.95 for `p95`).
    Quantile(f64),
}

/// A route's `hedge:`.
#[derive(Copy, Clone, Debug, PartialEq, Serialize)]
pub struct HedgeSettings {
    /// When a hedge is sent.
    pub after: HedgeAfter,
    /// Hedges per request at most.
    pub max_extra: u32,
}

/// Checks a route's `hedge:`.
pub(super) fn hedge(
    c: &mut Checker<'_>,
    p: &[Seg],
    raw: super::raw::RawHedge,
) -> Option<HedgeSettings> {
    let after = match raw.after.as_deref().map(str::trim) {
        None => HedgeAfter::Quantile(DEFAULT_HEDGE_QUANTILE),
        Some(text) => match text.strip_prefix('p').map(str::parse::<f64>) {
            Some(Ok(pct)) if pct > 0.0 && pct < 100.0 => HedgeAfter::Quantile(pct / 100.0),
            Some(_) => {
                c.error(
                    &at(p, &[key("after")]),
                    format!("`{text}` is not a percentile: write p50 to p99.9, or a delay"),
                );
                return None;
            }
            None => match super::duration::parse_duration(text) {
                Ok(d) if !d.is_zero() => HedgeAfter::Delay(d),
                Ok(_) => {
                    c.error(&at(p, &[key("after")]), "must be longer than zero");
                    return None;
                }
                Err(e) => {
                    c.error(&at(p, &[key("after")]), format!("{e}, or a percentile such as p95"));
                    return None;
                }
            },
        },
    };
    let max_extra = raw.max_extra.unwrap_or(1);
    if max_extra == 0 || max_extra > MAX_HEDGES {
        c.error(&at(p, &[key("max_extra")]), format!("hedges per request: 1 to {MAX_HEDGES}"));
        return None;
    }
    Some(HedgeSettings { after, max_extra })
}

/// The conditions a try is retried on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RetryOn {
    /// The connection could not be made (refused, unreachable, connect timeout).
    pub connect_failure: bool,
    /// The connection broke before a complete response head.
    pub reset: bool,
    /// The try's timeout passed before the response head.
    pub timeout: bool,
    /// Response statuses (e.g. 502, 503, 504).
    pub statuses: Vec<u16>,
}

impl RetryOn {
    /// Whether a response with `status` is retried.
    pub fn status(&self, status: u16) -> bool {
        self.statuses.contains(&status)
    }
}

/// A route's `retries:`, validated, defaults applied.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetrySettings {
    /// Tries per request, the first included.
    pub attempts: u32,
    /// Timeout of each try until the response head (default: the cluster's
    /// `timeouts.per_try`). The whole request stays within the route timeout or deadline.
    #[serde(serialize_with = "ser_opt_duration")]
    pub per_try_timeout: Option<Duration>,
    /// The conditions worth a retry.
    pub on: RetryOn,
    /// Backoff: first wait.
    #[serde(serialize_with = "ser_duration")]
    pub backoff_base: Duration,
    /// Backoff: longest wait.
    #[serde(serialize_with = "ser_duration")]
    pub backoff_max: Duration,
    /// Backoff jitter (`full`, `equal`, `decorrelated`, `none`).
    pub jitter: &'static str,
    /// The retry budget; `None` when written `budget: false` (retries are then limited only by
    /// `attempts`, and `spillway check` warns).
    pub budget: Option<RetryBudgetSettings>,
    /// Retry POST, PATCH and other non-idempotent methods too.
    pub non_idempotent: bool,
    /// The longest server hint waited for.
    #[serde(serialize_with = "ser_duration")]
    pub max_retry_after: Duration,
    /// The largest request body kept for replay; a larger one is sent once.
    pub max_body: u64,
}

/// `retries.budget`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetryBudgetSettings {
    /// Retries allowed per request.
    pub ratio: f64,
    /// Retries allowed per second whatever the traffic.
    pub min_per_sec: f64,
    /// How far back requests and retries are counted.
    #[serde(serialize_with = "ser_duration")]
    pub window: Duration,
}

impl RetryBudgetSettings {
    /// The core budget's configuration.
    pub fn core(&self) -> RetryBudgetConfig {
        RetryBudgetConfig {
            ratio: self.ratio,
            min_per_second: self.min_per_sec,
            window: self.window,
            ..RetryBudgetConfig::default()
        }
    }
}

impl RetrySettings {
    /// The core jitter.
    pub fn core_jitter(&self) -> Jitter {
        jitter_of(self.jitter).unwrap_or(Jitter::Full)
    }

    /// The core per-request rules (validated when the config was built).
    pub fn rules(&self) -> Result<RetryRules, RetryConfigError> {
        let backoff = Backoff::try_new(self.backoff_base, self.backoff_max, self.core_jitter())?;
        RetryRules::try_new(self.attempts, backoff, self.max_retry_after)
    }
}

fn jitter_of(name: &str) -> Option<Jitter> {
    Some(match name {
        "full" => Jitter::Full,
        "equal" => Jitter::Equal,
        "decorrelated" => Jitter::Decorrelated,
        "none" => Jitter::None,
        _ => return None,
    })
}

/// Checks a route's `strategy:` (`None` when not written).
pub(super) fn strategy(c: &mut Checker<'_>, p: &[Seg], raw: Option<String>) -> Option<Strategy> {
    let name = raw?;
    match name.as_str() {
        "failover" => Some(Strategy::Failover),
        "failfast" => Some(Strategy::Failfast),
        "forking" => Some(Strategy::Forking),
        "failback" => Some(Strategy::Failback),
        "failsafe" => Some(Strategy::Failsafe),
        "broadcast" => Some(Strategy::Broadcast),
        other => {
            let hint = nearest(other, STRATEGY_NAMES)
                .map(|n| format!("; did you mean `{n}`?"))
                .unwrap_or_default();
            c.error(
                p,
                format!(
                    "unknown strategy `{other}` (use one of {}){hint}",
                    STRATEGY_NAMES.join(", ")
                ),
            );
            None
        }
    }
}

/// Checks a list of retry conditions (`retries.on`, `failback.on`).
fn retry_on(c: &mut Checker<'_>, p: &[Seg], raw: Option<Vec<RawRetryOn>>) -> RetryOn {
    match raw {
        None => RetryOn {
            connect_failure: true,
            reset: true,
            timeout: false,
            statuses: vec![502, 503, 504],
        },
        Some(list) => {
            let mut on =
                RetryOn { connect_failure: false, reset: false, timeout: false, statuses: vec![] };
            for (i, item) in list.into_iter().enumerate() {
                let ip = at(p, &[Seg::Index(i)]);
                let status = match item {
                    RawRetryOn::Status(n) => Some(n),
                    RawRetryOn::Name(name) => match name.as_str() {
                        "connect_failure" => {
                            on.connect_failure = true;
                            None
                        }
                        "reset" => {
                            on.reset = true;
                            None
                        }
                        "timeout" => {
                            on.timeout = true;
                            None
                        }
                        text => match text.parse::<u64>() {
                            Ok(n) => Some(n),
                            Err(_) => {
                                let hint = nearest(text, RETRY_CONDITION_NAMES)
                                    .map(|n| format!("; did you mean `{n}`?"))
                                    .unwrap_or_default();
                                c.error(
                                    &ip,
                                    format!(
                                        "unknown retry condition `{text}` (use a status such as \
                                         503, or one of {}){hint}",
                                        RETRY_CONDITION_NAMES.join(", ")
                                    ),
                                );
                                None
                            }
                        },
                    },
                };
                if let Some(n) = status {
                    if !(400..=599).contains(&n) {
                        c.error(&ip, format!("{n} is not an error status (400 to 599)"));
                    } else if !on.statuses.contains(&(n as u16)) {
                        on.statuses.push(n as u16);
                    }
                }
            }
            on
        }
    }
}

/// Checks a route's `retries:`.
pub(super) fn retries(c: &mut Checker<'_>, p: &[Seg], raw: RawRetries) -> Option<RetrySettings> {
    let before = c.problem_count();
    let attempts = raw.attempts.unwrap_or(DEFAULT_ATTEMPTS);
    if attempts == 0 {
        c.error(&at(p, &[key("attempts")]), "must be at least 1 (1 never retries)");
    }
    let per_try_timeout = match raw.per_try_timeout {
        Some(d) if d.0.is_zero() => {
            c.error(&at(p, &[key("per_try_timeout")]), "must be greater than zero");
            None
        }
        other => other.map(|d| d.0),
    };
    let on = retry_on(c, &at(p, &[key("on")]), raw.on);
    let (backoff_base, backoff_max, jitter) = match raw.backoff {
        None => (DEFAULT_BACKOFF_BASE, DEFAULT_BACKOFF_MAX, "full"),
        Some(b) => {
            let base = b.base.map_or(DEFAULT_BACKOFF_BASE, |d| d.0);
            let max = b.max.map_or(DEFAULT_BACKOFF_MAX.max(base), |d| d.0);
            let jitter = match b.jitter.as_deref() {
                None => "full",
                Some(name) => match JITTER_NAMES.iter().find(|n| **n == name) {
                    Some(n) => n,
                    None => {
                        c.error(
                            &at(p, &[key("backoff"), key("jitter")]),
                            format!(
                                "unknown jitter `{name}` (use one of {})",
                                JITTER_NAMES.join(", ")
                            ),
                        );
                        "full"
                    }
                },
            };
            if let Err(e) = Backoff::try_new(base, max, Jitter::Full) {
                let k = if e.key == "backoff.base" { "base" } else { "max" };
                c.error(&at(p, &[key("backoff"), key(k)]), e.problem);
            }
            (base, max, jitter)
        }
    };
    let default_budget = RetryBudgetSettings {
        ratio: DEFAULT_BUDGET_RATIO,
        min_per_sec: DEFAULT_BUDGET_MIN_PER_SEC,
        window: DEFAULT_BUDGET_WINDOW,
    };
    let budget = match raw.budget {
        None | Some(RawRetryBudget::Switch(true)) => Some(default_budget),
        Some(RawRetryBudget::Switch(false)) => None,
        Some(RawRetryBudget::Settings(b)) => {
            let settings = RetryBudgetSettings {
                ratio: b.ratio.unwrap_or(DEFAULT_BUDGET_RATIO),
                min_per_sec: b.min_per_sec.unwrap_or(DEFAULT_BUDGET_MIN_PER_SEC),
                window: b.window.map_or(DEFAULT_BUDGET_WINDOW, |d| d.0),
            };
            if let Err(e) = RetryBudget::try_new(settings.core()) {
                let k = match e.key {
                    "budget.ratio" => "ratio",
                    "budget.min_per_second" => "min_per_sec",
                    _ => "window",
                };
                c.error(&at(p, &[key("budget"), key(k)]), e.problem);
            }
            Some(settings)
        }
    };
    let max_retry_after = raw.max_retry_after.map_or(DEFAULT_MAX_RETRY_AFTER, |d| d.0);
    let max_body = match raw.max_body {
        None => DEFAULT_MAX_REPLAY_BODY,
        Some(size) => {
            byte_size(c, &at(p, &[key("max_body")]), size).unwrap_or(DEFAULT_MAX_REPLAY_BODY)
        }
    };
    (c.problem_count() == before).then_some(RetrySettings {
        attempts,
        per_try_timeout,
        on,
        backoff_base,
        backoff_max,
        jitter,
        budget,
        non_idempotent: raw.non_idempotent.unwrap_or(false),
        max_retry_after,
        max_body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jitter_name_maps_to_a_core_jitter() {
        for name in JITTER_NAMES {
            assert!(jitter_of(name).is_some(), "{name}");
        }
        assert_eq!(jitter_of("fully"), None);
    }
}

/// Default longest age of a stale copy served.
pub const DEFAULT_STALE_MAX_AGE: Duration = Duration::from_secs(300);
/// Default bound on a route's stale copies.
pub const DEFAULT_STALE_MAX_BYTES: u64 = 64 << 20;

/// A route's `stale_on_error:`: keep the last good GET answers to serve when the cluster fails.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct StaleSettings {
    /// Copies older than this are not served.
    #[serde(serialize_with = "ser_duration")]
    pub max_age: Duration,
    /// Bound on the copies' bytes (one copy at most an eighth of it).
    pub max_bytes: u64,
}

/// Checks a route's `stale_on_error:`.
pub(super) fn stale_on_error(
    c: &mut Checker<'_>,
    p: &[Seg],
    raw: super::raw::RawStaleOnError,
) -> Option<StaleSettings> {
    let max_age = raw.max_age.map_or(DEFAULT_STALE_MAX_AGE, |d| d.0);
    if max_age.is_zero() {
        c.error(&at(p, &[key("max_age")]), "must be longer than zero");
        return None;
    }
    let max_bytes = match raw.max_bytes {
        None => DEFAULT_STALE_MAX_BYTES,
        Some(size) => byte_size(c, &at(p, &[key("max_bytes")]), size)?,
    };
    if max_bytes < 8 * 1024 {
        c.error(&at(p, &[key("max_bytes")]), "at least 8KB");
        return None;
    }
    Some(StaleSettings { max_age, max_bytes })
}
