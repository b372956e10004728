//! Every lock under the prefix, for status, watch and cancel.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp};
use futures_util::future::join_all;

use super::client::Etcd;
use super::lock::Entry;
use crate::error::Result;

/// One lock's queue: `entries[0]` holds it, the others wait in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    /// NAME.
    pub name: String,
    /// By create revision.
    pub entries: Vec<Entry>,
}

impl Queue {
    /// The holder.
    pub fn holder(&self) -> Option<&Entry> {
        self.entries.first()
    }

    /// The waiters, in the order they will hold the lock.
    pub fn waiters(&self) -> &[Entry] {
        self.entries.get(1..).unwrap_or(&[])
    }
}

impl Etcd {
    /// Every lock under the prefix (by name), each queue in create-revision
    /// order, with values, leases and their remaining TTL.
    pub async fn list(&self) -> Result<Vec<Queue>> {
        self.queues(&self.cfg.range(), None).await
    }

    /// The queue of lock `name` (empty if no key waits or holds).
    pub async fn queue(&self, name: &str) -> Result<Queue> {
        let range = format!("{}/", self.cfg.lock_key(name));
        let mut queues = self.queues(&range, Some(name)).await?;
        Ok(queues.pop().unwrap_or(Queue {
            name: name.to_string(),
            entries: Vec::new(),
        }))
    }

    async fn queues(&self, range: &str, only: Option<&str>) -> Result<Vec<Queue>> {
        let opts = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend);
        let resp = self.get("read of the locks", range, Some(opts)).await?;
        let all = self.cfg.range();
        let mut by_name: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for kv in resp.kvs() {
            let Some(e) = Entry::of(&all, kv) else {
                continue;
            };
            if only.is_some_and(|n| n != e.name) {
                continue;
            }
            by_name.entry(e.name.clone()).or_default().push(e);
        }
        let mut leases: Vec<i64> = by_name.values().flatten().map(|e| e.lease).collect();
        leases.sort_unstable();
        leases.dedup();
        let ttls = join_all(leases.iter().map(|&id| async move {
            let r = self.time_to_live(id).await;
            (id, r.ok().map(|r| r.ttl()))
        }))
        .await;
        let ttl_of = |id: i64| {
            ttls.iter()
                .find(|(l, _)| *l == id)
                .and_then(|(_, t)| *t)
                .and_then(|t| u64::try_from(t).ok())
                .map(Duration::from_secs)
        };
        Ok(by_name
            .into_iter()
            .map(|(name, mut entries)| {
                for e in &mut entries {
                    e.ttl = ttl_of(e.lease);
                }
                Queue { name, entries }
            })
            .collect())
    }

    /// Cancel the holder of lock `name` by deleting its key (guarded by its
    /// create revision): its supervisor sees the deletion and ends the
    /// attempt; the next waiter gets the lock. `None`: not held.
    pub async fn cancel(&self, name: &str) -> Result<Option<Entry>> {
        loop {
            let queue = self.queue(name).await?;
            let Some(holder) = queue.entries.into_iter().next() else {
                return Ok(None);
            };
            if self.delete_entry(&holder).await? {
                return Ok(Some(holder));
            }
            // It went away in between: look again.
        }
    }

    /// Delete `entry`'s key if it is still the same key (create revision).
    /// `false`: it was already gone.
    pub async fn delete_entry(&self, entry: &Entry) -> Result<bool> {
        let txn = Txn::new()
            .when([Compare::create_revision(
                entry.key.as_str(),
                CompareOp::Equal,
                entry.create_revision,
            )])
            .and_then([TxnOp::delete(entry.key.as_str(), None)]);
        Ok(self.txn("delete of a lock key", txn).await?.succeeded())
    }
}
