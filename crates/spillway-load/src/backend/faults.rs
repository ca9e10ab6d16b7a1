//! The test backend's injected faults — a share of failing answers, a slow tail, a hard-down
//! switch — and the `POST /control` JSON that changes them while it runs.
//!
//! Kept apart from the server so the decisions are plain functions of the settings and two
//! random draws (tested without sockets or time), and so the one place that validates a setting
//! serves both the command line and the control endpoint: a value refused at start-up is refused
//! in the same words at run time.

use http::StatusCode;
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Longest tail time accepted: a tail is a slow answer, not a hung one (use `down` or a client
/// timeout for that), and every sleep of the backend stays bounded.
pub const MAX_TAIL_TIME: Duration = Duration::from_secs(3600);

/// Largest `POST /control` body read; a settings object is a few dozen bytes.
pub const MAX_CONTROL_BODY: usize = 16 * 1024;

/// A setting that cannot be used; the message names the setting and the value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultError {
    /// A share of requests outside 0..=1 (or not a number).
    #[error("{key} must be a ratio within 0..=1 (e.g. 0.05), not {value}")]
    Ratio {
        /// The setting (`fail_ratio`, `tail_ratio`).
        key: &'static str,
        /// The value as given.
        value: String,
    },
    /// A fail status that is not an error status.
    #[error("fail_status must be an HTTP error status within 400..=599, not {0}")]
    FailStatus(u16),
    /// A tail time that is negative, not finite or above [`MAX_TAIL_TIME`].
    #[error("tail_time_ms must be a number of milliseconds within 0..=3600000, not {0}")]
    TailTime(String),
    /// A tail ratio above zero with no tail time to take.
    #[error(
        "tail_ratio {0} needs a tail time above zero (--tail-time on the command line, \
         tail_time_ms in /control)"
    )]
    TailWithoutTime(f64),
    /// A `POST /control` body that is not the expected JSON object.
    #[error(
        "invalid /control body: {0} (expected a JSON object with any of fail_ratio, \
         fail_status, tail_ratio, tail_time_ms, down)"
    )]
    Json(String),
    /// A `POST /control` body larger than [`MAX_CONTROL_BODY`].
    #[error("the /control body is larger than {MAX_CONTROL_BODY} bytes")]
    TooLarge,
}

/// A share of requests, within 0..=1.
#[derive(Debug, Clone, Copy, Default, PartialEq, PartialOrd, Serialize)]
#[serde(transparent)]
pub struct Ratio(f64);

impl Ratio {
    /// No request.
    pub const ZERO: Ratio = Ratio(0.0);
    /// Every request.
    pub const ONE: Ratio = Ratio(1.0);

    /// `value` when it is within 0..=1; `key` names the setting in the error.
    pub fn try_new(key: &'static str, value: f64) -> Result<Ratio, FaultError> {
        if (0.0..=1.0).contains(&value) {
            Ok(Ratio(value))
        } else {
            Err(FaultError::Ratio { key, value: value.to_string() })
        }
    }

    /// The share.
    pub fn get(self) -> f64 {
        self.0
    }

    /// Whether a uniform draw in `0..1` falls within the share: never for 0, always for 1.
    pub fn hit(self, draw: f64) -> bool {
        draw < self.0
    }
}

impl FromStr for Ratio {
    type Err = String;

    /// `0.05` or `5%` (the syntax of `capacity --max-errors`).
    fn from_str(s: &str) -> Result<Ratio, String> {
        crate::capacity::parse_ratio(s).map(Ratio)
    }
}

/// The status failing requests are answered with: an error status, 400..=599.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailStatus(StatusCode);

impl FailStatus {
    /// 503 Service Unavailable, the default.
    pub const UNAVAILABLE: FailStatus = FailStatus(StatusCode::SERVICE_UNAVAILABLE);

    /// `code` when it is within 400..=599.
    pub fn try_new(code: u16) -> Result<FailStatus, FaultError> {
        match StatusCode::from_u16(code) {
            Ok(status) if (400..=599).contains(&code) => Ok(FailStatus(status)),
            _ => Err(FaultError::FailStatus(code)),
        }
    }

    /// The status.
    pub fn get(self) -> StatusCode {
        self.0
    }
}

impl Default for FailStatus {
    fn default() -> Self {
        FailStatus::UNAVAILABLE
    }
}

impl FromStr for FailStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<FailStatus, String> {
        let code = s
            .trim()
            .parse::<u16>()
            .map_err(|_| format!("invalid status `{s}`: expected e.g. 503"))?;
        FailStatus::try_new(code).map_err(|e| e.to_string())
    }
}

/// How the backend misbehaves; every default is "not at all".
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Share of served requests answered with `fail_status` instead of 200 (after their service
    /// time, holding their slot: a failing backend still works).
    pub fail_ratio: Ratio,
    /// The status of those answers (503 by default).
    pub fail_status: FailStatus,
    /// Share of served requests that hold their slot for `tail_time` instead of the service
    /// time.
    pub tail_ratio: Ratio,
    /// How long a tail request holds its slot (zero: no tail).
    pub tail_time: Duration,
    /// Hard down: every request is answered 503 at once, without a slot.
    pub down: bool,
}

impl Faults {
    /// Checks what the field types cannot: the tail time's bound, and that a tail ratio has a
    /// tail time to take.
    pub fn check(&self) -> Result<(), FaultError> {
        if self.tail_time > MAX_TAIL_TIME {
            return Err(FaultError::TailTime(format!("{}", self.tail_time.as_secs_f64() * 1e3)));
        }
        if self.tail_ratio.get() > 0.0 && self.tail_time.is_zero() {
            return Err(FaultError::TailWithoutTime(self.tail_ratio.get()));
        }
        Ok(())
    }

    /// What a request that got a slot does, given two uniform draws in `0..1` (one for the
    /// failure, one for the tail, drawn independently).
    pub fn decide(&self, service_time: Duration, draws: [f64; 2]) -> Service {
        let tail = self.tail_ratio.hit(draws[1]);
        Service {
            hold: if tail { self.tail_time } else { service_time },
            tail,
            fail: self.fail_ratio.hit(draws[0]).then_some(self.fail_status.get()),
        }
    }

    /// The settings as `GET /control` shows them.
    pub fn view(&self) -> FaultsView {
        FaultsView {
            fail_ratio: self.fail_ratio.get(),
            fail_status: self.fail_status.get().as_u16(),
            tail_ratio: self.tail_ratio.get(),
            tail_time_ms: self.tail_time.as_secs_f64() * 1e3,
            down: self.down,
        }
    }
}

/// What one served request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Service {
    /// How long it holds its slot.
    pub hold: Duration,
    /// Whether that is the tail time.
    pub tail: bool,
    /// The error status it is answered with, if it fails.
    pub fail: Option<StatusCode>,
}

/// The settings as JSON: what `GET /control` and `POST /control` answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FaultsView {
    /// Share of requests answered with `fail_status`.
    pub fail_ratio: f64,
    /// Status of the failing answers.
    pub fail_status: u16,
    /// Share of requests that take `tail_time_ms`.
    pub tail_ratio: f64,
    /// Tail time, milliseconds.
    pub tail_time_ms: f64,
    /// Hard down.
    pub down: bool,
}

/// A `POST /control` body: the settings to change; those left out keep their value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControlUpdate {
    /// New fail ratio, 0..=1.
    pub fail_ratio: Option<f64>,
    /// New fail status, 400..=599.
    pub fail_status: Option<u16>,
    /// New tail ratio, 0..=1.
    pub tail_ratio: Option<f64>,
    /// New tail time, milliseconds.
    pub tail_time_ms: Option<f64>,
    /// Hard down or back up.
    pub down: Option<bool>,
}

impl ControlUpdate {
    /// Parses a `POST /control` body.
    ///
    /// ```
    /// use spillway_load::backend::faults::{ControlUpdate, Faults};
    /// let update = ControlUpdate::parse(br#"{"fail_ratio": 0.5, "down": true}"#).unwrap();
    /// let faults = update.apply(&Faults::default()).unwrap();
    /// assert_eq!((faults.fail_ratio.get(), faults.down), (0.5, true));
    /// assert!(ControlUpdate::parse(br#"{"fail_ratio": 2}"#).unwrap().apply(&faults).is_err());
    /// ```
    pub fn parse(body: &[u8]) -> Result<ControlUpdate, FaultError> {
        if body.len() > MAX_CONTROL_BODY {
            return Err(FaultError::TooLarge);
        }
        serde_json::from_slice(body).map_err(|e| FaultError::Json(e.to_string()))
    }

    /// The settings after this update, checked as a whole; `current` is not changed, so a
    /// refused update leaves the backend as it was.
    pub fn apply(&self, current: &Faults) -> Result<Faults, FaultError> {
        let mut next = *current;
        if let Some(v) = self.fail_ratio {
            next.fail_ratio = Ratio::try_new("fail_ratio", v)?;
        }
        if let Some(v) = self.fail_status {
            next.fail_status = FailStatus::try_new(v)?;
        }
        if let Some(v) = self.tail_ratio {
            next.tail_ratio = Ratio::try_new("tail_ratio", v)?;
        }
        if let Some(ms) = self.tail_time_ms {
            next.tail_time = Duration::try_from_secs_f64(ms / 1e3)
                .ok()
                .filter(|d| *d <= MAX_TAIL_TIME)
                .ok_or_else(|| FaultError::TailTime(ms.to_string()))?;
        }
        if let Some(v) = self.down {
            next.down = v;
        }
        next.check()?;
        Ok(next)
    }
}

/// A lock-free SplitMix64 generator shared by every connection: each draw advances one atomic
/// counter, so a run with a fixed seed makes the same draws in arrival order.
///
/// Statistical quality is far beyond what a fault ratio needs, at the cost of one atomic add.
#[derive(Debug)]
pub struct SplitMix64 {
    state: AtomicU64,
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

impl SplitMix64 {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: AtomicU64::new(seed) }
    }

    /// The next 64 random bits.
    pub fn next_u64(&self) -> u64 {
        let mut z =
            self.state.fetch_add(GOLDEN_GAMMA, Ordering::Relaxed).wrapping_add(GOLDEN_GAMMA);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform draw in `0..1` (53 bits).
    pub fn next_f64(&self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A seed from the wall clock, for runs without `--seed`.
pub fn seed_from_time() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    // One round of the generator spreads the low-entropy clock bits over the whole word.
    SplitMix64::new(nanos ^ u64::from(std::process::id())).next_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn ratios_outside_zero_to_one_are_refused_by_name() {
        assert_eq!(Ratio::try_new("fail_ratio", 0.25).unwrap().get(), 0.25);
        for bad in [-0.1, 1.5, f64::NAN, f64::INFINITY] {
            let err = Ratio::try_new("tail_ratio", bad).unwrap_err();
            assert!(err.to_string().starts_with("tail_ratio must be"), "{err}");
        }
        assert_eq!("5%".parse::<Ratio>().unwrap().get(), 0.05);
        assert_eq!("0.5".parse::<Ratio>().unwrap().get(), 0.5);
        assert!("1.01".parse::<Ratio>().is_err());
        assert!("half".parse::<Ratio>().is_err());
    }

    #[test]
    fn the_fail_status_must_be_an_error_status() {
        assert_eq!(FailStatus::try_new(500).unwrap().get(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!("429".parse::<FailStatus>().unwrap().get(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(FailStatus::default().get(), StatusCode::SERVICE_UNAVAILABLE);
        for bad in [200, 302, 399, 600, 999] {
            assert_eq!(FailStatus::try_new(bad), Err(FaultError::FailStatus(bad)));
        }
        assert!("abc".parse::<FailStatus>().is_err());
    }

    #[test]
    fn a_tail_ratio_needs_a_bounded_tail_time() {
        let tail = Faults { tail_ratio: Ratio(0.05), ..Faults::default() };
        assert_eq!(tail.check(), Err(FaultError::TailWithoutTime(0.05)));
        assert!(Faults { tail_time: 200 * MS, ..tail }.check().is_ok());
        let hung = Faults { tail_time: MAX_TAIL_TIME + MS, ..tail };
        assert!(matches!(hung.check(), Err(FaultError::TailTime(_))));
        assert!(Faults::default().check().is_ok());
    }

    #[test]
    fn decisions_follow_the_draws_and_the_edges_are_exact() {
        let faults = Faults {
            fail_ratio: Ratio(0.5),
            fail_status: FailStatus::try_new(500).unwrap(),
            tail_ratio: Ratio(0.1),
            tail_time: 200 * MS,
            down: false,
        };
        let plain = faults.decide(20 * MS, [0.5, 0.1]);
        assert_eq!(plain, Service { hold: 20 * MS, tail: false, fail: None });
        let both = faults.decide(20 * MS, [0.499, 0.099]);
        assert_eq!(
            both,
            Service { hold: 200 * MS, tail: true, fail: Some(StatusCode::INTERNAL_SERVER_ERROR) }
        );
        // Ratio 1 fails every draw in 0..1, ratio 0 none.
        let always = Faults { fail_ratio: Ratio::ONE, ..Faults::default() };
        assert!(always.decide(MS, [0.999_999, 0.0]).fail.is_some());
        assert!(Faults::default().decide(MS, [0.0, 0.0]).fail.is_none());
        assert!(!Faults::default().decide(MS, [0.0, 0.0]).tail);
    }

    #[test]
    fn a_seeded_generator_is_repeatable_and_hits_a_ratio_about_right() {
        let (a, b) = (SplitMix64::new(7), SplitMix64::new(7));
        let first: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        assert_eq!(first, (0..4).map(|_| b.next_u64()).collect::<Vec<_>>());
        assert_ne!(first[0], SplitMix64::new(8).next_u64());
        // Fixed seed: the count is the same on every run, so this bound cannot flake.
        let rng = SplitMix64::new(42);
        let ratio = Ratio(0.3);
        let hits = (0..10_000).filter(|_| ratio.hit(rng.next_f64())).count();
        assert!((2_850..=3_150).contains(&hits), "{hits} hits of 10000 at 0.3");
        assert!((0..1000).map(|_| rng.next_f64()).all(|x| (0.0..1.0).contains(&x)));
    }

    #[test]
    fn control_updates_change_only_what_they_name() {
        let start = Faults { fail_ratio: Ratio(0.2), ..Faults::default() };
        let down = ControlUpdate::parse(br#"{"down":true}"#).unwrap().apply(&start).unwrap();
        assert_eq!(down, Faults { down: true, ..start });
        let tail = ControlUpdate::parse(br#"{"tail_ratio":0.05,"tail_time_ms":200}"#)
            .unwrap()
            .apply(&start)
            .unwrap();
        assert_eq!((tail.tail_ratio.get(), tail.tail_time), (0.05, 200 * MS));
        assert_eq!(tail.fail_ratio.get(), 0.2);
        let same = ControlUpdate::parse(b"{}").unwrap().apply(&start).unwrap();
        assert_eq!(same, start);
        let view = tail.view();
        assert_eq!((view.fail_status, view.tail_time_ms, view.down), (503, 200.0, false));
        let json = serde_json::to_value(view).unwrap();
        for key in ["fail_ratio", "fail_status", "tail_ratio", "tail_time_ms", "down"] {
            assert!(json.get(key).is_some(), "missing {key}");
        }
    }

    #[test]
    fn bad_control_bodies_are_refused_with_a_message_naming_the_problem() {
        let start = Faults::default();
        let refused = |body: &[u8]| {
            ControlUpdate::parse(body).and_then(|u| u.apply(&start)).unwrap_err().to_string()
        };
        assert!(refused(b"not json").contains("invalid /control body"));
        assert!(refused(br#"{"fail_rate":0.5}"#).contains("unknown field `fail_rate`"));
        assert!(refused(br#"{"fail_ratio":"half"}"#).contains("invalid /control body"));
        assert!(refused(br#"[0.5]"#).contains("invalid /control body"));
        assert!(refused(br#"{"fail_ratio":1.5}"#).starts_with("fail_ratio must be"));
        assert!(refused(br#"{"fail_status":200}"#).contains("400..=599"));
        assert!(refused(br#"{"tail_time_ms":-1}"#).starts_with("tail_time_ms"));
        assert!(refused(br#"{"tail_time_ms":1e12}"#).starts_with("tail_time_ms"));
        assert!(refused(br#"{"tail_ratio":0.1}"#).contains("needs a tail time"));
        // A refused update names its first bad value even when others are valid.
        assert!(refused(br#"{"down":true,"fail_ratio":-1}"#).starts_with("fail_ratio"));
        assert_eq!(
            ControlUpdate::parse(&vec![b' '; MAX_CONTROL_BODY + 1]),
            Err(FaultError::TooLarge)
        );
    }
}
