//! `locksup cancel` against real attempts and holders: by session, lock
//! file and attempt id; a supervisor whose start time does not match is
//! never signalled; orphans are reaped (KILL after the grace when the
//! signal is ignored); `--wait`; every documented exit code.

mod common;
mod observe;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use common::{Env, Guard, Outcome, lock_is_free, pid_alive, run_to_end, starttime, wait_pid_gone};
use observe::*;

fn cancel(env: &Env, args: &[&str]) -> Outcome {
    let mut c = env.cmd();
    c.arg("cancel").args(args);
    run_to_end(c)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn cancel_by_session_ends_the_attempt_and_waits_for_the_release() {
    let env = Env::new();
    let guard = Guard::new();
    let session = env.join("abc.jsonl");
    let lock = env.join("abc.jsonl.lock");
    let (mut sup, pid) = start_attempt(
        &env,
        &guard,
        &[
            "--session",
            s(&session),
            "--attempt-id",
            "by-session",
            "--timeout",
            "1h",
        ],
        &["sleep", "300"],
    );
    // The supervisor: the child of the locksup started (its guardian).
    let supervisor = common::supervisor_of(sup.pid());
    let o = cancel(&env, &[s(&session), "--wait", "10s"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout
            .contains(&format!("sent TERM to supervisor pid {supervisor}")),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("released") && o.stdout.contains("after the signal"),
        "{}",
        o.stdout
    );
    assert!(o.stderr.is_empty(), "{}", o.stderr);
    // --wait returned with the lock free and the attempt gone.
    assert!(lock_is_free(&lock));
    assert!(wait_pid_gone(pid, BOUND));
    // A forwarded TERM: the command died of it.
    assert_eq!(sup.code(BOUND), 143);
    // Nothing left to cancel.
    let o = cancel(&env, &[s(&session)]);
    assert_eq!(o.code, 2, "{o:?}");
    common::assert_one_error_line(&o);
}

#[test]
fn cancel_by_lock_file_without_waiting() {
    let env = Env::new();
    let guard = Guard::new();
    let lock = env.join("job.lock");
    let (mut sup, pid) = start_attempt(
        &env,
        &guard,
        &["--lock", s(&lock), "--timeout", "1h"],
        &["sleep", "300"],
    );
    let o = cancel(&env, &[s(&lock), "--signal", "INT"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("sent INT"), "{}", o.stdout);
    assert_eq!(sup.code(BOUND), 130);
    assert!(!pid_alive(pid));
    assert!(lock_is_free(&lock));
}

#[test]
fn cancel_by_attempt_id_under_roots() {
    let env = Env::new();
    let guard = Guard::new();
    let dir = env.join("sessions");
    fs::create_dir_all(dir.join("deep")).unwrap();
    let lock = dir.join("deep/x.jsonl.lock");
    let session = dir.join("deep/x.jsonl");
    let (mut sup, _) = start_attempt(
        &env,
        &guard,
        &[
            "--session",
            s(&session),
            "--attempt-id",
            "att-42",
            "--timeout",
            "1h",
        ],
        &["sleep", "300"],
    );
    // With --root.
    let o = cancel(&env, &["att-42", "--root", s(&dir), "--wait", "10s"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("att-42"), "{}", o.stdout);
    assert_eq!(sup.code(BOUND), 143);
    assert!(lock_is_free(&lock));

    // With the configured roots.
    let (mut sup, _) = start_attempt(
        &env,
        &guard,
        &[
            "--session",
            s(&session),
            "--attempt-id",
            "att-43",
            "--timeout",
            "1h",
        ],
        &["sleep", "300"],
    );
    let config = env.write(
        "roots.toml",
        &format!("[status]\nroots = [\"{}\"]\n", dir.display()),
    );
    let mut c = env.cmd();
    c.env("LOCKSUP_CONFIG", &config)
        .args(["cancel", "att-43", "--wait", "10s"]);
    let o = run_to_end(c);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(sup.code(BOUND), 143);
    // An id nobody holds.
    let o = cancel(&env, &["att-43", "--root", s(&dir)]);
    assert_eq!(o.code, 1, "{o:?}");
    common::assert_one_error_line(&o);
    // An id without any root to look under.
    let o = cancel(&env, &["att-43"]);
    assert_eq!(o.code, 125, "{o:?}");
    common::assert_one_error_line(&o);
}

#[test]
fn a_supervisor_whose_start_time_does_not_match_is_never_signalled() {
    let env = Env::new();
    let guard = Guard::new();
    let lock = env.join("reused.lock");
    // The recorded supervisor PID is alive, but it is another process: its
    // start time differs (as after PID reuse).
    let decoy = sleeper(&env, &guard);
    let decoy_pid = decoy.id() as i32;
    let holder = flock_hold(&env, &guard, &lock, &[], false);
    let holder_pid = holder.id() as i32;
    write_metadata(
        &lock,
        &fake_metadata(
            holder_pid,
            decoy_pid,
            starttime(decoy_pid).unwrap() + 7,
            "reused",
            10,
            600,
            500,
        ),
    );
    let l = lock_in(&status_json(&env, &[s(&lock)]), &lock).clone();
    assert_eq!(l["state"], "orphan", "{l}");
    let o = cancel(&env, &[s(&lock), "--wait", "10s"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("orphan"), "{}", o.stdout);
    assert!(
        o.stdout.contains(&format!("pid {holder_pid}")),
        "{}",
        o.stdout
    );
    assert!(wait_pid_gone(holder_pid, BOUND));
    assert!(lock_is_free(&lock));
    // The decoy was never touched.
    assert!(pid_alive(decoy_pid));
    drop(holder);
}

#[test]
fn reaps_an_orphan_escalating_to_kill() {
    let env = Env::new();
    let guard = Guard::new();
    let lock = env.join("orphan.lock");
    // The grandchild ignores TERM (inherited from the shell's trap), so
    // only the final KILL ends it.
    let (mut sup, first) = start_attempt(
        &env,
        &guard,
        &[
            "--lock",
            s(&lock),
            "--attempt-id",
            "orph",
            "--timeout",
            "1h",
        ],
        &["sh", "-c", "trap '' TERM; sleep 300 & echo $!; wait"],
    );
    let grandchild = sup.out.expect_pid("grandchild pid", BOUND);
    guard.add(grandchild);
    // Only the guardian (the locksup started) and its supervisor dying
    // together leave an orphan: each ends the attempt when the other dies.
    common::kill_guardian_and_supervisor(sup.pid());
    sup.wait(BOUND);
    assert!(wait_pid_gone(first, BOUND));
    assert!(
        !lock_is_free(&lock),
        "the grandchild should still hold the lock"
    );
    let o = cancel(&env, &[s(&lock), "--grace", "300ms", "--wait", "10s"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.contains("orphan of attempt 'orph'"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains(&format!("sent TERM to pid {grandchild}")),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains(&format!("sent KILL to pid {grandchild}")),
        "{}",
        o.stdout
    );
    assert!(wait_pid_gone(grandchild, BOUND));
    assert!(lock_is_free(&lock));
}

#[test]
fn wait_expires_with_124_when_the_attempt_ignores_the_signal() {
    let env = Env::new();
    let guard = Guard::new();
    let lock = env.join("stubborn.lock");
    let (sup, _first) = start_attempt(
        &env,
        &guard,
        &["--lock", s(&lock), "--timeout", "1h", "--grace", "infinity"],
        &["sh", "-c", "trap '' TERM; sleep 300 & echo $!; wait"],
    );
    let mut sup = sup;
    let grandchild = sup.out.expect_pid("grandchild pid", BOUND);
    guard.add(grandchild);
    let o = cancel(&env, &[s(&lock), "--wait", "300ms"]);
    assert_eq!(o.code, 124, "{o:?}");
    common::assert_one_error_line(&o);
    assert!(o.stderr.contains("still held"), "{}", o.stderr);
    assert!(!lock_is_free(&lock));
    // A second cancel escalates at once (the supervisor's final signal).
    let o = cancel(&env, &[s(&lock), "--wait", "10s"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(lock_is_free(&lock));
    assert!(wait_pid_gone(grandchild, BOUND));
}

#[test]
fn foreign_locks_need_force_and_bad_input_is_one_line() {
    let env = Env::new();
    let guard = Guard::new();
    let lock = env.join("flock.lock");
    let holder = flock_hold(&env, &guard, &lock, &[], false);
    let o = cancel(&env, &[s(&lock)]);
    assert_eq!(o.code, 3, "{o:?}");
    common::assert_one_error_line(&o);
    assert!(
        o.stderr.contains(&format!("pid {}", holder.id())),
        "{}",
        o.stderr
    );
    let o = cancel(
        &env,
        &[s(&lock), "--force", "--grace", "5s", "--wait", "10s"],
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert!(lock_is_free(&lock));

    // Not found.
    for target in [env.join("missing.lock"), env.join("missing.jsonl")] {
        let o = cancel(&env, &[s(&target)]);
        assert_eq!(o.code, 1, "{o:?}");
        common::assert_one_error_line(&o);
    }
    // Not held.
    fs::write(env.join("idle.lock"), "").unwrap();
    let o = cancel(&env, &[s(&env.join("idle.lock"))]);
    assert_eq!(o.code, 2, "{o:?}");
    // KILL is no way to cancel through a live supervisor.
    let (_sup, _) = start_attempt(
        &env,
        &guard,
        &["--lock", s(&env.join("live.lock")), "--timeout", "1h"],
        &["sleep", "300"],
    );
    let o = cancel(&env, &[s(&env.join("live.lock")), "--signal", "KILL"]);
    assert_eq!(o.code, 125, "{o:?}");
    common::assert_one_error_line(&o);
    assert!(!lock_is_free(&env.join("live.lock")));
    // Bad durations and signals.
    for bad in [["--wait", "soon"], ["--signal", "NOPE"], ["--grace", "-1s"]] {
        let o = cancel(&env, &[s(&env.join("live.lock")), bad[0], bad[1]]);
        assert_eq!(o.code, 125, "{bad:?}: {o:?}");
        common::assert_one_error_line(&o);
    }
}

#[test]
fn not_permitted_is_exit_4() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to run cancel as another user");
        return;
    }
    let env = Env::new();
    let guard = Guard::new();
    // Readable by the unprivileged user: the directory and the lock file.
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let lock = env.join("root.lock");
    let (_sup, _) = start_attempt(
        &env,
        &guard,
        &["--lock", s(&lock), "--timeout", "1h"],
        &["sleep", "300"],
    );
    fs::set_permissions(&lock, fs::Permissions::from_mode(0o644)).unwrap();
    let mut c = env.command("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(common::BIN)
        .args(["cancel", s(&lock)]);
    let o = run_to_end(c);
    assert_eq!(o.code, 4, "{o:?}");
    common::assert_one_error_line(&o);
    assert!(o.stderr.contains("not permitted"), "{}", o.stderr);
    assert!(!lock_is_free(&lock));
}

#[test]
fn a_stopped_supervisor_is_continued_and_ends_its_attempt() {
    let env = Env::new();
    let guard = Guard::new();
    let lock = env.join("stopped.lock");
    let (mut sup, pid) = start_attempt(
        &env,
        &guard,
        &["--lock", s(&lock), "--timeout", "1h"],
        &["sleep", "300"],
    );
    // The supervisor and its guardian (the locksup started), both stopped.
    let supervisor = common::supervisor_of(sup.pid());
    for p in [supervisor, sup.pid()] {
        kill(Pid::from_raw(p), Signal::SIGSTOP).unwrap();
        assert!(common::wait_until(BOUND, || common::proc_state(p) == Some('T')));
    }
    let o = cancel(&env, &[s(&lock), "--wait", "10s"]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(wait_pid_gone(pid, BOUND));
    assert!(lock_is_free(&lock));
    assert_eq!(sup.code(BOUND), 143);
}
