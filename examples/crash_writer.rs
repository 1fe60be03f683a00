//! Crash-test driver: runs the real `shale` binary on one data dir, writes to it from concurrent client threads
//! while logging every acknowledgement, SIGKILLs it at a random moment, restarts it on the same dir and checks
//! that every acknowledged operation survived.
//!
//! ```text
//! crash_writer [--shale PATH] [--cycles N] [--seed S] [--writers W] [--dir DIR] [--keep] [--durability D]
//!              [--power-loss]
//! ```
//! `--durability eventual` (60 s flush interval) must lose nothing to a kill either: its log frames are written
//! before the answer, and the kernel keeps them. `--durability eventual --power-loss` is the negative control: it
//! deletes the shard logs after each kill (more than a power loss would lose: it keeps what the last fdatasync of a
//! log covered), and must report losses.
//! `scripts/crash-test.sh` builds and runs it; `tests/faults.rs` includes this file as a module and runs a few
//! cycles in CI. It prints `cycles N, acknowledged M, lost L` and exits 1 when L > 0.
//!
//! # What one cycle does
//! 1. Start `shale --port 0 --data-dir DIR --durability immediate` and wait for `/readyz`.
//! 2. Verify the state the previous cycle left (see below), then adopt what was read as the new baseline.
//! 3. `W` writer threads send PUTs of versioned values and DELETEs to keys each thread owns, and increments to
//!    counters they share. Every answer is appended to `DIR/../acks.log`.
//! 4. After a random 0.3–2 s, SIGKILL the server. The writers see their connections fail and stop.
//!
//! # What "nothing lost" means
//! One thread owns a key and waits for each answer before its next request, and it stops at its first transport
//! error (the kill), so no request of a key can overtake another. The key must therefore hold the state of its
//! newest acknowledged operation, or the state of an operation sent after it that got no 2xx (it may have been
//! applied before the kill). A counter must be at least its baseline plus the acknowledged increments and at most
//! the baseline plus every increment sent (all deltas are positive).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a restart (crash recovery included) may take before the run fails.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Per-request timeout of the clients.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct Options {
    /// The `shale` binary.
    pub shale: PathBuf,
    /// Number of kill/restart cycles.
    pub cycles: u32,
    /// Seed of every random choice (printed, so a failing run can be repeated).
    pub seed: u64,
    /// Concurrent writer threads.
    pub writers: usize,
    /// Keys owned by each writer.
    pub keys_per_writer: usize,
    /// Counters shared by all writers.
    pub counters: usize,
    /// The kill comes this long after the writers start: uniformly in `[kill_min, kill_max]`.
    pub kill_min: Duration,
    /// See `kill_min`.
    pub kill_max: Duration,
    /// Working directory (data dir `DIR/data`, `DIR/acks.log`, `DIR/server.log`).
    pub dir: PathBuf,
    /// Print one line per cycle.
    pub verbose: bool,
    /// `--durability` of the server: `immediate` (the contract under test), or `eventual` (60 s flush interval).
    pub durability: String,
    /// After each kill, delete the shard logs (`DIR/data/*.wal`), a harsher loss than a power loss under `eventual`
    /// (which keeps what each log's last fdatasync covered). It shows that the checker does catch lost
    /// acknowledgements.
    pub power_loss: bool,
}

impl Options {
    /// Defaults for a run of `cycles` cycles in `dir`.
    pub fn new(shale: PathBuf, dir: PathBuf, cycles: u32) -> Options {
        Options {
            shale,
            cycles,
            seed: 1,
            writers: 16,
            keys_per_writer: 32,
            counters: 8,
            kill_min: Duration::from_millis(300),
            kill_max: Duration::from_millis(2000),
            dir,
            verbose: true,
            durability: "immediate".into(),
            power_loss: false,
        }
    }
}

/// What a run observed.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Cycles completed (kill + restart + verification).
    pub cycles: u32,
    /// Operations acknowledged with a 2xx (deletes answered 404 included: the key is absent either way).
    pub acknowledged: u64,
    /// Acknowledged PUTs, DELETEs and counter increments.
    pub acked_puts: u64,
    /// See `acked_puts`.
    pub acked_deletes: u64,
    /// See `acked_puts`.
    pub acked_increments: u64,
    /// Requests that got no answer because the server was killed (they may or may not have been applied).
    pub in_flight_at_kill: u64,
    /// Answers that were neither 2xx nor a transport error (for example 503 when a shard queue is full).
    pub other_answers: u64,
    /// Acknowledged operations of each cycle (each must be > 0, or the cycle tested nothing).
    pub acked_per_cycle: Vec<u64>,
    /// Slowest restart after a kill (spawn to `/readyz` 200), in milliseconds.
    pub max_restart_ms: u64,
    /// Every violation found, described for a person.
    pub lost: Vec<String>,
}

// ---- randomness (no dependency: xorshift64*) ----

/// A small deterministic generator; quality is irrelevant here, reproducibility is not.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed` and `stream` (one stream per thread).
    pub fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03);
        r.next_u64();
        r
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

// ---- the model ----

/// The state of a key: absent, or holding the value of a version.
type KeyState = Option<u64>;

/// The value stored for `version` of `key`: self-describing and of varying length, so a mix-up shows.
pub fn value_of(key: &str, version: u64) -> Vec<u8> {
    let head = format!("{key}#{version}:");
    let len = head.len() + (version.wrapping_mul(2_654_435_761) % 1500) as usize;
    head.bytes().chain(std::iter::repeat(b'a' + (version % 26) as u8)).take(len).collect()
}

fn key_name(writer: usize, k: usize) -> String {
    format!("crash/w{writer:02}/k{k:03}")
}

fn counter_name(c: usize) -> String {
    format!("crash-c{c}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// 2xx (or 404 on a delete).
    Acked,
    /// A definite non-2xx answer.
    Refused,
    /// No answer: the connection failed (the kill).
    Unknown,
}

/// One key's history in this cycle.
#[derive(Debug, Clone)]
struct KeyModel {
    /// The state read back at the start of the cycle.
    base: KeyState,
    /// ETag of the newest acknowledged PUT, if it is the newest acknowledged operation.
    acked_etag: Option<String>,
    /// Operations in order: the state each one leaves, and how it ended.
    ops: Vec<(KeyState, Outcome)>,
    /// Next version to write (versions only grow, across cycles too).
    next_version: u64,
}

impl KeyModel {
    /// The states the key may legally be in now.
    fn allowed(&self) -> Vec<KeyState> {
        let last_ack = self.ops.iter().rposition(|(_, o)| *o == Outcome::Acked);
        let mut allowed = vec![match last_ack {
            Some(i) => self.ops[i].0,
            None => self.base,
        }];
        let after = last_ack.map_or(0, |i| i + 1);
        allowed.extend(self.ops[after..].iter().map(|(s, _)| *s));
        allowed
    }
}

/// What one writer did to the shared counters in this cycle.
#[derive(Debug, Clone, Default)]
struct CounterTally {
    acked: Vec<i64>,
    sent: Vec<i64>,
}

/// What one writer thread did in one cycle.
#[derive(Debug, Default)]
struct WriterReport {
    keys: Vec<KeyModel>,
    counters: CounterTally,
    acked_puts: u64,
    acked_deletes: u64,
    acked_increments: u64,
    unknown: u64,
    other: u64,
}

// ---- HTTP ----

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .build()
        .into()
}

enum Answer {
    Status(u16, Vec<u8>, Option<String>),
    Transport(String),
}

fn answer(res: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Answer {
    match res {
        Ok(mut r) => {
            let etag = r.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_string);
            let status = r.status().as_u16();
            match r.body_mut().with_config().limit(16 << 20).read_to_vec() {
                Ok(body) => Answer::Status(status, body, etag),
                Err(e) => Answer::Transport(format!("reading the body: {e}")),
            }
        }
        Err(e) => Answer::Transport(e.to_string()),
    }
}

// ---- the server process ----

/// A running `shale` child; SIGKILLed on drop.
struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(opts: &Options, data: &Path) -> Result<(Server, Duration), String> {
        let started = Instant::now();
        let log = File::options()
            .create(true)
            .append(true)
            .open(opts.dir.join("server.log"))
            .map_err(|e| format!("opening server.log: {e}"))?;
        let mut cmd = Command::new(&opts.shale);
        for var in ["HOST", "PORT", "DATA_DIR", "SHARD_LIMIT", "CACHE_BYTES", "MAX_BATCH", "SHARD_QUEUE_DEPTH"] {
            cmd.env_remove(var);
        }
        cmd.args(["--port", "0", "--flush-interval-ms", "60000", "--durability", &opts.durability, "--data-dir"])
            .arg(data)
            .env("RUST_LOG", "warn")
            .env("HTTP_WORKERS", "2")
            .env("RESP_PORT", "off")
            .env_remove("AUTH_TOKEN")
            .env_remove("AUTH_READ_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = cmd.spawn().map_err(|e| format!("spawning {}: {e}", opts.shale.display()))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Drain stdout for the life of the child so it never blocks on a full pipe.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.strip_prefix("LISTENING ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let mut server = Server { child, base: String::new() };
        let addr = match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => addr,
            Err(_) => {
                let status = server.child.try_wait().ok().flatten();
                return Err(format!("shale did not print LISTENING (exit status {status:?}); see server.log"));
            }
        };
        server.base = format!("http://{addr}");
        let agent = agent();
        loop {
            let ready = agent.get(format!("{}/readyz", server.base)).call().map(|r| r.status().as_u16() == 200);
            if ready.unwrap_or(false) {
                break;
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(format!("{} not ready after {START_TIMEOUT:?}", server.base));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok((server, started.elapsed()))
    }

    fn kill9(mut self) {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    fn terminate(mut self) -> Result<(), String> {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().map_err(|e| e.to_string())?;
        if !sent.success() {
            return Err(format!("kill -TERM {pid} failed"));
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| e.to_string())? {
                return if status.success() { Ok(()) } else { Err(format!("shale exited with {status} on SIGTERM")) };
            }
            if Instant::now() > deadline {
                return Err("shale did not exit within 30 s of SIGTERM".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---- writing ----

type AckLog = Arc<Mutex<BufWriter<File>>>;

#[allow(clippy::too_many_arguments)]
fn write_until_killed(
    base: &str,
    writer: usize,
    mut keys: Vec<KeyModel>,
    counters: usize,
    rng: &mut Rng,
    stop: &AtomicBool,
    log: &AckLog,
    cycle: u32,
) -> WriterReport {
    let agent = agent();
    let mut report = WriterReport {
        counters: CounterTally { acked: vec![0; counters], sent: vec![0; counters] },
        ..Default::default()
    };
    let mut lines = Vec::new();
    while !stop.load(Ordering::Acquire) {
        let roll = rng.below(100);
        if roll < 25 {
            // Counter increment.
            let c = rng.below(counters as u64) as usize;
            let delta = 1 + rng.below(5) as i64;
            report.counters.sent[c] += delta;
            let url = format!("{base}/counter/{}", counter_name(c));
            match answer(agent.post(&url).send(delta.to_string())) {
                Answer::Status(s, ..) if (200..300).contains(&s) => {
                    report.counters.acked[c] += delta;
                    report.acked_increments += 1;
                    lines.push(format!("{cycle} ack incr {} +{delta}", counter_name(c)));
                }
                Answer::Status(..) => report.other += 1,
                Answer::Transport(_) => {
                    report.unknown += 1;
                    break;
                }
            }
            continue;
        }
        let k = rng.below(keys.len() as u64) as usize;
        let name = key_name(writer, k);
        let url = format!("{base}/kv/{name}");
        let model = &mut keys[k];
        let (state, res) = if roll < 40 && model.allowed().iter().any(Option::is_some) {
            (None, answer(agent.delete(&url).call()))
        } else {
            let version = model.next_version;
            model.next_version += 1;
            (Some(version), answer(agent.put(&url).content_type("text/plain").send(&value_of(&name, version)[..])))
        };
        let outcome = match &res {
            Answer::Status(s, ..) if (200..300).contains(s) => Outcome::Acked,
            Answer::Status(404, ..) if state.is_none() => Outcome::Acked,
            Answer::Status(..) => Outcome::Refused,
            Answer::Transport(_) => Outcome::Unknown,
        };
        model.ops.push((state, outcome));
        match outcome {
            Outcome::Acked => {
                model.acked_etag = match (&res, state) {
                    (Answer::Status(_, _, etag), Some(_)) => etag.clone(),
                    _ => None,
                };
                match state {
                    Some(v) => {
                        report.acked_puts += 1;
                        lines.push(format!("{cycle} ack put {name} v{v}"));
                    }
                    None => {
                        report.acked_deletes += 1;
                        lines.push(format!("{cycle} ack delete {name}"));
                    }
                }
            }
            Outcome::Refused => report.other += 1,
            Outcome::Unknown => {
                report.unknown += 1;
                break;
            }
        }
        if lines.len() >= 64 {
            let mut log = log.lock().expect("log lock");
            for l in lines.drain(..) {
                let _ = writeln!(log, "{l}");
            }
        }
    }
    let mut log = log.lock().expect("log lock");
    for l in lines.drain(..) {
        let _ = writeln!(log, "{l}");
    }
    report.keys = keys;
    report
}

// ---- verifying ----

/// Reads every key of `writer` and checks it against the model; returns the observed states.
fn verify_keys(base: &str, writer: usize, keys: &[KeyModel], lost: &mut Vec<String>) -> Vec<KeyState> {
    let agent = agent();
    let mut observed = Vec::with_capacity(keys.len());
    for (k, model) in keys.iter().enumerate() {
        let name = key_name(writer, k);
        let allowed = model.allowed();
        let state = match answer(agent.get(format!("{base}/kv/{name}")).call()) {
            Answer::Status(404, ..) => None,
            Answer::Status(200, body, etag) => {
                let version = allowed.iter().flatten().copied().find(|&v| value_of(&name, v) == body);
                match version {
                    Some(v) => {
                        let newest_acked = model.ops.iter().rev().find(|(_, o)| *o == Outcome::Acked);
                        if newest_acked.is_some_and(|(s, _)| *s == Some(v))
                            && model.acked_etag.is_some()
                            && etag != model.acked_etag
                        {
                            lost.push(format!(
                                "{name}: v{v} has ETag {etag:?}, acknowledged as {:?}",
                                model.acked_etag
                            ));
                        }
                        Some(v)
                    }
                    None => {
                        let shown = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
                        lost.push(format!("{name}: holds {shown:?}…, allowed {allowed:?}"));
                        // Adopt what is there so later cycles stay meaningful; the run already failed.
                        Some(u64::MAX)
                    }
                }
            }
            Answer::Status(s, body, _) => {
                lost.push(format!("{name}: GET answered {s}: {}", String::from_utf8_lossy(&body)));
                model.allowed()[0]
            }
            Answer::Transport(e) => {
                lost.push(format!("{name}: GET failed: {e}"));
                model.allowed()[0]
            }
        };
        if !allowed.contains(&state) && state != Some(u64::MAX) {
            lost.push(format!("{name}: is {state:?}, allowed {allowed:?}"));
        }
        observed.push(state);
    }
    observed
}

fn read_counter(agent: &ureq::Agent, base: &str, c: usize) -> Result<i64, String> {
    match answer(agent.get(format!("{base}/counter/{}/value", counter_name(c))).call()) {
        Answer::Status(200, body, _) => {
            String::from_utf8_lossy(&body).trim().parse().map_err(|e| format!("counter body {body:?}: {e}"))
        }
        Answer::Status(s, body, _) => Err(format!("answered {s}: {}", String::from_utf8_lossy(&body))),
        Answer::Transport(e) => Err(e),
    }
}

// ---- the run ----

/// Runs `opts.cycles` kill/restart cycles and verifies after each restart.
pub fn run(opts: &Options) -> Result<Summary, String> {
    std::fs::create_dir_all(&opts.dir).map_err(|e| format!("creating {}: {e}", opts.dir.display()))?;
    let data = opts.dir.join("data");
    let log_file = File::create(opts.dir.join("acks.log")).map_err(|e| format!("creating acks.log: {e}"))?;
    let log: AckLog = Arc::new(Mutex::new(BufWriter::new(log_file)));
    let mut rng = Rng::new(opts.seed, u64::MAX);
    let mut summary = Summary::default();

    let fresh = KeyModel { base: None, acked_etag: None, ops: Vec::new(), next_version: 1 };
    let mut keys: Vec<Vec<KeyModel>> = vec![vec![fresh; opts.keys_per_writer]; opts.writers];
    let mut counter_base = vec![0i64; opts.counters];
    let mut tallies: Vec<CounterTally> = Vec::new();

    for cycle in 0..=opts.cycles {
        let (server, took) = Server::start(opts, &data)?;
        if cycle > 0 {
            summary.max_restart_ms = summary.max_restart_ms.max(took.as_millis() as u64);
        }

        // Verify what the previous cycle left, then adopt it as the baseline.
        let lost_before = summary.lost.len();
        let checked: Vec<(Vec<KeyState>, Vec<String>)> = std::thread::scope(|s| {
            let handles: Vec<_> = keys
                .iter()
                .enumerate()
                .map(|(w, models)| {
                    let base = &server.base;
                    s.spawn(move || {
                        let mut lost = Vec::new();
                        (verify_keys(base, w, models, &mut lost), lost)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("verifier thread")).collect()
        });
        for (w, (observed, lost)) in checked.into_iter().enumerate() {
            summary.lost.extend(lost);
            for (model, state) in keys[w].iter_mut().zip(observed) {
                *model = KeyModel { base: state, acked_etag: None, ops: Vec::new(), next_version: model.next_version };
            }
        }
        let agent = agent();
        for (c, base) in counter_base.iter_mut().enumerate() {
            let acked: i64 = tallies.iter().map(|t| t.acked[c]).sum();
            let sent: i64 = tallies.iter().map(|t| t.sent[c]).sum();
            match read_counter(&agent, &server.base, c) {
                Ok(v) => {
                    if v < *base + acked || v > *base + sent {
                        summary.lost.push(format!(
                            "{}: value {v}, expected between {} (acknowledged) and {} (sent)",
                            counter_name(c),
                            *base + acked,
                            *base + sent
                        ));
                    }
                    *base = v;
                }
                Err(e) => summary.lost.push(format!("{}: {e}", counter_name(c))),
            }
        }
        if cycle > 0 {
            summary.cycles = cycle;
            if opts.verbose {
                println!(
                    "cycle {cycle}: restart {} ms, verified {} keys and {} counters, lost {}",
                    took.as_millis(),
                    opts.writers * opts.keys_per_writer,
                    opts.counters,
                    summary.lost.len() - lost_before
                );
                for l in &summary.lost[lost_before..] {
                    println!("  LOST {l}");
                }
            }
        }
        if cycle == opts.cycles {
            server.terminate()?;
            break;
        }

        // Write concurrently until the kill.
        let stop = AtomicBool::new(false);
        let kill_after =
            opts.kill_min + Duration::from_millis(rng.below((opts.kill_max - opts.kill_min).as_millis() as u64 + 1));
        let base = server.base.clone();
        let reports: Vec<WriterReport> = std::thread::scope(|s| {
            let handles: Vec<_> = keys
                .drain(..)
                .enumerate()
                .map(|(w, models)| {
                    let (base, stop, log) = (&base, &stop, &log);
                    let mut wrng = Rng::new(opts.seed, u64::from(cycle) << 16 | w as u64);
                    s.spawn(move || write_until_killed(base, w, models, opts.counters, &mut wrng, stop, log, cycle))
                })
                .collect();
            std::thread::sleep(kill_after);
            server.kill9();
            stop.store(true, Ordering::Release);
            if opts.power_loss {
                drop_logs(&data);
            }
            handles.into_iter().map(|h| h.join().expect("writer thread")).collect()
        });
        let mut acked = 0;
        tallies.clear();
        for r in reports {
            acked += r.acked_puts + r.acked_deletes + r.acked_increments;
            summary.acked_puts += r.acked_puts;
            summary.acked_deletes += r.acked_deletes;
            summary.acked_increments += r.acked_increments;
            summary.in_flight_at_kill += r.unknown;
            summary.other_answers += r.other;
            keys.push(r.keys);
            tallies.push(r.counters);
        }
        summary.acknowledged += acked;
        summary.acked_per_cycle.push(acked);
        if opts.verbose {
            println!(
                "cycle {}: killed after {} ms, {acked} operations acknowledged",
                cycle + 1,
                kill_after.as_millis()
            );
        }
        log.lock().expect("log lock").flush().map_err(|e| format!("writing acks.log: {e}"))?;
    }
    log.lock().expect("log lock").flush().map_err(|e| format!("writing acks.log: {e}"))?;
    Ok(summary)
}

/// Deletes the shard logs of the data dir `data` (see [`Options::power_loss`]).
fn drop_logs(data: &Path) {
    for entry in std::fs::read_dir(data).into_iter().flatten().flatten() {
        if entry.path().extension().is_some_and(|e| e == "wal") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

// ---- command line ----

fn usage() -> ! {
    eprintln!(
        "usage: crash_writer [--shale PATH] [--cycles N] [--seed S] [--writers W] [--dir DIR] [--keep] \
         [--durability immediate|eventual] [--power-loss]"
    );
    std::process::exit(2);
}

#[allow(dead_code)] // unused when tests/faults.rs includes this file as a module
fn main() {
    let mut args = std::env::args().skip(1);
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/examples/crash_writer -> target/<profile>/shale
    let mut shale = exe.parent().and_then(Path::parent).map(|p| p.join("shale")).unwrap_or_default();
    let mut cycles = 20;
    let mut seed = None;
    let mut writers = None;
    let mut dir = None;
    let mut keep = false;
    let mut durability = "immediate".to_string();
    let mut power_loss = false;
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--shale" => shale = PathBuf::from(value()),
            "--cycles" => cycles = value().parse().unwrap_or_else(|_| usage()),
            "--seed" => seed = Some(value().parse().unwrap_or_else(|_| usage())),
            "--writers" => writers = Some(value().parse().unwrap_or_else(|_| usage())),
            "--dir" => dir = Some(PathBuf::from(value())),
            "--keep" => keep = true,
            "--durability" => durability = value(),
            "--power-loss" => power_loss = true,
            _ => usage(),
        }
    }
    let seed = seed.unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.map_or(1, |d| d.as_nanos() as u64) ^ u64::from(std::process::id())
    });
    let tmp = match &dir {
        Some(_) => None,
        None => Some(tempfile::Builder::new().prefix("shale-crash-").tempdir().expect("creating a temp dir")),
    };
    let dir = dir.unwrap_or_else(|| tmp.as_ref().expect("a temp dir when no --dir").path().to_path_buf());
    let mut opts = Options::new(shale, dir.clone(), cycles);
    opts.seed = seed;
    opts.durability = durability;
    opts.power_loss = power_loss;
    if let Some(w) = writers {
        opts.writers = w;
    }
    println!("crash test: {cycles} cycles, seed {seed}, {} writers, dir {}", opts.writers, dir.display());
    let started = Instant::now();
    let (summary, code) = match run(&opts) {
        Ok(s) => {
            let idle = s.acked_per_cycle.iter().filter(|n| **n == 0).count();
            let code = if !s.lost.is_empty() || idle > 0 { 1 } else { 0 };
            if idle > 0 {
                println!("{idle} cycles acknowledged nothing (the server died or refused every write): failing");
            }
            (s, code)
        }
        Err(e) => {
            eprintln!("crash test could not run: {e}");
            (Summary::default(), 2)
        }
    };
    if code == 0 {
        println!(
            "acknowledged: {} puts, {} deletes, {} increments; {} requests in flight at the kills; \
             {} other answers; slowest restart {} ms; {:.1} s",
            summary.acked_puts,
            summary.acked_deletes,
            summary.acked_increments,
            summary.in_flight_at_kill,
            summary.other_answers,
            summary.max_restart_ms,
            started.elapsed().as_secs_f64()
        );
    }
    println!("cycles {}, acknowledged {}, lost {}", summary.cycles, summary.acknowledged, summary.lost.len());
    if code != 0 || keep {
        if let Some(t) = tmp {
            let _ = t.keep();
        }
        eprintln!("data dir, acks.log and server.log kept in {}", dir.display());
    } else {
        drop(tmp); // `exit` runs no destructors
    }
    std::process::exit(code);
}
