//! The ceiling for shale's HTTP benchmarks: actix-web doing (almost) nothing, on the same worker count.
//!
//! - `GET /kv/{key}`: a fixed 32-byte body (the cost of actix plus the network).
//! - `GET /kvm/{key}`: the value of `key` from a `moka::sync::Cache` pre-filled with `--keys` keys `k0..k{N-1}` of
//!   32 bytes (the same keys `scripts/bench.sh` preloads into shale), 404 when absent.
//! - `PUT /kv/{key}` (and `/kvm/{key}`): reads the body, answers 204 without storing anything.
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

    actix_web::rt::System::new().block_on(async move {
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(cache.clone())
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
