//! `locksup cancel TARGET`: end the attempt holding a lock (README.md,
//! "Status, watch and cancel"; locksup(1)).
//!
//! TARGET is a session file (its lock is `TARGET.lock`), a lock file, or an
//! attempt id looked up under the roots (`--root DIR`, else the
//! configuration's `[status] roots`). What happens depends on the lock's
//! state, read from the kernel as `status` reads it:
//!
//! - held by a live `locksup run` attempt (`held` or `overdue`): its
//!   supervisor gets the signal (TERM by default; only TERM, INT, HUP and
//!   QUIT make a supervisor cancel), then SIGCONT in case it was stopped,
//!   and runs its own escalation. The supervisor is pinned with a pidfd
//!   first and its start time checked against the metadata after, so a
//!   reused PID is never signalled; one that does not match makes the lock
//!   an orphan;
//! - `orphan` (nobody supervises it), or any held lock with `--force`:
//!   cancel runs the escalation itself against the processes that hold the
//!   lock, found through `/proc/PID/fdinfo`: the signal and SIGCONT, the
//!   grace period, then SIGKILL to whatever still holds it — each process
//!   pinned with a pidfd and checked against the start time it had when it
//!   was found;
//! - `free`: nothing to do (exit 2); held by another tool without `--force`:
//!   exit 3.
//!
//! An attempt id may also name an attempt waiting in a lock's queue
//! ([`crate::lock::queue`]): its supervisor gets the signal (pinned and
//! checked against the start time its ticket records) and gives up
//! waiting; the attempts behind it move up.
//!
//! Before ending an orphan, cancel records `orphan-reaped` as the lock's
//! last ending, which the next holder is told (`LOCKSUP_PREVIOUS_OUTCOME`).
//!
//! With `--only-orphan` it acts only on an orphan (`locksup serve` reaps
//! orphans with it) and leaves any other lock alone (exit 2). With
//! `--daemon` the request goes to `locksup serve` instead
//! ([`crate::cmd::client`]), which checks who may cancel what.
//!
//! With `--wait DUR` cancel returns once no process of the attempt holds
//! the lock any more (a waiter that takes it next does not count) and says
//! how long that took after the signal.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use crate::cli::CancelArgs;
use crate::config::Config;
use crate::duration::{Dur, format_duration};
use crate::error::{Error, Result};
use crate::exit;
use crate::lock::lockfile::{self, Metadata};
use crate::lock::queue::{Ended, Queue, Waiter};
use crate::lock::status::{self, Evaluator, Kernel, LockFile, LockStatus, State};
use crate::paths::absolute;
use crate::process::{self, signals::CANCEL as SUPERVISOR_SIGNALS};
use crate::procfs::{self, FileId};
use crate::signal::Sig;
use crate::sys::PidFd;

/// The grace period for an orphan when neither `--grace` nor the metadata
/// gives one.
pub(crate) const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// How often the kernel's view is read while waiting.
const POLL: Duration = Duration::from_millis(2);

/// How many times the final signal is sent to new holders before giving
/// up (a holder that keeps forking).
const KILL_PASSES: usize = 50;

/// `locksup cancel`.
pub fn main(args: CancelArgs, config_path: Option<&Path>) -> Result<i32> {
    let config = Config::load(config_path)?;
    if args.etcd.backend == Some(crate::attempt::spec::Backend::Etcd) {
        return super::etcd::cancel(&args, &config);
    }
    let roots: Vec<PathBuf> = if args.root.is_empty() {
        config.status.roots.iter().map(|r| absolute(r)).collect()
    } else {
        args.root.iter().map(|r| absolute(r)).collect()
    };
    let (file, waiter) = match resolve(args.target.as_os_str(), &roots)? {
        Target::Lock(file) => (file, None),
        Target::Waiter(file, w) => (file, Some(w)),
    };
    let sig = args.signal.unwrap_or(Sig::TERM);
    let wait = match args.wait {
        None => None,
        Some(Dur::Finite(d)) if d.is_zero() => None,
        Some(Dur::Finite(d)) => Some(Some(d)),
        Some(Dur::Infinite) => Some(None),
    };
    let mut c = Cancel {
        file,
        sig,
        grace: args.grace,
        force: args.force,
        only_orphan: args.only_orphan,
        wait,
        out: io::stdout(),
    };
    match waiter {
        Some(w) => c.waiter(&w),
        None => c.run(),
    }
}

/// What TARGET names.
#[derive(Debug)]
enum Target {
    /// A lock file.
    Lock(LockFile),
    /// An attempt waiting in that lock's queue.
    Waiter(LockFile, Waiter),
}

/// What to cancel, resolved to one lock file.
fn resolve(target: &OsStr, roots: &[PathBuf]) -> Result<Target> {
    if target.is_empty() {
        return Err(Error::usage("empty TARGET"));
    }
    let given = PathBuf::from(target);
    let path = absolute(&given);
    if status::is_lock_name(target) || given.extension() == Some(OsStr::new("lock")) {
        return lock_file(&path).map(Target::Lock).ok_or_else(|| {
            Error::with_code(
                exit::TARGET_NOT_FOUND,
                format!("no lock file {}", path.display()),
            )
        });
    }
    let sidecar = lockfile::lock_path_for_session(&path);
    if let Some(f) = lock_file(&sidecar) {
        return Ok(Target::Lock(f));
    }
    if let Some(f) = lock_file(&path) {
        return Ok(Target::Lock(f));
    }
    // With no roots an attempt id cannot be looked up, so a TARGET
    // written as a file name (`abc.jsonl`) is a file that is not there.
    let looks_like_path = target.as_encoded_bytes().contains(&b'/')
        || path.exists()
        || (roots.is_empty() && given.extension().is_some());
    if looks_like_path {
        return Err(Error::with_code(
            exit::TARGET_NOT_FOUND,
            format!(
                "no lock file for {}: {} does not exist",
                given.display(),
                sidecar.display()
            ),
        ));
    }
    // An attempt id.
    let id = target.to_string_lossy();
    if roots.is_empty() {
        return Err(Error::usage(format!(
            "'{id}' is not a lock or session file here, and there are no roots to look \
             for an attempt id under: give --root DIR or set [status] roots"
        )));
    }
    let paths: Vec<(PathBuf, bool)> = roots.iter().map(|r| (r.clone(), false)).collect();
    let all = status::snapshot(&paths)?;
    let queued: Vec<(LockFile, Waiter)> = all
        .iter()
        .flat_map(|l| {
            l.queue
                .iter()
                .filter(|w| w.info.as_ref().is_some_and(|i| i.attempt_id == id))
                .map(|w| (l.file.clone(), w.clone()))
        })
        .collect();
    let mut found: Vec<LockStatus> = all
        .into_iter()
        .filter(|l| l.metadata.as_ref().is_some_and(|m| m.attempt_id == id))
        .collect();
    if found.is_empty()
        && let [(file, waiter)] = queued.as_slice()
    {
        return Ok(Target::Waiter(file.clone(), waiter.clone()));
    }
    if found.is_empty() && queued.len() > 1 {
        return Err(Error::usage(format!(
            "attempt id '{id}' waits in {} queues; name the lock file instead",
            queued.len()
        )));
    }
    if found.len() > 1 {
        return Err(Error::usage(format!(
            "attempt id '{id}' is recorded in {} held locks; name the lock file instead",
            found.len()
        )));
    }
    match found.pop() {
        Some(l) => Ok(Target::Lock(l.file)),
        None => Err(Error::with_code(
            exit::TARGET_NOT_FOUND,
            format!(
                "{}no held lock or queue under {} has attempt id '{id}'",
                if given.extension().is_some() {
                    format!("{} does not exist, and ", sidecar.display())
                } else {
                    String::new()
                },
                roots
                    .iter()
                    .map(|r| r.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// The lock file at `path`, if a regular file is there (not following a
/// symbolic link).
fn lock_file(path: &Path) -> Option<LockFile> {
    let m = fs::symlink_metadata(path).ok()?;
    if !m.file_type().is_file() {
        return None;
    }
    Some(LockFile {
        path: path.to_path_buf(),
        id: FileId::new(m.dev(), m.ino()),
        root: path.parent().map(Path::to_path_buf).unwrap_or_default(),
    })
}

/// The lock's state now, as `status` would show it.
fn look(file: &LockFile) -> LockStatus {
    let kernel = Kernel::read();
    let mut ev = Evaluator::new();
    let mut all = ev.evaluate(
        std::slice::from_ref(file),
        &kernel,
        SystemTime::now(),
        &mut |f| status::read_metadata(&f.path, f.id),
    );
    all.pop().unwrap_or_else(|| LockStatus::free(file))
}

struct Cancel {
    file: LockFile,
    sig: Sig,
    grace: Option<Dur>,
    force: bool,
    /// Leave anything but an orphan alone.
    only_orphan: bool,
    /// `None`: don't wait; `Some(None)`: wait forever.
    wait: Option<Option<Duration>>,
    out: io::Stdout,
}

/// The attempt being ended: the PIDs the kernel names as having taken its
/// lock. While one of them is listed as a holder, the attempt holds it.
struct Attempt {
    takers: BTreeSet<i32>,
}

impl Cancel {
    fn run(&mut self) -> Result<i32> {
        let st = look(&self.file);
        let path = self.file.path.display().to_string();
        if self.only_orphan && st.state != State::Orphan {
            return Err(Error::with_code(
                exit::NOT_HELD,
                format!("{path} is {}, not an orphan: left alone", st.state.as_str()),
            ));
        }
        match (st.state, &st.metadata) {
            (State::Free, _) => Err(Error::with_code(
                exit::NOT_HELD,
                format!("{path} is not held"),
            )),
            (State::Held | State::Overdue, None) if !self.force => Err(Error::with_code(
                exit::NOT_AN_ATTEMPT,
                format!(
                    "{path} is held by {}, not by a locksup attempt; use --force to signal it",
                    describe(&st)
                ),
            )),
            (State::Held | State::Overdue, Some(m)) if st.supervisor_alive == Some(true) => {
                let m = m.clone();
                self.via_supervisor(&st, &m)
            }
            _ => self.reap(&st, None),
        }
    }

    /// Signal the attempt's supervisor, which ends the attempt.
    fn via_supervisor(&mut self, st: &LockStatus, m: &Metadata) -> Result<i32> {
        if !self
            .sig
            .standard()
            .is_some_and(|s| SUPERVISOR_SIGNALS.contains(&s))
        {
            return Err(Error::usage(format!(
                "--signal {} would not make the supervisor of attempt '{}' end it \
                 (and KILL would leave it unsupervised); use TERM, INT, HUP or QUIT",
                self.sig.name(),
                m.attempt_id
            )));
        }
        let sup = m.supervisor_pid;
        // Pin the process first, then check it is the recorded one: a
        // process that started before the metadata was written cannot be a
        // newcomer on a reused PID, and the pidfd stays with it.
        let pidfd = match PidFd::open(sup) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return self.reap(&look(&self.file), Some("its supervisor has just exited"));
            }
            Err(e) => return Err(os_error(e, &format!("cannot open supervisor pid {sup}"))),
        };
        if !procfs::alive(sup) || procfs::starttime(sup) != Some(m.supervisor_starttime) {
            return self.reap(
                &look(&self.file),
                Some("its recorded supervisor is not running (its start time differs)"),
            );
        }
        let attempt = Attempt {
            takers: st.takers.iter().copied().collect(),
        };
        match pidfd.send_signal(self.sig.number()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return self.reap(&look(&self.file), Some("its supervisor has just exited"));
            }
            Err(e) => {
                return Err(os_error(
                    e,
                    &format!(
                        "cannot signal supervisor pid {sup} of attempt '{}'",
                        m.attempt_id
                    ),
                ));
            }
        }
        let sent = Instant::now();
        // A stopped supervisor would sit on the signal, and a stopped
        // guardian (its parent, the locksup the caller started) would not
        // pass its exit status on.
        let _ = pidfd.send_signal(libc::SIGCONT);
        if let Some(g) = m.guardian_pid
            && let Ok(gfd) = PidFd::open(g)
            && procfs::ppid(sup) == Some(g)
        {
            let _ = gfd.send_signal(libc::SIGCONT);
        }
        self.say(&format!(
            "sent {} to supervisor pid {sup} of attempt '{}' holding {}",
            self.sig.name(),
            m.attempt_id,
            self.file.path.display()
        ));
        self.wait_released(&attempt, sent)
    }

    /// Make a waiting attempt's supervisor give up: it leaves the queue.
    fn waiter(&mut self, w: &Waiter) -> Result<i32> {
        let Some(info) = &w.info else {
            return Err(Error::with_code(
                exit::NOT_AN_ATTEMPT,
                format!(
                    "ticket {} in the queue of {} cannot be read",
                    w.ticket,
                    self.file.path.display()
                ),
            ));
        };
        if !self
            .sig
            .standard()
            .is_some_and(|s| SUPERVISOR_SIGNALS.contains(&s))
        {
            return Err(Error::usage(format!(
                "--signal {} would not make the supervisor of attempt '{}' give up; \
                 use TERM, INT, HUP or QUIT",
                self.sig.name(),
                info.attempt_id
            )));
        }
        let sup = info.supervisor_pid;
        let gone = || {
            Error::with_code(
                exit::NOT_HELD,
                format!(
                    "attempt '{}' is not waiting for {} any more",
                    info.attempt_id,
                    self.file.path.display()
                ),
            )
        };
        // Pinned first, then checked: the ticket's holder is the recorded
        // supervisor, started when the ticket says.
        let pidfd = PidFd::open(sup).map_err(|e| match e.raw_os_error() {
            Some(libc::ESRCH) => gone(),
            _ => os_error(e, &format!("cannot open supervisor pid {sup}")),
        })?;
        if w.holder_pid != Some(sup) || procfs::starttime(sup) != Some(info.supervisor_starttime) {
            return Err(gone());
        }
        pidfd
            .send_signal(self.sig.number())
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ESRCH) => gone(),
                _ => os_error(e, &format!("cannot signal supervisor pid {sup}")),
            })?;
        let sent = Instant::now();
        let _ = pidfd.send_signal(libc::SIGCONT);
        self.say(&format!(
            "sent {} to supervisor pid {sup} of attempt '{}' waiting for {} (position {})",
            self.sig.name(),
            info.attempt_id,
            self.file.path.display(),
            w.position
        ));
        let Some(limit) = self.wait else {
            return Ok(exit::SUCCESS);
        };
        while procfs::starttime(sup) == Some(info.supervisor_starttime) {
            if limit.is_some_and(|l| sent.elapsed() >= l) {
                return Err(Error::with_code(
                    exit::TIMED_OUT,
                    format!(
                        "attempt '{}' still waits after {}",
                        info.attempt_id,
                        format_duration(sent.elapsed())
                    ),
                ));
            }
            std::thread::sleep(POLL);
        }
        self.say(&format!(
            "attempt '{}' gave up after {}",
            info.attempt_id,
            format_duration(sent.elapsed())
        ));
        Ok(exit::SUCCESS)
    }

    /// Run the escalation against the processes that hold the lock.
    fn reap(&mut self, st: &LockStatus, why: Option<&str>) -> Result<i32> {
        let path = self.file.path.display().to_string();
        if !st.state.is_held() {
            return Err(Error::with_code(
                exit::NOT_HELD,
                format!("{path} is not held"),
            ));
        }
        let label = match (&st.metadata, why) {
            (Some(m), Some(why)) => format!("orphan of attempt '{}' ({why})", m.attempt_id),
            (Some(m), None) => format!("orphan of attempt '{}'", m.attempt_id),
            (None, _) => "held by another tool".to_owned(),
        };
        let attempt = Attempt {
            takers: st.takers.iter().copied().collect(),
        };
        let first = self.holders();
        if first.is_empty() {
            if !look(&self.file).state.is_held() {
                self.say(&format!("{path} became free"));
                return Ok(exit::SUCCESS);
            }
            return Err(Error::with_code(
                exit::NOT_PERMITTED,
                format!(
                    "cannot see the processes holding {path} ({label}): not permitted to inspect them?"
                ),
            ));
        }
        if let Some(m) = &st.metadata {
            // The next holder is told how this one ended.
            record_orphan_reaped(&self.file.path, m);
        }
        let sent = Instant::now();
        let targets = self.signal_all(&first, self.sig.number(), true)?;
        self.say(&format!(
            "{path} is {label}: sent {} to {}",
            self.sig.name(),
            pid_list(&targets)
        ));
        let grace = match self.grace {
            Some(Dur::Finite(g)) => Some(g),
            Some(Dur::Infinite) => None,
            None => Some(
                st.metadata
                    .as_ref()
                    .and_then(|m| m.grace_ms)
                    .map_or(DEFAULT_GRACE, Duration::from_millis),
            ),
        };
        let timing = process::Escalation::new(Instant::now(), grace);
        if let (Some(grace), Some(until)) = (grace, timing.final_at()) {
            while !timing.final_due(Instant::now()) && !self.released(&attempt) {
                std::thread::sleep(POLL.min(until.saturating_duration_since(Instant::now())));
            }
            let mut killed = BTreeSet::new();
            for _ in 0..KILL_PASSES {
                if self.released(&attempt) {
                    break;
                }
                let left = self.holders();
                if left.is_empty() {
                    break;
                }
                killed.extend(self.signal_all(&left, libc::SIGKILL, false)?);
                std::thread::sleep(POLL);
            }
            if !killed.is_empty() {
                self.say(&format!(
                    "sent KILL to {} after {}",
                    pid_list(&killed.into_iter().collect::<Vec<_>>()),
                    format_duration(grace)
                ));
            }
        }
        self.wait_released(&attempt, sent)
    }

    /// The processes holding the lock now, with their start times.
    fn holders(&self) -> BTreeMap<i32, u64> {
        let found = procfs::fd_lock_holders(&std::collections::HashSet::from([self.file.id]));
        found
            .get(&self.file.id)
            .into_iter()
            .flatten()
            .filter_map(|h| Some((h.pid, procfs::starttime(h.pid)?)))
            .filter(|(pid, _)| procfs::alive(*pid))
            .collect()
    }

    /// Signal each holder through a pidfd, after checking it is still the
    /// process that was found ([`process::signal_pinned`]). Returns the
    /// PIDs signalled.
    fn signal_all(&self, holders: &BTreeMap<i32, u64>, sig: i32, cont: bool) -> Result<Vec<i32>> {
        process::signal_pinned(holders, sig, cont).map_err(|(pid, e)| {
            os_error(
                e,
                &format!(
                    "cannot signal pid {pid} holding {}",
                    self.file.path.display()
                ),
            )
        })
    }

    /// No process of the attempt holds the lock: the kernel names none of
    /// its takers as a holder (a lock taken since by a waiter is another
    /// attempt's; an inherited lock keeps its dead taker's PID listed for
    /// as long as any process holds it).
    fn released(&self, a: &Attempt) -> bool {
        let entries = procfs::locks_on(self.file.id);
        let taken_by_attempt = entries
            .iter()
            .any(|e| !e.waiter && a.takers.contains(&e.pid));
        !taken_by_attempt
    }

    /// With `--wait`, wait for the release and say how long it took.
    fn wait_released(&mut self, a: &Attempt, sent: Instant) -> Result<i32> {
        let Some(limit) = self.wait else {
            return Ok(exit::SUCCESS);
        };
        loop {
            if self.released(a) {
                let took = sent.elapsed();
                self.say(&format!(
                    "{} released {} after the signal",
                    self.file.path.display(),
                    format_duration(took)
                ));
                return Ok(exit::SUCCESS);
            }
            if let Some(limit) = limit
                && sent.elapsed() >= limit
            {
                let holders: Vec<i32> = self.holders().into_keys().collect();
                return Err(Error::with_code(
                    exit::TIMED_OUT,
                    format!(
                        "{} is still held after waiting {} (by {})",
                        self.file.path.display(),
                        format_duration(limit),
                        if holders.is_empty() {
                            "processes locksup cannot see".to_owned()
                        } else {
                            pid_list(&holders)
                        }
                    ),
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    fn say(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
        let _ = self.out.flush();
    }
}

/// Record `orphan-reaped` as the lock's last ending (best effort).
fn record_orphan_reaped(lock: &Path, m: &Metadata) {
    let mode = fs::symlink_metadata(lock).map_or(0o600, |md| md.mode() & 0o666);
    let recorded = lockfile::open_parent(lock)
        .map_err(|e| e.message().to_owned())
        .and_then(|(dir, name)| Queue::open(&dir, &name, lock, mode).map_err(|e| e.to_string()))
        .and_then(|q| {
            q.record_end(&Ended {
                attempt_id: m.attempt_id.clone(),
                fence: m.fence,
                outcome: "orphan-reaped".into(),
                exit_code: None,
                ended_at: crate::events::rfc3339(SystemTime::now()),
            })
            .map_err(|e| e.to_string())
        });
    if let Err(e) = recorded {
        log::warn!("cannot record the orphan's end for {}: {e}", lock.display());
    }
}

fn describe(st: &LockStatus) -> String {
    match st.holders.first() {
        Some(h) => match &h.command {
            Some(c) => format!("pid {} ({c})", h.pid),
            None => format!("pid {}", h.pid),
        },
        None => "a process locksup cannot see".to_owned(),
    }
}

fn pid_list(pids: &[i32]) -> String {
    let list: Vec<String> = pids.iter().map(i32::to_string).collect();
    match pids.len() {
        1 => format!("pid {}", list[0]),
        _ => format!("pids {}", list.join(", ")),
    }
}

/// An OS error while signalling: EPERM is "not permitted" (exit 4).
fn os_error(e: io::Error, what: &str) -> Error {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            Error::with_code(exit::NOT_PERMITTED, format!("{what}: not permitted"))
        }
        _ => Error::io(format!("{what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_paths_and_refuses_what_is_not_there() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("s.jsonl.lock");
        fs::write(&lock, "").unwrap();
        let file = |t: Target| match t {
            Target::Lock(f) => f,
            Target::Waiter(..) => panic!("not a waiter"),
        };
        let by_session = file(resolve(dir.path().join("s.jsonl").as_os_str(), &[]).unwrap());
        assert_eq!(by_session.path, lock);
        let by_lock = file(resolve(lock.as_os_str(), &[]).unwrap());
        assert_eq!(by_lock.id, by_session.id);
        let e = resolve(dir.path().join("nope.lock").as_os_str(), &[]).unwrap_err();
        assert_eq!(e.code(), exit::TARGET_NOT_FOUND);
        let e = resolve(dir.path().join("other.jsonl").as_os_str(), &[]).unwrap_err();
        assert_eq!(e.code(), exit::TARGET_NOT_FOUND);
        // An attempt id without roots to look under.
        let e = resolve(OsStr::new("some-attempt-id"), &[]).unwrap_err();
        assert_eq!(e.code(), exit::FAILURE);
        // A file name is not taken for one.
        let e = resolve(OsStr::new("locksup-no-such-session.jsonl"), &[]).unwrap_err();
        assert_eq!(e.code(), exit::TARGET_NOT_FOUND);
        let e = resolve(OsStr::new("some-attempt-id"), &[dir.path().to_path_buf()]).unwrap_err();
        assert_eq!(e.code(), exit::TARGET_NOT_FOUND);
        assert!(resolve(OsStr::new(""), &[]).is_err());
    }

    #[test]
    fn pid_lists_read_well() {
        assert_eq!(pid_list(&[5]), "pid 5");
        assert_eq!(pid_list(&[5, 6]), "pids 5, 6");
    }
}
