//! The supervisor's side of the lock's queue ([`crate::lock::queue`]):
//! taking a ticket before the fork (the attempt's first process waits for
//! its predecessor's ticket itself, and gives its own back once it holds
//! the lock); when a predecessor died waiting, finding the place again and
//! waiting on a thread of its own, then telling the first process when it
//! is its turn; and, once the lock is held, the fencing token, how the
//! previous holder ended, and (at the end) how this one did.

use super::*;
use crate::lock::queue::{Ended, Passed, Place, Predecessor, Queue, TicketInfo, next_fence};

/// How long a new holder waits for the previous holder's supervisor to
/// record how it ended (it does so as soon as its command is reaped; it
/// may still be ending processes the command left behind).
pub(super) const PREVIOUS_WAIT: Duration = Duration::from_secs(1);
/// How often it looks meanwhile.
pub(super) const PREVIOUS_POLL: Duration = Duration::from_micros(100);

/// How the previous holder of the lock ended, as the new holder is told
/// (`LOCKSUP_PREVIOUS_*`, the `acquired` event).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Previous {
    /// An `end` outcome (exited, timeout, killed...), or `none` (no
    /// earlier holder on record), `supervisor-died` (its supervisor died
    /// without a word), `unknown` (no record in time, or a shared lock).
    pub(super) outcome: String,
    pub(super) attempt_id: Option<String>,
    pub(super) fence: Option<u64>,
    pub(super) exit_code: Option<i32>,
}

impl Previous {
    fn of(record: Ended) -> Previous {
        Previous {
            outcome: record.outcome,
            attempt_id: Some(record.attempt_id),
            fence: record.fence,
            exit_code: record.exit_code,
        }
    }

    pub(super) fn to_json(&self) -> serde_json::Value {
        json!({
            "outcome": self.outcome,
            "attempt_id": self.attempt_id,
            "fence": self.fence,
            "exit_code": self.exit_code,
        })
    }
}

/// Before the fork (no thread may exist then): take a ticket in the
/// lock's queue and see where it stands, so that an attempt at the head
/// (an uncontended lock) costs its first process no wait for a word.
/// `Err` is why the queue cannot be used (said if the lock is busy).
pub(super) fn join(queue: &Queue, spec: &Spec) -> std::result::Result<(Ticket, Place), String> {
    let me = std::process::id() as i32;
    let info = TicketInfo {
        attempt_id: spec.attempt_id.clone(),
        supervisor_pid: me,
        supervisor_starttime: procfs::starttime(me).unwrap_or(0),
        pid: None,
        since: rfc3339(SystemTime::now()),
        shared: spec.shared,
    };
    let fail = |e: std::io::Error| {
        format!(
            "cannot queue in {}: {e}; waiting in the kernel's order",
            queue.path().display()
        )
    };
    let (ticket, seen) = queue.join(&info).map_err(fail)?;
    let place = queue.place_among(&ticket, seen).map_err(fail)?;
    Ok((ticket, place))
}

impl Attempt<'_> {
    /// Once forked: with etcd, take the etcd lock first (etcd's queue is
    /// FIFO, across hosts; the lock file is taken once the etcd lock is
    /// held); else, if the ticket (taken before the fork, [`join`]) stands
    /// behind another, wait for it.
    pub(super) fn start_queue(&mut self, place: Option<Place>) {
        let spec = self.spec;
        if let Some(e) = &spec.etcd {
            return self.start_etcd(e);
        }
        match place {
            // The first process waits for it (unless --no-wait).
            Some(Place::Behind(pred)) => self.behind(pred, true),
            _ => self.give_turn(),
        }
    }

    /// Where the ticket stands now: at the head, the first process may ask
    /// the kernel; behind a live waiter, wait for it to leave or die.
    pub(super) fn advance_queue(&mut self) {
        if !self.state.waits_for_lock() {
            return;
        }
        let (Some(queue), Some(ticket)) = (&self.queue, &self.ticket) else {
            return self.give_turn();
        };
        match queue.place(ticket) {
            Ok(Place::Head) => self.give_turn(),
            Ok(Place::Behind(pred)) => self.behind(pred, false),
            Err(e) => {
                self.report.warn(format!(
                    "cannot read the queue {}: {e}; taking the lock in the kernel's order",
                    queue.path().display()
                ));
                self.leave_queue();
                self.give_turn();
            }
        }
    }

    /// Behind a live waiter: say so and wait for it, in the first process
    /// (`child_waits`, it has the predecessor's ticket) or on a thread (or,
    /// with `--no-wait`, give up: others are first).
    fn behind(&mut self, pred: Predecessor, child_waits: bool) {
        let Some(ticket) = &self.ticket else {
            return self.give_turn();
        };
        let before = pred.info.as_ref().map(|i| i.attempt_id.clone());
        let position = pred.ahead + 1;
        if self.spec.wait == Wait::No {
            self.state.busy();
            self.report.event(
                "conflict",
                json!({ "reason": "busy", "holders": [], "queued_before": pred.ahead }),
            );
            self.report.say(format!(
                "{} has {} waiting before this one",
                self.spec.lock.display(),
                plural(pred.ahead, "attempt", "attempts")
            ));
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            return;
        }
        self.report.event(
            "queued",
            json!({
                "position": position,
                "ticket": ticket.number(),
                "behind": before,
                "behind_ticket": pred.number(),
            }),
        );
        self.report.say(format!(
            "waiting in the queue of {} at position {position}{}",
            self.spec.lock.display(),
            before.map_or(String::new(), |b| format!(", behind attempt {b}"))
        ));
        self.was_behind = true;
        if child_waits {
            self.predecessor = Some(pred);
            return;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        // At the head, the thread itself gives the first process its turn:
        // the lock is asked for while the supervisor's loop catches up.
        let turn = self
            .control
            .as_ref()
            .filter(|_| self.turn_pending)
            .and_then(|c| c.try_clone().ok());
        let spawned = std::thread::Builder::new()
            .name("queue".into())
            .spawn(move || {
                let passed = pred.wait(|| {
                    if let Some(mut c) = turn {
                        let _ = c.write_all(spawn::TURN);
                    }
                });
                let _ = tx.send(passed);
            });
        match spawned {
            Ok(_) => self.queue_wait = Some(rx),
            Err(e) => {
                self.report.warn(format!(
                    "cannot wait in the queue: {e}; taking the lock in the kernel's order"
                ));
                self.leave_queue();
                self.give_turn();
            }
        }
    }

    /// The predecessor the first process waited for died waiting: find
    /// the place again (the first process waits for a word now).
    pub(super) fn on_predecessor_died(&mut self) {
        self.turn_pending = true;
        match self.predecessor.take() {
            Some(pred) => self.on_passed(pred.died()),
            None => self.advance_queue(),
        }
    }

    /// The predecessor left the queue or died.
    pub(super) fn on_passed(&mut self, passed: Passed) {
        self.queue_wait = None;
        if let Err(e) = &passed.held {
            log::warn!("waiting for the predecessor in the queue: {e}");
        }
        let at_head = passed.left;
        if let Some(queue) = &self.queue {
            queue.passed(passed, self.ticket.as_ref().and_then(Ticket::recycle_as));
        }
        if at_head {
            // The waiting thread gave the turn already.
            self.turn_pending = false;
            return;
        }
        self.advance_queue();
    }

    /// Tell the first process to take the lock (once).
    pub(super) fn give_turn(&mut self) {
        if !std::mem::take(&mut self.turn_pending) {
            return;
        }
        // Without the ticket (given back here), the first process must
        // not touch it.
        let word = if self.ticket.is_some() {
            spawn::TURN
        } else {
            spawn::TURN_WITHOUT_TICKET
        };
        if let Some(control) = self.control.as_mut()
            && let Err(e) = control.write_all(word)
        {
            self.failure = Some(Error::spawn(format!("cannot start the attempt: {e}")));
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }

    /// The first process holds the lock and gave the ticket back (it
    /// removed the name and unlocked it, waking the successor): let go of
    /// the descriptors.
    pub(super) fn left_queue(&mut self) {
        self.ticket = None;
        self.predecessor = None;
    }

    /// Give the ticket back while the first process waits for a word
    /// (then [`spawn::TURN_WITHOUT_TICKET`]): the successor becomes the
    /// head.
    pub(super) fn leave_queue(&mut self) {
        if let (Some(queue), Some(ticket)) = (&self.queue, self.ticket.take()) {
            queue.leave(ticket);
        }
    }

    /// How the previous holder ended, from its metadata line (read before
    /// ours replaces it) and its supervisor's record; `None` while its
    /// supervisor lives and has not recorded it yet (for at most
    /// [`PREVIOUS_WAIT`]).
    pub(super) fn previous_holder(&self, now: Instant, until: Instant) -> Option<Previous> {
        let record = self.queue.as_ref().and_then(Queue::last_ended);
        let Some(meta) = &self.prev_meta else {
            // A new lock file: the queue directory may remember.
            return Some(record.map_or_else(
                || Previous {
                    outcome: "none".into(),
                    attempt_id: None,
                    fence: None,
                    exit_code: None,
                },
                Previous::of,
            ));
        };
        if let Some(r) = record
            && r.attempt_id == meta.attempt_id
        {
            return Some(Previous::of(r));
        }
        let alive = meta.supervisor_pid != self.me
            && meta.supervisor_pid > 0
            && procfs::starttime(meta.supervisor_pid) == Some(meta.supervisor_starttime)
            && procfs::alive(meta.supervisor_pid);
        if alive && !self.spec.shared && now < until {
            return None;
        }
        Some(Previous {
            outcome: if alive { "unknown" } else { "supervisor-died" }.into(),
            attempt_id: Some(meta.attempt_id.clone()),
            fence: meta.fence,
            exit_code: None,
        })
    }

    /// This attempt's fencing token: above the last holder's.
    pub(super) fn fence_after(&self, previous: &Previous) -> u64 {
        let seen = [
            previous.fence,
            self.prev_meta.as_ref().and_then(|m| m.fence),
        ];
        next_fence(seen.into_iter().flatten())
    }

    /// Record for the next holder how this attempt ended (once, and only
    /// if it held the lock).
    pub(super) fn record_end(&mut self, outcome: Outcome, code: Option<i32>) {
        if self.end_recorded || self.acquired.is_none() {
            return;
        }
        self.end_recorded = true;
        let Some(queue) = &self.queue else {
            return;
        };
        let ended = Ended {
            attempt_id: self.spec.attempt_id.clone(),
            fence: self.fence,
            outcome: outcome.as_str().to_owned(),
            exit_code: code,
            ended_at: rfc3339(SystemTime::now()),
        };
        if let Err(e) = queue.record_end(&ended) {
            log::warn!("cannot record the end in {}: {e}", queue.path().display());
        }
    }

    /// The variables the command gets with the go-ahead.
    pub(super) fn late_variables(&self, deadline: Option<&str>) -> Vec<(&'static str, String)> {
        let mut vars = Vec::new();
        if let Some(d) = deadline {
            vars.push(("LOCKSUP_DEADLINE", d.to_owned()));
        }
        if let Some(f) = self.fence {
            vars.push(("LOCKSUP_FENCE", f.to_string()));
        }
        if let Some(p) = &self.previous {
            vars.push(("LOCKSUP_PREVIOUS_OUTCOME", p.outcome.clone()));
            if let Some(id) = &p.attempt_id {
                vars.push(("LOCKSUP_PREVIOUS_ATTEMPT_ID", id.clone()));
            }
            if let Some(f) = p.fence {
                vars.push(("LOCKSUP_PREVIOUS_FENCE", f.to_string()));
            }
            if let Some(c) = p.exit_code {
                vars.push(("LOCKSUP_PREVIOUS_EXIT_CODE", c.to_string()));
            }
        }
        vars
    }
}
