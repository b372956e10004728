//! Durations as `timeout(1)` and systemd write them: `1.5` (seconds),
//! `250ms`, `30s`, `5m`, `1h`, `1d`, `5min 20s`, `infinity`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The largest duration accepted: 100 years. Anything longer is almost
/// certainly a typo, and deadlines computed from it must not overflow.
pub const MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A parsed duration: a finite span or `infinity`.
///
/// What `0` means depends on the option: no timeout for `--timeout`, no
/// waiting for `--wait`, the final signal at once for `--grace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dur {
    /// A finite span (may be zero).
    Finite(Duration),
    /// `infinity`.
    Infinite,
}

impl Dur {
    /// `None` for `infinity` and for zero: the reading of `--timeout`.
    pub fn as_limit(self) -> Option<Duration> {
        match self {
            Dur::Finite(d) if !d.is_zero() => Some(d),
            _ => None,
        }
    }

    /// `None` for `infinity` only.
    pub fn finite(self) -> Option<Duration> {
        match self {
            Dur::Finite(d) => Some(d),
            Dur::Infinite => None,
        }
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dur::Infinite => f.write_str("infinity"),
            Dur::Finite(d) => f.write_str(&format_duration(*d)),
        }
    }
}

/// Short human form: `250ms`, `1.5s`, `10m`, `2h30m`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        if d.as_micros() < 1000 && !d.is_zero() {
            return format!("{:.3}ms", d.as_secs_f64() * 1000.0);
        }
        return format!("{ms}ms");
    }
    if ms < 60_000 {
        let s = d.as_secs_f64();
        return if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            let n = format!("{s:.3}");
            format!("{}s", n.trim_end_matches('0').trim_end_matches('.'))
        };
    }
    let total = d.as_secs();
    let (days, rem) = (total / 86_400, total % 86_400);
    let (h, rem) = (rem / 3600, rem % 3600);
    let (m, s) = (rem / 60, rem % 60);
    let mut out = String::new();
    for (v, unit) in [(days, "d"), (h, "h"), (m, "m"), (s, "s")] {
        if v > 0 {
            out.push_str(&format!("{v}{unit}"));
        }
    }
    out
}

/// Nanoseconds per unit, longest names first within each family.
fn unit_nanos(unit: &str) -> Option<u128> {
    const NS: u128 = 1;
    const US: u128 = 1_000;
    const MS: u128 = 1_000_000;
    const S: u128 = 1_000_000_000;
    Some(match unit {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => S,
        "ns" | "nsec" => NS,
        "us" | "usec" | "µs" => US,
        "ms" | "msec" => MS,
        "m" | "min" | "mins" | "minute" | "minutes" => 60 * S,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600 * S,
        "d" | "day" | "days" => 86_400 * S,
        "w" | "week" | "weeks" => 7 * 86_400 * S,
        _ => return None,
    })
}

/// Parse a duration. Errors are one line and name the offending text.
pub fn parse(text: &str) -> Result<Dur, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if t.eq_ignore_ascii_case("infinity") || t.eq_ignore_ascii_case("inf") {
        return Ok(Dur::Infinite);
    }
    if t.starts_with('-') {
        return Err(format!("negative duration '{t}'"));
    }
    let bytes = t.as_bytes();
    let mut i = 0;
    let mut total: u128 = 0;
    let mut parts = 0;
    while i < bytes.len() {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == bytes.len() {
            break;
        }
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
            i += 1;
        }
        let number = &t[start..i];
        if number.is_empty() {
            return Err(format!("invalid duration '{t}': expected a number"));
        }
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let ustart = i;
        while i < bytes.len() && !bytes[i].is_ascii_digit() && !bytes[i].is_ascii_whitespace() {
            // Multi-byte characters (µ) are whole: advance by char.
            let ch_len = t[i..].chars().next().map_or(1, char::len_utf8);
            i += ch_len;
        }
        let unit = &t[ustart..i];
        let per = unit_nanos(&unit.to_ascii_lowercase()).ok_or_else(|| {
            format!("invalid duration '{t}': unknown unit '{unit}' (use ms, s, m, h, d)")
        })?;
        if unit.is_empty() && parts > 0 {
            return Err(format!("invalid duration '{t}': number without a unit"));
        }
        total = total
            .checked_add(scale(number, per).ok_or_else(|| format!("invalid duration '{t}'"))?)
            .ok_or_else(|| format!("duration '{t}' is too large"))?;
        parts += 1;
        if unit.is_empty() && i < bytes.len() {
            return Err(format!("invalid duration '{t}': number without a unit"));
        }
    }
    let max = MAX.as_nanos();
    if total > max {
        return Err(format!("duration '{t}' is too large (at most 100 years)"));
    }
    let secs = (total / 1_000_000_000) as u64;
    let nanos = (total % 1_000_000_000) as u32;
    Ok(Dur::Finite(Duration::new(secs, nanos)))
}

/// `number` (decimal, optional fraction) times `per` nanoseconds, exactly,
/// rounding sub-nanosecond fractions down. `None` on malformed numbers or
/// overflow.
fn scale(number: &str, per: u128) -> Option<u128> {
    let (int, frac) = match number.split_once('.') {
        Some((i, f)) => (i, f),
        None => (number, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if frac.contains('.') {
        return None;
    }
    let int_v: u128 = if int.is_empty() {
        0
    } else {
        // More than 30 digits cannot be a duration below 100 years.
        if int.len() > 30 {
            return Some(u128::MAX);
        }
        int.parse().ok()?
    };
    let mut v = int_v.checked_mul(per)?;
    let mut place = per;
    for d in frac.bytes().take(30) {
        place /= 10;
        if place == 0 {
            break;
        }
        v = v.checked_add(u128::from(d - b'0') * place)?;
    }
    Some(v)
}

impl FromStr for Dur {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Duration {
        parse(s).unwrap().finite().unwrap()
    }

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(ok("1.5"), Duration::from_millis(1500));
        assert_eq!(ok("250ms"), Duration::from_millis(250));
        assert_eq!(ok("30s"), Duration::from_secs(30));
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("1d"), Duration::from_secs(86400));
        assert_eq!(ok("5min 20s"), Duration::from_secs(320));
        assert_eq!(ok("5min20s"), Duration::from_secs(320));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("100us"), Duration::from_micros(100));
        assert_eq!(parse("infinity").unwrap(), Dur::Infinite);
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "", "-1", "-5s", "abc", "5x", "1..5", "s", "5 5", "1e9", "1.5.5s", "10 s 3",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse("99999999999999999999999999999999999999999d").is_err());
        assert!(parse("101y").is_err());
        assert!(parse("36600d").is_err());
    }

    #[test]
    fn zero_and_infinity_disable_a_limit() {
        assert_eq!(parse("0").unwrap().as_limit(), None);
        assert_eq!(parse("infinity").unwrap().as_limit(), None);
        assert_eq!(
            parse("2s").unwrap().as_limit(),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn formats_short() {
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(2)), "2s");
        assert_eq!(format_duration(Duration::from_secs(600)), "10m");
        assert_eq!(format_duration(Duration::from_secs(9000)), "2h30m");
    }
}
