//! Where the etcd cluster is, how to reach it, and the timing of a lease.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// The prefix every lock key lives under unless configured otherwise.
pub const DEFAULT_PREFIX: &str = "/locksup";
/// The lease TTL unless configured otherwise.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// etcdctl's `--dial-timeout` default.
pub const DEFAULT_DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// etcdctl's `--command-timeout` default.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(5);
/// etcdctl's default endpoint.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:2379";
/// The smallest margin between the final signal and the earliest moment
/// the lease can lapse.
pub const MIN_MARGIN: Duration = Duration::from_secs(1);

/// How to reach the cluster and where the locks live. Options are named
/// as etcdctl names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `--endpoints`: `host:port` or `http(s)://host:port`, one or more.
    pub endpoints: Vec<String>,
    /// Every lock key is `<prefix>/<NAME>/<lease-hex>`.
    pub prefix: String,
    /// Lease TTL (whole seconds; etcd counts leases in seconds).
    pub ttl: Duration,
    /// `--cacert`: the CA bundle that verifies the servers (PEM).
    pub cacert: Option<PathBuf>,
    /// `--cert`: the client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// `--key`: the client certificate's key (PEM).
    pub key: Option<PathBuf>,
    /// `--user`: `NAME` or `NAME:PASSWORD`.
    pub user: Option<String>,
    /// `--password`, when `--user` has none.
    pub password: Option<String>,
    /// `--dial-timeout`: bound on connecting (and authenticating).
    pub dial_timeout: Duration,
    /// `--command-timeout`: bound on every unary request.
    pub command_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            endpoints: vec![DEFAULT_ENDPOINT.to_string()],
            prefix: DEFAULT_PREFIX.to_string(),
            ttl: DEFAULT_TTL,
            cacert: None,
            cert: None,
            key: None,
            user: None,
            password: None,
            dial_timeout: DEFAULT_DIAL_TIMEOUT,
            command_timeout: DEFAULT_COMMAND_TIMEOUT,
        }
    }
}

/// Split `URL[,URL]` as etcdctl does: commas, surrounding blanks ignored.
pub fn parse_endpoints(text: &str) -> Vec<String> {
    text.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

impl Config {
    /// Overlay etcdctl's environment (`ETCDCTL_ENDPOINTS`, `ETCDCTL_CACERT`,
    /// `ETCDCTL_CERT`, `ETCDCTL_KEY`, `ETCDCTL_USER`, `ETCDCTL_PASSWORD`,
    /// `ETCDCTL_DIAL_TIMEOUT`, `ETCDCTL_COMMAND_TIMEOUT`), read through
    /// `get`. As in etcdctl, a variable stands for the option: apply it
    /// after the configuration file and before the command line.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<()> {
        let set = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        if let Some(v) = set("ETCDCTL_ENDPOINTS") {
            self.endpoints = parse_endpoints(&v);
        }
        if let Some(v) = set("ETCDCTL_CACERT") {
            self.cacert = Some(v.into());
        }
        if let Some(v) = set("ETCDCTL_CERT") {
            self.cert = Some(v.into());
        }
        if let Some(v) = set("ETCDCTL_KEY") {
            self.key = Some(v.into());
        }
        if let Some(v) = set("ETCDCTL_USER") {
            self.user = Some(v);
        }
        if let Some(v) = set("ETCDCTL_PASSWORD") {
            self.password = Some(v);
        }
        for (name, field) in [
            ("ETCDCTL_DIAL_TIMEOUT", &mut self.dial_timeout),
            ("ETCDCTL_COMMAND_TIMEOUT", &mut self.command_timeout),
        ] {
            if let Some(v) = set(name) {
                *field = humantime::parse_duration(v.trim())
                    .map_err(|e| Error::usage(format!("{name}={v}: {e}")))?;
            }
        }
        Ok(())
    }

    /// The process environment applied with [`Config::apply_env`].
    pub fn apply_process_env(&mut self) -> Result<()> {
        self.apply_env(|name| std::env::var(name).ok())
    }

    /// Refuse what cannot work, with one line: no endpoints, a TTL that is
    /// not a whole number of seconds, half a client certificate, zero
    /// timeouts.
    pub fn validate(&self) -> Result<()> {
        if self.endpoints.is_empty() {
            return Err(Error::usage("etcd: no endpoints given"));
        }
        if self.ttl < Duration::from_secs(1) || self.ttl.subsec_nanos() != 0 {
            return Err(Error::usage(format!(
                "etcd: the lease TTL must be a whole number of seconds, at least 1s (got {})",
                show(self.ttl)
            )));
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err(Error::usage(
                "etcd: --cert and --key go together (a client certificate needs its key)",
            ));
        }
        if self.dial_timeout.is_zero() || self.command_timeout.is_zero() {
            return Err(Error::usage(
                "etcd: --dial-timeout and --command-timeout must be above zero",
            ));
        }
        if self.prefix.contains('\0') {
            return Err(Error::usage("etcd: the key prefix contains a NUL byte"));
        }
        Ok(())
    }

    /// `(name, password)` from `--user NAME[:PASSWORD]` and `--password`.
    pub fn credentials(&self) -> Result<Option<(String, String)>> {
        let Some(user) = &self.user else {
            return Ok(None);
        };
        match (user.split_once(':'), &self.password) {
            (Some((name, pass)), _) if !name.is_empty() => {
                Ok(Some((name.to_string(), pass.to_string())))
            }
            (None, Some(pass)) if !user.is_empty() => Ok(Some((user.clone(), pass.clone()))),
            _ => Err(Error::usage(format!(
                "etcd: --user '{user}' needs a password: give NAME:PASSWORD or --password"
            ))),
        }
    }

    /// The lock's name in etcd: `<prefix>/<NAME>`. Waiters' keys are
    /// `<prefix>/<NAME>/<lease-hex>`.
    pub fn lock_key(&self, name: &str) -> String {
        format!("{}/{}", self.prefix.trim_end_matches('/'), name)
    }

    /// The range every lock key is in: `<prefix>/`.
    pub fn range(&self) -> String {
        format!("{}/", self.prefix.trim_end_matches('/'))
    }
}

/// NAME of a lock: the explicit `--etcd-key` if given, else the lock file's
/// absolute path without its leading `/`. Refused: empty names, names with
/// a NUL byte, names ending in `/` (the waiters' keys would not be one
/// level below the lock's).
pub fn lock_name(explicit: Option<&str>, lock_file: &Path) -> Result<String> {
    let name = match explicit {
        Some(n) => n.to_string(),
        None => {
            if !lock_file.is_absolute() {
                return Err(Error::usage(format!(
                    "etcd: the lock file {} is not an absolute path",
                    lock_file.display()
                )));
            }
            let text = lock_file.to_str().ok_or_else(|| {
                Error::usage(format!(
                    "etcd: the lock file {} is not valid UTF-8: give --etcd-key",
                    lock_file.display()
                ))
            })?;
            text.trim_start_matches('/').to_string()
        }
    };
    if name.is_empty() || name.ends_with('/') || name.contains('\0') {
        return Err(Error::usage(format!(
            "etcd: '{name}' cannot name a lock (empty, ends in '/' or holds a NUL byte)"
        )));
    }
    Ok(name)
}

/// When keep-alives go out and how early the attempt must be dead, for a
/// lease of `ttl` and a grace period of `grace`.
///
/// * keep-alive interval `I = TTL / 3` (etcd's own client renews as often);
/// * margin `M = max(1s, TTL / 5)`: between the final signal and the
///   earliest moment the lease can lapse (signal delivery, reaping, the
///   rate difference of two machines' clocks);
/// * the first signal is due at `confirmed_until − M − grace`, so the final
///   one goes out `M` before the lease can lapse.
///
/// Valid when `grace + M + I < TTL`: a keep-alive answered on time then
/// always moves the deadline forward before it is reached; what is left
/// over (the slack) is how late an answer may come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Lease TTL.
    pub ttl: Duration,
    /// Between keep-alives.
    pub interval: Duration,
    /// Between the final signal and the earliest lapse of the lease.
    pub margin: Duration,
    /// Between the first and the final signal.
    pub grace: Duration,
}

impl Timing {
    /// The timing of `ttl` and `grace` (`None`: never send the final
    /// signal, which the etcd backend refuses).
    pub fn new(ttl: Duration, grace: Option<Duration>) -> Result<Self> {
        let Some(grace) = grace else {
            return Err(Error::usage(
                "etcd: an infinite grace period cannot be used with the etcd backend: \
                 the attempt must be dead before its lease can lapse",
            ));
        };
        let t = Self {
            ttl,
            interval: ttl / 3,
            margin: MIN_MARGIN.max(ttl / 5),
            grace,
        };
        if t.grace + t.margin + t.interval >= t.ttl {
            return Err(Error::usage(format!(
                "etcd: grace {} + margin {} + keep-alive interval {} must be less than the \
                 lease TTL {}: raise the TTL to at least {} or lower the grace",
                show(t.grace),
                show(t.margin),
                show(t.interval),
                show(t.ttl),
                show(Self::min_ttl(grace)),
            )));
        }
        Ok(t)
    }

    /// The shortest whole-second TTL that is valid with `grace`.
    pub fn min_ttl(grace: Duration) -> Duration {
        let mut secs = 1u64;
        loop {
            let ttl = Duration::from_secs(secs);
            let (i, m) = (ttl / 3, MIN_MARGIN.max(ttl / 5));
            if grace + m + i < ttl || secs >= u64::from(u32::MAX) {
                return ttl;
            }
            secs += 1;
        }
    }

    /// How late a keep-alive answer may come before the attempt is ended.
    pub fn slack(&self) -> Duration {
        self.ttl
            .saturating_sub(self.grace + self.margin + self.interval)
    }

    /// Before `confirmed_until`, by how much the first signal is due.
    pub fn lead(&self) -> Duration {
        self.margin + self.grace
    }
}

/// A duration as a user writes it: `10s`, `3.333s`, `250ms`.
pub(crate) fn show(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms < 1000 {
        format!("{ms}ms")
    } else {
        let n = format!("{}.{:03}", ms / 1000, ms % 1000);
        format!("{}s", n.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn timing_defaults_and_bounds() {
        let t = Timing::new(secs(10.0), Some(secs(2.0))).expect("valid");
        assert_eq!(
            t.interval,
            Duration::from_millis(3333) + Duration::from_nanos(333_333)
        );
        assert_eq!(t.margin, secs(2.0));
        assert!(t.slack() > secs(2.6));
        assert_eq!(
            Timing::new(secs(3.0), Some(secs(0.2))).map(|t| t.margin),
            Ok(secs(1.0))
        );
        // locksup's default grace (10s) does not fit the default TTL.
        let e = Timing::new(secs(10.0), Some(secs(10.0))).expect_err("too long a grace");
        assert_eq!(
            e.message(),
            "etcd: grace 10s + margin 2s + keep-alive interval 3.333s must be less than the \
             lease TTL 10s: raise the TTL to at least 22s or lower the grace"
        );
        assert_eq!(e.code(), crate::exit::FAILURE);
        assert!(Timing::new(secs(22.0), Some(secs(10.0))).is_ok());
        assert!(Timing::new(secs(21.0), Some(secs(10.0))).is_err());
        assert!(Timing::new(secs(10.0), None).is_err());
        assert_eq!(Timing::min_ttl(Duration::ZERO), secs(2.0));
    }

    #[test]
    fn env_overlays_like_etcdctl() {
        let mut c = Config::default();
        let env = |n: &str| match n {
            "ETCDCTL_ENDPOINTS" => Some("http://a:1, b:2,".to_string()),
            "ETCDCTL_USER" => Some("root:pw".to_string()),
            "ETCDCTL_DIAL_TIMEOUT" => Some("3s".to_string()),
            "ETCDCTL_CACERT" => Some(String::new()),
            _ => None,
        };
        c.apply_env(env).expect("valid env");
        assert_eq!(c.endpoints, ["http://a:1", "b:2"]);
        assert_eq!(c.dial_timeout, secs(3.0));
        assert_eq!(c.cacert, None);
        assert_eq!(
            c.credentials(),
            Ok(Some(("root".to_string(), "pw".to_string())))
        );
        let bad = c.apply_env(|n| (n == "ETCDCTL_COMMAND_TIMEOUT").then(|| "soon".to_string()));
        assert!(bad.is_err());
        c.user = Some("root".into());
        c.password = None;
        assert!(c.credentials().is_err());
    }

    #[test]
    fn validation() {
        let ok = Config::default();
        assert_eq!(ok.validate(), Ok(()));
        let c = Config {
            ttl: secs(2.5),
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            cert: Some("c.pem".into()),
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            endpoints: vec![],
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn names_and_keys() {
        let c = Config::default();
        assert_eq!(
            lock_name(None, Path::new("/run/lock/s.lock")).as_deref(),
            Ok("run/lock/s.lock")
        );
        assert_eq!(c.lock_key("run/lock/s.lock"), "/locksup/run/lock/s.lock");
        assert_eq!(
            lock_name(Some("orders"), Path::new("rel")).as_deref(),
            Ok("orders")
        );
        assert!(lock_name(None, Path::new("rel/x")).is_err());
        assert!(lock_name(Some(""), Path::new("/x")).is_err());
        assert!(lock_name(Some("a/"), Path::new("/x")).is_err());
        let c = Config {
            prefix: "/p/".into(),
            ..Config::default()
        };
        assert_eq!(c.lock_key("n"), "/p/n");
        assert_eq!(c.range(), "/p/");
    }

    #[test]
    fn durations_read_as_written() {
        assert_eq!(show(secs(10.0)), "10s");
        assert_eq!(show(Duration::from_millis(250)), "250ms");
        assert_eq!(show(Duration::from_millis(3333)), "3.333s");
        assert_eq!(show(Duration::from_millis(1500)), "1.5s");
    }
}
