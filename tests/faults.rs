//! Faults: crashes (kill -9 under load), a failed commit inside one shard, and torn data in a closed shard file.
//! Every acknowledged write survives a crash, a failed commit stores nothing and stays inside its shard, and a
//! damaged file is refused at start-up, never served as garbage. The disk-full test is `tests/disk_full.rs`,
//! hostile clients are `tests/hostile.rs`.

mod common;

#[allow(dead_code)] // its `main` and a few fields only serve the command line
#[path = "../examples/crash_writer.rs"]
mod crash_writer;

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{client, temp_dir, Shale, TestServer};
use shale::command::{Command, Precondition, Space};
use shale::engine::durability::Log;
use shale::engine::schema::shard_file;
use shale::engine::store::Store;
use shale::placement::{shard_for, ShardId};
use shale::Config;

// ---- crashes ----

/// Three cycles of `scripts/crash-test.sh` (same code): kill -9 under concurrent durable PUTs, DELETEs and
/// counter increments, restart, and every acknowledged operation is there.
#[test]
fn kill9_under_load_loses_no_acknowledged_write() {
    kill9_cycles("immediate", 3);
}

/// `eventual` acknowledges once the log frame is written, unsynced: a kill of the process loses nothing either.
#[test]
fn kill9_under_load_loses_no_acknowledged_write_under_eventual() {
    kill9_cycles("eventual", 2);
}

fn kill9_cycles(durability: &str, cycles: u32) {
    let dir = temp_dir();
    let mut opts = crash_writer::Options::new(env!("CARGO_BIN_EXE_shale").into(), dir.path().to_path_buf(), cycles);
    opts.durability = durability.into();
    opts.seed = 20_240_606;
    opts.writers = 8;
    opts.kill_min = Duration::from_millis(300);
    opts.kill_max = Duration::from_millis(1000);
    let summary = crash_writer::run(&opts).expect("the crash test runs");
    println!("cycles {}, acknowledged {}, lost {}", summary.cycles, summary.acknowledged, summary.lost.len());
    assert_eq!(summary.cycles, cycles);
    assert!(summary.lost.is_empty(), "acknowledged operations lost:\n{}", summary.lost.join("\n"));
    assert!(
        summary.acked_per_cycle.iter().all(|&n| n > 0),
        "every cycle must acknowledge something, or it tested nothing: {:?}",
        summary.acked_per_cycle
    );
    assert!(summary.acked_puts > 0 && summary.acked_deletes > 0 && summary.acked_increments > 0, "{summary:?}");
}

/// The negative control: with `DURABILITY=eventual` (and a 60 s flush interval), deleting the logs after the kill
/// (worse than a power loss, which keeps what their last fdatasync covered) loses acknowledged writes, and the
/// same checker must say so. Proves the crash test can fail.
#[test]
fn the_crash_checker_catches_lost_acknowledgements() {
    let dir = temp_dir();
    let mut opts = crash_writer::Options::new(env!("CARGO_BIN_EXE_shale").into(), dir.path().to_path_buf(), 1);
    opts.writers = 4;
    opts.durability = "eventual".into();
    opts.power_loss = true;
    opts.verbose = false;
    let summary = crash_writer::run(&opts).expect("the crash test runs");
    assert!(summary.acknowledged > 0);
    assert!(!summary.lost.is_empty(), "eventual durability lost nothing? {summary:?}");
}

// ---- a failed commit ----

fn kv_put(key: &[u8], value: &[u8]) -> Command {
    Command::Put {
        space: Space::Kv,
        key: Bytes::copy_from_slice(key),
        value: Bytes::copy_from_slice(value),
        content_type: Bytes::new(),
        precondition: Precondition::NONE,
        skip_if_unchanged: false,
    }
}

/// `n` keys with `prefix` that shard `shard` of `shards` owns.
fn keys_of_shard(prefix: &str, shard: u32, shards: u32, n: usize) -> Vec<String> {
    (0..).map(|i| format!("{prefix}{i}")).filter(|k| shard_for(k.as_bytes(), shards).0 == shard).take(n).collect()
}

/// Fills shard 0 of a (stopped) data dir with `extra` and `n` filler records in one transaction, so that its
/// cache warm-up at the next start takes a while: writes sent meanwhile queue up and become one batch.
fn fill_shard0(dir: &Path, n: usize, extra: Command) {
    let store = Store::open(shard_file(dir, ShardId(0)), ShardId(0), 16 << 20, Log::Off).expect("opening shard 0");
    let filler = (0..n).map(|i| kv_put(format!("filler/{i:07}").as_bytes(), format!("{i:0100}").as_bytes()));
    let cmds: Vec<Command> = std::iter::once(extra).chain(filler).collect();
    let mut rev = store.last_rev().unwrap() + 1;
    let out = store.apply_batch(cmds.iter(), &mut rev, true).expect("filling shard 0");
    assert!(out.iter().all(Result::is_ok));
    store.close();
}

fn config(dir: &Path) -> Config {
    let mut c = Config::for_test(dir);
    c.shards = 4;
    c.cache_bytes = 512 << 20; // the whole filler fits: the warm-up scans all of it
    c
}

/// A batch whose transaction fails answers 5xx JSON to each of its requests and stores none of them; the shard
/// reopens its database and takes later writes; the other shards never notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_commit_fails_its_whole_batch_and_the_shard_recovers() {
    let dir = temp_dir();
    TestServer::start(config(dir.path())).stop(); // manifest and shard files
                                                  // A prefilled key of shard 0 that the failing batch deletes, and a counter of shard 0 it increments.
    let victim = keys_of_shard("victim-", 0, 4, 1).remove(0);
    let counter = keys_of_shard("counter-", 0, 4, 1).remove(0);
    fill_shard0(dir.path(), 100_000, kv_put(victim.as_bytes(), b"still here"));

    let server = TestServer::start_unready(config(dir.path()));
    let node = server.node();
    // Shard 0 is still warming up: it takes no message yet, so everything sent to it now forms its first batch.
    node.shards()[0].store().inject_commit_failures(1);
    let http = client();
    let doomed = keys_of_shard("doomed-", 0, 4, 16);
    let mut pending = Vec::new();
    for k in &doomed {
        pending.push(tokio::spawn(http.put(server.url(&format!("/kv/{k}"))).body(k.clone()).send()));
    }
    pending.push(tokio::spawn(http.delete(server.url(&format!("/kv/{victim}"))).send()));
    pending.push(tokio::spawn(http.post(server.url(&format!("/counter/{counter}"))).body("5").send()));

    // Meanwhile the other shards serve.
    for shard in 1..4 {
        for k in keys_of_shard(&format!("other{shard}-"), shard, 4, 4) {
            let res = http.put(server.url(&format!("/kv/{k}"))).body(k.clone()).send().await.unwrap();
            assert_eq!(res.status(), 201, "shard {shard} must serve while shard 0 is busy");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while node.shards()[0].queue_len() < pending.len() {
        assert!(Instant::now() < deadline, "the writes never reached shard 0's queue");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        !node.readiness().is_ready(),
        "shard 0 finished warming up before all {} writes were queued: make the filler larger",
        pending.len()
    );

    for p in pending {
        let res = p.await.unwrap().unwrap();
        let status = res.status();
        let ctype = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
        let body: serde_json::Value = res.json().await.expect("a JSON error body");
        assert!(status.is_server_error(), "every request of the failed batch fails, got {status}: {body}");
        assert_eq!(ctype.as_deref(), Some("application/json"));
        assert_eq!(body["error"], "internal", "{body}");
        assert!(body["message"].as_str().unwrap().contains("shard 0"), "{body}");
    }
    common::wait_ready(&server.base()).await;
    // While the shard closes and reopens its file, its reads answer 503 + Retry-After.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let res = http.get(server.url(&format!("/kv/{victim}"))).send().await.unwrap();
        if res.status() != 503 {
            break;
        }
        assert!(res.headers().contains_key("retry-after"));
        assert!(Instant::now() < deadline, "shard 0 did not reopen");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Nothing of the batch is stored...
    for k in &doomed {
        assert_eq!(http.get(server.url(&format!("/kv/{k}"))).send().await.unwrap().status(), 404, "{k}");
    }
    let kept = http.get(server.url(&format!("/kv/{victim}"))).send().await.unwrap();
    assert_eq!(kept.status(), 200);
    assert_eq!(kept.bytes().await.unwrap(), "still here");
    let value = http.get(server.url(&format!("/counter/{counter}/value"))).send().await.unwrap();
    assert_eq!(value.text().await.unwrap(), "0");
    // ...the shard reopened and takes writes again, of every kind...
    for k in &doomed[..4] {
        let res = http.put(server.url(&format!("/kv/{k}"))).body("second try").send().await.unwrap();
        assert_eq!(res.status(), 201, "{k}");
    }
    assert_eq!(http.delete(server.url(&format!("/kv/{victim}"))).send().await.unwrap().status(), 204);
    assert_eq!(http.post(server.url(&format!("/counter/{counter}"))).body("5").send().await.unwrap().status(), 204);
    // ...and the other shards kept what they acknowledged.
    for shard in 1..4 {
        for k in keys_of_shard(&format!("other{shard}-"), shard, 4, 4) {
            let res = http.get(server.url(&format!("/kv/{k}"))).send().await.unwrap();
            assert_eq!(res.status(), 200);
            assert_eq!(res.bytes().await.unwrap(), k.as_bytes());
        }
    }
    drop(http);
    server.stop();

    // After a restart the file says the same.
    let server = TestServer::start(config(dir.path()));
    let http = client();
    for k in &doomed[4..] {
        assert_eq!(http.get(server.url(&format!("/kv/{k}"))).send().await.unwrap().status(), 404, "{k}");
    }
    for k in &doomed[..4] {
        assert_eq!(http.get(server.url(&format!("/kv/{k}"))).send().await.unwrap().text().await.unwrap(), "second try");
    }
    assert_eq!(http.get(server.url(&format!("/kv/{victim}"))).send().await.unwrap().status(), 404);
    let value = http.get(server.url(&format!("/counter/{counter}/value"))).send().await.unwrap();
    assert_eq!(value.text().await.unwrap(), "5");
}

// ---- torn data ----

const TORN_SHARD: u32 = 1;

fn torn_value(key: &str) -> String {
    format!("<{key}>").repeat(12)
}

/// A cleanly closed data dir with `n` keys spread over 4 shards; returns the keys.
async fn torn_setup(dir: &Path, n: usize) -> Vec<String> {
    let server = TestServer::start(config(dir));
    let http = client();
    let keys: Vec<String> = (0..n).map(|i| format!("torn/{i:05}")).collect();
    for chunk in keys.chunks(32) {
        let puts = chunk.iter().map(|k| http.put(server.url(&format!("/kv/{k}"))).body(torn_value(k)).send());
        for res in futures_util::future::join_all(puts).await {
            assert_eq!(res.unwrap().status(), 201);
        }
    }
    server.stop(); // clean close: redb will not re-verify the file on the next open
    keys
}

/// What a start on a damaged dir did: refused (with its stderr), or served exactly the stored values.
async fn start_on_damaged(dir: &Path, keys: &[String], what: &str) -> Result<(), String> {
    match Shale::serve(dir).args(["--shards", "4"]).try_start() {
        Err(exited) => {
            assert!(!exited.status.success(), "{what}: a refused start must exit non-zero");
            Err(exited.stderr)
        }
        Ok(server) => {
            let http = client();
            let ready = Instant::now() + Duration::from_secs(30);
            loop {
                match http.get(server.url("/readyz")).send().await {
                    Ok(r) if r.status() == 200 => break,
                    _ if Instant::now() > ready => {
                        panic!("{what}: started but never ready; stderr:\n{}", server.stderr())
                    }
                    _ => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
            for k in keys {
                let res = http.get(server.url(&format!("/kv/{k}"))).send().await;
                let res = res.unwrap_or_else(|e| panic!("{what}: GET {k} failed ({e}); stderr:\n{}", server.stderr()));
                let status = res.status();
                let body = res.bytes().await.unwrap_or_default();
                assert!(
                    status == 200 && body == torn_value(k).as_bytes(),
                    "{what}: the damaged file was served: {k} -> {status} {:?}",
                    String::from_utf8_lossy(&body[..body.len().min(80)])
                );
            }
            Ok(())
        }
    }
}

fn assert_refused_naming_the_shard(stderr: &str, what: &str) {
    let name = format!("shard-{TORN_SHARD}");
    assert!(stderr.contains(&name), "{what}: the error must name {name}; stderr:\n{stderr}");
    // redb may panic on a damaged page (the panic hook prints it); shale must catch it and refuse cleanly.
    assert!(stderr.contains("damaged"), "{what}: not refused by shale's check; stderr:\n{stderr}");
    assert!(!stderr.contains("aborting"), "{what}: the process aborted; stderr:\n{stderr}");
}

fn flip(path: &Path, offsets: impl IntoIterator<Item = usize>) {
    let mut bytes = std::fs::read(path).unwrap();
    for off in offsets {
        bytes[off] ^= 0x5a;
    }
    std::fs::write(path, bytes).unwrap();
}

/// A flipped byte inside a stored value of a cleanly closed file: redb does not re-verify such a file on open,
/// so without shale's start-up check the wrong value would be served. It must be refused, naming the shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_value_byte_is_refused_at_start_naming_the_shard() {
    let dir = temp_dir();
    let keys = torn_setup(dir.path(), 200).await;
    let victim = keys.iter().find(|k| shard_for(k.as_bytes(), 4).0 == TORN_SHARD).unwrap();
    let file = shard_file(dir.path(), ShardId(TORN_SHARD));
    let bytes = std::fs::read(&file).unwrap();
    let needle = torn_value(victim);
    // Flip every copy (a freed page may still hold an older one), in the middle of the value.
    let hits: Vec<usize> =
        bytes.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle.as_bytes()).map(|(i, _)| i).collect();
    assert!(!hits.is_empty(), "the value is stored as is in the file");
    flip(&file, hits.iter().map(|i| i + needle.len() / 2));
    let stderr = start_on_damaged(dir.path(), &keys, "flipped value byte").await.expect_err("must refuse");
    assert_refused_naming_the_shard(&stderr, "flipped value byte");
}

/// A damaged header (the magic number) or a truncated file: refused, naming the shard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_header_or_a_truncated_file_is_refused_naming_the_shard() {
    let dir = temp_dir();
    let keys = torn_setup(dir.path(), 100).await;
    let file = shard_file(dir.path(), ShardId(TORN_SHARD));
    let pristine = std::fs::read(&file).unwrap();

    flip(&file, [0]);
    let stderr = start_on_damaged(dir.path(), &keys, "flipped magic byte").await.expect_err("must refuse");
    assert_refused_naming_the_shard(&stderr, "flipped magic byte");

    std::fs::write(&file, &pristine[..pristine.len() / 2]).unwrap();
    let stderr = start_on_damaged(dir.path(), &keys, "truncated file").await.expect_err("must refuse");
    assert_refused_naming_the_shard(&stderr, "truncated file");

    std::fs::write(&file, &pristine).unwrap();
    start_on_damaged(dir.path(), &keys, "restored file").await.expect("the intact file serves again");
}

/// One flipped byte at offsets all over the file (header, page headers, branch and leaf pages, free space):
/// every start either refuses naming the shard, or serves every value exactly. Never garbage, never a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_anywhere_is_refused_or_harmless() {
    let dir = temp_dir();
    let keys = torn_setup(dir.path(), 150).await;
    let file = shard_file(dir.path(), ShardId(TORN_SHARD));
    let pristine = std::fs::read(&file).unwrap();
    let len = pristine.len();
    let mut offsets = vec![8, 64, 100, 300, 4096, 4097, 4200, 8192, 8300, 12_288 + 7];
    offsets.extend((1..8).map(|i| len * i / 8 + 3));
    // Aim at live data too: most of a small file is free space. Every copy of one key and of its value, and
    // the header of the page that holds each (page type, entry count, offsets table).
    let victim = keys.iter().find(|k| shard_for(k.as_bytes(), 4).0 == TORN_SHARD).unwrap();
    for needle in [victim.clone(), torn_value(victim)] {
        for (i, _) in pristine.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle.as_bytes()) {
            let page = i / 4096 * 4096;
            offsets.extend([i + needle.len() - 2, page, page + 1, page + 2, page + 4, page + 9]);
        }
    }
    offsets.sort_unstable();
    offsets.dedup();
    offsets.retain(|&o| o < len);
    let (mut refused, mut harmless) = (Vec::new(), Vec::new());
    for off in offsets {
        std::fs::write(&file, &pristine).unwrap();
        flip(&file, [off]);
        match start_on_damaged(dir.path(), &keys, &format!("byte {off} of {len} flipped")).await {
            Err(stderr) => {
                assert_refused_naming_the_shard(&stderr, &format!("byte {off}"));
                refused.push(off);
            }
            Ok(()) => harmless.push(off),
        }
    }
    println!("file of {len} bytes; refused at {refused:?}; harmless (unused bytes) at {harmless:?}");
    assert!(!refused.is_empty(), "no flip was detected at all");
}

/// Cost of the start-up integrity check: opens a 100k-key shard file. Run by hand:
/// `cargo test --release --test faults integrity_check_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn integrity_check_cost() {
    let dir = temp_dir();
    let path = dir.path().join("shard-0.redb");
    let store = Store::open(path.clone(), ShardId(0), 64 << 20, Log::Off).unwrap();
    let mut rev = 1;
    for chunk in 0..10 {
        let cmds: Vec<Command> = (chunk * 10_000..(chunk + 1) * 10_000)
            .map(|i| kv_put(format!("key/{i:08}").as_bytes(), format!("{i:0100}").as_bytes()))
            .collect();
        store.apply_batch(cmds.iter(), &mut rev, true).unwrap();
    }
    store.close();
    drop(store);
    let size = std::fs::metadata(&path).unwrap().len();
    for _ in 0..3 {
        let started = Instant::now();
        let store = Store::open(path.clone(), ShardId(0), 64 << 20, Log::Off).unwrap();
        println!("100k keys, {} KiB: Store::open took {:?}", size / 1024, started.elapsed());
        store.close();
    }
}
