//! `sd_notify(3)` from `locksup serve` to its service manager: `READY=1`,
//! `STATUS=...`, `STOPPING=1`. The datagram goes to `$NOTIFY_SOCKET` (a
//! path, or an abstract name written with a leading `@`); without it,
//! nothing is sent. (Attempts get their own notify socket from
//! [`crate::attempt::notify`], never this one.)

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Where notifications go.
pub(crate) struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`; `None` when it is unset, empty or unusable
    /// (logged).
    pub(crate) fn from_env() -> Option<Notifier> {
        let value = std::env::var_os("NOTIFY_SOCKET")?;
        match Notifier::new(value.as_encoded_bytes()) {
            Ok(n) => Some(n),
            Err(e) => {
                log::warn!(
                    "NOTIFY_SOCKET={}: {e}; not notifying the service manager",
                    value.to_string_lossy()
                );
                None
            }
        }
    }

    /// For a `NOTIFY_SOCKET` value.
    pub(crate) fn new(value: &[u8]) -> io::Result<Notifier> {
        let addr = match value {
            [] => return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty")),
            [b'@', name @ ..] => SocketAddr::from_abstract_name(name)?,
            [b'/', ..] => {
                SocketAddr::from_pathname(std::path::Path::new(std::ffi::OsStr::from_bytes(value)))?
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "neither an absolute path nor an abstract name (@...)",
                ));
            }
        };
        let sock = UnixDatagram::unbound()?;
        sock.set_nonblocking(true)?;
        Ok(Notifier { sock, addr })
    }

    /// Send `text` (newline-separated `KEY=VALUE` lines). Failures are
    /// logged at debug level: notifications never stop the daemon.
    pub(crate) fn send(&self, text: &str) {
        if let Err(e) = self.sock.send_to_addr(text.as_bytes(), &self.addr) {
            log::debug!("sd_notify {text:?}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_to_paths_and_abstract_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.as_os_str().as_bytes()).unwrap();
        n.send("READY=1\nSTATUS=0 attempts");
        let mut buf = [0u8; 64];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=0 attempts");

        let name = format!("locksup-test/{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        let n = Notifier::new(format!("@{name}").as_bytes()).unwrap();
        n.send("STOPPING=1");
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");

        assert!(Notifier::new(b"").is_err());
        assert!(Notifier::new(b"relative").is_err());
    }
}
