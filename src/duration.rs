//! Durations exactly as systemd.time(7) writes them: `1.5` (seconds),
//! `250ms`, `30s`, `5min`, `1h 30min`, `55s500ms`, `2 h`, `infinity`, with
//! systemd's case-sensitive units (`m` a minute, `M` a month).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The largest duration accepted: 36500 days (100 years of 365 days).
/// Anything longer is almost certainly a typo, and deadlines computed from
/// it must not overflow.
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

/// Whole milliseconds, saturating (a `Duration` holds more than `u64`
/// milliseconds; locksup's durations never come near).
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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

/// The units of systemd.time(7), with their length in nanoseconds. Case
/// matters: `m` is a minute, `M` a month. A month is a twelfth of a
/// year, and a year 365.25 days, as systemd has them.
pub(crate) const UNITS: [(&str, u128); 32] = [
    ("ns", 1),
    ("nsec", 1),
    ("us", 1_000),
    ("usec", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("msec", 1_000_000),
    ("s", SECOND),
    ("sec", SECOND),
    ("second", SECOND),
    ("seconds", SECOND),
    ("m", 60 * SECOND),
    ("min", 60 * SECOND),
    ("minute", 60 * SECOND),
    ("minutes", 60 * SECOND),
    ("h", 3600 * SECOND),
    ("hr", 3600 * SECOND),
    ("hour", 3600 * SECOND),
    ("hours", 3600 * SECOND),
    ("d", DAY),
    ("day", DAY),
    ("days", DAY),
    ("w", 7 * DAY),
    ("week", 7 * DAY),
    ("weeks", 7 * DAY),
    ("M", YEAR / 12),
    ("month", YEAR / 12),
    ("months", YEAR / 12),
    ("y", YEAR),
    ("year", YEAR),
    ("years", YEAR),
];

const SECOND: u128 = 1_000_000_000;
const DAY: u128 = 86_400 * SECOND;
/// 365.25 days.
const YEAR: u128 = 31_557_600 * SECOND;

/// Whitespace as systemd skips it.
const WS: [char; 4] = [' ', '\t', '\n', '\r'];

/// The length of `unit` in nanoseconds.
fn unit_nanos(unit: &str) -> Option<u128> {
    UNITS.iter().find(|(u, _)| *u == unit).map(|&(_, n)| n)
}

/// What follows a number: a unit, or nothing (seconds).
fn is_unit_char(c: char) -> bool {
    !(c.is_ascii_digit() || WS.contains(&c) || matches!(c, '.' | '+' | '-'))
}

/// Parse a duration, with the grammar of systemd.time(7): one or more
/// components, each a decimal number (`5`, `1.5`, `.5`, an optional
/// leading `+`) and an optional unit from `UNITS` (seconds without
/// one), whitespace allowed around both; the components add up.
/// `infinity` alone is no limit. A positive total below one nanosecond is
/// refused rather than read as zero. Errors are one line and name the
/// offending text.
pub fn parse(text: &str) -> Result<Dur, String> {
    let t = text.trim_matches(WS);
    if t.is_empty() {
        return Err("empty duration".into());
    }
    if t == "infinity" {
        return Ok(Dur::Infinite);
    }
    let invalid = |why: &str| format!("invalid duration '{t}': {why}");
    let too_large = || format!("duration '{t}' is too large (at most {})", MAX_TEXT);
    let mut rest = t;
    let mut total: u128 = 0;
    let mut positive = false;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('-') {
            // `--verbose` is an option that took the place of a value,
            // not a negative number.
            if after.starts_with(|c: char| c.is_ascii_digit() || c == '.' || c == '+') {
                return Err(format!("negative duration '{t}'"));
            }
            return Err(invalid("expected a number"));
        }
        let (plus, r) = match rest.strip_prefix('+') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let int_len = r.bytes().take_while(u8::is_ascii_digit).count();
        let (int, r) = r.split_at(int_len);
        let (frac, r) = match r.strip_prefix('.') {
            Some(after) => {
                let n = after.bytes().take_while(u8::is_ascii_digit).count();
                if n == 0 {
                    return Err(invalid("expected a digit after '.'"));
                }
                (after.split_at(n).0, &after[n..])
            }
            None => ("", r),
        };
        if int.is_empty() && (plus || frac.is_empty()) {
            return Err(invalid("expected a number"));
        }
        let after_ws = r.trim_start_matches(WS);
        let word_len = after_ws
            .find(|c| !is_unit_char(c))
            .unwrap_or(after_ws.len());
        let (word, after_word) = after_ws.split_at(word_len);
        let per = if word.is_empty() {
            // A bare number must end the text or be followed by whitespace:
            // `1.2.3` and `5+3` are not durations.
            if after_ws.len() == r.len() && !r.is_empty() {
                return Err(invalid(&format!("unexpected '{r}'")));
            }
            SECOND
        } else {
            unit_nanos(word).ok_or_else(|| invalid(&unknown_unit(word)))?
        };
        positive |= int.bytes().chain(frac.bytes()).any(|b| b != b'0');
        let part = scale(int, frac, per).ok_or_else(too_large)?;
        total = total.checked_add(part).ok_or_else(too_large)?;
        rest = after_word.trim_start_matches(WS);
    }
    if total > MAX.as_nanos() {
        return Err(too_large());
    }
    if total == 0 && positive {
        return Err(format!(
            "duration '{t}' is below 1ns, the resolution: it would read as 0"
        ));
    }
    let secs = u64::try_from(total / SECOND).map_err(|_| too_large())?;
    let nanos = u32::try_from(total % SECOND).map_err(|_| too_large())?;
    Ok(Dur::Finite(Duration::new(secs, nanos)))
}

/// [`MAX`] as the messages show it.
const MAX_TEXT: &str = "36500d";

/// Why `word` is not a unit, with a hint when only its case is wrong.
fn unknown_unit(word: &str) -> String {
    let lower = word.to_lowercase();
    if lower != word && unit_nanos(&lower).is_some() {
        return format!("unknown unit '{word}' (units are case-sensitive: '{lower}'?)");
    }
    format!("unknown unit '{word}' (use ns, us, ms, s, min, h, d, w, M or y)")
}

/// `int.frac` times `per` nanoseconds, sub-nanosecond digits dropped.
/// `None` when it cannot be a duration below [`MAX`].
fn scale(int: &str, frac: &str, per: u128) -> Option<u128> {
    let int = int.trim_start_matches('0');
    // More than 30 digits cannot be a duration below 100 years, in any
    // unit; 30 digits fit a u128.
    if int.len() > 30 {
        return None;
    }
    let int_v: u128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let mut v = int_v.checked_mul(per)?;
    let mut place = per;
    for d in frac.bytes() {
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
        assert_eq!(ok("1h 30min"), Duration::from_secs(5400));
        assert_eq!(ok("55s500ms"), Duration::from_millis(55_500));
        assert_eq!(ok("2 h"), Duration::from_secs(7200));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok("100us"), Duration::from_micros(100));
        assert_eq!(ok("3 seconds"), Duration::from_secs(3));
        assert_eq!(ok("10sec"), Duration::from_secs(10));
        assert_eq!(ok("48hr"), Duration::from_secs(48 * 3600));
        assert_eq!(ok("1M"), Duration::from_secs(2_629_800));
        assert_eq!(ok("1month"), Duration::from_secs(2_629_800));
        assert_eq!(ok("1y"), Duration::from_secs(31_557_600));
        assert_eq!(ok("2years"), Duration::from_secs(2 * 31_557_600));
        assert_eq!(ok("1w"), Duration::from_secs(7 * 86400));
        assert_eq!(ok("1µs"), Duration::from_micros(1));
        assert_eq!(ok("1μs"), Duration::from_micros(1));
        assert_eq!(ok("1ns"), Duration::from_nanos(1));
        assert_eq!(ok("1.5ns"), Duration::from_nanos(1));
        assert_eq!(parse("infinity").unwrap(), Dur::Infinite);
        assert_eq!(parse(" infinity\t").unwrap(), Dur::Infinite);
    }

    /// What systemd's own parser accepts, with the values it gives
    /// (`systemd-analyze timespan`).
    #[test]
    fn agrees_with_systemd() {
        assert_eq!(ok(" 5s 500ms  "), Duration::from_millis(5500));
        assert_eq!(ok("+3.1s"), Duration::from_millis(3100));
        assert_eq!(ok("3.1s.2"), Duration::from_millis(3300));
        assert_eq!(ok("3.1 .2"), Duration::from_millis(3300));
        assert_eq!(ok("3.1 sec 1.2 sec"), Duration::from_millis(4300));
        assert_eq!(ok("5 5"), Duration::from_secs(10));
        assert_eq!(ok("10 s 3"), Duration::from_secs(13));
        assert_eq!(ok("1h30"), Duration::from_secs(3630));
        assert_eq!(
            ok("300ms20s 5day"),
            Duration::from_millis(5 * 86_400_000 + 20_300)
        );
        assert_eq!(ok(" .50y "), Duration::from_secs(31_557_600 / 2));
        for bad in [
            " xyz ",
            "",
            " . ",
            " 5. ",
            ".s ",
            "-5s ",
            "-0.3s ",
            "-0.0s ",
            "-0.-0s ",
            "0.-0s ",
            "3.-0s ",
            " infinity .7",
            ".3 infinity",
            "3.+1s",
            "3. 1s",
            "3.s",
            "12.34.56",
            "12..34",
            "..1234",
            "1234..",
            "+.5",
            "+ 5",
            "5+3",
            "inf",
            "INFINITY",
            "Infinity",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "-1", "-5s", "abc", "5x", "1..5", "s", "1e9", "1e-10", "1E3", "1.5.5s", "0x10",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse("99999999999999999999999999999999999999999d").is_err());
        assert!(parse("101y").is_err());
        assert!(parse("36600d").is_err());
        assert!(parse(&format!("{}s", MAX.as_secs() + 1)).is_err());
        assert_eq!(ok(&format!("{}s", MAX.as_secs())), MAX);
        assert_eq!(
            ok("000000000000000000000000000000000000001s"),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn units_are_systemds_and_case_sensitive() {
        for bad in [
            "42D", "1H", "1S", "1MS", "1Min", "5mins", "5secs", "2hrs", "1mo", "1yr",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains("unknown unit"), "{bad:?}: {e}");
        }
        assert!(parse("42D").unwrap_err().contains("'d'?"));
        assert_eq!(ok("1m"), Duration::from_secs(60));
        assert_ne!(ok("1M"), ok("1m"));
    }

    #[test]
    fn a_positive_duration_never_reads_as_zero() {
        for tiny in ["0.9ns", "0.5ns 0.4ns", "0.0000000001", ".0000000009s"] {
            let e = parse(tiny).unwrap_err();
            assert!(e.contains("below 1ns"), "{tiny:?}: {e}");
        }
        assert_eq!(ok("0.0ns"), Duration::ZERO);
        assert_eq!(ok("0s 0ms"), Duration::ZERO);
        assert_eq!(ok("0.000000001"), Duration::from_nanos(1));
    }

    #[test]
    fn negative_is_named() {
        assert!(
            parse("-1s")
                .unwrap_err()
                .contains("negative duration '-1s'")
        );
        assert!(parse("1s -1s").unwrap_err().contains("negative"));
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
