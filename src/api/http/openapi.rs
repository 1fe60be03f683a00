//! `GET /openapi.json`: the OpenAPI 3.1 description of every route.
//!
//! The document is hand-written in `openapi.json` beside this file and compiled in. `tests/openapi.rs` keeps it
//! from drifting: the spec's paths must equal the `web::resource(..)` patterns of `http/mod.rs`, every operation
//! of the spec must be routed (no "no route" 404, no 405), every other method must get 405 with an `Allow`
//! header listing exactly the spec's methods. `scripts/fuzz-api.sh` runs schemathesis against it.

use actix_web::HttpResponse;

/// The OpenAPI document, as served.
pub const SPEC: &str = include_str!("openapi.json");

/// `GET /openapi.json` -> the document.
pub async fn handle_openapi() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(SPEC)
}
