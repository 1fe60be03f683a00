//! Helpers shared by the black-box tests: an in-process server on its own thread ([`TestServer`]), the real
//! binary as a child process ([`BinaryServer`], [`Shale`]), and HTTP polling ([`wait_ready`]).
//!
//! Every wait here is bounded in time; every server is stopped (or killed) on drop.
#![allow(dead_code)] // each test file uses a different part of this module

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use shale::Config;

/// How long a server may take to bind and become ready before a test gives up.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful stop may take before a test gives up.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A fresh temporary data dir, removed on drop.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("shale-test-").tempdir().expect("creating a temp dir")
}

/// An HTTP client for tests: no proxy, short timeouts.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(30)).build().expect("building the HTTP client")
}

/// Polls `GET {base}/readyz` until it answers 200, for at most [`START_TIMEOUT`]. Panics otherwise.
pub async fn wait_ready(base: &str) {
    let client = client();
    let url = format!("{base}/readyz");
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        match client.get(&url).send().await {
            Ok(res) if res.status() == 200 => return,
            Ok(res) => last = format!("status {}", res.status()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{url} not ready after {START_TIMEOUT:?} (last answer: {last})");
}

// ---- in-process server ----

/// shale started in-process by `shale::server::start`, on its own thread with its own actix system.
pub struct TestServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// The RESP listener's address (when the config turned it on, e.g. `RespPort::Any`).
    pub resp_addr: Option<SocketAddr>,
    /// The server's node (in-process inspection and fault injection); dropped before the server stops,
    /// because `stop` waits for the last node reference: keep no clone of it.
    node: Option<Arc<shale::node::Node>>,
    stop_tx: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl TestServer {
    /// Starts a server with `config` and waits until it is ready (every shard warm).
    pub fn start(config: Config) -> TestServer {
        Self::try_start(config, true).unwrap_or_else(|e| panic!("server did not start: {e}"))
    }

    /// Starts a server and returns once it is bound, without waiting for readiness.
    pub fn start_unready(config: Config) -> TestServer {
        Self::try_start(config, false).unwrap_or_else(|e| panic!("server did not start: {e}"))
    }

    /// Starts a server; `Err` carries the start-up error's message.
    pub fn try_start(config: Config, wait_ready: bool) -> Result<TestServer, String> {
        type Started = (SocketAddr, Option<SocketAddr>, Arc<shale::node::Node>);
        let (addr_tx, addr_rx) = mpsc::channel::<Result<Started, String>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("test-server".into())
            .spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let server = match shale::server::start(config).await {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = addr_tx.send(Err(e.to_string()));
                            return;
                        }
                    };
                    if wait_ready && !server.wait_ready(START_TIMEOUT).await {
                        let _ = addr_tx.send(Err(format!("not ready after {START_TIMEOUT:?}")));
                        server.stop().await;
                        return;
                    }
                    let _ = addr_tx.send(Ok((server.addr(), server.resp_addr(), server.node().clone())));
                    // Resolves on `stop()` or when the TestServer is dropped (the sender goes away).
                    let _ = stop_rx.await;
                    server.stop().await;
                })
            })
            .expect("spawning the server thread");
        let (addr, resp_addr, node) = match addr_rx.recv_timeout(START_TIMEOUT) {
            Ok(Ok(started)) => started,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(e) => return Err(format!("no address from the server thread: {e}")),
        };
        Ok(TestServer { addr, resp_addr, node: Some(node), stop_tx: Some(stop_tx), thread: Some(thread) })
    }

    /// `http://addr` followed by `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The base URL, `http://addr`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The running server's node: its shards, their stores (fault injection) and the cache.
    pub fn node(&self) -> &Arc<shale::node::Node> {
        self.node.as_ref().expect("the node is kept until the server stops")
    }

    /// Graceful stop: finish in-flight requests, commit, close every shard; returns once the thread has ended.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.node = None;
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let started = Instant::now();
            let joined = thread.join();
            // Not an assert in Drop: a second panic while unwinding would abort the test binary.
            if started.elapsed() > STOP_TIMEOUT {
                eprintln!("warning: graceful stop took {:?}", started.elapsed());
            }
            if joined.is_err() && !std::thread::panicking() {
                panic!("the server thread panicked");
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

// ---- the real binary ----

/// Environment variables the binary reads; cleared for every child so the caller's environment cannot leak in.
const SHALE_ENV: &[&str] = &[
    "THREAD_SCHEDULING",
    "HOST",
    "PORT",
    "DATA_DIR",
    "SHARD_LIMIT",
    "CACHE_BYTES",
    "DURABILITY",
    "MAX_VALUE_BYTES",
    "MAX_KEY_BYTES",
    "FLUSH_INTERVAL_MS",
    "AUTH_TOKEN",
    "AUTH_READ_TOKEN",
    "TLS_CERT",
    "TLS_KEY",
    "HTTP_WORKERS",
    "SHARD_QUEUE_DEPTH",
    "MAX_BATCH",
    "LOG_FORMAT",
    "NODE_ADDR",
    "CLUSTER_PORT",
    "JOIN",
    "REPLICAS",
    "CLUSTER_SECRET",
    "REQUEST_TIMEOUT_MS",
    "RAFT_SNAPSHOT_ENTRIES",
];

/// A process that exited (or was killed after a timeout), with everything it printed.
#[derive(Debug)]
pub struct Exited {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
}

/// A command line for the `shale` binary, with a clean environment.
pub struct Shale {
    cmd: Command,
}

impl Shale {
    /// `shale` with no arguments yet.
    pub fn bare() -> Shale {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_shale"));
        for var in SHALE_ENV {
            cmd.env_remove(var);
        }
        // RESP off unless a test asks for it: parallel servers would all want port 6380.
        cmd.env("RUST_LOG", "info").env("HTTP_WORKERS", "2").env("RESP_PORT", "off");
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        Shale { cmd }
    }

    /// `shale --port 0 --data-dir DIR`.
    pub fn serve(dir: &Path) -> Shale {
        let mut s = Shale::bare();
        s.cmd.arg("--port").arg("0").arg("--data-dir").arg(dir);
        s
    }

    /// Appends arguments.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<std::ffi::OsStr>>(mut self, args: I) -> Shale {
        self.cmd.args(args);
        self
    }

    /// Sets an environment variable of the child.
    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Shale {
        self.cmd.env(key, value);
        self
    }

    /// Spawns and waits for `LISTENING addr`; panics with the child's stderr if it exits first.
    pub fn start(self) -> BinaryServer {
        match self.try_start() {
            Ok(s) => s,
            Err(e) => panic!("shale did not start: {}\nstdout:\n{}\nstderr:\n{}", e.status, e.stdout, e.stderr),
        }
    }

    /// Spawns and waits for `LISTENING addr`; `Err` when the child exits (or prints nothing) first.
    pub fn try_start(mut self) -> Result<BinaryServer, Exited> {
        let mut child = self.cmd.spawn().expect("spawning the shale binary");
        let stderr = collect(child.stderr.take().expect("stderr is piped"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (line_tx, line_rx) = mpsc::channel::<String>();
        let stdout_log = Arc::new(Mutex::new(Vec::new()));
        let log = stdout_log.clone();
        let stdout_thread = std::thread::spawn(move || {
            // Keep draining stdout for the life of the child, so it can never block on a full pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                log.lock().unwrap().extend_from_slice(format!("{line}\n").as_bytes());
                if let Some(addr) = line.strip_prefix("LISTENING ") {
                    let _ = line_tx.send(addr.trim().to_string());
                }
            }
        });
        match line_rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => {
                let addr = addr.parse().unwrap_or_else(|e| panic!("LISTENING line {addr:?} is not an address: {e}"));
                Ok(BinaryServer { child: Some(child), addr, stderr, stdout_thread: Some(stdout_thread) })
            }
            Err(_) => {
                // Exited without listening (or hung: then kill it).
                let status = wait_timeout(&mut child, STOP_TIMEOUT).unwrap_or_else(|| {
                    let _ = child.kill();
                    child.wait().expect("waiting for a killed child")
                });
                let _ = stdout_thread.join();
                let stdout = String::from_utf8_lossy(&stdout_log.lock().unwrap()).into_owned();
                Err(Exited { status, stdout, stderr: stderr.finish() })
            }
        }
    }

    /// Runs to completion (killing it after `timeout`) and returns what it printed.
    pub fn run(mut self, timeout: Duration) -> Exited {
        let mut child = self.cmd.spawn().expect("spawning the shale binary");
        let stderr = collect(child.stderr.take().expect("stderr is piped"));
        let stdout = collect(child.stdout.take().expect("stdout is piped"));
        let status = wait_timeout(&mut child, timeout).unwrap_or_else(|| {
            let _ = child.kill();
            let status = child.wait().expect("waiting for a killed child");
            panic!("shale still running after {timeout:?} ({status}); stderr:\n{}", stderr.snapshot());
        });
        Exited { status, stdout: stdout.finish(), stderr: stderr.finish() }
    }
}

/// A pipe drained on its own thread into memory.
struct Collector {
    buf: Arc<Mutex<Vec<u8>>>,
    thread: Option<JoinHandle<()>>,
}

fn collect(mut pipe: impl Read + Send + 'static) -> Collector {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    let thread = std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    Collector { buf, thread: Some(thread) }
}

impl Collector {
    /// Everything read so far.
    fn snapshot(&self) -> String {
        String::from_utf8_lossy(&self.buf.lock().unwrap()).into_owned()
    }

    /// Waits for the pipe to close (the child exited) and returns everything.
    fn finish(mut self) -> String {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.snapshot()
    }
}

/// Polls `child` until it exits or `timeout` passes.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("polling a child") {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The real `shale` binary, running; SIGKILLed on drop if still alive.
pub struct BinaryServer {
    child: Option<Child>,
    /// The address from its `LISTENING` line.
    pub addr: SocketAddr,
    stderr: Collector,
    stdout_thread: Option<JoinHandle<()>>,
}

impl BinaryServer {
    /// `shale --port 0 --data-dir DIR ARGS..` with `envs`, once it printed `LISTENING`.
    pub fn start(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> BinaryServer {
        let mut s = Shale::serve(dir).args(args);
        for (k, v) in envs {
            s = s.env(k, v);
        }
        s.start()
    }

    /// `http://addr` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The base URL, `http://addr`.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child is alive").id()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.snapshot()
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) with kill(1).
    pub fn signal(&self, signal: &str) {
        let pid = self.pid().to_string();
        let sent = Command::new("kill").arg(format!("-{signal}")).arg(&pid).status().expect("running kill");
        assert!(sent.success(), "kill -{signal} {pid} failed");
    }

    /// SIGKILL (std's `Child::kill` sends SIGKILL on Unix), then reap it.
    pub fn kill9(mut self) {
        let mut child = self.child.take().expect("child is alive");
        child.kill().expect("sending SIGKILL");
        let status = child.wait().expect("reaping the killed child");
        assert!(status.code().is_none(), "a SIGKILLed process has no exit code, got {status}");
    }

    /// SIGTERM, then waits for the exit (at most [`STOP_TIMEOUT`]) and returns its status and stderr.
    pub fn terminate(mut self) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("child is alive");
        let sent = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("running kill -TERM");
        assert!(sent.success(), "kill -TERM {} failed", child.id());
        let status = wait_timeout(&mut child, STOP_TIMEOUT).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!("shale did not exit within {STOP_TIMEOUT:?} of SIGTERM; stderr:\n{}", self.stderr.snapshot());
        });
        if let Some(t) = self.stdout_thread.take() {
            let _ = t.join();
        }
        let stderr = std::mem::replace(&mut self.stderr, Collector { buf: Default::default(), thread: None });
        (status, stderr.finish())
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The shard files (`shard-N.redb`) in a data dir, sorted.
pub fn shard_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("reading the data dir")
        .map(|e| e.expect("reading a dir entry").path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("shard-") && n.ends_with(".redb"))
        })
        .collect();
    files.sort();
    files
}
