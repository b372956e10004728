//! Chaos suite: many attempts with random misbehaviour, several sessions in
//! parallel with contention, and the invariants checked after every one.
//!
//! Each attempt is a `sh` script built from random parts: the main process
//! exits early (own code), crashes with SIGSEGV, sleeps, stops itself,
//! spins on the CPU, closes the lock descriptor early or exits from a TERM
//! trap, with or without ignoring TERM; it starts up to three children that
//! inherit the lock (plain background jobs, `setsid` escapees, double-forked
//! daemons), which ignore TERM or not, stop themselves, tick into the
//! session's JSONL file, and hold the output pipes open or not. Timeouts
//! and graces are short and random; some attempts are cancelled (TERM to
//! the supervisor, once or twice, also while waiting for the lock), some
//! supervisors are killed with SIGKILL, some attempts may not wait for a
//! busy lock.
//!
//! After every attempt:
//! - the exit code is the documented one (own code, 124, 137, 128+N, 75 or
//!   the conflict code, 126/127), computed from what the attempt did;
//! - it ended by `timeout + grace + slack` after acquiring the lock (and by
//!   `grace + slack` after the command exited, for cleanups);
//! - no process of the attempt survives it (the PIDs the script records,
//!   and every process whose environment carries its attempt id);
//! - the kernel no longer names its first process as a holder, and no
//!   `leak` event was reported;
//! - after a `kill -9` of the supervisor, the first process is dead; the
//!   processes left holding the lock are shown as `orphan` by
//!   `locksup status`, and are then killed by PID.
//!
//! At the end each session's JSONL file (written only under the lock) must
//! have every attempt's records in one contiguous block, and every lock is
//! free.
//!
//! Environment: `LOCKSUP_CHAOS_SEED` (decimal or 0x-hex; random otherwise,
//! always printed), `LOCKSUP_CHAOS_ATTEMPTS` (default 300),
//! `LOCKSUP_CHAOS_WORKERS` (parallel attempts, default 6),
//! `LOCKSUP_CHAOS_SESSIONS` (default 3), `LOCKSUP_CHAOS_ONLY=N` (run only
//! attempt N of the seed, alone), `LOCKSUP_CHAOS_SLACK_MS` (default 1000).
//! Run with `--nocapture` to see the figures.

// These tests call libc directly to build hostile situations.
#![allow(unsafe_code)]
// Test code converts small, known values (PIDs, frame lengths, times).
#![allow(clippy::cast_possible_truncation)]

#[macro_use]
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use common::*;
use locksup::testing::lockfile::file_id;
use locksup::testing::procfs;

// ---------------------------------------------------------------------------
// A small seeded PRNG (SplitMix64): every attempt's plan is a function of
// the seed and its index alone, whatever the scheduling.
// ---------------------------------------------------------------------------

struct Rng(u64);

impl Rng {
    fn for_attempt(seed: u64, i: usize) -> Rng {
        let mut r = Rng(seed ^ (i as u64).wrapping_mul(0xA076_1D64_78BD_642F));
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

// ---------------------------------------------------------------------------
// The plan of one attempt
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Main {
    /// Exits by itself with this code after `work` ms.
    Exit(i32),
    /// Crashes with SIGSEGV after `work` ms (139).
    Segv,
    /// `exec sleep`: runs until signalled.
    Sleep,
    /// Stops itself (SIGSTOP), then sleeps.
    Stop,
    /// Spins on the CPU.
    Spin,
    /// Writes its end record, closes the lock descriptor, then sleeps.
    CloseFd,
    /// Exits with 7 from a TERM trap, after writing its end record.
    TrapExit,
    /// The command does not exist (127).
    NotFound,
    /// The command is not executable (126).
    NotExec,
}

impl Main {
    fn exits_early(self) -> bool {
        matches!(self, Main::Exit(_) | Main::Segv)
    }
    fn runs(self) -> bool {
        !matches!(self, Main::NotFound | Main::NotExec)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChildKind {
    /// `sh -c ... &`: inherits the lock and the process group.
    Inherit,
    /// `setsid sh -c ... &`: its own session and group.
    Setsid,
    /// `( sh -c ... & )`: double-forked, re-parented.
    Double,
    /// `( setsid sh -c ... & )`: both.
    SetsidDouble,
}

#[derive(Debug, Clone, Copy)]
struct Child {
    kind: ChildKind,
    ignore_term: bool,
    ticker: bool,
    stop: bool,
    /// Keeps locksup's stdout and stderr open (else /dev/null).
    holds_pipes: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Long,
    No,
    Short(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Disrupt {
    None,
    /// TERM to the supervisor this many ms after `started`; twice if set.
    Cancel(u64, bool),
    /// TERM to the supervisor as soon as it waits for the lock (or starts).
    CancelWaiting,
    /// SIGKILL to the supervisor this many ms after `started`.
    Kill9(u64),
    /// SIGKILL to the supervisor this many ms after it was spawned.
    Kill9Early(u64),
    /// SIGKILL to both the inner supervisor and the guardian (the locksup
    /// started) this many ms after `started`: only then may orphans stay.
    Kill9Both(u64),
}

#[derive(Debug, Clone)]
struct Plan {
    index: usize,
    session: usize,
    timeout_ms: u64,
    grace_ms: u64,
    wait: Wait,
    conflict_code: Option<i32>,
    preserve: bool,
    main: Main,
    main_ignores: bool,
    work_ms: u64,
    children: Vec<Child>,
    disrupt: Disrupt,
}

impl Plan {
    fn new(seed: u64, index: usize, sessions: usize) -> Plan {
        let mut r = Rng::for_attempt(seed, index);
        let session = r.below(sessions as u64) as usize;
        let main = match r.below(100) {
            0..=17 => Main::Exit(r.pick(&[0, 1, 3, 42, 99, 120, 200, 255])),
            18..=24 => Main::Segv,
            25..=39 => Main::Sleep,
            40..=49 => Main::Stop,
            50..=59 => Main::Spin,
            60..=73 => Main::CloseFd,
            74..=85 => Main::TrapExit,
            86..=92 => Main::NotFound,
            _ => Main::NotExec,
        };
        let disrupt = if !main.runs() {
            Disrupt::None
        } else {
            match r.below(100) {
                0..=49 => Disrupt::None,
                50..=59 if !main.exits_early() => Disrupt::Cancel(r.below(300), false),
                60..=64 if !main.exits_early() => Disrupt::Cancel(r.below(300), true),
                65..=72 => Disrupt::CancelWaiting,
                73..=87 => Disrupt::Kill9(r.below(700)),
                88..=92 => Disrupt::Kill9Early(r.below(60)),
                93..=95 => Disrupt::Kill9Both(r.below(700)),
                _ => Disrupt::None,
            }
        };
        // Deadlines far from what must happen before them keep the
        // expected code exact: an early exit or a cancel always comes
        // first.
        let timeout_ms = if main.exits_early()
            || matches!(disrupt, Disrupt::Cancel(..) | Disrupt::CancelWaiting)
        {
            2000
        } else {
            r.pick(&[100, 150, 250, 400, 600])
        };
        let grace_ms = r.pick(&[0, 10, 30, 80, 150, 300, 500]);
        let wait = match r.below(100) {
            0..=74 => Wait::Long,
            75..=87 => Wait::No,
            _ => Wait::Short(r.pick(&[10, 50, 200])),
        };
        let conflict_code = if r.chance(30) {
            Some(r.pick(&[1, 90, 111, 200]))
        } else {
            None
        };
        let preserve = r.chance(15);
        let main_ignores = matches!(
            main,
            Main::Sleep | Main::Stop | Main::Spin | Main::CloseFd | Main::Exit(_)
        ) && r.chance(35);
        let work_ms = r.pick(&[0, 0, 10, 50, 150]);
        let n = if main.runs() { r.below(4) } else { 0 };
        let children = (0..n)
            .map(|_| {
                let kind = r.pick(&[
                    ChildKind::Inherit,
                    ChildKind::Setsid,
                    ChildKind::Double,
                    ChildKind::SetsidDouble,
                ]);
                let ticker = r.chance(30);
                Child {
                    kind,
                    // An ignored TERM is inherited and cannot be reset by sh.
                    ignore_term: main_ignores || r.chance(40),
                    ticker,
                    stop: !ticker && r.chance(12),
                    holds_pipes: r.chance(50),
                }
            })
            .collect();
        Plan {
            index,
            session,
            timeout_ms,
            grace_ms,
            wait,
            conflict_code,
            preserve,
            main,
            main_ignores,
            work_ms,
            children,
            disrupt,
        }
    }

    fn conflict_code(&self) -> i32 {
        self.conflict_code.unwrap_or(75)
    }
}

/// Shell prelude: the files, and `rec EV` appending one JSON record for
/// this attempt to the session's JSONL file (a single `write` with
/// `O_APPEND`).
const PRELUDE: &str = r#"P=$CHAOS_P; J=$CHAOS_J; A=$CHAOS_A
rec() { echo "{\"a\":$A,\"ev\":\"$1\",\"p\":$$}" >> "$J"; }
"#;

fn sleep_ms(ms: u64) -> String {
    format!("sleep {}.{:03}\n", ms / 1000, ms % 1000)
}

fn child_script(name: &str, c: &Child) -> String {
    let mut s = String::from(PRELUDE);
    if c.ignore_term {
        s.push_str("trap '' TERM\n");
    }
    // `ready` is written after the trap: present means TERM was ignored.
    let _ = writeln!(s, "echo \"ready {name} $$\" >> \"$P\"");
    if c.ticker {
        s.push_str("while :; do rec tick; sleep 0.02; done\n");
    } else if c.stop {
        s.push_str("kill -STOP $$\nexec sleep 1000\n");
    } else {
        s.push_str("exec sleep 1000\n");
    }
    s
}

fn main_script(p: &Plan) -> String {
    let mut s = String::from(PRELUDE);
    // The start record first: every attempt's block in the JSONL file
    // begins with it (a TERM trap may write `end` at any time after).
    s.push_str("rec start\n");
    if p.main_ignores {
        s.push_str("trap '' TERM\n");
    }
    if p.main == Main::TrapExit {
        s.push_str("trap 'rec end; exit 7' TERM\n");
    }
    // Right after the traps: its presence says they were in place.
    s.push_str("echo \"main main $$\" >> \"$P\"\n");
    for (i, c) in p.children.iter().enumerate() {
        let name = format!("c{i}");
        let redirect = if c.holds_pipes {
            ""
        } else {
            " >/dev/null 2>&1"
        };
        let var = format!("\"$CHAOS_C{i}\" {name}{redirect}");
        match c.kind {
            ChildKind::Inherit => {
                let _ = writeln!(s, "sh -c {var} &\necho \"spawned {name} $!\" >> \"$P\"");
            }
            ChildKind::Setsid => {
                let _ = writeln!(
                    s,
                    "setsid sh -c {var} &\necho \"spawned {name} $!\" >> \"$P\""
                );
            }
            ChildKind::Double => {
                let _ = writeln!(s, "( sh -c {var} & )");
            }
            ChildKind::SetsidDouble => {
                let _ = writeln!(s, "( setsid sh -c {var} & )");
            }
        }
    }
    s.push_str("echo \"ready main $$\" >> \"$P\"\n");
    match p.main {
        Main::Exit(code) => {
            if p.work_ms > 0 {
                s.push_str(&sleep_ms(p.work_ms));
            }
            let _ = writeln!(s, "rec end\nexit {code}");
        }
        Main::Segv => {
            if p.work_ms > 0 {
                s.push_str(&sleep_ms(p.work_ms));
            }
            s.push_str("rec end\nulimit -c 0\nkill -SEGV $$\nsleep 1000\n");
        }
        Main::Sleep => s.push_str("exec sleep 1000\n"),
        Main::Stop => s.push_str("kill -STOP $$\nexec sleep 1000\n"),
        Main::Spin => s.push_str("while :; do :; done\n"),
        Main::CloseFd => s.push_str(
            "rec end\n\
             case $LOCKSUP_LOCK_FD in\n\
             [0-9]) eval \"exec $LOCKSUP_LOCK_FD>&-\"; echo \"closed main $$\" >> \"$P\";;\n\
             *) echo \"noclose main $$\" >> \"$P\";;\n\
             esac\n\
             exec sleep 1000\n",
        ),
        Main::TrapExit => s.push_str(
            "sleep 1000 &\necho \"spawned sleeper $!\" >> \"$P\"\nwhile :; do wait; done\n",
        ),
        Main::NotFound | Main::NotExec => {}
    }
    s
}

// ---------------------------------------------------------------------------
// Observing an attempt
// ---------------------------------------------------------------------------

/// The `WORD NAME PID` lines the attempt's scripts recorded.
#[derive(Debug, Default)]
struct Recorded {
    /// NAME -> PID, from `main`, `spawned` and `ready` lines.
    pids: BTreeMap<String, i32>,
    /// Names whose `ready` line is there.
    ready: BTreeSet<String>,
    lines: Vec<String>,
}

fn read_recorded(path: &Path) -> Recorded {
    let mut r = Recorded::default();
    let text = fs::read_to_string(path).unwrap_or_default();
    for line in text.lines() {
        r.lines.push(line.to_owned());
        let mut it = line.split_whitespace();
        let (Some(word), Some(name), Some(pid)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let Ok(pid) = pid.parse::<i32>() else {
            continue;
        };
        if word == "ready" {
            r.ready.insert(name.to_owned());
        }
        // A double fork's `ready` PID is the real one; `spawned` is the
        // same process for the others.
        r.pids.insert(format!("{word}:{name}"), pid);
    }
    r
}

/// Every live process whose environment carries `LOCKSUP_ATTEMPT_ID=id`.
fn processes_with_attempt_id(id: &str) -> Vec<i32> {
    let needle = format!("LOCKSUP_ATTEMPT_ID={id}");
    let me = std::process::id() as i32;
    procfs::pids()
        .into_iter()
        .filter(|&p| p != me && pid_alive(p))
        .filter(|&p| {
            fs::read(format!("/proc/{p}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|e| e == needle.as_bytes()))
        })
        .collect()
}

/// Reap zombies re-parented to this process (a child subreaper) that are
/// not supervisors (those are reaped by their `Child`).
fn reap_orphans() {
    for pid in procfs::children(std::process::id() as i32) {
        if proc_state(pid) == Some('Z')
            && fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim_end() != "locksup")
        {
            // SAFETY: plain syscall on a zombie child of ours.
            unsafe {
                libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
            }
        }
    }
}

fn kill_pid(pid: i32, sig: i32) {
    // SAFETY: plain syscall.
    unsafe {
        libc::kill(pid, sig);
    }
}

#[derive(Debug, Default)]
struct Events {
    list: Vec<serde_json::Value>,
    other: Vec<String>,
}

impl Events {
    fn take(&mut self, line: String) {
        match serde_json::from_str::<serde_json::Value>(&line) {
            Ok(v) if v.get("event").is_some() => self.list.push(v),
            _ => self.other.push(line),
        }
    }
    fn has(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
    fn get(&self, name: &str) -> Option<&serde_json::Value> {
        self.list.iter().find(|e| e["event"] == name)
    }
    fn ts(&self, name: &str) -> Option<SystemTime> {
        self.get(name)
            .and_then(|e| e["ts"].as_str())
            .map(common::rfc3339)
    }
}

/// Let `ms` pass, or less if the supervisor exits meanwhile; whether it
/// still runs.
fn pause(r: &mut Running, ms: u64) -> bool {
    let end = Instant::now() + Duration::from_millis(ms);
    while Instant::now() < end {
        if !r.running() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    r.running()
}

/// Read stderr lines into `ev` until an event in `names` arrives, the
/// supervisor exits, or `limit` passes. Returns the event's name.
fn await_event(
    r: &mut Running,
    ev: &mut Events,
    names: &[&str],
    limit: Duration,
) -> Option<String> {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        match r.err.next(Duration::from_millis(20)) {
            Some(line) => {
                ev.take(line);
                if let Some(last) = ev.list.last()
                    && let Some(n) = last["event"].as_str()
                    && names.contains(&n)
                {
                    return Some(n.to_owned());
                }
            }
            None => {
                if !r.running() {
                    return None;
                }
            }
        }
    }
    None
}

// ---------------------------------------------------------------------------
// The suite
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Stats {
    attempts: usize,
    own_code: usize,
    timed_out_124: usize,
    timed_out_137: usize,
    cancelled: usize,
    cancelled_waiting: usize,
    conflicts: usize,
    not_run: usize,
    supervisor_killed: usize,
    orphans_left: usize,
    orphans_shown: usize,
    leaks: usize,
    survivors: usize,
    wrong_codes: usize,
    late: usize,
    interleaved: usize,
    other_failures: usize,
    /// How far past `acquired + timeout + grace` attempts ended (ms).
    overrun_ms: Vec<f64>,
    /// The attempts that ended latest, with what they did.
    worst: Vec<(f64, String)>,
}

struct Suite {
    env: Env,
    seed: u64,
    sessions: usize,
    slack: Duration,
    not_exec: PathBuf,
    stats: Mutex<Stats>,
    failures: Mutex<Vec<String>>,
}

struct Verdict {
    failures: Vec<String>,
}

impl Verdict {
    fn fail(&mut self, what: impl Into<String>) {
        self.failures.push(what.into());
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn seed_from_env() -> u64 {
    match std::env::var("LOCKSUP_CHAOS_SEED") {
        Ok(s) => {
            let s = s.trim();
            let v = match s.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16),
                None => s.parse(),
            };
            v.unwrap_or_else(|_| panic!("LOCKSUP_CHAOS_SEED={s:?} is not a number"))
        }
        Err(_) => {
            let t = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
        }
    }
}

impl Suite {
    fn session(&self, k: usize) -> PathBuf {
        self.env.join(&format!("s{k}.jsonl"))
    }

    fn lock(&self, k: usize) -> PathBuf {
        self.env.join(&format!("s{k}.jsonl.lock"))
    }

    fn attempt_id(&self, i: usize) -> String {
        format!("chaos-{:x}-{i}", self.seed)
    }

    fn command(&self, p: &Plan) -> std::process::Command {
        let pids = self.env.join(&format!("a{}.pids", p.index));
        let mut a = args![
            "--session",
            self.session(p.session),
            "--timeout",
            format!("{}ms", p.timeout_ms),
            "--grace",
            format!("{}ms", p.grace_ms),
            "--attempt-id",
            self.attempt_id(p.index),
            "--events",
            "-",
        ];
        match p.wait {
            Wait::Long => a.extend(args!["--wait", "60s"]),
            Wait::No => a.push("--no-wait".into()),
            Wait::Short(ms) => a.extend(args!["--wait", format!("{ms}ms")]),
        }
        if let Some(c) = p.conflict_code {
            a.extend(args!["--conflict-exit-code", c.to_string()]);
        }
        if p.preserve {
            a.push("--preserve-status".into());
        }
        a.push("--".into());
        match p.main {
            Main::NotFound => a.push("/nonexistent/chaos-command".into()),
            Main::NotExec => a.push(self.not_exec.clone().into()),
            _ => a.extend(args!["sh", "-c", main_script(p)]),
        }
        let mut c = self.env.run(a);
        c.env("CHAOS_P", &pids)
            .env("CHAOS_J", self.session(p.session))
            .env("CHAOS_A", p.index.to_string());
        for (i, ch) in p.children.iter().enumerate() {
            c.env(
                format!("CHAOS_C{i}"),
                OsString::from(child_script(&format!("c{i}"), ch)),
            );
        }
        c
    }

    /// Run attempt `i` and check everything; failures are collected.
    fn attempt(&self, i: usize) {
        let plan = Plan::new(self.seed, i, self.sessions);
        let mut v = Verdict {
            failures: Vec::new(),
        };
        let mut ev = Events::default();
        let guard = Guard::new();
        let pids_path = self.env.join(&format!("a{i}.pids"));
        let lock = self.lock(plan.session);
        let id = self.attempt_id(i);

        let mut r = spawn(self.command(&plan), &guard);
        let sup = r.pid();
        let mut cancel_on: Option<String> = None;
        let mut killed = false;
        let mut main_pid: Option<i32> = None;
        let mut snapshot: Vec<i32> = Vec::new();

        match plan.disrupt {
            Disrupt::None => {}
            Disrupt::Cancel(d, twice) => {
                if await_event(&mut r, &mut ev, &["started"], LIMIT).is_some() && pause(&mut r, d) {
                    kill_pid(sup, libc::SIGTERM);
                    if twice {
                        std::thread::sleep(Duration::from_millis(2));
                        kill_pid(sup, libc::SIGTERM);
                    }
                    cancel_on = Some("started".into());
                }
            }
            Disrupt::CancelWaiting => {
                if let Some(n) = await_event(&mut r, &mut ev, &["waiting", "started"], LIMIT)
                    && r.running()
                {
                    kill_pid(sup, libc::SIGTERM);
                    cancel_on = Some(n);
                }
            }
            Disrupt::Kill9(d) | Disrupt::Kill9Early(d) | Disrupt::Kill9Both(d) => {
                let go = match plan.disrupt {
                    Disrupt::Kill9(_) | Disrupt::Kill9Both(_) => {
                        await_event(&mut r, &mut ev, &["started"], LIMIT).is_some()
                    }
                    _ => true,
                };
                if go && pause(&mut r, d) {
                    snapshot = procfs::descendants(sup).into_iter().collect();
                    for &p in &snapshot {
                        guard.add(p);
                    }
                    if let Disrupt::Kill9Both(_) = plan.disrupt {
                        // The guardian's one child, the supervisor: both
                        // stopped first, so that neither reacts to the
                        // other's death.
                        let both: Vec<i32> =
                            common::children_of(sup).into_iter().chain([sup]).collect();
                        for &p in &both {
                            kill_pid(p, libc::SIGSTOP);
                        }
                        wait_until(SOON, || {
                            both.iter().all(|p| common::proc_state(*p) == Some('T'))
                        });
                        for &p in &both {
                            kill_pid(p, libc::SIGKILL);
                        }
                    }
                    kill_pid(sup, libc::SIGKILL);
                    killed = true;
                }
            }
        }

        let status = r.wait(LIMIT);
        let ended = SystemTime::now();
        // The supervisor is gone: everything of the attempt must be too,
        // right now (it waits for the last of them before it exits).
        let recorded = read_recorded(&pids_path);
        for &p in recorded.pids.values() {
            guard.add(p);
        }
        let killed_by_us = killed && status.signal() == Some(libc::SIGKILL);
        if !killed_by_us {
            let alive: Vec<i32> = recorded
                .pids
                .values()
                .copied()
                .chain(processes_with_attempt_id(&id))
                .filter(|&p| pid_alive(p))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if !alive.is_empty() {
                let desc: Vec<String> = alive
                    .iter()
                    .map(|p| format!("{p} ({:?})", procfs::cmdline(*p).unwrap_or_default()))
                    .collect();
                v.fail(format!("survivors after the supervisor exited: {desc:?}"));
                self.stats.lock().unwrap().survivors += alive.len();
            }
        }
        // Events that are still in the pipe (after a SIGKILL, orphans may
        // hold it open: take what is there).
        let drain = if killed_by_us {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(2)
        };
        for line in r.err.rest(drain) {
            ev.take(line);
        }
        if let Some(s) = ev.get("started") {
            main_pid = s["pid"].as_i64().map(|p| p as i32);
        }
        if main_pid.is_none() {
            main_pid = recorded.pids.get("main:main").copied();
        }

        if killed_by_us {
            let both = matches!(plan.disrupt, Disrupt::Kill9Both(_));
            self.after_supervisor_kill(
                &mut v, &plan, both, &recorded, &snapshot, main_pid, &lock, &id,
            );
        } else {
            self.check_ended(
                &plan,
                &mut v,
                &ev,
                &recorded,
                status,
                ended,
                main_pid,
                &lock,
                cancel_on.as_deref(),
            );
        }
        if ev.other.iter().any(|l| l.contains("panicked")) {
            v.fail("locksup panicked");
        }

        // Whatever happened, nothing of this attempt outlives it.
        for p in processes_with_attempt_id(&id) {
            guard.add(p);
            kill_pid(p, libc::SIGKILL);
        }
        drop(guard);
        reap_orphans();

        let mut st = self.stats.lock().unwrap();
        st.attempts += 1;
        if !v.failures.is_empty() {
            if v.failures.iter().any(|f| f.starts_with("wrong code")) {
                st.wrong_codes += 1;
            }
            if v.failures.iter().any(|f| f.starts_with("late")) {
                st.late += 1;
            }
            if v.failures.iter().any(|f| f.starts_with("leak")) {
                st.leaks += 1;
            }
            if v.failures.iter().any(|f| {
                !f.starts_with("wrong code")
                    && !f.starts_with("late")
                    && !f.starts_with("leak")
                    && !f.starts_with("survivors")
            }) {
                st.other_failures += 1;
            }
            drop(st);
            let mut msg = format!(
                "attempt {i} (reproduce: LOCKSUP_CHAOS_SEED={:#x} LOCKSUP_CHAOS_ONLY={i}):\n  plan: {plan:?}\n",
                self.seed
            );
            for f in &v.failures {
                let _ = writeln!(msg, "  - {f}");
            }
            let _ = writeln!(msg, "  exit status: {status:?}");
            let _ = writeln!(msg, "  events: {:?}", ev.list);
            let _ = writeln!(msg, "  other stderr: {:?}", ev.other);
            let _ = writeln!(msg, "  recorded: {:?}", recorded.lines);
            eprintln!("{msg}");
            save_failure(&msg);
            self.failures.lock().unwrap().push(msg);
        }
    }

    /// The supervisor ended by itself: code, timing, release.
    #[allow(clippy::too_many_arguments)]
    fn check_ended(
        &self,
        plan: &Plan,
        v: &mut Verdict,
        ev: &Events,
        rec: &Recorded,
        status: std::process::ExitStatus,
        ended: SystemTime,
        main_pid: Option<i32>,
        lock: &Path,
        cancel_on: Option<&str>,
    ) {
        let Some(code) = status.code() else {
            v.fail(format!("locksup died of signal {:?}", status.signal()));
            return;
        };
        let acquired = ev.has("acquired");
        let conflict = ev.has("conflict");
        let ran = rec.pids.contains_key("main:main");
        let (expect, kind) = expected_codes(plan, ev, rec, cancel_on);
        if !expect.contains(&code) {
            v.fail(format!(
                "wrong code {code}, expected one of {expect:?} ({kind:?})"
            ));
        }
        {
            let mut st = self.stats.lock().unwrap();
            match kind {
                Kind::Conflict => st.conflicts += 1,
                Kind::CancelledWaiting => st.cancelled_waiting += 1,
                Kind::Cancelled => st.cancelled += 1,
                Kind::NotRun => st.not_run += 1,
                Kind::Own => st.own_code += 1,
                Kind::Timeout if code == 124 => st.timed_out_124 += 1,
                Kind::Timeout => st.timed_out_137 += 1,
            }
        }
        if (conflict || kind == Kind::CancelledWaiting) && ran {
            v.fail("the command ran although the lock was not obtained");
        }
        if !acquired {
            return;
        }
        // Bounded life: by timeout + grace from acquisition, and by grace
        // from the command's exit when only a cleanup was left.
        let slack = self.slack;
        if let Some(at) = ev.ts("acquired") {
            let bound = Duration::from_millis(plan.timeout_ms + plan.grace_ms);
            let took = ended.duration_since(at).unwrap_or_default();
            let over = took.as_secs_f64() * 1000.0 - bound.as_secs_f64() * 1000.0;
            {
                let mut st = self.stats.lock().unwrap();
                st.overrun_ms.push(over);
                st.worst.push((over, breakdown(plan, ev, ended)));
                st.worst.sort_by(|a, b| b.0.total_cmp(&a.0));
                st.worst.truncate(5);
            }
            if took > bound + slack {
                v.fail(format!(
                    "late: ended {took:?} after acquiring; timeout + grace = {bound:?}"
                ));
            }
        }
        if kind == Kind::Own
            && let Some(at) = ev.ts("exited")
        {
            let took = ended.duration_since(at).unwrap_or_default();
            let bound = Duration::from_millis(plan.grace_ms);
            if took > bound + slack {
                v.fail(format!(
                    "late: cleanup took {took:?} after the command exited; grace = {bound:?}"
                ));
            }
        }
        if ev.has("leak") {
            v.fail("leak event reported");
        }
        if plan.main.runs() && ev.has("started") && !ev.has("released") {
            v.fail("no released event");
        }
        // The kernel: the attempt's first process no longer holds the lock
        // (a later attempt may hold it by now; that is not ours).
        if let (Some(pid), Ok(f)) = (main_pid, fs::File::open(lock))
            && let Ok(id) = file_id(&f)
            && procfs::locks_on(id)
                .iter()
                .any(|e| e.pid == pid && !e.waiter)
        {
            v.fail(format!("leak: /proc/locks still names {pid} as a holder"));
        }
    }

    /// The supervisor was killed with SIGKILL: its first process must die
    /// with it; what is left holding the lock is an orphan, shown as such,
    /// and then cleaned up by PID.
    #[allow(clippy::too_many_arguments)]
    #[allow(clippy::too_many_arguments)]
    fn after_supervisor_kill(
        &self,
        v: &mut Verdict,
        plan: &Plan,
        both: bool,
        rec: &Recorded,
        snapshot: &[i32],
        main_pid: Option<i32>,
        lock: &Path,
        id: &str,
    ) {
        self.stats.lock().unwrap().supervisor_killed += 1;
        if !both {
            // The guardian (the locksup started) was killed: its supervisor
            // ends the attempt at once, so everything of it is gone within
            // the grace period (the first signal, then the final one), and
            // the lock is free. An orphan is a failure.
            let bound = Duration::from_millis(plan.grace_ms) + SOON;
            let all: BTreeSet<i32> = rec
                .pids
                .values()
                .copied()
                .chain(snapshot.iter().copied())
                .collect();
            let gone = wait_until(bound, || {
                all.iter().all(|&p| !pid_alive(p)) && processes_with_attempt_id(id).is_empty()
            });
            if !gone {
                let alive: Vec<String> = all
                    .iter()
                    .copied()
                    .chain(processes_with_attempt_id(id))
                    .filter(|&p| pid_alive(p))
                    .map(|p| format!("{p} ({:?})", procfs::cmdline(p).unwrap_or_default()))
                    .collect();
                self.stats.lock().unwrap().orphans_left += 1;
                v.fail(format!(
                    "survivors {:?} after the guardian's SIGKILL (bound {bound:?})",
                    alive
                ));
            }
            return;
        }
        let first = main_pid.or_else(|| {
            // Before the exec: the supervisor's only child then.
            snapshot.iter().copied().min()
        });
        if let Some(p) = first
            && !wait_pid_gone(p, SOON)
        {
            v.fail(format!(
                "first process {p} survived the supervisor's SIGKILL (PR_SET_PDEATHSIG)"
            ));
        }
        let mut left: BTreeSet<i32> = rec
            .pids
            .values()
            .copied()
            .chain(snapshot.iter().copied())
            .chain(processes_with_attempt_id(id))
            .filter(|&p| Some(p) != first && pid_alive(p))
            .collect();
        let holders: Vec<i32> = left
            .iter()
            .copied()
            .filter(|&p| fds_on(p, lock).1)
            .collect();
        if !holders.is_empty() {
            self.stats.lock().unwrap().orphans_left += 1;
            let o = run_to_end({
                let mut c = self.env.cmd();
                c.args(args!["status", "--json", lock]);
                c
            });
            let doc: serde_json::Value = serde_json::from_str(o.stdout.trim()).unwrap_or_default();
            let entry = &doc["locks"][0];
            let shown: BTreeSet<i32> = entry["holders"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|h| h["pid"].as_i64())
                        .map(|p| p as i32)
                        .collect()
                })
                .unwrap_or_default();
            // Short-lived processes (a ticker's `sleep 0.02`) may have
            // gone meanwhile: only those still there must be shown.
            // A double fork's intermediate shell exits by itself: if every
            // holder is gone, the lock may be free or the next attempt's.
            let holders: Vec<i32> = holders.into_iter().filter(|&p| pid_alive(p)).collect();
            if holders.is_empty() {
                self.stats.lock().unwrap().orphans_left -= 1;
            } else if entry["state"] == "orphan" && holders.iter().all(|p| shown.contains(p)) {
                self.stats.lock().unwrap().orphans_shown += 1;
            } else {
                v.fail(format!(
                    "orphan not shown: holders {holders:?}, status said {}",
                    o.stdout.trim()
                ));
            }
        }
        // Clean up by PID, until a pass finds nobody (they may still fork).
        // A killed process needs a CPU to finish dying; spinning attempts
        // may keep both busy for a while.
        let end = Instant::now() + SOON;
        while Instant::now() < end {
            for &p in &left {
                kill_pid(p, libc::SIGKILL);
            }
            reap_orphans();
            left = processes_with_attempt_id(id).into_iter().collect();
            if left.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if !left.is_empty() {
            v.fail(format!("could not clean up orphans {left:?}"));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Conflict,
    CancelledWaiting,
    Cancelled,
    NotRun,
    Own,
    Timeout,
}

/// The exit codes the documentation allows for what the attempt did.
/// A process counts as ignoring TERM only if it got as far as its `ready`
/// line (written after its `trap '' TERM`): a TERM that came earlier killed
/// it.
fn expected_codes(
    p: &Plan,
    ev: &Events,
    rec: &Recorded,
    cancel_on: Option<&str>,
) -> (Vec<i32>, Kind) {
    if ev.has("conflict") {
        return (vec![p.conflict_code()], Kind::Conflict);
    }
    if cancel_on == Some("waiting") && !ev.has("acquired") {
        return (vec![143], Kind::CancelledWaiting);
    }
    match p.main {
        Main::NotFound => return (vec![127], Kind::NotRun),
        Main::NotExec => return (vec![126], Kind::NotRun),
        _ => {}
    }
    // The `main` line comes right after the main's traps: there, TERM is
    // ignored (or trapped). Without it, TERM came first and killed it, or
    // the trap was in but the final signal came before the line (a small
    // grace).
    let main_trapped = rec.pids.contains_key("main:main");
    let main_ignores = p.main_ignores && main_trapped;
    // Children write `ready` right after their trap.
    let any_ignores = main_ignores
        || p.children
            .iter()
            .enumerate()
            .any(|(i, c)| c.ignore_term && rec.ready.contains(&format!("c{i}")));
    let small_grace = p.grace_ms < 300;
    // The main's own status when TERM reaches it.
    let mut on_term: Vec<i32> = if main_ignores {
        vec![137]
    } else if p.main == Main::TrapExit {
        if main_trapped { vec![7] } else { vec![7, 143] }
    } else {
        vec![143]
    };
    if small_grace {
        // TERM ignored before the line, or left pending while the process
        // was stopped (a stopped task takes only SIGKILL at once) or had
        // no time to run its trap: the final signal wins.
        on_term.push(137);
    }
    if cancel_on.is_some() {
        let mut v = on_term;
        // A cancel sent on `started` (cancel-while-waiting without
        // contention) may come after a main that exits early is done, or
        // reach one that ignores TERM and exits by itself within the grace.
        match p.main {
            Main::Exit(c) => v.push(c),
            Main::Segv => v.push(139),
            _ => {}
        }
        if matches!(p.disrupt, Disrupt::Cancel(_, true)) {
            // The second TERM sends the final signal at once.
            v.extend([137, 143]);
        }
        return (v, Kind::Cancelled);
    }
    match p.main {
        Main::Exit(c) => return (vec![c], Kind::Own),
        Main::Segv => return (vec![139], Kind::Own),
        _ => {}
    }
    if p.preserve {
        return (on_term, Kind::Timeout);
    }
    let v = if any_ignores {
        vec![137]
    } else if small_grace {
        vec![124, 137]
    } else {
        vec![124]
    };
    (v, Kind::Timeout)
}

/// Every attempt's records must form one contiguous block in the
/// session's JSONL file, starting with its `start` record.
/// Returns the number of records of each kind.
fn check_jsonl(path: &Path) -> Result<BTreeMap<String, usize>, String> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    let mut current: Option<u64> = None;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("{}:{}: torn record {line:?}: {e}", path.display(), n + 1))?;
        let a = v["a"]
            .as_u64()
            .ok_or_else(|| format!("{}:{}: no id", path.display(), n + 1))?;
        *counts
            .entry(v["ev"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
        if current != Some(a) {
            if !seen.insert(a) {
                return Err(format!(
                    "{}:{}: attempt {a} writes again after attempt {current:?} had the lock: {line}",
                    path.display(),
                    n + 1
                ));
            }
            if v["ev"] != "start" {
                return Err(format!(
                    "{}:{}: attempt {a}'s first record is not its start: {line}",
                    path.display(),
                    n + 1
                ));
            }
            current = Some(a);
        }
    }
    Ok(counts)
}

#[test]
fn jsonl_check_detects_interleaving() {
    let env = Env::new();
    let rec = |a: u32, ev: &str| format!("{{\"a\":{a},\"ev\":\"{ev}\",\"p\":1}}\n");
    let good = [
        rec(1, "start"),
        rec(1, "tick"),
        rec(1, "end"),
        rec(2, "start"),
        rec(3, "start"),
        rec(3, "end"),
    ]
    .concat();
    let counts = check_jsonl(&env.write("good.jsonl", &good)).unwrap();
    assert_eq!(counts["start"], 3);
    let bad = [rec(1, "start"), rec(2, "start"), rec(1, "end")].concat();
    assert!(
        check_jsonl(&env.write("bad.jsonl", &bad))
            .unwrap_err()
            .contains("writes again")
    );
    let bad = [rec(1, "start"), rec(2, "tick")].concat();
    assert!(
        check_jsonl(&env.write("bad2.jsonl", &bad))
            .unwrap_err()
            .contains("not its start")
    );
    let torn = format!("{}{{\"a\":2,\"ev\"", rec(1, "start"));
    assert!(
        check_jsonl(&env.write("torn.jsonl", &torn))
            .unwrap_err()
            .contains("torn")
    );
}

/// Failure reports are also appended here, so a rare one is never lost
/// with the terminal's scrollback.
fn failure_log() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("chaos-failures.log")
}

fn save_failure(msg: &str) {
    use std::io::Write;
    if let Ok(mut f) = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(failure_log())
    {
        let _ = writeln!(f, "{msg}");
    }
}

/// Where the time of a late attempt went, from its events' timestamps.
fn breakdown(plan: &Plan, ev: &Events, ended: SystemTime) -> String {
    let ms = |a: Option<SystemTime>, b: Option<SystemTime>| -> String {
        match (a, b) {
            (Some(a), Some(b)) => match b.duration_since(a) {
                Ok(d) => format!("{:.0}", d.as_secs_f64() * 1000.0),
                Err(e) => format!("-{:.0}", e.duration().as_secs_f64() * 1000.0),
            },
            _ => "-".into(),
        }
    };
    let signals: Vec<SystemTime> = ev
        .list
        .iter()
        .filter(|e| e["event"] == "signal")
        .filter_map(|e| e["ts"].as_str().map(common::rfc3339))
        .collect();
    let acquired = ev.ts("acquired");
    let first = signals.first().copied();
    let last = signals.get(1).copied();
    let released = ev.ts("released");
    format!(
        "attempt {} (T {} G {}): acquired->first signal {} ms, first->final {} ms, \
         final->released {} ms, released->exit seen {} ms; {:?} / {:?} / {} children, {:?}",
        plan.index,
        plan.timeout_ms,
        plan.grace_ms,
        ms(acquired, first),
        ms(first, last),
        ms(last.or(first), released),
        ms(released, Some(ended)),
        plan.main,
        plan.disrupt,
        plan.children.len(),
        ev.list
            .iter()
            .filter_map(|e| e["event"].as_str())
            .collect::<Vec<_>>(),
    )
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

#[test]
fn chaos() {
    let seed = seed_from_env();
    let only = std::env::var("LOCKSUP_CHAOS_ONLY")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok());
    let attempts = env_usize("LOCKSUP_CHAOS_ATTEMPTS", 300);
    let workers = if only.is_some() {
        1
    } else {
        env_usize("LOCKSUP_CHAOS_WORKERS", 6).max(1)
    };
    let sessions = env_usize("LOCKSUP_CHAOS_SESSIONS", 3).max(1);
    let slack = Duration::from_millis(env_usize("LOCKSUP_CHAOS_SLACK_MS", 1000) as u64);
    eprintln!(
        "chaos: seed {seed:#x}, {} attempts, {workers} workers, {sessions} sessions, slack {slack:?}",
        if only.is_some() { 1 } else { attempts }
    );
    // Orphans of a killed supervisor come back to us, to be reaped.
    // SAFETY: plain prctl on this process.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let env = Env::new();
    let not_exec = env.write("not-executable", "#!/bin/sh\nexit 0\n");
    chmod(&not_exec, 0o644);
    let suite = Suite {
        env,
        seed,
        sessions,
        slack,
        not_exec,
        stats: Mutex::new(Stats::default()),
        failures: Mutex::new(Vec::new()),
    };
    let started = Instant::now();
    let next = AtomicUsize::new(0);
    let indices: Vec<usize> = match only {
        Some(i) => {
            eprintln!("chaos: attempt {i}: {:?}", Plan::new(seed, i, sessions));
            vec![i]
        }
        None => (0..attempts).collect(),
    };
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&i) = indices.get(k) else { break };
                    suite.attempt(i);
                }
            });
        }
    });
    let wall = started.elapsed();

    // The shared files and the locks, after everything.
    let mut end_failures = Vec::new();
    let mut interleaved = 0;
    let mut records: BTreeMap<String, usize> = BTreeMap::new();
    for k in 0..sessions {
        match check_jsonl(&suite.session(k)) {
            Ok(c) => {
                for (ev, n) in c {
                    *records.entry(ev).or_default() += n;
                }
            }
            Err(e) => {
                interleaved += 1;
                end_failures.push(format!("interleaved records: {e}"));
            }
        }
        if !lock_is_free(&suite.lock(k)) {
            end_failures.push(format!(
                "{} still locked at the end",
                suite.lock(k).display()
            ));
        }
    }
    let prefix = format!("LOCKSUP_ATTEMPT_ID=chaos-{seed:x}-");
    let me = std::process::id() as i32;
    let stray: Vec<i32> = procfs::pids()
        .into_iter()
        .filter(|&p| p != me && pid_alive(p))
        .filter(|&p| {
            fs::read(format!("/proc/{p}/environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|e| e.starts_with(prefix.as_bytes()))
            })
        })
        .collect();
    if !stray.is_empty() {
        end_failures.push(format!("processes of attempts alive at the end: {stray:?}"));
        for p in &stray {
            kill_pid(*p, libc::SIGKILL);
        }
    }
    reap_orphans();

    let mut st = suite.stats.lock().unwrap();
    st.interleaved = interleaved;
    st.overrun_ms.sort_by(|a, b| a.total_cmp(b));
    let o = &st.overrun_ms;
    eprintln!(
        "chaos: seed {seed:#x}: {} attempts in {:.1}s ({workers} workers, {sessions} sessions)\n\
         chaos: outcomes: own code {}, timeout 124 {}, timeout 137 {}, cancelled {}, \
         cancelled while waiting {}, conflicts {}, 126/127 {}, supervisor SIGKILLed {} \
         (orphans left holding the lock {}, shown as orphan {})\n\
         chaos: leaks {}, survivors {}, wrong codes {}, late {}, interleaved files {}, other failures {}\n\
         chaos: JSONL records checked: {records:?}\n\
         chaos: end past timeout+grace (ms): p50 {:.1}, p99 {:.1}, max {:.1}",
        st.attempts,
        wall.as_secs_f64(),
        st.own_code,
        st.timed_out_124,
        st.timed_out_137,
        st.cancelled,
        st.cancelled_waiting,
        st.conflicts,
        st.not_run,
        st.supervisor_killed,
        st.orphans_left,
        st.orphans_shown,
        st.leaks,
        st.survivors,
        st.wrong_codes,
        st.late,
        st.interleaved,
        st.other_failures,
        percentile(o, 0.5),
        percentile(o, 0.99),
        o.last().copied().unwrap_or(0.0),
    );
    if std::env::var_os("LOCKSUP_CHAOS_VERBOSE").is_some() {
        for (over, what) in &st.worst {
            eprintln!("chaos: {over:.1} ms past timeout+grace: {what}");
        }
    }
    let failures = suite.failures.lock().unwrap();
    for f in &end_failures {
        save_failure(&format!("seed {seed:#x}: {f}"));
    }
    if !failures.is_empty() || !end_failures.is_empty() {
        eprintln!(
            "chaos: failure reports appended to {}",
            failure_log().display()
        );
        panic!(
            "chaos seed {seed:#x}: {} failed attempts, {} end-of-run failures (rerun with LOCKSUP_CHAOS_SEED={seed:#x}):\n{}\n{}",
            failures.len(),
            end_failures.len(),
            failures.join("\n"),
            end_failures.join("\n")
        );
    }
}
