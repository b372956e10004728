//! Helpers shared by the integration tests: an isolated environment per
//! test, a guard that kills what a test started, lock and process probes,
//! and line readers with timeouts so tests synchronise on output.

// Helpers for several test binaries: each uses some of them.
#![allow(unreachable_pub)]
// They call libc directly to build hostile situations.
#![allow(unsafe_code)]
#![allow(dead_code)]
// Test code converts small, known values (PIDs, frame lengths, times).
#![allow(clippy::cast_possible_truncation)]

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_locksup");

/// A generous bound for things that should take milliseconds.
pub const SOON: Duration = Duration::from_secs(5);

/// Upper bound on any single locksup run in these tests.
pub const LIMIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Isolated environment
// ---------------------------------------------------------------------------

/// A temporary directory with an empty config file, used as HOME and
/// XDG_CONFIG_HOME, so no test sees the user's or the system's config.
pub struct Env {
    pub dir: tempfile::TempDir,
    /// The empty config file `LOCKSUP_CONFIG` points at by default.
    pub config: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::Builder::new()
            .prefix("locksup-test")
            .tempdir()
            .expect("create temp dir");
        let config = dir.path().join("empty-config.toml");
        fs::write(&config, "").expect("write empty config");
        Env { dir, config }
    }

    /// The (canonical) temp directory.
    pub fn path(&self) -> PathBuf {
        fs::canonicalize(self.dir.path()).expect("canonicalize temp dir")
    }

    /// A path inside the temp directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.path().join(name)
    }

    /// Write `text` to a file in the temp directory and return its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.join(name);
        fs::write(&p, text).expect("write file");
        p
    }

    /// A bare `locksup` command with the isolated environment: `LOCKSUP_CONFIG`
    /// is the empty config, HOME and XDG_CONFIG_HOME are the temp dir, the
    /// working directory is the temp dir, stdin is /dev/null.
    pub fn cmd(&self) -> Command {
        self.command(BIN)
    }

    /// Any program with the same isolated environment as `cmd`.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("LOCKSUP_CONFIG", &self.config)
            .env("XDG_CONFIG_HOME", self.dir.path())
            .env("HOME", self.dir.path())
            .env_remove("LOCKSUP_LOCK_FILE")
            .env_remove("LOCKSUP_LOCK_FD")
            .env_remove("LOCKSUP_ATTEMPT_ID")
            .env_remove("LOCKSUP_SESSION")
            .env_remove("LOCKSUP_DEADLINE")
            .env_remove("RUST_LOG")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        c
    }

    /// `locksup run ARGS...` with the isolated environment.
    pub fn run<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = self.cmd();
        c.arg("run").args(args);
        c
    }
}

/// Build an argument vector from mixed string-ish values.
#[macro_export]
macro_rules! args {
    ($($a:expr),* $(,)?) => {
        vec![$(::std::ffi::OsString::from($a)),*]
    };
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// The children of `pid` (over all its threads).
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(text) = fs::read_to_string(t.path().join("children")) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
    }
    out
}

/// Kill a `locksup run` (its guardian) and its supervisor at once, as
/// only a crash of both could: both are stopped first, so neither can
/// react to the other's death, then both get SIGKILL.
pub fn kill_guardian_and_supervisor(guardian: i32) {
    let supervisor = supervisor_of(guardian);
    for p in [supervisor, guardian] {
        kill(p, libc::SIGSTOP);
    }
    assert!(
        wait_until(SOON, || [supervisor, guardian].iter().all(|p| proc_state(
            *p
        ) == Some(
            'T'
        ))),
        "guardian {guardian} and supervisor {supervisor} did not stop"
    );
    for p in [supervisor, guardian] {
        kill(p, libc::SIGKILL);
    }
}

/// The supervisor below a `locksup run` (its guardian): its one child.
pub fn supervisor_of(guardian: i32) -> i32 {
    let mut found = Vec::new();
    wait_until(SOON, || {
        found = children_of(guardian);
        !found.is_empty()
    });
    assert_eq!(found.len(), 1, "guardian {guardian} has children {found:?}");
    found[0]
}

/// Field `n` (1-based, as in proc(5)) of `/proc/PID/stat`.
pub fn stat_field(pid: i32, n: usize) -> Option<String> {
    let s = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &s[s.rfind(')')? + 1..];
    if n < 3 {
        return None;
    }
    rest.split_whitespace().nth(n - 3).map(str::to_owned)
}

/// Process state letter (field 3 of /proc/PID/stat).
pub fn proc_state(pid: i32) -> Option<char> {
    stat_field(pid, 3).and_then(|s| s.chars().next())
}

/// Start time in clock ticks since boot (field 22).
pub fn starttime(pid: i32) -> Option<u64> {
    stat_field(pid, 22).and_then(|s| s.parse().ok())
}

/// Process group (field 5).
pub fn pgid_of(pid: i32) -> Option<i32> {
    stat_field(pid, 5).and_then(|s| s.parse().ok())
}

/// Session id (field 6).
pub fn sid_of(pid: i32) -> Option<i32> {
    stat_field(pid, 6).and_then(|s| s.parse().ok())
}

/// The process exists and is not a zombie (or dead).
pub fn pid_alive(pid: i32) -> bool {
    match proc_state(pid) {
        None => false,
        Some('Z') | Some('X') | Some('x') => false,
        Some(_) => true,
    }
}

/// Poll until `cond` holds, every 10 ms, up to `limit`. Returns whether it held.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Wait until `pid` is gone (or a zombie); true if it happened within `limit`.
pub fn wait_pid_gone(pid: i32, limit: Duration) -> bool {
    wait_until(limit, || !pid_alive(pid))
}

/// Assert every pid is gone within `limit`.
pub fn assert_all_gone(pids: &[i32], limit: Duration) {
    for &pid in pids {
        assert!(
            wait_pid_gone(pid, limit),
            "process {pid} of the attempt still alive: state {:?}, cmdline {:?}",
            proc_state(pid),
            fs::read_to_string(format!("/proc/{pid}/cmdline")).map(|s| s.replace('\0', " "))
        );
    }
}

/// Send `sig` to `pid`.
pub fn kill(pid: i32, sig: i32) {
    // SAFETY: plain syscall.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        r,
        0,
        "kill({pid}, {sig}) failed: {}",
        std::io::Error::last_os_error()
    );
}

/// Kills every process it was given (SIGKILL) when dropped, after checking
/// the pid still names the same process (start time), so a reused pid is
/// never hit. Never kills by name.
#[derive(Default)]
pub struct Guard {
    pids: Mutex<Vec<(i32, Option<u64>)>>,
}

impl Guard {
    pub fn new() -> Guard {
        Guard::default()
    }

    pub fn add(&self, pid: i32) {
        let st = starttime(pid);
        self.pids.lock().unwrap().push((pid, st));
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let pids = self.pids.lock().map(|g| g.clone()).unwrap_or_default();
        for (pid, st) in pids {
            if pid <= 1 {
                continue;
            }
            if st.is_some() && starttime(pid) == st {
                // SAFETY: plain syscall on a pid we verified.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Lock probes
// ---------------------------------------------------------------------------

/// Probe the kernel's flock state with a fresh open file description:
/// `flock(LOCK_EX|LOCK_NB)`. A missing file is free.
pub fn lock_is_free(path: &Path) -> bool {
    probe(path, libc::LOCK_EX)
}

/// Like `lock_is_free` but asks for a shared lock.
pub fn shared_lock_available(path: &Path) -> bool {
    probe(path, libc::LOCK_SH)
}

fn probe(path: &Path, how: i32) -> bool {
    let f = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
        Err(e) => panic!("open {} for probing: {e}", path.display()),
    };
    // SAFETY: valid fd owned by `f`.
    let r = unsafe { libc::flock(f.as_raw_fd(), how | libc::LOCK_NB) };
    if r == 0 {
        // SAFETY: as above.
        unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_UN) };
        true
    } else {
        let e = std::io::Error::last_os_error();
        assert_eq!(
            e.raw_os_error(),
            Some(libc::EWOULDBLOCK),
            "flock probe on {}: {e}",
            path.display()
        );
        false
    }
}

/// Wait until the lock is free; true if within `limit`.
pub fn wait_lock_free(path: &Path, limit: Duration) -> bool {
    wait_until(limit, || lock_is_free(path))
}

/// Take an exclusive lock from the test process (close-on-exec descriptor);
/// held until the returned file is dropped.
pub fn hold_lock(path: &Path) -> File {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open lock file to hold");
    // SAFETY: valid fd.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    assert_eq!(r, 0, "test could not take the lock on {}", path.display());
    f
}

// ---------------------------------------------------------------------------
// Reading output with timeouts
// ---------------------------------------------------------------------------

/// Reads lines of a pipe on a thread; the test takes them with a timeout.
pub struct Lines {
    rx: Receiver<String>,
    /// Every line taken so far (for diagnostics and for later checks).
    pub seen: Vec<String>,
    name: &'static str,
}

impl Lines {
    pub fn new<R: Read + Send + 'static>(r: R, name: &'static str) -> Lines {
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let rd = BufReader::new(r);
            for line in rd.split(b'\n') {
                match line {
                    Ok(l) => {
                        if tx.send(String::from_utf8_lossy(&l).into_owned()).is_err() {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
            name,
        }
    }

    /// The next line, or None on timeout or end of stream.
    pub fn next(&mut self, limit: Duration) -> Option<String> {
        match self.rx.recv_timeout(limit) {
            Ok(l) => {
                self.seen.push(l.clone());
                Some(l)
            }
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// The next line; panics (with what was seen) if none comes in time.
    pub fn expect(&mut self, what: &str, limit: Duration) -> String {
        match self.next(limit) {
            Some(l) => l,
            None => panic!(
                "no {what} line on {} within {limit:?}; seen so far: {:?}",
                self.name, self.seen
            ),
        }
    }

    /// Read lines until one satisfies `pred`; panics if none does in time.
    pub fn expect_match(
        &mut self,
        what: &str,
        limit: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> String {
        let end = Instant::now() + limit;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(l) if pred(&l) => return l,
                Some(_) => continue,
                None => panic!(
                    "no {what} line on {} within {limit:?}; seen: {:?}",
                    self.name, self.seen
                ),
            }
        }
    }

    /// A line that parses as an integer pid; panics otherwise.
    pub fn expect_pid(&mut self, what: &str, limit: Duration) -> i32 {
        let l = self.expect(what, limit);
        l.trim()
            .parse()
            .unwrap_or_else(|_| panic!("expected a pid for {what} on {}, got {l:?}", self.name))
    }

    /// The remaining lines until end of stream (or `limit`).
    pub fn rest(&mut self, limit: Duration) -> Vec<String> {
        let end = Instant::now() + limit;
        let mut out = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(l) => out.push(l),
                None => return out,
            }
        }
    }
}

/// A running `locksup` with its stdout and stderr read line by line.
pub struct Running {
    pub child: Child,
    pub out: Lines,
    pub err: Lines,
    pub started: Instant,
    status: Option<ExitStatus>,
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Wait for exit up to `limit`; on timeout, kill it and panic with the
    /// output seen so far.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let end = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                self.status = Some(s);
                return s;
            }
            if Instant::now() >= end {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let out = self.out.rest(Duration::from_millis(200));
                let err = self.err.rest(Duration::from_millis(200));
                panic!(
                    "locksup did not exit within {limit:?}; stdout: {:?} {:?}; stderr: {:?} {:?}",
                    self.out.seen, out, self.err.seen, err
                );
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait and return the exit code (panics if locksup itself died of a signal).
    pub fn code(&mut self, limit: Duration) -> i32 {
        let s = self.wait(limit);
        exit_code(s)
    }

    /// Still running?
    pub fn running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.try_wait().expect("try_wait") {
            Some(s) => {
                self.status = Some(s);
                false
            }
            None => true,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Exit code of locksup; panics if it died of a signal (that is a bug in it).
pub fn exit_code(s: ExitStatus) -> i32 {
    match s.code() {
        Some(c) => c,
        None => panic!("locksup itself died of signal {:?}", s.signal()),
    }
}

/// Spawn `cmd` with piped stdout/stderr, register its pid with `guard`.
pub fn spawn(mut cmd: Command, guard: &Guard) -> Running {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn locksup");
    guard.add(child.id() as i32);
    let out = Lines::new(child.stdout.take().unwrap(), "stdout");
    let err = Lines::new(child.stderr.take().unwrap(), "stderr");
    Running {
        child,
        out,
        err,
        started,
        status: None,
    }
}

/// The result of a run to completion.
#[derive(Debug)]
pub struct Outcome {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Run `cmd` to completion (bounded by `LIMIT`) and collect everything.
pub fn run_to_end(cmd: Command) -> Outcome {
    let guard = Guard::new();
    let mut r = spawn(cmd, &guard);
    let status = r.wait(LIMIT);
    let elapsed = r.started.elapsed();
    let out = r.out.rest(SOON);
    let err = r.err.rest(SOON);
    let code = exit_code(status);
    Outcome {
        code,
        stdout: join_lines(&out),
        stderr: join_lines(&err),
        elapsed,
    }
}

fn join_lines(v: &[String]) -> String {
    let mut s = String::new();
    for l in v {
        s.push_str(l);
        s.push('\n');
    }
    s
}

/// Assert stderr is exactly one line starting with `locksup: `.
pub fn assert_one_error_line(o: &Outcome) {
    let lines: Vec<&str> = o.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "expected exactly one line on stderr, got {:?}",
        o.stderr
    );
    assert!(
        lines[0].starts_with("locksup: "),
        "error line must start with 'locksup: ': {:?}",
        lines[0]
    );
}

/// Make `path` a file with the given mode.
pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Parse a JSON line, with a readable panic.
pub fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
}

/// Lines of `text` that are JSON objects with an `event` key.
pub fn events_in(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(json)
        .filter(|v| v.get("event").is_some())
        .collect()
}

/// `SigIgn` mask of `/proc/self/status` as printed by `grep ^SigIgn:`.
pub fn parse_sigmask(line: &str) -> u64 {
    let hex = line
        .split(':')
        .nth(1)
        .unwrap_or_else(|| panic!("not a SigIgn line: {line:?}"))
        .trim();
    u64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("bad mask in {line:?}"))
}

/// Parse an RFC 3339 UTC timestamp (`2026-11-24T08:03:33.123Z`).
pub fn rfc3339(s: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339(s).unwrap_or_else(|e| panic!("not an RFC 3339 UTC time ({e}): {s:?}"))
}

/// Seconds from now to `t` (negative if in the past).
pub fn secs_from_now(t: std::time::SystemTime) -> f64 {
    let now = std::time::SystemTime::now();
    match t.duration_since(now) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Does `pid` have a descriptor open on `path`, and does that descriptor's
/// open file description carry a lock (a `lock:` line in fdinfo)?
/// Returns (has_fd, has_locked_fd).
pub fn fds_on(pid: i32, path: &Path) -> (bool, bool) {
    let mut has_fd = false;
    let mut locked = false;
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (false, false);
    };
    for e in rd.flatten() {
        let Ok(target) = fs::read_link(e.path()) else {
            continue;
        };
        if target == path {
            has_fd = true;
            let fd = e.file_name();
            let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", fd.to_string_lossy()))
                .unwrap_or_default();
            if info.lines().any(|l| l.starts_with("lock:")) {
                locked = true;
            }
        }
    }
    (has_fd, locked)
}

/// Duplicate descriptor `fd` of process `pid` into this process
/// (`pidfd_getfd(2)`): the copy shares the open file description, so it
/// shares any flock on it. Close-on-exec is set on the copy.
pub fn steal_fd(pid: i32, fd: i32) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: plain syscalls; the returned descriptors are owned here.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0);
        assert!(
            pidfd >= 0,
            "pidfd_open({pid}): {}",
            std::io::Error::last_os_error()
        );
        let pidfd = std::os::fd::OwnedFd::from_raw_fd(pidfd as i32);
        let got = libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0);
        assert!(
            got >= 0,
            "pidfd_getfd({pid}, {fd}): {}",
            std::io::Error::last_os_error()
        );
        std::os::fd::OwnedFd::from_raw_fd(got as i32)
    }
}
