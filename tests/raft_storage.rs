//! The Raft storage of a shard: its log (`cluster::log`) and its state machine (`cluster::state`, the shard file
//! through the shard's worker), under openraft's own storage test suite. Then what the suite does not check: that applied
//! commands and their log position travel with a snapshot to another replica; that the log comes back from its
//! files after a restart (entries, vote, committed id, purge point); that an append reported durable is in the
//! file; that a record torn by a crash at the end is cut off while damage elsewhere refuses the open; and that
//! purging deletes whole segments.

use std::collections::BTreeSet;
use std::io;
use std::sync::Arc;

use openraft::alias::{EntryOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::testing::{blank_ent, log_id, membership_ent};
use openraft::type_config::TypeConfigExt;
use openraft::{EntryPayload, RaftLogReader, RaftSnapshotBuilder, StorageError};
use shale::cluster::log::RaftLog;
use shale::cluster::state::ShardState;
use shale::cluster::types::{Proposal, ShardRaft};
use shale::command::{Command, Precondition, Space};
use shale::engine::durability::Log;
use shale::engine::store::Store;
use shale::placement::ShardId;
use shale::shard::cache::Cache;
use shale::shard::snapshot::{Rendezvous, SnapshotRequest};
use shale::shard::{Readiness, ShardHandle, ShardOptions};
use shale::Config;

// ---- openraft's suite ----

/// A shard as a cluster runs it: its file without a write-ahead log, its worker, and a cache.
struct Shard {
    dir: tempfile::TempDir,
    handle: ShardHandle,
}

fn shard() -> Shard {
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = Store::open(dir.path().join("shard-0.redb"), ShardId(0), 1 << 20, Log::Off).expect("a shard file");
    let readiness = Readiness::new(1);
    let options = ShardOptions::from_config(&Config::for_test(dir.path()));
    let (handle, _join) =
        shale::shard::spawn(Arc::new(store), Cache::new(1 << 20), options, readiness.clone()).expect("a worker");
    while !readiness.is_ready() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Shard { dir, handle }
}

fn state_of(shard: &Shard) -> ShardState {
    ShardState::new(shard.handle.clone(), shard.dir.path().join("shard-0.snapshots")).expect("a snapshot dir")
}

struct Fresh;

impl StoreBuilder<ShardRaft, RaftLog, ShardState, tempfile::TempDir> for Fresh {
    async fn build(&self) -> Result<(tempfile::TempDir, RaftLog, ShardState), StorageError<ShardRaft>> {
        let shard = shard();
        let log = RaftLog::open(&shard.dir.path().join("raft"), 1).expect("a new log").remove(0);
        let state = state_of(&shard);
        Ok((shard.dir, log, state))
    }
}

#[test]
fn openraft_storage_suite_passes() {
    ShardRaft::run(async {
        Suite::test_all(Fresh).await.expect("openraft's storage suite");
    });
}

// ---- the state machine: commands applied through the shard's worker, snapshots that carry them ----

fn put(key: &str, value: &str) -> Command {
    Command::kv_put(key.as_bytes(), value.as_bytes(), Precondition::NONE)
}

fn proposal(index: u64, cmd: Command) -> Entry {
    Entry { log_id: log_id::<ShardRaft>(1, 1, index), payload: EntryPayload::Normal(Proposal { command: cmd }) }
}

async fn apply(state: &mut ShardState, entries: Vec<Entry>) {
    let stream = futures_util::stream::iter(entries.into_iter().map(|e| Ok((e, None))));
    state.apply(stream).await.expect("queued");
    // Applying is pipelined: the applied state is read once the worker has applied everything queued.
    state.applied_state().await.expect("applied");
}

/// The record of `key` in the shard's committed state, once the held transaction is committed.
fn value(shard: &Shard, key: &str) -> Option<Vec<u8>> {
    shard.handle.store().settle().unwrap();
    shard.handle.store().get(Space::Kv, key.as_bytes()).unwrap().map(|r| r.value().to_vec())
}

#[test]
fn the_applied_index_moves_once_the_worker_has_applied_not_when_the_entries_are_queued() {
    run(async {
        let a = shard();
        let mut sa = state_of(&a);
        let mut applied = sa.applied();
        // The worker held in a backup's rendezvous of two parties (it and this test) cannot apply anything.
        let rendezvous = Rendezvous::new(2);
        let (reply, _snapshot) = crossbeam_channel::bounded(1);
        a.handle.request_snapshot(SnapshotRequest { rendezvous: rendezvous.clone(), reply }).unwrap();
        let stream = futures_util::stream::iter([Ok((proposal(1, put("k", "one")), None))]);
        sa.apply(stream).await.expect("queued while the worker is held");
        assert_eq!(*applied.borrow(), None, "queued entries are not applied ones: a linearizable read waits for them");
        assert_eq!(value(&a, "k"), None);
        // Released (the rendezvous meets twice: paused, then the snapshot opened), the worker applies the entry.
        tokio::task::spawn_blocking(move || assert!(rendezvous.meet() && rendezvous.meet())).await.unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(10), applied.wait_for(|a| a.is_some_and(|a| a >= 1)))
            .await
            .expect("applied in time")
            .unwrap();
        assert_eq!(value(&a, "k").as_deref(), Some(&b"one"[..]), "the applied index moves once the file holds it");
    });
}

#[test]
fn applied_commands_and_their_position_move_with_a_snapshot_to_another_replica() {
    run(async {
        let a = shard();
        let mut sa = state_of(&a);
        let members = membership_ent::<ShardRaft>(1, 1, 1, vec![BTreeSet::from([1, 2, 3])]);
        apply(&mut sa, vec![members, proposal(2, put("k", "one")), proposal(3, put("k", "two"))]).await;
        apply(&mut sa, vec![proposal(4, put("j", "three"))]).await;
        assert_eq!(value(&a, "k").as_deref(), Some(&b"two"[..]));
        let (applied, membership) = sa.applied_state().await.unwrap();
        assert_eq!(applied, Some(log_id::<ShardRaft>(1, 1, 4)));
        assert_eq!(membership.log_id(), &Some(log_id::<ShardRaft>(1, 1, 1)));

        let snapshot = sa.build_snapshot().await.expect("a snapshot");
        assert_eq!(snapshot.meta.last_log_id, Some(log_id::<ShardRaft>(1, 1, 4)));
        // Writes after the snapshot are not in it.
        apply(&mut sa, vec![proposal(5, put("k", "four"))]).await;
        let current = sa.get_current_snapshot().await.unwrap().expect("the built snapshot is current");
        assert_eq!(current.meta, snapshot.meta);

        let b = shard();
        let mut sb = state_of(&b);
        apply(&mut sb, vec![proposal(1, put("stale", "x"))]).await;
        sb.install_snapshot(&current.meta, current.snapshot).await.expect("installed");
        assert_eq!(value(&b, "k").as_deref(), Some(&b"two"[..]), "the snapshot's value, not the later one");
        assert_eq!(value(&b, "j").as_deref(), Some(&b"three"[..]));
        assert_eq!(value(&b, "stale"), None, "the replica's own state is replaced");
        assert_eq!(
            sb.applied_state().await.unwrap(),
            (snapshot.meta.last_log_id, snapshot.meta.last_membership.clone())
        );
        let theirs = sb.get_current_snapshot().await.unwrap().expect("the installed snapshot is current");
        assert_eq!(theirs.meta, snapshot.meta);
        // The installed replica goes on from there, with revisions after the snapshot's.
        apply(&mut sb, vec![proposal(5, put("k", "four"))]).await;
        a.handle.store().settle().unwrap();
        b.handle.store().settle().unwrap();
        let rev_a = a.handle.store().get(Space::Kv, b"k").unwrap().unwrap().rev();
        let rev_b = b.handle.store().get(Space::Kv, b"k").unwrap().unwrap().rev();
        assert_eq!(rev_a, rev_b, "both replicas gave the same write the same revision");
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
        let path = dir.path().join("raft");
        let vote = VoteOf::<ShardRaft>::new_committed(3, 2);
        {
            let mut log = RaftLog::open(&path, 1).unwrap().remove(0);
            let seg = path.join(format!("{:020}.seg", 1));
            let empty = std::fs::metadata(&seg).unwrap().len();
            append(&mut log, entries(1, 1..=10)).await;
            // Reported durable: the records are in the file, whatever the writer does next.
            let written = std::fs::metadata(&seg).unwrap().len();
            assert!(written >= empty + 10 * 17, "{empty} bytes before ten appends, {written} after");
            append(&mut log, vec![membership_ent::<ShardRaft>(1, 1, 11, vec![BTreeSet::from([1, 2, 3])])]).await;
            log.truncate_after(Some(log_id::<ShardRaft>(1, 1, 8))).await.unwrap();
            append(&mut log, entries(2, 9..=12)).await;
            log.save_committed(Some(log_id::<ShardRaft>(2, 1, 10))).await.unwrap();
            log.purge(log_id::<ShardRaft>(1, 1, 4)).await.unwrap();
            log.save_vote(&vote).await.unwrap();
        }
        let mut log = RaftLog::open(&path, 1).unwrap().remove(0);
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
        let path = dir.path().join("raft");
        {
            let mut log = RaftLog::open(&path, 1).unwrap().remove(0);
            append(&mut log, entries(1, 1..=5)).await;
        }
        let seg = path.join(format!("{:020}.seg", 1));
        let whole = std::fs::read(&seg).unwrap();
        // A crash in the middle of the last record's write: its last bytes never reached the disk.
        std::fs::write(&seg, &whole[..whole.len() - 3]).unwrap();
        {
            let mut log = RaftLog::open(&path, 1).unwrap().remove(0);
            assert_eq!(indexes(&mut log).await, vec![1, 2, 3, 4], "the torn entry 5 is gone");
            append(&mut log, entries(1, 5..=6)).await;
        }
        let mut log = RaftLog::open(&path, 1).unwrap().remove(0);
        assert_eq!(indexes(&mut log).await, vec![1, 2, 3, 4, 5, 6], "appends after the cut replay");
        drop(log);

        // A flipped byte in a segment that is not the last: the log refuses to open rather than lose what follows.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft");
        {
            let mut log = RaftLog::open_with(&path, 1, 256).unwrap().remove(0);
            for i in 1..=20 {
                append(&mut log, entries(1, i..=i)).await;
            }
        }
        let first = path.join(format!("{:020}.seg", 1));
        let mut bytes = std::fs::read(&first).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&first, bytes).unwrap();
        let err = RaftLog::open_with(&path, 1, 256).err().expect("damage refuses the open");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    });
}

#[test]
fn purging_deletes_the_segments_it_empties_and_keeps_the_rest() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft");
        let segments = || std::fs::read_dir(&path).unwrap().count();
        let mut log = RaftLog::open_with(&path, 1, 128).unwrap().remove(0);
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
        let mut log = RaftLog::open_with(&path, 1, 128).unwrap().remove(0);
        assert_eq!(indexes(&mut log).await, (31..=41).collect::<Vec<_>>());
        assert_eq!(log.get_log_state().await.unwrap().last_purged_log_id, Some(log_id::<ShardRaft>(1, 1, 30)));
    });
}

#[test]
fn a_purge_past_the_last_entry_leaves_an_empty_log_at_the_purge_point() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft");
        {
            let mut log = RaftLog::open(&path, 1).unwrap().remove(0);
            append(&mut log, entries(1, 1..=3)).await;
            // As after a snapshot was installed: the log is purged beyond what it holds.
            log.purge(log_id::<ShardRaft>(2, 1, 50)).await.unwrap();
        }
        let mut log = RaftLog::open(&path, 1).unwrap().remove(0);
        assert!(indexes(&mut log).await.is_empty());
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(log_id::<ShardRaft>(2, 1, 50)));
        assert_eq!(state.last_log_id, Some(log_id::<ShardRaft>(2, 1, 50)));
    });
}

#[test]
fn the_shards_of_a_node_share_one_log_and_each_replays_its_own() {
    run(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft");
        let segments = || std::fs::read_dir(&path).unwrap().count();
        let vote = VoteOf::<ShardRaft>::new_committed(7, 3);
        let mut logs = RaftLog::open_with(&path, 2, 128).unwrap();
        let (mut zero, mut one) = (logs.remove(0), logs.remove(0));
        for i in 1..=20 {
            append(&mut zero, entries(1, i..=i)).await;
            if i <= 5 {
                append(&mut one, entries(2, i..=i)).await;
            }
        }
        one.save_vote(&vote).await.unwrap();
        let before = segments();
        assert!(before >= 4, "{before} segments of 128 bytes for 25 entries");
        // Shard 0's purge empties segments that still hold shard 1's entries: those stay.
        zero.purge(log_id::<ShardRaft>(1, 1, 20)).await.unwrap();
        append(&mut zero, entries(1, 21..=21)).await;
        let kept = segments();
        assert!(kept < before, "segments without shard 1's entries go: {before} before, {kept} after");
        assert!(kept >= 2, "segments holding shard 1's entries stay: {kept} left");
        one.purge(log_id::<ShardRaft>(2, 1, 5)).await.unwrap();
        append(&mut one, entries(2, 6..=6)).await;
        let after = segments();
        assert!(after < kept, "{kept} segments before shard 1's purge, {after} after");
        drop((zero, one));

        let mut logs = RaftLog::open_with(&path, 2, 128).unwrap();
        let (mut zero, mut one) = (logs.remove(0), logs.remove(0));
        assert_eq!(indexes(&mut zero).await, vec![21]);
        assert_eq!(indexes(&mut one).await, vec![6]);
        assert_eq!(one.try_get_log_entries(6..=6).await.unwrap()[0].log_id(), log_id::<ShardRaft>(2, 1, 6));
        assert_eq!(one.read_vote().await.unwrap(), Some(vote));
        assert_eq!(zero.read_vote().await.unwrap(), None, "a vote belongs to its shard");
        drop((zero, one));

        // The same files opened for another number of shards: refused, never read as other shards' logs.
        let err = RaftLog::open_with(&path, 3, 128).err().expect("another shard count refuses the open");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    });
}

#[test]
fn applied_entries_lost_with_a_failed_commit_stop_every_later_apply() {
    run(async {
        let a = shard();
        let mut sa = state_of(&a);
        let mut applied = sa.applied();
        let stream = futures_util::stream::iter([Ok((proposal(1, put("k", "one")), None))]);
        sa.apply(stream).await.expect("queued");
        tokio::time::timeout(std::time::Duration::from_secs(10), applied.wait_for(|a| a.is_some_and(|a| a >= 1)))
            .await
            .expect("applied in time")
            .unwrap();
        assert!(a.handle.store().pending(), "the applied entry waits in the held transaction");
        // The disk fails the held transaction's commit: entry 1 is gone from the file, which cannot replay it.
        a.handle.store().inject_late_commit_failures(1);
        assert!(a.handle.store().settle().is_err(), "the injected commit failure");
        let stream = futures_util::stream::iter([Ok((proposal(2, put("j", "two")), None))]);
        sa.apply(stream).await.expect("queued");
        let stopped = sa.applied_state().await;
        assert!(stopped.is_err(), "entry 2 must not be applied to a file that lost entry 1: {stopped:?}");
        let stream = futures_util::stream::iter([Ok((proposal(3, put("i", "three")), None))]);
        assert!(sa.apply(stream).await.is_err(), "the group stops at its next call");
    });
}
