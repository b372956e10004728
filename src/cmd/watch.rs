//! `locksup watch`: the status view, kept current by inotify (README.md,
//! "Status, watch and cancel").
//!
//! Every directory under the roots is watched (new subdirectories as they
//! appear, deleted ones dropped) for what happens to lock files in it:
//!
//! - `IN_CREATE`, `IN_MOVED_TO`, `IN_DELETE`, `IN_MOVED_FROM`: lock files
//!   (and subdirectories) appearing and going away;
//! - `IN_OPEN`: someone may be about to take the lock (`flock(1)` opens
//!   and locks without writing); the kernel state is read at once and
//!   again after 20 ms, 250 ms and 1 s, by when a locker has locked;
//! - `IN_CLOSE_WRITE`, `IN_CLOSE_NOWRITE`: the last descriptor on an open
//!   file description was closed, which is how a lock goes away when its
//!   holder dies (an flock release makes no event by itself);
//! - `IN_MODIFY`: `locksup run` writes the metadata line after taking the
//!   lock, so the metadata is read again;
//! - `IN_DELETE_SELF`, `IN_MOVE_SELF`, `IN_IGNORED`: a watched directory
//!   went away; a root that goes away is watched for from its parent and
//!   taken up again when it comes back;
//! - `IN_Q_OVERFLOW`: events were lost; everything is scanned again;
//! - any event on a ticket (`t-N`) in a lock's queue directory
//!   (`NAME.queue`, [`crate::lock::queue`]): a waiter joined or left, so
//!   the queue is read again (reported as `queued`).
//!
//! Each batch of events leads to one *round*: `/proc/locks` read once,
//! the lock files that are held (or were) evaluated as `status` does, and
//! the differences with the previous round reported. Rounds are at least
//! [`MIN_GAP`] apart, so a burst of thousands of events costs a few
//! rounds, not thousands. Some changes make no file event at all — a
//! deadline passing, a supervisor dying while a grandchild keeps the lock,
//! an explicit `LOCK_UN` — so once a second, while any lock is held or any
//! lock file is open, a round runs on the clock as well (it reads
//! `/proc/locks` and a few `/proc/PID/stat`, no file). With nothing held
//! and nothing open, watch does nothing until an event comes.
//!
//! Memory is bounded by the number of lock files and directories under the
//! roots; the event buffer is fixed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use futures_util::{FutureExt, StreamExt};
use inotify::{EventMask, EventStream, Inotify, WatchDescriptor, WatchMask, Watches};
use serde_json::{Map, Value, json};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Instant, sleep_until};

use crate::cli::WatchArgs;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::events::rfc3339;
use crate::exit;
use crate::lock::lockfile::Metadata;
use crate::lock::status::{
    self, Evaluator, Holder, Kernel, LockFile, LockStatus, State, is_lock_name,
};
use crate::procfs::FileId;

mod report;

/// The shortest time between two rounds.
pub(crate) const MIN_GAP: Duration = Duration::from_millis(10);
/// The clock round.
pub(crate) const TICK: Duration = Duration::from_secs(1);
/// The least time between two rounds when a lock may just have been taken.
const URGENT_GAP: Duration = Duration::from_millis(1);
/// After a lock file is opened, when to look again (from the open).
const FOLLOW_UPS: [Duration; 3] = [
    Duration::from_millis(20),
    Duration::from_millis(250),
    Duration::from_secs(1),
];
/// How long an `acquired` event waits for the metadata of a `locksup run`
/// attempt that has taken the lock but not yet written it.
const METADATA_WAIT: Duration = Duration::from_secs(2);
/// Size of the inotify read buffer.
const BUFFER: usize = 64 * 1024;

fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::OPEN
        | WatchMask::CLOSE_WRITE
        | WatchMask::CLOSE_NOWRITE
        | WatchMask::MODIFY
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::EXCL_UNLINK
        | WatchMask::ONLYDIR
}

/// The message for a failed `inotify_add_watch`, naming the limit when
/// that is what failed.
pub(crate) fn add_watch_error(dir: &Path, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ENOSPC) => format!(
            "cannot watch {}: the inotify watch limit is reached \
             (fs.inotify.max_user_watches = {}); raise it, e.g. \
             'sysctl fs.inotify.max_user_watches=524288', or watch fewer directories",
            dir.display(),
            read_limit("max_user_watches")
        ),
        _ => format!("cannot watch {}: {e}", dir.display()),
    }
}

/// The message for a failed `inotify_init`.
pub(crate) fn init_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::EMFILE) => format!(
            "cannot start inotify: the inotify instance limit is reached \
             (fs.inotify.max_user_instances = {}); raise it with sysctl",
            read_limit("max_user_instances")
        ),
        _ => format!("cannot start inotify: {e}"),
    }
}

fn read_limit(name: &str) -> String {
    fs::read_to_string(format!("/proc/sys/fs/inotify/{name}"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "?".into())
}

/// How changes are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One JSON object per line.
    Json,
    /// A live table, redrawn (stdout is a terminal).
    Table,
    /// One human line per change (stdout is not a terminal).
    Lines,
}

/// What a watch descriptor is for.
#[derive(Debug, Default)]
struct WatchInfo {
    path: PathBuf,
    /// A directory under a root: every lock file in it counts, and its
    /// subdirectories are watched too.
    recursive: bool,
    /// Names in this directory that are roots (lock files named on the
    /// command line, or roots that don't exist yet or went away).
    roots: HashSet<OsString>,
}

/// One lock file being followed.
#[derive(Debug)]
struct Tracked {
    file: LockFile,
    /// Cached metadata, and the takers it was read for.
    meta: Option<Metadata>,
    meta_for: Option<Vec<i32>>,
    /// What was last reported.
    last: Option<LockStatus>,
    /// Open file descriptions seen opened and not yet closed.
    opens: u32,
    /// No descriptor was closed since `last.holders` was found.
    holders_valid: bool,
    /// Since when an `acquired` event waits for metadata.
    waiting_meta_since: Option<Instant>,
}

impl Tracked {
    fn new(file: LockFile) -> Tracked {
        Tracked {
            file,
            meta: None,
            meta_for: None,
            last: None,
            opens: 0,
            holders_valid: false,
            waiting_meta_since: None,
        }
    }

    fn state(&self) -> State {
        self.last.as_ref().map_or(State::Free, |l| l.state)
    }
}

/// One change to report.
struct Change {
    event: &'static str,
    lock: LockStatus,
    /// For `waiting`: the new waiters.
    pids: Vec<i32>,
}

struct Watcher {
    roots: Vec<(PathBuf, bool)>,
    stream: EventStream<Vec<u8>>,
    watches: Watches,
    wds: HashMap<WatchDescriptor, WatchInfo>,
    dirs: HashMap<PathBuf, WatchDescriptor>,
    files: BTreeMap<PathBuf, Tracked>,
    mode: Mode,
    out: io::BufWriter<io::Stdout>,
    /// A round is due at this time.
    round_at: Option<Instant>,
    last_round: Instant,
    follow_ups: BTreeSet<Instant>,
    rescan: bool,
    /// Limit errors already reported.
    warned: HashSet<PathBuf>,
    started: bool,
}

/// `locksup watch`.
pub fn main(args: WatchArgs, config_path: Option<&Path>) -> Result<i32> {
    let config = Config::load(config_path)?;
    if args.etcd.backend == Some(crate::attempt::spec::Backend::Etcd) {
        return super::etcd::watch(&args, &config);
    }
    let roots = crate::cmd::status::targets(&args.paths, &config)
        .ok_or_else(|| Error::usage("no PATH given and no [status] roots in the configuration"))?;
    // A session file named on the command line stands for its lock file,
    // as for status; a named PATH must exist.
    let roots: Vec<(PathBuf, bool)> = roots
        .into_iter()
        .map(|(p, named)| {
            let sidecar = crate::lock::lockfile::lock_path_for_session(&p);
            if named
                && !is_lock_name(p.as_os_str())
                && !p.is_dir()
                && fs::symlink_metadata(&sidecar).is_ok_and(|m| m.is_file())
            {
                (sidecar, named)
            } else {
                (p, named)
            }
        })
        .collect();
    for (path, named) in &roots {
        if *named && fs::symlink_metadata(path).is_err() {
            return Err(Error::with_code(
                exit::TARGET_NOT_FOUND,
                format!("{}: no such file or directory", path.display()),
            ));
        }
    }
    let mode = if args.json {
        Mode::Json
    } else if io::stdout().is_terminal() {
        Mode::Table
    } else {
        Mode::Lines
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io(format!("cannot start the runtime: {e}")))?;
    rt.block_on(run(roots, mode))
}

async fn run(roots: Vec<(PathBuf, bool)>, mode: Mode) -> Result<i32> {
    let inotify = Inotify::init().map_err(|e| Error::io(init_error(&e)))?;
    let stream = inotify
        .into_event_stream(vec![0u8; BUFFER])
        .map_err(|e| Error::io(init_error(&e)))?;
    let watches = stream.watches();
    let sig = |k: SignalKind| {
        signal(k).map_err(|e| Error::io(format!("cannot install signal handlers: {e}")))
    };
    let mut int = sig(SignalKind::interrupt())?;
    let mut term = sig(SignalKind::terminate())?;
    let mut hup = sig(SignalKind::hangup())?;
    let mut w = Watcher {
        roots,
        stream,
        watches,
        wds: HashMap::new(),
        dirs: HashMap::new(),
        files: BTreeMap::new(),
        mode,
        out: io::BufWriter::new(io::stdout()),
        round_at: None,
        last_round: Instant::now(),
        follow_ups: BTreeSet::new(),
        rescan: false,
        warned: HashSet::new(),
        started: false,
    };
    w.full_scan(true)?;
    let mut changes = Vec::new();
    w.round(&mut changes);
    w.started = true;
    if w.mode == Mode::Table {
        let _ = w.out.write_all(b"\x1b[?1049h\x1b[?25l");
    }
    let mut result = w.ready().and_then(|()| w.flush());
    let mut next_tick = Instant::now() + TICK;
    while result.is_ok() {
        let wake = [w.round_at, w.follow_ups.first().copied(), Some(next_tick)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(next_tick);
        tokio::select! {
            ev = w.stream.next() => {
                match ev {
                    Some(Ok(ev)) => {
                        w.on_event(ev.wd, ev.mask, ev.name.as_deref());
                        // Take whatever else is already there.
                        while let Some(Some(Ok(ev))) = w.stream.next().now_or_never() {
                            w.on_event(ev.wd, ev.mask, ev.name.as_deref());
                        }
                        // Events that matter have asked for a round
                        // (`dirty`); others (session files written next to
                        // their locks, our own directory reads) cost nothing.
                    }
                    Some(Err(e)) => {
                        result = Err(Error::io(format!("reading inotify events: {e}")));
                    }
                    None => result = Err(Error::io("the inotify stream ended")),
                }
            }
            () = sleep_until(wake) => {
                let now = Instant::now();
                let mut due = w.round_at.is_some_and(|t| t <= now);
                while w.follow_ups.first().is_some_and(|t| *t <= now) {
                    w.follow_ups.pop_first();
                    due = true;
                }
                let mut ticked = false;
                if now >= next_tick {
                    next_tick = now + TICK;
                    ticked = true;
                    due |= w.files.values().any(|t| t.state().is_held() || t.opens > 0);
                }
                if due {
                    w.round_at = None;
                    if w.rescan {
                        result = w.full_scan(false);
                    }
                    changes.clear();
                    w.round(&mut changes);
                    if result.is_ok() {
                        result = w.report(&changes, ticked);
                    }
                } else if ticked && w.mode == Mode::Table {
                    result = w.redraw();
                }
            }
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = hup.recv() => break,
        }
        if result.is_ok() {
            result = w.flush();
        }
    }
    if w.mode == Mode::Table {
        let _ = w.out.write_all(b"\x1b[?25h\x1b[?1049l");
        let _ = w.out.flush();
    }
    match result {
        Ok(()) => Ok(exit::SUCCESS),
        // The reader went away: nothing more to say, and not a failure.
        Err(e) if e.code() == exit::SUCCESS => Ok(exit::SUCCESS),
        Err(e) => Err(e),
    }
}

impl Watcher {
    // -----------------------------------------------------------------
    // Watches and files
    // -----------------------------------------------------------------

    /// Walk every root again: watch every directory, follow every lock
    /// file, drop what is gone. At start-up a watch that cannot be added
    /// is an error; later it is a warning.
    fn full_scan(&mut self, startup: bool) -> Result<()> {
        self.rescan = false;
        let mut seen_dirs: HashSet<WatchDescriptor> = HashSet::new();
        let mut seen_files: HashSet<PathBuf> = HashSet::new();
        let roots = self.roots.clone();
        for (root, _named) in &roots {
            match fs::metadata(root) {
                Ok(m) if m.is_dir() => {
                    self.add_tree(root, true, startup, &mut seen_dirs, &mut seen_files)?;
                }
                Ok(m) if m.is_file() => {
                    self.watch_parent_of(root, startup, &mut seen_dirs)?;
                    self.track(
                        root,
                        &root.parent().map(Path::to_path_buf).unwrap_or_default(),
                    );
                    seen_files.insert(root.clone());
                }
                _ => {
                    self.watch_parent_of(root, startup, &mut seen_dirs)?;
                }
            }
        }
        // What was not seen is gone.
        let stale: Vec<WatchDescriptor> = self
            .wds
            .keys()
            .filter(|wd| !seen_dirs.contains(*wd))
            .cloned()
            .collect();
        for wd in stale {
            let _ = self.watches.remove(wd.clone());
            if let Some(info) = self.wds.remove(&wd) {
                self.dirs.remove(&info.path);
            }
        }
        let gone: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| !seen_files.contains(*p))
            .cloned()
            .collect();
        for p in gone {
            self.untrack(&p);
        }
        Ok(())
    }

    /// Watch `dir` and everything below it; follow its lock files. The
    /// watch comes before the listing, so nothing created in between is
    /// missed.
    fn add_tree(
        &mut self,
        dir: &Path,
        is_root: bool,
        startup: bool,
        seen_dirs: &mut HashSet<WatchDescriptor>,
        seen_files: &mut HashSet<PathBuf>,
    ) -> Result<()> {
        let root = if is_root {
            dir.to_path_buf()
        } else {
            self.root_of(dir).unwrap_or_else(|| dir.to_path_buf())
        };
        let mut stack = vec![(dir.to_path_buf(), is_root)];
        while let Some((d, top)) = stack.pop() {
            let m = if top {
                mask()
            } else {
                mask() | WatchMask::DONT_FOLLOW
            };
            let wd = match self.watches.add(&d, m) {
                Ok(wd) => wd,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                    let msg = add_watch_error(&d, &e);
                    if startup {
                        return Err(Error::io(msg));
                    }
                    if self.warned.insert(d.clone()) {
                        let _ = writeln!(io::stderr(), "locksup: {msg}");
                    }
                    continue;
                }
                Err(e) => {
                    log::debug!("{}", add_watch_error(&d, &e));
                    continue;
                }
            };
            let info = self.wds.entry(wd.clone()).or_default();
            if info.recursive && info.path != d {
                // The same directory, already watched under another path
                // (a bind mount, a loop).
                continue;
            }
            info.path = d.clone();
            info.recursive = true;
            self.dirs.insert(d.clone(), wd.clone());
            seen_dirs.insert(wd);
            let Ok(entries) = fs::read_dir(&d) else {
                continue;
            };
            for ent in entries.flatten() {
                let Ok(ft) = ent.file_type() else { continue };
                if ft.is_dir() {
                    stack.push((ent.path(), false));
                } else if ft.is_file() && is_lock_name(&ent.file_name()) {
                    let p = ent.path();
                    self.track(&p, &root);
                    seen_files.insert(p);
                }
            }
        }
        Ok(())
    }

    /// Watch the parent of a root that is a file or does not exist (yet),
    /// for the root's name.
    fn watch_parent_of(
        &mut self,
        root: &Path,
        startup: bool,
        seen_dirs: &mut HashSet<WatchDescriptor>,
    ) -> Result<()> {
        let (Some(parent), Some(name)) = (root.parent(), root.file_name()) else {
            return Ok(());
        };
        match self.watches.add(parent, mask()) {
            Ok(wd) => {
                let info = self.wds.entry(wd.clone()).or_default();
                if !info.recursive {
                    info.path = parent.to_path_buf();
                }
                info.roots.insert(name.to_owned());
                seen_dirs.insert(wd);
                Ok(())
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => {
                let msg = add_watch_error(parent, &e);
                if startup {
                    return Err(Error::io(msg));
                }
                if self.warned.insert(parent.to_path_buf()) {
                    let _ = writeln!(io::stderr(), "locksup: {msg}");
                }
                Ok(())
            }
            Err(e) => {
                log::debug!("{}", add_watch_error(parent, &e));
                Ok(())
            }
        }
    }

    /// The root `path` is under.
    fn root_of(&self, path: &Path) -> Option<PathBuf> {
        self.roots
            .iter()
            .map(|(r, _)| r)
            .filter(|r| path.starts_with(r))
            .max_by_key(|r| r.as_os_str().len())
            .cloned()
    }

    /// Follow the lock file at `path` (again, if it was replaced).
    fn track(&mut self, path: &Path, root: &Path) {
        let Ok(m) = fs::symlink_metadata(path) else {
            self.untrack(path);
            return;
        };
        if !m.file_type().is_file() {
            self.untrack(path);
            return;
        }
        let id = FileId::new(m.dev(), m.ino());
        if let Some(t) = self.files.get(path) {
            if t.file.id == id {
                return;
            }
            // Replaced by another file: the old one is gone from view.
            self.untrack(path);
        }
        let file = LockFile {
            path: path.to_path_buf(),
            id,
            root: root.to_path_buf(),
        };
        self.files.insert(path.to_path_buf(), Tracked::new(file));
    }

    /// Stop following a lock file; a lock that was held is reported gone.
    fn untrack(&mut self, path: &Path) {
        if let Some(t) = self.files.remove(path)
            && let Some(last) = t.last
            && last.state.is_held()
            && self.started
        {
            let _ = self.emit(&Change {
                event: "removed",
                lock: last,
                pids: Vec::new(),
            });
        }
    }

    /// Drop the watches and lock files at and below `path`.
    fn drop_tree(&mut self, path: &Path) {
        let wds: Vec<(PathBuf, WatchDescriptor)> = self
            .dirs
            .iter()
            .filter(|(p, _)| p.starts_with(path))
            .map(|(p, wd)| (p.clone(), wd.clone()))
            .collect();
        for (p, wd) in wds {
            self.dirs.remove(&p);
            let keep = match self.wds.get_mut(&wd) {
                Some(info) => {
                    info.recursive = false;
                    !info.roots.is_empty()
                }
                None => false,
            };
            if !keep {
                self.wds.remove(&wd);
                let _ = self.watches.remove(wd);
            }
        }
        let files: Vec<PathBuf> = self
            .files
            .keys()
            .filter(|p| p.starts_with(path))
            .cloned()
            .collect();
        for f in files {
            self.untrack(&f);
        }
        // A root that went away is looked for from its parent.
        let roots: Vec<PathBuf> = self
            .roots
            .iter()
            .map(|(r, _)| r.clone())
            .filter(|r| r.starts_with(path))
            .collect();
        let mut seen = HashSet::new();
        for r in roots {
            let _ = self.watch_parent_of(&r, false, &mut seen);
        }
    }

    // -----------------------------------------------------------------
    // Events
    // -----------------------------------------------------------------

    fn on_event(&mut self, wd: WatchDescriptor, mask: EventMask, name: Option<&OsStr>) {
        if mask.contains(EventMask::Q_OVERFLOW) {
            log::debug!("inotify queue overflow: scanning again");
            self.rescan = true;
            self.dirty();
            return;
        }
        let Some(info) = self.wds.get(&wd) else {
            return;
        };
        let dir = info.path.clone();
        let recursive = info.recursive;
        if mask.contains(EventMask::IGNORED) {
            if let Some(info) = self.wds.remove(&wd)
                && self.dirs.get(&info.path) == Some(&wd)
            {
                self.drop_tree(&info.path);
            }
            return;
        }
        let Some(name) = name else {
            if mask.intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF) && recursive {
                self.drop_tree(&dir);
            }
            return;
        };
        let path = dir.join(name);
        let is_root = info.roots.contains(name);
        let appeared = mask.intersects(EventMask::CREATE | EventMask::MOVED_TO);
        let vanished = mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM);
        if mask.contains(EventMask::ISDIR) {
            if appeared && (recursive || is_root) {
                let mut seen_dirs = HashSet::new();
                let mut seen_files = HashSet::new();
                let _ = self.add_tree(&path, is_root, false, &mut seen_dirs, &mut seen_files);
                self.dirty();
            } else if vanished && (recursive || is_root) {
                self.drop_tree(&path);
            }
            return;
        }
        // A ticket appearing or let go in a lock's queue directory
        // (`NAME.lock.queue/t-N`): the queue changed.
        if recursive
            && name.as_encoded_bytes().starts_with(b"t-")
            && dir
                .as_os_str()
                .as_encoded_bytes()
                .ends_with(crate::lock::queue::QUEUE_SUFFIX.as_bytes())
        {
            self.dirty();
            return;
        }
        if !(is_root || (recursive && is_lock_name(name))) {
            return;
        }
        if appeared {
            let root = if is_root {
                dir.clone()
            } else {
                self.root_of(&path).unwrap_or(dir)
            };
            self.track(&path, &root);
            self.dirty();
            return;
        }
        if vanished {
            self.untrack(&path);
            return;
        }
        if !self.files.contains_key(&path) {
            // Created before its directory was watched and after it was
            // listed: follow it now.
            let root = if is_root {
                dir.clone()
            } else {
                self.root_of(&path).unwrap_or(dir)
            };
            self.track(&path, &root);
        }
        let Some(t) = self.files.get_mut(&path) else {
            return;
        };
        let opened = mask.contains(EventMask::OPEN);
        if opened {
            t.opens = t.opens.saturating_add(1);
        }
        if mask.intersects(EventMask::CLOSE_WRITE | EventMask::CLOSE_NOWRITE) {
            t.opens = t.opens.saturating_sub(1);
            t.holders_valid = false;
        }
        // A write to a lock file that is not known to be held, or whose
        // `acquired` event waits for its metadata, is most likely a
        // `locksup run` attempt that just took it: look almost at once, not
        // after the usual gap between rounds (that gap is for bursts).
        let mut urgent = false;
        if mask.intersects(EventMask::MODIFY | EventMask::CLOSE_WRITE) {
            t.meta_for = None;
            urgent = t.waiting_meta_since.is_some() || !t.state().is_held();
        }
        if opened {
            let now = Instant::now();
            for d in FOLLOW_UPS {
                self.follow_up(now + d);
            }
        }
        if urgent {
            let at = (self.last_round + URGENT_GAP).max(Instant::now());
            self.round_at = Some(self.round_at.map_or(at, |r| r.min(at)));
        } else {
            self.dirty();
        }
    }

    /// Look again at `at`, unless a look is already due within
    /// [`MIN_GAP`] of it: a burst of opens schedules a handful of rounds,
    /// not one per open, and the schedule stays small.
    fn follow_up(&mut self, at: Instant) {
        let near = self
            .follow_ups
            .range(at.checked_sub(MIN_GAP).unwrap_or(at)..=at + MIN_GAP)
            .next()
            .is_some();
        if !near {
            self.follow_ups.insert(at);
        }
    }

    /// Something changed: a round is due soon.
    fn dirty(&mut self) {
        if self.round_at.is_none() {
            let at = (self.last_round + MIN_GAP).max(Instant::now());
            self.round_at = Some(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_errors_name_the_sysctl() {
        let e = io::Error::from_raw_os_error(libc::ENOSPC);
        let m = add_watch_error(Path::new("/srv/x"), &e);
        assert!(
            m.contains("/srv/x") && m.contains("fs.inotify.max_user_watches"),
            "{m}"
        );
        assert!(!m.contains('\n'));
        let e = io::Error::from_raw_os_error(libc::EMFILE);
        assert!(init_error(&e).contains("fs.inotify.max_user_instances"));
        let e = io::Error::from_raw_os_error(libc::EACCES);
        assert!(add_watch_error(Path::new("/d"), &e).starts_with("cannot watch /d: "));
    }
}
