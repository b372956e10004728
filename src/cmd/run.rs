//! `locksup run`: resolve options (command line over config over built-in
//! defaults) into a [`Spec`] and supervise the attempt.

use std::hash::{BuildHasher, RandomState};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::attempt::spec::{Backend, EtcdSpec, Spec, Wait};
use crate::attempt::supervise;
use crate::cli::RunArgs;
use crate::config::Config;
use crate::duration::Dur;
use crate::error::{Error, Result};
use crate::events::Reporter;
use crate::lock::lockfile;
use crate::paths::absolute_in;
use crate::signal::Sig;

/// Built-in defaults (README.md, "Using it"; locksup(1)).
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Default grace between first and final signal.
pub(crate) const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// Default wait for a busy lock.
pub(crate) const DEFAULT_WAIT: Duration = Duration::from_secs(60);
/// Default mode of a new lock file.
pub(crate) const DEFAULT_FILE_MODE: u32 = 0o600;

/// Set by `locksup serve` for each attempt's supervisor: the number of an
/// inherited descriptor (a pipe) to copy every event to. Taken out of the
/// environment at once, so the command never sees it.
pub(crate) const DAEMON_EVENTS_ENV: &str = "LOCKSUP_DAEMON_EVENTS_FD";

/// Run the subcommand; returns the exit code.
pub fn main(args: RunArgs, config_path: Option<&Path>) -> Result<i32> {
    // Still one thread: nothing else reads the environment.
    let daemon_events = std::env::var(DAEMON_EVENTS_ENV).ok();
    if daemon_events.is_some() {
        crate::sys::unset_env_single_threaded(&[DAEMON_EVENTS_ENV]);
    }
    let daemon_events = daemon_events.and_then(|v| daemon_events_pipe(&v));
    let config = Config::load(config_path)?;
    let spec = resolve(&args, &config)?;
    lockfile::preflight(&spec.lock)?;
    let mut report = Reporter::new(
        args.events.as_deref(),
        args.verbose,
        &spec.attempt_id,
        &spec.lock,
    )?;
    if let Some(pipe) = daemon_events {
        report.tee(pipe);
    }
    // The process the caller started becomes the guardian; the supervisor
    // goes on in its child. In the foreground both stay in the terminal's
    // process group, where the guardian would add nothing but a second
    // copy of every signal the terminal sends.
    let link = if spec.foreground {
        None
    } else {
        Some(crate::attempt::guardian::split(&spec, &mut report)?)
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io(format!("cannot start the runtime: {e}")))?;
    rt.block_on(supervise::supervise(&spec, &mut report, link))
}

/// The pipe `locksup serve` passed ([`DAEMON_EVENTS_ENV`]) for its copy
/// of the events, made close-on-exec (the command does not get it) and
/// non-blocking (a busy daemon costs events, never time). Anything else
/// (not a number, not open, not a pipe) is ignored and left alone.
fn daemon_events_pipe(value: &str) -> Option<std::fs::File> {
    use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
    use nix::sys::stat::{SFlag, fstat};
    use std::os::fd::IntoRawFd;
    let fd: i32 = value.trim().parse().ok()?;
    let owned = crate::sys::adopt_inherited_fd(fd).ok()?;
    let is_pipe = fstat(&owned)
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO);
    let set = || -> nix::Result<()> {
        fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        let fl = fcntl(&owned, FcntlArg::F_GETFL)?;
        fcntl(
            &owned,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(fl) | OFlag::O_NONBLOCK),
        )?;
        Ok(())
    };
    if !is_pipe || set().is_err() {
        log::debug!("{DAEMON_EVENTS_ENV}={value} is not a pipe of ours; ignored");
        // Not ours to close.
        let _ = owned.into_raw_fd();
        return None;
    }
    Some(std::fs::File::from(owned))
}

/// Merge command line, the config's `[run]` and matching `[[policy]]`, and
/// built-in defaults.
pub(crate) fn resolve(a: &RunArgs, config: &Config) -> Result<Spec> {
    let cwd = std::env::current_dir()
        .map_err(|e| Error::io(format!("cannot read the working directory: {e}")))?;
    let session = match &a.session {
        Some(s) => Some(not_a_directory("--session", s, absolute_in(&cwd, s))?),
        None => None,
    };
    let lock = match (&session, &a.lock) {
        (_, Some(l)) => not_a_directory("--lock", l, absolute_in(&cwd, l))?,
        (Some(s), None) => lockfile::lock_path_for_session(s),
        (None, None) => return Err(Error::usage("one of --session or --lock is required")),
    };
    let subject = session.clone().unwrap_or_else(|| lock.clone());
    let d = config.defaults_for(&subject);
    let timeout = a
        .timeout
        .or(d.timeout)
        .unwrap_or(Dur::Finite(DEFAULT_TIMEOUT))
        .as_limit();
    let grace = a
        .grace
        .or(d.grace)
        .unwrap_or(Dur::Finite(DEFAULT_GRACE))
        .finite();
    let wait = if a.no_wait {
        Wait::No
    } else {
        match a.wait.or(d.wait).unwrap_or(Dur::Finite(DEFAULT_WAIT)) {
            Dur::Finite(w) if w.is_zero() => Wait::No,
            Dur::Finite(w) => Wait::For(w),
            Dur::Infinite => Wait::Forever,
        }
    };
    let conflict_exit_code = match a.conflict_exit_code {
        Some(c) => i32::from(c),
        None => d.conflict_exit_code.unwrap_or(crate::exit::CONFLICT),
    };
    let backend = a.backend.or(d.backend).unwrap_or_default();
    let etcd = match backend {
        Backend::Flock => {
            let given = [
                ("--etcd-endpoints", a.etcd_endpoints.is_some()),
                ("--etcd-key", a.etcd_key.is_some()),
                ("--etcd-prefix", a.etcd_prefix.is_some()),
                ("--etcd-ttl", a.etcd_ttl.is_some()),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, set)| *set) {
                return Err(Error::usage(format!(
                    "{flag} needs --backend etcd (or backend = \"etcd\" in the configuration)"
                )));
            }
            None
        }
        Backend::Etcd if a.shared => {
            return Err(Error::usage(
                "--shared cannot be used with --backend etcd (an etcd lock is exclusive)",
            ));
        }
        Backend::Etcd => Some(etcd_spec(a, config, &d, &lock, grace)?),
    };
    Ok(Spec {
        lock,
        session,
        session_key: a.session_key.clone(),
        attempt_id: a.attempt_id.clone().unwrap_or_else(new_attempt_id),
        command: a.command.clone(),
        timeout,
        grace,
        wait,
        signal: a.signal.or(d.signal).unwrap_or(Sig::TERM),
        final_signal: a.final_signal.or(d.final_signal).unwrap_or(Sig::KILL),
        shared: a.shared,
        preserve_status: a.preserve_status,
        conflict_exit_code,
        file_mode: d.file_mode.unwrap_or(DEFAULT_FILE_MODE),
        watchdog: a.watchdog.or(d.watchdog).and_then(Dur::as_limit),
        max_timeout: a.max_timeout.or(d.max_timeout).and_then(Dur::as_limit),
        ready_timeout: a.ready_timeout.or(d.ready_timeout).and_then(Dur::as_limit),
        foreground: a.foreground,
        die_with_parent: a.die_with_parent || d.die_with_parent.unwrap_or(false),
        on_lock_removed: a.on_lock_removed.or(d.on_lock_removed).unwrap_or_default(),
        order: a.order.or(d.order).unwrap_or_default(),
        etcd,
    })
}

/// The etcd lock of an attempt: built-in defaults, then the config's
/// `[etcd]`, then etcdctl's environment (`ETCDCTL_*`), then the command
/// line. Without a TTL given, see [`default_ttl`].
fn etcd_spec(
    a: &RunArgs,
    config: &Config,
    d: &crate::config::RunDefaults,
    lock: &Path,
    grace: Option<Duration>,
) -> Result<EtcdSpec> {
    use crate::lock::etcd::{self, Timing};
    let mut cfg = config.etcd.to_etcd_config();
    cfg.apply_process_env()?;
    if let Some(e) = &a.etcd_endpoints {
        cfg.endpoints = etcd::parse_endpoints(e);
    }
    if let Some(p) = &a.etcd_prefix {
        cfg.prefix.clone_from(p);
    }
    let ttl = match a.etcd_ttl.or(config.etcd.ttl) {
        Some(Dur::Finite(t)) => Some(t),
        Some(Dur::Infinite) => {
            return Err(Error::usage("etcd: the lease TTL cannot be infinite"));
        }
        None => None,
    };
    cfg.ttl = match (ttl, grace) {
        (Some(t), _) => t,
        (None, Some(g)) => default_ttl(g),
        (None, None) => etcd::config::DEFAULT_TTL,
    };
    cfg.validate()?;
    let timing = Timing::new(cfg.ttl, grace)?;
    let explicit = a.etcd_key.as_deref().or(d.etcd_key.as_deref());
    let name = etcd::lock_name(explicit, lock)?;
    Ok(EtcdSpec {
        config: cfg,
        name,
        timing,
    })
}

/// How late a keep-alive answer may come, at least, with the default TTL:
/// an etcd leader election (1s by default) and a retry.
pub(crate) const DEFAULT_TTL_SLACK: Duration = Duration::from_secs(2);

/// The lease TTL when none is given: 10s, or, when the grace needs more,
/// the shortest whole-second TTL that fits it (grace + margin + keep-alive
/// interval < TTL) with [`DEFAULT_TTL_SLACK`] to spare: 26s with the
/// default grace of 10s. The shortest that merely fits (22s) would leave
/// 0.27s for a keep-alive answer before the attempt is ended.
pub(crate) fn default_ttl(grace: Duration) -> Duration {
    use crate::lock::etcd::{Timing, config::DEFAULT_TTL};
    let mut ttl = DEFAULT_TTL.max(Timing::min_ttl(grace));
    while Timing::new(ttl, Some(grace)).is_ok_and(|t| t.slack() < DEFAULT_TTL_SLACK)
        && ttl < Duration::from_secs(u64::from(u32::MAX))
    {
        ttl += Duration::from_secs(1);
    }
    ttl
}

/// `path` (`given` made absolute), unless it names a directory: written
/// as one (`dir/`, `.`, `dir/..`), or an existing directory. A session
/// `dir/` would otherwise lock `dir.lock`, or `dir/.lock`, beside or
/// inside the wrong thing.
fn not_a_directory(option: &str, given: &Path, path: PathBuf) -> Result<PathBuf> {
    let b = given.as_os_str().as_encoded_bytes();
    let written_as_dir = [b"/".as_slice(), b"/.", b"/.."]
        .iter()
        .any(|end| b.ends_with(end))
        || b == b"."
        || b == b"..";
    if written_as_dir || path.is_dir() {
        return Err(Error::usage(format!(
            "{option} '{}' names a directory; give a file",
            given.display()
        )));
    }
    Ok(path)
}

/// A fresh attempt id: time-ordered and unique enough to grep for,
/// e.g. `19a8c3f2b51-4f2a9c1e`.
pub(crate) fn new_attempt_id() -> String {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    // RandomState is seeded from the OS's random source.
    let r = RandomState::new().hash_one((ms, std::process::id()));
    format!("{ms:x}-{:08x}", r & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_ttl_fits_the_grace_with_room_for_a_late_answer() {
        let s = Duration::from_secs;
        assert_eq!(default_ttl(s(10)), s(26));
        assert_eq!(default_ttl(s(1)), s(10));
        assert_eq!(default_ttl(Duration::ZERO), s(10));
        assert_eq!(default_ttl(s(3)), s(11));
        for g in [0, 1, 2, 5, 10, 30, 120] {
            let t = crate::lock::etcd::Timing::new(default_ttl(s(g)), Some(s(g)))
                .expect("the default fits");
            assert!(t.slack() >= DEFAULT_TTL_SLACK, "grace {g}s: {t:?}");
        }
    }
}
