//! The wire forms of a time budget: `grpc-timeout` (gRPC over HTTP/2) and `x-request-timeout`
//! (plain HTTP), parsed from raw header bytes and formatted without allocating.
//!
//! Both formatters round *down*: a budget sent downstream must never exceed the true remaining
//! time, or the callee would keep working after the caller has given up. Parsers are total:
//! any byte string gives a duration or a [`TimeoutParseError`] naming the part that is wrong.

use std::fmt;
use std::time::Duration;

/// The gRPC deadline header (gRPC over HTTP/2 spec, "Requests").
pub const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";

/// The plain-HTTP deadline header understood and sent by Spillway.
pub const REQUEST_TIMEOUT_HEADER: &str = "x-request-timeout";

/// The largest `TimeoutValue` the gRPC spec allows: at most 8 ASCII digits.
const GRPC_MAX_VALUE: u64 = 99_999_999;

/// gRPC units, finest first, with their length in nanoseconds.
const GRPC_UNITS: [(u8, u64); 6] = [
    (b'n', 1),
    (b'u', 1_000),
    (b'm', 1_000_000),
    (b'S', 1_000_000_000),
    (b'M', 60_000_000_000),
    (b'H', 3_600_000_000_000),
];

/// Longest `x-request-timeout` value accepted, in bytes. Real budgets need far fewer; the bound
/// keeps parsing cheap and arithmetic overflow-free.
const REQUEST_TIMEOUT_MAX_LEN: usize = 32;

/// Which header a value came from (for error messages and for reporting the deadline's source).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum TimeoutHeader {
    /// `grpc-timeout`.
    GrpcTimeout,
    /// `x-request-timeout`.
    RequestTimeout,
}

impl TimeoutHeader {
    /// The header's name, lower case.
    pub const fn name(self) -> &'static str {
        match self {
            TimeoutHeader::GrpcTimeout => GRPC_TIMEOUT_HEADER,
            TimeoutHeader::RequestTimeout => REQUEST_TIMEOUT_HEADER,
        }
    }
}

impl fmt::Display for TimeoutHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A timeout header value that could not be parsed: which header, and what is wrong with it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid {header} value: {kind}")]
pub struct TimeoutParseError {
    /// The header whose value is malformed.
    pub header: TimeoutHeader,
    /// What is wrong.
    pub kind: TimeoutErrorKind,
}

/// What is wrong with a timeout value. Variants name the part at fault: the whole value, the
/// number, or the unit.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeoutErrorKind {
    /// The value is empty (or only white space).
    #[error("empty value")]
    Empty,
    /// The whole value is longer than any real budget needs.
    #[error("value longer than {max} bytes")]
    TooLong {
        /// The limit, in bytes.
        max: usize,
    },
    /// There is a unit but no number before it (e.g. `m`, `ms`, `.s`).
    #[error("no number before the unit")]
    MissingNumber,
    /// The number has more digits than allowed (gRPC: at most 8).
    #[error("number has {digits} digits, at most {max} allowed")]
    NumberTooLong {
        /// Digits found.
        digits: usize,
        /// The limit.
        max: usize,
    },
    /// A byte inside the number is not an ASCII digit (signs are not allowed either).
    #[error("byte {offset} of the number is not an ASCII digit")]
    InvalidDigit {
        /// Offset of the offending byte within the trimmed value.
        offset: usize,
    },
    /// The value ends in a digit: the unit is missing (gRPC requires one).
    #[error("missing unit (expected one of {expected})")]
    MissingUnit {
        /// The units this header accepts.
        expected: &'static str,
    },
    /// The unit is not one this header accepts.
    #[error("unknown unit (expected one of {expected})")]
    UnknownUnit {
        /// The units this header accepts.
        expected: &'static str,
    },
    /// The duration does not fit in 584 years of nanoseconds.
    #[error("duration too large")]
    Overflow,
}

const GRPC_UNITS_TEXT: &str = "H M S m u n";
const REQUEST_UNITS_TEXT: &str = "h m s ms us ns, or none for ms";
const DURATION_UNITS_TEXT: &str = "h m s ms us ns";

/// Parses a `grpc-timeout` value exactly as the gRPC over HTTP/2 spec defines it:
/// `TimeoutValue TimeoutUnit`, the value 1 to 8 ASCII digits, the unit one of `H` (hour),
/// `M` (minute), `S` (second), `m` (millisecond), `u` (microsecond), `n` (nanosecond),
/// case-sensitive.
///
/// Two deliberate readings of the spec: surrounding white space is ignored (HTTP does not make
/// it part of a field value), and a value of zero is accepted as "no time left" although the
/// spec says "positive integer" — refusing it would make the server fall back to its route
/// default and so *lengthen* a budget the caller has already spent.
///
/// ```
/// use std::time::Duration;
/// use spillway_core::deadline::parse_grpc_timeout;
/// assert_eq!(parse_grpc_timeout(b"250m"), Ok(Duration::from_millis(250)));
/// assert!(parse_grpc_timeout(b"250").is_err()); // no unit
/// ```
pub fn parse_grpc_timeout(value: &[u8]) -> Result<Duration, TimeoutParseError> {
    let err = |kind| TimeoutParseError { header: TimeoutHeader::GrpcTimeout, kind };
    let value = value.trim_ascii();
    let Some((&unit, digits)) = value.split_last() else {
        return Err(err(TimeoutErrorKind::Empty));
    };
    let unit_nanos = match GRPC_UNITS.iter().find(|(u, _)| *u == unit) {
        Some(&(_, nanos)) => nanos,
        None if unit.is_ascii_digit() => {
            return Err(err(TimeoutErrorKind::MissingUnit { expected: GRPC_UNITS_TEXT }))
        }
        None => return Err(err(TimeoutErrorKind::UnknownUnit { expected: GRPC_UNITS_TEXT })),
    };
    if digits.is_empty() {
        return Err(err(TimeoutErrorKind::MissingNumber));
    }
    if digits.len() > 8 {
        return Err(err(TimeoutErrorKind::NumberTooLong { digits: digits.len(), max: 8 }));
    }
    let mut n: u64 = 0;
    for (offset, &b) in digits.iter().enumerate() {
        if !b.is_ascii_digit() {
            return Err(err(TimeoutErrorKind::InvalidDigit { offset }));
        }
        n = n * 10 + u64::from(b - b'0');
    }
    // n < 10^8 and the largest unit is 3.6e12 ns: the product fits in u128, and after dividing
    // into seconds and nanoseconds it fits in a Duration.
    Ok(duration_from_nanos_u128(u128::from(n) * u128::from(unit_nanos)))
}

/// Formats a budget as a `grpc-timeout` value, using the finest unit whose value fits in the
/// spec's 8 digits and rounding *down*, so the budget sent is never longer than `budget` (and
/// shorter by less than one unit: at most 0.001% of the budget). Budgets beyond `99999999H`
/// (over 11 000 years) are clamped to it. Zero formats as `0n`.
///
/// ```
/// use std::time::Duration;
/// use spillway_core::deadline::format_grpc_timeout;
/// assert_eq!(format_grpc_timeout(Duration::from_millis(50)).as_str(), "50000000n");
/// assert_eq!(format_grpc_timeout(Duration::from_millis(1500)).as_str(), "1500000u");
/// ```
pub fn format_grpc_timeout(budget: Duration) -> TimeoutValue {
    let nanos = budget.as_nanos();
    for (unit, unit_nanos) in GRPC_UNITS {
        let value = nanos / u128::from(unit_nanos);
        if value <= u128::from(GRPC_MAX_VALUE) {
            // Fits in 8 digits, so the cast cannot truncate.
            return TimeoutValue::new(value as u64, &[unit]);
        }
    }
    TimeoutValue::new(GRPC_MAX_VALUE, b"H")
}

/// Parses an `x-request-timeout` value: a decimal number, optionally with a fraction, then an
/// optional unit — `h`, `m` (minutes), `s`, `ms`, `us` (or `µs`), `ns`, case-insensitive,
/// optionally after spaces. A bare number is milliseconds (the unit most HTTP timeout headers
/// use). Examples: `250ms`, `1.5s`, `2m`, `750`, `100us`.
///
/// Signs, exponents and compound values (`1m30s`) are refused. Fractions finer than a
/// nanosecond are truncated (rounding down, like every conversion here). Values longer than
/// 32 bytes or above 584 years are refused.
///
/// ```
/// use std::time::Duration;
/// use spillway_core::deadline::parse_request_timeout;
/// assert_eq!(parse_request_timeout(b"1.5s"), Ok(Duration::from_millis(1500)));
/// assert_eq!(parse_request_timeout(b"250"), Ok(Duration::from_millis(250)));
/// ```
pub fn parse_request_timeout(value: &[u8]) -> Result<Duration, TimeoutParseError> {
    parse_duration(value, BareNumber::Millis)
        .map_err(|kind| TimeoutParseError { header: TimeoutHeader::RequestTimeout, kind })
}

/// What a number without a unit means to [`parse_duration`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum BareNumber {
    /// Milliseconds, as in the `x-request-timeout` header.
    Millis,
    /// Seconds, as in command-line durations (`--duration 10`, like wrk's `-d 10`).
    Seconds,
    /// An error: config files always name the unit, so `timeout: 5` cannot mean five seconds
    /// to one reader and five milliseconds to another.
    Refused,
}

/// Parses a human duration — the one duration syntax of Spillway's headers, config files and
/// command line: a decimal number, optionally with a fraction, then a unit `h`, `m` (minutes),
/// `s`, `ms`, `us` (or `µs`), `ns`, case-insensitive, optionally after spaces; what a bare
/// number means is the caller's choice (`bare`). Exact integer arithmetic, truncating below a
/// nanosecond; refuses signs, exponents, compound values (`1m30s`), values longer than 32
/// bytes and durations above 584 years.
///
/// ```
/// use std::time::Duration;
/// use spillway_core::deadline::{parse_duration, BareNumber};
/// assert_eq!(parse_duration(b"1.5s", BareNumber::Refused), Ok(Duration::from_millis(1500)));
/// assert_eq!(parse_duration(b"10", BareNumber::Seconds), Ok(Duration::from_secs(10)));
/// assert!(parse_duration(b"10", BareNumber::Refused).is_err());
/// ```
pub fn parse_duration(value: &[u8], bare: BareNumber) -> Result<Duration, TimeoutErrorKind> {
    let value = value.trim_ascii();
    if value.is_empty() {
        return Err(TimeoutErrorKind::Empty);
    }
    if value.len() > REQUEST_TIMEOUT_MAX_LEN {
        return Err(TimeoutErrorKind::TooLong { max: REQUEST_TIMEOUT_MAX_LEN });
    }
    // Split into number and unit: the number runs over digits and at most one '.'.
    let mut int_part: u128 = 0;
    let mut int_digits = 0usize;
    // Fraction digits beyond 18 cannot matter (they are below a nanosecond for every unit up
    // to hours) and are truncated.
    let mut frac_part: u128 = 0;
    let mut frac_scale: u128 = 1;
    let mut frac_digits = 0usize;
    let mut seen_dot = false;
    let mut end = value.len();
    for (offset, &b) in value.iter().enumerate() {
        match b {
            b'0'..=b'9' if !seen_dot => {
                int_digits += 1;
                int_part = int_part * 10 + u128::from(b - b'0');
            }
            b'0'..=b'9' => {
                frac_digits += 1;
                if frac_digits <= 18 {
                    frac_part = frac_part * 10 + u128::from(b - b'0');
                    frac_scale *= 10;
                }
            }
            b'.' if !seen_dot => seen_dot = true,
            b'.' => return Err(TimeoutErrorKind::InvalidDigit { offset }),
            _ => {
                end = offset;
                break;
            }
        }
    }
    if int_digits + frac_digits == 0 {
        // A letter where the number should be means the number is missing (`ms`); anything
        // else there (a sign, punctuation) is a bad byte in the number (`-1s`).
        return Err(match value.first() {
            Some(b) if end == 0 && !b.is_ascii_alphabetic() && *b != 0xc2 => {
                TimeoutErrorKind::InvalidDigit { offset: 0 }
            }
            _ => TimeoutErrorKind::MissingNumber,
        });
    }
    let unit = value[end..].trim_ascii_start();
    let unit_nanos: u128 = match (unit.is_empty(), bare) {
        (true, BareNumber::Millis) => 1_000_000,
        (true, BareNumber::Seconds) => 1_000_000_000,
        (true, BareNumber::Refused) => {
            return Err(TimeoutErrorKind::MissingUnit { expected: DURATION_UNITS_TEXT });
        }
        (false, _) => match unit_nanos_of(unit) {
            Some(n) => n,
            None => {
                let expected = match bare {
                    BareNumber::Millis => REQUEST_UNITS_TEXT,
                    BareNumber::Seconds | BareNumber::Refused => DURATION_UNITS_TEXT,
                };
                return Err(TimeoutErrorKind::UnknownUnit { expected });
            }
        },
    };
    // At most 32 bytes, so int_part < 10^32 and int_part * 3.6e12 < 3.6e44 would overflow
    // u128 (3.4e38): check instead of assuming.
    let whole = int_part.checked_mul(unit_nanos).ok_or(TimeoutErrorKind::Overflow)?;
    // frac_part < 10^18 and unit_nanos <= 3.6e12: the product is below 3.6e30, no overflow.
    let frac = frac_part * unit_nanos / frac_scale;
    let total = whole.checked_add(frac).ok_or(TimeoutErrorKind::Overflow)?;
    if total > u128::from(u64::MAX) {
        return Err(TimeoutErrorKind::Overflow);
    }
    Ok(duration_from_nanos_u128(total))
}

/// Nanoseconds per duration unit, case-insensitive.
fn unit_nanos_of(unit: &[u8]) -> Option<u128> {
    let mut buf = [0u8; 3];
    if unit.len() > buf.len() {
        return None;
    }
    for (dst, src) in buf.iter_mut().zip(unit) {
        *dst = src.to_ascii_lowercase();
    }
    Some(match &buf[..unit.len()] {
        b"ms" => 1_000_000,
        b"h" => 3_600_000_000_000,
        b"m" => 60_000_000_000,
        b"s" => 1_000_000_000,
        b"us" | b"\xc2\xb5s" => 1_000,
        b"ns" => 1,
        _ => return None,
    })
}

/// Formats a budget as an `x-request-timeout` value: whole milliseconds rounded *down*
/// (`1499ms`), so the budget sent never exceeds the truth. A non-zero budget under a
/// millisecond is written in microseconds (`750us`), or nanoseconds under a microsecond,
/// rather than being flattened to zero. Zero formats as `0ms`; budgets beyond 584 years are
/// clamped to it.
///
/// ```
/// use std::time::Duration;
/// use spillway_core::deadline::format_request_timeout;
/// assert_eq!(format_request_timeout(Duration::from_micros(1_499_900)).as_str(), "1499ms");
/// assert_eq!(format_request_timeout(Duration::from_micros(750)).as_str(), "750us");
/// ```
pub fn format_request_timeout(budget: Duration) -> TimeoutValue {
    // Clamp to what the parser accepts (u64 nanoseconds, 584 years), so every value written
    // can be read back.
    let budget = budget.min(Duration::from_nanos(u64::MAX));
    let millis = budget.as_millis();
    if millis > 0 || budget.is_zero() {
        // At most u64::MAX / 10^6 here.
        return TimeoutValue::new(millis as u64, b"ms");
    }
    let micros = budget.as_micros();
    if micros > 0 {
        // Below one millisecond here, so below 1000.
        return TimeoutValue::new(micros as u64, b"us");
    }
    TimeoutValue::new(budget.as_nanos() as u64, b"ns")
}

fn duration_from_nanos_u128(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // The remainder is below 10^9.
    Duration::new(secs, (nanos % NANOS_PER_SEC) as u32)
}

/// A formatted timeout header value, held inline (no allocation): use [`TimeoutValue::as_str`]
/// or [`TimeoutValue::as_bytes`] to build the header.
#[derive(Copy, Clone, PartialEq, Eq, Hash)]
pub struct TimeoutValue {
    buf: [u8; 24],
    len: u8,
}

impl TimeoutValue {
    fn new(mut value: u64, unit: &[u8]) -> TimeoutValue {
        // u64 has at most 20 digits and units at most 2 bytes: 22 <= 24.
        let mut digits = [0u8; 20];
        let mut n = 0;
        loop {
            digits[n] = b'0' + (value % 10) as u8;
            n += 1;
            value /= 10;
            if value == 0 {
                break;
            }
        }
        let mut buf = [0u8; 24];
        for (dst, src) in buf.iter_mut().zip(digits[..n].iter().rev().chain(unit)) {
            *dst = *src;
        }
        TimeoutValue { buf, len: (n + unit.len()) as u8 }
    }

    /// The value as ASCII bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..usize::from(self.len)]
    }

    /// The value as a string.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and ASCII unit letters are ever written.
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl fmt::Display for TimeoutValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TimeoutValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TimeoutValue({:?})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn grpc_kind(v: &str) -> Option<TimeoutErrorKind> {
        parse_grpc_timeout(v.as_bytes()).err().map(|e| e.kind)
    }

    fn http_kind(v: &str) -> Option<TimeoutErrorKind> {
        parse_request_timeout(v.as_bytes()).err().map(|e| e.kind)
    }

    #[test]
    fn grpc_timeout_parses_every_unit() {
        for (text, want) in [
            ("1H", Duration::from_secs(3600)),
            ("2M", Duration::from_secs(120)),
            ("3S", Duration::from_secs(3)),
            ("250m", Duration::from_millis(250)),
            ("7u", Duration::from_micros(7)),
            ("99999999n", Duration::from_nanos(99_999_999)),
            ("00000001S", Duration::from_secs(1)),
            (" 5S ", Duration::from_secs(5)),
            ("0m", Duration::ZERO),
            ("99999999H", Duration::from_secs(99_999_999 * 3600)),
        ] {
            assert_eq!(parse_grpc_timeout(text.as_bytes()), Ok(want), "{text}");
        }
    }

    #[test]
    fn grpc_timeout_errors_name_the_part_that_is_wrong() {
        let units = GRPC_UNITS_TEXT;
        assert_eq!(grpc_kind(""), Some(TimeoutErrorKind::Empty));
        assert_eq!(grpc_kind("   "), Some(TimeoutErrorKind::Empty));
        assert_eq!(grpc_kind("250"), Some(TimeoutErrorKind::MissingUnit { expected: units }));
        assert_eq!(grpc_kind("250ms"), Some(TimeoutErrorKind::UnknownUnit { expected: units }));
        assert_eq!(grpc_kind("5h"), Some(TimeoutErrorKind::UnknownUnit { expected: units }));
        assert_eq!(grpc_kind("m"), Some(TimeoutErrorKind::MissingNumber));
        assert_eq!(
            grpc_kind("123456789S"),
            Some(TimeoutErrorKind::NumberTooLong { digits: 9, max: 8 })
        );
        assert_eq!(grpc_kind("-5S"), Some(TimeoutErrorKind::InvalidDigit { offset: 0 }));
        assert_eq!(grpc_kind("1.5S"), Some(TimeoutErrorKind::InvalidDigit { offset: 1 }));
        let e = parse_grpc_timeout(b"250").err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("invalid grpc-timeout value: missing unit (expected one of H M S m u n)")
        );
    }

    #[test]
    fn grpc_timeout_formats_in_the_finest_unit_that_fits_eight_digits() {
        for (budget, want) in [
            (Duration::ZERO, "0n"),
            (Duration::from_nanos(99_999_999), "99999999n"),
            (Duration::from_millis(100), "100000u"),
            (Duration::from_millis(1500), "1500000u"),
            (Duration::from_secs(100), "100000m"),
            (Duration::from_secs(100_000), "100000S"),
            (Duration::from_secs(100_000_000), "1666666M"),
            (Duration::from_secs(6_000_000_000), "1666666H"),
        ] {
            assert_eq!(format_grpc_timeout(budget).as_str(), want, "{budget:?}");
        }
        assert_eq!(format_grpc_timeout(Duration::MAX).as_str(), "99999999H");
    }

    #[test]
    fn grpc_timeout_formatting_rounds_down_never_up() {
        // 1.9999999999 s: in microseconds that is 1999999.9999, which must become 1999999u.
        let budget = Duration::from_nanos(1_999_999_999);
        assert_eq!(format_grpc_timeout(budget).as_str(), "1999999u");
    }

    #[test]
    fn request_timeout_parses_units_fractions_and_bare_milliseconds() {
        for (text, want) in [
            ("250ms", Duration::from_millis(250)),
            ("1.5s", Duration::from_millis(1500)),
            ("2m", Duration::from_secs(120)),
            ("1h", Duration::from_secs(3600)),
            ("0.25h", Duration::from_secs(900)),
            ("100us", Duration::from_micros(100)),
            ("100µs", Duration::from_micros(100)),
            ("42ns", Duration::from_nanos(42)),
            ("750", Duration::from_millis(750)),
            ("1.5", Duration::from_micros(1500)),
            (".5s", Duration::from_millis(500)),
            ("2.s", Duration::from_secs(2)),
            ("250 ms", Duration::from_millis(250)),
            ("250MS", Duration::from_millis(250)),
            ("1.0000000009s", Duration::from_secs(1)),
            ("0", Duration::ZERO),
        ] {
            assert_eq!(parse_request_timeout(text.as_bytes()), Ok(want), "{text}");
        }
    }

    #[test]
    fn request_timeout_errors_name_the_part_that_is_wrong() {
        let units = REQUEST_UNITS_TEXT;
        assert_eq!(http_kind(""), Some(TimeoutErrorKind::Empty));
        assert_eq!(http_kind("ms"), Some(TimeoutErrorKind::MissingNumber));
        assert_eq!(http_kind(".s"), Some(TimeoutErrorKind::MissingNumber));
        assert_eq!(http_kind("-1s"), Some(TimeoutErrorKind::InvalidDigit { offset: 0 }));
        assert_eq!(http_kind("1.2.3s"), Some(TimeoutErrorKind::InvalidDigit { offset: 3 }));
        assert_eq!(http_kind("5d"), Some(TimeoutErrorKind::UnknownUnit { expected: units }));
        assert_eq!(http_kind("1m30s"), Some(TimeoutErrorKind::UnknownUnit { expected: units }));
        assert_eq!(http_kind("99999999999999999999h"), Some(TimeoutErrorKind::Overflow));
        assert_eq!(
            http_kind("1234567890123456789012345678901234"),
            Some(TimeoutErrorKind::TooLong { max: 32 })
        );
        let e = parse_request_timeout(b"5d").err().map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some(
                "invalid x-request-timeout value: unknown unit (expected one of h m s ms us ns, \
                 or none for ms)"
            )
        );
    }

    #[test]
    fn request_timeout_formats_whole_milliseconds_rounded_down() {
        assert_eq!(format_request_timeout(Duration::ZERO).as_str(), "0ms");
        assert_eq!(format_request_timeout(Duration::from_millis(250)).as_str(), "250ms");
        assert_eq!(format_request_timeout(Duration::from_nanos(1_999_999)).as_str(), "1ms");
        assert_eq!(format_request_timeout(Duration::from_nanos(999_999)).as_str(), "999us");
        assert_eq!(format_request_timeout(Duration::from_nanos(999)).as_str(), "999ns");
        let longest = format_request_timeout(Duration::MAX);
        assert_eq!(longest.as_str(), "18446744073709ms");
        assert!(parse_request_timeout(longest.as_bytes()).is_ok(), "clamped to what parses");
    }

    proptest! {
        #[test]
        fn grpc_round_trip_never_lengthens_and_loses_at_most_one_unit(nanos in any::<u64>()) {
            let budget = Duration::from_nanos(nanos);
            let text = format_grpc_timeout(budget);
            prop_assert!(text.as_bytes().len() <= 9, "{text}");
            let back = parse_grpc_timeout(text.as_bytes());
            prop_assert!(back.is_ok(), "{text} did not parse");
            let back = back.unwrap_or_default();
            prop_assert!(back <= budget, "{text}: {back:?} > {budget:?}");
            // A coarser unit is only chosen when the finer one overflows 8 digits, so the loss
            // is below one unit, which is at most 1/10^5 of the budget.
            prop_assert!((budget - back).as_nanos() * 100_000 <= budget.as_nanos(), "{text}");
        }

        #[test]
        fn request_timeout_round_trip_never_lengthens(nanos in any::<u64>()) {
            let budget = Duration::from_nanos(nanos);
            let text = format_request_timeout(budget);
            let back = parse_request_timeout(text.as_bytes());
            prop_assert!(back.is_ok(), "{text} did not parse");
            let back = back.unwrap_or_default();
            prop_assert!(back <= budget, "{text}: {back:?} > {budget:?}");
            prop_assert!(budget - back < Duration::from_millis(1), "{text}");
            prop_assert_eq!(back.is_zero(), budget.is_zero());
        }

        #[test]
        fn any_duration_formats_to_a_value_that_parses_back_no_longer(
            secs in any::<u64>(),
            nanos in 0u32..1_000_000_000,
        ) {
            let budget = Duration::new(secs, nanos);
            let grpc = parse_grpc_timeout(format_grpc_timeout(budget).as_bytes());
            prop_assert!(grpc.is_ok_and(|b| b <= budget));
            let http = parse_request_timeout(format_request_timeout(budget).as_bytes());
            prop_assert!(http.is_ok_and(|b| b <= budget));
        }

        #[test]
        fn parsers_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse_grpc_timeout(&bytes);
            let _ = parse_request_timeout(&bytes);
        }

        #[test]
        fn parsers_never_panic_on_near_valid_text(text in "[ 0-9.]{0,34}(H|M|S|m|u|n|ms|us|ns|h|s|µs|x)?") {
            let _ = parse_grpc_timeout(text.as_bytes());
            let _ = parse_request_timeout(text.as_bytes());
        }
    }
}
