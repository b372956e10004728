//! The held lock file, as the supervisor looks after it: taking over
//! once the attempt has locked it (metadata, go-ahead), taking it again
//! when it was replaced meanwhile, noticing its removal, and rewriting
//! the metadata line.

use super::*;

impl Attempt<'_> {
    /// The attempt holds the lock: write down who holds it and until when,
    /// then let the command start.
    pub(super) fn on_locked(&mut self, file: FileId, created: bool) {
        let now = Instant::now();
        self.file = Some(file);
        self.behind_removed = None;
        // A wait this short is told by `wait_ms` alone.
        self.waiting = None;
        // The first process left the queue already (the next one's is
        // asking the kernel by now).
        self.left_queue();
        if !self.state.waits_for_lock() {
            // Too late: the attempt is being ended; it dies holding the lock
            // for a moment and the kernel frees it.
            return;
        }
        if !lockfile::path_names(&self.spec.lock, file) {
            self.retry_lock();
            return;
        }
        if created || lockfile::without_metadata(&self.spec.lock) {
            // A new lock file (created here, or put in place of the old
            // one): if an operator removed the old one while it was held,
            // its holders would not be excluded by this lock. The command
            // starts once they are gone (their supervisors end them when
            // they see the removal).
            let stale = lockfile::deleted_holders(&self.spec.lock);
            if !stale.is_empty() {
                self.report.event(
                    "waiting",
                    json!({ "holders": stale, "reason": "lock-file-removed" }),
                );
                self.report.say(format!(
                    "waiting for the holders of the removed {} (pids {stale:?})",
                    self.spec.lock.display()
                ));
                self.behind_removed = Some(file);
                return;
            }
        }
        self.prev_meta = lockfile::read_metadata(&self.spec.lock);
        let until = now + queue::PREVIOUS_WAIT;
        match self.previous_holder(now, until) {
            Some(previous) => self.take_over(file, previous),
            None => self.awaiting_previous = Some((file, until)),
        }
    }

    /// Take over the held lock: the fencing token, the metadata line, and
    /// the go-ahead for the command.
    pub(super) fn take_over(&mut self, file: FileId, previous: queue::Previous) {
        let now = Instant::now();
        let wall = SystemTime::now();
        if !self.state.waits_for_lock() {
            return;
        }
        // With etcd, the key's create revision: increasing across hosts.
        let fence = self
            .etcd_fence()
            .unwrap_or_else(|| self.fence_after(&previous));
        self.fence = Some(fence);
        self.previous = Some(previous);
        self.acquired = Some((now, wall));
        self.state.locked();
        let spec = self.spec;
        let deadline = spec.timeout.map(|t| rfc3339(wall + t));
        let meta = Metadata {
            v: lockfile::METADATA_VERSION,
            pid: self.pid,
            pgid: self.pgid(),
            created_at: rfc3339(wall),
            starttime: procfs::starttime(self.pid).unwrap_or(0),
            // The process that supervises the attempt (and can end it);
            // the locksup the caller started is its guardian.
            supervisor_pid: self.me,
            supervisor_starttime: procfs::starttime(self.me).unwrap_or(0),
            guardian_pid: self.guardian,
            attempt_id: spec.attempt_id.clone(),
            session: spec.session.as_ref().map(|s| s.display().to_string()),
            session_key: spec.session_key.clone(),
            command: spec
                .command
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect(),
            acquired_at: rfc3339(wall),
            deadline: deadline.clone(),
            timeout_ms: spec.timeout.map(millis),
            grace_ms: spec.grace.map(millis),
            host: nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            last_heartbeat: None,
            status: None,
            watchdog_ms: spec.watchdog.map(millis),
            fence: Some(fence),
        };
        let line = serde_json::to_string(&meta).unwrap_or_default();
        self.live = Some(Liveness::new(
            now,
            spec.timeout,
            spec.max_timeout,
            spec.watchdog,
            spec.ready_timeout,
        ));
        self.meta = Some(meta);
        self.meta_written = now;
        // inotify only for heartbeats: closing an inotify instance waits
        // for an RCU grace period (milliseconds, on every attempt's exit);
        // a removed lock file is found by the check every second anyway.
        if spec.watchdog.is_some() {
            self.touch = touch_watch(&spec.lock);
        }
        self.lock_checked = now;
        if let Err(e) = lockfile::write_metadata(&spec.lock, file, &line) {
            if !lockfile::path_names(&spec.lock, file) {
                // Removed or replaced since the check above.
                self.acquired = None;
                self.fence = None;
                self.state.relock();
                self.live = None;
                self.meta = None;
                self.touch = None;
                self.retry_lock();
                return;
            }
            self.failure = Some(e);
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            return;
        }
        self.etcd_set_value(&line);
        let (go, left_out) = spawn::go_ahead(&self.late_variables(deadline.as_deref()));
        for var in left_out {
            self.report
                .warn(format!("{var} is too long for the environment; not set"));
        }
        if let Some(mut control) = self.control.take()
            && let Err(e) = control.write_all(&go)
        {
            self.failure = Some(Error::spawn(format!("cannot start the attempt: {e}")));
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
            return;
        }
        // Microsecond precision: a handoff to a waiter can take well under
        // a millisecond, and a wait must not read as none.
        let waited = now.duration_since(self.started_at);
        let wait_ms = (waited.as_secs_f64() * 1e6).round() / 1e3;
        self.report.event(
            "acquired",
            json!({
                "wait_ms": wait_ms,
                "deadline": deadline,
                "timeout_ms": spec.timeout.map(millis),
                "fence": fence,
                "previous": self.previous.as_ref().map(queue::Previous::to_json),
                "etcd_key": self.etcd_key(),
            }),
        );
        let limit = match (spec.timeout, &deadline) {
            (Some(t), Some(d)) => format!("timeout {} (until {d})", format_duration(t)),
            _ => "no timeout".to_owned(),
        };
        let before = self
            .previous
            .as_ref()
            .map_or(String::new(), |p| match &p.attempt_id {
                Some(id) => format!("; the previous holder ({id}): {}", p.outcome),
                None => String::new(),
            });
        self.report.say(format!(
            "locked {} after {}; {limit}; fence {fence}{before}",
            spec.lock.display(),
            format_duration(now.duration_since(self.started_at))
        ));
    }

    /// The lock was taken on a file that the lock path no longer names
    /// (removed or replaced while the attempt waited): the attempt's first
    /// process lets it go and locks the file the path names now.
    pub(super) fn retry_lock(&mut self) {
        self.report
            .event("retry", json!({ "reason": "lock-file-replaced" }));
        self.report.say(format!(
            "{} was removed or replaced while the lock was taken: locking it again",
            self.spec.lock.display()
        ));
        if let Some(control) = self.control.as_mut()
            && let Err(e) = control.write_all(spawn::RETRY)
        {
            self.failure = Some(Error::spawn(format!("cannot start the attempt: {e}")));
            let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
    }

    /// Whether the lock path still names the held file; when it no longer
    /// does (removed, or replaced by another file, which others would lock
    /// beside this attempt), say so once and, by default, end the attempt.
    pub(super) fn check_lock_file(&mut self) -> bool {
        let Some(file) = self.file else {
            return true;
        };
        self.lock_checked = Instant::now();
        if self.lock_gone || lockfile::path_names(&self.spec.lock, file) {
            return !self.lock_gone;
        }
        self.lock_gone = true;
        let how = if self.spec.lock.symlink_metadata().is_ok() {
            "replaced"
        } else {
            "removed"
        };
        let action = match self.spec.on_lock_removed {
            OnLockRemoved::Cancel => "cancel",
            OnLockRemoved::Warn => "warn",
        };
        self.report
            .event("lock-removed", json!({ "how": how, "action": action }));
        let what = format!(
            "{} was {how} while the attempt held it (others may now lock another file there)",
            self.spec.lock.display()
        );
        match self.spec.on_lock_removed {
            OnLockRemoved::Cancel => {
                self.report.warn(format!("{what}: ending the attempt"));
                let short = format!("the lock file was {how}");
                self.cancel(
                    Reason::LockRemoved,
                    Signal::SIGTERM,
                    self.spec.signal,
                    &short,
                );
            }
            OnLockRemoved::Warn => self.report.warn(what),
        }
        false
    }

    /// Rewrite the metadata line if it is stale and the last write is old
    /// enough (or `force`), and only while the attempt still holds the
    /// lock: the metadata is written only under the lock.
    pub(super) fn flush_metadata(&mut self, force: bool) {
        if !self.meta_dirty || self.state.signalled().is_some() {
            return;
        }
        let now = Instant::now();
        if !force && now.duration_since(self.meta_written) < METADATA_EVERY {
            return;
        }
        let (Some(meta), Some(file)) = (&self.meta, self.file) else {
            return;
        };
        self.meta_dirty = false;
        self.meta_written = now;
        if !lockfile::held_by(file, self.pid) {
            return;
        }
        let line = serde_json::to_string(meta).unwrap_or_default();
        if let Err(e) = lockfile::write_metadata(&self.spec.lock, file, &line) {
            log::warn!("{e}");
        }
        self.etcd_set_value(&line);
    }
}

/// Changes of the held lock file: touching it (a change of its times:
/// `touch`, `futimens`) counts as a heartbeat; an unlink or a rename
/// (attributes change with the link count) is looked into at once.
fn touch_watch(lock: &std::path::Path) -> Option<EventStream<[u8; 256]>> {
    let inotify = Inotify::init().ok()?;
    inotify
        .watches()
        .add(
            lock,
            WatchMask::ATTRIB | WatchMask::MOVE_SELF | WatchMask::DELETE_SELF,
        )
        .ok()?;
    inotify.into_event_stream([0u8; 256]).ok()
}
