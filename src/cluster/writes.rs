//! The replicated write path: a shard's writes go to its Raft group's leader, here or one hop away.
//!
//! Every write of every protocol reaches [`ReplicatedWrites`] through the node's write seam
//! ([`ShardWrites`]). One task per shard takes what is queued, in order, and
//! - when this node leads the shard, proposes it to the local group;
//! - when another node does, sends it over the cluster port to that node, which proposes it in the order it
//!   arrived (one connection per node pair, so one order);
//! - when no leader is known, waits for one.
//!
//! A write is answered with the outcome its apply decided (identical on every replica) once it is committed by a
//! majority and applied by the leader. A write no leader accepted within `REQUEST_TIMEOUT_MS` fails as
//! [`Error::NoQuorum`]; its message says whether it may still be applied (it reached a leader) or not.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

use crate::cluster::service::{self, leader_of, Outcome, Refused, Request, Response};
use crate::cluster::state::Group;
use crate::cluster::transport::Peers;
use crate::cluster::types::{Applied, Proposal};
use crate::command::{Command, Reply};
use crate::error::{Error, Result};
use crate::node::writes::{Answer, ShardWrites};
use crate::placement::ShardId;
use crate::shard::Refusal;

/// How often a write waiting for a leader looks again.
const LEADER_POLL: Duration = Duration::from_millis(20);
/// Most writes sent as one request.
const MAX_BATCH: usize = 512;

/// What a shard's writes need to reach its leader.
#[derive(Clone)]
pub struct Route {
    /// The local replica's group.
    pub group: Group,
    /// Connections to the other nodes.
    pub peers: Arc<Peers>,
    /// Longest wait for a leader or a majority.
    pub timeout: Duration,
    /// Whether this node belongs to an initialised cluster (before that, every write is refused).
    pub initialised: Arc<dyn Fn() -> bool + Send + Sync>,
    /// The index of the last entry the local replica's file and cache hold.
    pub applied: tokio::sync::watch::Receiver<Option<u64>>,
}

/// One queued write.
struct Queued {
    proposal: Proposal,
    deadline: Instant,
    reply: Slot,
}

/// Where a write's answer goes; counts the write answered when it is used or dropped.
struct Slot {
    tx: Option<oneshot::Sender<Result<Reply>>>,
    in_flight: Arc<AtomicUsize>,
}

impl Slot {
    fn send(mut self, answer: Result<Reply>) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(answer);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where one shard's writes go in cluster mode.
pub struct ReplicatedWrites {
    shard: ShardId,
    queue: mpsc::UnboundedSender<Queued>,
    /// Writes queued and not yet answered, and the most there may be.
    in_flight: Arc<AtomicUsize>,
    depth: usize,
    timeout: Duration,
}

impl ReplicatedWrites {
    /// The writes of shard `shard`, which queues at most `depth` unanswered writes; its task runs on `runtime`.
    pub fn start(shard: ShardId, route: Route, depth: usize, runtime: &tokio::runtime::Handle) -> ReplicatedWrites {
        let (queue, rx) = mpsc::unbounded_channel();
        let timeout = route.timeout;
        runtime.spawn(forward(shard, route, rx));
        ReplicatedWrites { shard, queue, in_flight: Arc::new(AtomicUsize::new(0)), depth, timeout }
    }
}

impl ShardWrites for ReplicatedWrites {
    fn shard(&self) -> ShardId {
        self.shard
    }

    fn try_submit(&self, cmd: Command) -> std::result::Result<Answer, Refusal> {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= self.depth {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Full(Box::new(cmd)));
        }
        let (tx, answer) = oneshot::channel();
        let queued = Queued {
            proposal: Proposal { command: cmd },
            deadline: Instant::now() + self.timeout,
            reply: Slot { tx: Some(tx), in_flight: self.in_flight.clone() },
        };
        if self.queue.send(queued).is_err() {
            return Err(Refusal::Stopped);
        }
        Ok(answer)
    }
}

/// The task of one shard: takes queued writes in order and sends each batch where the leader is.
async fn forward(shard: ShardId, route: Route, mut queue: mpsc::UnboundedReceiver<Queued>) {
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let writes = std::mem::take(&mut batch);
        route_batch(shard, &route, writes).await;
    }
}

/// Sends `writes` to the shard's leader, waiting for one while none is known; each write is answered by a task
/// of its own, so the next batch is sent at once.
fn route_batch<'a>(shard: ShardId, route: &'a Route, writes: Vec<Queued>) -> BoxFuture<'a, ()> {
    Box::pin(async move {
        let mut writes = writes;
        loop {
            let now = Instant::now();
            let (late, live): (Vec<_>, Vec<_>) = writes.into_iter().partition(|w| w.deadline <= now);
            for w in late {
                w.reply.send(Err(no_leader(shard, route.timeout)));
            }
            if live.is_empty() {
                return;
            }
            if !(route.initialised)() {
                for w in live {
                    w.reply.send(Err(not_initialised()));
                }
                return;
            }
            writes = live;
            match leader_of(&route.group) {
                Some((id, _)) if id == *route.group.node_id() => {
                    let (proposals, waiting) = split(writes);
                    // Kept (a clone shares the value's bytes) to propose again if this replica is not yet, or no
                    // longer, the leader.
                    let proposals_again = proposals.clone();
                    let outcomes = service::propose(&route.group, proposals).await;
                    tokio::spawn(settle(shard, route.clone(), waiting, proposals_again, outcomes));
                    return;
                }
                Some((_, addr)) => {
                    let (proposals, waiting) = split(writes);
                    match route.peers.send(&addr.cluster, shard.0, Request::Write(proposals.clone())).await {
                        Ok(answer) => {
                            let outcomes = Box::pin(async move {
                                match answer.await {
                                    Ok(Response::Written(outcomes)) => outcomes,
                                    Ok(_) => vec![Err(Refused::Unknown("the leader answered another request".into()))],
                                    Err(e) => {
                                        vec![Err(Refused::Unknown(format!("the connection to the leader broke: {e}")))]
                                    }
                                }
                            });
                            tokio::spawn(settle(shard, route.clone(), waiting, proposals, outcomes));
                            return;
                        }
                        // Not sent: nothing was proposed, so the writes may go again.
                        Err(e) => {
                            tracing::debug!(%shard, leader = %addr.cluster, error = %e, "cannot reach the leader");
                            writes = join(proposals, waiting);
                        }
                    }
                }
                None => {}
            }
            tokio::time::sleep(LEADER_POLL).await;
        }
    })
}

/// A write's proposal and where its answer goes.
struct Waiting {
    deadline: Instant,
    reply: Slot,
}

fn split(writes: Vec<Queued>) -> (Vec<Proposal>, Vec<Waiting>) {
    writes.into_iter().map(|w| (w.proposal, Waiting { deadline: w.deadline, reply: w.reply })).unzip()
}

fn join(proposals: Vec<Proposal>, waiting: Vec<Waiting>) -> Vec<Queued> {
    proposals
        .into_iter()
        .zip(waiting)
        .map(|(proposal, w)| Queued { proposal, deadline: w.deadline, reply: w.reply })
        .collect()
}

/// Answers a batch of writes when their outcomes arrive (from the local group or the leader they were sent to),
/// or as timed out when the batch's deadline passes first.
async fn settle(
    shard: ShardId,
    route: Route,
    waiting: Vec<Waiting>,
    proposals: Vec<Proposal>,
    outcomes: BoxFuture<'static, Vec<Outcome>>,
) {
    let deadline = waiting.iter().map(|w| w.deadline).max().unwrap_or_else(Instant::now);
    let outcomes = match tokio::time::timeout_at(deadline.into(), outcomes).await {
        Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
        Err(_) => Vec::new(),
    };
    // Too few outcomes (a timeout, or an answer that does not match the request): the rest are unknown.
    let outcomes = outcomes.into_iter().chain(std::iter::repeat_with(|| Err(())));
    let mut again = Vec::new();
    for ((w, proposal), outcome) in waiting.into_iter().zip(proposals).zip(outcomes) {
        if let Some(retry) = finish(shard, &route, w, proposal, outcome) {
            again.push(retry);
        }
    }
    if !again.is_empty() {
        route_batch(shard, &route, again).await;
    }
}

/// Answers one write: its applied outcome, or a refusal. A write no leader took (`NotLeader`) is handed back, to
/// go again, while its deadline has not passed.
fn finish(
    shard: ShardId,
    route: &Route,
    w: Waiting,
    proposal: Proposal,
    outcome: std::result::Result<Outcome, ()>,
) -> Option<Queued> {
    let answer = match outcome {
        Ok(Ok(Applied(Some(result)))) => result,
        Ok(Ok(Applied(None))) => Err(Error::Internal("a write's entry carried no command".into())),
        Ok(Err(Refused::NotLeader(_))) if Instant::now() < w.deadline => {
            return Some(Queued { proposal, deadline: w.deadline, reply: w.reply });
        }
        Ok(Err(Refused::NotLeader(_))) => Err(no_leader(shard, route.timeout)),
        Ok(Err(Refused::Unknown(why))) => Err(Error::NoQuorum(format!(
            "shard {shard}: {why}; the write may or may not be applied (read it back before retrying)"
        ))),
        Ok(Err(Refused::Failed(why))) => Err(Error::Unavailable(format!("shard {shard}: {why}"))),
        Err(()) => Err(Error::NoQuorum(format!(
            "shard {shard}: the write reached its leader but was not committed within {} ms (no majority of \
             its replicas answered); it may still be applied",
            route.timeout.as_millis()
        ))),
    };
    w.reply.send(answer);
    None
}

fn no_leader(shard: ShardId, timeout: Duration) -> Error {
    Error::NoQuorum(format!(
        "shard {shard} has no leader: no majority of its replicas answered within {} ms; the write was not applied",
        timeout.as_millis()
    ))
}

/// The refusal of every data request before the cluster is initialised.
pub fn not_initialised() -> Error {
    Error::Unavailable("cluster not initialised; run shale cluster init".into())
}
