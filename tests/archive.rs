//! The archive scripts end to end with the real binary: `scripts/archive.sh` (tar.gz, or zip with `--zip` or
//! `SHALE_ARCHIVE_FORMAT=zip`) takes an online backup through a running server, or copies the closed files of a
//! stopped one (and refuses files a process holds open), and `scripts/restore.sh` restores the archive into a
//! fresh data dir that a new server then serves; a damaged archive is refused and the data dir left alone.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::wait_timeout;

const SHALE: &str = env!("CARGO_BIN_EXE_shale");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// Longest a server may take to print `LISTENING` and answer `/readyz` 200, or to exit after SIGTERM.
const SERVER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest one script run may take.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// Variables the binary or the scripts read; cleared so the caller's environment cannot leak in.
const ENV: &[&str] = &[
    "HOST",
    "PORT",
    "DATA_DIR",
    "SHARD_LIMIT",
    "BACKUP_DIR",
    "AUTH_TOKEN",
    "AUTH_READ_TOKEN",
    "TLS_CERT",
    "TLS_KEY",
    "SHALE_URL",
    "SHALE_CA",
    "ARCHIVE_DIR",
    "BACKUP_STAGING",
    "SHALE_ARCHIVE_FORMAT",
    "LOG_FORMAT",
];

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("shale-archive-test-").tempdir().expect("creating a temp dir")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// `(status, body)` of a request; `body` is sent when given (PUT).
fn http(method: &str, url: &str, body: Option<&str>) -> (u16, String) {
    let a = agent();
    let resp = match (method, body) {
        ("GET", None) => a.get(url).call(),
        ("PUT", Some(b)) => a.put(url).send(b),
        _ => panic!("unsupported request {method} {url}"),
    };
    let mut resp = resp.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

/// The `shale` binary serving a data dir; SIGKILLed on drop if still running.
struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Server {
    /// `shale --port 0 --data-dir DIR --shards 3`, once `/readyz` answers 200. Its log goes to `DIR.log`.
    fn start(dir: &Path) -> Server {
        let log = dir.with_extension("log");
        let mut cmd = Command::new(SHALE);
        for v in ENV {
            cmd.env_remove(v);
        }
        // RESP off: tests run in parallel and would all want port 6380.
        cmd.args(["--port", "0", "--shards", "3", "--data-dir"])
            .arg(dir)
            .env("HTTP_WORKERS", "2")
            .env("RESP_PORT", "off");
        cmd.stdin(Stdio::null()).stdout(Stdio::piped());
        cmd.stderr(std::fs::File::create(&log).expect("creating the server log"));
        let mut child = cmd.spawn().expect("spawning shale");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Drains stdout for the life of the child, so it never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("LISTENING ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = rx.recv_timeout(SERVER_TIMEOUT).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("shale printed no LISTENING line; log:\n{}", std::fs::read_to_string(&log).unwrap_or_default())
        });
        let server = Server { child, base: format!("http://{addr}"), log };
        let deadline = Instant::now() + SERVER_TIMEOUT;
        while agent().get(format!("{}/readyz", server.base)).call().map(|r| r.status().as_u16()).ok() != Some(200) {
            assert!(Instant::now() < deadline, "{}/readyz not 200 after {SERVER_TIMEOUT:?}", server.base);
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM; asserts a graceful exit (status 0).
    fn stop(mut self) {
        let sent = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status().unwrap();
        assert!(sent.success(), "kill -TERM failed");
        let status = wait_timeout(&mut self.child, SERVER_TIMEOUT).expect("shale exits after SIGTERM");
        assert_eq!(status.code(), Some(0), "log:\n{}", std::fs::read_to_string(&self.log).unwrap_or_default());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A URL where nothing listens (a port just bound and released).
fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

/// What a script printed, and how it exited.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The path the archive script printed as its last line (asserts success).
    fn archive(&self) -> PathBuf {
        assert!(self.status.success(), "the script failed ({}):\n{}", self.status, self.stderr);
        PathBuf::from(self.stdout.lines().last().expect("the script printed the archive path"))
    }
}

/// Runs `scripts/<script> ARGS` with `SHALE_BIN` set to the test binary and `envs`.
fn script(script: &str, args: &[&Path], envs: &[(&str, &Path)]) -> Run {
    let out_dir = temp_dir();
    let (out, err) = (out_dir.path().join("stdout"), out_dir.path().join("stderr"));
    let mut cmd = Command::new("bash");
    cmd.arg(Path::new(ROOT).join("scripts").join(script)).args(args);
    for v in ENV {
        cmd.env_remove(v);
    }
    cmd.env("SHALE_BIN", SHALE).envs(envs.iter().map(|(k, v)| (k, v.as_os_str())));
    cmd.stdin(Stdio::null());
    cmd.stdout(std::fs::File::create(&out).unwrap()).stderr(std::fs::File::create(&err).unwrap());
    let mut child = cmd.spawn().expect("running bash");
    let status = wait_timeout(&mut child, SCRIPT_TIMEOUT).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("{script} still running after {SCRIPT_TIMEOUT:?}: {}", std::fs::read_to_string(&err).unwrap())
    });
    Run { status, stdout: std::fs::read_to_string(out).unwrap(), stderr: std::fs::read_to_string(err).unwrap() }
}

fn tool_exists(name: &str) -> bool {
    Command::new("sh").arg("-c").arg(format!("command -v {name}")).stdout(Stdio::null()).status().unwrap().success()
}

/// The files of an archive (names below its top directory), as `tar -t` or `unzip -Z1` lists them.
fn archive_files(archive: &Path) -> Vec<String> {
    let out = if archive.extension().is_some_and(|e| e == "zip") {
        Command::new("unzip").arg("-Z1").arg(archive).output().unwrap()
    } else {
        Command::new("tar").arg("-tzf").arg(archive).output().unwrap()
    };
    assert!(out.status.success(), "cannot list {}", archive.display());
    let mut files: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| !l.ends_with('/'))
        .map(|l| l.split_once('/').map_or(l, |(_, rest)| rest).to_string())
        .collect();
    files.sort();
    files
}

fn assert_backup_layout(archive: &Path, ext: &str) {
    let name = archive.file_name().unwrap().to_str().unwrap();
    let stamp = name.strip_prefix("archive-").and_then(|n| n.strip_suffix(ext)).unwrap_or_else(|| panic!("{name}"));
    // archive-YYYYMMDDTHHMMSSZ.<ext>, possibly with a -N suffix when two were made in the same second.
    let stamp = stamp.split('-').next().unwrap();
    assert!(stamp.len() == 16 && stamp.as_bytes()[8] == b'T' && stamp.ends_with('Z'), "{name}");
    assert_eq!(
        archive_files(archive),
        ["SHA256SUMS", "manifest.json", "shard-0.redb", "shard-1.redb", "shard-2.redb"],
        "{name}"
    );
}

/// Writes `n` keys `key-<i>` = `value-<i>` (a spread over the three shards).
fn fill(server: &Server, n: usize) {
    for i in 0..n {
        let (status, _) = http("PUT", &server.url(&format!("/kv/key-{i}")), Some(&format!("value-{i}")));
        assert_eq!(status, 201);
    }
}

fn assert_filled(server: &Server, n: usize) {
    for i in 0..n {
        assert_eq!(http("GET", &server.url(&format!("/kv/key-{i}")), None), (200, format!("value-{i}")));
    }
}

#[test]
fn tar_archives_online_and_offline_restore_into_fresh_dirs() {
    let tmp = temp_dir();
    let (data, archives, staging) = (tmp.path().join("data"), tmp.path().join("archives"), tmp.path().join("staging"));
    std::fs::create_dir(&staging).unwrap();
    let server = Server::start(&data);
    fill(&server, 40);

    // Online: the server answers, so the archive is a backup taken through it.
    let base = PathBuf::from(&server.base);
    let online = script(
        "archive.sh",
        &[],
        &[("SHALE_URL", &base), ("DATA_DIR", &data), ("ARCHIVE_DIR", &archives), ("BACKUP_STAGING", &staging)],
    );
    let online_archive = online.archive();
    assert!(online.stderr.contains("online backup"), "{}", online.stderr);
    assert_eq!(online_archive.parent().unwrap(), archives);
    assert_backup_layout(&online_archive, ".tar.gz");
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0, "the server's backup dir was cleaned up");
    // Written after the backup: must not be in what it restores.
    assert_eq!(http("PUT", &server.url("/kv/after-backup"), Some("late")).0, 201);
    // A crash: the late write is in its shard's write-ahead log, and maybe nowhere else yet (the next checkpoint
    // comes after 8 MiB of log). The offline archive must still hold it.
    drop(server); // SIGKILL

    // Offline: nothing answers, the files are closed, so they are copied.
    let dead = PathBuf::from(dead_url());
    let offline = script("archive.sh", &[], &[("SHALE_URL", &dead), ("DATA_DIR", &data), ("ARCHIVE_DIR", &archives)]);
    let offline_archive = offline.archive();
    assert!(offline.stderr.contains("copying the closed files"), "{}", offline.stderr);
    assert_ne!(offline_archive, online_archive);
    assert_backup_layout(&offline_archive, ".tar.gz");

    // Restore the online one: everything written before the backup, nothing after.
    let restored = tmp.path().join("restored");
    let run = script("restore.sh", &[&online_archive, &restored], &[]);
    assert!(run.status.success(), "{}", run.stderr);
    let server = Server::start(&restored);
    assert_filled(&server, 40);
    assert_eq!(http("GET", &server.url("/kv/after-backup"), None).0, 404);
    server.stop();

    // A data dir that holds data is refused without --force, replaced with it.
    let run = script("restore.sh", &[&offline_archive, &restored], &[]);
    assert!(!run.status.success(), "restore over a non-empty data dir must need --force");
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    let run = script("restore.sh", &[&offline_archive, &restored, Path::new("--force")], &[]);
    assert!(run.status.success(), "{}", run.stderr);
    // DATA_DIR is the default target when none is given.
    let from_env = tmp.path().join("from-env");
    let run = script("restore.sh", &[&offline_archive], &[("DATA_DIR", &from_env)]);
    assert!(run.status.success(), "{}", run.stderr);
    for dir in [&restored, &from_env] {
        let server = Server::start(dir);
        assert_filled(&server, 40);
        assert_eq!(http("GET", &server.url("/kv/after-backup"), None), (200, "late".to_string()));
        server.stop();
    }
}

#[test]
fn offline_copy_refuses_files_a_process_holds_open() {
    if !tool_exists("fuser") {
        println!("skipped: fuser (psmisc) is not installed, so the script can only warn");
        return;
    }
    let tmp = temp_dir();
    let (data, archives) = (tmp.path().join("data"), tmp.path().join("archives"));
    let server = Server::start(&data);
    fill(&server, 3);
    // A SHALE_URL where nothing answers, while a server holds DATA_DIR: copying would not be safe.
    let dead = PathBuf::from(dead_url());
    let run = script("archive.sh", &[], &[("SHALE_URL", &dead), ("DATA_DIR", &data), ("ARCHIVE_DIR", &archives)]);
    assert!(!run.status.success(), "copying files held open must be refused:\n{}", run.stderr);
    assert!(run.stderr.contains("holds these files open"), "{}", run.stderr);
    let left: Vec<_> =
        std::fs::read_dir(&archives).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "no archive (or partial file) is left: {left:?}");
    server.stop();
}

#[test]
fn restore_refuses_a_damaged_archive_and_leaves_the_data_dir_alone() {
    let tmp = temp_dir();
    let (data, archives) = (tmp.path().join("data"), tmp.path().join("archives"));
    let server = Server::start(&data);
    fill(&server, 10);
    server.stop();
    let dead = PathBuf::from(dead_url());
    let archive =
        script("archive.sh", &[], &[("SHALE_URL", &dead), ("DATA_DIR", &data), ("ARCHIVE_DIR", &archives)]).archive();

    // Unpack, flip one byte of a shard file, pack again.
    let unpacked = tmp.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    assert!(Command::new("tar").arg("-C").arg(&unpacked).arg("-xzf").arg(&archive).status().unwrap().success());
    let top = std::fs::read_dir(&unpacked).unwrap().next().unwrap().unwrap().path();
    let shard = top.join("shard-1.redb");
    let mut bytes = std::fs::read(&shard).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&shard, bytes).unwrap();
    let damaged = tmp.path().join("damaged.tar.gz");
    let top_name = top.file_name().unwrap();
    assert!(Command::new("tar")
        .arg("-C")
        .arg(&unpacked)
        .arg("-czf")
        .arg(&damaged)
        .arg(top_name)
        .status()
        .unwrap()
        .success());

    let target = tmp.path().join("target");
    let run = script("restore.sh", &[&damaged, &target], &[]);
    assert!(!run.status.success(), "a damaged archive must be refused");
    assert!(run.stderr.contains("shard-1.redb") && run.stderr.contains("damaged"), "{}", run.stderr);
    let left: Vec<_> = std::fs::read_dir(&target).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    assert!(left.is_empty(), "nothing was written to the data dir: {left:?}");
}

#[test]
fn zip_archive_round_trip() {
    if !tool_exists("zip") || !tool_exists("unzip") {
        println!("skipped: zip and unzip are not both installed (apt-get install zip unzip)");
        return;
    }
    let tmp = temp_dir();
    let (data, archives, staging) = (tmp.path().join("data"), tmp.path().join("archives"), tmp.path().join("staging"));
    std::fs::create_dir(&staging).unwrap();
    let server = Server::start(&data);
    fill(&server, 20);
    let base = PathBuf::from(&server.base);
    let run = script(
        "archive.sh",
        &[Path::new("--zip")],
        &[("SHALE_URL", &base), ("DATA_DIR", &data), ("ARCHIVE_DIR", &archives), ("BACKUP_STAGING", &staging)],
    );
    let online = run.archive();
    assert!(run.stderr.contains("online backup"), "{}", run.stderr);
    assert_backup_layout(&online, ".zip");
    server.stop();

    let dead = PathBuf::from(dead_url());
    // The format can also come from the environment.
    let offline = script(
        "archive.sh",
        &[],
        &[
            ("SHALE_URL", &dead),
            ("DATA_DIR", &data),
            ("ARCHIVE_DIR", &archives),
            ("SHALE_ARCHIVE_FORMAT", Path::new("zip")),
        ],
    )
    .archive();
    assert_backup_layout(&offline, ".zip");

    for archive in [&online, &offline] {
        let restored = tmp.path().join(format!("restored-{}", archive.file_stem().unwrap().to_string_lossy()));
        let run = script("restore.sh", &[archive, &restored], &[]);
        assert!(run.status.success(), "{}", run.stderr);
        let server = Server::start(&restored);
        assert_filled(&server, 20);
        server.stop();
    }
}
