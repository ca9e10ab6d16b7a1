//! Parsing of `Retry-After` (RFC 9110 §10.2.3): either delta-seconds (`120`) or an HTTP-date
//! in any of the three forms of RFC 9110 §5.6.7 — IMF-fixdate (`Sun, 06 Nov 1994 08:49:37
//! GMT`), the obsolete RFC 850 form (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime
//! (`Sun Nov  6 08:49:37 1994`).
//!
//! Why here and by hand: honouring the server's hint is part of the retry policy, the core
//! takes the current wall-clock time as an argument (it never reads a clock), and the grammar
//! is small enough that a date crate is not worth a dependency.

use std::time::Duration;

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

/// An HTTP-date in any of its three forms, as seconds since the UNIX epoch (negative before
/// 1970). `now_unix_secs` places the two-digit year of the RFC 850 form: it is read as the
/// year with those last two digits that lies within 50 years of now (RFC 9110 §5.6.7: a date
/// "more than 50 years in the future" is taken as the most recent such year in the past).
/// The day name is checked for spelling, not for agreement with the date.
pub fn parse_http_date(value: &[u8], now_unix_secs: u64) -> Option<i64> {
    let value = value.trim_ascii();
    let date = if value.get(3) == Some(&b',') {
        imf_fixdate(value)?
    } else if value.get(3) == Some(&b' ') {
        asctime(value)?
    } else {
        rfc850(value, now_unix_secs)?
    };
    date.to_unix()
}

const DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
const LONG_DAYS: [&[u8]; 7] =
    [b"Monday", b"Tuesday", b"Wednesday", b"Thursday", b"Friday", b"Saturday", b"Sunday"];
const MONTHS: [&[u8]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

struct DateTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl DateTime {
    fn to_unix(&self) -> Option<i64> {
        if self.month == 0 || self.month > 12 || self.day == 0 {
            return None;
        }
        if self.day > days_in_month(self.year, self.month) {
            return None;
        }
        // Second 60 is a leap second (RFC 9110 allows it); POSIX time folds it onto :59.
        if self.hour > 23 || self.minute > 59 || self.second > 60 {
            return None;
        }
        let days = days_from_civil(self.year, self.month, self.day);
        let secs = i64::from(self.hour * 3600 + self.minute * 60 + self.second.min(59));
        days.checked_mul(86_400)?.checked_add(secs)
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`
fn imf_fixdate(s: &[u8]) -> Option<DateTime> {
    if s.len() != 29 || !DAYS.contains(&&s[0..3]) || &s[3..5] != b", " {
        return None;
    }
    let day = two_digits(&s[5..7])?;
    expect(s, 7, b" ")?;
    let month = month(&s[8..11])?;
    expect(s, 11, b" ")?;
    let year = i64::from(digits(&s[12..16])?);
    expect(s, 16, b" ")?;
    let (hour, minute, second) = time_of_day(&s[17..25])?;
    expect(s, 25, b" GMT")?;
    Some(DateTime { year, month, day, hour, minute, second })
}

/// `Sunday, 06-Nov-94 08:49:37 GMT`
fn rfc850(s: &[u8], now_unix_secs: u64) -> Option<DateTime> {
    let comma = s.iter().position(|&b| b == b',')?;
    if !LONG_DAYS.contains(&&s[..comma]) {
        return None;
    }
    let s = &s[comma..];
    if s.len() != 24 || &s[..2] != b", " {
        return None;
    }
    let day = two_digits(&s[2..4])?;
    expect(s, 4, b"-")?;
    let month = month(&s[5..8])?;
    expect(s, 8, b"-")?;
    let yy = i64::from(two_digits(&s[9..11])?);
    expect(s, 11, b" ")?;
    let (hour, minute, second) = time_of_day(&s[12..20])?;
    expect(s, 20, b" GMT")?;
    let now_year = year_of(i64::try_from(now_unix_secs).unwrap_or(i64::MAX) / 86_400);
    let mut year = now_year - now_year.rem_euclid(100) + yy;
    if year > now_year + 50 {
        year -= 100;
    } else if year <= now_year - 50 {
        year += 100;
    }
    Some(DateTime { year, month, day, hour, minute, second })
}

/// `Sun Nov  6 08:49:37 1994` (the day is padded with a space, not a zero)
fn asctime(s: &[u8]) -> Option<DateTime> {
    if s.len() != 24 || !DAYS.contains(&&s[0..3]) {
        return None;
    }
    expect(s, 3, b" ")?;
    let month = month(&s[4..7])?;
    expect(s, 7, b" ")?;
    let day = match s[8] {
        b' ' => digits(&s[9..10])?,
        _ => two_digits(&s[8..10])?,
    };
    expect(s, 10, b" ")?;
    let (hour, minute, second) = time_of_day(&s[11..19])?;
    expect(s, 19, b" ")?;
    let year = i64::from(digits(&s[20..24])?);
    Some(DateTime { year, month, day, hour, minute, second })
}

fn expect(s: &[u8], at: usize, literal: &[u8]) -> Option<()> {
    (s.get(at..at + literal.len())? == literal).then_some(())
}

fn month(s: &[u8]) -> Option<u32> {
    MONTHS.iter().position(|m| *m == s).map(|i| i as u32 + 1)
}

fn two_digits(s: &[u8]) -> Option<u32> {
    if s.len() != 2 {
        return None;
    }
    digits(s)
}

fn digits(s: &[u8]) -> Option<u32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0')))
}

/// `HH:MM:SS`
fn time_of_day(s: &[u8]) -> Option<(u32, u32, u32)> {
    if s.len() != 8 || s[2] != b':' || s[5] != b':' {
        return None;
    }
    Some((two_digits(&s[0..2])?, two_digits(&s[3..5])?, two_digits(&s[6..8])?))
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The IMF-fixdate (RFC 9110 §5.6.7) for `unix_secs`, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`:
/// the form a `Date` or `Retry-After` header is sent in.
pub fn format_http_date(unix_secs: u64) -> [u8; 29] {
    const WEEKDAYS: [&[u8; 3]; 7] = [b"Sun", b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    // Past year 9999 the four-digit year no longer fits: such dates are clamped.
    let unix_secs = unix_secs.min(253_402_300_799);
    let days = (unix_secs / 86_400) as i64;
    let secs = unix_secs % 86_400;
    let year = year_of(days);
    let mut month = 1;
    while month < 12 && days_from_civil(year, month + 1, 1) <= days {
        month += 1;
    }
    let day = days - days_from_civil(year, month, 1) + 1;
    // 1970-01-01 was a Thursday.
    let weekday = (days + 4).rem_euclid(7) as usize;
    let two = |v: u64| [b'0' + (v / 10 % 10) as u8, b'0' + (v % 10) as u8];
    let mut out = [b' '; 29];
    out[..3].copy_from_slice(WEEKDAYS[weekday]);
    out[3] = b',';
    out[5..7].copy_from_slice(&two(day as u64));
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
    out[12..14].copy_from_slice(&two(year as u64 / 100));
    out[14..16].copy_from_slice(&two(year as u64 % 100));
    out[17..19].copy_from_slice(&two(secs / 3600));
    out[19] = b':';
    out[20..22].copy_from_slice(&two(secs / 60 % 60));
    out[22] = b':';
    out[23..25].copy_from_slice(&two(secs % 60));
    out[26..29].copy_from_slice(b"GMT");
    out
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (negative before). Counts in
/// 400-year eras, each 146 097 days, with years starting on 1 March so the leap day is last.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y.rem_euclid(400);
    let m = i64::from(month);
    let day_of_year = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The calendar year that day `days` (since 1970-01-01) falls in.
fn year_of(days: i64) -> i64 {
    // Estimate from the mean Gregorian year (146 097 days per 400 years), then correct by at
    // most a year either way.
    let days = days.clamp(-(1 << 40), 1 << 40);
    let mut year = 1970 + (days * 400).div_euclid(146_097);
    while days_from_civil(year, 1, 1) > days {
        year -= 1;
    }
    while days_from_civil(year + 1, 1, 1) <= days {
        year += 1;
    }
    year
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Sun, 06 Nov 1994 08:49:37 GMT, the RFC's example.
    const EXAMPLE: i64 = 784_111_777;
    /// 2026-11-24 00:00:00 UTC.
    const NOW_2026: u64 = 1_795_478_400;

    #[test]
    fn http_dates_are_formatted_as_imf_fixdate() {
        assert_eq!(&format_http_date(EXAMPLE as u64), b"Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(&format_http_date(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(&format_http_date(951_782_400), b"Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(&format_http_date(u64::MAX), b"Fri, 31 Dec 9999 23:59:59 GMT");
    }

    proptest! {
        #[test]
        fn formatted_http_dates_parse_back_to_the_same_second(secs in 0u64..253_402_300_799) {
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
        assert_eq!(parse_http_date(b"Thu Nov 26 08:49:37 1994", now), Some(EXAMPLE + 20 * 86_400));
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
    fn rfc850_two_digit_years_stay_within_fifty_years_of_now() {
        let now = NOW_2026;
        let year = |v: &[u8]| parse_http_date(v, now).map(|s| year_of(s.div_euclid(86_400)));
        assert_eq!(year(b"Tuesday, 24-Nov-26 00:00:00 GMT"), Some(2026));
        assert_eq!(year(b"Monday, 01-Jan-76 00:00:00 GMT"), Some(2076));
        assert_eq!(year(b"Monday, 01-Jan-77 00:00:00 GMT"), Some(1977));
        assert_eq!(year(b"Friday, 01-Jan-99 00:00:00 GMT"), Some(1999));
    }

    #[test]
    fn leap_days_and_leap_seconds() {
        let now = NOW_2026;
        // 2000-02-29 is 11 016 days after the epoch.
        assert_eq!(parse_http_date(b"Tue, 29 Feb 2000 00:00:00 GMT", now), Some(11_016 * 86_400));
        assert_eq!(parse_http_date(b"Thu, 29 Feb 2001 00:00:00 GMT", now), None);
        assert_eq!(parse_http_date(b"Mon, 29 Feb 1900 00:00:00 GMT", now), None);
        // A leap second is accepted and folded onto :59.
        let leap = parse_http_date(b"Sat, 31 Dec 2016 23:59:60 GMT", now);
        assert_eq!(leap, parse_http_date(b"Sat, 31 Dec 2016 23:59:59 GMT", now));
        assert!(leap.is_some());
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

    #[test]
    fn years_are_found_from_days_since_the_epoch() {
        assert_eq!(year_of(0), 1970);
        assert_eq!(year_of(-1), 1969);
        assert_eq!(year_of(365), 1971);
        assert_eq!(year_of(NOW_2026 as i64 / 86_400), 2026);
    }

    fn imf(secs: i64) -> String {
        // Rebuild the IMF-fixdate independently: civil date by stepping through years and
        // months from the epoch.
        let mut days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let weekday = (days + 3).rem_euclid(7) as usize; // 1970-01-01 was a Thursday
        let mut year = 1970;
        while days >= if is_leap(year) { 366 } else { 365 } {
            days -= if is_leap(year) { 366 } else { 365 };
            year += 1;
        }
        let mut month = 1;
        while days >= i64::from(days_in_month(year, month)) {
            days -= i64::from(days_in_month(year, month));
            month += 1;
        }
        let name = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        format!(
            "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
            name(DAYS[weekday]),
            days + 1,
            name(MONTHS[month as usize - 1]),
            year,
            rem / 3600,
            rem / 60 % 60,
            rem % 60
        )
    }

    proptest! {
        #[test]
        fn imf_fixdate_round_trips_any_time_from_1970_to_9999(secs in 0i64..253_402_300_799) {
            let text = imf(secs);
            prop_assert_eq!(parse_http_date(text.as_bytes(), NOW_2026), Some(secs), "{}", text);
        }

        #[test]
        fn parsing_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = parse_retry_after(&bytes, NOW_2026);
        }
    }
}
