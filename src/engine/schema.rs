//! The tables of a shard file and the keys of its `meta` table.
//!
//! - `kv`, `docs`, `counters`, `buckets`: key bytes -> encoded [`Record`](crate::record::Record), one table per
//!   [`Space`].
//! - `meta`: [`META_REV`] -> the last revision handed out in this file; [`META_WAL_SEQ`], [`META_WAL_EPOCH`] -> which
//!   log belongs to the file and the last log frame it holds (see [`crate::engine::wal`]).
//! - `requests`: request id -> the recorded outcome of an idempotent write; `request_times`: (`at_ms`, request id)
//!   -> (), the same records in the order they expire (see [`crate::engine::requests`]).

use std::path::{Path, PathBuf};

use redb::{Database, TableDefinition};

use crate::command::Space;
use crate::engine::storage;
use crate::error::Result;
use crate::placement::ShardId;

const KV: TableDefinition<&[u8], &[u8]> = TableDefinition::new("kv");
const DOCS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("docs");
const COUNTERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("counters");
const BUCKETS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("buckets");
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Every keyspace table (for copies: backup, resharding).
pub const TABLES_BYTES: [TableDefinition<&[u8], &[u8]>; 4] = [KV, DOCS, COUNTERS, BUCKETS];
/// The metadata table.
pub const TABLE_META: TableDefinition<&str, u64> = META;
/// The recorded outcomes of idempotent writes, by request id (see [`crate::engine::requests`]).
pub const TABLE_REQUESTS: TableDefinition<u128, &[u8]> = TableDefinition::new("requests");
/// The records of [`TABLE_REQUESTS`] by (`at_ms`, request id): oldest first, for expiry.
pub const TABLE_REQUEST_TIMES: TableDefinition<(u64, u128), ()> = TableDefinition::new("request_times");
/// A cluster shard's Raft state (absent on a single node): [`RAFT_APPLIED`] and [`RAFT_MEMBERSHIP`].
pub const TABLE_RAFT: TableDefinition<&str, &[u8]> = TableDefinition::new("raft");
/// raft key: the id of the last log entry applied to this file.
pub const RAFT_APPLIED: &str = "applied";
/// raft key: the membership as of the last membership entry applied.
pub const RAFT_MEMBERSHIP: &str = "membership";
/// meta key: the last revision handed out in this file.
pub const META_REV: &str = "rev";

pub(crate) fn table(space: Space) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    match space {
        Space::Kv => KV,
        Space::Doc => DOCS,
        Space::Counter => COUNTERS,
        Space::Bucket => BUCKETS,
    }
}

/// meta key: the seq of the last frame whose changes the file holds.
pub const META_WAL_SEQ: &str = "wal_seq";
/// meta key: this file's log epoch.
pub const META_WAL_EPOCH: &str = "wal_epoch";

/// The file name of shard `i` inside the data dir.
pub fn shard_file(data_dir: &Path, shard: ShardId) -> PathBuf {
    data_dir.join(format!("shard-{}.redb", shard.0))
}

/// Creates every table (a write transaction that commits nothing new on an existing file).
pub(crate) fn create_tables(db: &Database, shard: ShardId) -> Result<()> {
    let txn = db.begin_write().map_err(|e| storage(shard, "begin")(e.into()))?;
    {
        for space in Space::ALL {
            txn.open_table(table(space)).map_err(|e| storage(shard, "create table")(e.into()))?;
        }
        txn.open_table(META).map_err(|e| storage(shard, "create table")(e.into()))?;
        txn.open_table(TABLE_REQUESTS).map_err(|e| storage(shard, "create table")(e.into()))?;
        txn.open_table(TABLE_REQUEST_TIMES).map_err(|e| storage(shard, "create table")(e.into()))?;
    }
    txn.commit().map_err(|e| storage(shard, "commit")(e.into()))
}
