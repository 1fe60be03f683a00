//! The state machine of a shard's Raft group: the shard's redb file, which only the shard's worker writes.
//!
//! - Apply: committed entries are queued to the worker in log order ([`ShardHandle::apply`]), and the group goes
//!   on with the next ones without waiting (apply is pipelined). The worker applies their commands with the
//!   command logic of a single node (`engine::apply`), the entries queued together in one transaction, records
//!   the last applied entry and the membership in the same transaction, updates the cache, and answers each
//!   command's outcome, which is what the client that proposed it gets. Only then does the shard's applied index
//!   ([`ShardState::applied`]) move: linearizable reads wait on it, not on openraft's, which counts entries once
//!   they are queued. A failed apply stops the group at its next call.
//! - Snapshot: a copy of the shard file from one read transaction taken between the worker's batches (the
//!   backup's rendezvous, for one shard), written to `shard-<i>.snapshots/snapshot-<index>.redb` and made durable
//!   there. Its metadata (last applied entry, membership) is read from the copy itself. The newest one is the
//!   current snapshot; older ones are deleted once a newer one is durable. Since openraft purges the log only
//!   below a snapshot, and every snapshot is durable, a crash never needs an entry the log no longer has.
//! - Install: a received snapshot is kept as the current one, and the worker replaces the shard file with a copy.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::TryStreamExt;
use openraft::alias::{LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf};
use openraft::storage::{ApplyResponder, EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use redb::{Database, ReadTransaction, ReadableDatabase};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::watch;

use crate::cluster::types::{Applied, ShardRaft};
use crate::engine::copy::copy_file;
use crate::engine::schema::{RAFT_APPLIED, RAFT_MEMBERSHIP, TABLE_RAFT};
use crate::engine::store::{Replicated, Store};
use crate::error::Error;
use crate::shard::snapshot::{Rendezvous, SnapshotRequest};
use crate::shard::ShardHandle;

type LogId = LogIdOf<ShardRaft>;
type Membership = StoredMembershipOf<ShardRaft>;
type Meta = SnapshotMetaOf<ShardRaft>;

/// A shard's Raft group.
pub type Group = openraft::Raft<ShardRaft, ShardState>;

/// A snapshot: a copy of a shard file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile(pub PathBuf);

/// The state machine of one shard's group.
#[derive(Clone)]
pub struct ShardState {
    shard: ShardHandle,
    store: Arc<Store>,
    /// Where its snapshots are kept.
    dir: PathBuf,
    /// The index of the last entry the shard file and cache hold, once the worker has applied it.
    applied: Arc<watch::Sender<Option<u64>>>,
    /// One past the index of the last entry queued to the worker.
    queued: Arc<AtomicU64>,
    /// Why an apply failed: the group stops at its next call.
    failed: Arc<Mutex<Option<String>>>,
    /// `shale_raft_apply_seconds`: from queueing entries to their outcomes.
    apply_seconds: metrics::Histogram,
}

impl ShardState {
    /// The state machine of the shard whose worker `shard` reaches, keeping its snapshots in `dir`.
    pub fn new(shard: ShardHandle, dir: PathBuf) -> io::Result<ShardState> {
        std::fs::create_dir_all(&dir)?;
        let store = shard.store().clone();
        let applied = store.raft_state().map_err(io_error)?.applied.as_deref().map(decode::<LogId>).transpose()?;
        let applied = applied.map(|l| l.index);
        let apply_seconds = metrics::histogram!("shale_raft_apply_seconds", "shard" => shard.id().to_string());
        Ok(ShardState {
            shard,
            store,
            dir,
            applied: Arc::new(watch::channel(applied).0),
            queued: Arc::new(AtomicU64::new(applied.map_or(0, |i| i + 1))),
            failed: Arc::default(),
            apply_seconds,
        })
    }

    /// The index of the last entry the shard's file and cache hold (readers see it).
    pub fn applied(&self) -> watch::Receiver<Option<u64>> {
        self.applied.subscribe()
    }

    fn failure(&self) -> io::Result<()> {
        match self.failed.lock().expect("failed lock").as_ref() {
            Some(why) => Err(io::Error::other(format!("applying committed entries failed: {why}"))),
            None => Ok(()),
        }
    }

    /// A failed transaction stops the group (at its next call): the entries are committed, and must be applied
    /// before any later one. Their writers learn that the outcome is unknown until the node restarts.
    fn apply_failed(&self, why: String, responders: Vec<Option<ApplyResponder<ShardRaft>>>) {
        tracing::error!(shard = %self.shard.id(), error = %why, "applying committed entries failed; the shard's group stops");
        let answer = || {
            Error::Unavailable(format!(
                "shard {}: applying the committed write failed ({why}); it is applied when the node restarts",
                self.shard.id()
            ))
        };
        for r in responders.into_iter().flatten() {
            r.send(Applied(Some(Err(answer()))));
        }
        self.failed.lock().expect("failed lock").get_or_insert(why);
        // Wakes whoever waits for the applied index.
        self.applied.send_modify(|_| {});
    }

    /// Waits until every entry queued to the worker is applied.
    async fn settled(&self) -> io::Result<()> {
        let queued = self.queued.load(Ordering::Acquire);
        let failed = self.failed.clone();
        let mut applied = self.applied.subscribe();
        let done = |a: &Option<u64>| a.map_or(0, |i| i + 1) >= queued;
        let _ = applied.wait_for(|a| done(a) || failed.lock().expect("failed lock").is_some()).await;
        self.failure()
    }

    /// The snapshot files, oldest first.
    fn snapshots(&self) -> io::Result<Vec<PathBuf>> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("snapshot-")))
            .filter(|p| p.extension().is_some_and(|x| x == "redb"))
            .collect();
        found.sort();
        Ok(found)
    }

    fn name_for(&self, meta: &Meta) -> PathBuf {
        let index = meta.last_log_id.map_or(0, |l| l.index);
        self.dir.join(format!("snapshot-{index:020}.redb"))
    }

    /// Deletes every snapshot but `keep`.
    fn delete_others(&self, keep: &Path) -> io::Result<()> {
        for old in self.snapshots()? {
            if old != keep {
                std::fs::remove_file(&old)?;
            }
        }
        sync_dir(&self.dir)
    }
}

impl RaftStateMachine<ShardRaft> for ShardState {
    type SnapshotData = SnapshotFile;
    type SnapshotBuilder = ShardState;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, Membership), io::Error> {
        self.settled().await?;
        let store = self.store.clone();
        let state = blocking(move || store.raft_state().map_err(io_error)).await?;
        let applied = state.applied.as_deref().map(decode).transpose()?;
        Ok((applied, state.membership.as_deref().map(decode).transpose()?.unwrap_or_default()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: futures_util::Stream<Item = Result<EntryResponder<ShardRaft>, io::Error>> + Unpin + OptionalSend,
    {
        self.failure()?;
        let mut batch = Vec::new();
        let mut responders = Vec::new();
        let mut last = 0;
        while let Some((entry, responder)) = entries.try_next().await? {
            last = entry.log_id.index;
            let applied = encode(&entry.log_id)?;
            let (command, membership) = match entry.payload {
                EntryPayload::Blank => (None, None),
                EntryPayload::Normal(proposal) => (Some(proposal.command), None),
                EntryPayload::Membership(m) => (None, Some(encode(&Membership::new(Some(entry.log_id), m))?)),
            };
            batch.push(Replicated { command, applied, membership });
            responders.push(responder);
        }
        if batch.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let outcomes = self.shard.apply(batch).await.map_err(io_error)?;
        self.queued.fetch_max(last + 1, Ordering::AcqRel);
        let this = self.clone();
        tokio::spawn(async move {
            let outcomes = match outcomes.await {
                Ok(Ok(outcomes)) => outcomes,
                Ok(Err(e)) => return this.apply_failed(e.to_string(), responders),
                Err(_) => return this.apply_failed("the shard stopped".into(), responders),
            };
            // The worker answers in log order, after the file and cache hold the entries.
            this.applied.send_if_modified(|a| advance(a, last));
            this.apply_seconds.record(started.elapsed().as_secs_f64());
            for (responder, outcome) in responders.into_iter().zip(outcomes) {
                if let Some(r) = responder {
                    r.send(Applied(outcome));
                }
            }
        });
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> ShardState {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &Meta, snapshot: SnapshotFile) -> Result<(), io::Error> {
        let current = self.name_for(meta);
        if snapshot.0 != current {
            let incoming = current.with_extension("incoming");
            std::fs::copy(&snapshot.0, &incoming)?;
            std::fs::File::open(&incoming)?.sync_all()?;
            std::fs::rename(&incoming, &current)?;
            sync_dir(&self.dir)?;
        }
        self.shard.install(current.clone()).await.map_err(io_error)?;
        if let Some(index) = meta.last_log_id.map(|l| l.index) {
            self.queued.fetch_max(index + 1, Ordering::AcqRel);
            self.applied.send_if_modified(|a| advance(a, index));
        }
        metrics::counter!("shale_raft_snapshots_installed_total", "shard" => self.shard.id().to_string()).increment(1);
        self.delete_others(&current)
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<ShardRaft, SnapshotFile>>, io::Error> {
        let Some(newest) = self.snapshots()?.pop() else { return Ok(None) };
        let path = newest.clone();
        let meta = blocking(move || {
            let db = Database::open(&path).map_err(|e| io::Error::other(e.to_string()))?;
            let txn = db.begin_read().map_err(|e| io::Error::other(e.to_string()))?;
            meta_of(&txn)
        })
        .await?;
        Ok(Some(SnapshotOf::<ShardRaft, SnapshotFile> { meta, snapshot: SnapshotFile(newest) }))
    }
}

impl RaftSnapshotBuilder<ShardRaft> for ShardState {
    type SnapshotData = SnapshotFile;

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<ShardRaft, SnapshotFile>, io::Error> {
        let this = self.clone();
        let (meta, path) = blocking(move || {
            // Queued behind the shard's writes (waiting for room blocks, so it runs off the async workers).
            let (reply, answer) = crossbeam_channel::bounded(1);
            let request = SnapshotRequest { rendezvous: Rendezvous::new(1), reply };
            this.shard.request_snapshot(request).map_err(io_error)?;
            let (_, snapshot) = answer.recv().map_err(|_| io::Error::other("the shard stopped"))?;
            let snapshot = snapshot.map_err(io_error)?;
            let meta = meta_of(&snapshot.txn)?;
            let path = this.name_for(&meta);
            let building = path.with_extension("building");
            let _ = std::fs::remove_file(&building);
            copy_file(&snapshot.txn, &building, snapshot.last_rev).map_err(io_error)?;
            std::fs::rename(&building, &path)?;
            sync_dir(&this.dir)?;
            this.delete_others(&path)?;
            Ok((meta, path))
        })
        .await?;
        Ok(SnapshotOf::<ShardRaft, SnapshotFile> { meta, snapshot: SnapshotFile(path) })
    }
}

/// Moves an applied index forward to `index` (never back: the worker's answers may be seen out of order);
/// whether it moved.
fn advance(applied: &mut Option<u64>, index: u64) -> bool {
    let moved = applied.is_none_or(|a| a < index);
    if moved {
        *applied = Some(index);
    }
    moved
}

/// The snapshot metadata a shard file (or a copy of one) records.
fn meta_of(txn: &ReadTransaction) -> io::Result<Meta> {
    let (applied, membership) = match txn.open_table(TABLE_RAFT) {
        Ok(t) => {
            let get = |key: &str| -> io::Result<Option<Vec<u8>>> {
                Ok(t.get(key).map_err(|e| io::Error::other(e.to_string()))?.map(|v| v.value().to_vec()))
            };
            (get(RAFT_APPLIED)?, get(RAFT_MEMBERSHIP)?)
        }
        Err(redb::TableError::TableDoesNotExist(_)) => (None, None),
        Err(e) => return Err(io::Error::other(e.to_string())),
    };
    Ok(Meta {
        last_log_id: applied.as_deref().map(decode).transpose()?,
        last_membership: membership.as_deref().map(decode).transpose()?.unwrap_or_default(),
    })
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> io::Result<T> + Send + 'static) -> io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| io::Error::other(format!("a blocking task failed: {e}")))?
}

fn io_error(e: Error) -> io::Error {
    io::Error::other(e.to_string())
}

fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| io::Error::other(format!("encoding Raft state: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    postcard::from_bytes(bytes)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("decoding Raft state: {e}")))
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
