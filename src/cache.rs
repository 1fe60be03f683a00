//! The read cache: one moka cache shared by all shards, bounded by `CACHE_BYTES` of keys plus records.
//!
//! # Rules (see docs/design.md)
//! - Only shard threads mutate the cache, each for its own keys, in commit order: after a commit they insert
//!   new records and invalidate deleted keys, before they answer the writers. HTTP readers only `get`.
//! - A reader that misses reads redb itself and asks the owning shard to fill the key (`ShardMsg::Fill`); the
//!   shard fills only after its current batch is committed, from its own view of the file, and only if the key
//!   is still absent. So a fill can never put back a value older than one the shard already wrote: the
//!   read-miss/commit race of NOTES.md cannot happen.
//! - The cache is a hint, never the source of truth: moka may reject an insert (TinyLFU), so a miss is normal.

use bytes::Bytes;
use moka::sync::Cache as Moka;

use crate::command::Space;
use crate::record::Record;

/// Bytes charged per entry on top of key and record, for moka's own bookkeeping.
const ENTRY_OVERHEAD: usize = 48;
/// Keys up to this size (with the space byte) are looked up without a heap allocation.
const STACK_KEY: usize = 128;

/// The shared record cache.
#[derive(Clone)]
pub struct Cache {
    inner: Moka<Vec<u8>, Record>,
    capacity: u64,
}

/// The cache key of `key` in `space`: one byte of space, then the raw key.
fn cache_key(space: Space, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(space as u8);
    k.extend_from_slice(key);
    k
}

impl Cache {
    /// A cache holding at most `capacity` bytes of keys plus records.
    pub fn new(capacity: u64) -> Cache {
        let inner = Moka::builder()
            .max_capacity(capacity)
            .weigher(|k: &Vec<u8>, v: &Record| (k.len() + v.len() + ENTRY_OVERHEAD).try_into().unwrap_or(u32::MAX))
            .build();
        Cache { inner, capacity }
    }

    /// The cached record of `key`, if any.
    pub fn get(&self, space: Space, key: &[u8]) -> Option<Record> {
        if key.len() < STACK_KEY {
            let mut buf = [0u8; STACK_KEY];
            buf[0] = space as u8;
            buf[1..=key.len()].copy_from_slice(key);
            self.inner.get(&buf[..=key.len()])
        } else {
            self.inner.get(&cache_key(space, key)[..])
        }
    }

    /// Whether `key` is cached.
    pub fn contains(&self, space: Space, key: &[u8]) -> bool {
        self.inner.contains_key(&cache_key(space, key)[..])
    }

    /// Stores `rec` for `key`. Shard threads only (see the module rules).
    pub fn insert(&self, space: Space, key: &[u8], rec: Record) {
        self.inner.insert(cache_key(space, key), rec);
    }

    /// Forgets `key`. Shard threads only.
    pub fn invalidate(&self, space: Space, key: &[u8]) {
        self.inner.invalidate(&cache_key(space, key)[..]);
    }

    /// Whether the cache is close enough to its budget that warm-up should stop (inserts would be rejected).
    pub fn nearly_full(&self) -> bool {
        self.inner.weighted_size() >= self.capacity / 100 * 95
    }

    /// Bytes currently charged (eventually consistent; see [`sync`](Self::sync)).
    pub fn weighted_size(&self) -> u64 {
        self.inner.weighted_size()
    }

    /// Entries currently cached (eventually consistent).
    pub fn entry_count(&self) -> u64 {
        self.inner.entry_count()
    }

    /// Runs moka's pending housekeeping so that sizes are exact.
    pub fn sync(&self) {
        self.inner.run_pending_tasks();
    }

    /// The budget in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

/// A cache key as the shard channel carries it (space plus owned key bytes).
#[derive(Debug, Clone)]
pub struct FillRequest {
    /// Keyspace of the key.
    pub space: Space,
    /// Raw key.
    pub key: Bytes,
}
