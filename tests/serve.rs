//! Integration tests for `locksup serve` and its clients: a real daemon on
//! a socket in a temporary directory, real clients (`locksup run --daemon`)
//! and real attempts. Each test has its own directory and configuration;
//! every process it starts is killed by PID when it ends; readiness is
//! read from the daemon's sd_notify datagrams and its log, never guessed
//! with sleeps.

// These tests call libc directly to build hostile situations.
#![allow(unsafe_code)]
// Test code converts small, known values (PIDs, frame lengths, times).
#![allow(clippy::cast_possible_truncation)]

#[macro_use]
mod common;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// What a test waits for at most when things should take milliseconds.
const BOUND: Duration = Duration::from_secs(10);

/// A running daemon.
struct Daemon {
    run: Running,
    socket: PathBuf,
    config: PathBuf,
    notify: UnixDatagram,
}

impl Daemon {
    /// `locksup serve` with a configuration of its own (`[serve] socket`
    /// in the temp dir, plus `extra`), ready when it has said `READY=1`.
    fn start(env: &Env, extra: &str, guard: &Guard) -> Daemon {
        let socket = env.join("run/locksup.sock");
        let config = env.write(
            "serve.toml",
            &format!("[serve]\nsocket = \"{}\"\n{extra}", socket.display()),
        );
        let mut cmd = env.cmd();
        cmd.arg("serve").env("LOCKSUP_CONFIG", &config);
        Daemon::start_cmd(env, cmd, socket, config, guard)
    }

    fn start_cmd(
        env: &Env,
        mut cmd: Command,
        socket: PathBuf,
        config: PathBuf,
        guard: &Guard,
    ) -> Daemon {
        let notify_path = env.join("notify.sock");
        let _ = fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
        cmd.env("NOTIFY_SOCKET", &notify_path)
            .env("RUST_LOG", "info");
        let run = spawn(cmd, guard);
        let mut d = Daemon {
            run,
            socket,
            config,
            notify,
        };
        let ready = d.expect_notify("READY=1", BOUND);
        assert!(ready.contains("STATUS=0 attempts running"), "{ready:?}");
        d
    }

    fn pid(&self) -> i32 {
        self.run.pid()
    }

    /// The next datagram containing `what`.
    fn expect_notify(&mut self, what: &str, limit: Duration) -> String {
        let end = Instant::now() + limit;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let log = self.run.err.rest(Duration::from_millis(200));
                panic!("no {what:?} from the daemon within {limit:?}; log: {log:?}");
            }
            self.notify.set_read_timeout(Some(left)).unwrap();
            if let Ok(n) = self.notify.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.contains(what) {
                    return text;
                }
            }
        }
    }

    /// A log line of the daemon containing `what`.
    fn expect_log(&mut self, what: &str) -> String {
        self.run.err.expect_match(what, BOUND, |l| l.contains(what))
    }

    /// `locksup run --daemon --socket SOCKET ARGS...`.
    fn client<I, S>(&self, env: &Env, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = env.run([
            "--daemon".as_ref(),
            "--socket".as_ref(),
            self.socket.as_os_str(),
        ]);
        c.args(args);
        c
    }

    /// SIGTERM, then its exit code.
    fn stop(&mut self, limit: Duration) -> i32 {
        kill(self.pid(), libc::SIGTERM);
        self.run.code(limit)
    }
}

/// A raw connection speaking the protocol by hand.
fn frame(json: &str) -> Vec<u8> {
    let mut v = (json.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(json.as_bytes());
    v
}

/// Read one frame (with a timeout); `None` at end of stream.
fn read_frame(s: &mut UnixStream) -> Option<serde_json::Value> {
    s.set_read_timeout(Some(BOUND)).unwrap();
    let mut len = [0u8; 4];
    if s.read_exact(&mut len).is_err() {
        return None;
    }
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).expect("frame body");
    Some(json(&String::from_utf8_lossy(&body)))
}

/// After an error frame, the daemon closes the connection.
fn assert_closed(s: &mut UnixStream) {
    s.set_read_timeout(Some(BOUND)).unwrap();
    let mut b = [0u8; 1];
    match s.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("connection still open: {other:?}"),
    }
}

// ---------------------------------------------------------------------------
// Output and exit codes
// ---------------------------------------------------------------------------

#[test]
fn stdio_of_the_attempt_is_the_clients_own() {
    let env = Env::new();
    let guard = Guard::new();
    let d = Daemon::start(&env, "", &guard);
    let session = env.join("s.jsonl");
    let mut c = d.client(
        &env,
        args![
            "--session",
            &session,
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; read x; echo \"got $x\"; pwd; echo $LOCKSUP_LOCK_FILE"
        ],
    );
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    guard.add(child.id() as i32);
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(exit_code(out.status), 0, "{out:?}");
    // Nothing of the client's own on stdout: only the command's lines.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "out\ngot hello\n{}\n{}.lock\n",
            env.path().display(),
            session.display()
        )
    );
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
    assert!(lock_is_free(&env.join("s.jsonl.lock")));
}

#[test]
fn the_client_finds_the_socket_in_its_configuration() {
    let env = Env::new();
    let guard = Guard::new();
    let d = Daemon::start(&env, "", &guard);
    let mut c = env.run(args![
        "--daemon",
        "--lock",
        env.join("a.lock"),
        "--",
        "echo",
        "hi"
    ]);
    c.env("LOCKSUP_CONFIG", &d.config);
    let o = run_to_end(c);
    assert_eq!(
        (o.code, o.stdout.as_str(), o.stderr.as_str()),
        (0, "hi\n", "")
    );
}

#[test]
fn exit_codes_pass_through() {
    let env = Env::new();
    let guard = Guard::new();
    let d = Daemon::start(&env, "", &guard);
    let held = env.join("held.lock");
    let _holder = hold_lock(&held);
    let lock = |n: &str| env.join(&format!("{n}.lock"));
    let cases: Vec<(i32, Vec<std::ffi::OsString>)> = vec![
        (0, args!["--lock", lock("a"), "--", "true"]),
        (3, args!["--lock", lock("b"), "--", "sh", "-c", "exit 3"]),
        (
            124,
            args!["--lock", lock("c"), "-t", "200ms", "--", "sleep", "30"],
        ),
        (
            137,
            args![
                "--lock",
                lock("d"),
                "-t",
                "200ms",
                "-g",
                "200ms",
                "--",
                "sh",
                "-c",
                "trap '' TERM; sleep 30 & while :; do sleep 0.05; done"
            ],
        ),
        (75, args!["--lock", &held, "--no-wait", "--", "true"]),
        (
            127,
            args!["--lock", lock("f"), "--", "no-such-command-locksup"],
        ),
        (126, args!["--lock", lock("g"), "--", env.join("")]),
        (
            125,
            args!["--lock", lock("h"), "--timeout", "x", "--", "true"],
        ),
    ];
    // All at once: the daemon runs them side by side.
    let mut running: Vec<(i32, Running)> = cases
        .into_iter()
        .map(|(want, a)| (want, spawn(d.client(&env, a), &guard)))
        .collect();
    for (want, r) in &mut running {
        let code = r.code(LIMIT);
        let err = r.err.rest(Duration::from_millis(100));
        assert_eq!(code, *want, "stderr: {err:?}");
        assert!(r.out.rest(Duration::ZERO).is_empty());
    }
    for n in ["a", "b", "c", "d", "f"] {
        assert!(lock_is_free(&lock(n)), "{n}");
    }
}

#[test]
fn usage_errors_come_back_as_one_line_and_125() {
    let env = Env::new();
    let guard = Guard::new();
    let d = Daemon::start(&env, "", &guard);
    let l = env.join("l.lock");
    for (a, needle) in [
        (
            args!["--lock", &l, "--events", env.join("ev"), "--", "true"],
            "--events - for the client's stderr",
        ),
        (args!["--lock", &l, "--", env.join("missing/dir/cmd")], ""),
    ] {
        let o = run_to_end(d.client(&env, a));
        if needle.is_empty() {
            assert_eq!(o.code, 127, "{o:?}");
            continue;
        }
        assert_eq!(o.code, 125, "{o:?}");
        assert_one_error_line(&o);
        assert!(o.stderr.contains(needle), "{o:?}");
        assert!(o.stdout.is_empty());
    }
    // --config with --daemon: the daemon's configuration applies.
    let mut c = env.cmd();
    c.args(args![
        "--config",
        &env.config,
        "run",
        "--daemon",
        "--socket",
        &d.socket,
        "--lock",
        &l,
        "--",
        "true"
    ]);
    let o = run_to_end(c);
    assert_eq!(o.code, 125);
    assert_one_error_line(&o);
    assert!(
        o.stderr.contains("--config cannot be used with --daemon"),
        "{o:?}"
    );
    // The protocol carries UTF-8 only: a client with a variable that is
    // not says so, and runs nothing.
    let mut c = d.client(&env, args!["--lock", &l, "--", "touch", env.join("ran")]);
    {
        use std::os::unix::ffi::OsStrExt;
        c.env(
            std::ffi::OsStr::from_bytes(b"LOCKSUP_TEST_BYTES"),
            std::ffi::OsStr::from_bytes(b"\xff\xfe"),
        );
    }
    let o = run_to_end(c);
    assert_eq!(o.code, 125, "{o:?}");
    assert_one_error_line(&o);
    assert!(o.stderr.contains("not valid UTF-8"), "{o:?}");
    assert!(!env.join("ran").exists());
    // No daemon there.
    let o = run_to_end(env.run(args![
        "--daemon",
        "--socket",
        env.join("nobody-here.sock"),
        "--lock",
        &l,
        "--",
        "true"
    ]));
    assert_eq!(o.code, 125);
    assert_one_error_line(&o);
    assert!(o.stderr.contains("is locksup serve running?"), "{o:?}");
}

#[test]
fn the_daemons_configuration_applies_and_a_bad_reload_keeps_it() {
    let env = Env::new();
    let guard = Guard::new();
    let mut d = Daemon::start(&env, "[run]\ntimeout = \"200ms\"\n", &guard);
    let attempt = |d: &Daemon, n: &str| {
        // The client's own configuration (LOCKSUP_CONFIG, the empty file)
        // does not matter: the daemon's [run] timeout ends it.
        let o = run_to_end(d.client(&env, args!["--lock", env.join(n), "--", "sleep", "30"]));
        assert!(o.elapsed < Duration::from_secs(5), "{o:?}");
        o.code
    };
    assert_eq!(attempt(&d, "a.lock"), 124);
    fs::write(&d.config, "[run]\ntimeout = \n").unwrap();
    kill(d.pid(), libc::SIGHUP);
    let line = d.expect_log("configuration not reloaded");
    assert!(line.contains("serve.toml:2:"), "{line}");
    assert_eq!(attempt(&d, "b.lock"), 124);
    // A good one is taken.
    fs::write(
        &d.config,
        format!(
            "[serve]\nsocket = \"{}\"\n[run]\ntimeout = \"300ms\"\nconflict_exit_code = 9\n",
            d.socket.display()
        ),
    )
    .unwrap();
    kill(d.pid(), libc::SIGHUP);
    d.expect_log("configuration reloaded");
    let held = env.join("held.lock");
    let _h = hold_lock(&held);
    let o = run_to_end(d.client(&env, args!["--lock", &held, "-n", "--", "true"]));
    assert_eq!(o.code, 9, "{o:?}");
}

// ---------------------------------------------------------------------------
// Many clients
// ---------------------------------------------------------------------------

#[test]
fn many_concurrent_clients_with_mutual_exclusion() {
    let env = Env::new();
    let guard = Guard::new();
    let d = Daemon::start(&env, "", &guard);
    let shared = env.join("shared.log");
    fs::write(&shared, "").unwrap();
    let started = Instant::now();
    let mut clients = Vec::new();
    // 200 attempts on sessions of their own.
    for i in 0..200 {
        let mut c = d.client(
            &env,
            args![
                "--session",
                env.join(&format!("s{i}.jsonl")),
                "--",
                "sh",
                "-c",
                "echo \"done $1\" >> \"$2\"; echo $1",
                "sh",
                i.to_string(),
                env.join("distinct.log")
            ],
        );
        c.stdout(File::create(env.join(&format!("out{i}"))).unwrap())
            .stderr(File::create(env.join(&format!("err{i}"))).unwrap());
        clients.push((format!("distinct {i}"), c.spawn().unwrap()));
    }
    // 50 on one session: each appends start and end under the lock.
    for i in 0..50 {
        let mut c = d.client(
            &env,
            args![
                "--session",
                env.join("one.jsonl"),
                "--wait",
                "2m",
                "--",
                "sh",
                "-c",
                "echo \"start $1\" >> \"$2\"; sleep 0.005; echo \"end $1\" >> \"$2\"",
                "sh",
                i.to_string(),
                &shared
            ],
        );
        c.stdout(Stdio::null())
            .stderr(File::create(env.join(&format!("err-one{i}"))).unwrap());
        clients.push((format!("shared {i}"), c.spawn().unwrap()));
    }
    for (_, c) in &clients {
        guard.add(c.id() as i32);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for (name, mut c) in clients {
        let status = loop {
            if let Some(s) = c.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "{name} still running");
            std::thread::sleep(Duration::from_millis(5));
        };
        let errfile = if let Some(i) = name.strip_prefix("distinct ") {
            env.join(&format!("err{i}"))
        } else {
            env.join(&format!("err-one{}", &name[7..]))
        };
        assert_eq!(
            exit_code(status),
            0,
            "{name}: {}",
            fs::read_to_string(errfile).unwrap_or_default()
        );
    }
    let elapsed = started.elapsed();
    // Each client got its own attempt's stdout.
    for i in 0..200 {
        assert_eq!(
            fs::read_to_string(env.join(&format!("out{i}"))).unwrap(),
            format!("{i}\n")
        );
        assert!(lock_is_free(&env.join(&format!("s{i}.jsonl.lock"))));
    }
    let mut done: Vec<String> = fs::read_to_string(env.join("distinct.log"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    done.sort();
    let mut want: Vec<String> = (0..200).map(|i| format!("done {i}")).collect();
    want.sort();
    assert_eq!(done, want);
    // Under one lock: start N, end N, never interleaved, all 50.
    let text = fs::read_to_string(&shared).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 100, "{text}");
    let mut seen = std::collections::BTreeSet::new();
    for pair in lines.chunks(2) {
        let n = pair[0]
            .strip_prefix("start ")
            .unwrap_or_else(|| panic!("interleaved: {pair:?} in\n{text}"));
        assert_eq!(pair[1], format!("end {n}"), "interleaved in\n{text}");
        assert!(seen.insert(n.to_owned()));
    }
    assert!(lock_is_free(&env.join("one.jsonl.lock")));
    eprintln!("250 attempts through the daemon in {elapsed:?}");
}

// ---------------------------------------------------------------------------
// Clients that go away, cancel, or misbehave
// ---------------------------------------------------------------------------

#[test]
fn a_client_killed_mid_run_ends_its_attempt_within_grace() {
    let env = Env::new();
    let guard = Guard::new();
    let d = Daemon::start(&env, "", &guard);
    let lock = env.join("k.lock");
    let mut c = spawn(
        d.client(
            &env,
            args![
                "--lock",
                &lock,
                "--grace",
                "1s",
                "--",
                "sh",
                "-c",
                "trap '' TERM; echo $$; while :; do sleep 0.05; done"
            ],
        ),
        &guard,
    );
    let pid = c.out.expect_pid("attempt pid", BOUND);
    guard.add(pid);
    assert!(!lock_is_free(&lock));
    let killed = Instant::now();
    kill(c.pid(), libc::SIGKILL);
    let _ = c.wait(BOUND);
    // TERM is ignored: KILL after the 1 s grace.
    assert!(wait_pid_gone(pid, Duration::from_secs(6)));
    let took = killed.elapsed();
    assert!(wait_lock_free(&lock, SOON));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "{took:?}"
    );
}

#[test]
fn term_to_the_client_cancels_and_a_second_one_escalates() {
    let env = Env::new();
    let guard = Guard::new();
    let d = Daemon::start(&env, "", &guard);
    let lock = env.join("c.lock");
    // A command that obeys TERM: the client exits 143 (128 + TERM).
    let mut c = spawn(
        d.client(
            &env,
            args![
                "--lock",
                &lock,
                "--",
                "sh",
                "-c",
                "echo $$; exec sleep 1000"
            ],
        ),
        &guard,
    );
    let pid = c.out.expect_pid("attempt pid", BOUND);
    guard.add(pid);
    kill(c.pid(), libc::SIGTERM);
    assert_eq!(c.code(BOUND), 143);
    assert!(!pid_alive(pid));
    assert!(lock_is_free(&lock));
    // USR1 is passed on, without cancelling.
    let mut c = spawn(
        d.client(
            &env,
            args![
                "--lock",
                &lock,
                "--",
                "sh",
                "-c",
                "trap 'echo usr1' USR1; echo ready; while :; do sleep 0.02; done"
            ],
        ),
        &guard,
    );
    assert_eq!(c.out.expect("ready", BOUND), "ready");
    kill(c.pid(), libc::SIGUSR1);
    assert_eq!(c.out.expect("usr1", BOUND), "usr1");
    assert!(c.running());
    kill(c.pid(), libc::SIGINT);
    assert_eq!(c.code(BOUND), 130);
    assert!(wait_lock_free(&lock, SOON));
    // One that ignores it, with a long grace: the second TERM sends KILL.
    let mut c = spawn(
        d.client(
            &env,
            args![
                "--lock",
                &lock,
                "--grace",
                "1h",
                "--",
                "sh",
                "-c",
                "trap '' TERM; echo $$; exec sleep 1000"
            ],
        ),
        &guard,
    );
    let pid = c.out.expect_pid("attempt pid", BOUND);
    guard.add(pid);
    kill(c.pid(), libc::SIGTERM);
    assert!(!wait_pid_gone(pid, Duration::from_millis(300)));
    kill(c.pid(), libc::SIGTERM);
    assert_eq!(c.code(BOUND), 137);
    assert!(wait_lock_free(&lock, SOON));
}

#[test]
fn cancel_through_the_daemon() {
    let env = Env::new();
    let guard = Guard::new();
    let d = Daemon::start(&env, "", &guard);
    let session = env.join("x.jsonl");
    let mut c = spawn(
        d.client(
            &env,
            args![
                "--session",
                &session,
                "--attempt-id",
                "job-1",
                "--",
                "sh",
                "-c",
                "echo $$; exec sleep 1000"
            ],
        ),
        &guard,
    );
    let pid = c.out.expect_pid("attempt pid", BOUND);
    guard.add(pid);
    let cancel = |target: &Path| {
        let mut k = env.cmd();
        k.args(args![
            "cancel", "--daemon", "--socket", &d.socket, target, "--wait", "10s"
        ]);
        run_to_end(k)
    };
    let o = cancel(Path::new("no-such-attempt"));
    assert_eq!(o.code, 1, "{o:?}");
    assert_one_error_line(&o);
    let o = cancel(Path::new("job-1"));
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.contains("of attempt 'job-1'"), "{o:?}");
    assert!(o.stdout.contains("ended with status 143"), "{o:?}");
    assert_eq!(c.code(BOUND), 143);
    assert!(lock_is_free(&env.join("x.jsonl.lock")));
    // By session file too.
    let mut c = spawn(
        d.client(&env, args!["--session", &session, "--", "sleep", "1000"]),
        &guard,
    );
    let o = loop {
        let o = cancel(&session);
        if o.code != 1 {
            break o;
        }
        std::thread::sleep(Duration::from_millis(20)); // not submitted yet
    };
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(c.code(BOUND), 143);
}

#[test]
fn malformed_and_oversized_frames_are_rejected_while_another_attempt_finishes() {
    let env = Env::new();
    let guard = Guard::new();
    let mut d = Daemon::start(&env, "", &guard);
    let lock = env.join("p.lock");
    // An attempt that runs while the bad clients come and go, until the
    // test creates `go`.
    let go = env.join("go");
    let mut good = spawn(
        d.client(
            &env,
            args![
                "--lock",
                &lock,
                "--",
                "sh",
                "-c",
                "echo up; while [ ! -e \"$1\" ]; do sleep 0.01; done; echo done",
                "sh",
                &go
            ],
        ),
        &guard,
    );
    assert_eq!(good.out.expect("up", BOUND), "up");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (frame("hello"), "malformed frame"),
        (
            frame("{\"v\":1,\"type\":\"launch\"}"),
            "unknown variant `launch`",
        ),
        (
            frame("{\"v\":7,\"type\":\"exit\",\"code\":0}"),
            "protocol version 7",
        ),
        (
            frame("{\"v\":1,\"type\":\"run\",\"args\":[],\"env\":[],\"cwd\":\"/\",\"x\":1}"),
            "unknown field `x`",
        ),
        (
            frame("{\"v\":1,\"type\":\"exit\",\"code\":0}"),
            "expected a run, cancel_attempt or list frame first",
        ),
        (
            // A run request without the client's descriptors.
            frame(
                "{\"v\":1,\"type\":\"run\",\"args\":[\"--lock\",\"/tmp/x.lock\",\"--\",\"true\"],\
                 \"env\":[],\"cwd\":\"/\"}",
            ),
            "must carry the client's stdin, stdout and stderr",
        ),
        (
            // Announces 2 MiB: refused before any of it is read.
            (2u32 << 20).to_be_bytes().to_vec(),
            "over the limit of 1048576 bytes",
        ),
        ((0u32).to_be_bytes().to_vec(), "empty"),
    ];
    for (bytes, want) in cases {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        s.write_all(&bytes).unwrap();
        let reply = read_frame(&mut s).expect("an error frame");
        assert_eq!(reply["v"], 1, "{reply}");
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], 125, "{reply}");
        let msg = reply["message"].as_str().unwrap();
        assert!(msg.contains(want), "{msg:?} should contain {want:?}");
        assert!(!msg.contains('\n'));
        assert_closed(&mut s);
    }
    // A truly oversized frame, sent in full while the daemon refuses it.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    let mut big = ((3usize << 20) as u32).to_be_bytes().to_vec();
    big.extend(std::iter::repeat_n(b'x', 3 << 20));
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let _ = s.write_all(&big);
        })
    };
    let reply = read_frame(&mut s).expect("an error frame");
    assert_eq!(reply["type"], "error");
    drop(s);
    let _ = writer.join();
    assert!(good.running(), "the good attempt is still running");
    fs::write(&go, "").unwrap();
    assert_eq!(good.code(BOUND), 0);
    assert_eq!(good.out.rest(SOON), ["done"]);
    // The daemon carries on.
    let o = run_to_end(d.client(&env, args!["--lock", &lock, "--", "echo", "again"]));
    assert_eq!((o.code, o.stdout.as_str()), (0, "again\n"));
    d.expect_log("refused");
    assert!(d.run.running());
}

// ---------------------------------------------------------------------------
// Who may connect
// ---------------------------------------------------------------------------

fn is_root() -> bool {
    // SAFETY: plain syscall.
    unsafe { libc::geteuid() == 0 }
}

/// `setpriv` to nobody/nogroup with no supplementary groups, running
/// `args` (the binary under test).
fn as_nobody(env: &Env, args: Vec<std::ffi::OsString>) -> Command {
    let mut c = env.command("setpriv");
    c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", BIN])
        .args(args);
    c
}

#[test]
fn a_peer_that_is_not_allowed_is_refused() {
    if !is_root() {
        eprintln!("skipping: needs root to run a client as another user (CI runs as root)");
        return;
    }
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipping: setpriv (util-linux) is not installed");
        return;
    }
    let env = Env::new();
    // nobody must reach the socket and the working directory.
    fs::set_permissions(env.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let guard = Guard::new();
    let mut d = Daemon::start(&env, "socket_mode = 0o666\n", &guard);
    assert_eq!(
        fs::metadata(&d.socket).unwrap().permissions().mode() & 0o777,
        0o666
    );
    let lock = env.join("n.lock");
    let client = |d: &Daemon| {
        as_nobody(
            &env,
            args![
                "run",
                "--daemon",
                "--socket",
                &d.socket,
                "--lock",
                &lock,
                "--",
                "sh",
                "-c",
                "echo ran as $(id -u)"
            ],
        )
    };
    let o = run_to_end(client(&d));
    assert_eq!(o.code, 125, "{o:?}");
    assert_one_error_line(&o);
    assert!(o.stderr.contains("may not use locksup serve"), "{o:?}");
    assert!(o.stderr.contains("nobody"), "{o:?}");
    assert!(!lock.exists(), "nothing ran");
    d.expect_log("refused");

    // Allowed by name: it runs, as the daemon's user.
    let text = fs::read_to_string(&d.config).unwrap();
    fs::write(&d.config, format!("{text}allow_users = [\"nobody\"]\n")).unwrap();
    kill(d.pid(), libc::SIGHUP);
    d.expect_log("configuration reloaded");
    let o = run_to_end(client(&d));
    assert_eq!((o.code, o.stdout.as_str()), (0, "ran as 0\n"), "{o:?}");

    // nobody may not cancel root's attempt, unless in admin_groups.
    let mut mine = spawn(
        d.client(
            &env,
            args![
                "--lock",
                env.join("root.lock"),
                "--attempt-id",
                "r1",
                "--",
                "sleep",
                "1000"
            ],
        ),
        &guard,
    );
    let cancel = |d: &Daemon| {
        run_to_end(as_nobody(
            &env,
            args!["cancel", "--daemon", "--socket", &d.socket, "r1"],
        ))
    };
    let o = loop {
        let o = cancel(&d);
        if o.code != 1 {
            break o;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(o.code, 4, "{o:?}");
    assert!(o.stderr.contains("admin_groups"), "{o:?}");
    // nobody sees its own attempts only: none.
    let o = run_to_end(as_nobody(
        &env,
        args!["status", "--daemon", "--socket", &d.socket, "--json"],
    ));
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(json(o.stdout.trim())["attempts"], serde_json::json!([]));
    assert!(mine.running());
    let text = fs::read_to_string(&d.config).unwrap();
    fs::write(&d.config, format!("{text}admin_groups = [\"nogroup\"]\n")).unwrap();
    kill(d.pid(), libc::SIGHUP);
    d.expect_log("configuration reloaded");
    let o = cancel(&d);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(mine.code(BOUND), 143);
}

// ---------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------

#[test]
fn sigterm_to_the_daemon_frees_every_lock_and_exits_0() {
    let env = Env::new();
    let guard = Guard::new();
    let mut d = Daemon::start(&env, "", &guard);
    let mut clients = Vec::new();
    let mut pids = Vec::new();
    for i in 0..5 {
        let script = if i == 0 {
            "trap '' TERM; echo $$; exec sleep 1000"
        } else {
            "echo $$; exec sleep 1000"
        };
        let mut c = spawn(
            d.client(
                &env,
                args![
                    "--lock",
                    env.join(&format!("t{i}.lock")),
                    "-g",
                    "1s",
                    "--",
                    "sh",
                    "-c",
                    script
                ],
            ),
            &guard,
        );
        let pid = c.out.expect_pid("attempt pid", BOUND);
        guard.add(pid);
        pids.push(pid);
        clients.push(c);
    }
    d.expect_notify("STATUS=5 attempts running", BOUND);
    // The daemon's live state.
    let mut st = env.cmd();
    st.args(args!["status", "--daemon", "--socket", &d.socket, "--json"]);
    let o = run_to_end(st);
    assert_eq!(o.code, 0, "{o:?}");
    let doc = json(o.stdout.trim());
    assert_eq!(doc["attempts"].as_array().map(Vec::len), Some(5), "{doc}");
    assert!(
        doc["containment"]
            .as_str()
            .unwrap()
            .contains("process group")
    );
    let locks: Vec<&str> = doc["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["lock"].as_str().unwrap())
        .collect();
    assert!(
        locks.contains(&env.join("t3.lock").to_str().unwrap()),
        "{doc}"
    );
    let mut st = env.cmd();
    st.args(args!["status", "--daemon", "--socket", &d.socket]);
    let o = run_to_end(st);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.starts_with("locksup serve at "), "{o:?}");
    assert_eq!(o.stdout.lines().count(), 2 + 5, "{o:?}");
    let stopping = Instant::now();
    kill(d.pid(), libc::SIGTERM);
    d.expect_notify("STOPPING=1", BOUND);
    assert_eq!(d.run.code(BOUND), 0);
    let took = stopping.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "waited for the grace: {took:?}"
    );
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.code(BOUND), if i == 0 { 137 } else { 143 });
        assert!(lock_is_free(&env.join(&format!("t{i}.lock"))));
    }
    assert_all_gone(&pids, Duration::ZERO);
    assert!(!d.socket.exists(), "the socket is removed");
}

#[test]
fn a_killed_supervisor_leaves_nothing_behind() {
    let env = Env::new();
    let guard = Guard::new();
    let mut d = Daemon::start(&env, "", &guard);
    let lock = env.join("s.lock");
    // The command's parent is its supervisor; its child ignores TERM and
    // keeps the lock.
    let mut c = spawn(
        d.client(
            &env,
            args![
                "--lock",
                &lock,
                "-g",
                "1s",
                "--",
                "sh",
                "-c",
                "echo $PPID; sh -c 'trap \"\" TERM; echo $$; exec sleep 1000' & wait"
            ],
        ),
        &guard,
    );
    let sup = c.out.expect_pid("supervisor pid", BOUND);
    let child = c.out.expect_pid("grandchild pid", BOUND);
    guard.add(child);
    // The supervisor and its guardian (each ends the attempt when the
    // other dies): only both dying leaves anything for the daemon.
    kill_supervisor_and_guardian(sup);
    assert_eq!(c.code(BOUND), 137);
    d.expect_log("was left behind by a supervisor that died");
    assert!(wait_pid_gone(child, Duration::from_secs(6)));
    assert!(wait_lock_free(&lock, SOON));
}

#[test]
fn orphaned_locks_under_the_roots_are_reaped() {
    let env = Env::new();
    let guard = Guard::new();
    let roots = env.join("roots");
    fs::create_dir(&roots).unwrap();
    let mut d = Daemon::start(
        &env,
        &format!(
            "reap_orphans = true\nreap_interval = \"100ms\"\n[status]\nroots = [\"{}\"]\n",
            roots.display()
        ),
        &guard,
    );
    // A local attempt whose supervisor is killed, leaving a holder behind.
    let lock = roots.join("o.lock");
    let mut r = spawn(
        env.run(args![
            "--lock",
            &lock,
            "-g",
            "300ms",
            "--",
            "sh",
            "-c",
            "sleep 1000 & echo $!; wait"
        ]),
        &guard,
    );
    let holder = r.out.expect_pid("holder pid", BOUND);
    guard.add(holder);
    // Both the locksup started (the guardian) and its supervisor.
    let sup = common::children_of(r.pid());
    assert_eq!(sup.len(), 1, "{sup:?}");
    kill_supervisor_and_guardian(sup[0]);
    let _ = r.wait(BOUND);
    d.expect_log("is an orphan: ending it");
    assert!(wait_pid_gone(holder, BOUND));
    assert!(wait_lock_free(&lock, SOON));
    d.expect_log("orphaned lock");
}

#[test]
fn socket_activation_with_a_passed_listener() {
    let env = Env::new();
    let guard = Guard::new();
    let socket = env.join("activated.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let ino = fs::metadata(&socket).unwrap().ino();
    let config = env.write("serve.toml", "");
    // sh puts the listener (its stdin) on descriptor 3 and becomes the
    // daemon, so LISTEN_PID=$$ is the daemon's PID, as systemd sets it.
    let mut cmd = env.command("sh");
    cmd.args([
        "-c",
        "LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=locksup.socket; \
         export LISTEN_PID LISTEN_FDS LISTEN_FDNAMES; exec \"$0\" serve 3<&0 </dev/null",
        BIN,
    ])
    .env("LOCKSUP_CONFIG", &config)
    .stdin(Stdio::from(OwnedFd::from(listener)));
    let mut d = Daemon::start_cmd(&env, cmd, socket.clone(), config, &guard);
    d.expect_log("listening on the socket passed by the service manager");
    // The attempt sees neither the listener nor LISTEN_*.
    let o = run_to_end(d.client(
        &env,
        args![
            "--lock",
            env.join("a.lock"),
            "--",
            "sh",
            "-c",
            "env | grep '^LISTEN_' ; ls -l /proc/self/fd/ | grep -c socket: ; true"
        ],
    ));
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stdout, "0\n", "{o:?}");
    let _ = ino;
    assert_eq!(d.stop(BOUND), 0);
    // Not ours to remove.
    assert!(socket.exists());
}

// ---------------------------------------------------------------------------
// The unit files
// ---------------------------------------------------------------------------

#[test]
fn unit_files_verify_without_warnings() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipping: systemd-analyze is not installed (Debian package systemd)");
        return;
    }
    let env = Env::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    // ExecStart must name an existing binary: the one under test.
    let service = fs::read_to_string(root.join("locksup.service"))
        .unwrap()
        .replace("/usr/bin/locksup", BIN);
    assert!(service.contains(&format!("ExecStart={BIN} serve")));
    let dir = env.join("units");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("locksup.service"), service).unwrap();
    fs::copy(root.join("locksup.socket"), dir.join("locksup.socket")).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "locksup.service", "locksup.socket"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {:?}\n{stderr}",
        out.status
    );
    let text = fs::read_to_string(root.join("locksup.service")).unwrap();
    for want in [
        "Type=notify",
        "NotifyAccess=main",
        "ExecStart=/usr/bin/locksup serve",
        "KillMode=mixed",
        "TimeoutStopSec=30s",
        "Delegate=yes",
        "RuntimeDirectory=locksup",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectHome=read-only",
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "locksup.service lacks {want}"
        );
    }
    let socket = fs::read_to_string(root.join("locksup.socket")).unwrap();
    for want in ["ListenStream=/run/locksup/locksup.sock", "SocketMode=0660"] {
        assert!(
            socket.lines().any(|l| l == want),
            "locksup.socket lacks {want}"
        );
    }
}

// ---------------------------------------------------------------------------
// A delegated cgroup
// ---------------------------------------------------------------------------

/// The cgroup2 mount point, if there is one.
fn cgroup2_mount() -> Option<PathBuf> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        (right.split_whitespace().next()? == "cgroup2")
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// A cgroup made for one test, marked delegated as systemd marks it;
/// removed (with whatever leaf cgroups are left) when dropped.
struct TestCgroup(PathBuf);

impl TestCgroup {
    fn new() -> Option<TestCgroup> {
        let mount = cgroup2_mount()?;
        let dir = mount.join(format!("locksup-test-{}", std::process::id()));
        fs::create_dir(&dir).ok()?;
        let cg = TestCgroup(dir);
        if !cg.0.join("cgroup.kill").exists() {
            return None;
        }
        let path = std::ffi::CString::new(cg.0.as_os_str().as_encoded_bytes()).ok()?;
        // SAFETY: valid NUL-terminated strings and a 1-byte value.
        let rc = unsafe {
            libc::setxattr(
                path.as_ptr(),
                c"trusted.delegate".as_ptr(),
                b"1".as_ptr().cast(),
                1,
                0,
            )
        };
        (rc == 0).then_some(cg)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Ok(rd) = fs::read_dir(&self.0) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    let _ = fs::remove_dir(e.path());
                }
            }
        }
        let _ = fs::remove_dir(&self.0);
    }
}

#[test]
fn a_delegated_cgroup_gives_each_attempt_its_own() {
    if !is_root() {
        eprintln!("skipping: needs root to create a cgroup");
        return;
    }
    let Some(cg) = TestCgroup::new() else {
        eprintln!("skipping: no writable cgroup v2 hierarchy with cgroup.kill and xattrs");
        return;
    };
    let env = Env::new();
    let guard = Guard::new();
    let socket = env.join("run/locksup.sock");
    let config = env.write(
        "serve.toml",
        &format!("[serve]\nsocket = \"{}\"\n", socket.display()),
    );
    // Start the daemon inside the cgroup, as systemd would.
    let mut cmd = env.command("sh");
    cmd.args([
        "-c",
        "echo $$ > \"$1/cgroup.procs\" && exec \"$0\" serve",
        BIN,
    ])
    .arg(&cg.0)
    .env("LOCKSUP_CONFIG", &config);
    let mut d = Daemon::start_cmd(&env, cmd, socket, config, &guard);
    let line = d.expect_log("containment:");
    assert!(line.contains("a cgroup per attempt under"), "{line}");
    let rel = format!("/{}", cg.0.file_name().unwrap().to_string_lossy());
    assert_eq!(
        fs::read_to_string(format!("/proc/{}/cgroup", d.pid()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_owned)),
        Some(format!("{rel}/supervisor"))
    );
    // The attempt is in a cgroup of its own, removed when it ends.
    let o = run_to_end(d.client(
        &env,
        args![
            "--lock",
            env.join("a.lock"),
            "--",
            "sh",
            "-c",
            "grep ^0:: /proc/self/cgroup"
        ],
    ));
    assert_eq!(o.code, 0, "{o:?}");
    let own = o.stdout.trim().strip_prefix("0::").unwrap().to_owned();
    assert!(own.starts_with(&format!("{rel}/attempt-")), "{own}");
    let mount = cgroup2_mount().unwrap();
    let dir = mount.join(own.trim_start_matches('/'));
    assert!(wait_until(SOON, || !dir.exists()), "{} left", dir.display());

    // A supervisor killed: a setsid escapee that ignores TERM is still
    // ended (cgroup.kill after the grace), and its cgroup removed.
    let lock = env.join("b.lock");
    let mut c = spawn(
        d.client(
            &env,
            args![
                "--lock",
                &lock,
                "-g",
                "500ms",
                "--",
                "sh",
                "-c",
                "echo $PPID; setsid sh -c 'trap \"\" TERM; echo $$; exec sleep 1000' & wait"
            ],
        ),
        &guard,
    );
    let sup = c.out.expect_pid("supervisor pid", BOUND);
    let escapee = c.out.expect_pid("escapee pid", BOUND);
    guard.add(escapee);
    kill_supervisor_and_guardian(sup);
    assert_eq!(c.code(BOUND), 137);
    assert!(wait_pid_gone(escapee, Duration::from_secs(6)));
    assert!(wait_lock_free(&lock, SOON));
    assert_eq!(d.stop(BOUND), 0);
    let left: Vec<_> = fs::read_dir(&cg.0)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("attempt-"))
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "attempt cgroups left: {left:?}");
}

/// SIGKILL to a supervisor and its guardian (its parent) at once.
fn kill_supervisor_and_guardian(supervisor: i32) {
    let guardian = stat_field(supervisor, 4)
        .and_then(|p| p.parse::<i32>().ok())
        .expect("the supervisor's parent");
    kill_guardian_and_supervisor(guardian);
}
