//! `locksup status`: every lock file under some paths, and what the kernel
//! says about each, as a table or as JSON (the model is
//! [`crate::lock::status`]; `--daemon` asks `locksup serve` instead).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::cli::{StateFilter, StatusArgs};
use crate::config::Config;
use crate::duration::format_duration;
use crate::error::{Error, Result};
use crate::exit;
use crate::lock::status::{LockStatus, State, filter, json_document, snapshot};
use crate::paths;

/// Which paths to look at: those given, else the configured roots, made
/// absolute and normalised ([`crate::paths`]). `None` when there are none
/// at all.
pub(crate) fn targets(given: &[PathBuf], config: &Config) -> Option<Vec<(PathBuf, bool)>> {
    if !given.is_empty() {
        return Some(given.iter().map(|p| (paths::absolute(p), true)).collect());
    }
    if config.status.roots.is_empty() {
        return None;
    }
    Some(
        config
            .status
            .roots
            .iter()
            .map(|p| (paths::absolute(p), false))
            .collect(),
    )
}

impl From<StateFilter> for State {
    fn from(f: StateFilter) -> State {
        match f {
            StateFilter::Free => State::Free,
            StateFilter::Held => State::Held,
            StateFilter::Overdue => State::Overdue,
            StateFilter::Orphan => State::Orphan,
        }
    }
}

/// Short time for a table cell: `850ms`, `12s`, `3m12s`, `2h5m`.
pub(crate) fn short_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        return format!("{}ms", d.as_millis());
    }
    let secs = d.as_secs();
    let d = if secs >= 3600 {
        // Hours and minutes are enough.
        Duration::from_secs(secs - secs % 60)
    } else {
        Duration::from_secs(secs)
    };
    format_duration(d)
}

/// Time left for a table cell: `4m12s`, `-12s` once past, `-` without.
pub(crate) fn left_cell(left_ms: Option<i64>) -> String {
    match left_ms {
        None => "-".into(),
        Some(ms) if ms >= 0 => short_duration(Duration::from_millis(ms as u64)),
        Some(ms) => format!(
            "-{}",
            short_duration(Duration::from_millis(ms.unsigned_abs()))
        ),
    }
}

/// The widest a COMMAND cell gets before it is cut.
const COMMAND_WIDTH: usize = 40;

fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The table: a header and one row per lock.
pub(crate) fn table(locks: &[LockStatus]) -> String {
    let header = [
        "STATE", "SESSION", "PID", "COMMAND", "HELD", "LEFT", "WAITERS", "ATTEMPT",
    ];
    let rows: Vec<[String; 8]> = locks
        .iter()
        .map(|l| {
            let m = l.metadata.as_ref();
            let mut session = l.display_name();
            if let Some(k) = m.and_then(|m| m.session_key.as_deref()) {
                session = format!("{session} [{k}]");
            }
            let holders = l.holders.len();
            let pid = match l.pid() {
                Some(p) if holders > 1 => format!("{p}+{}", holders - 1),
                Some(p) => p.to_string(),
                None if l.state.is_held() => "?".into(),
                None => "-".into(),
            };
            [
                l.state.as_str().to_owned(),
                session,
                pid,
                l.command_line()
                    .map_or_else(|| "-".to_owned(), |c| cut(&c, COMMAND_WIDTH)),
                l.held.map_or_else(|| "-".to_owned(), short_duration),
                if l.state.is_held() {
                    left_cell(l.left_ms)
                } else {
                    "-".into()
                },
                l.waiting().to_string(),
                m.map_or_else(|| "-".to_owned(), |m| m.attempt_id.clone()),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths.iter()).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                // PID and WAITERS are numbers: right-aligned.
                if i == 2 || i == 6 {
                    s.push_str(&format!("{c:>w$}  "));
                } else {
                    s.push_str(&format!("{c:<w$}  "));
                }
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&mut out, &header);
    for r in &rows {
        let cells: Vec<&str> = r.iter().map(String::as_str).collect();
        line(&mut out, &cells);
    }
    // Then each queue, in order: `queue of NAME: 1 ID (pid P, 3s), ...`.
    for l in locks.iter().filter(|l| !l.queue.is_empty()) {
        let waiters: Vec<String> = l
            .queue
            .iter()
            .map(|w| {
                let id = w.info.as_ref().map_or("?", |i| i.attempt_id.as_str());
                let pid = w
                    .holder_pid
                    .map_or_else(|| "?".to_owned(), |p| p.to_string());
                let waited = w.waiting_ms.map_or_else(
                    || "-".to_owned(),
                    |ms| short_duration(Duration::from_millis(ms)),
                );
                format!("{} {id} (pid {pid}, {waited})", w.position)
            })
            .collect();
        out.push_str(&format!(
            "queue of {}: {}\n",
            l.display_name(),
            waiters.join(", ")
        ));
    }
    out
}

/// `locksup status`.
pub fn main(args: StatusArgs, config_path: Option<&Path>) -> Result<i32> {
    let config = Config::load(config_path)?;
    if args.etcd.backend == Some(crate::attempt::spec::Backend::Etcd) {
        return super::etcd::status(&args, &config);
    }
    let paths = targets(&args.paths, &config)
        .ok_or_else(|| Error::usage("no PATH given and no [status] roots in the configuration"))?;
    let now = SystemTime::now();
    let locks = snapshot(&paths)?;
    let states: Vec<State> = args.state.iter().map(|s| State::from(*s)).collect();
    let locks = filter(locks, &states, args.session_key.as_deref());
    let mut out = io::BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let written = if args.json {
        serde_json::to_writer(&mut out, &json_document(&locks, now))
            .map_err(io::Error::from)
            .and_then(|()| out.write_all(b"\n"))
    } else {
        out.write_all(table(&locks).as_bytes())
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => Ok(exit::SUCCESS),
        // A reader that went away (`| head`) is not our failure.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(exit::SUCCESS),
        Err(e) => Err(Error::io(format!("cannot write the status: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::status::tests::{at, file, meta};
    use crate::lock::status::{Evaluator, Kernel};
    use crate::procfs;
    use serde_json::Value;

    #[test]
    fn renders_table_and_json() {
        let me = std::process::id() as i32;
        let my_start = procfs::starttime(me).unwrap();
        let text = format!("1: FLOCK  ADVISORY  WRITE {me} fe:00:1 0 EOF\n");
        let kernel = Kernel::from_entries(procfs::parse_locks(&text));
        let mut ev = Evaluator::new();
        let now = at("2026-01-01T00:05:00.000Z");
        let got = ev.evaluate(&[file(1), file(2)], &kernel, now, &mut |f| {
            (f.id.inode == 1).then(|| meta(me, me, my_start))
        });
        let t = table(&got);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("STATE"));
        for col in [
            "SESSION", "PID", "COMMAND", "HELD", "LEFT", "WAITERS", "ATTEMPT",
        ] {
            assert!(lines[0].contains(col), "{col}");
        }
        assert!(lines[1].starts_with("held"));
        assert!(lines[1].contains("abc.jsonl [key]"));
        assert!(lines[1].contains("sleep 60"));
        assert!(lines[1].contains("5m"));
        assert!(lines[1].contains("att-1"));
        assert!(lines[2].starts_with("free"));
        let doc = serde_json::to_value(json_document(&got, now)).unwrap();
        let locks = doc["locks"].as_array().unwrap();
        assert_eq!(locks.len(), 2);
        assert_eq!(locks[0]["state"], "held");
        assert_eq!(locks[0]["pid"], me);
        assert_eq!(locks[0]["left_ms"], 300_000);
        assert_eq!(locks[0]["metadata"]["attempt_id"], "att-1");
        assert_eq!(locks[1]["state"], "free");
        assert_eq!(locks[1]["pid"], Value::Null);
        assert_eq!(locks[1]["holders"], serde_json::json!([]));
    }

    #[test]
    fn short_times() {
        assert_eq!(short_duration(Duration::from_millis(850)), "850ms");
        assert_eq!(short_duration(Duration::from_millis(12_400)), "12s");
        assert_eq!(short_duration(Duration::from_secs(192)), "3m12s");
        assert_eq!(short_duration(Duration::from_secs(7530)), "2h5m");
        assert_eq!(left_cell(None), "-");
        assert_eq!(left_cell(Some(-12_000)), "-12s");
    }
}
