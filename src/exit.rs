//! Exit codes, following `timeout(1)`, `flock(1)` and sysexits(3).

/// The attempt timed out and ended after the first signal.
pub const TIMED_OUT: i32 = 124;
/// locksup itself failed: usage, configuration, lock file, spawn.
pub const FAILURE: i32 = 125;
/// The command was found but could not be executed.
pub const CANNOT_EXECUTE: i32 = 126;
/// The command was not found.
pub const NOT_FOUND: i32 = 127;
/// The lock was not obtained (`EX_TEMPFAIL`); `--conflict-exit-code` changes it.
pub const CONFLICT: i32 = 75;

/// The shell convention for "died from signal `signo`".
pub fn from_signal(signo: i32) -> i32 {
    128 + signo
}
