//! Integration tests for `locksup run`: the real binary against real
//! processes, checking exit codes, the kernel's lock state (probed with a
//! separate `flock(2)` or `flock(1)`), and that no process of the attempt
//! survives.

// These tests call libc directly to build hostile situations.
#![allow(unsafe_code)]
// Test code converts small, known values (PIDs, frame lengths, times).
#![allow(clippy::cast_possible_truncation)]

#[macro_use]
mod common;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::*;

const TIMEOUT: &str = "300ms";
const GRACE: &str = "300ms";
const T: Duration = Duration::from_millis(300);
const G: Duration = Duration::from_millis(300);
const SLACK: Duration = Duration::from_secs(1);

/// The command prints its pid (the lock holder) and becomes `sleep 1000`.
const PID_SLEEP: &str = "echo $$; exec sleep 1000";
/// Same, but ignores TERM (ignored dispositions survive exec).
const PID_SLEEP_NO_TERM: &str = "trap '' TERM; echo $$; exec sleep 1000";

/// Run `flock(1)` with `args`, bounded, and return its exit code.
fn flock_cmd(args: &[&std::ffi::OsStr]) -> i32 {
    let mut c = Command::new("flock");
    c.args(args).stdin(Stdio::null());
    let guard = Guard::new();
    let mut r = spawn(c, &guard);
    r.code(LIMIT)
}

fn flock_n(lock: &Path) -> i32 {
    flock_cmd(&["-n".as_ref(), lock.as_os_str(), "true".as_ref()])
}

// ---------------------------------------------------------------------------
// The command ends by itself
// ---------------------------------------------------------------------------

#[test]
fn exit_zero_passes_through_and_lock_is_free_after() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let o = run_to_end(env.run(args![
        "--lock",
        &lock,
        "--timeout",
        "10s",
        "--",
        "sh",
        "-c",
        "echo hello"
    ]));
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout, "hello\n", "{o:?}");
    assert!(o.elapsed < Duration::from_secs(5), "{o:?}");
    assert!(lock.exists(), "lock file should have been created");
    assert!(lock_is_free(&lock), "lock still held after the run");
}

#[test]
fn exit_three_passes_through_and_lock_is_free_after() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let o = run_to_end(env.run(args![
        "--lock",
        &lock,
        "--timeout",
        "10s",
        "--",
        "sh",
        "-c",
        "exit 3"
    ]));
    assert_eq!(o.code, 3, "{o:?}");
    assert!(o.elapsed < Duration::from_secs(5), "{o:?}");
    assert!(lock_is_free(&lock));
}

#[test]
fn lock_is_held_while_the_command_runs() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    let mut r = spawn(
        env.run(args![
            "--lock",
            &lock,
            "--timeout",
            "60s",
            "--",
            "sh",
            "-c",
            PID_SLEEP
        ]),
        &guard,
    );
    let pid = r.out.expect_pid("command pid", SOON);
    guard.add(pid);
    assert!(
        !lock_is_free(&lock),
        "lock should be held while the command runs"
    );
    assert_eq!(
        flock_n(&lock),
        1,
        "flock -n should fail while locksup holds the lock"
    );
    // The attempt's own process group, led by the command.
    assert_eq!(
        pgid_of(pid),
        Some(pid),
        "the command should lead its own process group"
    );
    assert_ne!(
        pgid_of(pid),
        pgid_of(r.pid()),
        "attempt must not share the supervisor's group"
    );
    // The command holds the locked open file description.
    assert_eq!(
        fds_on(pid, &lock),
        (true, true),
        "command should hold the locked descriptor"
    );
    kill(pid, libc::SIGTERM);
    // An operator's kill -TERM of the command: 128 + 15.
    assert_eq!(r.code(LIMIT), 143, "stderr: {:?}", r.err.seen);
    assert!(wait_lock_free(&lock, SOON));
}

// ---------------------------------------------------------------------------
// Timeouts
// ---------------------------------------------------------------------------

fn timeout_run(preserve: bool) -> (i32, Duration) {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    let mut a = args!["--lock", &lock, "--timeout", TIMEOUT, "--grace", GRACE];
    if preserve {
        a.push("--preserve-status".into());
    }
    a.extend(args!["--", "sh", "-c", PID_SLEEP]);
    let mut r = spawn(env.run(a), &guard);
    let pid = r.out.expect_pid("command pid", SOON);
    guard.add(pid);
    let code = r.code(LIMIT);
    let elapsed = r.started.elapsed();
    assert!(
        wait_pid_gone(pid, SOON),
        "command {pid} survived the timeout"
    );
    assert!(
        wait_lock_free(&lock, SOON),
        "lock not free after the timeout"
    );
    (code, elapsed)
}

#[test]
fn timeout_with_term_obeying_command_exits_124() {
    let (code, elapsed) = timeout_run(false);
    assert_eq!(code, 124);
    assert!(elapsed >= T, "ended before the timeout: {elapsed:?}");
    assert!(elapsed < T + G + SLACK, "took too long: {elapsed:?}");
}

#[test]
fn timeout_with_preserve_status_exits_143() {
    let (code, elapsed) = timeout_run(true);
    assert_eq!(code, 143);
    assert!(elapsed >= T && elapsed < T + G + SLACK, "{elapsed:?}");
}

#[test]
fn timeout_with_term_ignoring_command_exits_137_and_frees_lock_within_grace() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    let mut r = spawn(
        env.run(args![
            "--lock",
            &lock,
            "--timeout",
            TIMEOUT,
            "--grace",
            GRACE,
            "--",
            "sh",
            "-c",
            PID_SLEEP_NO_TERM
        ]),
        &guard,
    );
    let pid = r.out.expect_pid("command pid", SOON);
    // The command printed after the lock was acquired: the deadline is no
    // later than now + timeout.
    let ready = Instant::now();
    guard.add(pid);
    let code = r.code(LIMIT);
    let elapsed = r.started.elapsed();
    assert_eq!(code, 137, "stderr: {:?}", r.err.seen);
    // KILL only comes after the grace period.
    assert!(
        elapsed >= T + G - Duration::from_millis(20),
        "final signal came before timeout + grace: {elapsed:?}"
    );
    let bound = (ready + T + G + SLACK).saturating_duration_since(Instant::now());
    assert!(
        wait_lock_free(&lock, bound),
        "lock not free within grace + 1 s of the deadline"
    );
    assert!(!pid_alive(pid), "command survived the final signal");
}

#[test]
fn timeout_kills_grandchildren_that_inherited_the_lock() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    let script = "sleep 1000 & echo $!; sleep 1000 & echo $!; echo $$; exec sleep 1000";
    let mut r = spawn(
        env.run(args![
            "--lock",
            &lock,
            "--timeout",
            "1s",
            "--grace",
            GRACE,
            "--",
            "sh",
            "-c",
            script
        ]),
        &guard,
    );
    let mut pids = Vec::new();
    for what in [
        "first background sleep",
        "second background sleep",
        "command",
    ] {
        let p = r.out.expect_pid(what, SOON);
        guard.add(p);
        pids.push(p);
    }
    for &p in &pids {
        assert_eq!(
            fds_on(p, &lock),
            (true, true),
            "{p} should hold the inherited lock"
        );
    }
    assert_eq!(r.code(LIMIT), 124, "stderr: {:?}", r.err.seen);
    assert_all_gone(&pids, SOON);
    assert!(wait_lock_free(&lock, SOON), "lock still held by a survivor");
}

#[test]
fn timeout_kills_setsid_escapees_and_double_forked_daemons() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    // esc: setsid'd background child; daemon: double-forked (its parent
    // exits, so it is orphaned); escd: both.
    let script = r#"
        setsid sh -c 'echo esc $$; exec sleep 1000' &
        ( sh -c 'echo daemon $$; exec sleep 1000' & )
        ( setsid sh -c 'echo escd $$; exec sleep 1000' & )
        echo main $$
        exec sleep 1000
    "#;
    let mut r = spawn(
        env.run(args![
            "--lock",
            &lock,
            "--timeout",
            "1s",
            "--grace",
            GRACE,
            "--",
            "sh",
            "-c",
            script
        ]),
        &guard,
    );
    let mut found: HashMap<String, i32> = HashMap::new();
    while found.len() < 4 {
        let l = r.out.expect("pid report", SOON);
        let mut it = l.split_whitespace();
        let (Some(name), Some(pid)) = (it.next(), it.next()) else {
            panic!("unexpected line {l:?}");
        };
        let pid: i32 = pid.parse().unwrap();
        guard.add(pid);
        found.insert(name.to_owned(), pid);
    }
    let main = found["main"];
    for name in ["esc", "escd"] {
        let p = found[name];
        assert_eq!(
            sid_of(p),
            Some(p),
            "{name} ({p}) should have its own session"
        );
        assert_ne!(pgid_of(p), Some(main), "{name} escaped the process group");
    }
    for (name, &p) in &found {
        assert_eq!(
            fds_on(p, &lock),
            (true, true),
            "{name} ({p}) should hold the lock"
        );
    }
    let code = r.code(LIMIT);
    assert_eq!(code, 124, "stderr: {:?}", r.err.seen);
    let pids: Vec<i32> = found.values().copied().collect();
    assert_all_gone(&pids, SOON);
    assert!(wait_lock_free(&lock, SOON), "lock still held by an escapee");
}

#[test]
fn stopped_command_still_ends_on_time() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    let mut r = spawn(
        env.run(args![
            "--lock",
            &lock,
            "--timeout",
            TIMEOUT,
            "--grace",
            GRACE,
            "--",
            "sh",
            "-c",
            "echo $$; kill -STOP $$; echo resumed"
        ]),
        &guard,
    );
    let pid = r.out.expect_pid("command pid", SOON);
    let ready = Instant::now();
    guard.add(pid);
    let code = r.code(LIMIT);
    assert!(
        ready.elapsed() < T + G + SLACK,
        "stopped command was not ended on time: {:?}",
        ready.elapsed()
    );
    // TERM then SIGCONT (design §3.4): the stopped command dies of TERM.
    assert_eq!(code, 124, "stderr: {:?}", r.err.seen);
    assert!(!pid_alive(pid));
    assert!(wait_lock_free(&lock, SOON));
}

#[test]
fn custom_first_and_final_signals() {
    // First signal HUP: sleep dies of it -> 124, or 129 with --preserve-status.
    let env = Env::new();
    let lock = env.join("a.lock");
    let o = run_to_end(env.run(args![
        "--lock",
        &lock,
        "-t",
        TIMEOUT,
        "-g",
        GRACE,
        "-s",
        "HUP",
        "--preserve-status",
        "--",
        "sleep",
        "1000"
    ]));
    assert_eq!(o.code, 129, "{o:?}");
    let o = run_to_end(env.run(args![
        "--lock", &lock, "-t", TIMEOUT, "-g", GRACE, "--signal", "SIGHUP", "--", "sleep", "1000"
    ]));
    assert_eq!(o.code, 124, "{o:?}");
    // INT ignored, final signal TERM -> 128 + 15.
    let guard = Guard::new();
    let mut r = spawn(
        env.run(args![
            "--lock",
            &lock,
            "-t",
            TIMEOUT,
            "-g",
            GRACE,
            "--signal",
            "INT",
            "--final-signal",
            "TERM",
            "--",
            "sh",
            "-c",
            "trap '' INT; echo $$; exec sleep 1000"
        ]),
        &guard,
    );
    let pid = r.out.expect_pid("command pid", SOON);
    guard.add(pid);
    assert_eq!(r.code(LIMIT), 143, "stderr: {:?}", r.err.seen);
    assert!(r.started.elapsed() >= T + G - Duration::from_millis(20));
    assert!(!pid_alive(pid));
    assert!(wait_lock_free(&lock, SOON));
}

// ---------------------------------------------------------------------------
// Background children left behind by a command that exits
// ---------------------------------------------------------------------------

#[test]
fn background_children_are_killed_when_the_command_exits() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    let mut r = spawn(
        env.run(args![
            "--lock",
            &lock,
            "--timeout",
            "60s",
            "--grace",
            GRACE,
            "--",
            "sh",
            "-c",
            "sleep 1000 & echo $!; exit 3"
        ]),
        &guard,
    );
    let bg = r.out.expect_pid("background pid", SOON);
    guard.add(bg);
    assert_eq!(
        r.code(Duration::from_secs(10)),
        3,
        "stderr: {:?}",
        r.err.seen
    );
    assert!(r.started.elapsed() < G + SLACK + SLACK);
    assert_all_gone(&[bg], SOON);
    assert!(wait_lock_free(&lock, SOON));
}

#[test]
fn background_children_ignoring_term_are_killed_after_grace() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    let mut r = spawn(
        env.run(args![
            "--lock",
            &lock,
            "--timeout",
            "60s",
            "--grace",
            GRACE,
            "--",
            "sh",
            "-c",
            "(trap '' TERM; exec sleep 1000) & echo $!; exit 3"
        ]),
        &guard,
    );
    let bg = r.out.expect_pid("background pid", SOON);
    let ready = Instant::now();
    guard.add(bg);
    assert_eq!(
        r.code(Duration::from_secs(10)),
        3,
        "stderr: {:?}",
        r.err.seen
    );
    assert!(ready.elapsed() < G + SLACK, "{:?}", ready.elapsed());
    assert_all_gone(&[bg], SOON);
    assert!(wait_lock_free(&lock, SOON));
}

#[test]
fn a_lock_kept_by_a_process_outside_the_attempt_is_reported_as_a_leak() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let events = env.join("events.jsonl");
    let guard = Guard::new();
    let mut r = spawn(
        env.run(args![
            "--lock",
            &lock,
            "--timeout",
            TIMEOUT,
            "--grace",
            GRACE,
            "--events",
            &events,
            "--",
            "sh",
            "-c",
            "echo $$ $LOCKSUP_LOCK_FD; exec sleep 1000"
        ]),
        &guard,
    );
    let line = r.out.expect("pid and fd", SOON);
    let (pid, fd) = line.split_once(' ').expect("pid fd");
    let (pid, fd): (i32, i32) = (pid.parse().unwrap(), fd.parse().unwrap());
    guard.add(pid);
    // The test process now shares the attempt's locked open file description.
    let stolen = steal_fd(pid, fd);
    let code = r.code(LIMIT);
    assert!(
        r.started.elapsed() < T + G + Duration::from_secs(5),
        "leak check took {:?}",
        r.started.elapsed()
    );
    assert_eq!(code, 124, "stderr: {:?}", r.err.seen);
    assert!(!pid_alive(pid));
    assert!(!lock_is_free(&lock), "the stolen descriptor keeps the lock");
    let me = std::process::id() as i32;
    let text = fs::read_to_string(&events).unwrap();
    let evs = events_in(&text);
    let leak = evs
        .iter()
        .find(|e| e["event"] == "leak")
        .unwrap_or_else(|| panic!("no leak event: {text}"));
    assert!(
        leak["pids"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| *p == me)),
        "leak event should name the test process {me}: {leak}"
    );
    assert!(
        !evs.iter().any(|e| e["event"] == "released"),
        "a leaked lock must not be reported released: {text}"
    );
    let err = r.err.rest(SOON);
    assert!(
        err.iter()
            .any(|l| l.starts_with("locksup: ") && l.contains(&me.to_string())),
        "the leak should be reported on stderr with the holder's pid: {err:?}"
    );
    drop(stolen);
    // Another test thread that forks between our drop and its exec holds a
    // close-on-exec copy of the descriptor for a moment: allow for it.
    assert!(wait_lock_free(&lock, SLACK));
}

#[test]
fn timeout_clock_starts_at_acquisition() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let held = hold_lock(&lock);
    let guard = Guard::new();
    let mut r = spawn(
        env.run(args![
            "--lock",
            &lock,
            "--timeout",
            "1s",
            "--wait",
            "20s",
            "--events",
            "-",
            "--",
            "sh",
            "-c",
            "echo \"$LOCKSUP_DEADLINE\"; sleep 0.5; exit 4"
        ]),
        &guard,
    );
    r.err.expect_match("waiting event", SOON, |l| {
        l.starts_with('{') && json(l)["event"] == "waiting"
    });
    // Hold the lock for longer than the timeout (a duration requirement,
    // not synchronisation).
    std::thread::sleep(Duration::from_millis(1200));
    drop(held);
    let deadline = rfc3339(&r.out.expect("deadline", SOON));
    let left = secs_from_now(deadline);
    assert!(
        (0.5..=1.05).contains(&left),
        "deadline {left}s away after acquisition"
    );
    assert_eq!(
        r.code(LIMIT),
        4,
        "timeout must count from acquisition: {:?}",
        r.err.seen
    );
}

// ---------------------------------------------------------------------------
// Supervisor death
// ---------------------------------------------------------------------------

#[test]
fn sigkill_of_supervisor_kills_the_command_and_frees_the_lock() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    let mut r = spawn(
        env.run(args![
            "--lock",
            &lock,
            "--timeout",
            "60s",
            "--",
            "sh",
            "-c",
            PID_SLEEP
        ]),
        &guard,
    );
    let pid = r.out.expect_pid("command pid", SOON);
    guard.add(pid);
    assert!(!lock_is_free(&lock));
    kill(r.pid(), libc::SIGKILL);
    r.wait(SOON);
    assert!(wait_pid_gone(pid, SOON), "command survived its supervisor");
    assert!(
        wait_lock_free(&lock, SOON),
        "lock leaked after the supervisor died"
    );
}

// ---------------------------------------------------------------------------
// Contention
// ---------------------------------------------------------------------------

#[test]
fn second_run_waits_and_gets_the_lock_when_the_first_ends() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    let mut first = spawn(
        env.run(args![
            "--lock",
            &lock,
            "--timeout",
            "60s",
            "--",
            "sh",
            "-c",
            PID_SLEEP
        ]),
        &guard,
    );
    let pid = first.out.expect_pid("first command pid", SOON);
    guard.add(pid);
    let mut second = spawn(
        env.run(args![
            "--lock", &lock, "--wait", "20s", "--events", "-", "--", "sh", "-c", "echo got"
        ]),
        &guard,
    );
    second.err.expect_match("waiting event", SOON, |l| {
        l.starts_with('{') && json(l)["event"] == "waiting"
    });
    assert!(second.running(), "second run should still be waiting");
    assert_eq!(
        second.out.next(Duration::ZERO),
        None,
        "the second command ran before it had the lock"
    );
    // End the first attempt (operator kill of the command: 143).
    kill(pid, libc::SIGTERM);
    assert_eq!(first.code(LIMIT), 143, "first stderr: {:?}", first.err.seen);
    assert_eq!(second.out.expect("second output", SOON), "got");
    assert_eq!(
        second.code(LIMIT),
        0,
        "second stderr: {:?}",
        second.err.seen
    );
    let rest = second.err.rest(SOON);
    let all: Vec<String> = second.err.seen.iter().chain(rest.iter()).cloned().collect();
    let evs = events_in(&all.join("\n"));
    let acq = evs
        .iter()
        .find(|e| e["event"] == "acquired")
        .unwrap_or_else(|| panic!("no acquired event: {all:?}"));
    assert!(
        acq["wait_ms"].as_f64().unwrap_or(-1.0) > 0.0,
        "wait_ms should be > 0: {acq}"
    );
    assert!(lock_is_free(&lock));
}

#[test]
fn no_wait_on_a_busy_lock_exits_75_without_running_the_command() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let marker = env.join("ran");
    let _held = hold_lock(&lock);
    for flag in [
        args!["--no-wait"],
        args!["-n"],
        args!["--wait", "0"],
        args!["-w", "0"],
    ] {
        let events = env.join("events.jsonl");
        let _ = fs::remove_file(&events);
        let mut a = args!["--lock", &lock, "--events", &events];
        a.extend(flag.clone());
        a.extend(args!["--", "touch", &marker]);
        let o = run_to_end(env.run(a));
        assert_eq!(o.code, 75, "{flag:?}: {o:?}");
        assert!(o.elapsed < Duration::from_secs(2), "{flag:?} waited: {o:?}");
        assert!(!marker.exists(), "command ran without the lock ({flag:?})");
        let evs = events_in(&fs::read_to_string(&events).unwrap_or_default());
        let names: Vec<&str> = evs
            .iter()
            .map(|e| e["event"].as_str().unwrap_or("?"))
            .collect();
        assert!(names.contains(&"conflict"), "{flag:?}: events {names:?}");
        assert!(
            !names.contains(&"acquired") && !names.contains(&"started"),
            "{names:?}"
        );
    }
    assert!(
        !lock_is_free(&lock),
        "the test's own lock must still be held"
    );
}

#[test]
fn a_one_millisecond_wait_says_waiting_with_the_holders_before_the_conflict() {
    // A wait is said at once, with the holders, and before the conflict
    // that ends it.
    let env = Env::new();
    let lock = env.join("a.lock");
    let events = env.join("events.jsonl");
    let _held = hold_lock(&lock);
    let o = run_to_end(env.run(args![
        "--lock", &lock, "--wait", "1ms", "--events", &events, "--", "true"
    ]));
    assert_eq!(o.code, 75, "{o:?}");
    let evs = events_in(&fs::read_to_string(&events).unwrap_or_default());
    let names: Vec<&str> = evs
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?"))
        .collect();
    let waiting = names.iter().position(|n| *n == "waiting");
    let conflict = names.iter().position(|n| *n == "conflict");
    assert!(
        waiting.is_some() && waiting < conflict,
        "waiting before conflict: {names:?}"
    );
    let me = std::process::id() as i64;
    assert_eq!(
        evs[waiting.unwrap_or(0)]["holders"],
        serde_json::json!([me]),
        "the kernel's holder is this test"
    );
}

#[test]
fn wait_expires_after_the_given_duration_with_75() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let marker = env.join("ran");
    let events = env.join("events.jsonl");
    let _held = hold_lock(&lock);
    let o = run_to_end(env.run(args![
        "--lock", &lock, "--wait", "0.5s", "--events", &events, "--", "touch", &marker
    ]));
    assert_eq!(o.code, 75, "{o:?}");
    assert!(
        o.elapsed >= Duration::from_millis(400) && o.elapsed <= Duration::from_secs(2),
        "waited {:?}",
        o.elapsed
    );
    assert!(!marker.exists());
    let evs = events_in(&fs::read_to_string(&events).unwrap_or_default());
    let names: Vec<&str> = evs
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?"))
        .collect();
    assert!(names.contains(&"waiting"), "{names:?}");
    assert!(names.contains(&"conflict"), "{names:?}");
}

#[test]
fn conflict_exit_code_changes_the_code() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let _held = hold_lock(&lock);
    let o = run_to_end(env.run(args![
        "--lock",
        &lock,
        "--no-wait",
        "--conflict-exit-code",
        "9",
        "--",
        "true"
    ]));
    assert_eq!(o.code, 9, "{o:?}");
}

#[test]
fn shared_locks_coexist_and_exclude_exclusive_ones() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    let mut first = spawn(
        env.run(args![
            "--lock",
            &lock,
            "--shared",
            "--timeout",
            "60s",
            "--",
            "sh",
            "-c",
            PID_SLEEP
        ]),
        &guard,
    );
    let pid = first.out.expect_pid("command pid", SOON);
    guard.add(pid);
    assert!(
        !lock_is_free(&lock),
        "exclusive probe should fail against a shared holder"
    );
    assert!(
        shared_lock_available(&lock),
        "a shared probe should succeed"
    );
    let o = run_to_end(env.run(args![
        "--lock",
        &lock,
        "--shared",
        "--no-wait",
        "--",
        "true"
    ]));
    assert_eq!(o.code, 0, "second shared run: {o:?}");
    let o = run_to_end(env.run(args!["--lock", &lock, "--no-wait", "--", "true"]));
    assert_eq!(o.code, 75, "exclusive run against a shared holder: {o:?}");
    kill(first.pid(), libc::SIGTERM);
    assert_eq!(first.code(LIMIT), 143);
    assert!(wait_lock_free(&lock, SOON));
}

// ---------------------------------------------------------------------------
// Interoperability with flock(1)
// ---------------------------------------------------------------------------

#[test]
fn flock_holder_excludes_locksup() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    let mut c = Command::new("flock");
    c.arg(&lock)
        .args(["sh", "-c", PID_SLEEP])
        .stdin(Stdio::null());
    let mut holder = spawn(c, &guard);
    let pid = holder.out.expect_pid("flock command pid", SOON);
    guard.add(pid);
    let marker = env.join("ran");
    let o = run_to_end(env.run(args!["--lock", &lock, "--no-wait", "--", "touch", &marker]));
    assert_eq!(o.code, 75, "{o:?}");
    assert!(!marker.exists());
    kill(pid, libc::SIGKILL);
    holder.wait(SOON);
    assert!(wait_lock_free(&lock, SOON));
    let o = run_to_end(env.run(args!["--lock", &lock, "--no-wait", "--", "touch", &marker]));
    assert_eq!(o.code, 0, "after flock(1) released: {o:?}");
    assert!(marker.exists());
}

#[test]
fn locksup_holder_excludes_flock() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    let mut r = spawn(
        env.run(args![
            "--lock",
            &lock,
            "--timeout",
            "60s",
            "--",
            "sh",
            "-c",
            PID_SLEEP
        ]),
        &guard,
    );
    let pid = r.out.expect_pid("command pid", SOON);
    guard.add(pid);
    assert_eq!(
        flock_n(&lock),
        1,
        "flock -n must fail while locksup holds the lock"
    );
    assert_eq!(
        flock_cmd(&[
            "-n".as_ref(),
            "-s".as_ref(),
            lock.as_os_str(),
            "true".as_ref()
        ]),
        1,
        "even a shared flock must fail against the exclusive lock"
    );
    kill(r.pid(), libc::SIGTERM);
    assert_eq!(r.code(LIMIT), 143);
    assert_eq!(
        flock_n(&lock),
        0,
        "flock -n should succeed after the attempt ended"
    );
}

// ---------------------------------------------------------------------------
// Signals to the supervisor
// ---------------------------------------------------------------------------

#[test]
fn term_to_supervisor_is_forwarded_and_frees_the_lock() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    let mut r = spawn(
        env.run(args![
            "--lock",
            &lock,
            "--timeout",
            "60s",
            "--grace",
            "30s",
            "--",
            "sh",
            "-c",
            PID_SLEEP
        ]),
        &guard,
    );
    let pid = r.out.expect_pid("command pid", SOON);
    guard.add(pid);
    let sent = Instant::now();
    kill(r.pid(), libc::SIGTERM);
    assert_eq!(r.code(LIMIT), 143, "stderr: {:?}", r.err.seen);
    assert!(
        sent.elapsed() < Duration::from_secs(5),
        "{:?}",
        sent.elapsed()
    );
    assert!(!pid_alive(pid));
    assert!(wait_lock_free(&lock, SOON));
}

#[test]
fn hup_int_and_quit_to_supervisor_are_forwarded() {
    for (sig, code) in [
        (libc::SIGHUP, 129),
        (libc::SIGINT, 130),
        (libc::SIGQUIT, 131),
    ] {
        let env = Env::new();
        let lock = env.join("a.lock");
        let guard = Guard::new();
        let mut r = spawn(
            env.run(args![
                "--lock",
                &lock,
                "--timeout",
                "60s",
                "--grace",
                "30s",
                "--",
                "sh",
                "-c",
                PID_SLEEP
            ]),
            &guard,
        );
        let pid = r.out.expect_pid("command pid", SOON);
        guard.add(pid);
        kill(r.pid(), sig);
        assert_eq!(
            r.code(Duration::from_secs(10)),
            code,
            "signal {sig}: stderr {:?}",
            r.err.seen
        );
        assert!(!pid_alive(pid));
        assert!(wait_lock_free(&lock, SOON));
    }
}

#[test]
fn second_term_to_supervisor_escalates_at_once() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    // The command traps TERM (reports it and carries on).
    let script = "trap 'echo got-term' TERM; echo $$; while :; do sleep 0.05; done";
    let mut r = spawn(
        env.run(args![
            "--lock",
            &lock,
            "--timeout",
            "60s",
            "--grace",
            "30s",
            "--",
            "sh",
            "-c",
            script
        ]),
        &guard,
    );
    let pid = r.out.expect_pid("command pid", SOON);
    guard.add(pid);
    let sent = Instant::now();
    kill(r.pid(), libc::SIGTERM);
    r.out.expect_match("got-term", SOON, |l| l == "got-term");
    assert!(r.running(), "a trapped TERM must not end the attempt");
    kill(r.pid(), libc::SIGTERM);
    assert_eq!(
        r.code(Duration::from_secs(10)),
        137,
        "stderr: {:?}",
        r.err.seen
    );
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "{:?}",
        sent.elapsed()
    );
    assert!(!pid_alive(pid));
    assert!(wait_lock_free(&lock, SOON));
}

#[test]
fn usr1_usr2_and_winch_are_passed_through_without_cancelling() {
    for (name, sig) in [
        ("USR1", libc::SIGUSR1),
        ("USR2", libc::SIGUSR2),
        ("WINCH", libc::SIGWINCH),
    ] {
        let env = Env::new();
        let lock = env.join("a.lock");
        let guard = Guard::new();
        let script =
            format!("trap 'echo got-{name}; exit 7' {name}; echo $$; while :; do sleep 0.05; done");
        let mut r = spawn(
            env.run(args![
                "--lock",
                &lock,
                "--timeout",
                "60s",
                "--grace",
                "30s",
                "--",
                "sh",
                "-c",
                script
            ]),
            &guard,
        );
        let pid = r.out.expect_pid("command pid", SOON);
        guard.add(pid);
        kill(r.pid(), sig);
        let want = format!("got-{name}");
        r.out.expect_match(&want, SOON, |l| l == want);
        assert_eq!(r.code(LIMIT), 7, "{name}: stderr: {:?}", r.err.seen);
        assert!(wait_lock_free(&lock, SOON));
    }
}

#[test]
fn sigint_ignored_at_start_stays_ignored_for_the_command() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let int_bit = 1u64 << (libc::SIGINT - 1);
    // With INT ignored by the shell that execs locksup.
    let mut c = env.command("sh");
    c.args([
        "-c",
        "trap '' INT; exec \"$0\" \"$@\"",
        BIN,
        "run",
        "--lock",
    ])
    .arg(&lock)
    .args(["--", "grep", "^SigIgn:", "/proc/self/status"]);
    let o = run_to_end(c);
    assert_eq!(o.code, 0, "{o:?}");
    let mask = parse_sigmask(o.stdout.trim());
    assert_ne!(
        mask & int_bit,
        0,
        "SIGINT should stay ignored: {:?}",
        o.stdout
    );
    // Control: not ignored at start, not ignored in the command.
    let o = run_to_end(env.run(args![
        "--lock",
        &lock,
        "--",
        "grep",
        "^SigIgn:",
        "/proc/self/status"
    ]));
    assert_eq!(o.code, 0, "{o:?}");
    let mask = parse_sigmask(o.stdout.trim());
    assert_eq!(
        mask & int_bit,
        0,
        "SIGINT must not be ignored: {:?}",
        o.stdout
    );
}

// ---------------------------------------------------------------------------
// Command errors: 127, 126
// ---------------------------------------------------------------------------

#[test]
fn command_not_found_exits_127() {
    let env = Env::new();
    let lock = env.join("a.lock");
    for cmd in ["locksup-test-no-such-command", "/nonexistent/dir/cmd"] {
        let o = run_to_end(env.run(args!["--lock", &lock, "--", cmd]));
        assert_eq!(o.code, 127, "{cmd}: {o:?}");
        assert_one_error_line(&o);
        assert!(lock_is_free(&lock));
    }
}

#[test]
fn command_not_executable_exits_126() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let script = env.write("script.sh", "#!/bin/sh\necho should-not-run\n");
    chmod(&script, 0o644);
    let o = run_to_end(env.run(args!["--lock", &lock, "--", &script]));
    assert_eq!(o.code, 126, "{o:?}");
    assert_one_error_line(&o);
    assert!(!o.stdout.contains("should-not-run"));
    assert!(lock_is_free(&lock));
}

// ---------------------------------------------------------------------------
// locksup failures: 125
// ---------------------------------------------------------------------------

/// Run `cmd` and expect exit 125 with exactly one `locksup: ` line on stderr.
fn expect_125(cmd: Command, what: &str) -> Outcome {
    let o = run_to_end(cmd);
    assert_eq!(o.code, 125, "{what}: {o:?}");
    assert_one_error_line(&o);
    o
}

#[test]
fn bad_durations_exit_125() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let marker = env.join("ran");
    for opt in ["--timeout", "--grace", "--wait"] {
        for bad in [
            "abc",
            "-1s",
            "5x",
            "",
            "1.5.5",
            "99999999999999999999999h",
            "10 parsecs",
        ] {
            let o = expect_125(
                env.run(args!["--lock", &lock, opt, bad, "--", "touch", &marker]),
                &format!("{opt} {bad:?}"),
            );
            let _ = o;
            assert!(!marker.exists(), "command ran despite {opt} {bad:?}");
        }
    }
    assert!(lock_is_free(&lock));
}

#[test]
fn usage_errors_exit_125() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let session = env.join("s.jsonl");
    let marker = env.join("ran");
    let cases: Vec<(&str, Vec<std::ffi::OsString>)> = vec![
        ("missing command", args!["--lock", &lock]),
        ("missing command after --", args!["--lock", &lock, "--"]),
        (
            "neither --lock nor --session",
            args!["--", "touch", &marker],
        ),
        (
            "both --lock and --session",
            args![
                "--lock",
                &lock,
                "--session",
                &session,
                "--",
                "touch",
                &marker
            ],
        ),
        (
            "unknown option",
            args!["--lock", &lock, "--bogus", "--", "touch", &marker],
        ),
        (
            "bad signal",
            args!["--lock", &lock, "-s", "NOPE", "--", "touch", &marker],
        ),
        (
            "bad final signal",
            args![
                "--lock",
                &lock,
                "--final-signal",
                "SIGFOO",
                "--",
                "touch",
                &marker
            ],
        ),
        (
            "bad conflict exit code",
            args![
                "--lock",
                &lock,
                "--conflict-exit-code",
                "x",
                "--",
                "touch",
                &marker
            ],
        ),
    ];
    for (what, a) in cases {
        expect_125(env.run(a), what);
        assert!(!marker.exists(), "command ran despite {what}");
    }
}

#[test]
fn bad_config_syntax_exits_125_with_path_line_and_column() {
    let env = Env::new();
    let cfg = env.write("bad.toml", "[run]\ntimeout = \"1s\"\ngrace = @@@\n");
    let lock = env.join("a.lock");
    let marker = env.join("ran");
    let mut c = env.cmd();
    c.arg("--config")
        .arg(&cfg)
        .arg("run")
        .arg("--lock")
        .arg(&lock);
    c.args(["--", "touch"]).arg(&marker);
    let o = expect_125(c, "bad config syntax");
    let prefix = format!("{}:3:", cfg.display());
    let at = o
        .stderr
        .find(&prefix)
        .unwrap_or_else(|| panic!("error should name {prefix}COL: {:?}", o.stderr));
    let col: String = o.stderr[at + prefix.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    assert!(!col.is_empty(), "no column after {prefix}: {:?}", o.stderr);
    assert!(!marker.exists());
    // The same file through $LOCKSUP_CONFIG.
    let mut c = env.run(args!["--lock", &lock, "--", "touch", &marker]);
    c.env("LOCKSUP_CONFIG", &cfg);
    let o = expect_125(c, "bad config via LOCKSUP_CONFIG");
    assert!(o.stderr.contains(&prefix), "{:?}", o.stderr);
}

#[test]
fn unknown_config_key_exits_125() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let marker = env.join("ran");
    for (name, text, line) in [
        ("run.toml", "[run]\nbogus_key = 1\n", 2),
        (
            "policy.toml",
            "[run]\ntimeout = \"1s\"\n\n[[policy]]\nmatch = \"*\"\nbogus_key = 1\n",
            6,
        ),
        ("section.toml", "[bogus_section]\nx = 1\n", 1),
    ] {
        let cfg = env.write(name, text);
        let mut c = env.run(args!["--lock", &lock, "--", "touch", &marker]);
        c.env("LOCKSUP_CONFIG", &cfg);
        let o = expect_125(c, name);
        let want = format!("{}:{line}:", cfg.display());
        assert!(
            o.stderr.contains(&want),
            "{name}: want {want}COL in {:?}",
            o.stderr
        );
        assert!(!marker.exists());
    }
}

#[test]
fn bad_config_values_exit_125() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let marker = env.join("ran");
    for (name, text) in [
        ("dur.toml", "[run]\ntimeout = \"soon\"\n"),
        ("sig.toml", "[run]\nsignal = \"NOPE\"\n"),
        ("type.toml", "[run]\ngrace = true\n"),
    ] {
        let cfg = env.write(name, text);
        let mut c = env.run(args!["--lock", &lock, "--", "touch", &marker]);
        c.env("LOCKSUP_CONFIG", &cfg);
        let o = expect_125(c, name);
        let want = format!("{}:2:", cfg.display());
        assert!(
            o.stderr.contains(&want),
            "{name}: want {want}COL in {:?}",
            o.stderr
        );
        assert!(!marker.exists());
    }
}

#[test]
fn missing_named_config_exits_125() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let missing = env.join("no-such-config.toml");
    let mut c = env.cmd();
    c.arg("--config")
        .arg(&missing)
        .arg("run")
        .arg("--lock")
        .arg(&lock)
        .args(["--", "true"]);
    let o = expect_125(c, "missing --config file");
    assert!(
        o.stderr.contains(&missing.display().to_string()),
        "{:?}",
        o.stderr
    );
    let mut c = env.run(args!["--lock", &lock, "--", "true"]);
    c.env("LOCKSUP_CONFIG", &missing);
    let o = expect_125(c, "missing $LOCKSUP_CONFIG file");
    assert!(
        o.stderr.contains(&missing.display().to_string()),
        "{:?}",
        o.stderr
    );
}

#[test]
fn symlink_at_lock_path_is_refused() {
    let env = Env::new();
    let marker = env.join("ran");
    // Dangling symlink: the target must not be created.
    let target = env.join("target-missing");
    let lock = env.join("dangling.lock");
    std::os::unix::fs::symlink(&target, &lock).unwrap();
    expect_125(
        env.run(args!["--lock", &lock, "--", "touch", &marker]),
        "dangling symlink",
    );
    assert!(
        !target.exists(),
        "locksup followed the symlink and created its target"
    );
    assert!(!marker.exists());
    // Symlink to an existing file: refused, target untouched and unlocked.
    let target = env.write("target-existing", "precious\n");
    let lock = env.join("link.lock");
    std::os::unix::fs::symlink(&target, &lock).unwrap();
    expect_125(
        env.run(args!["--lock", &lock, "--", "touch", &marker]),
        "symlink",
    );
    assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n");
    assert!(!marker.exists());
    // Via --session: S.lock is a symlink.
    let session = env.join("s.jsonl");
    std::os::unix::fs::symlink(&target, env.join("s.jsonl.lock")).unwrap();
    expect_125(
        env.run(args!["--session", &session, "--", "touch", &marker]),
        "session lock symlink",
    );
    assert_eq!(fs::read_to_string(&target).unwrap(), "precious\n");
    assert!(!marker.exists());
}

#[test]
fn directory_at_lock_path_is_refused() {
    let env = Env::new();
    let marker = env.join("ran");
    let lock = env.join("dir.lock");
    fs::create_dir(&lock).unwrap();
    expect_125(
        env.run(args!["--lock", &lock, "--", "touch", &marker]),
        "directory",
    );
    assert!(!marker.exists());
}

#[test]
fn fifo_at_lock_path_is_refused_without_hanging() {
    let env = Env::new();
    let marker = env.join("ran");
    let lock = env.join("fifo.lock");
    let c = std::ffi::CString::new(lock.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let o = expect_125(
        env.run(args!["--lock", &lock, "--", "touch", &marker]),
        "fifo",
    );
    assert!(o.elapsed < Duration::from_secs(5), "{o:?}");
    assert!(!marker.exists());
}

#[test]
fn missing_lock_directory_is_refused() {
    let env = Env::new();
    let marker = env.join("ran");
    let lock = env.join("no-such-dir/a.lock");
    expect_125(
        env.run(args!["--lock", &lock, "--", "touch", &marker]),
        "missing dir",
    );
    assert!(
        !env.join("no-such-dir").exists(),
        "locksup must not create the directory"
    );
    let session = env.join("no-such-dir/s.jsonl");
    expect_125(
        env.run(args!["--session", &session, "--", "touch", &marker]),
        "missing session dir",
    );
    assert!(!marker.exists());
}

// ---------------------------------------------------------------------------
// Session file untouched
// ---------------------------------------------------------------------------

#[test]
fn session_file_is_never_created() {
    let env = Env::new();
    let session = env.join("abc.jsonl");
    let o = run_to_end(env.run(args![
        "--session",
        &session,
        "--",
        "sh",
        "-c",
        "echo \"$LOCKSUP_LOCK_FILE\""
    ]));
    assert_eq!(o.code, 0, "{o:?}");
    assert!(!session.exists(), "locksup created the session file");
    let lock = env.join("abc.jsonl.lock");
    assert_eq!(o.stdout.trim(), lock.to_str().unwrap());
    assert!(lock.exists(), "the sidecar lock file should exist");
    assert!(lock_is_free(&lock));
}

#[test]
fn existing_session_file_is_not_modified() {
    let env = Env::new();
    let session = env.write("abc.jsonl", "{\"line\":1}\n{\"line\":2}\n");
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let f = fs::File::options().write(true).open(&session).unwrap();
    f.set_times(fs::FileTimes::new().set_accessed(old).set_modified(old))
        .unwrap();
    drop(f);
    let before = fs::metadata(&session).unwrap();
    let guard = Guard::new();
    let mut r = spawn(
        env.run(args![
            "--session",
            &session,
            "--timeout",
            "60s",
            "--",
            "sh",
            "-c",
            PID_SLEEP
        ]),
        &guard,
    );
    let pid = r.out.expect_pid("command pid", SOON);
    guard.add(pid);
    let lock = env.join("abc.jsonl.lock");
    assert!(!lock_is_free(&lock), "the sidecar lock should be held");
    assert!(
        lock_is_free(&session),
        "the session file itself must not be locked"
    );
    kill(r.pid(), libc::SIGTERM);
    assert_eq!(r.code(LIMIT), 143);
    let after = fs::metadata(&session).unwrap();
    assert_eq!(
        fs::read_to_string(&session).unwrap(),
        "{\"line\":1}\n{\"line\":2}\n"
    );
    assert_eq!(after.modified().unwrap(), old, "mtime changed");
    assert_eq!(
        after.accessed().unwrap(),
        old,
        "atime changed (session file was read)"
    );
    assert_eq!(
        (after.ctime(), after.ctime_nsec()),
        (before.ctime(), before.ctime_nsec()),
        "ctime changed"
    );
    assert_eq!(after.ino(), before.ino());
    assert_eq!(after.mode(), before.mode());
}

// ---------------------------------------------------------------------------
// Environment of the command
// ---------------------------------------------------------------------------

const ENV_SCRIPT: &str = r#"
echo "FILE=$LOCKSUP_LOCK_FILE"
echo "FD=$LOCKSUP_LOCK_FD"
echo "LINK=$(readlink /proc/$$/fd/$LOCKSUP_LOCK_FD)"
echo "LOCKLINES=$(grep -c '^lock:' /proc/$$/fdinfo/$LOCKSUP_LOCK_FD)"
echo "ID=${LOCKSUP_ATTEMPT_ID-<unset>}"
echo "SESSION=${LOCKSUP_SESSION-<unset>}"
echo "DEADLINE=${LOCKSUP_DEADLINE-<unset>}"
flock -n "$LOCKSUP_LOCK_FILE" true; echo "PROBE=$?"
"#;

fn env_of(o: &Outcome) -> HashMap<String, String> {
    assert_eq!(o.code, 0, "{o:?}");
    o.stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn command_environment_with_session() {
    let env = Env::new();
    let session = env.join("abc.jsonl");
    let lock = env.join("abc.jsonl.lock");
    let o = run_to_end(env.run(args![
        "--session",
        &session,
        "--attempt-id",
        "attempt-42",
        "--timeout",
        "10m",
        "--",
        "sh",
        "-c",
        ENV_SCRIPT
    ]));
    let e = env_of(&o);
    assert_eq!(e["FILE"], lock.to_str().unwrap(), "{e:?}");
    assert!(e["FD"].parse::<i32>().is_ok_and(|fd| fd > 2), "{e:?}");
    assert_eq!(
        e["LINK"],
        lock.to_str().unwrap(),
        "LOCKSUP_LOCK_FD is not on the lock file"
    );
    assert_eq!(
        e["LOCKLINES"], "1",
        "LOCKSUP_LOCK_FD is not the locked descriptor"
    );
    assert_eq!(
        e["PROBE"], "1",
        "a separate flock -n should fail while the command runs"
    );
    assert_eq!(e["ID"], "attempt-42");
    assert_eq!(e["SESSION"], session.to_str().unwrap());
    let left = secs_from_now(rfc3339(&e["DEADLINE"]));
    assert!(
        (540.0..=660.0).contains(&left),
        "deadline {} is {left}s away",
        e["DEADLINE"]
    );
}

#[test]
fn command_environment_with_relative_lock_and_no_timeout() {
    let env = Env::new();
    let lock = env.join("rel.lock");
    let mut ids = Vec::new();
    for timeout in ["0", "infinity"] {
        let o = run_to_end(env.run(args![
            "--lock",
            "rel.lock",
            "--timeout",
            timeout,
            "--",
            "sh",
            "-c",
            ENV_SCRIPT
        ]));
        let e = env_of(&o);
        assert_eq!(e["FILE"], lock.to_str().unwrap(), "must be absolute: {e:?}");
        assert_eq!(e["LINK"], lock.to_str().unwrap());
        assert_eq!(e["LOCKLINES"], "1");
        assert_eq!(e["PROBE"], "1");
        assert_eq!(e["SESSION"], "<unset>", "no --session given");
        assert_eq!(
            e["DEADLINE"], "<unset>",
            "--timeout {timeout} means no deadline"
        );
        assert!(
            !e["ID"].is_empty() && e["ID"] != "<unset>",
            "no generated attempt id"
        );
        ids.push(e["ID"].clone());
    }
    assert_ne!(ids[0], ids[1], "generated attempt ids should differ");
}

#[test]
fn durations_in_all_documented_forms() {
    let env = Env::new();
    let lock = env.join("a.lock");
    for (dur, secs) in [
        ("1.5", 1.5),
        ("250ms", 0.25),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1d", 86400.0),
        ("5min 20s", 320.0),
    ] {
        let o = run_to_end(env.run(args![
            "--lock",
            &lock,
            "--timeout",
            dur,
            "--",
            "sh",
            "-c",
            "echo \"$LOCKSUP_DEADLINE\""
        ]));
        assert_eq!(o.code, 0, "{dur}: {o:?}");
        let left = secs_from_now(rfc3339(o.stdout.trim()));
        assert!(
            left <= secs + 0.5 && left >= secs - 3.0,
            "--timeout {dur:?}: deadline {left}s away, expected {secs}"
        );
    }
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

#[test]
fn events_for_a_run_that_needs_kill() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let events = env.join("events.jsonl");
    let guard = Guard::new();
    let mut r = spawn(
        env.run(args![
            "--lock",
            &lock,
            "--timeout",
            TIMEOUT,
            "--grace",
            GRACE,
            "--attempt-id",
            "ev-1",
            "--events",
            &events,
            "--",
            "sh",
            "-c",
            PID_SLEEP_NO_TERM
        ]),
        &guard,
    );
    let pid = r.out.expect_pid("command pid", SOON);
    guard.add(pid);
    assert_eq!(r.code(LIMIT), 137, "stderr: {:?}", r.err.seen);
    let text = fs::read_to_string(&events).expect("events file");
    let evs: Vec<serde_json::Value> = text.lines().map(json).collect();
    let names: Vec<&str> = evs
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        names,
        [
            "acquired", "started", "signal", "signal", "exited", "released", "end"
        ],
        "events: {text}"
    );
    // The last event says how locksup itself ended, and why.
    assert_eq!(evs[6]["exit_code"], 137, "{}", evs[6]);
    assert_eq!(evs[6]["outcome"], "timeout", "{}", evs[6]);
    assert_eq!(evs[0]["timeout_ms"], T.as_millis() as u64, "{}", evs[0]);
    rfc3339(
        evs[0]["deadline"]
            .as_str()
            .unwrap_or_else(|| panic!("deadline: {}", evs[0])),
    );
    for e in &evs {
        rfc3339(e["ts"].as_str().unwrap_or_else(|| panic!("no ts: {e}")));
        assert_eq!(e["attempt_id"], "ev-1", "{e}");
        assert_eq!(e["lock"], lock.to_str().unwrap(), "{e}");
    }
    assert!(evs[0]["wait_ms"].is_number(), "{}", evs[0]);
    assert_eq!(evs[1]["pid"], pid, "{}", evs[1]);
    assert_eq!(evs[1]["pgid"], pid, "{}", evs[1]);
    for (e, sig) in [(&evs[2], "SIGTERM"), (&evs[3], "SIGKILL")] {
        assert_eq!(e["signal"], sig, "{e}");
        assert_eq!(e["reason"], "timeout", "{e}");
        let targets = e["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("targets: {e}"));
        assert!(
            targets.iter().any(|t| *t == pid),
            "{pid} not among targets: {e}"
        );
    }
    assert_eq!(evs[4]["signal"], "SIGKILL", "{}", evs[4]);
    assert!(evs[4]["held_ms"].is_number(), "{}", evs[4]);
    assert!(
        evs[4]["held_ms"].as_f64().unwrap() >= (T + G).as_millis() as f64 - 20.0,
        "{}",
        evs[4]
    );
    assert!(evs[5]["ms_after_exit"].is_number(), "{}", evs[5]);
    // Timestamps are ordered.
    let ts: Vec<SystemTime> = evs
        .iter()
        .map(|e| rfc3339(e["ts"].as_str().unwrap()))
        .collect();
    assert!(
        ts.windows(2).all(|w| w[0] <= w[1]),
        "timestamps out of order: {text}"
    );
}

#[test]
fn events_for_a_normal_run_and_appending() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let events = env.join("events.jsonl");
    for _ in 0..2 {
        let o = run_to_end(env.run(args![
            "--lock", &lock, "--events", &events, "--", "sh", "-c", "exit 5"
        ]));
        assert_eq!(o.code, 5, "{o:?}");
    }
    let text = fs::read_to_string(&events).unwrap();
    let evs: Vec<serde_json::Value> = text.lines().map(json).collect();
    let names: Vec<&str> = evs
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?"))
        .collect();
    let one = ["acquired", "started", "exited", "released", "end"];
    assert_eq!(
        names,
        [one, one].concat(),
        "events should be appended: {text}"
    );
    assert_eq!(evs[2]["status"], 5, "{}", evs[2]);
    assert_eq!(evs[4]["exit_code"], 5, "{}", evs[4]);
    assert_eq!(evs[4]["outcome"], "exited", "{}", evs[4]);
    assert_ne!(evs[0]["attempt_id"], evs[5]["attempt_id"], "{text}");
}

#[test]
fn verbose_prints_prefixed_lines_on_stderr() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let o = run_to_end(env.run(args!["-v", "--lock", &lock, "--", "sh", "-c", "echo out"]));
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout, "out\n");
    assert!(!o.stderr.is_empty(), "-v printed nothing");
    for l in o.stderr.lines() {
        assert!(
            l.starts_with("locksup: "),
            "unprefixed line {l:?} in {:?}",
            o.stderr
        );
    }
    let quiet = run_to_end(env.run(args!["--lock", &lock, "--", "sh", "-c", "echo out"]));
    assert_eq!(
        quiet.stderr, "",
        "without -v a successful run prints nothing on stderr"
    );
}

// ---------------------------------------------------------------------------
// Lock file
// ---------------------------------------------------------------------------

#[test]
fn lock_file_is_created_with_mode_0600() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let o = run_to_end(env.run(args!["--lock", &lock, "--", "true"]));
    assert_eq!(o.code, 0, "{o:?}");
    let m = fs::metadata(&lock).unwrap();
    assert!(m.file_type().is_file());
    assert_eq!(m.permissions().mode() & 0o7777, 0o600);
}

#[test]
fn config_file_mode_changes_the_lock_file_mode() {
    let env = Env::new();
    let cfg = env.write("c.toml", "[run]\nfile_mode = 0o640\n");
    let lock = env.join("a.lock");
    let mut c = env.run(args!["--lock", &lock, "--", "true"]);
    c.env("LOCKSUP_CONFIG", &cfg);
    let o = run_to_end(c);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(
        fs::metadata(&lock).unwrap().permissions().mode() & 0o7777,
        0o640
    );
}

#[test]
fn metadata_line_describes_the_holder_while_held() {
    let env = Env::new();
    let session = env.join("abc.jsonl");
    let lock = env.join("abc.jsonl.lock");
    let guard = Guard::new();
    let mut r = spawn(
        env.run(args![
            "--session",
            &session,
            "--session-key",
            "agent:main",
            "--attempt-id",
            "meta-1",
            "--timeout",
            "60s",
            "--grace",
            "2s",
            "--",
            "sh",
            "-c",
            PID_SLEEP
        ]),
        &guard,
    );
    let pid = r.out.expect_pid("command pid", SOON);
    guard.add(pid);
    let sup = common::supervisor_of(r.pid());
    let mut last = String::new();
    let ok = wait_until(SOON, || {
        last = fs::read_to_string(&lock).unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(last.trim()).is_ok_and(|v| v["pid"] == pid)
    });
    assert!(ok, "no metadata line naming pid {pid}: {last:?}");
    assert_eq!(
        last.trim_end().lines().count(),
        1,
        "exactly one line: {last:?}"
    );
    assert!(last.ends_with('\n') || !last.contains('\n'), "{last:?}");
    let m = json(last.trim());
    let num_or_str = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    assert!(m["v"].is_number(), "v: {m}");
    assert_eq!(m["pgid"], pid, "{m}");
    assert_eq!(
        num_or_str(&m["starttime"]),
        starttime(pid).unwrap().to_string(),
        "{m}"
    );
    assert_eq!(m["supervisor_pid"], sup, "{m}");
    assert_eq!(
        num_or_str(&m["supervisor_starttime"]),
        starttime(sup).unwrap().to_string(),
        "{m}"
    );
    assert_eq!(m["attempt_id"], "meta-1", "{m}");
    assert_eq!(m["session"], session.to_str().unwrap(), "{m}");
    assert_eq!(m["session_key"], "agent:main", "{m}");
    assert_eq!(
        m["command"],
        serde_json::json!(["sh", "-c", PID_SLEEP]),
        "{m}"
    );
    for k in ["createdAt", "acquired_at", "deadline"] {
        rfc3339(
            m[k].as_str()
                .unwrap_or_else(|| panic!("{k} not a string: {m}")),
        );
    }
    let left = secs_from_now(rfc3339(m["deadline"].as_str().unwrap()));
    assert!((50.0..=61.0).contains(&left), "deadline {left}s away: {m}");
    assert_eq!(m["timeout_ms"], 60000, "{m}");
    assert_eq!(m["grace_ms"], 2000, "{m}");
    let host = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(m["host"], host.trim(), "{m}");
    // The supervisor keeps no descriptor on the locked open file description.
    let (_, sup_locked) = fds_on(sup, &lock);
    assert!(!sup_locked, "supervisor holds the locked descriptor itself");
    kill(sup, libc::SIGTERM);
    assert_eq!(r.code(LIMIT), 143);
    assert!(wait_lock_free(&lock, SOON));
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

#[test]
fn config_run_timeout_applies() {
    let env = Env::new();
    let cfg = env.write("c.toml", "[run]\ntimeout = \"1s\"\ngrace = \"300ms\"\n");
    let lock = env.join("a.lock");
    let mut c = env.run(args!["--lock", &lock, "--", "sleep", "1000"]);
    c.env("LOCKSUP_CONFIG", &cfg);
    let o = run_to_end(c);
    assert_eq!(o.code, 124, "{o:?}");
    assert!(
        o.elapsed >= Duration::from_secs(1) && o.elapsed < Duration::from_secs(1) + G + SLACK,
        "{o:?}"
    );
    assert!(lock_is_free(&lock));
}

#[test]
fn config_via_global_config_option() {
    let env = Env::new();
    let cfg = env.write("c.toml", "[run]\ntimeout = \"300ms\"\ngrace = \"300ms\"\n");
    let lock = env.join("a.lock");
    let mut c = env.cmd();
    c.arg("--config")
        .arg(&cfg)
        .arg("run")
        .arg("--lock")
        .arg(&lock);
    c.args(["--", "sleep", "1000"]);
    let o = run_to_end(c);
    assert_eq!(o.code, 124, "{o:?}");
    assert!(o.elapsed < T + G + SLACK, "{o:?}");
}

#[test]
fn cli_timeout_overrides_config() {
    let env = Env::new();
    let lock = env.join("a.lock");
    // Config would kill at 300 ms; the CLI allows 10 s.
    let cfg = env.write(
        "short.toml",
        "[run]\ntimeout = \"300ms\"\ngrace = \"300ms\"\n",
    );
    let mut c = env.run(args![
        "--lock",
        &lock,
        "--timeout",
        "10s",
        "--",
        "sh",
        "-c",
        "sleep 0.8; exit 5"
    ]);
    c.env("LOCKSUP_CONFIG", &cfg);
    let o = run_to_end(c);
    assert_eq!(o.code, 5, "CLI --timeout should override the config: {o:?}");
    // Config allows 30 s; the CLI cuts it to 300 ms.
    let cfg = env.write("long.toml", "[run]\ntimeout = \"30s\"\ngrace = \"300ms\"\n");
    let mut c = env.run(args!["--lock", &lock, "-t", TIMEOUT, "--", "sleep", "1000"]);
    c.env("LOCKSUP_CONFIG", &cfg);
    let o = run_to_end(c);
    assert_eq!(o.code, 124, "{o:?}");
    assert!(o.elapsed < T + G + SLACK, "{o:?}");
}

#[test]
fn config_conflict_exit_code_and_cli_override() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let _held = hold_lock(&lock);
    let cfg = env.write("c.toml", "[run]\nwait = \"0\"\nconflict_exit_code = 11\n");
    let mut c = env.run(args!["--lock", &lock, "--", "true"]);
    c.env("LOCKSUP_CONFIG", &cfg);
    let o = run_to_end(c);
    assert_eq!(o.code, 11, "{o:?}");
    assert!(
        o.elapsed < Duration::from_secs(2),
        "config wait = 0 should not wait: {o:?}"
    );
    let mut c = env.run(args![
        "--lock",
        &lock,
        "--conflict-exit-code",
        "12",
        "--",
        "true"
    ]);
    c.env("LOCKSUP_CONFIG", &cfg);
    assert_eq!(run_to_end(c).code, 12);
}

#[test]
fn first_matching_policy_overrides_run_section() {
    let env = Env::new();
    let dir = env.path();
    let cfg = env.write(
        "c.toml",
        &format!(
            "[run]\ntimeout = \"300ms\"\ngrace = \"300ms\"\n\n\
             [[policy]]\nmatch = \"{d}/fast*.jsonl\"\ntimeout = \"300ms\"\n\n\
             [[policy]]\nmatch = \"{d}/*.jsonl\"\ntimeout = \"30s\"\n",
            d = dir.display()
        ),
    );
    // slow.jsonl matches only the second policy: 30 s beats [run]'s 300 ms.
    let mut c = env.run(args![
        "--session",
        dir.join("slow.jsonl"),
        "--",
        "sh",
        "-c",
        "sleep 0.8; exit 4"
    ]);
    c.env("LOCKSUP_CONFIG", &cfg);
    let o = run_to_end(c);
    assert_eq!(o.code, 4, "policy should override [run]: {o:?}");
    // fast1.jsonl matches both: the first (300 ms) wins.
    let mut c = env.run(args![
        "--session",
        dir.join("fast1.jsonl"),
        "--",
        "sleep",
        "1000"
    ]);
    c.env("LOCKSUP_CONFIG", &cfg);
    let o = run_to_end(c);
    assert_eq!(o.code, 124, "first matching policy should win: {o:?}");
    assert!(o.elapsed < T + G + SLACK, "{o:?}");
    // A path matching no policy gets [run].
    let mut c = env.run(args![
        "--session",
        dir.join("other.txt"),
        "--",
        "sh",
        "-c",
        "sleep 0.8; exit 4"
    ]);
    c.env("LOCKSUP_CONFIG", &cfg);
    let o = run_to_end(c);
    assert_eq!(o.code, 124, "no policy matches: [run] applies: {o:?}");
    // The CLI still overrides the policy.
    let mut c = env.run(args![
        "--session",
        dir.join("fast2.jsonl"),
        "--timeout",
        "10s",
        "--",
        "sh",
        "-c",
        "sleep 0.8; exit 4"
    ]);
    c.env("LOCKSUP_CONFIG", &cfg);
    assert_eq!(run_to_end(c).code, 4);
}

#[test]
fn xdg_config_is_used_when_no_config_is_named() {
    let env = Env::new();
    let xdg = env.join("xdg");
    fs::create_dir_all(xdg.join("locksup")).unwrap();
    fs::write(
        xdg.join("locksup/config.toml"),
        "[run]\ntimeout = \"300ms\"\ngrace = \"300ms\"\n",
    )
    .unwrap();
    let lock = env.join("a.lock");
    let mut c = env.run(args!["--lock", &lock, "--", "sleep", "1000"]);
    c.env_remove("LOCKSUP_CONFIG").env("XDG_CONFIG_HOME", &xdg);
    let o = run_to_end(c);
    assert_eq!(o.code, 124, "{o:?}");
    assert!(o.elapsed < T + G + SLACK, "{o:?}");
    // $LOCKSUP_CONFIG wins over XDG.
    let mut c = env.run(args![
        "--lock",
        &lock,
        "--",
        "sh",
        "-c",
        "sleep 0.8; exit 6"
    ]);
    c.env("XDG_CONFIG_HOME", &xdg);
    assert_eq!(
        run_to_end(c).code,
        6,
        "empty $LOCKSUP_CONFIG should win over XDG"
    );
}

#[test]
fn a_signal_while_waiting_for_the_lock_ends_the_wait_promptly() {
    // Ctrl-C (or TERM) while blocked waiting for a busy lock: locksup gives
    // up at once with 128+N, the command never runs, and the attempt's
    // process that was blocked in flock(2) is gone.
    for (sig, code) in [(libc::SIGINT, 130), (libc::SIGTERM, 143)] {
        let env = Env::new();
        let lock = env.join("a.lock");
        let _held = hold_lock(&lock);
        let guard = Guard::new();
        let mut waiter = spawn(
            env.run(args![
                "--lock", &lock, "--wait", "60s", "--events", "-", "--", "sh", "-c", "echo ran"
            ]),
            &guard,
        );
        let ev = waiter.err.expect_match("waiting event", SOON, |l| {
            l.starts_with('{') && json(l)["event"] == "waiting"
        });
        assert!(json(&ev)["holders"].is_array(), "{ev}");
        let children: Vec<i32> =
            std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", waiter.pid()))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect();
        assert_eq!(
            children.len(),
            1,
            "one blocked attempt process: {children:?}"
        );
        guard.add(children[0]);
        let t0 = Instant::now();
        kill(waiter.pid(), sig);
        assert_eq!(waiter.code(LIMIT), code, "stderr: {:?}", waiter.err.seen);
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "took {:?} to give up",
            t0.elapsed()
        );
        assert_eq!(waiter.out.next(Duration::ZERO), None, "the command ran");
        assert!(wait_pid_gone(children[0], SLACK), "blocked child survived");
    }
}
