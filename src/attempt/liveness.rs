//! An attempt's liveness: its current deadline (which `EXTEND_TIMEOUT_USEC`
//! may move, never past the hard cap), its watchdog (heartbeats by
//! `WATCHDOG=1` or by touching the lock file), its readiness
//! (`READY=1` within `--ready-timeout`) and its own status line.
//!
//! Pure bookkeeping on monotonic instants; [`crate::attempt::supervise`] feeds it
//! and asks what is due next.

use std::time::Duration;

use tokio::time::Instant;

/// What comes due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// The (possibly extended) deadline.
    Deadline,
    /// No heartbeat for the watchdog interval.
    Watchdog,
    /// Not ready within the ready timeout.
    Ready,
}

/// Liveness of one attempt, from the moment it holds the lock.
#[derive(Debug, Clone)]
pub(crate) struct Liveness {
    acquired: Instant,
    deadline: Option<Instant>,
    cap: Option<Instant>,
    watchdog: Option<Duration>,
    last_beat: Instant,
    ready_by: Option<Instant>,
    ready: bool,
    status: Option<String>,
    last_beat_event: Option<Instant>,
}

/// How often at most a `heartbeat` event is reported.
pub(crate) const HEARTBEAT_EVENT_EVERY: Duration = Duration::from_secs(1);

impl Liveness {
    /// Start the clocks at `acquired`. `max_timeout` caps extensions,
    /// counted from acquisition.
    pub(crate) fn new(
        acquired: Instant,
        timeout: Option<Duration>,
        max_timeout: Option<Duration>,
        watchdog: Option<Duration>,
        ready_timeout: Option<Duration>,
    ) -> Liveness {
        let cap = max_timeout.map(|m| acquired + m);
        let deadline = timeout.map(|t| {
            let d = acquired + t;
            cap.map_or(d, |c| d.min(c))
        });
        Liveness {
            acquired,
            deadline,
            cap,
            watchdog,
            last_beat: acquired,
            ready_by: ready_timeout.map(|r| acquired + r),
            ready: false,
            status: None,
            last_beat_event: None,
        }
    }

    /// The earliest thing due, and when.
    pub(crate) fn next_due(&self) -> Option<(Instant, Due)> {
        [
            self.deadline.map(|t| (t, Due::Deadline)),
            self.watchdog.map(|w| (self.last_beat + w, Due::Watchdog)),
            self.ready_by.map(|t| (t, Due::Ready)),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|(t, _)| *t)
    }

    /// A heartbeat. Returns whether it should be reported now (at most
    /// one `heartbeat` event per [`HEARTBEAT_EVENT_EVERY`]).
    pub(crate) fn heartbeat(&mut self, now: Instant) -> bool {
        self.last_beat = now;
        let report = self
            .last_beat_event
            .is_none_or(|t| now.duration_since(t) >= HEARTBEAT_EVENT_EVERY);
        if report {
            self.last_beat_event = Some(now);
        }
        report
    }

    /// `EXTEND_TIMEOUT_USEC`: the deadline becomes `now + by` if that is
    /// later, never past the cap. Without a deadline there is nothing to
    /// extend. Returns the new deadline when it moved.
    pub(crate) fn extend(&mut self, now: Instant, by: Duration) -> Option<Instant> {
        let current = self.deadline?;
        let mut wanted = now + by;
        if let Some(cap) = self.cap {
            wanted = wanted.min(cap);
        }
        if wanted > current {
            self.deadline = Some(wanted);
            Some(wanted)
        } else {
            None
        }
    }

    /// `WATCHDOG_USEC`: a new interval, counted from now.
    pub(crate) fn set_watchdog(&mut self, now: Instant, interval: Duration) {
        self.watchdog = Some(interval);
        self.last_beat = now;
    }

    /// `READY=1`. Returns whether this is news.
    pub(crate) fn set_ready(&mut self) -> bool {
        self.ready_by = None;
        !std::mem::replace(&mut self.ready, true)
    }

    /// `STATUS=`. Returns whether it changed.
    pub(crate) fn set_status(&mut self, text: String) -> bool {
        if self.status.as_deref() == Some(text.as_str()) {
            return false;
        }
        self.status = Some(text);
        true
    }

    /// The current deadline.
    #[cfg(test)]
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// When the lock was acquired.
    pub(crate) fn acquired(&self) -> Instant {
        self.acquired
    }

    /// The last heartbeat (acquisition if none yet).
    pub(crate) fn last_beat(&self) -> Instant {
        self.last_beat
    }

    /// The attempt's own status line.
    #[cfg(test)]
    pub(crate) fn status(&self) -> Option<&str> {
        self.status.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn deadline_watchdog_and_ready_come_due_in_order() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, Some(10 * S), None, Some(2 * S), Some(S));
        assert_eq!(l.next_due(), Some((t0 + S, Due::Ready)));
        assert!(l.set_ready());
        assert!(!l.set_ready());
        assert_eq!(l.next_due(), Some((t0 + 2 * S, Due::Watchdog)));
        l.heartbeat(t0 + 9 * S);
        assert_eq!(l.next_due(), Some((t0 + 10 * S, Due::Deadline)));
    }

    #[test]
    fn extension_moves_forward_only_and_never_past_the_cap() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, Some(2 * S), Some(5 * S), None, None);
        assert_eq!(l.extend(t0, S), None, "earlier than the deadline");
        assert_eq!(l.extend(t0 + S, 3 * S), Some(t0 + 4 * S));
        assert_eq!(l.extend(t0 + 3 * S, 60 * S), Some(t0 + 5 * S));
        assert_eq!(l.extend(t0 + 4 * S, 60 * S), None, "at the cap");
        let mut none = Liveness::new(t0, None, None, None, None);
        assert_eq!(none.extend(t0, S), None, "no deadline, nothing to extend");
        assert_eq!(none.next_due(), None);
    }

    #[test]
    fn the_cap_also_bounds_the_initial_deadline() {
        let t0 = Instant::now();
        let l = Liveness::new(t0, Some(10 * S), Some(3 * S), None, None);
        assert_eq!(l.deadline(), Some(t0 + 3 * S));
    }

    #[test]
    fn heartbeat_events_are_rate_limited() {
        let t0 = Instant::now();
        let mut l = Liveness::new(t0, None, None, Some(S), None);
        assert!(l.heartbeat(t0));
        assert!(!l.heartbeat(t0 + S / 2));
        assert!(l.heartbeat(t0 + S));
        assert_eq!(l.last_beat(), t0 + S);
        l.set_watchdog(t0 + 2 * S, 3 * S);
        assert_eq!(l.next_due(), Some((t0 + 5 * S, Due::Watchdog)));
    }

    #[test]
    fn status_changes_are_noticed() {
        let mut l = Liveness::new(Instant::now(), None, None, None, None);
        assert!(l.set_status("a".into()));
        assert!(!l.set_status("a".into()));
        assert_eq!(l.status(), Some("a"));
    }
}
