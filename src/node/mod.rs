//! The node: key -> shard, write dispatch, cached reads, and listings merged across shards.
//!
//! It is the one entry point of every protocol (HTTP today, RESP and cluster calls later): they build a
//! [`Command`] and call [`Node::dispatch`], or read with [`Node::get`] / [`Node::list`].

pub mod miss_reads;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::command::{Command, EtagMatch, Precondition, Reply, Space};
use crate::error::{Error, Result};
use crate::node::miss_reads::MissReads;
use crate::placement::{shard_for, ShardId};
use crate::record::Record;
use crate::shard::cache::Cache;
use crate::shard::{Readiness, ShardHandle};

/// How long a cache miss that must be read by its shard waits for room in the shard's queue before 503.
const READ_PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// Routes commands to shards. Shared by every HTTP worker behind an `Arc`.
pub struct Node {
    shards: Vec<ShardHandle>,
    cache: Cache,
    readiness: Arc<Readiness>,
    /// The next document id to hand out: one more than the highest id ever stored (see `docs/design.md`).
    next_doc_id: AtomicU64,
    /// `shale_cache_requests_total{result="hit"}` and `{result="miss"}`, registered once: looking a labelled
    /// metric up by name costs a registry lookup, which every read would otherwise pay.
    cache_hits: metrics::Counter,
    cache_misses: metrics::Counter,
    /// `shale_cache_miss_reads_total{path="shard"}`: misses read by their shard while it held answered batches.
    shard_reads: metrics::Counter,
    /// Where a miss reads the file: on the calling thread while that stays off the disk.
    miss_reads: MissReads,
}

impl Node {
    /// A node over running shards. Build it after the metrics recorder is installed (`metrics::init`), or its
    /// counters record nowhere.
    pub fn new(shards: Vec<ShardHandle>, cache: Cache, readiness: Arc<Readiness>, next_doc_id: u64) -> Node {
        Node {
            shards,
            cache,
            readiness,
            next_doc_id: AtomicU64::new(next_doc_id),
            cache_hits: metrics::counter!("shale_cache_requests_total", "result" => "hit"),
            cache_misses: metrics::counter!("shale_cache_requests_total", "result" => "miss"),
            shard_reads: metrics::counter!("shale_cache_miss_reads_total", "path" => "shard"),
            miss_reads: MissReads::default(),
        }
    }

    /// Number of shards.
    pub fn shard_count(&self) -> u32 {
        self.shards.len() as u32
    }

    /// The shard that owns `key` (pure: see `placement`).
    pub fn shard_for(&self, key: &[u8]) -> ShardId {
        shard_for(key, self.shard_count())
    }

    fn shard(&self, key: &[u8]) -> &ShardHandle {
        &self.shards[self.shard_for(key).0 as usize]
    }

    /// The shard handles, in id order.
    pub fn shards(&self) -> &[ShardHandle] {
        &self.shards
    }

    /// The shared cache.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    /// Start-up and shutdown state, for `/readyz`.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// Sends a write to its shard and waits until it is committed (or failed). Never blocks the caller's
    /// thread: a full shard queue is an immediate `Unavailable`.
    ///
    /// The command is queued when this is called, not when the future is first polled (callers await at once):
    /// so the future holds only the answer's receiver, not the command, which keeps every write handler's future
    /// (allocated per request by actix) small; see the size test in `http`.
    pub fn dispatch(&self, cmd: Command) -> impl Future<Output = Result<Reply>> + use<> {
        self.dispatch_to(self.shard_for(cmd.key()), cmd)
    }

    /// Sends a command to shard `shard` (a [`Command::Clear`], which has no key) and waits for its outcome. Queued
    /// at the call, as [`Node::dispatch`].
    pub fn dispatch_to(&self, shard: ShardId, cmd: Command) -> impl Future<Output = Result<Reply>> + use<> {
        let submitted = match self.shards.get(shard.0 as usize) {
            Some(handle) => handle.submit(cmd),
            None => Err(Error::Internal(format!("no shard {shard}"))),
        };
        async move { submitted?.await.map_err(|_| Error::Internal("the shard stopped before answering".into()))? }
    }

    /// The number of records of `space` on every shard: each shard's B-tree length, read in constant time, after
    /// its held batches are committed (read-your-writes; see `store`).
    pub async fn count(&self, space: Space) -> Result<u64> {
        let stores: Vec<_> = self.shards.iter().map(|s| s.store().clone()).collect();
        tokio::task::spawn_blocking(move || {
            stores.iter().map(|s| s.settle().and_then(|()| s.len(space))).sum::<Result<u64>>()
        })
        .await
        .map_err(|e| Error::Internal(format!("count task failed: {e}")))?
    }

    /// Reads `key`: from the cache, or on a miss from the shard's file (on this thread or a blocking one: see
    /// `miss_reads`), after which the shard is asked to fill the cache (readers never insert; see `cache`).
    /// While the shard holds answered batches that redb has not committed yet, a miss is read by the shard
    /// itself, inside its transaction, in queue order (see `store`).
    pub async fn get(&self, space: Space, key: Bytes) -> Result<Option<Record>> {
        if let Some(rec) = self.cache.get(space, &key) {
            self.cache_hits.increment(1);
            return Ok(Some(rec));
        }
        self.cache_misses.increment(1);
        // Boxed: the miss path's state (a read on the blocking pool, a patient submit) made every `/kv` request's
        // future, and the box actix allocates per request around it, larger than glibc's per-thread cache serves
        // (1032 bytes): each request then took malloc's slow path, which first merges every small free chunk
        // (`malloc_consolidate`, 1.4 % of a durable PUT's CPU). A miss costs one more allocation.
        Box::pin(self.get_miss(space, key)).await
    }

    /// [`Node::get`] after a cache miss.
    async fn get_miss(&self, space: Space, key: Bytes) -> Result<Option<Record>> {
        let shard = self.shard(&key).clone();
        if shard.store().pending() {
            self.shard_reads.increment(1);
            let rx = shard.submit_patiently(Command::Read { space, key }, READ_PATIENCE).await?;
            return match rx.await.map_err(|_| Error::Internal("the shard stopped before answering".into()))?? {
                Reply::Value(rec) => Ok(rec),
                other => Err(Error::Internal(format!("a read was answered with {other:?}"))),
            };
        }
        let store = shard.store().clone();
        let k = key.clone();
        let rec = self.miss_reads.read(move || store.get(space, &k)).await?;
        if rec.is_some() {
            shard.request_fill(space, key);
        }
        Ok(rec)
    }

    /// Up to `limit` keys of `space` starting with `prefix`, strictly after `after`, in ascending byte order
    /// across all shards, and the `after` of the next page (None on the last page).
    pub async fn list(
        &self,
        space: Space,
        prefix: Bytes,
        after: Option<Bytes>,
        limit: usize,
    ) -> Result<(Vec<Bytes>, Option<Bytes>)> {
        let stores: Vec<_> = self.shards.iter().map(|s| s.store().clone()).collect();
        let per_shard = tokio::task::spawn_blocking(move || {
            // Settled first, so every answered write is listed (read-your-writes; see `store`).
            stores
                .iter()
                .map(|s| s.settle().and_then(|()| s.list(space, &prefix, after.as_deref(), limit + 1)))
                .collect::<Result<Vec<_>>>()
        })
        .await
        .map_err(|e| Error::Internal(format!("list task failed: {e}")))??;
        let mut keys = merge_sorted(per_shard, limit + 1);
        let next = if keys.len() > limit {
            keys.truncate(limit);
            keys.last().cloned()
        } else {
            None
        };
        Ok((keys, next))
    }

    /// Reserves the next document id (unique for the life of the process; see `docs/design.md`), or `None` once
    /// the id space is used up (an id of `u64::MAX - 1` or more was stored): the counter never wraps to 0.
    pub fn allocate_doc_id(&self) -> Option<u64> {
        self.next_doc_id.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_add(1)).ok()
    }

    /// Stores `data` (compact JSON) as a new document under a fresh id and returns the id.
    ///
    /// Each id is written create-only, so an id someone wrote explicitly meanwhile is skipped, never overwritten.
    pub async fn create_doc(&self, data: Bytes) -> Result<u64> {
        loop {
            let Some(id) = self.allocate_doc_id() else {
                return Err(Error::InsufficientStorage("no document id is left to allocate".into()));
            };
            let cmd = Command::Put {
                space: Space::Doc,
                key: Bytes::copy_from_slice(&id.to_be_bytes()),
                value: data.clone(),
                content_type: Bytes::from_static(b"application/json"),
                precondition: Precondition { if_none_match: Some(EtagMatch::Any), ..Precondition::NONE },
                skip_if_unchanged: false,
            };
            match self.dispatch(cmd).await {
                Ok(_) => return Ok(id),
                Err(Error::PreconditionFailed(_)) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Records that document `id` exists, so allocation never hands it out.
    pub fn observe_doc_id(&self, id: u64) {
        self.next_doc_id.fetch_max(id.saturating_add(1), Ordering::AcqRel);
    }
}

/// K-way merge of ascending, pairwise-disjoint lists, keeping the first `limit` keys.
fn merge_sorted(lists: Vec<Vec<Bytes>>, limit: usize) -> Vec<Bytes> {
    let mut iters: Vec<_> = lists.into_iter().map(|l| l.into_iter()).collect();
    let mut heap = BinaryHeap::new();
    for (i, it) in iters.iter_mut().enumerate() {
        if let Some(k) = it.next() {
            heap.push(Reverse((k, i)));
        }
    }
    let mut out = Vec::new();
    while out.len() < limit {
        let Some(Reverse((k, i))) = heap.pop() else { break };
        if let Some(n) = iters[i].next() {
            heap.push(Reverse((n, i)));
        }
        out.push(k);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_global_order_and_limit() {
        let l = |v: &[&'static str]| v.iter().map(|s| Bytes::from_static(s.as_bytes())).collect::<Vec<_>>();
        let merged = merge_sorted(vec![l(&["a", "d", "e"]), l(&[]), l(&["b", "c", "f"])], 5);
        assert_eq!(merged, l(&["a", "b", "c", "d", "e"]));
    }
}
