//! `spillway capacity`: steps the offered rate up until a latency/error SLO breaks, then
//! reports the maximum sustainable rate, the knee, the latency there, and the limits to
//! configure (token-bucket rate with headroom; concurrency from Little's law).
//!
//! The search, the knee and the proposal are pure functions of step results, tested without
//! time; [`run_capacity`] drives the engine one constant-rate step at a time.

#[cfg(feature = "tools")]
use crate::cli::{self, CliError, ConnectionOptions, OutputOptions, RequestOptions};
use crate::report::StepReport;
use crate::units::{format_micros, parse_duration};
#[cfg(feature = "tools")]
use crate::{engine::Plan, schedule::Schedule, target::Target};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fmt::Write as _;
use std::str::FromStr;
#[cfg(feature = "tools")]
use std::time::Duration;

/// Value of [`CapacityResult::schema`].
pub const CAPACITY_SCHEMA: &str = "spillway.capacity.report/v1";

/// Share of the offered rate a step must actually achieve to count as sustained.
pub const MIN_ACHIEVED_SHARE: f64 = 0.95;

/// The objective a rate must meet: a latency percentile bound and an error-rate bound.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Slo {
    /// Percentile (50, 90, 99 or 99.9).
    pub percentile: f64,
    /// Bound on that percentile, ms.
    pub max_latency_ms: f64,
    /// Bound on the share of failed requests (transport error or status ≥ 400), 0..=1.
    pub max_error_rate: f64,
}

/// An SLO that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid SLO `{0}`: expected p50|p90|p99|p99.9=LATENCY, e.g. p99=200ms")]
pub struct SloError(pub String);

impl FromStr for Slo {
    type Err = SloError;

    /// Parses `p99=200ms` (the error bound defaults to 1 %).
    fn from_str(s: &str) -> Result<Slo, SloError> {
        let bad = || SloError(s.to_string());
        let (p, latency) = s.split_once('=').ok_or_else(bad)?;
        let percentile: f64 = p.trim().trim_start_matches(['p', 'P']).parse().map_err(|_| bad())?;
        if ![50.0, 90.0, 99.0, 99.9].contains(&percentile) {
            return Err(bad());
        }
        let latency = parse_duration(latency).map_err(|_| bad())?;
        if latency.is_zero() {
            return Err(bad());
        }
        Ok(Slo { percentile, max_latency_ms: latency.as_secs_f64() * 1000.0, max_error_rate: 0.01 })
    }
}

impl Slo {
    /// `p99` etc.
    pub fn percentile_label(&self) -> String {
        format!("p{}", self.percentile)
    }

    /// The latency this SLO bounds, from a step's report.
    pub fn latency_of(&self, step: &StepReport) -> f64 {
        step.latency_ms.percentile(self.percentile).unwrap_or(step.latency_ms.p99)
    }
}

impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ≤ {}, errors ≤ {}%",
            self.percentile_label(),
            format_micros(self.max_latency_ms * 1000.0),
            self.max_error_rate * 100.0
        )
    }
}

/// Parses an error-rate bound: `1%` or `0.01`.
pub fn parse_ratio(s: &str) -> Result<f64, String> {
    let value = match s.trim().strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => s.trim().parse::<f64>(),
    }
    .map_err(|_| format!("invalid ratio `{s}`: expected e.g. 1% or 0.01"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("ratio `{s}` must be between 0% and 100%"))
    }
}

/// One measured rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CapacityStep {
    /// Offered (intended) rate, rps.
    pub offered: f64,
    /// Rate actually sent, rps.
    pub achieved: f64,
    /// Successful responses (status < 400) per second.
    pub goodput: f64,
    /// Latency at the SLO's percentile, ms.
    pub latency_ms: f64,
    /// Mean latency, ms.
    pub mean_latency_ms: f64,
    /// Share of failed requests.
    pub error_rate: f64,
    /// Whether this rate met the SLO (latency, errors, and at least 95 % of it achieved).
    pub meets_slo: bool,
}

impl CapacityStep {
    /// Judges a step's results against `slo`.
    pub fn from_report(offered: f64, report: &StepReport, slo: &Slo) -> CapacityStep {
        let latency_ms = slo.latency_of(report);
        let achieved = report.achieved_rate;
        let goodput = report.successes() as f64 / report.duration_s.max(1e-9);
        let meets_slo = latency_ms <= slo.max_latency_ms
            && report.error_rate <= slo.max_error_rate
            && achieved >= offered * MIN_ACHIEVED_SHARE
            && report.responses > 0;
        CapacityStep {
            offered,
            achieved,
            goodput,
            latency_ms,
            mean_latency_ms: report.latency_ms.mean,
            error_rate: report.error_rate,
            meets_slo,
        }
    }
}

/// How the search moves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchConfig {
    /// First rate tried.
    pub start: f64,
    /// Never offer more than this.
    pub max_rate: f64,
    /// Factor between rates while the SLO holds (e.g. 2.0 doubles).
    pub growth: f64,
    /// Stop refining once the gap between the best passing and the worst... lowest failing
    /// rate is below this share of the passing one.
    pub resolution: f64,
    /// Most steps in total.
    pub max_steps: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            start: 100.0,
            max_rate: 100_000.0,
            growth: 2.0,
            resolution: 0.05,
            max_steps: 12,
        }
    }
}

/// The rate search: grows geometrically until the SLO breaks, then bisects between the highest
/// passing and the lowest failing rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    config: SearchConfig,
    good: Option<f64>,
    bad: Option<f64>,
    steps: usize,
}

impl Search {
    /// A search that has measured nothing yet.
    pub fn new(config: SearchConfig) -> Search {
        Search { config, good: None, bad: None, steps: 0 }
    }

    /// The next rate to measure, or `None` when the search is done.
    pub fn next_rate(&self) -> Option<f64> {
        if self.steps >= self.config.max_steps {
            return None;
        }
        let c = &self.config;
        match (self.good, self.bad) {
            (None, None) => Some(c.start.min(c.max_rate)),
            (Some(good), None) => (good < c.max_rate).then(|| (good * c.growth).min(c.max_rate)),
            (good, Some(bad)) => {
                let low = good.unwrap_or(0.0);
                let gap = (bad - low) / bad;
                (gap > c.resolution && (bad - low) >= 1.0).then_some((low + bad) / 2.0)
            }
        }
    }

    /// Records the result of a step.
    pub fn observe(&mut self, step: &CapacityStep) {
        self.steps += 1;
        if step.meets_slo {
            self.good = Some(self.good.map_or(step.offered, |g| g.max(step.offered)));
        } else {
            self.bad = Some(self.bad.map_or(step.offered, |b| b.min(step.offered)));
        }
    }

    /// The highest rate that met the SLO.
    pub fn max_sustainable(&self) -> Option<f64> {
        self.good
    }
}

/// The knee: the highest rate before latency bends up (exceeds twice the latency at the lowest
/// rate and by at least a tenth of the SLO budget) or goodput stops following the offered rate.
/// `None` when no step was measured.
pub fn find_knee(steps: &[CapacityStep], slo: &Slo) -> Option<f64> {
    let mut sorted: Vec<&CapacityStep> = steps.iter().collect();
    sorted.sort_by(|a, b| a.offered.total_cmp(&b.offered));
    let baseline = sorted.first()?.latency_ms;
    let threshold = (2.0 * baseline).max(baseline + 0.1 * slo.max_latency_ms);
    let mut knee = None;
    for s in sorted {
        let bent = s.latency_ms > threshold
            || s.goodput < s.offered * MIN_ACHIEVED_SHARE
            || s.error_rate > slo.max_error_rate;
        if bent {
            break;
        }
        knee = Some(s.offered);
    }
    knee
}

/// Limits to configure for a service whose maximum sustainable rate is known.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LimitProposal {
    /// Token-bucket rate: the maximum sustainable rate less the headroom, rps.
    pub token_bucket_rate: f64,
    /// Token-bucket burst: 100 ms worth of that rate (at least 1).
    pub token_bucket_burst: u64,
    /// Concurrency limit from Little's law at the maximum rate and the SLO-percentile latency
    /// (`inflight = rate × latency`), rounded up.
    pub concurrency_limit: u64,
    /// Mean requests in flight at the maximum rate (`rate × mean latency`).
    pub mean_inflight: f64,
    /// Headroom applied, 0..1.
    pub headroom: f64,
}

/// Proposes limits from the maximum sustainable `rate` (rps), the latencies there (ms) and a
/// `headroom` share kept free (0.2 = configure 80 % of the measured capacity).
pub fn propose_limits(
    rate: f64,
    latency_ms: f64,
    mean_latency_ms: f64,
    headroom: f64,
) -> LimitProposal {
    let headroom = headroom.clamp(0.0, 0.95);
    let token_bucket_rate = rate * (1.0 - headroom);
    LimitProposal {
        token_bucket_rate,
        token_bucket_burst: ((token_bucket_rate * 0.1).ceil() as u64).max(1),
        concurrency_limit: ((rate * latency_ms / 1000.0).ceil() as u64).max(1),
        mean_inflight: rate * mean_latency_ms / 1000.0,
        headroom,
    }
}

/// Everything `capacity` found, as written by `--json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CapacityResult {
    /// Always [`CAPACITY_SCHEMA`].
    pub schema: String,
    /// The URL measured.
    pub target: String,
    /// The objective.
    pub slo: Slo,
    /// Steps in the order they ran.
    pub steps: Vec<CapacityStep>,
    /// Highest rate that met the SLO.
    pub max_rate: Option<f64>,
    /// Where latency starts to bend.
    pub knee_rate: Option<f64>,
    /// SLO-percentile latency at the maximum rate, ms.
    pub latency_at_max_ms: Option<f64>,
    /// Limits to configure, when a rate met the SLO.
    pub proposal: Option<LimitProposal>,
    /// Full results of each step.
    pub step_reports: Vec<StepReport>,
}

impl CapacityResult {
    /// Puts together the result from the measured steps.
    pub fn from_steps(
        target: &str,
        slo: Slo,
        steps: Vec<CapacityStep>,
        reports: Vec<StepReport>,
        headroom: f64,
    ) -> CapacityResult {
        let best = steps
            .iter()
            .filter(|s| s.meets_slo)
            .max_by(|a, b| a.offered.total_cmp(&b.offered))
            .copied();
        CapacityResult {
            schema: CAPACITY_SCHEMA.to_string(),
            target: target.to_string(),
            slo,
            knee_rate: find_knee(&steps, &slo),
            max_rate: best.map(|b| b.offered),
            latency_at_max_ms: best.map(|b| b.latency_ms),
            proposal: best
                .map(|b| propose_limits(b.offered, b.latency_ms, b.mean_latency_ms, headroom)),
            steps,
            step_reports: reports,
        }
    }

    /// The text printed at the end.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "capacity of {} (SLO: {})", self.target, self.slo);
        let label = self.slo.percentile_label();
        let _ = writeln!(
            out,
            "{:>10} {:>10} {:>10} {:>10} {:>8}  verdict",
            "offered", "achieved", "goodput", label, "errors"
        );
        for s in &self.steps {
            let _ = writeln!(
                out,
                "{:>10.0} {:>10.1} {:>10.1} {:>10} {:>7.2}%  {}",
                s.offered,
                s.achieved,
                s.goodput,
                format_micros(s.latency_ms * 1000.0),
                s.error_rate * 100.0,
                if s.meets_slo { "ok" } else { "breaks SLO" }
            );
        }
        match (self.max_rate, self.proposal) {
            (Some(rate), Some(p)) => {
                let _ = writeln!(
                    out,
                    "maximum sustainable rate: {rate:.0} rps ({label} {})",
                    format_micros(self.latency_at_max_ms.unwrap_or(0.0) * 1000.0)
                );
                if let Some(knee) = self.knee_rate {
                    let _ = writeln!(out, "knee (latency starts rising): {knee:.0} rps");
                }
                let _ = writeln!(out, "proposed limits ({:.0}% headroom):", p.headroom * 100.0);
                let _ = writeln!(
                    out,
                    "  token bucket: rate {:.0}/s, burst {}",
                    p.token_bucket_rate, p.token_bucket_burst
                );
                let _ = writeln!(
                    out,
                    "  concurrency limit: {} (Little's law: {rate:.0} rps × {} = {:.1} in flight; mean {:.1})",
                    p.concurrency_limit,
                    format_micros(self.latency_at_max_ms.unwrap_or(0.0) * 1000.0),
                    rate * self.latency_at_max_ms.unwrap_or(0.0) / 1000.0,
                    p.mean_inflight
                );
            }
            _ => {
                let _ = writeln!(out, "no rate met the SLO: lower --start or relax the SLO");
            }
        }
        out
    }
}

/// Options of `spillway capacity`.
#[cfg(feature = "tools")]
#[derive(Debug, Clone)]
pub struct CapacityOptions {
    /// Target URL.
    pub url: String,
    /// The objective.
    pub slo: Slo,
    /// Search settings.
    pub search: SearchConfig,
    /// Length of each step.
    pub step_duration: Duration,
    /// Share of capacity kept free in the proposal.
    pub headroom: f64,
    /// The request.
    pub request: RequestOptions,
    /// Connections.
    pub connection: ConnectionOptions,
    /// Outputs (the plot shows the search, the JSON is a [`CapacityResult`]).
    pub output: OutputOptions,
}

/// Connections of a capacity run: enough that the client is not what limits the rate.
pub const DEFAULT_CAPACITY_CONNECTIONS: usize = 64;

/// `spillway capacity`: runs the search, prints the summary, writes JSON and plot.
#[cfg(feature = "tools")]
pub fn run_capacity(options: CapacityOptions) -> Result<CapacityResult, CliError> {
    let target =
        Target::resolve(&options.url, options.connection.allow_remote).map_err(CliError::msg)?;
    let request = cli::request_spec(&target, &options.request)?;
    cli::check_outputs(&options.output)?;
    let runtime = cli::runtime()?;
    let mut search = Search::new(options.search);
    let (mut steps, mut reports) = (Vec::new(), Vec::new());
    while let Some(rate) = search.next_rate() {
        let plan =
            Plan::Open(Schedule::constant(rate, options.step_duration).map_err(CliError::msg)?);
        let config = cli::engine_config(
            &options.url,
            target.clone(),
            vec![request.clone()],
            plan,
            &options.connection,
            DEFAULT_CAPACITY_CONNECTIONS,
        );
        let label = format!("{rate:.0} rps");
        let report =
            runtime.block_on(cli::run_with_progress(config, &label, options.output.quiet))?;
        let step = CapacityStep::from_report(rate, &report.overall, &options.slo);
        if !options.output.quiet {
            eprintln!(
                "{rate:>8.0} rps: {} {}, errors {:.2}% -> {}",
                options.slo.percentile_label(),
                format_micros(step.latency_ms * 1000.0),
                step.error_rate * 100.0,
                if step.meets_slo { "ok" } else { "breaks SLO" }
            );
        }
        search.observe(&step);
        steps.push(step);
        reports.push(report.overall);
        // Let queues in the target drain before the next rate.
        std::thread::sleep(Duration::from_millis(200));
    }
    let result =
        CapacityResult::from_steps(&options.url, options.slo, steps, reports, options.headroom);
    print!("{}", result.summary());
    if let Some(path) = &options.output.json {
        let json = serde_json::to_string_pretty(&result).map_err(CliError::msg)?;
        cli::write_file(path, json.as_bytes())?;
    }
    if let Some(path) = &options.output.plot {
        crate::plot::plot_capacity(&result, path).map_err(CliError::msg)?;
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slo() -> Slo {
        "p99=200ms".parse().unwrap()
    }

    fn step(offered: f64, latency_ms: f64, ok: bool) -> CapacityStep {
        CapacityStep {
            offered,
            achieved: offered,
            goodput: if ok { offered } else { offered * 0.5 },
            latency_ms,
            mean_latency_ms: latency_ms / 2.0,
            error_rate: 0.0,
            meets_slo: ok,
        }
    }

    #[test]
    fn slo_parses_percentile_and_latency() {
        let s: Slo = "p99=200ms".parse().unwrap();
        assert_eq!((s.percentile, s.max_latency_ms, s.max_error_rate), (99.0, 200.0, 0.01));
        assert_eq!("p99.9=1s".parse::<Slo>().unwrap().percentile, 99.9);
        for bad in ["p98=200ms", "p99", "p99=0ms", "x=1s"] {
            assert!(bad.parse::<Slo>().is_err(), "{bad}");
        }
        assert_eq!(parse_ratio("1%"), Ok(0.01));
        assert_eq!(parse_ratio("0.05"), Ok(0.05));
        assert!(parse_ratio("150%").is_err());
    }

    #[test]
    fn search_doubles_until_the_slo_breaks_then_bisects() {
        // A target that sustains 1000 rps.
        let mut search = Search::new(SearchConfig { start: 100.0, ..Default::default() });
        let mut tried = Vec::new();
        while let Some(rate) = search.next_rate() {
            tried.push(rate);
            search.observe(&step(rate, if rate <= 1000.0 { 10.0 } else { 500.0 }, rate <= 1000.0));
        }
        assert_eq!(&tried[..5], &[100.0, 200.0, 400.0, 800.0, 1600.0]);
        assert_eq!(tried[5], 1200.0);
        let best = search.max_sustainable().unwrap();
        assert!((950.0..=1000.0).contains(&best), "best {best}, tried {tried:?}");
        assert!(tried.len() <= SearchConfig::default().max_steps);
    }

    #[test]
    fn search_stops_at_the_maximum_rate() {
        let mut search =
            Search::new(SearchConfig { start: 100.0, max_rate: 300.0, ..Default::default() });
        let mut tried = Vec::new();
        while let Some(rate) = search.next_rate() {
            tried.push(rate);
            search.observe(&step(rate, 1.0, true));
        }
        assert_eq!(tried, vec![100.0, 200.0, 300.0]);
    }

    #[test]
    fn search_goes_below_the_start_when_the_first_rate_fails() {
        let mut search = Search::new(SearchConfig { start: 100.0, ..Default::default() });
        search.observe(&step(100.0, 900.0, false));
        assert_eq!(search.next_rate(), Some(50.0));
    }

    #[test]
    fn knee_is_where_latency_bends() {
        let steps = [
            step(100.0, 10.0, true),
            step(200.0, 11.0, true),
            step(400.0, 12.0, true),
            step(800.0, 45.0, true), // > 2 × 10 ms and > 10 + 20 ms: bent
            step(1600.0, 500.0, false),
        ];
        assert_eq!(find_knee(&steps, &slo()), Some(400.0));
        assert_eq!(find_knee(&[], &slo()), None);
    }

    #[test]
    fn tiny_latency_changes_do_not_make_a_knee() {
        // 0.2 ms -> 0.6 ms triples latency but is nothing against a 200 ms SLO.
        let steps = [step(100.0, 0.2, true), step(200.0, 0.6, true), step(400.0, 300.0, false)];
        assert_eq!(find_knee(&steps, &slo()), Some(200.0));
    }

    #[test]
    fn littles_law_sizes_the_concurrency_limit() {
        // 1000 rps at p99 50 ms: 50 in flight; token bucket at 80 %.
        let p = propose_limits(1000.0, 50.0, 20.0, 0.2);
        assert_eq!(p.concurrency_limit, 50);
        assert!((p.mean_inflight - 20.0).abs() < 1e-9);
        assert!((p.token_bucket_rate - 800.0).abs() < 1e-9);
        assert_eq!(p.token_bucket_burst, 80);
        assert_eq!(propose_limits(1.0, 0.1, 0.1, 0.2).concurrency_limit, 1);
    }

    #[test]
    fn result_reports_the_best_passing_rate_and_its_limits() {
        let steps =
            vec![step(100.0, 10.0, true), step(200.0, 40.0, true), step(400.0, 900.0, false)];
        let r = CapacityResult::from_steps("http://127.0.0.1:1/", slo(), steps, vec![], 0.2);
        assert_eq!(r.max_rate, Some(200.0));
        assert_eq!(r.latency_at_max_ms, Some(40.0));
        assert_eq!(r.proposal.unwrap().concurrency_limit, 8);
        let text = r.summary();
        assert!(text.contains("maximum sustainable rate: 200 rps"), "{text}");
        assert!(text.contains("concurrency limit: 8"), "{text}");
        let none =
            CapacityResult::from_steps("x", slo(), vec![step(100.0, 900.0, false)], vec![], 0.2);
        assert!(none.summary().contains("no rate met the SLO"));
    }
}
