//! The HTTP layer: routes, shared state, access control, and the JSON error body for every error, including
//! actix's own (unknown route, wrong method, bad query).
//!
//! Handlers turn a request into a [`crate::command::Command`] (or a read), call the [`Node`], and turn the
//! reply into a response; they hold no state of their own.

pub mod admin;

pub mod cluster;
pub mod counter;
pub mod docs;
pub mod error;
pub mod health;
pub mod kv;
pub mod observe;
pub mod openapi;

use std::sync::Arc;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{ErrorHandlerResponse, ErrorHandlers};
use actix_web::{web, HttpRequest, HttpResponse};

use crate::api::auth;
use crate::config::Config;
use crate::error::Error;
use crate::node::reads::Consistency;
use crate::node::Node;
use error::{code_for_status, json_body};

/// What every handler shares: built once outside the server factory, cloned into each worker's App.
pub struct AppState {
    /// The node to the shard workers.
    pub node: Arc<Node>,
    /// The server configuration (limits).
    pub config: Config,
    /// Bearer tokens.
    pub auth: auth::Tokens,
    /// This node's cluster membership, in cluster mode.
    pub cluster: Option<Arc<crate::cluster::runtime::Cluster>>,
}

/// Largest sum of header name and value bytes of a request (431 above). actix itself only refuses a request head
/// over 128 KiB (431 with an empty body, before any handler runs).
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// The answer to a request refused before routing, if it is: headers over [`MAX_HEADER_BYTES`] (431), or
/// credentials the configured tokens do not allow (401/403; see `auth`). Called by the `observe` middleware, so a
/// refusal gets a request id and is counted like any answer.
pub fn refusal(req: &ServiceRequest) -> Option<HttpResponse> {
    let bytes: usize = req.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    if bytes > MAX_HEADER_BYTES {
        let status = actix_web::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
        let message = format!("the request headers are {bytes} bytes; the limit is {MAX_HEADER_BYTES}");
        return Some(
            HttpResponse::build(status)
                .content_type("application/json")
                .body(json_body(code_for_status(status), &message)),
        );
    }
    let state = req.app_data::<web::Data<AppState>>()?;
    let authorization = req.headers().get(header::AUTHORIZATION).map(|v| v.as_bytes());
    let refused = state.auth.check(req.method(), req.path(), authorization).err()?;
    Some(actix_web::ResponseError::error_response(&refused))
}

/// A resource named by its own pattern: the request-metrics middleware labels requests with the matched
/// resource's name, which it can read after routing without allocating.
fn resource(pattern: &'static str) -> actix_web::Resource {
    web::resource(pattern).name(pattern)
}

/// A resource whose pattern is `<prefix>/{name:.*}`: every path under `<prefix>/` goes to `service`, which reads
/// the rest of the path itself and dispatches on the method. Registered as a scope on the static prefix, because
/// actix compares a static prefix but runs a regex for a pattern with a parameter, on every request (a noticeable
/// share of a cached GET's CPU). Requests are labelled `pattern` in metrics and logs, like a named resource (see
/// `observe`). A route for `<prefix>` alone must come before it.
fn tail_resource(pattern: &'static str, service: actix_web::Route) -> actix_web::Scope {
    let prefix = pattern.split_once("/{").map_or(pattern, |(prefix, _)| prefix);
    web::scope(prefix).app_data(observe::RouteName(pattern)).default_service(service)
}

/// Registers every route on an App.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::QueryConfig::default().error_handler(|err, _| Error::BadRequest(err.to_string()).into()))
        .app_data(web::PathConfig::default().error_handler(|err, _| Error::BadRequest(err.to_string()).into()))
        .service(resource("/metrics").route(web::get().to(health::metrics)).default_service(not_allowed("GET")))
        .service(resource("/healthz").route(web::get().to(health::healthz)).default_service(not_allowed("GET")))
        .service(resource("/readyz").route(web::get().to(health::readyz)).default_service(not_allowed("GET")))
        .service(
            resource("/openapi.json").route(web::get().to(openapi::handle_openapi)).default_service(not_allowed("GET")),
        )
        .service(resource("/ping").route(web::get().to(health::ping)).default_service(not_allowed("GET")))
        .service(resource("/kv").route(web::get().to(kv::handle_list)).default_service(not_allowed("GET")))
        .service(tail_resource("/kv/{key:.*}", web::to(kv::handle_key)))
        .service(
            resource("/api")
                .route(web::get().to(docs::handle_get))
                .route(web::post().to(docs::handle_post))
                .default_service(not_allowed("GET, POST")),
        )
        .service(
            resource("/api/cmd")
                .route(web::get().to(docs::handle_cmd_get))
                .route(web::post().to(docs::handle_cmd_post))
                .default_service(not_allowed("GET, POST")),
        )
        .service(
            resource("/counter/{name}").route(web::post().to(counter::handle_add)).default_service(not_allowed("POST")),
        )
        // Two resources, not one with two patterns: a multi-pattern resource reports its first pattern as the
        // route of both, which would mislabel metrics and logs.
        .service(
            resource("/counter/{name}/value")
                .route(web::get().to(counter::handle_value))
                .default_service(not_allowed("GET")),
        )
        .service(
            resource("/counter/{name}/consistent_value")
                .route(web::get().to(counter::handle_consistent_value))
                .default_service(not_allowed("GET")),
        )
        .service(
            resource("/cluster/init").route(web::post().to(cluster::handle_init)).default_service(not_allowed("POST")),
        )
        .service(
            resource("/cluster/status")
                .route(web::get().to(cluster::handle_status))
                .default_service(not_allowed("GET")),
        )
        .service(
            resource("/cluster/nodes/{id}")
                .route(web::delete().to(cluster::handle_remove))
                .default_service(not_allowed("DELETE")),
        )
        .service(
            resource("/admin/backup").route(web::post().to(admin::handle_backup)).default_service(not_allowed("POST")),
        )
        .default_service(web::to(not_found));
}

/// Builds the whole App for one worker.
pub fn app(
    state: web::Data<AppState>,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    // Our one middleware (observe, which also answers refusals) around actix's error rewriting.
    actix_web::App::new()
        .app_data(state)
        .wrap(ErrorHandlers::new().default_handler(json_error))
        .wrap(actix_web::middleware::from_fn(observe::observe))
        .configure(configure)
}

async fn not_found(req: HttpRequest) -> Result<HttpResponse, Error> {
    Err(Error::NotFound(format!("no route for {} {}", req.method(), req.path())))
}

/// The answer to a method the resource does not serve: 405 with the `Allow` header RFC 9110 requires.
fn not_allowed(allow: &'static str) -> actix_web::Route {
    web::to(move |req: HttpRequest| async move { method_not_allowed(&req, allow) })
}

/// The `consistency` query parameter of a read: `linearizable` (the default) or `stale`.
pub fn consistency(req: &HttpRequest) -> crate::error::Result<Consistency> {
    match req.query_string().split('&').find_map(|pair| pair.strip_prefix("consistency=")) {
        Some(value) => Consistency::parse(value),
        None => Ok(Consistency::Linearizable),
    }
}

/// The longest `Idempotency-Key` accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The request id of a write carrying an `Idempotency-Key` header, which makes the write apply at most once (see
/// [`Node::dispatch_once`]): a hash of the key, the method and the path, so that one key sent to another resource
/// or with another method is another request. `None` without the header; 400 for a key that is not 1 to
/// [`MAX_IDEMPOTENCY_KEY`] visible ASCII characters, or for more than one such header.
pub fn idempotency_key(req: &HttpRequest) -> crate::error::Result<Option<u128>> {
    let mut values = req.headers().get_all("idempotency-key");
    let Some(key) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(Error::BadRequest("send one Idempotency-Key header, not several".into()));
    }
    let key = key.as_bytes();
    if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY || !key.iter().all(u8::is_ascii_graphic) {
        return Err(Error::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters (no spaces), got {} bytes",
            key.len()
        )));
    }
    let method = req.method().as_str().as_bytes();
    Ok(Some(crate::command::request_id(&[key, method, req.uri().path().as_bytes()])))
}

/// 405 for `req`, naming the methods its resource serves.
pub fn method_not_allowed(req: &HttpRequest, allow: &'static str) -> HttpResponse {
    let err = Error::MethodNotAllowed(format!("{} is not allowed on {} (allowed: {allow})", req.method(), req.path()));
    let mut res = actix_web::ResponseError::error_response(&err);
    res.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allow));
    res
}

/// Rewrites an error response that does not already carry our JSON body (actix's own errors, such as a
/// malformed request) into the JSON error of `docs/api.md`. 304 and HEAD answers keep an empty body.
fn json_error<B>(res: ServiceResponse<B>) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let status = res.status();
    let is_json =
        res.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !(status.is_client_error() || status.is_server_error()) || res.request().method() == "HEAD" {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let message = res
        .response()
        .error()
        .map(|e| e.to_string())
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    let (req, old) = res.into_parts();
    let mut new = HttpResponse::build(status);
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            new.append_header((name.clone(), value.clone()));
        }
    }
    let new = new.content_type("application/json").body(json_body(code_for_status(status), &message));
    Ok(ErrorHandlerResponse::Response(ServiceResponse::new(req, new).map_into_right_body()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<F: std::future::Future>(_: impl Fn(HttpRequest, web::Payload, web::Data<AppState>) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// actix allocates each request's handler future (plus about 200 bytes of its own) in one box. Over 1032
    /// bytes, glibc serves that from its slow path, which first merges every small free chunk
    /// (`malloc_consolidate`, a cost paid on every request whose box is that large). That is why the node boxes
    /// its read-miss path and `Node::dispatch` queues the command before its future is polled (so the future
    /// does not hold it). The futures of the busiest routes must stay well under that.
    #[test]
    fn the_busiest_handlers_futures_stay_small_enough_for_malloc_s_fast_path() {
        for (route, size) in [
            ("/kv/{key}", future_size(kv::handle_key)),
            ("POST /api", future_size(docs::handle_post)),
            ("POST /counter/{name}", future_size(counter::handle_add)),
        ] {
            assert!(size <= 640, "the future of {route} is {size} bytes");
        }
    }
}
