//! A shard's part in a consistent backup: between batches, the worker meets every other shard at a
//! [`Rendezvous`] (so no shard commits while the snapshots are opened), opens a redb read transaction, meets them
//! again and hands the [`Snapshot`] over. The backup itself (copying, checksums) is `ops::backup`.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use redb::ReadTransaction;

use crate::engine::store::Store;
use crate::error::Result;
use crate::placement::ShardId;

/// How long shards wait for each other at a rendezvous before the backup is abandoned.
pub const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(10);

/// A reusable meeting point for `n` shard workers, with a timeout and an abandon switch, so one stuck or
/// unreachable shard can never leave the others paused forever.
pub struct Rendezvous {
    n: usize,
    state: Mutex<(usize, usize, bool)>, // (arrived in this phase, phase number, abandoned)
    cv: Condvar,
}

impl Rendezvous {
    /// A rendezvous for `n` parties.
    pub fn new(n: usize) -> Arc<Rendezvous> {
        Arc::new(Rendezvous { n, state: Mutex::new((0, 0, false)), cv: Condvar::new() })
    }

    /// Waits until all `n` parties arrived (true), or the rendezvous was abandoned or timed out (false).
    pub fn meet(&self) -> bool {
        let deadline = Instant::now() + RENDEZVOUS_TIMEOUT;
        let mut s = self.state.lock().expect("rendezvous lock never poisoned");
        if s.2 {
            return false;
        }
        let phase = s.1;
        s.0 += 1;
        if s.0 == self.n {
            s.0 = 0;
            s.1 += 1;
            self.cv.notify_all();
            return true;
        }
        while s.1 == phase && !s.2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                s.2 = true;
                self.cv.notify_all();
                return false;
            }
            s = self.cv.wait_timeout(s, left).expect("rendezvous lock never poisoned").0;
        }
        s.1 != phase
    }

    /// Releases every waiter with `false` (used when a shard could not be asked).
    pub fn abandon(&self) {
        self.state.lock().expect("rendezvous lock never poisoned").2 = true;
        self.cv.notify_all();
    }
}

/// What a shard worker is asked to do for a backup.
pub struct SnapshotRequest {
    /// Where all shards meet (twice: paused, then snapshots opened).
    pub rendezvous: Arc<Rendezvous>,
    /// Where the worker sends its snapshot and the last revision handed out in it.
    pub reply: crossbeam_channel::Sender<(ShardId, Result<Snapshot>)>,
}

/// A shard's snapshot, and its last revision: under `immediate`, the snapshot's meta `rev` lags behind until the
/// next checkpoint (the log holds the rest, see `wal`), and a restored file must never hand out a revision again.
pub struct Snapshot {
    /// The read transaction: the shard file as of the rendezvous.
    pub txn: ReadTransaction,
    /// The last revision handed out in the shard.
    pub last_rev: u64,
}

impl SnapshotRequest {
    /// Run by the shard worker between batches: meet, open the snapshot, meet again, hand it over.
    pub fn serve(self, store: &Store) {
        if !self.rendezvous.meet() {
            return;
        }
        let snapshot = store.begin_snapshot().and_then(|txn| Ok(Snapshot { txn, last_rev: store.last_rev()? }));
        if !self.rendezvous.meet() {
            return;
        }
        let _ = self.reply.send((store.shard(), snapshot));
    }
}
