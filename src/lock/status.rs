//! The status model: every lock file under some paths, and what the kernel
//! says about each. `status`, `watch`, `cancel` and `serve`'s orphan
//! reaper all read locks through it; [`crate::cmd::status`] renders it.
//!
//! The model:
//!
//! 1. [`scan`] walks the given files and directories (recursively, never
//!    following symbolic links) for regular files whose name ends in
//!    [`LOCK_SUFFIX`], and notes each one's device and inode.
//! 2. [`Kernel::read`] reads `/proc/locks` once and indexes it by device
//!    and inode: the processes that took each lock and the blocked waiters.
//! 3. [`Evaluator::evaluate`] joins the two, reads the metadata line of
//!    held lock files only, and decides each lock's [`State`]. When the
//!    process `/proc/locks` names as the taker is gone (an inherited lock,
//!    after the attempt's first process died), the real holders are found
//!    by one pass over the descriptors of every process
//!    ([`procfs::fd_lock_holders`]), done at most once per evaluation and
//!    only when needed.
//!
//! The metadata is advisory. It describes the current holder only when the
//! PID it records is the one the kernel names as the lock's taker (a lock
//! file keeps the line of an earlier attempt after release, and a
//! `flock(1)` that takes the lock next does not rewrite it); otherwise the
//! lock is shown as held by another tool, without metadata.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use crate::duration::millis;
use crate::error::{Error, Result};
use crate::events::rfc3339;
use crate::exit;
use crate::lock::lockfile::{self, Metadata};
use crate::lock::queue::{self, Ended, Waiter};
use crate::procfs::{self, FileId, LockEntry, LockKind};

/// What a lock file's name ends with.
pub(crate) const LOCK_SUFFIX: &str = ".lock";

/// Version of the `--json` schema (the top-level `v`).
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// How far past deadline + grace a held lock must be to count as overdue:
/// the supervisor needs a moment to deliver the final signal and reap.
pub(crate) const OVERDUE_SLACK: Duration = Duration::from_secs(1);

/// The most of a lock file read for its metadata line.
const METADATA_MAX: u64 = 64 * 1024;

// ---------------------------------------------------------------------------
// Finding lock files
// ---------------------------------------------------------------------------

/// A lock file found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LockFile {
    /// Its path (absolute when the scanned path was).
    pub path: PathBuf,
    /// Device and inode, as `/proc/locks` prints them.
    pub id: FileId,
    /// The scanned root it was found under (for shorter display names).
    pub root: PathBuf,
}

/// What a scan found: lock files and the directories walked.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Lock files, in path order.
    pub files: Vec<LockFile>,
    /// Every directory walked, roots included, in walk order.
    pub dirs: Vec<PathBuf>,
}

/// Whether a file name is a lock file's.
pub(crate) fn is_lock_name(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().ends_with(LOCK_SUFFIX.as_bytes())
}

/// Walk `paths` for lock files. A path given by name (`named`) must exist;
/// a configured root that does not is skipped. A session file given by
/// name stands for its `SESSION.lock`; any other file given by name is
/// taken as it is, whatever its name. A directory is walked recursively
/// without following symbolic links below it, and every regular file in
/// it whose name ends in `.lock` is a lock file. Unreadable subdirectories
/// are skipped.
pub(crate) fn scan(paths: &[(PathBuf, bool)]) -> Result<Scan> {
    let mut scan = Scan::default();
    let mut seen_dirs: HashSet<(u64, u64)> = HashSet::new();
    let mut seen_files: HashSet<FileId> = HashSet::new();
    for (given, named) in paths {
        // A session file named on the command line stands for its lock
        // file, `SESSION.lock`.
        let sidecar = lockfile::lock_path_for_session(given);
        let path = if *named
            && !is_lock_name(given.as_os_str())
            && !given.is_dir()
            && fs::symlink_metadata(&sidecar).is_ok_and(|m| m.is_file())
        {
            &sidecar
        } else {
            given
        };
        // A root that is a symbolic link is followed (the user or the
        // configuration pointed at it); nothing below a root is.
        let meta = match fs::metadata(path) {
            Ok(m) => m,
            Err(e) if !named => {
                log::debug!("skipping status root {}: {e}", path.display());
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::with_code(
                    exit::TARGET_NOT_FOUND,
                    format!("{}: no such file or directory", path.display()),
                ));
            }
            Err(e) => {
                return Err(Error::with_code(
                    exit::TARGET_NOT_FOUND,
                    format!("cannot read {}: {e}", path.display()),
                ));
            }
        };
        if meta.is_dir() {
            walk(
                path,
                &meta,
                path,
                &mut scan,
                &mut seen_dirs,
                &mut seen_files,
            );
        } else if meta.is_file() {
            let id = FileId::new(meta.dev(), meta.ino());
            if seen_files.insert(id) {
                let root = path.parent().map(Path::to_path_buf).unwrap_or_default();
                scan.files.push(LockFile {
                    path: path.to_path_buf(),
                    id,
                    root,
                });
            }
        } else if *named {
            return Err(Error::usage(format!(
                "{} is neither a directory nor a regular file",
                path.display()
            )));
        }
    }
    scan.files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(scan)
}

fn walk(
    root: &Path,
    root_meta: &fs::Metadata,
    dir: &Path,
    scan: &mut Scan,
    seen_dirs: &mut HashSet<(u64, u64)>,
    seen_files: &mut HashSet<FileId>,
) {
    let mut stack = vec![(dir.to_path_buf(), (root_meta.dev(), root_meta.ino()))];
    while let Some((dir, key)) = stack.pop() {
        if !seen_dirs.insert(key) {
            continue;
        }
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        scan.dirs.push(dir.clone());
        for ent in entries.flatten() {
            // d_type, without a stat; a stat (fstatat on the directory) only
            // for candidates.
            let Ok(ft) = ent.file_type() else { continue };
            if ft.is_dir() {
                if let Ok(m) = ent.metadata() {
                    stack.push((ent.path(), (m.dev(), m.ino())));
                }
            } else if ft.is_file() && is_lock_name(&ent.file_name()) {
                let Ok(m) = ent.metadata() else { continue };
                if !m.file_type().is_file() {
                    continue;
                }
                let id = FileId::new(m.dev(), m.ino());
                if seen_files.insert(id) {
                    scan.files.push(LockFile {
                        path: ent.path(),
                        id,
                        root: root.to_path_buf(),
                    });
                }
            }
        }
    }
}

/// Read the metadata line of a lock file, without following a symbolic
/// link or blocking on a FIFO, and only if it is still the file `id`.
pub(crate) fn read_metadata(path: &Path, id: FileId) -> Option<Metadata> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.file_type().is_file() || FileId::new(meta.dev(), meta.ino()) != id {
        return None;
    }
    read_metadata_from(file)
}

fn read_metadata_from(file: File) -> Option<Metadata> {
    let mut buf = Vec::new();
    file.take(METADATA_MAX).read_to_end(&mut buf).ok()?;
    let line = buf.split(|b| *b == b'\n').next()?;
    Metadata::parse(std::str::from_utf8(line).ok()?)
}

// ---------------------------------------------------------------------------
// The kernel's view
// ---------------------------------------------------------------------------

/// `/proc/locks`, indexed by file.
#[derive(Debug, Default, Clone)]
pub(crate) struct Kernel {
    by_file: HashMap<FileId, Vec<LockEntry>>,
}

impl Kernel {
    /// Read `/proc/locks` once.
    pub(crate) fn read() -> Kernel {
        Kernel::from_entries(procfs::all_locks())
    }

    /// Index parsed entries.
    pub(crate) fn from_entries(entries: Vec<LockEntry>) -> Kernel {
        let mut by_file: HashMap<FileId, Vec<LockEntry>> = HashMap::new();
        for e in entries {
            let id = FileId {
                major: e.major,
                minor: e.minor,
                inode: e.inode,
            };
            by_file.entry(id).or_default().push(e);
        }
        Kernel { by_file }
    }

    /// The entries for one file (holders and waiters).
    pub(crate) fn on(&self, id: FileId) -> &[LockEntry] {
        self.by_file.get(&id).map_or(&[], Vec::as_slice)
    }
}

// ---------------------------------------------------------------------------
// States
// ---------------------------------------------------------------------------

/// A lock's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub(crate) enum State {
    /// Nobody holds it.
    Free,
    /// Held, within its deadline or without one (or by another tool).
    Held,
    /// Held past deadline + grace while its supervisor lives.
    Overdue,
    /// Held, but the recorded supervisor is gone (or is not the recorded
    /// process), or the holders are not part of the recorded attempt:
    /// nobody will end it.
    Orphan,
}

impl State {
    /// The lowercase name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Free => "free",
            State::Held => "held",
            State::Overdue => "overdue",
            State::Orphan => "orphan",
        }
    }

    /// Held in any way.
    pub(crate) fn is_held(self) -> bool {
        self != State::Free
    }
}

/// A process holding a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Holder {
    /// Its PID.
    pub pid: i32,
    /// Its command line, if it could be read.
    /// Shared: one process may hold thousands of locks, and its command
    /// line may be long.
    #[serde(serialize_with = "serialize_shared_str")]
    pub command: Option<Arc<str>>,
}

fn serialize_shared_str<S: serde::Serializer>(
    v: &Option<Arc<str>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(text) => s.serialize_str(text),
        None => s.serialize_none(),
    }
}

/// Everything known about one lock file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LockStatus {
    /// The lock file.
    pub file: LockFile,
    /// Its state.
    pub state: State,
    /// Exclusive (`true`) or shared; `None` when free.
    pub exclusive: Option<bool>,
    /// How the lock was taken (flock, POSIX, OFD); `None` when free.
    pub kind: Option<LockKind>,
    /// The PIDs `/proc/locks` names as having taken the lock.
    pub takers: Vec<i32>,
    /// The processes that hold it now.
    pub holders: Vec<Holder>,
    /// Blocked waiters' PIDs.
    pub waiters: Vec<i32>,
    /// The metadata line, when it describes the current holder.
    pub metadata: Option<Metadata>,
    /// Whether the recorded supervisor is alive and is the recorded process.
    pub supervisor_alive: Option<bool>,
    /// Since when it has been held, per the metadata.
    pub held: Option<Duration>,
    /// Milliseconds left until the deadline; negative once past.
    pub left_ms: Option<i64>,
    /// Milliseconds since the attempt's last heartbeat, per the metadata.
    pub heartbeat_age_ms: Option<i64>,
    /// Processes that still hold a lock on a removed file that had this
    /// path (its lock file was deleted or replaced while held).
    pub removed_holders: Vec<i32>,
    /// The attempts waiting in the lock's queue, in order.
    pub queue: Vec<Waiter>,
    /// How the last holder ended, as its supervisor recorded it.
    pub last_ended: Option<Ended>,
}

impl LockStatus {
    /// A free lock: nobody holds it or waits for it.
    pub(crate) fn free(file: &LockFile) -> LockStatus {
        LockStatus {
            file: file.clone(),
            state: State::Free,
            exclusive: None,
            kind: None,
            takers: Vec::new(),
            holders: Vec::new(),
            waiters: Vec::new(),
            metadata: None,
            supervisor_alive: None,
            held: None,
            left_ms: None,
            heartbeat_age_ms: None,
            removed_holders: Vec::new(),
            queue: Vec::new(),
            last_ended: None,
        }
    }

    /// Waiting processes: those blocked in the kernel, and the queued
    /// attempts not yet asking it (the head of the queue may be both).
    pub(crate) fn waiting(&self) -> usize {
        // A blocked waiter whose parent holds a ticket is that attempt.
        let supervisors: Vec<i32> = self
            .waiters
            .iter()
            .filter_map(|&p| crate::procfs::ppid(p))
            .collect();
        let queued = self
            .queue
            .iter()
            .filter(|w| !w.holder_pid.is_some_and(|s| supervisors.contains(&s)))
            .count();
        self.waiters.len() + queued
    }

    /// The PID to show: the first real holder.
    pub(crate) fn pid(&self) -> Option<i32> {
        self.holders.first().map(|h| h.pid)
    }

    /// What identifies the lock to a person: the session file, else the
    /// lock file, relative to the scanned root when under it.
    pub(crate) fn display_name(&self) -> String {
        let full = self
            .metadata
            .as_ref()
            .and_then(|m| m.session.clone())
            .map(PathBuf::from)
            .unwrap_or_else(|| self.file.path.clone());
        match full.strip_prefix(&self.file.root) {
            Ok(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
            _ => full.display().to_string(),
        }
    }

    /// The command to show: the recorded argv, else the holder's.
    pub(crate) fn command_line(&self) -> Option<String> {
        match &self.metadata {
            Some(m) if !m.command.is_empty() => Some(m.command.join(" ")),
            _ => self
                .holders
                .iter()
                .find_map(|h| h.command.as_deref().map(str::to_owned)),
        }
    }

    /// The JSON form of one lock (the schema in README.md, "Status,
    /// watch and cancel"), ready to serialize without building a tree.
    pub(crate) fn json(&self) -> LockJson<'_> {
        let m = self.metadata.as_ref();
        LockJson {
            path: self.file.path.to_string_lossy(),
            state: self.state.as_str(),
            mode: self
                .exclusive
                .map(|x| if x { "exclusive" } else { "shared" }),
            kind: self.kind.map(kind_name),
            pid: self.pid(),
            holders: &self.holders,
            taker_pids: &self.takers,
            waiters: self.waiters.len(),
            waiter_pids: &self.waiters,
            session: m.and_then(|m| m.session.as_deref()),
            session_key: m.and_then(|m| m.session_key.as_deref()),
            attempt_id: m.map(|m| m.attempt_id.as_str()),
            command: m.map(|m| m.command.as_slice()),
            supervisor_pid: m.map(|m| m.supervisor_pid),
            supervisor_alive: self.supervisor_alive,
            acquired_at: m.map(|m| m.acquired_at.as_str()),
            deadline: m.and_then(|m| m.deadline.as_deref()),
            held_ms: self.held.map(millis),
            left_ms: self.left_ms,
            status_text: m.and_then(|m| m.status.as_deref()),
            last_heartbeat: m.and_then(|m| m.last_heartbeat.as_deref()),
            heartbeat_age_ms: self.heartbeat_age_ms,
            metadata: m,
            removed_holders: &self.removed_holders,
            fence: m.and_then(|m| m.fence),
            queue: &self.queue,
            last_ended: self.last_ended.as_ref(),
        }
    }

    /// [`LockStatus::json`] as a value (for events that add fields).
    pub(crate) fn to_json(&self) -> Value {
        serde_json::to_value(self.json()).unwrap_or(Value::Null)
    }
}

/// One lock in `--json` output. Field order is the documented order.
#[derive(Debug, Serialize)]
pub(crate) struct LockJson<'a> {
    path: std::borrow::Cow<'a, str>,
    state: &'static str,
    mode: Option<&'static str>,
    kind: Option<&'static str>,
    pid: Option<i32>,
    holders: &'a [Holder],
    taker_pids: &'a [i32],
    waiters: usize,
    waiter_pids: &'a [i32],
    session: Option<&'a str>,
    session_key: Option<&'a str>,
    attempt_id: Option<&'a str>,
    command: Option<&'a [String]>,
    supervisor_pid: Option<i32>,
    supervisor_alive: Option<bool>,
    acquired_at: Option<&'a str>,
    deadline: Option<&'a str>,
    held_ms: Option<u64>,
    left_ms: Option<i64>,
    status_text: Option<&'a str>,
    last_heartbeat: Option<&'a str>,
    heartbeat_age_ms: Option<i64>,
    metadata: Option<&'a Metadata>,
    removed_holders: &'a [i32],
    fence: Option<u64>,
    queue: &'a [Waiter],
    last_ended: Option<&'a Ended>,
}

/// The `--json` document of `status`.
#[derive(Debug, Serialize)]
pub(crate) struct Document<'a> {
    v: u32,
    ts: String,
    locks: Vec<LockJson<'a>>,
}

fn kind_name(k: LockKind) -> &'static str {
    match k {
        LockKind::Flock => "flock",
        LockKind::Posix => "posix",
        LockKind::Ofd => "ofd",
        LockKind::Other => "other",
    }
}

/// What one look at a process found.
#[derive(Debug, Clone, Copy)]
struct ProcSnap {
    alive: bool,
    starttime: Option<u64>,
}

/// Joins lock files with the kernel's view. Caches what it learns about
/// processes for the length of one evaluation.
#[derive(Default)]
pub(crate) struct Evaluator {
    procs: HashMap<i32, ProcSnap>,
    cmdlines: HashMap<i32, Option<Arc<str>>>,
    /// Holders found by an earlier fd pass, trusted while all are alive.
    known: HashMap<FileId, Vec<Holder>>,
}

/// Before the fd pass: what one held lock needs.
struct Pending {
    status: LockStatus,
    /// The taker is gone: the holders must be found through fdinfo.
    scan: bool,
}

impl Evaluator {
    /// A fresh evaluator (empty caches).
    pub(crate) fn new() -> Evaluator {
        Evaluator::default()
    }

    /// Holders already found by an earlier fd pass (by [`crate::cmd::watch`],
    /// which knows no descriptor on those files was closed since): used
    /// instead of a new pass as long as every one of them is alive.
    pub(crate) fn with_known_holders(mut self, known: HashMap<FileId, Vec<Holder>>) -> Evaluator {
        self.known = known;
        self
    }

    fn proc(&mut self, pid: i32) -> ProcSnap {
        if pid <= 0 {
            return ProcSnap {
                alive: false,
                starttime: None,
            };
        }
        *self.procs.entry(pid).or_insert_with(|| ProcSnap {
            alive: procfs::alive(pid),
            starttime: procfs::starttime(pid),
        })
    }

    fn cmdline(&mut self, pid: i32) -> Option<Arc<str>> {
        self.cmdlines
            .entry(pid)
            .or_insert_with(|| procfs::cmdline(pid).map(Arc::from))
            .clone()
    }

    /// Whether `pid` is alive and started at `starttime`.
    pub(crate) fn is_same_process(&mut self, pid: i32, starttime: u64) -> bool {
        let p = self.proc(pid);
        p.alive && p.starttime == Some(starttime)
    }

    /// Evaluate `files` against `kernel` at `now`. `metadata` reads a held
    /// lock file's metadata line (status reads the file; watch caches).
    pub(crate) fn evaluate(
        &mut self,
        files: &[LockFile],
        kernel: &Kernel,
        now: SystemTime,
        metadata: &mut dyn FnMut(&LockFile) -> Option<Metadata>,
    ) -> Vec<LockStatus> {
        let mut pending: Vec<Pending> = files
            .iter()
            .map(|f| self.first_pass(f, kernel, now, metadata))
            .collect();
        // One pass over every process's descriptors, for all the locks
        // whose taker is gone and whose holders are not known, together.
        let mut need: HashSet<FileId> = HashSet::new();
        let known = std::mem::take(&mut self.known);
        for p in pending.iter_mut().filter(|p| p.scan) {
            match known.get(&p.status.file.id) {
                Some(h) if !h.is_empty() && h.iter().all(|h| self.proc(h.pid).alive) => {
                    p.status.holders = h.clone();
                }
                _ => {
                    need.insert(p.status.file.id);
                }
            }
        }
        self.known = known;
        if !need.is_empty() {
            let found = procfs::fd_lock_holders(&need);
            for p in pending
                .iter_mut()
                .filter(|p| need.contains(&p.status.file.id))
            {
                let pids: BTreeSet<i32> = found
                    .get(&p.status.file.id)
                    .map(|v| v.iter().map(|h| h.pid).collect())
                    .unwrap_or_default();
                p.status.holders = pids
                    .into_iter()
                    .map(|pid| Holder {
                        pid,
                        command: self.cmdline(pid),
                    })
                    .collect();
            }
        }
        pending
            .into_iter()
            .map(|p| {
                let scanned = p.scan;
                self.decide(p.status, scanned, now)
            })
            .collect()
    }

    /// Everything but the fd pass and the final state.
    fn first_pass(
        &mut self,
        file: &LockFile,
        kernel: &Kernel,
        now: SystemTime,
        metadata: &mut dyn FnMut(&LockFile) -> Option<Metadata>,
    ) -> Pending {
        let entries = kernel.on(file.id);
        let held: Vec<&LockEntry> = entries.iter().filter(|e| !e.waiter).collect();
        let waiters: Vec<i32> = entries.iter().filter(|e| e.waiter).map(|e| e.pid).collect();
        let mut status = LockStatus {
            waiters,
            ..LockStatus::free(file)
        };
        if held.is_empty() {
            return Pending {
                status,
                scan: false,
            };
        }
        status.state = State::Held;
        status.exclusive = Some(held.iter().any(|e| e.exclusive));
        status.kind = held.first().map(|e| e.kind);
        let mut takers: Vec<i32> = held.iter().map(|e| e.pid).collect();
        takers.dedup();
        status.takers = takers.clone();
        status.metadata = metadata(file).filter(|m| takers.contains(&m.pid));
        // The taker holds it if it is alive and, when the metadata names
        // it, is the process the metadata names.
        let mut scan = false;
        for &pid in &takers {
            let snap = self.proc(pid);
            let same = match &status.metadata {
                Some(m) if m.pid == pid => snap.starttime == Some(m.starttime),
                _ => true,
            };
            if snap.alive && same {
                let command = self.cmdline(pid);
                status.holders.push(Holder { pid, command });
            } else {
                scan = true;
            }
        }
        if scan {
            status.holders.clear();
        }
        if let Some(m) = &status.metadata {
            status.supervisor_alive =
                Some(self.is_same_process(m.supervisor_pid, m.supervisor_starttime));
            if let Ok(at) = humantime::parse_rfc3339(&m.acquired_at) {
                status.held = Some(now.duration_since(at).unwrap_or_default());
            }
            if let Some(deadline) = m.deadline.as_deref().and_then(parse_time) {
                status.left_ms = Some(signed_ms(deadline, now));
            }
            if let Some(beat) = m.last_heartbeat.as_deref().and_then(parse_time) {
                status.heartbeat_age_ms = Some(-signed_ms(beat, now));
            }
        }
        Pending { status, scan }
    }

    /// The state of a held lock, once its holders are known.
    fn decide(&mut self, mut s: LockStatus, scanned: bool, now: SystemTime) -> LockStatus {
        if s.state == State::Free {
            return s;
        }
        let Some(m) = s.metadata.clone() else {
            return s; // another tool's lock: held
        };
        if s.supervisor_alive != Some(true) {
            s.state = State::Orphan;
            return s;
        }
        if scanned && !s.holders.is_empty() {
            // The attempt's first process is gone; what holds the lock must
            // be below the supervisor, which (a subreaper) adopts them all,
            // or nobody will end it.
            let tree = procfs::descendants(m.supervisor_pid);
            if s.holders.iter().any(|h| !tree.contains(&h.pid)) {
                s.state = State::Orphan;
                return s;
            }
        }
        if let (Some(deadline), Some(grace)) =
            (m.deadline.as_deref().and_then(parse_time), m.grace_ms)
        {
            let due = deadline + Duration::from_millis(grace) + OVERDUE_SLACK;
            if now > due {
                s.state = State::Overdue;
            }
        }
        s
    }
}

fn parse_time(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(s).ok()
}

/// `to - from` in milliseconds, negative when `to` is earlier.
/// Milliseconds from `from` to `to`, negative when `to` is earlier.
pub(crate) fn signed_ms(to: SystemTime, from: SystemTime) -> i64 {
    match to.duration_since(from) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// Scan and evaluate in one go, reading metadata from disk.
pub(crate) fn snapshot(paths: &[(PathBuf, bool)]) -> Result<Vec<LockStatus>> {
    let scan = scan(paths)?;
    let kernel = Kernel::read();
    let mut ev = Evaluator::new();
    let mut locks = ev.evaluate(&scan.files, &kernel, SystemTime::now(), &mut |f| {
        read_metadata(&f.path, f.id)
    });
    if !locks.is_empty() {
        let mut removed = lockfile::removed_lock_holders();
        for l in &mut locks {
            if let Some(pids) = removed.remove(&l.file.path) {
                l.removed_holders = pids;
            }
        }
    }
    for l in &mut locks {
        add_queue(l, &kernel);
    }
    Ok(locks)
}

/// The lock's queue and its last holder's ending, from its queue directory
/// (a ticket counts while `/proc/locks` names a holder of it).
pub(crate) fn add_queue(l: &mut LockStatus, kernel: &Kernel) {
    l.queue = queue::waiters(&l.file.path, SystemTime::now(), |id| {
        kernel.on(id).iter().find(|e| !e.waiter).map(|e| e.pid)
    });
    l.last_ended = queue::last_ended(&l.file.path);
}

/// The `--json` document: `{"v": 1, "ts": ..., "locks": [...]}`.
pub(crate) fn json_document(locks: &[LockStatus], now: SystemTime) -> Document<'_> {
    Document {
        v: SCHEMA_VERSION,
        ts: rfc3339(now),
        locks: locks.iter().map(LockStatus::json).collect(),
    }
}

/// Keep the locks that pass the filters.
pub(crate) fn filter(
    locks: Vec<LockStatus>,
    states: &[State],
    session_key: Option<&str>,
) -> Vec<LockStatus> {
    locks
        .into_iter()
        .filter(|l| states.is_empty() || states.contains(&l.state))
        .filter(|l| match session_key {
            None => true,
            Some(k) => l.metadata.as_ref().and_then(|m| m.session_key.as_deref()) == Some(k),
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests;
