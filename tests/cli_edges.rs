//! Operator rough edges, on the real binary: durations exactly as
//! systemd.time(7) writes them, clap errors on one line with their
//! suggestion and the subcommand's help, cancel of a missing relative
//! session, paths that do not depend on how they were typed, a session
//! that names a directory, and signal-name completions.

mod common;
mod observe;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::{
    Env, Guard, Outcome, assert_one_error_line, json, rfc3339, run_to_end, secs_from_now, spawn,
};
use observe::{BOUND, start_attempt};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `locksup ARGS...` in the test's environment, to the end.
fn locksup(env: &Env, args: &[&str]) -> Outcome {
    let mut c = env.cmd();
    c.args(args);
    run_to_end(c)
}

/// A usage error: status 125 and one `locksup: ` line on stderr.
fn assert_usage_error(o: &Outcome) {
    assert_eq!(o.code, 125, "{o:?}");
    assert_one_error_line(o);
}

// ---------------------------------------------------------------------------
// Durations
// ---------------------------------------------------------------------------

#[test]
fn durations_outside_systemds_grammar_are_usage_errors_and_run_nothing() {
    let env = Env::new();
    let lock = env.join("d.lock");
    let marker = env.join("ran");
    let cases: &[(&str, &str)] = &[
        ("--timeout", "42D"),
        ("--timeout", "1H"),
        ("--timeout", "5mins"),
        ("--timeout", "10secs"),
        ("--timeout", "2hrs"),
        ("--timeout", "inf"),
        ("--timeout", "INFINITY"),
        ("--timeout", "1e3"),
        ("--timeout", "0.9ns"),
        ("--max-timeout", "1e-10"),
        ("--watchdog", "0.0000000001"),
        ("--ready-timeout", ".0000000001s"),
        ("--grace", "5.s"),
        ("--wait", "12.34.56"),
    ];
    for (opt, val) in cases {
        let o = locksup(
            &env,
            &[
                "run",
                "--lock",
                s(&lock),
                opt,
                val,
                "--",
                "touch",
                s(&marker),
            ],
        );
        assert_usage_error(&o);
        assert!(
            o.stderr.contains(&format!("'{val}'")),
            "{opt} {val}: the error names the text: {}",
            o.stderr
        );
        assert!(!marker.exists(), "{opt} {val}: the command ran");
    }
    // A positive value below the resolution says so, instead of meaning
    // "no limit".
    let o = locksup(
        &env,
        &["run", "--lock", s(&lock), "-t", "0.9ns", "--", "true"],
    );
    assert!(o.stderr.contains("below 1ns"), "{}", o.stderr);
    // A case-only mistake gets a hint.
    let o = locksup(
        &env,
        &["run", "--lock", s(&lock), "-t", "42D", "--", "true"],
    );
    assert!(o.stderr.contains("case-sensitive"), "{}", o.stderr);
    // Over the cap.
    let o = locksup(
        &env,
        &["run", "--lock", s(&lock), "-t", "101y", "--", "true"],
    );
    assert_usage_error(&o);
    assert!(o.stderr.contains("too large"), "{}", o.stderr);
}

/// The deadline `locksup run` gives the command for `--timeout VAL`, in
/// seconds from now.
fn deadline_in(env: &Env, timeout: &str) -> f64 {
    let lock = env.join("deadline.lock");
    let o = locksup(
        env,
        &[
            "run",
            "--lock",
            s(&lock),
            "--timeout",
            timeout,
            "--",
            "sh",
            "-c",
            "echo \"$LOCKSUP_DEADLINE\"",
        ],
    );
    assert_eq!(o.code, 0, "--timeout {timeout:?}: {o:?}");
    secs_from_now(rfc3339(o.stdout.trim()))
}

#[test]
fn systemd_time_spans_mean_what_they_mean_to_systemd() {
    let env = Env::new();
    // (text, seconds): several parts, whitespace before a unit, systemd's
    // case-sensitive months and years, a bare number in seconds.
    let cases: &[(&str, f64)] = &[
        ("1h 30min", 5400.0),
        ("55s500ms", 55.5),
        ("2 h", 7200.0),
        ("3 seconds", 3.0),
        ("10sec", 10.0),
        ("48hr", 172_800.0),
        ("1m", 60.0),
        ("1M", 2_629_800.0),
        ("1y", 31_557_600.0),
        ("1.5", 1.5),
        ("+90", 90.0),
    ];
    for (text, want) in cases {
        let got = deadline_in(&env, text);
        // The deadline is counted from acquisition, a moment before the
        // command printed it: allow generous slack for a loaded machine.
        assert!(
            got <= *want + 0.5 && got >= *want - 10.0,
            "--timeout {text:?}: deadline in {got}s, want about {want}s"
        );
    }
}

// ---------------------------------------------------------------------------
// clap errors
// ---------------------------------------------------------------------------

#[test]
fn a_misspelt_option_keeps_clap_s_suggestion_and_points_at_the_subcommand_help() {
    let env = Env::new();
    let lock = env.join("c.lock");
    let o = locksup(
        &env,
        &["run", "--timout", "5s", "--lock", s(&lock), "--", "true"],
    );
    assert_usage_error(&o);
    assert!(
        o.stderr
            .contains("unexpected argument '--timout' (did you mean '--timeout'?)"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.trim_end().ends_with("(see 'locksup run --help')"),
        "{}",
        o.stderr
    );

    let o = locksup(&env, &["stauts"]);
    assert_usage_error(&o);
    assert!(
        o.stderr.contains("(did you mean 'status'?)"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr.trim_end().ends_with("(see 'locksup --help')"),
        "{}",
        o.stderr
    );

    // After the global option, and for a bad value (clap gives no usage
    // line for those).
    let o = locksup(
        &env,
        &["--config", s(&env.config), "cancel", "x", "--wiat", "5s"],
    );
    assert_usage_error(&o);
    assert!(
        o.stderr.contains("(did you mean '--wait'?)"),
        "{}",
        o.stderr
    );
    assert!(
        o.stderr
            .trim_end()
            .ends_with("(see 'locksup cancel --help')"),
        "{}",
        o.stderr
    );
    let o = locksup(&env, &["status", "--state", "hed"]);
    assert_usage_error(&o);
    assert!(
        o.stderr
            .trim_end()
            .ends_with("(see 'locksup status --help')"),
        "{}",
        o.stderr
    );
}

#[test]
fn a_negative_duration_is_called_negative() {
    let env = Env::new();
    let lock = env.join("n.lock");
    for args in [
        vec!["run", "--timeout", "-1s", "--lock", s(&lock), "--", "true"],
        vec!["run", "--lock", s(&lock), "-g", "-5", "--", "true"],
        vec!["cancel", s(&lock), "--wait", "-1s"],
    ] {
        let o = locksup(&env, &args);
        assert_usage_error(&o);
        assert!(
            o.stderr.contains("negative duration"),
            "{args:?}: {}",
            o.stderr
        );
    }
    // An option where a value belongs is not called negative.
    let o = locksup(
        &env,
        &["run", "--lock", s(&lock), "-t", "--verbose", "--", "true"],
    );
    assert_usage_error(&o);
    assert!(!o.stderr.contains("negative"), "{}", o.stderr);
}

// ---------------------------------------------------------------------------
// cancel of a relative session file that does not exist
// ---------------------------------------------------------------------------

#[test]
fn cancel_of_a_missing_relative_session_file_is_not_found() {
    let env = Env::new();
    let mut c = env.cmd();
    c.current_dir(env.path()).args(["cancel", "nope.jsonl"]);
    let o = run_to_end(c);
    assert_eq!(o.code, 1, "{o:?}");
    assert_one_error_line(&o);
    assert!(o.stderr.contains("nope.jsonl.lock"), "{}", o.stderr);
    // A word that could only be an attempt id still needs roots (125).
    let o = locksup(&env, &["cancel", "some-attempt"]);
    assert_usage_error(&o);
}

// ---------------------------------------------------------------------------
// Paths do not depend on how they were typed
// ---------------------------------------------------------------------------

/// `locksup ARGS...` run in `dir`.
fn locksup_in(env: &Env, dir: &Path, args: &[&str]) -> Outcome {
    let mut c = env.cmd();
    c.current_dir(dir).args(args);
    run_to_end(c)
}

/// The `path` keys of `locksup status --json ARGS...` run in `dir`.
fn status_paths(env: &Env, dir: &Path, args: &[&str]) -> Vec<String> {
    let mut all = vec!["status", "--json"];
    all.extend_from_slice(args);
    let o = locksup_in(env, dir, &all);
    assert_eq!(o.code, 0, "{args:?}: {o:?}");
    json(o.stdout.trim())["locks"]
        .as_array()
        .expect("locks array")
        .iter()
        .map(|l| l["path"].as_str().expect("path").to_owned())
        .collect()
}

#[test]
fn status_paths_are_the_same_however_the_directory_was_typed() {
    let env = Env::new();
    let root = env.path();
    let sub = root.join("sub");
    fs::create_dir(&sub).expect("mkdir");
    fs::write(sub.join("x.lock"), "").expect("write lock file");
    let want = vec![s(&sub.join("x.lock")).to_owned()];
    let slashed = format!("{}//", s(&root));
    for (dir, arg) in [
        (&root, "."),
        (&root, "./"),
        (&root, "./sub/."),
        (&root, slashed.as_str()),
        (&sub, ".."),
        (&sub, "../sub"),
        (&sub, "x.lock"),
        (&sub, "./x.lock"),
    ] {
        assert_eq!(
            status_paths(&env, dir, &[arg]),
            want,
            "status {arg} in {dir:?}"
        );
    }
}

#[test]
fn run_records_the_session_however_it_was_typed() {
    let env = Env::new();
    let root = env.path();
    let sub = root.join("sub");
    fs::create_dir(&sub).expect("mkdir");
    let want = format!(
        "{} {}",
        s(&root.join("s.jsonl")),
        s(&root.join("s.jsonl.lock"))
    );
    for (dir, session) in [
        (&root, "./s.jsonl"),
        (&root, ".//s.jsonl"),
        (&sub, "../s.jsonl"),
        (&sub, "./.././s.jsonl"),
    ] {
        let o = locksup_in(
            &env,
            dir,
            &[
                "run",
                "--session",
                session,
                "--",
                "sh",
                "-c",
                "echo \"$LOCKSUP_SESSION $LOCKSUP_LOCK_FILE\"",
            ],
        );
        assert_eq!(o.code, 0, "{session}: {o:?}");
        assert_eq!(o.stdout.trim(), want, "--session {session} in {dir:?}");
    }
}

#[test]
fn cancel_and_watch_name_the_lock_however_the_root_was_typed() {
    let env = Env::new();
    let guard = Guard::new();
    let root = env.path();
    let session = root.join("a.jsonl");
    let lock = root.join("a.jsonl.lock");
    let (mut sup, _) = start_attempt(
        &env,
        &guard,
        &[
            "--session",
            s(&session),
            "--attempt-id",
            "typed",
            "--timeout",
            "1h",
        ],
        &["sleep", "300"],
    );

    // watch ./ --json: the ready event lists the held lock by its plain path.
    let mut c = env.cmd();
    c.current_dir(&root).args(["watch", "./", "--json"]);
    let mut watch = spawn(c, &guard);
    let ready = watch
        .out
        .expect_match("ready event", BOUND, |l| l.contains("\"event\":\"ready\""));
    let ready = json(&ready);
    let paths: Vec<&str> = ready["locks"]
        .as_array()
        .expect("locks")
        .iter()
        .filter_map(|l| l["path"].as_str())
        .collect();
    assert_eq!(paths, vec![s(&lock)], "{ready}");
    drop(watch);

    // cancel by attempt id under --root .
    let o = locksup_in(
        &env,
        &root,
        &["cancel", "typed", "--root", ".", "--wait", "10s"],
    );
    assert_eq!(o.code, 0, "{o:?}");
    assert!(
        o.stdout.contains(&format!("holding {}", s(&lock))),
        "{}",
        o.stdout
    );
    assert!(!o.stdout.contains("/./"), "{}", o.stdout);
    assert_eq!(sup.code(BOUND), 143);
}

// ---------------------------------------------------------------------------
// A session that names a directory
// ---------------------------------------------------------------------------

#[test]
fn a_session_or_lock_that_names_a_directory_is_a_usage_error() {
    let env = Env::new();
    let root = env.path();
    let dir = root.join("dir");
    fs::create_dir(&dir).expect("mkdir");
    let marker = root.join("ran");
    let dir_slash = format!("{}/", s(&dir));
    let missing_slash = format!("{}/", s(&root.join("missing")));
    for (opt, val) in [
        ("--session", dir_slash.as_str()),
        ("--session", s(&dir)),
        ("--session", "."),
        ("--session", "dir/.."),
        ("--session", missing_slash.as_str()),
        ("--lock", dir_slash.as_str()),
        ("--lock", missing_slash.as_str()),
    ] {
        let o = locksup_in(&env, &root, &["run", opt, val, "--", "touch", s(&marker)]);
        assert_usage_error(&o);
        assert!(o.stderr.contains("directory"), "{opt} {val}: {}", o.stderr);
        assert!(!marker.exists(), "{opt} {val}: the command ran");
    }
    assert!(!dir.join(".lock").exists(), "dir/.lock was created");
    assert!(!root.join("dir.lock").exists(), "dir.lock was created");
    assert!(!root.join("missing").exists(), "missing was created");
    assert!(!root.join(".lock").exists(), ".lock was created");
}

// ---------------------------------------------------------------------------
// Completions
// ---------------------------------------------------------------------------

/// What the generated bash completion offers for `WORDS...` (the last
/// word being completed), run in `dir`.
fn bash_complete(env: &Env, dir: &Path, words: &[&str]) -> Vec<String> {
    let o = locksup(env, &["completions", "bash"]);
    assert_eq!(o.code, 0, "{o:?}");
    let script = env.write("locksup.bash", &o.stdout);
    let n = words.len();
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let probe = format!(
        "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE='{}'; \
         _locksup locksup '{}' '{}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        s(&script),
        quoted.join(" "),
        n - 1,
        words.join(" "),
        words[n - 1],
        words[n - 2],
    );
    let out = Command::new("bash")
        .current_dir(dir)
        .args(["--norc", "--noprofile", "-c", &probe])
        .output()
        .expect("run bash");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn signal_options_complete_signal_names_not_files() {
    let env = Env::new();
    let root = env.path();
    fs::write(root.join("TERMS.txt"), "").expect("write");
    for words in [
        &["locksup", "run", "--signal", "T"][..],
        &["locksup", "run", "-s", "T"][..],
        &["locksup", "run", "--final-signal", "T"][..],
        &["locksup", "cancel", "--signal", "T"][..],
    ] {
        let offered = bash_complete(&env, &root, words);
        assert!(
            offered.iter().any(|w| w == "TERM"),
            "{words:?}: {offered:?}"
        );
        assert!(
            !offered.iter().any(|w| w.contains("TERMS.txt")),
            "{words:?} offered a file: {offered:?}"
        );
    }
    // Numbers and other spellings are still accepted.
    let lock = root.join("sig.lock");
    for sig in ["9", "sigterm", "Hup"] {
        let o = locksup(
            &env,
            &["run", "--lock", s(&lock), "--signal", sig, "--", "true"],
        );
        assert_eq!(o.code, 0, "--signal {sig}: {o:?}");
    }
}

#[test]
fn completions_take_exactly_the_documented_shells() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish"] {
        let o = locksup(&env, &["completions", shell]);
        assert_eq!(o.code, 0, "{shell}: {o:?}");
        assert!(!o.stdout.is_empty());
    }
    for shell in ["elvish", "powershell"] {
        let o = locksup(&env, &["completions", shell]);
        assert_usage_error(&o);
        assert!(o.stdout.is_empty(), "{shell}: {}", o.stdout);
    }
}
