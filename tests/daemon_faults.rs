//! `locksup serve` against hostile clients and a hostile file system
//! (issue #12, item 4): descriptors sent in bulk or where none belong, a
//! configuration file replaced by a FIFO, and a daemon that stops
//! answering its clients. Each case runs the real binary and checks that
//! the daemon still serves correctly afterwards.
//!
//! Every process a test starts is killed by its PID when the test ends
//! (a stopped daemon gets SIGCONT first); files and sockets live in a
//! temporary directory of the test's own; the tests synchronise on the
//! daemon's sd_notify datagrams, its log and the protocol, not on sleeps.

// These tests call libc directly to build hostile situations.
#![allow(unsafe_code)]
// Test code converts small, known values (PIDs, frame lengths, times).
#![allow(clippy::cast_possible_truncation)]

#[macro_use]
mod common;

use std::fs::{self, File};
use std::io::{IoSlice, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};

use common::*;

/// What a test waits for at most when things should take milliseconds.
const BOUND: Duration = Duration::from_secs(10);

/// A running daemon on a socket in the test's directory.
struct Daemon {
    run: Running,
    socket: PathBuf,
    config: PathBuf,
    notify: UnixDatagram,
}

impl Daemon {
    /// `locksup serve --config CONFIG`, with `[serve] socket` in the temp
    /// dir plus `extra`; ready when it has said `READY=1`.
    fn start(env: &Env, extra: &str, guard: &Guard) -> Daemon {
        let socket = env.join("run/locksup.sock");
        let config = env.write(
            "serve.toml",
            &format!("[serve]\nsocket = \"{}\"\n{extra}", socket.display()),
        );
        Daemon::start_with(env, &config, socket, guard)
    }

    fn start_with(env: &Env, config: &Path, socket: PathBuf, guard: &Guard) -> Daemon {
        let notify_path = env.join("notify.sock");
        let _ = fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
        let mut cmd = env.cmd();
        cmd.arg("serve")
            .env("LOCKSUP_CONFIG", config)
            .env("NOTIFY_SOCKET", &notify_path)
            .env("RUST_LOG", "info");
        let run = spawn(cmd, guard);
        let mut d = Daemon {
            run,
            socket,
            config: config.to_path_buf(),
            notify,
        };
        d.expect_notify("READY=1");
        d
    }

    fn pid(&self) -> i32 {
        self.run.pid()
    }

    /// The next sd_notify datagram containing `what`.
    fn expect_notify(&mut self, what: &str) -> String {
        let end = Instant::now() + BOUND;
        let mut buf = vec![0u8; 4096];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let log = self.run.err.rest(Duration::from_millis(200));
                panic!("no {what:?} from the daemon within {BOUND:?}; log: {log:?}");
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
    fn client(&self, env: &Env, args: Vec<std::ffi::OsString>) -> Command {
        let mut c = env.run(args!["--daemon", "--socket", &self.socket]);
        c.args(args);
        c
    }

    /// A plain attempt through the daemon works: `echo WORD` comes back.
    fn assert_serves(&self, env: &Env, word: &str) {
        let o = run_to_end(self.client(
            env,
            args!["--lock", env.join("ok.lock"), "--", "echo", word],
        ));
        assert_eq!(
            (o.code, o.stdout.as_str()),
            (0, format!("{word}\n").as_str()),
            "{o:?}"
        );
    }

    /// The daemon's open descriptors.
    fn open_fds(&self) -> usize {
        fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// SIGTERM; it must exit 0 within `BOUND`.
    fn assert_stops(&mut self) {
        let t = Instant::now();
        kill(self.pid(), libc::SIGTERM);
        assert_eq!(self.run.code(BOUND), 0);
        assert!(t.elapsed() < BOUND, "{:?}", t.elapsed());
    }
}

/// Sends SIGCONT to a process this test stopped, when dropped: declared
/// after the [`Guard`], it runs first, so the guard's SIGKILL reaches a
/// running process.
struct Resume(i32, Option<u64>);

impl Resume {
    fn stop(pid: i32) -> Resume {
        let st = starttime(pid);
        kill(pid, libc::SIGSTOP);
        assert!(
            wait_until(BOUND, || proc_state(pid) == Some('T')),
            "pid {pid} did not stop"
        );
        Resume(pid, st)
    }

    fn resume(&mut self) {
        if self.1.is_some() && starttime(self.0) == self.1 {
            kill(self.0, libc::SIGCONT);
        }
        self.1 = None;
    }
}

impl Drop for Resume {
    fn drop(&mut self) {
        if self.1.is_some() && starttime(self.0) == self.1 {
            // SAFETY: plain syscall on a pid we verified.
            unsafe {
                libc::kill(self.0, libc::SIGCONT);
            }
        }
    }
}

/// A length-prefixed frame.
fn frame(json: &str) -> Vec<u8> {
    let mut v = (json.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(json.as_bytes());
    v
}

/// A well-formed `run` frame for `true` on `lock`.
fn run_frame(lock: &Path) -> Vec<u8> {
    frame(&format!(
        "{{\"v\":1,\"type\":\"run\",\"args\":[\"--lock\",\"{}\",\"--\",\"true\"],\
         \"env\":[[\"PATH\",\"/usr/bin:/bin\"]],\"cwd\":\"/\"}}",
        lock.display()
    ))
}

/// Send `bytes` with `fds` attached, in one message.
fn send_fds(s: &UnixStream, bytes: &[u8], fds: &[i32]) {
    let cmsg = [ControlMessage::ScmRights(fds)];
    let n = sendmsg::<()>(
        s.as_raw_fd(),
        &[IoSlice::new(bytes)],
        &cmsg,
        MsgFlags::empty(),
        None,
    )
    .expect("sendmsg with descriptors");
    assert_eq!(n, bytes.len(), "short sendmsg");
}

/// The daemon's answer: one frame, then the connection closes. Returns
/// the frame (`None` if it closed without one).
fn answer_then_close(s: &mut UnixStream) -> Option<serde_json::Value> {
    s.set_read_timeout(Some(BOUND)).unwrap();
    let mut all = Vec::new();
    match s.read_to_end(&mut all) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the daemon kept the connection open: {e}"),
    }
    if all.len() < 4 {
        return None;
    }
    let len = u32::from_be_bytes([all[0], all[1], all[2], all[3]]) as usize;
    assert_eq!(all.len(), 4 + len, "one frame, then the end");
    Some(json(&String::from_utf8_lossy(&all[4..])))
}

/// Whether `flock -n` can take `lock` now (util-linux `flock(1)`).
fn flock_n_free(lock: &Path) -> bool {
    let st = Command::new("flock")
        .args(["-n", "-E", "75"])
        .arg(lock)
        .arg("true")
        .status()
        .expect("run flock(1)");
    match st.code() {
        Some(0) => true,
        Some(75) => false,
        other => panic!("flock -n {}: {other:?}", lock.display()),
    }
}

// ---------------------------------------------------------------------------
// 1. Descriptors: truncated control data, unexpected ones, wrong counts
// ---------------------------------------------------------------------------

/// 200 connections each sending 20 descriptors in one message (more than
/// the daemon has room for, so the kernel truncates the control data):
/// the daemon's descriptor count comes back to where it was, and it
/// serves as before.
#[test]
fn twenty_descriptors_in_one_message_200_times_leak_nothing() {
    let env = Env::new();
    let guard = Guard::new();
    let mut d = Daemon::start(&env, "", &guard);
    d.assert_serves(&env, "before");
    let baseline = d.open_fds();
    let null = File::open("/dev/null").unwrap();
    let fds = [null.as_raw_fd(); 20];
    let req = run_frame(&env.join("x.lock"));
    for i in 0..200 {
        let mut s = UnixStream::connect(&d.socket).unwrap();
        send_fds(&s, &req, &fds);
        let reply = answer_then_close(&mut s).unwrap_or_else(|| panic!("no answer to #{i}"));
        assert_eq!(reply["type"], "error", "{reply}");
        assert_eq!(reply["code"], 125, "{reply}");
        let msg = reply["message"].as_str().unwrap();
        assert!(msg.contains("descriptors"), "{msg}");
    }
    let mut now = d.open_fds();
    let back = wait_until(BOUND, || {
        now = d.open_fds();
        now <= baseline
    });
    eprintln!("daemon descriptors: {baseline} before, {now} after 200 x 20");
    assert!(
        back,
        "the daemon holds {now} descriptors, {baseline} before"
    );
    d.assert_serves(&env, "after");
    d.expect_log("refused");
    d.assert_stops();
}

/// A descriptor of a locked file sent where it does not belong is not
/// kept: once the daemon has answered and closed, nothing holds the lock
/// (`flock -n` takes it), whatever the path: truncated control data,
/// descriptors with a frame that takes none, a wrong count, a run request
/// that is refused after its descriptors arrived, descriptors sent while an
/// attempt runs.
#[test]
fn a_planted_lock_descriptor_is_never_kept() {
    let env = Env::new();
    let guard = Guard::new();
    let mut d = Daemon::start(&env, "", &guard);
    let null = File::open("/dev/null").unwrap();
    let n = null.as_raw_fd();
    let lock = env.join("planted.lock");
    let bad_run = frame(
        "{\"v\":1,\"type\":\"run\",\"args\":[\"--timeout\",\"x\",\"--lock\",\"/l\",\"--\",\"true\"],\
         \"env\":[],\"cwd\":\"/\"}",
    );
    let list = frame("{\"v\":1,\"type\":\"list\"}");
    let garbage = frame("not json");
    let req = run_frame(&env.join("r.lock"));
    // (what to send, how many /dev/null copies after the lock's descriptor, expected message)
    let cases: Vec<(&str, Vec<u8>, usize, &str)> = vec![
        ("20 descriptors, truncated", req.clone(), 19, "descriptors"),
        ("4 descriptors", req.clone(), 3, "descriptors"),
        ("2 descriptors", req.clone(), 1, "stdin, stdout and stderr"),
        ("descriptors with a list frame", list, 0, "descriptors"),
        ("descriptors with garbage", garbage, 2, "malformed"),
        (
            "a run request refused after receipt",
            bad_run,
            2,
            "invalid value 'x'",
        ),
    ];
    for (what, bytes, extra, want) in cases {
        let held = hold_lock(&lock);
        let mut fds = vec![held.as_raw_fd()];
        fds.extend(std::iter::repeat_n(n, extra));
        let mut s = UnixStream::connect(&d.socket).unwrap();
        send_fds(&s, &bytes, &fds);
        drop(held);
        let reply = answer_then_close(&mut s).unwrap_or_else(|| panic!("{what}: no answer"));
        assert_eq!(reply["type"], "error", "{what}: {reply}");
        let msg = reply["message"].as_str().unwrap();
        assert!(
            msg.contains(want),
            "{what}: {msg:?} should contain {want:?}"
        );
        assert!(flock_n_free(&lock), "{what}: the daemon kept the lock");
        assert!(lock_is_free(&lock), "{what}");
    }

    // While an attempt runs, its connection takes no more descriptors: the
    // planted one is closed, and the attempt is cancelled as for any
    // protocol error.
    let mut s = UnixStream::connect(&d.socket).unwrap();
    let marker = env.join("running");
    let req = frame(&format!(
        "{{\"v\":1,\"type\":\"run\",\"args\":[\"--lock\",\"{}\",\"--\",\"sh\",\"-c\",\
         \"touch {}; exec sleep 1000\"],\"env\":[[\"PATH\",\"/usr/bin:/bin\"]],\"cwd\":\"/\"}}",
        env.join("a.lock").display(),
        marker.display()
    ));
    let stdio = [n, n, n];
    send_fds(&s, &req, &stdio);
    s.set_read_timeout(Some(BOUND)).unwrap();
    let mut len = [0u8; 4];
    s.read_exact(&mut len).unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    let started = json(&String::from_utf8_lossy(&body));
    assert_eq!(started["type"], "started", "{started}");
    guard.add(started["attempt_pid"].as_i64().unwrap() as i32);
    assert!(wait_until(BOUND, || marker.exists()));
    let held = hold_lock(&lock);
    send_fds(
        &s,
        &frame("{\"v\":1,\"type\":\"signal\",\"signal\":\"USR1\"}"),
        &[held.as_raw_fd()],
    );
    drop(held);
    let reply = answer_then_close(&mut s).expect("an error frame");
    assert_eq!(reply["type"], "error", "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("descriptors"),
        "{reply}"
    );
    assert!(
        flock_n_free(&lock),
        "the daemon kept the lock sent mid-attempt"
    );
    assert!(
        wait_lock_free(&env.join("a.lock"), BOUND),
        "attempt cancelled"
    );

    d.assert_serves(&env, "still");
    d.expect_log("refused");
    d.assert_stops();
}

/// A client that sends its descriptors and part of a request, then
/// nothing: refused after the documented 10 s, its descriptors closed;
/// meanwhile the daemon serves others.
#[test]
fn a_request_not_finished_within_10s_is_refused_and_its_descriptors_closed() {
    let env = Env::new();
    let guard = Guard::new();
    let mut d = Daemon::start(&env, "", &guard);
    let lock = env.join("idle.lock");
    let held = hold_lock(&lock);
    let null = File::open("/dev/null").unwrap();
    let req = run_frame(&env.join("r.lock"));
    let mut s = UnixStream::connect(&d.socket).unwrap();
    let connected = Instant::now();
    send_fds(
        &s,
        &req[..req.len() / 2],
        &[held.as_raw_fd(), null.as_raw_fd(), null.as_raw_fd()],
    );
    drop(held);
    d.assert_serves(&env, "meanwhile");
    assert!(!flock_n_free(&lock), "held by the daemon while it waits");
    let reply = answer_then_close(&mut s).expect("an error frame");
    let took = connected.elapsed();
    eprintln!("unfinished request refused after {took:?}: {reply}");
    assert_eq!(reply["type"], "error", "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("no request within 10s"),
        "{reply}"
    );
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(20),
        "{took:?}"
    );
    assert!(flock_n_free(&lock), "the daemon kept the lock");
    d.assert_stops();
}

// ---------------------------------------------------------------------------
// 2. The configuration file replaced by a FIFO
// ---------------------------------------------------------------------------

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
}

/// SIGHUP with the configuration replaced by a FIFO (and by a symlink to
/// one): the reload fails with one line, the old configuration stays, the
/// daemon serves and stops at once on SIGTERM. A symlink to a regular file
/// is a normal configuration and reloads.
#[test]
fn a_fifo_in_place_of_the_configuration_does_not_hang_the_daemon() {
    let env = Env::new();
    let guard = Guard::new();
    let mut d = Daemon::start(&env, "[run]\nconflict_exit_code = 9\n", &guard);
    let good = fs::read_to_string(&d.config).unwrap();
    let held = env.join("held.lock");
    let _h = hold_lock(&held);
    let conflict =
        |d: &Daemon| run_to_end(d.client(&env, args!["--lock", &held, "-n", "--", "true"])).code;
    assert_eq!(conflict(&d), 9);

    fs::remove_file(&d.config).unwrap();
    mkfifo(&d.config);
    kill(d.pid(), libc::SIGHUP);
    let line = d.expect_log("configuration not reloaded");
    assert!(line.contains("not a regular file"), "{line}");
    assert!(line.contains("serve.toml"), "{line}");
    // The old configuration applies, and the daemon answers.
    assert_eq!(conflict(&d), 9);
    d.assert_serves(&env, "fifo");

    // A symlink to a FIFO: the same.
    let fifo = env.join("elsewhere.fifo");
    mkfifo(&fifo);
    fs::remove_file(&d.config).unwrap();
    std::os::unix::fs::symlink(&fifo, &d.config).unwrap();
    kill(d.pid(), libc::SIGHUP);
    let line = d.expect_log("configuration not reloaded");
    assert!(line.contains("not a regular file"), "{line}");
    assert_eq!(conflict(&d), 9);

    // A symlink to a regular file is followed, as in /etc.
    let real = env.write("real.toml", &good.replace("= 9", "= 8"));
    fs::remove_file(&d.config).unwrap();
    std::os::unix::fs::symlink(&real, &d.config).unwrap();
    kill(d.pid(), libc::SIGHUP);
    d.expect_log("configuration reloaded");
    assert_eq!(conflict(&d), 8);

    // Back to a FIFO, then TERM right after the HUP: prompt exit.
    fs::remove_file(&d.config).unwrap();
    mkfifo(&d.config);
    kill(d.pid(), libc::SIGHUP);
    d.expect_log("configuration not reloaded");
    d.assert_stops();
}

/// A FIFO as the configuration at start: a clear error and 125, at once.
#[test]
fn a_fifo_configuration_at_start_is_an_error_not_a_hang() {
    let env = Env::new();
    let guard = Guard::new();
    let fifo = env.join("config.toml");
    mkfifo(&fifo);
    for how in ["--config", "LOCKSUP_CONFIG"] {
        let mut cmd = env.cmd();
        if how == "--config" {
            cmd.arg("--config").arg(&fifo);
        } else {
            cmd.env("LOCKSUP_CONFIG", &fifo);
        }
        cmd.args(args!["serve", "--socket", env.join("s.sock")]);
        let mut r = spawn(cmd, &guard);
        let code = r.code(BOUND);
        let err = r.err.rest(SOON);
        assert_eq!(code, 125, "{how}: {err:?}");
        assert!(
            err.iter()
                .any(|l| l.contains(fifo.to_str().unwrap()) && l.contains("not a regular file")),
            "{how}: {err:?}"
        );
        assert!(r.started.elapsed() < BOUND);
        assert!(!env.join("s.sock").exists());
    }
}

// ---------------------------------------------------------------------------
// 3. A daemon that does not answer
// ---------------------------------------------------------------------------

/// Wait until `pid` has a socket open (the client has connected).
fn wait_connected(pid: i32) -> bool {
    wait_until(BOUND, || {
        fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.flatten().any(|e| {
                    fs::read_link(e.path())
                        .map(|t| t.to_string_lossy().starts_with("socket:"))
                        .unwrap_or(false)
                })
            })
            .unwrap_or(false)
    })
}

/// TERM to a client whose daemon is stopped before it answered: the client
/// gives up within the documented bound with 143 and one line; when the
/// daemon resumes it sees the connection closed and does not run the
/// command. A second TERM gives up at once.
#[test]
fn term_to_a_client_of_a_stopped_daemon_gives_up_and_nothing_runs() {
    let env = Env::new();
    let guard = Guard::new();
    let mut d = Daemon::start(&env, "", &guard);
    let mut stopped = Resume::stop(d.pid());
    let marker = env.join("marker");
    let script = format!("touch '{}'", marker.display());
    let mut c1 = spawn(
        d.client(
            &env,
            args!["--lock", env.join("m.lock"), "--", "sh", "-c", &script],
        ),
        &guard,
    );
    assert!(wait_connected(c1.pid()));
    let t = Instant::now();
    kill(c1.pid(), libc::SIGTERM);
    let code = c1.code(Duration::from_secs(20));
    let took = t.elapsed();
    // (Its stderr stays open in the stopped daemon's socket: no end of
    // stream until it resumes.)
    let line = c1.err.expect("error line", SOON);
    eprintln!("client gave up {took:?} after TERM: {line:?}");
    assert_eq!(code, 143, "{line:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(
        line.starts_with("locksup: ") && line.contains("did not acknowledge the cancel within 5s"),
        "{line:?}"
    );

    // A second signal while the first is unacknowledged: at once. (The
    // client's log says when it has taken the first one.)
    let mut cmd = d.client(
        &env,
        args!["--lock", env.join("m.lock"), "--", "sh", "-c", &script],
    );
    cmd.env("RUST_LOG", "info");
    let mut c2 = spawn(cmd, &guard);
    assert!(wait_connected(c2.pid()));
    kill(c2.pid(), libc::SIGINT);
    c2.err.expect_match("the cancel request", BOUND, |l| {
        l.contains("asking locksup serve to cancel")
    });
    let t = Instant::now();
    kill(c2.pid(), libc::SIGINT);
    assert_eq!(c2.code(BOUND), 130);
    let took = t.elapsed();
    eprintln!("second INT: client gone after {took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");

    stopped.resume();
    d.expect_log("went away before its attempt started");
    d.expect_log("went away before its attempt started");
    // A normal attempt after those, through the same daemon: the two
    // requests before it were read, and neither ran.
    d.assert_serves(&env, "resumed");
    assert!(
        !marker.exists(),
        "the daemon ran the command of a client that had gone"
    );
    // The daemon closed what it had received of them.
    assert_eq!(c1.err.rest(SOON), Vec::<String>::new());
    d.assert_stops();
}

/// A daemon that never answers the request: the client gives up after the
/// documented 10 s with 125 and one line; nothing runs later.
#[test]
fn a_daemon_that_never_answers_is_given_up_on() {
    let env = Env::new();
    let guard = Guard::new();
    let mut d = Daemon::start(&env, "", &guard);
    let mut stopped = Resume::stop(d.pid());
    let marker = env.join("marker");
    let script = format!("touch '{}'", marker.display());
    let mut c = spawn(
        d.client(
            &env,
            args!["--lock", env.join("m.lock"), "--", "sh", "-c", &script],
        ),
        &guard,
    );
    let code = c.code(Duration::from_secs(20));
    let took = c.started.elapsed();
    let line = c.err.expect("error line", SOON);
    eprintln!("client gave up after {took:?}: {line:?}");
    assert_eq!(code, 125, "{line:?}");
    assert!(
        line.starts_with("locksup: ") && line.contains("did not answer within 10s"),
        "{line:?}"
    );
    assert!(
        took >= Duration::from_secs(9) && took < Duration::from_secs(15),
        "{took:?}"
    );
    stopped.resume();
    d.expect_log("went away before its attempt started");
    d.assert_serves(&env, "resumed");
    assert!(!marker.exists());
    assert_eq!(c.err.rest(SOON), Vec::<String>::new(), "one line only");
    d.assert_stops();
}

/// TERM to a client whose attempt runs while the daemon is stopped: the
/// client gives up within the bound (143, one line); when the daemon
/// resumes, it ends the attempt and frees the lock.
#[test]
fn term_to_a_client_while_its_daemon_is_stopped_mid_attempt() {
    let env = Env::new();
    let guard = Guard::new();
    let mut d = Daemon::start(&env, "", &guard);
    let lock = env.join("r.lock");
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
    let mut stopped = Resume::stop(d.pid());
    let t = Instant::now();
    kill(c.pid(), libc::SIGTERM);
    assert_eq!(c.code(Duration::from_secs(20)), 143);
    let took = t.elapsed();
    let line = c.err.expect("error line", SOON);
    eprintln!("client gave up {took:?} after TERM: {line:?}");
    assert!(took < Duration::from_secs(8), "{took:?}");
    assert!(line.contains("did not acknowledge the cancel"), "{line:?}");
    stopped.resume();
    assert!(
        wait_pid_gone(pid, BOUND),
        "the attempt ends once the daemon resumes"
    );
    assert!(wait_lock_free(&lock, BOUND));
    assert_eq!(c.err.rest(SOON), Vec::<String>::new(), "one line only");
    d.assert_serves(&env, "resumed");
    d.assert_stops();
}
