//! String commands on `/kv` values: GET, SET, the INCR family, MGET, MSET.
//!
//! A RESP key is the `/kv` key itself, so `SET a/b v` is what `GET /kv/a/b` returns over HTTP. Writes are shard
//! commands decided inside the shard's transaction (`SET NX`, `INCR` read-modify-write), so they are atomic
//! without any lock here. Multi-key commands send one sub-command per shard (`MSET`: a [`Command::Batch`] per
//! shard, atomic per shard only, as documented).

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::command::{parse_i64_strict, Command, Reply, SetCond, Space};
use crate::error::Error;
use crate::try_frame;

use super::frame::Frame;
use super::plan::{check_key, check_value, error_frame, integer_frame, read_frame, unexpected, Plan};
use super::session::Session;

/// `GET key` (D-Boutique's three-word `GET bucket key` is routed to `dboutique::get` by the connection).
pub fn get(session: &mut Session, args: &[Bytes]) -> Plan {
    try_frame!(check_key(session, &args[1]));
    Plan::one(Command::Read { space: Space::Kv, key: args[1].clone() }, read_frame)
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT t|PXAT t|KEEPTTL]`.
pub fn set(session: &mut Session, args: &[Bytes]) -> Plan {
    let (key, value) = (&args[1], &args[2]);
    try_frame!(check_key(session, key));
    try_frame!(check_value(session, value));
    let mut cond = SetCond::Always;
    let mut get_old = false;
    let mut i = 3;
    while i < args.len() {
        let word = args[i].to_ascii_uppercase();
        match &word[..] {
            b"NX" if cond == SetCond::Always => cond = SetCond::IfAbsent,
            b"XX" if cond == SetCond::Always => cond = SetCond::IfPresent,
            b"GET" => get_old = true,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" => {
                let Some(n) = args.get(i + 1) else { return Plan::Now(Frame::syntax_error()) };
                if parse_i64_strict(n).is_none_or(|n| n <= 0) {
                    return Plan::Now(Frame::error("ERR invalid expire time in 'set' command"));
                }
                return Plan::Now(expiry_unsupported());
            }
            b"KEEPTTL" => return Plan::Now(expiry_unsupported()),
            _ => return Plan::Now(Frame::syntax_error()),
        }
        i += 1;
    }
    let cmd = Command::Set { key: key.clone(), value: value.clone(), cond, get_old };
    Plan::one(cmd, move |out| match out {
        Ok(Reply::Set { written, old }) => match (get_old, written) {
            (true, _) => old.map_or(Frame::Null, Frame::Bulk),
            (false, true) => Frame::ok(),
            (false, false) => Frame::Null,
        },
        Ok(other) => unexpected(other),
        Err(e) => error_frame(&e),
    })
}

/// Keys do not expire in shale yet: an expiry option is refused, never silently dropped.
fn expiry_unsupported() -> Frame {
    Frame::error("ERR shale does not support key expiry yet (EX, PX, EXAT, PXAT, KEEPTTL); the key was not set")
}

/// `INCR key`.
pub fn incr(session: &mut Session, args: &[Bytes]) -> Plan {
    add(session, &args[1], 1)
}

/// `DECR key`.
pub fn decr(session: &mut Session, args: &[Bytes]) -> Plan {
    add(session, &args[1], -1)
}

/// `INCRBY key n`.
pub fn incrby(session: &mut Session, args: &[Bytes]) -> Plan {
    match parse_i64_strict(&args[2]) {
        Some(n) => add(session, &args[1], n),
        None => Plan::Now(Frame::not_integer()),
    }
}

/// `DECRBY key n`.
pub fn decrby(session: &mut Session, args: &[Bytes]) -> Plan {
    match parse_i64_strict(&args[2]) {
        Some(i64::MIN) => Plan::Now(Frame::error("ERR decrement would overflow")),
        Some(n) => add(session, &args[1], -n),
        None => Plan::Now(Frame::not_integer()),
    }
}

fn add(session: &Session, key: &Bytes, delta: i64) -> Plan {
    try_frame!(check_key(session, key));
    Plan::one(Command::KvIncr { key: key.clone(), delta }, integer_frame)
}

/// `MGET key...`: one read per key (cache hits answer at once).
pub fn mget(session: &mut Session, args: &[Bytes]) -> Plan {
    for key in &args[1..] {
        try_frame!(check_key(session, key));
    }
    let cmds = args[1..].iter().map(|k| Command::Read { space: Space::Kv, key: k.clone() }).collect();
    Plan::Ops(cmds, Box::new(|outs| Frame::Array(outs.into_iter().map(read_frame).collect())))
}

/// `MSET key value [key value ...]`: one batch per shard, each atomic on its own.
pub fn mset(session: &mut Session, args: &[Bytes]) -> Plan {
    if args.len() % 2 != 1 {
        return Plan::Now(Frame::wrong_arity("mset"));
    }
    let mut by_shard: BTreeMap<u32, Vec<Command>> = BTreeMap::new();
    for pair in args[1..].chunks(2) {
        try_frame!(check_key(session, &pair[0]));
        try_frame!(check_value(session, &pair[1]));
        let set = Command::Set { key: pair[0].clone(), value: pair[1].clone(), cond: SetCond::Always, get_old: false };
        by_shard.entry(session.node().shard_for(&pair[0]).0).or_default().push(set);
    }
    let cmds = by_shard.into_values().map(Command::Batch).collect();
    Plan::Ops(cmds, Box::new(|outs| first_error(outs).unwrap_or_else(Frame::ok)))
}

/// The first failure among `outs` (also inside batches) as a RESP error.
pub fn first_error(outs: Vec<Result<Reply, Error>>) -> Option<Frame> {
    outs.into_iter().find_map(|o| match o {
        Err(e) => Some(error_frame(&e)),
        Ok(Reply::Batch(inner)) => first_error(inner),
        Ok(_) => None,
    })
}
