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
//!
//! The client never waits on a daemon that does not answer: the request
//! must be answered (`started` or `error`) within [`ANSWER_TIMEOUT`] of
//! connecting, else it exits 125; each cancel must be acknowledged
//! (`signalled`) within [`CANCEL_ACK_TIMEOUT`], else it exits 128+N for
//! the signal N it got, and a second cancel signal before that makes it
//! exit so at once. Its connection closing then cancels the attempt (or
//! keeps it from starting) once the daemon reads again.

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
use tokio::io::{AsyncWriteExt as _, Interest};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::{CancelArgs, Cli, RunArgs, StatusArgs};
use crate::config::Config;
use crate::duration::{Dur, format_duration};
use crate::error::{Error, Result};
use crate::exit;
use crate::process::signals::{CANCEL as CANCEL_SIGNALS, PASS as PASS_SIGNALS};
use crate::protocol::{self, Conn, Frame, MAX_FRAME};

/// How long `run --daemon` waits, from the moment it connects, for the
/// daemon to answer its request (`started`, or `error`): past it, it exits
/// 125. Connecting to a full backlog and sending count too.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `run --daemon` waits for the daemon to acknowledge a cancel
/// (`signalled`) before it gives up and exits 128+N.
pub(crate) const CANCEL_ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// The socket a client connects to.
fn socket_for(explicit: Option<&Path>, config_path: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let config = Config::load(config_path)?;
    Ok(crate::cmd::serve::socket_path(None, &config))
}

fn connect(path: &Path) -> Result<UnixStream> {
    UnixStream::connect(path).map_err(|e| connect_error(path, &e))
}

fn connect_error(path: &Path, e: &io::Error) -> Error {
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
    Error::protocol(format!(
        "cannot connect to locksup serve at {}: {why}",
        path.display()
    ))
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

/// What follows `run` in `argv`, without `--daemon` and `--socket [PATH]`,
/// which belong to the client. Options are told from their values with the
/// clap definition of `run`; everything from `--` or the command on is
/// kept as it is.
pub(crate) fn attempt_args(argv: &[OsString]) -> Vec<OsString> {
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
        .map_err(|e| Error::io(format!("cannot read the working directory: {e}")))?;
    let cwd = utf8("working directory", cwd.into_os_string())?;
    let frame = protocol::encode(&Frame::Run {
        args: run_args,
        env,
        cwd,
    });
    if frame.len() - 4 > MAX_FRAME {
        return Err(Error::protocol(format!(
            "the request is {} bytes, over the daemon's limit of {MAX_FRAME} (a huge \
             environment or command line?)",
            frame.len() - 4
        )));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io(format!("cannot start the runtime: {e}")))?;
    rt.block_on(session(socket, frame))
}

/// The signals the client acts on, installed before it connects.
struct Signals(Vec<(Signal, tokio::signal::unix::Signal)>);

impl Signals {
    fn install() -> Result<Signals> {
        let mut v = Vec::new();
        for sig in CANCEL_SIGNALS.iter().chain(PASS_SIGNALS.iter()) {
            // Ignored when we started (nohup, a shell's `&`): stays ignored.
            if crate::sys::signal_is_ignored(*sig) {
                continue;
            }
            let stream = signal(SignalKind::from_raw(*sig as i32))
                .map_err(|e| Error::io(format!("cannot install signal handlers: {e}")))?;
            v.push((*sig, stream));
        }
        Ok(Signals(v))
    }

    /// The next signal received.
    async fn next(&mut self) -> Signal {
        poll_fn(|cx| {
            for (sig, s) in self.0.iter_mut() {
                if s.poll_recv(cx).is_ready() {
                    return Poll::Ready(*sig);
                }
            }
            Poll::Pending
        })
        .await
    }

    /// The next cancel signal; pass-through ones are dropped meanwhile.
    async fn next_cancel(&mut self) -> Signal {
        loop {
            let sig = self.next().await;
            if CANCEL_SIGNALS.contains(&sig) {
                return sig;
            }
        }
    }
}

fn signal_name(sig: Signal) -> &'static str {
    sig.as_str().trim_start_matches("SIG")
}

/// Connect to `path` and send `request` with descriptors 0, 1 and 2 on its
/// first bytes. A full backlog (the daemon is not accepting) is tried
/// again; the caller bounds the whole. `Err` with a stream: the daemon
/// closed before taking the request, and may have said why.
async fn connect_and_send(
    path: &Path,
    request: &[u8],
) -> std::result::Result<tokio::net::UnixStream, (Error, Option<tokio::net::UnixStream>)> {
    let mut stream = loop {
        match tokio::net::UnixStream::connect(path).await {
            Ok(s) => break s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err((connect_error(path, &e), None)),
        }
    };
    let fd = stream.as_raw_fd();
    let fds = [0, 1, 2];
    let sent = stream
        .async_io(Interest::WRITABLE, || {
            let cmsg = [ControlMessage::ScmRights(&fds)];
            loop {
                match sendmsg::<()>(
                    fd,
                    &[IoSlice::new(request)],
                    &cmsg,
                    MsgFlags::MSG_NOSIGNAL,
                    None,
                ) {
                    Err(nix::errno::Errno::EINTR) => continue,
                    other => return other.map_err(io::Error::from),
                }
            }
        })
        .await;
    let sent = match sent {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::EBADF) => {
            return Err((
                Error::usage(
                    "standard input, output or error is closed; the daemon needs all three",
                ),
                None,
            ));
        }
        Err(e) => {
            let err = Error::protocol(format!("cannot send the request: {e}"));
            return Err((err, Some(stream)));
        }
    };
    if let Err(e) = stream.write_all(&request[sent..]).await {
        let err = Error::protocol(format!("cannot send the request: {e}"));
        return Err((err, Some(stream)));
    }
    Ok(stream)
}

/// `run --daemon` once its request is built: connect, send, wait for the
/// attempt's result, pass signals on; give up on a daemon that does not
/// answer (see the module documentation).
async fn session(socket: PathBuf, request: Vec<u8>) -> Result<i32> {
    use tokio::time::{Instant, sleep_until, timeout};
    let mut signals = Signals::install()?;
    let shown = socket.display().to_string();
    let answer_by = Instant::now() + ANSWER_TIMEOUT;
    let no_answer = || {
        Error::protocol(format!(
            "locksup serve at {shown} did not answer within {}",
            format_duration(ANSWER_TIMEOUT)
        ))
    };
    // Until the request is sent, a cancel signal ends the client at once:
    // the daemon gets no request, or a cut one, and runs nothing.
    let sent = tokio::select! {
        sent = timeout(ANSWER_TIMEOUT, connect_and_send(&socket, &request)) => sent,
        sig = signals.next_cancel() => {
            return Err(Error::with_code(
                exit::from_signal(sig as i32),
                format!("{sig} before the request reached locksup serve at {shown}; nothing was started"),
            ));
        }
    };
    let stream = match sent {
        Err(_) => return Err(no_answer()),
        Ok(Ok(s)) => s,
        Ok(Err((e, None))) => return Err(e),
        Ok(Err((e, Some(stream)))) => {
            // The daemon may have refused us (and closed) before reading
            // the request: its reason is the better message.
            let mut conn = Conn::new(stream, 0);
            if let Ok(Ok(Some(Frame::Error { code, message }))) =
                timeout(Duration::from_secs(1), conn.read()).await
            {
                return Err(Error::with_code(code, message));
            }
            return Err(e);
        }
    };
    let mut conn = Conn::new(stream, 0);
    let lost = || {
        Error::protocol(format!(
            "locksup serve at {shown} closed the connection without the attempt's result"
        ))
    };
    let gave_up = |sig: Signal, why: &str| {
        Error::with_code(
            exit::from_signal(sig as i32),
            format!(
                "locksup serve at {shown} {why}; giving up on {sig} (the daemon cancels the \
                 attempt, or does not start it, when it sees this connection closed)"
            ),
        )
    };
    let mut started = false;
    // A cancel sent and not yet acknowledged: the signal, and by when.
    let mut unacked: Option<(Signal, Instant)> = None;
    loop {
        let deadline = match unacked {
            Some((_, by)) => Some(by),
            None if !started => Some(answer_by),
            None => None,
        };
        tokio::select! {
            frame = conn.read() => match frame {
                Ok(Some(Frame::Started { attempt_pid, attempt_id })) => {
                    started = true;
                    log::info!("attempt {attempt_id} started, supervisor pid {attempt_pid}");
                }
                Ok(Some(Frame::Signalled { signal })) => {
                    log::info!("locksup serve gave the attempt's supervisor {signal}");
                    unacked = None;
                }
                Ok(Some(Frame::Exit { code })) => return Ok(code),
                Ok(Some(Frame::Error { code, message })) => {
                    return Err(Error::with_code(code, message));
                }
                Ok(Some(other)) => {
                    return Err(Error::protocol(format!(
                        "unexpected {} frame from the daemon",
                        other.kind()
                    )));
                }
                Ok(None) => return Err(lost()),
                Err(e) => return Err(Error::protocol(format!("from the daemon: {e}"))),
            },
            sig = signals.next() => {
                let name = signal_name(sig).to_owned();
                let by = Instant::now() + CANCEL_ACK_TIMEOUT;
                let frame = if CANCEL_SIGNALS.contains(&sig) {
                    if unacked.is_some() {
                        // Told if the socket takes it now (the daemon then
                        // escalates, as for a second signal), not waited for.
                        let _ = timeout(Duration::ZERO, conn.write(&Frame::Cancel { signal: name })).await;
                        return Err(gave_up(sig, "has not acknowledged the first cancel"));
                    }
                    log::info!("{sig}: asking locksup serve to cancel the attempt");
                    unacked = Some((sig, by));
                    Frame::Cancel { signal: name }
                } else {
                    Frame::Signal { signal: name }
                };
                // A daemon that does not read gets as long as it would
                // have to acknowledge; a cut frame is never followed by
                // another.
                match timeout(CANCEL_ACK_TIMEOUT, conn.write(&frame)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(lost()),
                    Err(_) => {
                        return Err(match unacked {
                            Some((first, _)) => gave_up(first, "does not read the cancel"),
                            None => Error::protocol(format!(
                                "locksup serve at {shown} does not read what the client sends"
                            )),
                        });
                    }
                }
            }
            _ = async {
                match deadline {
                    Some(t) => sleep_until(t).await,
                    None => std::future::pending().await,
                }
            } => {
                return Err(match unacked {
                    Some((sig, _)) => gave_up(
                        sig,
                        &format!(
                            "did not acknowledge the cancel within {}",
                            format_duration(CANCEL_ACK_TIMEOUT)
                        ),
                    ),
                    None => no_answer(),
                });
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
                    return Err(Error::protocol(
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
                Err(e) => return Err(Error::protocol(format!("from the daemon: {e}"))),
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
        return Err(Error::protocol(format!(
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
        .map_err(|e| Error::protocol(format!("from the daemon: {e}")))
}

/// `locksup cancel --daemon`.
pub fn cancel(args: &CancelArgs, config_path: Option<&Path>) -> Result<i32> {
    let socket = socket_for(args.socket.as_deref(), config_path)?;
    let target = utf8("TARGET", args.target.clone().into_os_string())?;
    let cwd = std::env::current_dir()
        .map_err(|e| Error::io(format!("cannot read the working directory: {e}")))?;
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
        .map_err(|e| Error::protocol(format!("cannot send the request: {e}")))?;
    let sent = Instant::now();
    let answer = read_frame(&mut stream, Some(sent + Duration::from_secs(30)))?
        .ok_or_else(|| Error::protocol("locksup serve did not answer within 30s"))?;
    let (pid, id) = match answer {
        Frame::Cancelled {
            attempt_pid,
            attempt_id,
        } => (attempt_pid, attempt_id),
        Frame::Error { code, message } => return Err(Error::with_code(code, message)),
        other => {
            return Err(Error::protocol(format!(
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
        Some(other) => Err(Error::protocol(format!(
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

/// Write `text` to stdout; a reader that went away is not our failure.
fn print(text: &str) -> Result<i32> {
    match io::stdout().write_all(text.as_bytes()) {
        Ok(()) => Ok(exit::SUCCESS),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(exit::SUCCESS),
        Err(e) => Err(Error::io(format!("cannot write the status: {e}"))),
    }
}

/// Rows as columns of their widest cell; the last column is not padded.
fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i + 1 == N {
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
}

/// A user's name, else the uid as a number.
fn user_name(uid: u32, names: &mut std::collections::HashMap<u32, String>) -> String {
    names
        .entry(uid)
        .or_insert_with(|| {
            nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map_or_else(|| uid.to_string(), |u| u.name)
        })
        .clone()
}

/// `locksup status --daemon --history`: the attempts that ended lately.
fn history(args: &StatusArgs, socket: &Path) -> Result<i32> {
    let mut stream = connect(socket)?;
    stream
        .write_all(&protocol::encode(&Frame::History {}))
        .map_err(|e| Error::protocol(format!("cannot send the request: {e}")))?;
    let answer = read_frame(&mut stream, Some(Instant::now() + Duration::from_secs(30)))?
        .ok_or_else(|| Error::protocol("locksup serve did not answer within 30s"))?;
    let (bound, attempts, omitted) = match answer {
        Frame::Finished {
            bound,
            attempts,
            omitted,
        } => (bound, attempts, omitted),
        Frame::Error { code, message } => return Err(Error::with_code(code, message)),
        other => {
            return Err(Error::protocol(format!(
                "unexpected {} frame from the daemon",
                other.kind()
            )));
        }
    };
    if args.json {
        let doc = serde_json::json!({
            "v": 1,
            "socket": socket.display().to_string(),
            "bound": bound,
            "omitted": omitted,
            "attempts": attempts,
        });
        return print(&format!("{doc}\n"));
    }
    let ms = |v: Option<u64>| {
        v.map_or_else(
            || "-".to_owned(),
            |ms| crate::cmd::status::short_duration(Duration::from_millis(ms)),
        )
    };
    let mut names = std::collections::HashMap::new();
    let mut rows = vec![
        [
            "ENDED", "ATTEMPT", "USER", "OUTCOME", "EXIT", "WAITED", "HELD", "LOCK",
        ]
        .map(str::to_owned),
    ];
    for a in &attempts {
        rows.push([
            a.ended.clone(),
            a.attempt_id.clone(),
            user_name(a.uid, &mut names),
            a.outcome.clone(),
            a.exit_code.to_string(),
            ms(a.wait_ms),
            ms(a.held_ms),
            a.lock.clone(),
        ]);
    }
    let more = if omitted > 0 {
        format!(" ({omitted} more did not fit in one answer; --json shows the same)")
    } else {
        String::new()
    };
    let mut out = format!(
        "locksup serve at {}: the last {} finished attempt(s), newest first (keeps {bound}){more}\n",
        socket.display(),
        attempts.len()
    );
    out.push_str(&columns(&rows));
    print(&out)
}

/// `locksup status --daemon`: the daemon's attempts, as a table or JSON.
pub fn status(args: &StatusArgs, config_path: Option<&Path>) -> Result<i32> {
    let socket = socket_for(args.socket.as_deref(), config_path)?;
    if args.history {
        return history(args, &socket);
    }
    let mut stream = connect(&socket)?;
    stream
        .write_all(&protocol::encode(&Frame::List {}))
        .map_err(|e| Error::protocol(format!("cannot send the request: {e}")))?;
    let answer = read_frame(&mut stream, Some(Instant::now() + Duration::from_secs(30)))?
        .ok_or_else(|| Error::protocol("locksup serve did not answer within 30s"))?;
    let (containment, attempts) = match answer {
        Frame::Attempts {
            containment,
            attempts,
        } => (containment, attempts),
        Frame::Error { code, message } => return Err(Error::with_code(code, message)),
        other => {
            return Err(Error::protocol(format!(
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
                crate::cmd::status::short_duration(Duration::from_millis(a.running_ms)),
                a.lock.clone(),
            ]);
        }
        let mut out = format!(
            "locksup serve at {}: {} attempt(s); containment: {containment}\n",
            socket.display(),
            attempts.len()
        );
        out.push_str(&columns(&rows));
        out
    };
    match io::stdout().write_all(text.as_bytes()) {
        Ok(()) => Ok(exit::SUCCESS),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(exit::SUCCESS),
        Err(e) => Err(Error::io(format!("cannot write the status: {e}"))),
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
