//! Consistent online backup, offline restore, and offline compaction.
//!
//! # Backup
//! The coordinator sends every shard worker a [`SnapshotRequest`]. A worker commits what it has batched, then
//! meets all the others at a rendezvous (so no shard commits anything while the snapshots are opened), opens a
//! redb read transaction, meets them again, and resumes writing. All snapshots therefore show the store at one
//! instant: every write acknowledged before the backup began is in, and no shard is ahead of another. The
//! copy is made from those read transactions into new files while the shards keep serving; writes pause only
//! for the rendezvous.
//!
//! # Backup directory
//! ```text
//! <dir>/manifest.json            the data dir's manifest
//! <dir>/shard-<i>.redb           one compact redb file per shard
//! <dir>/SHA256SUMS               `sha256sum -c` format, one line per file above
//! ```

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use redb::Database;
use sha2::{Digest, Sha256};

use crate::engine::compact::compact_db;
use crate::engine::copy::copy_file;
use crate::engine::schema::shard_file;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::ops::manifest::{self, Manifest};
use crate::placement::ShardId;
use crate::shard::snapshot::{Rendezvous, Snapshot, SnapshotRequest, RENDEZVOUS_TIMEOUT};

/// Name of the checksum file of a backup.
pub const CHECKSUMS: &str = "SHA256SUMS";

// ---- backup ----

/// What a finished backup holds.
#[derive(Debug, serde::Serialize)]
pub struct BackupReport {
    /// The backup directory.
    pub path: String,
    /// Number of shard files.
    pub shards: u32,
    /// Records copied (all keyspaces).
    pub entries: u64,
    /// Bytes of all files.
    pub bytes: u64,
    /// Milliseconds writes were paused for the rendezvous.
    pub pause_ms: u64,
    /// Milliseconds of the whole backup.
    pub ms: u64,
}

fn io_err<'a>(what: &'a str, path: &'a Path) -> impl Fn(std::io::Error) -> Error + 'a {
    move |e| Error::storage(&format!("{what} {}", path.display()), e)
}

/// Checks that `out` can receive a backup: absolute, outside the data dir, absent or an empty directory.
pub fn check_target(out: &Path, data_dir: &Path) -> Result<()> {
    if !out.is_absolute() {
        return Err(Error::BadRequest(format!("backup path {} must be absolute", out.display())));
    }
    let data = fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let parent = out.parent().and_then(|p| fs::canonicalize(p).ok());
    match parent {
        None => return Err(Error::BadRequest(format!("the parent of {} does not exist", out.display()))),
        Some(p) if p.starts_with(&data) => {
            return Err(Error::BadRequest("the backup path must be outside the data dir".into()));
        }
        Some(_) => {}
    }
    if out.exists() && fs::read_dir(out).map(|mut d| d.next().is_some()).unwrap_or(true) {
        return Err(Error::BadRequest(format!("{} exists and is not an empty directory", out.display())));
    }
    Ok(())
}

/// Takes a consistent backup of every shard into `out` (blocking: run it off the async workers).
pub fn take(node: &Node, data_dir: &Path, out: &Path) -> Result<BackupReport> {
    let started = Instant::now();
    check_target(out, data_dir)?;
    let manifest = manifest::read(data_dir)
        .map_err(|e| Error::Internal(e.to_string()))?
        .ok_or_else(|| Error::Internal("the data dir has no manifest".into()))?;

    let shards = node.shards();
    let rendezvous = Rendezvous::new(shards.len());
    let (tx, rx) = crossbeam_channel::bounded(shards.len());
    for shard in shards {
        let req = SnapshotRequest { rendezvous: rendezvous.clone(), reply: tx.clone() };
        if let Err(e) = shard.request_snapshot(req) {
            rendezvous.abandon();
            return Err(e);
        }
    }
    drop(tx);
    let mut snapshots: Vec<Option<Snapshot>> = (0..shards.len()).map(|_| None).collect();
    for _ in 0..shards.len() {
        match rx.recv_timeout(RENDEZVOUS_TIMEOUT * 3) {
            Ok((id, Ok(snap))) => snapshots[id.0 as usize] = Some(snap),
            Ok((id, Err(e))) => return Err(Error::Internal(format!("shard {id}: cannot open a snapshot: {e}"))),
            Err(_) => {
                rendezvous.abandon();
                return Err(Error::Unavailable("the shards did not reach the backup rendezvous; retry".into()));
            }
        }
    }
    let pause_ms = started.elapsed().as_millis() as u64;

    fs::create_dir_all(out).map_err(io_err("cannot create", out))?;
    let copied: Vec<Result<u64>> = std::thread::scope(|scope| {
        let jobs: Vec<_> = snapshots
            .into_iter()
            .enumerate()
            .map(|(i, snap)| {
                let path = shard_file(out, ShardId(i as u32));
                scope.spawn(move || copy_snapshot(&snap.expect("every shard answered"), &path))
            })
            .collect();
        jobs.into_iter().map(|j| j.join().expect("copy thread does not panic")).collect()
    });
    let mut entries = 0;
    for c in copied {
        entries += c?;
    }
    manifest::write(out, &manifest).map_err(|e| Error::Internal(e.to_string()))?;
    let bytes = write_checksums(out, manifest.shards)?;
    Ok(BackupReport {
        path: out.display().to_string(),
        shards: manifest.shards,
        entries,
        bytes,
        pause_ms,
        ms: started.elapsed().as_millis() as u64,
    })
}

/// Copies every table of a snapshot into a new redb file; returns the number of records.
fn copy_snapshot(Snapshot { txn, last_rev }: &Snapshot, path: &Path) -> Result<u64> {
    copy_file(txn, path, *last_rev)
}

fn sha256_file(path: &Path) -> Result<(String, u64)> {
    let mut f = fs::File::open(path).map_err(io_err("cannot read", path))?;
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f, &mut h).map_err(io_err("cannot read", path))?;
    Ok((h.finalize().iter().map(|b| format!("{b:02x}")).collect(), n))
}

fn backup_files(shards: u32) -> Vec<String> {
    let mut names = vec!["manifest.json".to_string()];
    names.extend((0..shards).map(|i| format!("shard-{i}.redb")));
    names
}

/// Writes `SHA256SUMS` for the manifest and every shard file; returns their total size.
fn write_checksums(dir: &Path, shards: u32) -> Result<u64> {
    let mut text = String::new();
    let mut total = 0;
    for name in backup_files(shards) {
        let (sum, n) = sha256_file(&dir.join(&name))?;
        text.push_str(&format!("{sum}  {name}\n"));
        total += n;
    }
    let path = dir.join(CHECKSUMS);
    let mut f = fs::File::create(&path).map_err(io_err("cannot write", &path))?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(io_err("cannot write", &path))?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("cannot sync", dir))?;
    Ok(total)
}

// ---- restore ----

/// Why a restore was refused.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The backup is incomplete or damaged.
    #[error("backup {0}")]
    Invalid(String),
    /// The target holds data.
    #[error("data dir {0} is not empty; pass --force to replace its contents")]
    NotEmpty(String),
    /// An I/O error.
    #[error("{0}")]
    Io(String),
}

/// Verifies a backup (manifest, file list, every checksum) and returns its manifest.
pub fn verify(from: &Path) -> Result<Manifest, RestoreError> {
    let bad = |why: String| RestoreError::Invalid(format!("{}: {why}", from.display()));
    let m = manifest::read(from).map_err(|e| bad(e.to_string()))?.ok_or_else(|| bad("no manifest.json".into()))?;
    let sums = fs::read_to_string(from.join(CHECKSUMS)).map_err(|e| bad(format!("cannot read {CHECKSUMS}: {e}")))?;
    let mut listed = std::collections::BTreeMap::new();
    for line in sums.lines().filter(|l| !l.trim().is_empty()) {
        let (sum, name) = line.split_once("  ").ok_or_else(|| bad(format!("malformed {CHECKSUMS} line {line:?}")))?;
        listed.insert(name.to_string(), sum.to_string());
    }
    for name in backup_files(m.shards) {
        let expected = listed.get(&name).ok_or_else(|| bad(format!("{name} is not listed in {CHECKSUMS}")))?;
        let (actual, _) = sha256_file(&from.join(&name)).map_err(|e| bad(e.to_string()))?;
        if &actual != expected {
            return Err(bad(format!("{name} is damaged: its SHA-256 does not match {CHECKSUMS}")));
        }
    }
    Ok(m)
}

/// Restores the backup `from` into `data_dir` (server stopped). Refuses a non-empty dir unless `force`.
/// Files are copied under temporary names, fsynced, then renamed; the manifest (with a new node id) is last,
/// so an interrupted restore leaves no manifest and the server refuses to start on it.
pub fn restore(from: &Path, data_dir: &Path, force: bool) -> Result<Manifest, RestoreError> {
    let m = verify(from)?;
    let io = |what: &str, p: &Path, e: std::io::Error| RestoreError::Io(format!("{what} {}: {e}", p.display()));
    fs::create_dir_all(data_dir).map_err(|e| io("cannot create", data_dir, e))?;
    let existing: Vec<_> = fs::read_dir(data_dir).map_err(|e| io("cannot read", data_dir, e))?.flatten().collect();
    if !existing.is_empty() {
        if !force {
            return Err(RestoreError::NotEmpty(data_dir.display().to_string()));
        }
        for entry in existing {
            let p = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "manifest.json" || name.starts_with("shard-") || name.ends_with(".tmp") {
                let r = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
                r.map_err(|e| io("cannot remove", &p, e))?;
            }
        }
    }
    for i in 0..m.shards {
        let src = shard_file(from, ShardId(i));
        let dst = shard_file(data_dir, ShardId(i));
        let tmp = dst.with_extension("redb.tmp");
        fs::copy(&src, &tmp).map_err(|e| io("cannot copy to", &tmp, e))?;
        fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(|e| io("cannot sync", &tmp, e))?;
        fs::rename(&tmp, &dst).map_err(|e| io("cannot rename", &dst, e))?;
    }
    let restored = Manifest { node_id: manifest::new_node_id(), cluster: None, ..m };
    manifest::write(data_dir, &restored).map_err(|e| RestoreError::Io(e.to_string()))?;
    Ok(restored)
}

// ---- compaction ----

/// Compacts every shard file of a data dir that is not in use (server stopped). Returns bytes reclaimed.
pub fn compact_dir(data_dir: &Path) -> std::result::Result<u64, String> {
    let m = manifest::read(data_dir).map_err(|e| e.to_string())?.ok_or("no manifest.json: not a shale data dir")?;
    let mut reclaimed = 0;
    for i in 0..m.shards {
        let path = shard_file(data_dir, ShardId(i));
        reclaimed += compact_file(&path, ShardId(i), 0.0).map_err(|e| e.to_string())?;
    }
    Ok(reclaimed)
}

/// Compacts one closed shard file when its fragmented bytes exceed `threshold` of the file (0.0 = always), after
/// replaying its write-ahead log into it (so the file alone holds every acknowledged write: the offline archive
/// copies only the files). Returns the bytes reclaimed.
pub fn compact_file(path: &PathBuf, shard: ShardId, threshold: f64) -> Result<u64> {
    if fs::metadata(path).map(|m| m.len()).unwrap_or(0) == 0 {
        return Ok(0);
    }
    let mut db = Database::create(path)
        .map_err(|e| Error::storage(&format!("shard {shard}: compaction"), redb::Error::from(e)))?;
    crate::engine::wal::recover(&db, path, shard, None)?;
    compact_db(&mut db, path, shard, threshold)
}
