//! Key placement: raw key bytes -> partition -> shard.
//!
//! A key is hashed once with XXH3-64 (seed 0, over the raw bytes, never through the `Hash` trait, which adds a
//! length prefix). The top [`PARTITION_BITS`] bits of that hash pick one of [`PARTITIONS`] fixed partitions, and a
//! partition maps to a local shard by `partition % shards`. The partition space never changes, so resharding
//! (and, later, cluster placement) moves whole partitions instead of rehashing keys.
//!
//! Hash tags (placement version 2): when a key holds a `{`, and a `}` follows it with at least one byte between,
//! only the bytes between the first `{` and the next `}` are hashed, exactly as Redis Cluster does, so
//! `{user:42}:name` and `{user:42}:mail` share a shard and can be changed together (`MULTI`/`EXEC`).
//!
//! Invariant: the functions here are pure and pinned by golden-value tests; changing any output moves data on
//! disk and is a breaking change of the on-disk format: bump [`PLACEMENT_VERSION`], which makes the next start
//! re-place every record (see `reshard.rs`).

use xxhash_rust::xxh3::xxh3_64;

/// How many bits of the key hash select a partition.
pub const PARTITION_BITS: u32 = 10;
/// Size of the fixed partition space (1024). Also the largest useful shard count.
pub const PARTITIONS: u32 = 1 << PARTITION_BITS;

/// The placement rule this code implements; recorded in the manifest (absent there = 1, before hash tags).
pub const PLACEMENT_VERSION: u32 = 2;

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

/// The bytes of `key` that decide its placement: its hash tag when it has a non-empty one, else all of it.
pub fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{') {
        if let Some(len) = key[open + 1..].iter().position(|&b| b == b'}') {
            if len > 0 {
                return &key[open + 1..open + 1 + len];
            }
        }
    }
    key
}

/// The partition of a key: the top `PARTITION_BITS` bits of the hash of its [`hash_tag`].
pub fn partition_of(key: &[u8]) -> u32 {
    (key_hash(hash_tag(key)) >> (64 - PARTITION_BITS)) as u32
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
    fn hash_tags_follow_redis_cluster() {
        assert_eq!(hash_tag(b"{user:42}:name"), b"user:42");
        assert_eq!(hash_tag(b"x{a}y{b}"), b"a");
        assert_eq!(hash_tag(b"{}x"), b"{}x", "an empty tag hashes the whole key");
        assert_eq!(hash_tag(b"{{a}}"), b"{a");
        assert_eq!(hash_tag(b"no}tag{"), b"no}tag{");
        assert_eq!(hash_tag(b"a{b"), b"a{b");
        // Pinned: a tagged key sits where its tag sits.
        assert_eq!(partition_of(b"{hello}:1"), 597);
        assert_eq!(partition_of(b"{shopping/milk}"), 393);
        for i in 0..100 {
            assert_eq!(
                shard_for(format!("{{user:{i}}}:a").as_bytes(), 7),
                shard_for(format!("user:{i}").as_bytes(), 7)
            );
        }
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
