//! The read cache (`shale::shard::cache::Cache`) per entry, and one shard's start-up with its cache warm-up.
//!
//! - `cache/insert/{100,1000}B`: inserting new keys (records of 110 / 1010 bytes: the 100-byte value plus the
//!   record header) into a cache with room for all of them; throughput in entries.
//! - `cache/insert_evicting/100B`: the same into a full cache, so every insert evicts.
//! - `cache/get_hit/{100,1000}B`: a hit on a random cached key (100 B: an inline entry, copied out; 1000 B: a
//!   shared record, a reference count).
//! - `cache/get_miss`: a key that is not cached.
//! - `warm_up/scan_fill/100k`: `Store::scan` of a 100,000-entry shard file (100-byte values) into a fresh cache
//!   on this thread: the cache's share of the warm-up.
//! - `warm_up/shard_start/100k`: what a start does per shard: `Store::open` of the same (cleanly closed) file,
//!   with its integrity check and compaction check, then `shard::spawn`, whose worker scans the file into a
//!   fresh cache and reports ready; timed until ready.
//!
//! The targets this guards: a restart of 1M keys ready in <= 2 s (the cache warm-up is a large share of a
//! start) and the cache's memory per entry (`scripts/bench-memory.sh`).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shale::command::{Command, Space};
use shale::config::Durability;
use shale::engine::durability::Log;
use shale::engine::store::Store;
use shale::placement::ShardId;
use shale::record::Record;
use shale::shard::cache::Cache;
use shale::shard::{self, Readiness, ShardOptions};

use common::{key_of, put_value, temp_dir, XorShift, SEED};

/// Entries inserted per timed batch.
const BATCH: u64 = 10_000;
/// Entries of the warm-up file.
const WARM_ENTRIES: u64 = 100_000;

fn record(value_len: usize) -> Record {
    Record::encode(1, b"", &vec![0x5a; value_len])
}

fn bench_cache(c: &mut Criterion) {
    let keys: Vec<Bytes> = (0..BATCH).map(key_of).collect();
    let mut group = c.benchmark_group("cache");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Elements(BATCH));
    for value_len in [100usize, 1000] {
        let rec = record(value_len);
        group.bench_function(format!("insert/{value_len}B"), |b| {
            b.iter_batched(
                || Cache::new(64 << 20),
                |cache| {
                    for k in &keys {
                        cache.insert(Space::Kv, k, rec.clone());
                    }
                    cache
                },
                BatchSize::PerIteration,
            )
        });
    }
    // A cache that holds about a tenth of the keys, already full.
    let rec = record(100);
    let full = Cache::new(BATCH / 10 * 200);
    for i in 0..BATCH {
        full.insert(Space::Kv, &key_of(BATCH + i), rec.clone());
    }
    group.bench_function("insert_evicting/100B", |b| {
        b.iter(|| {
            for k in &keys {
                full.insert(Space::Kv, k, rec.clone());
            }
        })
    });

    group.throughput(Throughput::Elements(1));
    for value_len in [100usize, 1000] {
        let cache = Cache::new(64 << 20);
        for k in &keys {
            cache.insert(Space::Kv, k, record(value_len));
        }
        assert_eq!(cache.entry_count(), BATCH, "every key fits");
        let mut rng = XorShift(SEED);
        group.bench_function(format!("get_hit/{value_len}B"), |b| {
            b.iter(|| cache.get(Space::Kv, &keys[(rng.next() % BATCH) as usize]).expect("cached"))
        });
        if value_len == 100 {
            let absent = key_of(BATCH * 10);
            group.bench_function("get_miss", |b| b.iter(|| cache.get(Space::Kv, &absent)));
        }
    }
    group.finish();
}

/// A cleanly closed shard file of [`WARM_ENTRIES`] keys with 100-byte values.
fn warm_file(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("shard-0.redb");
    let store = Store::open(path.clone(), ShardId(0), 16 << 20, Log::Off).expect("open store");
    let mut next_rev = store.last_rev().expect("read rev") + 1;
    let value = Bytes::from(vec![0x5a; 100]);
    let cmds: Vec<Command> = (0..WARM_ENTRIES).map(|i| put_value(key_of(i), value.clone())).collect();
    for chunk in cmds.chunks(10_000) {
        store.apply_batch(chunk.iter(), &mut next_rev, false).expect("load");
    }
    store.flush().expect("flush");
    store.close();
    path
}

fn bench_warm_up(c: &mut Criterion) {
    let dir = temp_dir();
    let path = warm_file(dir.path());
    let mut group = c.benchmark_group("warm_up");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Elements(WARM_ENTRIES));

    let store = Store::open(path.clone(), ShardId(0), 16 << 20, Log::Off).expect("open store");
    group.bench_function("scan_fill/100k", |b| {
        b.iter_batched(
            || Cache::new(256 << 20),
            |cache| {
                store
                    .scan(Space::Kv, |k, rec| {
                        cache.insert(Space::Kv, k, rec);
                        true
                    })
                    .expect("scan");
                assert_eq!(cache.entry_count(), WARM_ENTRIES);
                cache
            },
            BatchSize::PerIteration,
        )
    });
    store.close();
    drop(store);

    let options = ShardOptions {
        durability: Durability::Immediate,
        flush_interval: Duration::from_millis(100),
        max_batch: 256,
        max_batch_bytes: 8 << 20,
        queue_depth: 1024,
    };
    group.bench_function("shard_start/100k", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let store = Arc::new(Store::open(path.clone(), ShardId(0), 16 << 20, Log::Off).expect("open store"));
                let cache = Cache::new(256 << 20);
                let readiness = Readiness::new(1);
                let (handle, join) =
                    shard::spawn(store, cache.clone(), options.clone(), readiness.clone()).expect("spawn");
                while !readiness.is_ready() {
                    std::thread::sleep(Duration::from_micros(200));
                }
                total += started.elapsed();
                assert_eq!(cache.entry_count(), WARM_ENTRIES);
                drop(handle);
                join.join().expect("worker exits");
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, bench_cache, bench_warm_up);
criterion_main!(benches);
