//! The lock protocol of etcd's own concurrency Mutex, and the lease under
//! it kept alive for as long as the key waits or holds.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget, Txn,
    TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::client::Etcd;
use super::clock::{self, BootTime};
use super::config::{Timing, show};
use crate::error::{Error, Result};

/// How long to wait for a busy lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Fail at once.
    No,
    /// Up to this long.
    For(Duration),
    /// As long as it takes.
    Forever,
}

/// One key in a lock's queue: the holder's (lowest create revision) or a
/// waiter's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// `<prefix>/<NAME>/<lease-hex>`.
    pub key: String,
    /// NAME.
    pub name: String,
    /// The lease the key lives on.
    pub lease: i64,
    /// Its place in the queue; the holder's is its fence.
    pub create_revision: i64,
    /// What its owner stored: locksup's metadata JSON, or empty
    /// (`etcdctl lock`).
    pub value: String,
    /// The lease's remaining TTL, when asked for (listings); `None` when not
    /// asked or the lease is gone.
    pub ttl: Option<Duration>,
}

impl Entry {
    /// The entry of `kv`, a key under `<range><NAME>/`.
    pub(crate) fn of(range: &str, kv: &KeyValue) -> Option<Self> {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        let rest = key.strip_prefix(range)?;
        let (name, _) = rest.rsplit_once('/')?;
        Some(Self {
            name: name.to_string(),
            key: key.clone(),
            lease: kv.lease(),
            create_revision: kv.create_revision(),
            value: String::from_utf8_lossy(kv.value()).into_owned(),
            ttl: None,
        })
    }

    /// The value as JSON, when it is.
    pub fn metadata(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.value).ok()
    }
}

/// Why a lock held in etcd is lost: the attempt must end now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lost {
    /// A keep-alive answer said the lease is gone (TTL 0).
    LeaseExpired,
    /// The key was deleted (`etcdctl del`, `locksup cancel`).
    KeyDeleted,
    /// No keep-alive was answered in time: the lease may lapse soon
    /// (`confirmed_until − margin − grace` is reached).
    Unconfirmed,
    /// The keep-alive or watch task ended on its own (a bug, or the runtime
    /// is shutting down).
    Stopped,
}

impl Lost {
    /// A short name for events (`reason` is `lease-lost` for all of them).
    pub fn as_str(self) -> &'static str {
        match self {
            Lost::LeaseExpired => "lease-expired",
            Lost::KeyDeleted => "key-deleted",
            Lost::Unconfirmed => "lease-unconfirmed",
            Lost::Stopped => "keep-alive-stopped",
        }
    }
}

impl fmt::Display for Lost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lost::LeaseExpired => "the lease expired",
            Lost::KeyDeleted => "the lock's key was deleted",
            Lost::Unconfirmed => "no keep-alive was answered in time",
            Lost::Stopped => "the keep-alive stopped",
        })
    }
}

/// What the lease's tasks and its owner share.
struct Shared {
    /// Send time of the last answered keep-alive plus the TTL it returned.
    confirmed: watch::Sender<BootTime>,
    /// Set once, by the task that finds out.
    lost: watch::Sender<Option<Lost>>,
    /// Ask the keep-alive task for a keep-alive now.
    refresh: Notify,
}

impl Shared {
    fn confirm(&self, sent: BootTime, ttl: Duration) {
        let until = sent.plus(ttl);
        self.confirmed.send_if_modified(|c| {
            let later = until > *c;
            if later {
                *c = until;
            }
            later
        });
    }

    fn lose(&self, why: Lost) {
        self.lost.send_if_modified(|l| {
            let first = l.is_none();
            if first {
                *l = Some(why);
            }
            first
        });
    }
}

/// A key in the queue with its lease and the tasks that keep them.
struct Parts {
    etcd: Etcd,
    name: String,
    key: String,
    lease: i64,
    fence: i64,
    /// The TTL etcd granted (it may raise a short one).
    ttl: Duration,
    timing: Timing,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Parts {
    fn drop(&mut self) {
        // Without keep-alives the lease lapses within its TTL.
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Parts {
    fn stop_tasks(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }

    /// Delete the key if it is still ours, then revoke the lease. Errors
    /// are logged: the TTL bounds them.
    async fn remove(&mut self) -> Released {
        self.stop_tasks();
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.key.as_str(),
                CompareOp::Equal,
                self.fence,
            )])
            .and_then([TxnOp::delete(self.key.as_str(), None)]);
        let deleted = match self.etcd.txn("delete of the lock key", txn).await {
            Ok(r) => r.succeeded(),
            Err(e) => {
                log::warn!("{e} (the lease's TTL bounds the lock)");
                false
            }
        };
        let revoked = match self.etcd.revoke(self.lease).await {
            Ok(_) => true,
            Err(e) => {
                log::warn!("{e} (the lease lapses within its TTL)");
                false
            }
        };
        Released { deleted, revoked }
    }

    fn lost_now(&self) -> Option<Lost> {
        *self.shared.lost.borrow()
    }

    fn entry(&self, value: String) -> Entry {
        Entry {
            key: self.key.clone(),
            name: self.name.clone(),
            lease: self.lease,
            create_revision: self.fence,
            value,
            ttl: None,
        }
    }
}

/// What release did; either `false` leaves the lease's TTL as the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// The key was deleted by this release (not before, by someone else).
    pub deleted: bool,
    /// The lease was revoked.
    pub revoked: bool,
}

/// The result of [`Etcd::enqueue`].
pub enum Queued {
    /// The key is first in its queue: the lock is held.
    Held(Held),
    /// Others are ahead.
    Waiting(Waiter),
}

/// The result of [`Etcd::acquire`].
pub enum Acquired {
    /// The lock is held.
    Held(Held),
    /// It was busy and waiting was not allowed; the holder then.
    Busy(Entry),
    /// It stayed busy for the whole wait; who was ahead then.
    WaitExpired(Entry),
}

impl Etcd {
    /// Timing for this connection's TTL and `grace` (see [`Timing`]).
    pub fn timing(&self, grace: Option<Duration>) -> Result<Timing> {
        Timing::new(self.cfg.ttl, grace)
    }

    /// Join the queue of lock `name` (see [`super::config::lock_name`]) with
    /// `value` (the attempt's metadata JSON) stored in the key: grant a
    /// lease (kept alive from now on, on the caller's runtime), put
    /// `<prefix>/<NAME>/<lease-hex>` if absent, and see who holds the lock.
    pub async fn enqueue(&self, name: &str, value: &str, timing: Timing) -> Result<Queued> {
        super::config::lock_name(Some(name), std::path::Path::new("/"))?;
        let sent = BootTime::now();
        let ttl_secs = i64::try_from(timing.ttl.as_secs()).unwrap_or(i64::MAX);
        let grant = self.grant(ttl_secs).await?;
        let lease = grant.id();
        let ttl = Duration::from_secs(u64::try_from(grant.ttl()).unwrap_or(0)).max(timing.ttl);
        let shared = Arc::new(Shared {
            confirmed: watch::Sender::new(sent.plus(ttl)),
            lost: watch::Sender::new(None),
            refresh: Notify::new(),
        });
        let lock_key = self.cfg.lock_key(name);
        let key = format!("{lock_key}/{lease:x}");
        let mut parts = Parts {
            etcd: self.clone(),
            name: name.to_string(),
            key: key.clone(),
            lease,
            fence: 0,
            ttl,
            timing,
            shared: shared.clone(),
            tasks: vec![tokio::spawn(keep_alive(
                self.clone(),
                lease,
                timing.interval,
                ttl,
                sent,
                shared.clone(),
            ))],
        };
        let queue = format!("{lock_key}/");
        let first = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(
                    key.as_str(),
                    value,
                    Some(PutOptions::new().with_lease(lease)),
                ),
                TxnOp::get(queue.as_str(), Some(first.clone())),
            ])
            .or_else([
                TxnOp::get(key.as_str(), None),
                TxnOp::get(queue.as_str(), Some(first)),
            ]);
        let resp = match self.txn("put of the lock key", txn).await {
            Ok(r) => r,
            Err(e) => {
                parts.remove().await;
                return Err(e);
            }
        };
        let ops = resp.op_responses();
        let mine = match (resp.succeeded(), ops.first()) {
            (true, _) => resp.header().map(|h| h.revision()),
            (false, Some(TxnOpResponse::Get(g))) => g.kvs().first().map(KeyValue::create_revision),
            _ => None,
        };
        let owner = match ops.get(1) {
            Some(TxnOpResponse::Get(g)) => g.kvs().first().cloned(),
            _ => None,
        };
        let Some(mine) = mine else {
            parts.remove().await;
            return Err(Error::usage(format!(
                "etcd: put of the lock key {key}: the answer has no revision"
            )));
        };
        parts.fence = mine;
        parts.tasks.push(tokio::spawn(watch_own_key(
            self.clone(),
            key.clone(),
            mine,
            shared,
        )));
        match owner {
            Some(o) if o.create_revision() != mine => {
                let ahead = Entry::of(&self.cfg.range(), &o).unwrap_or_else(|| Entry {
                    key: String::from_utf8_lossy(o.key()).into_owned(),
                    name: name.to_string(),
                    lease: o.lease(),
                    create_revision: o.create_revision(),
                    value: String::from_utf8_lossy(o.value()).into_owned(),
                    ttl: None,
                });
                Ok(Queued::Waiting(Waiter {
                    parts: Some(parts),
                    holder: ahead,
                }))
            }
            _ => Ok(Queued::Held(Held::of(parts).await?)),
        }
    }

    /// Enqueue and wait as `wait` allows; a key that gives up is deleted
    /// and its lease revoked.
    pub async fn acquire(
        &self,
        name: &str,
        value: &str,
        timing: Timing,
        wait: Wait,
    ) -> Result<Acquired> {
        let until = match wait {
            Wait::For(d) => Some(Instant::now() + d),
            _ => None,
        };
        let mut waiter = match self.enqueue(name, value, timing).await? {
            Queued::Held(h) => return Ok(Acquired::Held(h)),
            Queued::Waiting(w) => w,
        };
        if wait == Wait::No {
            let holder = waiter.holder.clone();
            waiter.abandon().await;
            return Ok(Acquired::Busy(holder));
        }
        match waiter.wait(until).await {
            Ok(Some(h)) => Ok(Acquired::Held(h)),
            Ok(None) => {
                let ahead = waiter.holder.clone();
                waiter.abandon().await;
                Ok(Acquired::WaitExpired(ahead))
            }
            Err(e) => {
                waiter.abandon().await;
                Err(e)
            }
        }
    }
}

/// A key waiting in a lock's queue.
pub struct Waiter {
    parts: Option<Parts>,
    holder: Entry,
}

impl Waiter {
    /// The holder when the key was put; while waiting, the key it waits
    /// for (its predecessor).
    pub fn ahead(&self) -> &Entry {
        &self.holder
    }

    /// The waiting key.
    pub fn key(&self) -> Option<&str> {
        self.parts.as_ref().map(|p| p.key.as_str())
    }

    /// The waiting key's create revision: its place in the queue and, once
    /// it holds, its fence.
    pub fn revision(&self) -> Option<i64> {
        self.parts.as_ref().map(|p| p.fence)
    }

    /// Wait until every key created before this one is gone (watching only
    /// the predecessor for deletion), or until `until`. `Ok(None)`: the
    /// time is up and the key still waits (give it up with
    /// [`Waiter::abandon`]). Cancel-safe: dropping the future leaves the
    /// key waiting.
    pub async fn wait(&mut self, until: Option<Instant>) -> Result<Option<Held>> {
        let done = {
            let Some(parts) = self.parts.as_ref() else {
                return Err(Error::usage("etcd: this waiter already holds the lock"));
            };
            let waiting = wait_for_predecessors(parts, &mut self.holder);
            match until {
                Some(t) => match tokio::time::timeout_at(t, waiting).await {
                    Ok(r) => r,
                    Err(_) => return Ok(None),
                },
                None => waiting.await,
            }
        };
        done?;
        match self.parts.take() {
            Some(parts) => Held::of(parts).await.map(Some),
            None => Err(Error::usage("etcd: this waiter already holds the lock")),
        }
    }

    /// Leave the queue: delete the key, revoke the lease.
    pub async fn abandon(mut self) -> Released {
        match self.parts.take() {
            Some(mut p) => p.remove().await,
            None => Released {
                deleted: false,
                revoked: false,
            },
        }
    }
}

/// A request of a waiting key failed (a leader election, a member that
/// went away): try again shortly, as long as the lease may still be alive
/// (its keep-alives go on meanwhile, perhaps through another member);
/// once it may have lapsed, the error is the answer.
async fn transient(parts: &Parts, e: Error) -> Result<()> {
    if BootTime::now() >= *parts.shared.confirmed.borrow() || parts.lost_now().is_some() {
        return Err(e);
    }
    log::debug!("{e}; trying again");
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(())
}

/// Return once no key created before ours is left, and ours still is.
async fn wait_for_predecessors(parts: &Parts, ahead: &mut Entry) -> Result<()> {
    let etcd = &parts.etcd;
    let queue = format!("{}/", etcd.cfg.lock_key(&parts.name));
    let mut lost = parts.shared.lost.subscribe();
    let gone = |why: Lost| {
        Error::usage(format!(
            "etcd: lost the place in the queue of {}: {why}",
            parts.name
        ))
    };
    loop {
        if let Some(why) = parts.lost_now() {
            return Err(gone(why));
        }
        let last_before = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_max_create_revision(parts.fence - 1)
            .with_limit(1);
        let resp = match etcd
            .get("read of the lock's queue", &queue, Some(last_before))
            .await
        {
            Ok(r) => r,
            Err(e) => {
                transient(parts, e).await?;
                continue;
            }
        };
        let Some(pred) = resp.kvs().first() else {
            break;
        };
        if let Some(e) = Entry::of(&etcd.cfg.range(), pred) {
            *ahead = e;
        }
        let from = resp.header().map_or(0, |h| h.revision()) + 1;
        let mut stream = match etcd
            .watch(
                "watch of the key ahead",
                pred.key(),
                WatchOptions::new().with_start_revision(from),
            )
            .await
        {
            Ok(s) => s,
            Err(e) => {
                transient(parts, e).await?;
                continue;
            }
        };
        loop {
            tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(r)) => {
                        let deleted = r.events().iter().any(|e| e.event_type() == EventType::Delete);
                        if deleted || r.canceled() {
                            break;
                        }
                    }
                    // The stream ended: look again.
                    Ok(None) | Err(_) => break,
                },
                why = lost.wait_for(Option::is_some) => {
                    let why = why.ok().and_then(|w| *w).unwrap_or(Lost::Stopped);
                    return Err(gone(why));
                }
            }
        }
    }
    // Still there? (The lease may have lapsed while the key waited.)
    let resp = loop {
        match etcd.get("read of the lock key", &parts.key, None).await {
            Ok(r) => break r,
            Err(e) => transient(parts, e).await?,
        }
    };
    match resp.kvs().first() {
        Some(kv) if kv.create_revision() == parts.fence => Ok(()),
        _ => Err(gone(Lost::KeyDeleted)),
    }
}

/// The lock, held: its key is first in its queue and its lease is kept
/// alive by tasks on the caller's runtime. Dropping it without
/// [`Held::release`] stops the keep-alives: the lease then lapses within
/// its TTL.
pub struct Held {
    parts: Parts,
}

impl fmt::Debug for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Held")
            .field("key", &self.parts.key)
            .field("fence", &self.parts.fence)
            .finish()
    }
}

impl Held {
    /// Take `parts` as held once its lease is confirmed for long enough
    /// (after a long wait with failing keep-alives, one is asked for first).
    async fn of(parts: Parts) -> Result<Self> {
        let held = Self { parts };
        // Kept alive on time, the deadline is always at least the slack
        // ahead; less means keep-alives failed while the key waited.
        let fresh = |h: &Self| h.lease_deadline() > BootTime::now().plus(h.parts.timing.slack());
        if !fresh(&held) {
            let mut confirmed = held.parts.shared.confirmed.subscribe();
            held.parts.shared.refresh.notify_one();
            let bound = held.parts.etcd.cfg.command_timeout;
            let waited = tokio::time::timeout(bound, async {
                while !fresh(&held) {
                    if confirmed.changed().await.is_err() {
                        break;
                    }
                }
            })
            .await;
            if waited.is_err() || !fresh(&held) {
                let name = held.parts.name.clone();
                held.release().await;
                return Err(Error::usage(format!(
                    "etcd: got the lock {name}, but its lease is not confirmed for long enough \
                     (no keep-alive answered within {})",
                    show(bound)
                )));
            }
        }
        Ok(held)
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.parts.name
    }

    /// `<prefix>/<NAME>/<lease-hex>`.
    pub fn key(&self) -> &str {
        &self.parts.key
    }

    /// The lease.
    pub fn lease(&self) -> i64 {
        self.parts.lease
    }

    /// The fencing token: the key's create revision (strictly increasing
    /// from one holder of the lock to the next).
    pub fn fence(&self) -> i64 {
        self.parts.fence
    }

    /// The TTL etcd granted.
    pub fn ttl(&self) -> Duration {
        self.parts.ttl
    }

    /// The timing this lock was taken with.
    pub fn timing(&self) -> Timing {
        self.parts.timing
    }

    /// Send time of the last answered keep-alive plus the TTL it returned:
    /// the lease cannot lapse before then.
    pub fn confirmed_until(&self) -> BootTime {
        *self.parts.shared.confirmed.borrow()
    }

    /// When the first signal is due for the attempt to be dead `margin`
    /// before the lease can lapse: `confirmed_until − margin − grace`.
    pub fn lease_deadline(&self) -> BootTime {
        self.confirmed_until().minus(self.parts.timing.lead())
    }

    /// The attempt's effective deadline: the earlier of its own (`None`:
    /// no limit) and [`Held::lease_deadline`], as a runtime instant. It
    /// moves later with every answered keep-alive; [`Held::lost`] fires at
    /// it too (on CLOCK_BOOTTIME, so also after a suspend).
    pub fn deadline_for(&self, own: Option<Instant>) -> Instant {
        let lease = self.lease_deadline().to_instant();
        own.map_or(lease, |o| o.min(lease))
    }

    /// Why the lock is lost, if it is (without waiting).
    pub fn is_lost(&self) -> Option<Lost> {
        self.parts
            .lost_now()
            .or_else(|| (BootTime::now() >= self.lease_deadline()).then_some(Lost::Unconfirmed))
    }

    /// Resolve when the attempt must end: a keep-alive answer says the
    /// lease is gone, the key was deleted, or [`Held::lease_deadline`] is
    /// reached without a newer answer. Cancel-safe; call it again after it
    /// resolved and it resolves at once.
    pub async fn lost(&self) -> Lost {
        let mut told = self.parts.shared.lost.subscribe();
        let unconfirmed = async {
            loop {
                clock::sleep_until(self.lease_deadline()).await;
                if BootTime::now() >= self.lease_deadline() {
                    return Lost::Unconfirmed;
                }
            }
        };
        tokio::select! {
            why = told.wait_for(Option::is_some) => why.ok().and_then(|w| *w).unwrap_or(Lost::Stopped),
            why = unconfirmed => why,
        }
    }

    /// Replace the key's value (the attempt's metadata), if the key is
    /// still ours.
    pub async fn set_value(&self, value: &str) -> Result<()> {
        let p = &self.parts;
        let txn = Txn::new()
            .when([Compare::create_revision(
                p.key.as_str(),
                CompareOp::Equal,
                p.fence,
            )])
            .and_then([TxnOp::put(
                p.key.as_str(),
                value,
                Some(PutOptions::new().with_lease(p.lease)),
            )]);
        let resp = p.etcd.txn("update of the lock key", txn).await?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(Error::usage(format!(
                "etcd: the lock key {} is gone",
                p.key
            )))
        }
    }

    /// This lock as a queue entry (with `value`).
    pub fn entry(&self, value: String) -> Entry {
        self.parts.entry(value)
    }

    /// Release: delete the key in a transaction guarded by its create
    /// revision, then revoke the lease. Never fails: on an error the lease's
    /// TTL is the bound (logged).
    pub async fn release(mut self) -> Released {
        self.parts.remove().await
    }
}

/// Keep `lease` alive: a keep-alive every `interval` on one stream, each
/// answer confirming the lease until its send time plus the TTL it
/// returned (answers come in the order of the requests). An answer with
/// TTL 0 loses the lock. A stream that fails, or leaves a keep-alive
/// unanswered for an interval, is opened anew (perhaps to another
/// endpoint).
async fn keep_alive(
    etcd: Etcd,
    lease: i64,
    interval: Duration,
    ttl: Duration,
    granted: BootTime,
    shared: Arc<Shared>,
) {
    let mut client = etcd.client.lease_client();
    let retry = (interval / 4).max(Duration::from_millis(50));
    let mut next = granted.plus(interval);
    loop {
        tokio::select! {
            () = clock::sleep_until(next) => {}
            () = shared.refresh.notified() => {}
        }
        // Opening the stream sends the first keep-alive and waits for its
        // answer; its TTL is the granted one.
        let sent = BootTime::now();
        let opened = tokio::time::timeout(interval, client.keep_alive(lease)).await;
        let (mut keeper, mut stream) = match opened {
            Ok(Ok(ks)) => ks,
            Ok(Err(etcd_client::Error::LeaseKeepAliveError(m))) if m == "lease not found" => {
                shared.lose(Lost::LeaseExpired);
                return;
            }
            Ok(Err(e)) => {
                log::debug!("etcd: keep-alive of lease {lease:x}: {e}");
                next = BootTime::now().plus(retry);
                continue;
            }
            Err(_) => {
                log::debug!("etcd: keep-alive of lease {lease:x}: no answer within {interval:?}");
                next = BootTime::now();
                continue;
            }
        };
        shared.confirm(sent, ttl);
        let mut outstanding: VecDeque<BootTime> = VecDeque::new();
        next = sent.plus(interval);
        loop {
            tokio::select! {
                () = async {
                    tokio::select! {
                        () = clock::sleep_until(next) => {}
                        () = shared.refresh.notified() => {}
                    }
                } => {
                    let now = BootTime::now();
                    if outstanding.front().is_some_and(|s| now.since(*s) >= interval) {
                        log::debug!("etcd: keep-alive of lease {lease:x} unanswered; reopening");
                        break;
                    }
                    if keeper.keep_alive().await.is_err() {
                        break;
                    }
                    outstanding.push_back(now);
                    next = now.plus(interval);
                }
                msg = stream.message() => match msg {
                    Ok(Some(r)) => {
                        let sent = outstanding.pop_front();
                        if r.ttl() <= 0 {
                            shared.lose(Lost::LeaseExpired);
                            return;
                        }
                        if let Some(s) = sent {
                            shared.confirm(s, Duration::from_secs(r.ttl().unsigned_abs()));
                        }
                    }
                    Ok(None) | Err(_) => break,
                },
            }
        }
        next = BootTime::now();
    }
}

/// Watch our own key from its creation on: its deletion loses the lock.
async fn watch_own_key(etcd: Etcd, key: String, created: i64, shared: Arc<Shared>) {
    let retry = Duration::from_millis(200);
    let mut from = created + 1;
    loop {
        let opts = WatchOptions::new().with_start_revision(from);
        let mut stream = match etcd
            .watch("watch of the lock key", key.as_bytes(), opts)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                log::debug!("{e}");
                tokio::time::sleep(retry).await;
                continue;
            }
        };
        while let Ok(Some(r)) = stream.message().await {
            for ev in r.events() {
                if ev.event_type() == EventType::Delete {
                    shared.lose(Lost::KeyDeleted);
                    return;
                }
                if let Some(kv) = ev.kv() {
                    from = from.max(kv.mod_revision() + 1);
                }
            }
            if r.compact_revision() > 0 {
                // History is gone: see whether the key still is.
                match etcd.get("read of the lock key", &key, None).await {
                    Ok(g) => match g.kvs().first() {
                        Some(k) if k.create_revision() == created => {
                            from = g.header().map_or(from, |h| h.revision() + 1);
                        }
                        _ => {
                            shared.lose(Lost::KeyDeleted);
                            return;
                        }
                    },
                    Err(e) => log::debug!("{e}"),
                }
                break;
            }
            if r.canceled() {
                break;
            }
        }
        tokio::time::sleep(retry).await;
    }
}
