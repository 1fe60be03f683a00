//! What nodes ask each other besides Raft's own messages, and how a node answers: writes forwarded to a shard's
//! leader, read indexes for linearizable reads on a follower, joining and leaving a shard's group, and who a node
//! is. The cluster port ([`crate::cluster::transport`]) carries them; a leader serves them with its group.
//!
//! A request that needs the leader and reaches another replica is refused with the leader it knows
//! ([`Refused::NotLeader`]), and the asking node goes there: one hop, never a loop between nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use openraft::async_runtime::WatchReceiver;
use openraft::errors::{ClientWriteError, LinearizableReadError, RaftError};
use openraft::{ChangeMembers, ReadPolicy};

use crate::cluster::state::Group;
use crate::cluster::types::{Applied, ClusterId, NodeAddr, Proposal, ShardRaft};

/// The log position a linearizable read must see applied, as its leader confirmed it.
pub type ReadIndex = openraft::raft::linearizable_read::ReadLogId<ShardRaft>;

/// Why a request was not served.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Refused {
    /// This replica does not lead the shard; the leader, when it knows one. Nothing was proposed.
    NotLeader(Option<(u64, NodeAddr)>),
    /// The write reached a leader, which lost its leadership before the write committed: it may or may not be
    /// applied.
    Unknown(String),
    /// Anything else; nothing was proposed.
    Failed(String),
}

/// The outcome of one forwarded write.
pub type Outcome = Result<Applied, Refused>;

/// A request of one node to another, about one shard (`Info` is about the node).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum Request {
    /// Propose these writes, in this order.
    Write(Vec<Proposal>),
    /// Confirm leadership and say which log position a linearizable read must see.
    ReadIndex,
    /// Add node `node` to the shard's group as a learner.
    Join { node: u64, addr: NodeAddr, cluster: String },
    /// Take node `node` out of the shard's group.
    Remove { node: u64 },
    /// Who are you?
    Info,
}

/// The answer to a [`Request`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub enum Response {
    /// The outcome of each write, in order.
    Written(Vec<Outcome>),
    /// The leader's id and the read index.
    ReadIndex(Result<(u64, ReadIndex), Refused>),
    /// A membership change.
    Done(Result<(), Refused>),
    /// Who the node is.
    Info(Info),
}

/// Who a node is.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Info {
    /// Its Raft node id.
    pub node: u64,
    /// Where it is reached.
    pub addr: NodeAddr,
    /// The cluster it belongs to, once it belongs to one.
    pub cluster: Option<ClusterId>,
}

/// This node's identity: fixed, but for the cluster it joins.
pub struct Identity {
    node: u64,
    addr: NodeAddr,
    cluster: RwLock<Option<ClusterId>>,
}

impl Identity {
    /// Node `node` at `addr`, member of `cluster` when it already joined one.
    pub fn new(node: u64, addr: NodeAddr, cluster: Option<ClusterId>) -> Arc<Identity> {
        Arc::new(Identity { node, addr, cluster: RwLock::new(cluster) })
    }

    /// Its Raft node id.
    pub fn node(&self) -> u64 {
        self.node
    }

    /// Where it is reached.
    pub fn addr(&self) -> &NodeAddr {
        &self.addr
    }

    /// The cluster it belongs to.
    pub fn cluster(&self) -> Option<ClusterId> {
        self.cluster.read().expect("identity lock").clone()
    }

    /// Records the cluster it now belongs to.
    pub fn set_cluster(&self, cluster: ClusterId) {
        *self.cluster.write().expect("identity lock") = Some(cluster);
    }

    /// What [`Request::Info`] answers.
    pub fn info(&self) -> Info {
        Info { node: self.node, addr: self.addr.clone(), cluster: self.cluster() }
    }
}

/// The leader `group` knows, with its address.
pub fn leader_of(group: &Group) -> Option<(u64, NodeAddr)> {
    let metrics = group.metrics();
    let m = metrics.borrow_watched();
    let id = m.current_leader?;
    let node = m.membership_config.membership().get_node(&id)?.clone();
    Some((id, node))
}

fn not_leader(group: &Group) -> Refused {
    Refused::NotLeader(leader_of(group).filter(|(id, _)| id != group.node_id()))
}

/// The outcome of one write of a batch.
fn outcome(result: openraft::raft::WriteResult<ShardRaft>) -> Outcome {
    match result {
        Ok(response) => Ok(response.response),
        Err(ClientWriteError::ForwardToLeader(f)) => {
            Err(Refused::NotLeader(f.leader_id.zip(f.leader_node).filter(|(_, n)| !n.cluster.is_empty())))
        }
        Err(ClientWriteError::LogEntryDiscarded(_)) => {
            Err(Refused::Unknown("the leader lost its leadership before the write committed".into()))
        }
        Err(e) => Err(Refused::Failed(e.to_string())),
    }
}

/// Proposes `proposals` to `group` as one batch, in order, before returning (one message to the Raft core); the
/// returned future gives each one's outcome, in the same order. The order is the log's, so a client's pipelined
/// writes to one shard apply in the order it sent them.
pub async fn propose(group: &Group, proposals: Vec<Proposal>) -> BoxFuture<'static, Vec<Outcome>> {
    let n = proposals.len();
    let stopped = |why: String| vec![Err(Refused::Failed(format!("the shard's Raft group stopped: {why}"))); n];
    match group.client_write_many(proposals).await {
        Ok(mut results) => Box::pin(async move {
            let mut outcomes = Vec::with_capacity(n);
            while let Some(result) = results.next().await {
                outcomes.push(match result {
                    Ok(result) => outcome(result),
                    Err(fatal) => Err(Refused::Unknown(format!("the leader stopped: {fatal}"))),
                });
            }
            // A stream that ended early: the leader stopped before answering the rest.
            outcomes.resize_with(n, || Err(Refused::Unknown("the leader stopped before answering".into())));
            outcomes
        }),
        Err(fatal) => {
            let failed = stopped(fatal.to_string());
            Box::pin(futures_util::future::ready(failed))
        }
    }
}

/// Confirms this replica's leadership with a majority (a read index, not a lease: no clock assumption) and
/// answers the log position a linearizable read must see applied.
pub async fn read_index(group: &Group) -> Result<(u64, ReadIndex), Refused> {
    match group.get_read_linearizer(ReadPolicy::ReadIndex).await {
        Ok(linearizer) => Ok((*group.node_id(), *linearizer.read_log_id())),
        Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(_))) => Err(not_leader(group)),
        Err(e) => Err(Refused::Failed(e.to_string())),
    }
}

/// Adds `node` to `group` as a learner (the leader promotes it to a voter once it has caught up).
async fn join(group: &Group, node: u64, addr: NodeAddr) -> Result<(), Refused> {
    if !group.is_leader() {
        return Err(not_leader(group));
    }
    let known = {
        let metrics = group.metrics();
        let m = metrics.borrow_watched();
        m.membership_config.membership().get_node(&node).cloned()
    };
    if known.as_ref() == Some(&addr) {
        return Ok(());
    }
    let change = match known {
        // A node that restarted with another address keeps its place.
        Some(_) => ChangeMembers::SetNodes(BTreeMap::from([(node, addr)])),
        None => ChangeMembers::AddNodes(BTreeMap::from([(node, addr)])),
    };
    membership_change(group, change).await
}

/// Takes `node` out of `group`: out of the voters, then out of the nodes.
async fn remove(group: &Group, node: u64) -> Result<(), Refused> {
    if !group.is_leader() {
        return Err(not_leader(group));
    }
    let (voter, known) = {
        let metrics = group.metrics();
        let m = metrics.borrow_watched();
        let membership = m.membership_config.membership();
        let found = (membership.voter_ids().any(|v| v == node), membership.get_node(&node).is_some());
        found
    };
    if voter {
        membership_change(group, ChangeMembers::RemoveVoters(BTreeSet::from([node]))).await?;
    }
    if known {
        membership_change(group, ChangeMembers::RemoveNodes(BTreeSet::from([node]))).await?;
    }
    Ok(())
}

async fn membership_change(group: &Group, change: ChangeMembers<u64, NodeAddr>) -> Result<(), Refused> {
    match group.change_membership(change, false).await {
        Ok(_) => Ok(()),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(not_leader(group)),
        Err(e) => Err(Refused::Failed(e.to_string())),
    }
}

/// Answers `request` about the shard `group` serves (every request but a write, which the connection proposes
/// in its order before reading the next one: [`propose`]).
pub async fn answer(group: &Group, identity: &Identity, request: Request) -> Response {
    match request {
        Request::Write(proposals) => Response::Written(propose(group, proposals).await.await),
        Request::ReadIndex => Response::ReadIndex(read_index(group).await),
        Request::Join { node, addr, cluster } => {
            let ours = identity.cluster().map(|c| c.id);
            if ours.as_deref() != Some(cluster.as_str()) {
                let message = match ours {
                    Some(id) => format!("this node belongs to cluster {id}, not {cluster}"),
                    None => "this node belongs to no cluster yet".to_string(),
                };
                return Response::Done(Err(Refused::Failed(message)));
            }
            Response::Done(join(group, node, addr).await)
        }
        Request::Remove { node } => Response::Done(remove(group, node).await),
        Request::Info => Response::Info(identity.info()),
    }
}
