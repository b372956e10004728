//! Rounds and what they report: one read of the kernel's view, the
//! differences with the previous round, as events (`--json`) or lines,
//! or a redrawn table on a terminal.

use super::*;

impl Watcher {
    // -----------------------------------------------------------------
    // Rounds
    // -----------------------------------------------------------------

    /// Read the kernel's view once, evaluate the lock files that are or
    /// were held, and collect what changed.
    pub(super) fn round(&mut self, changes: &mut Vec<Change>) {
        self.last_round = Instant::now();
        let now = SystemTime::now();
        let kernel = Kernel::read();
        let subset: Vec<LockFile> = self
            .files
            .values()
            .filter(|t| t.state().is_held() || !kernel.on(t.file.id).is_empty())
            .map(|t| t.file.clone())
            .collect();
        let known: HashMap<FileId, Vec<Holder>> = self
            .files
            .values()
            .filter(|t| t.holders_valid)
            .filter_map(|t| {
                let last = t.last.as_ref()?;
                let takers: Vec<i32> = kernel
                    .on(t.file.id)
                    .iter()
                    .filter(|e| !e.waiter)
                    .map(|e| e.pid)
                    .collect();
                (last.takers == takers && !last.holders.is_empty())
                    .then(|| (t.file.id, last.holders.clone()))
            })
            .collect();
        let mut ev = Evaluator::new().with_known_holders(known);
        let files = &mut self.files;
        let statuses = ev.evaluate(&subset, &kernel, now, &mut |f| {
            let t = files.get_mut(&f.path)?;
            let mut takers: Vec<i32> = kernel
                .on(f.id)
                .iter()
                .filter(|e| !e.waiter)
                .map(|e| e.pid)
                .collect();
            takers.dedup();
            if t.meta_for.as_ref() != Some(&takers) {
                t.meta = status::read_metadata(&f.path, f.id);
                t.meta_for = Some(takers);
            }
            t.meta.clone()
        });
        let started = self.started;
        for mut s in statuses {
            status::add_queue(&mut s, &kernel);
            let Some(t) = self.files.get_mut(&s.file.path) else {
                continue;
            };
            t.holders_valid = true;
            let prev = t.last.as_ref();
            let was = prev.map_or(State::Free, |l| l.state);
            let changed_holder = match prev {
                Some(p) if p.state.is_held() && s.state.is_held() => {
                    let a: BTreeSet<i32> = p.takers.iter().copied().collect();
                    let b: BTreeSet<i32> = s.takers.iter().copied().collect();
                    let ids = (
                        p.metadata.as_ref().map(|m| &m.attempt_id),
                        s.metadata.as_ref().map(|m| &m.attempt_id),
                    );
                    a != b || matches!(ids, (Some(x), Some(y)) if x != y)
                }
                _ => false,
            };
            let acquiring = s.state.is_held() && (!was.is_held() || changed_holder);
            // A locksup attempt that holds the lock but has not written its
            // metadata yet (it has not exec'd): wait for the metadata, so the
            // event names the attempt.
            if started && acquiring && s.metadata.is_none() && is_attempt_role(&s.takers) {
                let since = *t.waiting_meta_since.get_or_insert_with(Instant::now);
                if since.elapsed() < METADATA_WAIT {
                    self.follow_up(Instant::now() + FOLLOW_UPS[0]);
                    continue;
                }
            }
            t.waiting_meta_since = None;
            if started {
                if was.is_held()
                    && (!s.state.is_held() || changed_holder)
                    && let Some(p) = prev
                {
                    changes.push(Change {
                        event: "released",
                        lock: p.clone(),
                        pids: Vec::new(),
                    });
                }
                if acquiring {
                    changes.push(Change {
                        event: "acquired",
                        lock: s.clone(),
                        pids: Vec::new(),
                    });
                }
                let before: HashSet<i32> = match prev {
                    Some(p) if !changed_holder => p.waiters.iter().copied().collect(),
                    _ => HashSet::new(),
                };
                let fresh: Vec<i32> = s
                    .waiters
                    .iter()
                    .copied()
                    .filter(|p| !before.contains(p))
                    .collect();
                if !fresh.is_empty() {
                    changes.push(Change {
                        event: "waiting",
                        lock: s.clone(),
                        pids: fresh,
                    });
                }
                // Attempts that joined the lock's queue since the last round.
                let queued_before: HashSet<&str> = prev
                    .map(|p| p.queue.iter().filter_map(queue_id).collect())
                    .unwrap_or_default();
                let joined: Vec<i32> = s
                    .queue
                    .iter()
                    .filter(|w| queue_id(w).is_some_and(|id| !queued_before.contains(id)))
                    .filter_map(|w| w.holder_pid)
                    .collect();
                if !joined.is_empty() {
                    changes.push(Change {
                        event: "queued",
                        lock: s.clone(),
                        pids: joined,
                    });
                }
                let again = acquiring || changed_holder;
                if s.state == State::Overdue && (was != State::Overdue || again) {
                    changes.push(Change {
                        event: "overdue",
                        lock: s.clone(),
                        pids: Vec::new(),
                    });
                }
                if s.state == State::Orphan && (was != State::Orphan || again) {
                    changes.push(Change {
                        event: "orphaned",
                        lock: s.clone(),
                        pids: Vec::new(),
                    });
                }
            }
            t.last = if s.state.is_held() || !s.waiters.is_empty() || !s.queue.is_empty() {
                Some(s)
            } else {
                None
            };
        }
    }

    // -----------------------------------------------------------------
    // Output
    // -----------------------------------------------------------------

    pub(super) fn non_free(&self) -> Vec<LockStatus> {
        self.files
            .values()
            .filter_map(|t| t.last.clone())
            .filter(|l| l.state.is_held())
            .collect()
    }

    /// The first line: what is watched and what is held now.
    pub(super) fn ready(&mut self) -> Result<()> {
        let held = self.non_free();
        match self.mode {
            Mode::Json => {
                let line = json!({
                    "ts": rfc3339(SystemTime::now()),
                    "event": "ready",
                    "dirs": self.dirs.len(),
                    "files": self.files.len(),
                    "locks": held.iter().map(LockStatus::to_json).collect::<Vec<_>>(),
                });
                self.line(&line.to_string())
            }
            Mode::Lines => {
                let text = format!(
                    "{} ready: watching {} lock files in {} directories; {} held",
                    rfc3339(SystemTime::now()),
                    self.files.len(),
                    self.dirs.len(),
                    held.len()
                );
                self.line(&text)?;
                for l in &held {
                    let text = human(&Change {
                        event: "held",
                        lock: l.clone(),
                        pids: Vec::new(),
                    });
                    self.line(&text)?;
                }
                Ok(())
            }
            Mode::Table => self.redraw(),
        }
    }

    pub(super) fn report(&mut self, changes: &[Change], ticked: bool) -> Result<()> {
        if self.mode == Mode::Table {
            if !changes.is_empty() || ticked {
                return self.redraw();
            }
            return Ok(());
        }
        for c in changes {
            self.emit(c)?;
        }
        Ok(())
    }

    pub(super) fn emit(&mut self, c: &Change) -> Result<()> {
        match self.mode {
            Mode::Json => {
                let mut obj = Map::new();
                obj.insert("ts".into(), rfc3339(SystemTime::now()).into());
                obj.insert("event".into(), c.event.into());
                obj.insert(
                    "path".into(),
                    c.lock.file.path.to_string_lossy().into_owned().into(),
                );
                let state = if c.event == "released" {
                    "free"
                } else {
                    c.lock.state.as_str()
                };
                obj.insert("state".into(), state.into());
                if c.event == "waiting" || c.event == "queued" {
                    obj.insert("pids".into(), json!(c.pids));
                }
                obj.insert("lock".into(), c.lock.to_json());
                self.line(&Value::Object(obj).to_string())
            }
            Mode::Lines => self.line(&human(c)),
            Mode::Table => Ok(()),
        }
    }

    pub(super) fn redraw(&mut self) -> Result<()> {
        let held = self.non_free();
        let count = |s: State| held.iter().filter(|l| l.state == s).count();
        let mut text = String::from("\x1b[H\x1b[2J");
        text.push_str(&format!(
            "locksup watch — {} lock files in {} directories: {} held, {} overdue, {} orphan, {} free — {}\n\n",
            self.files.len(),
            self.dirs.len(),
            count(State::Held),
            count(State::Overdue),
            count(State::Orphan),
            self.files.len().saturating_sub(held.len()),
            humantime::format_rfc3339_seconds(SystemTime::now()),
        ));
        // Time columns tick: recompute them for now.
        let now = SystemTime::now();
        let held: Vec<LockStatus> = held.into_iter().map(|l| retime(l, now)).collect();
        text.push_str(&crate::cmd::status::table(&held));
        text.push_str("\n(Ctrl-C to quit)\n");
        self.out.write_all(text.as_bytes()).map_err(write_error)
    }

    pub(super) fn line(&mut self, text: &str) -> Result<()> {
        self.out
            .write_all(text.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(write_error)
    }

    pub(super) fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(write_error)
    }
}

/// A write to stdout failed; a reader that went away ends watch quietly
/// (the error carries exit status 0).
pub(super) fn write_error(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Error::with_code(exit::SUCCESS, "stdout was closed")
    } else {
        Error::io(format!("cannot write: {e}"))
    }
}

/// Held-for and time-left as of `now`.
pub(super) fn retime(mut l: LockStatus, now: SystemTime) -> LockStatus {
    if let Some(m) = &l.metadata {
        if let Ok(at) = humantime::parse_rfc3339(&m.acquired_at) {
            l.held = Some(now.duration_since(at).unwrap_or_default());
        }
        if let Some(d) = m
            .deadline
            .as_deref()
            .and_then(|d| humantime::parse_rfc3339(d).ok())
        {
            l.left_ms = Some(status::signed_ms(d, now));
        }
    }
    l
}

/// Whether one of `pids` is a `locksup run` attempt that has taken the
/// lock but not exec'd its command yet: a process still running the
/// locksup binary (its supervisor writes the metadata, then lets it exec).
pub(super) fn is_attempt_role(pids: &[i32]) -> bool {
    let Ok(me) = fs::read_link("/proc/self/exe") else {
        return false;
    };
    pids.iter()
        .any(|p| fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|exe| exe == me))
}

/// One human line for a change.
pub(super) fn human(c: &Change) -> String {
    let l = &c.lock;
    let mut s = format!(
        "{} {:<8} {}",
        rfc3339(SystemTime::now()),
        c.event,
        l.file.path.display()
    );
    if let Some(pid) = l.pid() {
        s.push_str(&format!(" pid {pid}"));
    }
    if let Some(cmd) = l.command_line() {
        s.push_str(&format!(" ({cmd})"));
    }
    if let Some(m) = &l.metadata {
        s.push_str(&format!(" attempt {}", m.attempt_id));
    }
    if c.event == "queued" {
        let queue: Vec<String> = l
            .queue
            .iter()
            .map(|w| format!("{}:{}", w.position, queue_id(w).unwrap_or("?")))
            .collect();
        s.push_str(&format!(" queue {}", queue.join(",")));
    } else if !c.pids.is_empty() {
        let pids: Vec<String> = c.pids.iter().map(i32::to_string).collect();
        s.push_str(&format!(" waiters {}", pids.join(",")));
    }
    s
}

/// A queued attempt's id.
fn queue_id(w: &crate::lock::queue::Waiter) -> Option<&str> {
    w.info.as_ref().map(|i| i.attempt_id.as_str())
}
