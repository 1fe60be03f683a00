//! `/kv/{key}` and `/kv?prefix=` handlers: request -> [`Command`] or read -> [`Node`] -> response.
//!
//! The key is taken from the raw request path and percent-decoded here (so `a%2Fb` and `a/b` are the same
//! key, and `+` stays a plus); it must be 1..=MAX_KEY_BYTES bytes of UTF-8.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use serde::Deserialize;

use super::AppState;
use crate::command::{Command, EtagMatch, Precondition, Reply, Space};
use crate::error::{Error, Result};
use crate::node::reads::Consistency;
use crate::node::Node;
use crate::record::{etag_of, MAX_CONTENT_TYPE};

/// Default and largest page size of a listing.
pub const DEFAULT_LIST_LIMIT: usize = 1000;
/// Largest page size of a listing.
pub const MAX_LIST_LIMIT: usize = 10_000;

/// The key of a `/kv/{key}` request, percent-decoded and checked against the limits.
pub fn kv_key(req: &HttpRequest, node: &Node) -> Result<Bytes> {
    let raw = req.uri().path().strip_prefix("/kv/").unwrap_or("");
    let key: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    node.check_key(&key, "key")?;
    if std::str::from_utf8(&key).is_err() {
        return Err(Error::BadRequest("the key is not valid UTF-8 after percent-decoding".into()));
    }
    Ok(Bytes::from(key))
}

/// Reads a request body of at most `max` bytes; a larger one is 413 and nothing is stored.
pub async fn read_body(req: &HttpRequest, mut payload: web::Payload, max: usize) -> Result<Bytes> {
    let too_large = |n: usize| Error::PayloadTooLarge(format!("the body is {n} bytes or more; the limit is {max}"));
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if let Some(n) = declared.filter(|&n| n > max) {
        return Err(too_large(n));
    }
    let read_err = |e: actix_web::error::PayloadError| Error::BadRequest(format!("cannot read the body: {e}"));
    // Most bodies arrive in one chunk: keep it without a copy.
    let Some(first) = payload.next().await.transpose().map_err(read_err)? else {
        return Ok(Bytes::new());
    };
    if first.len() > max {
        return Err(too_large(first.len()));
    }
    let Some(second) = payload.next().await.transpose().map_err(read_err)? else {
        return Ok(first);
    };
    let mut buf = BytesMut::with_capacity(declared.unwrap_or(first.len() + second.len()));
    buf.extend_from_slice(&first);
    let mut next = Some(second);
    while let Some(chunk) = next {
        if buf.len() + chunk.len() > max {
            return Err(too_large(buf.len() + chunk.len()));
        }
        buf.extend_from_slice(&chunk);
        next = payload.next().await.transpose().map_err(read_err)?;
    }
    Ok(buf.freeze())
}

/// Parses an `If-Match` / `If-None-Match` value. `weak` allows `W/` tags to match (If-None-Match); with
/// strong comparison (If-Match) a weak tag matches nothing. Tags shale never issued match nothing.
pub fn parse_etags(value: &HeaderValue, weak: bool) -> Result<EtagMatch> {
    let text = value.to_str().map_err(|_| Error::BadRequest("ETag header is not ASCII".into()))?.trim();
    if text == "*" {
        return Ok(EtagMatch::Any);
    }
    let mut revs = Vec::new();
    for tag in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (is_weak, tag) = match tag.strip_prefix("W/") {
            Some(t) => (true, t),
            None => (false, tag),
        };
        let Some(inner) = tag.strip_prefix('"').and_then(|t| t.strip_suffix('"')) else {
            return Err(Error::BadRequest(format!("malformed entity tag {tag:?}: quote it, as in \"1f\"")));
        };
        if is_weak && !weak {
            continue;
        }
        if let Ok(rev) = u64::from_str_radix(inner, 16) {
            revs.push(rev);
        }
    }
    Ok(EtagMatch::Revs(revs))
}

/// The precondition of a write from its `If-Match` and `If-None-Match` headers.
pub fn write_precondition(req: &HttpRequest) -> Result<Precondition> {
    let h = req.headers();
    Ok(Precondition {
        if_match: h.get(header::IF_MATCH).map(|v| parse_etags(v, false)).transpose()?,
        if_none_match: h.get(header::IF_NONE_MATCH).map(|v| parse_etags(v, true)).transpose()?,
    })
}

/// Every `/kv/<key>` request (routed here by prefix; see `http::configure`): the method picks the handler.
pub async fn handle_key(req: HttpRequest, body: web::Payload, state: web::Data<AppState>) -> Result<HttpResponse> {
    match *req.method() {
        Method::GET | Method::HEAD => handle_get(req, state).await,
        Method::PUT => handle_put(req, body, state).await,
        Method::DELETE => handle_delete(req, state).await,
        _ => Ok(super::method_not_allowed(&req, "GET, HEAD, PUT, DELETE")),
    }
}

/// `GET` / `HEAD /kv/{key}`: the value with its Content-Type and ETag; 304 on a matching If-None-Match.
pub async fn handle_get(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    let key = kv_key(&req, &state.node)?;
    let consistency = super::consistency(&req)?;
    let Some(rec) = state.node.read_with(Space::Kv, key, consistency).outcome().await? else {
        return Err(Error::NotFound("key not found".into()));
    };
    let etag = rec.etag();
    if let Some(v) = req.headers().get(header::IF_NONE_MATCH) {
        if parse_etags(v, true)?.matches(Some(rec.rev())) {
            return Ok(HttpResponse::NotModified().insert_header((header::ETAG, etag)).finish());
        }
    }
    let mut res = HttpResponse::Ok();
    res.insert_header((header::ETAG, etag)).insert_header((header::CONTENT_TYPE, rec.content_type()));
    // For HEAD, actix sends these headers and the length but not the body.
    Ok(res.body(rec.value()))
}

/// `PUT /kv/{key}`: 201 when created, 204 when replaced, both with the new ETag. With an `Idempotency-Key`, a
/// retry is answered the first attempt's status and ETag (or error) and stores nothing.
pub async fn handle_put(req: HttpRequest, body: web::Payload, state: web::Data<AppState>) -> Result<HttpResponse> {
    let key = kv_key(&req, &state.node)?;
    let precondition = write_precondition(&req)?;
    let request = super::idempotency_key(&req)?;
    let content_type = match req.headers().get(header::CONTENT_TYPE) {
        None => Bytes::new(),
        Some(v) if v.len() > MAX_CONTENT_TYPE => {
            return Err(Error::BadRequest(format!("Content-Type is longer than {MAX_CONTENT_TYPE} bytes")))
        }
        Some(v) => Bytes::copy_from_slice(v.as_bytes()),
    };
    let value = read_body(&req, body, state.config.max_value_bytes).await?;
    let cmd = Command::Put { space: Space::Kv, key, value, content_type, precondition, skip_if_unchanged: false };
    match state.node.dispatch_once(cmd, request).await? {
        Reply::Stored { created, rev } => {
            let mut res = if created { HttpResponse::Created() } else { HttpResponse::NoContent() };
            Ok(res.insert_header((header::ETAG, etag_of(rev))).finish())
        }
        other => Err(Error::Internal(format!("unexpected reply to a put: {other:?}"))),
    }
}

/// `DELETE /kv/{key}`: 204, 404 when absent, 412 when If-Match does not match (with an `Idempotency-Key`, a retry
/// is answered the first attempt's).
pub async fn handle_delete(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    let key = kv_key(&req, &state.node)?;
    let precondition = write_precondition(&req)?;
    let request = super::idempotency_key(&req)?;
    match state.node.dispatch_once(Command::Delete { space: Space::Kv, key, precondition }, request).await? {
        Reply::Deleted => Ok(HttpResponse::NoContent().finish()),
        other => Err(Error::Internal(format!("unexpected reply to a delete: {other:?}"))),
    }
}

/// Query of `GET /kv`.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    prefix: Option<String>,
    after: Option<String>,
    limit: Option<String>,
    consistency: Option<String>,
}

/// `GET /kv?prefix=P&after=K&limit=N` -> `{"keys": [...], "next": key | null}`.
pub async fn handle_list(query: web::Query<ListQuery>, state: web::Data<AppState>) -> Result<HttpResponse> {
    let limit = match &query.limit {
        None => DEFAULT_LIST_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIST_LIMIT).contains(&n) => n,
            _ => {
                return Err(Error::BadRequest(format!(
                    "limit must be an integer from 1 to {MAX_LIST_LIMIT}, got {l:?}"
                )))
            }
        },
    };
    let prefix = Bytes::from(query.prefix.clone().unwrap_or_default());
    let after = query.after.clone().filter(|a| !a.is_empty()).map(Bytes::from);
    let consistency = query.consistency.as_deref().map(Consistency::parse).transpose()?.unwrap_or_default();
    let (keys, next) = state.node.list(Space::Kv, prefix, after, limit, consistency).await?;
    let text = |k: &Bytes| String::from_utf8_lossy(k).into_owned();
    let body = serde_json::json!({
        "keys": keys.iter().map(text).collect::<Vec<_>>(),
        "next": next.as_ref().map(text),
    });
    Ok(HttpResponse::Ok().content_type("application/json").body(body.to_string()))
}
