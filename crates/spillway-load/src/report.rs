//! What a run produces: per-step and overall results, a timeline for plots, the versioned JSON
//! schema (`--json`) and the summary table printed at the end.
//!
//! One [`Report`] type serves `load`, `replay` and each step of `capacity`, so the JSON and the
//! plots look the same whichever tool made them.

use crate::histogram::LatencySummary;
use crate::units::{format_duration, format_micros};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Value of [`Report::schema`]; bumped on any incompatible change of the JSON. Additions that
/// old readers can ignore keep it: `goodput`, `requests`, `attempts` and `retries` on each step,
/// with `--mix` the report's `mix_header` and each step's `classes` ([`ClassReport`]), and with
/// `--client-retries` the report's `client_retries`.
pub const REPORT_SCHEMA: &str = "spillway.load.report/v1";

/// How requests were generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Constant arrival rate (or ramp); latency from the intended send time.
    Open,
    /// Each connection sends as fast as responses come back.
    Closed,
    /// Recorded arrival times, scaled.
    Replay,
}

/// A whole run, as written by `--json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Always [`REPORT_SCHEMA`].
    pub schema: String,
    /// The URL loaded.
    pub target: String,
    /// Open, closed or replay.
    pub mode: Mode,
    /// `HTTP/1.1` or `HTTP/2`.
    pub http_version: String,
    /// TCP connections used.
    pub connections: usize,
    /// Planned length of the run, seconds.
    pub duration_s: f64,
    /// Real time from start to the last response (or timeout), seconds.
    pub elapsed_s: f64,
    /// One entry per step (a single one without a ramp).
    pub steps: Vec<StepReport>,
    /// All steps together.
    pub overall: StepReport,
    /// Throughput and latency per time interval, for plots.
    pub timeline: Vec<TimelinePoint>,
    /// The header `--mix` varied, when it was used (each step then has `classes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mix_header: Option<String>,
    /// How the client retried errors, when `--client-retries` was above zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_retries: Option<ClientRetrySettings>,
}

/// The client retry settings of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClientRetrySettings {
    /// Most retries per request.
    pub retries: u32,
    /// Wait between an error and the next attempt, milliseconds.
    pub backoff_ms: f64,
}

/// Results of one step, or of the whole run (`step` is `None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Step index (0-based), `None` for the overall figures.
    pub step: Option<usize>,
    /// Intended arrival rate (rps); `None` in closed loop and replay.
    pub target_rate: Option<f64>,
    /// Start of the step from the start of the run, seconds.
    pub start_s: f64,
    /// Length of the step, seconds.
    pub duration_s: f64,
    /// Requests the schedule meant to send, when there is a schedule.
    pub planned: Option<u64>,
    /// Requests sent (client requests: a retried request is sent once).
    pub sent: u64,
    /// Client requests that ended, each counted once with the outcome of its last attempt
    /// (`status`, `errors`, latency and `classes` count these); equal to `sent` once the run is
    /// over.
    #[serde(default)]
    pub requests: u64,
    /// Everything sent: first attempts and client retries. `attempts / requests` is the
    /// client's own amplification; a backend's request count over `requests` is the whole
    /// path's.
    #[serde(default)]
    pub attempts: u64,
    /// Attempts beyond each request's first (`attempts - sent`).
    #[serde(default)]
    pub retries: u64,
    /// Planned requests never sent because the run's time was up (the generator or the
    /// connections could not keep up).
    pub missed: u64,
    /// Requests sent late because every connection was busy at their intended time (their latency
    /// counts from the intended time).
    pub behind: u64,
    /// Requests answered with a status (any status).
    pub responses: u64,
    /// Requests sent per second of the step.
    pub achieved_rate: f64,
    /// Responses per second of the step.
    pub throughput: f64,
    /// Responses by status code.
    pub status: BTreeMap<String, u64>,
    /// Responses by class: `2xx`, `3xx`, `4xx`, `5xx`.
    pub status_class: BTreeMap<String, u64>,
    /// Transport failures by kind (`connect`, `timeout`, `io`, `body`).
    pub errors: BTreeMap<String, u64>,
    /// Share of requests whose last attempt failed (transport error or status ≥ 400), 0..=1.
    pub error_rate: f64,
    /// Latency of the requests that ended with a response, milliseconds: from the intended
    /// send of the first attempt to the last answer (client retries and backoffs included).
    pub latency_ms: LatencySummary,
    /// How late requests left compared with their intended send time, milliseconds (all zero
    /// in closed loop): the generator's own precision.
    #[serde(default)]
    pub send_lag_ms: LatencySummary,
    /// 2xx responses per second of the step.
    #[serde(default)]
    pub goodput: f64,
    /// Per class of the `--mix`, in the order given (absent without a mix).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<ClassReport>,
}

/// Results of one class of a `--mix` within a step (or the whole run).
///
/// `sent = ok + rejected + other_status + errors + timeouts` once every request has ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassReport {
    /// The header value of the class.
    pub class: String,
    /// Its weight in the mix.
    pub weight: u32,
    /// Its share of the requests, 0..=1.
    pub share: f64,
    /// Its part of the step's intended rate (rps); `None` without a schedule.
    pub offered_rate: Option<f64>,
    /// Requests of the class sent.
    pub sent: u64,
    /// Served: 2xx responses (necessarily within the timeout).
    pub ok: u64,
    /// Refusals, by the status a gateway answers them with.
    pub rejected: Rejected,
    /// Any other status (1xx, 3xx, other 4xx and 5xx).
    pub other_status: u64,
    /// Transport failures other than timeouts (connect, io, body).
    pub errors: u64,
    /// No complete response within the timeout.
    pub timeouts: u64,
    /// `ok` per second of the step.
    pub goodput: f64,
    /// `ok / sent` (0 when nothing was sent).
    pub served_fraction: f64,
    /// Latency of the 2xx responses only, milliseconds.
    pub latency_ms: LatencySummary,
}

/// Refused requests of a class by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejected {
    /// 429 Too Many Requests (rate limits).
    #[serde(rename = "429")]
    pub too_many_requests: u64,
    /// 503 Service Unavailable (load shedding, open breaker).
    #[serde(rename = "503")]
    pub unavailable: u64,
    /// 504 Gateway Timeout (deadline exceeded).
    #[serde(rename = "504")]
    pub gateway_timeout: u64,
}

impl Rejected {
    /// All three together.
    pub fn total(&self) -> u64 {
        self.too_many_requests + self.unavailable + self.gateway_timeout
    }
}

/// One interval of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// End of the interval from the start of the run, seconds.
    pub t_s: f64,
    /// Intended rate at that time, if any.
    pub target_rate: Option<f64>,
    /// Requests sent per second.
    pub sent_rate: f64,
    /// Responses per second by class (`2xx` .. `5xx`) plus `errors` for transport failures.
    pub rates: BTreeMap<String, f64>,
    /// Median latency of the responses in the interval, ms (`None` when there were none).
    pub p50_ms: Option<f64>,
    /// 90th percentile, ms.
    pub p90_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
}

/// The class (`2xx`...) of a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

impl StepReport {
    /// Responses with a status below 400.
    pub fn successes(&self) -> u64 {
        self.status.iter().filter(|(code, _)| code.as_str() < "400").map(|(_, n)| *n).sum()
    }

    /// Transport failures of any kind.
    pub fn transport_errors(&self) -> u64 {
        self.errors.values().sum()
    }
}

impl Report {
    /// Serialises to pretty JSON.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    /// The table printed at the end of a run: one row per step (when there are several) and
    /// one for the whole run.
    pub fn summary_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} {} {} via {} connection(s), {:.1}s",
            match self.mode {
                Mode::Open => "open-loop",
                Mode::Closed => "closed-loop",
                Mode::Replay => "replay",
            },
            self.target,
            self.http_version,
            self.connections,
            self.elapsed_s
        );
        let _ = writeln!(
            out,
            "{:>6} {:>9} {:>9} {:>9} {:>8} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9}",
            "step",
            "target",
            "achieved",
            "resp/s",
            "sent",
            "non-2xx",
            "errors",
            "p50",
            "p90",
            "p99",
            "max"
        );
        let mut row = |label: String, s: &StepReport| {
            let non_2xx: u64 =
                s.status_class.iter().filter(|(c, _)| c.as_str() != "2xx").map(|(_, n)| n).sum();
            let _ = writeln!(
                out,
                "{:>6} {:>9} {:>9.1} {:>9.1} {:>8} {:>7} {:>7} {:>9} {:>9} {:>9} {:>9}",
                label,
                s.target_rate.map(|r| format!("{r:.0}")).unwrap_or_else(|| "-".into()),
                s.achieved_rate,
                s.throughput,
                s.sent,
                non_2xx,
                s.transport_errors(),
                format_micros(s.latency_ms.p50 * 1000.0),
                format_micros(s.latency_ms.p90 * 1000.0),
                format_micros(s.latency_ms.p99 * 1000.0),
                format_micros(s.latency_ms.max * 1000.0),
            );
        };
        if self.steps.len() > 1 {
            for s in &self.steps {
                row(format!("{}", s.step.unwrap_or(0) + 1), s);
            }
        }
        row("all".to_string(), &self.overall);
        if !self.overall.classes.is_empty() {
            self.class_table(&mut out);
        }
        let mut notes = Vec::new();
        if !self.overall.status.is_empty() {
            let codes: Vec<String> =
                self.overall.status.iter().map(|(c, n)| format!("{c}: {n}")).collect();
            notes.push(format!("status {}", codes.join(", ")));
        }
        if !self.overall.errors.is_empty() {
            let errors: Vec<String> =
                self.overall.errors.iter().map(|(c, n)| format!("{c}: {n}")).collect();
            notes.push(format!("errors {}", errors.join(", ")));
        }
        if let Some(retry) = &self.client_retries {
            let all = &self.overall;
            let per_request =
                if all.requests == 0 { 0.0 } else { all.attempts as f64 / all.requests as f64 };
            notes.push(format!(
                "client retries (up to {}, backoff {}): {} requests, {} attempts ({per_request:.2} \
                 per request, {} retries)",
                retry.retries,
                format_duration(
                    std::time::Duration::try_from_secs_f64(retry.backoff_ms / 1e3)
                        .unwrap_or_default()
                ),
                all.requests,
                all.attempts,
                all.retries
            ));
        }
        if self.mode != Mode::Closed && self.overall.sent > 0 {
            let lag = &self.overall.send_lag_ms;
            notes.push(format!(
                "send lag behind schedule: p50 {}, p99 {}, max {}",
                format_micros(lag.p50 * 1000.0),
                format_micros(lag.p99 * 1000.0),
                format_micros(lag.max * 1000.0)
            ));
        }
        if self.overall.missed > 0 {
            notes.push(format!(
                "{} planned requests never sent (generator or connections saturated)",
                self.overall.missed
            ));
        }
        if self.overall.behind > 0 {
            notes.push(format!(
                "{} requests waited for a free connection (latency counted from their intended time)",
                self.overall.behind
            ));
        }
        for note in notes {
            let _ = writeln!(out, "  {note}");
        }
        out
    }
}

impl Report {
    /// The per-class block of the summary (runs with `--mix`): one row per class and step.
    fn class_table(&self, out: &mut String) {
        let header = self.mix_header.as_deref().unwrap_or("class");
        let _ = writeln!(
            out,
            "per {header} (ok = 2xx; goodput = ok/s; served = ok/sent; latency of ok only):"
        );
        let width =
            self.overall.classes.iter().map(|c| c.class.chars().count()).max().unwrap_or(0).max(5);
        let _ = writeln!(
            out,
            "{:>6} {:<width$} {:>8} {:>7} {:>7} {:>8} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} \
             {:>9} {:>9} {:>9}",
            "step",
            "class",
            "offered",
            "sent",
            "ok",
            "goodput",
            "served",
            "429",
            "503",
            "504",
            "other",
            "errors",
            "t/o",
            "p50",
            "p99",
            "max",
        );
        let mut rows = |label: String, s: &StepReport| {
            for c in &s.classes {
                let _ = writeln!(
                    out,
                    "{:>6} {:<width$} {:>8} {:>7} {:>7} {:>8.1} {:>5.1}% {:>6} {:>6} {:>6} {:>6} \
                     {:>6} {:>6} {:>9} {:>9} {:>9}",
                    label,
                    c.class,
                    c.offered_rate.map(|r| format!("{r:.0}")).unwrap_or_else(|| "-".into()),
                    c.sent,
                    c.ok,
                    c.goodput,
                    c.served_fraction * 100.0,
                    c.rejected.too_many_requests,
                    c.rejected.unavailable,
                    c.rejected.gateway_timeout,
                    c.other_status,
                    c.errors,
                    c.timeouts,
                    format_micros(c.latency_ms.p50 * 1000.0),
                    format_micros(c.latency_ms.p99 * 1000.0),
                    format_micros(c.latency_ms.max * 1000.0),
                );
            }
        };
        if self.steps.len() > 1 {
            for s in &self.steps {
                rows(format!("{}", s.step.unwrap_or(0) + 1), s);
            }
        }
        rows("all".to_string(), &self.overall);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(step: Option<usize>) -> StepReport {
        StepReport {
            step,
            target_rate: Some(100.0),
            start_s: 0.0,
            duration_s: 1.0,
            planned: Some(100),
            sent: 100,
            requests: 100,
            attempts: 100,
            retries: 0,
            missed: 0,
            behind: 0,
            responses: 99,
            achieved_rate: 100.0,
            throughput: 99.0,
            status: BTreeMap::from([("200".to_string(), 98), ("503".to_string(), 1)]),
            status_class: BTreeMap::from([("2xx".to_string(), 98), ("5xx".to_string(), 1)]),
            errors: BTreeMap::from([("timeout".to_string(), 1)]),
            error_rate: 0.02,
            latency_ms: LatencySummary { p50: 1.0, p99: 5.0, ..Default::default() },
            send_lag_ms: LatencySummary::default(),
            goodput: 98.0,
            classes: Vec::new(),
        }
    }

    fn class(class: &str, weight: u32, ok: u64, unavailable: u64) -> ClassReport {
        ClassReport {
            class: class.into(),
            weight,
            share: f64::from(weight) / 100.0,
            offered_rate: Some(f64::from(weight)),
            sent: ok + unavailable,
            ok,
            rejected: Rejected { unavailable, ..Default::default() },
            other_status: 0,
            errors: 0,
            timeouts: 0,
            goodput: ok as f64,
            served_fraction: ok as f64 / (ok + unavailable) as f64,
            latency_ms: LatencySummary { p50: 2.0, p99: 4.0, max: 7.5, ..Default::default() },
        }
    }

    fn mixed_report() -> Report {
        let mut report = sample_report();
        report.mix_header = Some("x-spillway-criticality".into());
        let classes = vec![class("SHEDDABLE", 50, 20, 30), class("CRITICAL_PLUS", 50, 50, 0)];
        for s in report.steps.iter_mut().chain(std::iter::once(&mut report.overall)) {
            s.classes = classes.clone();
        }
        report
    }

    pub(crate) fn sample_report() -> Report {
        Report {
            schema: REPORT_SCHEMA.to_string(),
            target: "http://127.0.0.1:1/".into(),
            mode: Mode::Open,
            http_version: "HTTP/1.1".into(),
            connections: 4,
            duration_s: 2.0,
            elapsed_s: 2.01,
            steps: vec![step(Some(0)), step(Some(1))],
            overall: step(None),
            timeline: vec![TimelinePoint {
                t_s: 0.25,
                target_rate: Some(100.0),
                sent_rate: 100.0,
                rates: BTreeMap::from([("2xx".to_string(), 100.0)]),
                p50_ms: Some(1.0),
                p90_ms: None,
                p99_ms: Some(2.0),
            }],
            mix_header: None,
            client_retries: None,
        }
    }

    #[test]
    fn json_has_the_documented_fields_and_round_trips() {
        let report = sample_report();
        let json = report.to_json().unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["schema"], REPORT_SCHEMA);
        assert_eq!(value["mode"], "open");
        for key in [
            "target",
            "http_version",
            "connections",
            "duration_s",
            "elapsed_s",
            "steps",
            "overall",
            "timeline",
        ] {
            assert!(value.get(key).is_some(), "missing {key}");
        }
        let overall = &value["overall"];
        for key in [
            "step",
            "target_rate",
            "sent",
            "missed",
            "behind",
            "responses",
            "achieved_rate",
            "throughput",
            "status",
            "status_class",
            "errors",
            "error_rate",
            "latency_ms",
            "requests",
            "attempts",
            "retries",
        ] {
            assert!(overall.get(key).is_some(), "overall is missing {key}");
        }
        assert_eq!(overall["status"]["503"], 1);
        assert_eq!(overall["latency_ms"]["p99"], 5.0);
        assert_eq!(value["steps"][1]["step"], 1);
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
    }

    #[test]
    fn reports_without_a_mix_have_no_classes_in_json_and_old_json_still_reads() {
        let json = sample_report().to_json().unwrap();
        assert!(!json.contains("\"classes\"") && !json.contains("mix_header"));
        assert!(!json.contains("client_retries"));
        // A report written before `goodput`, `classes` and the retry counts existed still
        // parses.
        let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let added = ["goodput", "requests", "attempts", "retries"];
        for s in value["steps"].as_array_mut().unwrap() {
            added.iter().for_each(|k| drop(s.as_object_mut().unwrap().remove(*k)));
        }
        added.iter().for_each(|k| drop(value["overall"].as_object_mut().unwrap().remove(*k)));
        let back: Report = serde_json::from_value(value).unwrap();
        assert_eq!(back.overall.goodput, 0.0);
        assert_eq!((back.overall.requests, back.overall.attempts), (0, 0));
        assert!(back.overall.classes.is_empty());
    }

    #[test]
    fn class_results_are_in_the_json_per_step_and_overall() {
        let report = mixed_report();
        let json = report.to_json().unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["schema"], REPORT_SCHEMA);
        assert_eq!(value["mix_header"], "x-spillway-criticality");
        let shed = &value["steps"][1]["classes"][0];
        assert_eq!(shed["class"], "SHEDDABLE");
        assert_eq!(shed["weight"], 50);
        assert_eq!(shed["sent"], 50);
        assert_eq!(shed["ok"], 20);
        assert_eq!(shed["rejected"]["503"], 30);
        assert_eq!(shed["rejected"]["429"], 0);
        assert_eq!(shed["rejected"]["504"], 0);
        for key in ["other_status", "errors", "timeouts", "goodput", "served_fraction"] {
            assert!(shed.get(key).is_some(), "class is missing {key}");
        }
        assert_eq!(shed["latency_ms"]["p99"], 4.0);
        assert_eq!(value["overall"]["classes"][1]["class"], "CRITICAL_PLUS");
        assert_eq!(value["overall"]["goodput"], 98.0);
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, report);
        assert_eq!(back.overall.classes[0].rejected.total(), 30);
    }

    #[test]
    fn summary_table_has_a_class_block_with_a_mix() {
        let table = mixed_report().summary_table();
        assert!(table.contains("per x-spillway-criticality"), "{table}");
        let rows: Vec<&str> = table
            .lines()
            .filter(|l| l.contains("SHEDDABLE") || l.contains("CRITICAL_PLUS"))
            .collect();
        // Two steps and the total, two classes each.
        assert_eq!(rows.len(), 6, "{table}");
        assert!(rows[4].trim_start().starts_with("all"));
        assert!(rows[0].contains("40.0%"), "{}", rows[0]);
        assert!(!sample_report().summary_table().contains("per "));
    }

    #[test]
    fn summary_table_has_a_row_per_step_and_a_total() {
        let table = sample_report().summary_table();
        let rows: Vec<&str> = table.lines().collect();
        assert!(rows[2].trim_start().starts_with('1'));
        assert!(rows[3].trim_start().starts_with('2'));
        assert!(rows[4].trim_start().starts_with("all"));
        assert!(table.contains("503: 1"));
        assert!(table.contains("timeout: 1"));
    }

    #[test]
    fn client_retries_show_requests_and_attempts_in_json_and_summary() {
        let mut report = sample_report();
        report.client_retries = Some(ClientRetrySettings { retries: 3, backoff_ms: 20.0 });
        report.overall.attempts = 250;
        report.overall.retries = 150;
        let value: serde_json::Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        assert_eq!(value["client_retries"]["retries"], 3);
        assert_eq!(value["client_retries"]["backoff_ms"], 20.0);
        assert_eq!(
            (&value["overall"]["requests"], &value["overall"]["attempts"]),
            (&100.into(), &250.into())
        );
        let table = report.summary_table();
        let note = table.lines().find(|l| l.contains("client retries")).unwrap_or_default();
        assert!(note.contains("up to 3, backoff 20ms"), "{table}");
        assert!(
            note.contains("100 requests, 250 attempts (2.50 per request, 150 retries)"),
            "{note}"
        );
        assert!(!sample_report().summary_table().contains("client retries"));
    }

    #[test]
    fn successes_exclude_4xx_and_5xx() {
        assert_eq!(step(None).successes(), 98);
        assert_eq!(step(None).transport_errors(), 1);
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(429), "4xx");
    }
}
