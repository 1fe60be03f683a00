//! How the kernel schedules shale's threads: `SCHED_BATCH` by default (`THREAD_SCHEDULING=batch`).
//!
//! Why: a write wakes its shard worker, the shard's answer wakes the HTTP worker that sent it, and under
//! `immediate` the shard worker blocks in `fdatasync` once per batch and is woken by its completion. Under the
//! default policy every such wake-up may preempt whichever shale thread is running on that core, so a shard
//! worker is often switched out in the middle of a batch, only to be switched back in soon after. Each context
//! switch costs CPU of its own (more so on a small virtual machine), and the threads that preempt shale's are
//! mostly shale's own. Under `SCHED_BATCH` a waking thread does not preempt the running one: it runs when the
//! running thread blocks or its time slice ends. Priorities (`nice`) are unchanged, and threads of other
//! processes still preempt shale's. Against the default policy this takes less server CPU per request (durable
//! PUT, cached GET, RESP SET), serves more durable PUTs per second and lowers the p99 of cached GETs under many
//! connections (measured with `scripts/bench-ab.sh`).
//!
//! Linux only (elsewhere the setting changes nothing). On Linux `sched_setscheduler(0, ..)` changes the calling
//! thread, and every thread created afterwards inherits its policy: [`apply`] runs first thing in
//! [`crate::server::start`], before any shard, HTTP, RESP or blocking-pool thread exists. `inherit` leaves the
//! policy shale was started with (so `chrt` still decides).
//!
//! The HTTP workers also ask for a short time slice ([`HTTP_WORKER_SLICE`], [`apply_http_worker`], called on
//! each worker thread as actix starts it; the blocking-pool threads a worker starts later, for listings, disk
//! reads after cache misses and backups, inherit it). Since Linux 6.12 the scheduler honours a thread's requested slice
//! (`sched_setattr`'s `sched_runtime`): a thread with a shorter slice gets an earlier deadline, so a worker
//! woken by a request runs sooner instead of waiting out the slice of whatever else holds the core (the kernel's
//! default slice is well above [`HTTP_WORKER_SLICE`]). That lowers the p99 of cached GETs under many
//! connections, at the price of a little write throughput (`scripts/bench-ab.sh` measures both). A shorter
//! slice (0.1 ms) cost more write throughput, and so did the short slice on every thread, so shard threads keep
//! the default. Older kernels accept the request and ignore it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::ValueEnum;

/// The time slice each HTTP worker asks for (Linux grants 0.1 ms to 100 ms).
pub const HTTP_WORKER_SLICE: Duration = Duration::from_micros(300);

/// The scheduling policy of shale's threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ThreadScheduling {
    /// `SCHED_BATCH`: shale's threads do not preempt each other on wake-up.
    Batch,
    /// Keep the policy the process was started with (usually `SCHED_OTHER`).
    Inherit,
}

/// Sets the calling thread's policy (inherited by the threads it creates afterwards). A refusal is logged and
/// shale runs on under the policy it had: the setting is a speed-up, never a reason not to serve.
pub fn apply(policy: ThreadScheduling) {
    match policy {
        ThreadScheduling::Inherit => {}
        ThreadScheduling::Batch => {
            if let Err(e) = set_batch() {
                tracing::warn!(error = %e, "cannot switch to SCHED_BATCH; threads keep their scheduling policy");
            }
        }
    }
}

/// Asks for [`HTTP_WORKER_SLICE`] on the calling thread, an HTTP worker, keeping its policy and `nice`
/// (nothing under `inherit`). A refusal is logged once; the worker serves on with the default slice.
pub fn apply_http_worker(policy: ThreadScheduling) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if policy == ThreadScheduling::Inherit {
        return;
    }
    if let Err(e) = set_slice(HTTP_WORKER_SLICE) {
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "cannot ask for a short time slice for the HTTP workers; they keep the default");
        }
    }
}

#[cfg(target_os = "linux")]
fn set_slice(slice: Duration) -> std::io::Result<()> {
    // SAFETY: sched_attr is plain integers, for which all zeros is a valid value.
    let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::sched_attr>() as libc::c_uint;
    // Read first, so that the policy, `nice` and flags stay what they are; only the slice changes.
    // SAFETY: `attr` is a writable sched_attr of `size` bytes for the duration of the call; tid 0 is this thread.
    os_result(unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &mut attr as *mut libc::sched_attr, size, 0) })?;
    attr.size = size;
    attr.sched_runtime = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
    // SAFETY: `attr` is a valid sched_attr of `attr.size` bytes for the duration of the call.
    os_result(unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const libc::sched_attr, 0) })
}

#[cfg(not(target_os = "linux"))]
fn set_slice(_slice: Duration) -> std::io::Result<()> {
    Ok(())
}

#[cfg(target_os = "linux")]
fn set_batch() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the duration of the call; pid 0 is the calling thread.
    os_result(unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) }.into())
}

/// A scheduling call's return value: 0 is success, anything else failed with `errno`.
#[cfg(target_os = "linux")]
fn os_result(rc: libc::c_long) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_batch() -> std::io::Result<()> {
    Ok(())
}
