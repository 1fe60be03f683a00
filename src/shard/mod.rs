//! A shard: one OS thread, its worker, that owns one [`Store`] and is the only writer of its file and of its keys
//! in the cache. Beside the worker's loop (below): the [`handle`] the node sends through, start-up [`readiness`],
//! the shard's side of a backup ([`snapshot`]) and the read [`cache`] all shards share.
//!
//! # Loop
//! 1. Warm-up: scan the file into the cache (up to its budget), then report ready.
//! 2. Block for the first message, then take everything already queued without waiting, up to `max_batch`
//!    requests or `max_batch_bytes` (group commit).
//! 3. Apply the batch's writes in arrival order in ONE write transaction. The batch's changes go to the shard's
//!    write-ahead log as one frame (see [`crate::engine::wal`]), fdatasynced under `immediate`, only written under
//!    `eventual`; the transaction may be held open for the next batches and committed with them (see
//!    [`crate::engine::store`]; the loop then wakes up in time to commit it). A store without a log (tests, tools)
//!    commits each batch instead.
//! 4. Only after the log write (or the commit): update the cache in commit order, then answer every writer. A
//!    failed transaction answers every writer of the batch with the error, reopens the database, and changes no
//!    cache entry.
//! 5. Serve the batch's cache fills from the state the last answered batch left.
//! 6. Checkpoint (a durable redb commit) every [`CHECKPOINT_BYTES`](crate::engine::durability::CHECKPOINT_BYTES)
//!    of log; under `eventual`, also fdatasync the log every `FLUSH_INTERVAL_MS`. Commit the held transaction if
//!    the batch filled it ([`Store::end_full_hold`]). Under `immediate` nothing waits for a checkpoint (each frame
//!    was fdatasynced), so none comes on a timer: a checkpoint writes out every B-tree page touched since the
//!    last one and stalls its shard meanwhile, so on a timer it would set the p99 of durable PUTs.
//!
//! Invariants: a write is acknowledged only after its log frame was written (under `immediate`, fdatasynced; under
//! `eventual`, the log's next fdatasync makes it safe from a power loss, at most `FLUSH_INTERVAL_MS` later); a batch
//! keeps arrival order; the worker exits only when every sender is gone and the queue is empty, so shutdown
//! commits everything that was accepted.

pub mod cache;
pub mod handle;
pub mod readiness;
pub mod snapshot;
mod worker;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::oneshot;

use crate::command::{Command, Reply};
use crate::config::{Config, Durability, DEFAULT_MAX_BATCH_BYTES};
use crate::engine::store::{Replicated, Store};
use crate::error::Result;
use crate::shard::cache::{Cache, FillRequest};
use snapshot::SnapshotRequest;
use worker::{ShardMetrics, Worker};

pub use handle::{Refusal, ShardHandle};
pub use readiness::Readiness;

/// A message to a shard worker.
pub enum ShardMsg {
    /// Apply a write and answer on `reply` once it is committed.
    Write {
        /// The write.
        cmd: Command,
        /// Where the outcome goes; a closed receiver (client gone) is normal.
        reply: oneshot::Sender<Result<Reply>>,
    },
    /// A reader missed the cache: fill this key from the committed state if it is still absent.
    Fill(FillRequest),
    /// A backup: after committing what came before, meet the other shards and hand over a snapshot.
    Snapshot(SnapshotRequest),
    /// Cluster mode: apply committed entries of the shard's Raft log (after the writes queued before them).
    Apply {
        /// The entries, in log order.
        entries: Vec<Replicated>,
        /// Each entry's outcome (`None` for one without a command), or the failure of the whole transaction.
        reply: oneshot::Sender<Result<Vec<Option<Result<Reply>>>>>,
    },
    /// Cluster mode: replace the shard file with a Raft snapshot.
    Install {
        /// The snapshot file (it stays where it is).
        from: PathBuf,
        /// Whether it was installed.
        reply: oneshot::Sender<Result<()>>,
    },
}

/// How a shard worker batches and commits.
#[derive(Debug, Clone)]
pub struct ShardOptions {
    /// For a store without a log: fsync every commit, or only every `flush_interval`.
    pub durability: Durability,
    /// Longest time between fsyncs of the log (`eventual`), or between durable commits for a store without a log;
    /// unused under `immediate`, where every frame is fsynced.
    pub flush_interval: Duration,
    /// Most requests per write transaction.
    pub max_batch: usize,
    /// Most payload bytes per write transaction (a larger single request still goes alone).
    pub max_batch_bytes: usize,
    /// Capacity of the shard's queue.
    pub queue_depth: usize,
}

impl ShardOptions {
    /// The options a server configuration implies.
    pub fn from_config(config: &Config) -> ShardOptions {
        ShardOptions {
            durability: config.durability,
            flush_interval: config.flush_interval(),
            max_batch: config.max_batch,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            queue_depth: config.queue_depth,
        }
    }
}
/// Starts the worker thread of `store`. The thread exits when every [`ShardHandle`] is dropped and the queue is
/// drained; join the returned handle to wait for its last commit and clean close.
pub fn spawn(
    store: Arc<Store>,
    cache: Cache,
    options: ShardOptions,
    readiness: Arc<Readiness>,
) -> std::io::Result<(ShardHandle, JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::bounded(options.queue_depth);
    let id = store.shard();
    let handle = ShardHandle::new(id, tx, store.clone());
    let join = std::thread::Builder::new().name(format!("shard-{}", id.0)).spawn(move || {
        let metrics = ShardMetrics::new(id);
        let worker = Worker { store, cache, options, rx, readiness, metrics };
        // A panic here would leave writers waiting on a half-alive shard: stop the whole process instead.
        // redb is crash-safe, and nothing unacknowledged was reported as stored.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run())).is_err() {
            tracing::error!(shard = id.0, "shard worker panicked; aborting the process");
            std::process::abort();
        }
    })?;
    Ok((handle, join))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Precondition;
    use std::time::Instant;

    use crate::command::Space;
    use crate::engine::durability::{Log, CHECKPOINT_BYTES, NO_ROOM_CHECKPOINT_EVERY};
    use crate::error::Error;
    use crate::placement::ShardId;

    fn put() -> Command {
        put_of(bytes::Bytes::from_static(b"k"), bytes::Bytes::from_static(b"v"))
    }

    fn put_of(key: bytes::Bytes, value: bytes::Bytes) -> Command {
        Command::Put {
            space: Space::Kv,
            key,
            value,
            content_type: bytes::Bytes::new(),
            precondition: Precondition::NONE,
            skip_if_unchanged: false,
        }
    }

    /// Queues `cmd` on `handle` at once (the tests keep their queues from filling up).
    fn submit(handle: &ShardHandle, cmd: Command) -> Result<oneshot::Receiver<Result<Reply>>> {
        handle.try_submit(cmd).map_err(|_| crate::error::Error::Unavailable("shard queue full".into()))
    }

    #[test]
    fn a_fill_reads_what_the_held_transaction_left() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(dir.path().join("s.redb"), ShardId(0), 1 << 20, Log::Fsynced).unwrap();
        store.hold_for(Duration::from_secs(3600));
        let store = Arc::new(store);
        let cache = Cache::new(1 << 20);
        let (_tx, rx) = crossbeam_channel::bounded(1);
        let worker = Worker {
            store: store.clone(),
            cache: cache.clone(),
            options: ShardOptions::from_config(&Config::for_test(dir.path())),
            rx,
            readiness: Readiness::new(1),
            metrics: ShardMetrics::new(ShardId(0)),
        };
        let mut rev = 1;
        store.apply_batch([put()].iter(), &mut rev, true).unwrap();
        store.settle().unwrap();
        let delete = Command::Delete {
            space: Space::Kv,
            key: bytes::Bytes::from_static(b"k"),
            precondition: Precondition::NONE,
        };
        store.apply_batch([delete].iter(), &mut rev, true).unwrap();
        assert!(store.pending() && store.get(Space::Kv, b"k").unwrap().is_some(), "the delete is held");
        // A reader missed before the delete and asked for a fill: the committed state still has the key, but the
        // answered delete must win, or the cache would serve a deleted value.
        worker.fill(FillRequest { space: Space::Kv, key: bytes::Bytes::from_static(b"k") });
        assert!(!cache.contains(Space::Kv, b"k"), "a fill brought a deleted key back");
        store.settle().unwrap();
        store.apply_batch([put()].iter(), &mut rev, true).unwrap();
        worker.fill(FillRequest { space: Space::Kv, key: bytes::Bytes::from_static(b"k") });
        assert!(cache.contains(Space::Kv, b"k"), "a held write is filled");
    }

    /// A running worker of a `DURABILITY=immediate` store in `dir`, with the given hold time and flush interval
    /// instead of the defaults.
    fn immediate_shard(
        dir: &std::path::Path,
        hold: Option<Duration>,
        flush_interval: Option<Duration>,
    ) -> (Arc<Store>, ShardHandle, JoinHandle<()>) {
        let mut store = Store::open(dir.join("s.redb"), ShardId(0), 1 << 20, Log::Fsynced).unwrap();
        if let Some(t) = hold {
            store.hold_for(t);
        }
        let store = Arc::new(store);
        let mut options = ShardOptions::from_config(&Config::for_test(dir));
        options.flush_interval = flush_interval.unwrap_or(options.flush_interval);
        let (handle, join) = spawn(store.clone(), Cache::new(1 << 20), options, Readiness::new(1)).unwrap();
        (store, handle, join)
    }

    #[tokio::test]
    async fn a_busy_shard_commits_a_full_hold_after_answering_the_batch_that_filled_it() {
        let dir = tempfile::tempdir().unwrap();
        // So only the batch count can end the hold.
        let (store, handle, join) = immediate_shard(dir.path(), Some(Duration::from_secs(3600)), None);
        for _ in 0..crate::engine::durability::HOLD_BATCHES {
            assert!(store.get(Space::Kv, b"k").unwrap().is_none(), "committed before the hold was full");
            submit(&handle, put()).unwrap().await.unwrap().unwrap();
        }
        committed_within(&store, handle, join, Duration::from_secs(5), "a full hold was never committed").await;
    }

    #[tokio::test]
    async fn an_idle_shard_commits_its_held_transaction_when_it_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let (store, handle, join) = immediate_shard(dir.path(), None, None);
        submit(&handle, put()).unwrap().await.unwrap().unwrap();
        // No batch follows: the worker wakes up for the hold's end (1 s; no checkpoint comes under `immediate`).
        committed_within(&store, handle, join, Duration::from_secs(5), "the hold was never committed").await;
    }

    #[tokio::test]
    async fn an_immediate_shard_checkpoints_by_log_size_not_on_a_timer() {
        let dir = tempfile::tempdir().unwrap();
        let hold = Some(Duration::from_millis(20));
        let (store, handle, join) = immediate_shard(dir.path(), hold, Some(Duration::from_millis(10)));
        submit(&handle, put()).unwrap().await.unwrap().unwrap();
        // Twenty flush intervals: the hold is committed, but the fdatasynced log is not checkpointed (and rewound).
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!store.pending(), "the hold was never committed");
        let logged = store.logged_bytes().unwrap();
        assert!(logged > 0, "checkpointed on a timer");
        // A checkpoint comes once the log holds CHECKPOINT_BYTES: the log then starts over.
        let value = bytes::Bytes::from(vec![b'v'; 1 << 20]);
        for i in 0..CHECKPOINT_BYTES >> 20 {
            let cmd = put_of(bytes::Bytes::from(format!("big{i}")), value.clone());
            submit(&handle, cmd).unwrap().await.unwrap().unwrap();
        }
        // The checkpoint comes after the last batch's answer: wait for it.
        let started_over = log_below(&store, logged + (1 << 20), Duration::from_secs(5)).await;
        assert!(started_over, "no checkpoint after CHECKPOINT_BYTES of log");
        drop(handle);
        join.join().unwrap();
    }

    #[tokio::test]
    async fn a_batch_refused_for_lack_of_space_checkpoints_so_the_log_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let (store, handle, join) = immediate_shard(dir.path(), None, None);
        submit(&handle, put()).unwrap().await.unwrap().unwrap();
        assert!(store.logged_bytes().unwrap() > 0);
        refused_put(&store, &handle).await;
        // The refusal's answer comes before the checkpoint: wait for it.
        assert!(log_below(&store, 1, Duration::from_secs(5)).await, "a refused batch did not checkpoint the log");
        assert!(!store.pending(), "the checkpoint committed the held batch");
        drop(handle);
        join.join().unwrap();
    }

    #[tokio::test]
    async fn after_a_failed_refusal_checkpoint_the_next_waits_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let (store, handle, join) = immediate_shard(dir.path(), None, None);
        let refused = || refused_put(&store, &handle);
        let log_empties_within = |limit: Duration| log_below(&store, 1, limit);
        submit(&handle, put()).unwrap().await.unwrap().unwrap();
        // The refusal's checkpoint fails; the reopen after it replays the log, which starts over.
        store.inject_checkpoint_failures(1);
        refused().await;
        assert!(log_empties_within(Duration::from_secs(5)).await, "no reopen after the failed checkpoint");
        // The worker sets the next try's time as soon as the reopen is done, about now.
        let failed_at = Instant::now();
        // Space is back for one batch, then gone again: this refusal, within the second, does not checkpoint.
        store.inject_free_bytes(u64::MAX);
        submit(&handle, put()).unwrap().await.unwrap().unwrap();
        refused().await;
        assert!(failed_at.elapsed() < NO_ROOM_CHECKPOINT_EVERY / 2, "too slow to check the wait");
        assert!(!log_empties_within(Duration::from_millis(200)).await, "checkpointed again within the second");
        // After the second, a refusal checkpoints again (and this one succeeds).
        let margin = Duration::from_millis(100);
        tokio::time::sleep((NO_ROOM_CHECKPOINT_EVERY + margin).saturating_sub(failed_at.elapsed())).await;
        refused().await;
        assert!(log_empties_within(Duration::from_secs(5)).await, "no checkpoint a second after the failed one");
        assert!(!store.pending(), "the checkpoint committed the held batch");
        drop(handle);
        join.join().unwrap();
    }

    /// A put answered 507: the free-space check sees no room (until told otherwise).
    async fn refused_put(store: &Store, handle: &ShardHandle) {
        store.inject_free_bytes(0);
        let answer = submit(handle, put()).unwrap().await.unwrap();
        assert!(matches!(answer, Err(Error::InsufficientStorage(_))), "{answer:?}");
    }

    /// Waits up to `limit` for the store's log to hold fewer than `bytes` (a checkpoint makes it start over, and
    /// comes after the answers); whether it did.
    async fn log_below(store: &Store, bytes: u64, limit: Duration) -> bool {
        let started = Instant::now();
        while store.logged_bytes().unwrap() >= bytes && started.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        store.logged_bytes().unwrap() < bytes
    }

    /// Waits up to `limit` for the worker to commit its held transaction (`what` otherwise), checks that the
    /// committed state has the key, and stops the worker.
    async fn committed_within(store: &Store, handle: ShardHandle, join: JoinHandle<()>, limit: Duration, what: &str) {
        let started = Instant::now();
        while store.pending() {
            assert!(started.elapsed() < limit, "{what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(store.get(Space::Kv, b"k").unwrap().is_some());
        drop(handle);
        join.join().unwrap();
    }
}
