//! The configuration file as written, before validation: serde's view of
//! each section, with the spans that make every error name its line and
//! column.

use super::*;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFile {
    #[serde(default)]
    pub(super) run: RawRun,
    #[serde(default)]
    pub(super) policy: Vec<RawPolicy>,
    #[serde(default)]
    pub(super) status: RawStatus,
    #[serde(default)]
    pub(super) serve: RawServe,
    #[serde(default)]
    pub(super) etcd: RawEtcd,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEtcd {
    pub(super) endpoints: Option<Spanned<Vec<String>>>,
    pub(super) prefix: Option<Spanned<String>>,
    pub(super) ttl: Option<CfgDur>,
    pub(super) cacert: Option<Spanned<String>>,
    pub(super) cert: Option<Spanned<String>>,
    pub(super) key: Option<Spanned<String>>,
    pub(super) user: Option<String>,
    pub(super) password: Option<String>,
    pub(super) dial_timeout: Option<CfgDur>,
    pub(super) command_timeout: Option<CfgDur>,
}

impl RawEtcd {
    /// Validate what serde cannot: non-empty endpoints, an absolute
    /// prefix, absolute PEM paths.
    pub(super) fn check(self) -> std::result::Result<EtcdConfig, Problem> {
        let endpoints = match self.endpoints {
            None => None,
            Some(e) => {
                let span = e.span();
                let list: Vec<String> = e
                    .into_inner()
                    .iter()
                    .flat_map(|x| crate::lock::etcd::parse_endpoints(x))
                    .collect();
                if list.is_empty() {
                    return Err((span, "etcd endpoints: the list is empty".to_string()));
                }
                Some(list)
            }
        };
        let prefix = match self.prefix {
            None => None,
            Some(p) => {
                let span = p.span();
                let p = p.into_inner();
                if !p.starts_with('/') || p.contains('\0') {
                    return Err((
                        span,
                        format!("etcd prefix '{p}' must start with / (as /locksup)"),
                    ));
                }
                Some(p)
            }
        };
        let path = |v: Option<Spanned<String>>, what: &str| match v {
            None => Ok(None),
            Some(v) => {
                let span = v.span();
                let p = PathBuf::from(v.into_inner());
                if p.is_absolute() {
                    Ok(Some(p))
                } else {
                    Err((
                        span,
                        format!("etcd {what} '{}' must be an absolute path", p.display()),
                    ))
                }
            }
        };
        Ok(EtcdConfig {
            endpoints,
            prefix,
            ttl: self.ttl.map(|d| d.0),
            cacert: path(self.cacert, "cacert")?,
            cert: path(self.cert, "cert")?,
            key: path(self.key, "key")?,
            user: self.user,
            password: self.password,
            dial_timeout: self.dial_timeout.map(|d| d.0),
            command_timeout: self.command_timeout.map(|d| d.0),
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRun {
    pub(super) timeout: Option<CfgDur>,
    pub(super) grace: Option<CfgDur>,
    pub(super) wait: Option<CfgDur>,
    pub(super) signal: Option<CfgSig>,
    pub(super) final_signal: Option<CfgSig>,
    pub(super) file_mode: Option<Spanned<RawMode>>,
    pub(super) conflict_exit_code: Option<Spanned<i64>>,
    pub(super) watchdog: Option<CfgDur>,
    pub(super) max_timeout: Option<CfgDur>,
    pub(super) ready_timeout: Option<CfgDur>,
    pub(super) die_with_parent: Option<bool>,
    pub(super) on_lock_removed: Option<Spanned<String>>,
    pub(super) order: Option<Spanned<String>>,
    pub(super) backend: Option<Spanned<String>>,
    pub(super) etcd_key: Option<String>,
}

/// `[[policy]]`: `match` plus the keys of `[run]`, written out because
/// `#[serde(flatten)]` does not work with `deny_unknown_fields`. Keep the
/// run keys in step with [`RawRun`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    #[serde(rename = "match")]
    pub(super) pattern: Spanned<String>,
    pub(super) timeout: Option<CfgDur>,
    pub(super) grace: Option<CfgDur>,
    pub(super) wait: Option<CfgDur>,
    pub(super) signal: Option<CfgSig>,
    pub(super) final_signal: Option<CfgSig>,
    pub(super) file_mode: Option<Spanned<RawMode>>,
    pub(super) conflict_exit_code: Option<Spanned<i64>>,
    pub(super) watchdog: Option<CfgDur>,
    pub(super) max_timeout: Option<CfgDur>,
    pub(super) ready_timeout: Option<CfgDur>,
    pub(super) die_with_parent: Option<bool>,
    pub(super) on_lock_removed: Option<Spanned<String>>,
    pub(super) order: Option<Spanned<String>>,
    pub(super) backend: Option<Spanned<String>>,
    pub(super) etcd_key: Option<String>,
}

impl RawPolicy {
    /// The `match` glob and the run keys.
    pub(super) fn split(self) -> (Spanned<String>, RawRun) {
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
            order: self.order,
            backend: self.backend,
            etcd_key: self.etcd_key,
        };
        (self.pattern, run)
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStatus {
    #[serde(default)]
    pub(super) roots: Vec<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServe {
    pub(super) socket: Option<Spanned<String>>,
    pub(super) socket_mode: Option<Spanned<RawMode>>,
    #[serde(default)]
    pub(super) allow_users: Vec<Spanned<RawPrincipal>>,
    #[serde(default)]
    pub(super) allow_groups: Vec<Spanned<RawPrincipal>>,
    #[serde(default)]
    pub(super) admin_groups: Vec<Spanned<RawPrincipal>>,
    pub(super) reap_orphans: Option<bool>,
    pub(super) reap_interval: Option<CfgDur>,
    pub(super) metrics: Option<Spanned<String>>,
    pub(super) history: Option<Spanned<i64>>,
}

impl RawServe {
    pub(super) fn check(
        self,
        text: &str,
        path: &Path,
    ) -> std::result::Result<ServeConfig, Problem> {
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
        let metrics = match self.metrics {
            None => None,
            Some(m) => {
                let span = m.span();
                Some(MetricsEndpoint::parse(m.get_ref()).map_err(|e| (span, e))?)
            }
        };
        let history = match self.history {
            None => None,
            Some(h) => {
                let span = h.span();
                let v = *h.get_ref();
                match usize::try_from(v) {
                    Ok(n) if n <= MAX_HISTORY => Some(n),
                    _ => {
                        return Err((
                            span,
                            format!("history {v} is out of range (0 to {MAX_HISTORY})"),
                        ));
                    }
                }
            }
        };
        Ok(ServeConfig {
            socket,
            socket_mode,
            allow_users: list(self.allow_users, "allow_users")?,
            allow_groups: list(self.allow_groups, "allow_groups")?,
            admin_groups: list(self.admin_groups, "admin_groups")?,
            reap_orphans: self.reap_orphans,
            reap_interval: self.reap_interval.map(|d| d.0),
            metrics,
            history,
        })
    }
}

/// Deserialize a value written as an integer or as a string (`what`
/// names what is expected, for the error message).
pub(super) fn int_or_text<'de, D: serde::Deserializer<'de>, T>(
    de: D,
    what: &'static str,
    int: fn(i64) -> T,
    text: fn(String) -> T,
) -> std::result::Result<T, D::Error> {
    struct V<T> {
        what: &'static str,
        int: fn(i64) -> T,
        text: fn(String) -> T,
    }
    impl<T> Visitor<'_> for V<T> {
        type Value = T;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.what)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> std::result::Result<T, E> {
            Ok((self.int)(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> std::result::Result<T, E> {
            Ok((self.int)(i64::try_from(v).unwrap_or(i64::MAX)))
        }
        fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<T, E> {
            Ok((self.text)(v.to_string()))
        }
    }
    de.deserialize_any(V { what, int, text })
}

/// A user or group as written: a string or an integer.
pub(super) enum RawPrincipal {
    Int(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawPrincipal {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> std::result::Result<Self, D::Error> {
        int_or_text(
            de,
            "a user or group name, or a numeric id",
            RawPrincipal::Int,
            RawPrincipal::Text,
        )
    }
}

pub(super) fn principal(
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
pub(super) struct CfgDur(Dur);

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
pub(super) struct CfgSig(Sig);

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
pub(super) struct TextVisitor {
    pub(super) expecting: &'static str,
    pub(super) floats: bool,
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
pub(super) enum RawMode {
    Int(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawMode {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> std::result::Result<Self, D::Error> {
        int_or_text(
            de,
            "a file mode in octal, such as 0o600 or \"0600\"",
            RawMode::Int,
            RawMode::Text,
        )
    }
}

pub(super) type Problem = (Range<usize>, String);

impl RawRun {
    /// Validate the keys serde cannot: `file_mode` and
    /// `conflict_exit_code`. `text` is the whole file, to see how an
    /// integer was written.
    pub(super) fn check(self, text: &str) -> std::result::Result<RunDefaults, Problem> {
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
            order: self.order.map(order).transpose()?,
            backend: self.backend.map(backend).transpose()?,
            etcd_key: self.etcd_key,
        })
    }
}

pub(super) fn file_mode(m: Spanned<RawMode>, text: &str) -> std::result::Result<u32, Problem> {
    octal_mode(m, text, "file_mode", MAX_FILE_MODE)
}

/// An octal mode written as an integer literal or a string of octal
/// digits, at most `max`; `key` names it in messages.
pub(super) fn octal_mode(
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

pub(super) fn on_lock_removed(v: Spanned<String>) -> std::result::Result<OnLockRemoved, Problem> {
    let span = v.span();
    v.into_inner()
        .parse()
        .map_err(|e| (span, format!("on_lock_removed: {e}")))
}

pub(super) fn order(v: Spanned<String>) -> std::result::Result<Order, Problem> {
    let span = v.span();
    v.into_inner()
        .parse()
        .map_err(|e| (span, format!("order: {e}")))
}

pub(super) fn backend(v: Spanned<String>) -> std::result::Result<Backend, Problem> {
    let span = v.span();
    v.into_inner()
        .parse()
        .map_err(|e| (span, format!("backend: {e}")))
}

pub(super) fn exit_code(c: Spanned<i64>) -> std::result::Result<i32, Problem> {
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
