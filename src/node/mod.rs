//! The node: the one entry point of every protocol. HTTP and RESP build a [`Command`] and hand it to
//! [`Node::dispatch`] (or [`Node::submit_patiently`]), and read through [`Node::read`]; nothing above this
//! module touches a shard, a store or the cache.
//!
//! - Placement: key -> shard ([`crate::placement`]), and the key rule every protocol applies ([`Node::check_key`]).
//! - Writes: through one seam per shard, [`writes::ShardWrites`]: where this shard's writes go (the local shard
//!   worker on a single node).
//! - Reads: one path and one read-your-writes rule ([`reads`]): the cache, or on a miss the shard's file or its
//!   queue.
//! - Documents ([`docs`]): id allocation; listings and counts merged across shards.

pub mod docs;
pub mod miss_reads;
pub mod reads;
pub mod writes;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::command::{Command, Reply, Space};
use crate::error::{Error, Result};
use crate::node::docs::DocIds;
use crate::node::miss_reads::MissReads;
use crate::node::reads::{Consistency, Linearize};
use crate::node::writes::{Answer, ShardWrites};
use crate::placement::{shard_for, ShardId};
use crate::shard::cache::Cache;
use crate::shard::{Readiness, ShardHandle};

/// `cmd` as the [`Command::Idempotent`] write of `request`, made now.
pub fn idempotent(request: u128, cmd: Command) -> Command {
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
    Command::Idempotent { request, at_ms, command: Box::new(cmd) }
}

/// Holds every shard of this node; shared by every HTTP worker and RESP connection behind an `Arc`.
pub struct Node {
    /// The local shard workers, in id order: their stores and queues serve reads.
    shards: Vec<ShardHandle>,
    /// Where each shard's writes go, in id order.
    writes: Vec<Arc<dyn ShardWrites>>,
    cache: Cache,
    readiness: Arc<Readiness>,
    docs: DocIds,
    max_key_bytes: usize,
    /// `shale_cache_requests_total{result="hit"}` and `{result="miss"}`, registered once: looking a labelled
    /// metric up by name costs a registry lookup, which every read would otherwise pay.
    cache_hits: metrics::Counter,
    cache_misses: metrics::Counter,
    /// `shale_cache_miss_reads_total{path="shard"}`: misses read by their shard.
    shard_reads: metrics::Counter,
    /// Where a miss reads the file: on the calling thread while that stays off the disk.
    miss_reads: MissReads,
    /// What makes reads linearizable on a cluster replica; `None` on a single node.
    linearize: Option<Arc<dyn Linearize>>,
}

impl Node {
    /// A node over running local shards, whose writes go to their workers. Build it after the metrics recorder is
    /// installed (`metrics::init`), or its counters record nowhere.
    pub fn new(
        shards: Vec<ShardHandle>,
        cache: Cache,
        readiness: Arc<Readiness>,
        max_key_bytes: usize,
    ) -> Result<Node> {
        let docs = DocIds::after_stored(&shards)?;
        let writes = shards.iter().map(|s| Arc::new(s.clone()) as Arc<dyn ShardWrites>).collect();
        Ok(Node {
            shards,
            writes,
            cache,
            readiness,
            docs,
            max_key_bytes,
            cache_hits: metrics::counter!("shale_cache_requests_total", "result" => "hit"),
            cache_misses: metrics::counter!("shale_cache_requests_total", "result" => "miss"),
            shard_reads: metrics::counter!("shale_cache_miss_reads_total", "path" => "shard"),
            miss_reads: MissReads::default(),
            linearize: None,
        })
    }

    /// This node as a cluster member: each shard's writes go to `writes` (in shard order), and linearizable
    /// reads wait for `linearize`.
    pub fn clustered(mut self, writes: Vec<Arc<dyn ShardWrites>>, linearize: Arc<dyn Linearize>) -> Node {
        assert_eq!(writes.len(), self.shards.len(), "one write path per shard");
        self.writes = writes;
        self.linearize = Some(linearize);
        self
    }

    /// Whether this node is a cluster member.
    pub fn is_clustered(&self) -> bool {
        self.linearize.is_some()
    }

    /// Number of shards.
    pub fn shard_count(&self) -> u32 {
        self.shards.len() as u32
    }

    /// The shard that owns `key` (pure: see `placement`).
    pub fn shard_for(&self, key: &[u8]) -> ShardId {
        shard_for(key, self.shard_count())
    }

    /// The local shard handles, in id order (for operations that meet every worker: backups).
    pub fn shards(&self) -> &[ShardHandle] {
        &self.shards
    }

    /// Start-up and shutdown state, for `/readyz`.
    pub fn readiness(&self) -> &Readiness {
        &self.readiness
    }

    /// The key rule of every protocol: 1 to `MAX_KEY_BYTES` bytes. `what` names the key in the error (`key`,
    /// `counter name`).
    pub fn check_key(&self, key: &[u8], what: &str) -> Result<()> {
        if key.is_empty() {
            return Err(Error::BadRequest(format!("the {what} is empty")));
        }
        if key == docs::DOC_ID_SEQUENCE {
            return Err(Error::BadRequest(format!("the {what} is reserved for document ids")));
        }
        if key.len() > self.max_key_bytes {
            return Err(Error::KeyTooLong(format!(
                "the {what} is {} bytes; the limit is {}",
                key.len(),
                self.max_key_bytes
            )));
        }
        Ok(())
    }

    /// Sends a write to its shard and waits until it is durable (or failed). Never blocks the caller's thread: a
    /// full shard queue is an immediate `Unavailable`.
    ///
    /// The command is queued when this is called, not when the future is first polled (callers await at once):
    /// so the future holds only the answer's receiver, not the command, which keeps every write handler's future
    /// (allocated per request by actix) small; see the size test in `api::http`.
    pub fn dispatch(&self, cmd: Command) -> impl Future<Output = Result<Reply>> + use<> {
        self.dispatch_to(self.shard_for(cmd.key()), cmd)
    }

    /// Sends a write as [`Node::dispatch`] does and answers its outcome. With a `request` id (from a client's
    /// idempotency key), the write is applied at most once per id within
    /// [`IDEMPOTENCY_WINDOW_MS`](crate::command::IDEMPOTENCY_WINDOW_MS): a repeated id is answered the first
    /// write's outcome, success or failure, and changes nothing (see [`Command::Idempotent`]).
    pub fn dispatch_once(&self, cmd: Command, request: Option<u128>) -> impl Future<Output = Result<Reply>> + use<> {
        let cmd = match request {
            Some(request) => idempotent(request, cmd),
            None => cmd,
        };
        let answer = self.dispatch(cmd);
        async move { answer.await?.into_outcome() }
    }

    /// Sends a command to shard `shard` (a [`Command::Clear`], which has no key) and waits for its outcome. Queued
    /// at the call, as [`Node::dispatch`].
    pub fn dispatch_to(&self, shard: ShardId, cmd: Command) -> impl Future<Output = Result<Reply>> + use<> {
        let submitted = match self.writes.get(shard.0 as usize) {
            Some(to) => writes::submit_now(to.as_ref(), cmd),
            None => Err(Error::Internal(format!("no shard {shard}"))),
        };
        async move { writes::outcome(submitted?).await }
    }

    /// Queues `cmd` on shard `shard`, waiting up to `patience` for room (see [`writes::submit_patiently`]).
    pub async fn submit_patiently(&self, shard: ShardId, cmd: Command, patience: Duration) -> Result<Answer> {
        match self.writes.get(shard.0 as usize) {
            Some(to) => writes::submit_patiently(to.as_ref(), cmd, patience).await,
            None => Err(Error::Internal(format!("no shard {shard}"))),
        }
    }

    /// Sets the gauges read at scrape time: cache size, and per shard its queue, keys and file size. Blocks
    /// (it commits held batches and reads file sizes): call it off the async workers.
    pub fn record_gauges(&self) {
        let cache = &self.cache;
        metrics::gauge!("shale_cache_bytes").set(cache.weighted_size() as f64);
        metrics::gauge!("shale_cache_entries").set(cache.entry_count() as f64);
        metrics::gauge!("shale_cache_capacity_bytes").set(cache.capacity() as f64);
        for shard in &self.shards {
            let id = shard.id().to_string();
            metrics::gauge!("shale_shard_queue_depth", "shard" => id.clone()).set(shard.queue_len() as f64);
            // Answered writes the shard still holds uncommitted are counted too (render runs on the blocking pool).
            let _ = shard.store().settle();
            for space in Space::ALL {
                if let Ok(n) = shard.store().len(space) {
                    let space = match space {
                        Space::Kv => "kv",
                        Space::Doc => "docs",
                        Space::Counter => "counters",
                        Space::Bucket => "buckets",
                    };
                    metrics::gauge!("shale_shard_keys", "shard" => id.clone(), "space" => space).set(n as f64);
                }
            }
            if let Ok(meta) = std::fs::metadata(shard.store().path()) {
                metrics::gauge!("shale_shard_file_bytes", "shard" => id).set(meta.len() as f64);
            }
        }
    }

    /// The number of records of `space` on every shard: each shard's B-tree length, read in constant time, after
    /// its held batches are committed (read-your-writes; see `engine::store`).
    pub async fn count(&self, space: Space, consistency: Consistency) -> Result<u64> {
        self.linearize_all(consistency).await?;
        let stores: Vec<_> = self.shards.iter().map(|s| s.store().clone()).collect();
        tokio::task::spawn_blocking(move || {
            stores.iter().map(|s| s.settle().and_then(|()| s.len(space))).sum::<Result<u64>>()
        })
        .await
        .map_err(|e| Error::Internal(format!("count task failed: {e}")))?
    }

    /// Up to `limit` keys of `space` starting with `prefix`, strictly after `after`, in ascending byte order
    /// across all shards, and the `after` of the next page (None on the last page).
    pub async fn list(
        &self,
        space: Space,
        prefix: Bytes,
        after: Option<Bytes>,
        limit: usize,
        consistency: Consistency,
    ) -> Result<(Vec<Bytes>, Option<Bytes>)> {
        self.linearize_all(consistency).await?;
        let stores: Vec<_> = self.shards.iter().map(|s| s.store().clone()).collect();
        let per_shard = tokio::task::spawn_blocking(move || {
            // Settled first, so every answered write is listed (read-your-writes; see `engine::store`).
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
