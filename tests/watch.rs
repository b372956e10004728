//! `locksup watch` against real locks: change events in order and on time,
//! new subdirectories, deleted roots, queue overflow, waiting, overdue and
//! orphaned, human lines, exit codes.

mod common;
mod observe;

use std::fs::{self, File};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use common::{Env, Guard, Running, hold_lock, json, run_to_end, spawn, starttime};
use observe::*;

/// The promise: a change is reported within a second.
const WITHIN: Duration = Duration::from_secs(1);

/// `locksup watch --json PATHS...`, once it has said `ready`.
fn watch(env: &Env, guard: &Guard, paths: &[&Path]) -> (Running, Value) {
    let mut c = env.cmd();
    c.args(["watch", "--json"]).args(paths);
    c.env("RUST_LOG", "locksup=debug");
    let mut r = spawn(c, guard);
    let line = r.out.expect("ready event", BOUND);
    let v = json(&line);
    assert_eq!(v["event"], "ready", "{line}");
    (r, v)
}

/// The next event of kind `event` about `path`, skipping others; panics
/// if none comes within `limit`.
fn next_event(r: &mut Running, event: &str, path: &Path, limit: Duration) -> Value {
    let p = path.display().to_string();
    let line = r.out.expect_match(&format!("{event} {p}"), limit, |l| {
        let v: Value = serde_json::from_str(l).unwrap_or(Value::Null);
        v["event"] == event && v["path"] == p.as_str()
    });
    json(&line)
}

/// Every event line seen so far, parsed.
fn seen(r: &Running) -> Vec<Value> {
    r.out.seen.iter().map(|l| json(l)).collect()
}

#[test]
fn acquire_and_release_are_reported_in_order_within_a_second() {
    let env = Env::new();
    let guard = Guard::new();
    let dir = env.join("w");
    fs::create_dir(&dir).unwrap();
    let (mut w, ready) = watch(&env, &guard, &[&dir]);
    assert_eq!(ready["locks"], serde_json::json!([]));

    // flock(1): the lock file does not exist yet.
    let lock = dir.join("f.lock");
    let t0 = Instant::now();
    let holder = flock_hold(&env, &guard, &lock, &[], false);
    let ev = next_event(&mut w, "acquired", &lock, BOUND);
    assert!(t0.elapsed() < WITHIN, "acquired after {:?}", t0.elapsed());
    assert_eq!(ev["state"], "held");
    assert_eq!(ev["lock"]["pid"], holder.id());
    assert!(ev["lock"]["metadata"].is_null());
    common::rfc3339(ev["ts"].as_str().unwrap());
    let t1 = Instant::now();
    drop(holder);
    let ev = next_event(&mut w, "released", &lock, BOUND);
    assert!(t1.elapsed() < WITHIN, "released after {:?}", t1.elapsed());
    assert_eq!(ev["state"], "free");

    // locksup run: the acquired event names the attempt.
    let session = dir.join("abc.jsonl");
    let lock = dir.join("abc.jsonl.lock");
    let t2 = Instant::now();
    let (sup, pid) = start_attempt(
        &env,
        &guard,
        &[
            "--session",
            session.to_str().unwrap(),
            "--attempt-id",
            "w-1",
            "--timeout",
            "1h",
        ],
        &["sleep", "300"],
    );
    let ev = next_event(&mut w, "acquired", &lock, BOUND);
    assert!(
        t2.elapsed() < WITHIN + Duration::from_secs(1),
        "acquired after {:?}",
        t2.elapsed()
    );
    assert_eq!(ev["lock"]["attempt_id"], "w-1", "{ev}");
    assert_eq!(ev["lock"]["pid"], pid);
    assert_eq!(
        ev["lock"]["supervisor_pid"],
        common::supervisor_of(sup.pid())
    );
    // Cancel it the operator's way: TERM to the supervisor.
    let t3 = Instant::now();
    kill(Pid::from_raw(sup.pid()), Signal::SIGTERM).unwrap();
    let ev = next_event(&mut w, "released", &lock, BOUND);
    assert!(t3.elapsed() < WITHIN, "released after {:?}", t3.elapsed());
    assert_eq!(ev["lock"]["attempt_id"], "w-1");

    // In order: acquired before released, for each lock.
    let order: Vec<(String, String)> = seen(&w)
        .iter()
        .filter(|v| v["event"] == "acquired" || v["event"] == "released")
        .map(|v| {
            (
                v["event"].as_str().unwrap().to_owned(),
                v["path"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let f = dir.join("f.lock").display().to_string();
    let a = lock.display().to_string();
    assert_eq!(
        order,
        vec![
            ("acquired".into(), f.clone()),
            ("released".into(), f),
            ("acquired".into(), a.clone()),
            ("released".into(), a),
        ]
    );
    drop(sup);
}

#[test]
fn new_subdirectories_are_watched_and_deleted_roots_survived() {
    let env = Env::new();
    let guard = Guard::new();
    let a = env.join("a");
    let b = env.join("b");
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    let held_in_a = a.join("h.lock");
    let h = flock_hold(&env, &guard, &held_in_a, &[], false);
    let (mut w, ready) = watch(&env, &guard, &[&a, &b]);
    assert_eq!(ready["locks"].as_array().unwrap().len(), 1, "{ready}");
    assert_eq!(ready["locks"][0]["path"], held_in_a.display().to_string());

    // A new subdirectory tree, created at once.
    let deep = b.join("x/y/z");
    fs::create_dir_all(&deep).unwrap();
    let lock = deep.join("deep.lock");
    let holder = flock_hold(&env, &guard, &lock, &[], false);
    next_event(&mut w, "acquired", &lock, BOUND);
    drop(holder);
    next_event(&mut w, "released", &lock, BOUND);

    // A root deleted, with a held lock file in it: reported gone.
    fs::remove_dir_all(&a).unwrap();
    next_event(&mut w, "removed", &held_in_a, BOUND);
    drop(h);
    // The other root still works.
    let lock = b.join("still.lock");
    let holder = flock_hold(&env, &guard, &lock, &[], false);
    next_event(&mut w, "acquired", &lock, BOUND);
    drop(holder);
    // The deleted root, created again, is followed again.
    fs::create_dir(&a).unwrap();
    fs::create_dir(a.join("sub")).unwrap();
    let lock = a.join("sub/again.lock");
    let _holder = flock_hold(&env, &guard, &lock, &[], false);
    next_event(&mut w, "acquired", &lock, BOUND);
    assert!(w.running(), "watch exited: {:?}", w.err.seen);
}

#[test]
fn waiting_orphaned_and_overdue_events() {
    let env = Env::new();
    let guard = Guard::new();
    let dir = env.path();
    let (mut w, _) = watch(&env, &guard, &[&dir]);

    // waiting: a flock(1) blocked behind another.
    let lock = dir.join("busy.lock");
    let _holder = flock_hold(&env, &guard, &lock, &[], false);
    let waiter = flock_hold(&env, &guard, &lock, &[], true);
    let ev = next_event(&mut w, "waiting", &lock, BOUND);
    assert_eq!(ev["pids"], serde_json::json!([waiter.id()]), "{ev}");
    assert_eq!(ev["lock"]["waiters"], 1);

    // orphaned: the supervisor is killed; a grandchild keeps the lock.
    let lock = dir.join("orphan.lock");
    let (mut sup, first) = start_attempt(
        &env,
        &guard,
        &[
            "--lock",
            lock.to_str().unwrap(),
            "--attempt-id",
            "o-1",
            "--timeout",
            "1h",
        ],
        &["sh", "-c", "sleep 300 & echo $!; wait"],
    );
    let grandchild = sup.out.expect_pid("grandchild pid", BOUND);
    guard.add(grandchild);
    next_event(&mut w, "acquired", &lock, BOUND);
    // The supervisor and its guardian (the locksup started) together.
    common::kill_guardian_and_supervisor(sup.pid());
    sup.wait(BOUND);
    let ev = next_event(&mut w, "orphaned", &lock, BOUND);
    // The attempt's first process gets its parent-death SIGKILL from the
    // kernel as the supervisor dies, not before: the orphan may be seen
    // while it is still going (then it is the holder named), or after.
    assert!(
        ev["lock"]["pid"] == grandchild || ev["lock"]["pid"] == first,
        "{ev}"
    );
    assert_eq!(ev["lock"]["attempt_id"], "o-1");
    // Its end is a release.
    kill(Pid::from_raw(grandchild), Signal::SIGKILL).unwrap();
    next_event(&mut w, "released", &lock, BOUND);

    // overdue: a deadline that passes while watching (metadata by hand,
    // a live stand-in supervisor).
    let lock = dir.join("late.lock");
    let sup = sleeper(&env, &guard);
    let sup_pid = sup.id() as i32;
    File::create(&lock).unwrap();
    let holder = flock_hold(&env, &guard, &lock, &[], false);
    write_metadata(
        &lock,
        &fake_metadata(
            holder.id() as i32,
            sup_pid,
            starttime(sup_pid).unwrap(),
            "late-1",
            1,
            1,
            0,
        ),
    );
    let ev = next_event(&mut w, "overdue", &lock, BOUND);
    assert_eq!(ev["lock"]["attempt_id"], "late-1");
    assert!(ev["lock"]["left_ms"].as_i64().unwrap() <= -1000, "{ev}");
}

#[test]
fn queue_overflow_is_answered_with_a_rescan() {
    const FILES: usize = 7000;
    let env = Env::new();
    let guard = Guard::new();
    let dir = env.join("burst");
    fs::create_dir(&dir).unwrap();
    let (mut w, _) = watch(&env, &guard, &[&dir]);
    // Stop watch so the kernel's queue (16384 events by default) overflows:
    // each new file is a create, an open and a close.
    kill(Pid::from_raw(w.pid()), Signal::SIGSTOP).unwrap();
    // Directly in the watched directory (files in new subdirectories would
    // make no events until those are watched).
    let paths: Vec<_> = (0..FILES).map(|i| dir.join(format!("s{i}.lock"))).collect();
    for p in &paths {
        File::create(p).unwrap();
    }
    let held: Vec<File> = paths.iter().step_by(700).map(|p| hold_lock(p)).collect();
    kill(Pid::from_raw(w.pid()), Signal::SIGCONT).unwrap();
    w.err
        .expect_match("overflow diagnostic", BOUND, |l| l.contains("overflow"));
    // Every held file, in whatever order the rescan found them.
    let mut want: std::collections::BTreeSet<String> = paths
        .iter()
        .step_by(700)
        .map(|p| p.display().to_string())
        .collect();
    while !want.is_empty() {
        let line = w.out.expect_match("acquired after overflow", BOUND, |l| {
            l.contains("\"acquired\"")
        });
        let ev = json(&line);
        assert!(want.remove(ev["path"].as_str().unwrap()), "unexpected {ev}");
        assert_eq!(ev["lock"]["pid"], std::process::id());
    }
    assert_eq!(held.len(), 10);
    // And it goes on: a release, and a new file in a new directory.
    drop(held);
    next_event(&mut w, "released", &paths[0], BOUND);
    fs::create_dir(dir.join("late")).unwrap();
    let lock = dir.join("late/new.lock");
    let _holder = flock_hold(&env, &guard, &lock, &[], false);
    next_event(&mut w, "acquired", &lock, BOUND);
}

#[test]
fn human_lines_when_not_a_terminal_and_clean_exit() {
    let env = Env::new();
    let guard = Guard::new();
    let dir = env.path();
    let mut c = env.cmd();
    c.args(["watch", dir.to_str().unwrap()]);
    let mut w = spawn(c, &guard);
    let ready = w.out.expect("ready line", BOUND);
    assert!(ready.contains("ready: watching"), "{ready}");
    let lock = dir.join("h.lock");
    let holder = flock_hold(&env, &guard, &lock, &[], false);
    let line = w
        .out
        .expect_match("acquired line", BOUND, |l| l.contains("acquired"));
    assert!(
        line.contains(&lock.display().to_string())
            && line.contains(&format!("pid {}", holder.id())),
        "{line}"
    );
    kill(Pid::from_raw(w.pid()), Signal::SIGTERM).unwrap();
    assert_eq!(w.code(BOUND), 0);
    assert!(w.err.rest(Duration::from_millis(200)).is_empty());
}

#[test]
fn bad_paths_are_one_line_errors() {
    let env = Env::new();
    let mut c = env.cmd();
    c.args(["watch", env.join("missing").to_str().unwrap()]);
    let o = run_to_end(c);
    assert_eq!(o.code, 1, "{o:?}");
    common::assert_one_error_line(&o);
    let mut c = env.cmd();
    c.arg("watch");
    let o = run_to_end(c);
    assert_eq!(o.code, 125, "{o:?}");
    common::assert_one_error_line(&o);
}

#[test]
fn a_burst_of_changes_ends_in_the_kernel_state() {
    const FILES: usize = 3000;
    let env = Env::new();
    let guard = Guard::new();
    let dir = env.join("burst");
    fs::create_dir(&dir).unwrap();
    let (mut w, _) = watch(&env, &guard, &[&dir]);
    let paths: Vec<_> = (0..FILES).map(|i| dir.join(format!("b{i}.lock"))).collect();
    for p in &paths {
        File::create(p).unwrap();
    }
    // Locks taken and let go at once, over and over, while files appear.
    for p in paths.iter().step_by(6) {
        drop(hold_lock(p));
    }
    let kept: Vec<File> = paths.iter().step_by(150).map(|p| hold_lock(p)).collect();
    // A sentinel taken last and let go: once its release is reported,
    // every earlier change has been seen.
    let sentinel = dir.join("sentinel.lock");
    let h = flock_hold(&env, &guard, &sentinel, &[], false);
    next_event(&mut w, "acquired", &sentinel, BOUND);
    drop(h);
    next_event(&mut w, "released", &sentinel, BOUND);
    let mut last: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for v in seen(&w) {
        if let (Some(p), Some(e)) = (v["path"].as_str(), v["event"].as_str()) {
            last.insert(p.to_owned(), e.to_owned());
        }
    }
    for (i, p) in paths.iter().enumerate() {
        let want_held = i % 150 == 0;
        let got = last.get(&p.display().to_string()).map(String::as_str);
        if want_held {
            assert_eq!(got, Some("acquired"), "{} should be held", p.display());
        } else {
            assert!(
                got.is_none() || got == Some("released"),
                "{}: {got:?}",
                p.display()
            );
        }
    }
    assert!(w.running());
    drop(kept);
}
