//! Start-up and shutdown state of the shards, for `/readyz`: ready once every shard finished its warm-up.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Tracks which shards finished their warm-up; the server is ready when all have.
#[derive(Debug, Default)]
pub struct Readiness {
    pending: AtomicUsize,
    failed: Mutex<Option<String>>,
    stopping: AtomicBool,
}

impl Readiness {
    /// Readiness waiting for `shards` warm-ups.
    pub fn new(shards: usize) -> Arc<Readiness> {
        Arc::new(Readiness { pending: AtomicUsize::new(shards), ..Default::default() })
    }

    /// `Ok` once every shard is warm; otherwise why not.
    pub fn check(&self) -> std::result::Result<(), String> {
        if let Some(why) = self.failed.lock().expect("readiness lock never poisoned").clone() {
            return Err(why);
        }
        if self.stopping.load(Ordering::Acquire) {
            return Err("shutting down".into());
        }
        match self.pending.load(Ordering::Acquire) {
            0 => Ok(()),
            n => Err(format!("warming up ({n} shards left)")),
        }
    }

    /// Whether every shard is warm.
    pub fn is_ready(&self) -> bool {
        self.check().is_ok()
    }

    pub(super) fn shard_ready(&self) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }

    pub(super) fn shard_failed(&self, why: String) {
        *self.failed.lock().expect("readiness lock never poisoned") = Some(why);
    }

    /// Marks the server as stopping (so load balancers stop sending).
    pub fn set_stopping(&self) {
        self.stopping.store(true, Ordering::Release);
    }
}
