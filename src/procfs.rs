//! What the kernel says, read from `/proc`: `/proc/locks`, process start
//! times, command lines, and the process tree (`/proc/PID/task/*/children`).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt;

/// Kind of a lock line in `/proc/locks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// `flock(2)`.
    Flock,
    /// `fcntl(2)` record lock.
    Posix,
    /// Open file description lock.
    Ofd,
    /// Anything else the kernel prints (LEASE, DELEG, ...).
    Other,
}

/// One line of `/proc/locks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockEntry {
    /// The lock's ordinal (`1:`); waiters share their holder's ordinal.
    pub id: u64,
    /// `true` for a blocked waiter (a `->` line).
    pub waiter: bool,
    /// FLOCK, POSIX, OFDLCK, ...
    pub kind: LockKind,
    /// `WRITE` (exclusive) or `READ` (shared).
    pub exclusive: bool,
    /// PID that took the lock (or is waiting); -1 for OFD locks.
    pub pid: i32,
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Inode number.
    pub inode: u64,
}

/// Parse the text of `/proc/locks`. Lines that don't parse are skipped.
pub fn parse_locks(text: &str) -> Vec<LockEntry> {
    text.lines().filter_map(parse_lock_line).collect()
}

/// Parse one `/proc/locks` line, e.g.
/// `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF` or
/// `1: -> FLOCK  ADVISORY  WRITE 1240 08:01:5678 0 EOF`.
pub fn parse_lock_line(line: &str) -> Option<LockEntry> {
    let mut it = line.split_whitespace();
    let id: u64 = it.next()?.strip_suffix(':')?.parse().ok()?;
    let mut kind = it.next()?;
    let waiter = kind == "->";
    if waiter {
        kind = it.next()?;
    }
    let kind = match kind {
        "FLOCK" => LockKind::Flock,
        "POSIX" => LockKind::Posix,
        "OFDLCK" => LockKind::Ofd,
        _ => LockKind::Other,
    };
    let _advisory = it.next()?;
    let exclusive = match it.next()? {
        "WRITE" => true,
        "READ" => false,
        _ => return None,
    };
    let pid: i32 = it.next()?.parse().ok()?;
    let mut dev = it.next()?.split(':');
    let major = u32::from_str_radix(dev.next()?, 16).ok()?;
    let minor = u32::from_str_radix(dev.next()?, 16).ok()?;
    let inode: u64 = dev.next()?.parse().ok()?;
    Some(LockEntry {
        id,
        waiter,
        kind,
        exclusive,
        pid,
        major,
        minor,
        inode,
    })
}

/// A file's identity as `/proc/locks` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileId {
    /// Device major.
    pub major: u32,
    /// Device minor.
    pub minor: u32,
    /// Inode.
    pub inode: u64,
}

impl FileId {
    /// From `st_dev` and `st_ino`.
    pub fn new(dev: u64, inode: u64) -> Self {
        Self {
            // Linux device numbers are 12 bits of major and 20 of minor.
            major: u32::try_from(nix::sys::stat::major(dev)).unwrap_or(u32::MAX),
            minor: u32::try_from(nix::sys::stat::minor(dev)).unwrap_or(u32::MAX),
            inode,
        }
    }

    /// Whether `entry` is about this file.
    pub fn matches(&self, entry: &LockEntry) -> bool {
        entry.major == self.major && entry.minor == self.minor && entry.inode == self.inode
    }
}

/// Current `/proc/locks` entries for one file.
pub fn locks_on(file: FileId) -> Vec<LockEntry> {
    match read_locks() {
        Ok(text) => parse_locks(&text)
            .into_iter()
            .filter(|e| file.matches(e))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The text of `/proc/locks`, read in as few `read(2)` calls as the
/// kernel allows (a page each, into room made beforehand): every call
/// takes the kernel's `file_rwsem` for writing, which stalls every
/// `flock(2)` on the machine meanwhile, and the small first reads usual
/// for a file of unknown size would make a dozen of them.
fn read_locks() -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::with_capacity(64 * 1024);
    fs::File::open("/proc/locks")?.read_to_string(&mut text)?;
    Ok(text)
}

/// Field 22 of `/proc/PID/stat`: the process start time in clock ticks
/// since boot. With the PID it identifies a process across PID reuse.
pub(crate) fn starttime(pid: i32) -> Option<u64> {
    stat_fields(pid).and_then(|f| f.get(19).and_then(|s| s.parse().ok()))
}

/// The state letter of `/proc/PID/stat` (`R`, `S`, `Z`, ...).
pub(crate) fn state(pid: i32) -> Option<char> {
    stat_fields(pid).and_then(|f| f.first().and_then(|s| s.chars().next()))
}

/// The parent PID (field 4 of `/proc/PID/stat`).
pub(crate) fn ppid(pid: i32) -> Option<i32> {
    stat_fields(pid).and_then(|f| f.get(1).and_then(|s| s.parse().ok()))
}

/// Whether `pid` is `ancestor` or one of its descendants (follows the
/// parent chain; a process that is gone is nobody's descendant).
pub(crate) fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut p = pid;
    for _ in 0..1024 {
        if p == ancestor {
            return true;
        }
        match ppid(p) {
            Some(q) if q > 0 && q != p => p = q,
            _ => return false,
        }
    }
    false
}

/// Fields of `/proc/PID/stat` after the `(comm)` field: index 0 is field 3
/// (state). The comm may contain spaces and parentheses, so split after
/// the last `)`.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// What [`parse_stat`] reads from a `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    /// The state letter (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Parent PID.
    pub ppid: i32,
    /// Process group.
    pub pgid: i32,
    /// The kernel's flags for the process (`PF_*`).
    pub flags: u64,
    /// Number of threads.
    pub threads: u64,
    /// Start time in clock ticks since boot.
    pub starttime: u64,
}

impl Stat {
    /// The process has begun to exit (`PF_EXITING`): its children may
    /// have been re-parented already.
    pub(crate) fn exiting(&self) -> bool {
        self.flags & 0x4 != 0
    }
}

/// Parse the text of a `/proc/PID/stat` (the comm may hold spaces and
/// parentheses: fields are counted after the last `)`).
pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    let f: Vec<&str> = text[text.rfind(')')? + 1..].split_whitespace().collect();
    Some(Stat {
        state: f.first()?.chars().next()?,
        ppid: f.get(1)?.parse().ok()?,
        pgid: f.get(2)?.parse().ok()?,
        flags: f.get(6)?.parse().ok()?,
        threads: f.get(17)?.parse().ok()?,
        starttime: f.get(19)?.parse().ok()?,
    })
}

/// Now, in the unit of a process's start time (clock ticks since boot,
/// field 22 of `/proc/PID/stat`, counted on the boot-time clock).
pub(crate) fn boot_ticks() -> Option<u64> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())
        .filter(|t| *t > 0)?;
    let secs = u64::try_from(now.tv_sec()).ok()?;
    let nanos = u64::try_from(now.tv_nsec()).ok()?;
    Some(secs * hz + nanos * hz / 1_000_000_000)
}

/// Whether `pid` exists and is not a zombie.
pub(crate) fn alive(pid: i32) -> bool {
    matches!(state(pid), Some(s) if s != 'Z' && s != 'X')
}

/// The command line of `pid`, space-joined; the comm name in brackets when
/// the command line is empty (kernel threads, zombies).
pub fn cmdline(pid: i32) -> Option<String> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let parts: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    if parts.is_empty() {
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        return Some(format!("[{}]", comm.trim_end()));
    }
    Some(parts.join(" "))
}

/// Direct children of `pid`, over all its threads.
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let path = task.path().join("children");
        if let Ok(text) = fs::read_to_string(&path) {
            out.extend(
                text.split_whitespace()
                    .filter_map(|s| s.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// Every descendant of `root` (not `root` itself), depth first.
pub fn descendants(root: i32) -> BTreeSet<i32> {
    let mut seen = BTreeSet::new();
    let mut stack = children(root);
    while let Some(pid) = stack.pop() {
        if seen.insert(pid) {
            stack.extend(children(pid));
        }
    }
    seen
}

/// Processes that have an open descriptor on `file` (scans every process
/// this user may inspect; used only to name the holders of a leaked lock).
pub(crate) fn holders_of(file: FileId) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for ent in dir.flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(meta) = fs::metadata(fd.path())
                && FileId::new(
                    std::os::unix::fs::MetadataExt::dev(&meta),
                    std::os::unix::fs::MetadataExt::ino(&meta),
                ) == file
            {
                out.insert(pid);
                break;
            }
        }
    }
    out
}

/// Every line of `/proc/locks`, read once. An unreadable file (no procfs)
/// reads as no locks at all.
pub(crate) fn all_locks() -> Vec<LockEntry> {
    read_locks().map(|t| parse_locks(&t)).unwrap_or_default()
}

/// What `/proc/PID/fdinfo/FD` says about one descriptor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdInfo {
    /// File offset (`pos:`).
    pub pos: Option<u64>,
    /// Open flags (`flags:`, printed in octal).
    pub flags: Option<u32>,
    /// Mount id (`mnt_id:`).
    pub mnt_id: Option<u64>,
    /// Inode number (`ino:`, Linux 5.14 and later).
    pub ino: Option<u64>,
    /// The locks held through this open file description (`lock:` lines).
    /// Their PID is the process that *took* the lock, which may be dead:
    /// the process whose fdinfo this is holds it all the same.
    pub locks: Vec<LockEntry>,
}

/// Parse the text of `/proc/PID/fdinfo/FD`, e.g.
///
/// ```text
/// pos:    0
/// flags:  0100002
/// mnt_id: 27
/// ino:    10010642
/// lock:   1: FLOCK  ADVISORY  WRITE 26832 fe:00:10010642 0 EOF
/// ```
///
/// Unknown keys (eventfd, inotify and epoll descriptors have their own) and
/// lines that don't parse are skipped.
pub fn parse_fdinfo(text: &str) -> FdInfo {
    let mut info = FdInfo::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "pos" => info.pos = value.parse().ok(),
            "flags" => info.flags = u32::from_str_radix(value, 8).ok(),
            "mnt_id" => info.mnt_id = value.parse().ok(),
            "ino" => info.ino = value.parse().ok(),
            "lock" => info.locks.extend(parse_lock_line(value)),
            _ => {}
        }
    }
    info
}

/// `/proc/PID/fdinfo/FD`, if it can be read.
pub(crate) fn fdinfo(pid: i32, fd: i32) -> Option<FdInfo> {
    fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))
        .ok()
        .map(|t| parse_fdinfo(&t))
}

/// Every process id in `/proc`.
pub fn pids() -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|p| *p > 0)
        .collect()
}

/// A process that holds a lock through one of its descriptors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FdHolder {
    /// The holding process.
    pub pid: i32,
    /// The descriptor.
    pub fd: i32,
    /// The lock, as the descriptor's fdinfo prints it.
    pub lock: LockEntry,
}

/// The processes that really hold a lock on each of `targets`: one pass
/// over every process this user may inspect, a `stat` per descriptor, and
/// the fdinfo of only those descriptors that are open on a target. This is
/// what names the holders of an inherited lock after the process that took
/// it (the PID `/proc/locks` keeps printing) has died. A descriptor open on
/// a target without a `lock:` line (a waiter, a reader) is not a holder.
pub(crate) fn fd_lock_holders(targets: &HashSet<FileId>) -> HashMap<FileId, Vec<FdHolder>> {
    let mut out: HashMap<FileId, Vec<FdHolder>> = HashMap::new();
    if targets.is_empty() {
        return out;
    }
    let inodes: HashSet<u64> = targets.iter().map(|t| t.inode).collect();
    for pid in pids() {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for ent in fds.flatten() {
            let Some(fd) = ent.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            // Follows the magic link to the open file, without opening it.
            let Ok(meta) = fs::metadata(ent.path()) else {
                continue;
            };
            if !inodes.contains(&meta.ino()) {
                continue;
            }
            let id = FileId::new(meta.dev(), meta.ino());
            if !targets.contains(&id) {
                continue;
            }
            let Some(info) = fdinfo(pid, fd) else {
                continue;
            };
            for lock in info.locks.into_iter().filter(|l| id.matches(l)) {
                out.entry(id).or_default().push(FdHolder { pid, fd, lock });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
1: FLOCK  ADVISORY  WRITE 4242 fd:01:1311 0 EOF
1: -> FLOCK  ADVISORY  WRITE 4250 fd:01:1311 0 EOF
 1: -> FLOCK  ADVISORY  READ 4251 fd:01:1311 0 EOF
2: POSIX  ADVISORY  READ 99 08:11:77 0 99
3: OFDLCK ADVISORY  WRITE -1 00:2a:9 0 EOF
4: LEASE  ACTIVE    READ 12 08:01:3 0 EOF
garbage line
5: FLOCK ADVISORY WRITE notapid 08:01:3 0 EOF
";

    #[test]
    fn parses_holders_waiters_and_odd_lines() {
        let e = parse_locks(SAMPLE);
        assert_eq!(e.len(), 6);
        assert_eq!(e[0].pid, 4242);
        assert!(!e[0].waiter && e[0].exclusive && e[0].kind == LockKind::Flock);
        assert_eq!((e[0].major, e[0].minor, e[0].inode), (0xfd, 1, 1311));
        assert!(e[1].waiter && e[1].pid == 4250);
        assert!(e[2].waiter && !e[2].exclusive);
        assert_eq!(e[3].kind, LockKind::Posix);
        assert_eq!((e[3].major, e[3].minor), (8, 0x11));
        assert_eq!(e[4].kind, LockKind::Ofd);
        assert_eq!(e[4].pid, -1);
        assert_eq!(e[5].kind, LockKind::Other);
    }

    #[test]
    fn never_panics_on_truncated_lines() {
        for line in SAMPLE.lines() {
            for cut in 0..line.len() {
                let _ = parse_lock_line(&line[..cut]);
            }
        }
    }

    #[test]
    fn waiters_with_any_indentation() {
        let text = "12: FLOCK  ADVISORY  WRITE 70 fe:00:5 0 EOF\n 12: ->  FLOCK  ADVISORY  WRITE 77 fe:00:5 0 EOF\n12:   -> FLOCK ADVISORY WRITE 78 fe:00:5 0 EOF\n\t13: -> POSIX ADVISORY READ 79 fe:00:6 0 EOF\n13: ->\n";
        let e = parse_locks(text);
        assert_eq!(e.len(), 4);
        assert!(!e[0].waiter);
        assert!(e[1..].iter().all(|l| l.waiter));
        assert_eq!(
            e.iter().map(|l| l.pid).collect::<Vec<_>>(),
            [70, 77, 78, 79]
        );
        assert_eq!(e[3].kind, LockKind::Posix);
    }

    /// Recorded from Linux 6.x: a locked regular file, an inherited lock
    /// still printing the dead taker's PID, and descriptors of other kinds
    /// whose fdinfo has its own keys (some with colons in the value).
    const FDINFO_FLOCK: &str = "pos:\t0\nflags:\t0100002\nmnt_id:\t27\nino:\t10010642\nlock:\t1: FLOCK  ADVISORY  WRITE 26832 fe:00:10010642 0 EOF\n";
    const FDINFO_TWO_LOCKS: &str = "pos:\t12\nflags:\t02100002\nmnt_id:\t31\nino:\t77\nlock:\t1: POSIX  ADVISORY  WRITE 900 08:11:77 0 99\nlock:\t2: OFDLCK ADVISORY  READ -1 08:11:77 100 EOF\n";
    const FDINFO_INOTIFY: &str = "pos:\t0\nflags:\t02004000\nmnt_id:\t16\nino:\t1057\ninotify wd:1 ino:9a0f52 sdev:fe00000 mask:fc6 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:520f9a0013e7cd5e\n";
    const FDINFO_EVENTFD: &str = "pos:\t0\nflags:\t02004002\nmnt_id:\t16\nino:\t1057\neventfd-count:                0\neventfd-id: 12\n";
    const FDINFO_ODD: &str = "pos:\tnotanumber\nflags:\t0999\n\nlock:\nlock:\tgarbage\nlock:\t1: FLOCK ADVISORY WRITE 5 zz:00:1 0 EOF\nlock:\t3: FLOCK  ADVISORY  READ 41 00:2a:9 0 EOF\nno colon here\n:\n";

    #[test]
    fn parses_fdinfo_lock_lines() {
        let i = parse_fdinfo(FDINFO_FLOCK);
        assert_eq!(i.pos, Some(0));
        assert_eq!(i.flags, Some(0o100002));
        assert_eq!(i.mnt_id, Some(27));
        assert_eq!(i.ino, Some(10010642));
        assert_eq!(i.locks.len(), 1);
        let l = &i.locks[0];
        assert_eq!(
            (l.kind, l.exclusive, l.waiter, l.pid),
            (LockKind::Flock, true, false, 26832)
        );
        assert_eq!((l.major, l.minor, l.inode), (0xfe, 0, 10010642));
        assert!(
            FileId {
                major: 0xfe,
                minor: 0,
                inode: 10010642
            }
            .matches(l)
        );

        let i = parse_fdinfo(FDINFO_TWO_LOCKS);
        assert_eq!(i.locks.len(), 2);
        assert_eq!(i.locks[0].kind, LockKind::Posix);
        assert_eq!(
            (i.locks[1].kind, i.locks[1].pid, i.locks[1].exclusive),
            (LockKind::Ofd, -1, false)
        );
        assert_eq!((i.locks[1].major, i.locks[1].minor), (8, 0x11));
    }

    #[test]
    fn fdinfo_of_other_descriptors_has_no_locks() {
        for text in [FDINFO_INOTIFY, FDINFO_EVENTFD, "", "\n\n", "lock:"] {
            let i = parse_fdinfo(text);
            assert!(i.locks.is_empty(), "{text:?}");
        }
        assert_eq!(parse_fdinfo(FDINFO_INOTIFY).ino, Some(1057));
    }

    #[test]
    fn fdinfo_odd_lines_are_skipped() {
        let i = parse_fdinfo(FDINFO_ODD);
        assert_eq!(i.pos, None);
        assert_eq!(i.flags, None);
        assert_eq!(i.locks.len(), 1);
        assert_eq!((i.locks[0].pid, i.locks[0].exclusive), (41, false));
    }

    #[test]
    fn fdinfo_never_panics_on_truncated_or_mangled_text() {
        for text in [
            FDINFO_FLOCK,
            FDINFO_TWO_LOCKS,
            FDINFO_INOTIFY,
            FDINFO_EVENTFD,
            FDINFO_ODD,
        ] {
            for cut in 0..=text.len() {
                if text.is_char_boundary(cut) {
                    let _ = parse_fdinfo(&text[..cut]);
                    let _ = parse_fdinfo(&text[cut..]);
                }
            }
            let _ = parse_fdinfo(&text.replace('\t', ""));
            let _ = parse_fdinfo(&text.replace(':', "::"));
        }
        let _ = parse_fdinfo(
            "lock:\t18446744073709551616: FLOCK ADVISORY WRITE 99999999999 fffffffff:0:1 0 EOF",
        );
        let _ = parse_fdinfo("lock:\t1: FLOCK ADVISORY WRITE 1 ff:ff:18446744073709551616 0 EOF");
        let _ = parse_fdinfo("lock:\t\u{00e9}\u{1F512}: -> -> ->");
    }

    #[test]
    fn finds_own_flock_through_fdinfo() {
        use std::os::fd::AsRawFd;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let file = std::fs::File::create(&path).unwrap();
        let meta = file.metadata().unwrap();
        let id = FileId::new(meta.dev(), meta.ino());
        let held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .unwrap();
        let me = std::process::id() as i32;
        let info = fdinfo(me, held.as_raw_fd()).unwrap();
        assert_eq!(info.locks.len(), 1);
        assert!(id.matches(&info.locks[0]));
        assert_eq!(info.locks[0].pid, me);
        assert!(
            all_locks()
                .iter()
                .any(|e| id.matches(e) && e.pid == me && !e.waiter)
        );
        let found = fd_lock_holders(&HashSet::from([id]));
        let holders = &found[&id];
        assert!(
            holders
                .iter()
                .any(|h| h.pid == me && h.fd == held.as_raw_fd())
        );
        // Another descriptor open on the file, without the lock, is no holder.
        let other = std::fs::File::open(&path).unwrap();
        let found = fd_lock_holders(&HashSet::from([id]));
        assert!(!found[&id].iter().any(|h| h.fd == other.as_raw_fd()));
        drop(held);
        assert!(fd_lock_holders(&HashSet::from([id])).is_empty());
        assert!(fd_lock_holders(&HashSet::new()).is_empty());
    }

    #[test]
    fn reads_own_process() {
        let me = std::process::id() as i32;
        assert!(starttime(me).is_some());
        assert!(alive(me));
        assert!(cmdline(me).is_some());
    }
}
