//! The lock file: how an attempt opens and takes it, the metadata line it
//! carries while held, and how the supervisor checks the kernel's view.
//!
//! This is the flock(2) backend. Taking ([`open_parent`], then `flock(2)`
//! in the attempt's first process, [`crate::attempt::spawn`]), probing ([`held_by`]) and naming holders ([`holders`]) are the whole
//! interface supervision uses, so another backend (an etcd lease) can sit
//! beside it later without touching [`crate::attempt::supervise`].

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, Flock, FlockArg, OFlag, openat, readlinkat};
use nix::sys::stat::{Mode, fstat, fstatat};
use serde::{Deserialize, Serialize};

use crate::error::Error;
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
pub(crate) fn preflight(path: &Path) -> Result<(), Error> {
    preflight_text(path).map_err(Error::lock)
}

/// [`preflight`], its error as text.
fn preflight_text(path: &Path) -> Result<(), String> {
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

/// How many symbolic links one resolution follows at most (as the kernel).
const MAX_SYMLINKS: u32 = 40;

/// Open the directory that holds the lock file `path` (absolute) and return
/// it with the file's name in it, for an `openat` with `O_NOFOLLOW`.
///
/// The directories are resolved one component at a time, following
/// symbolic links as the kernel would, except one that
/// `fs.protected_symlinks` refuses: a link in a sticky, world-writable
/// directory (such as /tmp) whose owner is neither the caller nor that
/// directory's owner. Such a link is how another user would redirect root's
/// lock file into a directory of their choosing, and the check holds even
/// where that sysctl is off. Resolving step by step, on descriptors,
/// leaves no window to swap a checked directory for a link.
pub(crate) fn open_parent(path: &Path) -> Result<(OwnedFd, OsString), Error> {
    open_parent_text(path).map_err(Error::lock)
}

/// [`open_parent`], its error as text.
fn open_parent_text(path: &Path) -> Result<(OwnedFd, OsString), String> {
    let name = path
        .file_name()
        .ok_or_else(|| format!("lock path {} does not name a file", path.display()))?
        .to_owned();
    let parent = path.parent().unwrap_or(Path::new("/"));
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let open_root = || {
        openat(AT_FDCWD, "/", dir_flags, Mode::empty())
            .map_err(|e| format!("cannot open /: {}", e.desc()))
    };
    let mut dir = open_root()?;
    let mut todo: VecDeque<OsString> = parent
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_owned()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    let mut links = 0;
    let me = nix::unistd::geteuid().as_raw();
    let shown = || parent.display().to_string();
    while let Some(c) = todo.pop_front() {
        let st =
            fstatat(&dir, c.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| match e {
                Errno::ENOENT => format!(
                    "cannot create lock file {}: directory {} does not exist",
                    path.display(),
                    shown()
                ),
                e => format!("cannot use lock directory {}: {}", shown(), e.desc()),
            })?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFLNK => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(format!(
                        "cannot use lock directory {}: too many symbolic links",
                        shown()
                    ));
                }
                let d = fstat(&dir).map_err(|e| format!("fstat: {}", e.desc()))?;
                let sticky_public =
                    d.st_mode & libc::S_ISVTX != 0 && d.st_mode & libc::S_IWOTH != 0;
                if sticky_public && st.st_uid != me && st.st_uid != d.st_uid {
                    return Err(format!(
                        "lock path {} goes through a symbolic link ({}) that another user                          owns in a sticky, world-writable directory; refusing to follow it",
                        path.display(),
                        c.to_string_lossy()
                    ));
                }
                let target = readlinkat(&dir, c.as_os_str())
                    .map_err(|e| format!("readlink in {}: {}", shown(), e.desc()))?;
                let target = PathBuf::from(target);
                if target.is_absolute() {
                    dir = open_root()?;
                }
                for comp in target.components().rev() {
                    match comp {
                        Component::Normal(n) => todo.push_front(n.to_owned()),
                        Component::ParentDir => todo.push_front("..".into()),
                        _ => {}
                    }
                }
            }
            libc::S_IFDIR => {
                dir = openat(
                    &dir,
                    c.as_os_str(),
                    dir_flags | OFlag::O_NOFOLLOW,
                    Mode::empty(),
                )
                .map_err(|e| format!("cannot use lock directory {}: {}", shown(), e.desc()))?;
            }
            _ => {
                return Err(format!(
                    "cannot create lock file {}: {} is not a directory",
                    path.display(),
                    shown()
                ));
            }
        }
    }
    Ok((dir, name))
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
    } else if meta.nlink() > 1 {
        return Some(hard_links_message(path, meta.nlink()));
    } else {
        return None;
    };
    Some(format!("lock file {} {what}", path.display()))
}

/// The message for an `open(2)` of the lock file that failed with `errno`.
pub(crate) fn open_error(path: &Path, errno: Errno) -> String {
    match errno {
        Errno::ELOOP => format!(
            "lock file {} is a symbolic link; refusing to follow it",
            path.display()
        ),
        Errno::EISDIR => format!("lock file {} is a directory", path.display()),
        Errno::ENOENT => format!(
            "cannot create lock file {}: its directory does not exist",
            path.display()
        ),
        Errno::ENXIO | Errno::ENODEV => {
            format!("lock file {} is not a regular file", path.display())
        }
        e => format!("cannot open lock file {}: {}", path.display(), e.desc()),
    }
}

/// The message for a lock file with more than one hard link: another name
/// for some other file (planted where `fs.protected_hardlinks` is off), which
/// the metadata line would overwrite. A lock file never needs two names.
pub(crate) fn hard_links_message(path: &Path, links: u64) -> String {
    format!(
        "lock file {} has {links} hard links; refusing it (a lock file needs only one name)",
        path.display()
    )
}

/// The message for a lock path whose file type (from `st_mode`) is wrong.
pub(crate) fn describe_mode(path: &Path, mode: u32) -> String {
    let what = match mode & libc::S_IFMT {
        libc::S_IFDIR => "is a directory",
        libc::S_IFIFO => "is a FIFO, not a regular file",
        libc::S_IFSOCK => "is a socket, not a regular file",
        libc::S_IFBLK | libc::S_IFCHR => "is a device, not a regular file",
        libc::S_IFLNK => "is a symbolic link; refusing to follow it",
        _ => "is not a regular file",
    };
    format!("lock file {} {what}", path.display())
}

/// Write the metadata line while the attempt holds the lock, through a
/// separate, short-lived open file description (the attempt's own
/// description is never touched by the supervisor). `expect` guards
/// against a path that was replaced meanwhile.
pub(crate) fn write_metadata(path: &Path, expect: FileId, line: &str) -> Result<(), Error> {
    write_metadata_text(path, expect, line).map_err(Error::lock)
}

/// [`write_metadata`], its error as text.
fn write_metadata_text(path: &Path, expect: FileId, line: &str) -> Result<(), String> {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| format!("cannot write metadata to {}: {e}", path.display()))?;
    if file_id(&file).ok() != Some(expect) {
        return Err(format!(
            "lock file {} was replaced while the lock was being taken",
            path.display()
        ));
    }
    let mut text = Vec::with_capacity(line.len() + 1);
    text.extend_from_slice(line.as_bytes());
    text.push(b'\n');
    // Overwrite in place and cut what is left of a longer previous line:
    // cheaper than truncating to zero first, and a reader that takes the
    // first line never sees a mix.
    let old_len = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    let new_len = text.len() as u64;
    file.write_all_at(&text, 0)
        .and_then(|()| {
            if old_len > new_len {
                file.set_len(new_len)
            } else {
                Ok(())
            }
        })
        .map_err(|e| format!("cannot write metadata to {}: {e}", path.display()))
}

/// Whether `path` (not following a symbolic link) names the file `file`:
/// false once it was removed, or replaced by another file.
pub(crate) fn path_names(path: &Path, file: FileId) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| FileId::new(m.dev(), m.ino()) == file)
}

/// Processes holding an `flock(2)` lock on a file that was named `path`
/// and has been removed since: the holders of a lock file that an
/// operator deleted. A lock taken on a new file at that path would not
/// exclude them.
pub(crate) fn deleted_holders(path: &Path) -> Vec<i32> {
    removed_lock_holders().remove(path).unwrap_or_default()
}

/// Every removed file that processes still hold an `flock(2)` lock on,
/// by the path it had, with those processes: one read of `/proc/locks`
/// and of the descriptors of the processes it names.
pub(crate) fn removed_lock_holders() -> std::collections::HashMap<PathBuf, Vec<i32>> {
    let pids: std::collections::BTreeSet<i32> = procfs::all_locks()
        .into_iter()
        .filter(|e| !e.waiter && e.kind == procfs::LockKind::Flock && e.pid > 0)
        .map(|e| e.pid)
        .collect();
    let mut out: std::collections::HashMap<PathBuf, Vec<i32>> = std::collections::HashMap::new();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let text = target.as_os_str().as_encoded_bytes();
            if let Some(gone) = text.strip_suffix(b" (deleted)") {
                let path = PathBuf::from(
                    <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(gone),
                );
                let holders = out.entry(path).or_default();
                if !holders.contains(&pid) {
                    holders.push(pid);
                }
            }
        }
    }
    out
}

/// Whether the lock file at `path` carries no metadata line of an earlier
/// attempt: a file just created, by locksup or by someone replacing the
/// lock file (an operator's `touch` or `mv`). A lock file in steady use
/// always holds its last attempt's line.
pub(crate) fn without_metadata(path: &Path) -> bool {
    read_metadata(path).is_none()
}

/// The metadata line of the lock file at `path` (the holder's, or the
/// last holder's), if it has one.
pub(crate) fn read_metadata(path: &Path) -> Option<Metadata> {
    let mut head = [0u8; 4096];
    let n = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    Metadata::parse(&String::from_utf8_lossy(&head[..n]))
}

/// The identity of an open lock file, as `/proc/locks` names it.
pub fn file_id(file: &File) -> io::Result<FileId> {
    let meta = file.metadata()?;
    Ok(FileId::new(meta.dev(), meta.ino()))
}

/// Whether the lock that `acquirer` took on `file` is still held: some
/// holder line in `/proc/locks` names that process. A lock taken since by
/// another process (the next attempt) does not count.
pub(crate) fn held_by(file: FileId, acquirer: i32) -> bool {
    procfs::locks_on(file)
        .iter()
        .any(|e| !e.waiter && e.pid == acquirer)
}

/// What a probe on a fresh open file description found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
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
pub(crate) fn probe(path: &Path, expect: FileId) -> Probe {
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
pub(crate) fn kernel_holders(file: FileId) -> Vec<i32> {
    procfs::locks_on(file)
        .iter()
        .filter(|e| !e.waiter)
        .map(|e| e.pid)
        .collect()
}

/// Processes that still have `file` open, with their command lines.
pub(crate) fn holders(file: FileId) -> Vec<(i32, String)> {
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
    /// The last heartbeat (RFC 3339), with `--watchdog` or sd_notify.
    #[serde(default)]
    pub last_heartbeat: Option<String>,
    /// The attempt's own status line (`STATUS=`).
    #[serde(default)]
    pub status: Option<String>,
    /// The watchdog interval in milliseconds.
    #[serde(default)]
    pub watchdog_ms: Option<u64>,
    /// PID of the guardian: the `locksup run` the caller started, whose
    /// supervisor this is (none with `--foreground`).
    #[serde(default)]
    pub guardian_pid: Option<i32>,
    /// The fencing token of this acquisition: greater than every earlier
    /// acquisition's of this lock (see `LOCKSUP_FENCE`).
    #[serde(default)]
    pub fence: Option<u64>,
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
            last_heartbeat: None,
            status: Some("ok".into()),
            watchdog_ms: None,
            guardian_pid: None,
            fence: Some(7),
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
        assert!(
            preflight(&link)
                .unwrap_err()
                .message()
                .contains("symbolic link")
        );
        assert!(
            preflight(dir.path())
                .unwrap_err()
                .message()
                .contains("directory")
        );
        let missing = dir.path().join("no/such.lock");
        assert!(
            preflight(&missing)
                .unwrap_err()
                .message()
                .contains("does not exist")
        );
        assert!(open_error(&link, Errno::ELOOP).contains("symbolic link"));
        assert!(describe_mode(&link, libc::S_IFIFO).contains("FIFO"));
    }

    #[test]
    fn metadata_is_written_only_to_the_expected_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        fs::write(&p, "old contents that are longer\n").unwrap();
        let id = file_id(&File::open(&p).unwrap()).unwrap();
        write_metadata(&p, id, "{\"v\":1}").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "{\"v\":1}\n");
        let other = FileId {
            inode: id.inode + 1,
            ..id
        };
        assert!(
            write_metadata(&p, other, "{}")
                .unwrap_err()
                .message()
                .contains("replaced")
        );
    }
}
