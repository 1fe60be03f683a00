//! Many clients at once against an in-process server with a small cache, so reads keep missing and filling the
//! cache while writers commit (the read-miss/commit race): no read may return a version older than the last one
//! acknowledged, a writer always reads its own write, and conditional writes are exact under contention.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client, temp_dir, TestServer};
use reqwest::{Client, StatusCode};
use shale::Config;

/// Writer tasks; each owns its own keys, so every key has one writer and a well-defined version order.
const WRITERS: usize = 12;
/// Keys per writer.
const KEYS_PER_WRITER: usize = 10;
/// Reader tasks hammering every key with GETs.
const READERS: usize = 4;
/// Operations per writer per phase.
const OPS_PER_WRITER: u64 = 50;
/// Padding per value, so a few dozen values overflow the cache.
const PAD: usize = 1000;
/// The cache holds about a third of the keys.
const SMALL_CACHE: u64 = 48 * 1024;

/// Operation `n` on a key deletes it when `n` is a multiple of this; otherwise it writes version `n`.
const DELETE_EVERY: u64 = 5;

fn is_delete(n: u64) -> bool {
    n.is_multiple_of(DELETE_EVERY)
}

/// Per key: the last operation sent (`issued`) and the last one acknowledged (`acked`).
struct KeyState {
    name: String,
    issued: AtomicU64,
    acked: AtomicU64,
}

fn value_of(key: &str, n: u64) -> Vec<u8> {
    let mut v = format!("{key}#{n}|").into_bytes();
    v.resize(v.len() + PAD, b'p');
    v
}

/// The version in a value written by [`value_of`] for `key`; panics on anything else (a torn or foreign value).
fn version_in(key: &str, body: &[u8]) -> u64 {
    let text = std::str::from_utf8(body).expect("values are ASCII");
    let (k, rest) = text.split_once('#').unwrap_or_else(|| panic!("bad value for {key}: {text:.40}"));
    assert_eq!(k, key, "value of another key");
    let (n, pad) = rest.split_once('|').unwrap_or_else(|| panic!("bad value for {key}: {text:.40}"));
    assert!(pad.len() == PAD && pad.bytes().all(|b| b == b'p'), "torn value for {key}");
    n.parse().unwrap_or_else(|_| panic!("bad version for {key}: {n}"))
}

/// GET `key`: Some(version) on 200, None on 404.
async fn read_version(http: &Client, base: &str, key: &str) -> Option<u64> {
    let res = http.get(format!("{base}/kv/{key}")).send().await.unwrap_or_else(|e| panic!("GET {key}: {e}"));
    match res.status() {
        StatusCode::NOT_FOUND => None,
        StatusCode::OK => Some(version_in(key, &res.bytes().await.unwrap())),
        s => panic!("GET {key}: {s}"),
    }
}

/// What `key` must read as when operation `n` is its newest.
fn expected_after(n: u64) -> Option<u64> {
    (n != 0 && !is_delete(n)).then_some(n)
}

/// Applies `OPS_PER_WRITER` operations to each writer's keys while readers check every answer. Returns the number
/// of reader GETs checked.
async fn run_phase(base: &str, keys: &Arc<Vec<KeyState>>) -> usize {
    let http = client();
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));

    let mut readers = Vec::new();
    for r in 0..READERS {
        let (http, base, keys, done, reads) =
            (http.clone(), base.to_string(), keys.clone(), done.clone(), reads.clone());
        readers.push(tokio::spawn(async move {
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (r as u64 + 1);
            for _ in 0..1_000_000 {
                if done.load(Ordering::Acquire) {
                    break;
                }
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let key = &keys[(x % keys.len() as u64) as usize];
                let acked = key.acked.load(Ordering::Acquire);
                let got = read_version(&http, &base, &key.name).await;
                let issued = key.issued.load(Ordering::Acquire);
                match got {
                    Some(v) => assert!(
                        acked <= v && v <= issued && !is_delete(v),
                        "{}: read version {v}, but {acked} was acknowledged before the read (issued {issued})",
                        key.name
                    ),
                    None => assert!(
                        acked == 0 || issued / DELETE_EVERY * DELETE_EVERY >= acked,
                        "{}: read 404, but version {acked} was acknowledged before the read and no delete \
                         was sent since (issued {issued})",
                        key.name
                    ),
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (http, base, keys) = (http.clone(), base.to_string(), keys.clone());
        writers.push(tokio::spawn(async move {
            let mine = &keys[w * KEYS_PER_WRITER..(w + 1) * KEYS_PER_WRITER];
            for i in 0..OPS_PER_WRITER {
                let key = &mine[i as usize % mine.len()];
                let prev = key.acked.load(Ordering::Acquire);
                let n = prev + 1;
                key.issued.store(n, Ordering::Release);
                let url = format!("{base}/kv/{}", key.name);
                let status = if is_delete(n) {
                    http.delete(&url).send().await.unwrap().status()
                } else {
                    http.put(&url).body(value_of(&key.name, n)).send().await.unwrap().status()
                };
                let want = match (is_delete(n), expected_after(prev)) {
                    (true, _) => StatusCode::NO_CONTENT,
                    (false, None) => StatusCode::CREATED,
                    (false, Some(_)) => StatusCode::NO_CONTENT,
                };
                assert_eq!(status, want, "op {n} on {}", key.name);
                key.acked.store(n, Ordering::Release);
                // Read-your-writes: the writer's next read sees exactly its acknowledged write.
                let got = read_version(&http, &base, &key.name).await;
                assert_eq!(got, expected_after(n), "{} right after acknowledged op {n}", key.name);
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    done.store(true, Ordering::Release);
    for r in readers {
        r.await.unwrap();
    }
    reads.load(Ordering::Relaxed)
}

fn small_cache_config(dir: &std::path::Path, cache_bytes: u64) -> Config {
    Config { cache_bytes, ..Config::for_test(dir) }
}

/// After a restart, every key holds its last acknowledged operation.
async fn check_all(base: &str, keys: &[KeyState]) {
    let http = client();
    for key in keys {
        let n = key.acked.load(Ordering::Acquire);
        assert_eq!(read_version(&http, base, &key.name).await, expected_after(n), "{} after restart", key.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_never_go_back_in_time_under_cache_pressure() {
    let dir = temp_dir();
    let keys: Arc<Vec<KeyState>> = Arc::new(
        (0..WRITERS * KEYS_PER_WRITER)
            .map(|i| KeyState { name: format!("c/{i:03}"), issued: AtomicU64::new(0), acked: AtomicU64::new(0) })
            .collect(),
    );
    let data_bytes = (keys.len() * PAD) as u64;
    assert!(data_bytes > 2 * SMALL_CACHE, "the data set must not fit the cache");

    // Phase 1: fresh store, small cache.
    let server = TestServer::start(small_cache_config(dir.path(), SMALL_CACHE));
    let reads = run_phase(&server.base(), &keys).await;
    assert!(reads > 0, "the readers ran");
    server.stop();

    // Phase 2: restart; the warm-up keeps only what fits, so the readers' misses race the first writes.
    let server = TestServer::start(small_cache_config(dir.path(), SMALL_CACHE));
    check_all(&server.base(), &keys).await;
    run_phase(&server.base(), &keys).await;
    server.stop();

    // Phase 3: restart with a cache too small for any value: it starts empty and every read misses.
    let server = TestServer::start(small_cache_config(dir.path(), 64));
    check_all(&server.base(), &keys).await;
    run_phase(&server.base(), &keys).await;
    check_all(&server.base(), &keys).await;
    // Misses that came while a shard held answered writes were read by the shard (and counted as such).
    let metrics = client().get(format!("{}/metrics", server.base())).send().await.unwrap().text().await.unwrap();
    let by_shard = metrics
        .lines()
        .find_map(|l| l.strip_prefix("shale_cache_miss_reads_total{path=\"shard\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(by_shard.is_some_and(|n| n > 0.0), "no miss was read by its shard: {by_shard:?}");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_only_has_exactly_one_winner() {
    const N: usize = 24;
    let dir = temp_dir();
    let server = TestServer::start(Config::for_test(dir.path()));
    let http = client();
    for round in 0..4 {
        let url = server.url(&format!("/kv/race-{round}"));
        let barrier = Arc::new(tokio::sync::Barrier::new(N));
        let tasks: Vec<_> = (0..N)
            .map(|i| {
                let (http, url, barrier) = (http.clone(), url.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    let res = http.put(&url).header("if-none-match", "*").body(format!("writer {i}")).send().await;
                    res.unwrap().status()
                })
            })
            .collect();
        let mut winners = Vec::new();
        for (i, t) in tasks.into_iter().enumerate() {
            match t.await.unwrap() {
                StatusCode::CREATED => winners.push(i),
                StatusCode::PRECONDITION_FAILED => {}
                s => panic!("create-only PUT answered {s}"),
            }
        }
        assert_eq!(winners.len(), 1, "exactly one 201 among {N} create-only PUTs, got {winners:?}");
        let body = http.get(&url).send().await.unwrap().text().await.unwrap();
        assert_eq!(body, format!("writer {}", winners[0]), "the stored value is the winner's");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_increments_are_exact() {
    const TASKS: usize = 8;
    const INCREMENTS: usize = 20;
    let dir = temp_dir();
    let server = TestServer::start(Config::for_test(dir.path()));
    let http = client();
    let url = server.url("/kv/cas-counter");
    assert_eq!(http.put(&url).body("0").send().await.unwrap().status(), StatusCode::CREATED);
    let conflicts = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(60);

    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let (http, url, conflicts) = (http.clone(), url.clone(), conflicts.clone());
            tokio::spawn(async move {
                let mut done = 0;
                for _attempt in 0..100_000 {
                    if done == INCREMENTS {
                        return;
                    }
                    assert!(Instant::now() < deadline, "CAS loop too slow");
                    let res = http.get(&url).send().await.unwrap();
                    assert_eq!(res.status(), StatusCode::OK);
                    let etag = res.headers()["etag"].to_str().unwrap().to_string();
                    let n: u64 = res.text().await.unwrap().parse().unwrap();
                    let put = http.put(&url).header("if-match", &etag).body((n + 1).to_string()).send().await.unwrap();
                    match put.status() {
                        StatusCode::NO_CONTENT => {
                            assert_ne!(put.headers()["etag"].to_str().unwrap(), etag, "a new value, a new ETag");
                            done += 1;
                        }
                        StatusCode::PRECONDITION_FAILED => {
                            conflicts.fetch_add(1, Ordering::Relaxed);
                        }
                        s => panic!("CAS PUT answered {s}"),
                    }
                }
                panic!("CAS did not finish");
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let total: usize = http.get(&url).send().await.unwrap().text().await.unwrap().parse().unwrap();
    assert_eq!(total, TASKS * INCREMENTS, "every acknowledged CAS increment counted exactly once");
    eprintln!("CAS: {} conflicts retried", conflicts.load(Ordering::Relaxed));
}
