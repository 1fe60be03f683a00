//! The write-ahead log of one shard file.
//!
//! Why: a durable redb commit copies on write every B-tree page its batch touched and fsyncs them all, so each
//! extra random key adds pages scattered over the file to the write. With the log, acknowledging a batch costs one
//! sequential write of its changes and one `fdatasync`, whatever keys it touched; redb then commits the batch
//! without an fsync (`Durability::None`), and a *checkpoint* (a durable redb commit, every [`CHECKPOINT_BYTES`] of
//! log and at a clean stop) makes the file itself durable and lets the log start over.
//!
//! Under `DURABILITY=eventual` the frame is written but not fdatasynced (its first payload op says so:
//! `OP_UNSYNCED`), and the shard fdatasyncs the whole log at least every `FLUSH_INTERVAL_MS` ([`Wal::sync`]);
//! the checkpoint waits for [`CHECKPOINT_BYTES`] of log. The kernel keeps a frame through a crash of the
//! process; a power loss may lose what followed the last fdatasync. Why a log at all under `eventual`: it lets
//! redb commit once per many batches (the held transaction of [`crate::engine::store`]) instead of once per
//! batch, so a commit's fixed work and a page several batches write are paid once: less CPU per PUT, and more
//! PUTs per second.
//!
//! # File
//! `shard-<i>.wal` next to `shard-<i>.redb`: frames from offset 0, then zeros written ahead of them
//! (`Wal::grow`) or frames of an earlier round; each frame is
//! `[xxh3 of the rest: u64][payload length: u32][epoch: u64][seq: u64][payload]`, all little-endian. The payload
//! is the batch's changes, in order: `1 space klen key vlen record` (the key now holds this record),
//! `2 space klen key` (removed), `3 space` (every record of the space removed), `4 rev` (meta `rev`), `6 request
//! at_ms elen entry` (an idempotent write's outcome recorded; see [`crate::engine::requests`]), `7 request at_ms`
//! (that record removed); a frame written under `eventual` starts with `5 synced_through` (not fdatasynced; the log
//! was durable through that seq). A request id is 16 bytes, big-endian.
//!
//! # Invariants
//! - A batch is answered only after its frame is written (and, under `immediate`, fdatasynced); redb commits it
//!   after that, so a reader never sees a change the log does not hold.
//! - Only a checkpoint (or a replay) records meta `wal_seq` (every frame up to it is in the file) and meta `rev`;
//!   a batch's non-durable commit leaves the meta table alone, which spares each commit the copy-on-write of one
//!   more B-tree (a noticeable share of a small batch's work). So a file reopened without a crash may already
//!   hold frames after its `wal_seq`. Replay applies them again, which is harmless: a frame holds outcomes (a
//!   record, a removal, a cleared space, a revision), never increments, so applying all the frames after
//!   `wal_seq` in order ends in the same state from any state between the checkpoint and the last frame.
//! - Frames are written at consecutive offsets with consecutive seqs. The log goes back to offset 0 only after a
//!   durable redb commit that contains every frame in it; frames left over from an earlier round then follow the
//!   new ones with smaller seqs (or are cut in half), so replay stops at them.
//! - `epoch` is random per redb file (meta `wal_epoch`): a log left next to another file (a restore, a
//!   resharding) never applies to it.
//! - Only the last frame written can be torn by a crash, or, for frames after the last fdatasync, any of them
//!   that a power loss kept from the disk. So an intact frame of the current round after the frame replay
//!   stopped at, when it was fdatasynced or says the log was durable past that point, means damage in the
//!   middle: the open is refused rather than dropping those writes. When only unsynced frames follow, they are
//!   dropped (with a warning) and their seqs are spent: the file records the highest as held, so the next frames
//!   take higher seqs and the dropped ones can never be read as their successors.
//! - A frame whose write failed may still be on disk, and its batch was answered with an error. The log is cut
//!   back to where the frame began (truncating needs no free space, so this works on a full disk) and its seq is
//!   reused. If even that fails, the seq is spent: the store checkpoints at once (the file's `wal_seq` moves to
//!   that seq, so replay skips the frame), nothing is appended before that checkpoint succeeded, and a reopen
//!   meanwhile replays only the frames before it.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use redb::{Database, ReadableTable, WriteTransaction};
use xxhash_rust::xxh3::xxh3_64;

use crate::engine::change::{Change, Outcome};
use crate::engine::durability::CHECKPOINT_BYTES;
use crate::engine::requests;
use crate::engine::schema::{META_REV, META_WAL_EPOCH, META_WAL_SEQ, TABLES_BYTES, TABLE_META};
use crate::error::{Error, Result};
use crate::placement::ShardId;

/// A log file grown beyond this (by one huge batch) is truncated at the next checkpoint instead of reused.
const KEEP_BYTES: u64 = 2 * CHECKPOINT_BYTES;
/// The least a log file grows by when a frame would pass its end: zeros are written ahead of the frames (see
/// [`Wal::grow`]), in steps that double from this...
const GROW_MIN: u64 = 64 << 10;
/// ...up to this.
const GROW_MAX: u64 = 1 << 20;
const HEADER: usize = 8 + 4 + 8 + 8;

const OP_PUT: u8 = 1;
const OP_REMOVE: u8 = 2;
const OP_CLEAR: u8 = 3;
const OP_REV: u8 = 4;
/// The first payload op of a frame that was not fdatasynced before its batch was answered (`DURABILITY=eventual`):
/// a power loss may lose it, or leave it on disk after a frame before it that was lost (see [`recover`]). Its
/// operand (u64) is the seq through which the log was durable when the frame was written ([`Wal::sync`]).
const OP_UNSYNCED: u8 = 5;
const OP_RECORD: u8 = 6;
const OP_FORGET: u8 = 7;

/// The log file of the shard file at `redb_path`.
pub fn path_for(redb_path: &Path) -> PathBuf {
    redb_path.with_extension("wal")
}

/// An open log, positioned after the last frame that matters.
pub struct Wal {
    file: File,
    path: PathBuf,
    epoch: u64,
    /// The seq of the next frame.
    next_seq: u64,
    /// Where the next frame goes: the log's live bytes.
    pos: u64,
    /// The file's length (frames, then zeros written ahead or frames of an earlier round): `pos <= len`.
    len: u64,
    /// A write failed: checkpoint before the next append (see the module invariants).
    must_checkpoint: bool,
    /// The highest revision an appended frame carried (`OP_REV`): meta `rev` lags behind it until a checkpoint.
    logged_rev: Option<u64>,
    /// Whether [`Wal::append`] fdatasyncs each frame (`immediate`) or leaves it to the page cache and the next
    /// [`Wal::sync`] (`eventual`; such frames are marked [`OP_UNSYNCED`]).
    fsync: bool,
    /// Every frame up to this seq survives a power loss: fdatasynced, or in the file since a checkpoint.
    synced_through: u64,
    /// Fault injection for tests: how many of the next appends write their frame, then report a failure.
    pub(crate) injected_failures: u32,
    /// Fault injection for tests: cutting a failed frame off the log fails too.
    pub(crate) injected_cut_failure: bool,
    /// Fault injection for tests: the next [`Wal::sync`] fails.
    pub(crate) injected_sync_failure: bool,
    /// Fault injection for tests: the next growth ([`Wal::grow`]) writes some zeros, then finds the disk full.
    #[cfg(test)]
    injected_grow_failure: bool,
    buf: Vec<u8>,
}

impl Wal {
    /// Bytes appended since the last checkpoint.
    pub fn live_bytes(&self) -> u64 {
        self.pos
    }

    /// Whether a failed write requires a checkpoint before the next append.
    pub fn must_checkpoint(&self) -> bool {
        self.must_checkpoint
    }

    /// The seq of the frame whose write failed, while no checkpoint has recorded it (see [`recover`]).
    pub fn spent(&self) -> Option<u64> {
        self.must_checkpoint.then(|| self.next_seq - 1)
    }

    /// The seq a checkpoint records as contained in the file: every frame before the next one.
    pub fn checkpoint_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// The last revision handed out by a logged batch, which meta `rev` holds only from the next checkpoint on.
    pub fn logged_rev(&self) -> Option<u64> {
        self.logged_rev
    }

    /// Whether appended frames are fdatasynced (see [`Wal::append`]). A store sets it after each [`recover`].
    pub fn set_fsync(&mut self, fsync: bool) {
        self.fsync = fsync;
    }

    /// Makes every frame written so far survive a power loss (`eventual`'s durability point, at least every
    /// `FLUSH_INTERVAL_MS`): one `fdatasync`, unless there is nothing new. A failed one must not be retried (the
    /// kernel may have dropped the pages it could not write, and a retry would report success): checkpoint.
    /// Returns whether it took an fdatasync.
    pub fn sync(&mut self) -> std::io::Result<bool> {
        let last = self.next_seq - 1;
        if self.synced_through >= last {
            return Ok(false);
        }
        if std::mem::take(&mut self.injected_sync_failure) {
            return Err(std::io::Error::other("injected log fdatasync failure"));
        }
        self.file.sync_data()?;
        self.synced_through = last;
        Ok(true)
    }

    /// Writes one frame holding the changes of a batch's `outcomes` (and the new meta `rev`, when the batch took
    /// revisions) and fdatasyncs it, unless this log was told not to ([`Wal::set_fsync`]): the frame is then in
    /// the page cache only, safe from a process crash but not from a power loss until the next [`Wal::sync`] or
    /// checkpoint. On error, the seq is spent and the log must be checkpointed first.
    pub fn append(&mut self, outcomes: &[Outcome], rev: Option<u64>) -> std::io::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        buf.resize(HEADER, 0);
        if !self.fsync {
            buf.push(OP_UNSYNCED);
            buf.extend_from_slice(&self.synced_through.to_le_bytes());
        }
        for (_, effect) in outcomes.iter().flatten() {
            encode_effect(&mut buf, effect)?;
        }
        if let Some(rev) = rev {
            buf.push(OP_REV);
            buf.extend_from_slice(&rev.to_le_bytes());
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let written = seal(&mut buf, self.epoch, seq).and_then(|()| {
            self.grow(self.pos + buf.len() as u64)?;
            self.file.write_all_at(&buf, self.pos)?;
            if self.fsync {
                self.file.sync_data()?;
                self.synced_through = seq;
            }
            if self.injected_failures > 0 {
                // The worst case of a failed write: the frame is on disk all the same.
                self.injected_failures -= 1;
                return Err(std::io::Error::other("injected log write failure"));
            }
            Ok(())
        });
        match written {
            Ok(()) => {
                self.pos += buf.len() as u64;
                self.logged_rev = rev.or(self.logged_rev);
            }
            Err(_) => {
                // Cut the frame off (and the stale frames after it, which the file holds anyway).
                let cut = if self.injected_cut_failure {
                    Err(std::io::Error::other("injected truncation failure"))
                } else {
                    self.file.set_len(self.pos).and_then(|()| self.file.sync_all())
                };
                match cut {
                    Ok(()) => {
                        self.next_seq = seq;
                        self.len = self.pos;
                    }
                    Err(e) => {
                        tracing::error!(path = %self.path.display(), error = %e, "cannot cut a failed frame off the log");
                        self.must_checkpoint = true;
                    }
                }
            }
        }
        // Keep the buffer for the next batch, unless one huge batch grew it.
        if buf.capacity() <= 1 << 20 {
            self.buf = buf;
        }
        written
    }

    /// After a durable redb commit recording [`Wal::checkpoint_seq`]: the log starts over at offset 0 (the file is
    /// kept and overwritten, which fsyncs cheaper than appending; one grown by a huge batch is truncated).
    pub fn rewind(&mut self) {
        if self.len > KEEP_BYTES {
            match self.file.set_len(0) {
                Ok(()) => self.len = 0,
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot truncate the log; it is reused as it is")
                }
            }
        }
        self.pos = 0;
        self.must_checkpoint = false;
        self.synced_through = self.checkpoint_seq();
    }

    /// Makes the file at least `end` bytes long before a frame is written up to there: when `end` is past the
    /// file's end, writes zeros from that end on, one growth step (the file's length, at least [`GROW_MIN`], at
    /// most [`GROW_MAX`]) past `end`. Why: a frame written past the end changes the file's size and makes the
    /// file system allocate blocks, and the fdatasync after it must then also write the inode and the allocation
    /// metadata; a frame written over zeros already on disk needs only its own blocks and a cache flush. So the
    /// fdatasyncs of a new log's first round write far less metadata, which shows in the rate and latency of
    /// durable PUTs under few connections (small batches, so many fdatasyncs per write). The zeros reach the disk
    /// with the frame's own fdatasync (`immediate`) or the next sync (`eventual`). Replay stops at them as at the
    /// end of the log: they hold no intact frame.
    fn grow(&mut self, end: u64) -> std::io::Result<()> {
        static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
        if end <= self.len {
            return Ok(());
        }
        let target = end + self.len.clamp(GROW_MIN, GROW_MAX);
        while self.len < target {
            let n = (target - self.len).min(ZEROS.len() as u64) as usize;
            self.file.write_all_at(&ZEROS[..n], self.len)?;
            self.len += n as u64;
            #[cfg(test)]
            if std::mem::take(&mut self.injected_grow_failure) {
                return Err(std::io::ErrorKind::StorageFull.into());
            }
        }
        Ok(())
    }
}

/// Finishes a frame in `buf` (payload after the header's room): length, epoch, seq, then the checksum of it all.
fn seal(buf: &mut [u8], epoch: u64, seq: u64) -> std::io::Result<()> {
    let len = u32::try_from(buf.len() - HEADER)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a batch over 4 GiB cannot be logged"))?;
    buf[8..12].copy_from_slice(&len.to_le_bytes());
    buf[12..20].copy_from_slice(&epoch.to_le_bytes());
    buf[20..28].copy_from_slice(&seq.to_le_bytes());
    let sum = xxh3_64(&buf[8..]);
    buf[..8].copy_from_slice(&sum.to_le_bytes());
    Ok(())
}

fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "a record over 4 GiB cannot be logged"))?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(bytes);
    Ok(())
}

/// Appends the changes `effect` describes. A command's [`Change`] names every change it made to the file (the
/// cache must see them all), so the log is written from it.
fn encode_effect(buf: &mut Vec<u8>, effect: &Change) -> std::io::Result<()> {
    match effect {
        Change::None | Change::Found(..) => {}
        Change::Put(space, key, rec) => {
            buf.extend_from_slice(&[OP_PUT, *space as u8]);
            put_bytes(buf, key)?;
            put_bytes(buf, rec.as_bytes())?;
        }
        Change::Remove(space, key) => {
            buf.extend_from_slice(&[OP_REMOVE, *space as u8]);
            put_bytes(buf, key)?;
        }
        Change::Clear(space) => buf.extend_from_slice(&[OP_CLEAR, *space as u8]),
        Change::Recorded { request, at_ms, entry } => {
            buf.push(OP_RECORD);
            buf.extend_from_slice(&request.to_be_bytes());
            buf.extend_from_slice(&at_ms.to_le_bytes());
            put_bytes(buf, entry)?;
        }
        Change::Forgotten { request, at_ms } => {
            buf.push(OP_FORGET);
            buf.extend_from_slice(&request.to_be_bytes());
            buf.extend_from_slice(&at_ms.to_le_bytes());
        }
        Change::Many(all) => {
            for e in all {
                encode_effect(buf, e)?;
            }
        }
    }
    Ok(())
}

/// The valid frames at the start of `data`: `(seq, payload)`, consecutive seqs of `epoch`, from offset 0 until
/// the first frame that is torn, damaged, of another epoch, or out of sequence; and the offset where they end.
fn frames(data: &[u8], epoch: u64) -> (Vec<(u64, &[u8])>, usize) {
    let mut out: Vec<(u64, &[u8])> = Vec::new();
    let mut at = 0usize;
    while let Some((seq, payload, end)) = frame_at(data, at, epoch) {
        if out.last().is_some_and(|&(prev, _)| seq != prev + 1) {
            break;
        }
        out.push((seq, payload));
        at = end;
    }
    (out, at)
}

/// The intact frame of `epoch` at offset `at` of `data`, if there is one: its seq, payload and end offset.
fn frame_at(data: &[u8], at: usize, epoch: u64) -> Option<(u64, &[u8], usize)> {
    if data.len().checked_sub(at)? < HEADER {
        return None;
    }
    let word = |i: usize| u64::from_le_bytes(data[at + i..at + i + 8].try_into().expect("8 bytes"));
    // The epoch first: a random 64-bit word, so scanning a log for frames rarely gets past this test by chance.
    if word(12) != epoch {
        return None;
    }
    let len = u32::from_le_bytes(data[at + 8..at + 12].try_into().expect("4 bytes")) as usize;
    let end = (at + HEADER).checked_add(len).filter(|&e| e <= data.len())?;
    (word(0) == xxh3_64(&data[at + 8..end])).then(|| (word(20), &data[at + HEADER..end], end))
}

/// What the log holds after the offset where replay stopped.
#[derive(Debug, PartialEq, Eq)]
enum AfterStop {
    /// No frame of the current round: the log ended there (a torn last frame, frames of an earlier round).
    End,
    /// An intact frame of the current round that was fdatasynced, or says that the log was durable past the
    /// gap, with this seq: the log was damaged in the middle (a crash can tear only the last frame written, and
    /// frames left from an earlier round all have lower seqs), so durable writes in between are lost.
    Damaged(u64),
    /// Only frames of the current round that were not fdatasynced ([`OP_UNSYNCED`], `eventual`) and none of
    /// which says that the missing frame was, the highest with this seq: a power loss wrote the page cache out
    /// to the disk in another order than it was filled. The frames after the gap are lost with it, within the
    /// window `eventual` may lose. (A frame saying the log was durable past the gap makes it [`Self::Damaged`].)
    Unsynced(u64),
}

/// Looks for intact frames of `epoch` with a seq above `above` anywhere after offset `from`. Every offset is a
/// candidate, since a damaged length field hides where the next frame starts; the epoch's 8 bytes are searched
/// for with `memmem`, far faster than trying to parse a frame at every offset.
fn after_stop(data: &[u8], from: usize, epoch: u64, above: u64) -> AfterStop {
    let first = from + 1;
    let Some(tail) = data.get(first + 12..) else { return AfterStop::End };
    let mut unsynced = None;
    for i in memchr::memmem::find_iter(tail, &epoch.to_le_bytes()) {
        match frame_at(data, first + i, epoch) {
            Some((seq, payload, _)) if seq > above => {
                // The first missing frame is `above + 1`: lost to a power loss only if it was never synced.
                let synced_through = (payload.first() == Some(&OP_UNSYNCED))
                    .then(|| payload.get(1..9))
                    .flatten()
                    .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
                if synced_through.is_none_or(|through| through > above) {
                    return AfterStop::Damaged(seq);
                }
                unsynced = unsynced.max(Some(seq));
            }
            _ => {}
        }
    }
    unsynced.map_or(AfterStop::End, AfterStop::Unsynced)
}

/// Reads a length-prefixed byte string from `p`.
fn take<'a>(p: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if p.len() < n {
        return None;
    }
    let (head, rest) = p.split_at(n);
    *p = rest;
    Some(head)
}

fn take_bytes<'a>(p: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_le_bytes(take(p, 4)?.try_into().ok()?) as usize;
    take(p, len)
}

/// Applies one frame's changes inside `txn`. `None` = the payload does not parse (a bug or damage that the
/// checksum did not catch).
fn apply_frame(txn: &WriteTransaction, mut p: &[u8]) -> std::result::Result<Option<()>, redb::Error> {
    while let Some(op) = take(&mut p, 1) {
        if op[0] == OP_UNSYNCED {
            if take(&mut p, 8).is_none() {
                return Ok(None);
            }
            continue;
        }
        if op[0] == OP_REV {
            let Some(rev) = take(&mut p, 8) else { return Ok(None) };
            let rev = u64::from_le_bytes(rev.try_into().expect("8 bytes"));
            txn.open_table(TABLE_META)?.insert(META_REV, rev)?;
            continue;
        }
        if op[0] == OP_RECORD || op[0] == OP_FORGET {
            let Some(request) = take(&mut p, 16) else { return Ok(None) };
            let request = u128::from_be_bytes(request.try_into().expect("16 bytes"));
            let Some(at_ms) = take(&mut p, 8) else { return Ok(None) };
            let at_ms = u64::from_le_bytes(at_ms.try_into().expect("8 bytes"));
            if op[0] == OP_FORGET {
                requests::remove_entry(txn, request, at_ms)?;
                continue;
            }
            let Some(entry) = take_bytes(&mut p) else { return Ok(None) };
            requests::put_entry(txn, request, at_ms, entry)?;
            continue;
        }
        let Some(&space) = take(&mut p, 1).and_then(|s| s.first()) else { return Ok(None) };
        let Some(def) = TABLES_BYTES.get(space as usize) else { return Ok(None) };
        let mut t = txn.open_table(*def)?;
        match op[0] {
            OP_PUT => {
                let (Some(k), Some(v)) = (take_bytes(&mut p), take_bytes(&mut p)) else { return Ok(None) };
                t.insert(k, v)?;
            }
            OP_REMOVE => {
                let Some(k) = take_bytes(&mut p) else { return Ok(None) };
                t.remove(k)?;
            }
            OP_CLEAR => t.retain(|_, _| false)?,
            _ => return Ok(None),
        }
    }
    Ok(Some(()))
}

/// Opens the log of the shard file `db` (at `redb_path`) and replays into the file every frame it does not hold
/// yet, in ONE durable commit; the log then starts over. Called on every open of a shard file that will be read
/// or written (start-up, reopen after a failure, resharding), whatever the durability mode. `spent`: the seq of a
/// frame whose write failed in this process ([`Wal::spent`]): neither it nor anything after it is applied, and the
/// file records it as held. Returns the log and how many frames were replayed.
pub fn recover(db: &Database, redb_path: &Path, shard: ShardId, spent: Option<u64>) -> Result<(Wal, u64)> {
    let path = path_for(redb_path);
    let io = |what: &str, e: std::io::Error| Error::storage(&format!("shard {shard}: {what} {}", path.display()), e);
    let err = |e: redb::Error| Error::storage(&format!("shard {shard}: replaying {}", path.display()), e);
    let damaged = |why: &str| {
        Error::Internal(format!(
            "shard {shard}: {} is damaged ({why}); restore the data dir from a backup (`shale restore`)",
            path.display()
        ))
    };

    let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path);
    let mut data = Vec::new();
    if let Ok(f) = file.as_mut() {
        f.read_to_end(&mut data).map_err(|e| io("cannot read", e))?;
    }
    let file = file.map_err(|e| io("cannot open", e))?;

    let txn = db.begin_write().map_err(|e| err(e.into()))?;
    let (epoch, held, new_epoch) = {
        let meta = txn.open_table(TABLE_META).map_err(|e| err(e.into()))?;
        let epoch = meta.get(META_WAL_EPOCH).map_err(|e| err(e.into()))?.map(|g| g.value());
        let held = meta.get(META_WAL_SEQ).map_err(|e| err(e.into()))?.map(|g| g.value()).unwrap_or(0);
        match epoch {
            Some(epoch) => (epoch, held, false),
            None => (xxh3_64(crate::random::hex_id().as_bytes()), held, true),
        }
    };
    let (found, stop) = if new_epoch { (Vec::new(), 0) } else { frames(&data, epoch) };
    let last_found = found.last().map_or(held, |&(seq, _)| seq.max(held));
    // The highest seq of the unsynced frames dropped after a gap: spent, like a frame whose write failed.
    let mut dropped = None;
    if !new_epoch && spent.is_none() {
        match after_stop(&data, stop, epoch, last_found) {
            AfterStop::End => {}
            AfterStop::Damaged(later) => {
                return Err(damaged(&format!(
                    "the frame after seq {last_found} at byte {stop} is damaged, but frame {later} after it is \
                     intact, so writes in between are lost; to start from the last checkpoint instead, move the log away"
                )))
            }
            AfterStop::Unsynced(highest) => dropped = Some(highest),
        }
    }
    let todo: Vec<(u64, &[u8])> =
        found.into_iter().filter(|&(seq, _)| seq > held && spent.is_none_or(|s| seq < s)).collect();
    if let Some(&(first, _)) = todo.first() {
        if first != held + 1 {
            return Err(damaged(&format!("the file holds frames up to {held} but the log starts at {first}")));
        }
    }
    for (seq, payload) in &todo {
        if apply_frame(&txn, payload).map_err(err)?.is_none() {
            return Err(damaged(&format!("frame {seq} does not parse")));
        }
    }
    let last = todo.last().map_or(held, |&(seq, _)| seq).max(spent.unwrap_or(0)).max(dropped.unwrap_or(0));
    // With nothing to replay nothing is written, so a reopen works on a full disk. The state this open sees is
    // durable: redb shows an open only what its last durable commit (or a clean close) left (a non-durable
    // commit does not survive the death of the process), so the log may be overwritten from offset 0.
    if new_epoch || last != held {
        let mut meta = txn.open_table(TABLE_META).map_err(|e| err(e.into()))?;
        meta.insert(META_WAL_EPOCH, epoch).map_err(|e| err(e.into()))?;
        meta.insert(META_WAL_SEQ, last).map_err(|e| err(e.into()))?;
        drop(meta);
        txn.commit().map_err(|e| err(e.into()))?;
    } else {
        txn.abort().map_err(|e| err(e.into()))?;
    }
    if !todo.is_empty() {
        tracing::warn!(shard = shard.0, frames = todo.len(), last, "replayed the log after an unclean stop");
    }
    if let Some(highest) = dropped {
        tracing::warn!(
            shard = shard.0,
            replayed_up_to = last_found,
            lost_up_to = highest,
            "the log has a gap after a crash that lost the page cache (a power loss?): the unsynced frames after it \
             were dropped (DURABILITY=eventual loses at most FLUSH_INTERVAL_MS of writes)"
        );
    }
    let mut wal = Wal {
        file,
        path,
        epoch,
        next_seq: last + 1,
        pos: 0,
        len: data.len() as u64,
        must_checkpoint: false,
        logged_rev: None,
        fsync: true,
        synced_through: last,
        injected_failures: 0,
        injected_cut_failure: false,
        injected_sync_failure: false,
        #[cfg(test)]
        injected_grow_failure: false,
        buf: Vec::new(),
    };
    wal.rewind();
    Ok((wal, todo.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(epoch: u64, seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut buf = vec![0u8; HEADER];
        buf.extend_from_slice(payload);
        seal(&mut buf, epoch, seq).unwrap();
        buf
    }

    #[test]
    fn frames_stop_at_a_torn_damaged_foreign_or_stale_frame() {
        let mut log = [frame(7, 5, b"a"), frame(7, 6, b"bb"), frame(7, 7, b"")].concat();
        let seqs = |d: &[u8]| frames(d, 7).0.iter().map(|&(s, p)| (s, p.to_vec())).collect::<Vec<_>>();
        assert_eq!(seqs(&log), vec![(5, b"a".to_vec()), (6, b"bb".to_vec()), (7, vec![])]);
        assert!(frames(&log, 8).0.is_empty(), "another epoch's log never applies");
        // A torn last frame is not read.
        assert_eq!(seqs(&log[..log.len() - 1]).len(), 2);
        // A frame from an earlier round (lower seq) ends the log.
        let mut stale = log.clone();
        stale.extend(frame(7, 3, b"old"));
        assert_eq!(seqs(&stale).len(), 3);
        // A flipped byte ends it at that frame.
        log[HEADER + 1 + HEADER] ^= 1;
        assert_eq!(seqs(&log).len(), 1);
        // Zeros (a fresh or truncated file) hold no frame.
        assert!(frames(&[0u8; 100], 0).0.is_empty());
    }

    #[test]
    fn damage_in_the_middle_is_told_from_a_torn_end_or_an_earlier_round() {
        let first = frame(7, 5, b"a");
        let log = [first.clone(), frame(7, 6, b"payload"), frame(7, 7, b"c")].concat();
        let check = |d: &[u8]| {
            let (found, stop) = frames(d, 7);
            let last = found.last().map_or(0, |&(seq, _)| seq);
            after_stop(d, stop, 7, last)
        };
        assert_eq!(check(&log), AfterStop::End, "an intact log");
        assert_eq!(check(&log[..log.len() - 1]), AfterStop::End, "a torn last frame");
        let stale = [log.clone(), frame(7, 2, b"old"), frame(7, 3, b"old")].concat();
        assert_eq!(check(&stale), AfterStop::End, "frames of an earlier round after the end");
        let mut payload_flip = log.clone();
        payload_flip[first.len() + HEADER + 3] ^= 0x10;
        assert_eq!(check(&payload_flip), AfterStop::Damaged(7), "a flipped payload byte of frame 6, frame 7 intact");
        let mut length_flip = log.clone();
        length_flip[first.len() + 9] ^= 0x40;
        assert_eq!(check(&length_flip), AfterStop::Damaged(7), "a damaged length field hides frame 7's offset");
        assert_eq!(check(&frame(8, 7, b"x")), AfterStop::End, "another epoch");
    }

    #[test]
    fn a_gap_before_unsynced_frames_is_a_power_loss_and_before_a_synced_one_damage() {
        let unsynced = |seq: u64, rest: &[u8]| frame(7, seq, &[&[OP_UNSYNCED][..], &4u64.to_le_bytes(), rest].concat());
        let check = |d: &[u8]| {
            let (found, stop) = frames(d, 7);
            after_stop(d, stop, 7, found.last().map_or(0, |&(seq, _)| seq))
        };
        // Frame 6 never reached the disk (zeros where it was), frames 7 and 8 did.
        let gap = |f6: &[u8], f7: Vec<u8>, f8: Vec<u8>| [unsynced(5, b"a"), vec![0; f6.len()], f7, f8].concat();
        let f6 = unsynced(6, b"bb");
        assert_eq!(check(&gap(&f6, unsynced(7, b"c"), unsynced(8, b"d"))), AfterStop::Unsynced(8));
        assert_eq!(check(&gap(&f6, unsynced(7, b"c"), frame(7, 8, b"d"))), AfterStop::Damaged(8), "8 was fdatasynced");
        // Frame 8 was written after a sync through 6: frame 6 was durable, so its loss is damage.
        let after_sync = frame(7, 8, &[&[OP_UNSYNCED][..], &6u64.to_le_bytes(), b"d"].concat());
        assert_eq!(check(&gap(&f6, unsynced(7, b"c"), after_sync)), AfterStop::Damaged(8), "synced through 6");
        let stale = [unsynced(5, b"a"), unsynced(6, b"b"), vec![0; 9], unsynced(3, b"old")].concat();
        assert_eq!(check(&stale), AfterStop::End, "an earlier round's unsynced frame is no loss");
        // The marker changes nothing when the frame is replayed.
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).unwrap();
        let txn = db.begin_write().unwrap();
        let marked = |rest: &[u8]| [&[OP_UNSYNCED][..], &[0; 8], rest].concat();
        assert_eq!(apply_frame(&txn, &marked(&[OP_CLEAR, 0])).unwrap(), Some(()));
        assert_eq!(apply_frame(&txn, &marked(&[9])).unwrap(), None, "an unknown op still fails");
        assert_eq!(apply_frame(&txn, &[OP_UNSYNCED, 0]).unwrap(), None, "a cut operand fails");
    }

    /// A new shard file in `dir` and its (empty) log.
    fn new_log(dir: &Path) -> (Database, PathBuf, Wal) {
        let redb_path = dir.join("s.redb");
        let db = Database::create(&redb_path).unwrap();
        let (wal, _) = recover(&db, &redb_path, ShardId(0), None).unwrap();
        (db, redb_path, wal)
    }

    /// The outcome of a put of key `k<i>` with a value of `len` bytes.
    fn stored(i: u64, len: usize) -> Outcome {
        let rec = crate::record::Record::encode(i, b"", &vec![b'v'; len]);
        let effect = Change::Put(crate::command::Space::Kv, format!("k{i}").into(), rec);
        Ok((crate::command::Reply::Stored { created: true, rev: i }, effect))
    }

    #[test]
    fn the_log_grows_by_zeros_written_ahead_of_its_frames_and_replays_over_them() {
        use crate::command::Space;
        use redb::ReadableDatabase;
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let (db, redb_path, mut wal) = new_log(dir.path());
        let log = path_for(&redb_path);
        let put = |i: u64| stored(i, 200);
        let file = || std::fs::metadata(&log).unwrap();
        assert_eq!(file().len(), 0, "an empty log takes no room");

        wal.append(&[put(1)], Some(1)).unwrap();
        let frame_len = wal.live_bytes();
        assert_eq!(file().len(), frame_len + GROW_MIN, "the first frame grows the file one step past its end");
        let mut lens = vec![file().len()];
        let mut seq = 1;
        while wal.live_bytes() < 5 * GROW_MAX {
            seq += 1;
            wal.append(&[put(seq)], Some(seq)).unwrap();
            if file().len() != *lens.last().unwrap() {
                lens.push(file().len());
            }
        }
        // Each growth: from the frame's end, one step as long as the file was (GROW_MIN to GROW_MAX).
        for w in lens.windows(2) {
            let step = w[0].clamp(GROW_MIN, GROW_MAX);
            assert!(w[1] - w[0] > step && w[1] - w[0] <= step + frame_len, "growth {lens:?}");
        }
        assert!(lens.len() >= 8, "64 KiB doubling to 1 MiB, then 1 MiB steps: {lens:?}");
        assert!(lens.windows(2).rev().take(2).all(|w| w[1] - w[0] > GROW_MAX), "the steps stop doubling at GROW_MAX");
        // Real zeros, not a hole: blocks are allocated for the whole file, so overwriting them changes no metadata.
        let data = std::fs::read(&log).unwrap();
        assert!(data[wal.live_bytes() as usize..].iter().all(|&b| b == 0));
        assert!(file().blocks() * 512 >= file().len(), "{} blocks for {} bytes: a hole", file().blocks(), file().len());

        // After a checkpoint the frames overwrite the file from offset 0; it does not grow.
        let before = file().len();
        let txn = db.begin_write().unwrap();
        txn.open_table(TABLE_META).unwrap().insert(META_WAL_SEQ, wal.checkpoint_seq()).unwrap();
        txn.commit().unwrap();
        wal.rewind();
        for _ in 0..100 {
            seq += 1;
            wal.append(&[put(seq)], Some(seq)).unwrap();
        }
        assert_eq!(file().len(), before);

        // A crash now: replay reads every frame of the round, stops at the older round's frames (or the zeros),
        // and finds nothing damaged after them.
        drop(wal);
        let (_, replayed) = recover(&db, &redb_path, ShardId(0), None).unwrap();
        assert_eq!(replayed, 100, "the frames written after the rewind");
        let txn = db.begin_read().unwrap();
        let kv = txn.open_table(TABLES_BYTES[Space::Kv as usize]).unwrap();
        assert!(kv.get(format!("k{seq}").as_bytes()).unwrap().is_some());
    }

    #[test]
    fn a_growth_that_finds_the_disk_full_fails_its_frame_and_cuts_the_log_back() {
        let dir = tempfile::tempdir().unwrap();
        let (db, redb_path, mut wal) = new_log(dir.path());
        let log = path_for(&redb_path);
        let put = |i: u64| stored(i, 1000);
        wal.append(&[put(1)], Some(1)).unwrap();
        // The frames fill the zeros; the first that needs more finds the disk full after some of them.
        wal.injected_grow_failure = true;
        let mut count = 1;
        let failed = loop {
            let before = wal.live_bytes();
            match wal.append(&[put(count + 1)], Some(count + 1)) {
                Ok(()) => count += 1,
                Err(e) => break (e, before),
            }
        };
        assert_eq!(failed.0.kind(), std::io::ErrorKind::StorageFull);
        assert_eq!(wal.live_bytes(), failed.1, "the failed frame took no room in the log");
        assert_eq!(std::fs::metadata(&log).unwrap().len(), failed.1, "the zeros written were cut off");
        assert!(!wal.must_checkpoint(), "the cut succeeded: no checkpoint is needed");
        // Space is back: the next frame takes the failed frame's seq and grows the file again.
        wal.append(&[put(count + 1)], Some(count + 1)).unwrap();
        count += 1;
        assert!(std::fs::metadata(&log).unwrap().len() > wal.live_bytes());
        drop(wal);
        let (_, replayed) = recover(&db, &redb_path, ShardId(0), None).unwrap();
        assert_eq!(replayed, count, "every frame that was stored, and none that failed");
    }
}
