//! Linearizability of what concurrent clients see, HTTP and Redis-protocol clients on the same keys at once
//! (pipelined RESP connections included), checked by a history checker (`common/linearizability.rs`), and the
//! checker's own tests: it accepts legal histories, including ones with operations whose outcome is
//! unknown, and rejects stale reads, lost compare-and-sets and miscounted counters, on made-up histories and on
//! a history recorded from a real server with one stale read added.

mod common;
#[path = "common/http_history.rs"]
mod http_history;
#[path = "common/linearizability.rs"]
mod linearizability;
#[path = "common/resp.rs"]
mod resp_client;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{temp_dir, TestServer};
use http_history::{xorshift, COUNTER, REGISTERS};
use linearizability::{check, Event, Op};
use resp_client::{command, Resp, RespClient};
use shale::config::RespPort;
use shale::Config;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn ev(key: &str, op: Op, call: u64, ret: Option<u64>) -> Event {
    Event { key: key.into(), op, call: ms(call), ret: ret.map(ms) }
}

// ---- the checker on made-up histories ----

#[test]
fn a_sequential_history_and_overlapping_reads_are_linearizable() {
    let history = [
        ev("a", Op::Write { value: 1 }, 0, Some(10)),
        ev("a", Op::Read { seen: Some(1) }, 20, Some(30)),
        // A write and two reads overlapping it: one sees the old value, one the new; either order is legal.
        ev("a", Op::Write { value: 2 }, 40, Some(60)),
        ev("a", Op::Read { seen: Some(2) }, 41, Some(45)),
        ev("a", Op::Read { seen: Some(1) }, 42, Some(59)),
        ev("a", Op::Cas { expect: Some(2), value: 3, done: true }, 70, Some(80)),
        ev("a", Op::Cas { expect: Some(2), value: 4, done: false }, 90, Some(95)),
        ev("c", Op::Add { delta: 2 }, 0, Some(10)),
        ev("c", Op::Add { delta: 3 }, 5, Some(15)),
        ev("c", Op::Count { seen: 2 }, 6, Some(20)),
        ev("c", Op::Count { seen: 5 }, 30, Some(31)),
    ];
    check(&history).expect("linearizable");
}

#[test]
fn an_operation_with_an_unknown_outcome_may_apply_late_or_never() {
    // The write timed out: a later read may see it, or not, but not both orders in sequence.
    let applied = [ev("a", Op::Write { value: 7 }, 0, None), ev("a", Op::Read { seen: Some(7) }, 100, Some(110))];
    check(&applied).expect("the unknown write took effect");
    let lost = [ev("a", Op::Write { value: 7 }, 0, None), ev("a", Op::Read { seen: None }, 100, Some(110))];
    check(&lost).expect("the unknown write never took effect");
    let flicker = [
        ev("a", Op::Write { value: 7 }, 0, None),
        ev("a", Op::Read { seen: Some(7) }, 100, Some(110)),
        ev("a", Op::Read { seen: None }, 120, Some(130)),
    ];
    check(&flicker).expect_err("a value cannot vanish once seen");
}

#[test]
fn a_stale_read_is_rejected() {
    let history = [
        ev("a", Op::Write { value: 1 }, 0, Some(10)),
        ev("a", Op::Write { value: 2 }, 20, Some(30)),
        ev("a", Op::Read { seen: Some(1) }, 40, Some(50)),
    ];
    let v = check(&history).expect_err("the read began after value 2 was acknowledged");
    assert_eq!(v.key, "a");
}

#[test]
fn two_compare_and_sets_from_the_same_value_cannot_both_win() {
    let history = [
        ev("a", Op::Write { value: 1 }, 0, Some(10)),
        ev("a", Op::Cas { expect: Some(1), value: 2, done: true }, 20, Some(40)),
        ev("a", Op::Cas { expect: Some(1), value: 3, done: true }, 21, Some(41)),
    ];
    check(&history).expect_err("a lost update");
    let create_twice = [
        ev("b", Op::Cas { expect: None, value: 1, done: true }, 0, Some(10)),
        ev("b", Op::Cas { expect: None, value: 2, done: true }, 5, Some(15)),
    ];
    check(&create_twice).expect_err("If-None-Match: * won twice");
}

#[test]
fn an_increment_counted_twice_or_lost_is_rejected() {
    let twice = [ev("c", Op::Add { delta: 1 }, 0, Some(10)), ev("c", Op::Count { seen: 2 }, 20, Some(30))];
    check(&twice).expect_err("one increment of 1 cannot make 2");
    let lost = [
        ev("c", Op::Add { delta: 1 }, 0, Some(10)),
        ev("c", Op::Add { delta: 1 }, 0, Some(10)),
        ev("c", Op::Count { seen: 1 }, 20, Some(30)),
    ];
    check(&lost).expect_err("an acknowledged increment was lost");
    let same_answer = [
        ev("c", Op::AddGet { delta: 1, seen: 1 }, 0, Some(10)),
        ev("c", Op::AddGet { delta: 1, seen: 1 }, 5, Some(15)),
    ];
    check(&same_answer).expect_err("two increments cannot both answer 1");
    let either_order = [
        ev("c", Op::AddGet { delta: 1, seen: 2 }, 0, Some(10)),
        ev("c", Op::AddGet { delta: 1, seen: 1 }, 5, Some(15)),
    ];
    check(&either_order).expect("overlapping increments may answer in either order");
}

// ---- a history recorded from a server ----

const CLIENTS: u64 = 8;
const OPS_PER_CLIENT: u64 = 60;

/// A counter that only the RESP clients increment, with Redis's `INCRBY` on a `/kv` value.
const KV_COUNTER: &str = "n0";
/// Commands per pipeline of a RESP client.
const PIPELINE: usize = 8;
const RESP_CLIENTS: u64 = 4;
const PIPELINES_PER_CLIENT: u64 = 12;

/// One RESP connection's operations on the same keys as the HTTP clients, sent as pipelines: every command of a
/// pipeline is invoked when the pipeline is sent, and completes when its own reply arrives.
fn run_resp_client(addr: std::net::SocketAddr, id: u64, started: Instant, history: Arc<Mutex<Vec<Event>>>) {
    let mut conn = RespClient::connect(addr);
    let mut next = xorshift(id);
    for p in 0..PIPELINES_PER_CLIENT {
        let mut sent = Vec::new();
        let mut bytes = Vec::new();
        for c in 0..PIPELINE as u64 {
            let key = REGISTERS[(next() % REGISTERS.len() as u64) as usize];
            let value = (id << 32) | (p * PIPELINE as u64 + c + 1);
            let delta = (next() % 3 + 1) as i64;
            let (args, key, op): (Vec<String>, &str, Op) = match next() % 5 {
                0 | 1 => (vec!["GET".into(), key.into()], key, Op::Read { seen: None }),
                2 => (vec!["SET".into(), key.into(), value.to_string()], key, Op::Write { value }),
                3 => (
                    vec!["CTR.INCRBY".into(), COUNTER.into(), delta.to_string()],
                    COUNTER,
                    Op::AddGet { delta, seen: 0 },
                ),
                _ => (
                    vec!["INCRBY".into(), KV_COUNTER.into(), delta.to_string()],
                    KV_COUNTER,
                    Op::AddGet { delta, seen: 0 },
                ),
            };
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            bytes.extend_from_slice(&command(&args));
            sent.push((key, op));
        }
        let call = started.elapsed();
        conn.send(&bytes);
        for (key, op) in sent {
            let reply = conn.read();
            let ret = Some(started.elapsed());
            let op = match (op, reply) {
                (Op::Read { .. }, Resp::Bulk(v)) => {
                    Op::Read { seen: Some(String::from_utf8(v).unwrap().parse().expect("a value we wrote")) }
                }
                (Op::Read { .. }, Resp::Nil | Resp::Null) => Op::Read { seen: None },
                (op @ Op::Write { .. }, Resp::Simple(s)) if s == "OK" => op,
                (Op::AddGet { delta, .. }, Resp::Int(n)) => Op::AddGet { delta, seen: n },
                (op, reply) => panic!("{op:?} answered {reply:?}"),
            };
            history.lock().unwrap().push(Event { key: key.into(), op, call, ret });
        }
    }
}

/// Runs every client, HTTP against `base` and RESP against `resp`, at once and returns what they saw.
async fn record(base: String, resp: std::net::SocketAddr) -> Vec<Event> {
    let started = Instant::now();
    let history = Arc::new(Mutex::new(Vec::new()));
    let resp_clients: Vec<_> = (0..RESP_CLIENTS)
        .map(|id| {
            let history = history.clone();
            tokio::task::spawn_blocking(move || run_resp_client(resp, 100 + id, started, history))
        })
        .collect();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|id| {
            let client = http_history::Client {
                bases: vec![base.clone()],
                id: id + 1,
                ops: OPS_PER_CLIENT,
                counter_read: "value",
                faults: false,
            };
            tokio::spawn(client.run(started, history.clone()))
        })
        .collect();
    for t in tasks {
        t.await.expect("a client task");
    }
    for t in resp_clients {
        t.await.expect("a RESP client");
    }
    Arc::try_unwrap(history).expect("the clients are done").into_inner().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_http_and_resp_clients_of_one_node_see_a_linearizable_history_and_a_stale_read_breaks_it() {
    let dir = temp_dir();
    // A small cache, so reads also take the miss path while writes commit.
    let config = Config { cache_bytes: 4096, resp_port: RespPort::Any, ..Config::for_test(dir.path()) };
    let server = TestServer::start(config);
    let resp = server.resp_addr.expect("the RESP listener");
    let mut history = record(server.base(), resp).await;
    assert!(history.len() as u64 >= CLIENTS * OPS_PER_CLIENT * 3 / 4, "{} operations", history.len());
    check(&history).unwrap_or_else(|v| panic!("not linearizable on {}: {:#?}", v.key, v.events));

    // The negative control, on the real history: after everything, a read reports a value that a later
    // acknowledged write replaced. The checker must refuse it.
    let end = history.iter().filter_map(|e| e.ret).max().expect("completed operations");
    let stale = history
        .iter()
        .filter_map(|a| match a.op {
            Op::Write { value } => Some((a, value)),
            _ => None,
        })
        .find(|(a, _)| {
            history.iter().any(|b| {
                b.key == a.key
                    && matches!(b.op, Op::Write { .. } | Op::Cas { done: true, .. })
                    && b.call > a.ret.expect("completed")
            })
        })
        .map(|(a, value)| (a.key.clone(), value))
        .expect("some write was overwritten by a later one");
    history.push(Event {
        key: stale.0.clone(),
        op: Op::Read { seen: Some(stale.1) },
        call: end + ms(1),
        ret: Some(end + ms(2)),
    });
    let v = check(&history).expect_err("a read of an overwritten value after everything is stale");
    assert_eq!(v.key, stale.0);
    server.stop();
}
