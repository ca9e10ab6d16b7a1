//! Human durations in config files (`250ms`, `2s`, `1m`, `1h`).
//!
//! Every timeout in the config is written with an explicit unit so that `timeout: 5` can never
//! mean five seconds to one reader and five milliseconds to another.

use spillway_core::deadline::{parse_duration as parse_core, BareNumber, TimeoutErrorKind};
use std::time::Duration;

/// Parses `250ms`, `1.5s`, `1m`, `1h` (also `us`, `ns`); a bare number is refused. The syntax
/// is core's ([`spillway_core::deadline::parse_duration`]), shared with the deadline headers and
/// the load tools' command line.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    parse_core(text.as_bytes(), BareNumber::Refused).map_err(|kind| match kind {
        TimeoutErrorKind::MissingUnit { .. } => {
            format!("`{text}` has no unit: write e.g. `250ms`, `2s` or `1m`")
        }
        TimeoutErrorKind::UnknownUnit { expected } => {
            format!("unknown duration unit in `{text}` (use {expected})")
        }
        other => format!("`{text}` is not a duration ({other}): write e.g. `250ms`, `2s` or `1m`"),
    })
}

/// Renders a duration the way it would be written in a config file.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        format!("{}us", d.as_micros())
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A serde-friendly duration written with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigDuration(pub Duration);

impl<'de> serde::Deserialize<'de> for ConfigDuration {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration with a unit, such as 250ms, 2s or 1m")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ConfigDuration, E> {
                parse_duration(v).map(ConfigDuration).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<ConfigDuration, E> {
                Err(E::custom(format!("`{v}` has no unit: write e.g. `{v}ms` or `{v}s`")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<ConfigDuration, E> {
                Err(E::custom(format!("`{v}` has no unit: write e.g. `{v}ms` or `{v}s`")))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("ms").is_err());
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("5").unwrap_err().contains("has no unit"));
    }

    #[test]
    fn durations_round_trip_through_their_written_form() {
        for text in ["250ms", "2s", "1m", "1h", "90s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
