//! locksup: a lock supervisor. Each attempt runs as a child process that
//! holds an `flock(2)` lock on its session's lock file; the supervisor
//! bounds the attempt's life so the kernel frees the lock on time.

pub mod cancel;
pub mod cgroup;
pub mod cli;
pub mod client;
pub mod config;
pub mod duration;
pub mod error;
pub mod etcd;
pub mod events;
pub mod exit;
pub mod guardian;
pub mod liveness;
pub mod lockfile;
pub mod manpage;
pub mod notify;
pub mod paths;
pub mod process;
pub mod procfs;
pub mod protocol;
pub mod run;
pub mod sdnotify;
pub mod serve;
pub mod signal;
pub mod spawn;
pub mod status;
pub mod supervise;
pub mod sys;
pub mod timeline;
pub mod watch;
