//! The connection to the cluster: options as etcdctl takes them, a bound on
//! every request, and errors on one line.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, ConnectOptions, GetOptions, GetResponse, Identity, LeaseGrantResponse,
    LeaseRevokeResponse, LeaseTimeToLiveResponse, TlsOptions, Txn, TxnResponse, WatchOptions,
    WatchStream,
};

use super::config::{Config, show};
use crate::error::{Error, Result};

/// A connection to an etcd cluster (cheap to clone: one channel).
#[derive(Clone)]
pub struct Etcd {
    pub(crate) client: Arc<Client>,
    pub(crate) cfg: Arc<Config>,
}

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Etcd")
            .field("endpoints", &self.cfg.endpoints)
            .finish()
    }
}

fn read_pem(what: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    let pem = std::fs::read(path).map_err(|e| {
        Error::usage(format!(
            "etcd: cannot read the {what} {}: {e}",
            path.display()
        ))
    })?;
    if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
        return Err(Error::usage(format!(
            "etcd: the {what} {} is not PEM",
            path.display()
        )));
    }
    Ok(pem)
}

impl Etcd {
    /// Validate `cfg` and set up the connection. Connecting itself is lazy
    /// (the first request connects, within `dial_timeout`), except with
    /// `--user`, which authenticates here.
    pub async fn connect(cfg: &Config) -> Result<Self> {
        cfg.validate()?;
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(cfg.dial_timeout)
            // A member cut off from the leader refuses at once instead of
            // letting a request wait.
            .with_require_leader(true);
        if let Some((name, password)) = cfg.credentials()? {
            opts = opts.with_user(name, password);
        }
        let tls_wanted = cfg.cacert.is_some()
            || cfg.cert.is_some()
            || cfg.endpoints.iter().any(|e| e.starts_with("https://"));
        if tls_wanted {
            if let Some(e) = cfg.endpoints.iter().find(|e| e.starts_with("http://")) {
                return Err(Error::usage(format!(
                    "etcd: {e} is not an https:// endpoint, but TLS is configured"
                )));
            }
            let mut tls = TlsOptions::new();
            tls = match &cfg.cacert {
                Some(path) => {
                    tls.ca_certificate(Certificate::from_pem(read_pem("CA bundle", path)?))
                }
                None => tls.with_native_roots(),
            };
            if let (Some(cert), Some(key)) = (&cfg.cert, &cfg.key) {
                tls = tls.identity(Identity::from_pem(
                    read_pem("client certificate", cert)?,
                    read_pem("client key", key)?,
                ));
            }
            opts = opts.with_tls(tls);
        }
        let bound = cfg.dial_timeout + cfg.command_timeout;
        let connected = tokio::time::timeout(bound, Client::connect(&cfg.endpoints, Some(opts)))
            .await
            .map_err(|_| {
                Error::usage(format!(
                    "etcd: no answer from {} within {}",
                    cfg.endpoints.join(","),
                    show(bound)
                ))
            })?
            .map_err(|e| {
                Error::usage(format!(
                    "etcd: cannot connect to {}: {}",
                    cfg.endpoints.join(","),
                    describe(&e)
                ))
            })?;
        Ok(Self {
            client: Arc::new(connected),
            cfg: Arc::new(cfg.clone()),
        })
    }

    /// The configuration this connection was made with.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The underlying client, for what this module does not wrap.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Run one request within `command_timeout` (plus `dial_timeout`: the
    /// first request also connects); errors become one line naming `what`.
    /// With several endpoints, a request that fails for want of a
    /// connection or a leader (the member it went to is down, or cut off)
    /// is sent again, perhaps to another member, while time is left; every
    /// request here may be repeated safely (a repeated put finds its key
    /// already there, as etcd's Mutex expects; a repeated grant leaves an
    /// unused lease that lapses).
    pub(crate) async fn rpc<T, F, Fut>(&self, what: &str, mut request: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let bound = self.cfg.command_timeout + self.cfg.dial_timeout;
        let deadline = tokio::time::Instant::now() + bound;
        let again = self.cfg.endpoints.len() > 1;
        let mut pause = Duration::from_millis(50);
        let mut last: Option<String> = None;
        let endpoints = self.cfg.endpoints.join(",");
        loop {
            match tokio::time::timeout_at(deadline, request()).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(e))
                    if ((again && transient(&e)) || electing(&e))
                        && tokio::time::Instant::now() + pause < deadline =>
                {
                    log::debug!("etcd: {what}: {} (trying again)", describe(&e));
                    last = Some(describe(&e));
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Ok(Err(e)) => {
                    return Err(Error::usage(format!(
                        "etcd: {what} failed at {endpoints}: {}",
                        describe(&e)
                    )));
                }
                Err(_) => {
                    let why = match last {
                        Some(l) => format!(" (last error: {l})"),
                        None => diagnose(&self.cfg.endpoints, self.cfg.dial_timeout).await,
                    };
                    return Err(Error::usage(format!(
                        "etcd: {what}: no answer from {endpoints} within {}{why}",
                        show(bound)
                    )));
                }
            }
        }
    }

    pub(crate) async fn get(
        &self,
        what: &str,
        key: &str,
        opts: Option<GetOptions>,
    ) -> Result<GetResponse> {
        self.rpc(what, || {
            let (mut kv, opts) = (self.client.kv_client(), opts.clone());
            async move { kv.get(key, opts).await }
        })
        .await
    }

    pub(crate) async fn txn(&self, what: &str, txn: Txn) -> Result<TxnResponse> {
        self.rpc(what, || {
            let (mut kv, txn) = (self.client.kv_client(), txn.clone());
            async move { kv.txn(txn).await }
        })
        .await
    }

    pub(crate) async fn grant(&self, ttl: i64) -> Result<LeaseGrantResponse> {
        self.rpc("lease grant", || {
            let mut lease = self.client.lease_client();
            async move { lease.grant(ttl, None).await }
        })
        .await
    }

    pub(crate) async fn revoke(&self, id: i64) -> Result<LeaseRevokeResponse> {
        self.rpc("lease revoke", || {
            let mut lease = self.client.lease_client();
            async move { lease.revoke(id).await }
        })
        .await
    }

    pub(crate) async fn time_to_live(&self, id: i64) -> Result<LeaseTimeToLiveResponse> {
        self.rpc("lease time-to-live", || {
            let mut lease = self.client.lease_client();
            async move { lease.time_to_live(id, None).await }
        })
        .await
    }

    pub(crate) async fn watch(
        &self,
        what: &str,
        key: &[u8],
        opts: WatchOptions,
    ) -> Result<WatchStream> {
        self.rpc(what, || {
            let (mut w, opts) = (self.client.watch_client(), opts.clone());
            async move { w.watch(key, Some(opts)).await }
        })
        .await
    }
}

/// The member answered that the cluster is electing a leader ("leader
/// changed", "no leader"): the same member may answer the next try, so
/// it is tried again even with one endpoint.
fn electing(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("leader"))
}

/// Whether another try, perhaps at another member, may succeed: no
/// connection, or no leader there.
fn transient(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        // gRPC's status codes: 2 unknown (a connection broken mid-call),
        // 14 unavailable.
        etcd_client::Error::GRpcStatus(s) => {
            matches!(i32::from(s.code()), 2 | 14) || s.message().contains("no leader")
        }
        _ => false,
    }
}

/// `host:port` of an endpoint URL.
fn authority(endpoint: &str) -> &str {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    rest.split('/').next().unwrap_or(rest)
}

/// Why endpoints may not answer, from a plain TCP connect to each: `(a:1:
/// connection refused)`, or a hint when they all accept connections. The
/// probes run together: at most `within` in all.
async fn diagnose(endpoints: &[String], within: Duration) -> String {
    let probes = endpoints.iter().map(|e| async move {
        let addr = authority(e);
        let probe = tokio::time::timeout(within, tokio::net::TcpStream::connect(addr)).await;
        match probe {
            Ok(Ok(_)) => None,
            Ok(Err(err)) => Some(format!("{addr}: {}", lower_first(&err.to_string()))),
            Err(_) => Some(format!("{addr}: no TCP connection within {}", show(within))),
        }
    });
    let notes: Vec<String> = futures_util::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect();
    if notes.is_empty() {
        let hint = if endpoints.iter().any(|e| e.starts_with("https://")) {
            "check TLS: --cacert, --cert, --key"
        } else {
            "a stopped member, or not an etcd client URL"
        };
        format!(" (TCP connects but nothing answers: {hint})")
    } else {
        format!(" ({})", notes.join("; "))
    }
}

fn lower_first(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    }
}

/// One line for a client error: the gRPC message or the transport error
/// and what caused it, without the wrappers' noise.
pub(crate) fn describe(e: &etcd_client::Error) -> String {
    use std::error::Error as _;
    let (mut text, mut source): (String, Option<&(dyn std::error::Error + 'static)>) = match e {
        etcd_client::Error::GRpcStatus(s) => {
            let msg = if s.message().is_empty() {
                format!("{:?}", s.code())
            } else {
                s.message().to_string()
            };
            (msg, s.source())
        }
        etcd_client::Error::TransportError(t) => (t.to_string(), t.source()),
        other => (other.to_string(), None),
    };
    while let Some(cause) = source {
        let c = cause.to_string();
        // "transport error" says nothing the other links do not.
        if !text.contains(&c) && c != "transport error" {
            text.push_str(": ");
            text.push_str(&c);
        }
        source = cause.source();
    }
    lower_first(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authority_of_endpoints() {
        assert_eq!(authority("http://127.0.0.1:2379"), "127.0.0.1:2379");
        assert_eq!(authority("https://h:1/x"), "h:1");
        assert_eq!(authority("h:2"), "h:2");
    }
}
