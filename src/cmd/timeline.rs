//! `locksup timeline`: draw the lifecycle events of attempts (the JSON
//! lines of `locksup run --events`) as an SVG: one lane per lock, one bar
//! per attempt from acquisition to release, coloured by outcome, with its
//! wait before it and marks for signals, a stopped heartbeat, leaks and a
//! lost lease, on a wall-clock (UTC) time axis.
//!
//! The pipeline is a stream of parsed [`Event`]s ([`JsonLines`] makes them
//! from JSON lines; another source, such as the daemon's history, only has
//! to produce `Event`s too), folded by a [`Builder`] into one summary of
//! bounded size per attempt, then laid out and written by [`render`].
//!
//! Aggregation: a lane is drawn attempt by attempt while it has at most one
//! attempt per [`AGG_PX`] pixels of plot width, and few of its bars (at
//! most [`MAX_OVERLAPS`], or a quarter) would be drawn over another one of
//! the same row once bars under 1 px are widened to 1 px: shared holds, or
//! attempts too short for the time axis. Otherwise the lane is aggregated into
//! columns [`AGG_PX`] pixels wide: each column stacks the outcomes of the
//! attempts whose bar touches it, in proportion to their counts, shaded by
//! how many there are (relative to the lane's busiest column); a strip
//! below shows how many attempts were waiting; marks appear once per
//! column; the column's `<title>` carries the counts. More than
//! [`MAX_LANES`] locks: the busiest get their own lanes, the others share
//! one last lane.

// Pixel and millisecond positions are computed in f64 and cast back; a
// float-to-integer `as` saturates, so nothing wraps.
#![allow(clippy::cast_possible_truncation)]

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde_json::Value;

use crate::cli::TimelineArgs;
use crate::error::{Error, Result};

/// Exit status when the input holds no event.
pub(crate) const NO_EVENTS: i32 = 1;

/// Milliseconds since the Unix epoch.
pub(crate) type Ms = i64;

/// Longest input line read; a longer one is skipped as malformed.
const MAX_LINE: usize = 64 * 1024;
/// Longest attempt id, lock path, command, error kept (characters).
const MAX_ID: usize = 128;
const MAX_LOCK: usize = 1024;
const MAX_TEXT: usize = 240;
const MAX_NAME: usize = 32;

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

/// One lifecycle event, parsed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    /// When, in milliseconds since the epoch (UTC).
    pub ts: Ms,
    /// As in the input: the [`Builder`] cleans and cuts it.
    pub attempt_id: String,
    /// As in the input, like `attempt_id`.
    pub lock: String,
    pub kind: Kind,
}

/// What happened, with the fields the timeline uses.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Waiting,
    Acquired {
        wait_ms: Option<f64>,
    },
    Started {
        /// The command line, when the event carries one.
        command: Option<String>,
    },
    Signal {
        signal: String,
        reason: String,
    },
    Exited {
        status: Option<i64>,
        signal: Option<String>,
    },
    Released,
    Leak,
    Conflict {
        reason: String,
    },
    Heartbeat,
    /// The lock's lease was lost (a distributed lock backend): an event of
    /// that name, or one whose `reason` is `lease-lost`.
    LeaseLost,
    End {
        exit_code: Option<i64>,
        outcome: String,
        error: Option<String>,
    },
    /// Anything else (`status`, `ready`, `extended`, events of later
    /// versions): it only widens the attempt's span.
    Other,
}

const LEASE_LOST: &str = "lease-lost";

/// Keep at most `max` characters, with control characters made harmless
/// (whitespace becomes a space, the rest U+FFFD): they are not all valid
/// in XML, and a title is one line per item.
fn clean(s: &str, max: usize) -> String {
    if s.len() <= max && s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len().min(max * 4));
    for (n, c) in s.chars().enumerate() {
        if n == max {
            out.push('…');
            break;
        }
        out.push(match c {
            '\t' | '\n' | '\r' => ' ',
            c if c.is_control() || c == '\u{fffe}' || c == '\u{ffff}' => '\u{fffd}',
            c => c,
        });
    }
    out
}

/// `2026-11-24T08:03:33.123Z` to milliseconds since the epoch.
fn parse_ts(s: &str) -> Option<Ms> {
    let t = humantime::parse_rfc3339(s).ok()?;
    i64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()
}

/// A command from `started`: a string, or an array of strings (argv).
fn command_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(clean(s, MAX_TEXT)),
        Value::Array(a) => {
            let words: Vec<&str> = a.iter().filter_map(Value::as_str).take(64).collect();
            (!words.is_empty()).then(|| clean(&words.join(" "), MAX_TEXT))
        }
        _ => None,
    }
}

/// The fields of an event line the timeline reads. The envelope must be
/// strings; the rest is read leniently (a field of an unexpected type is
/// ignored, not a reason to drop the line).
#[derive(serde::Deserialize)]
struct RawEvent<'a> {
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    attempt_id: Cow<'a, str>,
    #[serde(borrow)]
    lock: Cow<'a, str>,
    #[serde(default)]
    reason: Option<Value>,
    #[serde(default)]
    signal: Option<Value>,
    #[serde(default)]
    wait_ms: Option<Value>,
    #[serde(default)]
    status: Option<Value>,
    #[serde(default)]
    exit_code: Option<Value>,
    #[serde(default)]
    outcome: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    command: Option<Value>,
    #[serde(default)]
    argv: Option<Value>,
}

/// One JSON line to an event; `None` when it is not one (not JSON, not an
/// object, or without a valid `ts`, `event`, `attempt_id` and `lock`).
pub(crate) fn parse_line(line: &[u8]) -> Option<Event> {
    let raw: RawEvent<'_> = serde_json::from_slice(line).ok()?;
    let ts = parse_ts(&raw.ts)?;
    if raw.attempt_id.is_empty() {
        return None;
    }
    let name = |v: &Option<Value>| {
        v.as_ref()
            .and_then(Value::as_str)
            .map(|s| clean(s, MAX_NAME))
    };
    let reason = name(&raw.reason).unwrap_or_default();
    let kind = match raw.event.as_ref() {
        "waiting" => Kind::Waiting,
        "acquired" => Kind::Acquired {
            wait_ms: raw
                .wait_ms
                .as_ref()
                .and_then(Value::as_f64)
                .filter(|w| (0.0..=1e12).contains(w)),
        },
        "started" => Kind::Started {
            command: command_of(raw.command.as_ref().or(raw.argv.as_ref())),
        },
        "signal" => Kind::Signal {
            signal: name(&raw.signal).unwrap_or_else(|| "?".to_owned()),
            reason,
        },
        "exited" => Kind::Exited {
            status: raw.status.as_ref().and_then(Value::as_i64),
            signal: name(&raw.signal),
        },
        "released" => Kind::Released,
        "leak" => Kind::Leak,
        "conflict" => Kind::Conflict { reason },
        "heartbeat" => Kind::Heartbeat,
        "end" => Kind::End {
            exit_code: raw.exit_code.as_ref().and_then(Value::as_i64),
            outcome: name(&raw.outcome).unwrap_or_default(),
            error: raw
                .error
                .as_ref()
                .and_then(Value::as_str)
                .map(|s| clean(s, MAX_TEXT)),
        },
        "lease-lost" | "lease_lost" => Kind::LeaseLost,
        _ if reason == LEASE_LOST => Kind::LeaseLost,
        _ => Kind::Other,
    };
    Some(Event {
        ts,
        attempt_id: raw.attempt_id.into_owned(),
        lock: raw.lock.into_owned(),
        kind,
    })
}

enum Line {
    Text,
    TooLong,
    Eof,
}

/// Read one line (without its newline) into `buf`, at most [`MAX_LINE`]
/// bytes of it: a longer line is consumed but not kept.
fn next_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<Line> {
    buf.clear();
    let n = r
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(Line::Eof);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_LINE {
        buf.clear();
        r.skip_until(b'\n')?;
        return Ok(Line::TooLong);
    }
    Ok(Line::Text)
}

/// The events of a JSON-lines stream; malformed lines are skipped and
/// counted, blank ones ignored.
pub(crate) struct JsonLines<R> {
    reader: R,
    buf: Vec<u8>,
    /// Lines skipped so far.
    pub malformed: u64,
}

impl<R: BufRead> JsonLines<R> {
    pub(crate) fn new(reader: R) -> Self {
        Self {
            reader,
            buf: Vec::new(),
            malformed: 0,
        }
    }
}

impl<R: BufRead> Iterator for JsonLines<R> {
    type Item = io::Result<Event>;

    fn next(&mut self) -> Option<io::Result<Event>> {
        loop {
            match next_line(&mut self.reader, &mut self.buf) {
                Err(e) => return Some(Err(e)),
                Ok(Line::Eof) => return None,
                Ok(Line::TooLong) => self.malformed += 1,
                Ok(Line::Text) => {
                    if self.buf.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    match parse_line(&self.buf) {
                        Some(e) => return Some(Ok(e)),
                        None => self.malformed += 1,
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Attempts
// ---------------------------------------------------------------------------

/// How an attempt ended, from its `end` event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Outcome {
    Exited,
    Killed,
    Timeout,
    Watchdog,
    ReadyTimeout,
    LeaseLost,
    Cancelled,
    Busy,
    WaitExpired,
    NotFound,
    CannotExecute,
    Failed,
    /// An outcome this version does not know.
    Other,
    /// No `end` event.
    Unknown,
}

impl Outcome {
    const ALL: [Outcome; 14] = [
        Outcome::Exited,
        Outcome::Killed,
        Outcome::Timeout,
        Outcome::Watchdog,
        Outcome::ReadyTimeout,
        Outcome::LeaseLost,
        Outcome::Cancelled,
        Outcome::Busy,
        Outcome::WaitExpired,
        Outcome::NotFound,
        Outcome::CannotExecute,
        Outcome::Failed,
        Outcome::Other,
        Outcome::Unknown,
    ];

    fn of(name: &str) -> Outcome {
        Outcome::ALL
            .into_iter()
            .filter(|o| !matches!(o, Outcome::Other | Outcome::Unknown))
            .find(|o| o.name() == name)
            .unwrap_or(Outcome::Other)
    }

    /// The name in events, and in the CSS class `outcome-NAME`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Outcome::Exited => "exited",
            Outcome::Killed => "killed",
            Outcome::Timeout => "timeout",
            Outcome::Watchdog => "watchdog",
            Outcome::ReadyTimeout => "ready-timeout",
            Outcome::LeaseLost => LEASE_LOST,
            Outcome::Cancelled => "cancelled",
            Outcome::Busy => "busy",
            Outcome::WaitExpired => "wait-expired",
            Outcome::NotFound => "not-found",
            Outcome::CannotExecute => "cannot-execute",
            Outcome::Failed => "failed",
            Outcome::Other => "other",
            Outcome::Unknown => "unknown",
        }
    }

    /// Fill colour: distinct hues for the outcomes that matter in an
    /// incident (a colour-blind-safe set first), greys for no outcome.
    pub(crate) fn colour(self) -> &'static str {
        match self {
            Outcome::Exited => "#3a9a5b",
            Outcome::Killed => "#8c510a",
            Outcome::Timeout => "#e69f00",
            Outcome::Watchdog => "#d55e00",
            Outcome::ReadyTimeout => "#cc79a7",
            Outcome::LeaseLost => "#7b3294",
            Outcome::Cancelled => "#5f6b7a",
            Outcome::Busy => "#56b4e9",
            Outcome::WaitExpired => "#0072b2",
            Outcome::NotFound => "#b2182b",
            Outcome::CannotExecute => "#e7298a",
            Outcome::Failed => "#222222",
            Outcome::Other => "#a6761d",
            Outcome::Unknown => "#bdbdbd",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A signal sent to an attempt.
#[derive(Debug, Clone)]
struct SignalMark {
    ts: Ms,
    signal: String,
    reason: String,
}

/// The `end` of an attempt.
#[derive(Debug, Clone)]
struct End {
    ts: Ms,
    outcome: Outcome,
    /// The outcome's name when it is [`Outcome::Other`].
    other: Option<String>,
    exit_code: Option<i64>,
    error: Option<String>,
}

/// What one attempt did: fixed fields and bounded strings, whatever the
/// number of its events.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    id: String,
    lane: usize,
    first: Ms,
    last: Ms,
    waiting: Option<Ms>,
    wait_ms: Option<f64>,
    acquired: Option<Ms>,
    started: Option<Ms>,
    command: Option<String>,
    first_signal: Option<SignalMark>,
    final_signal: Option<SignalMark>,
    signals: u32,
    watchdog_at: Option<Ms>,
    last_heartbeat: Option<Ms>,
    heartbeats: u32,
    exited: Option<(Option<i64>, Option<String>)>,
    released: Option<Ms>,
    leak: Option<Ms>,
    lease_lost: Option<Ms>,
    conflict: Option<Ms>,
    end: Option<End>,
}

impl Attempt {
    fn new(id: String, lane: usize, ts: Ms) -> Self {
        Self {
            id,
            lane,
            first: ts,
            last: ts,
            waiting: None,
            wait_ms: None,
            acquired: None,
            started: None,
            command: None,
            first_signal: None,
            final_signal: None,
            signals: 0,
            watchdog_at: None,
            last_heartbeat: None,
            heartbeats: 0,
            exited: None,
            released: None,
            leak: None,
            lease_lost: None,
            conflict: None,
            end: None,
        }
    }

    fn outcome(&self) -> Outcome {
        self.end.as_ref().map_or(Outcome::Unknown, |e| e.outcome)
    }

    /// The command exited by itself with a status other than 0.
    fn failed_exit(&self) -> bool {
        self.end
            .as_ref()
            .is_some_and(|e| e.outcome == Outcome::Exited && e.exit_code.is_some_and(|c| c != 0))
    }
}

fn earliest(slot: &mut Option<Ms>, ts: Ms) {
    *slot = Some(slot.map_or(ts, |t| t.min(ts)));
}

fn is_final_signal(name: &str) -> bool {
    matches!(name, "SIGKILL" | "KILL" | "9")
}

/// Folds events into attempts. An attempt is its `attempt_id` on its
/// `lock`; events of that pair after its `end` begin a new attempt (an id
/// given again with --attempt-id).
#[derive(Default)]
pub(crate) struct Builder {
    lanes: Vec<String>,
    lane_of: HashMap<String, usize>,
    attempts: Vec<Attempt>,
    open: HashMap<(usize, String), usize>,
    events: u64,
}

impl Builder {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Add one event.
    pub(crate) fn push(&mut self, e: Event) {
        self.events += 1;
        // Names are cleaned (and cut) once, when first seen: the common
        // case, a name already clean, is found as it is.
        let lane = match self.lane_of.get(e.lock.as_str()) {
            Some(&l) => l,
            None => {
                let name = clean(&e.lock, MAX_LOCK);
                match self.lane_of.get(name.as_str()) {
                    Some(&l) => l,
                    None => {
                        self.lanes.push(name.clone());
                        self.lane_of.insert(name, self.lanes.len() - 1);
                        self.lanes.len() - 1
                    }
                }
            }
        };
        let mut key = (lane, e.attempt_id);
        let ix = match self.open.get(&key) {
            Some(&i) => i,
            None => {
                key.1 = clean(&key.1, MAX_ID);
                match self.open.get(&key) {
                    Some(&i) => i,
                    None => {
                        self.attempts.push(Attempt::new(key.1.clone(), lane, e.ts));
                        self.open.insert(key.clone(), self.attempts.len() - 1);
                        self.attempts.len() - 1
                    }
                }
            }
        };
        let a = &mut self.attempts[ix];
        let ts = e.ts;
        a.first = a.first.min(ts);
        a.last = a.last.max(ts);
        match e.kind {
            Kind::Waiting => earliest(&mut a.waiting, ts),
            Kind::Acquired { wait_ms } => {
                earliest(&mut a.acquired, ts);
                a.wait_ms = a.wait_ms.or(wait_ms);
            }
            Kind::Started { command } => {
                earliest(&mut a.started, ts);
                a.command = a.command.take().or(command);
            }
            Kind::Signal { signal, reason } => {
                a.signals = a.signals.saturating_add(1);
                if reason == "watchdog" {
                    earliest(&mut a.watchdog_at, ts);
                }
                if reason == LEASE_LOST {
                    earliest(&mut a.lease_lost, ts);
                }
                let mark = SignalMark { ts, signal, reason };
                if a.first_signal.is_none() && !is_final_signal(&mark.signal) {
                    a.first_signal = Some(mark);
                } else if let Some(f) = a.first_signal.as_mut().filter(|f| ts < f.ts)
                    && !is_final_signal(&mark.signal)
                {
                    // Out of order: the earlier one is the first signal.
                    let later = std::mem::replace(f, mark);
                    if a.final_signal.as_ref().is_none_or(|g| g.ts <= later.ts) {
                        a.final_signal = Some(later);
                    }
                } else if a.final_signal.as_ref().is_none_or(|g| g.ts <= ts) {
                    a.final_signal = Some(mark);
                }
            }
            Kind::Exited { status, signal } => a.exited = Some((status, signal)),
            Kind::Released => earliest(&mut a.released, ts),
            Kind::Leak => earliest(&mut a.leak, ts),
            Kind::Conflict { reason } => {
                earliest(&mut a.conflict, ts);
                if reason == LEASE_LOST {
                    earliest(&mut a.lease_lost, ts);
                }
            }
            Kind::Heartbeat => {
                a.heartbeats = a.heartbeats.saturating_add(1);
                a.last_heartbeat = Some(a.last_heartbeat.map_or(ts, |t| t.max(ts)));
            }
            Kind::LeaseLost => earliest(&mut a.lease_lost, ts),
            Kind::End {
                exit_code,
                outcome,
                error,
            } => {
                let o = Outcome::of(&outcome);
                if o == Outcome::LeaseLost {
                    earliest(&mut a.lease_lost, ts);
                }
                a.end = Some(End {
                    ts,
                    outcome: o,
                    other: (o == Outcome::Other).then_some(outcome),
                    exit_code,
                    error,
                });
                self.open.remove(&key);
            }
            Kind::Other => {}
        }
    }

    /// Events taken so far.
    pub(crate) fn events(&self) -> u64 {
        self.events
    }

    pub(crate) fn finish(self) -> Timeline {
        Timeline {
            lanes: self.lanes,
            attempts: self.attempts,
        }
    }
}

/// Fold a stream of events, from any source, into a timeline.
// Not called yet: the entry point for event sources other than files.
#[allow(dead_code)]
pub(crate) fn build(events: impl IntoIterator<Item = Event>) -> Timeline {
    let mut b = Builder::new();
    for e in events {
        b.push(e);
    }
    b.finish()
}

/// Every attempt, by lock.
pub(crate) struct Timeline {
    /// Lock paths, in order of first appearance.
    lanes: Vec<String>,
    attempts: Vec<Attempt>,
}

impl Timeline {
    #[cfg(test)]
    pub(crate) fn attempts(&self) -> usize {
        self.attempts.len()
    }
}

// ---------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------

const SECOND: Ms = 1000;
const MINUTE: Ms = 60 * SECOND;
const HOUR: Ms = 60 * MINUTE;
const DAY: Ms = 24 * HOUR;

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn month_lengths(y: i64) -> [i64; 12] {
    let feb = if is_leap(y) { 29 } else { 28 };
    [31, feb, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil(days: Ms) -> (i64, i64, i64) {
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
fn days_from_civil(y: i64, m: i64, d: i64) -> Ms {
    let leaps_before = |y: i64| (y - 1) / 4 - (y - 1) / 100 + (y - 1) / 400;
    let mut days = 365 * (y - 1970) + leaps_before(y) - leaps_before(1970);
    days += month_lengths(y)
        .iter()
        .take((m - 1).clamp(0, 11) as usize)
        .sum::<i64>();
    days + d - 1
}

/// `2026-11-24`.
fn date(t: Ms) -> String {
    let (y, m, d) = civil(t.div_euclid(DAY));
    format!("{y:04}-{m:02}-{d:02}")
}

/// `08:03:33.123`.
fn clock(t: Ms) -> String {
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
fn stamp(t: Ms) -> String {
    format!("{} {}", date(t), clock(t))
}

/// A duration for people: `0.25 ms`, `850 ms`, `2.41 s`, `3 min 20 s`,
/// `2 h 5 min`, `3 d 4 h`.
fn human(ms: f64) -> String {
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
enum Step {
    Ms(Ms),
    Months(i64),
}

const STEPS: [Step; 47] = [
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
    fn approx_ms(self) -> f64 {
        match self {
            Step::Ms(ms) => ms as f64,
            Step::Months(n) => n as f64 * 30.436_875 * DAY as f64,
        }
    }

    /// The smallest step that makes at most `max` ticks over `span` ms.
    fn for_span(span: f64, max: f64) -> Step {
        STEPS
            .into_iter()
            .find(|s| span / s.approx_ms() <= max)
            .unwrap_or(Step::Months(240_000))
    }

    /// The ticks in `[lo, hi]`, on round UTC times.
    fn ticks(self, lo: Ms, hi: Ms) -> Vec<Ms> {
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
    fn label(self, t: Ms) -> String {
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
    fn context(self, t: Ms) -> Option<String> {
        match self {
            Step::Ms(s) if s < DAY => Some(date(t)),
            Step::Ms(_) => Some(format!("{:04}", civil(t.div_euclid(DAY)).0)),
            Step::Months(_) => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Layout
// ---------------------------------------------------------------------------

const WIDTH: f64 = 1200.0;
/// Left edge of the plot; lock labels end just before it.
const PLOT_X: f64 = 250.0;
const PLOT_W: f64 = WIDTH - PLOT_X - 24.0;
/// Width of an aggregation column, in pixels.
pub(crate) const AGG_PX: f64 = 4.0;
/// Lanes drawn at most; beyond, the least busy locks share the last one.
pub(crate) const MAX_LANES: usize = 120;
const LABEL_CHARS: usize = 36;
const TOP: f64 = 92.0;

/// Escape text for XML content and attribute values.
fn esc(s: &str) -> Cow<'_, str> {
    if !s.contains(['&', '<', '>', '"', '\'']) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The directory prefix (ending in `/`) shared by every path.
fn common_dir<'a>(paths: impl Iterator<Item = &'a str>) -> String {
    let mut prefix: Option<&str> = None;
    for p in paths {
        let dir = &p[..p.rfind('/').map_or(0, |i| i + 1)];
        prefix = Some(match prefix {
            None => dir,
            Some(q) => {
                let n = q
                    .bytes()
                    .zip(dir.bytes())
                    .take_while(|(a, b)| a == b)
                    .count();
                &q[..q[..n].rfind('/').map_or(0, |i| i + 1)]
            }
        });
    }
    prefix.unwrap_or("").to_owned()
}

/// A lane label: the path below `prefix`, its start elided when too long.
fn short_label(path: &str, prefix: &str) -> String {
    let rest = path.strip_prefix(prefix).filter(|r| !r.is_empty());
    let rest = rest.unwrap_or(path);
    let n = rest.chars().count();
    if n <= LABEL_CHARS {
        return rest.to_owned();
    }
    let tail: String = rest.chars().skip(n - (LABEL_CHARS - 1)).collect();
    format!("…{tail}")
}

/// Where and how long an attempt's bar is.
struct Geom {
    start: Ms,
    end: Ms,
    /// The bar runs to the last time seen: no end, no release.
    open: bool,
    /// The lock was taken (a hold bar), or not (a wait-row bar).
    held: bool,
    /// The wait before the acquisition.
    wait: Option<(Ms, Ms)>,
}

fn geometry(a: &Attempt, last: Ms) -> Geom {
    let end_ts = a.end.as_ref().map(|e| e.ts);
    match a.acquired.or(a.started) {
        Some(s) => {
            let (end, open) = match a.released.or(a.leak).or(end_ts) {
                Some(e) => (e, false),
                None => (last, true),
            };
            let from_wait_ms = a
                .acquired
                .zip(a.wait_ms)
                .map(|(acq, w)| acq - w.round() as Ms);
            let wait_start = match (a.waiting, from_wait_ms) {
                (Some(x), Some(y)) => Some(x.min(y)),
                (x, y) => x.or(y),
            };
            Geom {
                start: s,
                end: end.max(s),
                open,
                held: true,
                wait: wait_start.filter(|&w| w < s).map(|w| (w, s)),
            }
        }
        None => {
            let start = a.waiting.unwrap_or(a.first);
            let (end, open) = match a.conflict.or(end_ts) {
                Some(e) => (e, false),
                None => (last, true),
            };
            Geom {
                start,
                end: end.max(start),
                open,
                held: false,
                wait: None,
            }
        }
    }
}

/// Vertical layout of a lane of height `h` at `top`.
#[derive(Clone, Copy)]
struct Rows {
    top: f64,
    h: f64,
    bar_y: f64,
    bar_h: f64,
    wait_y: f64,
    wait_h: f64,
}

impl Rows {
    fn new(top: f64, h: f64) -> Self {
        let bar_y = top + (h * 0.2).round();
        let bar_h = (h * 0.46).round();
        let wait_y = bar_y + bar_h + (h * 0.08).max(1.0).round();
        let wait_h = (h * 0.16).max(2.0).round();
        Self {
            top,
            h,
            bar_y,
            bar_h,
            wait_y,
            wait_h,
        }
    }

    fn mid(&self) -> f64 {
        self.bar_y + self.bar_h / 2.0
    }

    /// Size of a mark.
    fn mark(&self) -> f64 {
        (self.h * 0.16).clamp(2.5, 4.5)
    }
}

struct Scale {
    lo: f64,
    px_per_ms: f64,
}

impl Scale {
    fn x(&self, t: Ms) -> f64 {
        PLOT_X + (t as f64 - self.lo) * self.px_per_ms
    }

    fn px(&self, ms: Ms) -> f64 {
        ms as f64 * self.px_per_ms
    }
}

/// Kinds of marks, in drawing order.
#[derive(Clone, Copy)]
enum Mark {
    First,
    Final,
    HeartbeatLast,
    Leak,
    LeaseLost,
}

impl Mark {
    const ALL: [Mark; 5] = [
        Mark::First,
        Mark::Final,
        Mark::HeartbeatLast,
        Mark::Leak,
        Mark::LeaseLost,
    ];

    fn class(self) -> &'static str {
        match self {
            Mark::First => "signal-first",
            Mark::Final => "signal-final",
            Mark::HeartbeatLast => "heartbeat-last",
            Mark::Leak => "leak",
            Mark::LeaseLost => "lease-lost",
        }
    }

    fn legend(self) -> &'static str {
        match self {
            Mark::First => "first signal",
            Mark::Final => "final signal (KILL)",
            Mark::HeartbeatLast => "last heartbeat before the watchdog",
            Mark::Leak => "leak (lock still held)",
            Mark::LeaseLost => "lease lost",
        }
    }

    /// The shape, centred on `x` of the lane `r`.
    fn shape(self, out: &mut String, x: f64, r: &Rows, title: Option<&str>) {
        let s = r.mark();
        let m = r.mid();
        let class = self.class();
        let body = match self {
            Mark::First => format!(
                "<path class=\"mark {class}\" d=\"M{:.1} {:.1}h{:.1}l{:.1} {:.1}z\"",
                x - s,
                r.bar_y - s,
                2.0 * s,
                -s,
                2.0 * s
            ),
            Mark::Final => format!(
                "<path class=\"mark {class}\" d=\"M{:.1} {:.1}l{:.1} {:.1}M{:.1} {:.1}l{:.1} {:.1}\"",
                x - s,
                m - s,
                2.0 * s,
                2.0 * s,
                x + s,
                m - s,
                -2.0 * s,
                2.0 * s
            ),
            Mark::HeartbeatLast => format!(
                "<circle class=\"mark {class}\" cx=\"{x:.1}\" cy=\"{m:.1}\" r=\"{:.1}\"",
                s * 0.8
            ),
            Mark::Leak => format!(
                "<path class=\"mark {class}\" d=\"M{x:.1} {:.1}l{s:.1} {s:.1}l{:.1} {s:.1}l{:.1} {:.1}z\"",
                m - s,
                -s,
                -s,
                -s
            ),
            Mark::LeaseLost => format!(
                "<rect class=\"mark {class}\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"",
                x - s * 0.8,
                m - s * 0.8,
                1.6 * s,
                1.6 * s
            ),
        };
        out.push_str(&body);
        match title {
            Some(t) => {
                let _ = write!(out, "><title>{}</title></{}>", esc(t), tag(&body));
            }
            None => out.push_str("/>"),
        }
    }
}

/// The element name of an opening tag written by [`Mark::shape`].
fn tag(open: &str) -> &str {
    open[1..].split(' ').next().unwrap_or("path")
}

/// A lane as drawn.
struct Lane {
    /// The lock's path, or a description of the shared lane.
    name: String,
    label: String,
    attempts: Vec<usize>,
    aggregated: bool,
}

const STYLE: &str = "
text { font-family: sans-serif; fill: #222 }
.heading { font-size: 15px; font-weight: bold }
.sub { font-size: 11px; fill: #555 }
.tick { font-size: 10px; fill: #444; text-anchor: middle }
.tick-date { font-size: 9px; fill: #777; text-anchor: middle }
.utc { font-size: 9px; fill: #777; text-anchor: end }
.label { font-size: 11px; text-anchor: end }
.count { font-size: 9px; fill: #777; text-anchor: end }
.lane-bg { fill: #f4f5f7 }
.grid { stroke: #dde1e6; stroke-width: 1 }
.axis { stroke: #888; stroke-width: 1 }
.wait { fill: #9fb0c3; opacity: 0.75 }
.bar { stroke: #fff; stroke-width: 0.6 }
.bar.open { fill: url(#open-fade) }
.bar.nonzero, .swatch.nonzero { stroke: #b2182b; stroke-width: 2 }
.outcome-unknown { stroke: #666; stroke-width: 0.8; stroke-dasharray: 3 2 }
.signal-first { fill: #fff; stroke: #111; stroke-width: 1.2 }
.signal-final { fill: none; stroke: #a50026; stroke-width: 2.2 }
.heartbeat-last { fill: #111; stroke: #fff; stroke-width: 0.8 }
.hb-gap { fill: none; stroke: #111; stroke-width: 1.2; stroke-dasharray: 1.5 2 }
.leak { fill: #d7191c; stroke: #fff; stroke-width: 0.8 }
.leak-tail { fill: none; stroke: #d7191c; stroke-width: 1.5; stroke-dasharray: 5 3 }
.lease-lost { fill: #7b3294; stroke: #fff; stroke-width: 0.8 }
.legend { font-size: 11px }
";

/// The whole SVG document.
pub(crate) fn render(tl: &Timeline, malformed: u64) -> String {
    let mut out = String::with_capacity(64 * 1024 + tl.attempts.len() * 400);
    let mut lo = Ms::MAX;
    let mut last = Ms::MIN;
    for a in &tl.attempts {
        lo = lo.min(a.first);
        last = last.max(a.last);
    }
    if tl.attempts.is_empty() {
        lo = 0;
        last = 0;
    }
    let geoms: Vec<Geom> = tl.attempts.iter().map(|a| geometry(a, last)).collect();
    for g in &geoms {
        lo = lo.min(g.start).min(g.wait.map_or(g.start, |w| w.0));
    }
    let (from, to) = (lo, last);
    let span = (to - from).max(1) as f64;
    let pad = (span * 0.015).max(0.5);
    let scale = Scale {
        lo: from as f64 - pad,
        px_per_ms: PLOT_W / (span + 2.0 * pad),
    };

    let lanes = lay_out_lanes(tl, &geoms, &scale);
    let lane_h = if lanes.len() <= 30 {
        26.0
    } else {
        (780.0 / lanes.len() as f64).floor().max(12.0)
    };
    let lanes_bottom = TOP + lane_h * lanes.len() as f64;

    // Acquisitions per lock, for the end of a leak's tail.
    let mut acquisitions: Vec<Vec<Ms>> = vec![Vec::new(); tl.lanes.len()];
    for (a, g) in tl.attempts.iter().zip(&geoms) {
        if g.held {
            acquisitions[a.lane].push(g.start);
        }
    }
    for v in &mut acquisitions {
        v.sort_unstable();
    }

    let mut present = [0usize; 14];
    let mut nonzero = 0usize;
    for a in &tl.attempts {
        present[a.outcome().index()] += 1;
        if a.failed_exit() {
            nonzero += 1;
        }
    }
    let mut marks_present = [false; 5];
    for a in &tl.attempts {
        marks_present[0] |= a.first_signal.is_some();
        marks_present[1] |= a.final_signal.is_some();
        marks_present[2] |= a.watchdog_at.is_some() || a.outcome() == Outcome::Watchdog;
        marks_present[3] |= a.leak.is_some();
        marks_present[4] |= a.lease_lost.is_some();
    }
    let any_wait = geoms.iter().any(|g| g.wait.is_some());
    let any_aggregated = lanes.iter().any(|l| l.aggregated);

    // Legend items: (swatch class, text).
    let mut legend: Vec<(String, String)> = Vec::new();
    for o in Outcome::ALL {
        let n = present[o.index()];
        if n > 0 {
            let text = match o {
                Outcome::Unknown => format!("no end seen ({n})"),
                _ => format!("{} ({n})", o.name()),
            };
            legend.push((format!("swatch outcome-{}", o.name()), text));
        }
    }
    if nonzero > 0 {
        legend.push((
            "swatch outcome-exited nonzero".to_owned(),
            format!("exited, non-zero status ({nonzero})"),
        ));
    }
    if any_wait {
        legend.push(("wait".to_owned(), "waiting for the lock".to_owned()));
    }
    let item_w = |text: &str| 26.0 + text.chars().count() as f64 * 6.2;
    let mut legend_rows = 1.0;
    let mut x = 0.0;
    let avail = WIDTH - 40.0;
    let mut widths: Vec<f64> = legend.iter().map(|(_, t)| item_w(t)).collect();
    widths.extend(
        Mark::ALL
            .iter()
            .zip(marks_present)
            .filter(|(_, p)| *p)
            .map(|(m, _)| item_w(m.legend())),
    );
    for w in &widths {
        if x + w > avail && x > 0.0 {
            legend_rows += 1.0;
            x = 0.0;
        }
        x += w;
    }
    let legend_top = lanes_bottom + 22.0;
    let note_h = if any_aggregated { 18.0 } else { 0.0 };
    let height = (legend_top + legend_rows * 18.0 + note_h + 12.0).ceil();

    let _ = write!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {WIDTH} {height}\">\n<style>{STYLE}"
    );
    for o in Outcome::ALL {
        let _ = writeln!(out, ".outcome-{} {{ fill: {} }}", o.name(), o.colour());
    }
    out.push_str(
        "</style>\n<defs><linearGradient id=\"open-fade\" x1=\"0\" x2=\"1\" y1=\"0\" y2=\"0\">\
         <stop offset=\"0\" stop-color=\"#bdbdbd\"/><stop offset=\"0.7\" stop-color=\"#bdbdbd\"/>\
         <stop offset=\"1\" stop-color=\"#bdbdbd\" stop-opacity=\"0.15\"/></linearGradient></defs>\n\
         <rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n",
    );

    // Heading.
    let locks = tl.lanes.len();
    let day_from = date(from);
    let until = if date(to) == day_from {
        clock(to)
    } else {
        stamp(to)
    };
    let _ = writeln!(
        out,
        "<text class=\"heading\" x=\"16\" y=\"24\">locksup timeline: {} on {}, {} to {} UTC ({})</text>",
        plural(tl.attempts.len(), "attempt", "attempts"),
        plural(locks, "lock", "locks"),
        stamp(from),
        until,
        human((to - from) as f64)
    );
    let prefix = common_dir(
        lanes
            .iter()
            .filter(|l| !l.attempts.is_empty() && l.name.starts_with('/'))
            .map(|l| l.name.as_str()),
    );
    let mut sub = Vec::new();
    if prefix.len() > 1 {
        sub.push(format!("locks under {prefix}"));
    }
    if any_aggregated {
        sub.push("crowded lanes aggregated".to_owned());
    }
    if malformed > 0 {
        sub.push(format!(
            "{} skipped",
            plural(
                usize::try_from(malformed).unwrap_or(usize::MAX),
                "malformed line",
                "malformed lines"
            )
        ));
    }
    if !sub.is_empty() {
        let _ = writeln!(
            out,
            "<text class=\"sub\" x=\"16\" y=\"42\">{}</text>",
            esc(&sub.join(" · "))
        );
    }

    // Axis, grid and ticks.
    let step = Step::for_span(span + 2.0 * pad, PLOT_W / 110.0);
    let ticks = step.ticks(from - pad.ceil() as Ms, to + pad.ceil() as Ms);
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"{PLOT_X}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>",
        PLOT_X + PLOT_W,
        TOP - 1.5,
        TOP - 1.5
    );
    let mut last_context: Option<String> = None;
    out.push_str("<g class=\"ticks\">\n");
    for &t in &ticks {
        let x = scale.x(t);
        let _ = writeln!(
            out,
            "<line class=\"grid\" x1=\"{x:.1}\" x2=\"{x:.1}\" y1=\"{:.1}\" y2=\"{lanes_bottom:.1}\"/>",
            TOP - 6.0,
        );
        // A label that would stick out of the picture is left out.
        let label = step.label(t);
        let half = label.len() as f64 * 3.2;
        if x + half > WIDTH - 2.0 || x - half < PLOT_X - 40.0 {
            continue;
        }
        let _ = writeln!(
            out,
            "<text class=\"tick\" x=\"{x:.1}\" y=\"{:.1}\">{label}</text>",
            TOP - 10.0,
        );
        if let Some(c) = step.context(t)
            && last_context.as_ref() != Some(&c)
        {
            let _ = writeln!(
                out,
                "<text class=\"tick-date\" x=\"{x:.1}\" y=\"{:.1}\">{c}</text>",
                TOP - 24.0
            );
            last_context = Some(c);
        }
    }
    out.push_str("</g>\n");
    let _ = writeln!(
        out,
        "<text class=\"utc\" x=\"{:.1}\" y=\"{:.1}\">UTC</text>",
        PLOT_X - 30.0,
        TOP - 10.0
    );

    // Lanes.
    for (i, lane) in lanes.iter().enumerate() {
        let rows = Rows::new(TOP + lane_h * i as f64, lane_h);
        let _ = writeln!(
            out,
            "<g class=\"lane{}\" data-lock=\"{}\">",
            if lane.aggregated { " aggregated" } else { "" },
            esc(&lane.name)
        );
        if i % 2 == 0 {
            let _ = writeln!(
                out,
                "<rect class=\"lane-bg\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\"/>",
                10.0,
                rows.top,
                WIDTH - 20.0,
                rows.h
            );
        }
        let label = if lane.name.starts_with('/') {
            short_label(&lane.label, &prefix)
        } else {
            lane.label.clone()
        };
        let count = format!(
            "{}{}",
            plural(lane.attempts.len(), "attempt", "attempts"),
            if lane.aggregated { ", aggregated" } else { "" }
        );
        let two_lines = lane_h >= 24.0;
        let _ = writeln!(
            out,
            "<text class=\"label\" x=\"{:.1}\" y=\"{:.1}\"><title>{}: {count}</title>{}</text>",
            PLOT_X - 10.0,
            if two_lines {
                rows.top + lane_h * 0.45
            } else {
                rows.top + lane_h * 0.5 + 4.0
            },
            esc(&lane.name),
            esc(&label)
        );
        if two_lines {
            let _ = writeln!(
                out,
                "<text class=\"count\" x=\"{:.1}\" y=\"{:.1}\">{count}</text>",
                PLOT_X - 10.0,
                rows.top + lane_h * 0.85
            );
        }
        let ctx = Ctx {
            tl,
            geoms: &geoms,
            scale: &scale,
            rows,
            last,
            acquisitions: &acquisitions,
        };
        if lane.aggregated {
            ctx.aggregated(&mut out, lane);
        } else {
            ctx.detailed(&mut out, lane);
        }
        out.push_str("</g>\n");
    }
    let _ = writeln!(
        out,
        "<line class=\"axis\" x1=\"{PLOT_X}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>",
        PLOT_X + PLOT_W,
        lanes_bottom + 0.5,
        lanes_bottom + 0.5
    );

    // Legend.
    out.push_str("<g class=\"legend\">\n");
    let mut x = 20.0;
    let mut y = legend_top;
    let place = |w: f64, x: &mut f64, y: &mut f64| {
        if *x + w > avail && *x > 20.0 {
            *x = 20.0;
            *y += 18.0;
        }
        let at = (*x, *y);
        *x += w;
        at
    };
    for (class, text) in &legend {
        let (ix, iy) = place(item_w(text), &mut x, &mut y);
        let _ = writeln!(
            out,
            "<rect class=\"{class}\" x=\"{ix:.1}\" y=\"{:.1}\" width=\"16\" height=\"10\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            iy - 9.0,
            ix + 21.0,
            iy,
            esc(text)
        );
    }
    for (m, _) in Mark::ALL.iter().zip(marks_present).filter(|(_, p)| *p) {
        let (ix, iy) = place(item_w(m.legend()), &mut x, &mut y);
        // A lane-like box around the text's middle (4 px above its baseline).
        let mut r = Rows::new(iy - 12.0, 26.0);
        r.bar_h = 8.0;
        r.bar_y = match m {
            Mark::First => iy - 4.0,
            _ => iy - 8.0,
        };
        let mx = ix + 8.0;
        m.shape(&mut out, mx, &r, None);
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{iy:.1}\">{}</text>",
            ix + 21.0,
            m.legend()
        );
    }
    if any_aggregated {
        let _ = writeln!(
            out,
            "<text class=\"sub\" x=\"20\" y=\"{:.1}\">Aggregated lanes: each {AGG_PX} px column \
             stacks the outcomes of the attempts active in it (darker: more of them), the strip \
             below counts waiters; hover for counts.</text>",
            y + 18.0
        );
    }
    out.push_str("</g>\n</svg>\n");
    out
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Group attempts into lanes (the busiest locks when there are too many),
/// sorted by path, and decide which are aggregated.
fn lay_out_lanes(tl: &Timeline, geoms: &[Geom], scale: &Scale) -> Vec<Lane> {
    let mut per_lock: Vec<Vec<usize>> = vec![Vec::new(); tl.lanes.len()];
    for (i, a) in tl.attempts.iter().enumerate() {
        per_lock[a.lane].push(i);
    }
    let mut order: Vec<usize> = (0..tl.lanes.len()).collect();
    let mut rest: Vec<usize> = Vec::new();
    if order.len() > MAX_LANES {
        order.sort_by(|&a, &b| {
            per_lock[b]
                .len()
                .cmp(&per_lock[a].len())
                .then_with(|| natural(&tl.lanes[a], &tl.lanes[b]))
        });
        rest = order.split_off(MAX_LANES - 1);
    }
    order.sort_by(|&a, &b| natural(&tl.lanes[a], &tl.lanes[b]));
    let mut lanes: Vec<Lane> = order
        .into_iter()
        .map(|l| Lane {
            name: tl.lanes[l].clone(),
            label: tl.lanes[l].clone(),
            attempts: std::mem::take(&mut per_lock[l]),
            aggregated: false,
        })
        .collect();
    if !rest.is_empty() {
        let name = format!("({} other locks)", rest.len());
        let mut attempts: Vec<usize> = Vec::new();
        for l in rest {
            attempts.append(&mut per_lock[l]);
        }
        lanes.push(Lane {
            label: name.clone(),
            name,
            attempts,
            aggregated: false,
        });
    }
    let max_detailed = (PLOT_W / AGG_PX) as usize;
    for lane in &mut lanes {
        lane.attempts
            .sort_by_key(|&i| (geoms[i].start, geoms[i].end));
        // Bars drawn over an earlier one of the same row (hold or wait),
        // once widened to their minimum width.
        let mut ends = [f64::NEG_INFINITY; 2];
        let mut overlapping = 0;
        for &i in &lane.attempts {
            let g = &geoms[i];
            let row = usize::from(!g.held);
            let x0 = scale.x(g.start);
            let x1 = scale.x(g.end).max(x0 + min_width(g.held));
            if x0 < ends[row] - 0.01 {
                overlapping += 1;
            }
            ends[row] = ends[row].max(x1);
        }
        lane.aggregated = lane.attempts.len() > max_detailed
            || (overlapping > MAX_OVERLAPS && overlapping * 4 > lane.attempts.len());
    }
    lanes
}

/// Compare with runs of digits as numbers: `s-2` before `s-10`.
fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (da, db) = (digits(a), digits(b));
                let (na, nb) = (&a[..da], &b[..db]);
                fn strip(s: &[u8]) -> &[u8] {
                    let zeros = s.iter().take_while(|&&c| c == b'0').count();
                    &s[zeros..]
                }
                let (sa, sb) = (strip(na), strip(nb));
                let o = sa
                    .len()
                    .cmp(&sb.len())
                    .then_with(|| sa.cmp(sb))
                    .then_with(|| da.cmp(&db));
                if o.is_ne() {
                    return o;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

/// Overlapping bars a lane drawn bar by bar may have (while they are at
/// most a quarter of its bars).
const MAX_OVERLAPS: usize = 8;

/// The narrowest bar: a hold bar, or one in the wait row (a conflict can
/// take no time at all).
fn min_width(held: bool) -> f64 {
    if held { 1.0 } else { 2.0 }
}

/// What drawing one lane needs.
struct Ctx<'a> {
    tl: &'a Timeline,
    geoms: &'a [Geom],
    scale: &'a Scale,
    rows: Rows,
    last: Ms,
    acquisitions: &'a [Vec<Ms>],
}

impl Ctx<'_> {
    /// Where a leak's dashed tail ends: the next acquisition of the lock,
    /// or the last time seen.
    fn leak_tail(&self, a: &Attempt, leak: Ms) -> Ms {
        let acq = &self.acquisitions[a.lane];
        let next = acq.partition_point(|&t| t <= leak);
        acq.get(next).copied().unwrap_or(self.last)
    }

    /// The hover text of one attempt.
    fn title(&self, a: &Attempt, g: &Geom) -> String {
        let mut t = format!("attempt {}\nlock {}", a.id, self.tl.lanes[a.lane]);
        if let Some(c) = &a.command {
            let _ = write!(t, "\ncommand: {c}");
        }
        match &a.end {
            Some(e) => {
                let name = match e.other.as_deref() {
                    Some("") => "(none)",
                    Some(other) => other,
                    None => e.outcome.name(),
                };
                let _ = write!(t, "\noutcome: {name}");
                if let Some(c) = e.exit_code {
                    let _ = write!(t, ", exit code {c}");
                }
            }
            None => t.push_str(
                "\noutcome: unknown (no end event: still running, or its supervisor died)",
            ),
        }
        match &a.exited {
            Some((Some(s), _)) => {
                let _ = write!(t, "\ncommand exited with status {s}");
            }
            Some((None, Some(sig))) => {
                let _ = write!(t, "\ncommand died of {sig}");
            }
            _ => {}
        }
        // The supervisor's own measure of the wait first (from its start).
        let waited = match (a.wait_ms.filter(|_| g.held), g.wait) {
            (Some(w), _) => Some(w),
            (None, Some((w0, w1))) => Some((w1 - w0) as f64),
            (None, None) => None,
        };
        if let Some(w) = waited {
            let _ = write!(t, "\nwaited {}", human(w));
            if let Some((w0, _)) = g.wait.filter(|_| w >= 1.0) {
                let _ = write!(t, " from {}", clock(w0));
            }
        }
        let during = format!(
            "{} to {} UTC",
            stamp(g.start),
            if date(g.end) == date(g.start) {
                clock(g.end)
            } else {
                stamp(g.end)
            }
        );
        let length = human((g.end - g.start) as f64);
        match (g.held, g.open) {
            (true, false) => {
                let _ = write!(t, "\nheld {length}: {during}");
            }
            (true, true) => {
                let _ = write!(t, "\nheld at least {length} (no release seen): {during}");
            }
            (false, false) if g.end == g.start => {
                let _ = write!(t, "\nnever held the lock: at {} UTC", stamp(g.start));
            }
            (false, false) => {
                let _ = write!(t, "\nnever held the lock ({length}): {during}");
            }
            (false, true) => {
                let _ = write!(t, "\nnot holding the lock, at least {length}: {during}");
            }
        }
        let since = |ts: Ms| {
            let d = ts - g.start;
            if d >= 0 {
                format!("+{}", human(d as f64))
            } else {
                clock(ts)
            }
        };
        for s in [&a.first_signal, &a.final_signal].into_iter().flatten() {
            let _ = write!(t, "\nsignal {} ({}) at {}", s.signal, s.reason, since(s.ts));
        }
        if a.signals > 2 {
            let _ = write!(t, " ({} signals in all)", a.signals);
        }
        if a.watchdog_at.is_some() || a.outcome() == Outcome::Watchdog {
            let at = a.watchdog_at.or(a.end.as_ref().map(|e| e.ts));
            match (a.last_heartbeat, at) {
                (Some(h), Some(w)) => {
                    let _ = write!(
                        t,
                        "\nlast heartbeat {} before the watchdog ({} heartbeats)",
                        human((w - h) as f64),
                        a.heartbeats
                    );
                }
                _ => t.push_str("\nno heartbeat before the watchdog"),
            }
        }
        if let Some(l) = a.leak {
            let _ = write!(t, "\nLEAK at {}: the lock outlived the attempt", since(l));
        }
        if let Some(l) = a.lease_lost {
            let _ = write!(t, "\nlease lost at {}", since(l));
        }
        if let Some(err) = a.end.as_ref().and_then(|e| e.error.as_deref()) {
            let _ = write!(t, "\nerror: {err}");
        }
        t
    }

    /// Marks of one attempt: (kind, time, hover text).
    fn marks(&self, a: &Attempt) -> Vec<(Mark, Ms, String)> {
        let mut out = Vec::new();
        if let Some(s) = &a.first_signal {
            out.push((Mark::First, s.ts, format!("{} ({})", s.signal, s.reason)));
        }
        if let Some(s) = &a.final_signal {
            out.push((Mark::Final, s.ts, format!("{} ({})", s.signal, s.reason)));
        }
        if (a.watchdog_at.is_some() || a.outcome() == Outcome::Watchdog)
            && let Some(h) = a.last_heartbeat
        {
            out.push((Mark::HeartbeatLast, h, "last heartbeat".to_owned()));
        }
        if let Some(l) = a.leak {
            out.push((
                Mark::Leak,
                l,
                "leak: the lock outlived the attempt".to_owned(),
            ));
        }
        if let Some(l) = a.lease_lost {
            out.push((Mark::LeaseLost, l, "lease lost".to_owned()));
        }
        out
    }

    /// Every attempt of the lane, with its bar, its wait and its marks.
    fn detailed(&self, out: &mut String, lane: &Lane) {
        let r = &self.rows;
        // An attempt that never held the lock and took no time (a busy
        // conflict) is a tick across the lane, drawn after the others so
        // that no wait hides it.
        let instant = |i: usize| {
            let g = &self.geoms[i];
            !g.held && self.scale.px(g.end - g.start) < min_width(false)
        };
        let (ticks, others): (Vec<usize>, Vec<usize>) =
            lane.attempts.iter().partition(|&&i| instant(i));
        for i in others.into_iter().chain(ticks) {
            let (a, g) = (&self.tl.attempts[i], &self.geoms[i]);
            let _ = write!(
                out,
                "<g class=\"attempt\" data-attempt=\"{}\"><title>{}</title>",
                esc(&a.id),
                esc(&self.title(a, g))
            );
            if let Some((w0, w1)) = g.wait {
                let w = self.scale.px(w1 - w0);
                if w >= 0.5 {
                    let _ = write!(
                        out,
                        "<rect class=\"wait\" x=\"{:.1}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\"/>",
                        self.scale.x(w0),
                        r.wait_y,
                        r.wait_h
                    );
                }
            }
            let outcome = a.outcome();
            let mut class = format!("bar outcome-{}", outcome.name());
            if g.open {
                class.push_str(" open");
            }
            if a.failed_exit() {
                class.push_str(" nonzero");
            }
            let (y, h) = if g.held {
                (r.bar_y, r.bar_h)
            } else if instant(i) {
                (r.bar_y, r.wait_y + r.wait_h - r.bar_y)
            } else {
                // Never held: a bar in the wait row, a little taller.
                (r.wait_y - 1.0, r.wait_h + 2.0)
            };
            let w = if instant(i) {
                3.0
            } else {
                self.scale.px(g.end - g.start).max(min_width(g.held))
            };
            let x = self.scale.x(g.start);
            let _ = writeln!(
                out,
                "<rect class=\"{class}\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\"/></g>"
            );
        }
        // Marks above every bar.
        for &i in &lane.attempts {
            let a = &self.tl.attempts[i];
            if let (Some(h), Some(w)) = (
                a.last_heartbeat
                    .filter(|_| a.watchdog_at.is_some() || a.outcome() == Outcome::Watchdog),
                a.watchdog_at.or(a.end.as_ref().map(|e| e.ts)),
            ) {
                let _ = writeln!(
                    out,
                    "<line class=\"hb-gap\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>",
                    self.scale.x(h),
                    self.scale.x(w.max(h)),
                    r.mid(),
                    r.mid()
                );
            }
            if let Some(l) = a.leak {
                self.tail(out, a, l);
            }
            for (m, ts, text) in self.marks(a) {
                let title = format!("{text} at {} UTC, attempt {}", clock(ts), a.id);
                m.shape(out, self.scale.x(ts), r, Some(&title));
                out.push('\n');
            }
        }
    }

    fn tail(&self, out: &mut String, a: &Attempt, leak: Ms) {
        let until = self.leak_tail(a, leak);
        let _ = writeln!(
            out,
            "<line class=\"leak-tail\" x1=\"{:.1}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>",
            self.scale.x(leak),
            self.scale.x(until.max(leak)),
            self.rows.mid(),
            self.rows.mid()
        );
    }

    /// The lane as columns of [`AGG_PX`] pixels.
    fn aggregated(&self, out: &mut String, lane: &Lane) {
        let r = &self.rows;
        let n = (PLOT_W / AGG_PX).ceil() as usize;
        let column = |t: Ms| {
            let c = ((self.scale.x(t) - PLOT_X) / AGG_PX).floor();
            c.clamp(0.0, (n - 1) as f64) as usize
        };
        let mut counts = vec![[0u32; 14]; n];
        let mut waiting = vec![0u32; n];
        let mut marks = vec![[0u32; 5]; n];
        for &i in &lane.attempts {
            let (a, g) = (&self.tl.attempts[i], &self.geoms[i]);
            let o = a.outcome().index();
            for c in &mut counts[column(g.start)..=column(g.end)] {
                c[o] += 1;
            }
            if let Some((w0, w1)) = g.wait {
                for w in &mut waiting[column(w0)..=column(w1)] {
                    *w += 1;
                }
            }
            for (m, ts, _) in self.marks(a) {
                marks[column(ts)][m as usize] += 1;
            }
        }
        for &i in &lane.attempts {
            let a = &self.tl.attempts[i];
            if let Some(l) = a.leak {
                self.tail(out, a, l);
            }
        }
        let busiest = counts
            .iter()
            .map(|c| c.iter().sum::<u32>())
            .max()
            .unwrap_or(0)
            .max(1);
        let most_waiting = waiting.iter().copied().max().unwrap_or(0).max(1);
        let ms_per_col = AGG_PX / self.scale.px_per_ms;
        for c in 0..n {
            let total: u32 = counts[c].iter().sum();
            if total == 0 && waiting[c] == 0 && marks[c].iter().all(|&m| m == 0) {
                continue;
            }
            let x = PLOT_X + c as f64 * AGG_PX;
            let t0 = (self.scale.lo + c as f64 * ms_per_col).round() as Ms;
            let t1 = (self.scale.lo + (c + 1) as f64 * ms_per_col).round() as Ms;
            let mut title = format!(
                "{} to {} UTC: {}",
                stamp(t0),
                clock(t1),
                plural(total as usize, "attempt", "attempts")
            );
            let parts: Vec<String> = Outcome::ALL
                .iter()
                .filter(|o| counts[c][o.index()] > 0)
                .map(|o| format!("{} {}", counts[c][o.index()], o.name()))
                .collect();
            if !parts.is_empty() {
                let _ = write!(title, " ({})", parts.join(", "));
            }
            if waiting[c] > 0 {
                let _ = write!(title, "; {} waiting", waiting[c]);
            }
            for m in Mark::ALL {
                let k = marks[c][m as usize];
                if k > 0 {
                    let _ = write!(title, "; {k} × {}", m.legend());
                }
            }
            let shade = 0.35 + 0.65 * (f64::from(total).ln_1p() / f64::from(busiest).ln_1p());
            let _ = write!(
                out,
                "<g class=\"column\"><title>{}</title><g opacity=\"{shade:.2}\">",
                esc(&title)
            );
            let mut y = r.bar_y;
            for o in Outcome::ALL {
                let k = counts[c][o.index()];
                if k == 0 {
                    continue;
                }
                let h = r.bar_h * f64::from(k) / f64::from(total);
                let _ = write!(
                    out,
                    "<rect class=\"agg outcome-{}\" x=\"{x:.1}\" y=\"{y:.2}\" width=\"{AGG_PX}\" height=\"{h:.2}\"/>",
                    o.name()
                );
                y += h;
            }
            out.push_str("</g>");
            if waiting[c] > 0 {
                let _ = write!(
                    out,
                    "<rect class=\"wait\" x=\"{x:.1}\" y=\"{:.1}\" width=\"{AGG_PX}\" height=\"{:.1}\" \
                     fill-opacity=\"{:.2}\"/>",
                    r.wait_y,
                    r.wait_h,
                    0.25 + 0.75 * f64::from(waiting[c]) / f64::from(most_waiting)
                );
            }
            for m in Mark::ALL {
                if marks[c][m as usize] > 0 {
                    m.shape(out, x + AGG_PX / 2.0, r, None);
                }
            }
            out.push_str("</g>\n");
        }
    }
}

// ---------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------

/// Read every input into `builder`; the number of malformed lines.
fn read_inputs(inputs: &[PathBuf], builder: &mut Builder) -> Result<u64> {
    let stdin_path = PathBuf::from("-");
    let inputs = if inputs.is_empty() {
        std::slice::from_ref(&stdin_path)
    } else {
        inputs
    };
    let mut malformed = 0;
    let mut stdin_read = false;
    for path in inputs {
        let (name, reader): (Cow<'_, str>, Box<dyn Read>) = if path.as_os_str() == "-" {
            if stdin_read {
                continue;
            }
            stdin_read = true;
            ("stdin".into(), Box::new(io::stdin()))
        } else {
            let f = File::open(path).map_err(|e| {
                Error::usage(format!("cannot open events file {}: {e}", path.display()))
            })?;
            (path.to_string_lossy(), Box::new(f))
        };
        let mut lines = JsonLines::new(BufReader::with_capacity(256 * 1024, reader));
        for event in lines.by_ref() {
            let event = event.map_err(|e| Error::usage(format!("cannot read {name}: {e}")))?;
            builder.push(event);
        }
        malformed += lines.malformed;
    }
    Ok(malformed)
}

/// Write `data` to `path` through a temporary file beside it, so a reader
/// never sees half a picture.
fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let fail = |e: io::Error| Error::usage(format!("cannot write {}: {e}", path.display()));
    let name = path
        .file_name()
        .ok_or_else(|| Error::usage(format!("cannot write {}: not a file name", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let written = File::create(&tmp)
        .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(())
}

/// `locksup timeline`.
pub fn main(args: TimelineArgs) -> Result<i32> {
    let mut builder = Builder::new();
    let malformed = read_inputs(&args.events, &mut builder)?;
    let skipped = plural(
        usize::try_from(malformed).unwrap_or(usize::MAX),
        "malformed line",
        "malformed lines",
    );
    if builder.events() == 0 {
        let why = if malformed > 0 {
            format!("no events found in the input ({skipped} skipped)")
        } else {
            "no events found in the input".to_owned()
        };
        return Err(Error::with_code(NO_EVENTS, why));
    }
    if malformed > 0 {
        let _ = writeln!(io::stderr(), "locksup: skipped {skipped}");
    }
    let svg = render(&builder.finish(), malformed);
    match &args.output {
        Some(path) => write_file(path, svg.as_bytes())?,
        None => {
            let mut stdout = io::stdout().lock();
            stdout
                .write_all(svg.as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(|e| Error::usage(format!("cannot write the SVG: {e}")))?;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(event: &str, id: &str, ts: &str, extra: &str) -> String {
        format!(
            "{{\"ts\":\"{ts}\",\"event\":\"{event}\",\"attempt_id\":\"{id}\",\"lock\":\"/s/a.lock\"{extra}}}"
        )
    }

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(10_957), (2000, 1, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
        assert_eq!(civil(20_781), (2026, 11, 24));
        assert_eq!(civil(2_932_896), (9999, 12, 31));
        for d in (0..2_932_897).step_by(997) {
            let (y, m, day) = civil(d);
            assert_eq!(days_from_civil(y, m, day), d, "{y}-{m}-{day}");
        }
        assert_eq!(stamp(1_795_507_413_123), "2026-11-24 08:03:33.123");
    }

    #[test]
    fn steps_suit_spans_from_milliseconds_to_years() {
        let max = PLOT_W / 110.0;
        assert_eq!(Step::for_span(5.0, max), Step::Ms(1));
        assert_eq!(Step::for_span(2_000.0, max), Step::Ms(500));
        assert_eq!(Step::for_span(3_600_000.0, max), Step::Ms(10 * MINUTE));
        assert_eq!(Step::for_span(3.0 * DAY as f64, max), Step::Ms(12 * HOUR));
        assert_eq!(Step::for_span(400.0 * DAY as f64, max), Step::Months(3));
        let t0 = parse_ts("2026-11-24T08:03:33.123Z").unwrap_or(0);
        let ticks = Step::Ms(10 * MINUTE).ticks(t0, t0 + HOUR);
        assert_eq!(ticks.len(), 6);
        assert_eq!(Step::Ms(10 * MINUTE).label(ticks[0]), "08:10");
        let ticks = Step::Months(3).ticks(t0, t0 + 200 * DAY);
        assert_eq!(
            ticks.iter().map(|&t| date(t)).collect::<Vec<_>>(),
            ["2027-01-01", "2027-04-01"]
        );
        let ticks = Step::Months(12_000).ticks(0, 253_402_300_799_000);
        assert_eq!(ticks.len(), 8);
        assert_eq!(date(ticks[7]), "9000-01-01");
        assert_eq!(Step::Months(12_000).label(ticks[7]), "9000");
        let y10k = days_from_civil(10_000, 1, 1) * DAY;
        assert_eq!(Step::Months(12_000).label(y10k), "10000");
        assert_eq!(Step::Months(1).label(y10k), "10000-01");
        assert_eq!(Step::Ms(DAY).label(y10k), "01-01");
    }

    #[test]
    fn parsing_is_strict_on_the_envelope_and_lenient_on_the_rest() {
        let l = line(
            "acquired",
            "x",
            "2026-11-24T08:03:33.123Z",
            ",\"wait_ms\":\"no\"",
        );
        let e = parse_line(l.as_bytes()).expect("parses");
        assert_eq!(e.kind, Kind::Acquired { wait_ms: None });
        assert!(parse_line(line("end", "", "2026-11-24T08:03:33Z", "").as_bytes()).is_none());
        assert!(parse_line(line("end", "x", "yesterday", "").as_bytes()).is_none());
        assert!(parse_line(line("end", "x", "1900-01-01T00:00:00Z", "").as_bytes()).is_none());
        assert!(parse_line(b"[1,2]").is_none());
        assert!(parse_line(b"\xff\xfe").is_none());
        let l = line(
            "status",
            "x",
            "2026-11-24T08:03:33Z",
            ",\"reason\":\"lease-lost\"",
        );
        assert_eq!(
            parse_line(l.as_bytes()).map(|e| e.kind),
            Some(Kind::LeaseLost)
        );
        let l = line(
            "started",
            "a\u{1}b\nc",
            "2026-11-24T08:03:33Z",
            ",\"command\":[\"sh\",\"-c\",1]",
        );
        let l = l.replace('\u{1}', "\\u0001").replace('\n', "\\n");
        let e = parse_line(l.as_bytes()).expect("parses");
        assert_eq!(
            e.kind,
            Kind::Started {
                command: Some("sh -c".to_owned())
            }
        );
        let mut b = Builder::new();
        b.push(e.clone());
        b.push(e);
        let tl = b.finish();
        assert_eq!(tl.attempts(), 1);
        assert_eq!(tl.attempts[0].id, "a\u{fffd}b c");
    }

    #[test]
    fn overlong_and_malformed_lines_are_counted() {
        let mut text = line("acquired", "x", "2026-11-24T08:03:33.123Z", "");
        text.push_str("\nnot json\n\n   \n");
        text.push_str(&"x".repeat(MAX_LINE + 10));
        text.push('\n');
        text.push_str(&line(
            "end",
            "x",
            "2026-11-24T08:03:34Z",
            ",\"outcome\":\"exited\"",
        ));
        let mut lines = JsonLines::new(BufReader::with_capacity(16, text.as_bytes()));
        let events: Vec<Event> = lines.by_ref().filter_map(io::Result::ok).collect();
        assert_eq!(events.len(), 2);
        assert_eq!(lines.malformed, 2);
    }

    #[test]
    fn escaping_and_labels() {
        assert_eq!(
            esc("a<b & \"c\" 'd'>"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;"
        );
        assert_eq!(
            common_dir(["/srv/s/a.lock", "/srv/s/b/c.lock"].into_iter()),
            "/srv/s/"
        );
        assert_eq!(
            common_dir(["/srv/sa.lock", "/srv/sb.lock"].into_iter()),
            "/srv/"
        );
        assert_eq!(short_label("/srv/s/a.lock", "/srv/s/"), "a.lock");
        let mut names = ["s-10", "s-2", "s-02", "s-1b", "s-1", "t"];
        names.sort_by(|a, b| natural(a, b));
        assert_eq!(names, ["s-1", "s-1b", "s-2", "s-02", "s-10", "t"]);
        let long = format!("/srv/{}.lock", "x".repeat(60));
        let label = short_label(&long, "/");
        assert_eq!(label.chars().count(), LABEL_CHARS);
        assert!(label.starts_with('…') && label.ends_with("x.lock"));
    }

    #[test]
    fn a_kill_after_term_is_the_final_signal_in_any_order() {
        for order in [[0, 1], [1, 0]] {
            let lines = [
                line(
                    "signal",
                    "x",
                    "2026-11-24T08:00:01Z",
                    ",\"signal\":\"SIGTERM\",\"reason\":\"timeout\"",
                ),
                line(
                    "signal",
                    "x",
                    "2026-11-24T08:00:02Z",
                    ",\"signal\":\"SIGINT\",\"reason\":\"timeout\"",
                ),
            ];
            let mut b = Builder::new();
            for i in order {
                b.push(parse_line(lines[i].as_bytes()).expect("parses"));
            }
            let tl = b.finish();
            let a = &tl.attempts[0];
            assert_eq!(
                a.first_signal.as_ref().map(|s| s.signal.as_str()),
                Some("SIGTERM")
            );
            assert_eq!(
                a.final_signal.as_ref().map(|s| s.signal.as_str()),
                Some("SIGINT")
            );
        }
    }

    #[test]
    fn an_attempt_id_used_again_after_its_end_is_a_new_attempt() {
        let mut b = Builder::new();
        for (event, ts, extra) in [
            ("acquired", "2026-11-24T08:00:00Z", ""),
            (
                "end",
                "2026-11-24T08:00:01Z",
                ",\"outcome\":\"exited\",\"exit_code\":0",
            ),
            ("acquired", "2026-11-24T08:00:02Z", ""),
        ] {
            b.push(parse_line(line(event, "x", ts, extra).as_bytes()).expect("parses"));
        }
        let tl = b.finish();
        assert_eq!(tl.attempts(), 2);
        let svg = render(&tl, 0);
        assert_eq!(svg.matches("class=\"bar outcome-exited\"").count(), 1);
        assert_eq!(svg.matches("class=\"bar outcome-unknown open\"").count(), 1);
    }
}
