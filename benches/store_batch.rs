//! One shard's [`Store`] alone, without threads or HTTP.
//!
//! - `store/put_durable/{1,16,256}`: one fsynced write transaction of N puts of 32-byte values to random keys.
//!   Throughput is in elements (puts), so the sweep shows how much group commit buys per fsync.
//! - `store/put_logged/{1,16,256}`: the same batches in a logged store (`DURABILITY=immediate`): one fdatasynced
//!   write-ahead-log frame, then a non-durable redb commit, plus a checkpoint every `CHECKPOINT_EVERY` batches
//!   (about what the shard worker does at `FLUSH_INTERVAL_MS=1000`), so its cost is amortised in the figure.
//! - `store/put_written/{1,16,256}`: the same in a store whose frames are written but not fdatasynced
//!   (`DURABILITY=eventual`; the log fdatasynced every `CHECKPOINT_EVERY` batches, checkpointed every
//!   `CHECKPOINT_BYTES`), against `store/put_nondurable/{1,16,256}`: one non-durable redb commit per batch without
//!   a log and a durable commit every `CHECKPOINT_EVERY` batches (the alternative to a log: redb's own
//!   non-durable commits).
//! - `store/get/{cache,redb}`: a cached read (`shale::shard::cache::Cache`) against a read from the file
//!   (`Store::get`: one redb read transaction; the file is small, so its pages sit in redb's and the OS's cache),
//!   on random keys of a preloaded set.
//!
//! The data dir is a fresh temp dir inside `SHALE_BENCH_DIR` when set (put it on the disk you want to measure),
//! else inside the system temp dir. Keys come from a fixed-seed xorshift, so every run writes the same keys.

mod common;

use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use shale::command::{Command, Space};
use shale::engine::durability::Log;
use shale::engine::durability::CHECKPOINT_BYTES;
use shale::engine::store::Store;
use shale::placement::ShardId;
use shale::shard::cache::Cache;

use common::{key_of, put, temp_dir, XorShift, SEED};

/// Distinct keys the benches write and read.
const KEY_SPACE: u64 = 100_000;
/// Keys preloaded for the read benches.
const PRELOAD: u64 = 10_000;

/// Batches per flush interval: between two checkpoints of an `immediate` store, two log fdatasyncs of an
/// `eventual` one, two durable commits of a store without a log whose batches commit non-durably.
const CHECKPOINT_EVERY: u64 = 200;

/// A store in a fresh dir, preloaded with `keys` in a few large non-durable transactions, then one durable commit.
fn preloaded(dir: &std::path::Path, keys: &[Bytes], log: Log) -> (Store, u64) {
    let store = Store::open(dir.join("shard-0.redb"), ShardId(0), 64 << 20, log).expect("open store");
    let mut next_rev = store.last_rev().expect("read rev") + 1;
    for chunk in keys.chunks(5_000) {
        let cmds: Vec<Command> = chunk.iter().cloned().map(put).collect();
        store.apply_batch(cmds.iter(), &mut next_rev, false).expect("preload");
    }
    store.flush().expect("flush");
    (store, next_rev)
}

fn bench_store(c: &mut Criterion) {
    let keys: Vec<Bytes> = (0..PRELOAD).map(key_of).collect();
    let cases = [
        ("store/put_durable", Log::Off, true),
        ("store/put_nondurable", Log::Off, false),
        ("store/put_logged", Log::Fsynced, false),
        ("store/put_written", Log::Written, false),
    ];
    for (name, log, durable) in cases {
        let dir = temp_dir();
        let (store, mut next_rev) = preloaded(dir.path(), &keys, log);
        let mut group = c.benchmark_group(name);
        group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
        let mut rng = XorShift(SEED);
        let mut batches = 0u64;
        for n in [1u64, 16, 256] {
            group.throughput(Throughput::Elements(n));
            group.bench_function(n.to_string(), |b| {
                b.iter_batched(
                    || (0..n).map(|_| put(rng.key(KEY_SPACE))).collect::<Vec<_>>(),
                    |cmds| {
                        let out = store.apply_batch(cmds.iter(), &mut next_rev, durable).expect("commit");
                        assert!(out.iter().all(Result::is_ok));
                        // As the shard thread does after the answers.
                        store.end_full_hold().expect("commit of a full hold");
                        batches += 1;
                        // What the shard thread does every `FLUSH_INTERVAL_MS`: under `eventual`, fdatasync the
                        // log; otherwise (and for the non-durable store without a log) a durable commit. A log is
                        // also checkpointed once it holds CHECKPOINT_BYTES.
                        if batches.is_multiple_of(CHECKPOINT_EVERY) {
                            match log {
                                Log::Written => _ = store.sync_log().expect("log fdatasync"),
                                Log::Fsynced => store.flush().expect("checkpoint"),
                                Log::Off if !durable => store.flush().expect("durable commit"),
                                Log::Off => {}
                            }
                        }
                        if store.logged_bytes().is_some_and(|b| b >= CHECKPOINT_BYTES) {
                            store.flush().expect("checkpoint");
                        }
                    },
                    BatchSize::SmallInput,
                )
            });
        }
        group.finish();
        store.close();
    }

    let dir = temp_dir();
    let (store, _) = preloaded(dir.path(), &keys, Log::Off);

    let cache = Cache::new(64 << 20);
    for k in &keys {
        let rec = store.get(Space::Kv, k).expect("read").expect("preloaded");
        cache.insert(Space::Kv, k, rec);
    }
    assert_eq!(cache.entry_count(), PRELOAD, "every preloaded key fits in the cache");

    let mut group = c.benchmark_group("store/get");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(1));
    let mut rng = XorShift(SEED ^ 1);
    group.bench_function("cache", |b| {
        b.iter(|| {
            let k = &keys[(rng.next() % PRELOAD) as usize];
            cache.get(Space::Kv, k).expect("cached")
        })
    });
    group.bench_function("redb", |b| {
        b.iter(|| {
            let k = &keys[(rng.next() % PRELOAD) as usize];
            store.get(Space::Kv, k).expect("read").expect("stored")
        })
    });
    group.finish();

    store.close();
}

criterion_group!(benches, bench_store);
criterion_main!(benches);
