//! Security cases: what another user can plant at or above the lock path,
//! ownership and modes, file types that are not lock files, read-only
//! directories and filesystems, environment that must not reach the
//! attempt, and inputs at the kernel's size limits.
//!
//! Every case is a real run of the binary. Cases that need root (planting
//! files as another user, `mknod`, private mounts) or `setpriv` say so and
//! are skipped with the reason printed when unavailable. The two defects
//! this suite found (a planted parent-directory symlink followed, a
//! hard-linked lock file written through) are fixed; their tests stay as
//! regression tests (HARDENING.md).

// These tests call libc directly to build hostile situations.
#![allow(unsafe_code)]

#[macro_use]
mod common;

use std::ffi::OsString;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// `nobody` and `nogroup` on Debian.
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: plain syscall.
    unsafe { libc::geteuid() == 0 }
}

fn skip(test: &str, why: &str) {
    eprintln!("{test}: skipped: {why}");
}

/// A test directory other users can traverse (the temp dir is 0700).
fn shared_env() -> Env {
    let env = Env::new();
    chmod(&env.path(), 0o755);
    chmod(&env.config, 0o644);
    env
}

fn lchown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("lchown {}: {e}", path.display()));
}

/// A directory like /tmp: world-writable and sticky.
fn sticky_dir(env: &Env, name: &str) -> PathBuf {
    let d = env.join(name);
    fs::create_dir(&d).unwrap();
    chmod(&d, 0o1777);
    d
}

/// `cmd` run as `nobody` through `setpriv`, with the same environment,
/// working directory and arguments; `None` when that cannot work here.
fn as_nobody(env: &Env, args: Vec<OsString>) -> Option<Command> {
    if !is_root() {
        return None;
    }
    let probe = env
        .command("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--",
            BIN,
            "--version",
        ])
        .output()
        .ok()?;
    if !probe.status.success() {
        return None;
    }
    let mut c = env.command("setpriv");
    c.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        BIN,
        "run",
    ])
    .args(args);
    Some(c)
}

/// A failed run: 125, quickly, one `locksup:` line on stderr, no panic.
fn assert_clean_125(o: &Outcome, what: &str) {
    assert_eq!(o.code, 125, "{what}: {o:?}");
    assert_one_error_line(o);
    assert!(!o.stderr.contains("panicked"), "{what}: {o:?}");
    assert!(
        o.elapsed < Duration::from_secs(5),
        "{what} took {:?}",
        o.elapsed
    );
}

// ---------------------------------------------------------------------------
// Symlinks planted by another user in a sticky world-writable directory
// ---------------------------------------------------------------------------

/// `nobody` plants `pub/sessions -> victim` in a sticky, world-writable
/// directory (like /tmp); root then uses `pub/sessions/a.lock`.
///
/// Decided behaviour: refused (125), as the kernel refuses it with
/// `fs.protected_symlinks = 1`; locksup applies the same rule itself
/// (`lockfile::open_parent`), so it holds where that sysctl is 0 (as on
/// this project's machines). A regression test for a defect this suite
/// found (HARDENING.md).
#[test]
fn parent_symlink_planted_in_sticky_dir_is_refused() {
    const T: &str = "parent_symlink_planted_in_sticky_dir_is_refused";
    if !is_root() {
        return skip(T, "needs root to plant a symlink owned by another user");
    }
    let env = shared_env();
    let public = sticky_dir(&env, "pub");
    let victim = env.join("victim");
    fs::create_dir(&victim).unwrap();
    chmod(&victim, 0o700);
    let precious = victim.join("a.lock");
    fs::write(&precious, "precious\n").unwrap();
    let link = public.join("sessions");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    lchown(&link, NOBODY, NOBODY);
    let marker = env.join("ran");

    // An existing file behind the link: not opened, not overwritten.
    let o = run_to_end(env.run(args!["--lock", link.join("a.lock"), "--", "touch", &marker]));
    assert_clean_125(&o, "existing file behind a planted parent symlink");
    assert_eq!(fs::read_to_string(&precious).unwrap(), "precious\n");
    // A new file behind the link: not created.
    let o = run_to_end(env.run(args!["--lock", link.join("b.lock"), "--", "touch", &marker]));
    assert_clean_125(&o, "new file behind a planted parent symlink");
    assert!(
        !victim.join("b.lock").exists(),
        "lock file created through the link"
    );
    // The same through --session.
    let o = run_to_end(env.run(args![
        "--session",
        link.join("s.jsonl"),
        "--",
        "touch",
        &marker
    ]));
    assert_clean_125(&o, "session behind a planted parent symlink");
    assert!(!victim.join("s.jsonl.lock").exists());
    assert!(!marker.exists(), "the command ran");
}

/// Symlinked parent directories of one's own (or root's) are normal
/// (`/var/run -> /run`, a home on another disk): followed, and the lock
/// file lands in the target directory.
#[test]
fn own_parent_symlink_is_followed() {
    let env = Env::new();
    let real = env.join("real");
    fs::create_dir(&real).unwrap();
    let link = env.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let o = run_to_end(env.run(args!["--lock", link.join("a.lock"), "--", "true"]));
    assert_eq!(o.code, 0, "{o:?}");
    assert!(real.join("a.lock").is_file());
    // Also when the link is in a sticky world-writable directory but is
    // the caller's own (the kernel's protected_symlinks rule allows it).
    let public = sticky_dir(&env, "pub");
    let mine = public.join("mine");
    std::os::unix::fs::symlink(&real, &mine).unwrap();
    let o = run_to_end(env.run(args!["--lock", mine.join("b.lock"), "--", "true"]));
    assert_eq!(o.code, 0, "{o:?}");
    assert!(real.join("b.lock").is_file());
}

/// `nobody` plants the lock path itself as a symlink to a file of root's:
/// refused (`O_NOFOLLOW`), the target neither written nor locked.
#[test]
fn lock_symlink_planted_in_sticky_dir_is_refused() {
    const T: &str = "lock_symlink_planted_in_sticky_dir_is_refused";
    if !is_root() {
        return skip(T, "needs root to plant a symlink owned by another user");
    }
    let env = shared_env();
    let public = sticky_dir(&env, "pub");
    let target = env.write("shadow", "root:secret\n");
    chmod(&target, 0o600);
    let marker = env.join("ran");
    for name in ["a.lock", "s.jsonl.lock"] {
        let link = public.join(name);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        lchown(&link, NOBODY, NOBODY);
    }
    let o = run_to_end(env.run(args![
        "--lock",
        public.join("a.lock"),
        "--",
        "touch",
        &marker
    ]));
    assert_clean_125(&o, "planted lock symlink");
    assert!(o.stderr.contains("symbolic link"), "{o:?}");
    let o = run_to_end(env.run(args![
        "--session",
        public.join("s.jsonl"),
        "--",
        "touch",
        &marker
    ]));
    assert_clean_125(&o, "planted session lock symlink");
    assert_eq!(fs::read_to_string(&target).unwrap(), "root:secret\n");
    assert!(lock_is_free(&target));
    assert!(!marker.exists());
}

/// A lock file that is a second hard link to another file (say, planted
/// in /tmp by a user where `fs.protected_hardlinks = 0`): opening it is
/// not following a symlink, so `O_NOFOLLOW` does not help, and locksup
/// would write its metadata over the other file. Decided behaviour:
/// refuse a lock file with more than one link (lock files never need
/// two). A regression test for a defect this suite found (HARDENING.md).
/// The link is made by root here, standing for the planted one.
#[test]
fn hard_linked_lock_file_is_refused() {
    let env = Env::new();
    let public = sticky_dir(&env, "pub");
    let victim = env.write("shadow", "root:secret\n");
    chmod(&victim, 0o600);
    let lock = public.join("a.lock");
    fs::hard_link(&victim, &lock).unwrap();
    let marker = env.join("ran");
    let o = run_to_end(env.run(args!["--lock", &lock, "--", "touch", &marker]));
    assert_eq!(
        fs::read_to_string(&victim).unwrap(),
        "root:secret\n",
        "the linked file was overwritten: {o:?}"
    );
    assert_clean_125(&o, "hard-linked lock file");
    assert!(!marker.exists());
}

// ---------------------------------------------------------------------------
// Ownership and modes
// ---------------------------------------------------------------------------

/// A lock file owned by another user: root uses it as it is (lock files
/// shared between users are legitimate); its owner and mode are never
/// changed. Note: whoever can read it reads the metadata, the command
/// line included.
#[test]
fn lock_file_owned_by_another_user_is_used_as_is() {
    const T: &str = "lock_file_owned_by_another_user_is_used_as_is";
    if !is_root() {
        return skip(T, "needs root to chown to nobody");
    }
    let env = Env::new();
    let lock = env.write("a.lock", "");
    lchown(&lock, NOBODY, NOBODY);
    chmod(&lock, 0o644);
    let o = run_to_end(env.run(args![
        "--lock",
        &lock,
        "--",
        "sh",
        "-c",
        "head -c1 \"$LOCKSUP_LOCK_FILE\"; echo"
    ]));
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(
        o.stdout, "{\n",
        "metadata should be written while held: {o:?}"
    );
    let m = fs::metadata(&lock).unwrap();
    assert_eq!((m.uid(), m.gid()), (NOBODY, NOBODY), "owner changed");
    assert_eq!(m.mode() & 0o7777, 0o644, "mode changed");
    assert!(lock_is_free(&lock));
}

/// A user who may not open the lock file for writing gets a clean 125:
/// root's 0600 lock file, and root's 0644 one (readable: `flock(1)` could
/// lock it read-only, but locksup needs to write the metadata).
#[test]
fn lock_file_of_another_user_not_writable_is_refused() {
    const T: &str = "lock_file_of_another_user_not_writable_is_refused";
    let env = shared_env();
    let marker = env.join("ran");
    for mode in [0o600, 0o644] {
        let lock = env.write(&format!("m{mode:o}.lock"), "");
        chmod(&lock, mode);
        let Some(c) = as_nobody(&env, args!["--lock", &lock, "--", "touch", &marker]) else {
            return skip(
                T,
                "needs root and setpriv(1), and the binary runnable by nobody",
            );
        };
        let o = run_to_end(c);
        assert_clean_125(&o, &format!("root's {mode:o} lock file as nobody"));
        assert!(o.stderr.contains("ermission denied"), "{o:?}");
        assert!(!marker.exists());
        assert!(lock_is_free(&lock));
    }
}

/// The created file's mode is the configured one (0600 by default),
/// whatever the umask; an existing file keeps its own.
#[test]
fn lock_file_mode_is_honoured_whatever_the_umask() {
    let env = Env::new();
    let umasked = |umask: &str, lock: &Path, config: &Path| -> Outcome {
        let mut c = env.command("sh");
        c.args(args![
            "-c",
            format!("umask {umask}; exec \"$0\" run --lock \"$1\" -- true"),
            BIN,
            lock
        ])
        .env("LOCKSUP_CONFIG", config);
        run_to_end(c)
    };
    let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o7777;

    // A wide-open umask does not widen the default.
    let lock = env.join("default.lock");
    let o = umasked("000", &lock, &env.config);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(mode(&lock), 0o600);
    // A strict umask does not narrow the configured mode.
    let cfg = env.write("c.toml", "[run]\nfile_mode = 0o640\n");
    let lock = env.join("configured.lock");
    let o = umasked("077", &lock, &cfg);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(mode(&lock), 0o640);
    // An existing file keeps its mode, even a wider one.
    let lock = env.write("existing.lock", "");
    chmod(&lock, 0o604);
    let o = umasked("077", &lock, &cfg);
    assert_eq!(o.code, 0, "{o:?}");
    assert_eq!(mode(&lock), 0o604);
}

// ---------------------------------------------------------------------------
// Not a regular file
// ---------------------------------------------------------------------------

fn mknod(path: &Path, mode: libc::mode_t, dev: libc::dev_t) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: valid C string.
    if unsafe { libc::mknod(c.as_ptr(), mode, dev) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// A FIFO, a character device, a socket or a symlink to a device at the
/// lock path: 125 at once, nothing written, the command not run.
#[test]
fn fifo_device_and_socket_at_lock_path_are_refused_without_hanging() {
    let env = Env::new();
    let marker = env.join("ran");
    let run = |lock: &Path, what: &str| {
        let o = run_to_end(env.run(args!["--lock", lock, "--", "touch", &marker]));
        assert_clean_125(&o, what);
        assert!(!marker.exists(), "{what}: the command ran");
        o
    };

    let fifo = env.join("fifo.lock");
    mknod(&fifo, libc::S_IFIFO | 0o666, 0).unwrap();
    let o = run(&fifo, "FIFO");
    assert!(o.stderr.contains("FIFO"), "{o:?}");
    // A FIFO that a writer has open is no different.
    let guard = Guard::new();
    let mut writer = env.command("sh");
    writer
        .args(["-c", "exec 3>\"$0\"; echo open; exec sleep 1000"])
        .arg(&fifo);
    // Opening a FIFO for writing blocks until a reader comes: hold a
    // reader ourselves meanwhile (non-blocking, so this never hangs).
    let reader = fs::OpenOptions::new()
        .read(true)
        .custom_flags_nonblock()
        .open(&fifo)
        .unwrap();
    let mut w = spawn(writer, &guard);
    w.out.expect("writer open", SOON);
    run(&fifo, "FIFO with a writer");
    drop(reader);
    // The same FIFO as a session's sidecar.
    let session = env.join("s.jsonl");
    mknod(&env.join("s.jsonl.lock"), libc::S_IFIFO | 0o600, 0).unwrap();
    let o = run_to_end(env.run(args!["--session", &session, "--", "touch", &marker]));
    assert_clean_125(&o, "FIFO sidecar");

    // A Unix socket.
    let sock = env.join("sock.lock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let o = run(&sock, "socket");
    assert!(o.stderr.contains("socket"), "{o:?}");

    // A symlink to a device: refused as a symlink, the device untouched.
    let link = env.join("null.lock");
    std::os::unix::fs::symlink("/dev/null", &link).unwrap();
    run(&link, "symlink to /dev/null");

    // A character device (root only: mknod of devices needs CAP_MKNOD).
    let dev = env.join("dev.lock");
    match mknod(&dev, libc::S_IFCHR | 0o666, libc::makedev(1, 3)) {
        Ok(()) => {
            let o = run(&dev, "character device");
            assert!(o.stderr.contains("device"), "{o:?}");
        }
        Err(e) => skip("character device case", &format!("mknod: {e}")),
    }
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK)
    }
}

// ---------------------------------------------------------------------------
// Read-only directories and filesystems
// ---------------------------------------------------------------------------

/// A user without write permission on the lock directory: 125, nothing
/// created, the command not run.
#[test]
fn lock_directory_without_write_permission_is_refused() {
    const T: &str = "lock_directory_without_write_permission_is_refused";
    let env = shared_env();
    let dir = env.join("ro");
    fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o755);
    let marker = env.join("ran");
    let Some(c) = as_nobody(
        &env,
        args!["--lock", dir.join("a.lock"), "--", "touch", &marker],
    ) else {
        return skip(
            T,
            "needs root and setpriv(1), and the binary runnable by nobody",
        );
    };
    let o = run_to_end(c);
    assert_clean_125(&o, "unwritable directory");
    assert!(o.stderr.contains("ermission denied"), "{o:?}");
    assert!(!dir.join("a.lock").exists());
    assert!(!marker.exists());
}

/// A real read-only filesystem (a tmpfs mounted read-only in a private
/// mount namespace, so nothing shows outside the test): 125 both for a
/// lock file to create and for an existing one (which locksup opens for
/// writing, for its metadata).
#[test]
fn lock_directory_on_a_read_only_filesystem_is_refused() {
    const T: &str = "lock_directory_on_a_read_only_filesystem_is_refused";
    if !is_root() {
        return skip(T, "needs root for a private mount namespace");
    }
    let env = Env::new();
    let dir = env.join("mnt");
    fs::create_dir(&dir).unwrap();
    let marker = env.join("ran");
    for (what, setup) in [
        (
            "new lock file",
            "mount -t tmpfs -o ro tmpfs \"$1\" || exit 99",
        ),
        (
            "existing lock file",
            "mount -t tmpfs tmpfs \"$1\" && : > \"$1/a.lock\" && \
             mount -o remount,ro \"$1\" || exit 99",
        ),
    ] {
        let mut c = env.command("unshare");
        c.args(args![
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            format!("{setup}; exec \"$0\" run --lock \"$1/a.lock\" -- touch \"$2\""),
            BIN,
            &dir,
            &marker
        ]);
        let o = run_to_end(c);
        if o.code == 99 || (o.code != 125 && o.stderr.contains("unshare")) {
            return skip(T, &format!("cannot mount here: {}", o.stderr.trim()));
        }
        assert_clean_125(&o, what);
        assert!(o.stderr.contains("ead-only file system"), "{what}: {o:?}");
        assert!(!marker.exists());
    }
    assert!(
        !dir.join("a.lock").exists(),
        "the mount leaked out of its namespace"
    );
}

// ---------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------

const PRINT_ENV: &str = r#"
for v in NOTIFY_SOCKET LISTEN_FDS LISTEN_PID LISTEN_FDNAMES WATCHDOG_USEC WATCHDOG_PID \
         LOCKSUP_LOCK_FILE LOCKSUP_LOCK_FD LOCKSUP_ATTEMPT_ID LOCKSUP_SESSION LOCKSUP_DEADLINE; do
  eval "echo $v=\${$v-<unset>}"
done
echo "LINK=$(readlink /proc/$$/fd/$LOCKSUP_LOCK_FD)"
"#;

fn env_lines(o: &Outcome) -> std::collections::HashMap<String, String> {
    assert_eq!(o.code, 0, "{o:?}");
    o.stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// systemd's variables for locksup itself (its notify socket, socket
/// activation, watchdog) never reach the attempt: the attempt may get a
/// notify socket of locksup's own, never the caller's.
#[test]
fn systemd_variables_do_not_leak_into_the_attempt() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let mut c = env.run(args!["--lock", &lock, "--", "sh", "-c", PRINT_ENV]);
    c.env("NOTIFY_SOCKET", "/run/systemd/notify")
        .env("LISTEN_FDS", "2")
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDNAMES", "web:admin")
        .env("WATCHDOG_USEC", "1000000")
        .env("WATCHDOG_PID", "1");
    let e = env_lines(&run_to_end(c));
    assert_ne!(
        e["NOTIFY_SOCKET"], "/run/systemd/notify",
        "the attempt got locksup's own systemd notify socket"
    );
    for v in [
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
    ] {
        assert_eq!(e[v], "<unset>", "{v} leaked into the attempt: {e:?}");
    }
}

/// A caller (say, an attempt that runs locksup again) cannot forge the
/// variables locksup gives the command.
#[test]
fn locksup_variables_cannot_be_forged_by_the_caller() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let mut c = env.run(args![
        "--lock",
        &lock,
        "--timeout",
        "0",
        "--",
        "sh",
        "-c",
        PRINT_ENV
    ]);
    c.env("LOCKSUP_LOCK_FILE", "/etc/passwd")
        .env("LOCKSUP_LOCK_FD", "1")
        .env("LOCKSUP_ATTEMPT_ID", "forged")
        .env("LOCKSUP_SESSION", "/forged")
        .env("LOCKSUP_DEADLINE", "2000-01-01T00:00:00.000Z");
    let e = env_lines(&run_to_end(c));
    assert_eq!(e["LOCKSUP_LOCK_FILE"], lock.to_str().unwrap());
    assert_ne!(e["LOCKSUP_LOCK_FD"], "1");
    assert_eq!(
        e["LINK"],
        lock.to_str().unwrap(),
        "LOCKSUP_LOCK_FD is not the lock"
    );
    assert_ne!(e["LOCKSUP_ATTEMPT_ID"], "forged");
    assert_eq!(e["LOCKSUP_SESSION"], "<unset>", "no --session was given");
    assert_eq!(
        e["LOCKSUP_DEADLINE"], "<unset>",
        "--timeout 0 has no deadline"
    );
}

// ---------------------------------------------------------------------------
// Kernel limits: PATH_MAX, NAME_MAX, ARG_MAX
// ---------------------------------------------------------------------------

/// Nested directories of 200-byte names under `base`, until the path is at
/// least `len` bytes long; returns the deepest one.
fn deep_dir(base: &Path, len: usize) -> PathBuf {
    let mut p = base.to_path_buf();
    let mut i = 0;
    while p.as_os_str().len() < len {
        i += 1;
        p.push(format!("{i:03}{}", "d".repeat(197)));
        fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir ({} bytes): {e}", p.as_os_str().len()));
    }
    p
}

/// A lock path with `total` bytes in `dir` (which must be shorter).
fn path_of_len(dir: &Path, total: usize) -> PathBuf {
    let name_len = total - dir.as_os_str().len() - 1;
    dir.join(format!("{}.lock", "l".repeat(name_len - 5)))
}

/// A run that either works (0) or fails cleanly (125, one line), never
/// panics or hangs. Returns the code.
fn works_or_clean_125(o: &Outcome, what: &str) -> i32 {
    assert!(!o.stderr.contains("panicked"), "{what}: {o:?}");
    match o.code {
        0 => {}
        125 => assert_one_error_line(o),
        c => panic!("{what}: exit {c}: {o:?}"),
    }
    o.code
}

/// Lock paths at and past PATH_MAX (4096 with its NUL), a name past
/// NAME_MAX (255), and a working directory deeper than PATH_MAX.
#[test]
fn very_long_lock_paths_work_or_fail_cleanly() {
    let env = Env::new();
    let dir = deep_dir(&env.path(), 3800);
    assert!(dir.as_os_str().len() < 4000);

    // 4095 bytes: the longest path the kernel takes.
    let lock = path_of_len(&dir, 4095);
    let o = run_to_end(env.run(args!["--lock", &lock, "--", "true"]));
    assert_eq!(o.code, 0, "a 4095-byte lock path should work: {o:?}");
    assert!(lock.is_file() && lock_is_free(&lock));
    // As a session: the sidecar is 5 bytes longer than the session.
    let session = path_of_len(&dir, 4090);
    let o = run_to_end(env.run(args!["--session", &session, "--", "true"]));
    assert_eq!(o.code, 0, "{o:?}");

    // One byte more: ENAMETOOLONG, one line.
    for (what, lock) in [
        ("4096-byte lock path", path_of_len(&dir, 4096)),
        (
            "8000-byte lock path",
            dir.join("x".repeat(250)).join("y".repeat(4000)),
        ),
        ("256-byte file name", env.join(&"n".repeat(256))),
    ] {
        let o = run_to_end(env.run(args!["--lock", &lock, "--", "true"]));
        assert_clean_125(&o, what);
        assert!(o.stderr.contains("too long"), "{what}: {o:?}");
    }
    let session = path_of_len(&dir, 4093);
    let o = run_to_end(env.run(args!["--session", &session, "--", "true"]));
    assert_clean_125(&o, "session whose sidecar is past PATH_MAX");

    // A relative lock path from a working directory deeper than PATH_MAX
    // (made with relative mkdir/cd, as the absolute path is too long).
    let mut script = String::from("set -e\n");
    for i in 0..24 {
        script.push_str(&format!(
            "mkdir {i:03}{n}; cd -P {i:03}{n}\n",
            n = "w".repeat(197)
        ));
    }
    script.push_str("exec \"$0\" run --lock rel.lock -- true\n");
    let mut c = env.command("sh");
    c.args(args!["-c", script, BIN]);
    let o = run_to_end(c);
    let code = works_or_clean_125(&o, "relative lock path below a too-deep working directory");
    eprintln!("deep working directory: exit {code} {}", o.stderr.trim());
}

/// A command line of about 1 MB works, and the command sees every byte.
#[test]
fn one_megabyte_of_arguments_works() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let arg = "a".repeat(1023);
    let mut a = args![
        "--lock",
        &lock,
        "--",
        "sh",
        "-c",
        "n=0; for x in \"$@\"; do n=$((n + ${#x})); done; echo $# $n",
        "argv0"
    ];
    for _ in 0..1024 {
        a.push(arg.clone().into());
    }
    let o = run_to_end(env.run(a));
    assert_eq!(o.code, 0, "{}", &o.stderr[..o.stderr.len().min(500)]);
    assert_eq!(o.stdout.trim(), format!("1024 {}", 1024 * 1023));
    assert!(lock_is_free(&lock));
}

/// At ARG_MAX: the largest command line locksup itself can be started with
/// leaves no room for the variables it adds, so the command's exec fails
/// with E2BIG: that must be a clean one-line error (126, like `env` and
/// `timeout`), never a hang or a panic. Every size below either works or
/// fails the same clean way.
#[test]
fn argument_list_at_the_kernel_limit_fails_cleanly() {
    let env = Env::new();
    let lock = env.join("a.lock");
    let build = |total: usize| -> Command {
        let mut a = args!["--lock", &lock, "--", "true"];
        let mut left = total;
        while left > 0 {
            let n = left.min(4000);
            a.push("b".repeat(n).into());
            left -= n;
        }
        env.run(a)
    };
    // The largest total that the kernel lets us start locksup with.
    let (mut lo, mut hi) = (1usize << 10, 8usize << 20);
    let started = Instant::now();
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        let mut c = build(mid);
        c.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        match c.spawn() {
            Ok(mut child) => {
                let st = child.wait().unwrap();
                assert!(
                    matches!(st.code(), Some(0) | Some(126) | Some(125)),
                    "{mid} bytes of arguments: {st:?}"
                );
                lo = mid;
            }
            Err(e) if e.raw_os_error() == Some(libc::E2BIG) => hi = mid,
            Err(e) => panic!("spawn: {e}"),
        }
        assert!(started.elapsed() < LIMIT, "search took too long");
    }
    let o = run_to_end(build(lo));
    match o.code {
        0 => eprintln!("at {lo} bytes of arguments the command still started"),
        126 => {
            assert_one_error_line(&o);
            assert!(o.stderr.contains("too long"), "{o:?}");
            eprintln!("at {lo} bytes of arguments: {}", o.stderr.trim());
        }
        c => panic!("at {lo} bytes of arguments: exit {c}: {o:?}"),
    }
    assert!(!o.stderr.contains("panicked"));
    assert!(lock_is_free(&lock));
}
