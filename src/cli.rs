//! The command-line interface: the clap definitions, their help texts, and
//! clap's errors made one line ([`clap_message`]). Each subcommand's
//! behaviour lives in its own module under [`crate::cmd`].

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::attempt::spec::{Backend, OnLockRemoved, Order};
use crate::duration::{self, Dur};
use crate::signal::{self, Sig};
use clap::builder::TypedValueParser as _;

const RUN_EXAMPLES: &str = "\
Examples:
  # A gateway attempt on a session transcript: at most 10 minutes holding
  # abc.jsonl.lock, waiting up to 30 s for a previous attempt to finish.
  locksup run --session /srv/sessions/abc.jsonl --timeout 10m --wait 30s -- agent-run abc

  # A cron job that must never overlap itself: skip this run if the last
  # one still holds the lock (exit 75).
  locksup run --lock /run/lock/backup.lock --no-wait --timeout 2h -- /usr/local/bin/backup

  # Watch the lifecycle while trying it out.
  locksup run --session /tmp/demo.jsonl --timeout 2s --verbose -- sleep 60

  # The same attempt, supervised by the locksup serve daemon.
  locksup run --daemon --session /srv/sessions/abc.jsonl --timeout 10m -- agent-run abc

Exit status: the command's own; 124 timed out (or lost the etcd lock);
128+N (137 for KILL) timed out and the final signal was needed; 75 lock
not obtained; 125 locksup failed; 126 not executable; 127 not found;
128+N killed by signal N.";

/// A lock supervisor: run each attempt holding a flock(2) lock on its
/// session's lock file, and end it on time so the lock is always freed.
#[derive(Debug, Parser)]
#[command(name = "locksup", version, max_term_width = 100)]
pub struct Cli {
    /// Read configuration from FILE instead of the default locations.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run COMMAND as a supervised attempt holding the session's lock.
    #[command(after_help = RUN_EXAMPLES)]
    Run(RunArgs),

    /// Show every lock file under PATHs (or the configured roots): who holds
    /// it, since when, until when, and who waits.
    #[command(after_help = STATUS_EXAMPLES)]
    Status(StatusArgs),

    /// Follow the lock files under PATHs (or the configured roots) live,
    /// driven by inotify: a table on a terminal, change events with --json.
    #[command(after_help = WATCH_EXAMPLES)]
    Watch(WatchArgs),

    /// End the attempt holding a lock: signal its supervisor, or, for an
    /// orphan, end the processes holding it.
    #[command(after_help = CANCEL_EXAMPLES)]
    Cancel(CancelArgs),

    /// Supervise attempts submitted by local clients (locksup run
    /// --daemon) on a Unix socket, each with exactly the semantics of
    /// locksup run; a service for systemd (see locksup-serve(8)).
    #[command(after_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),

    /// Draw the attempts of --events files as an SVG timeline: a lane per
    /// lock, a bar per attempt coloured by outcome, signals, leaks.
    #[command(after_help = TIMELINE_HELP)]
    Timeline(TimelineArgs),

    /// Print a shell completion script (bash, zsh or fish) on stdout.
    #[command(after_help = "Example:\n  locksup completions bash > /etc/bash_completion.d/locksup")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
}

const SERVE_EXAMPLES: &str = "\
Each submitted attempt runs under its own locksup run process, started by
the daemon with the client's arguments, environment, working directory and
standard descriptors (passed over the socket), as the daemon's user and
with the daemon's configuration. Who may connect: the daemon's user, root,
[serve] allow_users and allow_groups. TERM or INT: stop accepting, cancel
every attempt (each with its own grace period), exit 0 when all have
ended. HUP: read the configuration again (a bad one is logged and the
previous one kept). Readiness and a status line go to systemd
(sd_notify); systemd's socket activation is used when it passes a socket.

Examples:
  # In the foreground, on a socket of one's own.
  locksup serve --socket /tmp/locksup.sock
  locksup run --daemon --socket /tmp/locksup.sock --session s.jsonl -- agent-run

  # As a service: systemctl enable --now locksup.socket

Exit status: 0 stopped by TERM or INT; 125 configuration, socket or
runtime error.";

/// `locksup serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen on PATH [default: [serve] socket, else
    /// $RUNTIME_DIRECTORY/locksup.sock, else /run/locksup/locksup.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

const CANCEL_EXAMPLES: &str = "\
A held lock of a live attempt: its supervisor gets SIGNAL (then SIGCONT)
and runs its own escalation (first signal, grace, final signal). The
supervisor is pinned with a pidfd and checked against the start time in the
lock's metadata, so a reused PID is never signalled. An orphan (supervisor
gone, or not the recorded process): cancel escalates against the processes
holding the lock itself (SIGNAL and SIGCONT, the grace period, then KILL),
found through /proc/PID/fdinfo and each pinned with a pidfd.

Examples:
  locksup cancel /srv/sessions/abc.jsonl --wait 30s
  locksup cancel 19a8c3f2b51-4f2a9c1e --root /srv/sessions
  locksup cancel /run/lock/backup.lock --force --grace 5s

  locksup cancel --daemon 19a8c3f2b51-4f2a9c1e --wait 1m

Exit status: 0 signalled (with --wait: the attempt no longer holds the
lock, or with --daemon: it ended); 1 TARGET not found; 2 the lock is not
held (with --only-orphan: not an orphan); 3 held by a process that is not
a locksup attempt (use --force); 4 not permitted to signal; 124 --wait
expired with the lock still held; 125 usage or configuration error, or
the daemon could not be reached.";

/// `locksup cancel`.
#[derive(Debug, Args)]
pub struct CancelArgs {
    /// A session file (its lock is TARGET.lock), a lock file, or an attempt
    /// id found under the roots.
    #[arg(value_name = "TARGET")]
    pub target: PathBuf,

    /// Signal to send: to a supervisor, TERM, INT, HUP or QUIT; to the
    /// holders of an orphan, any [default: TERM].
    #[arg(short = 's', long, value_name = "SIG", value_parser = SignalParser, hide_possible_values = true)]
    pub signal: Option<Sig>,

    /// Wait until the attempt no longer holds the lock, at most DUR
    /// (infinity: as long as it takes), and say how long it took.
    #[arg(short = 'w', long, value_name = "DUR", value_parser = duration::parse, allow_hyphen_values = true)]
    pub wait: Option<Dur>,

    /// For an orphan: wait between the signal and KILL [default: the
    /// attempt's recorded grace, else 10s; infinity: never KILL].
    #[arg(short = 'g', long, value_name = "DUR", value_parser = duration::parse, allow_hyphen_values = true)]
    pub grace: Option<Dur>,

    /// Where to look for an attempt id (repeatable) [default: the
    /// configuration's [status] roots].
    #[arg(long, value_name = "DIR")]
    pub root: Vec<PathBuf>,

    /// Also end the holders of a lock taken by another tool (no metadata).
    #[arg(long)]
    pub force: bool,

    /// Act only when the lock is an orphan (nobody supervises it); leave
    /// it alone, with exit status 2, otherwise. For periodic reaping.
    #[arg(long, conflicts_with_all = ["force", "daemon"])]
    pub only_orphan: bool,

    /// Ask the daemon (locksup serve) to cancel one of its attempts:
    /// TARGET is its attempt id, lock file or session file. Permitted for
    /// the attempt's own user and members of [serve] admin_groups.
    #[arg(long, conflicts_with_all = ["root", "force", "grace"])]
    pub daemon: bool,

    /// The daemon's socket [default: [serve] socket, else
    /// $RUNTIME_DIRECTORY/locksup.sock, else /run/locksup/locksup.sock].
    #[arg(long, value_name = "PATH", requires = "daemon")]
    pub socket: Option<PathBuf>,

    #[command(flatten)]
    pub etcd: EtcdTargetArgs,
}

const WATCH_EXAMPLES: &str = "\
On a terminal, a table of the locks that are held, redrawn as they change
and every second (time left ticks). Otherwise one line per change; with
--json one JSON object per line: first {\"event\":\"ready\", \"locks\": [...]}
with every lock held at start, then acquired, released, waiting, overdue,
orphaned and removed events, each with \"path\", \"state\" and \"lock\" (the
status schema).

Examples:
  locksup watch
  locksup watch /srv/sessions --json | jq -c 'select(.event == \"orphaned\")'

Exit status: 0 stopped by INT, TERM or HUP, or the reader went away; 1 a
PATH does not exist; 125 usage, configuration or inotify error (such as the
fs.inotify.max_user_watches limit).";

/// `locksup watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Lock files and directories to follow, recursively [default: the
    /// configuration's [status] roots].
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Print one JSON change event per line.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub etcd: EtcdTargetArgs,
}

const STATUS_EXAMPLES: &str = "\
States: free (nobody holds it), held, overdue (still held past deadline +
grace while its supervisor lives), orphan (held, but its supervisor is gone
or the holders are not its attempt: nobody will end it). Locks taken by
other tools (flock(1)) show as held, without an attempt.

Examples:
  # Every lock under the configured [status] roots.
  locksup status

  # Only the stuck ones under one directory, for a script.
  locksup status /srv/sessions --state orphan,overdue --json

Exit status: 0 done (whatever the locks' states); 1 a PATH does not exist;
125 usage or configuration error.";

/// A lock state, for `--state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateFilter {
    /// Nobody holds it.
    Free,
    /// Held, in time (or by another tool).
    Held,
    /// Held past deadline + grace.
    Overdue,
    /// Held, and nobody will end it.
    Orphan,
}

/// `--backend etcd` for status and cancel: the locks of an etcd cluster.
#[derive(Debug, Args, Default)]
pub struct EtcdTargetArgs {
    /// Look at the etcd cluster instead of lock files: every lock under
    /// the prefix, or the NAMEs given (status, watch), or the holder of
    /// lock NAME (cancel) [default: flock].
    #[arg(
        long,
        value_name = "BACKEND",
        value_parser = clap::builder::PossibleValuesParser::new(["flock", "etcd"])
            .map(|s| s.parse::<Backend>().unwrap_or_default())
    )]
    pub backend: Option<Backend>,

    /// etcd endpoints, comma-separated (also ETCDCTL_ENDPOINTS and the
    /// configuration's [etcd] endpoints) [default: 127.0.0.1:2379].
    #[arg(long, value_name = "URL[,URL]")]
    pub etcd_endpoints: Option<String>,

    /// Prefix of every lock key in etcd [default: /locksup].
    #[arg(long, value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
}

/// `locksup status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Lock files and directories to look at, recursively (every file
    /// ending in .lock) [default: the configuration's [status] roots].
    #[arg(value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Print JSON (a stable schema with a top-level "locks" array).
    #[arg(long)]
    pub json: bool,

    /// Show only locks in these states (repeat or separate with commas).
    #[arg(long, value_name = "STATE", value_enum, value_delimiter = ',')]
    pub state: Vec<StateFilter>,

    /// Show only locks whose attempt was given this --session-key.
    #[arg(long, value_name = "KEY")]
    pub session_key: Option<String>,

    /// Ask the daemon (locksup serve) for the attempts it runs now, and how
    /// they are contained (its own user, root and [serve] admin_groups see
    /// every attempt; others see their own).
    #[arg(long, conflicts_with_all = ["paths", "state", "session_key"])]
    pub daemon: bool,

    /// With --daemon: the attempts that have ended lately instead (the
    /// last [serve] history of them, newest first), with their outcome,
    /// exit status, wait and hold times.
    #[arg(long, requires = "daemon")]
    pub history: bool,

    /// The daemon's socket [default: [serve] socket, else
    /// $RUNTIME_DIRECTORY/locksup.sock, else /run/locksup/locksup.sock].
    #[arg(long, value_name = "PATH", requires = "daemon")]
    pub socket: Option<PathBuf>,

    #[command(flatten)]
    pub etcd: EtcdTargetArgs,
}

/// `locksup timeline`.
#[derive(Debug, Args)]
pub struct TimelineArgs {
    /// Events files written by locksup run --events ("-" or none: stdin).
    #[arg(value_name = "EVENTS")]
    pub events: Vec<PathBuf>,

    /// Write the SVG to FILE instead of stdout.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// The shells `locksup completions` writes a script for: those whose
/// scripts are packaged and tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Shell {
    // No doc comments: they would become per-value help in the manual.
    Bash,
    Zsh,
    Fish,
}

/// The completion script for `shell`.
pub fn completion_script(shell: Shell) -> Vec<u8> {
    use clap::CommandFactory;
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "locksup", &mut out);
    out
}

/// The value parser of SIG options: [`signal::parse`] (names in any case,
/// with or without SIG, and numbers), plus the signal names as possible
/// values, so that shell completion offers them instead of file names.
/// They are not checked against: anything `signal::parse` takes is
/// accepted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SignalParser;

impl clap::builder::TypedValueParser for SignalParser {
    type Value = Sig;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Sig, clap::Error> {
        let parse: fn(&str) -> Result<Sig, String> = signal::parse;
        parse.parse_ref(cmd, arg, value)
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(nix::sys::signal::Signal::iterator().map(|s| {
            let name = s.as_str();
            clap::builder::PossibleValue::new(name.strip_prefix("SIG").unwrap_or(name))
        })))
    }
}

/// `locksup run`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["session", "lock"])))]
pub struct RunArgs {
    /// Session file; the lock file is FILE.lock beside it. The session file
    /// itself is never opened or created.
    #[arg(long, value_name = "FILE")]
    pub session: Option<PathBuf>,

    /// Lock file to use as it is.
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,

    /// How long the attempt may hold the lock, counted from acquisition
    /// [default: 10m; 0 or infinity: no limit].
    #[arg(short = 't', long, value_name = "DUR", value_parser = duration::parse, allow_hyphen_values = true)]
    pub timeout: Option<Dur>,

    /// Wait between the first and the final signal [default: 10s].
    #[arg(short = 'g', long, value_name = "DUR", value_parser = duration::parse, allow_hyphen_values = true)]
    pub grace: Option<Dur>,

    /// How long to wait for a busy lock [default: 60s; 0: don't wait].
    #[arg(short = 'w', long, value_name = "DUR", value_parser = duration::parse, allow_hyphen_values = true)]
    pub wait: Option<Dur>,

    /// Don't wait for a busy lock (same as --wait 0).
    #[arg(short = 'n', long, conflicts_with = "wait")]
    pub no_wait: bool,

    /// First signal sent to the attempt on timeout [default: TERM].
    #[arg(short = 's', long, value_name = "SIG", value_parser = SignalParser, hide_possible_values = true)]
    pub signal: Option<Sig>,

    /// Signal sent to whatever is left after the grace period [default: KILL].
    #[arg(long, value_name = "SIG", value_parser = SignalParser, hide_possible_values = true)]
    pub final_signal: Option<Sig>,

    /// End the attempt when no heartbeat (WATCHDOG=1 on NOTIFY_SOCKET, or a
    /// touch of the lock file) came for DUR; exit codes as for a timeout.
    #[arg(long, value_name = "DUR", value_parser = duration::parse, allow_hyphen_values = true)]
    pub watchdog: Option<Dur>,

    /// Hard cap on the deadline, from acquisition, however the attempt
    /// extends it with EXTEND_TIMEOUT_USEC [default: none].
    #[arg(long, value_name = "DUR", value_parser = duration::parse, allow_hyphen_values = true)]
    pub max_timeout: Option<Dur>,

    /// End the attempt when it has not sent READY=1 within DUR of acquiring
    /// the lock [default: readiness not required].
    #[arg(long, value_name = "DUR", value_parser = duration::parse, allow_hyphen_values = true)]
    pub ready_timeout: Option<Dur>,

    /// Take a shared lock instead of an exclusive one.
    #[arg(long)]
    pub shared: bool,

    /// On timeout, exit with the command's own status instead of 124.
    #[arg(long)]
    pub preserve_status: bool,

    /// Keep the command in locksup's process group, so an interactive
    /// command can read from the terminal; the whole tree is still ended
    /// on time (found through the process tree, not the group).
    #[arg(long)]
    pub foreground: bool,

    /// End the attempt (first signal, grace, final signal) when the
    /// process that started locksup dies.
    #[arg(long)]
    pub die_with_parent: bool,

    /// What to do when the held lock file is removed or replaced:
    /// `cancel` (end the attempt) or `warn` [default: cancel].
    #[arg(
        long,
        value_name = "ACTION",
        value_parser = clap::builder::PossibleValuesParser::new(["cancel", "warn"])
            .map(|s| s.parse::<OnLockRemoved>().unwrap_or_default())
    )]
    pub on_lock_removed: Option<OnLockRemoved>,

    /// In which order waiting attempts get the lock: `fifo` (the order
    /// they started waiting, through the lock's queue) or `any` (as the
    /// kernel hands it out) [default: fifo].
    #[arg(
        long,
        value_name = "ORDER",
        value_parser = clap::builder::PossibleValuesParser::new(["fifo", "any"])
            .map(|s| s.parse::<Order>().unwrap_or_default())
    )]
    pub order: Option<Order>,

    /// Where the lock lives: `flock` (the lock file, one host) or `etcd`
    /// (a lock in etcd that several hosts share, then the lock file)
    /// [default: flock].
    #[arg(
        long,
        value_name = "BACKEND",
        value_parser = clap::builder::PossibleValuesParser::new(["flock", "etcd"])
            .map(|s| s.parse::<Backend>().unwrap_or_default())
    )]
    pub backend: Option<Backend>,

    /// etcd endpoints, comma-separated, as etcdctl takes them (also
    /// ETCDCTL_ENDPOINTS) [default: 127.0.0.1:2379].
    #[arg(long, value_name = "URL[,URL]")]
    pub etcd_endpoints: Option<String>,

    /// The lock's name in etcd: the lock is PREFIX/NAME [default: the
    /// lock file's absolute path without its leading /].
    #[arg(long, value_name = "NAME")]
    pub etcd_key: Option<String>,

    /// Prefix of every lock key in etcd [default: /locksup].
    #[arg(long, value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,

    /// Lease TTL of the etcd lock, whole seconds [default: 10s, or what
    /// the grace needs: 26s for a grace of 10s].
    #[arg(long, value_name = "DUR", value_parser = duration::parse)]
    pub etcd_ttl: Option<Dur>,

    /// Exit code when the lock is not obtained [default: 75].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8))]
    pub conflict_exit_code: Option<u8>,

    /// Attempt id recorded in the lock metadata and events [default: generated].
    #[arg(long, value_name = "ID")]
    pub attempt_id: Option<String>,

    /// Caller's key for the session, recorded in metadata and events.
    #[arg(long, value_name = "KEY")]
    pub session_key: Option<String>,

    /// Append JSON-lines lifecycle events to PATH ("-" for stderr).
    #[arg(long, value_name = "PATH")]
    pub events: Option<PathBuf>,

    /// Print lifecycle lines on stderr.
    #[arg(short, long)]
    pub verbose: bool,

    /// Submit the attempt to the daemon (locksup serve) instead of
    /// supervising it here: same options, same exit status; this
    /// process's stdin, stdout and stderr are the attempt's.
    #[arg(long)]
    pub daemon: bool,

    /// The daemon's socket [default: [serve] socket, else
    /// $RUNTIME_DIRECTORY/locksup.sock, else /run/locksup/locksup.sock].
    #[arg(long, value_name = "PATH", requires = "daemon")]
    pub socket: Option<PathBuf>,

    /// The command to run, with its arguments (after "--").
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// `after_help` of `locksup timeline`.
const TIMELINE_HELP: &str = "\
One lane per lock; one bar per attempt from acquisition to release, with
the CSS class outcome-NAME of its end event (outcome-unknown, open-ended,
without one) and its wait as a thin bar below; marks for the first and
the final signal, the last heartbeat before a watchdog, a leak, a lost
lease. A bar's title gives the attempt id, command, outcome, exit code,
wait and hold times. Crowded lanes are aggregated into 4-pixel columns
that stack the outcomes (see TIMELINE in locksup(1)). Malformed lines are
skipped and counted on stderr.

Examples:
  locksup timeline /var/log/locksup/events.jsonl --output incident.svg
  locksup timeline a.jsonl b.jsonl | rsvg-convert -o incident.png

Exit status: 0 written; 1 no events in the input; 125 usage, read or write
error.";

/// A clap error on one line, without the `error: ` prefix: the first
/// paragraph of clap's message (the error, continued on indented lines),
/// then its suggestions, `(did you mean '--timeout'?)`, and its other tips.
pub fn clap_message(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let text = e.to_string();
    let para: Vec<&str> = text
        .lines()
        .map(str::trim)
        .skip_while(|l| l.is_empty())
        .take_while(|l| !l.is_empty())
        .collect();
    let joined = para.join(" ");
    let mut msg = joined
        .strip_prefix("error: ")
        .unwrap_or(&joined)
        .to_string();
    let mut tips: Vec<String> = Vec::new();
    for kind in [
        ContextKind::SuggestedSubcommand,
        ContextKind::SuggestedArg,
        ContextKind::SuggestedValue,
    ] {
        let names: Vec<String> = match e.get(kind) {
            Some(ContextValue::String(s)) => vec![s.clone()],
            Some(ContextValue::Strings(v)) => v.clone(),
            _ => Vec::new(),
        };
        if !names.is_empty() {
            let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
            tips.push(format!("did you mean {}?", quoted.join(" or ")));
        }
    }
    let suggested = !tips.is_empty();
    if suggested && let Some(short) = msg.strip_suffix(" found") {
        msg = short.to_string();
    }
    if let Some(ContextValue::StyledStrs(more)) = e.get(ContextKind::Suggested) {
        for tip in more.iter().map(ToString::to_string) {
            // "to pass '--timout' as a value, use '-- --timout'" only
            // distracts from a likely misspelling.
            if suggested && tip.starts_with("to pass ") {
                continue;
            }
            tips.push(format!("tip: {tip}"));
        }
    }
    for tip in tips {
        msg.push_str(&format!(" ({tip})"));
    }
    msg
}

/// The command whose `--help` explains an error in the command line
/// `args` (program name first): `locksup run` when a subcommand was named,
/// else `locksup`. The subcommand is the first word that is neither an
/// option nor the value of the global `--config`.
pub fn clap_help_command(args: &[OsString]) -> String {
    use clap::CommandFactory;
    let cmd = Cli::command();
    let mut words = args.iter().skip(1);
    while let Some(w) = words.next() {
        if w == "--config" {
            words.next();
            continue;
        }
        if w.as_encoded_bytes().starts_with(b"-") {
            continue;
        }
        let name = w.to_string_lossy();
        if let Some(sub) = cmd.find_subcommand(name.as_ref()) {
            return format!("locksup {}", sub.get_name());
        }
        break;
    }
    "locksup".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn clap_error(args: &[&str]) -> clap::Error {
        use clap::Parser;
        match Cli::try_parse_from(args) {
            Err(e) => e,
            Ok(c) => panic!("{args:?} parsed: {c:?}"),
        }
    }

    #[test]
    fn clap_errors_keep_the_suggestion_on_one_line() {
        let e = clap_error(&[
            "locksup", "run", "--timout", "5s", "--lock", "l", "--", "true",
        ]);
        assert_eq!(
            clap_message(&e),
            "unexpected argument '--timout' (did you mean '--timeout'?)"
        );
        let e = clap_error(&["locksup", "stauts"]);
        assert_eq!(
            clap_message(&e),
            "unrecognized subcommand 'stauts' (did you mean 'status'?)"
        );
        let e = clap_error(&["locksup", "run", "--lock", "l", "-t", "-1s", "--", "true"]);
        assert!(clap_message(&e).contains("negative duration '-1s'"));
    }

    #[test]
    fn help_command_is_the_subcommand_named() {
        let help = |args: &[&str]| {
            let args: Vec<OsString> = args.iter().map(OsString::from).collect();
            clap_help_command(&args)
        };
        assert_eq!(help(&["locksup", "run", "--timout"]), "locksup run");
        assert_eq!(
            help(&["locksup", "--config", "run", "status"]),
            "locksup status"
        );
        assert_eq!(help(&["locksup", "--config=c", "cancel"]), "locksup cancel");
        assert_eq!(help(&["locksup", "stauts"]), "locksup");
        assert_eq!(help(&["locksup"]), "locksup");
    }
}
