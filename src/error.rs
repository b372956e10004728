//! The one error type of locksup: a one-line message plus the exit code the
//! process ends with when the error reaches `main`.

use std::fmt;

use crate::exit;

/// An error that ends the supervisor with a documented exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Exit code (see [`crate::exit`]).
    pub code: i32,
    /// One line, no trailing newline, no `locksup:` prefix.
    pub message: String,
}

impl Error {
    /// A failure of locksup itself (usage, config, lock file): exit 125.
    pub fn usage(message: impl Into<String>) -> Self {
        Self::with_code(exit::FAILURE, message)
    }

    /// An error with an explicit exit code.
    pub fn with_code(code: i32, message: impl Into<String>) -> Self {
        let message: String = message.into();
        // Keep the "one line" promise even when an OS or parser message
        // carries newlines.
        let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
        Self {
            code,
            message: strip_os_error_codes(&message),
        }
    }
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
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// The first paragraph of a clap error (the error, continued on indented
/// lines, before the usage), on one line, without the `error: ` prefix.
pub fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let para: Vec<&str> = text
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    let joined = para.join(" ");
    joined
        .strip_prefix("error: ")
        .unwrap_or(&joined)
        .to_string()
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_without_os_error_numbers() {
        let e = Error::usage("cannot open x: File name too long (os error 36)\nmore");
        assert_eq!(e.message, "cannot open x: File name too long more");
        let e = Error::usage("keep (os error x) and (os error )");
        assert_eq!(e.message, "keep (os error x) and (os error )");
    }
}
