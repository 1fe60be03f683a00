//! End-to-end tests of the Redis-protocol listener, over real sockets with a minimal blocking RESP client
//! (`tests/common/resp.rs`): pipelining and read-your-writes, exact replies and error texts, protocol errors and
//! the HTTP guard, MULTI/EXEC atomicity (also across a failed commit), no uncommitted read ever leaking, HTTP and
//! RESP seeing the same data, D-Boutique's inline verbs, SCAN, the KEYS cap, AUTH, FLUSHDB, a graceful stop
//! mid-pipeline and durability across `kill -9` of the real binary, RESP over TLS, and shale's counters and
//! documents over RESP. Redis clients must get Redis's replies, and RESP must keep the same guarantees as HTTP.
//!
//! Every server is in-process ([`TestServer`] with `RespPort::Any`) except the two stop tests, which stop the
//! real binary. Every read has a timeout (a hang fails), every loop is bounded.

mod common;
#[path = "common/resp.rs"]
mod resp_client;

use std::collections::{BTreeSet, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client, temp_dir, wait_ready, Shale, TestServer};
use resp_client::{command, Resp, RespClient, READ_TIMEOUT};
use shale::config::RespPort;
use shale::Config;

// ---- helpers ----

/// A test configuration with the RESP listener on a free port.
fn resp_config(dir: &Path) -> Config {
    Config { resp_port: RespPort::Any, ..Config::for_test(dir) }
}

/// A new RESP connection to an in-process server.
fn connect(server: &TestServer) -> RespClient {
    RespClient::connect(server.resp_addr.expect("the RESP listener is on"))
}

/// A port that was free a moment ago (for the binary's `RESP_PORT`).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a probe port");
    listener.local_addr().expect("the probe's address").port()
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `/kv/<key>` with every byte but unreserved ones, `/` and `:` percent-encoded (hash tags hold braces).
fn kv_path(key: &str) -> String {
    let mut path = String::from("/kv/");
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:".contains(&b) {
            path.push(b as char);
        } else {
            path.push_str(&format!("%{b:02X}"));
        }
    }
    path
}

/// A status, ETag and body of one HTTP answer.
#[derive(Debug)]
struct HttpReply {
    status: u16,
    etag: Option<String>,
    body: Vec<u8>,
}

/// Blocking HTTP for these (synchronous) tests: one current-thread runtime and one client, used only through it.
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    fn new() -> Http {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("building a runtime");
        let client = {
            let _guard = rt.enter();
            client()
        };
        Http { rt, client }
    }

    fn send(&self, req: reqwest::RequestBuilder) -> HttpReply {
        self.rt.block_on(async {
            let res = req.send().await.expect("sending an HTTP request");
            let status = res.status().as_u16();
            let etag = res.headers().get("etag").map(|v| v.to_str().expect("an ASCII ETag").to_string());
            let body = res.bytes().await.expect("reading an HTTP body").to_vec();
            HttpReply { status, etag, body }
        })
    }

    fn get(&self, url: &str) -> HttpReply {
        self.send(self.client.get(url))
    }

    fn put(&self, url: &str, body: &[u8]) -> HttpReply {
        self.send(self.client.put(url).body(body.to_vec()))
    }

    fn post(&self, url: &str, body: &[u8]) -> HttpReply {
        self.send(self.client.post(url).body(body.to_vec()).header("content-type", "application/json"))
    }

    fn wait_ready(&self, base: &str) {
        self.rt.block_on(wait_ready(base));
    }
}

/// Writes `bytes` from another thread while `c` reads `n` replies (a large pipeline must not deadlock on full
/// socket buffers), and returns the replies.
fn pipeline(c: &mut RespClient, bytes: Vec<u8>, n: usize) -> Vec<Resp> {
    let mut w = c.writer();
    let writer = std::thread::spawn(move || w.write_all(&bytes));
    let replies = c.read_n(n);
    writer.join().expect("the writer thread").expect("writing the pipeline");
    replies
}

/// The index and value of the first reply that differs from `want(i)`, for a readable assertion message.
fn first_mismatch(replies: &[Resp], want: impl Fn(usize) -> Resp) -> Option<(usize, Resp, Resp)> {
    replies.iter().enumerate().find(|(i, r)| **r != want(*i)).map(|(i, r)| (i, r.clone(), want(i)))
}

fn not_integer() -> Resp {
    Resp::err("ERR value is not an integer or out of range")
}

fn overflow() -> Resp {
    Resp::err("ERR increment or decrement would overflow")
}

fn syntax() -> Resp {
    Resp::err("ERR syntax error")
}

fn arity(name: &str) -> Resp {
    Resp::Error(format!("ERR wrong number of arguments for '{name}' command"))
}

/// Checks a list of (command, expected reply) on one connection, in order.
fn expect_all(c: &mut RespClient, cases: &[(&[&str], Resp)]) {
    for (args, want) in cases {
        assert_eq!(&c.cmd(args), want, "{args:?}");
    }
}

/// A key with hash tag `{tag}` whose shard differs from `other`'s.
fn key_on_other_shard(server: &TestServer, other: &str) -> String {
    let node = server.node();
    let shard = node.shard_for(other.as_bytes());
    (0..1000)
        .map(|i| format!("{{far{i}}}k"))
        .find(|k| node.shard_for(k.as_bytes()) != shard)
        .expect("some tag lands on another of the four shards")
}

// ---- 1. pipelining and read-your-writes ----

/// 200 pipelines of `SET; GET; INCR; INCR; GET`, each sent in one write, answer every command exactly and in
/// order, twice (the second round overwrites: a GET served from the cache's older value would show it). Then
/// 5,000 SETs in one write, 5,000 GETs in one write, and 2,000 alternating `SET k new; GET k` in one write: far
/// past the connection's in-flight cap, still every reply in order.
#[test]
fn pipelines_answer_in_order_and_read_their_own_writes() {
    let dir = temp_dir();
    let server = TestServer::start(resp_config(dir.path()));
    let mut c = connect(&server);
    let started = Instant::now();
    for round in 0..2 {
        for i in 0..200 {
            let (k, n, v) = (format!("k{i}"), format!("n{i}"), format!("v{i}-round{round}"));
            let mut p = command(&["SET", &k, &v]);
            p.extend(command(&["GET", &k]));
            p.extend(command(&["INCR", &n]));
            p.extend(command(&["INCR", &n]));
            p.extend(command(&["GET", &n]));
            c.send(&p);
            let base = round * 2;
            let want = vec![
                Resp::ok(),
                Resp::bulk(&v),
                Resp::Int(base + 1),
                Resp::Int(base + 2),
                Resp::bulk((base + 2).to_string()),
            ];
            assert_eq!(c.read_n(5), want, "round {round}, pipeline {i}");
        }
    }
    println!("400 pipelines of 5 commands: {:?}", started.elapsed());

    let started = Instant::now();
    let sets: Vec<u8> = (0..5000).flat_map(|i| command(&["SET", &format!("big:{i}"), &format!("value-{i}")])).collect();
    let replies = pipeline(&mut c, sets, 5000);
    assert_eq!(first_mismatch(&replies, |_| Resp::ok()), None, "5000 pipelined SETs");
    let gets: Vec<u8> = (0..5000).flat_map(|i| command(&["GET", &format!("big:{i}")])).collect();
    let replies = pipeline(&mut c, gets, 5000);
    assert_eq!(first_mismatch(&replies, |i| Resp::bulk(format!("value-{i}"))), None, "5000 pipelined GETs");
    let mixed: Vec<u8> = (0..1000)
        .flat_map(|i| {
            let mut p = command(&["SET", &format!("big:{i}"), &format!("new-{i}")]);
            p.extend(command(&["GET", &format!("big:{i}")]));
            p
        })
        .collect();
    let replies = pipeline(&mut c, mixed, 2000);
    let want = |i: usize| if i.is_multiple_of(2) { Resp::ok() } else { Resp::bulk(format!("new-{}", i / 2)) };
    assert_eq!(first_mismatch(&replies, want), None, "1000 pipelined SET;GET pairs over cached keys");
    println!("5000 SETs + 5000 GETs + 2000 SET/GET in 3 pipelines: {:?}", started.elapsed());
    // The connection is still in step: one more round trip.
    assert_eq!(c.cmd(&["PING"]), Resp::simple("PONG"));
}

/// A pipeline longer than the in-flight limit, arriving in one read: once the limit is reached and every reply is
/// ready at once, the commands still in the read buffer must be served without waiting for more input (the client
/// has none to send). The write in front keeps replies waiting, so the connection does reach its limit.
#[test]
fn a_pipeline_past_the_in_flight_limit_is_answered_whole() {
    let dir = temp_dir();
    let server = TestServer::start(resp_config(dir.path()));
    let mut c = connect(&server);
    let pings = shale::api::resp::conn::MAX_IN_FLIGHT + 100;
    for round in 0..3 {
        let mut p = command(&["SET", "front", &format!("round{round}")]);
        (0..pings).for_each(|_| p.extend(command(&["PING"])));
        c.send(&p);
        let replies = c.read_n(1 + pings);
        assert_eq!(replies[0], Resp::ok(), "round {round}");
        assert_eq!(first_mismatch(&replies[1..], |_| Resp::simple("PONG")), None, "round {round}");
    }
    assert_eq!(c.cmd(&["GET", "front"]), Resp::bulk("round2"));
}

// ---- 2. exact replies and errors ----

/// Redis 7.0's exact replies and error texts for the supported commands, in RESP2 then RESP3.
#[test]
fn replies_and_errors_match_redis() {
    let dir = temp_dir();
    let server = TestServer::start(resp_config(dir.path()));
    let mut c = connect(&server);
    let nil = Resp::Nil;
    expect_all(
        &mut c,
        &[
            (&["FOO", "a", "b"], Resp::err("ERR unknown command 'FOO', with args beginning with: 'a' 'b' ")),
            (&["nosuch"], Resp::err("ERR unknown command 'nosuch', with args beginning with: ")),
            (&["GET"], arity("get")),
            (&["PING", "a", "b", "c"], arity("ping")),
            (&["PING"], Resp::simple("PONG")),
            (&["PING", "hi"], Resp::bulk("hi")),
            (&["ECHO", "hello world"], Resp::bulk("hello world")),
            (&["ECHO"], arity("echo")),
            // SET with NX / XX / GET.
            (&["SET", "s", "v1", "NX"], Resp::ok()),
            (&["SET", "s", "v2", "NX"], nil.clone()),
            (&["GET", "s"], Resp::bulk("v1")),
            (&["SET", "s", "v3", "XX"], Resp::ok()),
            (&["SET", "absent", "v", "XX"], nil.clone()),
            (&["GET", "absent"], nil.clone()),
            (&["SET", "s", "v4", "GET"], Resp::bulk("v3")),
            (&["SET", "fresh", "f", "GET"], nil.clone()),
            (&["GET", "fresh"], Resp::bulk("f")),
            (&["SET", "s", "v5", "NX", "GET"], Resp::bulk("v4")),
            (&["GET", "s"], Resp::bulk("v4")),
            (&["SET", "s", "v6", "XX", "GET"], Resp::bulk("v4")),
            (&["GET", "s"], Resp::bulk("v6")),
            (&["SET", "s", "v", "NX", "XX"], syntax()),
            (&["SET", "s", "v", "BOGUS"], syntax()),
            (&["SET", "s"], arity("set")),
            // Expiry: refused, never silently dropped; Redis's own checks first.
            (&["SET", "ex", "v", "EX", "0"], Resp::err("ERR invalid expire time in 'set' command")),
            (&["SET", "ex", "v", "EX"], syntax()),
            // INCR family with Redis's strict integers.
            (&["SET", "str", "abc"], Resp::ok()),
            (&["INCR", "str"], not_integer()),
            (&["SET", "z", "05"], Resp::ok()),
            (&["INCR", "z"], not_integer()),
            (&["GET", "z"], Resp::bulk("05")),
            (&["SET", "max", "9223372036854775807"], Resp::ok()),
            (&["INCR", "max"], overflow()),
            (&["INCRBY", "max", "1"], overflow()),
            (&["GET", "max"], Resp::bulk("9223372036854775807")),
            (&["SET", "min", "-9223372036854775808"], Resp::ok()),
            (&["DECR", "min"], overflow()),
            (&["DECRBY", "nokey", "-9223372036854775808"], Resp::err("ERR decrement would overflow")),
            (&["INCRBY", "ctr", "5"], Resp::Int(5)),
            (&["DECRBY", "ctr", "2"], Resp::Int(3)),
            (&["DECR", "ctr"], Resp::Int(2)),
            (&["INCRBY", "ctr", "+1"], not_integer()),
            (&["INCRBY", "ctr", "05"], not_integer()),
            (&["INCRBY", "ctr", "x"], not_integer()),
            (&["GET", "ctr"], Resp::bulk("2")),
            // SELECT.
            (&["SELECT", "0"], Resp::ok()),
            (&["SELECT", "1"], Resp::err("ERR DB index is out of range")),
            (&["SELECT", "x"], not_integer()),
            // TYPE, EXISTS, DEL.
            (&["TYPE", "s"], Resp::simple("string")),
            (&["TYPE", "nokey"], Resp::simple("none")),
            (&["EXISTS", "s", "s", "nokey"], Resp::Int(2)),
            (&["SET", "d1", "1"], Resp::ok()),
            (&["SET", "d2", "2"], Resp::ok()),
            (&["DEL", "d1", "d2", "d3", "d1"], Resp::Int(2)),
            (&["EXISTS", "d1", "d2"], Resp::Int(0)),
            // MGET, MSET.
            (&["MGET", "s", "nokey", "fresh"], Resp::Array(vec![Resp::bulk("v6"), nil.clone(), Resp::bulk("f")])),
            (&["MSET", "m1", "1", "m2"], arity("mset")),
            (&["MSET", "m1", "1", "m2", "2"], Resp::ok()),
            (&["MGET", "m1", "m2"], Resp::Array(vec![Resp::bulk("1"), Resp::bulk("2")])),
            (&["KEYS", "m[0-9]"], Resp::Array(vec![Resp::bulk("m1"), Resp::bulk("m2")])),
        ],
    );
    // The expiry refusal left the key unset (SET ... EX is an error until TTLs exist).
    for opts in [&["EX", "10"][..], &["PX", "100"], &["EXAT", "99999999999"], &["PXAT", "99999999999999"], &["KEEPTTL"]]
    {
        let mut args = vec!["SET", "ex", "v"];
        args.extend_from_slice(opts);
        let reply = c.cmd(&args);
        let text = reply.error_text().unwrap_or_else(|| panic!("SET {opts:?} answered {reply:?}, not an error"));
        assert!(text.starts_with("ERR ") && text.to_ascii_lowercase().contains("expir"), "SET {opts:?}: {text}");
        assert_eq!(c.cmd(&["GET", "ex"]), Resp::Nil, "SET {opts:?} must not set the key");
    }
    // DBSIZE and KEYS agree with the keys written above.
    let live: BTreeSet<&str> = ["s", "fresh", "str", "z", "max", "min", "ctr", "m1", "m2"].into();
    let keys = c.cmd(&["KEYS", "*"]);
    let keys: BTreeSet<String> = keys.array().iter().map(Resp::text).collect();
    assert_eq!(keys, live.iter().map(|k| k.to_string()).collect());
    assert_eq!(c.cmd(&["DBSIZE"]), Resp::Int(live.len() as i64));

    // CLIENT, CONFIG, COMMAND, INFO.
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), Resp::Nil);
    assert_eq!(c.cmd(&["CLIENT", "SETNAME", "conn-1"]), Resp::ok());
    assert_eq!(c.cmd(&["CLIENT", "GETNAME"]), Resp::bulk("conn-1"));
    assert_eq!(
        c.cmd(&["CLIENT", "SETNAME", "has space"]),
        Resp::err("ERR Client names cannot contain spaces, newlines or special characters.")
    );
    let Resp::Int(id) = c.cmd(&["CLIENT", "ID"]) else { panic!("CLIENT ID is an integer") };
    assert!(id > 0);
    assert_eq!(c.cmd(&["CLIENT", "NOPE"]), Resp::err("ERR unknown subcommand 'NOPE'. Try CLIENT HELP."));
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "appendfsync"]),
        Resp::Array(vec![Resp::bulk("appendfsync"), Resp::bulk("always")])
    );
    assert_eq!(c.cmd(&["CONFIG", "GET", "nosuchoption"]), Resp::Array(vec![]));
    let Resp::Int(count) = c.cmd(&["COMMAND", "COUNT"]) else { panic!("COMMAND COUNT is an integer") };
    let all = c.cmd(&["COMMAND"]);
    assert_eq!(all.array().len() as i64, count, "COMMAND COUNT vs COMMAND");
    let names: HashSet<String> = all.array().iter().map(|e| e.array()[0].text()).collect();
    for name in ["get", "set", "incr", "scan", "multi", "exec", "ctr.incrby", "doc.add"] {
        assert!(names.contains(name), "COMMAND lists {name}");
    }
    let get_info = c.cmd(&["COMMAND", "INFO", "get"]);
    assert_eq!(get_info.array()[0].array()[..2], [Resp::bulk("get"), Resp::Int(2)], "{get_info:?}");
    assert_eq!(c.cmd(&["COMMAND", "DOCS"]), Resp::err("ERR unknown subcommand 'DOCS'. Try COMMAND HELP."));
    let info = c.cmd(&["INFO"]);
    assert!(matches!(info, Resp::Bulk(_)), "INFO is a bulk string in RESP2: {info:?}");
    let info = info.text();
    assert!(info.contains("redis_version:"), "{info}");
    assert!(info.contains(&format!("db0:keys={},", live.len())), "{info}");

    // HELLO: RESP2 answers a flat array; RESP3 a map, and then nil is `_`, maps are `%`, INFO is verbatim.
    assert_eq!(c.cmd(&["GET", "nokey"]), Resp::Nil);
    let hello2 = c.cmd(&["HELLO", "2"]);
    assert_eq!(hello2.array().len(), 14, "{hello2:?}");
    assert_eq!(hello2.array()[4..6], [Resp::bulk("proto"), Resp::Int(2)]);
    let Resp::Map(hello3) = c.cmd(&["HELLO", "3"]) else { panic!("HELLO 3 answers a RESP3 map") };
    assert_eq!(hello3.len(), 7, "{hello3:?}");
    let field = |name: &str| hello3.iter().find(|(k, _)| *k == Resp::bulk(name)).map(|(_, v)| v.clone());
    assert_eq!(field("server"), Some(Resp::bulk("redis")));
    assert_eq!(field("proto"), Some(Resp::Int(3)));
    assert_eq!(field("id"), Some(Resp::Int(id)), "HELLO's id is CLIENT ID's");
    assert!(field("version").is_some() && field("mode").is_some() && field("role").is_some());
    assert_eq!(c.cmd(&["GET", "nokey"]), Resp::Null, "RESP3 nil is `_`");
    assert_eq!(
        c.cmd(&["CONFIG", "GET", "appendfsync"]),
        Resp::Map(vec![(Resp::bulk("appendfsync"), Resp::bulk("always"))])
    );
    let info = c.cmd(&["INFO", "server"]);
    assert!(matches!(&info, Resp::Verbatim(f, t) if f == "txt" && t.starts_with(b"# Server")), "{info:?}");
    assert_eq!(c.cmd(&["HELLO", "4"]), Resp::err("NOPROTO unsupported protocol version"));
    assert_eq!(c.cmd(&["GET", "nokey"]), Resp::Null, "a refused HELLO keeps RESP3");
    assert_eq!(c.cmd(&["QUIT"]), Resp::ok());
    c.expect_closed();

    // QUIT drops the rest of the pipeline.
    let mut c = connect(&server);
    c.send(b"PING\r\nQUIT\r\nSET after-quit 1\r\nPING\r\n");
    assert_eq!(c.read(), Resp::simple("PONG"));
    assert_eq!(c.read(), Resp::ok());
    c.expect_closed();
    assert_eq!(connect(&server).cmd(&["EXISTS", "after-quit"]), Resp::Int(0), "a command after QUIT ran");
}

// ---- 3. protocol errors ----

/// A bad frame: the replies of the commands before it first, then Redis's protocol error, then the close. An
/// HTTP request on the RESP port closes the connection without any reply.
#[test]
fn protocol_errors_reply_then_close_and_http_is_refused() {
    let dir = temp_dir();
    let server = TestServer::start(resp_config(dir.path()));

    let mut c = connect(&server);
    let mut p = command(&["PING"]);
    p.extend(command(&["SET", "before-error", "1"]));
    p.extend(b"*1\r\n$abc\r\n");
    c.send(&p);
    assert_eq!(c.read(), Resp::simple("PONG"));
    assert_eq!(c.read(), Resp::ok());
    assert_eq!(c.read(), Resp::err("ERR Protocol error: invalid bulk length"));
    c.expect_closed();
    assert_eq!(connect(&server).cmd(&["GET", "before-error"]), Resp::bulk("1"));

    let cases: [(&[u8], &str); 3] = [
        (b"*abc\r\n", "ERR Protocol error: invalid multibulk length"),
        (b"*1\r\n*1\r\n$4\r\nPING\r\n", "ERR Protocol error: expected '$', got '*'"),
        (b"*1\r\n$-5\r\n", "ERR Protocol error: invalid bulk length"),
    ];
    for (input, error) in cases {
        let mut c = connect(&server);
        assert_eq!(c.cmd(&["PING"]), Resp::simple("PONG"));
        c.send(input);
        assert_eq!(c.read(), Resp::err(error), "{:?}", String::from_utf8_lossy(input));
        c.expect_closed();
    }

    let http: [&[u8]; 3] = [
        b"POST / HTTP/1.1\r\n",
        b"POST /kv/x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\n\r\nx",
        b"Host: localhost\r\n",
    ];
    for input in http {
        let mut c = connect(&server);
        c.send(input);
        c.expect_closed();
    }
    // After a PING that was answered, the guard still closes without a reply.
    let mut c = connect(&server);
    assert_eq!(c.cmd(&["PING"]), Resp::simple("PONG"));
    c.send(b"POST / HTTP/1.1\r\n");
    c.expect_closed();
}

// ---- 4. MULTI / EXEC ----

/// MULTI/EXEC with Redis's replies: one shard's keys (hash tags) run together, a failing command fails alone,
/// cross-shard keys and unknown commands abort at EXEC, nesting and stray EXEC/DISCARD are errors, DISCARD drops
/// the queue; and a failed commit stores none of the transaction's writes.
#[test]
fn multi_exec_is_atomic_on_one_shard() {
    let dir = temp_dir();
    let server = TestServer::start(resp_config(dir.path()));
    let http = Http::new();
    let mut c = connect(&server);

    let queued = || Resp::simple("QUEUED");
    expect_all(
        &mut c,
        &[
            (&["MULTI"], Resp::ok()),
            (&["SET", "{t}a", "1"], queued()),
            (&["INCR", "{t}b"], queued()),
            (&["GET", "{t}a"], queued()),
            (&["EXEC"], Resp::Array(vec![Resp::ok(), Resp::Int(1), Resp::bulk("1")])),
        ],
    );
    let mut other = connect(&server);
    assert_eq!(other.cmd(&["MGET", "{t}a", "{t}b"]), Resp::Array(vec![Resp::bulk("1"), Resp::bulk("1")]));

    // A command that fails inside EXEC fails alone (Redis does not roll back).
    expect_all(
        &mut c,
        &[
            (&["MULTI"], Resp::ok()),
            (&["SET", "{t}s", "abc"], queued()),
            (&["INCR", "{t}s"], queued()),
            (&["SET", "{t}c", "3"], queued()),
            (&["EXEC"], Resp::Array(vec![Resp::ok(), not_integer(), Resp::ok()])),
            (&["MGET", "{t}s", "{t}c"], Resp::Array(vec![Resp::bulk("abc"), Resp::bulk("3")])),
        ],
    );

    // Keys on two shards: CROSSSLOT at queue time, EXECABORT at EXEC, nothing stored.
    let far = key_on_other_shard(&server, "{t}x");
    expect_all(
        &mut c,
        &[
            (&["MULTI"], Resp::ok()),
            (&["SET", "{t}x", "1"], queued()),
            (&["SET", &far, "1"], Resp::err("CROSSSLOT Keys in request don't hash to the same slot")),
            (&["EXEC"], Resp::err("EXECABORT Transaction discarded because of previous errors.")),
            (&["EXISTS", "{t}x", &far], Resp::Int(0)),
            // An unknown command queued: EXECABORT.
            (&["MULTI"], Resp::ok()),
            (&["SET", "{t}y", "1"], queued()),
            (&["NOSUCH", "x"], Resp::err("ERR unknown command 'NOSUCH', with args beginning with: 'x' ")),
            (&["EXEC"], Resp::err("EXECABORT Transaction discarded because of previous errors.")),
            (&["EXISTS", "{t}y"], Resp::Int(0)),
            // A wrong arity queued: EXECABORT too.
            (&["MULTI"], Resp::ok()),
            (&["SET", "{t}y", "1"], queued()),
            (&["GET"], arity("get")),
            (&["EXEC"], Resp::err("EXECABORT Transaction discarded because of previous errors.")),
            (&["EXISTS", "{t}y"], Resp::Int(0)),
            // Nested MULTI is an error that does not doom the transaction (as in Redis).
            (&["MULTI"], Resp::ok()),
            (&["SET", "{t}n", "1"], queued()),
            (&["MULTI"], Resp::err("ERR MULTI calls can not be nested")),
            (&["EXEC"], Resp::Array(vec![Resp::ok()])),
            // EXEC / DISCARD without MULTI.
            (&["EXEC"], Resp::err("ERR EXEC without MULTI")),
            (&["DISCARD"], Resp::err("ERR DISCARD without MULTI")),
            // DISCARD drops the queue.
            (&["MULTI"], Resp::ok()),
            (&["SET", "{t}d", "1"], queued()),
            (&["DISCARD"], Resp::ok()),
            (&["EXISTS", "{t}d"], Resp::Int(0)),
            (&["EXEC"], Resp::err("ERR EXEC without MULTI")),
        ],
    );

    // A failed commit: none of the queued writes is visible, over RESP or HTTP.
    assert_eq!(c.cmd(&["SET", "{atom}n", "10"]), Resp::ok());
    expect_all(
        &mut c,
        &[
            (&["MULTI"], Resp::ok()),
            (&["SET", "{atom}a", "1"], queued()),
            (&["SET", "{atom}b", "2"], queued()),
            (&["INCR", "{atom}n"], queued()),
        ],
    );
    let shard = server.node().shard_for(b"{atom}a");
    server.node().shards()[shard.0 as usize].store().inject_commit_failures(1);
    let exec = c.cmd(&["EXEC"]);
    assert!(exec.error_text().is_some(), "EXEC over a failed commit must be an error, got {exec:?}");
    for conn in [&mut c, &mut other, &mut connect(&server)] {
        assert_eq!(
            conn.cmd(&["MGET", "{atom}a", "{atom}b", "{atom}n"]),
            Resp::Array(vec![Resp::Nil, Resp::Nil, Resp::bulk("10")]),
            "a write of the failed transaction is visible"
        );
    }
    for key in ["{atom}a", "{atom}b"] {
        assert_eq!(http.get(&server.url(&kv_path(key))).status, 404, "{key} over HTTP");
    }
    assert_eq!(http.get(&server.url(&kv_path("{atom}n"))).body, b"10");
    // The shard recovered: the same transaction now commits.
    expect_all(
        &mut c,
        &[
            (&["MULTI"], Resp::ok()),
            (&["SET", "{atom}a", "1"], queued()),
            (&["INCR", "{atom}n"], queued()),
            (&["EXEC"], Resp::Array(vec![Resp::ok(), Resp::Int(11)])),
        ],
    );
}

// ---- 5. no uncommitted read ----

/// A write whose commit fails is visible to no one: not to another connection, not to the writer (even a GET
/// pipelined right behind the SET, which reads inside the shard's write transaction), not over HTTP.
#[test]
fn a_failed_write_is_never_read() {
    let dir = temp_dir();
    let server = TestServer::start(resp_config(dir.path()));
    let http = Http::new();
    let mut a = connect(&server);
    let mut b = connect(&server);
    assert_eq!(b.cmd(&["GET", "leak"]), Resp::Nil);

    let shard = server.node().shard_for(b"leak");
    server.node().shards()[shard.0 as usize].store().inject_commit_failures(1);
    let mut p = command(&["SET", "leak", "uncommitted"]);
    p.extend(command(&["GET", "leak"]));
    a.send(&p);
    let set = a.read();
    assert!(set.error_text().is_some(), "SET over a failed commit must be an error, got {set:?}");
    let pipelined_get = a.read();
    assert_ne!(pipelined_get, Resp::bulk("uncommitted"), "the writer read its own uncommitted write");
    assert!(matches!(pipelined_get, Resp::Nil | Resp::Error(_)), "{pipelined_get:?}");
    println!("a GET pipelined behind the failed SET answered {pipelined_get:?}");

    assert_eq!(b.cmd(&["GET", "leak"]), Resp::Nil, "another connection read an uncommitted write");
    assert_eq!(a.cmd(&["GET", "leak"]), Resp::Nil, "the writer read its failed write");
    assert_eq!(b.cmd(&["EXISTS", "leak"]), Resp::Int(0));
    assert_eq!(http.get(&server.url("/kv/leak")).status, 404);
    // And the shard works again.
    assert_eq!(a.cmd(&["SET", "leak", "committed"]), Resp::ok());
    assert_eq!(b.cmd(&["GET", "leak"]), Resp::bulk("committed"));
}

// ---- 6. HTTP <-> RESP ----

/// A value written over HTTP is what RESP reads and the reverse, byte for byte, and a RESP write changes the ETag.
#[test]
fn http_and_resp_share_the_data() {
    let dir = temp_dir();
    let server = TestServer::start(resp_config(dir.path()));
    let http = Http::new();
    let mut c = connect(&server);

    let put = http.put(&server.url("/kv/b/k"), b"from http");
    assert_eq!(put.status, 201);
    assert_eq!(c.cmd(&["GET", "b/k"]), Resp::bulk("from http"));
    let before = http.get(&server.url("/kv/b/k"));
    assert_eq!(before.body, b"from http");
    let etag = before.etag.expect("GET /kv has an ETag");

    assert_eq!(c.cmd(&["SET", "b/k", "from resp"]), Resp::ok());
    let after = http.get(&server.url("/kv/b/k"));
    assert_eq!((after.status, &after.body[..]), (200, &b"from resp"[..]));
    let etag2 = after.etag.expect("GET /kv has an ETag");
    assert_ne!(etag, etag2, "a RESP SET must change the ETag");
    // INCR writes the value back as text and bumps its revision, like a PUT.
    assert_eq!(c.cmd(&["INCR", "b/n"]), Resp::Int(1));
    let first = http.get(&server.url("/kv/b/n"));
    assert_eq!(first.body, b"1");
    assert_eq!(c.cmd(&["INCR", "b/n"]), Resp::Int(2));
    let second = http.get(&server.url("/kv/b/n"));
    assert_eq!(second.body, b"2");
    assert!(first.etag.is_some() && first.etag != second.etag, "INCR must change the ETag: {first:?} {second:?}");

    // Binary-safe both ways.
    let binary: &[u8] = b"\x00\xff\r\nbin\x01";
    assert_eq!(c.cmd_bytes(&[b"SET", b"b/bin", binary]), Resp::ok());
    assert_eq!(http.get(&server.url("/kv/b/bin")).body, binary);
    assert_eq!(http.put(&server.url("/kv/b/bin2"), binary).status, 201);
    assert_eq!(c.cmd(&["GET", "b/bin2"]), Resp::bulk(binary));
    // DEL over RESP is a 404 over HTTP, and an HTTP DELETE is a nil over RESP.
    assert_eq!(c.cmd(&["DEL", "b/bin"]), Resp::Int(1));
    assert_eq!(http.get(&server.url("/kv/b/bin")).status, 404);
    assert_eq!(http.send(http.client.delete(server.url("/kv/b/bin2"))).status, 204);
    assert_eq!(c.cmd(&["GET", "b/bin2"]), Resp::Nil);
}

// ---- 7. D-Boutique ----

/// D-Boutique's telnet session: plain-text replies to inline verbs, RESP replies to the same verbs sent as
/// arrays, and a bucket that only holds keys written over HTTP exists.
#[test]
fn dboutique_verbs_inline_and_as_arrays() {
    let dir = temp_dir();
    let server = TestServer::start(resp_config(dir.path()));
    let http = Http::new();
    let mut c = connect(&server);

    let session: [(&[u8], &[u8]); 12] = [
        (b"CREATE b\r\n", b"OK\r\n"),
        (b"CREATE b\r\n", b"OK\r\n"),
        (b"PUT b k hello\r\n", b"OK\r\n"),
        (b"GET b k\r\n", b"hello\r\nOK\r\n"),
        (b"GET b missing\r\n", b"\r\nOK\r\n"),
        (b"GET nob k\r\n", b"NOT FOUND\r\n"),
        (b"PUT nob k v\r\n", b"NOT FOUND\r\n"),
        (b"PUT b\r\n", b"COMMAND NOT IMPLEMENTED\r\n"),
        (b"DELETE b\r\n", b"COMMAND NOT IMPLEMENTED\r\n"),
        (b"PING\r\n", b"+PONG\r\n"),
        (b"PUT b k2 world\r\n", b"OK\r\n"),
        (b"DELETE b k2\r\n", b"OK\r\n"),
    ];
    for (line, reply) in session {
        c.send(line);
        c.expect_raw(reply);
    }
    // The value is the /kv value `b/k`.
    assert_eq!(http.get(&server.url("/kv/b/k")).body, b"hello");
    assert_eq!(http.get(&server.url("/kv/b/k2")).status, 404);
    c.send(b"DELETE b k\r\n");
    c.expect_raw(b"OK\r\n");
    c.send(b"GET b k\r\n");
    c.expect_raw(b"\r\nOK\r\n");
    assert_eq!(http.get(&server.url("/kv/b/k")).status, 404);

    // The same verbs as arrays answer RESP.
    assert_eq!(c.cmd(&["PUT", "b", "k", "v"]), Resp::ok());
    assert_eq!(c.cmd(&["GET", "b", "k"]), Resp::bulk("v"));
    assert_eq!(c.cmd(&["GET", "b", "nokey"]), Resp::Nil);
    assert_eq!(c.cmd(&["GET", "b/k"]), Resp::bulk("v"), "PUT b k v is the key b/k");
    let missing = c.cmd(&["GET", "nob", "k"]);
    assert!(missing.error_text().is_some_and(|e| e.starts_with("NOTFOUND")), "{missing:?}");
    assert_eq!(c.cmd(&["DELETE", "b", "k"]), Resp::ok());
    assert_eq!(c.cmd(&["GET", "b", "k"]), Resp::Nil);

    // A bucket written only over HTTP exists for the verbs.
    assert_eq!(http.put(&server.url("/kv/hb/k1"), b"from http").status, 201);
    c.send(b"GET hb k1\r\n");
    c.expect_raw(b"from http\r\nOK\r\n");
    c.send(b"PUT hb k2 x\r\n");
    c.expect_raw(b"OK\r\n");
    assert_eq!(http.get(&server.url("/kv/hb/k2")).body, b"x");
    // The connection is still in step.
    assert_eq!(c.cmd(&["PING"]), Resp::simple("PONG"));
}

// ---- 8. SCAN ----

/// Reads every page of `SCAN 0 <args>` until cursor 0, checking that each cursor is a decimal below 2^53.
fn scan_all(c: &mut RespClient, args: &[&str]) -> (Vec<String>, usize) {
    let mut cursor = "0".to_string();
    let mut keys = Vec::new();
    for page in 0..5000 {
        let mut cmd = vec!["SCAN", cursor.as_str()];
        cmd.extend_from_slice(args);
        let reply = c.cmd(&cmd);
        let parts = reply.array();
        assert_eq!(parts.len(), 2, "{reply:?}");
        let next = parts[0].text();
        assert!(!next.is_empty() && next.bytes().all(|b| b.is_ascii_digit()), "cursor {next:?} is not decimal");
        let n: u64 = next.parse().expect("a decimal cursor fits u64");
        assert!(n < 1 << 53, "cursor {n} is not below 2^53");
        keys.extend(parts[1].array().iter().map(Resp::text));
        if n == 0 {
            return (keys, page + 1);
        }
        cursor = next;
    }
    panic!("SCAN {args:?} did not finish in 5000 pages");
}

/// SCAN with MATCH and COUNT returns every matching key exactly once; cursors are decimals below 2^53; an unknown
/// cursor is Redis's error.
#[test]
fn scan_returns_every_key_once() {
    let dir = temp_dir();
    let server = TestServer::start(resp_config(dir.path()));
    let mut c = connect(&server);
    let prefixes = ["p:", "q:", "p", "pa:", "o:"];
    let all: Vec<String> = (0..2000).map(|i| format!("{}{i}", prefixes[i % prefixes.len()])).collect();
    let sets: Vec<u8> = all.iter().flat_map(|k| command(&["SET", k, "v"])).collect();
    let replies = pipeline(&mut c, sets, all.len());
    assert_eq!(first_mismatch(&replies, |_| Resp::ok()), None);

    let check = |keys: Vec<String>, want: BTreeSet<&String>, what: &str| {
        let mut seen = HashSet::new();
        for k in &keys {
            assert!(seen.insert(k.clone()), "{what}: {k} returned twice");
        }
        let got: BTreeSet<&String> = keys.iter().collect();
        assert_eq!(got.len(), want.len(), "{what}: key count");
        assert_eq!(got, want, "{what}");
    };
    let (keys, pages) = scan_all(&mut c, &["MATCH", "p:*", "COUNT", "7"]);
    assert!(pages >= 400 / 7, "COUNT 7 over 400 keys took only {pages} pages");
    check(keys, all.iter().filter(|k| k.starts_with("p:")).collect(), "MATCH p:* COUNT 7");
    let (keys, _) = scan_all(&mut c, &["MATCH", "*:1*", "COUNT", "50"]);
    check(keys, all.iter().filter(|k| k.contains(":1")).collect(), "MATCH *:1* COUNT 50");
    let (keys, _) = scan_all(&mut c, &["COUNT", "1000"]);
    check(keys, all.iter().collect(), "everything");

    assert_eq!(c.cmd(&["SCAN", "12345"]), Resp::err("ERR invalid cursor"));
    assert_eq!(c.cmd(&["SCAN", "abc"]), Resp::err("ERR invalid cursor"));
    assert_eq!(c.cmd(&["SCAN", "0", "COUNT"]), syntax());
}

/// KEYS answers every match up to its cap of 10,000 keys, and past it Redis-style advice to use SCAN instead of
/// a reply of unbounded size.
#[test]
fn keys_answers_up_to_its_cap_then_refers_to_scan() {
    let dir = temp_dir();
    let server = TestServer::start(resp_config(dir.path()));
    let mut c = connect(&server);
    // cap:00000 ..= cap:10000: "cap:0*" matches exactly 10,000 keys, "cap:*" one more.
    let all: Vec<String> = (0..=10_000).map(|i| format!("cap:{i:05}")).collect();
    for chunk in all.chunks(500) {
        let sets: Vec<u8> = chunk.iter().flat_map(|k| command(&["SET", k, "v"])).collect();
        let replies = pipeline(&mut c, sets, chunk.len());
        assert_eq!(first_mismatch(&replies, |_| Resp::ok()), None);
    }
    let Resp::Array(at_cap) = c.cmd(&["KEYS", "cap:0*"]) else { panic!("KEYS cap:0* is not an array") };
    assert_eq!(at_cap.len(), 10_000, "exactly the cap is answered in full");
    assert_eq!(
        c.cmd(&["KEYS", "cap:*"]),
        Resp::err("ERR more than 10000 keys match; use SCAN with MATCH and COUNT to iterate them")
    );
    assert_eq!(c.cmd(&["KEYS", "cap:1*"]), Resp::Array(vec![Resp::Bulk(b"cap:10000".to_vec())]));
    assert_eq!(c.cmd(&["PING"]), Resp::Simple("PONG".into()), "the connection stays usable");
}

// ---- 9. AUTH ----

/// With tokens: nothing but AUTH/HELLO before authenticating, a bad token is WRONGPASS, a read-only token reads
/// but cannot write, `HELLO 3 AUTH` authenticates. Without tokens AUTH is Redis's "no password" error.
#[test]
fn auth_uses_shale_tokens() {
    let dir = temp_dir();
    let config =
        Config { auth_token: vec!["rw".into()], auth_read_token: vec!["ro".into()], ..resp_config(dir.path()) };
    let server = TestServer::start(config);
    let noauth = || Resp::err("NOAUTH Authentication required.");
    let wrongpass = || Resp::err("WRONGPASS invalid username-password pair or user is disabled.");

    let mut c = connect(&server);
    expect_all(
        &mut c,
        &[
            (&["GET", "k"], noauth()),
            (&["SET", "k", "v"], noauth()),
            (&["AUTH", "bad"], wrongpass()),
            (&["AUTH", "default", "bad"], wrongpass()),
            (&["GET", "k"], noauth()),
            (&["AUTH", "ro"], Resp::ok()),
            (&["GET", "k"], Resp::Nil),
        ],
    );
    for write in [&["SET", "k", "v"][..], &["DEL", "k"], &["INCR", "k"], &["MSET", "k", "v"]] {
        let reply = c.cmd(write);
        assert!(reply.error_text().is_some_and(|e| e.starts_with("NOPERM ")), "{write:?} with ro: {reply:?}");
    }

    let mut c = connect(&server);
    let hello = c.cmd(&["HELLO", "3"]);
    assert!(hello.error_text().is_some_and(|e| e.starts_with("NOAUTH")), "HELLO 3 before AUTH: {hello:?}");
    let hello = c.cmd(&["HELLO", "3", "AUTH", "default", "wrong"]);
    assert_eq!(hello, wrongpass());
    let Resp::Map(_) = c.cmd(&["HELLO", "3", "AUTH", "default", "rw"]) else { panic!("HELLO 3 AUTH answers a map") };
    assert_eq!(c.cmd(&["SET", "k", "v"]), Resp::ok());
    assert_eq!(c.cmd(&["GET", "k"]), Resp::bulk("v"));
    assert_eq!(c.cmd(&["GET", "nokey"]), Resp::Null, "the HELLO switched to RESP3");

    let mut c = connect(&server);
    assert_eq!(c.cmd(&["AUTH", "default", "rw"]), Resp::ok());
    assert_eq!(c.cmd(&["DEL", "k"]), Resp::Int(1));
    drop(server);

    let dir = temp_dir();
    let server = TestServer::start(resp_config(dir.path()));
    let mut c = connect(&server);
    assert_eq!(
        c.cmd(&["AUTH", "x"]),
        Resp::err(
            "ERR AUTH <password> called without any password configured for the default user. Are you sure your \
             configuration is correct?"
        )
    );
    assert_eq!(c.cmd(&["SET", "k", "v"]), Resp::ok(), "no token configured: everything is allowed");
}

// ---- 10. FLUSHDB ----

/// FLUSHDB and FLUSHALL are refused unless `resp_allow_flush`; allowed, they empty the keyspace (cache included).
#[test]
fn flushdb_only_when_allowed() {
    let dir = temp_dir();
    let server = TestServer::start(resp_config(dir.path()));
    let mut c = connect(&server);
    assert_eq!(c.cmd(&["SET", "a", "1"]), Resp::ok());
    for flush in ["FLUSHDB", "FLUSHALL"] {
        let reply = c.cmd(&[flush]);
        assert!(reply.error_text().is_some(), "{flush} must be refused by default: {reply:?}");
    }
    assert_eq!(c.cmd(&["DBSIZE"]), Resp::Int(1));
    assert_eq!(c.cmd(&["GET", "a"]), Resp::bulk("1"));
    drop(server);

    let dir = temp_dir();
    let server = TestServer::start(Config { resp_allow_flush: true, ..resp_config(dir.path()) });
    let http = Http::new();
    let mut c = connect(&server);
    assert_eq!(c.cmd(&["MSET", "a", "1", "b", "2", "c", "3"]), Resp::ok());
    // Reads fill the cache, so a flush that forgot the cache would show.
    assert_eq!(c.cmd(&["MGET", "a", "b", "c"]).array().len(), 3);
    assert_eq!(c.cmd(&["DBSIZE"]), Resp::Int(3));
    assert_eq!(c.cmd(&["FLUSHDB"]), Resp::ok());
    assert_eq!(c.cmd(&["DBSIZE"]), Resp::Int(0));
    assert_eq!(c.cmd(&["MGET", "a", "b", "c"]), Resp::Array(vec![Resp::Nil, Resp::Nil, Resp::Nil]));
    assert_eq!(http.get(&server.url("/kv/a")).status, 404);
    assert_eq!(c.cmd(&["SET", "d", "4"]), Resp::ok());
    assert_eq!(c.cmd(&["FLUSHALL", "SYNC"]), Resp::ok());
    assert_eq!(c.cmd(&["DBSIZE"]), Resp::Int(0));
    assert_eq!(c.cmd(&["FLUSHDB", "BOGUS"]), syntax());
}

// ---- 11. durability ----

/// The real binary on `dir` with its RESP listener on a free port, ready, and a client connected to it.
fn start_binary(dir: &Path, http: &Http) -> (common::BinaryServer, RespClient) {
    let port = free_port();
    let server = Shale::serve(dir).env("RESP_PORT", port.to_string()).start();
    http.wait_ready(&server.base());
    (server, RespClient::connect(loopback(port)))
}

/// SIGTERM while a client streams a long pipeline: the listener stops taking commands, answers every command it
/// took before the connection closes (no torn reply, no hang), the process exits 0, and every acknowledged SET is
/// there after a restart.
#[test]
fn sigterm_answers_the_commands_it_took_and_keeps_them() {
    const N: usize = 200_000;
    let dir = temp_dir();
    let http = Http::new();
    let (server, mut c) = start_binary(dir.path(), &http);
    let mut w = c.writer();
    let writer = std::thread::spawn(move || {
        for start in (0..N).step_by(1000) {
            let bytes: Vec<u8> =
                (start..start + 1000).flat_map(|i| command(&["SET", &format!("g:{i:06}"), "v"])).collect();
            if w.write_all(&bytes).is_err() {
                return start; // the server stopped reading and closed
            }
        }
        N
    });
    for i in 0..1000 {
        assert_eq!(c.read(), Resp::ok(), "reply {i}");
    }
    let stopping = std::thread::spawn(move || server.terminate());
    let mut acked = 1000;
    while let Some(reply) = c.read_or_closed() {
        assert_eq!(reply, Resp::ok(), "reply {acked}");
        acked += 1;
    }
    let (status, stderr) = stopping.join().unwrap();
    assert!(status.success(), "graceful stop failed: {status}\n{stderr}");
    let sent = writer.join().unwrap();
    println!("{acked} of the {sent}+ SETs sent before the stop were answered");

    let (_server, mut c) = start_binary(dir.path(), &http); // stopped on drop, at the end
    let Resp::Int(stored) = c.cmd(&["DBSIZE"]) else { panic!("DBSIZE is not an integer") };
    // Every command the listener took was applied and answered: nothing stored went unanswered.
    assert_eq!(stored as usize, acked, "keys stored vs SETs acknowledged");
    // A pipeline is applied in order, so the acknowledged SETs are exactly the first `acked` keys.
    for start in (0..acked).step_by(1000) {
        let keys: Vec<String> = (start..(start + 1000).min(acked)).map(|i| format!("g:{i:06}")).collect();
        let mut args = vec!["MGET"];
        args.extend(keys.iter().map(String::as_str));
        let values = c.cmd(&args);
        let missing: Vec<&String> =
            keys.iter().zip(values.array()).filter(|(_, v)| **v != Resp::bulk("v")).map(|(k, _)| k).collect();
        assert!(missing.is_empty(), "acknowledged but lost after a graceful stop: {missing:?}");
    }
}

/// The real binary (DURABILITY=immediate by default): 500 pipelined SETs and 50 INCRs acknowledged over RESP
/// survive `kill -9`, readable over RESP and HTTP after the restart.
#[test]
fn acknowledged_resp_writes_survive_kill9() {
    let dir = temp_dir();
    let http = Http::new();
    let (server, mut c) = start_binary(dir.path(), &http);
    let mut p = Vec::new();
    let mut want = Vec::new();
    for i in 0..500 {
        p.extend(command(&["SET", &format!("dur:{i}"), &format!("value-{i}")]));
        want.push(Resp::ok());
        if i % 10 == 9 {
            p.extend(command(&["INCR", "dur:n"]));
            want.push(Resp::Int(i as i64 / 10 + 1));
        }
    }
    let started = Instant::now();
    let replies = pipeline(&mut c, p, want.len());
    println!("500 SETs + 50 INCRs acknowledged over RESP in {:?}", started.elapsed());
    assert_eq!(first_mismatch(&replies, |i| want[i].clone()), None);
    server.kill9();

    let (server, mut c) = start_binary(dir.path(), &http);
    let keys: Vec<String> = (0..500).map(|i| format!("dur:{i}")).collect();
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    let values = c.cmd(&mget);
    assert_eq!(first_mismatch(values.array(), |i| Resp::bulk(format!("value-{i}"))), None, "after kill -9");
    assert_eq!(c.cmd(&["GET", "dur:n"]), Resp::bulk("50"));
    for (i, key) in keys.iter().enumerate() {
        let got = http.get(&server.url(&kv_path(key)));
        assert_eq!((got.status, got.body), (200, format!("value-{i}").into_bytes()), "{key} over HTTP");
    }
    assert_eq!(http.get(&server.url("/kv/dur:n")).body, b"50");
}

// ---- 12. TLS ----

/// Writes a self-signed certificate for localhost / 127.0.0.1 and its key; returns the paths and the DER.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf, rustls::pki_types::CertificateDer<'static>) {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(names).expect("generating a certificate");
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem()).expect("writing the certificate");
    std::fs::write(&k, signing_key.serialize_pem()).expect("writing the key");
    (c, k, cert.der().clone())
}

/// With TLS configured, the RESP port speaks TLS: a client trusting the certificate gets PONG; plain text gets no
/// RESP answer.
#[test]
fn resp_over_tls() {
    let certs = temp_dir();
    let (cert, key, der) = self_signed(certs.path());
    let dir = temp_dir();
    let server = TestServer::start(Config { tls_cert: Some(cert), tls_key: Some(key), ..resp_config(dir.path()) });
    let addr = server.resp_addr.expect("the RESP listener is on");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(der).expect("trusting the test certificate");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a server name");
    let tls = rustls::ClientConnection::new(Arc::new(config), name).expect("a TLS client");
    let sock = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connecting");
    sock.set_read_timeout(Some(READ_TIMEOUT)).expect("read timeout");
    sock.set_write_timeout(Some(READ_TIMEOUT)).expect("write timeout");
    let mut c = RespClient::over(rustls::StreamOwned::new(tls, sock));
    assert_eq!(c.cmd(&["PING"]), Resp::simple("PONG"));
    assert_eq!(c.cmd(&["SET", "tls", "secret"]), Resp::ok());
    assert_eq!(c.cmd(&["GET", "tls"]), Resp::bulk("secret"));
    assert!(c.stream().conn.protocol_version().is_some(), "a TLS session was negotiated");

    // Plain text on the TLS port: no PONG.
    let mut plain = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connecting");
    plain.set_read_timeout(Some(Duration::from_secs(10))).expect("read timeout");
    plain.write_all(b"PING\r\n").expect("writing");
    let mut got = Vec::new();
    let _ = plain.read_to_end(&mut got);
    assert!(!got.starts_with(b"+PONG"), "plain text was answered on the TLS port: {got:?}");
}

// ---- 13. counters and documents ----

/// CTR.INCRBY / CTR.GET are the counters of `/counter/{name}`; DOC.ADD / DOC.GET the documents of `/api`.
#[test]
fn counters_and_documents_over_resp() {
    let dir = temp_dir();
    let server = TestServer::start(resp_config(dir.path()));
    let http = Http::new();
    let mut c = connect(&server);

    assert_eq!(c.cmd(&["CTR.GET", "hits"]), Resp::Int(0));
    assert_eq!(c.cmd(&["CTR.INCRBY", "hits", "5"]), Resp::Int(5));
    assert_eq!(c.cmd(&["CTR.INCRBY", "hits", "-2"]), Resp::Int(3));
    assert_eq!(c.cmd(&["CTR.GET", "hits"]), Resp::Int(3));
    assert_eq!(http.get(&server.url("/counter/hits/value")).body, b"3");
    assert_eq!(http.post(&server.url("/counter/hits"), b"4").status, 204);
    assert_eq!(c.cmd(&["CTR.GET", "hits"]), Resp::Int(7));
    assert_eq!(c.cmd(&["CTR.INCRBY", "hits", "x"]), not_integer());
    // A counter is not a /kv value.
    assert_eq!(c.cmd(&["GET", "hits"]), Resp::Nil);

    let doc = r#"{"name":"shale","tags":["kv","resp"],"n":1}"#;
    let Resp::Int(id) = c.cmd(&["DOC.ADD", doc]) else { panic!("DOC.ADD answers the new id") };
    assert!(id > 0);
    let want: serde_json::Value = serde_json::from_str(doc).expect("test JSON");
    let got = http.get(&server.url(&format!("/api?id={id}")));
    assert_eq!(got.status, 200);
    let got: serde_json::Value = serde_json::from_slice(&got.body).expect("GET /api answers JSON");
    assert_eq!(got, serde_json::json!({"id": id, "data": want}));
    let over_resp = c.cmd(&["DOC.GET", &id.to_string()]);
    let over_resp: serde_json::Value = serde_json::from_slice(
        over_resp.bytes().unwrap_or_else(|| panic!("DOC.GET answers a bulk, got {over_resp:?}")),
    )
    .expect("DOC.GET answers JSON");
    assert_eq!(over_resp, want);
    let Resp::Int(id2) = c.cmd(&["DOC.ADD", "[1,2]"]) else { panic!("DOC.ADD answers the new id") };
    assert!(id2 > id, "ids grow: {id} then {id2}");
    assert_eq!(c.cmd(&["DOC.GET", "999999"]), Resp::Nil);
    assert!(c.cmd(&["DOC.ADD", "{not json"]).error_text().is_some());
    assert!(c.cmd(&["DOC.GET", "abc"]).error_text().is_some());
}

/// Large replies in one pipeline: they are written out in pieces (past the unsent-bytes cap) and still arrive
/// whole and in order.
#[test]
fn large_pipelined_replies_arrive_whole_and_in_order() {
    let dir = temp_dir();
    let server = TestServer::start(resp_config(dir.path()));
    let mut c = connect(&server);
    let big: Vec<Vec<u8>> = (0..3u8).map(|i| vec![b'a' + i; 1_000_000]).collect();
    for (i, v) in big.iter().enumerate() {
        assert_eq!(c.cmd_bytes(&[b"SET", format!("big{i}").as_bytes(), v]), Resp::ok());
    }
    let mut bytes = Vec::new();
    for n in 0..30 {
        bytes.extend(command(&["GET", &format!("big{}", n % 3)]));
    }
    let replies = pipeline(&mut c, bytes, 30);
    for (n, r) in replies.iter().enumerate() {
        assert_eq!(r.bytes(), Some(&big[n % 3][..]), "reply {n}");
    }
}

/// A RESP port that is taken stops the start-up with an error naming the RESP port and the way out.
#[test]
fn a_taken_resp_port_fails_the_start_clearly() {
    let dir = temp_dir();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let exited = Shale::serve(dir.path()).env("RESP_PORT", &port).run(Duration::from_secs(60));
    assert!(!exited.status.success(), "started although the RESP port was taken: {}", exited.stdout);
    assert!(
        exited.stderr.contains(&format!("cannot bind the RESP port 127.0.0.1:{port}"))
            && exited.stderr.contains("RESP_PORT"),
        "{}",
        exited.stderr
    );
    assert!(!exited.stdout.contains("LISTENING"), "{}", exited.stdout);
    assert!(!dir.path().join("manifest.json").exists(), "the data dir was touched before the port check");
}

/// `RESP_MAX_CLIENTS` (Redis's `maxclients`): the connection past the limit gets Redis's error and is closed, and
/// a slot frees when a client leaves. CONFIG GET and INFO report the limit.
#[test]
fn clients_past_the_limit_are_refused_until_one_leaves() {
    let dir = temp_dir();
    let server = TestServer::start(Config { resp_max_clients: 3, ..resp_config(dir.path()) });
    let mut clients: Vec<RespClient> = (0..3).map(|_| connect(&server)).collect();
    for c in &mut clients {
        assert_eq!(c.cmd(&["PING"]), Resp::simple("PONG"));
    }
    assert_eq!(
        clients[0].cmd(&["CONFIG", "GET", "maxclients"]),
        Resp::Array(vec![Resp::bulk("maxclients"), Resp::bulk("3")])
    );
    assert!(clients[0].cmd(&["INFO", "clients"]).text().contains("connected_clients:3\r\nmaxclients:3"));

    let mut extra = connect(&server);
    assert_eq!(extra.read(), Resp::err("ERR max number of clients reached"));
    assert_eq!(extra.read_or_closed(), None, "the refused connection is closed");

    drop(clients.pop());
    // The server notices the close asynchronously: retry briefly.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = connect(&server);
        again.send(&command(&["PING"]));
        match again.read() {
            r if r == Resp::simple("PONG") => break,
            r => assert!(Instant::now() < deadline, "no slot freed: {r:?}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    server.stop();
}
