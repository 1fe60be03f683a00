//! The data-dir manifest: format version, shard and partition counts, node id.
//!
//! `DATA_DIR/manifest.json` is written when a data dir is created, at each step of a resharding and by a restore
//! (temp file, fsync, rename, fsync of the dir), and read at every start. The shard count is on-disk layout: a
//! start with a different `SHARD_LIMIT` reshards before serving ([`crate::ops::reshard`]), moving every record to
//! its shard under the new count, so data is never hidden in a shard the node no longer reads.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::placement::{PARTITIONS, PLACEMENT_VERSION};

/// The on-disk format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
const FILE: &str = "manifest.json";

/// What the manifest records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// On-disk format version.
    pub format_version: u32,
    /// Number of shard files.
    pub shards: u32,
    /// Size of the fixed partition space the placement uses.
    pub partitions: u32,
    /// Random id of this node, made at first start (the actor id of later cluster features).
    pub node_id: String,
    /// The placement rule the files follow (`placement::PLACEMENT_VERSION`; absent in older manifests = 1). A
    /// start with an older rule re-places every record before serving (`reshard::reconcile`).
    #[serde(default = "placement_v1")]
    pub placement: u32,
    /// A resharding in progress (see `reshard.rs`); absent when the layout is settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reshard: Option<ReshardPlan>,
    /// The cluster this data dir belongs to (absent on a single node, and on a cluster node before it joined
    /// one). A node never joins another cluster than the one recorded here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterRecord>,
}

/// A cluster membership recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterRecord {
    /// The cluster's random id, made by `shale cluster init`.
    pub id: String,
    /// Copies of every shard.
    pub replicas: u32,
}

/// A resharding recorded in the manifest before any file moves, so a crash at any step can be finished or undone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReshardPlan {
    /// The shard count being moved to (`shards` stays the old count until the switch).
    pub to: u32,
    /// How far it got.
    pub state: ReshardState,
}

/// Steps of a resharding, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReshardState {
    /// New files are being written in the staging dir; the old files are still the truth. Undone on restart.
    Copying,
    /// The new files are complete and durable; the old files are being moved aside. Finished on restart.
    Copied,
    /// Every old file is aside; the new files are being moved in. Finished on restart.
    OldMoved,
}

/// Why a data dir cannot be served with this configuration.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest is unreadable or from an unknown format.
    #[error("manifest {path}: {why}")]
    Invalid {
        /// The manifest path.
        path: String,
        /// What is wrong.
        why: String,
    },
    /// Shard files exist without a manifest.
    #[error("data dir {0} holds shard files but no manifest.json; refusing to guess its layout")]
    Missing(String),
    /// An I/O error.
    #[error("data dir {path}: {err}")]
    Io {
        /// The file or dir.
        path: String,
        /// The error.
        err: std::io::Error,
    },
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> ManifestError + '_ {
    move |err| ManifestError::Io { path: path.display().to_string(), err }
}

/// The manifest path of a data dir.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

fn placement_v1() -> u32 {
    1
}

/// Reads the manifest of `data_dir`, if there is one.
pub fn read(data_dir: &Path) -> Result<Option<Manifest>, ManifestError> {
    let p = path(data_dir);
    let text = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&p)(e)),
    };
    let invalid = |why: String| ManifestError::Invalid { path: p.display().to_string(), why };
    let m: Manifest = serde_json::from_str(&text).map_err(|e| invalid(e.to_string()))?;
    if m.format_version != FORMAT_VERSION {
        return Err(invalid(format!("format version {} (this shale reads {FORMAT_VERSION})", m.format_version)));
    }
    if m.placement > PLACEMENT_VERSION {
        return Err(invalid(format!("placement version {} (this shale knows up to {PLACEMENT_VERSION})", m.placement)));
    }
    if m.partitions != PARTITIONS || m.shards == 0 || m.shards > PARTITIONS {
        return Err(invalid(format!("unsupported layout: {} shards over {} partitions", m.shards, m.partitions)));
    }
    Ok(Some(m))
}

/// Writes `m` atomically: temp file, fsync, rename over the old one, fsync of the dir.
pub fn write(data_dir: &Path, m: &Manifest) -> Result<(), ManifestError> {
    let p = path(data_dir);
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    let mut f = fs::File::create(&tmp).map_err(io(&tmp))?;
    let text = serde_json::to_string_pretty(m).expect("a manifest always serializes");
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.write_all(b"\n").map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    fs::rename(&tmp, &p).map_err(io(&p))?;
    fs::File::open(data_dir).and_then(|d| d.sync_all()).map_err(io(data_dir))?;
    Ok(())
}

/// Reads the manifest of `data_dir`, or creates the dir and a manifest for `shards` shards on first start.
/// A different shard count on disk is not an error here: `reshard::reconcile` moves the data.
pub fn open_or_create(data_dir: &Path, shards: u32) -> Result<Manifest, ManifestError> {
    fs::create_dir_all(data_dir).map_err(io(data_dir))?;
    if let Some(m) = read(data_dir)? {
        return Ok(m);
    }
    let has_shards = fs::read_dir(data_dir)
        .map_err(io(data_dir))?
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().starts_with("shard-"));
    if has_shards {
        return Err(ManifestError::Missing(data_dir.display().to_string()));
    }
    let m = Manifest {
        format_version: FORMAT_VERSION,
        shards,
        partitions: PARTITIONS,
        node_id: new_node_id(),
        placement: PLACEMENT_VERSION,
        reshard: None,
        cluster: None,
    };
    write(data_dir, &m)?;
    Ok(m)
}

/// Records that the data dir at `data_dir` belongs to cluster `record`.
pub fn record_cluster(data_dir: &Path, record: ClusterRecord) -> Result<(), ManifestError> {
    let m = read(data_dir)?.ok_or_else(|| ManifestError::Missing(data_dir.display().to_string()))?;
    write(data_dir, &Manifest { cluster: Some(record), ..m })
}

/// A random 128-bit node id in hex.
pub fn new_node_id() -> String {
    crate::random::hex_id()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let m = open_or_create(dir.path(), 4).unwrap();
        assert_eq!(m.shards, 4);
        assert_eq!(open_or_create(dir.path(), 8).unwrap(), m, "the count on disk wins until resharded");
        let with_plan = Manifest { reshard: Some(ReshardPlan { to: 7, state: ReshardState::Copied }), ..m };
        write(dir.path(), &with_plan).unwrap();
        assert_eq!(read(dir.path()).unwrap().unwrap(), with_plan);
    }

    #[test]
    fn shard_files_without_manifest_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("shard-0.redb"), b"x").unwrap();
        assert!(matches!(open_or_create(dir.path(), 4), Err(ManifestError::Missing(_))));
    }
}
