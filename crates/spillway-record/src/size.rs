//! Byte sizes as written in a `record:` block (`4KB`, `16MiB`): one small parser shared by the
//! recorder's config and the gateway's config checks.
//!
//! The one size syntax of the project: the load tools' `units::parse_bytes` calls this, and it
//! lives here so the gateway can read sizes without depending on the load tools.

/// A value that is not a valid byte size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size `{value}`: {why}")]
pub struct SizeError {
    /// The text as given.
    pub value: String,
    /// Why it was refused.
    pub why: &'static str,
}

fn size_error(value: &str, why: &'static str) -> SizeError {
    SizeError { value: value.to_string(), why }
}

/// Splits `"12.5KB"` into `(12.5, "KB")`.
fn split_number(s: &str) -> Option<(f64, &str)> {
    let s = s.trim();
    let end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let number: f64 = s[..end].parse().ok()?;
    Some((number, s[end..].trim()))
}

/// Parses a byte size: a number followed by `B`, `KB`/`KiB`, `MB`/`MiB` or `GB`/`GiB` (case
/// insensitive; bytes when the unit is missing). `KB` means 1024 bytes, as in config files.
///
/// ```
/// assert_eq!(spillway_record::size::parse_bytes("4KB").unwrap(), 4096);
/// ```
pub fn parse_bytes(s: &str) -> Result<u64, SizeError> {
    let (number, unit) =
        split_number(s).ok_or_else(|| size_error(s, "expected e.g. 4KB or 16MiB"))?;
    let multiplier: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        _ => return Err(size_error(s, "unit must be one of B, KB, MB, GB")),
    };
    let bytes = number * multiplier;
    if !bytes.is_finite() || bytes > u64::MAX as f64 / 2.0 {
        return Err(size_error(s, "too large"));
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_binary_kilobytes() {
        assert_eq!(parse_bytes("4KB"), Ok(4096));
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("512"), Ok(512));
        assert!(parse_bytes("4 parsecs").is_err());
    }

    #[test]
    fn errors_name_the_value_typed() {
        let e = parse_bytes("4 parsecs").unwrap_err();
        assert_eq!(e.to_string(), "invalid size `4 parsecs`: unit must be one of B, KB, MB, GB");
    }
}
