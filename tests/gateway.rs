//! The Node gateway example (`examples/gateway.mjs`) against the real
//! binary: concurrent attempts on one session, each appending its records
//! under the lock and heartbeating by touching the lock file, must leave a
//! JSONL file whose attempts never interleave; exit statuses map to
//! outcomes (done, busy, timed out).

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::*;

const GATEWAY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gateway.mjs");

fn node() -> Option<&'static str> {
    let ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("node is not installed; skipping (CI installs nodejs)");
    }
    ok.then_some("node")
}

fn gateway(env: &Env, session: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let mut cmd = env.command(node().unwrap_or("node"));
    cmd.arg(GATEWAY)
        .arg("--session")
        .arg(session)
        .args(extra)
        .env("LOCKSUP", env!("CARGO_BIN_EXE_locksup"));
    let o = run_to_end(cmd);
    assert_eq!(o.code, 0, "{o:?}");
    let line = o
        .stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("no summary: {o:?}"));
    json(line)
}

/// Each attempt's records, in file order, must form one contiguous block
/// start, step 1..n, end.
fn assert_not_interleaved(text: &str, steps: u64) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut current: Option<(String, u64)> = None;
    for line in text.lines() {
        let r = json(line);
        if r["phase"] == "repair" {
            continue;
        }
        let id = r["attempt"].as_str().expect("attempt id").to_string();
        let seq = r["seq"].as_u64().expect("seq");
        match &current {
            None => {
                assert_eq!(seq, 0, "block of {id} does not start with its start record");
                assert!(seen.insert(id.clone()), "attempt {id} wrote twice");
                current = Some((id, 0));
            }
            Some((cur, last)) => {
                assert_eq!(&id, cur, "attempt {id} interleaved with {cur}:\n{text}");
                assert_eq!(seq, last + 1, "records of {id} out of order");
                current = if seq == steps + 1 {
                    None
                } else {
                    Some((id, seq))
                };
            }
        }
    }
    assert!(current.is_none(), "an attempt did not finish its block");
    seen
}

#[test]
fn concurrent_attempts_never_interleave_in_the_session_file() {
    if node().is_none() {
        return;
    }
    let env = Env::new();
    let session = env.join("session.jsonl");
    let s = gateway(
        &env,
        &session,
        &[
            "--attempts",
            "8",
            "--steps",
            "4",
            "--step-ms",
            "15",
            "--wait",
            "60s",
            "--watchdog",
            "2s",
        ],
    );
    assert_eq!(s["done"], 8, "{s}");
    let text = std::fs::read_to_string(&session).expect("session file");
    assert_eq!(assert_not_interleaved(&text, 4).len(), 8);
    assert!(lock_is_free(&env.join("session.jsonl.lock")));
}

#[test]
fn outcomes_map_busy_and_timed_out() {
    if node().is_none() {
        return;
    }
    let env = Env::new();
    // Nobody waits: one attempt gets the session, the others are busy.
    let session = env.join("busy.jsonl");
    let s = gateway(
        &env,
        &session,
        &[
            "--attempts",
            "5",
            "--steps",
            "10",
            "--step-ms",
            "30",
            "--wait",
            "0",
        ],
    );
    assert_eq!(
        s["done"].as_u64().unwrap_or(0) + s["busy"].as_u64().unwrap_or(0),
        5,
        "{s}"
    );
    assert!(s["done"].as_u64().unwrap_or(0) >= 1, "{s}");
    assert!(s["busy"].as_u64().unwrap_or(0) >= 1, "{s}");
    assert_not_interleaved(&std::fs::read_to_string(&session).expect("session"), 10);
    // A timeout shorter than the work: timed out.
    let session = env.join("slow.jsonl");
    let s = gateway(
        &env,
        &session,
        &[
            "--attempts",
            "1",
            "--steps",
            "50",
            "--step-ms",
            "50",
            "--timeout",
            "300ms",
        ],
    );
    assert_eq!(s["timed_out"], 1, "{s}");
}

#[test]
fn the_next_attempt_repairs_a_torn_last_line_after_a_timeout() {
    if node().is_none() {
        return;
    }
    let env = Env::new();
    let session = env.join("torn.jsonl");
    // An attempt that writes half a record and hangs: timed out, killed.
    let s = gateway(
        &env,
        &session,
        &["--attempts", "1", "--tear", "--timeout", "500ms"],
    );
    assert_eq!(s["timed_out"], 1, "{s}");
    let torn = std::fs::read_to_string(&session).expect("session");
    assert!(!torn.ends_with('\n'), "{torn:?}");
    // The next ones hear "timeout", cut the torn line off and keep it.
    let s = gateway(&env, &session, &["--attempts", "2", "--steps", "2"]);
    assert_eq!(s["done"], 2, "{s}");
    let text = std::fs::read_to_string(&session).expect("session");
    let records: Vec<serde_json::Value> = text.lines().map(json).collect();
    let repairs: Vec<&serde_json::Value> =
        records.iter().filter(|r| r["phase"] == "repair").collect();
    assert_eq!(repairs.len(), 1, "{text}");
    assert_eq!(repairs[0]["previous"], "timeout");
    assert_eq!(repairs[0]["previous_attempt"], "gw-1");
    let kept = std::fs::read_to_string(env.join("torn.jsonl.torn")).expect("torn bytes kept");
    assert_eq!(kept, r#"{"attempt":"1","seq":1,"pha"#);
    assert_eq!(repairs[0]["torn_bytes"], kept.len());
    // Every record now parses, and the fences only grow.
    let fences: Vec<u64> = records
        .iter()
        .map(|r| r["fence"].as_u64().expect("fence"))
        .collect();
    assert!(fences.windows(2).all(|w| w[0] <= w[1]), "{fences:?}");
}
