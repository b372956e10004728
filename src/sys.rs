//! Small system-call helpers that need `unsafe`, each block with its
//! `// SAFETY:` reasoning. The fork/exec boundary itself lives in
//! [`crate::attempt::spawn`].
//!
//! # The process state locksup inherits
//!
//! Whoever starts locksup chooses its signal mask and which signals are
//! ignored (`nohup`, `trap '' PIPE`, a parent's `sigprocmask`). The Rust
//! runtime changes one of them before `main` runs: it ignores SIGPIPE. So
//! the inherited state is recorded by a constructor that runs before the
//! runtime starts ([`inherited`]). locksup then owns its own mask (every
//! signal unblocked, [`unblock_all_signals`]) so that its timers, reaping
//! and cancel handling work whatever it inherited, and gives the command
//! back exactly what locksup inherited: the same mask, the same ignored
//! signals, every other signal at its default action.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use nix::sys::signal::Signal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Highest signal number Linux has.
pub(crate) const MAX_SIGNAL: i32 = 64;

static CAPTURED: AtomicBool = AtomicBool::new(false);
/// Bit `n - 1` set: signal `n` was ignored when the process started.
static IGNORED: AtomicU64 = AtomicU64::new(0);
/// Bit `n - 1` set: signal `n` was blocked when the process started.
static BLOCKED: AtomicU64 = AtomicU64::new(0);

/// Recorded before `main` (and before the Rust runtime ignores SIGPIPE).
extern "C" fn capture_inherited_state() {
    let mut ignored = 0u64;
    let mut blocked = 0u64;
    // SAFETY: an all-zero sigset_t is a valid (if unspecified) value that
    // sigprocmask overwrites; with a null new set, sigprocmask(2) only
    // writes the current mask into `old`.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `old` is valid, writable storage of the right type.
    let have_mask = unsafe { libc::sigprocmask(libc::SIG_BLOCK, std::ptr::null(), &mut old) } == 0;
    for sig in 1..=MAX_SIGNAL {
        let bit = 1u64 << (sig - 1);
        if have_mask {
            // SAFETY: `old` was filled in by sigprocmask; sigismember only
            // reads it.
            if unsafe { libc::sigismember(&old, sig) } == 1 {
                blocked |= bit;
            }
        }
        let mut act = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
        // SAFETY: with a null new action, sigaction(2) only writes the
        // current disposition into `act`, valid zeroed storage of the
        // right type. Numbers the C library reserves fail with EINVAL.
        let rc = unsafe { libc::sigaction(sig, std::ptr::null(), act.as_mut_ptr()) };
        if rc == 0 {
            // SAFETY: sigaction returned 0, so it filled `act` in.
            let act = unsafe { act.assume_init() };
            if act.sa_sigaction == libc::SIG_IGN {
                ignored |= bit;
            }
        }
    }
    IGNORED.store(ignored, Ordering::Relaxed);
    BLOCKED.store(blocked, Ordering::Relaxed);
    CAPTURED.store(true, Ordering::Release);
}

/// Runs [`capture_inherited_state`] when the program is loaded, before
/// `main` and before the Rust runtime's own initialisation.
#[used]
// SAFETY: `.init_array` holds `extern "C" fn()` pointers the dynamic
// loader calls once at start-up; the function takes no arguments, touches
// only atomics and makes query-only system calls.
#[unsafe(link_section = ".init_array")]
static CAPTURE_AT_START: extern "C" fn() = capture_inherited_state;

/// The signal state this process started with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inherited {
    ignored: u64,
    blocked: u64,
}

impl Inherited {
    /// Whether `sig` was ignored when locksup started.
    pub(crate) fn ignored(self, sig: i32) -> bool {
        (1..=MAX_SIGNAL).contains(&sig) && self.ignored & (1u64 << (sig - 1)) != 0
    }

    /// Whether `sig` was blocked when locksup started.
    pub(crate) fn blocked(self, sig: i32) -> bool {
        (1..=MAX_SIGNAL).contains(&sig) && self.blocked & (1u64 << (sig - 1)) != 0
    }

    /// The inherited mask as a `sigset_t`, for the command.
    pub(crate) fn mask(self) -> libc::sigset_t {
        // SAFETY: an all-zero sigset_t is valid storage; sigemptyset
        // initialises it and sigaddset only writes bits of it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: see above.
        unsafe { libc::sigemptyset(&mut set) };
        for sig in 1..=MAX_SIGNAL {
            if self.blocked(sig) {
                // SAFETY: `set` is initialised; invalid numbers only fail.
                unsafe { libc::sigaddset(&mut set, sig) };
            }
        }
        set
    }
}

/// The signal mask and ignored signals locksup started with. Should the
/// start-up record be missing, the current state is read instead (which
/// then reports SIGPIPE as ignored, as the runtime set it).
pub(crate) fn inherited() -> Inherited {
    if !CAPTURED.load(Ordering::Acquire) {
        capture_inherited_state();
    }
    Inherited {
        ignored: IGNORED.load(Ordering::Relaxed),
        blocked: BLOCKED.load(Ordering::Relaxed),
    }
}

/// Unblock every signal in the calling thread (and the threads it starts
/// later): locksup's timers, reaping and cancel handling must work
/// whatever mask it inherited. Call it first thing in `main`.
pub fn unblock_all_signals() -> io::Result<()> {
    // SAFETY: an all-zero sigset_t is valid storage; sigemptyset
    // initialises it.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `empty` is valid storage; sigemptyset only writes it.
    unsafe { libc::sigemptyset(&mut empty) };
    // SAFETY: `empty` is an initialised set; the old mask is not wanted.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// `kill(2)` with a raw signal number (real-time signals included).
/// `pid` may be negative (a process group) as kill(2) allows.
pub(crate) fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes two integers and touches no memory of ours.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `pidfd_send_signal(2)` through a pidfd or an open `/proc/PID`
/// directory: the signal reaches that very process or, once it has
/// exited, nobody, even if its PID has been reused since.
pub(crate) fn pidfd_send_signal(fd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    // SAFETY: the descriptor is borrowed, hence open, for the call; the
    // siginfo pointer is null, which the call documents as "like kill(2)";
    // flags are 0. No memory of ours is read or written.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0 as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `fork(2)` a process that has a single thread, so that the child may
/// go on running ordinary Rust code. `Ok(None)` in the child,
/// `Ok(Some(pid))` in the parent.
pub(crate) fn fork_single_threaded() -> io::Result<Option<i32>> {
    let threads = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse::<u32>().ok())
        });
    if threads.is_some_and(|n| n != 1) {
        return Err(io::Error::other("cannot fork a process with threads"));
    }
    // SAFETY: the process has one thread (checked above when /proc tells;
    // the caller guarantees it otherwise), so the child is a complete copy
    // of it, with no lock held by a thread that does not exist there, and
    // may run any code.
    let pid = unsafe { libc::fork() };
    match pid {
        p if p < 0 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        p => Ok(Some(p)),
    }
}

/// A set of signal numbers.
pub(crate) fn sigset(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: an all-zero sigset_t is valid storage; sigemptyset
    // initialises it and sigaddset only writes bits of it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: see above.
    unsafe { libc::sigemptyset(&mut set) };
    for &s in signals {
        // SAFETY: `set` is initialised; invalid numbers only fail.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    set
}

/// Block `set` in the calling thread.
pub(crate) fn block_signals(set: &libc::sigset_t) -> io::Result<()> {
    // SAFETY: `set` is an initialised set; the old mask is not wanted.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Give `sig` its default action (a SIGCHLD ignored by whoever started
/// us would make the kernel reap our children before we could).
pub(crate) fn set_default_action(sig: i32) -> io::Result<()> {
    // SAFETY: an all-zero sigaction with SIG_DFL as its handler and an
    // empty mask is a valid action; sigaction(2) reads it and writes no
    // memory of ours (the old action is not wanted).
    let rc = unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(sig, &act, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A signal taken by [`wait_signal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caught {
    /// The signal number.
    pub signo: i32,
    /// Who sent it: the kernel (`SI_KERNEL`), a process (`SI_USER`), ...
    pub code: i32,
}

/// Wait for one of the (blocked) signals of `set`, at most `timeout`
/// (`None`: as long as it takes): `sigtimedwait(2)`. `Ok(None)` when the
/// time ran out.
pub(crate) fn wait_signal(
    set: &libc::sigset_t,
    timeout: Option<std::time::Duration>,
) -> io::Result<Option<Caught>> {
    let ts = timeout.map(|t| libc::timespec {
        tv_sec: libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(t.subsec_nanos()),
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    loop {
        let mut info = std::mem::MaybeUninit::<libc::siginfo_t>::zeroed();
        // SAFETY: `set` is an initialised set, `info` valid writable
        // storage of the right type, `ts_ptr` null or pointing at `ts`,
        // which lives across the call.
        let rc = unsafe { libc::sigtimedwait(set, info.as_mut_ptr(), ts_ptr) };
        if rc > 0 {
            // SAFETY: sigtimedwait returned a signal, so it filled `info`.
            let info = unsafe { info.assume_init() };
            return Ok(Some(Caught {
                signo: rc,
                code: info.si_code,
            }));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) => return Ok(None),
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// It exited with this status.
    Exited(i32),
    /// A signal (any number, real-time ones included) ended it.
    Signaled(i32),
}

/// What one non-blocking `waitpid(-1)` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reaped {
    /// This child ended and is reaped now.
    Child(i32, Ended),
    /// Children are left, none has ended.
    Running,
    /// No child is left.
    NoChildren,
}

/// Reap one ended child, if any (`waitpid(-1, WNOHANG)`), whatever
/// signal ended it. Stops and continues are not asked for.
pub(crate) fn reap_one() -> io::Result<Reaped> {
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: `status` is valid, writable storage for the call.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid > 0 {
            let ended = if libc::WIFEXITED(status) {
                Ended::Exited(libc::WEXITSTATUS(status))
            } else if libc::WIFSIGNALED(status) {
                Ended::Signaled(libc::WTERMSIG(status))
            } else {
                continue;
            };
            return Ok(Reaped::Child(pid, ended));
        }
        if pid == 0 {
            return Ok(Reaped::Running);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ECHILD) => return Ok(Reaped::NoChildren),
            Some(libc::EINTR) => continue,
            _ => return Err(e),
        }
    }
}

/// Have the kernel send `sig` to this process when its parent thread ends
/// (`PR_SET_PDEATHSIG`); any signal number, real-time ones included.
pub(crate) fn set_parent_death_signal(sig: i32) -> io::Result<()> {
    let sig =
        libc::c_ulong::try_from(sig).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: PR_SET_PDEATHSIG takes a signal number by value and touches
    // no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The real-time signal range of this C library: `SIGRTMIN()` to
/// `SIGRTMAX()` (34 to 64 with glibc, which keeps 32 and 33 for itself).
pub(crate) fn realtime_range() -> (i32, i32) {
    (libc::SIGRTMIN(), libc::SIGRTMAX())
}

/// `bytes` as a C string; `what` names it when it holds a NUL byte.
pub(crate) fn cstring(bytes: &[u8], what: &str) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

/// Whether `sig` was set to be ignored when this process started.
///
/// A signal ignored by whoever started locksup (`nohup`, `trap '' INT`)
/// stays ignored for the command (see [`inherited`]), and
/// locksup does not act on it either.
pub(crate) fn signal_is_ignored(sig: Signal) -> bool {
    inherited().ignored(sig as i32)
}

/// Take ownership of a raw descriptor number this process owns by
/// construction (kept for callers adopting inherited descriptors).
pub(crate) fn adopt_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_GETFD) only queries flags; it fails with EBADF when
    // `fd` is not open.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: `fd` is open (checked above) and nobody else in this process
    // owns it: it was inherited for the caller alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Take ownership of a descriptor received with `SCM_RIGHTS`.
pub(crate) fn own_received_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: the kernel installed `fd` in this process while receiving the
    // message (recvmsg(2) with SCM_RIGHTS); it is open and nothing else in
    // this process knows its number, so exactly one owner takes it here.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Remove variables from this process's environment.
///
/// Call it only while the process has a single thread (`locksup serve`
/// does, before it builds its runtime): the environment is not
/// thread-safe.
pub(crate) fn unset_env_single_threaded(keys: &[&str]) {
    for k in keys {
        // SAFETY: the caller guarantees no other thread exists, so nothing
        // reads or writes the environment concurrently.
        unsafe { std::env::remove_var(k) };
    }
}

/// The supplementary groups of a Unix socket's peer, as they were when it
/// connected (`SO_PEERGROUPS`, Linux 4.13).
pub(crate) fn peer_groups(sock: std::os::fd::BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = libc::socklen_t::try_from(groups.len() * std::mem::size_of::<libc::gid_t>())
            .unwrap_or(libc::socklen_t::MAX);
        // SAFETY: `groups` is valid, writable storage of `len` bytes; the
        // kernel writes at most `len` bytes and sets `len` to what it
        // wrote, or to the size it needs with ERANGE.
        let rc = unsafe {
            libc::getsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ERANGE) && n > groups.len() && n <= 65536 {
            groups.resize(n, 0);
            continue;
        }
        return Err(e);
    }
}

/// The value of extended attribute `name` of `path` (`getxattr(2)`),
/// `None` when it has none by that name.
pub(crate) fn get_xattr(path: &std::path::Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let path = cstring(path.as_os_str().as_bytes(), "path")?;
    let name = cstring(name.as_bytes(), "attribute name")?;
    let mut buf = vec![0u8; 256];
    // SAFETY: both strings are NUL-terminated and live across the call;
    // `buf` is writable storage of the size given, and the kernel writes
    // at most that many bytes.
    let rc = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::ENOTSUP) => Ok(None),
            _ => Err(e),
        };
    }
    buf.truncate(rc as usize);
    Ok(Some(buf))
}

/// A process pinned by a pidfd (`pidfd_open(2)`): a signal sent through it
/// reaches that very process or, once it has exited, nobody, even if its
/// PID has been reused since. Used by `locksup cancel`.
#[derive(Debug)]
pub(crate) struct PidFd {
    fd: OwnedFd,
    #[cfg(test)]
    pid: i32,
}

impl PidFd {
    /// Pin the process that has `pid` now.
    pub(crate) fn open(pid: i32) -> io::Result<PidFd> {
        if pid <= 0 {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
        // SAFETY: pidfd_open(2) takes a PID and flags by value and touches no
        // memory of ours; on success it returns a new descriptor that nobody
        // else owns.
        let rc =
            unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0 as libc::c_uint) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let raw = RawFd::try_from(rc).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        // SAFETY: `raw` was just returned by pidfd_open, is open, and is
        // owned by nothing else; OwnedFd takes it over exactly once.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(PidFd {
            fd,
            #[cfg(test)]
            pid,
        })
    }

    /// The PID it was opened for.
    #[cfg(test)]
    pub(crate) fn pid(&self) -> i32 {
        self.pid
    }

    /// `pidfd_send_signal(2)`: ESRCH once the process has exited (never
    /// another process), EPERM when not permitted.
    pub(crate) fn send_signal(&self, sig: i32) -> io::Result<()> {
        pidfd_send_signal(self.fd.as_fd(), sig)
    }
}

impl std::os::fd::AsFd for PidFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inherited_state_is_recorded() {
        let inh = inherited();
        // Never ignored or blocked by anyone.
        assert!(!inh.ignored(libc::SIGKILL));
        assert!(!inh.blocked(0));
        assert!(!inh.ignored(65));
        let mask = inh.mask();
        // SAFETY: `mask` is an initialised set.
        assert_eq!(unsafe { libc::sigismember(&mask, libc::SIGKILL) }, 0);
    }

    #[test]
    fn realtime_range_is_linux() {
        let (lo, hi) = realtime_range();
        assert!(lo >= 32 && hi == MAX_SIGNAL && lo < hi);
    }

    #[test]
    fn pidfd_signals_only_its_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let fd = PidFd::open(pid).unwrap();
        assert_eq!(fd.pid(), pid);
        fd.send_signal(libc::SIGKILL).unwrap();
        let st = child.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(9));
        // Reaped: the pidfd now names nobody.
        let e = fd.send_signal(libc::SIGTERM).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ESRCH));
        assert_eq!(
            PidFd::open(0).unwrap_err().raw_os_error(),
            Some(libc::ESRCH)
        );
        assert!(PidFd::open(i32::MAX).is_err());
    }
}
