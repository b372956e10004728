//! `locksup timeline`: an incident made of real `locksup run` attempts
//! (a normal exit, a timeout that needs KILL, a leak, a busy conflict, an
//! expired wait) drawn as an SVG that parses, with one bar per attempt of
//! the right outcome, rendered to PNG by rsvg-convert (CI installs it);
//! 10,000 synthetic attempts aggregated in under a second; malformed lines
//! counted and skipped; no events, exit 1.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const SLACK: Duration = Duration::from_secs(2);

/// `locksup timeline ARGS...` to completion.
fn timeline(env: &Env, args: &[&std::ffi::OsStr]) -> Outcome {
    let mut c = env.cmd();
    c.arg("timeline").args(args);
    run_to_end(c)
}

fn os<S: AsRef<std::ffi::OsStr> + ?Sized>(s: &S) -> &std::ffi::OsStr {
    s.as_ref()
}

fn parse(svg: &str) -> roxmltree::Document<'_> {
    roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("the SVG is not XML ({e})"))
}

fn has_class(n: &roxmltree::Node, class: &str) -> bool {
    n.attribute("class")
        .is_some_and(|c| c.split_whitespace().any(|w| w == class))
}

fn with_class<'a, 'i>(
    doc: &'a roxmltree::Document<'i>,
    class: &'a str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> + 'a {
    doc.descendants().filter(move |n| has_class(n, class))
}

/// The text of the `<title>` child of `n`.
fn title_of(n: roxmltree::Node) -> String {
    n.children()
        .find(|c| c.has_tag_name("title"))
        .and_then(|t| t.text())
        .unwrap_or_default()
        .to_owned()
}

/// Every bar: (attempt id, the bar's classes, its group's title).
fn bars(doc: &roxmltree::Document) -> Vec<(String, String, String)> {
    with_class(doc, "bar")
        .map(|b| {
            let g = b.parent().expect("a bar sits in its attempt's group");
            (
                g.attribute("data-attempt").unwrap_or_default().to_owned(),
                b.attribute("class").unwrap_or_default().to_owned(),
                title_of(g),
            )
        })
        .collect()
}

fn num(n: &roxmltree::Node, attr: &str) -> f64 {
    n.attribute(attr)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no numeric {attr} on {n:?}"))
}

/// Run rsvg-convert on `svg`; `None` (and a note) when it is not
/// installed outside CI.
fn rsvg(svg: &Path, png: &Path) -> Option<()> {
    let out = match Command::new("rsvg-convert")
        .arg(svg)
        .arg("-o")
        .arg(png)
        .output()
    {
        Ok(o) => o,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("rsvg-convert not runnable ({e}); skipping the PNG check (CI installs it)");
            return None;
        }
        Err(e) => panic!("rsvg-convert: {e}"),
    };
    assert!(
        out.status.success(),
        "rsvg-convert failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(())
}

/// Pixels of a PNG that are exactly `rgb`.
fn pixels_of(png: &Path, rgb: [u8; 3]) -> (u32, u32, usize) {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        fs::File::open(png).expect("open the PNG"),
    ));
    let mut reader = decoder.read_info().expect("a PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("a buffer size")];
    let info = reader.next_frame(&mut buf).expect("a PNG frame");
    let step = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    let n = buf[..info.buffer_size()]
        .chunks_exact(step)
        .filter(|p| p[..3] == rgb && (step == 3 || p[3] == 255))
        .count();
    (info.width, info.height, n)
}

#[test]
fn an_incident_of_real_attempts_draws_one_bar_per_attempt_by_outcome() {
    let env = Env::new();
    let a = env.join("sessions/a.jsonl.lock");
    let b = env.join("sessions/b.jsonl.lock");
    fs::create_dir_all(env.join("sessions")).expect("mkdir");
    let events = env.join("events.jsonl");
    let guard = Guard::new();
    let run = |id: &str, lock: &Path, extra: &[&str], command: &[&str]| {
        let mut c = env.run(args![
            "--lock",
            lock,
            "--events",
            &events,
            "--attempt-id",
            id
        ]);
        c.args(extra).arg("--").args(command);
        c
    };

    // 1. A normal exit.
    let o = run_to_end(run("normal-1", &a, &[], &["sh", "-c", "sleep 0.2"]));
    assert_eq!(o.code, 0, "{o:?}");

    // 2. A timeout that needs KILL: the command ignores TERM.
    let mut r = spawn(
        run(
            "timeout-2",
            &a,
            &["--timeout", "300ms", "--grace", "300ms"],
            &["sh", "-c", "trap '' TERM; echo $$; exec sleep 1000"],
        ),
        &guard,
    );
    guard.add(r.out.expect_pid("the command's pid", SOON));
    assert_eq!(r.code(LIMIT), 137, "stderr: {:?}", r.err.seen);

    // 3. A leak: the test takes a copy of the attempt's locked descriptor,
    // so the lock outlives the attempt.
    let mut r = spawn(
        run(
            "leak-3",
            &b,
            &["--timeout", "300ms", "--grace", "300ms"],
            &["sh", "-c", "echo $$ $LOCKSUP_LOCK_FD; exec sleep 1000"],
        ),
        &guard,
    );
    let line = r.out.expect("pid and fd", SOON);
    let (pid, fd) = line.split_once(' ').expect("pid fd");
    let (pid, fd): (i32, i32) = (pid.parse().expect("pid"), fd.parse().expect("fd"));
    guard.add(pid);
    let stolen = steal_fd(pid, fd);
    assert_eq!(r.code(LIMIT), 124, "stderr: {:?}", r.err.seen);

    // 4. Busy: the leaked lock is still held. 5. A wait that runs out.
    let o = run_to_end(run("busy-4", &b, &["--no-wait"], &["true"]));
    assert_eq!(o.code, 75, "{o:?}");
    let o = run_to_end(run("wait-5", &b, &["--wait", "200ms"], &["true"]));
    assert_eq!(o.code, 75, "{o:?}");
    drop(stolen);

    let svg_path = env.join("incident.svg");
    let o = timeline(&env, &[os(&events), os("--output"), os(&svg_path)]);
    assert_eq!(o.code, 0, "{o:?}");
    assert!(o.stdout.is_empty() && o.stderr.is_empty(), "{o:?}");
    let svg = fs::read_to_string(&svg_path).expect("the SVG");
    let doc = parse(&svg);
    assert_eq!(doc.root_element().tag_name().name(), "svg");

    let bars = bars(&doc);
    let by_id: BTreeMap<&str, (&str, &str)> = bars
        .iter()
        .map(|(id, class, title)| (id.as_str(), (class.as_str(), title.as_str())))
        .collect();
    assert_eq!(bars.len(), 5, "one bar per attempt: {bars:#?}");
    assert_eq!(by_id.len(), 5, "{bars:#?}");
    for (id, outcome) in [
        ("normal-1", "outcome-exited"),
        ("timeout-2", "outcome-timeout"),
        ("leak-3", "outcome-timeout"),
        ("busy-4", "outcome-busy"),
        ("wait-5", "outcome-wait-expired"),
    ] {
        let (class, title) = by_id
            .get(id)
            .unwrap_or_else(|| panic!("no bar for {id}: {bars:#?}"));
        assert!(
            class.split_whitespace().any(|c| c == outcome),
            "{id}: {class}"
        );
        assert!(title.contains(&format!("attempt {id}")), "{title}");
    }
    let (_, title) = by_id["timeout-2"];
    assert!(
        title.contains("exit code 137") && title.contains("SIGKILL") && title.contains("held "),
        "{title}"
    );
    assert!(by_id["normal-1"].1.contains("exit code 0"));
    assert!(
        by_id["normal-1"].1.contains("\nwaited "),
        "{}",
        by_id["normal-1"].1
    );
    assert!(by_id["wait-5"].1.contains("never held the lock"));

    // Two lanes, drawn bar by bar, labelled by the lock's path.
    let lanes: Vec<_> = with_class(&doc, "lane").collect();
    assert_eq!(lanes.len(), 2);
    let locks: Vec<&str> = lanes
        .iter()
        .filter_map(|l| l.attribute("data-lock"))
        .collect();
    assert_eq!(locks, [a.to_str().unwrap(), b.to_str().unwrap()]);
    assert!(lanes.iter().all(|l| !has_class(l, "aggregated")));

    // Marks: TERM for the timeout and the leak, KILL after it for the
    // timeout only, the leak and its dashed tail; the expired wait's bar.
    // (x, title) of the marks of a kind; the legend's have no title.
    let marks = |class| -> Vec<(f64, String)> {
        with_class(&doc, class)
            .filter(|m| !title_of(*m).is_empty())
            .map(|m| {
                let x = m
                    .attribute("d")
                    .and_then(|d| d[1..].split(' ').next())
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(0.0);
                (x, title_of(m))
            })
            .collect()
    };
    let first = marks("signal-first");
    let kill = marks("signal-final");
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(kill.len(), 1, "{kill:?}");
    assert!(kill[0].1.contains("SIGKILL") && kill[0].1.contains("timeout-2"));
    let term = first
        .iter()
        .find(|(_, t)| t.contains("timeout-2"))
        .expect("TERM of timeout-2");
    assert!(
        term.1.contains("SIGTERM") && term.0 < kill[0].0,
        "{term:?} {kill:?}"
    );
    let leak = marks("leak");
    assert_eq!(leak.len(), 1, "{leak:?}");
    assert!(leak[0].1.contains("leak-3"));
    assert_eq!(with_class(&doc, "leak-tail").count(), 1);
    // The expired wait sits in the lane's wait row, below the bars of the
    // attempts that held the lock, and lasts 200 ms; the busy conflict,
    // which took no time, is a tick across the lane.
    let bar_of = |id: &str| {
        with_class(&doc, "bar")
            .find(|b| b.parent().and_then(|g| g.attribute("data-attempt")) == Some(id))
            .unwrap_or_else(|| panic!("no bar for {id}"))
    };
    let (held, waited, busy) = (bar_of("leak-3"), bar_of("wait-5"), bar_of("busy-4"));
    assert!(num(&waited, "y") > num(&held, "y") + num(&held, "height") - 1.0);
    assert_eq!(num(&busy, "y"), num(&held, "y"));
    assert!(num(&busy, "height") > num(&held, "height") + num(&waited, "height") - 2.0);
    let px_per_s = num(&bar_of("normal-1"), "width") / 0.2;
    let wait_s = num(&waited, "width") / px_per_s;
    assert!((0.15..0.6).contains(&wait_s), "a wait of {wait_s} s");

    // rsvg-convert renders it, with the outcomes' colours.
    let png = env.join("incident.png");
    if rsvg(&svg_path, &png).is_none() {
        return;
    }
    let size = fs::metadata(&png).expect("the PNG").len();
    assert!(size > 5_000, "PNG of {size} bytes");
    let (w, h, exited) = pixels_of(&png, [0x3a, 0x9a, 0x5b]);
    assert_eq!(w, 1200);
    assert!(h > 150, "{w}x{h}");
    let (_, _, timeout) = pixels_of(&png, [0xe6, 0x9f, 0x00]);
    assert!(exited > 200, "{exited} pixels of the exited colour");
    assert!(timeout > 200, "{timeout} pixels of the timeout colour");
}

/// An events file of `locks` × `per_lock` attempts, each `hold` long: every
/// 10th times out (TERM, then KILL), every 25th finds its lock busy, every
/// 3rd waits a little. Returns the text and the number of timeouts.
fn synthetic(locks: usize, per_lock: usize) -> (String, usize) {
    let t0: i64 = 1_795_507_200_000; // 2026-11-24T00:00:00Z
    let ts = |ms: i64| {
        let t = std::time::UNIX_EPOCH + Duration::from_millis(ms as u64);
        humantime::format_rfc3339_millis(t).to_string()
    };
    let mut out = String::new();
    let mut timeouts = 0;
    for l in 0..locks {
        let lock = format!("/srv/sessions/s-{l}.jsonl.lock");
        let mut t = t0 + l as i64 * 37;
        for k in 0..per_lock {
            let id = format!("{l:02}-{k:04}");
            let mut ev = |at: i64, event: &str, extra: &str| {
                out.push_str(&format!(
                    "{{\"ts\":\"{}\",\"event\":\"{event}\",\"attempt_id\":\"{id}\",\"lock\":\"{lock}\"{extra}}}\n",
                    ts(at)
                ));
            };
            if k % 25 == 24 {
                ev(t, "conflict", ",\"reason\":\"busy\"");
                ev(
                    t,
                    "end",
                    ",\"exit_code\":75,\"outcome\":\"busy\",\"error\":null",
                );
                t += 20;
                continue;
            }
            let wait = if k % 3 == 0 { 150 } else { 0 };
            if wait > 0 {
                ev(t, "waiting", ",\"holders\":[1]");
            }
            t += wait;
            ev(t, "acquired", &format!(",\"wait_ms\":{wait}"));
            ev(t, "started", ",\"pid\":1,\"pgid\":1");
            let hold = 300 + (k as i64 * 7919) % 500;
            if k % 10 == 5 {
                timeouts += 1;
                ev(
                    t + hold,
                    "signal",
                    ",\"signal\":\"SIGTERM\",\"reason\":\"timeout\"",
                );
                ev(
                    t + hold + 100,
                    "signal",
                    ",\"signal\":\"SIGKILL\",\"reason\":\"timeout\"",
                );
                ev(t + hold + 100, "exited", ",\"signal\":\"SIGKILL\"");
                ev(t + hold + 101, "released", ",\"ms_after_exit\":0.1");
                ev(
                    t + hold + 101,
                    "end",
                    ",\"exit_code\":137,\"outcome\":\"timeout\"",
                );
                t += hold + 101;
            } else {
                ev(t + hold, "exited", ",\"status\":0");
                ev(t + hold, "released", ",\"ms_after_exit\":0.1");
                ev(t + hold, "end", ",\"exit_code\":0,\"outcome\":\"exited\"");
                t += hold;
            }
            t += 5;
        }
    }
    (out, timeouts)
}

#[test]
fn ten_thousand_attempts_on_twenty_locks_are_aggregated_in_under_a_second() {
    let env = Env::new();
    let (text, timeouts) = synthetic(20, 500);
    let events = env.write("big.jsonl", &text);
    let svg_path = env.join("big.svg");
    let started = Instant::now();
    let o = timeline(&env, &[os(&events), os("-o"), os(&svg_path)]);
    let took = started.elapsed();
    eprintln!(
        "timeline of 10,000 attempts ({} lines): {took:?}",
        text.lines().count()
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");

    let svg = fs::read_to_string(&svg_path).expect("the SVG");
    let doc = parse(&svg);
    let lanes: Vec<_> = with_class(&doc, "lane").collect();
    assert_eq!(lanes.len(), 20);
    assert!(lanes.iter().all(|l| has_class(l, "aggregated")));
    // Lanes in natural order: s-2 before s-10.
    let locks: Vec<&str> = lanes
        .iter()
        .filter_map(|l| l.attribute("data-lock"))
        .collect();
    assert_eq!(locks[2], "/srv/sessions/s-2.jsonl.lock");
    assert_eq!(locks[10], "/srv/sessions/s-10.jsonl.lock");
    assert_eq!(with_class(&doc, "bar").count(), 0, "no per-attempt bar");
    let columns: Vec<_> = with_class(&doc, "column").collect();
    assert!(
        columns.len() > 20 * 100,
        "{} aggregated columns",
        columns.len()
    );
    assert!(columns.len() <= 20 * 235, "{} columns", columns.len());
    assert!(with_class(&doc, "agg").any(|n| has_class(&n, "outcome-timeout")));
    assert!(with_class(&doc, "agg").any(|n| has_class(&n, "outcome-busy")));
    // Every column says what it holds.
    for c in &columns {
        let t = title_of(*c);
        assert!(t.contains(" UTC: ") && t.contains("attempt"), "{t}");
    }
    let labels: Vec<String> = with_class(&doc, "label").map(title_of).collect();
    assert!(
        labels
            .iter()
            .all(|l| l.ends_with(": 500 attempts, aggregated")),
        "{labels:?}"
    );
    assert!(
        svg.contains(&format!(">timeout ({timeouts})<")),
        "the legend counts the timeouts"
    );
    assert!(svg.len() < 4 << 20, "SVG of {} bytes", svg.len());
}

#[test]
fn malformed_lines_are_counted_and_skipped_and_text_is_escaped() {
    let env = Env::new();
    let hostile = "<script>&\\\"'</script>";
    let good = |event: &str, ts: &str, extra: &str| {
        format!(
            "{{\"ts\":\"{ts}\",\"event\":\"{event}\",\"attempt_id\":\"{hostile}\",\"lock\":\"/tmp/a&b<c>.lock\"{extra}}}\n"
        )
    };
    let mut text = Vec::new();
    text.extend(good("acquired", "2026-11-24T08:00:00.000Z", "").as_bytes());
    text.extend(b"not json\n{\n[]\n{\"event\":\"end\"}\n");
    text.extend(b"{\"ts\":\"2026-13-45T99:00:00Z\",\"event\":\"end\",\"attempt_id\":\"x\",\"lock\":\"l\"}\n");
    text.extend(format!("{{\"pad\":\"{}\"}}\n", "x".repeat(70_000)).as_bytes());
    text.extend(b"\xff\xfe\xfd\n\n   \n");
    text.extend(
        good(
            "end",
            "2026-11-24T08:00:01.000Z",
            ",\"outcome\":\"exited\",\"exit_code\":0,\"error\":\"\\u0000</title>\"",
        )
        .as_bytes(),
    );
    text.extend(b"{\"ts\":\"2026-11-24T08:00:0");
    let events = env.join("events.jsonl");
    fs::write(&events, &text).expect("write");

    let o = timeline(&env, &[os(&events)]);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(o.stderr, "locksup: skipped 8 malformed lines\n");
    assert!(!o.stdout.contains("<script>"));
    let doc = parse(&o.stdout);
    let bars = bars(&doc);
    assert_eq!(bars.len(), 1, "{bars:?}");
    let want = "<script>&\"'</script>";
    assert_eq!(bars[0].0, want);
    assert!(
        bars[0].2.contains(&format!("attempt {want}")),
        "{}",
        bars[0].2
    );
    assert!(bars[0].2.contains("lock /tmp/a&b<c>.lock"));
    assert!(
        bars[0].2.contains("error: \u{fffd}</title>"),
        "{}",
        bars[0].2
    );
    assert!(o.stdout.contains("8 malformed lines skipped"));
}

#[test]
fn an_attempt_without_end_runs_open_ended_to_the_last_time_seen() {
    let env = Env::new();
    let events = env.write(
        "events.jsonl",
        concat!(
            r#"{"ts":"2026-11-24T08:00:00.000Z","event":"acquired","attempt_id":"running","lock":"/l/a.lock"}"#,
            "\n",
            r#"{"ts":"2026-11-24T08:00:02.000Z","event":"heartbeat","attempt_id":"running","lock":"/l/a.lock"}"#,
            "\n",
            r#"{"ts":"2026-11-24T08:00:01.000Z","event":"acquired","attempt_id":"done","lock":"/l/b.lock"}"#,
            "\n",
            r#"{"ts":"2026-11-24T08:00:09.000Z","event":"released","attempt_id":"done","lock":"/l/b.lock"}"#,
            "\n",
            r#"{"ts":"2026-11-24T08:00:09.000Z","event":"end","attempt_id":"done","lock":"/l/b.lock","outcome":"exited","exit_code":0}"#,
            "\n",
        ),
    );
    let o = timeline(&env, &[os(&events)]);
    assert_eq!(o.code, 0, "{o:?}");
    let doc = parse(&o.stdout);
    let bar = |id: &str| {
        with_class(&doc, "bar")
            .find(|b| b.parent().and_then(|g| g.attribute("data-attempt")) == Some(id))
            .unwrap_or_else(|| panic!("no bar for {id}"))
    };
    let (running, done) = (bar("running"), bar("done"));
    assert!(has_class(&running, "outcome-unknown") && has_class(&running, "open"));
    assert!(has_class(&done, "outcome-exited") && !has_class(&done, "open"));
    let end = |b: &roxmltree::Node| num(b, "x") + num(b, "width");
    assert!(
        (end(&running) - end(&done)).abs() < 0.2,
        "both end at 08:00:09"
    );
    let title = title_of(running.parent().expect("group"));
    assert!(
        title.contains("no end event") && !title.contains("command"),
        "{title}"
    );
}

#[test]
fn watchdog_lease_loss_and_signals_have_their_marks() {
    let env = Env::new();
    let mut text = String::new();
    let mut ev = |ts: &str, id: &str, event: &str, extra: &str| {
        text.push_str(&format!(
            "{{\"ts\":\"2026-11-24T08:00:{ts}Z\",\"event\":\"{event}\",\"attempt_id\":\"{id}\",\"lock\":\"/l/a.lock\"{extra}}}\n"
        ));
    };
    ev("00.000", "w", "acquired", "");
    ev(
        "00.001",
        "w",
        "started",
        ",\"command\":[\"agent-run\",\"abc\"]",
    );
    ev("01.000", "w", "heartbeat", ",\"source\":\"notify\"");
    ev("02.000", "w", "heartbeat", ",\"source\":\"notify\"");
    ev(
        "07.000",
        "w",
        "signal",
        ",\"signal\":\"SIGTERM\",\"reason\":\"watchdog\"",
    );
    ev("07.100", "w", "released", "");
    ev(
        "07.100",
        "w",
        "end",
        ",\"outcome\":\"watchdog\",\"exit_code\":124",
    );
    ev("08.000", "e", "acquired", "");
    ev(
        "09.000",
        "e",
        "signal",
        ",\"signal\":\"SIGTERM\",\"reason\":\"lease-lost\"",
    );
    ev(
        "09.500",
        "e",
        "end",
        ",\"outcome\":\"lease-lost\",\"exit_code\":124",
    );
    let events = env.write("events.jsonl", &text);
    let o = timeline(&env, &[os(&events)]);
    assert_eq!(o.code, 0, "{o:?}");
    let doc = parse(&o.stdout);
    let bars = bars(&doc);
    assert_eq!(bars.len(), 2);
    assert!(bars[0].1.contains("outcome-watchdog"), "{bars:?}");
    assert!(
        bars[0].2.contains("command: agent-run abc"),
        "{}",
        bars[0].2
    );
    assert!(
        bars[0]
            .2
            .contains("last heartbeat 5.00 s before the watchdog"),
        "{}",
        bars[0].2
    );
    assert!(bars[1].1.contains("outcome-lease-lost"), "{bars:?}");
    assert_eq!(
        with_class(&doc, "heartbeat-last").count(),
        2,
        "mark and legend"
    );
    assert_eq!(with_class(&doc, "hb-gap").count(), 1);
    assert_eq!(
        with_class(&doc, "lease-lost")
            .filter(|n| has_class(n, "mark"))
            .count(),
        2,
        "mark and legend"
    );
}

#[test]
fn no_events_exits_1_and_bad_paths_125() {
    let env = Env::new();
    let empty = env.write("empty.jsonl", "");
    let junk = env.write("junk.jsonl", "junk\n{}\n");
    for (args, code, says) in [
        (vec![os(&empty)], 1, "no events found in the input"),
        (vec![], 1, "no events found in the input"),
        (vec![os("-")], 1, "no events found in the input"),
        (
            vec![os(&junk)],
            1,
            "no events found in the input (2 malformed lines skipped)",
        ),
        (
            vec![os("missing.jsonl")],
            125,
            "cannot open events file missing.jsonl",
        ),
        (vec![os(env.dir.path())], 125, "cannot read"),
        (vec![os("--bogus")], 125, "unexpected argument"),
    ] {
        let o = timeline(&env, &args);
        assert_eq!(o.code, code, "{args:?}: {o:?}");
        assert_one_error_line(&o);
        assert!(o.stderr.contains(says), "{args:?}: {o:?}");
        assert!(o.stdout.is_empty());
    }

    // Stdin, and --output somewhere it cannot be written.
    let events = env.write(
        "one.jsonl",
        "{\"ts\":\"2026-11-24T08:00:00Z\",\"event\":\"acquired\",\"attempt_id\":\"x\",\"lock\":\"/l\"}\n",
    );
    let mut c = env.cmd();
    c.args(["timeline", "-"])
        .stdin(Stdio::from(fs::File::open(&events).expect("open")));
    let o = run_to_end(c);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(bars(&parse(&o.stdout)).len(), 1);
    let o = timeline(
        &env,
        &[
            os(&events),
            os("--output"),
            os(&env.join("no/such/dir/t.svg")),
        ],
    );
    assert_eq!(o.code, 125, "{o:?}");
    assert_one_error_line(&o);
    assert!(o.stderr.contains("cannot write"), "{o:?}");
    assert!(o.elapsed < LIMIT - SLACK);
}
