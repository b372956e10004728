//! Real etcd servers for the tests: a single member or a three-member
//! cluster on 127.0.0.1, on free non-default ports, each with a temporary
//! data directory and `--unsafe-no-fsync`, killed by PID when the guard is
//! dropped. If etcd cannot start, the test fails (it never skips).

#![allow(dead_code)]
#![allow(unreachable_pub)]

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// How long a cluster may take to become healthy.
const START_LIMIT: Duration = Duration::from_secs(30);

static CLUSTERS: AtomicU32 = AtomicU32::new(0);

/// One etcd member.
pub struct Member {
    pub name: String,
    pub client_url: String,
    pub peer_url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    args: Vec<String>,
}

impl Member {
    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("etcd log file");
        let err = log.try_clone().expect("etcd log file");
        let child = Command::new("etcd")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start etcd (Debian package etcd-server): {e}"));
        self.child = Some(child);
    }

    /// The end of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(Some(_))))
    }
}

/// A running etcd cluster of one or more members.
pub struct Cluster {
    pub members: Vec<Member>,
    pub dir: tempfile::TempDir,
}

fn free_ports(n: usize) -> Vec<u16> {
    // Bound all at once, so they differ; released just before etcd binds.
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

impl Cluster {
    /// One member.
    pub fn single() -> Cluster {
        Cluster::start(1)
    }

    /// `n` members; fast elections (50ms heartbeats, 500ms election
    /// timeout) so failover tests stay short.
    pub fn start(n: usize) -> Cluster {
        let mut last = String::new();
        for _ in 0..3 {
            match Cluster::try_start(n) {
                Ok(c) => return c,
                Err(e) => last = e,
            }
        }
        panic!("etcd did not start: {last}");
    }

    fn try_start(n: usize) -> Result<Cluster, String> {
        // tmpfs when there is one: with --unsafe-no-fsync, the data dir's
        // speed no longer matters much, but it costs nothing.
        let base = if Path::new("/dev/shm").is_dir() {
            "/dev/shm"
        } else {
            "/tmp"
        };
        let dir = tempfile::Builder::new()
            .prefix("locksup-etcd")
            .tempdir_in(base)
            .map_err(|e| format!("temp dir: {e}"))?;
        let ports = free_ports(2 * n);
        let token = format!(
            "locksup-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::SeqCst)
        );
        let names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
        let peers: Vec<String> = (0..n)
            .map(|i| format!("http://127.0.0.1:{}", ports[2 * i + 1]))
            .collect();
        let initial: Vec<String> = names
            .iter()
            .zip(&peers)
            .map(|(name, p)| format!("{name}={p}"))
            .collect();
        let mut members = Vec::new();
        for i in 0..n {
            let client_url = format!("http://127.0.0.1:{}", ports[2 * i]);
            let data_dir = dir.path().join(&names[i]);
            let args = vec![
                "--name".into(),
                names[i].clone(),
                "--data-dir".into(),
                data_dir.display().to_string(),
                "--listen-client-urls".into(),
                client_url.clone(),
                "--advertise-client-urls".into(),
                client_url.clone(),
                "--listen-peer-urls".into(),
                peers[i].clone(),
                "--initial-advertise-peer-urls".into(),
                peers[i].clone(),
                "--initial-cluster".into(),
                initial.join(","),
                "--initial-cluster-state".into(),
                "new".into(),
                "--initial-cluster-token".into(),
                token.clone(),
                "--heartbeat-interval".into(),
                "50".into(),
                "--election-timeout".into(),
                "500".into(),
                "--unsafe-no-fsync".into(),
                "--logger".into(),
                "zap".into(),
                "--log-outputs".into(),
                "stderr".into(),
            ];
            members.push(Member {
                name: names[i].clone(),
                client_url,
                peer_url: peers[i].clone(),
                log: dir.path().join(format!("{}.log", names[i])),
                data_dir,
                child: None,
                args,
            });
        }
        let mut cluster = Cluster { members, dir };
        for m in &mut cluster.members {
            m.spawn();
        }
        let started = Instant::now();
        loop {
            for m in &mut cluster.members {
                if m.exited() {
                    return Err(format!("member {} exited:\n{}", m.name, m.log_tail()));
                }
            }
            let out = cluster.etcdctl(&["endpoint", "health", "--command-timeout=1s"]);
            if out.status.success() {
                return Ok(cluster);
            }
            if started.elapsed() > START_LIMIT {
                let logs: Vec<String> = cluster
                    .members
                    .iter()
                    .map(|m| format!("{}:\n{}", m.name, m.log_tail()))
                    .collect();
                return Err(format!(
                    "not healthy within {START_LIMIT:?}: {}\n{}",
                    String::from_utf8_lossy(&out.stderr),
                    logs.join("\n")
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }

    /// `etcdctl` on every endpoint.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        self.etcdctl_at(&self.endpoints(), args)
    }

    /// `etcdctl` on these endpoints.
    pub fn etcdctl_at(&self, endpoints: &[String], args: &[&str]) -> Output {
        Command::new("etcdctl")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .args(args)
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run etcdctl (Debian package etcd-client): {e}"))
    }

    /// A running `etcdctl` (e.g. `lock`), killed on drop.
    pub fn etcdctl_spawn(&self, args: &[&str]) -> Etcdctl {
        let child = Command::new("etcdctl")
            .arg(format!("--endpoints={}", self.endpoints().join(",")))
            .args(args)
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run etcdctl: {e}"));
        Etcdctl::new(child)
    }

    /// Index of the leader, as the members report it.
    pub fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let live: Vec<String> = self
                .members
                .iter()
                .filter(|m| m.child.is_some())
                .map(|m| m.client_url.clone())
                .collect();
            let out = self.etcdctl_at(&live, &["endpoint", "status", "-w", "json"]);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                for s in v.as_array().into_iter().flatten() {
                    let st = &s["Status"];
                    let (me, leader) = (&st["header"]["member_id"], &st["leader"]);
                    if me.is_u64() && me == leader {
                        let ep = s["Endpoint"].as_str().unwrap_or_default();
                        if let Some(i) = self.members.iter().position(|m| m.client_url == ep) {
                            return i;
                        }
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader: {text}");
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGSTOP member `i` (frozen: connections stay open, nothing answers).
    pub fn freeze(&self, i: usize) {
        self.signal(i, Signal::SIGSTOP);
    }

    /// SIGCONT member `i`.
    pub fn thaw(&self, i: usize) {
        self.signal(i, Signal::SIGCONT);
    }

    fn signal(&self, i: usize, sig: Signal) {
        let pid = self.members[i].pid().expect("member running");
        kill(Pid::from_raw(pid), sig).expect("signal etcd");
    }

    /// SIGKILL member `i` and reap it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            let _ = c.wait();
        }
    }

    /// Wait until every running member answers.
    pub fn wait_healthy(&self) {
        let live: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.client_url.clone())
            .collect();
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let out = self.etcdctl_at(&live, &["endpoint", "health", "--command-timeout=1s"]);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cluster not healthy again: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let pid = Pid::from_raw(c.id() as i32);
                let _ = kill(pid, Signal::SIGKILL);
                let _ = c.wait();
            }
        }
    }
}

/// A running etcdctl whose stdout lines arrive on a channel; killed by PID
/// on drop.
pub struct Etcdctl {
    child: Option<Child>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Etcdctl {
    fn new(mut child: Child) -> Etcdctl {
        let (tx, rx) = std::sync::mpsc::channel();
        if let Some(out) = child.stdout.take() {
            thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Etcdctl {
            child: Some(child),
            lines: rx,
        }
    }

    /// The next line of its output within `within` (yields to the runtime
    /// while it waits, so keep-alives of the test's own locks go on).
    pub async fn line(&self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            match self.lines.try_recv() {
                Ok(l) => return Some(l),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return None,
                Err(std::sync::mpsc::TryRecvError::Empty) => {}
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Send `sig` and wait for it to exit (bounded); whether it exited.
    pub async fn stop(&mut self, sig: Signal, within: Duration) -> bool {
        let Some(c) = self.child.as_mut() else {
            return true;
        };
        let _ = kill(Pid::from_raw(c.id() as i32), sig);
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = c.try_wait() {
                self.child = None;
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }
}

impl Drop for Etcdctl {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            let _ = c.wait();
        }
    }
}
