//! Ending processes: how each kind of target is signalled, and when the
//! final signal is due. The policy (which signals, how long a grace, what
//! happens after the final signal) stays with each caller: `run`'s
//! supervisor, `cancel`, and `serve`'s reaper of strays.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::ops::Add;
use std::time::Duration;

use super::signals::wakes;
use super::{Member, Tree, Walk};
use crate::procfs;
use crate::sys::{self, PidFd};

/// When the final signal of an escalation is due: a grace period after
/// the first signal was due (not after it was sent: a late wake-up does
/// not lengthen the attempt's life). Generic over the clock (`std`'s or
/// the runtime's `Instant`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Escalation<T> {
    /// `None` once the final signal is out, or with an infinite grace.
    final_at: Option<T>,
    final_sent: bool,
}

impl<T: Copy + Ord + Add<Duration, Output = T>> Escalation<T> {
    /// The first signal was due at `due`; the final one follows after
    /// `grace` (`None`: never).
    pub(crate) fn new(due: T, grace: Option<Duration>) -> Self {
        Self {
            final_at: grace.map(|g| due + g),
            final_sent: false,
        }
    }

    /// When the final signal is due, if it is still to be sent.
    pub(crate) fn final_at(&self) -> Option<T> {
        self.final_at
    }

    /// Whether the final signal is due at `now`.
    pub(crate) fn final_due(&self, now: T) -> bool {
        !self.final_sent && self.final_at.is_some_and(|t| now >= t)
    }

    /// Whether the final signal has been sent.
    pub(crate) fn final_sent(&self) -> bool {
        self.final_sent
    }

    /// The final signal is out (when due, or at once).
    pub(crate) fn mark_final_sent(&mut self) {
        self.final_sent = true;
        self.final_at = None;
    }
}

/// How many walks in a row may find a process exiting before the signal
/// is considered out (one stuck in exit is left to the next round).
const MAX_EXITING_PASSES: usize = 50;

/// Signal each member of successive walks once, until a walk finds nobody
/// new: a process may fork, or be re-parented to us, while we walk, and a
/// process that ended or changed parent during a walk may have left
/// children that only the next walk sees. Members for which `has_it` is
/// true already have the signal and only count as found. SIGCONT follows
/// the signal (see [`wakes`]). The PIDs found are added to `sent`.
pub(crate) fn signal_walks(
    mut walk: impl FnMut() -> Walk,
    sent: &mut BTreeSet<i32>,
    sig: i32,
    has_it: impl Fn(&Member) -> bool,
) {
    let cont = wakes(sig);
    let mut skipped = BTreeSet::new();
    for pass in 0.. {
        let walk = walk();
        let unsettled = walk
            .skipped
            .into_iter()
            .filter(|p| skipped.insert(*p))
            .count();
        // A process in the middle of exiting soon is a zombie (then its
        // children are ours, and it counts as unsettled once); a bounded
        // number of walks waits for that.
        let exiting = !walk.exiting.is_empty() && pass < MAX_EXITING_PASSES;
        let fresh: Vec<_> = walk
            .members
            .into_iter()
            .filter(|m| !sent.contains(&m.pid))
            .collect();
        if fresh.is_empty() && unsettled == 0 && !exiting {
            return;
        }
        for m in fresh {
            sent.insert(m.pid);
            if has_it(&m) {
                continue;
            }
            if m.signal(sig) && cont {
                let _ = m.signal(libc::SIGCONT);
            }
        }
    }
}

/// Signal `pid`, a child of this process, and every process below it,
/// each verified and pinned (`serve` ending what a dead supervisor left).
/// Without a usable `/proc`, `pid` alone.
pub(crate) fn signal_subtree(tree: &Tree, pid: i32, sig: i32) {
    if !tree.visible() {
        if sys::kill(pid, sig).is_ok() && wakes(sig) {
            let _ = sys::kill(pid, libc::SIGCONT);
        }
        return;
    }
    signal_walks(
        || tree.walk_below(pid),
        &mut BTreeSet::new(),
        sig,
        |_| false,
    );
}

/// Signal each of `found` (PID and the start time it had when found)
/// through a pidfd, after checking it is still that process: a PID reused
/// since is never signalled. SIGCONT follows when `cont` (see [`wakes`]).
/// Returns the PIDs signalled, or the first error other than ESRCH with
/// the PID it concerns.
pub(crate) fn signal_pinned(
    found: &BTreeMap<i32, u64>,
    sig: i32,
    cont: bool,
) -> Result<Vec<i32>, (i32, io::Error)> {
    let mut sent = Vec::new();
    for (&pid, &start) in found {
        let Ok(fd) = PidFd::open(pid) else { continue };
        if procfs::starttime(pid) != Some(start) {
            continue; // gone, and the PID reused since
        }
        match fd.send_signal(sig) {
            Ok(()) => {
                if cont && wakes(sig) {
                    let _ = fd.send_signal(libc::SIGCONT);
                }
                sent.push(pid);
            }
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => return Err((pid, e)),
        }
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn final_signal_is_due_a_grace_after_the_first_was_due() {
        let t0 = Instant::now();
        let mut e = Escalation::new(t0, Some(Duration::from_secs(2)));
        assert_eq!(e.final_at(), Some(t0 + Duration::from_secs(2)));
        assert!(!e.final_due(t0 + Duration::from_secs(1)));
        assert!(e.final_due(t0 + Duration::from_secs(2)));
        e.mark_final_sent();
        assert!(e.final_sent());
        assert!(!e.final_due(t0 + Duration::from_secs(3)));
        assert_eq!(e.final_at(), None);
        let never = Escalation::new(t0, None);
        assert!(!never.final_due(t0 + Duration::from_secs(86_400)));
    }

    #[test]
    fn a_subtree_is_signalled_whole() {
        let tree = Tree::of_self();
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .spawn()
            .expect("sh");
        let pid = i32::try_from(child.id()).expect("pid");
        // Let the shell start its sleep.
        let t = Instant::now();
        while procfs::children(pid).is_empty() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let below: Vec<i32> = tree.walk_below(pid).members.iter().map(|m| m.pid).collect();
        assert!(below.contains(&pid), "{below:?}");
        assert_eq!(below.len(), 2, "{below:?}");
        signal_subtree(&tree, pid, libc::SIGKILL);
        let st = child.wait().expect("wait");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
    }
}
