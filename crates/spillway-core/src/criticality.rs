//! Request criticality: how much a request matters when there is not enough capacity for all.
//!
//! Google's four classes (SRE book, "Handling Overload"): under overload or quota shortage the
//! lowest class is shed first, and the value travels unchanged with the request to every
//! downstream hop, so a whole call tree is shed consistently.

use std::fmt;
use std::str::FromStr;

/// The header (and gRPC metadata key) that carries a request's criticality.
pub const CRITICALITY_HEADER: &str = "x-spillway-criticality";

/// How important a request is. Ordered: `Sheddable < SheddablePlus < Critical < CriticalPlus`.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Criticality {
    /// Batch or prefetch work that may be dropped whenever capacity is short.
    Sheddable = 0,
    /// Work that may be dropped, but whose failure is noticed (it will be retried later).
    SheddablePlus = 1,
    /// The default for production requests.
    #[default]
    Critical = 2,
    /// Reserved for the most important requests; the last to be shed.
    CriticalPlus = 3,
}

impl Criticality {
    /// Every class, lowest first.
    pub const ALL: [Criticality; 4] = [
        Criticality::Sheddable,
        Criticality::SheddablePlus,
        Criticality::Critical,
        Criticality::CriticalPlus,
    ];

    /// The class's index, 0 (lowest) to 3 (highest): handy for per-class arrays.
    #[inline]
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The canonical header spelling, e.g. `CRITICAL_PLUS`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Criticality::Sheddable => "SHEDDABLE",
            Criticality::SheddablePlus => "SHEDDABLE_PLUS",
            Criticality::Critical => "CRITICAL",
            Criticality::CriticalPlus => "CRITICAL_PLUS",
        }
    }

    /// Parses a header value. Case-insensitive; accepts `CRITICAL_PLUS`, `critical-plus` and
    /// `CriticalPlus` alike, with surrounding white space.
    pub fn parse(value: &[u8]) -> Result<Criticality, ParseCriticalityError> {
        let trimmed = value.trim_ascii();
        // Longest spelling is "SHEDDABLE_PLUS" (14); anything longer is not a class.
        let mut buf = [0u8; 16];
        let mut len = 0;
        for &b in trimmed {
            if b == b'_' || b == b'-' {
                continue;
            }
            if len == buf.len() {
                return Err(ParseCriticalityError);
            }
            buf[len] = b.to_ascii_uppercase();
            len += 1;
        }
        match &buf[..len] {
            b"SHEDDABLE" => Ok(Criticality::Sheddable),
            b"SHEDDABLEPLUS" => Ok(Criticality::SheddablePlus),
            b"CRITICAL" => Ok(Criticality::Critical),
            b"CRITICALPLUS" => Ok(Criticality::CriticalPlus),
            _ => Err(ParseCriticalityError),
        }
    }

    /// Parses a header value, falling back to the default class (`Critical`) when it is absent
    /// or not a class: an unknown value must neither fail the request nor raise its priority.
    pub fn from_header(value: Option<&[u8]>) -> Criticality {
        value.and_then(|v| Criticality::parse(v).ok()).unwrap_or_default()
    }
}

impl fmt::Display for Criticality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Criticality {
    type Err = ParseCriticalityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Criticality::parse(s.as_bytes())
    }
}

/// The value is not one of the four criticality classes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a criticality (expected CRITICAL_PLUS, CRITICAL, SHEDDABLE_PLUS or SHEDDABLE)")]
pub struct ParseCriticalityError;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_ordered_from_sheddable_to_critical_plus() {
        assert!(Criticality::Sheddable < Criticality::SheddablePlus);
        assert!(Criticality::SheddablePlus < Criticality::Critical);
        assert!(Criticality::Critical < Criticality::CriticalPlus);
        assert_eq!(Criticality::default(), Criticality::Critical);
    }

    #[test]
    fn parses_every_spelling_case_insensitively() {
        for (text, want) in [
            ("CRITICAL_PLUS", Criticality::CriticalPlus),
            ("critical_plus", Criticality::CriticalPlus),
            ("CriticalPlus", Criticality::CriticalPlus),
            ("critical-plus", Criticality::CriticalPlus),
            (" Critical ", Criticality::Critical),
            ("SHEDDABLE_PLUS", Criticality::SheddablePlus),
            ("sheddable", Criticality::Sheddable),
        ] {
            assert_eq!(text.parse::<Criticality>(), Ok(want), "{text}");
        }
        for bad in ["", "CRIT", "CRITICAL_PLUS_PLUS", "SHEDDABLE_PLUS_EXTRA_LONG_VALUE", "1"] {
            assert!(bad.parse::<Criticality>().is_err(), "{bad}");
        }
    }

    #[test]
    fn round_trips_through_the_canonical_spelling() {
        for c in Criticality::ALL {
            assert_eq!(c.as_str().parse::<Criticality>(), Ok(c));
            assert_eq!(Criticality::ALL[c.index()], c);
        }
    }

    #[test]
    fn unknown_or_missing_header_means_the_default_class() {
        assert_eq!(Criticality::from_header(None), Criticality::Critical);
        assert_eq!(Criticality::from_header(Some(b"URGENT!!")), Criticality::Critical);
        assert_eq!(Criticality::from_header(Some(b"sheddable")), Criticality::Sheddable);
    }
}
