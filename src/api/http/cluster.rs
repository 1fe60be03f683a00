//! `/cluster`: forming and inspecting a cluster (`shale cluster init | status | remove`). Answered 404 by a node
//! that is not in cluster mode.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};

use super::AppState;
use crate::cluster::runtime::Cluster;
use crate::error::{Error, Result};

fn cluster(state: &AppState) -> Result<&Arc<Cluster>> {
    state
        .cluster
        .as_ref()
        .ok_or_else(|| Error::NotFound("this node is not in cluster mode (NODE_ADDR is unset)".into()))
}

/// `POST /cluster/init` -> 200 `{"cluster": id, "replicas": n}`: forms a new cluster with this node as its first
/// member; the `JOIN` nodes join it by themselves. 409 when this node or a `JOIN` node already belongs to one.
pub async fn handle_init(state: web::Data<AppState>) -> Result<HttpResponse> {
    let made = cluster(&state)?.init().await?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "cluster": made.id, "replicas": made.replicas })))
}

/// `GET /cluster/status` -> this node's view: nodes, and each shard's leader, replicas, indexes and lag.
pub async fn handle_status(state: web::Data<AppState>) -> Result<HttpResponse> {
    let status = cluster(&state)?.status().await?;
    Ok(HttpResponse::Ok().json(status))
}

/// `DELETE /cluster/nodes/{id}` -> 204: takes node `id` (hex, as `status` shows it) out of every shard; the
/// shards' leaders promote standby nodes in its place.
pub async fn handle_remove(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    let raw = req.match_info().get("id").unwrap_or("");
    let hex = !raw.is_empty() && raw.len() <= 16 && raw.bytes().all(|b| b.is_ascii_hexdigit());
    let node = u64::from_str_radix(raw, 16).ok().filter(|_| hex).ok_or_else(|| {
        Error::BadRequest(format!("a node id is 16 hex digits, as shale cluster status shows; got {raw:?}"))
    })?;
    cluster(&state)?.remove(node).await?;
    Ok(HttpResponse::NoContent().finish())
}
