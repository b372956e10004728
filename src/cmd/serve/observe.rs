//! What the daemon learns of each attempt: its supervisor writes a copy of
//! every event (`LOCKSUP_DAEMON_EVENTS_FD`, set by `locksup serve`) to a pipe the daemon reads here.
//! Waits, holds, release latencies and leaks go to the metrics as they
//! happen; when the attempt is over (its supervisor reaped and the pipe
//! at its end) its outcome is counted and its record joins the history.
//!
//! The supervisor's end of the pipe is non-blocking: a daemon that does
//! not read costs events, never the attempt's time. Lines are bounded;
//! anything that is not an event line is skipped.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, SystemTime};

use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use serde::Deserialize;
use tokio::io::AsyncReadExt as _;
use tokio::net::unix::pipe;

use super::history::Record;
use super::metrics::Outcome;
use super::*;

/// The longest event line read; longer ones are skipped.
const MAX_LINE: usize = 64 << 10;
/// How long after its supervisor was reaped an attempt's pipe may stay
/// open (something still holds it) before the record is made without it.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// The pipe for one attempt: the daemon reads `read`; `write` goes to the
/// supervisor (inherited, at its number: [`Pipe::for_child`]).
pub(super) struct Pipe {
    pub(super) read: OwnedFd,
    pub(super) write: OwnedFd,
}

impl Pipe {
    pub(super) fn new() -> nix::Result<Pipe> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
        Ok(Pipe { read, write })
    }

    /// Let the next child inherit the write end (the caller starts it at
    /// once, then drops the write end); its number for the command line.
    pub(super) fn for_child(&self) -> nix::Result<RawFd> {
        fcntl(&self.write, FcntlArg::F_SETFD(FdFlag::empty()))?;
        Ok(self.write.as_raw_fd())
    }
}

/// What the daemon knows of an attempt when it starts.
pub(super) struct Submitted {
    pub(super) attempt_id: String,
    pub(super) lock: PathBuf,
    pub(super) uid: u32,
    pub(super) at: SystemTime,
}

/// An attempt being watched: its events and its exit status.
pub(super) struct Watch {
    pub(super) submitted: Submitted,
    pub(super) events: OwnedFd,
    /// Its exit status, and whether its supervisor died from a signal.
    pub(super) exit: oneshot::Receiver<(i32, bool)>,
}

/// The fields of an event line the daemon uses.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(borrow)]
    ts: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(default)]
    wait_ms: Option<f64>,
    #[serde(default)]
    held_ms: Option<f64>,
    #[serde(default)]
    reason: Option<serde_json::Value>,
    #[serde(default)]
    outcome: Option<serde_json::Value>,
    #[serde(default)]
    fence: Option<u64>,
}

/// What the events said so far.
#[derive(Default, Debug)]
pub(super) struct Seen {
    acquired: Option<SystemTime>,
    wait_ms: Option<u64>,
    held_ms: Option<u64>,
    /// When the first signal at a deadline was sent.
    deadline: Option<SystemTime>,
    end: Option<(SystemTime, Outcome)>,
    fence: Option<u64>,
}

/// Reasons for a signal that mean a deadline was reached.
fn at_deadline(reason: &str) -> bool {
    matches!(reason, "timeout" | "watchdog" | "ready-timeout") || reason.starts_with("lease-")
}

// `as` saturates: an absurd value is not an error.
#[allow(clippy::cast_possible_truncation)]
fn millis(ms: f64) -> Option<u64> {
    (ms.is_finite() && ms >= 0.0).then(|| ms.round().min(u64::MAX as f64) as u64)
}

impl Seen {
    /// Take one event line; record what the metrics count as it happens.
    pub(super) fn take(&mut self, line: &[u8], metrics: &super::metrics::Metrics) {
        let Ok(ev) = serde_json::from_slice::<Line<'_>>(line) else {
            return;
        };
        let Ok(ts) = humantime::parse_rfc3339(&ev.ts) else {
            return;
        };
        let text = |v: &Option<serde_json::Value>| {
            v.as_ref()
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        match ev.event.as_ref() {
            "acquired" if self.acquired.is_none() => {
                self.acquired = Some(ts);
                self.fence = ev.fence;
                if let Some(w) = ev.wait_ms.filter(|w| w.is_finite() && *w >= 0.0) {
                    self.wait_ms = millis(w);
                    metrics.waited(w / 1000.0);
                }
            }
            "exited" if self.held_ms.is_none() => {
                if let Some(h) = ev.held_ms.filter(|h| h.is_finite() && *h >= 0.0) {
                    self.held_ms = millis(h);
                    metrics.held(h / 1000.0);
                }
            }
            "signal" if self.deadline.is_none() && at_deadline(&text(&ev.reason)) => {
                self.deadline = Some(ts);
            }
            "released" => {
                if let Some(d) = self.deadline.take() {
                    let after = ts.duration_since(d).unwrap_or(Duration::ZERO);
                    metrics.released(after.as_secs_f64());
                }
            }
            "leak" => metrics.leak(),
            "end" if self.end.is_none() => {
                self.end = Some((ts, Outcome::of_event(&text(&ev.outcome))));
            }
            _ => {}
        }
    }

    /// The record of an attempt that ended with `code`.
    pub(super) fn record(self, s: Submitted, code: i32, killed: bool) -> Record {
        let (ended, outcome) = self.end.unwrap_or_else(|| {
            let o = if killed {
                Outcome::Killed
            } else {
                Outcome::Failure
            };
            (SystemTime::now(), o)
        });
        Record {
            attempt_id: s.attempt_id,
            lock: s.lock.display().to_string(),
            uid: s.uid,
            started: s.at,
            acquired: self.acquired,
            ended,
            outcome,
            exit_code: code,
            wait_ms: self.wait_ms,
            held_ms: self.held_ms,
            fence: self.fence,
        }
    }
}

/// Splits bytes into lines of at most [`MAX_LINE`] bytes, skipping longer
/// ones whole.
#[derive(Default)]
pub(super) struct Lines {
    buf: Vec<u8>,
    skipping: bool,
}

impl Lines {
    pub(super) fn feed(&mut self, mut data: &[u8], mut each: impl FnMut(&[u8])) {
        while let Some(nl) = data.iter().position(|b| *b == b'\n') {
            if !self.skipping {
                if self.buf.is_empty() {
                    each(&data[..nl]);
                } else {
                    self.buf.extend_from_slice(&data[..nl]);
                    each(&self.buf);
                }
            }
            self.buf.clear();
            self.skipping = false;
            data = &data[nl + 1..];
        }
        if self.skipping {
            return;
        }
        if self.buf.len() + data.len() > MAX_LINE {
            self.buf = Vec::new();
            self.skipping = true;
        } else {
            self.buf.extend_from_slice(data);
        }
    }
}

/// Watch one attempt to its end; then count its outcome and keep its
/// record.
pub(super) async fn watch(state: Shared, w: Watch) {
    let metrics = state.borrow().metrics.clone();
    let mut seen = Seen::default();
    let mut lines = Lines::default();
    let mut events = match pipe::Receiver::from_owned_fd(w.events) {
        Ok(r) => Some(r),
        Err(e) => {
            log::warn!("attempt {}: its events: {e}", w.submitted.attempt_id);
            None
        }
    };
    let mut exit = w.exit;
    let mut code: Option<(i32, bool)> = None;
    let mut drain_until: Option<Instant> = None;
    let mut chunk = vec![0u8; 8192];
    while events.is_some() || code.is_none() {
        tokio::select! {
            n = async {
                match events.as_mut() {
                    Some(r) => r.read(&mut chunk).await,
                    None => std::future::pending().await,
                }
            } => match n {
                Ok(0) | Err(_) => events = None,
                Ok(n) => lines.feed(&chunk[..n], |l| seen.take(l, &metrics)),
            },
            c = &mut exit, if code.is_none() => {
                code = Some(c.unwrap_or((exit::FAILURE, false)));
                drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
            }
            _ = async {
                match drain_until {
                    Some(t) => sleep_until(t).await,
                    None => std::future::pending().await,
                }
            }, if events.is_some() => {
                log::debug!(
                    "attempt {}: its events pipe is still open after it ended",
                    w.submitted.attempt_id
                );
                events = None;
            }
        }
    }
    let (code, killed) = code.unwrap_or((exit::FAILURE, false));
    let record = seen.record(w.submitted, code, killed);
    metrics.ended(record.outcome);
    state.borrow_mut().history.push(record);
}

#[cfg(test)]
mod tests {
    use super::super::metrics::Metrics;
    use super::*;

    #[test]
    fn lines_are_split_and_long_ones_skipped() {
        let mut l = Lines::default();
        let mut got = Vec::new();
        l.feed(b"ab", |x| got.push(x.to_vec()));
        l.feed(b"c\nd\n", |x| got.push(x.to_vec()));
        l.feed(&vec![b'x'; MAX_LINE + 1], |x| got.push(x.to_vec()));
        l.feed(b"yy\nok\n", |x| got.push(x.to_vec()));
        assert_eq!(got, [b"abc".to_vec(), b"d".to_vec(), b"ok".to_vec()]);
    }

    #[test]
    fn events_make_the_record_and_the_histograms() {
        let m = Metrics::new();
        let mut s = Seen::default();
        let ev =
            |t: &str, rest: &str| format!(r#"{{"ts":"2026-01-01T00:00:{t}Z","event":{rest}}}"#);
        for l in [
            ev("01.000", r#""acquired","wait_ms":1500.4"#),
            ev(
                "02.000",
                r#""signal","reason":"timeout","signal":"SIGTERM""#,
            ),
            ev("02.250", r#""exited","held_ms":1000,"signal":"SIGTERM""#),
            ev("02.250", r#""released","ms_after_exit":0.1"#),
            "garbage".to_owned(),
            ev("03.000", r#""end","outcome":"timeout","exit_code":124"#),
        ] {
            s.take(l.as_bytes(), &m);
        }
        let sub = Submitted {
            attempt_id: "a".into(),
            lock: "/l".into(),
            uid: 7,
            at: SystemTime::UNIX_EPOCH,
        };
        let r = s.record(sub, 124, false);
        assert_eq!(r.outcome, Outcome::Timeout);
        assert_eq!(
            (r.wait_ms, r.held_ms, r.exit_code),
            (Some(1500), Some(1000), 124)
        );
        assert!(r.acquired.is_some());
        let text = m.encode();
        assert!(
            text.contains("locksup_lock_wait_seconds_sum 1.5004"),
            "{text}"
        );
        assert!(text.contains("locksup_lock_hold_seconds_sum 1.0"), "{text}");
        assert!(
            text.contains("locksup_release_latency_seconds_sum 0.25"),
            "{text}"
        );
        assert!(
            text.contains("locksup_release_latency_seconds_bucket{le=\"0.25\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn without_an_end_event_the_reap_decides() {
        let sub = || Submitted {
            attempt_id: "a".into(),
            lock: "/l".into(),
            uid: 7,
            at: SystemTime::UNIX_EPOCH,
        };
        assert_eq!(
            Seen::default().record(sub(), 137, true).outcome,
            Outcome::Killed
        );
        assert_eq!(
            Seen::default().record(sub(), 125, false).outcome,
            Outcome::Failure
        );
    }
}
