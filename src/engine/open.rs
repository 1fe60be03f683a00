//! Opening a shard file: redb's repair or an integrity check, the log's replay, compaction, the tables.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use redb::Database;

use crate::engine::compact::compact_db;
use crate::engine::schema::create_tables;
use crate::engine::wal::{self, Wal};
use crate::error::{Error, Result};
use crate::placement::ShardId;

/// Opens (or creates) the shard file with shale's page cache size, logging redb's repair of a file whose last
/// close was unclean; also answers whether that repair ran.
pub(crate) fn open_file(
    path: &Path,
    shard: ShardId,
    cache_size: usize,
) -> std::result::Result<(Database, bool), redb::DatabaseError> {
    let repaired = Arc::new(AtomicBool::new(false));
    let flag = repaired.clone();
    let mut builder = Database::builder();
    builder.set_cache_size(cache_size);
    builder.set_repair_callback(move |session: &mut redb::RepairSession| {
        flag.store(true, Ordering::Release);
        tracing::warn!(shard = shard.0, progress = session.progress(), "repairing shard after unclean shutdown");
    });
    let db = builder.create(path)?;
    Ok((db, repaired.load(Ordering::Acquire)))
}

/// Opens the shard file for start-up, all on one `Database`:
/// 1. redb's open repairs the file if its last close was unclean (a crash): the repair walks every tree and checks
///    every checksum, so a repaired file is verified;
/// 2. a file that was closed cleanly is verified with `check_integrity` (every page checksum; it also rebuilds a
///    leaked free-page state): redb trusts a cleanly closed file as it is, so a flipped byte in it would be served
///    as a wrong value or make a read panic (`tests/faults.rs`). The check reads the whole file, so its time
///    grows with the file's size;
/// 3. the log is replayed into it ([`wal::recover`]);
/// 4. the file is compacted when more than half of it is free ([`compact_db`]);
/// 5. the tables are created.
///
/// A file that cannot be read (a checksum failure, or a panic inside redb on a damaged page) is refused with an
/// error that names the file and the way out (`shale restore`).
pub(crate) fn open_checked(path: &Path, shard: ShardId, cache_size: usize) -> Result<(Database, Wal)> {
    let started = Instant::now();
    let existed = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
    let damaged = |why: String| {
        Error::Internal(format!(
            "shard {shard}: {} is damaged ({why}); restore the data dir from a backup (`shale restore`)",
            path.display()
        ))
    };
    let check = || -> Result<(Database, &'static str)> {
        let (mut db, repaired) = open_file(path, shard, cache_size).map_err(|e| match e {
            redb::DatabaseError::Storage(redb::StorageError::Corrupted(why)) => damaged(why),
            e => Error::storage(&format!("shard {shard}: cannot open {} (damaged or locked?)", path.display()), e),
        })?;
        let outcome = if !existed {
            "created"
        } else if repaired {
            "repaired after an unclean shutdown"
        } else {
            match db.check_integrity() {
                Ok(true) => "verified",
                // The file was consistent but its allocator state was not (leaked pages); redb rebuilt it.
                Ok(false) => "verified; free-page state rebuilt",
                Err(e) => return Err(damaged(e.to_string())),
            }
        };
        Ok((db, outcome))
    };
    // A damaged page can make redb panic (an index out of range) instead of returning an error.
    let (mut db, outcome) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check))
        .unwrap_or_else(|_| Err(damaged("reading it panicked".into())))?;
    tracing::info!(shard = shard.0, outcome, ms = started.elapsed().as_millis() as u64, "shard file checked");
    let (wal, _) = wal::recover(&db, path, shard, None)?;
    if existed {
        compact_db(&mut db, path, shard, 0.5)?;
    }
    create_tables(&db, shard)?;
    tracing::debug!(shard = shard.0, path = %path.display(), ms = started.elapsed().as_millis() as u64, "shard opened");
    Ok((db, wal))
}
