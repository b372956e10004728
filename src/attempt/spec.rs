//! What one attempt is to be: the command line, the configuration and
//! the built-in defaults, resolved ([`crate::cmd::run`] builds it).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::signal::Sig;

/// How long to wait for a busy lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// Fail at once (`--no-wait`, `--wait 0`).
    No,
    /// Up to this long.
    For(Duration),
    /// As long as it takes (`--wait infinity`).
    Forever,
}

/// Everything one attempt needs, fully resolved (config and CLI merged).
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    /// Absolute path of the lock file.
    pub lock: PathBuf,
    /// Absolute path of the session file, if given.
    pub session: Option<PathBuf>,
    /// Caller's session key.
    pub session_key: Option<String>,
    /// Attempt id.
    pub attempt_id: String,
    /// The command and its arguments (non-empty).
    pub command: Vec<OsString>,
    /// How long the attempt may hold the lock; `None` = no limit.
    pub timeout: Option<Duration>,
    /// Between first and final signal; `None` = never send the final one.
    pub grace: Option<Duration>,
    /// Waiting for a busy lock.
    pub wait: Wait,
    /// First signal.
    pub signal: Sig,
    /// Final signal.
    pub final_signal: Sig,
    /// Shared lock.
    pub shared: bool,
    /// On timeout, exit with the command's status.
    pub preserve_status: bool,
    /// Exit code when the lock is not obtained.
    pub conflict_exit_code: i32,
    /// Mode of a newly created lock file.
    pub file_mode: u32,
    /// End the attempt when no heartbeat came for this long.
    pub watchdog: Option<Duration>,
    /// Hard cap on the deadline, from acquisition, whatever the attempt
    /// asks with `EXTEND_TIMEOUT_USEC`.
    pub max_timeout: Option<Duration>,
    /// End the attempt when it has not sent `READY=1` this long after it
    /// got the lock.
    pub ready_timeout: Option<Duration>,
    /// The command stays in locksup's process group, so it can use the
    /// terminal (`--foreground`).
    pub foreground: bool,
    /// Cancel the attempt when the process that started locksup dies.
    pub die_with_parent: bool,
    /// What to do when the held lock file is removed or replaced.
    pub on_lock_removed: OnLockRemoved,
    /// In which order waiting attempts get the lock.
    pub order: Order,
    /// With `--backend etcd`: the cluster, the lock's name in it, and the
    /// lease's timing (validated against the grace).
    pub etcd: Option<EtcdSpec>,
}

/// Where the lock lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// flock(2) on the lock file: one host (the default).
    #[default]
    Flock,
    /// A lock in etcd (etcd's Mutex protocol) that several hosts share,
    /// taken before the local lock file.
    Etcd,
}

impl std::str::FromStr for Backend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "flock" => Ok(Backend::Flock),
            "etcd" => Ok(Backend::Etcd),
            _ => Err(format!("'{s}' is not one of flock, etcd")),
        }
    }
}

/// The etcd lock of an attempt (`--backend etcd`).
#[derive(Debug, Clone)]
pub(crate) struct EtcdSpec {
    /// How to reach the cluster, the prefix, the TTL.
    pub config: crate::lock::etcd::Config,
    /// NAME: the lock is `<prefix>/<NAME>`.
    pub name: String,
    /// Keep-alive interval, margin and grace, valid for the TTL.
    pub timing: crate::lock::etcd::Timing,
}

/// In which order attempts waiting for the same lock get it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// In the order they started waiting: each waits in the lock's queue
    /// ([`crate::lock::queue`]) before it asks the kernel (the default).
    #[default]
    Fifo,
    /// Whoever the kernel gives it to (plain `flock(2)`; not fair).
    Any,
}

impl std::str::FromStr for Order {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "fifo" => Ok(Order::Fifo),
            "any" => Ok(Order::Any),
            _ => Err(format!("'{s}' is not one of fifo, any")),
        }
    }
}

/// What a supervisor does when the lock file its attempt holds is removed
/// or replaced (another process then locks a different file at that path:
/// the two would not exclude each other).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnLockRemoved {
    /// End the attempt, as a cancel would (the default).
    #[default]
    Cancel,
    /// Say so (event, warning) and let the attempt run.
    Warn,
}

impl std::str::FromStr for OnLockRemoved {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "cancel" => Ok(OnLockRemoved::Cancel),
            "warn" => Ok(OnLockRemoved::Warn),
            _ => Err(format!("'{s}' is not one of cancel, warn")),
        }
    }
}
