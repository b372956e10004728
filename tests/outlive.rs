//! Nothing outlives its supervisor, and nobody pulls a lock from under its
//! holder: the guardian and the supervisor each end the attempt when the
//! other dies, `--die-with-parent` ends it with its caller, and a lock file
//! removed or replaced while held neither lets two attempts run at once
//! nor strands a waiter.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A command whose processes scatter: a background child, a `setsid`
/// child and a double-forked daemon, each printing its PID; then it waits.
const SCATTER: &str = "sleep 300 & echo $!; setsid sleep 301 & echo $!; \
                       ( sleep 302 & echo $! ) ; exec sleep 303";

/// Start `locksup run` on SCATTER and collect the four PIDs (the command
/// itself is the last `exec`).
fn scattered(env: &Env, guard: &Guard, lock: &Path, extra: &[&str]) -> (Running, Vec<i32>) {
    let mut a = args!["--lock", lock, "-t", "60s", "-g", "1s"];
    a.extend(extra.iter().map(std::ffi::OsString::from));
    a.extend(args!["--", "sh", "-c", format!("echo $$; {SCATTER}")]);
    let mut r = spawn(env.run(a), guard);
    let pids: Vec<i32> = (0..4).map(|_| r.out.expect_pid("pid", SOON)).collect();
    for &p in &pids {
        guard.add(p);
    }
    assert!(!lock_is_free(lock));
    (r, pids)
}

/// Within the grace period (1 s) and some slack, every process is gone and
/// the lock is free.
fn all_gone_and_free(pids: &[i32], lock: &Path, since: Instant) {
    assert_all_gone(pids, Duration::from_secs(6));
    assert!(wait_lock_free(lock, SOON), "the lock stayed held");
    assert!(
        since.elapsed() < Duration::from_secs(8),
        "{:?}",
        since.elapsed()
    );
}

#[test]
fn kill_9_of_locksup_ends_the_whole_attempt() {
    let env = Env::new();
    let guard = Guard::new();
    let lock = env.join("a.lock");
    let (mut r, pids) = scattered(&env, &guard, &lock, &[]);
    let supervisor = supervisor_of(r.pid());
    guard.add(supervisor);
    let t = Instant::now();
    kill(r.pid(), libc::SIGKILL);
    let _ = r.wait(SOON);
    all_gone_and_free(&pids, &lock, t);
    assert!(wait_pid_gone(supervisor, SOON), "the supervisor lingered");
}

#[test]
fn kill_9_of_the_callers_process_group_ends_the_whole_attempt() {
    let env = Env::new();
    let guard = Guard::new();
    let lock = env.join("a.lock");
    let ready = env.join("pids");
    // A gateway: a shell in a process group of its own that starts locksup
    // in the background; then the whole group is killed.
    let mut gateway = env.command("sh");
    gateway
        .args([
            "-c",
            "\"$0\" run --lock \"$1\" -t 60s -g 1s -- sh -c \"$3\" > \"$2\" & wait",
            BIN,
        ])
        .arg(&lock)
        .arg(&ready)
        .arg(format!("echo $$; {SCATTER}"));
    std::os::unix::process::CommandExt::process_group(&mut gateway, 0);
    let mut g = spawn(gateway, &guard);
    let pgid = g.pid();
    let mut pids = Vec::new();
    assert!(wait_until(LIMIT, || {
        pids = std::fs::read_to_string(&ready)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        pids.len() == 4
    }));
    for &p in &pids {
        guard.add(p);
    }
    assert!(!lock_is_free(&lock));
    let t = Instant::now();
    kill(-pgid, libc::SIGKILL);
    let _ = g.wait(SOON);
    all_gone_and_free(&pids, &lock, t);
}

#[test]
fn the_supervisor_killed_alone_is_replaced_by_the_guardian() {
    let env = Env::new();
    let guard = Guard::new();
    let lock = env.join("a.lock");
    let events = env.join("events.jsonl");
    let (mut r, pids) = scattered(&env, &guard, &lock, &["--events", events.to_str().unwrap()]);
    let supervisor = supervisor_of(r.pid());
    guard.add(supervisor);
    let t = Instant::now();
    kill(supervisor, libc::SIGKILL);
    // The guardian ends what is left, then exits as a shell reports the
    // supervisor's death.
    assert_eq!(r.code(LIMIT), 137);
    all_gone_and_free(&pids, &lock, t);
    let text = std::fs::read_to_string(&events).unwrap_or_default();
    let evs = events_in(&text);
    assert!(
        evs.iter()
            .any(|e| e["event"] == "signal" && e["reason"] == "supervisor-died"),
        "{text}"
    );
    let end = evs.last().expect("events");
    assert_eq!(end["event"], "end", "{text}");
    assert_eq!(end["exit_code"], 137, "{text}");
}

#[test]
fn die_with_parent_ends_the_attempt_when_the_caller_dies() {
    let env = Env::new();
    let guard = Guard::new();
    for with in [true, false] {
        let lock = env.join(&format!("{with}.lock"));
        let out = env.join(&format!("{with}.pids"));
        // The caller: a shell that starts locksup and prints its PID.
        let mut caller = env.command("sh");
        caller
            .args([
                "-c",
                "\"$0\" run $4 --lock \"$1\" -t 60s -g 1s -- sh -c 'echo $$; exec sleep 300' > \"$2\" & \
                 echo $!; wait",
                BIN,
            ])
            .arg(&lock)
            .arg(&out)
            .arg("unused")
            .arg(if with { "--die-with-parent" } else { "--shared" });
        let mut c = spawn(caller, &guard);
        let locksup = c.out.expect_pid("locksup pid", SOON);
        guard.add(locksup);
        let mut cmd = 0;
        assert!(wait_until(LIMIT, || {
            cmd = std::fs::read_to_string(&out)
                .unwrap_or_default()
                .trim()
                .parse()
                .unwrap_or(0);
            cmd > 0
        }));
        guard.add(cmd);
        kill(c.pid(), libc::SIGKILL);
        let _ = c.wait(SOON);
        if with {
            assert!(
                wait_pid_gone(cmd, Duration::from_secs(6)),
                "attempt survived its caller"
            );
            assert!(wait_lock_free(&lock, SOON));
        } else {
            // Control: without the option the attempt lives on.
            std::thread::sleep(Duration::from_millis(500));
            assert!(pid_alive(cmd), "ended without --die-with-parent");
            kill(locksup, libc::SIGTERM);
            assert!(wait_pid_gone(cmd, Duration::from_secs(6)));
        }
    }
}

// ---------------------------------------------------------------------------
// A lock file removed or replaced
// ---------------------------------------------------------------------------

/// A writer that appends `NAME i` lines to a JSONL-ish journal while it
/// holds the lock.
fn writer(name: &str, journal: &Path, lines: u32) -> Vec<std::ffi::OsString> {
    args![
        "sh",
        "-c",
        format!(
            "i=0; while [ $i -lt {lines} ]; do echo \"$0 $i\" >> \"$1\"; i=$((i+1)); sleep 0.005; done"
        ),
        name,
        journal
    ]
}

/// The journal holds whole blocks: every writer's lines are contiguous.
fn assert_no_overlap(journal: &Path) {
    let text = std::fs::read_to_string(journal).unwrap_or_default();
    let mut seen: Vec<&str> = Vec::new();
    for line in text.lines() {
        let who = line.split(' ').next().unwrap_or("");
        if seen.last() != Some(&who) {
            assert!(!seen.contains(&who), "two holders at once:\n{text}");
            seen.push(who);
        }
    }
}

/// A writer long enough (about 2 s) for its supervisor's once-a-second
/// check to see the lock file go: `A`; or a short one.
fn run_writer(env: &Env, lock: &Path, extra: &[&str], name: &str, journal: &Path) -> Command {
    let mut a = args!["--lock", lock, "-t", "60s", "-g", "1s"];
    a.extend(extra.iter().map(std::ffi::OsString::from));
    a.push("--".into());
    a.extend(writer(name, journal, if name == "A" { 400 } else { 50 }));
    env.run(a)
}

#[test]
fn removing_a_held_lock_file_cancels_its_holder_and_never_makes_two_holders() {
    for how in ["rm", "replace"] {
        let env = Env::new();
        let guard = Guard::new();
        let lock = env.join("s.lock");
        let journal = env.join("journal");
        let events = env.join("events.jsonl");
        let mut a = spawn(
            run_writer(
                &env,
                &lock,
                &["--events", events.to_str().unwrap()],
                "A",
                &journal,
            ),
            &guard,
        );
        assert!(wait_until(SOON, || journal.exists()), "A started writing");
        if how == "rm" {
            std::fs::remove_file(&lock).expect("rm the lock file");
        } else {
            let fresh = env.join("fresh");
            std::fs::write(&fresh, "").expect("a fresh file");
            std::fs::rename(&fresh, &lock).expect("replace the lock file");
        }
        let mut b = spawn(run_writer(&env, &lock, &[], "B", &journal), &guard);
        // A is cancelled (the first signal ends sh); B runs to the end.
        assert_eq!(a.code(LIMIT), 143, "{how}: {:?}", a.err.seen);
        assert_eq!(b.code(LIMIT), 0, "{how}: {:?}", b.err.seen);
        assert_no_overlap(&journal);
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        let removed = events_in(&text)
            .into_iter()
            .find(|e| e["event"] == "lock-removed")
            .unwrap_or_else(|| panic!("{how}: {text}"));
        assert_eq!(removed["action"], "cancel");
        // Once the newcomer created its file, a removed one reads as
        // replaced.
        let said = removed["how"].as_str().unwrap_or("");
        assert!(
            said == "replaced" || (how == "rm" && said == "removed"),
            "{how}: {removed}"
        );
        assert!(text.contains("\"reason\":\"lock-removed\""), "{text}");
    }
}

#[test]
fn in_warn_mode_the_holder_runs_on_and_a_newcomer_waits_for_it() {
    let env = Env::new();
    let guard = Guard::new();
    let lock = env.join("s.lock");
    let journal = env.join("journal");
    let events = env.join("events.jsonl");
    let mut a = spawn(
        run_writer(
            &env,
            &lock,
            &[
                "--on-lock-removed",
                "warn",
                "--events",
                events.to_str().unwrap(),
            ],
            "A",
            &journal,
        ),
        &guard,
    );
    assert!(wait_until(SOON, || journal.exists()), "A started writing");
    std::fs::remove_file(&lock).expect("rm the lock file");
    let b_events = env.join("b.jsonl");
    let mut b = spawn(
        run_writer(
            &env,
            &lock,
            &["--events", b_events.to_str().unwrap()],
            "B",
            &journal,
        ),
        &guard,
    );
    // status shows the processes that still hold the removed file, on the
    // path's new lock file (the one B waits behind).
    let mut seen = serde_json::Value::Null;
    let shown = wait_until(LIMIT, || {
        let o = run_to_end({
            let mut c = env.cmd();
            c.args(["status", "--json"]).arg(&lock);
            c
        });
        seen = serde_json::from_str(o.stdout.trim()).unwrap_or_default();
        seen["locks"][0]["removed_holders"]
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });
    assert!(shown, "{seen}");
    assert_eq!(a.code(LIMIT), 0, "{:?}", a.err.seen);
    let said = a.err.rest(SOON);
    assert!(
        said.iter().any(|l| l.contains("while the attempt held it")),
        "{said:?}"
    );
    assert_eq!(b.code(LIMIT), 0, "{:?}", b.err.seen);
    // Both ran to the end, one after the other.
    assert_no_overlap(&journal);
    let text = std::fs::read_to_string(&journal).unwrap_or_default();
    assert_eq!(text.lines().count(), 450);
    let ev = std::fs::read_to_string(&events).unwrap_or_default();
    assert!(ev.contains("\"action\":\"warn\""), "{ev}");
    let bev = std::fs::read_to_string(&b_events).unwrap_or_default();
    assert!(bev.contains("\"reason\":\"lock-file-removed\""), "{bev}");
}

#[test]
fn a_waiter_survives_the_removal_and_locks_the_new_file() {
    let env = Env::new();
    let guard = Guard::new();
    let lock = env.join("s.lock");
    let journal = env.join("journal");
    let holder = hold_lock(&lock);
    // The command says whether the lock it holds is on the file the path
    // names.
    let mut w = spawn(
        env.run(args![
            "-v",
            "--lock",
            &lock,
            "--wait",
            "30s",
            "--",
            "sh",
            "-c",
            "held=$(stat -L -c %i /proc/self/fd/$LOCKSUP_LOCK_FD); \
             named=$(stat -c %i \"$LOCKSUP_LOCK_FILE\"); \
             [ \"$held\" = \"$named\" ] && echo same || echo unlinked > \"$0\"",
            &journal
        ]),
        &guard,
    );
    w.err
        .expect_match("waiting line", SOON, |l| l.contains("waiting for"));
    // The lock file goes while the waiter blocks on it, then its holder
    // lets go: the waiter must not run on the unlinked file.
    std::fs::remove_file(&lock).expect("rm");
    drop(holder);
    assert_eq!(w.code(LIMIT), 0, "{:?}", w.err.seen);
    assert_eq!(w.out.next(SOON).as_deref(), Some("same"));
    assert!(
        !journal.exists(),
        "the command ran on the unlinked lock file"
    );
}
