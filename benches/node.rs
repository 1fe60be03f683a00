//! Node plus shard workers, without HTTP: what a handler costs below actix.
//!
//! The rig is built the way `src/server.rs` builds it (`Store::open` per shard, `shard::spawn`, `Node::new`),
//! with durable (`immediate`) commits, and driven from a 2-thread tokio runtime (standing in for 2 actix workers).
//!
//! - `node/put_durable/shards{1,2,4}/inflight{1,64}`: tasks that each `dispatch` puts of 32-byte values to
//!   random keys back to back, so `inflight` puts are always waiting. With 64 in flight the shard workers batch
//!   them (group commit), and more shards commit in parallel.
//! - `node/get_cached/shards4/inflight64`: `Node::get` of preloaded keys, all served by the read cache.
//! - `node/get_miss/shards4/inflight64`: the same with a 64 KiB cache, so nearly every get reads the file (on
//!   the calling thread while that stays off the disk: `src/miss_reads.rs`).
//!
//! The data dir is a fresh temp dir inside `SHALE_BENCH_DIR` when set, else inside the system temp dir. Keys come
//! from fixed-seed xorshifts.

mod common;

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use shale::command::{Reply, Space};
use shale::engine::durability::Log;
use shale::engine::schema::shard_file;
use shale::engine::store::Store;
use shale::node::Node;
use shale::placement::ShardId;
use shale::shard::cache::Cache;
use shale::shard::{self, Readiness, ShardOptions};
use shale::Config;

use common::{key_of, put, temp_dir, XorShift};

/// Distinct keys the put benches write.
const KEY_SPACE: u64 = 100_000;
/// Keys preloaded for the read bench.
const PRELOAD: u64 = 10_000;
const CACHE_BYTES: u64 = 64 << 20;
/// The cache of the miss bench: room for a few hundred of the preloaded entries.
const MISS_CACHE_BYTES: u64 = 64 << 10;

/// Shards, their worker threads and the node over them, on a fresh data dir.
struct Rig {
    node: Arc<Node>,
    /// The node's cache (a handle on the same entries), to check what the gets will find.
    cache: Cache,
    workers: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Rig {
    fn start(shards: u32, cache_bytes: u64) -> Rig {
        let dir = temp_dir();
        let mut config = Config::for_test(dir.path());
        config.shards = shards;
        config.cache_bytes = cache_bytes;
        // As src/server.rs sizes redb's page cache.
        let redb_cache = (cache_bytes / 4 / u64::from(shards)).clamp(1 << 20, 1 << 30) as usize;
        let cache = Cache::new(cache_bytes);
        let readiness = Readiness::new(shards as usize);
        let options = ShardOptions::from_config(&config);
        let mut handles = Vec::new();
        let mut workers = Vec::new();
        for i in 0..shards {
            let store = Store::open(shard_file(dir.path(), ShardId(i)), ShardId(i), redb_cache, Log::Fsynced)
                .expect("open shard");
            let (handle, join) =
                shard::spawn(Arc::new(store), cache.clone(), options.clone(), readiness.clone()).expect("spawn");
            handles.push(handle);
            workers.push(join);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !readiness.is_ready() {
            assert!(Instant::now() < deadline, "shards not ready: {:?}", readiness.check());
            std::thread::sleep(Duration::from_millis(1));
        }
        let node = Arc::new(Node::new(handles, cache.clone(), readiness, 1024).expect("the stores read"));
        Rig { node, cache, workers, _dir: dir }
    }

    /// Drops the last shard senders, so every worker commits its queue, closes its file and exits.
    fn stop(self) {
        let Rig { node, workers, _dir, .. } = self;
        drop(Arc::into_inner(node).expect("no task still holds the node"));
        for w in workers {
            w.join().expect("shard worker exits cleanly");
        }
    }
}

/// Runs `inflight` tasks that each do `per_task` operations back to back; returns the wall time.
fn drive<F, Fut>(rt: &tokio::runtime::Runtime, node: &Arc<Node>, inflight: u64, per_task: u64, op: F) -> Duration
where
    F: Fn(Arc<Node>, u64) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    rt.block_on(async move {
        let started = Instant::now();
        let tasks: Vec<_> = (0..inflight)
            .map(|task| {
                let node = node.clone();
                tokio::spawn(async move {
                    let mut rng = XorShift::new(task);
                    for _ in 0..per_task {
                        op(node.clone(), rng.next()).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("bench task");
        }
        started.elapsed()
    })
}

async fn put_random(node: Arc<Node>, r: u64) {
    let reply = node.dispatch(put(key_of(r % KEY_SPACE))).await.expect("put");
    assert!(matches!(reply, Reply::Stored { .. }));
}

async fn get_preloaded(node: Arc<Node>, r: u64) {
    let rec = node.get(Space::Kv, key_of(r % PRELOAD)).await.expect("get");
    assert!(rec.is_some(), "preloaded key is present");
}

fn bench_router(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");

    let mut group = c.benchmark_group("node/put_durable");
    group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for shards in [1u32, 2, 4] {
        let rig = Rig::start(shards, CACHE_BYTES);
        for inflight in [1u64, 64] {
            group.throughput(Throughput::Elements(inflight));
            let id = BenchmarkId::new(format!("shards{shards}"), format!("inflight{inflight}"));
            group.bench_function(id, |b| b.iter_custom(|iters| drive(&rt, &rig.node, inflight, iters, put_random)));
        }
        rig.stop();
    }
    group.finish();

    for (name, cache_bytes) in [("node/get_cached", CACHE_BYTES), ("node/get_miss", MISS_CACHE_BYTES)] {
        let rig = Rig::start(4, cache_bytes);
        preload(&rt, &rig.node);
        let cached = rig.cache.entry_count();
        if cache_bytes == CACHE_BYTES {
            assert_eq!(cached, PRELOAD, "every preloaded key is cached");
        } else {
            assert!(cached < PRELOAD / 10, "{cached} of {PRELOAD} keys cached: the gets would not miss");
        }
        let mut group = c.benchmark_group(name);
        group.sample_size(10).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(2));
        group.throughput(Throughput::Elements(64));
        group.bench_function("shards4/inflight64", |b| {
            b.iter_custom(|iters| drive(&rt, &rig.node, 64, iters, get_preloaded))
        });
        group.finish();
        rig.stop();
    }
}

/// Puts keys `0..PRELOAD` from 64 tasks.
fn preload(rt: &tokio::runtime::Runtime, node: &Arc<Node>) {
    rt.block_on(async {
        let tasks: Vec<_> = (0..64u64)
            .map(|t| {
                let node = node.clone();
                tokio::spawn(async move {
                    for i in (t..PRELOAD).step_by(64) {
                        node.dispatch(put(key_of(i))).await.expect("preload");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("preload task");
        }
    });
}

criterion_group!(benches, bench_router);
criterion_main!(benches);
