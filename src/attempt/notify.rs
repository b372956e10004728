//! The sd_notify protocol, spoken by the supervisor for each attempt.
//!
//! Every attempt gets a private datagram socket in the abstract namespace
//! and finds it in `NOTIFY_SOCKET`, exactly as a systemd service does, so
//! existing sd_notify libraries work unchanged. The supervisor reads each
//! datagram with the sender's credentials (`SO_PASSCRED`) and acts only on
//! those sent by a process of the attempt.

use std::hash::{BuildHasher, RandomState};
use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::SocketAddr;
use std::time::Duration;

use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, recvmsg, setsockopt, sockopt};
use tokio::io::Interest;
use tokio::net::UnixDatagram;

/// Largest datagram read; longer ones are truncated (systemd allows 4 KiB
/// of state per message plus fds; locksup takes no fds).
const MAX_DATAGRAM: usize = 4096;

/// One assignment in a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// `WATCHDOG=1`: a heartbeat.
    Heartbeat,
    /// `WATCHDOG=trigger`: the attempt asks to be treated as hung.
    WatchdogTrigger,
    /// `EXTEND_TIMEOUT_USEC=N`: move the deadline to now + N.
    Extend(Duration),
    /// `STATUS=text`.
    Status(String),
    /// `READY=1`.
    Ready,
    /// `WATCHDOG_USEC=N`: a new watchdog interval.
    WatchdogInterval(Duration),
}

/// Parse a datagram: newline-separated `KEY=VALUE` assignments. Unknown
/// keys and malformed values are ignored, as systemd does.
pub(crate) fn parse(datagram: &[u8]) -> Vec<Notice> {
    let text = String::from_utf8_lossy(datagram);
    let mut out = Vec::new();
    for line in text.split('\n') {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let usec = || value.trim().parse::<u64>().ok().map(Duration::from_micros);
        match key {
            "WATCHDOG" if value == "1" => out.push(Notice::Heartbeat),
            "WATCHDOG" if value == "trigger" => out.push(Notice::WatchdogTrigger),
            "EXTEND_TIMEOUT_USEC" => out.extend(usec().map(Notice::Extend)),
            "STATUS" => out.push(Notice::Status(value.chars().take(1024).collect())),
            "READY" if value == "1" => out.push(Notice::Ready),
            "WATCHDOG_USEC" => out.extend(
                usec()
                    .filter(|d| !d.is_zero())
                    .map(Notice::WatchdogInterval),
            ),
            _ => {}
        }
    }
    out
}

/// The attempt's notification socket.
pub(crate) struct NotifySocket {
    socket: UnixDatagram,
    name: String,
}

impl NotifySocket {
    /// Bind a fresh abstract socket. Must run inside the runtime.
    pub(crate) fn bind() -> io::Result<NotifySocket> {
        let tag = RandomState::new().hash_one(std::process::id());
        let name = format!("locksup/{}/{tag:016x}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
        let std_sock = std::os::unix::net::UnixDatagram::bind_addr(&addr)?;
        std_sock.set_nonblocking(true)?;
        setsockopt(&std_sock, sockopt::PassCred, &true).map_err(io::Error::from)?;
        let socket = UnixDatagram::from_std(std_sock)?;
        Ok(NotifySocket { socket, name })
    }

    /// The value for `NOTIFY_SOCKET` (`@` marks the abstract namespace).
    pub(crate) fn env_value(&self) -> String {
        format!("@{}", self.name)
    }

    /// The next datagram and the PID of its sender, if the kernel told it.
    pub(crate) async fn recv(&self) -> io::Result<(Vec<u8>, Option<i32>)> {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let fd = self.socket.as_raw_fd();
        let (len, pid) = self
            .socket
            .async_io(Interest::READABLE, || {
                let mut cmsg = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
                let mut iov = [IoSliceMut::new(&mut buf)];
                let msg =
                    recvmsg::<UnixAddr>(fd, &mut iov, Some(&mut cmsg), MsgFlags::MSG_DONTWAIT)
                        .map_err(io::Error::from)?;
                let mut pid = None;
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmCredentials(cred) = c {
                            pid = Some(cred.pid());
                        }
                    }
                }
                Ok((msg.bytes, pid))
            })
            .await?;
        buf.truncate(len);
        Ok((buf, pid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_systemd_parses() {
        let n = parse(b"READY=1\nSTATUS=indexing 3/10\nWATCHDOG=1\nEXTEND_TIMEOUT_USEC=5000000\nWATCHDOG_USEC=250000\nFOO=bar\nnonsense\nEXTEND_TIMEOUT_USEC=x\nWATCHDOG=trigger");
        assert_eq!(
            n,
            vec![
                Notice::Ready,
                Notice::Status("indexing 3/10".into()),
                Notice::Heartbeat,
                Notice::Extend(Duration::from_secs(5)),
                Notice::WatchdogInterval(Duration::from_millis(250)),
                Notice::WatchdogTrigger,
            ]
        );
        assert!(parse(b"").is_empty());
        assert!(parse(&[0xff, 0xfe, b'=', 0]).is_empty());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn receives_with_credentials() {
        let sock = NotifySocket::bind().unwrap();
        let name = sock.env_value();
        let addr = SocketAddr::from_abstract_name(&name.as_bytes()[1..]).unwrap();
        let tx = std::os::unix::net::UnixDatagram::unbound().unwrap();
        tx.send_to_addr(b"WATCHDOG=1", &addr).unwrap();
        let (data, pid) = sock.recv().await.unwrap();
        assert_eq!(data, b"WATCHDOG=1");
        assert_eq!(pid, Some(std::process::id() as i32));
    }
}
