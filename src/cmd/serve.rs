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

mod conn;
mod history;
mod http;
mod metrics;
mod observe;
mod state;

use conn::connection;
use state::{Pending, PendingGuard, Shared, State};

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
        .map_err(|e| Error::io(format!("cannot become a child subreaper: {e}")))?;
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
        .map_err(|e| Error::io(format!("socket: {e}")))?;
    let metrics_at = settings.config.serve.metrics.clone();
    let metrics_bound = match &metrics_at {
        Some(at) => {
            let mode = settings
                .config
                .serve
                .socket_mode
                .unwrap_or(DEFAULT_SOCKET_MODE);
            match http::Bound::bind(at, mode) {
                Ok(b) => Some(b),
                Err(e) => {
                    if let Some((path, ino)) = &bound {
                        remove_socket(path, *ino);
                    }
                    return Err(e);
                }
            }
        }
        None => None,
    };
    let history_bound = settings
        .config
        .serve
        .history
        .unwrap_or(history::DEFAULT_BOUND);
    let containment = cgroup::detect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io(format!("cannot start the runtime: {e}")))?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&rt, async move {
        let listener =
            UnixListener::from_std(listener).map_err(|e| Error::io(format!("socket: {e}")))?;
        let where_ = match &bound {
            Some((p, _)) => p.display().to_string(),
            None => "the socket passed by the service manager (fd 3)".to_owned(),
        };
        log::info!("listening on {where_}");
        log::info!("containment: {}", containment.describe());
        if let Some(at) = &metrics_at {
            log::info!("metrics at {at}");
        }
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
            metrics: Rc::new(metrics::Metrics::new()),
            history: history::History::new(history_bound),
        }));
        let mut metrics_cleanup = None;
        if let Some(b) = metrics_bound {
            if let http::Bound::Unix(_, path, ino) = &b {
                metrics_cleanup = Some((path.clone(), *ino));
            }
            tokio::task::spawn_local(http::serve(state.clone(), b));
        }
        let code = run(state.clone(), listener).await;
        if let Some((path, ino)) = &bound {
            remove_socket(path, *ino);
        }
        if let Some((path, ino)) = &metrics_cleanup {
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
        .map_err(|_| Error::io(format!("LISTEN_FDS={fds} is not a number")))?;
    if n < 1 {
        return Ok(None);
    }
    let bad = |what: String| Error::io(format!("socket activation: descriptor 3 {what}"));
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
            .map_err(|e| Error::io(format!("cannot create directory {}: {e}", dir.display())))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => {
                return Err(Error::io(format!(
                    "another daemon is already listening on {shown}"
                )));
            }
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
                log::info!("removing the stale socket {shown}");
                std::fs::remove_file(path).map_err(|e| {
                    Error::io(format!("cannot remove the stale socket {shown}: {e}"))
                })?;
            }
            Err(e) => return Err(Error::io(format!("socket {shown}: {e}"))),
        },
        Ok(_) => {
            return Err(Error::io(format!(
                "{shown} exists and is not a socket; not replacing it"
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("{shown}: {e}"))),
    }
    // The socket is born with its final mode: no moment where it is wider.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(!mode & 0o777));
    let bound = std::os::unix::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.map_err(|e| Error::io(format!("cannot listen on {shown}: {e}")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("cannot set the mode of {shown}: {e}")))?;
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
        // Names are looked up (NSS) with `find`; `what` is "user" or "group".
        let ids = |list: &[PrincipalAt],
                   key: &str,
                   what: &str,
                   find: &dyn Fn(&str) -> nix::Result<Option<u32>>|
         -> Result<HashSet<u32>> {
            list.iter()
                .map(|p| match &p.who {
                    Principal::Id(id) => Ok(*id),
                    Principal::Name(n) => match find(n) {
                        Ok(Some(id)) => Ok(id),
                        Ok(None) => Err(Error::config(format!(
                            "{}: {key}: there is no {what} named '{n}'",
                            p.at
                        ))),
                        Err(e) => Err(Error::config(format!(
                            "{}: {key}: cannot look up {what} '{n}': {e}",
                            p.at
                        ))),
                    },
                })
                .collect()
        };
        let user = |n: &str| nix::unistd::User::from_name(n).map(|u| u.map(|u| u.uid.as_raw()));
        let group = |n: &str| nix::unistd::Group::from_name(n).map(|g| g.map(|g| g.gid.as_raw()));
        let users = |list: &[PrincipalAt], key: &str| ids(list, key, "user", &user);
        let groups = |list: &[PrincipalAt], key: &str| ids(list, key, "group", &group);
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
            .map_err(|e| Error::config(format!("cannot read the configuration: {e}")))?;
        match rx.recv_timeout(CONFIG_READ_TIMEOUT) {
            Ok(loaded) => {
                let _ = thread.join();
                loaded
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(Error::config(format!(
                "reading the configuration{} did not finish within {}",
                path.map_or(String::new(), |p| format!(" {}", p.display())),
                crate::duration::format_duration(CONFIG_READ_TIMEOUT)
            ))),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                Err(Error::config("reading the configuration failed"))
            }
        }
    }
}

impl Settings {
    fn new(loaded: Loaded) -> Result<Settings> {
        let snapshot = Snapshot::new(&loaded.text)
            .map_err(|e| Error::config(format!("cannot keep the configuration in memory: {e}")))?;
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
// The event loop
// ---------------------------------------------------------------------------

async fn run(state: Shared, listener: UnixListener) -> Result<i32> {
    let sig = |k: SignalKind| {
        signal(k).map_err(|e| Error::io(format!("cannot install signal handlers: {e}")))
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
            Err(e) => Err(Error::config(format!("cannot start reading it: {e}"))),
            Ok(rx) => match timeout(CONFIG_READ_TIMEOUT, rx).await {
                Ok(Ok(loaded)) => loaded,
                Ok(Err(_)) => Err(Error::config("reading it failed")),
                Err(_) => Err(Error::config(format!(
                    "reading it did not finish within {}",
                    crate::duration::format_duration(CONFIG_READ_TIMEOUT)
                ))),
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

#[cfg(test)]
mod tests {
    use super::conn::{parse_signal, validate};
    use super::state::RunRequest;
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
