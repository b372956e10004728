//! The attempt's state machine, without any input or output: where the
//! attempt is ([`State`]), what each input does to it, and how it ended
//! ([`State::end`]: the [`Outcome`] and the exit code, from one `match`).
//! [`crate::attempt::supervise`] feeds it the inputs (status records, the
//! exec, signals, timers) and does what it answers (kill the first
//! process, escalate, send the final signal).
//!
//! ```text
//! Locking ──locked──▶ Starting ──exec──▶ Running
//!    │                   │                  │
//!    │ busy, wait over,  └── deadline, watchdog, cancel, cleanup ──▶ Signalled
//!    │ cancel: the first process is killed; the lock is never had
//!    ▼
//! (ends in Locking with its conflict or cancel)
//! ```

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use crate::exit;
use crate::process::Escalation;
use crate::sys::Ended;

/// Why the attempt is being signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    Timeout,
    Watchdog,
    ReadyTimeout,
    SupervisorSignal,
    Cleanup,
    /// The guardian (the process the caller started) died.
    GuardianDied,
    /// The caller died (`--die-with-parent`).
    ParentDied,
    /// The held lock file was removed or replaced.
    LockRemoved,
    /// The etcd lock's lease is lost or may lapse soon (`--backend etcd`).
    LeaseLost,
}

impl Reason {
    /// The name in `signal` events.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::Timeout => "timeout",
            Reason::Watchdog => "watchdog",
            Reason::ReadyTimeout => "ready-timeout",
            Reason::SupervisorSignal => "supervisor-signal",
            Reason::Cleanup => "cleanup",
            Reason::GuardianDied => "guardian-died",
            Reason::ParentDied => "parent-died",
            Reason::LockRemoved => "lock-removed",
            Reason::LeaseLost => "lease-lost",
        }
    }

    /// A limit ran out (the attempt timed out, in `timeout(1)`'s sense).
    fn is_timeout(self) -> bool {
        matches!(
            self,
            Reason::Timeout | Reason::Watchdog | Reason::ReadyTimeout | Reason::LeaseLost
        )
    }
}

/// How an attempt ended, as the final `end` event names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The command exited on its own.
    Exited,
    /// The command died from a signal locksup did not send.
    Killed,
    /// Ended at its deadline.
    Timeout,
    /// Ended for want of a heartbeat.
    Watchdog,
    /// Ended for not becoming ready in time.
    ReadyTimeout,
    /// Ended because the etcd lock's lease was lost, or could lapse
    /// before the attempt would be dead.
    LeaseLost,
    /// Ended (or stopped waiting) because locksup was told to stop.
    Cancelled,
    /// The lock was busy and waiting was not allowed.
    Busy,
    /// The lock stayed busy for the whole wait.
    WaitExpired,
    /// The command was not found.
    NotFound,
    /// The command could not be executed.
    CannotExecute,
    /// locksup itself failed.
    Failed,
}

impl Outcome {
    /// Every outcome, in the order of the enum.
    pub(crate) const ALL: [Outcome; 12] = [
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
    ];

    /// The outcome an event names ([`Outcome::as_str`] undone); `None`
    /// for a name this version does not send.
    pub(crate) fn parse(name: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == name)
    }

    /// The name in events.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Exited => "exited",
            Outcome::Killed => "killed",
            Outcome::Timeout => "timeout",
            Outcome::Watchdog => "watchdog",
            Outcome::ReadyTimeout => "ready-timeout",
            Outcome::LeaseLost => "lease-lost",
            Outcome::Cancelled => "cancelled",
            Outcome::Busy => "busy",
            Outcome::WaitExpired => "wait-expired",
            Outcome::NotFound => "not-found",
            Outcome::CannotExecute => "cannot-execute",
            Outcome::Failed => "failed",
        }
    }

    /// The outcome of an error that ended locksup with `code`.
    pub(crate) fn of_error(code: i32) -> Outcome {
        match code {
            exit::NOT_FOUND => Outcome::NotFound,
            exit::CANNOT_EXECUTE => Outcome::CannotExecute,
            _ => Outcome::Failed,
        }
    }
}

/// Why the lock will not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Conflict {
    /// Busy, and waiting was not allowed.
    Busy,
    /// Still busy when the wait was over.
    WaitExpired,
}

/// An attempt being ended: the first signal is out (or, with a grace of
/// zero, only the final one is due).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Signalled {
    /// Why.
    pub(crate) reason: Reason,
    /// When the final signal is due, and whether it is out.
    pub(crate) timing: Escalation<Instant>,
    /// The final signal reached a live process.
    pub(crate) final_needed: bool,
    /// The command had been exec'd (the `exited` event is about it).
    pub(crate) ran: bool,
}

/// Where the attempt is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum State {
    /// The first process is opening and taking the lock. Once the lock
    /// will not be had (`conflict`) or a cancel came first (`cancelled`,
    /// with its signal), that process is being killed and the attempt
    /// ends here.
    Locking {
        conflict: Option<Conflict>,
        cancelled: Option<Signal>,
    },
    /// Locked, metadata written, go-ahead sent: waiting for the exec.
    Starting,
    /// The command runs, holding the lock.
    Running,
    /// Being ended.
    Signalled(Signalled),
}

/// What to do about a cancel (TERM, INT, HUP, QUIT; the guardian's or the
/// caller's death).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnCancel {
    /// Still taking the lock: kill the first process, give up.
    KillFirst,
    /// Start the escalation.
    Escalate,
    /// A second cancel: the final signal at once.
    Final,
    /// Nothing more can be done.
    Nothing,
}

/// What decides the exit code besides the state: the spec's choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Exits {
    /// `--conflict-exit-code`.
    pub(crate) conflict: i32,
    /// `--preserve-status`.
    pub(crate) preserve_status: bool,
    /// The final signal's number.
    pub(crate) final_signal: i32,
}

impl State {
    /// A new attempt, taking its lock.
    pub(crate) fn new() -> State {
        State::Locking {
            conflict: None,
            cancelled: None,
        }
    }

    /// Still in the lock-taking stage (the lock was never had).
    pub(crate) fn is_locking(&self) -> bool {
        matches!(self, State::Locking { .. })
    }

    /// Taking the lock and still meaning to: the `--wait` timer applies.
    pub(crate) fn waits_for_lock(&self) -> bool {
        matches!(
            self,
            State::Locking {
                conflict: None,
                cancelled: None
            }
        )
    }

    /// The escalation, once the attempt is being ended.
    pub(crate) fn signalled(&self) -> Option<&Signalled> {
        match self {
            State::Signalled(s) => Some(s),
            _ => None,
        }
    }

    /// The command was exec'd (its exit is the `exited` event).
    pub(crate) fn ran(&self) -> bool {
        matches!(
            self,
            State::Running | State::Signalled(Signalled { ran: true, .. })
        )
    }

    /// The first process reported the lock busy (`--no-wait`). It wins
    /// over a cancel that came first: the lock was busy either way.
    pub(crate) fn busy(&mut self) {
        if let State::Locking { conflict, .. } = self {
            *conflict = Some(Conflict::Busy);
        }
    }

    /// The wait is over and the lock still busy.
    pub(crate) fn wait_expired(&mut self) {
        if let State::Locking { conflict, .. } = self {
            *conflict = Some(Conflict::WaitExpired);
        }
    }

    /// The first process took the lock. `false` when the attempt is being
    /// given up already (it dies holding the lock for a moment, and the
    /// kernel frees it).
    pub(crate) fn locked(&mut self) -> bool {
        if self.waits_for_lock() {
            *self = State::Starting;
            true
        } else {
            false
        }
    }

    /// The lock file was removed or replaced between the lock and the
    /// go-ahead: back to taking the lock (the file the path names now).
    pub(crate) fn relock(&mut self) {
        if *self == State::Starting {
            *self = State::new();
        }
    }

    /// The command was exec'd. `true` when that is news (the `started`
    /// event).
    pub(crate) fn exec(&mut self) -> bool {
        match self {
            State::Starting => {
                *self = State::Running;
                true
            }
            State::Signalled(s) if !s.ran => {
                s.ran = true;
                true
            }
            _ => false,
        }
    }

    /// A cancel arrived; `sig` is the signal the exit code names if the
    /// lock was not had yet.
    pub(crate) fn cancel(&mut self, sig: Signal) -> OnCancel {
        match self {
            State::Locking { cancelled, .. } => {
                if cancelled.is_some() {
                    return OnCancel::Nothing;
                }
                *cancelled = Some(sig);
                OnCancel::KillFirst
            }
            State::Starting | State::Running => OnCancel::Escalate,
            State::Signalled(s) if !s.timing.final_sent() => OnCancel::Final,
            State::Signalled(_) => OnCancel::Nothing,
        }
    }

    /// Start ending the attempt for `reason`: the first signal was due at
    /// `due`, the final one a grace period later (`None`: never). Only
    /// from `Starting` or `Running`, once; `false` otherwise.
    pub(crate) fn escalate(
        &mut self,
        reason: Reason,
        due: Instant,
        grace: Option<Duration>,
    ) -> bool {
        let ran = match self {
            State::Starting => false,
            State::Running => true,
            State::Locking { .. } | State::Signalled(_) => return false,
        };
        *self = State::Signalled(Signalled {
            reason,
            timing: Escalation::new(due, grace),
            final_needed: false,
            ran,
        });
        true
    }

    /// The final signal was sent; `reached` when it found a live process.
    /// Returns the escalation's reason (`None` when not signalled).
    pub(crate) fn final_sent(&mut self, reached: bool) -> Option<Reason> {
        let State::Signalled(s) = self else {
            return None;
        };
        s.timing.mark_final_sent();
        s.final_needed |= reached;
        Some(s.reason)
    }

    /// After the final signal, a sweep found processes that appeared since.
    pub(crate) fn swept(&mut self, reached: bool) {
        if let State::Signalled(s) = self {
            s.final_needed |= reached;
        }
    }

    /// How the attempt ended and the exit code, given how its first
    /// process ended (`main`), following `timeout(1)` and `flock(1)`.
    pub(crate) fn end(&self, main: Option<Ended>, exits: Exits) -> (i32, Outcome) {
        let by_main = || match main {
            Some(Ended::Exited(code)) => code,
            Some(Ended::Signaled(sig)) => exit::from_signal(sig),
            None => exit::FAILURE,
        };
        let natural = || match main {
            Some(Ended::Signaled(_)) => Outcome::Killed,
            _ => Outcome::Exited,
        };
        match *self {
            State::Locking {
                conflict: Some(c), ..
            } => (
                exits.conflict,
                match c {
                    Conflict::Busy => Outcome::Busy,
                    Conflict::WaitExpired => Outcome::WaitExpired,
                },
            ),
            State::Locking {
                cancelled: Some(sig),
                ..
            } => (exit::from_signal(sig as i32), Outcome::Cancelled),
            State::Locking { .. } | State::Starting | State::Running => (by_main(), natural()),
            State::Signalled(s) => {
                let outcome = match s.reason {
                    Reason::Timeout => Outcome::Timeout,
                    Reason::Watchdog => Outcome::Watchdog,
                    Reason::ReadyTimeout => Outcome::ReadyTimeout,
                    Reason::LeaseLost => Outcome::LeaseLost,
                    Reason::SupervisorSignal
                    | Reason::GuardianDied
                    | Reason::ParentDied
                    | Reason::LockRemoved => Outcome::Cancelled,
                    Reason::Cleanup => natural(),
                };
                let code = if s.reason.is_timeout() && !exits.preserve_status {
                    if s.final_needed {
                        exit::from_signal(exits.final_signal)
                    } else {
                        exit::TIMED_OUT
                    }
                } else {
                    by_main()
                };
                (code, outcome)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXITS: Exits = Exits {
        conflict: 75,
        preserve_status: false,
        final_signal: libc::SIGKILL,
    };
    const GRACE: Option<Duration> = Some(Duration::from_secs(10));

    /// An attempt that got its lock and exec'd its command.
    fn running() -> State {
        let mut s = State::new();
        assert!(s.waits_for_lock());
        assert!(s.locked());
        assert_eq!(s, State::Starting);
        assert!(s.exec());
        assert_eq!(s, State::Running);
        s
    }

    #[test]
    fn every_outcome_is_listed_once_and_parsed_back_from_its_name() {
        for (i, o) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(o as usize, i, "ALL is in the order of the enum");
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        // The last variant: one added after it must join ALL.
        assert_eq!(Outcome::ALL.len(), Outcome::Failed as usize + 1);
        for name in ["", "Exited", "exited ", "lease_lost", "other"] {
            assert_eq!(Outcome::parse(name), None, "{name:?}");
        }
    }

    #[test]
    fn a_command_that_exits_by_itself_gives_its_status() {
        let s = running();
        assert!(s.ran());
        assert_eq!(s.end(Some(Ended::Exited(3)), EXITS), (3, Outcome::Exited));
        assert_eq!(
            s.end(Some(Ended::Signaled(libc::SIGSEGV)), EXITS),
            (128 + libc::SIGSEGV, Outcome::Killed)
        );
    }

    #[test]
    fn timeout_exits_124_unless_the_final_signal_was_needed() {
        let now = Instant::now();
        let mut s = running();
        assert!(s.escalate(Reason::Timeout, now, GRACE));
        let killed_by_term = Some(Ended::Signaled(libc::SIGTERM));
        assert_eq!(s.end(killed_by_term, EXITS), (124, Outcome::Timeout));
        assert_eq!(s.final_sent(true), Some(Reason::Timeout));
        assert_eq!(
            s.end(Some(Ended::Signaled(libc::SIGKILL)), EXITS),
            (137, Outcome::Timeout)
        );
        // --preserve-status: the command's own status.
        let preserve = Exits {
            preserve_status: true,
            ..EXITS
        };
        assert_eq!(
            s.end(Some(Ended::Exited(0)), preserve),
            (0, Outcome::Timeout)
        );
    }

    #[test]
    fn the_final_signal_is_due_a_grace_after_the_first_was_due() {
        let due = Instant::now();
        let mut s = running();
        assert!(s.escalate(Reason::Watchdog, due, GRACE));
        let e = s.signalled().expect("signalled");
        assert_eq!(e.timing.final_at(), Some(due + Duration::from_secs(10)));
        // Grace 0: the final signal is due with the first.
        let mut s = running();
        assert!(s.escalate(Reason::Timeout, due, Some(Duration::ZERO)));
        assert!(s.signalled().expect("signalled").timing.final_due(due));
        // Only once.
        assert!(!s.escalate(Reason::Cleanup, due, GRACE));
        assert_eq!(s.signalled().map(|e| e.reason), Some(Reason::Timeout));
    }

    #[test]
    fn cancels_escalate_then_hurry_then_stop() {
        let mut s = running();
        assert_eq!(s.cancel(Signal::SIGTERM), OnCancel::Escalate);
        assert!(s.escalate(Reason::SupervisorSignal, Instant::now(), GRACE));
        assert_eq!(s.cancel(Signal::SIGTERM), OnCancel::Final);
        s.final_sent(false);
        assert_eq!(s.cancel(Signal::SIGTERM), OnCancel::Nothing);
        // The first signal was enough: the command's own status.
        assert_eq!(
            s.end(Some(Ended::Signaled(libc::SIGTERM)), EXITS),
            (143, Outcome::Cancelled)
        );
    }

    #[test]
    fn a_cancel_while_waiting_gives_up_the_lock() {
        let mut s = State::new();
        assert_eq!(s.cancel(Signal::SIGINT), OnCancel::KillFirst);
        assert_eq!(s.cancel(Signal::SIGTERM), OnCancel::Nothing);
        assert!(!s.waits_for_lock());
        // The lock taken meanwhile is not used.
        assert!(!s.locked());
        assert!(s.is_locking());
        assert_eq!(
            s.end(Some(Ended::Signaled(libc::SIGKILL)), EXITS),
            (128 + libc::SIGINT, Outcome::Cancelled)
        );
        // Busy wins over the cancel: the lock was busy either way.
        s.busy();
        assert_eq!(s.end(None, EXITS), (75, Outcome::Busy));
    }

    #[test]
    fn conflicts_exit_with_the_conflict_code() {
        let mut s = State::new();
        s.wait_expired();
        assert!(!s.locked());
        assert_eq!(
            s.end(Some(Ended::Signaled(libc::SIGKILL)), EXITS),
            (75, Outcome::WaitExpired)
        );
        // A conflict once locked cannot happen.
        let mut s = running();
        s.busy();
        assert_eq!(s, State::Running);
    }

    #[test]
    fn a_cancel_before_the_exec_still_reports_the_start() {
        let mut s = State::new();
        assert!(s.locked());
        assert!(!s.ran());
        assert_eq!(s.cancel(Signal::SIGTERM), OnCancel::Escalate);
        assert!(s.escalate(Reason::SupervisorSignal, Instant::now(), GRACE));
        assert!(!s.ran());
        assert!(s.exec());
        assert!(s.ran());
        assert!(!s.exec());
    }

    #[test]
    fn a_replaced_lock_file_is_locked_again() {
        let mut s = State::new();
        assert!(s.locked());
        s.relock();
        assert!(s.waits_for_lock());
        assert!(s.locked());
        assert!(s.exec());
        // Once the command runs, there is no going back.
        s.relock();
        assert_eq!(s, State::Running);
        assert!(s.escalate(Reason::LockRemoved, Instant::now(), GRACE));
        assert_eq!(
            s.end(Some(Ended::Signaled(libc::SIGTERM)), EXITS),
            (143, Outcome::Cancelled)
        );
    }

    #[test]
    fn cleanup_keeps_the_commands_own_outcome() {
        let mut s = running();
        assert!(s.escalate(Reason::Cleanup, Instant::now(), GRACE));
        s.final_sent(true);
        assert_eq!(s.end(Some(Ended::Exited(0)), EXITS), (0, Outcome::Exited));
    }
}
