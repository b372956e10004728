//! Lifecycle reporting: JSON-lines events (`--events`) and human lines on
//! stderr (`--verbose`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::SystemTime;

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// RFC 3339 UTC with milliseconds: `2026-11-24T08:03:33.123Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

enum Sink {
    Stderr,
    File(File),
}

/// Where an attempt's lifecycle goes.
pub(crate) struct Reporter {
    sink: Option<Sink>,
    /// A second copy of every event for `locksup serve` (a pipe it reads;
    /// non-blocking, so a busy daemon costs events, never time).
    daemon: Option<File>,
    verbose: bool,
    attempt_id: String,
    lock: String,
}

impl Reporter {
    /// `events`: a path (appended to, created 0600) or `-` for stderr.
    pub(crate) fn new(
        events: Option<&Path>,
        verbose: bool,
        attempt_id: &str,
        lock: &Path,
    ) -> Result<Self> {
        let sink = match events {
            None => None,
            Some(p) if p.as_os_str() == "-" => Some(Sink::Stderr),
            Some(p) => Some(Sink::File(
                OpenOptions::new()
                    .append(true)
                    .create(true)
                    .mode(0o600)
                    .open(p)
                    .map_err(|e| {
                        Error::io(format!("cannot open events file {}: {e}", p.display()))
                    })?,
            )),
        };
        Ok(Self {
            sink,
            daemon: None,
            verbose,
            attempt_id: attempt_id.to_owned(),
            lock: lock.display().to_string(),
        })
    }

    /// Emit one event with its extra fields. Write errors are ignored: the
    /// attempt matters more than its log.
    pub(crate) fn event(&mut self, event: &str, fields: Value) {
        if self.sink.is_none() && self.daemon.is_none() {
            return;
        }
        let mut obj = Map::new();
        obj.insert("ts".into(), rfc3339(SystemTime::now()).into());
        obj.insert("event".into(), event.into());
        obj.insert("attempt_id".into(), self.attempt_id.clone().into());
        obj.insert("lock".into(), self.lock.clone().into());
        if let Value::Object(extra) = fields {
            obj.extend(extra);
        }
        let mut line = Value::Object(obj).to_string();
        line.push('\n');
        let _ = match &mut self.sink {
            None => Ok(()),
            Some(Sink::Stderr) => io::stderr().write_all(line.as_bytes()),
            Some(Sink::File(f)) => f.write_all(line.as_bytes()),
        };
        if let Some(d) = &mut self.daemon {
            // One write: a line of at most PIPE_BUF bytes is atomic.
            let _ = d.write(line.as_bytes());
        }
    }

    /// Also write every event to `file` (`LOCKSUP_DAEMON_EVENTS_FD`, set by `locksup serve`).
    pub(crate) fn tee(&mut self, file: File) {
        self.daemon = Some(file);
    }

    /// A human-readable line on stderr with `--verbose`.
    pub(crate) fn say(&self, text: impl AsRef<str>) {
        if self.verbose {
            let _ = writeln!(io::stderr(), "locksup: {}", text.as_ref());
        }
    }

    /// A line on stderr whatever the verbosity: for things that went wrong.
    pub(crate) fn warn(&self, text: impl AsRef<str>) {
        let _ = writeln!(io::stderr(), "locksup: {}", text.as_ref());
    }
}
