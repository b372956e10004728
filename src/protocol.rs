//! The protocol between `locksup serve` and its clients (`locksup run
//! --daemon`, `locksup cancel --daemon`), documented in locksup-serve(8).
//!
//! A connection carries *frames*: a 4-byte big-endian length, then that
//! many bytes of one JSON object, at most [`MAX_FRAME`] bytes. Every
//! object has `"v": 1` (the protocol version) and `"type"`; the other keys
//! depend on the type (see [`Frame`]). Unknown types, unknown keys,
//! missing keys, other versions and oversized frames are errors: the
//! daemon answers an `error` frame and closes that connection.
//!
//! A `run` frame carries the client's descriptors 0, 1 and 2 as
//! `SCM_RIGHTS` ancillary data, as s6-sudo does; they become the
//! attempt's standard input, output and error. A connection takes no
//! other descriptor, ever: [`Conn`] gives the kernel room for only as many
//! as the connection may still carry (so a message with more is cut off
//! in the kernel, the rest never installed here), and on any excess,
//! truncation or error it closes every descriptor it received before it
//! reports the error.
//!
//! Strings are UTF-8 (JSON's): arguments, environment variables and a
//! working directory that are not valid UTF-8 are refused by the client
//! with exit status 125.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::UnixStream;

/// The protocol version, `"v"` in every frame.
pub(crate) const VERSION: u64 = 1;

/// The largest frame body accepted, in bytes (1 MiB).
pub(crate) const MAX_FRAME: usize = 1 << 20;

/// Descriptors a `run` frame carries: stdin, stdout, stderr.
pub(crate) const RUN_FDS: usize = 3;

/// One frame, by its `"type"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Frame {
    /// Client → daemon, first frame: run an attempt. `args` is what
    /// follows `run` on the client's command line (without `--daemon` and
    /// `--socket`), `env` the client's environment as `[name, value]`
    /// pairs, `cwd` its working directory (absolute). Carries descriptors
    /// 0, 1, 2.
    Run {
        /// Arguments of `locksup run`.
        args: Vec<String>,
        /// The client's environment.
        env: Vec<(String, String)>,
        /// The client's working directory.
        cwd: String,
    },
    /// Client → daemon, while its attempt runs: cancel it with this signal
    /// (`TERM`, `INT`, `HUP` or `QUIT`), as if `locksup run` had received
    /// it; a second one escalates to the final signal.
    Cancel {
        /// The signal's name.
        signal: String,
    },
    /// Client → daemon, while its attempt runs: pass `USR1`, `USR2` or
    /// `WINCH` on to the attempt.
    Signal {
        /// The signal's name.
        signal: String,
    },
    /// Client → daemon, first frame: cancel an attempt of the daemon,
    /// found by attempt id, lock file or session file (relative paths
    /// against `cwd`). Permitted for the attempt's own user, the daemon's
    /// user, root and members of `[serve] admin_groups`. With `wait`, an
    /// `exit` frame follows when the attempt has ended.
    CancelAttempt {
        /// Attempt id, lock file or session file.
        target: String,
        /// The client's working directory.
        cwd: String,
        /// `TERM`, `INT`, `HUP` or `QUIT`.
        signal: String,
        /// Send `exit` when the attempt has ended.
        wait: bool,
    },
    /// Client → daemon, first frame: the daemon's attempts (all of them for
    /// the daemon's user, root and `admin_groups`; one's own otherwise).
    List {},
    /// Daemon → client: the answer to `list`.
    Attempts {
        /// How attempts are contained: `cgroup` or `process-group`, and why.
        containment: String,
        /// The attempts running now.
        attempts: Vec<AttemptInfo>,
    },
    /// Client → daemon, first frame: the attempts that have ended lately
    /// (all of them for the daemon's user, root and `admin_groups`; one's
    /// own otherwise), answered with `finished`.
    History {},
    /// Daemon → client: the answer to `history`, newest first, as many as
    /// fit in one frame.
    Finished {
        /// How many finished attempts the daemon keeps (`[serve] history`).
        bound: u64,
        /// The attempts, newest first.
        attempts: Vec<FinishedInfo>,
        /// How many more the daemon has that did not fit in the frame.
        omitted: u64,
    },
    /// Daemon → client: the attempt's supervisor started.
    Started {
        /// PID of the attempt's supervisor (a `locksup run` process, the
        /// one signals go to).
        attempt_pid: i32,
        /// The attempt id (given with `--attempt-id`, or generated).
        attempt_id: String,
    },
    /// Daemon → client, while the attempt runs: the answer to `cancel`,
    /// once the attempt's supervisor has been given the signal. A client
    /// that gets no answer within its bound gives up (locksup-serve(8)).
    Signalled {
        /// The signal's name, as the client sent it.
        signal: String,
    },
    /// Daemon → client: the attempt was signalled (answer to
    /// `cancel_attempt`).
    Cancelled {
        /// PID of the attempt's supervisor.
        attempt_pid: i32,
        /// The attempt id.
        attempt_id: String,
    },
    /// Daemon → client, last frame: the attempt ended; `code` is the exit
    /// status `locksup run` would have ended with.
    Exit {
        /// Exit status, 0 to 255.
        code: i32,
    },
    /// Daemon → client, last frame: the request failed. `code` is the exit
    /// status for the client (125 for usage errors, refused peers and
    /// protocol errors), `message` one line.
    Error {
        /// Exit status for the client.
        code: i32,
        /// What went wrong, one line.
        message: String,
    },
}

/// One attempt of the daemon, in an `attempts` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AttemptInfo {
    /// Its attempt id.
    pub attempt_id: String,
    /// PID of its supervisor.
    pub attempt_pid: i32,
    /// The user who submitted it.
    pub uid: u32,
    /// Its lock file.
    pub lock: String,
    /// Milliseconds since it was submitted.
    pub running_ms: u64,
}

/// One attempt that ended, in a `finished` frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FinishedInfo {
    /// Its attempt id.
    pub attempt_id: String,
    /// The user who submitted it.
    pub uid: u32,
    /// Its lock file.
    pub lock: String,
    /// When it was submitted (RFC 3339, UTC).
    pub started: String,
    /// When it got its lock; null if it never did.
    pub acquired: Option<String>,
    /// When it ended.
    pub ended: String,
    /// exited, timeout, killed, cancelled, watchdog, lease-lost, conflict
    /// or failure (locksup-serve(8)).
    pub outcome: String,
    /// The exit status its client got.
    pub exit_code: i32,
    /// How long it waited for the lock, in milliseconds; null if unknown.
    pub wait_ms: Option<u64>,
    /// How long it held the lock, until its command exited; null if unknown.
    pub held_ms: Option<u64>,
    /// Its fencing token; null (not recorded yet).
    pub fence: Option<u64>,
}

impl Frame {
    /// The `"type"` of the frame.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Frame::Run { .. } => "run",
            Frame::Cancel { .. } => "cancel",
            Frame::Signal { .. } => "signal",
            Frame::CancelAttempt { .. } => "cancel_attempt",
            Frame::List {} => "list",
            Frame::Attempts { .. } => "attempts",
            Frame::History {} => "history",
            Frame::Finished { .. } => "finished",
            Frame::Started { .. } => "started",
            Frame::Signalled { .. } => "signalled",
            Frame::Cancelled { .. } => "cancelled",
            Frame::Exit { .. } => "exit",
            Frame::Error { .. } => "error",
        }
    }

    /// An `error` frame.
    pub(crate) fn error(code: i32, message: impl Into<String>) -> Frame {
        let message: String = message.into();
        Frame::Error {
            code,
            message: message.split_whitespace().collect::<Vec<_>>().join(" "),
        }
    }
}

/// Why a frame could not be read.
#[derive(Debug)]
pub(crate) enum ProtoError {
    /// The announced length is over [`MAX_FRAME`] (or zero).
    Size(usize),
    /// Not a JSON object of a known type with the right keys.
    Malformed(String),
    /// A `"v"` this side does not speak.
    Version(String),
    /// More descriptors than a frame may carry, or truncated ones.
    Descriptors(String),
    /// The connection closed in the middle of a frame.
    Truncated,
    /// The socket failed.
    Io(io::Error),
}

impl std::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtoError::Size(0) => f.write_str("malformed frame: empty"),
            ProtoError::Size(n) => write!(
                f,
                "frame of {n} bytes is over the limit of {MAX_FRAME} bytes"
            ),
            ProtoError::Malformed(m) => write!(f, "malformed frame: {m}"),
            ProtoError::Version(v) => write!(
                f,
                "protocol version {v} is not supported (this side speaks {VERSION})"
            ),
            ProtoError::Descriptors(m) => write!(f, "{m}"),
            ProtoError::Truncated => f.write_str("connection closed in the middle of a frame"),
            ProtoError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// The bytes of one frame: length prefix and JSON with `"v"` first.
pub(crate) fn encode(frame: &Frame) -> Vec<u8> {
    let mut obj = Map::new();
    obj.insert("v".into(), VERSION.into());
    if let Ok(Value::Object(fields)) = serde_json::to_value(frame) {
        obj.extend(fields);
    }
    let body = Value::Object(obj).to_string().into_bytes();
    let mut out = Vec::with_capacity(4 + body.len());
    // Frames are at most MAX_FRAME bytes, far below u32::MAX.
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Decode one frame body (without its length prefix).
pub(crate) fn decode(body: &[u8]) -> Result<Frame, ProtoError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(ProtoError::Malformed("not a JSON object".into()));
    };
    match obj.remove("v") {
        Some(Value::Number(n)) if n.as_u64() == Some(VERSION) => {}
        Some(other) => return Err(ProtoError::Version(other.to_string())),
        None => return Err(ProtoError::Malformed("no \"v\" (protocol version)".into())),
    }
    match obj.get("type") {
        Some(Value::String(_)) => {}
        Some(_) => return Err(ProtoError::Malformed("\"type\" is not a string".into())),
        None => return Err(ProtoError::Malformed("no \"type\"".into())),
    }
    serde_json::from_value(Value::Object(obj)).map_err(|e| ProtoError::Malformed(e.to_string()))
}

/// Take one complete frame off the front of `buf`, if there is one.
pub(crate) fn split_frame(buf: &mut Vec<u8>) -> Result<Option<Frame>, ProtoError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 || len > MAX_FRAME {
        return Err(ProtoError::Size(len));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let frame = decode(&buf[4..4 + len]);
    buf.drain(..4 + len);
    frame.map(Some)
}

/// One end of a connection, reading frames (and any descriptors that come
/// with them) and writing frames.
pub(crate) struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
    /// Descriptors received so far, in order, not yet taken.
    fds: Vec<OwnedFd>,
    /// How many descriptors the connection may carry in all.
    max_fds: usize,
    /// How many it has carried so far (taken or not).
    received: usize,
}

impl Conn {
    /// Wrap a connected stream; at most `max_fds` descriptors may arrive
    /// over the connection's whole life.
    pub(crate) fn new(stream: UnixStream, max_fds: usize) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
            fds: Vec::new(),
            max_fds,
            received: 0,
        }
    }

    /// The descriptors received so far.
    pub(crate) fn take_fds(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.fds)
    }

    /// Close the descriptors received so far; how many there were.
    pub(crate) fn close_fds(&mut self) -> usize {
        let n = self.fds.len();
        self.fds.clear();
        n
    }

    /// Whether the peer has closed the connection (data it sent before
    /// may still be unread): `poll(2)` with no timeout, so it never waits,
    /// and it asks the kernel, not the reactor (which may not have seen a
    /// new connection's state yet). A peer that only shut down its writing
    /// side is not seen here; its end of stream is, when it is read.
    pub(crate) fn peer_closed(&self) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        // POLLIN, not POLLRDHUP: nix reads back no flag it has no name for.
        let mut fds = [PollFd::new(self.stream.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(n) if n > 0 => fds[0]
                .revents()
                .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR)),
            _ => false,
        }
    }

    /// The next frame; `None` when the peer closed the connection between
    /// frames. On an error every descriptor received and not yet taken has
    /// been closed.
    pub(crate) async fn read(&mut self) -> Result<Option<Frame>, ProtoError> {
        let read = self.read_inner().await;
        if read.is_err() {
            self.fds.clear();
        }
        read
    }

    async fn read_inner(&mut self) -> Result<Option<Frame>, ProtoError> {
        loop {
            if let Some(f) = split_frame(&mut self.buf)? {
                return Ok(Some(f));
            }
            let fd = self.stream.as_raw_fd();
            let room = self.max_fds.saturating_sub(self.received);
            // The buffers live only inside the read, not in this future:
            // a daemon keeps one pending read per attempt.
            let got = self
                .stream
                .async_io(Interest::READABLE, || {
                    let mut chunk = [0u8; 16 * 1024];
                    let got = recv_with_fds(fd, &mut chunk, room)?;
                    Ok((chunk[..got.bytes].to_vec(), got))
                })
                .await
                .map_err(ProtoError::Io)?;
            let (data, Received { fds, truncated, .. }) = got;
            let count = fds.len();
            self.received = self.received.saturating_add(count);
            if truncated || self.received > self.max_fds {
                // Closed here and now: `fds` and every earlier one.
                drop(fds);
                self.fds.clear();
                return Err(ProtoError::Descriptors(if self.max_fds == 0 {
                    "unexpected descriptors: this connection takes none".to_owned()
                } else {
                    format!(
                        "too many descriptors: a connection passes at most {}, with its run \
                         request",
                        self.max_fds
                    )
                }));
            }
            self.fds.extend(fds);
            if data.is_empty() && count == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ProtoError::Truncated)
                };
            }
            self.buf.extend_from_slice(&data);
        }
    }

    /// Send one frame.
    pub(crate) async fn write(&mut self, frame: &Frame) -> io::Result<()> {
        self.stream.write_all(&encode(frame)).await?;
        self.stream.flush().await
    }
}

/// What one `recvmsg(2)` brought.
struct Received {
    bytes: usize,
    /// Every descriptor the kernel installed in this process, owned.
    fds: Vec<OwnedFd>,
    /// The control data was cut off (`MSG_CTRUNC`): more descriptors were
    /// sent than there was room for; the kernel discarded the rest.
    truncated: bool,
}

/// Bytes of control data with room for `n` descriptors (`CMSG_SPACE`).
fn rights_space(n: usize) -> usize {
    cmsg_align(std::mem::size_of::<libc::cmsghdr>()) + cmsg_align(n * std::mem::size_of::<RawFd>())
}

/// `CMSG_ALIGN` of Linux: to the size of `size_t`.
fn cmsg_align(len: usize) -> usize {
    let a = std::mem::size_of::<usize>();
    (len + a - 1) & !(a - 1)
}

/// One `recvmsg(2)` (non-blocking), with room for `room` descriptors, made
/// close-on-exec by the kernel (`MSG_CMSG_CLOEXEC`). Every descriptor the
/// kernel installed comes back owned, also when the control data was
/// truncated.
fn recv_with_fds(fd: RawFd, chunk: &mut [u8], room: usize) -> io::Result<Received> {
    // No room at all: no control buffer, and the kernel installs nothing.
    let mut cmsg = (room > 0).then(|| vec![0u8; rights_space(room)]);
    let mut iov = [IoSliceMut::new(chunk)];
    let (bytes, truncated, mut raw) = {
        let msg = loop {
            match recvmsg::<()>(
                fd,
                &mut iov,
                cmsg.as_deref_mut(),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other.map_err(io::Error::from)?,
            }
        };
        let mut raw = Vec::new();
        // nix refuses to walk truncated control data (below for that).
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(fds) = c {
                    raw.extend(fds);
                }
            }
        }
        (msg.bytes, msg.flags.contains(MsgFlags::MSG_CTRUNC), raw)
    };
    if truncated {
        // The kernel still installed as many descriptors as fitted, and
        // said which in the (zero-filled) buffer.
        raw = cmsg.as_deref().map(rights_in).unwrap_or_default();
    }
    // Descriptors the kernel just installed in this process.
    let fds = raw
        .into_iter()
        .filter(|&fd| fd >= 0)
        .map(crate::sys::own_received_fd)
        .collect();
    Ok(Received {
        bytes,
        fds,
        truncated,
    })
}

/// The descriptors of the `SCM_RIGHTS` messages in control data `buf` as
/// the kernel wrote it into a zero-filled buffer (a header of
/// `cmsghdr` with its `cmsg_len`, level and type, then the descriptors;
/// each message aligned with `CMSG_ALIGN`). A zero length ends it.
fn rights_in(buf: &[u8]) -> Vec<RawFd> {
    fn field_size<F>(_: impl Fn(&libc::cmsghdr) -> &F) -> usize {
        std::mem::size_of::<F>()
    }
    let hdr = std::mem::size_of::<libc::cmsghdr>();
    let data_at = cmsg_align(hdr);
    let len_at = std::mem::offset_of!(libc::cmsghdr, cmsg_len);
    let len_size = field_size(|h| &h.cmsg_len);
    let level_at = std::mem::offset_of!(libc::cmsghdr, cmsg_level);
    let type_at = std::mem::offset_of!(libc::cmsghdr, cmsg_type);
    let int = |b: &[u8], at: usize| -> Option<i32> {
        Some(i32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
    };
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(h) = buf.get(at..at + hdr) {
        let len = match h.get(len_at..len_at + len_size) {
            Some(b) if len_size == 8 => b
                .try_into()
                .map(u64::from_ne_bytes)
                .map_or(0, |v| usize::try_from(v).unwrap_or(usize::MAX)),
            Some(b) if len_size == 4 => b
                .try_into()
                .map(u32::from_ne_bytes)
                .map_or(0, |v| usize::try_from(v).unwrap_or(usize::MAX)),
            _ => 0,
        };
        if len < data_at || len > buf.len() - at {
            break;
        }
        if int(h, level_at) == Some(libc::SOL_SOCKET) && int(h, type_at) == Some(libc::SCM_RIGHTS) {
            let data = &buf[at + data_at..at + len];
            out.extend(
                data.chunks_exact(4)
                    .filter_map(|c| c.try_into().ok().map(i32::from_ne_bytes)),
            );
        }
        at += cmsg_align(len);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(f: &Frame) -> Vec<u8> {
        encode(f)[4..].to_vec()
    }

    #[test]
    fn frames_round_trip_with_version_first() {
        let frames = [
            Frame::Run {
                args: vec!["--session".into(), "/s".into(), "--".into(), "true".into()],
                env: vec![("A".into(), "b=c".into())],
                cwd: "/".into(),
            },
            Frame::Cancel {
                signal: "TERM".into(),
            },
            Frame::Signal {
                signal: "USR1".into(),
            },
            Frame::CancelAttempt {
                target: "x".into(),
                cwd: "/".into(),
                signal: "INT".into(),
                wait: true,
            },
            Frame::Started {
                attempt_pid: 5,
                attempt_id: "a".into(),
            },
            Frame::Cancelled {
                attempt_pid: 5,
                attempt_id: "a".into(),
            },
            Frame::Signalled {
                signal: "TERM".into(),
            },
            Frame::Exit { code: 3 },
            Frame::error(125, "bad\nthing"),
            Frame::List {},
            Frame::Attempts {
                containment: "process-group".into(),
                attempts: vec![AttemptInfo {
                    attempt_id: "a".into(),
                    attempt_pid: 7,
                    uid: 0,
                    lock: "/l".into(),
                    running_ms: 5,
                }],
            },
            Frame::History {},
            Frame::Finished {
                bound: 1000,
                attempts: vec![FinishedInfo {
                    attempt_id: "a".into(),
                    uid: 0,
                    lock: "/l".into(),
                    started: "2026-01-01T00:00:00.000Z".into(),
                    acquired: None,
                    ended: "2026-01-01T00:00:01.000Z".into(),
                    outcome: "timeout".into(),
                    exit_code: 124,
                    wait_ms: Some(0),
                    held_ms: None,
                    fence: None,
                }],
                omitted: 0,
            },
        ];
        for f in frames {
            let bytes = encode(&f);
            let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            assert_eq!(len, bytes.len() - 4);
            let text = String::from_utf8(bytes[4..].to_vec()).unwrap();
            assert!(text.starts_with("{\"v\":1,\"type\":"), "{text}");
            assert_eq!(decode(&bytes[4..]).unwrap(), f);
        }
        let run = String::from_utf8(body(&Frame::Run {
            args: vec![],
            env: vec![("K".into(), "V".into())],
            cwd: "/".into(),
        }))
        .unwrap();
        assert_eq!(
            run,
            r#"{"v":1,"type":"run","args":[],"env":[["K","V"]],"cwd":"/"}"#
        );
        assert_eq!(
            Frame::error(1, "a\n  b"),
            Frame::Error {
                code: 1,
                message: "a b".into()
            }
        );
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let cases: &[(&[u8], &str)] = &[
            (b"", "malformed"),
            (b"not json", "malformed"),
            (b"[1,2]", "not a JSON object"),
            (b"{}", "malformed"),
            (br#"{"type":"exit","code":1}"#, "no \"v\""),
            (br#"{"v":2,"type":"exit","code":1}"#, "version 2"),
            (br#"{"v":"1","type":"exit","code":1}"#, "version \"1\""),
            (br#"{"v":1}"#, "no \"type\""),
            (br#"{"v":1,"type":7}"#, "not a string"),
            (br#"{"v":1,"type":"launch"}"#, "unknown variant `launch`"),
            (br#"{"v":1,"type":"exit"}"#, "missing field `code`"),
            (
                br#"{"v":1,"type":"exit","code":1,"x":2}"#,
                "unknown field `x`",
            ),
            (br#"{"v":1,"type":"exit","code":"1"}"#, "invalid type"),
            (
                br#"{"v":1,"type":"run","args":[],"env":[["A"]],"cwd":"/"}"#,
                "invalid length",
            ),
        ];
        for (b, want) in cases {
            let e = decode(b).unwrap_err().to_string();
            assert!(e.contains(want), "{:?}: {e}", String::from_utf8_lossy(b));
        }
    }

    #[test]
    fn split_frame_waits_for_whole_frames_and_checks_the_size() {
        let bytes = encode(&Frame::Exit { code: 0 });
        let mut buf = bytes[..6].to_vec();
        assert!(split_frame(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&bytes[6..]);
        buf.extend_from_slice(&bytes);
        assert_eq!(
            split_frame(&mut buf).unwrap(),
            Some(Frame::Exit { code: 0 })
        );
        assert_eq!(
            split_frame(&mut buf).unwrap(),
            Some(Frame::Exit { code: 0 })
        );
        assert!(buf.is_empty());
        let mut big = u32::try_from(MAX_FRAME + 1).unwrap().to_be_bytes().to_vec();
        let e = split_frame(&mut big).unwrap_err();
        assert!(matches!(e, ProtoError::Size(n) if n == MAX_FRAME + 1));
        assert!(e.to_string().contains("over the limit"));
        let mut zero = vec![0, 0, 0, 0];
        assert!(matches!(
            split_frame(&mut zero).unwrap_err(),
            ProtoError::Size(0)
        ));
    }

    /// Send `n` copies of one descriptor in one message, receive with room
    /// for `room`: what the kernel installed comes back, owned, whether or
    /// not the control data was cut off.
    fn send_and_receive(n: usize, room: usize) -> (Received, std::fs::File) {
        use nix::sys::socket::{ControlMessage, sendmsg};
        use std::os::unix::net::UnixStream;
        let (a, b) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        let fds = vec![file.as_raw_fd(); n];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        let iov = [std::io::IoSlice::new(b"x")];
        sendmsg::<()>(a.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).unwrap();
        let mut chunk = [0u8; 16];
        let got = recv_with_fds(b.as_raw_fd(), &mut chunk, room).unwrap();
        assert_eq!(got.bytes, 1);
        (got, file)
    }

    fn same_file(a: &impl std::os::fd::AsFd, b: &impl std::os::fd::AsFd) -> bool {
        let (x, y) = (
            nix::sys::stat::fstat(a).unwrap(),
            nix::sys::stat::fstat(b).unwrap(),
        );
        (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)
    }

    fn cloexec(fd: &OwnedFd) -> bool {
        use nix::fcntl::{FcntlArg, FdFlag, fcntl};
        FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap())
            .contains(FdFlag::FD_CLOEXEC)
    }

    #[test]
    fn truncated_control_data_still_yields_every_installed_descriptor() {
        // Exactly as many as there is room for: not truncated.
        let (got, file) = send_and_receive(3, 3);
        assert!(!got.truncated);
        assert_eq!(got.fds.len(), 3);
        assert!(got.fds.iter().all(|fd| same_file(fd, &file) && cloexec(fd)));
        // 20 in one message with room for 3: the kernel installs what fits
        // (CMSG_SPACE rounds up to 4), discards the rest and says so.
        let (got, file) = send_and_receive(20, 3);
        assert!(got.truncated);
        assert_eq!(got.fds.len(), 4);
        assert!(got.fds.iter().all(|fd| same_file(fd, &file) && cloexec(fd)));
        let (got, _) = send_and_receive(253, 1);
        assert!(got.truncated);
        assert_eq!(got.fds.len(), 2);
        // No room: nothing installed at all.
        let (got, _) = send_and_receive(5, 0);
        assert!(got.truncated);
        assert!(got.fds.is_empty());
    }

    #[test]
    #[cfg(all(target_pointer_width = "64", target_env = "gnu"))]
    fn control_data_parser_never_overreads() {
        let hdr = std::mem::size_of::<libc::cmsghdr>();
        // Headers that claim more than the buffer, or less than a header.
        let mut buf = vec![0u8; rights_space(2)];
        for claim in [0usize, 1, hdr - 1, buf.len() + 1, usize::MAX] {
            buf[..8].copy_from_slice(&(claim as u64).to_ne_bytes()[..8]);
            assert!(rights_in(&buf).is_empty(), "{claim}");
        }
        for len in 0..64 {
            let junk: Vec<u8> = (0..len)
                .map(|i| u8::try_from(i * 37 % 256).unwrap())
                .collect();
            let _ = rights_in(&junk);
        }
    }

    #[test]
    fn a_peer_that_closed_before_it_was_accepted_is_seen_at_once() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s");
            let listener = tokio::net::UnixListener::bind(&path).unwrap();
            // Gone before accept, its request still unread.
            {
                use std::io::Write as _;
                let mut gone = std::os::unix::net::UnixStream::connect(&path).unwrap();
                gone.write_all(&encode(&Frame::List {})).unwrap();
            }
            let (s, _) = listener.accept().await.unwrap();
            let mut conn = Conn::new(s, 0);
            assert_eq!(conn.read().await.unwrap(), Some(Frame::List {}));
            assert!(conn.peer_closed());
            // Still there, with nothing sent: not closed.
            let _live = std::os::unix::net::UnixStream::connect(&path).unwrap();
            let (s, _) = listener.accept().await.unwrap();
            assert!(!Conn::new(s, 0).peer_closed());
        });
    }
}
