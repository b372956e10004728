//! The `/metrics` endpoint (`[serve] metrics`): a small HTTP/1.1
//! responder on TCP or on a Unix socket. `GET` (or `HEAD`) `/metrics`
//! answers 200 with the Prometheus text format; another method on
//! `/metrics` 405, another path 404, anything that is not an HTTP/1.x
//! request 400. Every connection is answered once and closed. A client
//! has [`READ_TIMEOUT`] to send at most [`MAX_HEAD`] bytes of request head,
//! and [`WRITE_TIMEOUT`] to read the answer; at most [`MAX_CONNECTIONS`]
//! are served at once (more are closed at once), so no client can hold
//! the endpoint.

use std::cell::Cell;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpListener;

use super::metrics::CONTENT_TYPE;
use super::*;
use crate::config::MetricsEndpoint;

/// The largest request head read (request line and headers).
const MAX_HEAD: usize = 8 << 10;
/// How long a client has to send its request head.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client has to take the answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once.
const MAX_CONNECTIONS: usize = 16;
/// How long the scan of the `[status] roots` may take at a scrape.
const SCAN_TIMEOUT: Duration = Duration::from_secs(10);

/// The endpoint's listening socket, bound before the runtime starts.
pub(super) enum Bound {
    Tcp(std::net::TcpListener),
    /// With its path and identity, to remove it at exit if still ours.
    Unix(
        std::os::unix::net::UnixListener,
        PathBuf,
        Option<(u64, u64)>,
    ),
}

impl Bound {
    /// Bind `at`; a Unix socket gets `mode`, like the daemon's own.
    pub(super) fn bind(at: &MetricsEndpoint, mode: u32) -> Result<Bound> {
        let b = match at {
            MetricsEndpoint::Tcp(addr) => {
                let l = std::net::TcpListener::bind(addr)
                    .map_err(|e| Error::io(format!("cannot listen for metrics on {addr}: {e}")))?;
                Bound::Tcp(l)
            }
            MetricsEndpoint::Unix(path) => {
                let l = bind(path, mode)?;
                let ino = std::fs::metadata(path).map(|m| (m.dev(), m.ino())).ok();
                Bound::Unix(l, path.clone(), ino)
            }
        };
        let nonblocking = match &b {
            Bound::Tcp(l) => l.set_nonblocking(true),
            Bound::Unix(l, _, _) => l.set_nonblocking(true),
        };
        nonblocking.map_err(|e| Error::io(format!("metrics socket: {e}")))?;
        Ok(b)
    }
}

/// Serve the endpoint until the daemon exits.
pub(super) async fn serve(state: Shared, bound: Bound) {
    let busy = Rc::new(Cell::new(0usize));
    let admit = |busy: &Rc<Cell<usize>>| {
        if busy.get() >= MAX_CONNECTIONS {
            return None;
        }
        busy.set(busy.get() + 1);
        Some(Slot(busy.clone()))
    };
    // The same loop for either kind of listener (their `accept` differ
    // only in the address they return).
    macro_rules! accept_forever {
        ($listener:expr) => {{
            let l = match $listener {
                Ok(l) => l,
                Err(e) => return log::warn!("metrics socket: {e}"),
            };
            loop {
                match l.accept().await {
                    Ok((stream, _)) => {
                        if let Some(slot) = admit(&busy) {
                            tokio::task::spawn_local(answer(state.clone(), stream, slot));
                        }
                    }
                    Err(e) => accept_failed(e).await,
                }
            }
        }};
    }
    match bound {
        Bound::Tcp(l) => accept_forever!(TcpListener::from_std(l)),
        Bound::Unix(l, _, _) => accept_forever!(UnixListener::from_std(l)),
    }
}

async fn accept_failed(e: std::io::Error) {
    log::warn!("metrics: accept: {e}");
    // Out of descriptors, most likely: let attempts end.
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// A connection being served; frees its place when dropped.
struct Slot(Rc<Cell<usize>>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Request {
    /// `GET /metrics` (`head`: `HEAD /metrics`).
    Metrics { head: bool },
    /// Another method on `/metrics`.
    BadMethod,
    /// Another path.
    NotFound,
    /// Not an HTTP/1.x request line.
    Bad,
}

/// The request line of a request head.
pub(super) fn parse(head: &[u8]) -> Request {
    let end = head.iter().position(|b| *b == b'\n').unwrap_or(head.len());
    let Ok(line) = std::str::from_utf8(&head[..end]) else {
        return Request::Bad;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Request::Bad;
    };
    if !version.starts_with("HTTP/1.")
        || method.is_empty()
        || !method.bytes().all(|b| b.is_ascii_uppercase())
    {
        return Request::Bad;
    }
    let path = target.split(['?', '#']).next().unwrap_or_default();
    if path != "/metrics" {
        return Request::NotFound;
    }
    match method {
        "GET" => Request::Metrics { head: false },
        "HEAD" => Request::Metrics { head: true },
        _ => Request::BadMethod,
    }
}

/// Read the request head: up to the blank line, at most [`MAX_HEAD`]
/// bytes. `Err` carries the status to answer (`None`: the client went
/// away).
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> std::result::Result<Vec<u8>, Option<&'static str>> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return Err(None),
            Ok(n) => n,
        };
        head.extend_from_slice(&chunk[..n]);
        let done =
            head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n");
        if done {
            return Ok(head);
        }
        if head.len() > MAX_HEAD {
            return Err(Some("431 Request Header Fields Too Large"));
        }
    }
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(state: Shared, mut stream: S, _slot: Slot) {
    let (status, extra, body, head_only) = match timeout(READ_TIMEOUT, read_head(&mut stream)).await
    {
        Err(_) => ("408 Request Timeout", "", String::new(), false),
        Ok(Err(None)) => return,
        Ok(Err(Some(status))) => (status, "", String::new(), false),
        Ok(Ok(head)) => match parse(&head) {
            Request::Metrics { head } => ("200 OK", "", scrape(&state).await, head),
            Request::BadMethod => (
                "405 Method Not Allowed",
                "Allow: GET, HEAD\r\n",
                String::new(),
                false,
            ),
            Request::NotFound => ("404 Not Found", "", String::new(), false),
            Request::Bad => ("400 Bad Request", "", String::new(), false),
        },
    };
    let (ctype, body) = if status.starts_with("200") {
        (CONTENT_TYPE, body)
    } else {
        (
            "text/plain; charset=utf-8",
            format!("{status}: only GET /metrics is served here\n"),
        )
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    let _ = timeout(WRITE_TIMEOUT, async {
        if stream.write_all(&out).await.is_ok() {
            let _ = stream.shutdown().await;
        }
    })
    .await;
}

/// The metrics now: the daemon's gauges, a scan of the `[status] roots`
/// (on a blocking thread, bounded by [`SCAN_TIMEOUT`]), then the text.
async fn scrape(state: &Shared) -> String {
    let (metrics, roots) = {
        let s = state.borrow();
        s.metrics.set_daemon(s.attempts.len(), s.history.len());
        let roots: Vec<(PathBuf, bool)> = s
            .settings
            .config
            .status
            .roots
            .iter()
            .map(|r| (r.clone(), false))
            .collect();
        (s.metrics.clone(), roots)
    };
    if roots.is_empty() {
        metrics.set_locks(Some(&[]));
    } else {
        let scan = tokio::task::spawn_blocking(move || crate::lock::status::snapshot(&roots));
        match timeout(SCAN_TIMEOUT, scan).await {
            Ok(Ok(Ok(locks))) => metrics.set_locks(Some(&locks)),
            Ok(Ok(Err(e))) => {
                log::warn!("metrics: scanning the status roots: {e}");
                metrics.set_locks(None);
            }
            Ok(Err(e)) => {
                log::warn!("metrics: scanning the status roots: {e}");
                metrics.set_locks(None);
            }
            Err(_) => {
                log::warn!("metrics: scanning the status roots took over {SCAN_TIMEOUT:?}");
                metrics.set_locks(None);
            }
        }
    }
    metrics.encode()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_and_head_of_metrics_are_served() {
        let p = |s: &str| parse(s.as_bytes());
        assert_eq!(
            p("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Metrics { head: false }
        );
        assert_eq!(
            p("GET /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Request::Metrics { head: false }
        );
        assert_eq!(
            p("HEAD /metrics HTTP/1.1\r\n\r\n"),
            Request::Metrics { head: true }
        );
        assert_eq!(p("POST /metrics HTTP/1.1\r\n\r\n"), Request::BadMethod);
        assert_eq!(p("GET / HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(p("GET /metrics/x HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(p("GET /metrics HTTP/2\r\n\r\n"), Request::Bad);
        assert_eq!(p("\u{1}\u{2}\r\n\r\n"), Request::Bad);
        assert_eq!(p("get /metrics HTTP/1.1\r\n\r\n"), Request::Bad);
        assert_eq!(parse(&[0xff, 0xfe, b'\n']), Request::Bad);
        assert_eq!(p(""), Request::Bad);
    }
}
