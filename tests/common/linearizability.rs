//! A linearizability checker for recorded histories of key-value operations (the Wing & Gong search with
//! Lowe's memoization, as in Knossos and Porcupine).
//!
//! A history is what concurrent clients saw: each operation's invocation and completion times (from one
//! monotonic clock) and its outcome. It is linearizable when every operation can be placed at one instant between
//! its invocation and its completion so that the resulting sequence is legal for one copy of the data. An
//! operation whose outcome is unknown (a timeout, a broken connection) may have taken effect or not: it has no
//! completion time and the search may place it anywhere after its invocation, or leave it out.
//!
//! Linearizability is local (Herlihy & Wing): a history is linearizable exactly when its restriction to each key
//! is, so the checker splits the history by key and searches each one alone.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// One operation on one key, with the outcome the client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// A read of a register; `None` = absent.
    Read { seen: Option<u64> },
    /// An unconditional write of a register.
    Write { value: u64 },
    /// A compare-and-set (`If-Match` with the ETag of `expect`, or `If-None-Match: *` when `expect` is `None`):
    /// `done` says whether it was applied (false = 412).
    Cas { expect: Option<u64>, value: u64, done: bool },
    /// An increment of a counter (its new value is not reported).
    Add { delta: i64 },
    /// A read of a counter.
    Count { seen: i64 },
    /// An increment of a counter that answers the new value (Redis `INCRBY`, `CTR.INCRBY`).
    AddGet { delta: i64, seen: i64 },
}

/// One recorded operation.
#[derive(Debug, Clone)]
pub struct Event {
    /// The key (a register or a counter; one key is never both).
    pub key: String,
    pub op: Op,
    /// When the client sent it.
    pub call: Duration,
    /// When the client got the answer; `None` when the outcome is unknown.
    pub ret: Option<Duration>,
}

/// The state of one key: a register's value, or a counter's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum State {
    Register(Option<u64>),
    Counter(i64),
}

/// The state after `op` in `state`, or `None` when `op`'s outcome is impossible there.
fn step(state: State, op: &Op, completed: bool) -> Option<State> {
    match (state, op) {
        (State::Register(v), Op::Read { seen }) => (v == *seen).then_some(state),
        (State::Register(_), Op::Write { value }) => Some(State::Register(Some(*value))),
        (State::Register(v), Op::Cas { expect, value, done }) => {
            let holds = v == *expect;
            if !completed {
                // Unknown outcome: it applied if its condition held, else it changed nothing.
                return Some(if holds { State::Register(Some(*value)) } else { state });
            }
            match (holds, done) {
                (true, true) => Some(State::Register(Some(*value))),
                (false, false) => Some(state),
                _ => None,
            }
        }
        (State::Counter(n), Op::Add { delta }) => Some(State::Counter(n.wrapping_add(*delta))),
        (State::Counter(n), Op::Count { seen }) => (n == *seen).then_some(state),
        (State::Counter(n), Op::AddGet { delta, seen }) => {
            let next = n.wrapping_add(*delta);
            // Unknown outcome: it may have applied; its answer was never seen.
            (!completed || next == *seen).then_some(State::Counter(next))
        }
        _ => None,
    }
}

/// Why a history is not linearizable: the key whose operations admit no legal order.
#[derive(Debug)]
pub struct Violation {
    pub key: String,
    pub events: Vec<Event>,
}

/// Checks `history`; `Err` names the first key whose operations cannot be linearized. Every key starts absent (a
/// register) or at 0 (a counter).
pub fn check(history: &[Event]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&str, Vec<Event>> = BTreeMap::new();
    for e in history {
        by_key.entry(&e.key).or_default().push(e.clone());
    }
    for (key, events) in by_key {
        if !check_key(&events) {
            return Err(Violation { key: key.to_string(), events });
        }
    }
    Ok(())
}

/// The search for one key.
fn check_key(events: &[Event]) -> bool {
    let counter = events.iter().any(|e| matches!(e.op, Op::Add { .. } | Op::Count { .. } | Op::AddGet { .. }));
    let start = if counter { State::Counter(0) } else { State::Register(None) };
    let mut events = events.to_vec();
    events.sort_by_key(|e| e.call);
    let completed: Vec<usize> = (0..events.len()).filter(|&i| events[i].ret.is_some()).collect();
    let mut search = Search { events: &events, done: vec![false; events.len()], seen: HashSet::new() };
    search.run(start, completed.len())
}

struct Search<'a> {
    events: &'a [Event],
    /// Which operations the current partial order has placed.
    done: Vec<bool>,
    /// (placed set, state) pairs already explored without success.
    seen: HashSet<(Vec<u64>, State)>,
}

impl Search<'_> {
    /// Whether the operations not yet placed can follow, from `state`, with `left` completed ones to place.
    fn run(&mut self, state: State, left: usize) -> bool {
        if left == 0 {
            return true; // what remains has unknown outcomes: it may never have taken effect
        }
        // An operation may come next only if no operation still unplaced completed before it was invoked.
        let horizon = (0..self.events.len())
            .filter(|&i| !self.done[i])
            .filter_map(|i| self.events[i].ret)
            .min()
            .unwrap_or(Duration::MAX);
        for i in 0..self.events.len() {
            let e = &self.events[i];
            if self.done[i] || e.call > horizon {
                continue;
            }
            let Some(next) = step(state, &e.op, e.ret.is_some()) else { continue };
            self.done[i] = true;
            let key = (self.placed(), next);
            if self.seen.insert(key) && self.run(next, left - usize::from(e.ret.is_some())) {
                return true;
            }
            self.done[i] = false;
        }
        false
    }

    fn placed(&self) -> Vec<u64> {
        let mut bits = vec![0u64; self.done.len().div_ceil(64)];
        for (i, &d) in self.done.iter().enumerate() {
            if d {
                bits[i / 64] |= 1 << (i % 64);
            }
        }
        bits
    }
}
