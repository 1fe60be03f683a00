//! Durable writes at the end of a log file: the write path of [`crate::wal`].
//!
//! A frame must be on stable storage before its batch is answered. The plain way is `pwrite` into the page cache
//! and `fdatasync`, which walks the writeback machinery for one dirty page per batch. With the file also open
//! `O_DIRECT | O_DSYNC`, one `pwrite` of whole blocks reaches the device and returns once it is durable: on this
//! machine it cost half the kernel CPU and three quarters of the latency of the plain way (BENCHMARKS.md,
//! session 7).
//!
//! # Rules
//! - Direct writes cover whole [`BLOCK`]s from an aligned buffer. A frame that starts inside a block rewrites that
//!   block's earlier bytes with the same values (kept in `tail`), so a torn write can only damage bytes that were
//!   already durable with the very same content, or the new frame. Bytes after the frame in its last block are
//!   written as zeros: a log replay stops there as it stops at any torn or stale frame.
//! - Invariant: `tail` holds the file's bytes from the start of the block containing `tail_pos` up to `tail_pos`.
//!   A write at another position (after a rewind, or a failed frame cut off) first reads that block's head back.
//! - Where `O_DIRECT` is refused (tmpfs, some network file systems; or a write with `EINVAL` for alignment the
//!   device does not accept), the writer falls back to `pwrite` + `fdatasync` for good, and says so once.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The unit of direct writes: a multiple of every logical block size in use (512 and 4096 bytes).
pub const BLOCK: usize = 4096;
/// A buffer grown beyond this by one huge frame is not kept for the next one.
const KEEP_BUFFER: usize = 1 << 20;

/// Appends frames durably to one log file (see the module doc).
pub struct LogWriter {
    /// The file, opened normally: reads, truncation, and the buffered fallback.
    file: File,
    /// The same file opened `O_DIRECT | O_DSYNC`, while direct writes work.
    direct: Option<File>,
    path: PathBuf,
    tail: Vec<u8>,
    tail_pos: u64,
    block: Vec<u8>,
    /// Tests: the next direct write comes from a misaligned buffer, which the kernel refuses with `EINVAL`.
    #[cfg(test)]
    misalign_next: bool,
}

impl LogWriter {
    /// Wraps the log `file` at `path`; direct writes are used when the file system accepts them.
    pub fn new(file: File, path: &Path) -> LogWriter {
        let direct = open_direct(path)
            .map_err(|e| tracing::info!(path = %path.display(), error = %e, "O_DIRECT refused; the log uses fdatasync"))
            .ok();
        LogWriter {
            file,
            direct,
            path: path.to_path_buf(),
            tail: Vec::new(),
            tail_pos: 0,
            block: Vec::new(),
            #[cfg(test)]
            misalign_next: false,
        }
    }

    /// The same writer with direct writes off: the fallback, for tests and benches.
    pub fn without_direct(mut self) -> LogWriter {
        self.direct = None;
        self
    }

    /// The file, for metadata and truncation (a truncation below the tail's block is seen by the next write).
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Whether frames are written with `O_DIRECT | O_DSYNC`.
    pub fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Writes `frame` at `pos` and returns once it is durable.
    pub fn write_durably(&mut self, frame: &[u8], pos: u64) -> io::Result<()> {
        if self.direct.is_some() {
            match self.write_direct(frame, pos) {
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "a direct log write was refused; the log uses fdatasync from now on");
                    self.direct = None;
                }
                done => return done,
            }
        }
        self.file.write_all_at(frame, pos)?;
        self.file.sync_data()
    }

    fn write_direct(&mut self, frame: &[u8], pos: u64) -> io::Result<()> {
        let start = pos - pos % BLOCK as u64;
        if self.tail_pos != pos {
            self.tail.resize((pos - start) as usize, 0);
            self.file.read_exact_at(&mut self.tail, start)?;
            self.tail_pos = pos;
        }
        let head = self.tail.len();
        let len = head + frame.len();
        let buf = aligned(&mut self.block, len.next_multiple_of(BLOCK));
        buf[..head].copy_from_slice(&self.tail);
        buf[head..len].copy_from_slice(frame);
        buf[len..].fill(0);
        let direct = self.direct.as_ref().expect("direct writes are on");
        #[cfg(test)]
        if std::mem::take(&mut self.misalign_next) {
            let mut copy = vec![0u8; buf.len() + 1];
            copy[1..].copy_from_slice(buf);
            return direct.write_all_at(&copy[1..], start);
        }
        direct.write_all_at(buf, start)?;
        // The new tail: the written bytes of the block the frame ends in.
        let end = pos + frame.len() as u64;
        let last_block = (end - end % BLOCK as u64 - start) as usize;
        self.tail.clear();
        self.tail.extend_from_slice(&buf[last_block..len]);
        self.tail_pos = end;
        if self.block.len() > KEEP_BUFFER {
            self.block = Vec::new();
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().write(true).custom_flags(libc::O_DIRECT | libc::O_DSYNC).open(path)
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_: &Path) -> io::Result<File> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "O_DIRECT is used on Linux only"))
}

/// `len` bytes of `raw` that start at a [`BLOCK`]-aligned address (`raw` is regrown when too short).
fn aligned(raw: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if raw.len() < len + BLOCK {
        *raw = vec![0; len + BLOCK];
    }
    let at = raw.as_ptr().align_offset(BLOCK);
    &mut raw[at..at + len]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(dir: &Path, direct: bool) -> (LogWriter, PathBuf) {
        let path = dir.join("log");
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).unwrap();
        let w = LogWriter::new(file, &path);
        (if direct { w } else { w.without_direct() }, path)
    }

    /// Frames of every size, across block boundaries, at positions the writer did not write last: the file
    /// holds each where it was put (direct writes, where the temp dir takes them, and the fallback).
    #[test]
    fn frames_land_where_they_are_put_whatever_the_block_boundaries() {
        for direct in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let (mut w, path) = writer(dir.path(), direct);
            let mut want = Vec::new();
            for (i, size) in [1usize, 100, 4000, 95, 4096, 10_000, 3, 8191].into_iter().enumerate() {
                let frame: Vec<u8> = (0..size).map(|j| (i * 31 + j) as u8 | 1).collect();
                w.write_durably(&frame, want.len() as u64).unwrap();
                want.extend_from_slice(&frame);
            }
            let data = std::fs::read(&path).unwrap();
            assert_eq!(&data[..want.len()], &want[..], "direct: {}", w.is_direct());
            assert!(data[want.len()..].iter().all(|&b| b == 0), "the rest of the last block is zeros");
            if w.is_direct() {
                assert_eq!(data.len() % BLOCK, 0, "direct writes cover whole blocks");
            }

            // Back to a position inside an earlier block (a failed frame cut off, a rewind): the head of that
            // block is read back, so the bytes before the position stay as they were.
            let pos = 5000u64;
            w.file().set_len(pos).unwrap();
            w.write_durably(b"again", pos).unwrap();
            let data = std::fs::read(&path).unwrap();
            assert_eq!(&data[..pos as usize], &want[..pos as usize]);
            assert_eq!(&data[pos as usize..pos as usize + 5], b"again");
            w.write_durably(b"start", 0).unwrap();
            let data = std::fs::read(&path).unwrap();
            assert_eq!(&data[..5], b"start");
            if w.is_direct() {
                assert!(data[5..BLOCK].iter().all(|&b| b == 0), "stale bytes after the frame are zeroed");
            }
        }
    }

    /// A direct write refused with `EINVAL` (here: a misaligned buffer) is written the plain way instead, and
    /// every later frame too.
    #[test]
    fn a_refused_direct_write_falls_back_to_fdatasync_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, path) = writer(dir.path(), true);
        if !w.is_direct() {
            eprintln!("skipped: {} refuses O_DIRECT", dir.path().display());
            return;
        }
        w.write_durably(b"first", 0).unwrap();
        w.misalign_next = true;
        w.write_durably(b"second", 5).unwrap();
        assert!(!w.is_direct(), "the writer still uses direct writes");
        w.write_durably(b"third", 11).unwrap();
        assert_eq!(&std::fs::read(&path).unwrap()[..16], b"firstsecondthird");
    }
}
