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
    /// No log: each batch is one redb commit, fsynced or not as [`commit_is_durable`] says.
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

/// Whether a batch's redb commit must itself be durable: only without a log, under `immediate` or once
/// `flush_interval` passed since the last durable point. A logged batch is kept by its log frame.
pub fn commit_is_durable(log: Log, durability: Durability, since_durable: Duration, flush_interval: Duration) -> bool {
    log == Log::Off && (durability == Durability::Immediate || since_durable >= flush_interval)
}

/// Whether answered batches wait for a later durable point after a batch committed `durable` or not: under
/// `immediate` the log's fdatasync already made them durable.
pub fn leaves_answered_batches_exposed(log: Log, durable: bool) -> bool {
    !durable && log != Log::Fsynced
}

/// Whether a logged shard checkpoints after a batch: once [`CHECKPOINT_BYTES`] of log piled up, or to make room
/// after a batch was refused for lack of space (the log then overwrites its own file from offset 0 instead of
/// growing, and redb reuses the pages freed since the last durable commit), unless such a checkpoint failed less
/// than [`NO_ROOM_CHECKPOINT_EVERY`] ago (`no_room_retry`).
pub fn checkpoint_due(log_bytes: u64, refused_for_room: bool, no_room_retry: Option<Instant>) -> bool {
    let make_room = refused_for_room && log_bytes > 0 && no_room_retry.is_none_or(|at| Instant::now() >= at);
    log_bytes >= CHECKPOINT_BYTES || make_room
}

/// When a failed make-room checkpoint may be tried again (`None` after a checkpoint that succeeded).
pub fn no_room_retry_after(checkpointed: bool) -> Option<Instant> {
    (!checkpointed).then(|| Instant::now() + NO_ROOM_CHECKPOINT_EVERY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_store_without_a_log_commits_durably() {
        let (second, zero) = (Duration::from_secs(1), Duration::ZERO);
        assert!(commit_is_durable(Log::Off, Durability::Immediate, zero, second));
        assert!(!commit_is_durable(Log::Off, Durability::Eventual, zero, second));
        assert!(commit_is_durable(Log::Off, Durability::Eventual, second, second));
        assert!(!commit_is_durable(Log::Fsynced, Durability::Immediate, second, second));
        assert!(!commit_is_durable(Log::Written, Durability::Eventual, second, second));
    }

    #[test]
    fn a_checkpoint_comes_by_log_size_or_to_make_room_but_not_right_after_one_failed() {
        assert!(!checkpoint_due(CHECKPOINT_BYTES - 1, false, None));
        assert!(checkpoint_due(CHECKPOINT_BYTES, false, None));
        assert!(checkpoint_due(1, true, None));
        assert!(!checkpoint_due(0, true, None), "an empty log frees nothing");
        assert!(!checkpoint_due(1, true, no_room_retry_after(false)));
        assert!(checkpoint_due(1, true, Some(Instant::now())));
        assert_eq!(no_room_retry_after(true), None);
    }
}
