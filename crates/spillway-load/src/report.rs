//! What a run produces: per-step and overall results, a timeline for plots, the versioned JSON
//! schema (`--json`) and the summary table printed at the end.
//!
//! One [`Report`] type serves `load`, `replay` and each step of `capacity`, so the JSON and the
//! plots look the same whichever tool made them.

use crate::histogram::LatencySummary;
use crate::units::format_micros;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Value of [`Report::schema`]; bumped on any incompatible change of the JSON.
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
    /// Requests sent.
    pub sent: u64,
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
    /// Share of attempts that failed (transport error or status ≥ 400), 0..=1.
    pub error_rate: f64,
    /// Latency of the responses, milliseconds.
    pub latency_ms: LatencySummary,
    /// How late requests left compared with their intended send time, milliseconds (all zero
    /// in closed loop): the generator's own precision.
    #[serde(default)]
    pub send_lag_ms: LatencySummary,
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
        }
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
    fn successes_exclude_4xx_and_5xx() {
        assert_eq!(step(None).successes(), 98);
        assert_eq!(step(None).transport_errors(), 1);
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(429), "4xx");
    }
}
