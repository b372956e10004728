//! `locksup serve`: a daemon that supervises attempts submitted by local
//! clients (locksup-serve(8); README.md, "Running as a service").
//!
//! Each attempt gets its own supervisor: the daemon starts
//! `/proc/self/exe --config SNAPSHOT run [--attempt-id ID] ARGS...` with
//! the client's environment, working directory and standard descriptors
//! (received over the socket), so an attempt has exactly the semantics and
//! exit status of `locksup run` — the same code, not a copy — and attempts
//! never mix: each supervisor is its own subreaper. `SNAPSHOT` is a sealed
//! memfd holding the configuration text the daemon last loaded
//! successfully (read through `/proc/DAEMON/fd/N`), so every attempt uses
//! the daemon's configuration, and a reload that fails changes nothing.
//!
//! The daemon itself:
//!
//! - listens on a Unix socket it creates (mode `[serve] socket_mode`) or
//!   on one passed by systemd (`LISTEN_FDS`, fd 3);
//! - identifies peers with `SO_PEERCRED` / `SO_PEERGROUPS` and lets in the
//!   daemon's own user, root, `[serve] allow_users` and `allow_groups`
//!   (and, to cancel, `admin_groups`);
//! - does all reaping itself with `waitpid(-1)` in one place (no
//!   tokio::process), maps each supervisor's PID to its connection, and
//!   sends the client the exit status;
//! - is a child subreaper: what a killed supervisor leaves behind comes
//!   back to it, and gets TERM, then KILL after the attempt's grace;
//! - cancels an attempt (TERM to its supervisor, whose escalation runs)
//!   when its client goes away without a result;
//! - on TERM or INT stops accepting, sends TERM to every supervisor and
//!   exits 0 once all of them (and everything they left) have ended;
//!   on HUP reads its configuration again;
//! - tells systemd `READY=1`, `STATUS=`, `STOPPING=1`;
//! - with `[serve] reap_orphans`, looks for orphaned locks under `[status]
//!   roots` every `reap_interval` and ends them with `locksup cancel
//!   --only-orphan` (again the same code);
//! - uses a cgroup per attempt when one is delegated ([`crate::cgroup`]).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::signal::Sig;
use crate::sys::{self, Ended, Reaped};
use clap::Parser;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep_until, timeout};

use crate::attempt::spawn::{self, SupervisorSetup};
use crate::cgroup::{self, Containment};
use crate::cli::{Cli, Command as CliCommand, ServeArgs};
use crate::config::{Config, Principal, PrincipalAt};
use crate::error::{Error, Result};
use crate::exit;
use crate::lock::lockfile;
use crate::process::signals::{CANCEL as CANCEL_SIGNALS, PASS as PASS_SIGNALS};
use crate::process::{self, Tree};
use crate::procfs;
use crate::protocol::{Conn, Frame, ProtoError, RUN_FDS};
use crate::sdnotify::Notifier;

/// The socket when neither `--socket`, `[serve] socket` nor
/// `$RUNTIME_DIRECTORY` says otherwise.
pub(crate) const DEFAULT_SOCKET: &str = "/run/locksup/locksup.sock";
/// Mode of the socket file by default.
pub(crate) const DEFAULT_SOCKET_MODE: u32 = 0o660;
/// How often orphans are looked for by default (`reap_orphans`).
pub(crate) const DEFAULT_REAP_INTERVAL: Duration = Duration::from_secs(5);
/// How long a client has to send its whole first frame (its request)
/// after connecting.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long reading the configuration (at start, on SIGHUP) may take: the
/// read runs on a thread of its own; past this, a start fails and a reload
/// is abandoned (the old configuration stays).
const CONFIG_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long writing one frame to a client may take before the client is
/// taken as gone (it does not read).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Between TERM and KILL for processes left behind by a supervisor that
/// died, when they cannot be told apart by attempt (the attempt's own
/// grace period is used when they can).
pub(crate) const STRAY_GRACE: Duration = Duration::from_secs(10);

/// The socket path: `explicit` (`--socket`), else `[serve] socket`, else
/// `$RUNTIME_DIRECTORY/locksup.sock` (its first entry), else
/// [`DEFAULT_SOCKET`].
pub(crate) fn socket_path(explicit: Option<&Path>, config: &Config) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = &config.serve.socket {
        return p.clone();
    }
    // systemd joins several RuntimeDirectory= entries with ':'.
    if let Some(first) = std::env::var_os("RUNTIME_DIRECTORY")
        .and_then(|dirs| std::env::split_paths(&dirs).next())
        .filter(|d| d.is_absolute())
    {
        return first.join("locksup.sock");
    }
    PathBuf::from(DEFAULT_SOCKET)
}

/// `locksup serve`.
pub fn main(args: ServeArgs, config_path: Option<&Path>) -> Result<i32> {
    let settings = Settings::new(Loaded::at_start(config_path)?)?;
    let me = std::process::id() as i32;
    // Still one thread: take the passed socket, then forget the variables
    // so that nothing started from here sees them.
    let activated = activation(me)?;
    sys::unset_env_single_threaded(&["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"]);
    let nofile = raise_nofile();
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| Error::usage(format!("cannot become a child subreaper: {e}")))?;
    let (listener, bound) = match activated {
        Some(fd) => (std::os::unix::net::UnixListener::from(fd), None),
        None => {
            let path = socket_path(args.socket.as_deref(), &settings.config);
            let mode = settings
                .config
                .serve
                .socket_mode
                .unwrap_or(DEFAULT_SOCKET_MODE);
            let l = bind(&path, mode)?;
            let ino = std::fs::metadata(&path).map(|m| (m.dev(), m.ino())).ok();
            (l, Some((path, ino)))
        }
    };
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::usage(format!("socket: {e}")))?;
    let containment = cgroup::detect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::usage(format!("cannot start the runtime: {e}")))?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&rt, async move {
        let listener =
            UnixListener::from_std(listener).map_err(|e| Error::usage(format!("socket: {e}")))?;
        let where_ = match &bound {
            Some((p, _)) => p.display().to_string(),
            None => "the socket passed by the service manager (fd 3)".to_owned(),
        };
        log::info!("listening on {where_}");
        log::info!("containment: {}", containment.describe());
        let state = Rc::new(RefCell::new(State {
            settings: Rc::new(settings),
            config_path: config_path.map(Path::to_path_buf),
            socket: bound.as_ref().map(|(p, _)| p.clone()),
            attempts: HashMap::new(),
            helpers: HashMap::new(),
            strays: HashMap::new(),
            killed: Vec::new(),
            cgroups_left: Vec::new(),
            stopping: false,
            next_cgroup: 0,
            notify: Notifier::from_env(),
            containment,
            nofile,
            me,
            uid: nix::unistd::getuid().as_raw(),
            scanning: false,
            pending: Rc::new(Pending::default()),
            reloading: false,
            reload_again: false,
            config_busy: Arc::new(AtomicBool::new(false)),
            reload_done: Rc::new(tokio::sync::Notify::new()),
        }));
        let code = run(state.clone(), listener).await;
        if let Some((path, ino)) = &bound {
            remove_socket(path, *ino);
        }
        code
    });
    drop(rt);
    result
}

/// The socket systemd passed, when `LISTEN_PID` is us and `LISTEN_FDS` is
/// at least 1: descriptor 3, which must be a listening Unix stream socket.
fn activation(me: i32) -> Result<Option<OwnedFd>> {
    let pid = std::env::var("LISTEN_PID").ok();
    let fds = std::env::var("LISTEN_FDS").ok();
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.trim().parse::<i32>() != Ok(me) {
        return Ok(None);
    }
    let n: i32 = fds
        .trim()
        .parse()
        .map_err(|_| Error::usage(format!("LISTEN_FDS={fds} is not a number")))?;
    if n < 1 {
        return Ok(None);
    }
    let bad = |what: String| Error::usage(format!("socket activation: descriptor 3 {what}"));
    let fd = sys::adopt_inherited_fd(3).map_err(|e| bad(format!("is not open: {e}")))?;
    set_cloexec(&fd).map_err(|e| bad(format!("cannot be made close-on-exec: {e}")))?;
    use nix::sys::socket::{AddressFamily, SockType, SockaddrLike, SockaddrStorage, sockopt};
    let ty = nix::sys::socket::getsockopt(&fd, sockopt::SockType)
        .map_err(|e| bad(format!("is not a socket: {e}")))?;
    let family = nix::sys::socket::getsockname::<SockaddrStorage>(fd.as_raw_fd())
        .ok()
        .and_then(|a| a.family());
    if ty != SockType::Stream || family != Some(AddressFamily::Unix) {
        return Err(bad(
            "is not a Unix stream socket (ListenStream= with a path)".into(),
        ));
    }
    if !nix::sys::socket::getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false) {
        return Err(bad("is not listening".into()));
    }
    // Only one socket is used; others systemd passed are closed.
    for extra in 4..3 + n {
        if let Ok(fd) = sys::adopt_inherited_fd(extra) {
            log::warn!("socket activation: ignoring extra descriptor {extra}");
            drop(fd);
        }
    }
    Ok(Some(fd))
}

fn set_cloexec(fd: &OwnedFd) -> nix::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map(|_| ())
}

/// Create the socket at `path` with `mode`, creating a missing directory
/// (0755). A stale socket (nobody listening) is replaced; a live one, or
/// anything that is not a socket, is an error.
fn bind(path: &Path, mode: u32) -> Result<std::os::unix::net::UnixListener> {
    let shown = path.display();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| Error::usage(format!("cannot create directory {}: {e}", dir.display())))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(Error::usage(format!(
                    "another daemon is already listening on {shown}"
                )));
            }
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                log::info!("removing the stale socket {shown}");
                std::fs::remove_file(path).map_err(|e| {
                    Error::usage(format!("cannot remove the stale socket {shown}: {e}"))
                })?;
            }
            Err(e) => return Err(Error::usage(format!("socket {shown}: {e}"))),
        },
        Ok(_) => {
            return Err(Error::usage(format!(
                "{shown} exists and is not a socket; not replacing it"
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::usage(format!("{shown}: {e}"))),
    }
    // The socket is born with its final mode: no moment where it is wider.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(!mode & 0o777));
    let bound = std::os::unix::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(|e| Error::usage(format!("cannot listen on {shown}: {e}")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::usage(format!("cannot set the mode of {shown}: {e}")))?;
    Ok(listener)
}

/// Remove the socket we created, if it is still ours.
fn remove_socket(path: &Path, ino: Option<(u64, u64)>) {
    let same = std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    if same.is_some() && same == ino {
        let _ = std::fs::remove_file(path);
    }
}

/// Raise the soft limit on open files to the hard one (a connection per
/// attempt); returns the original limits for the supervisors to restore.
fn raise_nofile() -> Option<(u64, u64)> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft >= hard {
        return None;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => Some((soft, hard)),
        Err(e) => {
            log::warn!("cannot raise the open files limit from {soft} to {hard}: {e}");
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Settings: the configuration with names resolved and its snapshot
// ---------------------------------------------------------------------------

struct Settings {
    config: Config,
    snapshot: Rc<Snapshot>,
    allow_uids: HashSet<u32>,
    allow_gids: HashSet<u32>,
    admin_gids: HashSet<u32>,
}

/// A configuration read and checked off the event loop: its text, and the
/// user and group names resolved (which may ask NSS, so may block too).
struct Loaded {
    config: Config,
    text: String,
    allow_uids: HashSet<u32>,
    allow_gids: HashSet<u32>,
    admin_gids: HashSet<u32>,
}

impl Loaded {
    /// Read, parse and resolve: blocking, for a thread of its own. The file
    /// is read as [`Config::load_text`] does for the daemon: regular files
    /// only, never blocking on what the path is.
    fn load(path: Option<&Path>) -> Result<Loaded> {
        let (config, text) = Config::load_text(path)?;
        let users = |list: &[PrincipalAt], key: &str| -> Result<HashSet<u32>> {
            list.iter()
                .map(|p| match &p.who {
                    Principal::Id(id) => Ok(*id),
                    Principal::Name(n) => match nix::unistd::User::from_name(n) {
                        Ok(Some(u)) => Ok(u.uid.as_raw()),
                        Ok(None) => Err(Error::usage(format!(
                            "{}: {key}: there is no user named '{n}'",
                            p.at
                        ))),
                        Err(e) => Err(Error::usage(format!(
                            "{}: {key}: cannot look up user '{n}': {e}",
                            p.at
                        ))),
                    },
                })
                .collect()
        };
        let groups = |list: &[PrincipalAt], key: &str| -> Result<HashSet<u32>> {
            list.iter()
                .map(|p| match &p.who {
                    Principal::Id(id) => Ok(*id),
                    Principal::Name(n) => match nix::unistd::Group::from_name(n) {
                        Ok(Some(g)) => Ok(g.gid.as_raw()),
                        Ok(None) => Err(Error::usage(format!(
                            "{}: {key}: there is no group named '{n}'",
                            p.at
                        ))),
                        Err(e) => Err(Error::usage(format!(
                            "{}: {key}: cannot look up group '{n}': {e}",
                            p.at
                        ))),
                    },
                })
                .collect()
        };
        let s = &config.serve;
        let allow_uids = users(&s.allow_users, "allow_users")?;
        let allow_gids = groups(&s.allow_groups, "allow_groups")?;
        let admin_gids = groups(&s.admin_groups, "admin_groups")?;
        Ok(Loaded {
            config,
            text,
            allow_uids,
            allow_gids,
            admin_gids,
        })
    }

    /// [`Loaded::load`] on a thread of its own, so that nothing the file
    /// system or NSS does can stall the caller: the answer arrives on the
    /// returned channel. `busy` is true until the thread is done (also
    /// when its caller stopped waiting).
    fn spawn(
        path: Option<PathBuf>,
        busy: Arc<AtomicBool>,
    ) -> std::io::Result<oneshot::Receiver<Result<Loaded>>> {
        let (tx, rx) = oneshot::channel();
        busy.store(true, Ordering::SeqCst);
        let spawned = std::thread::Builder::new().name("config".into()).spawn({
            let busy = busy.clone();
            move || {
                let loaded = Loaded::load(path.as_deref());
                busy.store(false, Ordering::SeqCst);
                let _ = tx.send(loaded);
            }
        });
        match spawned {
            Ok(_) => Ok(rx),
            Err(e) => {
                busy.store(false, Ordering::SeqCst);
                Err(e)
            }
        }
    }

    /// The configuration at start: [`Loaded::load`] on a thread, bounded by
    /// [`CONFIG_READ_TIMEOUT`]. The thread has ended when this returns it,
    /// so the process is single-threaded again.
    fn at_start(path: Option<&Path>) -> Result<Loaded> {
        let (tx, rx) = std::sync::mpsc::channel();
        let path_buf = path.map(Path::to_path_buf);
        let thread = std::thread::Builder::new()
            .name("config".into())
            .spawn(move || {
                let _ = tx.send(Loaded::load(path_buf.as_deref()));
            })
            .map_err(|e| Error::usage(format!("cannot read the configuration: {e}")))?;
        match rx.recv_timeout(CONFIG_READ_TIMEOUT) {
            Ok(loaded) => {
                let _ = thread.join();
                loaded
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(Error::usage(format!(
                "reading the configuration{} did not finish within {}",
                path.map_or(String::new(), |p| format!(" {}", p.display())),
                crate::duration::format_duration(CONFIG_READ_TIMEOUT)
            ))),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Err(Error::usage("reading the configuration failed"))
            }
        }
    }
}

impl Settings {
    fn new(loaded: Loaded) -> Result<Settings> {
        let snapshot = Snapshot::new(&loaded.text)
            .map_err(|e| Error::usage(format!("cannot keep the configuration in memory: {e}")))?;
        Ok(Settings {
            config: loaded.config,
            snapshot: Rc::new(snapshot),
            allow_uids: loaded.allow_uids,
            allow_gids: loaded.allow_gids,
            admin_gids: loaded.admin_gids,
        })
    }

    fn reap(&self) -> Option<(Vec<PathBuf>, Duration)> {
        if self.config.serve.reap_orphans != Some(true) || self.config.status.roots.is_empty() {
            return None;
        }
        let every = self
            .config
            .serve
            .reap_interval
            .and_then(crate::duration::Dur::as_limit)
            .unwrap_or(DEFAULT_REAP_INTERVAL)
            .max(Duration::from_millis(10));
        Some((self.config.status.roots.clone(), every))
    }
}

/// The configuration text, sealed in a memfd that supervisors read through
/// `/proc/DAEMON/fd/N`. Kept alive by every attempt started with it.
struct Snapshot {
    _fd: OwnedFd,
    path: PathBuf,
}

impl Snapshot {
    fn new(text: &str) -> std::io::Result<Snapshot> {
        use nix::fcntl::{FcntlArg, SealFlag, fcntl};
        use nix::sys::memfd::{MFdFlags, memfd_create};
        let fd = memfd_create(
            "locksup-config",
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )?;
        let mut f = std::fs::File::from(fd);
        f.write_all(text.as_bytes())?;
        let fd = OwnedFd::from(f);
        fcntl(
            &fd,
            FcntlArg::F_ADD_SEALS(
                SealFlag::F_SEAL_WRITE
                    | SealFlag::F_SEAL_GROW
                    | SealFlag::F_SEAL_SHRINK
                    | SealFlag::F_SEAL_SEAL,
            ),
        )?;
        let path = PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            fd.as_raw_fd()
        ));
        Ok(Snapshot { _fd: fd, path })
    }
}

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

/// A client, as the kernel identified it when it connected.
#[derive(Debug, Clone)]
struct Peer {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    pid: Option<i32>,
}

impl Peer {
    fn in_any(&self, gids: &HashSet<u32>) -> bool {
        gids.contains(&self.gid) || self.groups.iter().any(|g| gids.contains(g))
    }

    fn describe(&self) -> String {
        let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(self.uid))
            .ok()
            .flatten()
            .map(|u| format!("user {} (uid {})", u.name, self.uid))
            .unwrap_or_else(|| format!("uid {}", self.uid));
        match self.pid {
            Some(pid) => format!("{name}, pid {pid}"),
            None => name,
        }
    }
}

/// One running attempt: its supervisor's PID is the key.
struct Attempt {
    uid: u32,
    attempt_id: String,
    lock: PathBuf,
    /// When it was submitted.
    started: Instant,
    /// Its grace period (`None`: infinite), for what it leaves behind.
    grace: Option<Duration>,
    /// Told the exit status when the supervisor has been reaped.
    watchers: Vec<oneshot::Sender<i32>>,
    cgroup: Option<PathBuf>,
    /// The configuration it was started with stays readable.
    _config: Rc<Snapshot>,
}

/// A process left behind by a supervisor that died, re-parented to us.
struct Stray {
    starttime: Option<u64>,
    /// When it gets KILL (the attempt's grace after TERM).
    timing: process::Escalation<Instant>,
}

struct State {
    settings: Rc<Settings>,
    config_path: Option<PathBuf>,
    socket: Option<PathBuf>,
    attempts: HashMap<i32, Attempt>,
    /// `locksup cancel --only-orphan` processes and their lock files.
    helpers: HashMap<i32, PathBuf>,
    strays: HashMap<i32, Stray>,
    /// Attempt cgroups that were still busy when their supervisor ended.
    /// Attempts whose supervisor was killed lately: when, id, grace; to
    /// give what they left behind the attempt's own grace period.
    killed: Vec<(Instant, String, Option<Duration>)>,
    /// With when `cgroup.kill` is due (`None`: never, infinite grace).
    cgroups_left: Vec<(PathBuf, Option<Instant>)>,
    stopping: bool,
    next_cgroup: u64,
    notify: Option<Notifier>,
    containment: Containment,
    nofile: Option<(u64, u64)>,
    me: i32,
    uid: u32,
    /// An orphan scan is under way.
    scanning: bool,
    /// Connections with an attempt whose result is not written yet; the
    /// daemon does not exit before they are done.
    pending: Rc<Pending>,
    /// A reload (SIGHUP) is under way; another HUP meanwhile sets
    /// `reload_again`, for one more when it is done.
    reloading: bool,
    reload_again: bool,
    /// A thread is reading the configuration (it may outlive a reload that
    /// gave up waiting for it; no second one starts while it does).
    config_busy: Arc<AtomicBool>,
    /// Told when a reload is over, for the event loop to look at the new
    /// settings.
    reload_done: Rc<tokio::sync::Notify>,
}

/// Counts connections that still owe their client a result.
#[derive(Default)]
struct Pending {
    count: std::cell::Cell<usize>,
    done: tokio::sync::Notify,
}

/// Held by a connection while it owes a result.
struct PendingGuard(Rc<Pending>);

impl PendingGuard {
    fn new(p: &Rc<Pending>) -> PendingGuard {
        p.count.set(p.count.get() + 1);
        PendingGuard(p.clone())
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.count.set(self.0.count.get().saturating_sub(1));
        self.0.done.notify_waiters();
    }
}

type Shared = Rc<RefCell<State>>;

/// What a validated `run` request becomes.
#[derive(Debug)]
struct RunRequest {
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: PathBuf,
    attempt_id: String,
    /// `--attempt-id` must be added (it was not given).
    add_id: bool,
    lock: PathBuf,
    /// The attempt's grace period, as its supervisor resolves it.
    grace: Option<Duration>,
}

impl State {
    fn may_submit(&self, peer: &Peer) -> bool {
        let s = &self.settings;
        peer.uid == self.uid
            || peer.uid == 0
            || s.allow_uids.contains(&peer.uid)
            || peer.in_any(&s.allow_gids)
    }

    fn is_admin(&self, peer: &Peer) -> bool {
        peer.uid == self.uid || peer.uid == 0 || peer.in_any(&self.settings.admin_gids)
    }

    fn status_line(&self) -> String {
        let n = self.attempts.len();
        let what = if n == 1 { "attempt" } else { "attempts" };
        let mut s = format!(
            "{n} {what} running; containment: {}",
            self.containment.name()
        );
        if self.stopping {
            s.push_str("; stopping");
        }
        s
    }

    fn notify(&self, text: &str) {
        if let Some(n) = &self.notify {
            n.send(text);
        }
    }

    fn update_status(&self) {
        self.notify(&format!("STATUS={}", self.status_line()));
    }

    /// Start an attempt's supervisor.
    fn start(
        &mut self,
        req: RunRequest,
        fds: Vec<OwnedFd>,
        uid: u32,
    ) -> std::result::Result<(i32, String, oneshot::Receiver<i32>), String> {
        if self.stopping {
            return Err("the daemon is shutting down".into());
        }
        if !req.cwd.is_dir() {
            return Err(format!(
                "working directory {} does not exist as the daemon sees it",
                req.cwd.display()
            ));
        }
        let mut fds = fds.into_iter();
        let (Some(stdin), Some(stdout), Some(stderr)) = (fds.next(), fds.next(), fds.next()) else {
            return Err("the client's stdin, stdout and stderr are missing".into());
        };
        let snapshot = self.settings.snapshot.clone();
        let mut cmd = Command::new("/proc/self/exe");
        cmd.arg0("locksup")
            .arg("--config")
            .arg(&snapshot.path)
            .arg("run");
        if req.add_id {
            cmd.arg("--attempt-id").arg(&req.attempt_id);
        }
        cmd.args(&req.args)
            .env_clear()
            .envs(req.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&req.cwd)
            .stdin(Stdio::from(stdin))
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .process_group(0);
        let cgroup = match &self.containment {
            Containment::Cgroup(root) => {
                self.next_cgroup += 1;
                match cgroup::create_attempt(root, self.next_cgroup) {
                    Ok(dir) => Some(dir),
                    Err(e) => {
                        log::warn!(
                            "attempt {}: no cgroup of its own ({e}); process group only",
                            req.attempt_id
                        );
                        None
                    }
                }
            }
            Containment::ProcessGroup(_) => None,
        };
        let cgroup_procs = cgroup.as_ref().and_then(|d| {
            std::ffi::CString::new(d.join("cgroup.procs").into_os_string().into_encoded_bytes())
                .ok()
        });
        spawn::prepare_supervisor(
            &mut cmd,
            SupervisorSetup {
                parent: self.me,
                death_signal: Signal::SIGTERM,
                nofile: self.nofile,
                cgroup_procs,
            },
        );
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                if let Some(d) = &cgroup {
                    let _ = cgroup::remove(d);
                }
                return Err(format!("cannot start the attempt's supervisor: {e}"));
            }
        };
        // Reaped by `reap` (waitpid), never by std.
        let pid = child.id() as i32;
        drop(child);
        drop(cmd); // the client's descriptors: the supervisor has them now
        let (tx, rx) = oneshot::channel();
        log::info!(
            "attempt {} for uid {uid}: supervisor pid {pid}, lock {}",
            req.attempt_id,
            req.lock.display()
        );
        let id = req.attempt_id.clone();
        self.attempts.insert(
            pid,
            Attempt {
                uid,
                attempt_id: req.attempt_id,
                lock: req.lock,
                started: Instant::now(),
                grace: req.grace,
                watchers: vec![tx],
                cgroup,
                _config: snapshot,
            },
        );
        self.update_status();
        Ok((pid, id, rx))
    }

    /// The `attempts` answer: every attempt for an admin, else the peer's.
    fn list(&self, peer: &Peer, is_admin: bool) -> Frame {
        let now = Instant::now();
        let mut attempts: Vec<crate::protocol::AttemptInfo> = self
            .attempts
            .iter()
            .filter(|(_, a)| is_admin || a.uid == peer.uid)
            .map(|(&pid, a)| crate::protocol::AttemptInfo {
                attempt_id: a.attempt_id.clone(),
                attempt_pid: pid,
                uid: a.uid,
                lock: a.lock.display().to_string(),
                running_ms: u64::try_from(now.duration_since(a.started).as_millis())
                    .unwrap_or(u64::MAX),
            })
            .collect();
        attempts.sort_by_key(|a| std::cmp::Reverse(a.running_ms));
        Frame::Attempts {
            containment: self.containment.describe(),
            attempts,
        }
    }

    /// Send `sig` to a supervisor that has not been reaped (so its PID is
    /// still ours), then SIGCONT in case it was stopped.
    fn signal_attempt(&self, pid: i32, sig: Signal) -> bool {
        if !self.attempts.contains_key(&pid) {
            return false;
        }
        let ok = kill(Pid::from_raw(pid), sig).is_ok();
        let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        ok
    }

    /// Reap every child that has ended: supervisors, helpers, strays.
    fn reap(&mut self) {
        loop {
            // Any signal may end a supervisor, real-time ones included.
            let (pid, code, signal) = match sys::reap_one() {
                Ok(Reaped::Running | Reaped::NoChildren) => break,
                Err(e) => {
                    log::warn!("waitpid: {e}");
                    break;
                }
                Ok(Reaped::Child(p, Ended::Exited(c))) => (p, c, None),
                Ok(Reaped::Child(p, Ended::Signaled(n))) => (
                    p,
                    exit::from_signal(n),
                    Some(Sig::from_number(n).map_or_else(|| n.to_string(), |s| s.to_string())),
                ),
            };
            if let Some(a) = self.attempts.remove(&pid) {
                if signal.is_some() {
                    self.killed
                        .push((Instant::now(), a.attempt_id.clone(), a.grace));
                }
                self.attempt_ended(pid, a, code, signal);
            } else if let Some(lock) = self.helpers.remove(&pid) {
                match code {
                    0 => log::info!("orphaned lock {} ended", lock.display()),
                    exit::NOT_HELD => log::debug!("{} is not an orphan any more", lock.display()),
                    c => log::warn!(
                        "ending the orphaned lock {} failed (locksup cancel exit status {c})",
                        lock.display()
                    ),
                }
            } else if self.strays.remove(&pid).is_some() {
                log::debug!("stray pid {pid} reaped");
            }
        }
        self.find_strays();
        self.retry_cgroups();
    }

    /// The grace period for a stray: its attempt's (found by the
    /// `LOCKSUP_ATTEMPT_ID` in its environment, or, failing that, the
    /// longest of the attempts whose supervisor died in the last second),
    /// else [`STRAY_GRACE`].
    fn stray_grace(&mut self, pid: i32) -> Option<Duration> {
        let now = Instant::now();
        self.killed
            .retain(|(t, _, _)| now.duration_since(*t) < Duration::from_secs(600));
        let id = std::fs::read(format!("/proc/{pid}/environ"))
            .ok()
            .and_then(|env| {
                env.split(|b| *b == 0)
                    .find_map(|kv| kv.strip_prefix(b"LOCKSUP_ATTEMPT_ID=").map(<[u8]>::to_vec))
            });
        if let Some(id) = id
            && let Some((_, _, g)) = self.killed.iter().find(|(_, a, _)| a.as_bytes() == id)
        {
            return *g;
        }
        let recent: Vec<Option<Duration>> = self
            .killed
            .iter()
            .filter(|(t, _, _)| now.duration_since(*t) < Duration::from_secs(1))
            .map(|(_, _, g)| *g)
            .collect();
        if recent.is_empty() {
            return Some(STRAY_GRACE);
        }
        if recent.iter().any(Option::is_none) {
            return None;
        }
        recent.into_iter().flatten().max()
    }

    fn attempt_ended(&mut self, pid: i32, a: Attempt, code: i32, signal: Option<String>) {
        match &signal {
            Some(sig) => log::warn!(
                "supervisor pid {pid} of attempt {} was killed by {sig}; ending what it left behind",
                a.attempt_id,
            ),
            None => log::info!("attempt {} ended with status {code}", a.attempt_id),
        }
        if let Some(dir) = a.cgroup {
            // A supervisor that ended by itself leaves nothing behind; one
            // that was killed leaves processes that get TERM now (as
            // strays) and cgroup.kill once the grace is over.
            let kill_at = match signal {
                None => Some(Instant::now()),
                Some(_) => a.grace.map(|g| Instant::now() + g),
            };
            self.cgroups_left.push((dir, kill_at));
        }
        for w in a.watchers {
            let _ = w.send(code);
        }
        self.update_status();
    }

    /// Children of ours that are neither supervisors nor helpers were left
    /// by a supervisor that died: TERM (and CONT) now, KILL after the grace.
    fn find_strays(&mut self) {
        for pid in procfs::children(self.me) {
            if self.attempts.contains_key(&pid)
                || self.helpers.contains_key(&pid)
                || self.strays.contains_key(&pid)
                || !procfs::alive(pid)
            {
                continue;
            }
            let cmd = procfs::cmdline(pid).unwrap_or_default();
            let grace = self.stray_grace(pid);
            let then = match grace {
                Some(g) => format!("KILL in {}", crate::duration::format_duration(g)),
                None => "no KILL (infinite grace)".to_owned(),
            };
            log::warn!(
                "pid {pid} ({cmd}) was left behind by a supervisor that died: sending TERM, {then}"
            );
            process::signal_subtree(&Tree::of_self(), pid, libc::SIGTERM);
            self.strays.insert(
                pid,
                Stray {
                    starttime: procfs::starttime(pid),
                    timing: process::Escalation::new(Instant::now(), grace),
                },
            );
        }
    }

    /// Attempt cgroups whose supervisor has ended: `cgroup.kill` once due
    /// while processes are left, then removal.
    fn retry_cgroups(&mut self) {
        let now = Instant::now();
        self.cgroups_left.retain(|(dir, kill_at)| {
            if kill_at.is_some_and(|t| t <= now)
                && cgroup::populated(dir) == Some(true)
                && let Err(e) = cgroup::kill(dir)
            {
                log::warn!("cgroup.kill in {}: {e}", dir.display());
            }
            match cgroup::remove(dir) {
                Ok(true) => false,
                Ok(false) => true,
                Err(e) => {
                    log::warn!("cannot remove cgroup {}: {e}", dir.display());
                    false
                }
            }
        });
    }

    /// The next time something is due: a stray's KILL, a cgroup.kill.
    fn next_deadline(&self) -> Option<Instant> {
        let strays = self.strays.values().filter_map(|s| s.timing.final_at());
        let cgroups = self.cgroups_left.iter().filter_map(|(_, t)| *t);
        strays.chain(cgroups).min()
    }

    fn kill_due_strays(&mut self) {
        let now = Instant::now();
        for (&pid, s) in self.strays.iter_mut() {
            if s.timing.final_due(now) {
                s.timing.mark_final_sent();
                if procfs::alive(pid) && procfs::starttime(pid) == s.starttime {
                    log::warn!("pid {pid} still there after the grace period: sending KILL");
                    process::signal_subtree(&Tree::of_self(), pid, libc::SIGKILL);
                }
            }
        }
        self.retry_cgroups();
    }

    /// TERM or INT: stop accepting (the caller drops the listener), TERM
    /// to every supervisor. Again: TERM again, which makes each one
    /// escalate at once.
    fn shutdown(&mut self, sig: Signal) {
        if !self.stopping {
            self.stopping = true;
            log::info!(
                "{} received: stopping; ending {} attempt(s)",
                sig.as_str(),
                self.attempts.len()
            );
            self.notify(&format!("STOPPING=1\nSTATUS={}", self.status_line()));
            if let Some(p) = &self.socket {
                let _ = std::fs::remove_file(p);
            }
        } else {
            log::info!("{} received again: escalating every attempt", sig.as_str());
        }
        for &pid in self.attempts.keys() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
        }
    }

    /// A configuration read for a reload is in: take it, or log why not.
    fn reloaded(&mut self, loaded: std::result::Result<Loaded, String>) {
        match loaded.and_then(|l| Settings::new(l).map_err(|e| e.to_string())) {
            Ok(s) => {
                let where_ = s
                    .config
                    .path
                    .as_ref()
                    .map_or("no file (built-in defaults)".to_owned(), |p| {
                        p.display().to_string()
                    });
                if s.config.serve.socket != self.settings.config.serve.socket
                    || s.config.serve.socket_mode != self.settings.config.serve.socket_mode
                {
                    log::warn!("[serve] socket and socket_mode take effect at the next start");
                }
                self.settings = Rc::new(s);
                log::info!("configuration reloaded from {where_}");
            }
            Err(e) => log::warn!("configuration not reloaded, keeping the previous one: {e}"),
        }
        self.update_status();
    }

    /// Start a `locksup cancel --only-orphan` for each orphaned lock not
    /// already being handled.
    fn reap_orphans(&mut self, locks: Vec<PathBuf>) {
        for lock in locks {
            if self.stopping || self.helpers.values().any(|l| *l == lock) {
                continue;
            }
            let mut cmd = Command::new("/proc/self/exe");
            cmd.arg0("locksup")
                .arg("--config")
                .arg(&self.settings.snapshot.path)
                .args(["cancel", "--only-orphan"])
                .arg(&lock)
                .env_clear()
                .envs(std::env::vars_os().filter(|(k, _)| k == "RUST_LOG" || k == "PATH"))
                .stdin(Stdio::null())
                .process_group(0);
            spawn::prepare_supervisor(
                &mut cmd,
                SupervisorSetup {
                    parent: self.me,
                    death_signal: Signal::SIGTERM,
                    nofile: self.nofile,
                    cgroup_procs: None,
                },
            );
            match cmd.spawn() {
                Ok(child) => {
                    let pid = child.id() as i32;
                    drop(child);
                    log::info!(
                        "{} is an orphan: ending it (locksup cancel, pid {pid})",
                        lock.display()
                    );
                    self.helpers.insert(pid, lock);
                }
                Err(e) => log::warn!("cannot start locksup cancel for {}: {e}", lock.display()),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The event loop
// ---------------------------------------------------------------------------

async fn run(state: Shared, listener: UnixListener) -> Result<i32> {
    let sig = |k: SignalKind| {
        signal(k).map_err(|e| Error::usage(format!("cannot install signal handlers: {e}")))
    };
    let mut chld = sig(SignalKind::child())?;
    let mut term = sig(SignalKind::terminate())?;
    let mut int = sig(SignalKind::interrupt())?;
    // A HUP ignored by whoever started us (nohup) stays ignored.
    let mut hup = if sys::signal_is_ignored(Signal::SIGHUP) {
        None
    } else {
        Some(sig(SignalKind::hangup())?)
    };
    let mut listener = Some(listener);
    let reload_done = state.borrow().reload_done.clone();
    {
        let s = state.borrow();
        s.notify(&format!("READY=1\nSTATUS={}", s.status_line()));
    }
    let mut next_scan = state
        .borrow()
        .settings
        .reap()
        .map(|(_, every)| Instant::now() + every);
    loop {
        {
            let s = state.borrow();
            if s.stopping && s.attempts.is_empty() && s.helpers.is_empty() && s.strays.is_empty() {
                break;
            }
        }
        let stray_due = state.borrow().next_deadline();
        let due = match (stray_due, next_scan) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        tokio::select! {
            accepted = async {
                match &listener {
                    Some(l) => l.accept().await,
                    None => std::future::pending().await,
                }
            } => match accepted {
                Ok((stream, _)) => {
                    tokio::task::spawn_local(connection(state.clone(), stream));
                }
                Err(e) => {
                    log::warn!("accept: {e}");
                    // Out of descriptors, most likely: let attempts end.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = chld.recv() => state.borrow_mut().reap(),
            _ = term.recv() => {
                listener = None;
                next_scan = None;
                state.borrow_mut().shutdown(Signal::SIGTERM);
            }
            _ = int.recv() => {
                listener = None;
                next_scan = None;
                state.borrow_mut().shutdown(Signal::SIGINT);
            }
            _ = async {
                match hup.as_mut() {
                    Some(h) => h.recv().await,
                    None => std::future::pending().await,
                }
            } => start_reload(&state),
            _ = reload_done.notified() => {
                if !state.borrow().stopping {
                    next_scan = state.borrow().settings.reap().map(|(_, every)| Instant::now() + every);
                }
            }
            _ = async {
                match due {
                    Some(t) => sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                state.borrow_mut().kill_due_strays();
                if next_scan.is_some_and(|t| t <= Instant::now()) {
                    let reap = state.borrow().settings.reap();
                    next_scan = reap.as_ref().map(|(_, every)| Instant::now() + *every);
                    if let Some((roots, _)) = reap {
                        scan_for_orphans(state.clone(), roots);
                    }
                }
            }
        }
    }
    state.borrow_mut().retry_cgroups();
    // Let every client read its attempt's result.
    let pending = state.borrow().pending.clone();
    let _ = timeout(Duration::from_secs(5), async {
        while pending.count.get() > 0 {
            let done = pending.done.notified();
            if pending.count.get() == 0 {
                break;
            }
            done.await;
        }
    })
    .await;
    log::info!("every attempt has ended; exiting");
    Ok(exit::SUCCESS)
}

/// SIGHUP: read the configuration again on a thread of its own, so that
/// the event loop never waits for a file (or NSS); the result is taken in
/// when it comes, within [`CONFIG_READ_TIMEOUT`], or the reload is given up
/// with one line and the old configuration stays.
fn start_reload(state: &Shared) {
    let (path, busy) = {
        let mut s = state.borrow_mut();
        if s.reloading {
            s.reload_again = true;
            return;
        }
        if s.config_busy.load(Ordering::SeqCst) {
            log::warn!(
                "configuration not reloaded, keeping the previous one: an earlier read of it \
                 has not finished after more than {}",
                crate::duration::format_duration(CONFIG_READ_TIMEOUT)
            );
            return;
        }
        s.reloading = true;
        (s.config_path.clone(), s.config_busy.clone())
    };
    let state = state.clone();
    tokio::task::spawn_local(async move {
        let result = match Loaded::spawn(path, busy) {
            Err(e) => Err(format!("cannot start reading it: {e}")),
            Ok(rx) => match timeout(CONFIG_READ_TIMEOUT, rx).await {
                Ok(Ok(loaded)) => loaded.map_err(|e| e.to_string()),
                Ok(Err(_)) => Err("reading it failed".to_owned()),
                Err(_) => Err(format!(
                    "reading it did not finish within {}",
                    crate::duration::format_duration(CONFIG_READ_TIMEOUT)
                )),
            },
        };
        let again = {
            let mut s = state.borrow_mut();
            s.reloaded(result);
            s.reloading = false;
            std::mem::take(&mut s.reload_again)
        };
        state.borrow().reload_done.notify_one();
        if again {
            start_reload(&state);
        }
    });
}

/// Look for orphaned locks under `roots` on a blocking thread (a scan
/// reads /proc), then end them from the main thread.
fn scan_for_orphans(state: Shared, roots: Vec<PathBuf>) {
    if std::mem::replace(&mut state.borrow_mut().scanning, true) {
        return;
    }
    tokio::task::spawn_local(async move {
        let found = tokio::task::spawn_blocking(move || {
            let paths: Vec<(PathBuf, bool)> = roots.into_iter().map(|r| (r, false)).collect();
            crate::lock::status::snapshot(&paths).map(|locks| {
                locks
                    .into_iter()
                    .filter(|l| l.state == crate::lock::status::State::Orphan)
                    .map(|l| l.file.path)
                    .collect::<Vec<_>>()
            })
        })
        .await;
        let mut s = state.borrow_mut();
        s.scanning = false;
        match found {
            Ok(Ok(locks)) => s.reap_orphans(locks),
            Ok(Err(e)) => log::warn!("looking for orphans: {e}"),
            Err(e) => log::warn!("looking for orphans: {e}"),
        }
    });
}

// ---------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------

/// Write `frame`, within [`WRITE_TIMEOUT`]; false when the client could
/// not be written to (gone, or not reading).
async fn send(conn: &mut Conn, frame: &Frame) -> bool {
    match timeout(WRITE_TIMEOUT, conn.write(frame)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            log::debug!("cannot answer a client: {e}");
            false
        }
        Err(_) => {
            log::info!(
                "a client did not read its {} frame within {}; dropping it",
                frame.kind(),
                crate::duration::format_duration(WRITE_TIMEOUT)
            );
            false
        }
    }
}

async fn reply(conn: &mut Conn, frame: Frame) {
    send(conn, &frame).await;
}

async fn refuse(conn: &mut Conn, code: i32, message: String) {
    // Nothing the client sent is kept while it is answered.
    conn.close_fds();
    log::info!("refused: {message}");
    reply(conn, Frame::error(code, message)).await;
}

fn proto_message(e: &ProtoError) -> String {
    e.to_string()
}

async fn connection(state: Shared, stream: UnixStream) {
    let peer = match stream.peer_cred() {
        Ok(c) => Peer {
            uid: c.uid(),
            gid: c.gid(),
            groups: sys::peer_groups(stream.as_fd()).unwrap_or_default(),
            pid: c.pid(),
        },
        Err(e) => {
            log::warn!("cannot identify a client (SO_PEERCRED): {e}");
            return;
        }
    };
    let mut conn = Conn::new(stream, RUN_FDS);
    let (may_submit, is_admin, socket) = {
        let s = state.borrow();
        (s.may_submit(&peer), s.is_admin(&peer), s.socket.clone())
    };
    if !may_submit && !is_admin {
        let at = socket.map_or(String::new(), |p| format!(" at {}", p.display()));
        refuse(
            &mut conn,
            exit::FAILURE,
            format!(
                "{} may not use locksup serve{at} (see [serve] allow_users and allow_groups)",
                peer.describe()
            ),
        )
        .await;
        return;
    }
    let first = match timeout(REQUEST_TIMEOUT, conn.read()).await {
        Err(_) => {
            refuse(
                &mut conn,
                exit::FAILURE,
                format!(
                    "no request within {} of connecting",
                    crate::duration::format_duration(REQUEST_TIMEOUT)
                ),
            )
            .await;
            return;
        }
        Ok(Ok(Some(f))) => f,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            refuse(&mut conn, exit::FAILURE, proto_message(&e)).await;
            return;
        }
    };
    // Descriptors come with a run request and nothing else.
    if !matches!(first, Frame::Run { .. }) && conn.close_fds() > 0 {
        let msg = format!(
            "unexpected descriptors with a {} frame: only a run request carries any",
            first.kind()
        );
        refuse(&mut conn, exit::FAILURE, msg).await;
        return;
    }
    match first {
        Frame::Run { args, env, cwd } => {
            if !may_submit {
                let msg = format!(
                    "{} may not submit attempts (see [serve] allow_users and allow_groups)",
                    peer.describe()
                );
                refuse(&mut conn, exit::FAILURE, msg).await;
                return;
            }
            run_attempt(state, conn, peer, args, env, cwd).await;
        }
        Frame::CancelAttempt {
            target,
            cwd,
            signal,
            wait,
        } => cancel_attempt(state, conn, peer, is_admin, target, cwd, signal, wait).await,
        Frame::List {} => {
            let frame = state.borrow().list(&peer, is_admin);
            reply(&mut conn, frame).await;
        }
        other => {
            let msg = format!(
                "expected a run, cancel_attempt or list frame first, not {}",
                other.kind()
            );
            refuse(&mut conn, exit::FAILURE, msg).await;
        }
    }
}

fn parse_signal(name: &str, allowed: &[Signal]) -> std::result::Result<Signal, String> {
    let sig = crate::signal::parse(name).map_err(|e| format!("bad signal: {e}"))?;
    let Some(std_sig) = sig.standard().filter(|s| allowed.contains(s)) else {
        let names: Vec<&str> = allowed
            .iter()
            .map(|s| s.as_str().trim_start_matches("SIG"))
            .collect();
        return Err(format!(
            "signal {} is not one of {}",
            sig.name(),
            names.join(", ")
        ));
    };
    Ok(std_sig)
}

/// Check a `run` request the way `locksup run` checks its command line.
fn validate(
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: String,
    config: &Config,
) -> std::result::Result<RunRequest, String> {
    let cwd = PathBuf::from(cwd);
    if !cwd.is_absolute() {
        return Err(format!(
            "working directory '{}' is not absolute",
            cwd.display()
        ));
    }
    for (k, v) in &env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(format!("invalid environment variable name or value: {k:?}"));
        }
    }
    if let Some(a) = args.iter().find(|a| a.contains('\0')) {
        return Err(format!("argument {a:?} contains a NUL byte"));
    }
    let argv = ["locksup", "run"]
        .into_iter()
        .map(str::to_owned)
        .chain(args.iter().cloned());
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            return Err(match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    "help and version are not available through the daemon".to_owned()
                }
                _ => crate::error::clap_message(&e),
            });
        }
    };
    let CliCommand::Run(run) = cli.command else {
        return Err("not a run request".into());
    };
    if cli.config.is_some() {
        return Err(
            "--config is not accepted through the daemon: its own configuration applies".into(),
        );
    }
    if run.daemon || run.socket.is_some() {
        return Err("--daemon and --socket are options of the client, not of the attempt".into());
    }
    if let Some(ev) = &run.events
        && ev.as_os_str() != "-"
    {
        return Err(format!(
            "--events {} is not accepted through the daemon (the file would be written as \
             the daemon's user); use --events - for the client's stderr",
            ev.display()
        ));
    }
    let abs = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            cwd.join(p)
        }
    };
    let lock = match (&run.lock, &run.session) {
        (Some(l), _) => abs(l),
        (None, Some(s)) => lockfile::lock_path_for_session(&abs(s)),
        (None, None) => return Err("one of --session or --lock is required".into()),
    };
    let subject = run.session.as_deref().map_or_else(|| lock.clone(), abs);
    let grace = run
        .grace
        .or(config.defaults_for(&subject).grace)
        .unwrap_or(crate::duration::Dur::Finite(crate::cmd::run::DEFAULT_GRACE))
        .finite();
    let (attempt_id, add_id) = match run.attempt_id {
        Some(id) => (id, false),
        None => (crate::cmd::run::new_attempt_id(), true),
    };
    Ok(RunRequest {
        args,
        env,
        cwd,
        attempt_id,
        add_id,
        lock,
        grace,
    })
}

async fn run_attempt(
    state: Shared,
    mut conn: Conn,
    peer: Peer,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: String,
) {
    let fds = conn.take_fds();
    if fds.len() != RUN_FDS {
        let msg = format!(
            "a run request must carry the client's stdin, stdout and stderr (SCM_RIGHTS); \
             it carried {} descriptor(s)",
            fds.len()
        );
        drop(fds);
        refuse(&mut conn, exit::FAILURE, msg).await;
        return;
    }
    let config = state.borrow().settings.clone();
    let req = match validate(args, env, cwd, &config.config) {
        Ok(r) => r,
        Err(msg) => {
            drop(fds);
            refuse(&mut conn, exit::FAILURE, msg).await;
            return;
        }
    };
    // A client that has gone (it gave up waiting for a daemon that was
    // stopped or busy, or it was killed) gets no attempt: nobody would
    // see its result, and its command must not run unasked.
    if conn.peer_closed() {
        log::info!(
            "{} went away before its attempt started; not starting it",
            peer.describe()
        );
        return;
    }
    let _owed = PendingGuard::new(&state.borrow().pending);
    let started = state.borrow_mut().start(req, fds, peer.uid);
    let (pid, attempt_id, mut done) = match started {
        Ok(x) => x,
        Err(msg) => {
            refuse(&mut conn, exit::FAILURE, msg).await;
            return;
        }
    };
    let gone = |why: &str| {
        if state.borrow().signal_attempt(pid, Signal::SIGTERM) {
            log::info!("attempt {attempt_id}: {why}: sent TERM to its supervisor");
        }
    };
    if !send(
        &mut conn,
        &Frame::Started {
            attempt_pid: pid,
            attempt_id: attempt_id.clone(),
        },
    )
    .await
    {
        gone("the client went away");
        return;
    }
    loop {
        tokio::select! {
            code = &mut done => {
                let code = code.unwrap_or(exit::FAILURE);
                reply(&mut conn, Frame::Exit { code }).await;
                return;
            }
            frame = conn.read() => match frame {
                Ok(Some(Frame::Cancel { signal })) => match parse_signal(&signal, &CANCEL_SIGNALS) {
                    Ok(sig) => {
                        log::info!("attempt {attempt_id}: the client asks to cancel with {}", sig.as_str());
                        state.borrow().signal_attempt(pid, sig);
                        // The client gives up on a daemon that does not
                        // answer this (locksup-serve(8)).
                        if !send(&mut conn, &Frame::Signalled { signal }).await {
                            gone("the client went away");
                            return;
                        }
                    }
                    Err(msg) => {
                        refuse(&mut conn, exit::FAILURE, msg).await;
                        gone("the client sent a bad cancel frame");
                        return;
                    }
                },
                Ok(Some(Frame::Signal { signal })) => match parse_signal(&signal, &PASS_SIGNALS) {
                    Ok(sig) => {
                        state.borrow().signal_attempt(pid, sig);
                    }
                    Err(msg) => {
                        refuse(&mut conn, exit::FAILURE, msg).await;
                        gone("the client sent a bad signal frame");
                        return;
                    }
                },
                Ok(Some(other)) => {
                    let msg = format!("unexpected {} frame while the attempt runs", other.kind());
                    refuse(&mut conn, exit::FAILURE, msg).await;
                    gone("the client broke the protocol");
                    return;
                }
                Ok(None) => {
                    gone("the client went away");
                    return;
                }
                Err(ProtoError::Io(_)) | Err(ProtoError::Truncated) => {
                    gone("the client went away");
                    return;
                }
                Err(e) => {
                    refuse(&mut conn, exit::FAILURE, proto_message(&e)).await;
                    gone("the client broke the protocol");
                    return;
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn cancel_attempt(
    state: Shared,
    mut conn: Conn,
    peer: Peer,
    is_admin: bool,
    target: String,
    cwd: String,
    signal: String,
    wait: bool,
) {
    let _owed = wait.then(|| PendingGuard::new(&state.borrow().pending));
    let sig = match parse_signal(&signal, &CANCEL_SIGNALS) {
        Ok(s) => s,
        Err(msg) => return refuse(&mut conn, exit::FAILURE, msg).await,
    };
    let found = {
        let s = state.borrow();
        find_attempt(&s, &target, Path::new(&cwd))
    };
    let pid = match found {
        Ok(pid) => pid,
        Err((code, msg)) => return refuse(&mut conn, code, msg).await,
    };
    let known = state
        .borrow()
        .attempts
        .get(&pid)
        .map(|a| (a.uid, a.attempt_id.clone()));
    let Some((owner, attempt_id)) = known else {
        let msg = format!("attempt '{target}' has just ended");
        return refuse(&mut conn, exit::TARGET_NOT_FOUND, msg).await;
    };
    if owner != peer.uid && !is_admin {
        let msg = format!(
            "{} may not cancel attempt {attempt_id} of uid {owner} (only its own user and \
             members of [serve] admin_groups may)",
            peer.describe()
        );
        return refuse(&mut conn, exit::NOT_PERMITTED, msg).await;
    }
    let rx = {
        let mut s = state.borrow_mut();
        log::info!(
            "attempt {attempt_id}: {} cancels it with {}",
            peer.describe(),
            sig.as_str()
        );
        s.signal_attempt(pid, sig);
        let (tx, rx) = oneshot::channel();
        if let Some(a) = s.attempts.get_mut(&pid) {
            a.watchers.push(tx);
        }
        rx
    };
    reply(
        &mut conn,
        Frame::Cancelled {
            attempt_pid: pid,
            attempt_id,
        },
    )
    .await;
    if wait {
        let code = rx.await.unwrap_or(exit::FAILURE);
        reply(&mut conn, Frame::Exit { code }).await;
    }
}

/// The attempt `target` names: its attempt id, its lock file or its
/// session file. Among several attempts on one lock, the one holding it
/// (per the lock's metadata).
fn find_attempt(s: &State, target: &str, cwd: &Path) -> std::result::Result<i32, (i32, String)> {
    if let Some((&pid, _)) = s.attempts.iter().find(|(_, a)| a.attempt_id == target) {
        return Ok(pid);
    }
    let p = Path::new(target);
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    };
    let as_session = lockfile::lock_path_for_session(&p);
    let on: Vec<i32> = s
        .attempts
        .iter()
        .filter(|(_, a)| a.lock == p || a.lock == as_session)
        .map(|(&pid, _)| pid)
        .collect();
    match on.as_slice() {
        [] => Err((
            exit::TARGET_NOT_FOUND,
            format!("no attempt of this daemon has id, lock or session '{target}'"),
        )),
        [one] => Ok(*one),
        many => {
            // The one holding the lock, per the lock file's metadata.
            let holder = [&p, &as_session].into_iter().find_map(|lock| {
                let m = std::fs::metadata(lock).ok()?;
                let id = procfs::FileId::new(m.dev(), m.ino());
                let meta = crate::lock::status::read_metadata(lock, id)?;
                many.contains(&meta.supervisor_pid)
                    .then_some(meta.supervisor_pid)
            });
            holder.ok_or((
                exit::FAILURE,
                format!(
                    "{} attempts use '{target}' and none of them holds its lock now; name \
                     one by its attempt id",
                    many.len()
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(args: &[&str]) -> std::result::Result<RunRequest, String> {
        validate(
            args.iter().map(|s| s.to_string()).collect(),
            vec![("PATH".into(), "/bin".into())],
            "/work".into(),
            &Config::default(),
        )
    }

    #[test]
    fn run_requests_are_checked_like_the_command_line() {
        let r = v(&["--session", "s.jsonl", "--", "true"]).unwrap();
        assert_eq!(r.lock, PathBuf::from("/work/s.jsonl.lock"));
        assert!(r.add_id);
        let r = v(&["--lock", "/l", "--attempt-id", "x", "--", "true"]).unwrap();
        assert_eq!(r.lock, PathBuf::from("/l"));
        assert_eq!((r.attempt_id.as_str(), r.add_id), ("x", false));
        assert_eq!(r.grace, Some(crate::cmd::run::DEFAULT_GRACE));
        let r = v(&["--lock", "/l", "-g", "infinity", "--", "true"]).unwrap();
        assert_eq!(r.grace, None);
        assert!(v(&["--events", "-", "--lock", "/l", "--", "true"]).is_ok());

        let e = v(&["--lock", "/l"]).unwrap_err();
        assert!(e.contains("COMMAND"), "{e}");
        let e = v(&["--timeout", "x", "--lock", "/l", "--", "true"]).unwrap_err();
        assert!(e.contains("invalid value 'x'"), "{e}");
        assert!(!e.contains('\n'));
        let e = v(&["--config", "/c", "--lock", "/l", "--", "true"]).unwrap_err();
        assert!(e.contains("--config is not accepted"), "{e}");
        let e = v(&["--events", "/tmp/e", "--lock", "/l", "--", "true"]).unwrap_err();
        assert!(e.contains("--events - for the client's stderr"), "{e}");
        let e = v(&["--daemon", "--lock", "/l", "--", "true"]).unwrap_err();
        assert!(e.contains("options of the client"), "{e}");
        let e = v(&["--help"]).unwrap_err();
        assert!(e.contains("not available"), "{e}");
        let e = validate(vec![], vec![], "rel".into(), &Config::default()).unwrap_err();
        assert!(e.contains("not absolute"), "{e}");
        let e = validate(
            vec!["--lock".into(), "/l".into(), "--".into(), "true".into()],
            vec![("A=B".into(), "c".into())],
            "/".into(),
            &Config::default(),
        )
        .unwrap_err();
        assert!(e.contains("environment"), "{e}");
    }

    #[test]
    fn signals_are_limited_to_their_kind() {
        assert_eq!(parse_signal("term", &CANCEL_SIGNALS), Ok(Signal::SIGTERM));
        assert_eq!(
            parse_signal("SIGQUIT", &CANCEL_SIGNALS),
            Ok(Signal::SIGQUIT)
        );
        assert!(
            parse_signal("KILL", &CANCEL_SIGNALS)
                .unwrap_err()
                .contains("not one of TERM, INT, HUP, QUIT")
        );
        assert!(parse_signal("USR1", &CANCEL_SIGNALS).is_err());
        assert_eq!(parse_signal("USR1", &PASS_SIGNALS), Ok(Signal::SIGUSR1));
        assert!(parse_signal("nope", &PASS_SIGNALS).is_err());
    }

    #[test]
    fn socket_path_order() {
        let mut c = Config::default();
        assert_eq!(
            socket_path(Some(Path::new("/x.sock")), &c),
            PathBuf::from("/x.sock")
        );
        c.serve.socket = Some("/cfg.sock".into());
        assert_eq!(socket_path(None, &c), PathBuf::from("/cfg.sock"));
    }

    #[test]
    fn config_snapshot_is_readable_and_sealed() {
        let s = Snapshot::new("[run]\ntimeout = 5\n").unwrap();
        assert_eq!(
            std::fs::read_to_string(&s.path).unwrap(),
            "[run]\ntimeout = 5\n"
        );
        assert!(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&s.path)
                .and_then(|mut f| f.write_all(b"x"))
                .is_err()
        );
    }
}
