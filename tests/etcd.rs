//! The etcd lock backend (locksup::testing::etcd) against real etcd servers started
//! by the tests (see tests/etcd_support): exclusion, interop with
//! `etcdctl lock`, FIFO order, fences, lost locks, failover, errors.

mod etcd_support;

use std::fs::OpenOptions;
use std::io::Write;
use std::time::{Duration, Instant};

use locksup::testing::etcd::{Acquired, BootTime, Config, Etcd, Held, Lost, Queued, Timing, Wait};
use nix::sys::signal::Signal;
use serde_json::json;

use etcd_support::Cluster;

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

fn config(endpoints: Vec<String>, ttl: u64) -> Config {
    Config {
        endpoints,
        ttl: Duration::from_secs(ttl),
        dial_timeout: secs(1.0),
        command_timeout: secs(2.0),
        ..Config::default()
    }
}

async fn connect(endpoints: Vec<String>, ttl: u64) -> Etcd {
    Etcd::connect(&config(endpoints, ttl))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"))
}

fn timing(etcd: &Etcd, grace: f64) -> Timing {
    etcd.timing(Some(secs(grace)))
        .unwrap_or_else(|e| panic!("timing: {e}"))
}

fn meta(who: &str) -> String {
    json!({ "host": who, "pid": std::process::id(), "attempt_id": who }).to_string()
}

async fn hold(etcd: &Etcd, name: &str, who: &str, grace: f64) -> Held {
    match etcd
        .acquire(name, &meta(who), timing(etcd, grace), Wait::For(secs(20.0)))
        .await
    {
        Ok(Acquired::Held(h)) => h,
        Ok(_) => panic!("{who}: {name} stayed busy"),
        Err(e) => panic!("{who}: {e}"),
    }
}

#[tokio::test]
async fn acquire_busy_wait_expired_release_and_fences() {
    let c = Cluster::single();
    let a = connect(c.endpoints(), 5).await;
    let b = connect(c.endpoints(), 5).await;
    let held = hold(&a, "orders", "a", 1.0).await;
    assert!(held.key().starts_with("/locksup/orders/"), "{}", held.key());
    assert_eq!(held.key(), format!("/locksup/orders/{:x}", held.lease()));
    assert!(held.is_lost().is_none());
    assert!(held.confirmed_until() > BootTime::now().plus(secs(3.0)));
    let own = tokio::time::Instant::now() + secs(60.0);
    assert!(held.deadline_for(Some(own)) < own);
    let soon = tokio::time::Instant::now() + secs(0.1);
    assert_eq!(held.deadline_for(Some(soon)), soon);

    match b
        .acquire("orders", &meta("b"), timing(&b, 1.0), Wait::No)
        .await
    {
        Ok(Acquired::Busy(holder)) => {
            assert_eq!(holder.key, held.key());
            assert_eq!(holder.create_revision, held.fence());
            assert_eq!(
                holder.metadata().map(|m| m["host"].clone()),
                Some(json!("a"))
            );
        }
        Ok(_) => panic!("not busy"),
        Err(e) => panic!("{e}"),
    }
    let started = Instant::now();
    match b
        .acquire("orders", &meta("b"), timing(&b, 1.0), Wait::For(secs(0.5)))
        .await
    {
        Ok(Acquired::WaitExpired(ahead)) => assert_eq!(ahead.key, held.key()),
        Ok(_) => panic!("not expired"),
        Err(e) => panic!("{e}"),
    }
    let waited = started.elapsed();
    assert!(waited >= secs(0.5) && waited < secs(3.0), "{waited:?}");
    // Those who gave up left the queue.
    let q = a.queue("orders").await.expect("queue");
    assert_eq!(q.entries.len(), 1, "{q:?}");
    let ttl = q.entries[0].ttl.expect("remaining TTL");
    assert!(ttl > secs(1.0) && ttl <= secs(5.0), "{ttl:?}");

    let released = held.release().await;
    assert!(released.deleted && released.revoked, "{released:?}");
    assert!(a.queue("orders").await.expect("queue").entries.is_empty());

    let mut fences = Vec::new();
    for i in 0..5 {
        let etcd = if i % 2 == 0 { &a } else { &b };
        let h = hold(etcd, "orders", "x", 1.0).await;
        fences.push(h.fence());
        h.release().await;
    }
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
}

/// One "host": its own thread, runtime and connection; `rounds` times it
/// takes the lock, logs `in`, works a little, logs `out`, releases.
fn host(endpoints: Vec<String>, who: &'static str, rounds: usize, log: std::path::PathBuf) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let etcd = connect(endpoints, 5).await;
        let mut file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&log)
            .expect("log");
        for i in 0..rounds {
            let h = hold(&etcd, "shared/session", who, 1.0).await;
            let line = |ev: &str| {
                format!(
                    "{}\n",
                    json!({ "host": who, "ev": ev, "fence": h.fence(), "i": i })
                )
            };
            // One write per line, O_APPEND: lines from two hosts never mix.
            file.write_all(line("in").as_bytes()).expect("write");
            tokio::time::sleep(Duration::from_millis(5 + (i as u64 * 7) % 20)).await;
            file.write_all(line("out").as_bytes()).expect("write");
            let r = h.release().await;
            assert!(r.deleted, "{who}: {r:?}");
        }
    });
}

#[test]
fn mutual_exclusion_of_two_hosts_checked_from_their_log() {
    let c = Cluster::single();
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("writes.jsonl");
    let rounds = 15;
    let hosts: Vec<_> = ["alpha", "beta"]
        .into_iter()
        .map(|who| {
            let (eps, log) = (c.endpoints(), log.clone());
            std::thread::spawn(move || host(eps, who, rounds, log))
        })
        .collect();
    for h in hosts {
        h.join().expect("host thread");
    }
    // The checker: `in` and `out` alternate, each pair from one host, with
    // fences strictly increasing.
    let text = std::fs::read_to_string(&log).expect("log");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(lines.len(), 2 * 2 * rounds);
    let mut last_fence = 0;
    for pair in lines.chunks(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert_eq!(
            (a["ev"].as_str(), b["ev"].as_str()),
            (Some("in"), Some("out")),
            "{a} {b}"
        );
        assert_eq!(a["host"], b["host"], "overlap: {a} {b}");
        assert_eq!(a["fence"], b["fence"]);
        let f = a["fence"].as_i64().expect("fence");
        assert!(f > last_fence, "fence {f} after {last_fence}");
        last_fence = f;
    }
    let alpha = lines.iter().filter(|l| l["host"] == "alpha").count();
    assert_eq!(alpha, 2 * rounds);
}

#[tokio::test]
async fn etcdctl_lock_holds_and_locksup_waits() {
    let c = Cluster::single();
    let etcd = connect(c.endpoints(), 5).await;
    let mut ctl = c.etcdctl_spawn(&["lock", "/locksup/interop"]);
    let key = ctl
        .line(secs(10.0))
        .await
        .expect("etcdctl lock got the lock");
    assert!(key.starts_with("/locksup/interop/"), "{key}");
    let mut waiter = match etcd
        .enqueue("interop", &meta("w"), timing(&etcd, 1.0))
        .await
    {
        Ok(Queued::Waiting(w)) => w,
        Ok(Queued::Held(_)) => panic!("locksup got the lock etcdctl holds"),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(waiter.ahead().key, key);
    assert_eq!(waiter.ahead().value, "");
    let until = tokio::time::Instant::now() + secs(1.0);
    assert!(
        matches!(waiter.wait(Some(until)).await, Ok(None)),
        "did not wait"
    );
    assert!(
        ctl.stop(Signal::SIGINT, secs(5.0)).await,
        "etcdctl did not stop"
    );
    let stopped = Instant::now();
    let until = tokio::time::Instant::now() + secs(5.0);
    let held = match waiter.wait(Some(until)).await {
        Ok(Some(h)) => h,
        Ok(None) => panic!("still waiting after etcdctl released"),
        Err(e) => panic!("{e}"),
    };
    eprintln!("etcdctl released -> locksup holds: {:?}", stopped.elapsed());
    held.release().await;
}

#[tokio::test]
async fn locksup_holds_and_etcdctl_lock_waits() {
    let c = Cluster::single();
    let etcd = connect(c.endpoints(), 5).await;
    let held = hold(&etcd, "interop", "a", 1.0).await;
    let mut ctl = c.etcdctl_spawn(&["lock", "/locksup/interop"]);
    assert_eq!(ctl.line(secs(1.5)).await, None, "etcdctl got a held lock");
    let q = etcd.queue("interop").await.expect("queue");
    assert_eq!(q.entries.len(), 2, "{q:?}");
    assert_eq!(q.holder().map(|e| e.key.as_str()), Some(held.key()));
    assert_eq!(q.waiters()[0].value, "", "etcdctl's key waits second");
    let released = Instant::now();
    held.release().await;
    let key = ctl.line(secs(5.0)).await.expect("etcdctl got the lock");
    eprintln!(
        "locksup released -> etcdctl holds: {:?}",
        released.elapsed()
    );
    assert_eq!(key, q.waiters()[0].key);
    assert!(ctl.stop(Signal::SIGINT, secs(5.0)).await);
    assert!(
        etcd.queue("interop")
            .await
            .expect("queue")
            .entries
            .is_empty()
    );
}

#[tokio::test]
async fn five_waiters_get_the_lock_in_fifo_order_with_increasing_fences() {
    let c = Cluster::single();
    let etcd = connect(c.endpoints(), 5).await;
    let first = hold(&etcd, "fifo", "holder", 1.0).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..5usize {
        // Enqueued one after the other, so their create revisions are in
        // this order.
        let mut w = match etcd.enqueue("fifo", &meta("w"), timing(&etcd, 1.0)).await {
            Ok(Queued::Waiting(w)) => w,
            Ok(Queued::Held(_)) => panic!("waiter {i} got a held lock"),
            Err(e) => panic!("{e}"),
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let h = w.wait(None).await.ok().flatten().expect("acquired");
            let _ = tx.send((i, h.fence()));
            tokio::time::sleep(Duration::from_millis(30)).await;
            h.release().await;
        });
    }
    drop(tx);
    let q = etcd.queue("fifo").await.expect("queue");
    assert_eq!(q.entries.len(), 6);
    let fence0 = first.fence();
    first.release().await;
    let mut order = Vec::new();
    while let Some(x) = tokio::time::timeout(secs(20.0), rx.recv())
        .await
        .expect("all acquire in time")
    {
        order.push(x);
    }
    let idx: Vec<usize> = order.iter().map(|(i, _)| *i).collect();
    assert_eq!(idx, [0, 1, 2, 3, 4]);
    let fences: Vec<i64> = std::iter::once(fence0)
        .chain(order.iter().map(|(_, f)| *f))
        .collect();
    assert!(fences.windows(2).all(|w| w[0] < w[1]), "{fences:?}");
    let queued: Vec<i64> = q.entries.iter().map(|e| e.create_revision).collect();
    assert_eq!(
        queued, fences,
        "each waiter held with the revision it queued with"
    );
}

#[tokio::test]
async fn etcdctl_del_of_the_key_loses_the_lock() {
    let c = Cluster::single();
    let etcd = connect(c.endpoints(), 5).await;
    let held = hold(&etcd, "del", "a", 1.0).await;
    let out = c.etcdctl(&["del", held.key()]);
    assert!(out.status.success());
    let deleted = Instant::now();
    let why = tokio::time::timeout(secs(3.0), held.lost())
        .await
        .expect("lost in time");
    assert_eq!(why, Lost::KeyDeleted);
    eprintln!("etcdctl del -> lost(): {:?}", deleted.elapsed());
    assert_eq!(held.is_lost(), Some(Lost::KeyDeleted));
    let r = held.release().await;
    assert!(!r.deleted && r.revoked, "{r:?}");
}

#[tokio::test]
async fn cancel_ends_the_holder_and_the_next_waiter_gets_the_lock() {
    let c = Cluster::single();
    let etcd = connect(c.endpoints(), 5).await;
    let other = connect(c.endpoints(), 5).await;
    let held = hold(&etcd, "ops/cancel", "a", 1.0).await;
    let mut w = match other
        .enqueue("ops/cancel", &meta("b"), timing(&other, 1.0))
        .await
    {
        Ok(Queued::Waiting(w)) => w,
        _ => panic!("not waiting"),
    };
    let listed = other.list().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "ops/cancel");
    assert_eq!(listed[0].entries.len(), 2);
    let cancelled = other.cancel("ops/cancel").await.expect("cancel");
    assert_eq!(cancelled.map(|e| e.key), Some(held.key().to_string()));
    let why = tokio::time::timeout(secs(3.0), held.lost())
        .await
        .expect("lost in time");
    assert_eq!(why, Lost::KeyDeleted);
    let until = tokio::time::Instant::now() + secs(3.0);
    let next = w
        .wait(Some(until))
        .await
        .ok()
        .flatten()
        .expect("next holds");
    assert!(next.fence() > held.fence());
    held.release().await;
    next.release().await;
    assert_eq!(other.cancel("ops/cancel").await.expect("cancel"), None);
}

#[tokio::test]
async fn a_holder_dropped_without_release_lapses_within_the_ttl() {
    let c = Cluster::single();
    let ttl = 2;
    let etcd = connect(c.endpoints(), ttl).await;
    let held = hold(&etcd, "lapse", "a", 0.0).await;
    let other = connect(c.endpoints(), ttl).await;
    let waiting = tokio::spawn(async move {
        let r = other
            .acquire(
                "lapse",
                &meta("b"),
                timing(&other, 0.0),
                Wait::For(secs(20.0)),
            )
            .await;
        (Instant::now(), r)
    });
    tokio::time::sleep(secs(0.3)).await;
    drop(held);
    let dropped = Instant::now();
    let (got, r) = waiting.await.expect("waiter task");
    let lapse = got - dropped;
    eprintln!("holder dropped -> waiter holds: {lapse:?} (TTL {ttl}s)");
    assert!(
        matches!(r, Ok(Acquired::Held(_))),
        "waiter did not get the lock"
    );
    // The lease lapses within its TTL of the last keep-alive; etcd looks
    // for expired leases every 500ms.
    assert!(lapse < secs(ttl as f64 + 1.0), "{lapse:?}");
}

fn tls_eps_of(c: &Cluster) -> Vec<String> {
    c.endpoints()
        .iter()
        .map(|e| e.replace("http://", "https://"))
        .collect()
}

fn one_line(e: &locksup::testing::error::Error) {
    assert!(!e.message().contains('\n'), "{}", e.message());
    assert_eq!(e.code(), 125);
}

#[tokio::test]
async fn bad_endpoints_refused_connections_and_tls_errors_are_one_line_and_bounded() {
    // Not a URL.
    let e = Etcd::connect(&config(vec!["http://exa mple:1".into()], 5))
        .await
        .expect_err("bad endpoint");
    one_line(&e);
    assert!(e.message().contains("exa mple"), "{}", e.message());

    // Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let etcd = connect(vec![format!("http://127.0.0.1:{port}")], 5).await;
    let started = Instant::now();
    let r = etcd
        .acquire("x", "", timing(&etcd, 1.0), Wait::Forever)
        .await;
    let e = r.err().expect("refused");
    eprintln!("refused: {} after {:?}", e.message(), started.elapsed());
    one_line(&e);
    assert!(e.message().contains("refused"), "{}", e.message());
    assert!(started.elapsed() < secs(6.0), "{:?}", started.elapsed());

    // Something accepts connections and never answers (a frozen server).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = silent.local_addr().expect("address");
    let etcd = connect(vec![format!("http://{addr}")], 5).await;
    let started = Instant::now();
    let e = etcd.list().await.expect_err("no answer");
    eprintln!("silent: {} after {:?}", e.message(), started.elapsed());
    one_line(&e);
    assert!(e.message().contains("no answer"), "{}", e.message());
    // command + dial timeouts, then a TCP probe of at most the dial timeout.
    assert!(started.elapsed() < secs(5.0), "{:?}", started.elapsed());
    drop(silent);

    // TLS to a server that speaks plain HTTP/2.
    let c = Cluster::single();
    let etcd = connect(tls_eps_of(&c), 5).await;
    let started = Instant::now();
    let e = etcd.list().await.expect_err("TLS handshake fails");
    eprintln!("TLS: {} after {:?}", e.message(), started.elapsed());
    one_line(&e);
    assert!(started.elapsed() < secs(6.0), "{:?}", started.elapsed());

    // A CA bundle that is missing, or not PEM.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = config(tls_eps_of(&c), 5);
    cfg.cacert = Some(dir.path().join("none.pem"));
    let e = Etcd::connect(&cfg).await.expect_err("missing CA");
    one_line(&e);
    assert!(
        e.message().contains("cannot read the CA bundle"),
        "{}",
        e.message()
    );
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "junk").expect("write");
    cfg.cacert = Some(junk);
    let e = Etcd::connect(&cfg).await.expect_err("junk CA");
    one_line(&e);
    assert!(e.message().contains("not PEM"), "{}", e.message());
    // TLS options with a plain endpoint.
    cfg.cacert = None;
    cfg.cert = Some(dir.path().join("c.pem"));
    cfg.key = Some(dir.path().join("k.pem"));
    cfg.endpoints = c.endpoints();
    let e = Etcd::connect(&cfg).await.expect_err("TLS on http://");
    one_line(&e);
    assert!(
        e.message().contains("not an https:// endpoint"),
        "{}",
        e.message()
    );
}

/// Seconds, for reports.
fn s(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// The partition case, 20 times: the holder's client talks only to its
/// member, which is frozen with SIGSTOP; a waiter talks to another member.
/// The holder must be told to end (`lost()`, at `confirmed_until − margin
/// − grace`) early enough that first signal + grace still comes before the
/// waiter gets the lock. Members take turns holding, so the frozen one is
/// sometimes the leader, sometimes a follower.
#[tokio::test]
async fn a_frozen_member_loses_the_lock_before_a_waiter_elsewhere_gets_it() {
    let c = Cluster::start(3);
    let (ttl, grace) = (3, 0.2);
    let runs = 20;
    let mut report = Vec::new();
    for run in 0..runs {
        let (h, w) = (run % 3, (run + 1) % 3);
        let leader = c.leader();
        let holder = connect(vec![c.members[h].client_url.clone()], ttl).await;
        let waiter_etcd = connect(vec![c.members[w].client_url.clone()], ttl).await;
        let name = format!("partition/{run}");
        let held = hold(&holder, &name, "holder", grace).await;
        let mut waiter = match waiter_etcd
            .enqueue(&name, &meta("waiter"), timing(&waiter_etcd, grace))
            .await
        {
            Ok(Queued::Waiting(x)) => x,
            Ok(Queued::Held(_)) => panic!("run {run}: the waiter got a held lock"),
            Err(e) => panic!("run {run}: {e}"),
        };
        let acquired = tokio::spawn(async move {
            let r = waiter.wait(None).await;
            (BootTime::now(), r)
        });
        // A keep-alive or two go through first.
        tokio::time::sleep(secs(0.7)).await;
        assert_eq!(held.is_lost(), None, "run {run}: lost before the partition");
        let frozen = BootTime::now();
        c.freeze(h);
        let why = tokio::time::timeout(secs(10.0), held.lost())
            .await
            .unwrap_or_else(|_| panic!("run {run}: lost() never fired"));
        let lost = BootTime::now();
        assert_eq!(why, Lost::Unconfirmed, "run {run}");
        let (got, r) = tokio::time::timeout(secs(30.0), acquired)
            .await
            .unwrap_or_else(|_| panic!("run {run}: the waiter never got the lock"))
            .expect("waiter task");
        let next = r
            .unwrap_or_else(|e| panic!("run {run}: {e}"))
            .expect("held");
        // The supervisor's final signal goes `grace` after lost().
        let dead = lost.plus(secs(grace));
        assert!(
            dead < got,
            "run {run}: final signal at +{} but the waiter held at +{}",
            s(dead.since(frozen)),
            s(got.since(frozen))
        );
        assert!(next.fence() > held.fence());
        report.push((
            h == leader,
            lost.since(frozen),
            got.since(frozen),
            got.since(dead),
        ));
        c.thaw(h);
        next.release().await;
        drop(held);
        c.wait_healthy();
    }
    for (i, (was_leader, lost, got, gap)) in report.iter().enumerate() {
        eprintln!(
            "run {i:2} ({}): freeze -> lost {} ; freeze -> waiter holds {} ; final signal -> waiter {}",
            if *was_leader { "leader  " } else { "follower" },
            s(*lost),
            s(*got),
            s(*gap)
        );
    }
    let min_gap = report.iter().map(|r| r.3).min().unwrap_or_default();
    let max_lost = report.iter().map(|r| r.1).max().unwrap_or_default();
    let min_got = report.iter().map(|r| r.2).min().unwrap_or_default();
    eprintln!(
        "{runs} runs, TTL {ttl}s, grace {grace}s: lost() at most {} after the freeze, the \
         waiter at least {}; final signal ahead of the waiter by at least {}",
        s(max_lost),
        s(min_got),
        s(min_gap)
    );
}

/// The leader is SIGKILLed while a lock is held by a client that knows
/// every member: keep-alives go on through another member, the holder
/// keeps holding for two TTLs and releases normally.
#[tokio::test]
async fn the_holder_keeps_holding_when_the_leader_is_killed() {
    let mut c = Cluster::start(3);
    let (ttl, grace) = (5, 0.5);
    let etcd = connect(c.endpoints(), ttl).await;
    let held = hold(&etcd, "failover", "holder", grace).await;
    let leader = c.leader();
    tokio::time::sleep(secs(0.5)).await;
    let killed = BootTime::now();
    c.kill(leader);
    let mut least = Duration::MAX;
    let end = BootTime::now().plus(secs(2.0 * ttl as f64));
    while BootTime::now() < end {
        assert_eq!(held.is_lost(), None, "lost after the leader was killed");
        least = least.min(held.lease_deadline().since(BootTime::now()));
        tokio::time::sleep(secs(0.05)).await;
    }
    let confirmed_after = held.confirmed_until().since(killed.plus(secs(ttl as f64)));
    assert!(
        confirmed_after > Duration::ZERO,
        "no keep-alive was answered after the leader died"
    );
    eprintln!(
        "leader m{leader} killed: held {} more, least time left before the lease deadline {}",
        s(BootTime::now().since(killed)),
        s(least)
    );
    let r = held.release().await;
    assert!(r.deleted && r.revoked, "{r:?}");
    let q = etcd.queue("failover").await.expect("queue");
    assert!(q.entries.is_empty(), "{q:?}");
}
