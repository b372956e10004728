//! Integration tests for `locksup serve`'s metrics endpoint (`[serve]
//! metrics`) and its history of finished attempts (`[serve] history`,
//! `locksup status --daemon --history`): a real daemon, real attempts,
//! `promtool check metrics` and a real Prometheus server (Debian package
//! `prometheus`) started by the test on 127.0.0.1 with a free port and a
//! temporary configuration and data directory. A test fails, never
//! skips, when promtool or Prometheus cannot run. Every process a test
//! starts is killed by PID when it ends; synchronisation is by polling
//! with generous deadlines, never by fixed sleeps.

// Test code converts small, known values (PIDs, frame lengths, sizes).
#![allow(clippy::cast_possible_truncation)]

#[macro_use]
mod common;

use std::fs;
use std::io::{IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// What a test waits for at most when things should take milliseconds.
const BOUND: Duration = Duration::from_secs(10);
/// What a test waits for at most for Prometheus to have scraped.
const SCRAPED: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// A free TCP port on 127.0.0.1 (bound, then released for the user).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// A running daemon with a metrics endpoint.
struct Daemon {
    run: Running,
    socket: PathBuf,
    config: PathBuf,
    /// `127.0.0.1:PORT`, or the Unix socket's path.
    metrics: String,
}

impl Daemon {
    /// `locksup serve` with `[serve] metrics` on a free port (or on the
    /// Unix socket `unix`), `[status] roots` the test's directory, and
    /// `extra` in `[serve]`; ready when it said `READY=1`.
    fn start(env: &Env, extra: &str, unix: Option<&Path>, guard: &Guard) -> Daemon {
        // A free port may be taken between its check and the daemon's
        // bind by a test running beside this one: try again then.
        for _ in 0..5 {
            let metrics = match unix {
                Some(p) => p.display().to_string(),
                None => format!("127.0.0.1:{}", free_port()),
            };
            let key = match unix {
                Some(p) => format!("unix:{}", p.display()),
                None => metrics.clone(),
            };
            let socket = env.join("run/locksup.sock");
            let config = env.write(
                "serve.toml",
                &format!(
                    "[status]\nroots = [\"{}\"]\n[serve]\nsocket = \"{}\"\nmetrics = \"{key}\"\n{extra}",
                    env.join("locks").display(),
                    socket.display()
                ),
            );
            fs::create_dir_all(env.join("locks")).expect("create locks dir");
            let notify_path = env.join("notify.sock");
            let _ = fs::remove_file(&notify_path);
            let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
            let mut cmd = env.cmd();
            cmd.arg("serve")
                .env("LOCKSUP_CONFIG", &config)
                .env("NOTIFY_SOCKET", &notify_path)
                .env("RUST_LOG", "info");
            let mut run = spawn(cmd, guard);
            let end = Instant::now() + BOUND;
            let mut buf = vec![0u8; 4096];
            loop {
                if !run.running() {
                    let err = run.err.rest(Duration::from_millis(200));
                    if err.iter().any(|l| l.contains("Address already in use")) {
                        break; // another port
                    }
                    panic!("the daemon exited at start: {err:?}");
                }
                let left = end.saturating_duration_since(Instant::now());
                assert!(
                    !left.is_zero(),
                    "no READY=1 from the daemon within {BOUND:?}"
                );
                notify
                    .set_read_timeout(Some(left.min(Duration::from_millis(200))))
                    .expect("timeout");
                if let Ok(n) = notify.recv(&mut buf)
                    && String::from_utf8_lossy(&buf[..n]).contains("READY=1")
                {
                    return Daemon {
                        run,
                        socket,
                        config,
                        metrics,
                    };
                }
            }
        }
        panic!("could not start the daemon on a free port in 5 tries");
    }

    fn pid(&self) -> i32 {
        self.run.pid()
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

    /// Run one attempt through the daemon to its end; its exit code.
    fn attempt(&self, env: &Env, args: &[&str]) -> i32 {
        let o = run_to_end(self.client(env, args));
        o.code
    }

    /// `GET /metrics`: the body, after checking the status and type.
    fn scrape(&self) -> String {
        let (status, head, body) = self.http(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status, 200, "{head}\n{body}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{head}"
        );
        body
    }

    /// Send `request` to the endpoint; status, head and body.
    fn http(&self, request: &[u8]) -> (u16, String, String) {
        if self.metrics.starts_with('/') {
            let mut s = UnixStream::connect(&self.metrics).expect("connect to metrics socket");
            s.set_read_timeout(Some(BOUND)).expect("timeout");
            http_exchange(&mut s, request)
        } else {
            http_get_raw(&self.metrics, request)
        }
    }

    /// The value of a sample (`name{labels}` exactly as exposed).
    fn sample(&self, series: &str) -> f64 {
        sample(&self.scrape(), series)
    }

    /// `locksup status --daemon --history --json`.
    fn history(&self, env: &Env) -> serde_json::Value {
        let mut c = env.cmd();
        c.args(["status", "--daemon", "--history", "--json", "--socket"])
            .arg(&self.socket);
        let o = run_to_end(c);
        assert_eq!(o.code, 0, "{o:?}");
        json(o.stdout.trim())
    }

    /// VmRSS of the daemon, in KiB.
    fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }
}

/// One HTTP exchange on a fresh TCP connection to `addr`.
fn http_get_raw(addr: &str, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    s.set_read_timeout(Some(BOUND)).expect("timeout");
    http_exchange(&mut s, request)
}

/// Write `request`, read the answer to the end: status, head, body.
fn http_exchange<S: Read + Write>(s: &mut S, request: &[u8]) -> (u16, String, String) {
    s.write_all(request).expect("send the request");
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("read the answer");
    parse_http(&all)
}

fn parse_http(all: &[u8]) -> (u16, String, String) {
    let text = String::from_utf8_lossy(all).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head.to_owned(), body.to_owned())
}

/// The value of `series` (the name with its labels, as exposed) in a
/// Prometheus text exposition.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

/// Percent-encode everything but unreserved characters.
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A Prometheus server of the test's own, killed by PID when dropped.
struct Prometheus {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // Child::kill signals this child's PID (SIGKILL); then reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Start `prometheus` scraping `target` (`127.0.0.1:PORT`) every
    /// second; ready when `/-/ready` answers 200. Panics (the test fails)
    /// when it cannot start.
    fn start(env: &Env, target: &str) -> Prometheus {
        let dir = env.join("prometheus");
        fs::create_dir_all(dir.join("data")).expect("create prometheus dirs");
        let config = dir.join("prometheus.yml");
        fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: locksup\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .expect("write prometheus.yml");
        let log = dir.join("prometheus.log");
        for _ in 0..5 {
            let addr = format!("127.0.0.1:{}", free_port());
            let out = fs::File::create(&log).expect("create the log");
            let err = out.try_clone().expect("log");
            let child = Command::new("prometheus")
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--storage.tsdb.retention.time=1h")
                .current_dir(&dir)
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start prometheus (apt-get install prometheus): {e}")
                });
            let mut p = Prometheus {
                child,
                addr,
                log: log.clone(),
            };
            let end = Instant::now() + Duration::from_secs(60);
            while Instant::now() < end {
                if let Ok(Some(_)) = p.child.try_wait() {
                    break;
                }
                if let Ok(mut s) = TcpStream::connect(&p.addr) {
                    let _ = s.set_read_timeout(Some(BOUND));
                    let mut all = Vec::new();
                    let req = format!(
                        "GET /-/ready HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                        p.addr
                    );
                    if s.write_all(req.as_bytes()).is_ok()
                        && s.read_to_end(&mut all).is_ok()
                        && all.starts_with(b"HTTP/1.1 200")
                    {
                        return p;
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let text = fs::read_to_string(&p.log).unwrap_or_default();
            if !text.contains("address already in use") {
                panic!("prometheus did not become ready within 60s; its log:\n{text}");
            }
        }
        panic!("could not start prometheus on a free port in 5 tries");
    }

    /// `/api/v1/query?query=QUERY`: the value of its single sample, if it
    /// has exactly one.
    fn query(&self, query: &str) -> Option<f64> {
        let req = format!(
            "GET /api/v1/query?query={} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            urlencode(query),
            self.addr
        );
        let mut s = TcpStream::connect(&self.addr).ok()?;
        s.set_read_timeout(Some(BOUND)).ok()?;
        s.write_all(req.as_bytes()).ok()?;
        let mut all = Vec::new();
        s.read_to_end(&mut all).ok()?;
        let (status, _, body) = parse_http(&all);
        if status != 200 {
            return None;
        }
        // Chunked or not, the JSON document is the one object in the body.
        let start = body.find('{')?;
        let end = body.rfind('}')?;
        let doc: serde_json::Value = serde_json::from_str(&body[start..=end]).ok()?;
        let result = doc["data"]["result"].as_array()?;
        if result.len() != 1 {
            return None;
        }
        result[0]["value"][1].as_str()?.parse().ok()
    }

    /// Poll `query` until it equals `want`, for at most [`SCRAPED`].
    fn expect(&self, query: &str, want: f64) {
        let end = Instant::now() + SCRAPED;
        let mut last = None;
        while Instant::now() < end {
            last = self.query(query);
            if last == Some(want) {
                return;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let log = fs::read_to_string(&self.log).unwrap_or_default();
        panic!("{query}: {last:?}, not {want}, after {SCRAPED:?}; prometheus log:\n{log}");
    }
}

// ---------------------------------------------------------------------------
// The exposition
// ---------------------------------------------------------------------------

#[test]
fn promtool_accepts_the_metrics_and_the_counters_count() {
    let env = Env::new();
    let guard = Guard::new();
    let d = Daemon::start(&env, "", None, &guard);
    let lock = env.join("locks/a.lock");
    let lock = lock.to_str().expect("utf-8");
    assert_eq!(d.attempt(&env, &["--lock", lock, "--", "true"]), 0);
    assert_eq!(
        d.attempt(&env, &["--lock", lock, "--", "sh", "-c", "exit 3"]),
        3
    );
    assert_eq!(
        d.attempt(
            &env,
            &["--lock", lock, "--timeout", "100ms", "--", "sleep", "10"]
        ),
        124
    );
    assert_eq!(
        d.attempt(&env, &["--lock", lock, "--", "/nonexistent/command"]),
        127
    );
    {
        // A conflict: the lock held here, and no waiting.
        let _held = hold_lock(Path::new(lock));
        assert_eq!(
            d.attempt(&env, &["--lock", lock, "--no-wait", "--", "true"]),
            75
        );
    }
    // A refused request: a run frame without its descriptors.
    let mut s = UnixStream::connect(&d.socket).expect("connect");
    let body = r#"{"v":1,"type":"run","args":["--lock","/x","--","true"],"env":[],"cwd":"/"}"#;
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body.as_bytes());
    s.write_all(&f).expect("send");
    let mut answer = Vec::new();
    s.set_read_timeout(Some(BOUND)).expect("timeout");
    let _ = s.read_to_end(&mut answer);
    assert!(
        String::from_utf8_lossy(&answer).contains("descriptor"),
        "{answer:?}"
    );

    // The outcome of each attempt is counted once it is recorded: poll.
    let ended = |o: &str| format!("locksup_attempts_ended_total{{outcome=\"{o}\"}}");
    assert!(
        wait_until(BOUND, || d.sample(&ended("failure")) == 1.0),
        "{}",
        d.scrape()
    );
    let text = d.scrape();
    assert_eq!(sample(&text, "locksup_attempts_started_total"), 5.0);
    assert_eq!(sample(&text, &ended("exited")), 2.0, "{text}");
    assert_eq!(sample(&text, &ended("timeout")), 1.0);
    assert_eq!(sample(&text, &ended("conflict")), 1.0);
    assert_eq!(sample(&text, &ended("failure")), 1.0);
    for o in ["killed", "cancelled", "watchdog", "lease-lost"] {
        assert_eq!(sample(&text, &ended(o)), 0.0, "{o}");
    }
    assert_eq!(
        sample(&text, "locksup_requests_refused_total{reason=\"protocol\"}"),
        1.0
    );
    assert_eq!(sample(&text, "locksup_release_latency_seconds_count"), 1.0);
    assert_eq!(sample(&text, "locksup_attempts_running"), 0.0);
    assert_eq!(sample(&text, "locksup_history_attempts"), 5.0);
    assert_eq!(sample(&text, "locksup_locks{state=\"free\"}"), 1.0);
    assert_eq!(sample(&text, "locksup_status_scan_success"), 1.0);
    // No attempt id, no path in any label.
    assert!(
        !text.contains(lock) && !text.contains("attempt_id"),
        "{text}"
    );

    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().expect("stdin").write_all(text.as_bytes())?;
            c.wait_with_output()
        })
        .expect("cannot run promtool (apt-get install prometheus)");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {:?}\n{}{}\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_prometheus_server_scrapes_the_counters_while_attempts_run() {
    let env = Env::new();
    let guard = Guard::new();
    let d = Daemon::start(&env, "", None, &guard);
    let prom = Prometheus::start(&env, &d.metrics);
    // Scraped at least once before anything happened.
    prom.expect("locksup_attempts_started_total", 0.0);
    let lock = env.join("locks/p.lock");
    let lock = lock.to_str().expect("utf-8");
    // A long attempt runs while Prometheus scrapes.
    let mut long = spawn(d.client(&env, ["--lock", lock, "--", "sleep", "4"]), &guard);
    // Seen by some scrape while it ran, however late this query is.
    prom.expect("max_over_time(locksup_attempts_running[5m])", 1.0);
    prom.expect("max_over_time(locksup_locks{state=\"held\"}[5m])", 1.0);
    prom.expect("max_over_time(locksup_lock_holders[5m])", 1.0);
    assert_eq!(long.code(LIMIT), 0);
    for _ in 0..2 {
        assert_eq!(
            d.attempt(
                &env,
                &["--lock", lock, "--timeout", "100ms", "--", "sleep", "10"]
            ),
            124
        );
    }
    for _ in 0..2 {
        assert_eq!(d.attempt(&env, &["--lock", lock, "--", "true"]), 0);
    }
    prom.expect("locksup_attempts_ended_total{outcome=\"timeout\"}", 2.0);
    prom.expect("locksup_attempts_ended_total{outcome=\"exited\"}", 3.0);
    prom.expect("locksup_attempts_started_total", 5.0);
    prom.expect("locksup_release_latency_seconds_count", 2.0);
    prom.expect("locksup_attempts_running", 0.0);
    prom.expect("sum(locksup_attempts_ended_total)", 5.0);
    prom.expect("up{job=\"locksup\"}", 1.0);
}

#[test]
fn histograms_move_with_known_waits_and_holds() {
    let env = Env::new();
    let guard = Guard::new();
    let d = Daemon::start(&env, "", None, &guard);
    let lock = env.join("locks/h.lock");
    let held = hold_lock(&lock);
    let lock_s = lock.to_str().expect("utf-8");
    // It waits for the lock held here, then holds it for a second.
    let mut waiter = spawn(
        d.client(
            &env,
            [
                "--lock", lock_s, "--wait", "30s", "--events", "-", "--", "sleep", "1",
            ],
        ),
        &guard,
    );
    waiter.err.expect("\"event\":\"waiting\"", BOUND);
    // The endpoint sees the waiter too (the status model, at scrape time).
    assert!(
        wait_until(BOUND, || d.sample("locksup_lock_waiters") == 1.0),
        "{}",
        d.scrape()
    );
    let waiting_since = Instant::now();
    while waiting_since.elapsed() < Duration::from_millis(1100) {
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(held);
    assert_eq!(waiter.code(LIMIT), 0);
    assert!(
        wait_until(BOUND, || d.sample("locksup_history_attempts") == 1.0),
        "{}",
        d.scrape()
    );
    let text = d.scrape();
    let s = |k: &str| sample(&text, k);
    assert_eq!(s("locksup_lock_wait_seconds_count"), 1.0);
    assert!(s("locksup_lock_wait_seconds_sum") >= 1.1, "{text}");
    assert_eq!(s("locksup_lock_wait_seconds_bucket{le=\"1\"}"), 0.0);
    assert_eq!(s("locksup_lock_wait_seconds_bucket{le=\"2.5\"}"), 1.0);
    assert_eq!(s("locksup_lock_hold_seconds_count"), 1.0);
    assert!(s("locksup_lock_hold_seconds_sum") >= 1.0, "{text}");
    assert_eq!(s("locksup_lock_hold_seconds_bucket{le=\"0.5\"}"), 0.0);
    assert_eq!(s("locksup_lock_hold_seconds_bucket{le=\"2.5\"}"), 1.0);
    // Ended by itself: no deadline, no release latency.
    assert_eq!(s("locksup_release_latency_seconds_count"), 0.0);

    // A deadline: the lock is free within the grace period (the command
    // obeys TERM), so the latency lands well below it.
    assert_eq!(
        d.attempt(
            &env,
            &[
                "--lock",
                lock_s,
                "--timeout",
                "200ms",
                "--grace",
                "5s",
                "--",
                "sleep",
                "30"
            ]
        ),
        124
    );
    assert!(
        wait_until(BOUND, || d.sample("locksup_release_latency_seconds_count")
            == 1.0),
        "{}",
        d.scrape()
    );
    let text = d.scrape();
    assert!(
        sample(&text, "locksup_release_latency_seconds_sum") < 5.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "locksup_release_latency_seconds_bucket{le=\"5\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "locksup_lock_hold_seconds_count"),
        2.0,
        "{text}"
    );
}

// ---------------------------------------------------------------------------
// The endpoint itself
// ---------------------------------------------------------------------------

#[test]
fn the_endpoint_serves_metrics_and_nothing_else() {
    let env = Env::new();
    let guard = Guard::new();
    let d = Daemon::start(&env, "", None, &guard);
    let status = |req: &str| d.http(req.as_bytes()).0;
    assert_eq!(status("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 404);
    assert_eq!(status("GET /metrics/x HTTP/1.1\r\n\r\n"), 404);
    assert_eq!(status("GET /favicon.ico HTTP/1.0\r\n\r\n"), 404);
    let (code, head, _) = d.http(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(code, 405);
    assert!(head.contains("Allow: GET, HEAD"), "{head}");
    assert_eq!(status("DELETE /metrics HTTP/1.1\r\n\r\n"), 405);
    let (code, head, body) = d.http(b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert_eq!((code, body.as_str()), (200, ""), "{head}");
    assert_eq!(status("GET /metrics?x=1 HTTP/1.0\r\n\r\n"), 200);
    assert_eq!(status("garbage\r\n\r\n"), 400);
    assert_eq!(status("GET /metrics HTTP/2.0\r\n\r\n"), 400);
    let mut binary: Vec<u8> = (0..=255u8).collect();
    binary.extend_from_slice(b"\n\n");
    assert_eq!(d.http(&binary).0, 400);
    // An endless head is cut off.
    let mut big = b"GET /metrics HTTP/1.1\r\n".to_vec();
    while big.len() < 64 << 10 {
        big.extend_from_slice(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    let mut s = TcpStream::connect(&d.metrics).expect("connect");
    s.set_read_timeout(Some(BOUND)).expect("timeout");
    let _ = s.write_all(&big);
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    assert!(
        all.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&all)
    );

    // Slow clients: silent, or one byte at a time, hold nothing up.
    let silent: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(&d.metrics).expect("connect"))
        .collect();
    let mut dribble = TcpStream::connect(&d.metrics).expect("connect");
    dribble.write_all(b"GE").expect("write");
    let t = Instant::now();
    let _ = d.scrape();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    // An attempt runs meanwhile.
    let lock = env.join("locks/e.lock");
    assert_eq!(
        d.attempt(
            &env,
            &["--lock", lock.to_str().expect("utf-8"), "--", "true"]
        ),
        0
    );
    // Each slow one gets 408 and is closed, within the read timeout.
    for mut s in silent.into_iter().chain([dribble]) {
        s.set_read_timeout(Some(Duration::from_secs(15)))
            .expect("timeout");
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        assert!(
            all.starts_with(b"HTTP/1.1 408"),
            "{:?}",
            String::from_utf8_lossy(&all)
        );
    }
    // Many at once, gone without a word: the endpoint still answers.
    for _ in 0..64 {
        if let Ok(mut s) = TcpStream::connect(&d.metrics) {
            let _ = s.write_all(b"GET /met");
        }
    }
    assert!(
        wait_until(Duration::from_secs(20), || {
            let mut s = match TcpStream::connect(&d.metrics) {
                Ok(s) => s,
                Err(_) => return false,
            };
            let _ = s.set_read_timeout(Some(BOUND));
            let mut all = Vec::new();
            s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").is_ok()
                && s.read_to_end(&mut all).is_ok()
                && all.starts_with(b"HTTP/1.1 200")
        }),
        "the endpoint stopped answering"
    );
    assert!(pid_alive(d.pid()));
    let _ = &d.config;
}

#[test]
fn the_endpoint_can_be_a_unix_socket() {
    let env = Env::new();
    let guard = Guard::new();
    let path = env.join("run/metrics.sock");
    let mut d = Daemon::start(&env, "", Some(&path), &guard);
    let text = d.scrape();
    assert_eq!(sample(&text, "locksup_attempts_started_total"), 0.0);
    assert_eq!(d.http(b"GET / HTTP/1.1\r\n\r\n").0, 404);
    kill(d.pid(), libc::SIGTERM);
    assert_eq!(d.run.code(BOUND), 0);
    assert!(!path.exists(), "the metrics socket was left behind");
}

// ---------------------------------------------------------------------------
// History
// ---------------------------------------------------------------------------

/// A `run` frame for `true` on `lock`, with `/dev/null` as its stdin,
/// stdout and stderr: an attempt without a client process.
fn run_raw(socket: &Path, lock: &Path, devnull: &fs::File) -> i32 {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let body = format!(
        "{{\"v\":1,\"type\":\"run\",\"args\":[\"--lock\",\"{}\",\"--\",\"true\"],\
         \"env\":[[\"PATH\",\"/usr/bin:/bin\"]],\"cwd\":\"/\"}}",
        lock.display()
    );
    let mut f = (body.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(body.as_bytes());
    let mut s = UnixStream::connect(socket).expect("connect");
    let fd = devnull.as_raw_fd();
    let fds = [fd, fd, fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let n = sendmsg::<()>(
        s.as_raw_fd(),
        &[IoSlice::new(&f)],
        &cmsg,
        MsgFlags::empty(),
        None,
    )
    .expect("sendmsg");
    assert_eq!(n, f.len());
    s.set_read_timeout(Some(LIMIT)).expect("timeout");
    // `started`, then `exit`.
    let mut last = None;
    loop {
        let mut len = [0u8; 4];
        if s.read_exact(&mut len).is_err() {
            break;
        }
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).expect("frame");
        last = Some(json(&String::from_utf8_lossy(&body)));
    }
    let last = last.expect("an answer");
    assert_eq!(last["type"], "exit", "{last}");
    last["code"].as_i64().expect("code") as i32
}

/// `n` attempts through the daemon, from `threads` clients at once, each
/// on a lock of its own.
fn many(d: &Daemon, env: &Env, n: usize, threads: usize) {
    std::thread::scope(|scope| {
        for t in 0..threads {
            let lock = env.join(&format!("locks/many-{t}.lock"));
            let socket = d.socket.clone();
            scope.spawn(move || {
                let devnull = fs::File::options()
                    .read(true)
                    .write(true)
                    .open("/dev/null")
                    .expect("/dev/null");
                for _ in 0..n / threads {
                    assert_eq!(run_raw(&socket, &lock, &devnull), 0);
                }
            });
        }
    });
}

#[test]
fn history_is_bounded_and_memory_stays_flat_over_10000_attempts() {
    let env = Env::new();
    let guard = Guard::new();
    let d = Daemon::start(&env, "history = 1000\n", None, &guard);
    let threads = 4;
    let t = Instant::now();
    many(&d, &env, 1000, threads);
    assert!(
        wait_until(BOUND, || d.sample("locksup_history_attempts") == 1000.0),
        "{}",
        d.scrape()
    );
    let rss_1000 = d.rss_kib();
    let first = t.elapsed();
    many(&d, &env, 9000, threads);
    let all = t.elapsed();
    assert!(
        wait_until(BOUND, || {
            d.sample("locksup_attempts_ended_total{outcome=\"exited\"}") == 10_000.0
        }),
        "{}",
        d.scrape()
    );
    let rss_10000 = d.rss_kib();
    let h = d.history(&env);
    let attempts = h["attempts"].as_array().expect("attempts");
    assert_eq!(h["bound"], 1000);
    assert_eq!(attempts.len(), 1000, "{}", h["omitted"]);
    assert_eq!(h["omitted"], 0);
    let a = &attempts[0];
    for k in ["attempt_id", "lock", "started", "acquired", "ended"] {
        assert!(a[k].is_string(), "{k}: {a}");
    }
    assert_eq!(a["outcome"], "exited");
    assert_eq!(a["exit_code"], 0);
    assert!(
        a["uid"].is_u64() && a["held_ms"].is_u64() && a["wait_ms"].is_u64(),
        "{a}"
    );
    assert!(a["fence"].is_u64(), "the fencing token is recorded: {a}");
    assert_eq!(d.sample("locksup_attempts_started_total"), 10_000.0);
    eprintln!(
        "10,000 attempts from {threads} clients: the first 1,000 in {first:.1?}, all in \
         {all:.1?} ({:.2} ms each); daemon VmRSS {rss_1000} KiB after 1,000, {rss_10000} KiB \
         after 10,000",
        all.as_secs_f64() * 1000.0 / 10_000.0
    );
    assert!(
        rss_10000 <= rss_1000 + 4 * 1024,
        "VmRSS grew from {rss_1000} KiB to {rss_10000} KiB"
    );
    // The table says the same.
    let mut c = env.cmd();
    c.args(["status", "--daemon", "--history", "--socket"])
        .arg(&d.socket);
    let o = run_to_end(c);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.starts_with("locksup serve at "), "{}", o.stdout);
    assert!(
        o.stdout.contains("the last 1000 finished attempt(s)"),
        "{}",
        o.stdout
    );
    assert_eq!(o.stdout.lines().count(), 1002);
    assert!(
        o.stdout
            .lines()
            .nth(1)
            .expect("header")
            .starts_with("ENDED")
    );
}

#[test]
fn history_keeps_the_last_attempts_with_their_outcomes() {
    let env = Env::new();
    let guard = Guard::new();
    let d = Daemon::start(&env, "history = 2\n", None, &guard);
    let lock = env.join("locks/o.lock");
    let lock = lock.to_str().expect("utf-8");
    assert_eq!(d.attempt(&env, &["--lock", lock, "--", "true"]), 0);
    assert_eq!(
        d.attempt(
            &env,
            &["--lock", lock, "--timeout", "100ms", "--", "sleep", "10"]
        ),
        124
    );
    assert_eq!(
        d.attempt(&env, &["--lock", lock, "--", "sh", "-c", "exit 7"]),
        7
    );
    assert!(wait_until(BOUND, || {
        d.history(&env)["attempts"]
            .as_array()
            .is_some_and(|a| a.len() == 2 && a[0]["exit_code"] == 7)
    }));
    let h = d.history(&env);
    let a = h["attempts"].as_array().expect("attempts");
    assert_eq!(a[0]["outcome"], "exited");
    assert_eq!(a[1]["outcome"], "timeout");
    assert_eq!(a[1]["exit_code"], 124);
    assert!(
        a[1]["held_ms"].as_u64().expect("held_ms") >= 100,
        "{}",
        a[1]
    );
    // Plain status without --daemon knows nothing of --history.
    let o = run_to_end({
        let mut c = env.cmd();
        c.args(["status", "--history"]);
        c
    });
    assert_eq!(o.code, 125, "{o:?}");
    assert_one_error_line(&o);
}

/// The pipes among `pid`'s descriptors (`pipe:[INODE]`).
fn pipes_of(pid: i32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| fs::read_link(e.ok()?.path()).ok())
                .map(|t| t.display().to_string())
                .filter(|t| t.starts_with("pipe:"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_command_gets_neither_the_events_pipe_nor_its_variable() {
    let env = Env::new();
    let guard = Guard::new();
    let d = Daemon::start(&env, "", None, &guard);
    let lock = env.join("locks/c.lock");
    let mut c = spawn(
        d.client(
            &env,
            args!["--lock", &lock, "--", "sh", "-c", "echo $$; exec sleep 30"],
        ),
        &guard,
    );
    let pid: i32 = c
        .out
        .next(BOUND)
        .and_then(|l| l.trim().parse().ok())
        .expect("the command's pid");
    guard.add(pid);
    // The daemon reads the events of this attempt through a pipe of its
    // own (not one it inherited from this test, or its stdout and stderr).
    let ours = pipes_of(std::process::id() as i32);
    let daemon_pipes: Vec<String> = pipes_of(d.pid())
        .into_iter()
        .filter(|p| !ours.contains(p))
        .collect();
    assert!(!daemon_pipes.is_empty());
    let command_pipes = pipes_of(pid);
    for p in &command_pipes {
        assert!(
            !daemon_pipes.contains(p),
            "the command has the daemon's {p}"
        );
    }
    let environ = fs::read(format!("/proc/{pid}/environ")).expect("environ");
    assert!(
        !String::from_utf8_lossy(&environ).contains("LOCKSUP_DAEMON_EVENTS_FD"),
        "the command sees LOCKSUP_DAEMON_EVENTS_FD"
    );
    kill(pid, libc::SIGTERM);
    let _ = c.code(LIMIT);
}
