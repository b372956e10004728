//! Containment for `locksup serve`: a cgroup v2 child group per attempt,
//! ended with `cgroup.kill`, when the service manager delegated a subtree
//! to the daemon; otherwise the process-group + subreaper path of
//! `locksup run` alone.
//!
//! Delegation is detected, never assumed: the daemon's own cgroup (the
//! `0::` line of `/proc/self/cgroup`, under the cgroup2 mount) must not be
//! the root, must have `cgroup.kill` (Linux 5.14), must be writable by us,
//! and must be marked delegated the way systemd marks it (`Delegate=yes`
//! sets the extended attribute `trusted.delegate` or `user.delegate` to
//! 1). A cgroup that is merely writable (root's shell in a session scope)
//! belongs to someone else and is left alone.
//!
//! With delegation the daemon moves itself into a leaf, `supervisor/`
//! (cgroup v2 allows processes only in leaves once controllers are
//! enabled), and each attempt's supervisor joins its own
//! `attempt-N/` before it execs (see [`crate::attempt::spawn::prepare_supervisor`]),
//! so every process of the attempt, escapees included, is in it. When the
//! supervisor has ended, `cgroup.kill` ends whatever is left (normally
//! nothing; after a supervisor was SIGKILLed, its strays) and the group is
//! removed.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// How attempts are contained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Containment {
    /// Per-attempt cgroups under this delegated cgroup.
    Cgroup(PathBuf),
    /// Process groups and the subreaper only; the reason cgroups are not
    /// used.
    ProcessGroup(String),
}

impl Containment {
    /// One line for logs and the service status.
    pub(crate) fn describe(&self) -> String {
        match self {
            Containment::Cgroup(dir) => {
                format!("a cgroup per attempt under {} (cgroup.kill)", dir.display())
            }
            Containment::ProcessGroup(why) => {
                format!("process group + subreaper (no per-attempt cgroups: {why})")
            }
        }
    }

    /// The short name: `cgroup` or `process-group`.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Containment::Cgroup(_) => "cgroup",
            Containment::ProcessGroup(_) => "process-group",
        }
    }
}

/// The cgroup2 mount point, from `/proc/self/mountinfo` text.
pub(crate) fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        left.split_whitespace()
            .nth(4)
            .map(|m| PathBuf::from(unescape(m)))
    })
}

/// Undo mountinfo's octal escapes (`\040` for a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Our cgroup v2 path (the `0::` line of `/proc/self/cgroup` text).
pub(crate) fn own_v2_path(proc_cgroup: &str) -> Option<String> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// Decide how attempts are contained, and set up the cgroup side when it
/// can be used (moves this process into `supervisor/`).
pub(crate) fn detect() -> Containment {
    match delegated_dir() {
        Ok(dir) => match enter_leaf(&dir) {
            Ok(()) => Containment::Cgroup(dir),
            Err(e) => Containment::ProcessGroup(format!(
                "cannot move into {}/supervisor: {e}",
                dir.display()
            )),
        },
        Err(why) => Containment::ProcessGroup(why),
    }
}

fn delegated_dir() -> Result<PathBuf, String> {
    let cg =
        fs::read_to_string("/proc/self/cgroup").map_err(|e| format!("/proc/self/cgroup: {e}"))?;
    let rel = own_v2_path(&cg).ok_or("no cgroup v2 hierarchy")?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    let mount = cgroup2_mount(&mountinfo).ok_or("cgroup v2 is not mounted")?;
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        return Err(format!(
            "this process is in the root cgroup of {}, not in a delegated one",
            mount.display()
        ));
    }
    let dir = mount.join(rel);
    // Inside our own leaf already (a restart within the same cgroup).
    let dir = if dir.file_name().is_some_and(|n| n == "supervisor") && is_delegated(dir.parent()) {
        dir.parent().map(Path::to_path_buf).unwrap_or(dir)
    } else {
        dir
    };
    if !dir.join("cgroup.kill").exists() {
        return Err(format!(
            "{} has no cgroup.kill (Linux 5.14 or later needed)",
            dir.display()
        ));
    }
    if !is_delegated(Some(&dir)) {
        return Err(format!(
            "{} is not delegated to this service (Delegate=yes)",
            dir.display()
        ));
    }
    for f in ["", "cgroup.procs", "cgroup.subtree_control"] {
        let p = dir.join(f);
        nix::unistd::access(&p, nix::unistd::AccessFlags::W_OK)
            .map_err(|e| format!("{} is not writable: {e}", p.display()))?;
    }
    Ok(dir)
}

/// Marked delegated by the service manager.
fn is_delegated(dir: Option<&Path>) -> bool {
    let Some(dir) = dir else { return false };
    ["trusted.delegate", "user.delegate"]
        .iter()
        .any(|name| matches!(crate::sys::get_xattr(dir, name), Ok(Some(v)) if v == b"1"))
}

fn enter_leaf(dir: &Path) -> io::Result<()> {
    let leaf = dir.join("supervisor");
    match fs::create_dir(&leaf) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    fs::write(leaf.join("cgroup.procs"), b"0")
}

/// Create the cgroup for one attempt.
pub(crate) fn create_attempt(root: &Path, n: u64) -> io::Result<PathBuf> {
    let dir = root.join(format!("attempt-{n}"));
    match fs::create_dir(&dir) {
        Ok(()) => Ok(dir),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(dir),
        Err(e) => Err(e),
    }
}

/// Whether processes are left in the cgroup (`populated 1` in
/// `cgroup.events`); `None` when it cannot be read (gone).
pub(crate) fn populated(dir: &Path) -> Option<bool> {
    let text = fs::read_to_string(dir.join("cgroup.events")).ok()?;
    Some(text.lines().any(|l| l.trim() == "populated 1"))
}

/// End every process left in the cgroup (`cgroup.kill`).
pub(crate) fn kill(dir: &Path) -> io::Result<()> {
    fs::write(dir.join("cgroup.kill"), b"1")
}

/// Remove an attempt's cgroup: `Ok(true)` when gone, `Ok(false)` when it
/// is still busy (processes not reaped yet).
pub(crate) fn remove(dir: &Path) -> io::Result<bool> {
    match fs::remove_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_and_our_path() {
        let mi = "\
25 30 0:22 / /sys rw,nosuid - sysfs sysfs rw
35 25 0:30 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
37 35 0:32 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,name=systemd";
        assert_eq!(
            cgroup2_mount(mi),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("1 2 3:4 / /x rw - ext4 /dev/a rw"), None);
        assert_eq!(
            cgroup2_mount("1 2 0:1 / /a\\040b rw - cgroup2 cgroup2 rw"),
            Some(PathBuf::from("/a b"))
        );
        let pc = "9:name=systemd:/\n1:cpu:/\n0::/system.slice/locksup.service\n";
        assert_eq!(
            own_v2_path(pc).as_deref(),
            Some("/system.slice/locksup.service")
        );
        assert_eq!(own_v2_path("1:cpu:/\n"), None);
    }

    #[test]
    fn describes_itself() {
        let c = Containment::ProcessGroup("not delegated".into());
        assert_eq!(c.name(), "process-group");
        assert!(c.describe().contains("not delegated"));
        let c = Containment::Cgroup("/sys/fs/cgroup/x".into());
        assert_eq!(c.name(), "cgroup");
        assert!(c.describe().contains("/sys/fs/cgroup/x"));
    }
}
