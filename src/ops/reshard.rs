//! Resharding: moving every record to its shard under a new `SHARD_LIMIT`, before the server serves.
//!
//! # Steps (each recorded in the manifest before it starts; see `docs/design.md`)
//! 1. `copying`: write a new file per new shard in `DATA_DIR/reshard.staging/`, routing each record of each old
//!    file by `placement::shard_for(key, to)`; commit durably. The old files stay the truth: a crash here
//!    discards the staging dir on the next start.
//! 2. `copied`: move every old `shard-<i>.redb` into `DATA_DIR/reshard.old/`.
//! 3. `old_moved`: move every new file from the staging dir to `DATA_DIR/shard-<i>.redb`; then write the manifest
//!    with the new count and no plan, and remove both side dirs.
//!
//! Steps 2 and 3 are renames that are safe to repeat, so a crash after step 1 is finished on the next start,
//! whatever count that start asks for (a different count then reshards again). No record is ever in two
//! authoritative files, and none is dropped: the manifest always names exactly one complete set of files.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, WriteTransaction};

use crate::engine::schema::{shard_file, TABLES_BYTES, TABLE_META};
use crate::fault;
use crate::ops::manifest::{self, Manifest, ReshardPlan, ReshardState};
use crate::placement::{shard_for, ShardId, PLACEMENT_VERSION};

const STAGING: &str = "reshard.staging";
const OLD: &str = "reshard.old";
/// Records buffered per new shard before they are written in one transaction.
const CHUNK: usize = 20_000;
/// redb page cache per file while copying.
const COPY_CACHE: usize = 32 << 20;

/// A resharding failure (nothing was lost: the manifest still names a complete set of files).
#[derive(Debug, thiserror::Error)]
#[error("resharding {dir}: {why}")]
pub struct ReshardError {
    dir: String,
    why: String,
}

fn fail(dir: &Path, why: impl std::fmt::Display) -> ReshardError {
    ReshardError { dir: dir.display().to_string(), why: why.to_string() }
}

/// Brings the data dir to `want` shards: finishes or undoes an interrupted resharding, then reshards if the
/// count on disk differs or the files follow an older placement rule. Returns the settled manifest.
pub fn reconcile(data_dir: &Path, mut m: Manifest, want: u32) -> Result<Manifest, ReshardError> {
    if let Some(plan) = m.reshard.clone() {
        match plan.state {
            ReshardState::Copying => {
                tracing::warn!(
                    from = m.shards,
                    to = plan.to,
                    "an interrupted resharding had not finished copying; discarding its copy"
                );
                remove_dir(&data_dir.join(STAGING)).map_err(|e| fail(data_dir, e))?;
                m.reshard = None;
                write(data_dir, &m)?;
            }
            ReshardState::Copied | ReshardState::OldMoved => {
                tracing::warn!(from = m.shards, to = plan.to, "finishing an interrupted resharding");
                m = switch(data_dir, m)?;
            }
        }
    }
    // Side dirs left by a crash after the switch (the manifest already names the new files).
    remove_dir(&data_dir.join(OLD)).map_err(|e| fail(data_dir, e))?;
    remove_dir(&data_dir.join(STAGING)).map_err(|e| fail(data_dir, e))?;
    if m.shards != want || m.placement != PLACEMENT_VERSION {
        if m.placement != PLACEMENT_VERSION {
            tracing::warn!(
                from = m.placement,
                to = PLACEMENT_VERSION,
                "the placement rule changed; re-placing every record"
            );
        }
        m = reshard(data_dir, m, want)?;
    }
    Ok(m)
}

fn write(data_dir: &Path, m: &Manifest) -> Result<(), ReshardError> {
    manifest::write(data_dir, m).map_err(|e| fail(data_dir, e))
}

fn remove_dir(p: &Path) -> std::io::Result<()> {
    match fs::remove_dir_all(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn sync_dir(p: &Path) -> Result<(), ReshardError> {
    fs::File::open(p).and_then(|d| d.sync_all()).map_err(|e| fail(p, e))
}

fn reshard(data_dir: &Path, mut m: Manifest, to: u32) -> Result<Manifest, ReshardError> {
    let started = Instant::now();
    tracing::info!(from = m.shards, to, "resharding");
    m.reshard = Some(ReshardPlan { to, state: ReshardState::Copying });
    write(data_dir, &m)?;
    fault::point("reshard-planned");

    let staging = data_dir.join(STAGING);
    remove_dir(&staging).map_err(|e| fail(&staging, e))?;
    fs::create_dir_all(&staging).map_err(|e| fail(&staging, e))?;
    let moved = copy(data_dir, m.shards, &staging, to)?;
    sync_dir(&staging)?;

    m.reshard = Some(ReshardPlan { to, state: ReshardState::Copied });
    write(data_dir, &m)?;
    fault::point("reshard-copied");
    let m = switch(data_dir, m)?;
    tracing::info!(shards = to, records = moved, ms = started.elapsed().as_millis() as u64, "resharding done");
    Ok(m)
}

/// Copies every record of the `from` old files into `to` new files in `staging`; returns how many.
fn copy(data_dir: &Path, from: u32, staging: &Path, to: u32) -> Result<u64, ReshardError> {
    let err = |e: redb::Error| fail(data_dir, e);
    let open = |p: PathBuf| Database::builder().set_cache_size(COPY_CACHE).create(&p).map_err(|e| fail(&p, e));
    let olds = (0..from).map(|i| open(shard_file(data_dir, ShardId(i)))).collect::<Result<Vec<_>, _>>()?;
    // An old file's log may hold acknowledged writes its redb file does not have yet (a crash under
    // `immediate`): replay them first. The new files start with fresh logs (their meta has no log epoch).
    for (i, db) in olds.iter().enumerate() {
        let path = shard_file(data_dir, ShardId(i as u32));
        crate::engine::wal::recover(db, &path, ShardId(i as u32), None).map_err(|e| fail(&path, e))?;
    }
    let news = (0..to).map(|i| open(shard_file(staging, ShardId(i)))).collect::<Result<Vec<_>, _>>()?;

    let mut total = 0u64;
    let mut max_rev = 0u64;
    for db in &olds {
        let txn = db.begin_read().map_err(|e| err(e.into()))?;
        for def in TABLES_BYTES {
            if let Some(t) = open_if_exists(&txn, def).map_err(err)? {
                total += t.len().map_err(|e| err(e.into()))?;
            }
        }
        let meta = txn.open_table(TABLE_META).map_err(|e| err(e.into()))?;
        let rev = meta.get("rev").map_err(|e| err(e.into()))?.map(|g| g.value()).unwrap_or(0);
        max_rev = max_rev.max(rev);
    }

    let mut moved = 0u64;
    let mut last_log = Instant::now();
    for (i, db) in olds.iter().enumerate() {
        let txn = db.begin_read().map_err(|e| err(e.into()))?;
        for def in TABLES_BYTES {
            let Some(table) = open_if_exists(&txn, def).map_err(err)? else { continue };
            let mut buffers: Vec<Vec<(Vec<u8>, Vec<u8>)>> = (0..to).map(|_| Vec::new()).collect();
            for item in table.iter().map_err(|e| err(e.into()))? {
                let (k, v) = item.map_err(|e| err(e.into()))?;
                let target = shard_for(k.value(), to).0 as usize;
                buffers[target].push((k.value().to_vec(), v.value().to_vec()));
                if buffers[target].len() >= CHUNK {
                    flush(&news[target], def, &mut buffers[target]).map_err(err)?;
                }
                moved += 1;
                if last_log.elapsed().as_secs() >= 1 {
                    tracing::info!(moved, total, "resharding progress");
                    last_log = Instant::now();
                }
                if moved == total / 2 {
                    fault::point("reshard-mid-copy");
                }
            }
            for (target, buf) in buffers.iter_mut().enumerate() {
                flush(&news[target], def, buf).map_err(err)?;
            }
        }
        tracing::info!(old_shard = i, moved, total, "resharding progress");
    }
    // One durable commit per new file makes every non-durable chunk before it durable, and carries the highest
    // revision of the old files so new writes never reuse an ETag.
    for db in &news {
        let w = db.begin_write().map_err(|e| err(e.into()))?;
        {
            w.open_table(TABLE_META).map_err(|e| err(e.into()))?.insert("rev", max_rev).map_err(|e| err(e.into()))?;
            for def in TABLES_BYTES {
                w.open_table(def).map_err(|e| err(e.into()))?;
            }
        }
        w.commit().map_err(|e| err(e.into()))?;
    }
    Ok(moved)
}

fn flush(
    db: &Database,
    def: redb::TableDefinition<&[u8], &[u8]>,
    buf: &mut Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<(), redb::Error> {
    if buf.is_empty() {
        return Ok(());
    }
    let mut w: WriteTransaction = db.begin_write()?;
    w.set_durability(Durability::None)?;
    {
        let mut t = w.open_table(def)?;
        for (k, v) in buf.drain(..) {
            t.insert(k.as_slice(), v.as_slice())?;
        }
    }
    w.commit()?;
    Ok(())
}

type BytesTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// Opens a table of an old file, or `None` when that file predates the table (e.g. `buckets`).
fn open_if_exists(
    txn: &redb::ReadTransaction,
    def: redb::TableDefinition<&'static [u8], &'static [u8]>,
) -> Result<Option<BytesTable>, redb::Error> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Steps 2 and 3: move the old files aside, move the new ones in, settle the manifest. Safe to repeat.
fn switch(data_dir: &Path, mut m: Manifest) -> Result<Manifest, ReshardError> {
    let plan = m.reshard.clone().expect("switch runs only with a plan");
    let staging = data_dir.join(STAGING);
    let old = data_dir.join(OLD);
    let rename = |from: &Path, to: &Path| -> Result<(), ReshardError> {
        if from.exists() {
            fs::rename(from, to).map_err(|e| fail(from, e))?;
        }
        Ok(())
    };
    if plan.state == ReshardState::Copied {
        fs::create_dir_all(&old).map_err(|e| fail(&old, e))?;
        for i in 0..m.shards {
            rename(&shard_file(data_dir, ShardId(i)), &shard_file(&old, ShardId(i)))?;
            // Its log was replayed into it before the copy; it goes with it (a new file never reads it anyway).
            let log = crate::engine::wal::path_for(&shard_file(data_dir, ShardId(i)));
            rename(&log, &crate::engine::wal::path_for(&shard_file(&old, ShardId(i))))?;
            if i == 0 {
                fault::point("reshard-moving-old");
            }
        }
        sync_dir(&old)?;
        sync_dir(data_dir)?;
        m.reshard = Some(ReshardPlan { state: ReshardState::OldMoved, ..plan });
        write(data_dir, &m)?;
        fault::point("reshard-old-moved");
    }
    for i in 0..plan.to {
        rename(&shard_file(&staging, ShardId(i)), &shard_file(data_dir, ShardId(i)))?;
        if i == 0 {
            fault::point("reshard-moving-new");
        }
    }
    sync_dir(data_dir)?;
    m.shards = plan.to;
    m.placement = PLACEMENT_VERSION;
    m.reshard = None;
    write(data_dir, &m)?;
    fault::point("reshard-switched");
    remove_dir(&old).map_err(|e| fail(&old, e))?;
    remove_dir(&staging).map_err(|e| fail(&staging, e))?;
    Ok(m)
}

/// Every fault point of a resharding, in the order they are reached (for crash tests).
pub const FAULT_POINTS: [&str; 7] = [
    "reshard-planned",
    "reshard-mid-copy",
    "reshard-copied",
    "reshard-moving-old",
    "reshard-old-moved",
    "reshard-moving-new",
    "reshard-switched",
];
