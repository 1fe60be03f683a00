//! Key placement: raw key bytes -> partition -> shard.
//!
//! A key is hashed once with XXH3-64 (seed 0, over the raw bytes, never through the `Hash` trait, which adds a
//! length prefix). The top [`PARTITION_BITS`] bits of that hash pick one of [`PARTITIONS`] fixed partitions, and a
//! partition maps to a local shard by `partition % shards`. The partition space never changes, so resharding
//! (and, later, cluster placement) moves whole partitions instead of rehashing keys.
//!
//! Invariant: the functions here are pure and pinned by golden-value tests; changing any output moves data on
//! disk and is a breaking change of the on-disk format.

use xxhash_rust::xxh3::xxh3_64;

/// How many bits of the key hash select a partition.
pub const PARTITION_BITS: u32 = 10;
/// Size of the fixed partition space (1024). Also the largest useful shard count.
pub const PARTITIONS: u32 = 1 << PARTITION_BITS;

/// Index of a local shard: `0..shards`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u32);

impl std::fmt::Display for ShardId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The stable 64-bit hash of a key: XXH3-64 with seed 0 of the raw bytes.
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// The partition of a key: the top `PARTITION_BITS` bits of its hash.
pub fn partition_of(key: &[u8]) -> u32 {
    (key_hash(key) >> (64 - PARTITION_BITS)) as u32
}

/// The shard that owns a partition when the store has `shards` shards.
pub fn shard_of_partition(partition: u32, shards: u32) -> ShardId {
    debug_assert!(shards > 0, "shard count is validated at start-up");
    ShardId(partition % shards)
}

/// The shard that owns `key` when the store has `shards` shards.
pub fn shard_for(key: &[u8], shards: u32) -> ShardId {
    shard_of_partition(partition_of(key), shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values: if any of these change, data written by an older shale lands in the wrong shard.
    #[test]
    fn hash_matches_published_xxh3_vectors() {
        assert_eq!(key_hash(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(key_hash(b"a"), 0xe6c6_32b6_1e96_4e1f);
        assert_eq!(key_hash(b"hello"), 0x9555_e855_5c62_dcfd);
    }

    #[test]
    fn partitions_and_shards_are_pinned() {
        let golden: [(&[u8], u32); 5] =
            [(b"", 180), (b"a", 923), (b"hello", 597), (b"shopping/milk", 393), (b"user:42", 639)];
        for (key, partition) in golden {
            assert_eq!(partition_of(key), partition, "key {:?}", key);
        }
        assert_eq!(shard_for(b"hello", 4), ShardId(597 % 4));
        assert_eq!(shard_for(b"a", 7), ShardId(923 % 7));
        assert_eq!(shard_for(b"anything", 1), ShardId(0));
    }

    #[test]
    fn keys_spread_over_shards() {
        let mut counts = [0u32; 8];
        for i in 0..80_000u32 {
            counts[shard_for(format!("key-{i}").as_bytes(), 8).0 as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "uneven spread: {counts:?}");
        }
    }
}
