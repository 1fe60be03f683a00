//! A shard worker: one OS thread that owns one [`Store`] and is the only writer of its file and of its keys in
//! the cache.
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
//! 6. Checkpoint (a durable redb commit) every [`CHECKPOINT_BYTES`] of log; under `eventual`, also fdatasync the
//!    log every `FLUSH_INTERVAL_MS`. Commit the held transaction if the batch filled it ([`Store::end_full_hold`]).
//!    Under `immediate` nothing waits for a checkpoint (each frame was fdatasynced), so none comes on a timer: a
//!    checkpoint writes out every B-tree page touched since the last one and stalls its shard for 10 to 25 ms
//!    here, which set the p99 of durable PUTs when it came every `FLUSH_INTERVAL_MS` (BENCHMARKS.md, session 13).
//!
//! Invariants: a write is acknowledged only after its log frame was written (under `immediate`, fdatasynced; under
//! `eventual`, the log's next fdatasync makes it safe from a power loss, at most `FLUSH_INTERVAL_MS` later); a batch
//! keeps arrival order; the worker exits only when every sender is gone and the queue is empty, so shutdown
//! commits everything that was accepted.

pub mod cache;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::command::{Command, Reply, Space};
use crate::config::{Config, Durability, DEFAULT_MAX_BATCH_BYTES};
use crate::engine::store::{CacheEffect, Log, Store};
use crate::engine::wal::CHECKPOINT_BYTES;
use crate::error::{Error, Result};
use crate::ops::backup::SnapshotRequest;
use crate::placement::ShardId;
use crate::shard::cache::{Cache, FillRequest};

/// After a checkpoint made to free room for writes refused for lack of space failed, the time before the next.
const NO_ROOM_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

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

/// Tracks which shards finished their warm-up; the server is ready when all have.
#[derive(Debug, Default)]
pub struct Readiness {
    pending: AtomicUsize,
    failed: Mutex<Option<String>>,
    stopping: AtomicBool,
}

impl Readiness {
    /// Readiness waiting for `shards` warm-ups.
    pub fn new(shards: usize) -> Arc<Readiness> {
        Arc::new(Readiness { pending: AtomicUsize::new(shards), ..Default::default() })
    }

    /// `Ok` once every shard is warm; otherwise why not.
    pub fn check(&self) -> std::result::Result<(), String> {
        if let Some(why) = self.failed.lock().expect("readiness lock never poisoned").clone() {
            return Err(why);
        }
        if self.stopping.load(Ordering::Acquire) {
            return Err("shutting down".into());
        }
        match self.pending.load(Ordering::Acquire) {
            0 => Ok(()),
            n => Err(format!("warming up ({n} shards left)")),
        }
    }

    /// Whether every shard is warm.
    pub fn is_ready(&self) -> bool {
        self.check().is_ok()
    }

    fn shard_ready(&self) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }

    fn shard_failed(&self, why: String) {
        *self.failed.lock().expect("readiness lock never poisoned") = Some(why);
    }

    /// Marks the server as stopping (so load balancers stop sending).
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }
}

/// The sending side of a shard: cloneable, used by the node.
#[derive(Clone)]
pub struct ShardHandle {
    id: ShardId,
    tx: Sender<ShardMsg>,
    store: Arc<Store>,
}

impl ShardHandle {
    /// This shard's id.
    pub fn id(&self) -> ShardId {
        self.id
    }

    /// This shard's store, for reads (never for writes: those go through the worker).
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Requests queued and not yet taken by the worker.
    pub fn queue_len(&self) -> usize {
        self.tx.len()
    }

    /// Queues a write without blocking; a full queue is `Unavailable` (503 + Retry-After).
    pub fn submit(&self, cmd: Command) -> Result<oneshot::Receiver<Result<Reply>>> {
        let (reply, rx) = oneshot::channel();
        match self.tx.try_send(ShardMsg::Write { cmd, reply }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(Error::Unavailable(format!("shard {} is overloaded; retry", self.id))),
            Err(TrySendError::Disconnected(_)) => Err(Error::Unavailable(format!("shard {} is not running", self.id))),
        }
    }

    /// Queues `cmd`, waiting (asynchronously, up to `patience`) while the queue is full: the RESP listener's
    /// backpressure, which holds the client's connection instead of failing its command. Returns the receiver of
    /// the reply, so the caller can queue more before awaiting (pipelining keeps its order per shard).
    pub async fn submit_patiently(&self, cmd: Command, patience: Duration) -> Result<oneshot::Receiver<Result<Reply>>> {
        let (reply, rx) = oneshot::channel();
        let mut msg = ShardMsg::Write { cmd, reply };
        let deadline = Instant::now() + patience;
        let mut pause = Duration::from_micros(50);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => return Ok(rx),
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    msg = back;
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
                Err(TrySendError::Full(_)) => {
                    return Err(Error::Unavailable(format!("shard {} is overloaded; retry", self.id)))
                }
                Err(TrySendError::Disconnected(_)) => {
                    return Err(Error::Unavailable(format!("shard {} is not running", self.id)))
                }
            }
        }
    }

    /// Asks the worker to take part in a backup; waits up to a second for room in the queue.
    pub fn request_snapshot(&self, req: SnapshotRequest) -> Result<()> {
        self.tx
            .send_timeout(ShardMsg::Snapshot(req), Duration::from_secs(1))
            .map_err(|_| Error::Unavailable(format!("shard {} is too busy to take a backup; retry", self.id)))
    }

    /// Asks the worker to fill `key` into the cache; dropped silently when the queue is full.
    pub fn request_fill(&self, space: Space, key: bytes::Bytes) {
        let _ = self.tx.try_send(ShardMsg::Fill(FillRequest { space, key }));
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
    let handle = ShardHandle { id, tx, store: store.clone() };
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

struct Worker {
    store: Arc<Store>,
    cache: Cache,
    options: ShardOptions,
    rx: Receiver<ShardMsg>,
    readiness: Arc<Readiness>,
    metrics: ShardMetrics,
}

/// This shard's metric handles, registered once so that recording is a few atomic operations per batch.
struct ShardMetrics {
    batch_size: metrics::Histogram,
    commit_seconds: metrics::Histogram,
    commits: metrics::Counter,
    fsyncs: metrics::Counter,
    checkpoints: metrics::Counter,
    failed_batches: metrics::Counter,
    warmup_seconds: metrics::Gauge,
}

impl ShardMetrics {
    fn new(id: ShardId) -> ShardMetrics {
        let shard = id.to_string();
        ShardMetrics {
            batch_size: metrics::histogram!("shale_shard_batch_size", "shard" => shard.clone()),
            commit_seconds: metrics::histogram!("shale_shard_commit_seconds", "shard" => shard.clone()),
            commits: metrics::counter!("shale_shard_commits_total", "shard" => shard.clone()),
            fsyncs: metrics::counter!("shale_shard_fsyncs_total", "shard" => shard.clone()),
            checkpoints: metrics::counter!("shale_shard_checkpoints_total", "shard" => shard.clone()),
            failed_batches: metrics::counter!("shale_shard_failed_batches_total", "shard" => shard.clone()),
            warmup_seconds: metrics::gauge!("shale_shard_warmup_seconds", "shard" => shard),
        }
    }
}

impl Worker {
    fn run(self) {
        let shard = self.store.shard();
        let mut next_rev = match self.warm_up().and_then(|()| self.store.last_rev()) {
            Ok(last) => last + 1,
            Err(e) => {
                tracing::error!(shard = shard.0, error = %e, "shard cannot serve");
                self.readiness.shard_failed(format!("shard {shard}: {e}"));
                self.store.close();
                return;
            }
        };
        self.readiness.shard_ready();

        let mut writes: Vec<(Command, oneshot::Sender<Result<Reply>>)> = Vec::new();
        let mut fills: Vec<FillRequest> = Vec::new();
        let mut last_durable = Instant::now();
        // When a checkpoint to free room for refused writes may be tried again, after one failed.
        let mut no_room_retry: Option<Instant> = None;
        // Whether answered batches wait for the next durability point (a checkpoint, or under `eventual` the
        // log's fdatasync).
        let mut dirty = false;
        let log = self.store.log();
        let logged = log != Log::Off;
        loop {
            // Wake up in time for the held transaction's commit and for the next durable commit.
            let flush_due = dirty.then(|| last_durable + self.options.flush_interval);
            let held_due = self.store.held_due();
            let first = if let Some(due) = flush_due.into_iter().chain(held_due).min() {
                match self.rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        if flush_due.is_some_and(|d| d <= Instant::now()) {
                            self.durable_point(log, &mut dirty, &mut last_durable);
                        } else if let Err(e) = self.store.settle() {
                            tracing::error!(shard = shard.0, error = %e, "committing the held transaction failed");
                            self.reopen(&mut next_rev);
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            } else {
                match self.rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                }
            };
            let snapshot = self.collect(first, &mut writes, &mut fills);
            if !writes.is_empty() {
                // A logged batch is kept by the log; its redb commit is not durable (a store without a log: tests).
                let durable = !logged
                    && (self.options.durability == Durability::Immediate
                        || last_durable.elapsed() >= self.options.flush_interval);
                let no_room = self.commit_batch(&mut writes, &mut next_rev, durable, log);
                if durable {
                    dirty = false;
                    last_durable = Instant::now();
                } else {
                    // Under `immediate` the log's fdatasync already made the batch durable.
                    dirty = log != Log::Fsynced;
                }
                // After the answers, so no writer waits for the checkpoint (or fdatasync) it did not need. A batch
                // refused for lack of space checkpoints too: the log then overwrites its own file from offset 0
                // instead of growing, and redb reuses the pages freed since the last durable commit, so the next
                // writes need less room. After such a checkpoint failed (it may reopen the file), the next one
                // waits NO_ROOM_CHECKPOINT_EVERY.
                let log_bytes = self.store.logged_bytes().unwrap_or(0);
                let make_room = no_room && log_bytes > 0 && no_room_retry.is_none_or(|at| Instant::now() >= at);
                if logged && (log_bytes >= CHECKPOINT_BYTES || make_room) {
                    let done = self.flush(&mut dirty, &mut last_durable);
                    no_room_retry = (!done).then(|| Instant::now() + NO_ROOM_CHECKPOINT_EVERY);
                } else if logged {
                    if dirty && last_durable.elapsed() >= self.options.flush_interval {
                        self.durable_point(log, &mut dirty, &mut last_durable);
                    }
                    // Also after the answers: a batch that filled the hold is not kept waiting for its commit.
                    if let Err(e) = self.store.end_full_hold() {
                        tracing::error!(shard = shard.0, error = %e, "cannot reopen after a failed commit of a hold");
                        self.reopen(&mut next_rev);
                    }
                }
            }
            for fill in fills.drain(..) {
                self.fill(fill);
            }
            if let Some(req) = snapshot {
                req.serve(&self.store);
            }
        }
        // A clean stop leaves nothing to replay: the last batches are checkpointed into the file.
        if dirty || self.store.logged_bytes().is_some_and(|b| b > 0) {
            self.flush(&mut dirty, &mut last_durable);
        }
        self.store.close();
        tracing::debug!(shard = shard.0, "shard closed");
    }

    /// Scans the file into the cache until the cache is nearly full. No writer runs yet, so no race.
    fn warm_up(&self) -> Result<()> {
        let started = Instant::now();
        let mut loaded = 0u64;
        for space in Space::ALL {
            let mut full = false;
            self.store.scan(space, |key, rec| {
                if loaded.is_multiple_of(1024) && self.cache.nearly_full() {
                    full = true;
                    return false;
                }
                self.cache.insert(space, key, rec);
                loaded += 1;
                true
            })?;
            if full {
                break;
            }
        }
        self.metrics.warmup_seconds.set(started.elapsed().as_secs_f64());
        tracing::info!(
            shard = self.store.shard().0,
            entries = loaded,
            ms = started.elapsed().as_millis() as u64,
            "shard cache warmed"
        );
        Ok(())
    }

    /// Takes `first` and everything already queued, up to the batch caps, without waiting. Stops at a
    /// snapshot request, which is returned so it is served after the writes queued before it are committed.
    fn collect(
        &self,
        first: ShardMsg,
        writes: &mut Vec<(Command, oneshot::Sender<Result<Reply>>)>,
        fills: &mut Vec<FillRequest>,
    ) -> Option<SnapshotRequest> {
        let mut bytes = 0usize;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                ShardMsg::Write { cmd, reply } => {
                    bytes += cmd.weight();
                    writes.push((cmd, reply));
                }
                ShardMsg::Fill(f) => fills.push(f),
                ShardMsg::Snapshot(req) => return Some(req),
            }
            if writes.len() >= self.options.max_batch || bytes >= self.options.max_batch_bytes {
                break;
            }
            next = self.rx.try_recv().ok();
        }
        None
    }

    /// Applies and commits one batch, then updates the cache, then answers; see the module doc. Returns whether
    /// the batch was refused for lack of disk space.
    fn commit_batch(
        &self,
        writes: &mut Vec<(Command, oneshot::Sender<Result<Reply>>)>,
        next_rev: &mut u64,
        durable: bool,
        log: Log,
    ) -> bool {
        let started = Instant::now();
        let result = self.store.apply_batch(writes.iter().map(|(c, _)| c), next_rev, durable);
        let len = writes.len();
        let no_room = matches!(result, Err(Error::InsufficientStorage(_)));
        match result {
            Ok(outcomes) => {
                // A batch that changed nothing (reads, failed preconditions, unchanged documents) is neither
                // committed nor logged, so it counts as neither.
                if outcomes.iter().any(|o| o.as_ref().is_ok_and(|(_, effect)| effect.changes())) {
                    self.metrics.batch_size.record(len as f64);
                    self.metrics.commits.increment(1);
                    // Under `eventual` the frame was only written: its fsync is counted by `durable_point`.
                    if durable || log == Log::Fsynced {
                        self.metrics.fsyncs.increment(1);
                    }
                    self.metrics.commit_seconds.record(started.elapsed().as_secs_f64());
                }
                for ((_, reply), outcome) in writes.drain(..).zip(outcomes) {
                    let answer = outcome.map(|(r, effect)| {
                        apply_cache_effect(&self.cache, effect);
                        r
                    });
                    let _ = reply.send(answer);
                }
            }
            Err(e) => {
                self.metrics.failed_batches.increment(1);
                tracing::error!(shard = self.store.shard().0, batch = len, error = %e, "write transaction failed; batch rejected");
                // The commit may have reached the disk partly or wholly before failing: drop what the cache
                // holds for these keys so the next read goes to the file.
                for (cmd, reply) in writes.drain(..) {
                    cmd.for_each_key(&mut |space, key| match key {
                        Some(key) => self.cache.invalidate(space, key),
                        None => self.cache.clear(),
                    });
                    let _ = reply.send(Err(e.clone()));
                }
                self.reopen(next_rev);
            }
        }
        tracing::debug!(
            shard = self.store.shard().0,
            batch = len,
            durable,
            commit_us = started.elapsed().as_micros() as u64,
            "batch committed"
        );
        no_room
    }

    fn reopen(&self, next_rev: &mut u64) {
        let mut backoff = Duration::from_millis(10);
        loop {
            match self.store.reopen().and_then(|()| self.store.last_rev()) {
                Ok(last) => {
                    *next_rev = (*next_rev).max(last + 1);
                    return;
                }
                Err(e) => {
                    tracing::error!(shard = self.store.shard().0, error = %e, "cannot reopen shard; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Makes the answered batches survive a power loss: under `eventual` ([`Log::Written`]) by the log's
    /// fdatasync (the checkpoint waits for [`CHECKPOINT_BYTES`] of log: it writes out every B-tree page the
    /// batches touched, a stall of several milliseconds that set the p99 of `eventual` PUTs when it came every
    /// second), without a log (tests, tools) by a durable commit. Not called under `immediate`, where no batch
    /// leaves the shard dirty.
    fn durable_point(&self, log: Log, dirty: &mut bool, last_durable: &mut Instant) {
        if log != Log::Written {
            self.flush(dirty, last_durable);
            return;
        }
        match self.store.sync_log() {
            Ok(synced) => {
                if synced {
                    self.metrics.fsyncs.increment(1);
                }
                *dirty = false;
                *last_durable = Instant::now();
            }
            Err(e) => self.flush_failed(e, last_durable),
        }
    }

    /// A checkpoint (a durable commit without a log); returns whether it succeeded.
    fn flush(&self, dirty: &mut bool, last_durable: &mut Instant) -> bool {
        match self.store.flush() {
            Ok(()) => {
                self.metrics.fsyncs.increment(1);
                self.metrics.checkpoints.increment(1);
                *dirty = false;
                *last_durable = Instant::now();
                true
            }
            Err(e) => {
                self.flush_failed(e, last_durable);
                false
            }
        }
    }

    fn flush_failed(&self, e: Error, last_durable: &mut Instant) {
        // Pending non-durable commits are not yet safe; retry at the next interval. redb refuses writes after a
        // failed commit until reopened, and a clean reopen persists what was committed.
        tracing::error!(shard = self.store.shard().0, error = %e, "durable flush failed");
        *last_durable = Instant::now();
        let mut rev = 0;
        self.reopen(&mut rev);
    }

    /// Fills one key as the last answered batch left it (through the held transaction, if any) if it is still
    /// absent. Runs between batches, on the only thread that writes this key, so what it reads is the newest value.
    fn fill(&self, FillRequest { space, key }: FillRequest) {
        if self.cache.contains(space, &key) {
            return;
        }
        if let Ok(Some(rec)) = self.store.get_current(space, &key) {
            self.cache.insert(space, &key, rec);
        }
    }
}

/// Brings the cache in line with one committed command. Runs on the shard thread, after the commit and before
/// the command is answered (see `cache`).
fn apply_cache_effect(cache: &Cache, effect: CacheEffect) {
    match effect {
        CacheEffect::None => {}
        CacheEffect::Insert(space, key, rec) => cache.insert(space, &key, rec),
        CacheEffect::Invalidate(space, key) => cache.invalidate(space, &key),
        CacheEffect::Fill(space, key, rec) => {
            if !cache.contains(space, &key) {
                cache.insert(space, &key, rec);
            }
        }
        // Clearing every shard's entries is safe: removing an entry can never make a read stale.
        CacheEffect::Clear(_) => cache.clear(),
        CacheEffect::Many(effects) => effects.into_iter().for_each(|e| apply_cache_effect(cache, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Precondition;

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

    /// A handle on a queue of one that no worker drains, so the test decides when room appears.
    fn stalled(dir: &std::path::Path) -> (ShardHandle, Receiver<ShardMsg>) {
        let store = Arc::new(Store::open(dir.join("s.redb"), ShardId(0), 1 << 20, Log::Off).unwrap());
        let (tx, rx) = crossbeam_channel::bounded(1);
        (ShardHandle { id: ShardId(0), tx, store }, rx)
    }

    #[tokio::test]
    async fn a_patient_submit_waits_for_room_then_gives_up_as_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let (handle, rx) = stalled(dir.path());
        handle.submit(put()).unwrap();
        assert!(matches!(handle.submit(put()), Err(Error::Unavailable(_))), "the plain submit refuses at once");

        // Still full when the patience runs out: Unavailable (RESP answers it with -BUSY), after the patience.
        let started = Instant::now();
        let err = handle.submit_patiently(put(), Duration::from_millis(150)).await.expect_err("queue stays full");
        assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
        assert!(started.elapsed() >= Duration::from_millis(150), "gave up after {:?}", started.elapsed());
        let crate::api::resp::frame::Frame::Error(text) = crate::api::resp::commands::error_frame(&err) else {
            panic!()
        };
        assert!(text.starts_with("BUSY "), "{text}");

        // Room appears while it waits: the command is queued.
        let drain = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let first = rx.recv().unwrap();
            (rx, first)
        });
        let queued = handle.submit_patiently(put(), Duration::from_secs(5)).await;
        assert!(queued.is_ok(), "the command waited for room");
        let (rx, _) = drain.join().unwrap();
        assert_eq!(rx.len(), 1, "the patient command is now in the queue");
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
        for _ in 0..crate::engine::store::HOLD_BATCHES {
            assert!(store.get(Space::Kv, b"k").unwrap().is_none(), "committed before the hold was full");
            handle.submit(put()).unwrap().await.unwrap().unwrap();
        }
        committed_within(&store, handle, join, Duration::from_secs(5), "a full hold was never committed").await;
    }

    #[tokio::test]
    async fn an_idle_shard_commits_its_held_transaction_when_it_is_due() {
        let dir = tempfile::tempdir().unwrap();
        let (store, handle, join) = immediate_shard(dir.path(), None, None);
        handle.submit(put()).unwrap().await.unwrap().unwrap();
        // No batch follows: the worker wakes up for the hold's end (1 s; no checkpoint comes under `immediate`).
        committed_within(&store, handle, join, Duration::from_secs(5), "the hold was never committed").await;
    }

    #[tokio::test]
    async fn an_immediate_shard_checkpoints_by_log_size_not_on_a_timer() {
        let dir = tempfile::tempdir().unwrap();
        let hold = Some(Duration::from_millis(20));
        let (store, handle, join) = immediate_shard(dir.path(), hold, Some(Duration::from_millis(10)));
        handle.submit(put()).unwrap().await.unwrap().unwrap();
        // Twenty flush intervals: the hold is committed, but the fdatasynced log is not checkpointed (and rewound).
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!store.pending(), "the hold was never committed");
        let logged = store.logged_bytes().unwrap();
        assert!(logged > 0, "checkpointed on a timer");
        // A checkpoint comes once the log holds CHECKPOINT_BYTES: the log then starts over.
        let value = bytes::Bytes::from(vec![b'v'; 1 << 20]);
        for i in 0..CHECKPOINT_BYTES >> 20 {
            let cmd = put_of(bytes::Bytes::from(format!("big{i}")), value.clone());
            handle.submit(cmd).unwrap().await.unwrap().unwrap();
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
        handle.submit(put()).unwrap().await.unwrap().unwrap();
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
        handle.submit(put()).unwrap().await.unwrap().unwrap();
        // The refusal's checkpoint fails; the reopen after it replays the log, which starts over.
        store.inject_checkpoint_failures(1);
        refused().await;
        assert!(log_empties_within(Duration::from_secs(5)).await, "no reopen after the failed checkpoint");
        // The worker sets the next try's time as soon as the reopen is done, about now.
        let failed_at = Instant::now();
        // Space is back for one batch, then gone again: this refusal, within the second, does not checkpoint.
        store.inject_free_bytes(u64::MAX);
        handle.submit(put()).unwrap().await.unwrap().unwrap();
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
        let answer = handle.submit(put()).unwrap().await.unwrap();
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
