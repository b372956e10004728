//! The life of one attempt, in one place:
//!
//! ```text
//! locking ──locked──▶ holding ──deadline / cancel──▶ signalled ──grace──▶ killed
//!    │                   │                               │                  │
//!    └─busy / wait over  └─────── exited ◀───────────────┴──────────────────┘
//!        (conflict)                  │
//!                                    ▼
//!                          released (verified) or leak
//! ```
//!
//! The states and their transitions are [`crate::attempt::state`], without
//! any input or output; this module feeds them what happens and does what
//! they answer.
//!
//! The supervisor forks the attempt's first process ([`crate::attempt::spawn`]),
//! which takes the lock itself and execs the command.
//! The supervisor never holds the lock: it watches the attempt through a
//! status pipe, SIGCHLD and timers, on one thread. It is a child subreaper,
//! so every process the attempt leaves behind (double forks, `setsid`
//! escapees) is re-parented to it and found by walking its own process
//! tree; it reaps every child itself, by `waitpid(-1)`, in one place.

use std::ffi::OsString;
use std::fs::File;
use std::io::Write;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use inotify::{EventStream, Inotify, WatchMask};
use nix::errno::Errno;
use nix::sys::signal::{SigEvent, SigevNotify};
use nix::sys::signal::{Signal, kill};
use nix::sys::time::TimeSpec;
use nix::sys::timer::{Expiration, Timer, TimerSetTimeFlags};
use nix::time::ClockId;
use nix::unistd::Pid;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::{Instant, sleep_until};

use crate::attempt::guardian::{Link, PARENT_DIED};
use crate::attempt::liveness::{Due, Liveness};
use crate::attempt::notify::{self, Notice, NotifySocket};
use crate::attempt::spawn::{self, Record, Stage};
use crate::attempt::spec::{OnLockRemoved, Order, Spec, Wait};
use crate::attempt::state::{Exits, OnCancel, Outcome, Reason, State};
use crate::duration::{format_duration, millis};
use crate::error::{Error, Result};
use crate::events::{Reporter, rfc3339};
use crate::exit;
use crate::lock::lockfile::{self, Metadata};
use crate::lock::queue::{Passed, Place, Predecessor, Queue, Ticket};
use crate::process::signals::{CANCEL as CANCEL_SIGNALS, PASS as PASS_SIGNALS};
use crate::process::{Target, Tree};
use crate::procfs::{self, FileId};
use crate::signal::Sig;
use crate::sys::{self, Ended, Reaped};

mod end;
mod etcd;
mod inputs;
mod lock_file;
mod notice;
mod queue;

use inputs::{Alarm, Signals};

/// How often, once the final signal is out, the attempt's tree is walked
/// again for processes that appeared since.
const KILL_SWEEP: Duration = Duration::from_millis(10);
/// After its wait in the queue, an attempt's wait for the lock in the
/// kernel is said (the `waiting` event, with the holders from
/// `/proc/locks`) once it has lasted this long: the lock handed over from
/// the attempt before comes sooner, and reading `/proc/locks` then would
/// stall this supervisor (and every `flock(2)` on the machine) at the
/// moment of the hand-over. The `acquired` event's `wait_ms` tells every
/// wait.
const WAITING_QUIET: Duration = Duration::from_millis(10);
/// How long after the attempt ended a lock still held counts as leaked.
const LEAK_AFTER: Duration = Duration::from_millis(200);
/// How often, besides inotify's word, the lock path is checked to still
/// name the held file.
const LOCK_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Metadata rewrites (heartbeat age, status line, extended deadline) are
/// at most this frequent.
const METADATA_EVERY: Duration = Duration::from_millis(250);
/// Variables of locksup's own environment that belong to locksup, not to
/// the attempt (systemd's notify socket, socket activation, watchdog).
const NOT_INHERITED: [&str; 7] = [
    "LOCKSUP_SESSION",
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// Run one attempt to its end and return the exit code locksup ends with.
/// Must run on a current-thread runtime on the main thread (see
/// [`spawn::spawn`]). The last event of every attempt is `end`, with
/// that exit code and the [`Outcome`].
pub(crate) async fn supervise(
    spec: &Spec,
    report: &mut Reporter,
    link: Option<Link>,
) -> Result<i32> {
    let ended = attempt(spec, report, link).await;
    let (code, outcome, error) = match &ended {
        Ok((code, outcome)) => (*code, *outcome, None),
        Err(e) => (
            e.code(),
            Outcome::of_error(e.code()),
            Some(e.message().to_owned()),
        ),
    };
    report.event(
        "end",
        json!({ "exit_code": code, "outcome": outcome.as_str(), "error": error }),
    );
    ended.map(|(code, _)| code)
}

async fn attempt(spec: &Spec, report: &mut Reporter, link: Option<Link>) -> Result<(i32, Outcome)> {
    // Orphans of the attempt must come back to us, not to init.
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| Error::spawn(format!("cannot become a child subreaper: {e}")))?;
    // Before the fork, so no SIGCHLD is missed.
    let signals = Signals::install()?;
    let alarm = Alarm::new();
    let mut env: Vec<(OsString, OsString)> = vec![
        (
            "LOCKSUP_LOCK_FILE".into(),
            spec.lock.clone().into_os_string(),
        ),
        ("LOCKSUP_ATTEMPT_ID".into(), spec.attempt_id.clone().into()),
    ];
    if let Some(s) = &spec.session {
        env.push(("LOCKSUP_SESSION".into(), s.clone().into_os_string()));
    }
    // The attempt's own sd_notify socket.
    let notify = match NotifySocket::bind() {
        Ok(n) => {
            env.push(("NOTIFY_SOCKET".into(), n.env_value().into()));
            Some(n)
        }
        Err(e) => {
            log::warn!("no notify socket for the attempt: {e}");
            None
        }
    };
    if let Some(w) = spec.watchdog {
        env.push(("WATCHDOG_USEC".into(), w.as_micros().to_string().into()));
    }
    let (lock_dir, lock_name) = lockfile::open_parent(&spec.lock)?;
    // The lock's queue, and where the last holder's ending is recorded.
    // Without it the attempt goes on, in the kernel's order: said if the
    // lock turns out to be busy (where order matters), not before.
    let (queue, queue_error) = match Queue::open(&lock_dir, &lock_name, &spec.lock, spec.file_mode)
    {
        Ok(q) => (Some(q), None),
        Err(e) => {
            let dir = crate::lock::queue::queue_path(&spec.lock);
            log::debug!("cannot use {}: {e}", dir.display());
            let warn = (spec.order == Order::Fifo).then(|| {
                format!(
                    "cannot queue in {}: {e}; waiting in the kernel's order",
                    dir.display()
                )
            });
            (None, warn)
        }
    };
    let (mut queue_error, mut ticket, mut place) = (queue_error, None, None);
    if let (Order::Fifo, Some(q), None) = (spec.order, &queue, &spec.etcd) {
        match queue::join(q, spec) {
            Ok((t, p)) => (ticket, place) = (Some(t), Some(p)),
            Err(e) => queue_error = Some(e),
        }
    }
    // Behind another waiter, the first process waits for it in flock(2)
    // itself; with etcd, until the etcd lock is held, it waits for a word.
    // With --no-wait it never waits (the supervisor ends it: others are
    // first).
    let pred_retired = match &place {
        Some(Place::Behind(pred)) => pred.retired_name(),
        _ => String::new(),
    };
    let predecessor = match &place {
        Some(Place::Behind(pred)) if spec.wait != Wait::No => {
            Some((pred.as_fd(), pred.name(), pred_retired.as_str()))
        }
        _ => None,
    };
    let queued =
        spec.etcd.is_some() || (matches!(place, Some(Place::Behind(_))) && predecessor.is_none());
    let ticket_names = ticket.as_ref().map(|t| (t.name(), t.retired_name()));
    let child_ticket = match (&queue, &ticket, &ticket_names) {
        (Some(q), Some(t), Some((name, retired))) => Some(spawn::QueueTicket {
            dir: q.as_fd(),
            name,
            fd: t.as_fd(),
            retired,
            recycle_as: t.recycle_as(),
        }),
        _ => None,
    };
    let mut prepared = spawn::Prepared::new(spawn::Request {
        lock_dir,
        lock_name: &lock_name,
        mode: spec.file_mode,
        shared: spec.shared,
        nonblock: spec.wait == Wait::No,
        command: &spec.command,
        env,
        env_remove: NOT_INHERITED.to_vec(),
        queued,
        ticket: child_ticket,
        predecessor,
        pid_var: spec.watchdog.map(|_| "WATCHDOG_PID"),
        foreground: spec.foreground,
    })
    .map_err(|e| Error::spawn(format!("cannot start the attempt: {e}")))?;
    let started_at = Instant::now();
    let child = spawn::spawn(&mut prepared)
        .map_err(|e| Error::spawn(format!("cannot start the attempt: {e}")))?;
    // The reserved descriptor number now lives on in the child only.
    drop(prepared);
    let status = pipe::Receiver::from_owned_fd(child.status)
        .map_err(|e| Error::spawn(format!("status pipe: {e}")))?;
    let guardian = link.as_ref().map(|l| l.guardian);
    let link = match link {
        Some(Link { fd, .. }) => Some(
            pipe::Receiver::from_owned_fd(fd)
                .map_err(|e| Error::spawn(format!("guardian pipe: {e}")))?,
        ),
        None => None,
    };
    let mut att = Attempt {
        spec,
        report,
        pid: child.pid,
        me: std::process::id() as i32,
        tree: guardian.map_or_else(Tree::of_self, |g| Tree::of_self().under_guardian(g)),
        guardian,
        children_left: true,
        signals,
        alarm,
        notify,
        touch: None,
        lock_checked: Instant::now(),
        lock_gone: false,
        behind_removed: None,
        live: None,
        meta: None,
        meta_dirty: false,
        meta_written: Instant::now(),
        control: Some(File::from(child.control)),
        state: State::new(),
        started_at,
        acquired: None,
        file: None,
        main_status: None,
        last_exit: Instant::now(),
        main_exit_at: Instant::now(),
        exit_reported: false,
        failure: None,
        queue,
        queue_error,
        ticket,
        queue_wait: None,
        turn_pending: queued,
        predecessor: None,
        prev_meta: None,
        awaiting_previous: None,
        waiting: None,
        was_behind: false,
        previous: None,
        fence: None,
        end_recorded: false,
        etcd: None,
        wait_from: started_at,
    };
    att.start_queue(place);
    att.run(status, link).await;
    att.finish().await
}

struct Attempt<'a> {
    spec: &'a Spec,
    report: &'a mut Reporter,
    /// The attempt's first process: it takes the lock and becomes the command.
    pid: i32,
    /// The supervisor.
    me: i32,
    /// Every process below the supervisor: the attempt.
    tree: Tree,
    /// The guardian's PID (see [`crate::attempt::guardian`]).
    guardian: Option<i32>,
    /// Whether the supervisor still has a child (as a subreaper, it has
    /// one as long as any process of the attempt is alive).
    children_left: bool,
    signals: Signals,
    alarm: Alarm,
    /// The attempt's sd_notify socket.
    notify: Option<NotifySocket>,
    /// inotify on the held lock file: touching it is a heartbeat;
    /// unlinking or renaming it is looked into at once.
    touch: Option<EventStream<[u8; 256]>>,
    /// When the lock path was last checked to name the held file.
    lock_checked: Instant,
    /// The lock path no longer names the held file (reported once).
    lock_gone: bool,
    /// Locked a new lock file while processes still hold the removed one:
    /// the command waits for them.
    behind_removed: Option<FileId>,
    /// Deadline, watchdog, readiness, status line; from acquisition on.
    live: Option<Liveness>,
    /// The metadata line as last written, and whether it is stale.
    meta: Option<Metadata>,
    meta_dirty: bool,
    meta_written: Instant,
    /// Where the go-ahead is written; dropped once sent.
    control: Option<File>,
    /// Where the attempt is ([`State`]).
    state: State,
    started_at: Instant,
    /// When the lock was acquired (monotonic, wall).
    acquired: Option<(Instant, SystemTime)>,
    /// The lock file's identity, once the attempt opened it.
    file: Option<FileId>,
    /// How the first process ended.
    main_status: Option<Ended>,
    /// When the last process of the attempt was reaped.
    last_exit: Instant,
    /// When the first process was reaped.
    main_exit_at: Instant,
    exit_reported: bool,
    /// locksup's own failure (or the command could not be executed): it
    /// decides the end, whatever the state.
    failure: Option<Error>,
    /// The lock's queue directory (also where endings are recorded).
    queue: Option<Queue>,
    /// Why the queue cannot be used, to say if the lock is busy.
    queue_error: Option<String>,
    /// Our place in the queue while waiting (`--order fifo`).
    ticket: Option<Ticket>,
    /// The predecessor in the queue, waited for on a thread.
    queue_wait: Option<tokio::sync::oneshot::Receiver<Passed>>,
    /// The first process waits for its turn to take the lock.
    turn_pending: bool,
    /// The predecessor in the queue the first process waits for itself
    /// (kept to remove its ticket if it died).
    predecessor: Option<Predecessor>,
    /// The previous holder's metadata line, read when the lock was taken.
    prev_meta: Option<Metadata>,
    /// The first process waits in the kernel for the lock (since the
    /// lock file): when to say so.
    waiting: Option<(FileId, Instant)>,
    /// The attempt waited behind another in the lock's queue.
    was_behind: bool,
    /// The lock is held, and the previous holder's supervisor has yet to
    /// record how it ended: (the lock file, until when to wait).
    awaiting_previous: Option<(FileId, Instant)>,
    /// How the previous holder ended.
    previous: Option<queue::Previous>,
    /// This attempt's fencing token, once it holds the lock.
    fence: Option<u64>,
    /// How this attempt ended was recorded for the next holder.
    end_recorded: bool,
    /// The etcd lock (`--backend etcd`).
    etcd: Option<etcd::EtcdLock>,
    /// Where `--wait` counts from for the lock file: the start, or (with
    /// etcd) when the etcd lock was had.
    wait_from: Instant,
}

enum Input {
    /// Bytes from the status pipe; none at its end.
    Status(usize),
    /// A datagram on the notify socket, with its sender.
    Notify(Vec<u8>, Option<i32>),
    /// The lock file was touched.
    Touch,
    Signal(Signal),
    /// From the guardian: `true` when the caller died, `false` at the end
    /// of the link (the guardian died).
    Link(bool),
    /// The predecessor in the queue left it or died.
    Passed(Passed),
    /// News of the etcd lock; `None` when its task is done.
    Etcd(Option<etcd::News>),
    /// The etcd lock is lost.
    LeaseLost(crate::lock::etcd::Lost),
    Timer,
}

impl Attempt<'_> {
    /// Drive the attempt until its first process is reaped and no process
    /// of it is left.
    async fn run(&mut self, status: pipe::Receiver, link: Option<pipe::Receiver>) {
        let mut status = Some(status);
        let mut link = link;
        let mut link_byte = [0u8; 1];
        let mut pending: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 256];
        loop {
            let timer = self.next_timer();
            let (signals, alarm) = (&mut self.signals, &mut self.alarm);
            let (notify, touch) = (&self.notify, &mut self.touch);
            let queue_wait = &mut self.queue_wait;
            let (etcd_news, etcd_held) = match self.etcd.as_mut() {
                Some(l) => (
                    l.news.as_mut(),
                    if l.lost { None } else { l.held.as_deref() },
                ),
                None => (None, None),
            };
            let input = tokio::select! {
                biased;
                n = async {
                    match status.as_mut() {
                        Some(s) => s.read(&mut chunk).await,
                        None => std::future::pending().await,
                    }
                } => Input::Status(n.unwrap_or(0)),
                sig = signals.recv() => Input::Signal(sig),
                n = async {
                    match link.as_mut() {
                        Some(l) => l.read(&mut link_byte).await,
                        None => std::future::pending().await,
                    }
                } => Input::Link(matches!(n, Ok(1)) && link_byte[0] == PARENT_DIED),
                dg = async {
                    match notify {
                        Some(n) => n.recv().await,
                        None => std::future::pending().await,
                    }
                } => match dg {
                    Ok((data, pid)) => Input::Notify(data, pid),
                    Err(e) => {
                        log::warn!("notify socket: {e}");
                        self.notify = None;
                        continue;
                    }
                },
                ev = async {
                    match touch.as_mut() {
                        Some(t) => t.next().await,
                        None => std::future::pending().await,
                    }
                } => match ev {
                    Some(Ok(_)) => Input::Touch,
                    _ => {
                        self.touch = None;
                        continue;
                    }
                },
                passed = async {
                    match queue_wait.as_mut() {
                        Some(w) => w.await,
                        None => std::future::pending().await,
                    }
                } => match passed {
                    Ok(p) => Input::Passed(p),
                    Err(_) => {
                        self.queue_wait = None;
                        continue;
                    }
                },
                why = async {
                    match etcd_held {
                        Some(h) => h.lost().await,
                        None => std::future::pending().await,
                    }
                } => Input::LeaseLost(why),
                news = async {
                    match etcd_news {
                        Some(rx) => rx.recv().await,
                        None => std::future::pending().await,
                    }
                } => Input::Etcd(news),
                () = async {
                    match timer {
                        Some(t) => alarm.at(t).await,
                        None => std::future::pending().await,
                    }
                } => Input::Timer,
            };
            match input {
                Input::Status(0) => {
                    status = None;
                    self.on_status_closed();
                }
                Input::Status(n) => {
                    pending.extend_from_slice(&chunk[..n]);
                    while pending.len() >= spawn::RECORD_LEN {
                        let mut rec = [0u8; spawn::RECORD_LEN];
                        rec.copy_from_slice(&pending[..spawn::RECORD_LEN]);
                        pending.drain(..spawn::RECORD_LEN);
                        match Record::decode(&rec) {
                            Some(r) => self.on_record(r),
                            None => log::warn!("garbled report from the attempt"),
                        }
                    }
                }
                Input::Notify(data, pid) => self.on_notify(&data, pid),
                Input::Touch => {
                    if self.check_lock_file() && self.spec.watchdog.is_some() {
                        self.on_heartbeat("touch");
                    }
                }
                Input::Signal(sig) => self.on_signal(sig),
                Input::Link(parent_died) => {
                    if !parent_died {
                        // The guardian is gone; nothing more will come.
                        link = None;
                    }
                    self.on_link(parent_died);
                }
                Input::Passed(p) => self.on_passed(p),
                Input::Etcd(news) => self.on_etcd(news),
                Input::LeaseLost(why) => self.on_lease_lost(why),
                Input::Timer => self.on_timer(),
            }
            self.flush_metadata(false);
            self.reap();
            // The status pipe closes at exec or when the attempt dies; only
            // after both ends are seen is the first process's story complete.
            if self.main_status.is_some() && status.is_none() {
                self.report_exit();
                if !self.children_left {
                    return;
                }
                if matches!(self.state, State::Starting | State::Running) {
                    // The command is done, but what it left behind still
                    // holds the lock: end it the usual way.
                    self.escalate(Reason::Cleanup, self.spec.signal, Instant::now());
                }
            }
        }
    }

    /// Still waiting for the etcd lock (`--backend etcd`).
    fn etcd_waiting(&self) -> bool {
        self.etcd.as_ref().is_some_and(|l| l.held.is_none())
    }

    /// The earliest time something is due.
    fn next_timer(&self) -> Option<Instant> {
        match &self.state {
            State::Signalled(e) if e.timing.final_sent() => Some(Instant::now() + KILL_SWEEP),
            State::Signalled(e) => e.timing.final_at(),
            State::Locking { .. } => {
                if self.awaiting_previous.is_some() {
                    return Some(Instant::now() + queue::PREVIOUS_POLL);
                }
                let wait = match self.spec.wait {
                    Wait::For(d) if self.state.waits_for_lock() && !self.etcd_waiting() => {
                        Some(self.wait_from + d)
                    }
                    _ => None,
                };
                let poll = self.behind_removed.map(|_| Instant::now() + KILL_SWEEP);
                let say = self.waiting.map(|(_, due)| due);
                [wait, poll, say].into_iter().flatten().min()
            }
            State::Starting | State::Running => {
                let due = self.live.as_ref()?.next_due().map(|(t, _)| t);
                let flush = self
                    .meta_dirty
                    .then_some(self.meta_written + METADATA_EVERY);
                let check = (!self.lock_gone).then_some(self.lock_checked + LOCK_CHECK_EVERY);
                [due, flush, check].into_iter().flatten().min()
            }
        }
    }

    fn on_record(&mut self, record: Record) {
        match record {
            Record::Waiting(dev, ino) => {
                let file = FileId::new(dev, ino);
                self.file = Some(file);
                if let Some(why) = self.queue_error.take() {
                    self.report.warn(why);
                }
                // After a wait in the queue, said once it lasts (see
                // `WAITING_QUIET`); else at once.
                self.waiting = Some((file, Instant::now() + WAITING_QUIET));
                if !self.was_behind {
                    self.say_waiting();
                }
            }
            Record::Busy(dev, ino) => {
                let holders = lockfile::kernel_holders(FileId::new(dev, ino));
                self.state.busy();
                self.report
                    .event("conflict", json!({ "reason": "busy", "holders": holders }));
                self.report.say(format!(
                    "{} is locked by another process",
                    self.spec.lock.display()
                ));
            }
            Record::PredecessorDied => self.on_predecessor_died(),
            Record::Locked(dev, ino) => self.on_locked(FileId::new(dev, ino), false),
            Record::LockedNew(dev, ino) => self.on_locked(FileId::new(dev, ino), true),
            Record::Failed(stage, value) => self.failure = Some(self.failure_of(stage, value)),
        }
    }

    /// The first process has been waiting in the kernel for the lock for
    /// a while (or its wait ends otherwise than with the lock): say so,
    /// with the holders the kernel names.
    fn say_waiting(&mut self) {
        let Some((file, _)) = self.waiting.take() else {
            return;
        };
        let holders = lockfile::kernel_holders(file);
        self.report.event("waiting", json!({ "holders": holders }));
        let who = holders.first().map_or(String::new(), |p| {
            let cmd = procfs::cmdline(*p).map_or(String::new(), |c| format!(": {c}"));
            format!(" (held by pid {p}{cmd})")
        });
        self.report
            .say(format!("waiting for {}{who}", self.spec.lock.display()));
    }

    /// The one-line error for a failure the child reported.
    fn failure_of(&self, stage: Stage, value: u64) -> Error {
        let lock = &self.spec.lock;
        let errno = Errno::from_raw(i32::try_from(value).unwrap_or(0));
        match stage {
            Stage::Setup => Error::spawn(format!("cannot set up the attempt: {}", errno.desc())),
            Stage::Open => Error::lock(lockfile::open_error(lock, errno)),
            Stage::NotRegular => Error::lock(lockfile::describe_mode(
                lock,
                u32::try_from(value).unwrap_or(u32::MAX),
            )),
            Stage::HardLinks => Error::lock(lockfile::hard_links_message(lock, value)),
            Stage::Flock => {
                Error::lock(format!("cannot lock {}: {}", lock.display(), errno.desc()))
            }
            Stage::Exec => {
                let name = self.spec.command[0].to_string_lossy();
                let code = match errno {
                    Errno::ENOENT | Errno::ENOTDIR => exit::NOT_FOUND,
                    _ => exit::CANNOT_EXECUTE,
                };
                Error::with_code(code, format!("cannot run '{name}': {}", errno.desc()))
            }
        }
    }

    /// The attempt's process group: its own, or ours in the foreground.
    fn pgid(&self) -> i32 {
        if self.spec.foreground {
            nix::unistd::getpgrp().as_raw()
        } else {
            self.pid
        }
    }

    /// Wall-clock time of a monotonic instant after acquisition.
    fn wall(&self, t: Instant) -> SystemTime {
        match self.acquired {
            Some((at, wall)) => wall + t.saturating_duration_since(at),
            None => SystemTime::now(),
        }
    }

    /// The status pipe closed: the command was exec'd (or the attempt died,
    /// which the reaper will tell).
    fn on_status_closed(&mut self) {
        if self.failure.is_none() && self.state.exec() {
            let argv: Vec<_> = self
                .spec
                .command
                .iter()
                .map(|a| a.to_string_lossy())
                .collect();
            self.report.event(
                "started",
                json!({ "pid": self.pid, "pgid": self.pgid(), "command": argv }),
            );
            self.report
                .say(format!("started pid {}: {}", self.pid, argv.join(" ")));
        }
    }

    fn on_signal(&mut self, sig: Signal) {
        if sig == Signal::SIGCHLD {
            return; // reaped after every input
        }
        if PASS_SIGNALS.contains(&sig) {
            if !self.state.is_locking() {
                // In the foreground the command shares our process group
                // (and the terminal's): only the command gets it.
                let target = if self.spec.foreground {
                    self.pid
                } else {
                    -self.pid
                };
                let _ = sys::kill(target, sig as i32);
            }
            return;
        }
        // TERM, INT, HUP, QUIT: cancel, with the signal received.
        self.cancel(
            Reason::SupervisorSignal,
            sig,
            Sig::from(sig),
            &format!("{} received", sig.as_str()),
        );
    }

    /// End the attempt for `reason`: `first` is its first signal; a cancel
    /// before the lock was obtained exits 128 + `code_signal`. A second
    /// cancel sends the final signal at once.
    fn cancel(&mut self, reason: Reason, code_signal: Signal, first: Sig, what: &str) {
        match self.state.cancel(code_signal) {
            OnCancel::KillFirst => {
                self.report
                    .say(format!("{what} while waiting for the lock; giving up"));
                let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            }
            OnCancel::Escalate => {
                self.report.say(format!("{what}: ending the attempt"));
                self.escalate(reason, first, Instant::now());
            }
            OnCancel::Final => {
                self.report.say(format!("{what} again: escalating at once"));
                self.send_final();
            }
            OnCancel::Nothing => {}
        }
    }

    /// News from the guardian: the caller died, or (at the end of the
    /// link) the guardian itself.
    fn on_link(&mut self, parent_died: bool) {
        let (reason, what) = if parent_died {
            (Reason::ParentDied, "the process that started locksup died")
        } else {
            (
                Reason::GuardianDied,
                "the guardian (the locksup the caller started) died",
            )
        };
        self.cancel(reason, Signal::SIGHUP, self.spec.signal, what);
    }

    fn on_timer(&mut self) {
        let now = Instant::now();
        if self.waiting.is_some_and(|(_, due)| now >= due) {
            self.say_waiting();
        }
        if let Some(e) = self.state.signalled() {
            if e.timing.final_sent() {
                self.sweep();
            } else if e.timing.final_due(now) {
                self.send_final();
            }
            return;
        }
        match self.state {
            State::Locking { .. } => {
                if let Some((file, until)) = self.awaiting_previous {
                    if let Some(previous) = self.previous_holder(now, until) {
                        self.awaiting_previous = None;
                        self.take_over(file, previous);
                    }
                    return;
                }
                if let Some(file) = self.behind_removed
                    && lockfile::deleted_holders(&self.spec.lock).is_empty()
                {
                    self.on_locked(file, false);
                    return;
                }
                let expired = match self.spec.wait {
                    // The etcd task gives up its wait itself.
                    Wait::For(d) => !self.etcd_waiting() && now >= self.wait_from + d,
                    _ => false,
                };
                if !expired {
                    return;
                }
                if let Wait::For(d) = self.spec.wait {
                    self.say_waiting();
                    self.state.wait_expired();
                    let holders = self.file.map(lockfile::kernel_holders).unwrap_or_default();
                    self.report.event(
                        "conflict",
                        json!({ "reason": "wait-expired", "holders": holders }),
                    );
                    self.report.say(format!(
                        "{} still locked after waiting {}; giving up",
                        self.spec.lock.display(),
                        format_duration(d)
                    ));
                    let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
                }
            }
            State::Starting | State::Running | State::Signalled(_) => {
                if !self.lock_gone && now >= self.lock_checked + LOCK_CHECK_EVERY {
                    self.check_lock_file();
                    if self.state.signalled().is_some() {
                        return;
                    }
                }
                let Some(live) = &self.live else {
                    return;
                };
                let Some((at, due)) = live.next_due() else {
                    return;
                };
                if at > now {
                    return; // a metadata flush, done after every input
                }
                let (reason, why) = match due {
                    Due::Deadline => (
                        Reason::Timeout,
                        format!(
                            "timeout ({}) reached",
                            format_duration(at.duration_since(live.acquired()))
                        ),
                    ),
                    Due::Watchdog => (
                        Reason::Watchdog,
                        format!(
                            "watchdog: no heartbeat for {}",
                            format_duration(now.duration_since(live.last_beat()))
                        ),
                    ),
                    Due::Ready => (
                        Reason::ReadyTimeout,
                        format!(
                            "not ready {} after acquiring the lock",
                            format_duration(now.duration_since(live.acquired()))
                        ),
                    ),
                };
                self.report.say(why);
                // The final signal is due a grace period after the first
                // one was due, however late this wake-up is.
                self.escalate(reason, self.spec.signal, at);
            }
        }
    }

    /// First signal (plus SIGCONT) to every process of the attempt; the
    /// final one follows a grace period after `due`, when the first one
    /// was due. With a grace of zero the final signal is the only one.
    fn escalate(&mut self, reason: Reason, sig: Sig, due: Instant) {
        // Ended while waiting for the lock: the wait is said first.
        self.say_waiting();
        let grace = self.spec.grace;
        if grace == Some(Duration::ZERO) {
            self.state.escalate(reason, due, grace);
            self.send_final();
            return;
        }
        let targets = self.signal_all(sig);
        self.state.escalate(reason, due, grace);
        self.report.event(
            "signal",
            json!({ "signal": sig.to_string(), "reason": reason.as_str(), "targets": targets }),
        );
        let then = match grace {
            Some(g) => format!("; {} in {}", self.spec.final_signal, format_duration(g)),
            None => String::new(),
        };
        self.report.say(format!(
            "sent {} to {}{then}",
            sig,
            plural(targets.len(), "process", "processes")
        ));
    }

    /// The final signal to whatever is left.
    fn send_final(&mut self) {
        let sig = self.spec.final_signal;
        let targets = self.signal_all(sig);
        let Some(reason) = self.state.final_sent(!targets.is_empty()) else {
            return;
        };
        if !targets.is_empty() {
            self.report.event(
                "signal",
                json!({ "signal": sig.to_string(), "reason": reason.as_str(), "targets": targets }),
            );
            self.report.say(format!(
                "sent {} to {}",
                sig,
                plural(targets.len(), "process", "processes")
            ));
        }
    }

    /// After the final signal: anything that appeared since gets it too.
    fn sweep(&mut self) {
        let targets = self.signal_all(self.spec.final_signal);
        if !targets.is_empty() {
            self.state.swept(true);
            log::debug!("final signal again to {targets:?}");
        }
    }

    /// Signal every live process of the attempt: its process group at
    /// once, then every other process below the supervisor
    /// ([`Tree::signal`]). Returns the PIDs signalled.
    fn signal_all(&mut self, sig: Sig) -> Vec<i32> {
        let target = if self.spec.foreground {
            Target::Leader(self.pid)
        } else {
            Target::Group(self.pid)
        };
        self.tree.signal(target, sig.number())
    }

    /// Reap every child that has ended, ours or adopted, and note whether
    /// any is left.
    fn reap(&mut self) {
        loop {
            match sys::reap_one() {
                Ok(Reaped::Running) => return,
                Ok(Reaped::NoChildren) => {
                    self.children_left = false;
                    return;
                }
                Err(e) => {
                    log::warn!("waitpid: {e}");
                    return;
                }
                Ok(Reaped::Child(pid, ended)) => {
                    self.last_exit = Instant::now();
                    if pid == self.pid {
                        self.main_status = Some(ended);
                        self.main_exit_at = self.last_exit;
                    }
                }
            }
        }
    }
}

/// `SIGTERM`, `SIGRTMIN+3`; the number if Linux has no such signal.
fn signal_name(n: i32) -> String {
    Sig::from_number(n).map_or_else(|| n.to_string(), |s| s.to_string())
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
