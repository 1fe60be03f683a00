//! The recorded outcomes of idempotent writes ([`Command::Idempotent`](crate::command::Command::Idempotent)):
//! what a retry of a request is answered instead of being applied again.
//!
//! Two tables of the shard file (definitions in [`crate::engine::schema`]):
//! - `requests`: request id -> [`Entry`] (postcard): when the write was made (`at_ms`), its command's key, and
//!   its outcome, success or failure;
//! - `request_times`: (`at_ms`, request id) -> (): the same records, oldest first.
//!
//! A record answers a later command with the same request id while that command's `at_ms` is at most
//! [`IDEMPOTENCY_WINDOW_MS`] after the record's; after that it has expired, and the request is applied again as a
//! new one. Every write that records an outcome also removes up to [`EXPIRE_PER_WRITE`] expired records, oldest
//! first, so the tables hold about one window of requests without a sweep of their own. Expiry is decided from
//! the commands' `at_ms`, never from the clock of the node applying them, so every replica of a shard's log
//! keeps and drops the same records.
//!
//! All of it happens inside the write's own transaction, and each table change is a [`Change`] (the write-ahead
//! log's redo record, replayed by [`put_entry`] and [`remove_entry`]): a record is exactly as durable as the write
//! whose outcome it holds.

use bytes::Bytes;
use redb::{ReadableTable, WriteTransaction};

use crate::command::{Reply, IDEMPOTENCY_WINDOW_MS};
use crate::engine::apply::Tables;
use crate::engine::change::Change;
use crate::engine::schema::{TABLE_REQUESTS, TABLE_REQUEST_TIMES};
use crate::error::Error;

/// The most expired records one write removes.
pub const EXPIRE_PER_WRITE: usize = 64;

/// One recorded request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// When the write was made (milliseconds since the Unix epoch, from the command).
    pub at_ms: u64,
    /// The key its command was applied to.
    pub key: Bytes,
    /// Its command's outcome.
    pub outcome: Result<Reply, Error>,
}

/// What the records hold for a request, as seen by a command made at some `at_ms`.
#[derive(Debug)]
pub enum Lookup {
    /// A live record: the request was applied; answer this.
    Live(Entry),
    /// A record made at this `at_ms`, expired: the request is new again (and the old record must go).
    Expired(u64),
    /// No record.
    Absent,
}

/// Whether a record made at `recorded_ms` has expired for a command made at `now_ms`. A command made before the
/// record (clocks of different nodes disagree) finds it live.
fn expired(recorded_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(recorded_ms) > IDEMPOTENCY_WINDOW_MS
}

/// The record of `request` for a command made at `now_ms`. `Ok(Err(..))`: the record does not decode (the
/// command fails alone; the record still expires).
pub fn lookup(tables: &mut Tables<'_>, request: u128, now_ms: u64) -> Result<Result<Lookup, Error>, redb::Error> {
    let (requests, _) = tables.requests()?;
    let Some(stored) = requests.get(request)? else { return Ok(Ok(Lookup::Absent)) };
    let entry = match postcard::from_bytes::<Entry>(stored.value()) {
        Ok(entry) => entry,
        Err(e) => return Ok(Err(Error::Internal(format!("damaged record of request {request:032x}: {e}")))),
    };
    Ok(Ok(if expired(entry.at_ms, now_ms) { Lookup::Expired(entry.at_ms) } else { Lookup::Live(entry) }))
}

/// Records `entry` as the outcome of `request`, after removing the request's `expired` record (see [`Lookup`])
/// and up to [`EXPIRE_PER_WRITE`] other expired records; pushes each change onto `changes`.
pub fn remember(
    tables: &mut Tables<'_>,
    request: u128,
    entry: &Entry,
    expired_record: Option<u64>,
    changes: &mut Vec<Change>,
) -> Result<(), redb::Error> {
    let (requests, times) = tables.requests()?;
    if let Some(at_ms) = expired_record {
        requests.remove(request)?;
        times.remove((at_ms, request))?;
        changes.push(Change::Forgotten { request, at_ms });
    }
    let cutoff = entry.at_ms.saturating_sub(IDEMPOTENCY_WINDOW_MS);
    let mut old = Vec::new();
    for item in times.range(..(cutoff, 0))?.take(EXPIRE_PER_WRITE) {
        old.push(item?.0.value());
    }
    for (at_ms, old_request) in old {
        requests.remove(old_request)?;
        times.remove((at_ms, old_request))?;
        changes.push(Change::Forgotten { request: old_request, at_ms });
    }
    let encoded = Bytes::from(postcard::to_allocvec(entry).expect("an entry of bytes and plain enums always encodes"));
    requests.insert(request, &encoded[..])?;
    times.insert((entry.at_ms, request), ())?;
    changes.push(Change::Recorded { request, at_ms: entry.at_ms, entry: encoded });
    Ok(())
}

/// Stores a record as [`remember`] did (the log's replay of a [`Change::Recorded`]).
pub fn put_entry(txn: &WriteTransaction, request: u128, at_ms: u64, entry: &[u8]) -> Result<(), redb::Error> {
    txn.open_table(TABLE_REQUESTS)?.insert(request, entry)?;
    txn.open_table(TABLE_REQUEST_TIMES)?.insert((at_ms, request), ())?;
    Ok(())
}

/// Removes a record as [`remember`] did (the log's replay of a [`Change::Forgotten`]).
pub fn remove_entry(txn: &WriteTransaction, request: u128, at_ms: u64) -> Result<(), redb::Error> {
    txn.open_table(TABLE_REQUESTS)?.remove(request)?;
    txn.open_table(TABLE_REQUEST_TIMES)?.remove((at_ms, request))?;
    Ok(())
}
