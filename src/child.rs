//! The attempt's side of an attempt: what runs in the supervisor's child
//! after it exec'd locksup in its attempt role, up to the exec of the
//! user's command in the same process.
//!
//! 1. open the lock file (`O_NOFOLLOW`, regular files only);
//! 2. take `flock(2)`, telling the supervisor `waiting` first if it is busy;
//! 3. tell the supervisor `locked`, and wait for its `go` with the metadata
//!    line and the deadline;
//! 4. write the metadata while holding the lock;
//! 5. exec the command with the lock descriptor inherited.
//!
//! The supervisor enforces `--wait` by killing this process, so the blocking
//! `flock` here never delays the supervisor's reaction to anything.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use serde::{Deserialize, Serialize};

use crate::exit;
use crate::lockfile::{self, Take};
use crate::spawn;

/// `argv[1]` that selects the attempt role of the locksup binary.
pub const ROLE_ARG: &str = "__locksup-attempt";

/// How the attempt takes the lock; passed on the helper's command line.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Descriptor the attempt reports on.
    pub status_fd: i32,
    /// Descriptor the attempt reads `go` from.
    pub control_fd: i32,
    /// Shared instead of exclusive.
    pub shared: bool,
    /// Fail at once when busy.
    pub nonblock: bool,
    /// Mode of a newly created lock file.
    pub mode: u32,
}

impl Plan {
    /// The helper's arguments after `argv[0]`.
    pub fn to_args(&self, lock: &Path, command: &[OsString]) -> Vec<OsString> {
        let flags = format!(
            "{}{}",
            if self.shared { 's' } else { 'x' },
            if self.nonblock { 'n' } else { 'w' }
        );
        let mut args: Vec<OsString> = vec![
            ROLE_ARG.into(),
            self.status_fd.to_string().into(),
            self.control_fd.to_string().into(),
            flags.into(),
            format!("{:o}", self.mode).into(),
            lock.as_os_str().to_owned(),
            "--".into(),
        ];
        args.extend(command.iter().cloned());
        args
    }

    fn from_args(args: &[OsString]) -> Option<(Plan, &OsStr, &[OsString])> {
        let text = |i: usize| args.get(i).and_then(|a| a.to_str());
        let flags = text(2)?;
        let plan = Plan {
            status_fd: text(0)?.parse().ok()?,
            control_fd: text(1)?.parse().ok()?,
            shared: flags.starts_with('s'),
            nonblock: flags.ends_with('n'),
            mode: u32::from_str_radix(text(3)?, 8).ok()?,
        };
        let lock = args.get(4)?;
        if text(5)? != "--" || args.len() < 7 {
            return None;
        }
        Some((plan, lock.as_os_str(), &args[6..]))
    }
}

/// A line the attempt sends to its supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// The lock is busy; now blocking for it. `(st_dev, st_ino)`.
    Waiting(u64, u64),
    /// The lock is busy and we may not wait.
    Busy(u64, u64),
    /// The lock is held.
    Locked(u64, u64),
    /// locksup failed (lock file unusable, ...).
    Error(String),
    /// The command could not be executed; the exit code to use.
    ExecFailed(i32, String),
}

impl Report {
    /// Encode as one line with its newline.
    pub fn encode(&self) -> String {
        let one = |s: &str| s.replace(['\n', '\r'], " ");
        match self {
            Report::Waiting(d, i) => format!("waiting {d} {i}\n"),
            Report::Busy(d, i) => format!("busy {d} {i}\n"),
            Report::Locked(d, i) => format!("locked {d} {i}\n"),
            Report::Error(m) => format!("error {}\n", one(m)),
            Report::ExecFailed(c, m) => format!("exec-failed {c} {}\n", one(m)),
        }
    }

    /// Decode a line (without its newline).
    pub fn decode(line: &str) -> Option<Report> {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let ids = || -> Option<(u64, u64)> {
            let (d, i) = rest.split_once(' ')?;
            Some((d.parse().ok()?, i.parse().ok()?))
        };
        Some(match word {
            "waiting" => ids().map(|(d, i)| Report::Waiting(d, i))?,
            "busy" => ids().map(|(d, i)| Report::Busy(d, i))?,
            "locked" => ids().map(|(d, i)| Report::Locked(d, i))?,
            "error" => Report::Error(rest.to_owned()),
            "exec-failed" => {
                let (c, m) = rest.split_once(' ').unwrap_or((rest, ""));
                Report::ExecFailed(c.parse().ok()?, m.to_owned())
            }
            _ => return None,
        })
    }
}

/// The supervisor's go-ahead, sent once the lock is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Go {
    /// The metadata line to write into the lock file.
    pub metadata: String,
    /// `LOCKSUP_DEADLINE` for the command, if there is a deadline.
    pub deadline: Option<String>,
}

/// Entry point of the attempt role; `args` follow [`ROLE_ARG`]. Returns an
/// exit code only when the command was not exec'd.
pub fn main(args: &[OsString]) -> i32 {
    let Some((plan, lock, command)) = Plan::from_args(args) else {
        eprintln!("locksup: {ROLE_ARG} is internal to locksup run");
        return exit::FAILURE;
    };
    let Ok(status) = spawn::adopt_inherited_fd(plan.status_fd) else {
        eprintln!("locksup: {ROLE_ARG} is internal to locksup run");
        return exit::FAILURE;
    };
    let mut status = File::from(status);
    let Ok(control) = spawn::adopt_inherited_fd(plan.control_fd) else {
        return fail(&mut status, "attempt lost its control pipe".into());
    };
    let control = File::from(control);
    match attempt(&plan, Path::new(lock), command, &mut status, control) {
        Ok(never) => match never {},
        Err(code) => code,
    }
}

enum Never {}

fn fail(status: &mut File, message: String) -> i32 {
    let _ = status.write_all(Report::Error(message).encode().as_bytes());
    exit::FAILURE
}

fn attempt(
    plan: &Plan,
    lock: &Path,
    command: &[OsString],
    status: &mut File,
    control: File,
) -> Result<Never, i32> {
    let file = lockfile::open_for_attempt(lock, plan.mode).map_err(|m| fail(status, m))?;
    let meta = file
        .metadata()
        .map_err(|e| fail(status, format!("cannot stat lock file: {e}")))?;
    let ids = (meta.dev(), meta.ino());
    let held = match lockfile::take(file, plan.shared, true).map_err(|m| fail(status, m))? {
        Take::Held(h) => h,
        Take::Busy(file) => {
            if plan.nonblock {
                let _ = status.write_all(Report::Busy(ids.0, ids.1).encode().as_bytes());
                return Err(exit::CONFLICT);
            }
            let _ = status.write_all(Report::Waiting(ids.0, ids.1).encode().as_bytes());
            match lockfile::take(file, plan.shared, false).map_err(|m| fail(status, m))? {
                Take::Held(h) => h,
                Take::Busy(_) => return Err(fail(status, "flock returned busy".into())),
            }
        }
    };
    if status
        .write_all(Report::Locked(ids.0, ids.1).encode().as_bytes())
        .is_err()
    {
        return Err(exit::FAILURE);
    }
    // Wait for the supervisor's go-ahead. EOF means it decided otherwise.
    let mut line = String::new();
    let mut reader = BufReader::new(control);
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return Err(exit::FAILURE);
    }
    drop(reader);
    let go: Go = match line.strip_prefix("go ").map(serde_json::from_str) {
        Some(Ok(go)) => go,
        _ => return Err(fail(status, "bad go-ahead from supervisor".into())),
    };
    let mut meta = go.metadata.into_bytes();
    meta.push(b'\n');
    if let Err(e) = held.set_len(0).and_then(|()| held.write_all_at(&meta, 0)) {
        return Err(fail(status, format!("cannot write lock metadata: {e}")));
    }
    // The command inherits the locked descriptor; the status pipe closes on
    // exec, which tells the supervisor the command is running.
    let fd = held.as_raw_fd();
    fcntl(&*held, FcntlArg::F_SETFD(FdFlag::empty()))
        .map_err(|e| fail(status, format!("fcntl: {e}")))?;
    fcntl(&*status, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|e| fail(status, format!("fcntl: {e}")))?;
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]).env("LOCKSUP_LOCK_FD", fd.to_string());
    match &go.deadline {
        Some(d) => cmd.env("LOCKSUP_DEADLINE", d),
        None => cmd.env_remove("LOCKSUP_DEADLINE"),
    };
    let err = cmd.exec();
    let code = match err.kind() {
        std::io::ErrorKind::NotFound => exit::NOT_FOUND,
        _ => exit::CANNOT_EXECUTE,
    };
    let name = String::from_utf8_lossy(command[0].as_bytes()).into_owned();
    let msg = format!("cannot run '{name}': {}", strip_os_suffix(&err));
    let _ = status.write_all(Report::ExecFailed(code, msg).encode().as_bytes());
    Err(code)
}

/// `No such file or directory (os error 2)` → `No such file or directory`.
fn strip_os_suffix(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip() {
        for r in [
            Report::Waiting(1, 2),
            Report::Busy(3, 4),
            Report::Locked(u64::MAX, 0),
            Report::Error("bad thing".into()),
            Report::ExecFailed(127, "cannot run 'x': nope".into()),
        ] {
            let line = r.encode();
            assert_eq!(Report::decode(line.trim_end_matches('\n')), Some(r));
        }
        assert_eq!(Report::decode("bogus"), None);
        assert_eq!(Report::decode("locked 1"), None);
    }

    #[test]
    fn plan_round_trips_through_argv() {
        let plan = Plan {
            status_fd: 5,
            control_fd: 6,
            shared: true,
            nonblock: false,
            mode: 0o640,
        };
        let args = plan.to_args(Path::new("/l"), &["echo".into(), "--".into()]);
        let (p, lock, cmd) = Plan::from_args(&args[1..]).unwrap();
        assert_eq!((p.status_fd, p.control_fd, p.shared, p.nonblock, p.mode), (5, 6, true, false, 0o640));
        assert_eq!(lock, "/l");
        assert_eq!(cmd, &["echo".to_string(), "--".to_string()].map(OsString::from));
    }
}
