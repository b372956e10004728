//! The fork/exec boundary: the only module with `unsafe`.
//!
//! An attempt starts as a child of the supervisor that runs locksup's own
//! binary in its attempt role (see [`crate::child`]); that role takes the
//! lock and then execs the user's command in the same process. Here we set
//! up what must happen between fork and exec, using only
//! async-signal-safe calls: the parent-death signal with its race check,
//! and the inheritance of the two protocol pipes.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

use nix::sys::signal::Signal;

/// Spawn `cmd` as the attempt's first process: its own process group,
/// SIGKILL when the supervisor's thread dies, and the descriptors in
/// `inherit` kept open across exec.
///
/// Must be called from a thread that lives as long as the attempt (the
/// parent-death signal fires when the *forking thread* exits): the main
/// thread of a current-thread runtime.
pub fn spawn_attempt(cmd: &mut Command, inherit: [RawFd; 2]) -> io::Result<Child> {
    let supervisor = nix::unistd::getpid();
    cmd.process_group(0);
    // SAFETY: the closure runs in the child between fork and exec. It calls
    // only prctl(2), getppid(2), fcntl(2) and _exit(2), all async-signal-safe;
    // it allocates nothing and touches no lock held by another thread.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The supervisor may have died between fork and prctl; then the
            // death signal will never come, so leave now.
            if libc::getppid() != supervisor.as_raw() {
                libc::_exit(crate::exit::FAILURE);
            }
            for fd in inherit {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Take ownership of a descriptor this process inherited across exec from
/// its supervisor, whose number came on the command line.
pub fn adopt_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_GETFD) only queries flags; it is sound on any integer
    // and fails with EBADF when `fd` is not open.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: `fd` is open (checked above) and was created for this process
    // by its supervisor solely to be adopted here, exactly once, at start-up
    // before any other code could have taken it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether `sig` was set to be ignored when this process started.
///
/// A signal ignored by whoever started locksup (`nohup`, `trap '' INT`)
/// must stay ignored for the command, so locksup installs no handler for
/// it: exec resets handled signals to default but keeps ignored ones.
pub fn signal_is_ignored(sig: Signal) -> bool {
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: with a null new action, sigaction(2) only writes the current
    // disposition into `old`, which is valid, zeroed storage of the right
    // type.
    let rc = unsafe { libc::sigaction(sig as libc::c_int, std::ptr::null(), old.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: sigaction returned 0, so it filled `old` in.
    let old = unsafe { old.assume_init() };
    old.sa_sigaction == libc::SIG_IGN
}
