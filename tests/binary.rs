//! The real `shale` binary: start-up validation (clear message, non-zero exit, data dir untouched), flag over
//! environment precedence, a changed shard count on an existing data dir (resharded, nothing lost), `shale serve`,
//! and the scheduling policy of its threads (`THREAD_SCHEDULING`).

mod common;

use std::path::Path;
use std::time::Duration;

use common::{client, shard_files, temp_dir, wait_ready, BinaryServer, Exited, Shale};
use reqwest::StatusCode;

const RUN_TIMEOUT: Duration = Duration::from_secs(20);

/// The numbers that appear in `text` as whole words.
fn numbers_in(text: &str) -> Vec<u64> {
    text.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect()
}

/// A failed start: non-zero exit, no `LISTENING` line, and nothing written to the data dir.
fn assert_refused(out: &Exited, dir: &Path) {
    assert!(!out.status.success(), "expected a failure, got {}; stderr:\n{}", out.status, out.stderr);
    assert!(out.status.code().is_some(), "it exits (no crash by signal): {}", out.status);
    assert!(!out.stdout.contains("LISTENING"), "it never listened: {}", out.stdout);
    assert!(!out.stderr.contains("panicked"), "a clear message, not a panic:\n{}", out.stderr);
    let entries: Vec<_> = std::fs::read_dir(dir).unwrap().collect();
    assert!(entries.is_empty(), "a refused start writes nothing to the data dir: {entries:?}");
}

#[test]
fn zero_shards_are_refused_from_env_and_flag() {
    let dir = temp_dir();
    let outs = [
        Shale::serve(dir.path()).env("SHARD_LIMIT", "0").run(RUN_TIMEOUT),
        Shale::serve(dir.path()).args(["--shards", "0"]).run(RUN_TIMEOUT),
    ];
    for out in outs {
        assert_refused(&out, dir.path());
        let err = out.stderr.to_lowercase();
        assert!(err.contains("shard"), "the message names the setting:\n{}", out.stderr);
        assert!(numbers_in(&err).contains(&0), "the message names the bad value:\n{}", out.stderr);
    }
}

#[test]
fn bogus_durability_is_refused() {
    let dir = temp_dir();
    for out in [
        Shale::serve(dir.path()).args(["--durability", "bogus"]).run(RUN_TIMEOUT),
        Shale::serve(dir.path()).env("DURABILITY", "bogus").run(RUN_TIMEOUT),
    ] {
        assert_refused(&out, dir.path());
        for word in ["durability", "bogus", "immediate", "eventual"] {
            assert!(out.stderr.to_lowercase().contains(word), "the message mentions {word}:\n{}", out.stderr);
        }
    }
}

#[test]
fn flags_win_over_environment() {
    // --port beats PORT: port 1 is privileged and never an ephemeral port.
    let dir = temp_dir();
    let other = temp_dir();
    let server = Shale::serve(dir.path())
        .env("PORT", "1")
        .env("DATA_DIR", other.path())
        .env("SHARD_LIMIT", "0") // invalid, but the flag below wins, so it is never used
        .args(["--shards", "3"])
        .start();
    assert_ne!(server.addr.port(), 1, "--port 0 wins over PORT=1");
    assert_ne!(server.addr.port(), 0);
    assert!(server.addr.ip().is_loopback());
    assert_eq!(shard_files(dir.path()).len(), 3, "--shards 3 wins over SHARD_LIMIT=0, --data-dir over DATA_DIR");
    assert_eq!(std::fs::read_dir(other.path()).unwrap().count(), 0, "DATA_DIR was ignored");
    let (status, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

#[test]
fn environment_is_used_without_flags() {
    let dir = temp_dir();
    // A port that was free a moment ago (the OS does not hand it out again at once).
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server =
        Shale::bare().env("PORT", port.to_string()).env("DATA_DIR", dir.path()).env("SHARD_LIMIT", "2").start();
    assert_eq!(server.addr.port(), port, "PORT is used when --port is absent");
    assert_eq!(shard_files(dir.path()).len(), 2, "DATA_DIR and SHARD_LIMIT are used when their flags are absent");
    let (status, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
}

/// Every key of `keys` reads back as `value of KEY`, and the listing holds exactly them.
async fn assert_serves(server: &BinaryServer, keys: &[String]) {
    let http = client();
    wait_ready(&server.base()).await;
    for k in keys {
        let res = http.get(server.url(&format!("/kv/{k}"))).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{k}");
        assert_eq!(res.text().await.unwrap(), format!("value of {k}"));
    }
    let body: serde_json::Value =
        http.get(server.url("/kv?prefix=m/&limit=10000")).send().await.unwrap().json().await.unwrap();
    let listed: Vec<&str> = body["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(listed, keys.iter().map(String::as_str).collect::<Vec<_>>());
}

/// A data dir created with 4 shards, started with 8 (flag), then 4 (env), then the default. A changed count is not
/// refused: the data dir is resharded at start-up (covered in depth by `tests/reshard.rs`). What this test pins
/// from the binary's side: each start serves every key, the files on disk follow the asked count, and the
/// manifest records it.
#[tokio::test]
async fn changed_shard_count_reshards_without_loss() {
    let dir = temp_dir();
    let http = client();
    let server = BinaryServer::start(dir.path(), &["--shards", "4"], &[]);
    wait_ready(&server.base()).await;
    let keys: Vec<String> = (0..40).map(|i| format!("m/{i:02}")).collect();
    for k in &keys {
        let res = http.put(server.url(&format!("/kv/{k}"))).body(format!("value of {k}")).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::CREATED);
    }
    let (status, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(shard_files(dir.path()).len(), 4);

    let manifest_shards = || {
        let m: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
        m["shards"].as_u64().unwrap()
    };
    let starts: [(Shale, usize); 3] = [
        (Shale::serve(dir.path()).args(["--shards", "8"]), 8),
        (Shale::serve(dir.path()).env("SHARD_LIMIT", "4"), 4),
        (Shale::serve(dir.path()), 4),
    ];
    for (shale, shards) in starts {
        let server = shale.start();
        assert_serves(&server, &keys).await;
        assert_eq!(shard_files(dir.path()).len(), shards, "shard files after starting with {shards}");
        assert_eq!(manifest_shards(), shards as u64);
        let (status, stderr) = server.terminate();
        assert_eq!(status.code(), Some(0), "{stderr}");
    }
}

#[tokio::test]
async fn serve_subcommand_works_like_bare_shale() {
    let dir = temp_dir();
    let http = client();
    let server = Shale::bare().args(["serve", "--port", "0", "--data-dir"]).args([dir.path()]).start();
    wait_ready(&server.base()).await;
    let res = http.put(server.url("/kv/sub")).body("command").send().await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = http.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), "ok\n");
    let (status, stderr) = server.terminate();
    assert_eq!(status.code(), Some(0), "{stderr}");

    // The same data dir through bare `shale`.
    let server = BinaryServer::start(dir.path(), &[], &[]);
    wait_ready(&server.base()).await;
    assert_eq!(http.get(server.url("/kv/sub")).send().await.unwrap().text().await.unwrap(), "command");
}

/// The scheduling policy of a thread: field 41 of its `/proc/.../stat` (the fields after the `(comm)` start at 3).
fn policy_in_stat(stat: &str) -> u32 {
    let after_comm = &stat[stat.rfind(')').expect("stat has a (comm)") + 1..];
    after_comm.split_whitespace().nth(41 - 3).and_then(|f| f.parse().ok()).expect("stat has a policy field")
}

/// Every thread of process `pid`: (name, `parse` of its `/proc/PID/task/TID/<file>`).
fn per_thread<T>(pid: u32, file: &str, parse: impl Fn(&Path, &str) -> T) -> Vec<(String, T)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let (Ok(name), Ok(text)) =
            (std::fs::read_to_string(task.join("comm")), std::fs::read_to_string(task.join(file)))
        else {
            continue; // the thread ended meanwhile
        };
        threads.push((name.trim().to_string(), parse(&task, &text)));
    }
    threads
}

/// Every thread of process `pid`: (name, scheduling policy).
fn thread_policies(pid: u32) -> Vec<(String, u32)> {
    per_thread(pid, "stat", |_, stat| policy_in_stat(stat))
}

/// Every thread of process `pid`: (name, time slice in ns, from the `se.slice` line of its `sched` file).
fn thread_slices(pid: u32) -> Vec<(String, u64)> {
    per_thread(pid, "sched", |task, sched| {
        sched
            .lines()
            .find_map(|l| l.strip_prefix("se.slice")?.split(':').nth(1)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no se.slice in {}: this kernel does not show time slices", task.display()))
    })
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn every_thread_runs_under_sched_batch_unless_told_to_inherit() {
    const SCHED_BATCH: u32 = 3;
    let own = policy_in_stat(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
    assert_ne!(own, SCHED_BATCH, "the test itself must not run under SCHED_BATCH, or `inherit` proves nothing");
    let dir = temp_dir();
    for (setting, want) in [(None, SCHED_BATCH), (Some("inherit"), own)] {
        let mut shale = Shale::serve(dir.path());
        if let Some(value) = setting {
            shale = shale.env("THREAD_SCHEDULING", value);
        }
        let server = shale.start();
        wait_ready(&server.base()).await;
        // A write, a read and a listing (which runs on an HTTP worker's blocking pool), so the threads that
        // serve them all exist.
        let http = client();
        assert!(http.put(server.url("/kv/policy")).body("v").send().await.unwrap().status().is_success());
        assert_eq!(http.get(server.url("/kv/policy")).send().await.unwrap().text().await.unwrap(), "v");
        assert!(http.get(server.url("/kv?prefix=pol")).send().await.unwrap().status().is_success());
        let threads = thread_policies(server.pid());
        for name in ["shard-0", "shard-3", "actix-rt", "tokio-rt-worker"] {
            assert!(threads.iter().any(|(n, _)| n.starts_with(name)), "a {name} thread among {threads:?}");
        }
        let wrong: Vec<_> = threads.iter().filter(|(_, p)| *p != want).collect();
        assert!(wrong.is_empty(), "THREAD_SCHEDULING={setting:?}: every thread has policy {want}, not {wrong:?}");
        // The HTTP workers ask for a short time slice, and the blocking-pool threads they start inherit it; no
        // other thread has it (none under `inherit`).
        for (name, slice) in thread_slices(server.pid()) {
            let short = u128::from(slice) == shale::sched::HTTP_WORKER_SLICE.as_nanos();
            let want_short = setting.is_none() && (name.starts_with("actix-rt") || name.starts_with("tokio-rt-worker"));
            assert_eq!(short, want_short, "THREAD_SCHEDULING={setting:?}: thread {name} has a slice of {slice} ns");
        }
        let (status, stderr) = server.terminate();
        assert_eq!(status.code(), Some(0), "{stderr}");
    }

    let empty = temp_dir();
    let out = Shale::serve(empty.path()).env("THREAD_SCHEDULING", "fast").run(RUN_TIMEOUT);
    assert_refused(&out, empty.path());
    for word in ["fast", "batch", "inherit"] {
        assert!(out.stderr.contains(word), "the message mentions {word}:\n{}", out.stderr);
    }
}
