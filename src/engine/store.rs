//! One shard's redb file: tables, reads, and the batch write transaction.
//!
//! A [`Store`] is shared: the shard thread is its only writer ([`Store::apply_batch`], [`Store::flush`],
//! [`Store::reopen`]), while HTTP handlers read it through short read transactions ([`Store::get`],
//! [`Store::list`]) that never block the writer (redb MVCC).
//!
//! A logged store writes each batch to its [`wal`] before redb commits it without an fsync, and
//! fdatasyncs the frame under `DURABILITY=immediate` ([`Log::Fsynced`]) or leaves it to the page cache under
//! `eventual` ([`Log::Written`]); [`Store::flush`] is then the checkpoint. Every open replays the log, logged or not.
//!
//! # Held transaction (logged stores, and a cluster's applied entries)
//! A logged batch is answered once its log frame is written (fdatasynced under `immediate`), and a cluster
//! shard's entries are applied once a majority's Raft logs hold them, so their redb commit can wait: the write
//! transaction stays open ("held") across batches and is committed once it holds
//! [`HOLD_BATCHES`](crate::engine::durability::HOLD_BATCHES) batches or
//! [`HOLD_BYTES`](crate::engine::durability::HOLD_BYTES) of payload, or is [`HOLD_TIME`] old, or when something
//! reads the committed state on behalf of a client ([`Store::settle`]). A hold that a batch fills is committed
//! after that batch is answered ([`Store::end_full_hold`], called by the shard thread). One redb commit then
//! carries several batches, and a leaf page written by several of them is copied and checksummed once.
//! Invariants:
//! - While a held transaction holds answered batches, [`Store::pending`] is true (set before the answers, cleared
//!   only after the commit returned). A reader of the committed state that sees it true must go through the
//!   shard's queue ([`Command::Read`], served inside the transaction) or settle
//!   first; readers never see a change before it is in the log.
//! - The shard thread holds the `held` lock for a whole batch, so [`Store::settle`] waits for a batch in flight.
//! - Every batch in a held transaction is in the log: if the transaction is lost (a failed batch, a failed
//!   commit), the store is marked for a reopen, and the reopen's replay brings them back. Applied Raft entries
//!   are in the Raft log instead, which the store cannot replay: their loss refuses every later apply, so the
//!   group stops and the restarted node applies them again ([`Store::apply_replicated`]).
//!
//! # Tables
//! - `kv`, `docs`, `counters`, `buckets`: key bytes -> encoded [`Record`] (one table per [`Space`]).
//! - `meta`: `"rev"` -> the last revision handed out in this file; `"wal_seq"`, `"wal_epoch"`: see
//!   [`crate::engine::wal`].
//!
//! Their definitions are in [`crate::engine::schema`].
//!
//! Invariant: the database sits behind a lock only so that a failed commit can close and reopen it (redb refuses
//! writes after a failed commit); readers hold the lock just long enough to clone the `Arc`.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use crate::command::{Command, Space};
use crate::engine::apply::{apply_one, Tables};
use crate::engine::change::{Change, Outcome};
use crate::engine::durability::{Log, HOLD_TIME};
use crate::engine::held::Held;
use crate::engine::open::{open_checked, open_file};
use crate::engine::room::free_bytes;
use crate::engine::schema::{
    create_tables, table, META, META_REV, META_WAL_SEQ, RAFT_APPLIED, RAFT_MEMBERSHIP, TABLE_RAFT,
};
use crate::engine::storage;
use crate::engine::wal::{self, Wal};
use crate::error::{Error, Result};
use crate::placement::ShardId;
use crate::record::Record;

/// One committed entry of a shard's Raft log, to apply to the shard file (cluster mode).
#[derive(Debug, Clone)]
pub struct Replicated {
    /// The write it carries (blank and membership entries carry none).
    pub command: Option<Command>,
    /// The entry's id, as the cluster layer encodes it: recorded as the last applied.
    pub applied: Vec<u8>,
    /// The membership it sets, as the cluster layer encodes it.
    pub membership: Option<Vec<u8>>,
}

/// Where a cluster shard's file stands in its Raft log, as the cluster layer encoded it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftState {
    /// The id of the last entry applied (`None` before the first).
    pub applied: Option<Vec<u8>>,
    /// The membership of the last membership entry applied.
    pub membership: Option<Vec<u8>>,
}

/// One shard's database.
pub struct Store {
    path: PathBuf,
    shard: ShardId,
    cache_size: usize,
    db: RwLock<Option<Arc<Database>>>,
    /// The write-ahead log, when this store logs its batches (only the shard thread locks it).
    wal: Mutex<Option<Wal>>,
    /// The held write transaction (logged stores; see the module doc). Lock order: `wal`, then `held`.
    held: Mutex<Option<Held>>,
    /// Answered batches are in the held transaction, not yet committed to redb.
    pending: AtomicBool,
    /// [`HOLD_TIME`] (tests lengthen it, so that a slow fsync does not end a hold they check).
    hold_time: Duration,
    log: Log,
    /// Fault injection: how many of the next batch transactions fail as if the disk had failed.
    injected_failures: AtomicU32,
    /// Fault injection: how many of the next commits fail after the batch was logged.
    late_failures: AtomicU32,
    /// Fault injection for tests: the free bytes `statvfs` reports (`u64::MAX`: ask it).
    #[cfg(test)]
    injected_free: std::sync::atomic::AtomicU64,
    /// Fault injection for tests: how many of the next checkpoints fail at their commit, as on a full disk.
    #[cfg(test)]
    injected_checkpoint_failures: AtomicU32,
    /// A write failed inside redb: the handle refuses everything (reads too) until it is closed and reopened.
    needs_reopen: AtomicBool,
    /// The held transaction holds applied entries of the shard's Raft log (cluster mode).
    holds_replicated: AtomicBool,
    /// Applied Raft entries were lost with a failed transaction: every later apply is refused, so the group stops
    /// and the restarted node applies them again from its log (a reopen alone would build on a file that lacks
    /// them).
    replicated_lost: AtomicBool,
    /// The last write failed for lack of space: each write first checks that space came back ([`Store::check_space`]).
    disk_full: AtomicBool,
}

impl Log {
    /// The log a store keeps after [`wal::recover`] opened and replayed it (every open replays, logged or not).
    fn keep(self, mut wal: Wal) -> Option<Wal> {
        wal.set_fsync(self == Log::Fsynced);
        (self != Log::Off).then_some(wal)
    }
}

/// Bytes the space check asks for beyond twice the batch's payload (redb's copy-on-write pages, metadata).
const SPACE_CHECK_MARGIN: usize = 1 << 20;

impl Store {
    /// Opens (or creates) the shard file with ONE redb open: redb repairs it if the last close was unclean, else
    /// every page checksum is verified; then its log is replayed, it is compacted when more than half of it is
    /// free space, and the tables are created. See `engine::open::open_checked`. `log`: whether and how batches are logged
    /// (see [`Store::apply_batch`]).
    pub fn open(path: PathBuf, shard: ShardId, cache_size: usize, log: Log) -> Result<Store> {
        let (db, wal) = open_checked(&path, shard, cache_size)?;
        Ok(Store {
            path,
            shard,
            cache_size,
            db: RwLock::new(Some(Arc::new(db))),
            wal: Mutex::new(log.keep(wal)),
            held: Mutex::new(None),
            pending: AtomicBool::new(false),
            hold_time: HOLD_TIME,
            log,
            injected_failures: AtomicU32::new(0),
            late_failures: AtomicU32::new(0),
            #[cfg(test)]
            injected_free: std::sync::atomic::AtomicU64::new(u64::MAX),
            #[cfg(test)]
            injected_checkpoint_failures: AtomicU32::new(0),
            needs_reopen: AtomicBool::new(false),
            holds_replicated: AtomicBool::new(false),
            replicated_lost: AtomicBool::new(false),
            disk_full: AtomicBool::new(false),
        })
    }

    /// The path of the shard file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The shard this store belongs to.
    pub fn shard(&self) -> ShardId {
        self.shard
    }

    fn db(&self) -> Result<Arc<Database>> {
        self.db
            .read()
            .expect("db lock is never held across a panic")
            .clone()
            .ok_or_else(|| Error::Unavailable(format!("shard {} is reopening its database", self.shard)))
    }

    /// A read transaction: a consistent snapshot of the whole file (for backups), with every answered batch.
    pub fn begin_snapshot(&self) -> Result<redb::ReadTransaction> {
        self.settle()?;
        self.db()?.begin_read().map_err(|e| storage(self.shard, "snapshot")(e.into()))
    }

    /// Reads one record of the committed state in its own read transaction. While [`Store::pending`], answered
    /// batches may be missing from it.
    pub fn get(&self, space: Space, key: &[u8]) -> Result<Option<Record>> {
        let err = storage(self.shard, "read");
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| err(e.into()))?;
        let t = txn.open_table(table(space)).map_err(|e| err(e.into()))?;
        let got = t.get(key).map_err(|e| err(e.into()))?;
        self.decode(got.as_ref().map(|g| g.value()))
    }

    /// Reads one record as the last answered batch left it: through the held transaction when there is one.
    /// For the shard thread, between batches (a reader thread would wait for the batch in flight).
    pub fn get_current(&self, space: Space, key: &[u8]) -> Result<Option<Record>> {
        let held = self.held.lock().expect("held lock is never held across a panic");
        let Some(h) = held.as_ref() else {
            drop(held);
            return self.get(space, key);
        };
        let err = storage(self.shard, "read");
        let t = h.txn.open_table(table(space)).map_err(|e| err(e.into()))?;
        let got = t.get(key).map_err(|e| err(e.into()))?;
        self.decode(got.as_ref().map(|g| g.value()))
    }

    fn decode(&self, stored: Option<&[u8]>) -> Result<Option<Record>> {
        stored
            .map(|v| Record::decode(Bytes::copy_from_slice(v)))
            .transpose()
            .map_err(|e| Error::Internal(format!("shard {}: damaged record: {e}", self.shard)))
    }

    /// Whether answered batches wait in the held transaction, so the committed state lacks them (module doc).
    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Commits the held transaction, if any (without an fsync: its batches are in the log), so the committed
    /// state holds every answered batch. Waits for a batch in flight. For readers of the committed state that
    /// need read-your-writes (listings, counts, backups).
    pub fn settle(&self) -> Result<()> {
        let mut held = self.held.lock().expect("held lock is never held across a panic");
        self.commit_held(&mut held)
    }

    /// Commits the held transaction if it is full ([`HOLD_BATCHES`](crate::engine::durability::HOLD_BATCHES),
    /// [`HOLD_BYTES`](crate::engine::durability::HOLD_BYTES) or [`HOLD_TIME`]). The shard
    /// thread calls it after answering each logged batch, so that no answer waits for the commit of the hold its
    /// batch filled. A failed commit reopens the store at once (its replay restores the held batches); the error
    /// is returned only when that reopen failed too, and the caller must retry it.
    pub fn end_full_hold(&self) -> Result<()> {
        let mut held = self.held.lock().expect("held lock is never held across a panic");
        if !held.as_ref().is_some_and(|h| h.full(self.hold_time)) {
            return Ok(());
        }
        let committed = self.commit_held(&mut held);
        drop(held);
        match committed {
            Err(e) => {
                tracing::error!(shard = self.shard.0, error = %e, "committing a full hold failed; reopening");
                self.reopen()
            }
            ok => ok,
        }
    }

    /// Tests: hold transactions for `t` instead of [`HOLD_TIME`], so that a slow fsync never ends a hold early.
    #[cfg(test)]
    pub(crate) fn hold_for(&mut self, t: Duration) {
        self.hold_time = t;
    }

    /// When the held transaction is due for its commit (the shard thread calls [`Store::settle`] then).
    pub fn held_due(&self) -> Option<Instant> {
        self.held.lock().expect("held lock is never held across a panic").as_ref().map(|h| h.since + self.hold_time)
    }

    fn commit_held(&self, held: &mut Option<Held>) -> Result<()> {
        if self.needs_reopen.load(Ordering::Acquire) {
            // Answered batches may be only in the log until the shard thread's reopen replays them.
            return Err(Error::Unavailable(format!("shard {} is reopening its database", self.shard)));
        }
        let Some(h) = held.take() else { return Ok(()) };
        if self.late_failures.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok() {
            drop(h); // aborted: redb never sees these batches, only the log (if any) holds them
            return Err(self.write_failed(Error::Internal(format!("shard {}: injected commit failure", self.shard))));
        }
        h.txn.commit().map_err(|e| self.write_failed(storage(self.shard, "commit")(e.into())))?;
        // Only now: a reader that sees `false` finds every answered batch in the committed state. After a failure
        // it stays true (the batches are only in the log) until the reopen has replayed them.
        self.pending.store(false, Ordering::Release);
        self.holds_replicated.store(false, Ordering::Release);
        Ok(())
    }

    /// Up to `limit` keys of `space` that start with `prefix` and sort strictly after `after`, ascending.
    pub fn list(&self, space: Space, prefix: &[u8], after: Option<&[u8]>, limit: usize) -> Result<Vec<Bytes>> {
        let err = storage(self.shard, "list");
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| err(e.into()))?;
        let t = txn.open_table(table(space)).map_err(|e| err(e.into()))?;
        let start: Bound<&[u8]> = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        let mut keys = Vec::with_capacity(limit.min(1024));
        for item in t.range::<&[u8]>((start, Bound::Unbounded)).map_err(|e| err(e.into()))? {
            if keys.len() >= limit {
                break;
            }
            let (k, _) = item.map_err(|e| err(e.into()))?;
            let k = k.value();
            if !k.starts_with(prefix) {
                break;
            }
            keys.push(Bytes::copy_from_slice(k));
        }
        Ok(keys)
    }

    /// Calls `f` on every record of `space` in key order from one read transaction, until `f` returns false.
    pub fn scan(&self, space: Space, mut f: impl FnMut(&[u8], Record) -> bool) -> Result<u64> {
        let err = storage(self.shard, "scan");
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| err(e.into()))?;
        let t = txn.open_table(table(space)).map_err(|e| err(e.into()))?;
        let mut n = 0;
        for item in t.iter().map_err(|e| err(e.into()))? {
            let (k, v) = item.map_err(|e| err(e.into()))?;
            let rec = Record::decode(Bytes::copy_from_slice(v.value()))
                .map_err(|e| Error::Internal(format!("shard {}: damaged record: {e}", self.shard)))?;
            n += 1;
            if !f(k.value(), rec) {
                break;
            }
        }
        Ok(n)
    }

    /// The largest key of `space` (documents use big-endian ids, so this is the highest id).
    pub fn last_key(&self, space: Space) -> Result<Option<Vec<u8>>> {
        let err = storage(self.shard, "read");
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| err(e.into()))?;
        let t = txn.open_table(table(space)).map_err(|e| err(e.into()))?;
        let last = t.last().map_err(|e| err(e.into()))?;
        Ok(last.map(|(k, _)| k.value().to_vec()))
    }

    /// Number of records in `space`.
    pub fn len(&self, space: Space) -> Result<u64> {
        let err = storage(self.shard, "read");
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| err(e.into()))?;
        let t = txn.open_table(table(space)).map_err(|e| err(e.into()))?;
        t.len().map_err(|e| err(e.into()))
    }

    /// The last revision handed out in this file: meta `rev`, or a later one only the log holds yet.
    pub fn last_rev(&self) -> Result<u64> {
        let err = storage(self.shard, "read");
        let logged = self.wal.lock().expect("wal lock is never held across a panic").as_ref().and_then(Wal::logged_rev);
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| err(e.into()))?;
        let t = txn.open_table(META).map_err(|e| err(e.into()))?;
        let rev = t.get(META_REV).map_err(|e| err(e.into()))?.map(|g| g.value());
        Ok(rev.unwrap_or(0).max(logged.unwrap_or(0)))
    }

    /// Applies `cmds` in order in ONE write transaction and commits once.
    ///
    /// Each command is checked against the state left by the commands before it (its precondition, a counter's
    /// overflow) and may fail alone. `Err` means the transaction itself failed: nothing of the batch is stored,
    /// and the caller must [`reopen`](Self::reopen) before writing again.
    ///
    /// A logged store writes the batch's changes to its log (and fdatasyncs them under [`Log::Fsynced`]) before
    /// the commit, which is then non-durable and may wait (held transaction): `Ok` means the log holds the batch.
    /// Without a log, `durable` selects an fsynced commit or redb's non-durable one.
    ///
    /// While the disk is full, the batch is first checked against the free space (`Store::check_space`); a
    /// refusal there (507) leaves the database untouched, so the shard keeps serving reads and needs no reopen.
    pub fn apply_batch<'c>(
        &self,
        cmds: impl Iterator<Item = &'c Command>,
        next_rev: &mut u64,
        durable: bool,
    ) -> Result<Vec<Outcome>> {
        let cmds: Vec<&Command> = cmds.collect();
        let weight = cmds.iter().map(|c| c.weight()).sum();
        // After a failure that lost a held transaction, its batches must be replayed before anything else.
        self.reopen()?;
        // Reads (a cache miss while batches are held, a RESP read) write nothing: a full disk never refuses them.
        let writes = cmds.iter().any(|c| !matches!(c, Command::Read { .. }));
        if self.log != Log::Off && writes {
            self.check_free(weight)?;
        }
        if self.disk_full.load(Ordering::Acquire) && writes {
            self.check_space(weight)?;
        }
        let applied = self.apply_batch_txn(&cmds, weight, next_rev, durable);
        if applied.is_err() && self.needs_reopen.load(Ordering::Acquire) {
            // At once: a held transaction lost with the batch holds answered batches that only the log has now,
            // and a log frame whose write failed and could not be cut off must be recorded as spent before a
            // crash could replay it (the reopen's replay does both). A failed reopen is retried by the shard.
            let _ = self.reopen();
        }
        applied
    }

    /// Records that a write failed inside redb (the handle must be reopened; after a full disk, later writes
    /// check the free space first), and returns the error.
    fn write_failed(&self, e: Error) -> Error {
        self.needs_reopen.store(true, Ordering::Release);
        // A held transaction with applied Raft entries is gone: the file lacks entries the group counts as applied.
        if self.holds_replicated.load(Ordering::Acquire) {
            self.replicated_lost.store(true, Ordering::Release);
        }
        self.disk_full.store(matches!(e, Error::InsufficientStorage(_)), Ordering::Release);
        e
    }

    /// Whether `bytes` (twice, plus a margin) can be written next to the shard file: writes and removes a probe
    /// file. Used only after a write failed for lack of space, so that the refused writes of a full disk are
    /// answered 507 without touching redb: a failed redb write poisons the handle, and reopening it repairs the
    /// whole file (a walk of every page: the larger the file, the longer), during which the shard cannot serve
    /// reads.
    fn check_space(&self, bytes: usize) -> Result<()> {
        use std::io::Write;
        let need = bytes.saturating_mul(2).saturating_add(SPACE_CHECK_MARGIN);
        let probe = self.path.with_file_name(format!(".space-check-{}", self.shard));
        let written = (|| {
            let mut f = std::fs::File::create(&probe)?;
            let zeros = vec![0u8; 64 << 10];
            let mut left = need;
            while left > 0 {
                let n = left.min(zeros.len());
                f.write_all(&zeros[..n])?;
                left -= n;
            }
            Ok::<(), std::io::Error>(())
        })();
        let _ = std::fs::remove_file(&probe);
        match written {
            Ok(()) => {
                self.disk_full.store(false, Ordering::Release);
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(122) => {
                Err(self.no_room(need, &e.to_string()))
            }
            Err(e) => {
                // Not a verdict on space (permissions, ...): let redb try and report.
                tracing::warn!(shard = self.shard.0, error = %e, "cannot check free space");
                Ok(())
            }
        }
    }

    /// A logged store's check before each batch, with `statvfs` (one system call, no disk I/O): the file system
    /// must have room for the batch three times (its log frame and redb's copy-on-write pages) plus a margin. A
    /// logged batch that fails inside redb for lack of space needs its log replayed before the shard can serve
    /// again, and the replay needs space too, so that failure must not be reached: refused here, the batch leaves
    /// everything untouched and the shard keeps serving reads.
    fn check_free(&self, bytes: usize) -> Result<()> {
        let need = bytes.saturating_mul(3).saturating_add(SPACE_CHECK_MARGIN);
        #[cfg(test)]
        let free = match self.injected_free.load(Ordering::Acquire) {
            u64::MAX => free_bytes(&self.path),
            injected => Some(injected),
        };
        #[cfg(not(test))]
        let free = free_bytes(&self.path);
        match free {
            Some(free) if free < need as u64 => Err(self.no_room(need, &format!("{free} bytes free"))),
            _ => Ok(()),
        }
    }

    fn no_room(&self, need: usize, why: &str) -> Error {
        Error::InsufficientStorage(format!(
            "shard {}: disk full: no room for {need} more bytes ({why}); free some space and retry",
            self.shard
        ))
    }

    fn apply_batch_txn(
        &self,
        cmds: &[&Command],
        weight: usize,
        next_rev: &mut u64,
        durable: bool,
    ) -> Result<Vec<Outcome>> {
        let storage_err = storage(self.shard, "write");
        let err = |e: redb::Error| self.write_failed(storage_err(e));
        let mut wal = self.wal.lock().expect("wal lock is never held across a panic");
        // Held for the whole batch: `settle` from a reader waits for it (module doc).
        let mut held = self.held.lock().expect("held lock is never held across a panic");
        if wal.as_ref().is_some_and(Wal::must_checkpoint) {
            // A frame whose write failed may be on disk: the file must hold its seq before anything else is logged.
            self.checkpoint(&mut wal, &mut held)?;
        }
        let db = self.db()?;
        let mut h = match held.take() {
            Some(h) => h,
            None => {
                let mut txn = db.begin_write().map_err(|e| err(e.into()))?;
                if !durable || wal.is_some() {
                    txn.set_durability(Durability::None).map_err(|e| err(e.into()))?;
                }
                Held { txn, batches: 0, bytes: 0, since: Instant::now() }
            }
        };
        // From here on, an error drops `h`: batches it held are then only in the log, and `write_failed` has
        // marked the store for the reopen that replays them.
        let mut outcomes = Vec::new();
        let mut rev = *next_rev;
        {
            let mut tables = Tables::new(&h.txn);
            for cmd in cmds {
                outcomes.push(apply_one(&mut tables, cmd, &mut rev).map_err(&err)?);
            }
        }
        if self.injected_failures.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1)).is_ok() {
            // Dropping the transaction aborts it: nothing of this batch reaches the file.
            return Err(self.write_failed(Error::Internal(format!("shard {}: injected commit failure", self.shard))));
        }
        let changed = outcomes.iter().any(|o| o.as_ref().is_ok_and(|(_, effect)| effect.changes()));
        if !changed {
            // Nothing to store (failed preconditions, unchanged documents, reads): no commit, no fsync.
            if h.batches > 0 {
                *held = Some(h);
            } else {
                h.txn.abort().map_err(|e| err(e.into()))?;
            }
            return Ok(outcomes);
        }
        let new_rev = (rev != *next_rev).then(|| rev - 1);
        // A logged batch's frame carries its revision; meta `rev` and `wal_seq` wait for the checkpoint (see the
        // module doc of `engine::wal`).
        if let (Some(new_rev), None) = (new_rev, wal.as_ref()) {
            let mut meta = h.txn.open_table(META).map_err(|e| err(e.into()))?;
            meta.insert(META_REV, new_rev).map_err(|e| err(e.into()))?;
        }
        if let Some(w) = wal.as_mut() {
            if let Err(e) = w.append(&outcomes, new_rev) {
                // Abort: redb never sees the batch. The log cut the frame off; if it could not, the frame may be
                // on disk all the same, and a crash must not replay a batch answered with an error.
                let must_checkpoint = w.must_checkpoint();
                let earlier = h.batches > 0;
                drop(h);
                let e = self.log_failed(e);
                if earlier {
                    // Answered batches went with the transaction: the reopen replays them from the log (and
                    // records a spent frame as held, so it is never replayed).
                    self.needs_reopen.store(true, Ordering::Release);
                } else if must_checkpoint {
                    // The file must record the spent frame before anything else is logged (a failed checkpoint
                    // is retried before the next batch), and the handle stays usable.
                    let _ = self.checkpoint(&mut wal, &mut held);
                }
                return Err(e);
            }
            h.batches += 1;
            h.bytes += weight;
            // Durable and about to be answered; redb commits it with later batches, or right after these
            // answers when it filled the hold ([`Store::end_full_hold`]; module doc).
            self.pending.store(true, Ordering::Release);
            *held = Some(h);
            *next_rev = rev;
            return Ok(outcomes);
        }
        drop(wal);
        *held = Some(h);
        let committed = self.commit_held(&mut held);
        drop(held);
        drop(db);
        if let Err(e) = committed {
            if !self.commit_landed(cmds, &outcomes, *next_rev, rev) {
                return Err(e);
            }
            tracing::warn!(shard = self.shard.0, error = %e, "commit reported a failure after it was stored; answered as stored");
        }
        *next_rev = rev;
        Ok(outcomes)
    }

    /// Whether a batch whose `commit()` failed is in the file all the same.
    ///
    /// A logged batch is: its frame was written to the log before the commit, and the reopen replays it.
    ///
    /// redb's commit can fail after the commit became durable: its post-commit step (freeing the pages the
    /// transaction replaced) allocates, so a full disk fails it (seen in `tests/disk_full.rs`). Answering such
    /// a batch with an error would be a lie, and a client retrying a counter increment would count it twice. So
    /// the file is reopened (it must be anyway) and checked: the batch is in it when the stored revision is the
    /// batch's last one (`first_rev..end_rev` were handed out in it; only this thread writes the file), or, for
    /// a batch of deletes only (which take no revision), when every key it deleted is gone.
    fn commit_landed(&self, cmds: &[&Command], outcomes: &[Outcome], first_rev: u64, end_rev: u64) -> bool {
        if let Err(e) = self.reopen() {
            tracing::error!(shard = self.shard.0, error = %e, "cannot reopen the shard after a failed commit");
            return false;
        }
        if self.log != Log::Off {
            return true;
        }
        if end_rev > first_rev {
            return self.last_rev().is_ok_and(|stored| stored == end_rev - 1);
        }
        cmds.iter().zip(outcomes).filter(|(_, o)| matches!(o, Ok((_, Change::Remove(..))))).all(|(c, _)| match c {
            Command::Delete { space, key, .. } => self.get(*space, key).is_ok_and(|r| r.is_none()),
            _ => false,
        })
    }

    /// Fault injection for tests: the next `n` batch transactions fail (the batch is rejected and the shard
    /// reopens its database, exactly as after a real I/O error).
    pub fn inject_commit_failures(&self, n: u32) {
        self.injected_failures.store(n, Ordering::Release);
    }

    /// Fault injection for tests: the next `n` redb commits fail after their batch was written to the log (a
    /// logged batch is then answered as stored: the reopen replays it); before it for a store without a log.
    pub fn inject_late_commit_failures(&self, n: u32) {
        self.late_failures.store(n, Ordering::Release);
    }

    /// Fault injection for tests: the next `n` log writes of a logged store put their frame on disk, then report
    /// a failure (the worst case: the batch is answered with an error, yet its frame is in the log); with
    /// `cut_fails`, cutting the frame off the log fails too.
    pub fn inject_log_failures(&self, n: u32, cut_fails: bool) {
        if let Some(w) = self.wal.lock().expect("wal lock is never held across a panic").as_mut() {
            w.injected_failures = n;
            w.injected_cut_failure = cut_fails;
        }
    }

    /// Fault injection for tests: the free-space check before each logged batch sees `n` bytes free.
    #[cfg(test)]
    pub(crate) fn inject_free_bytes(&self, n: u64) {
        self.injected_free.store(n, Ordering::Release);
    }

    /// Fault injection for tests: the next `n` checkpoints fail at their commit for lack of space (the handle
    /// must then be reopened, as after a real failed commit).
    #[cfg(test)]
    pub(crate) fn inject_checkpoint_failures(&self, n: u32) {
        self.injected_checkpoint_failures.store(n, Ordering::Release);
    }

    /// Whether and how this store logs its batches.
    pub fn log(&self) -> Log {
        self.log
    }

    /// `eventual`'s durability point ([`Log::Written`]): fdatasyncs the log, so every batch answered so far
    /// survives a power loss; `Ok(true)` when that took an fdatasync. A failed one is not retried (see
    /// [`Wal::sync`]): the store checkpoints instead, which makes the same batches durable through redb.
    pub fn sync_log(&self) -> Result<bool> {
        let mut wal = self.wal.lock().expect("wal lock is never held across a panic");
        let Some(w) = wal.as_mut() else { return Ok(false) };
        match w.sync() {
            Ok(synced) => Ok(synced),
            Err(e) => {
                tracing::error!(shard = self.shard.0, error = %e, "log fdatasync failed; checkpointing instead");
                drop(wal);
                self.flush().map(|()| true)
            }
        }
    }

    /// A durable commit: makes every earlier non-durable commit survive a crash. For a logged store this is the
    /// checkpoint, after which the log starts over.
    pub fn flush(&self) -> Result<()> {
        // A checkpoint over a lost held transaction would record its frames as held: replay them first.
        self.reopen()?;
        let mut wal = self.wal.lock().expect("wal lock is never held across a panic");
        let mut held = self.held.lock().expect("held lock is never held across a panic");
        self.checkpoint(&mut wal, &mut held)
    }

    /// The durable commit of [`Store::flush`] (of the held transaction, when there is one); it records that the
    /// file holds every logged frame (even one whose write failed: see [`crate::engine::wal`]), so the log can
    /// start over.
    fn checkpoint(&self, wal: &mut Option<Wal>, held: &mut Option<Held>) -> Result<()> {
        let storage_err = storage(self.shard, "flush");
        let err = |e: redb::Error| self.write_failed(storage_err(e));
        let db = self.db()?;
        let mut txn = match held.take() {
            Some(h) => h.txn,
            None => db.begin_write().map_err(|e| err(e.into()))?,
        };
        txn.set_durability(Durability::Immediate).map_err(|e| err(e.into()))?;
        if let Some(w) = wal.as_ref() {
            let mut meta = txn.open_table(META).map_err(|e| err(e.into()))?;
            meta.insert(META_WAL_SEQ, w.checkpoint_seq()).map_err(|e| err(e.into()))?;
            if let Some(rev) = w.logged_rev() {
                meta.insert(META_REV, rev).map_err(|e| err(e.into()))?;
            }
        }
        #[cfg(test)]
        if self
            .injected_checkpoint_failures
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
        {
            drop(txn);
            return Err(self.write_failed(Error::InsufficientStorage("injected checkpoint failure".into())));
        }
        txn.commit().map_err(|e| err(e.into()))?;
        self.pending.store(false, Ordering::Release);
        if let Some(w) = wal.as_mut() {
            w.rewind();
        }
        Ok(())
    }

    /// Bytes logged since the last checkpoint (`None` for a store that does not log).
    pub fn logged_bytes(&self) -> Option<u64> {
        self.wal.lock().expect("wal lock is never held across a panic").as_ref().map(Wal::live_bytes)
    }

    /// Records that writing the log failed (redb never saw the batch, so no reopen is needed; after a full disk,
    /// later writes check the free space first), and returns the error.
    fn log_failed(&self, e: std::io::Error) -> Error {
        let e = Error::storage(&format!("shard {}: writing the log", self.shard), e);
        self.disk_full.store(matches!(e, Error::InsufficientStorage(_)), Ordering::Release);
        e
    }

    /// Closes and reopens the database after a write failed inside redb (which then refuses every operation
    /// until reopened). Waits for readers to let go of the old handle. A no-op when the last failure never
    /// reached redb (a write refused by the free-space check).
    pub fn reopen(&self) -> Result<()> {
        let open = self.db.read().expect("db lock is never held across a panic").is_some();
        if open && !self.needs_reopen.load(Ordering::Acquire) {
            return Ok(());
        }
        // A held transaction's batches are in the log; the replay below brings them back.
        drop(self.held.lock().expect("held lock is never held across a panic").take());
        self.take_db()?;
        // The tables exist: the file was opened by `open_checked` before.
        let (db, _) = open_file(&self.path, self.shard, self.cache_size)
            .map_err(|e| Error::storage(&format!("shard {}: cannot reopen {}", self.shard, self.path.display()), e))?;
        // What the failed transaction may have left behind is redb's; what the log holds is replayed.
        let mut wal = self.wal.lock().expect("wal lock is never held across a panic");
        let spent = wal.as_ref().and_then(Wal::spent);
        let (recovered, _) = wal::recover(&db, &self.path, self.shard, spent)?;
        *wal = self.log.keep(recovered);
        drop(wal);
        *self.db.write().expect("db lock is never held across a panic") = Some(Arc::new(db));
        self.needs_reopen.store(false, Ordering::Release);
        self.pending.store(false, Ordering::Release);
        tracing::warn!(shard = self.shard.0, "shard database reopened after a failed transaction");
        Ok(())
    }

    /// Closes the database, waiting (up to 10 s) for readers to let go of it.
    fn take_db(&self) -> Result<()> {
        let old = self.db.write().expect("db lock is never held across a panic").take();
        let Some(mut old) = old else { return Ok(()) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match Arc::try_unwrap(old) {
                Ok(db) => {
                    drop(db);
                    return Ok(());
                }
                Err(still_shared) if Instant::now() < deadline => {
                    old = still_shared;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return Err(Error::Internal(format!("shard {}: readers hold the database", self.shard))),
            }
        }
    }

    // ---- a shard of a cluster: its file is the state machine of the shard's Raft group ----

    /// Applies committed entries of the shard's Raft log in ONE write transaction, each command checked and
    /// applied as in [`Store::apply_batch`], and records the last entry as applied (and the newest membership
    /// among them) in the same transaction. The transaction is held across calls like a logged batch's (module
    /// doc): the Raft log keeps the entries until a durable snapshot covers them, as the write-ahead log keeps a
    /// logged batch, so the commit can wait ([`Store::end_full_hold`], [`Store::settle`]) and is never fsynced.
    /// `Err` means the entries are not applied and the group must stop: the transaction failed, or applied
    /// entries were lost with an earlier one.
    pub fn apply_replicated(&self, entries: &[Replicated], next_rev: &mut u64) -> Result<Vec<Option<Outcome>>> {
        if self.replicated_lost.load(Ordering::Acquire) {
            return Err(Error::Unavailable(format!(
                "shard {}: applied entries were lost with a failed transaction; the node must restart to apply \
                 them again from its Raft log",
                self.shard
            )));
        }
        self.reopen()?;
        let storage_err = storage(self.shard, "apply");
        let err = |e: redb::Error| self.write_failed(storage_err(e));
        let db = self.db()?;
        let mut held = self.held.lock().expect("held lock is never held across a panic");
        let mut h = match held.take() {
            Some(h) => h,
            None => {
                let mut txn = db.begin_write().map_err(|e| err(e.into()))?;
                txn.set_durability(Durability::None).map_err(|e| err(e.into()))?;
                Held { txn, batches: 0, bytes: 0, since: Instant::now() }
            }
        };
        // From here on, an error drops `h` with whatever it held: `write_failed` then marks the entries lost.
        self.holds_replicated.store(true, Ordering::Release);
        let mut rev = *next_rev;
        let mut outcomes = Vec::with_capacity(entries.len());
        {
            let mut tables = Tables::new(&h.txn);
            for e in entries {
                outcomes.push(match &e.command {
                    Some(cmd) => Some(apply_one(&mut tables, cmd, &mut rev).map_err(&err)?),
                    None => None,
                });
            }
        }
        {
            let mut raft = h.txn.open_table(TABLE_RAFT).map_err(|e| err(e.into()))?;
            if let Some(last) = entries.last() {
                raft.insert(RAFT_APPLIED, &last.applied[..]).map_err(|e| err(e.into()))?;
            }
            if let Some(m) = entries.iter().rev().find_map(|e| e.membership.as_ref()) {
                raft.insert(RAFT_MEMBERSHIP, &m[..]).map_err(|e| err(e.into()))?;
            }
            if rev != *next_rev {
                let mut meta = h.txn.open_table(META).map_err(|e| err(e.into()))?;
                meta.insert(META_REV, rev - 1).map_err(|e| err(e.into()))?;
            }
        }
        h.batches += 1;
        h.bytes += entries.iter().filter_map(|e| e.command.as_ref()).map(Command::weight).sum::<usize>();
        // About to be answered: readers of the committed state go through the shard or settle first.
        self.pending.store(true, Ordering::Release);
        *held = Some(h);
        *next_rev = rev;
        Ok(outcomes)
    }

    /// A cluster shard's Raft state, as [`Store::apply_replicated`] recorded it (the held transaction committed
    /// first).
    pub fn raft_state(&self) -> Result<RaftState> {
        self.settle()?;
        let err = storage(self.shard, "read");
        let db = self.db()?;
        let txn = db.begin_read().map_err(|e| err(e.into()))?;
        let t = match txn.open_table(TABLE_RAFT) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(RaftState::default()),
            Err(e) => return Err(err(e.into())),
        };
        let get = |key: &str| t.get(key).map(|g| g.map(|v| v.value().to_vec())).map_err(|e| err(e.into()));
        Ok(RaftState { applied: get(RAFT_APPLIED)?, membership: get(RAFT_MEMBERSHIP)? })
    }

    /// Replaces the shard file with a copy of `from` (a Raft snapshot being installed) and opens the copy. For the
    /// shard thread. The copy is durable, under its final name, before the old file is gone.
    pub fn replace_file(&self, from: &Path) -> Result<()> {
        let io = |what: &str, e: std::io::Error| Error::storage(&format!("shard {}: {what}", self.shard), e);
        // The snapshot is newer than everything the held transaction applied.
        drop(self.held.lock().expect("held lock is never held across a panic").take());
        self.holds_replicated.store(false, Ordering::Release);
        self.take_db()?;
        let incoming = self.path.with_extension("redb.incoming");
        std::fs::copy(from, &incoming).map_err(|e| io("copying the snapshot", e))?;
        std::fs::File::open(&incoming).and_then(|f| f.sync_all()).map_err(|e| io("syncing the snapshot", e))?;
        std::fs::rename(&incoming, &self.path).map_err(|e| io("installing the snapshot", e))?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("syncing the data dir", e))?;
        }
        let (db, _) = open_file(&self.path, self.shard, self.cache_size)
            .map_err(|e| Error::storage(&format!("shard {}: opening the installed snapshot", self.shard), e))?;
        create_tables(&db, self.shard)?;
        *self.db.write().expect("db lock is never held across a panic") = Some(Arc::new(db));
        self.needs_reopen.store(false, Ordering::Release);
        self.pending.store(false, Ordering::Release);
        Ok(())
    }

    /// Closes the database cleanly (redb writes its allocator state, so the next open needs no repair).
    pub fn close(&self) {
        if let Err(e) = self.settle() {
            // Its batches are in the log: the next open replays them.
            tracing::error!(shard = self.shard.0, error = %e, "cannot commit the held transaction at close");
            drop(self.held.lock().expect("held lock is never held across a panic").take());
        }
        let old = self.db.write().expect("db lock is never held across a panic").take();
        drop(old);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{EtagMatch, Precondition, Reply, NOT_AN_INTEGER};
    use crate::engine::durability::{HOLD_BATCHES, HOLD_BYTES};
    use crate::record::counter_value;

    fn put(key: &str, value: &str, precondition: Precondition) -> Command {
        Command::kv_put(key.as_bytes(), value.as_bytes(), precondition)
    }

    fn absent() -> Precondition {
        Precondition { if_none_match: Some(EtagMatch::Any), ..Precondition::NONE }
    }

    fn exists() -> Precondition {
        Precondition { if_match: Some(EtagMatch::Any), ..Precondition::NONE }
    }

    #[test]
    fn batch_checks_each_command_against_the_ones_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.redb"), ShardId(0), 1 << 20, Log::Off).unwrap();
        let mut rev = store.last_rev().unwrap() + 1;
        let cmds = [put("a", "1", absent()), put("a", "2", absent()), put("a", "3", exists())];
        let out = store.apply_batch(cmds.iter(), &mut rev, true).unwrap();
        assert!(matches!(out[0], Ok((Reply::Stored { created: true, rev: 1 }, _))));
        assert!(matches!(out[1], Err(Error::PreconditionFailed(_))));
        assert!(matches!(out[2], Ok((Reply::Stored { created: false, rev: 2 }, _))));
        assert_eq!(&store.get(Space::Kv, b"a").unwrap().unwrap().value()[..], b"3");
        assert_eq!(store.last_rev().unwrap(), 2);
    }

    #[test]
    fn counter_overflow_fails_alone_and_keeps_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.redb"), ShardId(0), 1 << 20, Log::Off).unwrap();
        let mut rev = 1;
        let add = |d| Command::CounterAdd { name: Bytes::from_static(b"c"), delta: d };
        let cmds = [add(i64::MAX), add(1), add(-1)];
        let out = store.apply_batch(cmds.iter(), &mut rev, true).unwrap();
        assert!(matches!(out[1], Err(Error::BadRequest(_))));
        assert!(matches!(out[2], Ok((Reply::Counter(v), _)) if v == i64::MAX - 1));
    }

    fn kv(key: &str) -> Bytes {
        Bytes::copy_from_slice(key.as_bytes())
    }

    fn set(key: &str, value: &str, cond: crate::command::SetCond, get_old: bool) -> Command {
        Command::Set { key: kv(key), value: kv(value), cond, get_old }
    }

    fn replies(out: Vec<Outcome>) -> Vec<Result<Reply>> {
        out.into_iter().map(|o| o.map(|(r, _)| r)).collect()
    }

    #[test]
    fn redis_set_incr_and_read_see_the_commands_before_them() {
        use crate::command::SetCond::*;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.redb"), ShardId(0), 1 << 20, Log::Off).unwrap();
        let mut rev = 1;
        let read = |k: &str| Command::Read { space: Space::Kv, key: kv(k) };
        let incr = |k: &str, d| Command::KvIncr { key: kv(k), delta: d };
        let cmds = [
            set("a", "1", IfPresent, true),
            set("a", "1", IfAbsent, true),
            set("a", "2", IfAbsent, true),
            set("a", "5", Always, true),
            incr("a", 10),
            read("a"),
            incr("n", -3),
            set("s", "x", Always, false),
            incr("s", 1),
            incr("a", i64::MAX),
            set("z", "05", Always, false),
            incr("z", 1),
        ];
        let out = replies(store.apply_batch(cmds.iter(), &mut rev, true).unwrap());
        let set_reply = |written, old: Option<&str>| Ok(Reply::Set { written, old: old.map(kv) });
        assert_eq!(out[0], set_reply(false, None), "XX on an absent key writes nothing");
        assert_eq!(out[1], set_reply(true, None));
        assert_eq!(out[2], set_reply(false, Some("1")), "NX GET answers the old value without writing");
        assert_eq!(out[3], set_reply(true, Some("1")));
        assert_eq!(out[4], Ok(Reply::Counter(15)));
        assert!(matches!(&out[5], Ok(Reply::Value(Some(r))) if r.value_ref() == b"15"), "{:?}", out[5]);
        assert_eq!(out[6], Ok(Reply::Counter(-3)));
        assert_eq!(out[8], Err(Error::BadRequest(NOT_AN_INTEGER.into())));
        assert_eq!(out[9], Err(Error::BadRequest("increment or decrement would overflow".into())));
        assert_eq!(out[11], Err(Error::BadRequest(NOT_AN_INTEGER.into())), "05 is not an integer to Redis");
        assert_eq!(&store.get(Space::Kv, b"a").unwrap().unwrap().value()[..], b"15", "failed incr changed nothing");
        assert_eq!(&store.get(Space::Kv, b"s").unwrap().unwrap().value()[..], b"x");
    }

    #[test]
    fn a_batch_command_commits_together_and_keeps_each_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.redb"), ShardId(0), 1 << 20, Log::Off).unwrap();
        let mut rev = 1;
        let multi = Command::Batch(vec![
            set("x", "1", crate::command::SetCond::Always, false),
            Command::KvIncr { key: kv("x"), delta: 1 },
            Command::Delete { space: Space::Kv, key: kv("missing"), precondition: Precondition::NONE },
            Command::Read { space: Space::Kv, key: kv("x") },
        ]);
        let out = store.apply_batch([multi.clone()].iter(), &mut rev, true).unwrap();
        let Ok((Reply::Batch(each), effect)) = &out[0] else { panic!("{out:?}") };
        assert!(effect.changes());
        assert_eq!(each[1], Ok(Reply::Counter(2)));
        assert!(matches!(each[2], Err(Error::NotFound(_))), "a failed command fails alone: {:?}", each[2]);
        assert!(matches!(&each[3], Ok(Reply::Value(Some(r))) if r.value_ref() == b"2"));
        // A failed transaction fails the whole batch: nothing of it is stored.
        store.inject_commit_failures(1);
        let again = Command::Batch(vec![set("y", "1", crate::command::SetCond::Always, false)]);
        assert!(store.apply_batch([again].iter(), &mut rev, true).is_err());
        store.reopen().unwrap();
        assert!(store.get(Space::Kv, b"y").unwrap().is_none());
    }

    #[test]
    fn clear_removes_one_space_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.redb"), ShardId(0), 1 << 20, Log::Off).unwrap();
        let mut rev = 1;
        let cmds = [put("a", "1", Precondition::NONE), put("b", "1", Precondition::NONE)];
        store.apply_batch(cmds.iter(), &mut rev, true).unwrap();
        store.apply_batch([Command::CounterAdd { name: kv("c"), delta: 1 }].iter(), &mut rev, true).unwrap();
        let out = store.apply_batch([Command::Clear { space: Space::Kv }].iter(), &mut rev, true).unwrap();
        assert_eq!(replies(out), vec![Ok(Reply::Cleared(2))]);
        assert_eq!(store.len(Space::Kv).unwrap(), 0);
        assert_eq!(store.len(Space::Counter).unwrap(), 1);
    }

    #[test]
    fn list_respects_prefix_after_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.redb"), ShardId(0), 1 << 20, Log::Off).unwrap();
        let mut rev = 1;
        let cmds: Vec<_> = ["a/1", "a/2", "a/3", "b/1", "a"].iter().map(|k| put(k, "v", Precondition::NONE)).collect();
        store.apply_batch(cmds.iter(), &mut rev, true).unwrap();
        let l = store.list(Space::Kv, b"a/", None, 10).unwrap();
        assert_eq!(l, vec![Bytes::from("a/1"), Bytes::from("a/2"), Bytes::from("a/3")]);
        let l = store.list(Space::Kv, b"a/", Some(b"a/1"), 1).unwrap();
        assert_eq!(l, vec![Bytes::from("a/2")]);
        let l = store.list(Space::Kv, b"", Some(b"a/3"), 10).unwrap();
        assert_eq!(l, vec![Bytes::from("b/1")]);
    }

    #[test]
    fn an_injected_failure_rejects_the_batch_and_the_store_recovers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.redb"), ShardId(0), 1 << 20, Log::Off).unwrap();
        let mut rev = 1;
        store.inject_commit_failures(1);
        let cmds = [put("a", "1", Precondition::NONE)];
        assert!(store.apply_batch(cmds.iter(), &mut rev, true).is_err());
        assert!(store.get(Space::Kv, b"a").unwrap().is_none(), "nothing of a failed batch is stored");
        store.reopen().unwrap();
        store.apply_batch(cmds.iter(), &mut rev, true).unwrap();
        assert_eq!(&store.get(Space::Kv, b"a").unwrap().unwrap().value()[..], b"1");
    }

    #[test]
    fn an_unchanged_document_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.redb"), ShardId(0), 1 << 20, Log::Off).unwrap();
        let mut rev = 1;
        let doc = |v: &'static str| Command::Put {
            space: Space::Doc,
            key: Bytes::from_static(b"\0\0\0\0\0\0\0\x07"),
            value: Bytes::from_static(v.as_bytes()),
            content_type: Bytes::from_static(b"application/json"),
            precondition: Precondition::NONE,
            skip_if_unchanged: true,
        };
        let cmds = [doc("{\"a\":1}"), doc("{\"a\":1}"), doc("{\"a\":2}")];
        let out = store.apply_batch(cmds.iter(), &mut rev, true).unwrap();
        assert!(matches!(out[0], Ok((Reply::Stored { created: true, rev: 1 }, _))));
        assert!(matches!(out[1], Ok((Reply::Unchanged { rev: 1 }, Change::None))));
        assert!(matches!(out[2], Ok((Reply::Stored { created: false, rev: 2 }, _))));
        // A batch of unchanged writes only is not committed at all: the last revision on disk stays.
        let again = [doc("{\"a\":2}")];
        let out = store.apply_batch(again.iter(), &mut rev, true).unwrap();
        assert!(matches!(out[0], Ok((Reply::Unchanged { rev: 2 }, _))));
        assert_eq!(store.last_rev().unwrap(), 2);
    }

    /// `N` fresh temp dirs (a store's, and those of its crash images).
    fn temp_dirs<const N: usize>() -> [tempfile::TempDir; N] {
        std::array::from_fn(|_| tempfile::tempdir().unwrap())
    }

    /// What a `kill -9` at this instant would leave on disk: a copy of the store's files while it is open and idle
    /// (the copy reads what the process wrote, as the next start would; nothing more is flushed).
    fn crash_image(from: &Path, to: &Path, with_log: bool) -> PathBuf {
        std::fs::copy(from.join("s.redb"), to.join("s.redb")).unwrap();
        if with_log {
            std::fs::copy(from.join("s.wal"), to.join("s.wal")).unwrap();
        }
        to.join("s.redb")
    }

    /// What the last answered batch left (through a logged store's held transaction).
    fn value(store: &Store, space: Space, key: &str) -> Option<Vec<u8>> {
        store.get_current(space, key.as_bytes()).unwrap().map(|r| r.value().to_vec())
    }

    /// What the committed state holds.
    fn committed(store: &Store, key: &str) -> Option<Vec<u8>> {
        store.get(Space::Kv, key.as_bytes()).unwrap().map(|r| r.value().to_vec())
    }

    /// A logged store on the shard file `path` (the crash tests' subject, and its reopened crash images). Its
    /// held transaction is committed only by size or a settle, never by age: a slow test fsync changes nothing.
    fn open_logged(path: PathBuf) -> Store {
        open_holding(path, Log::Fsynced)
    }

    /// A store whose held transaction is committed only by size or a settle, never by age.
    fn open_holding(path: PathBuf, log: Log) -> Store {
        let mut store = Store::open(path, ShardId(0), 1 << 20, log).unwrap();
        store.hold_for(Duration::from_secs(3600));
        store
    }

    /// `key` = "1", in a batch of its own.
    fn put_alone(store: &Store, key: &str, rev: &mut u64) -> Result<Vec<Outcome>> {
        apply(store, &[put(key, "1", Precondition::NONE)], rev)
    }

    /// One batch as the shard thread runs it: applied, then (once answered) the hold ended if it is full.
    fn apply(store: &Store, cmds: &[Command], rev: &mut u64) -> Result<Vec<Outcome>> {
        let out = store.apply_batch(cmds.iter(), rev, true)?;
        store.end_full_hold().expect("ending a full hold (and the reopen after a failed one)");
        Ok(out)
    }

    /// Where the log frame that starts at `at` ends (28-byte header, payload length at bytes 8..12).
    fn frame_end(log: &[u8], at: usize) -> usize {
        at + 28 + u32::from_le_bytes(log[at + 8..at + 12].try_into().unwrap()) as usize
    }

    #[test]
    fn a_logged_batch_survives_a_crash_through_its_log() {
        let [dir, bare, image] = temp_dirs();
        let store = open_logged(dir.path().join("s.redb"));
        let mut rev = store.last_rev().unwrap() + 1;
        let cmds = [put("a", "1", Precondition::NONE), put("b", "1", Precondition::NONE)];
        store.apply_batch(cmds.iter(), &mut rev, true).unwrap();
        store.flush().unwrap();
        assert_eq!(store.logged_bytes(), Some(0), "a checkpoint starts the log over");
        let cmds = [
            put("a", "2", Precondition::NONE),
            Command::CounterAdd { name: kv("c"), delta: 5 },
            Command::Delete { space: Space::Kv, key: kv("b"), precondition: Precondition::NONE },
        ];
        store.apply_batch(cmds.iter(), &mut rev, true).unwrap();
        store.apply_batch([Command::CounterAdd { name: kv("c"), delta: -2 }].iter(), &mut rev, true).unwrap();
        assert!(store.logged_bytes().unwrap() > 0);

        // Without its log, the crash image holds only the checkpoint: redb committed the rest without an fsync.
        let without = open_logged(crash_image(dir.path(), bare.path(), false));
        assert_eq!(value(&without, Space::Kv, "a").as_deref(), Some(&b"1"[..]));
        assert!(value(&without, Space::Counter, "c").is_none());
        // With it, every acknowledged batch is replayed, revisions included.
        let after = open_logged(crash_image(dir.path(), image.path(), true));
        assert_eq!(value(&after, Space::Kv, "a").as_deref(), Some(&b"2"[..]));
        assert!(value(&after, Space::Kv, "b").is_none(), "the delete is replayed");
        assert_eq!(counter_value(&after.get(Space::Counter, b"c").unwrap().unwrap()), Some(3));
        assert_eq!(after.last_rev().unwrap(), rev - 1, "ETags handed out before the crash are never reused");
        // The replayed file is durable and its log starts over: a second crash loses nothing either.
        drop(after);
        let again = open_logged(image.path().join("s.redb"));
        assert_eq!(counter_value(&again.get(Space::Counter, b"c").unwrap().unwrap()), Some(3));
    }

    /// An `eventual` store: its frames are written, not fdatasynced, and marked so.
    fn open_written(path: PathBuf) -> Store {
        open_holding(path, Log::Written)
    }

    /// An `eventual` store in `dir` where each of `keys` was set to "1" in a batch of its own; and the next revision.
    fn written_with(dir: &Path, keys: &[&str]) -> (Store, u64) {
        let store = open_written(dir.join("s.redb"));
        let mut rev = store.last_rev().unwrap() + 1;
        for key in keys {
            put_alone(&store, key, &mut rev).unwrap();
        }
        (store, rev)
    }

    #[test]
    fn an_eventual_batch_is_answered_from_its_unsynced_log_frame_and_survives_a_process_crash() {
        let [dir, image] = temp_dirs();
        let (store, rev) = written_with(dir.path(), &["a", "b"]);
        assert!(store.logged_bytes().unwrap() > 0, "the batches went to the log");
        assert!(committed(&store, "a").is_none(), "and are held, not committed");
        assert_eq!(value(&store, Space::Kv, "b").as_deref(), Some(&b"1"[..]));
        let crashed = open_written(crash_image(dir.path(), image.path(), true));
        for key in ["a", "b"] {
            assert_eq!(value(&crashed, Space::Kv, key).as_deref(), Some(&b"1"[..]), "{key} replayed");
        }
        assert_eq!(crashed.last_rev().unwrap(), rev - 1);
    }

    #[test]
    fn a_power_loss_gap_in_an_eventual_log_drops_the_frames_after_it_for_good() {
        let [dir, image, again] = temp_dirs();
        let (_store, _) = written_with(dir.path(), &["a", "b", "c", "d"]);
        let path = crash_image(dir.path(), image.path(), true);
        // The page cache reached the disk out of order: the first frame ("a") never did, the next three did.
        let wal = image.path().join("s.wal");
        let mut log = std::fs::read(&wal).unwrap();
        let first_end = frame_end(&log, 0);
        log[..first_end].fill(0);
        std::fs::write(&wal, &log).unwrap();
        let crashed = open_written(path);
        for key in ["a", "b", "c", "d"] {
            assert!(value(&crashed, Space::Kv, key).is_none(), "{key}: nothing after the gap is replayed");
        }
        // The next write takes a seq above the dropped frames, so that after another crash they cannot follow it
        // as if they were its successors: its frame overwrites the gap, and frames 2 to 4 still lie behind it.
        let mut rev = crashed.last_rev().unwrap() + 1;
        put_alone(&crashed, "e", &mut rev).unwrap();
        let reopened = open_written(crash_image(image.path(), again.path(), true));
        assert_eq!(value(&reopened, Space::Kv, "e").as_deref(), Some(&b"1"[..]));
        for key in ["b", "c", "d"] {
            assert!(value(&reopened, Space::Kv, key).is_none(), "{key} came back from the dropped frames");
        }
        // A synced log with the same gap is damage, not a power loss: it is refused (see the damage tests).
    }

    #[test]
    fn a_failed_fdatasync_of_an_eventual_log_checkpoints_instead() {
        let [dir, image] = temp_dirs();
        let (store, _) = written_with(dir.path(), &["a", "b"]);
        store.wal.lock().unwrap().as_mut().unwrap().injected_sync_failure = true;
        assert!(store.sync_log().unwrap(), "the batches were made durable all the same");
        assert_eq!(store.logged_bytes(), Some(0), "by a checkpoint: the log starts over");
        // The shard file alone holds them now, without the log.
        let crashed = open_written(crash_image(dir.path(), image.path(), false));
        for key in ["a", "b"] {
            assert_eq!(value(&crashed, Space::Kv, key).as_deref(), Some(&b"1"[..]), "{key}");
        }
    }

    #[test]
    fn a_gap_in_what_the_eventual_log_fdatasynced_is_damage_and_after_it_a_power_loss() {
        let store_dir = tempfile::tempdir().unwrap();
        let (store, mut rev) = written_with(store_dir.path(), &["a", "b"]);
        assert!(store.sync_log().unwrap(), "frames 1 and 2 are fdatasynced");
        assert!(!store.sync_log().unwrap(), "nothing new to fdatasync");
        for key in ["c", "d"] {
            put_alone(&store, key, &mut rev).unwrap();
        }
        // `zero`: which frame (0-based) a power loss kept from the disk.
        let image_without = |zero: usize| {
            let image = tempfile::tempdir().unwrap();
            let path = crash_image(store_dir.path(), image.path(), true);
            let mut log = std::fs::read(image.path().join("s.wal")).unwrap();
            let start = (0..zero).fold(0, |at, _| frame_end(&log, at));
            let end = frame_end(&log, start);
            log[start..end].fill(0);
            std::fs::write(image.path().join("s.wal"), &log).unwrap();
            (image, path)
        };
        // Frame 2 was fdatasynced, and frame 3 says so: its loss is damage, whatever the durability.
        let (_image, path) = image_without(1);
        let Err(e) = Store::open(path, ShardId(0), 1 << 20, Log::Written) else { panic!("a synced frame was lost") };
        assert!(e.to_string().contains("is damaged"), "{e}");
        // Frame 3 was not: a power loss. What the fdatasync covered is replayed, frame 4 is dropped.
        let (_image, path) = image_without(2);
        let crashed = open_written(path);
        for (key, kept) in [("a", true), ("b", true), ("c", false), ("d", false)] {
            assert_eq!(value(&crashed, Space::Kv, key).is_some(), kept, "{key}");
        }
    }

    #[test]
    fn a_logged_batch_whose_commit_failed_is_stored_by_the_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_logged(dir.path().join("s.redb"));
        let mut rev = 1;
        put_alone(&store, "a", &mut rev).unwrap();
        store.inject_late_commit_failures(1);
        // The frame is durable, so the answer is success (the batch waits in the held transaction).
        let out = put_alone(&store, "b", &mut rev).unwrap();
        assert!(matches!(out[0], Ok((Reply::Stored { created: true, rev: 2 }, _))), "{out:?}");
        // The held transaction's commit fails: both batches are then only in the log, and nothing is committed
        // over them before the reopen, whose replay brings them back.
        assert!(store.settle().is_err());
        assert!(matches!(store.settle(), Err(Error::Unavailable(_))), "a settle before the reopen");
        store.reopen().unwrap();
        assert!(!store.pending());
        for k in ["a", "b"] {
            assert_eq!(committed(&store, k).as_deref(), Some(&b"1"[..]), "{k}");
        }
        assert_eq!(store.last_rev().unwrap(), 2);
        // A commit that fails when the hold ends by size: the batch that filled it is answered as stored too.
        store.inject_late_commit_failures(1);
        for i in 0..HOLD_BATCHES {
            put_alone(&store, &format!("f{i}"), &mut rev).unwrap();
        }
        assert!(!store.pending(), "the reopen replayed them");
        assert!(committed(&store, "f0").is_some());
        put_alone(&store, "c", &mut rev).unwrap();
        let image = tempfile::tempdir().unwrap();
        let crashed = open_logged(crash_image(dir.path(), image.path(), true));
        for k in ["a", "b", "c"] {
            assert_eq!(value(&crashed, Space::Kv, k).as_deref(), Some(&b"1"[..]), "{k}");
        }
        // Without a log the same failure is a failed batch: nothing of it is stored.
        let plain = tempfile::tempdir().unwrap();
        let store = Store::open(plain.path().join("s.redb"), ShardId(0), 1 << 20, Log::Off).unwrap();
        store.inject_late_commit_failures(1);
        assert!(put_alone(&store, "b", &mut rev).is_err());
        assert!(value(&store, Space::Kv, "b").is_none());
    }

    #[test]
    fn a_reopen_replays_frames_the_file_already_holds_and_a_checkpoint_records_the_revision() {
        let [dir, image] = temp_dirs();
        let store = open_logged(dir.path().join("s.redb"));
        let mut rev = 1;
        let add = |delta| Command::CounterAdd { name: kv("c"), delta };
        store.apply_batch([add(5)].iter(), &mut rev, true).unwrap();
        store.flush().unwrap();
        // Committed (by the settle below) without touching meta: the file holds them beyond its `wal_seq`.
        store.apply_batch([add(2), put("a", "1", Precondition::NONE)].iter(), &mut rev, true).unwrap();
        let del = Command::Delete { space: Space::Kv, key: kv("a"), precondition: Precondition::NONE };
        store.apply_batch([add(3), del].iter(), &mut rev, true).unwrap();
        store.settle().unwrap();
        assert_eq!(store.last_rev().unwrap(), rev - 1, "the log's revision counts before any checkpoint");
        store.inject_commit_failures(1);
        assert!(put_alone(&store, "x", &mut rev).is_err());
        store.reopen().unwrap();
        // Replaying those frames again over them changes nothing: frames hold outcomes, not increments.
        assert_eq!(counter_value(&store.get(Space::Counter, b"c").unwrap().unwrap()), Some(10));
        assert!(value(&store, Space::Kv, "a").is_none());
        assert!(value(&store, Space::Kv, "x").is_none(), "the failed batch is not stored");
        assert_eq!(store.last_rev().unwrap(), rev - 1);
        // A later batch and a checkpoint: the file alone (no log) then holds the last revision handed out.
        put_alone(&store, "y", &mut rev).unwrap();
        store.flush().unwrap();
        let crashed = open_logged(crash_image(dir.path(), image.path(), false));
        assert_eq!(crashed.last_rev().unwrap(), rev - 1, "ETags handed out before the crash are never reused");
        assert_eq!(counter_value(&crashed.get(Space::Counter, b"c").unwrap().unwrap()), Some(10));
        assert_eq!(value(&crashed, Space::Kv, "y").as_deref(), Some(&b"1"[..]));
    }

    #[test]
    fn a_log_missing_frames_the_file_needs_is_refused_as_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_logged(dir.path().join("s.redb"));
        let mut rev = 1;
        put_alone(&store, "a", &mut rev).unwrap();
        put_alone(&store, "b", &mut rev).unwrap();
        let image = tempfile::tempdir().unwrap();
        let path = crash_image(dir.path(), image.path(), true);
        // Drop the first frame: the log now starts at seq 2.
        let log = std::fs::read(image.path().join("s.wal")).unwrap();
        std::fs::write(image.path().join("s.wal"), &log[frame_end(&log, 0)..]).unwrap();
        let Err(e) = Store::open(path, ShardId(0), 1 << 20, Log::Fsynced) else {
            panic!("a log with a gap was replayed")
        };
        assert!(e.to_string().contains("is damaged"), "{e}");
    }

    #[test]
    fn a_log_damaged_in_the_middle_is_refused_and_moving_it_away_starts_from_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_logged(dir.path().join("s.redb"));
        let mut rev = 1;
        for key in ["a", "b", "c"] {
            put_alone(&store, key, &mut rev).unwrap();
        }
        let image = tempfile::tempdir().unwrap();
        let path = crash_image(dir.path(), image.path(), true);
        // Flip the last byte of the second frame (its payload: the record of "b"); the third frame stays intact.
        let wal = image.path().join("s.wal");
        let mut log = std::fs::read(&wal).unwrap();
        let second_end = frame_end(&log, frame_end(&log, 0));
        log[second_end - 1] ^= 0x01;
        std::fs::write(&wal, &log).unwrap();
        let Err(e) = Store::open(path.clone(), ShardId(0), 1 << 20, Log::Fsynced) else {
            panic!("a log damaged in the middle was replayed up to the damage, silently dropping the frames after it")
        };
        assert!(e.to_string().contains("is damaged") && e.to_string().contains("move the log away"), "{e}");
        // The way out the message gives: without the log, the file opens at its last checkpoint.
        std::fs::rename(&wal, image.path().join("s.wal.damaged")).unwrap();
        let reopened = open_logged(path);
        assert!(value(&reopened, Space::Kv, "c").is_none(), "only the checkpoint's state");
    }

    #[test]
    fn a_batch_whose_log_write_failed_never_comes_back() {
        for cut_fails in [false, true] {
            for held_before in [false, true] {
                log_write_failure(cut_fails, held_before);
            }
        }
    }

    /// `held_before`: the failed batch follows an answered one in the held transaction (which the failure
    /// loses, so the store reopens and replays it), or comes alone (the handle stays open).
    fn log_write_failure(cut_fails: bool, held_before: bool) {
        let dir = tempfile::tempdir().unwrap();
        let store = open_logged(dir.path().join("s.redb"));
        let mut rev = 1;
        put_alone(&store, "a", &mut rev).unwrap();
        if !held_before {
            store.settle().unwrap();
        }
        // The frame reaches the disk, then the write reports a failure: the batch is answered with an error. The
        // log cuts the frame off, or (cut_fails) the store checkpoints past it.
        store.inject_log_failures(1, cut_fails);
        assert!(put_alone(&store, "b", &mut rev).is_err());
        assert!(value(&store, Space::Kv, "b").is_none());
        assert_eq!(committed(&store, "a").as_deref(), Some(&b"1"[..]), "the answered batch is committed");
        let image = tempfile::tempdir().unwrap();
        let crashed = open_logged(crash_image(dir.path(), image.path(), true));
        assert_eq!(value(&crashed, Space::Kv, "a").as_deref(), Some(&b"1"[..]));
        assert!(value(&crashed, Space::Kv, "b").is_none(), "a crash replayed a batch that was answered with an error");
        // Later batches are logged and replayed as usual.
        put_alone(&store, "c", &mut rev).unwrap();
        let image = tempfile::tempdir().unwrap();
        let crashed = open_logged(crash_image(dir.path(), image.path(), true));
        assert_eq!(value(&crashed, Space::Kv, "c").as_deref(), Some(&b"1"[..]));
        assert!(value(&crashed, Space::Kv, "b").is_none());
    }

    #[test]
    fn a_logged_store_holds_answered_batches_until_a_settle_and_a_crash_keeps_them() {
        let [dir, image] = temp_dirs();
        let store = open_logged(dir.path().join("s.redb"));
        let mut rev = 1;
        put_alone(&store, "a", &mut rev).unwrap();
        let del = Command::Delete { space: Space::Kv, key: kv("a"), precondition: Precondition::NONE };
        store.apply_batch([put("b", "2", Precondition::NONE), del].iter(), &mut rev, true).unwrap();
        // Answered, in the log, in the held transaction; the committed state does not have them yet.
        assert!(store.pending());
        assert!(committed(&store, "b").is_none(), "committed before the hold ended");
        assert_eq!(value(&store, Space::Kv, "b").as_deref(), Some(&b"2"[..]));
        assert!(value(&store, Space::Kv, "a").is_none());
        // A crash now: the log brings back every answered batch.
        let crashed = open_logged(crash_image(dir.path(), image.path(), true));
        assert_eq!(committed(&crashed, "b").as_deref(), Some(&b"2"[..]));
        assert!(committed(&crashed, "a").is_none());
        // A settle commits them; a batch of reads only keeps a hold going without committing it.
        store.settle().unwrap();
        assert!(!store.pending());
        assert!(committed(&store, "b").is_some());
        put_alone(&store, "c", &mut rev).unwrap();
        store.apply_batch([Command::Read { space: Space::Kv, key: kv("c") }].iter(), &mut rev, true).unwrap();
        assert!(store.pending() && committed(&store, "c").is_none());
        // The hold ends by itself after HOLD_BATCHES batches; a checkpoint commits a hold durably.
        for i in 1..HOLD_BATCHES {
            assert!(store.pending(), "the hold ended after {i} batches");
            put_alone(&store, &format!("k{i}"), &mut rev).unwrap();
        }
        assert!(!store.pending() && committed(&store, "c").is_some());
        // It also ends once it holds HOLD_BYTES of commands: two batches of half that each.
        let half = "x".repeat(HOLD_BYTES / 2);
        apply(&store, &[put("big1", &half, Precondition::NONE)], &mut rev).unwrap();
        assert!(store.pending(), "half the byte bound ended the hold");
        apply(&store, &[put("big2", &half, Precondition::NONE)], &mut rev).unwrap();
        assert!(!store.pending() && committed(&store, "big1").is_some(), "the byte bound did not end the hold");
        put_alone(&store, "d", &mut rev).unwrap();
        store.flush().unwrap();
        assert!(!store.pending());
        let image = tempfile::tempdir().unwrap();
        let crashed = open_logged(crash_image(dir.path(), image.path(), false));
        assert!(committed(&crashed, "d").is_some(), "the checkpoint holds the held batch");
    }

    #[test]
    fn a_failed_batch_after_held_ones_keeps_them_through_the_reopen() {
        let [dir, image] = temp_dirs();
        let store = open_logged(dir.path().join("s.redb"));
        let mut rev = 1;
        put_alone(&store, "a", &mut rev).unwrap();
        put_alone(&store, "b", &mut rev).unwrap();
        store.inject_commit_failures(1);
        assert!(put_alone(&store, "x", &mut rev).is_err());
        // The failed batch took the held transaction with it; the store reopened at once and replayed the log.
        assert!(!store.pending());
        for k in ["a", "b"] {
            assert!(committed(&store, k).is_some(), "{k} lost with the held transaction");
        }
        assert!(value(&store, Space::Kv, "x").is_none());
        put_alone(&store, "c", &mut rev).unwrap();
        store.flush().unwrap();
        let crashed = open_logged(crash_image(dir.path(), image.path(), false));
        for k in ["a", "b", "c"] {
            assert!(committed(&crashed, k).is_some(), "{k} after a checkpoint");
        }
        assert!(committed(&crashed, "x").is_none());
    }

    #[test]
    fn a_full_disk_refuses_writes_but_never_reads_served_by_the_shard() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_logged(dir.path().join("s.redb"));
        let mut rev = 1;
        put_alone(&store, "a", &mut rev).unwrap();
        store.inject_free_bytes(0);
        let err = put_alone(&store, "b", &mut rev).expect_err("no room for a write");
        assert!(matches!(err, Error::InsufficientStorage(_)), "{err:?}");
        // A cache miss while "a" is held is read by the shard: answered, not refused for lack of space.
        assert!(store.pending());
        let out = store.apply_batch([Command::Read { space: Space::Kv, key: kv("a") }].iter(), &mut rev, true).unwrap();
        assert!(matches!(&out[0], Ok((Reply::Value(Some(r)), _)) if r.value_ref() == b"1"), "{out:?}");
    }

    // ---- idempotent writes (see `engine::requests`) ----

    fn once(request: u128, at_ms: u64, cmd: Command) -> Command {
        Command::Idempotent { request, at_ms, command: Box::new(cmd) }
    }

    /// An idempotent write alone in its batch: its command's outcome, and whether it was a replay.
    fn apply_once(store: &Store, cmd: Command, rev: &mut u64) -> (Result<Reply>, bool) {
        let mut out = apply(store, &[cmd], rev).unwrap();
        match out.pop() {
            Some(Ok((Reply::Idempotent { outcome, replayed, .. }, effect))) => {
                assert_eq!(effect.changes(), !replayed, "a replay changes nothing, a first write records: {effect:?}");
                (*outcome, replayed)
            }
            other => panic!("an idempotent write answered {other:?}"),
        }
    }

    fn counter(store: &Store, name: &str) -> Option<i64> {
        store.get_current(Space::Counter, name.as_bytes()).unwrap().and_then(|r| counter_value(&r))
    }

    /// Rows of the two request tables (they always agree).
    fn recorded(store: &Store) -> u64 {
        use crate::engine::schema::{TABLE_REQUESTS, TABLE_REQUEST_TIMES};
        store.settle().unwrap();
        let txn = store.db().unwrap().begin_read().unwrap();
        let by_id = txn.open_table(TABLE_REQUESTS).unwrap().len().unwrap();
        assert_eq!(txn.open_table(TABLE_REQUEST_TIMES).unwrap().len().unwrap(), by_id);
        by_id
    }

    const T0: u64 = 1_700_000_000_000;

    #[test]
    fn an_idempotent_write_is_applied_once_and_a_retry_gets_the_first_outcome() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.redb"), ShardId(0), 1 << 20, Log::Off).unwrap();
        let mut rev = 1;
        let first = apply_once(&store, once(1, T0, put("a", "1", Precondition::NONE)), &mut rev);
        assert_eq!(first, (Ok(Reply::Stored { created: true, rev: 1 }), false));
        apply(&store, &[put("a", "2", Precondition::NONE)], &mut rev).unwrap();
        // The retry is answered the first outcome (created, ETag 1) and does not overwrite the later value.
        let retry = apply_once(&store, once(1, T0 + 1000, put("a", "1", Precondition::NONE)), &mut rev);
        assert_eq!(retry, (Ok(Reply::Stored { created: true, rev: 1 }), true));
        assert_eq!(value(&store, Space::Kv, "a").as_deref(), Some(&b"2"[..]));
        // A failure is an outcome too: the retry fails the same way though its condition would hold now.
        let failed = apply_once(&store, once(2, T0, put("b", "x", exists())), &mut rev);
        assert!(matches!(failed, (Err(Error::PreconditionFailed(_)), false)), "{failed:?}");
        apply(&store, &[put("b", "1", Precondition::NONE)], &mut rev).unwrap();
        let retry = apply_once(&store, once(2, T0 + 1, put("b", "x", exists())), &mut rev);
        assert_eq!(retry, (failed.0, true));
        assert_eq!(value(&store, Space::Kv, "b").as_deref(), Some(&b"1"[..]));
        // An increment retried counts once; another request counts again.
        let add = || Command::CounterAdd { name: kv("c"), delta: 5 };
        for _ in 0..3 {
            assert_eq!(apply_once(&store, once(3, T0, add()), &mut rev).0, Ok(Reply::Counter(5)));
        }
        assert_eq!(apply_once(&store, once(4, T0, add()), &mut rev), (Ok(Reply::Counter(10)), false));
        assert_eq!(counter(&store, "c"), Some(10));
        // Within one batch too: the second is answered from the first's record.
        let out = apply(&store, &[once(5, T0, add()), once(5, T0, add())], &mut rev).unwrap();
        assert!(matches!(&out[1], Ok((Reply::Idempotent { replayed: true, .. }, _))), "{out:?}");
        assert_eq!(counter(&store, "c"), Some(15));
        assert_eq!(recorded(&store), 5);
    }

    #[test]
    fn a_recorded_request_expires_after_the_window_and_writes_remove_expired_ones_a_few_at_a_time() {
        use crate::command::IDEMPOTENCY_WINDOW_MS as WINDOW;
        use crate::engine::requests::EXPIRE_PER_WRITE;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("s.redb"), ShardId(0), 1 << 20, Log::Off).unwrap();
        let mut rev = 1;
        let add = || Command::CounterAdd { name: kv("c"), delta: 1 };
        assert_eq!(apply_once(&store, once(1, T0, add()), &mut rev), (Ok(Reply::Counter(1)), false));
        // At the end of the window it is still a retry; a command made earlier (another node's clock) too.
        assert_eq!(apply_once(&store, once(1, T0 + WINDOW, add()), &mut rev), (Ok(Reply::Counter(1)), true));
        assert_eq!(apply_once(&store, once(1, T0 - 5000, add()), &mut rev), (Ok(Reply::Counter(1)), true));
        // Past it, the request is new again, and its new record answers the next retry.
        let later = T0 + WINDOW + 1;
        assert_eq!(apply_once(&store, once(1, later, add()), &mut rev), (Ok(Reply::Counter(2)), false));
        assert_eq!(apply_once(&store, once(1, later + 1, add()), &mut rev), (Ok(Reply::Counter(2)), true));
        assert_eq!(recorded(&store), 1, "the expired record was replaced");

        // 100 more requests, then writes when all but the newest have expired: each write removes at most
        // EXPIRE_PER_WRITE expired records, oldest first.
        for i in 0..100u64 {
            assert!(!apply_once(&store, once(1000 + u128::from(i), later + i, add()), &mut rev).1);
        }
        assert_eq!(recorded(&store), 101);
        let much_later = later + 99 + WINDOW;
        assert!(!apply_once(&store, once(2000, much_later, add()), &mut rev).1);
        assert_eq!(recorded(&store), 101 - EXPIRE_PER_WRITE as u64 + 1, "the oldest 64 and nothing else");
        assert!(apply_once(&store, once(1099, much_later, add()), &mut rev).1, "the newest still answers");
        assert!(!apply_once(&store, once(2001, much_later, add()), &mut rev).1);
        assert_eq!(recorded(&store), 3, "1099 and the two made a window later");
    }

    #[test]
    fn recorded_requests_survive_a_crash_through_the_log_and_travel_in_a_copy() {
        use crate::command::IDEMPOTENCY_WINDOW_MS as WINDOW;
        let [dir, image, copy] = temp_dirs();
        let store = open_logged(dir.path().join("s.redb"));
        let mut rev = 1;
        for (request, at_ms, key) in [(1, T0, "a"), (2, T0, "b"), (3, T0 + WINDOW + 1, "c"), (4, T0 + WINDOW + 1, "d")]
        {
            // Request 3, a window later, expires (removes) the records of 1 and 2.
            let first = apply_once(&store, once(request, at_ms, put(key, "1", Precondition::NONE)), &mut rev);
            assert!(matches!(first, (Ok(Reply::Stored { created: true, .. }), false)), "{first:?}");
        }
        assert!(store.pending(), "only the log holds these batches");
        // A crash: the replayed log brings back the records and their removal.
        let crashed = open_logged(crash_image(dir.path(), image.path(), true));
        let mut rev = crashed.last_rev().unwrap() + 1;
        assert_eq!(recorded(&crashed), 2);
        let retry = apply_once(&crashed, once(4, T0 + WINDOW + 2, put("d", "2", Precondition::NONE)), &mut rev);
        assert_eq!(retry, (Ok(Reply::Stored { created: true, rev: 4 }), true));
        assert_eq!(value(&crashed, Space::Kv, "d").as_deref(), Some(&b"1"[..]));
        let expired = apply_once(&crashed, once(1, T0 + WINDOW + 2, put("a", "2", Precondition::NONE)), &mut rev);
        assert_eq!(expired, (Ok(Reply::Stored { created: false, rev: 5 }), false));
        // A copy (a backup, a Raft snapshot) carries the records: a replica installing it answers the retry.
        let txn = crashed.begin_snapshot().unwrap();
        crate::engine::copy::copy_file(&txn, &copy.path().join("s.redb"), crashed.last_rev().unwrap()).unwrap();
        drop(txn);
        let replica = Store::open(copy.path().join("s.redb"), ShardId(0), 1 << 20, Log::Off).unwrap();
        let mut rev = replica.last_rev().unwrap() + 1;
        let retry = apply_once(&replica, once(4, T0 + WINDOW + 3, put("d", "3", Precondition::NONE)), &mut rev);
        assert_eq!(retry, (Ok(Reply::Stored { created: true, rev: 4 }), true));
    }
}
