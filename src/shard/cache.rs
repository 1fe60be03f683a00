//! The read cache: one [`quick_cache`] cache shared by all shards, bounded by `CACHE_BYTES` of real memory.
//!
//! # Rules (see docs/design.md)
//! - Only shard threads mutate the cache, each for its own keys, in commit order: after a commit they insert
//!   new records and invalidate deleted keys, before they answer the writers. HTTP readers only `get`.
//! - A reader that misses reads redb itself and asks the owning shard to fill the key (`ShardMsg::Fill`); the
//!   shard fills only after its current batch is committed, from its own view of the file, and only if the key
//!   is still absent. So a fill can never put back a value older than one the shard already wrote: the race in
//!   which a reader misses and reads the old value, a write commits and updates the cache, and the reader then
//!   inserts the old value it read cannot happen.
//! - The cache is a hint, never the source of truth: an insert may evict other entries, and an entry too heavy
//!   for the budget is not admitted (any older entry of its key is removed then, so nothing stale stays), so a
//!   miss is normal.
//!
//! # Layout (why not moka)
//! moka 0.12 costs about 370 bytes per entry of its own (measured), more than three times a 100-byte value. Here
//! the map key is the 64-bit xxh3 hash of `[space][key]` (8 bytes inline, no allocation), and the value is one
//! allocation holding `[space][key length: u16 LE][key][record]` for records up to [`INLINE_RECORD`] bytes: about
//! 180 bytes per entry for a 7-byte key and a 110-byte record, against 530 with moka. Every lookup compares the
//! full key stored in the entry, so two keys with the same hash never answer for each other: they only evict each
//! other (a miss). A hit on an inline entry returns a copy of the record (one allocation of the record's size);
//! larger records sit in a shared [`Record`] and a hit costs a reference count.
//!
//! Only the owning shard thread inserts or removes a key's entry, so the value found under a key is always the
//! last one that shard put there. `insert` replaces the entry of the same hash; `invalidate` removes it only if
//! it holds that key.
//!
//! # Weight
//! Each entry is charged the bytes it really occupies: its allocations rounded up as glibc's malloc does
//! ([`heap_bytes`]) plus [`SLOT_BYTES`] of the cache's own table, so `weighted_size` is the cache's memory to within
//! a few percent. The cache also remembers some evicted keys ("ghosts", [`GHOST_BYTES`] each) outside the weight;
//! their bound is taken off the budget up front, so entries plus ghosts stay within `CACHE_BYTES`.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use bytes::{Buf, Bytes};
use quick_cache::sync::{Cache as Quick, DefaultLifecycle};
use quick_cache::{OptionsBuilder, Weighter};

use crate::command::Space;
use crate::engine::change::Change;
use crate::record::Record;

/// Records up to this many bytes are stored inline with their key and copied out on a hit; larger ones are shared.
pub const INLINE_RECORD: usize = 512;
/// Bytes of the cache's own bookkeeping per entry: its slab slot (hash key 8, value 16, list links and state 16),
/// its hash table slot (4 + 1 control byte, at a load of 1/2 to 7/8) and the slack of the slab's doubling.
/// Measured with 1M entries: 51 to 59 bytes on top of the entry's own allocations.
pub const SLOT_BYTES: usize = 56;
/// Bytes one remembered evicted key (a ghost) occupies: a slab slot and a table slot.
pub const GHOST_BYTES: u64 = 48;
/// The average entry weight assumed to size the ghost list (the cache remembers up to a quarter as many evicted
/// keys as it would hold entries of this weight).
const TYPICAL_ENTRY: u64 = 256;
/// Share of the typical entry count remembered as ghosts.
const GHOST_SHARE: f64 = 0.25;
/// Header of an inline entry: space byte and key length.
const INLINE_HEADER: usize = 3;
/// Budget per internal shard of the cache (each has its own lock and its own share of the budget; an entry must
/// fit in one shard's share). More shards mean less lock contention between the shard workers, which all fill the
/// cache at once during warm-up.
const BYTES_PER_LOCK: u64 = 8 << 20;
/// Most internal shards.
const MAX_LOCKS: u64 = 64;
/// The least an entry can weigh (an empty key and record still take a 32-byte allocation and a slot).
const MIN_ENTRY_WEIGHT: u64 = 32 + SLOT_BYTES as u64;

/// The bytes glibc's malloc takes for an allocation of `n` bytes: an 8-byte header, 16-byte granules, at least
/// 32 bytes. An approximation for other allocators.
pub fn heap_bytes(n: usize) -> usize {
    (n + 8).div_ceil(16).max(2) * 16
}

/// A large record with its cache key (`[space][key]`), shared so that a hit is a reference count.
#[derive(Debug)]
struct SharedEntry {
    key: Box<[u8]>,
    record: Record,
}

/// A cached value: the entry's own key comes with it, to tell apart keys whose hashes collide.
#[derive(Debug, Clone)]
enum Entry {
    /// `[space][key length: u16 LE][key][record]` in one allocation.
    Inline(Box<[u8]>),
    /// A record over [`INLINE_RECORD`] bytes.
    Shared(Arc<SharedEntry>),
}

impl Entry {
    fn new(space: Space, key: &[u8], rec: &Record) -> Option<Entry> {
        if rec.len() <= INLINE_RECORD {
            let key_len = u16::try_from(key.len()).ok()?;
            let mut buf = Vec::with_capacity(INLINE_HEADER + key.len() + rec.len());
            buf.push(space as u8);
            buf.extend_from_slice(&key_len.to_le_bytes());
            buf.extend_from_slice(key);
            buf.extend_from_slice(rec.as_bytes());
            Some(Entry::Inline(buf.into_boxed_slice()))
        } else {
            let mut k = Vec::with_capacity(1 + key.len());
            k.push(space as u8);
            k.extend_from_slice(key);
            Some(Entry::Shared(Arc::new(SharedEntry { key: k.into_boxed_slice(), record: rec.clone() })))
        }
    }

    /// Whether this entry belongs to `key` in `space`.
    fn is(&self, space: Space, key: &[u8]) -> bool {
        match self {
            Entry::Inline(buf) => {
                buf.len() >= INLINE_HEADER + key.len()
                    && buf[0] == space as u8
                    && buf[1..INLINE_HEADER] == (key.len() as u16).to_le_bytes()
                    && buf[INLINE_HEADER..INLINE_HEADER + key.len()] == *key
            }
            Entry::Shared(e) => e.key.first() == Some(&(space as u8)) && e.key[1..] == *key,
        }
    }

    /// The record, if this entry belongs to `key` in `space`.
    fn into_record(self, space: Space, key: &[u8]) -> Option<Record> {
        if !self.is(space, key) {
            return None;
        }
        match self {
            Entry::Inline(buf) => {
                let mut bytes = Bytes::from(buf);
                bytes.advance(INLINE_HEADER + key.len());
                Record::decode(bytes).ok()
            }
            Entry::Shared(e) => Some(e.record.clone()),
        }
    }

    /// Bytes this entry occupies, beyond its slot in the cache's table.
    fn heap_weight(&self) -> usize {
        match self {
            Entry::Inline(buf) => heap_bytes(buf.len()),
            Entry::Shared(e) => {
                // The Arc (two counts + key pointer + record handle), the key, the record's buffer, and the
                // reference-count block `Bytes` allocates once the record is shared.
                heap_bytes(16 + std::mem::size_of::<SharedEntry>())
                    + heap_bytes(e.key.len())
                    + heap_bytes(e.record.len())
                    + heap_bytes(24)
            }
        }
    }
}

/// Charges each entry its real memory (see the module doc).
#[derive(Debug, Clone, Copy)]
struct EntryWeigher;

impl Weighter<u64, Entry> for EntryWeigher {
    fn weight(&self, _hash: &u64, entry: &Entry) -> u64 {
        (entry.heap_weight() + SLOT_BYTES) as u64
    }
}

/// The map key is already an xxh3 hash: pass it through instead of hashing it again.
#[derive(Debug, Clone, Copy, Default)]
struct PassThrough;

/// The [`Hasher`] of [`PassThrough`].
#[derive(Debug, Default)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed (through `write_u64`); anything else still gets a real hash.
        self.0 = xxhash_rust::xxh3::xxh3_64_with_seed(bytes, self.0);
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl BuildHasher for PassThrough {
    type Hasher = PassThroughHasher;
    fn build_hasher(&self) -> PassThroughHasher {
        PassThroughHasher(0)
    }
}

/// The map key of `key` in `space`.
fn hash(space: Space, key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key, space as u64)
}

type Inner = Quick<u64, Entry, EntryWeigher, PassThrough, DefaultLifecycle<u64, Entry>>;

/// The shared record cache. Cloning shares it.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
    capacity: u64,
    /// What entries may weigh: `capacity` less the ghosts' bound.
    entry_budget: u64,
}

impl Cache {
    /// Brings the cache in line with one committed command. Runs on the shard thread, after the commit and before
    /// the command is answered.
    pub fn apply(&self, change: Change) {
        match change {
            // Request records live only in the file.
            Change::None | Change::Recorded { .. } | Change::Forgotten { .. } => {}
            Change::Put(space, key, rec) => self.insert(space, &key, rec),
            Change::Remove(space, key) => self.invalidate(space, &key),
            Change::Found(space, key, rec) => {
                if !self.contains(space, &key) {
                    self.insert(space, &key, rec);
                }
            }
            // Clearing every shard's entries is safe: removing an entry can never make a read stale.
            Change::Clear(_) => self.clear(),
            Change::Many(changes) => changes.into_iter().for_each(|c| self.apply(c)),
        }
    }

    /// A cache holding at most `capacity` bytes of entries (keys, records and the cache's own tables).
    pub fn new(capacity: u64) -> Cache {
        let typical_entries = capacity / TYPICAL_ENTRY;
        let ghost_bound = (typical_entries as f64 * GHOST_SHARE) as u64 * GHOST_BYTES;
        let entry_budget = capacity.saturating_sub(ghost_bound);
        let mut options = OptionsBuilder::new();
        options
            .estimated_items_capacity(typical_entries.try_into().unwrap_or(usize::MAX))
            .weight_capacity(entry_budget)
            .ghost_allocation(GHOST_SHARE)
            .shards((capacity / BYTES_PER_LOCK).clamp(1, MAX_LOCKS) as usize);
        // `build` fails only when the item or weight capacity is missing; both are set above.
        let options = options.build().expect("item and weight capacity are set");
        let inner = Quick::with_options(options, EntryWeigher, PassThrough, DefaultLifecycle::default());
        Cache { inner: Arc::new(inner), capacity, entry_budget }
    }

    /// The cached record of `key`, if any.
    pub fn get(&self, space: Space, key: &[u8]) -> Option<Record> {
        self.inner.get(&hash(space, key))?.into_record(space, key)
    }

    /// Whether `key` is cached (does not count as a use).
    pub fn contains(&self, space: Space, key: &[u8]) -> bool {
        self.inner.peek(&hash(space, key)).is_some_and(|e| e.is(space, key))
    }

    /// Stores `rec` for `key`, replacing what the key had. Shard threads only (see the module rules). The cache
    /// may evict other entries to make room, or refuse an entry too heavy for it (then the key has no entry).
    pub fn insert(&self, space: Space, key: &[u8], rec: Record) {
        match Entry::new(space, key, &rec) {
            Some(entry) => self.inner.insert(hash(space, key), entry),
            // A key over 65535 bytes with a small record: not cached, and no older entry may stay.
            None => self.invalidate(space, key),
        }
    }

    /// Forgets `key`. Shard threads only.
    pub fn invalidate(&self, space: Space, key: &[u8]) {
        self.inner.remove_if(&hash(space, key), |e| e.is(space, key));
    }

    /// Makes room in the cache's tables for `entries` more entries (at most as many as could fit), so that a
    /// warm-up that knows how many it will load does not regrow them step by step. Memory is only touched as
    /// entries arrive, except one byte per table slot.
    pub fn reserve(&self, entries: u64) {
        let fit = self.entry_budget / MIN_ENTRY_WEIGHT;
        self.inner.reserve(entries.min(fit).try_into().unwrap_or(usize::MAX));
    }

    /// Drops every entry (FLUSHDB). Shard threads only. Entries other shards insert meanwhile may stay; they are
    /// current values of those shards' keys, so that is still correct.
    pub fn clear(&self) {
        self.inner.clear();
    }

    /// Whether the cache is close enough to its budget that warm-up should stop (more would evict).
    pub fn nearly_full(&self) -> bool {
        self.inner.weight() >= self.entry_budget / 100 * 95
    }

    /// Bytes currently charged (exact).
    pub fn weighted_size(&self) -> u64 {
        self.inner.weight()
    }

    /// Entries currently cached (exact).
    pub fn entry_count(&self) -> u64 {
        self.inner.len() as u64
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(rev: u64, len: usize) -> Record {
        Record::encode(rev, b"", &vec![b'v'; len])
    }

    #[test]
    fn insert_get_replace_invalidate() {
        let c = Cache::new(1 << 20);
        for len in [0, 100, INLINE_RECORD, INLINE_RECORD + 1, 10_000] {
            let key = format!("k{len}");
            assert_eq!(c.get(Space::Kv, key.as_bytes()), None);
            c.insert(Space::Kv, key.as_bytes(), rec(1, len));
            assert_eq!(c.get(Space::Kv, key.as_bytes()), Some(rec(1, len)), "len {len}");
            assert!(c.contains(Space::Kv, key.as_bytes()));
            assert!(!c.contains(Space::Doc, key.as_bytes()), "spaces are apart");
            c.insert(Space::Kv, key.as_bytes(), rec(2, len + 1));
            assert_eq!(c.get(Space::Kv, key.as_bytes()).map(|r| r.rev()), Some(2));
            c.invalidate(Space::Kv, key.as_bytes());
            assert_eq!(c.get(Space::Kv, key.as_bytes()), None);
            assert!(!c.contains(Space::Kv, key.as_bytes()));
        }
        assert_eq!(c.entry_count(), 0);
        assert_eq!(c.weighted_size(), 0);
    }

    #[test]
    fn same_key_in_other_spaces_and_prefixes_are_distinct() {
        let c = Cache::new(1 << 20);
        c.insert(Space::Kv, b"ab", rec(1, 10));
        c.insert(Space::Doc, b"ab", rec(2, 10));
        c.insert(Space::Kv, b"a", rec(3, 10));
        assert_eq!(c.get(Space::Kv, b"ab").map(|r| r.rev()), Some(1));
        assert_eq!(c.get(Space::Doc, b"ab").map(|r| r.rev()), Some(2));
        assert_eq!(c.get(Space::Kv, b"a").map(|r| r.rev()), Some(3));
        assert_eq!(c.get(Space::Counter, b"ab"), None);
        c.invalidate(Space::Doc, b"ab");
        assert_eq!(c.get(Space::Kv, b"ab").map(|r| r.rev()), Some(1));
    }

    #[test]
    fn an_entry_of_another_key_under_the_same_hash_is_a_miss() {
        let c = Cache::new(1 << 20);
        // Put the entry of "b" under the hash of "a", as a collision would.
        let entry = Entry::new(Space::Kv, b"b", &rec(7, 10)).expect("small key");
        c.inner.insert(hash(Space::Kv, b"a"), entry);
        assert_eq!(c.get(Space::Kv, b"a"), None);
        assert!(!c.contains(Space::Kv, b"a"));
        // Invalidating "a" leaves the entry of "b" alone; inserting "a" replaces it.
        c.invalidate(Space::Kv, b"a");
        assert_eq!(c.entry_count(), 1);
        c.insert(Space::Kv, b"a", rec(8, 10));
        assert_eq!(c.get(Space::Kv, b"a").map(|r| r.rev()), Some(8));
        assert_eq!(c.entry_count(), 1);
    }

    #[test]
    fn a_key_too_long_to_inline_is_not_cached_and_drops_its_old_entry() {
        let c = Cache::new(64 << 20);
        let key = vec![b'k'; usize::from(u16::MAX) + 1];
        c.insert(Space::Kv, &key, rec(1, INLINE_RECORD + 1));
        assert_eq!(c.get(Space::Kv, &key).map(|r| r.rev()), Some(1), "a shared entry holds any key length");
        c.insert(Space::Kv, &key, rec(2, 10));
        assert_eq!(c.get(Space::Kv, &key), None, "the old record must not stay");
    }

    #[test]
    fn weight_counts_real_bytes_and_stays_within_the_budget() {
        let c = Cache::new(1 << 20);
        c.insert(Space::Kv, b"k1", rec(1, 100));
        // 3 + 2 + 110 = 115 bytes -> a 128-byte chunk, plus the slot.
        assert_eq!(c.weighted_size(), (128 + SLOT_BYTES) as u64);
        for i in 0..20_000u32 {
            c.insert(Space::Kv, format!("key{i}").as_bytes(), rec(u64::from(i), 100));
        }
        assert!(c.weighted_size() <= c.capacity(), "{} > {}", c.weighted_size(), c.capacity());
        assert!(c.entry_count() < 20_000, "entries were evicted");
        assert!(c.nearly_full());
        c.clear();
        assert_eq!((c.entry_count(), c.weighted_size()), (0, 0));
        assert!(!c.nearly_full());
    }

    #[test]
    fn a_record_heavier_than_the_cache_is_refused_and_removes_the_old_one() {
        let c = Cache::new(4096);
        c.insert(Space::Kv, b"k", rec(1, 100));
        assert!(c.contains(Space::Kv, b"k"));
        c.insert(Space::Kv, b"k", rec(2, 8192));
        assert_eq!(c.get(Space::Kv, b"k"), None);
        let tiny = Cache::new(64);
        tiny.insert(Space::Kv, b"k", rec(1, 1));
        assert_eq!(tiny.get(Space::Kv, b"k"), None);
    }

    #[test]
    fn heap_bytes_rounds_like_malloc() {
        assert_eq!(heap_bytes(0), 32);
        assert_eq!(heap_bytes(24), 32);
        assert_eq!(heap_bytes(25), 48);
        assert_eq!(heap_bytes(120), 128);
        assert_eq!(heap_bytes(121), 144);
    }
}
