//! locksup: a lock supervisor. Each attempt runs as a child process that
//! holds an `flock(2)` lock on its session's lock file; the supervisor
//! bounds the attempt's life so the kernel frees the lock on time.
//!
//! # A binary, not a library
//!
//! locksup is a command-line program; this crate is its implementation
//! and offers no API. Supervising an attempt makes the calling process a
//! child subreaper, takes over its signal mask and its SIGCHLD, TERM,
//! INT, HUP, QUIT, USR1, USR2, WINCH and ALRM handling, and reaps every
//! child with `waitpid(-1)`: nothing that lives inside another program
//! can do that. Programs use locksup by running it (`locksup run`), or
//! through `locksup serve` and its protocol (locksup-serve(8), the Node
//! client in `clients/node`).
//!
//! Every module is private. The two public modules below exist only for
//! this crate's own binary ([`entry`]) and its integration tests
//! ([`testing`]); both are hidden from the documentation and may change
//! with any release.
//!
//! The layers, from the top (see `ARCHITECTURE.md`):
//!
//! - `main.rs` parses the command line and dispatches;
//! - `cmd`: one module per subcommand, rendering and orchestration;
//! - `attempt`: one attempt's life (the state machine, the fork/exec
//!   boundary, liveness, sd_notify);
//! - `lock`: the lock model (lock files and metadata, the status model);
//! - `process`: ending process trees (signal sets, the verified tree
//!   walk, pidfd-pinned signalling, grace and final signal);
//! - `sys`: the unsafe system-call helpers, and `procfs`: what the
//!   kernel says through `/proc`;
//! - beside them: `config`, `cli`, `error`, `exit`, `duration`,
//!   `events`, `sdnotify`, `cgroup`, `manpage`, `protocol`,
//!   `paths`, `signal`.

mod attempt;
mod cgroup;
mod cli;
mod cmd;
mod config;
mod duration;
mod error;
mod events;
mod exit;
mod lock;
mod manpage;
mod paths;
mod process;
mod procfs;
mod protocol;
mod sdnotify;
mod signal;
#[allow(unsafe_code)]
mod sys;

/// What the `locksup` binary (`src/main.rs`) calls. Not an API.
#[doc(hidden)]
pub mod entry {
    pub use crate::cli::{Cli, Command, clap_help_command, clap_message, completion_script};
    pub use crate::cmd::cancel::main as cancel;
    pub use crate::cmd::client::{
        cancel as cancel_daemon, run as run_daemon, status as status_daemon,
    };
    pub use crate::cmd::run::main as run;
    pub use crate::cmd::serve::main as serve;
    pub use crate::cmd::status::main as status;
    pub use crate::cmd::timeline::main as timeline;
    pub use crate::cmd::watch::main as watch;
    pub use crate::error::Error;
    pub use crate::exit::FAILURE;
    pub use crate::sys::unblock_all_signals;
}

/// Internals the integration tests check directly (parsers, encodings,
/// `/proc` readers). Not an API.
#[doc(hidden)]
pub mod testing {
    /// `attempt::spawn`: the status records and the go-ahead.
    pub mod spawn {
        pub use crate::attempt::spawn::{LATE_LEN, RECORD_LEN, Record, Stage, go_ahead};
    }
    /// `config`: parsing and error positions.
    pub mod config {
        pub use crate::config::{Config, MAX_FILE_MODE, line_col};
    }
    /// `duration`: systemd time spans.
    pub mod duration {
        pub use crate::duration::{Dur, MAX, format_duration, parse};
    }
    /// `error`: the error type.
    pub mod error {
        pub use crate::error::Error;
    }
    /// `lock::lockfile`: metadata and lock file names.
    pub mod lockfile {
        pub use crate::lock::lockfile::{
            METADATA_VERSION, Metadata, file_id, lock_path_for_session,
        };
    }
    /// `lock::etcd`: the etcd backend's core, tested against a real etcd
    /// before `run` uses it.
    pub use crate::lock::etcd;
    /// `manpage`: the rendered locksup(1).
    pub mod manpage {
        pub use crate::manpage::locksup_1;
    }
    /// `procfs`: `/proc` parsers and readers.
    pub mod procfs {
        pub use crate::procfs::{
            LockEntry, LockKind, children, cmdline, descendants, locks_on, parse_fdinfo,
            parse_lock_line, parse_locks, pids,
        };
    }
    /// `signal`: signal names.
    pub mod signal {
        pub use crate::signal::parse;
    }
}
