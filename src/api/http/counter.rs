//! `/counter/{name}`: dist_counter-compatible counters.
//!
//! An increment is a [`Command::CounterAdd`]: the shard that owns the name reads, adds with overflow check and
//! writes inside its write transaction, so concurrent increments are exact and an acknowledged one is durable.

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;

use super::kv::read_body;
use super::AppState;
use crate::command::Command;
use crate::error::{Error, Result};
use crate::node::reads::Consistency;
use crate::node::Node;

/// Longest accepted increment body (an i64 with sign and surrounding whitespace fits easily).
const MAX_DELTA_BODY: usize = 64;

fn counter_name(req: &HttpRequest, node: &Node) -> Result<Bytes> {
    let raw = req.match_info().get("name").unwrap_or("");
    let name: Vec<u8> = percent_encoding::percent_decode_str(raw).collect();
    node.check_key(&name, "counter name")?;
    Ok(Bytes::from(name))
}

/// Parses a decimal i64 increment (`2`, `-3`, surrounding whitespace allowed); anything else is 400.
pub fn parse_delta(body: &[u8]) -> Result<i64> {
    let text = std::str::from_utf8(body).map_err(|_| Error::BadRequest("the increment is not text".into()))?.trim();
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Error::BadRequest(format!("the increment must be a decimal integer, got {text:?}")));
    }
    text.parse::<i64>()
        .map_err(|_| Error::BadRequest(format!("the increment {text} does not fit a 64-bit signed integer")))
}

/// `POST /counter/{name}` with a decimal body -> 204. With an `Idempotency-Key`, a retry adds nothing and is
/// answered the first attempt's outcome.
pub async fn handle_add(req: HttpRequest, body: web::Payload, state: web::Data<AppState>) -> Result<HttpResponse> {
    let name = counter_name(&req, &state.node)?;
    let request = super::idempotency_key(&req)?;
    let body = read_body(&req, body, MAX_DELTA_BODY).await.map_err(|e| match e {
        Error::PayloadTooLarge(_) => Error::BadRequest("the increment must be a decimal integer".into()),
        e => e,
    })?;
    let delta = parse_delta(&body)?;
    state.node.dispatch_once(Command::CounterAdd { name, delta }, request).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `GET /counter/{name}/value` -> the value as text (0 when never written): this replica's value, answered
/// whatever else is down (on a single node, the committed value).
pub async fn handle_value(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    value(req, state, Consistency::Stale).await
}

/// `GET /counter/{name}/consistent_value` -> the value as text, linearizable (503 when the counter's shard has no
/// majority; on a single node, the committed value).
pub async fn handle_consistent_value(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    value(req, state, Consistency::Linearizable).await
}

async fn value(req: HttpRequest, state: web::Data<AppState>, consistency: Consistency) -> Result<HttpResponse> {
    let name = counter_name(&req, &state.node)?;
    let value = state.node.counter(name, consistency).await?;
    Ok(HttpResponse::Ok().content_type("text/plain; charset=utf-8").body(value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas() {
        assert_eq!(parse_delta(b"2").unwrap(), 2);
        assert_eq!(parse_delta(b" -3\n").unwrap(), -3);
        assert_eq!(parse_delta(b"+4").unwrap(), 4);
        assert_eq!(parse_delta(b"9223372036854775807").unwrap(), i64::MAX);
        for bad in [&b""[..], b"x", b"1.5", b"1e3", b"9223372036854775808", b"--1", b"1 2", b"\xff"] {
            assert!(parse_delta(bad).is_err(), "{bad:?}");
        }
    }
}
