//! The signal sets every part of locksup agrees on.
//!
//! A `locksup run` supervisor cancels its attempt on [`CANCEL`] and passes
//! [`PASS`] on to the attempt's process group; `run --daemon` (the client)
//! turns the same signals into `cancel` and `signal` frames, `serve`
//! accepts exactly these in those frames, and `cancel` refuses to send a
//! supervisor any signal that would not make it cancel.

use nix::sys::signal::Signal;

/// Signals that make a supervisor end its attempt (and a client ask for
/// that): TERM, INT, HUP, QUIT.
pub(crate) const CANCEL: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// Signals passed on to the attempt: USR1, USR2, WINCH.
pub(crate) const PASS: [Signal; 3] = [Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGWINCH];

/// Whether SIGCONT follows `sig`, so that a stopped process acts on it:
/// for every signal but KILL (which needs no waking) and CONT itself.
pub(crate) fn wakes(sig: i32) -> bool {
    sig != libc::SIGKILL && sig != libc::SIGCONT
}
