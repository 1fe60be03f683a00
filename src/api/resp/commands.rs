//! The one static command table: name, arity, flags, key positions and handler of every RESP command.
//!
//! The table drives dispatch (lookup by lower-case name), the arity error, authentication and read-only checks,
//! shard routing of `MULTI` (through the key positions) and the `COMMAND` replies, so these can never disagree.
//!
//! Handlers are in one file per family (`strings`, `keys`, `admin`, `counters_docs`, `dboutique`) and answer a
//! [`Plan`] (`plan.rs`); `COMMAND`, which describes this table, is answered here.

use bytes::Bytes;

use super::frame::Frame;
use super::plan::{Handler, Plan};
use super::session::Session;
use super::{admin, counters_docs, dboutique, keys, strings};

/// The command changes data (refused to read-only tokens; `COMMAND` flag `write`).
pub const WRITE: u16 = 1;
/// The command only reads data (`readonly`).
pub const READONLY: u16 = 1 << 1;
/// Constant-time-ish (`fast`).
pub const FAST: u16 = 1 << 2;
/// Allowed before `AUTH` (`no-auth`).
pub const NOAUTH: u16 = 1 << 3;
/// Refused inside `MULTI` (not one shard transaction: listings, flushes, connection state).
pub const NO_MULTI: u16 = 1 << 4;
/// Administrative (`admin`).
pub const ADMIN: u16 = 1 << 5;
/// Allowed while loading / stale (`loading`, `stale`): connection commands.
pub const LOADING: u16 = 1 << 6;

/// One command of the table.
pub struct Spec {
    /// Lower-case name.
    pub name: &'static str,
    /// Redis arity: the exact argument count including the name, or minus the minimum.
    pub arity: i32,
    /// `WRITE`, `READONLY`, ... (the constants above).
    pub flags: u16,
    /// Position of the first key (0 = no key).
    pub first_key: i32,
    /// Position of the last key (-1 = the last argument).
    pub last_key: i32,
    /// Distance between keys.
    pub step: i32,
    /// The handler.
    pub handler: Handler,
}

impl Spec {
    /// Whether `argc` arguments (with the name) fit the arity.
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i64;
        let arity = i64::from(self.arity);
        if arity >= 0 {
            argc == arity
        } else {
            argc >= -arity
        }
    }

    /// The keys among `args`, by the key positions.
    pub fn keys<'a>(&self, args: &'a [Bytes]) -> impl Iterator<Item = &'a Bytes> + 'a {
        let len = args.len() as i32;
        let first = self.first_key;
        let last = if self.last_key < 0 { len + self.last_key } else { self.last_key.min(len - 1) };
        let step = self.step.max(1);
        (0..)
            .map(move |i| first + i * step)
            .take_while(move |&p| first > 0 && p <= last)
            .filter_map(move |p| args.get(p as usize))
    }

    /// The `COMMAND` flag names.
    pub fn flag_names(&self) -> Vec<&'static str> {
        let names = [
            (WRITE, "write"),
            (READONLY, "readonly"),
            (FAST, "fast"),
            (NOAUTH, "no-auth"),
            (NO_MULTI, "no-multi"),
            (ADMIN, "admin"),
            (LOADING, "loading"),
            (LOADING, "stale"),
        ];
        names.iter().filter(|(bit, _)| self.flags & bit != 0).map(|&(_, n)| n).collect()
    }
}

const fn spec(name: &'static str, arity: i32, flags: u16, keys: (i32, i32, i32), handler: Handler) -> Spec {
    Spec { name, arity, flags, first_key: keys.0, last_key: keys.1, step: keys.2, handler }
}

const NONE: (i32, i32, i32) = (0, 0, 0);
const ONE: (i32, i32, i32) = (1, 1, 1);
const ALL: (i32, i32, i32) = (1, -1, 1);

/// Every command, sorted by name (binary search in [`lookup`]).
pub static TABLE: &[Spec] = &[
    spec("auth", -2, NOAUTH | FAST | LOADING | NO_MULTI, NONE, admin::auth),
    spec("client", -2, LOADING | NO_MULTI, NONE, admin::client),
    spec("command", -1, LOADING | NO_MULTI, NONE, command),
    spec("config", -2, ADMIN | LOADING | NO_MULTI, NONE, admin::config),
    spec("create", 2, WRITE | NO_MULTI, ONE, dboutique::create),
    spec("ctr.get", 2, READONLY | FAST, ONE, counters_docs::ctr_get),
    spec("ctr.incrby", 3, WRITE | FAST, ONE, counters_docs::ctr_incrby),
    spec("dbsize", 1, READONLY | FAST | NO_MULTI, NONE, keys::dbsize),
    spec("decr", 2, WRITE | FAST, ONE, strings::decr),
    spec("decrby", 3, WRITE | FAST, ONE, strings::decrby),
    spec("del", -2, WRITE, ALL, keys::del),
    spec("delete", 3, WRITE | NO_MULTI, NONE, dboutique::delete),
    spec("discard", 1, FAST | LOADING, NONE, admin::not_in_multi),
    spec("doc.add", 2, WRITE | NO_MULTI, NONE, counters_docs::doc_add),
    spec("doc.get", 2, READONLY | FAST | NO_MULTI, NONE, counters_docs::doc_get),
    spec("echo", 2, FAST, NONE, admin::echo),
    spec("exec", 1, LOADING, NONE, admin::not_in_multi),
    spec("exists", -2, READONLY | FAST, ALL, keys::exists),
    spec("flushall", -1, WRITE | NO_MULTI, NONE, keys::flushall),
    spec("flushdb", -1, WRITE | NO_MULTI, NONE, keys::flushdb),
    spec("function", -2, NO_MULTI, NONE, admin::function),
    spec("get", 2, READONLY | FAST, ONE, strings::get),
    spec("hello", -1, NOAUTH | FAST | LOADING | NO_MULTI, NONE, admin::hello),
    spec("incr", 2, WRITE | FAST, ONE, strings::incr),
    spec("incrby", 3, WRITE | FAST, ONE, strings::incrby),
    spec("info", -1, LOADING | NO_MULTI, NONE, admin::info),
    spec("keys", 2, READONLY | NO_MULTI, NONE, keys::keys),
    spec("mget", -2, READONLY | FAST, ALL, strings::mget),
    spec("mset", -3, WRITE, (1, -1, 2), strings::mset),
    spec("multi", 1, FAST | LOADING, NONE, admin::multi),
    spec("ping", -1, FAST | LOADING, NONE, admin::ping),
    spec("put", 4, WRITE | NO_MULTI, NONE, dboutique::put),
    spec("quit", -1, NOAUTH | FAST | LOADING, NONE, admin::quit),
    spec("readonly", 1, FAST | LOADING, NONE, admin::readonly),
    spec("readwrite", 1, FAST | LOADING, NONE, admin::readwrite),
    spec("scan", -2, READONLY | NO_MULTI, NONE, keys::scan),
    spec("select", 2, LOADING | FAST, NONE, admin::select),
    spec("set", -3, WRITE, ONE, strings::set),
    spec("type", 2, READONLY | FAST, ONE, keys::type_of),
];

/// The spec of command `name` (any case).
pub fn lookup(name: &[u8]) -> Option<&'static Spec> {
    if name.len() > 16 {
        return None;
    }
    let mut lower = [0u8; 16];
    let lower = &mut lower[..name.len()];
    lower.copy_from_slice(name);
    lower.make_ascii_lowercase();
    TABLE.binary_search_by(|s| s.name.as_bytes().cmp(lower)).ok().map(|i| &TABLE[i])
}

/// One `COMMAND` entry in Redis 7.0's format.
fn command_entry(spec: &Spec) -> Frame {
    Frame::Array(vec![
        Frame::bulk(spec.name),
        Frame::Integer(spec.arity.into()),
        Frame::Array(spec.flag_names().into_iter().map(Frame::simple).collect()),
        Frame::Integer(spec.first_key.into()),
        Frame::Integer(spec.last_key.into()),
        Frame::Integer(spec.step.into()),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
        Frame::Array(Vec::new()),
    ])
}

/// `COMMAND`, `COMMAND COUNT`, `COMMAND INFO name...`, `COMMAND LIST`; from the table.
pub fn command(_: &mut Session, args: &[Bytes]) -> Plan {
    let Some(sub) = args.get(1).map(|s| s.to_ascii_lowercase()) else {
        return Plan::Now(Frame::Array(TABLE.iter().map(command_entry).collect()));
    };
    Plan::Now(match &sub[..] {
        b"count" if args.len() == 2 => Frame::Integer(TABLE.len() as i64),
        b"info" => Frame::Array(args[2..].iter().map(|n| lookup(n).map_or(Frame::Null, command_entry)).collect()),
        b"list" if args.len() == 2 => Frame::Array(TABLE.iter().map(|s| Frame::bulk(s.name)).collect()),
        // DOCS stays an error until real docs exist: redis-cli then falls back to its built-in help.
        _ => Frame::unknown_subcommand(b"command", &args[1]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_lowercase_and_unique() {
        for pair in TABLE.windows(2) {
            assert!(pair[0].name < pair[1].name, "{} before {}", pair[0].name, pair[1].name);
        }
        for s in TABLE {
            assert_eq!(s.name, s.name.to_ascii_lowercase());
            assert!(s.name.len() <= 16);
            assert!(s.arity != 0);
        }
    }

    #[test]
    fn lookup_ignores_case() {
        assert_eq!(lookup(b"GeT").map(|s| s.name), Some("get"));
        assert_eq!(lookup(b"CTR.INCRBY").map(|s| s.name), Some("ctr.incrby"));
        assert!(lookup(b"nosuchcommand").is_none());
        assert!(lookup(b"averyveryverylongname").is_none());
    }

    #[test]
    fn key_positions() {
        let args = |v: &[&str]| v.iter().map(|s| Bytes::copy_from_slice(s.as_bytes())).collect::<Vec<_>>();
        let keys = |name: &str, a: &[Bytes]| lookup(name.as_bytes()).unwrap().keys(a).cloned().collect::<Vec<_>>();
        assert_eq!(keys("mset", &args(&["mset", "a", "1", "b", "2"])), args(&["a", "b"]));
        assert_eq!(keys("del", &args(&["del", "a", "b", "c"])), args(&["a", "b", "c"]));
        assert_eq!(keys("set", &args(&["set", "k", "v", "NX"])), args(&["k"]));
        assert!(keys("ping", &args(&["ping"])).is_empty());
    }

    #[test]
    fn arity() {
        let get = lookup(b"get").unwrap();
        assert!(!get.arity_ok(1) && get.arity_ok(2));
        let ping = lookup(b"ping").unwrap();
        assert!(ping.arity_ok(1) && ping.arity_ok(2) && ping.arity_ok(3), "PING's extra arguments are checked by it");
        let incr = lookup(b"incr").unwrap();
        assert!(!incr.arity_ok(3));
    }
}
