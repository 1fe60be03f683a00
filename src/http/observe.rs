//! Per-request observability: an `X-Request-Id` on every answer (kept from the request when it sent a sane one),
//! a tracing span carrying it, and request counters and latency histograms labelled by route pattern.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing::Instrument;

/// The request id header.
pub static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A client's id is kept when it is 1..=128 visible ASCII characters; otherwise a new one is made.
fn request_id(req: &ServiceRequest) -> HeaderValue {
    if let Some(v) = req.headers().get(&REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    // Process-unique: a per-process random prefix (from the start time) and a counter.
    static PREFIX: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    let prefix = PREFIX.get_or_init(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        xxhash_rust::xxh3::xxh3_64(&t.as_nanos().to_le_bytes()) as u32
    });
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_str(&format!("{prefix:08x}-{n:012x}")).expect("hex is a valid header value")
}

/// Middleware: request id, span, metrics.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = request_id(&req);
    let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_string());
    let method = req.method().as_str().to_string();
    let span = tracing::info_span!("request", request_id = id.to_str().unwrap_or(""), %method, %route);
    let result = next.call(req).instrument(span.clone()).await;
    let status = match &result {
        Ok(res) => res.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    let elapsed = started.elapsed().as_secs_f64();
    metrics::counter!("shale_http_requests_total", "route" => route.clone(), "method" => method.clone(), "status" => status.as_str().to_string())
        .increment(1);
    metrics::histogram!("shale_http_request_duration_seconds", "route" => route, "method" => method).record(elapsed);
    if status.is_server_error() {
        span.in_scope(|| tracing::warn!(status = status.as_u16(), "request failed"));
    } else {
        span.in_scope(|| tracing::debug!(status = status.as_u16(), ms = elapsed * 1e3, "request"));
    }
    let mut res = result?;
    res.headers_mut().insert(REQUEST_ID.clone(), id);
    Ok(res)
}
