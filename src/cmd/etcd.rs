//! `locksup status --backend etcd`, `locksup watch --backend etcd` and
//! `locksup cancel --backend etcd NAME`: the locks of an etcd cluster,
//! across hosts ([`crate::lock::etcd`]).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::SystemTime;

use serde_json::{Value, json};

use crate::cli::{CancelArgs, EtcdTargetArgs, StatusArgs, WatchArgs};
use crate::config::Config;
use crate::duration::format_duration;
use crate::error::{Error, Result};
use crate::events::rfc3339;
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

/// The NAMEs given on the command line, as text.
fn lock_names(paths: &[std::path::PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

/// One lock's queue in `--json`: its name, key, holder and waiters.
fn queue_json(prefix: &str, q: &Queue) -> Value {
    json!({
        "name": q.name,
        "lock": format!("{prefix}/{}", q.name),
        "holder": q.holder().map(entry_json),
        "waiters": q.waiters().iter().map(entry_json).collect::<Vec<_>>(),
    })
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
    let names = lock_names(&args.paths);
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
        let locks: Vec<Value> = queues.iter().map(|q| queue_json(&prefix, q)).collect();
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

/// Lock name -> its queue, as last seen.
type Seen = BTreeMap<String, Queue>;

/// The change events between two listings: `released` (the holder's key
/// went), `acquired` (a new holder), `waiting` (a new key in a queue),
/// `left` (a waiter's key went without holding).
fn changes(before: &Seen, after: &Seen) -> Vec<(&'static str, String, Entry)> {
    let mut out = Vec::new();
    let empty = Queue {
        name: String::new(),
        entries: Vec::new(),
    };
    let names: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for name in names {
        let (b, a) = (
            before.get(name).unwrap_or(&empty),
            after.get(name).unwrap_or(&empty),
        );
        let (bh, ah) = (b.holder(), a.holder());
        let has = |q: &Queue, e: &Entry| q.entries.iter().any(|x| x.key == e.key);
        if bh.map(|e| &e.key) != ah.map(|e| &e.key) {
            if let Some(h) = bh {
                out.push(("released", name.clone(), h.clone()));
            }
            if let Some(h) = ah {
                out.push(("acquired", name.clone(), h.clone()));
            }
        }
        for w in b.waiters() {
            if !has(a, w) {
                out.push(("left", name.clone(), w.clone()));
            }
        }
        for w in a.waiters() {
            if !has(b, w) {
                out.push(("waiting", name.clone(), w.clone()));
            }
        }
    }
    out
}

async fn listing(etcd: &Etcd, names: &[String]) -> Result<Seen> {
    let queues = if names.is_empty() {
        etcd.list().await?
    } else {
        let mut out = Vec::new();
        for n in names {
            out.push(etcd.queue(n).await?);
        }
        out
    };
    Ok(queues
        .into_iter()
        .filter(|q| !q.entries.is_empty())
        .map(|q| (q.name.clone(), q))
        .collect())
}

/// `watch --backend etcd [NAME...]`: through etcd's watch API on the
/// prefix, one line per change (or JSON with `--json`: first `ready` with
/// every lock, then `acquired`, `released`, `waiting`, `left`). Runs until
/// interrupted; exits 125 when the cluster cannot be reached.
pub(crate) fn watch(args: &WatchArgs, config: &Config) -> Result<i32> {
    let cfg = connect_config(&args.etcd, config)?;
    let prefix = cfg.prefix.trim_end_matches('/').to_owned();
    let names = lock_names(&args.paths);
    for n in &names {
        etcd::lock_name(Some(n), std::path::Path::new("/"))?;
    }
    let json = args.json;
    let print = |line: String| -> Result<()> {
        let mut out = io::stdout().lock();
        out.write_all(line.as_bytes())
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush())
            .map_err(|e| Error::io(format!("cannot write: {e}")))
    };
    block_on(async {
        let etcd = Etcd::connect(&cfg).await?;
        let range = format!("{prefix}/");
        let mut stream = etcd
            .watch(
                "watch of the locks",
                range.as_bytes(),
                etcd_client::WatchOptions::new().with_prefix(),
            )
            .await?;
        let mut seen = listing(&etcd, &names).await?;
        if json {
            let locks: Vec<Value> = seen.values().map(|q| queue_json(&prefix, q)).collect();
            print(json!({ "event": "ready", "locks": locks }).to_string())?;
        } else {
            print(
                render(&seen.values().cloned().collect::<Vec<_>>(), &prefix)
                    .trim_end()
                    .to_owned(),
            )?;
        }
        loop {
            match stream.message().await {
                Ok(Some(r)) if r.events().is_empty() && !r.canceled() => continue,
                Ok(Some(r)) if !r.canceled() => {}
                _ => {
                    // The stream ended (a member went away): watch again.
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    stream = etcd
                        .watch(
                            "watch of the locks",
                            range.as_bytes(),
                            etcd_client::WatchOptions::new().with_prefix(),
                        )
                        .await?;
                }
            }
            let now = listing(&etcd, &names).await?;
            for (event, name, e) in changes(&seen, &now) {
                let lock = format!("{prefix}/{name}");
                let line = if json {
                    let mut v = entry_json(&e);
                    if let Value::Object(m) = &mut v {
                        m.insert("event".into(), event.into());
                        m.insert("lock".into(), lock.clone().into());
                        m.insert("name".into(), name.clone().into());
                        m.insert("ts".into(), rfc3339(SystemTime::now()).into());
                    }
                    v.to_string()
                } else {
                    format!(
                        "{} {event} {lock}: {}",
                        rfc3339(SystemTime::now()),
                        describe(&e)
                    )
                };
                print(line)?;
            }
            seen = now;
        }
    })
}
