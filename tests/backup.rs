//! Consistent online backup and restore: under a concurrent write load, a backup holds every write acknowledged
//! before it began, none sent after it answered, and no shard is ahead of another (each writer's numbered stream
//! is restored as a prefix). A damaged backup is refused.

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{client, temp_dir, TestServer};
use shale::Config;

const WRITERS: usize = 6;

/// Every key of the store, by paging through `GET /kv`.
async fn all_keys(base: &str) -> BTreeSet<String> {
    let c = client();
    let mut keys = BTreeSet::new();
    let mut after = String::new();
    loop {
        let url = format!("{base}/kv?limit=10000&after={}", urlencode(&after));
        let page: serde_json::Value = c.get(&url).send().await.unwrap().json().await.unwrap();
        for k in page["keys"].as_array().unwrap() {
            keys.insert(k.as_str().unwrap().to_string());
        }
        match page["next"].as_str() {
            Some(n) => after = n.to_string(),
            None => return keys,
        }
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'-' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// Writer `w` PUTs `w{w}-{i:06}` for i = 0, 1, 2, ... one at a time, recording how many were acknowledged.
async fn writer(base: String, w: usize, acked: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let c = client();
    let mut i = 0u64;
    while !stop.load(Ordering::Acquire) && i < 20_000 {
        let res = c.put(format!("{base}/kv/w{w}-{i:06}")).body(i.to_string()).send().await.unwrap();
        assert!(res.status().is_success(), "write {w}/{i}: {}", res.status());
        i += 1;
        acked.store(i, Ordering::Release);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_is_a_consistent_prefix_and_restores() {
    let dir = temp_dir();
    let backups = temp_dir();
    let out = backups.path().join("snap");
    let server = TestServer::start(Config::for_test(dir.path()));
    let base = server.base();

    let stop = Arc::new(AtomicBool::new(false));
    let acked: Vec<_> = (0..WRITERS).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let tasks: Vec<_> =
        (0..WRITERS).map(|w| tokio::spawn(writer(base.clone(), w, acked[w].clone(), stop.clone()))).collect();
    // Let the load build up, then back up in the middle of it.
    while acked.iter().map(|a| a.load(Ordering::Acquire)).sum::<u64>() < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before: Vec<u64> = acked.iter().map(|a| a.load(Ordering::Acquire)).collect();
    let res =
        client().post(server.url("/admin/backup")).json(&serde_json::json!({ "path": out })).send().await.unwrap();
    assert_eq!(res.status(), 200);
    // A write that had not been sent when the backup answered must not be in it: the next index each writer
    // will send is at most acked+1 (one request in flight).
    let sent_after: Vec<u64> = acked.iter().map(|a| a.load(Ordering::Acquire) + 1).collect();
    let report: serde_json::Value = res.json().await.unwrap();
    assert_eq!(report["shards"], 4);
    // Keep writing after the backup, then stop.
    while acked.iter().zip(&sent_after).any(|(a, s)| a.load(Ordering::Acquire) < s + 50) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Release);
    for t in tasks {
        t.await.unwrap();
    }
    server.stop();

    // Restore into a fresh dir and serve it.
    let restored = temp_dir();
    let target = restored.path().join("data");
    let m = shale::ops::backup::restore(&out, &target, false).expect("restore");
    assert_eq!(m.shards, 4);
    let original = shale::ops::manifest::read(dir.path()).unwrap().unwrap();
    assert_ne!(m.node_id, original.node_id, "a restored data dir gets a new node id");
    let second = TestServer::start(Config::for_test(&target));
    let keys = all_keys(&second.base()).await;
    for w in 0..WRITERS {
        let present: Vec<u64> =
            keys.iter().filter_map(|k| k.strip_prefix(&format!("w{w}-"))).map(|i| i.parse().unwrap()).collect();
        let n = present.len() as u64;
        assert_eq!(present, (0..n).collect::<Vec<_>>(), "writer {w}: restored set is not a prefix");
        assert!(n >= before[w], "writer {w}: {n} restored but {} were acknowledged before the backup", before[w]);
        assert!(n < sent_after[w], "writer {w}: {n} restored but only {} were sent before it answered", sent_after[w]);
    }
    // Values too, not just keys.
    let v = client().get(second.url("/kv/w0-000000")).send().await.unwrap();
    assert_eq!(v.text().await.unwrap(), "0");
    second.stop();

    // A non-empty target is refused without --force, accepted with it.
    let err = shale::ops::backup::restore(&out, &target, false).unwrap_err().to_string();
    assert!(err.contains("not empty") && err.contains("--force"), "{err}");
    shale::ops::backup::restore(&out, &target, true).expect("forced restore");
}

#[test]
fn a_damaged_backup_is_refused() {
    let dir = temp_dir();
    let backups = temp_dir();
    let out = backups.path().join("snap");
    let server = TestServer::start(Config::for_test(dir.path()));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        for i in 0..100 {
            client().put(server.url(&format!("/kv/k{i}"))).body("v").send().await.unwrap();
        }
        let res =
            client().post(server.url("/admin/backup")).json(&serde_json::json!({ "path": out })).send().await.unwrap();
        assert_eq!(res.status(), 200);
        // A second backup into the same (now non-empty) path is a 400, not an overwrite.
        let res =
            client().post(server.url("/admin/backup")).json(&serde_json::json!({ "path": out })).send().await.unwrap();
        assert_eq!(res.status(), 400);
    });
    server.stop();

    let file = out.join("shard-1.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&file, bytes).unwrap();
    let target = temp_dir();
    let err = shale::ops::backup::restore(&out, target.path(), false).unwrap_err().to_string();
    assert!(err.contains("shard-1.redb is damaged"), "{err}");
    assert!(std::fs::read_dir(target.path()).unwrap().next().is_none(), "nothing restored from a damaged backup");
}

#[test]
fn backup_rejects_bad_paths() {
    let dir = temp_dir();
    let server = TestServer::start(Config::for_test(dir.path()));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let c = client();
        let inside = dir.path().join("inside");
        for body in [
            serde_json::json!({"path": "relative/dir"}),
            serde_json::json!({"path": inside}),
            serde_json::json!({"nope": 1}),
        ] {
            let res = c.post(server.url("/admin/backup")).json(&body).send().await.unwrap();
            assert_eq!(res.status(), 400, "{body}");
            let err: serde_json::Value = res.json().await.unwrap();
            assert_eq!(err["error"], "bad_request");
        }
        let res = c.get(server.url("/admin/backup")).send().await.unwrap();
        assert_eq!(res.status(), 405);
    });
    server.stop();
}

/// The revision in an ETag is never handed out twice, also across a backup and restore: a backup taken before any
/// checkpoint (the log then holds the last revisions, not the file's meta table) still carries them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_never_hands_out_a_revision_again() {
    let (dir, backups, restored) = (temp_dir(), temp_dir(), temp_dir());
    let out = backups.path().join("snap");
    let etag = |res: &reqwest::Response| {
        let tag = res.headers()["etag"].to_str().unwrap().trim_matches('"').to_string();
        u64::from_str_radix(&tag, 16).unwrap()
    };
    let mut config = Config::for_test(dir.path());
    config.flush_interval_ms = 600_000; // no checkpoint before the backup
    let server = TestServer::start(config);
    let c = client();
    let mut last = 0;
    for i in 0..3 {
        let res = c.put(server.url("/kv/same")).body(format!("v{i}")).send().await.unwrap();
        assert!(res.status().is_success());
        last = etag(&res);
    }
    let res = c.post(server.url("/admin/backup")).json(&serde_json::json!({ "path": out })).send().await.unwrap();
    assert_eq!(res.status(), 200);
    server.stop();

    let target = restored.path().join("data");
    shale::ops::backup::restore(&out, &target, false).expect("restore");
    let second = TestServer::start(Config::for_test(&target));
    let res = c.get(second.url("/kv/same")).send().await.unwrap();
    assert_eq!((etag(&res), res.text().await.unwrap()), (last, "v2".to_string()));
    let res = c.put(second.url("/kv/same")).body("after").send().await.unwrap();
    assert!(res.status().is_success());
    assert!(etag(&res) > last, "revision {} handed out again after the restore (last was {last})", etag(&res));
    second.stop();
}
