//! The lock file: how an attempt opens and takes it, the metadata line it
//! carries while held, and how the supervisor checks the kernel's view.
//!
//! This is the flock(2) backend. Taking ([`open_for_attempt`], [`take`]),
//! probing ([`held_by`]) and naming holders ([`holders`]) are the whole
//! interface supervision uses, so another backend (an etcd lease) can sit
//! beside it later without touching [`crate::supervise`].

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::procfs::{self, FileId};

/// Version of the metadata format.
pub const METADATA_VERSION: u32 = 1;

/// The lock file for a session: `SESSION.lock` beside it.
pub fn lock_path_for_session(session: &Path) -> PathBuf {
    let mut s = session.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Check a lock path before spawning, for clear errors: it must be a
/// regular file or not exist yet, and its directory must exist. The
/// attempt re-checks when it opens the file (`O_NOFOLLOW`, `fstat`), so
/// this is for messages, not for safety.
pub fn preflight(path: &Path) -> Result<(), String> {
    match fs::symlink_metadata(path) {
        Ok(meta) => describe_unusable(path, &meta).map_or(Ok(()), Err),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
            match dir.map(fs::metadata) {
                Some(Ok(m)) if m.is_dir() => Ok(()),
                Some(Ok(_)) => Err(format!(
                    "cannot create lock file {}: {} is not a directory",
                    path.display(),
                    dir.map_or(String::new(), |d| d.display().to_string())
                )),
                Some(Err(e)) if e.kind() == io::ErrorKind::NotFound => Err(format!(
                    "cannot create lock file {}: directory {} does not exist",
                    path.display(),
                    dir.map_or(String::new(), |d| d.display().to_string())
                )),
                Some(Err(e)) => Err(format!("cannot create lock file {}: {e}", path.display())),
                None => Ok(()),
            }
        }
        Err(e) => Err(format!("cannot use lock file {}: {e}", path.display())),
    }
}

/// Why an existing path cannot be a lock file, if it cannot.
fn describe_unusable(path: &Path, meta: &fs::Metadata) -> Option<String> {
    let ft = meta.file_type();
    let what = if ft.is_symlink() {
        "is a symbolic link; refusing to follow it"
    } else if ft.is_dir() {
        "is a directory"
    } else if ft.is_fifo() {
        "is a FIFO, not a regular file"
    } else if ft.is_socket() {
        "is a socket, not a regular file"
    } else if ft.is_block_device() || ft.is_char_device() {
        "is a device, not a regular file"
    } else if !ft.is_file() {
        "is not a regular file"
    } else {
        return None;
    };
    Some(format!("lock file {} {what}", path.display()))
}

/// Open (creating with `mode` if needed) the lock file for an attempt:
/// `O_NOFOLLOW`, `O_CLOEXEC`, `O_NONBLOCK` (so a FIFO planted at the path
/// cannot block us), then refuse anything that is not a regular file.
pub fn open_for_attempt(path: &Path, mode: u32) -> Result<File, String> {
    let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY;
    let created = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(flags)
        .open(path);
    let (file, created) = match created {
        Ok(f) => (f, true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(flags)
                .open(path)
                .map_err(|e| open_error(path, &e))?;
            (f, false)
        }
        Err(e) => return Err(open_error(path, &e)),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot stat lock file {}: {e}", path.display()))?;
    if let Some(why) = describe_unusable(path, &meta) {
        return Err(why);
    }
    if created {
        // The umask may have narrowed the mode; the configured mode is what
        // was asked for.
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| format!("cannot set mode of lock file {}: {e}", path.display()))?;
    }
    // Leave the descriptor in blocking mode for the command that inherits it.
    let fl = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| format!("fcntl on lock file {}: {e}", path.display()))?;
    let fl = nix::fcntl::OFlag::from_bits_truncate(fl) & !nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETFL(fl))
        .map_err(|e| format!("fcntl on lock file {}: {e}", path.display()))?;
    Ok(file)
}

fn open_error(path: &Path, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ELOOP) => format!(
            "lock file {} is a symbolic link; refusing to follow it",
            path.display()
        ),
        Some(libc::EISDIR) => format!("lock file {} is a directory", path.display()),
        Some(libc::ENOENT) => format!(
            "cannot create lock file {}: its directory does not exist",
            path.display()
        ),
        Some(libc::ENXIO) | Some(libc::ENODEV) => {
            format!("lock file {} is not a regular file", path.display())
        }
        _ => format!("cannot open lock file {}: {e}", path.display()),
    }
}

/// The identity of an open lock file, as `/proc/locks` names it.
pub fn file_id(file: &File) -> io::Result<FileId> {
    let meta = file.metadata()?;
    Ok(FileId::new(meta.dev(), meta.ino()))
}

/// Outcome of one try to take the lock.
pub enum Take {
    /// The lock is ours; the descriptor holds it.
    Held(Flock<File>),
    /// Someone else holds it (only with `nonblock`).
    Busy(File),
}

/// Take the lock on `file`: exclusive or shared, blocking or not.
pub fn take(file: File, shared: bool, nonblock: bool) -> Result<Take, String> {
    let arg = match (shared, nonblock) {
        (false, false) => FlockArg::LockExclusive,
        (false, true) => FlockArg::LockExclusiveNonblock,
        (true, false) => FlockArg::LockShared,
        (true, true) => FlockArg::LockSharedNonblock,
    };
    let mut file = file;
    loop {
        match Flock::lock(file, arg) {
            Ok(held) => return Ok(Take::Held(held)),
            Err((f, Errno::EWOULDBLOCK)) if nonblock => return Ok(Take::Busy(f)),
            Err((f, Errno::EINTR)) => file = f,
            Err((_, e)) => return Err(format!("flock failed: {e}")),
        }
    }
}

/// Whether the lock that `acquirer` took on `file` is still held: some
/// holder line in `/proc/locks` names that process. A lock taken since by
/// another process (the next attempt) does not count.
pub fn held_by(file: FileId, acquirer: i32) -> bool {
    procfs::locks_on(file)
        .iter()
        .any(|e| !e.waiter && e.pid == acquirer)
}

/// What a probe on a fresh open file description found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// Nobody holds the lock (the probe took it and let go at once).
    Free,
    /// Somebody holds it.
    Busy,
    /// The path no longer names the file (deleted or replaced): ask
    /// `/proc/locks` instead.
    Unknown,
}

/// Try the lock on a separate open file description, exclusive and
/// non-blocking, and let go at once. Microseconds, unlike a read of
/// `/proc/locks`, whose first read in a process waits for an RCU grace
/// period (several milliseconds).
pub fn probe(path: &Path, expect: FileId) -> Probe {
    let Ok(file) = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    else {
        return Probe::Unknown;
    };
    if file_id(&file).ok() != Some(expect) {
        return Probe::Unknown;
    }
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(held) => {
            // Dropping the file closes the description, which unlocks too.
            let _ = held.unlock();
            Probe::Free
        }
        Err((_, Errno::EWOULDBLOCK)) => Probe::Busy,
        Err(_) => Probe::Unknown,
    }
}

/// PIDs named as holders of any lock on `file` in `/proc/locks`.
pub fn kernel_holders(file: FileId) -> Vec<i32> {
    procfs::locks_on(file)
        .iter()
        .filter(|e| !e.waiter)
        .map(|e| e.pid)
        .collect()
}

/// Processes that still have `file` open, with their command lines.
pub fn holders(file: FileId) -> Vec<(i32, String)> {
    procfs::holders_of(file)
        .into_iter()
        .map(|pid| (pid, procfs::cmdline(pid).unwrap_or_default()))
        .collect()
}

/// The metadata line written into the lock file while the lock is held.
/// Advisory: readers check it against the kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Metadata {
    /// Format version.
    pub v: u32,
    /// PID of the attempt (the process that took the lock and runs the command).
    pub pid: i32,
    /// Its process group.
    pub pgid: i32,
    /// When the metadata was written (RFC 3339).
    #[serde(rename = "createdAt")]
    pub created_at: String,
    /// Field 22 of `/proc/PID/stat`, which detects PID reuse.
    pub starttime: u64,
    /// PID of the supervising `locksup`.
    pub supervisor_pid: i32,
    /// Start time of the supervisor (field 22).
    pub supervisor_starttime: u64,
    /// The attempt's id.
    pub attempt_id: String,
    /// The session file, if any.
    pub session: Option<String>,
    /// Caller-given session key.
    pub session_key: Option<String>,
    /// The command's argv.
    pub command: Vec<String>,
    /// When the lock was acquired (RFC 3339).
    pub acquired_at: String,
    /// When the attempt's time runs out (RFC 3339); none without a timeout.
    pub deadline: Option<String>,
    /// The timeout in milliseconds; none without a timeout.
    pub timeout_ms: Option<u64>,
    /// The grace period in milliseconds; none for an infinite grace.
    pub grace_ms: Option<u64>,
    /// Host name.
    pub host: String,
}

impl Metadata {
    /// Parse the first line of a lock file's contents.
    pub fn parse(text: &str) -> Option<Metadata> {
        serde_json::from_str(text.lines().next()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_lock_path_is_a_sidecar() {
        assert_eq!(
            lock_path_for_session(Path::new("/s/abc.jsonl")),
            PathBuf::from("/s/abc.jsonl.lock")
        );
    }

    #[test]
    fn metadata_round_trips() {
        let m = Metadata {
            v: METADATA_VERSION,
            pid: 10,
            pgid: 10,
            created_at: "2026-01-01T00:00:00.000Z".into(),
            starttime: 5,
            supervisor_pid: 9,
            supervisor_starttime: 4,
            attempt_id: "a".into(),
            session: Some("/s".into()),
            session_key: None,
            command: vec!["true".into()],
            acquired_at: "2026-01-01T00:00:00.000Z".into(),
            deadline: None,
            timeout_ms: None,
            grace_ms: Some(10_000),
            host: "h".into(),
        };
        let line = serde_json::to_string(&m).unwrap();
        assert!(line.contains("\"createdAt\""));
        assert_eq!(Metadata::parse(&line), Some(m));
        assert_eq!(Metadata::parse("not json"), None);
        assert_eq!(Metadata::parse(""), None);
    }

    #[test]
    fn refuses_symlinks_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        fs::write(&target, "").unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(open_for_attempt(&link, 0o600).unwrap_err().contains("symbolic link"));
        assert!(preflight(&link).unwrap_err().contains("symbolic link"));
        assert!(open_for_attempt(dir.path(), 0o600).is_err());
        assert!(preflight(dir.path()).unwrap_err().contains("directory"));
        let missing = dir.path().join("no/such.lock");
        assert!(preflight(&missing).unwrap_err().contains("does not exist"));
    }

    #[test]
    fn creates_with_the_requested_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let f = open_for_attempt(&p, 0o640).unwrap();
        assert_eq!(f.metadata().unwrap().permissions().mode() & 0o7777, 0o640);
    }
}
