//! Signal names as users write them: `TERM`, `SIGTERM`, `term`, `15`,
//! and the real-time signals `RTMIN`, `RTMIN+3`, `SIGRTMAX-1`, `40`.

use std::fmt;
use std::str::FromStr;

use nix::sys::signal::Signal;

use crate::sys;

/// A signal given on the command line, in the config or in a daemon
/// frame: any signal Linux has, real-time ones included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sig(i32);

impl Sig {
    /// SIGTERM.
    pub const TERM: Sig = Sig(libc::SIGTERM);
    /// SIGKILL.
    pub const KILL: Sig = Sig(libc::SIGKILL);

    /// The signal number.
    pub fn number(self) -> i32 {
        self.0
    }

    /// The standard (non-real-time) signal, if it is one.
    pub fn standard(self) -> Option<Signal> {
        Signal::try_from(self.0).ok()
    }

    /// The short name without `SIG`: `TERM`, `RTMIN+3`, `RTMAX-1`.
    pub fn name(self) -> String {
        if let Some(s) = self.standard() {
            let full = s.as_str();
            return full.strip_prefix("SIG").unwrap_or(full).to_owned();
        }
        let (lo, hi) = sys::realtime_range();
        // As kill -l names them: the lower half from RTMIN, the upper
        // half from RTMAX.
        let mid = lo + (hi - lo) / 2;
        match self.0 {
            n if n == lo => "RTMIN".to_owned(),
            n if n == hi => "RTMAX".to_owned(),
            n if n > lo && n <= mid => format!("RTMIN+{}", n - lo),
            n if n > mid && n < hi => format!("RTMAX-{}", hi - n),
            n => n.to_string(),
        }
    }

    /// From a number, if Linux has that signal (and the C library leaves
    /// it to programs: glibc keeps 32 and 33 for itself).
    pub fn from_number(n: i32) -> Option<Sig> {
        let (lo, hi) = sys::realtime_range();
        if Signal::try_from(n).is_ok() || (lo..=hi).contains(&n) {
            Some(Sig(n))
        } else {
            None
        }
    }
}

impl From<Signal> for Sig {
    fn from(s: Signal) -> Self {
        Sig(s as i32)
    }
}

impl fmt::Display for Sig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SIG{}", self.name())
    }
}

/// Parse a signal name or number.
pub fn parse(text: &str) -> Result<Sig, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty signal name".into());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<i32>()
            .ok()
            .and_then(Sig::from_number)
            .ok_or_else(|| format!("invalid signal number '{t}'"));
    }
    let upper = t.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(s) = Signal::iterator().find(|s| s.as_str().strip_prefix("SIG") == Some(bare)) {
        return Ok(Sig::from(s));
    }
    realtime(bare).ok_or_else(|| format!("unknown signal '{t}'"))
}

/// `RTMIN`, `RTMIN+N`, `RTMAX`, `RTMAX-N`, within the real-time range.
fn realtime(bare: &str) -> Option<Sig> {
    let (lo, hi) = sys::realtime_range();
    let offset = |rest: &str, sign: char| -> Option<i32> {
        if rest.is_empty() {
            return Some(0);
        }
        let digits = rest.strip_prefix(sign)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    let n = if let Some(rest) = bare.strip_prefix("RTMIN") {
        lo.checked_add(offset(rest, '+')?)?
    } else if let Some(rest) = bare.strip_prefix("RTMAX") {
        hi.checked_sub(offset(rest, '-')?)?
    } else {
        return None;
    };
    (lo..=hi).contains(&n).then_some(Sig(n))
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
        assert_eq!(parse("TERM").unwrap(), Sig::TERM);
        assert_eq!(parse("sigterm").unwrap(), Sig::TERM);
        assert_eq!(parse("SIGKILL").unwrap(), Sig::KILL);
        assert_eq!(parse("9").unwrap(), Sig::KILL);
        assert_eq!(parse("int").unwrap().number(), libc::SIGINT);
        assert_eq!(parse("TERM").unwrap().name(), "TERM");
        assert_eq!(Sig::TERM.to_string(), "SIGTERM");
    }

    #[test]
    fn realtime_signals() {
        let (lo, hi) = sys::realtime_range();
        assert_eq!(parse("RTMIN").unwrap().number(), lo);
        assert_eq!(parse("SIGRTMIN").unwrap().number(), lo);
        assert_eq!(parse("rtmin+3").unwrap().number(), lo + 3);
        assert_eq!(parse("RTMAX-1").unwrap().number(), hi - 1);
        assert_eq!(parse("RTMAX").unwrap().number(), hi);
        assert_eq!(parse(&lo.to_string()).unwrap().number(), lo);
        assert_eq!(parse("64").unwrap().number(), 64);
        assert_eq!(parse("RTMIN").unwrap().name(), "RTMIN");
        assert_eq!(parse("RTMIN+3").unwrap().name(), "RTMIN+3");
        assert_eq!(parse("RTMAX-1").unwrap().name(), "RTMAX-1");
        assert_eq!(parse("RTMAX-1").unwrap().to_string(), "SIGRTMAX-1");
        // Every number in the range names itself back.
        for n in lo..=hi {
            let s = Sig::from_number(n).unwrap();
            assert_eq!(parse(&s.name()).unwrap(), s, "{n}");
        }
    }

    #[test]
    fn rejects_unknown() {
        for bad in [
            "",
            "0",
            "32",
            "33",
            "65",
            "FOO",
            "SIG",
            "-9",
            "99999999999999",
            "RTMIN+",
            "RTMIN-1",
            "RTMAX+1",
            "RTMIN+31",
            "RTMAX-31",
            "RTMIN+x",
            "RTMIN++1",
            "RT",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
