//! The processes of an attempt, as a supervisor that is a child subreaper
//! sees them: every process below it in the process tree.
//!
//! A process is signalled only after it has been verified to be part of
//! the tree: its `/proc/PID` directory is opened first (which pins it: a
//! signal sent through that descriptor with `pidfd_send_signal(2)` reaches
//! that very process or nobody, whatever happens to the PID), then its
//! parent is checked through the pinned directory. The walk starts from
//! `/proc/self`, so it stays right when the mounted `/proc` belongs to an
//! ancestor PID namespace (locksup started by `unshare --pid --fork`
//! without `--mount-proc`): numbers are read and used in that one view.
//!
//! Without a usable `/proc` (not mounted, or one in which this process
//! does not appear) nothing can be verified; [`Tree::walk`] then finds
//! nobody and callers fall back to the attempt's process group, and to
//! every process of the PID namespace when locksup is its init (PID 1):
//! the kernel itself ends all of them when that process exits.

mod escalate;
pub(crate) mod signals;

pub(crate) use escalate::{Escalation, signal_pinned, signal_subtree};

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};

use nix::fcntl::{OFlag, open, openat};
use nix::sys::stat::Mode;

use crate::procfs;
use crate::sys;

/// How this process sees its descendants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tree {
    /// Our PID as the mounted `/proc` numbers it; `None` without a
    /// usable `/proc`.
    me: Option<i32>,
    /// This process, or its guardian, is the init of its PID namespace:
    /// every other process of the namespace is below it.
    pid1: bool,
}

/// A process of the tree, pinned by its open `/proc/PID` directory.
#[derive(Debug)]
pub(crate) struct Member {
    /// Its PID in the view of the mounted `/proc`.
    pub pid: i32,
    /// Its process group, in the same view.
    pub pgid: i32,
    /// Its start time (clock ticks since boot).
    pub starttime: u64,
    /// It had begun to exit when it was pinned.
    pub exiting: bool,
    threads: u64,
    dir: OwnedFd,
}

impl Member {
    /// Whether it has begun to exit (or ended) by now.
    fn exiting_now(&self) -> bool {
        let Ok(stat) = openat(
            &self.dir,
            "stat",
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            return true;
        };
        let mut text = String::new();
        if File::from(stat).read_to_string(&mut text).is_err() {
            return true;
        }
        procfs::parse_stat(&text).is_none_or(|st| st.exiting() || matches!(st.state, 'Z' | 'X'))
    }

    /// Its children, read through the pinned directory when it has one
    /// thread (the common case: one read instead of a directory listing).
    fn children(&self) -> Vec<i32> {
        if self.threads != 1 {
            return procfs::children(self.pid);
        }
        let path = format!("task/{}/children", self.pid);
        let Ok(fd) = openat(
            &self.dir,
            path.as_str(),
            OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) else {
            return Vec::new();
        };
        let mut text = String::new();
        if File::from(fd).read_to_string(&mut text).is_err() {
            return Vec::new();
        }
        text.split_whitespace()
            .filter_map(|s| s.parse().ok())
            .collect()
    }

    /// Send `sig` to this very process. `false` if it is gone (or the
    /// signal was refused).
    pub(crate) fn signal(&self, sig: i32) -> bool {
        sys::pidfd_send_signal(self.dir.as_fd(), sig).is_ok()
    }
}

impl Tree {
    /// The tree below the calling process.
    pub(crate) fn of_self() -> Tree {
        let me = std::fs::read_link("/proc/self")
            .ok()
            .and_then(|p| p.to_str().and_then(|s| s.parse::<i32>().ok()))
            .filter(|p| *p > 0);
        Tree {
            me,
            pid1: std::process::id() == 1,
        }
    }

    /// Whether descendants can be found and verified through `/proc`.
    pub(crate) fn visible(&self) -> bool {
        self.me.is_some()
    }

    /// Whether this process (or its guardian) is the init of its PID
    /// namespace.
    pub(crate) fn is_pid1(&self) -> bool {
        self.pid1
    }

    /// The tree below a supervisor whose guardian (its parent, see
    /// [`crate::attempt::guardian`]) has PID `guardian`: when that is 1, the
    /// namespace is theirs, and every process in it but the two is the
    /// attempt's.
    pub(crate) fn under_guardian(mut self, guardian: i32) -> Tree {
        self.pid1 |= guardian == 1;
        self
    }

    /// Every live process below this one, each verified to be the child
    /// of its parent in the walk and pinned. Zombies are left out (their
    /// children have been re-parented already), and so is a process that
    /// changed parent during the walk: both are listed in
    /// [`Walk::skipped`], as a sign that another walk may find more.
    pub(crate) fn walk(&self) -> Walk {
        let Some(me) = self.me else {
            return Walk::default();
        };
        walk_from(procfs::children(me).into_iter().map(|c| (me, c)).collect())
    }

    /// [`Tree::walk`] restricted to `pid`, a child of this process, and
    /// the processes below it.
    pub(crate) fn walk_below(&self, pid: i32) -> Walk {
        let Some(me) = self.me else {
            return Walk::default();
        };
        walk_from(vec![(me, pid)])
    }
}

/// Walk down from `stack` (parent, child) pairs: see [`Tree::walk`].
fn walk_from(mut stack: Vec<(i32, i32)>) -> Walk {
    let mut walk = Walk::default();
    let out = &mut walk.members;
    while let Some((parent, pid)) = stack.pop() {
        if out.len() >= MAX_MEMBERS {
            break;
        }
        let Some(member) = pin(parent, pid) else {
            walk.skipped.push(pid);
            continue;
        };
        let children = member.children();
        // Exiting when pinned, or since (its children may have moved to
        // us between our reading of ours and of its): look again.
        if member.exiting || member.exiting_now() {
            walk.exiting.push(pid);
        }
        stack.extend(children.into_iter().map(|c| (pid, c)));
        out.push(member);
    }
    walk
}

/// What one walk of the tree found.
#[derive(Debug, Default)]
pub(crate) struct Walk {
    /// The live processes, pinned.
    pub members: Vec<Member>,
    /// Listed as children but not pinned: ended (zombies), gone, or
    /// re-parented while the walk went on. The first time one is seen, its
    /// children are with us, and the next walk finds them.
    pub skipped: Vec<i32>,
    /// Pinned, but exiting: its children may be moving to us while we
    /// walk. Walks go on while there are such processes.
    pub exiting: Vec<i32>,
}

/// The part of the tree that can be signalled without a walk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The attempt's own process group (its first process's PID).
    Group(i32),
    /// Only the attempt's first process: it shares our process group.
    Leader(i32),
    /// Nothing known: walk only.
    Walk,
}

impl Tree {
    /// Signal (and, but for SIGKILL and SIGCONT, continue) every process
    /// below this one: `target`'s group at once, before any walk (which
    /// costs time with the size of the tree), then every other process
    /// found, walking again until a pass finds nobody new and nothing
    /// unsettled. Returns the PIDs signalled (the group as its leader).
    ///
    /// Without a usable `/proc` nothing can be verified: the group, and,
    /// as the init of the PID namespace, everybody in it (all ours).
    pub(crate) fn signal(&self, target: Target, sig: i32) -> Vec<i32> {
        let cont = signals::wakes(sig);
        let mut sent = BTreeSet::new();
        let (group, group_at) = match target {
            Target::Group(g) if sys::kill(-g, sig).is_ok() => {
                if cont {
                    let _ = sys::kill(-g, libc::SIGCONT);
                }
                sent.insert(g);
                (Some(g), procfs::boot_ticks())
            }
            _ => (None, None),
        };
        if !self.visible() {
            if self.is_pid1() && sys::kill(-1, sig).is_ok() && cont {
                let _ = sys::kill(-1, libc::SIGCONT);
            }
            if let Target::Leader(p) = target
                && sys::kill(p, sig).is_ok()
            {
                sent.insert(p);
            }
            return sent.into_iter().collect();
        }
        // Members of the group from before it was signalled have the
        // signal already (real-time signals would queue twice).
        escalate::signal_walks(
            || self.walk(),
            &mut sent,
            sig,
            |m| group == Some(m.pgid) && group_at.is_some_and(|t| m.starttime < t),
        );
        sent.into_iter().collect()
    }
}

/// A bound on one walk, so a fork bomb cannot make the supervisor hold
/// an unbounded number of descriptors; the next walk finds the rest.
const MAX_MEMBERS: usize = 65_536;

/// Open `/proc/PID` and check, through that directory, that the process
/// is alive and still the child of `parent`.
fn pin(parent: i32, pid: i32) -> Option<Member> {
    let dir = open(
        format!("/proc/{pid}").as_str(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let stat = openat(
        &dir,
        "stat",
        OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut text = String::new();
    File::from(stat).read_to_string(&mut text).ok()?;
    let st = procfs::parse_stat(&text)?;
    if st.ppid != parent || matches!(st.state, 'Z' | 'X') {
        return None;
    }
    Some(Member {
        pid,
        pgid: st.pgid,
        starttime: st.starttime,
        exiting: st.exiting(),
        threads: st.threads,
        dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_signals_its_own_children_only() {
        let tree = Tree::of_self();
        assert!(tree.visible());
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = child.id() as i32;
        let members = tree.walk().members;
        let m = members
            .iter()
            .find(|m| m.pid == pid)
            .expect("the child is found");
        assert!(m.signal(libc::SIGKILL));
        let st = child.wait().expect("wait");
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
        // Reaped: the pinned directory names nobody now.
        assert!(!m.signal(libc::SIGTERM));
        assert!(pin(std::process::id() as i32, pid).is_none());
    }
}
