//! The guardian: the process the caller started stays with it, and the
//! supervisor runs as its child, in a process group of its own.
//!
//! ```text
//! caller ── locksup (guardian, child subreaper) ── locksup (supervisor,
//!           the caller's PID; forwards signals,     own process group,
//!           exits with the supervisor's status)     child subreaper) ── attempt
//! ```
//!
//! Either of the two can die and the attempt still ends:
//!
//! - the guardian dies (SIGKILL, or a `kill -9 -- -PGID` of the caller's
//!   process group, which does not reach the supervisor's own group): the
//!   supervisor sees the end of the link pipe and ends the attempt at once
//!   (first signal, grace, final signal), with reason `guardian-died`;
//! - the supervisor dies: the attempt's first process gets SIGKILL from the
//!   kernel (`PR_SET_PDEATHSIG`) and every other process of the attempt is
//!   re-parented to the guardian, which is a child subreaper; the guardian
//!   ends them the same way, with reason `supervisor-died`, and exits as a
//!   shell reports the supervisor's death (128 + the signal's number).
//!
//! Only both dying at once leaves processes behind (then `locksup status`
//! shows the lock as held by an orphan, and `locksup cancel` or the
//! daemon's reaper ends them).
//!
//! With `--die-with-parent` the guardian also watches the caller
//! (`PR_SET_PDEATHSIG`, [`parent_death_signal`]): when the caller dies, it
//! tells the supervisor, which ends the attempt with reason `parent-died`.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::attempt::spec::Spec;
use crate::attempt::state::Outcome;
use crate::error::{Error, Result};
use crate::events::Reporter;
use crate::exit;
use crate::process::{Escalation, Target, Tree};
use crate::sys::{self, Ended, Reaped};

/// What the guardian tells the supervisor on the link: the caller died.
pub(crate) const PARENT_DIED: u8 = b'p';

/// Signals the guardian passes on to the supervisor as they come.
const FORWARDED: [i32; 7] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// The signal the kernel sends the guardian when its parent thread ends,
/// with `--die-with-parent`. Not SIGHUP: the kernel sends it also when the
/// *thread* that started locksup ends while the caller lives on (a worker
/// thread of a Node or Java caller; a multi-threaded caller dying thread
/// by thread), with the caller still the parent. That must neither end the
/// attempt nor pass for a SIGHUP sent to locksup (which is passed on as a
/// cancel), so it is a real-time signal nobody else sends, answered by a
/// look at the parent ([`Guardian::check_caller`]).
fn parent_death_signal() -> i32 {
    libc::SIGRTMIN()
}

/// The signals the guardian waits for: its child's end, those it passes
/// on (but the ones ignored when locksup started), and the caller's death.
fn guardian_signals(spec: &Spec) -> Vec<i32> {
    let inherited = sys::inherited();
    let mut waited: Vec<i32> = FORWARDED
        .iter()
        .copied()
        .filter(|s| !inherited.ignored(*s))
        .collect();
    waited.push(libc::SIGCHLD);
    if spec.die_with_parent {
        waited.push(parent_death_signal());
    }
    waited
}

/// The supervisor's end of the link: readable with [`PARENT_DIED`], at its
/// end of file when the guardian is gone.
pub(crate) struct Link {
    /// The pipe's read end.
    pub fd: OwnedFd,
    /// The guardian's PID.
    pub guardian: i32,
}

/// Fork the supervisor. Returns in the supervisor (the child) with its
/// end of the link; the guardian (the parent) never returns: it exits with
/// the supervisor's status. Call it while the process has one thread.
pub(crate) fn split(spec: &Spec, report: &mut Reporter) -> Result<Link> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::usage(format!("cannot start the supervisor: {e}")))?;
    let caller = nix::unistd::getppid().as_raw();
    // Blocked before the fork, so that nothing sent to the guardian (the
    // supervisor's SIGCHLD above all) is lost before it waits for it.
    let set = sys::sigset(&guardian_signals(spec));
    sys::block_signals(&set)
        .and_then(|()| sys::set_default_action(libc::SIGCHLD))
        .map_err(|e| Error::usage(format!("cannot start the supervisor: {e}")))?;
    match sys::fork_single_threaded() {
        Err(e) => Err(Error::usage(format!("cannot start the supervisor: {e}"))),
        Ok(None) => {
            sys::unblock_all_signals()
                .map_err(|e| Error::usage(format!("cannot unblock signals: {e}")))?;
            drop(write);
            // Out of the caller's process group: a kill of that group
            // reaches the guardian only.
            let _ =
                nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
            Ok(Link {
                fd: read,
                guardian: nix::unistd::getppid().as_raw(),
            })
        }
        Ok(Some(supervisor)) => {
            drop(read);
            let pid = nix::unistd::Pid::from_raw(supervisor);
            let _ = nix::unistd::setpgid(pid, pid);
            let code = Guardian {
                spec,
                report,
                supervisor,
                caller,
                link: Some(std::fs::File::from(write)),
            }
            .run(&set);
            std::process::exit(code)
        }
    }
}

struct Guardian<'a> {
    spec: &'a Spec,
    report: &'a mut Reporter,
    supervisor: i32,
    /// The process that started locksup.
    caller: i32,
    link: Option<std::fs::File>,
}

/// Ending what a dead supervisor left behind: when its final signal is
/// due.
type Ending = Escalation<Instant>;

impl Guardian<'_> {
    fn run(&mut self, set: &libc::sigset_t) -> i32 {
        let _ = nix::sys::prctl::set_child_subreaper(true);
        if self.spec.die_with_parent {
            if let Err(e) = sys::set_parent_death_signal(parent_death_signal()) {
                log::warn!("guardian: cannot watch the caller: {e}");
            }
            // The caller may have died before the request.
            self.check_caller();
        }
        let mut supervisor: Option<Ended> = None;
        let mut ending: Option<Ending> = None;
        loop {
            let timeout = ending
                .as_ref()
                .map(|e| match (e.final_sent(), e.final_at()) {
                    (true, _) => SWEEP,
                    (false, Some(t)) => t.saturating_duration_since(Instant::now()),
                    (false, None) => Duration::from_secs(3600),
                });
            match sys::wait_signal(set, timeout) {
                Ok(Some(c)) if c.signo == libc::SIGCHLD => {}
                Ok(Some(c)) => self.on_signal(c.signo, supervisor.is_none(), &mut ending),
                Ok(None) => self.on_timer(&mut ending),
                Err(e) => {
                    log::warn!("guardian: {e}");
                    return exit::FAILURE;
                }
            }
            let mut children_left = true;
            loop {
                match sys::reap_one() {
                    Ok(Reaped::Child(pid, ended)) if pid == self.supervisor => {
                        supervisor = Some(ended);
                    }
                    Ok(Reaped::Child(..)) => {}
                    Ok(Reaped::Running) => break,
                    Ok(Reaped::NoChildren) | Err(_) => {
                        children_left = false;
                        break;
                    }
                }
            }
            let Some(ended) = supervisor else {
                continue;
            };
            if let Ended::Signaled(n) = ended
                && children_left
                && ending.is_none()
            {
                ending = Some(self.begin_ending(n));
                // A zero grace is due at once.
                self.on_timer(&mut ending);
            }
            if !children_left {
                return match ended {
                    Ended::Exited(code) => code,
                    Ended::Signaled(n) => self.lost_supervisor(n),
                };
            }
        }
    }

    fn check_caller(&mut self) {
        if nix::unistd::getppid().as_raw() != self.caller
            && let Some(mut link) = self.link.take()
        {
            // The supervisor reads it, then the end of the pipe.
            let _ = link.write_all(&[PARENT_DIED]);
        }
    }

    fn on_signal(&mut self, sig: i32, supervisor_alive: bool, ending: &mut Option<Ending>) {
        if self.spec.die_with_parent && sig == parent_death_signal() {
            // The caller died, or only the thread of it that started us.
            self.check_caller();
            return;
        }
        if supervisor_alive {
            let _ = sys::kill(self.supervisor, sig);
            return;
        }
        // The supervisor is gone and its attempt is being ended: a cancel
        // signal sends the final signal at once, as it would have.
        if ending.as_ref().is_some_and(|e| !e.final_sent())
            && !matches!(sig, libc::SIGUSR1 | libc::SIGUSR2 | libc::SIGWINCH)
        {
            self.send_final(ending);
        }
    }

    /// The supervisor was killed and left processes: end them.
    fn begin_ending(&mut self, killed_by: i32) -> Ending {
        let sig = self.spec.signal;
        let targets = Tree::of_self().signal(Target::Walk, sig.number());
        self.report.event(
            "signal",
            json!({ "signal": sig.to_string(), "reason": "supervisor-died", "targets": targets }),
        );
        self.report.warn(format!(
            "the supervisor (pid {}) was killed by {}; sent {sig} to the {} process(es) of its attempt",
            self.supervisor,
            signal_name(killed_by),
            targets.len()
        ));
        Escalation::new(Instant::now(), self.spec.grace)
    }

    fn on_timer(&mut self, ending: &mut Option<Ending>) {
        let Some(e) = ending else {
            return;
        };
        if e.final_sent() {
            let _ = Tree::of_self().signal(Target::Walk, self.spec.final_signal.number());
        } else if e.final_due(Instant::now()) {
            self.send_final(ending);
        }
    }

    /// The final signal to what the dead supervisor left, now.
    fn send_final(&mut self, ending: &mut Option<Ending>) {
        let Some(e) = ending else {
            return;
        };
        e.mark_final_sent();
        let sig = self.spec.final_signal;
        let targets = Tree::of_self().signal(Target::Walk, sig.number());
        if !targets.is_empty() {
            self.report.event(
                "signal",
                json!({ "signal": sig.to_string(), "reason": "supervisor-died", "targets": targets }),
            );
        }
    }

    /// The supervisor died by a signal; what it left is gone now.
    fn lost_supervisor(&mut self, n: i32) -> i32 {
        let message = format!(
            "the supervisor (pid {}) was killed by {}",
            self.supervisor,
            signal_name(n)
        );
        // What a shell reports for a process killed by that signal.
        let code = exit::from_signal(n);
        self.report.event(
            "end",
            json!({ "exit_code": code, "outcome": Outcome::Failed.as_str(), "error": message }),
        );
        self.report.warn(&message);
        code
    }
}

/// After the final signal, how often the guardian looks again.
const SWEEP: Duration = Duration::from_millis(10);

fn signal_name(n: i32) -> String {
    crate::signal::Sig::from_number(n).map_or_else(|| n.to_string(), |s| s.to_string())
}
