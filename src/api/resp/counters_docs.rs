//! shale's own kinds over RESP, under module-style names that cannot clash with Redis commands:
//! `CTR.INCRBY name n` / `CTR.GET name` (the counters of `/counter/{name}`) and `DOC.ADD json` / `DOC.GET id`
//! (the documents of `/api`). Redis's `INCR` works on `/kv` values instead (see `strings`).

use bytes::Bytes;

use crate::command::{parse_i64_strict, Command, Reply, Space};
use crate::record::counter_value;
use crate::try_frame;

use super::frame::Frame;
use super::plan::{check_key, check_value, error_frame, integer_frame, unexpected, Plan};
use super::session::Session;

/// `CTR.INCRBY name n`: adds `n` to the counter (absent = 0) and answers the new value.
pub fn ctr_incrby(session: &mut Session, args: &[Bytes]) -> Plan {
    try_frame!(check_key(session, &args[1]));
    let Some(delta) = parse_i64_strict(&args[2]) else { return Plan::Now(Frame::not_integer()) };
    Plan::one(Command::CounterAdd { name: args[1].clone(), delta }, integer_frame)
}

/// `CTR.GET name`: the counter's value (0 when never written, as `GET /counter/{name}/value`).
pub fn ctr_get(session: &mut Session, args: &[Bytes]) -> Plan {
    try_frame!(check_key(session, &args[1]));
    Plan::one(Command::Read { space: Space::Counter, key: args[1].clone() }, |out| match out {
        Ok(Reply::Value(None)) => Frame::Integer(0),
        Ok(Reply::Value(Some(rec))) => match counter_value(&rec) {
            Some(n) => Frame::Integer(n),
            None => Frame::error("ERR internal: damaged counter record"),
        },
        Ok(other) => unexpected(other),
        Err(e) => error_frame(&e),
    })
}

/// `DOC.ADD json`: stores a JSON document under a new id (as `POST /api` with `"id": null`) and answers the id.
pub fn doc_add(session: &mut Session, args: &[Bytes]) -> Plan {
    try_frame!(check_value(session, &args[1]));
    let data = match serde_json::from_slice::<serde_json::Value>(&args[1]) {
        Ok(v) => Bytes::from(serde_json::to_vec(&v).expect("a JSON value always serializes")),
        Err(e) => return Plan::Now(Frame::error(format!("ERR the document is not JSON: {e}"))),
    };
    let node = session.shared.node.clone();
    Plan::Task(Box::pin(async move {
        match node.create_doc(data, None).await {
            Ok(id) => Frame::Integer(id as i64),
            Err(e) => error_frame(&e),
        }
    }))
}

/// `DOC.GET id`: the document's JSON, or nil.
pub fn doc_get(session: &mut Session, args: &[Bytes]) -> Plan {
    let id = std::str::from_utf8(&args[1]).ok().and_then(|s| s.parse::<u64>().ok()).filter(|&id| id > 0);
    let Some(id) = id else {
        return Plan::Now(Frame::error("ERR a document id is a positive integer"));
    };
    let node = session.shared.node.clone();
    Plan::Task(Box::pin(async move {
        match node.get(Space::Doc, Bytes::copy_from_slice(&id.to_be_bytes())).await {
            Ok(rec) => super::plan::value_frame(rec),
            Err(e) => error_frame(&e),
        }
    }))
}
