//! A weighted mix of request classes told apart by one header (`--mix 'x-spillway-criticality:
//! SHEDDABLE=50,CRITICAL=40,CRITICAL_PLUS=10'`), and the deterministic class of request `i`.
//!
//! Classes are interleaved, not drawn at random: the weights are divided by their greatest
//! common divisor, and one period of that many requests is laid out once by smooth weighted
//! round robin (nginx). Request `i` takes the class at `i % period`, so any `period`
//! consecutive requests — wherever they start — hold each class exactly `weight` times, and
//! within a period the classes are spread evenly rather than in clumps. A run of a given plan
//! therefore sends the same classes in the same order every time. Pure: no I/O, no clock.

use crate::engine::RequestSpec;
use http::header::{HeaderName, HeaderValue};
use std::str::FromStr;

/// Most classes in one mix.
pub const MAX_CLASSES: usize = 64;
/// Longest period (sum of the weights once divided by their greatest common divisor).
pub const MAX_PERIOD: u64 = 10_000;

/// A `--mix` that could not be parsed; each variant names the part at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MixError {
    /// No `:` between the header name and the classes.
    #[error("invalid mix `{0}`: expected `Header-Name: VALUE=WEIGHT,VALUE=WEIGHT,...`")]
    MissingColon(String),
    /// The header name is not a valid HTTP header name.
    #[error("invalid mix header name `{0}`")]
    HeaderName(String),
    /// No class after the colon.
    #[error("mix has no classes: expected `VALUE=WEIGHT,...` after the header name")]
    NoClasses,
    /// A class without `=WEIGHT`.
    #[error("mix class `{0}` has no weight: expected `VALUE=WEIGHT`")]
    MissingWeight(String),
    /// A value that cannot be sent as a header value (empty, or control characters).
    #[error("invalid mix value `{0}`: must be a non-empty header value")]
    Value(String),
    /// A weight that is not a positive integer.
    #[error("invalid weight `{weight}` for mix class `{value}`: must be a positive integer")]
    Weight {
        /// The class.
        value: String,
        /// The weight as typed.
        weight: String,
    },
    /// The same value twice.
    #[error("mix class `{0}` is given twice")]
    Duplicate(String),
    /// More than [`MAX_CLASSES`] classes.
    #[error("a mix has at most {MAX_CLASSES} classes")]
    TooManyClasses,
    /// The reduced weights add up to more than [`MAX_PERIOD`].
    #[error("mix weights too fine: once divided by their common divisor they must sum to at most {MAX_PERIOD}")]
    PeriodTooLong,
}

/// One class of a [`Mix`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MixClass {
    /// The header value sent.
    pub value: HeaderValue,
    /// The value as text (for reports).
    pub label: String,
    /// Its weight as given.
    pub weight: u32,
}

/// A validated mix: the header, its classes and the interleaved period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mix {
    header: HeaderName,
    classes: Vec<MixClass>,
    /// One period: the class index of request `i % period`.
    sequence: Box<[u16]>,
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

impl Mix {
    /// A mix of `classes` (`(value, weight)`) on `header`.
    ///
    /// ```
    /// use spillway_load::mix::Mix;
    /// let mix: Mix = "x-spillway-criticality: SHEDDABLE=50,CRITICAL=40,CRITICAL_PLUS=10"
    ///     .parse()
    ///     .unwrap();
    /// assert_eq!(mix.period(), 10);
    /// let first_ten: Vec<&str> = (0..10).map(|i| mix.label_of(i)).collect();
    /// assert_eq!(first_ten.iter().filter(|c| **c == "SHEDDABLE").count(), 5);
    /// ```
    pub fn new(header: HeaderName, classes: Vec<(HeaderValue, u32)>) -> Result<Mix, MixError> {
        if classes.is_empty() {
            return Err(MixError::NoClasses);
        }
        if classes.len() > MAX_CLASSES {
            return Err(MixError::TooManyClasses);
        }
        let mut out: Vec<MixClass> = Vec::with_capacity(classes.len());
        for (value, weight) in classes {
            let label = String::from_utf8_lossy(value.as_bytes()).into_owned();
            if weight == 0 {
                return Err(MixError::Weight { value: label, weight: "0".into() });
            }
            if value.is_empty() {
                return Err(MixError::Value(label));
            }
            if out.iter().any(|c| c.value == value) {
                return Err(MixError::Duplicate(label));
            }
            out.push(MixClass { value, label, weight });
        }
        let divisor = out.iter().fold(0, |g, c| gcd(g, u64::from(c.weight)));
        let reduced: Vec<u64> = out.iter().map(|c| u64::from(c.weight) / divisor).collect();
        let period: u64 = reduced.iter().sum();
        if period > MAX_PERIOD {
            return Err(MixError::PeriodTooLong);
        }
        Ok(Mix { header, classes: out, sequence: smooth_round_robin(&reduced, period) })
    }

    /// The header that carries the class.
    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// The classes, in the order given.
    pub fn classes(&self) -> &[MixClass] {
        &self.classes
    }

    /// Requests per period: any this many consecutive requests hold the exact proportions.
    pub fn period(&self) -> usize {
        self.sequence.len()
    }

    /// The index (into [`Mix::classes`]) of request `i`'s class.
    pub fn class_of(&self, i: u64) -> usize {
        // `period` ≥ 1 (weights are positive) and ≤ MAX_PERIOD, so the index is in range.
        let period = self.sequence.len() as u64;
        usize::from(self.sequence[(i % period) as usize])
    }

    /// The header value of request `i`'s class, as text.
    pub fn label_of(&self, i: u64) -> &str {
        &self.classes[self.class_of(i)].label
    }

    /// One request per class: `base` with the mix's header set to the class's value (replacing
    /// any header of the same name). Built once, before a run: requests are not rebuilt per
    /// send.
    pub fn requests(&self, base: &RequestSpec) -> Vec<RequestSpec> {
        self.classes
            .iter()
            .map(|class| {
                let mut spec = base.clone();
                spec.headers.insert(self.header.clone(), class.value.clone());
                spec
            })
            .collect()
    }

    /// Class `k`'s share of all requests, 0..=1.
    pub fn share(&self, k: usize) -> f64 {
        let total: u64 = self.classes.iter().map(|c| u64::from(c.weight)).sum();
        self.classes.get(k).map_or(0.0, |c| f64::from(c.weight) / total as f64)
    }
}

/// One period of smooth weighted round robin over `weights` (all positive, summing to
/// `period`): each step every class gains its weight, the richest is picked and pays the total.
/// Each class is picked exactly its weight times per period, as evenly spaced as the weights
/// allow; ties go to the class given first.
fn smooth_round_robin(weights: &[u64], period: u64) -> Box<[u16]> {
    let total = period as i64;
    let mut current = vec![0i64; weights.len()];
    let mut sequence = Vec::with_capacity(period as usize);
    for _ in 0..period {
        let mut best = 0;
        for (k, w) in weights.iter().enumerate() {
            current[k] += *w as i64;
            if current[k] > current[best] {
                best = k;
            }
        }
        current[best] -= total;
        // At most MAX_CLASSES (64) classes: the index fits.
        sequence.push(best as u16);
    }
    sequence.into_boxed_slice()
}

impl FromStr for Mix {
    type Err = MixError;

    /// Parses `Header-Name: VALUE=WEIGHT,VALUE=WEIGHT,...` (spaces around the parts are
    /// ignored; a value may itself contain `=`: the weight is after the last one).
    fn from_str(s: &str) -> Result<Mix, MixError> {
        let (name, list) = s.split_once(':').ok_or_else(|| MixError::MissingColon(s.into()))?;
        let name = name.trim();
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| MixError::HeaderName(name.to_string()))?;
        let mut classes = Vec::new();
        for item in list.split(',').map(str::trim) {
            if item.is_empty() {
                if list.trim().is_empty() {
                    return Err(MixError::NoClasses);
                }
                return Err(MixError::MissingWeight(item.to_string()));
            }
            let (value, weight) =
                item.rsplit_once('=').ok_or_else(|| MixError::MissingWeight(item.to_string()))?;
            let (value, weight) = (value.trim(), weight.trim());
            let header_value = HeaderValue::from_str(value)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| MixError::Value(value.to_string()))?;
            let weight_error =
                || MixError::Weight { value: value.to_string(), weight: weight.to_string() };
            let weight: u32 = weight.parse().map_err(|_| weight_error())?;
            if weight == 0 {
                return Err(weight_error());
            }
            classes.push((header_value, weight));
        }
        Mix::new(header, classes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn criticality() -> Mix {
        "x-spillway-criticality: SHEDDABLE=50,CRITICAL=40,CRITICAL_PLUS=10".parse().unwrap()
    }

    fn counts(mix: &Mix, range: std::ops::Range<u64>) -> Vec<u64> {
        let mut n = vec![0; mix.classes().len()];
        for i in range {
            n[mix.class_of(i)] += 1;
        }
        n
    }

    #[test]
    fn every_window_of_a_hundred_has_the_exact_proportions() {
        let mix = criticality();
        assert_eq!(mix.period(), 10);
        for start in 0..250 {
            assert_eq!(counts(&mix, start..start + 100), vec![50, 40, 10], "window at {start}");
            assert_eq!(counts(&mix, start..start + 10), vec![5, 4, 1], "period at {start}");
        }
    }

    #[test]
    fn classes_are_interleaved_not_clumped() {
        let mix = criticality();
        let first: Vec<&str> = (0..10).map(|i| mix.label_of(i)).collect();
        // No class runs more than twice in a row, and every prefix stays within one request of
        // its ideal share.
        assert!(first.windows(3).all(|w| !(w[0] == w[1] && w[1] == w[2])), "{first:?}");
        for n in 1..=1000u64 {
            let got = counts(&mix, 0..n);
            for (k, got) in got.iter().enumerate() {
                let ideal = n as f64 * mix.share(k);
                assert!((*got as f64 - ideal).abs() < 1.0 + 1e-9, "prefix {n} class {k}: {got}");
            }
        }
    }

    #[test]
    fn assignment_is_deterministic() {
        let (a, b) = (criticality(), criticality());
        assert!((0..10_000).all(|i| a.class_of(i) == b.class_of(i)));
        assert_eq!(a.label_of(0), "SHEDDABLE");
        assert_eq!(a.label_of(u64::MAX), a.label_of(u64::MAX % 10));
    }

    #[test]
    fn weights_are_reduced_by_their_common_divisor() {
        let mix: Mix = "x-a: a=3,b=1".parse().unwrap();
        assert_eq!(mix.period(), 4);
        assert_eq!(counts(&mix, 7..11), vec![3, 1]);
        let prime: Mix = "x-a: a=7,b=3,c=1".parse().unwrap();
        assert_eq!(prime.period(), 11);
        assert_eq!(counts(&prime, 5..16), vec![7, 3, 1]);
        assert!((prime.share(0) - 7.0 / 11.0).abs() < 1e-12);
    }

    #[test]
    fn parse_errors_name_the_bad_part() {
        let err = |s: &str| s.parse::<Mix>().unwrap_err();
        assert_eq!(err("SHEDDABLE=1"), MixError::MissingColon("SHEDDABLE=1".into()));
        assert_eq!(err("bad header: a=1"), MixError::HeaderName("bad header".into()));
        assert_eq!(err("x-a:"), MixError::NoClasses);
        assert_eq!(err("x-a: a=1,b"), MixError::MissingWeight("b".into()));
        assert_eq!(err("x-a: a=1,,b=2"), MixError::MissingWeight(String::new()));
        assert_eq!(err("x-a: =3"), MixError::Value(String::new()));
        assert_eq!(err("x-a: a=1,b=0"), MixError::Weight { value: "b".into(), weight: "0".into() });
        assert_eq!(err("x-a: a=-2"), MixError::Weight { value: "a".into(), weight: "-2".into() });
        assert_eq!(err("x-a: a=1.5"), MixError::Weight { value: "a".into(), weight: "1.5".into() });
        assert_eq!(err("x-a: a=1,a=2"), MixError::Duplicate("a".into()));
        assert_eq!(err("x-a: a=9999,b=2"), MixError::PeriodTooLong);
        let many: Vec<String> = (0..65).map(|k| format!("c{k}=1")).collect();
        assert_eq!(err(&format!("x-a: {}", many.join(","))), MixError::TooManyClasses);
        assert!(err("x-a: a=1,b=x").to_string().contains("`x` for mix class `b`"));
    }

    #[test]
    fn values_may_contain_equals_and_spaces_are_trimmed() {
        let mix: Mix = "  X-Test :  k=v = 2 , plain=1 ".parse().unwrap();
        assert_eq!(mix.header().as_str(), "x-test");
        assert_eq!(mix.classes()[0].label, "k=v");
        assert_eq!(mix.classes()[0].weight, 2);
        assert_eq!(mix.classes()[1].value, HeaderValue::from_static("plain"));
    }
}
