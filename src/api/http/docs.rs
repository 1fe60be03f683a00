//! `/api`: ExDaas-compatible JSON documents.
//!
//! A document is stored in the `docs` table of the shard that owns its id (key = the id as 8 big-endian
//! bytes, so ids sort numerically and the highest id of a file is its last key), as compact JSON.
//! New ids come from the node's allocator, which starts above the highest id stored anywhere (see
//! `docs/design.md`); an allocated id is written create-only, so it can never overwrite a document.
//!
//! Commands (`GET /api/cmd` with Phoenix/Rails nested query parameters, or `POST /api/cmd` with JSON):
//! - `ONLY` with `keys: [k, ...]` -> `{"values": [data[k], ...]}` (null where absent);
//! - `FILTER_BOOL` with `keys: {"key": K, "by": B}` -> the elements of the list `data[K]` whose `B` is `true`.

use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use serde_json::{Map, Value};

use super::kv::read_body;
use super::AppState;
use crate::command::Space;
use crate::error::{Error, Result};
use crate::node::docs::{doc_key, JSON};
use crate::node::reads::Consistency;

/// The largest id a client may write explicitly: 2^53-1, the largest integer every JSON client represents
/// exactly. Larger explicit ids are refused, so no client can push the allocator to the end of the id space;
/// reads accept any u64.
pub const MAX_WRITABLE_DOC_ID: u64 = (1 << 53) - 1;

/// Parses an id given as a JSON number or digit string: a positive integer, or 400. A number written with a
/// fraction part of zero (`7.0`, as Python's `json` writes a float) is the same JSON number as `7`.
pub fn parse_id(v: &Value) -> Result<u64> {
    let bad = || Error::BadRequest(format!("id must be a positive integer, got {v}"));
    let id = match v {
        Value::Number(n) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && (1.0..18_446_744_073_709_551_616.0).contains(f))
                    .map(|f| f as u64)
            })
            .ok_or_else(bad)?,
        Value::String(s) => parse_id_str(s)?,
        _ => return Err(bad()),
    };
    if id == 0 {
        return Err(bad());
    }
    Ok(id)
}

fn parse_id_str(s: &str) -> Result<u64> {
    let bad = || Error::BadRequest(format!("id must be a positive integer, got {s:?}"));
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    match s.parse::<u64>() {
        Ok(0) | Err(_) => Err(bad()),
        Ok(id) => Ok(id),
    }
}

fn parse_json(body: &[u8]) -> Result<Map<String, Value>> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::BadRequest("the body must be a JSON object".into())),
        Err(e) => Err(Error::BadRequest(format!("malformed JSON: {e}"))),
    }
}

/// `{"id": id, "data": <raw json>}` without re-parsing the stored document.
fn doc_response(id: u64, data: &[u8]) -> HttpResponse {
    let mut body = Vec::with_capacity(data.len() + 32);
    body.extend_from_slice(b"{\"id\":");
    body.extend_from_slice(id.to_string().as_bytes());
    body.extend_from_slice(b",\"data\":");
    body.extend_from_slice(data);
    body.push(b'}');
    HttpResponse::Ok().content_type(JSON).body(body)
}

/// `POST /api` `{"id": null | N | "N", "data": ...}`: create with a new id, or create/replace document N. With an
/// `Idempotency-Key`, a retry is answered the first attempt's outcome (a create: its id) and stores nothing.
pub async fn handle_post(req: HttpRequest, body: web::Payload, state: web::Data<AppState>) -> Result<HttpResponse> {
    let request = super::idempotency_key(&req)?;
    let body = read_body(&req, body, state.config.max_value_bytes).await?;
    // The parsed request is dropped before the next await: the future (allocated per request) stays small.
    let (id, data) = {
        let mut doc = parse_json(&body)?;
        let Some(data) = doc.remove("data") else {
            return Err(Error::BadRequest("missing \"data\"".into()));
        };
        let data = Bytes::from(serde_json::to_vec(&data).expect("a JSON value always serializes"));
        (doc.get("id").filter(|v| !v.is_null()).map(parse_id).transpose()?, data)
    };
    drop(body);
    let node = &state.node;
    match id {
        Some(id) => {
            if id > MAX_WRITABLE_DOC_ID {
                return Err(Error::BadRequest(format!(
                    "id {id} is too large: explicit ids go up to {MAX_WRITABLE_DOC_ID} (2^53-1)"
                )));
            }
            node.put_doc(id, data.clone(), request).await?;
            Ok(doc_response(id, &data))
        }
        None => {
            let id = node.create_doc(data.clone(), request).await?;
            Ok(doc_response(id, &data))
        }
    }
}

/// Query of `GET /api`.
#[derive(Debug, serde::Deserialize)]
pub struct IdQuery {
    id: Option<String>,
    consistency: Option<String>,
}

async fn load(state: &AppState, id: u64, consistency: Consistency) -> Result<Option<crate::record::Record>> {
    state.node.read_with(Space::Doc, doc_key(id), consistency).outcome().await
}

/// `GET /api?id=N` -> `{"id": N, "data": <document or null>}`.
pub async fn handle_get(query: web::Query<IdQuery>, state: web::Data<AppState>) -> Result<HttpResponse> {
    let Some(raw) = &query.id else {
        return Err(Error::BadRequest("missing id: use /api?id=N".into()));
    };
    let id = parse_id_str(raw)?;
    let consistency = query.consistency.as_deref().map(Consistency::parse).transpose()?.unwrap_or_default();
    Ok(match load(&state, id, consistency).await? {
        Some(rec) => doc_response(id, rec.value_ref()),
        None => doc_response(id, b"null"),
    })
}

/// `GET /api/cmd?id=N&cmd[query]=...&cmd[keys]...` (nested query parameters, percent-encoded brackets too).
pub async fn handle_cmd_get(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse> {
    let params = nested_query(req.query_string())?;
    run_cmd(&state, &params).await
}

/// `POST /api/cmd` with `{"id": N, "cmd": {"query": ..., "keys": ...}}`.
pub async fn handle_cmd_post(req: HttpRequest, body: web::Payload, state: web::Data<AppState>) -> Result<HttpResponse> {
    let body = read_body(&req, body, state.config.max_value_bytes).await?;
    let params = Value::Object(parse_json(&body)?);
    run_cmd(&state, &params).await
}

async fn run_cmd(state: &AppState, params: &Value) -> Result<HttpResponse> {
    let id = parse_id(params.get("id").ok_or_else(|| Error::BadRequest("missing id".into()))?)?;
    let cmd = params.get("cmd").ok_or_else(|| Error::BadRequest("missing cmd".into()))?;
    let query = match cmd.get("query") {
        Some(Value::String(q)) => q.as_str(),
        Some(other) => return Err(Error::BadRequest(format!("cmd.query must be a string, got {other}"))),
        None => return Err(Error::BadRequest("missing cmd.query".into())),
    };
    let keys = cmd.get("keys").unwrap_or(&Value::Null);
    // Validate the command before touching storage, so a bad command is a 400 whatever is stored.
    match query {
        "ONLY" | "FILTER_BOOL" => {}
        other => return Err(Error::BadRequest(format!("{other} not supported"))),
    }
    let data = match load(state, id, Consistency::Linearizable).await? {
        Some(rec) => serde_json::from_slice(rec.value_ref())
            .map_err(|e| Error::Internal(format!("stored document {id} is not JSON: {e}")))?,
        None => Value::Null,
    };
    let result = match query {
        "ONLY" => only(&data, keys)?,
        _ => filter_bool(&data, keys)?,
    };
    Ok(HttpResponse::Ok().content_type(JSON).body(result.to_string()))
}

/// `ONLY`: the values of the named fields, null where absent.
fn only(data: &Value, keys: &Value) -> Result<Value> {
    let Value::Array(keys) = keys else {
        return Err(Error::BadRequest("ONLY needs cmd.keys as a list of field names".into()));
    };
    let values = keys
        .iter()
        .map(|k| match k {
            Value::String(k) => Ok(data.get(k).cloned().unwrap_or(Value::Null)),
            other => Err(Error::BadRequest(format!("ONLY keys must be strings, got {other}"))),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(serde_json::json!({ "values": values }))
}

/// `FILTER_BOOL`: the elements of the list `data[key]` whose field `by` is `true`.
fn filter_bool(data: &Value, keys: &Value) -> Result<Value> {
    let (Some(Value::String(key)), Some(Value::String(by))) = (keys.get("key"), keys.get("by")) else {
        return Err(Error::BadRequest("FILTER_BOOL needs cmd.keys.key and cmd.keys.by as strings".into()));
    };
    match data.get(key) {
        Some(Value::Array(items)) => {
            Ok(Value::Array(items.iter().filter(|item| item.get(by) == Some(&Value::Bool(true))).cloned().collect()))
        }
        None if data.is_null() => Ok(Value::Array(Vec::new())),
        _ => Err(Error::BadRequest(format!("FILTER_BOOL: field {key:?} is not a list"))),
    }
}

/// Parses Phoenix/Rails nested query parameters into a JSON tree: `a[b]=1` -> `{"a":{"b":"1"}}`,
/// `a[]=x&a[]=y` -> `{"a":["x","y"]}`. Brackets may be percent-encoded (`%5B%5D`), as browsers send them.
pub fn nested_query(query: &str) -> Result<Value> {
    let mut root = Value::Object(Map::new());
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let (head, rest) = match name.find('[') {
            Some(i) => (&name[..i], &name[i..]),
            None => (&name[..], ""),
        };
        let mut path = vec![head.to_string()];
        let mut rest = rest;
        while let Some(stripped) = rest.strip_prefix('[') {
            let end = stripped
                .find(']')
                .ok_or_else(|| Error::BadRequest(format!("unbalanced brackets in query parameter {name:?}")))?;
            path.push(stripped[..end].to_string());
            rest = &stripped[end + 1..];
        }
        if !rest.is_empty() || path.len() > 5 {
            return Err(Error::BadRequest(format!("malformed query parameter {name:?}")));
        }
        insert_path(&mut root, &path, Value::String(value.into_owned()), &name)?;
    }
    Ok(root)
}

fn insert_path(node: &mut Value, path: &[String], value: Value, name: &str) -> Result<()> {
    let conflict = || Error::BadRequest(format!("query parameter {name:?} conflicts with another one"));
    let (seg, rest) = path.split_first().expect("path has at least the head segment");
    if seg.is_empty() {
        // `[]`: append to a list.
        let Value::Array(items) = node else { return Err(conflict()) };
        if rest.is_empty() {
            items.push(value);
            return Ok(());
        }
        let mut child = empty_for(&rest[0]);
        insert_path(&mut child, rest, value, name)?;
        items.push(child);
        return Ok(());
    }
    let Value::Object(map) = node else { return Err(conflict()) };
    if rest.is_empty() {
        map.insert(seg.clone(), value);
        return Ok(());
    }
    let child = map.entry(seg.clone()).or_insert_with(|| empty_for(&rest[0]));
    insert_path(child, rest, value, name)
}

fn empty_for(next: &str) -> Value {
    if next.is_empty() {
        Value::Array(Vec::new())
    } else {
        Value::Object(Map::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_query_forms() {
        let q = nested_query("id=7&cmd[query]=ONLY&cmd[keys][]=a&cmd[keys][]=b").unwrap();
        assert_eq!(q, json!({"id": "7", "cmd": {"query": "ONLY", "keys": ["a", "b"]}}));
        let q =
            nested_query("id=7&cmd%5Bquery%5D=FILTER_BOOL&cmd%5Bkeys%5D%5Bkey%5D=colors&cmd%5Bkeys%5D%5Bby%5D=is_blue")
                .unwrap();
        assert_eq!(q, json!({"id": "7", "cmd": {"query": "FILTER_BOOL", "keys": {"key": "colors", "by": "is_blue"}}}));
        assert!(nested_query("cmd[query=ONLY").is_err());
        assert!(nested_query("cmd[keys][]=a&cmd[keys][x]=b").is_err());
    }

    #[test]
    fn ids() {
        assert_eq!(parse_id(&json!(7)).unwrap(), 7);
        assert_eq!(parse_id(&json!("42")).unwrap(), 42);
        assert_eq!(parse_id(&json!(1230.0)).unwrap(), 1230);
        for bad in [
            json!(0),
            json!(-1),
            json!(1.5),
            json!("x"),
            json!("-3"),
            json!(""),
            json!(true),
            json!("99999999999999999999"),
        ] {
            assert!(parse_id(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn commands() {
        let data =
            json!({"a": 1, "colors": [{"n": "sky", "is_blue": true}, {"n": "sun", "is_blue": false}, {"n": "x"}]});
        assert_eq!(only(&data, &json!(["a", "zz"])).unwrap(), json!({"values": [1, null]}));
        assert_eq!(
            filter_bool(&data, &json!({"key": "colors", "by": "is_blue"})).unwrap(),
            json!([{"n": "sky", "is_blue": true}])
        );
        assert!(filter_bool(&data, &json!({"key": "a", "by": "is_blue"})).is_err());
        assert!(only(&data, &json!("a")).is_err());
    }
}
