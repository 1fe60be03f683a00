//! The held write transaction of a logged store: kept open across answered batches, committed when full.

use std::time::{Duration, Instant};

use redb::WriteTransaction;

use crate::engine::durability::{HOLD_BATCHES, HOLD_BYTES};

/// A logged store's write transaction, kept open across answered batches.
pub(crate) struct Held {
    pub(crate) txn: WriteTransaction,
    /// Answered batches in it (0 while the first batch is being applied).
    pub(crate) batches: u32,
    /// Their commands' bytes.
    pub(crate) bytes: usize,
    pub(crate) since: Instant,
}

impl Held {
    pub(crate) fn full(&self, hold_time: Duration) -> bool {
        self.batches >= HOLD_BATCHES || self.bytes >= HOLD_BYTES || self.since.elapsed() >= hold_time
    }
}
