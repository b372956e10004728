//! Configuration file (TOML): lookup, `[run]` defaults, `[[policy]]`
//! overrides, `[status]` roots, `[serve]` daemon settings (locksup.toml(5),
//! `config.example.toml`).
//!
//! The file is looked up in this order and the first one found is the only
//! one read (no merging): `--config FILE`, `$LOCKSUP_CONFIG`,
//! `$XDG_CONFIG_HOME/locksup/config.toml` (or `~/.config/locksup/config.toml`),
//! `/etc/locksup/config.toml`. A file named by `--config` or
//! `$LOCKSUP_CONFIG` must exist; the default locations are skipped when
//! absent. Unknown sections and keys are errors, and every error names the
//! file, line and column.

use std::ffi::OsString;
use std::fmt;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use glob::{MatchOptions, Pattern};
use serde::Deserialize;
use serde::de::{self, Visitor};
use toml::Spanned;

use crate::attempt::spec::{Backend, OnLockRemoved, Order};
use crate::duration::Dur;
use crate::error::{Error, Result};
use crate::signal::Sig;

mod raw;

use raw::{RawFile, RawRun};

/// The system-wide configuration file, the last place looked.
pub(crate) const SYSTEM_CONFIG: &str = "/etc/locksup/config.toml";

/// The largest configuration file the daemon reads, in bytes (1 MiB).
pub(crate) const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The largest accepted `file_mode`: permission bits plus setuid, setgid
/// and sticky.
pub const MAX_FILE_MODE: u32 = 0o7777;

/// Values a `[run]` table or a `[[policy]]` entry may set; all optional.
/// `None` means "not set here": the next layer (built-in default, or
/// `[run]` under a policy) applies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunDefaults {
    /// How long the attempt may hold the lock.
    pub timeout: Option<Dur>,
    /// Wait between first and final signal.
    pub grace: Option<Dur>,
    /// How long to wait for the lock.
    pub wait: Option<Dur>,
    /// First signal.
    pub signal: Option<Sig>,
    /// Final signal.
    pub final_signal: Option<Sig>,
    /// Mode of a newly created lock file (at most `0o7777`).
    pub file_mode: Option<u32>,
    /// Exit code when the lock is not obtained (0..=255).
    pub conflict_exit_code: Option<i32>,
    /// End the attempt when no heartbeat came for this long.
    pub watchdog: Option<Dur>,
    /// Hard cap on the deadline, however the attempt extends it.
    pub max_timeout: Option<Dur>,
    /// End the attempt when it is not ready this long after acquisition.
    pub ready_timeout: Option<Dur>,
    /// End the attempt when the process that started locksup dies.
    pub die_with_parent: Option<bool>,
    /// What to do when the held lock file is removed or replaced.
    pub on_lock_removed: Option<OnLockRemoved>,
    /// In which order waiting attempts get the lock.
    pub order: Option<Order>,
    /// Where the lock lives (`flock`, `etcd`).
    pub backend: Option<Backend>,
    /// The lock's name in etcd (`--etcd-key`).
    pub etcd_key: Option<String>,
}

impl RunDefaults {
    /// `self` with every key that `over` sets replaced by `over`'s value.
    pub fn overlay(&self, over: &RunDefaults) -> RunDefaults {
        RunDefaults {
            timeout: over.timeout.or(self.timeout),
            grace: over.grace.or(self.grace),
            wait: over.wait.or(self.wait),
            signal: over.signal.or(self.signal),
            final_signal: over.final_signal.or(self.final_signal),
            file_mode: over.file_mode.or(self.file_mode),
            conflict_exit_code: over.conflict_exit_code.or(self.conflict_exit_code),
            watchdog: over.watchdog.or(self.watchdog),
            max_timeout: over.max_timeout.or(self.max_timeout),
            ready_timeout: over.ready_timeout.or(self.ready_timeout),
            die_with_parent: over.die_with_parent.or(self.die_with_parent),
            on_lock_removed: over.on_lock_removed.or(self.on_lock_removed),
            order: over.order.or(self.order),
            backend: over.backend.or(self.backend),
            etcd_key: over.etcd_key.clone().or_else(|| self.etcd_key.clone()),
        }
    }
}

/// One `[[policy]]` entry: overrides for sessions whose path matches a glob.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The compiled `match` glob (its text: [`Pattern::as_str`]).
    pub pattern: Pattern,
    /// The keys this policy sets; unset keys fall through to `[run]`.
    pub run: RunDefaults,
}

impl Policy {
    /// Whether `subject` (an absolute path) matches this policy's glob.
    /// `*`, `?` and `[...]` never match `/`; `**` spans directories.
    pub fn matches(&self, subject: &Path) -> bool {
        self.pattern.matches_path_with(subject, MATCH_OPTIONS)
    }
}

/// How `[[policy]] match` globs are applied.
const MATCH_OPTIONS: MatchOptions = MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

/// `[status]`: used by `locksup status`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusConfig {
    /// Directories to scan for lock files (absolute paths).
    pub roots: Vec<PathBuf>,
}

/// The largest accepted `socket_mode`: permission bits only.
pub(crate) const MAX_SOCKET_MODE: u32 = 0o777;

/// A user or a group in `[serve]`, as written: a name, or a numeric id
/// (an integer, or a string of digits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A numeric uid or gid.
    Id(u32),
    /// A user or group name, looked up when the daemon (re)loads.
    Name(String),
}

/// A [`Principal`] with where it was written (`FILE:LINE:COL`), for the
/// message when a name does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalAt {
    /// The user or group.
    pub who: Principal,
    /// `FILE:LINE:COL` of the value.
    pub at: String,
}

/// `[serve]`: used by `locksup serve` (and by clients looking for its
/// socket).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServeConfig {
    /// The socket's path (absolute) [default: see `crate::cmd::serve`].
    pub socket: Option<PathBuf>,
    /// Permission bits of the socket file [default 0o660].
    pub socket_mode: Option<u32>,
    /// Users who may submit attempts (besides the daemon's own user).
    pub allow_users: Vec<PrincipalAt>,
    /// Groups whose members may submit attempts.
    pub allow_groups: Vec<PrincipalAt>,
    /// Groups whose members may cancel anybody's attempt.
    pub admin_groups: Vec<PrincipalAt>,
    /// Periodically end orphaned lock holders under `[status] roots`.
    pub reap_orphans: Option<bool>,
    /// How often to look for orphans [default 5s].
    pub reap_interval: Option<Dur>,
    /// Where to serve `/metrics` [default: nowhere].
    pub metrics: Option<MetricsEndpoint>,
    /// How many finished attempts the daemon remembers [default 1000].
    pub history: Option<usize>,
}

/// The largest accepted `[serve] history`.
pub(crate) const MAX_HISTORY: usize = 100_000;

/// `[serve] metrics`: a TCP address (`127.0.0.1:9187`, `[::1]:9187`) or a
/// Unix socket (`unix:/run/locksup/metrics.sock`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsEndpoint {
    /// An IP address and a port.
    Tcp(std::net::SocketAddr),
    /// An absolute path for a Unix stream socket.
    Unix(PathBuf),
}

impl MetricsEndpoint {
    /// Parse the key's value; the error is the message without location.
    pub(crate) fn parse(s: &str) -> std::result::Result<MetricsEndpoint, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            let p = PathBuf::from(path);
            if !p.is_absolute() {
                return Err(format!(
                    "metrics '{s}': the socket after unix: must be an absolute path"
                ));
            }
            return Ok(MetricsEndpoint::Unix(p));
        }
        s.parse().map(MetricsEndpoint::Tcp).map_err(|_| {
            format!(
                "metrics '{s}' is neither ADDRESS:PORT (an IP address and a port, e.g. \
                 127.0.0.1:9187) nor unix:/absolute/path"
            )
        })
    }
}

impl std::fmt::Display for MetricsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetricsEndpoint::Tcp(a) => write!(f, "http://{a}/metrics"),
            MetricsEndpoint::Unix(p) => write!(f, "unix:{} (GET /metrics)", p.display()),
        }
    }
}

/// A loaded configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// `[run]`.
    pub run: RunDefaults,
    /// Where it was read from, if anywhere.
    pub path: Option<PathBuf>,
    /// `[[policy]]` entries, in file order.
    pub policy: Vec<Policy>,
    /// `[status]`.
    pub status: StatusConfig,
    /// `[serve]`.
    pub serve: ServeConfig,
    /// `[etcd]`: the cluster of `--backend etcd`.
    pub etcd: EtcdConfig,
}

/// `[etcd]`: where the etcd cluster is and how to reach it, with
/// etcdctl's names; every key optional (etcdctl's defaults, then
/// `ETCDCTL_*`, then the command line).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EtcdConfig {
    /// `endpoints`: one or more `host:port` or `http(s)://host:port`.
    pub endpoints: Option<Vec<String>>,
    /// `prefix` [default `/locksup`].
    pub prefix: Option<String>,
    /// `ttl`: lease TTL, whole seconds.
    pub ttl: Option<Dur>,
    /// `cacert`, `cert`, `key`: TLS (PEM files).
    pub cacert: Option<PathBuf>,
    /// Client certificate.
    pub cert: Option<PathBuf>,
    /// Client certificate's key.
    pub key: Option<PathBuf>,
    /// `user`: `NAME` or `NAME:PASSWORD`.
    pub user: Option<String>,
    /// `password`.
    pub password: Option<String>,
    /// `dial_timeout` [default 2s].
    pub dial_timeout: Option<Dur>,
    /// `command_timeout` [default 5s].
    pub command_timeout: Option<Dur>,
}

impl EtcdConfig {
    /// etcdctl's defaults overlaid with these keys (the TTL is left to the
    /// caller).
    pub fn to_etcd_config(&self) -> crate::lock::etcd::Config {
        let mut c = crate::lock::etcd::Config::default();
        if let Some(e) = &self.endpoints {
            c.endpoints.clone_from(e);
        }
        if let Some(p) = &self.prefix {
            c.prefix.clone_from(p);
        }
        c.cacert.clone_from(&self.cacert);
        c.cert.clone_from(&self.cert);
        c.key.clone_from(&self.key);
        c.user.clone_from(&self.user);
        c.password.clone_from(&self.password);
        if let Some(Dur::Finite(d)) = self.dial_timeout {
            c.dial_timeout = d;
        }
        if let Some(Dur::Finite(d)) = self.command_timeout {
            c.command_timeout = d;
        }
        c
    }
}

impl Config {
    /// Find and load the configuration (see the module documentation for
    /// the lookup order). No file at all gives the empty configuration.
    pub fn load(explicit: Option<&Path>) -> Result<Config> {
        Config::load_with(
            explicit,
            &LookupEnv::from_process(),
            Path::new(SYSTEM_CONFIG),
        )
    }

    /// The daemon's load: [`Config::load`], also returning the text the
    /// configuration was parsed from (empty when no file was found), and
    /// reading the file with `read_regular`: a FIFO, device or socket at
    /// the path is an error, never a wait, and so is a file over
    /// `MAX_CONFIG_BYTES`.
    pub fn load_text(explicit: Option<&Path>) -> Result<(Config, String)> {
        Config::load_text_with(
            explicit,
            &LookupEnv::from_process(),
            Path::new(SYSTEM_CONFIG),
            read_regular,
        )
    }

    /// [`Config::load`] with the environment and the system path given.
    pub fn load_with(explicit: Option<&Path>, env: &LookupEnv, system: &Path) -> Result<Config> {
        Config::load_text_with(explicit, env, system, |p| std::fs::read_to_string(p))
            .map(|(c, _)| c)
    }

    fn load_text_with(
        explicit: Option<&Path>,
        env: &LookupEnv,
        system: &Path,
        read: impl Fn(&Path) -> io::Result<String>,
    ) -> Result<(Config, String)> {
        match lookup(explicit, env, system) {
            Lookup::Named { path, source } => {
                let text = read(&path).map_err(|e| {
                    Error::config(format!(
                        "cannot read config file {} (named by {source}): {}",
                        path.display(),
                        io_message(&e)
                    ))
                })?;
                Ok((Config::parse(&text, &path)?, text))
            }
            Lookup::Defaults(paths) => {
                for path in paths {
                    match read(&path) {
                        Ok(text) => return Ok((Config::parse(&text, &path)?, text)),
                        Err(e) if is_absent(&e) => continue,
                        Err(e) => {
                            return Err(Error::config(format!(
                                "cannot read config file {}: {}",
                                path.display(),
                                io_message(&e)
                            )));
                        }
                    }
                }
                Ok((Config::default(), String::new()))
            }
        }
    }

    /// Parse the text of a config file; `path` names it in errors and is
    /// recorded in [`Config::path`].
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let at = |span: Option<Range<usize>>, msg: &str| -> Error {
            let msg = msg.trim();
            match span {
                Some(span) => {
                    let (line, col) = line_col(text, span.start);
                    Error::config(format!("{}:{line}:{col}: {msg}", path.display()))
                }
                None => Error::config(format!("{}: {msg}", path.display())),
            }
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| at(e.span(), e.message()))?;
        let check = |r: RawRun| r.check(text).map_err(|(span, msg)| at(Some(span), &msg));

        let run = check(raw.run)?;
        let mut policy = Vec::with_capacity(raw.policy.len());
        for p in raw.policy {
            let (glob, run) = p.split();
            let span = glob.span();
            let glob = glob.into_inner();
            // Subjects are absolute paths: a relative glob would never match.
            if !glob.starts_with('/') && !glob.starts_with("**") {
                return Err(at(
                    Some(span),
                    &format!(
                        "`match` glob '{glob}' must be absolute (start with / or **), \
                         as session paths are"
                    ),
                ));
            }
            let pattern = Pattern::new(&glob).map_err(|e| {
                at(
                    Some(span.clone()),
                    &format!(
                        "invalid glob '{glob}' in `match`: {} (at character {})",
                        e.msg,
                        e.pos + 1
                    ),
                )
            })?;
            policy.push(Policy {
                pattern,
                run: check(run)?,
            });
        }
        let mut roots = Vec::with_capacity(raw.status.roots.len());
        for root in raw.status.roots {
            let span = root.span();
            let root = PathBuf::from(root.into_inner());
            if !root.is_absolute() {
                return Err(at(
                    Some(span),
                    &format!("status root '{}' must be an absolute path", root.display()),
                ));
            }
            roots.push(root);
        }
        let serve = raw
            .serve
            .check(text, path)
            .map_err(|(span, msg)| at(Some(span), &msg))?;
        let etcd = raw
            .etcd
            .check()
            .map_err(|(span, msg)| at(Some(span), &msg))?;
        Ok(Config {
            run,
            path: Some(path.to_path_buf()),
            policy,
            status: StatusConfig { roots },
            serve,
            etcd,
        })
    }

    /// `[run]` overlaid with the keys set by the first `[[policy]]` whose
    /// `match` glob matches `subject` (an absolute path).
    pub fn defaults_for(&self, subject: &Path) -> RunDefaults {
        match self.policy.iter().find(|p| p.matches(subject)) {
            Some(p) => self.run.overlay(&p.run),
            None => self.run.clone(),
        }
    }
}

/// The environment variables the lookup consults, passed in so that the
/// lookup can be tested without touching the process environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LookupEnv {
    /// `$LOCKSUP_CONFIG`.
    pub locksup_config: Option<OsString>,
    /// `$XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<OsString>,
    /// `$HOME`.
    pub home: Option<OsString>,
}

impl LookupEnv {
    /// The values of this process's environment.
    pub fn from_process() -> Self {
        LookupEnv {
            locksup_config: std::env::var_os("LOCKSUP_CONFIG"),
            xdg_config_home: std::env::var_os("XDG_CONFIG_HOME"),
            home: std::env::var_os("HOME"),
        }
    }
}

/// Where to look for the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// A file the user named; it must exist. `source` says who named it
    /// (`--config` or `$LOCKSUP_CONFIG`), for error messages.
    Named {
        /// The file.
        path: PathBuf,
        /// `"--config"` or `"$LOCKSUP_CONFIG"`.
        source: &'static str,
    },
    /// Default locations, in order; the first that exists is used, and
    /// none existing means no configuration.
    Defaults(Vec<PathBuf>),
}

/// Decide where to look: `explicit` (`--config`), else `$LOCKSUP_CONFIG`
/// when set and non-empty, else the user file (`$XDG_CONFIG_HOME` when
/// absolute, else `$HOME/.config`) followed by `system`.
pub(crate) fn lookup(explicit: Option<&Path>, env: &LookupEnv, system: &Path) -> Lookup {
    if let Some(path) = explicit {
        return Lookup::Named {
            path: path.to_path_buf(),
            source: "--config",
        };
    }
    if let Some(p) = env.locksup_config.as_deref().filter(|p| !p.is_empty()) {
        return Lookup::Named {
            path: PathBuf::from(p),
            source: "$LOCKSUP_CONFIG",
        };
    }
    let absolute = |v: &Option<OsString>| -> Option<PathBuf> {
        v.as_deref()
            .map(Path::new)
            .filter(|p| p.is_absolute())
            .map(Path::to_path_buf)
    };
    let mut paths = Vec::with_capacity(2);
    let user_dir =
        absolute(&env.xdg_config_home).or_else(|| absolute(&env.home).map(|h| h.join(".config")));
    if let Some(dir) = user_dir {
        paths.push(dir.join("locksup").join("config.toml"));
    }
    paths.push(system.to_path_buf());
    Lookup::Defaults(paths)
}

/// Read a configuration file without ever waiting on what the path is:
/// symbolic links are followed (a linked `/etc` file is normal), anything
/// but a regular file is refused before it is opened, the open is
/// non-blocking (a FIFO swapped in meanwhile cannot hang it) and checked
/// again with `fstat`, and at most [`MAX_CONFIG_BYTES`] are read. The
/// daemon still reads on a thread of its own, since a regular file on a
/// hung network or FUSE file system can block too.
pub(crate) fn read_regular(path: &Path) -> io::Result<String> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let regular = |kind: std::fs::FileType| -> io::Result<()> {
        use std::os::unix::fs::FileTypeExt as _;
        let what = if kind.is_file() {
            return Ok(());
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else {
            "of an unknown kind"
        };
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("it is {what}, not a regular file"),
        ))
    };
    regular(std::fs::metadata(path)?.file_type())?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    regular(meta.file_type())?;
    let too_big = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("it is over the limit of {MAX_CONFIG_BYTES} bytes"),
        )
    };
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(too_big());
    }
    let mut text = String::new();
    file.take(MAX_CONFIG_BYTES + 1).read_to_string(&mut text)?;
    if text.len() as u64 > MAX_CONFIG_BYTES {
        return Err(too_big());
    }
    Ok(text)
}

/// A default location that is simply not there (or whose parent is not a
/// directory) is skipped; anything else is an error.
fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

/// An I/O error's text without the ` (os error N)` suffix.
fn io_message(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut off = offset.min(text.len());
    while !text.is_char_boundary(off) {
        off -= 1;
    }
    let before = &text[..off];
    let line = before.matches('\n').count() + 1;
    let start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[start..].chars().count() + 1)
}

#[cfg(test)]
mod tests;
