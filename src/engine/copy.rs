//! Copying a shard file: every record, the `meta` table (but the log position, which belongs to the live file and
//! its log), the `raft` table and the recorded requests (so a replica installing a Raft snapshot still answers a
//! retry of a request applied before it), from one read transaction into a new redb file. Backups and Raft snapshots are
//! such copies: consistent (one read transaction), compact, and made while the shard keeps writing.

use std::path::Path;

use redb::{Database, Durability, ReadTransaction, ReadableTable};

use crate::engine::schema::{META_REV, TABLES_BYTES, TABLE_META, TABLE_RAFT, TABLE_REQUESTS, TABLE_REQUEST_TIMES};
use crate::error::{Error, Result};

/// Entries copied per (non-durable) transaction; the last commit is durable.
const COPY_CHUNK: usize = 50_000;

/// Copies what `txn` sees into a new file at `path`, with `last_rev` as its last revision (the live file's log may
/// hold a later one than its `meta`); returns the records copied. The file is durable when this returns.
pub fn copy_file(txn: &ReadTransaction, path: &Path, last_rev: u64) -> Result<u64> {
    let err = |e: redb::Error| Error::storage(&format!("copying to {}", path.display()), e);
    let db = Database::create(path).map_err(|e| err(e.into()))?;
    let mut n = 0u64;
    for def in TABLES_BYTES {
        let src = txn.open_table(def).map_err(|e| err(e.into()))?;
        let mut iter = src.iter().map_err(|e| err(e.into()))?.peekable();
        loop {
            let mut w = db.begin_write().map_err(|e| err(e.into()))?;
            w.set_durability(Durability::None).map_err(|e| err(e.into()))?;
            {
                let mut dst = w.open_table(def).map_err(|e| err(e.into()))?;
                for item in iter.by_ref().take(COPY_CHUNK) {
                    let (k, v) = item.map_err(|e| err(e.into()))?;
                    dst.insert(k.value(), v.value()).map_err(|e| err(e.into()))?;
                    n += 1;
                }
            }
            w.commit().map_err(|e| err(e.into()))?;
            if iter.peek().is_none() {
                break;
            }
        }
    }
    let w = db.begin_write().map_err(|e| err(e.into()))?;
    {
        let src = txn.open_table(TABLE_META).map_err(|e| err(e.into()))?;
        let mut dst = w.open_table(TABLE_META).map_err(|e| err(e.into()))?;
        for item in src.iter().map_err(|e| err(e.into()))? {
            let (k, v) = item.map_err(|e| err(e.into()))?;
            // The log position belongs to the live file and its log, not to the copy (which starts a new log).
            if k.value().starts_with("wal_") {
                continue;
            }
            dst.insert(k.value(), v.value()).map_err(|e| err(e.into()))?;
        }
        dst.insert(META_REV, last_rev).map_err(|e| err(e.into()))?;
        // A shard of a cluster also carries how far its Raft log was applied, and the membership.
        match txn.open_table(TABLE_RAFT) {
            Ok(src) => {
                let mut dst = w.open_table(TABLE_RAFT).map_err(|e| err(e.into()))?;
                for item in src.iter().map_err(|e| err(e.into()))? {
                    let (k, v) = item.map_err(|e| err(e.into()))?;
                    dst.insert(k.value(), v.value()).map_err(|e| err(e.into()))?;
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(err(e.into())),
        }
        // About one window of requests (see `engine::requests`): small enough for this one transaction.
        copy_table(txn, &w, TABLE_REQUESTS).map_err(err)?;
        copy_table(txn, &w, TABLE_REQUEST_TIMES).map_err(err)?;
    }
    w.commit().map_err(|e| err(e.into()))?; // durable: everything above is on disk
    drop(db);
    Ok(n)
}

/// Copies every entry of table `def` that `txn` sees into `w` (a file written before the table existed has none).
fn copy_table<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    w: &redb::WriteTransaction,
    def: redb::TableDefinition<K, V>,
) -> std::result::Result<(), redb::Error> {
    let src = match txn.open_table(def) {
        Ok(src) => src,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut dst = w.open_table(def)?;
    for item in src.iter()? {
        let (k, v) = item?;
        dst.insert(k.value(), v.value())?;
    }
    Ok(())
}
