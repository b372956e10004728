//! What the kernel says, read from `/proc`: `/proc/locks`, process start
//! times, command lines, and the process tree (`/proc/PID/task/*/children`).

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

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
            major: nix::sys::stat::major(dev) as u32,
            minor: nix::sys::stat::minor(dev) as u32,
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
    match fs::read_to_string("/proc/locks") {
        Ok(text) => parse_locks(&text)
            .into_iter()
            .filter(|e| file.matches(e))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Field 22 of `/proc/PID/stat`: the process start time in clock ticks
/// since boot. With the PID it identifies a process across PID reuse.
pub fn starttime(pid: i32) -> Option<u64> {
    stat_fields(pid).and_then(|f| f.get(19).and_then(|s| s.parse().ok()))
}

/// The state letter of `/proc/PID/stat` (`R`, `S`, `Z`, ...).
pub fn state(pid: i32) -> Option<char> {
    stat_fields(pid).and_then(|f| f.first().and_then(|s| s.chars().next()))
}

/// Fields of `/proc/PID/stat` after the `(comm)` field: index 0 is field 3
/// (state). The comm may contain spaces and parentheses, so split after
/// the last `)`.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
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

/// Every process whose process group is `pgid`.
pub fn group_members(pgid: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return out;
    };
    for ent in dir.flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        // Field 5 (pgrp) is index 2 after the comm.
        if stat_fields(pid).and_then(|f| f.get(2).and_then(|s| s.parse::<i32>().ok())) == Some(pgid)
        {
            out.insert(pid);
        }
    }
    out
}

/// Processes that have an open descriptor on `file` (scans every process
/// this user may inspect; used only to name the holders of a leaked lock).
pub fn holders_of(file: FileId) -> BTreeSet<i32> {
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

/// The boot-relative start time of this process, for metadata.
pub fn self_starttime() -> Option<u64> {
    starttime(std::process::id() as i32)
}

/// Whether a path names a process directory that exists.
pub fn exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
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
    fn reads_own_process() {
        let me = std::process::id() as i32;
        assert!(starttime(me).is_some());
        assert!(alive(me));
        assert!(cmdline(me).is_some());
    }
}
