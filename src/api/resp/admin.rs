//! Connection and server commands: PING, ECHO, QUIT, HELLO, AUTH, SELECT, CLIENT, INFO, CONFIG, COMMAND, and
//! MULTI (EXEC and DISCARD are handled by the connection, which owns the queue; outside a MULTI they are errors).

use bytes::Bytes;

use crate::command::{parse_i64_strict, Space};
use crate::config::Durability;
use crate::node::reads::Consistency;

use super::frame::{Frame, Proto};
use super::keys::glob_match;
use super::plan::{error_frame, Plan};
use super::session::{Multi, Session};

/// The Redis version shale reports (the command set and replies follow Redis 7.0).
pub const REDIS_VERSION: &str = "7.0.0";

/// `PING [message]`.
pub fn ping(_: &mut Session, args: &[Bytes]) -> Plan {
    Plan::Now(match args.len() {
        1 => Frame::simple("PONG"),
        2 => Frame::Bulk(args[1].clone()),
        _ => Frame::wrong_arity("ping"),
    })
}

/// `ECHO message`.
pub fn echo(_: &mut Session, args: &[Bytes]) -> Plan {
    Plan::Now(Frame::Bulk(args[1].clone()))
}

/// `QUIT`: `+OK`, then the connection closes.
pub fn quit(session: &mut Session, _: &[Bytes]) -> Plan {
    session.quitting = true;
    Plan::Close(Frame::ok())
}

/// `READONLY` (as in Redis Cluster): this connection's reads serve the local replica as it is, available without
/// a majority and possibly behind. A single node's reads are current either way.
pub fn readonly(session: &mut Session, _: &[Bytes]) -> Plan {
    session.consistency = Consistency::Stale;
    Plan::Now(Frame::ok())
}

/// `READWRITE`: undoes `READONLY`; reads are linearizable again.
pub fn readwrite(session: &mut Session, _: &[Bytes]) -> Plan {
    session.consistency = Consistency::Linearizable;
    Plan::Now(Frame::ok())
}

/// `AUTH [username] token`: shale's bearer tokens (the username, if any, is ignored).
pub fn auth(session: &mut Session, args: &[Bytes]) -> Plan {
    match args.len() {
        2 | 3 => Plan::Now(session.authenticate(&args[args.len() - 1])),
        _ => Plan::Now(Frame::syntax_error()),
    }
}

/// `HELLO [protover [AUTH username password] [SETNAME name]]`.
pub fn hello(session: &mut Session, args: &[Bytes]) -> Plan {
    let mut proto = session.proto;
    if let Some(v) = args.get(1) {
        proto = match parse_i64_strict(v) {
            Some(2) => Proto::Resp2,
            Some(3) => Proto::Resp3,
            Some(_) => return Plan::Now(Frame::error("NOPROTO unsupported protocol version")),
            None => return Plan::Now(Frame::error("ERR Protocol version is not an integer or out of range")),
        };
    }
    let mut name = None;
    let mut i = 2;
    while i < args.len() {
        match &args[i].to_ascii_uppercase()[..] {
            b"AUTH" if i + 2 < args.len() => {
                let reply = session.authenticate(&args[i + 2]);
                if reply.is_error() {
                    return Plan::Now(reply);
                }
                i += 3;
            }
            b"SETNAME" if i + 1 < args.len() => {
                if let Err(e) = check_client_name(&args[i + 1]) {
                    return Plan::Now(e);
                }
                name = Some(args[i + 1].clone());
                i += 2;
            }
            _ => {
                let option = String::from_utf8_lossy(&args[i]).into_owned();
                return Plan::Now(Frame::error(format!("ERR Syntax error in HELLO option '{option}'")));
            }
        }
    }
    if !session.authenticated() {
        return Plan::Now(Frame::noauth());
    }
    session.proto = proto;
    if name.is_some() {
        session.name = name;
    }
    let text = |s: &str| Frame::bulk(Bytes::copy_from_slice(s.as_bytes()));
    Plan::Now(Frame::Map(vec![
        (text("server"), text("redis")),
        (text("version"), text(REDIS_VERSION)),
        (text("proto"), Frame::Integer(if proto == Proto::Resp3 { 3 } else { 2 })),
        (text("id"), Frame::Integer(session.id as i64)),
        (text("mode"), text("standalone")),
        (text("role"), text("master")),
        (text("modules"), Frame::Array(Vec::new())),
    ]))
}

/// `SELECT index`: shale has one database, 0.
pub fn select(_: &mut Session, args: &[Bytes]) -> Plan {
    Plan::Now(match parse_i64_strict(&args[1]) {
        Some(0) => Frame::ok(),
        Some(_) => Frame::error("ERR DB index is out of range"),
        None => Frame::not_integer(),
    })
}

fn check_client_name(name: &[u8]) -> Result<(), Frame> {
    if name.iter().any(|&b| !(b'!'..=b'~').contains(&b)) {
        return Err(Frame::error("ERR Client names cannot contain spaces, newlines or special characters."));
    }
    Ok(())
}

/// `CLIENT SETNAME|GETNAME|ID|SETINFO ...`.
pub fn client(session: &mut Session, args: &[Bytes]) -> Plan {
    let sub = args[1].to_ascii_lowercase();
    let arity = |n: usize| args.len() == n;
    Plan::Now(match &sub[..] {
        b"setname" if arity(3) => match check_client_name(&args[2]) {
            Ok(()) => {
                session.name = (!args[2].is_empty()).then(|| args[2].clone());
                Frame::ok()
            }
            Err(e) => e,
        },
        b"getname" if arity(2) => session.name.clone().map_or(Frame::Null, Frame::Bulk),
        b"id" if arity(2) => Frame::Integer(session.id as i64),
        // Client libraries announce themselves; shale has nothing to record yet.
        b"setinfo" if arity(4) => Frame::ok(),
        b"setname" | b"getname" | b"id" | b"setinfo" => {
            Frame::wrong_arity(&format!("client|{}", String::from_utf8_lossy(&sub)))
        }
        _ => Frame::unknown_subcommand(b"client", &args[1]),
    })
}

/// `MULTI`: starts queueing (the connection queues what follows until EXEC or DISCARD).
pub fn multi(session: &mut Session, _: &[Bytes]) -> Plan {
    session.multi = Some(Multi::default());
    Plan::Now(Frame::ok())
}

/// `EXEC` / `DISCARD` outside a MULTI.
pub fn not_in_multi(_: &mut Session, args: &[Bytes]) -> Plan {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
    Plan::Now(Frame::error(format!("ERR {name} without MULTI")))
}

/// `CONFIG GET pattern...` (read-only answers describing shale in Redis's terms); `CONFIG SET` is refused.
pub fn config(session: &mut Session, args: &[Bytes]) -> Plan {
    let sub = args[1].to_ascii_lowercase();
    match &sub[..] {
        b"get" if args.len() >= 3 => {
            let c = &session.shared.config;
            let fsync = match c.durability {
                Durability::Immediate => "always",
                Durability::Eventual => "everysec",
            };
            let values = [
                ("appendfsync", fsync.to_string()),
                ("appendonly", "yes".into()),
                ("bind", c.host.clone()),
                ("databases", "1".into()),
                ("maxclients", c.resp_max_clients.to_string()),
                ("maxmemory", c.cache_bytes.to_string()),
                ("port", session.shared.port.to_string()),
                ("proto-max-bulk-len", c.max_value_bytes.to_string()),
                ("save", String::new()),
                ("timeout", "0".into()),
            ];
            let mut pairs = Vec::new();
            for (name, value) in values {
                if args[2..].iter().any(|p| glob_match(&p.to_ascii_lowercase(), name.as_bytes())) {
                    pairs.push((Frame::bulk(name), Frame::bulk(value)));
                }
            }
            Plan::Now(Frame::Map(pairs))
        }
        b"set" if args.len() >= 4 => {
            let option = String::from_utf8_lossy(&args[2]).into_owned();
            Plan::Now(Frame::error(format!(
                "ERR Unknown option or number of arguments for CONFIG SET - '{option}' (shale's settings are \
                 flags and environment variables, read at start-up)"
            )))
        }
        b"get" | b"set" => Plan::Now(Frame::wrong_arity(&format!("config|{}", String::from_utf8_lossy(&sub)))),
        _ => Plan::Now(Frame::unknown_subcommand(b"config", &args[1])),
    }
}

/// `INFO [section...]`: server, clients, persistence and keyspace, in Redis's `field:value` text.
pub fn info(session: &mut Session, args: &[Bytes]) -> Plan {
    let wanted: Vec<Vec<u8>> = args[1..].iter().map(|a| a.to_ascii_lowercase()).collect();
    let shared = session.shared.clone();
    Plan::Task(Box::pin(async move {
        // INFO reports this replica as it is.
        let keys = match shared.node.count(Space::Kv, Consistency::Stale).await {
            Ok(n) => n,
            Err(e) => return error_frame(&e),
        };
        let show = |section: &str| {
            wanted.is_empty()
                || wanted
                    .iter()
                    .any(|w| w == b"all" || w == b"everything" || w == b"default" || w == section.as_bytes())
        };
        let uptime = shared.started.elapsed().as_secs();
        let mut text = String::new();
        if show("server") {
            text += &format!(
                "# Server\r\nredis_version:{REDIS_VERSION}\r\nshale_version:{}\r\nredis_mode:standalone\r\n\
                 os:{}\r\narch_bits:64\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{uptime}\r\n\
                 uptime_in_days:{}\r\n\r\n",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::OS,
                std::process::id(),
                shared.port,
                uptime / 86_400,
            );
        }
        if show("clients") {
            let clients = shared.clients.load(std::sync::atomic::Ordering::Relaxed);
            text += &format!(
                "# Clients\r\nconnected_clients:{clients}\r\nmaxclients:{}\r\n\r\n",
                shared.config.resp_max_clients
            );
        }
        if show("persistence") {
            let durability = match shared.config.durability {
                Durability::Immediate => "immediate",
                Durability::Eventual => "eventual",
            };
            text += &format!(
                "# Persistence\r\nloading:0\r\naof_enabled:1\r\nshale_durability:{durability}\r\nshale_shards:{}\r\n\r\n",
                shared.node.shard_count()
            );
        }
        if show("keyspace") {
            text += "# Keyspace\r\n";
            if keys > 0 {
                text += &format!("db0:keys={keys},expires=0,avg_ttl=0\r\n");
            }
        }
        Frame::Verbatim(text)
    }))
}

/// `FUNCTION FLUSH [ASYNC|SYNC]` and `FUNCTION LIST`: shale runs no server-side functions, so there is never one
/// to flush or list (Redis's test suite flushes functions before every block).
pub fn function(_: &mut Session, args: &[Bytes]) -> Plan {
    let sub = args[1].to_ascii_lowercase();
    Plan::Now(match &sub[..] {
        b"flush" => match args.get(2).map(|m| m.to_ascii_uppercase()) {
            None => Frame::ok(),
            Some(m) if (m == b"ASYNC" || m == b"SYNC") && args.len() == 3 => Frame::ok(),
            Some(_) => Frame::syntax_error(),
        },
        b"list" => Frame::Array(Vec::new()),
        _ => Frame::unknown_subcommand(b"function", &args[1]),
    })
}
