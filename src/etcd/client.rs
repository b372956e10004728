//! The connection to the cluster: options as etcdctl takes them, a bound on
//! every request, and errors on one line.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

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
    pub(crate) async fn rpc<T>(
        &self,
        what: &str,
        request: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        let bound = self.cfg.command_timeout + self.cfg.dial_timeout;
        match tokio::time::timeout(bound, request).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Error::usage(format!(
                "etcd: {what} failed at {}: {}",
                self.cfg.endpoints.join(","),
                describe(&e)
            ))),
            Err(_) => {
                let why = diagnose(&self.cfg.endpoints, self.cfg.dial_timeout).await;
                Err(Error::usage(format!(
                    "etcd: {what}: no answer from {} within {}{why}",
                    self.cfg.endpoints.join(","),
                    show(bound)
                )))
            }
        }
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
/// connection refused)`, or a hint when they all accept connections.
async fn diagnose(endpoints: &[String], within: Duration) -> String {
    let mut notes = Vec::new();
    for e in endpoints {
        let addr = authority(e);
        let probe = tokio::time::timeout(within, tokio::net::TcpStream::connect(addr)).await;
        match probe {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => notes.push(format!("{addr}: {}", lower_first(&err.to_string()))),
            Err(_) => notes.push(format!("{addr}: no TCP connection within {}", show(within))),
        }
    }
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
