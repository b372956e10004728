//! The supervisor's side of the lock's queue ([`crate::lock::queue`]):
//! taking a ticket, waiting for the predecessor on a thread of its own,
//! telling the attempt's first process when it is its turn to ask the
//! kernel; and, once the lock is held, the fencing token, how the previous
//! holder ended, and (at the end) how this one did.

use super::*;
use crate::lock::queue::{Ended, Passed, Place, Queue, TicketInfo, next_fence};

/// How long a new holder waits for the previous holder's supervisor to
/// record how it ended (it does so as soon as its command is reaped; it
/// may still be ending processes the command left behind).
pub(super) const PREVIOUS_WAIT: Duration = Duration::from_secs(1);
/// How often it looks meanwhile.
pub(super) const PREVIOUS_POLL: Duration = Duration::from_millis(1);

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

impl Attempt<'_> {
    /// Right after the fork: with `--order fifo`, take a ticket and see
    /// where it stands; otherwise (or if the queue cannot be used) the
    /// first process asks the kernel at once.
    pub(super) fn join_queue(&mut self) {
        if !self.turn_pending {
            return;
        }
        let spec = self.spec;
        if let Some(e) = &spec.etcd {
            // etcd's queue is FIFO, across hosts; the lock file is taken
            // once the etcd lock is held.
            return self.start_etcd(e);
        }
        let Some(queue) = &self.queue else {
            return self.give_turn();
        };
        let info = TicketInfo {
            attempt_id: self.spec.attempt_id.clone(),
            supervisor_pid: self.me,
            supervisor_starttime: procfs::starttime(self.me).unwrap_or(0),
            pid: self.pid,
            since: rfc3339(SystemTime::now()),
            shared: self.spec.shared,
        };
        match queue.join(&info) {
            Ok(ticket) => {
                self.ticket = Some(ticket);
                self.advance_queue();
            }
            Err(e) => {
                self.report.warn(format!(
                    "cannot queue in {}: {e}; taking the lock in the kernel's order",
                    queue.path().display()
                ));
                self.give_turn();
            }
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
        let place = match queue.place(ticket) {
            Ok(p) => p,
            Err(e) => {
                self.report.warn(format!(
                    "cannot read the queue {}: {e}; taking the lock in the kernel's order",
                    queue.path().display()
                ));
                self.leave_queue();
                return self.give_turn();
            }
        };
        let pred = match place {
            Place::Head => return self.give_turn(),
            Place::Behind(pred) => pred,
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
        let (tx, rx) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("queue".into())
            .spawn(move || {
                let _ = tx.send(pred.wait());
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

    /// The predecessor left the queue or died.
    pub(super) fn on_passed(&mut self, passed: Passed) {
        self.queue_wait = None;
        if let Err(e) = &passed.held {
            log::warn!("waiting for the predecessor in the queue: {e}");
        }
        if let Some(queue) = &self.queue {
            queue.passed(passed);
        }
        self.advance_queue();
    }

    /// Tell the first process to take the lock (once).
    pub(super) fn give_turn(&mut self) {
        if !std::mem::take(&mut self.turn_pending) {
            return;
        }
        if let Some(control) = self.control.as_mut()
            && let Err(e) = control.write_all(spawn::TURN)
        {
            self.failure = Some(Error::spawn(format!("cannot start the attempt: {e}")));
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }

    /// Give the ticket back: the successor becomes the head.
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
            && procfs::starttime(meta.supervisor_pid) == Some(meta.supervisor_starttime);
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
