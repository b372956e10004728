//! The clients of `locksup serve`: `locksup run --daemon` and `locksup
//! cancel --daemon` ([`crate::protocol`], locksup-serve(8)).
//!
//! `run --daemon` parses its command line exactly as a local `run` does
//! (clap already did, in `main`), then hands the daemon what follows
//! `run` (without `--daemon` and `--socket`), its environment, its working
//! directory and its descriptors 0, 1 and 2, and waits. It prints nothing
//! of its own on stdout, and exits with the attempt's status. TERM, INT,
//! HUP and QUIT become a `cancel` frame (the attempt's supervisor gets the
//! same signal, as `locksup run` would); USR1, USR2 and WINCH a `signal`
//! frame. If the client dies, the daemon sees the connection close and
//! cancels the attempt.

use std::ffi::OsString;
use std::future::poll_fn;
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::task::Poll;
use std::time::{Duration, Instant};

use clap::CommandFactory;
use nix::sys::signal::Signal;
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{CancelArgs, Cli, RunArgs, StatusArgs};
use crate::config::Config;
use crate::duration::{Dur, format_duration};
use crate::error::{Error, Result};
use crate::exit;
use crate::protocol::{self, Conn, Frame, MAX_FRAME};

/// Signals that make the client ask for a cancel.
const CANCEL_SIGNALS: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];
/// Signals the client passes on.
const PASS_SIGNALS: [Signal; 3] = [Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGWINCH];

/// The socket a client connects to.
fn socket_for(explicit: Option<&Path>, config_path: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let config = Config::load(config_path)?;
    Ok(crate::serve::socket_path(None, &config))
}

fn connect(path: &Path) -> Result<UnixStream> {
    UnixStream::connect(path).map_err(|e| {
        let why = match e.kind() {
            io::ErrorKind::NotFound => "no such socket (is locksup serve running?)".to_owned(),
            io::ErrorKind::ConnectionRefused => {
                "connection refused (is locksup serve running?)".to_owned()
            }
            io::ErrorKind::PermissionDenied => {
                "permission denied (the socket's mode and group decide who may connect)".to_owned()
            }
            _ => e.to_string(),
        };
        Error::usage(format!(
            "cannot connect to locksup serve at {}: {why}",
            path.display()
        ))
    })
}

fn utf8(what: &str, s: OsString) -> Result<String> {
    s.into_string().map_err(|bad| {
        Error::usage(format!(
            "{what} {:?} is not valid UTF-8, which the daemon protocol cannot carry; \
             run it without --daemon",
            bad.to_string_lossy()
        ))
    })
}

/// Send `bytes` with descriptors 0, 1 and 2 attached.
fn send_with_stdio(stream: &mut UnixStream, bytes: &[u8]) -> Result<()> {
    let fds = [0, 1, 2];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let sent = loop {
        match sendmsg::<()>(
            stream.as_raw_fd(),
            &[IoSlice::new(bytes)],
            &cmsg,
            MsgFlags::empty(),
            None,
        ) {
            Ok(n) => break n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EBADF) => {
                return Err(Error::usage(
                    "standard input, output or error is closed; the daemon needs all three",
                ));
            }
            Err(e) => return Err(Error::usage(format!("cannot send the request: {e}"))),
        }
    };
    stream
        .write_all(&bytes[sent..])
        .map_err(|e| Error::usage(format!("cannot send the request: {e}")))
}

/// What follows `run` in `argv`, without `--daemon` and `--socket [PATH]`,
/// which belong to the client. Options are told from their values with the
/// clap definition of `run`; everything from `--` or the command on is
/// kept as it is.
pub fn attempt_args(argv: &[OsString]) -> Vec<OsString> {
    let mut cmd = Cli::command();
    cmd.build();
    let Some(run) = cmd.find_subcommand("run") else {
        return Vec::new();
    };
    let takes_value = |a: &clap::Arg| a.get_action().takes_values();
    let long_values: Vec<String> = run
        .get_arguments()
        .filter(|a| takes_value(a))
        .filter_map(|a| a.get_long().map(|l| format!("--{l}")))
        .collect();
    let short_values: Vec<char> = run
        .get_arguments()
        .filter(|a| takes_value(a))
        .filter_map(clap::Arg::get_short)
        .collect();
    let start = argv
        .iter()
        .skip(1)
        .position(|a| a == "run")
        .map_or(argv.len(), |i| i + 2);
    let args = &argv[start.min(argv.len())..];
    let mut out = Vec::with_capacity(args.len());
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let text = a.to_string_lossy();
        if text == "--" {
            out.extend_from_slice(&args[i..]);
            break;
        }
        if let Some(body) = text.strip_prefix("--") {
            let (name, has_value) = match body.split_once('=') {
                Some((n, _)) => (n, true),
                None => (body, false),
            };
            match name {
                "daemon" => {}
                "socket" if has_value => {}
                "socket" => i += 1,
                _ => {
                    out.push(a.clone());
                    if !has_value && long_values.iter().any(|l| l[2..] == *name) {
                        if let Some(v) = args.get(i + 1) {
                            out.push(v.clone());
                        }
                        i += 1;
                    }
                }
            }
            i += 1;
            continue;
        }
        if text.len() > 1 && text.starts_with('-') {
            out.push(a.clone());
            let cluster: Vec<char> = text.chars().skip(1).collect();
            // A short option taking a value ends the cluster; its value is
            // the rest of the cluster, or the next argument.
            if let Some(j) = cluster.iter().position(|c| short_values.contains(c))
                && j + 1 == cluster.len()
            {
                if let Some(v) = args.get(i + 1) {
                    out.push(v.clone());
                }
                i += 1;
            }
            i += 1;
            continue;
        }
        // The command and its arguments.
        out.extend_from_slice(&args[i..]);
        break;
    }
    out
}

/// `locksup run --daemon`.
pub fn run(args: &RunArgs, argv: &[OsString], config_path: Option<&Path>) -> Result<i32> {
    if config_path.is_some() {
        return Err(Error::usage(
            "--config cannot be used with --daemon: the daemon's own configuration applies \
             (use --socket to choose the daemon)",
        ));
    }
    let socket = socket_for(args.socket.as_deref(), None)?;
    let run_args = attempt_args(argv)
        .into_iter()
        .map(|a| utf8("argument", a))
        .collect::<Result<Vec<_>>>()?;
    let mut env = Vec::new();
    for (k, v) in std::env::vars_os() {
        let shown = k.to_string_lossy().into_owned();
        let k = utf8("environment variable", k)?;
        let v = utf8(&format!("the value of environment variable {shown}"), v)?;
        env.push((k, v));
    }
    let cwd = std::env::current_dir()
        .map_err(|e| Error::usage(format!("cannot read the working directory: {e}")))?;
    let cwd = utf8("working directory", cwd.into_os_string())?;
    let frame = protocol::encode(&Frame::Run {
        args: run_args,
        env,
        cwd,
    });
    if frame.len() - 4 > MAX_FRAME {
        return Err(Error::usage(format!(
            "the request is {} bytes, over the daemon's limit of {MAX_FRAME} (a huge \
             environment or command line?)",
            frame.len() - 4
        )));
    }
    let mut stream = connect(&socket)?;
    if let Err(e) = send_with_stdio(&mut stream, &frame) {
        // The daemon may have refused us (and closed) before reading the
        // request: its reason is the better message.
        let deadline = Some(Instant::now() + Duration::from_secs(1));
        if let Ok(Some(Frame::Error { code, message })) = read_frame(&mut stream, deadline) {
            return Err(Error::with_code(code, message));
        }
        return Err(e);
    }
    stream
        .set_nonblocking(true)
        .map_err(|e| Error::usage(format!("socket: {e}")))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::usage(format!("cannot start the runtime: {e}")))?;
    rt.block_on(wait_for_exit(stream, socket))
}

async fn wait_for_exit(stream: UnixStream, socket: PathBuf) -> Result<i32> {
    let stream = tokio::net::UnixStream::from_std(stream)
        .map_err(|e| Error::usage(format!("socket: {e}")))?;
    let mut conn = Conn::new(stream, 0);
    let mut signals = Vec::new();
    for sig in CANCEL_SIGNALS.iter().chain(PASS_SIGNALS.iter()) {
        // Ignored when we started (nohup, a shell's `&`): stays ignored.
        if crate::spawn::signal_is_ignored(*sig) {
            continue;
        }
        let stream = signal(SignalKind::from_raw(*sig as i32))
            .map_err(|e| Error::usage(format!("cannot install signal handlers: {e}")))?;
        signals.push((*sig, stream));
    }
    let lost = || {
        Error::usage(format!(
            "locksup serve at {} closed the connection without the attempt's result",
            socket.display()
        ))
    };
    loop {
        let next_signal = poll_fn(|cx| {
            for (sig, s) in signals.iter_mut() {
                if s.poll_recv(cx).is_ready() {
                    return Poll::Ready(*sig);
                }
            }
            Poll::Pending
        });
        tokio::select! {
            frame = conn.read() => match frame {
                Ok(Some(Frame::Started { attempt_pid, attempt_id })) => {
                    log::info!("attempt {attempt_id} started, supervisor pid {attempt_pid}");
                }
                Ok(Some(Frame::Exit { code })) => return Ok(code),
                Ok(Some(Frame::Error { code, message })) => {
                    return Err(Error::with_code(code, message));
                }
                Ok(Some(other)) => {
                    return Err(Error::usage(format!(
                        "unexpected {} frame from the daemon",
                        other.kind()
                    )));
                }
                Ok(None) => return Err(lost()),
                Err(e) => return Err(Error::usage(format!("from the daemon: {e}"))),
            },
            sig = next_signal => {
                let name = sig.as_str().trim_start_matches("SIG").to_owned();
                let frame = if CANCEL_SIGNALS.contains(&sig) {
                    Frame::Cancel { signal: name }
                } else {
                    Frame::Signal { signal: name }
                };
                if conn.write(&frame).await.is_err() {
                    return Err(lost());
                }
            }
        }
    }
}

/// Read one frame, blocking, before `deadline` (`None`: no limit).
/// `Ok(None)` when the deadline passed.
fn read_frame(stream: &mut UnixStream, deadline: Option<Instant>) -> Result<Option<Frame>> {
    let mut read_exact = |buf: &mut [u8]| -> Result<bool> {
        let mut got = 0;
        while got < buf.len() {
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left == Some(Duration::ZERO) {
                return Ok(false);
            }
            let _ = stream.set_read_timeout(left);
            match stream.read(&mut buf[got..]) {
                Ok(0) => {
                    return Err(Error::usage(
                        "locksup serve closed the connection without an answer",
                    ));
                }
                Ok(n) => got += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(false);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::usage(format!("from the daemon: {e}"))),
            }
        }
        Ok(true)
    };
    let mut len = [0u8; 4];
    if !read_exact(&mut len)? {
        return Ok(None);
    }
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(Error::usage(format!(
            "from the daemon: {}",
            protocol::ProtoError::Size(len)
        )));
    }
    let mut body = vec![0u8; len];
    if !read_exact(&mut body)? {
        return Ok(None);
    }
    protocol::decode(&body)
        .map(Some)
        .map_err(|e| Error::usage(format!("from the daemon: {e}")))
}

/// `locksup cancel --daemon`.
pub fn cancel(args: &CancelArgs, config_path: Option<&Path>) -> Result<i32> {
    let socket = socket_for(args.socket.as_deref(), config_path)?;
    let target = utf8("TARGET", args.target.clone().into_os_string())?;
    let cwd = std::env::current_dir()
        .map_err(|e| Error::usage(format!("cannot read the working directory: {e}")))?;
    let cwd = utf8("working directory", cwd.into_os_string())?;
    let signal = args.signal.map_or_else(|| "TERM".to_owned(), |s| s.name());
    let limit = match args.wait {
        None => None,
        Some(Dur::Finite(d)) if d.is_zero() => None,
        Some(Dur::Finite(d)) => Some(Some(d)),
        Some(Dur::Infinite) => Some(None),
    };
    let mut stream = connect(&socket)?;
    let request = protocol::encode(&Frame::CancelAttempt {
        target,
        cwd,
        signal,
        wait: limit.is_some(),
    });
    stream
        .write_all(&request)
        .map_err(|e| Error::usage(format!("cannot send the request: {e}")))?;
    let sent = Instant::now();
    let answer = read_frame(&mut stream, Some(sent + Duration::from_secs(30)))?
        .ok_or_else(|| Error::usage("locksup serve did not answer within 30s"))?;
    let (pid, id) = match answer {
        Frame::Cancelled {
            attempt_pid,
            attempt_id,
        } => (attempt_pid, attempt_id),
        Frame::Error { code, message } => return Err(Error::with_code(code, message)),
        other => {
            return Err(Error::usage(format!(
                "unexpected {} frame from the daemon",
                other.kind()
            )));
        }
    };
    let mut out = io::stdout();
    let _ = writeln!(
        out,
        "sent {} to supervisor pid {pid} of attempt '{id}'",
        args.signal.map_or_else(|| "TERM".to_owned(), |s| s.name())
    );
    let Some(limit) = limit else {
        return Ok(exit::SUCCESS);
    };
    match read_frame(&mut stream, limit.map(|l| sent + l))? {
        Some(Frame::Exit { code }) => {
            let _ = writeln!(
                out,
                "attempt '{id}' ended with status {code} {} after the signal",
                format_duration(sent.elapsed())
            );
            Ok(exit::SUCCESS)
        }
        Some(Frame::Error { code, message }) => Err(Error::with_code(code, message)),
        Some(other) => Err(Error::usage(format!(
            "unexpected {} frame from the daemon",
            other.kind()
        ))),
        None => Err(Error::with_code(
            exit::TIMED_OUT,
            format!(
                "attempt '{id}' is still running after waiting {}",
                format_duration(limit.unwrap_or_default())
            ),
        )),
    }
}

/// `locksup status --daemon`: the daemon's attempts, as a table or JSON.
pub fn status(args: &StatusArgs, config_path: Option<&Path>) -> Result<i32> {
    let socket = socket_for(args.socket.as_deref(), config_path)?;
    let mut stream = connect(&socket)?;
    stream
        .write_all(&protocol::encode(&Frame::List {}))
        .map_err(|e| Error::usage(format!("cannot send the request: {e}")))?;
    let answer = read_frame(&mut stream, Some(Instant::now() + Duration::from_secs(30)))?
        .ok_or_else(|| Error::usage("locksup serve did not answer within 30s"))?;
    let (containment, attempts) = match answer {
        Frame::Attempts {
            containment,
            attempts,
        } => (containment, attempts),
        Frame::Error { code, message } => return Err(Error::with_code(code, message)),
        other => {
            return Err(Error::usage(format!(
                "unexpected {} frame from the daemon",
                other.kind()
            )));
        }
    };
    let text = if args.json {
        let doc = serde_json::json!({
            "v": 1,
            "socket": socket.display().to_string(),
            "containment": containment,
            "attempts": attempts,
        });
        format!("{doc}\n")
    } else {
        let mut rows = vec![[
            "ATTEMPT".to_owned(),
            "PID".to_owned(),
            "USER".to_owned(),
            "RUNNING".to_owned(),
            "LOCK".to_owned(),
        ]];
        for a in &attempts {
            let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(a.uid))
                .ok()
                .flatten()
                .map_or_else(|| a.uid.to_string(), |u| u.name);
            rows.push([
                a.attempt_id.clone(),
                a.attempt_pid.to_string(),
                user,
                crate::status::short_duration(Duration::from_millis(a.running_ms)),
                a.lock.clone(),
            ]);
        }
        let mut widths = [0usize; 5];
        for r in &rows {
            for (w, c) in widths.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = format!(
            "locksup serve at {}: {} attempt(s); containment: {containment}\n",
            socket.display(),
            attempts.len()
        );
        for r in &rows {
            let line: Vec<String> = r
                .iter()
                .zip(widths)
                .enumerate()
                .map(|(i, (c, w))| {
                    if i == 4 {
                        c.clone()
                    } else {
                        format!("{c:<w$}")
                    }
                })
                .collect();
            out.push_str(line.join("  ").trim_end());
            out.push('\n');
        }
        out
    };
    match io::stdout().write_all(text.as_bytes()) {
        Ok(()) => Ok(exit::SUCCESS),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(exit::SUCCESS),
        Err(e) => Err(Error::usage(format!("cannot write the status: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip(args: &[&str]) -> Vec<String> {
        let argv: Vec<OsString> = ["locksup", "run"]
            .iter()
            .chain(args)
            .map(OsString::from)
            .collect();
        attempt_args(&argv)
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn client_options_are_removed_and_nothing_else() {
        assert_eq!(
            strip(&["--daemon", "--session", "s", "--", "echo", "--daemon"]),
            ["--session", "s", "--", "echo", "--daemon"]
        );
        assert_eq!(
            strip(&[
                "--socket",
                "/s",
                "--daemon",
                "-t",
                "5s",
                "--lock=/l",
                "--",
                "x"
            ]),
            ["-t", "5s", "--lock=/l", "--", "x"]
        );
        assert_eq!(
            strip(&[
                "--socket=/s",
                "--daemon",
                "-vt5s",
                "-nw",
                "--lock",
                "/l",
                "cmd",
                "--socket",
                "x"
            ]),
            ["-vt5s", "-nw", "--lock", "/l", "cmd", "--socket", "x"]
        );
        // A value that looks like an option stays a value.
        assert_eq!(
            strip(&[
                "--daemon",
                "--attempt-id",
                "--daemon",
                "--lock",
                "/l",
                "--",
                "x"
            ]),
            ["--attempt-id", "--daemon", "--lock", "/l", "--", "x"]
        );
        assert_eq!(
            strip(&["--daemon", "-s", "INT", "--lock", "/l", "--", "x"]),
            ["-s", "INT", "--lock", "/l", "--", "x"]
        );
    }

    #[test]
    fn stripped_arguments_parse_to_the_same_run() {
        use clap::Parser;
        let full = [
            "locksup",
            "run",
            "--daemon",
            "--socket",
            "/s",
            "-t",
            "5s",
            "-g1s",
            "--session",
            "a.jsonl",
            "--events",
            "-",
            "-v",
            "--",
            "sh",
            "-c",
            "echo --daemon",
        ];
        let argv: Vec<OsString> = full.iter().map(OsString::from).collect();
        let stripped = attempt_args(&argv);
        let again: Vec<OsString> = ["locksup", "run"]
            .iter()
            .map(OsString::from)
            .chain(stripped)
            .collect();
        let a = Cli::try_parse_from(&argv).unwrap();
        let b = Cli::try_parse_from(&again).unwrap();
        let (crate::cli::Command::Run(mut a), crate::cli::Command::Run(b)) = (a.command, b.command)
        else {
            panic!("not run");
        };
        assert!(a.daemon && !b.daemon && b.socket.is_none());
        a.daemon = false;
        a.socket = None;
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }
}
