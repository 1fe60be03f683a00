//! Where a read that missed the cache reads the shard file: on the calling thread, or on tokio's blocking pool.
//!
//! A redb read whose pages are in memory (redb's page cache or the OS's) is short. Handing it to the blocking pool
//! and back costs two thread wake-ups, several times the read itself, so a miss that stays in memory is read on the
//! calling thread (figures in BENCHMARKS.md). But a read that waits for the disk on an HTTP worker stalls every
//! other connection of that worker. So:
//!
//! - Misses read on the calling thread, and each such read checks whether its thread read from the block device
//!   meanwhile (`getrusage(RUSAGE_THREAD).ru_inblock`, which counts only reads that reached the device, not page
//!   cache hits).
//! - After a read that did, every miss goes to the blocking pool for a window; then the calling thread is tried
//!   again. The window starts at [`MIN_OFFLOAD`] and doubles, up to [`MAX_OFFLOAD`], each time the disk is reached
//!   again within one window of the last one's end; a quiet spell resets it. A data set that lives in memory but
//!   now and then reads a page from the disk thus loses one short window of inline reads for it, while one that
//!   does not fit in memory converges to one stalled read per worker thread and second.
//! - Where the count cannot be read (not Linux, or the call fails), every read is taken as having reached the disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// The first window of misses on the blocking pool after a read on the calling thread reached the disk.
pub const MIN_OFFLOAD: Duration = Duration::from_millis(50);
/// The longest window (reached when the disk is reached again and again).
pub const MAX_OFFLOAD: Duration = Duration::from_secs(1);

/// The shared policy (one per node).
pub struct MissReads {
    origin: Instant,
    /// Nanoseconds after `origin` until which misses go to the pool.
    offload_until: AtomicU64,
    /// The length of the last window, in nanoseconds.
    window: AtomicU64,
    /// `shale_cache_miss_reads_total{path="inline"}` and `{path="pool"}`, registered once.
    inline: metrics::Counter,
    pooled: metrics::Counter,
}

impl Default for MissReads {
    fn default() -> MissReads {
        MissReads {
            origin: Instant::now(),
            offload_until: AtomicU64::new(0),
            window: AtomicU64::new(0),
            inline: metrics::counter!("shale_cache_miss_reads_total", "path" => "inline"),
            pooled: metrics::counter!("shale_cache_miss_reads_total", "path" => "pool"),
        }
    }
}

impl MissReads {
    /// Runs `read` (a redb read of a missed key) where the policy says; see the module documentation.
    pub async fn read<T: Send + 'static>(&self, read: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
        if self.inline_at(Instant::now()) {
            self.inline.increment(1);
            let before = blocks_read_by_this_thread();
            let out = read();
            if reached_disk(before, blocks_read_by_this_thread()) {
                self.reached_disk_at(Instant::now());
            }
            return out;
        }
        self.pooled.increment(1);
        tokio::task::spawn_blocking(read).await.map_err(|e| Error::Internal(format!("read task failed: {e}")))?
    }

    /// Whether a miss at `now` reads on the calling thread.
    fn inline_at(&self, now: Instant) -> bool {
        self.nanos(now) >= self.offload_until.load(Ordering::Relaxed)
    }

    /// A read on the calling thread reached the disk at `now`: offload the next window of misses. A report that
    /// comes while a window runs (a read that started before it, on another thread) changes nothing; two threads
    /// racing here both compute a valid window, and `fetch_max` never shortens one.
    fn reached_disk_at(&self, now: Instant) {
        let now = self.nanos(now);
        let (until, window) = (self.offload_until.load(Ordering::Relaxed), self.window.load(Ordering::Relaxed));
        if now < until {
            return;
        }
        let min = MIN_OFFLOAD.as_nanos() as u64;
        let next = if window > 0 && now < until.saturating_add(window) {
            window.saturating_mul(2).clamp(min, MAX_OFFLOAD.as_nanos() as u64)
        } else {
            min
        };
        self.window.store(next, Ordering::Relaxed);
        self.offload_until.fetch_max(now.saturating_add(next), Ordering::Relaxed);
    }

    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.origin).as_nanos() as u64
    }
}

/// Whether a read reached the disk, from this thread's block counts before and after it. Without a count (not
/// Linux, or the call failed) every read is taken to have reached the disk: misses then always use the pool, the
/// safe choice, since a disk wait on an HTTP worker stalls all of its connections.
fn reached_disk(before: Option<u64>, after: Option<u64>) -> bool {
    !matches!((before, after), (Some(a), Some(b)) if a == b)
}

/// Blocks (512-byte units) this thread has read from block devices so far: page-cache hits do not count.
#[cfg(target_os = "linux")]
fn blocks_read_by_this_thread() -> Option<u64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a `struct rusage` into the pointer it is given, which points to one.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    // SAFETY: on success the struct is fully written (and zeroed memory is a valid rusage anyway).
    (rc == 0).then(|| unsafe { usage.assume_init() }.ru_inblock as u64)
}

#[cfg(not(target_os = "linux"))]
fn blocks_read_by_this_thread() -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_that_reached_the_disk_offloads_a_window_that_grows_while_the_disk_keeps_being_reached() {
        let p = MissReads::default();
        let ms = Duration::from_millis;
        let mut t = p.origin + Duration::from_secs(5);
        assert!(p.inline_at(t), "inline from the start");
        p.reached_disk_at(t);
        assert!(!p.inline_at(t), "offloaded at once");
        assert!(!p.inline_at(t + MIN_OFFLOAD - ms(1)), "for the whole first window");
        assert!(p.inline_at(t + MIN_OFFLOAD), "inline again after it");
        // The disk reached again soon after each window: 100 ms, 200 ms, ... up to MAX_OFFLOAD.
        let mut window = MIN_OFFLOAD;
        for _ in 0..8 {
            t += window + ms(1);
            p.reached_disk_at(t);
            window = (window * 2).min(MAX_OFFLOAD);
            assert!(!p.inline_at(t + window - ms(1)), "window {window:?}");
            assert!(p.inline_at(t + window), "window {window:?}");
        }
        assert_eq!(window, MAX_OFFLOAD);
        // A disk read reported during a window (by a read that started inline before it) changes nothing.
        p.reached_disk_at(t + ms(10));
        assert!(!p.inline_at(t + MAX_OFFLOAD - ms(1)) && p.inline_at(t + MAX_OFFLOAD));
        // After a quiet spell the window starts small again.
        t += MAX_OFFLOAD * 3;
        p.reached_disk_at(t);
        assert!(p.inline_at(t + MIN_OFFLOAD), "a quiet spell resets the window");
    }

    #[test]
    fn without_a_block_count_every_read_counts_as_reaching_the_disk() {
        assert!(!reached_disk(Some(7), Some(7)), "same count: served from memory");
        assert!(reached_disk(Some(7), Some(8)));
        assert!(reached_disk(None, Some(8)) && reached_disk(Some(7), None) && reached_disk(None, None));
    }

    #[tokio::test]
    async fn reads_run_inline_until_one_reaches_the_disk() {
        let p = MissReads::default();
        let caller = std::thread::current().id();
        let on = p.read(move || Ok(std::thread::current().id())).await.unwrap();
        assert_eq!(on, caller, "a read that touched no disk runs on the calling thread");
        p.reached_disk_at(Instant::now());
        let on = p.read(move || Ok(std::thread::current().id())).await.unwrap();
        assert_ne!(on, caller, "inside the window the read goes to the blocking pool");
        let err = p.read(|| -> Result<()> { Err(Error::NotFound("x".into())) }).await;
        assert!(matches!(err, Err(Error::NotFound(_))), "the read's own error comes back: {err:?}");
    }
}
