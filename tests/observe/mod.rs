//! Helpers for the status, watch and cancel tests, on top of `common`:
//! the kernel's own view of a lock (`/proc/locks`), holders started with
//! `flock(1)` and `locksup run`, metadata written by hand, and `status
//! --json` as a value.

// Helpers for several test binaries: each uses some of them.
#![allow(unreachable_pub)]
#![allow(dead_code)]
// Test code converts small, known values (PIDs, frame lengths, times).
#![allow(clippy::cast_possible_truncation)]

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::{Env, Guard, Running, json, run_to_end, spawn, starttime, wait_until};

/// A generous bound for the kernel or a process to reach a state.
pub const BOUND: Duration = Duration::from_secs(10);

/// One line of `/proc/locks` about a file: (waiter, pid).
pub fn kernel_entries(path: &Path) -> Vec<(bool, i32)> {
    let Ok(meta) = fs::metadata(path) else {
        return Vec::new();
    };
    let (major, minor, ino) = (
        nix::sys::stat::major(meta.dev()),
        nix::sys::stat::minor(meta.dev()),
        meta.ino(),
    );
    let text = fs::read_to_string("/proc/locks").expect("read /proc/locks");
    let mut out = Vec::new();
    for line in text.lines() {
        let mut it = line.split_whitespace().skip(1);
        let Some(mut kind) = it.next() else { continue };
        let waiter = kind == "->";
        if waiter {
            kind = it.next().unwrap_or("");
        }
        let _ = kind;
        let (_adv, _mode) = (it.next(), it.next());
        let Some(pid) = it.next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        let Some(dev) = it.next() else { continue };
        let parts: Vec<&str> = dev.split(':').collect();
        if parts.len() != 3 {
            continue;
        }
        let ok = u64::from_str_radix(parts[0], 16).ok() == Some(major)
            && u64::from_str_radix(parts[1], 16).ok() == Some(minor)
            && parts[2].parse::<u64>().ok() == Some(ino);
        if ok {
            out.push((waiter, pid));
        }
    }
    out
}

/// PIDs `/proc/locks` names as holding `path`.
pub fn kernel_holders(path: &Path) -> Vec<i32> {
    kernel_entries(path)
        .into_iter()
        .filter(|(w, _)| !w)
        .map(|(_, p)| p)
        .collect()
}

/// PIDs `/proc/locks` names as waiting for `path`.
pub fn kernel_waiters(path: &Path) -> Vec<i32> {
    kernel_entries(path)
        .into_iter()
        .filter(|(w, _)| *w)
        .map(|(_, p)| p)
        .collect()
}

/// Wait until `/proc/locks` says `pid` holds `path` (or waits for it).
pub fn wait_kernel(path: &Path, pid: i32, waiter: bool) {
    assert!(
        wait_until(BOUND, || kernel_entries(path).contains(&(waiter, pid))),
        "kernel never listed pid {pid} as {} of {}: {:?}",
        if waiter { "waiter" } else { "holder" },
        path.display(),
        kernel_entries(path)
    );
}

/// A helper process that is killed and reaped when dropped (and is in a
/// [`Guard`] as well).
pub struct Proc(pub Child);

impl Proc {
    /// Its PID.
    pub fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `flock(1)` that takes `path` (exclusive, or shared with `-s` in
/// `extra`) and execs `sleep 300` in the same process (`-F`): one PID,
/// the one `/proc/locks` prints. Waits until it holds (or, with
/// `blocked`, until it waits).
pub fn flock_hold(env: &Env, guard: &Guard, path: &Path, extra: &[&str], blocked: bool) -> Proc {
    let mut c = env.command("flock");
    c.args(extra)
        .arg("-F")
        .arg(path)
        .args(["sleep", "300"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = c.spawn().expect("spawn flock(1)");
    let pid = child.id() as i32;
    guard.add(pid);
    let proc = Proc(child);
    wait_kernel(path, pid, blocked);
    proc
}

/// `locksup run ARGS... --events - -- COMMAND...`, waiting for its
/// `started` event. Returns the running supervisor and the attempt's PID.
pub fn start_attempt(env: &Env, guard: &Guard, args: &[&str], command: &[&str]) -> (Running, i32) {
    let mut c = env.run(args);
    c.args(["--events", "-", "--"]).args(command);
    let mut r = spawn(c, guard);
    let line = r.err.expect_match("started event", BOUND, |l| {
        l.contains("\"event\":\"started\"") || l.contains("\"event\":\"exited\"")
    });
    let v = json(&line);
    assert_eq!(
        v["event"], "started",
        "attempt did not start: {:?}",
        r.err.seen
    );
    let pid = v["pid"].as_i64().expect("started pid") as i32;
    guard.add(pid);
    (r, pid)
}

/// `locksup run` that waits for a busy lock; returns once it says so.
pub fn start_waiting_attempt(env: &Env, guard: &Guard, args: &[&str], command: &[&str]) -> Running {
    let mut c = env.run(args);
    c.args(["--events", "-", "--"]).args(command);
    let mut r = spawn(c, guard);
    r.err.expect_match("waiting event", BOUND, |l| {
        l.contains("\"event\":\"waiting\"")
    });
    r
}

/// `locksup status --json ARGS...`: exit 0 and a parsed document.
pub fn status_json(env: &Env, args: &[&str]) -> Value {
    let mut c = env.cmd();
    c.arg("status").arg("--json").args(args);
    let o = run_to_end(c);
    assert_eq!(o.code, 0, "status failed: {o:?}");
    assert!(
        o.stderr.is_empty(),
        "status wrote to stderr: {:?}",
        o.stderr
    );
    json(o.stdout.trim())
}

/// The lock object for `path` in a status document.
pub fn lock_in<'a>(doc: &'a Value, path: &Path) -> &'a Value {
    let p = path.display().to_string();
    doc["locks"]
        .as_array()
        .expect("locks array")
        .iter()
        .find(|l| l["path"] == p.as_str())
        .unwrap_or_else(|| panic!("no lock {p} in {doc}"))
}

/// Poll `status --json PATH` until the lock's state is `state`.
pub fn wait_state(env: &Env, dir: &Path, path: &Path, state: &str) -> Value {
    let mut last = Value::Null;
    let ok = wait_until(BOUND, || {
        let doc = status_json(env, &[dir.to_str().expect("utf-8 path")]);
        last = lock_in(&doc, path).clone();
        last["state"] == state
    });
    assert!(ok, "{} never became {state}: {last}", path.display());
    last
}

/// Write a metadata line into a lock file by hand, as `locksup run` would.
pub fn write_metadata(path: &Path, fields: &Value) {
    let mut line = fields.to_string();
    line.push('\n');
    fs::write(path, line).expect("write metadata");
}

/// Metadata naming `pid` as the attempt and `supervisor` as its supervisor
/// (with the given start time), acquired `held_secs` ago, with a deadline
/// `left_secs` from now (negative: past) and `grace_ms`.
pub fn fake_metadata(
    pid: i32,
    supervisor: i32,
    supervisor_starttime: u64,
    attempt_id: &str,
    held_secs: i64,
    left_secs: i64,
    grace_ms: u64,
) -> Value {
    let now = std::time::SystemTime::now();
    let at = |secs: i64| {
        let t = if secs >= 0 {
            now + Duration::from_secs(secs as u64)
        } else {
            now - Duration::from_secs(secs.unsigned_abs())
        };
        humantime::format_rfc3339_millis(t).to_string()
    };
    serde_json::json!({
        "v": 1,
        "pid": pid,
        "pgid": pid,
        "createdAt": at(-held_secs),
        "starttime": starttime(pid).expect("attempt start time"),
        "supervisor_pid": supervisor,
        "supervisor_starttime": supervisor_starttime,
        "attempt_id": attempt_id,
        "session": null,
        "session_key": "fake",
        "command": ["sleep", "300"],
        "acquired_at": at(-held_secs),
        "deadline": at(left_secs),
        "timeout_ms": ((held_secs + left_secs).max(0) as u64) * 1000,
        "grace_ms": grace_ms,
        "host": "test",
    })
}

/// Start a plain `sleep 300` (a stand-in supervisor or bystander).
pub fn sleeper(env: &Env, guard: &Guard) -> Proc {
    let c = env
        .command("sleep")
        .arg("300")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sleep");
    guard.add(c.id() as i32);
    Proc(c)
}
