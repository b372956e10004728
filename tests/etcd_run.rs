//! `locksup run --backend etcd` on the real binary against real etcd
//! servers started by the tests (tests/etcd_support): exclusion across
//! "hosts" (different lock files, one etcd key), interop with `etcdctl
//! lock`, FIFO order, fences, a frozen member (the partition case), a
//! killed supervisor, a deleted key, and errors that exit 125 at once.

mod common;
mod etcd_support;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::Signal;
use serde_json::Value;

use common::*;
use etcd_support::Cluster;

const LIMIT: Duration = Duration::from_secs(60);

/// `locksup run --backend etcd` on `lock` with `--etcd-key key`, events to
/// `events`; etcdctl's environment is cleared so only the options count.
fn etcd_run(env: &Env, endpoints: &[String], lock: &Path, key: &str, events: &Path) -> Command {
    let mut c = env.run(["--backend", "etcd", "--etcd-endpoints"]);
    c.arg(endpoints.join(","))
        .args(["--etcd-key", key, "--lock"])
        .arg(lock)
        .arg("--events")
        .arg(events);
    for v in [
        "ETCDCTL_ENDPOINTS",
        "ETCDCTL_CACERT",
        "ETCDCTL_CERT",
        "ETCDCTL_KEY",
        "ETCDCTL_USER",
        "ETCDCTL_PASSWORD",
        "ETCDCTL_DIAL_TIMEOUT",
        "ETCDCTL_COMMAND_TIMEOUT",
    ] {
        c.env_remove(v);
    }
    c
}

/// The events of an events file.
fn events(path: &Path) -> Vec<Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn event(path: &Path, name: &str) -> Option<Value> {
    events(path).into_iter().find(|e| e["event"] == name)
}

/// The time of an event.
fn ts(e: &Value) -> SystemTime {
    let text = e["ts"].as_str().expect("ts");
    humantime::parse_rfc3339(text).unwrap_or_else(|err| panic!("ts {text}: {err}"))
}

fn wait_event(path: &Path, name: &str, limit: Duration) -> Value {
    let mut found = None;
    let ok = wait_until(limit, || {
        found = event(path, name);
        found.is_some()
    });
    assert!(ok, "no {name} event within {limit:?}: {:?}", events(path));
    found.unwrap_or_default()
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn sh(script: &str) -> Vec<String> {
    vec!["--".into(), "sh".into(), "-c".into(), script.into()]
}

/// Checks a JSONL log of `begin`/`end` records: every begin is followed by
/// the end of the same attempt before anything else; fences strictly
/// increase. Returns the attempts in order.
fn check_exclusive(log: &Path) -> Vec<String> {
    let text = fs::read_to_string(log).expect("log");
    let mut order = Vec::new();
    let mut inside: Option<String> = None;
    let mut last_fence = 0u64;
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        if let Some(id) = v["begin"].as_str() {
            assert!(inside.is_none(), "{id} began inside {inside:?}:\n{text}");
            let fence: u64 = v["fence"]
                .as_str()
                .and_then(|f| f.parse().ok())
                .unwrap_or_else(|| panic!("no fence: {line}"));
            assert!(
                fence > last_fence,
                "fence {fence} after {last_fence}:\n{text}"
            );
            last_fence = fence;
            inside = Some(id.to_string());
            order.push(id.to_string());
        } else if let Some(id) = v["end"].as_str() {
            assert_eq!(inside.as_deref(), Some(id), "end out of place:\n{text}");
            inside = None;
        }
    }
    assert!(inside.is_none(), "an attempt never ended:\n{text}");
    order
}

/// Appends a begin record, sleeps ~50ms, appends an end record.
fn writer(log: &Path, id: &str) -> Vec<String> {
    let l = log.display();
    sh(&format!(
        "printf '{{\"begin\":\"{id}\",\"fence\":\"%s\"}}\\n' \"$LOCKSUP_FENCE\" >> '{l}'; \
         sleep 0.05; printf '{{\"end\":\"{id}\"}}\\n' >> '{l}'"
    ))
}

#[test]
fn two_hosts_exclude_each_other_through_etcd() {
    let c = Cluster::single();
    let env = Env::new();
    let guard = Guard::new();
    let log = env.join("log.jsonl");
    let hosts = [env.join("host-a/s.lock"), env.join("host-b/s.lock")];
    for h in &hosts {
        fs::create_dir_all(h.parent().expect("dir")).expect("mkdir");
    }
    let mut runs = Vec::new();
    for i in 0..10 {
        let id = format!("a{i}");
        let mut cmd = etcd_run(
            &env,
            &c.endpoints(),
            &hosts[i % 2],
            "shared",
            &env.join(&format!("ev{i}")),
        );
        cmd.args(["--grace", "1s", "--wait", "60s", "--attempt-id", &id])
            .args(writer(&log, &id));
        runs.push(spawn(cmd, &guard));
    }
    for (i, r) in runs.iter_mut().enumerate() {
        let code = r.code(LIMIT);
        assert_eq!(code, 0, "attempt {i}: {:?}", r.err.rest(SOON));
    }
    let order = check_exclusive(&log);
    assert_eq!(order.len(), 10, "{order:?}");
    // Nothing is left in etcd.
    let out = c.etcdctl(&["get", "--prefix", "--keys-only", "/locksup/"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "{out:?}"
    );
}

#[test]
fn fences_are_the_create_revisions_and_increase() {
    let c = Cluster::single();
    let env = Env::new();
    let lock = env.join("f.lock");
    let mut last = 0i64;
    for i in 0..3 {
        let out = env.join(&format!("out{i}"));
        let ep = c.endpoints().join(",");
        let script = format!(
            "echo $LOCKSUP_FENCE > '{o}.fence'; \
             etcdctl --endpoints {ep} get --prefix /locksup/fences/ -w json > '{o}.kv'",
            o = out.display()
        );
        let mut cmd = etcd_run(&env, &c.endpoints(), &lock, "fences", &env.join("ev"));
        cmd.args(["--grace", "1s"]).args(sh(&script));
        let o = run_to_end(cmd);
        assert_eq!(o.code, 0, "{o:?}");
        let fence: i64 = fs::read_to_string(format!("{}.fence", out.display()))
            .expect("fence")
            .trim()
            .parse()
            .expect("a number");
        let kv: Value =
            serde_json::from_str(&fs::read_to_string(format!("{}.kv", out.display())).expect("kv"))
                .expect("etcdctl json");
        let kvs = kv["kvs"].as_array().expect("kvs");
        assert_eq!(kvs.len(), 1, "{kv}");
        assert_eq!(kvs[0]["create_revision"].as_i64(), Some(fence), "{kv}");
        assert!(fence > last, "fence {fence} after {last}");
        last = fence;
        let acquired = event(&env.join("ev"), "acquired").expect("acquired");
        assert!(acquired["etcd_key"].is_string(), "{acquired}");
        fs::remove_file(env.join("ev")).expect("rm events");
    }
}

#[test]
fn etcdctl_lock_and_locksup_exclude_each_other() {
    let c = Cluster::single();
    let env = Env::new();
    let guard = Guard::new();
    let lock = env.join("i.lock");
    let ran = env.join("ran");
    // etcdctl holds: --no-wait is busy (75), a waiter waits.
    let mut ctl = c.etcdctl_spawn(&["lock", "/locksup/interop"]);
    let key = block(ctl.line(Duration::from_secs(10))).expect("etcdctl lock got the lock");
    assert!(key.starts_with("/locksup/interop/"), "{key}");
    let mut cmd = etcd_run(&env, &c.endpoints(), &lock, "interop", &env.join("ev0"));
    cmd.args(["--grace", "1s", "--no-wait", "--", "touch"])
        .arg(&ran);
    let o = run_to_end(cmd);
    assert_eq!(o.code, 75, "{o:?}");
    assert!(!ran.exists());
    let mut cmd = etcd_run(&env, &c.endpoints(), &lock, "interop", &env.join("ev1"));
    cmd.args(["--grace", "1s", "--wait", "30s", "--", "touch"])
        .arg(&ran);
    let mut waiter = spawn(cmd, &guard);
    wait_event(&env.join("ev1"), "queued", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!ran.exists(), "locksup ran beside etcdctl lock");
    assert!(block(ctl.stop(Signal::SIGINT, Duration::from_secs(5))));
    assert_eq!(waiter.code(LIMIT), 0);
    assert!(ran.exists());
    // locksup holds: etcdctl lock blocks until the release.
    let go = env.join("go");
    let mut cmd = etcd_run(&env, &c.endpoints(), &lock, "interop", &env.join("ev2"));
    cmd.args(["--grace", "1s"]).args(sh(&format!(
        "while [ ! -e '{}' ]; do sleep 0.02; done",
        go.display()
    )));
    let mut holder = spawn(cmd, &guard);
    wait_event(&env.join("ev2"), "started", Duration::from_secs(10));
    let mut ctl = c.etcdctl_spawn(&["lock", "/locksup/interop"]);
    assert_eq!(
        block(ctl.line(Duration::from_millis(1500))),
        None,
        "etcdctl got a lock locksup holds"
    );
    fs::write(&go, "").expect("go");
    assert_eq!(holder.code(LIMIT), 0);
    let released = Instant::now();
    let key = block(ctl.line(Duration::from_secs(10))).expect("etcdctl got the lock");
    eprintln!(
        "locksup released -> etcdctl holds: {:?}",
        released.elapsed()
    );
    assert!(key.starts_with("/locksup/interop/"), "{key}");
    assert!(block(ctl.stop(Signal::SIGINT, Duration::from_secs(5))));
}

#[test]
fn five_waiters_get_the_lock_in_fifo_order() {
    let c = Cluster::single();
    let env = Env::new();
    let guard = Guard::new();
    let go = env.join("go");
    let order = env.join("order");
    // Each waiter on its own lock file (its own "host").
    let mut cmd = etcd_run(
        &env,
        &c.endpoints(),
        &env.join("h0.lock"),
        "fifo",
        &env.join("ev0"),
    );
    cmd.args(["--grace", "1s"]).args(sh(&format!(
        "while [ ! -e '{}' ]; do sleep 0.02; done",
        go.display()
    )));
    let mut holder = spawn(cmd, &guard);
    wait_event(&env.join("ev0"), "started", Duration::from_secs(10));
    let mut waiters = Vec::new();
    for i in 1..=5 {
        let ev = env.join(&format!("ev{i}"));
        let mut cmd = etcd_run(
            &env,
            &c.endpoints(),
            &env.join(&format!("h{i}.lock")),
            "fifo",
            &ev,
        );
        cmd.args(["--grace", "1s", "--wait", "60s"])
            .args(sh(&format!("echo {i} >> '{}'", order.display())));
        waiters.push(spawn(cmd, &guard));
        wait_event(&ev, "queued", Duration::from_secs(10));
    }
    fs::write(&go, "").expect("go");
    assert_eq!(holder.code(LIMIT), 0);
    for w in &mut waiters {
        assert_eq!(w.code(LIMIT), 0);
    }
    let got: Vec<String> = fs::read_to_string(&order)
        .expect("order")
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(got, ["1", "2", "3", "4", "5"]);
}

#[test]
fn deleting_the_key_ends_the_attempt_as_lease_lost() {
    let c = Cluster::single();
    let env = Env::new();
    let guard = Guard::new();
    let ev = env.join("ev");
    let mut cmd = etcd_run(&env, &c.endpoints(), &env.join("d.lock"), "deleted", &ev);
    cmd.args(["--grace", "1s", "--", "sleep", "30"]);
    let mut r = spawn(cmd, &guard);
    let started = wait_event(&ev, "started", Duration::from_secs(10));
    let pid = i32::try_from(started["pid"].as_i64().expect("pid")).expect("a pid");
    let out = c.etcdctl(&["del", "--prefix", "/locksup/deleted/"]);
    assert!(out.status.success(), "{out:?}");
    let deleted = Instant::now();
    assert_eq!(r.code(LIMIT), 124);
    assert!(
        deleted.elapsed() < Duration::from_secs(3),
        "{:?}",
        deleted.elapsed()
    );
    assert!(!pid_alive(pid));
    let end = event(&ev, "end").expect("end");
    assert_eq!(end["outcome"], "lease-lost", "{end}");
    let lost = event(&ev, "lease-lost").expect("lease-lost event");
    assert_eq!(lost["why"], "key-deleted");
    let signal = event(&ev, "signal").expect("signal");
    assert_eq!(signal["reason"], "lease-lost");
}

#[test]
fn a_killed_supervisor_s_lock_goes_to_the_waiter_within_the_ttl() {
    let c = Cluster::single();
    let env = Env::new();
    let guard = Guard::new();
    let (ev0, ev1) = (env.join("ev0"), env.join("ev1"));
    let mut cmd = etcd_run(&env, &c.endpoints(), &env.join("k0.lock"), "killed", &ev0);
    cmd.args(["--grace", "0.5s", "--etcd-ttl", "3s", "--", "sleep", "60"]);
    let holder = spawn(cmd, &guard);
    let started = wait_event(&ev0, "started", Duration::from_secs(10));
    let pid = i32::try_from(started["pid"].as_i64().expect("pid")).expect("a pid");
    let mut cmd = etcd_run(&env, &c.endpoints(), &env.join("k1.lock"), "killed", &ev1);
    cmd.args([
        "--grace",
        "0.5s",
        "--etcd-ttl",
        "3s",
        "--wait",
        "30s",
        "--",
        "true",
    ]);
    let mut waiter = spawn(cmd, &guard);
    wait_event(&ev1, "queued", Duration::from_secs(10));
    let supervisor = supervisor_of(holder.pid());
    kill(supervisor, libc::SIGKILL);
    let killed = SystemTime::now();
    assert_eq!(waiter.code(LIMIT), 0);
    let acquired = ts(&event(&ev1, "acquired").expect("acquired"));
    let after = acquired.duration_since(killed).unwrap_or_default();
    eprintln!("supervisor SIGKILLed -> waiter holds: {after:?}");
    // The lease lapses a TTL (3s) after its last keep-alive (sent before
    // the kill); etcd looks for expired leases every 500ms; then the
    // waiter's watch, and its own start. Measured here: 3.3-3.5s.
    assert!(after <= Duration::from_millis(5000), "{after:?}");
    assert!(
        wait_pid_gone(pid, SOON),
        "the command outlived its supervisor"
    );
}

/// An endpoint, extra options, extra environment.
type Case<'a> = (String, Vec<&'a str>, Vec<(&'a str, &'a str)>);

#[test]
fn unreachable_etcd_exits_125_at_once_with_one_line() {
    let env = Env::new();
    // Nothing listens there.
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    // Accepts TCP, never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    let plain = Cluster::single();
    let tls_to_plain = plain.endpoints()[0].replace("http://", "https://");
    let not_pem = env.write("ca.txt", "not a certificate\n");
    let not_pem = not_pem.to_str().expect("utf-8 path").to_owned();
    let cases: Vec<Case> = vec![
        (
            format!("http://127.0.0.1:{refused}"),
            vec!["--grace", "1s"],
            vec![],
        ),
        (
            format!("http://127.0.0.1:{silent_port}"),
            vec!["--grace", "1s"],
            vec![],
        ),
        (tls_to_plain.clone(), vec!["--grace", "1s"], vec![]),
        // A CA bundle that is not PEM.
        (
            tls_to_plain,
            vec!["--grace", "1s"],
            vec![("ETCDCTL_CACERT", not_pem.as_str())],
        ),
        // No endpoint at all.
        (",".to_string(), vec!["--grace", "1s"], vec![]),
        // Timing that does not fit.
        (
            format!("http://127.0.0.1:{refused}"),
            vec!["--grace", "20s", "--etcd-ttl", "10s"],
            vec![],
        ),
    ];
    for (ep, extra, vars) in cases {
        let ran = env.join("ran");
        let mut cmd = etcd_run(
            &env,
            std::slice::from_ref(&ep),
            &env.join("e.lock"),
            "errors",
            &env.join("ev"),
        );
        cmd.env("ETCDCTL_DIAL_TIMEOUT", "1s")
            .env("ETCDCTL_COMMAND_TIMEOUT", "1s")
            .envs(vars.iter().copied())
            .args(extra.iter().copied())
            .args(["--", "touch"])
            .arg(&ran);
        let o = run_to_end(cmd);
        eprintln!(
            "{ep} {extra:?} {vars:?}: {:?} {}",
            o.elapsed,
            o.stderr.trim()
        );
        assert_eq!(o.code, 125, "{ep}: {o:?}");
        assert_one_error_line(&o);
        assert!(o.stderr.contains("etcd"), "{o:?}");
        assert!(o.elapsed < Duration::from_secs(6), "{ep}: {:?}", o.elapsed);
        assert!(!ran.exists(), "{ep}: the command ran");
    }
    // etcd options without the etcd backend are a mistake.
    let mut cmd = env.run(["--etcd-key", "k", "--lock"]);
    cmd.arg(env.join("e.lock")).args(["--", "true"]);
    let o = run_to_end(cmd);
    assert_eq!(o.code, 125, "{o:?}");
    assert!(
        o.stderr.contains("--etcd-key needs --backend etcd"),
        "{o:?}"
    );
    drop(silent);
}

/// The partition case: the holder talks only to member A, the waiter
/// only to member B; A is frozen (SIGSTOP). The holder's attempt must be
/// dead (every process reaped: its `released` event) before the waiter
/// acquires. `LOCKSUP_ETCD_PARTITION_RUNS` runs (default 5).
#[test]
fn a_frozen_member_s_holder_is_dead_before_the_waiter_acquires() {
    let runs: usize = std::env::var("LOCKSUP_ETCD_PARTITION_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let c = Cluster::start(3);
    let env = Env::new();
    let mut gaps = Vec::new();
    for run in 0..runs {
        let guard = Guard::new();
        let leader = c.leader();
        // Alternate: freeze the leader, then a follower.
        let a = if run % 2 == 0 {
            leader
        } else {
            (leader + 1) % 3
        };
        let b = (a + 1) % 3;
        let eps = c.endpoints();
        let name = format!("part{run}");
        let (ev0, ev1) = (
            env.join(&format!("p{run}-0")),
            env.join(&format!("p{run}-1")),
        );
        let ticks = env.join(&format!("ticks{run}"));
        let mut cmd = etcd_run(&env, &[eps[a].clone()], &env.join("pa.lock"), &name, &ev0);
        cmd.env("ETCDCTL_DIAL_TIMEOUT", "1s")
            .env("ETCDCTL_COMMAND_TIMEOUT", "1s")
            .args(["--grace", "0.5s", "--etcd-ttl", "4s"])
            .args(sh(&format!(
                "while :; do date +%s.%N >> '{}'; sleep 0.05; done",
                ticks.display()
            )));
        let mut holder = spawn(cmd, &guard);
        wait_event(&ev0, "started", Duration::from_secs(10));
        let mut cmd = etcd_run(&env, &[eps[b].clone()], &env.join("pb.lock"), &name, &ev1);
        cmd.env("ETCDCTL_DIAL_TIMEOUT", "1s")
            .env("ETCDCTL_COMMAND_TIMEOUT", "1s")
            .args([
                "--grace",
                "0.5s",
                "--etcd-ttl",
                "4s",
                "--wait",
                "60s",
                "--",
                "true",
            ]);
        let mut waiter = spawn(cmd, &guard);
        wait_event(&ev1, "queued", Duration::from_secs(10));
        c.freeze(a);
        let frozen = SystemTime::now();
        let code = holder.code(LIMIT);
        let wcode = waiter.code(LIMIT);
        c.thaw(a);
        assert_eq!(code, 124, "run {run}: holder {:?}", events(&ev0));
        assert_eq!(wcode, 0, "run {run}: waiter {:?}", events(&ev1));
        let end = event(&ev0, "end").expect("end");
        assert_eq!(end["outcome"], "lease-lost", "run {run}: {end}");
        let dead = ts(&event(&ev0, "released").expect("released"));
        let acquired = ts(&event(&ev1, "acquired").expect("acquired"));
        let last_tick: f64 = fs::read_to_string(&ticks)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .fold(0.0, f64::max);
        let acquired_s = acquired
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("epoch")
            .as_secs_f64();
        let to_dead = dead.duration_since(frozen).unwrap_or_default();
        let to_acquired = acquired.duration_since(frozen).unwrap_or_default();
        eprintln!(
            "run {run} (froze {}): dead after {to_dead:?}, waiter acquired after {to_acquired:?}",
            if a == leader {
                "the leader"
            } else {
                "a follower"
            }
        );
        assert!(
            dead < acquired,
            "run {run}: the holder was dead at {dead:?}, the waiter acquired at {acquired:?}"
        );
        assert!(
            last_tick < acquired_s,
            "run {run}: the holder wrote at {last_tick} after the waiter acquired at {acquired_s}"
        );
        gaps.push(acquired.duration_since(dead).unwrap_or_default());
        c.wait_healthy();
    }
    eprintln!("partition runs: {runs}; dead -> acquired gaps: {gaps:?}");
}

#[test]
fn configuration_then_etcdctl_environment_then_options_choose_the_cluster() {
    let c = Cluster::single();
    let env = Env::new();
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://127.0.0.1:{}", l.local_addr().expect("addr").port())
    };
    let real = c.endpoints().join(",");
    let config = env.write(
        "etcd.toml",
        &format!(
            "[run]\ngrace = \"1s\"\n[[policy]]\nmatch = \"/**/shared-*\"\nbackend = \"etcd\"\n\
             etcd_key = \"cfg-key\"\n[etcd]\nendpoints = [\"{refused}\"]\nprefix = \"/cfg\"\n"
        ),
    );
    let keys = env.join("keys");
    // etcdctl takes ETCDCTL_ENDPOINTS from the environment the command
    // inherits.
    let script = format!(
        "etcdctl get --prefix --keys-only /cfg/ > '{}'",
        keys.display()
    );
    // The config's endpoint is refused: ETCDCTL_ENDPOINTS overrides it.
    let lock = env.join("shared-a");
    let mut cmd = env.run(["--lock"]);
    cmd.arg(&lock)
        .env("LOCKSUP_CONFIG", &config)
        .env("ETCDCTL_ENDPOINTS", &real)
        .args(sh(&script));
    let o = run_to_end(cmd);
    assert_eq!(o.code, 0, "{o:?}");
    let k = fs::read_to_string(&keys).expect("keys");
    assert!(k.trim().starts_with("/cfg/cfg-key/"), "{k}");
    // The command line overrides ETCDCTL_ENDPOINTS.
    let mut cmd = env.run(["--etcd-endpoints", &real, "--lock"]);
    cmd.arg(&lock)
        .env("LOCKSUP_CONFIG", &config)
        .env("ETCDCTL_ENDPOINTS", &refused)
        .args(["--", "true"]);
    assert_eq!(run_to_end(cmd).code, 0);
    // Without the environment, the config's endpoint: refused, at once.
    let mut cmd = env.run(["--lock"]);
    cmd.arg(&lock)
        .env("LOCKSUP_CONFIG", &config)
        .env_remove("ETCDCTL_ENDPOINTS")
        .args(["--", "true"]);
    let o = run_to_end(cmd);
    assert_eq!(o.code, 125, "{o:?}");
    assert_one_error_line(&o);
    // A lock file the policy does not match stays on flock.
    let mut cmd = env.run(["--lock"]);
    cmd.arg(env.join("other"))
        .env("LOCKSUP_CONFIG", &config)
        .env_remove("ETCDCTL_ENDPOINTS")
        .args(["--", "true"]);
    assert_eq!(run_to_end(cmd).code, 0);
    // An etcd lock is exclusive.
    let mut cmd = env.run(["--shared", "--etcd-endpoints", &real, "--lock"]);
    cmd.arg(&lock)
        .env("LOCKSUP_CONFIG", &config)
        .args(["--", "true"]);
    let o = run_to_end(cmd);
    assert_eq!(o.code, 125, "{o:?}");
    assert!(o.stderr.contains("--shared"), "{o:?}");
}

#[test]
fn a_cancelled_waiter_leaves_the_etcd_queue() {
    let c = Cluster::single();
    let env = Env::new();
    let guard = Guard::new();
    let go = env.join("go");
    let (ev0, ev1) = (env.join("ev0"), env.join("ev1"));
    let mut cmd = etcd_run(
        &env,
        &c.endpoints(),
        &env.join("c0.lock"),
        "cancelled",
        &ev0,
    );
    cmd.args(["--grace", "1s"]).args(sh(&format!(
        "while [ ! -e '{}' ]; do sleep 0.02; done",
        go.display()
    )));
    let mut holder = spawn(cmd, &guard);
    wait_event(&ev0, "started", Duration::from_secs(10));
    let mut cmd = etcd_run(
        &env,
        &c.endpoints(),
        &env.join("c1.lock"),
        "cancelled",
        &ev1,
    );
    cmd.args(["--grace", "1s", "--wait", "60s", "--", "true"]);
    let mut waiter = spawn(cmd, &guard);
    wait_event(&ev1, "queued", Duration::from_secs(10));
    let count = || {
        let out = c.etcdctl(&["get", "--prefix", "--keys-only", "/locksup/cancelled/"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
    };
    assert_eq!(count(), 2);
    kill(waiter.pid(), libc::SIGTERM);
    assert_eq!(waiter.code(LIMIT), 143);
    assert_eq!(count(), 1, "the cancelled waiter's key is still queued");
    fs::write(&go, "").expect("go");
    assert_eq!(holder.code(LIMIT), 0);
    assert_eq!(count(), 0);
}

#[test]
fn the_holder_survives_the_leader_s_death_and_releases_normally() {
    let mut c = Cluster::start(3);
    let env = Env::new();
    let guard = Guard::new();
    let go = env.join("go");
    let ev = env.join("ev");
    let mut cmd = etcd_run(&env, &c.endpoints(), &env.join("l.lock"), "leader", &ev);
    cmd.args(["--grace", "1s", "--etcd-ttl", "10s"])
        .args(sh(&format!(
            "while [ ! -e '{}' ]; do sleep 0.02; done",
            go.display()
        )));
    let mut holder = spawn(cmd, &guard);
    wait_event(&ev, "started", Duration::from_secs(10));
    let leader = c.leader();
    c.kill(leader);
    // Longer than the TTL: the lease must have been kept alive through
    // the new leader.
    std::thread::sleep(Duration::from_secs(12));
    assert!(holder.running(), "the holder ended: {:?}", events(&ev));
    assert!(event(&ev, "lease-lost").is_none(), "{:?}", events(&ev));
    fs::write(&go, "").expect("go");
    assert_eq!(holder.code(LIMIT), 0);
    let released = event(&ev, "etcd-released").expect("etcd-released");
    assert_eq!(released["deleted"], true, "{released}");
    assert_eq!(released["revoked"], true, "{released}");
    let live: Vec<String> = c
        .endpoints()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, e)| e)
        .collect();
    let out = c.etcdctl_at(
        &live,
        &["get", "--prefix", "--keys-only", "/locksup/leader/"],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).trim().is_empty(),
        "{out:?}"
    );
}

#[test]
fn status_lists_holders_and_waiters_and_cancel_ends_a_holder_elsewhere() {
    let c = Cluster::single();
    let env = Env::new();
    let guard = Guard::new();
    let real = c.endpoints().join(",");
    let (ev0, ev1) = (env.join("ev0"), env.join("ev1"));
    let mut cmd = etcd_run(
        &env,
        &c.endpoints(),
        &env.join("s0.lock"),
        "admin/one",
        &ev0,
    );
    cmd.args([
        "--grace",
        "1s",
        "--attempt-id",
        "holder",
        "--",
        "sleep",
        "60",
    ]);
    let mut holder = spawn(cmd, &guard);
    wait_event(&ev0, "started", Duration::from_secs(10));
    let mut cmd = etcd_run(
        &env,
        &c.endpoints(),
        &env.join("s1.lock"),
        "admin/one",
        &ev1,
    );
    cmd.args([
        "--grace",
        "1s",
        "--wait",
        "60s",
        "--attempt-id",
        "waiter",
        "--",
        "true",
    ]);
    let mut waiter = spawn(cmd, &guard);
    wait_event(&ev1, "queued", Duration::from_secs(10));
    // etcdctl lock holds another lock under the prefix.
    let _ctl = c.etcdctl_spawn(&["lock", "/locksup/other"]);
    assert!(wait_until(Duration::from_secs(10), || {
        let out = c.etcdctl(&["get", "--prefix", "--keys-only", "/locksup/other/"]);
        !String::from_utf8_lossy(&out.stdout).trim().is_empty()
    }));
    let out = env
        .cmd()
        .args([
            "status",
            "--backend",
            "etcd",
            "--json",
            "--etcd-endpoints",
            &real,
        ])
        .env_remove("ETCDCTL_ENDPOINTS")
        .output()
        .expect("status");
    assert!(out.status.success(), "{out:?}");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("json");
    let locks = doc["locks"].as_array().expect("locks");
    assert_eq!(locks.len(), 2, "{doc}");
    let one = locks
        .iter()
        .find(|l| l["name"] == "admin/one")
        .expect("admin/one");
    assert_eq!(one["lock"], "/locksup/admin/one");
    assert_eq!(one["holder"]["attempt_id"], "holder", "{one}");
    assert!(
        one["holder"]["ttl_s"].as_u64().is_some_and(|t| t > 0),
        "{one}"
    );
    assert!(one["holder"]["host"].is_string(), "{one}");
    assert_eq!(one["waiters"][0]["attempt_id"], "waiter", "{one}");
    let other = locks.iter().find(|l| l["name"] == "other").expect("other");
    assert_eq!(other["holder"]["locksup"], false, "{other}");
    // The table names both.
    let out = env
        .cmd()
        .args([
            "status",
            "--backend",
            "etcd",
            "--etcd-endpoints",
            &real,
            "admin/one",
        ])
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("held by attempt holder"), "{text}");
    assert!(text.contains("waiting 1: attempt waiter"), "{text}");
    // cancel deletes the holder's key: its supervisor ends the attempt,
    // the waiter gets the lock.
    let out = env
        .cmd()
        .args([
            "cancel",
            "--backend",
            "etcd",
            "--etcd-endpoints",
            &real,
            "admin/one",
        ])
        .output()
        .expect("cancel");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(holder.code(LIMIT), 124);
    assert_eq!(event(&ev0, "end").expect("end")["outcome"], "lease-lost");
    assert_eq!(waiter.code(LIMIT), 0);
    let out = env
        .cmd()
        .args([
            "cancel",
            "--backend",
            "etcd",
            "--etcd-endpoints",
            &real,
            "admin/one",
        ])
        .output()
        .expect("cancel");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[test]
fn watch_follows_the_etcd_locks_across_hosts() {
    let c = Cluster::single();
    let env = Env::new();
    let guard = Guard::new();
    let real = c.endpoints().join(",");
    let mut w = env.cmd();
    w.args([
        "watch",
        "--backend",
        "etcd",
        "--json",
        "--etcd-endpoints",
        &real,
    ]);
    let mut watch = spawn(w, &guard);
    let ready: Value =
        serde_json::from_str(&watch.out.next(SOON).expect("ready line")).expect("json");
    assert_eq!(ready["event"], "ready", "{ready}");
    let go = env.join("go");
    let (ev0, ev1) = (env.join("ev0"), env.join("ev1"));
    let mut cmd = etcd_run(&env, &c.endpoints(), &env.join("w0.lock"), "watched", &ev0);
    cmd.args(["--grace", "1s", "--attempt-id", "first"])
        .args(sh(&format!(
            "while [ ! -e '{}' ]; do sleep 0.02; done",
            go.display()
        )));
    let mut first = spawn(cmd, &guard);
    wait_event(&ev0, "started", Duration::from_secs(10));
    let mut cmd = etcd_run(&env, &c.endpoints(), &env.join("w1.lock"), "watched", &ev1);
    cmd.args([
        "--grace",
        "1s",
        "--wait",
        "30s",
        "--attempt-id",
        "second",
        // Long enough for the watch to see it hold before it releases.
        "--",
        "sleep",
        "0.3",
    ]);
    let mut second = spawn(cmd, &guard);
    wait_event(&ev1, "queued", Duration::from_secs(10));
    let mut next = || {
        let line = watch
            .out
            .next(Duration::from_secs(10))
            .expect("a watch line");
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["lock"], "/locksup/watched", "{v}");
        format!(
            "{} {}",
            v["event"].as_str().unwrap_or("?"),
            v["attempt_id"].as_str().unwrap_or("?")
        )
    };
    let mut seen = vec![next(), next()];
    fs::write(&go, "").expect("go");
    seen.extend([next(), next(), next()]);
    assert_eq!(first.code(LIMIT), 0);
    assert_eq!(second.code(LIMIT), 0);
    assert_eq!(
        seen,
        [
            "acquired first",
            "waiting second",
            "released first",
            "acquired second",
            "released second"
        ]
    );
}
