//! The end of an attempt: the `exited` event, the verified release of the
//! lock (or the `leak` warning), and the exit code with its outcome.

use super::*;

impl Attempt<'_> {
    /// The `exited` event, once, for a command that ran.
    pub(super) fn report_exit(&mut self) {
        let Some(st) = self.main_status else {
            return;
        };
        if !self.state.ran() || self.exit_reported {
            return;
        }
        self.exit_reported = true;
        // The command's end decides the outcome (what it may have left
        // half-written): the next holder may be waiting to hear it.
        let (code, outcome) = self.state.end(Some(st), self.exits());
        self.record_end(outcome, Some(code));
        let held = self.acquired.map_or(Duration::ZERO, |(at, _)| {
            self.main_exit_at.duration_since(at)
        });
        let held_ms = millis(held);
        let held_for = format_duration(held);
        match st {
            Ended::Exited(code) => {
                self.report
                    .event("exited", json!({ "status": code, "held_ms": held_ms }));
                self.report.say(format!(
                    "command exited with status {code} after {held_for}"
                ));
            }
            Ended::Signaled(n) => {
                let sig = signal_name(n);
                self.report
                    .event("exited", json!({ "signal": sig, "held_ms": held_ms }));
                self.report
                    .say(format!("command killed by {sig} after {held_for}"));
            }
        }
    }

    /// Verify the release, then compute the exit code and the outcome.
    pub(super) async fn finish(mut self) -> Result<(i32, Outcome)> {
        if self.failure.is_none() {
            let (code, outcome) = self.state.end(self.main_status, self.exits());
            self.record_end(outcome, Some(code));
        }
        if let (Some(file), Some(_)) = (self.file, self.acquired) {
            self.verify_release(file).await;
        }
        // Every process is gone: the etcd lock can go to the next host.
        self.release_etcd().await;
        if let Some(err) = self.failure.take() {
            self.record_end(Outcome::of_error(err.code()), Some(err.code()));
            return Err(err);
        }
        let (code, outcome) = self.state.end(self.main_status, self.exits());
        self.record_end(outcome, Some(code));
        Ok((code, outcome))
    }

    /// What decides the exit code besides the state.
    fn exits(&self) -> Exits {
        Exits {
            conflict: self.spec.conflict_exit_code,
            preserve_status: self.spec.preserve_status,
            final_signal: self.spec.final_signal.number(),
        }
    }

    /// Every process of the attempt is gone; the kernel must have freed the
    /// lock. Check it, and measure how long after the last exit it was free.
    /// The lock counts as ours only while `/proc/locks` names our first
    /// process as its taker: a waiter that got it since is the next attempt.
    pub(super) async fn verify_release(&mut self, file: FileId) {
        let last_exit = self.last_exit;
        loop {
            // Fast path first; `/proc/locks` decides when the probe finds
            // the lock busy (it may be the next attempt's) or cannot tell.
            let probe = if self.spec.shared {
                lockfile::Probe::Unknown
            } else {
                lockfile::probe(&self.spec.lock, file)
            };
            if probe == lockfile::Probe::Free || !lockfile::held_by(file, self.pid) {
                let after = last_exit.elapsed();
                let ms = (after.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0;
                self.report
                    .event("released", json!({ "ms_after_exit": ms }));
                self.report.say(format!(
                    "lock released {} after the last process exited",
                    format_duration(after)
                ));
                return;
            }
            if last_exit.elapsed() > LEAK_AFTER {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let holders = lockfile::holders(file);
        let pids: Vec<i32> = holders.iter().map(|(p, _)| *p).collect();
        let commands: Vec<&str> = holders.iter().map(|(_, c)| c.as_str()).collect();
        self.report
            .event("leak", json!({ "pids": pids, "commands": commands }));
        let who = if holders.is_empty() {
            "a process locksup cannot see".to_owned()
        } else {
            holders
                .iter()
                .map(|(p, c)| format!("pid {p} ({c})"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        self.report.warn(format!(
            "LEAK: {} is still locked after every process of the attempt ended; held by {who}",
            self.spec.lock.display()
        ));
    }
}
