//! `locksup timeline`: draw the lifecycle events of attempts (the JSON
//! lines of `locksup run --events`) as an SVG: one lane per lock, one bar
//! per attempt from acquisition to release, coloured by outcome, with its
//! wait before it and marks for signals, a stopped heartbeat, leaks and a
//! lost lease, on a wall-clock (UTC) time axis.
//!
//! The pipeline is a stream of parsed [`Event`]s ([`JsonLines`] makes them
//! from JSON lines; another source, such as the daemon's history, only has
//! to produce `Event`s too), folded by a [`Builder`] into one summary of
//! bounded size per attempt, then laid out and written by [`render`].
//!
//! Aggregation: a lane is drawn attempt by attempt while it has at most one
//! attempt per [`AGG_PX`] pixels of plot width, and few of its bars (at
//! most [`MAX_OVERLAPS`], or a quarter) would be drawn over another one of
//! the same row once bars under 1 px are widened to 1 px: shared holds, or
//! attempts too short for the time axis. Otherwise the lane is aggregated into
//! columns [`AGG_PX`] pixels wide: each column stacks the outcomes of the
//! attempts whose bar touches it, in proportion to their counts, shaded by
//! how many there are (relative to the lane's busiest column); a strip
//! below shows how many attempts were waiting; marks appear once per
//! column; the column's `<title>` carries the counts. More than
//! [`MAX_LANES`] locks: the busiest get their own lanes, the others share
//! one last lane.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde_json::Value;

use crate::attempt::state::Outcome as Ended;
use crate::cli::TimelineArgs;
use crate::error::{Error, Result};

mod events;
mod layout;
mod render;
mod time;

use events::*;
use layout::*;
use render::*;
use time::*;

/// Exit status when the input holds no event.
pub(crate) const NO_EVENTS: i32 = 1;

/// Milliseconds since the Unix epoch.
pub(crate) type Ms = i64;

/// Longest input line read; a longer one is skipped as malformed.
const MAX_LINE: usize = 64 * 1024;
/// Longest attempt id, lock path, command, error kept (characters).
const MAX_ID: usize = 128;
const MAX_LOCK: usize = 1024;
const MAX_TEXT: usize = 240;
const MAX_NAME: usize = 32;

// ---------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------

/// Read every input into `builder`; the number of malformed lines.
fn read_inputs(inputs: &[PathBuf], builder: &mut Builder) -> Result<u64> {
    let stdin_path = PathBuf::from("-");
    let inputs = if inputs.is_empty() {
        std::slice::from_ref(&stdin_path)
    } else {
        inputs
    };
    let mut malformed = 0;
    let mut stdin_read = false;
    for path in inputs {
        let (name, reader): (Cow<'_, str>, Box<dyn Read>) = if path.as_os_str() == "-" {
            if stdin_read {
                continue;
            }
            stdin_read = true;
            ("stdin".into(), Box::new(io::stdin()))
        } else {
            let f = File::open(path).map_err(|e| {
                Error::usage(format!("cannot open events file {}: {e}", path.display()))
            })?;
            (path.to_string_lossy(), Box::new(f))
        };
        let mut lines = JsonLines::new(BufReader::with_capacity(256 * 1024, reader));
        for event in lines.by_ref() {
            let event = event.map_err(|e| Error::usage(format!("cannot read {name}: {e}")))?;
            builder.push(event);
        }
        malformed += lines.malformed;
    }
    Ok(malformed)
}

/// Write `data` to `path` through a temporary file beside it, so a reader
/// never sees half a picture.
fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let fail = |e: io::Error| Error::usage(format!("cannot write {}: {e}", path.display()));
    let name = path
        .file_name()
        .ok_or_else(|| Error::usage(format!("cannot write {}: not a file name", path.display())))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let written = File::create(&tmp)
        .and_then(|mut f| f.write_all(data).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(())
}

/// `locksup timeline`.
pub fn main(args: TimelineArgs) -> Result<i32> {
    let mut builder = Builder::new();
    let malformed = read_inputs(&args.events, &mut builder)?;
    let skipped = plural(
        usize::try_from(malformed).unwrap_or(usize::MAX),
        "malformed line",
        "malformed lines",
    );
    if builder.events() == 0 {
        let why = if malformed > 0 {
            format!("no events found in the input ({skipped} skipped)")
        } else {
            "no events found in the input".to_owned()
        };
        return Err(Error::with_code(NO_EVENTS, why));
    }
    if malformed > 0 {
        let _ = writeln!(io::stderr(), "locksup: skipped {skipped}");
    }
    let svg = render(&builder.finish(), malformed);
    match &args.output {
        Some(path) => write_file(path, svg.as_bytes())?,
        None => {
            let mut stdout = io::stdout().lock();
            stdout
                .write_all(svg.as_bytes())
                .and_then(|()| stdout.flush())
                .map_err(|e| Error::usage(format!("cannot write the SVG: {e}")))?;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(event: &str, id: &str, ts: &str, extra: &str) -> String {
        format!(
            "{{\"ts\":\"{ts}\",\"event\":\"{event}\",\"attempt_id\":\"{id}\",\"lock\":\"/s/a.lock\"{extra}}}"
        )
    }

    #[test]
    fn civil_dates_round_trip() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(10_957), (2000, 1, 1));
        assert_eq!(civil(11_016), (2000, 2, 29));
        assert_eq!(civil(20_781), (2026, 11, 24));
        assert_eq!(civil(2_932_896), (9999, 12, 31));
        for d in (0..2_932_897).step_by(997) {
            let (y, m, day) = civil(d);
            assert_eq!(days_from_civil(y, m, day), d, "{y}-{m}-{day}");
        }
        assert_eq!(stamp(1_795_507_413_123), "2026-11-24 08:03:33.123");
    }

    #[test]
    fn steps_suit_spans_from_milliseconds_to_years() {
        let max = PLOT_W / 110.0;
        assert_eq!(Step::for_span(5.0, max), Step::Ms(1));
        assert_eq!(Step::for_span(2_000.0, max), Step::Ms(500));
        assert_eq!(Step::for_span(3_600_000.0, max), Step::Ms(10 * MINUTE));
        assert_eq!(Step::for_span(3.0 * DAY as f64, max), Step::Ms(12 * HOUR));
        assert_eq!(Step::for_span(400.0 * DAY as f64, max), Step::Months(3));
        let t0 = parse_ts("2026-11-24T08:03:33.123Z").unwrap_or(0);
        let ticks = Step::Ms(10 * MINUTE).ticks(t0, t0 + HOUR);
        assert_eq!(ticks.len(), 6);
        assert_eq!(Step::Ms(10 * MINUTE).label(ticks[0]), "08:10");
        let ticks = Step::Months(3).ticks(t0, t0 + 200 * DAY);
        assert_eq!(
            ticks.iter().map(|&t| date(t)).collect::<Vec<_>>(),
            ["2027-01-01", "2027-04-01"]
        );
        let ticks = Step::Months(12_000).ticks(0, 253_402_300_799_000);
        assert_eq!(ticks.len(), 8);
        assert_eq!(date(ticks[7]), "9000-01-01");
        assert_eq!(Step::Months(12_000).label(ticks[7]), "9000");
        let y10k = days_from_civil(10_000, 1, 1) * DAY;
        assert_eq!(Step::Months(12_000).label(y10k), "10000");
        assert_eq!(Step::Months(1).label(y10k), "10000-01");
        assert_eq!(Step::Ms(DAY).label(y10k), "01-01");
    }

    #[test]
    fn parsing_is_strict_on_the_envelope_and_lenient_on_the_rest() {
        let l = line(
            "acquired",
            "x",
            "2026-11-24T08:03:33.123Z",
            ",\"wait_ms\":\"no\"",
        );
        let e = parse_line(l.as_bytes()).expect("parses");
        assert_eq!(e.kind, Kind::Acquired { wait_ms: None });
        assert!(parse_line(line("end", "", "2026-11-24T08:03:33Z", "").as_bytes()).is_none());
        assert!(parse_line(line("end", "x", "yesterday", "").as_bytes()).is_none());
        assert!(parse_line(line("end", "x", "1900-01-01T00:00:00Z", "").as_bytes()).is_none());
        assert!(parse_line(b"[1,2]").is_none());
        assert!(parse_line(b"\xff\xfe").is_none());
        let l = line(
            "status",
            "x",
            "2026-11-24T08:03:33Z",
            ",\"reason\":\"lease-lost\"",
        );
        assert_eq!(
            parse_line(l.as_bytes()).map(|e| e.kind),
            Some(Kind::LeaseLost)
        );
        let l = line(
            "started",
            "a\u{1}b\nc",
            "2026-11-24T08:03:33Z",
            ",\"command\":[\"sh\",\"-c\",1]",
        );
        let l = l.replace('\u{1}', "\\u0001").replace('\n', "\\n");
        let e = parse_line(l.as_bytes()).expect("parses");
        assert_eq!(
            e.kind,
            Kind::Started {
                command: Some("sh -c".to_owned())
            }
        );
        let mut b = Builder::new();
        b.push(e.clone());
        b.push(e);
        let tl = b.finish();
        assert_eq!(tl.attempts(), 1);
        assert_eq!(tl.attempts[0].id, "a\u{fffd}b c");
    }

    #[test]
    fn overlong_and_malformed_lines_are_counted() {
        let mut text = line("acquired", "x", "2026-11-24T08:03:33.123Z", "");
        text.push_str("\nnot json\n\n   \n");
        text.push_str(&"x".repeat(MAX_LINE + 10));
        text.push('\n');
        text.push_str(&line(
            "end",
            "x",
            "2026-11-24T08:03:34Z",
            ",\"outcome\":\"exited\"",
        ));
        let mut lines = JsonLines::new(BufReader::with_capacity(16, text.as_bytes()));
        let events: Vec<Event> = lines.by_ref().filter_map(io::Result::ok).collect();
        assert_eq!(events.len(), 2);
        assert_eq!(lines.malformed, 2);
    }

    #[test]
    fn escaping_and_labels() {
        assert_eq!(
            esc("a<b & \"c\" 'd'>"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;"
        );
        assert_eq!(
            common_dir(["/srv/s/a.lock", "/srv/s/b/c.lock"].into_iter()),
            "/srv/s/"
        );
        assert_eq!(
            common_dir(["/srv/sa.lock", "/srv/sb.lock"].into_iter()),
            "/srv/"
        );
        assert_eq!(short_label("/srv/s/a.lock", "/srv/s/"), "a.lock");
        let mut names = ["s-10", "s-2", "s-02", "s-1b", "s-1", "t"];
        names.sort_by(|a, b| natural(a, b));
        assert_eq!(names, ["s-1", "s-1b", "s-2", "s-02", "s-10", "t"]);
        let long = format!("/srv/{}.lock", "x".repeat(60));
        let label = short_label(&long, "/");
        assert_eq!(label.chars().count(), LABEL_CHARS);
        assert!(label.starts_with('…') && label.ends_with("x.lock"));
    }

    #[test]
    fn a_kill_after_term_is_the_final_signal_in_any_order() {
        for order in [[0, 1], [1, 0]] {
            let lines = [
                line(
                    "signal",
                    "x",
                    "2026-11-24T08:00:01Z",
                    ",\"signal\":\"SIGTERM\",\"reason\":\"timeout\"",
                ),
                line(
                    "signal",
                    "x",
                    "2026-11-24T08:00:02Z",
                    ",\"signal\":\"SIGINT\",\"reason\":\"timeout\"",
                ),
            ];
            let mut b = Builder::new();
            for i in order {
                b.push(parse_line(lines[i].as_bytes()).expect("parses"));
            }
            let tl = b.finish();
            let a = &tl.attempts[0];
            assert_eq!(
                a.first_signal.as_ref().map(|s| s.signal.as_str()),
                Some("SIGTERM")
            );
            assert_eq!(
                a.final_signal.as_ref().map(|s| s.signal.as_str()),
                Some("SIGINT")
            );
        }
    }

    #[test]
    fn an_attempt_id_used_again_after_its_end_is_a_new_attempt() {
        let mut b = Builder::new();
        for (event, ts, extra) in [
            ("acquired", "2026-11-24T08:00:00Z", ""),
            (
                "end",
                "2026-11-24T08:00:01Z",
                ",\"outcome\":\"exited\",\"exit_code\":0",
            ),
            ("acquired", "2026-11-24T08:00:02Z", ""),
        ] {
            b.push(parse_line(line(event, "x", ts, extra).as_bytes()).expect("parses"));
        }
        let tl = b.finish();
        assert_eq!(tl.attempts(), 2);
        let svg = render(&tl, 0);
        assert_eq!(svg.matches("class=\"bar outcome-exited\"").count(), 1);
        assert_eq!(svg.matches("class=\"bar outcome-unknown open\"").count(), 1);
    }
}
