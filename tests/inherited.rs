//! Whatever process state locksup starts in, its promises hold: blocked
//! or ignored signals, a PID namespace (with the host's /proc, its own,
//! or none), real-time signals, a terminal, trees that take time to walk.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// `python3 -c <this> SPEC... -- PROGRAM ARGS...` blocks (`block:N`) or
/// ignores (`ignore:N`) signals, then execs PROGRAM: a parent that leaves
/// its signal state to its child, as shells and job runners do.
const WITH_SIGNALS: &str = r#"
import os, signal, sys
args = sys.argv[1:]
cut = args.index("--")
for spec in args[:cut]:
    what, n = spec.split(":")
    if what == "block":
        signal.pthread_sigmask(signal.SIG_BLOCK, {int(n)})
    else:
        signal.signal(int(n), signal.SIG_IGN)
os.execvp(args[cut + 1], args[cut + 1:])
"#;

/// locksup started with `specs` applied to it by its parent.
fn with_signals(env: &Env, specs: &[String], locksup_args: Vec<std::ffi::OsString>) -> Command {
    let mut c = env.command("python3");
    c.arg("-c").arg(WITH_SIGNALS).args(specs).arg("--").arg(BIN);
    c.arg("run").args(locksup_args);
    c
}

fn bit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

fn status_mask(out: &str, field: &str) -> u64 {
    let line = out
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in {out:?}"));
    parse_sigmask(line)
}

#[test]
fn a_blocked_sigalrm_or_sigchld_does_not_disable_the_deadline() {
    let env = Env::new();
    let lock = env.join("a.lock");
    for blocked in [
        vec![libc::SIGALRM],
        vec![libc::SIGCHLD],
        vec![libc::SIGALRM, libc::SIGCHLD, libc::SIGTERM],
    ] {
        let specs: Vec<String> = blocked.iter().map(|s| format!("block:{s}")).collect();
        // The deadline still ends a command that would run for a minute.
        // The command inherits the mask: with TERM blocked in it, only the
        // final signal, a grace later, ends it.
        let o = run_to_end(with_signals(
            &env,
            &specs,
            args![
                "--lock", &lock, "-t", "0.3s", "-g", "1s", "--", "sleep", "60"
            ],
        ));
        let want = if blocked.contains(&libc::SIGTERM) {
            137
        } else {
            124
        };
        assert_eq!(o.code, want, "{blocked:?}: {o:?}");
        assert!(o.elapsed < Duration::from_secs(10), "{blocked:?}: {o:?}");
        // A command that exits at once is reaped at once, not at its
        // deadline.
        let o = run_to_end(with_signals(
            &env,
            &specs,
            args!["--lock", &lock, "-t", "60s", "--", "true"],
        ));
        assert_eq!(o.code, 0, "{blocked:?}: {o:?}");
        assert!(o.elapsed < Duration::from_secs(10), "{blocked:?}: {o:?}");
        assert!(lock_is_free(&lock));
    }
}

#[test]
fn the_command_gets_the_signal_mask_locksup_inherited() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let blocked = [
        libc::SIGUSR1,
        libc::SIGALRM,
        libc::SIGCHLD,
        libc::SIGRTMIN() + 2,
    ];
    let specs: Vec<String> = blocked.iter().map(|s| format!("block:{s}")).collect();
    let o = run_to_end(with_signals(
        &env,
        &specs,
        args![
            "--lock",
            &lock,
            "--",
            "grep",
            "^SigBlk:",
            "/proc/self/status"
        ],
    ));
    assert_eq!(o.code, 0, "{o:?}");
    let want = blocked.iter().fold(0, |m, s| m | bit(*s));
    assert_eq!(status_mask(&o.stdout, "SigBlk:"), want, "{o:?}");
    // Control: nothing blocked, nothing blocked for the command.
    let o = run_to_end(with_signals(
        &env,
        &[],
        args![
            "--lock",
            &lock,
            "--",
            "grep",
            "^SigBlk:",
            "/proc/self/status"
        ],
    ));
    assert_eq!(status_mask(&o.stdout, "SigBlk:"), 0, "{o:?}");
}

#[test]
fn every_ignored_signal_stays_ignored_for_the_command_and_no_other() {
    let env = Env::new();
    let lock = env.join("a.lock");
    // SIGPIPE is the one the Rust runtime changes before main; SIGCHLD
    // and SIGALRM are ones locksup handles itself.
    let ignored = [
        libc::SIGPIPE,
        libc::SIGCHLD,
        libc::SIGALRM,
        libc::SIGHUP,
        libc::SIGUSR2,
        libc::SIGRTMIN() + 1,
    ];
    let specs: Vec<String> = ignored.iter().map(|s| format!("ignore:{s}")).collect();
    let status = |specs: &[String]| {
        let o = run_to_end(with_signals(
            &env,
            specs,
            args![
                "--lock",
                &lock,
                "-t",
                "30s",
                "--",
                "cat",
                "/proc/self/status"
            ],
        ));
        assert_eq!(o.code, 0, "{o:?}");
        (
            status_mask(&o.stdout, "SigIgn:"),
            status_mask(&o.stdout, "SigCgt:"),
        )
    };
    // What the wrapper itself leaves ignored (python ignores SIGXFSZ)
    // reaches the command as it is.
    let (baseline, caught) = status(&[]);
    assert_eq!(caught, 0, "no handler survives exec");
    assert_ne!(baseline & bit(libc::SIGXFSZ), 0, "python3 ignores SIGXFSZ");
    let want = ignored.iter().fold(baseline, |m, s| m | bit(*s));
    assert_eq!(status(&specs).0, want);
    // Started by this test, the command has ignored exactly what a
    // program this test starts directly has ignored.
    let direct = run_to_end({
        let mut c = env.command("grep");
        c.args(["^SigIgn:", "/proc/self/status"]);
        c
    });
    let o = run_to_end(env.run(args![
        "--lock",
        &lock,
        "--",
        "grep",
        "^SigIgn:",
        "/proc/self/status"
    ]));
    assert_eq!(
        parse_sigmask(o.stdout.trim()),
        parse_sigmask(direct.stdout.trim()),
        "{o:?}"
    );
    assert_eq!(
        parse_sigmask(o.stdout.trim()) & bit(libc::SIGPIPE),
        0,
        "{o:?}"
    );
}

#[test]
fn an_ignored_sigpipe_makes_the_command_see_a_write_error_as_under_timeout() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let mut c = env.command("sh");
    c.args([
        "-c",
        "trap '' PIPE; { \"$0\" run --lock \"$1\" -- yes; echo \"status $?\" >&2; } | :",
        BIN,
    ])
    .arg(&lock);
    let o = run_to_end(c);
    // `yes` writes to a closed pipe: with SIGPIPE ignored it gets EPIPE,
    // says so and exits 1 (it would die of SIGPIPE, 141, otherwise).
    assert!(o.stderr.contains("status 1"), "{o:?}");
    assert!(
        o.stderr.contains("Broken pipe") || o.stderr.contains("write error"),
        "{o:?}"
    );
}

// ---------------------------------------------------------------------------
// PID namespaces
// ---------------------------------------------------------------------------

/// `unshare` with `opts`, then `sh -c script` (locksup is `$0`).
fn in_namespace(env: &Env, opts: &[&str], script: &str, extra: &[&Path]) -> Command {
    let mut c = env.command("unshare");
    c.args(opts).args(["sh", "-c", script, BIN]).args(extra);
    c
}

fn check_unshare(env: &Env) {
    let o = run_to_end(in_namespace(env, &["--pid", "--fork"], "true", &[]));
    assert_eq!(
        o.code, 0,
        "these tests need PID namespaces (root, or user namespaces): {o:?}"
    );
}

/// The signal events of an events file: (signal, targets).
fn signals(events: &Path) -> Vec<(String, usize)> {
    let text = std::fs::read_to_string(events).unwrap_or_default();
    events_in(&text)
        .into_iter()
        .filter(|e| e["event"] == "signal")
        .map(|e| {
            (
                e["signal"].as_str().unwrap_or("?").to_owned(),
                e["targets"].as_array().map_or(0, Vec::len),
            )
        })
        .collect()
}

const TREE: &str = "sleep 60 & setsid sleep 61 & exec sleep 62";

#[test]
fn as_pid_1_of_a_pid_namespace_with_the_host_s_proc() {
    let env = Env::new();
    check_unshare(&env);
    let lock = env.join("a.lock");
    let events = env.join("events.jsonl");
    // locksup is PID 1 of the namespace; /proc is still the host's.
    let script =
        format!("exec \"$0\" run --lock \"$1\" --events \"$2\" -t 0.3s -g 5s -- sh -c '{TREE}'");
    let o = run_to_end(in_namespace(
        &env,
        &["--pid", "--fork"],
        &script,
        &[&lock, &events],
    ));
    assert_eq!(o.code, 124, "{o:?}");
    assert!(o.elapsed < Duration::from_secs(10), "{o:?}");
    // Only the attempt's own processes (not the host's) were signalled,
    // and TERM was enough.
    let sigs = signals(&events);
    assert_eq!(sigs.len(), 1, "{sigs:?}");
    assert_eq!(sigs[0].0, "SIGTERM");
    assert!((1..=4).contains(&sigs[0].1), "{sigs:?}");
    assert!(lock_is_free(&lock));
}

#[test]
fn as_pid_1_of_a_pid_namespace_with_its_own_proc() {
    let env = Env::new();
    check_unshare(&env);
    let lock = env.join("a.lock");
    let events = env.join("events.jsonl");
    let script =
        format!("exec \"$0\" run --lock \"$1\" --events \"$2\" -t 0.3s -g 5s -- sh -c '{TREE}'");
    let o = run_to_end(in_namespace(
        &env,
        &["--pid", "--fork", "--mount-proc"],
        &script,
        &[&lock, &events],
    ));
    assert_eq!(o.code, 124, "{o:?}");
    let sigs = signals(&events);
    assert_eq!(sigs.len(), 1, "{sigs:?}");
    assert!((1..=4).contains(&sigs[0].1), "{sigs:?}");
    assert!(lock_is_free(&lock));
}

#[test]
fn as_pid_1_without_proc_the_whole_namespace_is_ended() {
    let env = Env::new();
    check_unshare(&env);
    let lock = env.join("a.lock");
    let events = env.join("events.jsonl");
    // An empty /proc: nothing can be walked or verified; as PID 1, every
    // process of the namespace is the attempt's (the setsid one too).
    let script = format!(
        "mount -t tmpfs none /proc && exec \"$0\" run --lock \"$1\" --events \"$2\" \
         -t 0.3s -g 5s -- sh -c '{TREE}'"
    );
    let o = run_to_end(in_namespace(
        &env,
        &["--mount", "--pid", "--fork"],
        &script,
        &[&lock, &events],
    ));
    assert_eq!(o.code, 124, "{o:?}");
    assert!(o.elapsed < Duration::from_secs(10), "{o:?}");
    assert_eq!(signals(&events).len(), 1, "TERM was enough");
    assert!(lock_is_free(&lock));
}

#[test]
fn without_proc_the_attempt_s_process_group_is_ended() {
    let env = Env::new();
    check_unshare(&env);
    let lock = env.join("a.lock");
    // Not PID 1, no /proc: the process group is what can be reached.
    let script = "mount -t tmpfs none /proc && exec \"$0\" run --lock \"$1\" \
                  -t 0.3s -g 5s -- sh -c 'sleep 60 & exec sleep 61'";
    let o = run_to_end(in_namespace(&env, &["--mount"], script, &[&lock]));
    assert_eq!(o.code, 124, "{o:?}");
    assert!(o.elapsed < Duration::from_secs(10), "{o:?}");
    assert!(lock_is_free(&lock));
}

// ---------------------------------------------------------------------------
// Real-time signals
// ---------------------------------------------------------------------------

#[test]
fn real_time_signals_are_accepted_and_named() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let events = env.join("events.jsonl");
    let (lo, hi) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    for (given, name) in [
        ("RTMIN+3".to_owned(), "SIGRTMIN+3".to_owned()),
        ("sigrtmin".to_owned(), "SIGRTMIN".to_owned()),
        ("RTMAX-1".to_owned(), "SIGRTMAX-1".to_owned()),
        ((lo + 2).to_string(), "SIGRTMIN+2".to_owned()),
        (hi.to_string(), "SIGRTMAX".to_owned()),
    ] {
        let _ = std::fs::remove_file(&events);
        let o = run_to_end(env.run(args![
            "-v", "--lock", &lock, "--events", &events, "--signal", &given, "-t", "0.2s", "--",
            "sleep", "60"
        ]));
        assert_eq!(o.code, 124, "{given}: {o:?}");
        assert!(
            o.stderr.contains(&format!("sent {name} to")),
            "{given}: {o:?}"
        );
        assert!(
            o.stderr.contains(&format!("command killed by {name}")),
            "{given}: {o:?}"
        );
        assert_eq!(signals(&events)[0].0, name, "{given}");
    }
    for bad in ["32", "33", "65", "RTMIN+31", "RTMAX+1", "RTMIN-1"] {
        let o = run_to_end(env.run(args!["--lock", &lock, "--signal", bad, "--", "true"]));
        assert_eq!(o.code, 125, "{bad}: {o:?}");
        assert_one_error_line(&o);
    }
}

#[test]
fn a_command_killed_by_a_real_time_signal_is_reported_not_lost() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let events = env.join("events.jsonl");
    let n = libc::SIGRTMIN() + 4;
    let o = run_to_end(env.run(args![
        "--lock",
        &lock,
        "--events",
        &events,
        "--",
        "sh",
        "-c",
        format!("kill -{n} $$; sleep 60")
    ]));
    assert_eq!(o.code, 128 + n, "{o:?}");
    let text = std::fs::read_to_string(&events).unwrap_or_default();
    let evs = events_in(&text);
    let exited = evs.iter().find(|e| e["event"] == "exited").expect("exited");
    assert_eq!(exited["signal"], "SIGRTMIN+4", "{text}");
    let end = evs.last().expect("events");
    assert_eq!(end["event"], "end", "{text}");
    assert_eq!(end["outcome"], "killed", "{text}");
    assert_eq!(end["exit_code"], 128 + n, "{text}");
}

#[test]
fn real_time_signals_in_the_config_and_for_cancel() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let events = env.join("events.jsonl");
    let config = env.write("c.toml", "[run]\nsignal = \"RTMAX-1\"\n");
    let mut c = env.run(args![
        "--lock", &lock, "--events", &events, "-t", "0.2s", "--", "sleep", "60"
    ]);
    c.env("LOCKSUP_CONFIG", &config);
    let o = run_to_end(c);
    assert_eq!(o.code, 124, "{o:?}");
    assert_eq!(signals(&events)[0].0, "SIGRTMAX-1");

    // cancel --force with a real-time signal ends a plain flock(1) holder.
    let guard = Guard::new();
    let mut holder = env.command("flock");
    holder.arg(&lock).args(["sleep", "60"]);
    let mut h = spawn(holder, &guard);
    assert!(wait_until(SOON, || !lock_is_free(&lock)), "flock holds it");
    let mut cancel = env.cmd();
    cancel
        .args(["cancel", "--force", "--signal", "RTMIN+5"])
        .arg(&lock);
    let o = run_to_end(cancel);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(wait_lock_free(&lock, SOON));
    let st = h.child.wait().expect("wait flock");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&st),
        Some(libc::SIGRTMIN() + 5),
        "flock(1) itself holds the lock and got the signal"
    );
}

// ---------------------------------------------------------------------------
// Escalation and the final event
// ---------------------------------------------------------------------------

#[test]
fn grace_zero_sends_only_the_final_signal_and_says_so() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let events = env.join("events.jsonl");
    let o = run_to_end(env.run(args![
        "-v", "--lock", &lock, "--events", &events, "-t", "0.2s", "--grace", "0", "--", "sleep",
        "60"
    ]));
    assert_eq!(o.code, 137, "{o:?}");
    assert!(o.stderr.contains("command killed by SIGKILL"), "{o:?}");
    assert!(!o.stderr.contains("SIGTERM"), "{o:?}");
    let sigs = signals(&events);
    assert_eq!(sigs.len(), 1, "{sigs:?}");
    assert_eq!(sigs[0].0, "SIGKILL");
}

#[test]
fn every_attempt_ends_with_an_end_event_carrying_the_exit_code() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let events = env.join("events.jsonl");
    let script = env.write("noexec.sh", "#!/bin/sh\n");
    chmod(&script, 0o644);
    let cases: Vec<(Vec<std::ffi::OsString>, i32, &str)> = vec![
        (
            args!["--", "locksup-test-no-such-command"],
            127,
            "not-found",
        ),
        (args!["--", &script], 126, "cannot-execute"),
        (args!["--", "sh", "-c", "exit 3"], 3, "exited"),
        (args!["-t", "0.2s", "--", "sleep", "60"], 124, "timeout"),
    ];
    for (extra, code, outcome) in cases {
        let _ = std::fs::remove_file(&events);
        let mut a = args!["--lock", &lock, "--events", &events];
        a.extend(extra);
        let o = run_to_end(env.run(a));
        assert_eq!(o.code, code, "{o:?}");
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        let end = events_in(&text).pop().expect("events");
        assert_eq!(end["event"], "end", "{text}");
        assert_eq!(end["exit_code"], code, "{text}");
        assert_eq!(end["outcome"], outcome, "{text}");
    }
    // A busy lock, without waiting.
    let _held = hold_lock(&lock);
    let _ = std::fs::remove_file(&events);
    let o = run_to_end(env.run(args![
        "--lock",
        &lock,
        "--events",
        &events,
        "--no-wait",
        "--",
        "true"
    ]));
    assert_eq!(o.code, 75, "{o:?}");
    let text = std::fs::read_to_string(&events).unwrap_or_default();
    let end = events_in(&text).pop().expect("events");
    assert_eq!(end["outcome"], "busy", "{text}");
}

/// Processes that ignore TERM: the first signal must go out at the
/// deadline and the final one a grace later, however big the tree.
#[test]
fn escalation_is_on_time_for_a_large_tree() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let events = env.join("events.jsonl");
    let ready = env.join("ready");
    const N: usize = 400;
    // N processes that ignore TERM, half of them in sessions of their own.
    let script = format!(
        "trap '' TERM; i=0; while [ $i -lt {N} ]; do \
           if [ $((i % 2)) = 0 ]; then sleep 60 & else setsid sleep 60 & fi; \
           i=$((i + 1)); done; : > \"$0\"; exec sleep 60"
    );
    let guard = Guard::new();
    let mut r = spawn(
        env.run(args![
            "--lock", &lock, "--events", &events, "-t", "3s", "-g", "1s", "--", "sh", "-c", script,
            &ready
        ]),
        &guard,
    );
    assert!(wait_until(LIMIT, || ready.exists()), "the tree was built");
    assert_eq!(r.code(LIMIT), 137);
    let text = std::fs::read_to_string(&events).unwrap_or_default();
    let evs = events_in(&text);
    let deadline = rfc3339(
        evs.iter()
            .find(|e| e["event"] == "acquired")
            .and_then(|e| e["deadline"].as_str())
            .expect("deadline"),
    );
    let sig: Vec<_> = evs.iter().filter(|e| e["event"] == "signal").collect();
    assert_eq!(sig.len(), 2, "{text}");
    let late = |e: &serde_json::Value, due: std::time::SystemTime| {
        rfc3339(e["ts"].as_str().unwrap_or(""))
            .duration_since(due)
            .unwrap_or_default()
    };
    // Generous bounds; BENCHMARKS.md has the figures.
    let first = late(sig[0], deadline);
    let last = late(sig[1], deadline + Duration::from_secs(1));
    assert!(
        first < Duration::from_millis(1500),
        "first signal {first:?} late"
    );
    assert!(
        last < Duration::from_millis(1500),
        "final signal {last:?} late"
    );
    assert!(
        sig[1]["targets"].as_array().map_or(0, Vec::len) >= N / 2,
        "{}",
        sig[1]
    );
    assert!(lock_is_free(&lock));
}

// ---------------------------------------------------------------------------
// --foreground
// ---------------------------------------------------------------------------

#[test]
fn foreground_keeps_the_command_in_locksup_s_group_and_still_ends_the_tree() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    let mut r = spawn(
        env.run(args![
            "--foreground",
            "--lock",
            &lock,
            "-t",
            "0.5s",
            "--",
            "sh",
            "-c",
            "echo $$; setsid sleep 60 & echo $!; exec sleep 61"
        ]),
        &guard,
    );
    let main = r.out.expect_pid("command pid", SOON);
    let escapee = r.out.expect_pid("setsid pid", SOON);
    guard.add(main);
    guard.add(escapee);
    assert_eq!(pgid_of(main), pgid_of(r.pid()), "same process group");
    assert_eq!(r.code(LIMIT), 124);
    assert_all_gone(&[main, escapee], SOON);
    assert!(lock_is_free(&lock));
}

#[test]
fn foreground_lets_a_command_read_from_its_terminal() {
    let env = Env::new();
    let lock = env.join("a.lock");
    // script(1) gives the command a terminal; without --foreground the
    // command is in a background group of it and is stopped by SIGTTIN.
    for (fg, code) in [(true, 0), (false, 124)] {
        let cmd = format!(
            "\"{BIN}\" run {} --lock \"{}\" -t 3s -- sh -c 'read x; echo \"got $x\"'",
            if fg { "--foreground" } else { "" },
            lock.display()
        );
        let mut c = env.command("sh");
        c.args(["-c", "echo hello | script -q -e -c \"$0\" /dev/null", &cmd]);
        let o = run_to_end(c);
        assert_eq!(o.code, code, "foreground {fg}: {o:?}");
        assert_eq!(o.stdout.contains("got hello"), fg, "foreground {fg}: {o:?}");
    }
}
