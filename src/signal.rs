//! Signal names as users write them: `TERM`, `SIGTERM`, `term`, `15`.

use std::fmt;
use std::str::FromStr;

use nix::sys::signal::Signal;

/// A signal given on the command line or in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sig(pub Signal);

impl Sig {
    /// The signal number.
    pub fn number(self) -> i32 {
        self.0 as i32
    }

    /// The short name without `SIG`: `TERM`.
    pub fn name(self) -> &'static str {
        let full = self.0.as_str();
        full.strip_prefix("SIG").unwrap_or(full)
    }
}

impl fmt::Display for Sig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

/// Parse a signal name or number.
pub fn parse(text: &str) -> Result<Sig, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty signal name".into());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        let n: i32 = t
            .parse()
            .map_err(|_| format!("invalid signal number '{t}'"))?;
        return Signal::try_from(n)
            .map(Sig)
            .map_err(|_| format!("invalid signal number '{t}'"));
    }
    let upper = t.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    Signal::iterator()
        .find(|s| s.as_str().strip_prefix("SIG") == Some(bare))
        .map(Sig)
        .ok_or_else(|| format!("unknown signal '{t}'"))
}

impl FromStr for Sig {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers() {
        assert_eq!(parse("TERM").unwrap().0, Signal::SIGTERM);
        assert_eq!(parse("sigterm").unwrap().0, Signal::SIGTERM);
        assert_eq!(parse("SIGKILL").unwrap().0, Signal::SIGKILL);
        assert_eq!(parse("9").unwrap().0, Signal::SIGKILL);
        assert_eq!(parse("int").unwrap().0, Signal::SIGINT);
        assert_eq!(parse("TERM").unwrap().name(), "TERM");
    }

    #[test]
    fn rejects_unknown() {
        for bad in ["", "0", "65", "FOO", "SIG", "-9", "99999999999999"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
