//! The daemon's metrics (`[serve] metrics`, locksup-serve(8) lists them):
//! a `prometheus-client` registry the daemon records into where attempts
//! start and end, where requests are refused and where orphans are
//! ended; the lock states under `[status] roots` are computed when
//! scraped, from the status model ([`crate::lock::status`]).
//!
//! Every label takes values from a fixed set (outcomes, reasons, states):
//! nothing a client chooses, no attempt ids, no paths.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::lock::status::{LockStatus, State as LockState};

/// How an attempt ended, as the metrics count it: the attempt's own
/// outcome (its `end` event) mapped onto a short, fixed list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Outcome {
    /// The command exited by itself (any status).
    Exited,
    /// Ended at its deadline.
    Timeout,
    /// The command died from a signal locksup did not send, or the
    /// supervisor was killed.
    Killed,
    /// Cancelled (a client, `locksup cancel`, the daemon stopping).
    Cancelled,
    /// No heartbeat in time, or not ready in time.
    Watchdog,
    /// A distributed lock's lease was lost.
    LeaseLost,
    /// The lock was busy (`--no-wait`) or stayed busy for the whole wait.
    Conflict,
    /// locksup could not run the command (not found, not executable,
    /// its own failure).
    Failure,
}

impl Outcome {
    pub(super) const ALL: [Outcome; 8] = [
        Outcome::Exited,
        Outcome::Timeout,
        Outcome::Killed,
        Outcome::Cancelled,
        Outcome::Watchdog,
        Outcome::LeaseLost,
        Outcome::Conflict,
        Outcome::Failure,
    ];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Outcome::Exited => "exited",
            Outcome::Timeout => "timeout",
            Outcome::Killed => "killed",
            Outcome::Cancelled => "cancelled",
            Outcome::Watchdog => "watchdog",
            Outcome::LeaseLost => "lease-lost",
            Outcome::Conflict => "conflict",
            Outcome::Failure => "failure",
        }
    }

    /// The outcome named in an attempt's `end` event
    /// ([`crate::attempt::state::Outcome`]'s names).
    pub(super) fn of_event(name: &str) -> Outcome {
        match name {
            "exited" => Outcome::Exited,
            "killed" => Outcome::Killed,
            "timeout" => Outcome::Timeout,
            "watchdog" | "ready-timeout" => Outcome::Watchdog,
            "cancelled" => Outcome::Cancelled,
            "busy" | "wait-expired" => Outcome::Conflict,
            n if n.starts_with("lease-") => Outcome::LeaseLost,
            _ => Outcome::Failure,
        }
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

/// Why the daemon answered a request with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Refusal {
    /// The peer is not allowed (`allow_users`, `allow_groups`).
    NotAllowed,
    /// Not allowed to cancel that attempt (`admin_groups`).
    NotPermitted,
    /// No request within the time allowed after connecting.
    Timeout,
    /// Not the protocol: malformed, oversized, unexpected frames or
    /// descriptors.
    Protocol,
    /// A request the command line would refuse too (bad options, bad
    /// working directory, bad signal).
    Invalid,
    /// No such attempt to cancel.
    NotFound,
    /// The daemon is stopping.
    ShuttingDown,
    /// The attempt's supervisor could not be started.
    SpawnFailed,
}

impl Refusal {
    pub(super) const ALL: [Refusal; 8] = [
        Refusal::NotAllowed,
        Refusal::NotPermitted,
        Refusal::Timeout,
        Refusal::Protocol,
        Refusal::Invalid,
        Refusal::NotFound,
        Refusal::ShuttingDown,
        Refusal::SpawnFailed,
    ];

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Refusal::NotAllowed => "not-allowed",
            Refusal::NotPermitted => "not-permitted",
            Refusal::Timeout => "timeout",
            Refusal::Protocol => "protocol",
            Refusal::Invalid => "invalid",
            Refusal::NotFound => "not-found",
            Refusal::ShuttingDown => "shutting-down",
            Refusal::SpawnFailed => "spawn-failed",
        }
    }
}

impl EncodeLabelValue for Refusal {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct StateValue(LockState);

impl EncodeLabelValue for StateValue {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.0.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: Refusal,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: StateValue,
}

const LOCK_STATES: [LockState; 4] = [
    LockState::Free,
    LockState::Held,
    LockState::Overdue,
    LockState::Orphan,
];

/// Bucket bounds (seconds) for waits and holds: a millisecond to an hour.
const WAIT_HOLD_BUCKETS: [f64; 16] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 3600.0,
];

/// Bucket bounds (seconds) for the release latency: from the deadline
/// to the lock free, within the grace period when all goes well.
const RELEASE_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The registry and every metric in it.
pub(super) struct Metrics {
    registry: Registry,
    started: Counter,
    ended: Family<OutcomeLabels, Counter>,
    running: Gauge,
    wait: Histogram,
    hold: Histogram,
    release: Histogram,
    leaks: Counter,
    orphans: Counter,
    refused: Family<ReasonLabels, Counter>,
    history: Gauge,
    locks: Family<StateLabels, Gauge>,
    holders: Gauge,
    waiters: Gauge,
    scan_ok: Gauge,
}

impl Metrics {
    pub(super) fn new() -> Metrics {
        let mut registry = Registry::with_prefix("locksup");
        let started = Counter::default();
        registry.register(
            "attempts_started",
            "Attempts whose supervisor the daemon started",
            started.clone(),
        );
        let ended = Family::<OutcomeLabels, Counter>::default();
        for outcome in Outcome::ALL {
            drop(ended.get_or_create(&OutcomeLabels { outcome }));
        }
        registry.register(
            "attempts_ended",
            "Attempts of the daemon that ended, by outcome",
            ended.clone(),
        );
        let running = Gauge::default();
        registry.register(
            "attempts_running",
            "Attempts of the daemon running now",
            running.clone(),
        );
        let wait = Histogram::new(WAIT_HOLD_BUCKETS);
        registry.register_with_unit(
            "lock_wait",
            "Time attempts waited for their lock before they got it",
            Unit::Seconds,
            wait.clone(),
        );
        let hold = Histogram::new(WAIT_HOLD_BUCKETS);
        registry.register_with_unit(
            "lock_hold",
            "Time attempts held their lock, from getting it to the command's exit",
            Unit::Seconds,
            hold.clone(),
        );
        let release = Histogram::new(RELEASE_BUCKETS);
        registry.register_with_unit(
            "release_latency",
            "Time from an attempt's deadline (timeout, watchdog, lease lost) to its lock being free",
            Unit::Seconds,
            release.clone(),
        );
        let leaks = Counter::default();
        registry.register(
            "leaks",
            "Attempts whose lock was still held after all their processes ended",
            leaks.clone(),
        );
        let orphans = Counter::default();
        registry.register(
            "orphans_reaped",
            "Orphaned locks under the status roots that the daemon ended (reap_orphans)",
            orphans.clone(),
        );
        let refused = Family::<ReasonLabels, Counter>::default();
        for reason in Refusal::ALL {
            drop(refused.get_or_create(&ReasonLabels { reason }));
        }
        registry.register(
            "requests_refused",
            "Requests to the daemon answered with an error, by reason",
            refused.clone(),
        );
        let history = Gauge::default();
        registry.register(
            "history_attempts",
            "Finished attempts the daemon remembers (at most [serve] history)",
            history.clone(),
        );
        let locks = Family::<StateLabels, Gauge>::default();
        for s in LOCK_STATES {
            drop(locks.get_or_create(&StateLabels {
                state: StateValue(s),
            }));
        }
        registry.register(
            "locks",
            "Lock files under the [status] roots, by state, when scraped",
            locks.clone(),
        );
        let holders = Gauge::default();
        registry.register(
            "lock_holders",
            "Processes holding a lock file under the [status] roots, when scraped",
            holders.clone(),
        );
        let waiters = Gauge::default();
        registry.register(
            "lock_waiters",
            "Processes blocked waiting for a lock file under the [status] roots, when scraped",
            waiters.clone(),
        );
        let scan_ok = Gauge::default();
        registry.register(
            "status_scan_success",
            "1 if the scan of the [status] roots at this scrape succeeded, else 0",
            scan_ok.clone(),
        );
        Metrics {
            registry,
            started,
            ended,
            running,
            wait,
            hold,
            release,
            leaks,
            orphans,
            refused,
            history,
            locks,
            holders,
            waiters,
            scan_ok,
        }
    }

    pub(super) fn started(&self) {
        self.started.inc();
    }

    pub(super) fn ended(&self, outcome: Outcome) {
        self.ended.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub(super) fn waited(&self, secs: f64) {
        self.wait.observe(secs);
    }

    pub(super) fn held(&self, secs: f64) {
        self.hold.observe(secs);
    }

    pub(super) fn released(&self, secs: f64) {
        self.release.observe(secs);
    }

    pub(super) fn leak(&self) {
        self.leaks.inc();
    }

    pub(super) fn orphan_reaped(&self) {
        self.orphans.inc();
    }

    pub(super) fn refused(&self, reason: Refusal) {
        self.refused.get_or_create(&ReasonLabels { reason }).inc();
    }

    /// The gauges of the daemon's own state, set when scraped.
    pub(super) fn set_daemon(&self, running: usize, history: usize) {
        self.running.set(i64::try_from(running).unwrap_or(i64::MAX));
        self.history.set(i64::try_from(history).unwrap_or(i64::MAX));
    }

    /// The lock gauges from a scan of the `[status] roots` (`None`: the
    /// scan failed; the gauges read 0 and `status_scan_success` 0).
    pub(super) fn set_locks(&self, locks: Option<&[LockStatus]>) {
        let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        for s in LOCK_STATES {
            let n = locks.map_or(0, |l| l.iter().filter(|x| x.state == s).count());
            self.locks
                .get_or_create(&StateLabels {
                    state: StateValue(s),
                })
                .set(count(n));
        }
        let holders = locks.map_or(0, |l| l.iter().map(|x| x.holders.len()).sum());
        let waiters = locks.map_or(0, |l| l.iter().map(|x| x.waiters.len()).sum());
        self.holders.set(count(holders));
        self.waiters.set(count(waiters));
        self.scan_ok.set(i64::from(locks.is_some()));
    }

    /// The Prometheus text format (version 0.0.4) of every metric.
    pub(super) fn encode(&self) -> String {
        let mut out = String::with_capacity(8 << 10);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

/// The `Content-Type` of [`Metrics::encode`]'s output.
pub(super) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_units_and_labels_follow_the_conventions() {
        let m = Metrics::new();
        m.started();
        m.ended(Outcome::Timeout);
        m.waited(1.2);
        m.refused(Refusal::Protocol);
        m.set_locks(None);
        let text = m.encode();
        for want in [
            "locksup_attempts_started_total 1\n",
            "locksup_attempts_ended_total{outcome=\"timeout\"} 1\n",
            "locksup_attempts_ended_total{outcome=\"lease-lost\"} 0\n",
            "# TYPE locksup_lock_wait_seconds histogram\n",
            "locksup_lock_wait_seconds_bucket{le=\"2.5\"} 1\n",
            "locksup_lock_wait_seconds_bucket{le=\"1\"} 0\n",
            "locksup_requests_refused_total{reason=\"protocol\"} 1\n",
            "locksup_locks{state=\"orphan\"} 0\n",
            "locksup_status_scan_success 0\n",
            "# TYPE locksup_release_latency_seconds histogram\n",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
    }

    #[test]
    fn event_outcomes_map_onto_the_metric_ones() {
        assert_eq!(Outcome::of_event("exited"), Outcome::Exited);
        assert_eq!(Outcome::of_event("ready-timeout"), Outcome::Watchdog);
        assert_eq!(Outcome::of_event("wait-expired"), Outcome::Conflict);
        assert_eq!(Outcome::of_event("busy"), Outcome::Conflict);
        assert_eq!(Outcome::of_event("lease-lost"), Outcome::LeaseLost);
        assert_eq!(Outcome::of_event("not-found"), Outcome::Failure);
        assert_eq!(Outcome::of_event("whatever"), Outcome::Failure);
    }
}
