//! The Raft log of a shard (`cluster::log`): openraft's own storage test suite, and what the suite does not
//! check: that the log comes back from its files after a restart (entries, vote, committed id, purge point), that
//! an append reported durable is in the file, that a record torn by a crash at the end is cut off while damage
//! elsewhere refuses the open, and that purging deletes whole segments.
//!
//! The suite also needs a state machine; `Memory` below is a test-only one (registers applied in memory).

use std::collections::BTreeSet;
use std::io;
use std::sync::{Arc, Mutex};

use futures_util::TryStreamExt;
use openraft::alias::{EntryOf, LogIdOf, SnapshotMetaOf, SnapshotOf, StoredMembershipOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::testing::{blank_ent, log_id, membership_ent};
use openraft::type_config::TypeConfigExt;
use openraft::{EntryPayload, OptionalSend, RaftLogReader, RaftSnapshotBuilder, StorageError};
use shale::cluster::log::RaftLog;
use shale::cluster::types::{Applied, ShardRaft};
use shale::command::Reply;

// ---- openraft's suite ----

/// The last applied log id and the membership.
type AppliedState = (Option<LogIdOf<ShardRaft>>, StoredMembershipOf<ShardRaft>);

/// A state machine in memory, only for the suite: it records what was applied and the membership.
#[derive(Clone, Default)]
struct Memory {
    state: Arc<Mutex<AppliedState>>,
    snapshot: Arc<Mutex<Option<SnapshotMetaOf<ShardRaft>>>>,
}

impl RaftSnapshotBuilder<ShardRaft> for Memory {
    type SnapshotData = ();

    async fn build_snapshot(&mut self) -> Result<SnapshotOf<ShardRaft, ()>, io::Error> {
        let (applied, membership) = self.state.lock().unwrap().clone();
        let meta = SnapshotMetaOf::<ShardRaft> { last_log_id: applied, last_membership: membership };
        *self.snapshot.lock().unwrap() = Some(meta.clone());
        Ok(SnapshotOf::<ShardRaft, ()> { meta, snapshot: () })
    }
}

impl RaftStateMachine<ShardRaft> for Memory {
    type SnapshotData = ();
    type SnapshotBuilder = Memory;

    async fn applied_state(&mut self) -> Result<AppliedState, io::Error> {
        Ok(self.state.lock().unwrap().clone())
    }

    async fn apply<S>(&mut self, mut entries: S) -> Result<(), io::Error>
    where
        S: futures_util::Stream<Item = Result<EntryResponder<ShardRaft>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let mut state = self.state.lock().unwrap();
            state.0 = Some(entry.log_id);
            if let EntryPayload::Membership(m) = entry.payload {
                state.1 = StoredMembershipOf::<ShardRaft>::new(Some(entry.log_id), m);
            }
            drop(state);
            if let Some(r) = responder {
                r.send(Applied(Ok(Reply::Deleted)));
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Memory {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMetaOf<ShardRaft>, _: ()) -> Result<(), io::Error> {
        *self.state.lock().unwrap() = (meta.last_log_id, meta.last_membership.clone());
        *self.snapshot.lock().unwrap() = Some(meta.clone());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<SnapshotOf<ShardRaft, ()>>, io::Error> {
        let meta = self.snapshot.lock().unwrap().clone();
        Ok(meta.map(|meta| SnapshotOf::<ShardRaft, ()> { meta, snapshot: () }))
    }
}

struct Fresh;

impl StoreBuilder<ShardRaft, RaftLog, Memory, tempfile::TempDir> for Fresh {
    async fn build(&self) -> Result<(tempfile::TempDir, RaftLog, Memory), StorageError<ShardRaft>> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let log = RaftLog::open(&dir.path().join("shard-0.raft")).expect("a new log");
        Ok((dir, log, Memory::default()))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    ShardRaft::run(async {
        Suite::test_all(Fresh).await.expect("openraft's storage suite");
    });
}

// ---- what the suite does not check ----

type Entry = EntryOf<ShardRaft>;

fn entries(term: u64, range: std::ops::RangeInclusive<u64>) -> Vec<Entry> {
    range.map(|i| blank_ent::<ShardRaft>(term, 1, i)).collect()
}

/// Appends and waits until the log reports the entries durable.
async fn append(log: &mut RaftLog, batch: Vec<Entry>) {
    let (tx, rx) = ShardRaft::oneshot();
    log.append(batch, IOFlushed::signal(tx)).await.expect("append");
    rx.await.expect("the callback fired").expect("durable");
}

async fn indexes(log: &mut RaftLog) -> Vec<u64> {
    log.try_get_log_entries(..).await.unwrap().iter().map(|e| e.index()).collect()
}

fn run(f: impl std::future::Future<Output = ()>) {
    ShardRaft::run(f);
}

#[test]
fn a_reopened_log_has_its_entries_vote_commit_and_purge_point() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard-0.raft");
        let vote = VoteOf::<ShardRaft>::new_committed(3, 2);
        {
            let mut log = RaftLog::open(&path).unwrap();
            let seg = path.join(format!("{:020}.seg", 1));
            let empty = std::fs::metadata(&seg).unwrap().len();
            append(&mut log, entries(1, 1..=10)).await;
            // Reported durable: the records are in the file, whatever the writer does next.
            let written = std::fs::metadata(&seg).unwrap().len();
            assert!(written >= empty + 10 * 13, "{empty} bytes before ten appends, {written} after");
            append(&mut log, vec![membership_ent::<ShardRaft>(1, 1, 11, vec![BTreeSet::from([1, 2, 3])])]).await;
            log.truncate_after(Some(log_id::<ShardRaft>(1, 1, 8))).await.unwrap();
            append(&mut log, entries(2, 9..=12)).await;
            log.save_committed(Some(log_id::<ShardRaft>(2, 1, 10))).await.unwrap();
            log.purge(log_id::<ShardRaft>(1, 1, 4)).await.unwrap();
            log.save_vote(&vote).await.unwrap();
        }
        let mut log = RaftLog::open(&path).unwrap();
        assert_eq!(indexes(&mut log).await, (5..=12).collect::<Vec<_>>());
        let reread = log.try_get_log_entries(9..=9).await.unwrap();
        assert_eq!(reread[0].log_id(), log_id::<ShardRaft>(2, 1, 9), "the entry after the truncation");
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id::<ShardRaft>(2, 1, 10)));
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id::<ShardRaft>(1, 1, 4)));
        assert_eq!(state.last_log_id, Some(log_id::<ShardRaft>(2, 1, 12)));
    });
}

#[test]
fn a_torn_last_record_is_cut_off_and_damage_before_it_refuses_the_open() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard-0.raft");
        {
            let mut log = RaftLog::open(&path).unwrap();
            append(&mut log, entries(1, 1..=5)).await;
        }
        let seg = path.join(format!("{:020}.seg", 1));
        let whole = std::fs::read(&seg).unwrap();
        // A crash in the middle of the last record's write: its last bytes never reached the disk.
        std::fs::write(&seg, &whole[..whole.len() - 3]).unwrap();
        {
            let mut log = RaftLog::open(&path).unwrap();
            assert_eq!(indexes(&mut log).await, vec![1, 2, 3, 4], "the torn entry 5 is gone");
            append(&mut log, entries(1, 5..=6)).await;
        }
        let mut log = RaftLog::open(&path).unwrap();
        assert_eq!(indexes(&mut log).await, vec![1, 2, 3, 4, 5, 6], "appends after the cut replay");
        drop(log);

        // A flipped byte in a segment that is not the last: the log refuses to open rather than lose what follows.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard-0.raft");
        {
            let mut log = RaftLog::open_with(&path, 256).unwrap();
            for i in 1..=20 {
                append(&mut log, entries(1, i..=i)).await;
            }
        }
        let first = path.join(format!("{:020}.seg", 1));
        let mut bytes = std::fs::read(&first).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&first, bytes).unwrap();
        let err = RaftLog::open_with(&path, 256).err().expect("damage refuses the open");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    });
}

#[test]
fn purging_deletes_the_segments_it_empties_and_keeps_the_rest() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard-0.raft");
        let segments = || std::fs::read_dir(&path).unwrap().count();
        let mut log = RaftLog::open_with(&path, 128).unwrap();
        for i in 1..=40 {
            append(&mut log, entries(1, i..=i)).await;
        }
        let before = segments();
        assert!(before >= 4, "{before} segments of 128 bytes for 40 entries");
        log.purge(log_id::<ShardRaft>(1, 1, 30)).await.unwrap();
        // The purge is queued; the next durable write is done after it.
        append(&mut log, entries(1, 41..=41)).await;
        let after = segments();
        assert!(after < before && after >= 1, "{before} segments before the purge, {after} after");
        drop(log);
        let mut log = RaftLog::open_with(&path, 128).unwrap();
        assert_eq!(indexes(&mut log).await, (31..=41).collect::<Vec<_>>());
        assert_eq!(log.get_log_state().await.unwrap().last_purged_log_id, Some(log_id::<ShardRaft>(1, 1, 30)));
    });
}

#[test]
fn a_purge_past_the_last_entry_leaves_an_empty_log_at_the_purge_point() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shard-0.raft");
        {
            let mut log = RaftLog::open(&path).unwrap();
            append(&mut log, entries(1, 1..=3)).await;
            // As after a snapshot was installed: the log is purged beyond what it holds.
            log.purge(log_id::<ShardRaft>(2, 1, 50)).await.unwrap();
        }
        let mut log = RaftLog::open(&path).unwrap();
        assert!(indexes(&mut log).await.is_empty());
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id::<ShardRaft>(2, 1, 50)));
        assert_eq!(state.last_log_id, Some(log_id::<ShardRaft>(2, 1, 50)));
    });
}
