//! A cluster node: one Raft group per shard, the cluster port, and the tasks that form and keep the cluster.
//!
//! - Start: each shard's Raft log and state machine are opened and its group started on the node's own tokio
//!   runtime; the cluster port serves them to peers that prove the secret.
//! - Init ([`Cluster::init`], once, on one node): records a new cluster id, makes this node the only voter of
//!   every shard, and snapshots every shard so that nodes that join get the data that predates the log (a
//!   single-node data dir becomes the cluster's first node this way).
//! - Join: a node that is not yet a member of every shard asks the `JOIN` addresses, until one belongs to a
//!   cluster; it records that cluster in its manifest (a node never joins a second one) and asks each shard's
//!   leader to add it as a learner.
//! - Keep: each shard's leader promotes caught-up learners to voters while the shard has fewer than `REPLICAS`
//!   voters, so a node that joins never weakens a majority, and a removed voter is replaced by a standby.
//! - Remove ([`Cluster::remove`]): each shard's leader takes the node out.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::{ChangeMembers, SnapshotPolicy};
use tokio::net::TcpListener;

use crate::cluster::log::RaftLog;
use crate::cluster::reads::ReadIndexes;
use crate::cluster::service::{self, leader_of, Identity, Refused, Request, Response};
use crate::cluster::state::{Group, ShardState};
use crate::cluster::transport::{serve, Groups, Peers, Security};
use crate::cluster::types::ClusterId;
use crate::cluster::writes::{ReplicatedWrites, Route};
use crate::error::{Error, Result};
use crate::node::reads::Linearize;
use crate::node::writes::ShardWrites;
use crate::placement::ShardId;
use crate::shard::ShardHandle;

/// Raft's heartbeat, in milliseconds.
const HEARTBEAT_MS: u64 = 100;
/// A follower that hears no leader for a random time in this range, in milliseconds, starts an election.
/// Seven heartbeats or more, so a loaded 2-core machine does not elect needlessly; short enough that a dead
/// leader is replaced within about a second and a half.
const ELECTION_TIMEOUT_MS: (u64, u64) = (700, 1400);
/// A learner this close to the leader's last entry is caught up and may become a voter.
const CAUGHT_UP_ENTRIES: u64 = 100;
/// How often a joining node asks again, and a leader looks for learners to promote.
const MEMBERSHIP_POLL: Duration = Duration::from_millis(500);

/// How many log entries shard `shard` of node `node` lets pass between its snapshots: `entries` and up to half
/// as many again, a fixed share for each node and shard. Every replica of a shard reaches a given log index at
/// about the same time, and every shard of a busy node about together; with one count for all, every node would
/// copy every shard file at once, starving the writes of the CPU for the length of a copy.
fn snapshot_every(entries: u64, node: u64, shard: u32) -> u64 {
    let share = xxhash_rust::xxh3::xxh3_64(&[node.to_le_bytes(), u64::from(shard).to_le_bytes()].concat()) % 1000;
    let extra = u128::from(entries / 2) * u128::from(share) / 1000;
    entries.saturating_add(extra as u64)
}

/// Records the cluster a node belongs to in its manifest.
pub type RecordCluster = Box<dyn Fn(&ClusterId) -> io::Result<()> + Send + Sync>;

/// What a cluster node needs to start.
pub struct ClusterConfig {
    /// This node.
    pub identity: Arc<Identity>,
    /// `host:port` the cluster port binds.
    pub listen: String,
    /// Cluster addresses of the nodes to join.
    pub join: Vec<String>,
    /// `REPLICAS`, for a cluster this node initialises.
    pub replicas: u32,
    /// `CLUSTER_SECRET`.
    pub secret: Vec<u8>,
    /// This node's certificate (`TLS_CERT`/`TLS_KEY`): the cluster port speaks TLS when it is set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// `REQUEST_TIMEOUT_MS`.
    pub timeout: Duration,
    /// Where each shard's Raft log and snapshots live.
    pub data_dir: PathBuf,
    /// Unanswered writes one shard may queue.
    pub queue_depth: usize,
    /// Log entries between two snapshots of a shard; a fifth of them stay below a snapshot, so a briefly lagging
    /// follower catches up from the log rather than a whole copy.
    pub snapshot_entries: u64,
    /// Records the cluster this node belongs to in its manifest, durably, before it acts as a member.
    pub record: RecordCluster,
}

/// A running cluster node.
pub struct Cluster {
    runtime: Option<tokio::runtime::Runtime>,
    inner: Arc<Inner>,
    addr: std::net::SocketAddr,
}

struct Inner {
    identity: Arc<Identity>,
    groups: Vec<Group>,
    peers: Arc<Peers>,
    routes: Vec<Route>,
    join: Vec<String>,
    replicas: u32,
    timeout: Duration,
    record: RecordCluster,
}

impl Cluster {
    /// Starts the groups of `shards` and the cluster port.
    pub fn start(config: ClusterConfig, shards: &[ShardHandle]) -> io::Result<Cluster> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("shale-cluster")
            .enable_all()
            .build()?;
        let raft_config = openraft::Config {
            cluster_name: "shale".into(),
            heartbeat_interval: HEARTBEAT_MS,
            election_timeout_min: ELECTION_TIMEOUT_MS.0,
            election_timeout_max: ELECTION_TIMEOUT_MS.1,
            max_in_snapshot_log_to_keep: config.snapshot_entries / 5,
            ..Default::default()
        };
        let security = Security::new(config.secret.clone().into(), config.tls.clone());
        // Connections to peers leave from the address the node listens on, when it names one.
        let source = config
            .listen
            .rsplit_once(':')
            .and_then(|(host, _)| host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().ok());
        let peers = Peers::new(config.identity.node(), security.clone(), source.filter(|ip| !ip.is_unspecified()));
        let groups_served = Groups::new(config.identity.clone());
        let identity = config.identity.clone();
        let (groups, applied, listener) = runtime.block_on(async {
            let mut groups = Vec::new();
            let mut applied = Vec::new();
            let logs = RaftLog::open(&config.data_dir.join("raft"), shards.len() as u32)?;
            for (shard, log) in shards.iter().zip(logs) {
                let i = shard.id().0;
                let snapshots = config.data_dir.join(format!("shard-{i}.snapshots"));
                let state = ShardState::new(shard.clone(), snapshots.clone())?;
                applied.push(state.applied());
                let every = snapshot_every(config.snapshot_entries, identity.node(), i);
                let shard_config =
                    openraft::Config { snapshot_policy: SnapshotPolicy::LogsSinceLast(every), ..raft_config.clone() };
                let shard_config = Arc::new(shard_config.validate().map_err(io::Error::other)?);
                let group = Group::new(identity.node(), shard_config, peers.network(i), log, state)
                    .await
                    .map_err(|e| io::Error::other(format!("starting shard {i}'s Raft group: {e}")))?;
                groups_served.insert(i, group.clone(), snapshots);
                groups.push(group);
            }
            let listener = TcpListener::bind(&config.listen).await?;
            io::Result::Ok((groups, applied, listener))
        })?;
        let addr = listener.local_addr()?;
        runtime.spawn(serve(listener, groups_served, security));

        let initialised = {
            let identity = identity.clone();
            Arc::new(move || identity.cluster().is_some()) as Arc<dyn Fn() -> bool + Send + Sync>
        };
        let routes = groups
            .iter()
            .zip(applied)
            .map(|(group, applied)| Route {
                group: group.clone(),
                peers: peers.clone(),
                timeout: config.timeout,
                initialised: initialised.clone(),
                applied,
            })
            .collect();
        let inner = Arc::new(Inner {
            identity,
            groups,
            peers,
            routes,
            join: config.join,
            replicas: config.replicas,
            timeout: config.timeout,
            record: config.record,
        });
        runtime.spawn(inner.clone().join_loop());
        for shard in 0..inner.groups.len() {
            runtime.spawn(inner.clone().keep(shard));
        }
        tracing::info!(%addr, node = inner.identity.node(), "cluster port listening");
        Ok(Cluster { runtime: Some(runtime), inner, addr })
    }

    /// The bound cluster port.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    fn handle(&self) -> &tokio::runtime::Handle {
        self.runtime.as_ref().expect("the runtime runs until stop").handle()
    }

    /// Where each shard's writes go, in shard order.
    pub fn writes(&self, queue_depth: usize) -> Vec<Arc<dyn ShardWrites>> {
        self.inner
            .routes
            .iter()
            .enumerate()
            .map(|(i, route)| {
                Arc::new(ReplicatedWrites::start(ShardId(i as u32), route.clone(), queue_depth, self.handle()))
                    as Arc<dyn ShardWrites>
            })
            .collect()
    }

    /// What makes reads linearizable.
    pub fn linearize(&self) -> Arc<dyn Linearize> {
        ReadIndexes::new(self.inner.routes.clone())
    }

    /// Runs `f` on the cluster's runtime and waits for it from any runtime.
    async fn run<T: Send + 'static>(&self, f: impl std::future::Future<Output = T> + Send + 'static) -> Result<T> {
        self.handle().spawn(f).await.map_err(|e| Error::Internal(format!("a cluster task failed: {e}")))
    }

    /// Forms a new cluster with this node as its first member (`shale cluster init`).
    pub async fn init(&self) -> Result<ClusterId> {
        let inner = self.inner.clone();
        self.run(async move { inner.init().await }).await?
    }

    /// Takes node `node` out of every shard (`shale cluster remove`).
    pub async fn remove(&self, node: u64) -> Result<()> {
        let inner = self.inner.clone();
        self.run(async move { inner.remove(node).await }).await?
    }

    /// What `GET /cluster/status` answers.
    pub async fn status(&self) -> Result<ClusterStatus> {
        let inner = self.inner.clone();
        self.run(async move { inner.status().await }).await
    }

    /// Sets the gauges read at scrape time, per shard: term, whether this node leads, last log, committed,
    /// applied and snapshot indexes, and on the leader each replica's lag in entries.
    pub fn record_gauges(&self) {
        for (i, group) in self.inner.groups.iter().enumerate() {
            let metrics = group.metrics();
            let m = metrics.borrow_watched().clone();
            let shard = i.to_string();
            let index = |l: Option<openraft::alias::LogIdOf<crate::cluster::types::ShardRaft>>| {
                l.map_or(0.0, |l| l.index as f64)
            };
            metrics::gauge!("shale_raft_term", "shard" => shard.clone()).set(m.current_term as f64);
            let leads = m.current_leader == Some(self.inner.me());
            metrics::gauge!("shale_raft_is_leader", "shard" => shard.clone()).set(if leads { 1.0 } else { 0.0 });
            let last = m.last_log_index.unwrap_or(0);
            metrics::gauge!("shale_raft_last_log_index", "shard" => shard.clone()).set(last as f64);
            metrics::gauge!("shale_raft_commit_index", "shard" => shard.clone()).set(index(m.local_committed));
            let applied = self.inner.routes[i].applied.borrow().map_or(0.0, |a| a as f64);
            metrics::gauge!("shale_raft_applied_index", "shard" => shard.clone()).set(applied);
            metrics::gauge!("shale_raft_snapshot_index", "shard" => shard.clone()).set(index(m.snapshot));
            for (peer, matched) in m.replication.iter().flatten() {
                let lag = last.saturating_sub(matched.map_or(0, |l| l.index));
                metrics::gauge!("shale_raft_replication_lag_entries", "shard" => shard.clone(), "peer" => format!("{peer:016x}"))
                    .set(lag as f64);
            }
        }
    }

    /// Why this node is not ready to serve (`/readyz`), or `Ok`.
    pub fn ready(&self) -> std::result::Result<(), String> {
        self.inner.ready()
    }

    /// Stops every group and the cluster port.
    pub fn stop(mut self) {
        if let Some(runtime) = self.runtime.take() {
            let groups = self.inner.groups.clone();
            runtime.block_on(async {
                for group in groups {
                    let _ = group.shutdown().await;
                }
            });
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Inner {
    fn me(&self) -> u64 {
        self.identity.node()
    }

    async fn init(self: Arc<Self>) -> Result<ClusterId> {
        if let Some(c) = self.identity.cluster() {
            return Err(Error::Conflict(format!("this node already belongs to cluster {}", c.id)));
        }
        for addr in self.join.iter().filter(|a| **a != self.identity.addr().cluster) {
            if let Ok(Response::Info(info)) = self.peers.ask(addr, 0, Request::Info, Duration::from_secs(2)).await {
                if let Some(c) = info.cluster {
                    return Err(Error::Conflict(format!(
                        "node {} at {addr} already belongs to cluster {}; join that cluster instead",
                        info.node, c.id
                    )));
                }
            }
        }
        let id = crate::random::hex_id();
        let cluster = ClusterId { id, replicas: self.replicas };
        (self.record)(&cluster).map_err(|e| Error::Internal(format!("recording the cluster id: {e}")))?;
        self.identity.set_cluster(cluster.clone());
        let me = BTreeMap::from([(self.me(), self.identity.addr().clone())]);
        for (i, group) in self.groups.iter().enumerate() {
            group
                .initialize(me.clone())
                .await
                .map_err(|e| Error::Internal(format!("initialising shard {i}'s Raft group: {e}")))?;
        }
        // The shards may hold data older than their logs (a single node's data dir): snapshot them and drop the
        // log below, so that a joining node starts from a copy of the file.
        for (i, group) in self.groups.iter().enumerate() {
            let wait = Some(Duration::from_secs(30));
            let applied = group
                .wait(wait)
                .metrics(|m| m.current_leader == Some(m.id) && m.last_applied.is_some(), "leader of a new cluster")
                .await
                .map_err(|e| Error::Internal(format!("shard {i} did not elect itself: {e}")))?
                .last_applied
                .map_or(0, |l| l.index);
            let fatal = |e: openraft::errors::Fatal<_>| Error::Internal(format!("shard {i}: {e}"));
            group.trigger().snapshot().await.map_err(fatal)?;
            group
                .wait(wait)
                .metrics(|m| m.snapshot.is_some_and(|s| s.index >= applied), "the first snapshot")
                .await
                .map_err(|e| Error::Internal(format!("shard {i}'s first snapshot: {e}")))?;
            group.trigger().purge_log(applied).await.map_err(fatal)?;
        }
        tracing::info!(cluster = %cluster.id, replicas = cluster.replicas, "cluster initialised");
        Ok(cluster)
    }

    /// Whether this node is in the membership of shard `i`'s group.
    fn member_of(&self, i: usize) -> bool {
        let metrics = self.groups[i].metrics();
        let m = metrics.borrow_watched();
        m.membership_config.membership().get_node(&self.me()).is_some()
    }

    /// Until this node is a member of every shard: find a cluster through `JOIN`, and ask to be added.
    async fn join_loop(self: Arc<Self>) {
        let mut warned = false;
        loop {
            let missing: Vec<usize> = (0..self.groups.len()).filter(|&i| !self.member_of(i)).collect();
            if missing.is_empty() {
                return;
            }
            for addr in self.join.iter().filter(|a| **a != self.identity.addr().cluster) {
                let Ok(Response::Info(info)) = self.peers.ask(addr, 0, Request::Info, Duration::from_secs(2)).await
                else {
                    continue;
                };
                let Some(theirs) = info.cluster else { continue };
                match self.identity.cluster() {
                    Some(ours) if ours.id != theirs.id => {
                        if !warned {
                            tracing::error!(ours = %ours.id, theirs = %theirs.id, %addr, "a JOIN address belongs to another cluster; not joining it");
                            warned = true;
                        }
                        continue;
                    }
                    Some(_) => {}
                    None => {
                        if let Err(e) = (self.record)(&theirs) {
                            tracing::error!(error = %e, "cannot record the cluster id in the manifest");
                            continue;
                        }
                        self.identity.set_cluster(theirs.clone());
                        tracing::info!(cluster = %theirs.id, via = %addr, "joining the cluster");
                    }
                }
                for &i in &missing {
                    let request = || Request::Join {
                        node: self.me(),
                        addr: self.identity.addr().clone(),
                        cluster: theirs.id.clone(),
                    };
                    if let Err(e) = self.ask_leader(i, addr, request).await {
                        tracing::debug!(shard = i, error = %e, "joining a shard failed; retrying");
                    }
                }
                break;
            }
            tokio::time::sleep(MEMBERSHIP_POLL).await;
        }
    }

    /// Sends a membership request about shard `i` to its leader, starting at `addr` and following redirects.
    async fn ask_leader(&self, i: usize, addr: &str, request: impl Fn() -> Request) -> Result<()> {
        let deadline = Instant::now() + self.timeout;
        let mut at = addr.to_string();
        let mut failure = None;
        while Instant::now() < deadline {
            let answer = if at == self.identity.addr().cluster {
                Ok(service::answer(&self.groups[i], &self.identity, request()).await)
            } else {
                self.peers.ask(&at, i as u32, request(), self.timeout).await
            };
            match answer {
                Ok(Response::Done(Ok(()))) => return Ok(()),
                Ok(Response::Done(Err(Refused::NotLeader(Some((_, leader)))))) => at = leader.cluster,
                // Such as a membership change racing another one (a learner being promoted): try again.
                Ok(Response::Done(Err(Refused::Failed(why)))) => {
                    failure = Some(why);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    if let Some((_, leader)) = leader_of(&self.groups[i]) {
                        at = leader.cluster;
                    }
                }
            }
        }
        Err(match failure {
            Some(why) => Error::Unavailable(format!("shard {i}: {why}")),
            None => Error::NoQuorum(format!("shard {i}: no leader answered within {} ms", self.timeout.as_millis())),
        })
    }

    /// On shard `i`'s leader: promote caught-up learners while the shard has fewer voters than `REPLICAS`.
    async fn keep(self: Arc<Self>, i: usize) {
        let group = &self.groups[i];
        let leader_changes = metrics::counter!("shale_raft_leader_changes_total", "shard" => i.to_string());
        let mut leader = None;
        loop {
            tokio::time::sleep(MEMBERSHIP_POLL).await;
            let now = group.metrics().borrow_watched().current_leader;
            if now != leader {
                if now.is_some() {
                    leader_changes.increment(1);
                }
                leader = now;
            }
            let Some(cluster) = self.identity.cluster() else { continue };
            if !group.is_leader() {
                continue;
            }
            let promote: BTreeSet<u64> = {
                let metrics = group.metrics();
                let m = metrics.borrow_watched();
                let membership = m.membership_config.membership();
                if m.membership_config.membership().get_joint_config().len() > 1 {
                    continue;
                }
                let voters = membership.voter_ids().count() as u32;
                let last = m.last_log_index.unwrap_or(0);
                let matched = |id: &u64| -> u64 {
                    m.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map_or(0, |l| l.index)
                };
                membership
                    .learner_ids()
                    .filter(|id| matched(id) + CAUGHT_UP_ENTRIES >= last)
                    .take(cluster.replicas.saturating_sub(voters) as usize)
                    .collect()
            };
            if promote.is_empty() {
                continue;
            }
            match group.change_membership(ChangeMembers::AddVoterIds(promote.clone()), false).await {
                Ok(_) => tracing::info!(shard = i, voters = ?promote, "promoted caught-up learners to voters"),
                Err(e) => tracing::debug!(shard = i, error = %e, "promoting learners failed; retrying"),
            }
        }
    }

    async fn remove(self: Arc<Self>, node: u64) -> Result<()> {
        if self.identity.cluster().is_none() {
            return Err(crate::cluster::writes::not_initialised());
        }
        let known = (0..self.groups.len()).any(|i| {
            let metrics = self.groups[i].metrics();
            let m = metrics.borrow_watched();
            m.membership_config.membership().get_node(&node).is_some()
        });
        if !known {
            return Err(Error::NotFound(format!("node {node:016x} is not a member of this cluster")));
        }
        for i in 0..self.groups.len() {
            let start =
                leader_of(&self.groups[i]).map_or_else(|| self.identity.addr().cluster.clone(), |(_, a)| a.cluster);
            self.ask_leader(i, &start, || Request::Remove { node }).await?;
        }
        tracing::info!(node = format!("{node:016x}"), "node removed from every shard");
        Ok(())
    }

    fn ready(&self) -> std::result::Result<(), String> {
        if self.identity.cluster().is_none() {
            return Err("cluster not initialised; run shale cluster init".into());
        }
        for (i, group) in self.groups.iter().enumerate() {
            let metrics = group.metrics();
            let m = metrics.borrow_watched();
            if m.membership_config.membership().get_node(&self.me()).is_none() {
                return Err(format!("shard {i}: this node has not joined it yet"));
            }
            if m.current_leader.is_none() {
                return Err(format!("shard {i} has no leader"));
            }
            let committed = m.local_committed.map_or(0, |l| l.index);
            let applied = self.routes[i].applied.borrow().unwrap_or(0);
            if applied < committed {
                return Err(format!("shard {i}: catching up ({applied} of {committed} entries applied)"));
            }
        }
        Ok(())
    }

    async fn status(self: Arc<Self>) -> ClusterStatus {
        let mut nodes = BTreeMap::<u64, NodeStatus>::new();
        let mut shards = Vec::new();
        for (i, group) in self.groups.iter().enumerate() {
            let metrics = group.metrics();
            let m = metrics.borrow_watched().clone();
            let membership = m.membership_config.membership();
            for (id, addr) in membership.nodes() {
                nodes.entry(*id).or_insert_with(|| NodeStatus {
                    id: format!("{id:016x}"),
                    cluster_addr: addr.cluster.clone(),
                    api_addr: addr.api.clone(),
                    reachable: None,
                });
            }
            let last = m.last_log_index.unwrap_or(0);
            let lag = m.replication.as_ref().map(|r| {
                r.iter()
                    .map(|(id, matched)| (format!("{id:016x}"), last.saturating_sub(matched.map_or(0, |l| l.index))))
                    .collect()
            });
            shards.push(ShardStatus {
                shard: i as u32,
                leader: m.current_leader.map(|id| format!("{id:016x}")),
                term: m.current_term,
                voters: membership.voter_ids().map(|id| format!("{id:016x}")).collect(),
                learners: membership.learner_ids().map(|id| format!("{id:016x}")).collect(),
                last_log_index: last,
                committed: m.local_committed.map_or(0, |l| l.index),
                applied: self.routes[i].applied.borrow().unwrap_or(0),
                snapshot: m.snapshot.map(|l| l.index),
                lag,
            });
        }
        for node in nodes.values_mut() {
            let reachable = if node.cluster_addr == self.identity.addr().cluster {
                true
            } else {
                matches!(
                    self.peers.ask(&node.cluster_addr, 0, Request::Info, Duration::from_millis(500)).await,
                    Ok(Response::Info(_))
                )
            };
            node.reachable = Some(reachable);
        }
        ClusterStatus {
            cluster: self.identity.cluster().map(|c| c.id),
            replicas: self.identity.cluster().map(|c| c.replicas),
            node: format!("{:016x}", self.me()),
            ready: self.ready().err().unwrap_or_else(|| "ready".to_string()),
            nodes: nodes.into_values().collect(),
            shards,
        }
    }
}

/// `GET /cluster/status`: this node's view of the cluster.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClusterStatus {
    /// The cluster id (absent before init).
    pub cluster: Option<String>,
    /// Copies of every shard.
    pub replicas: Option<u32>,
    /// This node's id.
    pub node: String,
    /// `ready`, or why this node is not.
    pub ready: String,
    /// Every node of any shard's membership.
    pub nodes: Vec<NodeStatus>,
    /// Every shard, as this node's replica sees it.
    pub shards: Vec<ShardStatus>,
}

/// A member node.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    /// Its id.
    pub id: String,
    /// Its cluster port.
    pub cluster_addr: String,
    /// Its HTTP API.
    pub api_addr: String,
    /// Whether its cluster port answered this node just now.
    pub reachable: Option<bool>,
}

/// One shard's group as this node's replica sees it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ShardStatus {
    /// The shard.
    pub shard: u32,
    /// Its leader, when known.
    pub leader: Option<String>,
    /// The Raft term.
    pub term: u64,
    /// The voting replicas.
    pub voters: Vec<String>,
    /// The replicas catching up (or standing by), which do not vote.
    pub learners: Vec<String>,
    /// The last entry of this replica's log.
    pub last_log_index: u64,
    /// The last entry this replica knows committed.
    pub committed: u64,
    /// The last entry this replica applied.
    pub applied: u64,
    /// The last entry its current snapshot covers.
    pub snapshot: Option<u64>,
    /// On the leader: how many entries each replica is behind.
    pub lag: Option<BTreeMap<String, u64>>,
}

#[cfg(test)]
mod tests {
    use super::snapshot_every;

    #[test]
    fn the_nodes_and_shards_of_a_cluster_snapshot_at_different_points() {
        let nodes = [0x8d1f_03a2_77c4_5e10_u64, 0x2b6e_91d0_4f38_a7c5, 0xf407_5c2e_b913_6d88];
        let mut points = std::collections::BTreeSet::new();
        for node in nodes {
            for shard in 0..4 {
                let every = snapshot_every(100_000, node, shard);
                assert!((100_000..=150_000).contains(&every), "{every} entries between snapshots");
                assert_eq!(every, snapshot_every(100_000, node, shard), "a node keeps its points across restarts");
                points.insert(every);
            }
        }
        assert!(points.len() >= 10, "12 replicas snapshot at only {} points: {points:?}", points.len());
        assert!(snapshot_every(u64::MAX, nodes[0], 0) == u64::MAX, "the largest setting saturates");
        assert!((10..=15).contains(&snapshot_every(10, nodes[1], 3)));
    }
}
