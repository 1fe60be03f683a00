//! Concurrent HTTP clients that record a history for the linearizability checker (`linearizability.rs`): reads,
//! writes of values unique to the client, compare-and-sets through `If-Match` from what the client last read, and
//! counter increments and reads, on a few shared keys, in a fixed pseudo-random order per client.
//!
//! Against a cluster under faults (`faults`), a write that fails or times out may still have been applied: it is
//! recorded with an unknown outcome, which the checker may place anywhere after its call or leave out; a read
//! that fails is not recorded (it had no effect). Without faults any failure fails the test.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::linearizability::{Event, Op};

/// Registers the clients share, so their operations overlap on every key.
pub const REGISTERS: [&str; 3] = ["r0", "r1", "r2"];
/// The counter the clients share.
pub const COUNTER: &str = "c0";

/// A fixed pseudo-random sequence per client `id` (xorshift64), so a failing history can be replayed.
pub fn xorshift(id: u64) -> impl FnMut() -> u64 {
    let mut x = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// What one client does.
pub struct Client {
    /// The servers it sends to, one after another (one server, or every node of a cluster).
    pub bases: Vec<String>,
    /// Its id (the seed of its sequence and the high bits of the values it writes).
    pub id: u64,
    /// Operations it sends.
    pub ops: u64,
    /// The counter read: `value` on a single node, `consistent_value` on a cluster.
    pub counter_read: &'static str,
    /// Whether failures are expected (a cluster under faults).
    pub faults: bool,
}

impl Client {
    /// Runs the client, appending each operation to `history` with times from `started`.
    pub async fn run(self, started: Instant, history: Arc<Mutex<Vec<Event>>>) {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(15))
            .build()
            .expect("building the HTTP client");
        let mut next = xorshift(self.id);
        // What this client last read of each register: (value, ETag).
        let mut last: [Option<(Option<u64>, Option<String>)>; REGISTERS.len()] = Default::default();
        for seq in 0..self.ops {
            let base = &self.bases[(seq + self.id) as usize % self.bases.len()];
            let r = (next() % REGISTERS.len() as u64) as usize;
            let key = REGISTERS[r];
            let value = (self.id << 32) | (seq + 1);
            let call = started.elapsed();
            // `Some(true)`: completed; `Some(false)`: unknown outcome; `None`: not recorded.
            let (name, op, completed) = match next() % 6 {
                0 | 1 => {
                    let Some(res) = self.answer(http.get(format!("{base}/kv/{key}")).send().await) else { continue };
                    let etag = res.headers().get("etag").map(|v| v.to_str().unwrap().to_string());
                    let seen = match res.status() {
                        StatusCode::OK => Some(res.text().await.unwrap().parse::<u64>().expect("a value we wrote")),
                        StatusCode::NOT_FOUND => None,
                        s if self.faults && s == StatusCode::SERVICE_UNAVAILABLE => continue,
                        s => panic!("GET answered {s}"),
                    };
                    last[r] = Some((seen, etag));
                    (key, Op::Read { seen }, true)
                }
                2 => {
                    let sent = http.put(format!("{base}/kv/{key}")).body(value.to_string()).send().await;
                    let Some(done) = self.write_outcome(sent).await else { continue };
                    (key, Op::Write { value }, done)
                }
                3 => {
                    let Some((expect, etag)) = last[r].clone() else { continue };
                    let req = http.put(format!("{base}/kv/{key}")).body(value.to_string());
                    let req = match &etag {
                        Some(etag) => req.header("If-Match", etag),
                        None => req.header("If-None-Match", "*"),
                    };
                    let sent = req.send().await;
                    if sent.as_ref().is_ok_and(|res| res.status() == StatusCode::PRECONDITION_FAILED) {
                        (key, Op::Cas { expect, value, done: false }, true)
                    } else {
                        // Unknown outcome: if it applied, it succeeded.
                        let Some(done) = self.write_outcome(sent).await else { continue };
                        (key, Op::Cas { expect, value, done: true }, done)
                    }
                }
                4 => {
                    let delta = (next() % 3 + 1) as i64;
                    let sent = http.post(format!("{base}/counter/{COUNTER}")).body(delta.to_string()).send().await;
                    let Some(done) = self.write_outcome(sent).await else { continue };
                    (COUNTER, Op::Add { delta }, done)
                }
                _ => {
                    let url = format!("{base}/counter/{COUNTER}/{}", self.counter_read);
                    let Some(res) = self.answer(http.get(url).send().await) else { continue };
                    if self.faults && res.status() != StatusCode::OK {
                        continue;
                    }
                    assert_eq!(res.status(), StatusCode::OK);
                    (COUNTER, Op::Count { seen: res.text().await.unwrap().trim().parse().expect("an integer") }, true)
                }
            };
            let ret = completed.then(|| started.elapsed());
            history.lock().unwrap().push(Event { key: name.into(), op, call, ret });
        }
    }

    /// The response, or `None` when the request failed (only expected under faults).
    fn answer(&self, sent: reqwest::Result<reqwest::Response>) -> Option<reqwest::Response> {
        match sent {
            Ok(res) => Some(res),
            Err(e) if self.faults => {
                let _ = e;
                None
            }
            Err(e) => panic!("a request failed: {e}"),
        }
    }

    /// What a write's answer says: `Some(true)` acknowledged, `Some(false)` unknown (it may have been
    /// applied: a timeout, a broken connection, a 503 that says so), `None` certainly not applied (the node
    /// could not be reached, or refused it before proposing it), so it is left out of the history. Anything but
    /// an acknowledgement is a panic without faults.
    async fn write_outcome(&self, sent: reqwest::Result<reqwest::Response>) -> Option<bool> {
        let res = match sent {
            Ok(res) => res,
            Err(e) if self.faults && e.is_connect() => return None,
            Err(e) if self.faults => {
                let _ = e;
                return Some(false);
            }
            Err(e) => panic!("a write failed: {e}"),
        };
        let status = res.status();
        assert!(self.faults || status.is_success(), "a write answered {status}");
        if status.is_success() {
            return Some(true);
        }
        let body = res.text().await.unwrap_or_default();
        let refused = ["was not applied", "not initialised", "overloaded"].iter().any(|m| body.contains(m));
        (!refused).then_some(false)
    }
}
