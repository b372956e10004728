//! Time for the axis: civil dates from milliseconds since the epoch, the
//! human forms, and the tick steps.

// Pixel and millisecond positions are computed in f64 and cast back; a
// float-to-integer `as` saturates, so nothing wraps.
#![allow(clippy::cast_possible_truncation)]

use super::*;

pub(super) const SECOND: Ms = 1000;
pub(super) const MINUTE: Ms = 60 * SECOND;
pub(super) const HOUR: Ms = 60 * MINUTE;
pub(super) const DAY: Ms = 24 * HOUR;

pub(super) fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

pub(super) fn month_lengths(y: i64) -> [i64; 12] {
    let feb = if is_leap(y) { 29 } else { 28 };
    [31, feb, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
pub(super) fn civil(days: Ms) -> (i64, i64, i64) {
    // From 2000-01-01, the start of a 400-year cycle (146097 days).
    let mut d = days - 10_957;
    let mut year = 2000 + 400 * d.div_euclid(146_097);
    d = d.rem_euclid(146_097);
    let century = |y: i64| if y % 400 == 0 { 36_525 } else { 36_524 };
    while d >= century(year) {
        d -= century(year);
        year += 100;
    }
    let four = |y: i64| if is_leap(y) { 1461 } else { 1460 };
    while d >= four(year) {
        d -= four(year);
        year += 4;
    }
    let len = |y: i64| if is_leap(y) { 366 } else { 365 };
    while d >= len(year) {
        d -= len(year);
        year += 1;
    }
    let mut month = 1;
    for m in month_lengths(year) {
        if d < m {
            break;
        }
        d -= m;
        month += 1;
    }
    (year, month, d + 1)
}

/// (year, month, day) to days since 1970-01-01, for years from 1970.
pub(super) fn days_from_civil(y: i64, m: i64, d: i64) -> Ms {
    let leaps_before = |y: i64| (y - 1) / 4 - (y - 1) / 100 + (y - 1) / 400;
    let mut days = 365 * (y - 1970) + leaps_before(y) - leaps_before(1970);
    days += month_lengths(y)
        .iter()
        .take((m - 1).clamp(0, 11) as usize)
        .sum::<i64>();
    days + d - 1
}

/// `2026-11-24`.
pub(super) fn date(t: Ms) -> String {
    let (y, m, d) = civil(t.div_euclid(DAY));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `08:03:33.123`.
pub(super) fn clock(t: Ms) -> String {
    let ms = t.rem_euclid(DAY);
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / HOUR,
        ms / MINUTE % 60,
        ms / SECOND % 60,
        ms % SECOND
    )
}

/// `2026-11-24 08:03:33.123`.
pub(super) fn stamp(t: Ms) -> String {
    format!("{} {}", date(t), clock(t))
}

/// A duration for people: `0.25 ms`, `850 ms`, `2.41 s`, `3 min 20 s`,
/// `2 h 5 min`, `3 d 4 h`.
pub(super) fn human(ms: f64) -> String {
    let ms = ms.max(0.0);
    if ms == 0.0 {
        return "0 ms".to_owned();
    }
    if ms < 1.0 {
        return format!("{ms:.2} ms");
    }
    if ms < 10.0 {
        return format!("{ms:.1} ms");
    }
    if ms < 1000.0 {
        return format!("{ms:.0} ms");
    }
    let s = ms / 1000.0;
    if s < 10.0 {
        return format!("{s:.2} s");
    }
    if s < 60.0 {
        return format!("{s:.1} s");
    }
    let s = s.round() as i64;
    if s < 3600 {
        return format!("{} min {} s", s / 60, s % 60);
    }
    if s < 86_400 {
        return format!("{} h {} min", s / 3600, s / 60 % 60);
    }
    format!("{} d {} h", s / 86_400, s / 3600 % 24)
}

/// The spacing of the time axis's ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Ms(Ms),
    Months(i64),
}

pub(super) const STEPS: [Step; 47] = [
    Step::Ms(1),
    Step::Ms(2),
    Step::Ms(5),
    Step::Ms(10),
    Step::Ms(20),
    Step::Ms(50),
    Step::Ms(100),
    Step::Ms(200),
    Step::Ms(500),
    Step::Ms(SECOND),
    Step::Ms(2 * SECOND),
    Step::Ms(5 * SECOND),
    Step::Ms(10 * SECOND),
    Step::Ms(15 * SECOND),
    Step::Ms(30 * SECOND),
    Step::Ms(MINUTE),
    Step::Ms(2 * MINUTE),
    Step::Ms(5 * MINUTE),
    Step::Ms(10 * MINUTE),
    Step::Ms(15 * MINUTE),
    Step::Ms(30 * MINUTE),
    Step::Ms(HOUR),
    Step::Ms(2 * HOUR),
    Step::Ms(3 * HOUR),
    Step::Ms(6 * HOUR),
    Step::Ms(12 * HOUR),
    Step::Ms(DAY),
    Step::Ms(2 * DAY),
    Step::Ms(7 * DAY),
    Step::Ms(14 * DAY),
    Step::Months(1),
    Step::Months(3),
    Step::Months(6),
    Step::Months(12),
    Step::Months(24),
    Step::Months(60),
    Step::Months(120),
    Step::Months(240),
    Step::Months(600),
    Step::Months(1200),
    Step::Months(2400),
    Step::Months(6000),
    Step::Months(12_000),
    Step::Months(24_000),
    Step::Months(60_000),
    Step::Months(120_000),
    Step::Months(240_000),
];

impl Step {
    pub(super) fn approx_ms(self) -> f64 {
        match self {
            Step::Ms(ms) => ms as f64,
            Step::Months(n) => n as f64 * 30.436_875 * DAY as f64,
        }
    }

    /// The smallest step that makes at most `max` ticks over `span` ms.
    pub(super) fn for_span(span: f64, max: f64) -> Step {
        STEPS
            .into_iter()
            .find(|s| span / s.approx_ms() <= max)
            .unwrap_or(Step::Months(240_000))
    }

    /// The ticks in `[lo, hi]`, on round UTC times.
    pub(super) fn ticks(self, lo: Ms, hi: Ms) -> Vec<Ms> {
        let mut out = Vec::new();
        match self {
            Step::Ms(step) => {
                let mut t = lo.div_euclid(step) * step;
                if t < lo {
                    t += step;
                }
                while t <= hi && out.len() < 64 {
                    out.push(t);
                    t += step;
                }
            }
            Step::Months(n) => {
                let (y, m, d) = civil(lo.div_euclid(DAY));
                let mut index = y * 12 + m - 1;
                if d > 1 || lo.rem_euclid(DAY) > 0 {
                    index += 1;
                }
                index = (index + n - 1).div_euclid(n) * n;
                while out.len() < 64 {
                    let t =
                        days_from_civil(index.div_euclid(12), index.rem_euclid(12) + 1, 1) * DAY;
                    if t > hi {
                        break;
                    }
                    out.push(t);
                    index += n;
                }
            }
        }
        out
    }

    /// A tick's label: (time, the date when it changes, or the year).
    pub(super) fn label(self, t: Ms) -> String {
        let c = clock(t);
        match self {
            Step::Ms(s) if s < SECOND => c,
            Step::Ms(s) if s < MINUTE => c[..8].to_owned(),
            Step::Ms(s) if s < DAY => c[..5].to_owned(),
            Step::Ms(_) => {
                let (_, m, d) = civil(t.div_euclid(DAY));
                format!("{m:02}-{d:02}")
            }
            Step::Months(n) => {
                let (y, m, _) = civil(t.div_euclid(DAY));
                if n < 12 {
                    format!("{y:04}-{m:02}")
                } else {
                    format!("{y:04}")
                }
            }
        }
    }

    /// What a second line under a tick shows when it changes: the date,
    /// or the year for steps of days.
    pub(super) fn context(self, t: Ms) -> Option<String> {
        match self {
            Step::Ms(s) if s < DAY => Some(date(t)),
            Step::Ms(_) => Some(format!("{:04}", civil(t.div_euclid(DAY)).0)),
            Step::Months(_) => None,
        }
    }
}
