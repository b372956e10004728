//! The fair queue, the fencing token and the previous holder's outcome,
//! on the real binary with real processes and the kernel's locks.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(30);

/// Tickets (live or dead) in the queue of `lock`.
fn tickets(lock: &Path) -> usize {
    let mut dir = lock.as_os_str().to_owned();
    dir.push(".queue");
    fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("t-"))
            .count()
    })
}

/// The queue of `lock` as `status --json` shows it: attempt ids in order.
fn queue_ids(env: &Env, lock: &Path) -> Vec<String> {
    let out = env
        .cmd()
        .args(["status", "--json"])
        .arg(lock)
        .output()
        .expect("status");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status json");
    doc["locks"][0]["queue"]
        .as_array()
        .map(|q| {
            q.iter()
                .map(|w| w["attempt_id"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Start attempts `w<i>` for each `i` of `ids` on `lock`, one after
/// another, each once the one before is in the queue (no sleeps: status
/// says so); each appends its number to `order`.
fn queue_up(
    env: &Env,
    guard: &Guard,
    lock: &Path,
    order: &Path,
    ids: std::ops::RangeInclusive<usize>,
    extra: &[&str],
) -> Vec<Running> {
    let mut out = Vec::new();
    for i in ids {
        let id = format!("w{i}");
        let mut cmd = env.run(["--lock"]);
        cmd.arg(lock)
            .args(["--attempt-id", &format!("w{i}")])
            .args(extra)
            .args([
                "--",
                "sh",
                "-c",
                &format!("echo {i} >> '{}'", order.display()),
            ]);
        out.push(spawn(cmd, guard));
        // In the queue as status sees it: a live ticket with its id.
        assert!(
            wait_until(LIMIT, || queue_ids(env, lock).contains(&id)),
            "attempt {i} never queued"
        );
    }
    out
}

fn order_of(order: &Path) -> Vec<String> {
    fs::read_to_string(order)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A CPU hog for "under load", ended by the guard.
fn load(env: &Env, guard: &Guard) -> Vec<Running> {
    (0..2)
        .map(|_| {
            let mut c = env.command("sh");
            c.args(["-c", "while :; do :; done"]);
            spawn(c, guard)
        })
        .collect()
}

#[test]
fn ten_attempts_run_in_the_order_they_started_waiting_every_time_under_load() {
    let env = Env::new();
    let guard = Guard::new();
    let _hogs = load(&env, &guard);
    for round in 0..3 {
        let lock = env.join(&format!("r{round}.lock"));
        let order = env.join(&format!("order{round}"));
        let holder = hold_lock(&lock);
        let mut waiters = queue_up(&env, &guard, &lock, &order, 1..=10, &[]);
        let want: Vec<String> = (1..=10).map(|i| format!("w{i}")).collect();
        assert_eq!(
            queue_ids(&env, &lock),
            want,
            "status shows the queue in order"
        );
        drop(holder);
        for w in &mut waiters {
            assert_eq!(w.code(LIMIT), 0);
        }
        let want: Vec<String> = (1..=10).map(|i| i.to_string()).collect();
        assert_eq!(order_of(&order), want, "round {round}");
        assert_eq!(tickets(&lock), 0, "every ticket is gone");
    }
}

#[test]
fn a_holder_that_asks_again_at_once_never_overtakes_a_waiter() {
    // Two loops for 2 s, each asking again the moment its attempt ends.
    // An attempt lets go only once the other loop's attempt is in the
    // queue (its ticket is there), so every re-request comes after a
    // waiter: with a fair queue the holders alternate, and the same loop
    // twice in a row is an overtake.
    let env = Env::new();
    let guard = Guard::new();
    let lock = env.join("s.lock");
    let queue = env.join("s.lock.queue");
    let log = env.join("log");
    let bin = env!("CARGO_BIN_EXE_locksup");
    let end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3;
    let hold = format!(
        "echo $0 >> '{log}'; \
         while [ $(date +%s) -lt {end} ] && ! ls '{queue}' | grep -q '^t-'; do sleep 0.002; done",
        log = log.display(),
        queue = queue.display(),
    );
    let script = format!(
        "while [ $(date +%s) -lt {end} ]; do \
           '{bin}' run --lock '{lock}' -- sh -c \"$1\" $0 || exit 9; \
         done",
        lock = lock.display(),
    );
    let mut loops: Vec<Running> = ["A", "B"]
        .iter()
        .map(|name| {
            let mut c = env.command("sh");
            c.args(["-c", &script, name, &hold]);
            spawn(c, &guard)
        })
        .collect();
    for l in &mut loops {
        assert_eq!(l.code(LIMIT), 0);
    }
    let seq = order_of(&log);
    assert!(seq.len() >= 20, "{seq:?}");
    // The last hand-offs may find the other loop done.
    let inner = &seq[..seq.len() - 2];
    let overtakes = inner.windows(2).filter(|w| w[0] == w[1]).count();
    assert_eq!(overtakes, 0, "{seq:?}");
}

#[test]
fn waiters_killed_in_the_middle_drop_out_and_the_rest_keep_their_order() {
    let env = Env::new();
    let guard = Guard::new();
    let lock = env.join("s.lock");
    let order = env.join("order");
    let holder = hold_lock(&lock);
    let waiters = queue_up(&env, &guard, &lock, &order, 1..=5, &[]);
    // w2: the process the caller started (the guardian) killed with -9;
    // w4: its supervisor killed with -9.
    kill(waiters[1].pid(), libc::SIGKILL);
    let sup4 = supervisor_of(waiters[3].pid());
    kill(sup4, libc::SIGKILL);
    assert!(
        wait_until(LIMIT, || queue_ids(&env, &lock) == ["w1", "w3", "w5"]),
        "{:?}",
        queue_ids(&env, &lock)
    );
    drop(holder);
    let mut waiters = waiters;
    for i in [0, 2, 4] {
        assert_eq!(waiters[i].code(LIMIT), 0);
    }
    assert_eq!(order_of(&order), ["1", "3", "5"]);
    assert!(wait_until(LIMIT, || tickets(&lock) == 0));
}

#[test]
fn a_queued_waiter_whose_wait_runs_out_leaves_the_others_unaffected() {
    let env = Env::new();
    let guard = Guard::new();
    let lock = env.join("s.lock");
    let order = env.join("order");
    let holder = hold_lock(&lock);
    let mut first = queue_up(&env, &guard, &lock, &order, 1..=1, &[]);
    let mut impatient = queue_up(&env, &guard, &lock, &order, 2..=2, &["--wait", "1s"]);
    let mut last = queue_up(&env, &guard, &lock, &order, 3..=3, &[]);
    assert_eq!(impatient[0].code(LIMIT), 75);
    assert!(wait_until(LIMIT, || queue_ids(&env, &lock).len() == 2));
    drop(holder);
    assert_eq!(first[0].code(LIMIT), 0);
    assert_eq!(last[0].code(LIMIT), 0);
    assert_eq!(order_of(&order), ["1", "3"]);
}

#[test]
fn no_wait_does_not_jump_the_queue() {
    let env = Env::new();
    let guard = Guard::new();
    let lock = env.join("s.lock");
    let order = env.join("order");
    let holder = hold_lock(&lock);
    let mut waiting = queue_up(&env, &guard, &lock, &order, 1..=1, &[]);
    let o = run_to_end({
        let mut c = env.run(["--no-wait", "--events", "-", "--lock"]);
        c.arg(&lock).args(["--", "true"]);
        c
    });
    assert_eq!(o.code, 75, "{o:?}");
    let conflict = events_in(&o.stderr)
        .into_iter()
        .find(|e| e["event"] == "conflict")
        .expect("a conflict event");
    assert_eq!(conflict["reason"], "busy");
    drop(holder);
    assert_eq!(waiting[0].code(LIMIT), 0);
}

#[test]
fn cancel_removes_a_waiter_from_the_queue() {
    let env = Env::new();
    let guard = Guard::new();
    let lock = env.join("s.lock");
    let order = env.join("order");
    let holder = hold_lock(&lock);
    let mut waiters = queue_up(&env, &guard, &lock, &order, 1..=3, &[]);
    let o = run_to_end({
        let mut c = env.cmd();
        c.args(["cancel", "--wait", "10s", "--root"])
            .arg(env.path())
            .arg("w2");
        c
    });
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("waiting for"), "{o:?}");
    assert_eq!(waiters[1].code(LIMIT), 143);
    assert_eq!(queue_ids(&env, &lock), ["w1", "w3"]);
    drop(holder);
    assert_eq!(waiters[0].code(LIMIT), 0);
    assert_eq!(waiters[2].code(LIMIT), 0);
    assert_eq!(order_of(&order), ["1", "3"]);
}

#[test]
fn fences_strictly_increase_over_1000_acquisitions_deletions_and_a_reboot() {
    let env = Env::new();
    let lock = env.join("s.lock");
    let fences = env.join("fences");
    let bin = env!("CARGO_BIN_EXE_locksup");
    let queue = env.join("s.lock.queue");
    // 1,000 acquisitions in four runs of 250: after the first the lock
    // file is deleted (the stored counter with it), after the second the
    // queue directory too, and after the third both (what a reboot with a
    // fresh /run leaves: no file, no process).
    for run in 0..4 {
        let script = format!(
            "for i in $(seq 250); do '{bin}' run --lock '{}' -- sh -c 'echo $LOCKSUP_FENCE >> \"{}\"' || exit 9; done",
            lock.display(),
            fences.display()
        );
        let o = run_to_end({
            let mut c = env.command("sh");
            c.args(["-c", &script]);
            c
        });
        assert_eq!(o.code, 0, "{o:?}");
        match run {
            0 => fs::remove_file(&lock).unwrap(),
            1 => fs::remove_dir_all(&queue).unwrap(),
            2 => {
                fs::remove_file(&lock).unwrap();
                fs::remove_dir_all(&queue).unwrap();
            }
            _ => {}
        }
    }
    let seen: Vec<u64> = order_of(&fences)
        .iter()
        .map(|l| l.parse().expect("a fence is a number"))
        .collect();
    assert_eq!(seen.len(), 1000);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
}

#[test]
fn the_fence_is_in_the_environment_the_metadata_the_events_and_status() {
    let env = Env::new();
    let guard = Guard::new();
    let lock = env.join("s.lock");
    let mut r = spawn(
        {
            let mut c = env.run(["--events", "-", "--lock"]);
            c.arg(&lock)
                .args(["--", "sh", "-c", "echo fence=$LOCKSUP_FENCE; sleep 30"]);
            c
        },
        &guard,
    );
    let acquired = json(
        &r.err
            .expect_match("acquired", LIMIT, |l| l.contains("\"event\":\"acquired\"")),
    );
    let fence = acquired["fence"].as_u64().expect("fence in acquired");
    let line = r
        .out
        .expect_match("fence=", LIMIT, |l| l.starts_with("fence="));
    assert_eq!(line, format!("fence={fence}"));
    let meta: serde_json::Value =
        serde_json::from_str(fs::read_to_string(&lock).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(meta["fence"].as_u64(), Some(fence));
    let out = env
        .cmd()
        .args(["status", "--json"])
        .arg(&lock)
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["locks"][0]["fence"].as_u64(), Some(fence));
    kill(r.pid(), libc::SIGTERM);
    assert_eq!(r.code(LIMIT), 143);
}

/// Run one attempt on `lock` that prints the previous-holder variables,
/// and return them as `OUTCOME ATTEMPT_ID EXIT_CODE`.
fn previous(env: &Env, lock: &Path) -> String {
    let o = run_to_end({
        let mut c = env.run(["--lock"]);
        c.arg(lock).args([
            "--",
            "sh",
            "-c",
            "echo \"$LOCKSUP_PREVIOUS_OUTCOME ${LOCKSUP_PREVIOUS_ATTEMPT_ID:--} ${LOCKSUP_PREVIOUS_EXIT_CODE:--}\"",
        ]);
        c
    });
    assert_eq!(o.code, 0, "{o:?}");
    o.stdout.trim().to_owned()
}

/// Run one attempt to its end, with id `id`.
fn attempt(env: &Env, lock: &Path, id: &str, opts: &[&str], cmd: &[&str]) -> i32 {
    let mut c = env.run(["--attempt-id", id, "--lock"]);
    c.arg(lock).args(opts).arg("--").args(cmd);
    run_to_end(c).code
}

#[test]
fn the_next_holder_is_told_how_the_previous_one_ended() {
    let env = Env::new();
    let lock = env.join("s.lock");
    // The very first holder has no predecessor.
    assert_eq!(
        previous(&env, &lock),
        "exited - -".replace("exited", "none")
    );

    assert_eq!(
        attempt(&env, &lock, "a-exit", &[], &["sh", "-c", "exit 3"]),
        3
    );
    assert_eq!(previous(&env, &lock), "exited a-exit 3");

    let code = attempt(
        &env,
        &lock,
        "a-timeout",
        &["--timeout", "200ms", "--grace", "5s"],
        &["sleep", "30"],
    );
    assert_eq!(code, 124);
    assert_eq!(previous(&env, &lock), "timeout a-timeout 124");

    let code = attempt(&env, &lock, "a-killed", &[], &["sh", "-c", "kill -9 $$"]);
    assert_eq!(code, 137);
    assert_eq!(previous(&env, &lock), "killed a-killed 137");

    let code = attempt(&env, &lock, "a-missing", &[], &["locksup-no-such-command"]);
    assert_eq!(code, 127);
    assert_eq!(previous(&env, &lock), "not-found a-missing 127");

    let code = attempt(
        &env,
        &lock,
        "a-watchdog",
        &["--watchdog", "200ms", "--grace", "5s"],
        &["sleep", "30"],
    );
    assert_eq!(code, 124);
    assert_eq!(previous(&env, &lock), "watchdog a-watchdog 124");
}

#[test]
fn the_next_holder_is_told_of_a_cancel_a_dead_supervisor_and_a_reaped_orphan() {
    let env = Env::new();
    let guard = Guard::new();
    let lock = env.join("s.lock");

    // Cancelled: TERM to the locksup the caller started.
    let mut r = spawn(
        {
            let mut c = env.run(["--attempt-id", "a-cancel", "--lock"]);
            c.arg(&lock).args(["--", "sh", "-c", "echo up; sleep 30"]);
            c
        },
        &guard,
    );
    r.out.expect_match("up", LIMIT, |l| l == "up");
    kill(r.pid(), libc::SIGTERM);
    assert_eq!(r.code(LIMIT), 143);
    assert_eq!(previous(&env, &lock), "cancelled a-cancel 143");

    // Its supervisor killed with -9 (and the guardian with it): the
    // attempt dies with it, and nothing was recorded.
    let mut r = spawn(
        {
            let mut c = env.run(["--attempt-id", "a-sup", "--lock"]);
            // One process (exec): the kernel's parent-death signal ends it.
            c.arg(&lock)
                .args(["--", "sh", "-c", "echo up; exec sleep 30"]);
            c
        },
        &guard,
    );
    r.out.expect_match("up", LIMIT, |l| l == "up");
    kill_guardian_and_supervisor(r.pid());
    assert!(wait_lock_free(&lock, LIMIT));
    assert_eq!(previous(&env, &lock), "supervisor-died a-sup -");

    // An orphan: supervisor and guardian killed while a process that left
    // the attempt's process group keeps the lock; `cancel --only-orphan`
    // (what locksup serve runs) ends it.
    let mut r = spawn(
        {
            let mut c = env.run(["--attempt-id", "a-orphan", "--lock"]);
            c.arg(&lock).args([
                "--",
                "sh",
                "-c",
                "setsid sh -c 'echo $$; exec sleep 60' & wait",
            ]);
            c
        },
        &guard,
    );
    let escapee = r.out.expect_pid("escapee pid", LIMIT);
    guard.add(escapee);
    kill_guardian_and_supervisor(r.pid());
    let o = run_to_end({
        let mut c = env.cmd();
        c.args(["cancel", "--only-orphan", "--grace", "1s", "--wait", "20s"])
            .arg(&lock);
        c
    });
    assert_eq!(o.code, 0, "{o:?}");
    assert!(wait_pid_gone(escapee, LIMIT));
    assert_eq!(previous(&env, &lock), "orphan-reaped a-orphan -");
}

#[test]
fn flock_users_still_exclude_and_are_excluded_beside_the_queue() {
    // A JSONL-like log: each writer writes "begin X" and later "end X"
    // while holding the lock; plain flock(1) writers mixed with queued
    // locksup attempts must never interleave.
    let env = Env::new();
    let guard = Guard::new();
    let lock = env.join("s.lock");
    let log = env.join("log");
    let holder = hold_lock(&lock);
    let write = |who: &str| {
        format!(
            "echo 'begin {who}' >> '{l}'; sleep 0.05; echo 'end {who}' >> '{l}'",
            l = log.display()
        )
    };
    let mut all = Vec::new();
    for i in 0..6 {
        let who = format!("x{i}");
        let cmd = if i % 2 == 0 {
            let mut c = env.run(["--lock"]);
            c.arg(&lock).args(["--", "sh", "-c", &write(&who)]);
            c
        } else {
            let mut c = env.command("flock");
            c.arg(&lock).args(["sh", "-c", &write(&who)]);
            c
        };
        all.push(spawn(cmd, &guard));
    }
    // Everyone is waiting (3 in the queue's head or behind it, 3 in flock).
    assert!(wait_until(LIMIT, || tickets(&lock) >= 1));
    drop(holder);
    for r in &mut all {
        assert_eq!(r.code(LIMIT), 0);
    }
    let lines = order_of(&log);
    assert_eq!(lines.len(), 12, "{lines:?}");
    for pair in lines.chunks(2) {
        let who = pair[0].strip_prefix("begin ").expect("begin first");
        assert_eq!(pair[1], format!("end {who}"), "{lines:?}");
    }
}

#[test]
fn watch_reports_each_attempt_joining_the_queue_in_order() {
    let env = Env::new();
    let guard = Guard::new();
    let lock = env.join("s.lock");
    let order = env.join("order");
    let holder = hold_lock(&lock);
    let mut watch = spawn(
        {
            let mut c = env.cmd();
            c.args(["watch", "--json"]).arg(env.path());
            c
        },
        &guard,
    );
    watch
        .out
        .expect_match("ready", LIMIT, |l| l.contains("\"event\":\"ready\""));
    let mut waiters = queue_up(&env, &guard, &lock, &order, 1..=2, &[]);
    let mut seen = Vec::new();
    loop {
        let line = watch
            .out
            .expect_match("queued", LIMIT, |l| l.contains("\"event\":\"queued\""));
        let ev = json(&line);
        assert_eq!(ev["path"], lock.to_string_lossy().as_ref());
        let ids: Vec<String> = ev["lock"]["queue"]
            .as_array()
            .expect("queue")
            .iter()
            .map(|w| w["attempt_id"].as_str().unwrap_or("?").to_owned())
            .collect();
        seen.push(ids.clone());
        if ids == ["w1", "w2"] {
            break;
        }
        assert_eq!(ids, ["w1"], "{seen:?}");
    }
    drop(holder);
    for w in &mut waiters {
        assert_eq!(w.code(LIMIT), 0);
    }
}

/// The scenario where flock(2) is unfair, made certain: the waiter the
/// kernel wakes is slow to run (stopped), and another attempt asks just
/// after the release. With `order` = any that attempt takes the lock
/// first (the overtake); with fifo it waits behind the queued waiter.
fn slow_waiter_and_a_newcomer(order: &str) -> Vec<String> {
    let env = Env::new();
    let guard = Guard::new();
    let lock = env.join("s.lock");
    let log = env.join("log");
    let go = env.join("go");
    let attempt = |id: &str, script: String| {
        let mut c = env.run([
            "--order",
            order,
            "--events",
            "-",
            "--attempt-id",
            id,
            "--lock",
        ]);
        c.arg(&lock).args(["--", "sh", "-c", &script]);
        spawn(c, &guard)
    };
    let mut holder = attempt(
        "holder",
        format!(
            "echo up; while [ ! -e '{}' ]; do sleep 0.01; done",
            go.display()
        ),
    );
    holder.out.expect_match("up", LIMIT, |l| l == "up");
    let mut waiter = attempt("waiter", format!("echo waiter >> '{}'", log.display()));
    // Its first process is blocked in flock(2): the kernel names it.
    waiter
        .err
        .expect_match("waiting", LIMIT, |l| l.contains("\"event\":\"waiting\""));
    let first = children_of(supervisor_of(waiter.pid()))[0];
    kill(first, libc::SIGSTOP);
    fs::write(&go, "").unwrap();
    assert_eq!(holder.code(LIMIT), 0);
    let mut newcomer = attempt("newcomer", format!("echo newcomer >> '{}'", log.display()));
    if order == "fifo" {
        // Behind the waiter, in the queue.
        let queued = newcomer
            .err
            .expect_match("queued", LIMIT, |l| l.contains("\"event\":\"queued\""));
        assert_eq!(json(&queued)["behind"], "waiter");
    } else {
        assert_eq!(newcomer.code(LIMIT), 0);
    }
    kill(first, libc::SIGCONT);
    assert_eq!(waiter.code(LIMIT), 0);
    assert_eq!(newcomer.code(LIMIT), 0);
    order_of(&log)
}

#[test]
fn a_waiter_slow_to_wake_is_not_overtaken_in_fifo_order_but_is_in_any() {
    assert_eq!(slow_waiter_and_a_newcomer("any"), ["newcomer", "waiter"]);
    assert_eq!(slow_waiter_and_a_newcomer("fifo"), ["waiter", "newcomer"]);
}

#[test]
fn planted_entries_in_the_queue_directory_never_hang_or_break_it() {
    // Another process with write access to the queue directory plants a
    // FIFO, a symbolic link and a directory under ticket names, a FIFO as
    // the ending record, and garbage: attempts and status go on (a FIFO
    // opened for reading would block forever).
    let env = Env::new();
    let lock = env.join("s.lock");
    let order = env.join("order");
    let queue = env.join("s.lock.queue");
    fs::create_dir(&queue).unwrap();
    let fifo = |p: &Path| {
        nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    };
    fifo(&queue.join("t-00000000000000000001"));
    std::os::unix::fs::symlink("/etc/passwd", queue.join("t-00000000000000000002")).unwrap();
    fs::create_dir(queue.join("t-00000000000000000003")).unwrap();
    fs::write(queue.join("t-00000000000000000004"), "not json").unwrap();
    fs::write(queue.join("t-garbage"), "{").unwrap();
    fifo(&queue.join("ended"));
    // Spares and retired tickets that are not: a FIFO, a link, a
    // directory, and under the names the first tickets retire to.
    fifo(&queue.join("s-fifo"));
    std::os::unix::fs::symlink("/etc/passwd", queue.join("s-link")).unwrap();
    fs::create_dir(queue.join("s-dir")).unwrap();
    fifo(&queue.join("r-00000000000000000005"));
    fs::create_dir(queue.join("r-00000000000000000006")).unwrap();
    let guard = Guard::new();
    let holder = hold_lock(&lock);
    let mut waiters = queue_up(&env, &guard, &lock, &order, 1..=3, &["--wait", "20s"]);
    assert_eq!(queue_ids(&env, &lock), ["w1", "w2", "w3"]);
    drop(holder);
    for w in &mut waiters {
        assert_eq!(w.code(LIMIT), 0);
    }
    assert_eq!(order_of(&order), ["1", "2", "3"]);
    // The planted FIFO was replaced by a real record (rename does not
    // follow or open it).
    assert_eq!(previous(&env, &lock).split(' ').next(), Some("exited"));
    // Nothing planted was followed, opened for good or emptied.
    assert_eq!(
        fs::read_link(queue.join("s-link")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert!(queue.join("s-dir").is_dir() && queue.join("s-fifo").exists());
    // The unheld regular file under a ticket's name passed for a dead
    // waiter's and was removed; the rest stays.
    assert!(!queue.join("t-00000000000000000004").exists());
    assert_eq!(tickets(&lock), 4, "the other planted names stay");
}

#[test]
fn a_queued_attempt_says_waiting_when_the_lock_stays_busy_after_its_turn() {
    // w1 at the head waits in the kernel (said at once); w2 waits behind
    // it in the queue. When w1 gets the lock and keeps it, w2's turn has
    // come and its wait in the kernel lasts: said too, naming w1's command
    // as the holder (the quiet 10 ms only spare a hand-over).
    let env = Env::new();
    let guard = Guard::new();
    let lock = env.join("s.lock");
    let go = env.join("go");
    let held = hold_lock(&lock);
    let attempt = |id: &str, script: String| {
        let mut c = env.run(["--events", "-", "--attempt-id", id, "--lock"]);
        c.arg(&lock).args(["--", "sh", "-c", &script]);
        spawn(c, &guard)
    };
    let mut w1 = attempt(
        "w1",
        format!("while [ ! -e '{}' ]; do sleep 0.01; done", go.display()),
    );
    let waiting = w1
        .err
        .expect_match("w1 waiting", LIMIT, |l| l.contains("\"event\":\"waiting\""));
    assert_eq!(
        json(&waiting)["holders"],
        serde_json::json!([std::process::id()])
    );
    let mut w2 = attempt("w2", "true".into());
    let queued = w2
        .err
        .expect_match("w2 queued", LIMIT, |l| l.contains("\"event\":\"queued\""));
    assert_eq!(json(&queued)["behind"], "w1");
    drop(held);
    let started = w1
        .err
        .expect_match("w1 started", LIMIT, |l| l.contains("\"event\":\"started\""));
    let w1_pid = json(&started)["pid"].clone();
    let waiting = w2
        .err
        .expect_match("w2 waiting", LIMIT, |l| l.contains("\"event\":\"waiting\""));
    assert_eq!(json(&waiting)["holders"], serde_json::json!([w1_pid]));
    fs::write(&go, "").unwrap();
    assert_eq!(w1.code(LIMIT), 0);
    assert_eq!(w2.code(LIMIT), 0);
}

#[test]
fn eight_loops_hand_the_lock_over_hundreds_of_times_and_the_queue_stays_small() {
    // Tickets are used again (retired, made spares by their successors,
    // taken by new waiters): under eight-way contention every attempt
    // still runs, none waits long (a spare taken while a successor still
    // waited for it would hang the queue), and the directory holds no
    // ticket afterwards and few spare or retired ones.
    let env = Env::new();
    let lock = env.join("s.lock");
    let queue = env.join("s.lock.queue");
    let bin = env!("CARGO_BIN_EXE_locksup");
    let loops: Vec<_> = (0..8)
        .map(|_| {
            let mut c = env.command("sh");
            c.args([
                "-c",
                "i=0; while [ $i -lt 30 ]; do \"$0\" run --lock \"$1\" --wait 20s -- true || exit $?; i=$((i+1)); done",
                bin,
            ])
            .arg(&lock);
            c
        })
        .collect();
    let outs: Vec<_> = loops
        .into_iter()
        .map(|c| std::thread::spawn(move || run_to_end(c)))
        .collect();
    for o in outs {
        let o = o.join().expect("loop");
        assert_eq!(o.code, 0, "{o:?}");
    }
    assert_eq!(tickets(&lock), 0, "every ticket is gone");
    // Spares (at most 32 kept) and retired tickets (at most one per
    // number, and numbers stay below the most attempts queued at once).
    let kept = fs::read_dir(&queue)
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.starts_with("s-") || n.starts_with("r-")
                })
                .count()
        })
        .unwrap_or(0);
    assert!(
        (1..=32 + 8).contains(&kept),
        "{kept} spare and retired tickets"
    );
}
