//! Traffic replay: recorded requests sent again with their recorded inter-arrival times,
//! scaled by a speed factor, once or in a loop, and reported like `load`.
//!
//! The schedule part is pure ([`ReplaySchedule`]); sending reuses the load engine, so replay
//! has the same connections, latency measurement, JSON and plots.

#[cfg(feature = "tools")]
use crate::cli::{self, CliError, ConnectionOptions, OutputOptions};
use crate::engine::RequestSpec;
#[cfg(feature = "tools")]
use crate::{engine::Plan, report::Report, target::Target};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{HeaderMap, Method};
#[cfg(feature = "tools")]
use spillway_record::{read_traffic, with_rotated};
use spillway_record::{TrafficEntry, REDACTED};
#[cfg(feature = "tools")]
use std::path::PathBuf;
use std::time::Duration;

/// Length of a looped replay when no `--duration` is given.
pub const DEFAULT_LOOP_DURATION: Duration = Duration::from_secs(60);

/// Headers never replayed: connection-level ones (hop-by-hop, framing) and `host`, which the
/// target's own authority replaces.
const NOT_REPLAYED: [&str; 9] = [
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "upgrade",
    "content-length",
    "trailer",
];

/// A replay schedule that cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplayScheduleError {
    /// No recorded requests.
    #[error("the recording holds no requests")]
    Empty,
    /// Speed zero, negative or not a number.
    #[error("speed must be a positive number, got {0}")]
    BadSpeed(f64),
    /// `--loop` without a time bound.
    #[error("a looped replay needs a duration")]
    UnboundedLoop,
}

/// When each replayed request is sent.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplaySchedule {
    /// Scaled offsets of one pass, from the first request (first is zero), non-decreasing.
    offsets: Vec<Duration>,
    /// Length of one pass when looping: last offset plus the mean gap.
    period: Duration,
    looped: bool,
    /// Time bound of the run (a pass that runs past it is cut).
    limit: Duration,
    max_requests: Option<u64>,
}

impl ReplaySchedule {
    /// Builds the schedule from recorded offsets (from any origin, in recording order), sped up
    /// by `speed` (2.0 = twice as fast), once or `looped`, bounded by `limit` and `max_requests`.
    pub fn new(
        recorded: &[Duration],
        speed: f64,
        looped: bool,
        limit: Option<Duration>,
        max_requests: Option<u64>,
    ) -> Result<ReplaySchedule, ReplayScheduleError> {
        let first = *recorded.first().ok_or(ReplayScheduleError::Empty)?;
        if !(speed.is_finite() && speed > 0.0) {
            return Err(ReplayScheduleError::BadSpeed(speed));
        }
        let mut offsets = Vec::with_capacity(recorded.len());
        let mut previous = Duration::ZERO;
        for &at in recorded {
            // Out-of-order entries (threads racing to the recorder) go right after the previous.
            let scaled = Duration::from_secs_f64(at.saturating_sub(first).as_secs_f64() / speed)
                .max(previous);
            offsets.push(scaled);
            previous = scaled;
        }
        let last = previous;
        let mean_gap = if offsets.len() > 1 {
            last / (offsets.len() as u32 - 1).max(1)
        } else {
            Duration::ZERO
        };
        let period = last + mean_gap.max(Duration::from_millis(1));
        let limit = match (looped, limit) {
            (true, None) => return Err(ReplayScheduleError::UnboundedLoop),
            (_, Some(limit)) => limit,
            (false, None) => period,
        };
        Ok(ReplaySchedule { offsets, period, looped, limit, max_requests })
    }

    /// Offset of request `i` from the start, or `None` past the end.
    pub fn arrival(&self, i: u64) -> Option<Duration> {
        if self.max_requests.is_some_and(|max| i >= max) {
            return None;
        }
        let n = self.offsets.len() as u64;
        let pass = i / n;
        if pass > 0 && !self.looped {
            return None;
        }
        let offset =
            self.period.checked_mul(u32::try_from(pass).ok()?)? + self.offsets[(i % n) as usize];
        (offset < self.limit || (!self.looped && offset == Duration::ZERO)).then_some(offset)
    }

    /// Length of the run.
    pub fn duration(&self) -> Duration {
        if self.looped {
            self.limit
        } else {
            self.limit.min(self.period)
        }
    }

    /// Requests the run will send.
    pub fn len(&self) -> u64 {
        let n = self.offsets.len() as u64;
        let in_pass = |limit: Duration| self.offsets.partition_point(|&o| o < limit) as u64;
        let count = if self.looped {
            let full = (self.limit.as_nanos() / self.period.as_nanos().max(1)) as u64;
            let rest = self.limit.saturating_sub(self.period * full.min(u32::MAX as u64) as u32);
            full * n + in_pass(rest)
        } else {
            in_pass(self.limit).max(1)
        };
        self.max_requests.map_or(count, |max| count.min(max))
    }

    /// Whether the run sends nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Turns a recorded entry into a request to send: same method, path, query, headers (minus
/// redacted and connection-level ones) and recorded body.
pub fn to_request(entry: &TrafficEntry) -> Result<RequestSpec, String> {
    let method = Method::from_bytes(entry.method.as_bytes())
        .map_err(|_| format!("bad method `{}`", entry.method))?;
    let target = match &entry.query {
        Some(q) if !q.is_empty() => format!("{}?{q}", entry.path),
        _ => entry.path.clone(),
    };
    let path_and_query: PathAndQuery =
        target.parse().map_err(|_| format!("bad path `{target}`"))?;
    let mut headers = HeaderMap::new();
    for (name, value) in &entry.headers {
        if value == REDACTED || NOT_REPLAYED.contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value))
        else {
            continue;
        };
        headers.append(name, value);
    }
    Ok(RequestSpec { method, path_and_query, headers, body: Bytes::from(entry.body_bytes()?) })
}

/// Options of `spillway replay`.
#[cfg(feature = "tools")]
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Recording files, played in the order given.
    pub files: Vec<PathBuf>,
    /// Also play the rotated files of each (`file.N` .. `file.1` before `file`).
    pub with_rotated: bool,
    /// Target URL (only its authority is used: paths come from the recording).
    pub url: String,
    /// Speed factor (2.0 = twice as fast).
    pub speed: f64,
    /// Play again and again until the duration is up.
    pub looped: bool,
    /// Time bound (default: the recording's length; [`DEFAULT_LOOP_DURATION`] when looping).
    pub duration: Option<Duration>,
    /// Count bound.
    pub requests: Option<u64>,
    /// Connections.
    pub connection: ConnectionOptions,
    /// Outputs.
    pub output: OutputOptions,
}

/// Connections of a replay.
pub const DEFAULT_REPLAY_CONNECTIONS: usize = 32;

/// Reads the recordings named in `options`, in order.
#[cfg(feature = "tools")]
pub fn read_recordings(options: &ReplayOptions) -> Result<Vec<TrafficEntry>, CliError> {
    let mut entries = Vec::new();
    for file in &options.files {
        let files = if options.with_rotated { with_rotated(file) } else { vec![file.clone()] };
        for f in files {
            entries.extend(read_traffic(&f).map_err(CliError::msg)?);
        }
    }
    Ok(entries)
}

/// `spillway replay`: replays the recordings against the target, prints the summary, writes
/// JSON and plot.
#[cfg(feature = "tools")]
pub fn run_replay(options: ReplayOptions) -> Result<Report, CliError> {
    let target =
        Target::resolve(&options.url, options.connection.allow_remote).map_err(CliError::msg)?;
    cli::check_outputs(&options.output)?;
    let entries = read_recordings(&options)?;
    let requests = entries
        .iter()
        .map(|e| {
            to_request(e).map_err(|why| CliError(format!("recorded request {}: {why}", e.seq)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let offsets: Vec<Duration> =
        entries.iter().map(|e| Duration::from_micros(e.offset_us)).collect();
    let limit = match (options.looped, options.duration) {
        (_, Some(d)) => Some(d),
        (true, None) => Some(DEFAULT_LOOP_DURATION),
        (false, None) => None,
    };
    let schedule =
        ReplaySchedule::new(&offsets, options.speed, options.looped, limit, options.requests)
            .map_err(CliError::msg)?;
    let config = cli::engine_config(
        &options.url,
        target,
        requests,
        Plan::Replay(schedule),
        &options.connection,
        DEFAULT_REPLAY_CONNECTIONS,
    );
    let report =
        cli::runtime()?.block_on(cli::run_with_progress(config, "replay", options.output.quiet))?;
    print!("{}", report.summary_table());
    cli::write_outputs(&report, &options.output)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn replay_keeps_gaps_scaled_by_speed() {
        let s =
            ReplaySchedule::new(&[ms(1000), ms(1100), ms(1400)], 2.0, false, None, None).unwrap();
        assert_eq!(s.arrival(0), Some(ms(0)));
        assert_eq!(s.arrival(1), Some(ms(50)));
        assert_eq!(s.arrival(2), Some(ms(200)));
        assert_eq!(s.arrival(3), None);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn looped_replay_repeats_until_the_limit() {
        // Offsets 0, 100, 200 ms: period 300 ms; 1 s holds 3 full passes and one more request.
        let s = ReplaySchedule::new(&[ms(0), ms(100), ms(200)], 1.0, true, Some(ms(1000)), None)
            .unwrap();
        assert_eq!(s.arrival(3), Some(ms(300)));
        assert_eq!(s.arrival(5), Some(ms(500)));
        assert_eq!(s.arrival(9), Some(ms(900)));
        assert_eq!(s.arrival(10), None);
        assert_eq!(s.len(), 10);
        assert_eq!(s.duration(), ms(1000));
    }

    #[test]
    fn request_limit_and_time_limit_both_bound_a_replay() {
        let s = ReplaySchedule::new(&[ms(0), ms(100), ms(200)], 1.0, true, Some(ms(1000)), Some(4))
            .unwrap();
        assert_eq!(s.len(), 4);
        assert_eq!(s.arrival(4), None);
        let cut = ReplaySchedule::new(&[ms(0), ms(100), ms(200)], 1.0, false, Some(ms(150)), None)
            .unwrap();
        assert_eq!(cut.len(), 2);
        assert_eq!(cut.arrival(2), None);
    }

    #[test]
    fn out_of_order_offsets_never_go_backwards() {
        let s = ReplaySchedule::new(&[ms(0), ms(300), ms(200)], 1.0, false, None, None).unwrap();
        assert_eq!(s.arrival(2), Some(ms(300)));
    }

    #[test]
    fn redacted_and_connection_headers_are_not_replayed() {
        let entry = TrafficEntry {
            v: 1,
            seq: 0,
            offset_us: 0,
            method: "PUT".into(),
            path: "/a".into(),
            query: Some("b=1".into()),
            headers: vec![
                ("host".into(), "shop".into()),
                ("authorization".into(), REDACTED.into()),
                ("connection".into(), "keep-alive".into()),
                ("x-spillway-criticality".into(), "CRITICAL".into()),
            ],
            body: "aGk=".into(),
            body_encoding: "base64".into(),
            body_len: 2,
            body_truncated: false,
        };
        let spec = to_request(&entry).unwrap();
        assert_eq!(spec.method, Method::PUT);
        assert_eq!(spec.path_and_query.as_str(), "/a?b=1");
        assert_eq!(spec.headers.len(), 1);
        assert_eq!(spec.headers["x-spillway-criticality"], "CRITICAL");
        assert_eq!(spec.body, Bytes::from_static(b"hi"));
    }

    #[test]
    fn bad_replays_are_refused() {
        assert_eq!(
            ReplaySchedule::new(&[], 1.0, false, None, None),
            Err(ReplayScheduleError::Empty)
        );
        assert_eq!(
            ReplaySchedule::new(&[ms(0)], 0.0, false, None, None),
            Err(ReplayScheduleError::BadSpeed(0.0))
        );
        assert_eq!(
            ReplaySchedule::new(&[ms(0)], 1.0, true, None, None),
            Err(ReplayScheduleError::UnboundedLoop)
        );
    }
}
