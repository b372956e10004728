//! The attempts that ended lately (`[serve] history`, default
//! [`DEFAULT_BOUND`]): a ring of fixed-size records with bounded strings,
//! so memory stays flat however many attempts go through the daemon.
//! `locksup status --daemon --history` reads it (a `history` frame).

use std::collections::VecDeque;
use std::time::SystemTime;

use super::metrics::Outcome;
use crate::protocol::{FinishedInfo, MAX_FRAME};

/// How many finished attempts are kept when `[serve] history` is not set.
pub(super) const DEFAULT_BOUND: usize = 1000;

/// The longest attempt id kept (in bytes, cut at a character boundary).
const MAX_ID: usize = 256;
/// The longest lock path kept.
const MAX_LOCK: usize = 4096;

/// One attempt that ended.
#[derive(Debug, Clone)]
pub(super) struct Record {
    pub(super) attempt_id: String,
    pub(super) lock: String,
    pub(super) uid: u32,
    /// When it was submitted.
    pub(super) started: SystemTime,
    /// When it got its lock, per its `acquired` event.
    pub(super) acquired: Option<SystemTime>,
    /// When it ended (its `end` event, else when the daemon saw it end).
    pub(super) ended: SystemTime,
    pub(super) outcome: Outcome,
    /// The exit status its client got.
    pub(super) exit_code: i32,
    pub(super) wait_ms: Option<u64>,
    pub(super) held_ms: Option<u64>,
    /// Its fencing token, per its `acquired` event.
    pub(super) fence: Option<u64>,
}

/// Cut `s` to at most `max` bytes, at a character boundary.
pub(super) fn bounded(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s.shrink_to_fit();
    s
}

/// The last `bound` records, oldest first.
pub(super) struct History {
    bound: usize,
    records: VecDeque<Record>,
}

impl History {
    pub(super) fn new(bound: usize) -> History {
        History {
            bound,
            records: VecDeque::with_capacity(bound.min(DEFAULT_BOUND)),
        }
    }

    pub(super) fn len(&self) -> usize {
        self.records.len()
    }

    pub(super) fn bound(&self) -> usize {
        self.bound
    }

    /// A new bound (a reload): the oldest records beyond it go.
    pub(super) fn set_bound(&mut self, bound: usize) {
        self.bound = bound;
        while self.records.len() > bound {
            self.records.pop_front();
        }
        self.records.shrink_to(bound);
    }

    pub(super) fn push(&mut self, mut r: Record) {
        if self.bound == 0 {
            return;
        }
        while self.records.len() >= self.bound {
            self.records.pop_front();
        }
        r.attempt_id = bounded(r.attempt_id, MAX_ID);
        r.lock = bounded(r.lock, MAX_LOCK);
        self.records.push_back(r);
    }

    /// The records `visible` lets through, newest first, as many as fit
    /// in one frame; and how many more there were.
    pub(super) fn answer(&self, visible: impl Fn(&Record) -> bool) -> (Vec<FinishedInfo>, u64) {
        // Room for the frame's envelope besides the entries.
        let budget = MAX_FRAME - 4096;
        let mut used = 0;
        let mut out = Vec::new();
        let mut omitted = 0u64;
        for r in self.records.iter().rev().filter(|r| visible(r)) {
            if used > budget {
                omitted += 1;
                continue;
            }
            let info = r.info();
            used += serde_json::to_vec(&info).map_or(budget, |v| v.len() + 1);
            if used > budget {
                omitted += 1;
                continue;
            }
            out.push(info);
        }
        (out, omitted)
    }
}

impl Record {
    fn info(&self) -> FinishedInfo {
        let t = |t: SystemTime| crate::events::rfc3339(t);
        FinishedInfo {
            attempt_id: self.attempt_id.clone(),
            uid: self.uid,
            lock: self.lock.clone(),
            started: t(self.started),
            acquired: self.acquired.map(t),
            ended: t(self.ended),
            outcome: self.outcome.as_str().to_owned(),
            exit_code: self.exit_code,
            wait_ms: self.wait_ms,
            held_ms: self.held_ms,
            fence: self.fence,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: usize) -> Record {
        Record {
            attempt_id: format!("a{n}"),
            lock: "/l".into(),
            uid: 1000,
            started: SystemTime::UNIX_EPOCH,
            acquired: None,
            ended: SystemTime::UNIX_EPOCH,
            outcome: Outcome::Exited,
            exit_code: 0,
            wait_ms: None,
            held_ms: Some(3),
            fence: Some(n as u64),
        }
    }

    #[test]
    fn keeps_the_last_bound_records_newest_first() {
        let mut h = History::new(3);
        for n in 0..10 {
            h.push(rec(n));
        }
        assert_eq!(h.len(), 3);
        let (got, omitted) = h.answer(|_| true);
        let ids: Vec<&str> = got.iter().map(|i| i.attempt_id.as_str()).collect();
        assert_eq!(ids, ["a9", "a8", "a7"]);
        assert_eq!(omitted, 0);
        h.set_bound(1);
        assert_eq!(h.len(), 1);
        let mut none = History::new(0);
        none.push(rec(1));
        assert_eq!(none.len(), 0);
    }

    #[test]
    fn strings_are_bounded_and_the_answer_fits_a_frame() {
        let mut h = History::new(1000);
        for n in 0..1000 {
            let mut r = rec(n);
            r.attempt_id = "é".repeat(10_000);
            r.lock = format!("/{}", "x".repeat(10_000));
            h.push(r);
        }
        let (got, omitted) = h.answer(|_| true);
        assert_eq!(got[0].attempt_id.len(), MAX_ID);
        assert_eq!(got[0].lock.len(), MAX_LOCK);
        assert!(omitted > 0);
        assert_eq!(got.len() as u64 + omitted, 1000);
        let frame = crate::protocol::encode(&crate::protocol::Frame::Finished {
            bound: 1000,
            attempts: got,
            omitted,
        });
        assert!(frame.len() <= MAX_FRAME + 4, "{}", frame.len());
    }
}
