//! The one error type of locksup: what failed (the variant), a one-line
//! message, and the exit code the process ends with when the error
//! reaches `main` ([`Error::code`]).

use std::fmt;

use crate::exit;

/// An error that ends locksup with a documented exit code. Every message
/// is one line, without the `locksup:` prefix (the constructors see to
/// it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A command line, request or target that cannot work as given.
    Usage(String),
    /// The configuration file: unreadable, or wrong.
    Config(String),
    /// The lock file, or its directory, is unusable.
    Lock(String),
    /// The attempt (or the supervisor's own setup for it) could not be
    /// started.
    Spawn(String),
    /// `locksup serve` and a client did not understand each other, or
    /// one of them went away.
    Protocol(String),
    /// A system call or an input/output failed.
    Io(String),
    /// An outcome with an exit status of its own (`cancel`'s 1 to 4,
    /// 124 after `--wait`, 126 and 127 for a command that cannot run,
    /// a status the daemon sent, a reader that went away: 0).
    Exit(i32, String),
}

impl Error {
    /// A usage error: exit 125.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::Usage(one_line(message))
    }

    /// A configuration error: exit 125.
    pub fn config(message: impl Into<String>) -> Self {
        Self::Config(one_line(message))
    }

    /// An unusable lock file: exit 125.
    pub fn lock(message: impl Into<String>) -> Self {
        Self::Lock(one_line(message))
    }

    /// The attempt could not be started: exit 125.
    pub fn spawn(message: impl Into<String>) -> Self {
        Self::Spawn(one_line(message))
    }

    /// A protocol failure between `serve` and a client: exit 125.
    pub fn protocol(message: impl Into<String>) -> Self {
        Self::Protocol(one_line(message))
    }

    /// A failed system call or input/output: exit 125.
    pub fn io(message: impl Into<String>) -> Self {
        Self::Io(one_line(message))
    }

    /// An error with an explicit exit code.
    pub fn with_code(code: i32, message: impl Into<String>) -> Self {
        Self::Exit(code, one_line(message))
    }

    /// The exit code locksup ends with (see `crate::exit`).
    pub fn code(&self) -> i32 {
        match self {
            Error::Exit(code, _) => *code,
            Error::Usage(_)
            | Error::Config(_)
            | Error::Lock(_)
            | Error::Spawn(_)
            | Error::Protocol(_)
            | Error::Io(_) => exit::FAILURE,
        }
    }

    /// The one-line message.
    pub fn message(&self) -> &str {
        match self {
            Error::Usage(m)
            | Error::Config(m)
            | Error::Lock(m)
            | Error::Spawn(m)
            | Error::Protocol(m)
            | Error::Io(m)
            | Error::Exit(_, m) => m,
        }
    }
}

/// Keep the "one line" promise even when an OS or parser message carries
/// newlines, and drop OS error numbers.
fn one_line(message: impl Into<String>) -> String {
    let message: String = message.into();
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    strip_os_error_codes(&message)
}

/// `File name too long (os error 36)` reads better without its number.
fn strip_os_error_codes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(" (os error ") {
        let tail = &rest[i + " (os error ".len()..];
        match tail.find(')') {
            Some(j) if tail[..j].bytes().all(|b| b.is_ascii_digit()) && j > 0 => {
                out.push_str(&rest[..i]);
                rest = &tail[j + 1..];
            }
            _ => {
                out.push_str(&rest[..i + 1]);
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for Error {}

/// Result alias used across the crate.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_without_os_error_numbers() {
        let e = Error::usage("cannot open x: File name too long (os error 36)\nmore");
        assert_eq!(e.message(), "cannot open x: File name too long more");
        let e = Error::usage("keep (os error x) and (os error )");
        assert_eq!(e.message(), "keep (os error x) and (os error )");
    }
}
