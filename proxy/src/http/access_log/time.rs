//! `%START_TIME%` and `%EMIT_TIME%` rendering, always in UTC and without a date library.
//!
//! The default renders as Envoy's `2024-01-01T00:00:00.000Z`. A custom format is parsed once
//! at config time into [`TimeFormat`] pieces: the C-locale strftime conversions, absl's
//! `%E#S`/`%E*S`/`%Ez`/`%E4Y` and `%O` forms, and Envoy's own `%s` (epoch seconds), `%f` (nine
//! fractional digits) and `%1f`..`%9f`. An unknown conversion prints as written, as strftime
//! does. Fractions are truncated, never rounded, like Envoy's.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Envoy's default START_TIME format.
const DEFAULT_FORMAT: &str = "%Y-%m-%dT%H:%M:%E3SZ";

/// Seconds either side of the epoch that are rendered (about ±31,000 years); beyond, clamped.
const MAX_ABS_SECS: i64 = 1_000_000_000_000;

/// A parsed time format.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct TimeFormat {
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Literal(String),
    Field(Field),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Field {
    Year,
    Year4,
    Year2,
    Century,
    Month,
    MonthName,
    MonthShort,
    Day,
    DaySpace,
    DayOfYear,
    Hour,
    HourSpace,
    Hour12,
    Hour12Space,
    AmPm,
    AmPmLower,
    Minute,
    Second,
    /// Seconds with this many fractional digits; `None` is `%E*S` (trailing zeros trimmed).
    SecondFrac(Option<u8>),
    /// Fractional second digits (`%f` is nine).
    Frac(u8),
    Epoch,
    WeekdayName,
    WeekdayShort,
    /// `%u`: Monday is 1, Sunday 7.
    WeekdayMon1,
    /// `%w`: Sunday is 0.
    WeekdaySun0,
    /// `%U`: week of the year, weeks starting on Sunday.
    WeekSun,
    /// `%W`: week of the year, weeks starting on Monday.
    WeekMon,
    IsoWeek,
    IsoYear,
    IsoYear2,
    Offset,
    OffsetColon,
    Zone,
}

impl TimeFormat {
    /// Envoy's default: `2024-01-01T00:00:00.000Z`.
    pub(super) fn envoy_default() -> Self {
        Self::parse(DEFAULT_FORMAT)
    }

    /// Parses a custom format. Envoy rejects a `%n` conversion (the value may end up in a
    /// header); callers check that with [`contains_newline_conversion`] first.
    pub(super) fn parse(format: &str) -> Self {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = format;
        while let Some(at) = rest.find('%') {
            literal.push_str(&rest[..at]);
            let spec = &rest[at + 1..];
            let (expanded, used) = conversion(spec);
            match expanded {
                Conversion::Fields(fields) => {
                    flush(&mut pieces, &mut literal);
                    pieces.extend(fields.iter().map(|f| match f {
                        Ok(field) => Piece::Field(*field),
                        Err(text) => Piece::Literal((*text).to_string()),
                    }));
                }
                Conversion::Text(text) => literal.push_str(text),
                Conversion::Verbatim => {
                    literal.push('%');
                    literal.push_str(&spec[..used]);
                }
            }
            rest = &spec[used..];
        }
        literal.push_str(rest);
        flush(&mut pieces, &mut literal);
        TimeFormat { pieces }
    }

    /// Renders `time` in UTC.
    pub(super) fn render(&self, time: SystemTime) -> String {
        let (secs, nanos) = unix_parts(time);
        let civil = Civil::from_unix(secs);
        let mut out = String::with_capacity(32);
        for piece in &self.pieces {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Field(field) => field_into(&mut out, *field, &civil, secs, nanos),
            }
        }
        out
    }
}

/// Whether Envoy would reject `format` for a newline conversion (`%[-_0^#]*[1-9]*(E|O)?n`).
pub(super) fn contains_newline_conversion(format: &str) -> bool {
    let bytes = format.as_bytes();
    bytes.iter().enumerate().any(|(at, &b)| {
        if b != b'%' {
            return false;
        }
        let mut i = at + 1;
        while i < bytes.len() && matches!(bytes[i], b'-' | b'_' | b'0' | b'^' | b'#') {
            i += 1;
        }
        while i < bytes.len() && (b'1'..=b'9').contains(&bytes[i]) {
            i += 1;
        }
        if i < bytes.len() && matches!(bytes[i], b'E' | b'O') {
            i += 1;
        }
        bytes.get(i) == Some(&b'n')
    })
}

fn flush(pieces: &mut Vec<Piece>, literal: &mut String) {
    if !literal.is_empty() {
        pieces.push(Piece::Literal(std::mem::take(literal)));
    }
}

/// What one conversion stands for.
enum Conversion {
    /// Fields, with literal text between them (`Err`).
    Fields(&'static [Result<Field, &'static str>]),
    /// Fixed text.
    Text(&'static str),
    /// Not a conversion we know: printed as written (`%` plus the bytes used).
    Verbatim,
}

/// Decodes the conversion at the start of `spec` (the text after a `%`); returns it and the
/// number of bytes it spans.
fn conversion(spec: &str) -> (Conversion, usize) {
    use Field::*;
    let bytes = spec.as_bytes();
    let Some(&first) = bytes.first() else {
        return (Conversion::Verbatim, 0);
    };
    let one = |f: &'static [Result<Field, &'static str>]| (Conversion::Fields(f), 1);
    match first {
        b'%' => (Conversion::Text("%"), 1),
        b't' => (Conversion::Text("\t"), 1),
        b'n' => (Conversion::Text("\n"), 1),
        b'E' => extended(bytes),
        b'O' => match bytes.get(1).copied().and_then(simple) {
            Some(fields) => (Conversion::Fields(fields), 2),
            None => (Conversion::Verbatim, 1),
        },
        b'1'..=b'9' if bytes.get(1) == Some(&b'f') => {
            let digits = first - b'0';
            (Conversion::Fields(frac_fields(digits)), 2)
        }
        b'f' => one(&[Ok(Frac(9))]),
        b's' => one(&[Ok(Epoch)]),
        other => match simple(other) {
            Some(fields) => (Conversion::Fields(fields), 1),
            None => (Conversion::Verbatim, 1),
        },
    }
}

/// `%E` forms: `%E#S`, `%E*S`, `%Ez`, `%E4Y` and the locale alternatives that are plain in C.
fn extended(bytes: &[u8]) -> (Conversion, usize) {
    use Field::*;
    match bytes.get(1) {
        Some(b'*') if bytes.get(2) == Some(&b'S') => {
            (Conversion::Fields(&[Ok(SecondFrac(None))]), 3)
        }
        Some(b'z') => (Conversion::Fields(&[Ok(OffsetColon)]), 2),
        Some(b'4') if bytes.get(2) == Some(&b'Y') => (Conversion::Fields(&[Ok(Year4)]), 3),
        Some(d) if d.is_ascii_digit() => {
            let digits = bytes[1..].iter().take_while(|b| b.is_ascii_digit()).count();
            if bytes.get(1 + digits) != Some(&b'S') {
                return (Conversion::Verbatim, 1);
            }
            let precision = std::str::from_utf8(&bytes[1..1 + digits])
                .ok()
                .and_then(|s| s.parse::<u8>().ok())
                .unwrap_or(u8::MAX);
            (
                Conversion::Fields(second_frac_fields(precision)),
                2 + digits,
            )
        }
        Some(c @ (b'c' | b'C' | b'x' | b'X' | b'y' | b'Y')) => match simple(*c) {
            Some(fields) => (Conversion::Fields(fields), 2),
            None => (Conversion::Verbatim, 1),
        },
        _ => (Conversion::Verbatim, 1),
    }
}

/// The single-letter C-locale conversions (composites expand to their parts).
fn simple(c: u8) -> Option<&'static [Result<Field, &'static str>]> {
    use Field::*;
    Some(match c {
        b'Y' => &[Ok(Year)],
        b'y' => &[Ok(Year2)],
        b'C' => &[Ok(Century)],
        b'm' => &[Ok(Month)],
        b'B' => &[Ok(MonthName)],
        b'b' | b'h' => &[Ok(MonthShort)],
        b'd' => &[Ok(Day)],
        b'e' => &[Ok(DaySpace)],
        b'j' => &[Ok(DayOfYear)],
        b'H' => &[Ok(Hour)],
        b'k' => &[Ok(HourSpace)],
        b'I' => &[Ok(Hour12)],
        b'l' => &[Ok(Hour12Space)],
        b'p' => &[Ok(AmPm)],
        b'P' => &[Ok(AmPmLower)],
        b'M' => &[Ok(Minute)],
        b'S' => &[Ok(Second)],
        b'a' => &[Ok(WeekdayShort)],
        b'A' => &[Ok(WeekdayName)],
        b'u' => &[Ok(WeekdayMon1)],
        b'w' => &[Ok(WeekdaySun0)],
        b'U' => &[Ok(WeekSun)],
        b'W' => &[Ok(WeekMon)],
        b'V' => &[Ok(IsoWeek)],
        b'G' => &[Ok(IsoYear)],
        b'g' => &[Ok(IsoYear2)],
        b'z' => &[Ok(Offset)],
        b'Z' => &[Ok(Zone)],
        b'D' | b'x' => &[Ok(Month), Err("/"), Ok(Day), Err("/"), Ok(Year2)],
        b'F' => &[Ok(Year), Err("-"), Ok(Month), Err("-"), Ok(Day)],
        b'T' | b'X' => &[Ok(Hour), Err(":"), Ok(Minute), Err(":"), Ok(Second)],
        b'R' => &[Ok(Hour), Err(":"), Ok(Minute)],
        b'r' => &[
            Ok(Hour12),
            Err(":"),
            Ok(Minute),
            Err(":"),
            Ok(Second),
            Err(" "),
            Ok(AmPm),
        ],
        b'c' => &[
            Ok(WeekdayShort),
            Err(" "),
            Ok(MonthShort),
            Err(" "),
            Ok(DaySpace),
            Err(" "),
            Ok(Hour),
            Err(":"),
            Ok(Minute),
            Err(":"),
            Ok(Second),
            Err(" "),
            Ok(Year),
        ],
        _ => return None,
    })
}

fn frac_fields(digits: u8) -> &'static [Result<Field, &'static str>] {
    use Field::Frac;
    match digits {
        1 => &[Ok(Frac(1))],
        2 => &[Ok(Frac(2))],
        3 => &[Ok(Frac(3))],
        4 => &[Ok(Frac(4))],
        5 => &[Ok(Frac(5))],
        6 => &[Ok(Frac(6))],
        7 => &[Ok(Frac(7))],
        8 => &[Ok(Frac(8))],
        _ => &[Ok(Frac(9))],
    }
}

fn second_frac_fields(precision: u8) -> &'static [Result<Field, &'static str>] {
    use Field::SecondFrac;
    match precision {
        0 => &[Ok(SecondFrac(Some(0)))],
        1 => &[Ok(SecondFrac(Some(1)))],
        2 => &[Ok(SecondFrac(Some(2)))],
        3 => &[Ok(SecondFrac(Some(3)))],
        4 => &[Ok(SecondFrac(Some(4)))],
        5 => &[Ok(SecondFrac(Some(5)))],
        6 => &[Ok(SecondFrac(Some(6)))],
        7 => &[Ok(SecondFrac(Some(7)))],
        8 => &[Ok(SecondFrac(Some(8)))],
        _ => &[Ok(SecondFrac(Some(9)))],
    }
}

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

fn field_into(out: &mut String, field: Field, c: &Civil, secs: i64, nanos: u32) {
    use Field::*;
    // Writing into a String cannot fail.
    let _ = match field {
        Year => write!(out, "{}", c.year),
        Year4 => write!(out, "{:04}", c.year),
        Year2 => write!(out, "{:02}", c.year.rem_euclid(100)),
        Century => write!(out, "{:02}", c.year.div_euclid(100)),
        Month => write!(out, "{:02}", c.month),
        MonthName => write!(
            out,
            "{}",
            name(&MONTHS, c.month.saturating_sub(1), usize::MAX)
        ),
        MonthShort => write!(out, "{}", name(&MONTHS, c.month.saturating_sub(1), 3)),
        Day => write!(out, "{:02}", c.day),
        DaySpace => write!(out, "{:2}", c.day),
        DayOfYear => write!(out, "{:03}", c.yday + 1),
        Hour => write!(out, "{:02}", c.hour),
        HourSpace => write!(out, "{:2}", c.hour),
        Hour12 => write!(out, "{:02}", twelve(c.hour)),
        Hour12Space => write!(out, "{:2}", twelve(c.hour)),
        AmPm => write!(out, "{}", if c.hour < 12 { "AM" } else { "PM" }),
        AmPmLower => write!(out, "{}", if c.hour < 12 { "am" } else { "pm" }),
        Minute => write!(out, "{:02}", c.minute),
        Second => write!(out, "{:02}", c.second),
        SecondFrac(precision) => second_frac(out, c.second, nanos, precision),
        Frac(digits) => write!(out, "{}", frac(nanos, digits)),
        Epoch => write!(out, "{secs}"),
        WeekdayName => write!(out, "{}", name(&WEEKDAYS, c.wday, usize::MAX)),
        WeekdayShort => write!(out, "{}", name(&WEEKDAYS, c.wday, 3)),
        WeekdayMon1 => write!(out, "{}", if c.wday == 0 { 7 } else { c.wday }),
        WeekdaySun0 => write!(out, "{}", c.wday),
        WeekSun => write!(out, "{:02}", (c.yday + 7 - c.wday) / 7),
        WeekMon => write!(out, "{:02}", (c.yday + 7 - (c.wday + 6) % 7) / 7),
        IsoWeek => write!(out, "{:02}", c.iso_week().1),
        IsoYear => write!(out, "{}", c.iso_week().0),
        IsoYear2 => write!(out, "{:02}", c.iso_week().0.rem_euclid(100)),
        Offset => write!(out, "+0000"),
        OffsetColon => write!(out, "+00:00"),
        Zone => write!(out, "UTC"),
    };
}

fn name(names: &[&'static str], index: usize, len: usize) -> &'static str {
    let full = names.get(index).copied().unwrap_or("?");
    full.get(..len).unwrap_or(full)
}

fn twelve(hour: u32) -> u32 {
    match hour % 12 {
        0 => 12,
        h => h,
    }
}

/// The first `digits` fractional digits of `nanos`, zero-padded.
fn frac(nanos: u32, digits: u8) -> String {
    let nine = format!("{nanos:09}");
    nine[..usize::from(digits.min(9))].to_string()
}

fn second_frac(
    out: &mut String,
    second: u32,
    nanos: u32,
    precision: Option<u8>,
) -> std::fmt::Result {
    write!(out, "{second:02}")?;
    match precision {
        Some(0) => Ok(()),
        Some(digits) => write!(out, ".{}", frac(nanos, digits)),
        None => {
            let trimmed = format!("{nanos:09}");
            let trimmed = trimmed.trim_end_matches('0');
            if trimmed.is_empty() {
                Ok(())
            } else {
                write!(out, ".{trimmed}")
            }
        }
    }
}

/// `time` as whole seconds since the epoch (floored) and nanoseconds into that second.
fn unix_parts(time: SystemTime) -> (i64, u32) {
    let (secs, nanos) = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => (
            i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
            after.subsec_nanos(),
        ),
        Err(before) => {
            let d = before.duration();
            let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => (-secs, 0),
                n => (-secs - 1, 1_000_000_000 - n),
            }
        }
    };
    (secs.clamp(-MAX_ABS_SECS, MAX_ABS_SECS), nanos)
}

/// A UTC calendar breakdown of one second.
struct Civil {
    year: i64,
    /// 1..=12.
    month: usize,
    day: u32,
    /// Day of the year, 0-based.
    yday: usize,
    /// Day of the week, Sunday is 0.
    wday: usize,
    hour: u32,
    minute: u32,
    second: u32,
    days: i64,
}

impl Civil {
    fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let of_day = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        // 1970-01-01 was a Thursday.
        let wday = usize::try_from((days + 4).rem_euclid(7)).unwrap_or(0);
        let yday = usize::try_from(days - days_from_civil(year, 1, 1)).unwrap_or(0);
        let part = |v: i64| u32::try_from(v).unwrap_or(0);
        Civil {
            year,
            month: usize::try_from(month).unwrap_or(1),
            day: part(day),
            yday,
            wday,
            hour: part(of_day / 3600),
            minute: part(of_day / 60 % 60),
            second: part(of_day % 60),
            days,
        }
    }

    /// ISO 8601 (year, week): weeks start on Monday and week 1 holds the year's first Thursday.
    fn iso_week(&self) -> (i64, i64) {
        let monday_based = i64::try_from((self.wday + 6) % 7).unwrap_or(0);
        let thursday = self.days - monday_based + 3;
        let (year, _, _) = civil_from_days(thursday);
        let week = (thursday - days_from_civil(year, 1, 1)) / 7 + 1;
        (year, week)
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) to days since 1970-01-01, the inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// 2026-11-22T18:33:14.227951Z, a Sunday (the instant of a real Envoy 1.40 log line).
    fn sample() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_795_372_394, 227_951_000)
    }

    fn render(format: &str) -> String {
        TimeFormat::parse(format).render(sample())
    }

    #[test]
    fn default_format_matches_envoy() {
        assert_eq!(
            TimeFormat::envoy_default().render(sample()),
            "2026-11-22T18:33:14.227Z"
        );
        assert_eq!(
            TimeFormat::envoy_default().render(UNIX_EPOCH),
            "1970-01-01T00:00:00.000Z"
        );
    }

    #[test]
    fn custom_formats_match_envoy_output() {
        // Each expectation is what Envoy 1.40 printed for the same instant.
        assert_eq!(render("%Y-%m-%dT%H:%M:%S%z"), "2026-11-22T18:33:14+0000");
        assert_eq!(render("%s.%3f"), "1795372394.227");
        assert_eq!(render("%f"), "227951000");
        assert_eq!(render("%6f %1f %9f"), "227951 2 227951000");
        assert_eq!(render("%a %b %e %j %y %Z %%"), "Sun Nov 22 326 26 UTC %");
        assert_eq!(
            render("%T %D %F %R %I %p %u %w"),
            "18:33:14 11/22/26 2026-11-22 18:33 06 PM 7 0"
        );
        assert_eq!(render("%E3S %E6S %E*S"), "14.227 14.227951 14.227951");
        assert_eq!(render("%H%"), "18%");
        assert_eq!(
            render("%c|%x|%X|%C|%U|%W|%V|%G|%g|%k|%l|%Ez|%E4Y|%Q|%Ou|%Od|%h|%B|%A|%t|%E0S|%E1S"),
            "Sun Nov 22 18:33:14 2026|11/22/26|18:33:14|20|47|46|47|2026|26|18| 6|+00:00|2026|%Q|7|22|Nov|November|Sunday|\t|14|14.2"
        );
    }

    #[test]
    fn iso_weeks_cross_year_boundaries() {
        // 2021-01-03 (Sunday) belongs to ISO week 53 of 2020; 2024-12-30 to week 1 of 2025.
        let at = |days: i64| {
            TimeFormat::parse("%G-W%V-%u")
                .render(UNIX_EPOCH + Duration::from_secs(days as u64 * 86_400))
        };
        assert_eq!(at(days_from_civil(2021, 1, 3)), "2020-W53-7");
        assert_eq!(at(days_from_civil(2024, 12, 30)), "2025-W01-1");
        assert_eq!(at(days_from_civil(2024, 2, 29)), "2024-W09-4");
    }

    #[test]
    fn civil_conversion_round_trips() {
        for days in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(days_from_civil(2000, 2, 29)), (2000, 2, 29));
    }

    #[test]
    fn times_before_the_epoch_floor_to_the_second() {
        let t = UNIX_EPOCH - Duration::from_millis(1);
        assert_eq!(
            TimeFormat::envoy_default().render(t),
            "1969-12-31T23:59:59.999Z"
        );
        assert_eq!(TimeFormat::parse("%s").render(t), "-1");
    }

    #[test]
    fn newline_conversions_are_detected_like_envoy() {
        assert!(contains_newline_conversion("%n"));
        assert!(contains_newline_conversion("a %-_3En"));
        assert!(contains_newline_conversion("%On"));
        assert!(!contains_newline_conversion("%Y %m n"));
        assert!(!contains_newline_conversion("%N"));
    }
}
