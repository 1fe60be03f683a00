//! Per-request observability: an `X-Request-Id` on every answer (kept from the request when it sent a sane one),
//! a tracing span carrying it, and request counters and latency histograms labelled by route pattern. This is our
//! only middleware: it also answers the requests refused before routing (`http::refusal`: 431, 401, 403).
//!
//! This runs on every request, so it allocates nothing in the steady state: the route label is the matched
//! resource's name (every resource is named by its pattern in `http/mod.rs`), methods outside a fixed list are
//! labelled `OTHER` (bounded cardinality whatever clients send), and each worker thread keeps the metric handles
//! it has used, so recording is a lookup and two atomic updates.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use tracing::Instrument;

use crate::record::push_hex;

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
    // `{prefix:08x}-{n:012x}`, without `format!` (this runs on every request).
    let mut id = Vec::with_capacity(21);
    push_hex(&mut id, u64::from(*prefix), 8);
    id.push(b'-');
    push_hex(&mut id, n, 12);
    HeaderValue::from_maybe_shared(bytes::Bytes::from(id)).expect("hex is a valid header value")
}

/// The route label of requests that no named resource serves: set as scope data by `http::tail_resource`.
#[derive(Debug, Clone, Copy)]
pub struct RouteName(pub &'static str);

/// Method labels: a fixed list, so arbitrary client methods cannot grow the label set.
const METHODS: [&str; 8] = ["GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS", "OTHER"];

fn method_index(m: &Method) -> u8 {
    match *m {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::PUT => 2,
        Method::POST => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        _ => 7,
    }
}

/// The metric handles of one (route, method, status).
struct Handles {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

/// route label -> the handles of each (method index, status) seen on it. A route sees few of those, so a short
/// list searched in order beats hashing the pair on every request.
type HandleCache = HashMap<String, Vec<((u8, u16), Handles)>>;

thread_local! {
    /// This worker thread's handles, filled on first use of each (route, method, status).
    static HANDLES: RefCell<HandleCache> = RefCell::new(HashMap::new());
}

fn record(route: &str, method: u8, status: u16, seconds: f64) {
    HANDLES.with(|h| {
        let mut h = h.borrow_mut();
        let per_route = match h.get_mut(route) {
            Some(per_route) => per_route,
            None => h.entry(route.to_string()).or_default(),
        };
        let at = match per_route.iter().position(|(seen, _)| *seen == (method, status)) {
            Some(at) => at,
            None => {
                let (route, method_name) = (route.to_string(), METHODS[method as usize]);
                let handles = Handles {
                    requests: metrics::counter!("shale_http_requests_total", "route" => route.clone(), "method" => method_name, "status" => status.to_string()),
                    duration: metrics::histogram!("shale_http_request_duration_seconds", "route" => route, "method" => method_name),
                };
                per_route.push(((method, status), handles));
                per_route.len() - 1
            }
        };
        let handles = &per_route[at].1;
        handles.requests.increment(1);
        handles.duration.record(seconds);
    });
}

/// Middleware: request id, span, refusals before routing (`http::refusal`), metrics.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let id = request_id(&req);
    let method = method_index(req.method());
    // The route is known only after routing: recorded into the span then. Never the path: it holds the key.
    let span = tracing::debug_span!(
        "request",
        request_id = id.to_str().unwrap_or(""),
        method = METHODS[method as usize],
        route = tracing::field::Empty
    );
    // Never clone the request here: routing needs the only reference (actix panics otherwise). A request refused
    // before routing (431, 401, 403) is answered here, so it gets the id and the metrics too.
    let mut res = match super::refusal(&req) {
        Some(refused) => req.into_response(refused).map_into_right_body(),
        None => next.call(req).instrument(span.clone()).await?.map_into_left_body(),
    };
    let status = res.status();
    let elapsed = started.elapsed().as_secs_f64();
    let req = res.request();
    let route = req.app_data::<RouteName>().map(|r| r.0).or_else(|| req.match_name()).unwrap_or("unmatched");
    span.record("route", route);
    record(route, method, status.as_u16(), elapsed);
    if status.is_server_error() {
        tracing::warn!(request_id = id.to_str().unwrap_or(""), route, status = status.as_u16(), "request failed");
    } else {
        span.in_scope(|| tracing::debug!(status = status.as_u16(), ms = elapsed * 1e3, "request"));
    }
    res.headers_mut().insert(REQUEST_ID.clone(), id);
    Ok(res)
}
