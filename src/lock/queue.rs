//! The lock's queue and its memory: fair order among locksup attempts, the
//! fencing token, and how the last holder ended.
//!
//! `flock(2)` is not fair: a process that asks while the lock is being
//! handed over can take it before the waiter the kernel just woke. So with
//! `--order fifo` (the default) an attempt first waits its turn in the
//! lock's queue, the directory `NAME.queue` beside the lock file `NAME`,
//! and asks the kernel only when no earlier attempt is still waiting:
//!
//! * a **ticket** is a small file `t-NUMBER` the waiter holds an exclusive
//!   `flock(2)` on for as long as it waits (its supervisor takes it; the
//!   attempt's first process shares the open file and gives it back the
//!   moment it holds the lock: the name first, then the lock). It is created
//!   under a temporary name, locked, filled with the waiter's
//!   [`TicketInfo`] and only then linked to its number (one more than the
//!   highest ticket there; `link(2)` fails rather than replace one), so a
//!   ticket is never visible unlocked while its owner lives;
//! * a waiter waits on its **predecessor**, the highest live ticket below
//!   its own, by blocking in `flock(2)` on it (its first process does,
//!   or, once a predecessor died, a thread of its supervisor): when that
//!   waiter leaves (it got the lock; its ticket's name is gone) or dies
//!   (SIGKILL, its supervisor killed, a crash; the name is still there),
//!   the kernel frees its ticket and wakes exactly this one successor. A
//!   ticket nobody holds is a dead waiter's: whoever finds it removes it,
//!   checking first that the name still means that file;
//! * the head of the queue (no live predecessor) lets its attempt ask the
//!   kernel for the lock, and leaves the queue once the attempt holds it:
//!   its ticket is renamed `r-NUMBER` (retired), and the successor, once
//!   the kernel granted it that file, renames it to a spare `s-...`, which
//!   a new waiter takes (locks, checks, fills, renames to its number)
//!   rather than creating a file; a retired ticket with no ticket above it
//!   (no successor) is taken the same way. A spare is never one anybody
//!   waits for: only the successor ever waited for the retired ticket,
//!   and it holds it until its command starts.
//!
//! All state that matters is the kernel's (locks die with their owners);
//! the files are only names. Plain `flock(1)` users do not queue: they
//! still exclude and are excluded, in the kernel's order.
//!
//! The directory also keeps the record of how the last holder ended
//! ([`Ended`], the file `ended`), which the next holder reads, and which,
//! with the metadata line of the lock file, gives the next fencing token
//! ([`next_fence`]).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, Flock, FlockArg, OFlag, RenameFlags, openat, renameat2};
use nix::sys::stat::{Mode, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, linkat, unlinkat};
use serde::{Deserialize, Serialize};

use crate::procfs::FileId;

/// The queue directory of lock file `NAME` is `NAME` + this.
pub(crate) const QUEUE_SUFFIX: &str = ".queue";
const TICKET_PREFIX: &str = "t-";
const NEW_PREFIX: &str = ".new-";
/// Tickets are used again rather than created and removed for every
/// waiter (on ext4, allocating an inode scans past every inode deleted in
/// the last minutes, and a busy queue deletes hundreds a second). A ticket
/// given back is renamed `r-NUMBER` (retired: its successor may still be
/// about to be granted it); the successor, once granted it, renames it to
/// a spare name `s-...`; a new waiter takes a spare nobody holds and
/// renames it to its number.
const RETIRED_PREFIX: &str = "r-";
const SPARE_PREFIX: &str = "s-";
/// More spares than this (the most attempts ever queued at once) are not
/// kept: a ticket given back then is removed.
const MAX_SPARES: usize = 32;
const ENDED: &str = "ended";

/// The queue directory of a lock file.
pub(crate) fn queue_path(lock: &Path) -> PathBuf {
    let mut s = lock.as_os_str().to_owned();
    s.push(QUEUE_SUFFIX);
    PathBuf::from(s)
}

/// What a waiter says about itself in its ticket (one JSON line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct TicketInfo {
    /// The waiting attempt's id.
    pub attempt_id: String,
    /// Its supervisor, which holds the ticket (and can be cancelled).
    pub supervisor_pid: i32,
    /// The supervisor's start time (field 22 of `/proc/PID/stat`).
    pub supervisor_starttime: u64,
    /// The attempt's first process, when the ticket was taken after the
    /// fork (a supervisor takes its ticket before it forks).
    #[serde(default)]
    pub pid: Option<i32>,
    /// When it started waiting (RFC 3339).
    pub since: String,
    /// Whether it asks for a shared lock.
    pub shared: bool,
}

/// How the last holder of a lock ended, as its supervisor recorded it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Ended {
    /// Its attempt id.
    pub attempt_id: String,
    /// Its fencing token.
    pub fence: Option<u64>,
    /// Its outcome (the `end` event's name: exited, timeout, killed...).
    pub outcome: String,
    /// locksup's exit code for it.
    pub exit_code: Option<i32>,
    /// When it was recorded (RFC 3339).
    pub ended_at: String,
}

/// The next fencing token: above every token seen (the last holder's, as
/// its metadata line and its [`Ended`] record give it) and never below the
/// wall clock in microseconds since 1970, so that it keeps increasing when
/// both were lost with the lock file and its queue directory (a reboot
/// with a fresh /run, an operator's `rm`), as long as the clock does not
/// step back by more than the time between two acquisitions. Below 2^53
/// until the year 2255, so exact in JavaScript and JSON readers too.
pub(crate) fn next_fence(seen: impl IntoIterator<Item = u64>) -> u64 {
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    let after = seen.into_iter().max().map_or(0, |f| f.saturating_add(1));
    after.max(clock)
}

/// The names in a queue directory that matter.
#[derive(Default)]
struct Listing {
    /// Ticket numbers, in order.
    tickets: Vec<u64>,
    /// Temporary names of tickets being created.
    new: Vec<OsString>,
    /// Spare files, given back by earlier waiters.
    spares: Vec<OsString>,
    /// Retired tickets, with their numbers.
    retired: Vec<(u64, OsString)>,
}

/// A lock's queue directory, open.
pub(crate) struct Queue {
    dir: OwnedFd,
    path: PathBuf,
    mode: u32,
}

/// The queue directory's mode for lock files of mode `file_mode`: whoever
/// may open the lock file may queue for it (search where read is allowed).
fn dir_mode(file_mode: u32) -> u32 {
    let rw = file_mode & 0o666;
    rw | ((rw & 0o444) >> 2)
}

impl Queue {
    /// Open the queue directory of the lock file `name` in `lock_dir`
    /// (from [`crate::lock::lockfile::open_parent`]), creating it with
    /// a mode derived from the lock file's `file_mode`. It must be a real
    /// directory (not a symbolic link) owned by us, by root or by the owner
    /// of the lock file: one planted by another user could hold the queue.
    pub(crate) fn open(
        lock_dir: &OwnedFd,
        name: &OsStr,
        lock: &Path,
        file_mode: u32,
    ) -> io::Result<Queue> {
        let mut qname = name.to_owned();
        qname.push(QUEUE_SUFFIX);
        let mode = dir_mode(file_mode);
        let created = match mkdirat(lock_dir, qname.as_os_str(), Mode::from_bits_truncate(mode)) {
            Ok(()) => true,
            Err(Errno::EEXIST) => false,
            Err(e) => return Err(e.into()),
        };
        let dir = openat(
            lock_dir,
            qname.as_os_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let st = fstat(&dir)?;
        if created {
            // The umask may have narrowed it; the derived mode is wanted.
            let _ = fchmod(&dir, Mode::from_bits_truncate(mode));
        } else {
            let me = nix::unistd::geteuid().as_raw();
            let lock_owner = fstatat(lock_dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                .map(|s| s.st_uid)
                .ok();
            if st.st_uid != me && st.st_uid != 0 && Some(st.st_uid) != lock_owner {
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    format!(
                        "{} belongs to uid {}, neither the lock file's owner nor root",
                        queue_path(lock).display(),
                        st.st_uid
                    ),
                ));
            }
        }
        Ok(Queue {
            dir,
            path: queue_path(lock),
            mode: file_mode & 0o666,
        })
    }

    /// The directory's path, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The open directory (the attempt's first process removes its
    /// ticket's name in it).
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// What the directory holds now.
    fn entries(&self) -> io::Result<Listing> {
        let dup = self.dir.try_clone()?;
        let mut dir = nix::dir::Dir::from_fd(dup)?;
        let mut l = Listing::default();
        for entry in dir.iter() {
            let entry = entry?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if let Some(n) = ticket_number(name) {
                l.tickets.push(n);
            } else if name.as_bytes().starts_with(NEW_PREFIX.as_bytes()) {
                l.new.push(name.to_owned());
            } else if name.as_bytes().starts_with(SPARE_PREFIX.as_bytes()) {
                l.spares.push(name.to_owned());
            } else if let Some(n) = number_after(name, RETIRED_PREFIX) {
                l.retired.push((n, name.to_owned()));
            }
        }
        // The directory stream shares its offset with every duplicate:
        // start the next listing from the beginning.
        let _ = nix::unistd::lseek(&self.dir, 0, nix::unistd::Whence::SeekSet);
        l.tickets.sort_unstable();
        Ok(l)
    }

    /// Take a spare file as a ticket at the back of the queue: lock it,
    /// check it is still that name (nobody took it meanwhile), fill it,
    /// rename it to the next number (never over an existing ticket).
    /// `None` if it cannot be had (another waiter took it, it is not a
    /// regular file of ours, the file system cannot rename so).
    fn take_spare(&self, name: &OsStr, line: &[u8], seen: &[u64]) -> Option<(Ticket, Vec<u64>)> {
        let file = openat(
            &self.dir,
            name,
            OFlag::O_RDWR
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map(File::from)
        .ok()?;
        let meta = file.metadata().ok()?;
        let mine = meta.uid() == nix::unistd::geteuid().as_raw();
        if !meta.file_type().is_file() || !mine || meta.nlink() != 1 {
            return None;
        }
        let held = Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()?;
        if !self.still_named(name, &held) {
            return None;
        }
        held.write_all_at(line, 0).ok()?;
        held.set_len(line.len() as u64).ok()?;
        let mut tickets = seen.to_vec();
        for _ in 0..100 {
            let number = tickets.last().map_or(1, |n| n.saturating_add(1));
            match renameat2(
                &self.dir,
                name,
                &self.dir,
                ticket_name(number).as_str(),
                RenameFlags::RENAME_NOREPLACE,
            ) {
                Ok(()) => {
                    let mut spare = name.to_owned();
                    if !name.as_bytes().starts_with(SPARE_PREFIX.as_bytes()) {
                        spare = OsString::from(format!(
                            "{SPARE_PREFIX}{}-{number}",
                            std::process::id()
                        ));
                    }
                    let ticket = Ticket {
                        number,
                        _held: held,
                        recycle_as: Some(spare),
                    };
                    return Some((ticket, tickets));
                }
                // Another ticket took the number: look again.
                Err(Errno::EEXIST) => tickets = self.entries().ok()?.tickets,
                Err(_) => return None,
            }
        }
        None
    }

    /// Whether `name` still names `file`.
    fn still_named(&self, name: &OsStr, file: &File) -> bool {
        names(&self.dir, name, file)
    }

    /// Take a ticket at the back of the queue; with the tickets that were
    /// there (for [`Queue::place_among`]).
    pub(crate) fn join(&self, info: &TicketInfo) -> io::Result<(Ticket, Vec<u64>)> {
        let mut line = serde_json::to_vec(info).map_err(io::Error::other)?;
        line.push(b'\n');
        let listing = self.entries()?;
        let (seen, spares) = (listing.tickets, listing.spares);
        // A retired ticket above every ticket there has no successor that
        // could still wait for it (one would hold a ticket above it until
        // granted it, and would have made it a spare then): as good as a
        // spare. That is how an uncontended attempt uses the last one's.
        let top = seen.last().copied().unwrap_or(0);
        let orphans = listing
            .retired
            .into_iter()
            .filter(|(n, _)| *n >= top)
            .map(|(_, name)| name);
        for spare in spares.iter().cloned().chain(orphans) {
            if let Some(taken) = self.take_spare(&spare, &line, &seen) {
                return Ok(taken);
            }
        }
        // The predecessor's ticket becomes a spare (while they are few).
        let keep = spares.len() < MAX_SPARES;
        for attempt in 0u32.. {
            let tmp = format!(
                "{NEW_PREFIX}{}-{}-{attempt}",
                std::process::id(),
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.subsec_nanos())
            );
            let fd = openat(
                &self.dir,
                tmp.as_str(),
                OFlag::O_RDWR
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(self.mode),
            )?;
            let _ = fchmod(&fd, Mode::from_bits_truncate(self.mode));
            let locked = match Flock::lock(File::from(fd), FlockArg::LockExclusiveNonblock) {
                Ok(l) => l,
                // A waiter cleaning up took it for a dead one's in the
                // moment before we locked it (and removes it): a new one.
                Err((_, Errno::EWOULDBLOCK)) if attempt < 100 => continue,
                Err((_, e)) => return Err(e.into()),
            };
            (&*locked).write_all(&line)?;
            let mut seen;
            let linked = loop {
                let listing = self.entries()?;
                self.clean_new(&listing.new, &tmp);
                let number = listing.tickets.last().map_or(1, |n| n.saturating_add(1));
                seen = listing.tickets;
                match linkat(
                    &self.dir,
                    tmp.as_str(),
                    &self.dir,
                    ticket_name(number).as_str(),
                    AtFlags::empty(),
                ) {
                    Ok(()) => break Some(number),
                    Err(Errno::EEXIST) => continue,
                    // Removed by a cleaner in the moment between creating
                    // and locking it: start again.
                    Err(Errno::ENOENT) => break None,
                    Err(e) => {
                        let _ = unlinkat(&self.dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
                        return Err(e.into());
                    }
                }
            };
            let _ = unlinkat(&self.dir, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
            if let Some(number) = linked {
                let ticket = Ticket {
                    number,
                    _held: locked,
                    recycle_as: keep.then(|| {
                        let mut spare = OsString::from(SPARE_PREFIX);
                        spare.push(&tmp[NEW_PREFIX.len()..]);
                        spare
                    }),
                };
                return Ok((ticket, seen));
            }
            if attempt > 100 {
                break;
            }
        }
        Err(io::Error::other(
            "cannot take a ticket: the queue keeps changing",
        ))
    }

    /// Remove temporary tickets that their creator left behind (it died
    /// between creating and linking one): those nobody holds.
    fn clean_new(&self, names: &[OsString], mine: &str) {
        for name in names {
            if name.as_bytes() == mine.as_bytes() {
                continue;
            }
            if let Ok(file) = self.open_entry(name) {
                let _ = self.remove_if_dead(name, file);
            }
        }
    }

    /// Open an entry of the queue directory for reading: never following
    /// a symbolic link, never blocking on a FIFO someone planted, regular
    /// files only.
    fn open_entry(&self, name: &OsStr) -> nix::Result<File> {
        let file = openat(
            &self.dir,
            name,
            OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_CLOEXEC
                | OFlag::O_NOCTTY
                | OFlag::O_NONBLOCK,
            Mode::empty(),
        )
        .map(File::from)?;
        regular(file).ok_or(Errno::EINVAL)
    }

    /// If nobody holds `file` (named `name`), it is a dead waiter's:
    /// remove the name, if it still means that file. Whether it was dead.
    fn remove_if_dead(&self, name: &OsStr, file: File) -> bool {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(held) => {
                self.unlink_same(name, &held);
                true
            }
            Err(_) => false,
        }
    }

    /// Remove `name` if it still names `file` (whose lock we hold, so no
    /// one else removes it meanwhile, and a new ticket cannot take the name
    /// before it is gone).
    fn unlink_same(&self, name: &OsStr, file: &File) {
        if self.still_named(name, file) {
            let _ = unlinkat(&self.dir, name, UnlinkatFlags::NoRemoveDir);
        }
    }

    /// Where `ticket` stands: at the head, or behind a live predecessor
    /// (dead waiters' tickets found on the way are removed).
    pub(crate) fn place(&self, ticket: &Ticket) -> io::Result<Place> {
        self.place_among(ticket, self.entries()?.tickets)
    }

    /// [`Queue::place`] among the tickets of a listing just read.
    pub(crate) fn place_among(&self, ticket: &Ticket, tickets: Vec<u64>) -> io::Result<Place> {
        let ahead: Vec<u64> = tickets.into_iter().filter(|&n| n < ticket.number).collect();
        for (i, &n) in ahead.iter().enumerate().rev() {
            let name = ticket_name(n);
            let Ok(file) = self.open_entry(name.as_ref()) else {
                continue; // left meanwhile
            };
            let mut info = String::new();
            let _ = (&file).take(4096).read_to_string(&mut info);
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(held) => self.unlink_same(name.as_ref(), &held),
                Err((file, Errno::EWOULDBLOCK)) => {
                    return Ok(Place::Behind(Predecessor {
                        number: n,
                        name,
                        dir: self.dir.try_clone()?,
                        file,
                        info: serde_json::from_str(info.trim_end()).ok(),
                        ahead: i + 1,
                    }));
                }
                Err((_, e)) => return Err(e.into()),
            }
        }
        Ok(Place::Head)
    }

    /// The predecessor is gone (its ticket's lock was granted to us):
    /// remove its name if it is still there (it died waiting); if it left,
    /// its retired ticket becomes the spare `recycle_as` (or is removed).
    pub(crate) fn passed(&self, gone: Passed, recycle_as: Option<&OsStr>) {
        let Ok(held) = &gone.held else {
            return;
        };
        if !gone.left {
            self.unlink_same(gone.name.as_ref(), held);
            return;
        }
        let retired = OsString::from(retired_name(gone.number));
        if !self.still_named(&retired, held) {
            return;
        }
        let spared = recycle_as.is_some_and(|spare| {
            renameat2(
                &self.dir,
                retired.as_os_str(),
                &self.dir,
                spare,
                RenameFlags::RENAME_NOREPLACE,
            )
            .is_ok()
        });
        if !spared {
            let _ = unlinkat(&self.dir, retired.as_os_str(), UnlinkatFlags::NoRemoveDir);
        }
    }

    /// Leave the queue: remove the ticket's name, then let go of it, which
    /// wakes the successor.
    pub(crate) fn leave(&self, ticket: Ticket) {
        let name = ticket_name(ticket.number);
        let _ = unlinkat(&self.dir, name.as_str(), UnlinkatFlags::NoRemoveDir);
        drop(ticket);
    }

    /// Record how this holder ended, for the next one: the line is
    /// written in place over the file `ended` under an exclusive
    /// `flock(2)`, which readers take shared (no new file per attempt: on
    /// ext4 every created and removed inode costs the hand-off). Anything
    /// but a regular file planted there is removed first.
    pub(crate) fn record_end(&self, ended: &Ended) -> io::Result<()> {
        let mut line = serde_json::to_vec(ended).map_err(io::Error::other)?;
        line.push(b'\n');
        let open = || {
            openat(
                &self.dir,
                ENDED,
                OFlag::O_RDWR
                    | OFlag::O_CREAT
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_NONBLOCK
                    | OFlag::O_NOCTTY
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(self.mode),
            )
            .map(File::from)
        };
        let file = match open().map(regular) {
            Ok(Some(f)) => f,
            // A FIFO, a directory, a symbolic link (ELOOP): not ours.
            Ok(None) | Err(Errno::ELOOP) => {
                let _ = unlinkat(&self.dir, ENDED, UnlinkatFlags::NoRemoveDir);
                open()
                    .ok()
                    .and_then(regular)
                    .ok_or_else(|| io::Error::other("ended is not a regular file"))?
            }
            Err(e) => return Err(e.into()),
        };
        let held = lock_briefly(file, FlockArg::LockExclusiveNonblock)?;
        held.write_all_at(&line, 0)?;
        held.set_len(line.len() as u64)
    }

    /// The last holder's record, if any.
    pub(crate) fn last_ended(&self) -> Option<Ended> {
        let file = self.open_entry(OsStr::new(ENDED)).ok()?;
        read_ended(file)
    }
}

/// Whether `name` in `dir` names `file`.
fn names(dir: &OwnedFd, name: &OsStr, file: &File) -> bool {
    let (Ok(ours), Ok(now)) = (
        file.metadata(),
        fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW),
    ) else {
        return false;
    };
    ours.ino() == now.st_ino && ours.dev() == now.st_dev
}

/// Whether some process holds a `flock(2)` lock on `file`.
fn held(file: &File) -> bool {
    let Ok(dup) = file.try_clone() else {
        return false;
    };
    match Flock::lock(dup, FlockArg::LockSharedNonblock) {
        Ok(_) => false,
        Err((_, e)) => e == Errno::EWOULDBLOCK,
    }
}

/// `file` if it is a regular file.
fn regular(file: File) -> Option<File> {
    file.metadata()
        .is_ok_and(|m| m.file_type().is_file())
        .then_some(file)
}

/// Open `path` for reading if it is a regular file (not following a
/// symbolic link, not blocking on a FIFO).
fn open_regular(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    regular(file)
}

fn read_ended(file: File) -> Option<Ended> {
    let held = lock_briefly(file, FlockArg::LockSharedNonblock).ok()?;
    let mut text = String::new();
    (&*held).take(64 * 1024).read_to_string(&mut text).ok()?;
    serde_json::from_str(text.lines().next()?).ok()
}

/// Lock `file` (non-blocking `how`), trying again for a few milliseconds:
/// its other users hold it for microseconds, and a process that holds it
/// for longer must not stall a supervisor.
fn lock_briefly(file: File, how: FlockArg) -> io::Result<Flock<File>> {
    let mut file = file;
    for _ in 0..50 {
        match Flock::lock(file, how) {
            Ok(held) => return Ok(held),
            Err((f, Errno::EWOULDBLOCK | Errno::EINTR)) => {
                file = f;
                std::thread::sleep(std::time::Duration::from_micros(100));
            }
            Err((_, e)) => return Err(e.into()),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::WouldBlock,
        "the record is held locked by another process",
    ))
}

/// A place in the queue: its number, held locked.
pub(crate) struct Ticket {
    number: u64,
    /// Held for as long as the ticket is: dropping it lets go.
    _held: Flock<File>,
    /// The spare name the predecessor's ticket gets once it was granted
    /// (else it is removed).
    recycle_as: Option<OsString>,
}

impl Ticket {
    /// The ticket's number.
    pub(crate) fn number(&self) -> u64 {
        self.number
    }

    /// Its name in the queue directory.
    pub(crate) fn name(&self) -> String {
        ticket_name(self.number)
    }

    /// The name it is given back as: renamed (never over another file),
    /// else removed.
    pub(crate) fn retired_name(&self) -> String {
        retired_name(self.number)
    }

    /// The spare name the predecessor's ticket gets once granted (else it
    /// is removed).
    pub(crate) fn recycle_as(&self) -> Option<&OsStr> {
        self.recycle_as.as_deref()
    }

    /// The locked descriptor. The attempt's first process inherits it and
    /// gives the ticket back itself the moment it holds the lock (removes
    /// the name, then unlocks: the lock belongs to the open file, which it
    /// shares with the supervisor).
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self._held.as_fd()
    }
}

/// Where a ticket stands.
pub(crate) enum Place {
    /// No live waiter before it: its attempt may ask for the lock.
    Head,
    /// Behind this waiter.
    Behind(Predecessor),
}

/// The live waiter just before a ticket.
pub(crate) struct Predecessor {
    number: u64,
    name: String,
    /// The queue directory (where its name is looked up once it is gone).
    dir: OwnedFd,
    file: File,
    /// What it says about itself.
    pub(crate) info: Option<TicketInfo>,
    /// How many tickets are before ours (this one included; some may be
    /// dead waiters' not yet noticed).
    pub(crate) ahead: usize,
}

impl Predecessor {
    /// Its ticket number.
    pub(crate) fn number(&self) -> u64 {
        self.number
    }

    /// Its ticket's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The name its ticket has once given back.
    pub(crate) fn retired_name(&self) -> String {
        retired_name(self.number)
    }

    /// Its ticket, open: the attempt's first process inherits it and
    /// waits in `flock(2)` on it itself (no thread, no word from the
    /// supervisor on the way to the lock).
    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The attempt's first process was granted the ticket's lock (on the
    /// open file it shares with us) and found the name still there: the
    /// predecessor died waiting. Its ticket, now ours to remove.
    pub(crate) fn died(self) -> Passed {
        let held = Flock::lock(self.file, FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| io::Error::from(e));
        Passed {
            number: self.number,
            name: self.name,
            held,
            left: false,
        }
    }

    /// Block until it leaves the queue or dies (the kernel grants us its
    /// ticket's lock then). For a thread of its own. If it left the queue
    /// (its ticket was removed: it holds the lock now, or went on without
    /// the queue), there was nobody before it, so we are at the head:
    /// `at_head` is called at once, on this thread, to start taking the
    /// lock without a round through the supervisor's loop.
    pub(crate) fn wait(self, at_head: impl FnOnce()) -> Passed {
        let mut file = self.file;
        let held = loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(held) => break Ok(held),
                Err((f, Errno::EINTR)) => file = f,
                Err((_, e)) => break Err(io::Error::from(e)),
            }
        };
        // Its name gone (removed or retired): it left.
        let left = held.as_ref().is_ok_and(|h| {
            h.metadata()
                .is_ok_and(|m| m.nlink() == 0 || !names(&self.dir, OsStr::new(&self.name), h))
        });
        if left {
            at_head();
        }
        Passed {
            number: self.number,
            name: self.name,
            held,
            left,
        }
    }
}

/// A predecessor that left the queue or died: its ticket, now ours.
pub(crate) struct Passed {
    number: u64,
    name: String,
    /// The ticket's lock, or why it could not be had.
    pub(crate) held: io::Result<Flock<File>>,
    /// It left the queue (rather than died): we are at the head.
    pub(crate) left: bool,
}

fn ticket_name(n: u64) -> String {
    format!("{TICKET_PREFIX}{n:020}")
}

fn retired_name(n: u64) -> String {
    format!("{RETIRED_PREFIX}{n:020}")
}

fn ticket_number(name: &OsStr) -> Option<u64> {
    number_after(name, TICKET_PREFIX)
}

/// The number of `PREFIX` + 20 digits.
fn number_after(name: &OsStr, prefix: &str) -> Option<u64> {
    let digits = name.as_bytes().strip_prefix(prefix.as_bytes())?;
    if digits.len() != 20 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// A waiter in a lock's queue, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Waiter {
    /// 1 for the head of the queue.
    pub position: usize,
    /// The ticket number.
    pub ticket: u64,
    /// What the waiter says about itself (none if unreadable).
    #[serde(flatten)]
    pub info: Option<TicketInfo>,
    /// The process holding the ticket, as `/proc/locks` says.
    pub holder_pid: Option<i32>,
    /// How long it has been waiting, in milliseconds.
    pub waiting_ms: Option<u64>,
}

/// The live waiters of the lock file `lock`, in queue order: tickets that
/// some process holds (`holder_of` says who, from `/proc/locks`).
pub(crate) fn waiters(
    lock: &Path,
    now: SystemTime,
    holder_of: impl Fn(FileId) -> Option<i32>,
) -> Vec<Waiter> {
    let dir = queue_path(lock);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut tickets: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| ticket_number(&e.file_name()).map(|n| (n, e.path())))
        .collect();
    tickets.sort_unstable_by_key(|(n, _)| *n);
    let mut out = Vec::new();
    for (n, path) in tickets {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.file_type().is_file() {
            continue; // not a ticket, whatever its name
        }
        let file = open_regular(&path);
        let holder = match holder_of(FileId::new(meta.dev(), meta.ino())) {
            Some(pid) => pid,
            // `/proc/locks` is read a page at a time, and a lock can slip
            // between two pages while others come and go: ask the kernel
            // about this one ticket (a shared lock taken and let go at once
            // if nobody holds it).
            None if file.as_ref().is_some_and(held) => 0,
            None => continue, // a dead waiter's, not yet removed
        };
        let info: Option<TicketInfo> = file.and_then(|f| {
            let mut text = String::new();
            (&f).take(4096).read_to_string(&mut text).ok()?;
            serde_json::from_str(text.lines().next()?).ok()
        });
        let holder = if holder > 0 {
            holder
        } else {
            info.as_ref().map_or(0, |i| i.supervisor_pid)
        };
        let waiting_ms = info
            .as_ref()
            .and_then(|i| humantime::parse_rfc3339(&i.since).ok())
            .and_then(|since| now.duration_since(since).ok())
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        out.push(Waiter {
            position: out.len() + 1,
            ticket: n,
            info,
            holder_pid: (holder > 0).then_some(holder),
            waiting_ms,
        });
    }
    out
}

/// The last holder's ending record of the lock file `lock`, by path (for
/// `status`).
pub(crate) fn last_ended(lock: &Path) -> Option<Ended> {
    read_ended(open_regular(&queue_path(lock).join(ENDED))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lock's queue in a temporary directory (kept while the first
    /// element lives).
    fn scratch_queue() -> (tempfile::TempDir, PathBuf, Queue) {
        let dir = tempfile::tempdir().expect("tempdir");
        let lock = dir.path().join("s.lock");
        let (parent, name) = crate::lock::lockfile::open_parent(&lock).expect("parent");
        let queue = Queue::open(&parent, &name, &lock, 0o600).expect("queue");
        (dir, lock, queue)
    }

    fn waiter(id: &str) -> TicketInfo {
        TicketInfo {
            attempt_id: id.into(),
            supervisor_pid: 1,
            supervisor_starttime: 1,
            pid: None,
            since: "2026-01-01T00:00:00Z".into(),
            shared: false,
        }
    }

    #[test]
    fn ticket_names_sort_as_numbers() {
        assert_eq!(ticket_name(42), "t-00000000000000000042");
        assert_eq!(
            ticket_number(OsStr::new("t-00000000000000000042")),
            Some(42)
        );
        assert_eq!(ticket_number(OsStr::new("t-42")), None);
        assert_eq!(ticket_number(OsStr::new(".new-1-2-0")), None);
        assert!(ticket_name(9) < ticket_name(10));
    }

    #[test]
    fn queue_dir_mode_follows_the_lock_file() {
        assert_eq!(dir_mode(0o644), 0o755);
        assert_eq!(dir_mode(0o600), 0o700);
        assert_eq!(dir_mode(0o660), 0o770);
        assert_eq!(dir_mode(0o666), 0o777);
    }

    /// A live ticket counts even when `/proc/locks` (read a page at a
    /// time) missed its lock: the kernel is asked about it directly. A
    /// ticket nobody holds (its waiter died) does not count.
    #[test]
    fn waiters_ask_the_kernel_about_a_ticket_proc_locks_missed() {
        let (_dir, lock, queue) = scratch_queue();
        let info = TicketInfo {
            supervisor_pid: 4242,
            ..waiter("w1")
        };
        let (ticket, _) = queue.join(&info).expect("join");
        let missed = |_: FileId| None;
        let live = waiters(&lock, SystemTime::now(), missed);
        assert_eq!(live.len(), 1, "{live:?}");
        assert_eq!(live[0].ticket, ticket.number());
        assert_eq!(
            live[0].holder_pid,
            Some(4242),
            "the ticket names its holder"
        );
        assert_eq!(
            live[0].info.as_ref().map(|i| i.attempt_id.as_str()),
            Some("w1")
        );
        // Its waiter dies: the lock goes, the name stays until found.
        drop(ticket);
        assert!(queue.entries().expect("entries").tickets.len() == 1);
        assert!(waiters(&lock, SystemTime::now(), missed).is_empty());
    }

    /// A ticket given back is retired; its successor, once granted it,
    /// makes it a spare; the next waiter takes that spare (the same
    /// inode) instead of creating a file.
    #[test]
    fn a_retired_ticket_becomes_a_spare_the_next_waiter_takes() {
        use std::os::unix::fs::MetadataExt as _;
        let (_dir, _, queue) = scratch_queue();
        let (first, _) = queue.join(&waiter("a")).expect("join a");
        let inode = first._held.metadata().expect("stat").ino();
        let (second, seen) = queue.join(&waiter("b")).expect("join b");
        let Ok(Place::Behind(pred)) = queue.place_among(&second, seen) else {
            panic!("b is not behind a");
        };
        // a leaves as its first process does: retired, then let go.
        renameat2(
            &queue.dir,
            first.name().as_str(),
            &queue.dir,
            first.retired_name().as_str(),
            RenameFlags::RENAME_NOREPLACE,
        )
        .expect("retire");
        drop(first);
        let passed = pred.wait(|| {});
        assert!(passed.left, "a left rather than died");
        queue.passed(passed, second.recycle_as());
        let listing = queue.entries().expect("entries");
        assert_eq!(listing.spares.len(), 1, "a's ticket is a spare now");
        assert!(
            fstatat(
                &queue.dir,
                retired_name(1).as_str(),
                AtFlags::AT_SYMLINK_NOFOLLOW
            )
            .is_err(),
            "no longer retired"
        );
        let (third, _) = queue.join(&waiter("c")).expect("join c");
        assert_eq!(
            third._held.metadata().expect("stat").ino(),
            inode,
            "the spare, used again"
        );
        assert_eq!(queue.entries().expect("entries").spares.len(), 0);
    }

    /// A retired ticket nobody can be waiting for (no ticket above it) is
    /// taken like a spare; one with a live ticket above it is left for
    /// that successor.
    #[test]
    fn a_retired_ticket_is_used_again_only_when_no_ticket_is_above_it() {
        use std::os::unix::fs::MetadataExt as _;
        let (_dir, _, queue) = scratch_queue();
        let info = waiter("x");
        let retire = |t: Ticket| {
            renameat2(
                &queue.dir,
                t.name().as_str(),
                &queue.dir,
                t.retired_name().as_str(),
                RenameFlags::RENAME_NOREPLACE,
            )
            .expect("retire");
            t._held.metadata().expect("stat").ino()
        };
        // Alone: the next attempt takes it.
        let (a, _) = queue.join(&info).expect("join");
        let a_ino = retire(a);
        let (b, _) = queue.join(&info).expect("join");
        assert_eq!(b._held.metadata().expect("stat").ino(), a_ino);
        // With a live ticket above it (its successor's): left alone.
        let (c, _) = queue.join(&info).expect("join");
        let b_ino = retire(b);
        let (d, _) = queue.join(&info).expect("join");
        assert_ne!(d._held.metadata().expect("stat").ino(), b_ino);
        drop((c, d));
    }

    #[test]
    fn fences_increase_and_follow_the_clock() {
        let a = next_fence([]);
        let b = next_fence([a]);
        assert!(b > a);
        let far = u64::MAX / 2;
        assert_eq!(next_fence([far, 3]), far + 1);
        assert_eq!(next_fence([u64::MAX]), u64::MAX);
    }
}
