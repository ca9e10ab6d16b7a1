//! Counters and histograms the workers fill during a run: per step (for the summary) and per
//! timeline interval (for the progress bar and plots).
//!
//! One mutex guards them all: a lock per request is a few tens of nanoseconds, far below the
//! cost of the request itself, and keeps per-step histograms from being duplicated per worker.

use super::conn::Failure;
use crate::histogram::LatencyHistogram;
use crate::mix::Mix;
use crate::report::{status_class, ClassReport, Rejected, StepReport, TimelinePoint};
use std::collections::BTreeMap;
use std::time::Duration;

/// Classes kept per interval, in plot order.
pub const CLASSES: [&str; 5] = ["2xx", "3xx", "4xx", "5xx", "errors"];

fn class_index(status: u16) -> usize {
    match status {
        200..=299 => 0,
        300..=399 => 1,
        400..=499 => 2,
        500.. => 3,
        // 1xx never ends a request; count it with 2xx rather than inventing a column.
        _ => 0,
    }
}

/// Everything about one step.
#[derive(Debug, Default, Clone)]
pub struct StepAcc {
    sent: u64,
    /// Requests ended (each once, with its last outcome).
    requests: u64,
    /// Every send, retries included.
    attempts: u64,
    /// Sends beyond a request's first.
    retries: u64,
    behind: u64,
    responses: u64,
    status: BTreeMap<u16, u64>,
    errors: BTreeMap<&'static str, u64>,
    latency: LatencyHistogram,
    /// How late requests left compared with their intended time (timer slack and queueing).
    lag: LatencyHistogram,
    /// When the last request of the step left, from the start of the run.
    last_send: Duration,
    /// Per class of the mix (empty without one).
    classes: Vec<ClassAcc>,
}

/// One class within a step.
#[derive(Debug, Default, Clone)]
struct ClassAcc {
    sent: u64,
    ok: u64,
    rejected: Rejected,
    other_status: u64,
    errors: u64,
    timeouts: u64,
    /// Latency of the 2xx responses only.
    latency: LatencyHistogram,
}

impl ClassAcc {
    fn on_done(&mut self, result: Result<u16, Failure>, latency: Duration) {
        match result {
            Ok(200..=299) => {
                self.ok += 1;
                self.latency.record(latency);
            }
            Ok(429) => self.rejected.too_many_requests += 1,
            Ok(503) => self.rejected.unavailable += 1,
            Ok(504) => self.rejected.gateway_timeout += 1,
            Ok(_) => self.other_status += 1,
            Err(Failure::Timeout) => self.timeouts += 1,
            Err(_) => self.errors += 1,
        }
    }

    fn merge(&mut self, other: &ClassAcc) {
        self.sent += other.sent;
        self.ok += other.ok;
        self.rejected.too_many_requests += other.rejected.too_many_requests;
        self.rejected.unavailable += other.rejected.unavailable;
        self.rejected.gateway_timeout += other.rejected.gateway_timeout;
        self.other_status += other.other_status;
        self.errors += other.errors;
        self.timeouts += other.timeouts;
        self.latency.merge(&other.latency);
    }
}

/// What the report says about each class of the mix.
#[derive(Debug, Clone)]
struct ClassInfo {
    label: String,
    weight: u32,
    share: f64,
}

#[derive(Debug, Default)]
struct IntervalAcc {
    sent: u64,
    classes: [u64; 5],
    latency: LatencyHistogram,
}

/// All counters of a run.
#[derive(Debug, Default)]
pub struct Stats {
    steps: Vec<StepAcc>,
    classes: Vec<ClassInfo>,
    interval: IntervalAcc,
    /// Requests sent so far (first attempts).
    pub sent: u64,
    /// Attempts sent so far, retries included.
    pub attempts: u64,
    /// Responses so far.
    pub responses: u64,
    /// Transport failures so far.
    pub errors: u64,
}

/// What a step is, for turning its counters into a [`StepReport`].
#[derive(Debug, Clone, Copy)]
pub struct StepShape {
    /// Intended rate, if any.
    pub target_rate: Option<f64>,
    /// Start offset.
    pub start: Duration,
    /// Length.
    pub duration: Duration,
    /// Requests planned, if there is a schedule.
    pub planned: Option<u64>,
}

impl Stats {
    /// Counters for `steps` steps, and per class of `mix` when there is one.
    pub fn new(steps: usize, mix: Option<&Mix>) -> Stats {
        let classes: Vec<ClassInfo> = mix.map_or_else(Vec::new, |mix| {
            mix.classes()
                .iter()
                .enumerate()
                .map(|(k, c)| ClassInfo {
                    label: c.label.clone(),
                    weight: c.weight,
                    share: mix.share(k),
                })
                .collect()
        });
        let step =
            StepAcc { classes: vec![ClassAcc::default(); classes.len()], ..Default::default() };
        Stats { steps: vec![step; steps.max(1)], classes, ..Default::default() }
    }

    fn step(&mut self, k: usize) -> &mut StepAcc {
        let last = self.steps.len() - 1;
        &mut self.steps[k.min(last)]
    }

    /// A request of step `k` and mix class `class` (ignored without a mix) is leaving at `at`
    /// from the start, `lag` after its intended time (`None` in closed loop); `behind` when it
    /// waited for a free connection.
    pub fn on_send(
        &mut self,
        k: usize,
        class: usize,
        behind: bool,
        at: Duration,
        lag: Option<Duration>,
    ) {
        let step = self.step(k);
        if let Some(c) = step.classes.get_mut(class) {
            c.sent += 1;
        }
        step.sent += 1;
        step.attempts += 1;
        step.behind += u64::from(behind);
        step.last_send = step.last_send.max(at);
        if let Some(lag) = lag {
            step.lag.record(lag);
        }
        self.interval.sent += 1;
        self.sent += 1;
        self.attempts += 1;
    }

    /// A request of step `k` is sent again (a client retry); its class is counted by
    /// [`Stats::on_done`] once, with the last outcome.
    pub fn on_retry(&mut self, k: usize) {
        let step = self.step(k);
        step.attempts += 1;
        step.retries += 1;
        self.attempts += 1;
    }

    /// A request of step `k` and class `class` ended after `latency` with a status or a
    /// failure (the outcome of its last attempt).
    pub fn on_done(
        &mut self,
        k: usize,
        class: usize,
        result: Result<u16, Failure>,
        latency: Duration,
    ) {
        let step = self.step(k);
        step.requests += 1;
        if let Some(c) = step.classes.get_mut(class) {
            c.on_done(result, latency);
        }
        match result {
            Ok(status) => {
                let step = self.step(k);
                step.responses += 1;
                *step.status.entry(status).or_default() += 1;
                step.latency.record(latency);
                self.interval.classes[class_index(status)] += 1;
                self.interval.latency.record(latency);
                self.responses += 1;
            }
            Err(failure) => {
                *self.step(k).errors.entry(failure.as_str()).or_default() += 1;
                self.interval.classes[4] += 1;
                self.errors += 1;
            }
        }
    }

    /// A closed-loop request of the only step, sent at `at` from the start, ended after
    /// `latency` and `retries` retries: [`Stats::on_send`], [`Stats::on_retry`] and
    /// [`Stats::on_done`] in one call.
    pub fn on_exchange(
        &mut self,
        class: usize,
        at: Duration,
        result: Result<u16, Failure>,
        latency: Duration,
        retries: u32,
    ) {
        self.on_send(0, class, false, at, None);
        for _ in 0..retries {
            self.on_retry(0);
        }
        self.on_done(0, class, result, latency);
    }

    /// Closes the current interval, `length` long, ending at `t` from the start.
    pub fn take_interval(
        &mut self,
        t: Duration,
        length: Duration,
        target_rate: Option<f64>,
    ) -> TimelinePoint {
        let secs = length.as_secs_f64().max(1e-6);
        let interval = &mut self.interval;
        let rates = CLASSES
            .iter()
            .zip(interval.classes)
            .map(|(class, n)| (class.to_string(), n as f64 / secs))
            .collect();
        let quantile = |q: f64| {
            (!interval.latency.is_empty())
                .then(|| interval.latency.quantile_micros(q) as f64 / 1000.0)
        };
        let point = TimelinePoint {
            t_s: t.as_secs_f64(),
            target_rate,
            sent_rate: interval.sent as f64 / secs,
            rates,
            p50_ms: quantile(0.5),
            p90_ms: quantile(0.9),
            p99_ms: quantile(0.99),
        };
        interval.sent = 0;
        interval.classes = [0; 5];
        interval.latency.reset();
        point
    }

    /// The report of step `k` (`None`: all steps merged, with `shape` describing the whole run).
    pub fn step_report(&self, k: Option<usize>, shape: StepShape) -> StepReport {
        let merged;
        let acc = match k {
            Some(k) => &self.steps[k.min(self.steps.len() - 1)],
            None => {
                let mut all = StepAcc {
                    classes: vec![ClassAcc::default(); self.classes.len()],
                    ..Default::default()
                };
                for s in &self.steps {
                    for (into, from) in all.classes.iter_mut().zip(&s.classes) {
                        into.merge(from);
                    }
                    all.sent += s.sent;
                    all.requests += s.requests;
                    all.attempts += s.attempts;
                    all.retries += s.retries;
                    all.behind += s.behind;
                    all.responses += s.responses;
                    for (code, n) in &s.status {
                        *all.status.entry(*code).or_default() += n;
                    }
                    for (kind, n) in &s.errors {
                        *all.errors.entry(kind).or_default() += n;
                    }
                    all.latency.merge(&s.latency);
                    all.lag.merge(&s.lag);
                    all.last_send = all.last_send.max(s.last_send);
                }
                merged = all;
                &merged
            }
        };
        let secs = shape.duration.as_secs_f64().max(1e-9);
        // A generator that fell behind sends its last request after the step's end: the rate it
        // achieved is then over the longer window, not the planned one.
        let send_window = match shape.target_rate {
            Some(rate) if acc.sent > 0 => {
                (acc.last_send.saturating_sub(shape.start).as_secs_f64() + 1.0 / rate).max(secs)
            }
            _ => secs,
        };
        let mut status_classes: BTreeMap<String, u64> = BTreeMap::new();
        for (code, n) in &acc.status {
            *status_classes.entry(status_class(*code).to_string()).or_default() += n;
        }
        let transport: u64 = acc.errors.values().sum();
        let failed_statuses: u64 =
            acc.status.iter().filter(|(c, _)| **c >= 400).map(|(_, n)| n).sum();
        let ended = acc.responses + transport;
        let ok: u64 = acc.status.range(200..300).map(|(_, n)| n).sum();
        let classes = self
            .classes
            .iter()
            .zip(&acc.classes)
            .map(|(info, c)| ClassReport {
                class: info.label.clone(),
                weight: info.weight,
                share: info.share,
                offered_rate: shape.target_rate.map(|r| r * info.share),
                sent: c.sent,
                ok: c.ok,
                rejected: c.rejected,
                other_status: c.other_status,
                errors: c.errors,
                timeouts: c.timeouts,
                goodput: c.ok as f64 / secs,
                served_fraction: if c.sent == 0 { 0.0 } else { c.ok as f64 / c.sent as f64 },
                latency_ms: c.latency.summary(),
            })
            .collect();
        StepReport {
            step: k,
            target_rate: shape.target_rate,
            start_s: shape.start.as_secs_f64(),
            duration_s: shape.duration.as_secs_f64(),
            planned: shape.planned,
            sent: acc.sent,
            missed: shape.planned.map_or(0, |p| p.saturating_sub(acc.sent)),
            behind: acc.behind,
            responses: acc.responses,
            achieved_rate: acc.sent as f64 / send_window,
            throughput: acc.responses as f64 / secs,
            status: acc.status.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
            status_class: status_classes,
            errors: acc.errors.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            requests: acc.requests,
            attempts: acc.attempts,
            retries: acc.retries,
            error_rate: if ended == 0 {
                0.0
            } else {
                (transport + failed_statuses) as f64 / ended as f64
            },
            latency_ms: acc.latency.summary(),
            send_lag_ms: acc.lag.summary(),
            goodput: ok as f64 / secs,
            classes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(planned: Option<u64>) -> StepShape {
        StepShape {
            target_rate: Some(10.0),
            start: Duration::ZERO,
            duration: Duration::from_secs(1),
            planned,
        }
    }

    #[test]
    fn step_report_counts_statuses_errors_and_misses() {
        let mut stats = Stats::new(2, None);
        for _ in 0..8 {
            stats.on_send(
                0,
                0,
                false,
                Duration::from_millis(100),
                Some(Duration::from_micros(100)),
            );
            stats.on_done(0, 0, Ok(200), Duration::from_millis(1));
        }
        stats.on_send(0, 0, true, Duration::from_millis(900), Some(Duration::from_millis(5)));
        stats.on_done(0, 0, Ok(503), Duration::from_millis(9));
        stats.on_send(1, 0, false, Duration::from_millis(1000), None);
        stats.on_done(1, 0, Err(Failure::Timeout), Duration::from_secs(1));
        let r = stats.step_report(Some(0), shape(Some(10)));
        assert_eq!((r.sent, r.missed, r.behind, r.responses), (9, 1, 1, 9));
        assert_eq!(r.status["200"], 8);
        assert_eq!(r.status_class["5xx"], 1);
        assert!((r.error_rate - 1.0 / 9.0).abs() < 1e-9);
        assert!((r.achieved_rate - 9.0).abs() < 1e-9);
        assert!((r.send_lag_ms.max - 5.0).abs() < 0.01);
        let all = stats.step_report(None, shape(None));
        assert_eq!((all.sent, all.responses), (10, 9));
        assert_eq!(all.errors["timeout"], 1);
    }

    #[test]
    fn classes_count_ok_rejections_errors_and_timeouts_apart() {
        let mix: Mix = "x-c: low=1,high=1".parse().unwrap();
        let mut stats = Stats::new(2, Some(&mix));
        let ms = Duration::from_millis;
        let outcomes: [(usize, usize, Result<u16, Failure>, u64); 9] = [
            (0, 0, Ok(200), 4),
            (0, 0, Ok(429), 1),
            (0, 0, Ok(503), 1),
            (0, 0, Ok(504), 1),
            (0, 0, Ok(302), 1),
            (0, 0, Err(Failure::Timeout), 1000),
            (0, 0, Err(Failure::Io), 1),
            (0, 1, Ok(200), 8),
            (1, 1, Ok(204), 2),
        ];
        for (step, class, result, latency) in outcomes {
            stats.on_send(step, class, false, Duration::ZERO, None);
            stats.on_done(step, class, result, ms(latency));
        }
        let r = stats.step_report(Some(0), shape(Some(10)));
        let low = &r.classes[0];
        assert_eq!(low.class, "low");
        assert_eq!((low.sent, low.ok, low.other_status, low.errors, low.timeouts), (7, 1, 1, 1, 1));
        assert_eq!(
            low.rejected,
            Rejected { too_many_requests: 1, unavailable: 1, gateway_timeout: 1 }
        );
        assert!((low.served_fraction - 1.0 / 7.0).abs() < 1e-9);
        assert_eq!(low.offered_rate, Some(5.0));
        // Only the 2xx latency counts: the 1 s timeout and the fast 429 do not.
        assert!((low.latency_ms.max - 4.0).abs() < 0.01, "{:?}", low.latency_ms);
        assert_eq!((r.classes[1].sent, r.classes[1].ok), (1, 1));
        assert_eq!(r.goodput, 2.0);
        let all = stats.step_report(None, shape(None));
        assert_eq!((all.classes[1].sent, all.classes[1].ok), (2, 2));
        assert_eq!(all.classes[1].goodput, 2.0);
        assert!((all.classes[1].latency_ms.max - 8.0).abs() < 0.01);
        assert_eq!(all.classes[0].rejected.total(), 3);
        assert!(Stats::new(1, None).step_report(Some(0), shape(None)).classes.is_empty());
    }

    #[test]
    fn a_retried_request_counts_once_and_every_attempt_counts() {
        let mix: Mix = "x-c: a=1".parse().unwrap();
        let mut stats = Stats::new(2, Some(&mix));
        // Step 0: one request, two retries, last outcome 200.
        stats.on_send(0, 0, false, Duration::ZERO, None);
        stats.on_retry(0);
        stats.on_retry(0);
        stats.on_done(0, 0, Ok(200), Duration::from_millis(30));
        // Step 1: one request never retried.
        stats.on_send(1, 0, false, Duration::ZERO, None);
        stats.on_done(1, 0, Ok(503), Duration::from_millis(1));
        assert_eq!((stats.sent, stats.attempts, stats.responses), (2, 4, 2));
        let first = stats.step_report(Some(0), shape(Some(1)));
        assert_eq!((first.sent, first.requests, first.attempts, first.retries), (1, 1, 3, 2));
        assert_eq!(first.status["200"], 1);
        assert_eq!((first.classes[0].sent, first.classes[0].ok), (1, 1));
        assert_eq!(first.error_rate, 0.0);
        let all = stats.step_report(None, shape(None));
        assert_eq!((all.sent, all.requests, all.attempts, all.retries), (2, 2, 4, 2));

        let mut closed = Stats::new(1, None);
        closed.on_exchange(0, Duration::ZERO, Err(Failure::Timeout), Duration::from_secs(1), 3);
        let r = closed.step_report(Some(0), shape(None));
        assert_eq!((r.sent, r.requests, r.attempts, r.retries), (1, 1, 4, 3));
        assert_eq!(r.errors["timeout"], 1);
    }

    #[test]
    fn a_generator_that_falls_behind_reports_a_lower_achieved_rate() {
        let mut stats = Stats::new(1, None);
        // 10 requests planned over 1 s at 10 rps, but the last one only left at 1.9 s.
        for i in 0..10 {
            stats.on_send(0, 0, false, Duration::from_millis(100 + 200 * i), None);
        }
        let r = stats.step_report(Some(0), shape(Some(10)));
        assert!((r.achieved_rate - 5.0).abs() < 1e-9, "achieved {}", r.achieved_rate);
    }

    #[test]
    fn interval_rates_are_per_second_and_reset() {
        let mut stats = Stats::new(1, None);
        for _ in 0..5 {
            stats.on_send(0, 0, false, Duration::ZERO, None);
            stats.on_done(0, 0, Ok(200), Duration::from_millis(2));
        }
        stats.on_done(0, 0, Err(Failure::Connect), Duration::ZERO);
        let p = stats.take_interval(Duration::from_millis(500), Duration::from_millis(500), None);
        assert_eq!(p.sent_rate, 10.0);
        assert_eq!(p.rates["2xx"], 10.0);
        assert_eq!(p.rates["errors"], 2.0);
        assert!(p.p50_ms.is_some_and(|v| (v - 2.0).abs() < 0.01));
        let empty = stats.take_interval(Duration::from_secs(1), Duration::from_millis(500), None);
        assert_eq!(empty.sent_rate, 0.0);
        assert_eq!(empty.p99_ms, None);
    }
}
