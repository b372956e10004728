//! Time on CLOCK_BOOTTIME, which keeps counting while the machine is
//! suspended (the runtime's clock, CLOCK_MONOTONIC, does not): a lease
//! lapses on the server whether or not this machine was asleep.

use std::time::Duration;

use nix::sys::time::TimeSpec;
use nix::time::{ClockId, clock_gettime};
use tokio::time::Instant;

/// A point on CLOCK_BOOTTIME (time since boot, suspend included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BootTime(Duration);

impl BootTime {
    /// Now.
    pub fn now() -> Self {
        // CLOCK_BOOTTIME exists on every kernel locksup runs on; were it
        // refused, CLOCK_MONOTONIC is the same clock minus suspend.
        let ts = clock_gettime(ClockId::CLOCK_BOOTTIME)
            .or_else(|_| clock_gettime(ClockId::CLOCK_MONOTONIC))
            .unwrap_or_else(|_| TimeSpec::new(0, 0));
        Self(Duration::from(ts))
    }

    /// Time since boot.
    pub fn since_boot(self) -> Duration {
        self.0
    }

    /// `self + d`.
    pub fn plus(self, d: Duration) -> Self {
        Self(self.0.saturating_add(d))
    }

    /// `self − d` (not before boot).
    pub fn minus(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(d))
    }

    /// How long after `earlier` this is (zero if it is not after).
    pub fn since(self, earlier: BootTime) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// The same moment as a runtime instant, for timers: now plus what is
    /// left until then (now if it is past).
    pub fn to_instant(self) -> Instant {
        let now = Instant::now();
        now + self.since(BootTime::now())
    }
}

/// The longest the runtime's timer sleeps before CLOCK_BOOTTIME is read
/// again: after a suspend, a deadline that passed while the machine slept
/// is seen at most this late.
pub const BOOT_POLL: Duration = Duration::from_millis(250);

/// Resolve at `at` on CLOCK_BOOTTIME, or at once if it is past. The
/// runtime's timer does not count suspended time, so it sleeps in steps of
/// at most [`BOOT_POLL`], reading CLOCK_BOOTTIME after each. Cancel-safe.
pub async fn sleep_until(at: BootTime) {
    loop {
        let now = BootTime::now();
        if now >= at {
            return;
        }
        tokio::time::sleep(at.since(now).min(BOOT_POLL)).await;
    }
}
