use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use nix::sys::signal::Signal;

use super::*;

const EXAMPLE: &str = include_str!("../../config.example.toml");

fn parse(text: &str) -> Result<Config> {
    Config::parse(text, Path::new("/etc/locksup/test.toml"))
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(c) => panic!("{text:?} should fail, got {c:?}"),
        Err(e) => {
            assert_eq!(e.code(), crate::exit::FAILURE);
            assert!(!e.message().contains('\n'), "{}", e.message());
            e.message().to_owned()
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
            order: None,
            backend: None,
            etcd_key: None,
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
        .map_err(|e| e.message().to_owned())
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
    let m = |t: &str| parse(&format!("[serve]\n{t}\n")).unwrap().serve;
    assert_eq!(
        m("metrics = \"[::1]:9187\"").metrics,
        Some(MetricsEndpoint::Tcp("[::1]:9187".parse().unwrap()))
    );
    assert_eq!(
        m("metrics = \"unix:/run/locksup/metrics.sock\"").metrics,
        Some(MetricsEndpoint::Unix("/run/locksup/metrics.sock".into()))
    );
    assert_eq!(m("history = 0").history, Some(0));
    assert_eq!(m("history = 100000").history, Some(100_000));
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
    err_at(
        "[serve]\nmetrics = \"localhost\"\n",
        2,
        11,
        "neither ADDRESS:PORT",
    );
    err_at(
        "[serve]\nmetrics = \"unix:rel.sock\"\n",
        2,
        11,
        "absolute path",
    );
    err_at("[serve]\nmetrics = 9187\n", 2, 11, "invalid type");
    err_at(
        "[serve]\nhistory = -1\n",
        2,
        11,
        "out of range (0 to 100000)",
    );
    err_at("[serve]\nhistory = 100001\n", 2, 11, "out of range");
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
    assert_eq!(e.code(), crate::exit::FAILURE);
    assert!(e.message().contains(ms), "{}", e.message());
    assert!(e.message().contains("--config"), "{}", e.message());

    let e = Config::load_with(None, &env(Some(ms), None, None), &sys).unwrap_err();
    assert!(e.message().contains(ms), "{}", e.message());
    assert!(e.message().contains("$LOCKSUP_CONFIG"), "{}", e.message());

    // A directory named explicitly is unreadable: an error, too.
    let e = Config::load_with(Some(d), &LookupEnv::default(), &sys).unwrap_err();
    assert!(e.message().contains(d.to_str().unwrap()), "{}", e.message());

    // An existing default file that is invalid is an error naming it.
    let xdg = d.join("xdg");
    let xdg_file = xdg.join("locksup/config.toml");
    write(&xdg_file, "[run]\nbogus = 1\n");
    let xenv = env(None, xdg.to_str(), None);
    let e = Config::load_with(None, &xenv, &sys).unwrap_err();
    assert_eq!(
        e.message(),
        format!(
            "{}:2:1: unknown field `bogus`, expected one of `timeout`, `grace`, \
             `wait`, `signal`, `final_signal`, `file_mode`, `conflict_exit_code`, \
             `watchdog`, `max_timeout`, `ready_timeout`, `die_with_parent`, \
             `on_lock_removed`, `order`, `backend`, `etcd_key`",
            xdg_file.display()
        )
    );
    // ... and one that exists but cannot be read is not skipped.
    std::fs::remove_file(&xdg_file).unwrap();
    std::fs::create_dir(&xdg_file).unwrap();
    let e = Config::load_with(None, &xenv, &sys).unwrap_err();
    assert!(
        e.message().contains(xdg_file.to_str().unwrap()),
        "{}",
        e.message()
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
    write(
        &big,
        &"#".repeat(usize::try_from(MAX_CONFIG_BYTES).unwrap() + 1),
    );

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
        e.message(),
        format!(
            "cannot read config file {} (named by --config): it is a FIFO, not a regular file",
            fifo.display()
        )
    );
    let xdg = d.join("xdg");
    std::fs::create_dir_all(xdg.join("locksup")).unwrap();
    std::os::unix::fs::symlink(&fifo, xdg.join("locksup/config.toml")).unwrap();
    let e = strict(None, &env(None, xdg.to_str(), None)).unwrap_err();
    assert!(
        e.message().contains("not a regular file"),
        "{}",
        e.message()
    );
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
    let ident = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
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
    assert_eq!(c.etcd, EtcdConfig::default());
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
    // must parse and be the built-in values (README.md, "Using it").
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
            order: Some(Order::Fifo),
            backend: Some(Backend::Flock),
            // No default: an example.
            etcd_key: Some("gateway-sessions".to_string()),
        }
    );
    assert_eq!(
        c.etcd,
        EtcdConfig {
            endpoints: Some(vec!["127.0.0.1:2379".to_string()]),
            prefix: Some("/locksup".to_string()),
            ttl: secs(26),
            cacert: Some(PathBuf::from("/etc/locksup/etcd-ca.pem")),
            cert: Some(PathBuf::from("/etc/locksup/etcd-client.pem")),
            key: Some(PathBuf::from("/etc/locksup/etcd-client-key.pem")),
            user: Some("locksup".to_string()),
            password: Some("secret".to_string()),
            dial_timeout: secs(2),
            command_timeout: secs(5),
        }
    );
    let e = c.etcd.to_etcd_config();
    let d = crate::lock::etcd::Config::default();
    assert_eq!(
        (e.endpoints, e.prefix, e.dial_timeout, e.command_timeout),
        (d.endpoints, d.prefix, d.dial_timeout, d.command_timeout)
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
            metrics: Some(MetricsEndpoint::Tcp("127.0.0.1:9187".parse().unwrap())),
            history: Some(1000),
        }
    );
    assert_eq!(c.policy.len(), 1);
    let sample = Path::new("/srv/openclaw/a/b/nightly-1.json");
    assert!(c.policy[0].matches(sample));
    assert_eq!(c.defaults_for(sample).grace, secs(10));
}

#[test]
fn etcd_section_and_backend_per_policy() {
    let c = parse(
        "[run]\nbackend = \"flock\"\n\
         [[policy]]\nmatch = \"/srv/shared/**\"\nbackend = \"etcd\"\netcd_key = \"shared\"\n\
         [etcd]\nendpoints = [\"http://a:2379, http://b:2379\", \"c:2379\"]\n\
         prefix = \"/locks\"\nttl = \"30s\"\nuser = \"root:pw\"\ndial_timeout = \"1s\"\n",
    )
    .unwrap();
    assert_eq!(c.run.backend, Some(Backend::Flock));
    let d = c.defaults_for(Path::new("/srv/shared/x.jsonl"));
    assert_eq!(d.backend, Some(Backend::Etcd));
    assert_eq!(d.etcd_key.as_deref(), Some("shared"));
    assert_eq!(
        c.defaults_for(Path::new("/srv/other")).backend,
        Some(Backend::Flock)
    );
    let e = c.etcd.to_etcd_config();
    assert_eq!(e.endpoints, ["http://a:2379", "http://b:2379", "c:2379"]);
    assert_eq!(e.prefix, "/locks");
    assert_eq!(e.dial_timeout, Duration::from_secs(1));
    assert_eq!(c.etcd.ttl, secs(30));
    for (text, msg) in [
        (
            "[run]\nbackend = \"zk\"\n",
            "backend: 'zk' is not one of flock, etcd",
        ),
        (
            "[etcd]\nendpoints = []\n",
            "etcd endpoints: the list is empty",
        ),
        ("[etcd]\nprefix = \"locks\"\n", "must start with /"),
        ("[etcd]\ncacert = \"ca.pem\"\n", "must be an absolute path"),
        ("[etcd]\nendpoint = \"x\"\n", "unknown field `endpoint`"),
    ] {
        let e = parse(text).expect_err(text);
        assert!(e.message().contains(msg), "{text}: {}", e.message());
    }
}
