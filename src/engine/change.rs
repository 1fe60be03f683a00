//! What one command changed: the record a key now holds, a removal, a cleared space. The same value is the
//! log's redo record (a frame lists a batch's changes) and the cache's update (the shard worker applies it after
//! the batch is durable).

use bytes::Bytes;

use crate::command::{Reply, Space};
use crate::error::Result;
use crate::record::Record;

/// What one command changed (or, for a read inside the transaction, found).
#[derive(Debug, Clone)]
pub enum Change {
    /// Nothing changed.
    None,
    /// The key now holds this record.
    Put(Space, Bytes, Record),
    /// The key was removed.
    Remove(Space, Bytes),
    /// Every record of the space was removed from this shard.
    Clear(Space),
    /// A read inside the transaction found this record; nothing changed. The cache may take it if the key is
    /// absent (a fill from the only writer of the key, after its commit; see `shard::cache`).
    Found(Space, Bytes, Record),
    /// Several changes, in order: a transaction's commands (`MULTI`), or an idempotent write's command and its
    /// request records.
    Many(Vec<Change>),
    /// The outcome of an idempotent write was recorded under its request (`entry`: the stored record; see
    /// [`crate::engine::requests`]). Only the file changed: the cache holds no such records.
    Recorded {
        /// The request id.
        request: u128,
        /// When the write was made (milliseconds since the Unix epoch).
        at_ms: u64,
        /// The record as stored.
        entry: Bytes,
    },
    /// The record of `request`, made at `at_ms`, was removed: it expired.
    Forgotten {
        /// The request id.
        request: u128,
        /// When the recorded write was made.
        at_ms: u64,
    },
}

impl Change {
    /// Whether the command changed the file (so the transaction must commit and the log must hold it).
    pub fn changes(&self) -> bool {
        match self {
            Change::None | Change::Found(..) => false,
            Change::Put(..)
            | Change::Remove(..)
            | Change::Clear(_)
            | Change::Recorded { .. }
            | Change::Forgotten { .. } => true,
            Change::Many(all) => all.iter().any(Change::changes),
        }
    }
}

/// The outcome of one command inside a batch: its reply (or its own failure) and its change.
pub type Outcome = Result<(Reply, Change)>;
