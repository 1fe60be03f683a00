//! The ceiling for shale's HTTP benchmarks: actix-web doing (almost) nothing, on the same worker count.
//!
//! - `GET /kv/{key}`: a fixed 32-byte body (the cost of actix plus the network).
//! - `GET /kvm/{key}`: the value of `key` from a `moka::sync::Cache` pre-filled with `--keys` keys `k0..k{N-1}` of
//!   32 bytes (the same keys `scripts/bench-compare.sh` preloads into shale), 404 when absent.
//! - `PUT /kv/{key}` (and `/kvm/{key}`): reads the body, answers 204 without storing anything.
//! - `PUT /kvd/{key}` (with `--log-dir`): the durable ceiling. The key and body go to one of `--log-writers`
//!   threads (by key), which drains everything queued, writes it to its log file with one `pwrite` and one
//!   `fdatasync`, and only then lets the requests answer 204: shale's group commit without anything else (no
//!   B-tree, no cache, no revision). Each log is overwritten from offset 0 every 8 MiB, as shale's are.
//! - `POST /api`: reads the body and echoes it back as JSON (about the size of shale's `{"id", "data"}` answer),
//!   without parsing or storing it: the ceiling of `scripts/bench-exdaas.sh`.
//!
//! `cargo run --release --example ceiling -- --port 0` prints `LISTENING <addr>` once bound, like shale.
//! SIGTERM / SIGINT stop it (actix's own signal handling).

use actix_web::{web, App, HttpResponse, HttpServer};
use bytes::Bytes;
use clap::Parser;
use moka::sync::Cache;

const BODY: &[u8; 32] = b"0123456789abcdef0123456789abcdef";

/// A do-nothing key-value HTTP server to measure shale against.
#[derive(Debug, Parser)]
struct Args {
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port (0 picks a free one).
    #[arg(long, default_value_t = 4100)]
    port: u16,
    /// HTTP workers (default: one per core, as shale).
    #[arg(long, env = "HTTP_WORKERS")]
    workers: Option<usize>,
    /// Keys `k0..k{N-1}` to pre-fill the moka cache with.
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Where the durable ceiling (`PUT /kvd/{key}`) keeps its logs; without it, that route answers 404.
    #[arg(long)]
    log_dir: Option<std::path::PathBuf>,
    /// Log writer threads of the durable ceiling (shale's default shard count).
    #[arg(long, default_value_t = 4)]
    log_writers: usize,
}

/// A write waiting for its log writer: the bytes to log and where to say they are durable.
type Pending = (Vec<u8>, tokio::sync::oneshot::Sender<()>);

/// The durable ceiling's writers, one channel each.
struct Logs(Vec<crossbeam_channel::Sender<Pending>>);

/// One log writer: group commit of everything queued, one write and one fdatasync per group.
fn log_writer(path: std::path::PathBuf, rx: crossbeam_channel::Receiver<Pending>) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    const REWIND: u64 = 8 << 20;
    let file = std::fs::OpenOptions::new().create(true).truncate(true).read(true).write(true).open(path)?;
    let (mut pos, mut buf, mut waiting) = (0u64, Vec::new(), Vec::new());
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some((bytes, reply)) = next.take() {
            buf.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            buf.extend_from_slice(&bytes);
            waiting.push(reply);
            next = rx.try_recv().ok();
        }
        file.write_all_at(&buf, pos)?;
        file.sync_data()?;
        pos += buf.len() as u64;
        if pos >= REWIND {
            pos = 0;
        }
        buf.clear();
        for reply in waiting.drain(..) {
            let _ = reply.send(());
        }
    }
    Ok(())
}

async fn get_fixed() -> HttpResponse {
    HttpResponse::Ok().content_type("application/octet-stream").body(Bytes::from_static(BODY))
}

async fn get_moka(key: web::Path<String>, cache: web::Data<Cache<Vec<u8>, Bytes>>) -> HttpResponse {
    match cache.get(key.as_bytes()) {
        Some(v) => HttpResponse::Ok().content_type("application/octet-stream").body(v),
        None => HttpResponse::NotFound().finish(),
    }
}

async fn put(_key: web::Path<String>, body: web::Bytes) -> HttpResponse {
    std::hint::black_box(body);
    HttpResponse::NoContent().finish()
}

async fn put_durable(key: web::Path<String>, body: web::Bytes, logs: web::Data<Option<Logs>>) -> HttpResponse {
    let Some(logs) = logs.as_ref() else { return HttpResponse::NotFound().finish() };
    let mut bytes = key.as_bytes().to_vec();
    bytes.extend_from_slice(&body);
    let writer = &logs.0[xxhash_rust::xxh3::xxh3_64(key.as_bytes()) as usize % logs.0.len()];
    let (tx, rx) = tokio::sync::oneshot::channel();
    if writer.send((bytes, tx)).is_err() {
        return HttpResponse::InternalServerError().finish();
    }
    match rx.await {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(_) => HttpResponse::InternalServerError().finish(),
    }
}

async fn post_api(body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(body)
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let cache: Cache<Vec<u8>, Bytes> = Cache::builder()
        .max_capacity(256 * 1024 * 1024)
        .weigher(|k: &Vec<u8>, v: &Bytes| (k.len() + v.len() + 48).try_into().unwrap_or(u32::MAX))
        .build();
    for i in 0..args.keys {
        cache.insert(format!("k{i}").into_bytes(), Bytes::from_static(BODY));
    }
    cache.run_pending_tasks();
    let cache = web::Data::new(cache);
    let logs = web::Data::new(args.log_dir.as_ref().map(|dir| {
        Logs(
            (0..args.log_writers.max(1))
                .map(|i| {
                    let (tx, rx) = crossbeam_channel::unbounded();
                    let path = dir.join(format!("ceiling-{i}.log"));
                    std::thread::spawn(move || {
                        if let Err(e) = log_writer(path, rx) {
                            eprintln!("log writer {i}: {e}");
                            std::process::exit(1);
                        }
                    });
                    tx
                })
                .collect(),
        )
    }));

    actix_web::rt::System::new().block_on(async move {
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(cache.clone())
                .app_data(logs.clone())
                .service(web::resource("/kvd/{key}").route(web::put().to(put_durable)))
                .service(web::resource("/kv/{key}").route(web::get().to(get_fixed)).route(web::put().to(put)))
                .service(web::resource("/kvm/{key}").route(web::get().to(get_moka)).route(web::put().to(put)))
                .service(web::resource("/api").route(web::post().to(post_api)))
        });
        if let Some(n) = args.workers {
            server = server.workers(n.max(1));
        }
        let server = server.bind((args.host.as_str(), args.port))?;
        println!("LISTENING {}", server.addrs()[0]);
        use std::io::Write;
        std::io::stdout().flush()?;
        server.run().await
    })
}
