//! Parsing and printing of the human units the load tools take on the command line and in
//! config: durations (`10s`, `250ms`, `2m`) and byte sizes (`4KB`, `16MiB`).
//!
//! Small hand-written parsers: the accepted forms are few, and their errors should name the
//! value the user typed.

use std::time::Duration;

/// A value that is not a valid duration or size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{value}`: {why}")]
pub struct UnitError {
    /// What was being parsed ("duration", "size").
    pub what: &'static str,
    /// The text as given.
    pub value: String,
    /// Why it was refused.
    pub why: &'static str,
}

fn unit_error(what: &'static str, value: &str, why: &'static str) -> UnitError {
    UnitError { what, value: value.to_string(), why }
}

/// Parses a duration: a number followed by `ns`, `us`, `ms`, `s`, `m` or `h` (`s` when the unit
/// is missing, as wrk's `-d 10`). The syntax is core's
/// ([`spillway_core::deadline::parse_duration`]), shared with the gateway's config and the
/// deadline headers.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(spillway_load::units::parse_duration("250ms").unwrap(), Duration::from_millis(250));
/// assert_eq!(spillway_load::units::parse_duration("2m").unwrap(), Duration::from_secs(120));
/// assert_eq!(spillway_load::units::parse_duration("10").unwrap(), Duration::from_secs(10));
/// ```
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    use spillway_core::deadline::{parse_duration as parse_core, BareNumber, TimeoutErrorKind};
    parse_core(s.as_bytes(), BareNumber::Seconds).map_err(|kind| {
        let why = match kind {
            TimeoutErrorKind::UnknownUnit { .. } => "unit must be one of ns, us, ms, s, m, h",
            TimeoutErrorKind::Overflow | TimeoutErrorKind::TooLong { .. } => "too large",
            _ => "expected e.g. 10s or 250ms",
        };
        unit_error("duration", s, why)
    })
}

/// Parses a byte size: a number followed by `B`, `KB`/`KiB`, `MB`/`MiB` or `GB`/`GiB` (case
/// insensitive; bytes when the unit is missing). `KB` means 1024 bytes, as in config files.
/// The syntax is `spillway_record::size::parse_bytes`'s.
///
/// ```
/// assert_eq!(spillway_load::units::parse_bytes("4KB").unwrap(), 4096);
/// ```
pub fn parse_bytes(s: &str) -> Result<u64, UnitError> {
    // One syntax for sizes everywhere: the recorder's config and the gateway share this parser.
    spillway_record::size::parse_bytes(s).map_err(|e| unit_error("size", s, e.why))
}

/// Formats a latency given in microseconds for a table: `850us`, `12.3ms`, `1.52s`.
pub fn format_micros(us: f64) -> String {
    if us < 1000.0 {
        format!("{us:.0}us")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

/// Formats a duration compactly (`10s`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_common_units() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    }

    #[test]
    fn durations_refuse_unknown_units_and_garbage() {
        assert!(parse_duration("10 parsecs").is_err());
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes_use_binary_kilobytes() {
        assert_eq!(parse_bytes("4KB"), Ok(4096));
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("512"), Ok(512));
        assert!(parse_bytes("4 parsecs").is_err());
    }

    #[test]
    fn latencies_print_in_a_readable_unit() {
        assert_eq!(format_micros(850.0), "850us");
        assert_eq!(format_micros(12_300.0), "12.30ms");
        assert_eq!(format_micros(1_520_000.0), "1.52s");
    }
}
