//! Property tests for every parser of the public library API: durations,
//! signal names, `/proc/locks` and fdinfo lines, lock file metadata, the
//! configuration file and the attempt's status records.
//!
//! Each property says what must hold for *every* input of its kind: no
//! input panics, errors keep their documented shape, and round trips hold
//! where they apply. Case counts are kept modest so the whole file runs in
//! a few seconds; `PROPTEST_CASES=N` overrides them all (see HARDENING.md).

use std::path::Path;
use std::time::Duration;

use locksup::testing::config::{Config, MAX_FILE_MODE};
use locksup::testing::duration::{self, Dur, format_duration};
use locksup::testing::lockfile::{METADATA_VERSION, Metadata};
use locksup::testing::procfs::{self, LockEntry, LockKind};
use locksup::testing::signal;
use locksup::testing::spawn::{RECORD_LEN, Record, Stage};
use nix::sys::signal::Signal;
use proptest::prelude::*;

/// `n` cases, unless `PROPTEST_CASES` says otherwise.
fn cases(n: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = n;
    }
    // Failures print the minimal input; no regression files in tests/.
    c.failure_persistence = None;
    c
}

/// Any string at all: every `char`, control characters, NUL and newlines
/// included (proptest's default `String` strategy is printable-only).
fn any_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

/// Arbitrary bytes read the way a file is read by a lenient reader.
fn lossy_text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(any::<u8>(), 0..max)
        .prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Text made of the pieces a parser looks for, in any order: much more
/// likely than random text to reach the parser's deeper branches.
fn tokens(pieces: &'static [&'static str], max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(pieces).prop_map(str::to_owned),
            2 => "[0-9]{1,25}",
            1 => any::<char>().prop_map(String::from),
        ],
        0..max,
    )
    .prop_map(|v| v.concat())
}

// ---------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------

const DURATION_PIECES: &[&str] = &[
    "", " ", "  ", "\t", "\n", ".", "..", "-", "+", "e", "E", "0", "1", "5", "9", "ns", "nsec",
    "us", "usec", "µs", "μs", "µ", "ms", "msec", "MS", "s", "sec", "secs", "second", "seconds",
    "m", "M", "min", "mins", "minute", "minutes", "Min", "h", "hr", "hrs", "hour", "hours", "d",
    "D", "day", "days", "w", "week", "weeks", "month", "months", "y", "year", "years", "x", "inf",
    "infinity", "INFINITY", "NaN",
];

/// Units as documented (systemd.time(7)), with their length in
/// nanoseconds; `""` is a bare number, seconds.
const UNITS: &[(&str, u128)] = &[
    ("ns", 1),
    ("nsec", 1),
    ("us", 1_000),
    ("usec", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("msec", 1_000_000),
    ("", 1_000_000_000),
    ("s", 1_000_000_000),
    ("sec", 1_000_000_000),
    ("second", 1_000_000_000),
    ("seconds", 1_000_000_000),
    ("m", 60_000_000_000),
    ("min", 60_000_000_000),
    ("minute", 60_000_000_000),
    ("minutes", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("hr", 3_600_000_000_000),
    ("hour", 3_600_000_000_000),
    ("hours", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
    ("day", 86_400_000_000_000),
    ("days", 86_400_000_000_000),
    ("w", 604_800_000_000_000),
    ("week", 604_800_000_000_000),
    ("weeks", 604_800_000_000_000),
    ("M", 2_629_800_000_000_000),
    ("month", 2_629_800_000_000_000),
    ("months", 2_629_800_000_000_000),
    ("y", 31_557_600_000_000_000),
    ("year", 31_557_600_000_000_000),
    ("years", 31_557_600_000_000_000),
];

/// Unit spellings that look plausible but are not systemd's.
const NOT_UNITS: &[&str] = &[
    "secs", "mins", "hrs", "D", "H", "S", "MS", "Min", "W", "Y", "mo", "yr", "yrs", "sek", "u",
];

fn nanos(d: Duration) -> u128 {
    d.as_nanos()
}

fn finite(text: &str) -> Duration {
    match duration::parse(text) {
        Ok(Dur::Finite(d)) => d,
        other => panic!("{text:?} should parse as a finite duration, got {other:?}"),
    }
}

/// Any duration up to the documented maximum.
fn any_duration() -> impl Strategy<Value = Duration> {
    (0..=duration::MAX.as_secs(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n))
}

proptest! {
    #![proptest_config(cases(1000))]

    /// No string makes the duration parser panic; an error is a non-empty
    /// message, on one line whenever the input was.
    #[test]
    fn duration_parse_never_panics(text in prop_oneof![any_text(48), tokens(DURATION_PIECES, 10)]) {
        match duration::parse(&text) {
            Ok(Dur::Finite(d)) => prop_assert!(d <= duration::MAX, "{text:?} gave {d:?}"),
            Ok(Dur::Infinite) => {}
            Err(e) => {
                prop_assert!(!e.trim().is_empty());
                if !text.contains(['\n', '\r']) {
                    prop_assert!(!e.contains('\n'), "{text:?}: {e:?}");
                }
            }
        }
    }

    /// Whatever `format_duration` prints parses back: exactly for whole
    /// milliseconds below a minute, whole microseconds below a millisecond
    /// and whole seconds from a minute on (the forms it prints without
    /// rounding); otherwise to within the precision it prints.
    #[test]
    fn format_duration_round_trips(d in any_duration()) {
        let text = format_duration(d);
        let back = finite(&text);
        let ns = nanos(d);
        let exact = if ns < 1_000_000 {
            ns.is_multiple_of(1_000)
        } else if ns < 60_000_000_000 {
            ns.is_multiple_of(1_000_000)
        } else {
            ns.is_multiple_of(1_000_000_000)
        };
        if exact {
            prop_assert_eq!(back, d, "{:?} printed as {:?}", d, text);
        } else {
            // Printed precision: 0.001 ms below 1 ms, 1 ms below a minute
            // (rounded), whole seconds (truncated) above.
            let tol: u128 = if ns < 1_000_000 {
                500
            } else if ns < 60_000_000_000 {
                500_000
            } else {
                1_000_000_000
            };
            let diff = nanos(back).abs_diff(ns);
            prop_assert!(diff <= tol, "{:?} printed as {:?} parsed as {:?}", d, text, back);
        }
    }

    /// Display of a parsed duration parses back to the same value (to the
    /// printed precision, as above).
    #[test]
    fn dur_display_parses_back(text in tokens(DURATION_PIECES, 8)) {
        if let Ok(d) = duration::parse(&text) {
            let shown = d.to_string();
            match (d, duration::parse(&shown)) {
                (Dur::Infinite, Ok(Dur::Infinite)) => {}
                (Dur::Finite(a), Ok(Dur::Finite(b))) => {
                    prop_assert!(nanos(a).abs_diff(nanos(b)) <= 1_000_000_000,
                        "{text:?} -> {a:?} shown {shown:?} -> {b:?}");
                }
                (a, b) => prop_assert!(false, "{text:?} -> {a:?} shown {shown:?} -> {b:?}"),
            }
        }
    }

    /// `N UNIT` in every documented unit (with or without whitespace
    /// between) is N times the unit, or "too large" past the maximum.
    #[test]
    fn duration_number_and_unit(
        n in prop_oneof![0u64..1000, 0u64..10_000_000_000],
        unit in prop::sample::select(UNITS),
        space in prop::sample::select(&["", " ", "\t"][..]),
        pad in prop::sample::select(&["", " ", "\n", " \t "][..]),
    ) {
        let (u, per) = unit;
        let space = if u.is_empty() { "" } else { space };
        let text = format!("{pad}{n}{space}{u}{pad}");
        let want = u128::from(n) * per;
        match duration::parse(&text) {
            Ok(Dur::Finite(d)) => prop_assert_eq!(nanos(d), want, "{:?}", text),
            Ok(Dur::Infinite) => prop_assert!(false, "{text:?} parsed as infinity"),
            Err(e) => {
                prop_assert!(want > nanos(duration::MAX), "{text:?} rejected: {e}");
                prop_assert!(e.contains("too large"), "{text:?}: {e}");
            }
        }
    }

    /// Units are case-sensitive and only systemd's: any other spelling is
    /// an error naming it, whatever number comes before.
    #[test]
    fn duration_unknown_units_are_rejected(
        n in 0u64..1000,
        unit in prop::sample::select(NOT_UNITS),
        space in prop::sample::select(&["", " "][..]),
    ) {
        let text = format!("{n}{space}{unit}");
        match duration::parse(&text) {
            Err(e) => prop_assert!(e.contains(&format!("unknown unit '{unit}'")), "{text:?}: {e}"),
            Ok(d) => prop_assert!(false, "{text:?} accepted as {d:?}"),
        }
    }

    /// A positive number never reads as zero: below one nanosecond in
    /// total it is refused; exponents are never accepted.
    #[test]
    fn duration_positive_is_never_zero(
        zeros in 0usize..20,
        digit in 1u8..10,
        unit in prop::sample::select(UNITS),
    ) {
        let (u, per) = unit;
        let text = format!("0.{}{digit}{u}", "0".repeat(zeros));
        let mut place = per;
        for _ in 0..=zeros {
            place /= 10;
        }
        match duration::parse(&text) {
            Ok(Dur::Finite(d)) => {
                prop_assert!(!d.is_zero(), "{text:?} read as 0");
                prop_assert_eq!(nanos(d), u128::from(digit) * place, "{:?}", text);
            }
            Ok(Dur::Infinite) => prop_assert!(false, "{text:?} parsed as infinity"),
            Err(e) => {
                prop_assert_eq!(place, 0, "{:?} rejected: {}", text, e);
                prop_assert!(e.contains("below 1ns"), "{text:?}: {e}");
            }
        }
        let exp = format!("{digit}e-{zeros}{u}");
        prop_assert!(duration::parse(&exp).is_err(), "{exp:?} accepted");
    }

    /// Decimal fractions are exact to the nanosecond (sub-nanosecond
    /// digits are dropped): `I.F` seconds, and `I.Fms`.
    #[test]
    fn duration_fractions_are_exact(int in 0u64..100_000, frac in "[0-9]{1,12}", ms in any::<bool>()) {
        let per: u128 = if ms { 1_000_000 } else { 1_000_000_000 };
        let text = format!("{int}.{frac}{}", if ms { "ms" } else { "" });
        let mut want = u128::from(int) * per;
        let mut place = per;
        for c in frac.bytes() {
            place /= 10;
            want += u128::from(c - b'0') * place;
        }
        prop_assert_eq!(nanos(finite(&text)), want, "{:?}", text);
    }

    /// Compound forms (`5min 20s`, `1h30m`) are the sum of their parts.
    #[test]
    fn duration_compound_is_the_sum(
        parts in prop::collection::vec((0u64..1000, prop::sample::select(UNITS)), 1..5),
        sep in prop::sample::select(&["", " ", "  "][..]),
    ) {
        // Two bare numbers without whitespace between would be one
        // number: give every part a unit.
        let parts: Vec<_> = parts.into_iter().filter(|(_, (u, _))| !u.is_empty()).collect();
        prop_assume!(!parts.is_empty());
        let text = parts.iter().map(|(n, (u, _))| format!("{n}{u}")).collect::<Vec<_>>().join(sep);
        let want: u128 = parts.iter().map(|(n, (_, per))| u128::from(*n) * per).sum();
        prop_assume!(want <= nanos(duration::MAX));
        prop_assert_eq!(nanos(finite(&text)), want, "{:?}", text);
    }

    /// Negative values are errors, whatever follows the sign.
    #[test]
    fn negative_durations_are_rejected(rest in tokens(DURATION_PIECES, 6), pad in "[ \t]{0,2}") {
        let text = format!("{pad}-{rest}");
        prop_assert!(duration::parse(&text).is_err(), "{text:?} accepted");
    }
}

#[test]
fn duration_infinity_only_as_systemd_writes_it() {
    for t in ["infinity", " infinity ", "\tinfinity\n"] {
        assert_eq!(duration::parse(t), Ok(Dur::Infinite), "{t:?}");
    }
    for t in [
        "INFINITY",
        "Infinity",
        "inf",
        " inf ",
        "InF",
        "infinity 5s",
        "5s infinity",
    ] {
        assert!(duration::parse(t).is_err(), "{t:?} accepted");
    }
    assert!(duration::parse(&format!("{}s", duration::MAX.as_secs() + 1)).is_err());
    assert_eq!(
        finite(&format!("{}s", duration::MAX.as_secs())),
        duration::MAX
    );
}

// ---------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(1000))]

    /// No string makes the signal parser panic; a successful parse is a
    /// real signal and an error is a one-line message.
    #[test]
    fn signal_parse_never_panics(text in prop_oneof![
        any_text(24),
        tokens(&["SIG", "sig", "TERM", "KILL", "HUP", "INT", "USR1", "RTMIN", "+", "-", " ", "0"], 5),
    ]) {
        match signal::parse(&text) {
            Ok(s) => prop_assert!(
                Signal::iterator().any(|x| x as i32 == s.number())
                    || (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&s.number())
            ),
            Err(e) => prop_assert!(!e.trim().is_empty()),
        }
    }

    /// A number parses iff it is a signal's number (real-time signals
    /// included), and then to that signal.
    #[test]
    fn signal_numbers(n in prop_oneof![0i64..70, any::<i64>()], pad in "[ \t]{0,2}") {
        let text = format!("{pad}{n}{pad}");
        let want = i32::try_from(n).ok().filter(|n| {
            Signal::try_from(*n).is_ok() || (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(n)
        });
        match (signal::parse(&text), want) {
            (Ok(s), Some(w)) => prop_assert_eq!(s.number(), w),
            (Err(_), None) => {}
            (got, want) => prop_assert!(false, "{text:?}: got {got:?}, want {want:?}"),
        }
    }

    /// Every signal by name, with or without `SIG`, in any case, and by
    /// number; its short name and its display parse back to it.
    #[test]
    fn signal_names_round_trip(
        sig in prop::sample::select(Signal::iterator().collect::<Vec<_>>()),
        prefix in any::<bool>(),
        case in prop::sample::select(&[0u8, 1, 2][..]),
    ) {
        let short = sig.as_str().strip_prefix("SIG").unwrap();
        let name = if prefix { format!("SIG{short}") } else { short.to_owned() };
        let name = match case {
            0 => name,
            1 => name.to_lowercase(),
            _ => name.chars().enumerate()
                .map(|(i, c)| if i % 2 == 0 { c.to_ascii_lowercase() } else { c })
                .collect(),
        };
        let parsed = signal::parse(&name).map_err(TestCaseError::fail)?;
        prop_assert_eq!(parsed.standard(), Some(sig));
        prop_assert_eq!(signal::parse(&parsed.name()).unwrap().standard(), Some(sig));
        prop_assert_eq!(signal::parse(&parsed.to_string()).unwrap().standard(), Some(sig));
        prop_assert_eq!(signal::parse(&parsed.number().to_string()).unwrap().standard(), Some(sig));
    }
}

// ---------------------------------------------------------------------------
// /proc/locks and fdinfo
// ---------------------------------------------------------------------------

/// A lock line as the kernel prints it (`lock_get_status` in fs/locks.c),
/// with the entry it must parse to.
fn lock_line() -> impl Strategy<Value = (String, LockEntry)> {
    (
        any::<u64>(),
        any::<bool>(),
        prop::sample::select(&["FLOCK", "POSIX", "OFDLCK", "LEASE", "DELEG", "UNKNOWN"][..]),
        prop::sample::select(&["ADVISORY", "MANDATORY", "ACTIVE", "BREAKING"][..]),
        any::<bool>(),
        prop_oneof![Just(-1i32), 0i32..5_000_000, any::<i32>()],
        (any::<u32>(), any::<u32>(), any::<u64>()),
        prop::sample::select(&["0 EOF", "0 99", "100 EOF", "5 18446744073709551615"][..]),
        prop::sample::select(&[" ", "  ", "\t", " \t "][..]),
        prop::sample::select(&["", " ", "  ", "\t"][..]),
    )
        .prop_map(
            |(id, waiter, kind, adv, excl, pid, (major, minor, inode), range, sep, indent)| {
                let arrow = if waiter { format!("->{sep}") } else { String::new() };
                let rw = if excl { "WRITE" } else { "READ" };
                let line = format!(
                    "{indent}{id}:{sep}{arrow}{kind}{sep}{adv}{sep}{rw}{sep}{pid}{sep}{major:02x}:{minor:02x}:{inode}{sep}{range}"
                );
                let kind = match kind {
                    "FLOCK" => LockKind::Flock,
                    "POSIX" => LockKind::Posix,
                    "OFDLCK" => LockKind::Ofd,
                    _ => LockKind::Other,
                };
                let entry = LockEntry {
                    id,
                    waiter,
                    kind,
                    exclusive: excl,
                    pid,
                    major,
                    minor,
                    inode,
                };
                (line, entry)
            },
        )
}

const LOCK_PIECES: &[&str] = &[
    "1:",
    "12:",
    ":",
    "->",
    " ",
    "  ",
    "\t",
    "FLOCK",
    "POSIX",
    "OFDLCK",
    "ADVISORY",
    "WRITE",
    "READ",
    "-1",
    "fd:01:1311",
    "08:",
    "ff",
    "zz",
    "EOF",
    "\n",
    "lock:",
    "pos:",
    "flags:",
    "ino:",
    "mnt_id:",
    "0100002",
    "é",
    "🔒",
];

proptest! {
    #![proptest_config(cases(1000))]

    /// No line makes `parse_lock_line` panic, nor any text `parse_locks`.
    #[test]
    fn lock_line_parse_never_panics(text in prop_oneof![any_text(80), lossy_text(80), tokens(LOCK_PIECES, 14)]) {
        let _ = procfs::parse_lock_line(&text);
        let all = procfs::parse_locks(&text);
        prop_assert!(all.len() <= text.lines().count());
    }

    /// Every line the kernel can print parses to exactly its fields.
    #[test]
    fn lock_line_parses_what_the_kernel_prints((line, want) in lock_line()) {
        prop_assert_eq!(procfs::parse_lock_line(&line), Some(want), "{:?}", line);
    }

    /// Truncating a good line anywhere never panics, and never yields an
    /// entry with fields the line did not have in full (a truncated pid or
    /// inode would name the wrong process or file).
    #[test]
    fn truncated_lock_lines((line, want) in lock_line(), cut in any::<prop::sample::Index>()) {
        let cut = cut.index(line.len() + 1);
        prop_assume!(line.is_char_boundary(cut));
        if let Some(got) = procfs::parse_lock_line(&line[..cut]) {
            // Only the trailing range may be missing: the prefix up to the
            // inode parsed, so it is the whole inode or a prefix of it.
            prop_assert_eq!((got.id, got.waiter, got.kind, got.exclusive, got.pid, got.major, got.minor),
                (want.id, want.waiter, want.kind, want.exclusive, want.pid, want.major, want.minor));
            prop_assert!(want.inode.to_string().starts_with(&got.inode.to_string()));
        }
    }

    /// `/proc/locks` text: good lines in order, garbage lines skipped.
    #[test]
    fn parse_locks_keeps_good_lines_in_order(
        lines in prop::collection::vec(prop_oneof![
            3 => lock_line().prop_map(|(l, e)| (l, Some(e))),
            1 => "[a-zA-Z ]{0,30}".prop_map(|g| (format!("x{g}"), None)),
        ], 0..20),
        crlf in any::<bool>(),
    ) {
        let nl = if crlf { "\r\n" } else { "\n" };
        let text: String = lines.iter().map(|(l, _)| format!("{l}{nl}")).collect();
        let want: Vec<LockEntry> = lines.into_iter().filter_map(|(_, e)| e).collect();
        prop_assert_eq!(procfs::parse_locks(&text), want);
    }

    /// No text makes `parse_fdinfo` panic.
    #[test]
    fn fdinfo_parse_never_panics(text in prop_oneof![any_text(120), lossy_text(120), tokens(LOCK_PIECES, 24)]) {
        let info = procfs::parse_fdinfo(&text);
        prop_assert!(info.locks.len() <= text.matches("lock").count());
    }

    /// fdinfo as the kernel prints it: the fields and every `lock:` line,
    /// in order, among keys of other descriptor kinds.
    #[test]
    fn fdinfo_parses_what_the_kernel_prints(
        pos in any::<u64>(),
        flags in any::<u32>(),
        mnt_id in any::<u64>(),
        ino in any::<u64>(),
        locks in prop::collection::vec(lock_line(), 0..4),
        extra in prop::sample::select(&["", "eventfd-count:  0\n", "inotify wd:1 ino:9a0f52 sdev:fe00000\n", "tfd:        5 events:       19 data:  5\n"][..]),
    ) {
        let mut text = format!("pos:\t{pos}\nflags:\t0{flags:o}\nmnt_id:\t{mnt_id}\nino:\t{ino}\n");
        for (l, _) in &locks {
            text.push_str(&format!("lock:\t{}\n", l.trim_start()));
        }
        text.push_str(extra);
        let info = procfs::parse_fdinfo(&text);
        prop_assert_eq!(info.pos, Some(pos));
        prop_assert_eq!(info.flags, Some(flags));
        prop_assert_eq!(info.mnt_id, Some(mnt_id));
        prop_assert_eq!(info.ino, Some(ino));
        let want: Vec<LockEntry> = locks.into_iter().map(|(_, e)| e).collect();
        prop_assert_eq!(info.locks, want);
    }
}

// ---------------------------------------------------------------------------
// Lock file metadata
// ---------------------------------------------------------------------------

fn opt_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(any_text(40))
}

fn metadata() -> impl Strategy<Value = Metadata> {
    (
        (
            any::<u32>(),
            any::<i32>(),
            any::<i32>(),
            any_text(30),
            any::<u64>(),
            any::<i32>(),
            any::<u64>(),
        ),
        (
            any_text(40),
            opt_text(),
            opt_text(),
            prop::collection::vec(any_text(20), 0..6),
            any_text(30),
            opt_text(),
        ),
        (
            prop::option::of(any::<u64>()),
            prop::option::of(any::<u64>()),
            any_text(20),
            opt_text(),
            opt_text(),
            prop::option::of(any::<u64>()),
        ),
    )
        .prop_map(
            |(
                (v, pid, pgid, created_at, starttime, supervisor_pid, supervisor_starttime),
                (attempt_id, session, session_key, command, acquired_at, deadline),
                (timeout_ms, grace_ms, host, last_heartbeat, status, watchdog_ms),
            )| Metadata {
                v,
                pid,
                pgid,
                created_at,
                starttime,
                supervisor_pid,
                supervisor_starttime,
                attempt_id,
                session,
                session_key,
                command,
                acquired_at,
                deadline,
                timeout_ms,
                grace_ms,
                host,
                last_heartbeat,
                status,
                watchdog_ms,
                guardian_pid: (pid % 2 == 0).then_some(supervisor_pid),
                fence: (pid % 3 != 0).then_some(starttime),
            },
        )
}

const META_PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ":",
    ",",
    "\n",
    "null",
    "true",
    "-1",
    "1e99",
    "\"v\"",
    "\"pid\"",
    "\"pgid\"",
    "\"createdAt\"",
    "\"created_at\"",
    "\"command\"",
    "\"deadline\"",
    "\\u0000",
    "\\ud800",
    "18446744073709551616",
];

proptest! {
    #![proptest_config(cases(512))]

    /// No text makes `Metadata::parse` panic.
    #[test]
    fn metadata_parse_never_panics(text in prop_oneof![any_text(200), lossy_text(200), tokens(META_PIECES, 30)]) {
        let _ = Metadata::parse(&text);
    }

    /// What the supervisor writes (one JSON line) parses back to the same
    /// value, whatever the strings hold (newlines, NUL, any Unicode), and
    /// whatever follows the first line in the file.
    #[test]
    fn metadata_round_trips(m in metadata(), tail in prop_oneof![Just(String::new()), any_text(40)]) {
        let line = serde_json::to_string(&m).unwrap();
        prop_assert!(!line.contains('\n'), "metadata must be one line: {:?}", line);
        prop_assert!(line.contains("\"createdAt\":"));
        prop_assert_eq!(Metadata::parse(&line), Some(m.clone()));
        let file = format!("{line}\n{tail}");
        prop_assert_eq!(Metadata::parse(&file), Some(m.clone()));
        // A line cut short (a torn read) is no metadata, never a wrong one.
        let cut = line.len() / 2;
        if line.is_char_boundary(cut) {
            prop_assert_eq!(Metadata::parse(&line[..cut]), None);
        }
    }
}

#[test]
fn metadata_version_is_one() {
    assert_eq!(METADATA_VERSION, 1);
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

const CONFIG_PIECES: &[&str] = &[
    "[run]",
    "[[policy]]",
    "[status]",
    "[serve]",
    "[run.x]",
    "[[run]]",
    "\n",
    " ",
    "=",
    " = ",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    "#",
    "[",
    "]",
    "{",
    "}",
    ",",
    ".",
    "timeout",
    "grace",
    "wait",
    "signal",
    "final_signal",
    "file_mode",
    "conflict_exit_code",
    "match",
    "roots",
    "\"10m\"",
    "\"TERM\"",
    "\"0600\"",
    "0o600",
    "0x1ff",
    "600",
    "-1",
    "1.5",
    "inf",
    "nan",
    "1e400",
    "true",
    "\"/a/**\"",
    "\"rel/*\"",
    "[\"/r\"]",
    "9223372036854775808",
    "\\u0000",
    "\r",
    "é",
];

fn config_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(
            &[
                "\"10m\"",
                "\"5min 20s\"",
                "\"infinity\"",
                "0",
                "1.5",
                "-3",
                "\"-1s\"",
                "\"1e9\"",
                "\"TERM\"",
                "\"SIGKILL\"",
                "15",
                "99",
                "\"FOO\"",
                "0o600",
                "0o7777",
                "0o10000",
                "\"0640\"",
                "\"0o644\"",
                "\"8\"",
                "600",
                "75",
                "256",
                "-1",
                "9223372036854775807",
                "true",
                "[]",
                "{}",
                "nan",
                "inf",
                "-inf",
                "1e400",
                "\"\"",
                "\"/srv/**/x-*.json\"",
                "\"**\"",
                "\"rel\"",
                "\"/a[\"",
                "[\"/r\", \"s\"]",
                "[1]",
                "\"\\u00e9\"",
            ][..]
        )
        .prop_map(str::to_owned),
        any::<i64>().prop_map(|n| n.to_string()),
        "\"[ -~]{0,12}\"".prop_map(|s| s.replace('\\', "")),
    ]
}

fn config_key() -> impl Strategy<Value = &'static str> {
    prop::sample::select(
        &[
            "timeout",
            "grace",
            "wait",
            "signal",
            "final_signal",
            "file_mode",
            "conflict_exit_code",
            "match",
            "roots",
            "bogus",
            "Timeout",
        ][..],
    )
}

/// TOML-ish files: sections and `key = value` lines from the real
/// vocabulary, valid and invalid values mixed, with comments and blank
/// lines.
fn tomlish() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            2 => prop::sample::select(&["[run]", "[[policy]]", "[status]", "[serve]", "[[run]]", "[run"][..])
                .prop_map(|s| format!("{s}\n")),
            6 => (config_key(), config_value(), prop::sample::select(&["", " # c", "  "][..]))
                .prop_map(|(k, v, c)| format!("{k} = {v}{c}\n")),
            1 => Just("\n".to_owned()),
            1 => Just("# comment\n".to_owned()),
            1 => any_text(10),
        ],
        0..12,
    )
    .prop_map(|v| v.concat())
}

/// Check an error from `Config::parse(text, path)`: one line,
/// `PATH:LINE:COL: message` with LINE and COL inside the text.
fn check_config_error(text: &str, path: &Path, msg: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        !msg.contains('\n') && !msg.contains('\r'),
        "not one line: {msg:?}"
    );
    let prefix = format!("{}:", path.display());
    let rest = msg
        .strip_prefix(&prefix)
        .ok_or_else(|| TestCaseError::fail(format!("does not start with the path: {msg:?}")))?;
    let mut it = rest.splitn(3, ':');
    let (line, col, tail) = (it.next(), it.next(), it.next());
    let line: usize = line
        .and_then(|l| l.parse().ok())
        .ok_or_else(|| TestCaseError::fail(format!("no :LINE:COL: in {msg:?} for {text:?}")))?;
    let col: usize = col
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| TestCaseError::fail(format!("no :LINE:COL: in {msg:?} for {text:?}")))?;
    prop_assert!(
        tail.is_some_and(|t| t.starts_with(' ') && !t.trim().is_empty()),
        "no message after :LINE:COL: in {msg:?}"
    );
    let lines = text.split('\n').count();
    prop_assert!(
        line >= 1 && line <= lines,
        "line {line} outside 1..={lines}: {msg:?} for {text:?}"
    );
    let width = text.split('\n').nth(line - 1).unwrap_or("").chars().count();
    prop_assert!(
        col >= 1 && col <= width + 1,
        "column {col} outside 1..={} on line {line}: {msg:?} for {text:?}",
        width + 1
    );
    Ok(())
}

proptest! {
    #![proptest_config(cases(1000))]

    /// No file makes the config parser panic; every error is one line
    /// naming the file, the line and the column.
    #[test]
    fn config_parse_never_panics_and_errors_have_a_position(
        text in prop_oneof![2 => tomlish(), 1 => any_text(80), 1 => tokens(CONFIG_PIECES, 20)],
    ) {
        let path = Path::new("/etc/locksup/config.toml");
        if let Err(e) = Config::parse(&text, path) {
            prop_assert_eq!(e.code(), 125);
            check_config_error(&text, path, e.message())?;
        }
    }

    /// Valid `[run]` files parse to what they say.
    #[test]
    fn config_valid_run_section_round_trips(
        timeout_ms in prop::option::of(0u64..10_000_000),
        grace_s in prop::option::of(0u64..100_000),
        wait_inf in prop::option::of(any::<bool>()),
        sig in prop::option::of(prop::sample::select(Signal::iterator().collect::<Vec<_>>())),
        sig_num in any::<bool>(),
        mode in prop::option::of(0u32..=MAX_FILE_MODE),
        mode_str in any::<bool>(),
        code in prop::option::of(0i32..=255),
        roots in prop::collection::vec("/[a-z]{1,8}(/[a-z]{1,8}){0,2}", 0..3),
    ) {
        let mut text = String::from("# generated\n[run]\n");
        if let Some(t) = timeout_ms {
            text.push_str(&format!("timeout = \"{t}ms\"\n"));
        }
        if let Some(g) = grace_s {
            text.push_str(&format!("grace = {g}\n"));
        }
        if let Some(w) = wait_inf {
            text.push_str(if w { "wait = \"infinity\"\n" } else { "wait = \"1h 30min\"\n" });
        }
        if let Some(s) = sig {
            if sig_num {
                text.push_str(&format!("signal = {}\n", s as i32));
            } else {
                text.push_str(&format!("signal = \"{}\"\n", s.as_str()));
            }
        }
        if let Some(m) = mode {
            if mode_str {
                text.push_str(&format!("file_mode = \"{m:o}\"\n"));
            } else {
                text.push_str(&format!("file_mode = 0o{m:o}\n"));
            }
        }
        if let Some(c) = code {
            text.push_str(&format!("conflict_exit_code = {c}\n"));
        }
        text.push_str("[status]\nroots = [");
        text.push_str(&roots.iter().map(|r| format!("\"{r}\"")).collect::<Vec<_>>().join(", "));
        text.push_str("]\n");
        let path = Path::new("/x/c.toml");
        let c = Config::parse(&text, path).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert_eq!(c.run.timeout, timeout_ms.map(|t| Dur::Finite(Duration::from_millis(t))));
        prop_assert_eq!(c.run.grace, grace_s.map(|g| Dur::Finite(Duration::from_secs(g))));
        prop_assert_eq!(c.run.wait, wait_inf.map(|w| if w {
            Dur::Infinite
        } else {
            Dur::Finite(Duration::from_secs(5400))
        }));
        prop_assert_eq!(c.run.signal.and_then(|s| s.standard()), sig);
        prop_assert_eq!(c.run.file_mode, mode);
        prop_assert_eq!(c.run.conflict_exit_code, code);
        let want: Vec<std::path::PathBuf> = roots.iter().map(Into::into).collect();
        prop_assert_eq!(&c.status.roots, &want);
        prop_assert_eq!(c.path.as_deref(), Some(path));
    }

    /// `line_col` accepts any offset, inside the text or not.
    #[test]
    fn config_line_col_never_panics(text in any_text(60), off in any::<usize>()) {
        let (line, col) = locksup::testing::config::line_col(&text, off);
        prop_assert!(line >= 1 && line <= text.split('\n').count());
        prop_assert!(col >= 1);
    }
}

// ---------------------------------------------------------------------------
// Status records from the attempt's first process
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(1000))]

    /// Any 17 bytes decode without panicking: to the record their tag
    /// says, with both little-endian words, or to nothing. Unknown stage
    /// codes may name stages added since (see below).
    #[test]
    fn record_decode_any_bytes(
        bytes in prop_oneof![
            any::<[u8; RECORD_LEN]>(),
            (prop::sample::select(&[b'W', b'B', b'L', b'N', b'P', b'E', 0u8, b'w'][..]), 0u64..8, any::<u64>())
                .prop_map(|(tag, a, b)| {
                    let mut r = [0u8; RECORD_LEN];
                    r[0] = tag;
                    r[1..9].copy_from_slice(&a.to_le_bytes());
                    r[9..].copy_from_slice(&b.to_le_bytes());
                    r
                }),
        ],
    ) {
        let a = u64::from_le_bytes(bytes[1..9].try_into().unwrap());
        let b = u64::from_le_bytes(bytes[9..17].try_into().unwrap());
        let want = match bytes[0] {
            b'W' => Some(Record::Waiting(a, b)),
            b'B' => Some(Record::Busy(a, b)),
            b'L' => Some(Record::Locked(a, b)),
            b'N' => Some(Record::LockedNew(a, b)),
            b'P' => Some(Record::PredecessorDied),
            b'E' => match a {
                1 => Some(Record::Failed(Stage::Setup, b)),
                2 => Some(Record::Failed(Stage::Open, b)),
                3 => Some(Record::Failed(Stage::NotRegular, b)),
                4 => Some(Record::Failed(Stage::Flock, b)),
                5 => Some(Record::Failed(Stage::Exec, b)),
                6 => Some(Record::Failed(Stage::HardLinks, b)),
                _ => {
                    // A stage added later may use another code: it must
                    // be a new stage (never one of the five above) and
                    // carry the value unchanged; or the record is garbage.
                    let known = [Stage::Setup, Stage::Open, Stage::NotRegular, Stage::Flock, Stage::Exec];
                    match Record::decode(&bytes) {
                        None => {}
                        Some(Record::Failed(stage, v)) => {
                            prop_assert!(!known.contains(&stage), "code {a} decoded as {stage:?}");
                            prop_assert_eq!(v, b);
                        }
                        Some(other) => prop_assert!(false, "code {a} decoded as {other:?}"),
                    }
                    return Ok(());
                }
            },
            _ => None,
        };
        prop_assert_eq!(Record::decode(&bytes), want);
    }

    /// The go-ahead is `g` plus a fixed-size block of NUL-ended
    /// `KEY=VALUE` entries, whatever the values: those that fit are there
    /// in order, the others are named as left out.
    #[test]
    fn go_ahead_is_fixed_size(values in prop::collection::vec(any_text(700), 0..6)) {
        use locksup::testing::spawn::{LATE_LEN, go_ahead};
        let vars: Vec<(&str, String)> = values.iter().map(|v| ("LOCKSUP_X", v.clone())).collect();
        let (msg, left_out) = go_ahead(&vars);
        prop_assert_eq!(msg[0], b'g');
        prop_assert_eq!(msg.len(), 1 + LATE_LEN);
        prop_assert_eq!(msg[LATE_LEN], 0);
        let block = &msg[1..];
        let entries: Vec<&[u8]> = block
            .split(|b| *b == 0)
            .take_while(|e| !e.is_empty())
            .collect();
        prop_assert_eq!(entries.len() + left_out.len(), values.len());
        let kept: Vec<&String> = values
            .iter()
            .filter(|v| entries.iter().any(|e| *e == format!("LOCKSUP_X={v}").as_bytes()))
            .collect();
        prop_assert_eq!(kept.len(), entries.len());
    }
}

// ---------------------------------------------------------------------------
// Errors and lock paths
// ---------------------------------------------------------------------------

proptest! {
    #![proptest_config(cases(512))]

    /// Every error locksup prints is one line, whatever its source said.
    #[test]
    fn errors_are_one_line(msg in any_text(80), code in any::<i32>()) {
        let e = locksup::testing::error::Error::with_code(code, msg.clone());
        prop_assert_eq!(e.code(), code);
        prop_assert!(!e.message().contains(['\n', '\r', '\u{b}', '\u{c}', '\u{85}', '\u{2028}', '\u{2029}']),
            "{:?}", e.message());
        prop_assert_eq!(e.message().trim(), e.message());
    }

    /// The lock file of a session is its sidecar `SESSION.lock`, in the
    /// same directory (README.md, "Using it").
    #[test]
    fn session_lock_is_a_sidecar(dir in "(/[a-zA-Z0-9._ -]{1,12}){0,4}", name in "[a-zA-Z0-9_-][a-zA-Z0-9._-]{0,19}") {
        let session = std::path::PathBuf::from(format!("{dir}/{name}"));
        let lock = locksup::testing::lockfile::lock_path_for_session(&session);
        prop_assert_eq!(lock.parent(), session.parent());
        prop_assert_eq!(lock.file_name().unwrap().to_str().unwrap(), format!("{name}.lock"));
    }
}
