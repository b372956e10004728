//! The daemon's state: running attempts, helpers, strays and their
//! cgroups, with the reaping (`waitpid(-1)`, in one place) and what
//! follows each child's end.

use super::history::History;
use super::metrics::{Metrics, Refusal};
use super::observe::{Pipe, Submitted, Watch};
use super::*;

/// A client, as the kernel identified it when it connected.
#[derive(Debug, Clone)]
pub(super) struct Peer {
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) groups: Vec<u32>,
    pub(super) pid: Option<i32>,
}

impl Peer {
    pub(super) fn in_any(&self, gids: &HashSet<u32>) -> bool {
        gids.contains(&self.gid) || self.groups.iter().any(|g| gids.contains(g))
    }

    pub(super) fn describe(&self) -> String {
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(self.uid))
            .ok()
            .flatten()
            .map(|u| format!("user {} (uid {})", u.name, self.uid))
            .unwrap_or_else(|| format!("uid {}", self.uid));
        match self.pid {
            Some(pid) => format!("{name}, pid {pid}"),
            None => name,
        }
    }
}

/// One running attempt: its supervisor's PID is the key.
pub(super) struct Attempt {
    pub(super) uid: u32,
    pub(super) attempt_id: String,
    pub(super) lock: PathBuf,
    /// When it was submitted.
    pub(super) started: Instant,
    /// Its grace period (`None`: infinite), for what it leaves behind.
    pub(super) grace: Option<Duration>,
    /// Told the exit status when the supervisor has been reaped.
    pub(super) watchers: Vec<oneshot::Sender<i32>>,
    /// Told the exit status and whether the supervisor was killed, for
    /// its record ([`super::observe`]).
    pub(super) observer: Option<oneshot::Sender<(i32, bool)>>,
    pub(super) cgroup: Option<PathBuf>,
    /// The configuration it was started with stays readable.
    pub(super) _config: Rc<Snapshot>,
}

/// A process left behind by a supervisor that died, re-parented to us.
pub(super) struct Stray {
    pub(super) starttime: Option<u64>,
    /// When it gets KILL (the attempt's grace after TERM).
    pub(super) timing: process::Escalation<Instant>,
}

pub(super) struct State {
    pub(super) settings: Rc<Settings>,
    pub(super) config_path: Option<PathBuf>,
    pub(super) socket: Option<PathBuf>,
    pub(super) attempts: HashMap<i32, Attempt>,
    /// `locksup cancel --only-orphan` processes and their lock files.
    pub(super) helpers: HashMap<i32, PathBuf>,
    pub(super) strays: HashMap<i32, Stray>,
    /// Attempt cgroups that were still busy when their supervisor ended.
    /// Attempts whose supervisor was killed lately: when, id, grace; to
    /// give what they left behind the attempt's own grace period.
    pub(super) killed: Vec<(Instant, String, Option<Duration>)>,
    /// With when `cgroup.kill` is due (`None`: never, infinite grace).
    pub(super) cgroups_left: Vec<(PathBuf, Option<Instant>)>,
    pub(super) stopping: bool,
    pub(super) next_cgroup: u64,
    pub(super) notify: Option<Notifier>,
    pub(super) containment: Containment,
    pub(super) nofile: Option<(u64, u64)>,
    pub(super) me: i32,
    pub(super) uid: u32,
    /// An orphan scan is under way.
    pub(super) scanning: bool,
    /// Connections with an attempt whose result is not written yet; the
    /// daemon does not exit before they are done.
    pub(super) pending: Rc<Pending>,
    /// A reload (SIGHUP) is under way; another HUP meanwhile sets
    /// `reload_again`, for one more when it is done.
    pub(super) reloading: bool,
    pub(super) reload_again: bool,
    /// A thread is reading the configuration (it may outlive a reload that
    /// gave up waiting for it; no second one starts while it does).
    pub(super) config_busy: Arc<AtomicBool>,
    /// Told when a reload is over, for the event loop to look at the new
    /// settings.
    pub(super) reload_done: Rc<tokio::sync::Notify>,
    pub(super) metrics: Rc<Metrics>,
    /// The attempts that ended lately.
    pub(super) history: History,
}

/// Counts connections that still owe their client a result.
#[derive(Default)]
pub(super) struct Pending {
    pub(super) count: std::cell::Cell<usize>,
    pub(super) done: tokio::sync::Notify,
}

/// Held by a connection while it owes a result.
pub(super) struct PendingGuard(Rc<Pending>);

impl PendingGuard {
    pub(super) fn new(p: &Rc<Pending>) -> PendingGuard {
        p.count.set(p.count.get() + 1);
        PendingGuard(p.clone())
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.count.set(self.0.count.get().saturating_sub(1));
        self.0.done.notify_waiters();
    }
}

pub(super) type Shared = Rc<RefCell<State>>;

/// What a validated `run` request becomes.
#[derive(Debug)]
pub(super) struct RunRequest {
    pub(super) args: Vec<String>,
    pub(super) env: Vec<(String, String)>,
    pub(super) cwd: PathBuf,
    pub(super) attempt_id: String,
    /// `--attempt-id` must be added (it was not given).
    pub(super) add_id: bool,
    pub(super) lock: PathBuf,
    /// The attempt's grace period, as its supervisor resolves it.
    pub(super) grace: Option<Duration>,
}

impl State {
    pub(super) fn may_submit(&self, peer: &Peer) -> bool {
        let s = &self.settings;
        peer.uid == self.uid
            || peer.uid == 0
            || s.allow_uids.contains(&peer.uid)
            || peer.in_any(&s.allow_gids)
    }

    pub(super) fn is_admin(&self, peer: &Peer) -> bool {
        peer.uid == self.uid || peer.uid == 0 || peer.in_any(&self.settings.admin_gids)
    }

    pub(super) fn status_line(&self) -> String {
        let n = self.attempts.len();
        let what = if n == 1 { "attempt" } else { "attempts" };
        let mut s = format!(
            "{n} {what} running; containment: {}",
            self.containment.name()
        );
        if self.stopping {
            s.push_str("; stopping");
        }
        s
    }

    pub(super) fn notify(&self, text: &str) {
        if let Some(n) = &self.notify {
            n.send(text);
        }
    }

    pub(super) fn update_status(&self) {
        self.notify(&format!("STATUS={}", self.status_line()));
    }

    /// Start an attempt's supervisor; also returns what
    /// [`super::observe::watch`] needs to follow it.
    #[allow(clippy::type_complexity)]
    pub(super) fn start(
        &mut self,
        req: RunRequest,
        fds: Vec<OwnedFd>,
        uid: u32,
    ) -> std::result::Result<(i32, String, oneshot::Receiver<i32>, Watch), (Refusal, String)> {
        if self.stopping {
            return Err((Refusal::ShuttingDown, "the daemon is shutting down".into()));
        }
        if !req.cwd.is_dir() {
            return Err((
                Refusal::Invalid,
                format!(
                    "working directory {} does not exist as the daemon sees it",
                    req.cwd.display()
                ),
            ));
        }
        let mut fds = fds.into_iter();
        let (Some(stdin), Some(stdout), Some(stderr)) = (fds.next(), fds.next(), fds.next()) else {
            return Err((
                Refusal::Protocol,
                "the client's stdin, stdout and stderr are missing".into(),
            ));
        };
        let spawn_failed = |what: &str, e: &dyn std::fmt::Display| {
            (
                Refusal::SpawnFailed,
                format!("cannot start the attempt's supervisor: {what}{e}"),
            )
        };
        // The supervisor's copy of the events. The write end is inherited
        // by this one child only: nothing else is started between here
        // and the drop below (one thread starts children).
        let events = Pipe::new().map_err(|e| spawn_failed("events pipe: ", &e))?;
        let events_fd = events
            .for_child()
            .map_err(|e| spawn_failed("events pipe: ", &e))?;
        let snapshot = self.settings.snapshot.clone();
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0("locksup")
            .arg("--config")
            .arg(&snapshot.path)
            .arg("run");
        if req.add_id {
            cmd.arg("--attempt-id").arg(&req.attempt_id);
        }
        cmd.args(&req.args)
            .env_clear()
            .envs(req.env.iter().map(|(k, v)| (k, v)))
            .env(crate::cmd::run::DAEMON_EVENTS_ENV, events_fd.to_string())
            .current_dir(&req.cwd)
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .process_group(0);
        let cgroup = match &self.containment {
            Containment::Cgroup(root) => {
                self.next_cgroup += 1;
                match cgroup::create_attempt(root, self.next_cgroup) {
                    Ok(dir) => Some(dir),
                    Err(e) => {
                        log::warn!(
                            "attempt {}: no cgroup of its own ({e}); process group only",
                            req.attempt_id
                        );
                        None
                    }
                }
            }
            Containment::ProcessGroup(_) => None,
        };
        let cgroup_procs = cgroup.as_ref().and_then(|d| {
            std::ffi::CString::new(d.join("cgroup.procs").into_os_string().into_encoded_bytes())
                .ok()
        });
        self.prepare_child(&mut cmd, cgroup_procs);
        let spawned = cmd.spawn();
        let Pipe {
            read: events,
            write,
        } = events;
        drop(write);
        let child = match spawned {
            Ok(c) => c,
            Err(e) => {
                if let Some(d) = &cgroup {
                    let _ = cgroup::remove(d);
                }
                return Err(spawn_failed("", &e));
            }
        };
        // Reaped by `reap` (waitpid), never by std.
        let pid = child.id() as i32;
        drop(child);
        drop(cmd); // the client's descriptors: the supervisor has them now
        let (tx, rx) = oneshot::channel();
        log::info!(
            "attempt {} for uid {uid}: supervisor pid {pid}, lock {}",
            req.attempt_id,
            req.lock.display()
        );
        let id = req.attempt_id.clone();
        let (observer, exit) = oneshot::channel();
        let watch = Watch {
            submitted: Submitted {
                attempt_id: req.attempt_id.clone(),
                lock: req.lock.clone(),
                uid,
                at: std::time::SystemTime::now(),
            },
            events,
            exit,
        };
        self.attempts.insert(
            pid,
            Attempt {
                uid,
                attempt_id: req.attempt_id,
                lock: req.lock,
                started: Instant::now(),
                grace: req.grace,
                watchers: vec![tx],
                observer: Some(observer),
                cgroup,
                _config: snapshot,
            },
        );
        self.metrics.started();
        self.update_status();
        Ok((pid, id, rx, watch))
    }

    /// The `finished` answer: every finished attempt for an admin, else
    /// the peer's.
    pub(super) fn finished(&self, peer: &Peer, is_admin: bool) -> Frame {
        let (attempts, omitted) = self.history.answer(|r| is_admin || r.uid == peer.uid);
        Frame::Finished {
            bound: u64::try_from(self.history.bound()).unwrap_or(u64::MAX),
            attempts,
            omitted,
        }
    }

    /// The `attempts` answer: every attempt for an admin, else the peer's.
    pub(super) fn list(&self, peer: &Peer, is_admin: bool) -> Frame {
        let now = Instant::now();
        let mut attempts: Vec<crate::protocol::AttemptInfo> = self
            .attempts
            .iter()
            .filter(|(_, a)| is_admin || a.uid == peer.uid)
            .map(|(&pid, a)| crate::protocol::AttemptInfo {
                attempt_id: a.attempt_id.clone(),
                attempt_pid: pid,
                uid: a.uid,
                lock: a.lock.display().to_string(),
                running_ms: u64::try_from(now.duration_since(a.started).as_millis())
                    .unwrap_or(u64::MAX),
            })
            .collect();
        attempts.sort_by_key(|a| std::cmp::Reverse(a.running_ms));
        Frame::Attempts {
            containment: self.containment.describe(),
            attempts,
        }
    }

    /// What every child of the daemon does before it execs: TERM when the
    /// daemon dies, the daemon's original file limit, and its cgroup.
    pub(super) fn prepare_child(&self, cmd: &mut Command, cgroup_procs: Option<std::ffi::CString>) {
        spawn::prepare_supervisor(
            cmd,
            SupervisorSetup {
                parent: self.me,
                death_signal: Signal::SIGTERM,
                nofile: self.nofile,
                cgroup_procs,
            },
        );
    }

    /// Send `sig` to a supervisor that has not been reaped (so its PID is
    /// still ours), then SIGCONT in case it was stopped.
    pub(super) fn signal_attempt(&self, pid: i32, sig: Signal) -> bool {
        if !self.attempts.contains_key(&pid) {
            return false;
        }
        let ok = kill(Pid::from_raw(pid), sig).is_ok();
        let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        ok
    }

    /// Reap every child that has ended: supervisors, helpers, strays.
    pub(super) fn reap(&mut self) {
        loop {
            // Any signal may end a supervisor, real-time ones included.
            let (pid, code, signal) = match sys::reap_one() {
                Ok(Reaped::Running | Reaped::NoChildren) => break,
                Err(e) => {
                    log::warn!("waitpid: {e}");
                    break;
                }
                Ok(Reaped::Child(p, Ended::Exited(c))) => (p, c, None),
                Ok(Reaped::Child(p, Ended::Signaled(n))) => (
                    p,
                    exit::from_signal(n),
                    Some(Sig::from_number(n).map_or_else(|| n.to_string(), |s| s.to_string())),
                ),
            };
            if let Some(a) = self.attempts.remove(&pid) {
                if signal.is_some() {
                    self.killed
                        .push((Instant::now(), a.attempt_id.clone(), a.grace));
                }
                self.attempt_ended(pid, a, code, signal);
            } else if let Some(lock) = self.helpers.remove(&pid) {
                match code {
                    0 => {
                        self.metrics.orphan_reaped();
                        log::info!("orphaned lock {} ended", lock.display());
                    }
                    exit::NOT_HELD => log::debug!("{} is not an orphan any more", lock.display()),
                    c => log::warn!(
                        "ending the orphaned lock {} failed (locksup cancel exit status {c})",
                        lock.display()
                    ),
                }
            } else if self.strays.remove(&pid).is_some() {
                log::debug!("stray pid {pid} reaped");
            }
        }
        self.find_strays();
        self.retry_cgroups();
    }

    /// The grace period for a stray: its attempt's (found by the
    /// `LOCKSUP_ATTEMPT_ID` in its environment, or, failing that, the
    /// longest of the attempts whose supervisor died in the last second),
    /// else [`STRAY_GRACE`].
    pub(super) fn stray_grace(&mut self, pid: i32) -> Option<Duration> {
        let now = Instant::now();
        self.killed
            .retain(|(t, _, _)| now.duration_since(*t) < Duration::from_secs(600));
        let id = std::fs::read(format!("/proc/{pid}/environ"))
            .ok()
            .and_then(|env| {
                env.split(|b| *b == 0)
                    .find_map(|kv| kv.strip_prefix(b"LOCKSUP_ATTEMPT_ID=").map(<[u8]>::to_vec))
            });
        if let Some(id) = id
            && let Some((_, _, g)) = self.killed.iter().find(|(_, a, _)| a.as_bytes() == id)
        {
            return *g;
        }
        let recent: Vec<Option<Duration>> = self
            .killed
            .iter()
            .filter(|(t, _, _)| now.duration_since(*t) < Duration::from_secs(1))
            .map(|(_, _, g)| *g)
            .collect();
        if recent.is_empty() {
            return Some(STRAY_GRACE);
        }
        if recent.iter().any(Option::is_none) {
            return None;
        }
        recent.into_iter().flatten().max()
    }

    pub(super) fn attempt_ended(
        &mut self,
        pid: i32,
        a: Attempt,
        code: i32,
        signal: Option<String>,
    ) {
        match &signal {
            Some(sig) => log::warn!(
                "supervisor pid {pid} of attempt {} was killed by {sig}; ending what it left behind",
                a.attempt_id,
            ),
            None => log::info!("attempt {} ended with status {code}", a.attempt_id),
        }
        if let Some(dir) = a.cgroup {
            // A supervisor that ended by itself leaves nothing behind; one
            // that was killed leaves processes that get TERM now (as
            // strays) and cgroup.kill once the grace is over.
            let kill_at = match signal {
                None => Some(Instant::now()),
                Some(_) => a.grace.map(|g| Instant::now() + g),
            };
            self.cgroups_left.push((dir, kill_at));
        }
        if let Some(o) = a.observer {
            let _ = o.send((code, signal.is_some()));
        }
        for w in a.watchers {
            let _ = w.send(code);
        }
        self.update_status();
    }

    /// Children of ours that are neither supervisors nor helpers were left
    /// by a supervisor that died: TERM (and CONT) now, KILL after the grace.
    pub(super) fn find_strays(&mut self) {
        // A supervisor that is dying but not reaped yet may have handed its
        // processes to us already: look again once it is reaped (its
        // SIGCHLD is on its way), so they get its grace, not the default.
        if self.attempts.keys().any(|pid| !procfs::alive(*pid)) {
            return;
        }
        for pid in procfs::children(self.me) {
            if self.attempts.contains_key(&pid)
                || self.helpers.contains_key(&pid)
                || self.strays.contains_key(&pid)
                || !procfs::alive(pid)
            {
                continue;
            }
            let cmd = procfs::cmdline(pid).unwrap_or_default();
            let grace = self.stray_grace(pid);
            let then = match grace {
                Some(g) => format!("KILL in {}", crate::duration::format_duration(g)),
                None => "no KILL (infinite grace)".to_owned(),
            };
            log::warn!(
                "pid {pid} ({cmd}) was left behind by a supervisor that died: sending TERM, {then}"
            );
            process::signal_subtree(&Tree::of_self(), pid, libc::SIGTERM);
            self.strays.insert(
                pid,
                Stray {
                    starttime: procfs::starttime(pid),
                    timing: process::Escalation::new(Instant::now(), grace),
                },
            );
        }
    }

    /// Attempt cgroups whose supervisor has ended: `cgroup.kill` once due
    /// while processes are left, then removal.
    pub(super) fn retry_cgroups(&mut self) {
        let now = Instant::now();
        self.cgroups_left.retain(|(dir, kill_at)| {
            if kill_at.is_some_and(|t| t <= now)
                && cgroup::populated(dir) == Some(true)
                && let Err(e) = cgroup::kill(dir)
            {
                log::warn!("cgroup.kill in {}: {e}", dir.display());
            }
            match cgroup::remove(dir) {
                Ok(true) => false,
                Ok(false) => true,
                Err(e) => {
                    log::warn!("cannot remove cgroup {}: {e}", dir.display());
                    false
                }
            }
        });
    }

    /// The next time something is due: a stray's KILL, a cgroup.kill.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let strays = self.strays.values().filter_map(|s| s.timing.final_at());
        let cgroups = self.cgroups_left.iter().filter_map(|(_, t)| *t);
        strays.chain(cgroups).min()
    }

    pub(super) fn kill_due_strays(&mut self) {
        let now = Instant::now();
        for (&pid, s) in self.strays.iter_mut() {
            if s.timing.final_due(now) {
                s.timing.mark_final_sent();
                if procfs::alive(pid) && procfs::starttime(pid) == s.starttime {
                    log::warn!("pid {pid} still there after the grace period: sending KILL");
                    process::signal_subtree(&Tree::of_self(), pid, libc::SIGKILL);
                }
            }
        }
        self.retry_cgroups();
    }

    /// TERM or INT: stop accepting (the caller drops the listener), TERM
    /// to every supervisor. Again: TERM again, which makes each one
    /// escalate at once.
    pub(super) fn shutdown(&mut self, sig: Signal) {
        if !self.stopping {
            self.stopping = true;
            log::info!(
                "{} received: stopping; ending {} attempt(s)",
                sig.as_str(),
                self.attempts.len()
            );
            self.notify(&format!("STOPPING=1\nSTATUS={}", self.status_line()));
            if let Some(p) = &self.socket {
                let _ = std::fs::remove_file(p);
            }
        } else {
            log::info!("{} received again: escalating every attempt", sig.as_str());
        }
        for &pid in self.attempts.keys() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        }
    }

    /// A configuration read for a reload is in: take it, or log why not.
    pub(super) fn reloaded(&mut self, loaded: Result<Loaded>) {
        match loaded.and_then(Settings::new) {
            Ok(s) => {
                let where_ = s
                    .config
                    .path
                    .as_ref()
                    .map_or("no file (built-in defaults)".to_owned(), |p| {
                        p.display().to_string()
                    });
                if s.config.serve.socket != self.settings.config.serve.socket
                    || s.config.serve.socket_mode != self.settings.config.serve.socket_mode
                {
                    log::warn!("[serve] socket and socket_mode take effect at the next start");
                }
                if s.config.serve.metrics != self.settings.config.serve.metrics {
                    log::warn!("[serve] metrics takes effect at the next start");
                }
                self.history.set_bound(
                    s.config
                        .serve
                        .history
                        .unwrap_or(super::history::DEFAULT_BOUND),
                );
                self.settings = Rc::new(s);
                log::info!("configuration reloaded from {where_}");
            }
            Err(e) => log::warn!("configuration not reloaded, keeping the previous one: {e}"),
        }
        self.update_status();
    }

    /// Start a `locksup cancel --only-orphan` for each orphaned lock not
    /// already being handled.
    pub(super) fn reap_orphans(&mut self, locks: Vec<PathBuf>) {
        for lock in locks {
            if self.stopping || self.helpers.values().any(|l| *l == lock) {
                continue;
            }
            let mut cmd = Command::new("/proc/self/exe");
            cmd.arg0("locksup")
                .arg("--config")
                .arg(&self.settings.snapshot.path)
                .args(["cancel", "--only-orphan"])
                .arg(&lock)
                .env_clear()
                .envs(std::env::vars_os().filter(|(k, _)| k == "RUST_LOG" || k == "PATH"))
                .stdin(Stdio::null())
                .process_group(0);
            self.prepare_child(&mut cmd, None);
            match cmd.spawn() {
                Ok(child) => {
                    let pid = child.id() as i32;
                    drop(child);
                    log::info!(
                        "{} is an orphan: ending it (locksup cancel, pid {pid})",
                        lock.display()
                    );
                    self.helpers.insert(pid, lock);
                }
                Err(e) => log::warn!("cannot start locksup cancel for {}: {e}", lock.display()),
            }
        }
    }
}
