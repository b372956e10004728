//! The input: `--events` lines parsed (bounded, malformed ones counted)
//! and folded into attempts, one per attempt id, by lock.

use super::*;

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

pub(super) const LEASE_LOST: &str = "lease-lost";

/// Keep at most `max` characters, with control characters made harmless
/// (whitespace becomes a space, the rest U+FFFD): they are not all valid
/// in XML, and a title is one line per item.
pub(super) fn clean(s: &str, max: usize) -> String {
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
pub(super) fn parse_ts(s: &str) -> Option<Ms> {
    let t = humantime::parse_rfc3339(s).ok()?;
    i64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()
}

/// A command from `started`: a string, or an array of strings (argv).
pub(super) fn command_of(v: Option<&Value>) -> Option<String> {
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
pub(super) struct RawEvent<'a> {
    #[serde(borrow)]
    pub(super) ts: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) event: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) attempt_id: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) lock: Cow<'a, str>,
    #[serde(default)]
    pub(super) reason: Option<Value>,
    #[serde(default)]
    pub(super) signal: Option<Value>,
    #[serde(default)]
    pub(super) wait_ms: Option<Value>,
    #[serde(default)]
    pub(super) status: Option<Value>,
    #[serde(default)]
    pub(super) exit_code: Option<Value>,
    #[serde(default)]
    pub(super) outcome: Option<Value>,
    #[serde(default)]
    pub(super) error: Option<Value>,
    #[serde(default)]
    pub(super) command: Option<Value>,
    #[serde(default)]
    pub(super) argv: Option<Value>,
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

pub(super) enum Line {
    Text,
    TooLong,
    Eof,
}

/// Read one line (without its newline) into `buf`, at most [`MAX_LINE`]
/// bytes of it: a longer line is consumed but not kept.
pub(super) fn next_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<Line> {
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
    pub(super) reader: R,
    pub(super) buf: Vec<u8>,
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

/// How an attempt ended, as the timeline classes it: the outcome its `end`
/// event names (parsed by its one owner, [`Ended`]), or a class of the
/// timeline's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// An outcome this version's `end` event sends.
    End(Ended),
    /// An outcome this version does not know.
    Other,
    /// No `end` event.
    Unknown,
}

impl Outcome {
    /// How many classes there are.
    pub(super) const COUNT: usize = Ended::ALL.len() + 2;

    /// Every class, in the order of the legend: [`Ended::ALL`], then
    /// `other` and `unknown`.
    pub(super) const ALL: [Outcome; Outcome::COUNT] = {
        let mut all = [Outcome::Unknown; Outcome::COUNT];
        let mut i = 0;
        while i < Ended::ALL.len() {
            all[i] = Outcome::End(Ended::ALL[i]);
            i += 1;
        }
        all[i] = Outcome::Other;
        all
    };

    pub(super) fn of(name: &str) -> Outcome {
        match Ended::parse(name) {
            Some(o) => Outcome::End(o),
            None => Outcome::Other,
        }
    }

    /// The name in events, and in the CSS class `outcome-NAME`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Outcome::End(o) => o.as_str(),
            Outcome::Other => "other",
            Outcome::Unknown => "unknown",
        }
    }

    /// Fill colour: distinct hues for the outcomes that matter in an
    /// incident (a colour-blind-safe set first), greys for no outcome.
    pub(crate) fn colour(self) -> &'static str {
        match self {
            Outcome::End(o) => match o {
                Ended::Exited => "#3a9a5b",
                Ended::Killed => "#8c510a",
                Ended::Timeout => "#e69f00",
                Ended::Watchdog => "#d55e00",
                Ended::ReadyTimeout => "#cc79a7",
                Ended::Cancelled => "#5f6b7a",
                Ended::Busy => "#56b4e9",
                Ended::WaitExpired => "#0072b2",
                Ended::NotFound => "#b2182b",
                Ended::CannotExecute => "#e7298a",
                Ended::Failed => "#222222",
                Ended::LeaseLost => "#7b3294",
            },
            Outcome::Other => "#a6761d",
            Outcome::Unknown => "#bdbdbd",
        }
    }

    /// Its place in [`Outcome::ALL`].
    pub(super) fn index(self) -> usize {
        Outcome::ALL
            .iter()
            .position(|&o| o == self)
            .unwrap_or(Outcome::COUNT - 1)
    }
}

/// A signal sent to an attempt.
#[derive(Debug, Clone)]
pub(super) struct SignalMark {
    pub(super) ts: Ms,
    pub(super) signal: String,
    pub(super) reason: String,
}

/// The `end` of an attempt.
#[derive(Debug, Clone)]
pub(super) struct End {
    pub(super) ts: Ms,
    pub(super) outcome: Outcome,
    /// The outcome's name when it is [`Outcome::Other`].
    pub(super) other: Option<String>,
    pub(super) exit_code: Option<i64>,
    pub(super) error: Option<String>,
}

/// What one attempt did: fixed fields and bounded strings, whatever the
/// number of its events.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    pub(super) id: String,
    pub(super) lane: usize,
    pub(super) first: Ms,
    pub(super) last: Ms,
    pub(super) waiting: Option<Ms>,
    pub(super) wait_ms: Option<f64>,
    pub(super) acquired: Option<Ms>,
    pub(super) started: Option<Ms>,
    pub(super) command: Option<String>,
    pub(super) first_signal: Option<SignalMark>,
    pub(super) final_signal: Option<SignalMark>,
    pub(super) signals: u32,
    pub(super) watchdog_at: Option<Ms>,
    pub(super) last_heartbeat: Option<Ms>,
    pub(super) heartbeats: u32,
    pub(super) exited: Option<(Option<i64>, Option<String>)>,
    pub(super) released: Option<Ms>,
    pub(super) leak: Option<Ms>,
    pub(super) lease_lost: Option<Ms>,
    pub(super) conflict: Option<Ms>,
    pub(super) end: Option<End>,
}

impl Attempt {
    pub(super) fn new(id: String, lane: usize, ts: Ms) -> Self {
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

    pub(super) fn outcome(&self) -> Outcome {
        self.end.as_ref().map_or(Outcome::Unknown, |e| e.outcome)
    }

    /// The command exited by itself with a status other than 0.
    pub(super) fn failed_exit(&self) -> bool {
        self.end.as_ref().is_some_and(|e| {
            e.outcome == Outcome::End(Ended::Exited) && e.exit_code.is_some_and(|c| c != 0)
        })
    }
}

pub(super) fn earliest(slot: &mut Option<Ms>, ts: Ms) {
    *slot = Some(slot.map_or(ts, |t| t.min(ts)));
}

pub(super) fn is_final_signal(name: &str) -> bool {
    matches!(name, "SIGKILL" | "KILL" | "9")
}

/// Folds events into attempts. An attempt is its `attempt_id` on its
/// `lock`; events of that pair after its `end` begin a new attempt (an id
/// given again with --attempt-id).
#[derive(Default)]
pub(crate) struct Builder {
    pub(super) lanes: Vec<String>,
    pub(super) lane_of: HashMap<String, usize>,
    pub(super) attempts: Vec<Attempt>,
    pub(super) open: HashMap<(usize, String), usize>,
    pub(super) events: u64,
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
                if o == Outcome::End(Ended::LeaseLost) {
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
    pub(super) lanes: Vec<String>,
    pub(super) attempts: Vec<Attempt>,
}

impl Timeline {
    #[cfg(test)]
    pub(crate) fn attempts(&self) -> usize {
        self.attempts.len()
    }
}
