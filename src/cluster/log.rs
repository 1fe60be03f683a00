//! The Raft logs of a node's shards: each shard's entries, vote, committed id and purge point, in one sequence of
//! segment files that one writer thread appends in the order they were asked for.
//!
//! # One log for every shard
//! Every shard's group has a log of its own (a [`RaftLog`]: its own entries, vote and purge point), but their
//! records go to one file: a round of the writer covers what every shard queued with one `write` and one
//! `fdatasync`. The shards of a node share its disk, so separate files would cost one fdatasync per shard per
//! round, each a round trip to the disk, for the same durability.
//!
//! # Ordering and durability (what openraft requires of a log store)
//! - Every change (an append, the vote, the committed id, a truncation, a purge) is applied to the shard's
//!   in-memory view before its call returns, so it is readable at once, and queued to the writer in call order.
//! - The writer takes everything queued, writes it with one `write` and, when any of it must be durable, one
//!   `fdatasync` (group commit), then reports each append durable (`IOFlushed`) in order. A report covers every
//!   earlier write too, since all of them precede it in one file.
//! - [`save_vote`](RaftLogStorage::save_vote) returns only after the fdatasync that covers the vote.
//! - The committed id, a truncation and a purge are not synced on their own: the next append or vote covers them,
//!   and losing one to a crash only brings back a state this log already had (entries that were never
//!   committed, or entries below a snapshot).
//! - After a failed write or fdatasync every later call of every shard fails: openraft then stops the groups,
//!   and the node must be restarted (a log whose writes failed cannot say what reached the disk).
//!
//! # Files
//! `raft/<seq>.seg` next to the shard files. A segment is a sequence of records
//! `[xxh3 of the rest: u64][body length: u32][kind: u8][shard: u32][body]`, bodies in postcard. Each segment
//! starts with every shard's vote, committed id and purge point as of its creation, so a purge can delete whole
//! older segments: one in which every shard's entries are purged is removed, and a segment past
//! [`SEGMENT_BYTES`] is closed and a new one begun. On open, the segments are replayed in order, each record into
//! its shard's log; a record torn by a crash can only be at the end of the last one, which is cut back to it. A
//! bad record anywhere else is damage, and the log refuses to open.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::ops::RangeBounds;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use openraft::alias::{EntryOf, LogIdOf, VoteOf};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, LogState, RaftLogStorage};
use openraft::{OptionalSend, RaftLogReader};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::oneshot;
use xxhash_rust::xxh3::xxh3_64;

use crate::cluster::types::ShardRaft;

type Entry = EntryOf<ShardRaft>;
type LogId = LogIdOf<ShardRaft>;
type Vote = VoteOf<ShardRaft>;

/// A segment is closed, and a new one begun, once it holds this many bytes.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// Checksum, body length, kind, shard.
const HEADER: usize = 8 + 4 + 1 + 4;
/// Every shard's vote, committed id and purge point as of the segment's creation (its first record).
const KIND_STATE: u8 = 1;
const KIND_ENTRY: u8 = 2;
const KIND_VOTE: u8 = 3;
const KIND_COMMITTED: u8 = 4;
/// Every entry after the given id (all of them for `None`) is gone.
const KIND_TRUNCATE: u8 = 5;
/// Every entry up to the given id is gone.
const KIND_PURGE: u8 = 6;

/// What a segment's first record holds of one shard.
type SegmentState = (Option<Vote>, Option<LogId>, Option<LogId>);

/// The log as every reader sees it.
#[derive(Default)]
struct View {
    entries: BTreeMap<u64, Entry>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
}

impl View {
    fn truncate_after(&mut self, last: Option<&LogId>) {
        let from = last.map_or(0, |l| l.index + 1);
        let _gone = self.entries.split_off(&from);
    }

    fn purge(&mut self, upto: &LogId) {
        self.entries = self.entries.split_off(&(upto.index + 1));
        if self.purged.as_ref().is_none_or(|p| p.index < upto.index) {
            self.purged = Some(*upto);
        }
    }

    /// Takes the shard's state from a segment's first record.
    fn replay_state(&mut self, (vote, committed, purged): SegmentState) {
        self.vote = vote;
        self.committed = committed;
        if let Some(p) = purged {
            self.purge(&p);
        }
    }

    /// Replays one record of the shard read from a segment.
    fn replay(&mut self, kind: u8, body: &[u8]) -> io::Result<()> {
        match kind {
            KIND_ENTRY => {
                let entry: Entry = decode(body)?;
                self.entries.insert(entry.index(), entry);
            }
            KIND_VOTE => self.vote = Some(decode(body)?),
            KIND_COMMITTED => self.committed = decode(body)?,
            KIND_TRUNCATE => self.truncate_after(decode::<Option<LogId>>(body)?.as_ref()),
            KIND_PURGE => self.purge(&decode(body)?),
            other => return Err(damaged(format!("unknown record kind {other}"))),
        }
        Ok(())
    }
}

/// The Raft log of one shard; cheap to clone (every clone is the same log).
#[derive(Clone)]
pub struct RaftLog {
    inner: Arc<Inner>,
}

struct Inner {
    shard: u32,
    view: RwLock<View>,
    writer: Arc<WriterThread>,
}

/// The writer thread every shard's log queues to; it ends once every log is dropped.
struct WriterThread {
    tx: Option<Sender<Write_>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for WriterThread {
    /// Lets the writer finish what was queued, sync it and close its file, so the logs can be opened again at
    /// once.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl RaftLog {
    /// Opens (or creates) the logs of shards `0..shards` in the folder `dir`, replaying them; one per shard, in
    /// shard order.
    pub fn open(dir: &Path, shards: u32) -> io::Result<Vec<RaftLog>> {
        RaftLog::open_with(dir, shards, SEGMENT_BYTES)
    }

    /// [`RaftLog::open`] with segments of `segment_bytes` (tests use small ones).
    pub fn open_with(dir: &Path, shards: u32, segment_bytes: u64) -> io::Result<Vec<RaftLog>> {
        std::fs::create_dir_all(dir)?;
        let count = shards as usize;
        let mut segments = list_segments(dir, count)?;
        let mut views: Vec<View> = (0..count).map(|_| View::default()).collect();
        if segments.is_empty() {
            segments.push(Segment::create(dir, 1, &vec![(None, None, None); count])?);
            sync_dir(dir)?;
        }
        let last = segments.len() - 1;
        for (i, seg) in segments.iter_mut().enumerate() {
            seg.replay(&mut views, i == last)?;
        }
        // A state record may name a purge point past entries of earlier segments.
        for view in &mut views {
            if let Some(p) = view.purged {
                view.purge(&p);
            }
        }
        let current = segments.pop().expect("at least one segment");
        let file = OpenOptions::new().append(true).open(&current.path)?;
        let writer = Writer {
            dir: dir.to_path_buf(),
            segment_bytes,
            closed: segments,
            current,
            file,
            states: views.iter().map(|v| (v.vote, v.committed, v.purged)).collect(),
            failed: None,
            append_seconds: metrics::histogram!("shale_raft_append_seconds"),
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let thread = std::thread::Builder::new().name("raft-log".into()).spawn(move || writer.run(rx))?;
        let writer = Arc::new(WriterThread { tx: Some(tx), thread: Some(thread) });
        Ok(views
            .into_iter()
            .enumerate()
            .map(|(shard, view)| RaftLog {
                inner: Arc::new(Inner { shard: shard as u32, view: RwLock::new(view), writer: writer.clone() }),
            })
            .collect())
    }

    fn view(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.inner.view.read().expect("the view lock is never held across a panic")
    }

    fn view_mut(&self) -> std::sync::RwLockWriteGuard<'_, View> {
        self.inner.view.write().expect("the view lock is never held across a panic")
    }

    /// A record of this shard.
    fn record(&self, kind: u8, body: &[u8]) -> Vec<u8> {
        record(kind, self.inner.shard, body)
    }

    fn queue(&self, bytes: Vec<u8>, sync: bool, done: Done, change: Change) -> io::Result<()> {
        let writer = self.inner.writer.tx.as_ref().expect("the writer lives as long as the logs");
        let write = Write_ { shard: self.inner.shard as usize, bytes, sync, done, change };
        writer.send(write).map_err(|_| io::Error::other("the log writer stopped"))
    }
}

impl RaftLogReader<ShardRaft> for RaftLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self.view().entries.range(range).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.view().vote)
    }
}

impl RaftLogStorage<ShardRaft> for RaftLog {
    type LogReader = RaftLog;

    async fn get_log_state(&mut self) -> Result<LogState<ShardRaft>, io::Error> {
        let view = self.view();
        let last = view.entries.values().next_back().map(|e| e.log_id()).or_else(|| view.purged);
        Ok(LogState { last_purged_log_id: view.purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> RaftLog {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = self.record(KIND_VOTE, &encode(vote)?);
        self.view_mut().vote = Some(*vote);
        let (done, synced) = oneshot::channel();
        self.queue(bytes, true, Done::Vote(done), Change::Vote(*vote))?;
        synced.await.map_err(|_| io::Error::other("the log writer stopped"))?
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let bytes = self.record(KIND_COMMITTED, &encode(&committed)?);
        self.view_mut().committed = committed;
        self.queue(bytes, false, Done::Nothing, Change::Committed(committed))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.view().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<ShardRaft>) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut bytes = Vec::new();
        let mut last = None;
        {
            let mut view = self.view_mut();
            for entry in entries {
                bytes.extend_from_slice(&self.record(KIND_ENTRY, &encode(&entry)?));
                last = Some(entry.index());
                view.entries.insert(entry.index(), entry);
            }
        }
        self.queue(bytes, true, Done::Flushed(callback), Change::Entries { last })
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let bytes = self.record(KIND_TRUNCATE, &encode(&last_log_id)?);
        self.view_mut().truncate_after(last_log_id.as_ref());
        self.queue(bytes, false, Done::Nothing, Change::None)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let bytes = self.record(KIND_PURGE, &encode(&log_id)?);
        self.view_mut().purge(&log_id);
        self.queue(bytes, false, Done::Nothing, Change::Purge(log_id))
    }
}

// ---- the writer thread ----

/// One change of one shard's log for the writer: its records, whether it must be durable before it is reported,
/// and whom to tell.
struct Write_ {
    shard: usize,
    bytes: Vec<u8>,
    sync: bool,
    done: Done,
    change: Change,
}

/// Whom to tell once a write is on disk.
enum Done {
    Nothing,
    Flushed(IOFlushed<ShardRaft>),
    Vote(oneshot::Sender<io::Result<()>>),
}

/// What a write changes that the writer keeps track of (for segment headers and deletions).
enum Change {
    None,
    Entries { last: Option<u64> },
    Vote(Vote),
    Committed(Option<LogId>),
    Purge(LogId),
}

struct Writer {
    dir: PathBuf,
    segment_bytes: u64,
    /// Older segments, oldest first.
    closed: Vec<Segment>,
    current: Segment,
    file: File,
    /// Each shard's vote, committed id and purge point.
    states: Vec<SegmentState>,
    /// The first failure: every later write fails with it.
    failed: Option<(io::ErrorKind, String)>,
    /// Time of each batch's write and fdatasync (`shale_raft_append_seconds`).
    append_seconds: metrics::Histogram,
}

impl Writer {
    fn run(mut self, rx: Receiver<Write_>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            batch.extend(rx.try_iter().take(4096));
            let started = std::time::Instant::now();
            let outcome = self.write(&batch);
            self.append_seconds.record(started.elapsed().as_secs_f64());
            if let Err(e) = &outcome {
                tracing::error!(dir = %self.dir.display(), error = %e, "writing the Raft logs failed");
                self.failed.get_or_insert((e.kind(), e.to_string()));
            }
            for w in batch {
                let result = match &outcome {
                    Ok(()) => Ok(()),
                    Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                };
                match w.done {
                    Done::Nothing => {}
                    Done::Flushed(callback) => callback.io_completed(result),
                    Done::Vote(tx) => {
                        let _ = tx.send(result);
                    }
                }
            }
        }
        // Every sender is gone: make what was written durable before the file is closed.
        if self.failed.is_none() {
            let _ = self.file.sync_data();
        }
    }

    /// Writes a batch with one write and at most one fdatasync, then closes or deletes segments as it allows.
    fn write(&mut self, batch: &[Write_]) -> io::Result<()> {
        if let Some((kind, text)) = &self.failed {
            return Err(io::Error::new(*kind, format!("an earlier write failed: {text}")));
        }
        let mut bytes = Vec::with_capacity(batch.iter().map(|w| w.bytes.len()).sum());
        let mut purged = false;
        for w in batch {
            bytes.extend_from_slice(&w.bytes);
            let state = &mut self.states[w.shard];
            match &w.change {
                Change::None => {}
                Change::Entries { last } => {
                    let seg_last = &mut self.current.last_entry[w.shard];
                    *seg_last = (*seg_last).max(*last);
                }
                Change::Vote(v) => state.0 = Some(*v),
                Change::Committed(c) => state.1 = *c,
                Change::Purge(p) => {
                    if state.2.as_ref().is_none_or(|old| old.index < p.index) {
                        state.2 = Some(*p);
                    }
                    purged = true;
                }
            }
        }
        self.file.write_all(&bytes)?;
        self.current.len += bytes.len() as u64;
        if batch.iter().any(|w| w.sync) {
            self.file.sync_data()?;
        }
        if self.current.len >= self.segment_bytes {
            self.begin_segment()?;
        }
        if purged {
            self.delete_purged()?;
        }
        Ok(())
    }

    /// Closes the current segment and begins the next, headed by every shard's vote, committed id and purge point.
    fn begin_segment(&mut self) -> io::Result<()> {
        self.file.sync_data()?;
        let next = Segment::create(&self.dir, self.current.seq + 1, &self.states)?;
        sync_dir(&self.dir)?;
        self.file = OpenOptions::new().append(true).open(&next.path)?;
        self.closed.push(std::mem::replace(&mut self.current, next));
        Ok(())
    }

    /// Deletes the closed segments in which every shard's entries are purged (their state is in every later
    /// segment's header).
    fn delete_purged(&mut self) -> io::Result<()> {
        let before = self.closed.len();
        let mut kept = Vec::with_capacity(before);
        let states = &self.states;
        let all_purged = |seg: &Segment| {
            seg.last_entry.iter().zip(states).all(|(last, (_, _, purged))| match (last, purged) {
                (None, _) => true,
                (Some(last), Some(p)) => *last <= p.index,
                (Some(_), None) => false,
            })
        };
        for seg in self.closed.drain(..) {
            if all_purged(&seg) {
                std::fs::remove_file(&seg.path)?;
            } else {
                kept.push(seg);
            }
        }
        self.closed = kept;
        if self.closed.len() != before {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

// ---- segments ----

struct Segment {
    seq: u64,
    path: PathBuf,
    len: u64,
    /// The highest entry index of each shard written to it.
    last_entry: Vec<Option<u64>>,
}

impl Segment {
    fn name(seq: u64) -> String {
        format!("{seq:020}.seg")
    }

    /// A new segment holding only its header (`states`, one per shard), fdatasynced.
    fn create(dir: &Path, seq: u64, states: &[SegmentState]) -> io::Result<Segment> {
        let path = dir.join(Segment::name(seq));
        let header = record(KIND_STATE, 0, &encode(&states)?);
        let mut f = OpenOptions::new().write(true).create_new(true).open(&path)?;
        f.write_all(&header)?;
        f.sync_data()?;
        Ok(Segment { seq, path, len: header.len() as u64, last_entry: vec![None; states.len()] })
    }

    /// Replays the segment into `views`, one per shard. In the `last` segment a bad record ends the log (a write
    /// torn by a crash) and the file is cut back to it; in another one it is damage.
    fn replay(&mut self, views: &mut [View], last: bool) -> io::Result<()> {
        let data = std::fs::read(&self.path)?;
        let mut at = 0;
        while at < data.len() {
            let Some((kind, shard, body, end)) = read_record(&data, at) else {
                if !last {
                    return Err(damaged(format!("{} is damaged at byte {at}", self.path.display())));
                }
                tracing::warn!(path = %self.path.display(), at, "the Raft log ends in a torn record; cutting it off");
                let f = OpenOptions::new().write(true).open(&self.path)?;
                f.set_len(at as u64)?;
                f.sync_all()?;
                break;
            };
            if kind == KIND_STATE {
                let states: Vec<SegmentState> = decode(body)?;
                // A node's shards are fixed for its life (a cluster refuses a new SHARD_LIMIT).
                if states.len() != views.len() {
                    return Err(damaged(format!(
                        "{} holds the Raft logs of {} shards, this node has {}",
                        self.path.display(),
                        states.len(),
                        views.len()
                    )));
                }
                for (view, state) in views.iter_mut().zip(states) {
                    view.replay_state(state);
                }
            } else {
                let view = views.get_mut(shard as usize).ok_or_else(|| {
                    damaged(format!("{} holds a record of shard {shard}, which this node lacks", self.path.display()))
                })?;
                if kind == KIND_ENTRY {
                    let entry: Entry = decode(body)?;
                    let seg_last = &mut self.last_entry[shard as usize];
                    *seg_last = (*seg_last).max(Some(entry.index()));
                }
                view.replay(kind, body)?;
            }
            at = end;
        }
        self.len = at as u64;
        Ok(())
    }
}

/// The segments of `dir`, oldest first, for `shards` shards.
fn list_segments(dir: &Path, shards: usize) -> io::Result<Vec<Segment>> {
    let mut segs = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = seq {
            segs.push(Segment { seq, path, len: 0, last_entry: vec![None; shards] });
        }
    }
    segs.sort_by_key(|s| s.seq);
    Ok(segs)
}

// ---- records ----

fn record(kind: u8, shard: u32, body: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(HEADER + body.len());
    r.extend_from_slice(&[0; 8]);
    r.extend_from_slice(&(body.len() as u32).to_le_bytes());
    r.push(kind);
    r.extend_from_slice(&shard.to_le_bytes());
    r.extend_from_slice(body);
    let sum = xxh3_64(&r[8..]);
    r[..8].copy_from_slice(&sum.to_le_bytes());
    r
}

/// The record at `at`: its kind, its shard, its body and where the next one begins; `None` if it is torn or
/// damaged.
fn read_record(data: &[u8], at: usize) -> Option<(u8, u32, &[u8], usize)> {
    let head = data.get(at..at + HEADER)?;
    let sum = u64::from_le_bytes(head[..8].try_into().ok()?);
    let len = u32::from_le_bytes(head[8..12].try_into().ok()?) as usize;
    let end = at.checked_add(HEADER)?.checked_add(len)?;
    let covered = data.get(at + 8..end)?;
    let shard = u32::from_le_bytes(head[13..17].try_into().ok()?);
    (xxh3_64(covered) == sum).then(|| (head[12], shard, &data[at + HEADER..end], end))
}

fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| io::Error::other(format!("encoding a Raft log record: {e}")))
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> io::Result<T> {
    postcard::from_bytes(body).map_err(|e| damaged(format!("decoding a Raft log record: {e}")))
}

fn damaged(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
