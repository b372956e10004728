//! Configuration file (TOML): lookup, `[run]` defaults, `[[policy]]`
//! overrides, `[status]` roots, `[serve]` daemon settings (DESIGN §6,
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

use crate::duration::Dur;
use crate::error::{Error, Result};
use crate::signal::Sig;
use crate::supervise::OnLockRemoved;

/// The system-wide configuration file, the last place looked.
pub const SYSTEM_CONFIG: &str = "/etc/locksup/config.toml";

/// The largest configuration file the daemon reads, in bytes (1 MiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

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
pub const MAX_SOCKET_MODE: u32 = 0o777;

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
    /// The socket's path (absolute) [default: see `crate::serve`].
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
    /// reading the file with [`read_regular`]: a FIFO, device or socket at
    /// the path is an error, never a wait, and so is a file over
    /// [`MAX_CONFIG_BYTES`].
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
                    Error::usage(format!(
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
                            return Err(Error::usage(format!(
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
                    Error::usage(format!("{}:{line}:{col}: {msg}", path.display()))
                }
                None => Error::usage(format!("{}: {msg}", path.display())),
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
        Ok(Config {
            run,
            path: Some(path.to_path_buf()),
            policy,
            status: StatusConfig { roots },
            serve,
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
pub enum Lookup {
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
pub fn lookup(explicit: Option<&Path>, env: &LookupEnv, system: &Path) -> Lookup {
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
pub fn read_regular(path: &Path) -> io::Result<String> {
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

// ---------------------------------------------------------------------------
// The file as written, before validation.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    run: RawRun,
    #[serde(default)]
    policy: Vec<RawPolicy>,
    #[serde(default)]
    status: RawStatus,
    #[serde(default)]
    serve: RawServe,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRun {
    timeout: Option<CfgDur>,
    grace: Option<CfgDur>,
    wait: Option<CfgDur>,
    signal: Option<CfgSig>,
    final_signal: Option<CfgSig>,
    file_mode: Option<Spanned<RawMode>>,
    conflict_exit_code: Option<Spanned<i64>>,
    watchdog: Option<CfgDur>,
    max_timeout: Option<CfgDur>,
    ready_timeout: Option<CfgDur>,
    die_with_parent: Option<bool>,
    on_lock_removed: Option<Spanned<String>>,
}

/// `[[policy]]`: `match` plus the keys of `[run]`, written out because
/// `#[serde(flatten)]` does not work with `deny_unknown_fields`. Keep the
/// run keys in step with [`RawRun`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    #[serde(rename = "match")]
    pattern: Spanned<String>,
    timeout: Option<CfgDur>,
    grace: Option<CfgDur>,
    wait: Option<CfgDur>,
    signal: Option<CfgSig>,
    final_signal: Option<CfgSig>,
    file_mode: Option<Spanned<RawMode>>,
    conflict_exit_code: Option<Spanned<i64>>,
    watchdog: Option<CfgDur>,
    max_timeout: Option<CfgDur>,
    ready_timeout: Option<CfgDur>,
    die_with_parent: Option<bool>,
    on_lock_removed: Option<Spanned<String>>,
}

impl RawPolicy {
    /// The `match` glob and the run keys.
    fn split(self) -> (Spanned<String>, RawRun) {
        let run = RawRun {
            timeout: self.timeout,
            grace: self.grace,
            wait: self.wait,
            signal: self.signal,
            final_signal: self.final_signal,
            file_mode: self.file_mode,
            conflict_exit_code: self.conflict_exit_code,
            watchdog: self.watchdog,
            max_timeout: self.max_timeout,
            ready_timeout: self.ready_timeout,
            die_with_parent: self.die_with_parent,
            on_lock_removed: self.on_lock_removed,
        };
        (self.pattern, run)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStatus {
    #[serde(default)]
    roots: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServe {
    socket: Option<Spanned<String>>,
    socket_mode: Option<Spanned<RawMode>>,
    #[serde(default)]
    allow_users: Vec<Spanned<RawPrincipal>>,
    #[serde(default)]
    allow_groups: Vec<Spanned<RawPrincipal>>,
    #[serde(default)]
    admin_groups: Vec<Spanned<RawPrincipal>>,
    reap_orphans: Option<bool>,
    reap_interval: Option<CfgDur>,
}

impl RawServe {
    fn check(self, text: &str, path: &Path) -> std::result::Result<ServeConfig, Problem> {
        let socket = match self.socket {
            None => None,
            Some(s) => {
                let span = s.span();
                let p = PathBuf::from(s.into_inner());
                if !p.is_absolute() {
                    return Err((
                        span,
                        format!("socket '{}' must be an absolute path", p.display()),
                    ));
                }
                Some(p)
            }
        };
        let socket_mode = self
            .socket_mode
            .map(|m| octal_mode(m, text, "socket_mode", MAX_SOCKET_MODE))
            .transpose()?;
        let list = |v: Vec<Spanned<RawPrincipal>>, key: &str| {
            v.into_iter()
                .map(|p| principal(p, text, path, key))
                .collect::<std::result::Result<Vec<_>, Problem>>()
        };
        Ok(ServeConfig {
            socket,
            socket_mode,
            allow_users: list(self.allow_users, "allow_users")?,
            allow_groups: list(self.allow_groups, "allow_groups")?,
            admin_groups: list(self.admin_groups, "admin_groups")?,
            reap_orphans: self.reap_orphans,
            reap_interval: self.reap_interval.map(|d| d.0),
        })
    }
}

/// A user or group as written: a string or an integer.
enum RawPrincipal {
    Int(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawPrincipal {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawPrincipal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a user or group name, or a numeric id")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<RawPrincipal, E> {
                Ok(RawPrincipal::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<RawPrincipal, E> {
                Ok(RawPrincipal::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<RawPrincipal, E> {
                Ok(RawPrincipal::Text(v.to_string()))
            }
        }
        de.deserialize_any(V)
    }
}

fn principal(
    p: Spanned<RawPrincipal>,
    text: &str,
    path: &Path,
    key: &str,
) -> std::result::Result<PrincipalAt, Problem> {
    let span = p.span();
    let (line, col) = line_col(text, span.start);
    let at = format!("{}:{line}:{col}", path.display());
    // -1 is "no id" to the kernel: never a real user or group.
    let id = |v: i64| match u32::try_from(v) {
        Ok(id) if id != u32::MAX => Ok(id),
        _ => Err((span.clone(), format!("{key}: {v} is not a valid id"))),
    };
    let who = match p.into_inner() {
        RawPrincipal::Int(v) => Principal::Id(id(v)?),
        RawPrincipal::Text(s) => {
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                Principal::Id(id(s.parse::<i64>().unwrap_or(-1))?)
            } else if s.is_empty()
                || s.contains(|c: char| c.is_whitespace() || c.is_control() || c == ':')
            {
                return Err((span, format!("{key}: '{s}' is not a user or group name")));
            } else {
                Principal::Name(s)
            }
        }
    };
    Ok(PrincipalAt { who, at })
}

/// A duration in the file: a string (`"10m"`) or a number of seconds.
/// Deserialized here rather than through `Dur`'s own impl so that a value
/// of the wrong type gets a message saying what was expected.
struct CfgDur(Dur);

impl<'de> Deserialize<'de> for CfgDur {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> std::result::Result<Self, D::Error> {
        let text = de.deserialize_any(TextVisitor {
            expecting: "a duration such as \"10m\" or a number of seconds",
            floats: true,
        })?;
        crate::duration::parse(&text)
            .map(CfgDur)
            .map_err(de::Error::custom)
    }
}

/// A signal in the file: a name (`"TERM"`) or a number (`15`).
struct CfgSig(Sig);

impl<'de> Deserialize<'de> for CfgSig {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> std::result::Result<Self, D::Error> {
        let text = de.deserialize_any(TextVisitor {
            expecting: "a signal name such as \"TERM\" or a signal number",
            floats: false,
        })?;
        crate::signal::parse(&text)
            .map(CfgSig)
            .map_err(de::Error::custom)
    }
}

/// A string, integer or (if `floats`) float, as text.
struct TextVisitor {
    expecting: &'static str,
    floats: bool,
}

impl Visitor<'_> for TextVisitor {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<String, E> {
        if self.floats && v.is_finite() {
            Ok(format!("{v}"))
        } else {
            Err(de::Error::invalid_type(de::Unexpected::Float(v), &self))
        }
    }
    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<String, E> {
        Ok(v.to_string())
    }
}

/// `file_mode` as written: an integer or a string of octal digits.
enum RawMode {
    Int(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawMode {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawMode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a file mode in octal, such as 0o600 or \"0600\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<RawMode, E> {
                Ok(RawMode::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<RawMode, E> {
                Ok(RawMode::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<RawMode, E> {
                Ok(RawMode::Text(v.to_string()))
            }
        }
        de.deserialize_any(V)
    }
}

type Problem = (Range<usize>, String);

impl RawRun {
    /// Validate the keys serde cannot: `file_mode` and
    /// `conflict_exit_code`. `text` is the whole file, to see how an
    /// integer was written.
    fn check(self, text: &str) -> std::result::Result<RunDefaults, Problem> {
        Ok(RunDefaults {
            timeout: self.timeout.map(|d| d.0),
            grace: self.grace.map(|d| d.0),
            wait: self.wait.map(|d| d.0),
            signal: self.signal.map(|s| s.0),
            final_signal: self.final_signal.map(|s| s.0),
            file_mode: self.file_mode.map(|m| file_mode(m, text)).transpose()?,
            conflict_exit_code: self.conflict_exit_code.map(exit_code).transpose()?,
            watchdog: self.watchdog.map(|d| d.0),
            max_timeout: self.max_timeout.map(|d| d.0),
            ready_timeout: self.ready_timeout.map(|d| d.0),
            die_with_parent: self.die_with_parent,
            on_lock_removed: self.on_lock_removed.map(on_lock_removed).transpose()?,
        })
    }
}

fn file_mode(m: Spanned<RawMode>, text: &str) -> std::result::Result<u32, Problem> {
    octal_mode(m, text, "file_mode", MAX_FILE_MODE)
}

/// An octal mode written as an integer literal or a string of octal
/// digits, at most `max`; `key` names it in messages.
fn octal_mode(
    m: Spanned<RawMode>,
    text: &str,
    key: &str,
    max: u32,
) -> std::result::Result<u32, Problem> {
    let span = m.span();
    let out_of_range = |shown: &str| {
        (
            span.clone(),
            format!("{key} {shown} is out of range (at most 0o{max:o})"),
        )
    };
    match m.into_inner() {
        RawMode::Int(v) => {
            // `file_mode = 600` is decimal 600 (0o1130), never what was
            // meant: insist on an octal (or hex/binary) literal.
            let literal = text.get(span.clone()).unwrap_or("").trim();
            let digits = literal.trim_start_matches(['+', '-']);
            let decimal =
                !digits.starts_with("0o") && !digits.starts_with("0x") && !digits.starts_with("0b");
            if decimal && v != 0 {
                return Err((
                    span,
                    format!(
                        "{key} {literal} is a decimal integer; write it in octal, \
                         as 0o{literal} or \"{literal}\""
                    ),
                ));
            }
            match u32::try_from(v) {
                Ok(mode) if mode <= max => Ok(mode),
                _ if v < 0 => Err((span, format!("{key} {literal} is negative"))),
                _ => Err(out_of_range(literal)),
            }
        }
        RawMode::Text(s) => {
            let t = s.trim();
            let digits = t.strip_prefix("0o").unwrap_or(t);
            if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
                return Err((
                    span,
                    format!("{key} \"{s}\" is not an octal mode such as \"0600\""),
                ));
            }
            match u32::from_str_radix(digits, 8) {
                Ok(mode) if mode <= max => Ok(mode),
                _ => Err(out_of_range(&format!("\"{s}\""))),
            }
        }
    }
}

fn on_lock_removed(v: Spanned<String>) -> std::result::Result<OnLockRemoved, Problem> {
    let span = v.span();
    v.into_inner()
        .parse()
        .map_err(|e| (span, format!("on_lock_removed: {e}")))
}

fn exit_code(c: Spanned<i64>) -> std::result::Result<i32, Problem> {
    let span = c.span();
    let v = c.into_inner();
    match i32::try_from(v) {
        Ok(code) if (0..=255).contains(&code) => Ok(code),
        _ => Err((
            span,
            format!("conflict_exit_code {v} is out of range (0 to 255)"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    use nix::sys::signal::Signal;

    use super::*;

    const EXAMPLE: &str = include_str!("../config.example.toml");

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/etc/locksup/test.toml"))
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(c) => panic!("{text:?} should fail, got {c:?}"),
            Err(e) => {
                assert_eq!(e.code, crate::exit::FAILURE);
                assert!(!e.message.contains('\n'), "{}", e.message);
                e.message
            }
        }
    }

    /// The error is at `line:col` of the test file and mentions `needle`.
    fn err_at(text: &str, line: usize, col: usize, needle: &str) {
        let msg = err(text);
        let at = format!("/etc/locksup/test.toml:{line}:{col}: ");
        assert!(msg.starts_with(&at), "{msg:?} should start with {at:?}");
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
    }

    fn secs(s: u64) -> Option<Dur> {
        Some(Dur::Finite(Duration::from_secs(s)))
    }

    fn sig(s: Signal) -> Option<Sig> {
        Some(Sig::from(s))
    }

    #[test]
    fn full_config() {
        let c = parse(
            r#"
[run]
timeout = "10m"
grace = 1.5
wait = 0
signal = "INT"
final_signal = 9
file_mode = 0o640
conflict_exit_code = 99
watchdog = "30s"
max_timeout = "2h"
ready_timeout = 5

[[policy]]
match = "/srv/a/**"
timeout = "infinity"
signal = "SIGHUP"

[[policy]]
match = "/srv/b/*.json"
wait = "5min 20s"
file_mode = "0600"
conflict_exit_code = 0
grace = "250ms"
final_signal = "QUIT"

[status]
roots = ["/srv/a", "/srv/b"]
"#,
        )
        .unwrap();
        assert_eq!(
            c.run,
            RunDefaults {
                timeout: secs(600),
                grace: Some(Dur::Finite(Duration::from_millis(1500))),
                wait: secs(0),
                signal: sig(Signal::SIGINT),
                final_signal: sig(Signal::SIGKILL),
                file_mode: Some(0o640),
                conflict_exit_code: Some(99),
                watchdog: secs(30),
                max_timeout: secs(7200),
                ready_timeout: secs(5),
                die_with_parent: None,
                on_lock_removed: None,
            }
        );
        assert_eq!(c.policy.len(), 2);
        assert_eq!(c.policy[0].pattern.as_str(), "/srv/a/**");
        assert_eq!(
            c.policy[0].run,
            RunDefaults {
                timeout: Some(Dur::Infinite),
                signal: sig(Signal::SIGHUP),
                ..RunDefaults::default()
            }
        );
        assert_eq!(
            c.policy[1].run,
            RunDefaults {
                wait: secs(320),
                file_mode: Some(0o600),
                conflict_exit_code: Some(0),
                grace: Some(Dur::Finite(Duration::from_millis(250))),
                final_signal: sig(Signal::SIGQUIT),
                ..RunDefaults::default()
            }
        );
        assert_eq!(
            c.status.roots,
            vec![PathBuf::from("/srv/a"), PathBuf::from("/srv/b")]
        );
        assert_eq!(c.path.as_deref(), Some(Path::new("/etc/locksup/test.toml")));
    }

    #[test]
    fn empty_config() {
        for text in ["", "\n\n# only a comment\n", "[run]\n[status]\n"] {
            let c = parse(text).unwrap();
            assert_eq!(c.run, RunDefaults::default());
            assert!(c.policy.is_empty());
            assert_eq!(c.status, StatusConfig::default());
            assert!(c.path.is_some());
        }
    }

    #[test]
    fn unknown_keys_are_errors_with_position() {
        err_at("[run]\ntimeout = 5\nfoo = 1\n", 3, 1, "unknown field `foo`");
        err_at("[run]\n  timout = 5\n", 2, 3, "`timout`");
        err_at(
            "[[policy]]\nmatch = \"/a/*\"\nbar = 2\n",
            3,
            1,
            "unknown field `bar`",
        );
        err_at("[status]\nroot = []\n", 2, 1, "unknown field `root`");
        err_at(
            "[run]\n\n[daemon]\nport = 1\n",
            3,
            2,
            "unknown field `daemon`",
        );
        err_at("[serve]\nport = 1\n", 2, 1, "unknown field `port`");
        err_at("stray = true\n", 1, 1, "unknown field `stray`");
        // A policy needs its glob.
        err_at("[[policy]]\ntimeout = 5\n", 1, 1, "missing field `match`");
        // Plain TOML syntax errors are positioned too.
        err_at("[run]\ntimeout = \n", 2, 11, "");
    }

    #[test]
    fn bad_values_are_errors_with_position() {
        err_at(
            "[run]\ntimeout = \"abc\"\n",
            2,
            11,
            "invalid duration 'abc'",
        );
        err_at("[run]\nwait = \"-5s\"\n", 2, 8, "negative duration");
        err_at("[run]\ngrace = \"5x\"\n", 2, 9, "unknown unit");
        err_at(
            "[[policy]]\nmatch = \"/a\"\ngrace = true\n",
            3,
            9,
            "invalid type: boolean `true`, expected a duration",
        );
        err_at("[run]\nsignal = \"FOO\"\n", 2, 10, "unknown signal 'FOO'");
        err_at("[run]\nsignal = 1.5\n", 2, 10, "expected a signal name");
        err_at("[run]\nsignal = []\n", 2, 10, "expected a signal name");
        err_at("[run]\ntimeout = {}\n", 2, 11, "expected a duration");
        err_at(
            "[run]\nfinal_signal = 99\n",
            2,
            16,
            "invalid signal number '99'",
        );
        err_at(
            "[[policy]]\nmatch = \"/a\"\nsignal = \"NOPE\"\n",
            3,
            10,
            "unknown signal 'NOPE'",
        );
    }

    fn mode(value: &str) -> std::result::Result<Option<u32>, String> {
        parse(&format!("[run]\nfile_mode = {value}\n"))
            .map(|c| c.run.file_mode)
            .map_err(|e| e.message)
    }

    #[test]
    fn file_mode_forms() {
        assert_eq!(mode("0o600"), Ok(Some(0o600)));
        assert_eq!(mode("0o7777"), Ok(Some(0o7777)));
        assert_eq!(mode("0"), Ok(Some(0)));
        assert_eq!(mode("0x180"), Ok(Some(0o600)));
        assert_eq!(mode("\"0600\""), Ok(Some(0o600)));
        assert_eq!(mode("\"600\""), Ok(Some(0o600)));
        assert_eq!(mode("\"0o644\""), Ok(Some(0o644)));
        assert_eq!(mode("\"4755\""), Ok(Some(0o4755)));
        for bad in [
            "0o10000",
            "\"10000\"",
            "\"0800\"",
            "\"\"",
            "\"rw-------\"",
            "\"-600\"",
            "-1",
            "600",
            "true",
            "6.0",
            "99999999999999999",
        ] {
            let msg = mode(bad).expect_err(bad);
            assert!(
                msg.starts_with("/etc/locksup/test.toml:2:13: "),
                "{bad}: {msg}"
            );
        }
        assert!(mode("0o10000").unwrap_err().contains("out of range"));
        assert!(mode("600").unwrap_err().contains("0o600"));
        // Policies validate the same way.
        err_at(
            "[[policy]]\nmatch = \"/a\"\nfile_mode = \"999\"\n",
            3,
            13,
            "file_mode",
        );
    }

    #[test]
    fn conflict_exit_code_range() {
        for (v, want) in [("0", 0), ("75", 75), ("255", 255)] {
            let c = parse(&format!("[run]\nconflict_exit_code = {v}\n")).unwrap();
            assert_eq!(c.run.conflict_exit_code, Some(want));
        }
        for bad in ["256", "-1", "99999999999"] {
            err_at(
                &format!("[run]\nconflict_exit_code = {bad}\n"),
                2,
                22,
                "out of range",
            );
        }
        err_at(
            "[run]\nconflict_exit_code = \"75\"\n",
            2,
            22,
            "invalid type",
        );
        err_at(
            "[[policy]]\nmatch = \"/a\"\nconflict_exit_code = 300\n",
            3,
            22,
            "conflict_exit_code 300",
        );
    }

    #[test]
    fn policy_first_match_wins_and_falls_through() {
        let c = parse(
            r#"
[run]
timeout = "1h"
grace = "5s"
signal = "INT"

[[policy]]
match = "/s/special/*.json"
timeout = "2m"

[[policy]]
match = "/s/**"
timeout = "3m"
wait = 0
"#,
        )
        .unwrap();
        // First policy: only its key changes; the rest comes from [run].
        let d = c.defaults_for(Path::new("/s/special/x.json"));
        assert_eq!(d.timeout, secs(120));
        assert_eq!(d.grace, secs(5));
        assert_eq!(d.signal, sig(Signal::SIGINT));
        assert_eq!(d.wait, None, "the later policy must not be merged in");
        // Second policy.
        let d = c.defaults_for(Path::new("/s/other/y.json"));
        assert_eq!(d.timeout, secs(180));
        assert_eq!(d.wait, secs(0));
        assert_eq!(d.grace, secs(5));
        // No policy: [run] as is.
        assert_eq!(c.defaults_for(Path::new("/elsewhere/z.json")), c.run);
        // No config at all.
        assert_eq!(
            Config::default().defaults_for(Path::new("/a")),
            RunDefaults::default()
        );
    }

    #[test]
    fn globs_star_and_double_star() {
        let c = parse(
            "[[policy]]\nmatch = \"/a/*.json\"\nwait = 1\n\
             [[policy]]\nmatch = \"/b/**/*.json\"\nwait = 2\n\
             [[policy]]\nmatch = \"**/deep/*\"\nwait = 3\n",
        )
        .unwrap();
        let w = |p: &str| c.defaults_for(Path::new(p)).wait;
        assert_eq!(w("/a/x.json"), secs(1));
        assert_eq!(w("/a/sub/x.json"), None, "* must not cross /");
        assert_eq!(w("/a/x.json.lock"), None);
        assert_eq!(w("/b/x.json"), secs(2), "** matches zero directories");
        assert_eq!(w("/b/c/d/e/x.json"), secs(2));
        assert_eq!(w("/z/y/deep/s"), secs(3));
        assert_eq!(w("/z/y/deep/s/t"), None);
    }

    #[test]
    fn bad_globs_and_roots() {
        err_at(
            "[[policy]]\nmatch = \"/a/[\"\n",
            2,
            9,
            "invalid glob '/a/['",
        );
        err_at(
            "\n[[policy]]\n  match = \"/a/***\"\n",
            3,
            11,
            "invalid glob",
        );
        err_at("[[policy]]\nmatch = \"*.json\"\n", 2, 9, "must be absolute");
        err_at("[[policy]]\nmatch = \"\"\n", 2, 9, "must be absolute");
        err_at(
            "[status]\nroots = [\"/ok\", \"rel/dir\"]\n",
            2,
            17,
            "'rel/dir' must be an absolute path",
        );
        err_at("[status]\nroots = \"/one\"\n", 2, 9, "invalid type");
    }

    #[test]
    fn serve_section() {
        let c = parse(
            "[serve]\nsocket = \"/run/x/l.sock\"\nsocket_mode = 0o600\n\
             allow_users = [\"alice\", 1001, \"1002\"]\nallow_groups = [\"agents\"]\n\
             admin_groups = [0]\nreap_orphans = true\nreap_interval = \"250ms\"\n",
        )
        .unwrap();
        let s = &c.serve;
        assert_eq!(s.socket.as_deref(), Some(Path::new("/run/x/l.sock")));
        assert_eq!(s.socket_mode, Some(0o600));
        let who: Vec<&Principal> = s.allow_users.iter().map(|p| &p.who).collect();
        assert_eq!(
            who,
            [
                &Principal::Name("alice".into()),
                &Principal::Id(1001),
                &Principal::Id(1002)
            ]
        );
        assert_eq!(s.allow_users[1].at, "/etc/locksup/test.toml:4:25");
        assert_eq!(s.allow_groups[0].who, Principal::Name("agents".into()));
        assert_eq!(s.admin_groups[0].who, Principal::Id(0));
        assert_eq!(s.reap_orphans, Some(true));
        assert_eq!(
            s.reap_interval,
            Some(Dur::Finite(Duration::from_millis(250)))
        );
        assert_eq!(parse("[serve]\n").unwrap().serve, ServeConfig::default());
    }

    #[test]
    fn serve_bad_values() {
        err_at(
            "[serve]\nsocket = \"rel.sock\"\n",
            2,
            10,
            "must be an absolute path",
        );
        err_at("[serve]\nsocket_mode = 0o1777\n", 2, 15, "at most 0o777");
        err_at("[serve]\nsocket_mode = 660\n", 2, 15, "decimal");
        err_at("[serve]\nallow_users = [-1]\n", 2, 16, "not a valid id");
        err_at(
            "[serve]\nallow_users = [\"4294967295\"]\n",
            2,
            16,
            "not a valid id",
        );
        err_at(
            "[serve]\nallow_groups = [\"a b\"]\n",
            2,
            17,
            "not a user or group name",
        );
        err_at("[serve]\nadmin_groups = [\"\"]\n", 2, 17, "admin_groups");
        err_at("[serve]\nallow_users = [true]\n", 2, 16, "user or group");
        err_at("[serve]\nallow_users = \"alice\"\n", 2, 15, "invalid type");
        err_at("[serve]\nreap_orphans = \"yes\"\n", 2, 16, "invalid type");
        err_at(
            "[serve]\nreap_interval = \"x\"\n",
            2,
            17,
            "invalid duration",
        );
    }

    #[test]
    fn line_and_column() {
        assert_eq!(line_col("abc", 0), (1, 1));
        assert_eq!(line_col("abc\ndef", 5), (2, 2));
        assert_eq!(line_col("a\r\nb", 3), (2, 1));
        // Columns count characters, not bytes.
        assert_eq!(line_col("é = 1", 4), (1, 4));
        // Past the end, or inside a character: clamped.
        assert_eq!(line_col("ab", 99), (1, 3));
        assert_eq!(line_col("é", 1), (1, 1));
        // Through `parse`, with a multi-byte key before the error.
        err_at("[run]\n# ééé\nwait = \"x\"\n", 3, 8, "invalid duration");
    }

    fn env(locksup: Option<&str>, xdg: Option<&str>, home: Option<&str>) -> LookupEnv {
        LookupEnv {
            locksup_config: locksup.map(OsString::from),
            xdg_config_home: xdg.map(OsString::from),
            home: home.map(OsString::from),
        }
    }

    #[test]
    fn lookup_order() {
        let sys = Path::new("/etc/locksup/config.toml");
        let all = env(Some("/env.toml"), Some("/xdg"), Some("/home/u"));
        assert_eq!(
            lookup(Some(Path::new("cli.toml")), &all, sys),
            Lookup::Named {
                path: "cli.toml".into(),
                source: "--config"
            }
        );
        assert_eq!(
            lookup(None, &all, sys),
            Lookup::Named {
                path: "/env.toml".into(),
                source: "$LOCKSUP_CONFIG"
            }
        );
        let defaults = |v: &[&str]| Lookup::Defaults(v.iter().map(PathBuf::from).collect());
        assert_eq!(
            lookup(None, &env(Some(""), Some("/xdg"), Some("/home/u")), sys),
            defaults(&["/xdg/locksup/config.toml", "/etc/locksup/config.toml"])
        );
        assert_eq!(
            lookup(None, &env(None, Some("rel"), Some("/home/u")), sys),
            defaults(&[
                "/home/u/.config/locksup/config.toml",
                "/etc/locksup/config.toml"
            ])
        );
        assert_eq!(
            lookup(None, &env(None, Some(""), Some("/home/u")), sys),
            defaults(&[
                "/home/u/.config/locksup/config.toml",
                "/etc/locksup/config.toml"
            ])
        );
        assert_eq!(
            lookup(None, &env(None, None, None), sys),
            defaults(&["/etc/locksup/config.toml"])
        );
        assert_eq!(
            lookup(None, &env(None, None, Some("")), sys),
            defaults(&["/etc/locksup/config.toml"])
        );
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn load_follows_the_lookup_order_without_merging() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let s = |p: &Path| p.to_str().unwrap().to_string();
        let sys = d.join("etc/locksup/config.toml");
        let home = d.join("home");
        let xdg = d.join("xdg");
        let home_file = home.join(".config/locksup/config.toml");
        let xdg_file = xdg.join("locksup/config.toml");
        let env_file = d.join("env.toml");
        let cli_file = d.join("cli.toml");
        let e = env(Some(&s(&env_file)), Some(&s(&xdg)), Some(&s(&home)));
        let load = |explicit: Option<&Path>, e: &LookupEnv| Config::load_with(explicit, e, &sys);
        let wait = |c: Config| c.run.wait;

        // Nothing anywhere: empty configuration, no path.
        let c = load(None, &env(None, Some(&s(&xdg)), Some(&s(&home)))).unwrap();
        assert_eq!(c, Config::default());

        write(&sys, "[run]\nwait = 1\ngrace = 7\n");
        let c = load(None, &env(None, None, Some(&s(&home)))).unwrap();
        assert_eq!(c.path.as_deref(), Some(sys.as_path()));
        assert_eq!(wait(c), secs(1));

        write(&home_file, "[run]\nwait = 2\n");
        let no_xdg = env(None, None, Some(&s(&home)));
        let c = load(None, &no_xdg).unwrap();
        assert_eq!(c.run.grace, None, "files are not merged");
        assert_eq!(wait(c), secs(2));
        // XDG_CONFIG_HOME set (but empty there) skips ~/.config.
        let c = load(None, &env(None, Some(&s(&xdg)), Some(&s(&home)))).unwrap();
        assert_eq!(wait(c), secs(1));

        write(&xdg_file, "[run]\nwait = 3\n");
        let c = load(None, &env(None, Some(&s(&xdg)), Some(&s(&home)))).unwrap();
        assert_eq!(wait(c), secs(3));

        write(&env_file, "[run]\nwait = 4\n");
        assert_eq!(wait(load(None, &e).unwrap()), secs(4));

        write(&cli_file, "[run]\nwait = 5\n");
        let c = load(Some(&cli_file), &e).unwrap();
        assert_eq!(c.path.as_deref(), Some(cli_file.as_path()));
        assert_eq!(wait(c), secs(5));
    }

    #[test]
    fn named_files_must_exist_defaults_must_be_valid() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let sys = d.join("no/such/system.toml");
        let missing = d.join("missing.toml");
        let ms = missing.to_str().unwrap();

        let e = Config::load_with(Some(&missing), &LookupEnv::default(), &sys).unwrap_err();
        assert_eq!(e.code, crate::exit::FAILURE);
        assert!(e.message.contains(ms), "{}", e.message);
        assert!(e.message.contains("--config"), "{}", e.message);

        let e = Config::load_with(None, &env(Some(ms), None, None), &sys).unwrap_err();
        assert!(e.message.contains(ms), "{}", e.message);
        assert!(e.message.contains("$LOCKSUP_CONFIG"), "{}", e.message);

        // A directory named explicitly is unreadable: an error, too.
        let e = Config::load_with(Some(d), &LookupEnv::default(), &sys).unwrap_err();
        assert!(e.message.contains(d.to_str().unwrap()), "{}", e.message);

        // An existing default file that is invalid is an error naming it.
        let xdg = d.join("xdg");
        let xdg_file = xdg.join("locksup/config.toml");
        write(&xdg_file, "[run]\nbogus = 1\n");
        let xenv = env(None, xdg.to_str(), None);
        let e = Config::load_with(None, &xenv, &sys).unwrap_err();
        assert_eq!(
            e.message,
            format!(
                "{}:2:1: unknown field `bogus`, expected one of `timeout`, `grace`, \
                 `wait`, `signal`, `final_signal`, `file_mode`, `conflict_exit_code`, \
                 `watchdog`, `max_timeout`, `ready_timeout`, `die_with_parent`, \
                 `on_lock_removed`",
                xdg_file.display()
            )
        );
        // ... and one that exists but cannot be read is not skipped.
        std::fs::remove_file(&xdg_file).unwrap();
        std::fs::create_dir(&xdg_file).unwrap();
        let e = Config::load_with(None, &xenv, &sys).unwrap_err();
        assert!(
            e.message.contains(xdg_file.to_str().unwrap()),
            "{}",
            e.message
        );
        // A default path under a regular file is simply absent.
        let file = d.join("plain");
        write(&file, "");
        let c = Config::load_with(None, &env(None, file.to_str(), None), &sys).unwrap();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn the_daemons_reader_takes_regular_files_only_and_never_waits() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let fifo = d.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let real = d.join("real.toml");
        write(&real, "[run]\nwait = 1\n");
        let to_real = d.join("link.toml");
        std::os::unix::fs::symlink(&real, &to_real).unwrap();
        let to_fifo = d.join("link-fifo.toml");
        std::os::unix::fs::symlink(&fifo, &to_fifo).unwrap();
        let big = d.join("big.toml");
        write(&big, &"#".repeat(MAX_CONFIG_BYTES as usize + 1));

        assert_eq!(read_regular(&to_real).unwrap(), "[run]\nwait = 1\n");
        let err = |p: &Path| read_regular(p).unwrap_err().to_string();
        assert_eq!(err(&fifo), "it is a FIFO, not a regular file");
        assert_eq!(err(&to_fifo), "it is a FIFO, not a regular file");
        assert_eq!(err(d), "it is a directory, not a regular file");
        assert_eq!(
            err(Path::new("/dev/null")),
            "it is a character device, not a regular file"
        );
        assert!(err(&big).contains("over the limit of 1048576 bytes"));
        assert!(is_absent(&read_regular(&d.join("none")).unwrap_err()));

        // Through the lookup: named, and at a default location (not
        // skipped: it is there, and wrong).
        let strict = |explicit: Option<&Path>, e: &LookupEnv| {
            Config::load_text_with(explicit, e, &d.join("no-system.toml"), read_regular)
        };
        let e = strict(Some(&fifo), &LookupEnv::default()).unwrap_err();
        assert_eq!(
            e.message,
            format!(
                "cannot read config file {} (named by --config): it is a FIFO, not a regular file",
                fifo.display()
            )
        );
        let xdg = d.join("xdg");
        std::fs::create_dir_all(xdg.join("locksup")).unwrap();
        std::os::unix::fs::symlink(&fifo, xdg.join("locksup/config.toml")).unwrap();
        let e = strict(None, &env(None, xdg.to_str(), None)).unwrap_err();
        assert!(e.message.contains("not a regular file"), "{}", e.message);
        let (c, text) = strict(Some(&to_real), &LookupEnv::default()).unwrap();
        assert_eq!((c.run.wait, text.as_str()), (secs(1), "[run]\nwait = 1\n"));
    }

    /// Section and key names a struct accepts, read back from serde's
    /// "unknown field" message so that the list cannot drift from the
    /// structs.
    fn accepted(section_header: &str, extra: &str) -> BTreeSet<String> {
        let text = format!("{section_header}{extra}zz_not_a_key = 1\n");
        let msg = err(&text);
        let (_, expected) = msg.split_once("expected").expect(&msg);
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    enum Line {
        Section(String),
        Key(String),
    }

    /// A line of the example as a section header or `key =` line,
    /// commented out or not; `(commented, item)`.
    fn classify(line: &str) -> Option<(bool, Line)> {
        let t = line.trim();
        let (commented, body) = match t.strip_prefix('#') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, t),
        };
        let ident =
            |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
        if let Some(inner) = body.strip_prefix('[').and_then(|b| b.strip_suffix(']')) {
            let name = inner.trim_matches(['[', ']']);
            return ident(name).then(|| (commented, Line::Section(name.to_string())));
        }
        let (key, _) = body.split_once('=')?;
        let key = key.trim();
        ident(key).then(|| (commented, Line::Key(key.to_string())))
    }

    #[test]
    fn example_loads_as_all_defaults() {
        let c = parse(EXAMPLE).unwrap();
        assert_eq!(c.run, RunDefaults::default());
        assert!(c.policy.is_empty());
        assert_eq!(c.status, StatusConfig::default());
        assert_eq!(c.serve, ServeConfig::default());
    }

    #[test]
    fn example_documents_every_key() {
        let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut section = String::new();
        for line in EXAMPLE.lines() {
            match classify(line) {
                Some((_, Line::Section(s))) => {
                    found.entry(s.clone()).or_default();
                    section = s;
                }
                Some((_, Line::Key(k))) => {
                    assert!(!section.is_empty(), "key {k} before any section");
                    found.entry(section.clone()).or_default().insert(k);
                }
                None => {}
            }
        }
        let sections = accepted("", "");
        assert_eq!(
            found.keys().cloned().collect::<BTreeSet<_>>(),
            sections,
            "sections of the example vs the file format"
        );
        let run = accepted("[run]\n", "");
        let status = accepted("[status]\n", "");
        let policy = accepted("[[policy]]\n", "match = \"/x\"\n");
        assert_eq!(found["run"], run, "[run] keys of the example vs the struct");
        assert_eq!(found["status"], status, "[status] keys");
        let serve = accepted("[serve]\n", "");
        assert_eq!(found["serve"], serve, "[serve] keys");
        // A policy takes `match` plus exactly the [run] keys; the example
        // shows `match` and only some of the others.
        let mut want = run.clone();
        want.insert("match".to_string());
        assert_eq!(policy, want, "RawPolicy out of step with RawRun");
        assert!(found["policy"].contains("match"));
        assert!(found["policy"].is_subset(&policy), "{:?}", found["policy"]);
    }

    #[test]
    fn example_defaults_are_the_built_in_ones() {
        // Uncomment every setting and section: the documented defaults
        // must parse and be the built-in values (DESIGN §4).
        let text: String = EXAMPLE
            .lines()
            .map(|line| match classify(line) {
                Some((true, _)) => line.trim_start_matches(['#', ' ']).to_string() + "\n",
                _ => line.to_string() + "\n",
            })
            .collect();
        let c = parse(&text).unwrap();
        assert_eq!(
            c.run,
            RunDefaults {
                timeout: secs(600),
                grace: secs(10),
                wait: secs(60),
                signal: sig(Signal::SIGTERM),
                final_signal: sig(Signal::SIGKILL),
                file_mode: Some(0o600),
                conflict_exit_code: Some(crate::exit::CONFLICT),
                watchdog: Some(Dur::Infinite),
                max_timeout: Some(Dur::Infinite),
                ready_timeout: Some(Dur::Infinite),
                die_with_parent: Some(false),
                on_lock_removed: Some(OnLockRemoved::Cancel),
            }
        );
        assert!(c.status.roots.is_empty());
        assert_eq!(
            c.serve,
            ServeConfig {
                socket: Some(PathBuf::from("/run/locksup/locksup.sock")),
                socket_mode: Some(0o660),
                allow_users: Vec::new(),
                allow_groups: Vec::new(),
                admin_groups: Vec::new(),
                reap_orphans: Some(false),
                reap_interval: secs(5),
            }
        );
        assert_eq!(c.policy.len(), 1);
        let sample = Path::new("/srv/openclaw/a/b/nightly-1.json");
        assert!(c.policy[0].matches(sample));
        assert_eq!(c.defaults_for(sample).grace, secs(10));
    }
}
