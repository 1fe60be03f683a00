//! The loop of a shard worker: batch, apply, log, answer, fill the cache, checkpoint (see the module doc of
//! [`crate::shard`]). The durability rules it follows are [`crate::engine::durability`]'s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use tokio::sync::oneshot;

use crate::command::{Command, Reply, Space};
use crate::engine::durability::{Log, Policy};
use crate::engine::store::{Replicated, Store};
use crate::error::{Error, Result};
use crate::placement::ShardId;
use crate::shard::cache::{Cache, FillRequest};
use crate::shard::readiness::Readiness;
use crate::shard::{ShardMsg, ShardOptions};

/// Where the outcomes of a run of applied entries go.
type ApplyReply = oneshot::Sender<Result<Vec<Option<Result<Reply>>>>>;

/// A message that must follow the writes queued before it: served once they are committed.
enum After {
    /// A backup's snapshot (see [`crate::shard::snapshot`]).
    Backup(crate::shard::snapshot::SnapshotRequest),
    /// Runs of committed entries of the shard's Raft log, consecutive in the log, each with where its outcomes go.
    Apply(Vec<(Vec<Replicated>, ApplyReply)>),
    /// A Raft snapshot to install, and where to say whether it was.
    Install(PathBuf, oneshot::Sender<Result<()>>),
}

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
        let mut policy = Policy::new(self.store.log(), self.options.durability, self.options.flush_interval);
        // A message taken from the queue behind a run of entries to apply, served next.
        let mut carried: Option<ShardMsg> = None;
        loop {
            // Wake up in time for the next durable point and for the held transaction's commit.
            let durable_at = policy.durable_point_at();
            let first = if let Some(m) = carried.take() {
                m
            } else if let Some(due) = durable_at.into_iter().chain(self.store.held_due()).min() {
                match self.rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        if policy.durable_point_due() {
                            self.durable_point(&mut policy);
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
            let after = self.collect(first, &mut writes, &mut fills, &mut carried);
            if !writes.is_empty() {
                let durable = policy.commit_is_durable();
                let no_room = self.commit_batch(&mut writes, &mut next_rev, durable);
                policy.batch_committed(durable);
                // After the answers, so no writer waits for the checkpoint (or fdatasync) it did not need.
                if policy.checkpoint_due(self.store.logged_bytes().unwrap_or(0), no_room) {
                    self.checkpoint(&mut policy);
                } else if policy.logged() {
                    if policy.durable_point_due() {
                        self.durable_point(&mut policy);
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
            if let Some(msg) = after {
                self.serve_after(msg, &mut next_rev);
            }
        }
        // A clean stop leaves nothing to replay: the last batches are checkpointed into the file.
        if policy.checkpoint_at_stop(self.store.logged_bytes().unwrap_or(0)) {
            self.checkpoint(&mut policy);
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

    /// Takes `first` and everything already queued, up to the batch caps, without waiting. Stops at a message
    /// that must follow the writes queued before it (a backup's snapshot, replicated entries, a snapshot to
    /// install), which is returned to be served after they are committed. Entries to apply take the runs of
    /// entries queued right behind them along (one transaction for all), and the message after those in `carried`.
    fn collect(
        &self,
        first: ShardMsg,
        writes: &mut Vec<(Command, oneshot::Sender<Result<Reply>>)>,
        fills: &mut Vec<FillRequest>,
        carried: &mut Option<ShardMsg>,
    ) -> Option<After> {
        let mut bytes = 0usize;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                ShardMsg::Write { cmd, reply } => {
                    bytes += cmd.weight();
                    writes.push((cmd, reply));
                }
                ShardMsg::Fill(f) => fills.push(f),
                ShardMsg::Snapshot(req) => return Some(After::Backup(req)),
                ShardMsg::Apply { entries, reply } => {
                    let mut runs = vec![(entries, reply)];
                    let mut len = runs[0].0.len();
                    while len < self.options.max_batch {
                        match self.rx.try_recv() {
                            Ok(ShardMsg::Apply { entries, reply }) => {
                                len += entries.len();
                                runs.push((entries, reply));
                            }
                            Ok(other) => {
                                *carried = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    return Some(After::Apply(runs));
                }
                ShardMsg::Install { from, reply } => return Some(After::Install(from, reply)),
            }
            if writes.len() >= self.options.max_batch || bytes >= self.options.max_batch_bytes {
                break;
            }
            next = self.rx.try_recv().ok();
        }
        None
    }

    /// Serves a message that [`Worker::collect`] held back until the writes before it were committed.
    fn serve_after(&self, after: After, next_rev: &mut u64) {
        match after {
            After::Backup(req) => req.serve(&self.store),
            After::Apply(runs) => {
                let mut entries = Vec::with_capacity(runs.iter().map(|(e, _)| e.len()).sum());
                let replies: Vec<(usize, ApplyReply)> = runs
                    .into_iter()
                    .map(|(run, reply)| {
                        let len = run.len();
                        entries.extend(run);
                        (len, reply)
                    })
                    .collect();
                let applied = self.store.apply_replicated(&entries, next_rev);
                match applied {
                    Ok(outcomes) => {
                        let mut outcomes = outcomes.into_iter().map(|o| {
                            o.map(|outcome| {
                                outcome.map(|(r, change)| {
                                    self.cache.apply(change);
                                    r
                                })
                            })
                        });
                        for (len, reply) in replies {
                            let _ = reply.send(Ok(outcomes.by_ref().take(len).collect()));
                        }
                        // After the answers, as for a logged batch.
                        if let Err(e) = self.store.end_full_hold() {
                            tracing::error!(shard = self.store.shard().0, error = %e, "cannot reopen after a failed commit of a hold");
                            self.reopen(next_rev);
                        }
                    }
                    Err(e) => {
                        tracing::error!(shard = self.store.shard().0, error = %e, "applying replicated entries failed");
                        // What reached the file is unknown: the next reads go to the file.
                        self.cache.clear();
                        self.reopen(next_rev);
                        for (_, reply) in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
            }
            After::Install(from, reply) => {
                let installed = self.store.replace_file(&from).and_then(|()| self.store.last_rev());
                // Every entry of the old file is stale now (removing entries never makes a read stale).
                self.cache.clear();
                let answer = match installed {
                    Ok(last) => {
                        *next_rev = last + 1;
                        Ok(())
                    }
                    Err(e) => {
                        tracing::error!(shard = self.store.shard().0, error = %e, "installing a snapshot failed");
                        self.reopen(next_rev);
                        Err(e)
                    }
                };
                let _ = reply.send(answer);
            }
        }
    }

    /// Applies and commits one batch, then updates the cache, then answers; see the module doc. Returns whether
    /// the batch was refused for lack of disk space.
    fn commit_batch(
        &self,
        writes: &mut Vec<(Command, oneshot::Sender<Result<Reply>>)>,
        next_rev: &mut u64,
        durable: bool,
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
                    if durable || self.store.log() == Log::Fsynced {
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

    /// Makes the answered batches survive a power loss: under `eventual` by the log's fdatasync (the checkpoint
    /// waits for [`CHECKPOINT_BYTES`](crate::engine::durability::CHECKPOINT_BYTES) of log: it writes out every B-tree page the
    /// batches touched and stalls the shard meanwhile, so on every flush interval it would set the p99 of
    /// `eventual` PUTs), without a log (tests, tools) by a durable commit. Never due under `immediate`, where no
    /// batch waits for one.
    fn durable_point(&self, policy: &mut Policy) {
        if !policy.durable_point_syncs_the_log() {
            self.checkpoint(policy);
            return;
        }
        match self.store.sync_log() {
            Ok(synced) => {
                if synced {
                    self.metrics.fsyncs.increment(1);
                }
                policy.made_durable();
            }
            Err(e) => {
                self.durable_point_failed(e);
                policy.durable_point_failed();
            }
        }
    }

    /// A checkpoint (a durable redb commit, after which the log starts over).
    fn checkpoint(&self, policy: &mut Policy) {
        let ok = match self.store.flush() {
            Ok(()) => {
                self.metrics.fsyncs.increment(1);
                self.metrics.checkpoints.increment(1);
                true
            }
            Err(e) => {
                self.durable_point_failed(e);
                false
            }
        };
        policy.checkpointed(ok);
    }

    fn durable_point_failed(&self, e: Error) {
        // Answered batches are not yet safe from a power loss; the next durable point comes a flush interval
        // later. redb refuses writes after a failed commit until reopened, and a clean reopen persists what was
        // committed.
        tracing::error!(shard = self.store.shard().0, error = %e, "durable flush failed");
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
