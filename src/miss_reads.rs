//! Where a read that missed the cache reads the shard file: on the calling thread, or on tokio's blocking pool.
//!
//! A redb read whose pages are in memory (redb's page cache or the OS's) takes a few µs. Handing it to the blocking
//! pool and back costs two thread wake-ups, about 25 µs of CPU on this 2-core machine: uncached GET ran 1.6x faster
//! with the read on the HTTP worker (BENCHMARKS.md, session 4). But a read that waits for the disk on an HTTP
//! worker stalls every other connection of that worker. So:
//!
//! - Misses read on the calling thread, and each such read checks whether its thread read from the block device
//!   meanwhile (`getrusage(RUSAGE_THREAD).ru_inblock`, which counts only reads that reached the device, not page
//!   cache hits).
//! - After a read that did, every miss goes to the blocking pool for [`OFFLOAD_FOR`]; then the calling thread is
//!   tried again. A data set that does not fit in memory thus costs at most one stalled read per worker thread and
//!   window, and one that fits never pays the pool.
//! - Where the count cannot be read (not Linux, or the call fails), every read is taken as having reached the disk.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// How long misses go to the blocking pool after a read on the calling thread reached the disk.
pub const OFFLOAD_FOR: Duration = Duration::from_secs(1);

/// The shared policy (one per router).
pub struct MissReads {
    origin: Instant,
    /// Nanoseconds after `origin` until which misses go to the pool.
    offload_until: AtomicU64,
    /// `shale_cache_miss_reads_total{path="inline"}` and `{path="pool"}`, registered once.
    inline: metrics::Counter,
    pooled: metrics::Counter,
}

impl Default for MissReads {
    fn default() -> MissReads {
        MissReads {
            origin: Instant::now(),
            offload_until: AtomicU64::new(0),
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
            let after = blocks_read_by_this_thread();
            if !matches!((before, after), (Some(a), Some(b)) if a == b) {
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

    /// A read on the calling thread reached the disk at `now`: offload the misses of the next [`OFFLOAD_FOR`].
    fn reached_disk_at(&self, now: Instant) {
        let until = self.nanos(now).saturating_add(OFFLOAD_FOR.as_nanos() as u64);
        self.offload_until.fetch_max(until, Ordering::Relaxed);
    }

    fn nanos(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.origin).as_nanos() as u64
    }
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
    fn a_read_that_reached_the_disk_offloads_the_next_window_then_inline_again() {
        let p = MissReads::default();
        let t = p.origin + Duration::from_secs(5);
        assert!(p.inline_at(t), "inline from the start");
        p.reached_disk_at(t);
        assert!(!p.inline_at(t), "offloaded at once");
        assert!(!p.inline_at(t + OFFLOAD_FOR - Duration::from_millis(1)), "offloaded for the whole window");
        assert!(p.inline_at(t + OFFLOAD_FOR), "inline again after the window");
        // A disk read seen late (by a read that started inline earlier) never shortens a window.
        p.reached_disk_at(t + Duration::from_millis(500));
        p.reached_disk_at(t);
        assert!(!p.inline_at(t + OFFLOAD_FOR + Duration::from_millis(499)));
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
