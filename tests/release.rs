//! The release tarball: `scripts/release.sh` builds `--release` and packs
//! `shale-<version>-<target>.tar.gz` with exactly the binary, README, LICENSE, the archive/restore scripts and
//! the systemd unit; unpacked into a temp dir, its `bin/shale` serves, stores and stops gracefully.
//!
//! The first run in a fresh clone pays for a release build (a few minutes); later runs reuse it.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::wait_timeout;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Longest the release build plus packing may take (a cold build on two cores takes a few minutes).
const RELEASE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Longest the server may take to listen and be ready, or to exit after SIGTERM.
const SERVER_TIMEOUT: Duration = Duration::from_secs(30);

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("shale-release-test-").tempdir().expect("creating a temp dir")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// The host triple of the toolchain, as release.sh reads it.
fn host_triple() -> String {
    let out = Command::new("rustc").arg("-vV").output().expect("running rustc -vV");
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines().find_map(|l| l.strip_prefix("host: ")).expect("rustc -vV names the host").trim().to_string()
}

/// The target dir this test binary was built in (`<target>/debug/deps/release-<hash>` -> `<target>`), so
/// the release build lands next to it whatever CARGO_TARGET_DIR says.
fn target_dir() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_shale")); // <target>/debug/shale
    bin.parent().and_then(Path::parent).expect("the binary sits in <target>/<profile>/").to_path_buf()
}

/// Runs scripts/release.sh with DIST_DIR=`dist`; returns the path it printed.
fn release(dist: &Path) -> PathBuf {
    let log = dist.with_extension("log");
    let mut child = Command::new("bash")
        .arg(Path::new(ROOT).join("scripts/release.sh"))
        .env("DIST_DIR", dist)
        .env("CARGO_TARGET_DIR", target_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("running release.sh");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let status = wait_timeout(&mut child, RELEASE_TIMEOUT).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("release.sh still running after {RELEASE_TIMEOUT:?}")
    });
    let stdout = reader.join().unwrap();
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "release.sh failed ({status}):\n{stderr}");
    PathBuf::from(stdout.lines().last().unwrap_or_else(|| panic!("release.sh printed no path:\n{stderr}")))
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn release_tarball_holds_the_files_and_its_binary_serves() {
    let tmp = temp_dir();
    let dist = tmp.path().join("dist");
    let tarball = release(&dist);

    let name = format!("shale-{VERSION}-{}", host_triple());
    assert_eq!(tarball, dist.join(format!("{name}.tar.gz")));
    run_ok(Command::new("sha256sum").arg("-c").arg(format!("{name}.tar.gz.sha256")).current_dir(&dist));

    // Exactly these files, all under one top directory.
    let listing = run_ok(Command::new("tar").arg("-tzvf").arg(&tarball));
    let mut files = Vec::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (mode, owner, path) = (fields[0], fields[1], *fields.last().unwrap());
        assert_eq!(owner, "0/0", "entries are owned by root: {line}");
        assert!(path.starts_with(&format!("{name}/")), "{path} is under {name}/");
        if mode.starts_with('-') {
            let executable = mode.as_bytes()[3] == b'x';
            files.push((path.strip_prefix(&format!("{name}/")).unwrap().to_string(), executable));
        }
    }
    files.sort();
    let expected = [
        ("LICENSE", false),
        ("README.md", false),
        ("bin/shale", true),
        ("packaging/shale.service", false),
        ("scripts/archive.sh", true),
        ("scripts/restore.sh", true),
    ];
    let expected: Vec<(String, bool)> = expected.iter().map(|(p, x)| (p.to_string(), *x)).collect();
    assert_eq!(files, expected);

    // Unpacked anywhere, the binary runs on its own.
    let unpacked = tmp.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    run_ok(Command::new("tar").arg("-C").arg(&unpacked).arg("-xzf").arg(&tarball));
    let bin = unpacked.join(&name).join("bin/shale");
    let version = run_ok(Command::new(&bin).arg("--version"));
    assert!(version.contains(VERSION), "{version}");

    let data = tmp.path().join("data");
    let log = tmp.path().join("server.log");
    let mut child = Command::new(&bin)
        .args(["--port", "0", "--resp-port", "off", "--data-dir"])
        .arg(&data)
        .env_remove("PORT")
        .env_remove("HOST")
        .env_remove("AUTH_TOKEN")
        .env_remove("AUTH_READ_TOKEN")
        .env_remove("TLS_CERT")
        .env_remove("TLS_KEY")
        .env_remove("SHARD_LIMIT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("starting the unpacked bin/shale");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("LISTENING ") {
                let _ = tx.send(addr.trim().to_string());
            }
        }
    });
    let addr = rx.recv_timeout(SERVER_TIMEOUT).unwrap_or_else(|_| {
        let _ = child.kill();
        panic!("no LISTENING line; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default())
    });
    let base = format!("http://{addr}");
    let a = agent();
    let deadline = Instant::now() + SERVER_TIMEOUT;
    while a.get(format!("{base}/readyz")).call().map(|r| r.status().as_u16()).ok() != Some(200) {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{base}/readyz not 200 after {SERVER_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let put = a.put(format!("{base}/kv/release/check")).send("from the tarball").unwrap();
    assert_eq!(put.status().as_u16(), 201);
    let mut got = a.get(format!("{base}/kv/release/check")).call().unwrap();
    assert_eq!(got.status().as_u16(), 200);
    assert_eq!(got.body_mut().read_to_string().unwrap(), "from the tarball");

    let sent = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(sent.success());
    let status = wait_timeout(&mut child, SERVER_TIMEOUT).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("bin/shale did not exit within {SERVER_TIMEOUT:?} of SIGTERM")
    });
    assert_eq!(status.code(), Some(0), "log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
}
