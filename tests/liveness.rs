//! Liveness: heartbeats (sd_notify `WATCHDOG=1` and touching the lock
//! file), `--watchdog`, `EXTEND_TIMEOUT_USEC` capped by `--max-timeout`,
//! `STATUS=`, `READY=1` with `--ready-timeout`, and the notify socket's
//! sender check. Real binary, real processes, real lock files.

mod common;

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use common::*;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/heartbeat.py");

/// A python3 one-liner sending each argument as one datagram to
/// $NOTIFY_SOCKET, `interval` apart.
const NOTIFY_PY: &str = r#"
import os, socket, sys, time
a = os.environ["NOTIFY_SOCKET"]
a = "\0" + a[1:] if a.startswith("@") else a
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
interval = float(sys.argv[1])
for m in sys.argv[2:]:
    s.sendto(m.encode().replace(b"\\n", b"\n"), a)
    time.sleep(interval)
"#;

fn events(r: &mut Running) -> Vec<serde_json::Value> {
    let rest = r.err.rest(SOON);
    let all: Vec<String> = r.err.seen.iter().chain(rest.iter()).cloned().collect();
    events_in(&all.join("\n"))
}

#[test]
fn sd_notify_heartbeats_keep_an_attempt_alive_past_its_watchdog() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    // 30 heartbeats 100 ms apart under a 1.5 s watchdog: 3 s of work, twice
    // the watchdog, with room for python's start under load.
    let mut r = spawn(
        env.run(args![
            "--lock",
            &lock,
            "--timeout",
            "30s",
            "--watchdog",
            "1500ms",
            "--events",
            "-",
            "--",
            "python3",
            EXAMPLE,
            "30",
            "0.1"
        ]),
        &guard,
    );
    assert_eq!(r.code(LIMIT), 0, "stderr: {:?}", r.err.seen);
    assert_eq!(r.out.expect("example output", SOON), "done");
    let evs = events(&mut r);
    assert!(
        evs.iter()
            .any(|e| e["event"] == "heartbeat" && e["source"] == "notify")
    );
    assert!(evs.iter().any(|e| e["event"] == "ready"));
    assert!(
        evs.iter()
            .any(|e| e["event"] == "status" && e["text"] == "step 30/30"),
        "{evs:?}"
    );
    assert!(lock_is_free(&lock));
}

#[test]
fn touching_the_lock_file_from_a_shell_is_a_heartbeat() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    // 2.5 s of touches 100 ms apart under a 1 s watchdog.
    let script =
        "i=0; while [ $i -lt 25 ]; do touch \"$LOCKSUP_LOCK_FILE\"; sleep 0.1; i=$((i+1)); done";
    let mut r = spawn(
        env.run(args![
            "--lock",
            &lock,
            "--watchdog",
            "1s",
            "--events",
            "-",
            "--",
            "sh",
            "-c",
            script
        ]),
        &guard,
    );
    assert_eq!(r.code(LIMIT), 0, "stderr: {:?}", r.err.seen);
    let evs = events(&mut r);
    assert!(
        evs.iter()
            .any(|e| e["event"] == "heartbeat" && e["source"] == "touch"),
        "{evs:?}"
    );
    assert!(!evs.iter().any(|e| e["event"] == "signal"), "{evs:?}");
}

#[test]
fn an_attempt_that_stops_heartbeating_is_ended_within_watchdog_plus_grace() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    // Three heartbeats, then silence (TERM ignored, so the final signal is
    // needed too).
    let script = "trap '' TERM; echo $$; for i in 1 2 3; do touch \"$LOCKSUP_LOCK_FILE\"; sleep 0.1; done; exec sleep 1000";
    let mut r = spawn(
        env.run(args![
            "--lock",
            &lock,
            "--timeout",
            "60s",
            "--watchdog",
            "400ms",
            "--grace",
            "300ms",
            "--events",
            "-",
            "--",
            "sh",
            "-c",
            script
        ]),
        &guard,
    );
    let pid = r.out.expect_pid("command pid", SOON);
    guard.add(pid);
    let t0 = Instant::now();
    assert_eq!(r.code(LIMIT), 137, "stderr: {:?}", r.err.seen);
    // 0.3 s of heartbeats + 0.4 s watchdog + 0.3 s grace, with slack.
    assert!(
        t0.elapsed() < Duration::from_millis(1000) + SLACK_1S,
        "{:?}",
        t0.elapsed()
    );
    assert!(lock_is_free(&lock));
    assert!(wait_pid_gone(pid, SLACK_1S));
    let evs = events(&mut r);
    let sig = evs
        .iter()
        .find(|e| e["event"] == "signal")
        .unwrap_or_else(|| panic!("no signal event: {evs:?}"));
    assert_eq!(sig["reason"], "watchdog");
    assert_eq!(sig["signal"], "SIGTERM");
}

const SLACK_1S: Duration = Duration::from_secs(1);

#[test]
fn extend_timeout_keeps_an_attempt_alive_but_never_past_max_timeout() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    // Timeout 800 ms, but the attempt asks for 5 s more every 100 ms; the
    // cap is 2 s from acquisition: it must end at about 2 s, with 124.
    let msgs: Vec<String> = (0..60)
        .map(|_| "EXTEND_TIMEOUT_USEC=5000000".into())
        .collect();
    let mut a = args![
        "--lock",
        &lock,
        "--timeout",
        "800ms",
        "--max-timeout",
        "2s",
        "--grace",
        "300ms",
        "--events",
        "-",
        "--",
        "python3",
        "-c",
        NOTIFY_PY,
        "0.1"
    ];
    a.extend(msgs.iter().map(std::ffi::OsString::from));
    let mut r = spawn(env.run(a), &guard);
    let t0 = Instant::now();
    assert_eq!(r.code(LIMIT), 124, "stderr: {:?}", r.err.seen);
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "ended too early: {took:?} (not extended)"
    );
    assert!(
        took < Duration::from_secs(2) + SLACK_1S,
        "ended too late: {took:?}"
    );
    let evs = events(&mut r);
    let ext: Vec<_> = evs.iter().filter(|e| e["event"] == "extended").collect();
    assert!(!ext.is_empty(), "{evs:?}");
    let sig = evs
        .iter()
        .find(|e| e["event"] == "signal")
        .expect("signal event");
    assert_eq!(sig["reason"], "timeout");
    assert!(lock_is_free(&lock));
}

#[test]
fn status_lines_reach_the_events_and_the_lock_metadata() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    let mut r = spawn(
        env.run(args![
            "--lock",
            &lock,
            "--events",
            "-",
            "--",
            "sh",
            "-c",
            "python3 -c \"$0\" 0 'STATUS=indexing 3/10' && echo sent && exec sleep 1000",
            NOTIFY_PY
        ]),
        &guard,
    );
    r.out.expect("sent", SOON);
    r.err.expect_match("status event", SOON, |l| {
        l.starts_with('{') && json(l)["event"] == "status" && json(l)["text"] == "indexing 3/10"
    });
    // The metadata is rewritten (at most every 250 ms) while held.
    assert!(
        wait_until(SLACK_1S * 3, || {
            std::fs::read_to_string(&lock)
                .ok()
                .and_then(|t| t.lines().next().map(json))
                .is_some_and(|m| m["status"] == "indexing 3/10")
        }),
        "metadata never showed the status: {:?}",
        std::fs::read_to_string(&lock)
    );
    kill(r.pid(), libc::SIGTERM);
    assert_eq!(r.code(LIMIT), 143);
}

#[test]
fn ready_timeout_ends_an_attempt_that_never_says_ready() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    let mut r = spawn(
        env.run(args![
            "--lock",
            &lock,
            "--ready-timeout",
            "300ms",
            "--events",
            "-",
            "--",
            "sleep",
            "1000"
        ]),
        &guard,
    );
    assert_eq!(r.code(LIMIT), 124, "stderr: {:?}", r.err.seen);
    let evs = events(&mut r);
    let sig = evs
        .iter()
        .find(|e| e["event"] == "signal")
        .expect("signal event");
    assert_eq!(sig["reason"], "ready-timeout");
    // And one that says READY=1 in time runs to its end.
    let o = run_to_end(env.run(args![
        "--lock",
        &lock,
        "--ready-timeout",
        "2s",
        "--",
        "python3",
        "-c",
        NOTIFY_PY,
        "0.4",
        "READY=1"
    ]));
    assert_eq!(o.code, 0, "{o:?}");
}

#[test]
fn notifications_from_outside_the_attempt_are_ignored() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    let mut r = spawn(
        env.run(args![
            "--lock",
            &lock,
            "--timeout",
            "60s",
            "--watchdog",
            "600ms",
            "--events",
            "-",
            "--",
            "sh",
            "-c",
            "echo \"$NOTIFY_SOCKET\"; exec sleep 1000"
        ]),
        &guard,
    );
    let name = r.out.expect("notify socket", SOON);
    let name = name.strip_prefix('@').expect("an abstract socket name");
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("address");
    let outsider = UnixDatagram::unbound().expect("socket");
    let t0 = Instant::now();
    // The test process is not part of the attempt: its heartbeats and its
    // extension must not count, so the watchdog still fires at ~600 ms.
    while t0.elapsed() < Duration::from_millis(900) && r.running() {
        let _ = outsider.send_to_addr(
            b"WATCHDOG=1\nEXTEND_TIMEOUT_USEC=60000000\nSTATUS=evil",
            &addr,
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(r.code(LIMIT), 124, "stderr: {:?}", r.err.seen);
    assert!(t0.elapsed() < Duration::from_millis(600) + SLACK_1S);
    let evs = events(&mut r);
    assert!(!evs.iter().any(|e| e["event"] == "heartbeat"), "{evs:?}");
    assert!(!evs.iter().any(|e| e["event"] == "status"), "{evs:?}");
    let sig = evs
        .iter()
        .find(|e| e["event"] == "signal")
        .expect("signal event");
    assert_eq!(sig["reason"], "watchdog");
}

#[test]
fn systemd_variables_of_locksup_itself_never_reach_the_attempt() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let script = "echo \"NS=$NOTIFY_SOCKET\"; echo \"LF=${LISTEN_FDS-unset}\"; echo \"LP=${LISTEN_PID-unset}\"; echo \"LN=${LISTEN_FDNAMES-unset}\"; echo \"WU=${WATCHDOG_USEC-unset}\"; echo \"WP=${WATCHDOG_PID-unset}\"";
    let mut cmd = env.run(args!["--lock", &lock, "--", "sh", "-c", script]);
    cmd.env("NOTIFY_SOCKET", "/run/systemd/notify")
        .env("LISTEN_FDS", "1")
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDNAMES", "x")
        .env("WATCHDOG_USEC", "1")
        .env("WATCHDOG_PID", "1");
    let o = run_to_end(cmd);
    assert_eq!(o.code, 0, "{o:?}");
    let ns = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("NS="))
        .unwrap_or("");
    assert!(
        ns.starts_with("@locksup/"),
        "attempt got {ns:?}, not its own socket"
    );
    for var in ["LF", "LP", "LN", "WU", "WP"] {
        assert!(
            o.stdout.contains(&format!("{var}=unset")),
            "{var} leaked: {}",
            o.stdout
        );
    }
    // With a watchdog the attempt gets its own WATCHDOG_USEC and its PID.
    let o = run_to_end(env.run(args![
        "--lock",
        &lock,
        "--watchdog",
        "5s",
        "--",
        "sh",
        "-c",
        "echo \"$WATCHDOG_USEC $WATCHDOG_PID $$\""
    ]));
    let f: Vec<&str> = o.stdout.split_whitespace().collect();
    assert_eq!(f.len(), 3, "{o:?}");
    assert_eq!(f[0], "5000000");
    assert_eq!(f[1], f[2], "WATCHDOG_PID is the attempt's pid");
}

#[test]
fn status_json_shows_the_status_line_heartbeat_and_extended_deadline() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let guard = Guard::new();
    let mut r = spawn(
        env.run(args![
            "--lock", &lock, "--timeout", "5s", "--max-timeout", "1h", "--watchdog", "30s",
            "--", "sh", "-c",
            "python3 -c \"$0\" 0 'WATCHDOG=1\\nSTATUS=step 7\\nEXTEND_TIMEOUT_USEC=600000000' && echo sent && exec sleep 1000",
            NOTIFY_PY
        ]),
        &guard,
    );
    r.out.expect("sent", SOON);
    let mut last = serde_json::Value::Null;
    let ok = wait_until(SLACK_1S * 5, || {
        let out = env
            .cmd()
            .args(["status", "--json"])
            .arg(&lock)
            .output()
            .expect("locksup status");
        last = json(String::from_utf8_lossy(&out.stdout).trim());
        let l = &last["locks"][0];
        l["status_text"] == "step 7"
            && l["last_heartbeat"].is_string()
            && l["heartbeat_age_ms"]
                .as_i64()
                .is_some_and(|a| (0..30_000).contains(&a))
            && l["left_ms"].as_i64().is_some_and(|ms| ms > 60_000)
    });
    assert!(ok, "status never showed the liveness fields: {last}");
    kill(r.pid(), libc::SIGTERM);
    assert_eq!(r.code(LIMIT), 143);
}
