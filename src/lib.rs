//! locksup: a lock supervisor. Each attempt runs as a child process that
//! holds an `flock(2)` lock on its session's lock file; the supervisor
//! bounds the attempt's life so the kernel frees the lock on time.

pub mod attempt;
pub mod cgroup;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod duration;
pub mod error;
pub mod events;
pub mod exit;
pub mod lock;
pub mod manpage;
pub mod paths;
pub mod process;
pub mod procfs;
pub mod protocol;
pub mod sdnotify;
pub mod signal;
pub mod sys;
