//! How the kernel schedules shale's threads: `SCHED_BATCH` by default (`THREAD_SCHEDULING=batch`).
//!
//! Why: a write wakes its shard worker, the shard's answer wakes the HTTP worker that sent it, and under
//! `immediate` the shard worker blocks in `fdatasync` once per batch and is woken by its completion. Under the
//! default policy every such wake-up may preempt whichever shale thread is running on that core, so a shard
//! worker is often switched out in the middle of a batch, only to be switched back in a few microseconds later.
//! On a two-core VM a context switch costs several microseconds of CPU (BENCHMARKS.md, session 10), and shale's
//! threads mostly preempted each other. Under `SCHED_BATCH` a waking thread does not preempt the running one:
//! it runs when the running thread blocks or its time slice ends. Priorities (`nice`) are unchanged, and threads
//! of other processes still preempt shale's. Measured against the default policy (two bench-ab runs): 4 % to
//! 13 % less server CPU per request in every case (durable PUT, cached GET, RESP SET), 1.01x to 1.12x the
//! durable PUT/s, and a lower p99 for cached GETs at 64 connections.
//!
//! Linux only (elsewhere the setting changes nothing). On Linux `sched_setscheduler(0, ..)` changes the calling
//! thread, and every thread created afterwards inherits its policy: [`apply`] runs first thing in
//! [`crate::server::start`], before any shard, HTTP, RESP or blocking-pool thread exists. `inherit` leaves the
//! policy shale was started with (so `chrt` still decides).

use clap::ValueEnum;

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

#[cfg(target_os = "linux")]
fn set_batch() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the duration of the call; pid 0 is the calling thread.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set_batch() -> std::io::Result<()> {
    Ok(())
}
