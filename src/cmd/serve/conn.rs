//! One client connection: its `run`, `cancel`, `signal` and `list`
//! frames, each request checked exactly as the command line would be.

use super::metrics::Refusal;
use super::state::{Peer, RunRequest};
use super::*;

/// Write `frame`, within [`WRITE_TIMEOUT`]; false when the client could
/// not be written to (gone, or not reading).
pub(super) async fn send(conn: &mut Conn, frame: &Frame) -> bool {
    match timeout(WRITE_TIMEOUT, conn.write(frame)).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            log::debug!("cannot answer a client: {e}");
            false
        }
        Err(_) => {
            log::info!(
                "a client did not read its {} frame within {}; dropping it",
                frame.kind(),
                crate::duration::format_duration(WRITE_TIMEOUT)
            );
            false
        }
    }
}

pub(super) async fn reply(conn: &mut Conn, frame: Frame) {
    send(conn, &frame).await;
}

pub(super) async fn refuse(
    state: &Shared,
    conn: &mut Conn,
    code: i32,
    reason: Refusal,
    message: String,
) {
    // Nothing the client sent is kept while it is answered.
    conn.close_fds();
    state.borrow().metrics.refused(reason);
    log::info!("refused: {message}");
    reply(conn, Frame::error(code, message)).await;
}

pub(super) fn proto_message(e: &ProtoError) -> String {
    e.to_string()
}

pub(super) async fn connection(state: Shared, stream: UnixStream) {
    let peer = match stream.peer_cred() {
        Ok(c) => Peer {
            uid: c.uid(),
            gid: c.gid(),
            groups: sys::peer_groups(stream.as_fd()).unwrap_or_default(),
            pid: c.pid(),
        },
        Err(e) => {
            log::warn!("cannot identify a client (SO_PEERCRED): {e}");
            return;
        }
    };
    let mut conn = Conn::new(stream, RUN_FDS);
    let (may_submit, is_admin, socket) = {
        let s = state.borrow();
        (s.may_submit(&peer), s.is_admin(&peer), s.socket.clone())
    };
    if !may_submit && !is_admin {
        let at = socket.map_or(String::new(), |p| format!(" at {}", p.display()));
        refuse(
            &state,
            &mut conn,
            exit::FAILURE,
            Refusal::NotAllowed,
            format!(
                "{} may not use locksup serve{at} (see [serve] allow_users and allow_groups)",
                peer.describe()
            ),
        )
        .await;
        return;
    }
    let first = match timeout(REQUEST_TIMEOUT, conn.read()).await {
        Err(_) => {
            refuse(
                &state,
                &mut conn,
                exit::FAILURE,
                Refusal::Timeout,
                format!(
                    "no request within {} of connecting",
                    crate::duration::format_duration(REQUEST_TIMEOUT)
                ),
            )
            .await;
            return;
        }
        Ok(Ok(Some(f))) => f,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            let m = proto_message(&e);
            refuse(&state, &mut conn, exit::FAILURE, Refusal::Protocol, m).await;
            return;
        }
    };
    // Descriptors come with a run request and nothing else.
    if !matches!(first, Frame::Run { .. }) && conn.close_fds() > 0 {
        let msg = format!(
            "unexpected descriptors with a {} frame: only a run request carries any",
            first.kind()
        );
        refuse(&state, &mut conn, exit::FAILURE, Refusal::Protocol, msg).await;
        return;
    }
    match first {
        Frame::Run { args, env, cwd } => {
            if !may_submit {
                let msg = format!(
                    "{} may not submit attempts (see [serve] allow_users and allow_groups)",
                    peer.describe()
                );
                refuse(&state, &mut conn, exit::FAILURE, Refusal::NotAllowed, msg).await;
                return;
            }
            run_attempt(state, conn, peer, args, env, cwd).await;
        }
        Frame::CancelAttempt {
            target,
            cwd,
            signal,
            wait,
        } => cancel_attempt(state, conn, peer, is_admin, target, cwd, signal, wait).await,
        Frame::List {} => {
            let frame = state.borrow().list(&peer, is_admin);
            reply(&mut conn, frame).await;
        }
        Frame::History {} => {
            let frame = state.borrow().finished(&peer, is_admin);
            reply(&mut conn, frame).await;
        }
        other => {
            let msg = format!(
                "expected a run, cancel_attempt or list frame first (or a history frame), not {}",
                other.kind()
            );
            refuse(&state, &mut conn, exit::FAILURE, Refusal::Protocol, msg).await;
        }
    }
}

pub(super) fn parse_signal(name: &str, allowed: &[Signal]) -> std::result::Result<Signal, String> {
    let sig = crate::signal::parse(name).map_err(|e| format!("bad signal: {e}"))?;
    let Some(std_sig) = sig.standard().filter(|s| allowed.contains(s)) else {
        let names: Vec<&str> = allowed
            .iter()
            .map(|s| s.as_str().trim_start_matches("SIG"))
            .collect();
        return Err(format!(
            "signal {} is not one of {}",
            sig.name(),
            names.join(", ")
        ));
    };
    Ok(std_sig)
}

/// Check a `run` request the way `locksup run` checks its command line.
pub(super) fn validate(
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: String,
    config: &Config,
) -> std::result::Result<RunRequest, String> {
    let cwd = PathBuf::from(cwd);
    if !cwd.is_absolute() {
        return Err(format!(
            "working directory '{}' is not absolute",
            cwd.display()
        ));
    }
    for (k, v) in &env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(format!("invalid environment variable name or value: {k:?}"));
        }
    }
    if let Some(a) = args.iter().find(|a| a.contains('\0')) {
        return Err(format!("argument {a:?} contains a NUL byte"));
    }
    let argv = ["locksup", "run"]
        .into_iter()
        .map(str::to_owned)
        .chain(args.iter().cloned());
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            return Err(match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    "help and version are not available through the daemon".to_owned()
                }
                _ => crate::cli::clap_message(&e),
            });
        }
    };
    let CliCommand::Run(run) = cli.command else {
        return Err("not a run request".into());
    };
    if cli.config.is_some() {
        return Err(
            "--config is not accepted through the daemon: its own configuration applies".into(),
        );
    }
    if run.daemon || run.socket.is_some() {
        return Err("--daemon and --socket are options of the client, not of the attempt".into());
    }
    if let Some(ev) = &run.events
        && ev.as_os_str() != "-"
    {
        return Err(format!(
            "--events {} is not accepted through the daemon (the file would be written as \
             the daemon's user); use --events - for the client's stderr",
            ev.display()
        ));
    }
    let abs = |p: &Path| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            cwd.join(p)
        }
    };
    let lock = match (&run.lock, &run.session) {
        (Some(l), _) => abs(l),
        (None, Some(s)) => lockfile::lock_path_for_session(&abs(s)),
        (None, None) => return Err("one of --session or --lock is required".into()),
    };
    let subject = run.session.as_deref().map_or_else(|| lock.clone(), abs);
    let grace = run
        .grace
        .or(config.defaults_for(&subject).grace)
        .unwrap_or(crate::duration::Dur::Finite(crate::cmd::run::DEFAULT_GRACE))
        .finite();
    let (attempt_id, add_id) = match run.attempt_id {
        Some(id) => (id, false),
        None => (crate::cmd::run::new_attempt_id(), true),
    };
    Ok(RunRequest {
        args,
        env,
        cwd,
        attempt_id,
        add_id,
        lock,
        grace,
    })
}

pub(super) async fn run_attempt(
    state: Shared,
    mut conn: Conn,
    peer: Peer,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: String,
) {
    let fds = conn.take_fds();
    if fds.len() != RUN_FDS {
        let msg = format!(
            "a run request must carry the client's stdin, stdout and stderr (SCM_RIGHTS); \
             it carried {} descriptor(s)",
            fds.len()
        );
        drop(fds);
        refuse(&state, &mut conn, exit::FAILURE, Refusal::Protocol, msg).await;
        return;
    }
    let config = state.borrow().settings.clone();
    let req = match validate(args, env, cwd, &config.config) {
        Ok(r) => r,
        Err(msg) => {
            drop(fds);
            refuse(&state, &mut conn, exit::FAILURE, Refusal::Invalid, msg).await;
            return;
        }
    };
    // A client that has gone (it gave up waiting for a daemon that was
    // stopped or busy, or it was killed) gets no attempt: nobody would
    // see its result, and its command must not run unasked.
    if conn.peer_closed() {
        log::info!(
            "{} went away before its attempt started; not starting it",
            peer.describe()
        );
        return;
    }
    let _owed = PendingGuard::new(&state.borrow().pending);
    let started = state.borrow_mut().start(req, fds, peer.uid);
    let (pid, attempt_id, mut done, watch) = match started {
        Ok(x) => x,
        Err((reason, msg)) => {
            refuse(&state, &mut conn, exit::FAILURE, reason, msg).await;
            return;
        }
    };
    tokio::task::spawn_local(super::observe::watch(state.clone(), watch));
    let gone = |why: &str| {
        if state.borrow().signal_attempt(pid, Signal::SIGTERM) {
            log::info!("attempt {attempt_id}: {why}: sent TERM to its supervisor");
        }
    };
    if !send(
        &mut conn,
        &Frame::Started {
            attempt_pid: pid,
            attempt_id: attempt_id.clone(),
        },
    )
    .await
    {
        gone("the client went away");
        return;
    }
    loop {
        tokio::select! {
            code = &mut done => {
                let code = code.unwrap_or(exit::FAILURE);
                reply(&mut conn, Frame::Exit { code }).await;
                return;
            }
            frame = conn.read() => match frame {
                Ok(Some(Frame::Cancel { signal })) => match parse_signal(&signal, &CANCEL_SIGNALS) {
                    Ok(sig) => {
                        log::info!("attempt {attempt_id}: the client asks to cancel with {}", sig.as_str());
                        state.borrow().signal_attempt(pid, sig);
                        // The client gives up on a daemon that does not
                        // answer this (locksup-serve(8)).
                        if !send(&mut conn, &Frame::Signalled { signal }).await {
                            gone("the client went away");
                            return;
                        }
                    }
                    Err(msg) => {
                        refuse(&state, &mut conn, exit::FAILURE, Refusal::Invalid, msg).await;
                        gone("the client sent a bad cancel frame");
                        return;
                    }
                },
                Ok(Some(Frame::Signal { signal })) => match parse_signal(&signal, &PASS_SIGNALS) {
                    Ok(sig) => {
                        state.borrow().signal_attempt(pid, sig);
                    }
                    Err(msg) => {
                        refuse(&state, &mut conn, exit::FAILURE, Refusal::Invalid, msg).await;
                        gone("the client sent a bad signal frame");
                        return;
                    }
                },
                Ok(Some(other)) => {
                    let msg = format!("unexpected {} frame while the attempt runs", other.kind());
                    refuse(&state, &mut conn, exit::FAILURE, Refusal::Protocol, msg).await;
                    gone("the client broke the protocol");
                    return;
                }
                Ok(None) => {
                    gone("the client went away");
                    return;
                }
                Err(ProtoError::Io(_)) | Err(ProtoError::Truncated) => {
                    gone("the client went away");
                    return;
                }
                Err(e) => {
                    let m = proto_message(&e);
                    refuse(&state, &mut conn, exit::FAILURE, Refusal::Protocol, m).await;
                    gone("the client broke the protocol");
                    return;
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn cancel_attempt(
    state: Shared,
    mut conn: Conn,
    peer: Peer,
    is_admin: bool,
    target: String,
    cwd: String,
    signal: String,
    wait: bool,
) {
    let _owed = wait.then(|| PendingGuard::new(&state.borrow().pending));
    let sig = match parse_signal(&signal, &CANCEL_SIGNALS) {
        Ok(s) => s,
        Err(msg) => {
            return refuse(&state, &mut conn, exit::FAILURE, Refusal::Invalid, msg).await;
        }
    };
    let found = {
        let s = state.borrow();
        find_attempt(&s, &target, Path::new(&cwd))
    };
    let pid = match found {
        Ok(pid) => pid,
        Err((code, msg)) => {
            let reason = if code == exit::TARGET_NOT_FOUND {
                Refusal::NotFound
            } else {
                Refusal::Invalid
            };
            return refuse(&state, &mut conn, code, reason, msg).await;
        }
    };
    let known = state
        .borrow()
        .attempts
        .get(&pid)
        .map(|a| (a.uid, a.attempt_id.clone()));
    let Some((owner, attempt_id)) = known else {
        let msg = format!("attempt '{target}' has just ended");
        let code = exit::TARGET_NOT_FOUND;
        return refuse(&state, &mut conn, code, Refusal::NotFound, msg).await;
    };
    if owner != peer.uid && !is_admin {
        let msg = format!(
            "{} may not cancel attempt {attempt_id} of uid {owner} (only its own user and \
             members of [serve] admin_groups may)",
            peer.describe()
        );
        return refuse(
            &state,
            &mut conn,
            exit::NOT_PERMITTED,
            Refusal::NotPermitted,
            msg,
        )
        .await;
    }
    let rx = {
        let mut s = state.borrow_mut();
        log::info!(
            "attempt {attempt_id}: {} cancels it with {}",
            peer.describe(),
            sig.as_str()
        );
        s.signal_attempt(pid, sig);
        let (tx, rx) = oneshot::channel();
        if let Some(a) = s.attempts.get_mut(&pid) {
            a.watchers.push(tx);
        }
        rx
    };
    reply(
        &mut conn,
        Frame::Cancelled {
            attempt_pid: pid,
            attempt_id,
        },
    )
    .await;
    if wait {
        let code = rx.await.unwrap_or(exit::FAILURE);
        reply(&mut conn, Frame::Exit { code }).await;
    }
}

/// The attempt `target` names: its attempt id, its lock file or its
/// session file. Among several attempts on one lock, the one holding it
/// (per the lock's metadata).
pub(super) fn find_attempt(
    s: &State,
    target: &str,
    cwd: &Path,
) -> std::result::Result<i32, (i32, String)> {
    if let Some((&pid, _)) = s.attempts.iter().find(|(_, a)| a.attempt_id == target) {
        return Ok(pid);
    }
    let p = Path::new(target);
    let p = if p.is_absolute() {
        p.to_path_buf()
    } else {
        cwd.join(p)
    };
    let as_session = lockfile::lock_path_for_session(&p);
    let on: Vec<i32> = s
        .attempts
        .iter()
        .filter(|(_, a)| a.lock == p || a.lock == as_session)
        .map(|(&pid, _)| pid)
        .collect();
    match on.as_slice() {
        [] => Err((
            exit::TARGET_NOT_FOUND,
            format!("no attempt of this daemon has id, lock or session '{target}'"),
        )),
        [one] => Ok(*one),
        many => {
            // The one holding the lock, per the lock file's metadata.
            let holder = [&p, &as_session].into_iter().find_map(|lock| {
                let m = std::fs::metadata(lock).ok()?;
                let id = procfs::FileId::new(m.dev(), m.ino());
                let meta = crate::lock::status::read_metadata(lock, id)?;
                many.contains(&meta.supervisor_pid)
                    .then_some(meta.supervisor_pid)
            });
            holder.ok_or((
                exit::FAILURE,
                format!(
                    "{} attempts use '{target}' and none of them holds its lock now; name \
                     one by its attempt id",
                    many.len()
                ),
            ))
        }
    }
}
