//! The replicated durable ceiling: the most a server that replicates every write to a majority of three and
//! fdatasyncs it before answering can do on this machine, with nothing else (no Raft, no state machine, no
//! B-tree, no cache, no revisions).
//!
//! Three processes of this binary: one leader and two followers.
//!
//! - Follower (`--role follower --peer-port P --log-dir DIR`): listens on `P` for the leader's connection. Frames
//!   arrive as `[last seq: u64][payload length: u32][payload]` (little-endian); a reader thread queues them, and
//!   a writer thread takes everything queued, appends it to its log with one `pwrite` and one `fdatasync`
//!   (group commit), then acks the highest sequence number it made durable (`u64`) on the same connection.
//! - Leader (`--role leader --port H --followers F1,F2 --log-dir DIR`): serves HTTP with actix-web on `H`, with
//!   the same worker count as shale (one per core, or `HTTP_WORKERS`). `PUT /kv/{key}` reads the body and queues
//!   the record (`[key length: u32][key][body]`) for one writer thread, which takes everything queued, numbers
//!   it, hands the batch to one sender thread per follower (each writes every batch queued to its follower's
//!   TCP connection at once) and appends it to its own log with one `pwrite` and one `fdatasync`. The PUT
//!   answers 204 once the leader's fdatasync **and** `--acks` followers' acks (default 1: a majority of three)
//!   cover its sequence number. A follower whose connection breaks is left behind; the other one keeps acking.
//! - `GET /kv/{key}` answers 404: nothing is kept to read back.
//!
//! Each log is overwritten from offset 0 every 8 MiB, as shale's are (and as `examples/ceiling.rs` does).
//! `scripts/bench-cluster.sh` runs it beside a 3-node shale cluster and a 3-member etcd: shale's ratio to it is
//! what replication and a state machine cost shale, beyond what this machine allows any such server.
//!
//! ```sh
//! replicated_ceiling --role follower --peer-port 0 --log-dir /tmp/f1    # prints LISTENING 127.0.0.1:<p1>
//! replicated_ceiling --role follower --peer-port 0 --log-dir /tmp/f2    # prints LISTENING 127.0.0.1:<p2>
//! replicated_ceiling --role leader --port 0 --followers 127.0.0.1:<p1>,127.0.0.1:<p2> --log-dir /tmp/l
//! ```
//!
//! Each process prints `LISTENING <addr>` once bound (the leader its HTTP address, once both followers are
//! connected; a follower its replication address). SIGTERM / SIGINT stop the leader (actix's own handling); a
//! follower ends on any signal's default action.

use std::collections::VecDeque;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpResponse, HttpServer};
use clap::{Parser, ValueEnum};

/// Each log file is rewritten from offset 0 once it reaches this size.
const REWIND: u64 = 8 << 20;
/// How long the leader keeps trying to reach a follower at start-up.
const CONNECT_FOR: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Role {
    Leader,
    Follower,
}

/// A do-nothing replicated durable key-value server to measure a shale cluster against.
#[derive(Debug, Parser)]
struct Args {
    /// Leader: serves HTTP and replicates; follower: logs what the leader sends and acks it.
    #[arg(long, value_enum)]
    role: Role,
    /// Address to bind (HTTP on the leader, replication on a follower).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Leader: HTTP port (0 picks a free one).
    #[arg(long, default_value_t = 4000)]
    port: u16,
    /// Follower: the port the leader connects to (0 picks a free one).
    #[arg(long, default_value_t = 4100)]
    peer_port: u16,
    /// Leader: the followers' `host:port` replication addresses, comma-separated.
    #[arg(long, value_delimiter = ',')]
    followers: Vec<String>,
    /// Leader: follower acks a write needs besides the leader's own fdatasync (1 of 2 makes a majority of 3).
    #[arg(long, default_value_t = 1)]
    acks: usize,
    /// Where this process keeps its log file.
    #[arg(long)]
    log_dir: PathBuf,
    /// Leader: HTTP workers (default: one per core, as shale).
    #[arg(long, env = "HTTP_WORKERS")]
    workers: Option<usize>,
}

/// A write waiting for the leader's writer thread: the record to log and where to say it is replicated.
type Pending = (Vec<u8>, tokio::sync::oneshot::Sender<()>);

/// One group-committed batch of the leader, as it is sent to the followers.
struct Batch {
    /// The sequence number of its last record (records are numbered 1, 2, ... in log order).
    last_seq: u64,
    /// The records, each `[length: u32][record]`.
    bytes: Vec<u8>,
}

/// What the leader knows is durable where, and the writes waiting for it.
struct Progress {
    /// Highest sequence number the leader's own log has fdatasynced.
    local: AtomicU64,
    /// Highest sequence number each follower has acked.
    followers: Vec<AtomicU64>,
    /// Follower acks a write needs.
    acks: usize,
    /// Writes not answered yet, in sequence order.
    waiting: Mutex<VecDeque<(u64, tokio::sync::oneshot::Sender<()>)>>,
}

impl Progress {
    /// The highest sequence number durable on the leader and on `acks` followers.
    fn covered(&self) -> u64 {
        let local = self.local.load(Ordering::Acquire);
        if self.acks == 0 {
            return local;
        }
        let mut acked: Vec<u64> = self.followers.iter().map(|a| a.load(Ordering::Acquire)).collect();
        acked.sort_unstable_by(|a, b| b.cmp(a));
        local.min(acked.get(self.acks - 1).copied().unwrap_or(0))
    }

    /// Answers every waiting write that is now covered. Called after each advance of `local` or of an ack; the
    /// lock orders the calls, so the last one sees every advance.
    fn release(&self) {
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let covered = self.covered();
        while waiting.front().is_some_and(|(seq, _)| *seq <= covered) {
            if let Some((_, reply)) = waiting.pop_front() {
                let _ = reply.send(());
            }
        }
    }
}

/// Appends to a log file with `pwrite`, rewinding to offset 0 every [`REWIND`] bytes.
struct Log {
    file: std::fs::File,
    pos: u64,
}

impl Log {
    fn create(dir: &Path, name: &str) -> std::io::Result<Log> {
        std::fs::create_dir_all(dir)?;
        let file =
            std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(dir.join(name))?;
        Ok(Log { file, pos: 0 })
    }

    /// One write and one fdatasync.
    fn append_durably(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(bytes, self.pos)?;
        self.file.sync_data()?;
        self.pos += bytes.len() as u64;
        if self.pos >= REWIND {
            self.pos = 0;
        }
        Ok(())
    }
}

/// The leader's writer thread: group commit of everything queued, sent to the followers before its own
/// fdatasync so that both proceed at once.
fn leader_writer(
    mut log: Log,
    rx: crossbeam_channel::Receiver<Pending>,
    senders: Vec<crossbeam_channel::Sender<Arc<Batch>>>,
    progress: Arc<Progress>,
) -> std::io::Result<()> {
    let (mut seq, mut waiting) = (0u64, Vec::new());
    while let Ok(first) = rx.recv() {
        let mut bytes = Vec::new();
        let mut next = Some(first);
        while let Some((record, reply)) = next.take() {
            bytes.extend_from_slice(&(record.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&record);
            seq += 1;
            waiting.push((seq, reply));
            next = rx.try_recv().ok();
        }
        // Registered before any follower can see the batch, so no ack can pass a write it covers.
        progress.waiting.lock().unwrap_or_else(|e| e.into_inner()).extend(waiting.drain(..));
        let batch = Arc::new(Batch { last_seq: seq, bytes });
        for sender in &senders {
            let _ = sender.send(batch.clone());
        }
        log.append_durably(&batch.bytes)?;
        progress.local.store(seq, Ordering::Release);
        progress.release();
    }
    Ok(())
}

/// The leader's sender thread for one follower: every batch queued goes out in one flush, each as a frame
/// `[last seq: u64][payload length: u32][payload]`.
fn send_batches(stream: TcpStream, rx: crossbeam_channel::Receiver<Arc<Batch>>) -> std::io::Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, stream);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(batch) = next.take() {
            out.write_all(&batch.last_seq.to_le_bytes())?;
            out.write_all(&(batch.bytes.len() as u32).to_le_bytes())?;
            out.write_all(&batch.bytes)?;
            next = rx.try_recv().ok();
        }
        out.flush()?;
    }
    Ok(())
}

/// The leader's ack reader for follower `index`: each ack is the highest sequence number it made durable.
fn read_acks(stream: TcpStream, index: usize, progress: Arc<Progress>) -> std::io::Result<()> {
    let mut input = BufReader::new(stream);
    let mut ack = [0u8; 8];
    loop {
        if let Err(e) = input.read_exact(&mut ack) {
            let closed = e.kind() == std::io::ErrorKind::UnexpectedEof;
            return Err(if closed { std::io::Error::other("connection closed") } else { e });
        }
        progress.followers[index].store(u64::from_le_bytes(ack), Ordering::Release);
        progress.release();
    }
}

/// Connects to a follower, retrying until [`CONNECT_FOR`] has passed (followers may still be starting).
fn connect(addr: &str) -> std::io::Result<TcpStream> {
    let start = Instant::now();
    loop {
        match TcpStream::connect(addr) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Err(e) if start.elapsed() >= CONNECT_FOR => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Starts a named thread whose error ends the process: a server whose log cannot be written must not answer.
fn spawn(name: String, work: impl FnOnce() -> std::io::Result<()> + Send + 'static) {
    let thread_name = name.clone();
    let spawned = std::thread::Builder::new().name(thread_name).spawn(move || {
        if let Err(e) = work() {
            eprintln!("{name}: {e}");
            std::process::exit(1);
        }
    });
    if let Err(e) = spawned {
        eprintln!("cannot start a thread: {e}");
        std::process::exit(1);
    }
}

/// Like [`spawn`], but the thread's end, error or not, is only reported: losing one follower leaves the other.
fn spawn_peer(name: String, work: impl FnOnce() -> std::io::Result<()> + Send + 'static) {
    let thread_name = name.clone();
    let spawned = std::thread::Builder::new().name(thread_name).spawn(move || match work() {
        Ok(()) => {}
        Err(e) => eprintln!("{name}: {e}; this follower is left behind"),
    });
    if let Err(e) = spawned {
        eprintln!("cannot start a thread: {e}");
        std::process::exit(1);
    }
}

async fn put(
    key: web::Path<String>,
    body: web::Bytes,
    writer: web::Data<crossbeam_channel::Sender<Pending>>,
) -> HttpResponse {
    let mut record = Vec::with_capacity(4 + key.len() + body.len());
    record.extend_from_slice(&(key.len() as u32).to_le_bytes());
    record.extend_from_slice(key.as_bytes());
    record.extend_from_slice(&body);
    let (tx, rx) = tokio::sync::oneshot::channel();
    if writer.send((record, tx)).is_err() {
        return HttpResponse::InternalServerError().finish();
    }
    match rx.await {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

async fn get() -> HttpResponse {
    HttpResponse::NotFound().finish()
}

fn leader(args: Args) -> std::io::Result<()> {
    if args.followers.len() < args.acks {
        return Err(std::io::Error::other(format!(
            "--acks {} needs at least as many --followers (got {})",
            args.acks,
            args.followers.len()
        )));
    }
    let progress = Arc::new(Progress {
        local: AtomicU64::new(0),
        followers: args.followers.iter().map(|_| AtomicU64::new(0)).collect(),
        acks: args.acks,
        waiting: Mutex::new(VecDeque::new()),
    });
    let mut senders = Vec::new();
    for (index, addr) in args.followers.iter().enumerate() {
        let stream = connect(addr).map_err(|e| std::io::Error::other(format!("follower {addr}: {e}")))?;
        let acks = stream.try_clone()?;
        let (tx, rx) = crossbeam_channel::unbounded();
        senders.push(tx);
        spawn_peer(format!("send to {addr}"), move || send_batches(stream, rx));
        let progress = progress.clone();
        spawn_peer(format!("acks from {addr}"), move || read_acks(acks, index, progress));
    }
    let log = Log::create(&args.log_dir, "leader.log")?;
    let (tx, rx) = crossbeam_channel::unbounded();
    spawn("leader log writer".into(), move || leader_writer(log, rx, senders, progress));
    let writer = web::Data::new(tx);

    actix_web::rt::System::new().block_on(async move {
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(writer.clone())
                .service(web::resource("/kv/{key}").route(web::get().to(get)).route(web::put().to(put)))
        });
        if let Some(n) = args.workers {
            server = server.workers(n.max(1));
        }
        let server = server.bind((args.host.as_str(), args.port))?;
        println!("LISTENING {}", server.addrs()[0]);
        std::io::stdout().flush()?;
        server.run().await
    })
}

/// A follower's writer thread: group commit of every frame queued, then one ack of the last sequence number.
fn follower_writer(
    log: &mut Log,
    rx: crossbeam_channel::Receiver<(u64, Vec<u8>)>,
    mut acks: TcpStream,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut last_seq = 0;
        let mut next = Some(first);
        while let Some((seq, payload)) = next.take() {
            buf.extend_from_slice(&payload);
            last_seq = seq;
            next = rx.try_recv().ok();
        }
        if let Err(e) = log.append_durably(&buf) {
            // A follower whose log cannot be written must not ack; nor should it linger half alive.
            eprintln!("follower log: {e}");
            std::process::exit(1);
        }
        buf.clear();
        acks.write_all(&last_seq.to_le_bytes())?;
    }
    Ok(())
}

/// Serves one leader connection until it closes: this thread reads frames, a writer thread logs and acks them.
fn serve_leader(stream: TcpStream, log: &mut Log) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let acks = stream.try_clone()?;
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| follower_writer(log, rx, acks));
        let mut input = BufReader::with_capacity(1 << 20, stream);
        let mut header = [0u8; 12];
        let read = loop {
            match input.read_exact(&mut header) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break Ok(()),
                Err(e) => break Err(e),
            }
            let seq = u64::from_le_bytes(header[..8].try_into().expect("8 bytes"));
            let len = u32::from_le_bytes(header[8..].try_into().expect("4 bytes")) as usize;
            let mut payload = vec![0u8; len];
            if let Err(e) = input.read_exact(&mut payload) {
                break Err(e);
            }
            if tx.send((seq, payload)).is_err() {
                break Ok(());
            }
        };
        drop(tx);
        let written = writer.join().unwrap_or_else(|_| Err(std::io::Error::other("follower writer panicked")));
        read.and(written)
    })
}

fn follower(args: Args) -> std::io::Result<()> {
    let listener = TcpListener::bind((args.host.as_str(), args.peer_port))?;
    let mut log = Log::create(&args.log_dir, "follower.log")?;
    println!("LISTENING {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    loop {
        let (stream, peer) = listener.accept()?;
        match serve_leader(stream, &mut log) {
            Ok(()) => eprintln!("leader {peer} disconnected"),
            Err(e) => eprintln!("leader {peer}: {e}"),
        }
    }
}

fn main() {
    let args = Args::parse();
    let result = match args.role {
        Role::Leader => leader(args),
        Role::Follower => follower(args),
    };
    if let Err(e) = result {
        eprintln!("replicated_ceiling: {e}");
        std::process::exit(1);
    }
}
