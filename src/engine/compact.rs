//! Compaction of a shard file: redb's `compact` when enough of the file is free.

use std::fs;
use std::path::Path;
use std::time::Instant;

use redb::Database;

use crate::error::{Error, Result};
use crate::placement::ShardId;

/// Compacts the open database of `path` when its fragmented bytes exceed `threshold` of the file (0.0 = always).
/// `db` must have no live transaction and no other handle (redb's rule for `compact`); the start-up open
/// (`open::open_checked`, for `Store::open`) calls this on the handle it then serves from, and `shale compact`
/// on each file of a stopped server. Returns the bytes reclaimed (compaction shrinks the file as it goes).
pub fn compact_db(db: &mut Database, path: &Path, shard: ShardId, threshold: f64) -> Result<u64> {
    let err = |e: redb::Error| Error::storage(&format!("shard {shard}: compaction"), e);
    let before = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    if before == 0 {
        return Ok(0);
    }
    let fragmented = {
        let w = db.begin_write().map_err(|e| err(e.into()))?;
        let f = w.stats().map_err(|e| err(e.into()))?.fragmented_bytes();
        w.abort().map_err(|e| err(e.into()))?;
        f
    };
    if (fragmented as f64) < threshold * before as f64 {
        return Ok(0);
    }
    let started = Instant::now();
    while db.compact().map_err(|e| err(e.into()))? {}
    let after = fs::metadata(path).map(|m| m.len()).unwrap_or(before);
    let reclaimed = before.saturating_sub(after);
    tracing::info!(
        shard = shard.0,
        before,
        after,
        reclaimed,
        ms = started.elapsed().as_millis() as u64,
        "shard compacted"
    );
    Ok(reclaimed)
}
