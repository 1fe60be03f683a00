//! Disk full: the real binary on a 16 MiB tmpfs. Writes that do not fit answer 507 `insufficient_storage`,
//! nothing acknowledged is lost, reads keep working, and once space is freed writes succeed again without a
//! restart. A full disk is an answer to the client, never a crash or a lost write.
//!
//! Needs `mount -t tmpfs` (root, or CAP_SYS_ADMIN); without it the test prints why and passes as skipped.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{client, temp_dir, wait_ready, BinaryServer};

/// Size of the filesystem under test: the write-ahead log keeps a second copy of the values written since the
/// last checkpoint, and at least ten 256 KiB values must fit before the disk is full.
const FS_SIZE: &str = "16m";
/// A file placed on it before the server starts, deleted to free space (redb files never shrink by themselves).
const RESERVE_BYTES: usize = 3 << 20;
/// Value size of the filling PUTs.
const VALUE_BYTES: usize = 256 << 10;

/// A tmpfs mounted on a temp dir; unmounted (and the dir removed) on drop.
struct Tmpfs {
    dir: Option<tempfile::TempDir>,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size`, or says why it cannot.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = temp_dir();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs { dir: Some(dir) })
    }

    fn path(&self) -> &Path {
        self.dir.as_ref().expect("mounted").path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let umount = |lazy: bool| {
            let mut c = Command::new("umount");
            if lazy {
                c.arg("-l");
            }
            c.arg(dir.path()).status().is_ok_and(|s| s.success())
        };
        if !umount(false) && !umount(true) {
            eprintln!("warning: could not unmount {}", dir.path().display());
            std::mem::forget(dir); // removing the mount point would fail anyway
        }
    }
}

fn value(i: usize) -> Vec<u8> {
    let head = format!("value {i}:");
    head.bytes().chain((0..).map(|j: usize| b'a' + ((i * 7 + j) % 26) as u8)).take(VALUE_BYTES).collect()
}

/// GET with retries while the answer is 503 (a shard reopening its file after a failed write), at most 10 s.
/// Returns the final answer and how many 503s came first.
async fn get(http: &reqwest::Client, url: &str) -> (u16, Vec<u8>, u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut unavailable = 0;
    loop {
        let res = http.get(url).send().await.unwrap();
        let status = res.status().as_u16();
        let body = res.bytes().await.unwrap().to_vec();
        if status != 503 || Instant::now() > deadline {
            return (status, body, unavailable);
        }
        unavailable += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads every acknowledged key (from the file: the cache is too small for these values); returns the 503s seen.
async fn check_all(
    http: &reqwest::Client,
    server: &BinaryServer,
    acked: &BTreeMap<String, Vec<u8>>,
    when: &str,
) -> u32 {
    let mut unavailable = 0;
    for (k, v) in acked {
        let (status, body, n) = get(http, &server.url(&format!("/kv/{k}"))).await;
        unavailable += n;
        assert_eq!(status, 200, "{when}: acknowledged {k} is gone");
        assert!(body == v[..], "{when}: acknowledged {k} changed");
    }
    unavailable
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_answers_507_loses_nothing_and_recovers_when_space_is_freed() {
    let fs = match Tmpfs::mount(FS_SIZE) {
        Ok(fs) => fs,
        Err(why) => {
            println!("SKIPPED: {why} (the disk-full test needs root to mount a tmpfs)");
            return;
        }
    };
    let reserve: PathBuf = fs.path().join("reserve");
    std::fs::write(&reserve, vec![0x55u8; RESERVE_BYTES]).unwrap();
    let data = fs.path().join("data");
    // A cache smaller than one value: every read below goes to the files.
    let args = ["--shards", "2", "--cache-bytes", "65536"];
    let server = BinaryServer::start(&data, &args, &[]);
    wait_ready(&server.base()).await;
    let http = client();

    // Fill until writes fail; then a few more, which must fail the same way.
    let mut acked: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut refusals = Vec::new();
    let mut other = Vec::new();
    for i in 0..200 {
        let key = format!("big/{i:03}");
        let res = http.put(server.url(&format!("/kv/{key}"))).body(value(i)).send().await.unwrap();
        let status = res.status().as_u16();
        let ctype = res.headers().get("content-type").map(|v| v.to_str().unwrap().to_string());
        let body = res.bytes().await.unwrap();
        match status {
            201 | 204 => {
                acked.insert(key, value(i));
            }
            507 => {
                assert_eq!(ctype.as_deref(), Some("application/json"));
                let json: serde_json::Value = serde_json::from_slice(&body).expect("a JSON error body");
                assert_eq!(json["error"], "insufficient_storage", "{json}");
                refusals.push(key);
            }
            // The shard closes and reopens its file after a failed commit; meanwhile it answers 503.
            503 => other.push((key, status, String::from_utf8_lossy(&body).into_owned())),
            _ => panic!("PUT {key}: {status} {}", String::from_utf8_lossy(&body)),
        }
        if refusals.len() >= 5 {
            break;
        }
    }
    println!(
        "filled: {} acknowledged PUTs of {} KiB, {} answered 507, {} answered 503: {other:?}",
        acked.len(),
        VALUE_BYTES >> 10,
        refusals.len(),
        other.len()
    );
    assert!(refusals.len() >= 5, "the disk never filled up: {} PUTs acknowledged", acked.len());
    assert!(acked.len() >= 10, "too little fitted before the disk was full: {}", acked.len());

    // Reads and small writes while full: reads work; a small write is stored or refused with 507/503, never 500.
    let unavailable = check_all(&http, &server, &acked, "disk full").await;
    assert_eq!(http.get(server.url("/healthz")).send().await.unwrap().status(), 200);
    let (status, list, _) = get(&http, &server.url("/kv?prefix=big/&limit=1000")).await;
    assert_eq!(status, 200, "listing while full; stderr:\n{}", server.stderr());
    let list: serde_json::Value = serde_json::from_slice(&list).unwrap();
    let listed: Vec<&str> = list["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    let extra: Vec<_> = listed.iter().filter(|k| !acked.contains_key(**k)).collect();
    let mut extra_reads = Vec::new();
    for k in &extra {
        let r = http.get(server.url(&format!("/kv/{k}"))).send().await.unwrap();
        extra_reads.push((k.to_string(), r.status().as_u16()));
    }
    assert!(
        extra.is_empty(),
        "listed but never acknowledged: {extra_reads:?}; refused {refusals:?}; stderr:\n{}",
        server.stderr()
    );
    assert_eq!(listed.len(), acked.len());
    for i in 0..5 {
        let status = http.post(server.url(&format!("/counter/full{i}"))).body("1").send().await.unwrap().status();
        assert!([204, 503, 507].contains(&status.as_u16()), "counter while full: {status}");
    }
    for k in refusals.iter().chain(other.iter().map(|(k, ..)| k)) {
        let (status, ..) = get(&http, &server.url(&format!("/kv/{k}"))).await;
        assert_eq!(status, 404, "{k} was refused but is stored");
    }
    // Refused writes are checked against the free space before they reach redb, so the shards stay open.
    for _ in 0..3 {
        let unavailable_now = check_all(&http, &server, &acked, "disk full, after more refusals").await;
        let status = http.put(server.url("/kv/big/again")).body(value(999)).send().await.unwrap().status();
        assert_eq!(status, 507);
        assert_eq!(unavailable_now, 0, "reads were refused while the disk was full");
    }

    // Free space without a restart: writes succeed again (after at most one reopen of each shard).
    std::fs::remove_file(&reserve).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut recovered = 0;
    let mut i = 1000;
    while recovered < 4 {
        assert!(Instant::now() < deadline, "writes still fail {:?} after space was freed", Duration::from_secs(20));
        let key = format!("big/{i:04}");
        let res = http.put(server.url(&format!("/kv/{key}"))).body(value(i)).send().await.unwrap();
        match res.status().as_u16() {
            201 | 204 => {
                acked.insert(key, value(i));
                recovered += 1;
            }
            503 | 507 => tokio::time::sleep(Duration::from_millis(50)).await,
            s => panic!("PUT {key} after freeing space: {s} {}", res.text().await.unwrap()),
        }
        i += 1;
    }
    check_all(&http, &server, &acked, "space freed").await;
    println!("reads answered 503 {unavailable} times right after the first refusals (shards reopening)");

    // And it all survives a restart.
    let (status, stderr) = server.terminate();
    assert!(status.success(), "graceful stop failed: {status}\n{stderr}");
    let server = BinaryServer::start(&data, &args, &[]);
    wait_ready(&server.base()).await;
    check_all(&http, &server, &acked, "after a restart").await;
    println!("after freeing space: {recovered} more PUTs acknowledged; {} keys verified after a restart", acked.len());
    drop(server); // before the unmount
}
