//! What the attempt says on its sd_notify socket (heartbeats, a new
//! deadline, a status line, readiness, the watchdog), and heartbeats by
//! touching the lock file.

use super::*;

impl Attempt<'_> {
    /// A datagram on the notify socket.
    pub(super) fn on_notify(&mut self, data: &[u8], sender: Option<i32>) {
        let ours = sender.is_some_and(|p| p != self.me && procfs::descends_from(p, self.me));
        if !ours {
            log::warn!(
                "ignored a notification from pid {} (not a process of the attempt)",
                sender.map_or("?".to_owned(), |p| p.to_string())
            );
            return;
        }
        let now = Instant::now();
        for notice in notify::parse(data) {
            let Some(live) = self.live.as_mut() else {
                return;
            };
            match notice {
                Notice::Heartbeat => self.on_heartbeat("notify"),
                Notice::WatchdogTrigger => {
                    if self.state.signalled().is_none() {
                        self.report.say("watchdog triggered by the attempt");
                        self.escalate(Reason::Watchdog, self.spec.signal, Instant::now());
                    }
                }
                Notice::Extend(by) => {
                    if let Some(d) = live.extend(now, by) {
                        let wall = self.wall(d);
                        if let Some(m) = self.meta.as_mut() {
                            m.deadline = Some(rfc3339(wall));
                        }
                        self.meta_dirty = true;
                        self.report.event(
                            "extended",
                            json!({ "deadline": rfc3339(wall), "by_ms": millis(by) }),
                        );
                        self.report
                            .say(format!("deadline extended to {}", rfc3339(wall)));
                    }
                }
                Notice::Status(text) => {
                    if live.set_status(text.clone()) {
                        if let Some(m) = self.meta.as_mut() {
                            m.status = Some(text.clone());
                        }
                        self.meta_dirty = true;
                        self.report.event("status", json!({ "text": text }));
                        self.report.say(format!("status: {text}"));
                    }
                }
                Notice::Ready => {
                    if live.set_ready() {
                        self.report.event("ready", json!({}));
                        self.report.say("the attempt is ready");
                    }
                }
                Notice::WatchdogInterval(d) => {
                    live.set_watchdog(now, d);
                    if let Some(m) = self.meta.as_mut() {
                        m.watchdog_ms = Some(millis(d));
                    }
                    self.meta_dirty = true;
                    self.report
                        .say(format!("watchdog interval now {}", format_duration(d)));
                }
            }
        }
    }

    /// A heartbeat, by `WATCHDOG=1` or by touching the lock file.
    pub(super) fn on_heartbeat(&mut self, source: &str) {
        let Some(live) = self.live.as_mut() else {
            return;
        };
        let now = Instant::now();
        let report = live.heartbeat(now);
        if let Some(m) = self.meta.as_mut() {
            m.last_heartbeat = Some(rfc3339(SystemTime::now()));
        }
        self.meta_dirty = true;
        if report {
            self.report.event("heartbeat", json!({ "source": source }));
        }
    }
}
