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
use crate::node::writes::{self, Answer, ShardWrites};
use crate::node::Node;
use crate::placement::ShardId;
use crate::record::{counter_value, Record};

/// How current a read must be. A single node's reads are always current; on a cluster replica, a linearizable
/// read first waits until the replica has applied everything acknowledged before it began
/// ([`Linearize::linearize`]), and a stale one reads the replica as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// Sees every write acknowledged before the read began (the default).
    #[default]
    Linearizable,
    /// The local replica as it is: available without a majority, possibly behind.
    Stale,
}

impl Consistency {
    /// Parses the `consistency` query parameter: `linearizable` or `stale`.
    pub fn parse(value: &str) -> Result<Consistency> {
        match value {
            "linearizable" => Ok(Consistency::Linearizable),
            "stale" => Ok(Consistency::Stale),
            other => Err(Error::BadRequest(format!("consistency must be linearizable or stale, got {other:?}"))),
        }
    }
}

/// What makes a cluster replica's reads linearizable (a single node needs nothing: its reads are current).
pub trait Linearize: Send + Sync {
    /// Resolves once the local replica of `shard` has applied every write acknowledged before the call, or fails
    /// (`NoQuorum`) when the shard's leader cannot confirm that within the request timeout.
    fn linearize(&self, shard: ShardId) -> BoxFuture<'static, Result<()>>;
    /// Whether the local replicas may be read at all (not before the node belongs to a cluster).
    fn local(&self) -> Result<()>;
}

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
    /// Reads `key`, linearizably, for a client with no write in flight on its shard (every HTTP request).
    pub fn read(self: &Arc<Self>, space: Space, key: Bytes) -> Read {
        self.read_with(space, key, Consistency::Linearizable)
    }

    /// Reads `key` as current as `consistency` asks, for a client with no write in flight on its shard.
    pub fn read_with(self: &Arc<Self>, space: Space, key: Bytes, consistency: Consistency) -> Read {
        let Some(linearize) = &self.linearize else { return self.read_local(space, key) };
        if consistency == Consistency::Stale {
            return match linearize.local() {
                Ok(()) => self.read_local(space, key),
                Err(e) => Read::Ready(Err(e)),
            };
        }
        let caught_up = linearize.linearize(self.shard_for(&key));
        let node = self.clone();
        Read::Later(Box::pin(async move {
            caught_up.await?;
            node.read_local(space, key).outcome().await
        }))
    }

    /// Waits until every shard's local replica has applied what was acknowledged before the call (a cluster
    /// node's linearizable listing or count); at once on a single node or for a stale read.
    pub async fn linearize_all(&self, consistency: Consistency) -> Result<()> {
        let Some(linearize) = &self.linearize else { return Ok(()) };
        if consistency == Consistency::Stale {
            return linearize.local();
        }
        let waits = (0..self.shard_count()).map(|s| linearize.linearize(ShardId(s)));
        futures_util::future::try_join_all(waits).await.map(drop)
    }

    /// Reads `key` from this node's replica: the cache, or on a miss the shard's file.
    fn read_local(self: &Arc<Self>, space: Space, key: Bytes) -> Read {
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
        consistency: Consistency,
        in_flight: &InFlight,
        patience: Duration,
    ) -> Read {
        let shard = self.shard_for(&key);
        if !in_flight.busy(shard) {
            return self.read_with(space, key, consistency);
        }
        // Through the shard's write path (on a cluster, its log): after the client's writes, whatever is asked.
        let writes = self.writes[shard.0 as usize].clone();
        match read_through(writes.as_ref(), space, key, patience).await {
            Ok(later) => Read::Later(later),
            Err(e) => Read::Ready(Err(e)),
        }
    }

    /// Reads `key` (HTTP's read: [`Node::read`], awaited).
    pub async fn get(self: &Arc<Self>, space: Space, key: Bytes) -> Result<Option<Record>> {
        self.read(space, key).outcome().await
    }

    /// The value of counter `name` (0 for a counter never written).
    pub async fn counter(self: &Arc<Self>, name: Bytes, consistency: Consistency) -> Result<i64> {
        match self.read_with(Space::Counter, name, consistency).outcome().await? {
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
            return read_through(handle, space, key, READ_PATIENCE).await?.await;
        }
        let store = handle.store().clone();
        let k = key.clone();
        let rec = self.miss_reads.read(move || store.get(space, &k)).await?;
        if rec.is_some() {
            handle.request_fill(space, key);
        }
        Ok(rec)
    }
}

/// Queues a read where `to` takes writes, answered inside the shard's write transaction after everything queued
/// before it.
async fn read_through(
    to: &dyn ShardWrites,
    space: Space,
    key: Bytes,
    patience: Duration,
) -> Result<BoxFuture<'static, Result<Option<Record>>>> {
    let answer = writes::submit_patiently(to, Command::Read { space, key }, patience).await?;
    Ok(Box::pin(async move {
        match writes::outcome(answer).await? {
            Reply::Value(rec) => Ok(rec),
            other => Err(Error::Internal(format!("a read was answered with {other:?}"))),
        }
    }))
}
