//! The supervisor's side of the etcd lock (`--backend etcd`,
//! [`crate::lock::etcd`]): right after the fork, a task on the
//! supervisor's runtime connects, joins the lock's queue in etcd and waits
//! its turn, reporting over a channel; the attempt's first process gets
//! its TURN (and takes the local lock file as usual) only once the etcd
//! lock is held. From then on, [`Held::lost`] is one of the supervisor's
//! inputs: the lease lost, the key deleted, or no keep-alive answered in
//! time ends the attempt (reason `lease-lost`) so that it is dead before
//! the lease can lapse. After the attempt's last process is gone, the key
//! is deleted and the lease revoked; on any error the TTL is the bound.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::*;
use crate::attempt::spec::EtcdSpec;
use crate::lock::etcd::{self as backend, BootTime, Entry, Held, Lost, Queued};

/// Below this much room for a late keep-alive answer, say so.
const LOW_SLACK: Duration = Duration::from_secs(1);

/// What the etcd task tells the supervisor.
pub(super) enum News {
    /// The key is in the queue, behind `ahead`.
    Queued { ahead: Entry, key: String },
    /// The lock is held.
    Held(Held),
    /// Busy, and waiting was not allowed: the holder.
    Busy(Entry),
    /// Still busy when the wait was over: the key ahead.
    WaitExpired(Entry),
    /// Connecting or queueing failed (one line, exit 125).
    Failed(Error),
}

/// The etcd lock of one attempt, as the supervisor keeps it.
pub(super) struct EtcdLock {
    name: String,
    /// From the task, until it is done.
    pub(super) news: Option<mpsc::UnboundedReceiver<News>>,
    /// Dropped (or sent) to make the task give up its place in the queue.
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    /// The lock, once held.
    pub(super) held: Option<Arc<Held>>,
    /// Its loss was handled (the attempt is being ended).
    pub(super) lost: bool,
    /// Storing the metadata as the key's value.
    update: Option<JoinHandle<()>>,
}

/// What the key holds while it waits: who waits, from where.
fn waiting_value(spec: &Spec, pid: i32, me: i32) -> String {
    json!({
        "v": lockfile::METADATA_VERSION,
        "host": nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        "pid": pid,
        "supervisor_pid": me,
        "attempt_id": spec.attempt_id,
        "lock_file": spec.lock.display().to_string(),
        "since": rfc3339(SystemTime::now()),
    })
    .to_string()
}

/// Connect, join the queue, wait (until `until`, or not at all), and say
/// what happened; on `stop`, give the place up.
async fn take(
    e: EtcdSpec,
    value: String,
    wait: Wait,
    until: Option<Instant>,
    tx: mpsc::UnboundedSender<News>,
    mut stop: oneshot::Receiver<()>,
) {
    let etcd = match backend::Etcd::connect(&e.config).await {
        Ok(c) => c,
        Err(err) => {
            let _ = tx.send(News::Failed(err));
            return;
        }
    };
    let mut waiter = match etcd.enqueue(&e.name, &value, e.timing).await {
        Ok(Queued::Held(h)) => {
            if let Err(mpsc::error::SendError(News::Held(h))) = tx.send(News::Held(h)) {
                h.release().await;
            }
            return;
        }
        Ok(Queued::Waiting(w)) => w,
        Err(err) => {
            let _ = tx.send(News::Failed(err));
            return;
        }
    };
    if wait == Wait::No {
        let holder = waiter.ahead().clone();
        waiter.abandon().await;
        let _ = tx.send(News::Busy(holder));
        return;
    }
    let _ = tx.send(News::Queued {
        ahead: waiter.ahead().clone(),
        key: waiter.key().unwrap_or_default().to_owned(),
    });
    let waited = tokio::select! {
        r = waiter.wait(until) => r,
        _ = &mut stop => {
            waiter.abandon().await;
            return;
        }
    };
    match waited {
        Ok(Some(h)) => {
            if let Err(mpsc::error::SendError(News::Held(h))) = tx.send(News::Held(h)) {
                h.release().await;
            }
        }
        Ok(None) => {
            let ahead = waiter.ahead().clone();
            waiter.abandon().await;
            let _ = tx.send(News::WaitExpired(ahead));
        }
        Err(err) => {
            waiter.abandon().await;
            let _ = tx.send(News::Failed(err));
        }
    }
}

/// Who an entry is, for messages: `attempt ID on HOST`, or its key.
fn who(entry: &Entry) -> String {
    let meta = entry.metadata();
    let field = |k: &str| {
        meta.as_ref()
            .and_then(|m| m.get(k))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    match (field("attempt_id"), field("host")) {
        (Some(id), Some(host)) => format!("attempt {id} on {host}"),
        (Some(id), None) => format!("attempt {id}"),
        _ => entry.key.clone(),
    }
}

impl Attempt<'_> {
    /// Right after the fork, with `--backend etcd`: start taking the etcd
    /// lock; the first process waits for its turn meanwhile.
    pub(super) fn start_etcd(&mut self, e: &EtcdSpec) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop_tx, stop_rx) = oneshot::channel();
        let until = match self.spec.wait {
            Wait::For(d) => Some(self.started_at + d),
            _ => None,
        };
        let value = waiting_value(self.spec, self.pid, self.me);
        let slack = e.timing.slack();
        if slack < LOW_SLACK {
            self.report.warn(format!(
                "etcd: TTL {}s with grace {}: a keep-alive answer later than {} ends the \
                 attempt (lease-lost); a longer TTL or a shorter grace leaves more room",
                e.timing.ttl.as_secs(),
                format_duration(e.timing.grace),
                format_duration(slack)
            ));
        }
        let task = tokio::spawn(take(e.clone(), value, self.spec.wait, until, tx, stop_rx));
        self.etcd = Some(EtcdLock {
            name: e.name.clone(),
            news: Some(rx),
            stop: Some(stop_tx),
            task: Some(task),
            held: None,
            lost: false,
            update: None,
        });
    }

    /// News from the etcd task (`None`: it is done).
    pub(super) fn on_etcd(&mut self, news: Option<News>) {
        let Some(lock) = self.etcd.as_mut() else {
            return;
        };
        let Some(news) = news else {
            lock.news = None;
            return;
        };
        let name = lock.name.clone();
        match news {
            News::Queued { ahead, key } => {
                let behind = who(&ahead);
                self.report.event(
                    "queued",
                    json!({
                        "etcd_key": key,
                        "behind": ahead.metadata().and_then(|m| m.get("attempt_id").cloned()),
                        "behind_key": ahead.key,
                        "behind_revision": ahead.create_revision,
                    }),
                );
                self.report.say(format!(
                    "waiting in the queue of the etcd lock {name}, behind {behind}"
                ));
            }
            News::Held(h) => {
                let fence = h.fence();
                lock.held = Some(Arc::new(h));
                if !self.state.waits_for_lock() {
                    // Being given up: released at the end.
                    return;
                }
                self.wait_from = Instant::now();
                log::debug!("etcd lock {name} held (revision {fence})");
                self.give_turn();
            }
            News::Busy(holder) => {
                self.state.busy();
                self.report.event(
                    "conflict",
                    json!({ "reason": "busy", "holders": [], "etcd_holder": holder.key }),
                );
                self.report
                    .say(format!("the etcd lock {name} is held by {}", who(&holder)));
                let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            }
            News::WaitExpired(ahead) => {
                self.state.wait_expired();
                self.report.event(
                    "conflict",
                    json!({ "reason": "wait-expired", "holders": [], "etcd_ahead": ahead.key }),
                );
                let waited = match self.spec.wait {
                    Wait::For(d) => format_duration(d),
                    _ => String::new(),
                };
                self.report.say(format!(
                    "the etcd lock {name} still held after waiting {waited} (behind {}); giving up",
                    who(&ahead)
                ));
                let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            }
            News::Failed(err) => {
                if self.failure.is_none() {
                    self.failure = Some(err);
                }
                let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            }
        }
    }

    /// The etcd lock is lost (or its lease could lapse before the attempt
    /// would be dead): end the attempt now.
    pub(super) fn on_lease_lost(&mut self, why: Lost) {
        let Some(lock) = self.etcd.as_mut() else {
            return;
        };
        lock.lost = true;
        let name = lock.name.clone();
        let due = match (why, &lock.held) {
            // The first signal was due at the lease deadline, however late
            // this wake-up is.
            (Lost::Unconfirmed, Some(h)) => {
                let late = BootTime::now().since(h.lease_deadline());
                Instant::now()
                    .checked_sub(late)
                    .unwrap_or_else(Instant::now)
            }
            _ => Instant::now(),
        };
        self.report.event(
            "lease-lost",
            json!({ "why": why.as_str(), "etcd_lock": name }),
        );
        match self.state {
            State::Signalled(_) => {
                self.report
                    .say(format!("the etcd lock {name}: {why} (already ending)"));
            }
            State::Locking { .. } => {
                self.report.say(format!(
                    "the etcd lock {name}: {why} before the command started; giving up"
                ));
                if self.failure.is_none() {
                    self.failure = Some(Error::with_code(
                        exit::TIMED_OUT,
                        format!("lost the etcd lock {name} before the command started: {why}"),
                    ));
                }
                let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            }
            State::Starting | State::Running => {
                self.report
                    .say(format!("the etcd lock {name}: {why}; ending the attempt"));
                self.escalate(Reason::LeaseLost, self.spec.signal, due);
            }
        }
    }

    /// The fencing token of the held etcd lock, if that is the backend.
    pub(super) fn etcd_fence(&self) -> Option<u64> {
        let held = self.etcd.as_ref()?.held.as_ref()?;
        u64::try_from(held.fence()).ok()
    }

    /// The held etcd lock's key, if that is the backend.
    pub(super) fn etcd_key(&self) -> Option<String> {
        let held = self.etcd.as_ref()?.held.as_ref()?;
        Some(held.key().to_owned())
    }

    /// Store the metadata line as the etcd key's value (in the background,
    /// one update at a time).
    pub(super) fn etcd_set_value(&mut self, line: &str) {
        let Some(lock) = self.etcd.as_mut() else {
            return;
        };
        let Some(held) = lock.held.clone() else {
            return;
        };
        if lock.update.as_ref().is_some_and(|u| !u.is_finished()) {
            // One update at a time; the next flush sends the newest line.
            self.meta_dirty = true;
            return;
        }
        let line = line.to_owned();
        lock.update = Some(tokio::spawn(async move {
            if let Err(e) = held.set_value(&line).await {
                log::warn!("{e}");
            }
        }));
    }

    /// Every process of the attempt is gone: give the etcd lock back (or
    /// the place in its queue).
    pub(super) async fn release_etcd(&mut self) {
        let Some(mut lock) = self.etcd.take() else {
            return;
        };
        // The task gives up its place, if it still waits.
        drop(lock.stop.take());
        let bound = self.spec.etcd.as_ref().map_or(Duration::from_secs(7), |e| {
            e.config.dial_timeout + e.config.command_timeout
        });
        if let Some(task) = lock.task.take()
            && tokio::time::timeout(bound * 2, task).await.is_err()
        {
            log::warn!("etcd: giving up the place in the queue took too long (the TTL bounds it)");
        }
        if let Some(rx) = lock.news.as_mut() {
            while let Ok(news) = rx.try_recv() {
                if let News::Held(h) = news {
                    lock.held.get_or_insert(Arc::new(h));
                }
            }
        }
        if let Some(update) = lock.update.take() {
            let _ = tokio::time::timeout(bound, update).await;
        }
        let Some(held) = lock.held.take() else {
            return;
        };
        let name = lock.name;
        match Arc::try_unwrap(held) {
            Ok(h) => {
                let fence = h.fence();
                let released = h.release().await;
                self.report.event(
                    "etcd-released",
                    json!({ "deleted": released.deleted, "revoked": released.revoked, "fence": fence }),
                );
                if released.revoked {
                    self.report.say(format!("etcd lock {name} released"));
                } else {
                    self.report.warn(format!(
                        "the etcd lock {name} could not be released; its lease lapses within its TTL"
                    ));
                }
            }
            Err(_) => log::warn!("etcd lock {name}: still in use; its lease lapses within its TTL"),
        }
    }
}
