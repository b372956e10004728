//! `locksup status --backend etcd` and `locksup cancel --backend etcd
//! NAME`: the locks of an etcd cluster, across hosts
//! ([`crate::lock::etcd`]).

use std::io::{self, Write};

use serde_json::{Value, json};

use crate::cli::{CancelArgs, EtcdTargetArgs, StatusArgs};
use crate::config::Config;
use crate::duration::format_duration;
use crate::error::{Error, Result};
use crate::exit;
use crate::lock::etcd::{self, Entry, Etcd, Queue};

/// Cancel exits 2 when the lock is not held (as for a lock file).
const NOT_HELD: i32 = 2;

/// The cluster: `[etcd]`, then `ETCDCTL_*`, then the options.
fn connect_config(a: &EtcdTargetArgs, config: &Config) -> Result<etcd::Config> {
    let mut cfg = config.etcd.to_etcd_config();
    cfg.apply_process_env()?;
    if let Some(e) = &a.etcd_endpoints {
        cfg.endpoints = etcd::parse_endpoints(e);
    }
    if let Some(p) = &a.etcd_prefix {
        cfg.prefix.clone_from(p);
    }
    Ok(cfg)
}

fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io(format!("cannot start the runtime: {e}")))?
        .block_on(f)
}

/// A string field of an entry's metadata.
fn field(meta: Option<&Value>, key: &str) -> Option<Value> {
    meta.and_then(|m| m.get(key))
        .filter(|v| !v.is_null())
        .cloned()
}

fn entry_json(e: &Entry) -> Value {
    let meta = e.metadata();
    let m = meta.as_ref();
    json!({
        "key": e.key,
        "lease": format!("{:x}", e.lease),
        "create_revision": e.create_revision,
        "ttl_s": e.ttl.map(|t| t.as_secs()),
        "host": field(m, "host"),
        "pid": field(m, "pid"),
        "attempt_id": field(m, "attempt_id"),
        "deadline": field(m, "deadline"),
        "fence": e.create_revision,
        "locksup": meta.is_some(),
    })
}

fn describe(e: &Entry) -> String {
    let meta = e.metadata();
    let m = meta.as_ref();
    let text = |k: &str| {
        field(m, k).map(|v| match v {
            Value::String(s) => s,
            other => other.to_string(),
        })
    };
    let who = match (text("attempt_id"), text("host"), text("pid")) {
        (Some(id), Some(host), Some(pid)) => format!("attempt {id} (host {host}, pid {pid})"),
        (Some(id), _, _) => format!("attempt {id}"),
        _ => format!("{} (not locksup)", e.key),
    };
    let ttl = e.ttl.map_or_else(
        || "lease gone".to_owned(),
        |t| format!("lease {}", format_duration(t)),
    );
    let deadline = text("deadline").map_or(String::new(), |d| format!(", deadline {d}"));
    format!("{who}, {ttl}{deadline}")
}

fn render(queues: &[Queue], prefix: &str) -> String {
    if queues.is_empty() {
        return format!("no etcd locks under {prefix}/\n");
    }
    let mut out = String::new();
    for q in queues {
        match q.holder() {
            Some(h) => out.push_str(&format!(
                "{prefix}/{}: held by {}, fence {}\n",
                q.name,
                describe(h),
                h.create_revision
            )),
            None => out.push_str(&format!("{prefix}/{}: free\n", q.name)),
        }
        for (i, w) in q.waiters().iter().enumerate() {
            out.push_str(&format!("  waiting {}: {}\n", i + 1, describe(w)));
        }
    }
    out
}

/// `status --backend etcd [NAME...]`: holders and waiters of every lock
/// under the prefix (or of the NAMEs), in queue order.
pub(crate) fn status(args: &StatusArgs, config: &Config) -> Result<i32> {
    if args.daemon || !args.state.is_empty() || args.session_key.is_some() {
        return Err(Error::usage(
            "--daemon, --state and --session-key are not used with --backend etcd",
        ));
    }
    let cfg = connect_config(&args.etcd, config)?;
    let prefix = cfg.prefix.trim_end_matches('/').to_owned();
    let names: Vec<String> = args
        .paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let queues = block_on(async {
        let etcd = Etcd::connect(&cfg).await?;
        if names.is_empty() {
            etcd.list().await
        } else {
            let mut out = Vec::new();
            for n in &names {
                etcd::lock_name(Some(n), std::path::Path::new("/"))?;
                out.push(etcd.queue(n).await?);
            }
            Ok(out)
        }
    })?;
    let text = if args.json {
        let locks: Vec<Value> = queues
            .iter()
            .map(|q| {
                json!({
                    "name": q.name,
                    "lock": format!("{prefix}/{}", q.name),
                    "holder": q.holder().map(entry_json),
                    "waiters": q.waiters().iter().map(entry_json).collect::<Vec<_>>(),
                })
            })
            .collect();
        json!({ "backend": "etcd", "prefix": prefix, "locks": locks }).to_string() + "\n"
    } else {
        render(&queues, &prefix)
    };
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(exit::SUCCESS),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(exit::SUCCESS),
        Err(e) => Err(Error::io(format!("cannot write the status: {e}"))),
    }
}

/// `cancel --backend etcd NAME`: delete the holder's key (guarded by its
/// create revision); its supervisor, on whatever host, ends the attempt
/// (reason `lease-lost`) and the next waiter gets the lock.
pub(crate) fn cancel(args: &CancelArgs, config: &Config) -> Result<i32> {
    if args.daemon
        || args.force
        || args.only_orphan
        || args.wait.is_some()
        || args.grace.is_some()
        || args.signal.is_some()
        || !args.root.is_empty()
    {
        return Err(Error::usage(
            "with --backend etcd, cancel takes only the lock's NAME (and the etcd options)",
        ));
    }
    let name = args.target.to_string_lossy().into_owned();
    etcd::lock_name(Some(&name), std::path::Path::new("/"))?;
    let cfg = connect_config(&args.etcd, config)?;
    let key = cfg.lock_key(&name);
    let cancelled = block_on(async {
        let etcd = Etcd::connect(&cfg).await?;
        etcd.cancel(&name).await
    })?;
    match cancelled {
        Some(e) => {
            println!("cancelled {key}: deleted {}", describe(&e));
            Ok(exit::SUCCESS)
        }
        None => {
            eprintln!("locksup: {key} is not held");
            Ok(NOT_HELD)
        }
    }
}
