//! The durability policy of a shard, in one place: when a write is safe to acknowledge, when redb commits, when
//! the log is fdatasynced and when a checkpoint lets it start over. The store ([`crate::engine::store`]) and the
//! log ([`crate::engine::wal`]) provide the mechanisms; the shard worker asks this module when to use them.
//!
//! - `DURABILITY=immediate` ([`Log::Fsynced`]): a batch's changes are appended to the shard's log as one frame and
//!   fdatasynced before any of its writes is answered. redb then commits without an fsync, and not at once: the
//!   write transaction is held across answered batches ([`HOLD_BATCHES`], [`HOLD_BYTES`], [`HOLD_TIME`]). A
//!   checkpoint (a durable redb commit, after which the log starts over) comes every [`CHECKPOINT_BYTES`] of log,
//!   after a batch refused for lack of space, and at a clean stop; never on a timer, since every frame is already
//!   durable and a checkpoint stalls its shard while redb writes out every page touched since the last one.
//! - `DURABILITY=eventual` ([`Log::Written`]): the frame is written, not fdatasynced; the log is fdatasynced at
//!   least every `FLUSH_INTERVAL_MS`, and checkpoints come as under `immediate`.
//! - No log ([`Log::Off`]: tools and tests): each batch is one redb commit, durable under `immediate`, and at most
//!   `FLUSH_INTERVAL_MS` apart under `eventual`.

use std::time::{Duration, Instant};

use crate::config::Durability;

/// Whether and how a store logs each batch before it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Log {
    /// No log: each batch is one redb commit, fsynced or not as [`Policy::commit_is_durable`] says.
    Off,
    /// `DURABILITY=eventual`: the batch's frame is written to the log, not fdatasynced. It survives a crash of the
    /// process (the kernel holds it); the log's next fdatasync or checkpoint makes it survive a power loss.
    Written,
    /// `DURABILITY=immediate`: the batch's frame is written and fdatasynced.
    Fsynced,
}

impl Log {
    /// The log a shard keeps under `durability`.
    pub fn for_durability(durability: Durability) -> Log {
        match durability {
            Durability::Immediate => Log::Fsynced,
            Durability::Eventual => Log::Written,
        }
    }
}

/// Log bytes after which the shard checkpoints (this bounds the replay at start-up to about this much).
pub const CHECKPOINT_BYTES: u64 = 8 << 20;

/// A held transaction is committed once it holds this many answered batches, [`HOLD_BYTES`] of commands, or is
/// [`HOLD_TIME`] old. Why this long: a batch that writes to a leaf page the held transaction has not touched yet
/// copies that page (redb's copy on write) and the commit writes it out, while later batches change it in place,
/// so the longer the hold, the fewer page copies per write. What a hold keeps in memory is bounded by redb's
/// write buffer (half its cache), not by these limits; beyond it, redb writes the transaction's pages out early.
pub const HOLD_BATCHES: u32 = 1024;
/// ... or this many bytes of commands (the checkpoint comes at [`CHECKPOINT_BYTES`] of log anyway).
pub const HOLD_BYTES: usize = 8 << 20;
/// ... or once it is this old (the shard thread wakes up for it when no batch comes).
pub const HOLD_TIME: Duration = Duration::from_secs(1);

/// After a checkpoint made to free room for writes refused for lack of space failed, the time before the next.
pub const NO_ROOM_CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// A shard's durability state: whether answered batches still wait for a durable point, when the last one was,
/// and when a failed make-room checkpoint may be tried again. The shard worker asks it what to do and tells it
/// what happened; it decides nothing by itself.
#[derive(Debug)]
pub struct Policy {
    log: Log,
    durability: Durability,
    /// Longest time between fsyncs of the log (`eventual`), or between durable commits without a log.
    flush_interval: Duration,
    /// Answered batches wait for the next durable point (a checkpoint, or under `eventual` the log's fdatasync).
    exposed: bool,
    last_durable: Instant,
    /// After a make-room checkpoint failed: when the next may be tried.
    no_room_retry: Option<Instant>,
}

impl Policy {
    /// The policy of a shard whose store logs as `log`.
    pub fn new(log: Log, durability: Durability, flush_interval: Duration) -> Policy {
        Policy { log, durability, flush_interval, exposed: false, last_durable: Instant::now(), no_room_retry: None }
    }

    /// Whether the store logs its batches.
    pub fn logged(&self) -> bool {
        self.log != Log::Off
    }

    /// Whether a batch's redb commit must itself be durable: only without a log, under `immediate` or once the
    /// flush interval passed since the last durable point. A logged batch is kept by its log frame.
    pub fn commit_is_durable(&self) -> bool {
        self.log == Log::Off
            && (self.durability == Durability::Immediate || self.last_durable.elapsed() >= self.flush_interval)
    }

    /// Records a batch committed `durable` or not: under `immediate` the log's fdatasync already made it durable.
    pub fn batch_committed(&mut self, durable: bool) {
        if durable {
            self.made_durable();
        } else {
            self.exposed = self.log != Log::Fsynced;
        }
    }

    /// When the worker must wake up for a durable point, if answered batches wait for one.
    pub fn durable_point_at(&self) -> Option<Instant> {
        self.exposed.then(|| self.last_durable + self.flush_interval)
    }

    /// Whether a durable point is due now.
    pub fn durable_point_due(&self) -> bool {
        self.durable_point_at().is_some_and(|at| at <= Instant::now())
    }

    /// Whether the durable point is the log's fdatasync (`eventual`) rather than a checkpoint.
    pub fn durable_point_syncs_the_log(&self) -> bool {
        self.log == Log::Written
    }

    /// Whether a logged shard checkpoints after a batch: once [`CHECKPOINT_BYTES`] of log piled up, or to make
    /// room after a batch was refused for lack of space (the log then overwrites its own file from offset 0
    /// instead of growing, and redb reuses the pages freed since the last durable commit), unless such a
    /// checkpoint failed less than [`NO_ROOM_CHECKPOINT_EVERY`] ago.
    pub fn checkpoint_due(&self, log_bytes: u64, refused_for_room: bool) -> bool {
        let make_room = refused_for_room && log_bytes > 0 && self.no_room_retry.is_none_or(|at| Instant::now() >= at);
        self.logged() && (log_bytes >= CHECKPOINT_BYTES || make_room)
    }

    /// Whether a stopping shard must checkpoint, so the next start has nothing to replay.
    pub fn checkpoint_at_stop(&self, log_bytes: u64) -> bool {
        self.exposed || log_bytes > 0
    }

    /// Records a checkpoint's result.
    pub fn checkpointed(&mut self, ok: bool) {
        if ok {
            self.made_durable();
            self.no_room_retry = None;
        } else {
            self.durable_point_failed();
            self.no_room_retry = Some(Instant::now() + NO_ROOM_CHECKPOINT_EVERY);
        }
    }

    /// Records a durable point: every answered batch survives a power loss.
    pub fn made_durable(&mut self) {
        self.exposed = false;
        self.last_durable = Instant::now();
    }

    /// Records a failed durable point: the next is tried a flush interval later.
    pub fn durable_point_failed(&mut self) {
        self.last_durable = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_store_without_a_log_commits_durably() {
        let second = Duration::from_secs(1);
        assert!(Policy::new(Log::Off, Durability::Immediate, second).commit_is_durable());
        assert!(!Policy::new(Log::Off, Durability::Eventual, second).commit_is_durable());
        assert!(Policy::new(Log::Off, Durability::Eventual, Duration::ZERO).commit_is_durable());
        assert!(!Policy::new(Log::Fsynced, Durability::Immediate, Duration::ZERO).commit_is_durable());
        assert!(!Policy::new(Log::Written, Durability::Eventual, Duration::ZERO).commit_is_durable());
    }

    #[test]
    fn only_an_eventual_batch_waits_for_a_durable_point() {
        let mut immediate = Policy::new(Log::Fsynced, Durability::Immediate, Duration::from_secs(1));
        immediate.batch_committed(false);
        assert_eq!(immediate.durable_point_at(), None, "the log's fdatasync made it durable");
        let mut eventual = Policy::new(Log::Written, Durability::Eventual, Duration::ZERO);
        eventual.batch_committed(false);
        assert!(eventual.durable_point_due() && eventual.durable_point_syncs_the_log());
        eventual.made_durable();
        assert_eq!(eventual.durable_point_at(), None);
    }

    #[test]
    fn a_checkpoint_comes_by_log_size_or_to_make_room_but_not_right_after_one_failed() {
        let mut p = Policy::new(Log::Fsynced, Durability::Immediate, Duration::from_secs(1));
        assert!(!p.checkpoint_due(CHECKPOINT_BYTES - 1, false));
        assert!(p.checkpoint_due(CHECKPOINT_BYTES, false));
        assert!(p.checkpoint_due(1, true));
        assert!(!p.checkpoint_due(0, true), "an empty log frees nothing");
        p.checkpointed(false);
        assert!(!p.checkpoint_due(1, true), "a failed make-room checkpoint waits");
        assert!(p.checkpoint_due(CHECKPOINT_BYTES, false), "the size rule does not wait");
        p.checkpointed(true);
        assert!(p.checkpoint_due(1, true));
        assert!(!Policy::new(Log::Off, Durability::Immediate, Duration::ZERO).checkpoint_due(CHECKPOINT_BYTES, true));
    }
}
