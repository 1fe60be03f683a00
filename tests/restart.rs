//! Durability across restarts of the real binary: `kill -9` (immediate durability keeps every acknowledged
//! write), SIGTERM (graceful: exit 0, nothing lost), and `--durability eventual` (a graceful stop flushes, a
//! `kill -9` loses nothing, a power loss at most the flush window). After a restart, ETags are unchanged and new
//! writes never reuse one.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{client, temp_dir, wait_ready, BinaryServer};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use reqwest::{Client, StatusCode};

const SHARDS: u32 = 4;

/// What a key must hold: value, content type, ETag.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    value: Vec<u8>,
    content_type: String,
    etag: String,
}

fn enc(key: &str) -> String {
    utf8_percent_encode(key, NON_ALPHANUMERIC).to_string()
}

fn shard_of(key: &str) -> u32 {
    shale::placement::shard_for(key.as_bytes(), SHARDS).0
}

/// A value that differs per key and round, with binary bytes and varied lengths (some empty).
fn value_for(key: &str, round: u32) -> Vec<u8> {
    let seed = key.bytes().fold(round.wrapping_mul(2_654_435_761), |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
    let len = (seed % 2000) as usize;
    let mut v = format!("{key}@{round}:").into_bytes();
    v.extend((0..len).map(|i| (seed as usize).wrapping_add(i * 7) as u8));
    v
}

fn content_type_for(i: usize) -> Option<&'static str> {
    [Some("text/plain; charset=utf-8"), Some("application/json"), None, Some("image/png")][i % 4]
}

/// PUT; returns (status, ETag) or panics on a transport error.
async fn put(http: &Client, base: &str, key: &str, value: Vec<u8>, ct: Option<&str>) -> (StatusCode, String) {
    let mut req = http.put(format!("{base}/kv/{}", enc(key))).body(value);
    if let Some(ct) = ct {
        req = req.header("content-type", ct);
    }
    let res = req.send().await.unwrap_or_else(|e| panic!("PUT {key}: {e}"));
    let etag = res.headers().get("etag").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
    (res.status(), etag)
}

/// GET; returns None on 404, the stored record on 200, panics otherwise.
async fn get(http: &Client, base: &str, key: &str) -> Option<Stored> {
    let res = http.get(format!("{base}/kv/{}", enc(key))).send().await.unwrap_or_else(|e| panic!("GET {key}: {e}"));
    match res.status() {
        StatusCode::NOT_FOUND => None,
        StatusCode::OK => {
            let h = |n: &str| res.headers().get(n).unwrap_or_else(|| panic!("no {n}")).to_str().unwrap().to_string();
            let (content_type, etag) = (h("content-type"), h("etag"));
            Some(Stored { value: res.bytes().await.unwrap().to_vec(), content_type, etag })
        }
        s => panic!("GET {key}: unexpected status {s}"),
    }
}

/// All keys with `prefix`, following `next` to the end.
async fn list_all(http: &Client, base: &str, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut after = String::new();
    for _ in 0..1000 {
        let url = format!("{base}/kv?prefix={}&after={}&limit=100", enc(prefix), enc(&after));
        let body: serde_json::Value = http.get(url).send().await.unwrap().json().await.unwrap();
        keys.extend(body["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().to_string()));
        match body["next"].as_str() {
            Some(n) => after = n.to_string(),
            None => return keys,
        }
    }
    panic!("listing does not end");
}

/// The expected state of a data set, plus every ETag each shard ever handed out to us.
#[derive(Default)]
struct Model {
    keys: BTreeMap<String, Option<Stored>>,
    etags: HashMap<u32, HashSet<String>>,
}

impl Model {
    fn record(&mut self, key: &str, stored: Option<Stored>) {
        if let Some(s) = &stored {
            self.etags.entry(shard_of(key)).or_default().insert(s.etag.clone());
        }
        self.keys.insert(key.to_string(), stored);
    }
}

/// Writes `keys` (round `round`) with 8 concurrent clients; every acknowledged write goes into the model.
async fn write_round(http: &Client, base: &str, keys: &[String], round: u32, model: &mut Model) {
    let mut tasks = Vec::new();
    for (t, chunk) in keys.chunks(keys.len().div_ceil(8).max(1)).enumerate() {
        let (http, base, chunk) = (http.clone(), base.to_string(), chunk.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for (j, key) in chunk.into_iter().enumerate() {
                let ct = content_type_for(t + j + round as usize);
                let value = value_for(&key, round);
                let (status, etag) = put(&http, &base, &key, value.clone(), ct).await;
                assert!(status == StatusCode::CREATED || status == StatusCode::NO_CONTENT, "PUT {key}: {status}");
                let content_type = ct.unwrap_or("application/octet-stream").to_string();
                acked.push((key, Stored { value, content_type, etag }));
            }
            acked
        }));
    }
    for t in tasks {
        for (key, stored) in t.await.unwrap() {
            model.record(&key, Some(stored));
        }
    }
}

/// Deletes `keys` one by one (each must exist) and records it.
async fn delete_all(http: &Client, base: &str, keys: &[String], model: &mut Model) {
    for key in keys {
        let res = http.delete(format!("{base}/kv/{}", enc(key))).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::NO_CONTENT, "DELETE {key}");
        model.record(key, None);
    }
}

/// Every key of the model holds exactly what the model says (or is absent), and the listing agrees.
async fn verify(http: &Client, base: &str, model: &Model, prefix: &str) {
    let mut present = Vec::new();
    for (key, want) in model.keys.iter().filter(|(k, _)| k.starts_with(prefix)) {
        let got = get(http, base, key).await;
        assert_eq!(got.as_ref(), want.as_ref(), "key {key} after restart");
        if want.is_some() {
            present.push(key.clone());
        }
    }
    assert_eq!(list_all(http, base, prefix).await, present, "listing of {prefix:?} after restart");
}

fn start(dir: &Path, args: &[&str]) -> BinaryServer {
    BinaryServer::start(dir, args, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_keeps_every_acknowledged_write() {
    let dir = temp_dir();
    let http = client();
    let server = start(dir.path(), &[]);
    let base = server.base();
    wait_ready(&base).await;

    let mut model = Model::default();
    let keys: Vec<String> = (0..240).map(|i| format!("r/{i:04}")).collect();
    let shards: HashSet<u32> = keys.iter().map(|k| shard_of(k)).collect();
    assert_eq!(shards.len(), SHARDS as usize, "the keys cover every shard");
    write_round(&http, &base, &keys, 0, &mut model).await;
    // Overwrite a third (new value, new content type) and delete a fifth.
    let again: Vec<String> = keys.iter().step_by(3).cloned().collect();
    write_round(&http, &base, &again, 1, &mut model).await;
    let doomed: Vec<String> = keys.iter().skip(1).step_by(5).cloned().collect();
    delete_all(&http, &base, &doomed, &mut model).await;
    // Sanity before the crash: the model matches the live server.
    verify(&http, &base, &model, "r/").await;

    // A writer keeps going while the server is killed: every write it saw acknowledged must survive.
    let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let writer = {
        let (http, base, acked) = (http.clone(), base.clone(), acked.clone());
        tokio::spawn(async move {
            for n in 0..100_000u32 {
                let key = format!("inflight/{n:06}");
                let req = http.put(format!("{base}/kv/{}", enc(&key))).body(key.clone().into_bytes());
                match req.send().await {
                    Ok(res) if res.status() == StatusCode::CREATED => {
                        let etag = res.headers()["etag"].to_str().unwrap().to_string();
                        acked.lock().unwrap().push((key, etag));
                    }
                    Ok(res) => panic!("PUT {key}: {}", res.status()),
                    Err(_) => return n, // the server is gone
                }
            }
            panic!("the writer was never cut off");
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked.lock().unwrap().len() < 30 {
        assert!(Instant::now() < deadline, "the in-flight writer made no progress");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    server.kill9();
    let cut_at = writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 30 && cut_at as usize >= acked.len());

    let server = start(dir.path(), &[]);
    let base = server.base();
    wait_ready(&base).await; // /readyz becomes 200 after the crash recovery

    verify(&http, &base, &model, "r/").await;
    for (key, etag) in &acked {
        let got = get(&http, &base, key).await.unwrap_or_else(|| panic!("acknowledged {key} lost by kill -9"));
        assert_eq!((got.value.as_slice(), &got.etag), (key.as_bytes(), etag), "{key}");
    }
    // Beyond the acknowledged ones, only the one request in flight at the kill may have landed.
    let inflight = list_all(&http, &base, "inflight/").await;
    let acked_keys: Vec<String> = acked.iter().map(|(k, _)| k.clone()).collect();
    assert!(inflight.starts_with(&acked_keys) && inflight.len() <= acked_keys.len() + 1, "{inflight:?}");
    for key in &inflight {
        let got = get(&http, &base, key).await.unwrap();
        assert_eq!(got.value, key.as_bytes(), "{key} holds what was written");
        model.record(key, Some(got));
    }

    // New writes after the restart get ETags never handed out before in their shard.
    let fresh: Vec<String> = (0..40).map(|i| format!("new/{i:03}")).collect();
    let retouched: Vec<String> = keys.iter().take(40).cloned().collect();
    for key in fresh.iter().chain(&retouched) {
        let (status, etag) = put(&http, &base, key, b"after restart".to_vec(), None).await;
        assert!(status.is_success(), "PUT {key}: {status}");
        let seen = model.etags.entry(shard_of(key)).or_default();
        assert!(seen.insert(etag.clone()), "ETag {etag} of {key} was already handed out in shard {}", shard_of(key));
    }
    drop(server);
}

#[tokio::test]
async fn sigterm_exits_0_and_keeps_everything() {
    let dir = temp_dir();
    let http = client();
    let server = start(dir.path(), &[]);
    let base = server.base();
    wait_ready(&base).await;
    let mut model = Model::default();
    let keys: Vec<String> = (0..80).map(|i| format!("t/{i:03}")).collect();
    write_round(&http, &base, &keys, 0, &mut model).await;
    let doomed: Vec<String> = keys.iter().step_by(4).cloned().collect();
    delete_all(&http, &base, &doomed, &mut model).await;

    let (status, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "graceful SIGTERM exits 0; stderr:\n{stderr}");

    let server = start(dir.path(), &[]);
    wait_ready(&server.base()).await;
    verify(&http, &server.base(), &model, "t/").await;
    let (status, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[tokio::test]
async fn eventual_durability_flushes_on_graceful_stop() {
    // A flush interval of an hour: nothing is fsynced by the timer during this test, only by the shutdown.
    graceful_stop_under_eventual("3600000", Duration::ZERO).await;
    // The logs fdatasynced by the timer before the stop: the stop still checkpoints them into the shard files.
    graceful_stop_under_eventual("100", Duration::from_millis(400)).await;
}

async fn graceful_stop_under_eventual(flush_interval_ms: &str, idle_before_stop: Duration) {
    let dir = temp_dir();
    let http = client();
    let server = start(dir.path(), &["--durability", "eventual", "--flush-interval-ms", flush_interval_ms]);
    let base = server.base();
    wait_ready(&base).await;
    let mut model = Model::default();
    let keys: Vec<String> = (0..120).map(|i| format!("e/{i:03}")).collect();
    write_round(&http, &base, &keys, 0, &mut model).await;
    let again: Vec<String> = keys.iter().step_by(2).cloned().collect();
    write_round(&http, &base, &again, 1, &mut model).await;
    let doomed: Vec<String> = keys.iter().skip(1).step_by(6).cloned().collect();
    delete_all(&http, &base, &doomed, &mut model).await;
    tokio::time::sleep(idle_before_stop).await;

    let (status, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "graceful SIGTERM exits 0; stderr:\n{stderr}");

    let server = start(dir.path(), &[]);
    wait_ready(&server.base()).await;
    verify(&http, &server.base(), &model, "e/").await;
    let stderr = server.stderr();
    assert!(!stderr.contains("replayed the log"), "a clean stop leaves nothing to replay:\n{stderr}");
}

/// Where the frames of each shard log (`*.wal`) of a data dir end: the log grows by zeros written ahead of its
/// frames, and in its first round (no checkpoint yet) the first all-zero frame header is where they stop.
fn log_ends(dir: &Path) -> Vec<(std::path::PathBuf, usize)> {
    let logs = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path());
    let end = |data: &[u8]| {
        let mut at = 0;
        // A frame: [checksum u64][payload length u32][epoch u64][seq u64][payload].
        while data.len() >= at + 28 && data[at..at + 28].iter().any(|&b| b != 0) {
            at += 28 + u32::from_le_bytes(data[at + 8..at + 12].try_into().unwrap()) as usize;
        }
        at
    };
    logs.filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .map(|p| (p.clone(), end(&std::fs::read(&p).unwrap())))
        .collect()
}

/// What a power loss leaves of a data dir under `eventual`, copied to `to`: the shard files as they are (redb
/// shows no non-durable commit after a crash), and each log with the bytes its last fdatasync covered (`synced`,
/// where its frames ended then) intact, while of the frames written after it the first never reached the disk (zeros) and
/// the others did: the page cache is written out in any order.
fn power_loss_image(from: &Path, synced: &[(std::path::PathBuf, usize)], to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
    for (log, cut) in synced {
        let copy = to.join(log.file_name().unwrap());
        let mut data = std::fs::read(&copy).unwrap();
        if data.len() > cut + 12 {
            // A frame: [checksum u64][payload length u32][epoch u64][seq u64][payload].
            let len = u32::from_le_bytes(data[cut + 8..cut + 12].try_into().unwrap()) as usize;
            let end = (cut + 28 + len).min(data.len());
            data[*cut..end].fill(0);
        }
        std::fs::write(&copy, &data).unwrap();
    }
}

/// Each shard's value of a `shale_shard_*` counter.
async fn shard_counter(http: &Client, base: &str, name: &str) -> Vec<u64> {
    let text = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    let lines = text.lines().filter(|l| l.starts_with(&format!("{name}{{")));
    lines.map(|l| l.rsplit(' ').next().unwrap().parse().unwrap()).collect()
}

/// `eventual` acknowledges a write once its log frame is written, without an fsync: a `kill -9` loses nothing
/// (the kernel still writes the frame out). Each shard fdatasyncs its log a flush interval after a write, and
/// no more than that is lost to a power loss, which never corrupts anything.
#[tokio::test]
async fn eventual_durability_survives_kill9_and_a_power_loss_loses_at_most_the_flush_window() {
    let (dir, power_lost) = (temp_dir(), temp_dir());
    let http = client();
    let server = start(dir.path(), &["--durability", "eventual", "--flush-interval-ms", "2000"]);
    let base = server.base();
    wait_ready(&base).await;
    let mut model = Model::default();
    let keys: Vec<String> = (0..60).map(|i| format!("w/{i:03}")).collect();
    write_round(&http, &base, &keys, 0, &mut model).await;
    let doomed: Vec<String> = keys.iter().step_by(7).cloned().collect();
    delete_all(&http, &base, &doomed, &mut model).await;
    // The contract is about time: a flush interval after a write, an idle shard fdatasyncs its log. That, not a
    // checkpoint of the shard file (every 8 MiB of log), is the durability point.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // An fdatasync of the log per shard and flush interval (this test took one or two of them), no checkpoint;
    // a batch's frame is never fsynced by itself.
    let fsyncs = shard_counter(&http, &base, "shale_shard_fsyncs_total").await;
    assert!(fsyncs.len() == SHARDS as usize && fsyncs.iter().all(|&n| (1..=3).contains(&n)), "fsyncs {fsyncs:?}");
    assert_eq!(shard_counter(&http, &base, "shale_shard_checkpoints_total").await, vec![0; SHARDS as usize]);
    let synced = log_ends(dir.path());
    // Written within the next interval: only in the page cache.
    let late: Vec<String> = (0..40).map(|i| format!("x/{i:03}")).collect();
    write_round(&http, &base, &late, 0, &mut model).await;
    server.kill9();
    power_loss_image(dir.path(), &synced, power_lost.path());

    // The process crashed, the machine did not: every acknowledged write is there.
    let server = start(dir.path(), &[]);
    wait_ready(&server.base()).await;
    verify(&http, &server.base(), &model, "").await;
    drop(server);

    // The power loss: everything the logs' fdatasync covered is there; the late writes were not covered, and
    // the frames that followed the one lost are dropped (not replayed over the gap, not refused as damage).
    let server = start(power_lost.path(), &[]);
    let base = server.base();
    wait_ready(&base).await;
    verify(&http, &base, &model, "w/").await;
    for key in &late {
        assert_eq!(get(&http, &base, key).await, None, "{key} came back from beyond a lost frame");
    }
    // The store still takes writes.
    let (status, _) = put(&http, &base, "w/after", b"ok".to_vec(), None).await;
    assert_eq!(status, StatusCode::CREATED);
}

/// Under `immediate`, a write is made durable by its shard's write-ahead log; redb commits it without an fsync and
/// becomes durable itself only at checkpoints. With checkpoints an hour apart, a `kill -9` leaves the acknowledged
/// writes in the logs only: the next start must replay them (values, content types, ETags, deletes, counters),
/// twice in a row, and new ETags must never repeat old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_between_checkpoints_replays_the_log() {
    let dir = temp_dir();
    let http = client();
    let mut model = Model::default();
    let mut hits = 0i64;
    for round in 0..3u32 {
        let server = start(dir.path(), &["--flush-interval-ms", "3600000"]);
        let base = server.base();
        wait_ready(&base).await;
        verify(&http, &base, &model, "log/").await;
        let counted: i64 =
            http.get(format!("{base}/counter/hits/value")).send().await.unwrap().text().await.unwrap().parse().unwrap();
        assert_eq!(counted, hits, "counter after restart {round}");
        if round > 0 {
            assert!(
                server.stderr().contains("replayed the log"),
                "round {round}: no replay at start:\n{}",
                server.stderr()
            );
        }
        if round == 2 {
            break;
        }
        let keys: Vec<String> = (0..80).map(|i| format!("log/{round}/{i:03}")).collect();
        let etags_before: usize = model.etags.values().map(HashSet::len).sum();
        write_round(&http, &base, &keys, round, &mut model).await;
        let again: Vec<String> = keys.iter().step_by(4).cloned().collect();
        write_round(&http, &base, &again, round + 10, &mut model).await;
        let etags_after: usize = model.etags.values().map(HashSet::len).sum();
        assert_eq!(etags_after - etags_before, keys.len() + again.len(), "an ETag was handed out twice in a shard");
        let doomed: Vec<String> =
            model.keys.iter().filter(|(k, v)| k.ends_with('7') && v.is_some()).map(|(k, _)| k.clone()).collect();
        delete_all(&http, &base, &doomed, &mut model).await;
        for delta in [5, -2, 40] {
            let res = http.post(format!("{base}/counter/hits")).body(delta.to_string()).send().await.unwrap();
            assert_eq!(res.status(), StatusCode::NO_CONTENT);
            hits += delta;
        }
        verify(&http, &base, &model, "log/").await;
        let logs: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        assert!(logs > 0, "the writes of round {round} are in the logs");
        server.kill9();
    }
}

/// A start with another `SHARD_LIMIT` after a `kill -9` under `immediate`: the acknowledged writes still in the
/// logs are replayed into the old files before they are copied into the new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_then_resharding_keeps_what_only_the_logs_held() {
    let dir = temp_dir();
    let http = client();
    let mut model = Model::default();
    let server = start(dir.path(), &["--flush-interval-ms", "3600000"]);
    let base = server.base();
    wait_ready(&base).await;
    let keys: Vec<String> = (0..120).map(|i| format!("move/{i:03}")).collect();
    write_round(&http, &base, &keys, 0, &mut model).await;
    delete_all(&http, &base, &keys[..10], &mut model).await;
    server.kill9();

    let server = start(dir.path(), &["--shards", "3"]);
    let base = server.base();
    wait_ready(&base).await;
    assert!(server.stderr().contains("replayed the log"), "{}", server.stderr());
    verify(&http, &base, &model, "move/").await;
}
