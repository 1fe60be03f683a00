//! The loop of a shard worker: batch, apply, log, answer, fill the cache, checkpoint (see the module doc of
//! [`crate::shard`]). The durability rules it follows are [`crate::engine::durability`]'s.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use tokio::sync::oneshot;

use crate::command::{Command, Reply, Space};
use crate::engine::durability::{self, Log};
use crate::engine::store::Store;
use crate::error::{Error, Result};
use crate::placement::ShardId;
use crate::shard::cache::{Cache, FillRequest};
use crate::shard::readiness::Readiness;
use crate::shard::snapshot::SnapshotRequest;
use crate::shard::{ShardMsg, ShardOptions};

pub(super) struct Worker {
    pub(super) store: Arc<Store>,
    pub(super) cache: Cache,
    pub(super) options: ShardOptions,
    pub(super) rx: Receiver<ShardMsg>,
    pub(super) readiness: Arc<Readiness>,
    pub(super) metrics: ShardMetrics,
}

/// This shard's metric handles, registered once so that recording is a few atomic operations per batch.
pub(super) struct ShardMetrics {
    batch_size: metrics::Histogram,
    commit_seconds: metrics::Histogram,
    commits: metrics::Counter,
    fsyncs: metrics::Counter,
    checkpoints: metrics::Counter,
    failed_batches: metrics::Counter,
    warmup_seconds: metrics::Gauge,
}

impl ShardMetrics {
    pub(super) fn new(id: ShardId) -> ShardMetrics {
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
    pub(super) fn run(self) {
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
                let durable = durability::commit_is_durable(
                    log,
                    self.options.durability,
                    last_durable.elapsed(),
                    self.options.flush_interval,
                );
                let no_room = self.commit_batch(&mut writes, &mut next_rev, durable, log);
                if durable {
                    dirty = false;
                    last_durable = Instant::now();
                } else {
                    dirty = durability::leaves_answered_batches_exposed(log, durable);
                }
                // After the answers, so no writer waits for the checkpoint (or fdatasync) it did not need.
                let log_bytes = self.store.logged_bytes().unwrap_or(0);
                if logged && durability::checkpoint_due(log_bytes, no_room, no_room_retry) {
                    let done = self.flush(&mut dirty, &mut last_durable);
                    no_room_retry = durability::no_room_retry_after(done);
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
                        self.cache.apply(effect);
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
    /// fdatasync (the checkpoint waits for [`CHECKPOINT_BYTES`](durability::CHECKPOINT_BYTES) of log: it writes
    /// out every B-tree page the batches touched and stalls the shard meanwhile, so on every flush interval it
    /// would set the p99 of `eventual` PUTs), without a log (tests, tools) by a durable commit. Not called under
    /// `immediate`, where no batch leaves the shard dirty.
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
    pub(super) fn fill(&self, FillRequest { space, key }: FillRequest) {
        if self.cache.contains(space, &key) {
            return;
        }
        if let Ok(Some(rec)) = self.store.get_current(space, &key) {
            self.cache.insert(space, &key, rec);
        }
    }
}
