//! Operations from the command line: `shale backup` against a running server, `shale restore` and `shale compact`
//! on stopped data dirs, and compaction of a mostly-free shard file at start-up. An operator's tools must refuse
//! rather than overwrite or restore damaged data.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{client, shard_files, temp_dir, BinaryServer, Shale};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn run(args: &[&str]) -> common::Exited {
    Shale::bare().args(args).run(Duration::from_secs(60))
}

fn put_many(server: &BinaryServer, n: usize, size: usize) {
    rt().block_on(async {
        let c = client();
        for i in 0..n {
            let res = c.put(server.url(&format!("/kv/key-{i:05}"))).body(vec![b'x'; size]).send().await.unwrap();
            assert!(res.status().is_success());
        }
    });
}

fn total_size(dir: &Path) -> u64 {
    shard_files(dir).iter().map(|f| std::fs::metadata(f).unwrap().len()).sum()
}

#[test]
fn backup_then_restore_from_the_command_line() {
    let dir = temp_dir();
    let backups = temp_dir();
    let out = backups.path().join("b1");
    let server = BinaryServer::start(dir.path(), &[], &[]);
    put_many(&server, 200, 16);
    let url = server.base();

    let done = run(&["backup", "--url", &url, "--out", out.to_str().unwrap()]);
    assert!(done.status.success(), "{}", done.stderr);
    let report: serde_json::Value = serde_json::from_str(done.stdout.trim()).unwrap();
    assert_eq!(report["entries"], 200);
    // Same target again: refused by the server, nothing overwritten.
    let again = run(&["backup", "--url", &url, "--out", out.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(again.stderr.contains("not an empty directory"), "{}", again.stderr);
    let (status, _) = server.terminate();
    assert!(status.success());

    let target = temp_dir();
    let data = target.path().join("data");
    let restored = run(&["restore", "--from", out.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
    assert!(restored.status.success(), "{}", restored.stderr);
    let refused = run(&["restore", "--from", out.to_str().unwrap(), "--data-dir", data.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2), "{}", refused.stderr);
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);
    let forced = run(&["restore", "--from", out.to_str().unwrap(), "--data-dir", data.to_str().unwrap(), "--force"]);
    assert!(forced.status.success(), "{}", forced.stderr);

    let second = BinaryServer::start(&data, &[], &[]);
    rt().block_on(async {
        common::wait_ready(&second.base()).await;
        let keys: serde_json::Value =
            client().get(second.url("/kv?limit=1000")).send().await.unwrap().json().await.unwrap();
        assert_eq!(keys["keys"].as_array().unwrap().len(), 200);
    });
    drop(second);

    // One flipped byte in the backup: restore refuses, naming the file.
    let file = out.join("shard-0.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 1;
    std::fs::write(&file, bytes).unwrap();
    let elsewhere = temp_dir();
    let bad = run(&["restore", "--from", out.to_str().unwrap(), "--data-dir", elsewhere.path().to_str().unwrap()]);
    assert!(!bad.status.success());
    assert!(bad.stderr.contains("shard-0.redb is damaged"), "{}", bad.stderr);
}

/// Writes 4 MiB, deletes 90% of it, and stops: the shard files are then mostly free space.
fn fragmented_data_dir(dir: &Path) {
    let server = BinaryServer::start(dir, &[], &[]);
    put_many(&server, 400, 10_000);
    rt().block_on(async {
        let c = client();
        for i in 0..400 {
            if i % 10 != 0 {
                assert_eq!(c.delete(server.url(&format!("/kv/key-{i:05}"))).send().await.unwrap().status(), 204);
            }
        }
    });
    let (status, _) = server.terminate();
    assert!(status.success());
}

fn assert_survivors(server: &BinaryServer) {
    rt().block_on(async {
        common::wait_ready(&server.base()).await;
        let keys: serde_json::Value =
            client().get(server.url("/kv?limit=1000")).send().await.unwrap().json().await.unwrap();
        assert_eq!(keys["keys"].as_array().unwrap().len(), 40);
        let v = client().get(server.url("/kv/key-00010")).send().await.unwrap().bytes().await.unwrap();
        assert_eq!(v.len(), 10_000);
    });
}

#[test]
fn compact_command_reclaims_space_and_keeps_data() {
    let dir = temp_dir();
    fragmented_data_dir(dir.path());
    let before = total_size(dir.path());
    let done = run(&["compact", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(done.status.success(), "{}", done.stderr);
    let after = total_size(dir.path());
    assert!(after < before / 2, "compaction left {after} of {before} bytes");
    assert!(done.stdout.contains("bytes reclaimed"), "{}", done.stdout);
    let server = BinaryServer::start(dir.path(), &[], &[]);
    assert_survivors(&server);
}

#[test]
fn a_mostly_free_shard_is_compacted_at_start_up() {
    let dir = temp_dir();
    fragmented_data_dir(dir.path());
    let before = total_size(dir.path());
    let server = BinaryServer::start(dir.path(), &[], &[]);
    assert_survivors(&server);
    assert!(server.stderr().contains("shard compacted"), "{}", server.stderr());
    let (status, _) = server.terminate();
    assert!(status.success());
    assert!(total_size(dir.path()) < before / 2);
}
