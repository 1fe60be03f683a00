//! The sending side of a shard worker: cloneable, held by the node; every message to a worker goes through it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Sender, TrySendError};
use tokio::sync::oneshot;

use crate::command::{Command, Reply, Space};
use crate::engine::store::{Replicated, Store};
use crate::error::{Error, Result};
use crate::placement::ShardId;
use crate::shard::cache::FillRequest;
use crate::shard::snapshot::SnapshotRequest;
use crate::shard::ShardMsg;

/// The sending side of a shard: cloneable, used by the node.
#[derive(Clone)]
pub struct ShardHandle {
    id: ShardId,
    tx: Sender<ShardMsg>,
    store: Arc<Store>,
}

/// Why a shard did not take a command.
pub enum Refusal {
    /// Its queue is full: the command, to try again (boxed: a refusal is rare, and keeps the result small).
    Full(Box<Command>),
    /// Its worker stopped.
    Stopped,
}

impl ShardHandle {
    /// The handle of the worker that reads `tx`.
    pub(super) fn new(id: ShardId, tx: Sender<ShardMsg>, store: Arc<Store>) -> ShardHandle {
        ShardHandle { id, tx, store }
    }

    /// This shard's id.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// This shard's store, for reads (never for writes: those go through the worker).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Requests queued and not yet taken by the worker.
    pub fn queue_len(&self) -> usize {
        self.tx.len()
    }

    /// Queues a command without blocking: the receiver of its outcome, or why the shard did not take it.
    pub fn try_submit(&self, cmd: Command) -> std::result::Result<oneshot::Receiver<Result<Reply>>, Refusal> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(ShardMsg::Write { cmd, reply }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(ShardMsg::Write { cmd, .. })) => Err(Refusal::Full(Box::new(cmd))),
            Err(TrySendError::Full(_)) => unreachable!("a write was sent"),
            Err(TrySendError::Disconnected(_)) => Err(Refusal::Stopped),
        }
    }

    /// Cluster mode: queues committed entries of the shard's Raft log for the worker to apply, in order after
    /// everything queued before; the receiver gets each entry's outcome once they are applied. Waits for room in
    /// the queue as long as the worker runs: committed entries are never dropped.
    pub async fn apply(
        &self,
        entries: Vec<Replicated>,
    ) -> Result<oneshot::Receiver<Result<Vec<Option<Result<Reply>>>>>> {
        let (reply, rx) = oneshot::channel();
        self.send_patiently(ShardMsg::Apply { entries, reply }).await?;
        Ok(rx)
    }

    /// Cluster mode: has the worker replace the shard file with the Raft snapshot at `from`.
    pub async fn install(&self, from: PathBuf) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send_patiently(ShardMsg::Install { from, reply }).await?;
        rx.await.map_err(|_| self.stopped())?
    }

    async fn send_patiently(&self, mut msg: ShardMsg) -> Result<()> {
        let mut pause = Duration::from_micros(50);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) => {
                    msg = back;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
                Err(TrySendError::Disconnected(_)) => return Err(self.stopped()),
            }
        }
    }

    fn stopped(&self) -> Error {
        Error::Unavailable(format!("shard {} is not running", self.id))
    }

    /// Asks the worker to take part in a backup; waits up to a second for room in the queue.
    pub fn request_snapshot(&self, req: SnapshotRequest) -> Result<()> {
        self.tx
            .send_timeout(ShardMsg::Snapshot(req), Duration::from_secs(1))
            .map_err(|_| Error::Unavailable(format!("shard {} is too busy to take a backup; retry", self.id)))
    }

    /// Asks the worker to fill `key` into the cache; dropped silently when the queue is full.
    pub fn request_fill(&self, space: Space, key: bytes::Bytes) {
        let _ = self.tx.try_send(ShardMsg::Fill(FillRequest { space, key }));
    }
}
