//! Parsing of `Retry-After` (RFC 9110 §10.2.3) — either delta-seconds (`120`) or an
//! HTTP-date — and formatting of HTTP-dates for `Date` and `Retry-After`.
//!
//! Why here: honouring the server's hint is part of the retry policy, and the core takes the
//! current wall-clock time as an argument (it never reads a clock). The date grammar itself is
//! the `httpdate` crate's (already in every build through hyper): all three forms of RFC 9110
//! §5.6.7 — IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the obsolete RFC 850 form
//! (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime (`Sun Nov  6 08:49:37 1994`).
//!
//! What `httpdate` decides, and these wrappers inherit: dates outside 1970–9999 are refused;
//! the day name must agree with the date; second `60` (a leap second) is refused; an RFC 850
//! two-digit year `00`–`69` is 2000–2069 and `70`–`99` is 1970–1999 (a fixed window, which
//! meets RFC 9110's "more than 50 years in the future means the past" rule from 2019 until
//! 2070). Formatting is called once per second by the gateway, which caches the rendering.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use httpdate::HttpDate;

/// The wait a `Retry-After` value asks for, given the current wall-clock time in seconds since
/// the UNIX epoch. A date in the past means "now" (zero). `None` when the value is neither
/// form. Surrounding white space is allowed; huge delta-seconds saturate.
///
/// ```
/// use spillway_core::retry::parse_retry_after;
/// use std::time::Duration;
///
/// assert_eq!(parse_retry_after(b"120", 0), Some(Duration::from_secs(120)));
/// // 784111777 is Sun, 06 Nov 1994 08:49:37 GMT.
/// let now = 784_111_777 - 30;
/// assert_eq!(
///     parse_retry_after(b"Sun, 06 Nov 1994 08:49:37 GMT", now),
///     Some(Duration::from_secs(30))
/// );
/// ```
pub fn parse_retry_after(value: &[u8], now_unix_secs: u64) -> Option<Duration> {
    let value = value.trim_ascii();
    if !value.is_empty() && value.iter().all(u8::is_ascii_digit) {
        let secs = value
            .iter()
            .fold(0u64, |acc, d| acc.saturating_mul(10).saturating_add(u64::from(d - b'0')));
        return Some(Duration::from_secs(secs));
    }
    let at = parse_http_date(value, now_unix_secs)?;
    let now = i64::try_from(now_unix_secs).unwrap_or(i64::MAX);
    Some(Duration::from_secs(u64::try_from(at.saturating_sub(now)).unwrap_or(0)))
}

/// An HTTP-date in any of its three forms, as seconds since the UNIX epoch; `None` when the
/// value is not one (see the module doc for what `httpdate` accepts). Surrounding white space
/// is allowed.
///
/// `now_unix_secs` is not used: `httpdate` places an RFC 850 two-digit year in a fixed window
/// (see the module doc). The parameter stays so that callers need not change.
pub fn parse_http_date(value: &[u8], now_unix_secs: u64) -> Option<i64> {
    let _ = now_unix_secs;
    let text = std::str::from_utf8(value).ok()?;
    let date: HttpDate = text.trim().parse().ok()?;
    let secs = SystemTime::from(date).duration_since(UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

/// The IMF-fixdate (RFC 9110 §5.6.7) for `unix_secs`, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`:
/// the form a `Date` or `Retry-After` header is sent in. Past the year 9999 the four-digit year
/// no longer fits: such times are clamped to its last second.
///
/// ```
/// use spillway_core::retry::format_http_date;
/// assert_eq!(&format_http_date(784_111_777), b"Sun, 06 Nov 1994 08:49:37 GMT");
/// ```
pub fn format_http_date(unix_secs: u64) -> [u8; 29] {
    let unix_secs = unix_secs.min(LAST_SECOND_OF_9999);
    let date = HttpDate::from(UNIX_EPOCH + Duration::from_secs(unix_secs));
    let mut out = Fixed { buf: [b' '; 29], len: 0 };
    // `HttpDate` always renders 29 bytes for years 1970–9999; `Fixed` refuses more.
    let _ = write!(out, "{date}");
    out.buf
}

/// 9999-12-31 23:59:59 UTC, the last second an IMF-fixdate (and `httpdate`) can hold.
const LAST_SECOND_OF_9999: u64 = 253_402_300_799;

/// A fixed-size, allocation-free `fmt::Write` target for the 29-byte IMF-fixdate.
struct Fixed {
    buf: [u8; 29],
    len: usize,
}

impl std::fmt::Write for Fixed {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Sun, 06 Nov 1994 08:49:37 GMT, the RFC's example.
    const EXAMPLE: i64 = 784_111_777;
    /// 2026-11-24 00:00:00 UTC.
    const NOW_2026: u64 = 1_795_478_400;

    fn year_of(secs: i64) -> Option<u16> {
        let text = format_http_date(u64::try_from(secs).ok()?);
        std::str::from_utf8(&text[12..16]).ok()?.parse().ok()
    }

    #[test]
    fn http_dates_are_formatted_as_imf_fixdate() {
        assert_eq!(&format_http_date(EXAMPLE as u64), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&format_http_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&format_http_date(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(&format_http_date(u64::MAX), b"Fri, 31 Dec 9999 23:59:59 GMT");
    }

    proptest! {
        #[test]
        fn formatted_http_dates_parse_back_to_the_same_second(secs in 0u64..=LAST_SECOND_OF_9999) {
            let text = format_http_date(secs);
            prop_assert_eq!(parse_http_date(&text, 0), Some(secs as i64));
        }
    }

    #[test]
    fn delta_seconds_are_a_wait_in_seconds() {
        assert_eq!(parse_retry_after(b"0", NOW_2026), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(b" 120 ", NOW_2026), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after(b"99999999999999999999999", 0),
            Some(Duration::from_secs(u64::MAX))
        );
        for bad in [&b""[..], b"-1", b"1.5", b"12a", b"+3", b"soon"] {
            assert_eq!(
                parse_retry_after(bad, NOW_2026),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn all_three_http_date_forms_parse_to_the_same_instant() {
        let now = NOW_2026;
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT", now), Some(EXAMPLE));
        assert_eq!(parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT", now), Some(EXAMPLE));
        assert_eq!(parse_http_date(b"Sun Nov  6 08:49:37 1994", now), Some(EXAMPLE));
        assert_eq!(parse_http_date(b"Sat Nov 26 08:49:37 1994", now), Some(EXAMPLE + 20 * 86_400));
        assert_eq!(parse_http_date(b"  Sun, 06 Nov 1994 08:49:37 GMT\t", now), Some(EXAMPLE));
    }

    #[test]
    fn http_date_in_the_future_is_the_time_left() {
        let now = NOW_2026;
        let value = b"Tue, 24 Nov 2026 00:01:30 GMT";
        assert_eq!(parse_retry_after(value, now), Some(Duration::from_secs(90)));
        // In the past: retry now.
        assert_eq!(parse_retry_after(b"Sun, 06 Nov 1994 08:49:37 GMT", now), Some(Duration::ZERO));
    }

    #[test]
    fn rfc850_two_digit_years_are_1970_to_2069() {
        // httpdate's fixed window; the old hand-written parser read `76` as 2076 in 2026 (the
        // year within 50 years of now). Both meet RFC 9110 §5.6.7 until 2070.
        let year = |v: &[u8]| parse_http_date(v, NOW_2026).and_then(year_of);
        assert_eq!(year(b"Tuesday, 24-Nov-26 00:00:00 GMT"), Some(2026));
        assert_eq!(year(b"Tuesday, 01-Jan-69 00:00:00 GMT"), Some(2069));
        assert_eq!(year(b"Thursday, 01-Jan-70 00:00:00 GMT"), Some(1970));
        assert_eq!(year(b"Thursday, 01-Jan-76 00:00:00 GMT"), Some(1976));
        assert_eq!(year(b"Friday, 01-Jan-99 00:00:00 GMT"), Some(1999));
    }

    #[test]
    fn leap_days_count_and_leap_seconds_are_refused() {
        let now = NOW_2026;
        // 2000-02-29 is 11 016 days after the epoch.
        assert_eq!(parse_http_date(b"Tue, 29 Feb 2000 00:00:00 GMT", now), Some(11_016 * 86_400));
        assert_eq!(parse_http_date(b"Thu, 29 Feb 2001 00:00:00 GMT", now), None);
        assert_eq!(parse_http_date(b"Mon, 29 Feb 2100 00:00:00 GMT", now), None);
        // httpdate refuses second 60 (the old parser folded it onto :59); a server sending a
        // leap second in Retry-After gets no hint honoured, which only loses the hint.
        assert_eq!(parse_http_date(b"Sat, 31 Dec 2016 23:59:60 GMT", now), None);
        assert!(parse_http_date(b"Sat, 31 Dec 2016 23:59:59 GMT", now).is_some());
    }

    #[test]
    fn malformed_dates_are_refused() {
        for bad in [
            &b"Sun, 06 Nov 1994 08:49:37 UTC"[..],
            b"Sun, 6 Nov 1994 08:49:37 GMT",
            b"Sun, 06 Foo 1994 08:49:37 GMT",
            b"Sun, 06 Nov 1994 24:00:00 GMT",
            b"Sun, 06 Nov 1994 08:60:00 GMT",
            b"Sun, 32 Dec 1994 08:49:37 GMT",
            b"Xyz, 06 Nov 1994 08:49:37 GMT",
            // The day name must agree with the date (6 Nov 1994 was a Sunday).
            b"Mon, 06 Nov 1994 08:49:37 GMT",
            b"Thu Nov 26 08:49:37 1994",
            // Before 1970.
            b"Wed, 31 Dec 1969 23:59:59 GMT",
            b"Sunday, 06-Nov-1994 08:49:37 GMT",
            b"Sun, 06-Nov-94 08:49:37 GMT",
            b"Sun Nov 06 08:49:37 94",
            b"Sun Nov  6 08:49:37 1994 GMT",
            b"Sun, 06 Nov 1994 08:49:37 GMT extra",
            b"\xff\xfe, 06 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_http_date(bad, NOW_2026), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    proptest! {
        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse_retry_after(&bytes, NOW_2026);
        }

        #[test]
        fn parsing_arbitrary_ascii_dates_never_panics(
            day in 0u8..40, month in 0usize..12, year in 0u16..10_000, h in 0u8..30, m in 0u8..70,
        ) {
            const MONTHS: [&str; 12] =
                ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
            let text = format!("Sun, {day:02} {} {year:04} {h:02}:{m:02}:00 GMT", MONTHS[month]);
            let _ = parse_http_date(text.as_bytes(), NOW_2026);
        }
    }
}
