//! The read path of every protocol, and its one read-your-writes rule.
//!
//! A read is answered from the cache, which holds only committed records and is changed only by the key's shard
//! worker, in commit order. On a miss it reads the shard's file (on the calling thread or a blocking one: see
//! [`miss_reads`](crate::node::miss_reads)) and asks the shard to fill the key; while the shard holds answered
//! batches that redb has not committed yet, the miss is read by the shard itself, inside its transaction, in
//! queue order (see `engine::store`).
//!
//! Read-your-writes: a client that has writes in flight on the key's shard ([`InFlight`]: a RESP connection's
//! pipeline) reads through that shard's queue, after them. An HTTP request has none: its earlier writes were
//! answered before it was sent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;

use crate::command::{Command, Reply, Space};
use crate::error::{Error, Result};
use crate::node::writes::{self, Answer};
use crate::node::Node;
use crate::placement::ShardId;
use crate::record::{counter_value, Record};

/// How long a cache miss that must be read by its shard waits for room in the shard's queue before 503.
const READ_PATIENCE: Duration = Duration::from_secs(1);

/// A read's outcome: at once (a cache hit, a refusal) or later.
pub enum Read {
    /// Answered now.
    Ready(Result<Option<Record>>),
    /// Answered when this future completes (boxed, so the caller's own future stays small).
    Later(BoxFuture<'static, Result<Option<Record>>>),
}

impl Read {
    /// The outcome, waiting for it when it comes later.
    pub async fn outcome(self) -> Result<Option<Record>> {
        match self {
            Read::Ready(out) => out,
            Read::Later(fut) => fut.await,
        }
    }
}

/// The writes one client has in flight, per shard.
pub struct InFlight {
    /// Writes this client queued on each shard.
    issued: Vec<u64>,
    /// Of those, how many were answered (so: durable). `issued[s] > done[s]` = writes in flight on shard s.
    done: Arc<[AtomicU64]>,
}

impl InFlight {
    /// No writes in flight on any of `shards` shards.
    pub fn new(shards: u32) -> InFlight {
        InFlight { issued: vec![0; shards as usize], done: (0..shards).map(|_| AtomicU64::new(0)).collect() }
    }

    fn busy(&self, shard: ShardId) -> bool {
        self.issued[shard.0 as usize] != self.done[shard.0 as usize].load(Ordering::Acquire)
    }

    /// Counts a write just queued on `shard`; the returned future is its outcome, and counts it answered.
    pub fn track(&mut self, shard: ShardId, answer: Answer) -> BoxFuture<'static, Result<Reply>> {
        let s = shard.0 as usize;
        self.issued[s] += 1;
        let done = self.done.clone();
        Box::pin(async move {
            let out = writes::outcome(answer).await;
            done[s].fetch_add(1, Ordering::AcqRel);
            out
        })
    }
}

impl Node {
    /// Reads `key` for a client with no write in flight on its shard (every HTTP request).
    pub fn read(self: &Arc<Self>, space: Space, key: Bytes) -> Read {
        if let Some(rec) = self.cache.get(space, &key) {
            self.cache_hits.increment(1);
            return Read::Ready(Ok(Some(rec)));
        }
        self.cache_misses.increment(1);
        Read::Later(Box::pin(self.clone().read_miss(space, key)))
    }

    /// Reads `key` for a client whose writes `in_flight` counts: behind them in the shard's queue when some are on
    /// the key's shard (queued before this returns, waiting up to `patience` for room, so a later write of the
    /// client comes after the read).
    pub async fn read_after(
        self: &Arc<Self>,
        space: Space,
        key: Bytes,
        in_flight: &InFlight,
        patience: Duration,
    ) -> Read {
        let shard = self.shard_for(&key);
        if !in_flight.busy(shard) {
            return self.read(space, key);
        }
        match self.read_by_shard(shard, space, key, patience).await {
            Ok(later) => Read::Later(later),
            Err(e) => Read::Ready(Err(e)),
        }
    }

    /// Reads `key` (HTTP's read: [`Node::read`], awaited).
    pub async fn get(self: &Arc<Self>, space: Space, key: Bytes) -> Result<Option<Record>> {
        self.read(space, key).outcome().await
    }

    /// The value of counter `name` (0 for a counter never written).
    pub async fn counter(self: &Arc<Self>, name: Bytes) -> Result<i64> {
        match self.get(Space::Counter, name).await? {
            None => Ok(0),
            Some(rec) => counter_value(&rec).ok_or_else(|| Error::Internal("damaged counter record".into())),
        }
    }

    /// A cache miss: the shard's file, or the shard itself while it holds answered batches.
    async fn read_miss(self: Arc<Self>, space: Space, key: Bytes) -> Result<Option<Record>> {
        let shard = self.shard_for(&key);
        let handle = &self.shards[shard.0 as usize];
        if handle.store().pending() {
            self.shard_reads.increment(1);
            return self.read_by_shard(shard, space, key, READ_PATIENCE).await?.await;
        }
        let store = handle.store().clone();
        let k = key.clone();
        let rec = self.miss_reads.read(move || store.get(space, &k)).await?;
        if rec.is_some() {
            handle.request_fill(space, key);
        }
        Ok(rec)
    }

    /// Queues a read on `shard`, answered inside its write transaction after everything queued before it.
    async fn read_by_shard(
        &self,
        shard: ShardId,
        space: Space,
        key: Bytes,
        patience: Duration,
    ) -> Result<BoxFuture<'static, Result<Option<Record>>>> {
        let answer = self.submit_patiently(shard, Command::Read { space, key }, patience).await?;
        Ok(Box::pin(async move {
            match writes::outcome(answer).await? {
                Reply::Value(rec) => Ok(rec),
                other => Err(Error::Internal(format!("a read was answered with {other:?}"))),
            }
        }))
    }
}
