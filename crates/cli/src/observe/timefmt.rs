//! Time handling for `twill observe`, without a date library: parsing
//! `--since`/`--until` the way Hubble does (a Go duration counted back from
//! now, or one of Hubble's absolute layouts), and printing timestamps the way
//! Hubble prints them (Go's `StampMilli` for text output, protojson's
//! RFC 3339 form for JSON).

use std::time::{SystemTime, UNIX_EPOCH};

use twill_observe_proto::prost_types::Timestamp;

const MONTHS: [&str; 12] =
    ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const WEEKDAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Seconds of 0001-01-01T00:00:00Z and of 9999-12-31T23:59:59Z, the range
/// a protobuf Timestamp may hold.
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day counted from 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

fn civil(seconds: i64) -> Civil {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400) as u32;
    let (year, month, day) = civil_from_days(days);
    Civil { year, month, day, hour: secs / 3600, minute: secs / 60 % 60, second: secs % 60 }
}

/// Whether `ts` is a valid protobuf Timestamp (Go's `Timestamp.IsValid`).
pub fn is_valid(ts: &Timestamp) -> bool {
    (MIN_SECONDS..=MAX_SECONDS).contains(&ts.seconds) && (0..1_000_000_000).contains(&ts.nanos)
}

/// Go's `time.StampMilli` (`Jan _2 15:04:05.000`) in UTC, or `N/A` for a
/// missing or invalid timestamp, as Hubble's text outputs print flow times.
pub fn stamp_milli(ts: Option<&Timestamp>) -> String {
    match ts {
        Some(ts) if is_valid(ts) => {
            let c = civil(ts.seconds);
            format!(
                "{} {:>2} {:02}:{:02}:{:02}.{:03}",
                MONTHS[c.month as usize - 1],
                c.day,
                c.hour,
                c.minute,
                c.second,
                ts.nanos / 1_000_000
            )
        }
        _ => "N/A".into(),
    }
}

/// A Timestamp as protojson writes it: RFC 3339 in UTC with a `Z`, and 0, 3,
/// 6 or 9 fractional digits, whichever is the shortest exact form.
pub fn rfc3339_proto(ts: &Timestamp) -> String {
    let c = civil(ts.seconds);
    let mut out =
        format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", c.year, c.month, c.day, c.hour, c.minute, c.second);
    let nanos = ts.nanos.rem_euclid(1_000_000_000);
    if nanos != 0 {
        if nanos % 1_000_000 == 0 {
            out.push_str(&format!(".{:03}", nanos / 1_000_000));
        } else if nanos % 1_000 == 0 {
            out.push_str(&format!(".{:06}", nanos / 1_000));
        } else {
            out.push_str(&format!(".{nanos:09}"));
        }
    }
    out.push('Z');
    out
}

/// RFC 1123 with numeric zone (Go's `time.RFC1123Z`) in UTC, to check the
/// parser against.
#[cfg(test)]
pub fn rfc1123z(seconds: i64) -> String {
    let c = civil(seconds);
    // 1970-01-01 was a Thursday.
    let weekday = (seconds.div_euclid(86_400) + 3).rem_euclid(7) as usize;
    format!(
        "{}, {:02} {} {:04} {:02}:{:02}:{:02} +0000",
        WEEKDAYS[weekday],
        c.day,
        MONTHS[c.month as usize - 1],
        c.year,
        c.hour,
        c.minute,
        c.second
    )
}

/// Nanoseconds of a Go duration string (`300ms`, `-1.5h`, `2h45m`, `0`), as
/// `time.ParseDuration` reads it.
pub fn parse_go_duration(input: &str) -> Result<i128, String> {
    let err = || format!("time: invalid duration \"{input}\"");
    let (negative, mut s) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(err());
    }
    let mut total: i128 = 0;
    while !s.is_empty() {
        let int_len = s.bytes().take_while(u8::is_ascii_digit).count();
        let (int_part, rest) = s.split_at(int_len);
        let (frac_part, rest) = match rest.strip_prefix('.') {
            Some(r) => {
                let n = r.bytes().take_while(u8::is_ascii_digit).count();
                r.split_at(n)
            }
            None => ("", rest),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(err());
        }
        let unit_len = rest.find(|c: char| c == '.' || c.is_ascii_digit()).unwrap_or(rest.len());
        let (unit, rest) = rest.split_at(unit_len);
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            "" => return Err(format!("time: missing unit in duration \"{input}\"")),
            other => return Err(format!("time: unknown unit \"{other}\" in duration \"{input}\"")),
        };
        let whole: i128 = if int_part.is_empty() { 0 } else { int_part.parse().map_err(|_| err())? };
        let mut value = whole.checked_mul(scale).ok_or_else(err)?;
        if !frac_part.is_empty() {
            // Go keeps the fraction exact down to the nanosecond.
            let digits = &frac_part[..frac_part.len().min(18)];
            let frac: i128 = digits.parse().map_err(|_| err())?;
            value += frac * scale / 10i128.pow(digits.len() as u32);
        }
        total = total.checked_add(value).ok_or_else(err)?;
        if total > i128::from(i64::MAX) {
            return Err(err());
        }
        s = rest;
    }
    Ok(if negative { -total } else { total })
}

fn timestamp_from_nanos(nanos: i128) -> Timestamp {
    Timestamp {
        seconds: nanos.div_euclid(1_000_000_000) as i64,
        nanos: nanos.rem_euclid(1_000_000_000) as i32,
    }
}

/// Nanoseconds since the epoch of `now`.
pub fn nanos_since_epoch(now: SystemTime) -> i128 {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// Hubble's `--since`/`--until` value: a duration counted back from `now`
/// (`5m`, `30s`, `1h30m`), or an absolute time in one of the layouts Hubble
/// accepts: `2006-01-02`, `2006-01-02T15Z07:00`, `2006-01-02T15:04Z07:00`,
/// RFC 3339 with an optional fraction, or RFC 1123 with a numeric zone.
pub fn parse_time(input: &str, now: SystemTime) -> Result<Timestamp, String> {
    if let Ok(d) = parse_go_duration(input) {
        return Ok(timestamp_from_nanos(nanos_since_epoch(now) - d));
    }
    let parsed = parse_absolute(input).ok_or_else(|| format!("failed to convert {input} to time"))?;
    if !is_valid(&parsed) {
        return Err(format!("{input}: time out of range"));
    }
    Ok(parsed)
}

struct Cursor<'a> {
    s: &'a [u8],
}

impl Cursor<'_> {
    fn digits(&mut self, n: usize) -> Option<u32> {
        if self.s.len() < n || !self.s[..n].iter().all(u8::is_ascii_digit) {
            return None;
        }
        let v = self.s[..n].iter().fold(0u32, |acc, b| acc * 10 + u32::from(b - b'0'));
        self.s = &self.s[n..];
        Some(v)
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.s.first() == Some(&c) {
            self.s = &self.s[1..];
            true
        } else {
            false
        }
    }

    fn eat_str(&mut self, word: &str) -> bool {
        if self.s.starts_with(word.as_bytes()) {
            self.s = &self.s[word.len()..];
            true
        } else {
            false
        }
    }

    /// `Z` or `±hh:mm`, as seconds east of UTC.
    fn zone_colon(&mut self) -> Option<i64> {
        if self.eat(b'Z') {
            return Some(0);
        }
        let sign = if self.eat(b'+') {
            1
        } else if self.eat(b'-') {
            -1
        } else {
            return None;
        };
        let h = self.digits(2)?;
        if !self.eat(b':') {
            return None;
        }
        let m = self.digits(2)?;
        Some(sign * i64::from(h * 3600 + m * 60))
    }
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn make_timestamp(date: (i64, u32, u32), hms: (u32, u32, u32), nanos: u32, offset: i64) -> Option<Timestamp> {
    let (y, mo, d) = date;
    let (h, mi, s) = hms;
    if !(1..=12).contains(&mo) || d == 0 || d > days_in_month(y, mo) || h > 23 || mi > 59 || s > 59 {
        return None;
    }
    let seconds = days_from_civil(y, mo, d) * 86_400 + i64::from(h * 3600 + mi * 60 + s) - offset;
    Some(Timestamp { seconds, nanos: nanos as i32 })
}

fn parse_absolute(input: &str) -> Option<Timestamp> {
    if let Some(ts) = parse_rfc1123z(input) {
        return Some(ts);
    }
    let mut c = Cursor { s: input.as_bytes() };
    let y = c.digits(4)?;
    if !c.eat(b'-') {
        return None;
    }
    let mo = c.digits(2)?;
    if !c.eat(b'-') {
        return None;
    }
    let d = c.digits(2)?;
    let date = (i64::from(y), mo, d);
    if c.s.is_empty() {
        return make_timestamp(date, (0, 0, 0), 0, 0);
    }
    if !c.eat(b'T') {
        return None;
    }
    let h = c.digits(2)?;
    if !c.eat(b':') {
        // 2006-01-02T15Z07:00
        let offset = c.zone_colon()?;
        return if c.s.is_empty() { make_timestamp(date, (h, 0, 0), 0, offset) } else { None };
    }
    let mi = c.digits(2)?;
    if !c.eat(b':') {
        // 2006-01-02T15:04Z07:00
        let offset = c.zone_colon()?;
        return if c.s.is_empty() { make_timestamp(date, (h, mi, 0), 0, offset) } else { None };
    }
    let s = c.digits(2)?;
    let mut nanos = 0u32;
    if c.eat(b'.') || c.eat(b',') {
        let n = c.s.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 || n > 9 {
            return None;
        }
        let frac = c.digits(n)?;
        nanos = frac * 10u32.pow(9 - n as u32);
    }
    let offset = c.zone_colon()?;
    if !c.s.is_empty() {
        return None;
    }
    make_timestamp(date, (h, mi, s), nanos, offset)
}

/// `Mon, 02 Jan 2006 15:04:05 -0700`.
fn parse_rfc1123z(input: &str) -> Option<Timestamp> {
    let mut c = Cursor { s: input.as_bytes() };
    if !WEEKDAYS.iter().any(|w| c.eat_str(w)) || !c.eat_str(", ") {
        return None;
    }
    let d = c.digits(2)?;
    if !c.eat(b' ') {
        return None;
    }
    let mo = MONTHS.iter().position(|m| c.eat_str(m))? as u32 + 1;
    if !c.eat(b' ') {
        return None;
    }
    let y = c.digits(4)?;
    if !c.eat(b' ') {
        return None;
    }
    let h = c.digits(2)?;
    if !c.eat(b':') {
        return None;
    }
    let mi = c.digits(2)?;
    if !c.eat(b':') {
        return None;
    }
    let s = c.digits(2)?;
    if !c.eat(b' ') {
        return None;
    }
    let sign = if c.eat(b'+') {
        1
    } else if c.eat(b'-') {
        -1
    } else {
        return None;
    };
    let zh = c.digits(2)?;
    let zm = c.digits(2)?;
    if !c.s.is_empty() {
        return None;
    }
    make_timestamp((i64::from(y), mo, d), (h, mi, s), 0, sign * i64::from(zh * 3600 + zm * 60))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ts(seconds: i64, nanos: i32) -> Timestamp {
        Timestamp { seconds, nanos }
    }

    #[test]
    fn civil_roundtrip() {
        for days in [-719_468, -1, 0, 1, 10_957, 20_779, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2026, 11, 22), 20_779);
    }

    #[test]
    fn stamp_milli_matches_go() {
        // 2026-11-22T00:26:08.529Z
        let t = ts(20_779 * 86_400 + 26 * 60 + 8, 529_999_999);
        assert_eq!(stamp_milli(Some(&t)), "Nov 22 00:26:08.529");
        // Go's `_2` pads single-digit days with a space.
        let t = ts(days_from_civil(2026, 8, 6) * 86_400 + 6 * 3600 + 50 * 60 + 26, 228_000_000);
        assert_eq!(stamp_milli(Some(&t)), "Aug  6 06:50:26.228");
        assert_eq!(stamp_milli(None), "N/A");
        assert_eq!(stamp_milli(Some(&ts(0, -1))), "N/A");
    }

    #[test]
    fn rfc3339_fraction_digits() {
        let base = 20_779 * 86_400 + 26 * 60 + 8;
        assert_eq!(rfc3339_proto(&ts(base, 0)), "2026-11-22T00:26:08Z");
        assert_eq!(rfc3339_proto(&ts(base, 529_000_000)), "2026-11-22T00:26:08.529Z");
        assert_eq!(rfc3339_proto(&ts(base, 529_100_000)), "2026-11-22T00:26:08.529100Z");
        assert_eq!(rfc3339_proto(&ts(base, 529_100_001)), "2026-11-22T00:26:08.529100001Z");
        assert_eq!(rfc3339_proto(&ts(base, 1_000)), "2026-11-22T00:26:08.000001Z");
        assert_eq!(rfc3339_proto(&ts(-1, 0)), "1969-12-31T23:59:59Z");
        assert_eq!(rfc1123z(base), "Sun, 22 Nov 2026 00:26:08 +0000");
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("5m"), Ok(300_000_000_000));
        assert_eq!(parse_go_duration("30s"), Ok(30_000_000_000));
        assert_eq!(parse_go_duration("1h"), Ok(3_600_000_000_000));
        assert_eq!(parse_go_duration("1h30m"), Ok(5_400_000_000_000));
        assert_eq!(parse_go_duration("1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_go_duration(".5ms"), Ok(500_000));
        assert_eq!(parse_go_duration("-2m"), Ok(-120_000_000_000));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("250us"), Ok(250_000));
        assert_eq!(parse_go_duration("1.h"), Ok(3_600_000_000_000), "Go accepts a bare trailing dot");
        for bad in ["", "5", "m", "5x", ".h", "-", "2026-01-01"] {
            assert!(parse_go_duration(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn since_until_values() {
        let now = UNIX_EPOCH + Duration::new(1_000_000, 250);
        assert_eq!(parse_time("5m", now), Ok(ts(1_000_000 - 300, 250)));
        assert_eq!(parse_time("30s", now), Ok(ts(1_000_000 - 30, 250)));
        assert_eq!(parse_time("1h", now), Ok(ts(1_000_000 - 3600, 250)));

        let base = 20_779 * 86_400 + 26 * 60 + 8;
        assert_eq!(parse_time("2026-11-22T00:26:08Z", now), Ok(ts(base, 0)));
        assert_eq!(parse_time("2026-11-22T00:26:08.529Z", now), Ok(ts(base, 529_000_000)));
        assert_eq!(parse_time("2026-11-22T02:26:08.000000001+02:00", now), Ok(ts(base, 1)));
        assert_eq!(parse_time("2026-11-21T19:26:08-05:00", now), Ok(ts(base, 0)));
        assert_eq!(parse_time("2026-11-22", now), Ok(ts(20_779 * 86_400, 0)));
        assert_eq!(parse_time("2026-11-22T00Z", now), Ok(ts(20_779 * 86_400, 0)));
        assert_eq!(parse_time("2026-11-22T00:26Z", now), Ok(ts(base - 8, 0)));
        assert_eq!(parse_time("Sun, 22 Nov 2026 00:26:08 +0000", now), Ok(ts(base, 0)));
        assert_eq!(parse_time("Sun, 22 Nov 2026 01:26:08 +0100", now), Ok(ts(base, 0)));
        for bad in ["yesterday", "2026-13-01", "2026-02-30", "2026-11-22T00:26:08", "2026-11-22 00:26:08Z"] {
            assert_eq!(parse_time(bad, now), Err(format!("failed to convert {bad} to time")));
        }
    }
}
