//! `/healthz` (the process runs), `/readyz` (every shard open and warm), `/ping` (ExDaas/dist_counter clients).

use actix_web::{web, HttpResponse};

use super::AppState;

/// `GET /healthz` -> 200 `ok`.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain; charset=utf-8").body("ok\n")
}

/// `GET /readyz` -> 200 `ok` once every shard finished its warm-up, 503 `not ready` before (and when stopping).
/// A cluster node is ready once it belongs to an initialised cluster, every shard has a known leader, and its
/// replicas are caught up.
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let check = state.node.readiness().check().and_then(|()| match &state.cluster {
        Some(cluster) => cluster.ready(),
        None => Ok(()),
    });
    match check {
        Ok(()) => HttpResponse::Ok().content_type("text/plain; charset=utf-8").body("ok\n"),
        Err(why) => HttpResponse::ServiceUnavailable()
            .content_type("text/plain; charset=utf-8")
            .insert_header(("Retry-After", "1"))
            .insert_header(("X-Not-Ready-Reason", why))
            .body("not ready\n"),
    }
}

/// `GET /metrics` -> Prometheus text exposition (read access when tokens are configured).
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let node = state.node.clone();
    let cluster = state.cluster.clone();
    let text = web::block(move || {
        node.record_gauges();
        if let Some(cluster) = cluster {
            cluster.record_gauges();
        }
        crate::metrics::render()
    })
    .await
    .unwrap_or_default();
    HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(text)
}

/// `GET /ping` -> 200 `{"status":"OK"}`.
pub async fn ping() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(r#"{"status":"OK"}"#)
}
