//! Exit codes, following `timeout(1)`, `flock(1)` and sysexits(3).

/// Success.
pub(crate) const SUCCESS: i32 = 0;
/// `status`, `watch`, `cancel`: a named path, session, lock file or
/// attempt id was not found.
pub(crate) const TARGET_NOT_FOUND: i32 = 1;
/// `cancel`: the lock is not held; nothing to cancel.
pub(crate) const NOT_HELD: i32 = 2;
/// `cancel`: the lock is held by a process that is not a locksup attempt
/// (no metadata), and `--force` was not given.
pub(crate) const NOT_AN_ATTEMPT: i32 = 3;
/// `cancel`: not permitted to signal the supervisor or the holders.
pub(crate) const NOT_PERMITTED: i32 = 4;
/// The attempt timed out and ended after the first signal.
pub(crate) const TIMED_OUT: i32 = 124;
/// locksup itself failed: usage, configuration, lock file, spawn.
pub const FAILURE: i32 = 125;
/// The command was found but could not be executed.
pub(crate) const CANNOT_EXECUTE: i32 = 126;
/// The command was not found.
pub(crate) const NOT_FOUND: i32 = 127;
/// The lock was not obtained (`EX_TEMPFAIL`); `--conflict-exit-code` changes it.
pub(crate) const CONFLICT: i32 = 75;

/// The shell convention for "died from signal `signo`".
pub(crate) fn from_signal(signo: i32) -> i32 {
    128 + signo
}
